"""Supervision and an added party on a connected call (issue 14): the call moves onto a mixer
of its own while a supervisor or a third party is in, and back to its relay when it leaves.

Independent pjsua2 phones, each playing its own tone (201: agent, 202: customer, 203:
supervisor / added party), prove it at the phones:
- listen: 203 hears 201 and 202; neither 201 nor 202 hears 203;
- coach (agent 201): only 201 hears 203; barge: both do; switched live with PATCH;
- the supervisor removed (DELETE): its phone gets BYE, 201 and 202 hear each other again and
  the metrics show the call back on the relay (hookflash_calls_on_mixer 0, one RTP bridge);
- add a party: 203 is heard by both and hears both; after it hangs up, the call is back on
  the relay with audio both ways;
- the routes' errors over plain HTTP in the native error shape (404 / 400 / 409).
"""
import pytest

from api_support import Native, registered
from checks import wait_until
from conftest import F_A, F_B, F_C
from test_conference import hears
from test_conference_calls import record_all

pytestmark = pytest.mark.server

EXTRA = [("203", "secret203", "Carol"), ("204", "secret204", "Dave")]
FREQ = {"201": F_A, "202": F_B, "203": F_C}


def three_phones(phones, server, tones, answer_delay_ms=0):
    ph = {}
    for name, ext in (("A", "201"), ("B", "202"), ("C", "203")):
        p = registered(phones, server, name, ext)
        p.play(tones[FREQ[ext]])
        p.auto_answer(200, delay_ms=answer_delay_ms if ext == "202" else 0)
        ph[ext] = p
    return ph


def all_joined(api, call_id, n=3):
    def check():
        ps = api.req("GET", "/calls/%s/parties" % call_id, 200).json()["participants"]
        return ps if len(ps) == n and all(p["state"] == "joined" for p in ps) else None
    return wait_until(check, timeout=15, what="%d joined in the call's mixer" % n)


def back_on_relay(server, ph, artifacts, tag):
    """The call's own mixer is gone and 201 and 202 hear each other (and not 203)."""
    server.wait_metric("hookflash_calls_on_mixer", 0)
    server.wait_metric("hookflash_conferences_active", 0)
    m = server.metrics()
    assert m.value("hookflash_rtp_bridges_active") == 1, m
    rec = record_all({"201": ph["201"], "202": ph["202"]}, artifacts, tag, seconds=3.0)
    hears(rec["201"], [F_B], [F_A, F_C], 0.8, 2.8, "201 back on the relay (%s)" % tag)
    hears(rec["202"], [F_A], [F_B, F_C], 0.8, 2.8, "202 back on the relay (%s)" % tag)


