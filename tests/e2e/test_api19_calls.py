"""api19 / RestComm dialect and RCML applications with independent pjsua2 phones.

The RCML is written with the `twilio` package's VoiceResponse (a TwiML-compatible builder)
and served by a plain Python HTTP server (HookServer, the far side of the webhook); the API
is driven over plain HTTP with HTTP Basic AccountSid:AuthToken, as RestComm's SDKs and the
seed's curl lines do. What the phones hear, the keys the application receives and the SIP
dialog states the phones see are the proof.
"""
import base64
import json
import os
import subprocess
import time
from urllib.parse import parse_qs

import pytest
import requests
from twilio.twiml.voice_response import Dial, Gather, VoiceResponse

import audio
from api_support import Native, registered
from checks import wait_until
from conftest import F_A, F_B
from hfserver import ACME_DID
from test_app_runtime import HookServer, hooks  # noqa: F401  (the fixture)
from test_jambonz_sdk import heard

pytestmark = pytest.mark.server

API_KEY = "hf_test_key_acme"
BASE = "/call/2012-04-24"


def account_sid(server):
    acc = Native(server).req("GET", "/account", 200).json()["id"]
    return "AC" + acc.replace("-", "")


class Api19:
    def __init__(self, server, sid, token=API_KEY, base=BASE):
        self.server, self.sid, self.base = server, sid, base
        self.auth = (sid, token)

    def url(self, path):
        return "%s%s/Accounts/%s%s" % (self.server.http, self.base, self.sid, path)

    def post(self, path, expect, **data):
        r = requests.post(self.url(path), data=data, auth=self.auth, timeout=10)
        assert r.status_code == expect, (path, r.status_code, r.text)
        return r

    def get(self, path, expect, **params):
        r = requests.get(self.url(path), params=params, auth=self.auth, timeout=10)
        assert r.status_code == expect, (path, r.status_code, r.text)
        return r


def form(req):
    return {k: v[0] for k, v in parse_qs(req["raw"].decode()).items()}


def assert_tone(w, freq):
    assert audio.tone_fraction(w, freq, 0.3, w.duration - 0.2) >= 0.6, \
        audio.window_report(w, [freq], 0.3)[:30]


def rcml(*verbs):
    r = VoiceResponse()
    for v in verbs:
        r.append(v)
    return 200, str(r)


def play(url):
    r = VoiceResponse()
    r.play(url, loop=0)
    return 200, str(r)


@pytest.fixture
def tones(artifacts):
    out = {}
    for f in (F_A, F_B):
        out[f] = os.path.join(artifacts, "tone_%d.wav" % f)
        audio.make_tone(out[f], f, seconds=8)
    return out


