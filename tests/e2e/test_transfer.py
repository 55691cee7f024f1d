"""Blind transfer (issue 5, capability 2) proven with three independent pjsua2 phones:
A (201) calls B (202); the API transfers A to C (103). Whoever should be connected must hear
the other's tone; the released phone must be disconnected; a failed transfer returns A to B."""
import json
import os
import time

import pytest
import requests

from api_support import LiveCall, Native, assert_music_on_hold, moh_enabled, node_available, \
    registered, sdk, sipgate_login
from checks import assert_anchored, assert_hears, assert_no_tone
from conftest import F_A, F_B, F_C

pytestmark = pytest.mark.server


def _third_phone(phones, server, tones, answer_code=200, delay_ms=1500):
    C = registered(phones, server, "C", "103")
    C.play(tones[F_C])
    C.auto_answer(answer_code, delay_ms=delay_ms)
    return C


def _record(phone, path, seconds=2.0):
    phone.record(path)
    time.sleep(seconds)
    phone.stop_record()
    return path


def test_blind_transfer_connects_the_caller_to_the_target(server, phones, tones, artifacts):
    live = LiveCall(server, phones, tones, artifacts)
    C = _third_phone(phones, server, tones, delay_ms=1500)
    api = Native(server)
    call = api.one_call()
    b_leg = Native.leg(call, "202")

    mc = C.mark()
    t0 = time.monotonic()
    r = api.req("POST", "/calls/%s/transfer" % call["id"], 202, json={"target": "103"})
    assert r.json()["id"] == call["id"]
    inc = C.wait_incoming(since=mc, timeout=5)
    ringing_ms = (inc["t"] - t0) * 1000
    print("API request -> target phone ringing: %.1f ms" % ringing_ms)
    assert inc["from"] and "201" in inc["from"], inc  # the kept party's number is shown

    # While C rings, A hears music on hold and not B.
    ra = _record(live.A, os.path.join(artifacts, "A_while_ringing.wav"), seconds=1.0)
    assert_no_tone(ra, F_B, t0=0.3, what="A must not hear B during the transfer")

    # C answers: B is released, A and C talk.
    C.wait_state("CONFIRMED", call=inc["call"], timeout=5)
    live.B.wait_state("DISCONNECTED", call=live.inc["call"], timeout=5)
    assert_anchored(C.wait_media(lambda e: e["active"], call=inc["call"]), server)
    time.sleep(0.7)
    ra = _record(live.A, os.path.join(artifacts, "A_after.wav"))
    rc = _record(C, os.path.join(artifacts, "C_after.wav"))
    assert_hears(ra, F_C, F_A, t0=0.7, what="A hears C after the transfer")
    assert_hears(rc, F_A, F_C, t0=0.7, what="C hears A after the transfer")
    assert_no_tone(ra, F_B, t0=0.7, what="A must not hear B after the transfer")

    after = api.one_call()
    assert after["state"] == "answered", after
    assert Native.leg(after, "103")["state"] == "answered", after
    assert all(l["id"] != b_leg["id"] for l in after["legs"]), after
    assert "DISCONNECTED" not in live.A.states(call=live.c)

    live.A.hangup(call=live.c)
    C.wait_state("DISCONNECTED", call=inc["call"], timeout=5)
    server.wait_metric("hookflash_active_calls", 0)
    hist = server.cli("calls", "history")
    assert hist.returncode == 0 and "transferred" in hist.stdout, hist.stdout


@pytest.mark.parametrize("code", [486, 603])
def test_failed_blind_transfer_returns_the_caller(server, phones, tones, artifacts, code):
    live = LiveCall(server, phones, tones, artifacts)
    C = _third_phone(phones, server, tones, answer_code=code, delay_ms=300)
    api = Native(server)
    call = api.one_call()

    mc = C.mark()
    api.req("POST", "/calls/%s/transfer" % call["id"], 202, json={"target": "103"})
    C.wait_incoming(since=mc, timeout=5)
    # The target refuses: A is back with B, nobody was dropped.
    time.sleep(1.0)
    assert "DISCONNECTED" not in live.A.states(call=live.c)
    assert "DISCONNECTED" not in live.B.states(call=live.inc["call"])
    time.sleep(0.7)
    live.assert_two_way("after failed transfer")
    after = api.one_call()
    assert {l["owner_extension"] for l in after["legs"]} == {"201", "202"}, after
    assert not any(l["held"] for l in after["legs"]), after
    live.A.hangup(call=live.c)
    live.assert_both_ended()


