"""sipgate push API answers executed: a user's app (the official sipgateio webhook server,
tests/node/sipgate_push_app.js, answering newCall with the SDK's WebhookResponse builders)
decides what happens to an inbound call before it rings; independent pjsua2 phones prove each
effect.

- redirectCall (<Dial><Number>202</Number></Dial>) on a call from 203 to 201: 202 rings (201
  does not) and sees the Dial's callerId (or anonymous); the caller and 202 hear each other's
  tones; the app still gets hangup. A Dial nobody can be reached by rings the user instead.
- gatherDTMF (<Gather maxDigits timeout><Play><Url>): the caller hears the prompt's tone,
  presses 1234, and onData gets event=dtmf with 123 (maxDigits); its hangUpCall() ends the call.
- rejectCall busy: the caller gets 486; playAudio: the caller hears the WAV's tone; hangUpCall:
  the call ends unanswered; sendToVoicemail: the mailbox answers (the caller hears the greeting).
- An app that answers 500, garbage, or nothing within http.push_answer_timeout_ms: the call
  rings the user as before, and newCall is not sent twice.

Outgoing calls (the caller 201 has the webhook; its newCall has direction=out and is answered):
- rejectCall busy: 201 gets 486 and 202 never rings; hangUpCall: the call ends unanswered;
  playAudio: 201 hears the WAV's tone, 202 never rings. (A caller's gatherDTMF is not
  executed: test_dtmf.py, its onData gets 202's keys once connected.)
- redirectCall to 203 on a call 201 dialled to 202: 203 rings (202 does not), 201 and 203 hear
  each other's tones. A Dial the user may not place: 202 rings as dialled.
- 500, garbage, or too late: 202 rings as dialled; exactly one newCall (direction=out) sent.
"""
import http.server
import json
import os
import queue
import subprocess
import threading
import time

import pytest

import audio
from api_support import NODE_DIR, Native, node_available, registered
from checks import assert_hears, wait_until
from conftest import F_A, F_B, F_C
from hfserver import free_port

pytestmark = [
    pytest.mark.server,
    pytest.mark.skipif(
        not node_available() and os.environ.get("CI") != "true",
        reason="tests/node not installed (scripts/test.sh runs npm ci)",
    ),
]

EXTRA = [("203", "secret203", "Carol")]


class PushApp:
    """The SDK's webhook server answering newCall as `mode` says; its events on a queue."""

    def __init__(self, artifacts, *args, direction="in"):
        self.port = free_port(udp=False)
        self.url = "http://127.0.0.1:%d" % self.port
        self.log = open(os.path.join(artifacts, "push_app_%s.log" % args[0]), "w")
        self.proc = subprocess.Popen(
            ["node", os.path.join(NODE_DIR, "sipgate_push_app.js"), str(self.port)]
            + [str(a) for a in args],
            cwd=NODE_DIR, stdout=subprocess.PIPE, stderr=self.log, text=True,
            env=dict(os.environ, PUSH_DIRECTION=direction))
        self.events = queue.Queue()
        self.seen = []
        threading.Thread(target=self._read, daemon=True).start()
        first = self.next()
        assert first["event"] == "listening", first

    def _read(self):
        for line in self.proc.stdout:
            self.events.put(json.loads(line))

    def next(self, timeout=15):
        e = self.events.get(timeout=timeout)
        self.seen.append(e)
        return e

    def until(self, kind, timeout=15):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, "no %r event; seen %s" % (kind, self.seen)
            try:
                e = self.next(left)
            except queue.Empty:
                raise AssertionError("no %r event; seen %s" % (kind, self.seen))
            assert e["event"] != "error", e
            if e["event"] == kind:
                return e

    def close(self):
        self.proc.kill()
        self.proc.wait(5)
        self.log.close()


