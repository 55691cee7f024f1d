"""RingCentral party actions answer, reply and bridge through ringcentral-call-control 0.2.12
and plain HTTP: each request is checked as RingCentral checks it (400 / 403 / 404 / 409 in its
error shape). `answer` is carried out with auto-answer: the chosen phone gets a new INVITE with
the intercom headers and (its auto-answer setting on) answers it, the extension's other phone
stops ringing, the caller is connected to it; a phone that does not answer by itself rings
again the ordinary way. `reply`: the ringing phone stops ringing, the caller's phone is
answered by the server, hears the spoken text and is hung up. `bridge`: the extension's two
phones are released and the parties they talked to hear each other."""
import os
import time

import pytest

from api_support import LiveCall, registered
import audio
from checks import assert_hears, wait_until
from conftest import F_A, F_B, F_C
from rc_support import Rc, assert_rc_error, cc, rc_available
from test_ringcentral_subscriptions import SESSIONS, receiver, statuses  # noqa: F401 (fixture)

pytestmark = [
    pytest.mark.server,
    pytest.mark.skipif(
        not rc_available() and os.environ.get("CI") != "true",
        reason="tests/node not installed (scripts/test.sh runs npm ci)",
    ),
]


EXTRA = [("203", "secret203", "Carol")]


def _ring_201_twice(server_factory, phones, tones, receiver=None):
    """203 (plays F_A) calls 201, whose two phones ring: 201a (auto-answer setting off) and
    201b (plays F_B, its auto-answer setting on: it answers an INVITE that asks it to)."""
    server = server_factory(extra_users=EXTRA)
    C = registered(phones, server, "C", "203")
    C.play(tones[F_A])
    a1 = registered(phones, server, "A1", "201")
    a2 = registered(phones, server, "A2", "201")
    a2.play(tones[F_B])
    a2.intercom(True)
    rc = Rc(server, "201")
    if receiver is not None:
        rc.req("POST", "/subscription", 200, json={
            "eventFilters": [SESSIONS],
            "deliveryMode": {"transportType": "WebHook", "address": receiver.url}})
    c = C.call(server.uri("201"))
    i1, i2 = a1.wait_incoming(timeout=5), a2.wait_incoming(timeout=5)
    assert not i1["auto_answer_header"] and not i2["auto_answer_header"], (i1, i2)
    wait_until(lambda: rc.presence()["activeCalls"], what="the ringing call in presence")
    sid, pid = [(x["telephonySessionId"], x["partyId"]) for x in rc.presence()["activeCalls"]][0]
    return server, C, c, a1, i1, a2, i2, rc, sid, pid


