"""SPEC 12 tables: POST /api/v1/tables/{name}/rows (object, array, NDJSON;
SPEC 3 answers; a row without its key or with a key of the wrong type is
rejected with a reason and nothing of it applied), GET and DELETE
/api/v1/tables/{name}/rows/{key}, GET /api/v1/tables, --max-keys; the rows
compared with a Python dict after random upserts and deletes, across kill -9
(log replay) and from a snapshot.
"""
import random
import signal
import tempfile
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


if __name__ == "__main__":
    run_tests([test_rows_answers_and_bad_rows, test_rows_match_reference_one_shard,
               test_rows_survive_kill_four_shards, test_rows_survive_kill_after_snapshot])
