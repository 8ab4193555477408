"""Integration-test harness: starts the real clickflow binary on free loopback
ports and talks HTTP to it. Standard library only.

Use:
    with Server(["--idle-timeout", "0"]) as srv:
        status, body = srv.request("GET", "/healthz")
The binary comes from $CLICKFLOW_BIN (meson passes the build's path).
"""
import http.client
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time


def free_port(avoid=()):
    """A loopback port nobody listens on right now (and not in avoid)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in avoid:
            return port


# What the daemon says when another process took a port between free_port()
# and its bind: the first start then retries on fresh ports.
PORT_CLASH = ("cannot listen", "address already in use", "is also --http-port",
              "cannot start the websocket")


class PortClash(RuntimeError):
    """The daemon could not bind a port another process took meanwhile."""


class Server:
    def __init__(self, args=(), env=None, data_dir=None, ready_path="/readyz"):
        self.bin = os.environ.get("CLICKFLOW_BIN", "build/server/clickflow")
        self.http_port = free_port()
        self.ws_port = free_port(avoid=(self.http_port,))
        self.started_once = False
        self.own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="clickflow-it-")
        self.args = list(args)
        self.env = dict(os.environ, **(env or {}))
        self.ready_path = ready_path
        self.proc = None
        self.log_path = os.path.join(self.data_dir, "server.log")

    def start(self, timeout=20.0):
        for attempt in range(3):
            try:
                self._start_once(timeout)
                self.started_once = True
                return self
            except PortClash:
                # Only a first start may move: restarts keep their ports
                # (clients reconnect to them).
                if self.started_once or attempt == 2:
                    raise
                self.log.close()
                self.http_port = free_port()
                self.ws_port = free_port(avoid=(self.http_port,))
        return self

    def _start_once(self, timeout):
        cmd = [self.bin, "--bind", "127.0.0.1",
               "--http-port", str(self.http_port), "--ws-port", str(self.ws_port),
               "--data-dir", os.path.join(self.data_dir, "data")] + self.args
        self.log = open(self.log_path, "ab")
        self.log_start = self.log.tell()
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = self.read_log()
                tail = log[self.log_start:].lower() if len(log) >= self.log_start else log.lower()
                if any(p in tail for p in PORT_CLASH):
                    raise PortClash(log)
                raise RuntimeError("clickflow exited with %s:\n%s" % (self.proc.returncode, log))
            try:
                status, _ = self.request("GET", self.ready_path, timeout=1.0)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.02)  # polling for start-up, not a timing assertion
        raise RuntimeError("clickflow did not become ready:\n" + self.read_log())

    def read_log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def request(self, method, path, body=None, headers=None, timeout=30.0):
        """Returns (status, parsed JSON or raw text). body: dict/list -> JSON."""
        status, hdrs, data = self.raw_request(method, path, body, headers, timeout)
        ctype = hdrs.get("content-type", "")
        if "json" in ctype and data:
            return status, json.loads(data)
        return status, data.decode("utf-8", "replace")

    def raw_request(self, method, path, body=None, headers=None, timeout=30.0):
        """Returns (status, lower-cased header dict, body bytes)."""
        headers = dict(headers or {})
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        elif isinstance(body, str):
            body = body.encode()
        conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
        finally:
            conn.close()

    def stop(self, sig=None, timeout=20.0):
        """Stops the server (SIGTERM by default) and returns its exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            if sig is None:
                self.proc.terminate()
            else:
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        code = self.proc.returncode
        self.proc = None
        return code

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        if self.own_dir and exc[0] is None:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def run_tests(tests):
    """Runs test functions, prints one line each and the plain closing line."""
    import sys
    import traceback
    passed = failed = 0
    for t in tests:
        try:
            t()
            passed += 1
            print("ok   " + t.__name__, flush=True)
        except Exception:  # noqa: BLE001 - report every failure, keep going
            failed += 1
            print("FAIL " + t.__name__, flush=True)
            traceback.print_exc()
    print("%d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed else 0)
