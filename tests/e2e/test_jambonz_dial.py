"""jambonz `dial` with independent peers: pjsua2 phones, a raw UDP SIP peer (rawsip.Peer) as
the trunk's carrier, a WebSocket server (the `websockets` package) and the official
@jambonz/node-client SDK.

- One dial rings 202 (pjsua2) and a number through the trunk (the raw peer, which rings
  until cancelled) at once; the `headers` of the dial arrive in the carrier's INVITE; 202
  answers first: 201 and 202 hear each other's tones, the carrier gets CANCEL. The SDK's
  calls.list shows the dialled leg as a child call (`parent_call_sid` = the caller's sid),
  the call_status_hook gets its in-progress, and the actionHook gets dial_call_status,
  dial_call_sid (the child's) and dial_call_duration.
- dtmfCapture/dtmfHook: a sequence keyed on the caller's phone and one on the callee's
  phone each reach the dtmfHook with the leg that pressed them; a listen nested in the dial
  streams both parties (stereo) to the WebSocket, and after a REST mute of the caller (202
  no longer hears it) the caller's tone still reaches the socket.
- Live `tag` and `call_status_hook` by REST update: 204, the next hook request carries the
  new customerData, later statuses go to the new hook; bad values are 400 `{"msg"}`.
"""
import json
import os
import struct
import time

import pytest
import requests

import audio
import rawsip
from api_support import Native, registered
from checks import assert_hears, wait_until
from conftest import F_A, F_B
from test_app_listen import ListenServer
from test_app_runtime import APP_NUMBER, hooks, start  # noqa: F401 (the fixture)
from test_jambonz_sdk import jz

pytestmark = pytest.mark.server

API_KEY = "hf_test_key_acme"
OUTSIDE = "+4969555123"


def record(phone, artifacts, name, seconds):
    path = os.path.join(artifacts, name)
    phone.record(path)
    time.sleep(seconds)
    phone.stop_record()
    return path


def update(server, acc, sid, body):
    return requests.put("%s/v1/Accounts/%s/Calls/%s" % (server.http, acc, sid),
                        headers={"Authorization": "Bearer " + API_KEY}, json=body, timeout=10)


