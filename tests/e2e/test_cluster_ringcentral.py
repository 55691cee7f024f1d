"""RingCentral subscriptions across two nodes (issue 18): @ringcentral/subscriptions makes a
WebSocket subscription on node 2, then the RingCentral SDK a WebHook subscription on node 1
(stored in the shared PostgreSQL; node 2 hears of it only from the store). Real calls between pjsua2 phones, one owned by node 2, then
one owned by node 1, each give their telephony-session notifications:

- the webhook receiver (a plain HTTP server standing in for the subscriber) gets each one
  exactly once in the cluster, from the node that owns the call, whichever node the
  subscription was made on;
- the WebSocket client on node 2 gets every one of both nodes' calls, in order, `sequence`
  increasing per session, and the very same notifications (session, sequence, party, status);
- the subscription is the same resource on both nodes over plain HTTP (GET, list, PUT renew
  on node 2 of node 1's subscription, an exact 404 in RingCentral's shape after DELETE on
  node 2), and once deleted on node 2, node 1's calls no longer reach the webhook.
"""
import json
import os
import time

import pytest

from api_support import Native, registered
from checks import wait_until
from rc_support import ACME_CLIENT, PASSWORDS, Rc, assert_rc_error, node, rc_available
from test_cluster_bus import CrossCall
from test_ringcentral_subscriptions import SESSIONS, Receiver, SdkSubscription
from twonode import TwoNodes, nats_available

pytestmark = [
    pytest.mark.server,
    pytest.mark.skipif(not nats_available(), reason="nats-server not installed (scripts/test.sh)"),
    pytest.mark.skipif(not rc_available() and os.environ.get("CI") != "true",
                       reason="tests/node not installed (scripts/test.sh runs npm ci)"),
]

# The dialect's bound on how stale a node's copy of the stored subscriptions may be when it
# delivers (subscriptions.rs SYNC_INTERVAL_MS), with a margin.
SYNC_INTERVAL = 1.0


@pytest.fixture
def cluster(hookflash_bin, tmp_path, artifacts, pg_cluster):
    c = TwoNodes(hookflash_bin, str(tmp_path), artifacts, pg_cluster)
    yield c
    c.close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def session_notes(notes, sid):
    """(sequence, party id, status) of one session's notifications, in arrival order."""
    return [(n["body"]["sequence"], n["body"]["parties"][0]["id"],
             n["body"]["parties"][0]["status"]["code"])
            for _, n in notes if n["body"].get("telephonySessionId") == sid]


def disconnected(notes, sid):
    return any(status == "Disconnected" for _, _, status in session_notes(notes, sid))


def new_session(notes, known):
    sids = [n["body"].get("telephonySessionId") for _, n in notes]
    fresh = [s for s in sids if s and s not in known]
    return fresh[0] if fresh else None


def call_through(owner, caller, callee, callee_ext, caller_ext, tones, artifacts, ws, known,
                 listen=False):
    """A call placed through `owner` (which owns it), heard both ways when `listen`, hung up by
    the caller; returns its session id once the WebSocket client saw it end."""
    call = CrossCall(owner, caller, callee, callee_ext, caller_ext, tones, artifacts)
    if listen:
        call.assert_two_way("owned-by-%s" % owner.node_id)
    sid = wait_until(lambda: new_session(ws.notifications(), known), timeout=10,
                     what="a new session over the WebSocket")
    assert sid in [c["id"] for c in Native(owner).calls()], sid
    caller.hangup(call=call.c)
    call.assert_both_ended()
    wait_until(lambda: disconnected(ws.notifications(), sid), timeout=10,
               what="Disconnected of %s over the WebSocket" % sid)
    return sid


