"""Two hookflash nodes on loopback sharing one PostgreSQL database, one NATS server (the cluster
bus, `[cluster] nats_url`) and one data directory (recordings, voicemail).

`nats-server` (the Debian package, 2.9, with JetStream) is started here on a free port of
127.0.0.1 with its store in a temporary directory; the package's own service is neither used nor
needed. Each node has its own SIP, HTTP and RTP ports and `node_id` ("node1", "node2"). Phones
register directly with one node (no SIP front here: see tests/e2e/kamailio_front.py).
"""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from hfserver import Server, free_port

NATS_BIN = shutil.which("nats-server") or "/usr/sbin/nats-server"


def nats_available():
    return os.path.exists(NATS_BIN)


class NatsServer:
    """`nats-server -a 127.0.0.1 -p <free port> -js -sd <tmp>`, stopped by close()."""

    def __init__(self, artifacts, timeout=15.0):
        self.port = free_port(udp=False, tcp=True)
        self.store_dir = tempfile.mkdtemp(prefix="hf-nats-")
        os.makedirs(artifacts, exist_ok=True)
        self.log_path = os.path.join(artifacts, "nats-server.log")
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [NATS_BIN, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", self.store_dir],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.url = "nats://127.0.0.1:%d" % self.port
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("nats-server exited with %s (see %s)"
                                     % (self.proc.returncode, self.log_path))
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(4096).startswith(b"INFO"):
                        return
            except OSError:
                time.sleep(0.1)
        self.close()
        raise AssertionError("nats-server did not listen on %d within %.0fs" % (self.port, timeout))

    def close(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        shutil.rmtree(self.store_dir, ignore_errors=True)


class ClusterNode(Server):
    """A hookflash Server with a `[cluster]` section; `data_dir` may be shared."""

    def __init__(self, *a, node_id, nats_url, data_dir=None, liveness=None, **kw):
        """`liveness`: more `[cluster]` keys (heartbeat_secs, node_dead_after_secs)."""
        self.node_id = node_id
        self.nats_url = nats_url
        self._shared_data_dir = data_dir
        kw["cluster"] = {"node_id": node_id, "nats_url": nats_url, **(liveness or {})}
        super().__init__(*a, **kw)
        if data_dir:
            self.data_dir = data_dir
            self.write_config()

    def write_config(self):
        if self._shared_data_dir:
            self.data_dir = self._shared_data_dir
        super().write_config()

    def pause(self):
        """SIGSTOP: the process keeps its NATS connection but answers nothing."""
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)


class TwoNodes:
    """PostgreSQL + NATS + node1 + node2 (started one after the other: each applies the same
    provisioning to the shared database)."""

    def __init__(self, binary, base, artifacts, pg_cluster, extra_users=None, liveness=None):
        self.nats = NatsServer(artifacts)
        self.database_url = pg_cluster.create_database()
        self.nodes = []
        try:
            shared = os.path.join(base, "shared-data")
            for i in (1, 2):
                node = ClusterNode(
                    binary, os.path.join(base, "node%d" % i), os.path.join(artifacts, "node%d" % i),
                    node_id="node%d" % i, nats_url=self.nats.url, data_dir=shared,
                    database_url=self.database_url, extra_users=extra_users, liveness=liveness)
                self.nodes.append(node)
                node.start()
        except Exception:
            self.close()
            raise

    @property
    def node1(self):
        return self.nodes[0]

    @property
    def node2(self):
        return self.nodes[1]

    def close(self):
        for n in self.nodes:
            try:
                if n.alive():
                    n.resume()
                n.stop()
            except Exception:
                n.kill()
        self.nats.close()
