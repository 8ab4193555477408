"""Overload (SPEC 3): a full queue answers 503 with Retry-After and takes
nothing of that request; the server recovers once the flood stops; under a
sustained overload its memory stays bounded.

Replay mode (--idle-timeout 0) and timestamps inside one window, so every
accepted event is in exactly one tumbling window and never late: the sum of
the window counts must equal the accepted total exactly.
"""
import http.client
import json
import os
import threading
import time

from harness import Server, run_tests

T0 = 1_700_000_000_000


def batch_body(n, tag, pages=50, users=200, ids=None):
    """n events inside one 60 s window, as compact JSON bytes. Without ids
    a resend is a new event; with ids (a prefix) each event has an
    event_id, so a resend is a duplicate."""
    evs = [{"user_id": "%s-u%d" % (tag, i % users), "page_url": "/%s/p%d" % (tag, i % pages),
            "timestamp": T0 + (i * 7) % 50_000, "element": "e"} for i in range(n)]
    if ids is not None:
        for i, e in enumerate(evs):
            e["event_id"] = "%s-%d" % (ids, i)
    return json.dumps(evs, separators=(",", ":")).encode()


def post(port, body, timeout=30.0, conn=None):
    """POST /api/v1/events; returns (status, headers, parsed body). A new
    connection each time unless conn is given (keep-alive)."""
    own = conn is None
    if own:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/api/v1/events", body=body,
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        hdrs = {k.lower(): v for k, v in resp.getheaders()}
        return resp.status, hdrs, json.loads(data) if data else None
    finally:
        if own:
            conn.close()


def get_json(srv, path, timeout=30.0):
    status, body = srv.request("GET", path, timeout=timeout)
    assert status == 200, (path, status, body)
    return body


def window_total(srv):
    """Sum of the counts of every tumbling window, open and closed."""
    total = 0
    for state in ("open", "closed"):
        items = get_json(srv, "/api/v1/windows?type=tumbling&state=%s&limit=100000" % state)
        total += sum(it["count"] for it in items["items"])
    return total


def test_full_queue_503_takes_nothing_and_recovers():
    args = ["--idle-timeout", "0", "--shards", "1", "--queue-capacity", "2",
            "--http-threads", "4", "--fsync", "off"]
    n_threads, batch = 12, 4000
    with Server(args) as srv:
        lock = threading.Lock()
        res = {"accepted": 0, "ok": 0, "busy": 0, "other": [], "retry_after": set(),
               "busy_errors": set(), "retried": 0}
        stop = threading.Event()

        def flood(i):
            # Every event has an event_id; a 503 request is sent again as
            # it was until it gets its 202, which must then accept all of
            # it: a 503 left no trace in dedup either.
            seq, refused = 0, False
            body_bytes = batch_body(batch, "t%d" % i, ids="t%d-%d" % (i, seq))
            while not stop.is_set():
                try:
                    status, hdrs, body = post(srv.http_port, body_bytes)
                except Exception as e:  # noqa: BLE001 - every failure is reported
                    with lock:
                        res["other"].append(repr(e))
                    return
                with lock:
                    if status == 202:
                        res["ok"] += 1
                        res["accepted"] += body["accepted"]
                        if body["accepted"] != batch or body["duplicates"] != 0:
                            res["other"].append(("partial", body))
                    elif status == 503:
                        res["busy"] += 1
                        res["retry_after"].add(hdrs.get("retry-after"))
                        res["busy_errors"].add(body.get("error") if body else None)
                    else:
                        res["other"].append((status, body))
                if status == 503:
                    refused = True
                elif status == 202:
                    if refused:
                        with lock:
                            res["retried"] += 1
                    seq, refused = seq + 1, False
                    body_bytes = batch_body(batch, "t%d" % i, ids="t%d-%d" % (i, seq))

        threads = [threading.Thread(target=flood, args=(i,)) for i in range(n_threads)]
        for t in threads:
            t.start()
        # Flood until enough 503s were seen (a deadline, not a timing
        # assertion: the flood only has to overrun a 2-message queue).
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with lock:
                if res["busy"] >= 10 and res["ok"] >= 5 and res["retried"] >= 1:
                    break
            time.sleep(0.05)
        stop.set()
        for t in threads:
            t.join(60)
        assert not res["other"], res["other"][:5]
        assert res["busy"] >= 10, "no overload reached: %r" % res
        assert res["ok"] >= 5 and res["retried"] >= 1, res
        # Every 503 carries Retry-After (delta-seconds) and a JSON error.
        assert None not in res["retry_after"], res["retry_after"]
        assert all(v.isdigit() and int(v) >= 1 for v in res["retry_after"]), res["retry_after"]
        assert None not in res["busy_errors"], res["busy_errors"]
        # Nothing of a 503 request was accepted, all of a 202 one was: the
        # server's counters and its windows hold exactly the 202s' events.
        stats = get_json(srv, "/api/v1/stats")
        assert stats["accepted"] == res["accepted"] == res["ok"] * batch, (stats, res)
        assert stats["duplicates"] == 0 and stats["late_dropped"] == 0, stats
        assert window_total(srv) == res["accepted"]
        # The server recovers: once the flood stopped, a request is taken.
        deadline = time.monotonic() + 15
        while True:
            status, hdrs, body = post(srv.http_port, batch_body(10, "after"))
            if status == 202:
                break
            assert status == 503 and time.monotonic() < deadline, (status, body)
            time.sleep(0.05)
        assert body["accepted"] == 10, body
        stats = get_json(srv, "/api/v1/stats")
        assert stats["accepted"] == res["accepted"] + 10, stats
        assert max(stats["queue_depth"]) <= 2 + 2, stats
        print("flood: %d x 202, %d x 503, Retry-After %s" % (
            res["ok"], res["busy"], sorted(res["retry_after"])))


