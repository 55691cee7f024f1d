"""DTMF (in-call media issue) with two independent pjsua2 phones: A (201) calls B (202).

- Sent through the API (the sipgateio SDK's `sendDTMF`: to the remote party of the token
  user; the native API: to a named leg), `*12345#` arrives at the other phone's onDtmfDigit in
  order, each digit exactly once, and nothing arrives at the sender's phone.
- Digits pressed on a phone arrive once each as native SSE `dtmf` events (with the leg that
  pressed them) and as sipgate push `dtmf` posts: at the `onData` URL of the `<Gather>` the
  caller's app answered its (outbound, not executed) `newCall` with, or (no Gather) at the
  other user's webhook URL, here the sipgateio SDK's own webhook server (`onData`). A user's
  own digits do not go to their own app. (A Gather in the called user's answer is executed:
  test_sipgate_push_xml.py.)
- An invalid sequence is a 400, nothing is sent, and the call is unchanged."""
import http.server
import json
import os
import socket
import subprocess
import threading
import time
import urllib.parse

import pytest
import requests

from api_support import NODE_DIR, LiveCall, Native, node_available, one_call, sdk, sipgate_login
from hfserver import free_port

pytestmark = pytest.mark.server

SEQ = "*12345#"


def wait_digits(phone, since, n, timeout=5.0, quiet=0.8):
    """The digits the phone reported since ``since``: waits for ``n``, then ``quiet`` seconds
    more so that a duplicate would show up."""
    deadline = time.monotonic() + timeout
    while len(phone.find("dtmf", since=since)) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(quiet)
    return phone.find("dtmf", since=since)


def test_api_dtmf_reaches_the_phone_in_order_once_each(server, phones, tones, artifacts, capsys):
    call = LiveCall(server, phones, tones, artifacts)
    api = Native(server)
    live = api.one_call()
    leg_a = Native.leg(live, "201")
    methods = set()

    # sipgate semantics: the digits go to the remote party of the token user (201 -> B).
    if node_available() or os.environ.get("CI") == "true":
        creds = {"token": sipgate_login(server)}
        call_id = one_call(server, creds)["callId"]
        ma, mb = call.marks()
        sdk(server, creds, "dtmf", call_id, SEQ)
        got = wait_digits(call.B, mb, len(SEQ))
        assert "".join(e["digit"] for e in got) == SEQ, got
        assert call.A.find("dtmf", since=ma) == [], "the sender's own phone got digits"
        methods.update(e["method"] for e in got)

    # Native: to a named leg (A's phone).
    ma, mb = call.marks()
    api.req("POST", "/calls/%s/legs/%s/dtmf" % (live["id"], leg_a["id"]), 202,
            json={"digits": SEQ})
    got = wait_digits(call.A, ma, len(SEQ))
    assert "".join(e["digit"] for e in got) == SEQ, got
    assert call.B.find("dtmf", since=mb) == [], "the other phone got digits"
    methods.update(e["method"] for e in got)

    # Invalid characters: 400 on both APIs, nothing reaches a phone, the call is unchanged.
    ma, mb = call.marks()
    token = sipgate_login(server)
    r = requests.post(server.http + "/v2/calls/%s/dtmf" % live["id"], timeout=5,
                      headers={"Authorization": "Bearer " + token},
                      json={"sequence": "12X"})
    assert r.status_code == 400, r.text
    api.req("POST", "/calls/%s/legs/%s/dtmf" % (live["id"], leg_a["id"]), 400,
            json={"digits": "12X"})
    call.assert_two_way("after invalid DTMF")
    assert call.A.find("dtmf", since=ma) == [] and call.B.find("dtmf", since=mb) == []
    assert api.one_call()["state"] == "answered"
    with capsys.disabled():
        names = {"0": "RFC 4733 (pjsua RFC2833)", "1": "SIP INFO"}
        print("\n[figures] DTMF reached the phones as %s" % sorted(names.get(m, m) for m in methods))


class _Hooks(http.server.BaseHTTPRequestHandler):
    """A sipgate app for user 201 (the caller): answers newCall with a Gather whose onData is
    /b-data, and records every POST (path, form)."""

    posts = None  # set per server
    base = ""

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        form = urllib.parse.parse_qsl(body, keep_blank_values=True)
        self.posts.append((self.path, form))
        xml = '<?xml version="1.0" encoding="utf-8"?><Response/>'
        if dict(form).get("event") == "newCall":
            xml = ('<?xml version="1.0" encoding="utf-8"?><Response>'
                   '<Gather onData="%s/b-data" maxDigits="10" timeout="5000"/></Response>'
                   % self.base)
        data = xml.encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


