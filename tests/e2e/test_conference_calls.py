"""Conferences with existing calls brought in (issue 14): a call's leg joins a named
conference and stays its call's leg (same call id, hang-up, records); only its audio is mixed.

Independent pjsua2 phones, each playing its own tone, prove it at the phones:
- native route: both legs of a connected call 201<->202 are brought into `room` and 203 is
  dialled in by the conference: each hears the other two and not itself; a muted leg is heard
  by no one; a leg taken out is back on its call (hears music: its partner is still in the
  conference) while the other two still hear each other; the event stream carries
  conference_started, participant_joined x3, participant_left ..., conference_ended in order,
  each join/leave naming the call and leg.
- the new routes' errors over plain HTTP in the native error shape (404 / 400 / 409).
"""
import json
import os
import time

import pytest
import requests

import audio
from api_support import Native, registered
from checks import wait_until
from conftest import F_A, F_B, F_C
from test_conference import hears, not_hears

pytestmark = pytest.mark.server

EXTRA = [("203", "secret203", "Carol")]
CONF_KINDS = ("conference_started", "conference_ended", "participant_joined",
              "participant_left")


def conference_events(server, name, until="conference_ended", timeout=10):
    """The account's conference events for `name` from the start of the backlog, in order,
    read from the native SSE stream until `until` is seen."""
    h = {"Authorization": "Bearer hf_test_key_acme", "Accept": "text/event-stream",
         "Last-Event-ID": "0"}
    r = requests.get(server.http + "/api/v1/events", headers=h, stream=True,
                     timeout=(5, timeout))
    assert r.status_code == 200, r.text
    out, event, data, ids = [], None, "", []
    try:
        for line in r.iter_lines(decode_unicode=True):
            if line is None or line.startswith(":"):
                continue
            if line == "":
                if data and event in CONF_KINDS:
                    d = json.loads(data)
                    if d["conference"] == name:
                        out.append(d)
                        if d["kind"] == until:
                            return out, ids
                event, data = None, ""
                continue
            k, _, v = line.partition(":")
            v = v[1:] if v.startswith(" ") else v
            if k == "event":
                event = v
            elif k == "data":
                data += v
            elif k == "id":
                ids.append(int(v))
    finally:
        r.close()
    raise AssertionError("no %s in %s" % (until, out))


def record_all(phones_by_ext, artifacts, tag, seconds=3.5):
    rec = {e: os.path.join(artifacts, "%s-%s.wav" % (e, tag)) for e in phones_by_ext}
    for e, p in phones_by_ext.items():
        p.record(rec[e])
    time.sleep(seconds)
    for p in phones_by_ext.values():
        p.stop_record()
    return rec


