"""Event-time semantics of the real daemon against the reference model
(tests/integration/reference.py): windows, late updates and drops, sessions,
dedup, trending and the counters, for a seeded out-of-order trace, with
--shards 1 and --shards 4, which must also agree with each other.

Replay mode (--idle-timeout 0) makes every result a function of the data,
and small windows keep the trace short. Nothing here waits on time: every
query is read-your-writes (SPEC 8 answers reflect every accepted event).
"""
import dataclasses
import datetime
import json
import os
import random
import shutil
import signal
import tempfile
import threading
import time

from harness import Server, run_tests
from reference import Reference, Settings

SEED = int(os.environ.get("CLICKFLOW_SEED", "20261124"))
T0 = 1_700_000_000_000          # a fixed past instant (not in the future: SPEC 2)

SETTINGS = Settings(window_ms=10_000, slide_size_ms=30_000, slide_ms=10_000,
                    session_gap_ms=20_000, allowed_lateness_ms=15_000,
                    out_of_orderness_ms=2_000, half_life_ms=10_000, dedup_ttl_ms=30_000)


def server_args(settings, shards):
    return ["--idle-timeout", "0", "--shards", str(shards),
            "--window", "%dms" % settings.window_ms,
            "--slide-size", "%dms" % settings.slide_size_ms,
            "--slide", "%dms" % settings.slide_ms,
            "--session-gap", "%dms" % settings.session_gap_ms,
            "--allowed-lateness", "%dms" % settings.allowed_lateness_ms,
            "--out-of-orderness", "%dms" % settings.out_of_orderness_ms,
            "--half-life", "%dms" % settings.half_life_ms,
            "--dedup-ttl", "%dms" % settings.dedup_ttl_ms]


# ---- the trace ----------------------------------------------------------------

