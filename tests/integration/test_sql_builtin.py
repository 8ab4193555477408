"""SPEC 13: the built-in analytics as SQL. `clickflow --print-builtin-sql`
prints the tumbling, sliding, sessions and trending views for the flags
given, each statement plans when posted back (EXPLAIN and CREATE), and
GET /api/v1/views lists them, marked built-in, beside the user's views.
"""
import os
import subprocess

from harness import Server, run_tests

BIN = os.environ.get("CLICKFLOW_BIN", "build/server/clickflow")

FLAGS = ["--window", "2m", "--slide-size", "90s", "--slide", "30s", "--session-gap", "45s",
         "--allowed-lateness", "10s", "--half-life", "1500ms"]


FOUR = ["tumbling", "sliding", "sessions", "trending"]


def printed(args, panels=False):
    """The printed statements by name: the four of SPEC 4, 5, 7, then the
    dashboard panels (test_panels.py checks those), left out unless asked."""
    r = subprocess.run([BIN, "--print-builtin-sql"] + args, capture_output=True, text=True,
                       timeout=30, check=False)
    assert r.returncode == 0, (r.returncode, r.stderr)
    stmts = [s.strip() for s in r.stdout.split(";") if s.strip()]
    by = {}
    for s in stmts:
        head = "CREATE VIEW "
        assert s.startswith(head), s
        by[s[len(head):].split()[0]] = s
    assert list(by)[:4] == FOUR, r.stdout
    assert list(by)[4:] and all(n.startswith("panel_") for n in list(by)[4:]), r.stdout
    return by if panels else {n: by[n] for n in FOUR}


def sql(srv, text):
    return srv.request("POST", "/api/v1/sql", text, {"Content-Type": "application/sql"})


def explain(srv, stmt):
    select = stmt[stmt.index(" AS SELECT ") + len(" AS "):]
    st, body = sql(srv, "EXPLAIN " + select)
    assert st == 200, (st, body, stmt)
    [r] = body["results"]
    return r["plan"]["json"]


def test_printed_sql_follows_the_flags_and_plans():
    by = printed(FLAGS)
    with Server(["--shards", "2"] + FLAGS) as srv:
        plans = {name: explain(srv, s) for name, s in by.items()}
        # Each flag reached its statement (the server's own planner read the text back).
        assert plans["tumbling"]["window"] == {"type": "TUMBLING", "size_ms": 120000}, plans
        assert plans["tumbling"]["grace_ms"] == 10000, plans["tumbling"]
        assert plans["sliding"]["window"]["type"] == "HOPPING", plans["sliding"]
        assert plans["sliding"]["window"]["size_ms"] == 90000, plans["sliding"]
        assert plans["sliding"]["window"]["advance_ms"] == 30000, plans["sliding"]
        assert plans["sessions"]["window"]["type"] == "SESSION", plans["sessions"]
        assert plans["sessions"]["window"]["size_ms"] == 45000, plans["sessions"]
        assert "DECAYED_COUNT(1500 MILLISECONDS)" in by["trending"], by["trending"]
        assert plans["trending"]["window"] == {"type": "NONE"}, plans["trending"]
        for name in ("tumbling", "sliding", "trending"):
            assert plans[name]["group_by"] == ["page_url"], plans[name]
        assert plans["sessions"]["group_by"] == ["user_id"], plans["sessions"]
        # Bots never reach the built-ins (SPEC 15).
        assert all("is_bot" in (p["filter"] or "") for p in plans.values()), plans
        # SPEC 4, 5, 7 field names.
        cols = {n: [c["name"] for c in p["columns"]] for n, p in plans.items()}
        assert cols["tumbling"] == ["page_url", "count", "unique_users"], cols
        assert cols["sliding"] == cols["tumbling"], cols
        assert cols["sessions"] == ["user_id", "page_views", "distinct_pages", "entry_page",
                                    "exit_page"], cols
        assert cols["trending"] == ["page_url", "score"], cols
        # The whole script is valid as one request too (as user views: the
        # built-ins are not in the user catalog, so the names are free).
        st, body = sql(srv, ";\n".join(by.values()))
        assert st == 200, (st, body)
        assert [r["name"] for r in body["results"]] == list(by), body


def test_defaults_print_default_durations():
    by = printed([])
    assert "TUMBLING (SIZE 1 MINUTE)" in by["tumbling"], by["tumbling"]
    assert "HOPPING (SIZE 5 MINUTES, ADVANCE BY 1 MINUTE)" in by["sliding"], by["sliding"]
    assert "SESSION (30 MINUTES)" in by["sessions"], by["sessions"]
    assert "DECAYED_COUNT(1 MINUTE)" in by["trending"], by["trending"]


def test_bad_flag_is_exit_2():
    r = subprocess.run([BIN, "--print-builtin-sql", "--window", "nope"], capture_output=True,
                       text=True, timeout=30, check=False)
    assert r.returncode == 2 and "--window" in r.stderr and r.stdout == "", r


def test_views_list_builtins_with_their_sql():
    by = printed(FLAGS, panels=True)
    with Server(FLAGS) as srv:
        user = "CREATE VIEW per_element AS SELECT element, COUNT(*) AS n FROM clicks GROUP BY element"
        assert sql(srv, user)[0] == 200
        st, views = srv.request("GET", "/api/v1/views")
        assert st == 200, views
        items = views["items"]
        builtin = [v for v in items if v["builtin"]]
        assert [v["name"] for v in builtin] == list(by), items
        for v in builtin:
            assert v["sql"] == by[v["name"]], (v, by[v["name"]])
            assert isinstance(v["state_bytes"], (int, float)), v
        keys = {v["name"]: v["keys"] for v in builtin if v["name"] in FOUR}
        assert keys == {"tumbling": "page_url", "sliding": "page_url", "sessions": "user_id",
                        "trending": "page_url"}, keys
        windowed = {v["name"]: v["windowed"] for v in builtin if v["name"] in FOUR}
        assert windowed == {"tumbling": True, "sliding": True, "sessions": True,
                            "trending": False}, windowed
        assert [v["name"] for v in items if not v["builtin"]] == ["per_element"], items


if __name__ == "__main__":
    run_tests([test_printed_sql_follows_the_flags_and_plans, test_defaults_print_default_durations,
               test_bad_flag_is_exit_2, test_views_list_builtins_with_their_sql])
