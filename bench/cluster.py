"""bench scenario `cluster` (issue 18): what the shared store and the SIP front cost per call.

The same stepped call rate as scenario 1 (SIPp trunk caller -> DID -> SIPp callee, SDP with
anchored RTP ports, SHORT_CALL_MS calls, no audio), against
- `single`: one hookflash node on SQLite (the default deployment), and
- `cluster`: two hookflash nodes on one PostgreSQL and one NATS (JetStream) behind Kamailio running
  deploy/kamailio/kamailio.cfg (dispatcher, hash over the Call-ID, record-route).
Per step: calls completed/s, failures, INVITE -> 200 as SIPp measured it (rtd, ms), and CPU
seconds per call of each group (hookflash nodes, Kamailio, PostgreSQL, SIPp), from
/proc/<pid>/stat over the steady part of the step. On 2 cores expect no gain from the second
node; the figures that matter are CPU ms per call and latency, cluster vs single.

PostgreSQL: `BENCH_POSTGRES_URL` (a database the bench may fill; CPU of its server is then not
counted unless it runs here as `postgres` processes listening on the URL's port), else a
throwaway cluster from scripts/pg-test-cluster.sh, which runs with fsync=off and
synchronous_commit=off: its commit cost is lower than a durable server's (say so when quoting).
"""
import os
import subprocess
import time
import uuid

from benchlib import (LOOP, REPO, CpuWindow, Hookflash, SippFactory, children_of, free_port,
                      log, spawn, stop_proc, wait_until)

KAM_CFG = os.path.join(REPO, "deploy", "kamailio", "kamailio.cfg")
PG_SCRIPT = os.path.join(REPO, "scripts", "pg-test-cluster.sh")


class Node(Hookflash):
    """A hookflash node of the cluster: PostgreSQL, [cluster] node_id, the front trusted, its
    own half of the RTP range."""

    def __init__(self, binary, workdir, trunk_port, db_url, node_id, front, rtp, nats_url=None):
        super().__init__(binary, workdir, trunk_port)
        self.db_url, self.node_id, self.front, self.rtp_range = db_url, node_id, front, rtp
        self.nats_url = nats_url

    def config(self):
        lines = super().config().split("\n")
        out = ['database_url = "%s"' % self.db_url]
        for line in lines:
            if line.startswith("port_min = "):
                line = "port_min = %d" % self.rtp_range[0]
            elif line.startswith("port_max = "):
                line = "port_max = %d" % self.rtp_range[1]
            out.append(line)
            if line == "[sip]":
                out.append('trusted_proxies = ["%s"]' % self.front)
        out += ["[cluster]", 'node_id = "%s"' % self.node_id]
        if self.nats_url:
            out.append('nats_url = "%s"' % self.nats_url)
        out.append("")
        return "\n".join(out)


class Nats:
    """nats-server with JetStream on a free loopback port (the bus the nodes share)."""

    def __init__(self, workdir):
        self.port = free_port(tcp=True)
        store = os.path.join(workdir, "nats")
        os.makedirs(store, exist_ok=True)
        self.log = open(os.path.join(workdir, "nats.log"), "w")
        self.proc = spawn(["nats-server", "-a", LOOP, "-p", str(self.port), "-js", "-sd", store],
                          stdout=self.log, stderr=subprocess.STDOUT)
        self.url = "nats://%s:%d" % (LOOP, self.port)
        if not wait_until(lambda: _listening(self.port), 10, 0.1):
            self.stop()
            raise RuntimeError("nats-server did not start")

    def pids(self):
        return [self.proc.pid] if self.proc.poll() is None else []

    def stop(self):
        stop_proc(self.proc)
        self.log.close()


