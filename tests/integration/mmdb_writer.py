"""A tiny MaxMind DB (MMDB 2.0) writer for test fixtures: an IPv4 database
whose records are {"country": {"iso_code": CODE}}, the shape GeoLite2
Country has. Debian ships no small .mmdb, so tests build theirs.

Format (https://maxmind.github.io/MaxMind-DB/): a binary search tree over
the address bits (24-bit records: each node is 6 bytes, left then right,
big-endian), 16 zero bytes, the data section, then "\\xab\\xcd\\xefMaxMind.com"
and the metadata map. A record below node_count points to a node, equal to
node_count means "no data", above it points into the data section at
record - node_count - 16.

Use: write_country_db(path, {"127.0.0.0/8": "NZ", "10.0.0.0/8": "DE"})
"""
import ipaddress
import struct
import time


def _ctrl(type_, size):
    """Control byte(s) of a field: type in the top 3 bits (extended types
    0 + a second byte), size in the low 5 bits (sizes below 29 only)."""
    assert size < 29
    if type_ <= 7:
        return bytes([(type_ << 5) | size])
    return bytes([size, type_ - 7])


def _enc(v):
    if isinstance(v, str):
        b = v.encode()
        return _ctrl(2, len(b)) + b
    if isinstance(v, dict):
        out = _ctrl(7, len(v))
        for k, x in v.items():
            out += _enc(k) + _enc(x)
        return out
    if isinstance(v, list):
        out = _ctrl(11, len(v))
        for x in v:
            out += _enc(x)
        return out
    if isinstance(v, tuple):  # (type, int): uint16 5, uint32 6, uint64 9
        type_, n = v
        b = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
        return _ctrl(type_, len(b)) + b
    raise TypeError(v)


def write_country_db(path, networks):
    data = b""
    offsets = {}
    for code in sorted(set(networks.values())):
        offsets[code] = len(data)
        data += _enc({"country": {"iso_code": code}})
    # Nodes: [left, right]; ("node", i), ("data", code) or None.
    nodes = [[None, None]]
    for net, code in networks.items():
        n = ipaddress.IPv4Network(net)
        bits = int(n.network_address)
        node = 0
        for d in range(n.prefixlen):
            bit = (bits >> (31 - d)) & 1
            if d == n.prefixlen - 1:
                nodes[node][bit] = ("data", code)
            else:
                nxt = nodes[node][bit]
                if nxt is None:
                    nodes.append([None, None])
                    nxt = ("node", len(nodes) - 1)
                    nodes[node][bit] = nxt
                assert nxt[0] == "node", "overlapping networks are not supported"
                node = nxt[1]
    count = len(nodes)

    def rec(r):
        if r is None:
            return count
        if r[0] == "node":
            return r[1]
        return count + 16 + offsets[r[1]]

    tree = b"".join(struct.pack(">I", rec(a))[1:] + struct.pack(">I", rec(b))[1:] for a, b in nodes)
    meta = _enc({
        "node_count": (6, count),
        "record_size": (5, 24),
        "ip_version": (5, 4),
        "database_type": "clickflow-test-country",
        "languages": ["en"],
        "binary_format_major_version": (5, 2),
        "binary_format_minor_version": (5, 0),
        "build_epoch": (9, int(time.time())),
        "description": {"en": "clickflow test fixture"},
    })
    with open(path, "wb") as f:
        f.write(tree + b"\0" * 16 + data + b"\xab\xcd\xefMaxMind.com" + meta)
