"""RingCentral party actions answer, reply and bridge through ringcentral-call-control 0.2.12
and plain HTTP: each request is checked as RingCentral checks it (400 / 403 / 404 / 409 in its
error shape). `reply` is carried out: the ringing phone stops ringing, the caller's phone is
answered by the server, hears the spoken text and is hung up. `bridge` is carried out: the
extension's two phones are released and the parties they talked to hear each other. `answer`,
which the engine cannot carry out, is 501 CMN-501 (which the SDK surfaces as an error), and
the ringing phone rings on."""
import os
import time

import pytest

from api_support import LiveCall, registered
import audio
from checks import assert_hears, wait_until
from conftest import F_B, F_C
from rc_support import Rc, assert_rc_error, cc, rc_available

pytestmark = [
    pytest.mark.server,
    pytest.mark.skipif(
        not rc_available() and os.environ.get("CI") != "true",
        reason="tests/node not installed (scripts/test.sh runs npm ci)",
    ),
]


def test_answer_is_checked_then_501_and_the_phone_rings_on(server, phones, tones, artifacts):
    call = LiveCall(server, phones, tones, artifacts, answer=False)
    b = Rc(server, "202")
    sid, pid = [(c["telephonySessionId"], c["partyId"]) for c in b.presence()["activeCalls"]][0]
    party = "/account/~/telephony/sessions/%s/parties/%s/" % (sid, pid)
    assert_rc_error(b.req("POST", party + "answer", json={"deviceId": "123"}), 400, "CMN-101")
    assert_rc_error(b.req("POST", party + "answer", data="{"), 400)
    for bad in ({}, {"replyWithText": ""}, {"replyWithPattern": {"pattern": "Nope"}},
                {"replyWithText": "x", "replyWithPattern": {"pattern": "OnMyWay"}},
                {"replyWithPattern": {"pattern": "CallMeBack", "time": 5, "timeUnit": "Week"}}):
        assert_rc_error(b.req("POST", party + "reply", json=bad), 400)
    # The SDK: answer on B's own device fails with the 501.
    port = call.B.local.split(":")[-1]
    out = cc(server, "202", "answer", sid, {"sipUriContains": ":" + port}, expect_ok=False)
    assert out["ok"] is False and out["status"] == 501, out
    # Unchanged: B still rings, A still hears ringing (EARLY), the party is Proceeding.
    time.sleep(0.3)
    assert "DISCONNECTED" not in call.B.states(call=call.inc["call"])
    assert "CONFIRMED" not in call.A.states(call=call.c)
    assert [p["status"]["code"] for p in b.session(sid)["parties"]] == ["Proceeding"] * 2
    call.B.answer(call=call.inc["call"])
    call.A.wait_state("CONFIRMED", call=call.c, timeout=5)
    call.assert_two_way("answered after the refusals")
    # A connected party cannot be replied to (409), the call goes on.
    assert_rc_error(b.req("POST", party + "reply", json={"replyWithText": "late"}), 409)
    call.A.hangup(call=call.c)
    call.assert_both_ended()


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
