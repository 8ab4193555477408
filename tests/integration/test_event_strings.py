"""SPEC 2 string rules at the HTTP edge: no string (value or key, at any
depth) may hold U+0000, and raw control bytes 0x00-0x1F, which JSON
forbids inside strings, are refused: the event is rejected with a reason
(never truncated and counted as another user or page), or the whole body is
400 when the byte lies outside every event. Also the optional `name`."""
import json

from harness import Server, run_tests

T0 = 1_700_000_000_000


def post(srv, body, ctype="application/json"):
    if not isinstance(body, (bytes, str)):
        body = json.dumps(body)
    st, _, data = srv.raw_request("POST", "/api/v1/events", body, {"Content-Type": ctype})
    return st, json.loads(data)


def counted(srv):
    """Users with sessions and pages with windows: what was counted."""
    st, wins = srv.request("GET", "/api/v1/windows?type=tumbling&limit=1000")
    assert st == 200, wins
    st, stats = srv.request("GET", "/api/v1/stats")
    assert st == 200, stats
    return sorted({w["page_url"] for w in wins["items"]}), stats


def test_nul_escape_rejected_at_any_depth():
    with Server(["--idle-timeout", "0", "--shards", "2"]) as srv:
        body = ('[{"user_id": "a\\u0000b", "page_url": "/x\\u0000y", "timestamp": %d},'
                ' {"user_id": "u", "page_url": "/ok", "timestamp": %d},'
                ' {"user_id": "u", "page_url": "/p", "timestamp": %d, "k\\u0000": 1},'
                ' {"user_id": "u", "page_url": "/p", "timestamp": %d,'
                '  "properties": {"a": [{"b": "x\\u0000"}]}},'
                ' {"user_id": "u", "page_url": "/p", "timestamp": %d, "element": "\\u0000"}]'
                % (T0, T0, T0, T0, T0))
        st, resp = post(srv, body)
        assert st == 202, resp
        assert resp["accepted"] == 1 and resp["rejected"] == 4, resp
        assert [e["index"] for e in resp["errors"]] == [0, 2, 3, 4], resp
        assert all("U+0000" in e["error"] for e in resp["errors"]), resp
        pages, stats = counted(srv)
        assert pages == ["/ok"], pages          # neither "/x" nor "/p" was counted
        assert stats["accepted"] == 1 and stats["rejected"] == 4, stats
        st, sess = srv.request("GET", "/api/v1/sessions/a")
        assert st == 200 and sess["items"] == [], sess
        # NDJSON and a single object alike.
        st, resp = post(srv, '{"user_id": "a\\u0000", "page_url": "/x"}\n'
                             '{"user_id": "v", "page_url": "/ok2"}\n', "application/x-ndjson")
        assert st == 202 and resp["accepted"] == 1 and resp["rejected"] == 1, resp
        assert resp["errors"][0]["index"] == 0 and "U+0000" in resp["errors"][0]["error"], resp
        st, resp = post(srv, {"user_id": "a\u0000b", "page_url": "/x"})   # json.dumps escapes it
        assert st == 202 and resp["accepted"] == 0 and resp["rejected"] == 1, resp
        # An escaped backslash before "u0000" is plain text, and \u0001 is
        # a legal escape.
        st, resp = post(srv, [{"user_id": "a\\u0000b", "page_url": "/lit"},
                              {"user_id": "c\u0001", "page_url": "/ctl"}])
        assert st == 202 and resp["accepted"] == 2, resp


def test_raw_control_bytes_rejected():
    with Server(["--idle-timeout", "0"]) as srv:
        ev = b'{"user_id": "u", "page_url": "/ok", "timestamp": %d}' % T0
        body = (b'[{"user_id": "a\x00b", "page_url": "/x", "timestamp": %d},' % T0 + ev +
                b', {"user_id": "u", "page_url": "/p\x01", "timestamp": %d},' % T0 +
                b' {"user_id": "u", "page_url": "/t\tab", "timestamp": %d}]' % T0)
        st, resp = post(srv, body)
        assert st == 202, resp
        assert resp["accepted"] == 1 and resp["rejected"] == 3, resp
        assert [e["index"] for e in resp["errors"]] == [0, 2, 3], resp
        assert all("control" in e["error"] for e in resp["errors"]), resp
        # A single object with a raw NUL: rejected, not user "a".
        st, resp = post(srv, b'{"user_id": "a\x00b", "page_url": "/x"}')
        assert st == 202 and resp["accepted"] == 0 and resp["rejected"] == 1, resp
        # NDJSON: the line is the event.
        st, resp = post(srv, ev + b'\n{"user_id": "u\x1f", "page_url": "/x"}\n\x01' + ev + b'\n',
                        "application/x-ndjson")
        assert st == 202 and resp["accepted"] == 1 and resp["rejected"] == 2, resp
        assert [e["index"] for e in resp["errors"]] == [1, 2], resp
        # Outside every event: the body is not JSON, nothing accepted.
        for bad in (b"[" + ev + b",\x01" + ev + b"]", b"\x02" + ev, ev + b"\x00"):
            st, resp = post(srv, bad)
            assert st == 400 and "error" in resp, (bad, st, resp)
        pages, stats = counted(srv)
        assert pages == ["/ok"], pages
        assert stats["accepted"] == 2 and stats["rejected"] == 6, stats


def test_name_is_validated():
    """`name`: optional string of at most 256 bytes of valid UTF-8, null or
    absent meaning "click"; anything else rejects the event with a reason."""
    with Server(["--idle-timeout", "0"]) as srv:
        ok = [{"user_id": "u", "page_url": "/n", "timestamp": T0, "name": n}
              for n in ("signup", "", "x" * 256, None, "\u00e9v\u00e9nement")]
        ok.append({"user_id": "u", "page_url": "/n", "timestamp": T0})
        st, resp = post(srv, ok)
        assert st == 202 and resp["accepted"] == len(ok) and resp["rejected"] == 0, resp
        bad = [{"user_id": "u", "page_url": "/n", "timestamp": T0, "name": n}
               for n in ("x" * 257, 7, ["a"], {"a": 1}, True)]
        st, resp = post(srv, bad)
        assert st == 202 and resp["accepted"] == 0 and resp["rejected"] == len(bad), resp
        assert all(e["error"] == "name must be a string of at most 256 bytes of valid UTF-8"
                   for e in resp["errors"]), resp
        st, resp = post(srv, b'{"user_id": "u", "page_url": "/n", "name": "a\\u0000"}')
        assert st == 202 and resp["rejected"] == 1 and "U+0000" in resp["errors"][0]["error"], resp
        st, resp = post(srv, b'{"user_id": "u", "page_url": "/n", "name": "\xc3\x28"}')
        assert st == 202 and resp["rejected"] == 1 and "name" in resp["errors"][0]["error"], resp


if __name__ == "__main__":
    run_tests([test_nul_escape_rejected_at_any_depth, test_raw_control_bytes_rejected,
               test_name_is_validated])
