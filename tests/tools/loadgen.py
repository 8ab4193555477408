#!/usr/bin/env python3
"""loadgen: realistic click traffic for a clickflow server (Python stdlib only).

Simulates users browsing a site: page popularity follows a Zipf law, each
user clicks through a session of a few pages with think time between clicks,
pauses, then comes back for a new session; a fraction of events arrive out
of order (their timestamps are moved into the past) and a fraction are
resent with the same event_id (retries, which the server deduplicates).
Events are POSTed in batches to /api/v1/events at a steady rate.

    tests/tools/loadgen.py --url http://127.0.0.1:8080 --rate 2000 --duration 10 --batch 200

At the end it prints what it sent and a summary of the server's answers
(status codes, accepted / duplicates / rejected, latency percentiles).

By default timestamps follow the wall clock. With --start (RFC 3339 or epoch
ms) they follow a synthetic clock that starts there and advances 1000/rate ms
per event, independent of how fast the server answers: with --seed this gives
the same events every run (use with the server's --idle-timeout 0).

Only send traffic to a server you run yourself (loopback by default).
"""
import argparse
import bisect
import datetime
import heapq
import http.client
import json
import random
import sys
import threading
import time
import urllib.parse

ELEMENTS = ["nav", "link", "buy", "add-to-cart", "search", "signup", "share", "image"]
SECTIONS = ["products", "blog", "docs", "category", "help", "news"]


