"""Two hookflash nodes sharing PostgreSQL and NATS (issue 18): the commands beyond hold / mute /
hangup, each sent to the node that does NOT own the call and proven at independent pjsua2
phones (201 plays 1000 Hz, 202 1500 Hz, 203 2000 Hz; a phone registers with one node, the node
that takes the INVITE owns the call):

- ringing calls: reject (the caller gets 486, as on one node), ignore of the only device (480),
  forward to 203 (it rings, answers, audio both ways with the caller);
- park (the parked caller hears music on hold, `/parks` on either node lists the orbit) and
  unpark to 202 (audio both ways again); a supervisor (203) listening in: it hears both
  parties, neither hears it; the call's participants; the supervisor's end;
- RingCentral: answer on a device (203's phone gets the auto-answer INVITE and talks to the
  caller), park, pickup to a device (203's phone rings, answers, audio both ways), and a flip
  of 203's side to 202;
- two calls owned by two different nodes: a bridge is refused with the documented 409 (exact
  body) and nothing changes; a call's leg joins a conference on its own node through the other
  node, is muted and leaves through it (the parties hear each other again); a conference
  running on the node asked refuses another node's call with the same 409.

twonode.py starts nats-server and the two nodes (phones register directly with a node).
"""
import os
import time

import pytest

from api_support import Native, assert_music_on_hold, moh_enabled, registered
from checks import assert_hears, assert_no_tone, wait_until
from conftest import F_A, F_B, F_C
from rc_support import Rc, rc_available
from test_conference import hears
from test_conference_calls import record_all
from twonode import TwoNodes, nats_available

pytestmark = [
    pytest.mark.server,
    pytest.mark.skipif(not nats_available(), reason="nats-server not installed (scripts/test.sh)"),
]

EXTRA = [("203", "secret203", "Carol")]
# The answer of every dialect's 409 for two calls on two nodes (docs/api.md).
ON_ANOTHER_NODE = {"error": {"code": "wrong_state",
                             "message": "not possible while the call is on another node than "
                                        "the other call"}}


@pytest.fixture
def cluster(hookflash_bin, tmp_path, artifacts, pg_cluster):
    c = TwoNodes(hookflash_bin, str(tmp_path), artifacts, pg_cluster, extra_users=EXTRA)
    yield c
    c.close()


def phone(phones, node, name, ext, tone, tones):
    p = registered(phones, node, name, ext)
    p.play(tones[tone])
    return p


def two_way(a, b, fa, fb, artifacts, tag):
    """`a` hears `fb` (not its own `fa`) and `b` hears `fa`."""
    rec = record_all({"a": a, "b": b}, artifacts, tag, seconds=2.5)
    assert_hears(rec["a"], fb, fa, t0=0.5, what="%s: %d Hz side hears the other" % (tag, fa))
    assert_hears(rec["b"], fa, fb, t0=0.5, what="%s: %d Hz side hears the other" % (tag, fb))


def listed(api, pred, what):
    return wait_until(lambda: next((c for c in api.calls() if pred(c)), None), timeout=10,
                      what=what)


def ringing(A, B, n1, on2, ext="202"):
    """A (node 1) calls `ext`, whose phone B rings; node 1 owns the call; node 2 lists it."""
    mb = B.mark()
    c = A.call(n1.uri(ext))
    inc = B.wait_incoming(since=mb, timeout=10)
    call = listed(on2, lambda x: x["state"] == "ringing", "the ringing call on node 2")
    return c, inc, call


