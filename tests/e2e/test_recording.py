"""Call recording (in-call media issue), proven by the file the server writes and by what two
independent pjsua2 phones hear: A (201) plays 1000 Hz, B (202) 1500 Hz; the recording is a
stereo WAV, left = the caller's leg (A's tone), right = the callee's leg (B's tone), holding
only the recorded span; a pause leaves silence of the paused length; the recording notice is
heard by both phones; a recording survives `kill -9` (repaired at start-up, listed,
downloadable). Started through the sipgateio SDK (`record`, then the SDK's history module
finds the recording's URL) and through the native API. Also: a text-to-speech announcement is
heard by both phones, and its cache-hit latency is reported (measured, not asserted)."""
import json
import os
import re
import time

import pytest
import requests

import audio
from api_support import LiveCall, Native, node_available, one_call, sdk, sipgate_login
from conftest import F_A, F_B

pytestmark = pytest.mark.server

needs_node = pytest.mark.skipif(
    not node_available() and os.environ.get("CI") != "true",
    reason="tests/node not installed (scripts/test.sh runs npm ci)")

# Slack for the edges of a span measured around HTTP requests (100 ms analysis windows, 20 ms
# frames, the recorder's 200 ms jitter ring).
EDGE_S = 0.35


def download(url, headers):
    r = requests.get(url, headers=headers, timeout=10)
    assert r.status_code == 200, "GET %s -> %s %s" % (url, r.status_code, r.text[:300])
    assert r.headers.get("content-type") == "audio/wav", r.headers
    return r.content


