"""RingCentral `supervise` (mode Listen) and `parties/bring-in` (issue 15 on issue 14's
supervision and added parties), over plain HTTP as ringcentral-call-control sends them and
through the SDK where it has the call (bring-in by the agent 201), proven at pjsua2 phones each
playing its own tone (201 agent, 202 customer, 203 supervisor / brought-in party):
- supervise (session form, agent by extension number): 203's phone is dialled, hears both
  parties, neither hears it; the session lists the supervisor's party (owner 203); when 203
  hangs up the call is back on its relay (metrics) with audio both ways;
- supervise (party form) with the SDK's body names (`deviceId`);
- bring-in through ringcentral-call-control `bringInParty`: 203 is heard by both, hears both,
  is one of the session's parties and is notified on a WebHook subscription as it joins and
  leaves; brought in again and removed with `DELETE .../parties/{pid}`;
- bring-in in RingCentral's own form ({sessionId, partyId} of another session of 201's):
  203's party of session 2 is heard in session 1 and hears both of its parties;
- errors in RingCentral's shape: bad mode / device / agent 400, unknown session 404, a session
  that is not connected 409.
"""
import os

import pytest

from api_support import Native, registered
from checks import wait_until
from conftest import F_A, F_B, F_C
from rc_support import ACME_CLIENT, Rc, assert_rc_error, cc, rc_available, token
from test_conference import hears
from test_conference_calls import record_all
from test_ringcentral_subscriptions import receiver  # noqa: F401 (the fixture)

pytestmark = [
    pytest.mark.server,
    pytest.mark.skipif(
        not rc_available() and os.environ.get("CI") != "true",
        reason="tests/node not installed (scripts/test.sh runs npm ci)",
    ),
]

EXTRA = [("203", "secret203", "Carol")]
FREQ = {"201": F_A, "202": F_B, "203": F_C}
S = "/account/~/telephony/sessions/%s"


def rc_as(server, ext, password):
    t = token(server, ACME_CLIENT, grant_type="password", username=ext, password=password)
    return Rc(server, ext, access_token=t["access_token"])


def setup(server_factory, phones, tones, answer_delay_ms=0):
    server = server_factory(extra_users=EXTRA)
    ph = {}
    for name, ext in (("A", "201"), ("B", "202"), ("C", "203")):
        p = registered(phones, server, name, ext)
        p.play(tones[FREQ[ext]])
        p.auto_answer(200, delay_ms=answer_delay_ms if ext == "202" else 0)
        ph[ext] = p
    return server, ph


def joined(api, call_id, n=3):
    def check():
        ps = api.req("GET", "/calls/%s/parties" % call_id, 200).json()["participants"]
        return ps if len(ps) == n and all(p["state"] == "joined" for p in ps) else None
    return wait_until(check, timeout=15, what="%d joined in the session's mixer" % n)


def back_on_relay(server, ph, artifacts, tag):
    server.wait_metric("hookflash_calls_on_mixer", 0)
    assert server.metrics().value("hookflash_rtp_bridges_active") == 1
    rec = record_all({"201": ph["201"], "202": ph["202"]}, artifacts, tag, seconds=3.0)
    hears(rec["201"], [F_B], [F_A, F_C], 0.8, 2.8, "201 back on the relay (%s)" % tag)
    hears(rec["202"], [F_A], [F_B, F_C], 0.8, 2.8, "202 back on the relay (%s)" % tag)


