#!/usr/bin/env python3
"""Playout delay of a phone before and after a server-side hold/unhold (issue 17, item 6).

A pjsua2 phone A (201) plays a non-periodic pattern of 1000 Hz bursts (a 6 s loop) and calls
202 through hookflash. 202 is the phone under test: a pjsua2 phone (`--phone pjsua2`) or
baresip from Debian (`--phone baresip`, audio played into a PulseAudio null sink whose monitor
parec records, each chunk stamped on arrival: a real-time player, no sound card). `--cycles`
times the call is held and retrieved through the native API (`--hold call`: POST
/api/v1/calls/{id}/hold, /unhold; `--hold sender`/`phone`: only 201's/202's leg, POST
.../legs/{leg}/hold; `--hold none`: the same pauses with no hold at all, the control).

tcpdump on lo captures the server's SIP with 202, the RTP the server sends 202 and the RTP A
sends the server. The delay is the lag that best aligns the tone envelope (10 ms bins) of what
202 plays with that of the RTP the server sent it (wire arrival times); "match" is the share
of bins that agree at that lag. Measured in the segment before the first hold ("pre") and
after each retrieve ("postN"), each MEASURE_S long and SETTLE_S after the retrieve.

The pcap also gives the RTP facts (SSRC, sequence/timestamp steps, marker bits, arrival
spacing, "skew" = arrival minus media time per segment: a burst or a timestamp jump shows
there) and every SDP exchanged with 202 (o= version, direction, port).

pjsua2 phone: by default one recording over the whole call (its start time from the phone
agent's record ack, CLOCK_MONOTONIC), so the call's conference port always has a listener.
`--segments`: one recording per measured segment with the recorder detached in between, as
the e2e tests record; pjmedia's conference bridge does not read a port without listeners, so
the phone's jitter buffer is not drained meanwhile (this is what made pjsua2 look slower).
baresip figures include PulseAudio's constant output/monitor latency; compare its own pre/post.

Run (root, for tcpdump; apt packages baresip pulseaudio pulseaudio-utils tcpdump; the e2e
venv for pjsua2):
    tests/e2e/.venv/bin/python tests/e2e/playout_hold.py --phone baresip --hold call --out /tmp/po
    tests/e2e/.venv/bin/python tests/e2e/playout_hold.py --phone pjsua2 --segments --hold none \
        --out /tmp/po
Loopback only; about 12 + 10.5 * cycles seconds per run (default 3 cycles). Prints a JSON
summary (also <out>/summary.json, next to lo.pcap, the recordings and all logs).
"""
import argparse
import json
import math
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import wave

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import audio  # noqa: E402
import hfserver  # noqa: E402
from phones import Phone  # noqa: E402

RATE = 8000
TONE_HZ = 1000
BIN_S = 0.01
PATTERN_S = 6.0
MEASURE_S = 6.0
SETTLE_S = 1.5
HOLD_S = 3.0
MAX_LAG_S = 3.0
# baresip's jitter buffer (10 frames of 20 ms) plus its audio (playout) buffer (160 ms), as
# configured below: the most audio it can hold back.
BARESIP_BUFFER_MAX_S = 10 * 0.02 + 0.160


# ------------------------------------------------------------------ signal
def burst_pattern(seed=17):
    """[(on_s, off_s)] of a non-periodic burst pattern filling PATTERN_S."""
    rnd = random.Random(seed)
    spans, t = [], 0.0
    while True:
        on = rnd.choice([0.12, 0.16, 0.2, 0.26, 0.32])
        off = rnd.choice([0.18, 0.3, 0.42, 0.56, 0.7])
        if t + on + off > PATTERN_S:
            break
        spans.append((t, t + on))
        t += on + off
    return spans


def burst_samples():
    """PATTERN_S of 8 kHz samples: the burst pattern of TONE_HZ."""
    s = [0] * int(PATTERN_S * RATE)
    for a, b in burst_pattern():
        for i in range(int(a * RATE), int(b * RATE)):
            s[i] = int(16000 * math.sin(2 * math.pi * TONE_HZ * i / RATE))
    return s


def make_burst_wav(path):
    s = burst_samples()
    n = len(s)
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(struct.pack("<%dh" % n, *s))
    return path


def tone_on(x, rate):
    """A 10 ms window carries the tone (loud, and most energy in the tone's bin)."""
    return audio.rms(x) >= audio.SILENCE_RMS and audio.tone_share(x, rate, TONE_HZ) >= 0.5


