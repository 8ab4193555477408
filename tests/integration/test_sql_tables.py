"""SPEC 12 tables: POST /api/v1/tables/{name}/rows (object, array, NDJSON;
SPEC 3 answers; a row without its key or with a key of the wrong type is
rejected with a reason and nothing of it applied), GET and DELETE
/api/v1/tables/{name}/rows/{key}, GET /api/v1/tables, --max-keys; the rows
compared with a Python dict after random upserts and deletes, across kill -9
(log replay) and from a snapshot. Stream-table joins (SPEC 14: a view over a
LEFT JOIN, a derived stream of an INNER JOIN feeding a view) compared with a
Python reference that applies upserts, deletes and events in request order,
for 1 and 4 shards, across kill -9 and from a snapshot under another shard
count.
"""
import json
import random
import signal
import tempfile
import time
import urllib.parse

from harness import Server, run_tests
from test_sql_views import snapshots, wait_for_new_snapshot

ARGS = ["--idle-timeout", "0", "--snapshot-interval", "1h"]
USERS = "CREATE TABLE users (user_id STRING PRIMARY KEY, plan STRING, seats BIGINT)"
ACCOUNTS = "CREATE TABLE accounts (id BIGINT PRIMARY KEY, name STRING NOT NULL)"


def sql(srv, text):
    st, body = srv.request("POST", "/api/v1/sql", text, {"Content-Type": "application/sql"})
    assert st == 200, (st, body)


def upsert(srv, rows, table="users", ctype=None):
    if isinstance(rows, str):
        return srv.request("POST", "/api/v1/tables/%s/rows" % table, rows,
                           {"Content-Type": ctype or "application/json"})
    return srv.request("POST", "/api/v1/tables/%s/rows" % table, rows)


def row_path(key, table="users"):
    return "/api/v1/tables/%s/rows/%s" % (table, urllib.parse.quote(str(key), safe=""))


def get(srv, key, table="users"):
    return srv.request("GET", row_path(key, table))


def delete(srv, key, table="users"):
    return srv.request("DELETE", row_path(key, table))


def listed(srv):
    st, body = srv.request("GET", "/api/v1/tables")
    assert st == 200, body
    return {t["name"]: t for t in body["items"]}


