"""RingCentral party statuses `Setup` and `VoiceMail`, in the session JSON and in WebHook
notifications, with independent pjsua2 phones: a call-out's device party is `Setup` until its
phone answers the INVITE with 180 (then `Proceeding`, then `Answered` when it picks up); a
ringing call the callee rejects to its mailbox makes the callee's party `VoiceMail` while the
caller's phone is answered by the greeting."""
import time

import pytest

from api_support import LiveCall, Native, registered
from checks import wait_until
from conftest import F_A, F_B
from rc_support import Rc
from test_ringcentral_subscriptions import SESSIONS, receiver, statuses  # noqa: F401 (fixture)

import audio

pytestmark = [pytest.mark.server]


def _subscribe(rc, receiver):
    rc.req("POST", "/subscription", 200, json={
        "eventFilters": [SESSIONS],
        "deliveryMode": {"transportType": "WebHook", "address": receiver.url}})


def test_call_out_party_is_setup_until_the_device_rings(server, phones, tones, receiver):
    A = registered(phones, server, "A", "201")
    A.play(tones[F_A])
    B = registered(phones, server, "B", "202")
    B.play(tones[F_B])
    B.auto_answer(200, delay_ms=300)
    a = Rc(server, "201")
    _subscribe(a, receiver)
    device = a.req("GET", "/account/~/extension/~/device", 200).json()["records"][0]["id"]
    out = a.req("POST", "/account/~/telephony/call-out", 200, json={
        "from": {"deviceId": device}, "to": {"extensionNumber": "202"}}).json()["session"]
    mine = out["parties"][0]
    assert mine["direction"] == "Outbound", out
    ia = A.wait_incoming(timeout=5)
    time.sleep(0.3)
    A.answer(call=ia["call"])
    ib = B.wait_incoming(timeout=10)
    B.wait_state("CONFIRMED", call=ib["call"], timeout=10)
    wait_until(lambda: "Answered" in statuses(receiver.got, mine["id"])[1],
               what="the device party Answered")
    _, codes = statuses(receiver.got, mine["id"])
    # Setup while the INVITE to A's phone is unanswered, Proceeding once it rings (180).
    assert codes[:3] == ["Setup", "Proceeding", "Answered"], codes
    a.req("DELETE", "/account/~/telephony/sessions/" + out["id"], 204)
    A.wait_state("DISCONNECTED", call=ia["call"], timeout=5)
    B.wait_state("DISCONNECTED", call=ib["call"], timeout=5)


def test_rejected_to_voicemail_party_is_voicemail(server, phones, tones, artifacts, receiver):
    Native(server).req("PUT", "/users/202/voicemail", 200, json={"enabled": True})
    b = Rc(server, "202")
    _subscribe(b, receiver)
    live = LiveCall(server, phones, tones, artifacts, answer=False)
    sid, pid = [(c["telephonySessionId"], c["partyId"]) for c in b.presence()["activeCalls"]][0]
    b.req("POST", "/account/~/telephony/sessions/%s/parties/%s/reject" % (sid, pid), 200)
    live.A.wait_state("CONFIRMED", call=live.c, timeout=5)  # answered by the mailbox
    live.B.wait_state("DISCONNECTED", call=live.inc["call"], timeout=5)
    assert "CONFIRMED" not in live.B.states(call=live.inc["call"])
    parties = Rc(server, "201").session(sid)["parties"]
    assert [p["status"]["code"] for p in parties] == ["Answered", "VoiceMail"], parties
    wait_until(lambda: "VoiceMail" in statuses(receiver.got, pid)[1], what="VoiceMail notified")
    assert statuses(receiver.got, pid)[1][-2:] == ["Proceeding", "VoiceMail"], receiver.got
    # The caller hears the greeting (speech).
    ra = artifacts + "/A_greeting.wav"
    live.A.record(ra)
    time.sleep(1.5)
    live.A.stop_record()
    assert not audio.silent(audio.read_wav(ra), 0.5), "the caller hears no greeting"
    live.A.hangup(call=live.c)
    wait_until(lambda: statuses(receiver.got, pid)[1][-1] == "Disconnected",
               what="Disconnected notified")
