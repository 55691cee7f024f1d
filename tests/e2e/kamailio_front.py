"""Two hookflash nodes on one PostgreSQL behind Kamailio (issue 18, the SIP front).

`FrontCluster` starts, on 127.0.0.1, each with its own ports:
- a database on the worker's throwaway PostgreSQL (pgcluster.py),
- node n1 and node n2: `hookflash serve` with that `database_url`, `[cluster] node_id`, short
  heartbeat / dead-node intervals, and `[sip] trusted_proxies` = the front's exact address,
- Kamailio with deploy/kamailio/kamailio.cfg (the file operators deploy, values given with
  `-A`), a dispatcher list of the two nodes, OPTIONS probes every PROBE_SECS, and its control
  socket, so `dispatcher()` reads Kamailio's own view of the nodes (kamcmd),
- with `nats=True`, also the cluster bus: a nats-server (twonode.NatsServer) and
  `[cluster] nats_url` on both nodes.

Phones register and call through `front` (it quacks like an hfserver.Server for
phones.Phone.register / uri). Which node a request went to is read from Kamailio's log
(`front: METHOD from USER to sip:127.0.0.1:PORT (Call-ID ...)`), i.e. from the balancer,
not from the nodes. Everything is bounded and stopped by close() (Kamailio by its pid).
"""
import os
import re
import signal
import subprocess
import time

from hfserver import REPO, Server, free_port
from twonode import NatsServer

CFG = os.path.join(REPO, "deploy", "kamailio", "kamailio.cfg")
PROBE_SECS = 2
NODE_TIMEOUT_MS = 2000
HEARTBEAT_SECS = 1
DEAD_AFTER_SECS = 4

ROUTED = re.compile(r"front: (\w+) from (\S*) to sip:127\.0\.0\.1:(\d+) \(Call-ID ([^)]*)\)")


class Front:
    """The SIP front as the phones see it."""

    def __init__(self, cluster, port):
        self.cluster = cluster
        self.sip_port = port
        self.tls_port = None
        self.users = cluster.nodes[0].users

    def realm_of(self, ext):
        return self.cluster.nodes[0].realm_of(ext)

    def uri(self, user, transport="udp"):
        assert transport == "udp", "the front listens on UDP only"
        return "sip:%s@127.0.0.1:%d" % (user, self.sip_port)


