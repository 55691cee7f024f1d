"""The official @jambonz/node-client (tests/node, pinned) against hookflash with a real pjsua2
phone (201, auto-answering) and an application web server (HookServer):

- applications.create / list / retrieve through the SDK; calls.create with that
  application_sid dials user 201@acme.local; the phone is rung, answers and hears the
  application's `say`;
- calls.list and calls.retrieve show the call (call_sid, account_sid, application_sid,
  direction outbound, from, to, call_status in-progress, sip_status 200);
- calls.update mute_status mutes the leg (seen through the native API), whisper plays a
  1500 Hz prompt the phone hears, a call_hook redirect makes the phone hear the new
  application's 1000 Hz play;
- the SDK's own signature verifier (WebhookResponse.verifyJambonzSignature) accepts our
  signed webhook request with the account's secret from GET /api/v1/account, and refuses it
  with another secret;
- calls.delete ends the call (the phone is DISCONNECTED) and calls.retrieve then fails
  with "not found".
"""
import json
import os
import subprocess
import time

import pytest

import audio
from api_support import NODE_DIR, Native, registered
from checks import wait_until
from conftest import F_A, F_B
from test_app_runtime import HookServer, hooks  # noqa: F401  (the fixture)

pytestmark = [
    pytest.mark.server,
    pytest.mark.skipif(
        not os.path.isdir(os.path.join(NODE_DIR, "node_modules", "@jambonz", "node-client"))
        and os.environ.get("CI") != "true",
        reason="tests/node not installed (scripts/test.sh runs npm ci)",
    ),
]

API_KEY = "hf_test_key_acme"


def jz(server, account_sid, action, *args, expect_ok=True):
    """Runs tests/node/jambonz_client.js; returns its JSON line."""
    argv = ["node", os.path.join(NODE_DIR, "jambonz_client.js"), server.http, account_sid,
            API_KEY, action]
    argv += [a if isinstance(a, str) else json.dumps(a) for a in args]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=NODE_DIR)
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    assert lines, "jambonz %s: no output (rc=%s)\nstdout: %s\nstderr: %s" % (
        action, p.returncode, p.stdout, p.stderr)
    out = json.loads(lines[-1])
    if expect_ok:
        assert out["ok"], "jambonz %s failed: %s\nstderr: %s" % (action, out, p.stderr)
    return out


def signature(req):
    return {k.lower(): v for k, v in req["headers"].items()}.get("jambonz-signature")


def heard(phone, artifacts, name, seconds):
    path = os.path.join(artifacts, name)
    phone.record(path)
    time.sleep(seconds)
    phone.stop_record()
    return audio.read_wav(path)