class _SseCollector(threading.Thread):
    """Reads the native event stream in the background (HTTP/1.0, so the body is the bare
    event stream) until stopped; ``stop`` returns at once."""

    def __init__(self, server, key="hf_test_key_acme"):
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", server.http_port), timeout=5)
        self.sock.sendall(("GET /api/v1/events HTTP/1.0\r\nHost: 127.0.0.1\r\n"
                           "Authorization: Bearer %s\r\nAccept: text/event-stream\r\n\r\n"
                           % key).encode())
        self.sock.settimeout(0.2)
        self.events = []
        self.stopped = threading.Event()
        self.raw = b""

    def run(self):
        while not self.stopped.is_set():
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            if not data:
                return
            self.raw += data
            head, sep, body = self.raw.partition(b"\r\n\r\n")
            if not sep:
                continue
            blocks = body.decode("utf-8", "replace").replace("\r\n", "\n").split("\n\n")
            events = []
            for block in blocks[:-1]:  # the last one may be incomplete
                fields = dict(l.split(":", 1) for l in block.split("\n") if ":" in l and
                              not l.startswith(":"))
                if "data" in fields:
                    events.append((fields.get("event", "").strip(), json.loads(fields["data"])))
            self.events = events

    def stop(self):
        self.stopped.set()
        self.sock.close()

    def dtmf(self):
        return [(d["digit"], d["leg_id"]) for ev, d in list(self.events) if ev == "dtmf"]

    def wait_dtmf(self, n, timeout=5.0, quiet=0.8):
        deadline = time.monotonic() + timeout
        while len(self.dtmf()) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(quiet)
        return self.dtmf()


def test_digits_pressed_on_phones_arrive_once_each_as_sse_and_sipgate_push(
        server, phones, tones, artifacts):
    # 201's app (Gather -> onData) on a local HTTP server.
    posts = []
    port = free_port(udp=False)
    handler = type("Hooks", (_Hooks,), {"posts": posts, "base": "http://127.0.0.1:%d" % port})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    out = server.cli("user", "webhook", "201", "http://127.0.0.1:%d/b" % port, "--account", "acme")
    assert out.returncode == 0, out.stderr
    # 202's app: the sipgateio SDK's webhook server (no Gather: dtmf goes to the webhook URL).
    proc = None
    if node_available() or os.environ.get("CI") == "true":
        sdk_port = free_port(udp=False)
        log = open(os.path.join(artifacts, "webhook_sdk.log"), "w")
        proc = subprocess.Popen(["node", os.path.join(NODE_DIR, "sipgate_webhook.js"),
                                 str(sdk_port)], cwd=NODE_DIR, stdout=subprocess.PIPE,
                                stderr=log, text=True)
        first = json.loads(proc.stdout.readline())
        assert first["event"] == "listening", first
        out = server.cli("user", "webhook", "202", "http://127.0.0.1:%d" % sdk_port,
                         "--account", "acme")
        assert out.returncode == 0, out.stderr
    sse = _SseCollector(server)
    sse.start()
    try:
        call = LiveCall(server, phones, tones, artifacts)
        live = Native(server).one_call()
        leg_a, leg_b = Native.leg(live, "201")["id"], Native.leg(live, "202")["id"]

        call.A.dtmf("1234")
        got = sse.wait_dtmf(4)
        assert got == [(d, leg_a) for d in "1234"], got
        call.B.dtmf("#*9")
        got = sse.wait_dtmf(7)
        assert got == [(d, leg_a) for d in "1234"] + [(d, leg_b) for d in "#*9"], got

        # 201's app: B's digits, at the Gather's onData URL, once each, in order.
        dtmf_posts = [(p, dict(f)) for p, f in posts if dict(f).get("event") == "dtmf"]
        assert [p for p, _ in dtmf_posts] == ["/b-data"] * 3, posts
        assert [f["dtmf"] for _, f in dtmf_posts] == list("#*9"), dtmf_posts
        assert all(f["callId"] == live["id"] for _, f in dtmf_posts), dtmf_posts
        # 202's app (the SDK's webhook server, onData): A's digits, parsed by the SDK.
        if proc is not None:
            call.A.hangup(call=call.c)
            call.assert_both_ended()
            events = []
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                line = proc.stdout.readline()
                if not line:
                    break
                e = json.loads(line)
                events.append(e)
                if e.get("event") == "hangup":
                    break
            dtmf = [e for e in events if e.get("event") == "dtmf"]
            assert [e["dtmf"] for e in dtmf] == list("1234"), events
            assert all(e["callId"] == live["id"] and e["originalCallId"] == live["id"]
                       for e in dtmf), dtmf
    finally:
        sse.stop()
        httpd.shutdown()
        if proc is not None:
            proc.kill()
            proc.wait(5)
