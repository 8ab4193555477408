"""SPEC 13 statements over HTTP: POST /api/v1/sql answers, errors with their
position, all-or-nothing requests, DROP rules, --max-queries, --admin-token,
EXPLAIN with the shard placement, GET /api/v1/views and /api/v1/streams, and
definitions that survive kill -9 (WAL replay) and snapshots, and --sql FILE.
"""
import os
import signal
import subprocess
import tempfile
import time

from harness import Server, free_port, run_tests

BIN = os.environ.get("CLICKFLOW_BIN", "build/server/clickflow")

ORDERS = ("CREATE STREAM orders (order_id STRING NOT NULL, customer STRING, amount DOUBLE, "
          "ts TIMESTAMP) WITH (TIMESTAMP = 'ts', EVENT_ID = 'order_id')")
REVENUE = ("CREATE VIEW revenue AS SELECT customer, SUM(amount) AS total, COUNT(*) AS n "
           "FROM orders GROUP BY customer")
BIG = "CREATE STREAM big AS SELECT order_id, amount FROM orders WHERE amount > 100"


def sql(srv, text, headers=None):
    return srv.request("POST", "/api/v1/sql", text, headers or {"Content-Type": "application/sql"})


def names(srv, what):
    st, body = srv.request("GET", "/api/v1/" + what)
    assert st == 200, (st, body)
    # The built-in views are listed too (test_sql_builtin.py): user objects only here.
    return [o["name"] for o in body["items"] if what != "views" or not o["builtin"]]


def test_create_answers_and_lists():
    with Server(["--shards", "2"]) as srv:
        st, body = sql(srv, ORDERS + ";\n" + REVENUE + "; " + BIG + ";")
        assert st == 200, (st, body)
        assert body["results"] == [
            {"statement": "CREATE STREAM", "name": "orders"},
            {"statement": "CREATE VIEW", "name": "revenue"},
            {"statement": "CREATE STREAM", "name": "big"}], body
        st, views = srv.request("GET", "/api/v1/views")
        assert st == 200, views
        [v] = [x for x in views["items"] if not x["builtin"]]
        assert v["name"] == "revenue" and v["sql"] == REVENUE and v["keys"] == "customer", v
        assert [(c["name"], c["type"]) for c in v["columns"]] == [
            ("customer", "STRING"), ("total", "DOUBLE"), ("n", "BIGINT")], v
        st, streams = srv.request("GET", "/api/v1/streams")
        by = {s["name"]: s for s in streams["items"]}
        assert set(by) == {"clicks", "orders", "big"}, by.keys()
        assert by["clicks"]["builtin"] and not by["clicks"]["derived"]
        assert by["orders"]["timestamp"] == "ts" and by["orders"]["event_id"] == "order_id"
        assert by["big"]["derived"] and by["big"]["sql"] == BIG, by["big"]
        assert [c["type"] for c in by["orders"]["columns"]] == ["STRING", "STRING", "DOUBLE",
                                                                "TIMESTAMP"]


def test_errors_name_the_problem_and_its_place():
    with Server() as srv:
        assert sql(srv, ORDERS)[0] == 200
        cases = [
            ("CREATE VIEW v AS SELEC x FROM orders", 1, None),
            ("CREATE VIEW v AS SELECT COUNT(*) FROM nowhere", 1, "nowhere"),
            ("CREATE VIEW v AS\n  SELECT nope, COUNT(*) FROM orders GROUP BY nope", 2, "nope"),
            ("CREATE VIEW v AS SELECT customer, amount, COUNT(*) FROM orders GROUP BY customer",
             1, "amount"),
            ("CREATE VIEW v AS SELECT customer, SUM(customer) FROM orders GROUP BY customer",
             1, None),
            ("CREATE VIEW v AS SELECT customer, NOSUCHFN(amount) FROM orders GROUP BY customer",
             1, "NOSUCHFN"),
            ("CREATE STREAM orders (a STRING)", 1, "orders"),
            ("SELECT * FROM orders", 1, "/api/v1/query"),
            ("", 1, None),
        ]
        for text, line, word in cases:
            st, body = sql(srv, text)
            assert st == 400, (text, st, body)
            assert set(body) == {"error", "line", "column"}, body
            assert body["line"] == line and body["column"] >= 1, (text, body)
            if word:
                assert word in body["error"], (text, body)
        # A name from the request comes back escaped, as JSON.
        st, body = sql(srv, 'CREATE VIEW v AS SELECT COUNT(*) FROM "a""<b>"')
        assert st == 400 and "<b>" in body["error"], body
        assert names(srv, "views") == []


