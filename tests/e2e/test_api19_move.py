"""api19 / RestComm `MoveConnectedCallLeg=true` with `Url`: both legs of a connected call run
the new RCML (here `<Dial><Conference>`, written with the `twilio` package's VoiceResponse), so
both parties meet in the conference and still hear each other; a third phone dialled into the
conference is heard by both. Independent pjsua2 phones, each playing its own tone, are the
proof; the errors (409 for a call that is not connected, 400 for bad input, 404) are checked
over plain HTTP in RestComm's JSON and XML error shapes, and a refused move leaves the call as
it was (the phones still hear each other).
"""
import time

import pytest
import requests
from twilio.twiml.voice_response import Dial, VoiceResponse

from api_support import Native, registered
from checks import wait_until
from conftest import F_A, F_B, F_C
from test_api19_calls import API_KEY, BASE, Api19, account_sid, form
from test_app_runtime import hooks  # noqa: F401  (the fixture)
from test_conference import hears
from test_conference_calls import record_all

pytestmark = pytest.mark.server

EXTRA = [("203", "secret203", "Carol")]


def conference_rcml(room):
    r = VoiceResponse()
    d = Dial()
    d.conference(room, beep="false", start_conference_on_enter="true")
    r.append(d)
    return 200, str(r)


def joined(api, room, n):
    def check():
        r = api.req("GET", "/conferences/%s" % room)
        if r.status_code != 200:
            return None
        c = r.json()
        return c if len([x for x in c["participants"] if x["state"] == "joined"]) == n else None
    return wait_until(check, timeout=15, what="%d in %s" % (n, room))


def sids_of(api19):
    """(parent CallSid, child CallSid) of the one two-party call."""
    calls = api19.get("/Calls.json", 200).json()["calls"]
    parent = [c for c in calls if not c["parent_call_sid"]]
    child = [c for c in calls if c["parent_call_sid"]]
    assert len(parent) == 1 and len(child) == 1, calls
    assert child[0]["parent_call_sid"] == parent[0]["sid"], calls
    return parent[0]["sid"], child[0]["sid"]


