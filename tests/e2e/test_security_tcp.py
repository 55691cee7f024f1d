"""SIP over TCP under connection exhaustion (security issue, item 2): thousands of idle TCP
connections from many sources do not stop a legitimate phone from registering and calling
over TCP; the server keeps at most its per-source and total limits open, closes silent
connections, and its counters say so."""
import multiprocessing
import resource
import socket
import time

import pytest

from checks import sip_user

# solo: thousands of connections and a process-wide fd count; runs alone (scripts/test.sh).
pytestmark = [pytest.mark.server, pytest.mark.solo]

PER_SOURCE = 8
SOURCES = 40  # 127.0.1.1 .. 127.0.1.40
ATTEMPTS = 20000


def _still_open(s):
    try:
        # b"" = closed by the server
        return bool(s.recv(1))
    except BlockingIOError:
        return True
    except OSError:
        return False


def _hold_connections(port, sources, per_process, limit, ready, release):
    """Open `per_process` connections spread over `sources`, keep those the server keeps,
    report how many are still open once the server has had its say, then wait."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    socks = []
    opened = 0
    for i in range(per_process):
        src = sources[i % len(sources)]
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        try:
            s.bind((src, 0))
            s.settimeout(5.0)
            s.connect(("127.0.0.1", port))
            opened += 1
            socks.append(s)
        except OSError:
            s.close()
            if len(socks) > hard - 64:
                break
    # The server closes what it refuses: count the connections still open. On a loaded
    # machine the closes take a while to arrive, so count again until the count is within
    # the limit or stops falling, for at most 2.5 s (the first-message timeout is 3 s).
    for s in socks:
        s.setblocking(False)
    alive, steady = len(socks), 0
    for _ in range(5):
        time.sleep(0.5)
        before, alive = alive, sum(1 for s in socks if _still_open(s))
        steady = steady + 1 if alive == before else 0
        if alive <= limit or steady >= 3:
            break
    ready.put((opened, alive))
    release.wait(60)
    for s in socks:
        s.close()


@pytest.mark.timeout(300)
def test_idle_tcp_connections_do_not_block_a_tcp_phone(server_factory, phones):
    server = server_factory(security={
        "tcp_per_source": PER_SOURCE,
        "tcp_max_connections": 4096,
        "tcp_first_message_secs": 3,
    })
    sources = ["127.0.1.%d" % i for i in range(1, SOURCES + 1)]
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=_hold_connections,
                         args=(server.sip_port, sources, ATTEMPTS // 2, PER_SOURCE * SOURCES // 2,
                               ready, release))
             for _ in range(2)]
    for p in procs:
        p.start()
    try:
        results = [ready.get(timeout=240) for _ in procs]
        opened = sum(r[0] for r in results)
        alive = sum(r[1] for r in results)
        assert opened >= ATTEMPTS * 0.9, results
        # The server kept at most PER_SOURCE per source; the rest were closed at once. The
        # server's own gauge below is exact; counted from the client side a few more can look
        # open: in a burst of 20,000 connects the kernel's accept queue overflows, and a
        # client may then believe a connection established that the server never accepted
        # (nothing to close). Seen once as 321 of 320 on a quiet CI-like run.
        assert alive <= PER_SOURCE * SOURCES + 8, results
        m = server.metrics()
        assert (m.value("hookflash_sip_tcp_refused_total") or 0) >= opened * 0.5, m
        assert (m.value("hookflash_sip_tcp_connections") or 0) <= PER_SOURCE * SOURCES, m

        # While the held connections are still open: a phone registers and calls over TCP.
        A = phones("A")
        ev = A.register(server, "201", transport="tcp")
        assert ev["code"] == 200, ev
        B = phones("B")
        ev = B.register(server, "202", transport="tcp")
        assert ev["code"] == 200, ev
        B.auto_answer(200, delay_ms=200)
        c = A.call(server.uri("202", "tcp"))
        inc = B.wait_incoming()
        assert sip_user(inc["from"]) == "201", inc
        A.wait_state("CONFIRMED", call=c, timeout=10)
        A.hangup()
        B.wait_state("DISCONNECTED", call=inc["call"], timeout=5)

        # Connections that never said anything are closed after tcp_first_message_secs.
        deadline = time.monotonic() + 15
        silent = 0
        while time.monotonic() < deadline:
            silent = server.metrics().value("hookflash_sip_tcp_silent_closed_total") or 0
            if silent >= PER_SOURCE * SOURCES * 0.9:
                break
            time.sleep(0.5)
        assert silent >= PER_SOURCE * SOURCES * 0.9, silent
    finally:
        release.set()
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
