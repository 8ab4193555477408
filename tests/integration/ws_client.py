"""A minimal WebSocket client (RFC 6455) for the integration tests, written
by hand on the standard library: handshake, masked text frames out, whole
frames in (text, close, ping answered with pong). Enough to test clickflow's
push endpoint, nothing more.

    ws = WsClient(port, path="/", headers={"Origin": "http://127.0.0.1"})
    ws.send_json({"subscribe": ["stats"]})
    msg = ws.recv_json(timeout=5)
"""
import base64
import hashlib
import json
import os
import socket
import struct
import time

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class HandshakeError(Exception):
    def __init__(self, status, text):
        super().__init__("WebSocket handshake refused: %s" % (status,))
        self.status = status
        self.text = text


class Closed(Exception):
    def __init__(self, code=None, reason=""):
        super().__init__("WebSocket closed (code %s %s)" % (code, reason))
        self.code = code
        self.reason = reason


class WsClient:
    def __init__(self, port, path="/", host="127.0.0.1", headers=None, rcvbuf=None, timeout=10.0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            # Before connect, so the advertised window stays small.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.buf = b""
        key = base64.b64encode(os.urandom(16))
        lines = ["GET %s HTTP/1.1" % path, "Host: %s:%d" % (host, port), "Upgrade: websocket",
                 "Connection: Upgrade", "Sec-WebSocket-Key: " + key.decode(), "Sec-WebSocket-Version: 13"]
        for k, v in (headers or {}).items():
            lines.append("%s: %s" % (k, v))
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            if time.monotonic() > deadline:
                raise HandshakeError(None, "timeout")
            try:
                chunk = self.sock.recv(4096)
            except OSError:
                chunk = b""
            if not chunk:
                self.sock.close()
                raise HandshakeError(None, self.buf.decode("latin-1"))
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        text = head.decode("latin-1")
        status = int(text.split(" ", 2)[1]) if text.startswith("HTTP/1.1 ") else None
        want = base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()
        if status != 101 or ("sec-websocket-accept: " + want.lower()) not in text.lower():
            self.sock.close()
            raise HandshakeError(status, text)

    # ---- sending ----

    def send_frame(self, opcode, payload):
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def send_text(self, text):
        self.send_frame(0x1, text.encode())

    def send_json(self, obj):
        self.send_text(json.dumps(obj))

    # ---- receiving ----

    def _need(self, n, deadline):
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no WebSocket data in time")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(1 << 16)
            except socket.timeout:
                raise TimeoutError("no WebSocket data in time") from None
            if not chunk:
                raise Closed(None, "connection closed")
            self.buf += chunk

    def _frame(self, deadline):
        self._need(2, deadline)
        b0, b1 = self.buf[0], self.buf[1]
        n = b1 & 0x7F
        pos = 2
        if n == 126:
            self._need(4, deadline)
            n = struct.unpack("!H", self.buf[2:4])[0]
            pos = 4
        elif n == 127:
            self._need(10, deadline)
            n = struct.unpack("!Q", self.buf[2:10])[0]
            pos = 10
        if b1 & 0x80:
            raise ValueError("server frames must not be masked")
        self._need(pos + n, deadline)
        payload = self.buf[pos:pos + n]
        self.buf = self.buf[pos + n:]
        return bool(b0 & 0x80), b0 & 0x0F, payload

    def recv(self, timeout=10.0):
        """The next complete text message (str). Raises Closed or TimeoutError."""
        deadline = time.monotonic() + timeout
        parts = []
        while True:
            fin, op, payload = self._frame(deadline)
            if op == 0x8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                raise Closed(code, payload[2:].decode("utf-8", "replace"))
            if op == 0x9:
                self.send_frame(0xA, payload)
                continue
            if op == 0xA:
                continue
            parts.append(payload)
            if fin:
                return b"".join(parts).decode("utf-8")

    def recv_json(self, timeout=10.0):
        return json.loads(self.recv(timeout))

    def close(self):
        try:
            self.send_frame(0x8, struct.pack("!H", 1000))
        except OSError:
            pass
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
