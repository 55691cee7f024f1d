"""RingCentral subscriptions that outlive their transport: a WebHook subscription survives a
server restart (stored in SQLite) and goes on receiving a real call's notifications; a
WebSocket subscription of @ringcentral/subscriptions 5.0.11 whose connection drops recovers its
session (reconnect with `wsc`: recoveryState Successful, same subscription) and receives the
notification it missed while it was away — a hold proven at the held pjsua2 phone."""
import time

import pytest

from api_support import LiveCall
from checks import wait_until
from rc_support import Rc, assert_rc_error, rc_available
from test_ringcentral_subscriptions import SESSIONS, Receiver, SdkSubscription, statuses

pytestmark = [pytest.mark.server]


def test_webhook_subscription_survives_a_restart(server, phones, tones, artifacts):
    receiver = Receiver()
    try:
        a = Rc(server, "201")
        sub = a.req("POST", "/subscription", 200, json={
            "eventFilters": [SESSIONS],
            "deliveryMode": {"transportType": "WebHook", "address": receiver.url,
                             "verificationToken": "vt-restart"}}).json()
        gone = a.req("POST", "/subscription", 200, json={
            "eventFilters": [SESSIONS],
            "deliveryMode": {"transportType": "WebHook", "address": receiver.url}}).json()
        a.req("DELETE", "/subscription/" + gone["id"], 204)
        server.restart()
        a = Rc(server, "201")
        again = a.req("GET", "/subscription/" + sub["id"], 200).json()
        assert again["eventFilters"] == sub["eventFilters"], (again, sub)
        assert again["expirationTime"] == sub["expirationTime"], (again, sub)
        assert again["deliveryMode"]["address"] == receiver.url, again
        assert_rc_error(a.req("GET", "/subscription/" + gone["id"]), 404)
        assert [s["id"] for s in a.req("GET", "/subscription", 200).json()["records"]] == [
            sub["id"]]

        call = LiveCall(server, phones, tones, artifacts)
        pid = a.presence()["activeCalls"][0]["partyId"]
        wait_until(lambda: "Answered" in statuses(receiver.got, pid)[1],
                   what="Answered notified after the restart")
        call.A.hangup(call=call.c)
        call.assert_both_ended()
        wait_until(lambda: "Disconnected" in statuses(receiver.got, pid)[1],
                   what="Disconnected notified after the restart")
        assert {(t, n["subscriptionId"]) for t, n in receiver.got} == {("vt-restart", sub["id"])}
    finally:
        receiver.close()


@pytest.mark.skipif(not rc_available(), reason="tests/node not installed")
def test_websocket_session_recovers_missed_notifications(server, phones, tones, artifacts):
    sub = SdkSubscription(server, "201", [SESSIONS])
    info = sub.wait_ready()
    try:
        call = LiveCall(server, phones, tones, artifacts)
        a = Rc(server, "201")
        sid, pid = [(c["telephonySessionId"], c["partyId"]) for c in a.presence()["activeCalls"]][0]
        wait_until(lambda: "Answered" in statuses(sub.notifications(), pid)[1],
                   what="Answered over the WebSocket")
        sub.proc.stdin.write("drop\n")
        sub.proc.stdin.flush()
        wait_until(lambda: any(l.get("dropped") for l in sub.lines), what="dropped")
        time.sleep(0.3)
        # While the client is away: hold (proven at B's phone). The notification waits.
        mb = call.B.mark()
        a.req("POST", "/account/~/telephony/sessions/%s/parties/%s/hold" % (sid, pid), 200)
        call.B.wait_media(lambda e: e["status"] == "remote_hold", call=call.inc["call"], since=mb)
        time.sleep(0.5)
        assert "Hold" not in statuses(sub.notifications(), pid)[1], "delivered while away?"
        sub.proc.stdin.write("resume\n")
        sub.proc.stdin.flush()
        rec = wait_until(lambda: [l for l in sub.lines if "recovered" in l], timeout=15,
                         what="the SDK's auto-recovery")[0]
        assert rec["recovered"] == "Successful", rec
        assert rec["subscription"]["id"] == info["id"], (rec, info)
        wait_until(lambda: "Hold" in statuses(sub.notifications(), pid)[1],
                   what="the missed Hold delivered after recovery")
        call.A.hangup(call=call.c)
        call.assert_both_ended()
        wait_until(lambda: "Disconnected" in statuses(sub.notifications(), pid)[1],
                   what="Disconnected after recovery")
    finally:
        assert sub.finish(), sub.lines[-3:]
    seq, codes = statuses(sub.notifications(), pid)
    assert seq == sorted(seq) and len(set(seq)) == len(seq), seq
    assert codes[-3:] == ["Answered", "Hold", "Disconnected"], codes
    assert {n["subscriptionId"] for _, n in sub.notifications()} == {info["id"]}
