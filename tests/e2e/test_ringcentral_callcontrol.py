"""RingCentral Call Control: ringcentral-call-control 0.2.12 with @ringcentral/sdk 5.0.11
(tests/node, pinned) controls real calls between independent pjsua2 phones through hookflash;
what the phones receive proves each effect (the held phone's re-INVITE and music on hold, the
muted party's silence, the third phone connected by a transfer, the caller's failure after a
reject). Plain HTTP checks the exact statuses and RingCentral error bodies, with the call
unchanged after every refused request."""
import os
import time

import pytest

from api_support import LiveCall, Native, assert_music_on_hold, moh_enabled, registered
from checks import assert_anchored, assert_hears, assert_no_tone
from conftest import F_A, F_B, F_C
from rc_support import BETA_CLIENT, Rc, assert_rc_error, cc, login, rc_available

pytestmark = [
    pytest.mark.server,
    pytest.mark.skipif(
        not rc_available() and os.environ.get("CI") != "true",
        reason="tests/node not installed (scripts/test.sh runs npm ci)",
    ),
]


def _record(phone, path, seconds=2.0):
    phone.record(path)
    time.sleep(seconds)
    phone.stop_record()
    return path


def test_call_control_sees_holds_mutes_and_hangs_up_a_live_call(server, phones, tones, artifacts):
    call = LiveCall(server, phones, tones, artifacts)
    out = cc(server, "201", "sessions")
    assert len(out["sessions"]) == 1, out
    session = out["sessions"][0]
    sid = session["id"]
    # The SDK found its own party through owner.extensionId == the id of /extension/~.
    mine = [p for p in session["parties"] if p["extensionId"] == out["extensionId"]]
    assert len(mine) == 1 and mine[0]["status"]["code"] == "Answered", session
    assert mine[0]["direction"] == "Outbound", mine
    assert len(out["devices"]) == 1 and out["devices"][0]["id"], out

    # Hold 201's party: B (202's phone) is put on hold and hears music; A hears nothing of B.
    mb = call.B.mark()
    held = cc(server, "201", "hold", sid)
    assert held["result"]["status"]["code"] == "Hold", held
    assert held["result"]["id"] == mine[0]["id"], held
    call.B.wait_media(lambda e: e["status"] == "remote_hold", call=call.inc["call"], since=mb)
    ra, rb = call.record("held")
    assert_no_tone(rb, F_A, what="held B must not hear A")
    assert_no_tone(ra, F_B, what="A must not hear held B")
    if moh_enabled():
        assert_music_on_hold(rb, F_A, what="held B hears music on hold")
    parties = Rc(server, "202").session(sid)["parties"]
    assert {p["status"]["code"] for p in parties} == {"Hold"}, parties

    mb = call.B.mark()
    unheld = cc(server, "201", "unhold", sid)
    assert unheld["result"]["status"]["code"] == "Answered", unheld
    call.B.wait_media(lambda e: e["active"], call=call.inc["call"], since=mb)
    call.assert_two_way("retrieved")

    muted = cc(server, "201", "mute", sid)
    assert muted["result"]["muted"] is True, muted
    call.assert_a_muted("muted")
    unmuted = cc(server, "201", "unmute", sid)
    assert unmuted["result"]["muted"] is False, unmuted
    call.assert_two_way("unmuted")

    cc(server, "202", "drop", sid)
    call.assert_both_ended()
    Rc(server, "201").session(sid, 404)
    assert cc(server, "201", "sessions")["sessions"] == []
    server.wait_metric("hookflash_active_calls", 0)


