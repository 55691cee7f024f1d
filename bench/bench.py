#!/usr/bin/env python3
"""hookflash bench: hookflash and its peer (Kamailio + rtpengine userspace) in turn, on
loopback, same generator, same run. Scenarios (docs in BENCHMARKS.md):

  rate    call rate with SDP and anchored RTP ports, stepped up (SIPp caller -> server -> SIPp callee)
  media   N concurrent two-party G.711 calls, 20 ms RTP both ways (bench/rtpgen), relay CPU per call,
          loss, added jitter; RSS per active call
  hold    API hold request -> re-INVITE on the wire, with N active calls (hookflash only; skipped
          with a note while the build has no hold endpoint)
  soak    RSS/PSS before and after >= 20,000 calls
  soakmedia  (not in the default set; hookflash only) the soak with real RTP both ways on every
          call (SIPp 3.6.1 rtp_stream on caller and callee): per block calls, failures, packets
          sent / relayed (/metrics) / delivered (tcpdump counts), RSS; after the run the live-state
          gauges (calls, dialogs, transactions, RTP ports) must be back to 0. Issue 17's long run:
          --only soakmedia --servers hookflash --set soak_blocks=10 --set soak_block_calls=10000
  record  N concurrent two-party G.711 calls relayed, then the same calls recorded (native API
          recording on every call): CPU per recorded vs relayed-only call, loss, dropped
          recorder frames, WAV lengths (hookflash only: the peer has no call recording)
  app     application calls/s: SIPp (trunk) -> a DID routed to an application whose webhook
          (bench/apphook.py) answers say + hangup; stepped up; CPU per call, answer -> first
          prompt RTP packet and the webhook's own time from a capture of lo (hookflash only:
          the peer has no application runtime)
  cluster (not in the default set) calls/s, INVITE->200 and CPU ms per call (nodes, Kamailio,
          PostgreSQL) of two nodes on PostgreSQL behind Kamailio (deploy/kamailio) vs one node
          on SQLite, the rate scenario's calls (bench/cluster.py): --only cluster --servers hookflash
  app_rcml  the same calls with the application in RCML (language = "rcml"; the webhook answers
          <Response><Say>..</Say><Hangup/></Response>); not in the default set

Results: bench/results/<stamp>/results.json and table.md (also printed). Every loop is bounded
in count and time; traffic goes to 127.0.0.1 only.
"""
import argparse
import bisect
import concurrent.futures
import json
import math
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import (  # noqa: E402
    BENCH, LOOP, CpuWindow, Hookflash, KamailioRtpengine, SippFactory, cleanup, free_port, http,
    loadavg, log, machine, spawn, stop_proc, wait_until)

UNUSED_MEDIA_PORT = 9  # "discard": scenario 1 needs SDP and anchoring, no audio
# Call length in the rate and soak scenarios. Not zero: with an immediate BYE, Kamailio's
# parallel workers sometimes forward the BYE before the ACK and the callee aborts the call.
SHORT_CALL_MS = 100

PROFILES = {
    # full run: ~25 min on 2 cores
    # rates step on past 2,000 to 5,000 calls/s: stepping stops at the first failing step, so
    # the result is the server's ceiling, not the bench's top step
    "full": dict(rates=[100, 200, 300, 400, 500, 600, 800, 1000, 1250, 1500, 1750, 2000, 2500,
                        3000, 4000, 5000], rate_secs=8,
                 media_n=[500, 1000, 2000], media_warmup=3, media_secs=10, media_settle_secs=36,
                 setup_rate=200,
                 hold_n=1000, hold_requests=200, soak_warmup_secs=36, soak_blocks=2,
                 soak_block_calls=10000, soak_rate=400, soak_media_ms=400,
                 soak_media_hold_ms=800, soak_drain_secs=45, record_n=[100, 250, 500],
                 record_rounds=2,
                 app_rates=[50, 100, 200, 300, 400, 500, 600, 800, 1000], app_secs=8,
                 app_warmup_calls=5),
    # validation: a couple of minutes, tiny loads
    "quick": dict(rates=[50, 100], rate_secs=3, media_n=[20, 60], media_warmup=1, media_settle_secs=2,
                  media_secs=3, setup_rate=50, hold_n=20, hold_requests=10, soak_warmup_secs=2,
                  soak_blocks=2, soak_block_calls=200, soak_rate=100, soak_media_ms=400,
                  soak_media_hold_ms=800, soak_drain_secs=45, record_n=[10, 30],
                  record_rounds=2, app_rates=[5, 20], app_secs=3, app_warmup_calls=2),
}


class Ctx:
    def __init__(self, args):
        self.args = args
        self.p = dict(PROFILES[args.profile])
        for kv in args.set:
            k, _, v = kv.partition("=")
            if k not in self.p:
                raise SystemExit("unknown parameter %s (known: %s)" % (k, ", ".join(sorted(self.p))))
            cur = self.p[k]
            if isinstance(cur, list):
                self.p[k] = [int(x) for x in v.split(",") if x]
            else:
                self.p[k] = type(cur)(v)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.out = os.path.abspath(os.path.join(args.results, stamp + "-" + args.profile))
        os.makedirs(self.out, exist_ok=True)
        self.hf_bin = os.path.abspath(args.hookflash)
        self.rtpgen = os.path.abspath(args.rtpgen)
        self.results = {"profile": args.profile, "params": self.p, "machine": machine(),
                        "versions": versions(),
                        "hookflash_build": os.environ.get("BENCH_HF_DESC", "?"),
                        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                        "loadavg_before": loadavg(), "scenarios": {}}

    def workdir(self, name):
        d = os.path.join(self.out, name)
        os.makedirs(d, exist_ok=True)
        return d


def start_server(ctx, kind, name, uac_port, uas_port):
    """(server, sipp factory) with the SIPp callee registered where needed."""
    wd = ctx.workdir(name)
    sipp = SippFactory(os.path.join(wd, "sipp"))
    if kind == "hookflash":
        srv = Hookflash(ctx.hf_bin, wd, trunk_port=uac_port).start()
        try:
            srv.register_callee(sipp, uas_port)
        except BaseException:
            srv.stop()
            raise
    else:
        srv = KamailioRtpengine(wd, callee_port=uas_port).start()
    return srv, sipp


def in_range(addr, rng):
    ip, _, port = addr.rpartition(":")
    try:
        return ip == LOOP and rng[0] <= int(port) <= rng[1]
    except ValueError:
        return False


def media_addrs(lines, prefix):
    return [l.split()[1] for l in lines if l.startswith(prefix)]


# ====================================================================== 1. call rate
def scenario_rate(ctx, kind):
    p = ctx.p
    uac_port, uas_port = free_port(), free_port()
    srv, sipp = start_server(ctx, kind, "rate-" + kind.split("+")[0], uac_port, uas_port)
    steps = []
    try:
        for rate in p["rates"]:
            secs = p["rate_secs"]
            calls = int(rate * secs)
            uas = sipp.start("uas-%d" % rate, "uas.xml", local_port=uas_port,
                             subst=dict(MEDIA_PORT=UNUSED_MEDIA_PORT), timeout_s=secs + 40)
            time.sleep(0.3)
            t0 = time.monotonic()
            uac = sipp.start("uac-%d" % rate, "uac.xml", remote=srv.sip, local_port=uac_port,
                             subst=dict(DIAL=srv.dial(), MEDIA_PORT=UNUSED_MEDIA_PORT, HOLD_MS=SHORT_CALL_MS),
                             calls=calls, rate=rate, limit=rate * 5 + 100, timeout_s=secs + 30)
            # CPU over the steady part: from ~1 s in until the last calls are placed.
            time.sleep(min(1.0, secs * 0.2))
            win = CpuWindow({"server": srv.pids, "sig": srv.sig_pids, "media": srv.media_pids,
                             "gen": lambda: [uac.pid, uas.pid]}).start()
            wait_until(lambda: not uac.alive(), max(0.2, t0 + secs - 0.3 - time.monotonic()))
            cpu = win.stop()
            r = uac.wait(secs + 45)
            wall = time.monotonic() - t0
            wait_until(lambda: not uas.alive(), 5)
            u = uas.stop()
            addrs = media_addrs(r.logs(), "answer-media ") + media_addrs(u.logs(), "offer-media ")
            anchored = sum(1 for a in addrs if in_range(a, srv.rtp_range))
            srv.wait_idle(30)
            step = dict(rate=rate, calls=calls, created=r.created, ok=r.successful,
                        failed=r.failed + u.failed, retrans=r.retransmissions + u.retransmissions,
                        rc=r.rc, completed_per_s=r.successful / wall if wall else 0,
                        rtd_ms=r.rtd_ms(), sdp_seen=len(addrs), sdp_anchored=anchored, **cpu)
            step["passed"] = (r.successful == calls and step["failed"] == 0 and r.rc == 0
                              and anchored == len(addrs) == 2 * calls)
            # Did SIPp offer the rate? It catches up when it falls behind, so a step it could
            # not drive shows no failure, only a lower rate: not a measurement of this rate.
            step["created_per_s"] = r.creation_rate(calls)
            step["rate_kept"] = rate_kept(step["created_per_s"], rate)
            step["clean"] = step["passed"] and step["retrans"] == 0 and step["rate_kept"]
            step["stop"] = step_stop_reason(step, calls)
            steps.append(step)
            log("rate %s %d/s: ok %d/%d failed %d retrans %d anchored %d/%d rtd %.1f ms "
                "server %.0f%% gen %.0f%%" % (kind, rate, r.successful, calls, step["failed"],
                                             step["retrans"], anchored, len(addrs),
                                             step["rtd_ms"] if step["rtd_ms"] is not None else -1,
                                             cpu["server_cpu_pct"],
                                             cpu["gen_cpu_pct"])
                + ("" if step["rate_kept"] else " (SIPp created only %s calls/s)"
                   % fmt(step["created_per_s"])))
            if step["stop"]:
                if r.rc not in (0, None):
                    log("  %s" % r.summary().splitlines()[0])
                log("  stepping stops: %s" % step["stop"])
                break
    finally:
        srv.stop()
    return rate_summary(steps, p["rates"])


def rate_kept(created_per_s, rate):
    """SIPp created calls at >= 90 % of the offered rate (2 calls of slack for the 1 s
    granularity of its statistics); unknown (no statistics row) counts as kept."""
    return created_per_s is None or created_per_s >= 0.9 * rate - 2


def step_stop_reason(step, calls):
    """Why stepping stops after this step ('' = go on): a failed call (or a SIPp error, or an
    un-anchored call), > 1 % retransmissions, or SIPp not keeping the offered rate."""
    if not step["passed"]:
        return "%d failed calls, %d ok of %d, SIPp rc %s" % (step["failed"], step["ok"], calls,
                                                              step["rc"])
    if step["retrans"] > 0.01 * calls:
        return "%d retransmissions (> 1 %% of the calls)" % step["retrans"]
    if not step["rate_kept"]:
        return ("SIPp could not keep the rate (%s calls/s created): the load generator's limit, "
                "not the server's" % fmt(step["created_per_s"]))
    return ""


def rate_summary(steps, rates):
    best = max((s for s in steps if s["clean"]), key=lambda s: s["rate"], default=None)
    best0 = max((s for s in steps if s["passed"] and s.get("rate_kept", True)),
                key=lambda s: s["rate"], default=None)
    last = steps[-1] if steps else None
    if last is None:
        stopped = "no step ran"
    elif last.get("stop"):
        stopped = "%d/s: %s" % (last["rate"], last["stop"])
    elif last["rate"] == max(rates):
        stopped = "top step (%d/s) reached without a failing step" % last["rate"]
    else:
        stopped = "%d/s: not clean (%d retransmissions)" % (last["rate"], last["retrans"])
    return dict(steps=steps, max_clean_rate=best["rate"] if best else 0,
                max_rate_no_failures=best0["rate"] if best0 else 0, at_max=best,
                stopped=stopped, top_step=max(rates),
                generator_limited=bool(last and not last.get("rate_kept", True)))