def test_transferor_hangs_up_while_target_rings(server, phones, tones, artifacts):
    """Blind transfer semantics: the transferor may leave at once; the target still gets A."""
    live = LiveCall(server, phones, tones, artifacts)
    C = _third_phone(phones, server, tones, delay_ms=2000)
    api = Native(server)
    call = api.one_call()
    mc = C.mark()
    api.req("POST", "/calls/%s/transfer" % call["id"], 202, json={"target": "103"})
    inc = C.wait_incoming(since=mc, timeout=5)
    live.B.hangup(call=live.inc["call"])
    live.B.wait_state("DISCONNECTED", call=live.inc["call"], timeout=5)
    if moh_enabled():
        time.sleep(0.5)
        ra = _record(live.A, os.path.join(artifacts, "A_moh.wav"), seconds=1.0)
        assert_music_on_hold(ra, F_B, what="A waits with music on hold")
    C.wait_state("CONFIRMED", call=inc["call"], timeout=5)
    time.sleep(0.7)
    ra = _record(live.A, os.path.join(artifacts, "A_after.wav"))
    assert_hears(ra, F_C, F_A, t0=0.7, what="A hears C")
    live.A.hangup(call=live.c)
    C.wait_state("DISCONNECTED", call=inc["call"], timeout=5)


def test_transfer_bad_input_leaves_the_call_unchanged(server, phones, tones, artifacts):
    live = LiveCall(server, phones, tones, artifacts)
    registered(phones, server, "C", "103")
    api = Native(server)
    call = api.one_call()
    path = "/calls/%s/transfer" % call["id"]
    cases = [
        ({"target": "no-such-user"}, 400),  # not an extension and not a number
        ({"target": "20 02!x"}, 400),  # malformed
        ({"target": ""}, 400),
        ({"target": "104"}, 400),  # provisioned but no registered phone
        ({"target": "202"}, 400),  # the transferor itself
        ({"target": "103", "leg_id": "nope"}, 404),
        ({"tgt": "103"}, 400),  # wrong body shape
    ]
    for body, status in cases:
        r = api.req("POST", path, status, json=body)
        assert "error" in r.json(), r.text
    api.req("POST", "/calls/nope/transfer", 404, json={"target": "103"})
    # The sipgate dialect: its status codes and error shape.
    sg = {"Authorization": "Bearer " + sipgate_login(server, "202@acme.local", "secret202")}
    url = server.http + "/v2/calls/%s/transfer" % call["id"]
    for body, status in [
        ({"attended": False, "phoneNumber": "nobody"}, 400),
        ({"attended": False}, 400),
        ({"attended": "yes", "phoneNumber": "103"}, 400),
    ]:
        r = requests.post(url, json=body, headers=sg, timeout=5)
        assert r.status_code == status, (body, r.status_code, r.text)
        assert r.json(), r.text
    r = requests.post(server.http + "/v2/calls/nope/transfer", headers=sg, timeout=5,
                      json={"attended": False, "phoneNumber": "103"})
    assert r.status_code == 404, r.text
    after = api.one_call()
    assert [l["id"] for l in after["legs"]] == [l["id"] for l in call["legs"]]
    live.assert_two_way("after refused transfers")
    live.A.hangup(call=live.c)
    live.assert_both_ended()


def test_transfer_of_a_ringing_call_is_409(server, phones, tones, artifacts):
    live = LiveCall(server, phones, tones, artifacts, answer=False)
    registered(phones, server, "C", "103")
    api = Native(server)
    call = api.one_call()
    r = api.req("POST", "/calls/%s/transfer" % call["id"], 409, json={"target": "103"})
    assert "ringing" in r.text, r.text
    live.A.hangup(call=live.c)


