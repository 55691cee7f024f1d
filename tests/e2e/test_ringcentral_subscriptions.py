"""RingCentral subscriptions with WebHook delivery: the Validation-Token handshake, then one
notification per party change, in order, each with Verification-Token; a live call between
pjsua2 phones held and retrieved through the dialect gives Setup/Proceeding -> Answered -> Hold
-> Answered -> Disconnected for the subscriber's party, sequence increasing."""
import http.server
import json
import threading
import time

import pytest
import requests

from api_support import LiveCall
from checks import wait_until
from rc_support import Rc, assert_rc_error

pytestmark = [pytest.mark.server]

SESSIONS = "/restapi/v1.0/account/~/extension/~/telephony/sessions"
PRESENCE = "/restapi/v1.0/account/~/extension/~/presence?detailedTelephonyState=true&sipData=true"


class Receiver:
    """A webhook receiver: echoes Validation-Token (unless told not to) and keeps every
    notification with its Verification-Token."""

    def __init__(self, echo=True):
        self.got = []
        self.validations = []
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                token = self.headers.get("Validation-Token")
                self.send_response(200)
                if token is not None:
                    outer.validations.append(token)
                    if echo:
                        self.send_header("Validation-Token", token)
                else:
                    outer.got.append((self.headers.get("Verification-Token"), json.loads(body)))
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = "http://127.0.0.1:%d/hook" % self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def statuses(notes, party_id):
    seq, codes = [], []
    for _, n in notes:
        b = n["body"]
        if "parties" in b and b["parties"][0]["id"] == party_id:
            seq.append(b["sequence"])
            code = b["parties"][0]["status"]["code"]
            if not codes or codes[-1] != code:
                codes.append(code)
    return seq, codes


def test_webhook_subscription_follows_a_held_call(server, phones, tones, artifacts, receiver):
    a = Rc(server, "201")
    sub = a.req("POST", "/subscription", 200, json={
        "eventFilters": [SESSIONS, PRESENCE],
        "deliveryMode": {"transportType": "WebHook", "address": receiver.url,
                         "verificationToken": "vt-123"}}).json()
    assert len(receiver.validations) == 1, receiver.validations
    assert sub["status"] == "Active" and sub["deliveryMode"]["transportType"] == "WebHook", sub
    assert all("~" not in f for f in sub["eventFilters"]), sub
    assert a.req("GET", "/subscription/" + sub["id"], 200).json()["id"] == sub["id"]
    assert [s["id"] for s in a.req("GET", "/subscription", 200).json()["records"]] == [sub["id"]]
    # Another extension does not see it.
    assert_rc_error(Rc(server, "202").req("GET", "/subscription/" + sub["id"]), 404)

    call = LiveCall(server, phones, tones, artifacts)
    sid = a.presence()["activeCalls"][0]["telephonySessionId"]
    pid = a.presence()["activeCalls"][0]["partyId"]
    base = "/account/~/telephony/sessions/%s/parties/%s" % (sid, pid)
    wait_until(lambda: "Answered" in statuses(receiver.got, pid)[1], what="Answered notified")
    mb = call.B.mark()
    a.req("POST", base + "/hold", 200)
    call.B.wait_media(lambda e: e["status"] == "remote_hold", call=call.inc["call"], since=mb)
    wait_until(lambda: "Hold" in statuses(receiver.got, pid)[1], what="Hold notified")
    a.req("POST", base + "/unhold", 200)
    time.sleep(0.5)
    call.A.hangup(call=call.c)
    call.assert_both_ended()
    wait_until(lambda: "Disconnected" in statuses(receiver.got, pid)[1], what="Disconnected")

    seq, codes = statuses(receiver.got, pid)
    print("201's party:", codes, "sequences:", seq)
    assert seq == sorted(seq) and len(set(seq)) == len(seq), seq
    assert codes[0] in ("Setup", "Proceeding"), codes
    assert codes[-4:] == ["Answered", "Hold", "Answered", "Disconnected"], codes
    for token, n in receiver.got:
        assert token == "vt-123", (token, n)
        assert n["subscriptionId"] == sub["id"] and n["uuid"] and n["timestamp"], n
    sess = [n for _, n in receiver.got if n["event"].endswith("/telephony/sessions")]
    assert all(n["body"]["telephonySessionId"] == sid and n["body"]["eventTime"]
               and n["body"]["origin"]["type"] == "Call" and n["body"]["sessionId"]
               for n in sess), sess
    # Only 201's parties reach an extension-level subscription of 201.
    assert {n["body"]["parties"][0]["owner"]["extensionId"] for n in sess} == {a.req(
        "GET", "/account/~/extension/~", 200).json()["id"]}
    pres = [n["body"]["telephonyStatus"] for _, n in receiver.got if "/presence" in n["event"]]
    assert pres and pres[-1] == "NoCall" and "CallConnected" in pres, pres

    a.req("DELETE", "/subscription/" + sub["id"], 204)
    assert_rc_error(a.req("GET", "/subscription/" + sub["id"]), 404)


