#!/usr/bin/env python3
"""Generates the benchmark workloads, deterministically from a seed:
  single.json      one click event (S1)
  batch-K.json     K JSON arrays of `--batch` events each (S2..S6), with
                   Zipf-skewed pages, `--users` users and unique event_ids
                   of the form "<nonce>-<K>-<i>", where <nonce> is the
                   literal NONCE_XXXXXXXX that wrk_post.lua replaces per
                   request so every request carries fresh ids
  batch-props-K.json  the same batches with `properties` {"x": 0..49,
                   "load_ms": 20..2000} per event, for the user views of S9
                   (their own random stream, so the files above do not change)
  access.log       the same events as combined-format access-log lines,
                   for GoAccess (S2 baseline)
With --uap-tests (uap-core's tests/test_ua.yaml), for the enrichment
scenario S7:
  ua-seq.txt       8192 User-Agents drawn Zipf-skewed from 500 distinct
                   browser ones (the first 500 non-bot strings of the file),
                   which wrk_post.lua sends as the header, one per request
  batch-ua-K.json  the batches with a `user_agent` field per event drawn the
                   same way (a server-side relay's traffic)
  batch-uacold-K.json  the same with the request nonce in every User-Agent,
                   so every one is new to the server's cache
"""
import argparse
import bisect
import json
import os
import random
import re
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--bodies", type=int, default=16)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--users", type=int, default=100000)
    ap.add_argument("--pages", type=int, default=10000)
    ap.add_argument("--log-lines", type=int, default=1000000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--uap-tests", help="uap-core tests/test_ua.yaml: write the User-Agent workloads")
    ap.add_argument("--distinct-users", action="store_true",
                    help="every event a new user (user_id carries the request nonce)")
    a = ap.parse_args()
    rnd = random.Random(a.seed)
    props_rnd = random.Random(a.seed + 1)
    os.makedirs(a.out, exist_ok=True)
    cdf, total = [], 0.0
    for p in range(a.pages):
        total += 1.0 / (p + 1)
        cdf.append(total)

    def page():
        return "/products/%d" % bisect.bisect_left(cdf, rnd.random() * total)

    now_ms = int(time.time() * 1000)
    with open(os.path.join(a.out, "single.json"), "w") as f:
        json.dump({"user_id": "u1", "page_url": "/products/1", "element": "buy"}, f)
    for k in range(a.bodies):
        events = []
        for i in range(a.batch):
            events.append({
                "user_id": ("NONCE_XXXXXXXX-%d-%d" % (k, i)) if a.distinct_users
                else "u%d" % rnd.randrange(a.users),
                "page_url": page(),
                "element": "link",
                "event_id": "NONCE_XXXXXXXX-%d-%d" % (k, i),
            })
        with open(os.path.join(a.out, "batch-%d.json" % k), "w") as f:
            json.dump(events, f, separators=(",", ":"))
        for e in events:
            e["properties"] = {"x": props_rnd.randrange(50), "load_ms": props_rnd.randrange(20, 2001)}
        with open(os.path.join(a.out, "batch-props-%d.json" % k), "w") as f:
            json.dump(events, f, separators=(",", ":"))
    if a.uap_tests:
        write_ua_workloads(a, rnd)
    with open(os.path.join(a.out, "access.log"), "w") as f:
        for i in range(a.log_lines):
            ts = time.gmtime((now_ms - (a.log_lines - i)) / 1000)
            f.write('10.0.%d.%d - - [%s +0000] "GET %s HTTP/1.1" 200 512 "-" "Mozilla/5.0 u%d"\n' % (
                (i >> 8) & 255, i & 255, time.strftime("%d/%b/%Y:%H:%M:%S", ts), page(),
                rnd.randrange(a.users)))


def load_uas(path, n=500):
    """The first n distinct browser User-Agents of uap-core's test file
    (crawler-looking ones left out: bots skip the views, which would flatter
    the enrichment run)."""
    pat = re.compile(r"^\s*- user_agent_string: '(.*)'\s*$")
    bot = re.compile(r"bot|spider|crawl|slurp|headless|phantom|python|curl|wget|java/", re.I)
    out, seen = [], set()
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = pat.match(line)
            if not m:
                continue
            ua = m.group(1).replace("''", "'")
            if not ua.startswith("Mozilla/") or bot.search(ua) or ua in seen or '"' in ua or "\\" in ua:
                continue
            seen.add(ua)
            out.append(ua)
            if len(out) == n:
                break
    return out


def write_ua_workloads(a, rnd):
    uas = load_uas(a.uap_tests)
    cdf, total = [], 0.0
    for i in range(len(uas)):
        total += 1.0 / (i + 1)
        cdf.append(total)

    def pick():
        return uas[bisect.bisect_left(cdf, rnd.random() * total)]

    with open(os.path.join(a.out, "ua-seq.txt"), "w") as f:
        for _ in range(8192):
            f.write(pick() + "\n")
    for k in range(a.bodies):
        with open(os.path.join(a.out, "batch-%d.json" % k)) as f:
            events = json.load(f)
        mix = [dict(ev, user_agent=pick()) for ev in events]
        cold = [dict(ev, user_agent="%s cf/NONCE_XXXXXXXX-%d-%d" % (pick(), k, i)) for i, ev in enumerate(events)]
        for name, evs in (("batch-ua-%d.json" % k, mix), ("batch-uacold-%d.json" % k, cold)):
            with open(os.path.join(a.out, name), "w") as f:
                json.dump(evs, f, separators=(",", ":"))


if __name__ == "__main__":
    main()
