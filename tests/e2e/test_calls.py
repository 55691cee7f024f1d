"""Extension calls through hookflash with independent pjsua2 phones
(engine-foundation issue, parts b, c, d, e, g)."""
import os
import time

import pytest

from checks import assert_anchored, assert_hears, assert_no_tone, sip_user
from conftest import F_A, F_B, F_C

pytestmark = pytest.mark.server


def registered(phones, server, name, ext, transport="udp"):
    p = phones(name)
    ev = p.register(server, ext, transport=transport)
    assert ev["code"] == 200, "%s (%s) REGISTER: %s" % (name, ext, ev)
    return p


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_ext_to_ext_call_two_way_audio_anchored(server, phones, tones, artifacts, transport):
    A = registered(phones, server, "A", "201", transport)
    B = registered(phones, server, "B", "202", transport)
    A.play(tones[F_A])
    B.play(tones[F_B])
    B.auto_answer(200, delay_ms=500)
    ra, rb = os.path.join(artifacts, "A.wav"), os.path.join(artifacts, "B.wav")
    A.record(ra)
    B.record(rb)

    c = A.call(server.uri("202", transport))
    inc = B.wait_incoming()
    assert sip_user(inc["request_uri"]) == "202" or sip_user(inc["to"]) == "202", inc
    assert sip_user(inc["from"]) == "201", inc
    A.wait_state("CONFIRMED", call=c, timeout=10)
    B.wait_state("CONFIRMED", call=inc["call"])
    assert_anchored(A.wait_media(lambda e: e["active"], call=c), server)
    assert_anchored(B.wait_media(lambda e: e["active"], call=inc["call"]), server)
    server.wait_metric("hookflash_active_calls", 1)

    time.sleep(4)
    A.stop_record()
    B.stop_record()
    B.hangup()  # callee hangs up
    A.wait_state("DISCONNECTED", call=c, timeout=5)
    B.wait_state("DISCONNECTED", call=inc["call"], timeout=5)

    assert_hears(ra, F_B, F_A, what="A hears B")
    assert_hears(rb, F_A, F_B, what="B hears A")

    m = server.wait_metric("hookflash_active_calls", 0)
    assert (m.value("hookflash_calls_started_total") or 0) >= 1, m
    assert (m.sum("hookflash_calls_ended_total") or 0) >= 1, m
    assert m.series("hookflash_calls_ended_total") and all(
        "cause" in labels for labels, _ in m.series("hookflash_calls_ended_total")), m
    # ~4 s of 50 packet/s audio each way went through the relay
    assert (m.value("hookflash_rtp_packets_relayed_total") or 0) >= 200, m
    assert m.value("hookflash_rtp_packets_dropped_total") is not None, m

    hist = server.cli("calls", "history")
    assert hist.returncode == 0, hist.stderr
    assert "201" in hist.stdout and "202" in hist.stdout, hist.stdout


def test_busy_unavailable_and_unroutable(server, phones):
    A = registered(phones, server, "A", "201")
    B = registered(phones, server, "B", "202")
    B.auto_answer(486)
    c = A.call(server.uri("202"))
    B.wait_incoming()
    assert A.end_status(call=c) == 486

    c = A.call(server.uri("104"))  # provisioned, not registered
    assert A.end_status(call=c) == 480

    Z = registered(phones, server, "Z", "301")  # account "beta" has no trunk
    c = Z.call(server.uri("999"))
    assert Z.end_status(call=c) == 404
    server.wait_metric("hookflash_active_calls", 0)


def test_caller_cancels_while_ringing(server, phones):
    A = registered(phones, server, "A", "201")
    B = registered(phones, server, "B", "202")  # rings (180), never answers
    c = A.call(server.uri("202"))
    inc = B.wait_incoming()
    A.wait_for("call_state", lambda e: e["call"] == c and e["state"] == "EARLY", timeout=5)
    time.sleep(0.3)
    A.hangup(call=c)  # CANCEL
    assert A.end_status(call=c) == 487
    B.wait_state("DISCONNECTED", call=inc["call"], timeout=5)
    assert "CONFIRMED" not in B.states(call=inc["call"])
    server.wait_metric("hookflash_active_calls", 0)


