"""Security against toll fraud, proven on the wire by independent peers: a stranger cannot
pass for the trunk by what its Via says; an outside caller cannot make the server dial out by
REFER; dial classes, outside-to-outside sessions and the fraud brakes keep calls off the
carrier (which is a raw SIP peer on the trunk's real address, so it sees every INVITE the
server sends there); an INVITE flood from one address is dropped while legitimate calls and
OPTIONS from other sources keep being served.

Peers: pjsua2 phones (phone_agent.py, one process each), raw SIP over UDP/TCP (rawsip.Client
for strangers, rawsip.Peer for the trunk's carrier), an INVITE flooder subprocess (flood.py).
Every test has a control case that shows the same setup does let the call through, so a
refusal cannot pass by accident. Every wait is bounded."""
import json
import os
import subprocess
import sys
import threading
import time

import pytest

import rawsip
from api_support import Native
from checks import sip_user, wait_until
from hfserver import ACME_DID

pytestmark = pytest.mark.server

HERE = os.path.dirname(os.path.abspath(__file__))
OUTSIDE_CALLER = "+4969777777"  # a number out in the world, calling in over the trunk
REFUSED = "hookflash_outbound_refused_total"
# How long a peer watches for something that must NOT arrive (the server decides in
# milliseconds; a wrongly sent INVITE would show up well within this).
QUIET_S = 1.5


# ------------------------------------------------------------------ helpers
@pytest.fixture
def peers():
    """peers(server, port=..., host=..., invite_code=...) -> rawsip.Peer, closed afterwards."""
    made = []

    def make(server, **kw):
        p = rawsip.Peer(server.sip_port, **kw)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


def carrier_of(peers, server, invite_code=486):
    """The trunk's carrier: a raw peer on 127.0.0.1:<trunk_port> (where the server sends
    outbound trunk INVITEs). 486 by default: an allowed call is seen and ends at once."""
    return peers(server, port=server.trunk_port, invite_code=invite_code, name="carrier")


def phone(phones, server, name, ext, code=None, delay_ms=0):
    p = phones(name)
    ev = p.register(server, ext)
    assert ev["code"] == 200, "%s (%s) REGISTER: %s" % (name, ext, ev)
    if code:
        p.auto_answer(code, delay_ms=delay_ms)
    return p


def refused(server, reason):
    return server.metrics().sum(REFUSED, reason=reason) or 0


def dial(p, server, number, timeout=10.0):
    """``p`` dials ``number``; returns the SIP status the call ended with (200 if it was
    answered: then it is hung up at once)."""
    m = p.mark()
    c = p.call(server.uri(number))
    ev = p.wait_for("call_state", lambda e: e["call"] == c and e["state"] in (
        "CONFIRMED", "DISCONNECTED"), since=m, timeout=timeout)
    if ev["state"] == "CONFIRMED":
        p.hangup(call=c)
        p.wait_state("DISCONNECTED", call=c, since=m, timeout=5)
        return 200
    return ev["last_status"]


def ruris(invites):
    return [m.first.split(" ")[1] for m in invites]


def did_ruri(server):
    return "sip:%s@127.0.0.1:%d" % (ACME_DID, server.sip_port)


def describe(peer, since=0):
    return [m.first for _, m, _ in peer.log[since:]]