@pytest.mark.timeout(200)
def test_supervise_listen_is_heard_by_no_one_and_ends_back_on_the_relay(
        server_factory, phones, tones, artifacts):
    server, ph = setup(server_factory, phones, tones, answer_delay_ms=2500)
    api = Native(server)
    sup = rc_as(server, "203", "secret203")
    me = sup.req("GET", "/account/~/extension/~", 200).json()
    device = sup.req("GET", "/account/~/extension/~/device", 200).json()["records"][0]["id"]
    c = ph["201"].call(server.uri("202"))
    call = wait_until(lambda: (api.calls() or [None])[0], what="the call")
    body = {"mode": "Listen", "supervisorDeviceId": device, "agentExtensionNumber": "201"}
    # Not connected yet: 409.
    assert_rc_error(sup.req("POST", S % call["id"] + "/supervise", json=body), 409)
    ph["201"].wait_state("CONFIRMED", call=c, timeout=10)
    sid = call["id"]
    agent = Native.leg(api.one_call(), "201")["id"]

    # Errors in RingCentral's shape; nothing dialled.
    for bad, param in (({**body, "mode": "Barge"}, "mode"),
                       ({**body, "supervisorDeviceId": "123"}, "deviceId"),
                       ({"mode": "Listen", "agentExtensionNumber": "201"}, "supervisorDeviceId"),
                       ({**body, "agentExtensionNumber": "209"}, "agentExtensionNumber")):
        e = assert_rc_error(sup.req("POST", S % sid + "/supervise", json=bad), 400)
        assert e["errors"][0].get("parameterName") == param, (bad, e)
    assert_rc_error(sup.req("POST", S % "nope" + "/supervise", json=body), 404)
    assert_rc_error(sup.req("POST", S % sid + "/parties/nope/supervise", json=body), 404)
    assert server.metrics().value("hookflash_calls_on_mixer") == 0

    # Session form, agent by extension number: the supervisor's party.
    r = sup.req("POST", S % sid + "/supervise", 200, json=body)
    party = r.json()
    assert party["owner"]["extensionId"] == me["id"] and party["status"]["code"] in (
        "Proceeding", "Answered"), party
    ps = joined(api, sid)
    assert [p["supervision"] for p in ps if p["leg_id"] is None] == [
        {"mode": "listen", "agent_leg": agent}], ps
    server.wait_metric("hookflash_calls_on_mixer", 1)
    # The agent's view of the session lists the supervisor's party too.
    agent_rc = Rc(server, "201")
    parties = agent_rc.session(sid)["parties"]
    assert len(parties) == 3 and parties[2]["id"] == party["id"], parties
    assert parties[2]["status"]["code"] == "Answered", parties
    rec = record_all(ph, artifacts, "rc-listen")
    hears(rec["203"], [F_A, F_B], [F_C], 1.0, 3.2, "supervisor 203")
    hears(rec["201"], [F_B], [F_C, F_A], 1.0, 3.2, "201 with 203 listening")
    hears(rec["202"], [F_A], [F_C, F_B], 1.0, 3.2, "202 with 203 listening")
    # A second supervisor: 409.
    assert_rc_error(sup.req("POST", S % sid + "/supervise", json=body), 409)

    # The supervisor hangs up: back on the relay.
    ph["203"].hangup()
    back_on_relay(server, ph, artifacts, "rc-after-listen")
    assert len(agent_rc.session(sid)["parties"]) == 2

    # Party form, with ringcentral-call-control's body names.
    r = sup.req("POST", S % sid + "/parties/%s/supervise" % agent, 200,
                json={"mode": "Listen", "deviceId": device})
    ps = joined(api, sid)
    assert [p["supervision"]["agent_leg"] for p in ps if p["leg_id"] is None] == [agent], ps
    rec = record_all(ph, artifacts, "rc-listen-party")
    hears(rec["203"], [F_A, F_B], [F_C], 1.0, 3.2, "supervisor 203 (party form)")
    hears(rec["201"], [F_B], [F_C, F_A], 1.0, 3.2, "201 (party form)")
    ph["203"].hangup()
    back_on_relay(server, ph, artifacts, "rc-after-party-form")
    ph["201"].hangup()
    server.wait_metric("hookflash_active_calls", 0)