def test_subscription_refusals(server, receiver):
    a = Rc(server, "201")
    silent = Receiver(echo=False)
    try:
        r = a.req("POST", "/subscription", json={
            "eventFilters": [SESSIONS],
            "deliveryMode": {"transportType": "WebHook", "address": silent.url}})
        body = assert_rc_error(r, 400, "CMN-101")
        assert "Validation-Token" in body["message"], body
    finally:
        silent.close()
    # The server's own listener (and a link-local address) is never a WebHook address.
    for address in (server.http + "/restapi/oauth/token", "http://169.254.169.254/latest"):
        r = a.req("POST", "/subscription", json={
            "eventFilters": [SESSIONS],
            "deliveryMode": {"transportType": "WebHook", "address": address}})
        assert "not allowed" in assert_rc_error(r, 400, "CMN-101")["message"], r.text
    for bad in ({"eventFilters": ["/restapi/v1.0/account/~/extension/~/message-store"],
                 "deliveryMode": {"transportType": "WebHook", "address": receiver.url}},
                {"eventFilters": [], "deliveryMode": {"transportType": "WebHook",
                                                      "address": receiver.url}},
                {"eventFilters": [SESSIONS], "deliveryMode": {"transportType": "PubNub"}},
                {"eventFilters": [SESSIONS]}):
        assert_rc_error(a.req("POST", "/subscription", json=bad), 400, "CMN-101")
    assert a.req("GET", "/subscription", 200).json()["records"] == []


class SdkSubscription:
    """tests/node/ringcentral_subs.js (@ringcentral/subscriptions over the WebSocket) running
    in the background; its JSON lines are collected."""

    def __init__(self, server, ext, filters, seconds=60):
        import os
        import subprocess
        from api_support import NODE_DIR
        from rc_support import ACME_CLIENT, PASSWORDS
        self.lines = []
        self.proc = subprocess.Popen(
            ["node", os.path.join(NODE_DIR, "ringcentral_subs.js"), server.http, ACME_CLIENT[0],
             ACME_CLIENT[1], ext, PASSWORDS[ext], json.dumps(filters), str(seconds)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd=NODE_DIR)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            if line.startswith("{"):
                self.lines.append(json.loads(line))

    def wait_ready(self):
        wait_until(lambda: any("ready" in l or l.get("ok") is False for l in self.lines),
                   timeout=20, what="subscription ready")
        failed = [l for l in self.lines if l.get("ok") is False]
        assert not failed, (failed, self.proc.stderr.read() if self.proc.poll() is not None else "")
        return [l for l in self.lines if "ready" in l][0]["subscription"]

    def notifications(self):
        return [(None, l["notification"]) for l in self.lines if "notification" in l]

    def finish(self):
        self.proc.stdin.close()
        self.proc.wait(20)
        return any(l.get("done") for l in self.lines)


@pytest.mark.skipif(not __import__("rc_support").rc_available(), reason="tests/node not installed")
def test_websocket_subscription_with_the_sdk_follows_a_held_call(server, phones, tones, artifacts):
    from rc_support import cc
    sub = SdkSubscription(server, "201", [SESSIONS])
    info = sub.wait_ready()
    assert info["deliveryMode"]["transportType"] == "WebSocket", info
    try:
        call = LiveCall(server, phones, tones, artifacts)
        pid = Rc(server, "201").presence()["activeCalls"][0]["partyId"]
        wait_until(lambda: "Answered" in statuses(sub.notifications(), pid)[1],
                   what="Answered over the WebSocket")
        mb = call.B.mark()
        held = cc(server, "201", "hold")
        assert held["result"]["status"]["code"] == "Hold", held
        call.B.wait_media(lambda e: e["status"] == "remote_hold", call=call.inc["call"], since=mb)
        cc(server, "201", "unhold")
        call.assert_two_way("retrieved")
        cc(server, "201", "drop")
        call.assert_both_ended()
        wait_until(lambda: "Disconnected" in statuses(sub.notifications(), pid)[1],
                   what="Disconnected over the WebSocket")
    finally:
        assert sub.finish(), sub.lines[-3:]
    seq, codes = statuses(sub.notifications(), pid)
    print("201's party over the WebSocket:", codes, "sequences:", seq)
    assert seq == sorted(seq) and len(set(seq)) == len(seq), seq
    assert codes[0] in ("Setup", "Proceeding"), codes
    assert codes[-4:] == ["Answered", "Hold", "Answered", "Disconnected"], codes
    for _, n in sub.notifications():
        assert n["subscriptionId"] == info["id"] and "/telephony/sessions" in n["event"], n
    # ringcentral-call-control's live model took every notification: it saw its own party
    # through the same statuses, and dropped the session once Disconnected.
    seen = []
    for l in sub.lines:
        if "cc" in l and l["cc"]["status"] and (not seen or seen[-1] != l["cc"]["status"]):
            seen.append(l["cc"]["status"])
    assert seen[-3:] == ["Answered", "Hold", "Answered"], seen
    assert [l for l in sub.lines if "cc" in l][-1]["cc"]["sessions"] == 0, sub.lines[-3:]
    # The revoked subscription is gone.
    assert Rc(server, "201").req("GET", "/subscription", 200).json()["records"] == []
