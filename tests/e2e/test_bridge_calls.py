"""Moving a leg between calls (issue 14, engine: "move a leg between calls"): the native
`POST /calls/{call_id}/bridge` hands the party of another call over to this call
(Engine::bridge, the same path as RingCentral's bridge).

Four pjsua2 phones, each playing its own tone: 201 (1000 Hz) calls 202 (1500 Hz), 203
(2000 Hz) calls 204 (2700 Hz). Bridging 202's leg of the first call with 204's leg of the
second connects 201 with 203 in the first call: proven at the phones (201 hears 2000 Hz and
neither 1500 nor 2700 Hz, 203 hears 1000 Hz), 202 and 204 get BYE, the second call ends. The
route's errors over plain HTTP in the native error shape (400, 404, 409 while a leg is in a
conference), nothing changed by them."""
import os

import pytest

import audio
from api_support import Native, registered
from checks import wait_until
from conftest import F_A, F_B, F_C
from test_conference import hears
from test_conference_calls import record_all

pytestmark = pytest.mark.server

F_D = 2700
EXTRA = [("203", "secret203", "Carol"), ("204", "secret204", "Dave")]


@pytest.mark.timeout(90)
def test_bridge_moves_the_other_calls_party_and_the_two_remaining_hear_each_other(
        server_factory, phones, artifacts):
    server = server_factory(extra_users=EXTRA)
    api = Native(server)
    freq = {"201": F_A, "202": F_B, "203": F_C, "204": F_D}
    ph = {}
    for name, ext in (("A", "201"), ("B", "202"), ("C", "203"), ("D", "204")):
        p = registered(phones, server, name, ext)
        p.play(audio.make_tone(os.path.join(artifacts, "tone%d.wav" % freq[ext]), freq[ext],
                               seconds=30, vol=0.3))
        p.auto_answer(200)
        ph[ext] = p
    c1 = ph["201"].call(server.uri("202"))
    ph["201"].wait_state("CONFIRMED", call=c1, timeout=10)
    first = api.one_call()
    c2 = ph["203"].call(server.uri("204"))
    ph["203"].wait_state("CONFIRMED", call=c2, timeout=10)
    second = [c for c in api.calls() if c["id"] != first["id"]][0]
    b_leg = Native.leg(first, "202")["id"]
    d_leg = Native.leg(second, "204")["id"]
    path = "/calls/%s/bridge" % first["id"]

    # Errors: nothing changes.
    for body, status, code in (
            ({"leg_id": b_leg, "other_call_id": first["id"], "other_leg_id": b_leg}, 400,
             "invalid_request"),
            ({"leg_id": b_leg, "other_call_id": "nope", "other_leg_id": d_leg}, 404,
             "not_found"),
            ({"leg_id": "nope", "other_call_id": second["id"], "other_leg_id": d_leg}, 404,
             "not_found"),
            ({"leg_id": b_leg, "other_call_id": second["id"]}, 400, "invalid_request"),
            ({"leg_id": b_leg, "other_call_id": second["id"], "other_leg_id": d_leg, "x": 1},
             400, "invalid_request")):
        r = api.req("POST", path, status, json=body)
        assert r.json()["error"]["code"] == code, r.text
    api.req("POST", "/calls/nope/bridge", 404,
            json={"leg_id": b_leg, "other_call_id": second["id"], "other_leg_id": d_leg})
    # A call with a leg in a conference is not bridged (409), either side.
    c_leg = Native.leg(second, "203")["id"]
    api.req("POST", "/calls/%s/legs/%s/conference" % (second["id"], c_leg), 201,
            json={"name": "side"})
    r = api.req("POST", path, 409, json={"leg_id": b_leg, "other_call_id": second["id"],
                                         "other_leg_id": d_leg})
    assert r.json()["error"]["code"] == "wrong_state", r.text
    api.req("DELETE", "/calls/%s/legs/%s/conference" % (second["id"], c_leg), 204)
    assert len(api.calls()) == 2
    rec = record_all(ph, artifacts, "before", seconds=3.0)
    hears(rec["201"], [F_B], [F_C, F_D, F_A], 0.8, 2.8, "201 with 202 before")
    hears(rec["203"], [F_D], [F_A, F_B, F_C], 0.8, 2.8, "203 with 204 before")

    # The bridge: 201 and 203 in the first call; 202 and 204 released; the second call ends.
    r = api.req("POST", path, 200, json={"leg_id": b_leg, "other_call_id": second["id"],
                                         "other_leg_id": d_leg})
    call = r.json()
    assert call["id"] == first["id"], call
    ph["202"].wait_state("DISCONNECTED", timeout=10)
    ph["204"].wait_state("DISCONNECTED", timeout=10)
    wait_until(lambda: [c["id"] for c in api.calls()] == [first["id"]], timeout=10,
               what="the second call ended")
    rec = record_all({e: ph[e] for e in ("201", "203")}, artifacts, "bridged", seconds=3.5)
    hears(rec["201"], [F_C], [F_B, F_D, F_A], 1.0, 3.2, "201 hears 203 after the bridge")
    hears(rec["203"], [F_A], [F_B, F_D, F_C], 1.0, 3.2, "203 hears 201 after the bridge")

    ph["201"].hangup()
    ph["203"].wait_state("DISCONNECTED", timeout=10)
    server.wait_metric("hookflash_active_calls", 0)