def test_dial_rings_two_targets_the_first_to_answer_is_connected(
        server_factory, phones, tones, hooks, artifacts):  # noqa: F811
    done = []

    def on_done(body):
        done.append(body)
        return 200, [{"verb": "hangup"}]

    hook = hooks({
        "/call": (200, [{
            "verb": "dial", "actionHook": "/dial-done", "timeout": 20,
            "target": [{"type": "user", "name": "202@acme.local"},
                       {"type": "phone", "number": OUTSIDE}],
            "headers": {"X-Hookflash-Test": "fork 42&more"},
        }]),
        "/dial-done": on_done,
        "/status": (200, ""),
    })
    server = start(server_factory, {"name": "forker", "call_hook": hook.url("/call"),
                                    "call_status_hook": hook.url("/status")})
    acc = Native(server).req("GET", "/account", 200).json()["id"]
    carrier = rawsip.Peer(server.sip_port, port=server.trunk_port, invite_code=None,
                          name="carrier")
    try:
        A = registered(phones, server, "A", "201")
        B = registered(phones, server, "B", "202")
        A.play(tones[F_A])
        B.play(tones[F_B])
        c = A.call(server.uri(APP_NUMBER))
        inc = B.wait_incoming(timeout=10)
        # Both ring: the carrier's INVITE carries the dial's header.
        invite = carrier.wait_request("INVITE", timeout=10)
        assert invite is not None, "the carrier was not dialled"
        assert invite.get("x-hookflash-test") == "fork 42&more", invite.raw
        assert "x-hookflash-test" not in invite.first.lower(), invite.first
        B.answer(200, call=inc["call"])
        B.wait_state("CONFIRMED", call=inc["call"], timeout=10)
        cancel = carrier.wait_request("CANCEL", timeout=5)
        assert cancel is not None and cancel.get("call-id") == invite.get("call-id"), \
            carrier.requests()
        time.sleep(0.5)
        ra = os.path.join(artifacts, "A_fork.wav")
        A.record(ra)
        rb = record(B, artifacts, "B_fork.wav", 2.0)
        A.stop_record()
        assert_hears(ra, F_B, F_A, t0=0.3, what="A hears B")
        assert_hears(rb, F_A, F_B, t0=0.3, what="B hears A")

        # The SDK lists the dialled leg as a child call of the caller's.
        parent = json.loads(hook.got("/call")[0]["raw"])["call_sid"]
        listed = jz(server, acc, "list")["result"]
        children = [x for x in listed if x.get("parent_call_sid") == parent]
        assert len(children) == 1, listed
        child = children[0]
        assert child["call_sid"] != parent and child["direction"] == "outbound", child
        assert child["call_status"] == "in-progress", child
        assert child["to"] == "202", child  # the target that answered, not every target
        assert jz(server, acc, "retrieve", child["call_sid"])["result"]["call_sid"] == \
            child["call_sid"]
        statuses = [json.loads(r["raw"]) for r in hook.got("/status")]
        assert any(s["call_sid"] == child["call_sid"] and s.get("parent_call_sid") == parent
                   and s["call_status"] == "in-progress" for s in statuses), statuses

        B.hangup(call=inc["call"])
        wait_until(lambda: done, timeout=10, what="the dial's actionHook")
        assert done[0]["dial_call_status"] == "completed", done
        assert done[0]["dial_call_sid"] == child["call_sid"], done
        assert done[0]["dial_call_duration"] >= 2, done
        A.wait_state("DISCONNECTED", call=c, timeout=10)
        server.wait_metric("hookflash_active_calls", 0)
    finally:
        carrier.close()


def stereo(samples):
    return samples[0::2], samples[1::2]