@pytest.mark.timeout(150)
def test_both_legs_of_a_call_and_a_dialled_phone_in_one_conference(
        server_factory, phones, tones, artifacts):
    server = server_factory(extra_users=EXTRA)
    api = Native(server)
    freq = {"201": F_A, "202": F_B, "203": F_C}
    ph = {}
    for name, ext in (("A", "201"), ("B", "202"), ("C", "203")):
        p = registered(phones, server, name, ext)
        p.play(tones[freq[ext]])
        p.auto_answer(200)
        ph[ext] = p
    c = ph["201"].call(server.uri("202"))
    ph["201"].wait_state("CONFIRMED", call=c, timeout=10)
    call = api.one_call()
    a_leg, b_leg = Native.leg(call, "201")["id"], Native.leg(call, "202")["id"]

    r = api.req("POST", "/calls/%s/legs/%s/conference" % (call["id"], a_leg), 201,
                json={"name": "room"})
    p = r.json()
    assert p["call_id"] == call["id"] and p["leg_id"] == a_leg and p["state"] == "joined", p
    api.req("POST", "/calls/%s/legs/%s/conference" % (call["id"], b_leg), 201,
            json={"name": "room", "beep": True})
    api.req("POST", "/conferences/room/participants", 201, json={"to": "203"})

    def all_in():
        c = api.req("GET", "/conferences/room", 200).json()
        joined = [x for x in c["participants"] if x["state"] == "joined"]
        return c if len(joined) == 3 else None
    conf = wait_until(all_in, timeout=15, what="three in the conference")
    legs = {x["leg_id"] for x in conf["participants"]}
    assert legs == {a_leg, b_leg, None}, conf
    # Still one call, with its id and both legs answered.
    again = api.req("GET", "/calls/" + call["id"], 200).json()
    assert [l["state"] for l in again["legs"]] == ["answered", "answered"], again

    # 1. Each hears the other two, not itself.
    rec = record_all(ph, artifacts, "all")
    for e in freq:
        others = [freq[o] for o in freq if o != e]
        hears(rec[e], others, [], 1.0, 3.2, "%s hears the others" % e)
        not_hears(rec[e], freq[e], others, 1.0, 3.2, "%s hears itself" % e)

    # 2. 201's leg muted in the conference: heard by no one, still hears both.
    r = api.req("PATCH", "/calls/%s/legs/%s/conference" % (call["id"], a_leg), 200,
                json={"muted": True})
    assert r.json()["muted"] is True, r.text
    rec = record_all(ph, artifacts, "muted")
    hears(rec["202"], [F_C], [F_A, F_B], 1.0, 3.2, "202 with 201 muted")
    hears(rec["203"], [F_B], [F_A, F_C], 1.0, 3.2, "203 with 201 muted")
    hears(rec["201"], [F_B, F_C], [F_A], 1.0, 3.2, "muted 201 still hears")
    api.req("PATCH", "/calls/%s/legs/%s/conference" % (call["id"], a_leg), 200,
            json={"muted": False})

    # 3. 202's leg leaves: back on its call (its partner 201 is still in the conference, so
    # it hears music, not 201); 201 and 203 still hear each other.
    api.req("DELETE", "/calls/%s/legs/%s/conference" % (call["id"], b_leg), 204)
    wait_until(lambda: len(api.req("GET", "/conferences/room", 200)
                           .json()["participants"]) == 2, what="202 left")
    api.req("DELETE", "/calls/%s/legs/%s/conference" % (call["id"], b_leg), 409)
    rec = record_all(ph, artifacts, "two")
    hears(rec["201"], [F_C], [F_B, F_A], 1.0, 3.2, "201 after 202 left")
    hears(rec["203"], [F_A], [F_B, F_C], 1.0, 3.2, "203 after 202 left")
    w = audio.read_wav(rec["202"])
    assert not audio.silent(w, 1.0), "202 back on its call hears nothing"
    assert audio.tone_fraction(w, F_A, 1.0) <= 0.1, "202 hears 201 while 201 is in the room"
    assert audio.tone_fraction(w, F_C, 1.0) <= 0.1, "202 hears the room after leaving"

    # 4. 201's leg leaves too: the call is two-party again, both hear each other.
    api.req("DELETE", "/calls/%s/legs/%s/conference" % (call["id"], a_leg), 204)
    time.sleep(0.5)
    rec = record_all({"201": ph["201"], "202": ph["202"]}, artifacts, "back", seconds=3.0)
    hears(rec["201"], [F_B], [F_A, F_C], 0.8, 2.8, "201 back with 202")
    hears(rec["202"], [F_A], [F_B, F_C], 0.8, 2.8, "202 back with 201")

    # 5. The last participant (203) hangs up: the conference ends; the call goes on.
    ph["203"].hangup()
    wait_until(lambda: api.req("GET", "/conferences/room").status_code == 404,
               what="conference ended")
    assert api.req("GET", "/calls/" + call["id"], 200).json()["state"] == "answered"
    events, ids = conference_events(server, "room")
    kinds = [(e["kind"], (e["participant"] or {}).get("leg_id")) for e in events]
    joins = [k for k in kinds if k[0] == "participant_joined"]
    assert kinds[0] == ("conference_started", None), kinds
    assert [j[1] for j in joins] == [a_leg, b_leg, None], kinds
    lefts = [k[1] for k in kinds if k[0] == "participant_left"]
    assert lefts == [b_leg, a_leg, None], kinds
    assert kinds[-1] == ("conference_ended", None), kinds
    assert all(e["participant"]["call_id"] == call["id"] for e in events
               if e["participant"] and e["participant"]["leg_id"]), events
    assert ids == sorted(ids), ids
    ph["201"].hangup()
    server.wait_metric("hookflash_active_calls", 0)
    server.wait_metric("hookflash_conferences_active", 0)