def test_answer_on_a_device_auto_answers_it_and_the_other_stops(server_factory, phones, tones,
                                                                 artifacts, receiver):
    server, C, c, a1, i1, a2, i2, rc, sid, pid = _ring_201_twice(server_factory, phones, tones,
                                                                 receiver)
    party = "/account/~/telephony/sessions/%s/parties/%s/" % (sid, pid)
    # An unknown device and malformed bodies: 400 in RingCentral's shape, the call rings on.
    assert_rc_error(rc.req("POST", party + "answer", json={"deviceId": "123"}), 400, "CMN-101")
    assert_rc_error(rc.req("POST", party + "answer", json={}), 400)
    assert_rc_error(rc.req("POST", party + "answer", data="{"), 400)
    # Another extension cannot answer 201's party.
    r = Rc(server, "202").req("POST", party + "answer", json={"deviceId": "1"})
    assert r.status_code in (403, 404), (r.status_code, r.text)
    time.sleep(0.3)
    assert "DISCONNECTED" not in a1.states(call=i1["call"])
    assert "DISCONNECTED" not in a2.states(call=i2["call"])
    assert "CONFIRMED" not in C.states(call=c)
    assert [p["status"]["code"] for p in rc.session(sid)["parties"]] == ["Proceeding"] * 2

    # The SDK answers on 201b: its ordinary INVITE is cancelled, a new one asks it to answer
    # by itself (it does); 201a stops ringing without ever answering.
    m2 = a2.mark()
    port = a2.local.split(":")[-1]
    out = cc(server, "201", "answer", sid, {"sipUriContains": ":" + port})
    assert out["ok"] is True, out
    ia = a2.wait_incoming(since=m2, timeout=5)
    assert ia["auto_answer_header"], ia
    a2.wait_state("CONFIRMED", call=ia["call"], timeout=5)
    C.wait_state("CONFIRMED", call=c, timeout=5)
    a1.wait_state("DISCONNECTED", call=i1["call"], timeout=5)
    a2.wait_state("DISCONNECTED", call=i2["call"], timeout=5)
    assert "CONFIRMED" not in a1.states(call=i1["call"])
    assert "CONFIRMED" not in a2.states(call=i2["call"])
    # Audio both ways between 203 and 201b.
    time.sleep(0.5)
    rcv, r2 = os.path.join(artifacts, "C.wav"), os.path.join(artifacts, "A2.wav")
    C.record(rcv)
    a2.record(r2)
    time.sleep(2.0)
    C.stop_record()
    a2.stop_record()
    assert_hears(rcv, F_B, F_A, t0=0.3, what="203 hears 201b")
    assert_hears(r2, F_A, F_B, t0=0.3, what="201b hears 203")
    # The party is Answered, in the session and in the notifications.
    assert {p["status"]["code"] for p in rc.session(sid)["parties"]} == {"Answered"}
    wait_until(lambda: "Answered" in statuses(receiver.got, pid)[1], what="Answered notified")
    assert statuses(receiver.got, pid)[1][-2:] == ["Proceeding", "Answered"], receiver.got
    # Answered now: answer is a ringing-call action (409).
    assert_rc_error(rc.req("POST", party + "answer", json={"deviceId": out["result"]}), 409)
    C.hangup(call=c)
    a2.wait_state("DISCONNECTED", call=ia["call"], timeout=5)
    server.wait_metric("hookflash_active_calls", 0)


def test_answer_on_a_device_that_does_not_auto_answer_rings_on(server_factory, phones, tones,
                                                               artifacts):
    server, C, c, a1, i1, a2, i2, rc, sid, pid = _ring_201_twice(server_factory, phones, tones)
    # 201a's auto-answer setting is off: it rings for the auto-answer INVITE, which the server
    # gives up after its bound; then 201a rings the ordinary way. The caller is never dropped
    # and 201b rings throughout.
    m1 = a1.mark()
    out = cc(server, "201", "answer", sid, {"sipUriContains": ":" + a1.local.split(":")[-1]})
    assert out["ok"] is True, out
    a1.wait_state("DISCONNECTED", call=i1["call"], timeout=5)
    ia = a1.wait_incoming(since=m1, timeout=5)
    assert ia["auto_answer_header"], ia
    a1.wait_state("DISCONNECTED", call=ia["call"], timeout=10)
    again = a1.wait_for("incoming", lambda e: e["call"] not in (i1["call"], ia["call"]),
                        since=m1, timeout=5)
    assert not again["auto_answer_header"], again
    assert "DISCONNECTED" not in C.states(call=c), "the caller must still be ringing"
    assert "DISCONNECTED" not in a2.states(call=i2["call"]), "201b must ring on"
    assert [p["status"]["code"] for p in rc.session(sid)["parties"]] == ["Proceeding"] * 2
    # 201a picks up by hand: connected.
    a1.answer(call=again["call"])
    C.wait_state("CONFIRMED", call=c, timeout=5)
    a2.wait_state("DISCONNECTED", call=i2["call"], timeout=5)
    C.hangup(call=c)
    a1.wait_state("DISCONNECTED", call=again["call"], timeout=5)
    server.wait_metric("hookflash_active_calls", 0)


