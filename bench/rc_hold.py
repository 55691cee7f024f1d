"""RingCentral dialect: REST hold -> re-INVITE on the wire (a bench, not a test).

Same method as the native figure (bench.py scenario 3, BENCHMARKS.md): N active calls
(SIPp trunk caller -> DID -> the SIPp callee registered as extension 100; both scenarios answer
re-INVITEs), an OAuth token of extension 100 (password grant), then sequential
`POST /restapi/v1.0/account/~/telephony/sessions/{sid}/parties/{pid}/hold` on the callee's
party of different calls (the other party, the SIPp caller, gets the re-INVITE). tcpdump on lo
captures the HTTP requests and the INVITEs leaving the server's SIP port (kernel timestamps):
latency = first re-INVITE on the wire - request on the wire. 5 uncounted warm-up requests.

    python3 bench/rc_hold.py [--hookflash target/release/hookflash] [--calls 220] [--holds 200]

Needs sipp and tcpdump (root for the capture). Prints one JSON line with p50/p99/max.
"""
import argparse
import base64
import json
import os
import shutil
import signal
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import (  # noqa: E402
    Ctx, capture_api_and_sip, hold_latencies, percentile, setup_calls)
from benchlib import (  # noqa: E402
    Hookflash, SippFactory, cleanup, free_port, http, log, stop_proc)

CLIENT_ID, CLIENT_SECRET = "bench-rc", "bench-rc-secret"
WARMUP = 5


class RcHookflash(Hookflash):
    """The bench server with an OAuth client for the RingCentral dialect."""

    def config(self):
        return super().config() + "\n".join([
            "  [[accounts.oauth_apps]]",
            '  client_id = "%s"' % CLIENT_ID,
            '  client_secret = "%s"' % CLIENT_SECRET,
            ""])


def rc_token(srv):
    basic = base64.b64encode(("%s:%s" % (CLIENT_ID, CLIENT_SECRET)).encode()).decode()
    form = urllib.parse.urlencode({"grant_type": "password", "username": srv.USER,
                                   "password": srv.PASSWORD}).encode()
    st, text = http("POST", srv.http + "/restapi/oauth/token", body=form,
                    headers={"Authorization": "Basic " + basic,
                             "Content-Type": "application/x-www-form-urlencoded"})
    if st != 200:
        raise RuntimeError("token: %s %s" % (st, text))
    return json.loads(text)["access_token"]


def callee_parties(srv):
    """[(session id, the callee's party id)] of the active calls (native API)."""
    st, text = http("GET", srv.http + "/api/v1/calls",
                    headers={"Authorization": "Bearer " + srv.API_KEY}, timeout=10)
    if st != 200:
        raise RuntimeError("GET /api/v1/calls: %s" % st)
    out = []
    for call in json.loads(text)["calls"]:
        mine = [leg for leg in call["legs"] if leg.get("owner_extension") == srv.USER]
        if mine and call["state"] == "answered":
            out.append((call["id"], mine[0]["id"]))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hookflash", default=os.path.join(os.path.dirname(__file__), "..",
                                                        "target", "release", "hookflash"))
    ap.add_argument("--calls", type=int, default=220)
    ap.add_argument("--holds", type=int, default=200)
    ap.add_argument("--results", default=os.path.join(os.path.dirname(__file__), "results"))
    args = ap.parse_args()
    if not shutil.which("tcpdump") or not shutil.which("sipp"):
        raise SystemExit("needs tcpdump and sipp")
    n, k = args.calls, min(args.holds, args.calls - WARMUP)
    ctx = Ctx(argparse.Namespace(profile="quick", set=["setup_rate=100"], results=args.results,
                                 hookflash=args.hookflash, rtpgen="/bin/true"))
    wd = ctx.workdir("rc-hold")
    uac_port, uas_port = free_port(), free_port()
    sipp = SippFactory(os.path.join(wd, "sipp"))
    srv = RcHookflash(os.path.abspath(args.hookflash), wd, trunk_port=uac_port).start()
    uac = uas = tcpd = None
    try:
        srv.register_callee(sipp, uas_port)
        token = rc_token(srv)
        hold_ms = int((n / 100 + k * 0.1 + 30) * 1000)
        uac, uas, _, _ = setup_calls(ctx, srv, sipp, uac_port, uas_port, n, hold_ms,
                                     free_port(), free_port(), "rc-hold",
                                     "uac_hold.xml", "uas_hold.xml")
        parties = callee_parties(srv)[:k + WARMUP]
        if len(parties) < k + WARMUP:
            raise RuntimeError("only %d answered calls" % len(parties))
        tcpd, pcap, tlog = capture_api_and_sip(wd, srv, "rc_hold.pcap")
        auth = {"Authorization": "Bearer " + token}
        client = []
        for sid, pid in parties:
            path = "/restapi/v1.0/account/~/telephony/sessions/%s/parties/%s/hold" % (sid, pid)
            t1 = time.monotonic_ns()
            st, _ = http("POST", srv.http + path, body={}, headers=auth)
            client.append(((time.monotonic_ns() - t1) / 1e6, st))
            time.sleep(0.02)
        time.sleep(1.5)
        tcpd.send_signal(signal.SIGINT)
        tcpd.wait(10)
        tlog.close()
        reqs, invs, first, _ = hold_latencies(pcap, srv, "POST")
        first, client = first[WARMUP:], client[WARMUP:]
        res = dict(api="POST /restapi/v1.0/.../parties/{pid}/hold", active_calls=n,
                   requests=len(client), ok=sum(1 for _, st in client if st == 200),
                   captured_requests=len(reqs), reinvites=len(invs), matched=len(first),
                   p50_ms=percentile(first, 0.5), p99_ms=percentile(first, 0.99),
                   max_ms=max(first) if first else None,
                   client_p50_ms=percentile([c for c, _ in client], 0.5),
                   client_p99_ms=percentile([c for c, _ in client], 0.99))
        with open(os.path.join(wd, "result.json"), "w") as f:
            json.dump(res, f, indent=1)
        log("rc hold: %s" % json.dumps(res))
        print(json.dumps(res))
    finally:
        if tcpd:
            stop_proc(tcpd)
        if uac:
            uac.stop()
        if uas:
            uas.stop()
        srv.stop()


if __name__ == "__main__":
    try:
        main()
    finally:
        cleanup()