def rfc3339(ms, offset_min=0):
    """ms as an RFC 3339 string with milliseconds, in the given UTC offset."""
    tz = datetime.timezone(datetime.timedelta(minutes=offset_min))
    d = datetime.datetime.fromtimestamp(ms / 1000, tz=tz)
    d = d.replace(microsecond=(ms % 1000) * 1000)
    s = d.strftime("%Y-%m-%dT%H:%M:%S.") + "%03d" % (ms % 1000)
    if offset_min == 0:
        return s + "Z"
    sign = "+" if offset_min > 0 else "-"
    return s + "%s%02d:%02d" % (sign, abs(offset_min) // 60, abs(offset_min) % 60)


def wire(ev, rng):
    """The JSON object a client sends for a reference event."""
    if ev.get("invalid") == "future":
        # Rejected (more than --max-future ahead of the wall clock): must
        # neither move the clock nor enter dedup (its event_id is the one
        # the next valid event carries).
        return {"user_id": ev["user_id"], "page_url": ev["page_url"],
                "timestamp": int(time.time() * 1000) + 600_000, "event_id": ev["event_id"]}
    if ev.get("invalid"):
        return {"page_url": ev["page_url"], "timestamp": ev["ts"]}   # no user_id
    o = {"user_id": ev["user_id"], "page_url": ev["page_url"]}
    r = rng.random()
    if r < 0.15:
        o["timestamp"] = rfc3339(ev["ts"])
    elif r < 0.2:
        o["timestamp"] = rfc3339(ev["ts"], rng.choice([120, -330]))
    else:
        o["timestamp"] = ev["ts"]
    if ev.get("event_id") is not None:
        o["event_id"] = ev["event_id"]
    if rng.random() < 0.3:
        o["element"] = rng.choice(["buy", "nav", "", "img"])
    if rng.random() < 0.1:
        o["properties"] = {"k": rng.randint(0, 9)}
    if rng.random() < 0.05:
        o["unknown_field"] = [1, 2]
    return o


# Users and pages of the traces; some need percent-encoding in a path and
# sort differently by bytes than by ASCII digits.
USERS = ["u%02d" % i for i in range(18)] + ["\u00fcser 1", "a/b?c%"]
PAGES = ["/p/%d" % i for i in range(12)] + ["/", "/produkt/\u00fc", "/p/1/x"]

GRID_OFFSETS = [0, 1, 999, 1_000, 1_999, 2_000, 5_000, 6_999, 7_000, 9_999]


def make_trace(seed, n_events=3000, grid=False):
    """A list of steps: ("events", [event], fmt), ("watermark", spec) (see
    watermark_value) and ("check", None). Event times: a true time t advancing ~80 ms per
    event, ts = t - delay with mostly bounded disorder, some events late
    within allowed lateness and some beyond it; users with bursts of activity
    and idle gaps longer than the session gap; some duplicate event_ids
    (within and beyond the dedup TTL); a few invalid events. grid: every
    timestamp is one of a few offsets in each 10 s, so that the boundary
    cases (W == end - 1, W == end - 1 + lateness, C == first_ts + ttl, two
    clicks exactly one gap apart) happen often."""
    rng = random.Random(seed)
    pages, users = PAGES, USERS
    weights = [1.0 / (1 + 0.3 * i) for i in range(len(pages))]
    # Per-user activity: alternating active and idle spans (ms from T0).
    span_end = n_events * 100 + 60_000
    active = {}
    for u in users:
        spans, t = [], rng.randint(0, 30_000)
        while t < span_end:
            on = rng.randint(5_000, 40_000)
            spans.append((t, t + on))
            t += on + rng.randint(10_000, 60_000)
        active[u] = spans
    t = T0 + 5_000
    events, sent = [], []
    n_id = 0
    for i in range(n_events):
        t += int(rng.expovariate(1 / 80.0)) + 1
        if sent and rng.random() < 0.04:
            # A client retry of an earlier event: same id and content. Mostly
            # recent (a duplicate), sometimes beyond the TTL (accepted again).
            back = rng.randint(1, 40) if rng.random() < 0.8 else rng.randint(300, 900)
            prev = sent[max(0, len(sent) - back)]
            events.append(dict(prev))
            continue
        rel = t - T0
        now_active = [u for u in users
                      if any(a <= rel < b for a, b in active[u])]
        user = rng.choice(now_active or users)
        r = rng.random()
        if r < 0.85:
            delay = rng.randint(0, 1_800)
        elif r < 0.95:
            delay = rng.randint(2_000, 16_000)
        elif r < 0.98:
            delay = rng.randint(20_000, 45_000)
        else:
            delay = rng.randint(50_000, 90_000)
        ts = max(T0, t - delay)
        if grid:
            # Snap to a few offsets in each 10 s: W = C - 2 s then often
            # lands exactly on end - 1 (C at x1999) or on end - 1 + 15 s
            # (C at x6999), and many clicks share a timestamp (tie rules).
            off = min(GRID_OFFSETS, key=lambda o: abs(ts % 10_000 - o))
            ts = max(T0, ts - ts % 10_000 + off)
        ev = {"user_id": user, "page_url": rng.choices(pages, weights)[0], "ts": ts}
        r = rng.random()
        if r < 0.005:
            ev["invalid"] = "future"
            ev["event_id"] = "e%05d" % (n_id + 1)
        elif r < 0.012:
            ev["invalid"] = "no user_id"
        elif rng.random() < 0.7:
            n_id += 1
            ev["event_id"] = "e%05d" % n_id
            sent.append(ev)
        events.append(ev)

    steps, i = [], 0
    while i < len(events):
        r = rng.random()
        if r < 0.15:
            size = 1
        elif r < 0.65:
            size = rng.randint(2, 20)
        elif r < 0.95:
            size = rng.randint(20, 100)
        else:
            size = rng.randint(100, 400)
        batch = events[i:i + size]
        i += size
        f = rng.random()
        fmt = "ndjson" if f < 0.2 else "text" if f < 0.3 else "json"
        if fmt == "json" and len(batch) == 1 and rng.random() < 0.5:
            fmt = "object"
        steps.append(("events", batch, fmt))
        n_req = sum(1 for st in steps if st[0] == "events")
        r = rng.random()
        if r < 0.03 or n_req % 25 == 12:
            up = rng.randint(500, 4_000)                            # above W: moves it
            steps.append(("watermark", up - up % 1000 if grid else up))
        elif r < 0.045:
            steps.append(("watermark", -rng.randint(1_000, 50_000)))  # below W: no effect
        elif grid and r < 0.15:
            # Exactly onto a firing (x9999) or purge (x4999 = x9999 + 15 s)
            # point of the 10 s windows and the 20 s-gap sessions.
            steps.append(("watermark", ("mod", rng.choice([9_999, 4_999]))))
        if rng.random() < 0.04 or n_req % 20 == 10:
            steps.append(("check", None))
    return steps


# ---- talking to the server ------------------------------------------------------

def post_events(srv, batch, fmt, rng):
    objs = [wire(ev, rng) for ev in batch]
    if fmt == "ndjson":
        body = "".join(json.dumps(o) + "\n" for o in objs)
        headers = {"Content-Type": "application/x-ndjson"}
    elif fmt == "text":
        body = json.dumps(objs)
        headers = {"Content-Type": "text/plain;charset=UTF-8"}
    elif fmt == "object":
        body = json.dumps(objs[0])
        headers = {"Content-Type": "application/json"}
    else:
        body = json.dumps(objs)
        headers = {"Content-Type": "application/json"}
    status, resp = srv.request("POST", "/api/v1/events", body.encode(), headers)
    assert status == 202, (status, resp)
    return resp


def get(srv, path):
    status, body = srv.request("GET", path)
    assert status == 200, (path, status, body)
    return body


def quote(s):
    import urllib.parse
    return urllib.parse.quote(s, safe="")


STAT_KEYS = ["accepted", "rejected", "duplicates", "late_dropped", "late_updates",
             "session_late_dropped", "session_late_updates", "watermark", "event_clock",
             "open_windows", "kept_windows", "open_sessions"]


def snapshot(srv, users, pages, crashed=False):
    """Every deterministic answer of the server, as one dict."""
    out = {}
    for t in ("tumbling", "sliding"):
        for st in ("open", "closed"):
            out["windows %s %s" % (t, st)] = get(
                srv, "/api/v1/windows?type=%s&state=%s&limit=100000" % (t, st))["items"]
    out["windows all"] = get(srv, "/api/v1/windows?limit=100000")["items"]
    out["windows default limit"] = get(srv, "/api/v1/windows")["items"]
    out["windows page"] = get(srv, "/api/v1/windows?state=closed&limit=100000&page_url=%s"
                              % quote(pages[1]))["items"]
    out["sessions"] = get(srv, "/api/v1/sessions?limit=100000")["items"]
    out["sessions limit 7"] = get(srv, "/api/v1/sessions?limit=7")["items"]
    for u in users:
        out["user " + u] = get(srv, "/api/v1/sessions/" + quote(u))
    out["late"] = get(srv, "/api/v1/late?limit=100000")["items"]
    out["trending"] = get(srv, "/api/v1/trending?n=1000")
    out["trending 3"] = get(srv, "/api/v1/trending?n=3")
    stats = get(srv, "/api/v1/stats")
    out["stats"] = {k: stats.get(k) for k in stat_keys(crashed)}
    return out


def stat_keys(crashed):
    return [k for k in STAT_KEYS if not (crashed and k in ("duplicates", "rejected"))]


def expected(ref, users, pages, crashed=False):
    out = {}
    for t in ("tumbling", "sliding"):
        for st in ("open", "closed"):
            out["windows %s %s" % (t, st)] = ref.windows(t, st, limit=100000)["items"]
    out["windows all"] = ref.windows(limit=100000)["items"]
    out["windows default limit"] = ref.windows(limit=100)["items"]
    out["windows page"] = ref.windows(state="closed", page_url=pages[1], limit=100000)["items"]
    out["sessions"] = ref.sessions(100000)["items"]
    out["sessions limit 7"] = ref.sessions(7)["items"]
    for u in users:
        out["user " + u] = ref.user_sessions(u)
    out["late"] = ref.late(100000)["items"]
    out["trending"] = ref.trending(1000)
    out["trending 3"] = ref.trending(3)
    st = ref.stats()
    out["stats"] = {k: st[k] for k in stat_keys(crashed)}
    return out


def trending_diff(got, want):
    """Differences between two trending answers: as_of and half_life exact,
    the same pages, scores within 1e-6 relative, and the server's order
    sorted by its scores (desc) then page_url (asc)."""
    diffs = []
    for k in ("as_of", "half_life_ms"):
        if got.get(k) != want.get(k):
            diffs.append("%s: got %r want %r" % (k, got.get(k), want.get(k)))
    g = {it["page_url"]: it["score"] for it in got["items"]}
    w = {it["page_url"]: it["score"] for it in want["items"]}
    if len(got["items"]) != len(want["items"]):
        diffs.append("items: got %d want %d" % (len(got["items"]), len(want["items"])))
    for p in sorted(set(g) | set(w)):
        if p not in g or p not in w:
            diffs.append("page %r only in %s" % (p, "server" if p in g else "reference"))
        elif abs(g[p] - w[p]) > 1e-6 * abs(w[p]):
            diffs.append("page %r: score %r want %r" % (p, g[p], w[p]))
    order = [(-it["score"], it["page_url"].encode()) for it in got["items"]]
    if order != sorted(order):
        diffs.append("items not sorted by score desc, page_url asc")
    # Where the reference's scores are clearly apart, the order must match.
    wl = [it["page_url"] for it in want["items"]]
    gl = [it["page_url"] for it in got["items"]]
    clear = all(abs(a["score"] - b["score"]) > 1e-5 * a["score"]
                for a, b in zip(want["items"], want["items"][1:]))
    if clear and gl != wl:
        diffs.append("order: got %r want %r" % (gl[:10], wl[:10]))
    return diffs


def list_diff(name, got, want, limit=6):
    if got == want:
        return []
    diffs = ["%s: %d items, want %d" % (name, len(got), len(want))]
    shown = 0
    for i in range(max(len(got), len(want))):
        a = got[i] if i < len(got) else None
        b = want[i] if i < len(want) else None
        if a != b:
            diffs.append("  [%d] got  %s\n       want %s" % (i, json.dumps(a), json.dumps(b)))
            shown += 1
            if shown >= limit:
                break
    return diffs


def compare(got, want):
    diffs = []
    for k in want:
        if k.startswith("trending"):
            diffs += ["%s: %s" % (k, d) for d in trending_diff(got[k], want[k])]
        elif isinstance(want[k], list):
            diffs += list_diff(k, got[k], want[k])
        elif got[k] != want[k]:
            diffs.append("%s:\n  got  %s\n  want %s" % (k, json.dumps(got[k], sort_keys=True),
                                                        json.dumps(want[k], sort_keys=True)))
    return diffs


def watermark_value(ref, spec):
    """The watermark a ("watermark", spec) step posts: an offset from the
    current W, or ("mod", r): the next value above W that is r mod 10 s."""
    base = ref.w if ref.w is not None else T0
    if isinstance(spec, tuple):
        v = base + 1
        return v + (spec[1] - v) % 10_000
    return base + spec


def restart(servers, sig):
    """Stops every server with sig and starts it again on its data dir
    (recovery: snapshot + WAL replay). Replaces the list's entries."""
    for k, srv in enumerate(servers):
        srv.stop(sig)
        new = Server(srv.args, data_dir=srv.data_dir)
        new.own_dir = srv.own_dir       # still ours to delete
        servers[k] = new.start()


def run_trace(servers, steps, settings, users, pages, restarts=None):
    """Sends the trace to every server, checks each response and, at the
    check points and at the end, every answer against the reference.
    restarts: {step index: signal} to stop and restart the servers before
    that step. Returns (reference, final answers per server)."""
    ref = Reference(settings)
    rngs = [random.Random(SEED + 7) for _ in servers]     # same wire forms for all
    checks = 0
    crashed = False
    for i, step in enumerate(steps):
        if restarts and i in restarts:
            restart(servers, restarts[i])
            # Duplicate and rejected counts are not in the log (docs/DESIGN.md):
            # after a kill they come back from the last snapshot only.
            crashed |= restarts[i] == signal.SIGKILL
        if step[0] == "events":
            _, batch, fmt = step
            want = ref.request(batch)
            for srv, rng in zip(servers, rngs):
                resp = post_events(srv, batch, fmt, rng)
                got = (resp["accepted"], resp["duplicates"], resp["rejected"])
                assert got == want, "request %r: got %r want %r" % (
                    [e.get("event_id") for e in batch][:5], got, want)
        elif step[0] == "watermark":
            wm = watermark_value(ref, step[1])
            want_w = ref.raise_watermark(wm)
            for srv in servers:
                status, body = srv.request("POST", "/api/v1/watermark", {"watermark": wm})
                assert status == 200 and body["watermark"] == want_w, (status, body, want_w)
        else:
            checks += 1
            want = expected(ref, users, pages, crashed)
            for srv in servers:
                diffs = compare(snapshot(srv, users, pages, crashed), want)
                assert not diffs, "mid-trace check %d (shards %s):\n%s" % (
                    checks, srv.args[srv.args.index("--shards") + 1], "\n".join(diffs[:40]))
    assert checks >= 2, "the trace should hold mid-trace checks"
    # Far watermark: every window and session fires and is purged.
    far = ref.max_ts + 10 * 86_400_000
    want_w = ref.raise_watermark(far)
    for srv in servers:
        status, body = srv.request("POST", "/api/v1/watermark", {"watermark": far})
        assert status == 200 and body["watermark"] == want_w, (status, body)
    want = expected(ref, users, pages, crashed)
    finals = []
    for srv in servers:
        got = snapshot(srv, users, pages, crashed)
        diffs = compare(got, want)
        assert not diffs, "final check (shards %s):\n%s" % (
            srv.args[srv.args.index("--shards") + 1], "\n".join(diffs[:60]))
        finals.append(got)
    return ref, finals


# ---- tests ----------------------------------------------------------------------

def test_trace_is_meaningful():
    """The generated trace exercises what it should (guards the generator
    and keeps the comparison exact: trending never drops a page)."""
    for seed in (SEED, SEED + 1, SEED + 2):
        trace_is_meaningful(seed)


def trace_is_meaningful(seed):
    steps = make_trace(seed)
    ref = Reference(SETTINGS)
    for step in steps:
        if step[0] == "events":
            ref.request(step[1])
        elif step[0] == "watermark":
            ref.raise_watermark(watermark_value(ref, step[1]))
    ref.raise_watermark(ref.max_ts + 10 * 86_400_000)
    st = ref.stats()
    assert st["accepted"] > 2500, st
    assert st["duplicates"] > 20, st
    assert st["rejected"] > 5, st
    assert st["late_dropped"] > 10, st
    assert st["late_updates"] > 50, st
    assert st["session_late_dropped"] > 5, st
    assert st["session_late_updates"] > 5, st
    assert sum(1 for r in ref.session_emissions if r["revision"] == 0) > 60
    assert sum(1 for s in steps if s[0] == "watermark") >= 3
    assert ref.reaccepted_ids > 3, ref.reaccepted_ids   # ids past the dedup TTL
    assert ref.min_trending_score > 0.01, ref.min_trending_score


def with_servers(shard_counts, fn, extra=(), settings=SETTINGS, extras=None):
    """Starts one server per shard count (with extras[i], if given, added to
    the i-th one's arguments), runs fn(servers), stops them and deletes
    their data dirs (kept, with the log printed, on failure)."""
    servers = []
    ok = False
    try:
        for i, n in enumerate(shard_counts):
            more = list(extras[i]) if extras else []
            servers.append(Server(server_args(settings, n) + list(extra) + more).start())
        result = fn(servers)
        ok = True
        return result
    except Exception:
        for srv in servers:
            print("---- server log (%s, %s):\n%s" % (" ".join(srv.args), srv.data_dir,
                                                  srv.read_log()[-3000:]))
        raise
    finally:
        for srv in servers:
            srv.stop()
            if ok and srv.own_dir:
                shutil.rmtree(srv.data_dir, ignore_errors=True)


def check_seed(seed, grid=False):
    steps = make_trace(seed, grid=grid)
    users, pages = USERS + ["nobody"], PAGES

    def body(servers):
        _, finals = run_trace(servers, steps, SETTINGS, users, pages)
        # --shards 4 answers exactly like --shards 1 (trending up to 1e-6).
        a, b = finals
        for k in a:
            if k.startswith("trending"):
                assert not trending_diff(b[k], a[k]), (k, trending_diff(b[k], a[k]))
            else:
                assert a[k] == b[k], "shards 1 vs 4 differ in %s" % k
    with_servers([1, 4], body)


def test_trace_matches_reference_1_and_4_shards():
    check_seed(SEED)


def test_more_seeds():
    """Two more traces (about 3 s each): other batch splits, other races
    between late events and watermark moves."""
    for seed in (SEED + 1, SEED + 2):
        try:
            check_seed(seed)
        except AssertionError as e:
            raise AssertionError("seed %d: %s" % (seed, e)) from None


def test_setting_variants():
    """The same comparison under other settings: no lateness and no
    out-of-orderness; sliding == tumbling, a 1 ms session gap and dedup TTL;
    windows that do not divide each other with a long lateness; 1 ms
    windows. Random and grid traces, 1 and 3 shards."""
    variants = [
        dict(allowed_lateness_ms=0, out_of_orderness_ms=0),
        dict(slide_size_ms=10_000, slide_ms=10_000, session_gap_ms=1, dedup_ttl_ms=1),
        dict(window_ms=7_000, slide_size_ms=21_000, slide_ms=3_000, session_gap_ms=45_000,
             allowed_lateness_ms=100_000, half_life_ms=5_000),
        dict(window_ms=1, slide_size_ms=2, slide_ms=1, allowed_lateness_ms=1,
             out_of_orderness_ms=1),
    ]
    for k, v in enumerate(variants):
        settings = dataclasses.replace(SETTINGS, **v)
        steps = make_trace(SEED + 10 + k, n_events=1500, grid=k % 2 == 1)

        def body(servers):
            run_trace(servers, steps, settings, USERS, PAGES)
        try:
            with_servers([1, 3], body, settings=settings)
        except AssertionError as e:
            raise AssertionError("settings %r: %s" % (v, e)) from None


def test_grid_trace_boundaries():
    """Timestamps on a grid of a few offsets per 10 s: the exact
    boundaries of firing, purging, dedup expiry and session gaps occur
    hundreds of times; the reference counts them to prove it."""
    steps = make_trace(SEED, grid=True)
    ref = Reference(SETTINGS)
    hits = {"fire": 0, "purge": 0}
    for step in steps:
        if step[0] == "events":
            for ev in step[1]:
                if ref.op_w is not None and not ev.get("invalid"):
                    for _, _, end in ref.windows_of(ev["ts"]):
                        hits["fire"] += ref.op_w == end - 1
                        hits["purge"] += ref.op_w == end - 1 + SETTINGS.allowed_lateness_ms
            ref.request(step[1])
        elif step[0] == "watermark":
            ref.raise_watermark(watermark_value(ref, step[1]))
    assert hits["fire"] > 100 and hits["purge"] > 10, hits
    check_seed(SEED, grid=True)


def test_hand_checked_examples():
    """Small cases computed by hand: they check the reference model itself
    as much as the server (both must give these numbers)."""
    s = SETTINGS
    t = T0 + 100_000      # a multiple of 10 s
    # Request 1: two clicks in window [t, t+10s), one in the next.
    r1 = [{"user_id": "a", "page_url": "/x", "ts": t + 1_000, "event_id": "k1"},
          {"user_id": "b", "page_url": "/x", "ts": t + 2_000},
          {"user_id": "a", "page_url": "/x", "ts": t + 12_000}]
    # Request 2: a duplicate of k1, and C moves to t+12s+... : W = t+13s-2s.
    r2 = [{"user_id": "a", "page_url": "/x", "ts": t + 1_000, "event_id": "k1"},
          {"user_id": "c", "page_url": "/x", "ts": t + 13_000}]
    # Request 3: late for [t, t+10s) (W = t+11s >= end-1) but within
    # lateness: re-fires with revision 1 and 3 users.
    r3 = [{"user_id": "c", "page_url": "/x", "ts": t + 5_000}]
    # Request 4: far beyond lateness for every window: late-dropped.
    r4 = [{"user_id": "d", "page_url": "/x", "ts": t - 60_000, "event_id": "old"},
          {"user_id": "d", "page_url": "/x", "ts": t + 14_000}]

    def body(servers):
        srv = servers[0]
        ref = Reference(s)
        # Before any event: no clock, no watermark, nothing anywhere.
        assert get(srv, "/api/v1/trending") == ref.trending() == {
            "as_of": None, "half_life_ms": 10_000, "items": []}
        st = get(srv, "/api/v1/stats")
        assert {k: st[k] for k in STAT_KEYS} == ref.stats(), (st, ref.stats())
        assert st["watermark"] is None and st["event_clock"] is None, st
        assert get(srv, "/api/v1/windows")["items"] == [] == ref.windows()["items"]
        for batch, want in ((r1, (3, 0, 0)), (r2, (1, 1, 0)), (r3, (1, 0, 0)),
                            (r4, (2, 0, 0))):
            assert ref.request(batch) == want, (batch, ref.request)
            resp = post_events(srv, batch, "json", random.Random(1))
            assert (resp["accepted"], resp["duplicates"], resp["rejected"]) == want, resp
        # By hand: W = t+14s-2s = t+12s; tumbling [t, t+10s) fired at
        # request 2 (W = t+11s) with count 2, users {a, b}; request 3 made
        # revision 1 with count 3, users {a, b, c}.
        closed = get(srv, "/api/v1/windows?type=tumbling&state=closed")["items"]
        want = [{"type": "tumbling", "start": t, "end": t + 10_000, "page_url": "/x",
                 "count": 3, "unique_users": 3, "revision": 1, "final": True}]
        assert closed == want, closed
        assert ref.windows("tumbling", "closed")["items"] == want
        opened = get(srv, "/api/v1/windows?type=tumbling&state=open")["items"]
        want_open = [{"type": "tumbling", "start": t + 10_000, "end": t + 20_000,
                      "page_url": "/x", "count": 3, "unique_users": 3, "revision": 0,
                      "final": False}]
        assert opened == want_open, opened
        assert ref.windows("tumbling", "open")["items"] == want_open
        late = get(srv, "/api/v1/late")["items"]
        want_late = [{"page_url": "/x", "user_id": "d", "timestamp": t - 60_000,
                      "event_id": "old",
                      "reason": "all windows of the event are past allowed lateness"}]
        assert late == want_late, late
        assert ref.late()["items"] == want_late
        # Sessions (gap 20 s): user a has one open session t+1s..t+12s.
        a = get(srv, "/api/v1/sessions/a")
        want_a = {"user_id": "a", "items": [{
            "user_id": "a", "start": t + 1_000, "end": t + 12_000, "duration_ms": 11_000,
            "page_views": 2, "distinct_pages": 1, "entry_page": "/x", "exit_page": "/x",
            "revision": 0, "final": False}]}
        assert a == want_a, a
        assert ref.user_sessions("a") == want_a
        # Trending at T = C = t+14s, half-life 10 s.
        tr = get(srv, "/api/v1/trending")
        ts = [1_000, 2_000, 12_000, 13_000, 5_000, -60_000, 14_000]
        score = sum(2.0 ** (-(14_000 - x) / 10_000) for x in ts)
        assert tr["as_of"] == t + 14_000 and tr["half_life_ms"] == 10_000, tr
        assert abs(tr["items"][0]["score"] - score) <= 1e-6 * score, (tr, score)
        assert abs(ref.trending()["items"][0]["score"] - score) <= 1e-9 * score
        st = get(srv, "/api/v1/stats")
        assert st["accepted"] == 7 and st["duplicates"] == 1 and st["late_dropped"] == 1, st
        # Request 3 re-fired tumbling [t, t+10s) and sliding [t-20s, t+10s).
        assert st["late_updates"] == 2 and st["watermark"] == t + 12_000, st
        assert st["event_clock"] == t + 14_000, st
        assert {k: st[k] for k in STAT_KEYS} == ref.stats(), (st, ref.stats())
    with_servers([1], body)


def test_unique_users_exact_below_100_and_within_2_percent():
    """SPEC 4: unique_users exact below 100 distinct users, relative error
    <= 2% above; the count stays exact. One page per size, in one open
    tumbling window and its sliding windows; some users click twice."""
    sizes_exact = [1, 2, 3, 4, 17, 64, 99]
    sizes_approx = [100, 1000, 5000, 20000]
    t = T0 + 200_000

    def body(servers):
        srv = servers[0]
        want = {}
        for n in sizes_exact + sizes_approx:
            page = "/hll/%d" % n
            evs = [{"user_id": "user-%d-%d" % (n, i), "page_url": page, "timestamp": t + i % 9_000}
                   for i in range(n)]
            evs += evs[: n // 3]          # repeat visits: counted, not distinct
            want[page] = (len(evs), n)
            for k in range(0, len(evs), 5_000):
                status, resp = srv.request("POST", "/api/v1/events", evs[k:k + 5_000])
                assert status == 202 and resp["accepted"] == len(evs[k:k + 5_000]), resp
        for wtype in ("tumbling", "sliding"):
            items = get(srv, "/api/v1/windows?type=%s&state=open&limit=100000" % wtype)["items"]
            seen = 0
            for it in items:
                count, n = want[it["page_url"]]
                assert it["count"] == count, it
                if n < 100:
                    assert it["unique_users"] == n, (it, n)
                else:
                    assert abs(it["unique_users"] - n) <= 0.02 * n, (it, n)
                seen += 1
            # one tumbling window per page; three sliding ones per page
            assert seen == len(want) * (1 if wtype == "tumbling" else 3), (wtype, seen)
    with_servers([2], body)


def test_restarts_mid_trace_change_nothing():
    """SPEC 10 with the reference: a SIGKILL at a third of the trace and a
    SIGTERM at two thirds (each followed by a restart on the same data dir,
    --fsync batch) leave every answer equal to the reference, i.e. to a run
    without a crash (duplicates/rejected counters aside after the kill)."""
    steps = make_trace(SEED + 3)
    n = len(steps)
    with_servers([1, 4], lambda servers: run_trace(
        servers, steps, SETTINGS, USERS, PAGES,
        restarts={n // 3: signal.SIGKILL, 2 * n // 3: signal.SIGTERM}))


def test_retention_counts_windows_not_firings():
    """SPEC 4: at least --retain-results closed results per type are kept.
    The grid trace re-fires windows about a thousand times (late updates);
    with --retain-results 100 each type must still answer at least 100
    distinct closed windows, each one equal to the reference's result. (A
    ring that kept firings rather than windows lost most of them.)"""
    steps = make_trace(SEED, grid=True)
    ref = Reference(SETTINGS)
    wms = {}
    for i, step in enumerate(steps):
        if step[0] == "events":
            ref.request(step[1])
        elif step[0] == "watermark":
            wms[i] = watermark_value(ref, step[1])
            ref.raise_watermark(wms[i])
    assert ref.stats()["late_updates"] > 500, ref.stats()

    def body(servers):
        rng = random.Random(SEED + 7)
        for i, step in enumerate(steps):
            # A kill (WAL replay) and a clean stop (snapshot load) on the way:
            # the rebuilt ring index must keep updating records in place.
            if i in (len(steps) // 3, 2 * len(steps) // 3):
                restart(servers, signal.SIGKILL if i < len(steps) // 2 else signal.SIGTERM)
            srv = servers[0]
            if step[0] == "events":
                post_events(srv, step[1], step[2], rng)
            elif step[0] == "watermark":
                status, _ = srv.request("POST", "/api/v1/watermark", {"watermark": wms[i]})
                assert status == 200
        for t in ("tumbling", "sliding"):
            want = ref.windows(t, "closed", limit=100000)["items"]
            got = get(srv, "/api/v1/windows?type=%s&state=closed&limit=100000" % t)["items"]
            assert len(want) > 100, len(want)
            assert len(got) >= 100, (t, len(got))
            missing = [g for g in got if g not in want]
            assert not missing, (t, missing[:3])
    with_servers([1], body, extra=["--retain-results", "100"])


def test_trending_exact_over_30_days():
    """SPEC 7 over a long span (the server rescales its decayed scores): 30
    days of clicks every 10-50 minutes on five pages, half-life 1 h, checked
    against the reference every 3 days at T = C, within 1e-6 relative. Every
    page is clicked often enough that no score falls below 0.01 (no page may
    be dropped)."""
    settings = Settings(half_life_ms=3_600_000)
    args = ["--idle-timeout", "0", "--half-life", "1h", "--shards", "2"]
    rng = random.Random(SEED)
    pages = ["/a", "/b", "/c", "/d", "/e"]
    ref = Reference(settings)
    with Server(args) as srv:
        t = T0
        for day in range(30):
            batch = []
            for page in pages:
                pt = t
                while pt < t + 86_400_000:
                    batch.append({"user_id": "u%d" % rng.randint(0, 9), "page_url": page,
                                  "ts": pt})
                    pt += rng.randint(600_000, 3_000_000)
            rng.shuffle(batch)
            t += 86_400_000
            ref.request(batch)
            status, resp = srv.request("POST", "/api/v1/events", [
                {"user_id": e["user_id"], "page_url": e["page_url"], "timestamp": e["ts"]}
                for e in batch])
            assert status == 202 and resp["accepted"] == len(batch), resp
            if day % 3 == 2:
                got = get(srv, "/api/v1/trending?n=10")
                diffs = trending_diff(got, ref.trending(10))
                assert not diffs, (day, diffs)
        assert ref.min_trending_score > 0.01, ref.min_trending_score


def test_push_matches_reference():
    """SPEC 4/5/9: what a WebSocket client receives during the trace is
    every firing of the reference: each final window result (first firings
    and every late re-firing, revision by revision), each session_end
    (re-firings included) and each late-dropped event; interim results
    (final: false) only for windows that had not fired yet."""
    from ws_client import WsClient
    steps = make_trace(SEED + 4)
    ref_box = {}

    def body(servers):
        srv = servers[0]
        status, info = srv.request("GET", "/api/v1/info")
        assert status == 200, info
        ws = WsClient(srv.ws_port, info["ws_path"])
        ws.send_json({"subscribe": ["windows", "sessions", "late"]})
        got = {"windows": [], "session_end": [], "late": [], "other": []}
        stop = threading.Event()

        def reader():
            while not stop.is_set():
                try:
                    msg = ws.recv_json(timeout=0.2)
                except TimeoutError:
                    continue
                except Exception as e:  # noqa: BLE001 - reported below
                    got["other"].append(repr(e))
                    return
                if msg.get("type") in got:
                    # session_end carries one record, the others an array.
                    data = msg["data"]
                    got[msg["type"]].extend(data if isinstance(data, list) else [data])
                elif msg.get("type") != "subscribed":
                    got["other"].append(msg.get("type"))
        th = threading.Thread(target=reader)
        th.start()
        try:
            ref, _ = run_trace(servers, steps, SETTINGS, USERS + ["nobody"], PAGES)
            ref_box["ref"] = ref
            want_w = sorted(json.dumps(r, sort_keys=True) for r in ref.window_emissions)
            want_s = sorted(json.dumps(r, sort_keys=True) for r in ref.session_emissions)
            want_l = sorted(json.dumps(r, sort_keys=True) for r in ref.late_events)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                finals = [r for r in got["windows"] if r["final"]]
                if (len(finals) >= len(want_w) and len(got["session_end"]) >= len(want_s)
                        and len(got["late"]) >= len(want_l)):
                    break
                time.sleep(0.05)    # polling for the push, not a timing assertion
        finally:
            stop.set()
            th.join(5)
            ws.close()
        stats = get(srv, "/api/v1/stats")
        assert stats["ws_dropped"] == 0, stats     # else the comparison would be moot
        assert not got["other"], got["other"][:5]
        finals = sorted(json.dumps(r, sort_keys=True) for r in got["windows"] if r["final"])
        assert finals == want_w, list_diff("pushed final windows", finals, want_w)
        sess = sorted(json.dumps(r, sort_keys=True) for r in got["session_end"])
        assert sess == want_s, list_diff("pushed session_end", sess, want_s)
        late = sorted(json.dumps(r, sort_keys=True) for r in got["late"])
        assert late == want_l, list_diff("pushed late", late, want_l)
        # Interim results: only of windows that had not fired (revision 0),
        # never above the window's final count.
        final_count = {}
        for r in ref.window_emissions:
            k = (r["type"], r["start"], r["page_url"])
            final_count[k] = max(final_count.get(k, 0), r["count"])
        interim = [r for r in got["windows"] if not r["final"]]
        assert interim, "no interim results pushed"
        for r in interim:
            k = (r["type"], r["start"], r["page_url"])
            assert r["revision"] == 0 and 1 <= r["count"] <= final_count[k], r
    # A deep client queue: a reader starved by the posting thread must not
    # lose finals (the slow-client policy is tested in test_ws_push).
    with_servers([4], body, extra=["--push-interval", "100ms", "--ws-queue", "65536"])


def test_trending_ties_by_page_url():
    """SPEC 7: equal scores are ordered by page_url ascending (bytewise),
    also when the tied pages live on different shards."""
    pages = ["/b", "/a", "/\u00e9", "/c", "/a/"]
    t = T0 + 300_000
    evs = [{"user_id": "u", "page_url": p, "timestamp": t + k * 1_000}
           for k in range(3) for p in pages]
    evs.append({"user_id": "u", "page_url": "/z", "timestamp": t + 2_000})
    evs += [{"user_id": "v", "page_url": "/z", "timestamp": t + k * 1_000} for k in range(3)]

    def body(servers):
        answers = []
        for srv in servers:
            status, resp = srv.request("POST", "/api/v1/events", evs)
            assert status == 202 and resp["accepted"] == len(evs), resp
            tr = get(srv, "/api/v1/trending?n=4")
            assert [it["page_url"] for it in tr["items"]] == ["/z", "/a", "/a/", "/b"], tr
            scores = [it["score"] for it in tr["items"]]
            assert scores[1] == scores[2] == scores[3] < scores[0], tr
            answers.append(get(srv, "/api/v1/trending?n=10"))
        assert [it["page_url"] for it in answers[0]["items"]] == [
            "/z", "/a", "/a/", "/b", "/c", "/\u00e9"], answers[0]
        assert answers[0] == answers[1], answers
    with_servers([1, 4], body)


def test_concurrent_clients_same_results():
    """Eight clients post at once to a 4-shard server. Every timestamp lies
    within the out-of-orderness of every other, so no window or session can
    fire before the final watermark and the arrival order cannot matter:
    the answers must equal the reference fed the same requests in any
    order. Retries of one event (same event_id and content) are spread over
    the clients, so which copy wins the race does not matter either."""
    rng = random.Random(SEED)
    t = T0 + 400_000
    # Distinct timestamps per user (all within 2 s): a session's entry and
    # exit pages break ties by arrival, which is what a race decides.
    slots = iter(rng.sample(range(len(USERS) * 2_000), 10_000))

    def fresh_event():
        k = next(slots)
        return {"user_id": USERS[k % len(USERS)], "page_url": rng.choice(PAGES),
                "ts": t + k // len(USERS)}
    pool = [dict(fresh_event(), event_id="c%d" % i) for i in range(3000)]
    per_client = []
    for c in range(8):
        reqs = []
        for _ in range(40):
            reqs.append([dict(rng.choice(pool)) if rng.random() < 0.5 else fresh_event()
                         for _ in range(rng.randint(1, 40))])
        per_client.append(reqs)
    ref = Reference(SETTINGS)
    for reqs in per_client:
        for batch in reqs:
            ref.request(batch)

    def body(servers):
        srv = servers[0]
        totals = {"accepted": 0, "duplicates": 0}
        errors = []
        lock = threading.Lock()

        def client(reqs, seed):
            wrng = random.Random(seed)
            try:
                for batch in reqs:
                    resp = post_events(srv, batch, "json", wrng)
                    with lock:
                        totals["accepted"] += resp["accepted"]
                        totals["duplicates"] += resp["duplicates"]
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(repr(e))
        threads = [threading.Thread(target=client, args=(reqs, k))
                   for k, reqs in enumerate(per_client)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(120)
        assert not errors, errors[:3]
        assert totals == {"accepted": ref.accepted, "duplicates": ref.duplicates}, totals
        far = ref.max_ts + 86_400_000
        ref.raise_watermark(far)
        status, _ = srv.request("POST", "/api/v1/watermark", {"watermark": far})
        assert status == 200
        diffs = compare(snapshot(srv, USERS, PAGES), expected(ref, USERS, PAGES))
        assert not diffs, "\n".join(diffs[:40])
    with_servers([4], body, extra=["--http-threads", "4"])


def test_retention_by_window_survives_restarts():
    """--retain-results 20, one page: 21 windows fire (the first one drops
    out), then 19 late re-firings of the newest window. Every re-firing
    must update its record in place, also after a restart from a snapshot
    (SIGTERM) and from the log alone (SIGKILL): 20 windows stay queryable,
    the newest with revision 19."""
    args = ["--idle-timeout", "0", "--shards", "1", "--retain-results", "20",
            "--window", "10s", "--slide-size", "10s", "--slide", "10s",
            "--allowed-lateness", "1h", "--out-of-orderness", "0"]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        d = tempfile.mkdtemp(prefix="clickflow-it-")
        srv = Server(args, data_dir=d).start()
        try:
            evs = [{"user_id": "u", "page_url": "/a", "timestamp": T0 + i * 10_000}
                   for i in range(22)]
            status, resp = srv.request("POST", "/api/v1/events", evs)
            assert status == 202 and resp["accepted"] == 22, resp
            srv.stop(sig)
            srv = Server(args, data_dir=d).start()
            late = {"user_id": "u", "page_url": "/a", "timestamp": T0 + 20 * 10_000 + 5}
            for _ in range(19):
                status, resp = srv.request("POST", "/api/v1/events", late)
                assert status == 202 and resp["accepted"] == 1, resp
            items = get(srv, "/api/v1/windows?type=tumbling&state=closed&limit=1000")["items"]
            assert [(it["start"] - T0, it["revision"], it["count"]) for it in items] == (
                [(200_000, 19, 20)] + [(k * 10_000, 0, 1) for k in range(19, 0, -1)]), (
                    sig, items)
        finally:
            srv.stop()
            shutil.rmtree(d, ignore_errors=True)


def test_trending_dropped_page_error_bounded():
    """SPEC 7 lets a page whose score fell below 0.01 be dropped. A shard
    prunes its trending table when it passes 1024 pages (then twice what
    is left): 100 pages clicked once at T0 and 1,000 pages 20 s later
    (half-life 1 s) make the table pass 1024 pages, and the 100 old ones
    (score 2^-20) go. A dropped page clicked again then misses only what it
    had when it was dropped (< 0.01, decayed since): its score is never
    above the true one and at most 0.01 below. (This is larger than the
    1e-6 relative error the SPEC asks of scores in general: reported as a
    SPEC tension.) The prune depends on the events alone: the same clicks
    one per request and in one request give the same answers."""
    old = [("/old/%d" % i, T0) for i in range(100)]
    new = [("/new/%d" % i, T0 + 20_000 + i) for i in range(1_000)]
    clicks = old + new + [("/old/0", T0 + 21_000)]
    c = T0 + 21_000
    answers = []
    for split in ("one per request", "one request"):
        with Server(["--idle-timeout", "0", "--half-life", "1s", "--shards", "1"]) as srv:
            evs = [{"user_id": "u", "page_url": p, "timestamp": ts} for p, ts in clicks]
            for batch in ([[e] for e in evs] if split == "one per request" else [evs]):
                status, _ = srv.request("POST", "/api/v1/events", batch)
                assert status == 202
            st = get(srv, "/api/v1/stats")
            # Pruned: the 99 old pages not clicked again are gone.
            assert st["trending_pages"] == 1_001, st
            tr = get(srv, "/api/v1/trending?n=1000")
            assert tr["as_of"] == c, tr
            got = {it["page_url"]: it["score"] for it in tr["items"]}
            true = sum(2.0 ** (-(c - ts) / 1_000) for p, ts in clicks if p == "/old/0")
            assert true - 0.01 <= got["/old/0"] <= true * (1 + 1e-6), (got["/old/0"], true)
            assert got["/old/0"] < true     # it was dropped, then clicked again
            for p, ts in new[-5:]:          # never dropped: exact
                want = 2.0 ** (-(c - ts) / 1_000)
                assert abs(got[p] - want) <= 1e-6 * want, (p, got[p], want)
            answers.append(tr)
    assert answers[0] == answers[1], "the request split changed trending"


def test_live_clock_moves_with_the_wall_clock():
    """SPEC 1 outside replay mode: C = max(max ts, wall_now - idle_timeout),
    so W advances with no events and windows fire by themselves; an event
    older than W minus the lateness is late at once (even the first one)."""
    args = ["--idle-timeout", "2s", "--out-of-orderness", "1s", "--window", "1s",
            "--slide-size", "2s", "--slide", "1s", "--allowed-lateness", "0",
            "--session-gap", "1s", "--shards", "2"]
    with Server(args) as srv:
        now = int(time.time() * 1000)
        old = {"user_id": "u", "page_url": "/old", "timestamp": now - 120_000, "event_id": "x1"}
        status, resp = srv.request("POST", "/api/v1/events", old)
        assert status == 202 and resp["accepted"] == 1, resp
        late = get(srv, "/api/v1/late")["items"]
        assert [(it["page_url"], it["timestamp"]) for it in late] == [("/old", now - 120_000)], late
        st = get(srv, "/api/v1/stats")
        wall = int(time.time() * 1000)
        # W = C - 1 s with C >= wall - 2 s (read before `wall`).
        assert now - 3_000 <= st["watermark"] <= wall - 3_000, (st, now, wall)
        assert st["watermark"] + 1_000 <= st["event_clock"] <= wall - 2_000, (st, wall)
        assert st["lag_ms"] >= 3_000, st
        # Trending scores at T = C, which here is the wall clock's term.
        before = int(time.time() * 1000)
        tr = get(srv, "/api/v1/trending")
        after = int(time.time() * 1000)
        assert before - 2_000 <= tr["as_of"] <= after - 2_000, (tr, before, after)
        score = 2.0 ** (-(tr["as_of"] - (now - 120_000)) / 60_000)
        assert len(tr["items"]) == 1 and tr["items"][0]["page_url"] == "/old", tr
        assert abs(tr["items"][0]["score"] - score) <= 1e-6 * score, (tr, score)
        # A fresh event: its tumbling window fires once the wall clock (not
        # another event) moves W past its end; poll with a deadline.
        ts = int(time.time() * 1000)
        status, resp = srv.request("POST", "/api/v1/events",
                                   {"user_id": "u", "page_url": "/now", "timestamp": ts})
        assert status == 202 and resp["accepted"] == 1, resp
        end = ts - ts % 1_000 + 1_000
        deadline = time.monotonic() + 30
        while True:
            closed = get(srv, "/api/v1/windows?type=tumbling&state=closed&page_url=/now")["items"]
            if closed:
                break
            assert time.monotonic() < deadline, get(srv, "/api/v1/stats")
            time.sleep(0.1)     # polling, not a timing assertion
        assert closed == [{"type": "tumbling", "start": end - 1_000, "end": end,
                           "page_url": "/now", "count": 1, "unique_users": 1,
                           "revision": 0, "final": True}], closed
        assert int(time.time() * 1000) >= end - 1 + 3_000      # not before W could get there
        st = get(srv, "/api/v1/stats")
        assert st["watermark"] >= end - 1, st
        # The session of u (gap 1 s) closed the same way.
        deadline = time.monotonic() + 30
        while not get(srv, "/api/v1/sessions")["items"]:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        sess = get(srv, "/api/v1/sessions")["items"]
        assert [(x["user_id"], x["start"], x["end"], x["page_views"]) for x in sess] == [
            ("u", ts, ts, 1)], sess


if __name__ == "__main__":
    run_tests([test_trace_is_meaningful, test_hand_checked_examples,
               test_trace_matches_reference_1_and_4_shards, test_more_seeds,
               test_grid_trace_boundaries,
               test_unique_users_exact_below_100_and_within_2_percent,
               test_restarts_mid_trace_change_nothing,
               test_live_clock_moves_with_the_wall_clock,
               test_retention_counts_windows_not_firings,
               test_trending_exact_over_30_days,
               test_push_matches_reference, test_setting_variants,
               test_trending_ties_by_page_url, test_concurrent_clients_same_results,
               test_retention_by_window_survives_restarts,
               test_trending_dropped_page_error_bounded])
