"""Conferences (issue 14, first part): named N-party calls mixed by the server.

Three pjsua2 phones, each playing its own tone, are dialled into one conference by the native
API. Proven at the phones: each hears the other two tones and not its own (mix-minus); a
muted phone is heard by no one while it still hears the others; a phone that leaves is gone
from the mix and the conference ends with its last party."""
import os
import time

import pytest
import requests

import audio
from api_support import Native
from checks import wait_until
from conftest import F_A, F_B, F_C

pytestmark = pytest.mark.server

EXTRA = [("203", "secret203", "Carol")]


def power(wav, freq, t0, t1):
    """Goertzel power of `freq` summed over the windows in [t0, t1)."""
    w = audio.read_wav(wav)
    return sum(audio.goertzel_power(x, w.rate, freq) for x in audio.windows(w, t0, t1))


def hears(wav, present, absent, t0, t1, what):
    """Each tone in `present` is in the recording, and far above every tone in `absent`."""
    w = audio.read_wav(wav)
    assert not audio.silent(w, t0, t1), "%s: silence" % what
    got = {f: power(wav, f, t0, t1) for f in list(present) + list(absent)}
    floor = max([got[f] for f in absent] + [1e-9])
    for f in present:
        assert got[f] > 20 * floor, "%s: %d Hz not heard above %s: %s\n%s" % (
            what, f, absent, got, audio.window_report(w, list(got), t0, t1)[:20])


def not_hears(wav, freq, others, t0, t1, what):
    """`freq` is far below the tones that are there."""
    got = {f: power(wav, f, t0, t1) for f in [freq] + list(others)}
    assert got[freq] * 20 < min(got[f] for f in others), "%s: %d Hz heard: %s" % (
        what, freq, got)


@pytest.mark.timeout(120)
def test_three_phones_hear_each_other_not_themselves_and_mute_silences_one(
        server_factory, phones, tones, artifacts):
    server = server_factory(extra_users=EXTRA)
    api = Native(server)
    freq = {"201": F_A, "202": F_B, "203": F_C}
    ph = {}
    for name, ext in (("A", "201"), ("B", "202"), ("C", "203")):
        p = phones(name)
        ev = p.register(server, ext)
        assert ev["code"] == 200, ev
        p.play(tones[freq[ext]])
        p.auto_answer(200)
        ph[ext] = p

    added = {}
    for ext in ("201", "202", "203"):
        r = api.req("POST", "/conferences/room-1/participants", 201, json={"to": ext})
        body = r.json()
        assert body["number"] == ext and body["state"] in ("calling", "joined"), body
        added[ext] = body["id"]

    def all_joined():
        c = api.req("GET", "/conferences/room-1", 200).json()
        states = {p["number"]: p["state"] for p in c["participants"]}
        return states if states == {e: "joined" for e in freq} else None
    wait_until(all_joined, timeout=15, what="all three joined")
    listed = api.req("GET", "/conferences", 200).json()["conferences"]
    assert [c["name"] for c in listed] == ["room-1"], listed
    m = server.metrics()
    assert m.value("hookflash_conferences_active") == 1, m

    # 1. Everybody talks: each hears the other two, not itself.
    rec = {e: os.path.join(artifacts, "%s-all.wav" % e) for e in freq}
    for e, p in ph.items():
        p.record(rec[e])
    time.sleep(4)
    for p in ph.values():
        p.stop_record()
    for e in freq:
        others = [freq[o] for o in freq if o != e]
        hears(rec[e], others, [], 1.0, 3.5, "%s hears the others" % e)
        not_hears(rec[e], freq[e], others, 1.0, 3.5, "%s hears itself" % e)

    # 2. 203 muted: 201 and 202 hear only each other; 203 still hears both.
    r = api.req("PATCH", "/conferences/room-1/participants/" + added["203"], 200,
                json={"muted": True})
    assert r.json()["muted"] is True, r.text
    rec = {e: os.path.join(artifacts, "%s-muted.wav" % e) for e in freq}
    for e, p in ph.items():
        p.record(rec[e])
    time.sleep(4)
    for p in ph.values():
        p.stop_record()
    hears(rec["201"], [F_B], [F_C, F_A], 1.0, 3.5, "201 with 203 muted")
    hears(rec["202"], [F_A], [F_C, F_B], 1.0, 3.5, "202 with 203 muted")
    hears(rec["203"], [F_A, F_B], [F_C], 1.0, 3.5, "muted 203 still hears")

    # 3. 202 is taken out: its phone gets BYE; 201 and 203 (unmuted) hear each other only.
    api.req("PATCH", "/conferences/room-1/participants/" + added["203"], 200,
            json={"muted": False})
    api.req("DELETE", "/conferences/room-1/participants/" + added["202"], 204)
    ph["202"].wait_state("DISCONNECTED", timeout=5)
    wait_until(lambda: len(api.req("GET", "/conferences/room-1", 200)
                           .json()["participants"]) == 2, what="202 left")
    rec = {e: os.path.join(artifacts, "%s-two.wav" % e) for e in ("201", "203")}
    for e in rec:
        ph[e].record(rec[e])
    time.sleep(3)
    for e in rec:
        ph[e].stop_record()
    hears(rec["201"], [F_C], [F_B, F_A], 0.8, 2.5, "201 after 202 left")
    hears(rec["203"], [F_A], [F_B, F_C], 0.8, 2.5, "203 after 202 left")

    # 4. The last parties hang up: the conference ends.
    ph["201"].hangup()
    ph["203"].hangup()
    wait_until(lambda: api.req("GET", "/conferences/room-1").status_code == 404,
               what="conference ended")
    server.wait_metric("hookflash_conferences_active", 0)


def test_conference_api_refuses_bad_input_with_json_errors(server_factory):
    server = server_factory()
    api = Native(server)
    # A name outside the allowed characters.
    r = api.req("POST", "/conferences/bad%20name/participants", 400, json={"to": "201"})
    assert r.json()["error"]["code"] == "invalid_request", r.text
    # An extension without a registered phone.
    r = api.req("POST", "/conferences/room/participants", 400, json={"to": "202"})
    assert "registered" in r.json()["error"]["message"], r.text
    # Unknown fields, wrong types, missing target.
    for body in ({"to": "201", "x": 1}, {"to": 5}, {}):
        api.req("POST", "/conferences/room/participants", 400, json=body)
    # Nothing made by the failures.
    assert api.req("GET", "/conferences", 200).json() == {"conferences": []}
    r = api.req("GET", "/conferences/room", 404)
    assert r.json()["error"]["code"] == "not_found", r.text
    api.req("PATCH", "/conferences/room/participants/nope", 404, json={"muted": True})
    api.req("DELETE", "/conferences/room/participants/nope", 404)
    # Without a key.
    r = requests.get(server.http + "/api/v1/conferences", timeout=5)
    assert r.status_code == 401, r.text
