"""The defaults that docs/API.md, the README's options table and
deploy/clickflow.env.example state agree with `clickflow --help`, whose
defaults come from the one options table (server/config_table.h) that
cf_config_defaults() applies (tests/unit/test_config.c checks that side):
a table row `| --name | default | ... |` and a phrase "`--name` ... default X"
must name the --help default (sizes compared in bytes, so "4 MiB" = "4M")."""
import os
import re
import subprocess

from harness import run_tests

BIN = os.environ.get("CLICKFLOW_BIN", "build/server/clickflow")
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
API = os.path.join(ROOT, "docs", "API.md")
README = os.path.join(ROOT, "README.md")
ENV = os.path.join(ROOT, "deploy", "clickflow.env.example")


def help_defaults():
    out = subprocess.run([BIN, "--help"], capture_output=True, text=True, check=True, timeout=30).stdout
    found = dict(re.findall(r"\n  --([a-z-]+) [^\n]*\n\s+\[default: ([^\]]*)\]", out))
    assert len(found) >= 40, out
    return found


UNITS = {"": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20, "g": 1 << 30, "gib": 1 << 30}


def norm(v):
    """A size in bytes, else the text without backquotes."""
    v = v.strip().strip("`")
    m = re.fullmatch(r"(\d+)\s*([kKmMgG](?:iB)?)?", v)
    if m and m.group(2):
        return int(m.group(1)) * UNITS[m.group(2).lower()]
    return v


def test_api_md_states_the_help_defaults():
    want = help_defaults()
    with open(API, encoding="utf-8") as f:
        doc = f.read()
    checked = 0
    for name, stated in re.findall(r"^\| `--([a-z-]+)` \| ([^|]+) \|", doc, re.M):
        if name in want and re.fullmatch(r"`?[\w.]+`?", stated.strip()):
            assert norm(stated) == norm(want[name]), ("--" + name, stated, want[name])
            checked += 1
    for name, stated in re.findall(r"`--([a-z-]+)`[^.;\n]{0,40}?\bdefault `?([\w.]+(?: MiB| GiB)?)`?", doc):
        if name in want:
            assert norm(stated) == norm(want[name]), ("--" + name, stated, want[name])
            checked += 1
    assert checked >= 8, checked


def test_readme_options_table_states_the_help_defaults():
    want = help_defaults()
    with open(README, encoding="utf-8") as f:
        doc = f.read()
    checked = 0
    # `| --a | x |` and `| --a / --b | x / y |`
    for names, stated in re.findall(r"^\| (`--[a-z-]+`(?: / `--[a-z-]+`)*) \| ([^|]+) \|", doc, re.M):
        names = re.findall(r"--([a-z-]+)", names)
        values = [v.strip() for v in stated.split(" / ")]
        if len(values) != len(names):
            continue
        for name, v in zip(names, values):
            if name not in want or not re.fullmatch(r"`?[\w./-]+`?", v):
                continue
            if want[name] == "auto" or want[name].startswith("online cores"):
                continue  # computed: the README may state the usual outcome
            assert norm(v) == norm(want[name]), ("--" + name, v, want[name])
            checked += 1
    assert checked >= 20, checked


def test_env_example_lists_every_option_with_its_default():
    want = help_defaults()
    with open(ENV, encoding="utf-8") as f:
        lines = dict(re.findall(r"^#CLICKFLOW_([A-Z_]+)=(.*)$", f.read(), re.M))
    for name, default in want.items():
        env = name.upper().replace("-", "_")
        assert env in lines, "CLICKFLOW_%s missing from the env example" % env
        if default != "none" and lines[env] and not (default == "auto" or default.startswith("online cores")):
            assert norm(lines[env]) == norm(default), (env, lines[env], default)


if __name__ == "__main__":
    run_tests([test_api_md_states_the_help_defaults, test_readme_options_table_states_the_help_defaults,
               test_env_example_lists_every_option_with_its_default])
