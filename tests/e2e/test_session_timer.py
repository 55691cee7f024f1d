"""SIP session timers (RFC 4028) on the caller's leg (engine-core issue): a pjsua2 phone that
asks for a 90 s session timer refreshes it through the server and stays connected with audio
both ways; a SIPp caller that never refreshes is released with BYE (and so is its callee);
an interval below the server's minimum gets 422 with Min-SE."""
import os
import time
import uuid

import pytest

import rawsip
import sipp
from checks import assert_hears
from conftest import F_A, F_B
from test_lifecycle import counter, register_sipp_uas, sipp_times
from test_security_auth import authorization, challenge_of

pytestmark = pytest.mark.server

SESSION_EXPIRES = 90


@pytest.mark.timeout(240)
def test_a_phone_with_session_timers_stays_connected_past_three_refreshes(
        server_factory, phones, tones, artifacts):
    server = server_factory(rtp_inactivity_secs=300)
    A = phones("A")
    ev = A.register(server, "201", session_expires=SESSION_EXPIRES)
    assert ev["code"] == 200, ev
    B = phones("B")
    ev = B.register(server, "202")
    assert ev["code"] == 200, ev
    A.play(tones[F_A])
    B.play(tones[F_B])
    B.auto_answer(200, delay_ms=200)
    c = A.call(server.uri("202"))
    inc = B.wait_incoming()
    A.wait_state("CONFIRMED", call=c, timeout=10)
    # pjsua refreshes every SESSION_EXPIRES/2 s; without refreshes reaching the server it
    # would end the call SESSION_EXPIRES - 30 s after the answer.
    time.sleep(3 * SESSION_EXPIRES / 2 + 5)
    assert len(server_calls(server)) == 1, "the call ended"
    ra, rb = os.path.join(artifacts, "A.wav"), os.path.join(artifacts, "B.wav")
    A.record(ra)
    B.record(rb)
    time.sleep(3)
    A.stop_record()
    B.stop_record()
    assert_hears(ra, F_B, F_A, what="A hears B after three refreshes")
    assert_hears(rb, F_A, F_B, what="B hears A after three refreshes")
    A.hangup(call=c)
    A.wait_state("DISCONNECTED", call=c, timeout=5)
    B.wait_state("DISCONNECTED", call=inc["call"], timeout=5)
    m = server.wait_metric("hookflash_active_calls", 0)
    assert counter(m, "hookflash_calls_ended_total", cause="session_expired") == 0, m
    # The timer really ran: pjsua sent its refreshes (every 45 s) and they were taken.
    assert counter(m, "hookflash_session_refreshes_total") >= 3, m


def server_calls(server):
    import requests
    r = requests.get(server.http + "/api/v1/calls",
                     headers={"Authorization": "Bearer hf_test_key_acme"}, timeout=5)
    assert r.status_code == 200, r.text
    return r.json()["calls"]


@pytest.mark.timeout(150)
def test_a_caller_that_never_refreshes_is_released_with_bye(server_factory, artifacts):
    # SIPp answers MD5 challenges only.
    server = server_factory(digest_algorithms=["MD5"], rtp_inactivity_secs=300)
    uas_port = register_sipp_uas(server, artifacts, name="register105_st")
    bye_wait_ms = 90 * 1000
    uas = sipp.Sipp(artifacts, "uas105_st", "uas_silent.xml", local_port=uas_port, calls=1,
                    timeout_s=100, subst=dict(BYE_WAIT_MS=bye_wait_ms))
    sipp.wait_listening(uas)
    uac = sipp.run(artifacts, "uac202_st", "uac_session_timer_silent.xml",
                   remote="127.0.0.1:%d" % server.sip_port, calls=1, timeout_s=100,
                   subst=dict(USER="202", PASSWORD=server.users["202"], REALM="acme.local",
                              CALLEE="105", BYE_WAIT_MS=bye_wait_ms))
    u = uas.wait(timeout=20)
    assert uac.rc == sipp.OK and uac.successful == 1, (
        "caller: no Session-Expires in the 200 or no BYE\n" + uac.summary())
    assert u.rc == sipp.OK and u.successful == 1, "callee: no BYE\n" + u.summary()
    # The BYE came at the deadline (90 - min(32, 90/3) = 60 s after the answer), not at once.
    acked, bye = sipp_times(uac, "acked"), sipp_times(uac, "bye")
    assert len(acked) == 1 and len(bye) == 1, uac.logs()
    assert 55 <= bye[0] - acked[0] <= 70, bye[0] - acked[0]
    m = server.wait_metric("hookflash_active_calls", 0)
    assert counter(m, "hookflash_calls_ended_total", cause="session_expired") == 1, m


