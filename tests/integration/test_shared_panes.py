"""The built-in tumbling and sliding windows keep one pane store (issue 15,
docs/DESIGN.md "Shared panes"): every shard reports it (window_panes_shared
in GET /api/v1/stats and /metrics), their answers through live ingest, a
SIGKILL (WAL replay) and a SIGTERM (snapshot restore) equal the reference
model's, as do those of a server started with --share-panes off; and at the
key bound the pair has one budget, so a page new to both is refused by both.

Replay mode (--idle-timeout 0): results depend on the data alone.
"""
import json
import shutil
import signal
import tempfile

from harness import Server, run_tests
import test_semantics as sem

T0 = 1_700_000_000_000


def stats(srv):
    st, body = srv.request("GET", "/api/v1/stats")
    assert st == 200, body
    return body


def test_shared_pair_matches_reference_across_restarts():
    steps = sem.make_trace(sem.SEED + 5)
    n = len(steps)

    def body(servers):
        want = [1, 4, 0]
        for srv, w in zip(servers, want):
            assert stats(srv)["window_panes_shared"] == w, srv.args
        sem.run_trace(servers, steps, sem.SETTINGS, sem.USERS, sem.PAGES,
                      restarts={n // 3: signal.SIGKILL, 2 * n // 3: signal.SIGTERM})
        # Still sharing after the replay and the restore.
        for srv, w in zip(servers, want):
            assert stats(srv)["window_panes_shared"] == w, srv.args
        st, _, text = servers[1].raw_request("GET", "/metrics")
        assert st == 200 and "clickflow_window_panes_shared 4" in text.decode()

    sem.with_servers([1, 4, 2], body, extras=[[], [], ["--share-panes", "off"]])


def post(srv, evs):
    st, body = srv.request("POST", "/api/v1/events",
                           json.dumps(evs, separators=(",", ":")).encode(),
                           {"Content-Type": "application/json"})
    assert st == 202, (st, body)


def windows(srv, t):
    st, body = srv.request("GET", "/api/v1/windows?type=%s&limit=1000" % t)
    assert st == 200, body
    return sorted({it["page_url"] for it in body["items"]})


def test_one_key_budget_for_the_pair():
    """Bound 2, one shard. Pages /a and /b at T0; then the watermark passes
    their tumbling window and its lateness (tumbling purges them) but not
    the 5-minute sliding windows. A new page /c: alone, tumbling would take
    it (it holds no page) while sliding refuses it; sharing, the pair holds
    /a and /b in one budget and both refuse /c, each counting it."""
    args = ["--idle-timeout", "0", "--shards", "1", "--max-keys", "2", "--window", "60s",
            "--slide-size", "5m", "--slide", "1m", "--allowed-lateness", "0",
            "--out-of-orderness", "0"]
    with Server(args) as srv:
        assert stats(srv)["window_panes_shared"] == 1
        post(srv, [{"user_id": "u", "page_url": p, "timestamp": T0 + 1} for p in ("/a", "/b")])
        wm = T0 - T0 % 60_000 + 120_000
        st, body = srv.request("POST", "/api/v1/watermark", {"watermark": wm})
        assert st == 200, body
        post(srv, [{"user_id": "u", "page_url": "/c", "timestamp": wm + 1}])
        ks = stats(srv)["keyed_state"]
        assert ks["tumbling"]["refused"] == 1 and ks["sliding"]["refused"] == 1, ks
        assert ks["tumbling"]["keys"] == 2 and ks["sliding"]["keys"] == 2, ks
        assert "/c" not in windows(srv, "tumbling") and "/c" not in windows(srv, "sliding")
    d = tempfile.mkdtemp(prefix="clickflow-it-")
    try:
        with Server(args + ["--share-panes", "off"], data_dir=d) as srv:
            assert stats(srv)["window_panes_shared"] == 0
            post(srv, [{"user_id": "u", "page_url": p, "timestamp": T0 + 1}
                       for p in ("/a", "/b")])
            st, body = srv.request("POST", "/api/v1/watermark", {"watermark": wm})
            assert st == 200, body
            post(srv, [{"user_id": "u", "page_url": "/c", "timestamp": wm + 1}])
            ks = stats(srv)["keyed_state"]
            assert ks["tumbling"]["refused"] == 0 and ks["sliding"]["refused"] == 1, ks
            assert "/c" in windows(srv, "tumbling") and "/c" not in windows(srv, "sliding")
            before = {t: windows(srv, t) for t in ("tumbling", "sliding")}
        # Its snapshot holds /c in tumbling's panes only: restarted with
        # sharing on, the pair cannot share that store (sliding would read
        # /c), so the two load unshared and answer as before.
        with Server(args, data_dir=d) as srv:
            assert stats(srv)["window_panes_shared"] == 0
            assert {t: windows(srv, t) for t in ("tumbling", "sliding")} == before
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    run_tests([test_shared_pair_matches_reference_across_restarts,
               test_one_key_budget_for_the_pair])