def test_call_control_transfer_connects_the_third_phone(server, phones, tones, artifacts):
    call = LiveCall(server, phones, tones, artifacts)
    C = registered(phones, server, "C", "103")
    C.play(tones[F_C])
    C.auto_answer(200, delay_ms=500)
    sid = cc(server, "201", "sessions")["sessions"][0]["id"]
    mc = C.mark()
    out = cc(server, "201", "transfer", sid, {"extensionNumber": "103"})
    assert out["result"]["id"], out
    inc = C.wait_incoming(since=mc, timeout=5)
    C.wait_state("CONFIRMED", call=inc["call"], timeout=5)
    # 201 (the transferor) is released; B and C talk.
    call.A.wait_state("DISCONNECTED", call=call.c, timeout=5)
    assert_anchored(C.wait_media(lambda e: e["active"], call=inc["call"]), server)
    time.sleep(0.7)
    rb = _record(call.B, os.path.join(artifacts, "B_after.wav"))
    rc = _record(C, os.path.join(artifacts, "C_after.wav"))
    assert_hears(rb, F_C, F_B, t0=0.5, what="B hears C after the transfer")
    assert_hears(rc, F_B, F_C, t0=0.5, what="C hears B after the transfer")
    # 103 now sees the session with its own party answered.
    parties = Rc(server, "103").session(sid)["parties"]
    assert any(p.get("owner", {}).get("extensionId") and p["status"]["code"] == "Answered"
               for p in parties), parties


def test_call_control_rejects_a_ringing_call(server, phones, tones, artifacts):
    call = LiveCall(server, phones, tones, artifacts, answer=False)
    out = cc(server, "202", "sessions")
    session = out["sessions"][0]
    mine = [p for p in session["parties"] if p["extensionId"] == out["extensionId"]][0]
    assert mine["status"]["code"] == "Proceeding" and mine["direction"] == "Inbound", mine
    # Hold needs a connected party: 409, and the phone goes on ringing.
    pid_b = mine["id"]
    r = Rc(server, "202").req("POST", "/account/~/telephony/sessions/%s/parties/%s/hold"
                              % (session["id"], pid_b))
    assert_rc_error(r, 409, "TAS-409")
    assert "DISCONNECTED" not in call.B.states(call=call.inc["call"])
    # The caller's side cannot reject; nothing changes.
    r = Rc(server, "201").req("POST", "/account/~/telephony/sessions/%s/parties/%s/reject"
                              % (session["id"], [p for p in session["parties"] if p["id"] != mine["id"]][0]["id"]))
    assert_rc_error(r, 409)
    cc(server, "202", "reject", session["id"])
    # B stops ringing, A gets the failure (202 has no voicemail: busy).
    call.B.wait_state("DISCONNECTED", call=call.inc["call"], timeout=5)
    end = call.A.end_status(call=call.c, timeout=5)
    assert end >= 400, end
    assert "CONFIRMED" not in call.A.states(call=call.c)
    server.wait_metric("hookflash_active_calls", 0)


