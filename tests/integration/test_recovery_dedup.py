"""Recovery rebuilds the dedup table from the log in rebuild mode (a plain
map, one bulk build at the end: docs/DESIGN.md, Durability, step 2). After
kill -9 the recovered table must equal that of a server that never stopped:
the same number of ids and evictions, and afterwards the same ids are
duplicates, or new again because they expired. With a --max-keys bound that
evicts during the replay, the rebuild hands over to the heap mid-way, and the
outcome must be the same too.
"""
import random
import signal

from harness import Server, run_tests
from test_crash import BASE_TS, post_events

ARGS = ["--idle-timeout", "0", "--shards", "2", "--dedup-ttl", "5s",
        "--snapshot-interval", "1h", "--segment-size", "16k"]


def batch(rng, state, n):
    """n events continuing the stream: ids e<i>, ts 20-200 ms apart (so the
    5 s ttl expires ids during the run); one in four resends an id 1-80
    events back (a duplicate, or new again once it expired)."""
    evs = []
    for _ in range(n):
        i = state["next"]
        state["next"] += 1
        state["ts"] += rng.randint(20, 200)
        eid = "e%d" % i
        if i > 80 and rng.random() < 0.25:
            eid = "e%d" % (i - rng.randint(1, 80))
        evs.append({"user_id": "u%d" % rng.randint(0, 40),
                    "page_url": "/p/%d" % rng.randint(0, 9),
                    "timestamp": state["ts"] - rng.randint(0, 1000),
                    "event_id": eid})
    return evs


def post_both(servers, evs):
    """Posts evs to every server; all must answer alike. Returns the answer."""
    answers = []
    for srv in servers:
        st, body = post_events(srv, evs)
        assert st == 202, (st, body)
        answers.append({k: body[k] for k in ("accepted", "duplicates", "rejected")})
    assert all(a == answers[0] for a in answers), answers
    return answers[0]


def dedup_state(srv):
    st, stats = srv.request("GET", "/api/v1/stats")
    assert st == 200, (st, stats)
    d = stats["keyed_state"]["dedup"]
    return {"ids": d["keys"], "evicted": d["evicted"], "accepted": stats["accepted"],
            "duplicates": stats["duplicates"]}


def probe_run_ids(ref, crashed, state):
    """Ids of the whole run once more, newest first (a bound evicts the
    oldest), at the run's last timestamp: the recent ones are duplicates,
    the expired or evicted ones new; both servers answer and end alike."""
    probe = [{"user_id": "u1", "page_url": "/p/1", "timestamp": state["ts"],
              "event_id": "e%d" % i} for i in range(state["next"] - 1, -1, -3)]
    got = post_both([ref, crashed], probe)
    assert got["duplicates"] > 0 and got["accepted"] > 0, got
    assert dedup_state(crashed) == dedup_state(ref)


def recovered_equals_uninterrupted(extra, seed):
    rng, state = random.Random(seed), {"ts": BASE_TS, "next": 0}
    ref = Server(ARGS + extra).start()
    crashed = Server(ARGS + extra).start()
    try:
        dups = 0
        for _ in range(60):
            dups += post_both([ref, crashed], batch(rng, state, 20))["duplicates"]
        assert dups > 0  # the stream does resend live ids
        before = dedup_state(ref)
        assert dedup_state(crashed) == before
        crashed.stop(sig=signal.SIGKILL)
        crashed.start()    # no snapshot: every id comes from the log
        assert dedup_state(crashed) == before, (dedup_state(crashed), before)
        probe_run_ids(ref, crashed, state)
        return before
    finally:
        ref.stop()
        crashed.stop()


def test_recovered_dedup_equals_uninterrupted():
    st = recovered_equals_uninterrupted([], 31)
    assert st["evicted"] == 0, st


def test_recovered_dedup_with_evicting_bound_equals_uninterrupted():
    st = recovered_equals_uninterrupted(["--max-keys", "40"], 32)
    assert st["evicted"] > 0, st


if __name__ == "__main__":
    run_tests([test_recovered_dedup_equals_uninterrupted,
               test_recovered_dedup_with_evicting_bound_equals_uninterrupted])
