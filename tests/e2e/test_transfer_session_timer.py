"""Session timers (RFC 4028) across an attended transfer's consultation (engine-core issue 12,
item 3): the server's refresh of the transferor's leg while that phone talks to the target
in the consultation bridge must offer what the leg has now, the consultation bridge's socket,
and not pull the phone back into the call's bridge.

The transferor is a raw SIP peer on the trunk ("carrier") that behaves as a phone does with
media: it sends a 1500 Hz PCMU tone to the address of the last SDP offer it answered and
records what reaches its media socket. The server asks the trunk for `Session-Expires: 90`
(`sip.session_expires_secs`); the carrier's 2xx names no refresher, so the server refreshes
that leg with a re-INVITE (the carrier allows no UPDATE) about 45 s after the answer."""
import os
import time

import pytest

import audio
import rawsip
from api_support import Native, registered
from checks import assert_hears
from conftest import F_A, F_C
from test_lifecycle import counter
from test_rtp_continuity import F_PEER, RtpPeer
from test_transfer_pending import (consult_with_carrier_as_transferor, is_reinvite, logged_at,
                                   media_addr)

pytestmark = pytest.mark.server

NUMBER = "+4969555123"  # national for acme: goes out through the trunk to the carrier
SESSION_EXPIRES = 90


@pytest.mark.timeout(180)
def test_a_refresh_during_the_consultation_keeps_the_transferor_with_the_target(
        server_factory, phones, tones, artifacts):
    """A (201) calls the carrier; the API starts an attended transfer with the carrier as the
    transferor to C (103). The server's session refresh of the carrier's leg falls during the
    consultation: it offers the consultation bridge's address (not the call's), and after it
    the carrier still hears C's tone and C the carrier's."""
    server = server_factory(rtp_inactivity_secs=300,
                            extra_sip={"session_expires_secs": SESSION_EXPIRES})
    carrier = rawsip.Peer(server.sip_port, port=server.trunk_port, name="carrier")
    A = registered(phones, server, "A", "201")
    C = registered(phones, server, "C", "103")
    A.play(tones[F_A])
    C.play(tones[F_C])
    C.auto_answer(200, delay_ms=300)
    rtp = None
    try:
        c = A.call(server.uri(NUMBER))
        A.wait_state("CONFIRMED", call=c, timeout=10)
        answered = time.monotonic()
        inv = carrier.new_invites()
        assert len(inv) == 1, inv
        inv = inv[0]
        assert (inv.get("session-expires") or "").split(";")[0].strip() == "90", inv
        carrier_call = inv.get("call-id")
        call_ip, call_port, _ = media_addr(inv)
        rtp = RtpPeer(carrier.media, (call_ip, call_port))

        api, call, inc, move, since = consult_with_carrier_as_transferor(
            server, carrier, C, carrier_call)
        carrier_leg = next(l for l in call["legs"] if l["owner_extension"] is None)
        consult_ip, consult_port, move_version = media_addr(move)
        assert (consult_ip, consult_port) != (call_ip, call_port), move.body
        rtp.dst = (consult_ip, consult_port)
        after_move = carrier.mark()
        assert time.monotonic() - answered < 30, "the consultation began too late for the test"

        def refresh_of(m):
            return ((is_reinvite(m) or m.method == "UPDATE") and not m.is_response
                    and m.get("call-id") == carrier_call and m.get("session-expires"))

        refresh = carrier.wait(refresh_of, timeout=SESSION_EXPIRES * 0.6 + 10,
                               since=after_move)
        assert refresh is not None, "the server never refreshed the transferor's session"
        dt = logged_at(carrier, refresh) - answered
        print("[figures] refresh %.1f s after the answer, during the consultation" % dt)
        assert 35 <= dt <= 60, dt
        assert refresh.method == "INVITE", refresh  # the carrier allows no UPDATE
        ip, port, version = media_addr(refresh)
        # The refresh offers the socket the phone talks to now: the consultation's.
        assert (ip, port) == (consult_ip, consult_port), (
            "the refresh offered %s:%d, the consultation is %s:%d, the call %s:%d" % (
                ip, port, consult_ip, consult_port, call_ip, call_port))
        assert version > move_version, (version, move_version)
        # As a phone does: it sends where the last offer says (the same address here).
        rtp.dst = (ip, port)
        time.sleep(0.8)

        # After the refresh the transferor and the target still hear each other.
        rc = os.path.join(artifacts, "C_after_refresh.wav")
        C.record(rc)
        t0 = time.monotonic()
        time.sleep(2.5)
        t1 = time.monotonic()
        C.stop_record()
        heard = rtp.audio(t0 + 0.3, t1)
        assert audio.has_tone(heard, F_C), "the carrier no longer hears C: %s" % (
            audio.window_report(heard, [F_C, F_A])[:30],)
        assert audio.tone_ratio(heard, F_C, F_A) > 100, audio.window_report(heard, [F_C, F_A])[:30]
        assert_hears(rc, F_PEER, F_C, what="C hears the carrier after the refresh")
        # Still consulting: the carrier is still the call's leg.
        assert carrier_leg["id"] in {l["id"] for l in api.one_call()["legs"]}
        assert "DISCONNECTED" not in A.states(call=c)

        # Completing still works: A and C talk, the carrier is released.
        api.req("POST", "/calls/%s/transfer/complete" % call["id"], 200)
        bye = carrier.wait_request("BYE", timeout=5, since=after_move,
                                   pred=lambda m: m.get("call-id") == carrier_call)
        assert bye is not None, "the transferor was not released"
        legs = {l["owner_extension"] for l in api.one_call()["legs"]}
        assert legs == {"201", "103"}, legs
        A.hangup(call=c)
        assert C.wait_state("DISCONNECTED", call=inc["call"], timeout=5) is not None
        server.wait_metric("hookflash_active_calls", 0)
    finally:
        if rtp is not None:
            rtp.stop()
        carrier.close()


