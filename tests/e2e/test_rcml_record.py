"""RCML <Record> and <Dial record> with independent pjsua2 phones: the phone's tone must be in
the WAV fetched from the RecordingUrl the action request carries (with the account's
credentials), a finishOnKey pressed at the phone ends the recording early, the caller's
silence ends it, and a recorded <Dial> holds both parties' tones."""
import os
import time

import pytest
import requests
from twilio.twiml.voice_response import Dial, Record, VoiceResponse

import audio
from api_support import registered
from checks import wait_until
from conftest import F_A, F_B
from hfserver import ACME_DID
from test_api19_calls import API_KEY, Api19, account_sid, form, rcml
from test_app_runtime import hooks  # noqa: F401  (the fixture)

pytestmark = pytest.mark.server


def hangup_doc():
    r = VoiceResponse()
    r.hangup()
    return 200, str(r)


def fetch_recording(server, url, ac):
    assert url.startswith(server.http + "/restcomm/2012-04-24/Accounts/%s/Recordings/RE" % ac), url
    assert requests.get(url, timeout=10).status_code == 401, "a recording needs credentials"
    assert requests.get(url, auth=("AC" + "0" * 32, API_KEY), timeout=10).status_code == 401
    r = requests.get(url, auth=(ac, API_KEY), timeout=10)
    assert r.status_code == 200 and r.headers["content-type"] == "audio/wav", r.text[:200]
    return audio.read_wav_channels(r.content, url)


def tone_in(w, freq):
    return audio.tone_fraction(w, freq, 0.3, w.duration - 0.2)


def test_record_holds_the_callers_tone_and_finish_on_key_ends_it(
        server, phones, hooks, artifacts):  # noqa: F811
    tone = os.path.join(artifacts, "tone_a.wav")
    audio.make_tone(tone, F_A, seconds=10)
    holder = {}

    def start(_b):
        return rcml(Record(action=holder["h"].url("/recorded"), max_length=20,
                           finish_on_key="#", timeout=10))

    hook = hooks({"/start": start, "/recorded": hangup_doc()})
    holder["h"] = hook
    ac = account_sid(server)
    api = Api19(server, ac)
    A = registered(phones, server, "A", "201")
    A.play(tone)
    A.auto_answer(200)
    sid = api.post("/Calls.json", 200, From=ACME_DID, To="client:201",
                   Url=hook.url("/start")).json()["sid"]
    call = A.wait_incoming(timeout=10)["call"]
    A.wait_state("CONFIRMED", call=call, timeout=10)
    wait_until(lambda: hook.got("/start"), timeout=10, what="the Url")
    time.sleep(2.5)
    # A key that is not the finish key goes on recording; '#' ends it.
    A.dtmf("5", call=call)
    time.sleep(0.5)
    A.dtmf("#", call=call)
    got = form(wait_until(lambda: hook.got("/recorded"), timeout=10, what="the action")[0])
    assert got["CallSid"] == sid and got["Digits"] == "#", got
    # The <Hangup/> the action answered ends the call.
    A.wait_state("DISCONNECTED", call=call, timeout=10)
    wav = fetch_recording(server, got["RecordingUrl"], ac)
    caller = wav.chans[0]
    assert 2.0 <= caller.duration < 20, (wav, got)
    assert abs(int(got["RecordingDuration"]) - caller.duration) <= 1, (wav, got)
    assert tone_in(caller, F_A) >= 0.6, audio.window_report(caller, [F_A], 0.3)[:30]
    server.wait_metric("hookflash_active_calls", 0)


def test_record_ends_on_the_callers_silence(server, phones, hooks, artifacts):  # noqa: F811
    short = os.path.join(artifacts, "tone_short.wav")
    audio.make_tone(short, F_A, seconds=1.5)
    holder = {}

    def start(_b):
        return rcml(Record(action=holder["h"].url("/recorded"), max_length=30, timeout=1,
                           play_beep=False))

    hook = hooks({"/start": start, "/recorded": hangup_doc()})
    holder["h"] = hook
    ac = account_sid(server)
    api = Api19(server, ac)
    A = registered(phones, server, "A", "201")
    A.auto_answer(200)
    api.post("/Calls.json", 200, From=ACME_DID, To="client:201", Url=hook.url("/start"))
    call = A.wait_incoming(timeout=10)["call"]
    A.wait_state("CONFIRMED", call=call, timeout=10)
    A.play(short, loop=False)
    got = form(wait_until(lambda: hook.got("/recorded"), timeout=20, what="the action")[0])
    assert got.get("Digits", "") == "", got  # sent empty (parse_qs drops blanks)
    A.wait_state("DISCONNECTED", call=call, timeout=10)
    wav = fetch_recording(server, got["RecordingUrl"], ac)
    # Ended by silence, long before maxLength; the tone is in it.
    assert wav.duration < 10, wav
    assert audio.has_tone(wav.chans[0], F_A, 0.2, 1.2, min_fraction=0.5), \
        audio.window_report(wav.chans[0], [F_A], 0.0)[:30]


def test_dial_record_holds_both_parties(server, phones, hooks, artifacts):  # noqa: F811
    tones = {}
    for f in (F_A, F_B):
        tones[f] = os.path.join(artifacts, "tone_%d.wav" % f)
        audio.make_tone(tones[f], f, seconds=10)
    holder = {}

    def start(_b):
        d = Dial(action=holder["h"].url("/dialled"), timeout=10, record="record-from-answer")
        d.client("202")
        return rcml(d)

    hook = hooks({"/start": start, "/dialled": hangup_doc()})
    holder["h"] = hook
    ac = account_sid(server)
    api = Api19(server, ac)
    A = registered(phones, server, "A", "201")
    B = registered(phones, server, "B", "202")
    A.play(tones[F_A])
    B.play(tones[F_B])
    A.auto_answer(200)
    B.auto_answer(200)
    api.post("/Calls.json", 200, From=ACME_DID, To="client:201", Url=hook.url("/start"))
    a_call = A.wait_incoming(timeout=10)["call"]
    b_call = B.wait_incoming(timeout=10)["call"]
    B.wait_state("CONFIRMED", call=b_call, timeout=10)
    time.sleep(2.5)
    B.hangup(call=b_call)
    got = form(wait_until(lambda: hook.got("/dialled"), timeout=10, what="the Dial action")[0])
    assert got["DialCallStatus"] == "completed", got
    A.wait_state("DISCONNECTED", call=a_call, timeout=10)
    wav = fetch_recording(server, got["RecordingUrl"], ac)
    assert wav.channels == 2 and wav.duration >= 2.0, wav
    assert int(got["RecordingDuration"]) >= 2, got
    assert tone_in(wav.chans[0], F_A) >= 0.6, audio.window_report(wav.chans[0], [F_A], 0.3)[:30]
    assert tone_in(wav.chans[1], F_B) >= 0.6, audio.window_report(wav.chans[1], [F_B], 0.3)[:30]
