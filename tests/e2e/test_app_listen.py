"""The listen verb with an independent pjsua2 phone: 201 (playing a 1000 Hz tone) calls a number
routed to an application whose call_hook answers a `listen` to a WebSocket server run here
(the `websockets` package: the far side, independent of hookflash's client).

- The server sees the subprotocol `audio.jambonz.org` and a metadata text frame first: the
  call's fields (callSid, from, to, ...) with sampleRate and mixType.
- Then binary frames of L16 (16-bit little-endian PCM, 8 kHz, mono): the caller's 1000 Hz
  tone is detected in them (Goertzel, audio.py).
- The server streams a 1500 Hz tone back as L16 frames (bidirectionalAudio streaming): the
  phone hears it.
- REST listen_status pause stops the audio frames (the socket stays open), resume restarts
  them.
- The server closes the socket: the listen's actionHook gets reason socketClosed, and its
  answer (hangup) ends the call.
"""
import json
import math
import os
import struct
import threading
import time

import pytest
import requests
from websockets.sync.server import serve

import audio
from api_support import registered
from checks import wait_until
from conftest import F_A, F_B
from hfserver import free_port
from test_app_runtime import APP_NUMBER, HookServer, hooks, start  # noqa: F401 (the fixture)

pytestmark = pytest.mark.server

API_KEY = "hf_test_key_acme"
RATE = 8000
FRAME = 160  # 20 ms at 8 kHz


