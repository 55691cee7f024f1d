"""A re-INVITE in flight never blocks the call (engine-core issue, "never blocked" and glare):
the callee is a raw SIP peer on the trunk ("carrier") that answers re-INVITEs late or with
491; the caller is a pjsua2 phone. What counts is what the peers receive and when."""
import threading
import time

import pytest

import rawsip
from api_support import Native

pytestmark = pytest.mark.server

NUMBER = "+4969555123"  # national for acme (country 49): goes out through the trunk


def call_to_carrier(server, phones, **peer_kw):
    carrier = rawsip.Peer(server.sip_port, port=server.trunk_port, name="carrier", **peer_kw)
    A = phones("A")
    ev = A.register(server, "201")
    assert ev["code"] == 200, ev
    c = A.call(server.uri(NUMBER))
    A.wait_state("CONFIRMED", call=c, timeout=10)
    inv = carrier.new_invites()
    assert len(inv) == 1, inv
    return carrier, A, c, inv[0].get("call-id")


def in_thread(fn):
    out = {}

    def run():
        try:
            out["result"] = fn()
        except Exception as e:  # noqa: BLE001 - reported by the test
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def is_reinvite(m):
    return not m.is_response and m.method == "INVITE" and rawsip._hdr_param(m.get("to"), "tag")


def test_bye_during_a_pending_hold_ends_the_call_at_once(server, phones):
    carrier, A, c, call_id = call_to_carrier(server, phones, reinvite_delay=3.0)
    api = Native(server)
    call = api.one_call()
    since = carrier.mark()
    t, out = in_thread(lambda: api.req("POST", "/calls/%s/hold" % call["id"]))
    assert carrier.wait(is_reinvite, timeout=5, since=since) is not None
    time.sleep(0.3)  # the carrier holds its answer back for 3 s
    hung_up = time.monotonic()
    A.hangup(call=c)
    A.wait_state("DISCONNECTED", call=c, timeout=5)
    bye = carrier.wait_request("BYE", timeout=5, since=since,
                               pred=lambda m: m.get("call-id") == call_id)
    assert bye is not None, "the carrier never got a BYE"
    bye_at = next(ts for ts, m, _ in carrier.log if m is bye)
    print("[figures] callee BYE %.3f s after the caller hung up (hold answer held back 3 s)"
          % (bye_at - hung_up))
    # Before: the BYE waited for the hold's transaction (3.5 s after the caller's).
    assert bye_at - hung_up < 1.0, "BYE %.2f s after the caller hung up" % (bye_at - hung_up)
    deadline = time.monotonic() + 1.0
    while api.calls() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert api.calls() == [], "the call is still listed"
    t.join(10)
    r = out.get("result")
    assert r is not None and r.status_code == 409, (r.status_code, r.text) if r else out
    carrier.close()


def test_glare_a_phones_reinvite_during_ours_gets_491_and_ours_completes(server, phones):
    carrier, A, c, call_id = call_to_carrier(server, phones, reinvite_delay=2.0)
    api = Native(server)
    call = api.one_call()
    since = carrier.mark()
    t, out = in_thread(lambda: api.req("POST", "/calls/%s/hold" % call["id"]))
    assert carrier.wait(is_reinvite, timeout=5, since=since) is not None
    # While ours is pending, the carrier sends its own re-INVITE: 491.
    r = carrier.request_and_wait(call_id, "INVITE", body=carrier.sdp(),
                                 headers=["Content-Type: application/sdp"], timeout=5)
    assert r is not None and r.status == 491, r
    # Commands still work meanwhile: mute the caller's leg.
    a_leg = Native.leg(call, "201")
    m = api.req("POST", "/calls/%s/legs/%s/mute" % (call["id"], a_leg["id"]))
    assert m.status_code == 200, m.text
    # A second hold while the first is pending: 409 "pending".
    second = api.req("POST", "/calls/%s/hold" % call["id"])
    assert second.status_code == 409 and "pending" in second.text, second.text
    t.join(10)
    r = out.get("result")
    assert r is not None and r.status_code == 200, (r.status_code, r.text) if r else out
    assert all(l["held"] for l in r.json()["legs"]), r.json()
    A.hangup(call=c)
    A.wait_state("DISCONNECTED", call=c, timeout=5)
    carrier.close()


def test_a_491_to_our_reinvite_is_retried_after_the_rfc_delay(server, phones):
    carrier, A, c, call_id = call_to_carrier(server, phones, reinvite_codes=[491])
    api = Native(server)
    call = api.one_call()
    since = carrier.mark()
    carrier_leg = next(l for l in call["legs"] if l["owner_extension"] is None)
    r = api.req("POST", "/calls/%s/legs/%s/hold" % (call["id"], carrier_leg["id"]))
    assert r.status_code == 200, r.text
    reinvites = [(ts, m) for ts, m, _ in carrier.log[since:] if is_reinvite(m)]
    # The first got 491; ours was sent again (a new transaction) 2.1-4 s later (we chose
    # this dialog's Call-ID: RFC 3261 §14.1), and the second was answered 200.
    branches = {rawsip._hdr_param(m.get("via"), "branch") for _, m in reinvites}
    assert len(branches) == 2, [m.get("cseq") for _, m in reinvites]
    first = min(ts for ts, _ in reinvites)
    last = max(ts for ts, _ in reinvites)
    assert 2.0 <= last - first <= 4.5, last - first
    held = next(l for l in r.json()["legs"] if l["id"] == carrier_leg["id"])
    assert held["held"], r.json()
    A.hangup(call=c)
    A.wait_state("DISCONNECTED", call=c, timeout=5)
    carrier.close()
