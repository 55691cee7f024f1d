"""Conferences (issue 14, "How it is proven"): four parties, each playing its own tone.

Four independent pjsua2 phones play 1000 / 1500 / 2000 / 2700 Hz (at 0.3 of full scale,
so the mix of three never clips). 201 calls 202; both legs
of that call are brought into conference `four`, and the conference dials 203 and 204. Proven
at the phones (tones detected in what each phone recorded):
1. each phone hears the other three tones and not its own (mix-minus);
2. a muted participant (204, dialled) is heard by nobody and still hears the other three;
3. a participant on conference hold (202's leg) hears the built-in music on hold and none of
   the tones, and is heard by nobody; the others hear each other;
4. after unhold / unmute all four hear the other three again.
The built-in music on hold is notes between 349 and 659 Hz, so no party tone is one of them."""
import os
import time

import pytest

import audio
from api_support import MOH_NOTES_HZ, Native, assert_music_on_hold, registered
from checks import wait_until
from conftest import F_A, F_B, F_C
from test_conference import hears, not_hears
from test_conference_calls import record_all

pytestmark = pytest.mark.server

F_D = 2700
EXTRA = [("203", "secret203", "Carol"), ("204", "secret204", "Dave")]


@pytest.mark.timeout(120)
def test_four_phones_each_hear_the_other_three_muted_heard_by_none_held_hears_music(
        server_factory, phones, artifacts):
    server = server_factory(extra_users=EXTRA)
    api = Native(server)
    freq = {"201": F_A, "202": F_B, "203": F_C, "204": F_D}
    # Quieter than the shared tones: three of them summed stay below the mixer's clipping
    # (hard clamp to 16 bits), so no intermodulation lands on a tone asserted absent.
    wavs = {f: audio.make_tone(os.path.join(artifacts, "tone%d.wav" % f), f, seconds=30,
                               vol=0.3) for f in freq.values()}
    ph = {}
    for name, ext in (("A", "201"), ("B", "202"), ("C", "203"), ("D", "204")):
        p = registered(phones, server, name, ext)
        p.play(wavs[freq[ext]])
        p.auto_answer(200)
        ph[ext] = p
    c = ph["201"].call(server.uri("202"))
    ph["201"].wait_state("CONFIRMED", call=c, timeout=10)
    call = api.one_call()
    a_leg, b_leg = Native.leg(call, "201")["id"], Native.leg(call, "202")["id"]
    for leg in (a_leg, b_leg):
        api.req("POST", "/calls/%s/legs/%s/conference" % (call["id"], leg), 201,
                json={"name": "four"})
    dialled = {}
    for ext in ("203", "204"):
        r = api.req("POST", "/conferences/four/participants", 201, json={"to": ext})
        dialled[ext] = r.json()["id"]

    def all_in():
        conf = api.req("GET", "/conferences/four", 200).json()
        joined = [x for x in conf["participants"] if x["state"] == "joined"]
        return conf if len(joined) == 4 else None
    conf = wait_until(all_in, timeout=15, what="four in the conference")
    assert {x["leg_id"] for x in conf["participants"]} == {a_leg, b_leg, None}, conf

    def everybody_hears_the_other_three(tag):
        rec = record_all(ph, artifacts, tag)
        for e in freq:
            others = [freq[o] for o in freq if o != e]
            hears(rec[e], others, [], 1.0, 3.2, "%s: %s hears the other three" % (tag, e))
            not_hears(rec[e], freq[e], others, 1.0, 3.2, "%s: %s hears itself" % (tag, e))

    # 1. Everybody talks: each hears the other three, not itself.
    everybody_hears_the_other_three("all")

    # 2. 204 (dialled) muted: nobody hears 2700 Hz; 204 still hears the other three.
    r = api.req("PATCH", "/conferences/four/participants/" + dialled["204"], 200,
                json={"muted": True})
    assert r.json()["muted"] is True, r.text
    rec = record_all(ph, artifacts, "muted")
    for e in ("201", "202", "203"):
        others = [freq[o] for o in ("201", "202", "203") if o != e]
        hears(rec[e], others, [F_D, freq[e]], 1.0, 3.2, "%s with 204 muted" % e)
    hears(rec["204"], [F_A, F_B, F_C], [F_D], 1.0, 3.2, "muted 204 still hears the three")

    # 3. 202's leg on conference hold (204 still muted): 202 hears music on hold and no
    # tone; nobody hears 1500 Hz; 201 and 203 hear each other, 204 hears 201 and 203.
    r = api.req("PATCH", "/calls/%s/legs/%s/conference" % (call["id"], b_leg), 200,
                json={"held": True})
    assert r.json()["held"] is True, r.text
    time.sleep(0.5)  # the switch to music happens on the mixer's next frames
    rec = record_all(ph, artifacts, "held")
    assert_music_on_hold(rec["202"], F_A, what="held 202")
    w = audio.read_wav(rec["202"])
    for f in (F_C, F_D):
        assert audio.tone_fraction(w, f, 1.0) <= 0.1, "held 202 hears %d Hz" % f
    hears(rec["201"], [F_C], [F_B, F_D, F_A], 1.0, 3.2, "201 with 202 held, 204 muted")
    hears(rec["203"], [F_A], [F_B, F_D, F_C], 1.0, 3.2, "203 with 202 held, 204 muted")
    hears(rec["204"], [F_A, F_C], [F_B, F_D], 1.0, 3.2, "muted 204 with 202 held")
    for e in ("201", "203", "204"):
        w = audio.read_wav(rec[e])
        notes = max(audio.tone_fraction(w, n, 1.0, 3.2) for n in MOH_NOTES_HZ)
        assert notes <= 0.1, "%s hears the held one's music (%.2f)" % (e, notes)

    # 4. Unhold and unmute: all four again.
    api.req("PATCH", "/calls/%s/legs/%s/conference" % (call["id"], b_leg), 200,
            json={"held": False})
    api.req("PATCH", "/conferences/four/participants/" + dialled["204"], 200,
            json={"muted": False})
    everybody_hears_the_other_three("again")

    for e in ("203", "204"):
        ph[e].hangup()
    ph["201"].hangup()
    wait_until(lambda: api.req("GET", "/conferences/four").status_code == 404,
               what="conference ended")
    server.wait_metric("hookflash_active_calls", 0)
    server.wait_metric("hookflash_conferences_active", 0)