# ====================================================================== 2. media relay
def run_rtpgen(ctx, wd, name, a_targets, b_targets, pa, pb, cpu_groups):
    at = os.path.join(wd, name + ".a")
    bt = os.path.join(wd, name + ".b")
    with open(at, "w") as f:
        f.write("\n".join(a_targets) + "\n")
    with open(bt, "w") as f:
        f.write("\n".join(b_targets) + "\n")
    p = ctx.p
    args = [ctx.rtpgen, "--a-bind", "%s:%d" % (LOOP, pa), "--b-bind", "%s:%d" % (LOOP, pb),
            "--a-targets", at, "--b-targets", bt, "--warmup", str(p["media_warmup"]),
            "--measure", str(p["media_secs"])]
    if os.geteuid() == 0:
        # The generator must offer its packets on time even when the relay saturates the
        # machine; otherwise it is starved like any other thread and offers less.
        args = ["nice", "-n", "-10"] + args
    errf = open(os.path.join(wd, name + ".stderr"), "wb")
    proc = spawn(args, stdout=subprocess.PIPE, stderr=errf, stdin=subprocess.DEVNULL,
                            text=True)
    groups = dict(cpu_groups)
    groups["gen"] = lambda: [proc.pid]
    win = None
    cpu = {}
    result = None
    deadline = time.monotonic() + p["media_warmup"] + p["media_secs"] + 30
    # Bounded: rtpgen stops by itself after warmup+measure; we kill it past the deadline.
    killer = threading.Timer(deadline - time.monotonic(), lambda: proc.poll() is None and proc.kill())
    killer.start()
    try:
        for line in proc.stdout:
            line = line.strip()
            if line == "MEASURE":
                win = CpuWindow(groups).start()
            elif line == "END" and win:
                cpu = win.stop()
            elif line.startswith("{"):
                result = json.loads(line)
    finally:
        killer.cancel()
        proc.wait(10)
        errf.close()
    if result is None:
        raise RuntimeError("rtpgen gave no result (rc %s), see %s" % (proc.returncode, errf.name))
    result.update(cpu)
    # Packets relayed per second in the CPU window (what the relay really got to forward).
    if cpu.get("wall_s"):
        result["relayed_pps"] = result["recv_measured"] / cpu["wall_s"]
    if cpu.get("server_cpu_s") is not None and result["recv_measured"]:
        us = cpu["server_cpu_s"] / result["recv_measured"] * 1e6
        result["server_us_per_packet"] = us
        # One G.711 call = 100 packets/s through the relay (50 each way).
        result["cpu_per_call_pct"] = us * 100 / 1e6 * 100
    result["generator_on_time"] = (result["sender_lag_p99_us"] <= 5000 and result["gen_rx_overflow"] == 0
                                   and result["send_secs"] <= p["media_warmup"] + p["media_secs"] + 1)
    return result


def scenario_media_baseline(ctx):
    """The generator against itself (no relay): its own floor of transit and jitter."""
    wd = ctx.workdir("media-baseline")
    out = []
    for n in ctx.p["media_n"]:
        pa, pb = free_port(), free_port()
        r = run_rtpgen(ctx, wd, "direct-%d" % n, ["%s:%d" % (LOOP, pb)] * n,
                       ["%s:%d" % (LOOP, pa)] * n, pa, pb, {})
        r["n"] = n
        out.append(r)
        log("media baseline N=%d: loss %.3f%% jitter mean %.1f us transit p99 %d us gen %.0f%%"
            % (n, r["loss_pct"], r["jitter_mean_us"], r["transit_p99_us"], r.get("gen_cpu_pct", 0)))
    return out


def setup_calls(ctx, srv, sipp, uac_port, uas_port, n, hold_ms, pa, pb, tag,
                uac_xml="uac.xml", uas_xml="uas.xml"):
    """N calls up through srv; returns (uac, uas, a_addrs, b_addrs) or raises."""
    rate = ctx.p["setup_rate"]
    life_s = hold_ms / 1000.0 + n / rate + 60
    uas = sipp.start("uas-" + tag, uas_xml, local_port=uas_port, subst=dict(MEDIA_PORT=pb),
                     calls=n, timeout_s=int(life_s))
    time.sleep(0.3)
    uac = sipp.start("uac-" + tag, uac_xml, remote=srv.sip, local_port=uac_port,
                     subst=dict(DIAL=srv.dial(), MEDIA_PORT=pa, HOLD_MS=hold_ms),
                     calls=n, rate=rate, limit=n + 10, timeout_s=int(life_s))

    def ready():
        a = media_addrs(uac.log_lines(), "answer-media ")
        b = media_addrs(uas.log_lines(), "offer-media ")
        return (a, b) if len(a) >= n and len(b) >= n else None

    got = wait_until(lambda: ready() or not uac.alive(), n / rate + 30, 0.25)
    ab = ready()
    if not ab:
        r = uac.stop()
        uas.stop()
        raise RuntimeError("only some calls came up: %s" % r.summary())
    time.sleep(1.0)  # last ACKs
    return uac, uas, ab[0], ab[1]


def scenario_media(ctx, kind):
    """One fresh server per N (memory per call from a clean start; calls of a step cannot
    linger into the next). The calls are held far longer than the measurement and are cut by
    stopping SIPp and the server afterwards."""
    p = ctx.p
    name = "media-" + kind.split("+")[0]
    wd = ctx.workdir(name)
    steps = []
    for n in p["media_n"]:
        uac_port, uas_port = free_port(), free_port()
        srv, sipp = start_server(ctx, kind, "%s/n%d" % (name, n), uac_port, uas_port)
        uac = uas = None
        try:
            time.sleep(1.0)
            mem0 = srv.memory_kb()
            tot0 = srv.total_mem_kb()
            pa, pb = free_port(), free_port()
            hold_ms = int((3 * n / p["setup_rate"] + p["media_warmup"] + p["media_secs"] + 60) * 1000)
            t0 = time.monotonic()
            try:
                uac, uas, a, b = setup_calls(ctx, srv, sipp, uac_port, uas_port, n, hold_ms,
                                             pa, pb, "n%d" % n)
            except RuntimeError as e:
                log("media %s N=%d: setup failed: %s" % (kind, n, str(e).splitlines()[0]))
                steps.append(dict(n=n, error=str(e)[:2000]))
                break
            setup_s = time.monotonic() - t0
            mem1 = srv.memory_kb()
            tot1 = srv.total_mem_kb()
            anchored = sum(1 for x in a + b if in_range(x, srv.rtp_range))
            r = run_rtpgen(ctx, wd, "relay-%d" % n, a[:n], b[:n], pa, pb,
                           {"server": srv.media_pids, "sig": srv.sig_pids})
            r["window_ok"] = time.monotonic() < t0 + hold_ms / 1000.0
            # Memory again once the set-up transactions are gone (SIP keeps a finished INVITE
            # transaction 64*T1 = 32 s): what an active call costs while it lasts, apart from
            # the transient state of call set-up (which scales with the call rate instead).
            settle = t0 + setup_s + p["media_settle_secs"] - time.monotonic()
            if settle > 0:
                time.sleep(settle)
            tot2 = srv.total_mem_kb()
            mem2 = srv.memory_kb()
            ru, rs = uac.kill(), uas.kill()
            uac = uas = None
            r.update(n=n, anchored=anchored, sdp_seen=len(a) + len(b), setup_s=setup_s,
                     calls_failed=ru.failed + rs.failed,
                     mem_before=mem0, mem_at_n=mem1,
                     mem_per_call_kb=(tot1 - tot0) / n if n else 0,
                     mem_settled=mem2,
                     mem_settled_per_call_kb=(tot2 - tot0) / n if n else 0,
                     cpu_per_call_naive_pct=r.get("server_cpu_pct", 0) / n if n else 0)
            r.setdefault("cpu_per_call_pct", r["cpu_per_call_naive_pct"])
            steps.append(r)
            log("media %s N=%d: server %.1f%% (%.4f%%/call) gen %.0f%% loss %.3f%% "
                "jitter mean %.1f us p99 %.1f us transit p99 %d us anchored %d/%d mem %.1f KB/call"
                " (settled %.1f)"
                "%s" % (kind, n, r.get("server_cpu_pct", 0), r["cpu_per_call_pct"],
                        r.get("gen_cpu_pct", 0), r["loss_pct"], r["jitter_mean_us"],
                        r["jitter_p99_us"], r["transit_p99_us"], anchored, 2 * n,
                        r["mem_per_call_kb"], r["mem_settled_per_call_kb"],
                        "" if r["generator_on_time"] else " (generator starved: not valid)"))
        finally:
            for s in (uac, uas):
                if s:
                    s.kill()
            srv.stop()
    return dict(steps=steps)


# ====================================================================== 3. hold latency
def _call_ids(body):
    try:
        doc = json.loads(body)
    except ValueError:
        return []
    items = doc
    if isinstance(doc, dict):
        for k in ("data", "calls", "items", "records"):
            if isinstance(doc.get(k), list):
                items = doc[k]
                break
    if not isinstance(items, list):
        return []
    ids = []
    for it in items:
        if isinstance(it, dict):
            for k in ("id", "callId", "call_id", "uuid"):
                if it.get(k):
                    ids.append(str(it[k]))
                    break
    return ids


HOLD_APIS = [
    # (list path, hold method, hold path template, body)
    ("/api/v1/calls", "PUT", "/api/v1/calls/{id}/hold", {"value": True}),
    ("/api/v1/calls", "POST", "/api/v1/calls/{id}/hold", {}),
    ("/v2/calls", "PUT", "/v2/calls/{id}/hold", {"value": True}),
]


def parse_pcap(path):
    """[(t_ns, proto, sport, dport, payload)] from a nanosecond pcap of lo (EN10MB)."""
    out = []
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        return out
    magic = struct.unpack("<I", data[:4])[0]
    endian = "<" if magic in (0xa1b23c4d, 0xa1b2c3d4) else ">"
    nano = struct.unpack(endian + "I", data[:4])[0] == 0xa1b23c4d
    link = struct.unpack(endian + "I", data[20:24])[0]
    off = 24
    while off + 16 <= len(data):
        sec, frac, caplen, _ = struct.unpack(endian + "IIII", data[off:off + 16])
        pkt = data[off + 16: off + 16 + caplen]
        off += 16 + caplen
        t = sec * 1_000_000_000 + (frac if nano else frac * 1000)
        l2 = 14 if link == 1 else (16 if link == 113 else 4 if link == 0 else 14)
        ip = pkt[l2:]
        if len(ip) < 20 or ip[0] >> 4 != 4:
            continue
        ihl = (ip[0] & 15) * 4
        proto = ip[9]
        l4 = ip[ihl:]
        if proto == 17 and len(l4) >= 8:
            sport, dport = struct.unpack(">HH", l4[:4])
            out.append((t, "udp", sport, dport, l4[8:]))
        elif proto == 6 and len(l4) >= 20:
            sport, dport = struct.unpack(">HH", l4[:4])
            doff = (l4[12] >> 4) * 4
            out.append((t, "tcp", sport, dport, l4[doff:]))
    return out


