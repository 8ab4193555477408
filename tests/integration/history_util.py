"""What the history tests (test_history.py, test_history_views.py) share:
reading history.db and waiting for its writer."""
import os
import sqlite3
import time


def history_path(srv, suffix=""):
    return os.path.join(srv.data_dir, "data", "history.db" + suffix)


def open_history(srv):
    """history.db read-only (the server keeps writing it)."""
    return sqlite3.connect("file:%s?mode=ro" % history_path(srv), uri=True)


def wait_written(srv):
    """Waits until the history writer has stored every result fired so far.
    stats is answered by the shards after everything acknowledged, so the
    results are offered by then; then only the writer can lag. Returns the
    stats."""
    while True:
        st, body = srv.request("GET", "/api/v1/stats")
        assert st == 200, (st, body)
        h = body["history"]
        assert h["overflow"] == 0 and h["errors"] == 0, h
        if h["pending"] == 0:
            return body
        time.sleep(0.02)  # waiting for the writer, not a timing assertion


def wait_retention_cutoff(srv, cutoff):
    """Waits until the writer applied retention up to cutoff (it does so on
    its own); returns the stats."""
    while True:
        st, body = srv.request("GET", "/api/v1/stats")
        assert st == 200, (st, body)
        if body["history"]["retention_cutoff"] == cutoff:
            return body
        assert body["history"]["retention_cutoff"] < cutoff, body["history"]
        time.sleep(0.02)  # waiting for the writer, not a timing assertion