def save(artifacts, name, data):
    path = os.path.join(artifacts, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def assert_channel_tone(w, freq, other, what, t0=0.2, t1=None, min_fraction=0.8):
    """One channel of the recording carries ``freq`` (dominant over ``other``) in most
    windows of [t0, t1)."""
    ratio = audio.tone_ratio(w, freq, other, t0, t1)
    frac = audio.tone_fraction(w, freq, t0, t1)
    detail = "%s: %r ratio(%d/%d)=%.3g, windows with %d Hz=%.0f%%\n%s" % (
        what, w, freq, other, ratio, freq, 100 * frac,
        audio.window_report(w, [freq, other], t0, t1)[:60])
    assert ratio > 100, "tone not dominant: " + detail
    assert frac >= min_fraction, "tone missing in too many windows: " + detail


def assert_stereo_call(info, what, t0=0.2, t1=None):
    assert info.channels == 2 and info.rate == 8000, "%s: %r" % (what, info)
    left, right = info.chans
    assert_channel_tone(left, F_A, F_B, "%s left (caller A)" % what, t0, t1)
    assert_channel_tone(right, F_B, F_A, "%s right (callee B)" % what, t0, t1)


def assert_hears_speech(path, peer, own, what, t0=0.6, t1=1.1):
    """The phone hears speech: mostly loud windows, neither party's tone. Judged from 0.6 s
    into the phone's recording on: after an earlier announcement a pjsua2 phone's recording
    starts with ~0.5 s of older audio (its playout delay grows by that much although the RTP
    it receives stays continuous; see tests/e2e/README.md)."""
    w = audio.read_wav(path)
    ws = audio.windows(w, t0, t1)
    loud = sum(1 for x in ws if audio.rms(x) >= audio.SILENCE_RMS) / float(len(ws) or 1)
    detail = "%s: %r loud=%.0f%%\n%s" % (what, w, 100 * loud,
                                        audio.window_report(w, [peer, own], t0, t1))
    assert ws and loud >= 0.5, "not speech (too quiet): " + detail
    for f in (peer, own):
        assert audio.tone_fraction(w, f, t0, t1) <= 0.1, "%d Hz heard: %s" % (f, detail)


def wait_history(server, token, call_id, timeout=5.0):
    """The call's entry in the token user's history once it has a recording (plain HTTP)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        r = requests.get(server.http + "/v2/history?types=CALL&limit=10", timeout=5,
                         headers={"Authorization": "Bearer " + token})
        assert r.status_code == 200, r.text
        last = r.json()
        for e in last["items"]:
            if e["callId"] == call_id and e["recordings"]:
                return e
        time.sleep(0.1)
    raise AssertionError("call %s with a recording not in the history: %s" % (call_id, last))


@needs_node
def test_sdk_record_with_notice_stereo_file_and_history(server, phones, tones, artifacts):
    call = LiveCall(server, phones, tones, artifacts)
    token = sipgate_login(server)  # 201: A, the caller
    creds = {"token": token}
    call_id = one_call(server, creds)["callId"]

    t_start0 = time.monotonic()
    sdk(server, creds, "record", call_id, json.dumps({"value": True, "announcement": True}))
    t_start1 = time.monotonic()
    # The notice ("This call is being recorded.") is heard by both phones, instead of the peer.
    ra, rb = call.record("notice", seconds=1.2, settle=0.0)
    assert_hears_speech(ra, F_B, F_A, "A hears the recording notice")
    assert_hears_speech(rb, F_A, F_B, "B hears the recording notice")
    assert one_call(server, creds)["recording"] is True
    time.sleep(1.5)
    t_stop0 = time.monotonic()
    sdk(server, creds, "record", call_id, json.dumps({"value": False, "announcement": False}))
    t_stop1 = time.monotonic()
    assert one_call(server, creds)["recording"] is False
    call.assert_two_way("after recording")
    call.A.hangup(call=call.c)
    call.assert_both_ended()

    # The SDK's history module lists the call with its recording's URL.
    wait_history(server, token, call_id)
    hist = sdk(server, creds, "history", "", json.dumps(
        {"filter": {"types": ["CALL"], "directions": ["OUTGOING"]},
         "pagination": {"limit": 10, "offset": 0}}))["result"]
    entries = [e for e in hist["entries"] if e["callId"] == call_id]
    assert len(entries) == 1, hist
    entry = entries[0]
    assert all(hist["dates"]), "created/lastModified did not become Dates: %s" % hist
    assert (entry["type"], entry["direction"], entry["status"]) == ("CALL", "OUTGOING", "PICKUP"), entry
    assert len(entry["recordings"]) == 1, entry
    rec = entry["recordings"][0]
    assert rec["url"] == "%s/v2/recordings/%s" % (server.http, rec["id"]), entry

    # The URL needs the user's credentials; with them it is the stereo WAV of the span.
    r = requests.get(rec["url"], timeout=5)
    assert r.status_code == 401, r.status_code
    data = download(rec["url"], {"Authorization": "Bearer " + token})
    info = audio.read_wav_channels(data, save(artifacts, "sdk_recording.wav", data))
    assert info.header_consistent, info
    lo, hi = t_stop0 - t_start1, t_stop1 - t_start0
    assert lo - EDGE_S <= info.duration <= hi + EDGE_S, (
        "the file holds %.2fs, the recorded span was %.2f-%.2fs" % (info.duration, lo, hi))
    assert_stereo_call(info, "SDK recording")


def test_native_record_pause_resume_stop_and_download(server, phones, tones, artifacts):
    call = LiveCall(server, phones, tones, artifacts)
    api = Native(server)
    cid = api.one_call()["id"]
    url = "/calls/%s/recording" % cid

    def act(action, recording):
        t0 = time.monotonic()
        got = api.req("POST", url, 200, json={"action": action}).json()
        assert got["recording"] is recording, got
        return t0, time.monotonic()

    s0, s1 = act("start", True)
    time.sleep(1.5)
    p0, p1 = act("pause", True)
    time.sleep(2.0)
    r0, r1 = act("resume", True)
    time.sleep(1.5)
    e0, e1 = act("stop", False)

    listed = api.req("GET", "/recordings?call_id=%s" % cid, 200).json()["recordings"]
    assert len(listed) == 1, listed
    meta = listed[0]
    assert meta["state"] == "complete" and meta["call_id"] == cid, meta
    assert api.req("GET", "/recordings/%s" % meta["id"], 200).json() == meta
    data = download(server.http + meta["audio_url"], api.h)
    assert len(data) == meta["bytes"], meta
    info = audio.read_wav_channels(data, save(artifacts, "native_recording.wav", data))
    assert info.header_consistent, info
    assert e0 - s1 - EDGE_S <= info.duration <= e1 - s0 + EDGE_S, (info, e0 - s1, e1 - s0)

    # The pause: one silent stretch on both channels, where and as long as the pause was.
    gaps = []
    for ch, w in zip("LR", info.chans):
        runs = [r for r in audio.silent_runs(w) if r[1] >= 0.5]
        assert len(runs) == 1, "%s: silent runs %s\n%s" % (ch, runs, audio.window_report(
            w, [F_A, F_B])[:80])
        gaps.append(runs[0])
    for start, length in gaps:
        assert p0 - s1 - EDGE_S <= start <= p1 - s0 + EDGE_S, (gaps, p0 - s1, p1 - s0)
        assert r0 - p1 - EDGE_S <= length <= r1 - p0 + EDGE_S, (gaps, r0 - p1, r1 - p0)
    start, length = gaps[0]
    assert_stereo_call(info, "before the pause", 0.2, start - 0.2)
    assert_stereo_call(info, "after the pause", start + length + 0.3, info.duration - 0.2)

    # Another account sees nothing; no key is a 401.
    other = Native(server, key="hf_test_key_beta")
    assert other.req("GET", "/recordings", 200).json() == {"recordings": []}
    other.req("GET", "/recordings/%s" % meta["id"], 404)
    other.req("GET", "/recordings/%s/audio" % meta["id"], 404)
    r = requests.get(server.http + meta["audio_url"], timeout=5)
    assert r.status_code == 401, r.status_code
    call.assert_two_way("after recording")


def test_recording_survives_kill_9_and_is_repaired(server, phones, tones, artifacts):
    call = LiveCall(server, phones, tones, artifacts)
    api = Native(server)
    cid = api.one_call()["id"]
    api.req("POST", "/calls/%s/recording" % cid, 200, json={"action": "start"})
    time.sleep(2.5)
    server.kill()   # SIGKILL: no shutdown, the WAV header lags behind its data
    server.start()  # repairs unfinished recordings before it serves

    listed = Native(server).req("GET", "/recordings?call_id=%s" % cid, 200).json()["recordings"]
    assert len(listed) == 1, listed
    meta = listed[0]
    assert meta["state"] == "repaired", meta
    data = download(server.http + meta["audio_url"], api.h)
    assert len(data) == meta["bytes"], meta
    info = audio.read_wav_channels(data, save(artifacts, "repaired.wav", data))
    assert info.header_consistent, info
    assert 1.0 <= info.duration <= 2.5 + 1.0, info
    assert_stereo_call(info, "repaired recording", 0.2, info.duration - 0.2)
    call.A.hangup(call=call.c)
    # The call the kill cut got its call record at the restart: ended, cause crash.
    hist = server.cli("calls", "history", "--account", "acme")
    assert hist.returncode == 0, hist.stderr
    cut = [l for l in hist.stdout.splitlines() if " crash " in " %s " % l]
    assert len(cut) == 1, hist.stdout
    assert "201" in cut[0] and "202" in cut[0] and "500" in cut[0], cut
    m = server.metrics()
    assert m.value("hookflash_crash_records_total") == 1, m


def _tts_log_lines(server):
    with open(server.log_path, "rb") as f:
        text = re.sub(r"\x1b\[[0-9;]*m", "", f.read().decode("utf-8", "replace"))
    return [l for l in text.splitlines() if "tts" in l.lower()]


def test_tts_announcement_is_heard_by_both_and_cache_hit_latency(
        server, phones, tones, artifacts, capsys):
    call = LiveCall(server, phones, tones, artifacts)
    api = Native(server)
    cid = api.one_call()["id"]
    timings = []
    for attempt in ("first", "cached"):
        t0 = time.monotonic()
        api.req("POST", "/calls/%s/announcements" % cid, 202, json={"text": "hello from hookflash"})
        timings.append(time.monotonic() - t0)
        ra, rb = call.record("tts_%s" % attempt, seconds=1.2, settle=0.0)
        assert_hears_speech(ra, F_B, F_A, "A hears the %s TTS announcement" % attempt)
        assert_hears_speech(rb, F_A, F_B, "B hears the %s TTS announcement" % attempt)
        time.sleep(0.8)  # "hello from hookflash" (1.4 s) is over
    call.assert_two_way("after TTS")
    lines = _tts_log_lines(server)
    took = [m.group(1) for l in lines for m in [re.search(r"took=(\S+)", l)] if m]
    hits = [l for l in lines if "cache hit" in l]
    assert hits, "the second identical request was not a cache hit:\n%s" % "\n".join(lines)
    with capsys.disabled():
        print("\n[figures] TTS request latency: first %.1f ms (synthesis took %s), "
              "identical second %.1f ms (cache hit)" % (
                  1000 * timings[0], ",".join(took) or "?", 1000 * timings[1]))
