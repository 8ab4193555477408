"""Keyed state is bounded by --max-keys (docs/DESIGN.md, "Key bound"): far
more distinct pages, users and event_ids than the bound leave at most
--max-keys keys in each keyed operator in total over the shards, state stays
flat while new keys keep coming, and what the bound cost is counted in
GET /api/v1/stats and /metrics and logged once per kind. Below the bound the
results are those of the reference model.

Replay mode (--idle-timeout 0): results depend on the data alone. Nothing
waits on time except the one log line the ticker writes, which is polled
for with a deadline (not asserted on timing).
"""
import json
import time

from harness import Server, run_tests
import test_semantics as sem

T0 = 1_700_000_000_000
BOUND = 200
SHARDS = 2


def post(srv, evs):
    st, body = srv.request("POST", "/api/v1/events",
                           json.dumps(evs, separators=(",", ":")).encode(),
                           {"Content-Type": "application/json"})
    assert st == 202, (st, body)
    return body


def distinct_batch(start, n):
    """n events, each with a new page, user and event_id, inside one 60 s
    tumbling window (so none is late and none is purged)."""
    return [{"user_id": "u%d" % i, "page_url": "/page/%d" % i, "event_id": "id%d" % i,
             "timestamp": T0 + 1_000 + (i % 50_000)} for i in range(start, start + n)]


def metric_samples(text):
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def wait_for_log(srv, needle, deadline_s=20.0):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if needle in srv.read_log():
            return
        time.sleep(0.05)
    raise AssertionError("log never said %r:\n%s" % (needle, srv.read_log()[-2000:]))


def test_many_distinct_keys_stay_bounded_and_are_counted():
    args = ["--idle-timeout", "0", "--shards", str(SHARDS), "--max-keys", str(BOUND)]
    with Server(args) as srv:
        n, per = 0, 2_000
        sizes = []
        for _ in range(10):                     # 20,000 new keys: 100x the bound
            body = post(srv, distinct_batch(n, per))
            assert body["accepted"] == per and body["duplicates"] == 0, body
            n += per
            st, stats = srv.request("GET", "/api/v1/stats")
            assert st == 200
            ks = stats["keyed_state"]
            for op in ("dedup", "sessions", "tumbling", "sliding", "trending"):
                assert ks[op]["max_keys"] == BOUND, (op, ks[op])
                assert 0 < ks[op]["keys"] <= BOUND, (op, ks[op])
                # One event per key: each key is held or was turned away.
                assert ks[op]["keys"] + ks[op]["evicted"] + ks[op]["refused"] == n, (op, ks[op])
            assert ks["tumbling"]["policy"] == "refuse" and ks["trending"]["policy"] == "evict"
            # Open windows: one tumbling and at most 5 sliding windows per
            # held page (without the bound: 6 per distinct page).
            assert stats["open_windows"] <= BOUND + 5 * BOUND, stats["open_windows"]
            assert stats["trending_pages"] <= BOUND, stats
            assert stats["open_sessions"] <= BOUND, stats
            sizes.append(stats["state_bytes"])
        # State is flat while new keys keep arriving: the last 10,000 keys
        # added (at most) a tenth of what the first 2,000 brought.
        assert sizes[-1] - sizes[4] <= sizes[0] // 10 + 4096, sizes
        assert stats["accepted"] == n and stats["late_dropped"] == 0, stats
        assert stats["dedup_evictions"] == n - BOUND, stats
        assert stats["session_evictions"] == ks["sessions"]["evicted"], stats
        assert stats["window_refused"] == ks["tumbling"]["refused"] + ks["sliding"]["refused"]
        assert stats["trending_evictions"] == ks["trending"]["evicted"], stats
        # An evicted id is forgotten: its retry is accepted again (SPEC 6),
        # and a held one is still a duplicate.
        body = post(srv, distinct_batch(0, 1) + distinct_batch(n - 1, 1))
        assert (body["accepted"], body["duplicates"]) == (1, 1), body

        st, _, text = srv.raw_request("GET", "/metrics")
        assert st == 200
        text = text.decode()
        types = [l.split()[2] for l in text.splitlines() if l.startswith("# TYPE ")]
        assert len(types) == len(set(types)), sorted(t for t in types if types.count(t) > 1)
        m = metric_samples(text)
        st, stats = srv.request("GET", "/api/v1/stats")
        for op in ("dedup", "sessions", "tumbling", "sliding", "trending"):
            for field, fam in (("keys", "state_keys"), ("max_keys", "state_max_keys"),
                               ("evicted", "state_keys_evicted_total"),
                               ("refused", "state_keys_refused_total")):
                key = 'clickflow_%s{operator="%s"}' % (fam, op)
                assert m.get(key) == stats["keyed_state"][op][field], (key, m.get(key), stats)

        # Logged once per kind, when it started.
        wait_for_log(srv, "deduplication now forgets")
        log = srv.read_log()
        for needle in ("deduplication now forgets", "tumbling windows: events of new pages",
                       "sliding windows: events of new pages", "trending: the lowest-scored",
                       "sessions: the users whose sessions"):
            assert log.count(needle) == 1, (needle, log[-3000:])


