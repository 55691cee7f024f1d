"""RTP continuity at the switch relay -> mixer -> relay (issue 14, the mixer's "RTP continuity
at each switch"), seen by an independent raw RTP/SIP peer.

A pjsua2 phone (201, plays 1000 Hz) calls a national number; the trunk's carrier is a raw
SIP peer (rawsip.Peer) that answers, sends a 1500 Hz PCMU tone and records every RTP packet
it receives (SSRC, sequence, timestamp, marker, payload, arrival time). 203 (plays 2000 Hz)
is then added to the call (`POST /calls/{id}/parties`: the call moves onto its mixer) and
removed again (`DELETE`: the call goes back on its relay fast path, visible in the metrics).

Asserted on the packets the peer received (the rule of crates/media relay.rs, "RTP
continuity towards X", which the mixer's fed legs share through the streamed player):
- one SSRC for the whole call;
- sequence numbers +1 per packet, no gap, no duplicate;
- timestamp +160 per packet, except on a packet with the marker bit (a new talkspurt: the
  stream's clock moved on by the elapsed time, in whole packets): there it moves forward,
  by a whole number of packets, and by no more than the arrival gap allows;
- 201's 1000 Hz tone heard before, during and after; 203's 2000 Hz only while it is in.
"""
import math
import os
import socket
import struct
import threading
import time

import pytest

import audio
import rawsip
from api_support import Native, registered
from checks import wait_until
from conftest import F_A, F_C
from playout_hold import ULAW, ulaw_encode
from test_playout_hold import sdp_media

pytestmark = pytest.mark.server

EXTRA = [("203", "secret203", "Carol")]
DIALLED = "+4969555123"
F_PEER = 1500


class RtpPeer:
    """Sends a PCMU tone every 20 ms to `dst` from the carrier's media socket and records
    every RTP packet arriving there."""

    def __init__(self, sock, dst):
        self.sock, self.dst = sock, dst
        self.got = []  # dicts: t, ssrc, seq, ts, marker, pt, payload
        self.stopped = False
        self.sock.settimeout(0.005)
        tone = [int(0.3 * 32767 * math.sin(2 * math.pi * F_PEER * i / 8000.0))
                for i in range(8000)]
        self.ulaw = bytes(ulaw_encode(x) for x in tone)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        i, due = 0, time.monotonic()
        while not self.stopped:
            now = time.monotonic()
            if now >= due:
                k = (i * 160) % 8000
                hdr = struct.pack(">BBHII", 0x80, 0, i & 0xFFFF, (160 * i) & 0xFFFFFFFF,
                                  0x1234ABCD)
                try:
                    self.sock.sendto(hdr + self.ulaw[k:k + 160], self.dst)
                except OSError:
                    pass
                i += 1
                due += 0.02
                if now - due > 0.1:  # a stalled box: skip, as lost packets
                    skip = int((now - due) / 0.02)
                    i += skip
                    due += 0.02 * skip
            try:
                data = self.sock.recv(2048)
            except (socket.timeout, OSError):
                continue
            if len(data) < 12 or data[0] >> 6 != 2:
                continue
            b1, seq, ts, ssrc = struct.unpack(">xBHII", data[:12])
            cc = data[0] & 0x0F
            self.got.append(dict(t=time.monotonic(), ssrc=ssrc, seq=seq, ts=ts,
                                 marker=bool(b1 & 0x80), pt=b1 & 0x7F,
                                 payload=data[12 + 4 * cc:]))

    def stop(self):
        self.stopped = True
        self.thread.join(2)

    def audio(self, t0, t1):
        pcm = []
        for p in self.got:
            if t0 <= p["t"] < t1 and p["pt"] == 0:
                pcm.extend(ULAW[b] for b in p["payload"])
        return audio.Wav(8000, pcm, "peer %.1f-%.1f" % (t0, t1))


def continuity_breaks(got):
    """Every place the stream the peer received breaks the rule of the module doc."""
    out = []
    ssrcs = sorted({p["ssrc"] for p in got})
    if len(ssrcs) != 1:
        out.append("SSRCs %s" % ["%08x" % s for s in ssrcs])
    for n, (a, b) in enumerate(zip(got, got[1:]), 1):
        dseq = (b["seq"] - a["seq"]) & 0xFFFF
        dts = (b["ts"] - a["ts"]) & 0xFFFFFFFF
        gap = b["t"] - a["t"]
        where = "packet %d (seq %d -> %d, ts %d -> %d, marker %s, %.3f s later)" % (
            n, a["seq"], b["seq"], a["ts"], b["ts"], b["marker"], gap)
        if dseq != 1:
            out.append("sequence +%d at %s" % (dseq, where))
        if b["marker"]:
            # Forward by whole packets, and not further than real time went on (+ slack for
            # the jitter of a loaded box and for packets bunched after a stall).
            if dts == 0 or dts % 160 or dts > 8000 * (gap + 1.0):
                out.append("timestamp +%d with marker at %s" % (dts, where))
        elif dts != 160:
            out.append("timestamp +%d without marker at %s" % (dts, where))
    return out


