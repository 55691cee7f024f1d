"""Application runtime (jambonz JSON verbs) with an independent pjsua2 phone: 201 dials a number
routed to an application; the application's webhook (a plain Python HTTP server here: the far
side of the hook) answers with verbs; what the phone hears and what the hook receives are the
proof.

- say inside gather: the phone hears speech, presses `42`; the gather's relative actionHook
  gets `digits=42`, `reason=dtmfDetected`, and its answer (play a 1000 Hz WAV, hang up) is
  heard by the phone and ends the call with a BYE.
- Every request is signed (`Jambonz-Signature: t=..,v1=HMAC-SHA256(secret, "t.body")`) with
  the account's webhook secret, and carries the jambonz call fields.
- The call_status_hook gets in-progress then completed, once each.
- A hook that fails (500, invalid JSON) without a fallback: the call is refused, not left
  ringing; with a fallback, the fallback's verbs run.
"""
import hashlib
import hmac
import http.server
import json
import os
import threading
import time

import pytest

import audio
from api_support import Native, registered
from checks import wait_until
from conftest import F_A
from hfserver import free_port

pytestmark = pytest.mark.server

APP_NUMBER = "+4930999000"


class HookServer:
    """The application's web server: answers each path from ``routes`` (a dict path ->
    (status, body) or a callable(body_json) -> (status, body)) and records every request."""

    def __init__(self, routes, files=None):
        self.routes = routes
        self.files = files or {}
        self.requests = []
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _answer(self, status, body, ctype="application/json"):
                data = body if isinstance(body, bytes) else body.encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                path = self.path.split("?")[0]
                if path in outer.files:
                    with open(outer.files[path], "rb") as f:
                        return self._answer(200, f.read(), "audio/wav")
                self._answer(404, "{}")

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n)
                path = self.path.split("?")[0]
                with outer.lock:
                    outer.requests.append(
                        {"path": path, "raw": raw, "headers": dict(self.headers.items()),
                         "at": time.monotonic()})
                route = outer.routes.get(path)
                if route is None:
                    return self._answer(404, "{}")
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {}
                status, out = route(body) if callable(route) else route
                self._answer(status, out if isinstance(out, str) else json.dumps(out))

        self.port = free_port(udp=False, tcp=True)
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def got(self, path):
        with self.lock:
            return [r for r in self.requests if r["path"] == path]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def hooks():
    made = []

    def make(routes, files=None):
        h = HookServer(routes, files)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


def verify_signature(req, secret):
    sig = req["headers"].get("Jambonz-Signature") or req["headers"].get("jambonz-signature")
    assert sig, "unsigned webhook request: %r" % req["headers"]
    parts = dict(p.split("=", 1) for p in sig.split(","))
    mac = hmac.new(secret.encode(), ("%s." % parts["t"]).encode() + req["raw"], hashlib.sha256)
    assert hmac.compare_digest(mac.hexdigest(), parts["v1"]), "bad signature %s" % sig
    assert abs(int(parts["t"]) - time.time()) < 300, sig


def start(server_factory, app):
    return server_factory(applications=[dict(app, numbers=[APP_NUMBER])])


