"""A minimal raw SIP client over UDP/TCP on 127.0.0.1: build requests, read
responses, compute digest answers (MD5, SHA-256, -sess, qop=auth). Used to
look at exactly what the server says (challenges, status codes) and to send
torture messages that no real phone would produce."""
import hashlib
import os
import re
import socket
import threading
import time
import uuid

COMPACT = {
    "v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact",
    "l": "content-length", "c": "content-type", "k": "supported", "s": "subject",
    "e": "content-encoding",
}


def new_branch():
    return "z9hG4bK-" + uuid.uuid4().hex[:16]


def new_tag():
    return uuid.uuid4().hex[:10]


class Message:
    def __init__(self, raw):
        self.raw = raw
        head, _, body = raw.partition(b"\r\n\r\n")
        lines = head.decode("utf-8", "replace").split("\r\n")
        self.first = lines[0]
        self.headers = []  # [(lower name, value)] with folded lines joined
        for line in lines[1:]:
            if line[:1] in (" ", "\t") and self.headers:
                n, v = self.headers[-1]
                self.headers[-1] = (n, v + " " + line.strip())
                continue
            if ":" in line:
                n, v = line.split(":", 1)
                n = n.strip().lower()
                self.headers.append((COMPACT.get(n, n), v.strip()))
        self.body = body
        parts = self.first.split(" ", 2)
        self.is_response = self.first.startswith("SIP/")
        self.status = int(parts[1]) if self.is_response and len(parts) > 1 and parts[1].isdigit() else 0
        self.reason = parts[2] if self.is_response and len(parts) > 2 else ""
        self.method = parts[0] if not self.is_response else ""

    def all(self, name):
        name = name.lower()
        return [v for n, v in self.headers if n == name]

    def get(self, name, default=""):
        v = self.all(name)
        return v[0] if v else default

    @property
    def cseq_method(self):
        v = self.get("cseq").split()
        return v[1] if len(v) > 1 else ""

    def __repr__(self):
        return "<%s>" % self.first


def split_stream(buf):
    """Split complete messages off a TCP byte buffer (Content-Length framing).
    Returns (messages, rest)."""
    out = []
    while True:
        while buf.startswith(b"\r\n"):
            buf = buf[2:]  # keep-alive CRLFs
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return out, buf
        head = buf[:end].decode("utf-8", "replace")
        m = re.search(r"(?im)^(?:content-length|l)[ \t]*:[ \t]*(\d+)", head)
        clen = int(m.group(1)) if m else 0
        total = end + 4 + clen
        if len(buf) < total:
            return out, buf
        out.append(buf[:total])
        buf = buf[total:]


