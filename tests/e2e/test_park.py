"""Park and retrieve (issue 5, capability 5) with independent pjsua2 phones: the parked
party hears music on hold; a phone dialling the orbit, the API, or the park timeout brings
someone back to it, proven by the tones each phone hears."""
import os
import time

import pytest

from api_support import LiveCall, Native, assert_music_on_hold, moh_enabled, registered
from checks import assert_hears, assert_no_tone
from conftest import F_A, F_B, F_C

pytestmark = pytest.mark.server


def _record(phone, path, seconds=2.0):
    phone.record(path)
    time.sleep(seconds)
    phone.stop_record()
    return path


def _park(live, api, **body):
    call = api.one_call()
    r = api.req("POST", "/calls/%s/park" % call["id"], 200, json=body)
    live.B.wait_state("DISCONNECTED", call=live.inc["call"], timeout=5)
    return call, r.json()["orbit"]


def test_park_and_pick_up_by_dialling_the_orbit(server, phones, tones, artifacts):
    live = LiveCall(server, phones, tones, artifacts)
    api = Native(server)
    call, orbit = _park(live, api)
    assert orbit == "*71", orbit
    assert api.req("GET", "/parks", 200).json()["parks"] == [
        {"orbit": "*71", "call_id": call["id"]}]
    time.sleep(0.5)
    ra = _record(live.A, os.path.join(artifacts, "A_parked.wav"), 1.5)
    assert_no_tone(ra, F_B, t0=0.5, what="A must not hear B once parked")
    if moh_enabled():
        assert_music_on_hold(ra, F_B, what="A hears music while parked")

    C = registered(phones, server, "C", "103")
    C.play(tones[F_C])
    c = C.call(server.uri("*71"))
    C.wait_state("CONFIRMED", call=c, timeout=5)
    time.sleep(0.7)
    ra = _record(live.A, os.path.join(artifacts, "A_after.wav"))
    rc = _record(C, os.path.join(artifacts, "C_after.wav"))
    assert_hears(ra, F_C, F_A, t0=0.7, what="A hears C who picked up the park")
    assert_hears(rc, F_A, F_C, t0=0.7, what="C hears the parked A")
    assert api.req("GET", "/parks", 200).json()["parks"] == []
    assert "DISCONNECTED" not in live.A.states(call=live.c)

    # An empty orbit: 404 at the phone.
    c2 = C.call(server.uri("*75"))
    assert C.end_status(call=c2) == 404
    C.hangup(call=c)
    live.A.wait_state("DISCONNECTED", call=live.c, timeout=5)
    server.wait_metric("hookflash_active_calls", 0)
    hist = server.cli("calls", "history")
    assert "parked" in hist.stdout, hist.stdout


def test_park_and_retrieve_by_api(server, phones, tones, artifacts):
    live = LiveCall(server, phones, tones, artifacts)
    api = Native(server)
    C = registered(phones, server, "C", "103")
    C.play(tones[F_C])
    C.auto_answer(200, delay_ms=300)
    call, orbit = _park(live, api, orbit="*73")
    assert orbit == "*73"
    api.req("POST", "/calls/%s/unpark" % call["id"], 400, json={"target": "nobody"})
    api.req("POST", "/calls/%s/unpark" % call["id"], 200, json={"target": "103"})
    inc = C.wait_incoming(timeout=5)
    C.wait_state("CONFIRMED", call=inc["call"], timeout=5)
    time.sleep(0.7)
    ra = _record(live.A, os.path.join(artifacts, "A_after.wav"))
    assert_hears(ra, F_C, F_A, t0=0.7, what="A hears the retriever")
    api.req("POST", "/calls/%s/unpark" % call["id"], 409, json={"target": "103"})
    live.A.hangup(call=live.c)
    C.wait_state("DISCONNECTED", call=inc["call"], timeout=5)


def test_unretrieved_park_calls_the_parker_back(server, phones, tones, artifacts):
    live = LiveCall(server, phones, tones, artifacts)
    api = Native(server)
    mb = live.B.mark()
    _park(live, api, timeout_secs=2)
    live.B.auto_answer(200, delay_ms=300)
    inc = live.B.wait_incoming(since=mb, timeout=8)
    live.B.wait_state("CONFIRMED", call=inc["call"], timeout=5)
    time.sleep(0.7)
    ra = _record(live.A, os.path.join(artifacts, "A_after.wav"))
    assert_hears(ra, F_B, F_A, t0=0.7, what="A is back with the parker")
    live.A.hangup(call=live.c)
    live.B.wait_state("DISCONNECTED", call=inc["call"], timeout=5)


def test_park_bad_input(server, phones, tones, artifacts):
    live = LiveCall(server, phones, tones, artifacts, answer=False)
    api = Native(server)
    call = api.one_call()
    api.req("POST", "/calls/%s/park" % call["id"], 409, json={})  # still ringing
    live.B.answer(call=live.inc["call"])
    live.A.wait_state("CONFIRMED", call=live.c, timeout=5)
    for body in ({"orbit": "99"}, {"timeout_secs": 0}, {"orbit": "*7x"}, {"bogus": 1}):
        api.req("POST", "/calls/%s/park" % call["id"], 400, json=body)
    api.req("POST", "/calls/nope/park", 404, json={})
    time.sleep(0.5)
    live.assert_two_way("after refused park requests")
    live.A.hangup(call=live.c)
    live.assert_both_ended()
