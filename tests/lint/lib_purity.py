#!/usr/bin/env python3
"""lib/ stays pure: no socket, thread, file-I/O or logging headers, no HTTP or
WebSocket library. Fails listing every offending include."""
import os
import re
import sys

FORBIDDEN = {
    "stdio.h", "pthread.h", "threads.h", "unistd.h", "fcntl.h", "poll.h", "dirent.h",
    "sys/socket.h", "sys/stat.h", "sys/types.h", "sys/epoll.h", "sys/mman.h", "sys/uio.h",
    "netinet/in.h", "arpa/inet.h", "netdb.h", "syslog.h", "microhttpd.h", "libwebsockets.h",
    "signal.h", "time.h",
}

lib = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "..", "lib")
bad = []
checked = 0
for name in sorted(os.listdir(lib)):
    if not name.endswith((".c", ".h")):
        continue
    checked += 1
    with open(os.path.join(lib, name), encoding="utf-8") as f:
        for no, line in enumerate(f, 1):
            m = re.match(r'\s*#\s*include\s*[<"]([^>"]+)[>"]', line)
            if m and m.group(1) in FORBIDDEN:
                bad.append("%s:%d: includes <%s>" % (name, no, m.group(1)))
for b in bad:
    print("lib purity: " + b)
print("lib purity: %d files checked" % checked)
print("%d passed, %d failed" % (0 if bad else 1, 1 if bad else 0))
sys.exit(1 if bad else 0)
