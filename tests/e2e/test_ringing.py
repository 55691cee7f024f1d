"""Operations on a ringing call (issue 5, capability 6) with independent pjsua2 phones:
forward, reject, and ignore on one device; answered calls refuse them with 409."""
import os
import time

import pytest

from api_support import LiveCall, Native, registered
from checks import assert_hears, wait_until
from conftest import F_A, F_B, F_C

pytestmark = pytest.mark.server


def _ringing_call(server, phones, tones):
    live = LiveCall(server, phones, tones, "", answer=False)
    api = Native(server)
    return live, api, api.one_call()


def test_forward_a_ringing_call(server, phones, tones, artifacts):
    live, api, call = _ringing_call(server, phones, tones)
    C = registered(phones, server, "C", "103")
    C.play(tones[F_C])
    C.auto_answer(200, delay_ms=300)
    r = api.req("POST", "/calls/%s/forward" % call["id"], 200, json={"target": "103"})
    assert Native.leg(r.json(), "103")["state"] in ("setup", "ringing"), r.text
    live.B.wait_state("DISCONNECTED", call=live.inc["call"], timeout=5)
    assert "CONFIRMED" not in live.B.states(call=live.inc["call"])
    inc = C.wait_incoming(timeout=5)
    C.wait_state("CONFIRMED", call=inc["call"], timeout=5)
    live.A.wait_state("CONFIRMED", call=live.c, timeout=5)
    time.sleep(0.7)
    ra = os.path.join(artifacts, "A.wav")
    live.A.record(ra)
    time.sleep(2)
    live.A.stop_record()
    assert_hears(ra, F_C, F_A, t0=0.7, what="A hears the forward target")

    # Answered now: ringing operations are refused with the current state.
    for path, body in (("forward", {"target": "202"}), ("reject", None),
                       ("ignore", {"device": "x"})):
        r = api.req("POST", "/calls/%s/%s" % (call["id"], path), 409, json=body)
        assert "answered" in r.json()["error"]["message"], r.text
    live.A.hangup(call=live.c)
    C.wait_state("DISCONNECTED", call=inc["call"], timeout=5)


def test_reject_a_ringing_call(server, phones, tones, artifacts):
    live, api, call = _ringing_call(server, phones, tones)
    api.req("POST", "/calls/%s/forward" % call["id"], 400, json={"target": "no-such"})
    api.req("POST", "/calls/%s/reject" % call["id"], 200)
    assert live.A.end_status(call=live.c) == 486
    live.B.wait_state("DISCONNECTED", call=live.inc["call"], timeout=5)
    assert "CONFIRMED" not in live.B.states(call=live.inc["call"])
    server.wait_metric("hookflash_active_calls", 0)
    hist = server.cli("calls", "history")
    assert "rejected" in hist.stdout, hist.stdout


def test_ignore_stops_one_device_only(server, phones, tones, artifacts):
    A = registered(phones, server, "A", "201")
    A.play(tones[F_A])
    B1 = registered(phones, server, "B1", "202")
    B2 = registered(phones, server, "B2", "202")
    B2.play(tones[F_B])
    api = Native(server)
    c = A.call(server.uri("202"))
    i1, i2 = B1.wait_incoming(timeout=5), B2.wait_incoming(timeout=5)
    call = wait_until(lambda: api.calls() and len(api.calls()[0]["legs"][1].get("devices", [])) == 2
                      and api.calls()[0], what="two ringing devices listed")
    devices = Native.leg(call, "202")["devices"]
    b1 = [d for d in devices if B1.local.split(":")[-1] in d]
    assert len(b1) == 1, (devices, B1.local)
    r = api.req("POST", "/calls/%s/ignore" % call["id"], 200, json={"device": b1[0]})
    assert Native.leg(r.json(), "202")["devices"] == [d for d in devices if d != b1[0]], r.text
    api.req("POST", "/calls/%s/ignore" % call["id"], 400, json={"device": b1[0]})  # not ringing
    B1.wait_state("DISCONNECTED", call=i1["call"], timeout=5)
    time.sleep(0.5)
    assert "DISCONNECTED" not in B2.states(call=i2["call"]), "the other device must ring on"
    B2.answer(call=i2["call"])
    A.wait_state("CONFIRMED", call=c, timeout=5)
    time.sleep(0.7)
    ra = os.path.join(artifacts, "A.wav")
    A.record(ra)
    time.sleep(2)
    A.stop_record()
    assert_hears(ra, F_B, F_A, t0=0.7, what="A hears the device that kept ringing")
    A.hangup(call=c)
    B2.wait_state("DISCONNECTED", call=i2["call"], timeout=5)

    # Ignoring the only ringing device leaves the caller with 480.
    m1 = B1.mark()
    c = A.call(server.uri("202"))
    B1.wait_incoming(since=m1, timeout=5)
    call = wait_until(lambda: api.calls() and api.calls()[0]["state"] == "ringing"
                      and api.calls()[0], what="ringing call")
    for d in Native.leg(call, "202")["devices"]:
        api.req("POST", "/calls/%s/ignore" % call["id"], 200, json={"device": d})
    assert A.end_status(call=c) == 480