def envelope(samples, rate):
    step = int(rate * BIN_S)
    return [1 if tone_on(samples[i:i + step], rate) else 0
            for i in range(0, len(samples) - step + 1, step)]


# -------------------------------------------------------------------- pcap
def ulaw_table():
    t = []
    for u in range(256):
        u = ~u & 0xFF
        sign, exp, man = u & 0x80, (u >> 4) & 7, u & 0x0F
        v = ((man << 3) + 0x84) << exp
        v -= 0x84
        t.append(-v if sign else v)
    return t


ULAW = ulaw_table()


def ulaw_encode(x):
    """One 16-bit linear sample to G.711 mu-law (the inverse of ULAW)."""
    sign = 0x80 if x < 0 else 0
    x = min(abs(x), 32635) + 0x84
    exp = 7
    while exp > 0 and not x & (0x4000 >> (7 - exp)):
        exp -= 1
    return ~(sign | (exp << 4) | ((x >> (exp + 3)) & 0x0F)) & 0xFF


def read_pcap(path):
    """[(wall t, src port, dst port, payload)] of the UDP/IPv4 packets in a pcap (lo)."""
    out = []
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        return out
    magic = struct.unpack("<I", data[:4])[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    nano = magic in (0xA1B23C4D, 0x4D3CB2A1)
    link = struct.unpack(endian + "I", data[20:24])[0]
    l2 = {1: 14, 113: 16, 0: 4, 276: 20}.get(link, 14)
    pos = 24
    while pos + 16 <= len(data):
        sec, frac, incl, _ = struct.unpack(endian + "IIII", data[pos:pos + 16])
        pkt = data[pos + 16:pos + 16 + incl]
        pos += 16 + incl
        ip = pkt[l2:]
        if len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] != 17:
            continue
        ihl = (ip[0] & 15) * 4
        sport, dport = struct.unpack(">HH", ip[ihl:ihl + 4])
        out.append((sec + frac / (1e9 if nano else 1e6), sport, dport, ip[ihl + 8:]))
    return out


def rtp_stream(packets, dst_port=None, src_port=None):
    """RTP packets (PT 0) to dst_port (or from src_port): dicts t, seq, ts, ssrc, m, pcm."""
    out = []
    for t, sport, dport, p in packets:
        if dst_port is not None and dport != dst_port:
            continue
        if src_port is not None and sport != src_port:
            continue
        if len(p) < 12 or p[0] >> 6 != 2:
            continue
        cc = p[0] & 15
        pt = p[1] & 0x7F
        if pt != 0:
            continue
        seq, ts, ssrc = struct.unpack(">HII", p[2:12])
        body = p[12 + 4 * cc:]
        out.append(dict(t=t, seq=seq, ts=ts, ssrc=ssrc, m=p[1] >> 7,
                        pcm=[ULAW[b] for b in body]))
    return out


def sip_messages(packets, sip_port, phone_port):
    """SIP messages between the server and the phone, with the SDP essentials."""
    out = []
    for t, sport, dport, p in packets:
        if {sport, dport} != {sip_port, phone_port}:
            continue
        text = p.decode("utf-8", "replace")
        first = text.split("\r\n", 1)[0]
        head, _, body = text.partition("\r\n\r\n")
        cseq = ""
        for line in head.split("\r\n"):
            if line.lower().startswith("cseq:"):
                cseq = line.split(":", 1)[1].strip()
        if "INVITE" not in cseq or "v=0" not in body:
            continue
        keep = [l for l in body.split("\r\n")
                if l[:2] in ("o=", "c=", "m=") or l.startswith(("a=send", "a=recv", "a=inactive",
                                                                 "a=ptime", "a=ssrc", "a=rtcp"))]
        out.append(dict(t=t, dir="server->phone" if sport == sip_port else "phone->server",
                        first=first, cseq=cseq, sdp=keep))
    return out


