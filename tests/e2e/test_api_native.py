"""The native API (/api/v1) on real calls between two pjsua2 phones: list, hold/retrieve (call
and leg), mute/unmute, hangup (answered and ringing), proven by the phones' recordings; the
event stream (SSE) and its resume after a reconnect; the OpenAPI document."""
import json

import pytest
import requests

from api_support import LiveCall, Native
from checks import assert_no_tone
from conftest import F_A, F_B

pytestmark = pytest.mark.server


class Sse:
    """A minimal Server-Sent Events reader over requests."""

    def __init__(self, server, last_event_id=None, query="", key="hf_test_key_acme"):
        h = {"Authorization": "Bearer " + key, "Accept": "text/event-stream"}
        if last_event_id is not None:
            h["Last-Event-ID"] = str(last_event_id)
        self.r = requests.get(server.http + "/api/v1/events" + query, headers=h, stream=True,
                              timeout=(5, 10))
        assert self.r.status_code == 200, self.r.text
        self.lines = self.r.iter_lines(decode_unicode=True)

    def next(self):
        """(event, id, data) of the next event (comments skipped)."""
        event, eid, data = "message", None, ""
        for line in self.lines:
            if line is None:
                continue
            if line == "":
                if data:
                    return event, eid, json.loads(data)
                event, eid, data = "message", None, ""
                continue
            if line.startswith(":"):
                continue
            k, _, v = line.partition(":")
            v = v[1:] if v.startswith(" ") else v
            if k == "event":
                event = v
            elif k == "id":
                eid = int(v)
            elif k == "data":
                data += v
        raise AssertionError("event stream closed")

    def until(self, kind, limit=10):
        seen = []
        for _ in range(limit):
            e = self.next()
            seen.append(e)
            if e[0] == kind:
                return e, seen
        raise AssertionError("no %r event in %s" % (kind, seen))

    def close(self):
        self.r.close()