# --------------------------------------------------- 1. spoofed trunk identity
def _stranger_invite(server, transport, local_host, with_header, sent_by_trunk):
    """An INVITE to the DID from ``local_host`` (ephemeral port) whose top Via claims the
    trunk's address in received/rport (its sent-by too if ``sent_by_trunk``; optionally
    also our private source header)."""
    cl = rawsip.Client(server.sip_port, transport, local_host=local_host)
    sent_by = "127.0.0.1:%d" % server.trunk_port if sent_by_trunk else cl.via
    via = "SIP/2.0/%s %s;branch={branch};received=127.0.0.1;rport=%d" % (
        cl.T, sent_by, server.trunk_port)
    headers = []
    if with_header:
        headers.append("X-Hookflash-Source: udp 127.0.0.1:%d" % server.trunk_port)
    sdp = rawsip.Peer.SDP.format(ip=local_host, port=40000)
    req = cl.request("INVITE", did_ruri(server), "sip:%s@127.0.0.1" % OUTSIDE_CALLER,
                     "sip:%s@127.0.0.1" % ACME_DID, via=via, headers=headers, body=sdp,
                     content_type="application/sdp",
                     contact="<sip:%s@%s;transport=%s>" % (OUTSIDE_CALLER, cl.via, transport))
    cl.send(req.data)
    resp = cl.final(5.0, "INVITE")
    if resp is not None:
        cl.send(cl.ack_for(req, resp))
    seen = [m.first for m in cl.received]
    cl.close()
    return resp, seen


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_spoofed_trunk_source_is_treated_as_a_stranger(server, phones, peers, transport):
    A = phone(phones, server, "A", "201", code=486)
    carrier = carrier_of(peers, server)  # the real trunk address: collects anything sent there
    variants = [(h, hdr, sb) for h in ("127.0.0.1", "127.0.0.5") for hdr in (False, True)
                for sb in (False, True)]
    for local_host, with_header, sent_by_trunk in variants:
        what = "%s from %s:ephemeral, Via %sreceived/rport = trunk%s" % (
            transport, local_host, "sent-by and " if sent_by_trunk else "",
            " + X-Hookflash-Source" if with_header else "")
        resp, seen = _stranger_invite(server, transport, local_host, with_header, sent_by_trunk)
        assert resp is not None, "%s: no final response (got %s; carrier got %s)" % (
            what, seen, describe(carrier))
        assert resp.status == 407, "%s: expected 407 (a stranger), got %s" % (what, seen)
        assert resp.all("proxy-authenticate"), "%s: 407 without a challenge" % what
    time.sleep(QUIET_S)
    assert not A.find("incoming"), "the DID owner's phone was rung by a spoofed trunk INVITE: %s" \
        % A.find("incoming")
    assert not carrier.new_invites(), describe(carrier)


def test_invite_from_the_real_trunk_address_reaches_the_did_owner(server, phones, peers):
    """Control for the spoofing test: the very same INVITE, sent from the trunk's real
    address (a UDP socket bound to the trunk port), rings the DID owner."""
    A = phone(phones, server, "A", "201", code=486)
    carrier = carrier_of(peers, server)
    via = "SIP/2.0/UDP %s;branch={branch};received=127.0.0.1;rport=%d" % (
        carrier.addr, server.trunk_port)
    req = carrier.invite(did_ruri(server), "sip:%s@127.0.0.1" % OUTSIDE_CALLER,
                         "sip:%s@127.0.0.1" % ACME_DID, via=via)
    inc = A.wait_incoming(timeout=5)
    assert sip_user(inc["request_uri"]) in ("201", ACME_DID), inc
    final = carrier.wait_final(req.call_id, 1, timeout=5)
    assert final is not None and final.status == 486, describe(carrier)


# ------------------------------------------------ 2. REFER from an outside caller
def _trunk_call_to_201(server, carrier, A):
    """The carrier calls the DID from the trunk address; 201 answers. Returns the Call-ID."""
    req = carrier.invite(did_ruri(server), "sip:%s@127.0.0.1" % OUTSIDE_CALLER,
                         "sip:%s@127.0.0.1" % ACME_DID)
    inc = A.wait_incoming(timeout=5)
    A.wait_state("CONFIRMED", call=inc["call"], timeout=5)
    final = carrier.wait_final(req.call_id, 1, timeout=5)
    assert final is not None and final.status == 200, describe(carrier)
    return req.call_id, inc


def _refer(server, carrier, call_id, target):
    return carrier.request_and_wait(call_id, "REFER", headers=[
        "Refer-To: <%s>" % target, "Referred-By: <sip:%s@127.0.0.1>" % OUTSIDE_CALLER])


def _assert_refer_to_outside_refused(server, carrier, call_id, A, inc):
    m = carrier.mark()
    before = refused(server, "outside_refer")
    outside = "sip:+4969555000@127.0.0.1:%d" % server.sip_port
    resp = _refer(server, carrier, call_id, outside)
    assert resp is not None and resp.status == 403, "REFER to %s: %s" % (
        outside, describe(carrier, m))
    time.sleep(QUIET_S)
    assert not carrier.new_invites(since=m), "the server dialled out after a refused REFER: %s" \
        % ruris(carrier.new_invites(since=m))
    assert not carrier.requests("BYE", since=m), describe(carrier, m)
    assert "DISCONNECTED" not in A.states(call=inc["call"])
    # The call is still up inside the server: an in-dialog request is answered in the dialog.
    opt = carrier.request_and_wait(call_id, "OPTIONS")
    assert opt is not None and opt.status == 200, describe(carrier, m)
    wait_until(lambda: refused(server, "outside_refer") > before, timeout=3,
               what="%s{reason=outside_refer} to increase" % REFUSED)


