"""Encrypted transports (issue 17, item 5): SIP over TLS, SRTP with SDES (RFC 4568) relayed
to a plain RTP leg, HTTPS for the API. The peers are pjsua2 phones (one on TLS with SRTP
mandatory, one on UDP with plain RTP) and a raw UA; what they receive is the proof."""
import math
import os
import socket
import struct
import subprocess
import time

import pytest
import requests

from checks import assert_hears, assert_no_tone, sip_user, wait_until
from conftest import F_A, F_B
from rawsip import Peer

pytestmark = pytest.mark.server


@pytest.fixture
def cert(tmp_path):
    """A self-signed certificate for 127.0.0.1 (openssl CLI)."""
    key, crt = str(tmp_path / "key.pem"), str(tmp_path / "cert.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", key, "-out", crt, "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True)
    return {"cert": crt, "key": key}


def tls_server(server_factory, cert):
    # First-message / handshake limit 2 s so a silent connection is closed within the test.
    return server_factory(tls=cert, security={"tcp_first_message_secs": 2})


def hurt_the_tls_listener(server):
    """Garbage instead of a ClientHello, a truncated ClientHello, a connection that says
    nothing: each must be closed without taking the listener down."""
    socks = []
    for payload in (b"\x00" * 64, b"INVITE sip:x SIP/2.0\r\n\r\n", b"\x16\x03\x01\x02\x00\x01",
                    os.urandom(512), b""):
        s = socket.create_connection(("127.0.0.1", server.tls_port), timeout=3)
        if payload:
            s.sendall(payload)
        socks.append(s)
    return socks


def closed_by_server(s, timeout=5.0):
    s.settimeout(timeout)
    try:
        while True:
            data = s.recv(4096)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def test_tls_srtp_phone_calls_plain_udp_phone_tones_both_ways(server_factory, phones, tones,
                                                               artifacts, cert):
    server = tls_server(server_factory, cert)
    bad = hurt_the_tls_listener(server)
    assert all(closed_by_server(s) for s in bad), "every bad TLS connection is closed"
    for s in bad:
        s.close()
    m = server.wait_metric("hookflash_sip_tls_handshake_failed_total", 5)
    assert server.alive()

    # HTTPS: the API answers over TLS with the configured certificate, not in plain HTTP.
    r = requests.get(server.http + "/healthz", timeout=3, verify=cert["cert"])
    assert server.http.startswith("https://") and r.status_code == 200, r
    r = requests.get(server.http + "/api/v1/calls", timeout=3, verify=cert["cert"],
                     headers={"Authorization": "Bearer hf_test_key_acme"})
    assert r.status_code == 200, (r.status_code, r.text)
    with pytest.raises(requests.RequestException):
        requests.get("http://127.0.0.1:%d/healthz" % server.http_port, timeout=3)

    A = phones("A")
    ev = A.register(server, "201", transport="tls", srtp="mandatory")
    assert ev["code"] == 200, "TLS REGISTER: %s" % ev
    B = phones("B")
    ev = B.register(server, "202")
    assert ev["code"] == 200, ev
    A.play(tones[F_A])
    B.play(tones[F_B])
    B.auto_answer(200, delay_ms=300)
    ra, rb = os.path.join(artifacts, "A.wav"), os.path.join(artifacts, "B.wav")
    A.record(ra)
    B.record(rb)

    c = A.call(server.uri("202", "tls"))
    inc = B.wait_incoming()
    assert sip_user(inc["from"]) == "201", inc
    A.wait_state("CONFIRMED", call=c, timeout=10)
    B.wait_state("CONFIRMED", call=inc["call"])
    # What each phone was answered/offered: SRTP with a key of ours towards A (as A's own
    # pjsip log shows the 200 it received over TLS), plain RTP to B.
    answer_a = wait_until(lambda: answer_in_log(A.log_path), what="A's 200/INVITE in its log")
    assert "RTP/SAVP" in answer_a and "a=crypto:" in answer_a, answer_a
    assert "transport=TLS" in answer_a.split("Contact:")[1].split("\n")[0], answer_a
    assert "from TLS" in answer_a.splitlines()[0], answer_a
    assert wait_until(lambda: "SRTP started, keying=SDES" in read(A.log_path), what="SRTP at A")
    sdp_b = B.wait_for("sdp", lambda e: e["call"] == inc["call"])["remote"]
    assert "RTP/AVP " in sdp_b and "crypto" not in sdp_b, sdp_b
    A.wait_media(lambda e: e["active"], call=c)
    B.wait_media(lambda e: e["active"], call=inc["call"])

    time.sleep(3)
    A.stop_record()
    B.stop_record()
    # SRTP errors while the call ran (pjsua re-offers after the answer, codec lock: our answer
    # must keep its crypto tag). Read before the hangup: pjmedia may log "key not ready" for
    # a last packet its stream sends while the SRTP transport is being destroyed at call end.
    log_during_call = read(A.log_path)
    # The callee hangs up: our BYE reaches the TLS phone over its TLS connection.
    B.hangup()
    A.wait_state("DISCONNECTED", call=c, timeout=5)
    B.wait_state("DISCONNECTED", call=inc["call"], timeout=5)

    assert "PJMEDIA_SRTP_E" not in log_during_call, "an SRTP error at the TLS phone"
    assert_hears(ra, F_B, F_A, what="TLS/SRTP phone hears the UDP phone")
    assert_hears(rb, F_A, F_B, what="UDP phone hears the TLS/SRTP phone")
    m = server.wait_metric("hookflash_active_calls", 0)
    assert (m.value("hookflash_rtp_packets_relayed_total") or 0) >= 200, m
    # Nothing on the SRTP leg failed to authenticate.
    assert (m.value("hookflash_rtp_srtp_rejected_total") or 0) < 5, m


def read(path):
    with open(path, "rb") as f:
        return f.read().decode("utf-8", "replace")


def answer_in_log(path):
    """The 200/INVITE a pjsua phone received, from its log (None while not there)."""
    text = read(path)
    i = text.find("Response msg 200/INVITE")
    if i < 0:
        return None
    return text[i:i + 3000].split("--end msg--")[0]


def mulaw(sample):
    """G.711 mu-law of one 16-bit sample."""
    bias, clip = 0x84, 32635
    sign = 0x80 if sample < 0 else 0
    sample = min(abs(sample), clip) + bias
    exponent = 7
    for e in range(7, -1, -1):
        if sample & (0x4000 >> (7 - e)):
            exponent = e
            break
    mantissa = (sample >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def test_plain_rtp_on_an_srtp_leg_is_not_relayed(server_factory, phones, artifacts, cert):
    server = tls_server(server_factory, cert)
    B = phones("B")
    assert B.register(server, "201")["code"] == 200
    B.auto_answer(200)
    rb = os.path.join(artifacts, "B.wav")
    B.record(rb)
    # The carrier offers SRTP, then sends plain RTP (a tone) from the address it announced.
    carrier = Peer(server.sip_port, port=server.trunk_port)
    try:
        key = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"
        carrier.SDP = Peer.SDP.replace("RTP/AVP", "RTP/SAVP") + (
            "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:%s\r\n" % key)
        since = carrier.mark()
        req = carrier.invite("sip:+4930123456@127.0.0.1:%d" % server.sip_port,
                             "sip:+4969111111@127.0.0.1")
        final = carrier.wait_final(req.call_id, 1, timeout=10, since=since)
        assert final.status == 200, final
        answer = final.body.decode()
        assert "RTP/SAVP" in answer and "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" in answer
        assert key not in answer, "our answer carries our own key"
        port = int(answer.split("m=audio ")[1].split()[0])
        ssrc, seq, ts, sent = 0x5EC0DE, 1, 0, 0
        payload_len, n = 160, 0
        start = time.monotonic()
        while time.monotonic() - start < 2.5:
            pcm = bytes(mulaw(int(12000 * math.sin(2 * math.pi * F_A * (n + i) / 8000)))
                        for i in range(payload_len))
            n += payload_len
            pkt = struct.pack("!BBHII", 0x80, 0, seq, ts, ssrc) + pcm
            carrier.media.sendto(pkt, ("127.0.0.1", port))
            seq, ts, sent = seq + 1, ts + payload_len, sent + 1
            time.sleep(0.02)
        B.stop_record()
        m = server.metrics()
        assert (m.value("hookflash_rtp_srtp_rejected_total") or 0) >= sent * 0.9, (sent, m)
        assert_no_tone(rb, F_A, what="the phone behind the SRTP leg")
        carrier.in_dialog(req.call_id, "BYE")
    finally:
        carrier.close()


def test_udp_phone_calls_a_phone_registered_over_tls(server_factory, phones, tones, artifacts,
                                                     cert):
    """The INVITE reaches the TLS phone over its registration's connection (we never dial a
    phone's TLS port); its answer, ACK and the caller's BYE flow over TLS."""
    server = tls_server(server_factory, cert)
    B = phones("B")
    assert B.register(server, "202", transport="tls")["code"] == 200
    A = phones("A")
    assert A.register(server, "201")["code"] == 200
    A.play(tones[F_A])
    B.play(tones[F_B])
    B.auto_answer(200, delay_ms=300)
    ra, rb = os.path.join(artifacts, "A.wav"), os.path.join(artifacts, "B.wav")
    A.record(ra)
    B.record(rb)
    c = A.call(server.uri("202"))
    inc = B.wait_incoming()
    assert sip_user(inc["from"]) == "201", inc
    A.wait_state("CONFIRMED", call=c, timeout=10)
    B.wait_state("CONFIRMED", call=inc["call"])
    log_b = read(B.log_path)
    i = log_b.find("Request msg INVITE")
    assert i >= 0 and "from TLS" in log_b[i:i + 200], log_b[i:i + 200]
    time.sleep(3)
    A.stop_record()
    B.stop_record()
    A.hangup()
    B.wait_state("DISCONNECTED", call=inc["call"], timeout=5)
    A.wait_state("DISCONNECTED", call=c, timeout=5)
    assert_hears(ra, F_B, F_A, what="UDP phone hears the TLS phone")
    assert_hears(rb, F_A, F_B, what="TLS phone hears the UDP phone")


def test_srtp_phone_holds_and_resumes(server_factory, phones, tones, artifacts, cert):
    """The SRTP phone's own re-INVITEs (hold, unhold) are answered RTP/SAVP with our key, so
    the call survives them and the audio comes back both ways."""
    server = tls_server(server_factory, cert)
    A = phones("A")
    assert A.register(server, "201", transport="tls", srtp="mandatory")["code"] == 200
    B = phones("B")
    assert B.register(server, "202")["code"] == 200
    A.play(tones[F_A])
    B.play(tones[F_B])
    B.auto_answer(200)
    c = A.call(server.uri("202", "tls"))
    inc = B.wait_incoming()
    A.wait_media(lambda e: e["active"], call=c)
    B.wait_media(lambda e: e["active"], call=inc["call"])
    ma, mb = A.mark(), B.mark()
    A.hold()
    assert A.wait_media(lambda e: e["status"] == "local_hold", call=c, since=ma)["dir"] == "sendonly"
    B.wait_media(lambda e: e["status"] == "remote_hold", call=inc["call"], since=mb)
    ma, mb = A.mark(), B.mark()
    A.unhold()
    A.wait_media(lambda e: e["active"], call=c, since=ma)
    B.wait_media(lambda e: e["active"], call=inc["call"], since=mb)
    time.sleep(0.3)
    ra, rb = os.path.join(artifacts, "A_after.wav"), os.path.join(artifacts, "B_after.wav")
    A.record(ra)
    B.record(rb)
    time.sleep(2)
    A.stop_record()
    B.stop_record()
    assert A.states(call=c)[-1] == "CONFIRMED", A.states(call=c)
    A.hangup(call=c)
    B.wait_state("DISCONNECTED", call=inc["call"])
    assert "PJMEDIA_SRTP_E" not in read(A.log_path), "an SRTP error at the phone"
    assert_hears(ra, F_B, F_A, t0=0.3, what="SRTP phone after unhold")
    assert_hears(rb, F_A, F_B, t0=0.3, what="UDP phone after unhold")