@pytest.mark.skipif(not node_available(), reason="node / sipgateio SDK not installed")
def test_sipgate_sdk_blind_transfer(server, phones, tones, artifacts):
    """sipgateio's rtcm.transfer from B's user (202): A ends up talking to C."""
    live = LiveCall(server, phones, tones, artifacts)
    C = _third_phone(phones, server, tones, delay_ms=500)
    creds = {"token": sipgate_login(server, "202@acme.local", "secret202")}
    call_id = sdk(server, creds, "list")["result"][0]["callId"]
    mc = C.mark()
    sdk(server, creds, "transfer", call_id, json.dumps({"attended": False, "phoneNumber": "103"}))
    inc = C.wait_incoming(since=mc, timeout=5)
    C.wait_state("CONFIRMED", call=inc["call"], timeout=5)
    live.B.wait_state("DISCONNECTED", call=live.inc["call"], timeout=5)
    time.sleep(0.7)
    ra = _record(live.A, os.path.join(artifacts, "A_after.wav"))
    assert_hears(ra, F_C, F_A, t0=0.7, what="A hears C after the SDK transfer")

    # Bad target through the SDK: an error, and the call goes on.
    bad = sdk(server, creds, "transfer", call_id,
              json.dumps({"attended": False, "phoneNumber": "nobody"}), expect_ok=False)
    assert not bad["ok"], bad
    assert "DISCONNECTED" not in live.A.states(call=live.c)
    live.A.hangup(call=live.c)
    C.wait_state("DISCONNECTED", call=inc["call"], timeout=5)


# ------------------------------------------------------------ phone-initiated (REFER)
def test_phone_refer_blind_transfer(server, phones, tones, artifacts):
    """B's phone transfers A to C with REFER (pjsua2 xfer): the server carries it out and
    reports progress to B with NOTIFY sipfrag; A ends up with C, B is released."""
    live = LiveCall(server, phones, tones, artifacts)
    C = _third_phone(phones, server, tones, delay_ms=800)
    mb, mc = live.B.mark(), C.mark()
    live.B.xfer(server.uri("103"), call=live.inc["call"])
    inc = C.wait_incoming(since=mc, timeout=5)
    assert "201" in inc["from"], inc
    C.wait_state("CONFIRMED", call=inc["call"], timeout=5)
    final = live.B.wait_for("xfer_status", lambda e: e["final"], since=mb, timeout=5)
    assert final["code"] == 200, final
    progress = [e["code"] for e in live.B.find("xfer_status", since=mb)]
    assert progress[0] in (100, 180), progress  # Trying/Ringing came before the final 200
    live.B.wait_state("DISCONNECTED", call=live.inc["call"], timeout=5)
    time.sleep(0.7)
    ra = _record(live.A, os.path.join(artifacts, "A_after.wav"))
    rc = _record(C, os.path.join(artifacts, "C_after.wav"))
    assert_hears(ra, F_C, F_A, t0=0.7, what="A hears C after REFER")
    assert_hears(rc, F_A, F_C, t0=0.7, what="C hears A after REFER")
    live.A.hangup(call=live.c)
    C.wait_state("DISCONNECTED", call=inc["call"], timeout=5)


def test_phone_refer_to_busy_target_keeps_the_call(server, phones, tones, artifacts):
    live = LiveCall(server, phones, tones, artifacts)
    C = _third_phone(phones, server, tones, answer_code=486, delay_ms=300)
    mb, mc = live.B.mark(), C.mark()
    live.B.xfer("tel:103", call=live.inc["call"])  # tel: Refer-To works too
    C.wait_incoming(since=mc, timeout=5)
    final = live.B.wait_for("xfer_status", lambda e: e["final"], since=mb, timeout=5)
    assert final["code"] == 486, final
    time.sleep(0.7)
    assert "DISCONNECTED" not in live.B.states(call=live.inc["call"])
    live.assert_two_way("after refused REFER")

    # A REFER to nowhere is refused outright; the call goes on.
    mb = live.B.mark()
    live.B.xfer(server.uri("no-such-user"), call=live.inc["call"])
    final = live.B.wait_for("xfer_status", lambda e: e["final"], since=mb, timeout=5)
    assert final["code"] == 404, final
    live.assert_two_way("after REFER to nowhere")
    live.A.hangup(call=live.c)
    live.assert_both_ended()


# ------------------------------------------------------------------ attended (API)
def _start_attended(server, phones, tones, artifacts, api_call=True):
    live = LiveCall(server, phones, tones, artifacts)
    C = _third_phone(phones, server, tones, delay_ms=500)
    api = Native(server)
    call = api.one_call()
    mb, mc = live.B.mark(), C.mark()
    api.req("POST", "/calls/%s/transfer" % call["id"], 202,
            json={"target": "103", "attended": True})
    inc = C.wait_incoming(since=mc, timeout=5)
    C.wait_state("CONFIRMED", call=inc["call"], timeout=5)
    # B's phone is moved to the consultation by a re-INVITE (its media goes active again).
    live.B.wait_media(lambda e: e["active"], call=live.inc["call"], since=mb, timeout=5)
    return live, C, inc, api, call


