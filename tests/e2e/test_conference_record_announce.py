"""Conference recording and announcements (issue 14): three pjsua2 phones, each playing its
own tone, are dialled into one conference by the native API.

Proven at the phones and in the file: a recording started by `POST /conferences/{name}/recording`
is one WAV holding all three tones (the full mix), downloaded like a call recording once
`DELETE` stopped it; an announcement (a 700 Hz tone WAV served over HTTP) into the conference
is heard by all three phones, and by none once it is over; one addressed to one participant
is heard by that phone only. Bad input answers JSON errors and changes nothing."""
import os
import time

import pytest

import audio
from api_support import Native
from checks import wait_until
from conftest import F_A, F_B, F_C
from test_announcements import F_ANN, announcement_url  # noqa: F401 (fixture)
from test_conference import EXTRA, hears, power

pytestmark = pytest.mark.server

FREQ = {"201": F_A, "202": F_B, "203": F_C}


def _three_in_a_room(server_factory, phones, tones, room):
    server = server_factory(extra_users=EXTRA)
    api = Native(server)
    ph = {}
    for name, ext in (("A", "201"), ("B", "202"), ("C", "203")):
        p = phones(name)
        assert p.register(server, ext)["code"] == 200
        p.play(tones[FREQ[ext]])
        p.auto_answer(200)
        ph[ext] = p
    ids = {}
    for ext in FREQ:
        ids[ext] = api.req("POST", "/conferences/%s/participants" % room, 201,
                           json={"to": ext}).json()["id"]

    def all_joined():
        c = api.req("GET", "/conferences/" + room, 200).json()
        return all(p["state"] == "joined" for p in c["participants"]) and \
            len(c["participants"]) == 3
    wait_until(all_joined, timeout=15, what="all three joined")
    return server, api, ph, ids


def _record_all(ph, artifacts, tag, during, seconds):
    """Every phone records `seconds`; `during()` runs 0.5 s in."""
    rec = {e: os.path.join(artifacts, "%s-%s.wav" % (e, tag)) for e in ph}
    for e, p in ph.items():
        p.record(rec[e])
    time.sleep(0.5)
    during()
    time.sleep(seconds - 0.5)
    for p in ph.values():
        p.stop_record()
    return rec


def _ann_ratio(wav):
    """700 Hz while the 2.5 s announcement plays (1.0-2.6 s) over 700 Hz after it (3.8-5.0)."""
    return power(wav, F_ANN, 1.0, 2.6) / max(power(wav, F_ANN, 3.8, 5.0), 1e-9)


@pytest.mark.timeout(150)
def test_conference_recording_holds_the_mix_and_announcements_reach_all_or_one(
        server_factory, phones, tones, artifacts, announcement_url):  # noqa: F811
    room = "rec-room"
    server, api, ph, ids = _three_in_a_room(server_factory, phones, tones, room)
    url = announcement_url + "/ann.wav"

    # Recording: started (201, state recording), a second start is 409.
    r = api.req("POST", "/conferences/%s/recording" % room, 201).json()
    assert r["state"] == "recording" and r["ended_at_ms"] is None, r
    api.req("POST", "/conferences/%s/recording" % room, 409)

    # An announcement into the conference: all three hear it while it plays.
    rec = _record_all(ph, artifacts, "ann-all", lambda: api.req(
        "POST", "/conferences/%s/announcements" % room, 202, json={"url": url}), 5.5)
    for e in FREQ:
        ratio = _ann_ratio(rec[e])
        assert ratio > 20, "%s: the announcement to all not heard (ratio %.1f)" % (e, ratio)
        # ... and still the others' tones.
        hears(rec[e], [FREQ[o] for o in FREQ if o != e], [], 3.8, 5.0, "%s after it" % e)

    # An announcement to 202 alone: only 202 hears it.
    rec = _record_all(ph, artifacts, "ann-one", lambda: api.req(
        "POST", "/conferences/%s/announcements" % room, 202,
        json={"url": url, "participant_id": ids["202"]}), 5.5)
    assert _ann_ratio(rec["202"]) > 20, "202 did not hear its announcement"
    for e in ("201", "203"):
        others = [FREQ[o] for o in FREQ if o != e]
        got = power(rec[e], F_ANN, 1.0, 2.6)
        floor = min(power(rec[e], f, 1.0, 2.6) for f in others)
        assert got * 20 < floor, "%s heard 202's announcement: %s vs %s" % (e, got, floor)

    # Bad input: nothing changes.
    api.req("POST", "/conferences/%s/announcements" % room, 404,
            json={"url": url, "participant_id": "nope"})
    api.req("POST", "/conferences/%s/announcements" % room, 400, json={})
    api.req("POST", "/conferences/%s/announcements" % room, 400,
            json={"url": url, "text": "both"})
    api.req("POST", "/conferences/%s/announcements" % room, 400,
            json={"url": announcement_url + "/missing.wav"})
    api.req("POST", "/conferences/nowhere/announcements", 404, json={"text": "hello"})
    api.req("POST", "/conferences/nowhere/recording", 404)

    # Stop: the finished recording (200, complete); a second stop is 409.
    done = api.req("DELETE", "/conferences/%s/recording" % room, 200).json()
    assert done["id"] == r["id"] and done["state"] == "complete", done
    assert done["duration_ms"] > 10000 and done["bytes"] > 44, done
    api.req("DELETE", "/conferences/%s/recording" % room, 409)
    meta = api.req("GET", "/recordings/" + r["id"], 200).json()
    assert meta["call_id"] == r["call_id"] and meta["state"] == "complete", meta
    body = api.req("GET", "/recordings/%s/audio" % r["id"], 200).content
    path = os.path.join(artifacts, "conference-recording.wav")
    with open(path, "wb") as f:
        f.write(body)
    info = audio.read_wav_channels(path)
    assert info.header_consistent and info.rate == 8000, info
    # The whole mix: all three tones, throughout (2 s windows at the start and the end) ...
    w = audio.read_wav(path)
    hears(path, [F_A, F_B, F_C], [], 0.5, 2.5, "the recording's start")
    hears(path, [F_A, F_B, F_C], [], w.duration - 3.0, w.duration - 1.0, "the recording's end")
    # ... and the announcement into the mix is in it (somewhere in the first 8 s).
    ann = max(power(path, F_ANN, t, t + 1.0) for t in range(0, 8))
    assert ann > 20 * power(path, F_ANN, w.duration - 3.0, w.duration - 1.0), \
        "the announcement to all is not in the recording"

    for p in ph.values():
        p.hangup()
    wait_until(lambda: api.req("GET", "/conferences/" + room).status_code == 404,
               what="conference ended")