class FrontCluster:
    def __init__(self, binary, workdir, artifacts, pg, shutdown_grace_secs=0, server_kw=None,
                 nats=False):
        self.workdir = workdir
        self.artifacts = artifacts
        self.pg = pg
        os.makedirs(workdir, exist_ok=True)
        self.db = pg.create_database()
        self.front_port = free_port(udp=True, tcp=False)
        self.nodes = []
        self.kam = None
        self._klog = None
        self.nats = None
        try:
            bus = {}
            if nats:
                self.nats = NatsServer(artifacts)
                bus = {"nats_url": self.nats.url}
            for i in (1, 2):
                node = Server(
                    binary, os.path.join(workdir, "n%d" % i), os.path.join(artifacts, "n%d" % i),
                    database_url=self.db,
                    shutdown_grace_secs=shutdown_grace_secs,
                    extra_sip={"trusted_proxies": ["127.0.0.1:%d" % self.front_port]},
                    cluster={"node_id": "n%d" % i, "heartbeat_secs": HEARTBEAT_SECS,
                             "node_dead_after_secs": DEAD_AFTER_SECS, **bus},
                    **(server_kw or {}))
                node.node_id = "n%d" % i
                if self.nodes:
                    # One configuration for the cluster: the trunk (provisioned into the shared
                    # database by each node at its start) is the same carrier for all.
                    node.trunk_port = self.nodes[0].trunk_port
                    node.write_config()
                # One after the other: each provisions the shared accounts at its start.
                node.start()
                self.nodes.append(node)
            self.front = Front(self, self.front_port)
            self._start_kamailio()
            self.wait_active(self.nodes, timeout=6 * PROBE_SECS + 10)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------ Kamailio
    def _start_kamailio(self):
        kdir = os.path.join(self.workdir, "kamailio")
        os.makedirs(kdir, exist_ok=True)
        self.ds_list = os.path.join(kdir, "hookflash-nodes.list")
        with open(self.ds_list, "w") as f:
            for n in self.nodes:
                f.write("1 sip:127.0.0.1:%d 0 0 node=%s\n" % (n.sip_port, n.node_id))
        self.ctl = os.path.join(kdir, "ctl.sock")
        self.klog_path = os.path.join(self.artifacts, "kamailio.log")
        os.makedirs(self.artifacts, exist_ok=True)
        self._klog = open(self.klog_path, "ab")
        self.kam = subprocess.Popen(
            ["kamailio", "-f", CFG, "-DD", "-E", "-m", "64", "-M", "8",
             "-A", "FRONT_LISTEN=udp:127.0.0.1:%d" % self.front_port,
             "-A", 'FRONT_DS_LIST="%s"' % self.ds_list,
             "-A", "FRONT_PROBE_SECS=%d" % PROBE_SECS,
             "-A", "FRONT_NODE_TIMEOUT_MS=%d" % NODE_TIMEOUT_MS,
             # One UDP worker: with several, a 180 and the 200 right after it may leave in
             # either order (legal on UDP), and SIPp's scenario aborts on a late 180.
             "-A", "FRONT_CHILDREN=1",
             "-A", 'FRONT_CTL="unix:%s"' % self.ctl,
             "-A", "FRONT_LOG_LEVEL=2",
             "-P", os.path.join(kdir, "kamailio.pid"), "-Y", kdir],
            stdout=self._klog, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=kdir)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.kam.poll() is not None:
                raise AssertionError("kamailio exited (%s); log:\n%s"
                                     % (self.kam.returncode, self.kamailio_log()[-3000:]))
            if os.path.exists(self.ctl):
                return
            time.sleep(0.2)
        raise AssertionError("kamailio control socket never appeared; log:\n%s"
                             % self.kamailio_log()[-3000:])

    def kamailio_log(self):
        try:
            with open(self.klog_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def dispatcher(self):
        """{node_port: flags} as Kamailio sees set 1 (`AP` active, `IP`/`IX` inactive...)."""
        p = subprocess.run(["kamcmd", "-s", "unix:%s" % self.ctl, "dispatcher.list"],
                           capture_output=True, text=True, timeout=10)
        assert p.returncode == 0, "kamcmd dispatcher.list: %s %s" % (p.stdout, p.stderr)
        out = {}
        uri = None
        for line in p.stdout.splitlines():
            m = re.search(r"URI:\s*sip:127\.0\.0\.1:(\d+)", line)
            if m:
                uri = int(m.group(1))
            m = re.search(r"FLAGS:\s*(\w+)", line)
            if m and uri is not None:
                out[uri] = m.group(1)
                uri = None
        return out

    def wait_active(self, nodes, timeout=20.0):
        want = {n.sip_port for n in nodes}
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = self.dispatcher()
            if all(last.get(p, "").startswith("A") for p in want):
                return last
            time.sleep(0.3)
        raise AssertionError("nodes %s not active at the front within %.0fs: %s"
                             % (sorted(want), timeout, last))

    def wait_inactive(self, node, timeout=20.0):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = self.dispatcher()
            if last.get(node.sip_port, "A").startswith("I"):
                return last
            time.sleep(0.2)
        raise AssertionError("node %s not taken out by the front within %.0fs: %s"
                             % (node.node_id, timeout, last))

    def routed(self, method=None):
        """[(method, from_user, node, call_id)] as Kamailio logged its choices."""
        by_port = {n.sip_port: n for n in self.nodes}
        out = []
        for m in ROUTED.finditer(self.kamailio_log()):
            if method and m.group(1) != method:
                continue
            out.append((m.group(1), m.group(2), by_port.get(int(m.group(3))), m.group(4)))
        return out

    def node_of(self, port):
        return next(n for n in self.nodes if n.sip_port == port)

    # ---------------------------------------------------------------- end
    def close(self):
        if self.kam is not None and self.kam.poll() is None:
            self.kam.send_signal(signal.SIGTERM)
            try:
                self.kam.wait(10)
            except subprocess.TimeoutExpired:
                self.kam.kill()
                self.kam.wait(5)
        if self._klog:
            self._klog.close()
            self._klog = None
        for n in self.nodes:
            try:
                n.stop()
            except Exception:
                n.kill()
        if self.nats is not None:
            self.nats.close()
            self.nats = None
