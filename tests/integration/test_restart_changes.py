"""Restarts with changed settings (SPEC section 10).

Rescale: a data directory written with one --shards count is restarted with
another (4 -> 1 -> 3 across kill -9, snapshots in between): the state is
re-distributed by key and every result equals an uninterrupted run.

Settings: a restart with another --window starts the tumbling view empty from
that point (logged), before and after the first snapshot alike, while every
other view and counter carries on; a later replay makes the same switch.
"""
import random
import shutil
import signal
import tempfile
import time

from harness import Server, run_tests
from test_crash import (BASE_TS, assert_same_results, data_files, make_events, post_events,
                        snapshot_results)

ARGS = ["--idle-timeout", "0", "--session-gap", "3s", "--window", "10s",
        "--slide-size", "20s", "--slide", "5s", "--half-life", "30s", "--segment-size", "16k",
        "--allowed-lateness", "5s"]


def with_args(base, **kw):
    """base with --name value pairs replaced or added (name_with_underscores)."""
    out = list(base)
    for k, v in kw.items():
        flag = "--" + k.replace("_", "-")
        if flag in out:
            out[out.index(flag) + 1] = v
        else:
            out += [flag, v]
    return out


def trace(seed, n_batches, batch=20):
    """Seeded batches: mostly in-order events, some duplicates (an earlier
    id again) and some late ones (behind the allowed lateness)."""
    rng, state = random.Random(seed), {"ts": BASE_TS}
    out = []
    for b in range(n_batches):
        evs = make_events(rng, b * batch, batch, state)
        if b > 0 and b % 3 == 0:
            evs[2]["event_id"] = "e%d" % (b * batch - 5)
        if b % 4 == 1:
            evs[6]["timestamp"] = state["ts"] - 40000
        out.append(evs)
    return out


def new_snapshot(root, before, deadline_s=20):
    """Polls until a snapshot file not in `before` exists."""
    deadline = time.monotonic() + deadline_s
    while True:
        now = set(data_files(root, "snapshot-"))
        if now - before:
            return now
        assert time.monotonic() < deadline, "no new snapshot"
        time.sleep(0.02)  # polling for the snapshot timer, not a timing claim


def results(srv):
    out = snapshot_results(srv)
    st, body = srv.request("GET", "/api/v1/late?limit=10000")
    assert st == 200, body
    out["late"] = [(l["seq"] if "seq" in l else None, l.get("page_url"), l.get("user_id"),
                    l.get("timestamp"), l.get("event_id")) for l in body["items"]]
    return out


def feed_all(srv, batches):
    for evs in batches:
        st, body = post_events(srv, evs)
        assert st == 202, (st, body)


def test_rescale_4_1_3_equals_uninterrupted():
    batches = trace(31, 90)
    final_wm = BASE_TS + 3600 * 1000
    with Server(with_args(ARGS, shards="3", snapshot_interval="1h")) as ref:
        feed_all(ref, batches)
        want_mid = results(ref)
        st, _ = ref.request("POST", "/api/v1/watermark", {"watermark": final_wm})
        assert st == 200
        want = results(ref)

    root = tempfile.mkdtemp(prefix="clickflow-rescale-")
    srv = Server(with_args(ARGS, shards="4", snapshot_interval="100ms"), data_dir=root).start()
    feed_all(srv, batches[:30])
    snaps = new_snapshot(root, set())
    feed_all(srv, batches[30:35])            # after the snapshot: only in the log
    srv.stop(sig=signal.SIGKILL)

    srv.args = with_args(ARGS, shards="1", snapshot_interval="100ms")
    srv.start()
    assert "re-distributing the state by key" in srv.read_log()
    feed_all(srv, batches[35:60])
    new_snapshot(root, snaps)
    feed_all(srv, batches[60:65])
    srv.stop(sig=signal.SIGKILL)

    srv.args = with_args(ARGS, shards="3", snapshot_interval="1h")
    srv.start()
    feed_all(srv, batches[65:])
    got_mid = results(srv)
    assert_same_results(got_mid, want_mid, "rescaled run (open state)")
    assert got_mid["late"] == want_mid["late"], (got_mid["late"][:5], want_mid["late"][:5])
    for k in ("accepted", "duplicates", "late_dropped"):
        assert got_mid["stats"][k] == want_mid["stats"][k], (k, got_mid["stats"], want_mid["stats"])
    st, _ = srv.request("POST", "/api/v1/watermark", {"watermark": final_wm})
    assert st == 200
    got = results(srv)
    assert_same_results(got, want, "rescaled run (everything fired)")
    assert got["late"] == want["late"]
    srv.stop()
    shutil.rmtree(root, ignore_errors=True)


def window_items(res, typ):
    items = res["windows/%s/closed" % typ] + res["windows/%s/open" % typ]
    return items