def test_phone_initiated_hold_and_unhold(server, phones, tones, artifacts):
    A = registered(phones, server, "A", "201")
    B = registered(phones, server, "B", "202")
    A.play(tones[F_A])
    B.play(tones[F_B])
    B.auto_answer(200)
    c = A.call(server.uri("202"))
    inc = B.wait_incoming()
    A.wait_state("CONFIRMED", call=c)
    A.wait_media(lambda e: e["active"], call=c)
    B.wait_media(lambda e: e["active"], call=inc["call"])
    rec = lambda n: os.path.join(artifacts, n)  # noqa: E731

    # Each phase records into its own file (pjsua2's recorder may write
    # nothing while no media arrives, so one file's timeline can't be trusted).
    A.record(rec("A_before.wav"))
    B.record(rec("B_before.wav"))
    time.sleep(2)
    A.stop_record()
    B.stop_record()

    ma, mb = A.mark(), B.mark()
    A.hold()  # re-INVITE a=sendonly
    assert A.wait_media(lambda e: e["status"] == "local_hold", call=c, since=ma)["dir"] == "sendonly"
    held = B.wait_media(lambda e: e["status"] == "remote_hold", call=inc["call"], since=mb)
    assert held["dir"] == "recvonly", held  # B answered recvonly: B stops sending
    time.sleep(0.3)
    A.record(rec("A_hold.wav"))
    time.sleep(1.5)
    A.stop_record()

    ma, mb = A.mark(), B.mark()
    A.unhold()
    assert_anchored(A.wait_media(lambda e: e["active"], call=c, since=ma), server)
    assert_anchored(B.wait_media(lambda e: e["active"], call=inc["call"], since=mb), server)
    time.sleep(0.3)
    A.record(rec("A_after.wav"))
    B.record(rec("B_after.wav"))
    time.sleep(2)
    A.stop_record()
    B.stop_record()
    A.hangup(call=c)
    B.wait_state("DISCONNECTED", call=inc["call"])

    assert_hears(rec("A_before.wav"), F_B, F_A, t0=0.3, what="before hold")
    assert_hears(rec("B_before.wav"), F_A, F_B, t0=0.3, what="before hold")
    assert_no_tone(rec("A_hold.wav"), F_B, what="during hold")
    assert_hears(rec("A_after.wav"), F_B, F_A, t0=0.3, what="after unhold")
    assert_hears(rec("B_after.wav"), F_A, F_B, t0=0.3, what="after unhold")
    server.wait_metric("hookflash_active_calls", 0)


def test_forking_to_all_contacts_first_answer_wins(server, phones, tones, artifacts):
    A = registered(phones, server, "A", "201")
    P1 = registered(phones, server, "P1", "103")
    P2 = registered(phones, server, "P2", "103")
    A.play(tones[F_A])
    P1.play(tones[F_C])
    P2.play(tones[F_B])
    ra, r2 = os.path.join(artifacts, "A.wav"), os.path.join(artifacts, "P2.wav")
    A.record(ra)
    P2.record(r2)

    c = A.call(server.uri("103"))
    i1 = P1.wait_incoming(timeout=5)
    i2 = P2.wait_incoming(timeout=5)
    A.wait_for("call_state", lambda e: e["call"] == c and e["state"] == "EARLY", timeout=5)
    P2.answer(200, call=i2["call"])
    A.wait_state("CONFIRMED", call=c)
    P2.wait_state("CONFIRMED", call=i2["call"])
    end1 = P1.wait_state("DISCONNECTED", call=i1["call"], timeout=5)  # CANCELled
    assert end1["last_status"] == 487, end1
    assert "CONFIRMED" not in P1.states(call=i1["call"])
    assert_anchored(A.wait_media(lambda e: e["active"], call=c), server)
    assert_anchored(P2.wait_media(lambda e: e["active"], call=i2["call"]), server)

    time.sleep(3)
    A.stop_record()
    P2.stop_record()
    A.hangup(call=c)
    P2.wait_state("DISCONNECTED", call=i2["call"])
    assert_hears(ra, F_B, F_C, what="A hears the answering phone, not the cancelled one")
    assert_hears(r2, F_A, F_B, what="answering phone hears A")
    server.wait_metric("hookflash_active_calls", 0)