@pytest.mark.timeout(200)
def test_a_transfer_target_runs_its_session_timer_once_it_takes_the_transferors_place(
        server_factory, phones):
    """The transfer's target gets the session-timer treatment of any dialled leg, two servers
    at once (A calls B, B's leg is transferred by the API to the carrier on the trunk):
    1. blind; the carrier answers `Session-Expires: 90;refresher=uas` and never refreshes:
       the call (A and the carrier) is released with BYE at its deadline, 60 s after the
       carrier's answer, cause `session_expired`;
    2. attended, with `sip.session_expires_secs = 90`: the server's INVITE to the target
       asks for 90 s, the carrier's 2xx names no refresher, so after complete the server
       refreshes the carrier's dialog (re-INVITE with Session-Expires) about 45 s after the
       carrier answered, and the call stays up."""

    def transfer(server, carrier, name, attended):
        A = registered(phones, server, name + "A", "201")
        B = registered(phones, server, name + "B", "202")
        B.auto_answer(200, delay_ms=100)
        c = A.call(server.uri("202"))
        inc = B.wait_incoming(timeout=5)
        A.wait_state("CONFIRMED", call=c, timeout=10)
        api = Native(server)
        call = api.one_call()
        b_leg = next(l for l in call["legs"] if l["owner_extension"] == "202")
        api.req("POST", "/calls/%s/transfer" % call["id"], 202,
                json={"target": NUMBER, "attended": attended, "leg_id": b_leg["id"]})
        inv = carrier.wait(lambda m: not m.is_response and m.method == "INVITE"
                           and not rawsip._hdr_param(m.get("to"), "tag"), timeout=5)
        assert inv is not None, "the target was never dialled"
        answered = logged_at(carrier, inv)
        if attended:
            # The consultation is up once B's phone was moved; then complete.
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                r = api.req("POST", "/calls/%s/transfer/complete" % call["id"])
                if r.status_code == 200:
                    break
                assert r.status_code == 409, r.text
                time.sleep(0.3)
            else:
                raise AssertionError("complete never went through")
        assert B.wait_state("DISCONNECTED", call=inc["call"], timeout=10) is not None, \
            "the transferor was not released"
        wait = time.monotonic() + 5
        while time.monotonic() < wait:
            legs = {l["owner_extension"] for l in api.one_call()["legs"]}
            if legs == {"201", None}:
                break
            time.sleep(0.2)
        assert legs == {"201", None}, legs
        return A, c, inv, answered

    s1 = server_factory(rtp_inactivity_secs=300)
    c1 = rawsip.Peer(s1.sip_port, port=s1.trunk_port, name="carrier1",
                     answer_headers=["Session-Expires: 90;refresher=uas", "Require: timer"])
    s2 = server_factory(rtp_inactivity_secs=300,
                        extra_sip={"session_expires_secs": SESSION_EXPIRES})
    c2 = rawsip.Peer(s2.sip_port, port=s2.trunk_port, name="carrier2")
    try:
        A1, call1, inv1, t1 = transfer(s1, c1, "S1", attended=False)
        A2, call2, inv2, t2 = transfer(s2, c2, "S2", attended=True)
        assert (inv2.get("session-expires") or "").split(";")[0].strip() == "90", inv2
        call_id1, call_id2 = inv1.get("call-id"), inv2.get("call-id")

        def refresh_of(m):
            in_dialog = m.method == "UPDATE" or is_reinvite(m)
            return (not m.is_response and in_dialog and m.get("call-id") == call_id2
                    and m.get("session-expires"))

        refresh = c2.wait(refresh_of, timeout=70)
        assert refresh is not None, "server 2 never refreshed the target's session"
        dt2 = logged_at(c2, refresh) - t2
        print("[figures] target refreshed %.1f s after its answer" % dt2)
        assert 35 <= dt2 <= 55, dt2
        bye = c1.wait_request("BYE", timeout=40, pred=lambda m: m.get("call-id") == call_id1)
        assert bye is not None, "the silent target's leg was never released"
        dt1 = logged_at(c1, bye) - t1
        print("[figures] silent target released %.1f s after its answer" % dt1)
        assert 55 <= dt1 <= 72, dt1
        assert A1.wait_state("DISCONNECTED", call=call1, timeout=5) is not None
        m = s1.wait_metric("hookflash_active_calls", 0)
        assert counter(m, "hookflash_calls_ended_total", cause="session_expired") == 1, m
        # Server 2's call is still up: the refresh kept it.
        assert "DISCONNECTED" not in A2.states(call=call2)
        A2.hangup(call=call2)
        A2.wait_state("DISCONNECTED", call=call2, timeout=5)
        s2.wait_metric("hookflash_active_calls", 0)
    finally:
        c1.close()
        c2.close()