def test_plain_http_statuses_and_error_bodies_leave_the_call_unchanged(server, phones, tones,
                                                                        artifacts):
    call = LiveCall(server, phones, tones, artifacts)
    a, b = Rc(server, "201"), Rc(server, "202")
    calls = a.presence()["activeCalls"]
    assert len(calls) == 1, calls
    sid, pid = calls[0]["telephonySessionId"], calls[0]["partyId"]
    assert a.presence()["telephonyStatus"] == "CallConnected"
    b_pid = b.presence()["activeCalls"][0]["partyId"]
    base = "/account/~/telephony/sessions/%s/parties/" % sid

    assert_rc_error(a.req("GET", "/account/~/telephony/sessions/nope"), 404, "CMN-102")
    assert_rc_error(a.req("POST", base + "nope/hold"), 404, "CMN-102")
    # 202's party through 201's token: 403, nothing held.
    assert_rc_error(a.req("POST", base + b_pid + "/hold"), 403)
    # Someone not on the call (103) and another account (301) do not see it at all.
    assert_rc_error(Rc(server, "103").req("GET", "/account/~/telephony/sessions/" + sid), 404)
    zed = Rc(server, "301", login(server, "301", client=BETA_CLIENT))
    assert_rc_error(zed.req("POST", base + pid + "/hold"), 404)
    # A transfer to nowhere: 400 and the call goes on (104 has no registered phone).
    for target in ({"extensionNumber": "104"}, {"phoneNumber": "no-such-user"},
                   {"extensionNumber": "201"}):
        body = assert_rc_error(a.req("POST", base + pid + "/transfer", json=target), 400,
                               "CMN-101")
        assert body["errors"][0]["parameterName"], body
    assert_rc_error(a.req("POST", base + pid + "/transfer", json={}), 400)
    assert_rc_error(a.req("POST", base + pid + "/transfer", data="{not json"), 400)
    # Forward and reject need a ringing call: 409.
    assert_rc_error(b.req("POST", base + b_pid + "/forward", json={"phoneNumber": "103"}), 409,
                    "TAS-409")
    assert_rc_error(b.req("POST", base + b_pid + "/reject"), 409)
    # answer / reply need a ringing call (409); bridge with its own session is 400.
    assert_rc_error(a.req("POST", base + pid + "/answer", json={"deviceId": "1"}), 409, "TAS-409")
    assert_rc_error(b.req("POST", base + b_pid + "/reply", json={"replyWithText": "Later"}), 409)
    assert_rc_error(a.req("POST", base + pid + "/bridge",
                          json={"telephonySessionId": sid, "partyId": b_pid}), 400, "CMN-101")
    # Unchanged after all of it.
    parties = a.session(sid)["parties"]
    assert [p["status"]["code"] for p in parties] == ["Answered", "Answered"], parties
    assert not any(p["muted"] for p in parties), parties
    call.assert_two_way("after refusals")
    # Recording: start -> {id, active}, pause and resume by id; an unknown id is 404.
    rec = a.req("POST", base + pid + "/recordings", 201).json()
    assert rec["active"] is True and rec["id"], rec
    again = a.req("PATCH", base + pid + "/recordings/" + rec["id"], 200, json={"active": False})
    assert again.json() == {"id": rec["id"], "active": False}
    a.req("PATCH", base + pid + "/recordings/" + rec["id"], 200, json={"active": True})
    assert_rc_error(a.req("PATCH", base + pid + "/recordings/nope", json={"active": True}), 404)
    assert_rc_error(a.req("POST", base + pid + "/recordings"), 409)
    # The party's own hang-up ends the two-party call (204).
    a.req("DELETE", base + pid, 204)
    call.assert_both_ended()


def test_call_out_rings_the_device_then_the_target(server, phones, tones, artifacts):
    A = registered(phones, server, "A", "201")
    A.play(tones[F_A])
    A.auto_answer(200, delay_ms=300)
    B = registered(phones, server, "B", "202")
    B.play(tones[F_B])
    B.auto_answer(200, delay_ms=300)
    out = cc(server, "201", "callOut", "", {"deviceIndex": 0, "to": {"extensionNumber": "202"}})
    session = out["result"]
    assert session["id"] and session["parties"], session
    ia = A.wait_incoming(timeout=5)
    ib = B.wait_incoming(timeout=10)
    A.wait_state("CONFIRMED", call=ia["call"], timeout=10)
    B.wait_state("CONFIRMED", call=ib["call"], timeout=10)
    time.sleep(0.7)
    ra = _record(A, os.path.join(artifacts, "A.wav"))
    rb = _record(B, os.path.join(artifacts, "B.wav"))
    assert_hears(ra, F_B, F_A, t0=0.5, what="A hears B after call-out")
    assert_hears(rb, F_A, F_B, t0=0.5, what="B hears A after call-out")
    # A device that is not the extension's: 400, nothing dialled.
    r = Rc(server, "201").req("POST", "/account/~/telephony/call-out",
                              json={"from": {"deviceId": "123"}, "to": {"extensionNumber": "202"}})
    assert_rc_error(r, 400, "CMN-101")
    cc(server, "201", "drop", session["id"])
    A.wait_state("DISCONNECTED", call=ia["call"], timeout=5)
    B.wait_state("DISCONNECTED", call=ib["call"], timeout=5)


