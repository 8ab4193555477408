"""Durability details of SPEC section 10 beyond the SIGKILL loop of
test_crash.py: exact duplicates/rejected counters after kill -9, a recovery
that could not finish leaves nothing behind, and settings changes across a
restart.
"""
import os
import random
import shutil
import signal
import tempfile
import time

from harness import Server, run_tests
from test_crash import (BASE_TS, SERVER_ARGS, data_files, make_events, post_events,
                        snapshot_results)


def wait_for_snapshot(srv, root, deadline_s=20):
    """Polls until a snapshot file exists (start-up polling, no timing claim)."""
    deadline = time.monotonic() + deadline_s
    while not data_files(root, "snapshot-"):
        assert time.monotonic() < deadline, "no snapshot was written"
        time.sleep(0.02)


def feed_mixed(srv, rng, state, first_id, batches, counts):
    """Batches with duplicates (an id of the batch before) and invalid events;
    adds what the 202s reported to counts."""
    for b in range(batches):
        evs = make_events(rng, first_id + b * 10, 10, state)
        if first_id + b * 10 > 0:
            evs[3]["event_id"] = "e%d" % (first_id + b * 10 - 1)   # a duplicate
        evs[5]["user_id"] = ""                                      # rejected
        evs[7] = {"page_url": "/no-user"}                           # rejected
        st, body = post_events(srv, evs)
        assert st == 202, (st, body)
        for k in ("accepted", "duplicates", "rejected"):
            counts[k] += body[k]
    return first_id + batches * 10


def counters(srv):
    st, stats = srv.request("GET", "/api/v1/stats")
    assert st == 200, (st, stats)
    return {k: stats[k] for k in ("accepted", "duplicates", "rejected")}


def test_counters_exact_after_kill_without_snapshot():
    rng, state = random.Random(21), {"ts": BASE_TS}
    root = tempfile.mkdtemp(prefix="clickflow-dur-")
    srv = Server(SERVER_ARGS + ["--snapshot-interval", "1h"], data_dir=root).start()
    counts = {"accepted": 0, "duplicates": 0, "rejected": 0}
    feed_mixed(srv, rng, state, 0, 20, counts)
    # An all-rejected request and an all-duplicate one log no events at all.
    st, body = post_events(srv, [{"user_id": "x"}])
    assert st == 202 and body["rejected"] == 1, body
    counts["rejected"] += 1
    st, body = post_events(srv, make_events(random.Random(21), 0, 2, {"ts": BASE_TS}))
    assert st == 202 and body["duplicates"] == 2, body
    counts["duplicates"] += 2
    assert counters(srv) == counts
    srv.stop(sig=signal.SIGKILL)
    assert not data_files(root, "snapshot-")
    srv.start()
    assert counters(srv) == counts, (counters(srv), counts)
    srv.stop()
    shutil.rmtree(root, ignore_errors=True)


def test_counters_exact_after_kill_with_snapshot():
    rng, state = random.Random(22), {"ts": BASE_TS}
    root = tempfile.mkdtemp(prefix="clickflow-dur-")
    srv = Server(SERVER_ARGS + ["--snapshot-interval", "100ms"], data_dir=root).start()
    counts = {"accepted": 0, "duplicates": 0, "rejected": 0}
    n = feed_mixed(srv, rng, state, 0, 10, counts)
    wait_for_snapshot(srv, root)
    srv.stop(sig=signal.SIGKILL)
    # Restart without snapshots: what follows is only in the log, after the
    # snapshot the next start loads.
    srv.args = SERVER_ARGS + ["--snapshot-interval", "1h"]
    srv.start()
    assert counters(srv) == counts, (counters(srv), counts)
    feed_mixed(srv, rng, state, n, 10, counts)
    srv.stop(sig=signal.SIGKILL)
    srv.start()
    assert counters(srv) == counts, (counters(srv), counts)
    srv.stop()
    shutil.rmtree(root, ignore_errors=True)


def test_failed_recovery_writes_no_snapshot():
    """A log segment goes missing: the start fails with a clear error and
    writes nothing; once the segment is back every event counts once."""
    rng, state = random.Random(23), {"ts": BASE_TS}
    root = tempfile.mkdtemp(prefix="clickflow-dur-")
    srv = Server(SERVER_ARGS + ["--snapshot-interval", "1h"], data_dir=root).start()
    counts = {"accepted": 0, "duplicates": 0, "rejected": 0}
    feed_mixed(srv, rng, state, 0, 150, counts)
    before = snapshot_results(srv)
    srv.stop(sig=signal.SIGKILL)
    segs = data_files(root, "wal-")
    assert len(segs) >= 3, segs
    aside = os.path.join(root, "aside.log")
    os.rename(segs[1], aside)
    try:
        srv.start()
        raise AssertionError("started with a segment missing")
    except RuntimeError as e:
        assert "replaying the write-ahead log failed" in str(e), e
    srv.stop()
    assert not data_files(root, "snapshot-"), data_files(root, "snapshot-")
    os.rename(aside, segs[1])
    srv.start()
    assert counters(srv) == counts, (counters(srv), counts)
    after = snapshot_results(srv)
    assert after["windows/tumbling/closed"] == before["windows/tumbling/closed"]
    assert after["sessions"] == before["sessions"]
    srv.stop()
    shutil.rmtree(root, ignore_errors=True)


def test_hash_key_made_once_and_kept_in_snapshots():
    """The dedup hash key is made at the first start, read back by every
    restart, and carried in snapshots: a lost key file comes back from the
    snapshot, and ids stay duplicates across all of it."""
    rng, state = random.Random(24), {"ts": BASE_TS}
    root = tempfile.mkdtemp(prefix="clickflow-dur-")
    srv = Server(SERVER_ARGS + ["--snapshot-interval", "100ms"], data_dir=root).start()
    keyfile = os.path.join(root, "data", "hashkey")
    with open(keyfile, "rb") as f:
        key = f.read()
    assert len(key) == 16, key
    evs = make_events(rng, 0, 30, state)
    st, body = post_events(srv, evs)
    assert st == 202 and body["accepted"] == 30, body
    wait_for_snapshot(srv, root)
    srv.stop(sig=signal.SIGKILL)
    os.unlink(keyfile)
    # Restarted after the kill (the key file gone: the snapshot's key is
    # written back), then after a clean stop: the same key, the same ids.
    for _ in range(2):
        srv.start()
        with open(keyfile, "rb") as f:
            assert f.read() == key
        st, body = post_events(srv, evs)
        assert st == 202 and body["duplicates"] == 30, body
        srv.stop()
    shutil.rmtree(root, ignore_errors=True)


TESTS = [test_hash_key_made_once_and_kept_in_snapshots,
         test_counters_exact_after_kill_without_snapshot,
         test_counters_exact_after_kill_with_snapshot,
         test_failed_recovery_writes_no_snapshot]

if __name__ == "__main__":
    run_tests(TESTS)