@pytest.mark.timeout(200)
def test_supervisor_listens_coaches_barges_and_leaves(server_factory, phones, tones, artifacts):
    server = server_factory(extra_users=EXTRA)
    api = Native(server)
    ph = three_phones(phones, server, tones, answer_delay_ms=2500)
    c = ph["201"].call(server.uri("202"))
    call = wait_until(lambda: (api.calls() or [None])[0], what="the call")
    # Not connected yet: 409 wrong_state, nothing dialled.
    r = api.req("POST", "/calls/%s/supervisor" % call["id"], 409,
                json={"user": "203", "mode": "listen"})
    assert r.json()["error"]["code"] == "wrong_state", r.text
    ph["201"].wait_state("CONFIRMED", call=c, timeout=10)
    call = api.one_call()
    agent = Native.leg(call, "201")["id"]
    path = "/calls/%s/supervisor" % call["id"]

    # Errors in the native shape; the call stays on its relay.
    for body in ({"user": "203", "mode": "spy"}, {"user": "203"}, {"mode": "listen"},
                 {"user": "203", "mode": "coach"},
                 {"user": "203", "mode": "coach", "agent_leg": "nope"},
                 {"user": "203", "mode": "listen", "x": 1}):
        r = api.req("POST", path, 400, json=body)
        assert r.json()["error"]["code"] == "invalid_request", (body, r.text)
    r = api.req("POST", "/calls/nope/supervisor", 404, json={"user": "203", "mode": "listen"})
    assert r.json()["error"]["code"] == "not_found", r.text
    for method, kw in (("PATCH", {"json": {"mode": "barge"}}), ("DELETE", {})):
        r = api.req(method, path, 404, **kw)
        assert r.json()["error"]["code"] == "not_found", r.text
    assert api.req("GET", "/calls/%s/parties" % call["id"], 200).json() == {"participants": []}
    assert server.metrics().value("hookflash_calls_on_mixer") == 0

    # 1. listen: 203 hears both parties, neither hears 203.
    r = api.req("POST", path, 201, json={"user": "203", "mode": "listen"})
    sup = r.json()
    assert sup["supervision"] == {"mode": "listen", "agent_leg": None}, sup
    assert sup["number"] == "203" and sup["leg_id"] is None, sup
    ps = all_joined(api, call["id"])
    assert {p["leg_id"] for p in ps} == {agent, Native.leg(call, "202")["id"], None}, ps
    server.wait_metric("hookflash_calls_on_mixer", 1)
    # Still the one call, both legs answered.
    again = api.req("GET", "/calls/" + call["id"], 200).json()
    assert [l["state"] for l in again["legs"]] == ["answered", "answered"], again
    r = api.req("POST", path, 409, json={"user": "203", "mode": "barge"})
    assert r.json()["error"]["code"] == "wrong_state", r.text
    rec = record_all(ph, artifacts, "listen")
    hears(rec["203"], [F_A, F_B], [F_C], 1.0, 3.2, "listening 203")
    hears(rec["201"], [F_B], [F_C, F_A], 1.0, 3.2, "201 with 203 listening")
    hears(rec["202"], [F_A], [F_C, F_B], 1.0, 3.2, "202 with 203 listening")

    # 2. coach (agent 201), live: only 201 hears 203.
    r = api.req("PATCH", path, 400, json={"mode": "whisper"})
    r = api.req("PATCH", path, 200, json={"mode": "coach", "agent_leg": agent})
    assert r.json()["supervision"] == {"mode": "coach", "agent_leg": agent}, r.text
    rec = record_all(ph, artifacts, "coach")
    hears(rec["201"], [F_B, F_C], [F_A], 1.0, 3.2, "coached 201")
    hears(rec["202"], [F_A], [F_C, F_B], 1.0, 3.2, "202 while 203 coaches 201")
    hears(rec["203"], [F_A, F_B], [F_C], 1.0, 3.2, "coaching 203")

    # 3. barge: both hear 203.
    api.req("PATCH", path, 200, json={"mode": "barge"})
    rec = record_all(ph, artifacts, "barge")
    hears(rec["201"], [F_B, F_C], [F_A], 1.0, 3.2, "201 with 203 barging")
    hears(rec["202"], [F_A, F_C], [F_B], 1.0, 3.2, "202 with 203 barging")
    hears(rec["203"], [F_A, F_B], [F_C], 1.0, 3.2, "barging 203")

    # 4. The supervisor is removed: BYE to 203, the call is back on its relay.
    api.req("DELETE", path, 204)
    ph["203"].wait_state("DISCONNECTED", timeout=5)
    back_on_relay(server, ph, artifacts, "after-supervisor")
    assert api.req("GET", "/calls/" + call["id"], 200).json()["state"] == "answered"
    api.req("DELETE", path, 404)
    ph["201"].hangup()
    server.wait_metric("hookflash_active_calls", 0)


@pytest.mark.timeout(150)
def test_a_third_party_is_heard_by_both_and_the_call_goes_back_to_the_relay(
        server_factory, phones, tones, artifacts):
    server = server_factory(extra_users=EXTRA)
    api = Native(server)
    ph = three_phones(phones, server, tones)
    c = ph["201"].call(server.uri("202"))
    ph["201"].wait_state("CONFIRMED", call=c, timeout=10)
    call = api.one_call()
    path = "/calls/%s/parties" % call["id"]
    for body in ({}, {"to": 5}, {"to": "203", "x": 1}):
        r = api.req("POST", path, 400, json=body)
        assert r.json()["error"]["code"] == "invalid_request", (body, r.text)
    # A user without a registered phone: 400, the call stays as it was.
    r = api.req("POST", path, 400, json={"to": "204"})
    assert r.json()["error"]["code"] == "invalid_request", r.text
    assert api.req("GET", path, 200).json() == {"participants": []}
    r = api.req("POST", "/calls/nope/parties", 404, json={"to": "203"})
    assert r.json()["error"]["code"] == "not_found", r.text
    api.req("DELETE", path + "/nope", 404)

    party = api.req("POST", path, 201, json={"to": "203"}).json()
    assert party["supervision"] is None and party["number"] == "203", party
    all_joined(api, call["id"])
    server.wait_metric("hookflash_calls_on_mixer", 1)
    # The call's legs are not parties to remove.
    api.req("DELETE", "%s/%s" % (path, Native.leg(call, "201")["id"]), 404)
    rec = record_all(ph, artifacts, "three")
    for e in FREQ:
        others = [FREQ[o] for o in FREQ if o != e]
        hears(rec[e], others, [FREQ[e]], 1.0, 3.2, "%s in the three-party call" % e)

    # 203 hangs up: back on the relay, audio both ways.
    ph["203"].hangup()
    back_on_relay(server, ph, artifacts, "after-party")
    assert api.req("GET", path, 200).json() == {"participants": []}

    # Again, then removed by the API.
    party = api.req("POST", path, 201, json={"to": "203"}).json()
    all_joined(api, call["id"])
    api.req("DELETE", "%s/%s" % (path, party["id"]), 204)
    ph["203"].wait_state("DISCONNECTED", timeout=5)
    back_on_relay(server, ph, artifacts, "after-removal")
    ph["202"].hangup()
    server.wait_metric("hookflash_active_calls", 0)