class Files:
    """Serves WAV files over HTTP (GET) for Play URLs."""

    def __init__(self, files):
        outer = files

        class H(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                path = outer.get(self.path.split("?")[0])
                if path is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                with open(path, "rb") as f:
                    data = f.read()
                self.send_response(200)
                self.send_header("Content-Type", "audio/wav")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port(udp=False)), H)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.httpd.server_address[1], path)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def push_app(artifacts):
    made = []

    def make(*args, direction="in"):
        a = PushApp(artifacts, *args, direction=direction)
        made.append(a)
        return a

    yield make
    for a in made:
        a.close()


@pytest.fixture
def files():
    made = []

    def make(mapping):
        f = Files(mapping)
        made.append(f)
        return f

    yield make
    for f in made:
        f.close()


def set_webhook(server, ext, url):
    out = server.cli("user", "webhook", ext, url, "--account", "acme")
    assert out.returncode == 0, out.stderr


def never_rings(phone, what, timeout=1.0):
    with pytest.raises(Exception):
        phone.wait_incoming(timeout=timeout)
    assert not phone.find("incoming"), "%s rang" % what


def recorded(phone, artifacts, name, seconds):
    path = os.path.join(artifacts, name)
    phone.record(path)
    time.sleep(seconds)
    phone.stop_record()
    return path


@pytest.mark.parametrize("shown", ["callerId", "anonymous"])
def test_dial_rings_another_number_and_connects(server_factory, phones, tones, push_app,
                                                 artifacts, shown):
    """203 calls 201, whose app answers redirectCall to 202: 202 rings (201 does not), sees
    the Dial's callerId (the account's number, not 203) or anonymous, and the caller and 202
    hear each other; 201's app still gets the hangup."""
    server = server_factory(extra_users=EXTRA)
    if shown == "callerId":
        app = push_app("dial", "202", "+4930123456")
    else:
        app = push_app("dial", "202", "", "anonymous")
    set_webhook(server, "201", app.url)
    A = registered(phones, server, "A", "201")
    B = registered(phones, server, "B", "202")
    C = registered(phones, server, "C", "203")
    C.play(tones[F_C])
    B.play(tones[F_B])
    B.auto_answer(200)
    A.auto_answer(200)
    c = C.call(server.uri("201"))
    new = app.until("newCall")
    assert new["direction"] == "in" and new["users"] == ["Alice"], new
    assert new["to"] == "+4930123456" and new["from"] == "+203", new
    inc = B.wait_incoming(timeout=10)
    C.wait_state("CONFIRMED", call=c, timeout=10)
    B.wait_state("CONFIRMED", call=inc["call"])
    never_rings(A, "201 (the called user: its app dialled 202 instead)", timeout=0.5)
    if shown == "callerId":
        assert "4930123456" in inc["from"] and "203" not in inc["from"], inc
    else:
        assert "anonymous" in inc["from"] and "203" not in inc["from"], inc
    time.sleep(0.5)
    rc = recorded(C, artifacts, "C_dial.wav", 2.0)
    rb = recorded(B, artifacts, "B_dial.wav", 2.0)
    assert_hears(rc, F_B, F_C, what="caller hears 202")
    assert_hears(rb, F_C, F_B, what="202 hears the caller")
    C.hangup(call=c)
    B.wait_state("DISCONNECTED", call=inc["call"], timeout=10)
    hup = app.until("hangup")
    assert hup["callId"] == new["callId"], (hup, new)
    server.wait_metric("hookflash_active_calls", 0)