def test_a_session_interval_below_the_minimum_gets_422(server):
    c = rawsip.Client(server.sip_port, "udp")
    sdp = rawsip.Peer.SDP.format(ip="127.0.0.1", port=4000)
    ruri = "sip:202@acme.local"
    call_id = uuid.uuid4().hex
    try:
        def invite(cseq, extra=()):
            req = c.request("INVITE", ruri, "sip:201@acme.local", ruri, call_id=call_id,
                            cseq=cseq, body=sdp, content_type="application/sdp",
                            headers=["Supported: timer", "Session-Expires: 30",
                                     "Contact: <sip:201@%s>" % c.via] + list(extra))
            c.send(req.data)
            r = c.final(5.0, cseq_method="INVITE")
            assert r is not None, "no final response"
            c.send(c.ack_for(req, r))
            return r
        first = invite(1)
        assert first.status == 407, first
        nonce, realm = challenge_of(first, "proxy-authenticate")
        auth = authorization("201", server.users["201"], realm, nonce, "INVITE", ruri,
                             name="Proxy-Authorization")
        second = invite(2, [auth])
        assert second.status == 422, second
        assert second.get("min-se").split(";")[0].strip() == "90", second
    finally:
        c.close()


@pytest.mark.timeout(150)
def test_the_callee_leg_runs_its_session_timer(server_factory, phones):
    """Session timers on the dialled leg, two servers at once:
    1. the callee (a raw carrier on the trunk) answers `Session-Expires: 90;refresher=uas`
       and never refreshes: both phones get BYE at its deadline (60 s after the answer);
    2. with `sip.session_expires_secs = 90` the server asks for timers: its INVITE to the
       callee carries `Session-Expires: 90` and `Supported: timer`; the callee's 2xx names
       none, so the server refreshes that leg (a re-INVITE or UPDATE with Session-Expires
       about 45 s after the answer), and the caller's 2xx carries `refresher=uas`."""
    number = "+4969555123"  # national for acme: out through the trunk

    def call(server, carrier, name):
        A = phones(name)
        ev = A.register(server, "201")
        assert ev["code"] == 200, ev
        c = A.call(server.uri(number))
        A.wait_state("CONFIRMED", call=c, timeout=10)
        inv = carrier.new_invites()
        assert len(inv) == 1, inv
        return A, c, inv[0], time.monotonic()

    s1 = server_factory(rtp_inactivity_secs=300)
    c1 = rawsip.Peer(s1.sip_port, port=s1.trunk_port, name="carrier1",
                     answer_headers=["Session-Expires: 90;refresher=uas", "Require: timer"])
    s2 = server_factory(rtp_inactivity_secs=300, extra_sip={"session_expires_secs": 90})
    c2 = rawsip.Peer(s2.sip_port, port=s2.trunk_port, name="carrier2")
    try:
        A1, call1, inv1, t1 = call(s1, c1, "A1")
        A2, call2, inv2, t2 = call(s2, c2, "A2")
        assert not inv1.get("session-expires"), inv1  # not asked by default
        assert (inv2.get("session-expires") or "").split(";")[0].strip() == "90", inv2
        assert "timer" in (inv2.get("supported") or ""), inv2
        call_id1, call_id2 = inv1.get("call-id"), inv2.get("call-id")

        def refresh_of(m):
            # A re-INVITE (To has our tag) or UPDATE, not the initial INVITE.
            in_dialog = m.method == "UPDATE" or (
                m.method == "INVITE" and rawsip._hdr_param(m.get("to"), "tag"))
            return (not m.is_response and in_dialog and m.get("call-id") == call_id2
                    and m.get("session-expires"))

        refresh = c2.wait(refresh_of, timeout=70)
        assert refresh is not None, "server 2 never refreshed the callee's session"
        dt = time.monotonic() - t2
        assert 35 <= dt <= 55, dt
        bye = c1.wait_request("BYE", timeout=40, pred=lambda m: m.get("call-id") == call_id1)
        assert bye is not None, "the silent callee's leg was never released"
        dt1 = time.monotonic() - t1
        assert 55 <= dt1 <= 72, dt1
        A1.wait_state("DISCONNECTED", call=call1, timeout=5)
        m = s1.wait_metric("hookflash_active_calls", 0)
        assert counter(m, "hookflash_calls_ended_total", cause="session_expired") == 1, m
        # Server 2's call is still up: the refresh kept it.
        assert "DISCONNECTED" not in A2.states(call=call2)
        A2.hangup(call=call2)
        A2.wait_state("DISCONNECTED", call=call2, timeout=5)
    finally:
        c1.close()
        c2.close()
