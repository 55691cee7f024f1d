"""A media move of an attended transfer or a REFER/Replaces never blocks the call (engine-core
issue, "never blocked"): the phone being moved is a raw SIP peer on the trunk ("carrier")
that holds its answer to the move's re-INVITE back for 3 s while another party hangs up.
The others are pjsua2 phones. What counts is what the peers receive and when: the hang-up is
handled at once, every phone is released before the held-back 200 is even sent, and no call
is left."""
import os
import re
import time

import pytest

import rawsip
from api_support import Native, registered
import audio
from checks import assert_hears, assert_no_tone
from conftest import F_A, F_C

pytestmark = pytest.mark.server

NUMBER = "+4969555123"  # national for acme: goes out through the trunk to the carrier
HELD_BACK = 3.0


def is_reinvite(m):
    return not m.is_response and m.method == "INVITE" and rawsip._hdr_param(m.get("to"), "tag")


def media_addr(m):
    """(ip, port, o= version) of a message's SDP body."""
    text = m.body.decode("utf-8", "replace")
    ip = re.search(r"^c=IN IP4 (\S+)", text, re.M).group(1)
    port = int(re.search(r"^m=audio (\d+)", text, re.M).group(1))
    version = int(re.search(r"^o=\S+ \S+ (\d+)", text, re.M).group(1))
    return ip, port, version


def logged_at(peer, msg):
    return next(ts for ts, m, _ in peer.log if m is msg)


def consult_with_carrier_as_transferor(server, carrier, C, carrier_call):
    """Starts an attended transfer of the call's carrier leg to C (103) by the native API and
    waits for C to answer and for the carrier's re-INVITE into the consultation; returns
    (api, call, C's incoming call, the re-INVITE, the carrier's mark before the transfer)."""
    api = Native(server)
    call = api.one_call()
    carrier_leg = next(l for l in call["legs"] if l["owner_extension"] is None)
    since, mc = carrier.mark(), C.mark()
    api.req("POST", "/calls/%s/transfer" % call["id"], 202,
            json={"target": "103", "attended": True, "leg_id": carrier_leg["id"]})
    inc = C.wait_incoming(since=mc, timeout=5)
    C.wait_state("CONFIRMED", call=inc["call"], timeout=5)
    move = carrier.wait(lambda m: is_reinvite(m) and m.get("call-id") == carrier_call,
                        timeout=5, since=since)
    assert move is not None, "the transferor's phone was never moved to the consultation"
    return api, call, inc, move, since


def wait_no_calls(api, within):
    deadline = time.monotonic() + within
    while api.calls() and time.monotonic() < deadline:
        time.sleep(0.05)
    return api.calls()


def test_kept_party_hangs_up_while_the_transferor_holds_back_its_move_to_the_consultation(
        server, phones):
    """A (201) calls the carrier; the API starts an attended transfer with the carrier as the
    transferor to C (103). C answers; the carrier's phone is re-INVITEd into the consultation
    and holds its 200 back 3 s. A (the kept party) hangs up meanwhile."""
    carrier = rawsip.Peer(server.sip_port, port=server.trunk_port, name="carrier",
                          reinvite_delay=HELD_BACK)
    A = registered(phones, server, "A", "201")
    C = registered(phones, server, "C", "103")
    C.auto_answer(200, delay_ms=300)
    c = A.call(server.uri(NUMBER))
    A.wait_state("CONFIRMED", call=c, timeout=10)
    inv = carrier.new_invites()
    assert len(inv) == 1, inv
    carrier_call = inv[0].get("call-id")
    api, call, inc, move, since = consult_with_carrier_as_transferor(
        server, carrier, C, carrier_call)
    answer_due = logged_at(carrier, move) + HELD_BACK
    # While the move is pending, completing is refused as pending (409), not queued.
    r = api.req("POST", "/calls/%s/transfer/complete" % call["id"])
    assert r.status_code == 409 and "pending" in r.text, r.text
    time.sleep(0.3)
    hung_up = time.monotonic()
    A.hangup(call=c)
    disc = A.wait_state("DISCONNECTED", call=c, timeout=5)
    assert disc is not None, "the kept party's BYE was not answered"
    bye = carrier.wait_request("BYE", timeout=5, since=since,
                               pred=lambda m: m.get("call-id") == carrier_call)
    assert bye is not None, "the transferor never got a BYE"
    bye_at = logged_at(carrier, bye)
    print("[figures] transferor BYE %.3f s after the kept party hung up (its 200 held back "
          "%.1f s)" % (bye_at - hung_up, HELD_BACK))
    # Before: the call sat in the transferor's re-INVITE and handled the BYE after it.
    assert bye_at < answer_due, "BYE %.2f s after the hang-up, after the held-back 200" % (
        bye_at - hung_up)
    assert C.wait_state("DISCONNECTED", call=inc["call"], timeout=5) is not None, \
        "the consulted target was not released"
    assert wait_no_calls(api, within=1.0) == [], "the call is still listed"
    server.wait_metric("hookflash_active_calls", 0)
    carrier.close()


