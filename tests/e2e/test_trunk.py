"""Calls out through the account's trunk and DID calls in from it
(engine-foundation issue, part f). The "carrier" is a pjsua2 phone bound to
the trunk's host:port from the config; it never registers."""
import os
import time

import pytest

from checks import assert_anchored, assert_hears, sip_user, split_hostport
from conftest import F_A, F_B
from hfserver import ACME_DID

pytestmark = pytest.mark.server

# A national number for acme (country 49): new accounts may not dial international ones.
DIALLED = "+4969555123"


def test_outbound_call_through_trunk(server, phones, tones, artifacts):
    carrier = phones("carrier")
    carrier.bind(server.trunk_port, user="carrier")
    carrier.auto_answer(200, delay_ms=300)
    carrier.play(tones[F_B])
    A = phones("A")
    assert A.register(server, "201")["code"] == 200
    A.play(tones[F_A])
    ra, rc = os.path.join(artifacts, "A.wav"), os.path.join(artifacts, "carrier.wav")
    A.record(ra)
    carrier.record(rc)

    c = A.call(server.uri(DIALLED))
    inc = carrier.wait_incoming(timeout=10)
    assert sip_user(inc["request_uri"]) == DIALLED, inc
    assert sip_user(inc["to"]) == DIALLED, inc
    assert split_hostport(inc["src"])[0] == "127.0.0.1", inc
    A.wait_state("CONFIRMED", call=c)
    carrier.wait_state("CONFIRMED", call=inc["call"])
    assert_anchored(A.wait_media(lambda e: e["active"], call=c), server)
    assert_anchored(carrier.wait_media(lambda e: e["active"], call=inc["call"]), server)

    time.sleep(3)
    A.stop_record()
    carrier.stop_record()
    A.hangup(call=c)
    carrier.wait_state("DISCONNECTED", call=inc["call"], timeout=5)
    assert_hears(ra, F_B, F_A, what="A hears carrier")
    assert_hears(rc, F_A, F_B, what="carrier hears A")
    server.wait_metric("hookflash_active_calls", 0)


def test_inbound_did_call_from_trunk_rings_owner(server, phones, tones, artifacts):
    A = phones("A")
    assert A.register(server, "201")["code"] == 200
    A.auto_answer(200, delay_ms=300)
    A.play(tones[F_A])
    carrier = phones("carrier")
    carrier.bind(server.trunk_port, user="carrier")
    carrier.play(tones[F_B])
    ra, rc = os.path.join(artifacts, "A.wav"), os.path.join(artifacts, "carrier.wav")
    A.record(ra)
    carrier.record(rc)

    c = carrier.call("sip:%s@127.0.0.1:%d" % (ACME_DID, server.sip_port))
    inc = A.wait_incoming(timeout=10)
    assert sip_user(inc["request_uri"]) in ("201", ACME_DID), inc
    carrier.wait_state("CONFIRMED", call=c)
    A.wait_state("CONFIRMED", call=inc["call"])
    assert_anchored(A.wait_media(lambda e: e["active"], call=inc["call"]), server)
    assert_anchored(carrier.wait_media(lambda e: e["active"], call=c), server)

    time.sleep(3)
    A.stop_record()
    carrier.stop_record()
    carrier.hangup(call=c)
    A.wait_state("DISCONNECTED", call=inc["call"], timeout=5)
    assert_hears(ra, F_B, F_A, what="user 201 hears carrier")
    assert_hears(rc, F_A, F_B, what="carrier hears user 201")
    server.wait_metric("hookflash_active_calls", 0)
