#!/usr/bin/env python3
"""An RTP sprayer (media-bleed test): from ``--src`` sends RTP with one fixed SSRC to every even
port of ``--lo``..``--hi`` on 127.0.0.1 (and RTCP to the odd ones), each port every ``--interval``
seconds, for ``--seconds``; counts every packet that comes back to it. Bounded in time. Prints
one JSON line: sent, received, received_from (up to 10 sources)."""
import argparse
import json
import socket
import struct
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", required=True)
    ap.add_argument("--lo", type=int, required=True)
    ap.add_argument("--hi", type=int, required=True)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--interval", type=float, default=0.02)
    a = ap.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((a.src, 0))
    sock.setblocking(False)
    ports = [p for p in range(a.lo, a.hi + 1)]
    ssrc = 0x5EED5EED
    payload = b"\xff" * 160
    sent = received = 0
    seq = 0
    sources = set()
    t0 = time.monotonic()
    next_round = t0
    while time.monotonic() - t0 < a.seconds:
        seq = (seq + 1) & 0xFFFF
        ts = (seq * 160) & 0xFFFFFFFF
        rtp = struct.pack("!BBHII", 0x80, 0, seq, ts, ssrc) + payload
        rtcp = struct.pack("!BBHI", 0x80, 200, 6, ssrc) + b"\x00" * 20
        for p in ports:
            try:
                sock.sendto(rtp if p % 2 == 0 else rtcp, ("127.0.0.1", p))
                sent += 1
            except OSError:
                pass
        while True:
            try:
                _, src = sock.recvfrom(2048)
                received += 1
                if len(sources) < 10:
                    sources.add("%s:%d" % src)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
        next_round += a.interval
        delay = next_round - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    end = time.monotonic() + 0.5
    while time.monotonic() < end:
        try:
            _, src = sock.recvfrom(2048)
            received += 1
            sources.add("%s:%d" % src)
        except (BlockingIOError, InterruptedError):
            time.sleep(0.01)
        except OSError:
            break
    print(json.dumps({"sent": sent, "received": received, "received_from": sorted(sources)[:10]}))


if __name__ == "__main__":
    main()
