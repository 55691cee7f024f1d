"""A party that hears nothing still receives a stream (security issue, reliability): while the
caller is muted for 70 s, the callee (a raw "carrier" on the trunk that counts what reaches its
media port) keeps receiving RTP at the packet rate — silence, continuing the stream it had — so a
carrier's or phone's media-inactivity timer does not drop the call; after unmute it hears the
caller's tone again."""
import time

import pytest

import rawsip
from api_support import Native
from conftest import F_A

pytestmark = pytest.mark.server

NUMBER = "+4969555123"  # national for acme: out through the trunk
MUTED_SECS = 70


def rtp_ssrc(p):
    return int.from_bytes(p[8:12], "big")


def payloads_silent(packets):
    # PCMU silence is 0xFF (or 0x7F); the caller's tone is not.
    body = b"".join(p[12:] for p in packets)
    return sum(1 for b in body if b in (0xFF, 0x7F)) >= 0.95 * len(body)


@pytest.mark.timeout(120)
def test_the_muted_callers_peer_keeps_receiving_rtp(server, phones, tones):
    carrier = rawsip.Peer(server.sip_port, port=server.trunk_port, name="carrier")
    try:
        A = phones("A")
        assert A.register(server, "201")["code"] == 200
        A.play(tones[F_A])
        c = A.call(server.uri(NUMBER))
        A.wait_state("CONFIRMED", call=c, timeout=10)
        before = carrier.media_packets(1.0)
        assert len(before) >= 30, len(before)
        assert not payloads_silent(before), "the caller's tone did not arrive"

        api = Native(server)
        call = api.one_call()
        leg = Native.leg(call, "201")
        api.req("POST", "/calls/%s/legs/%s/mute" % (call["id"], leg["id"]), 200)
        # 70 s muted: longer than the usual 60 s media-inactivity timers of carriers and phones.
        muted = carrier.media_packets(MUTED_SECS)
        # 50 packets/s; a wide margin for a shared 2-core box, and far from zero.
        assert len(muted) >= 30 * MUTED_SECS, "only %d packets in %d s while muted" % (
            len(muted), MUTED_SECS)
        assert payloads_silent(muted[5:]), "the muted caller's audio still arrives"
        # One stream: the SSRC the carrier already had.
        assert {rtp_ssrc(p) for p in muted[5:]} == {rtp_ssrc(before[-1])}
        # Continuous all along: no hole of a second or more in the sequence numbers.
        seqs = [int.from_bytes(p[2:4], "big") for p in muted[5:]]
        holes = [(b - a) % 65536 for a, b in zip(seqs, seqs[1:]) if (b - a) % 65536 > 50]
        assert not holes, "the stream stopped for a while: sequence jumps %s" % holes[:5]
        assert carrier.wait_request("BYE", timeout=0.1) is None

        api.req("POST", "/calls/%s/legs/%s/unmute" % (call["id"], leg["id"]), 200)
        time.sleep(0.3)
        after = carrier.media_packets(1.0)
        assert len(after) >= 30 and not payloads_silent(after), "no tone after unmute"
        A.hangup(call=c)
        A.wait_state("DISCONNECTED", call=c, timeout=5)
    finally:
        carrier.close()
