"""Stopping gracefully (security issue, item 6): on SIGTERM /readyz turns false at once, a new
INVITE gets 503 with Retry-After, a call in progress goes on (audio both ways) until it ends
or the grace is over — then both phones get BYE — and the process exits by itself."""
import os
import signal
import time

import pytest
import requests

import rawsip
from checks import assert_hears
from conftest import F_A, F_B

pytestmark = [pytest.mark.server, pytest.mark.timeout(120)]

GRACE = 6


def connected_call(server, phones, tones):
    A = phones("A")
    assert A.register(server, "201")["code"] == 200
    B = phones("B")
    assert B.register(server, "202")["code"] == 200
    A.play(tones[F_A])
    B.play(tones[F_B])
    B.auto_answer(200, delay_ms=200)
    c = A.call(server.uri("202"))
    inc = B.wait_incoming()
    A.wait_state("CONFIRMED", call=c, timeout=10)
    return A, B, c, inc


def test_sigterm_drains_then_ends_the_remaining_calls(server_factory, phones, tones, artifacts):
    server = server_factory(shutdown_grace_secs=GRACE)
    A, B, c, inc = connected_call(server, phones, tones)
    assert requests.get(server.http + "/readyz", timeout=5).status_code == 200
    ma, mb = A.mark(), B.mark()
    stopped_at = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    r = requests.get(server.http + "/readyz", timeout=5)
    assert r.status_code == 503, r.text
    # A new call is refused with 503 and Retry-After.
    client = rawsip.Client(server.sip_port, "udp", local_host="127.0.0.4")
    try:
        req = client.request("INVITE", "sip:202@acme.local", "sip:201@acme.local",
                             "sip:202@acme.local", body=rawsip.Peer.SDP.format(
                                 ip="127.0.0.4", port=4000), content_type="application/sdp",
                             headers=["Contact: <sip:201@%s>" % client.via])
        client.send(req.data)
        resp = client.final(5.0, cseq_method="INVITE")
        assert resp is not None and resp.status == 503, resp
        assert resp.get("retry-after"), resp
        client.send(client.ack_for(req, resp))
    finally:
        client.close()
    # The call in progress goes on: audio both ways while draining.
    ra, rb = os.path.join(artifacts, "A.wav"), os.path.join(artifacts, "B.wav")
    A.record(ra)
    B.record(rb)
    time.sleep(2)
    A.stop_record()
    B.stop_record()
    assert not A.find("call_state", lambda e: e["state"] == "DISCONNECTED", since=ma)
    assert_hears(ra, F_B, F_A, what="A hears B while the server drains")
    assert_hears(rb, F_A, F_B, what="B hears A while the server drains")
    # At the end of the grace both phones get BYE and the server exits by itself.
    A.wait_state("DISCONNECTED", call=c, timeout=GRACE + 5, since=ma)
    B.wait_state("DISCONNECTED", call=inc["call"], timeout=5, since=mb)
    ended_after = time.monotonic() - stopped_at
    assert GRACE - 1 <= ended_after <= GRACE + 5, ended_after
    assert server.proc.wait(15) == 0


def test_sigterm_exits_as_soon_as_the_last_call_ends(server_factory, phones, tones):
    server = server_factory(shutdown_grace_secs=60)
    A, B, c, inc = connected_call(server, phones, tones)
    server.proc.send_signal(signal.SIGTERM)
    time.sleep(1)
    assert server.proc.poll() is None, "the server left before its call ended"
    A.hangup(call=c)
    B.wait_state("DISCONNECTED", call=inc["call"], timeout=5)
    assert server.proc.wait(15) == 0
