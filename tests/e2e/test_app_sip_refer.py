"""The `sip:refer` verb (and `hangup` with headers) with independent peers: 201 calls a number routed to an
application that answers and REFERs the caller elsewhere. pjsua2 accepts the REFER (202) and
calls the target itself through the server; what the phones hear and what the application's
hooks receive are the proof.

- To 202 (a phone that answers): 201's new call reaches 202, tones both ways; the eventHook
  gets the NOTIFYs, the actionHook `referStatus=202`, `final_referred_call_status=200`, and
  the server hangs up its own leg (the caller has left the application, as in jambonz).
- To 104 (an extension with no phone): 201's call to it fails; the actionHook gets the
  failure and its answer (a 2000 Hz play, then hangup) is heard on the original call, which
  stayed up.
- A referTo that is not a URI or a number: the verb fails cleanly, the actionHook hears of it
  (referStatus 400) and the application goes on.
"""
import json
import os
import time

import pytest

import audio
from api_support import Native, registered
from checks import assert_hears, wait_until
from conftest import F_A, F_B, F_C
from test_app_runtime import APP_NUMBER, hooks, start, verify_signature  # noqa: F401

pytestmark = pytest.mark.server


def _app(hook, refer_to):
    return [
        {"verb": "answer"},
        {"verb": "pause", "length": 1},
        {"verb": "sip:refer", "referTo": refer_to, "actionHook": "/refer-done",
         "eventHook": "/refer-event"},
        {"verb": "play", "url": hook.url("/tone_c.wav")},
        {"verb": "hangup"},
    ]


def test_sip_refer_moves_the_caller_to_another_phone(server_factory, phones, tones, hooks,
                                                      artifacts):
    tone_c = os.path.join(artifacts, "tone_c.wav")
    audio.make_tone(tone_c, F_C, seconds=2)
    hook = hooks({"/call": None, "/refer-done": (200, []), "/refer-event": (200, [])},
                 files={"/tone_c.wav": tone_c})
    hook.routes["/call"] = (200, _app(hook, "202"))
    server = start(server_factory, {"name": "refer", "call_hook": hook.url("/call")})
    A = registered(phones, server, "A", "201")
    B = registered(phones, server, "B", "202")
    A.play(tones[F_A])
    B.play(tones[F_B])
    B.auto_answer(200)
    c = A.call(server.uri(APP_NUMBER))
    A.wait_state("CONFIRMED", call=c, timeout=10)
    xfer = A.wait_for("transfer_request", timeout=10)
    assert "202@" in xfer["dst"], xfer
    new = xfer["new_call"]
    inc = B.wait_incoming(timeout=10)
    assert "201" in inc["from"], inc  # the caller itself calls the target
    A.wait_state("CONFIRMED", call=new, timeout=10)
    B.wait_state("CONFIRMED", call=inc["call"], timeout=10)
    # The application's leg ends once the caller reports its call to 202 answered.
    A.wait_state("DISCONNECTED", call=c, timeout=10)
    wait_until(lambda: hook.got("/refer-done"), timeout=5, what="the actionHook")
    done = hook.got("/refer-done")[0]
    secret = Native(server).req("GET", "/account", 200).json()["webhook_secret"]
    for req in hook.got("/refer-done") + hook.got("/refer-event"):
        verify_signature(req, secret)
    body = json.loads(done["raw"])
    assert body["referStatus"] == 202 and body["final_referred_call_status"] == 200, body
    assert hook.got("/refer-event"), "no eventHook request for the NOTIFYs"
    time.sleep(0.5)
    ra, rb = os.path.join(artifacts, "A_new.wav"), os.path.join(artifacts, "B_new.wav")
    A.record(ra)
    B.record(rb)
    time.sleep(2.0)
    A.stop_record()
    B.stop_record()
    assert_hears(ra, F_B, F_A, t0=0.3, what="A hears B on the call the REFER made")
    assert_hears(rb, F_A, F_B, t0=0.3, what="B hears A on the call the REFER made")
    # The verbs after sip:refer did not run (the caller had left): no 2000 Hz fetch.
    assert not [r for r in hook.requests if r["path"] == "/tone_c.wav"]
    A.hangup(call=new)
    B.wait_state("DISCONNECTED", call=inc["call"], timeout=10)
    server.wait_metric("hookflash_active_calls", 0)