def test_created_call_gather_play_redirect_and_end(server, phones, hooks, tones, artifacts):  # noqa: F811
    holder = {}

    def start(_body):
        g = Gather(action=holder["h"].url("/digits"), num_digits=2, timeout=15)
        g.say("Welcome to the test line. Please enter two digits now.")
        return rcml(g)

    hook = hooks({
        "/start": start,
        "/digits": lambda _b: play(holder["h"].url("/a.wav")),
        "/b": lambda _b: play(holder["h"].url("/b.wav")),
        "/status": (200, ""),
    }, files={"/a.wav": tones[F_A], "/b.wav": tones[F_B]})
    holder["h"] = hook
    ac = account_sid(server)
    api = Api19(server, ac)
    A = registered(phones, server, "A", "201")
    A.auto_answer(200)

    created = api.post("/Calls.json", 200, From=ACME_DID, To="client:201", Url=hook.url("/start"),
                       StatusCallback=hook.url("/status"),
                       StatusCallbackEvent="initiated ringing answered completed").json()
    sid = created["sid"]
    assert sid.startswith("CA") and len(sid) == 34, created
    assert (created["status"], created["direction"]) == ("queued", "outbound-api"), created
    assert (created["from"], created["to"]) == (ACME_DID, "201"), created
    assert created["account_sid"] == ac and created["api_version"] == "2012-04-24", created
    assert created["uri"].endswith("/Calls/%s.json" % sid), created

    call = A.wait_incoming(timeout=10)["call"]
    A.wait_state("CONFIRMED", call=call, timeout=10)
    first = form(wait_until(lambda: hook.got("/start"), timeout=10, what="the Url")[0])
    assert first["CallSid"] == sid and first["AccountSid"] == ac, first
    assert (first["CallStatus"], first["Direction"]) == ("in-progress", "outbound-api"), first
    assert (first["From"], first["To"], first["ApiVersion"]) == (ACME_DID, "201", "2012-04-24")

    # <Say> in <Gather>: speech at the phone; the keys reach the action.
    w = heard(A, artifacts, "A_say.wav", 1.2)
    assert not audio.silent(w, 0.2), "the phone hears no prompt"
    A.dtmf("42", call=call)
    digits = form(wait_until(lambda: hook.got("/digits"), timeout=10, what="the Gather action")[0])
    assert digits["Digits"] == "42" and digits["CallSid"] == sid, digits
    time.sleep(0.4)
    assert_tone(heard(A, artifacts, "A_a.wav", 1.5), F_A)

    # get and list (JSON and XML).
    one = api.get("/Calls/%s.json" % sid, 200).json()
    assert (one["sid"], one["status"]) == (sid, "in-progress"), one
    page = api.get("/Calls.json", 200, Status="in-progress").json()
    assert [c["sid"] for c in page["calls"]] == [sid] and page["total"] == 1, page
    assert api.get("/Calls.json", 200, Status="ringing").json()["calls"] == []
    xml = api.get("/Calls", 200).text
    assert "<RestcommResponse><Calls" in xml and "<Sid>%s</Sid>" % sid in xml, xml

    # Live modification: Url redirects the running call to new RCML.
    r = api.post("/Calls/%s.json" % sid, 200, Url=hook.url("/b")).json()
    assert r["sid"] == sid, r
    wait_until(lambda: hook.got("/b"), timeout=10, what="the redirect Url")
    time.sleep(0.4)
    assert_tone(heard(A, artifacts, "A_b.wav", 1.5), F_B)

    # Status=completed ends it; the call is then gone (404 in RestComm's shape).
    done = api.post("/Calls/%s" % sid, 200, Status="completed").text
    assert done.startswith("<?xml") and "<CallResponse><Call><Sid>%s</Sid>" % sid in done, done
    A.wait_state("DISCONNECTED", call=call, timeout=10)
    gone = api.post("/Calls/%s.json" % sid, 404, Status="completed").json()
    assert gone["code"] == 20404 and gone["status"] == 404, gone
    statuses = wait_until(
        lambda: [form(s) for s in hook.got("/status")]
        if any(form(s)["CallStatus"] == "completed" for s in hook.got("/status")) else None,
        timeout=10, what="the completed callback")
    seq = [s["CallStatus"] for s in statuses]
    # ringing only when the phone sent 180 before its 200.
    assert [x for x in seq if x != "ringing"] == ["queued", "in-progress", "completed"], seq
    assert [int(s["SequenceNumber"]) for s in statuses] == list(range(len(seq))), statuses
    assert all(s["CallbackSource"] == "call-progress-events" for s in statuses), statuses
    assert int(statuses[-1]["CallDuration"]) >= 2, statuses[-1]


