"""Audio into a running call (in-call media issue): announcements fetched from a URL and played
to every party, and whisper to one leg only. Proven by what two pjsua2 phones record: A plays
1000 Hz, B 1500 Hz, the announcement is a 700 Hz tone served as a 44.1 kHz *stereo* WAV by a
local HTTP server (the server must resample and downmix it)."""
import functools
import http.server
import os
import subprocess
import threading
import time

import pytest
import requests

from api_support import LiveCall, Native, node_available, one_call, sdk, sipgate_login
from checks import assert_hears, assert_no_tone
from conftest import F_A, F_B

pytestmark = pytest.mark.server

F_ANN = 700  # the announcement's tone
ANN_SECONDS = 2.5


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def announcement_url(tmp_path_factory):
    d = tmp_path_factory.mktemp("announce")
    wav = str(d / "ann.wav")
    subprocess.run(["sox", "-n", "-r", "44100", "-c", "2", "-b", "16", wav, "synth",
                    str(ANN_SECONDS), "sine", str(F_ANN), "vol", "0.5"], check=True)
    handler = functools.partial(_Quiet, directory=str(d))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield "http://127.0.0.1:%d" % httpd.server_address[1]
    httpd.shutdown()


def test_announcement_is_heard_by_both_parties_then_the_call_continues(
        server, phones, tones, artifacts, announcement_url):
    call = LiveCall(server, phones, tones, artifacts)
    call.assert_two_way("before")
    token = sipgate_login(server)
    call_id = requests.get(server.http + "/v2/calls", timeout=5,
                           headers={"Authorization": "Bearer " + token}).json()["data"][0]["callId"]
    # The seed's request, verbatim but for the host.
    r = requests.post(server.http + "/v2/calls/%s/announcements" % call_id, timeout=15,
                      headers={"Authorization": "Bearer " + token,
                               "Content-Type": "application/json"},
                      json={"url": announcement_url + "/ann.wav"})
    assert r.status_code == 200, r.text
    ra, rb = call.record("announcement", seconds=1.8, settle=0.2)
    assert_hears(ra, F_ANN, F_B, t0=0.5, what="A hears the announcement")
    assert_hears(rb, F_ANN, F_A, t0=0.5, what="B hears the announcement")
    assert_no_tone(ra, F_B, t0=0.5, what="A does not hear B during the announcement")
    time.sleep(ANN_SECONDS)  # the announcement is over: both parties hear each other again
    call.assert_two_way("after")


def test_unusable_announcement_url_is_a_clear_4xx_and_audio_continues(
        server, phones, tones, artifacts, announcement_url):
    call = LiveCall(server, phones, tones, artifacts)
    token = sipgate_login(server)
    h = {"Authorization": "Bearer " + token}
    call_id = requests.get(server.http + "/v2/calls", headers=h, timeout=5).json()["data"][0]["callId"]
    for url in (announcement_url + "/missing.wav",   # 404 at the web server
                "http://127.0.0.1:9/ann.wav",        # nothing listens
                "ftp://127.0.0.1/ann.wav"):          # not http(s)
        r = requests.post(server.http + "/v2/calls/%s/announcements" % call_id, headers=h,
                          json={"url": url}, timeout=15)
        assert r.status_code == 400, (url, r.status_code, r.text)
        assert r.json().get("message"), r.text
    r = requests.post(server.http + "/v2/calls/%s/announcements" % call_id, headers=h,
                      data="not json", timeout=5)
    assert r.status_code == 400, r.text
    call.assert_two_way("after bad announcements")


@pytest.mark.skipif(not node_available() and os.environ.get("CI") != "true",
                    reason="tests/node not installed (scripts/test.sh runs npm ci)")
def test_sipgateio_sdk_announce(server, phones, tones, artifacts, announcement_url):
    call = LiveCall(server, phones, tones, artifacts)
    creds = {"token": sipgate_login(server)}
    listed = one_call(server, creds)
    sdk(server, creds, "announce", listed["callId"], announcement_url + "/ann.wav")
    ra, rb = call.record("sdk_announcement", seconds=1.8, settle=0.2)
    assert_hears(ra, F_ANN, F_B, t0=0.5, what="A hears the SDK's announcement")
    assert_hears(rb, F_ANN, F_A, t0=0.5, what="B hears the SDK's announcement")


def test_whisper_reaches_only_its_leg_then_both_are_reconnected(
        server, phones, tones, artifacts, announcement_url):
    call = LiveCall(server, phones, tones, artifacts)
    api = Native(server)
    live = api.one_call()
    leg_a = Native.leg(live, "201")
    api.req("POST", "/calls/%s/legs/%s/whisper" % (live["id"], leg_a["id"]), 202,
            json={"url": announcement_url + "/ann.wav"})
    ra, rb = call.record("whisper", seconds=1.8, settle=0.2)
    assert_hears(ra, F_ANN, F_B, t0=0.5, what="A hears the whisper")
    assert_no_tone(rb, F_ANN, t0=0.5, what="B must not hear the whisper")
    assert_no_tone(rb, F_A, t0=0.5, what="B hears silence from A meanwhile")
    time.sleep(ANN_SECONDS)
    call.assert_two_way("after whisper")
    # Bad input: both or neither of url/text, unknown leg.
    api.req("POST", "/calls/%s/legs/%s/whisper" % (live["id"], leg_a["id"]), 400, json={})
    api.req("POST", "/calls/%s/legs/no-such-leg/whisper" % live["id"], 404,
            json={"url": announcement_url + "/ann.wav"})