def test_rows_answers_and_bad_rows():
    with Server(ARGS + ["--max-keys", "4"]) as srv:
        sql(srv, USERS + "; " + ACCOUNTS)
        bad = [
            ({"plan": "pro"}, "user_id"),                  # no key
            ({"user_id": None, "plan": "pro"}, "user_id"),  # a NULL key
            ({"user_id": 7, "plan": "pro"}, "user_id"),     # a key of the wrong type
            # keys GET/DELETE /rows/{key} could never address (1..255 bytes)
            ({"user_id": "k" * 256}, "1 to 255 bytes"),
            ({"user_id": ""}, "1 to 255 bytes"),
            ({"user_id": "u9", "seats": "3"}, "seats"),     # no coercion
            ([1], "object"),
        ]
        st, body = upsert(srv, [{"user_id": "u1", "plan": "free", "seats": 1}] +
                          [b for b, _ in bad] + [{"user_id": "u2", "plan": "pro", "x": 1}])
        assert st == 202, body
        assert (body["accepted"], body["rejected"]) == (2, len(bad)), body
        for i, (_, word) in enumerate(bad):
            assert body["errors"][i]["index"] == i + 1 and word in body["errors"][i]["error"], \
                (i, body["errors"][i])
        assert "primary key" in body["errors"][0]["error"], body
        # nothing of a rejected row was applied
        assert get(srv, "u9")[0] == 404
        assert get(srv, "u1") == (200, {"user_id": "u1", "plan": "free", "seats": 1})
        assert get(srv, "u2") == (200, {"user_id": "u2", "plan": "pro", "seats": None})
        # the longest key is read and deleted by its URL
        st, body = upsert(srv, {"user_id": "k" * 255})
        assert st == 202 and body["accepted"] == 1, body
        assert get(srv, "k" * 255)[0] == 200 and delete(srv, "k" * 255) == (200, {"deleted": 1})
        # an object body; a later upsert replaces the whole row
        st, body = upsert(srv, {"user_id": "u1", "plan": "team"})
        assert st == 202 and body["accepted"] == 1, body
        assert get(srv, "u1") == (200, {"user_id": "u1", "plan": "team", "seats": None})
        # NDJSON, keys that need escaping in the URL
        st, body = upsert(srv, '{"user_id": "a/b c", "seats": 2}\nnot json\n', ctype="application/x-ndjson")
        assert st == 202 and (body["accepted"], body["rejected"]) == (1, 1), body
        assert get(srv, "a/b c") == (200, {"user_id": "a/b c", "plan": None, "seats": 2})
        # --max-keys 4: a fifth key is refused with a reason, an existing key still upserts
        st, body = upsert(srv, [{"user_id": "u3"}, {"user_id": "u4"}, {"user_id": "u1", "seats": 5}])
        assert st == 202 and (body["accepted"], body["rejected"]) == (2, 1), body
        assert body["errors"][0]["index"] == 1 and "max-keys" in body["errors"][0]["error"], body
        assert get(srv, "u4")[0] == 404 and get(srv, "u1")[1]["seats"] == 5
        t = listed(srv)
        assert t["users"]["rows"] == 4 and t["users"]["key"] == "user_id", t
        assert [c["name"] for c in t["users"]["columns"]] == ["user_id", "plan", "seats"], t
        assert t["accounts"]["rows"] == 0, t
        # deletes
        assert delete(srv, "u2") == (200, {"deleted": 1})
        assert get(srv, "u2")[0] == 404 and delete(srv, "u2")[0] == 404
        assert listed(srv)["users"]["rows"] == 3
        st, body = upsert(srv, {"user_id": "u4"})            # room again
        assert st == 202 and body["accepted"] == 1, body
        # BIGINT keys: typed in the body and in the URL
        st, body = upsert(srv, [{"id": 10, "name": "x"}, {"id": "10", "name": "y"}, {"id": 1.5, "name": "z"},
                                {"id": 11}], table="accounts")
        assert st == 202 and (body["accepted"], body["rejected"]) == (1, 3), body
        assert get(srv, 10, "accounts") == (200, {"id": 10, "name": "x"})
        st, body = get(srv, "ten", "accounts")
        assert st == 400 and "BIGINT" in body["error"], body
        assert delete(srv, "ten", "accounts")[0] == 400
        # unknown table, malformed bodies
        st, body = upsert(srv, {"user_id": "q"}, table="nope")
        assert st == 404 and "table" in body["error"], body
        assert get(srv, "q", "nope")[0] == 404 and delete(srv, "q", "nope")[0] == 404
        assert upsert(srv, "[1,", ctype="application/json")[0] == 400
        assert upsert(srv, '{"user_id": "z"}', ctype="application/xml")[0] == 415
        assert srv.request("PUT", row_path("u1"))[0] == 405
        assert srv.request("GET", "/api/v1/tables/users/rows")[0] == 405
        # a dropped table's rows go with it
        sql(srv, "DROP TABLE users; " + USERS)
        assert get(srv, "u1")[0] == 404 and listed(srv)["users"]["rows"] == 0


VISITS = "CREATE STREAM visits (user_id STRING, n BIGINT)"
PER_PLAN = ("CREATE VIEW per_plan AS SELECT u.plan AS plan, COUNT(*) AS visits, SUM(v.n) AS total "
            "FROM visits v LEFT JOIN users u ON v.user_id = u.user_id GROUP BY u.plan")
PAID = ("CREATE STREAM paid AS SELECT v.user_id AS user_id, u.plan AS plan, u.seats AS seats "
        "FROM visits v JOIN users u ON v.user_id = u.user_id")
PAID_PER_PLAN = ("CREATE VIEW paid_per_plan AS SELECT plan, COUNT(*) AS n, SUM(seats) AS seats "
                 "FROM paid GROUP BY plan")


class JoinRef:
    """Applies upserts, deletes and events in the order the server accepted them."""

    def __init__(self):
        self.rows = {}
        self.per_plan = {}
        self.paid = {}

    def event(self, ev):
        row = self.rows.get(ev["user_id"])
        plan = row["plan"] if row else None
        g = self.per_plan.setdefault(plan, {"plan": plan, "visits": 0, "total": None})
        g["visits"] += 1
        if ev.get("n") is not None:
            g["total"] = (g["total"] or 0) + ev["n"]
        if row:     # INNER: no row, no output
            p = self.paid.setdefault(plan, {"plan": plan, "n": 0, "seats": None})
            p["n"] += 1
            if row.get("seats") is not None:
                p["seats"] = (p["seats"] or 0) + row["seats"]


