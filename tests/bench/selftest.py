"""The runner of tests/bench's own tests (test_*.py): runs every test_
function of a module, prints ok/FAIL per test, and exits non-zero on a failure."""
import sys


def main(namespace):
    failed = 0
    for name, fn in sorted(namespace.items()):
        if name.startswith("test_"):
            try:
                fn()
                print("ok   " + name)
            except AssertionError as e:
                failed += 1
                print("FAIL %s: %s" % (name, e))
    sys.exit(1 if failed else 0)
