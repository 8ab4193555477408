"""Which threads the scheduler serves first (server/thread_role.h, issue 15):
the shards and the history writer run SCHED_BATCH at --shard-nice; the
request path (libmicrohttpd's workers, the acceptor, the parked-request
thread, the ticker, the WebSocket push service, main) keeps the process's nice and, on
kernels with EEVDF custom slices, the --request-slice-us slice. Read from
/proc/PID/task/*/ of the real server."""
import os
import platform
import subprocess

from harness import Server, run_tests

BIN = os.environ.get("CLICKFLOW_BIN", "build/server/clickflow")
SCHED_OTHER, SCHED_BATCH = 0, 3
THROUGHPUT = ("cf-shard-", "cf-history")
REQUEST = ("MHD-worker", "cf-http-accept", "cf-http-park", "cf-http-reaper", "cf-ticker", "cf-push")


def threads(pid):
    """{tid: (comm, nice, policy, slice_ns or None)} of every thread."""
    out = {}
    base = "/proc/%d/task" % pid
    for tid in os.listdir(base):
        try:
            with open("%s/%s/comm" % (base, tid)) as f:
                comm = f.read().strip()
            with open("%s/%s/stat" % (base, tid)) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            slice_ns = None
            with open("%s/%s/sched" % (base, tid)) as f:
                for line in f:
                    if line.startswith("se.slice"):
                        slice_ns = int(line.split(":")[1])
        except FileNotFoundError:
            continue  # a thread that exited meanwhile (the recovery decoder)
        # stat fields 19 (nice) and 41 (policy), counted from 1 with pid and comm.
        out[tid] = (comm, int(fields[16]), int(fields[38]), slice_ns)
    return out


def custom_slices():
    """Linux >= 6.12 takes sched_setattr's runtime as a SCHED_OTHER slice."""
    try:
        major, minor = (int(x) for x in platform.release().split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (6, 12)


def by_role(ts):
    thr = [t for t in ts.values() if t[0].startswith(THROUGHPUT)]
    req = [t for t in ts.values() if t[0].startswith(REQUEST)]
    return thr, req


def own_nice():
    return os.getpriority(os.PRIO_PROCESS, 0)


def assert_classes(thr, req, thr_nice, base, slice_ns):
    """Throughput threads SCHED_BATCH at thr_nice, request threads at the
    process's nice and, where the kernel has custom slices, slice_ns."""
    for comm, nice, policy, _ in thr:
        assert (nice, policy) == (thr_nice, SCHED_BATCH), (comm, nice, policy)
    for comm, nice, policy, _ in req:
        assert (nice, policy) == (base, SCHED_OTHER), (comm, nice, policy)
    if custom_slices():
        assert {t[3] for t in req} == {slice_ns}, req
        assert all(t[3] != slice_ns for t in thr), thr


def test_default_shards_batch_and_niced_request_threads_not():
    base = own_nice()
    with Server(["--shards", "2", "--http-threads", "2"]) as srv:
        ts = threads(srv.proc.pid)
    thr, req = by_role(ts)
    names = sorted(t[0] for t in thr)
    assert names == ["cf-history", "cf-shard-0", "cf-shard-1"], ts
    assert sum(t[0] == "MHD-worker" for t in req) == 2, ts
    assert {"cf-http-accept", "cf-ticker", "cf-push"} <= {t[0] for t in req}, ts
    assert_classes(thr, req, max(3, base), base, 100000)
    # The dedup table's next table is mapped below the shards: it only has
    # to be ready before a doubling some seconds away (dedup_prep.c).
    prep = [t for t in ts.values() if t[0] == "cf-dedup-prep"]
    assert [(t[1], t[2]) for t in prep] == [(19, SCHED_BATCH)], ts


def test_options_set_the_nice_and_the_slice():
    base = own_nice()
    with Server(["--shard-nice", "7", "--request-slice-us", "500"]) as srv:
        ts = threads(srv.proc.pid)
        assert srv.request("POST", "/api/v1/events", {"user_id": "u", "page_url": "/a"})[0] == 202
    thr, req = by_role(ts)
    assert thr and req, ts
    assert_classes(thr, req, max(7, base), base, 500000)


def test_zero_leaves_every_thread_as_started():
    base = own_nice()
    with Server(["--shard-nice", "0", "--request-slice-us", "0"]) as srv:
        ts = threads(srv.proc.pid)
    thr, req = by_role(ts)
    assert thr and req, ts
    assert {(t[1], t[2]) for t in ts.values()} == {(base, SCHED_OTHER)}, ts
    # One slice for all: the kernel's default, whatever it is.
    assert len({t[3] for t in ts.values()}) == 1, ts


def test_nice_zero_still_keeps_the_slice_to_request_threads():
    base = own_nice()
    with Server(["--shard-nice", "0", "--request-slice-us", "300"]) as srv:
        ts = threads(srv.proc.pid)
    thr, req = by_role(ts)
    assert thr and req, ts
    assert {(t[1], t[2]) for t in ts.values()} == {(base, SCHED_OTHER)}, ts
    if custom_slices():
        assert {t[3] for t in req} == {300000}, req
        assert all(t[3] != 300000 for t in thr), thr


def test_bad_values_exit_two_with_the_option_named():
    cases = [(["--shard-nice", "20"], "--shard-nice", "0..19"),
             (["--shard-nice", "-1"], "--shard-nice", "non-negative"),
             (["--request-slice-us", "100001"], "--request-slice-us", "0..100000"),
             (["--request-slice-us", "1ms"], "--request-slice-us", "integer")]
    for args, name, why in cases:
        r = subprocess.run([BIN] + args, capture_output=True, text=True, timeout=30)
        assert r.returncode == 2, (args, r.returncode, r.stderr)
        assert name in r.stderr and why in r.stderr, (args, r.stderr)
        assert r.stderr.count("\n") == 1, r.stderr
    r = subprocess.run([BIN], capture_output=True, text=True, timeout=30,
                       env=dict(os.environ, CLICKFLOW_SHARD_NICE="low"))
    assert r.returncode == 2 and "CLICKFLOW_SHARD_NICE" in r.stderr, r.stderr


if __name__ == "__main__":
    run_tests([test_default_shards_batch_and_niced_request_threads_not, test_options_set_the_nice_and_the_slice,
               test_zero_leaves_every_thread_as_started, test_nice_zero_still_keeps_the_slice_to_request_threads,
               test_bad_values_exit_two_with_the_option_named])