def test_dial_connects_a_second_phone_and_mute_silences_the_party(
        server, phones, hooks, tones, artifacts):  # noqa: F811
    holder = {}

    def start(_body):
        d = Dial(action=holder["h"].url("/dialled"), timeout=10)
        d.client("202")
        return rcml(d)

    hang = VoiceResponse()
    hang.hangup()
    hook = hooks({"/start": start, "/dialled": (200, str(hang))})
    holder["h"] = hook
    api = Api19(server, account_sid(server))
    A = registered(phones, server, "A", "201")
    B = registered(phones, server, "B", "202")
    A.play(tones[F_A])
    B.play(tones[F_B])
    A.auto_answer(200)
    B.auto_answer(200)
    sid = api.post("/Calls.json", 200, From=ACME_DID, To="sip:201@acme.local",
                   Url=hook.url("/start")).json()["sid"]
    a_call = A.wait_incoming(timeout=10)["call"]
    b_call = B.wait_incoming(timeout=10)["call"]
    B.wait_state("CONFIRMED", call=b_call, timeout=10)
    time.sleep(0.5)
    assert_tone(heard(A, artifacts, "A_hears_B.wav", 1.5), F_B)
    assert_tone(heard(B, artifacts, "B_hears_A.wav", 1.5), F_A)

    # Mute=true: B no longer hears A; Mute=false brings A back.
    r = api.post("/Calls/%s.json" % sid, 200, Mute="true").json()
    assert r["muted"] is True, r
    time.sleep(0.3)
    w = heard(B, artifacts, "B_muted.wav", 1.5)
    assert audio.tone_fraction(w, F_A, 0.3) < 0.1, audio.window_report(w, [F_A], 0.3)[:30]
    assert api.post("/Calls/%s.json" % sid, 200, Mute="false").json()["muted"] is False
    time.sleep(0.3)
    assert_tone(heard(B, artifacts, "B_unmuted.wav", 1.5), F_A)

    # B leaves: the Dial's action gets the outcome, its <Hangup/> ends A's call.
    B.hangup(call=b_call)
    dialled = form(wait_until(lambda: hook.got("/dialled"), timeout=10, what="the Dial action")[0])
    assert dialled["DialCallStatus"] == "completed" and dialled["CallSid"] == sid, dialled
    assert dialled["DialCallSid"].startswith("CA"), dialled
    A.wait_state("DISCONNECTED", call=a_call, timeout=10)


def test_canceled_stops_a_ringing_phone_and_is_refused_once_answered(
        server, phones, hooks):  # noqa: F811
    wait = VoiceResponse()
    wait.pause(length=30)
    hook = hooks({"/start": (200, str(wait))})
    api = Api19(server, account_sid(server))
    A = registered(phones, server, "A", "201")
    sid = api.post("/Calls.json", 200, From=ACME_DID, To="client:201",
                   Url=hook.url("/start")).json()["sid"]
    call = A.wait_incoming(timeout=10)["call"]
    assert api.get("/Calls/%s.json" % sid, 200).json()["status"] in ("queued", "ringing")
    api.post("/Calls/%s.json" % sid, 200, Status="canceled")
    A.wait_state("DISCONNECTED", call=call, timeout=10)
    assert not hook.got("/start"), "a canceled call must not run its RCML"

    A.auto_answer(200)
    m = A.mark()
    sid = api.post("/Calls.json", 200, From=ACME_DID, To="client:201",
                   Url=hook.url("/start")).json()["sid"]
    call = A.wait_incoming(timeout=10, since=m)["call"]
    A.wait_state("CONFIRMED", call=call, timeout=10, since=m)
    wait_until(lambda: hook.got("/start"), timeout=10, what="the Url")
    err = api.post("/Calls/%s.json" % sid, 409, Status="canceled").json()
    assert err["code"] == 21220 and "answered" in err["message"], err
    time.sleep(0.5)
    assert api.get("/Calls/%s.json" % sid, 200).json()["status"] == "in-progress"
    assert not A.find("call_state", lambda e: e["state"] == "DISCONNECTED", since=m)
    api.post("/Calls/%s.json" % sid, 200, Status="completed")
    A.wait_state("DISCONNECTED", call=call, timeout=10, since=m)


