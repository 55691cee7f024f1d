"""Voicemail and flip (issue 5, capabilities 6-8) with independent pjsua2 phones: a rejected
(or forwarded, or unanswered) call reaches the callee's mailbox; the caller hears the greeting;
the message file holds the caller's tone; it is listed and downloadable; a `voicemail` event
announces it. Flip moves the user's side to a forwarding number."""
import io
import os
import time
import wave

import pytest
import requests

import audio
from api_support import LiveCall, Native, registered
from checks import assert_hears, wait_until
from conftest import F_A, F_B, F_C
from test_api_native import Sse

pytestmark = pytest.mark.server


def _mailbox(api, ext, enabled=True):
    r = api.req("PUT", "/users/%s/voicemail" % ext, 200, json={"enabled": enabled})
    assert r.json()["enabled"] is enabled, r.text


def _message(api, ext):
    msgs = wait_until(
        lambda: [m for m in api.req("GET", "/voicemail?user=%s" % ext, 200).json()["messages"]
                 if m["state"] == "complete"],
        what="a complete voicemail message")
    assert len(msgs) == 1, msgs
    return msgs[0]


def _audio(api, msg, artifacts):
    r = api.req("GET", "/voicemail/%s/audio" % msg["id"], 200)
    assert r.headers["content-type"] == "audio/wav", r.headers
    path = os.path.join(artifacts, "message.wav")
    with open(path, "wb") as f:
        f.write(r.content)
    return audio.read_wav_channels(r.content, path)


def test_rejected_call_goes_to_voicemail(server, phones, tones, artifacts):
    api = Native(server)
    _mailbox(api, "202")
    live = LiveCall(server, phones, tones, artifacts, answer=False)
    events = Sse(server, query="?after=0")
    call = api.one_call()
    api.req("POST", "/calls/%s/reject" % call["id"], 200)
    live.A.wait_state("CONFIRMED", call=live.c, timeout=5)  # answered by the mailbox
    live.B.wait_state("DISCONNECTED", call=live.inc["call"], timeout=5)
    assert "CONFIRMED" not in live.B.states(call=live.inc["call"])
    # The caller hears the greeting (speech), then leaves ~3 s of its tone.
    ra = os.path.join(artifacts, "A_greeting.wav")
    live.A.record(ra)
    time.sleep(2.5)
    live.A.stop_record()
    w = audio.read_wav(ra)
    assert not audio.silent(w, 0.5), "the caller hears no greeting: %r" % w
    api.req("POST", "/calls/%s/hold" % call["id"], 409)  # no call control in a mailbox
    time.sleep(5)
    live.A.hangup(call=live.c)
    server.wait_metric("hookflash_active_calls", 0)

    msg = _message(api, "202")
    assert msg["caller"] == "201" and msg["call_id"] == call["id"], msg
    assert msg["duration_ms"] >= 1000, msg
    info = _audio(api, msg, artifacts)
    left = info.chans[0]
    assert audio.tone_fraction(left, F_A, 0.3, left.duration - 0.2) >= 0.8, \
        audio.window_report(left, [F_A, F_B], 0.3)[:40]
    ev, _ = events.until("voicemail", limit=30)
    assert ev[2]["recording_id"] == msg["id"], ev
    events.close()


def test_forward_to_voicemail_with_an_uploaded_greeting(server, phones, tones, artifacts):
    api = Native(server)
    _mailbox(api, "202")
    # A 44.1 kHz greeting: 1.5 s of 2000 Hz, so the caller can be checked for it.
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(44100)
        import math
        import struct
        w.writeframes(b"".join(struct.pack("<h", int(12000 * math.sin(2 * math.pi * F_C * i / 44100)))
                               for i in range(int(44100 * 1.5))))
    r = requests.put(api.base + "/users/202/voicemail/greeting", data=buf.getvalue(),
                     headers=dict(api.h, **{"Content-Type": "audio/wav"}), timeout=10)
    assert r.status_code == 200, r.text
    live = LiveCall(server, phones, tones, artifacts, answer=False)
    call = api.one_call()
    api.req("POST", "/calls/%s/forward" % call["id"], 400, json={})
    api.req("POST", "/calls/%s/forward" % call["id"], 200, json={"voicemail": True})
    live.A.wait_state("CONFIRMED", call=live.c, timeout=5)
    ra = os.path.join(artifacts, "A_greeting.wav")
    live.A.record(ra)
    time.sleep(1.5)
    live.A.stop_record()
    w = audio.read_wav(ra)
    assert audio.tone_fraction(w, F_C, 0.2, 1.2) >= 0.5, audio.window_report(w, [F_C], 0.2)[:20]
    time.sleep(2.5)
    live.A.hangup(call=live.c)
    msg = _message(api, "202")
    info = _audio(api, msg, artifacts)
    assert audio.tone_fraction(info.chans[0], F_A, 0.3) >= 0.7


def test_unanswered_call_goes_to_voicemail_and_no_mailbox_means_busy(
        server_factory, phones, tones, artifacts):
    server = server_factory(ring_timeout_secs=2)
    api = Native(server)
    _mailbox(api, "202")
    live = LiveCall(server, phones, tones, artifacts, answer=False)
    live.A.wait_state("CONFIRMED", call=live.c, timeout=8)  # the mailbox after 2 s
    time.sleep(6)
    live.A.hangup(call=live.c)
    _message(api, "202")

    # Mailbox off: reject means busy, and forwarding to voicemail is refused.
    _mailbox(api, "202", enabled=False)
    c = live.A.call(server.uri("202"))
    call = wait_until(lambda: [x for x in api.calls() if x["state"] == "ringing"],
                      what="ringing call")[0]
    api.req("POST", "/calls/%s/forward" % call["id"], 400, json={"voicemail": True})
    api.req("POST", "/calls/%s/reject" % call["id"], 200)
    assert live.A.end_status(call=c) == 486


def test_flip_moves_the_users_side_to_a_forwarding_number(server, phones, tones, artifacts):
    api = Native(server)
    api.req("PUT", "/users/202/forwardings", 200,
            json={"forwardings": [{"flip_id": "desk", "number": "103", "label": "Desk"}]})
    live = LiveCall(server, phones, tones, artifacts)
    C = registered(phones, server, "C", "103")
    C.play(tones[F_C])
    C.auto_answer(200, delay_ms=300)
    call = api.one_call()
    api.req("POST", "/calls/%s/flip" % call["id"], 400, json={"flip_id": "nope"})
    api.req("POST", "/calls/%s/flip" % call["id"], 202, json={"flip_id": "desk"})
    inc = C.wait_incoming(timeout=5)
    C.wait_state("CONFIRMED", call=inc["call"], timeout=5)
    live.B.wait_state("DISCONNECTED", call=live.inc["call"], timeout=5)
    time.sleep(0.7)
    ra = os.path.join(artifacts, "A.wav")
    live.A.record(ra)
    time.sleep(2)
    live.A.stop_record()
    assert_hears(ra, F_C, F_A, t0=0.7, what="A hears the flip target")
    live.A.hangup(call=live.c)
    C.wait_state("DISCONNECTED", call=inc["call"], timeout=5)