def test_dial_dtmf_hook_and_nested_listen_with_a_muted_caller(
        server_factory, phones, tones, hooks, artifacts):  # noqa: F811
    ws = ListenServer(F_B)
    captured = []
    done = []

    def on_dtmf(body):
        captured.append(body)
        return 200, []

    def on_done(body):
        done.append(body)
        return 200, [{"verb": "hangup"}]

    hook = hooks({
        "/call": (200, [{
            "verb": "dial", "actionHook": "/dial-done",
            "target": [{"type": "user", "name": "202@acme.local"}],
            "dtmfCapture": ["*2", "#1"], "dtmfHook": "/dtmf",
            "listen": {"url": ws.url(), "mixType": "stereo", "sampleRate": 8000,
                       "disableBidirectionalAudio": True},
        }]),
        "/dtmf": on_dtmf,
        "/dial-done": on_done,
    })
    server = start(server_factory, {"name": "capturer", "call_hook": hook.url("/call")})
    acc = Native(server).req("GET", "/account", 200).json()["id"]
    A = registered(phones, server, "A", "201")
    B = registered(phones, server, "B", "202")
    A.play(tones[F_A])
    B.play(tones[F_B])
    B.auto_answer(200)
    c = A.call(server.uri(APP_NUMBER))
    inc = B.wait_incoming(timeout=10)
    B.wait_state("CONFIRMED", call=inc["call"], timeout=10)
    assert ws.connected.wait(10), "the nested listen did not connect"
    parent = json.loads(hook.got("/call")[0]["raw"])["call_sid"]
    meta = json.loads(ws.first)
    assert meta["callSid"] == parent and meta["mixType"] == "stereo", meta

    # Both parties' tones, one per channel.
    time.sleep(0.5)
    t0 = time.monotonic()
    time.sleep(1.5)
    left, right = stereo(ws.audio_between(t0, t0 + 1.5))
    assert audio.tone_fraction(audio.Wav(8000, left), F_A) >= 0.6, \
        audio.window_report(audio.Wav(8000, left), [F_A, F_B])[:10]
    assert audio.tone_fraction(audio.Wav(8000, right), F_B) >= 0.6, \
        audio.window_report(audio.Wav(8000, right), [F_A, F_B])[:10]

    # Keys from either phone.
    A.dtmf("*2", call=c)
    wait_until(lambda: captured, timeout=5, what="the dtmfHook (caller)")
    B.dtmf("#1", call=inc["call"])
    wait_until(lambda: len(captured) >= 2, timeout=5, what="the dtmfHook (callee)")
    assert captured[0]["dtmf"] == "*2" and captured[0]["dtmf_call_sid"] == parent, captured
    child = captured[1]["dial_call_sid"]
    assert captured[1]["dtmf"] == "#1" and captured[1]["dtmf_call_sid"] == child != parent, \
        captured

    # The caller muted: 202 no longer hears it, the socket still does.
    r = update(server, acc, parent, {"mute_status": "mute"})
    assert r.status_code == 204, r.text
    time.sleep(0.5)
    t1 = time.monotonic()
    rb = record(B, artifacts, "B_muted.wav", 1.5)
    left, _ = stereo(ws.audio_between(t1, t1 + 1.5))
    w = audio.read_wav(rb)
    assert audio.tone_fraction(w, F_A, 0.3, w.duration - 0.1) < 0.1, \
        audio.window_report(w, [F_A], 0.3)[:10]
    assert audio.tone_fraction(audio.Wav(8000, left), F_A) >= 0.6, \
        audio.window_report(audio.Wav(8000, left), [F_A])[:10]

    # The dial ends: the nested listen's socket is closed, the actionHook follows.
    B.hangup(call=inc["call"])
    wait_until(lambda: done, timeout=10, what="the dial's actionHook")
    assert done[0]["dial_call_sid"] == child, done
    wait_until(lambda: _closed(ws), timeout=5, what="the nested listen's audio to stop")
    A.wait_state("DISCONNECTED", call=c, timeout=10)
    ws.stop()
    server.wait_metric("hookflash_active_calls", 0)


def _closed(ws):
    """No audio frame for the last 0.5 s: the stream has ended."""
    now = time.monotonic()
    return ws.count_between(now - 0.5, now + 1) == 0


def test_live_tag_and_status_hook(server_factory, phones, hooks):  # noqa: F811
    hook = hooks({
        "/call": (200, [{"verb": "answer"}, {"verb": "pause", "length": 30}]),
        "/next": (200, [{"verb": "pause", "length": 30}]),
        "/status": (200, ""),
        "/status2": (200, ""),
    })
    server = start(server_factory, {"name": "tagger", "call_hook": hook.url("/call"),
                                    "call_status_hook": hook.url("/status")})
    acc = Native(server).req("GET", "/account", 200).json()["id"]
    A = registered(phones, server, "A", "201")
    c = A.call(server.uri(APP_NUMBER))
    wait_until(lambda: hook.got("/call"), timeout=10, what="the call_hook")
    sid = json.loads(hook.got("/call")[0]["raw"])["call_sid"]

    for bad, msg in [({"tag": "x"}, "tag must be an object"),
                     ({"tag": {"a": 1}, "mute_status": "mute"},
                      "multiple options are not allowed in updateCall"),
                     ({"call_hook": "/next", "call_status_hook": "/rel"},
                      "call_status_hook url must be an absolute url"),
                     ({"call_status_hook": hook.url("/status2"), "mute_status": "mute"},
                      "call_status_hook may only be provided together with call_hook")]:
        r = update(server, acc, sid, bad)
        assert r.status_code == 400 and r.json() == {"msg": msg}, (bad, r.status_code, r.text)
    r = update(server, acc, "00000000-0000-0000-0000-000000000000", {"tag": {"a": 1}})
    assert r.status_code == 404 and "msg" in r.json(), r.text

    r = update(server, acc, sid, {"tag": {"stage": 2, "who": "e2e"}})
    assert r.status_code == 204, r.text
    r = update(server, acc, sid, {"call_hook": "/next", "call_status_hook": hook.url("/status2")})
    assert r.status_code == 204, r.text
    wait_until(lambda: hook.got("/next"), timeout=10, what="the redirect")
    nxt = json.loads(hook.got("/next")[0]["raw"])
    assert nxt["customerData"] == {"stage": 2, "who": "e2e"}, nxt
    before = len(hook.got("/status"))
    A.hangup(call=c)
    wait_until(lambda: hook.got("/status2"), timeout=10, what="the new status hook")
    final = json.loads(hook.got("/status2")[-1]["raw"])
    assert final["call_status"] == "completed" and final["call_sid"] == sid, final
    assert final["customerData"] == {"stage": 2, "who": "e2e"}, final
    time.sleep(0.5)
    assert len(hook.got("/status")) == before, "a status went to the old hook"
    server.wait_metric("hookflash_active_calls", 0)