def test_refused_dial_rings_the_user(server_factory, phones, tones, push_app, artifacts):
    """A Dial the account may not place (dial rules: internal only; a national number) does
    not drop the caller: the call rings the called user as if the app had not answered."""
    server = server_factory(account_extra={"acme": {"dial": ["internal"]}})
    app = push_app("dial", "+4969555123")
    set_webhook(server, "202", app.url)
    A = registered(phones, server, "A", "201")
    B = registered(phones, server, "B", "202")
    A.play(tones[F_A])
    B.play(tones[F_B])
    B.auto_answer(200)
    c = A.call(server.uri("202"))
    app.until("answered")
    inc = B.wait_incoming(timeout=10)
    A.wait_state("CONFIRMED", call=c, timeout=10)
    B.wait_state("CONFIRMED", call=inc["call"])
    time.sleep(0.5)
    rb = recorded(B, artifacts, "B_refused.wav", 1.5)
    assert_hears(rb, F_A, F_B, what="the user hears the caller")
    A.hangup(call=c)
    server.wait_metric("hookflash_active_calls", 0)


def test_gather_posts_the_digits_to_on_data_and_the_prompt_is_heard(
        server_factory, phones, push_app, files, artifacts):
    server = server_factory()
    prompt = audio.make_tone(os.path.join(artifacts, "prompt.wav"), F_C, seconds=20)
    f = files({"/prompt.wav": prompt})
    app = push_app("gather", 3, 8000, f.url("/prompt.wav"))
    set_webhook(server, "202", app.url)
    A = registered(phones, server, "A", "201")
    B = registered(phones, server, "B", "202")
    B.auto_answer(200)
    c = A.call(server.uri("202"))
    new = app.until("newCall")
    assert new["direction"] == "in", new
    A.wait_state("CONFIRMED", call=c, timeout=10)
    heard = recorded(A, artifacts, "A_prompt.wav", 1.5)
    w = audio.read_wav(heard)
    assert audio.tone_fraction(w, F_C, 0.3, w.duration - 0.2) >= 0.6, \
        audio.window_report(w, [F_C], 0.3)[:30]
    A.dtmf("1234", call=c)
    data = app.until("dtmf")
    # maxDigits=3: the first three keys, in one post.
    assert data["dtmf"] == "123", data
    assert data["callId"] == new["callId"], (data, new)
    # onData answered hangUpCall(): the call ends.
    A.wait_state("DISCONNECTED", call=c, timeout=10)
    never_rings(B, "202 (its app gathered digits instead)", timeout=0.2)
    server.wait_metric("hookflash_active_calls", 0)
    assert not [e for e in app.seen if e["event"] == "dtmf" and e is not data], app.seen


def test_reject_busy_gives_the_caller_486(server_factory, phones, push_app):
    server = server_factory()
    app = push_app("reject", "busy")
    set_webhook(server, "202", app.url)
    A = registered(phones, server, "A", "201")
    B = registered(phones, server, "B", "202")
    B.auto_answer(200)
    c = A.call(server.uri("202"))
    app.until("newCall")
    assert A.end_status(call=c, timeout=10) == 486
    assert "CONFIRMED" not in A.states(call=c)
    never_rings(B, "202 (its app rejected the call)", timeout=0.2)
    server.wait_metric("hookflash_active_calls", 0)


def test_play_is_heard_then_the_call_ends(server_factory, phones, push_app, files, artifacts):
    server = server_factory()
    wav = audio.make_tone(os.path.join(artifacts, "announcement.wav"), F_C, seconds=3)
    f = files({"/a.wav": wav})
    app = push_app("play", f.url("/a.wav"))
    set_webhook(server, "202", app.url)
    A = registered(phones, server, "A", "201")
    B = registered(phones, server, "B", "202")
    B.auto_answer(200)
    c = A.call(server.uri("202"))
    A.wait_state("CONFIRMED", call=c, timeout=10)
    heard = recorded(A, artifacts, "A_play.wav", 1.5)
    w = audio.read_wav(heard)
    assert audio.tone_fraction(w, F_C, 0.3, w.duration - 0.2) >= 0.6, \
        audio.window_report(w, [F_C], 0.3)[:30]
    # Nothing after the Play: the call ends when it has played.
    A.wait_state("DISCONNECTED", call=c, timeout=10)
    never_rings(B, "202 (its app played an announcement)", timeout=0.2)
    server.wait_metric("hookflash_active_calls", 0)