def test_conference_leg_routes_answer_errors_in_the_native_shape(
        server_factory, phones, tones):
    server = server_factory()
    api = Native(server)
    path = "/calls/nope/legs/nope/conference"
    for method, kw in (("POST", {"json": {"name": "room"}}), ("PATCH", {"json": {"muted": True}}),
                       ("DELETE", {})):
        r = api.req(method, path, 404, **kw)
        assert r.json()["error"]["code"] == "not_found", r.text
    A = registered(phones, server, "A", "201")
    B = registered(phones, server, "B", "202")
    A.play(tones[F_A])
    B.play(tones[F_B])
    B.auto_answer(200)
    c = A.call(server.uri("202"))
    A.wait_state("CONFIRMED", call=c, timeout=10)
    call = api.one_call()
    leg = Native.leg(call, "201")["id"]
    path = "/calls/%s/legs/%s/conference" % (call["id"], leg)
    # Bad names and bodies: 400, nothing made.
    for body in ({"name": "bad name"}, {"name": ""}, {"name": "x" * 65}, {},
                 {"name": "room", "x": 1}, {"name": "room", "muted": "yes"},
                 {"name": "room", "max_participants": 0}):
        r = api.req("POST", path, 400, json=body)
        assert r.json()["error"]["code"] == "invalid_request", (body, r.text)
    assert api.req("GET", "/conferences", 200).json() == {"conferences": []}
    # A leg of the call that does not exist.
    api.req("POST", "/calls/%s/legs/nope/conference" % call["id"], 404, json={"name": "room"})
    # Not in a conference: 409 wrong_state.
    for method, kw in (("PATCH", {"json": {"muted": True}}), ("DELETE", {})):
        r = api.req(method, path, 409, **kw)
        assert r.json()["error"]["code"] == "wrong_state", r.text
    api.req("POST", path, 201, json={"name": "room"})
    # Twice: 409.
    r = api.req("POST", path, 409, json={"name": "other"})
    assert r.json()["error"]["code"] == "wrong_state", r.text
    assert api.req("PATCH", path, 200, json={}).json()["leg_id"] == leg
    A.hangup()
    wait_until(lambda: api.req("GET", "/conferences/room").status_code == 404,
               what="the conference ended with its only leg's call")
    r = api.req("POST", path, 404, json={"name": "room"})
    assert r.json()["error"]["code"] == "not_found", r.text



# ------------------------------------------------------------------ jambonz `conference` verb
from test_app_runtime import APP_NUMBER, hooks  # noqa: E402,F401 (the fixture)

API_KEY = "hf_test_key_acme"
F_AFTER = 600


def jz_update(server, acc, sid, body):
    return requests.put("%s/v1/Accounts/%s/Calls/%s" % (server.http, acc, sid),
                        headers={"Authorization": "Bearer " + API_KEY}, json=body, timeout=10)


