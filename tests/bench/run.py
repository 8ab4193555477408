#!/usr/bin/env python3
"""The benchmark suite (issue 7): runs each scenario against clickflow and its
baseline in the same run on this machine and prints a markdown table.

  run.py --bin build-release/server/clickflow --tools build-release/tests/bench
         [--smoke] [--out BENCHMARKS.md] [--only S2,S9,S11,S12] [--full]
         [--baseline-bin OTHER/clickflow --baseline-name COMMIT]   (adds S13)
         [--before-bin OLD/clickflow --before-name COMMIT]   (S1, S6 before/after)

--full runs S11 (the interval join) at the issue's 1M orders + 1M payments
(default 200k + 200k, a first figure on a shared machine).

S13 compares S2 against another build of clickflow, e.g. the hard-wired
built-ins before issue 11:
  git worktree add /tmp/base-hardwired f1ea76e && cd /tmp/base-hardwired &&
  meson setup build --buildtype=release && meson compile -C build

--smoke runs every scenario for about a second with small key counts (the
test suite does this so the script cannot rot); the figures are then
meaningless and nothing is written. Traffic goes to 127.0.0.1 only and every
loop is bounded in time.
"""
import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
sys.path.insert(0, HERE)
from harness import Server, free_port  # noqa: E402
from wsprobe import WsClient  # noqa: E402

ROWS = []


def row(scenario, workload, metric, value, baseline_name, baseline, target, ratio=None):
    if ratio is None and baseline not in (None, 0) and isinstance(value, (int, float)):
        ratio = value / baseline
    ROWS.append((scenario, workload, metric, value, baseline_name, baseline, ratio, target))
    print("%s | %s | %s = %s | %s = %s | ratio %s" % (
        scenario, workload, metric, fmt(value), baseline_name, fmt(baseline),
        "-" if ratio is None else "%.2fx" % ratio), flush=True)


def fmt(v):
    if v is None:
        return "-"
    if isinstance(v, float):
        return "{:,.0f}".format(v) if v >= 100 else "%.2f" % v
    if isinstance(v, int):
        return "{:,}".format(v)
    return str(v)


def parse_bench(out):
    m = re.search(r"BENCH (.*)", out)
    if not m:
        raise RuntimeError("no BENCH line in:\n" + out)
    return {k: float(v) for k, v in (kv.split("=") for kv in m.group(1).split())}


def run(cmd, env=None, timeout=600):
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError("%s failed (%d):\n%s%s" % (cmd[0], p.returncode, p.stdout, p.stderr))
    return p.stdout