def test_config_listen_runs_beside_the_verbs_and_plays_a_wav(
        server_factory, phones, tones, hooks, artifacts):  # noqa: F811
    """config.listen: a background listen while the application plays on; the caller's tone
    reaches the socket, and a playAudio with WAV content (16 kHz, base64) is heard by the
    phone and answered with playDone."""
    import base64
    import threading
    import wave
    from websockets.sync.server import serve
    from hfserver import free_port

    clip = os.path.join(artifacts, "clip16k.wav")
    with wave.open(clip, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"".join(struct.pack("<h", int(12000 * __import__("math").sin(
            2 * 3.141592653589793 * F_B * i / 16000))) for i in range(16000 * 4)))
    with open(clip, "rb") as f:
        content = base64.b64encode(f.read()).decode()
    got = {"audio": [], "texts": []}
    connected = threading.Event()

    def handle(ws):
        got["first"] = ws.recv(timeout=10)
        connected.set()
        ws.send(json.dumps({"type": "playAudio", "data": {
            "audioContent": content, "audioContentType": "wav"}}))
        while True:
            try:
                m = ws.recv(timeout=0.2)
            except TimeoutError:
                continue
            except Exception:  # noqa: BLE001 - closed by hookflash
                return
            (got["audio"] if isinstance(m, bytes) else got["texts"]).append(m)

    port = free_port(udp=False, tcp=True)
    srv = serve(handle, "127.0.0.1", port, subprotocols=["audio.jambonz.org"])
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        hook = hooks({"/call": (200, [
            {"verb": "config", "listen": {"enable": True, "url": "ws://127.0.0.1:%d/" % port}},
            {"verb": "pause", "length": 6},
        ])})
        server = start(server_factory, {"name": "bg", "call_hook": hook.url("/call")})
        A = registered(phones, server, "A", "201")
        A.play(tones[F_A])
        c = A.call(server.uri(APP_NUMBER))
        A.wait_state("CONFIRMED", call=c, timeout=10)
        assert connected.wait(10), "the background listen did not connect"
        w = audio.read_wav(record(A, artifacts, "A_wav_clip.wav", 2.0))
        assert audio.tone_fraction(w, F_B, 0.3, w.duration - 0.1) >= 0.6, \
            audio.window_report(w, [F_B], 0.3)[:20]
        wait_until(lambda: any("playDone" in t for t in got["texts"]), timeout=5,
                   what="playDone")
        data = b"".join(got["audio"])
        samples = list(struct.unpack("<%dh" % (len(data) // 2), data[: len(data) // 2 * 2]))
        assert audio.tone_fraction(audio.Wav(8000, samples[8000:]), F_A) >= 0.6, \
            audio.window_report(audio.Wav(8000, samples[8000:]), [F_A])[:10]
        A.wait_state("DISCONNECTED", call=c, timeout=10)
        server.wait_metric("hookflash_active_calls", 0)
    finally:
        srv.shutdown()