def test_say_gather_play_hangup_heard_by_the_phone(server_factory, phones, hooks, artifacts):
    tone = os.path.join(artifacts, "tone_a.wav")
    audio.make_tone(tone, F_A, seconds=3)
    digits_seen = {}

    def on_digits(body):
        digits_seen.update(body)
        return 200, [{"verb": "play", "url": hook.url("/tone.wav")}, {"verb": "hangup"}]

    hook = hooks({
        "/call": (200, [{
            "verb": "gather", "input": ["digits"], "numDigits": 2, "timeout": 15,
            "actionHook": "/digits",
            "say": {"text": "Welcome to the test line. Please enter two digits now."},
        }]),
        "/digits": on_digits,
        "/status": (200, ""),
    }, files={"/tone.wav": tone})
    server = start(server_factory, {
        "name": "ivr", "call_hook": hook.url("/call"), "call_status_hook": hook.url("/status")})
    A = registered(phones, server, "A", "201")
    c = A.call(server.uri(APP_NUMBER))
    A.wait_state("CONFIRMED", call=c, timeout=10)
    # The prompt: speech energy at the phone.
    prompt = os.path.join(artifacts, "A_prompt.wav")
    A.record(prompt)
    time.sleep(1.2)
    A.stop_record()
    w = audio.read_wav(prompt)
    assert not audio.silent(w, 0.2), "the phone hears no prompt"
    A.dtmf("42", call=c)
    wait_until(lambda: hook.got("/digits"), timeout=10, what="the gather's actionHook")
    assert digits_seen.get("digits") == "42", digits_seen
    assert digits_seen.get("reason") == "dtmfDetected", digits_seen
    # The actionHook's answer plays the 1000 Hz file, then hangs up.
    heard = os.path.join(artifacts, "A_tone.wav")
    A.record(heard)
    time.sleep(2.0)
    A.stop_record()
    w = audio.read_wav(heard)
    assert audio.tone_fraction(w, F_A, 0.3, w.duration - 0.2) >= 0.6, \
        audio.window_report(w, [F_A], 0.3)[:30]
    A.wait_state("DISCONNECTED", call=c, timeout=10)
    server.wait_metric("hookflash_active_calls", 0)

    # The first request: the jambonz call fields, the INVITE's headers, signed.
    first = hook.got("/call")[0]
    fields = json.loads(first["raw"])
    assert fields["direction"] == "inbound" and fields["call_status"] == "trying", fields
    assert fields["to"].lstrip("+") == APP_NUMBER.lstrip("+"), fields
    assert fields["from"] == "201", fields
    assert fields["call_sid"] and fields["account_sid"] and fields["application_sid"], fields
    assert "call-id" in fields["sip"]["headers"], fields["sip"]
    assert fields["call_id"] == fields["sip"]["headers"]["call-id"], fields
    assert digits_seen["call_sid"] == fields["call_sid"], digits_seen
    account = Native(server).req("GET", "/account", 200).json()
    assert account["id"] == fields["account_sid"], account
    for req in hook.requests:
        verify_signature(req, account["webhook_secret"])
    # Status hook: in-progress, then completed with a duration, once each and in order.
    statuses = wait_until(
        lambda: [json.loads(r["raw"]) for r in hook.got("/status")]
        if any(json.loads(r["raw"]).get("call_status") == "completed"
               for r in hook.got("/status")) else None,
        timeout=10, what="the completed status")
    seq = [s["call_status"] for s in statuses]
    assert seq.count("in-progress") == 1 and seq.count("completed") == 1, seq
    assert seq.index("in-progress") < seq.index("completed"), seq
    done = statuses[seq.index("completed")]
    assert isinstance(done.get("duration"), int) and done["duration"] >= 2, done


@pytest.mark.parametrize("failure", [(500, "oops"), (200, "this is not json")])
def test_failing_hook_refuses_the_call_and_fallback_runs(server_factory, phones, hooks,
                                                          artifacts, failure):
    hook = hooks({"/call": failure, "/fb": (200, [{"verb": "sip:decline", "status": 486}])})
    server = start(server_factory, {"name": "broken", "call_hook": hook.url("/call")})
    A = registered(phones, server, "A", "201")
    c = A.call(server.uri(APP_NUMBER))
    A.wait_state("DISCONNECTED", call=c, timeout=15)
    assert "CONFIRMED" not in A.states(call=c)
    code = A.end_status(call=c)
    assert 400 <= code < 700, code
    server.wait_metric("hookflash_active_calls", 0)
    server.stop()

    # The same with a fallback: its sip:decline 486 is what the phone gets.
    server = start(server_factory, {
        "name": "broken", "call_hook": hook.url("/call"), "fallback": hook.url("/fb")})
    A2 = registered(phones, server, "A2", "201")
    c = A2.call(server.uri(APP_NUMBER))
    A2.wait_state("DISCONNECTED", call=c, timeout=15)
    assert A2.end_status(call=c) == 486
    assert hook.got("/fb"), "the fallback was not asked"


