"""Snapshots taken while ingest goes on (issue 15): the dedup table is saved
step by step after the cut, between submits, and the shards save theirs
while the queues keep filling. A snapshot taken like that must still hold
exactly the state at its cut.

Two clients post batches concurrently (new event_ids plus re-sent earlier
ones) while the server snapshots every 100 ms; the server is killed with
SIGKILL in the middle of that load, so recovery starts from a snapshot taken
under load and replays the log after its cut. Then the recovered state must
equal a Python reference fed every acknowledged event once (the event_ids
deduplicated by a set, the windows and sessions by reference.py): accepted
count, remembered ids, every open window's count and unique users, every
user's open sessions; and re-sending every batch must find each id already
remembered (a lost or extra entry of the dedup table's save shows here).

Replay mode (--idle-timeout 0) and an out-of-orderness longer than the
trace's time span keep every window and session open, so the results do not
depend on how the two clients' requests interleaved.
"""
import os
import random
import signal
import threading
import time

from harness import Server, run_tests
from reference import Reference, Settings

SEED = int(os.environ.get("CLICKFLOW_SEED", "20261207"))
T0 = 1_700_000_000_000          # a fixed past instant
SPAN_MS = 25_000
SETTINGS = Settings(window_ms=10_000, slide_size_ms=30_000, slide_ms=10_000,
                    session_gap_ms=60_000, allowed_lateness_ms=15_000,
                    out_of_orderness_ms=120_000, half_life_ms=10_000,
                    dedup_ttl_ms=3_600_000)
ARGS = ["--idle-timeout", "0", "--shards", "2",
        "--window", "10s", "--slide-size", "30s", "--slide", "10s",
        "--session-gap", "60s", "--allowed-lateness", "15s",
        "--out-of-orderness", "120s", "--half-life", "10s", "--dedup-ttl", "1h",
        "--snapshot-interval", "100ms", "--segment-size", "256k"]
BATCH = 100
USERS = ["u%02d" % i for i in range(40)]
PAGES = ["/p/%d" % i for i in range(30)]


def metric(srv, name):
    st, text = srv.request("GET", "/metrics")
    assert st == 200, st
    for line in text.splitlines():
        if line.startswith("clickflow_%s " % name):
            return float(line.split()[1])
    raise AssertionError("no metric " + name)


def post(srv, evs):
    try:
        return srv.request("POST", "/api/v1/events", evs, timeout=20.0)
    except (OSError, ValueError):
        return None, None


class Writer(threading.Thread):
    """Posts batches until told to stop or the server goes away. acked: the
    batches that got 202; pending: the one in flight when the server died."""

    def __init__(self, srv, name, seed):
        super().__init__(daemon=True)
        self.srv, self.name, self.rng = srv, name, random.Random(seed)
        self.acked, self.pending, self.sent = [], None, []
        self.stop = threading.Event()
        self.error = None

    def batch(self):
        evs = []
        for _ in range(BATCH):
            if self.sent and self.rng.random() < 0.1:
                evs.append(dict(self.rng.choice(self.sent)))  # a client retry
                continue
            ev = {"user_id": self.rng.choice(USERS), "page_url": self.rng.choice(PAGES),
                  "timestamp": T0 + self.rng.randint(0, SPAN_MS),
                  "event_id": "%s-%d" % (self.name, len(self.sent))}
            self.sent.append(ev)
            evs.append(ev)
        return evs

    def run(self):
        try:
            while not self.stop.is_set():
                evs = self.batch()
                st, body = post(self.srv, evs)
                if st != 202:
                    assert st in (None, 503), (st, body)
                    self.pending = evs   # may or may not be in the log
                    return
                assert body["accepted"] + body["duplicates"] == len(evs), body
                self.acked.append(evs)
        except BaseException as e:  # noqa: B902 - reported by the main thread
            self.error = e


def reference(batches):
    """The state a server fed each distinct event once must have."""
    ref = Reference(SETTINGS)
    seen = set()
    for evs in batches:
        fresh = []
        for ev in evs:
            if ev["event_id"] in seen:
                continue
            seen.add(ev["event_id"])
            fresh.append({"user_id": ev["user_id"], "page_url": ev["page_url"],
                          "ts": ev["timestamp"]})
        if fresh:
            ref.request(fresh)
    return ref, seen


def open_windows(items):
    return sorted((w["type"], w["start"], w["end"], w["page_url"], w["count"],
                   w["unique_users"]) for w in items)


def user_sessions(items):
    return sorted((s["start"], s["end"], s["page_views"], s["distinct_pages"]) for s in items)


def test_snapshots_under_concurrent_ingest_recover_the_cut():
    srv = Server(ARGS).start()
    writers = [Writer(srv, "a", SEED), Writer(srv, "b", SEED + 1)]
    try:
        for w in writers:
            w.start()
        # Kill once several snapshots were written under the load (and the
        # dedup table is past a few doublings); wait on the writers' own
        # progress, not on the clock.
        while True:
            assert all(w.is_alive() for w in writers), [w.error for w in writers]
            n = sum(len(w.acked) for w in writers)
            if n >= 60 and metric(srv, "snapshots_total") >= 4:
                break
            time.sleep(0.02)  # polling the progress, not a timing assertion
        # A save that did not write each entry of its cut exactly once fails
        # (the count in its header is the cut's) rather than load wrong.
        assert metric(srv, "snapshot_failures_total") == 0
        srv.stop(sig=signal.SIGKILL)
        for w in writers:
            w.stop.set()
            w.join()
            assert w.error is None, w.error
        srv.start()
        log = srv.read_log()
        assert "recovery: loaded snapshot" in log, log[-2000:]
        replayed = metric(srv, "recovery_records")
        acked = [b for w in writers for b in w.acked]
        # The requests the kill cut off are retried (dedup makes that safe).
        for w in writers:
            if w.pending:
                st, body = post(srv, w.pending)
                assert st == 202 and body["accepted"] + body["duplicates"] == BATCH, (st, body)
                acked.append(w.pending)
        ref, ids = reference(acked)
        st, stats = srv.request("GET", "/api/v1/stats")
        assert st == 200
        assert stats["accepted"] == len(ids), (stats["accepted"], len(ids))
        assert metric(srv, "dedup_ids") == len(ids), (metric(srv, "dedup_ids"), len(ids))
        assert stats["open_windows"] == ref.open_windows()
        for typ in ("tumbling", "sliding"):
            st, body = srv.request("GET", "/api/v1/windows?type=%s&state=open&limit=100000" % typ)
            assert st == 200, (st, body)
            want = open_windows(ref.windows(wtype=typ, state="open", limit=100000)["items"])
            assert open_windows(body["items"]) == want, typ
        for u in USERS:
            st, body = srv.request("GET", "/api/v1/sessions/" + u)
            assert st == 200, (st, body)
            assert user_sessions(body["items"]) == user_sessions(ref.user_sessions(u)["items"]), u
        # Every id is remembered: re-sending everything accepts nothing.
        for evs in acked:
            st, body = post(srv, evs)
            assert st == 202 and body["accepted"] == 0, (st, body)
        print("snapshot live: %d batches, %d distinct ids, %d records replayed after the "
              "snapshot" % (len(acked), len(ids), replayed))
        srv.stop()
    except BaseException:
        if srv.proc is not None:
            srv.stop(sig=signal.SIGKILL)
        print("server log kept in " + srv.data_dir)
        raise


if __name__ == "__main__":
    run_tests([test_snapshots_under_concurrent_ingest_recover_the_cut])
