"""The daemon starts with its defaults and answers liveness."""
from harness import Server, run_tests


def test_healthz_answers_ok():
    with Server() as srv:
        status, body = srv.request("GET", "/healthz")
        assert status == 200, status
        assert body["status"] == "ok", body


def test_sigterm_exits_zero():
    srv = Server().start()
    assert srv.stop() == 0


if __name__ == "__main__":
    run_tests([test_healthz_answers_ok, test_sigterm_exits_zero])