def _listening(port):
    import socket
    s = socket.socket()
    try:
        s.settimeout(0.2)
        s.connect((LOOP, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


class Postgres:
    def __init__(self):
        self.proc = None
        url = os.environ.get("BENCH_POSTGRES_URL", "")
        if url:
            self.url, self.port = url, int(url.rsplit(":", 1)[1].split("/")[0])
            return
        self.port = free_port(tcp=True)
        self.proc = spawn([PG_SCRIPT, str(self.port)], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().strip()
        if not line.startswith("postgres://"):
            self.stop()
            raise RuntimeError("throwaway PostgreSQL did not start (%r)" % line)
        self.proc.stdout.readline()  # ca=...
        self.url = line
        base = line.rsplit("/", 1)[0]
        name = "bench_" + uuid.uuid4().hex[:12]
        subprocess.run(["psql", "-X", "-q", "-d", line, "-c", "CREATE DATABASE %s" % name],
                       check=True, capture_output=True, timeout=30)
        self.url = "%s/%s" % (base, name)

    def pids(self):
        """The postmaster listening on our port and its backends."""
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open("/proc/%s/cmdline" % d, "rb") as f:
                    cmd = f.read().split(b"\0")
            except OSError:
                continue
            if cmd and cmd[0].endswith(b"postgres") and b"-p" in cmd \
                    and str(self.port).encode() in cmd:
                return [int(d)] + children_of(int(d))
        return []

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            stop_proc(self.proc, 30)


class Front:
    """Kamailio with deploy/kamailio/kamailio.cfg on ``port`` (chosen before the nodes start:
    they must trust it), the nodes in dispatcher set 1."""

    def __init__(self, workdir, nodes, port, children=4):
        self.workdir = workdir
        self.port = port
        ds = os.path.join(workdir, "hookflash-nodes.list")
        with open(ds, "w") as f:
            for n in nodes:
                f.write("1 sip:%s 0 0 node=%s\n" % (n.sip, n.node_id))
        self.ctl = os.path.join(workdir, "ctl.sock")
        self.logf = open(os.path.join(workdir, "kamailio.log"), "ab")
        self.proc = spawn(
            ["kamailio", "-f", KAM_CFG, "-DD", "-E", "-m", "256", "-M", "16",
             "-A", "FRONT_LISTEN=udp:%s:%d" % (LOOP, self.port),
             "-A", 'FRONT_DS_LIST="%s"' % ds, "-A", "FRONT_PROBE_SECS=2",
             "-A", "FRONT_CHILDREN=%d" % children, "-A", 'FRONT_CTL="unix:%s"' % self.ctl,
             "-A", "FRONT_LOG_LEVEL=1",
             "-P", os.path.join(workdir, "kamailio.pid"), "-Y", workdir],
            stdout=self.logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=workdir)
        want = len(nodes)
        if not wait_until(lambda: self.proc.poll() is not None or self.active() == want, 30, 0.3):
            self.stop()
            raise RuntimeError("front: nodes not active; see %s" % self.logf.name)

    @property
    def sip(self):
        return "%s:%d" % (LOOP, self.port)

    def active(self):
        if not os.path.exists(self.ctl):
            return 0
        p = subprocess.run(["kamcmd", "-s", "unix:%s" % self.ctl, "dispatcher.list"],
                           capture_output=True, text=True, timeout=10)
        return sum(1 for line in p.stdout.splitlines()
                   if "FLAGS:" in line and line.split("FLAGS:")[1].strip().startswith("A"))

    def pids(self):
        if self.proc.poll() is not None:
            return []
        return [self.proc.pid] + children_of(self.proc.pid)

    def stop(self):
        stop_proc(self.proc)
        self.logf.close()


def _steps(ctx, label, target, groups, server_groups, uac_port, uas_port, sipp, dial):
    """Stepped call rates against ``target``; CPU per group."""
    from bench import SHORT_CALL_MS, UNUSED_MEDIA_PORT  # noqa: the scenario-1 constants

    p = ctx.p
    steps = []
    for rate in p["rates"]:
        secs = p["rate_secs"]
        calls = int(rate * secs)
        uas = sipp.start("%s-uas-%d" % (label, rate), "uas.xml", local_port=uas_port,
                         subst=dict(MEDIA_PORT=UNUSED_MEDIA_PORT), timeout_s=secs + 40)
        time.sleep(0.3)
        t0 = time.monotonic()
        uac = sipp.start("%s-uac-%d" % (label, rate), "uac.xml", remote=target,
                         local_port=uac_port,
                         subst=dict(DIAL=dial, MEDIA_PORT=UNUSED_MEDIA_PORT,
                                    HOLD_MS=SHORT_CALL_MS),
                         calls=calls, rate=rate, limit=rate * 5 + 100, timeout_s=secs + 30)
        time.sleep(min(1.0, secs * 0.2))
        g = dict(groups)
        g["gen"] = lambda: [uac.pid, uas.pid]
        win = CpuWindow(g).start()
        wait_until(lambda: not uac.alive(), max(0.2, t0 + secs - 0.3 - time.monotonic()))
        cpu = win.stop()
        r = uac.wait(secs + 45)
        wall = time.monotonic() - t0
        wait_until(lambda: not uas.alive(), 5)
        u = uas.stop()
        # Calls placed during the CPU window (SIPp keeps the rate): per-call costs.
        in_window = max(1.0, rate * cpu["wall_s"])
        per_call = {k[:-len("_cpu_s")] + "_cpu_ms_per_call": 1000.0 * v / in_window
                    for k, v in cpu.items() if k.endswith("_cpu_s")}
        server_ms = sum(per_call.get(k + "_cpu_ms_per_call", 0.0) for k in server_groups)
        step = dict(rate=rate, calls=calls, ok=r.successful, failed=r.failed + u.failed,
                    retrans=r.retransmissions + u.retransmissions, rc=r.rc,
                    completed_per_s=r.successful / wall if wall else 0, rtd_ms=r.rtd_ms(),
                    server_cpu_ms_per_call=server_ms, **cpu, **per_call)
        step["passed"] = r.successful == calls and step["failed"] == 0 and r.rc == 0
        steps.append(step)
        log("cluster[%s] %d/s: ok %d/%d failed %d rtd %s ms, server CPU %.2f ms/call (%s)"
            % (label, rate, r.successful, calls, step["failed"],
               "%.1f" % step["rtd_ms"] if step["rtd_ms"] is not None else "-", server_ms,
               ", ".join("%s %.2f" % (k.split("_cpu")[0], v) for k, v in sorted(per_call.items()))))
        if not step["passed"]:
            break
    return steps


def scenario_cluster(ctx):
    out = {}
    # One node on SQLite.
    wd = ctx.workdir("cluster-single")
    uac_port, uas_port = free_port(), free_port()
    sipp = SippFactory(os.path.join(wd, "sipp"))
    single = Hookflash(ctx.hf_bin, wd, trunk_port=uac_port).start()
    try:
        single.register_callee(sipp, uas_port)
        out["single"] = _steps(ctx, "single", single.sip, {"nodes": single.pids}, ["nodes"],
                               uac_port, uas_port, sipp, single.dial())
    finally:
        single.stop()

    # Two nodes on PostgreSQL behind Kamailio.
    wd = ctx.workdir("cluster-two")
    uac_port, uas_port = free_port(), free_port()
    sipp = SippFactory(os.path.join(wd, "sipp"))
    pg = Postgres()
    nodes, front, nats = [], None, None
    try:
        nats = Nats(wd)
        front_port = free_port()
        half = (40000, 44999), (45000, 49999)
        for i in (0, 1):
            n = Node(ctx.hf_bin, os.path.join(wd, "n%d" % (i + 1)), uac_port, pg.url,
                     "n%d" % (i + 1), "%s:%d" % (LOOP, front_port), half[i], nats.url)
            nodes.append(n.start())
        front = Front(wd, nodes, front_port)
        r = sipp.run("register", "register.xml", remote=front.sip, local_port=uas_port,
                     subst=dict(USER=Hookflash.USER, PASSWORD=Hookflash.PASSWORD,
                                REALM=Hookflash.REALM), calls=1, timeout_s=15)
        if r.successful != 1:
            raise RuntimeError("SIPp callee could not register through the front: %s"
                               % r.summary())
        groups = {"nodes": lambda: sum((n.pids() for n in nodes), []), "front": front.pids,
                  "db": pg.pids, "bus": nats.pids}
        out["cluster"] = _steps(ctx, "cluster", front.sip, groups, ["nodes", "front", "db", "bus"],
                                uac_port, uas_port, sipp, Hookflash.DID)
    finally:
        if front is not None:
            front.stop()
        for n in nodes:
            n.stop()
        if nats is not None:
            nats.stop()
        pg.stop()
    out["postgres"] = "BENCH_POSTGRES_URL" if os.environ.get("BENCH_POSTGRES_URL") else \
        "throwaway (fsync=off, synchronous_commit=off)"
    return out