def parse_time(s):
    """RFC 3339 or integer epoch ms -> epoch ms."""
    if s.lstrip("-").isdigit():
        return int(s)
    dt = datetime.datetime.fromisoformat(s.replace("Z", "+00:00").replace("z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.timezone.utc)
    return int(dt.timestamp() * 1000)


def make_pages(n, rng):
    """n plausible page URLs, most popular first (Zipf rank order)."""
    pages = ["/", "/pricing", "/cart", "/checkout", "/search", "/about", "/login", "/signup"]
    k = 0
    while len(pages) < n:
        sec = SECTIONS[k % len(SECTIONS)]
        pages.append("/%s/%d" % (sec, k // len(SECTIONS) + 1))
        k += 1
    pages = pages[:n]
    # The home page stays on top; a few popular product pages move up.
    head, popular, rest = pages[:1], pages[1:21], pages[21:]
    rng.shuffle(popular)
    return head + popular + rest


class Zipf:
    """Draws ranks 0..n-1 with P(k) proportional to 1 / (k+1)^s."""

    def __init__(self, n, s, rng):
        acc = 0.0
        self.cum = []
        for k in range(n):
            acc += 1.0 / (k + 1) ** s
            self.cum.append(acc)
        self.rng = rng

    def draw(self):
        return bisect.bisect_left(self.cum, self.rng.random() * self.cum[-1])


class Traffic:
    """The simulated site. next_event(now_ms) returns one event dict.

    Users: the population is split into active and pausing users. An active
    user clicks mean_clicks pages on average (geometric), then pauses for an
    exponential time (mean pause_ms) before a new session; pausing users
    return through a heap ordered by their resume time.
    """

    def __init__(self, args, rng):
        self.rng = rng
        self.pages = make_pages(args.pages, rng)
        self.zipf = Zipf(len(self.pages), args.zipf, rng)
        self.ooo = args.out_of_order
        self.max_skew_ms = int(args.max_skew * 1000)
        self.dup = args.duplicates
        self.pause_ms = args.pause * 1000
        self.mean_clicks = args.session_clicks
        self.active = []                # user indexes
        self.left = {}                  # user -> clicks left in this session
        self.last_page = {}
        self.paused = []                # heap of (resume_ms, user)
        for u in range(args.users):
            self.active.append(u)
            self.left[u] = self._session_len()
        self.recent = []                # recently sent events, for duplicates
        self.seq = 0
        self.sent_ooo = 0
        self.sent_dups = 0
        self.users_seen = set()
        self.pages_seen = set()

    def _session_len(self):
        p = 1.0 / max(1.0, self.mean_clicks)
        n = 1
        while self.rng.random() > p and n < 1000:
            n += 1
        return n

    def _resume(self, now_ms):
        while self.paused and self.paused[0][0] <= now_ms:
            _, u = heapq.heappop(self.paused)
            self.left[u] = self._session_len()
            self.active.append(u)

    def next_event(self, now_ms):
        if self.recent and self.rng.random() < self.dup:
            self.sent_dups += 1
            return dict(self.rng.choice(self.recent))     # same event_id: a retry
        self._resume(now_ms)
        if not self.active:         # everyone pausing: bring the next one back early
            _, u = heapq.heappop(self.paused)
            self.left[u] = self._session_len()
            self.active.append(u)
        i = self.rng.randrange(len(self.active))
        u = self.active[i]
        # Mostly Zipf; sometimes the next page of the same section (browsing on).
        last = self.last_page.get(u)
        if last is not None and self.rng.random() < 0.25 and last + 1 < len(self.pages):
            k = last + 1
        else:
            k = self.zipf.draw()
        self.last_page[u] = k
        self.left[u] -= 1
        if self.left[u] <= 0:
            self.active[i] = self.active[-1]
            self.active.pop()
            pause = int(self.rng.expovariate(1.0 / self.pause_ms)) if self.pause_ms > 0 else 0
            heapq.heappush(self.paused, (now_ms + pause, u))
        ts = now_ms
        if self.max_skew_ms > 0 and self.rng.random() < self.ooo:
            ts -= self.rng.randint(1, self.max_skew_ms)
            self.sent_ooo += 1
        self.seq += 1
        ev = {
            "user_id": "u%d" % u,
            "page_url": self.pages[k],
            "element": self.rng.choice(ELEMENTS),
            "timestamp": ts,
            "event_id": "lg-%08x-%d" % (self.rng.getrandbits(32), self.seq),
        }
        self.users_seen.add(u)
        self.pages_seen.add(k)
        self.recent.append(ev)
        if len(self.recent) > 1000:
            del self.recent[:500]
        return ev


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.statuses = {}
        self.accepted = self.duplicates = self.rejected = 0
        self.events_sent = 0
        self.requests = 0
        self.latencies = []
        self.errors = {}
        self.net_errors = 0

    def record(self, n_events, status, body, latency):
        with self.lock:
            self.requests += 1
            self.events_sent += n_events
            self.statuses[status] = self.statuses.get(status, 0) + 1
            self.latencies.append(latency)
            if status == 202 and isinstance(body, dict):
                self.accepted += int(body.get("accepted", 0))
                self.duplicates += int(body.get("duplicates", 0))
                self.rejected += int(body.get("rejected", 0))
                for e in body.get("errors", [])[:5]:
                    msg = str(e.get("error", e))
                    self.errors[msg] = self.errors.get(msg, 0) + 1
            elif isinstance(body, dict) and "error" in body:
                msg = "%d %s" % (status, body["error"])
                self.errors[msg] = self.errors.get(msg, 0) + 1

    def network_error(self, exc):
        with self.lock:
            self.net_errors += 1
            msg = "network: %s" % type(exc).__name__
            self.errors[msg] = self.errors.get(msg, 0) + 1


def percentile(sorted_vals, q):
    if not sorted_vals:
        return 0.0
    i = min(len(sorted_vals) - 1, int(round(q * (len(sorted_vals) - 1))))
    return sorted_vals[i]


def main(argv=None):
    ap = argparse.ArgumentParser(description="Realistic click traffic for a clickflow server.",
                                 epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8080", help="server base URL (default %(default)s)")
    ap.add_argument("--rate", type=float, default=1000, help="events per second (default %(default)s)")
    ap.add_argument("--duration", type=float, default=10, help="seconds to run (default %(default)s)")
    ap.add_argument("--batch", type=int, default=100, help="events per request (default %(default)s)")
    ap.add_argument("--concurrency", type=int, default=2, help="parallel connections (default %(default)s)")
    ap.add_argument("--pages", type=int, default=200, help="distinct pages (default %(default)s)")
    ap.add_argument("--users", type=int, default=2000, help="distinct users (default %(default)s)")
    ap.add_argument("--zipf", type=float, default=1.1, help="Zipf exponent of page popularity (default %(default)s)")
    ap.add_argument("--session-clicks", type=float, default=8, help="mean clicks per session (default %(default)s)")
    ap.add_argument("--pause", type=float, default=30, help="mean pause between a user's sessions, seconds (default %(default)s)")
    ap.add_argument("--out-of-order", type=float, default=0.02, help="fraction of events with past timestamps (default %(default)s)")
    ap.add_argument("--max-skew", type=float, default=8, help="how far back such events go, seconds (default %(default)s)")
    ap.add_argument("--duplicates", type=float, default=0.01, help="fraction of resent events (same event_id) (default %(default)s)")
    ap.add_argument("--start", help="synthetic clock start (RFC 3339 or epoch ms) instead of the wall clock")
    ap.add_argument("--token", help="ingest token (Authorization: Bearer)")
    ap.add_argument("--seed", type=int, help="random seed (repeatable traffic)")
    ap.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    ap.add_argument("--verbose", action="store_true", help="print a few sample events")
    args = ap.parse_args(argv)

    if args.rate <= 0 or args.duration <= 0 or args.batch < 1 or args.concurrency < 1:
        ap.error("--rate, --duration, --batch and --concurrency must be positive")
    if args.pages < 1 or args.users < 1:
        ap.error("--pages and --users must be positive")
    if not (0 <= args.out_of_order <= 1 and 0 <= args.duplicates <= 1):
        ap.error("--out-of-order and --duplicates are fractions in [0, 1]")
    url = urllib.parse.urlsplit(args.url)
    if url.scheme not in ("http", "https") or not url.hostname:
        ap.error("--url must be http(s)://host[:port]")
    start_clock = parse_time(args.start) if args.start else None

    rng = random.Random(args.seed)
    traffic = Traffic(args, rng)
    stats = Stats()
    total_events = int(args.rate * args.duration)
    n_batches = (total_events + args.batch - 1) // args.batch
    gen_lock = threading.Lock()
    next_batch = [0]
    t0 = time.monotonic()
    deadline = t0 + args.duration + 30      # never run away: hard stop
    path = (url.path.rstrip("/") or "") + "/api/v1/events"
    headers = {"Content-Type": "application/json"}
    if args.token:
        headers["Authorization"] = "Bearer " + args.token

    if not args.json:
        print("loadgen: %d events to %s%s in batches of %d at %.0f/s for %.1fs (%d pages, %d users, zipf %.2f, "
              "%.0f%% out of order up to %.1fs, %.1f%% resent)"
              % (total_events, args.url, path, args.batch, args.rate, args.duration, args.pages, args.users,
                 args.zipf, args.out_of_order * 100, args.max_skew, args.duplicates * 100), flush=True)

    def make_batch(i):
        """Events of batch i (under gen_lock: the generator is sequential)."""
        first = i * args.batch
        n = min(args.batch, total_events - first)
        out = []
        for j in range(n):
            if start_clock is not None:
                now_ms = start_clock + int((first + j) * 1000 / args.rate)
            else:
                now_ms = int(time.time() * 1000)
            out.append(traffic.next_event(now_ms))
        return out

    def worker():
        conn = None
        while True:
            with gen_lock:
                i = next_batch[0]
                if i >= n_batches:
                    break
                next_batch[0] += 1
            due = t0 + i * args.batch / args.rate
            while True:
                now = time.monotonic()
                if now >= due or now >= deadline:
                    break
                time.sleep(min(0.05, due - now))    # pacing, not a test assertion
            if time.monotonic() >= deadline:
                break
            with gen_lock:
                events = make_batch(i)
            if args.verbose and i == 0:
                for ev in events[:3]:
                    print("  sample:", json.dumps(ev))
            body = json.dumps(events).encode()
            t = time.monotonic()
            try:
                if conn is None:
                    cls = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
                    conn = cls(url.hostname, url.port or (443 if url.scheme == "https" else 80), timeout=30)
                conn.request("POST", path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                try:
                    parsed = json.loads(data) if data else None
                except ValueError:
                    parsed = None
                stats.record(len(events), resp.status, parsed, time.monotonic() - t)
                if resp.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                stats.network_error(exc)
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(args.concurrency)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(max(0.0, deadline - time.monotonic()) + 1)
    elapsed = time.monotonic() - t0

    lat = sorted(stats.latencies)
    summary = {
        "sent": {
            "events": stats.events_sent,
            "requests": stats.requests + stats.net_errors,
            "seconds": round(elapsed, 3),
            "events_per_second": round(stats.events_sent / elapsed, 1) if elapsed > 0 else 0,
            "distinct_users": len(traffic.users_seen),
            "distinct_pages": len(traffic.pages_seen),
            "out_of_order": traffic.sent_ooo,
            "resent_duplicates": traffic.sent_dups,
        },
        "server": {
            "statuses": {str(k): v for k, v in sorted(stats.statuses.items())},
            "network_errors": stats.net_errors,
            "accepted": stats.accepted,
            "duplicates": stats.duplicates,
            "rejected": stats.rejected,
            "errors": dict(sorted(stats.errors.items(), key=lambda kv: -kv[1])[:10]),
        },
        "latency_ms": {
            "p50": round(percentile(lat, 0.50) * 1000, 2),
            "p90": round(percentile(lat, 0.90) * 1000, 2),
            "p99": round(percentile(lat, 0.99) * 1000, 2),
            "max": round((lat[-1] if lat else 0) * 1000, 2),
        },
    }
    if args.json:
        print(json.dumps(summary))
    else:
        s, v, l = summary["sent"], summary["server"], summary["latency_ms"]
        print("sent:    %d events in %d requests over %.2fs (%.0f events/s); %d users, %d pages, "
              "%d out of order, %d resent"
              % (s["events"], s["requests"], s["seconds"], s["events_per_second"], s["distinct_users"],
                 s["distinct_pages"], s["out_of_order"], s["resent_duplicates"]))
        print("server:  status %s; %d network errors; accepted %d, duplicates %d, rejected %d"
              % (", ".join("%s x%d" % kv for kv in v["statuses"].items()) or "none", v["network_errors"],
                 v["accepted"], v["duplicates"], v["rejected"]))
        for msg, n in v["errors"].items():
            print("         %dx %s" % (n, msg))
        print("latency: p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms"
              % (l["p50"], l["p90"], l["p99"], l["max"]))
    ok = stats.requests > 0 and stats.net_errors == 0 and all(200 <= k < 300 for k in stats.statuses)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
