"""Two hookflash nodes sharing PostgreSQL and NATS (issue 18, the bus): a call between a phone
registered with node 1 and a phone registered with node 2, with tones both ways; hold, mute and
hangup sent to the node that does NOT own the call (native API and the sipgate SDK) take effect
at the phones; one SSE client sees the other node's call events in the account's one sequence
and resumes on the other node with Last-Event-ID, getting exactly what it missed (compared with
a client that stayed connected); a command forwarded to a node that does not answer gets the
bounded 504, to a node that is gone the 503, each in the dialect's error shape.

twonode.py starts nats-server (Debian's, JetStream on) and the two nodes; phones register
directly with a node (the Kamailio front is tests/e2e/kamailio_front.py).
"""
import os
import threading
import time

import pytest
import requests

from api_support import LiveCall, Native, node_available, registered, sdk, sipgate_login
from checks import assert_anchored, assert_hears, assert_no_tone, sip_user
from conftest import F_A, F_B
from test_api_native import Sse
from twonode import TwoNodes, nats_available

pytestmark = [
    pytest.mark.server,
    pytest.mark.skipif(not nats_available(), reason="nats-server not installed (scripts/test.sh)"),
]


@pytest.fixture
def cluster(hookflash_bin, tmp_path, artifacts, pg_cluster):
    c = TwoNodes(hookflash_bin, str(tmp_path), artifacts, pg_cluster)
    yield c
    c.close()


class CrossCall(LiveCall):
    """`caller` (registered with `via`) calls `callee_ext` through `via`, which owns the call;
    the caller plays F_A, the callee F_B (LiveCall's checks: A = caller, B = callee)."""

    def __init__(self, via, caller, callee, callee_ext, caller_ext, tones, artifacts):
        self.server = via
        self.artifacts = artifacts
        self.A, self.B = caller, callee
        self.A.play(tones[F_A])
        self.B.play(tones[F_B])
        self.B.auto_answer(200)
        self.c = self.A.call(via.uri(callee_ext))
        self.inc = self.B.wait_incoming(timeout=10)
        assert sip_user(self.inc["from"]) == caller_ext, self.inc
        self.A.wait_state("CONFIRMED", call=self.c, timeout=10)
        self.B.wait_state("CONFIRMED", call=self.inc["call"])
        assert_anchored(self.A.wait_media(lambda e: e["active"], call=self.c), via)
        assert_anchored(self.B.wait_media(lambda e: e["active"], call=self.inc["call"]), via)
        self.n = 0

    def assert_b_muted(self, name):
        # As LiveCall.assert_a_muted, the other way round (see there for the 0.7 s).
        ra, rb = self.record(name, seconds=2.7)
        assert_no_tone(ra, F_B, t0=0.7, what="%s: A must not hear muted B" % name)
        assert_hears(rb, F_A, F_B, t0=0.2, what="%s: B still hears A" % name)


def wait_listed(api, call_id=None, timeout=5):
    """The account's calls as `api`'s node lists them, once `call_id` (or any call) is there."""
    deadline = time.monotonic() + timeout
    while True:
        calls = api.calls()
        if any(call_id is None or c["id"] == call_id for c in calls):
            return calls
        assert time.monotonic() < deadline, "call %s never listed: %s" % (call_id, calls)
        time.sleep(0.1)


def test_native_commands_to_the_other_node_reach_the_phones(cluster, phones, tones, artifacts,
                                                            pg_cluster):
    n1, n2 = cluster.node1, cluster.node2
    A = registered(phones, n1, "A", "201")
    B = registered(phones, n2, "B", "202")
    # 201 on node 1 calls 202, whose phone registered with node 2: node 1 finds the binding in
    # the shared store and owns the call.
    call = CrossCall(n1, A, B, "202", "201", tones, artifacts)
    call.assert_two_way("cross-node")
    on1, on2 = Native(n1), Native(n2)
    owned = on1.one_call()
    # Node 2 lists node 1's call, with the same legs.
    listed = [c for c in wait_listed(on2, owned["id"]) if c["id"] == owned["id"]][0]
    assert [l["id"] for l in listed["legs"]] == [l["id"] for l in owned["legs"]], (owned, listed)
    call_id = owned["id"]
    leg_a = Native.leg(owned, "201")["id"]

    # Hold through node 2: node 1 re-INVITEs both phones, node 2 answers with node 1's result.
    m = call.marks()
    r = on2.req("POST", "/calls/%s/hold" % call_id, 200).json()
    assert all(l["held"] for l in r["legs"]), r
    call.wait_media(lambda e: e["status"] == "remote_hold", m)
    call.assert_held("held-via-node2")
    m = call.marks()
    r = on2.req("POST", "/calls/%s/unhold" % call_id, 200).json()
    assert not any(l["held"] for l in r["legs"]), r
    call.wait_media(lambda e: e["active"], m)
    call.assert_two_way("retrieved-via-node2")

    # Mute A's leg through node 2: B stops hearing A; A still hears B.
    r = on2.req("POST", "/calls/%s/legs/%s/mute" % (call_id, leg_a), 200).json()
    assert Native.leg(r, "201")["muted"] is True, r
    call.assert_a_muted("muted-via-node2")
    on2.req("POST", "/calls/%s/legs/%s/unmute" % (call_id, leg_a), 200)
    call.assert_two_way("unmuted-via-node2")

    # An unknown leg: node 1's 404, in the native shape, through node 2.
    r = on2.req("POST", "/calls/%s/legs/nope/mute" % call_id, 404).json()
    assert r["error"]["code"] == "not_found", r

    # Hangup through node 2 ends both phones.
    on2.req("DELETE", "/calls/%s" % call_id, 204)
    call.assert_both_ended()
    n1.wait_metric("hookflash_active_calls", 0)
    deadline = time.monotonic() + 5
    while on2.calls() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert on2.calls() == [] and on1.calls() == []
    # The record says which node owned the call.
    rows = pg_cluster.psql("SELECT node_id FROM call_records WHERE id = '%s'" % call_id,
                           cluster.database_url)
    assert rows == [["node1"]], rows