def visit(srv, ref, evs):
    st, body = srv.request("POST", "/api/v1/streams/visits/events", evs)
    assert st == 202 and body["accepted"] == len(evs), body
    for ev in evs:
        ref.event(ev)


def put_rows(srv, ref, rows):
    st, body = upsert(srv, rows)
    assert st == 202 and body["accepted"] == len(rows), body
    for r in rows:
        ref.rows[r["user_id"]] = dict({"plan": None, "seats": None}, **r)


def drop_row(srv, ref, key):
    st, _ = delete(srv, key)
    assert st == (200 if key in ref.rows else 404), (key, st)
    ref.rows.pop(key, None)


def check_joins(srv, ref):
    for name, want in (("per_plan", ref.per_plan), ("paid_per_plan", ref.paid)):
        st, body = srv.request("POST", "/api/v1/query", {"sql": "SELECT * FROM %s" % name})
        assert st == 200, body
        got = {r["plan"]: r for r in body["items"]}
        assert got == want, (name, got, want)


def join_server(args, root=None):
    srv = Server(ARGS + args, data_dir=root).start()
    return srv


def test_join_boundaries():
    """Each event sees the row as of its place in the arrival order."""
    for shards in ("1", "4"):
        with Server(ARGS + ["--shards", shards]) as srv:
            ref = JoinRef()
            sql(srv, ";".join([USERS, VISITS, PER_PLAN, PAID, PAID_PER_PLAN]))
            visit(srv, ref, [{"user_id": "a", "n": 1}])                 # before any row: LEFT NULLs
            put_rows(srv, ref, [{"user_id": "a", "plan": "pro", "seats": 2}])
            visit(srv, ref, [{"user_id": "a", "n": 2}])                 # upsert, then event
            put_rows(srv, ref, [{"user_id": "a", "plan": "team", "seats": 5}])   # event, then upsert
            visit(srv, ref, [{"user_id": "a", "n": 4}, {"user_id": "b", "n": 8}])
            drop_row(srv, ref, "a")                                     # delete, then event
            visit(srv, ref, [{"user_id": "a", "n": 16}])
            check_joins(srv, ref)
            # clicks per plan (docs/SQL.md): the built-in stream joins a table too
            sql(srv, "CREATE VIEW clicks_per_plan AS SELECT u.plan AS plan, COUNT(*) AS clicks "
                     "FROM clicks c LEFT JOIN users u ON c.user_id = u.user_id GROUP BY u.plan")
            put_rows(srv, ref, [{"user_id": "alice", "plan": "pro"}])
            now = int(time.time() * 1000)
            st, body = srv.request("POST", "/api/v1/events", [
                {"user_id": u, "page_url": "/p", "timestamp": now} for u in ("alice", "bob", "alice")])
            assert st == 202 and body["accepted"] == 3, body
            st, body = srv.request("POST", "/api/v1/query", {"sql": "SELECT * FROM clicks_per_plan"})
            assert st == 200 and sorted(body["items"], key=lambda r: str(r["plan"])) == [
                {"plan": None, "clicks": 1}, {"plan": "pro", "clicks": 2}], body
            assert ref.per_plan[None]["visits"] == 3 and ref.paid == {
                "pro": {"plan": "pro", "n": 1, "seats": 2},
                "team": {"plan": "team", "n": 1, "seats": 5}}, ref.paid


def run_joins(shards, seed, kill=False, snapshot=False, restart_shards=None):
    rng = random.Random(seed)
    root = tempfile.mkdtemp(prefix="clickflow-sqlj-")
    args = (["--snapshot-interval", "300ms"] if snapshot else []) + ["--shards", str(shards)]
    srv = join_server(args, root)
    ref = JoinRef()
    keys = ["k%d" % i for i in range(12)]

    def traffic(steps):
        for _ in range(steps):
            what = rng.random()
            if what < 0.3:
                put_rows(srv, ref, [{"user_id": rng.choice(keys), "plan": rng.choice(["free", "pro", None]),
                                     "seats": rng.choice([None, rng.randrange(10)])}
                                    for _ in range(rng.randrange(1, 4))])
            elif what < 0.4:
                drop_row(srv, ref, rng.choice(keys))
            else:
                visit(srv, ref, [{"user_id": rng.choice(keys + ["nobody"]), "n": rng.choice([None, 1, 3])}
                                 for _ in range(rng.randrange(1, 20))])
    try:
        sql(srv, ";".join([USERS, VISITS, PER_PLAN, PAID, PAID_PER_PLAN]))
        traffic(60)
        check_joins(srv, ref)
        if snapshot:
            wait_for_new_snapshot(root, snapshots(root))
            traffic(10)
        if kill:
            srv.stop(signal.SIGKILL)
            srv = join_server(["--shards", str(restart_shards or shards)], root)
            check_joins(srv, ref)
            traffic(30)
            check_joins(srv, ref)
    finally:
        srv.stop()