def test_webhook_and_websocket_subscriptions_hear_every_nodes_calls(cluster, phones, tones,
                                                                   artifacts, receiver):
    n1, n2 = cluster.node1, cluster.node2
    # The WebSocket subscription on node 2 (@ringcentral/subscriptions) comes first, so that
    # node 2 learns of the WebHook one below only by reading the store when it has something
    # to deliver (no subscription request reaches node 2 before the first call).
    ws = SdkSubscription(n2, "201", [SESSIONS], seconds=170)
    try:
        info = ws.wait_ready()
        assert info["deliveryMode"]["transportType"] == "WebSocket", info
        # The SDK makes the WebHook subscription on node 1 (the Validation-Token handshake).
        out, err = node("ringcentral_webhook.js", n1.http, ACME_CLIENT[0], ACME_CLIENT[1], "201",
                        PASSWORDS["201"], json.dumps([SESSIONS]), receiver.url, "vt-cluster")
        made = time.monotonic()
        assert out["ok"], (out, err)
        hook = out["created"]
        hid = hook["id"]
        assert out["read"]["id"] == hid and out["read"]["status"] == "Active", out
        assert len(receiver.validations) == 1, receiver.validations

        A = registered(phones, n1, "A", "201")
        B = registered(phones, n2, "B", "202")
        # Node 2's copy of the stored subscriptions is at most SYNC_INTERVAL old when it
        # delivers: past that, the first notification of its call makes it read the store.
        time.sleep(max(0.0, made + SYNC_INTERVAL + 0.2 - time.monotonic()))
        # 202 calls 201 through node 2 (node 2 owns it), then 201 calls 202 through node 1.
        sid2 = call_through(n2, B, A, "201", "202", tones, artifacts, ws, set(), listen=True)
        sid1 = call_through(n1, A, B, "202", "201", tones, artifacts, ws, {sid2})
        for sid, owner in ((sid2, "node2"), (sid1, "node1")):
            wait_until(lambda: disconnected(receiver.got, sid), timeout=10,
                       what="Disconnected of %s at the webhook" % sid)
            time.sleep(0.5)  # a duplicate, if any, would arrive now
            hooked = session_notes(receiver.got, sid)
            sock = session_notes(ws.notifications(), sid)
            print(owner, "webhook:", hooked, "\nwebsocket:", sock)
            # Exactly once at the webhook, in order; the WebSocket got the same ones, in order.
            assert len(set(hooked)) == len(hooked), hooked
            seqs = [s for s, _, _ in sock]
            assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), sock
            assert hooked == sock, (owner, hooked, sock)
            codes = []
            for _, _, status in sock:
                if not codes or codes[-1] != status:
                    codes.append(status)
            assert codes[0] in ("Setup", "Proceeding") and "Answered" in codes \
                and codes[-1] == "Disconnected", (owner, codes)
        for token, n in receiver.got:
            assert token == "vt-cluster" and n["subscriptionId"] == hid, (token, n)
        assert {n["subscriptionId"] for _, n in ws.notifications()} == {info["id"]}

        # Plain HTTP: node 2 serves node 1's subscription, the same resource.
        on1, on2 = Rc(n1, "201"), Rc(n2, "201")
        got2 = on2.req("GET", "/subscription/" + hid, 200).json()
        expected = {
            "id": hid,
            "uri": "/restapi/v1.0/subscription/" + hid,
            "creationTime": hook["creationTime"],
            "status": "Active",
            "eventFilters": hook["eventFilters"],
            "expirationTime": hook["expirationTime"],
            "expiresIn": got2["expiresIn"],
            "deliveryMode": {"transportType": "WebHook", "address": receiver.url,
                             "encryption": False},
        }
        assert got2 == expected, (got2, expected)
        assert 3000 <= got2["expiresIn"] <= 3600, got2
        # Node 2 lists it with its own WebSocket subscription (which node 1 does not list).
        assert sorted(s["id"] for s in on2.req("GET", "/subscription", 200).json()["records"]) \
            == sorted([hid, info["id"]])
        assert [s["id"] for s in on1.req("GET", "/subscription", 200).json()["records"]] == [hid]
        # Another extension does not see it (404, RingCentral's shape).
        body = assert_rc_error(Rc(n2, "202").req("GET", "/subscription/" + hid), 404, "CMN-102")
        missing = "Resource for parameter [subscriptionId] is not found"
        assert body == {"errorCode": "CMN-102", "message": missing,
                        "errors": [{"errorCode": "CMN-102", "message": missing,
                                    "parameterName": "subscriptionId"}]}, body
        # Renewed on node 2: node 1 answers with the new expiry.
        put = on2.req("PUT", "/subscription/" + hid, 200, json={"expiresIn": 7200}).json()
        assert put["id"] == hid and put["expirationTime"] != hook["expirationTime"], put
        assert on1.req("GET", "/subscription/" + hid, 200).json()["expirationTime"] \
            == put["expirationTime"]

        # Deleted on node 2; nothing asks node 1 about it: node 1's next call reaches the
        # WebSocket but not the webhook (node 1 reads the store again, its copy being older
        # than the bound), and node 1 then answers the exact 404.
        on2.req("DELETE", "/subscription/" + hid, 204)
        time.sleep(SYNC_INTERVAL + 0.5)
        before = len(receiver.got)
        sid3 = call_through(n1, A, B, "202", "201", tones, artifacts, ws, {sid1, sid2})
        time.sleep(1.0)
        assert len(receiver.got) == before, receiver.got[before:]
        assert session_notes(ws.notifications(), sid3), sid3
        r = on1.req("GET", "/subscription/" + hid)
        assert r.status_code == 404 and r.json() == body, (r.status_code, r.text)
        assert [s["id"] for s in on1.req("GET", "/subscription", 200).json()["records"]] == []
        assert_rc_error(on1.req("DELETE", "/subscription/" + hid), 404, "CMN-102")
    finally:
        assert ws.finish(), ws.lines[-3:]
