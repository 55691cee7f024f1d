"""Start a hookflash server with a generated TOML config (see docs/config.md)."""
import os
import random
import re
import signal
import socket
import subprocess
import threading
import time

import requests

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Provisioned data every test server gets. Passwords are the fixtures' only
# secrets; realms are the accounts' digest realms / SIP domains.
ACME_DID = "+4930123456"
ACCOUNTS = [
    {
        "name": "acme",
        "realm": "acme.local",
        "api_keys": ["hf_test_key_acme"],
        "users": [
            ("201", "secret201", "Alice"),
            ("202", "secret202", "Bob"),
            ("103", "secret103", "Carol"),
            ("104", "secret104", "Dave"),  # provisioned, never registered
            ("105", "secret105", "Eve"),  # SIPp UAS in the load test
        ],
        "numbers": [(ACME_DID, "201")],
        "trunk": True,  # a trunk "carrier" at 127.0.0.1:<trunk_port>
        # OAuth clients (RingCentral dialect): (client_id, client_secret)
        "oauth_apps": [("rc-acme-client", "rc-acme-secret")],
    },
    {
        "name": "beta",
        "realm": "beta.local",
        "api_keys": ["hf_test_key_beta"],
        "users": [("301", "secret301", "Zed")],
        "numbers": [],
        "oauth_apps": [("rc-beta-client", "rc-beta-secret")],
        "trunk": False,  # nothing routes out of this account
    },
]

_port_lock = threading.Lock()
_used_ports = set()


def _worker():
    """(index, count) of this pytest-xdist worker, (0, 1) when run alone. Parallel workers
    get disjoint port blocks so that two test servers never race for one port."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    if not name.startswith("gw") or count <= 1:
        return 0, 1
    return int(name[2:]) % count, count


WORKER, WORKERS = _worker()


def free_port(udp=True, tcp=True, span=1):
    """A port (and the ``span``-1 ports after it) free for UDP and/or TCP on
    127.0.0.1, never handed out twice by this process."""
    with _port_lock:
        for _ in range(2000):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            s.close()
            ports = range(port, port + span)
            if any((p // 1000) % WORKERS != WORKER for p in ports):
                continue  # another worker's block
            if any(p in _used_ports or p > 65535 for p in ports):
                continue
            ok = True
            socks = []
            for p in ports:
                for kind, want in ((socket.SOCK_DGRAM, udp), (socket.SOCK_STREAM, tcp)):
                    if not want:
                        continue
                    t = socket.socket(socket.AF_INET, kind)
                    try:
                        t.bind(("127.0.0.1", p))
                        socks.append(t)
                    except OSError:
                        ok = False
                        t.close()
            for t in socks:
                t.close()
            if ok:
                _used_ports.update(ports)
                return port
        raise RuntimeError("no free port")


_rtp_lock = threading.Lock()
# Server RTP ranges come from 20000-29999, split between parallel workers.
_RTP_BASE = 20000 + WORKER * (10000 // WORKERS)
_RTP_TOP = _RTP_BASE + 10000 // WORKERS
_rtp_next = [_RTP_BASE + 200 * random.randrange(0, (_RTP_TOP - _RTP_BASE) // 200)]


def rtp_range(size=200):
    """A server RTP range unique per server instance (within this worker's share of
    20000-29999)."""
    with _rtp_lock:
        lo = _rtp_next[0]
        _rtp_next[0] = lo + size if lo + 2 * size <= _RTP_TOP else _RTP_BASE
        return lo, lo + size - 1


def toml_str(s):
    return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"') + '"'


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return toml_str(v)


def parse_prometheus(text):
    """Prometheus text format -> {'name{k="v",...}': value} (labels sorted)."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)', line)
        if not m:
            continue
        name, labels_s, value = m.group(1), m.group(3), m.group(4)
        labels = re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', labels_s or "")
        key = name
        if labels:
            key += "{" + ",".join('%s="%s"' % kv for kv in sorted(labels)) + "}"
        try:
            out[key] = float(value)
        except ValueError:
            pass
    return out


class Metrics(dict):
    def series(self, name):
        """[(labels_dict, value)] of every series of ``name``."""
        out = []
        for k, v in self.items():
            n, _, rest = k.partition("{")
            if n != name:
                continue
            labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', rest))
            out.append((labels, v))
        return out

    def value(self, name, **labels):
        """Value of the series with exactly these labels, or None."""
        for lab, v in self.series(name):
            if lab == {k: str(x) for k, x in labels.items()}:
                return v
        return None

    def sum(self, name, **labels):
        """Sum over series whose labels include ``labels``; None if absent."""
        vals = [
            v
            for lab, v in self.series(name)
            if all(lab.get(k) == str(x) for k, x in labels.items())
        ]
        return sum(vals) if vals else None