def test_reply_answers_the_caller_with_speech_and_ends_the_call(server, phones, tones,
                                                                artifacts):
    call = LiveCall(server, phones, tones, artifacts, answer=False)
    b = Rc(server, "202")
    sid = b.presence()["activeCalls"][0]["telephonySessionId"]
    heard = os.path.join(artifacts, "A_reply.wav")
    call.A.record(heard)
    out = cc(server, "202", "reply", sid,
             {"replyWithText": "I am in a meeting, I will call you back in ten minutes"})
    assert out["ok"] is True, out
    # B stops ringing without having answered; A is answered by the server...
    call.B.wait_state("DISCONNECTED", call=call.inc["call"], timeout=10)
    assert "CONFIRMED" not in call.B.states(call=call.inc["call"])
    call.A.wait_state("CONFIRMED", call=call.c, timeout=10)
    # ... hears the text spoken, then is hung up when it is over.
    call.A.wait_state("DISCONNECTED", call=call.c, timeout=20)
    call.A.stop_record()
    w = audio.read_wav(heard)
    assert w.duration > 1.5, w.duration
    assert not audio.silent(w, 0.2), "the caller heard no reply"
    assert audio.tone_fraction(w, F_B, 0.2) < 0.2, "the caller heard the callee's phone"
    m = server.metrics()
    assert (m.value("hookflash_calls_ended_total", cause="rejected") or 0) >= 1, \
        m.series("hookflash_calls_ended_total")
    server.wait_metric("hookflash_active_calls", 0)


def test_bridge_is_checked_then_connects_the_other_parties(server, phones, tones, artifacts):
    call = LiveCall(server, phones, tones, artifacts)  # A (201) -> B (202)
    A2 = registered(phones, server, "A2", "201")
    A2.auto_answer(200, delay_ms=200)
    C = registered(phones, server, "C", "103")
    C.play(tones[F_C])
    c2 = C.call(server.uri("201"))  # rings A and A2; A is busy talking, A2 answers
    C.wait_state("CONFIRMED", call=c2, timeout=10)
    a = Rc(server, "201")
    calls = wait_until(lambda: len(a.presence()["activeCalls"]) == 2 and a.presence()["activeCalls"],
                       what="201 in two calls")
    with_b = Rc(server, "202").presence()["activeCalls"][0]["telephonySessionId"]
    (s1, p1), (s2, p2) = sorted([(c["telephonySessionId"], c["partyId"]) for c in calls],
                                key=lambda c: c[0] != with_b)  # s1: the call with B
    bridge = "/account/~/telephony/sessions/%s/parties/%s/bridge" % (s1, p1)
    assert_rc_error(a.req("POST", bridge, json={}), 400)
    assert_rc_error(a.req("POST", bridge, json={"telephonySessionId": "nope", "partyId": p2}),
                    404, "CMN-102")
    assert_rc_error(a.req("POST", bridge, json={"telephonySessionId": s1, "partyId": p1}), 400)
    other = [p for p in Rc(server, "103").session(s2)["parties"] if p["id"] != p2][0]["id"]
    assert_rc_error(a.req("POST", bridge, json={"telephonySessionId": s2, "partyId": other}),
                    403)
    # The refusals changed nothing: both calls still carry audio.
    call.assert_two_way("first call after the refused bridges")
    assert "DISCONNECTED" not in C.states(call=c2)
    # The SDK bridges: 201's two phones are released, B and C talk.
    out = cc(server, "201", "bridge", s1, {"telephonySessionId": s2, "partyId": p2})
    assert out["ok"] is True, out
    call.A.wait_state("DISCONNECTED", call=call.c, timeout=10)
    A2.wait_state("DISCONNECTED", timeout=10)
    time.sleep(0.5)
    rb = os.path.join(artifacts, "B_bridged.wav")
    rc = os.path.join(artifacts, "C_bridged.wav")
    call.B.record(rb)
    C.record(rc)
    time.sleep(2.0)
    call.B.stop_record()
    C.stop_record()
    assert_hears(rb, F_C, F_B, t0=0.3, what="B hears C")
    assert_hears(rc, F_B, F_C, t0=0.3, what="C hears B")
    parties = Rc(server, "202").session(s1)["parties"]
    assert {p["status"]["code"] for p in parties} == {"Answered"}, parties
    assert len(parties) == 2, parties
    C.hangup(call=c2)
    call.B.wait_state("DISCONNECTED", call=call.inc["call"], timeout=10)
    server.wait_metric("hookflash_active_calls", 0)
