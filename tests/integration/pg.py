"""A throw-away PostgreSQL server for integration tests (Debian's
postgresql package): initdb into a temporary directory as an unprivileged
user (tests run as root; PostgreSQL refuses root), password authentication
(scram-sha-256) on a free loopback port, stopped and deleted at the end.

    with Postgres() as pg:
        url = pg.url()                  # postgresql://cf:secret@127.0.0.1:PORT/clickflow
        rows = pg.query("SELECT 1")     # [["1"]]
        pg.stop(); pg.start()
"""
import glob
import os
import pwd
import shutil
import subprocess
import tempfile

from harness import free_port

USER = "cf"
PASSWORD = "s3cret-pw"
DB = "clickflow"


def bindir():
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    if not dirs:
        raise RuntimeError("PostgreSQL is not installed (deploy/install-deps.sh --test)")
    return dirs[-1]


class Postgres:
    def __init__(self, os_user="nobody"):
        self.bin = bindir()
        self.os_user = os_user
        pw = pwd.getpwnam(os_user)
        self.uid, self.gid = pw.pw_uid, pw.pw_gid
        self.root = tempfile.mkdtemp(prefix="clickflow-pg-")
        os.chmod(self.root, 0o755)
        self.data = os.path.join(self.root, "data")
        self.sock = os.path.join(self.root, "sock")
        os.mkdir(self.sock)
        os.chown(self.sock, self.uid, self.gid)
        self.log = os.path.join(self.root, "pg.log")
        self.port = free_port()
        pwfile = os.path.join(self.root, "pw")
        with open(pwfile, "w") as f:
            f.write(PASSWORD + "\n")
        os.chown(pwfile, self.uid, self.gid)
        os.chown(self.root, self.uid, self.gid)
        self._run([os.path.join(self.bin, "initdb"), "-D", self.data, "-U", USER,
                   "-A", "scram-sha-256", "--pwfile", pwfile, "-E", "UTF8", "--no-sync"])
        self.running = False

    def _run(self, cmd, **kw):
        return subprocess.run(["runuser", "-u", self.os_user, "--"] + cmd, check=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=self.root,
                              **kw)

    def start(self):
        opts = "-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off" % (self.port, self.sock)
        self._run([os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-l", self.log, "-o", opts,
                   "-w", "start"])
        self.running = True
        if not self.query("SELECT 1 FROM pg_database WHERE datname = '%s'" % DB, db="postgres"):
            self.query("CREATE DATABASE %s" % DB, db="postgres")
        return self

    def stop(self):
        if self.running:
            self._run([os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-m", "fast", "-w",
                       "stop"])
            self.running = False

    def url(self, password=PASSWORD):
        return "postgresql://%s:%s@127.0.0.1:%d/%s" % (USER, password, self.port, DB)

    def query(self, sql, db=DB):
        """Rows as lists of strings (psql -At, fields split on \\x1f)."""
        env = dict(os.environ, PGPASSWORD=PASSWORD)
        out = subprocess.run([os.path.join(self.bin, "psql"), "-X", "-q", "-At", "-F", "\x1f",
                              "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, "-d", db,
                              "-v", "ON_ERROR_STOP=1", "-c", sql],
                             check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        text = out.stdout.decode("utf-8")
        return [line.split("\x1f") for line in text.splitlines() if line]

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
