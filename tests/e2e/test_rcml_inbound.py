"""An application with `language = "rcml"`: a phone's call to its number runs RestComm RCML
(what RestComm does with a number's VoiceUrl). The application is a plain HTTP server answering
RCML written with the `twilio` package's VoiceResponse; the phone hears the `<Play>`ed tone,
the `<Gather>`ed keys reach the action as RCML form fields, `<Hangup/>` ends the phone's call.
"""
import time

import pytest
from twilio.twiml.voice_response import Gather, VoiceResponse

import audio
from api_support import registered
from checks import wait_until
from conftest import F_A
from test_api19_calls import account_sid, assert_tone, form
from test_app_runtime import APP_NUMBER, hooks  # noqa: F401  (the fixture)
from test_jambonz_sdk import heard

pytestmark = pytest.mark.server


def test_inbound_call_runs_rcml(server_factory, phones, hooks, artifacts):  # noqa: F811
    tone = "%s/tone_a.wav" % artifacts
    audio.make_tone(tone, F_A, seconds=3)
    holder = {}

    def start(_body):
        r = VoiceResponse()
        g = Gather(action=holder["h"].url("/digits"), num_digits=1, timeout=15)
        g.say("Welcome. Press one.")
        r.append(g)
        return 200, str(r)

    def digits(_body):
        r = VoiceResponse()
        r.play(holder["h"].url("/a.wav"))
        r.hangup()
        return 200, str(r)

    hook = hooks({"/voice": start, "/digits": digits}, files={"/a.wav": tone})
    holder["h"] = hook
    server = server_factory(applications=[{
        "name": "restcomm", "call_hook": hook.url("/voice"), "language": "rcml",
        "numbers": [APP_NUMBER]}])
    A = registered(phones, server, "A", "201")
    c = A.call(server.uri(APP_NUMBER))
    A.wait_state("CONFIRMED", call=c, timeout=10)
    assert not audio.silent(heard(A, artifacts, "A_say.wav", 1.2), 0.2), "no prompt heard"
    A.dtmf("1", call=c)
    got = form(wait_until(lambda: hook.got("/digits"), timeout=10, what="the Gather action")[0])
    assert got["Digits"] == "1", got
    time.sleep(0.3)
    assert_tone(heard(A, artifacts, "A_tone.wav", 1.5), F_A)
    A.wait_state("DISCONNECTED", call=c, timeout=10)
    server.wait_metric("hookflash_active_calls", 0)

    # The first request: RCML form fields (not jambonz JSON) for an inbound call.
    first = hook.got("/voice")[0]
    assert not first["raw"].lstrip().startswith(b"{"), first["raw"]
    f = form(first)
    assert f["AccountSid"] == account_sid(server), f
    assert f["CallSid"].startswith("CA") and len(f["CallSid"]) == 34, f
    assert f["Direction"] == "inbound" and f["From"] == "201", f
    assert f["To"].lstrip("+") == APP_NUMBER.lstrip("+"), f
    assert f["ApiVersion"] == "2012-04-24" and f["CallStatus"] == "ringing", f
    assert got["CallSid"] == f["CallSid"], got
