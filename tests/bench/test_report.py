#!/usr/bin/env python3
"""run.py --out rewrites only the latest run's table at the top of
BENCHMARKS.md and keeps the dated sections below it (they are written by
hand and explain earlier runs)."""
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import REPORT_END, write_report  # noqa: E402

SECTIONS = "## Round one (2026-12-01)\n\nkept text\n\n## Round two\n\n| a | b |\n"


def written(before, head):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "BENCHMARKS.md")
        if before is not None:
            with open(path, "w") as f:
                f.write(before)
        write_report(path, head)
        with open(path) as f:
            return f.read()


def test_new_file_has_the_table_and_the_marker():
    assert written(None, "# Benchmarks\n\n| t1 |\n") == "# Benchmarks\n\n| t1 |\n\n" + REPORT_END + "\n"


def test_marked_file_keeps_its_sections():
    first = written("# Benchmarks\n\n| old |\n\n" + REPORT_END + "\n\n" + SECTIONS, "# Benchmarks\n\n| new |\n")
    assert first == "# Benchmarks\n\n| new |\n\n" + REPORT_END + "\n\n" + SECTIONS, first
    assert "| old |" not in first


def test_file_without_marker_keeps_everything_from_its_first_section():
    got = written("# Benchmarks\n\nLatest run ...\n\n| old |\n\n" + SECTIONS, "# Benchmarks\n\n| new |\n")
    assert got == "# Benchmarks\n\n| new |\n\n" + REPORT_END + "\n\n" + SECTIONS, got


def test_rewriting_twice_is_stable():
    once = written("# Benchmarks\n\n| old |\n\n" + SECTIONS, "# Benchmarks\n\n| new |\n")
    assert written(once, "# Benchmarks\n\n| new |\n") == once


if __name__ == "__main__":
    import selftest
    selftest.main(globals())