def rtp_facts(pkts, spans):
    """Continuity facts over the whole stream and per measured span."""
    facts = dict(packets=len(pkts), ssrcs=sorted({"%08x" % p["ssrc"] for p in pkts}),
                 seq_steps={}, ts_steps={}, markers=[], gaps_over_40ms=[])
    for a, b in zip(pkts, pkts[1:]):
        ds = (b["seq"] - a["seq"]) & 0xFFFF
        dt = (b["ts"] - a["ts"]) & 0xFFFFFFFF
        facts["seq_steps"][ds] = facts["seq_steps"].get(ds, 0) + 1
        facts["ts_steps"][dt] = facts["ts_steps"].get(dt, 0) + 1
        if b["t"] - a["t"] > 0.04:
            facts["gaps_over_40ms"].append(round(b["t"] - a["t"], 3))
    t0 = pkts[0]["t"] if pkts else 0
    facts["markers"] = [round(p["t"] - t0, 2) for p in pkts if p["m"]]
    facts["seq_steps"] = {str(k): v for k, v in sorted(facts["seq_steps"].items())}
    facts["ts_steps"] = {str(k): v for k, v in sorted(facts["ts_steps"].items())}

    # Arrival minus media time (ms), relative to the first packet: constant for a regular
    # sender; a drop means packets came early (a burst), a rise late (a gap with the
    # timestamps running on).
    def skew(p):
        return 1000 * ((p["t"] - t0) - ((p["ts"] - pkts[0]["ts"]) & 0xFFFFFFFF) / RATE)

    per = {}
    for name, (a, b) in spans.items():
        sel = [p for p in pkts if a <= p["t"] < b]
        if not sel:
            continue
        sk = [skew(p) for p in sel]
        iat = [y["t"] - x["t"] for x, y in zip(sel, sel[1:])]
        per[name] = dict(packets=len(sel), skew_ms_min=round(min(sk), 1),
                         skew_ms_max=round(max(sk), 1),
                         iat_ms_max=round(1000 * max(iat), 1) if iat else None,
                         iat_ms_min=round(1000 * min(iat), 1) if iat else None)
    facts["segments"] = per
    # Largest burst: most packets inside any 100 ms of arrival time.
    best = 0
    j = 0
    for i, p in enumerate(pkts):
        while pkts[j]["t"] < p["t"] - 0.1:
            j += 1
        best = max(best, i - j + 1)
    facts["max_packets_in_100ms"] = best
    return facts


def wire_envelope(pkts):
    """{bin index (wall time / BIN_S): 0/1} of the tone in the RTP as it arrived."""
    env = {}
    for p in pkts:
        e = envelope(p["pcm"], RATE)
        b0 = int(round(p["t"] / BIN_S))
        for k, v in enumerate(e):
            env[b0 + k] = v
    return env


def find_delay(wire, rec_env, rec_t0):
    """Lag (s) that best aligns the recording (bins from wall time rec_t0) with the wire
    envelope, and the fraction of bins that agree at that lag."""
    base = int(round(rec_t0 / BIN_S))
    best = (-1.0, None)
    if sum(rec_env) == 0:
        return None, 0.0
    for lag in range(-10, int(MAX_LAG_S / BIN_S)):
        agree = n = 0
        for i, v in enumerate(rec_env):
            w = wire.get(base + i - lag)
            if w is None:
                continue
            n += 1
            agree += (w == v)
        if n >= 100 and agree / n > best[0]:
            best = (agree / n, lag)
    return (best[1] * BIN_S if best[1] is not None else None), round(best[0], 3)