def test_park_and_forward_through_the_parties(server, phones, tones, artifacts):
    # Park: 201 parks; 202 waits with music (status Parked) and 201's phone is released.
    call = LiveCall(server, phones, tones, artifacts)
    a, b = Rc(server, "201"), Rc(server, "202")
    sid, pid = [(c["telephonySessionId"], c["partyId"]) for c in a.presence()["activeCalls"]][0]
    r = a.req("POST", "/account/~/telephony/sessions/%s/parties/%s/park" % (sid, pid), 200)
    assert r.json()["id"] == pid, r.text
    call.A.wait_state("DISCONNECTED", call=call.c, timeout=5)
    assert b.presence()["telephonyStatus"] == "ParkedCall", b.presence()
    assert [p["status"]["code"] for p in b.session(sid)["parties"]] == ["Disconnected", "Parked"]
    time.sleep(0.5)
    rb = _record(call.B, os.path.join(artifacts, "B_parked.wav"), 1.5)
    assert_no_tone(rb, F_A, t0=0.5, what="parked B must not hear A")
    if moh_enabled():
        assert_music_on_hold(rb, F_A, what="parked B hears music")
    b.req("DELETE", "/account/~/telephony/sessions/" + sid, 204)
    call.B.wait_state("DISCONNECTED", call=call.inc["call"], timeout=5)


def test_forward_of_a_ringing_call_rings_the_target(server, phones, tones, artifacts):
    call = LiveCall(server, phones, tones, artifacts, answer=False)
    C = registered(phones, server, "C", "103")
    C.play(tones[F_C])
    C.auto_answer(200, delay_ms=300)
    b = Rc(server, "202")
    sid, pid = [(c["telephonySessionId"], c["partyId"]) for c in b.presence()["activeCalls"]][0]
    assert_rc_error(b.req("POST", "/account/~/telephony/sessions/%s/parties/%s/forward"
                          % (sid, pid), json={"extensionNumber": "104"}), 400)
    r = b.req("POST", "/account/~/telephony/sessions/%s/parties/%s/forward" % (sid, pid), 200,
              json={"extensionNumber": "103"})
    assert r.json()["id"], r.text
    call.B.wait_state("DISCONNECTED", call=call.inc["call"], timeout=5)
    inc = C.wait_incoming(timeout=5)
    C.wait_state("CONFIRMED", call=inc["call"], timeout=5)
    call.A.wait_state("CONFIRMED", call=call.c, timeout=5)
    time.sleep(0.7)
    ra = _record(call.A, os.path.join(artifacts, "A.wav"))
    assert_hears(ra, F_C, F_A, t0=0.5, what="A hears C after the forward")
    call.A.hangup(call=call.c)
    C.wait_state("DISCONNECTED", call=inc["call"], timeout=5)


def test_transfer_to_a_park_orbit_and_pick_up(server, phones, tones, artifacts):
    call = LiveCall(server, phones, tones, artifacts)
    a = Rc(server, "201")
    sid, pid = [(c["telephonySessionId"], c["partyId"]) for c in a.presence()["activeCalls"]][0]
    a.req("POST", "/account/~/telephony/sessions/%s/parties/%s/transfer" % (sid, pid), 200,
          json={"parkOrbit": "*73"})
    call.A.wait_state("DISCONNECTED", call=call.c, timeout=5)
    assert Native(server).req("GET", "/parks", 200).json()["parks"] == [
        {"orbit": "*73", "call_id": sid}]
    C = registered(phones, server, "C", "103")
    C.play(tones[F_C])
    c = C.call(server.uri("*73"))
    C.wait_state("CONFIRMED", call=c, timeout=5)
    time.sleep(0.7)
    rb = _record(call.B, os.path.join(artifacts, "B_after.wav"))
    assert_hears(rb, F_C, F_B, t0=0.5, what="B hears C who took the parked call")
    C.hangup(call=c)
    call.B.wait_state("DISCONNECTED", call=call.inc["call"], timeout=5)