def read_status(pid):
    """VmRSS and VmHWM of pid in KiB."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                k, v = line.split(":", 1)
                out[k] = int(v.split()[0])
    return out


def packed_bytes(body):
    """Bytes the server's packed form of a JSON batch takes, at most: the
    cf_event_pack header (21 B) plus the string bytes of each event, plus the
    9-byte role/arrival-number prefix of a queue message entry."""
    return sum(21 + 9 + len(e["user_id"]) + len(e["page_url"]) + len(e.get("element", ""))
               for e in json.loads(body))


def rss_bound(base, shards, capacity, http_threads, connections, body):
    """The RSS bound of the sustained-overload test, in bytes: what the
    server's own limits let it hold at once, on top of the baseline.
      queued shard messages: shards x (capacity + 2 reserved) messages, each
        one request's events for that shard, both roles at worst (x 2);
      HTTP bodies being received: connections x body, and a copy each (x 2);
      parse and route working set of each HTTP thread (cJSON tree, events
        array, packed copy, per-shard messages, WAL payload): 32 x body;
      WAL buffer: an append waits for its commit, so one request per HTTP
        thread (included in the working set above);
      operator state and retained results (50 pages x 50 users, timestamps
        repeating inside one minute, nothing closes): 8 MiB;
      history: sliding windows fire as W moves, faster than the history
        writer stores them on 2 busy cores: its queue (--history-queue,
        8 MiB) plus SQLite's page cache and statements (4 MiB);
      malloc arenas, fragmentation and thread stacks: 32 MiB margin.
    Without the queue and byte limits the backlog alone would grow by
    (503 count) x (packed request bytes): hundreds of MB in 30 s here."""
    packed = packed_bytes(body)
    return (base + shards * (capacity + 2) * 2 * packed + connections * len(body) * 2
            + http_threads * 32 * len(body) + (8 << 20) + (8 << 20) + (4 << 20) + (32 << 20))


def is_asan(pid):
    """True when the server runs under AddressSanitizer (its quarantine and
    shadow memory make RSS meaningless as a bound)."""
    with open("/proc/%d/maps" % pid) as f:
        return "libasan" in f.read()


def test_sustained_overload_keeps_rss_bounded():
    """10x overload or more for 30 s: 24 client connections send 1000-event
    batches as fast as they can to a server made slow on purpose (one shard,
    600 sliding windows per event); VmRSS is sampled every 0.5 s and the
    peak (and VmHWM) must stay under rss_bound()."""
    shards, capacity, http_threads, n_threads = 1, 64, 2, 24
    args = ["--idle-timeout", "0", "--shards", str(shards), "--queue-capacity", str(capacity),
            "--slide-size", "60s", "--slide", "100ms",
            "--http-threads", str(http_threads), "--fsync", "off"]
    duration = float(os.environ.get("CLICKFLOW_OVERLOAD_SECONDS", "30"))
    with Server(args) as srv:
        pid = srv.proc.pid
        asan = is_asan(pid)
        if asan:
            # RSS says nothing under ASan; keep the rest of the checks, and
            # the file within its time budget on the slower binary.
            duration = min(duration, 10.0)
        body = batch_body(1000, "c", pages=50, users=50)
        # Baseline after one request (start-up allocations done).
        status, _, _ = post(srv.http_port, body)
        assert status == 202
        base = read_status(pid)["VmRSS"] * 1024
        bound = rss_bound(base, shards, capacity, http_threads, n_threads, body)
        lock = threading.Lock()
        counts = {"ok": 0, "busy": 0, "accepted": 0, "other": [], "dropped": 0}
        stop = threading.Event()

        def client():
            conn = None
            while not stop.is_set():
                try:
                    if conn is None:
                        conn = http.client.HTTPConnection("127.0.0.1", srv.http_port, timeout=30)
                    status, _, resp = post(srv.http_port, body, conn=conn)
                except (OSError, http.client.HTTPException):
                    # The server may close a keep-alive connection (e.g.
                    # after a 503); open a new one.
                    if conn is not None:
                        conn.close()
                    conn = None
                    with lock:
                        counts["dropped"] += 1
                    continue
                with lock:
                    if status == 202:
                        counts["ok"] += 1
                        counts["accepted"] += resp["accepted"]
                    elif status == 503:
                        counts["busy"] += 1
                    else:
                        counts["other"].append((status, resp))
            if conn is not None:
                conn.close()

        threads = [threading.Thread(target=client) for _ in range(n_threads)]
        t_start = time.monotonic()
        for t in threads:
            t.start()
        samples = []
        while time.monotonic() - t_start < duration:
            samples.append(read_status(pid)["VmRSS"] * 1024)
            time.sleep(0.5)     # the sampling period, not a timing assertion
        stop.set()
        for t in threads:
            t.join(60)
        hwm = read_status(pid)["VmHWM"] * 1024
        peak = max(samples + [hwm])
        ratio = (counts["ok"] + counts["busy"]) / max(1, counts["ok"])
        print("overload %.0f s: %d x 202, %d x 503 (%.1fx offered/taken), baseline %.1f MiB, "
              "peak RSS %.1f MiB (VmHWM %.1f MiB), bound %.1f MiB%s; RSS every 5 s: %s" % (
                  duration, counts["ok"], counts["busy"], ratio, base / 2**20,
                  max(samples) / 2**20, hwm / 2**20, bound / 2**20,
                  " (ASan: bound not checked)" if asan else "",
                  " ".join("%.0f" % (v / 2**20) for v in samples[::10])))
        assert not counts["other"], counts["other"][:5]
        assert counts["ok"] > 0, counts
        # Overloaded: at least 10x more offered than taken (about 25x on the
        # 2-core reference machine, also with other tests running). Under
        # ASan the HTTP side slows down as much as the shard: only ask for an
        # overload there (the RSS bound is not checked either).
        assert ratio >= (1.2 if asan else 10), counts
        if not asan:
            assert peak <= bound, "peak RSS %d > bound %d" % (peak, bound)
        # Still exact after the storm: every 202 counted once. A request
        # whose connection broke has an unknown fate (one batch at most).
        # Read-your-writes: the answer waits until the shards drained the
        # storm's backlog, which an ASan build on a busy machine takes a
        # while to do (a bound, not a timing assertion).
        stats = get_json(srv, "/api/v1/stats", timeout=120.0)
        lo = counts["accepted"] + 1000
        assert lo <= stats["accepted"] <= lo + 1000 * counts["dropped"], (stats, counts)


if __name__ == "__main__":
    run_tests([test_full_queue_503_takes_nothing_and_recovers,
               test_sustained_overload_keeps_rss_bounded])
