"""Configuration from the outside: --help, --version, bad values, env vars,
graceful shutdown."""
import json
import os
import signal
import subprocess

from harness import Server, run_tests

BIN = os.environ.get("CLICKFLOW_BIN", "build/server/clickflow")
EV = {"user_id": "u1", "page_url": "/a"}


def run(args, env=None):
    return subprocess.run([BIN] + args, capture_output=True, text=True, timeout=30,
                          env=dict(os.environ, **(env or {})))


def test_help_and_version_exit_zero():
    r = run(["--help"])
    assert r.returncode == 0, r
    assert "--window" in r.stdout and "CLICKFLOW_WINDOW" in r.stdout and "[default: 60s]" in r.stdout, r.stdout
    r = run(["--version"])
    assert r.returncode == 0 and r.stdout.startswith("clickflow "), r


def test_bad_values_exit_two_with_the_option_named():
    cases = [(["--window", "5 minutes"], "--window"), (["--http-port", "70000"], "--http-port"),
             (["--fsync", "never"], "--fsync"), (["--no-such-option"], "--no-such-option"),
             (["--slide-size", "90s"], "--slide-size")]
    for args, name in cases:
        r = run(args)
        assert r.returncode == 2, (args, r.returncode, r.stderr)
        assert name in r.stderr, (args, r.stderr)
        assert r.stderr.count("\n") == 1, r.stderr
    r = run([], env={"CLICKFLOW_HALF_LIFE": "later"})
    assert r.returncode == 2 and "CLICKFLOW_HALF_LIFE" in r.stderr, r.stderr


def test_env_var_takes_effect_and_command_line_wins():
    with Server(env={"CLICKFLOW_MAX_BATCH": "2"}) as srv:
        h = {"Content-Type": "application/json"}
        assert srv.raw_request("POST", "/api/v1/events", json.dumps([EV] * 2), h)[0] == 202
        assert srv.raw_request("POST", "/api/v1/events", json.dumps([EV] * 3), h)[0] == 413
    with Server(["--max-batch", "3"], env={"CLICKFLOW_MAX_BATCH": "2"}) as srv:
        h = {"Content-Type": "application/json"}
        assert srv.raw_request("POST", "/api/v1/events", json.dumps([EV] * 3), h)[0] == 202


def test_startup_log_names_urls_and_settings():
    with Server() as srv:
        log = srv.read_log()
        assert "http://127.0.0.1:%d/" % srv.http_port in log, log
        assert "ws://127.0.0.1:%d/" % srv.ws_port in log, log
        assert "max-batch=10000" in log, log


def test_graceful_shutdown_exits_zero():
    srv = Server().start()
    assert srv.raw_request("POST", "/api/v1/events", json.dumps(EV), {"Content-Type": "application/json"})[0] == 202
    assert srv.stop() == 0
    srv = Server().start()
    assert srv.stop(signal.SIGINT) == 0


def test_port_in_use_exits_one():
    with Server() as srv:
        r = run(["--http-port", str(srv.http_port), "--ws-port", str(srv.ws_port + 1 if srv.ws_port < 65535 else 1024),
                 "--data-dir", os.path.join(srv.data_dir, "other")])
        assert r.returncode == 1, (r.returncode, r.stderr)
        assert "HTTP" in r.stderr or "WebSocket" in r.stderr, r.stderr


if __name__ == "__main__":
    run_tests([test_help_and_version_exit_zero, test_bad_values_exit_two_with_the_option_named,
               test_env_var_takes_effect_and_command_line_wins, test_startup_log_names_urls_and_settings,
               test_graceful_shutdown_exits_zero, test_port_in_use_exits_one])