def test_below_the_bound_results_match_the_reference():
    """A bound the trace never reaches changes nothing: every answer equals
    the reference model's (which has no bound), for 1 and 4 shards, and
    nothing is evicted or refused."""
    steps = sem.make_trace(sem.SEED + 11, n_events=1500)
    users, pages = sem.USERS, sem.PAGES

    def body(servers):
        sem.run_trace(servers, steps, sem.SETTINGS, users, pages)
        for srv in servers:
            st, stats = srv.request("GET", "/api/v1/stats")
            assert st == 200
            for op, row in stats["keyed_state"].items():
                assert row["evicted"] == 0 and row["refused"] == 0, (op, row)
                assert row["max_keys"] == 4000, (op, row)

    # 4000 keys: 1000 per shard with 4 shards, above the trace's 20 users,
    # 15 pages and 1500 event_ids.
    sem.with_servers([1, 4], body, extra=["--max-keys", "4000"])


def test_trending_bound_evicts_the_lowest_scored():
    """Trending's policy (docs/DESIGN.md): past the bound the lowest-scored
    pages go, not the least recently clicked. Ten pages clicked 50 times
    early stay while 300 pages clicked once, later, come and go; the hot
    pages' scores are exact (every click counted)."""
    bound = 100     # one shard: the whole bound
    with Server(["--idle-timeout", "0", "--shards", "1", "--max-keys", str(bound),
                 "--half-life", "10m"]) as srv:
        hot = [{"user_id": "h%d" % k, "page_url": "/hot/%d" % i, "timestamp": T0 + k}
               for i in range(10) for k in range(50)]
        post(srv, hot)
        cold = [{"user_id": "c%d" % i, "page_url": "/cold/%d" % i, "timestamp": T0 + 1_000 + i}
                for i in range(300)]
        post(srv, cold)
        st, stats = srv.request("GET", "/api/v1/stats")
        assert st == 200
        ks = stats["keyed_state"]["trending"]
        assert ks["keys"] <= bound and ks["evicted"] == 310 - ks["keys"], ks
        assert stats["trending_evictions"] == ks["evicted"], stats
        st, top = srv.request("GET", "/api/v1/trending?n=10")
        assert st == 200, top
        assert sorted(it["page_url"] for it in top["items"]) == \
            sorted("/hot/%d" % i for i in range(10)), top
        # 50 clicks within 50 ms of T0 and a clock ~1.3 s later, half-life
        # 10 min: every one still counts, decayed by at most 2^(-1.4/600).
        for it in top["items"]:
            assert 49.8 < it["score"] <= 50.0, it


if __name__ == "__main__":
    run_tests([test_many_distinct_keys_stay_bounded_and_are_counted,
               test_below_the_bound_results_match_the_reference,
               test_trending_bound_evicts_the_lowest_scored])