def test_joins_match_reference_one_shard():
    run_joins(1, 21)


def test_joins_match_reference_four_shards_across_kill():
    run_joins(4, 22, kill=True)


def test_joins_from_snapshot_with_other_shard_count():
    run_joins(4, 23, kill=True, snapshot=True, restart_shards=2)


def run(shards, seed, kill=False, snapshot=False):
    rng = random.Random(seed)
    root = tempfile.mkdtemp(prefix="clickflow-sqlt-")
    args = ARGS + (["--snapshot-interval", "300ms"] if snapshot else []) + ["--shards", str(shards)]
    srv = Server(args, data_dir=root).start()
    ref = {}
    try:
        sql(srv, USERS)
        keys = ["k%d" % i for i in range(40)]
        for _ in range(30):
            batch = []
            for _ in range(rng.randrange(1, 15)):
                k = rng.choice(keys)
                row = {"user_id": k, "plan": rng.choice(["free", "pro", None]),
                       "seats": rng.choice([None, rng.randrange(100)])}
                batch.append(row)
            st, body = upsert(srv, batch)
            assert st == 202 and body["accepted"] == len(batch), body
            for row in batch:   # applied in body order: the last one of a key wins
                ref[row["user_id"]] = row
            for _ in range(rng.randrange(3)):
                k = rng.choice(keys)
                st, _ = delete(srv, k)
                assert st == (200 if k in ref else 404), (k, st)
                ref.pop(k, None)
        if snapshot:
            wait_for_new_snapshot(root, snapshots(root))
        if kill:
            srv.stop(signal.SIGKILL)
            srv = Server(ARGS + ["--shards", str(shards)], data_dir=root).start()
        for k in keys:
            st, body = get(srv, k)
            if k in ref:
                assert st == 200 and body == ref[k], (k, body, ref[k])
            else:
                assert st == 404, (k, body)
        assert listed(srv)["users"]["rows"] == len(ref)
    finally:
        srv.stop()


def test_rows_match_reference_one_shard():
    run(1, 1)


def test_rows_survive_kill_four_shards():
    run(4, 2, kill=True)


def test_rows_survive_kill_after_snapshot():
    run(2, 3, kill=True, snapshot=True)


def test_numbers_come_back_exactly():
    """BIGINTs up to 2^53 and the numbers inside JSON columns and identify
    traits read back as sent (cJSON alone printed 9007199254740991 as
    9.00719925474099e+15 and 0.1 + 0.2 as 0.3). DOUBLE columns keep
    cJSON's 15 digits still (sql_format_double: group keys and CAST text
    are made with it)."""
    big, dbl = 9007199254740991, 0.30000000000000004
    with Server(ARGS) as srv:
        sql(srv, "CREATE TABLE nums (k STRING PRIMARY KEY, n BIGINT, d DOUBLE, doc JSON)")
        row = {"k": "a", "n": -big, "d": 0.5, "doc": {"n": big, "l": [5000000000000001, dbl]}}
        st, body = upsert(srv, row, table="nums")
        assert st == 202 and body["accepted"] == 1, body
        st, _, text = srv.raw_request("GET", row_path("a", "nums"))
        assert st == 200 and json.loads(text) == row, text
        assert b"9007199254740991" in text and b"0.30000000000000004" in text, text
        st, _, data = srv.raw_request("POST", "/v1/identify",
                                      json.dumps({"userId": "u1", "traits": {"n": big, "d": dbl}}),
                                      {"Content-Type": "application/json"})
        assert st == 200, data
        st, got = get(srv, "u1", "user_traits")
        assert st == 200 and got["traits"] == {"n": big, "d": dbl}, got


if __name__ == "__main__":
    run_tests([test_rows_answers_and_bad_rows, test_numbers_come_back_exactly, test_rows_match_reference_one_shard,
               test_rows_survive_kill_four_shards, test_rows_survive_kill_after_snapshot,
               test_join_boundaries, test_joins_match_reference_one_shard,
               test_joins_match_reference_four_shards_across_kill,
               test_joins_from_snapshot_with_other_shard_count])