@pytest.mark.timeout(200)
def test_jambonz_conference_verb_two_app_calls_and_a_dialled_phone(
        server_factory, phones, tones, hooks, artifacts):  # noqa: F811
    """201 and 202 call an application whose `conference` verb puts both into `jroom` (202
    joinMuted, with a beep); 203 is dialled in by the native API. Muted 202 is heard by no
    one; after `conf_mute_status: unmute` each hears the other two and not itself. 202 is
    taken out: its actionHook's `play` is heard, 201 and 203 still hear each other. The
    statusHooks get each participant's start/join/leave/end in order; the event stream the
    conference's."""
    after_tone = os.path.join(artifacts, "after.wav")
    audio.make_tone(after_tone, F_AFTER, seconds=4)

    def conference(body):
        verb = {"verb": "conference", "name": "jroom", "statusHook": "/conf-status",
                "statusEvents": ["start", "end", "join", "leave"], "actionHook": "/after"}
        if body.get("from") == "202":
            verb.update(joinMuted=True, beep=True, waitHook="/wait", maxParticipants=10)
        return 200, [verb]

    def after(body):
        if body.get("from") == "202":
            return 200, [{"verb": "play", "url": hook.url("/after.wav")}, {"verb": "hangup"}]
        return 200, [{"verb": "hangup"}]

    hook = hooks({"/call": conference, "/conf-status": (200, ""), "/after": after,
                  "/status": (200, "")}, files={"/after.wav": after_tone})
    server = server_factory(
        extra_users=EXTRA,
        applications=[{"name": "conf", "call_hook": hook.url("/call"),
                       "call_status_hook": hook.url("/status"), "numbers": [APP_NUMBER]}])
    api = Native(server)
    account = api.req("GET", "/account", 200).json()["id"]
    freq = {"201": F_A, "202": F_B, "203": F_C}
    ph = {}
    for name, ext in (("A", "201"), ("B", "202"), ("C", "203")):
        p = registered(phones, server, name, ext)
        p.play(tones[freq[ext]])
        ph[ext] = p
    ph["203"].auto_answer(200)

    def members():
        r = api.req("GET", "/conferences/jroom")
        return r.json()["participants"] if r.status_code == 200 else []
    for ext in ("201", "202"):
        c = ph[ext].call(server.uri(APP_NUMBER))
        ph[ext].wait_state("CONFIRMED", call=c, timeout=10)
        wait_until(lambda: any(p["number"] == ext for p in members()), timeout=15,
                   what="%s's app call in the conference" % ext)

    api.req("POST", "/conferences/jroom/participants", 201, json={"to": "203"})
    wait_until(lambda: [p["state"] for p in members()] == ["joined"] * 3, timeout=15,
               what="three in the conference")
    by_number = {p["number"]: p for p in members()}
    assert by_number["202"]["muted"] is True and by_number["201"]["muted"] is False, by_number
    sid = {n: by_number[n]["leg_id"] for n in ("201", "202")}

    # 1. joinMuted 202: heard by no one; it hears both.
    rec = record_all(ph, artifacts, "jmuted")
    hears(rec["201"], [F_C], [F_A, F_B], 1.0, 3.2, "201 with 202 joinMuted")
    hears(rec["203"], [F_A], [F_B, F_C], 1.0, 3.2, "203 with 202 joinMuted")
    hears(rec["202"], [F_A, F_C], [F_B], 1.0, 3.2, "joinMuted 202 hears both")

    # 2. conf_mute_status unmute (jambonz REST): everybody hears the other two, not itself.
    r = jz_update(server, account, sid["202"], {"conf_mute_status": "unmute"})
    assert r.status_code == 204, r.text
    rec = record_all(ph, artifacts, "jall")
    for e in freq:
        others = [freq[o] for o in freq if o != e]
        hears(rec[e], others, [], 1.0, 3.2, "%s hears the others" % e)
        not_hears(rec[e], freq[e], others, 1.0, 3.2, "%s hears itself" % e)
    # conf_mute_status mute again: 202 is gone from the mix once more.
    assert jz_update(server, account, sid["202"], {"conf_mute_status": "mute"}).status_code == 204
    rec = record_all({"201": ph["201"]}, artifacts, "jremuted", seconds=3.0)
    hears(rec["201"], [F_C], [F_B, F_A], 1.0, 2.8, "201 with 202 muted by REST")
    # Bad words: 400 in jambonz's shape.
    r = jz_update(server, account, sid["202"], {"conf_mute_status": "loud"})
    assert r.status_code == 400 and "conf_mute_status" in r.json()["msg"], r.text

    # 3. 202 taken out (native route): its actionHook plays the 600 Hz file, heard by 202;
    # 201 and 203 still hear each other.
    api.req("DELETE", "/calls/%s/legs/%s/conference" % (by_number["202"]["call_id"], sid["202"]),
            204)
    wait_until(lambda: any(json.loads(r["raw"]).get("from") == "202" for r in hook.got("/after")),
               timeout=10, what="202's actionHook")
    rec = record_all({"201": ph["201"], "202": ph["202"], "203": ph["203"]}, artifacts, "jleft",
                     seconds=3.0)
    w = audio.read_wav(rec["202"])
    assert audio.tone_fraction(w, F_AFTER, 0.5, 2.8) >= 0.6, \
        audio.window_report(w, [F_AFTER, F_A, F_C], 0.5)[:30]
    assert audio.tone_fraction(w, F_A, 0.5, 2.8) <= 0.1, "202 still hears the conference"
    hears(rec["201"], [F_C], [F_A, F_B], 1.0, 2.8, "201 after 202 left")
    hears(rec["203"], [F_A], [F_B, F_C], 1.0, 2.8, "203 after 202 left")
    ph["202"].wait_state("DISCONNECTED", timeout=10)
    # conf_hold_status hold (jambonz REST): 201 hears music, 203 no longer hears 201.
    r = jz_update(server, account, sid["201"], {"conf_hold_status": "hold"})
    assert r.status_code == 204, r.text
    rec = record_all({"201": ph["201"], "203": ph["203"]}, artifacts, "jheld", seconds=3.0)
    assert audio.tone_fraction(audio.read_wav(rec["203"]), F_A, 1.0) <= 0.1, "203 hears held 201"
    assert audio.tone_fraction(audio.read_wav(rec["201"]), F_C, 1.0) <= 0.1, "held 201 hears 203"
    assert not audio.silent(audio.read_wav(rec["201"]), 1.0), "held 201 hears no music"
    assert jz_update(server, account, sid["201"],
                     {"conf_hold_status": "unhold"}).status_code == 204
    # An unknown call: 404 in jambonz's shape.
    r = jz_update(server, account, "nope", {"conf_hold_status": "hold"})
    assert r.status_code == 404, r.text

    # 4. 203 hangs up; 201, alone, is taken out: the conference ends.
    ph["203"].hangup()
    wait_until(lambda: len(members()) == 1, what="203 left")
    api.req("DELETE", "/calls/%s/legs/%s/conference" % (by_number["201"]["call_id"], sid["201"]),
            204)
    ph["201"].wait_state("DISCONNECTED", timeout=10)
    wait_until(lambda: api.req("GET", "/conferences/jroom").status_code == 404,
               what="the conference ended")

    # Each participant's statusHook: its own events, in order, with jambonz's fields.
    def statuses(frm):
        return [json.loads(r["raw"]) for r in hook.got("/conf-status")
                if json.loads(r["raw"]).get("from") == frm]
    s201 = wait_until(lambda: statuses("201") if len(statuses("201")) >= 4 else None,
                      what="201's status events")
    assert [s["event"] for s in s201] == ["start", "join", "leave", "end"], s201
    s202 = statuses("202")
    assert [s["event"] for s in s202] == ["join", "leave"], s202
    for s in s201 + s202:
        assert s["friendly_name"] == "jroom", s
        assert s["conference_sid"] == "conf:%s:jroom" % account, s
        assert isinstance(s["members"], int) and isinstance(s["duration"], (int, float)), s
        assert s["time"].endswith("Z") and s["call_sid"] in sid.values(), s
    assert s202[0]["members"] == 2 and s202[1]["members"] == 2, s202
    # The event stream: the conference's own sequence of events.
    events, _ = conference_events(server, "jroom")
    kinds = [(e["kind"], (e["participant"] or {}).get("number")) for e in events]
    assert kinds == [("conference_started", None), ("participant_joined", "201"),
                     ("participant_joined", "202"), ("participant_joined", "203"),
                     ("participant_left", "202"), ("participant_left", "203"),
                     ("participant_left", "201"), ("conference_ended", None)], kinds
    server.wait_metric("hookflash_active_calls", 0)
    server.wait_metric("hookflash_conferences_active", 0)