def test_far_party_hangs_up_while_the_handed_over_phone_holds_back_its_move(server, phones):
    """B (202) talks to A (201, call 1) and to the carrier (call 2), then transfers with
    xferReplaces: REFER on call 1 replacing call 2. Call 2 hands the carrier over; its phone
    is re-INVITEd into call 1 and holds its 200 back 3 s. A hangs up meanwhile."""
    carrier = rawsip.Peer(server.sip_port, port=server.trunk_port, name="carrier",
                          reinvite_delay=HELD_BACK)
    A = registered(phones, server, "A", "201")
    B = registered(phones, server, "B", "202")
    B.auto_answer(200)
    c1 = A.call(server.uri("202"))
    inc1 = B.wait_incoming(timeout=5)
    A.wait_state("CONFIRMED", call=c1, timeout=10)
    B.wait_state("CONFIRMED", call=inc1["call"], timeout=5)
    c2 = B.call(server.uri(NUMBER))
    B.wait_state("CONFIRMED", call=c2, timeout=10)
    inv = carrier.new_invites()
    assert len(inv) == 1, inv
    carrier_call = inv[0].get("call-id")
    api = Native(server)
    assert len(api.calls()) == 2
    since, mb = carrier.mark(), B.mark()
    B.xfer_replaces(other=c2, call=inc1["call"])
    move = carrier.wait(lambda m: is_reinvite(m) and m.get("call-id") == carrier_call,
                        timeout=5, since=since)
    assert move is not None, "the handed-over phone was never moved"
    answer_due = logged_at(carrier, move) + HELD_BACK
    time.sleep(0.3)
    hung_up = time.monotonic()
    A.hangup(call=c1)
    assert A.wait_state("DISCONNECTED", call=c1, timeout=5) is not None, \
        "the far party's BYE was not answered"
    bye = carrier.wait_request("BYE", timeout=5, since=since,
                               pred=lambda m: m.get("call-id") == carrier_call)
    assert bye is not None, "the handed-over phone was never released"
    bye_at = logged_at(carrier, bye)
    print("[figures] handed-over phone BYE %.3f s after the far party hung up (its 200 held "
          "back %.1f s)" % (bye_at - hung_up, HELD_BACK))
    assert bye_at < answer_due, "BYE %.2f s after the hang-up, after the held-back 200" % (
        bye_at - hung_up)
    # The referring phone is out of both calls.
    assert B.wait_state("DISCONNECTED", call=inc1["call"], timeout=5) is not None
    assert B.wait_state("DISCONNECTED", call=c2, timeout=5) is not None
    # It never hears the transfer succeed (its last NOTIFY, 487, usually arrives after the
    # BYE that ended its dialog and is not reported).
    assert not [e for e in B.events[mb:] if e.get("event") == "xfer_status"
                and e.get("final") and e.get("code") == 200], B.events[mb:]
    assert wait_no_calls(api, within=1.0) == [], "a call is still listed"
    server.wait_metric("hookflash_active_calls", 0)
    carrier.close()