@pytest.mark.timeout(240)
def test_ringing_park_and_supervise_sent_to_the_other_node(cluster, phones, tones, artifacts):
    n1, n2 = cluster.node1, cluster.node2
    on1, on2 = Native(n1), Native(n2)
    A = phone(phones, n1, "A", "201", F_A, tones)
    B = phone(phones, n2, "B", "202", F_B, tones)
    D = phone(phones, n2, "D", "203", F_C, tones)
    D.auto_answer(200, delay_ms=300)

    # Reject through node 2: the caller gets node 1's busy, 202 never answers.
    c, inc, call = ringing(A, B, n1, on2)
    assert on1.one_call()["id"] == call["id"]
    r = on2.req("POST", "/calls/%s/reject" % call["id"], 200).json()
    assert r["id"] == call["id"], r
    assert A.end_status(call=c) == 486
    B.wait_state("DISCONNECTED", call=inc["call"], timeout=5)
    assert "CONFIRMED" not in B.states(call=inc["call"])
    n1.wait_metric("hookflash_active_calls", 0)

    # Ignore 202's only ringing device through node 2: the caller gets 480.
    c, inc, call = ringing(A, B, n1, on2)
    call = listed(on2, lambda x: x["id"] == call["id"]
                  and Native.leg(x, "202").get("devices"), "202's ringing device on node 2")
    devices = Native.leg(call, "202")["devices"]
    assert len(devices) == 1, devices
    r = on2.req("POST", "/calls/%s/ignore" % call["id"], 400, json={"device": "sip:x@y"}).json()
    assert r["error"]["code"] == "invalid_request", r
    on2.req("POST", "/calls/%s/ignore" % call["id"], 200, json={"device": devices[0]})
    assert A.end_status(call=c) == 480
    B.wait_state("DISCONNECTED", call=inc["call"], timeout=5)
    n1.wait_metric("hookflash_active_calls", 0)

    # Forward to 203 through node 2: 202 stops ringing, 203 rings and answers.
    c, inc, call = ringing(A, B, n1, on2)
    call_id = call["id"]
    md = D.mark()
    r = on2.req("POST", "/calls/%s/forward" % call_id, 200, json={"target": "203"}).json()
    assert Native.leg(r, "203")["state"] in ("setup", "ringing"), r
    B.wait_state("DISCONNECTED", call=inc["call"], timeout=5)
    assert "CONFIRMED" not in B.states(call=inc["call"])
    d_in = D.wait_incoming(since=md, timeout=5)
    D.wait_state("CONFIRMED", call=d_in["call"], timeout=5)
    A.wait_state("CONFIRMED", call=c, timeout=5)
    two_way(A, D, F_A, F_C, artifacts, "forwarded")

    # Park through node 2: node 1's orbit comes back; 203 (the user's side) is released and
    # the caller hears music; both nodes list the parked call.
    r = on2.req("POST", "/calls/%s/park" % call_id, 200, json={}).json()
    assert r["orbit"] == "*71" and r["call"]["id"] == call_id, r
    D.wait_state("DISCONNECTED", call=d_in["call"], timeout=5)
    parks = [{"orbit": "*71", "call_id": call_id}]
    for api in (on1, on2):
        wait_until(lambda: api.req("GET", "/parks", 200).json()["parks"] == parks,
                   what="the park listed")
    time.sleep(0.5)
    ra = record_all({"A": A}, artifacts, "parked", seconds=2.0)["A"]
    assert_no_tone(ra, F_C, t0=0.5, what="the parked caller must not hear 203")
    if moh_enabled():
        assert_music_on_hold(ra, F_C, what="the parked caller hears music")

    # Unpark to 202 through node 2: 202 rings, answers, talks to the caller.
    B.auto_answer(200, delay_ms=300)
    mb = B.mark()
    on2.req("POST", "/calls/%s/unpark" % call_id, 200, json={"target": "202"})
    b_in = B.wait_incoming(since=mb, timeout=5)
    B.wait_state("CONFIRMED", call=b_in["call"], timeout=5)
    for api in (on1, on2):
        wait_until(lambda: api.req("GET", "/parks", 200).json()["parks"] == [],
                   what="no park listed")
    two_way(A, B, F_A, F_B, artifacts, "unparked")
    assert "DISCONNECTED" not in A.states(call=c)

    # A supervisor listening in, asked through node 2: node 1 dials 203 into the call.
    path = "/calls/%s/supervisor" % call_id
    md = D.mark()
    r = on2.req("POST", path, 201, json={"user": "203", "mode": "listen"}).json()
    assert r["supervision"] == {"mode": "listen", "agent_leg": None} and r["number"] == "203", r
    s_in = D.wait_incoming(since=md, timeout=5)
    D.wait_state("CONFIRMED", call=s_in["call"], timeout=5)

    def joined():
        ps = on2.req("GET", "/calls/%s/parties" % call_id, 200).json()["participants"]
        return ps if len(ps) == 3 and all(p["state"] == "joined" for p in ps) else None
    ps = wait_until(joined, timeout=15, what="three joined in the call's mixer (via node 2)")
    assert sum(1 for p in ps if p["supervision"]) == 1, ps
    r = on2.req("POST", path, 409, json={"user": "203", "mode": "barge"}).json()
    assert r["error"]["code"] == "wrong_state", r
    rec = record_all({"201": A, "202": B, "203": D}, artifacts, "listen", seconds=3.5)
    hears(rec["203"], [F_A, F_B], [F_C], 1.0, 3.2, "listening 203")
    hears(rec["201"], [F_B], [F_C, F_A], 1.0, 3.2, "201 with 203 listening")
    hears(rec["202"], [F_A], [F_C, F_B], 1.0, 3.2, "202 with 203 listening")
    on2.req("DELETE", path, 204)
    D.wait_state("DISCONNECTED", call=s_in["call"], timeout=5)
    n1.wait_metric("hookflash_calls_on_mixer", 0)
    two_way(A, B, F_A, F_B, artifacts, "supervisor-gone")
    on2.req("DELETE", path, 404)

    A.hangup(call=c)
    B.wait_state("DISCONNECTED", call=b_in["call"], timeout=5)
    n1.wait_metric("hookflash_active_calls", 0)