@pytest.mark.timeout(200)
def test_bring_in_through_the_sdk_is_heard_by_both_listed_and_notified(
        server_factory, phones, tones, artifacts, receiver):  # noqa: F811
    server, ph = setup(server_factory, phones, tones)
    api = Native(server)
    agent_rc = Rc(server, "201")
    sub = agent_rc.req("POST", "/subscription", 200, json={
        "eventFilters": ["/restapi/v1.0/account/~/telephony/sessions"],
        "deliveryMode": {"transportType": "WebHook", "address": receiver.url}}).json()
    assert sub["id"]
    c = ph["201"].call(server.uri("202"))
    ph["201"].wait_state("CONFIRMED", call=c, timeout=10)
    sid = api.one_call()["id"]
    # Bad bodies: 400 in RingCentral's shape; a session not the extension's: 404.
    for bad in ({}, {"partyId": "x"}, {"extensionNumber": "203", "partyId": "x"},
                {"telephonySessionId": sid, "partyId": "x"}):
        assert_rc_error(agent_rc.req("POST", S % sid + "/parties/bring-in", json=bad), 400)
    assert_rc_error(agent_rc.req("POST", S % "nope" + "/parties/bring-in",
                                 json={"extensionNumber": "203"}), 404)

    out = cc(server, "201", "bringIn", sid, {"extensionNumber": "203"})
    party = out["result"]
    assert party["to"] and party["id"], out
    joined(api, sid)
    server.wait_metric("hookflash_calls_on_mixer", 1)
    parties = agent_rc.session(sid)["parties"]
    assert len(parties) == 3 and parties[2]["id"] == party["id"], parties
    rec = record_all(ph, artifacts, "rc-bring-in")
    for e in FREQ:
        others = [FREQ[o] for o in FREQ if o != e]
        hears(rec[e], others, [FREQ[e]], 1.0, 3.2, "%s after bring-in" % e)

    # 203 hangs up: back on the relay, audio both ways.
    ph["203"].hangup()
    back_on_relay(server, ph, artifacts, "rc-after-bring-in")

    def party_statuses():
        seen = []
        for _, n in receiver.got:
            for p in n["body"].get("parties", []):
                if p["id"] == party["id"]:
                    seen.append(p["status"]["code"])
        return seen if "Disconnected" in seen else None
    seen = wait_until(party_statuses, timeout=10, what="the brought-in party's notifications")
    assert seen[0] == "Answered" and seen[-1] == "Disconnected", seen

    # Brought in again, then removed as the SDK's removeParty sends it: DELETE the party.
    party = cc(server, "201", "bringIn", sid, {"extensionNumber": "203"})["result"]
    joined(api, sid)
    agent_rc.req("DELETE", S % sid + "/parties/" + party["id"], 204)
    ph["203"].wait_state("DISCONNECTED", timeout=5)
    back_on_relay(server, ph, artifacts, "rc-after-removal")
    assert len(agent_rc.session(sid)["parties"]) == 2
    ph["201"].hangup()
    server.wait_metric("hookflash_active_calls", 0)


@pytest.mark.timeout(200)
def test_bring_in_of_another_sessions_party_mixes_it_into_the_session(
        server_factory, phones, tones, artifacts):
    """RingCentral's own bring-in form: 201 talks to 202 (session 1) and to 203 (session 2,
    from the same phone); bring-in {sessionId: 2, partyId: 203's party} puts 203 into session
    1: 202 hears 201 and 203, 203 hears 201 and 202. When 203 hangs up session 1 is back on
    its relay."""
    server, ph = setup(server_factory, phones, tones)
    api = Native(server)
    agent_rc = Rc(server, "201")
    c1 = ph["201"].call(server.uri("202"))
    ph["201"].wait_state("CONFIRMED", call=c1, timeout=10)
    s1 = api.one_call()["id"]
    c2 = ph["201"].call(server.uri("203"))
    ph["201"].wait_state("CONFIRMED", call=c2, timeout=10)
    second = [c for c in api.calls() if c["id"] != s1][0]
    s2, carol = second["id"], Native.leg(second, "203")["id"]
    # Another session's party the extension is not in: 404; the session itself: 400.
    assert_rc_error(agent_rc.req("POST", S % s1 + "/parties/bring-in",
                                 json={"sessionId": s2, "partyId": "nope"}), 404)
    assert_rc_error(agent_rc.req("POST", S % s1 + "/parties/bring-in",
                                 json={"sessionId": s1, "partyId": carol}), 400)
    party = agent_rc.req("POST", S % s1 + "/parties/bring-in", 200,
                         json={"sessionId": s2, "partyId": carol}).json()
    assert party["id"] == carol, party
    joined(api, s1)
    server.wait_metric("hookflash_calls_on_mixer", 1)
    assert [p["id"] for p in agent_rc.session(s1)["parties"]][2] == carol
    rec = record_all({"202": ph["202"], "203": ph["203"]}, artifacts, "rc-bring-in-party")
    hears(rec["202"], [F_A, F_C], [F_B], 1.0, 3.2, "202 after 203 was brought in")
    hears(rec["203"], [F_A, F_B], [F_C], 1.0, 3.2, "203 brought into session 1")
    ph["203"].hangup()
    server.wait_metric("hookflash_calls_on_mixer", 0)
    rec = record_all({"202": ph["202"]}, artifacts, "rc-bring-in-party-after", seconds=3.0)
    hears(rec["202"], [F_A], [F_B, F_C], 0.8, 2.8, "202 back on the relay")
    ph["201"].hangup(call=c1)
    server.wait_metric("hookflash_active_calls", 0)
