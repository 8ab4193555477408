"""docs/SQL.md's worked examples, run against the real binary so the docs
cannot rot: every ```sh block under "## Worked examples" is one example.
Its `# clickflow FLAGS` line starts a fresh server with those flags; each
`curl` command is sent as written (localhost:8080 becomes the test server's
port); a `# => JSON` line after a command is the answer it must give
(compared as parsed JSON, so spacing does not matter); a long answer
goes on over the next lines that start with `#` and four spaces.

  python3 test_sql_docs.py --print   shows each example's actual answers
"""
import json
import os
import shlex
import sys
import urllib.parse

from harness import Server, run_tests

HERE = os.path.dirname(os.path.abspath(__file__))
SQL_MD = os.path.join(HERE, "..", "..", "docs", "SQL.md")


def examples():
    """[(title, flags, [(curl argv, expected JSON text or None)])]."""
    text = open(SQL_MD, encoding="utf-8").read()
    start = text.index("\n## Worked examples")
    end = text.find("\n## ", start + 1)
    section = text[start:end if end >= 0 else len(text)]
    out, title = [], None
    lines = section.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("### "):
            title = line[4:].strip()
        if line.strip() == "```sh":
            block = []
            i += 1
            while lines[i].strip() != "```":
                block.append(lines[i])
                i += 1
            out.append(parse_block(title, block))
        i += 1
    return out


def parse_block(title, block):
    flags, cmds, cur = [], [], None
    for line in block:
        s = line.strip()
        if cur is not None:
            cur += "\n" + line
            if not s.endswith("\\") and cur.count('"') % 2 == 0 and cur.count("'") % 2 == 0:
                cmds.append([shlex.split(cur.replace("\\\n", " ")), None])
                cur = None
            continue
        if s.startswith("# clickflow"):
            flags = shlex.split(s[len("# clickflow"):])
        elif s.startswith("# =>"):
            assert cmds and cmds[-1][1] is None, (title, "an answer without a command", s)
            cmds[-1][1] = s[len("# =>"):].strip()
        elif s.startswith("#    ") and cmds and cmds[-1][1] is not None:
            cmds[-1][1] += " " + s[1:].strip()     # a long answer goes on
        elif s.startswith("curl"):
            cur = line
            if not s.endswith("\\") and cur.count('"') % 2 == 0 and cur.count("'") % 2 == 0:
                cmds.append([shlex.split(cur), None])
                cur = None
    assert cur is None, (title, "unterminated command", cur)
    assert cmds, (title, "no commands")
    return title, flags, cmds


def curl_request(argv):
    """(method, path, headers, body) of a curl command line."""
    method, headers, body, url = None, {}, None, None
    it = iter(argv[1:])
    for a in it:
        if a == "-X":
            method = next(it)
        elif a == "-H":
            k, _, v = next(it).partition(":")
            headers[k.strip()] = v.strip()
        elif a in ("-d", "--data-binary", "--data"):
            body = next(it)
        elif a == "-s":
            pass
        elif a.startswith("-"):
            raise AssertionError("curl option the doc test does not know: " + a)
        else:
            url = a
    assert url and url.startswith("localhost:8080/"), url
    path = url[len("localhost:8080"):]
    return method or ("POST" if body is not None else "GET"), path, headers, body


def run_example(title, flags, cmds, show=False):
    with Server(flags) as srv:
        for argv, want in cmds:
            method, path, headers, body = curl_request(argv)
            # curl sends the query string as written; http.client needs
            # it percent-encoded the same way.
            st, got = srv.request(method, path, body, headers)
            assert 200 <= st < 300, (title, " ".join(argv), st, got)
            if show:
                print("%s\n  %s\n  => %s" % (title, " ".join(argv)[:100], json.dumps(got)))
            if want is not None and not show:
                assert got == json.loads(want), (title, " ".join(argv), "got", json.dumps(got),
                                                 "doc says", want)


def test_every_worked_example_answers_as_documented():
    exs = examples()
    titles = [t for t, _, _ in exs]
    # One for every operation of the tutorial the product grew from.
    for op in ("Map", "Filter", "Flat-map", "Count, sum, average", "Running count", "Dedup",
               "Session tracking", "Trending with decay", "Windowed aggregation",
               "Late data and revisions"):
        assert any(t.startswith(op) for t in titles), (op, titles)
    for title, flags, cmds in exs:
        assert any(w is not None for _, w in cmds), (title, "shows no answer")
        run_example(title, flags, cmds)


if __name__ == "__main__":
    if "--print" in sys.argv:
        for t, f, c in examples():
            run_example(t, f, c, show=True)
        sys.exit(0)
    run_tests([test_every_worked_example_answers_as_documented])
