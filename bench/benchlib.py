"""Process plumbing for hookflash's bench: ports, /proc accounting, the servers under test
(hookflash, Kamailio + rtpengine) and SIPp. Standard library only.

Everything listens on and sends to 127.0.0.1; every wait is bounded."""
import csv
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
SIPP_DIR = os.path.join(BENCH, "sipp")
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
LOOP = "127.0.0.1"

# Port plan (away from the e2e tests' 20000-29999 RTP ranges).
HF_RTP = (40000, 49999)  # hookflash RTP pool
RE_RTP = (50000, 59999)  # rtpengine RTP range


_children = []
_children_lock = threading.Lock()


def spawn(args, **kw):
    """subprocess.Popen, remembered so that cleanup() can stop it (and only it)."""
    p = subprocess.Popen(args, **kw)
    with _children_lock:
        _children.append(p)
    return p


def cleanup():
    """Stops every process this bench started that is still running (by its pid)."""
    with _children_lock:
        procs = list(_children)
    for p in procs:
        if p.poll() is None:
            try:
                p.terminate()
            except OSError:
                pass
    for p in procs:
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()


def log(msg):
    print("[bench %s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


# ------------------------------------------------------------------ ports
_used = set()
_port_lock = threading.Lock()


def free_port(span=1, tcp=False):
    """A UDP (and optionally TCP) port on 127.0.0.1 outside the RTP ranges, with ``span``-1
    free ports after it; never handed out twice by this process."""
    with _port_lock:
        for _ in range(500):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((LOOP, 0))
            p = s.getsockname()[1]
            s.close()
            ports = list(range(p, p + span))
            if any(q in _used or q > 65000 or HF_RTP[0] <= q <= HF_RTP[1]
                   or RE_RTP[0] <= q <= RE_RTP[1] for q in ports):
                continue
            ok, socks = True, []
            for q in ports:
                kinds = [socket.SOCK_DGRAM] + ([socket.SOCK_STREAM] if tcp else [])
                for kind in kinds:
                    t = socket.socket(socket.AF_INET, kind)
                    try:
                        t.bind((LOOP, q))
                        socks.append(t)
                    except OSError:
                        ok = False
                        t.close()
            for t in socks:
                t.close()
            if ok:
                _used.update(ports)
                return p
    raise RuntimeError("no free port")


# ------------------------------------------------------------------ /proc
def proc_cpu_s(pid):
    """utime+stime of a process (all its threads), seconds; None if gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return None


def children_of(pid):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                out.append(int(d))
        except (OSError, IndexError, ValueError):
            pass
    return out


def cpu_of(pids):
    return sum(c for c in (proc_cpu_s(p) for p in pids) if c is not None)


def rss_kb(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def pss_kb(pid):
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def machine_busy_s():
    """Busy CPU seconds of the whole machine (all cores) from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...
    return (v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)) / CLK_TCK


class CpuWindow:
    """CPU seconds of groups of processes between start() and stop(), and of the whole machine
    (machine_cpu_pct, in % of one core: 200 = both cores of a 2-core machine busy)."""

    def __init__(self, groups):
        self.groups = groups  # name -> callable returning a list of pids
        self.t0 = self.c0 = None
        self.result = {}

    def start(self):
        self.t0 = time.monotonic()
        self.c0 = {k: cpu_of(f()) for k, f in self.groups.items()}
        self.m0 = machine_busy_s()
        return self

    def stop(self):
        wall = time.monotonic() - self.t0
        self.result = {"wall_s": wall}
        for k, f in self.groups.items():
            used = cpu_of(f()) - self.c0[k]
            self.result[k + "_cpu_s"] = used
            self.result[k + "_cpu_pct"] = 100.0 * used / wall if wall > 0 else 0.0
        self.result["machine_cpu_pct"] = 100.0 * (machine_busy_s() - self.m0) / wall if wall > 0 else 0.0
        return self.result


def loadavg():
    with open("/proc/loadavg") as f:
        return f.read().split()[:3]