def test_request_is_applied_whole_or_not_at_all():
    with Server() as srv:
        st, body = sql(srv, ORDERS + ";" + REVENUE + "; CREATE VIEW broken AS SELECT x FROM orders")
        assert st == 400 and body["line"] == 1, body
        assert names(srv, "views") == [] and names(srv, "streams") == ["clicks"]
        # Statements see the ones before them in the same request.
        st, body = sql(srv, ORDERS + ";" + REVENUE)
        assert st == 200, body
        assert names(srv, "views") == ["revenue"]


def test_drop_rules():
    with Server() as srv:
        assert sql(srv, ORDERS + ";" + REVENUE + ";" + BIG)[0] == 200
        st, body = sql(srv, "DROP STREAM orders")
        assert st == 400 and "revenue" in body["error"] and "big" in body["error"], body
        st, body = sql(srv, "DROP STREAM clicks")
        assert st == 400, body
        st, body = sql(srv, "DROP VIEW nothing")
        assert st == 400 and "nothing" in body["error"], body
        st, body = sql(srv, "DROP VIEW revenue; DROP STREAM big; DROP STREAM orders")
        assert st == 200, body
        assert [r["statement"] for r in body["results"]] == ["DROP VIEW", "DROP STREAM",
                                                             "DROP STREAM"], body
        assert names(srv, "views") == [] and names(srv, "streams") == ["clicks"]
        # The name is free again.
        assert sql(srv, ORDERS)[0] == 200


def test_max_queries():
    with Server(["--max-queries", "2"]) as srv:
        assert sql(srv, ORDERS)[0] == 200   # a declared stream is not a query
        v = "CREATE VIEW v%d AS SELECT customer, COUNT(*) FROM orders GROUP BY customer"
        assert sql(srv, v % 1 + ";" + v % 2)[0] == 200
        st, body = sql(srv, v % 3)
        assert st == 400 and "--max-queries" in body["error"], body
        assert sql(srv, "DROP VIEW v1; " + v % 3)[0] == 200
        assert sorted(names(srv, "views")) == ["v2", "v3"]


def test_admin_token_and_media_type():
    with Server(["--admin-token", "adm1n", "--ingest-token", "ing"]) as srv:
        st, _ = sql(srv, ORDERS)
        assert st == 401
        st, _ = sql(srv, ORDERS, {"Content-Type": "text/plain", "Authorization": "Bearer ing"})
        assert st == 401
        st, body = sql(srv, ORDERS, {"Content-Type": "text/plain; charset=utf-8",
                                     "Authorization": "Bearer adm1n"})
        assert st == 200, body
        st, body = sql(srv, REVENUE, {"Content-Type": "application/json",
                                      "Authorization": "Bearer adm1n"})
        assert st == 415, body
        st, _ = srv.request("GET", "/api/v1/sql")
        assert st == 405
    # Without --admin-token the ingest token guards statements.
    with Server(["--ingest-token", "ing"]) as srv:
        assert sql(srv, ORDERS)[0] == 401
        assert sql(srv, ORDERS, {"Authorization": "Bearer ing"})[0] == 200


def test_explain_shows_plan_and_placement():
    with Server(["--shards", "4"]) as srv:
        assert sql(srv, ORDERS + ";" + BIG)[0] == 200
        st, body = sql(srv, "EXPLAIN SELECT customer, COUNT(*) FROM orders "
                            "WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY customer")
        assert st == 200, body
        [r] = body["results"]
        assert r["statement"] == "EXPLAIN", r
        plan = r["plan"]
        assert plan["json"]["source"] == "orders" and "customer" in plan["text"], plan
        assert plan["placement"] == {"shards": 4, "key": "customer",
                                     "rows": "sent to the shard owning the key on arrival"}, plan
        # A derived stream's rows are made where its source's events are.
        st, body = sql(srv, "EXPLAIN SELECT order_id, COUNT(*) FROM big GROUP BY order_id")
        assert body["results"][0]["plan"]["placement"] == {
            "shards": 4, "key": "order_id", "rows": "re-routed to the shard owning the key"}, body
        # A view's key is found before the row is logged, so it goes to
        # the key's shard only; joined to a table, the key may need the
        # table's row: every shard.
        assert "placement: the shard owning the key, chosen before the row is logged" in \
            plan["text"], plan
        assert sql(srv, "CREATE TABLE plans (customer STRING PRIMARY KEY, tier STRING)")[0] == 200
        st, body = sql(srv, "EXPLAIN SELECT p.tier, COUNT(*) FROM orders o "
                            "JOIN plans p ON o.customer = p.customer GROUP BY p.tier")
        assert st == 200, body
        assert body["results"][0]["plan"]["placement"] == {
            "shards": 4, "key": "p.tier", "rows": "sent to every shard (the key needs the table's row)"}, body
        st, body = sql(srv, "EXPLAIN SELECT order_id FROM orders WHERE amount > 1")
        assert body["results"][0]["plan"]["placement"]["rows"] == \
            "stay on the shard they arrive on", body
        # EXPLAIN creates nothing.
        assert names(srv, "views") == []