class ListenServer:
    """A WebSocket server taking one listen: records the subprotocol, the first (text) frame
    and the audio with arrival times; streams ``back_freq`` back while ``sending``; closes
    when ``close`` is set."""

    def __init__(self, back_freq):
        self.back_freq = back_freq
        self.port = free_port(udp=False, tcp=True)
        self.subprotocol = None
        self.first = None
        self.texts = []
        self.chunks = []  # (monotonic time, bytes)
        self.lock = threading.Lock()
        self.close = threading.Event()
        self.connected = threading.Event()
        self.server = serve(self.handle, "127.0.0.1", self.port,
                            subprotocols=["audio.jambonz.org"])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self):
        return "ws://127.0.0.1:%d/" % self.port

    def handle(self, ws):
        self.subprotocol = ws.subprotocol
        self.first = ws.recv(timeout=10)
        self.connected.set()
        stop_sending = threading.Event()

        def send_back():
            n = 0
            nxt = time.monotonic()
            while not stop_sending.is_set():
                frame = b"".join(
                    struct.pack("<h", int(12000 * math.sin(2 * math.pi * self.back_freq
                                                            * (n + i) / RATE)))
                    for i in range(FRAME))
                n += FRAME
                try:
                    ws.send(frame)
                except Exception:  # noqa: BLE001 - the socket closed
                    return
                nxt += 0.02
                time.sleep(max(0.0, nxt - time.monotonic()))

        sender = threading.Thread(target=send_back, daemon=True)
        sender.start()
        while not self.close.is_set():
            try:
                msg = ws.recv(timeout=0.1)
            except TimeoutError:
                continue
            except Exception:  # noqa: BLE001 - closed by hookflash
                break
            with self.lock:
                if isinstance(msg, bytes):
                    self.chunks.append((time.monotonic(), msg))
                else:
                    self.texts.append(msg)
        stop_sending.set()
        sender.join(timeout=2)
        ws.close()

    def audio_between(self, t0, t1):
        with self.lock:
            data = b"".join(b for (t, b) in self.chunks if t0 <= t < t1)
        return list(struct.unpack("<%dh" % (len(data) // 2), data[: len(data) // 2 * 2]))

    def count_between(self, t0, t1):
        with self.lock:
            return sum(1 for (t, _) in self.chunks if t0 <= t < t1)

    def stop(self):
        self.close.set()
        self.server.shutdown()


def listen_status(server, call, status):
    r = requests.put(
        "%s/v1/Accounts/%s/Calls/%s" % (server.http, call["account_sid"], call["call_sid"]),
        headers={"Authorization": "Bearer " + API_KEY}, json={"listen_status": status},
        timeout=10)
    assert r.status_code == 204, (status, r.status_code, r.text)


def test_listen_streams_the_callers_audio_and_plays_audio_back(server_factory, phones, tones,
                                                               hooks, artifacts):  # noqa: F811
    ws = ListenServer(F_B)
    done = []

    def on_done(body):
        done.append(body)
        return 200, [{"verb": "hangup"}]

    hook = hooks({
        "/call": (200, [{
            "verb": "listen", "url": ws.url(), "actionHook": "/listen-done",
            "mixType": "mono", "sampleRate": 8000, "metadata": {"tenant": "e2e"},
            "bidirectionalAudio": {"enabled": True, "streaming": True, "sampleRate": 8000},
        }]),
        "/listen-done": on_done,
        "/status": (200, ""),
    })
    server = start(server_factory, {
        "name": "listener", "call_hook": hook.url("/call"),
        "call_status_hook": hook.url("/status")})
    A = registered(phones, server, "A", "201")
    A.play(tones[F_A])
    c = A.call(server.uri(APP_NUMBER))
    A.wait_state("CONFIRMED", call=c, timeout=10)
    assert ws.connected.wait(10), "no WebSocket connection"
    assert ws.subprotocol == "audio.jambonz.org", ws.subprotocol

    # The metadata frame first.
    assert isinstance(ws.first, str), ws.first
    meta = json.loads(ws.first)
    call = json.loads(hook.got("/call")[0]["raw"])
    assert meta["callSid"] == call["call_sid"], meta
    assert meta["accountSid"] == call["account_sid"], meta
    assert meta["from"] == "201", meta
    assert meta["to"].lstrip("+") == APP_NUMBER.lstrip("+"), meta
    assert meta["direction"] == "inbound", meta
    assert meta["sampleRate"] == 8000 and meta["mixType"] == "mono", meta
    assert meta["tenant"] == "e2e", meta

    # The caller's tone in the binary frames (after a moment to settle).
    t0 = time.monotonic()
    time.sleep(2.5)
    got = audio.Wav(RATE, ws.audio_between(t0 + 0.5, t0 + 2.5))
    assert got.duration >= 1.5, got
    assert audio.tone_fraction(got, F_A) >= 0.6, audio.window_report(got, [F_A, F_B])[:20]

    # The phone hears what the server streams back.
    heard = os.path.join(artifacts, "A_listen_back.wav")
    A.record(heard)
    time.sleep(2.0)
    A.stop_record()
    w = audio.read_wav(heard)
    assert audio.tone_fraction(w, F_B, 0.3, w.duration - 0.1) >= 0.6, \
        audio.window_report(w, [F_B, F_A], 0.3)[:30]

    # REST listen_status: pause stops the frames (the socket stays open), resume restarts.
    listen_status(server, call, "pause")
    time.sleep(0.3)
    t1 = time.monotonic()
    time.sleep(1.0)
    assert ws.count_between(t1, t1 + 1.0) == 0, "audio frames while paused"
    assert not done, done
    listen_status(server, call, "resume")
    time.sleep(0.3)
    t2 = time.monotonic()
    time.sleep(1.0)
    assert ws.count_between(t2, t2 + 1.0) >= 40, ws.count_between(t2, t2 + 1.0)
    got = audio.Wav(RATE, ws.audio_between(t2, t2 + 1.0))
    assert audio.tone_fraction(got, F_A) >= 0.6, audio.window_report(got, [F_A])[:20]

    # The server closes: the actionHook, then its hangup.
    ws.stop()
    wait_until(lambda: done, timeout=10, what="the listen's actionHook")
    assert done[0]["reason"] == "socketClosed", done
    assert done[0]["call_sid"] == call["call_sid"], done
    assert done[0]["duration"] >= 5, done
    A.wait_state("DISCONNECTED", call=c, timeout=10)
    server.wait_metric("hookflash_active_calls", 0)


def test_an_unreachable_socket_is_reported_and_the_application_goes_on(
        server_factory, phones, hooks, artifacts):  # noqa: F811
    port = free_port(udp=False, tcp=True)  # nothing listens there
    done = []

    def on_done(body):
        done.append(body)
        return 200, [{"verb": "hangup"}]

    hook = hooks({
        "/call": (200, [{"verb": "listen", "url": "ws://127.0.0.1:%d/" % port,
                         "actionHook": "/listen-done"}]),
        "/listen-done": on_done,
    })
    server = start(server_factory, {"name": "listener", "call_hook": hook.url("/call")})
    A = registered(phones, server, "A", "201")
    c = A.call(server.uri(APP_NUMBER))
    A.wait_state("DISCONNECTED", call=c, timeout=15)
    assert "CONFIRMED" in A.states(call=c)
    assert done and done[0]["reason"] == "connectFailed" and done[0]["status"] == "fail", done
    server.wait_metric("hookflash_active_calls", 0)