def test_refer_from_an_outside_caller_is_refused_and_the_call_stays_up(server, phones, peers):
    A = phone(phones, server, "A", "201", code=200)
    carrier = carrier_of(peers, server)
    call_id, inc = _trunk_call_to_201(server, carrier, A)
    _assert_refer_to_outside_refused(server, carrier, call_id, A, inc)
    # Still bridged end to end: the carrier's BYE ends 201's call.
    bye = carrier.request_and_wait(call_id, "BYE")
    assert bye is not None and bye.status == 200, describe(carrier)
    A.wait_state("DISCONNECTED", call=inc["call"], timeout=5)
    server.wait_metric("hookflash_active_calls", 0)


def test_outside_refer_extensions_allows_only_the_accounts_own_targets(
        server_factory, phones, peers):
    server = server_factory(security={"outside_refer": "extensions"})
    A = phone(phones, server, "A", "201", code=200)
    B = phone(phones, server, "B", "202", code=200, delay_ms=300)
    carrier = carrier_of(peers, server)
    call_id, inc = _trunk_call_to_201(server, carrier, A)
    _assert_refer_to_outside_refused(server, carrier, call_id, A, inc)
    assert not B.find("incoming")

    m = carrier.mark()
    resp = _refer(server, carrier, call_id, "sip:202@127.0.0.1:%d" % server.sip_port)
    assert resp is not None and 200 <= resp.status < 300, "REFER to 202: %s" % describe(carrier, m)
    inc_b = B.wait_incoming(timeout=5)
    B.wait_state("CONFIRMED", call=inc_b["call"], timeout=5)
    # The transferor (the carrier's call) is released once 202 answered; 201 stays, with 202.
    assert carrier.wait_request("BYE", timeout=5, since=m) is not None, describe(carrier, m)
    assert not carrier.new_invites(since=m), ruris(carrier.new_invites(since=m))
    assert "DISCONNECTED" not in A.states(call=inc["call"])
    B.hangup(call=inc_b["call"])
    A.wait_state("DISCONNECTED", call=inc["call"], timeout=5)


# ----------------------------------------------------------- 3. dial classes
def test_dial_classes_default_account(server, phones, peers):
    """New account defaults: internal + national. Premium (E.164 and national form) and
    international numbers are refused with 403 and never reach the carrier; a national
    number does."""
    A = phone(phones, server, "A", "201")
    carrier = carrier_of(peers, server)
    before = refused(server, "not_permitted")
    for number in ("+49900123456", "0900123456", "+15551234567"):
        m = carrier.mark()
        status = dial(A, server, number)
        assert status == 403, "dialling %s: %s (carrier saw %s)" % (number, status, describe(carrier, m))
        time.sleep(0.3)
        assert not carrier.new_invites(since=m), "%s reached the carrier: %s" % (
            number, ruris(carrier.new_invites(since=m)))
    wait_until(lambda: refused(server, "not_permitted") >= before + 3, timeout=3,
               what="%s{reason=not_permitted} +3" % REFUSED)

    # Control: a national number goes out (the carrier answers 486).
    m = carrier.mark()
    status = dial(A, server, "+4969123456")
    inv = carrier.new_invites(since=m)
    assert len(inv) == 1 and "69123456" in inv[0].first, describe(carrier, m)
    assert status == 486, status


def test_dial_classes_international_account_and_restricted_user(server_factory, phones, peers):
    server = server_factory(
        account_extra={"acme": {"country_code": "49",
                                "dial": ["internal", "national", "international"]}},
        user_extra={"202": {"dial": ["internal"]}})
    A = phone(phones, server, "A", "201", code=486)
    B = phone(phones, server, "B", "202")
    carrier = carrier_of(peers, server)
    before = refused(server, "not_permitted")

    m = carrier.mark()
    assert dial(A, server, "+15551234567") == 486
    inv = carrier.new_invites(since=m)
    assert len(inv) == 1 and "15551234567" in inv[0].first, describe(carrier, m)

    # Premium stays closed without the premium class.
    m = carrier.mark()
    assert dial(A, server, "+49900123456") == 403
    # User 202 may only dial internally: national out is refused, an extension is not.
    assert dial(B, server, "+4969123456") == 403
    time.sleep(0.3)
    assert not carrier.new_invites(since=m), ruris(carrier.new_invites(since=m))
    assert dial(B, server, "201") == 486
    assert A.find("incoming"), "202's internal call did not reach 201"
    wait_until(lambda: refused(server, "not_permitted") >= before + 2, timeout=3,
               what="%s{reason=not_permitted} +2" % REFUSED)


# ------------------------------------------ 4. sessions between two outside numbers
OUTSIDE_SESSION = {"caller": "+4969111111", "callee": "+4969222222"}


