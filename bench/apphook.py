#!/usr/bin/env python3
"""The application webhook of the bench's `app` scenario: a minimal HTTP/1.1 server (asyncio,
standard library only, keep-alive) that answers every request with the same jambonz verb list:

    [{"verb":"say","text":"Hello, this is a benchmark."},{"verb":"hangup"}]

or, with --rcml (scenario app_rcml), the same application in RCML:

    <Response><Say>Hello, this is a benchmark.</Say><Hangup/></Response>

It is written to stay out of the way at 1,000+ requests/s on one core: no framework, no JSON
parsing of the request (hookflash's call fields are read past by Content-Length). GET /__stats
returns {"requests": n, "proc_us_p50": .., "proc_us_p99": .., "proc_us_max": ..} (time from the
request's last byte read to the response handed to the kernel, in this process); with
?reset=1 the counters start again.

    python3 bench/apphook.py --port 9100 [--host 127.0.0.1] [--rcml]
Prints "LISTENING <port>" once it accepts connections."""
import argparse
import asyncio
import json
import signal
import sys
import time

ANSWER = json.dumps([{"verb": "say", "text": "Hello, this is a benchmark."},
                     {"verb": "hangup"}], separators=(",", ":")).encode()
# --rcml: the same application in RCML (RestComm), for an application with language = "rcml".
RCML_ANSWER = (b'<?xml version="1.0" encoding="UTF-8"?>'
               b"<Response><Say>Hello, this is a benchmark.</Say><Hangup/></Response>")


def response(body, ctype):
    return (b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
            b"Connection: keep-alive\r\n\r\n" % (ctype, len(body))) + body


RESPONSE = response(ANSWER, b"application/json")
MAX_HEAD = 64 * 1024
MAX_BODY = 4 * 1024 * 1024


class Stats:
    def __init__(self):
        self.reset()

    def reset(self):
        self.requests = 0
        self.proc_ns = []

    def snapshot(self):
        s = sorted(self.proc_ns)
        pick = lambda q: s[min(len(s) - 1, int(len(s) * q))] / 1000.0 if s else None
        return {"requests": self.requests, "proc_us_p50": pick(0.5), "proc_us_p99": pick(0.99),
                "proc_us_max": s[-1] / 1000.0 if s else None}


STATS = Stats()


class Conn(asyncio.Protocol):
    def connection_made(self, transport):
        self.t = transport
        self.buf = b""

    def data_received(self, data):
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > MAX_HEAD:
                    self.t.close()
                return
            head = self.buf[:end].decode("latin-1")
            lines = head.split("\r\n")
            hdrs = {}
            for line in lines[1:]:
                k, _, v = line.partition(":")
                hdrs[k.strip().lower()] = v.strip()
            body_start = end + 4
            if "chunked" in hdrs.get("transfer-encoding", "").lower():
                used = self._chunked_end(body_start)
                if used is None:
                    return
                rest = self.buf[used:]
            else:
                n = int(hdrs.get("content-length", "0") or 0)
                if n > MAX_BODY:
                    self.t.close()
                    return
                if len(self.buf) < body_start + n:
                    return
                rest = self.buf[body_start + n:]
            t0 = time.perf_counter_ns()
            self.buf = rest
            self.respond(lines[0], t0)

    def _chunked_end(self, pos):
        """Offset just past the chunked body that starts at pos, or None if incomplete."""
        b = self.buf
        while True:
            eol = b.find(b"\r\n", pos)
            if eol < 0:
                return None
            size = int(b[pos:eol].split(b";")[0] or b"0", 16)
            pos = eol + 2
            if size == 0:
                end = b.find(b"\r\n\r\n", pos - 2)
                return None if end < 0 else end + 4
            if len(b) < pos + size + 2:
                return None
            pos += size + 2

    def respond(self, request_line, t0):
        parts = request_line.split(" ")
        target = parts[1] if len(parts) > 1 else "/"
        if target.startswith("/__stats"):
            body = json.dumps(STATS.snapshot()).encode()
            if "reset=1" in target:
                STATS.reset()
            self.t.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d"
                         b"\r\n\r\n%s" % (len(body), body))
            return
        self.t.write(RESPONSE)
        STATS.requests += 1
        if len(STATS.proc_ns) < 1_000_000:
            STATS.proc_ns.append(time.perf_counter_ns() - t0)


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--rcml", action="store_true", help="answer RCML <Say> + <Hangup> instead")
    a = ap.parse_args()
    if a.rcml:
        global RESPONSE
        RESPONSE = response(RCML_ANSWER, b"application/xml")
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    srv = await loop.create_server(Conn, a.host, a.port, backlog=4096, reuse_address=True)
    print("LISTENING %d" % a.port, flush=True)
    await stop
    srv.close()
    print(json.dumps(STATS.snapshot()), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