def percentile(vals, q):
    if not vals:
        return None
    s = sorted(vals)
    return s[max(0, min(len(s) - 1, int(-(-len(s) * q // 1)) - 1))]


HOLD_WARMUP = 5


def capture_api_and_sip(wd, srv, name):
    """tcpdump on lo of the requests to srv's HTTP port and what leaves its SIP port, running
    and capturing once this returns: (process, pcap path, its log file)."""
    pcap = os.path.join(wd, name)
    flt = "(tcp dst port %d) or (udp src port %d)" % (srv.http_port, srv.sip_port)
    tlog = open(os.path.join(wd, "tcpdump.log"), "wb")
    # --immediate-mode: without it libpcap hands packets over in blocks up to 1 s late and
    # whatever is pending at SIGINT is lost. Timestamps are the kernel's either way.
    tcpd = spawn(["tcpdump", "-i", "lo", "-nn", "-U", "--immediate-mode", "-s", "512", "-B", "32768",
                  "--time-stamp-precision=nano", "-w", pcap, flt],
                 stdout=tlog, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    wait_until(lambda: b"listening" in open(tlog.name, "rb").read(), 5)

    def capturing():  # a request on the filtered port shows up in the file (-U)
        http("GET", srv.http + "/healthz", timeout=1)
        time.sleep(0.05)
        return os.path.exists(pcap) and os.path.getsize(pcap) > 24
    wait_until(capturing, 5, 0.1)
    return tcpd, pcap, tlog


def hold_latencies(pcap, srv, method):
    """(hold requests, INVITEs, first and last re-INVITE latency per request in ms) from a
    capture of capture_api_and_sip: each request is paired with the INVITEs the server sent
    before the next request."""
    pkts = parse_pcap(pcap)
    reqs = [t for t, pr, sp, dp, pl in pkts
            if pr == "tcp" and dp == srv.http_port and pl.startswith(method.encode() + b" ")
            and b"/hold" in pl.split(b"\r\n", 1)[0]]
    invs = [t for t, pr, sp, dp, pl in pkts
            if pr == "udp" and sp == srv.sip_port and pl.startswith(b"INVITE ")]
    first, last = [], []
    for i, t in enumerate(reqs):
        nxt = reqs[i + 1] if i + 1 < len(reqs) else float("inf")
        mine = [x for x in invs if t <= x < nxt]
        if mine:
            first.append((mine[0] - t) / 1e6)
            last.append((mine[-1] - t) / 1e6)
    return reqs, invs, first, last


def scenario_hold(ctx):
    p = ctx.p
    n, k = p["hold_n"], p["hold_requests"]
    uac_port, uas_port = free_port(), free_port()
    srv, sipp = start_server(ctx, "hookflash", "hold-hookflash", uac_port, uas_port)
    auth = {"Authorization": "Bearer " + srv.API_KEY, "Accept": "application/json"}
    wd = ctx.workdir("hold-hookflash")
    uac = uas = tcpd = None
    try:
        probes = {}
        for path in sorted({a[0] for a in HOLD_APIS}):
            st, _ = http("GET", srv.http + path, headers=auth)
            probes[path] = st
        if not any(st == 200 for st in probes.values()):
            note = ("skipped: this build has no call list/hold API (GET %s). The scenario runs "
                    "as soon as PUT /api/v1/calls/{id}/hold or PUT /v2/calls/{id}/hold exists."
                    % ", ".join("%s -> %s" % kv for kv in probes.items()))
            log("hold: " + note)
            return dict(skipped=True, note=note)
        if not shutil.which("tcpdump"):
            return dict(skipped=True, note="skipped: tcpdump not installed")
        hold_ms = int((n / p["setup_rate"] + k * 0.1 + 30) * 1000)
        pa, pb = free_port(), free_port()
        uac, uas, a, b = setup_calls(ctx, srv, sipp, uac_port, uas_port, n, hold_ms, pa, pb,
                                     "hold", "uac_hold.xml", "uas_hold.xml")
        # Which API answers for real?
        api = ids = None
        for list_path, method, tmpl, body in HOLD_APIS:
            if probes.get(list_path) != 200:
                continue
            st, text = http("GET", srv.http + list_path, headers=auth, timeout=10)
            got = _call_ids(text) if st == 200 else []
            if len(got) < min(n, k):
                continue
            st, text = http(method, srv.http + tmpl.format(id=got[0]), body=body, headers=auth)
            if st is not None and 200 <= st < 300:
                api, ids = (list_path, method, tmpl, body), got[1:]
                break
            probes["%s %s" % (method, tmpl)] = st
        if api is None:
            note = ("skipped: calls are listed but no hold endpoint answered 2xx (%s). Runs when "
                    "PUT /api/v1/calls/{id}/hold or PUT /v2/calls/{id}/hold exists."
                    % ", ".join("%s -> %s" % kv for kv in probes.items()))
            log("hold: " + note)
            return dict(skipped=True, note=note)
        time.sleep(0.5)
        tcpd, pcap, tlog = capture_api_and_sip(wd, srv, "hold.pcap")
        list_path, method, tmpl, body = api
        client = []
        # The first requests after the idle set-up pay cold caches and sleeping threads (and
        # this VM's idle vCPU wake-ups): HOLD_WARMUP requests go first and are not counted.
        for cid in ids[:k + HOLD_WARMUP]:
            t1 = time.monotonic_ns()
            st, _ = http(method, srv.http + tmpl.format(id=cid), body=body, headers=auth)
            client.append(((time.monotonic_ns() - t1) / 1e6, st))
            time.sleep(0.02)  # both re-INVITEs answered before the next request
        time.sleep(1.5)
        tcpd.send_signal(signal.SIGINT)
        tcpd.wait(10)
        tlog.close()
        reqs, invs, first, last = hold_latencies(pcap, srv, method)
        first, last, client = first[HOLD_WARMUP:], last[HOLD_WARMUP:], client[HOLD_WARMUP:]
        ok = sum(1 for _, st in client if st and 200 <= st < 300)
        res = dict(skipped=False, api="%s %s" % (method, tmpl), active_calls=n,
                   requests=len(client), ok=ok, captured_requests=len(reqs),
                   reinvites=len(invs), matched=len(first),
                   p50_ms=percentile(first, 0.5), p99_ms=percentile(first, 0.99),
                   max_ms=max(first) if first else None,
                   last_leg_p50_ms=percentile(last, 0.5), last_leg_p99_ms=percentile(last, 0.99),
                   client_p50_ms=percentile([c for c, _ in client], 0.5),
                   client_p99_ms=percentile([c for c, _ in client], 0.99))
        log("hold: %s" % json.dumps(res))
        return res
    finally:
        if tcpd:
            stop_proc(tcpd)
        if uac:
            uac.stop()
        if uas:
            uas.stop()
        srv.stop()


# ====================================================================== 4. soak
def scenario_soak(ctx, kind, rate):
    p = ctx.p
    uac_port, uas_port = free_port(), free_port()
    srv, sipp = start_server(ctx, kind, "soak-" + kind.split("+")[0], uac_port, uas_port)
    blocks = []
    try:
        time.sleep(1.0)
        idle = srv.memory_kb()
        # The warm-up runs at the soak's rate for longer than SIP's Timer J / 2xx-linger (32 s),
        # so finished-call state kept by the stack reaches its steady level before "before".
        plan = [("warmup", int(rate * p["soak_warmup_secs"]))] + [
            ("soak%d" % (i + 1), p["soak_block_calls"]) for i in range(p["soak_blocks"])]
        for name, calls in plan:
            uas = sipp.start("uas-" + name, "uas.xml", local_port=uas_port,
                             subst=dict(MEDIA_PORT=UNUSED_MEDIA_PORT),
                             timeout_s=int(calls / rate) + 60, trace_logs=False)
            time.sleep(0.3)
            t0 = time.monotonic()
            r = sipp.run("uac-" + name, "uac.xml", remote=srv.sip, local_port=uac_port,
                         subst=dict(DIAL=srv.dial(), MEDIA_PORT=UNUSED_MEDIA_PORT, HOLD_MS=SHORT_CALL_MS),
                         calls=calls, rate=rate, limit=rate * 5 + 100,
                         timeout_s=int(calls / rate) + 45, trace_logs=False)
            wall = time.monotonic() - t0
            wait_until(lambda: not uas.alive(), 5)
            u = uas.stop()
            srv.wait_idle(30)
            time.sleep(1.0)
            mem = srv.memory_kb()
            blocks.append(dict(block=name, calls=calls, ok=r.successful, failed=r.failed + u.failed,
                               retrans=r.retransmissions + u.retransmissions, wall_s=wall,
                               total_kb=srv.total_mem_kb(), **mem))
            log("soak %s %s: %d/%d ok, failed %d, mem %s" % (kind, name, r.successful, calls,
                                                         r.failed + u.failed, mem))
    finally:
        srv.stop()
    soak_calls = sum(b["calls"] for b in blocks if b["block"] != "warmup")
    res = dict(rate=rate, idle=idle, blocks=blocks, soak_calls=soak_calls)
    if len(blocks) >= 2:
        before = blocks[0]["total_kb"]
        after = blocks[-1]["total_kb"]
        res.update(before_kb=before, after_kb=after, growth_kb=after - before,
                   growth_per_1000_calls_kb=(after - before) / soak_calls * 1000 if soak_calls else 0)
    return res


# ====================================================================== 4b. soak with media
# Gauges of live state that must be back to 0 once every call has ended and SIP's 32 s
# transaction linger (Timer J / RFC 6026) is over: calls, SIP dialogs and transactions, RTP
# port pairs and relay bridges, recordings, conferences.
SOAK_GAUGES = ("hookflash_active_calls", "hookflash_sip_dialogs", "hookflash_sip_transactions",
               "hookflash_rtp_ports_in_use", "hookflash_rtp_bridges_active",
               "hookflash_recordings_active", "hookflash_conferences_active")
RELAYED = "hookflash_rtp_packets_relayed_total"
CALLS_ENDED = "hookflash_calls_ended_total"
FOREIGN = "hookflash_rtp_packets_dropped_total"
# RSS growth per 1,000 calls after the warm-up that still counts as flat (KB); why this bound,
# in BENCHMARKS.md (scenario 4b).
SOAK_FLAT_KB_PER_1000 = 64


def ulaw(sample):
    """G.711 u-law byte of a 16-bit linear sample (ITU-T G.711, with the usual 0x84 bias)."""
    sign = 0x80 if sample < 0 else 0
    mag = min(abs(int(sample)) + 0x84, 32635)
    exp = 7
    while exp > 0 and not mag & (0x4000 >> (7 - exp)):
        exp -= 1
    return ~(sign | exp << 4 | (mag >> (exp + 3)) & 0x0F) & 0xFF


def write_tone(path, ms):
    """`ms` of a 440 Hz tone as raw u-law (SIPp's rtp_stream plays raw codec bytes: 160 bytes
    = one 20 ms PCMU packet); returns the packets in it."""
    n = 8 * ms - (8 * ms) % 160
    with open(path, "wb") as f:
        f.write(bytes(ulaw(8000 * math.sin(2 * math.pi * 440 * i / 8000)) for i in range(n)))
    return n // 160


class PacketCount:
    """Counts packets matching a filter on lo with tcpdump (kernel BPF, nothing written):
    `tcpdump -w /dev/null` reports "N packets captured" and the kernel's drops at SIGINT."""

    def __init__(self, wd, name, flt):
        self.log = os.path.join(wd, "tcpdump-%s.log" % name)
        self.proc, self.tlog = start_capture("/dev/null", flt, self.log, snaplen=64)

    def stop(self):
        dropped = stop_capture(self.proc, self.tlog)
        with open(self.log, "rb") as f:
            m = re.search(rb"(\d+) packets captured", f.read())
        return (int(m.group(1)) if m else None), dropped


def soak_rss_flat(points):
    """Least-squares slope of RSS (KB) over calls, per 1,000 calls: [(calls so far, KB)]."""
    if len(points) < 2:
        return None
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if not sxx:
        return None
    return sum((x - mx) * (y - my) for x, y in points) / sxx * 1000


def drain(srv, timeout):
    """Waits (bounded) until SIP's finished transactions are gone; (seconds, metrics)."""
    t = time.monotonic()
    wait_until(lambda: srv.metrics().get("hookflash_sip_transactions") == 0, timeout, 0.5)
    return time.monotonic() - t, srv.metrics()


def scenario_soakmedia(ctx, rate):
    """hookflash only. The soak of scenario 4 with real RTP both ways on every call: SIPp
    (3.6.1, RTPSTREAM) caller and callee each play `soak_media_ms` of PCMU (one packet per
    20 ms) through the relay once the call is answered, and the call is held
    `soak_media_hold_ms` from the ACK. Per block: calls, failures, packets the callers sent
    towards the relay and the relay delivered back to them (tcpdump counts on lo), packets
    relayed per /metrics, RSS. After the warm-up and at the end the server is drained
    (transactions gone) and its live-state gauges must all be 0."""
    p = ctx.p
    uac_port, uas_port = free_port(), free_port()
    srv, sipp = start_server(ctx, "hookflash", "soakmedia-hookflash", uac_port, uas_port)
    wd = ctx.workdir("soakmedia-hookflash")
    tone = os.path.join(wd, "tone.ulaw")
    per_stream = write_tone(tone, p["soak_media_ms"])
    expected_per_call = 2 * per_stream
    hold_ms = max(p["soak_media_hold_ms"], p["soak_media_ms"] + 100)
    capture = bool(shutil.which("tcpdump")) and os.geteuid() == 0
    # SIPp 3.6.1 sends every call's stream from its -mp port (and names it in the SDP).
    uac_mp, uas_mp = free_port(span=2), free_port(span=2)
    lo, hi = srv.rtp_range
    to_relay = ("udp and (src port %d or src port %d) and dst portrange %d-%d"
                % (uac_mp, uas_mp, lo, hi))
    from_relay = ("udp and src portrange %d-%d and (dst port %d or dst port %d)"
                  % (lo, hi, uac_mp, uas_mp))
    # A packet that reaches a relay port with no socket (a caller's stream running past its
    # call's end, when the generator falls behind) is answered by ICMP port unreachable, which
    # quotes its UDP header: source port at icmp[28], destination port at icmp[30].
    closed = ("icmp and icmp[0] = 3 and icmp[1] = 3 and (icmp[28:2] = %d or icmp[28:2] = %d) "
              "and icmp[30:2] >= %d and icmp[30:2] <= %d" % (uac_mp, uas_mp, lo, hi))
    blocks, counts = [], []
    res = dict(rate=rate, media_ms=p["soak_media_ms"], hold_ms=hold_ms,
               packets_per_stream=per_stream, expected_packets_per_call=expected_per_call,
               capture=capture, flat_bound_kb_per_1000=SOAK_FLAT_KB_PER_1000,
               sip_port=srv.sip_port, media_ports=dict(uac=uac_mp, uas=uas_mp),
               note="hookflash only: the per-call packet check and the gauges read hookflash's "
                    "/metrics")
    try:
        time.sleep(1.0)
        res["idle"] = dict(rss_kb=srv.total_mem_kb())
        plan = [("warmup", int(rate * p["soak_warmup_secs"]))] + [
            ("soak%d" % (i + 1), p["soak_block_calls"]) for i in range(p["soak_blocks"])]
        done = 0
        for name, calls in plan:
            m0 = srv.metrics()
            counts = ([PacketCount(wd, name + "-to-relay", to_relay),
                       PacketCount(wd, name + "-from-relay", from_relay),
                       PacketCount(wd, name + "-closed", closed)] if capture else [])
            life = int(calls / rate + hold_ms / 1000.0) + 60
            uas = sipp.start("uas-" + name, "uas_media.xml", local_port=uas_port, media_port=uas_mp,
                             subst=dict(MEDIA_FILE=tone), timeout_s=life)
            time.sleep(0.3)
            t0 = time.monotonic()
            uac = sipp.start("uac-" + name, "uac_media.xml", remote=srv.sip, local_port=uac_port,
                             media_port=uac_mp,
                             subst=dict(DIAL=srv.dial(), MEDIA_FILE=tone, HOLD_MS=hold_ms),
                             calls=calls, rate=rate, limit=int(rate * (hold_ms / 1000.0 + 5)) + 100,
                             timeout_s=life)
            win = CpuWindow({"server": srv.pids, "gen": lambda: [uac.pid, uas.pid],
                             "capture": lambda: [c.proc.pid for c in counts
                                                 if c.proc.poll() is None]}).start()
            wait_until(lambda: not uac.alive(), life + 15, 0.2)
            cpu = win.stop()
            r = uac.wait(10)
            wall = time.monotonic() - t0
            # Calls still up in the server once the callers have hung up, and how long they
            # take to end (a call the server keeps after its BYE shows here). The callee phone
            # stays up until then: stopped earlier, the server's BYEs still in flight (resent
            # when a loaded machine answers late) would reach the next block's callee on the
            # same port and count there as failed calls that never were its own.
            left = srv.active_calls()
            t_idle = time.monotonic()
            idle = srv.wait_idle(40)
            idle_s = time.monotonic() - t_idle
            wait_until(lambda: srv.metrics().get("hookflash_sip_dialogs") == 0, 10, 0.2)
            u = uas.stop()
            time.sleep(1.0)  # the relay's last packets and the ports' release
            sent = delivered = cap_dropped = unreachable = None
            if counts:
                (sent, d1), (delivered, d2), (unreachable, d3) = [c.stop() for c in counts]
                cap_dropped = d1 + d2 + d3
                counts = []
            m1 = srv.metrics()
            addrs = media_addrs(r.logs(), "answer-media ") + media_addrs(u.logs(), "offer-media ")
            relayed = m1.get(RELAYED, 0) - m0.get(RELAYED, 0)
            ok = r.successful
            delta = lambda k: m1.get(k, 0) - m0.get(k, 0)
            ended = {k[len(CALLS_ENDED):].strip("{}"): delta(k) for k in m1
                     if k.startswith(CALLS_ENDED + "{") and delta(k)}
            b = dict(block=name, calls=calls, ok=ok, failed=r.failed + u.failed,
                     retrans=r.retransmissions + u.retransmissions, rc=r.rc, wall_s=wall,
                     created_per_s=r.creation_rate(calls), idle=bool(idle),
                     active_at_end=left, idle_after_s=idle_s,
                     calls_started=delta("hookflash_calls_started_total"), calls_ended=ended,
                     sdp_seen=len(addrs),
                     sdp_anchored=sum(1 for a in addrs if in_range(a, srv.rtp_range)),
                     expected=expected_per_call * ok, sent=sent, relayed=relayed,
                     delivered=delivered, to_closed_port=unreachable, capture_dropped=cap_dropped,
                     foreign_dropped=m1.get(FOREIGN, 0) - m0.get(FOREIGN, 0),
                     relayed_per_call=relayed / ok if ok else None,
                     rss_kb=srv.total_mem_kb(), server_cpu_pct=cpu["server_cpu_pct"],
                     gen_cpu_pct=cpu["gen_cpu_pct"], capture_cpu_pct=cpu["capture_cpu_pct"],
                     gauges={k: m1.get(k) for k in SOAK_GAUGES})
            # Every call carried all its packets both ways: the callers sent them (capture),
            # the relay forwarded each one (/metrics) and delivered each one (capture).
            b["media_ok"] = (relayed == b["expected"]
                             and (not capture or cap_dropped or sent == delivered == relayed))
            # The generator sent every packet of every call (else the check above fails on
            # the generator, not the relay). Packets that reached the relay and were neither
            # delivered, dropped as foreign nor refused by a closed port: still queued at a
            # relay port when its call ended (a stream or a relay running late), or lost. And
            # packets delivered on the wire but missing from /metrics (the relay adds a
            # bridge's count to the global counter in batches and when the bridge ends).
            b["generator_on_time"] = None if sent is None or cap_dropped else sent == b["expected"]
            if None not in (sent, delivered, unreachable) and not cap_dropped:
                b["unaccounted"] = sent - delivered - b["foreign_dropped"] - unreachable
                b["uncounted"] = delivered - relayed
            b["passed"] = (ok == calls and b["failed"] == 0 and r.rc == 0
                           and b["sdp_anchored"] == len(addrs) == 2 * calls and b["media_ok"]
                           and b["calls_started"] == calls)
            if name != "warmup":
                done += calls
            b["calls_after_warmup"] = done
            blocks.append(b)
            log("soakmedia %s: %d/%d ok, failed %d, retrans %d; packets/call relayed %s "
                "(expected %d); sent %s relayed %d delivered %s foreign %d to closed ports %s "
                "not relayed otherwise %s, delivered but not counted %s%s; RSS %d KB; gauges %s; hookflash %.0f%% gen %.0f%% "
                "capture %.0f%%; calls started %d, ended %s, %s up when the phones were done, "
                "idle after %.1f s" % (
                    name, ok, calls, b["failed"], b["retrans"], fmt(b["relayed_per_call"], "%.2f"),
                    expected_per_call, fmt(sent), relayed, fmt(delivered), b["foreign_dropped"],
                    fmt(unreachable), fmt(b.get("unaccounted")), fmt(b.get("uncounted")),
                    " (capture dropped %d)" % cap_dropped if cap_dropped else "", b["rss_kb"],
                    b["gauges"], cpu["server_cpu_pct"], cpu["gen_cpu_pct"],
                    cpu["capture_cpu_pct"], b["calls_started"], ended, fmt(left), idle_s))
            if name == "warmup":
                secs, m = drain(srv, p["soak_drain_secs"])
                res["after_warmup_drained"] = dict(rss_kb=srv.total_mem_kb(), drain_s=secs,
                                                   gauges={k: m.get(k) for k in SOAK_GAUGES})
            if not b["passed"]:
                log("  %s" % r.summary().splitlines()[0])
        secs, m = drain(srv, p["soak_drain_secs"])
        res["end_drained"] = dict(rss_kb=srv.total_mem_kb(), drain_s=secs,
                                  gauges={k: m.get(k) for k in SOAK_GAUGES},
                                  relayed_total=m.get(RELAYED), foreign_total=m.get(FOREIGN))
        log("soakmedia drained after %.0f s: RSS %d KB, gauges %s" % (
            secs, res["end_drained"]["rss_kb"], res["end_drained"]["gauges"]))
    finally:
        for c in counts:  # a block that failed half-way
            stop_proc(c.proc)
            c.tlog.close()
        srv.stop()
    soak = [b for b in blocks if b["block"] != "warmup"]
    calls = sum(b["calls"] for b in soak)
    res.update(blocks=blocks, soak_calls=calls, failed=sum(b["failed"] for b in soak),
               ok=sum(b["ok"] for b in soak), relayed=sum(b["relayed"] for b in soak),
               expected=sum(b["expected"] for b in soak),
               sent=sum(b["sent"] for b in soak) if capture and soak else None,
               delivered=sum(b["delivered"] for b in soak) if capture and soak else None,
               foreign_dropped=sum(b["foreign_dropped"] for b in soak),
               to_closed_port=sum(b["to_closed_port"] for b in soak) if capture and soak else None,
               unaccounted=(sum(b["unaccounted"] for b in soak)
                            if soak and all("unaccounted" in b for b in soak) else None),
               uncounted=(sum(b["uncounted"] for b in soak)
                          if soak and all("uncounted" in b for b in soak) else None),
               blocks_media_ok=sum(1 for b in soak if b["media_ok"]),
               blocks_passed=sum(1 for b in soak if b["passed"]),
               blocks_generator_on_time=sum(1 for b in soak if b.get("generator_on_time")),
               calls_started=sum(b["calls_started"] for b in soak),
               idle_after_s_max=max((b["idle_after_s"] for b in soak), default=None))
    ended = {}
    for b in soak:
        for k, v in b["calls_ended"].items():
            ended[k] = ended.get(k, 0) + v
    res["calls_ended"] = ended
    # Flat: RSS after each block against calls so far. The first block still carries the
    # warm-up's allocator growth, so the slope is fitted from the end of the first block on
    # (with 2 blocks: the difference between them).
    pts = [(b["calls_after_warmup"], b["rss_kb"]) for b in soak]
    res["rss_slope_kb_per_1000"] = soak_rss_flat(pts[1:] if len(pts) > 2 else pts)
    if "after_warmup_drained" in res and "end_drained" in res and calls:
        a, e = res["after_warmup_drained"]["rss_kb"], res["end_drained"]["rss_kb"]
        res["drained_growth_kb_per_1000"] = (e - a) / calls * 1000
    g = res.get("end_drained", {}).get("gauges", {})
    res["gauges_zero"] = bool(g) and all(v == 0 for v in g.values())
    slope = res["rss_slope_kb_per_1000"]
    res["rss_flat"] = slope is not None and slope <= SOAK_FLAT_KB_PER_1000
    return res


# ====================================================================== 5. recorded calls
REC_WORKERS = 8  # concurrent API requests while starting/stopping the recordings


def wav_info(path):
    """(frames, channels, rate, bits, header_consistent) of a PCM WAV (frames = samples per
    channel; consistent = the RIFF and data sizes match the file's length), or None."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
        size = os.path.getsize(path)
    except OSError:
        return None
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos, fmt = 12, None
    while pos + 8 <= len(head):
        cid, clen = head[pos:pos + 4], struct.unpack("<I", head[pos + 4:pos + 8])[0]
        if cid == b"fmt " and pos + 24 <= len(head):
            _, ch, rate, _, align, bits = struct.unpack("<HHIIHH", head[pos + 8:pos + 24])
            fmt = (ch, rate, bits, align)
        elif cid == b"data":
            if not fmt or fmt[3] == 0:
                return None
            ch, rate, bits, align = fmt
            consistent = (pos + 8 + clen == size and clen % align == 0
                          and struct.unpack("<I", head[4:8])[0] == size - 8)
            return clen // align, ch, rate, bits, consistent
        pos += 8 + clen + (clen & 1)
    return None


def recording_api(srv, auth, call_ids, action):
    """POST {"action": action} to every call's recording, REC_WORKERS at a time;
    {call_id: (t_sent, t_answered, status)} (monotonic seconds)."""
    def one(cid):
        t1 = time.monotonic()
        st, _ = http("POST", srv.http + "/api/v1/calls/%s/recording" % cid,
                     body={"action": action}, headers=auth, timeout=30)
        return cid, (t1, time.monotonic(), st)
    with concurrent.futures.ThreadPoolExecutor(REC_WORKERS) as ex:
        return dict(ex.map(one, call_ids))


def check_wavs(srv, auth, rounds):
    """Reads the WAV header of every recording and compares its length with the time between
    the start and the stop request of its call. `rounds`: per round of recordings
    (started, stopped) as returned by recording_api; a call's recordings are matched to the
    rounds in the order they started."""
    st, text = http("GET", srv.http + "/api/v1/recordings?limit=1000", headers=auth, timeout=10)
    try:
        recs = json.loads(text).get("recordings", []) if st == 200 else []
    except ValueError:
        recs = []
    by_call = {}
    for r in recs:
        if isinstance(r, dict) and r.get("id"):
            by_call.setdefault(r.get("call_id"), []).append(r)
    for v in by_call.values():
        v.sort(key=lambda r: r.get("started_at_ms") or 0)
    rec_dir = os.path.join(srv.workdir, "data", "recordings")
    out = dict(files=0, missing=0, format_ok=0, header_ok=0, duration_ok=0, listed=len(recs))
    diffs, secs = [], []
    for i, (started, stopped) in enumerate(rounds):
        for cid, (stop_sent, stop_done, _) in stopped.items():
            mine = by_call.get(cid, [])
            r = mine[i] if i < len(mine) else None
            info = wav_info(os.path.join(rec_dir, "%s.wav" % r["id"])) if r else None
            if not info:
                out["missing"] += 1
                continue
            frames, ch, rate, bits, consistent = info
            out["files"] += 1
            out["format_ok"] += (ch, rate, bits) == (2, 8000, 16)
            out["header_ok"] += bool(consistent)
            start_sent, start_done, _ = started[cid]
            # The server started the recording between start_sent and start_done and stopped
            # it between stop_sent and stop_done. The recorder fills the file to the time
            # from start to stop, to within 2 frames (it tops up only when more than one
            # 20 ms frame is missing at the stop): frames/8000 s must lie in that window.
            sec = frames / 8000.0
            secs.append(sec)
            out["duration_ok"] += (stop_sent - start_done - 0.045) <= sec <= (stop_done - start_sent + 0.02)
            mid = (stop_sent + stop_done) / 2 - (start_sent + start_done) / 2
            diffs.append((sec - mid) * 1000)
    out.update(diff_ms_min=min(diffs) if diffs else None, diff_ms_max=max(diffs) if diffs else None,
               seconds_min=min(secs) if secs else None, seconds_max=max(secs) if secs else None)
    return out


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def scenario_record(ctx):
    """hookflash only (the peer, Kamailio + rtpengine userspace, has no call recording). One
    fresh server per N. The same N calls carry the same RTP load in alternating windows,
    relayed only and with a recording running on every call (started before the window and
    stopped after it through the native API), `record_rounds` times each, so that both
    figures see the same background load on the machine. CPU per recorded call is compared
    with CPU per relayed-only call of the same run and N."""
    p = ctx.p
    name = "record-hookflash"
    wd = ctx.workdir(name)
    steps = []
    rounds = p["record_rounds"]
    for n in p["record_n"]:
        uac_port, uas_port = free_port(), free_port()
        srv, sipp = start_server(ctx, "hookflash", "%s/n%d" % (name, n), uac_port, uas_port)
        auth = {"Authorization": "Bearer " + srv.API_KEY, "Accept": "application/json"}
        uac = uas = None
        try:
            time.sleep(1.0)
            pa, pb = free_port(), free_port()
            window = p["media_warmup"] + p["media_secs"] + 3
            hold_ms = int((3 * n / p["setup_rate"] + rounds * (2 * window + n / 20.0) + 90) * 1000)
            t0 = time.monotonic()
            try:
                uac, uas, a, b = setup_calls(ctx, srv, sipp, uac_port, uas_port, n, hold_ms,
                                             pa, pb, "rec%d" % n)
            except RuntimeError as e:
                log("record N=%d: setup failed: %s" % (n, str(e).splitlines()[0]))
                steps.append(dict(n=n, error=str(e)[:2000]))
                break
            st, text = http("GET", srv.http + "/api/v1/calls", headers=auth, timeout=10)
            ids = _call_ids(text) if st == 200 else []
            if len(ids) != n:
                raise RuntimeError("GET /api/v1/calls: status %s, %d call ids for %d calls"
                                   % (st, len(ids), n))
            groups = {"server": srv.media_pids}
            relays, recs, api_rounds = [], [], []
            m0 = srv.metrics()
            active, active_after, start_s, stop_s = [], [], [], []
            for i in range(rounds):
                relays.append(run_rtpgen(ctx, wd, "n%d-relay-%d" % (n, i + 1), a[:n], b[:n],
                                         pa, pb, groups))
                started = recording_api(srv, auth, ids, "start")
                ok_start = [c for c, v in started.items() if v[2] == 200]
                start_s.append(max(v[1] for v in started.values()) - min(v[0] for v in started.values()))
                active.append(srv.metrics().get("hookflash_recordings_active"))
                recs.append(run_rtpgen(ctx, wd, "n%d-record-%d" % (n, i + 1), a[:n], b[:n],
                                       pa, pb, groups))
                t_stop = time.monotonic()
                stopped = recording_api(srv, auth, ok_start, "stop")
                stop_s.append(time.monotonic() - t_stop)
                active_after.append(srv.metrics().get("hookflash_recordings_active"))
                api_rounds.append((started, {c: v for c, v in stopped.items() if v[2] == 200}))
            m1 = srv.metrics()
            window_ok = time.monotonic() < t0 + hold_ms / 1000.0
            ru, rs = uac.kill(), uas.kill()
            uac = uas = None
            wavs = check_wavs(srv, auth, api_rounds)
            with open(os.path.join(srv.workdir, "hookflash.log"), "rb") as f:
                behind_warnings = f.read().count(b"recording writer falls behind")
            dropped = m1.get("hookflash_recording_frames_dropped_total")
            if dropped is not None:
                dropped -= m0.get("hookflash_recording_frames_dropped_total", 0)
            step = dict(
                n=n, rounds=rounds, relay_windows=relays, record_windows=recs,
                window_ok=window_ok, calls_failed=ru.failed + rs.failed,
                starts=n * rounds, starts_ok=sum(len([1 for v in st_.values() if v[2] == 200])
                                                for st_, _ in api_rounds),
                stops_ok=sum(len(sp) for _, sp in api_rounds),
                start_s=start_s, stop_s=stop_s, recordings_active=active,
                recordings_active_after=active_after, dropped_frames=dropped,
                writer_behind_warnings=behind_warnings, wav=wavs)
            for k, ws in (("relay", relays), ("record", recs)):
                step[k + "_cpu_pct"] = _mean([w.get("server_cpu_pct") for w in ws])
                step[k + "_cpu_pct_each"] = [w.get("server_cpu_pct") for w in ws]
                step[k + "_machine_cpu_pct_each"] = [w.get("machine_cpu_pct") for w in ws]
                step[k + "_cpu_per_call_pct"] = (step[k + "_cpu_pct"] or 0) / n
                sent = sum(w.get("sent_measured", 0) for w in ws)
                lost = sum(w.get("lost", 0) for w in ws)
                step[k + "_loss_pct"] = 100.0 * lost / sent if sent else None
                step[k + "_gen_on_time"] = all(w.get("generator_on_time") for w in ws)
                step[k + "_sender_lag_p99_us"] = max(w.get("sender_lag_p99_us", 0) for w in ws)
            if step["relay_cpu_pct"] and step["record_cpu_pct"] is not None:
                step["recording_cost_per_call_pct"] = (step["record_cpu_pct"] - step["relay_cpu_pct"]) / n
                step["record_vs_relay"] = step["record_cpu_pct"] / step["relay_cpu_pct"]
            steps.append(step)
            log("record N=%d: relay only %s%% (%.4f%%/call, loss %.3f%%), recorded %s%% "
                "(%.4f%%/call, loss %.3f%%); recordings started %d/%d stopped %d (active %s); "
                "dropped frames %s; WAVs %d/%d with the expected length (%s..%s s, %s..%s ms), "
                "headers consistent %d, format 2ch/8kHz/16bit %d%s" % (
                    n, "/".join(fmt(x) for x in step["relay_cpu_pct_each"]),
                    step["relay_cpu_per_call_pct"], step["relay_loss_pct"] or 0,
                    "/".join(fmt(x) for x in step["record_cpu_pct_each"]),
                    step["record_cpu_per_call_pct"], step["record_loss_pct"] or 0,
                    step["starts_ok"], step["starts"], step["stops_ok"], active, dropped,
                    wavs["duration_ok"], wavs["files"],
                    fmt(wavs["seconds_min"], "%.2f"), fmt(wavs["seconds_max"], "%.2f"),
                    fmt(wavs["diff_ms_min"]), fmt(wavs["diff_ms_max"]),
                    wavs["header_ok"], wavs["format_ok"],
                    "" if step["relay_gen_on_time"] and step["record_gen_on_time"]
                    else " (generator not on time: loss/latency describe the machine)"))
        finally:
            for sp in (uac, uas):
                if sp:
                    sp.kill()
            srv.stop()
    return dict(steps=steps, note="hookflash only: the peer (Kamailio + rtpengine userspace) "
                                  "has no call recording")


# ====================================================================== 6. application calls
APP_DID = "4930100200"  # routed to the bench's application (the callee's DID is 4930100100)
APP_TEXT = "Hello, this is a benchmark."  # what bench/apphook.py makes the application say
APP_BYE_TIMEOUT_MS = 30000
PEER_APP_NOTE = ("n/a: Kamailio + rtpengine has no application runtime. Published, not measured: "
                 "jambonz ~5 calls/s per vCPU")


def start_apphook(wd, rcml=False):
    """bench/apphook.py in its own process (its CPU is measured apart): (proc, port)."""
    port = free_port(tcp=True)
    out = open(os.path.join(wd, "apphook.log"), "w")
    proc = spawn([sys.executable, os.path.join(BENCH, "apphook.py"), "--port", str(port)]
                 + (["--rcml"] if rcml else []),
                 stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    ok = wait_until(lambda: proc.poll() is not None or b"LISTENING" in open(out.name, "rb").read(), 10)
    if proc.poll() is not None or not ok:
        raise RuntimeError("bench/apphook.py did not start; see %s" % out.name)
    return proc, port, out


def hook_stats(port, reset=False):
    st, text = http("GET", "http://%s:%d/__stats%s" % (LOOP, port, "?reset=1" if reset else ""))
    try:
        return json.loads(text) if st == 200 else {}
    except ValueError:
        return {}


def start_capture(path, flt, logpath, snaplen=8192):
    """tcpdump on lo with kernel nanosecond timestamps; (proc, log file) once it captures."""
    tlog = open(logpath, "wb")
    # --immediate-mode: without it libpcap hands packets over in blocks up to 1 s late and
    # whatever is pending at SIGINT is lost. Timestamps are the kernel's either way.
    proc = spawn(["tcpdump", "-i", "lo", "-nn", "-U", "--immediate-mode", "-s", str(snaplen),
                  "-B", "65536", "--time-stamp-precision=nano", "-w", path, flt],
                 stdout=tlog, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    wait_until(lambda: proc.poll() is not None or b"listening" in open(logpath, "rb").read(), 5)
    return proc, tlog


def stop_capture(proc, tlog):
    """Stops tcpdump; packets it reported dropped (by the kernel or its interface)."""
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        stop_proc(proc)
    tlog.close()
    with open(tlog.name, "rb") as f:
        text = f.read().decode("utf-8", "replace")
    dropped = 0
    for m in re.finditer(r"(\d+) packets dropped by (?:kernel|interface)", text):
        dropped += int(m.group(1))
    return dropped


_CALL_ID = re.compile(rb"\r\n(?:call-id|i)[ \t]*:[ \t]*([^\r\n]+)", re.I)
_CSEQ_INVITE = re.compile(rb"\r\ncseq[ \t]*:[ \t]*\d+[ \t]+INVITE", re.I)
_M_AUDIO = re.compile(rb"\r\nm=audio (\d+) ")
_HOOK_CALL_ID = re.compile(rb'"call_id"\s*:\s*"([^"]+)"')


def app_timings(pkts, sip_port, sink_port, hook_port):
    """Per call, from a capture of lo (kernel timestamps, ns): the INVITE in, the 200 out, the
    first prompt packet out (the first RTP packet with the marker bit from the port named in
    the 200's SDP, sent to the caller's media port, after the INVITE: hookflash marks the first
    packet of a playback), and the call_hook's request and response on the wire."""
    invite, ok200, port_of = {}, {}, {}
    rtp = {}  # hookflash RTP port -> [t] of marked packets towards the caller
    flows = {}  # hook client port -> [(t, "req"/"resp", payload)]
    for t, pr, sp, dp, pl in pkts:
        if pr == "udp" and dp == sip_port and pl.startswith(b"INVITE "):
            m = _CALL_ID.search(pl)
            if m:
                invite.setdefault(m.group(1).strip(), t)
        elif pr == "udp" and sp == sip_port and pl.startswith(b"SIP/2.0 200") and _CSEQ_INVITE.search(pl):
            m, a = _CALL_ID.search(pl), _M_AUDIO.search(pl)
            if m and a:
                cid = m.group(1).strip()
                if cid not in ok200:
                    ok200[cid] = t
                    port_of[cid] = int(a.group(1))
        elif pr == "udp" and dp == sink_port and len(pl) >= 12 and pl[1] & 0x80:
            rtp.setdefault(sp, []).append(t)
        elif pr == "tcp" and pl:
            if dp == hook_port:
                flows.setdefault(sp, []).append((t, "req", pl))
            elif sp == hook_port:
                flows.setdefault(dp, []).append((t, "resp", pl))
    hook = {}  # call id -> (t request, t response)
    hook_rt = []
    for evs in flows.values():
        req_t, body = None, b""
        for t, kind, pl in evs:
            if kind == "req":
                if req_t is None:
                    req_t, body = t, b""
                body += pl
            elif req_t is not None:
                hook_rt.append((t - req_t) / 1e6)
                m = _HOOK_CALL_ID.search(body)
                if m:
                    hook.setdefault(m.group(1), (req_t, t))
                req_t = None
    for v in rtp.values():
        v.sort()
    out = []
    for cid, t2 in ok200.items():
        ti = invite.get(cid)
        ts = rtp.get(port_of[cid], [])
        i = bisect.bisect_left(ts, ti if ti is not None else t2)
        first = ts[i] if i < len(ts) else None
        h = hook.get(cid)
        out.append(dict(invite=ti, ok=t2, prompt=first, hook_req=h[0] if h else None,
                        hook_resp=h[1] if h else None))
    return out, hook_rt


def _dist(vals):
    vals = [v for v in vals if v is not None]
    return dict(n=len(vals), p50=percentile(vals, 0.5), p99=percentile(vals, 0.99),
                max=max(vals) if vals else None)


def scenario_app(ctx, language="jambonz"):
    """hookflash only (the peer has no application runtime). Calls from a trunk (SIPp) to a DID
    routed to an application whose call_hook (bench/apphook.py) answers say + hangup; the TTS
    clip is synthesised once (warm-up calls) and cached by text. Rates step up like scenario
    1; per step: calls, failures, hookflash CPU per call, and from a capture of lo the time
    from the 200 to the prompt's first RTP packet, beside the webhook's own response time.
    language "rcml": the same calls and prompt, the application written in RCML (its requests are
    form fields without the SIP Call-ID, so the per-call webhook timings are not matched)."""
    p = ctx.p
    rcml = language == "rcml"
    wd = ctx.workdir("app-rcml-hookflash" if rcml else "app-hookflash")
    if not shutil.which("espeak-ng"):
        note = "skipped: espeak-ng is not installed (the say verb needs it)"
        log("app: " + note)
        return dict(skipped=True, note=note)
    capture = bool(shutil.which("tcpdump")) and os.geteuid() == 0
    hook, hook_port, hook_out = start_apphook(wd, rcml=rcml)
    uac_port = free_port()
    srv = None
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    steps = []
    try:
        srv = Hookflash(ctx.hf_bin, wd, trunk_port=uac_port,
                        apps=[("bench", "http://%s:%d/call" % (LOOP, hook_port), [APP_DID],
                               language)]).start()
        sipp = SippFactory(os.path.join(wd, "sipp"))
        # The prompt goes to a socket that is never read: the kernel drops what overflows its
        # small buffer, no ICMP goes back, and the capture sees every packet on the wire.
        sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sink_port = free_port()
        sink.bind((LOOP, sink_port))
        subst = dict(DIAL=APP_DID, MEDIA_PORT=sink_port, BYE_TIMEOUT_MS=APP_BYE_TIMEOUT_MS)
        # Warm-up (not counted): the first say synthesises the clip, later ones hit the cache.
        n = p["app_warmup_calls"]
        w = sipp.run("uac-warmup", "uac_app.xml", remote=srv.sip, local_port=uac_port, subst=subst,
                     calls=n, rate=max(1, n), limit=n + 5, timeout_s=60)
        if w.successful != n:
            raise RuntimeError("warm-up application calls failed: %s" % w.summary())
        call_s = _sipp_call_length_s(w)
        log("app warm-up: %d/%d calls ok, call length %s s (the prompt)" % (
            w.successful, n, fmt(call_s, "%.2f")))
        srv.wait_idle(30)
        for rate in p["app_rates"]:
            secs = p["app_secs"]
            calls = int(rate * secs)
            hook_stats(hook_port, reset=True)
            tcpd = None
            pcap = os.path.join(wd, "app-%d.pcap" % rate)
            if capture:
                flt = ("(udp port %d) or (udp dst port %d and (udp[9] & 0x80) != 0) or "
                       "(tcp port %d and (((ip[2:2] - ((ip[0] & 0xf) << 2)) - ((tcp[12] & 0xf0) >> 2)) != 0))"
                       % (srv.sip_port, sink_port, hook_port))
                tcpd, tlog = start_capture(pcap, flt, os.path.join(wd, "tcpdump-%d.log" % rate))
            # Whole step: from before the first INVITE until every call has ended, so that
            # server CPU / calls is the cost of a call. (SIPp's own CPU is not in it: a process
            # that has exited has no /proc entry to read.)
            win = CpuWindow({"server": srv.pids, "hook": lambda: [hook.pid],
                             "capture": lambda: [tcpd.pid] if tcpd and tcpd.poll() is None else []}).start()
            t0 = time.monotonic()
            uac = sipp.start("uac-%d" % rate, "uac_app.xml", remote=srv.sip, local_port=uac_port,
                             subst=subst, calls=calls, rate=rate,
                             limit=int(rate * ((call_s or 3) + 5)) + 100, timeout_s=secs + 60)
            wait_until(lambda: not uac.alive(), secs + 90, 0.1)
            r = uac.wait(10)
            srv.wait_idle(30)
            cpu = win.stop()
            wall = time.monotonic() - t0
            hs = hook_stats(hook_port)
            dropped = None
            timing = {}
            if tcpd:
                dropped = stop_capture(tcpd, tlog)
                pkts = parse_pcap(pcap)
                per_call, hook_rt = app_timings(pkts, srv.sip_port, sink_port, hook_port)
                ms = lambda a, b: (a - b) / 1e6 if a is not None and b is not None else None
                timing = dict(
                    captured_answers=len(per_call),
                    prompts_seen=sum(1 for c in per_call if c["prompt"] is not None),
                    answer_to_prompt_ms=_dist([ms(c["prompt"], c["ok"]) for c in per_call]),
                    invite_to_200_ms=_dist([ms(c["ok"], c["invite"]) for c in per_call]),
                    hook_wire_ms=_dist(hook_rt),
                    invite_to_hook_ms=_dist([ms(c["hook_req"], c["invite"]) for c in per_call]),
                    hook_resp_to_200_ms=_dist([ms(c["ok"], c["hook_resp"]) for c in per_call]),
                    invite_to_prompt_minus_hook_ms=_dist([
                        ms(c["prompt"], c["invite"]) - ms(c["hook_resp"], c["hook_req"])
                        for c in per_call if None not in (c["prompt"], c["invite"], c["hook_req"],
                                                          c["hook_resp"])]))
                if not os.environ.get("BENCH_KEEP_PCAP"):
                    os.unlink(pcap)
            addrs = media_addrs(r.logs(), "answer-media ")
            anchored = sum(1 for a in addrs if in_range(a, srv.rtp_range))
            step = dict(rate=rate, calls=calls, created=r.created, ok=r.successful, failed=r.failed,
                        retrans=r.retransmissions, rc=r.rc,
                        completed_per_s=r.successful / wall if wall else 0,
                        rtd_ms=r.rtd_ms(), call_length_s=_sipp_call_length_s(r),
                        sdp_seen=len(addrs), sdp_anchored=anchored,
                        hook_requests=hs.get("requests"), hook_proc_us_p50=hs.get("proc_us_p50"),
                        hook_proc_us_p99=hs.get("proc_us_p99"), capture_dropped=dropped, **cpu)
            step.update(timing)
            step["server_cpu_ms_per_call"] = (cpu["server_cpu_s"] / r.successful * 1000
                                              if r.successful else None)
            step["hook_cpu_ms_per_call"] = (cpu["hook_cpu_s"] / r.successful * 1000
                                            if r.successful else None)
            step["passed"] = (r.successful == calls and r.failed == 0 and r.rc == 0
                              and anchored == len(addrs) == calls and hs.get("requests") == calls)
            step["created_per_s"] = r.creation_rate(calls)
            step["rate_kept"] = rate_kept(step["created_per_s"], rate)
            # Every call heard its prompt (known only with a capture that dropped nothing).
            missing = calls - timing["prompts_seen"] if timing else None
            step["prompts_missing"] = missing
            step["prompts_ok"] = missing == 0 or missing is None or bool(dropped)
            step["clean"] = (step["passed"] and step["retrans"] == 0 and step["rate_kept"]
                             and step["prompts_ok"])
            step["stop"] = step_stop_reason(step, calls) or (
                "" if step["prompts_ok"] else "%d calls without a prompt packet" % missing)
            steps.append(step)
            ap = timing.get("answer_to_prompt_ms", {})
            hw = timing.get("hook_wire_ms", {})
            log("app %d/s: ok %d/%d failed %d retrans %d anchored %d/%d hook requests %s; "
                "hookflash %.0f%% of a core, %s ms CPU/call; answer->prompt p50 %s p99 %s ms; "
                "webhook p50 %s p99 %s ms; prompts %s/%d%s%s" % (
                    rate, r.successful, calls, r.failed, r.retransmissions, anchored, len(addrs),
                    hs.get("requests"), cpu["server_cpu_pct"],
                    fmt(step["server_cpu_ms_per_call"], "%.3f"),
                    fmt(ap.get("p50"), "%.2f"), fmt(ap.get("p99"), "%.2f"),
                    fmt(hw.get("p50"), "%.2f"), fmt(hw.get("p99"), "%.2f"),
                    fmt(timing.get("prompts_seen")), calls,
                    " (capture dropped %d packets)" % dropped if dropped else "",
                    "" if step["rate_kept"] else " (SIPp created only %s calls/s)"
                    % fmt(step["created_per_s"])))
            if step["stop"]:
                if r.rc not in (0, None):
                    log("  %s" % r.summary().splitlines()[0])
                log("  stepping stops: %s" % step["stop"])
                break
    finally:
        if srv:
            srv.stop()
        stop_proc(hook)
        hook_out.close()
        sink.close()
    res = rate_summary(steps, p["app_rates"])
    res.update(prompt_text=APP_TEXT, call_length_s=call_s if steps else None, language=language,
               capture=capture, peer=PEER_APP_NOTE,
               note="hookflash only: the peer (Kamailio + rtpengine) has no application runtime")
    return res


def _sipp_call_length_s(r):
    """Mean call length (s) from SIPp's cumulative statistics, or None."""
    v = r.stats.get("CallLength(C)") or ""
    m = re.match(r"(\d+):(\d+):(\d+)[:.](\d+)", v)
    if not m:
        return None
    h, mi, s, us = (int(x) for x in m.groups())
    return (h * 60 + mi) * 60 + s + us / (10 ** len(m.group(4)))


# ====================================================================== table
def fmt(v, spec="%.0f"):
    if v is None:
        return "-"
    try:
        return spec % v
    except TypeError:
        return str(v)


def ratio(a, b, spec="%.2f"):
    try:
        if a is None or b in (None, 0):
            return "-"
        return spec % (a / b)
    except TypeError:
        return "-"


def build_table(res):
    S = res["scenarios"]
    rows = []
    hdr = "| scenario | metric | hookflash | kamailio+rtpengine | hookflash/peer | target |"
    rows.append(hdr)
    rows.append("|---|---|---|---|---|---|")

    def row(sc, metric, hf, pe, r="-", target=""):
        rows.append("| %s | %s | %s | %s | %s | %s |" % (sc, metric, hf, pe, r, target))

    rh, rp = S.get("rate_hookflash"), S.get("rate_peer")
    if rh or rp:
        hv = rh and rh.get("max_clean_rate")
        pv = rp and rp.get("max_clean_rate")
        top = max(res["params"]["rates"])
        cap = lambda v: (fmt(v) + (" (top step)" if v == top else "")) if v is not None else "-"
        row("1 call rate", "highest rate, 0 failed, 0 retrans (calls/s)", cap(hv), cap(pv),
            ratio(hv, pv), ">= 1500")
        hv0 = rh and rh.get("max_rate_no_failures")
        pv0 = rp and rp.get("max_rate_no_failures")
        row("", "highest rate, 0 failed (calls/s)", cap(hv0), cap(pv0), ratio(hv0, pv0))
        row("", "stepping stopped at", (rh or {}).get("stopped", "-"), (rp or {}).get("stopped", "-"))
        ha = rh and rh.get("at_max") or {}
        pa = rp and rp.get("at_max") or {}
        row("", "server CPU at that rate (% of one core)", fmt(ha.get("server_cpu_pct")),
            "%s (kam %s + rtpe %s)" % (fmt(pa.get("server_cpu_pct")), fmt(pa.get("sig_cpu_pct")),
                                      fmt(pa.get("media_cpu_pct"))) if pa else "-")
        hpc = ha.get("server_cpu_s") and ha["server_cpu_s"] / (ha["wall_s"] * ha["rate"]) * 1000
        ppc = pa.get("server_cpu_s") and pa["server_cpu_s"] / (pa["wall_s"] * pa["rate"]) * 1000
        row("", "server CPU per call (ms)", fmt(hpc, "%.3f"), fmt(ppc, "%.3f"), ratio(hpc, ppc))
        row("", "INVITE->200 mean at that rate (ms)", fmt(ha.get("rtd_ms"), "%.1f"),
            fmt(pa.get("rtd_ms"), "%.1f"), ratio(ha.get("rtd_ms"), pa.get("rtd_ms")))
        row("", "generator (SIPp uac+uas) CPU (% of one core)", fmt(ha.get("gen_cpu_pct")),
            fmt(pa.get("gen_cpu_pct")))
    mh, mp = S.get("media_hookflash"), S.get("media_peer")
    base = {b["n"]: b for b in S.get("media_baseline", [])}
    if mh or mp:
        hs = {s["n"]: s for s in (mh or {}).get("steps", []) if "error" not in s}
        ps = {s["n"]: s for s in (mp or {}).get("steps", []) if "error" not in s}
        for n in res["params"]["media_n"]:
            h, pe = hs.get(n, {}), ps.get(n, {})
            b = base.get(n, {})
            sc = "2 media relay, N=%d" % n
            row(sc, "relay CPU per call (% of one core; CPU per relayed packet x 100 packets/s)", fmt(h.get("cpu_per_call_pct"), "%.4f"),
                fmt(pe.get("cpu_per_call_pct"), "%.4f"),
                ratio(h.get("cpu_per_call_pct"), pe.get("cpu_per_call_pct")),
                "<= 0.04 and <= peer")
            row("", "relay CPU per packet relayed (us)", fmt(h.get("server_us_per_packet"), "%.2f"),
                fmt(pe.get("server_us_per_packet"), "%.2f"),
                ratio(h.get("server_us_per_packet"), pe.get("server_us_per_packet")))
            row("", "packets relayed per second (offered: %d)" % (n * 100), fmt(h.get("relayed_pps")),
                fmt(pe.get("relayed_pps")))
            row("", "relay CPU total (% of one core)", fmt(h.get("server_cpu_pct")),
                fmt(pe.get("server_cpu_pct")), ratio(h.get("server_cpu_pct"), pe.get("server_cpu_pct")))
            row("", "packet loss (%)", fmt(h.get("loss_pct"), "%.3f"), fmt(pe.get("loss_pct"), "%.3f"))
            row("", "jitter, mean per stream (us; generator alone %s)" % fmt(b.get("jitter_mean_us"), "%.0f"),
                fmt(h.get("jitter_mean_us"), "%.0f"), fmt(pe.get("jitter_mean_us"), "%.0f"),
                ratio(h.get("jitter_mean_us"), pe.get("jitter_mean_us")))
            row("", "transit p50 / p99 (us; generator alone %s / %s)" % (
                fmt(b.get("transit_p50_us")), fmt(b.get("transit_p99_us"))),
                "%s / %s" % (fmt(h.get("transit_p50_us")), fmt(h.get("transit_p99_us"))),
                "%s / %s" % (fmt(pe.get("transit_p50_us")), fmt(pe.get("transit_p99_us"))))
            on_time = lambda s: "-" if not s else ("yes" if s.get("generator_on_time") else
                                                   "NO (send lag p99 %s us)" % fmt(s.get("sender_lag_p99_us")))
            row("", "generator on time (send lag p99 <= 5 ms, no drops at its sockets)",
                on_time(h), on_time(pe))
            row("", "generator CPU (%% of one core; alone %s)" % fmt(b.get("gen_cpu_pct")),
                fmt(h.get("gen_cpu_pct")), fmt(pe.get("gen_cpu_pct")))
            row("", "memory per active call, just set up (KB)", fmt(h.get("mem_per_call_kb"), "%.1f"),
                fmt(pe.get("mem_per_call_kb"), "%.1f"),
                ratio(h.get("mem_per_call_kb"), pe.get("mem_per_call_kb")), "<= 64")
            row("", "memory per active call, settled >= 36 s after set-up (KB)",
                fmt(h.get("mem_settled_per_call_kb"), "%.1f"),
                fmt(pe.get("mem_settled_per_call_kb"), "%.1f"),
                ratio(h.get("mem_settled_per_call_kb"), pe.get("mem_settled_per_call_kb")), "<= 64")
    hd = S.get("hold_hookflash")
    if hd:
        if hd.get("skipped"):
            row("3 hold command", "API request -> re-INVITE on the wire", hd["note"], "n/a", "-",
                "p99 < 2 ms @1000")
        else:
            row("3 hold command", "API request -> first re-INVITE p50 / p99 (ms) @%d calls" % hd["active_calls"],
                "%s / %s" % (fmt(hd["p50_ms"], "%.2f"), fmt(hd["p99_ms"], "%.2f")),
                "n/a (no peer has this API)", "-", "p99 < 2 ms @1000")
            row("", "HTTP round trip p50 / p99 (ms, client side)",
                "%s / %s" % (fmt(hd["client_p50_ms"], "%.2f"), fmt(hd["client_p99_ms"], "%.2f")), "n/a")
    sh, sp = S.get("soak_hookflash"), S.get("soak_peer")
    if sh or sp:
        g = lambda d, k: d.get(k) if d else None
        row("4 memory soak", "calls in soak (after %s warm-up)" % fmt(g(sh, "blocks") and sh["blocks"][0]["calls"]),
            fmt(g(sh, "soak_calls")), fmt(g(sp, "soak_calls")))
        row("", "memory after warm-up -> after soak (KB; hookflash RSS, peer kamailio PSS + rtpengine RSS)",
            "%s -> %s" % (fmt(g(sh, "before_kb")), fmt(g(sh, "after_kb"))),
            "%s -> %s" % (fmt(g(sp, "before_kb")), fmt(g(sp, "after_kb"))), "-", "flat")
        row("", "growth per 1,000 calls (KB)", fmt(g(sh, "growth_per_1000_calls_kb"), "%.1f"),
            fmt(g(sp, "growth_per_1000_calls_kb"), "%.1f"))
        if sh and sh.get("blocks"):
            row("", "memory after each block (KB)", " -> ".join(fmt(x["total_kb"]) for x in sh["blocks"]),
                " -> ".join(fmt(x["total_kb"]) for x in sp["blocks"]) if sp and sp.get("blocks") else "-")
            row("", "SIP transactions held by hookflash at each measurement (Timer J/K, 32 s)",
                " -> ".join(fmt(x.get("sip_transactions")) for x in sh["blocks"]), "-")
        row("", "soak rate (calls/s, same for both)", fmt(g(sh, "rate")), fmt(g(sp, "rate")))
        fh = sum(b["failed"] for b in sh["blocks"]) if sh else None
        fp = sum(b["failed"] for b in sp["blocks"]) if sp else None
        row("", "failed calls during soak", fmt(fh), fmt(fp), "-", "0")
    sm = S.get("soakmedia_hookflash")
    if sm:
        na = "not run (hookflash's /metrics)"
        if "error" in sm:
            row("4b soak with media", "error", sm["error"].splitlines()[0][:200], na)
        else:
            soak = [b for b in sm.get("blocks", []) if b["block"] != "warmup"]
            warm = [b for b in sm.get("blocks", []) if b["block"] == "warmup"]
            row("4b soak with media", "calls in soak, ok / failed (after a %s-call warm-up; "
                "%s/s, %d ms of PCMU each way per call, held %d ms)" % (
                    fmt(warm[0]["calls"] if warm else None), fmt(sm["rate"]), sm["media_ms"],
                    sm["hold_ms"]),
                "%s, %s / %s" % (fmt(sm["soak_calls"]), fmt(sm["ok"]), fmt(sm["failed"])), na,
                "-", "100,000, 0 failed")
            row("", "blocks passing every check (calls, anchoring, calls started, packets)",
                "%s of %d" % (fmt(sm.get("blocks_passed")), len(soak)), na)
            row("", "RTP packets per call, relayed (/metrics) / expected (the file's packets, both ways)",
                "%s / %d (blocks with every packet relayed and delivered: %d of %d)" % (
                    fmt(sm["relayed"] / sm["ok"] if sm["ok"] else None, "%.2f"),
                    sm["expected_packets_per_call"], sm["blocks_media_ok"], len(soak)), na,
                "-", "equal")
            row("", "packets sent by the callers to the relay / relayed (/metrics) / delivered "
                "to the callers (tcpdump counts on lo)",
                "%s / %s / %s" % (fmt(sm.get("sent")), fmt(sm["relayed"]), fmt(sm.get("delivered")))
                if sm.get("capture") else "- / %s / - (no capture: needs tcpdump, root)"
                % fmt(sm["relayed"]), na)
            if sm.get("capture"):
                row("", "packets that reached a closed relay port (ICMP port unreachable) / not "
                    "relayed otherwise (sent - delivered - foreign - closed port: queued at the "
                    "relay when its call ended, or lost) / delivered but not in /metrics "
                    "(delivered - relayed)",
                    "%s / %s / %s" % (fmt(sm.get("to_closed_port")), fmt(sm.get("unaccounted")),
                                      fmt(sm.get("uncounted"))), na, "-", "0 / 0 / 0")
                row("", "blocks where the generator sent every packet of every call",
                    "%d of %d" % (sm["blocks_generator_on_time"], len(soak)), na)
            row("", "packets dropped as foreign by the relay", fmt(sm["foreign_dropped"]), na, "-", "0")
            row("", "calls the server started / ended by cause (/metrics); longest wait for "
                "0 active calls after the phones were done (s)",
                "%s / %s; %s" % (fmt(sm.get("calls_started")),
                                 ", ".join("%s %s" % (k, fmt(v)) for k, v in
                                           sorted((sm.get("calls_ended") or {}).items())) or "-",
                                 fmt(sm.get("idle_after_s_max"), "%.1f")), na, "-",
                "= calls, all normal")
            row("", "RSS after each block (KB; after warm-up first)",
                " -> ".join(fmt(b["rss_kb"]) for b in sm.get("blocks", [])), na)
            row("", "RSS growth per 1,000 calls (KB; slope over the blocks after the first)",
                "%s (%s)" % (fmt(sm.get("rss_slope_kb_per_1000"), "%.1f"),
                             "flat" if sm.get("rss_flat") else "NOT flat"), na, "-",
                "<= %d" % sm["flat_bound_kb_per_1000"])
            a, e = sm.get("after_warmup_drained", {}), sm.get("end_drained", {})
            row("", "RSS drained (no SIP transactions left): after warm-up -> end (KB; per 1,000 calls)",
                "%s -> %s (%s)" % (fmt(a.get("rss_kb")), fmt(e.get("rss_kb")),
                                   fmt(sm.get("drained_growth_kb_per_1000"), "%.1f")), na)
            g = e.get("gauges") or {}
            row("", "after the run, drained: calls / dialogs / transactions / RTP ports / "
                "recordings / conferences",
                " / ".join(fmt(g.get(k)) for k in SOAK_GAUGES) + (" (all 0)" if sm.get("gauges_zero")
                                                                 else " (NOT all 0)"), na, "-", "0")
    rc = S.get("record_hookflash")
    if rc and rc.get("steps"):
        na = "n/a (no recording)"
        for st in rc["steps"]:
            sc = "5 recorded calls, N=%d" % st["n"]
            if "error" in st:
                row(sc, "setup failed", st["error"].splitlines()[0][:120], na)
                continue
            row(sc, "hookflash CPU, relayed only -> recorded (%% of one core; mean of %d windows each)"
                % st["rounds"], "%s -> %s" % (fmt(st["relay_cpu_pct"]), fmt(st["record_cpu_pct"])),
                na, ratio(st["record_cpu_pct"], st["relay_cpu_pct"]))
            row("", "CPU per call, relayed only -> recorded (% of one core)",
                "%s -> %s" % (fmt(st["relay_cpu_per_call_pct"], "%.4f"),
                              fmt(st["record_cpu_per_call_pct"], "%.4f")), na)
            row("", "recording cost per call (% of one core)",
                fmt(st.get("recording_cost_per_call_pct"), "%.4f"), na)
            row("", "packet loss, relayed only / recorded (%)",
                "%s / %s" % (fmt(st["relay_loss_pct"], "%.3f"), fmt(st["record_loss_pct"], "%.3f")), na)
            row("", "recorder dropped frames (hookflash_recording_frames_dropped_total)",
                fmt(st.get("dropped_frames")), na, "-", "0")
            w = st["wav"]
            row("", "WAVs with the expected length (frames/8000 = start->stop time) / written / started",
                "%d / %d / %d" % (w["duration_ok"], w["files"], st["starts_ok"]), na)
            row("", "WAV length - start->stop time, min / max (ms)",
                "%s / %s" % (fmt(w["diff_ms_min"]), fmt(w["diff_ms_max"])), na)
            yn = lambda v: "yes" if v else "NO"
            row("", "generator on time, relayed only / recorded",
                "%s / %s" % (yn(st["relay_gen_on_time"]), yn(st["record_gen_on_time"])), na)
    for key, sc in (("app_hookflash", "6 application calls"),
                    ("app_rcml_hookflash", "6b application calls, RCML")):
        ap = S.get(key)
        if not ap:
            continue
        na = ap.get("peer", PEER_APP_NOTE)
        if ap.get("skipped") or "error" in ap:
            row(sc, "app calls/s", ap.get("note") or ap.get("error", "")[:200], na)
        else:
            top = max(res["params"]["app_rates"])
            v = ap.get("max_clean_rate")
            row(sc, "highest rate, 0 failed, 0 retrans, every prompt sent "
                "(app calls/s; say + hangup, TTS cached)",
                fmt(v) + (" (top step)" if v == top else ""), na, "-", ">= 500")
            row("", "stepping stopped at", ap.get("stopped", "-"), "n/a")
            a = ap.get("at_max") or (ap["steps"][-1] if ap.get("steps") else {})
            at = " @%s/s" % fmt(a.get("rate")) if a else ""
            row("", "hookflash CPU per app call (ms; process CPU s / calls, whole step)" + at,
                fmt(a.get("server_cpu_ms_per_call"), "%.3f"), "n/a")
            row("", "hookflash CPU over the step (% of one core)" + at, fmt(a.get("server_cpu_pct")), "n/a")
            d = lambda k: a.get(k) or {}
            three = lambda k: "%s / %s / %s" % (fmt(d(k).get("p50"), "%.2f"), fmt(d(k).get("p99"), "%.2f"),
                                                fmt(d(k).get("max"), "%.2f"))
            if ap.get("capture"):
                row("", "answer (200 on the wire) -> first prompt RTP packet, p50 / p99 / max (ms)" + at,
                    three("answer_to_prompt_ms"), "n/a", "-", "<= 5 beyond the webhook's time")
                row("", "webhook response time on the wire (call_hook request -> response), "
                    "p50 / p99 / max (ms; to subtract)", three("hook_wire_ms"), "n/a")
                row("", "INVITE -> first prompt packet minus the webhook's time, p50 / p99 / max (ms)",
                    three("invite_to_prompt_minus_hook_ms"), "n/a")
                row("", "INVITE -> 200 on the wire (includes the webhook), p50 / p99 / max (ms)",
                    three("invite_to_200_ms"), "n/a")
                row("", "INVITE -> call_hook request / call_hook response -> 200, p50 (ms)",
                    "%s / %s" % (fmt(d("invite_to_hook_ms").get("p50"), "%.2f"),
                                 fmt(d("hook_resp_to_200_ms").get("p50"), "%.2f")), "n/a")
            else:
                row("", "answer -> first prompt packet", "not measured (needs tcpdump, as root)", "n/a")
            row("", "webhook server (bench/apphook.py): CPU per call (ms), handling p50 / p99 (us)",
                "%s, %s / %s" % (fmt(a.get("hook_cpu_ms_per_call"), "%.3f"),
                                 fmt(a.get("hook_proc_us_p50")), fmt(a.get("hook_proc_us_p99"))), "n/a")
            row("", "call length (the prompt, s)", fmt(a.get("call_length_s"), "%.2f"), "n/a")
    return "\n".join(rows)


def versions():
    def first_line(cmd):
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            text = (out.stdout or out.stderr).strip().splitlines()
            return text[0].strip() if text else "?"
        except (OSError, subprocess.TimeoutExpired):
            return "?"
    return {"kamailio": first_line(["kamailio", "-v"]),
            "rtpengine": first_line(["rtpengine", "--version"]),
            "sipp": first_line(["sipp", "-v"])}


def header(res):
    m = res["machine"]
    v = res.get("versions", {})
    return ("hookflash bench, profile %s, %s\n"
            "hookflash build: %s; peers: %s, rtpengine %s; generator: %s + bench/rtpgen\n"
            "machine: %d cores, %s, %d MB RAM, kernel %s\n"
            "load average before %s, after %s; elapsed %.0f s\n" % (
                res["profile"], res["date"], res.get("hookflash_build", "?"),
                v.get("kamailio", "?"), v.get("rtpengine", "?"), v.get("sipp", "?"),
                m["nproc"], m["cpu"], m["mem_mb"], m["kernel"],
                " ".join(res["loadavg_before"]), " ".join(res.get("loadavg_after", [])),
                res.get("elapsed_s", 0)))


def build_details(res):
    S = res["scenarios"]
    out = []
    for key in ("rate_hookflash", "rate_peer"):
        if key in S:
            out.append("\n%s steps:\n" % key)
            out.append("| offered/s | SIPp created/s | calls | ok | failed | retrans | done/s | INVITE->200 ms | server % | gen % |")
            out.append("|---|---|---|---|---|---|---|---|---|---|")
            for s in S[key].get("steps", []):
                out.append("| %d | %s | %d | %d | %d | %d | %.0f | %s | %.0f | %.0f |" % (
                    s["rate"], fmt(s.get("created_per_s")), s["calls"], s["ok"], s["failed"],
                    s["retrans"], s["completed_per_s"], fmt(s["rtd_ms"], "%.0f"),
                    s["server_cpu_pct"], s["gen_cpu_pct"]))
            if S[key].get("stopped"):
                out.append("\nstepping stopped at %s" % S[key]["stopped"])
    for key in ("app_hookflash", "app_rcml_hookflash"):
        ap = S.get(key)
        if not ap or not ap.get("steps"):
            continue
        out.append("\n%s steps (%s; prompt %r, %s s):\n" % (
            key, ap.get("note", ""), ap.get("prompt_text"), fmt(ap.get("call_length_s"), "%.2f")))
        out.append("| offered/s | calls | ok | failed | retrans | SIPp created/s | hook requests | "
                   "prompts seen | hookflash % | CPU ms/call | answer->prompt p50/p99 ms | "
                   "webhook p50/p99 ms | INVITE->200 p50/p99 ms | capture dropped |")
        out.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for s in ap["steps"]:
            pp = lambda k: "%s / %s" % (fmt((s.get(k) or {}).get("p50"), "%.2f"),
                                        fmt((s.get(k) or {}).get("p99"), "%.2f"))
            out.append("| %d | %d | %d | %d | %d | %s | %s | %s | %.0f | %s | %s | %s | %s | %s |" % (
                s["rate"], s["calls"], s["ok"], s["failed"], s["retrans"],
                fmt(s.get("created_per_s")), fmt(s.get("hook_requests")), fmt(s.get("prompts_seen")),
                s["server_cpu_pct"], fmt(s.get("server_cpu_ms_per_call"), "%.3f"),
                pp("answer_to_prompt_ms"), pp("hook_wire_ms"), pp("invite_to_200_ms"),
                fmt(s.get("capture_dropped"))))
    for key in ("media_hookflash", "media_peer"):
        if key in S:
            out.append("\n%s steps:\n" % key)
            out.append("| N | relay % | per call % | gen % | loss % | silent streams | jitter mean/p99 us | transit p50/p99/max us | sender lag p99 us | KB/call | KB/call settled |")
            out.append("|---|---|---|---|---|---|---|---|---|---|---|")
            for s in S[key].get("steps", []):
                if "error" in s:
                    out.append("| %d | setup failed: %s |" % (s["n"], s["error"].splitlines()[0][:120]))
                    continue
                out.append("| %d | %.1f | %.4f | %.0f | %.3f | %d | %.0f / %.0f | %d / %d / %d | %d | %.1f | %s |" % (
                    s["n"], s.get("server_cpu_pct", 0), s["cpu_per_call_pct"], s.get("gen_cpu_pct", 0),
                    s["loss_pct"], s["silent_streams"],
                    s["jitter_mean_us"], s["jitter_p99_us"], s["transit_p50_us"], s["transit_p99_us"],
                    s["transit_max_us"], s["sender_lag_p99_us"], s["mem_per_call_kb"], fmt(s.get("mem_settled_per_call_kb"), "%.1f")))
    rc = S.get("record_hookflash")
    if rc and rc.get("steps"):
        out.append("\nrecord_hookflash steps (%s):\n" % rc.get("note", ""))
        out.append("| N | CPU relayed only % (each window) | CPU recorded % (each window) | "
                   "machine % relayed / recorded windows | loss relayed / recorded % | "
                   "recordings active | dropped frames | WAV length ok / files | WAV s min..max | "
                   "header ok | start / stop all (s) |")
        out.append("|---|---|---|---|---|---|---|---|---|---|---|")
        for s in rc["steps"]:
            if "error" in s:
                out.append("| %d | setup failed: %s |" % (s["n"], s["error"].splitlines()[0][:120]))
                continue
            w = s["wav"]
            j = lambda xs, spec="%.0f": "/".join(fmt(x, spec) for x in xs)
            out.append("| %d | %s | %s | %s / %s | %s / %s | %s | %s | %d / %d | %s..%s | %d | %s / %s |" % (
                s["n"], j(s["relay_cpu_pct_each"], "%.1f"), j(s["record_cpu_pct_each"], "%.1f"),
                j(s["relay_machine_cpu_pct_each"]), j(s["record_machine_cpu_pct_each"]),
                fmt(s["relay_loss_pct"], "%.3f"), fmt(s["record_loss_pct"], "%.3f"),
                j(s["recordings_active"]), fmt(s.get("dropped_frames")),
                w["duration_ok"], w["files"], fmt(w["seconds_min"], "%.2f"),
                fmt(w["seconds_max"], "%.2f"), w["header_ok"], j(s["start_s"], "%.1f"),
                j(s["stop_s"], "%.1f")))
    sm = S.get("soakmedia_hookflash")
    if sm and sm.get("blocks"):
        out.append("\nsoakmedia_hookflash blocks (rate %s/s, %d packets per call expected):\n"
                   % (sm["rate"], sm["expected_packets_per_call"]))
        out.append("| block | calls | ok | failed | retrans | SIPp created/s | sent | relayed | "
                   "delivered | relayed/call | foreign | to closed port | not relayed otherwise | not counted | "
                   "capture dropped | RSS KB | hookflash % | gen % | capture % | "
                   "calls / dialogs / transactions / ports after | server calls started | "
                   "ended by cause | up when phones done | idle after s |")
        out.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for b in sm["blocks"]:
            g = b.get("gauges") or {}
            out.append("| %s | %d | %d | %d | %d | %s | %s | %d | %s | %s | %d | %s | %s | %s | %s | %d | %.0f | %.0f | %s | %s | %s | %s | %s | %s |" % (
                b["block"], b["calls"], b["ok"], b["failed"], b["retrans"],
                fmt(b.get("created_per_s")), fmt(b.get("sent")), b["relayed"],
                fmt(b.get("delivered")), fmt(b.get("relayed_per_call"), "%.2f"),
                b["foreign_dropped"], fmt(b.get("to_closed_port")), fmt(b.get("unaccounted")),
                fmt(b.get("uncounted")), fmt(b.get("capture_dropped")), b["rss_kb"],
                b["server_cpu_pct"], b["gen_cpu_pct"], fmt(b.get("capture_cpu_pct")),
                " / ".join(fmt(g.get(k)) for k in SOAK_GAUGES[:4]),
                fmt(b.get("calls_started")),
                ", ".join("%s %s" % (k, fmt(v)) for k, v in sorted((b.get("calls_ended") or {}).items())),
                fmt(b.get("active_at_end")), fmt(b.get("idle_after_s"), "%.1f")))
    for key in ("soak_hookflash", "soak_peer"):
        if key in S and "blocks" in S[key]:
            out.append("\n%s blocks (rate %s/s):\n" % (key, S[key]["rate"]))
            for b in S[key]["blocks"]:
                out.append("- %s: %d calls, %d ok, %d failed, %d retrans, memory %s" % (
                    b["block"], b["calls"], b["ok"], b["failed"], b["retrans"],
                    {k: v for k, v in b.items() if k.endswith("_kb")}))
    cl = S.get("cluster_hookflash")
    if cl and ("single" in cl or "cluster" in cl):
        out.append("\ncluster_hookflash (one SQLite node vs two PostgreSQL + NATS nodes behind "
                   "Kamailio; PostgreSQL: %s):\n" % cl.get("postgres"))
        out.append("| setup | offered/s | ok | failed | done/s | INVITE->200 ms | CPU ms/call: "
                   "nodes | front | db | bus | all server | gen |")
        out.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for setup in ("single", "cluster"):
            for s in cl.get(setup, []):
                out.append("| %s | %d | %d | %d | %.0f | %s | %s | %s | %s | %s | %.2f | %s |" % (
                    setup, s["rate"], s["ok"], s["failed"], s["completed_per_s"],
                    fmt(s["rtd_ms"], "%.0f"), fmt(s.get("nodes_cpu_ms_per_call"), "%.2f"),
                    fmt(s.get("front_cpu_ms_per_call"), "%.2f"),
                    fmt(s.get("db_cpu_ms_per_call"), "%.2f"),
                    fmt(s.get("bus_cpu_ms_per_call"), "%.2f"), s["server_cpu_ms_per_call"],
                    fmt(s.get("gen_cpu_ms_per_call"), "%.2f")))
    return "\n".join(out)


# ====================================================================== main
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", choices=sorted(PROFILES), default="full")
    ap.add_argument("--only", default="rate,media,hold,soak,record,app",
                    help="comma-separated scenarios: rate,media,hold,soak,record,app and "
                         "soakmedia (not in the default set: long), app_rcml (not in the "
                         "default set)")
    ap.add_argument("--servers", default="hookflash,peer")
    ap.add_argument("--hookflash", help="hookflash release binary")
    ap.add_argument("--rtpgen", help="bench/rtpgen binary")
    ap.add_argument("--results", default=os.path.join(BENCH, "results"))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a profile parameter, e.g. --set media_n=1000,2000 --set rate_secs=5")
    ap.add_argument("--table", metavar="RESULTS_JSON", help="only print the table of a saved run")
    args = ap.parse_args()
    if args.table:
        with open(args.table) as f:
            res = json.load(f)
        print(header(res))
        print(build_table(res))
        print(build_details(res))
        return
    ctx = Ctx(args)
    only = set(x for x in args.only.split(",") if x)
    unknown = only - {"rate", "media", "hold", "soak", "soakmedia", "record", "app", "app_rcml",
                      "cluster"}
    if unknown:
        raise SystemExit("unknown scenario(s) %s (known: rate, media, hold, soak, soakmedia, "
                         "record, app, app_rcml, cluster)"
                         % ", ".join(sorted(unknown)))
    servers = [s for s in args.servers.split(",") if s]
    kinds = {"hookflash": "hookflash", "peer": "kamailio+rtpengine"}
    S = ctx.results["scenarios"]
    log("results in %s; load %s" % (ctx.out, " ".join(ctx.results["loadavg_before"])))
    t_start = time.monotonic()

    def save():
        ctx.results["loadavg_after"] = loadavg()
        ctx.results["elapsed_s"] = time.monotonic() - t_start
        with open(os.path.join(ctx.out, "results.json"), "w") as f:
            json.dump(ctx.results, f, indent=1, default=str)

    def guarded(key, fn, *a):
        t = time.monotonic()
        try:
            S[key] = fn(*a)
        except Exception as e:  # a broken scenario must not hide the others' figures
            log("%s failed: %r" % (key, e))
            S[key] = {"error": repr(e)[:3000]}
        S[key]["elapsed_s"] = round(time.monotonic() - t, 1) if isinstance(S[key], dict) else None
        save()

    if "rate" in only:
        for s in servers:
            guarded("rate_" + s, scenario_rate, ctx, kinds[s])
    if "media" in only:
        try:
            S["media_baseline"] = scenario_media_baseline(ctx)
        except Exception as e:
            log("media baseline failed: %r" % e)
        for s in servers:
            guarded("media_" + s, scenario_media, ctx, kinds[s])
    if "hold" in only and "hookflash" in servers:
        guarded("hold_hookflash", scenario_hold, ctx)
    if "record" in only and "hookflash" in servers:
        guarded("record_hookflash", scenario_record, ctx)
    if "app" in only and "hookflash" in servers:
        guarded("app_hookflash", scenario_app, ctx)
    if "app_rcml" in only and "hookflash" in servers:
        guarded("app_rcml_hookflash", scenario_app, ctx, "rcml")
    if "cluster" in only and "hookflash" in servers:
        from cluster import scenario_cluster
        guarded("cluster_hookflash", scenario_cluster, ctx)
    # One rate for every server and both soaks (finished-call state kept by a SIP stack
    # scales with the rate): soak_rate, or 80 % of the lowest clean rate found in scenario 1.
    rate = ctx.p["soak_rate"]
    bests = [(S.get("rate_" + s) or {}).get("max_clean_rate") for s in servers]
    bests = [x for x in bests if x]
    if bests:
        rate = max(50, min(rate, int(min(bests) * 0.8)))
    if "soak" in only:
        for s in servers:
            guarded("soak_" + s, scenario_soak, ctx, kinds[s], rate)
    if "soakmedia" in only and "hookflash" in servers:
        guarded("soakmedia_hookflash", scenario_soakmedia, ctx, rate)
    save()
    table = build_table(ctx.results)
    details = build_details(ctx.results)
    m = ctx.results["machine"]
    head = header(ctx.results)
    with open(os.path.join(ctx.out, "table.md"), "w") as f:
        f.write(head + "\n" + table + "\n" + details + "\n")
    print("\n" + head)
    print(table)
    print(details)
    print("\nresults: %s" % ctx.out)


def _on_term(signum, frame):
    raise SystemExit("stopped by signal %d" % signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _on_term)
    try:
        main()
    finally:
        cleanup()