def check_window_change(snapshot_first):
    pre, post = trace(41, 40)[:25], trace(41, 40)[25:]
    args10 = with_args(ARGS, shards="2", snapshot_interval="100ms" if snapshot_first else "1h")
    args20 = with_args(args10, window="20s", snapshot_interval="1h")
    # The reference never changes settings: its other views are what ours
    # must equal.
    with Server(with_args(args10, snapshot_interval="1h")) as ref:
        feed_all(ref, pre)
        feed_all(ref, post)
        want = results(ref)

    root = tempfile.mkdtemp(prefix="clickflow-settings-")
    srv = Server(args10, data_dir=root).start()
    feed_all(srv, pre)
    before = results(srv)
    assert window_items(before, "tumbling"), "no tumbling windows before the change"
    if snapshot_first:
        new_snapshot(root, set())
    srv.stop(sig=signal.SIGKILL)
    assert bool(data_files(root, "snapshot-")) == snapshot_first

    srv.args = args20
    srv.start()
    log_text = srv.read_log()
    assert "settings changed" in log_text and "tumbling (--window 10000 -> 20000 ms)" in log_text, \
        log_text
    assert "sliding (" not in log_text and "sessions (" not in log_text
    after = results(srv)
    # The changed view starts empty; everything else carries on.
    assert window_items(after, "tumbling") == [], window_items(after, "tumbling")[:3]
    for key in ("windows/sliding/closed", "windows/sliding/open", "sessions", "trending"):
        assert after[key] == before[key], key
    for k in ("accepted", "duplicates", "rejected", "late_dropped"):
        assert after["stats"][k] == before["stats"][k], (k, after["stats"], before["stats"])

    feed_all(srv, post)
    got = results(srv)
    tumb = window_items(got, "tumbling")
    assert tumb and all(w[2] - w[1] == 20000 for w in tumb), tumb[:3]
    # Only the events after the change are in the new tumbling view.
    first_post = min(e["timestamp"] for evs in post for e in evs)
    assert all(w[2] > first_post for w in tumb), (first_post, tumb[:3])
    # (Late events are those late for both window types, so they depend on
    # the tumbling view and are not compared.)
    for key in ("windows/sliding/closed", "windows/sliding/open", "sessions"):
        assert got[key] == want[key], key
    for k in ("accepted", "duplicates", "rejected"):
        assert got["stats"][k] == want["stats"][k], (k, got["stats"], want["stats"])

    # A replay of all of it switches at the same point.
    srv.stop(sig=signal.SIGKILL)
    srv.start()
    again = results(srv)
    assert_same_results(again, got, "replayed after the change")
    assert again["late"] == got["late"]
    srv.stop()
    shutil.rmtree(root, ignore_errors=True)


def test_window_change_before_first_snapshot():
    check_window_change(snapshot_first=False)


def test_window_change_after_snapshot():
    check_window_change(snapshot_first=True)


def test_session_and_trending_change_keeps_windows():
    """--session-gap and --half-life changed (after a snapshot): sessions
    and trending start empty, both window views carry on; a replay agrees."""
    batches = trace(43, 30)
    args = with_args(ARGS, shards="2", snapshot_interval="100ms")
    root = tempfile.mkdtemp(prefix="clickflow-settings-")
    srv = Server(args, data_dir=root).start()
    feed_all(srv, batches[:20])
    new_snapshot(root, set())
    feed_all(srv, batches[20:25])  # only in the log
    before = results(srv)
    assert before["sessions"] and before["trending"] and before["stats"]["open_sessions"] > 0
    srv.stop(sig=signal.SIGKILL)
    srv.args = with_args(args, session_gap="4s", half_life="20s", snapshot_interval="1h")
    srv.start()
    log_text = srv.read_log()
    assert "sessions (--session-gap 3000 -> 4000 ms)" in log_text, log_text
    assert "trending (--half-life 30000 -> 20000 ms)" in log_text, log_text
    assert "tumbling (" not in log_text and "sliding (" not in log_text
    after = results(srv)
    assert after["sessions"] == [] and after["trending"] == {}, (after["sessions"][:3],
                                                                 after["trending"])
    assert after["stats"]["open_sessions"] == 0, after["stats"]
    for key in ("windows/tumbling/closed", "windows/tumbling/open",
                "windows/sliding/closed", "windows/sliding/open", "late"):
        assert after[key] == before[key], key
    feed_all(srv, batches[25:])
    got = results(srv)
    assert got["trending"] and got["stats"]["open_sessions"] > 0
    srv.stop(sig=signal.SIGKILL)
    srv.start()
    again = results(srv)
    assert_same_results(again, got, "replayed after the change")
    srv.stop()
    shutil.rmtree(root, ignore_errors=True)


TESTS = [test_rescale_4_1_3_equals_uninterrupted,
         test_session_and_trending_change_keeps_windows,
         test_window_change_before_first_snapshot,
         test_window_change_after_snapshot]

if __name__ == "__main__":
    run_tests(TESTS)