def test_hangup_ends_the_call_unanswered(server_factory, phones, push_app):
    server = server_factory()
    app = push_app("hangup")
    set_webhook(server, "202", app.url)
    A = registered(phones, server, "A", "201")
    B = registered(phones, server, "B", "202")
    B.auto_answer(200)
    c = A.call(server.uri("202"))
    code = A.end_status(call=c, timeout=10)
    assert 400 <= code < 700, code
    assert "CONFIRMED" not in A.states(call=c)
    never_rings(B, "202 (its app hung up)", timeout=0.2)
    server.wait_metric("hookflash_active_calls", 0)


def test_send_to_voicemail_answers_with_the_greeting(server_factory, phones, tones, push_app,
                                                     artifacts):
    server = server_factory()
    api = Native(server)
    api.req("PUT", "/users/202/voicemail", 200, json={"enabled": True})
    app = push_app("voicemail")
    set_webhook(server, "202", app.url)
    A = registered(phones, server, "A", "201")
    B = registered(phones, server, "B", "202")
    B.auto_answer(200)
    c = A.call(server.uri("202"))
    A.wait_state("CONFIRMED", call=c, timeout=10)
    greeting = recorded(A, artifacts, "A_greeting.wav", 2.0)
    assert not audio.silent(audio.read_wav(greeting), 0.5), "the caller hears no greeting"
    never_rings(B, "202 (its app sent the call to voicemail)", timeout=0.2)
    A.play(tones[F_A])
    time.sleep(3)
    A.hangup(call=c)
    server.wait_metric("hookflash_active_calls", 0)
    msgs = wait_until(
        lambda: [m for m in api.req("GET", "/voicemail?user=202", 200).json()["messages"]
                 if m["state"] == "complete"],
        what="the voicemail message")
    assert msgs[0]["caller"] == "201", msgs


class BadApp:
    """A push app that answers newCall badly: 500, garbage, or too late."""

    def __init__(self, how):
        self.requests = []
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                outer.requests.append(body)
                if how == "slow" and "event=newCall" in body:
                    time.sleep(3)
                status, out = {"500": (500, "oops"), "garbage": (200, "<Response><Play>"),
                               "slow": (200, "<Response><Reject/></Response>")}[how]
                data = out.encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port(udp=False)), H)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = "http://127.0.0.1:%d/push" % self.httpd.server_address[1]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize("how", ["500", "garbage", "slow"])
def test_bad_or_late_answers_ring_the_user(server_factory, phones, tones, artifacts, how):
    server = server_factory(http_extra={"push_answer_timeout_ms": 1000})
    app = BadApp(how)
    try:
        set_webhook(server, "202", app.url)
        A = registered(phones, server, "A", "201")
        B = registered(phones, server, "B", "202")
        A.play(tones[F_A])
        B.play(tones[F_B])
        B.auto_answer(200)
        c = A.call(server.uri("202"))
        inc = B.wait_incoming(timeout=10)
        A.wait_state("CONFIRMED", call=c, timeout=10)
        B.wait_state("CONFIRMED", call=inc["call"])
        time.sleep(0.5)
        rb = recorded(B, artifacts, "B_%s.wav" % how, 1.5)
        assert_hears(rb, F_A, F_B, what="the user hears the caller")
        A.hangup(call=c)
        server.wait_metric("hookflash_active_calls", 0)
        time.sleep(0.5)
        news = [r for r in app.requests if "event=newCall" in r]
        assert len(news) == 1, app.requests
        assert "direction=in" in news[0], news
    finally:
        app.close()