@pytest.mark.timeout(120)
def test_a_recording_running_when_the_conference_ends_is_completed(
        server_factory, phones, tones, artifacts):
    room = "end-room"
    server, api, ph, ids = _three_in_a_room(server_factory, phones, tones, room)
    r = api.req("POST", "/conferences/%s/recording" % room, 201).json()
    time.sleep(2.5)
    for p in ph.values():
        p.hangup()
    wait_until(lambda: api.req("GET", "/conferences/" + room).status_code == 404,
               what="conference ended")
    meta = wait_until(lambda: (lambda m: m if m["state"] == "complete" else None)(
        api.req("GET", "/recordings/" + r["id"], 200).json()), what="recording completed")
    assert meta["duration_ms"] >= 2000, meta
    path = os.path.join(artifacts, "ended.wav")
    with open(path, "wb") as f:
        f.write(api.req("GET", "/recordings/%s/audio" % r["id"], 200).content)
    hears(path, [F_A, F_B, F_C], [], 0.5, 2.0, "the recording of an ended conference")


# ------------------------------------------------- api19 `<Conference record="record-from-start">`
from test_app_runtime import hooks  # noqa: E402,F401 (the fixture)


@pytest.mark.timeout(150)
def test_rcml_conference_record_from_start_records_the_mix(
        server_factory, phones, tones, hooks, artifacts):  # noqa: F811
    """Two api19 calls (to 201 and 202) run `<Dial><Conference record="record-from-start">`:
    the conference's mix is recorded from the first join (once, not per join) and the WAV,
    completed when the conference ends, holds both phones' tones."""
    from test_api19_calls import Api19, account_sid
    from hfserver import ACME_DID

    xml = ('<Response><Dial><Conference record="record-from-start" beep="false">roomR'
           '</Conference></Dial></Response>')
    hook = hooks({"/start": (200, xml)})
    server = server_factory()
    api19 = Api19(server, account_sid(server))
    api = Native(server)
    ph = {}
    for name, ext in (("A", "201"), ("B", "202")):
        p = phones(name)
        assert p.register(server, ext)["code"] == 200
        p.play(tones[FREQ[ext]])
        p.auto_answer(200)
        ph[ext] = p
    for ext in ph:
        api19.post("/Calls.json", 200, From=ACME_DID, To="sip:%s@acme.local" % ext,
                   Url=hook.url("/start"))
        ph[ext].wait_incoming(timeout=10)

    def members():
        r = api.req("GET", "/conferences/roomR")
        return r.json()["participants"] if r.status_code == 200 else []
    wait_until(lambda: len(members()) == 2, timeout=20, what="both RCML calls in the room")
    running = api.req("GET", "/recordings", 200).json()["recordings"]
    assert [r["state"] for r in running] == ["recording"], running
    time.sleep(3.0)
    for p in ph.values():
        p.hangup()
    server.wait_metric("hookflash_conferences_active", 0)
    done = wait_until(lambda: (lambda rs: rs if rs[0]["state"] == "complete" else None)(
        api.req("GET", "/recordings", 200).json()["recordings"]), what="recording completed")
    assert len(done) == 1 and done[0]["id"] == running[0]["id"], done
    path = os.path.join(artifacts, "rcml-conference.wav")
    with open(path, "wb") as f:
        f.write(api.req("GET", "/recordings/%s/audio" % done[0]["id"], 200).content)
    hears(path, [F_A, F_B], [F_C], 0.8, 2.8, "the RCML conference recording")


@pytest.mark.timeout(150)
def test_a_conference_recording_survives_kill_9_and_is_repaired(
        server_factory, phones, tones, artifacts):
    """As call recordings: the row is stored before the file, so a recording a SIGKILL cut is
    repaired at the next start, listed `repaired`, and its WAV (header fixed) holds the mix."""
    room = "crash-room"
    server, api, ph, ids = _three_in_a_room(server_factory, phones, tones, room)
    r = api.req("POST", "/conferences/%s/recording" % room, 201).json()
    time.sleep(3.0)
    server.kill()   # SIGKILL: no shutdown, the WAV header lags behind its data
    server.start()  # repairs unfinished recordings before it serves
    api = Native(server)
    meta = api.req("GET", "/recordings/" + r["id"], 200).json()
    assert meta["state"] == "repaired" and meta["call_id"] == r["call_id"], meta
    data = api.req("GET", "/recordings/%s/audio" % r["id"], 200).content
    assert len(data) == meta["bytes"], meta
    path = os.path.join(artifacts, "crash-repaired.wav")
    with open(path, "wb") as f:
        f.write(data)
    info = audio.read_wav_channels(path)
    assert info.header_consistent and 1.0 <= info.duration <= 4.5, info
    hears(path, [F_A, F_B, F_C], [], 0.3, info.duration - 0.3, "the repaired recording")
    for p in ph.values():
        p.hangup()