def test_native_api_controls_a_real_call(server, phones, tones, artifacts):
    api = Native(server)
    events = Sse(server)
    call = LiveCall(server, phones, tones, artifacts)
    c = api.one_call()
    assert c["state"] == "answered" and c["direction"] == "internal", c
    leg_a, leg_b = Native.leg(c, "201"), Native.leg(c, "202")
    assert (leg_a["role"], leg_b["role"]) == ("caller", "callee"), c
    new, _ = events.until("new")
    assert new[2]["call_id"] == c["id"] and new[1] == new[2]["seq"]
    answered, _ = events.until("answered")
    events.close()
    call.assert_two_way("before")

    # Hold the whole call.
    m = call.marks()
    held = api.req("POST", "/calls/%s/hold" % c["id"], 200).json()
    assert held["held"] and all(l["held"] for l in held["legs"]), held
    call.wait_media(lambda e: e["status"] == "remote_hold", m)
    call.assert_held("held")
    m = call.marks()
    api.req("POST", "/calls/%s/unhold" % c["id"], 200)
    call.wait_media(lambda e: e["active"], m)
    call.assert_two_way("retrieved")

    # Hold one leg (B): only B is re-INVITEd; neither hears the other meanwhile.
    mb = call.B.mark()
    after = api.req("POST", "/calls/%s/legs/%s/hold" % (c["id"], leg_b["id"]), 200).json()
    assert Native.leg(after, "202")["held"] and not Native.leg(after, "201")["held"], after
    call.B.wait_media(lambda e: e["status"] == "remote_hold", call=call.inc["call"], since=mb)
    # A's stream is not re-INVITEd: its recording starts with ~0.5 s buffered before the hold
    # (see LiveCall.assert_a_muted); judge A from 0.7 s on.
    ra, rb = call.record("leg_held", seconds=2.7)
    assert_no_tone(ra, F_B, t0=0.7, what="A while B is held")
    assert_no_tone(rb, F_A, what="held B")
    mb = call.B.mark()
    api.req("POST", "/calls/%s/legs/%s/unhold" % (c["id"], leg_b["id"]), 200)
    call.B.wait_media(lambda e: e["active"], call=call.inc["call"], since=mb)
    call.assert_two_way("leg_retrieved")

    # Mute A's leg: B stops hearing A; A still hears B. Unmute restores it.
    api.req("POST", "/calls/%s/legs/%s/mute" % (c["id"], leg_a["id"]), 200)
    call.assert_a_muted("muted")
    api.req("PATCH", "/calls/%s/legs/%s" % (c["id"], leg_a["id"]), 200, json={"muted": False})
    call.assert_two_way("unmuted")

    # Bad input changes nothing.
    r = api.req("PATCH", "/calls/%s/legs/%s" % (c["id"], leg_a["id"]), 400, json={"muted": "yes"})
    assert r.json()["error"]["code"] == "invalid_request"
    r = Native(server, "hf_test_key_beta").req("POST", "/calls/%s/hold" % c["id"], 404)
    assert r.json()["error"]["code"] == "not_found"
    assert not api.one_call()["held"]

    # Resume the event stream after the disconnect: everything since "answered", in order.
    events = Sse(server, last_event_id=answered[1])
    kinds = []
    seqs = []
    for _ in range(8):
        e = events.next()
        kinds.append(e[0])
        seqs.append(e[1])
        if e[0] == "unmuted":
            break
    events.close()
    assert kinds == ["held", "retrieved", "held", "retrieved", "muted", "unmuted"], kinds
    assert seqs == list(range(answered[1] + 1, answered[1] + 7)), seqs

    # Hang up B's leg: both phones end.
    events = Sse(server, last_event_id=seqs[-1])
    api.req("DELETE", "/calls/%s/legs/%s" % (c["id"], leg_b["id"]), 204)
    call.assert_both_ended()
    ended, _ = events.until("ended")
    assert ended[2]["cause"] == "api", ended
    events.close()
    api.req("POST", "/calls/%s/hold" % c["id"], 404)
    server.wait_metric("hookflash_active_calls", 0)


def test_native_hangup_of_a_ringing_call_stops_the_ringing_phone(server, phones, tones, artifacts):
    api = Native(server)
    call = LiveCall(server, phones, tones, artifacts, answer=False)
    c = api.one_call()
    assert c["state"] == "ringing", c
    r = api.req("POST", "/calls/%s/hold" % c["id"], 409)
    assert r.json()["error"]["code"] == "wrong_state"
    api.req("DELETE", "/calls/%s" % c["id"], 204)
    call.B.wait_state("DISCONNECTED", call=call.inc["call"], timeout=5)
    assert "CONFIRMED" not in call.B.states(call=call.inc["call"])
    call.A.wait_state("DISCONNECTED", call=call.c, timeout=5)
    server.wait_metric("hookflash_active_calls", 0)


def test_event_stream_survives_a_server_restart_with_a_gap(server, phones, tones, artifacts):
    """After a restart sequences start again: a client resuming with its old Last-Event-ID is
    told there is a gap, then gets live events."""
    call = LiveCall(server, phones, tones, artifacts)
    events = Sse(server, query="?after=0")
    new, _ = events.until("answered")
    events.close()
    call.A.hangup(call=call.c)
    call.assert_both_ended()
    server.restart()
    events = Sse(server, last_event_id=new[1] + 100)
    gap = events.next()
    assert gap[0] == "gap" and gap[2]["after"] == new[1] + 100, gap
    events.close()


def test_openapi_document_is_served_and_matches_the_routes(server):
    r = requests.get(server.http + "/api/v1/openapi.json", timeout=5)
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.")
    paths = doc["paths"]
    assert "/api/v1/calls/{call_id}/legs/{leg_id}/mute" in paths
    assert "/api/v1/events" in paths
    r = requests.get(server.http + "/api/v1/calls", timeout=5)
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