def test_seed_curl_lines_replayed(server_factory, phones, hooks, tones):  # noqa: F811
    """The seed's curl lines with only host, ids and credentials changed (`-u 'API_Token'`
    becomes `-u 'KEY:'`, curl's form of an empty password)."""
    hook = hooks({
        "/callapi/demos/hello-play.xml": lambda _b: play(hook.url("/a.wav")),
        "/api19/demos/dial-alice.xml": lambda _b: play(hook.url("/a.wav")),
    }, files={"/a.wav": tones[F_A]})
    # +16175551212 is one of the account's numbers (an application's), so it may be the
    # caller id.
    server = server_factory(applications=[{
        "name": "demo", "call_hook": hook.url("/unused"), "numbers": ["+16175551212"]}])
    ac = account_sid(server)
    A = registered(phones, server, "A", "201")
    A.auto_answer(200)
    calls = "%s/call/2012-04-24/Accounts/%s/Calls" % (server.http, ac)
    hello = "http://%s:%s@127.0.0.1:%d/callapi/demos/hello-play.xml" % (ac, API_KEY, hook.port)

    def curl(url, *data):
        argv = ["curl", "-s", "-w", "\n%{http_code}", "-X", "POST", url]
        for d in data:
            argv += ["-d", d]
        argv += ["-u", API_KEY + ":"]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20).stdout
        body, _, code = out.rpartition("\n")
        return int(code), body

    code, body = curl(calls + ".json", "From=+16175551212", "To=sip:201@acme.local",
                      "Url=" + hello)
    assert code == 200, body
    created = json.loads(body)
    sid = created["sid"]
    assert (created["from"], created["to"], created["status"]) == (
        "+16175551212", "201", "queued"), created
    call = A.wait_incoming(timeout=10)["call"]
    A.wait_state("CONFIRMED", call=call, timeout=10)
    req = wait_until(lambda: hook.got("/callapi/demos/hello-play.xml"), timeout=10,
                     what="the Url")[0]
    auth = {k.lower(): v for k, v in req["headers"].items()}["authorization"]
    assert base64.b64decode(auth.split()[1]).decode() == "%s:%s" % (ac, API_KEY), auth

    # Redirect (the seed's line with From/To/Url, then the short one) and the XML answer.
    code, body = curl("%s/%s.json" % (calls, sid), "From=+16175551212",
                      "To=sip:201@acme.local", "Url=" + hello)
    assert code == 200 and json.loads(body)["sid"] == sid, body
    code, body = curl("%s/%s" % (calls, sid),
                      "Url=http://127.0.0.1:%d/api19/demos/dial-alice.xml" % hook.port)
    assert code == 200 and "<CallResponse><Call><Sid>%s</Sid>" % sid in body, body
    wait_until(lambda: hook.got("/api19/demos/dial-alice.xml"), timeout=10, what="redirect")
    # MoveConnectedCallLeg on a call with one party (the RCML plays to 201): 409, the call
    # goes on (test_api19_move.py moves connected calls).
    code, body = curl("%s/%s.json" % (calls, sid), "Url=" + hello, "MoveConnectedCallLeg=true")
    assert code == 409 and "connected" in json.loads(body)["message"], body
    # Conference participants: no conference exists.
    code, body = curl("%s/call/2012-04-24/Accounts/%s/Conferences/CF1/Participants/%s.json"
                      % (server.http, ac, sid), "Mute=true")
    assert code == 404 and "conferences" in json.loads(body)["message"], body
    # Terminate the call in progress.
    code, body = curl("%s/%s.json" % (calls, sid), "Status=completed")
    assert code == 200, body
    A.wait_state("DISCONNECTED", call=call, timeout=10)

    # Terminate a ringing call.
    A.auto_answer(180)
    m = A.mark()
    code, body = curl(calls + ".json", "From=+16175551212", "To=sip:201@acme.local",
                      "Url=" + hello)
    sid = json.loads(body)["sid"]
    call = A.wait_incoming(timeout=10, since=m)["call"]
    A.wait_state("EARLY", call=call, timeout=10, since=m)
    code, body = curl("%s/%s.json" % (calls, sid), "Status=canceled")
    assert code == 200 and json.loads(body)["status"] == "canceled", body
    assert A.wait_state("DISCONNECTED", call=call, timeout=10, since=m)["last_status"] == 487
    assert not A.find("call_state", lambda e: e["state"] == "CONFIRMED", since=m)

    # The seed's Python sample: /calls/ base, Basic AccountSid:AuthToken, legacy path too.
    listed = "%s/calls/2012-04-24/Accounts/%s/Calls.json" % (server.http, ac)
    wait_until(lambda: requests.get(listed, auth=(ac, API_KEY), timeout=10).json()["calls"] == [],
               timeout=10, what="the canceled call gone from the list")
    r = requests.post("%s/restcomm/2012-04-24/Accounts/%s/Calls.json/%s" % (server.http, ac, sid),
                      data={"Status": "completed"}, auth=(ac, API_KEY), timeout=10)
    assert r.status_code == 404 and r.json()["code"] == 20404, r.text


