"""Test-side wrapper around phone_agent.py: one subprocess per phone."""
import json
import os
import random
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
AGENT = os.path.join(HERE, "phone_agent.py")

# Phones' own RTP ports live in 30000-32700: below Linux's ephemeral range and
# above the servers' RTP ranges (20000-29999, see conftest.py).
_rtp_lock = threading.Lock()
_rtp_next = [30000 + 64 * random.randrange(0, 40)]


def _next_rtp_block():
    with _rtp_lock:
        port = _rtp_next[0]
        _rtp_next[0] = port + 64 if port + 128 < 32700 else 30000
        return port


class PhoneError(AssertionError):
    pass


class Phone:
    def __init__(self, name, workdir, codecs="PCMU,PCMA", log_level=4, drain=False):
        self.name = name
        self.workdir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.log_path = os.path.join(workdir, "phone-%s.log" % name)
        self.events = []
        self.cond = threading.Condition()
        self.next_id = 1
        self.closed = False
        self.rtp_port = _next_rtp_block()
        r, w = os.pipe()
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                AGENT,
                "--name",
                name,
                "--event-fd",
                str(w),
                "--codecs",
                codecs,
                "--rtp-port",
                str(self.rtp_port),
                "--log-level",
                str(log_level),
            ] + (["--drain"] if drain else []),
            stdin=subprocess.PIPE,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            pass_fds=(w,),
            cwd=workdir,
        )
        os.close(w)
        self._rfd = r
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.wait_for("ready", timeout=15)

    # ------------------------------------------------------------ plumbing
    def _read(self):
        buf = b""
        while True:
            try:
                data = os.read(self._rfd, 65536)
            except OSError:
                break
            if not data:
                break
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                with self.cond:
                    self.events.append(ev)
                    self.cond.notify_all()
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def mark(self):
        """Index to pass as ``since`` to only look at events after now."""
        with self.cond:
            return len(self.events)

    def find(self, event, pred=None, since=0):
        with self.cond:
            return [
                e
                for e in self.events[since:]
                if e.get("event") == event and (pred is None or pred(e))
            ]

    def wait_for(self, event, pred=None, timeout=10.0, since=0):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for e in self.events[since:]:
                    if e.get("event") == event and (pred is None or pred(e)):
                        return e
                left = deadline - time.monotonic()
                if left <= 0 or self.closed:
                    break
                self.cond.wait(min(left, 0.5))
        tail = [
            {k: v for k, v in e.items() if k != "trace"} for e in self.events[-12:]
        ]
        raise PhoneError(
            "phone %s: no %r event matching within %.1fs (exited=%s); last events: %s"
            % (self.name, event, timeout, self.proc.poll(), json.dumps(tail, indent=1))
        )

    def cmd(self, cmd, timeout=10.0, **args):
        cid = self.next_id
        self.next_id += 1
        args["cmd"] = cmd
        args["id"] = cid
        if self.proc.poll() is not None:
            raise PhoneError("phone %s exited (%s)" % (self.name, self.proc.returncode))
        self.proc.stdin.write((json.dumps(args) + "\n").encode())
        self.proc.stdin.flush()
        ack = self.wait_for("ack", lambda e: e.get("id") == cid, timeout=timeout)
        if not ack.get("ok"):
            raise PhoneError("phone %s: %s failed: %s" % (self.name, cmd, ack.get("error")))
        return ack.get("result")

    # --------------------------------------------------------- convenience
    def register(self, server, ext, transport="udp", password=None, realm=None,
                 local_port=0, expires=300, wait=True, timeout=10.0, session_expires=None,
                 srtp=None):
        """Register ``ext`` at ``server`` (a conftest Server). Returns the
        final reg_state event (whatever its code) when wait=True."""
        if password is None:
            password = server.users[ext]
        if realm is None:
            realm = server.realm_of(ext)
        since = self.mark()
        res = self.cmd(
            "register",
            server="127.0.0.1:%d" % (server.tls_port if transport == "tls" else server.sip_port),
            user=ext,
            password=password,
            realm=realm,
            transport=transport,
            local_port=local_port,
            expires=expires,
            session_expires=session_expires,
            srtp=srtp,
        )
        self.transport = transport
        self.local = (res or {}).get("local", "")  # our SIP address, as in our Contact
        if not wait:
            return None
        return self.wait_for(
            "reg_state", lambda e: e["code"] >= 200, timeout=timeout, since=since
        )

    def bind(self, local_port, user="carrier", transport="udp", domain="127.0.0.1"):
        """A bare account on a fixed local port (trunk peer / direct peer)."""
        self.transport = transport
        return self.cmd(
            "register",
            server=domain,
            user=user,
            realm="",
            transport=transport,
            local_port=local_port,
            no_register=True,
        )

    def call(self, uri):
        return self.cmd("call", uri=uri)["call"]

    def wait_state(self, state, call=None, timeout=10.0, since=0):
        def pred(e):
            return e["state"] == state and (call is None or e["call"] == call)

        return self.wait_for("call_state", pred, timeout=timeout, since=since)

    def wait_incoming(self, timeout=10.0, since=0):
        return self.wait_for("incoming", timeout=timeout, since=since)

    def wait_media(self, pred=None, call=None, timeout=10.0, since=0):
        def p(e):
            return (call is None or e["call"] == call) and (pred is None or pred(e))

        return self.wait_for("media_state", p, timeout=timeout, since=since)

    def states(self, call=None):
        return [
            e["state"]
            for e in self.find("call_state")
            if call is None or e["call"] == call
        ]

    def end_status(self, call=None, timeout=10.0):
        """SIP status the call ended with (waits for DISCONNECTED)."""
        return self.wait_state("DISCONNECTED", call=call, timeout=timeout)["last_status"]

    def answer(self, code=200, call=None):
        return self.cmd("answer", code=code, call=call)

    def auto_answer(self, code=200, delay_ms=0):
        return self.cmd("auto_answer", code=code, delay_ms=delay_ms)

    def intercom(self, enabled=True):
        """The phone's auto-answer setting for intercom calls: an INVITE carrying an
        auto-answer header (Call-Info answer-after, Alert-Info alert-autoanswer, Answer-Mode
        Auto) is answered at once; other calls ring as usual."""
        return self.cmd("intercom", enabled=enabled)

    def hangup(self, call=None, code=None):
        return self.cmd("hangup", call=call, code=code)

    def hold(self, call=None):
        return self.cmd("hold", call=call)

    def unhold(self, call=None):
        return self.cmd("unhold", call=call)

    def play(self, wav, loop=True):
        return self.cmd("play", wav=wav, loop=loop)

    def record(self, wav):
        return self.cmd("record", wav=wav)

    def stop_record(self):
        return self.cmd("stop_record")

    def xfer(self, uri, call=None):
        return self.cmd("xfer", uri=uri, call=call)

    def xfer_replaces(self, other, call=None):
        return self.cmd("xfer_replaces", other=other, call=call)

    def dtmf(self, digits, call=None):
        return self.cmd("dtmf", digits=digits, call=call)

    def request_quit(self):
        """Ask the agent to hang up, unregister and exit (does not wait)."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(b'{"cmd": "quit"}\n')
                self.proc.stdin.flush()
                self.proc.stdin.close()
            except (OSError, ValueError):
                pass

    def close(self, timeout=5.0):
        self.request_quit()
        if self.proc.poll() is None:
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()
        try:
            os.close(self._rfd)
        except OSError:
            pass


class PhoneFactory:
    def __init__(self, workdir):
        self.workdir = workdir
        self.phones = []

    def __call__(self, name, **kw):
        p = Phone(name, self.workdir, **kw)
        self.phones.append(p)
        return p

    def close_all(self):
        for p in self.phones:  # all phones wind down in parallel
            p.request_quit()
        for p in self.phones:
            try:
                p.close()
            except Exception:
                p.proc.kill()
