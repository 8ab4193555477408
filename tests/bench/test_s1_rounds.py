#!/usr/bin/env python3
"""run.py's S1 rounds (issue 15): every side runs in every round, the order
rotates so that each side runs at each position equally often, the dirty
data is written back before every measured side, and the figures are the
medians of the rounds' paired ratios. The wrk calls are replaced by a fake
that returns what the side and round dictate."""
import contextlib
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402


class FakeBench(run.Bench):
    def __init__(self, rates):
        self.rates = rates        # side -> req/s per round
        self.log = []             # what happened, in order
        self.current = None
        self.single = "single.json"

    def settle(self):
        self.log.append("settle")

    def wrk(self, port, body, seconds, conns=64, uas="", cold=False):
        self.log.append("warm " + self.current)
        return {}

    def wrk_cpu(self, pid, port, body, seconds, pids=()):
        side = self.current
        k = sum(1 for e in self.log if e == "measure " + side)
        self.log.append("measure " + side)
        rps = self.rates[side][k]
        return {"rps": rps, "per_cpu_s": rps / 2, "seconds": seconds}


def sides_of(bench, names):
    def side(name):
        @contextlib.contextmanager
        def open_side():
            bench.current = name
            bench.log.append("start " + name)
            yield 1, 2, ()
            bench.log.append("stop " + name)
        return open_side
    return {n: side(n) for n in names}


def test_each_side_runs_at_each_position():
    rates = {n: [1.0] * 6 for n in ("nginx", "cf", "small")}
    b = FakeBench(rates)
    b.s1_rounds(sides_of(b, ["nginx", "cf", "small"]), 6, 5)
    starts = [e.split()[1] for e in b.log if e.startswith("start ")]
    assert len(starts) == 18, starts
    rounds = [starts[i:i + 3] for i in range(0, 18, 3)]
    for r in rounds:
        assert sorted(r) == ["cf", "nginx", "small"], rounds
    for pos in range(3):
        firsts = [r[pos] for r in rounds]
        assert all(firsts.count(n) == 2 for n in ("nginx", "cf", "small")), (pos, rounds)


def test_each_measurement_is_settled_and_warmed_up():
    b = FakeBench({"nginx": [1.0] * 2, "cf": [1.0] * 2})
    b.s1_rounds(sides_of(b, ["nginx", "cf"]), 2, 5)
    for i, e in enumerate(b.log):
        if e.startswith("start "):
            side = e.split()[1]
            assert b.log[i - 1] == "settle", b.log
            assert b.log[i + 1:i + 3] == ["warm " + side, "measure " + side], b.log


def test_ratios_pair_the_rounds_and_take_the_median():
    nginx = [{"rps": r} for r in (100.0, 50.0, 100.0, 80.0, 90.0)]
    cf = [{"rps": r} for r in (60.0, 45.0, 70.0, 40.0, 81.0)]
    rs = run.round_ratios(cf, nginx, "rps")
    assert rs == [0.5, 0.6, 0.7, 0.9, 0.9], rs
    assert statistics.median(rs) == 0.7
    # The ratio of the medians would be 60 / 90, a pairing of different moments.
    assert run.spread(rs) == "0.50-0.90x over 5 rounds"
    assert run.median_round(cf, nginx, "rps") == 2


if __name__ == "__main__":
    import selftest
    selftest.main(globals())