def test_sdk_creates_controls_and_ends_a_call(server, phones, hooks, artifacts):  # noqa: F811
    tone_a = os.path.join(artifacts, "tone_a.wav")
    audio.make_tone(tone_a, F_A, seconds=6)
    tone_b = os.path.join(artifacts, "tone_b.wav")
    audio.make_tone(tone_b, F_B, seconds=3)
    holder = {}

    def redirected(_body):
        return 200, [{"verb": "play", "url": holder["hook"].url("/tone_a.wav")},
                     {"verb": "pause", "length": 60}]

    hook = hooks({
        "/call": (200, [{"verb": "say", "text": "Hello from the jambonz test application. "
                                                "Please hold the line while we test."},
                        {"verb": "pause", "length": 60}]),
        "/status": (200, ""),
        "/tone": redirected,
    }, files={"/tone_a.wav": tone_a, "/tone_b.wav": tone_b})
    holder["hook"] = hook

    native = Native(server)
    account = native.req("GET", "/account", 200).json()
    acc = account["id"]
    A = registered(phones, server, "A", "201")
    A.auto_answer(200)

    # Applications through the SDK.
    app_sid = jz(server, acc, "app-create", {
        "name": "greeter", "account_sid": acc,
        "call_hook": {"url": hook.url("/call"), "method": "POST"},
        "call_status_hook": {"url": hook.url("/status"), "method": "POST"},
    })["result"]
    assert app_sid, app_sid
    app = jz(server, acc, "app-retrieve", app_sid)["result"]
    assert app["application_sid"] == app_sid and app["name"] == "greeter", app
    assert app["call_hook"]["url"] == hook.url("/call"), app
    assert [a["application_sid"] for a in jz(server, acc, "app-list")["result"]] == [app_sid]

    # calls.create: the phone is rung and answers; it hears the application's say.
    sid = jz(server, acc, "create", {
        "application_sid": app_sid, "from": "202",
        "to": {"type": "user", "name": "201@acme.local"},
        "tag": {"accountCode": "288fe284"},
    })["result"]
    assert sid, sid
    inc = A.wait_incoming(timeout=10)
    call = inc["call"]
    A.wait_state("CONFIRMED", call=call, timeout=10)
    wait_until(lambda: hook.got("/call"), timeout=10, what="the call_hook")
    # The say's speech is synthesized first (espeak-ng: over a second on a loaded machine).
    w = heard(A, artifacts, "A_say.wav", 3.5)
    assert not audio.silent(w, 0.2), "the phone hears no speech"

    # list and retrieve.
    listed = jz(server, acc, "list")["result"]
    assert len(listed) == 1, listed
    one = jz(server, acc, "retrieve", sid)["result"]
    # The same object (duration ticks between the two requests).
    assert dict(one, duration=0) == dict(listed[0], duration=0), (one, listed)
    assert isinstance(one["duration"], int) and one["duration"] >= 0, one
    assert one["call_sid"] == sid and one["account_sid"] == acc, one
    assert one["application_sid"] == app_sid, one
    assert one["direction"] == "outbound", one
    assert (one["from"], one["to"]) == ("202", "201"), one
    assert (one["call_status"], one["sip_status"]) == ("in-progress", 200), one
    assert "parent_call_sid" not in one, one
    first = json.loads(hook.got("/call")[0]["raw"])
    assert first["call_sid"] == sid and first["application_sid"] == app_sid, first
    assert first["customerData"] == {"accountCode": "288fe284"}, first

    # mute_status: the leg is muted (the native API shows it), then unmuted.
    jz(server, acc, "update", sid, {"mute_status": "mute"})
    leg = [l for l in native.one_call()["legs"] if l["id"] == sid][0]
    assert leg["muted"], leg
    jz(server, acc, "update", sid, {"mute_status": "unmute"})
    leg = [l for l in native.one_call()["legs"] if l["id"] == sid][0]
    assert not leg["muted"], leg

    # whisper: the phone hears the 1500 Hz prompt.
    jz(server, acc, "update", sid, {"whisper": {"verb": "play", "url": hook.url("/tone_b.wav")}})
    w = heard(A, artifacts, "A_whisper.wav", 2.0)
    assert audio.tone_fraction(w, F_B, 0.3, w.duration - 0.2) >= 0.6, \
        audio.window_report(w, [F_B], 0.3)[:30]

    # call_hook redirect: the new application's 1000 Hz play is heard.
    time.sleep(1.2)  # the whisper prompt ends
    jz(server, acc, "update", sid, {"call_hook": {"url": hook.url("/tone")}})
    wait_until(lambda: hook.got("/tone"), timeout=10, what="the new call_hook")
    time.sleep(0.5)
    w = heard(A, artifacts, "A_redirect.wav", 2.0)
    assert audio.tone_fraction(w, F_A, 0.3, w.duration - 0.2) >= 0.6, \
        audio.window_report(w, [F_A], 0.3)[:30]

    # The SDK's verifier accepts our signature with the account's secret, not with another.
    req = hook.got("/call")[0]
    spec = {"secret": account["webhook_secret"],
            "signature": signature(req),
            "body": req["raw"].decode()}
    assert jz(server, acc, "verify", spec)["result"] is True
    bad = jz(server, acc, "verify", dict(spec, secret="wh_secret_wrong"), expect_ok=False)
    assert "No matching signatures" in bad["error"], bad
    for r in hook.got("/status") + hook.got("/tone"):
        assert jz(server, acc, "verify", dict(
            spec, signature=signature(r), body=r["raw"].decode()))["result"] is True

    # calls.delete ends the call.
    jz(server, acc, "delete", sid)
    A.wait_state("DISCONNECTED", call=call, timeout=10)
    server.wait_metric("hookflash_active_calls", 0)
    gone = jz(server, acc, "retrieve", sid, expect_ok=False)
    assert "not found" in gone["error"], gone
    assert jz(server, acc, "list")["result"] == []


def test_sdk_errors_map_to_the_api_servers_statuses(server):
    acc = Native(server).req("GET", "/account", 200).json()["id"]
    missing = "1b9a8d8d-bd55-4c53-a373-929e85c6db22"
    out = jz(server, acc, "update", missing, {"call_status": "completed"}, expect_ok=False)
    assert out["status"] == 404, out
    out = jz(server, acc, "delete", missing, expect_ok=False)
    assert out["status"] == 404, out
    out = jz(server, acc, "create", {"application_sid": missing, "from": "202",
                                     "to": {"type": "user", "name": "201@acme.local"}},
             expect_ok=False)
    assert out["status"] == 400, out
    # Another account's sid in the path.
    other = jz(server, "00000000-0000-0000-0000-000000000000", "list", expect_ok=False)
    assert other["status"] == 403, other