def test_caller_hanging_up_while_the_app_thinks_ends_the_call(server_factory, phones, tones,
                                                              artifacts):
    """The caller cancels while the call waits for the newCall answer: the call ends, the
    user's phone does not keep ringing, nothing stays up."""
    server = server_factory(http_extra={"push_answer_timeout_ms": 2000})
    app = BadApp("slow")
    try:
        set_webhook(server, "202", app.url)
        A = registered(phones, server, "A", "201")
        B = registered(phones, server, "B", "202")
        c = A.call(server.uri("202"))
        wait_until(lambda: app.requests, timeout=5, what="the newCall request")
        A.hangup(call=c)
        A.wait_state("DISCONNECTED", call=c, timeout=10)
        server.wait_metric("hookflash_active_calls", 0, timeout=15)
        # If the user's phone rang at all, it stopped.
        if B.find("incoming"):
            B.wait_state("DISCONNECTED", timeout=10)
        assert "CONFIRMED" not in A.states(call=c)
    finally:
        app.close()


def test_outbound_reject_busy_gives_the_calling_phone_486(server_factory, phones, push_app):
    """201 (whose app answers its own newCall, direction=out) dials 202: the app's rejectCall
    busy gives 201 a 486 and 202 never rings."""
    server = server_factory()
    app = push_app("reject", "busy", direction="out")
    set_webhook(server, "201", app.url)
    A = registered(phones, server, "A", "201")
    B = registered(phones, server, "B", "202")
    B.auto_answer(200)
    c = A.call(server.uri("202"))
    new = app.until("newCall")
    assert new["direction"] == "out" and new["users"] == ["Alice"], new
    assert new["from"] == "+4930123456" and new["to"] == "+202", new
    app.until("answered")
    assert A.end_status(call=c, timeout=10) == 486
    assert "CONFIRMED" not in A.states(call=c)
    never_rings(B, "202 (the caller's app rejected the call)", timeout=0.5)
    server.wait_metric("hookflash_active_calls", 0)
    assert len([e for e in app.seen if e["event"] == "newCall"]) == 1, app.seen


def test_outbound_play_is_heard_by_the_caller_and_nobody_rings(server_factory, phones,
                                                                push_app, files, artifacts):
    server = server_factory()
    wav = audio.make_tone(os.path.join(artifacts, "announcement.wav"), F_C, seconds=3)
    f = files({"/a.wav": wav})
    app = push_app("play", f.url("/a.wav"), direction="out")
    set_webhook(server, "201", app.url)
    A = registered(phones, server, "A", "201")
    B = registered(phones, server, "B", "202")
    B.auto_answer(200)
    c = A.call(server.uri("202"))
    A.wait_state("CONFIRMED", call=c, timeout=10)
    heard = recorded(A, artifacts, "A_out_play.wav", 1.5)
    w = audio.read_wav(heard)
    assert audio.tone_fraction(w, F_C, 0.3, w.duration - 0.2) >= 0.6, \
        audio.window_report(w, [F_C], 0.3)[:30]
    A.wait_state("DISCONNECTED", call=c, timeout=10)
    never_rings(B, "202 (the caller's app played an announcement)", timeout=0.2)
    server.wait_metric("hookflash_active_calls", 0)


def test_outbound_hangup_ends_the_call_unanswered(server_factory, phones, push_app):
    server = server_factory()
    app = push_app("hangup", direction="out")
    set_webhook(server, "201", app.url)
    A = registered(phones, server, "A", "201")
    B = registered(phones, server, "B", "202")
    B.auto_answer(200)
    c = A.call(server.uri("202"))
    code = A.end_status(call=c, timeout=10)
    assert 400 <= code < 700, code
    assert "CONFIRMED" not in A.states(call=c)
    never_rings(B, "202 (the caller's app hung up)", timeout=0.5)
    server.wait_metric("hookflash_active_calls", 0)


