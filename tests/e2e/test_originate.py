"""Click-to-dial (issue 5, capability 1) with independent pjsua2 phones: the server rings the
caller first, then the callee, and bridges them; each phone proves what it received."""
import json
import os
import time

import pytest
import requests

import audio
from api_support import Native, node_available, registered, sdk, sipgate_login
from checks import assert_anchored, assert_hears, sip_user
from conftest import F_A, F_B
from hfserver import ACME_DID

pytestmark = pytest.mark.server

RINGBACK_HZ = 425


def _phone(phones, server, tones, name, ext, freq, code=200, delay_ms=300):
    p = registered(phones, server, name, ext)
    p.play(tones[freq])
    p.auto_answer(code, delay_ms=delay_ms)
    return p


def _record(phone, path, seconds):
    phone.record(path)
    time.sleep(seconds)
    phone.stop_record()
    return path


def test_click_to_dial_rings_caller_first_then_bridges(server, phones, tones, artifacts):
    A = _phone(phones, server, tones, "A", "201", F_A, delay_ms=300)
    B = _phone(phones, server, tones, "B", "202", F_B, delay_ms=2500)
    api = Native(server)
    t0 = time.monotonic()
    r = api.req("POST", "/calls", 201, json={"caller": "201", "callee": "202"})
    call = r.json()
    assert call["state"] == "ringing", call

    inc_a = A.wait_incoming(timeout=5)
    print("API request -> caller's phone ringing: %.1f ms" % ((inc_a["t"] - t0) * 1000))
    assert sip_user(inc_a["from"]) == "202", inc_a  # the caller sees whom it is calling
    # The caller answered when its phone sent the 200 (pjsua2: CONNECTING); the server's ACK
    # (CONFIRMED) and its INVITE to the callee leave together, so the callee's phone may see
    # its INVITE before the caller's phone sees the ACK. Event times are one machine-wide
    # monotonic clock.
    a_up = A.wait_state("CONNECTING", call=inc_a["call"], timeout=5)
    A.wait_state("CONFIRMED", call=inc_a["call"], timeout=5)
    inc_b = B.wait_incoming(timeout=5)
    early = [e for e in B.find("incoming") if e["t"] < a_up["t"]]
    assert not early, ("the callee rang before the caller answered", early, a_up)
    print("caller answered -> callee ringing: %.1f ms" % ((inc_b["t"] - a_up["t"]) * 1000))
    assert sip_user(inc_b["from"]) == "201", inc_b

    # While B rings, A hears the ringback tone.
    ra = _record(A, os.path.join(artifacts, "A_ringback.wav"), 1.5)
    w = audio.read_wav(ra)
    assert any(audio.tone_share(x, w.rate, RINGBACK_HZ) >= 0.5 for x in audio.windows(w, 0.2)), \
        audio.window_report(w, [RINGBACK_HZ], 0.2)[:20]

    B.wait_state("CONFIRMED", call=inc_b["call"], timeout=5)
    assert_anchored(A.wait_media(lambda e: e["active"], call=inc_a["call"]), server)
    assert_anchored(B.wait_media(lambda e: e["active"], call=inc_b["call"]), server)
    time.sleep(0.7)
    ra = _record(A, os.path.join(artifacts, "A_talk.wav"), 2.0)
    rb = _record(B, os.path.join(artifacts, "B_talk.wav"), 2.0)
    assert_hears(ra, F_B, F_A, t0=0.7, what="A hears B")
    assert_hears(rb, F_A, F_B, t0=0.7, what="B hears A")
    got = api.req("GET", "/calls/%s" % call["id"], 200).json()
    assert got["state"] == "answered", got
    B.hangup(call=inc_b["call"])
    A.wait_state("DISCONNECTED", call=inc_a["call"], timeout=5)
    server.wait_metric("hookflash_active_calls", 0)