@pytest.mark.skipif(not rc_available() and os.environ.get("CI") != "true",
                    reason="tests/node not installed (scripts/test.sh runs npm ci)")
@pytest.mark.timeout(200)
def test_ringcentral_answer_on_device_pickup_and_flip_on_the_other_node(cluster, phones, tones,
                                                                        artifacts):
    n1, n2 = cluster.node1, cluster.node2
    on2 = Native(n2)
    A = phone(phones, n1, "A", "201", F_A, tones)
    B = phone(phones, n2, "B", "202", F_B, tones)
    B.auto_answer(200, delay_ms=300)
    D = phone(phones, n2, "D", "203", F_C, tones)
    D.intercom(True)

    # 201 (node 1) calls 203, whose phone (registered with node 2) rings; 203 answers it on
    # that device through node 2's RingCentral API: node 1 sends the auto-answer INVITE.
    md = D.mark()
    c = A.call(n1.uri("203"))
    ring = D.wait_incoming(since=md, timeout=10)
    rc = Rc(n2, "203")
    wait_until(lambda: rc.presence()["activeCalls"], what="the ringing call in 203's presence")
    sid, pid = [(x["telephonySessionId"], x["partyId"]) for x in rc.presence()["activeCalls"]][0]
    devices = [d["id"] for d in rc.req("GET", "/account/~/extension/~/device", 200)
               .json()["records"]]
    assert len(devices) == 1, devices
    party = "/account/~/telephony/sessions/%s/parties/%s/" % (sid, pid)
    md = D.mark()
    rc.req("POST", party + "answer", 200, json={"deviceId": devices[0]})
    auto = D.wait_incoming(since=md, timeout=5)
    assert auto["auto_answer_header"], auto
    D.wait_state("CONFIRMED", call=auto["call"], timeout=5)
    A.wait_state("CONFIRMED", call=c, timeout=5)
    D.wait_state("DISCONNECTED", call=ring["call"], timeout=5)
    two_way(A, D, F_A, F_C, artifacts, "answered-on-device")

    # Park 203's party through node 2; the caller waits with music.
    rc.req("POST", party + "park", 200)
    D.wait_state("DISCONNECTED", call=auto["call"], timeout=5)
    time.sleep(0.5)
    ra = record_all({"A": A}, artifacts, "rc-parked", seconds=2.0)["A"]
    assert_no_tone(ra, F_C, t0=0.5, what="the parked caller must not hear 203")
    if moh_enabled():
        assert_music_on_hold(ra, F_C, what="the parked caller hears music")

    # 203 picks the parked caller's party up on its device, through node 2: the phone rings
    # the ordinary way and, answered, talks to the caller.
    call = listed(on2, lambda x: x["id"] == sid, "the parked call on node 2")
    apid = Native.leg(call, "201")["id"]
    wait_until(lambda: on2.req("GET", "/parks", 200).json()["parks"]
               == [{"orbit": "*71", "call_id": sid}], what="the park listed on node 2")
    D.auto_answer(200, delay_ms=300)
    md = D.mark()
    rc.req("POST", "/account/~/telephony/sessions/%s/parties/%s/pickup" % (sid, apid), 200,
           json={"deviceId": devices[0]})
    back = D.wait_incoming(since=md, timeout=5)
    assert not back["auto_answer_header"], back
    D.wait_state("CONFIRMED", call=back["call"], timeout=5)
    two_way(A, D, F_A, F_C, artifacts, "picked-up")

    # Flip 203's side to its forwarding number 202, through node 2 (native API).
    on2.req("PUT", "/users/203/forwardings", 200,
            json={"forwardings": [{"flip_id": "desk", "number": "202"}]})
    call = listed(on2, lambda x: x["id"] == sid and x["state"] == "answered"
                  and any(l["owner_extension"] == "203" and l["state"] == "answered"
                          for l in x["legs"]), "203 connected on node 2")
    mb = B.mark()
    on2.req("POST", "/calls/%s/flip" % sid, 202,
            json={"flip_id": "desk", "leg_id": Native.leg(call, "203")["id"]})
    b_in = B.wait_incoming(since=mb, timeout=5)
    B.wait_state("CONFIRMED", call=b_in["call"], timeout=5)
    D.wait_state("DISCONNECTED", call=back["call"], timeout=5)
    two_way(A, B, F_A, F_B, artifacts, "flipped")
    A.hangup(call=c)
    B.wait_state("DISCONNECTED", call=b_in["call"], timeout=5)
    n1.wait_metric("hookflash_active_calls", 0)


