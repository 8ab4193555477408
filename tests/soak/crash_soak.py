#!/usr/bin/env python3
"""Crash soak: the crash loop of tests/integration/test_crash.py with 100
SIGKILLs (several minutes; not part of `meson test`).

    CLICKFLOW_BIN=build/server/clickflow python3 tests/soak/crash_soak.py \
        [--kills 100] [--seed N] [--fsync batch|always|off] [--batch 20]

Exit status 0 when every result after the kills equals that of a run without
crashes fed exactly the acknowledged events (none lost, none counted twice).
"""
import argparse
import os
import random
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

from test_crash import crash_loop  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=100)
    ap.add_argument("--seed", type=int, default=random.SystemRandom().randrange(1 << 30))
    ap.add_argument("--fsync", choices=["always", "batch", "off"], default="batch")
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--min-interval", type=float, default=0.2, help="seconds between kills, low")
    ap.add_argument("--max-interval", type=float, default=1.5, help="seconds between kills, high")
    a = ap.parse_args()
    os.environ.setdefault("CLICKFLOW_BIN", os.path.join(HERE, "..", "..", "build", "server",
                                                        "clickflow"))
    figures = crash_loop(a.kills, a.seed, batch=a.batch, lo=a.min_interval, hi=a.max_interval,
                         fsync=a.fsync)
    print("crash soak passed: %(events)d events, %(batches)d batches, %(retries)d retried "
          "requests, slowest restart %(restart_max_s).2fs" % figures)


if __name__ == "__main__":
    main()
