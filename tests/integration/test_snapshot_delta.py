"""Incremental dedup snapshots (docs/DESIGN.md, "Incremental dedup
snapshots"): after its first snapshot a server saves the dedup table as a
delta of the previous snapshot's (the ids recorded and dropped since), and a
restart folds the chain: the whole save, then each delta in order, each read
from its own snapshot file. After kill -9 the recovered table must equal that
of a server that never stopped (same ids, evictions and counters, and the
same answers afterwards), with expiries (a 5 s ttl) and, in the second test,
evictions by a --max-keys bound among the deltas' operations.
"""
import os
import re
import signal
import time

from harness import Server, run_tests
from test_recovery_dedup import batch, dedup_state, post_both, probe_run_ids

import random

BASE = ["--idle-timeout", "0", "--shards", "2", "--dedup-ttl", "5s"]
BASE_TS = 1_700_000_000_000
SNAP = re.compile(r"snapshot at LSN (\d+) written \(\d+ bytes(?:; dedup table: a delta of \d+ "
                  r"bytes on LSN (\d+))?\)")


def snapshots_written(srv):
    """[(lsn, base LSN of its dedup delta or None)] in the order written."""
    return [(int(lsn), int(base) if base else None) for lsn, base in SNAP.findall(srv.read_log())]


def wait_snapshot_after(srv, n_before, deadline_s=20.0):
    """Blocks until the log shows more than n_before snapshots (the server
    takes one every 50 ms; polling, not a timing assertion)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if len(snapshots_written(srv)) > n_before:
            return
        time.sleep(0.02)
    raise AssertionError("no snapshot written:\n" + srv.read_log()[-2000:])


def snapshot_files(srv):
    d = os.path.join(srv.data_dir, "data")
    return sorted(f for f in os.listdir(d) if re.fullmatch(r"snapshot-\d{20}\.cfs", f))


def newest_is_delta(srv):
    """Whether the newest snapshot file's dedup table is a delta: its
    dedup_base field (docs/DESIGN.md, "Snapshot payload", version 6) is not
    0. File header 36 bytes; payload: magic 8, version 4, shards 4, six
    settings 48, seven counters 56, hash key 16, then i64 dedup_base."""
    name = snapshot_files(srv)[-1]
    with open(os.path.join(srv.data_dir, "data", name), "rb") as f:
        head = f.read(36 + 136 + 8)
    assert int.from_bytes(head[36 + 8:36 + 12], "little") == 6
    return int.from_bytes(head[36 + 136:36 + 144], "little", signed=True) != 0


def delta_chain_recovers(extra, seed):
    rng, state = random.Random(seed), {"ts": BASE_TS, "next": 0}
    ref = Server(BASE + ["--snapshot-interval", "1h"] + extra).start()
    crashed = Server(BASE + ["--snapshot-interval", "50ms"] + extra).start()
    try:
        most_files, folded = 0, 0
        for cycle in range(3):
            for _ in range(15):
                post_both([ref, crashed], batch(rng, state, 20))
                # A snapshot between every two batches: each delta has changes.
                wait_snapshot_after(crashed, len(snapshots_written(crashed)))
                most_files = max(most_files, len(snapshot_files(crashed)))
            # Until the newest is a delta (a snapshot at an unchanged LSN is
            # whole, and so is every ninth in a row).
            for _ in range(30):
                if snapshots_written(crashed)[-1][1] is not None:
                    break
                post_both([ref, crashed], batch(rng, state, 20))
                wait_snapshot_after(crashed, len(snapshots_written(crashed)))
            else:
                raise AssertionError("no delta snapshot: " + crashed.read_log()[-2000:])
            before = dedup_state(ref)
            assert dedup_state(crashed) == before
            crashed.stop(sig=signal.SIGKILL)
            delta = newest_is_delta(crashed)
            log_at = len(crashed.read_log())
            crashed.start()
            log = crashed.read_log()[log_at:]
            if delta:
                # The restart folded the chain (a whole save and deltas).
                assert re.search(r"dedup table from the whole save at LSN \d+ and [1-8] "
                                 r"deltas", log), log[-2000:]
                folded += 1
            assert dedup_state(crashed) == before, (dedup_state(crashed), before)
            probe_run_ids(ref, crashed, state)
        # The kill lands after a delta's line; a whole snapshot in the
        # millisecond between would make a cycle fold nothing (each still
        # compares the tables): at least one of three folded.
        assert folded >= 1, folded
        print("cycles that folded a chain: %d of 3" % folded)
        snaps = snapshots_written(crashed)
        assert len([s for s in snaps if s[1] is not None]) >= 8, snaps
        # Every delta applies to the snapshot written just before it, and
        # no chain is longer than 8 deltas.
        run = 0
        for (prev, _), (cur, base) in zip(snaps, snaps[1:]):
            assert base is None or (base == prev and cur > prev), (prev, cur, base)
            run = run + 1 if base is not None else 0
            assert run <= 8, snaps
        # The files kept stay bounded: the two newest snapshots and the
        # chain the previous one needs.
        assert most_files <= 10, most_files
        return before
    finally:
        ref.stop()
        crashed.stop()


def test_delta_chain_recovers_dedup():
    st = delta_chain_recovers([], 41)
    assert st["evicted"] == 0, st


def test_delta_chain_with_evicting_bound_recovers_dedup():
    st = delta_chain_recovers(["--max-keys", "40"], 42)
    assert st["evicted"] > 0, st


def test_missing_chain_base_fails_the_start():
    """A delta loads only with every file of its chain: with the chain's
    whole save gone, the start fails with an error naming it (the log
    before the previous snapshot is dropped, so nothing else could rebuild
    the table), instead of starting with ids forgotten."""
    rng, state = random.Random(43), {"ts": BASE_TS, "next": 0}
    srv = Server(BASE + ["--snapshot-interval", "50ms"])
    srv.start()
    try:
        # Until the newest file is a delta on a delta when the server dies (a
        # whole snapshot may land between the log line and the kill).
        for attempt in range(5):
            for _ in range(40):
                post_both([srv], batch(rng, state, 20))
                wait_snapshot_after(srv, len(snapshots_written(srv)))
                snaps = snapshots_written(srv)
                if snaps[-1][1] is not None and snaps[-2][1] is not None:
                    break
            srv.stop(sig=signal.SIGKILL)
            if newest_is_delta(srv):
                break
            srv.start()
        else:
            raise AssertionError("no delta snapshot at the kill: %s" % snapshots_written(srv))
        # The chain of the newest snapshot: walk its bases back to a whole one.
        chain = {lsn: base for lsn, base in snapshots_written(srv)}
        lsn = snapshot_files(srv)[-1]
        lsn = int(lsn[len("snapshot-"):-len(".cfs")])
        while chain.get(lsn) is not None:
            lsn = chain[lsn]
        whole = os.path.join(srv.data_dir, "data", "snapshot-%020d.cfs" % lsn)
        assert os.path.exists(whole), whole
        os.unlink(whole)
        try:
            srv.start(timeout=10)
        except RuntimeError as e:
            assert ("delta on the snapshot at LSN" in str(e) and
                    "cannot be applied" in str(e)), str(e)[-2000:]
        else:
            raise AssertionError("started without its chain's whole save")
    finally:
        if srv.proc and srv.proc.poll() is None:
            srv.stop()


if __name__ == "__main__":
    run_tests([test_delta_chain_recovers_dedup,
               test_delta_chain_with_evicting_bound_recovers_dedup,
               test_missing_chain_base_fails_the_start])