@pytest.mark.timeout(200)
def test_two_calls_on_two_nodes_bridge_refused_and_conference_moves(cluster, phones, tones,
                                                                    artifacts):
    n1, n2 = cluster.node1, cluster.node2
    on1, on2 = Native(n1), Native(n2)
    A = phone(phones, n1, "A", "201", F_A, tones)
    B = phone(phones, n2, "B", "202", F_B, tones)
    B.auto_answer(200)
    D = phone(phones, n2, "D", "203", F_C, tones)
    E = phone(phones, n1, "E", "103", F_A, tones)
    E.auto_answer(200)
    # Call 1: 201 -> 202, owned by node 1. Call 2: 203 -> 103, owned by node 2.
    c1 = A.call(n1.uri("202"))
    A.wait_state("CONFIRMED", call=c1, timeout=10)
    c2 = D.call(n2.uri("103"))
    D.wait_state("CONFIRMED", call=c2, timeout=10)
    call1 = listed(on1, lambda x: any(l["owner_extension"] == "201" for l in x["legs"])
                   and x["state"] == "answered", "call 1")
    call2 = listed(on1, lambda x: any(l["owner_extension"] == "203" for l in x["legs"])
                   and x["state"] == "answered", "call 2 on node 1")
    assert on1.req("GET", "/calls/%s" % call1["id"], 200)
    assert call2["id"] in [x["id"] for x in on2.req("GET", "/calls", 200).json()["calls"]]
    a_leg, b_leg = Native.leg(call1, "201")["id"], Native.leg(call1, "202")["id"]
    d_leg = Native.leg(call2, "203")["id"]

    # Bridge 201's and 203's calls: they are on two nodes -> 409, the same body on either
    # node, whichever call is in the path; nothing changes.
    for api, path_call, leg, other, other_leg in (
            (on2, call1["id"], a_leg, call2["id"], d_leg),
            (on1, call1["id"], a_leg, call2["id"], d_leg),
            (on1, call2["id"], d_leg, call1["id"], a_leg)):
        r = api.req("POST", "/calls/%s/bridge" % path_call, 409,
                    json={"leg_id": leg, "other_call_id": other, "other_leg_id": other_leg})
        assert r.json() == ON_ANOTHER_NODE, r.text
    # An unknown other call stays a 404.
    r = on2.req("POST", "/calls/%s/bridge" % call1["id"], 404,
                json={"leg_id": a_leg, "other_call_id": "nope", "other_leg_id": d_leg})
    assert r.json()["error"]["code"] == "not_found", r.text
    two_way(A, B, F_A, F_B, artifacts, "after-refused-bridge")

    # 201's leg joins conference "room" through node 2: it is made on node 1 (the call's).
    conf = "/calls/%s/legs/%s/conference" % (call1["id"], a_leg)
    p = on2.req("POST", conf, 201, json={"name": "room"}).json()
    assert p["call_id"] == call1["id"] and p["leg_id"] == a_leg, p
    rec = record_all({"201": A, "202": B}, artifacts, "in-room", seconds=2.5)
    assert_no_tone(rec["201"], F_B, t0=0.7, what="201 in the conference does not hear 202")
    assert_no_tone(rec["202"], F_A, t0=0.7, what="202 does not hear 201 in the conference")
    p = on2.req("PATCH", conf, 200, json={"muted": True}).json()
    assert p["muted"] is True and p["leg_id"] == a_leg, p
    # "room" runs on node 1: node 2's call cannot join it there -> the same 409.
    r = on1.req("POST", "/calls/%s/legs/%s/conference" % (call2["id"], d_leg), 409,
                json={"name": "room"})
    assert r.json() == ON_ANOTHER_NODE, r.text
    # 201 leaves through node 2: 201 and 202 hear each other again.
    on2.req("DELETE", conf, 204)
    on2.req("DELETE", conf, 409)
    two_way(A, B, F_A, F_B, artifacts, "left-room")
    assert "DISCONNECTED" not in D.states(call=c2)

    A.hangup(call=c1)
    D.hangup(call=c2)
    n1.wait_metric("hookflash_active_calls", 0)
    n2.wait_metric("hookflash_active_calls", 0)