@pytest.mark.timeout(150)
def test_move_connected_call_leg_puts_both_parties_in_a_conference(
        server_factory, phones, hooks, tones, artifacts):  # noqa: F811
    hook = hooks({"/conf.xml": conference_rcml("movedroom")})
    server = server_factory(extra_users=EXTRA)
    native = Native(server)
    api = Api19(server, account_sid(server))
    freq = {"201": F_A, "202": F_B, "203": F_C}
    ph = {}
    for name, ext in (("A", "201"), ("B", "202"), ("C", "203")):
        p = registered(phones, server, name, ext)
        p.play(tones[freq[ext]])
        p.auto_answer(200)
        ph[ext] = p
    c = ph["201"].call(server.uri("202"))
    ph["201"].wait_state("CONFIRMED", call=c, timeout=10)
    time.sleep(0.5)
    rec = record_all({"201": ph["201"], "202": ph["202"]}, artifacts, "before", seconds=2.5)
    hears(rec["201"], [F_B], [F_A, F_C], 0.5, 2.3, "201 hears 202 before the move")
    hears(rec["202"], [F_A], [F_B, F_C], 0.5, 2.3, "202 hears 201 before the move")
    parent, child = sids_of(api)

    # The move, named by the child leg's CallSid (either leg's works).
    r = api.post("/Calls/%s.json" % child, 200, Url=hook.url("/conf.xml"),
                 MoveConnectedCallLeg="true").json()
    assert r["sid"] == child and r["status"] == "in-progress", r
    reqs = wait_until(lambda: hook.got("/conf.xml") if len(hook.got("/conf.xml")) == 2 else None,
                      timeout=10, what="the RCML fetched for both legs")
    fields = sorted((form(q) for q in reqs), key=lambda f: f["CallSid"] != parent)
    assert [f["CallSid"] for f in fields] == [parent, child], fields
    assert all(f["CallStatus"] == "in-progress" for f in fields), fields
    conf = joined(native, "movedroom", 2)
    call = native.one_call()
    assert {p["leg_id"] for p in conf["participants"]} == {l["id"] for l in call["legs"]}, conf
    time.sleep(0.5)
    rec = record_all({"201": ph["201"], "202": ph["202"]}, artifacts, "moved", seconds=3.0)
    hears(rec["201"], [F_B], [F_A, F_C], 0.8, 2.8, "201 hears 202 in the conference")
    hears(rec["202"], [F_A], [F_B, F_C], 0.8, 2.8, "202 hears 201 in the conference")

    # A third phone dialled into the same conference: everyone hears the other two.
    native.req("POST", "/conferences/movedroom/participants", 201, json={"to": "203"})
    joined(native, "movedroom", 3)
    time.sleep(0.5)
    rec = record_all(ph, artifacts, "three", seconds=3.5)
    for e in freq:
        others = [freq[o] for o in freq if o != e]
        hears(rec[e], others, [], 1.0, 3.2, "%s hears the other two" % e)

    # A second move while both are in the conference: each leg's RCML is redirected.
    api.post("/Calls/%s.json" % parent, 200, Url=hook.url("/conf.xml"),
             MoveConnectedCallLeg="true")
    wait_until(lambda: len(hook.got("/conf.xml")) == 4, timeout=10, what="both redirected")
    time.sleep(0.3)
    joined(native, "movedroom", 3)
    time.sleep(0.5)
    rec = record_all({"201": ph["201"], "202": ph["202"]}, artifacts, "again", seconds=2.5)
    hears(rec["201"], [F_B, F_C], [], 0.5, 2.3, "201 back in the conference")
    hears(rec["202"], [F_A, F_C], [], 0.5, 2.3, "202 back in the conference")
    ph["203"].hangup()
    ph["201"].hangup(call=c)
    ph["202"].wait_state("DISCONNECTED", timeout=10)
    server.wait_metric("hookflash_active_calls", 0)
    server.wait_metric("hookflash_conferences_active", 0)


@pytest.mark.timeout(120)
def test_move_of_a_created_call_in_its_dial_moves_both_legs(
        server_factory, phones, hooks, tones, artifacts):  # noqa: F811
    """A call created here whose RCML `<Dial>`ed 202: the move redirects the running RCML of
    leg A (out of its Dial, without hanging up 202) and gives 202's leg the RCML too."""
    holder = {}

    def start(_body):
        r = VoiceResponse()
        d = Dial(timeout=10)
        d.client("202")
        r.append(d)
        return 200, str(r)

    hook = hooks({"/start.xml": start, "/conf.xml": conference_rcml("dialroom")})
    holder["h"] = hook
    server = server_factory()
    native = Native(server)
    api = Api19(server, account_sid(server))
    A = registered(phones, server, "A", "201")
    B = registered(phones, server, "B", "202")
    A.play(tones[F_A])
    B.play(tones[F_B])
    A.auto_answer(200)
    B.auto_answer(200)
    sid = api.post("/Calls.json", 200, From="201", To="client:201",
                   Url=hook.url("/start.xml")).json()["sid"]
    a_call = A.wait_incoming(timeout=10)["call"]
    b_call = B.wait_incoming(timeout=10)["call"]
    B.wait_state("CONFIRMED", call=b_call, timeout=10)
    time.sleep(0.5)
    api.post("/Calls/%s.json" % sid, 200, Url=hook.url("/conf.xml"), MoveConnectedCallLeg="true")
    reqs = wait_until(lambda: hook.got("/conf.xml") if len(hook.got("/conf.xml")) == 2 else None,
                      timeout=10, what="the RCML fetched for both legs")
    assert sid in {form(q)["CallSid"] for q in reqs}, [form(q) for q in reqs]
    joined(native, "dialroom", 2)
    time.sleep(0.5)
    rec = record_all({"201": A, "202": B}, artifacts, "moved", seconds=2.5)
    hears(rec["201"], [F_B], [F_A], 0.5, 2.3, "201 hears 202 in the conference")
    hears(rec["202"], [F_A], [F_B], 0.5, 2.3, "202 hears 201 in the conference")
    # 202 hangs up: the dialled party leaves, 201 stays in the conference (its own RCML).
    B.hangup(call=b_call)
    joined(native, "dialroom", 1)
    A.hangup(call=a_call)
    server.wait_metric("hookflash_active_calls", 0)
    server.wait_metric("hookflash_conferences_active", 0)


