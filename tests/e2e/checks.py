"""Assertions shared by the e2e tests."""
import os
import re
import time

import audio


def sip_user(uri):
    """User part of a SIP URI / name-addr ('"A" <sip:201@x>;tag=1' -> '201')."""
    m = re.search(r"sips?:([^@;>\s]+)@", uri or "")
    return m.group(1) if m else ""


def split_hostport(addr):
    host, _, port = (addr or "").rpartition(":")
    return host.strip("[]"), int(port) if port.isdigit() else 0


def assert_anchored(media_ev, server):
    """The RTP address a phone sends to (from its negotiated SDP) is the
    server's: 127.0.0.1 and a port inside the server's RTP range."""
    host, port = split_hostport(media_ev.get("remote_rtp"))
    assert host == "127.0.0.1" and server.rtp_min <= port <= server.rtp_max, (
        "phone %s sends RTP to %r, expected 127.0.0.1:[%d-%d] (media not anchored in hookflash)"
        % (media_ev.get("phone"), media_ev.get("remote_rtp"), server.rtp_min, server.rtp_max)
    )


def assert_hears(wav_path, peer_freq, own_freq, t0=0.5, what=""):
    """The recording carries the peer's tone (dominant over our own tone and
    present in most windows), so audio went end to end in this direction."""
    w = audio.read_wav(wav_path)
    ratio = audio.tone_ratio(w, peer_freq, own_freq, t0)
    frac = audio.tone_fraction(w, peer_freq, t0)
    detail = "%s %s: %.2fs recorded, ratio(%d/%d)=%.3g, windows with %d Hz=%.0f%%\n%s" % (
        what, os.path.basename(wav_path), w.duration, peer_freq, own_freq, ratio, peer_freq,
        100 * frac, audio.window_report(w, [peer_freq, own_freq], t0)[:40])
    assert not audio.silent(w, t0), "silence: " + detail
    assert ratio > 100, "peer tone not dominant: " + detail
    assert frac >= 0.6, "peer tone missing in too many windows: " + detail


def assert_no_tone(wav_path, freq, t0=0.0, what=""):
    w = audio.read_wav(wav_path)
    frac = audio.tone_fraction(w, freq, t0)
    assert frac <= 0.1, "%s %s: %d Hz present in %.0f%% of windows (expected absent)\n%s" % (
        what, os.path.basename(wav_path), freq, 100 * frac,
        audio.window_report(w, [freq], t0)[:40])


def wait_until(fn, timeout=10.0, interval=0.2, what="condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError("%s not reached within %.0fs (last: %r)" % (what, timeout, last))