# ------------------------------------------------------------------ api19 `<Dial><Conference>`
@pytest.mark.timeout(150)
def test_rcml_dial_conference_joins_created_calls_and_the_action_runs_after(
        server_factory, phones, tones, hooks, artifacts):  # noqa: F811
    """Two api19 calls (to 201 and 202) run RCML `<Dial action><Conference>` built with the
    twilio package: both are in one conference and hear each other, not themselves; one taken
    out gets the Dial's action, whose `<Play>` it hears, while the other (alone) hears music."""
    from twilio.twiml.voice_response import Dial, VoiceResponse
    from test_api19_calls import Api19, account_sid, form
    from hfserver import ACME_DID

    after_tone = os.path.join(artifacts, "after19.wav")
    audio.make_tone(after_tone, F_AFTER, seconds=4)

    def start(_body):
        r = VoiceResponse()
        d = Dial(action=hook.url("/left"), method="POST")
        d.conference("room19", beep="false", start_conference_on_enter="true")
        r.append(d)
        return 200, str(r)

    def left(_body):
        r = VoiceResponse()
        r.play(hook.url("/after.wav"))
        r.hangup()
        return 200, str(r)

    hook = hooks({"/start": start, "/left": left}, files={"/after.wav": after_tone})
    server = server_factory()
    api19 = Api19(server, account_sid(server))
    api = Native(server)
    freq = {"201": F_A, "202": F_B}
    ph = {}
    for name, ext in (("A", "201"), ("B", "202")):
        p = registered(phones, server, name, ext)
        p.play(tones[freq[ext]])
        p.auto_answer(200)
        ph[ext] = p
    sids = {}
    for ext in ("201", "202"):
        sids[ext] = api19.post("/Calls.json", 200, From=ACME_DID, To="sip:%s@acme.local" % ext,
                               Url=hook.url("/start")).json()["sid"]
        ph[ext].wait_incoming(timeout=10)

    def members():
        r = api.req("GET", "/conferences/room19")
        return r.json()["participants"] if r.status_code == 200 else []
    wait_until(lambda: len(members()) == 2, timeout=20, what="both RCML calls in the room")
    rec = record_all(ph, artifacts, "rcml")
    hears(rec["201"], [F_B], [F_A], 1.0, 3.2, "201 hears 202")
    hears(rec["202"], [F_A], [F_B], 1.0, 3.2, "202 hears 201")

    # The RestComm conference resources: list (JSON and XML), one, its participants; Mute.
    listed = api19.get("/Conferences.json", 200).json()
    assert [c["friendly_name"] for c in listed["conferences"]] == ["room19"], listed
    conf = listed["conferences"][0]
    assert conf["sid"].startswith("CF") and len(conf["sid"]) == 34, conf
    assert conf["status"] == "RUNNING_MODERATOR_PRESENT", conf
    xml = api19.get("/Conferences", 200).text
    assert "<Conferences" in xml and "<FriendlyName>room19</FriendlyName>" in xml, xml
    one = api19.get("/Conferences/%s.json" % conf["sid"], 200).json()
    assert one["sid"] == conf["sid"], one
    parts = api19.get("/Conferences/%s/Participants.json" % conf["sid"], 200).json()
    assert sorted(p["call_sid"] for p in parts["participants"]) == sorted(sids.values()), parts
    r = api19.post("/Conferences/%s/Participants/%s.json" % (conf["sid"], sids["202"]), 200,
                   Mute="true").json()
    assert r["muted"] is True and r["call_sid"] == sids["202"], r
    rec = record_all({"201": ph["201"]}, artifacts, "rcml-muted", seconds=3.0)
    assert audio.tone_fraction(audio.read_wav(rec["201"]), F_B, 1.0) <= 0.1, "201 hears muted 202"
    assert api19.post("/Conferences/%s/Participants/%s.json" % (conf["sid"], sids["202"]), 200,
                      Mute="false").json()["muted"] is False
    # Errors in RestComm's shape.
    e = api19.get("/Conferences/CF%s.json" % ("0" * 32), 404).json()
    assert e["code"] == 20404 and e["status"] == 404, e
    api19.post("/Conferences/%s/Participants/%s.json" % (conf["sid"], sids["202"]), 400,
               Mute="maybe")
    api19.get("/Conferences/%s/Participants/CA%s.json" % (conf["sid"], "0" * 32), 404)

    p202 = [p for p in members() if p["number"] == "202"][0]
    api.req("DELETE", "/calls/%s/legs/%s/conference" % (p202["call_id"], p202["leg_id"]), 204)
    got = wait_until(lambda: hook.got("/left"), timeout=10, what="the Dial action")
    assert form(got[0])["CallSid"] == sids["202"], form(got[0])
    rec = record_all(ph, artifacts, "rcml-left", seconds=3.0)
    w = audio.read_wav(rec["202"])
    assert audio.tone_fraction(w, F_AFTER, 0.5, 2.8) >= 0.6, \
        audio.window_report(w, [F_AFTER, F_A], 0.5)[:30]
    w = audio.read_wav(rec["201"])
    assert audio.tone_fraction(w, F_B, 1.0) <= 0.1, "201 still hears 202"
    assert not audio.silent(w, 1.0), "201 alone hears no music"
    ph["202"].wait_state("DISCONNECTED", timeout=10)
    ph["201"].hangup()
    server.wait_metric("hookflash_conferences_active", 0)