# ----------------------------------------------------------------- baresip
class Pulse:
    """A private PulseAudio daemon with one 8 kHz mono null sink "hf"."""

    def __init__(self, workdir):
        # A short private runtime dir: a unix socket path must stay under 108 bytes.
        self.dir = tempfile.mkdtemp(prefix="hf-pulse-")
        self.server = "unix:" + os.path.join(self.dir, "native")
        env = dict(os.environ, HOME=workdir, PULSE_RUNTIME_PATH=self.dir)
        self.log = open(os.path.join(workdir, "pulseaudio.log"), "wb")
        self.proc = subprocess.Popen(
            ["pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1", "--disable-shm=yes",
             "--use-pid-file=no", "-L",
             "module-native-protocol-unix socket=%s auth-anonymous=1" % self.server[5:],
             "-L", "module-null-sink sink_name=hf rate=8000 channels=1 norewinds=1"],
            env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            r = subprocess.run(["pactl", "--server", self.server, "list", "short", "sinks"],
                               capture_output=True, text=True)
            if "hf" in r.stdout:
                return
            time.sleep(0.2)
        raise RuntimeError("pulseaudio did not start (see pulseaudio.log)")

    def record(self):
        """parec of the sink's monitor (raw s16le 8 kHz) read by a thread that notes when each
        chunk arrives: the monitor delivers nothing while the sink idles, so sample positions
        are mapped to time through the arrival times, not by counting from the start."""
        return Parec(self.server)

    def close(self):
        stop(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


class Parec:
    def __init__(self, server):
        self.proc = subprocess.Popen(
            ["parec", "--server", server, "--device", "hf.monitor", "--format", "s16le",
             "--rate", "8000", "--channels", "1", "--latency-msec", "10", "--raw"],
            stdout=subprocess.PIPE)
        self.data = bytearray()
        self.chunks = []  # (monotonic arrival, total bytes so far)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        fd = self.proc.stdout.fileno()
        while True:
            b = os.read(fd, 4096)
            if not b:
                return
            self.data += b
            self.chunks.append((time.monotonic(), len(self.data)))

    def stop(self):
        stop(self.proc)
        self.thread.join(2)

    def samples(self):
        n = len(self.data) // 2
        return list(struct.unpack("<%dh" % n, bytes(self.data[:2 * n])))

    def span(self, a, b):
        """Samples played between monotonic times a and b, and the time of the first."""
        i0 = i1 = None
        for t, total in self.chunks:
            end = total // 2
            start_t = t - end / RATE  # time of sample 0 if this chunk had no gap before it
            if i0 is None and t >= a:
                i0 = max(0, int((a - start_t) * RATE))
            if t >= b:
                i1 = int((b - start_t) * RATE)
                break
        s = self.samples()
        i1 = len(s) if i1 is None else i1
        return s[i0 or 0:i1], a


def stop(proc):
    if proc and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Baresip:
    """baresip (Debian) registered as ``ext``, auto-answering, playing into pulse sink hf."""

    def __init__(self, workdir, server, ext, pulse, silence_wav):
        self.dir = os.path.join(workdir, "baresip")
        os.makedirs(self.dir, exist_ok=True)
        # baresip listens on UDP and TCP at sip_listen and on TLS at the port after it.
        self.sip_port = hfserver.free_port(udp=True, tcp=True, span=2)
        # An even RTP port with its RTCP port, inside four free ones.
        p = hfserver.free_port(udp=True, tcp=False, span=4)
        self.rtp_lo = p + p % 2
        cfg = [
            "poll_method epoll",
            "net_interface 127.0.0.1",
            "sip_listen 127.0.0.1:%d" % self.sip_port,
            "call_local_timeout 120",
            "audio_player pulse,hf",
            "audio_source aufile,%s" % silence_wav,
            "audio_alert pulse,hf",
            "audio_level no",
            # The defaults, written out: they bound what baresip can buffer
            # (BARESIP_BUFFER_MAX_S).
            "jitter_buffer_delay 5-10",
            "audio_buffer 20-160",
            "rtp_ports %d-%d" % (self.rtp_lo, self.rtp_lo + 1),
            "rtcp_mux no",
            "module_path /usr/lib/baresip/modules",
            "module g711.so",
            "module pulse.so",
            "module aufile.so",
            "module_tmp account.so",
        ]
        with open(os.path.join(self.dir, "config"), "w") as f:
            f.write("\n".join(cfg) + "\n")
        acc = ('<sip:{e}@{realm}>;auth_user={e};auth_pass={pw};answermode=auto;'
               'outbound="sip:127.0.0.1:{port};transport=udp";regint=600;audio_codecs=pcmu\n'
               ).format(e=ext, realm=server.realm_of(ext), pw=server.users[ext],
                        port=server.sip_port)
        with open(os.path.join(self.dir, "accounts"), "w") as f:
            f.write(acc)
        self.log_path = os.path.join(workdir, "baresip.log")
        self.log = open(self.log_path, "wb")
        env = dict(os.environ, PULSE_SERVER=pulse.server, HOME=workdir)
        self.proc = subprocess.Popen(["baresip", "-f", self.dir], stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_log(self, needle, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.text():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError("baresip: no %r in its log:\n%s" % (needle, self.text()[-2000:]))

    def close(self):
        stop(self.proc)


# --------------------------------------------------------------- experiment
def api(server, method, path, expect=200):
    import requests
    r = requests.request(method, server.http + "/api/v1" + path, timeout=10,
                         headers={"Authorization": "Bearer hf_test_key_acme"})
    if r.status_code != expect:
        raise RuntimeError("%s %s -> %s %s" % (method, path, r.status_code, r.text))
    return r.json() if r.text else None


def wait_call(server, pred, timeout=10):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = api(server, "GET", "/calls")["calls"]
        if len(last) == 1 and pred(last[0]):
            return last[0]
        time.sleep(0.1)
    raise RuntimeError("call not as expected: %s" % last)


def hold_path(call, mode):
    """The native API path that holds/retrieves: the whole call, or one leg ("sender": 201's,
    so the phone under test is not re-INVITEd and hears silence meanwhile; "phone": 202's)."""
    if mode == "call":
        return "/calls/%s" % call["id"]
    ext = {"sender": "201", "phone": "202"}[mode]
    leg = [l for l in call["legs"] if l["owner_extension"] == ext][0]
    return "/calls/%s/legs/%s" % (call["id"], leg["id"])


def run(phone_kind, cycles, out, binary, mode="call", continuous=True, drain=False):
    os.makedirs(out, exist_ok=True)
    wall_minus_mono = time.time() - time.monotonic()
    burst = make_burst_wav(os.path.join(out, "bursts.wav"))
    silence = audio.make_silence(os.path.join(out, "silence.wav"), seconds=120)
    # baresip 1.0.0 (libre) answers a SHA-256 digest challenge with ENOSYS: offer MD5 only.
    server = hfserver.Server(binary, os.path.join(out, "server"), out, digest_algorithms=("MD5",))
    server.start()
    procs, closers = [], []
    try:
        A = Phone("A", out)
        closers.append(A.close)
        assert A.register(server, "201")["code"] == 200
        A.play(burst)
        pulse = None
        if phone_kind == "pjsua2":
            B = Phone("B", out, drain=drain)
            closers.append(B.close)
            B.register(server, "202")
            B.auto_answer(200)
            b_sip = int(B.local.rsplit(":", 1)[1].split(";")[0].rstrip(">"))
            b_rtp = (B.rtp_port, B.rtp_port + 63)
        else:
            pulse = Pulse(out)
            closers.append(pulse.close)
            B = Baresip(out, server, "202", pulse, silence)
            closers.append(B.close)
            B.wait_log("200 OK")
            b_sip = B.sip_port
            b_rtp = (B.rtp_lo, B.rtp_lo + 1)
        pcap = os.path.join(out, "lo.pcap")
        # The server's SIP, what it sends the phone under test, and what the sender A sends it.
        filt = "udp and (port %d or portrange %d-%d or src portrange %d-%d)" % (
            server.sip_port, b_rtp[0], b_rtp[1], A.rtp_port, A.rtp_port + 63)
        dump = subprocess.Popen(["tcpdump", "-i", "lo", "-U", "-n", "-w", pcap, filt],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        procs.append(dump)
        time.sleep(1.0)
        parec = None
        if pulse:
            parec = pulse.record()
        c = A.call(server.uri("202"))
        A.wait_state("CONFIRMED", call=c, timeout=10)
        call = wait_call(server, lambda x: x["state"] == "answered")
        segments = {}
        recs = {}

        whole = None
        if phone_kind == "pjsua2" and continuous:
            # One recording over the whole call: the call's conference port always has a
            # listener, so the bridge drains its jitter buffer all the time (as a sound card
            # would). Without one, pjmedia's bridge stops reading the port and the jitter
            # buffer fills while nothing records (see --segments).
            path = os.path.join(out, "whole_B.wav")
            whole = (path, B.cmd("record", wav=path)["t_start"])

        def measure(name):
            time.sleep(SETTLE_S)
            if whole:
                t0 = time.monotonic()
                time.sleep(MEASURE_S)
                segments[name] = (t0, t0 + MEASURE_S)
            elif phone_kind == "pjsua2":
                path = os.path.join(out, "%s_B.wav" % name)
                res = B.cmd("record", wav=path)
                t0 = res["t_start"]
                time.sleep(MEASURE_S)
                B.stop_record()
                recs[name] = (path, t0)
                segments[name] = (t0, t0 + MEASURE_S)
            else:
                t0 = time.monotonic()
                time.sleep(MEASURE_S)
                segments[name] = (t0, t0 + MEASURE_S)

        measure("pre")
        holds = []
        for n in range(cycles):
            th = time.monotonic()
            if mode != "none":
                api(server, "POST", hold_path(call, mode) + "/hold")
            time.sleep(HOLD_S)
            tu = time.monotonic()
            if mode != "none":
                api(server, "POST", hold_path(call, mode) + "/unhold")
                wait_call(server, lambda x: not any(l["held"] for l in x["legs"]))
            holds.append((th, tu))
            measure("post%d" % (n + 1))
        if whole:
            B.stop_record()
        A.hangup(call=c)
        time.sleep(0.5)
        if parec:
            parec.stop()
        time.sleep(0.3)
        stop(dump)
    finally:
        for p in procs:
            stop(p)
        for cl in reversed(closers):
            try:
                cl()
            except Exception as e:  # keep tearing down
                print("teardown: %s" % e, file=sys.stderr)
        server.stop()

    # ------------------------------------------------------------ analysis
    packets = read_pcap(pcap)
    mono = [(t - wall_minus_mono, s, d, p) for t, s, d, p in packets]
    rtp = []
    for port in range(b_rtp[0], b_rtp[1] + 1):
        rtp = rtp_stream(mono, port)
        if rtp:
            break
    sent = []
    for port in range(A.rtp_port, A.rtp_port + 64):
        sent = rtp_stream(mono, src_port=port)
        if sent:
            break
    wire = wire_envelope(rtp)
    result = dict(phone=phone_kind, hold=mode, cycles=cycles, delays_ms={}, match={},
                  drain=drain,
                  pjsua2_recording=None if phone_kind != "pjsua2" else
                  "continuous" if whole else "segments")
    if whole:
        # Positions in the file map to time from the recording's start: pjsua2 writes nothing
        # while its port gets no frame, so a gap can only make a later delay look smaller.
        w = audio.read_wav(whole[0])
        for name, (a, b) in segments.items():
            i0, i1 = int((a - whole[1]) * w.rate), int((b - whole[1]) * w.rate)
            d, q = find_delay(wire, envelope(w.samples[i0:i1], w.rate), a)
            result["delays_ms"][name] = None if d is None else round(1000 * d)
            result["match"][name] = q
    elif phone_kind == "pjsua2":
        for name, (path, t0) in recs.items():
            w = audio.read_wav(path)
            d, q = find_delay(wire, envelope(w.samples, w.rate), t0)
            result["delays_ms"][name] = None if d is None else round(1000 * d)
            result["match"][name] = q
    else:
        audio.write_wav(os.path.join(out, "baresip_played.wav"), parec.samples(), rate=RATE)
        steps = [y[1] - x[1] for x, y in zip(parec.chunks, parec.chunks[1:])]
        result["parec_chunk_bytes_max"] = max(steps) if steps else None
        for name, (a, b) in segments.items():
            seg, t0 = parec.span(a, b)
            d, q = find_delay(wire, envelope(seg, RATE), t0)
            result["delays_ms"][name] = None if d is None else round(1000 * d)
            result["match"][name] = q
    spans = dict(segments)
    for n, (th, tu) in enumerate(holds):
        spans["hold%d" % (n + 1)] = (th, tu)
    result["rtp"] = rtp_facts(rtp, spans)
    # The same facts of what A sent the server (ssrc/seq/ts restart on A's own re-INVITEs).
    result["rtp_from_sender"] = rtp_facts(sent, spans)
    t_first = rtp[0]["t"] if rtp else 0
    result["sdp"] = [dict(m, t=round(m["t"] - t_first, 2))
                     for m in sip_messages(mono, server.sip_port, b_sip)]
    result["holds_s"] = [(round(a - t_first, 2), round(b - t_first, 2)) for a, b in holds]
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(result, f, indent=1)
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--phone", choices=["pjsua2", "baresip"], required=True)
    ap.add_argument("--cycles", type=int, default=3)
    ap.add_argument("--hold", choices=["call", "sender", "phone", "none"], default="call",
                    help="hold the whole call, or only the sender's (201) or the phone's (202) "
                    "leg; none: the same pauses without any hold (control)")
    ap.add_argument("--segments", action="store_true",
                    help="pjsua2: one recording per measured segment (the recorder detached "
                    "in between, as the e2e tests do) instead of one over the whole call")
    ap.add_argument("--drain", action="store_true",
                    help="pjsua2: the phone also plays every call to its null sound device, so "
                    "the bridge drains the call's port while nothing records")
    ap.add_argument("--out", required=True)
    ap.add_argument("--bin", default=os.path.join(hfserver.REPO, "target", "debug", "hookflash"))
    a = ap.parse_args()
    if os.path.exists(a.out):
        shutil.rmtree(a.out)
    res = run(a.phone, a.cycles, a.out, a.bin, a.hold, not a.segments, a.drain)
    print(json.dumps({k: res[k] for k in ("phone", "hold", "pjsua2_recording", "drain",
                                          "delays_ms", "match")}))
    print(json.dumps(res["rtp"], indent=1)[:3000])
    for m in res["sdp"]:
        print(m["t"], m["dir"], m["first"], m["cseq"], " | ".join(m["sdp"]))


if __name__ == "__main__":
    main()
