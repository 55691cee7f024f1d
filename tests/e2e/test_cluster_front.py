"""Two nodes behind Kamailio (issue 18: the SIP front and node failure).

kamailio_front.FrontCluster: PostgreSQL, nodes n1 and n2, Kamailio running
deploy/kamailio/kamailio.cfg in front. Which node a request reached is read from Kamailio's
log, the nodes' state at the front from Kamailio's own dispatcher list (kamcmd), rows from
PostgreSQL with psql, audio from what the pjsua2 phones recorded.

- pjsua2 phones register through the front and land on both nodes; the registrar stored the
  phones' own addresses (from the front's header), not the front's; a phone registered via
  one node calls a phone registered via the other, tones both ways; the record is in
  PostgreSQL.
- A draining node (SIGTERM): /readyz 503, its OPTIONS answer 503 so the front takes it out,
  a new call lands on the other node and connects, its own call keeps its audio and ends
  normally, then the node exits.
- kill -9 of a node during SIPp load through the front: once the front has taken it out,
  every new call succeeds on the survivor; the killed node's calls still open in the shared
  store get the end cause node_failure within node_dead_after_secs + slack, ended at its last
  heartbeat; nothing stays marked live; every call that reached a node has exactly one record.
"""
import os
import re
import signal
import time

import pytest
import requests

import rawsip
import sipp
from api_support import (LiveCall, Native, assert_music_on_hold, node_available, sdk,
                         sipgate_login)
from checks import (assert_anchored, assert_hears, assert_no_tone, sip_user, split_hostport,
                    wait_until)
from conftest import F_A, F_B
from hfserver import free_port
from kamailio_front import DEAD_AFTER_SECS, HEARTBEAT_SECS, PROBE_SECS, FrontCluster
from test_cluster_bus import Collector
from twonode import nats_available

pytestmark = [pytest.mark.server, pytest.mark.timeout(300)]

EXTRA_USERS = [("203", "secret203", "C"), ("204", "secret204", "D")]