@pytest.mark.timeout(90)
def test_one_rtp_stream_at_the_peer_across_relay_mixer_relay(
        server_factory, phones, artifacts):
    server = server_factory(extra_users=EXTRA)
    api = Native(server)
    tone = {f: audio.make_tone(os.path.join(artifacts, "tone%d.wav" % f), f, seconds=40,
                               vol=0.3) for f in (F_A, F_C)}
    a = registered(phones, server, "A", "201")
    a.play(tone[F_A])
    c = registered(phones, server, "C", "203")
    c.play(tone[F_C])
    c.auto_answer(200)
    carrier = rawsip.Peer(server.sip_port, port=server.trunk_port, name="carrier")
    peer = None
    try:
        call_a = a.call(server.uri(DIALLED))
        inv = carrier.wait_request("INVITE", timeout=10)
        a.wait_state("CONFIRMED", call=call_a, timeout=10)
        peer = RtpPeer(carrier.media, sdp_media(inv.body))
        call = api.one_call()
        assert call["state"] == "answered", call
        time.sleep(3.0)
        t_add = time.monotonic()
        r = api.req("POST", "/calls/%s/parties" % call["id"], 201, json={"to": "203"})
        pid = r.json()["id"]

        def joined():
            ps = api.req("GET", "/calls/%s/parties" % call["id"], 200).json()["participants"]
            return any(p["id"] == pid and p["state"] == "joined" for p in ps)
        wait_until(joined, timeout=10, what="203 joined")
        assert server.metrics().value("hookflash_calls_on_mixer") == 1
        t_in = time.monotonic()
        time.sleep(3.5)
        t_del = time.monotonic()
        api.req("DELETE", "/calls/%s/parties/%s" % (call["id"], pid), 204)
        server.wait_metric("hookflash_calls_on_mixer", 0)
        t_out = time.monotonic()
        time.sleep(3.5)
        t_end = time.monotonic()
        peer.stop()
        got = peer.got
        with open(os.path.join(artifacts, "peer_rtp.txt"), "w") as f:
            for p in got:
                f.write("%.4f %08x %5d %10d %d %d\n" % (p["t"], p["ssrc"], p["seq"], p["ts"],
                                                        p["marker"], p["pt"]))
        assert got and got[0]["t"] < t_add - 2.0, "no RTP at the peer before the switch"
        assert got[-1]["t"] > t_end - 1.0, "no RTP at the peer after the switch back"
        breaks = continuity_breaks(got)
        assert not breaks, "%d breaks (see peer_rtp.txt):\n%s" % (len(breaks), "\n".join(
            breaks[:20]))
        markers = [p for p in got if p["marker"]]
        # Each switch starts a talkspurt on the same stream (marker on its first packet).
        for what, t0, t1 in (("relay -> mixer", t_add, t_in + 0.5),
                             ("mixer -> relay", t_del, t_out + 0.5)):
            assert any(t0 <= p["t"] < t1 for p in markers), "no marker at the switch %s" % what
        print("peer: %d packets, ssrc %08x, %d with marker" % (
            len(got), got[0]["ssrc"], len(markers)))

        # 201 heard all the time; 203 only while it is in.
        before = peer.audio(t_add - 2.5, t_add)
        during = peer.audio(t_in + 0.5, t_del)
        after = peer.audio(t_out + 0.5, t_end)
        assert {p["pt"] for p in got} == {0}, "not PCMU only: %s" % {p["pt"] for p in got}
        for name, w in (("before", before), ("after", after)):
            assert audio.tone_fraction(w, F_A) >= 0.6, "%s: 201 not heard at the peer\n%s" % (
                name, audio.window_report(w, [F_A, F_C])[:20])
        # While 203 is in, the peer hears the mix of 201 and 203 (not itself).
        assert not audio.silent(during), "silence at the peer while 203 is in"
        for f in (F_A, F_C):
            assert audio.tone_ratio(during, f, F_PEER) > 10, "%d Hz not heard while 203 is in\n%s" % (
                f, audio.window_report(during, [F_A, F_C, F_PEER])[:20])
        for name, w in (("before", before), ("after", after)):
            assert audio.tone_ratio(w, F_C, F_A) < 0.01, "%s: 203 heard at the peer" % name
        a.hangup()
        server.wait_metric("hookflash_active_calls", 0)
    finally:
        if peer:
            peer.stop()
        carrier.close()
