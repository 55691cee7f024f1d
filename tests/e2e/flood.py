#!/usr/bin/env python3
"""An INVITE flood from one source address, as a subprocess (its own GIL and core):
unauthenticated INVITEs with unique Call-IDs and branches, sent at ``--rate`` per second
for ``--seconds`` (paced in 5 ms ticks, so the rate holds on average and the run is
bounded). Never waits for answers; reads what comes back without blocking and counts it.
Prints one JSON line: sent, elapsed, responses, answered_call_ids, statuses.

  flood.py --src 127.0.0.3 --dst 127.0.0.1:5060 --rate 3000 --seconds 20 --ruri sip:202@...
"""
import argparse
import json
import re
import socket
import time

TEMPLATE = (
    "INVITE {ruri} SIP/2.0\r\n"
    "Via: SIP/2.0/UDP {src}:{port};branch=z9hG4bK-flood-%d;rport\r\n"
    "Max-Forwards: 70\r\n"
    "From: <sip:flood@{src}>;tag=fl%d\r\n"
    "To: <{ruri}>\r\n"
    "Call-ID: flood-%d@{src}\r\n"
    "CSeq: 1 INVITE\r\n"
    "Contact: <sip:flood@{src}:{port}>\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: {clen}\r\n\r\n{sdp}"
)
SDP = ("v=0\r\no=fl 1 1 IN IP4 {src}\r\ns=-\r\nc=IN IP4 {src}\r\nt=0 0\r\n"
       "m=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", required=True)
    ap.add_argument("--dst", required=True)
    ap.add_argument("--ruri", required=True)
    ap.add_argument("--rate", type=int, default=3000)
    ap.add_argument("--seconds", type=float, default=20.0)
    a = ap.parse_args()
    host, _, port = a.dst.rpartition(":")
    dst = (host, int(port))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    sock.bind((a.src, 0))
    sock.setblocking(False)
    lport = sock.getsockname()[1]
    sdp = SDP.format(src=a.src)
    tmpl = TEMPLATE.format(ruri=a.ruri, src=a.src, port=lport, clen=len(sdp), sdp=sdp).encode()

    tick = 0.005
    t0 = time.monotonic()
    sent = responses = 0
    answered = set()
    statuses = {}
    n = 0
    while True:
        now = time.monotonic()
        elapsed = now - t0
        if elapsed >= a.seconds:
            break
        due = int(elapsed * a.rate) + 1
        while n < due:
            try:
                sock.sendto(tmpl % (n, n, n), dst)
                sent += 1
            except BlockingIOError:
                break
            n += 1
        while True:
            try:
                data = sock.recv(65535)
            except (BlockingIOError, InterruptedError):
                break
            responses += 1
            m = re.match(rb"SIP/2.0 (\d+)", data)
            code = m.group(1).decode() if m else "?"
            statuses[code] = statuses.get(code, 0) + 1
            c = re.search(rb"(?im)^(?:call-id|i)\s*:\s*(\S+)", data)
            if c:
                answered.add(c.group(1))
        time.sleep(max(0.0, t0 + (int(elapsed / tick) + 1) * tick - time.monotonic()))
    print(json.dumps({
        "sent": sent, "elapsed": round(time.monotonic() - t0, 3), "responses": responses,
        "answered_call_ids": len(answered), "statuses": statuses, "src": "%s:%d" % (a.src, lport),
    }), flush=True)


if __name__ == "__main__":
    main()
