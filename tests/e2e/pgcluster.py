"""A throwaway PostgreSQL for the tests of `database_url = "postgres://..."`.

scripts/pg-test-cluster.sh (the same helper the store's Rust tests use) runs initdb into a
temporary directory and starts the Debian package's server on 127.0.0.1 (a free port of this
worker); it stops and deletes the cluster when its stdin closes (close(), or this process
ending). Each hookflash server gets its own database (create_database()). psql (the
postgresql-client package) reads the rows behind the server's back.
"""
import os
import subprocess
import uuid

from hfserver import REPO, free_port

SCRIPT = os.path.join(REPO, "scripts", "pg-test-cluster.sh")


class PgCluster:
    def __init__(self, timeout=120):
        port = free_port(udp=False, tcp=True)
        self.proc = subprocess.Popen(
            [SCRIPT, str(port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().strip()
        if not line.startswith("postgres://"):
            self.close()
            raise AssertionError(
                "the test PostgreSQL did not start (%s; install the Debian package postgresql)"
                % (line or "no URL printed"))
        self.url = line  # postgres://hookflash@127.0.0.1:PORT/postgres
        # The CA that signed the server's TLS certificate ("" when it offers no TLS).
        self.ca = self.proc.stdout.readline().strip()[len("ca="):]
        self.base = line.rsplit("/", 1)[0]

    def db_url(self, database):
        return "%s/%s" % (self.base, database)

    def create_database(self):
        """A new empty database; returns its URL."""
        name = "hf_" + uuid.uuid4().hex[:16]
        self.psql("CREATE DATABASE %s" % name)
        return self.db_url(name)

    def psql(self, sql, url=None):
        """Runs one statement with psql; returns the rows as lists of strings."""
        p = subprocess.run(
            ["psql", "-X", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-d",
             url or self.url, "-c", sql],
            capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, "psql %r: %s" % (sql, p.stderr)
        return [line.split("\t") for line in p.stdout.splitlines() if line]

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