def test_bad_input_gets_restcomm_errors_and_never_leaves_a_call_ringing(
        server, phones, hooks, tones, artifacts):  # noqa: F811
    hook = hooks({
        "/malformed": (200, "<Response><Say>unclosed</Response>"),
        "/unknown": (200, "<Response><Dance/></Response>"),
        "/fallback": lambda _b: play(hook.url("/a.wav")),
    }, files={"/a.wav": tones[F_A]})
    ac = account_sid(server)
    api = Api19(server, ac)

    # Credentials: wrong token, another AccountSid; JSON and XML error shapes.
    r = Api19(server, ac, token="hf_wrong").get("/Calls.json", 401).json()
    assert r["code"] == 20003 and r["status"] == 401, r
    other = "AC" + "0" * 32
    r = requests.get("%s%s/Accounts/%s/Calls" % (server.http, BASE, other),
                     auth=(ac, API_KEY), timeout=10)
    assert r.status_code == 401 and "<RestException><Code>20003</Code>" in r.text, r.text
    r = requests.get("%s%s/Accounts/%s/Calls.json" % (server.http, BASE, ac),
                     auth=(other, API_KEY), timeout=10)
    assert r.status_code == 401, r.text
    # Bad create requests.
    assert "Url" in api.post("/Calls.json", 400, From=ACME_DID, To="201").json()["message"]
    api.post("/Calls.json", 400, From=ACME_DID, To="201", Url="/relative.xml")
    api.post("/Calls.json", 404, From=ACME_DID, To="client:999", Url=hook.url("/x"))
    api.post("/Calls.json", 400, From="+19999999999", To="201", Url=hook.url("/x"))
    api.get("/Calls/CA%s.json" % ("0" * 32), 404)

    A = registered(phones, server, "A", "201")
    A.auto_answer(200)
    # Malformed RCML, an unknown verb, a 404 Url, an unreachable one: answered, then hung up.
    for url in (hook.url("/malformed"), hook.url("/unknown"), hook.url("/missing"),
                "http://127.0.0.1:9/unreachable.xml"):
        m = A.mark()
        sid = api.post("/Calls.json", 200, From=ACME_DID, To="client:201", Url=url).json()["sid"]
        call = A.wait_incoming(timeout=10, since=m)["call"]
        A.wait_state("CONFIRMED", call=call, timeout=10, since=m)
        A.wait_state("DISCONNECTED", call=call, timeout=20, since=m)
        wait_until(lambda: api.get("/Calls.json", 200).json()["calls"] == [], timeout=10,
                   what="the call gone after %s" % url)
        api.post("/Calls/%s.json" % sid, 404, Status="completed")
    assert hook.got("/malformed") and hook.got("/unknown"), "the documents were fetched"
    # With a FallbackUrl, the fallback's RCML runs: the phone hears its tone.
    m = A.mark()
    sid = api.post("/Calls.json", 200, From=ACME_DID, To="client:201", Url=hook.url("/malformed"),
                   FallbackUrl=hook.url("/fallback")).json()["sid"]
    call = A.wait_incoming(timeout=10, since=m)["call"]
    A.wait_state("CONFIRMED", call=call, timeout=10, since=m)
    wait_until(lambda: hook.got("/fallback"), timeout=10, what="the FallbackUrl")
    time.sleep(0.4)
    assert_tone(heard(A, artifacts, "A_fallback.wav", 1.5), F_A)
    api.post("/Calls/%s.json" % sid, 200, Status="completed")
    A.wait_state("DISCONNECTED", call=call, timeout=10, since=m)
    server.wait_metric("hookflash_active_calls", 0)