class Client:
    """One socket to the server. UDP: bound to an ephemeral local port.
    TCP: connected to the server's SIP port. ``local_host`` (any 127.x.y.z) and
    ``local_port`` choose the socket's own address (default 127.0.0.1, ephemeral)."""

    def __init__(self, server_port, transport="udp", host="127.0.0.1", local_host="127.0.0.1",
                 local_port=0):
        self.server = (host, server_port)
        self.transport = transport.lower()
        self.local_host = local_host
        if self.transport == "udp":
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind((local_host, local_port))
        else:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.settimeout(5)
            if local_port:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind((local_host, local_port))
            self.sock.connect(self.server)
        self.local_port = self.sock.getsockname()[1]
        self.buf = b""
        self.closed_by_peer = False
        self.received = []

    @property
    def T(self):
        return self.transport.upper()

    @property
    def via(self):
        return "%s:%d" % (self.local_host, self.local_port)

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        if self.transport == "udp":
            self.sock.sendto(data, self.server)
        else:
            self.sock.sendall(data)

    def recv(self, timeout=2.0):
        """Next message (Message) or None on timeout / connection closed."""
        deadline = time.monotonic() + timeout
        while True:
            if self.transport == "tcp":
                msgs, self.buf = split_stream(self.buf)
                if msgs:
                    self.buf = b"".join(msgs[1:]) + self.buf
                    m = Message(msgs[0])
                    self.received.append(m)
                    return m
            left = deadline - time.monotonic()
            if left <= 0 or self.closed_by_peer:
                return None
            self.sock.settimeout(left)
            try:
                if self.transport == "udp":
                    data, _ = self.sock.recvfrom(70000)
                    m = Message(data)
                    self.received.append(m)
                    return m
                data = self.sock.recv(65536)
                if not data:
                    self.closed_by_peer = True
                    continue
                self.buf += data
            except socket.timeout:
                return None
            except OSError:
                self.closed_by_peer = True
                return None

    def final(self, timeout=3.0, cseq_method=None):
        """Wait for a final (>=200) response; returns it or None."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            m = self.recv(left)
            if m is None:
                return None
            if m.is_response and m.status >= 200:
                if cseq_method is None or m.cseq_method == cseq_method:
                    return m

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    # ------------------------------------------------------------ builders
    def request(self, method, ruri, from_uri, to_uri, call_id=None, cseq=1,
                branch=None, from_tag=None, to_tag=None, headers=(), body=b"",
                content_type=None, contact=None, expires=None, via=None):
        """``via``: the whole top Via value instead of ours (``{branch}`` is filled in)."""
        branch = branch or new_branch()
        from_tag = from_tag or new_tag()
        call_id = call_id or uuid.uuid4().hex
        if isinstance(body, str):
            body = body.encode()
        L = [
            "%s %s SIP/2.0" % (method, ruri),
            "Via: " + (via.replace("{branch}", branch) if via else
                       "SIP/2.0/%s %s;branch=%s;rport" % (self.T, self.via, branch)),
            "Max-Forwards: 70",
            "From: <%s>;tag=%s" % (from_uri, from_tag),
            "To: <%s>%s" % (to_uri, ";tag=" + to_tag if to_tag else ""),
            "Call-ID: %s" % call_id,
            "CSeq: %d %s" % (cseq, method),
        ]
        if contact:
            L.append("Contact: %s" % contact)
        if expires is not None:
            L.append("Expires: %d" % expires)
        L += list(headers)
        if content_type:
            L.append("Content-Type: %s" % content_type)
        L.append("Content-Length: %d" % len(body))
        data = ("\r\n".join(L) + "\r\n\r\n").encode() + body
        return Request(data, method, ruri, from_uri, to_uri, call_id, cseq, branch, from_tag)

    def ack_for(self, req, resp):
        """ACK for a non-2xx final response to ``req`` (same branch)."""
        to = resp.get("to")
        via = Message(req.data).get("via") or "SIP/2.0/%s %s;branch=%s;rport" % (
            self.T, self.via, req.branch)  # the INVITE's own top Via (the same transaction)
        L = [
            "ACK %s SIP/2.0" % req.ruri,
            "Via: %s" % via,
            "Max-Forwards: 70",
            "From: <%s>;tag=%s" % (req.from_uri, req.from_tag),
            "To: %s" % to,
            "Call-ID: %s" % req.call_id,
            "CSeq: %d ACK" % req.cseq,
            "Content-Length: 0",
        ]
        return ("\r\n".join(L) + "\r\n\r\n").encode()

    def options(self, ruri=None, timeout=3.0, retransmit=False):
        """OPTIONS; with ``retransmit`` over UDP it is resent as a phone would (RFC 3261
        Timer E: 0.5 s, then doubling) until a final response or the timeout."""
        ruri = ruri or "sip:%s:%d" % self.server
        req = self.request("OPTIONS", ruri, "sip:probe@127.0.0.1", ruri)
        self.send(req.data)
        if not retransmit:
            return self.final(timeout, cseq_method="OPTIONS")
        deadline = time.monotonic() + timeout
        interval = 0.5
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            m = self.final(min(interval, left), cseq_method="OPTIONS")
            if m is not None:
                return m
            if deadline - time.monotonic() > 0:
                self.send(req.data)
            interval *= 2


class Request:
    def __init__(self, data, method, ruri, from_uri, to_uri, call_id, cseq, branch, from_tag):
        self.data = data
        self.method = method
        self.ruri = ruri
        self.from_uri = from_uri
        self.to_uri = to_uri
        self.call_id = call_id
        self.cseq = cseq
        self.branch = branch
        self.from_tag = from_tag


# ------------------------------------------------------------------ digest
def parse_challenge(value):
    """'Digest realm="x", nonce="y", algorithm=MD5' -> {'realm': 'x', ...}"""
    scheme, _, rest = value.strip().partition(" ")
    params = {"scheme": scheme}
    for m in re.finditer(r'([a-zA-Z0-9_-]+)\s*=\s*("((?:[^"\\]|\\.)*)"|[^,\s]+)', rest):
        params[m.group(1).lower()] = m.group(3) if m.group(3) is not None else m.group(2)
    params.setdefault("algorithm", "MD5")
    return params


def challenges(resp):
    hdr = "www-authenticate" if resp.status == 401 else "proxy-authenticate"
    return [parse_challenge(v) for v in resp.all(hdr)]


def _h(algorithm, s):
    base = algorithm.upper().replace("-SESS", "")
    if base == "MD5":
        return hashlib.md5(s.encode()).hexdigest()
    if base == "SHA-256":
        return hashlib.sha256(s.encode()).hexdigest()
    if base == "SHA-512-256":
        return hashlib.new("sha512_256", s.encode()).hexdigest()
    raise ValueError("unsupported digest algorithm %s" % algorithm)


def digest_authorization(chal, method, uri, username, password, nc=1, cnonce=None):
    alg = chal.get("algorithm", "MD5")
    realm, nonce = chal["realm"], chal["nonce"]
    cnonce = cnonce or os.urandom(8).hex()
    ha1 = _h(alg, "%s:%s:%s" % (username, realm, password))
    if alg.upper().endswith("-SESS"):
        ha1 = _h(alg, "%s:%s:%s" % (ha1, nonce, cnonce))
    ha2 = _h(alg, "%s:%s" % (method, uri))
    qops = [q.strip() for q in chal.get("qop", "").split(",") if q.strip()]
    parts = [
        'username="%s"' % username,
        'realm="%s"' % realm,
        'nonce="%s"' % nonce,
        'uri="%s"' % uri,
        "algorithm=%s" % alg,
    ]
    if "auth" in qops:
        ncs = "%08x" % nc
        resp = _h(alg, "%s:%s:%s:%s:auth:%s" % (ha1, nonce, ncs, cnonce, ha2))
        parts += ['response="%s"' % resp, "qop=auth", "nc=%s" % ncs, 'cnonce="%s"' % cnonce]
    else:
        resp = _h(alg, "%s:%s:%s" % (ha1, nonce, ha2))
        parts.append('response="%s"' % resp)
    if "opaque" in chal:
        parts.append('opaque="%s"' % chal["opaque"])
    return "Digest " + ", ".join(parts)


def pick(chals, algorithm):
    for c in chals:
        if c.get("algorithm", "MD5").upper() == algorithm.upper():
            return c
    return None


def register(client, user, password, realm, algorithm="MD5", expires=300, contact=None):
    """REGISTER user@realm; answers the challenge of ``algorithm``.
    Returns (first_response, final_response)."""
    ruri = "sip:%s:%d" % client.server
    aor = "sip:%s@%s" % (user, realm)
    contact = contact or "<sip:%s@%s;transport=%s>" % (user, client.via, client.transport)
    call_id = uuid.uuid4().hex
    tag = new_tag()
    r1 = client.request("REGISTER", ruri, aor, aor, call_id=call_id, cseq=1, from_tag=tag,
                        contact=contact, expires=expires)
    client.send(r1.data)
    first = client.final(3.0, "REGISTER")
    if first is None or first.status not in (401, 407):
        return first, first
    chal = pick(challenges(first), algorithm)
    if chal is None:
        return first, None
    hdr = "Authorization" if first.status == 401 else "Proxy-Authorization"
    auth = digest_authorization(chal, "REGISTER", ruri, user, password)
    r2 = client.request("REGISTER", ruri, aor, aor, call_id=call_id, cseq=2, from_tag=tag,
                        contact=contact, expires=expires, headers=["%s: %s" % (hdr, auth)])
    client.send(r2.data)
    return first, client.final(3.0, "REGISTER")


def invite(client, user, password, realm, target_ruri, body, content_type="application/sdp",
           algorithm="MD5", timeout=5.0):
    """INVITE with digest answer to a 401/407. Returns the list of final
    responses received (first attempt, then authenticated attempt). ACKs
    every non-2xx final response; a 2xx is ACKed and BYEd."""
    aor = "sip:%s@%s" % (user, realm)
    call_id = uuid.uuid4().hex
    tag = new_tag()
    contact = "<sip:%s@%s;transport=%s>" % (user, client.via, client.transport)
    finals = []
    headers = []
    for cseq in (1, 2):
        req = client.request("INVITE", target_ruri, aor, target_ruri, call_id=call_id, cseq=cseq,
                             from_tag=tag, contact=contact, body=body, content_type=content_type,
                             headers=headers)
        client.send(req.data)
        resp = client.final(timeout, "INVITE")
        if resp is None:
            break
        finals.append(resp)
        if resp.status >= 300:
            client.send(client.ack_for(req, resp))
        else:
            _ack_bye(client, req, resp)
            break
        if resp.status not in (401, 407) or headers:
            break
        chal = pick(challenges(resp), algorithm) or (challenges(resp) or [None])[0]
        if chal is None:
            break
        hdr = "Authorization" if resp.status == 401 else "Proxy-Authorization"
        headers = ["%s: %s" % (hdr, digest_authorization(chal, "INVITE", target_ruri, user, password))]
    return finals


def _ack_bye(client, req, resp):
    to = resp.get("to")
    contact = re.search(r"<([^>]+)>", resp.get("contact") or "<%s>" % req.ruri).group(1)
    for method, cseq in (("ACK", req.cseq), ("BYE", req.cseq + 1)):
        L = [
            "%s %s SIP/2.0" % (method, contact),
            "Via: SIP/2.0/%s %s;branch=%s;rport" % (client.T, client.via, new_branch()),
            "Max-Forwards: 70",
            "From: <%s>;tag=%s" % (req.from_uri, req.from_tag),
            "To: %s" % to,
            "Call-ID: %s" % req.call_id,
            "CSeq: %d %s" % (cseq, method),
            "Content-Length: 0",
        ]
        client.send(("\r\n".join(L) + "\r\n\r\n").encode())
    client.final(2.0, "BYE")


# ---------------------------------------------------------- torture files
TORTURE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torture")


class Torture:
    """A torture message file: '# key: value' header lines, then the message
    in RFC 4475 notation (<allOneLine>, <hex>, <repeat count=N>), LF line
    ends turned into CRLF, ${VIA} ${TRANSPORT} ${SERVER} ${CL} substituted."""

    def __init__(self, path):
        self.path = path
        self.name = os.path.basename(path)[:-4]
        with open(path, encoding="utf-8") as f:
            text = f.read()
        meta = {}
        lines = text.split("\n")
        i = 0
        while i < len(lines) and lines[i].startswith("#"):
            k, _, v = lines[i][1:].partition(":")
            meta[k.strip().lower()] = v.strip()
            i += 1
        self.meta = meta
        self.template = "\n".join(lines[i:])
        self.expect = [e.strip() for e in meta.get("expect", "final").split(",")]
        self.expect_tcp = [e.strip() for e in meta.get("expect_tcp", meta.get("expect", "final")).split(",")]
        self.transports = [t.strip() for t in meta.get("transports", "udp,tcp").split(",")]
        self.check_length = meta.get("length", "") == "exact"

    def render(self, transport, via, server):
        t = self.template
        t = re.sub(r"<allOneLine>\n?(.*?)\n?</allOneLine>",
                   lambda m: m.group(1).replace("\n", ""), t, flags=re.S)
        t = re.sub(r"<repeat count=(\d+)>(.*?)</repeat>",
                   lambda m: m.group(2) * int(m.group(1)), t, flags=re.S)
        t = t.replace("${VIA}", via).replace("${TRANSPORT}", transport.upper())
        t = t.replace("${SERVER}", server)
        data = t.replace("\n", "\r\n").encode("utf-8")
        data = re.sub(rb"<hex>([0-9A-Fa-f]*)</hex>", lambda m: bytes.fromhex(m.group(1).decode()), data)
        if b"${CL}" in data:
            body = data.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in data else b""
            data = data.replace(b"${CL}", str(len(body)).encode())
        return data

    def matches(self, transport, status):
        """status: a final status code, or None when nothing came back."""
        exp = self.expect_tcp if transport == "tcp" else self.expect
        for e in exp:
            if e == "none" and status is None:
                return True
            if status is None:
                continue
            if e == "final" and status >= 200:
                return True
            if e.endswith("xx") and str(status)[0] == e[0]:
                return True
            if e.isdigit() and int(e) == status:
                return True
        return False


def torture_messages():
    return sorted(
        Torture(os.path.join(TORTURE_DIR, f))
        for f in os.listdir(TORTURE_DIR)
        if f.endswith(".txt")
    ) if os.path.isdir(TORTURE_DIR) else []


Torture.__lt__ = lambda a, b: a.name < b.name


# ------------------------------------------------------------ a raw SIP peer
def _hdr_param(value, name):
    m = re.search(r";\s*%s=([^;>\s,]+)" % re.escape(name), value or "", re.I)
    return m.group(1) if m else None


def _angle_uri(value):
    m = re.search(r"<([^>]+)>", value or "")
    if m:
        return m.group(1)
    return (value or "").split(";")[0].strip()


class Peer:
    """A raw SIP user agent on one UDP address, e.g. the trunk's "carrier" at
    127.0.0.1:<server.trunk_port> (outbound trunk INVITEs arrive there; INVITEs sent
    from it come from the trunk's real address). A thread receives everything into
    ``log`` ([(monotonic t, Message, (ip, port))]) and answers requests by itself:

    - a new INVITE: 100, then ``invite_code`` (200 with an SDP answer, or e.g. 486;
      None: 180 and ring until CANCEL, answered 200 + 487); retransmissions get the
      same answer again; a re-INVITE: 200 with SDP
    - BYE, CANCEL, NOTIFY, OPTIONS, INFO, UPDATE, PRACK: 200; ACK: nothing
    - every final response to an INVITE it sent is ACKed (2xx: in the dialog, whose
      remote tag and target are kept for ``in_dialog``)
    """

    SDP = ("v=0\r\no=peer 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
           "m=audio {port} RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
           "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=sendrecv\r\n")

    def __init__(self, server_port, port=0, host="127.0.0.1", invite_code=200, name="peer",
                 user="carrier", reinvite_delay=0.0, reinvite_codes=(), answer_headers=(),
                 silent_bye=False):
        self.name = name
        self.user = user
        self.server = ("127.0.0.1", server_port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.sock.settimeout(0.1)
        self.host, self.port = self.sock.getsockname()
        # RTP goes here and is never read (no ICMP port-unreachable back to the server)
        self.media = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.media.bind((host, 0))
        self.invite_code = invite_code
        # Re-INVITEs: answered after ``reinvite_delay`` s; the first ones with the codes of
        # ``reinvite_codes`` in turn (e.g. [491] for glare), then 200 with SDP.
        self.reinvite_delay = reinvite_delay
        self.reinvite_codes = list(reinvite_codes)
        # Extra header lines of the 2xx to a new INVITE (e.g. "Session-Expires: 90;refresher=uas").
        self.answer_headers = list(answer_headers)
        # A peer that never answers BYE (a crashed phone, a lost network path).
        self.silent_bye = silent_bye
        self.log = []
        self.cond = threading.Condition()
        self.dialogs = {}  # call_id -> {local_tag, remote_tag, target, from_uri, to_uri, cseq, local_is_uac}
        self._answers = {}  # (call_id, cseq, branch) of received INVITEs -> our final response bytes
        self._sent = {}  # (call_id, cseq) of INVITEs we sent -> Request
        self._closed = False
        self.thread = threading.Thread(target=self._run, name="peer-" + name, daemon=True)
        self.thread.start()

    # --------------------------------------------------------------- plumbing
    @property
    def addr(self):
        return "%s:%d" % (self.host, self.port)

    def sdp(self):
        return self.SDP.format(ip=self.host, port=self.media.getsockname()[1])

    def media_packets(self, seconds):
        """The RTP packets that reach our media port during the next ``seconds`` (whatever
        queued before is discarded first)."""
        self.media.setblocking(False)
        try:
            while True:
                self.media.recv(2048)
        except (BlockingIOError, OSError):
            pass
        self.media.settimeout(0.05)
        got = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                got.append(self.media.recv(2048))
            except (socket.timeout, OSError):
                pass
        return got

    def close(self):
        self._closed = True
        self.thread.join(2)
        for s in (self.sock, self.media):
            try:
                s.close()
            except OSError:
                pass

    def _run(self):
        while not self._closed:
            try:
                data, src = self.sock.recvfrom(70000)
            except socket.timeout:
                continue
            except OSError:
                break
            if not data.strip():
                continue
            try:
                m = Message(data)
            except Exception:  # noqa: BLE001 - a peer keeps listening whatever arrives
                continue
            with self.cond:
                self.log.append((time.monotonic(), m, src))
                self.cond.notify_all()
            try:
                if m.is_response:
                    self._on_response(m)
                else:
                    self._on_request(m, src)
            except OSError:
                pass

    def _send_late(self, data, dst):
        try:
            self._sendto(data, dst)
        except OSError:
            pass  # closed meanwhile

    def _sendto(self, data, dst=None):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendto(data, dst or self.server)

    def mark(self):
        with self.cond:
            return len(self.log)

    def requests(self, method=None, since=0, pred=None):
        with self.cond:
            return [m for _, m, _ in self.log[since:]
                    if not m.is_response and (method is None or m.method == method)
                    and (pred is None or pred(m))]

    def new_invites(self, since=0):
        """INVITEs that start a dialog (no To tag), one per Call-ID (retransmissions once)."""
        seen, out = set(), []
        for m in self.requests("INVITE", since=since, pred=lambda m: not _hdr_param(m.get("to"), "tag")):
            if m.get("call-id") not in seen:
                seen.add(m.get("call-id"))
                out.append(m)
        return out

    def responses(self, call_id, cseq=None, since=0):
        with self.cond:
            return [m for _, m, _ in self.log[since:]
                    if m.is_response and m.get("call-id") == call_id
                    and (cseq is None or m.get("cseq").split()[0] == str(cseq))]

    def wait(self, pred, timeout=5.0, since=0, what="message"):
        """First logged message (after ``since``) matching ``pred``; None on timeout."""
        deadline = time.monotonic() + timeout
        with self.cond:
            i = since
            while True:
                while i < len(self.log):
                    m = self.log[i][1]
                    i += 1
                    if pred(m):
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(min(left, 0.2))

    def wait_request(self, method, timeout=5.0, since=0, pred=None):
        return self.wait(lambda m: not m.is_response and m.method == method
                         and (pred is None or pred(m)), timeout, since)

    def wait_final(self, call_id, cseq, timeout=5.0, since=0):
        return self.wait(lambda m: m.is_response and m.status >= 200
                         and m.get("call-id") == call_id
                         and m.get("cseq").split()[0] == str(cseq), timeout, since)

    # ----------------------------------------------------------- answering
    def _response(self, req, code, reason, to_tag=None, body=b"", extra=()):
        to = req.get("to")
        if to_tag and not _hdr_param(to, "tag") and code > 100:
            to = "%s;tag=%s" % (to, to_tag)
        L = ["SIP/2.0 %d %s" % (code, reason)]
        L += ["Via: %s" % v for v in req.all("via")]
        L += ["From: %s" % req.get("from"), "To: %s" % to, "Call-ID: %s" % req.get("call-id"),
              "CSeq: %s" % req.get("cseq")]
        if req.method == "INVITE" and code < 300:
            L.append("Contact: <sip:%s@%s>" % (self.user, self.addr))
        L += list(extra)
        if isinstance(body, str):
            body = body.encode()
        if body:
            L.append("Content-Type: application/sdp")
        L.append("Content-Length: %d" % len(body))
        return ("\r\n".join(L) + "\r\n\r\n").encode() + body

    def _on_request(self, m, src):
        call_id = m.get("call-id")
        if m.method == "ACK":
            return
        if m.method == "INVITE":
            key = (call_id, m.get("cseq"), _hdr_param(m.get("via"), "branch"))
            if key in self._answers:  # retransmission
                self._sendto(self._answers[key], src)
                return
            to_tag = _hdr_param(m.get("to"), "tag")
            if to_tag:  # re-INVITE
                code = self.reinvite_codes.pop(0) if self.reinvite_codes else 200
                if code == 200:
                    out = self._response(m, 200, "OK", body=self.sdp())
                else:
                    out = self._response(m, code, {491: "Request Pending",
                                                   488: "Not Acceptable Here"}.get(code, "Refused"))
                self._answers[key] = out
                if self.reinvite_delay > 0:
                    self._sendto(self._response(m, 100, "Trying"), src)
                    t = threading.Timer(self.reinvite_delay, self._send_late, (out, src))
                    t.daemon = True
                    t.start()
                else:
                    self._sendto(out, src)
                return
            tag = new_tag()
            self._sendto(self._response(m, 100, "Trying"), src)
            code = self.invite_code
            if code is None:
                out = self._response(m, 180, "Ringing", to_tag=tag)
                self._answers[key] = out
                self._ringing = getattr(self, "_ringing", {})
                self._ringing[call_id] = (m, tag, src)
            elif code < 300:
                out = self._response(m, code, "OK", to_tag=tag, body=self.sdp(),
                                     extra=self.answer_headers)
                self.dialogs[call_id] = dict(
                    local_tag=tag, remote_tag=_hdr_param(m.get("from"), "tag"),
                    target=_angle_uri(m.get("contact")) or "sip:%s:%d" % self.server,
                    from_uri=_angle_uri(m.get("to")), to_uri=_angle_uri(m.get("from")),
                    from_hdr=m.get("to") + ";tag=" + tag, to_hdr=m.get("from"), cseq=100)
            else:
                out = self._response(m, code, {486: "Busy Here", 403: "Forbidden",
                                                480: "Temporarily Unavailable"}.get(code, "Refused"),
                                     to_tag=tag)
            self._answers[key] = out
            self._sendto(out, src)
            return
        if m.method == "CANCEL":
            self._sendto(self._response(m, 200, "OK"), src)
            ringing = getattr(self, "_ringing", {}).pop(call_id, None)
            if ringing:
                inv, tag, isrc = ringing
                self._sendto(self._response(inv, 487, "Request Terminated", to_tag=tag), isrc)
            return
        if m.method == "BYE":
            self.dialogs.pop(call_id, None)
            if self.silent_bye:
                return
        self._sendto(self._response(m, 200, "OK"), src)

    def _on_response(self, m):
        if m.cseq_method != "INVITE" or m.status < 200:
            return
        call_id = m.get("call-id")
        cseq = int(m.get("cseq").split()[0])
        req = self._sent.get((call_id, cseq))
        if req is None:
            return
        if m.status >= 300:
            via = Message(req.data).get("via")
            L = ["ACK %s SIP/2.0" % req.ruri, "Via: %s" % via, "Max-Forwards: 70",
                 "From: <%s>;tag=%s" % (req.from_uri, req.from_tag), "To: %s" % m.get("to"),
                 "Call-ID: %s" % call_id, "CSeq: %d ACK" % cseq, "Content-Length: 0"]
            self._sendto(("\r\n".join(L) + "\r\n\r\n").encode())
            return
        d = self.dialogs.get(call_id)
        if d is None:
            d = dict(local_tag=req.from_tag, remote_tag=_hdr_param(m.get("to"), "tag"),
                     target=_angle_uri(m.get("contact")) or req.ruri,
                     from_uri=req.from_uri, to_uri=req.to_uri,
                     from_hdr="<%s>;tag=%s" % (req.from_uri, req.from_tag), to_hdr=m.get("to"),
                     cseq=cseq)
            self.dialogs[call_id] = d
        self._sendto(self._dialog_request(call_id, "ACK", cseq=cseq))

    # -------------------------------------------------------------- sending
    def invite(self, ruri, from_uri, to_uri=None, via=None, headers=(), sdp=True):
        """Send an INVITE (from this peer's own address); returns the rawsip Request.
        ``via``: a whole top Via value instead of ours (``{branch}`` is filled in)."""
        branch, tag, call_id = new_branch(), new_tag(), uuid.uuid4().hex
        to_uri = to_uri or ruri
        body = self.sdp().encode() if sdp else b""
        L = ["INVITE %s SIP/2.0" % ruri,
             "Via: " + (via.replace("{branch}", branch) if via else
                        "SIP/2.0/UDP %s;branch=%s;rport" % (self.addr, branch)),
             "Max-Forwards: 70", "From: <%s>;tag=%s" % (from_uri, tag), "To: <%s>" % to_uri,
             "Call-ID: %s" % call_id, "CSeq: 1 INVITE",
             "Contact: <sip:%s@%s>" % (self.user, self.addr)]
        L += list(headers)
        if body:
            L.append("Content-Type: application/sdp")
        L.append("Content-Length: %d" % len(body))
        data = ("\r\n".join(L) + "\r\n\r\n").encode() + body
        req = Request(data, "INVITE", ruri, from_uri, to_uri, call_id, 1, branch, tag)
        self._sent[(call_id, 1)] = req
        self._sendto(data)
        return req

    def _dialog_request(self, call_id, method, cseq=None, headers=(), body=b""):
        d = self.dialogs[call_id]
        if cseq is None:
            d["cseq"] += 1
            cseq = d["cseq"]
        if isinstance(body, str):
            body = body.encode()
        L = ["%s %s SIP/2.0" % (method, d["target"]),
             "Via: SIP/2.0/UDP %s;branch=%s;rport" % (self.addr, new_branch()),
             "Max-Forwards: 70", "From: %s" % d["from_hdr"], "To: %s" % d["to_hdr"],
             "Call-ID: %s" % call_id, "CSeq: %d %s" % (cseq, method),
             "Contact: <sip:%s@%s>" % (self.user, self.addr)]
        L += list(headers)
        L.append("Content-Length: %d" % len(body))
        return ("\r\n".join(L) + "\r\n\r\n").encode() + body

    def in_dialog(self, call_id, method, headers=(), body=b""):
        """Send a request inside the dialog of ``call_id``; returns its CSeq number."""
        data = self._dialog_request(call_id, method, headers=headers, body=body)
        self._sendto(data)
        return self.dialogs[call_id]["cseq"] if call_id in self.dialogs else None

    def request_and_wait(self, call_id, method, headers=(), body=b"", timeout=5.0):
        """In-dialog request; returns its final response (None on timeout)."""
        since = self.mark()
        cseq = self.in_dialog(call_id, method, headers=headers, body=body)
        return self.wait_final(call_id, cseq, timeout=timeout, since=since)