def test_click_to_dial_failures_end_cleanly(server, phones, tones, artifacts):
    api = Native(server)
    # Unknown callee, malformed input, unreachable caller: 400, nothing rings.
    A = _phone(phones, server, tones, "A", "201", F_A)
    for body in ({"caller": "201", "callee": "no-such"}, {"caller": "201", "callee": "20 1!"},
                 {"caller": "104", "callee": "201"}, {"caller": "201", "callee": "201"},
                 {"caller": "201", "callee": "202", "caller_id": "+4999999"},
                 {"caller": "201"}):
        r = api.req("POST", "/calls", 400, json=body)
        assert r.json().get("error"), r.text
    time.sleep(0.5)
    assert not A.find("incoming"), "a refused request made a phone ring"

    # The callee is busy: the caller (who answered) gets BYE, the call ends with cause busy.
    B = _phone(phones, server, tones, "B", "202", F_B, code=486)
    call = api.req("POST", "/calls", 201, json={"caller": "201", "callee": "202"}).json()
    inc_a = A.wait_incoming(timeout=5)
    A.wait_state("CONFIRMED", call=inc_a["call"], timeout=5)
    B.wait_incoming(timeout=5)
    A.wait_state("DISCONNECTED", call=inc_a["call"], timeout=5)
    server.wait_metric("hookflash_active_calls", 0)
    api.req("GET", "/calls/%s" % call["id"], 404)

    # The caller declines: the callee never rings.
    A.auto_answer(603)
    mb = B.mark()
    # Marked before the request: A's INVITE and its 603 can both be logged before it returns.
    ma = A.mark()
    api.req("POST", "/calls", 201, json={"caller": "201", "callee": "202"})
    A.wait_incoming(since=ma, timeout=5)
    server.wait_metric("hookflash_active_calls", 0)
    time.sleep(0.3)
    assert not B.find("incoming", since=mb), "the callee rang although the caller declined"
    hist = server.cli("calls", "history")
    assert "busy" in hist.stdout and "rejected" in hist.stdout, hist.stdout


def test_click_to_dial_to_a_number_via_trunk_with_caller_id(server, phones, tones, artifacts):
    carrier = phones("carrier")
    carrier.bind(server.trunk_port, user="carrier")
    carrier.auto_answer(200, delay_ms=300)
    carrier.play(tones[F_B])
    A = _phone(phones, server, tones, "A", "201", F_A)
    api = Native(server)
    api.req("POST", "/calls", 201,
            json={"caller": "201", "callee": "+4915799912345", "caller_id": ACME_DID})
    inc_a = A.wait_incoming(timeout=5)
    inc_c = carrier.wait_incoming(timeout=8)
    assert sip_user(inc_c["request_uri"]) == "+4915799912345", inc_c
    assert sip_user(inc_c["from"]) == ACME_DID, inc_c  # the caller id asked for
    carrier.wait_state("CONFIRMED", call=inc_c["call"], timeout=5)
    time.sleep(0.7)
    ra = _record(A, os.path.join(artifacts, "A.wav"), 2.0)
    assert_hears(ra, F_B, F_A, t0=0.7, what="A hears the number it called")
    A.hangup(call=inc_a["call"])
    carrier.wait_state("DISCONNECTED", call=inc_c["call"], timeout=5)


@pytest.mark.skipif(not node_available(), reason="node / sipgateio SDK not installed")
def test_sipgate_sdk_call_initiate(server, phones, tones, artifacts):
    """sipgateio call.initiate as user 202 ('e0'): 202 rings first, then the DID's owner 201."""
    B = _phone(phones, server, tones, "B", "202", F_B)
    A = _phone(phones, server, tones, "A", "201", F_A)
    creds = {"token": sipgate_login(server, "202@acme.local", "secret202")}
    out = sdk(server, creds, "initiate", "", json.dumps({"from": "e0", "to": ACME_DID}))
    session = out["result"]["sessionId"]
    inc_b = B.wait_incoming(timeout=5)
    B.wait_state("CONFIRMED", call=inc_b["call"], timeout=5)
    inc_a = A.wait_incoming(timeout=5)
    assert inc_a["t"] > inc_b["t"]
    A.wait_state("CONFIRMED", call=inc_a["call"], timeout=5)
    calls = sdk(server, creds, "list")["result"]
    assert [c["callId"] for c in calls] == [session], calls
    time.sleep(0.7)
    rb = _record(B, os.path.join(artifacts, "B.wav"), 2.0)
    assert_hears(rb, F_A, F_B, t0=0.7, what="202 hears 201")
    sdk(server, creds, "hangup", session)
    A.wait_state("DISCONNECTED", call=inc_a["call"], timeout=5)

    # Plain HTTP: the dialect's status codes.
    h = {"Authorization": "Bearer " + creds["token"]}
    url = server.http + "/v2/sessions/calls"
    r = requests.post(url, json={"caller": "e0", "callee": "nobody"}, headers=h, timeout=5)
    assert r.status_code == 400, r.text
    r = requests.post(url, json={"caller": "e0"}, headers=h, timeout=5)
    assert r.status_code == 400, r.text
    r = requests.post(url, json={"caller": "e0", "callee": ACME_DID}, timeout=5)
    assert r.status_code == 401, r.text