def machine():
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) // 1024
    return {"nproc": os.cpu_count(), "cpu": model, "mem_mb": mem,
            "kernel": os.uname().release}


# ------------------------------------------------------------------ helpers
def wait_until(pred, timeout, step=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


def http(method, url, body=None, headers=None, timeout=5.0):
    """(status, text). Never raises for HTTP errors."""
    data = None
    hdrs = dict(headers or {})
    if body is not None:
        data = json.dumps(body).encode() if not isinstance(body, bytes) else body
        hdrs.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as e:
        return None, str(e)


def parse_metrics(text):
    """{name: value summed over its labels}, and {name{labels}: value} for labelled series."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
        if m:
            try:
                v = float(m.group(3))
            except ValueError:
                continue
            out[m.group(1)] = out.get(m.group(1), 0.0) + v
            if m.group(2):
                out[m.group(1) + m.group(2)] = v
    return out


def stop_proc(proc, timeout=10.0):
    """SIGTERM, then SIGKILL: only the process we started."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


# ------------------------------------------------------------------ hookflash
class Hookflash:
    """hookflash serve with a generated config: one account, one user (the SIPp callee
    registers as it), one DID owned by it, and one trunk whose source ip:port is the SIPp
    caller (so calls need no digest, like Kamailio's)."""

    name = "hookflash"
    USER, PASSWORD, REALM, DID = "100", "bench-secret-100", "bench.local", "4930100100"
    API_KEY = "hf_bench_key_0123456789abcdef"

    def __init__(self, binary, workdir, trunk_port, apps=()):
        # apps: [(name, call_hook URL, [numbers][, language])], [[accounts.applications]]
        self.apps = list(apps)
        self.binary = binary
        self.workdir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.sip_port = free_port(tcp=True)
        self.http_port = free_port(tcp=True)
        self.trunk_port = trunk_port
        self.http = "http://%s:%d" % (LOOP, self.http_port)
        self.rtp_range = HF_RTP
        self.proc = None
        self.logf = None

    @property
    def sip(self):
        return "%s:%d" % (LOOP, self.sip_port)

    def config(self):
        data = os.path.join(self.workdir, "data")
        return "\n".join([
            'data_dir = "%s"' % data,
            "demo_account = false",
            "[sip]",
            'udp = "%s"' % self.sip,
            'tcp = ""',
            'advertised_host = "%s"' % LOOP,
            "ring_timeout_secs = 30",
            'digest_algorithms = ["MD5"]',
            "[http]",
            'listen = "%s:%d"' % (LOOP, self.http_port),
            "[rtp]",
            'bind_ip = "%s"' % LOOP,
            "port_min = %d" % HF_RTP[0],
            "port_max = %d" % HF_RTP[1],
            "inactivity_timeout_secs = 600",
            "[[accounts]]",
            'name = "bench"',
            'realm = "%s"' % self.REALM,
            'api_keys = ["%s"]' % self.API_KEY,
            "  [[accounts.users]]",
            '  extension = "%s"' % self.USER,
            '  password = "%s"' % self.PASSWORD,
            "  [[accounts.numbers]]",
            '  number = "%s"' % self.DID,
            '  user = "%s"' % self.USER,
            "  [[accounts.trunks]]",
            '  name = "generator"',
            '  host = "%s"' % LOOP,
            "  port = %d" % self.trunk_port,
            '  transport = "udp"',
        ] + sum([[
            "  [[accounts.applications]]",
            '  name = "%s"' % app[0],
            '  call_hook = "%s"' % app[1],
            "  numbers = [%s]" % ", ".join('"%s"' % n for n in app[2]),
            '  language = "%s"' % (app[3] if len(app) > 3 else "jambonz"),
        ] for app in self.apps], []) + [""])

    def start(self, timeout=30):
        cfg = os.path.join(self.workdir, "hookflash.toml")
        with open(cfg, "w") as f:
            f.write(self.config())
        env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKFLASH_")}
        env["RUST_LOG"] = os.environ.get("BENCH_HOOKFLASH_LOG", "warn")
        # A/B runs: BENCH_ENV_HOOKFLASH_X=v reaches the server as HOOKFLASH_X=v.
        for k, v in os.environ.items():
            if k.startswith("BENCH_ENV_HOOKFLASH_"):
                env[k[len("BENCH_ENV_"):]] = v
        self.logf = open(os.path.join(self.workdir, "hookflash.log"), "ab")
        self.proc = spawn([self.binary, "serve", "--config", cfg],
                                     stdout=self.logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=self.workdir, env=env)
        ok = wait_until(lambda: self.proc.poll() is not None
                        or http("GET", self.http + "/healthz", timeout=1)[0] == 200, timeout)
        if self.proc.poll() is not None or not ok:
            self.stop()
            raise RuntimeError("hookflash did not start; see hookflash.log in %s" % self.workdir)
        return self

    def pids(self):
        return [self.proc.pid] if self.proc and self.proc.poll() is None else []

    def sig_pids(self):
        return self.pids()

    def media_pids(self):
        return self.pids()

    def memory_kb(self):
        m = self.metrics()
        return {"hookflash_rss_kb": rss_kb(self.proc.pid),
                "sip_transactions": m.get("hookflash_sip_transactions"),
                "sip_dialogs": m.get("hookflash_sip_dialogs")}

    def total_mem_kb(self):
        return rss_kb(self.proc.pid)

    def metrics(self):
        st, text = http("GET", self.http + "/metrics", timeout=3)
        return parse_metrics(text) if st == 200 else {}

    def active_calls(self):
        return self.metrics().get("hookflash_active_calls")

    def wait_idle(self, timeout=30):
        return wait_until(lambda: self.active_calls() == 0, timeout, 0.2)

    def register_callee(self, sipp_factory, uas_port):
        r = sipp_factory.run("register", "register.xml", remote=self.sip, local_port=uas_port,
                             subst=dict(USER=self.USER, PASSWORD=self.PASSWORD,
                                        REALM=self.REALM), calls=1, timeout_s=15)
        if r.successful != 1:
            raise RuntimeError("SIPp callee could not register: %s" % r.summary())
        ok = wait_until(lambda: self.metrics().get("hookflash_active_registrations") == 1, 10)
        if not ok:
            raise RuntimeError("registration not visible in /metrics")

    def dial(self):
        return self.DID

    def stop(self):
        stop_proc(self.proc)
        if self.logf:
            self.logf.close()
            self.logf = None


# ------------------------------------------------------------------ Kamailio + rtpengine
KAMAILIO_CFG = r"""#!KAMAILIO
# hookflash bench peer: stateful proxy, rtpengine anchoring media (reference/peer-bench.md).
debug=1
log_stderror=yes
fork=yes
children=4
disable_tcp=yes
auto_aliases=no
listen=udp:127.0.0.1:{SIP_PORT}
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "siputils.so"
loadmodule "textops.so"
loadmodule "xlog.so"
loadmodule "rtpengine.so"
modparam("rtpengine", "rtpengine_sock", "udp:127.0.0.1:{NG_PORT}")
modparam("rtpengine", "rtpengine_tout_ms", 2000)

request_route {
    if (!mf_process_maxfwd_header("10")) {
        sl_send_reply("483", "Too Many Hops");
        exit;
    }
    if (has_totag()) {
        if (loose_route()) {
            if (is_method("BYE")) {
                rtpengine_delete();
            }
            t_relay();
            exit;
        }
        if (is_method("ACK")) {
            if (t_check_trans()) {
                t_relay();
            }
            exit;
        }
        sl_send_reply("404", "Not here");
        exit;
    }
    if (is_method("OPTIONS") && $rU == $null) {
        sl_send_reply("200", "OK");
        exit;
    }
    if (is_method("CANCEL")) {
        if (t_check_trans()) {
            t_relay();
        }
        exit;
    }
    if (is_method("INVITE")) {
        record_route();
        if (!rtpengine_offer("replace-origin replace-session-connection")) {
            sl_send_reply("503", "rtpengine offer failed");
            exit;
        }
        t_on_reply("REPLY");
        t_on_failure("FAIL");
    }
    $du = "sip:127.0.0.1:{CALLEE_PORT}";
    if (!t_relay()) {
        sl_reply_error();
    }
    exit;
}

onreply_route[REPLY] {
    if (has_body("application/sdp")) {
        rtpengine_answer("replace-origin replace-session-connection");
    }
}

failure_route[FAIL] {
    rtpengine_delete();
}
"""


class KamailioRtpengine:
    """Kamailio 5.6 (4 UDP workers) as a stateful proxy + rtpengine 10.5 userspace
    (--table=-1), both started in the foreground by the bench."""

    name = "kamailio+rtpengine"

    def __init__(self, workdir, callee_port):
        self.workdir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.sip_port = free_port()
        self.ng_port = free_port()
        self.callee_port = callee_port
        self.rtp_range = RE_RTP
        self.kam = self.rtpe = None
        self.logs = []

    @property
    def sip(self):
        return "%s:%d" % (LOOP, self.sip_port)

    def start(self, timeout=20):
        try:
            return self._start(timeout)
        except BaseException:
            self.stop()  # whatever did start
            raise

    def _start(self, timeout):
        rlog = open(os.path.join(self.workdir, "rtpengine.log"), "ab")
        self.logs.append(rlog)
        self.rtpe = spawn(
            ["rtpengine", "--config-file=none", "--foreground", "--table=-1",
             "--interface=%s" % LOOP, "--listen-ng=%s:%d" % (LOOP, self.ng_port),
             "--delete-delay=0", "--timeout=600", "--silent-timeout=600",
             "--port-min=%d" % RE_RTP[0], "--port-max=%d" % RE_RTP[1],
             "--log-stderr", "--log-level=4", "--pidfile=none"],
            stdout=rlog, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.workdir)
        if not wait_until(lambda: self.rtpe.poll() is not None or self.ng_ping(), timeout):
            raise RuntimeError("rtpengine did not answer ng ping; see %s" % rlog.name)
        if self.rtpe.poll() is not None:
            raise RuntimeError("rtpengine exited; see %s" % rlog.name)
        cfg = os.path.join(self.workdir, "kamailio.cfg")
        with open(cfg, "w") as f:
            f.write(KAMAILIO_CFG.replace("{SIP_PORT}", str(self.sip_port))
                    .replace("{NG_PORT}", str(self.ng_port))
                    .replace("{CALLEE_PORT}", str(self.callee_port)))
        klog = open(os.path.join(self.workdir, "kamailio.log"), "ab")
        self.logs.append(klog)
        self.kam = spawn(
            ["kamailio", "-f", cfg, "-DD", "-E", "-m", "256", "-M", "16",
             "-P", os.path.join(self.workdir, "kamailio.pid"), "-Y", self.workdir],
            stdout=klog, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.workdir)
        ok = wait_until(lambda: self.kam.poll() is not None or self.sip_ping(), timeout, 0.3)
        if self.kam.poll() is not None or not ok:
            raise RuntimeError("kamailio did not start; see %s" % klog.name)
        return self

    def ng_ping(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(0.5)
        try:
            s.sendto(b"bench1 d7:command4:pinge", (LOOP, self.ng_port))
            data = s.recv(1000)
            return b"pong" in data
        except OSError:
            return False
        finally:
            s.close()

    def sip_ping(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((LOOP, 0))
        s.settimeout(0.5)
        port = s.getsockname()[1]
        msg = ("OPTIONS sip:127.0.0.1:{p} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{lp};branch=z9hG4bKbench{t}\r\n"
               "Max-Forwards: 70\r\nFrom: <sip:bench@127.0.0.1>;tag=b{t}\r\nTo: <sip:ping@127.0.0.1>\r\n"
               "Call-ID: ping{t}@bench\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").format(
                   p=self.sip_port, lp=port, t=int(time.time() * 1000))
        try:
            s.sendto(msg.encode(), (LOOP, self.sip_port))
            return s.recv(4000).startswith(b"SIP/2.0")
        except OSError:
            return False
        finally:
            s.close()

    def kam_pids(self):
        if not self.kam or self.kam.poll() is not None:
            return []
        return [self.kam.pid] + children_of(self.kam.pid)

    def rtpe_pids(self):
        return [self.rtpe.pid] if self.rtpe and self.rtpe.poll() is None else []

    def pids(self):
        return self.kam_pids() + self.rtpe_pids()

    def sig_pids(self):
        return self.kam_pids()

    def media_pids(self):
        return self.rtpe_pids()

    def memory_kb(self):
        return {"kamailio_pss_kb": sum(pss_kb(p) for p in self.kam_pids()),
                "rtpengine_rss_kb": sum(rss_kb(p) for p in self.rtpe_pids())}

    def total_mem_kb(self):
        m = self.memory_kb()
        return m["kamailio_pss_kb"] + m["rtpengine_rss_kb"]

    def wait_idle(self, timeout=30):
        time.sleep(1.0)  # no dialog state in the proxy; tm transactions finish quickly
        return True

    def dial(self):
        return "4930100100"

    def stop(self):
        stop_proc(self.kam)
        stop_proc(self.rtpe)
        for f in self.logs:
            f.close()
        self.logs = []


# ------------------------------------------------------------------ SIPp
OK, SOME_FAILED, STOPPED, TIMED_OUT = 0, 1, 97, 255


def render(template, outdir, name, subst):
    with open(os.path.join(SIPP_DIR, template)) as f:
        text = f.read()
    for k, v in subst.items():
        text = text.replace("{{%s}}" % k, str(v))
    left = re.findall(r"\{\{[A-Z_]+\}\}", text)
    if left:
        raise ValueError("%s: unsubstituted %s" % (template, sorted(set(left))))
    path = os.path.join(outdir, name + ".xml")
    with open(path, "w") as f:
        f.write(text)
    return path


class SippResult:
    def __init__(self, name, rc, stats, outdir, rusage=None):
        self.name, self.rc, self.stats, self.outdir = name, rc, stats, outdir
        self.rusage = rusage

    def _int(self, key):
        try:
            return int(self.stats.get(key, 0) or 0)
        except ValueError:
            return 0

    @property
    def created(self):
        return self._int("TotalCallCreated")

    @property
    def successful(self):
        return self._int("SuccessfulCall(C)")

    @property
    def failed(self):
        return self._int("FailedCall(C)")

    @property
    def retransmissions(self):
        return self._int("Retransmissions(C)")

    def creation_rate(self, calls):
        """(calls/s SIPp really created while it was creating calls, True if it kept up with
        `rate`), from the periodic statistics (-fd 1): the last row before all `calls` were
        created gives created / elapsed; None when there is no such row."""
        try:
            with open(os.path.join(self.outdir, self.name + ".csv"), newline="") as f:
                rows = list(csv.DictReader(f, delimiter=";"))
        except OSError:
            return None

        def epoch(v):
            try:
                return float((v or "").split()[-1])
            except (ValueError, IndexError):
                return None
        best = None
        for r in rows:
            try:
                created = int(r.get("TotalCallCreated") or 0)
            except ValueError:
                continue
            t0, t = epoch(r.get("StartTime")), epoch(r.get("CurrentTime"))
            if t0 is None or t is None or t - t0 < 0.9:
                continue
            if created < calls:
                best = (created, t - t0)
            elif best is None:
                # all created before the first periodic row: a lower bound
                best = (created, t - t0)
                break
            else:
                break
        if best is None:
            return None
        created, secs = best
        return created / secs

    def rtd_ms(self):
        """Mean INVITE->200 response time (ms) from the cumulative stats."""
        v = self.stats.get("ResponseTime1(C)") or ""
        m = re.match(r"(\d+):(\d+):(\d+)[:.](\d+)", v)
        if not m:
            return None
        h, mi, s, us = (int(x) for x in m.groups())
        frac = us / (10 ** len(m.group(4)))
        return ((h * 60 + mi) * 60 + s + frac) * 1000.0

    def read(self, suffix):
        try:
            with open(os.path.join(self.outdir, "%s.%s" % (self.name, suffix)), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def logs(self):
        return self.read("log").splitlines()

    def summary(self):
        return "sipp %s: rc=%s created=%d ok=%d failed=%d retrans=%d\n%s\n%s" % (
            self.name, self.rc, self.created, self.successful, self.failed,
            self.retransmissions, self.read("errors")[-1500:], self.read("screen")[-1500:])


class Sipp:
    def __init__(self, outdir, name, scenario, remote=None, local_port=None, subst=None,
                 calls=None, rate=None, limit=None, timeout_s=60, extra=(), trace_logs=True,
                 media_port=None):
        self.outdir, self.name = outdir, name
        os.makedirs(outdir, exist_ok=True)
        self.local_port = local_port or free_port()
        cp = free_port()
        # -mp: SIPp's RTP echo port, and with rtp_stream (SIPp 3.6.1) the one port every call's
        # stream is sent from and named in the SDP ([rtpstream_audio_port]).
        mp = self.media_port = media_port or free_port(span=4)
        args = ["sipp", "-sf", render(scenario, outdir, name, subst or {})]
        if remote:
            args.append(remote)
        p = lambda s: os.path.join(outdir, "%s.%s" % (name, s))
        args += ["-i", LOOP, "-mi", LOOP, "-p", str(self.local_port), "-cp", str(cp),
                 "-mp", str(mp), "-t", "u1", "-nostdin",
                 "-timeout", "%ds" % timeout_s, "-timeout_error",
                 "-trace_stat", "-stf", p("csv"), "-fd", "1",
                 "-trace_err", "-error_file", p("errors"),
                 "-trace_screen", "-screen_file", p("screen"),
                 "-max_recv_loops", "10000", "-max_sched_loops", "10000",
                 "-buff_size", str(16 << 20)]
        if trace_logs:
            args += ["-trace_logs", "-log_file", p("log")]
        if calls is not None:
            args += ["-m", str(calls)]
        if rate is not None:
            args += ["-r", str(rate)]
        if limit is not None:
            args += ["-l", str(limit)]
        args += list(extra)
        self.timeout_s = timeout_s
        self.out = open(p("stdout"), "wb")
        self.proc = spawn(args, stdin=subprocess.DEVNULL, stdout=self.out,
                                     stderr=subprocess.STDOUT, cwd=outdir)
        self.args = args

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc.poll() is None

    def wait(self, timeout=None):
        rusage = None
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout_s + 15)
        while self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.out.close()
        return SippResult(self.name, self.proc.returncode, self._stats(), self.outdir, rusage)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGUSR1)  # SIPp: graceful quit
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
        return self.wait(10)

    def kill(self):
        """Ends SIPp at once (calls in progress are cut); returns its last periodic stats."""
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.wait(10)

    def _stats(self):
        try:
            with open(os.path.join(self.outdir, self.name + ".csv"), newline="") as f:
                rows = list(csv.reader(f, delimiter=";"))
        except OSError:
            return {}
        if len(rows) < 2:
            return {}
        return dict(zip(rows[0], rows[-1]))

    def log_lines(self):
        try:
            with open(os.path.join(self.outdir, self.name + ".log"), errors="replace") as f:
                return f.read().splitlines()
        except OSError:
            return []


class SippFactory:
    def __init__(self, outdir):
        self.outdir = outdir
        self.n = 0

    def start(self, name, scenario, **kw):
        self.n += 1
        return Sipp(self.outdir, "%02d-%s" % (self.n, name), scenario, **kw)

    def run(self, name, scenario, **kw):
        return self.start(name, scenario, **kw).wait()