def test_outbound_dial_calls_another_number_instead(server_factory, phones, tones, push_app,
                                                    artifacts):
    """201 dials 202; its app answers redirectCall to 203: 203 rings (202 does not), 201 and 203
    hear each other; the app still gets the hangup."""
    server = server_factory(extra_users=EXTRA)
    app = push_app("dial", "203", direction="out")
    set_webhook(server, "201", app.url)
    A = registered(phones, server, "A", "201")
    B = registered(phones, server, "B", "202")
    C = registered(phones, server, "C", "203")
    A.play(tones[F_A])
    C.play(tones[F_C])
    B.auto_answer(200)
    C.auto_answer(200)
    c = A.call(server.uri("202"))
    new = app.until("newCall")
    assert new["direction"] == "out", new
    inc = C.wait_incoming(timeout=10)
    A.wait_state("CONFIRMED", call=c, timeout=10)
    C.wait_state("CONFIRMED", call=inc["call"])
    never_rings(B, "202 (the caller's app dialled 203 instead)", timeout=0.5)
    time.sleep(0.5)
    ra = recorded(A, artifacts, "A_out_dial.wav", 2.0)
    rc = recorded(C, artifacts, "C_out_dial.wav", 2.0)
    assert_hears(ra, F_C, F_A, what="201 hears 203")
    assert_hears(rc, F_A, F_C, what="203 hears 201")
    A.hangup(call=c)
    C.wait_state("DISCONNECTED", call=inc["call"], timeout=10)
    hup = app.until("hangup")
    assert hup["callId"] == new["callId"], (hup, new)
    server.wait_metric("hookflash_active_calls", 0)
    assert len([e for e in app.seen if e["event"] == "newCall"]) == 1, app.seen


def test_outbound_dial_the_user_may_not_place_goes_as_dialled(server_factory, phones, tones,
                                                               push_app, artifacts):
    """The Dial is placed with the calling user's permissions: 201 may dial internal only, its
    app redirects to a national number; 202 rings as dialled."""
    server = server_factory(account_extra={"acme": {"dial": ["internal"]}})
    app = push_app("dial", "+4969555123", direction="out")
    set_webhook(server, "201", app.url)
    A = registered(phones, server, "A", "201")
    B = registered(phones, server, "B", "202")
    A.play(tones[F_A])
    B.play(tones[F_B])
    B.auto_answer(200)
    c = A.call(server.uri("202"))
    app.until("answered")
    inc = B.wait_incoming(timeout=10)
    A.wait_state("CONFIRMED", call=c, timeout=10)
    B.wait_state("CONFIRMED", call=inc["call"])
    time.sleep(0.5)
    rb = recorded(B, artifacts, "B_out_refused.wav", 1.5)
    assert_hears(rb, F_A, F_B, what="202 hears the caller")
    A.hangup(call=c)
    server.wait_metric("hookflash_active_calls", 0)


@pytest.mark.parametrize("how", ["500", "garbage", "slow"])
def test_outbound_bad_or_late_answers_go_as_dialled(server_factory, phones, tones, artifacts,
                                                     how):
    server = server_factory(http_extra={"push_answer_timeout_ms": 1000})
    app = BadApp(how)
    try:
        set_webhook(server, "201", app.url)
        A = registered(phones, server, "A", "201")
        B = registered(phones, server, "B", "202")
        A.play(tones[F_A])
        B.play(tones[F_B])
        B.auto_answer(200)
        c = A.call(server.uri("202"))
        inc = B.wait_incoming(timeout=10)
        A.wait_state("CONFIRMED", call=c, timeout=10)
        B.wait_state("CONFIRMED", call=inc["call"])
        time.sleep(0.5)
        ra = recorded(A, artifacts, "A_out_%s.wav" % how, 1.5)
        rb = recorded(B, artifacts, "B_out_%s.wav" % how, 1.5)
        assert_hears(ra, F_B, F_A, what="201 hears 202")
        assert_hears(rb, F_A, F_B, what="202 hears 201")
        A.hangup(call=c)
        server.wait_metric("hookflash_active_calls", 0)
        time.sleep(0.5)
        news = [r for r in app.requests if "event=newCall" in r]
        assert len(news) == 1, app.requests
        assert "direction=out" in news[0], news
    finally:
        app.close()