def test_failed_sip_refer_keeps_the_caller_with_the_application(server_factory, phones, tones,
                                                                  hooks, artifacts):
    tone_c = os.path.join(artifacts, "tone_c.wav")
    audio.make_tone(tone_c, F_C, seconds=3)
    hook = hooks({"/call": None, "/refer-done": None, "/refer-event": (200, [])},
                 files={"/tone_c.wav": tone_c})
    hook.routes["/call"] = (200, _app(hook, "104"))  # 104 has no phone: the call fails
    got = []

    def on_done(body):
        got.append(body)
        return 200, [{"verb": "play", "url": hook.url("/tone_c.wav")}, {"verb": "hangup"}]

    hook.routes["/refer-done"] = on_done
    server = start(server_factory, {"name": "refer", "call_hook": hook.url("/call")})
    A = registered(phones, server, "A", "201")
    A.play(tones[F_A])
    c = A.call(server.uri(APP_NUMBER))
    A.wait_state("CONFIRMED", call=c, timeout=10)
    xfer = A.wait_for("transfer_request", timeout=10)
    new = xfer["new_call"]
    A.wait_state("DISCONNECTED", call=new, timeout=15)  # 104 is not reachable
    wait_until(lambda: got, timeout=10, what="the actionHook")
    assert got[0]["referStatus"] == 202, got
    assert got[0]["final_referred_call_status"] >= 400, got
    # The original call is still up and hears the actionHook's answer.
    assert "DISCONNECTED" not in A.states(call=c)
    heard = os.path.join(artifacts, "A_after_refer.wav")
    A.record(heard)
    time.sleep(1.5)
    A.stop_record()
    w = audio.read_wav(heard)
    assert audio.tone_fraction(w, F_C, 0.2, w.duration - 0.1) >= 0.5, \
        audio.window_report(w, [F_C, F_A], 0.2)[:30]
    A.wait_state("DISCONNECTED", call=c, timeout=10)
    server.wait_metric("hookflash_active_calls", 0)


def test_sip_refer_with_a_bad_target_is_reported_and_the_app_goes_on(server_factory, phones,
                                                                      tones, hooks, artifacts):
    tone_c = os.path.join(artifacts, "tone_c.wav")
    audio.make_tone(tone_c, F_C, seconds=3)
    hook = hooks({"/call": None, "/refer-done": (200, [])}, files={"/tone_c.wav": tone_c})
    hook.routes["/call"] = (200, _app(hook, "not a target>"))
    server = start(server_factory, {"name": "refer", "call_hook": hook.url("/call")})
    A = registered(phones, server, "A", "201")
    c = A.call(server.uri(APP_NUMBER))
    A.wait_state("CONFIRMED", call=c, timeout=10)
    wait_until(lambda: hook.got("/refer-done"), timeout=10, what="the actionHook")
    body = json.loads(hook.got("/refer-done")[0]["raw"])
    assert body["referStatus"] == 400 and "final_referred_call_status" not in body, body
    assert not A.find("transfer_request"), "the phone got a REFER for a bad target"
    # The application went on: the play after sip:refer is heard, then the hangup.
    heard = os.path.join(artifacts, "A_after_bad_refer.wav")
    A.record(heard)
    time.sleep(1.2)
    A.stop_record()
    w = audio.read_wav(heard)
    assert audio.tone_fraction(w, F_C, 0.2, w.duration - 0.1) >= 0.5, \
        audio.window_report(w, [F_C], 0.2)[:30]
    A.wait_state("DISCONNECTED", call=c, timeout=10)


def test_hangup_headers_reach_the_callers_bye(server_factory, hooks):
    """`hangup` with `headers`: the BYE the caller (a raw carrier on the trunk) receives
    carries them."""
    import rawsip

    hook = hooks({"/call": (200, [
        {"verb": "answer"},
        {"verb": "pause", "length": 0.5},
        {"verb": "hangup", "headers": {"X-Reason": "done by app", "X-Case-Id": "4711"}},
    ])})
    server = start(server_factory, {"name": "bye", "call_hook": hook.url("/call")})
    carrier = rawsip.Peer(server.sip_port, port=server.trunk_port, name="carrier")
    try:
        ruri = "sip:%s@127.0.0.1:%d" % (APP_NUMBER, server.sip_port)
        req = carrier.invite(ruri, "sip:+4969777777@127.0.0.1", ruri)
        final = carrier.wait_final(req.call_id, 1, timeout=10)
        assert final is not None and final.status == 200, final
        bye = carrier.wait_request("BYE", timeout=10,
                                   pred=lambda m: m.get("call-id") == req.call_id)
        assert bye is not None, "no BYE"
        assert bye.get("x-reason") == "done by app", bye.raw
        assert bye.get("x-case-id") == "4711", bye.raw
    finally:
        carrier.close()
    server.wait_metric("hookflash_active_calls", 0)