def cpu_s(pid):
    """utime + stime of a process in seconds (/proc)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu_s(pid, name):
    """utime + stime in seconds of the threads of pid named name (comm)."""
    total = 0.0
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                head, rest = f.read().rsplit(")", 1)
        except OSError:
            continue  # the thread ended meanwhile
        if head.split("(", 1)[1] == name:
            fields = rest.split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def threads_of(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return 0


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def round_ratios(a, b, key):
    """The ratios a[i][key] / b[i][key] of rounds measured side by side,
    sorted (lowest first)."""
    return sorted(x[key] / y[key] for x, y in zip(a, b))


def spread(ratios):
    """'low-highx over n rounds' of sorted ratios."""
    return "%.2f-%.2fx over %d rounds" % (ratios[0], ratios[-1], len(ratios))


def median_round(a, b, key):
    """The index of the round whose ratio a/b is the median one (the upper
    median for an even count)."""
    order = sorted(range(len(a)), key=lambda k: a[k][key] / b[k][key])
    return order[len(order) // 2]


class Bench:
    def __init__(self, a):
        self.a = a
        self.d = a.seconds
        self.tmp = tempfile.mkdtemp(prefix="clickflow-bench-")
        self.client = os.path.join(a.tools, "bench_client")
        self.gen = os.path.join(self.tmp, "gen")
        n_log = 20000 if a.smoke else 1000000
        self.uap_tests = "/usr/share/uap-core/tests/test_ua.yaml"
        run([sys.executable, os.path.join(HERE, "gen.py"), "--out", self.gen, "--bodies", "16",
             "--log-lines", str(n_log)] + (["--uap-tests", self.uap_tests]
                                          if os.path.exists(self.uap_tests) else []))
        self.batches = [os.path.join(self.gen, "batch-%d.json" % k) for k in range(16)]
        self.single = os.path.join(self.gen, "single.json")
        self.n_log = n_log

    def server(self, *args, binary=None, env=None):
        os.environ.update({"CLICKFLOW_BIN": binary or self.a.bin})
        s = Server(["--idle-timeout", "10s"] + list(args), env=env, ready_path="/readyz")
        s.bin = binary or self.a.bin
        return s  # started by the with-statement

    def client_run(self, port, bodies, conns, seconds, rate=0, per_body=1, path="/api/v1/events",
                   timeline=None):
        cmd = [self.client, "--port", str(port), "--conns", str(conns), "--duration", str(seconds),
               "--events-per-body", str(per_body), "--path", path]
        if rate:
            cmd += ["--rate", str(rate)]
        if timeline:
            cmd += ["--timeline", timeline]
        return parse_bench(run(cmd + bodies))

    def wrk(self, port, body, seconds, conns=64, uas="", cold=False):
        env = dict(os.environ, BODIES=body, UAS=uas, UA_COLD="1" if cold else "0")
        out = run(["wrk", "-t2", "-c%d" % conns, "-d%ds" % max(1, int(seconds)), "-s",
                   os.path.join(HERE, "wrk_post.lua"), "http://127.0.0.1:%d/api/v1/events" % port],
                  env=env)
        b = parse_bench(out)
        b["rps"] = b["requests"] / (b["duration_us"] / 1e6)
        return b

    # S1 ----------------------------------------------------------------------
    def wrk_cpu(self, pid, port, body, seconds, pids=()):
        """wrk against a server, with the server's CPU seconds (utime + stime
        of pid and of pids, e.g. nginx's workers) over the run."""
        procs = [pid] + list(pids)
        c0 = sum(cpu_s(p) for p in procs)
        b = self.wrk(port, body, seconds)
        b["cpu_s"] = sum(cpu_s(p) for p in procs) - c0
        b["per_cpu_s"] = b["requests"] / max(b["cpu_s"], 1e-3)
        return b

    def settle(self):
        """Waits until the page cache's dirty data is written: gen.py's files
        and an earlier scenario's logs would otherwise be flushed in the middle
        of a round, by kernel threads that share the 2 cores, and land on
        whichever side happens to run then. sync(2) on Linux waits for the
        writeback it starts; the loop waits for what others started."""
        os.sync()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with open("/proc/meminfo") as f:
                kib = sum(int(line.split()[1]) for line in f
                          if line.startswith(("Dirty:", "Writeback:")))
            if kib < 64 * 1024:
                return
            time.sleep(0.2)

    def nginx(self):
        """Starts nginx answering every POST with 204 (nginx.conf.in); returns
        (process, port, its worker pids)."""
        import socket
        nginx_dir = os.path.join(self.tmp, "nginx")
        os.makedirs(nginx_dir, exist_ok=True)
        port = free_port()
        conf = open(os.path.join(HERE, "nginx.conf.in")).read()
        conf = conf.replace("@DIR@", nginx_dir).replace("@PORT@", str(port)).replace(
            "@WORKERS@", str(os.cpu_count() or 2))
        with open(os.path.join(nginx_dir, "nginx.conf"), "w") as f:
            f.write(conf)
        ngx = subprocess.Popen(["nginx", "-c", os.path.join(nginx_dir, "nginx.conf"), "-p", nginx_dir],
                               stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        workers = [int(p) for p in subprocess.run(["pgrep", "-P", str(ngx.pid)], capture_output=True,
                                                  text=True).stdout.split()]
        return ngx, port, workers

    def s1_rounds(self, sides, rounds, seconds):
        """Short alternated rounds of S1 (issue 15): sides maps a name to a
        function that returns (pid, port, extra pids) inside a context. Each
        round starts from written-back dirty data, warms each side up for a
        second and measures it for seconds; the order rotates every round, so
        each side runs at each position equally often. A single long run of
        each side in turn read nginx and clickflow at different moments of a
        shared machine: the req/s ratio of the same two binaries swung
        0.54-0.98x within minutes while the per-CPU ratio stayed 0.59-0.66x.
        Returns {name: [round results]}."""
        names = list(sides)
        res = {n: [] for n in names}
        for i in range(rounds):
            order = names[i % len(names):] + names[:i % len(names)]
            for n in order:
                self.settle()
                with sides[n]() as (pid, port, pids):
                    self.wrk(port, self.single, 1)
                    res[n].append(self.wrk_cpu(pid, port, self.single, seconds, pids))
            print("S1 round %d: %s" % (i + 1, ", ".join(
                "%s %s req/s %s per CPU-s" % (n, fmt(res[n][-1]["rps"]), fmt(res[n][-1]["per_cpu_s"]))
                for n in names)), flush=True)
        return res

    def s1(self):
        """S1: single-event POSTs, clickflow (defaults, --fsync batch as
        users run it; a fresh server and data dir each round) against nginx
        `return 204`, in alternated rounds; the ratios are the medians of the
        rounds' ratios, with their spread."""
        import contextlib
        import statistics

        ngx, ngx_port, workers = self.nginx()

        @contextlib.contextmanager
        def nginx_side():
            yield ngx.pid, ngx_port, workers

        def cf_side(*args, binary=None):
            @contextlib.contextmanager
            def side():
                with self.server(*args, binary=binary) as srv:
                    yield srv.proc.pid, srv.http_port, ()
            return side

        sides = {"nginx": nginx_side, "cf": cf_side(),
                 # libmicrohttpd zeroes the connection's memory after every
                 # request: 16 KiB by default, 8 KiB with this (issue 15).
                 "small": cf_side("--max-request-head", "3328"),
                 # Two request threads pass the sequencer's lines (its lock,
                 # the log's tail, the queues) between the cores at every
                 # request; one keeps them in one cache (issue 15).
                 "one": cf_side("--http-threads", "1")}
        if self.a.before_bin:
            sides["before"] = cf_side(binary=self.a.before_bin)
        # Short rounds pair the sides at nearer moments: on the shared
        # machine the load moves within seconds (5 s rounds at load 15 read
        # 0.36-1.08x req/s, the same binary against itself 0.83-1.34x).
        rounds = 1 if self.a.smoke else 7
        seconds = 1 if self.a.smoke else max(1, self.d * 3 // 10)
        try:
            res = self.s1_rounds(sides, rounds, seconds)
        finally:
            ngx.send_signal(signal.SIGQUIT)
            ngx.wait(10)

        def med(name, key):
            return statistics.median(r[key] for r in res[name])

        def ratios(name, base, key):
            return round_ratios(res[name], res[base], key)

        what = "single-event POSTs, wrk 2 threads x 64 keep-alive conns, %d alternated %d s rounds" % (
            rounds, seconds)
        rps = ratios("cf", "nginx", "rps")
        cpu = ratios("cf", "nginx", "per_cpu_s")
        row("S1", what, "requests/s (medians; ratio: median of the rounds' ratios)", med("cf", "rps"),
            "nginx return 204", med("nginx", "rps"), ">= 0.8x", statistics.median(rps))
        row("S1", "same", "requests/s ratio, lowest-highest round", spread(rps), "-", None, "-")
        row("S1", "same", "requests per server CPU-second", med("cf", "per_cpu_s"),
            "nginx (master + workers)", med("nginx", "per_cpu_s"), "-", statistics.median(cpu))
        row("S1", "same", "per CPU-second ratio, lowest-highest round", spread(cpu), "-", None, "-")
        # Latency from the round whose req/s ratio is the median one.
        k = median_round(res["cf"], res["nginx"], "rps")
        self.histogram("S1", "same, latency (wrk, the median round)", res["cf"][k], "nginx", res["nginx"][k])
        row("S1", "same, --max-request-head 3328 (8 KiB per connection)", "requests per server CPU-second",
            med("small", "per_cpu_s"), "default 7424 (16 KiB per connection)", med("cf", "per_cpu_s"), "-",
            statistics.median(ratios("small", "cf", "per_cpu_s")))
        row("S1", "same, --http-threads 1 (one request thread)", "requests/s", med("one", "rps"),
            "default (a thread per core) requests/s", med("cf", "rps"), "-",
            statistics.median(ratios("one", "cf", "rps")))
        row("S1", "same", "requests per server CPU-second", med("one", "per_cpu_s"),
            "default per CPU-second", med("cf", "per_cpu_s"), "-",
            statistics.median(ratios("one", "cf", "per_cpu_s")))
        if self.a.before_bin:
            # The same S1 against an older build (e.g. the branch point), in
            # the same rounds: before/after without the day's load in between.
            name = self.a.before_name or "before"
            row("S1", "same, this build against %s" % name, "requests/s", med("cf", "rps"),
                "%s requests/s" % name, med("before", "rps"), "-", statistics.median(ratios("cf", "before", "rps")))
            cpu_b = ratios("cf", "before", "per_cpu_s")
            row("S1", "same", "requests per server CPU-second", med("cf", "per_cpu_s"),
                "%s per CPU-second" % name, med("before", "per_cpu_s"), "-", statistics.median(cpu_b))
            row("S1", "same", "per CPU-second ratio against %s, lowest-highest round" % name, spread(cpu_b),
                "-", None, "-")
            row("S1", "same", "p99 ms (median of the rounds)", med("cf", "p99_us") / 1000,
                "%s p99 ms" % name, med("before", "p99_us") / 1000, "-")
        self.s1_off = None
        return med("cf", "rps")

    # L1: the lib pipeline on one core -----------------------------------------
    def l1(self):
        """lib_bench: dedup and the built-in views on one thread, no server.
        Run with --share: tumbling and sliding keep one pane store, as the
        shards do (--share-panes on). The baseline is the same binary with
        --plain (every view hashes for itself, no look-ahead prefetch, no
        shared panes: the per-core engine before issue 15)."""
        size = ["--events", "100000", "--users", "10000"] if self.a.smoke else ["--events", "1500000"]
        lib_bench = os.path.join(self.a.tools, "lib_bench")

        def per_cpu(*extra):
            out = run([lib_bench] + size + list(extra))
            return float(re.search(r"events_per_cpu_s=([0-9.]+)", out).group(1))
        now, plain = per_cpu("--share"), per_cpu("--plain")
        row("L1", "lib pipeline (dedup + built-in views, shared panes), one core, 1M users",
            "events per CPU-second",
            now, "same with --plain (no shared hashes, no look-ahead)", plain, ">= 1,500,000")

    # R1: recovery --------------------------------------------------------------
    def recover(self, binary, data):
        """Starts binary on a copy of data; seconds to /readyz and server CPU."""
        root = os.path.join(self.tmp, "r1-copy")
        shutil.rmtree(root, ignore_errors=True)
        shutil.copytree(data, os.path.join(root, "data"))
        os.environ["CLICKFLOW_BIN"] = binary
        srv = Server(["--idle-timeout", "0", "--snapshot-interval", "1h"], data_dir=root)
        t0 = time.monotonic()
        srv.start(timeout=900)
        took = time.monotonic() - t0
        cpu = cpu_s(srv.proc.pid)
        st, stats = srv.request("GET", "/api/v1/stats")
        srv.stop()
        shutil.rmtree(root, ignore_errors=True)
        return took, cpu, stats.get("accepted") if st == 200 else None

    def r1(self):
        """A log of N events (tests/bench/wal_gen: 1,000 per record, every one
        with an event_id) recovered from start to /readyz, no snapshot."""
        n = 20000 if self.a.smoke else 10_000_000
        data = os.path.join(self.tmp, "r1-log")
        run([os.path.join(self.a.tools, "wal_gen"), data, str(n)], timeout=900)
        took, cpu, accepted = self.recover(self.a.bin, data)
        if accepted != n:
            raise RuntimeError("R1: recovered %s events of %d" % (accepted, n))
        work = "recovery of a %s-event log (start to /readyz)" % fmt(n)
        before = self.recover(self.a.before_bin, data) if self.a.before_bin else None
        name = self.a.before_name or "before"
        row("R1", work, "events/s", n / took, before and "%s events/s" % name,
            before and n / before[0], ">= 1,250,000 (10M in 8 s)")
        row("R1", "same", "seconds", took, before and "%s seconds" % name, before and before[0],
            "<= 8 s")
        row("R1", "same", "events per server CPU-second", n / max(cpu, 1e-3),
            before and "%s per CPU-second" % name, before and n / max(before[1], 1e-3), "-")
        shutil.rmtree(data, ignore_errors=True)

    # S2 ----------------------------------------------------------------------
    def s2_rate(self, *args, seconds=None):
        with self.server(*args) as srv:
            b = self.client_run(srv.http_port, self.batches, 4, seconds or self.d, per_body=1000)
            return b, srv

    def s2(self):
        b, _ = self.s2_rate()
        self.s2_peak = b["events_per_s"]
        cj = parse_bench(run([os.path.join(self.a.tools, "cjson_baseline"), "--seconds", str(self.d)]
                             + self.batches))
        row("S2", "1000-event JSON arrays, 4 conns, all analytics on", "events/s", b["events_per_s"],
            "raw cJSON parse, 1 core (limit)", cj["events_per_s"], ">= 1,000,000 events/s")
        goaccess = shutil.which("goaccess")
        if goaccess:
            log = os.path.join(self.gen, "access.log")
            t0 = time.monotonic()
            run([goaccess, log, "--log-format=COMBINED", "-o", os.path.join(self.tmp, "report.json"),
                 "--no-global-config"])
            ga = self.n_log / (time.monotonic() - t0)
            row("S2", "same events as access-log lines", "events/s", b["events_per_s"],
                "GoAccess (Debian) log parse", ga, ">= 15x")
        return b

    # S3 ----------------------------------------------------------------------
    def s3(self):
        rate_events = max(1000.0, self.s2_peak / 2)
        with self.server("--push-interval", "500ms") as srv:
            result = {}

            def load():
                result["b"] = self.client_run(srv.http_port, self.batches, 4, self.d,
                                              rate=rate_events / 1000, per_body=1000,
                                              timeline=os.path.join(self.tmp, "s3.timeline"))

            t = threading.Thread(target=load)
            t.start()
            delays = self.push_probe(srv, self.d)
            t.join()
        b = result["b"]
        row("S3", "ingest at half of S2 peak (%s events/s)" % fmt(rate_events), "ingest p50 ms",
            b["p50_us"] / 1000, None, None, "-")
        row("S3", "same", "ingest p90 ms", b["p90_us"] / 1000, None, None, "-")
        row("S3", "same", "ingest p99 ms", b["p99_us"] / 1000, None, None, "< 5 ms")
        row("S3", "same", "ingest p99.9 ms", b["p999_us"] / 1000, None, None, "-")
        row("S3", "same", "ingest max ms", b["max_us"] / 1000, None, None, "-")
        self.plot("s3", "S3: 1000-event POSTs at %s events/s, latency of each (from its scheduled send)"
                  % fmt(rate_events), [(os.path.join(self.tmp, "s3.timeline"), "ingest POST")])
        if delays:
            delays.sort()
            row("S3", "POST -> its count in a WebSocket push (probe into a fired, kept window)", "push p50 ms",
                delays[len(delays) // 2], None, None, "-")
            row("S3", "same", "push p99 ms", delays[min(len(delays) - 1, int(len(delays) * 0.99))],
                None, None, "< 550 ms")

    def push_probe(self, srv, seconds):
        """Posts a uniquely named page every 100 ms and times its first push."""
        ws = WsClient("127.0.0.1", srv.ws_port)
        ws.send_text(json.dumps({"subscribe": ["windows"]}))
        pending, delays = {}, []
        stop = time.monotonic() + seconds
        lock = threading.Lock()

        def reader():
            while True:
                try:
                    m = ws.recv_message()
                except (OSError, ConnectionError, ValueError):
                    return
                now = time.monotonic()
                if m.get("type") != "windows":
                    continue
                for r in m.get("data", []):
                    with lock:
                        t0 = pending.pop(r.get("page_url"), None)
                    if t0 is not None:
                        delays.append((now - t0) * 1000)

        rt = threading.Thread(target=reader, daemon=True)
        rt.start()
        n = 0
        while time.monotonic() < stop:
            # Interim pushes carry only the busiest windows, so a one-click
            # probe page would never appear in them under load. The probe
            # goes instead into the last tumbling window, which has fired
            # but is kept for lateness: a new page there is pushed as a final
            # result at once, through the same queue, shard and hub path.
            now = int(time.time() * 1000)
            if not 7000 <= now % 60000 <= 59000:
                time.sleep(0.1)  # wait until the last window has surely fired
                continue
            ts = now - now % 60000 - 30000
            page = "/probe/%d" % n
            n += 1
            with lock:
                pending[page] = time.monotonic()
            srv.request("POST", "/api/v1/events", {"user_id": "probe", "page_url": page,
                                                   "timestamp": ts})
            time.sleep(0.1)  # probe pacing, not an assertion
        deadline = time.monotonic() + 2
        while pending and time.monotonic() < deadline:
            time.sleep(0.05)
        ws.close()
        return delays

    def histogram(self, scenario, workload, b, base_name, base):
        """Rows p50/p90/p99/p99.9/max (ms) of b against base (same run)."""
        for key, name in (("p50_us", "p50"), ("p90_us", "p90"), ("p99_us", "p99"),
                          ("p999_us", "p99.9"), ("max_us", "max")):
            row(scenario, workload if key == "p50_us" else "same", "%s ms" % name, b[key] / 1000,
                "%s %s ms" % (base_name, name), base[key] / 1000 if base else None, "-")

    def plot(self, name, title, series):
        """Latency over time as a PNG (gnuplot, if installed): one point per
        answer at its scheduled send time, so a pause shows as a column of
        points, not only as a higher percentile. Written beside --out (the
        smoke run writes it to its temporary directory)."""
        if not shutil.which("gnuplot"):
            print("plot %s skipped: no gnuplot (deploy/install-deps.sh --test installs it)" % name)
            return None
        out_dir = self.a.plots if self.a.out and not self.a.smoke else self.tmp
        os.makedirs(out_dir, exist_ok=True)
        png = os.path.join(out_dir, "%s-latency.png" % name)
        plots = ", ".join("'%s' using 1:2 with points pt 7 ps 0.4 title '%s'" % (f, t) for f, t in series)
        script = ("set terminal pngcairo size 1200,500 noenhanced\n" if self.gnuplot_cairo()
                  else "set terminal png size 1200,500 noenhanced\n")
        script += ("set output '%s'\nset title '%s'\nset xlabel 'seconds since start'\n"
                   "set ylabel 'latency ms (log scale)'\nset logscale y\nset grid\nplot %s\n"
                   % (png, title.replace("'", ""), plots))
        run(["gnuplot", "-e", script.replace("\n", "; ")])
        if not os.path.getsize(png):
            raise RuntimeError("gnuplot wrote an empty %s" % png)
        print("plot: %s" % png)
        return png

    def gnuplot_cairo(self):
        p = subprocess.run(["gnuplot", "-e", "set terminal"], capture_output=True, text=True)
        return "pngcairo" in (p.stdout + p.stderr)

    # T1 ----------------------------------------------------------------------
    def t1(self):
        """Tail latency (issue 15): a one-event POST every 10 ms on its own
        connection, beside 1000-event batches on 2 connections paced at half
        of S2's peak, as S3 is (every event_id new, so the dedup table grows
        all the time), with a snapshot every 2 s. Paced, not as fast as
        answered: a closed loop saturates the shards, and then the probe only
        measures how deep the queues are (seconds of backlog), not a pause. The baseline is the
        same probe against an idle server in the same run: the ratio is what
        the load, the snapshots and the table growth add. The same load without
        snapshots is run too, to tell the snapshots' share from the rest."""
        probe_rate = 100
        batch_rate = max(1000.0, self.s2_peak / 2) / 1000  # requests/s, 1000 events each

        def probe(srv, timeline):
            return self.client_run(srv.http_port, [self.single], 1, self.d, rate=probe_rate,
                                   timeline=timeline)

        with self.server("--snapshot-interval", "2s") as srv:
            idle = probe(srv, os.path.join(self.tmp, "t1-idle.timeline"))

        def loaded(interval, timeline):
            with self.server("--snapshot-interval", interval) as srv:
                result = {}

                def load():
                    result["b"] = self.client_run(srv.http_port, self.batches, 2, self.d,
                                                  rate=batch_rate, per_body=1000)

                t = threading.Thread(target=load)
                t.start()
                p = probe(srv, timeline)
                t.join()
            return p, result["b"]

        busy, load_b = loaded("2s", os.path.join(self.tmp, "t1.timeline"))
        # The same load without snapshots (the interval outlasts the run):
        # what the snapshots add to the tail, against what the load alone does.
        nosnap, _ = loaded("1h", os.path.join(self.tmp, "t1-nosnap.timeline"))
        for key, name, target in (("p50_us", "p50", "-"), ("p90_us", "p90", "-"),
                                  ("p99_us", "p99", "< 5 ms"), ("p999_us", "p99.9", "-"),
                                  ("max_us", "max", "< 50 ms")):
            row("T1", "one-event probe every 10 ms beside 1000-event batches on 2 conns at half "
                "of S2's peak (%s events/s sent), snapshots every 2 s, growing dedup table"
                % fmt(load_b["events_per_s"])
                if key == "p50_us" else "same", "probe %s ms" % name, busy[key] / 1000,
                "probe alone (idle server) %s ms" % name, idle[key] / 1000, target)
        row("T1", "same", "probes answered / sent", busy["ok"], "probes scheduled",
            self.d * probe_rate, "-")
        for key, name in (("p50_us", "p50"), ("p90_us", "p90"), ("p99_us", "p99"),
                          ("p999_us", "p99.9"), ("max_us", "max")):
            row("T1", "same", "probe %s ms" % name, busy[key] / 1000,
                "same load without snapshots, %s ms" % name, nosnap[key] / 1000, "-")
        self.plot("t1", "T1: one-event probe every 10 ms beside 1000-event batches, snapshots every 2 s",
                  [(os.path.join(self.tmp, "t1.timeline"), "probe under load, snapshots every 2 s"),
                   (os.path.join(self.tmp, "t1-nosnap.timeline"), "probe under load, no snapshots"),
                   (os.path.join(self.tmp, "t1-idle.timeline"), "probe, idle server")])

    # S4 ----------------------------------------------------------------------
    def s4(self):
        steps = [10000, 100000] if self.a.smoke else [10000, 100000, 1000000, 10000000]
        bodies = os.path.join(self.tmp, "distinct")
        run([sys.executable, os.path.join(HERE, "gen.py"), "--out", bodies, "--bodies", "8",
             "--log-lines", "1", "--pages", "100000", "--distinct-users"])
        files = [os.path.join(bodies, "batch-%d.json" % k) for k in range(8)]
        with self.server("--snapshot-interval", "1h") as srv:
            base_rss = rss_kib(srv.proc.pid)
            sent, first_rate = 0, None
            for target in steps:
                todo = target - sent
                t0 = time.monotonic()
                self.send_events(srv, files, todo)
                rate = todo / (time.monotonic() - t0)
                sent = target
                _, stats = srv.request("GET", "/api/v1/stats")
                sessions = stats.get("open_sessions", 0)
                rss = rss_kib(srv.proc.pid)
                per_rss = (rss - base_rss) * 1024 / sessions if sessions else 0
                per_state = stats.get("session_state_bytes", 0) / sessions if sessions else 0
                first_rate = first_rate or rate
                row("S4", "%s distinct users (open sessions), 100k pages" % fmt(target), "events/s",
                    rate, "events/s at 10k users", first_rate, "within 2x")
                row("S4", "same", "RSS MiB", rss / 1024, None, None, "-")
                row("S4", "same", "session state bytes per open session", per_state, None, None, "< 200")
                row("S4", "same", "RSS growth per open session (all state: sessions, dedup ids, "
                    "windows, trending)", per_rss, None, None, "-")

    def send_events(self, srv, files, n_events):
        """Sends n_events (1000 per request) as fast as the server takes them."""
        requests = max(1, n_events // 1000)
        out = run([self.client, "--port", str(srv.http_port), "--conns", "4", "--duration", "600",
                   "--events-per-body", "1000", "--requests", str(requests)] + files)
        return parse_bench(out)

    # S5 ----------------------------------------------------------------------
    def s5(self):
        """S2 while n WebSocket clients subscribe to every topic. The clients
        are tests/bench/ws_drain (C, one epoll loop: reads every byte, counts
        frames); --s5-python-drain uses the old Python selectors thread
        instead, which took most of a core of its own. Reports the server's
        CPU per event and the drain's CPU, since the tool shares the 2 cores."""
        n_clients = 50 if self.a.smoke else 500
        # The same load without clients right before, for a ratio of server
        # CPU per event that the other load on a shared machine moves less
        # than the wall-clock rate (S2's run may be minutes apart).
        with self.server("--ws-max-clients", str(n_clients + 10)) as srv:
            c0 = cpu_s(srv.proc.pid)
            b0 = self.client_run(srv.http_port, self.batches, 4, self.d, per_body=1000)
            alone_per_cpu = b0["events_per_s"] * self.d / max(cpu_s(srv.proc.pid) - c0, 1e-3)
        with self.server("--ws-max-clients", str(n_clients + 10)) as srv:
            if self.a.s5_python_drain:
                drain = self.python_drain(srv.ws_port, n_clients)
            else:
                drain = self.c_drain(srv.ws_port, n_clients)
            c0, p0 = cpu_s(srv.proc.pid), thread_cpu_s(srv.proc.pid, "cf-push")
            b = self.client_run(srv.http_port, self.batches, 4, self.d, per_body=1000)
            srv_cpu = cpu_s(srv.proc.pid) - c0
            push_cpu = thread_cpu_s(srv.proc.pid, "cf-push") - p0
            got = drain()
            _, st = srv.request("GET", "/api/v1/stats")
        events = b["events_per_s"] * self.d
        row("S5", "S2 ingest with %d WebSocket clients on all topics" % n_clients, "events/s",
            b["events_per_s"], "S2 without clients", self.s2_peak, ">= 0.9x")
        row("S5", "same", "events per server CPU-second", events / max(srv_cpu, 1e-3),
            "same without clients, run just before", alone_per_cpu, "-")
        row("S5", "same", "push MB/s to all clients", got["bytes"] / 1e6 / self.d, None, None, "-")
        row("S5", "same", "push messages/s to all clients", got["messages"] / self.d, None, None, "-")
        row("S5", "same", "push thread (cf-push) share of server CPU", push_cpu / max(srv_cpu, 1e-3),
            None, None, "-")
        row("S5", "same", "drain (the clients, a test tool) CPU-seconds per second",
            got["cpu_s"] / self.d, None, None, "-")
        row("S5", "same", "push messages dropped for slow clients", st.get("ws_dropped", 0),
            None, None, "-")

    def c_drain(self, port, n_clients):
        """Starts ws_drain; returns a function that stops it and returns its
        counts (bytes, messages, cpu_s)."""
        p = subprocess.Popen([os.path.join(self.a.tools, "ws_drain"), "--port", str(port),
                              "--clients", str(n_clients), "--duration", str(self.d * 6 + 60)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if p.stdout.readline().strip() != "READY":
            p.kill()
            raise RuntimeError("ws_drain did not connect its clients")

        def stop():
            out, _ = p.communicate(input="", timeout=30)
            return parse_bench(out)
        return stop

    def python_drain(self, port, n_clients):
        """The old drain: one Python thread reads every client's bytes
        (frames counted as bytes only). Its CPU is the thread's own."""
        import selectors
        clients = [WsClient("127.0.0.1", port) for _ in range(n_clients)]
        stop = threading.Event()
        got = {"bytes": 0.0, "messages": 0.0, "cpu_s": 0.0}

        def drain():
            sel = selectors.DefaultSelector()
            for c in clients:
                c.sock.setblocking(False)
                sel.register(c.sock, selectors.EVENT_READ)
            t0 = time.thread_time()
            while not stop.is_set():
                for key, _ in sel.select(timeout=0.2):
                    try:
                        got["bytes"] += len(key.fileobj.recv(1 << 20))
                    except OSError:
                        pass
            got["cpu_s"] = time.thread_time() - t0

        t = threading.Thread(target=drain, daemon=True)
        t.start()

        def finish():
            stop.set()
            t.join(5)
            for c in clients:
                c.close()
            return got
        return finish

    # S6 ----------------------------------------------------------------------
    def s6(self):
        res = {}
        for pol in ("off", "batch", "always"):
            b, _ = self.s2_rate("--fsync", pol)
            res[pol] = b["events_per_s"]
        row("S6", "S2 with --fsync batch", "events/s", res["batch"], "--fsync off", res["off"], ">= 0.9x")
        row("S6", "S2 with --fsync always", "events/s", res["always"], "--fsync off", res["off"], ">= 0.8x")
        # S1 under --fsync always (requests parked while their fsync runs,
        # http_park.c) against --fsync off, and with the 64 HTTP threads that
        # were the default under always until issue 15's third round; with
        # --before-bin, the older build's pair in the same run.
        variants = [("off", ("--fsync", "off"), None),
                    ("always", ("--fsync", "always"), None),
                    ("always64", ("--fsync", "always", "--http-threads", "64"), None)]
        if self.a.before_bin:
            variants += [("before_off", ("--fsync", "off"), self.a.before_bin),
                         ("before_always", ("--fsync", "always"), self.a.before_bin)]
        single, threads = {}, {}
        for name, args, binary in variants:
            with self.server(*args, binary=binary) as srv:
                single[name] = self.wrk_cpu(srv.proc.pid, srv.http_port, self.single, self.d)
                threads[name] = threads_of(srv.proc.pid)
        row("S6", "S1 with --fsync always, waiting requests parked (group commit)", "requests/s",
            single["always"]["rps"], "S1 with --fsync off", single["off"]["rps"], ">= 0.5x")
        row("S6", "same", "requests per server CPU-second", single["always"]["per_cpu_s"],
            "S1 with --fsync off", single["off"]["per_cpu_s"], "-")
        row("S6", "same, --http-threads 64 (the old default under always)", "requests/s",
            single["always64"]["rps"], "S1 with --fsync off", single["off"]["rps"], "-")
        row("S6", "server threads under --fsync always", "threads", threads["always"],
            "--http-threads 64", threads["always64"], "-")
        if self.a.before_bin:
            name = self.a.before_name or "before"
            row("S6", "S1 always vs off, %s" % name, "requests/s", single["before_always"]["rps"],
                "%s, --fsync off" % name, single["before_off"]["rps"], "-")
            row("S6", "S1 with --fsync always, this build against %s" % name, "requests/s",
                single["always"]["rps"], name, single["before_always"]["rps"], "-")
            row("S6", "same", "requests per server CPU-second", single["always"]["per_cpu_s"],
                name, single["before_always"]["per_cpu_s"], "-")

    # S7 ----------------------------------------------------------------------
    def s7(self):
        """Enrichment (SPEC 15) on against off, same requests, same run:
        S1 with a User-Agent header per request from a Zipf mix of 500
        browser User-Agents, S2 with a user_agent field per event from the
        same mix, after one warm-up pass; then both with every User-Agent
        new (cold cache). Each
        pair alternates off/on twice and keeps the better of each, which
        evens out the noise of a shared machine."""
        seq = os.path.join(self.gen, "ua-seq.txt")
        if not os.path.exists(seq):
            print("S7 skipped: no %s (Debian package uap-core)" % self.uap_tests)
            return
        mix = [os.path.join(self.gen, "batch-ua-%d.json" % k) for k in range(16)]
        cold = [os.path.join(self.gen, "batch-uacold-%d.json" % k) for k in range(16)]

        # The mix runs start after one pass over their User-Agents (a
        # site's few hundred browsers are in the cache after its first
        # minutes); the cold runs measure what a first sight costs. Besides
        # throughput, each run reports events per CPU-second of the server
        # process (utime + stime from /proc), which other load on a shared
        # machine disturbs far less.
        def cpu_s(pid):
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

        # --s7-panels off isolates enrichment from the dashboard panels
        # (views over the enriched columns; with enrichment off they see
        # one NULL group each, so they also cost less).
        panels = ("--panels", self.a.s7_panels)

        def s1(on, cold_ua=False):
            with self.server("--enrich", "on" if on else "off", *panels) as srv:
                if not cold_ua:
                    self.wrk(srv.http_port, self.single, 1, uas=seq)
                c0 = cpu_s(srv.proc.pid)
                b = self.wrk(srv.http_port, self.single, self.d, uas=seq, cold=cold_ua)
                return b["rps"], b["requests"] / max(cpu_s(srv.proc.pid) - c0, 1e-3)

        def s2(on, bodies):
            with self.server("--enrich", "on" if on else "off", *panels) as srv:
                if bodies is mix:
                    run([self.client, "--port", str(srv.http_port), "--conns", "4", "--requests", "64",
                         "--duration", "120", "--events-per-body", "1000"] + bodies)
                c0 = cpu_s(srv.proc.pid)
                b = self.client_run(srv.http_port, bodies, 4, self.d, per_body=1000)
                events = b["events_per_s"] * b["requests"] / max(b["rps"], 1e-9)
                return b["events_per_s"], events / max(cpu_s(srv.proc.pid) - c0, 1e-3)

        best = {}
        for _ in range(1 if self.a.smoke else 2):
            for key, fn in (("s1_off", lambda: s1(False)), ("s1_on", lambda: s1(True)),
                            ("s2_off", lambda: s2(False, mix)), ("s2_on", lambda: s2(True, mix))):
                rate, per_cpu = fn()
                old = best.get(key, (0, 0))
                best[key] = (max(old[0], rate), max(old[1], per_cpu))
        s1_cold = s1(True, cold_ua=True)
        s2_cold = s2(True, cold)
        row("S7", "S1 + User-Agent header from 500 distinct (Zipf), enrichment on", "requests/s",
            best["s1_on"][0], "same, --enrich off", best["s1_off"][0], ">= 0.9x")
        row("S7", "same", "requests per server CPU-second", best["s1_on"][1], "same, --enrich off",
            best["s1_off"][1], ">= 0.9x")
        row("S7", "S2 + user_agent field per event from 500 distinct (Zipf), enrichment on", "events/s",
            best["s2_on"][0], "same, --enrich off", best["s2_off"][0], ">= 0.9x")
        row("S7", "same", "events per server CPU-second", best["s2_on"][1], "same, --enrich off",
            best["s2_off"][1], ">= 0.9x")
        row("S7", "S1, every User-Agent new (cold cache)", "requests/s", s1_cold[0], "S1 mix, --enrich off",
            best["s1_off"][0], "reported")
        row("S7", "S2, every event's User-Agent new (cold cache)", "events/s", s2_cold[0], "S2 mix, --enrich off",
            best["s2_off"][0], "reported")

    # S8 ----------------------------------------------------------------------
    # One windowed user view on both sides (issue 14): with history on, its
    # final results are stored too (group JSON, columns, the distinct-user
    # sketch), and the hourly rollup table is kept up to date.
    S8_VIEW = ("CREATE VIEW b_hist_pages AS SELECT page_url, COUNT(*) AS n, "
               "COUNT(DISTINCT user_id) AS users FROM clicks WINDOW TUMBLING (SIZE 2 SECONDS) "
               "GROUP BY page_url")

    def s8(self):
        """History (issue 14): S2 plus one windowed user view, with history.db
        written (the default) against --history off, same run, interleaved,
        best of two each; events per server CPU-second too."""
        res = {"on": (0, 0), "off": (0, 0)}
        stored = 0
        for _ in range(1 if self.a.smoke else 2):
            for mode in ("off", "on"):
                with self.server("--history", mode) as srv:
                    self.add_sql(srv, [self.S8_VIEW])
                    c0 = cpu_s(srv.proc.pid)
                    b = self.client_run(srv.http_port, self.batches, 4, self.d, per_body=1000)
                    events = b["events_per_s"] * b["requests"] / max(b["rps"], 1e-9)
                    per_cpu = events / max(cpu_s(srv.proc.pid) - c0, 1e-3)
                    if mode == "on":
                        # Close the run's windows (a watermark past them; a
                        # short run may end before any closes) and wait for
                        # their rows to reach the writer.
                        srv.request("POST", "/api/v1/watermark",
                                    {"watermark": int(time.time() * 1000) + 3000})
                        deadline = time.monotonic() + 30
                        while True:
                            _, st = srv.request("GET", "/api/v1/stats")
                            if st["history"]["offered"] > 0 or time.monotonic() > deadline:
                                break
                            time.sleep(0.1)
                        stored = max(stored, st["history"]["offered"])
                old = res[mode]
                res[mode] = (max(old[0], b["events_per_s"]), max(old[1], per_cpu))
        if not stored:
            raise RuntimeError("S8: no result reached history")
        row("S8", "S2 + 1 windowed user view, history.db on (default)", "events/s", res["on"][0],
            "--history off", res["off"][0], ">= 0.95x")
        row("S8", "same", "events per server CPU-second", res["on"][1], "--history off",
            res["off"][1], "-")
        row("S8", "same, history on", "results offered to history.db (one run)", stored, None, None,
            "reported")

    # S9 ----------------------------------------------------------------------
    # Ten user views (SPEC 13) over clicks: different group keys, every
    # window type and most aggregates. Several group by something other than
    # the routing key (each event goes to the shards owning its keys,
    # server/sql_route.h), so this is what a user's own analytics cost on
    # top of S2.
    USER_VIEWS = [
        "CREATE VIEW b_page_run AS SELECT page_url, COUNT(*) AS n FROM clicks GROUP BY page_url",
        "CREATE VIEW b_user_run AS SELECT user_id, COUNT(*) AS n, LATEST(page_url) AS last_page "
        "FROM clicks GROUP BY user_id",
        "CREATE VIEW b_elem_tumble AS SELECT element, COUNT(*) AS n, COUNT(DISTINCT user_id) AS users "
        "FROM clicks WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY element",
        "CREATE VIEW b_x_tumble AS SELECT properties.x AS x, SUM(CAST(properties.load_ms AS BIGINT)) "
        "AS total_ms, AVG(CAST(properties.load_ms AS DOUBLE)) AS avg_ms FROM clicks "
        "WINDOW TUMBLING (SIZE 10 SECONDS) GROUP BY properties.x",
        "CREATE VIEW b_page_hop AS SELECT page_url, COUNT(*) AS n FROM clicks "
        "WINDOW HOPPING (SIZE 1 MINUTE, ADVANCE BY 10 SECONDS) GROUP BY page_url",
        "CREATE VIEW b_user_session AS SELECT user_id, COUNT(*) AS clicks, COUNT(DISTINCT page_url) "
        "AS pages FROM clicks WINDOW SESSION (30 SECONDS) GROUP BY user_id",
        "CREATE VIEW b_browser_run AS SELECT browser, COUNT(*) AS n, MIN(timestamp) AS first_seen, "
        "MAX(timestamp) AS last_seen FROM clicks GROUP BY browser",
        "CREATE VIEW b_elem_topk AS SELECT element, TOPK(page_url, 10) AS top_pages FROM clicks "
        "WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY element",
        "CREATE VIEW b_path_filter AS SELECT URL_PATH(page_url) AS path, "
        "MIN(CAST(properties.load_ms AS BIGINT)) AS min_ms, MAX(CAST(properties.load_ms AS BIGINT)) "
        "AS max_ms FROM clicks WHERE properties.x < 25 WINDOW TUMBLING (SIZE 1 MINUTE) "
        "GROUP BY URL_PATH(page_url)",
        "CREATE VIEW b_trend AS SELECT page_url, DECAYED_COUNT(5 MINUTES) AS score FROM clicks "
        "GROUP BY page_url",
    ]

    def add_sql(self, srv, statements):
        st, body = srv.request("POST", "/api/v1/sql", ";\n".join(statements),
                               {"Content-Type": "application/sql"})
        if st != 200:
            raise RuntimeError("POST /api/v1/sql: %d %s" % (st, body))

    def s9(self):
        """S2 with the ten user views against S2 without them: same bodies
        (S2's batches plus a `properties` object per event, which some views
        read), same run, interleaved, best of two each. Events per server
        CPU-second are reported too (less disturbed by other load)."""
        props = [os.path.join(self.gen, "batch-props-%d.json" % k) for k in range(16)]
        best = {}
        for _ in range(1 if self.a.smoke else 2):
            for views in (False, True):
                shards = ["--shards", str(self.a.s9_shards)] if self.a.s9_shards else []
                with self.server(*shards) as srv:
                    if views:
                        self.add_sql(srv, self.USER_VIEWS)
                    c0 = cpu_s(srv.proc.pid)
                    b = self.client_run(srv.http_port, props, 4, self.d, per_body=1000)
                    events = b["events_per_s"] * b["requests"] / max(b["rps"], 1e-9)
                    per_cpu = events / max(cpu_s(srv.proc.pid) - c0, 1e-3)
                    if views:
                        _, v = srv.request("GET", "/api/v1/views")
                        # The built-ins are listed too (their state is
                        # counted in stats, not here).
                        user = [it for it in v["items"] if not it.get("builtin")]
                        if len(user) != len(self.USER_VIEWS) or not all(
                                it["groups"] > 0 for it in user):
                            raise RuntimeError("S9: a user view saw no events: %s" % v)
                old = best.get(views, (0, 0))
                best[views] = (max(old[0], b["events_per_s"]), max(old[1], per_cpu))
        row("S9", "S2 + 10 user SQL views (keys page_url, user_id, element, properties.x, browser, "
            "URL_PATH; running, tumbling, hopping, session; COUNT, COUNT DISTINCT, SUM, AVG, MIN/MAX, "
            "LATEST, TOPK, DECAYED_COUNT)", "events/s", best[True][0], "same bodies, no user views",
            best[False][0], ">= 0.5x")
        row("S9", "same", "events per server CPU-second", best[True][1], "same bodies, no user views",
            best[False][1], "-")

    # S13 ---------------------------------------------------------------------
    def s13(self):
        """Issue 11: S2 with the built-in analytics running as SQL views
        against the same workload on --baseline-bin, the hard-wired engine of
        the commit before the switch (built from a git worktree, same build
        type). Same bodies, same run, interleaved, best of three each; events
        per server CPU-second too (less disturbed by other load)."""
        if not self.a.baseline_bin:
            raise RuntimeError("S13 needs --baseline-bin")
        best = {}
        # The dashboard panels (--panels, on by default) are user views the
        # baseline does not have: the built-ins alone are compared with them
        # off, and the default (panels on) is shown beside.
        runs = (("base", self.a.baseline_bin, ()), ("sql", self.a.bin, ("--panels", "off")),
                ("panels", self.a.bin, ()))
        for _ in range(1 if self.a.smoke else 3):
            for name, binary, args in runs:
                with self.server(*args, binary=binary) as srv:
                    c0 = cpu_s(srv.proc.pid)
                    b = self.client_run(srv.http_port, self.batches, 4, self.d, per_body=1000)
                    events = b["events_per_s"] * b["requests"] / max(b["rps"], 1e-9)
                    per_cpu = events / max(cpu_s(srv.proc.pid) - c0, 1e-3)
                old = best.get(name, (0, 0))
                best[name] = (max(old[0], b["events_per_s"]), max(old[1], per_cpu))
        what = self.a.baseline_name or "--baseline-bin"
        row("S13", "S2, built-in analytics as SQL views (--panels off)", "events/s",
            best["sql"][0], "hard-wired engine (%s)" % what, best["base"][0], ">= 0.9x")
        row("S13", "same", "events per server CPU-second", best["sql"][1],
            "hard-wired engine (%s)" % what, best["base"][1], ">= 0.9x")
        row("S13", "same with the dashboard panels on (default)", "events per server CPU-second",
            best["panels"][1], "hard-wired engine (%s)" % what, best["base"][1], "-")

    # S10 ---------------------------------------------------------------------
    def s10(self):
        """Memory of user views: one running COUNT(*) view by user_id (bytes
        per group), one tumbling and one hopping COUNT(*) view by user_id with
        every event's windows open (bytes per open window), fed N distinct
        users. Figures are the growth between two N (fixed costs cancel):
        state_bytes from GET /api/v1/views, and the RSS growth of a server
        with the three views minus that of one without them on the same
        events."""
        steps = [2000, 10000] if self.a.smoke else [100000, 500000]
        bodies = os.path.join(self.tmp, "distinct")
        if not os.path.exists(bodies):
            run([sys.executable, os.path.join(HERE, "gen.py"), "--out", bodies, "--bodies", "8",
                 "--log-lines", "1", "--pages", "100000", "--distinct-users"])
        files = [os.path.join(bodies, "batch-%d.json" % k) for k in range(8)]
        hop_windows = 10  # SIZE / ADVANCE BY: every event is in this many open windows
        views = [
            "CREATE VIEW m_run AS SELECT user_id, COUNT(*) AS n FROM clicks GROUP BY user_id",
            "CREATE VIEW m_tumble AS SELECT user_id, COUNT(*) AS n FROM clicks "
            "WINDOW TUMBLING (SIZE 1 HOUR) GROUP BY user_id",
            "CREATE VIEW m_hop AS SELECT user_id, COUNT(*) AS n FROM clicks "
            "WINDOW HOPPING (SIZE 10 MINUTES, ADVANCE BY 1 MINUTE) GROUP BY user_id",
        ]

        def feed(with_views):
            """[(rss KiB, {view: (state_bytes, groups)})] after each step."""
            out = []
            with self.server("--snapshot-interval", "1h") as srv:
                if with_views:
                    self.add_sql(srv, views)
                sent = 0
                for target in steps:
                    self.send_events(srv, files, target - sent)
                    sent = target
                    _, v = srv.request("GET", "/api/v1/views")
                    out.append((rss_kib(srv.proc.pid),
                                {it["name"]: (it["state_bytes"], it["groups"]) for it in v["items"]}))
            return out

        plain, viewed = feed(False), feed(True)
        n = steps[1] - steps[0]

        def per(name):
            (b0, g0), (b1, g1) = viewed[0][1][name], viewed[1][1][name]
            if g1 - g0 != n:
                raise RuntimeError("S10: %s has %d groups for %d new users" % (name, g1 - g0, n))
            return (b1 - b0) / (g1 - g0)

        rss = ((viewed[1][0] - viewed[0][0]) - (plain[1][0] - plain[0][0])) * 1024 / n
        what = "%s -> %s distinct users" % (fmt(steps[0]), fmt(steps[1]))
        row("S10", what + ", running COUNT(*) GROUP BY user_id", "state bytes per group",
            per("m_run"), None, None, "reported")
        row("S10", what + ", TUMBLING (1 h) COUNT(*) GROUP BY user_id", "state bytes per open window",
            per("m_tumble"), None, None, "reported")
        # Reported per group, not per window: the figure shows whether the
        # state of a group grows with the number of windows it is open in.
        row("S10", what + ", HOPPING (10 min, 1 min) COUNT(*) GROUP BY user_id (each group in %d "
            "open windows)" % hop_windows, "state bytes per group", per("m_hop"), None, None,
            "reported")
        row("S10", "same, the three views together", "RSS growth per distinct user (minus a server "
            "without them)", rss, None, None, "reported")

    # S11, S12: joins (issue 12) -----------------------------------------------
    JOIN_STREAMS = [
        "CREATE STREAM orders (order_id STRING NOT NULL, customer_id STRING, amount DOUBLE, "
        "ts TIMESTAMP) WITH (TIMESTAMP = 'ts', EVENT_ID = 'order_id')",
        "CREATE STREAM payments (payment_id STRING NOT NULL, order_id STRING, amount DOUBLE, "
        "ts TIMESTAMP) WITH (TIMESTAMP = 'ts', EVENT_ID = 'payment_id')",
    ]
    PAID = ("CREATE STREAM paid AS SELECT o.order_id AS order_id, o.customer_id AS customer_id, "
            "p.amount AS amount FROM orders o JOIN payments p WITHIN 5 MINUTES "
            "ON o.order_id = p.order_id")

    def join_bodies(self, n):
        """n orders 10 ms apart in event time and one payment each, 0-10
        minutes after its order; each stream sent in 1000-event bodies in
        event-time order with up to 30 s of disorder inside a body, the two
        streams' bodies interleaved by their first timestamp (so payments
        trail their orders by up to 10 minutes). Returns [(path, bytes)]."""
        import random
        rng = random.Random(12)
        t0 = 1_780_000_000_000
        orders, pays = [], []
        for i in range(n):
            ts = t0 + i * 10
            orders.append((ts, '{"order_id":"o%d","customer_id":"c%d","amount":%d.5,"ts":%d}' % (
                i, i % 5000, i % 100, ts)))
            pts = ts + rng.randrange(0, 600_000)
            pays.append((pts, '{"payment_id":"p%d","order_id":"o%d","amount":%d.5,"ts":%d}' % (
                i, i, i % 100, pts)))
        pays.sort()
        bodies = []
        for path, evs in (("/api/v1/streams/orders/events", orders),
                          ("/api/v1/streams/payments/events", pays)):
            for k in range(0, len(evs), 1000):
                chunk = evs[k:k + 1000]
                first = chunk[0][0]
                # Disorder: shuffled within 30 s buckets of event time.
                chunk = sorted(chunk, key=lambda e: (e[0] // 30_000, rng.random()))
                bodies.append((first, path, ("[" + ",".join(e[1] for e in chunk) + "]").encode()))
        bodies.sort(key=lambda b: b[0])
        return [(p, b) for _, p, b in bodies]

    def send_ordered(self, srv, bodies, conns=2, on_progress=None):
        """Sends the bodies in list order over `conns` keep-alive connections
        (at most `conns` in flight, so event-time skew stays small). Returns
        (events accepted, seconds)."""
        import http.client
        lock = threading.Lock()
        nxt = [0]
        accepted = [0]
        errors = []
        every = max(1, len(bodies) // 200)     # about 200 samples a run

        def worker():
            c = http.client.HTTPConnection("127.0.0.1", srv.http_port, timeout=120)
            while True:
                with lock:
                    i = nxt[0]
                    nxt[0] += 1
                if i >= len(bodies) or errors:
                    break
                path, body = bodies[i]
                c.request("POST", path, body=body, headers={"Content-Type": "application/json"})
                r = c.getresponse()
                data = r.read()
                if r.status != 202:
                    errors.append((r.status, data[:200]))
                    break
                with lock:
                    accepted[0] += json.loads(data)["accepted"]
                if on_progress and i % every == 0:
                    on_progress(i)
            c.close()
        t0 = time.monotonic()
        ts = [threading.Thread(target=worker) for _ in range(conns)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        if errors:
            raise RuntimeError("join bench: %s" % errors[:3])
        return accepted[0], time.monotonic() - t0

    def s11(self):
        """Interval join: N orders and N payments through the server (N = 1M
        with --full), 5-minute WITHIN, partners 0-10 minutes apart, out of
        order; events/s against S2 in the same run, buffer bytes per
        buffered event (GET /api/v1/stats "joins"), and RSS sampled over the
        run (flat once the watermark moves: buffers are freed)."""
        n = 5000 if self.a.smoke else 1_000_000 if self.a.full else 200_000
        bodies = self.join_bodies(n)
        if not self.s2_peak:
            self.s2_peak = self.s2_rate()[0]["events_per_s"]
        # S2 per server CPU-second, the steadier figure on a shared machine.
        with self.server() as srv:
            c0 = cpu_s(srv.proc.pid)
            b = self.client_run(srv.http_port, self.batches, 4, self.d, per_body=1000)
            s2_cpu = b["events_per_s"] * b["requests"] / max(b["rps"], 1e-9) / max(
                cpu_s(srv.proc.pid) - c0, 1e-3)
        # Replay mode: the trace's event time, not the wall clock, moves W.
        with self.server("--snapshot-interval", "1h", "--idle-timeout", "0") as srv:
            self.add_sql(srv, self.JOIN_STREAMS + [self.PAID])
            samples = []
            per_event = []

            def sample(i):
                samples.append((i, rss_kib(srv.proc.pid), time.monotonic()))
                _, st = srv.request("GET", "/api/v1/stats")
                j = st["joins"]["paid"]
                if j["buffered_events"] > 100:
                    per_event.append(j["buffered_bytes"] / j["copies"] / j["buffered_events"])
            c0 = cpu_s(srv.proc.pid)
            accepted, secs = self.send_ordered(srv, bodies, on_progress=sample)
            cpu = cpu_s(srv.proc.pid) - c0
            _, st = srv.request("GET", "/api/v1/stats")
            j = st["joins"]["paid"]
            if accepted != 2 * n or j["pairs"] == 0:
                raise RuntimeError("S11: accepted %d of %d, join %s" % (accepted, 2 * n, j))
        rate = accepted / secs
        what = "%s orders + %s payments, WITHIN 5 MINUTES, partners 0-10 min apart, out of order" % (
            fmt(n), fmt(n))
        row("S11", what, "events/s", rate, "S2 (same run)", self.s2_peak, "reported")
        row("S11", "same", "events per server CPU-second", accepted / max(cpu, 1e-3),
            "S2 (same run)", s2_cpu, "reported")
        row("S11", "same (%s pairs)" % fmt(j["pairs"]), "buffer bytes per buffered event (one copy)",
            sum(per_event) / len(per_event) if per_event else None, None, None, "reported")
        half = [r for i, r, _ in samples if i >= len(bodies) // 2]
        quarter = [r for i, r, _ in samples if len(bodies) // 4 <= i < len(bodies) // 2]
        # Throughput per half of the run (bodies are 1000 events): flat too
        # when the join's cost does not grow with the stream.
        firsts = [(i, t) for i, _, t in samples if i < len(bodies) // 2]
        lasts = [(i, t) for i, _, t in samples if i >= len(bodies) // 2]
        if len(firsts) > 1 and len(lasts) > 1:
            r1 = (firsts[-1][0] - firsts[0][0]) * 1000 / max(firsts[-1][1] - firsts[0][1], 1e-9)
            r2 = (lasts[-1][0] - lasts[0][0]) * 1000 / max(lasts[-1][1] - lasts[0][1], 1e-9)
            row("S11", "same", "events/s over the second half", r2, "over the first half", r1,
                "reported")
        if half and quarter:
            row("S11", "same, RSS over the run", "RSS MiB at 1/4 .. 1/2 of the run (max)",
                max(quarter) / 1024, None, None, "reported")
            row("S11", "same", "RSS MiB over the second half (max)", max(half) / 1024,
                "max over 1/4 .. 1/2", max(quarter) / 1024, "flat (about 1.0x)")
        # What the join itself costs: the same bodies with a derived stream
        # per side instead (the events still reach every shard and make a
        # kept row each), so ingest of declared streams cancels out.
        with self.server("--snapshot-interval", "1h", "--idle-timeout", "0") as srv:
            self.add_sql(srv, self.JOIN_STREAMS + [
                "CREATE STREAM o_ids AS SELECT order_id FROM orders",
                "CREATE STREAM p_ids AS SELECT payment_id FROM payments"])
            c0 = cpu_s(srv.proc.pid)
            plain, psecs = self.send_ordered(srv, bodies)
            pcpu = cpu_s(srv.proc.pid) - c0
        row("S11", "same", "events per server CPU-second", accepted / max(cpu, 1e-3),
            "same bodies, a derived stream per side instead of the join", plain / max(pcpu, 1e-3),
            "reported")
        row("S11", "same", "events/s", rate, "same bodies, a derived stream per side instead of the join",
            plain / psecs, "reported")

    def s12(self):
        """Stream-table join: clicks per plan with a table of N users (N = 1M
        unless --smoke) against the same count grouped by a click column,
        without the join: S2's batches, 4 conns, same run, best of two."""
        n = 20_000 if self.a.smoke else 1_000_000
        rows = []
        for k in range(0, n, 10_000):
            rows.append(("/api/v1/tables/users/rows", ("[" + ",".join(
                '{"user_id":"u%d","plan":"%s"}' % (i, ("free", "pro", "team")[i % 3])
                for i in range(k, min(n, k + 10_000))) + "]").encode()))
        views = {
            True: ["CREATE TABLE users (user_id STRING PRIMARY KEY, plan STRING)",
                   "CREATE VIEW per_plan AS SELECT u.plan AS plan, COUNT(*) AS n FROM clicks c "
                   "LEFT JOIN users u ON c.user_id = u.user_id GROUP BY u.plan"],
            False: ["CREATE TABLE users (user_id STRING PRIMARY KEY, plan STRING)",
                    "CREATE VIEW per_element AS SELECT c.element AS element, COUNT(*) AS n FROM clicks c "
                    "GROUP BY c.element"],
        }
        best = {}
        for _ in range(1 if self.a.smoke else 2):
            for join in (False, True):
                with self.server("--snapshot-interval", "1h") as srv:
                    self.add_sql(srv, views[join])
                    loaded, _ = self.send_ordered(srv, rows, conns=1)
                    if loaded != n:
                        raise RuntimeError("S12: %d of %d rows" % (loaded, n))
                    b = self.client_run(srv.http_port, self.batches, 4, self.d, per_body=1000)
                    best[join] = max(best.get(join, 0), b["events_per_s"])
        row("S12", "S2 + view clicks per plan (LEFT JOIN a %s-row table)" % fmt(n), "events/s",
            best[True], "same view by element, no join (same table loaded)", best[False], "reported")

    def table(self):
        lines = ["| scenario | workload | metric | clickflow | baseline | baseline value | ratio | target |",
                 "|---|---|---|---|---|---|---|---|"]
        for s, w, m, v, bn, b, r, t in ROWS:
            lines.append("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
                s, w, m, fmt(v), bn or "-", fmt(b), "-" if r is None else "%.2fx" % r, t))
        return "\n".join(lines)


REPORT_END = "<!-- end of the table tests/bench/run.sh writes; the sections below are kept -->"


def write_report(path, head):
    """Puts head (the latest run's table) at the top of path, in place of the
    previous run's, and keeps everything below it: the dated sections that
    explain earlier runs and changes are written by hand and stay. The old
    head ends at REPORT_END or, in a file written before the marker existed,
    at its first "## " section."""
    rest = ""
    try:
        with open(path) as f:
            old = f.read()
    except FileNotFoundError:
        old = ""
    if REPORT_END in old:
        rest = old.split(REPORT_END, 1)[1].lstrip("\n")
    elif "\n## " in old:
        rest = old[old.index("\n## ") + 1:]
    with open(path, "w") as f:
        f.write(head.rstrip("\n") + "\n\n" + REPORT_END + "\n")
        if rest:
            f.write("\n" + rest)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--tools", required=True)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--out")
    ap.add_argument("--s9-shards", type=int, default=0,
                    help="--shards for S9's servers (default: the server's default)")
    ap.add_argument("--only", default=None,
                    help="scenarios, comma-separated (default S1-S12 with T1, and S13 with --baseline-bin)")
    ap.add_argument("--plots", default="docs/bench",
                    help="where the latency-over-time PNGs go (with --out)")
    ap.add_argument("--baseline-bin",
                    help="S13: a clickflow binary to compare S2 against (e.g. the hard-wired "
                    "built-ins of an older commit, built with `git worktree add`)")
    ap.add_argument("--baseline-name", help="S13: how the table names the baseline (a commit)")
    ap.add_argument("--before-bin",
                    help="S1, S6: also run their single-event scenarios against this older clickflow "
                    "binary in the same run (before/after)")
    ap.add_argument("--before-name", help="how the table names --before-bin (a commit)")
    ap.add_argument("--s7-panels", default="on", choices=("on", "off"),
                    help="S7's servers run the dashboard panel views (default on, as the product)")
    ap.add_argument("--s2-peak", type=float, default=0,
                    help="S3/T1: pace the load at half of this many events/s instead of measuring "
                    "S2 first (the same rate for a before/after pair of runs)")
    ap.add_argument("--s5-python-drain", action="store_true",
                    help="S5: drain the WebSocket clients with the old Python thread instead of ws_drain")
    ap.add_argument("--full", action="store_true",
                    help="S11 at the issue's size (1M orders + 1M payments) instead of 200k + 200k")
    a = ap.parse_args()
    if a.only is None:
        a.only = "S1,S2,S3,T1,S4,S5,S6,S7,S8,S9,S10,S11,S12,L1,R1" + (",S13" if a.baseline_bin else "")
    a.seconds = 1 if a.smoke else 10
    b = Bench(a)
    b.s2_peak = a.s2_peak
    only = set(a.only.split(","))
    try:
        for name in ("S1", "S2", "S3", "T1", "S4", "S5", "S6", "S7", "S8", "S9", "S10", "S11", "S12", "S13",
                     "L1", "R1"):
            if name in only:
                if name in ("S3", "T1") and not b.s2_peak:
                    b.s2_peak = b.s2_rate()[0]["events_per_s"]
                getattr(b, name.lower())()
    finally:
        shutil.rmtree(b.tmp, ignore_errors=True)
    table = b.table()
    print()
    print(table)
    if a.out and not a.smoke:
        cpu = "unknown"
        try:
            with open("/proc/cpuinfo") as f:
                cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
        except (OSError, StopIteration):
            pass
        head = ("# Benchmarks\n\nLatest run of `tests/bench/run.sh` on %s: %s, %d cores, %s, %s.\n"
                "Each ratio compares figures measured in the same run.\n\n%s\n" % (
                    time.strftime("%Y-%m-%d"), cpu, os.cpu_count() or 0, platform.platform(),
                    "Python %s" % platform.python_version(), table))
        write_report(a.out, head)
    if any(r[3] is None for r in ROWS):
        sys.exit(1)
    print("bench: %d passed, 0 failed" % len(ROWS))


if __name__ == "__main__":
    main()