class Collector:
    """An SSE client that stays connected, collecting (event, id, call_id) in a thread."""

    def __init__(self, server, after):
        self.sse = Sse(server, last_event_id=after)
        self.events = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            while True:
                e, eid, data = self.sse.next()
                with self.lock:
                    self.events.append((e, eid, data.get("call_id")))
        except Exception:
            pass

    def wait(self, pred, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                hits = [e for e in self.events if pred(e)]
                if hits:
                    return hits[-1]
            time.sleep(0.05)
        raise AssertionError("no such event in %s" % self.events)

    def snapshot(self):
        with self.lock:
            return list(self.events)

    def close(self):
        self.sse.close()


@pytest.mark.skipif(not node_available() and os.environ.get("CI") != "true",
                    reason="tests/node not installed (scripts/test.sh runs npm ci)")
def test_sipgate_sdk_on_the_other_node_and_one_event_sequence_resumed_across_nodes(
        cluster, phones, tones, artifacts):
    n1, n2 = cluster.node1, cluster.node2
    A = registered(phones, n1, "A", "201")
    B = registered(phones, n2, "B", "202")
    # Both clients on node 1 start from the beginning of the account's sequence.
    reference = Collector(n1, 0)
    resuming = Sse(n1, last_event_id=0)

    # 202 (node 2) calls 201 (node 1) through node 2: node 2 owns the call.
    call = CrossCall(n2, B, A, "201", "202", tones, artifacts)
    call.assert_two_way("cross-node")
    answered = reference.wait(lambda e: e[0] == "answered")
    call_id = answered[2]
    assert Native(n2).one_call()["id"] == call_id
    # The resuming client (on node 1) reads node 2's events up to the answer, then leaves.
    seen = []
    while True:
        e, eid, data = resuming.next()
        seen.append((e, eid, data.get("call_id")))
        if e == "answered":
            break
    resuming.close()
    last = seen[-1][1]
    assert [s[1] for s in seen] == list(range(seen[0][1], last + 1)), seen

    # The sipgate SDK on node 1, as 201 (a party): hold, retrieve, mute, hang up; node 2 does it.
    creds = {"token": sipgate_login(n1, "201@acme.local", "secret201")}
    listed = sdk(n1, creds, "list")["result"]
    assert [c["callId"] for c in listed] == [call_id], listed
    m = call.marks()
    sdk(n1, creds, "hold", call_id, True)
    call.wait_media(lambda e: e["status"] == "remote_hold", m)
    call.assert_held("held-by-sdk-on-node1")
    m = call.marks()
    sdk(n1, creds, "hold", call_id, False)
    call.wait_media(lambda e: e["active"], m)
    call.assert_two_way("retrieved-by-sdk-on-node1")
    # 201 mutes its own participant: the callee here (B of CrossCall).
    sdk(n1, creds, "mute", call_id, True)
    call.assert_b_muted("muted-by-sdk-on-node1")
    sdk(n1, creds, "mute", call_id, False)
    sdk(n1, creds, "hangup", call_id)
    call.assert_both_ended()
    ended = reference.wait(lambda e: e[0] == "ended" and e[2] == call_id)

    # Resume on node 2 with node 1's Last-Event-ID: exactly the events the client missed, the
    # same ids and kinds the client that stayed connected saw.
    missed = [e for e in reference.snapshot() if e[1] > last and e[1] <= ended[1]]
    kinds = [e[0] for e in missed]
    for k in ("held", "retrieved", "muted", "unmuted", "ended"):
        assert k in kinds, kinds
    resumed = Sse(n2, last_event_id=last)
    got = [resumed.next() for _ in missed]
    resumed.close()
    reference.close()
    assert [(e, eid, d.get("call_id")) for e, eid, d in got] == missed, (got, missed)

    # Too old for the backlog: a gap event (the backlog holds 1000 per account; a sequence
    # number ahead of the cluster's is the other way to be out of range).
    ahead = Sse(n2, last_event_id=ended[1] + 100)
    gap = ahead.next()
    ahead.close()
    assert gap[0] == "gap", gap


def test_a_command_for_a_node_that_does_not_answer_gets_the_bounded_error(cluster, phones, tones,
                                                                        artifacts):
    n1, n2 = cluster.node1, cluster.node2
    A = registered(phones, n1, "A", "201")
    B = registered(phones, n2, "B", "202")
    CrossCall(n2, B, A, "201", "202", tones, artifacts)
    on1 = Native(n1)
    call_id = wait_listed(on1)[0]["id"]
    token = sipgate_login(n1, "201@acme.local", "secret201")

    # Node 2 frozen (SIGSTOP): still connected to NATS, answers nothing -> 504 after the bound.
    n2.pause()
    try:
        r = on1.req("POST", "/calls/%s/hold" % call_id, 504).json()
        assert r["error"]["code"] == "node_timeout" and "node2" in r["error"]["message"], r
        r = requests.put(n1.http + "/v2/calls/%s/hold" % call_id, json={"value": True},
                         headers={"Authorization": "Bearer " + token}, timeout=15)
        assert r.status_code == 504, r.text
        body = r.json()
        assert body["status"] == 504 and body["error"] == "Gateway Timeout", body
    finally:
        n2.resume()

    # Node 2 gone (kill -9): nobody answers on its subject -> 503 at once. NATS drops the dead
    # node's subscription when it sees the connection close, a moment after the kill: a
    # request in that moment still waits out the bound (504), so ask until the 503.
    n2.kill()
    for _ in range(3):
        r = on1.req("DELETE", "/calls/%s" % call_id)
        if r.status_code != 504:
            break
    assert r.status_code == 503, r.text
    r = r.json()
    assert r["error"]["code"] == "node_unavailable" and "node2" in r["error"]["message"], r
    r = requests.put(n1.http + "/v2/calls/%s/muted" % call_id, json={"value": True},
                     headers={"Authorization": "Bearer " + token}, timeout=15)
    assert r.status_code == 503 and r.json()["error"] == "Service Unavailable", r.text


def test_a_stall_of_both_nodes_declares_neither_dead(hookflash_bin, tmp_path, artifacts,
                                                     pg_cluster, phones, tones):
    """A stalled machine (or a wall-clock step) makes every other node's last heartbeat look
    older than node_dead_after_secs at the first tick back. Node 1 comes back first: it must
    not take node 2 for dead (that closed node 2's running calls with node_failure records and
    made node 1 forget them: its commands for them answered 404)."""
    c = TwoNodes(hookflash_bin, str(tmp_path), artifacts, pg_cluster,
                 liveness={"heartbeat_secs": 1, "node_dead_after_secs": 4})
    try:
        n1, n2 = c.node1, c.node2
        A = registered(phones, n1, "A", "201")
        B = registered(phones, n2, "B", "202")
        # 202 calls 201 through node 2, which owns the call.
        call = CrossCall(n2, B, A, "201", "202", tones, artifacts)
        on1 = Native(n1)
        call_id = wait_listed(on1)[0]["id"]

        # Both frozen for 6 s (> 4 s); node 1 resumes first, node 2 half a second later.
        n2.pause()
        n1.pause()
        try:
            time.sleep(6)
        finally:
            n1.resume()
            time.sleep(0.5)
            n2.resume()
        time.sleep(3)  # three of node 1's ticks: node 2 beats again in the first

        rows = pg_cluster.psql("SELECT count(*) FROM call_records WHERE end_cause = 'node_failure'",
                               c.database_url)
        assert rows == [["0"]], rows
        rows = pg_cluster.psql("SELECT node_id FROM live_calls", c.database_url)
        assert rows == [["node2"]], rows
        for n in (n1, n2):
            assert n.metrics().value("hookflash_nodes_declared_dead_total") == 0, n.node_id
        # Node 1 still lists and forwards to node 2's call: hold through node 1 reaches the
        # phones, and the call is two-way again after the retrieve.
        assert call_id in [x["id"] for x in on1.calls()]
        m = call.marks()
        r = on1.req("POST", "/calls/%s/hold" % call_id, 200).json()
        assert all(l["held"] for l in r["legs"]), r
        call.wait_media(lambda e: e["status"] == "remote_hold", m)
        m = call.marks()
        on1.req("POST", "/calls/%s/unhold" % call_id, 200)
        call.wait_media(lambda e: e["active"], m)
        call.assert_two_way("after-the-stall")
    finally:
        c.close()