def wait_for_snapshot(root, deadline_s=20):
    d = os.path.join(root, "data")
    deadline = time.monotonic() + deadline_s
    while not any(n.startswith("snapshot-") and not n.endswith(".tmp") for n in os.listdir(d)):
        assert time.monotonic() < deadline, "no snapshot was written"
        time.sleep(0.02)   # polling for a file, not a timing assertion


def test_definitions_survive_kill_from_log_and_snapshot():
    root = tempfile.mkdtemp(prefix="clickflow-sql-")
    args = ["--snapshot-interval", "1h"]
    srv = Server(args, data_dir=root).start()
    assert sql(srv, ORDERS + ";" + REVENUE + ";" + BIG)[0] == 200
    assert sql(srv, "DROP STREAM big")[0] == 200
    srv.stop(signal.SIGKILL)
    srv.start()     # replays the log
    assert names(srv, "views") == ["revenue"]
    assert names(srv, "streams") == ["clicks", "orders"]
    srv.stop()
    # Now through a snapshot: the definitions are in it, the log after it
    # adds one more.
    srv = Server(["--snapshot-interval", "200ms"], data_dir=root).start()
    wait_for_snapshot(root)
    assert sql(srv, BIG)[0] == 200
    srv.stop(signal.SIGKILL)
    srv = Server(["--snapshot-interval", "1h"], data_dir=root).start()
    assert names(srv, "views") == ["revenue"]
    assert names(srv, "streams") == ["clicks", "orders", "big"]
    st, v = srv.request("GET", "/api/v1/views")
    assert [x["sql"] for x in v["items"] if not x["builtin"]] == [REVENUE], v
    srv.stop()


def test_sql_file_at_start():
    root = tempfile.mkdtemp(prefix="clickflow-sqlfile-")
    path = os.path.join(root, "defs.sql")
    with open(path, "w") as f:
        f.write("-- definitions\n" + ORDERS + ";\n" + REVENUE + ";\n")
    srv = Server(["--sql", path], data_dir=root).start()
    assert names(srv, "views") == ["revenue"]
    srv.stop()
    # The same file again: what is in force is kept, not an error.
    srv = Server(["--sql", path], data_dir=root).start()
    assert names(srv, "views") == ["revenue"]
    srv.stop()
    # A bad file stops the start with status 2 and the position.
    bad = os.path.join(root, "bad.sql")
    with open(bad, "w") as f:
        f.write(ORDERS + ";\nCREATE VIEW w AS SELECT nope, COUNT(*) FROM orders GROUP BY nope")
    hp = free_port()
    r = subprocess.run([BIN, "--http-port", str(hp), "--ws-port", str(free_port(avoid=(hp,))),
                        "--sql", bad, "--data-dir",
                        os.path.join(root, "other")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "line 2" in r.stdout + r.stderr and "nope" in r.stdout + r.stderr, r
    r = subprocess.run([BIN, "--sql", os.path.join(root, "missing.sql")], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 2 and "--sql" in r.stderr, r


if __name__ == "__main__":
    run_tests([test_create_answers_and_lists, test_errors_name_the_problem_and_its_place,
               test_request_is_applied_whole_or_not_at_all, test_drop_rules, test_max_queries,
               test_admin_token_and_media_type, test_explain_shows_plan_and_placement,
               test_definitions_survive_kill_from_log_and_snapshot, test_sql_file_at_start])