class Server:
    def __init__(self, binary, workdir, artifacts, digest_algorithms=("SHA-256", "MD5"),
                 ring_timeout_secs=30, rtp_inactivity_secs=30, env=None, extra_sip=None,
                 registrar=None, trunk_credentials=None, account_extra=None, user_extra=None,
                 security=None, shutdown_grace_secs=0, applications=None, oauth=None,
                 extra_users=None, tls=None, http_extra=None, database_url=None, cluster=None):
        self.binary = binary
        self.workdir = workdir
        self.artifacts = artifacts
        os.makedirs(workdir, exist_ok=True)
        os.makedirs(artifacts, exist_ok=True)
        self.sip_port = free_port(udp=True, tcp=True)
        self.http_port = free_port(udp=False, tcp=True)
        self.trunk_port = free_port(udp=True, tcp=True)
        # tls={"cert": PEM path, "key": PEM path}: SIP over TLS on tls_port and HTTPS.
        self.tls = dict(tls) if tls else None
        self.tls_port = free_port(udp=False, tcp=True) if tls else None
        self.rtp_min, self.rtp_max = rtp_range()
        self.http = "%s://127.0.0.1:%d" % ("https" if tls else "http", self.http_port)
        self.digest_algorithms = list(digest_algorithms)
        self.ring_timeout_secs = ring_timeout_secs
        self.rtp_inactivity_secs = rtp_inactivity_secs
        self.extra_sip = extra_sip or {}
        # Extra [http] keys (e.g. push_answer_timeout_ms).
        self.http_extra = dict(http_extra or {})
        # [registrar] keys (min_expires, max_expires, default_expires) overriding 60/3600/3600
        self.registrar = dict(min_expires=60, max_expires=3600, default_expires=3600)
        self.registrar.update(registrar or {})
        # (username, password) for the "carrier" trunk's outbound digest auth; None: no credentials
        self.trunk_credentials = trunk_credentials
        self.env_extra = env or {}
        # Extra keys per account ({"acme": {"dial": [...], "max_outbound_calls": 2}}), per user
        # by extension ({"202": {"dial": ["internal"]}}) and a [security] table ({} or None:
        # none written, the server's defaults apply).
        self.account_extra = {k: dict(v) for k, v in (account_extra or {}).items()}
        self.user_extra = {str(k): dict(v) for k, v in (user_extra or {}).items()}
        self.security = dict(security or {})
        # [oauth] keys (token lifetimes of the RingCentral dialect); None: the defaults.
        self.oauth = dict(oauth or {})
        # Applications of acme: [{"name", "call_hook", "call_status_hook"?, "fallback"?,
        # "numbers": [...]}], written as [[accounts.applications]].
        self.applications = [dict(a) for a in (applications or [])]
        # Tests stop their servers with calls possibly still up: no drain unless asked for.
        self.shutdown_grace_secs = shutdown_grace_secs
        # Users of acme beyond 201/202 for this server only: [(ext, password, name)].
        accounts = [dict(a, users=list(a["users"])) for a in ACCOUNTS]
        accounts[0]["users"].extend(extra_users or [])
        unknown = set(self.account_extra) - {a["name"] for a in accounts}
        unknown |= set(self.user_extra) - {u[0] for a in accounts for u in a["users"]}
        if unknown:
            raise ValueError("account_extra/user_extra name nothing provisioned: %s" % sorted(unknown))
        self.accounts = accounts
        self.users = {}
        self._realm = {}
        for a in accounts:
            for ext, pw, _ in a["users"]:
                self.users[ext] = pw
                self._realm[ext] = a["realm"]
        self.config_path = os.path.join(workdir, "hookflash.toml")
        self.data_dir = os.path.join(workdir, "data")
        # PostgreSQL instead of SQLite in data_dir (recordings and voicemail stay there).
        self.database_url = database_url
        # [cluster] keys (node_id, heartbeat_secs, node_dead_after_secs); None: not written.
        self.cluster = dict(cluster or {})
        self.log_path = os.path.join(artifacts, "server.log")
        self.proc = None
        self._log = None
        self.started_once = False
        self.write_config()

    # ------------------------------------------------------------- config
    def realm_of(self, ext):
        return self._realm[ext]

    def uri(self, user, transport="udp"):
        """Request-URI a phone dials to reach ``user`` through the server."""
        if transport == "tls":
            return "sip:%s@127.0.0.1:%d;transport=tls" % (user, self.tls_port)
        t = ";transport=tcp" if transport == "tcp" else ""
        return "sip:%s@127.0.0.1:%d%s" % (user, self.sip_port, t)

    def write_config(self):
        L = []
        L.append("data_dir = %s" % toml_str(self.data_dir))
        if self.database_url:
            L.append("database_url = %s" % toml_str(self.database_url))
        L.append("allow_public_bind = false")
        L.append("demo_account = false")
        L.append("shutdown_grace_secs = %d" % self.shutdown_grace_secs)
        L.append("")
        L.append("[sip]")
        L.append('udp = "127.0.0.1:%d"' % self.sip_port)
        L.append('tcp = "127.0.0.1:%d"' % self.sip_port)
        L.append('advertised_host = "127.0.0.1"')
        L.append("ring_timeout_secs = %d" % self.ring_timeout_secs)
        L.append("digest_algorithms = %s" % toml_value(self.digest_algorithms))
        if self.tls:
            L.append('tls = "127.0.0.1:%d"' % self.tls_port)
            L.append("tls_cert = %s" % toml_str(self.tls["cert"]))
            L.append("tls_key = %s" % toml_str(self.tls["key"]))
        for k, v in self.extra_sip.items():
            L.append("%s = %s" % (k, toml_value(v)))
        L.append("")
        L.append("[registrar]")
        for k in ("min_expires", "max_expires", "default_expires"):
            L.append("%s = %d" % (k, self.registrar[k]))
        L.append("")
        L.append("[http]")
        L.append('listen = "127.0.0.1:%d"' % self.http_port)
        if self.tls:
            L.append("tls_cert = %s" % toml_str(self.tls["cert"]))
            L.append("tls_key = %s" % toml_str(self.tls["key"]))
        for k, v in self.http_extra.items():
            L.append("%s = %s" % (k, toml_value(v)))
        L.append("")
        L.append("[rtp]")
        L.append('bind_ip = "127.0.0.1"')
        L.append('advertised_ip = "127.0.0.1"')
        L.append("port_min = %d" % self.rtp_min)
        L.append("port_max = %d" % self.rtp_max)
        L.append("inactivity_timeout_secs = %d" % self.rtp_inactivity_secs)
        if self.security:
            L.append("")
            L.append("[security]")
            for k, v in self.security.items():
                L.append("%s = %s" % (k, toml_value(v)))
        if self.cluster:
            L.append("")
            L.append("[cluster]")
            for k, v in self.cluster.items():
                L.append("%s = %s" % (k, toml_value(v)))
        if self.oauth:
            L.append("")
            L.append("[oauth]")
            for k, v in self.oauth.items():
                L.append("%s = %s" % (k, toml_value(v)))
        for a in self.accounts:
            L.append("")
            L.append("[[accounts]]")
            L.append("name = %s" % toml_str(a["name"]))
            L.append("realm = %s" % toml_str(a["realm"]))
            L.append("api_keys = %s" % toml_value(a["api_keys"]))
            for k, v in self.account_extra.get(a["name"], {}).items():
                L.append("%s = %s" % (k, toml_value(v)))
            for ext, pw, dn in a["users"]:
                L.append("")
                L.append("  [[accounts.users]]")
                L.append("  extension = %s" % toml_str(ext))
                L.append("  password = %s" % toml_str(pw))
                L.append("  display_name = %s" % toml_str(dn))
                for k, v in self.user_extra.get(ext, {}).items():
                    L.append("  %s = %s" % (k, toml_value(v)))
            for num, user in a["numbers"]:
                L.append("")
                L.append("  [[accounts.numbers]]")
                L.append("  number = %s" % toml_str(num))
                L.append("  user = %s" % toml_str(user))
            for client_id, secret in a.get("oauth_apps", []):
                L.append("")
                L.append("  [[accounts.oauth_apps]]")
                L.append("  client_id = %s" % toml_str(client_id))
                L.append("  client_secret = %s" % toml_str(secret))
            if a["name"] == "acme":
                for app in self.applications:
                    L.append("")
                    L.append("  [[accounts.applications]]")
                    for k, v in app.items():
                        L.append("  %s = %s" % (k, toml_value(v)))
            if a["trunk"]:
                L.append("")
                L.append("  [[accounts.trunks]]")
                L.append('  name = "carrier"')
                L.append('  host = "127.0.0.1"')
                L.append("  port = %d" % self.trunk_port)
                L.append('  transport = "udp"')
                if self.trunk_credentials:
                    L.append("  username = %s" % toml_str(self.trunk_credentials[0]))
                    L.append("  password = %s" % toml_str(self.trunk_credentials[1]))
        with open(self.config_path, "w") as f:
            f.write("\n".join(L) + "\n")

    # ------------------------------------------------------------ process
    def env(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKFLASH_")}
        env["RUST_LOG"] = os.environ.get("HOOKFLASH_TEST_LOG", "info,hookflash=debug")
        env["RUST_BACKTRACE"] = "1"
        env.update(self.env_extra)
        return env

    def start(self, timeout=20.0):
        # free_port() only knows its own process's ports: between picking a port and the
        # server binding it (after opening the database and provisioning: ~2 s on a loaded box
        # with PostgreSQL) another process (a parallel test run, a phone, a benchmark) may take
        # it. A first start that fails that way picks a new port for what it could not bind
        # and tries again; a restart keeps its ports (the phones registered to them).
        for attempt in range(3):
            try:
                return self._start_once(timeout)
            except AssertionError:
                if self._log:
                    self._log.close()
                    self._log = None
                if self.started_once or attempt == 2 or not self._repick_taken_port():
                    raise

    def _repick_taken_port(self):
        """After a failed start: the port the server found taken, replaced in the config by a
        new free one; False if the log names no such port."""
        m = re.search(r"cannot listen for (SIP|HTTP) on (?:\w+ )?127\.0\.0\.1:(\d+): "
                      r"Address already in use", self.log_tail())
        if not m:
            return False
        old = int(m.group(2))
        attr = next((a for a in ("sip_port", "http_port", "tls_port")
                     if getattr(self, a) == old), None)
        if attr is None:
            return False
        new = free_port(udp=attr == "sip_port", tcp=True)
        setattr(self, attr, new)
        if attr == "http_port":
            self.http = "%s://127.0.0.1:%d" % ("https" if self.tls else "http", self.http_port)
        # The config file as written (a test may have edited it): only the listen addresses
        # on that port change.
        with open(self.config_path) as f:
            text = f.read()
        with open(self.config_path, "w") as f:
            f.write(text.replace('"127.0.0.1:%d"' % old, '"127.0.0.1:%d"' % new))
        with open(self.log_path, "ab") as f:
            f.write(b"\n--- hfserver: port %d was taken, starting again on %d\n\n" % (old, new))
        return True

    def _start_once(self, timeout):
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [self.binary, "serve", "--config", self.config_path],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.workdir,
            env=self.env(),
        )
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    "hookflash exited with %s during startup; log tail:\n%s"
                    % (self.proc.returncode, self.log_tail())
                )
            try:
                r = requests.get(self.http + "/healthz", timeout=1, verify=self.ca_verify())
                if r.status_code == 200:
                    self.started_once = True
                    return self
                last = r.status_code
            except requests.RequestException as e:
                last = e
            time.sleep(0.1)
        raise AssertionError(
            "hookflash /healthz not 200 within %.0fs (last: %s); log tail:\n%s"
            % (timeout, last, self.log_tail())
        )

    def ca_verify(self):
        """requests' `verify` for this server: its own self-signed certificate over HTTPS."""
        return self.tls["cert"] if self.tls else True

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=10.0):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        rc = self.proc.returncode
        if self._log:
            self._log.close()
            self._log = None
        return rc

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        if self._log:
            self._log.close()
            self._log = None

    def restart(self):
        self.stop()
        return self.start()

    def log_tail(self, n=60):
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
            return "\n".join(lines[-n:])
        except OSError:
            return "(no log)"

    # --------------------------------------------------------------- HTTP
    def healthz(self):
        return requests.get(self.http + "/healthz", timeout=3, verify=self.ca_verify()).status_code

    def metrics(self):
        r = requests.get(self.http + "/metrics", timeout=5, verify=self.ca_verify())
        assert r.status_code == 200, "GET /metrics -> %s" % r.status_code
        return Metrics(parse_prometheus(r.text))

    def wait_metric(self, name, expected, timeout=10.0, **labels):
        """Poll /metrics until the series equals ``expected``; returns the
        last Metrics. A missing series counts as a mismatch."""
        deadline = time.monotonic() + timeout
        while True:
            m = self.metrics()
            v = m.value(name, **labels)
            if v is not None and v == expected:
                return m
            if time.monotonic() >= deadline:
                raise AssertionError(
                    "metric %s%s = %s, expected %s (after %.0fs)"
                    % (name, labels or "", v, expected, timeout)
                )
            time.sleep(0.2)

    # ---------------------------------------------------------------- CLI
    def cli(self, *args, timeout=30):
        return subprocess.run(
            [self.binary] + list(args) + ["--config", self.config_path],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.workdir,
            env=self.env(),
        )