def _assert_consulting(live, C, inc, artifacts):
    time.sleep(0.7)
    rb = _record(live.B, os.path.join(artifacts, "B_consult.wav"))
    rc = _record(C, os.path.join(artifacts, "C_consult.wav"))
    ra = _record(live.A, os.path.join(artifacts, "A_waiting.wav"))
    assert_hears(rb, F_C, F_B, t0=0.7, what="B talks to C in the consultation")
    assert_hears(rc, F_B, F_C, t0=0.7, what="C talks to B in the consultation")
    assert_no_tone(ra, F_B, t0=0.5, what="A must not hear B during the consultation")
    assert_no_tone(ra, F_C, t0=0.5, what="A must not hear C during the consultation")
    if moh_enabled():
        assert_music_on_hold(ra, F_C, what="A waits with music on hold")


def test_attended_transfer_complete(server, phones, tones, artifacts):
    live, C, inc, api, call = _start_attended(server, phones, tones, artifacts)
    _assert_consulting(live, C, inc, artifacts)
    r = api.req("POST", "/calls/%s/transfer/complete" % call["id"], 200)
    assert Native.leg(r.json(), "103")["state"] == "answered", r.text
    live.B.wait_state("DISCONNECTED", call=live.inc["call"], timeout=5)
    time.sleep(0.7)
    ra = _record(live.A, os.path.join(artifacts, "A_after.wav"))
    rc = _record(C, os.path.join(artifacts, "C_after.wav"))
    assert_hears(ra, F_C, F_A, t0=0.7, what="A hears C after completing")
    assert_hears(rc, F_A, F_C, t0=0.7, what="C hears A after completing")
    api.req("POST", "/calls/%s/transfer/complete" % call["id"], 409)  # nothing to complete
    live.A.hangup(call=live.c)
    C.wait_state("DISCONNECTED", call=inc["call"], timeout=5)


def test_attended_transfer_cancel(server, phones, tones, artifacts):
    live, C, inc, api, call = _start_attended(server, phones, tones, artifacts)
    _assert_consulting(live, C, inc, artifacts)
    api.req("POST", "/calls/%s/transfer/cancel" % call["id"], 200)
    C.wait_state("DISCONNECTED", call=inc["call"], timeout=5)
    time.sleep(1.0)
    assert "DISCONNECTED" not in live.B.states(call=live.inc["call"])
    live.assert_two_way("after cancelling the consultation")
    after = api.one_call()
    assert {l["owner_extension"] for l in after["legs"]} == {"201", "202"}, after

    # Cancel while the target still rings: it stops ringing, never answers.
    C.auto_answer(200, delay_ms=20000)
    mc = C.mark()
    api.req("POST", "/calls/%s/transfer" % call["id"], 202,
            json={"target": "103", "attended": True})
    inc2 = C.wait_incoming(since=mc, timeout=5)
    api.req("POST", "/calls/%s/transfer/complete" % call["id"], 409)  # not answered yet
    api.req("POST", "/calls/%s/transfer/cancel" % call["id"], 200)
    C.wait_state("DISCONNECTED", call=inc2["call"], timeout=5)
    assert "CONFIRMED" not in C.states(call=inc2["call"])
    time.sleep(0.7)
    live.assert_two_way("after cancelling a ringing target")
    live.A.hangup(call=live.c)
    live.assert_both_ended()


def test_attended_transfer_target_hangs_up_returns_to_the_call(server, phones, tones, artifacts):
    live, C, inc, api, call = _start_attended(server, phones, tones, artifacts)
    time.sleep(0.5)
    mb = live.B.mark()
    C.hangup(call=inc["call"])
    live.B.wait_media(lambda e: e["active"], call=live.inc["call"], since=mb, timeout=5)
    time.sleep(0.7)
    live.assert_two_way("after the consulted target hung up")
    live.A.hangup(call=live.c)
    live.assert_both_ended()


