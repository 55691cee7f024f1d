"""Run SIPp (Debian sip-tester 3.6.1) with explicit control/media ports,
bounded by -timeout/-timeout_error, traces into the test's artifacts dir."""
import csv
import os
import re
import subprocess
import time

from hfserver import free_port

HERE = os.path.dirname(os.path.abspath(__file__))
SCENARIOS = os.path.join(os.path.dirname(HERE), "sipp")
G711A_PCAP = "/usr/share/sip-tester/g711a.pcap"

# SIPp exit codes
OK, SOME_FAILED, STOPPED, TIMED_OUT = 0, 1, 97, 255


def render(template, artifacts, name, subst):
    """Copy a scenario with {{KEY}} placeholders substituted into artifacts."""
    with open(os.path.join(SCENARIOS, template)) as f:
        text = f.read()
    for k, v in subst.items():
        text = text.replace("{{%s}}" % k, str(v))
    left = re.findall(r"\{\{[A-Z_]+\}\}", text)
    if left:
        raise ValueError("%s: unsubstituted %s" % (template, sorted(set(left))))
    path = os.path.join(artifacts, name + ".xml")
    with open(path, "w") as f:
        f.write(text)
    return path


class SippResult:
    def __init__(self, name, rc, stats, artifacts):
        self.name = name
        self.rc = rc
        self.stats = stats
        self.artifacts = artifacts

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

    def file(self, suffix):
        return os.path.join(self.artifacts, "%s.%s" % (self.name, suffix))

    def read(self, suffix):
        try:
            with open(self.file(suffix), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def logs(self):
        """Lines written by <log message=...> actions."""
        return self.read("log").splitlines()

    def summary(self):
        return (
            "sipp %s: rc=%s created=%d ok=%d failed=%d retrans=%d\nerrors:\n%s\nscreen tail:\n%s"
            % (
                self.name,
                self.rc,
                self.created,
                self.successful,
                self.failed,
                self.retransmissions,
                self.read("errors")[-3000:],
                self.read("screen")[-2500:],
            )
        )

    def __repr__(self):
        return "SippResult(%s rc=%s ok=%d failed=%d)" % (
            self.name, self.rc, self.successful, self.failed)


class Sipp:
    """One SIPp process. ``scenario`` is a file in tests/sipp/ (rendered with
    ``subst``) or a built-in name prefixed with 'sn:' (e.g. 'sn:uac')."""

    def __init__(self, artifacts, name, scenario, remote=None, local_port=None,
                 subst=None, calls=None, rate=None, limit=None, timeout_s=60,
                 rtp_echo=False, transport="u1", extra=()):
        self.artifacts = artifacts
        self.name = name
        self.local_port = local_port or free_port(udp=True, tcp=True)
        self.cp = free_port(udp=True, tcp=False)
        self.mp = free_port(udp=True, tcp=False, span=4)
        args = ["sipp"]
        if scenario.startswith("sn:"):
            args += ["-sn", scenario[3:]]
        else:
            args += ["-sf", render(scenario, artifacts, name, subst or {})]
        if remote:
            args.append(remote)
        args += [
            "-i", "127.0.0.1", "-mi", "127.0.0.1",
            "-p", str(self.local_port), "-cp", str(self.cp), "-mp", str(self.mp),
            "-t", transport, "-nostdin",
            "-timeout", "%ds" % timeout_s, "-timeout_error",
            "-trace_stat", "-stf", self.path("csv"), "-fd", "1",
            "-trace_err", "-error_file", self.path("errors"),
            "-trace_screen", "-screen_file", self.path("screen"),
            "-trace_logs", "-log_file", self.path("log"),
            "-trace_msg", "-message_file", self.path("messages"),
            "-max_recv_loops", "1000",
        ]
        if calls is not None:
            args += ["-m", str(calls)]
        if rate is not None:
            args += ["-r", str(rate)]
        if limit is not None:
            args += ["-l", str(limit)]
        if rtp_echo:
            args.append("-rtp_echo")
        args += list(extra)
        self.args = args
        self.timeout_s = timeout_s
        self.out = open(self.path("stdout"), "wb")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self.out,
                                     stderr=subprocess.STDOUT, cwd=artifacts)

    def path(self, suffix):
        return os.path.join(self.artifacts, "%s.%s" % (self.name, suffix))

    def wait(self, timeout=None):
        try:
            self.proc.wait(timeout if timeout is not None else self.timeout_s + 15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.out.close()
        return SippResult(self.name, self.proc.returncode, self._stats(), self.artifacts)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.wait(10)

    def _stats(self):
        try:
            with open(self.path("csv"), newline="") as f:
                rows = list(csv.reader(f, delimiter=";"))
        except OSError:
            return {}
        if len(rows) < 2:
            return {}
        header = rows[0]
        last = rows[-1]
        return dict(zip(header, last))


def run(artifacts, name, scenario, **kw):
    """Run SIPp to completion; returns a SippResult."""
    s = Sipp(artifacts, name, scenario, **kw)
    return s.wait()


def wait_listening(proc_sipp, delay=0.5):
    """SIPp UAS has no readiness signal; give it a moment to bind."""
    time.sleep(delay)
    if proc_sipp.proc.poll() is not None:
        raise AssertionError("sipp %s exited early (rc=%s):\n%s" % (
            proc_sipp.name, proc_sipp.proc.returncode,
            open(proc_sipp.path("stdout"), errors="replace").read()[-2000:]))