def test_dial_connects_a_second_phone_and_the_app_goes_on(server_factory, phones, tones, hooks,
                                                           artifacts):
    """dial: 201 calls the application, which dials 202 (a pjsua2 phone that answers); both
    hear each other's tone; when 202 hangs up, 201 stays with the application, whose
    actionHook gets dial_call_status=completed with the dialled leg's sid and duration, and
    whose answer (a 1000 Hz play; then the list ends) 201 hears before the call ends. A dial
    to an extension with no phone reports no-answer/failed and the application goes on."""
    from checks import assert_hears
    from conftest import F_B, F_C

    tone_c = os.path.join(artifacts, "tone_c.wav")
    audio.make_tone(tone_c, F_C, seconds=2)
    done = []

    def on_done(body):
        done.append(body)
        if body.get("dial_call_status") == "completed":
            return 200, [{"verb": "play", "url": hook.url("/tone_c.wav")}, {"verb": "hangup"}]
        # The failed first dial: now dial the phone that answers.
        return 200, [{"verb": "dial", "actionHook": "/dial-done", "callerId": "+4930123456",
                      "target": [{"type": "user", "name": "202@acme.local"}]}]

    hook = hooks({
        "/call": (200, [
            {"verb": "dial", "actionHook": "/dial-done", "timeout": 5,
             "target": [{"type": "user", "name": "104@acme.local"}]},
        ]),
        "/dial-done": on_done,
    }, files={"/tone_c.wav": tone_c})
    server = start(server_factory, {"name": "dialer", "call_hook": hook.url("/call")})
    A = registered(phones, server, "A", "201")
    B = registered(phones, server, "B", "202")
    A.play(tones[F_A])
    B.play(tones[F_B])
    B.auto_answer(200)
    c = A.call(server.uri(APP_NUMBER))
    A.wait_state("CONFIRMED", call=c, timeout=10)
    inc = B.wait_incoming(timeout=15)
    # The first dial (104: no phone) failed and was reported.
    assert done and done[0]["dial_call_status"] in ("no-answer", "failed"), done
    assert done[0]["dial_sip_status"] >= 400, done
    assert inc["from"].find("4930123456") >= 0, inc  # the callerId the app asked for
    B.wait_state("CONFIRMED", call=inc["call"], timeout=10)
    time.sleep(0.5)
    ra = os.path.join(artifacts, "A_bridged.wav")
    rb = os.path.join(artifacts, "B_bridged.wav")
    A.record(ra)
    B.record(rb)
    time.sleep(2.0)
    A.stop_record()
    B.stop_record()
    assert_hears(ra, F_B, F_A, t0=0.3, what="A hears B through the dial")
    assert_hears(rb, F_A, F_B, t0=0.3, what="B hears A through the dial")
    # 202 hangs up: 201 is back with the application.
    B.hangup(call=inc["call"])
    wait_until(lambda: len(done) >= 2, timeout=10, what="the dial's actionHook")
    second = done[1]
    assert second["dial_call_status"] == "completed", second
    assert second["dial_call_sid"] and second["dial_call_sid"] != second["call_sid"], second
    assert second["duration"] >= 2, second
    heard = os.path.join(artifacts, "A_after_dial.wav")
    A.record(heard)
    time.sleep(1.2)
    A.stop_record()
    w = audio.read_wav(heard)
    assert audio.tone_fraction(w, F_C, 0.2, w.duration - 0.1) >= 0.5, \
        audio.window_report(w, [F_C, F_B], 0.2)[:30]
    A.wait_state("DISCONNECTED", call=c, timeout=10)
    server.wait_metric("hookflash_active_calls", 0)