def test_transferor_hanging_up_while_its_move_to_the_consultation_is_held_back_completes(
        server, phones, tones, artifacts):
    """As above, but the carrier (the transferor) hangs up while its move into the
    consultation is pending: the transfer completes at once (as on a PBX), A and C talk."""
    carrier = rawsip.Peer(server.sip_port, port=server.trunk_port, name="carrier",
                          reinvite_delay=HELD_BACK)
    A = registered(phones, server, "A", "201")
    C = registered(phones, server, "C", "103")
    A.play(tones[F_A])
    C.play(tones[F_C])
    C.auto_answer(200, delay_ms=300)
    c = A.call(server.uri(NUMBER))
    A.wait_state("CONFIRMED", call=c, timeout=10)
    carrier_call = carrier.new_invites()[0].get("call-id")
    api, call, inc, move, since = consult_with_carrier_as_transferor(
        server, carrier, C, carrier_call)
    answer_due = logged_at(carrier, move) + HELD_BACK
    time.sleep(0.3)
    mc = C.mark()
    r = carrier.request_and_wait(carrier_call, "BYE", timeout=2)
    assert r is not None and r.status == 200, r
    # C is moved into the carrier's place before the carrier's held-back 200 would be sent.
    media = C.wait_media(lambda e: e["active"], call=inc["call"], since=mc, timeout=5)
    assert media["t"] < answer_due, "C moved %.2f s after the held-back 200" % (
        media["t"] - answer_due)
    time.sleep(0.7)
    ra = os.path.join(artifacts, "A_after.wav")
    rc = os.path.join(artifacts, "C_after.wav")
    A.record(ra)
    C.record(rc)
    time.sleep(2.0)
    A.stop_record()
    C.stop_record()
    assert_hears(ra, F_C, F_A, t0=0.7, what="A hears C after the transferor hung up")
    assert_hears(rc, F_A, F_C, t0=0.7, what="C hears A after the transferor hung up")
    legs = {l["owner_extension"] for l in api.one_call()["legs"]}
    assert legs == {"201", "103"}, legs
    A.hangup(call=c)
    assert C.wait_state("DISCONNECTED", call=inc["call"], timeout=5) is not None
    server.wait_metric("hookflash_active_calls", 0)
    carrier.close()


def test_handed_over_phone_refusing_its_move_is_released_and_the_referrer_hears_500(
        server, phones):
    """REFER/Replaces as above, but the carrier refuses the move (488): it is released
    (BYE), the referring phone gets NOTIFY 500, and call 1 (A with B) stays as it was."""
    carrier = rawsip.Peer(server.sip_port, port=server.trunk_port, name="carrier",
                          reinvite_codes=[488])
    A = registered(phones, server, "A", "201")
    B = registered(phones, server, "B", "202")
    B.auto_answer(200)
    c1 = A.call(server.uri("202"))
    inc1 = B.wait_incoming(timeout=5)
    A.wait_state("CONFIRMED", call=c1, timeout=10)
    B.wait_state("CONFIRMED", call=inc1["call"], timeout=5)
    c2 = B.call(server.uri(NUMBER))
    B.wait_state("CONFIRMED", call=c2, timeout=10)
    carrier_call = carrier.new_invites()[0].get("call-id")
    api = Native(server)
    since, mb, ma = carrier.mark(), B.mark(), A.mark()
    B.xfer_replaces(other=c2, call=inc1["call"])
    final = B.wait_for("xfer_status", lambda e: e["final"], since=mb, timeout=8)
    assert final["code"] == 500, final
    bye = carrier.wait_request("BYE", timeout=5, since=since,
                               pred=lambda m: m.get("call-id") == carrier_call)
    assert bye is not None, "the refusing phone was not released"
    time.sleep(0.5)
    assert "DISCONNECTED" not in A.states(call=c1)
    assert "DISCONNECTED" not in B.states(call=inc1["call"])
    calls = api.calls()
    assert len(calls) == 1 and {l["owner_extension"] for l in calls[0]["legs"]} == {"201", "202"}, calls
    A.hangup(call=c1)
    assert B.wait_state("DISCONNECTED", call=inc1["call"], timeout=5) is not None
    server.wait_metric("hookflash_active_calls", 0)
    carrier.close()