@pytest.mark.timeout(120)
def test_move_errors_in_restcomm_shape_and_the_call_unchanged(
        server_factory, phones, hooks, tones, artifacts):  # noqa: F811
    hook = hooks({"/conf.xml": conference_rcml("errroom")})
    server = server_factory(extra_users=EXTRA)
    ac = account_sid(server)
    api = Api19(server, ac)
    A = registered(phones, server, "A", "201")
    B = registered(phones, server, "B", "202")
    C = registered(phones, server, "C", "203")
    A.play(tones[F_A])
    B.play(tones[F_B])
    B.auto_answer(200)

    # A ringing call (203 does not answer): 409, JSON and XML shapes; it keeps ringing.
    ring = A.call(server.uri("203"))
    C.wait_incoming(timeout=10)
    A.wait_state("EARLY", call=ring, timeout=10)
    calls = api.get("/Calls.json", 200).json()["calls"]
    ringing = [x["sid"] for x in calls if x["status"] == "ringing"]
    assert ringing, calls
    r = api.post("/Calls/%s.json" % ringing[0], 409, Url=hook.url("/conf.xml"),
                 MoveConnectedCallLeg="true").json()
    assert r["status"] == 409 and r["code"] == 21220 and "connected" in r["message"], r
    x = requests.post("%s%s/Accounts/%s/Calls/%s" % (server.http, BASE, ac, ringing[0]),
                      data={"Url": hook.url("/conf.xml"), "MoveConnectedCallLeg": "true"},
                      auth=(ac, API_KEY), timeout=10)
    assert x.status_code == 409 and "<RestException>" in x.text and "<Code>21220</Code>" in x.text, \
        x.text
    assert hook.got("/conf.xml") == [], "nothing fetched for a refused move"
    A.hangup(call=ring)
    A.wait_state("DISCONNECTED", call=ring, timeout=10)

    # A connected call: bad input is 400 and the call stays as it was.
    c = A.call(server.uri("202"))
    A.wait_state("CONFIRMED", call=c, timeout=10)
    calls = api.get("/Calls.json", 200).json()["calls"]
    sid = [x["sid"] for x in calls if not x["parent_call_sid"]][0]
    for bad in ({"MoveConnectedCallLeg": "true"},
                {"MoveConnectedCallLeg": "yes", "Url": hook.url("/conf.xml")},
                {"MoveConnectedCallLeg": "true", "Url": "/relative.xml"},
                {"MoveConnectedCallLeg": "true", "Url": hook.url("/conf.xml"), "Mute": "true"}):
        r = api.post("/Calls/%s.json" % sid, 400, **bad).json()
        assert r["status"] == 400 and r["message"], (bad, r)
    api.post("/Calls/CA%s.json" % ("0" * 32), 404, Url=hook.url("/conf.xml"),
             MoveConnectedCallLeg="true")
    assert hook.got("/conf.xml") == []
    time.sleep(0.3)
    rec = record_all({"201": A, "202": B}, artifacts, "unchanged", seconds=2.5)
    hears(rec["201"], [F_B], [F_A], 0.5, 2.3, "201 still hears 202")
    hears(rec["202"], [F_A], [F_B], 0.5, 2.3, "202 still hears 201")
    A.hangup(call=c)
    server.wait_metric("hookflash_active_calls", 0)