@pytest.mark.skipif(not node_available(), reason="node / sipgateio SDK not installed")
def test_sipgate_sdk_attended_transfer_completes_when_the_user_hangs_up(
        server, phones, tones, artifacts):
    live = LiveCall(server, phones, tones, artifacts)
    C = _third_phone(phones, server, tones, delay_ms=500)
    creds = {"token": sipgate_login(server, "202@acme.local", "secret202")}
    call_id = sdk(server, creds, "list")["result"][0]["callId"]
    mb, mc = live.B.mark(), C.mark()
    sdk(server, creds, "transfer", call_id, json.dumps({"attended": True, "phoneNumber": "103"}))
    inc = C.wait_incoming(since=mc, timeout=5)
    C.wait_state("CONFIRMED", call=inc["call"], timeout=5)
    live.B.wait_media(lambda e: e["active"], call=live.inc["call"], since=mb, timeout=5)
    time.sleep(0.7)
    rb = _record(live.B, os.path.join(artifacts, "B_consult.wav"))
    assert_hears(rb, F_C, F_B, t0=0.7, what="B consults C")
    live.B.hangup(call=live.inc["call"])  # the user hangs up: A is joined with C
    time.sleep(0.7)
    ra = _record(live.A, os.path.join(artifacts, "A_after.wav"))
    assert_hears(ra, F_C, F_A, t0=0.7, what="A hears C after the user hung up")
    assert "DISCONNECTED" not in C.states(call=inc["call"])
    live.A.hangup(call=live.c)
    C.wait_state("DISCONNECTED", call=inc["call"], timeout=5)


def test_blind_transfer_by_the_caller(server, phones, tones, artifacts):
    """The caller's side (the dialog where we are UAS) can be the transferor too."""
    live = LiveCall(server, phones, tones, artifacts)
    C = _third_phone(phones, server, tones, delay_ms=300)
    api = Native(server)
    call = api.one_call()
    a_leg = Native.leg(call, "201")
    api.req("POST", "/calls/%s/transfer" % call["id"], 202,
            json={"target": "103", "leg_id": a_leg["id"]})
    inc = C.wait_incoming(timeout=5)
    C.wait_state("CONFIRMED", call=inc["call"], timeout=5)
    live.A.wait_state("DISCONNECTED", call=live.c, timeout=5)
    time.sleep(0.7)
    rb = _record(live.B, os.path.join(artifacts, "B_after.wav"))
    assert_hears(rb, F_C, F_B, t0=0.7, what="B hears C after A transferred it")
    assert "DISCONNECTED" not in live.B.states(call=live.inc["call"])
    live.B.hangup(call=live.inc["call"])
    C.wait_state("DISCONNECTED", call=inc["call"], timeout=5)


def test_phone_attended_transfer_refer_with_replaces(server, phones, tones, artifacts):
    """B talks to A (call 1) and to C (call 2), then transfers with pjsua2 xferReplaces:
    REFER on call 1 whose Refer-To replaces call 2. The server joins A with C itself and
    releases B from both calls."""
    live = LiveCall(server, phones, tones, artifacts)
    C = _third_phone(phones, server, tones, delay_ms=300)
    c2 = live.B.call(server.uri("103"))
    inc_c = C.wait_incoming(timeout=5)
    C.wait_state("CONFIRMED", call=inc_c["call"], timeout=5)
    live.B.wait_state("CONFIRMED", call=c2, timeout=5)
    api = Native(server)
    assert len(api.calls()) == 2
    mb, mc = live.B.mark(), C.mark()
    live.B.xfer_replaces(other=c2, call=live.inc["call"])
    final = live.B.wait_for("xfer_status", lambda e: e["final"], since=mb, timeout=8)
    assert final["code"] == 200, final
    # C's phone is moved to the call with A by a re-INVITE; B leaves both calls.
    C.wait_media(lambda e: e["active"], call=inc_c["call"], since=mc, timeout=5)
    live.B.wait_state("DISCONNECTED", call=live.inc["call"], timeout=5)
    live.B.wait_state("DISCONNECTED", call=c2, timeout=5)
    time.sleep(0.7)
    ra = _record(live.A, os.path.join(artifacts, "A_after.wav"))
    rc = _record(C, os.path.join(artifacts, "C_after.wav"))
    assert_hears(ra, F_C, F_A, t0=0.7, what="A hears C after REFER/Replaces")
    assert_hears(rc, F_A, F_C, t0=0.7, what="C hears A after REFER/Replaces")
    calls = api.calls()
    assert len(calls) == 1 and {l["owner_extension"] for l in calls[0]["legs"]} == {"201", "103"}, calls
    # C hangs up: its BYE reaches the call it was handed to, which ends A's side too.
    C.hangup(call=inc_c["call"])
    live.A.wait_state("DISCONNECTED", call=live.c, timeout=5)
    server.wait_metric("hookflash_active_calls", 0)