def test_transferor_answering_its_move_to_the_consultation_491_once_consults_after_the_retry(
        server, phones, tones, artifacts):
    """The carrier (the transferor) answers its move into the consultation 491 (glare) once:
    the server sends the move again after the RFC 3261 §14.1 back-off (2.1-4 s: it chose that
    dialog's Call-ID), offering the same consultation socket; the carrier accepts it and the
    consultation happens: the carrier (sending its 1500 Hz tone where the offer says, recording
    what it receives) and C hear each other, A does not hear the carrier; complete then works."""
    from test_rtp_continuity import F_PEER, RtpPeer
    carrier = rawsip.Peer(server.sip_port, port=server.trunk_port, name="carrier",
                          reinvite_codes=[491])
    A = registered(phones, server, "A", "201")
    C = registered(phones, server, "C", "103")
    A.play(tones[F_A])
    C.play(tones[F_C])
    C.auto_answer(200, delay_ms=300)
    rtp = None
    try:
        c = A.call(server.uri(NUMBER))
        A.wait_state("CONFIRMED", call=c, timeout=10)
        inv = carrier.new_invites()[0]
        carrier_call = inv.get("call-id")
        call_ip, call_port, _ = media_addr(inv)
        rtp = RtpPeer(carrier.media, (call_ip, call_port))
        api, call, inc, move, since = consult_with_carrier_as_transferor(
            server, carrier, C, carrier_call)
        # The carrier answers it 491 at once (its log holds what it received: the ACK).
        ack = carrier.wait(lambda m: not m.is_response and m.method == "ACK"
                           and m.get("call-id") == carrier_call
                           and m.get("cseq").split()[0] == move.get("cseq").split()[0],
                           timeout=2, since=since)
        assert ack is not None, "the server did not ACK the carrier's 491"
        # While the retry waits, complete is refused as pending (409), not queued.
        r = api.req("POST", "/calls/%s/transfer/complete" % call["id"])
        assert r.status_code == 409 and "pending" in r.text, r.text
        after_first = carrier.mark()
        retry = carrier.wait(lambda m: is_reinvite(m) and m.get("call-id") == carrier_call
                             and m.get("cseq") != move.get("cseq"), timeout=8,
                             since=after_first)
        assert retry is not None, "the move was never sent again after the 491"
        backoff = logged_at(carrier, retry) - logged_at(carrier, move)
        print("[figures] move retried %.2f s after the first (491 answered at once)" % backoff)
        assert 2.0 <= backoff <= 6.0, backoff
        ip, port, _ = media_addr(retry)
        assert (ip, port) == media_addr(move)[:2], (retry.body, move.body)
        assert (ip, port) != (call_ip, call_port), retry.body
        rtp.dst = (ip, port)
        time.sleep(1.0)
        ra = os.path.join(artifacts, "A_491.wav")
        rc = os.path.join(artifacts, "C_491.wav")
        A.record(ra)
        C.record(rc)
        t0 = time.monotonic()
        time.sleep(2.5)
        t1 = time.monotonic()
        A.stop_record()
        C.stop_record()
        heard = rtp.audio(t0 + 0.3, t1)
        assert audio.has_tone(heard, F_C), "the carrier does not hear C: %s" % (
            audio.window_report(heard, [F_C, F_A])[:30],)
        assert_hears(rc, F_PEER, F_C, what="C hears the carrier in the consultation")
        assert_no_tone(ra, F_PEER, what="A (kept party) does not hear the consultation")
        api.req("POST", "/calls/%s/transfer/complete" % call["id"], 200)
        bye = carrier.wait_request("BYE", timeout=5, since=after_first,
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