def test_click_to_dial_between_two_outside_numbers_is_refused(server, peers):
    carrier = carrier_of(peers, server)
    r = Native(server).req("POST", "/calls", json=OUTSIDE_SESSION)
    assert r.status_code == 403, (r.status_code, r.text)
    assert r.json().get("error", {}).get("code"), r.text
    time.sleep(QUIET_S)
    assert not carrier.new_invites(), ruris(carrier.new_invites())
    wait_until(lambda: refused(server, "outside_session") >= 1, timeout=3,
               what="%s{reason=outside_session}" % REFUSED)


def test_click_to_dial_between_outside_numbers_with_outside_sessions(server_factory, peers):
    server = server_factory(account_extra={"acme": {"outside_sessions": True}})
    carrier = carrier_of(peers, server)
    r = Native(server).req("POST", "/calls", json=OUTSIDE_SESSION)
    assert r.status_code == 201, (r.status_code, r.text)
    inv = carrier.wait_request("INVITE", timeout=5)
    assert inv is not None and "4969111111" in inv.first, describe(carrier)
    server.wait_metric("hookflash_active_calls", 0)


# ------------------------------------------------------------ 5. fraud brakes
def test_concurrent_outbound_call_limit(server_factory, phones, peers):
    server = server_factory(account_extra={"acme": {"max_outbound_calls": 2}})
    A = phone(phones, server, "A", "201")
    carrier = carrier_of(peers, server, invite_code=200)  # answers and holds the calls
    before = refused(server, "concurrent_limit")
    up = []
    for n in ("+4969100001", "+4969100002"):
        m = A.mark()
        c = A.call(server.uri(n))
        A.wait_state("CONFIRMED", call=c, since=m, timeout=10)
        up.append(c)
    m = carrier.mark()
    status = dial(A, server, "+4969100003")
    assert status == 503, "third concurrent outbound call: %s" % status
    time.sleep(0.3)
    assert not carrier.new_invites(since=m), ruris(carrier.new_invites(since=m))
    assert len(carrier.new_invites()) == 2, ruris(carrier.new_invites())
    wait_until(lambda: refused(server, "concurrent_limit") > before, timeout=3,
               what="%s{reason=concurrent_limit}" % REFUSED)
    for c in up:
        assert "DISCONNECTED" not in A.states(call=c)

    # Control: the brake lifts when a call ends.
    mb = carrier.mark()
    A.hangup(call=up[0])
    assert carrier.wait_request("BYE", timeout=5, since=mb) is not None, describe(carrier, mb)
    m, ma = carrier.mark(), A.mark()
    c = A.call(server.uri("+4969100004"))
    A.wait_state("CONFIRMED", call=c, since=ma, timeout=10)
    assert len(carrier.new_invites(since=m)) == 1, describe(carrier, m)
    for c in (up[1], c):
        A.hangup(call=c)
    server.wait_metric("hookflash_active_calls", 0)


def test_outbound_calls_per_minute_limit(server_factory, phones, peers):
    server = server_factory(account_extra={"acme": {"outbound_calls_per_minute": 3}})
    A = phone(phones, server, "A", "201")
    carrier = carrier_of(peers, server)  # 486: each allowed attempt reaches it and ends
    before = refused(server, "rate_limit")
    for i in range(3):
        assert dial(A, server, "+496910000%d" % i) == 486, i
    assert len(carrier.new_invites()) == 3, ruris(carrier.new_invites())
    m = carrier.mark()
    status = dial(A, server, "+4969100009")
    assert status == 503, "4th outbound attempt within a minute: %s" % status
    time.sleep(0.3)
    assert not carrier.new_invites(since=m), ruris(carrier.new_invites(since=m))
    wait_until(lambda: refused(server, "rate_limit") > before, timeout=3,
               what="%s{reason=rate_limit}" % REFUSED)


# ------------------------------------------------------------- 6. INVITE flood
FLOOD_SRC = "127.0.0.3"
FLOOD_RATE = 3000
FLOOD_SECONDS = 60  # as the security issue asks: a minute of flood


class OptionsProbe(threading.Thread):
    """OPTIONS from its own 127.0.0.1 socket every 0.5 s (retransmitted over 2 s as a phone
    would); records (t, status|None)."""

    def __init__(self, server):
        super().__init__(daemon=True)
        self.client = rawsip.Client(server.sip_port, "udp")
        self.results = []
        self.stop_ev = threading.Event()

    def run(self):
        while not self.stop_ev.is_set():
            t = time.monotonic()
            # Retransmitted like a phone's (Timer E): a datagram the kernel dropped from the
            # flooded socket's buffer is not the server failing to answer.
            r = self.client.options(timeout=2.0, retransmit=True)
            self.results.append((t, r.status if r is not None else None))
            self.stop_ev.wait(max(0.0, t + 0.5 - time.monotonic()))

    def stop(self):
        self.stop_ev.set()
        self.join(5)
        self.client.close()