@pytest.fixture
def cluster_factory(hookflash_bin, tmp_path, artifacts, pg_cluster):
    made = []

    def make(server_kw=None, **kw):
        skw = {"extra_users": EXTRA_USERS}
        skw.update(server_kw or {})
        c = FrontCluster(hookflash_bin, str(tmp_path / ("c%d" % len(made))), artifacts,
                         pg_cluster, server_kw=skw, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def node_of_register(cluster, ext):
    """The node Kamailio sent the latest REGISTER of ``ext`` to."""
    regs = [r for r in cluster.routed("REGISTER") if r[1] == ext]
    assert regs, "no REGISTER of %s at the front" % ext
    return regs[-1][2]


def register(cluster, phones, name, ext):
    p = phones(name)
    ev = p.register(cluster.front, ext, expires=3600)
    assert ev["code"] == 200, "%s (%s) REGISTER via the front: %s" % (name, ext, ev)
    return p


def register_on(cluster, phones, name, ext, node, tries=10):
    """A phone for ``ext`` whose registration the front sent to ``node`` (the front hashes the
    Call-ID, random per phone: a new phone until one lands there)."""
    for i in range(tries):
        p = register(cluster, phones, "%s%d" % (name, i), ext)
        if node_of_register(cluster, ext) is node:
            return p
        p.close()
    raise AssertionError("%s never registered via %s in %d tries" % (ext, node.node_id, tries))


def node_of_call(cluster, caller):
    invites = [r for r in cluster.routed("INVITE") if r[1] == caller]
    assert invites, "no INVITE from %s at the front" % caller
    return invites[-1][2]


def anchored(media_ev, cluster):
    """The phone sends its RTP to one of the nodes (media anchored there, not at the front)."""
    host, port = split_hostport(media_ev.get("remote_rtp"))
    assert host == "127.0.0.1" and any(n.rtp_min <= port <= n.rtp_max for n in cluster.nodes), (
        "phone sends RTP to %r, not into a node's RTP range" % media_ev.get("remote_rtp"))


def talk(A, B, callee_uri, tones, artifacts, tag, cluster, seconds=3.0, fa=F_A, fb=F_B):
    """A calls B through the front; both hear each other. Returns (A's call, B's call)."""
    A.play(tones[fa])
    B.play(tones[fb])
    B.auto_answer(200, delay_ms=200)
    c = A.call(callee_uri)
    inc = B.wait_incoming(timeout=15)
    A.wait_state("CONFIRMED", call=c, timeout=15)
    B.wait_state("CONFIRMED", call=inc["call"], timeout=10)
    anchored(A.wait_media(lambda e: e["active"], call=c), cluster)
    anchored(B.wait_media(lambda e: e["active"], call=inc["call"]), cluster)
    check_audio(A, B, artifacts, tag, seconds, fa, fb)
    return c, inc


def check_audio(A, B, artifacts, tag, seconds, fa=F_A, fb=F_B):
    ra = os.path.join(artifacts, "A-%s.wav" % tag)
    rb = os.path.join(artifacts, "B-%s.wav" % tag)
    A.record(ra)
    B.record(rb)
    time.sleep(seconds)
    A.stop_record()
    B.stop_record()
    assert_hears(ra, fb, fa, what="caller (%s)" % tag)
    assert_hears(rb, fa, fb, what="callee (%s)" % tag)


def records(cluster, where="TRUE"):
    return cluster.pg.psql(
        "SELECT id, end_cause, from_uri, to_uri, ended_at FROM call_records WHERE %s "
        "ORDER BY started_at" % where, url=cluster.db)


def test_phones_register_via_both_nodes_and_call_across_them(cluster_factory, phones, tones,
                                                             artifacts):
    c = cluster_factory()
    n1, n2 = c.nodes
    A = register(c, phones, "A", "201")
    a_node = node_of_register(c, "201")
    other = n2 if a_node is n1 else n1
    B = register_on(c, phones, "B", "202", other)
    # Both nodes took a registration; the shared store holds both, each with the phone's own
    # address (the front's header), not the front's.
    rows = c.pg.psql(
        "SELECT u.extension, r.source, r.transport FROM registrations r "
        "JOIN users u ON u.id = r.user_id WHERE u.extension IN ('201', '202')", url=c.db)
    got = {ext: (src, tr) for ext, src, tr in rows}
    assert got.get("201") == (A.local, "udp"), (got, A.local)
    assert got.get("202") == (B.local, "udp"), (got, B.local)
    assert not any(src.endswith(":%d" % c.front_port) for src, _ in got.values()), got

    # 201 (registered via one node) calls 202 (registered via the other) through the front.
    _, _ = talk(A, B, c.front.uri("202"), tones, artifacts, "across", c)
    call_node = node_of_call(c, "201")
    assert call_node in (n1, n2)
    A.hangup()
    wait_until(lambda: [r for r in records(c) if r[1] == "normal"], timeout=15,
               what="the call's record in PostgreSQL")
    recs = records(c)
    assert len(recs) == 1 and (recs[0][2], recs[0][3]) == ("201", "202"), recs
    # The phone the call's node did not register was still reached (shared registrations).
    reg_nodes = {"201": a_node, "202": other}
    assert any(n is not call_node for n in reg_nodes.values())


ACME_DID = "+4930123456"  # -> 201
OUTSIDE = "+4969777777"


def trunk_invite(port, front_header=None, local_port=0):
    """An INVITE for acme's DID as the carrier sends it, to ``port``; returns the final status."""
    cl = rawsip.Client(port, local_port=local_port)
    try:
        headers = ["X-Hookflash-Front-Source: " + front_header] if front_header else []
        req = cl.request("INVITE", "sip:%s@127.0.0.1:%d" % (ACME_DID, port),
                         "sip:%s@127.0.0.1" % OUTSIDE, "sip:%s@127.0.0.1" % ACME_DID,
                         headers=headers, body=rawsip.Peer.SDP.format(ip="127.0.0.1", port=40000),
                         content_type="application/sdp", contact="<sip:%s@%s>" % (OUTSIDE, cl.via))
        cl.send(req.data)
        resp = cl.final(10.0, "INVITE")
        if resp is not None:
            cl.send(cl.ack_for(req, resp))
        return resp.status if resp is not None else None
    finally:
        cl.close()


def test_the_front_header_is_believed_from_the_front_only(cluster_factory, phones):
    c = cluster_factory()
    n1 = c.nodes[0]
    A = register(c, phones, "A", "201")
    A.auto_answer(486)
    forged = "udp 127.0.0.1:%d" % n1.trunk_port
    # Claiming the trunk's address in the header, sent straight to a node: a stranger (407).
    assert trunk_invite(n1.sip_port, forged) == 407
    # The same through the front: Kamailio replaces the header with the real source: 407.
    assert trunk_invite(c.front_port, forged) == 407
    time.sleep(1.0)
    assert not A.find("incoming"), A.find("incoming")
    # Control: the carrier's real address, through the front, is the trunk: the DID owner
    # rings (and answers 486, which comes back).
    assert trunk_invite(c.front_port, local_port=n1.trunk_port) == 486
    inc = A.wait_incoming(timeout=5)
    assert OUTSIDE.lstrip("+") in inc["from"], inc


def test_a_draining_node_gets_no_new_calls_and_finishes_its_own(cluster_factory, phones, tones,
                                                                artifacts):
    c = cluster_factory(shutdown_grace_secs=60)
    A = register(c, phones, "A", "201")
    B = register(c, phones, "B", "202")
    C = register(c, phones, "C", "203")
    D = register(c, phones, "D", "204")
    c1, _ = talk(A, B, c.front.uri("202"), tones, artifacts, "first", c, seconds=2.0)
    x = node_of_call(c, "201")
    survivor = next(n for n in c.nodes if n is not x)

    x.proc.send_signal(signal.SIGTERM)
    # Not ready while it drains; the front's probe gets 503 and takes it out.
    wait_until(lambda: requests.get(x.http + "/readyz", timeout=3).status_code == 503,
               timeout=10, what="/readyz 503 on the draining node")
    c.wait_inactive(x, timeout=3 * PROBE_SECS + 5)
    assert x.alive(), "the draining node stopped with a call up:\n" + x.log_tail()

    # A new call goes to the other node and connects, tones both ways.
    before = len(c.routed("INVITE"))
    talk(C, D, c.front.uri("204"), tones, artifacts, "second", c, seconds=2.0)
    new = c.routed("INVITE")[before:]
    assert new and all(r[2] is survivor for r in new), [(r[0], r[1], r[2].node_id) for r in new]

    # The draining node's own call still has audio, and ends normally.
    check_audio(A, B, artifacts, "first-draining", 2.0)
    A.hangup(call=c1)
    C.hangup()
    x.proc.wait(20)
    assert x.proc.returncode == 0, x.log_tail()
    wait_until(lambda: len(records(c)) == 2, timeout=15, what="both records")
    assert {r[1] for r in records(c)} == {"normal"}, records(c)


def sipp_callee_and_caller(c, artifacts):
    """A SIPp callee registered as 105 through the front (RTP echo) and the caller's kwargs
    (202 with digest, calling 105, 3 s calls)."""
    front = "127.0.0.1:%d" % c.front_port
    uas_port = free_port()
    creds = dict(USER="105", PASSWORD=c.nodes[0].users["105"], REALM="acme.local", EXPIRES=3600)
    reg = sipp.run(artifacts, "register105", "register.xml", remote=front, local_port=uas_port,
                   subst=creds, calls=1, timeout_s=15)
    assert reg.rc == sipp.OK and reg.successful == 1, reg.summary()
    # Calls to 105 whose node dies never get their BYE: the UAS gives them up after 15 s.
    uas = sipp.Sipp(artifacts, "uas105", "uas_echo.xml", local_port=uas_port, calls=100000,
                    timeout_s=150, rtp_echo=True, extra=["-recv_timeout", "15000"])
    sipp.wait_listening(uas)
    uac_kw = dict(subst=dict(USER="202", PASSWORD=c.nodes[0].users["202"], REALM="acme.local",
                             CALLEE="105", PCAP=sipp.G711A_PCAP, HOLD_MS=3000),
                  timeout_s=60, extra=["-recv_timeout", "10000"])
    return front, uas, uac_kw


def test_a_new_call_fails_over_when_a_node_stops_answering(cluster_factory, artifacts):
    # SIPp 3.6 does MD5 digest only.
    c = cluster_factory(server_kw={"digest_algorithms": ["MD5"]})
    front, uas, uac_kw = sipp_callee_and_caller(c, artifacts)
    x = c.nodes[0]
    # x stops answering (SIGSTOP): calls the front sends there before a probe notices get no
    # answer for FRONT_NODE_TIMEOUT_MS and are sent to the other node.
    x.proc.send_signal(signal.SIGSTOP)
    try:
        before = c.kamailio_log()
        r = sipp.run(artifacts, "uac-failover", "uac_auth.xml", remote=front, calls=12, rate=12,
                     limit=12, **uac_kw)
        log = c.kamailio_log()[len(before):]
        c.wait_inactive(x, timeout=5)
    finally:
        x.proc.send_signal(signal.SIGCONT)
    assert r.rc == sipp.OK and r.successful == 12 and r.failed == 0, r.summary()
    timed_out = set(re.findall(r"did not answer INVITE \(Call-ID ([^)]*)\)", log))
    moved = set(re.findall(r"INVITE \(Call-ID ([^)]*)\) failed over", log))
    assert timed_out, "no call was sent to the stopped node (12 calls, hash over Call-ID)"
    assert timed_out <= moved, (timed_out, moved)
    # Answering again: the probes bring it back.
    c.wait_active([x], timeout=15)
    uas.stop()


def test_kill9_of_a_node_under_load(cluster_factory, artifacts):
    # SIPp 3.6 does MD5 digest only.
    c = cluster_factory(server_kw={"digest_algorithms": ["MD5"]})
    front, uas, uac_kw = sipp_callee_and_caller(c, artifacts)

    # Phase 1: load through the front; one node is killed while calls are up on both.
    load = sipp.Sipp(artifacts, "uac-load", "uac_auth.xml", remote=front, calls=80, rate=8,
                     limit=40, **uac_kw)
    wait_until(lambda: {r[2] for r in c.routed("INVITE")} >= set(c.nodes), timeout=20,
               what="INVITEs on both nodes")
    time.sleep(2.0)
    victim, survivor = c.nodes
    victim.kill()
    killed_at_ms = int(time.time() * 1000)
    c.wait_inactive(victim, timeout=PROBE_SECS + 10)
    first = load.wait()
    cut_rows = c.pg.psql("SELECT count(*) FROM live_calls WHERE node_id = 'n1'", url=c.db)

    # Phase 2: after the probe took it out, every new call succeeds on the survivor.
    before = len(c.routed("INVITE"))
    after = sipp.run(artifacts, "uac-after", "uac_auth.xml", remote=front, calls=30, rate=10,
                     limit=20, **uac_kw)
    assert after.rc == sipp.OK and after.successful == 30 and after.failed == 0, after.summary()
    new = c.routed("INVITE")[before:]
    assert new and all(r[2] is survivor for r in new), [(r[1], r[2].node_id) for r in new][:5]

    # The killed node's calls: closed by the survivor with node_failure, ended at the node's
    # last heartbeat, within node_dead_after_secs + slack of the kill.
    slack = HEARTBEAT_SECS + 10
    deadline = killed_at_ms / 1000.0 + DEAD_AFTER_SECS + slack
    wait_until(lambda: c.pg.psql("SELECT dead_since FROM nodes WHERE node_id = 'n1'",
                                 url=c.db)[0][0] != "",
               timeout=max(1.0, deadline - time.time()), what="n1 declared dead")
    failed = records(c, "end_cause = 'node_failure'")
    assert failed, "no node_failure records (live rows of n1 at the kill: %s)" % cut_rows
    last_seen = int(c.pg.psql("SELECT last_seen FROM nodes WHERE node_id = 'n1'", url=c.db)[0][0])
    assert last_seen <= killed_at_ms
    for _, _, frm, to, ended in failed:
        assert int(ended) <= killed_at_ms and (frm, to) == ("202", "105"), (frm, to, ended)
    assert c.pg.psql("SELECT count(*) FROM live_calls WHERE node_id = 'n1'",
                     url=c.db) == [["0"]]
    dead = c.pg.psql("SELECT count(*) FROM nodes WHERE dead_since IS NOT NULL", url=c.db)
    assert dead == [["1"]], dead
    # Every finished call is recorded: the successes of both phases each left a record
    # (normal; or node_failure if the node died before committing it).
    recs = records(c)
    ids = [r[0] for r in recs]
    assert len(ids) == len(set(ids))
    normal = [r for r in recs if r[1] == "normal"]
    assert len(normal) + len(failed) >= first.successful + after.successful, (
        len(normal), len(failed), first.summary(), after.summary())
    assert survivor.alive()
    uas.stop()


class FrontCall(LiveCall):
    """A (201, plays F_A) calls B (202, plays F_B) through the front; the node the front sent
    the INVITE to owns the call (`owner`), media anchored there; `other` is the other node."""

    def __init__(self, cluster, A, B, tones, artifacts):
        self.artifacts = artifacts
        self.A, self.B = A, B
        self.A.play(tones[F_A])
        self.B.play(tones[F_B])
        self.B.auto_answer(200)
        self.c = self.A.call(cluster.front.uri("202"))
        self.inc = self.B.wait_incoming(timeout=15)
        assert sip_user(self.inc["from"]) == "201", self.inc
        self.A.wait_state("CONFIRMED", call=self.c, timeout=15)
        self.B.wait_state("CONFIRMED", call=self.inc["call"], timeout=10)
        self.owner = node_of_call(cluster, "201")
        self.other = next(n for n in cluster.nodes if n is not self.owner)
        assert_anchored(self.A.wait_media(lambda e: e["active"], call=self.c), self.owner)
        assert_anchored(self.B.wait_media(lambda e: e["active"], call=self.inc["call"]),
                        self.owner)
        self.n = 0


@pytest.mark.skipif(not nats_available(), reason="nats-server not installed (scripts/test.sh)")
@pytest.mark.skipif(not node_available() and os.environ.get("CI") != "true",
                    reason="tests/node not installed (scripts/test.sh runs npm ci)")
def test_front_and_bus_together_commands_on_the_other_node(cluster_factory, phones, tones,
                                                           artifacts):
    c = cluster_factory(nats=True)
    A = register(c, phones, "A", "201")
    a_node = node_of_register(c, "201")
    B = register_on(c, phones, "B", "202", next(n for n in c.nodes if n is not a_node))
    # SSE clients on both nodes from the start of the account's sequence, connected before the
    # call exists (which node will own it is the front's choice).
    watchers = {n.node_id: Collector(n, 0) for n in c.nodes}
    try:
        call = FrontCall(c, A, B, tones, artifacts)
        owner, other = call.owner, call.other
        call.assert_two_way("front-bus")
        on_owner, on_other = Native(owner), Native(other)
        call_id = on_owner.one_call()["id"]
        # The shared store says the same owner as the front's log.
        assert c.pg.psql("SELECT node_id FROM live_calls WHERE id = '%s'" % call_id,
                         url=c.db) == [[owner.node_id]]
        listed = [x["id"] for x in on_other.calls()]
        assert listed == [call_id], listed

        # Hold through the node that does not own the call: the owner re-INVITEs both phones;
        # each sees remote hold and hears the music, not the other phone.
        m = call.marks()
        r = on_other.req("POST", "/calls/%s/hold" % call_id, 200).json()
        assert all(l["held"] for l in r["legs"]), r
        call.wait_media(lambda e: e["status"] == "remote_hold", m)
        ra, rb = call.record("held-via-other")
        assert_no_tone(ra, F_B, what="held: A must not hear B")
        assert_no_tone(rb, F_A, what="held: B must not hear A")
        assert_music_on_hold(ra, F_B, what="held: A hears music on hold")
        assert_music_on_hold(rb, F_A, what="held: B hears music on hold")
        m = call.marks()
        r = on_other.req("POST", "/calls/%s/unhold" % call_id, 200).json()
        assert not any(l["held"] for l in r["legs"]), r
        call.wait_media(lambda e: e["active"], m)
        call.assert_two_way("retrieved-via-other")

        # The sipgate SDK on the other node, as 201 (the caller, A): mute, unmute.
        creds = {"token": sipgate_login(other, "201@acme.local", "secret201")}
        assert [x["callId"] for x in sdk(other, creds, "list")["result"]] == [call_id]
        sdk(other, creds, "mute", call_id, True)
        call.assert_a_muted("muted-by-sdk-via-other")
        sdk(other, creds, "mute", call_id, False)
        call.assert_two_way("unmuted-by-sdk-via-other")

        # Hangup by the native API on the other node ends both phones.
        on_other.req("DELETE", "/calls/%s" % call_id, 204)
        call.assert_both_ended()

        # The SSE client on the other node saw the owner's events of this call, in order.
        watch = watchers[other.node_id]
        watch.wait(lambda e: e[0] == "ended" and e[2] == call_id)
        kinds = [e[0] for e in watch.snapshot() if e[2] == call_id]
        want = ["answered", "held", "retrieved", "muted", "unmuted", "ended"]
        pos = [kinds.index(k) for k in want if k in kinds]
        assert len(pos) == len(want) and pos == sorted(pos), kinds
        ids = [e[1] for e in watch.snapshot()]
        assert ids == sorted(set(ids)), ids
    finally:
        for w in watchers.values():
            w.close()

    # One record, written by the owner, nothing left live.
    wait_until(lambda: records(c), timeout=15, what="the call's record in PostgreSQL")
    rows = c.pg.psql("SELECT id, node_id, from_uri, to_uri FROM call_records", url=c.db)
    assert rows == [[call_id, owner.node_id, "201", "202"]], rows
    assert c.pg.psql("SELECT count(*) FROM live_calls", url=c.db) == [["0"]]
    wait_until(lambda: on_owner.calls() == [] and on_other.calls() == [], timeout=5,
               what="no node lists the call any more")