def _options_from(server, host):
    cl = rawsip.Client(server.sip_port, "udp", local_host=host)
    try:
        r = cl.options(timeout=2.0)
        return r.status if r is not None else None
    finally:
        cl.close()


def _timed_call(A, B, server):
    """201 calls 202 (auto-answer): seconds from dialling to CONFIRMED; then hangs up."""
    ma, mb = A.mark(), B.mark()
    t0 = time.monotonic()
    c = A.call(server.uri("202"))
    up = A.wait_state("CONFIRMED", call=c, since=ma, timeout=10)
    dt = up["t"] - t0
    inc = B.wait_incoming(since=mb, timeout=2)
    A.hangup(call=c)
    B.wait_state("DISCONNECTED", call=inc["call"], since=mb, timeout=5)
    return dt


@pytest.mark.solo  # 3,000 INVITEs/s: runs alone, not beside other tests (scripts/test.sh)
@pytest.mark.timeout(150)
def test_invite_flood_is_dropped_while_legitimate_traffic_is_served(
        server_factory, phones, artifacts):
    # Its own server: 127.0.0.3 gets banned here and nowhere else. Default flood settings but
    # a ban longer than the flood, so that "still banned afterwards" is not decided by whether
    # the default 60 s ban ran out a moment before the check.
    server = server_factory(security={"flood_ban_secs": 180})
    A = phone(phones, server, "A", "201")
    B = phone(phones, server, "B", "202", code=200)
    # Control: the flooding address is served before it floods.
    assert _options_from(server, FLOOD_SRC) == 200

    probe = OptionsProbe(server)
    probe.start()
    out_path = os.path.join(artifacts, "flood.json")
    with open(out_path, "w") as out:
        flood = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "flood.py"), "--src", FLOOD_SRC,
             "--dst", "127.0.0.1:%d" % server.sip_port, "--rate", str(FLOOD_RATE),
             "--seconds", str(FLOOD_SECONDS),
             "--ruri", "sip:202@127.0.0.1:%d" % server.sip_port],
            stdout=out, stderr=subprocess.STDOUT)
    t_flood = time.monotonic()
    setup = []
    try:
        for at in (3.0, 12.0, 45.0):  # well inside the flood (the ban comes within ~0.1 s)
            time.sleep(max(0.0, t_flood + at - time.monotonic()))
            assert flood.poll() is None, "the flooder ended early: %s" % open(out_path).read()
            setup.append(_timed_call(A, B, server))
        flood.wait(FLOOD_SECONDS + 20)
    finally:
        if flood.poll() is None:
            flood.kill()
            flood.wait(5)
        probe.stop()
    text = open(out_path).read()
    assert flood.returncode == 0 and text.strip().startswith("{"), "flooder: rc=%s %s" % (
        flood.returncode, text[-2000:])
    report = json.loads(text.strip().splitlines()[-1])
    print("flood:", report, "call setup (s):", ["%.3f" % s for s in setup])
    assert report["sent"] >= 0.8 * FLOOD_RATE * FLOOD_SECONDS, report  # the flood really ran

    for dt in setup:
        assert dt < 2.0, "a legitimate call took %.2fs from dialling to answered during the " \
            "flood (all: %s)" % (dt, setup)
    during = [r for r in probe.results if r[0] < t_flood + FLOOD_SECONDS]
    assert len(during) >= FLOOD_SECONDS, probe.results  # about every 0.5 s
    bad = [r for r in probe.results if r[1] != 200]
    assert not bad, "OPTIONS from 127.0.0.1 not answered 200 during the flood: %s of %s" % (
        bad, len(probe.results))
    # Seen from the flooder: only its first requests were answered, the rest dropped.
    assert report["answered_call_ids"] < 0.05 * report["sent"], report
    # The ban holds after the flood, for that address only.
    assert _options_from(server, FLOOD_SRC) is None, "the flooding address is still served"
    assert _options_from(server, "127.0.0.1") == 200

    m = server.metrics()
    assert (m.value("hookflash_sip_flood_dropped_total") or 0) > 0, \
        {k: v for k, v in m.items() if "flood" in k}
    assert (m.value("hookflash_sip_flood_bans_total") or 0) >= 1, \
        {k: v for k, v in m.items() if "flood" in k}
    assert server.alive()
