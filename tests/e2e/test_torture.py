"""Malformed and unusual SIP (engine-foundation issue, part i): RFC 4475
torture messages over UDP and TCP, oversized and truncated datagrams, an
unknown method, an INVITE with a broken SDP body. After each, the server
must still answer a valid OPTIONS with 200 and /healthz with 200."""
import os
import socket
import time

import pytest

import rawsip

pytestmark = pytest.mark.server

MESSAGES = rawsip.torture_messages()


def assert_alive(server):
    assert server.alive(), "hookflash died; log tail:\n" + server.log_tail()
    c = rawsip.Client(server.sip_port, "udp")
    try:
        r = c.options()
        assert r is not None and r.status == 200, "OPTIONS after torture: %r" % r
    finally:
        c.close()


def _ack(client, first_line, resp):
    """ACK a non-2xx final response to one of our raw INVITEs."""
    ruri = first_line.split(" ")[1]
    L = [
        "ACK %s SIP/2.0" % ruri,
        "Via: %s" % resp.get("via"),  # our top Via as echoed: same branch (if any)
        "Max-Forwards: 70",
        "From: %s" % resp.get("from"),
        "To: %s" % resp.get("to"),
        "Call-ID: %s" % resp.get("call-id"),
        "CSeq: %s ACK" % resp.get("cseq").split()[0],
        "Content-Length: 0",
    ]
    client.send(("\r\n".join(L) + "\r\n\r\n").encode())


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize("msg", MESSAGES, ids=[m.name for m in MESSAGES])
def test_rfc4475_message(module_server, msg, transport):
    if transport not in msg.transports:
        pytest.skip("%s is a %s-only case" % (msg.name, "/".join(msg.transports)))
    server = module_server
    c = rawsip.Client(server.sip_port, transport)
    try:
        data = msg.render(transport, c.via, "127.0.0.1:%d" % server.sip_port)
        c.send(data)
        expect = msg.expect_tcp if transport == "tcp" else msg.expect
        wait = 1.5 if "none" in expect else 5.0
        first_line = data.split(b"\r\n", 1)[0].decode("utf-8", "replace")
        final = None
        got = []
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            r = c.recv(max(0.05, deadline - time.monotonic()))
            if r is None:
                break
            got.append(r)
            if r.is_response and r.status >= 200 and final is None:
                final = r
                if r.cseq_method == "INVITE" and r.status >= 300:
                    _ack(c, first_line, r)
                if msg.name != "dblreq":
                    break
                deadline = min(deadline, time.monotonic() + 1.0)  # watch for a stray INVITE answer
        status = final.status if final is not None else None
        assert msg.matches(transport, status), "%s over %s: got %s, expected %s (%s)" % (
            msg.name, transport, final.first if final else "no response",
            ",".join(expect), msg.meta.get("rfc"))
        if msg.name == "dblreq":
            # the INVITE glued behind the REGISTER in the datagram must be ignored
            assert [r for r in got if r.is_response and r.cseq_method == "INVITE"] == [], got
    finally:
        c.close()
    assert_alive(server)


@pytest.mark.parametrize("size", [1400, 65000])
def test_garbage_datagram_is_dropped(module_server, size):
    c = rawsip.Client(module_server.sip_port, "udp")
    c.send(os.urandom(size))
    assert c.recv(1.0) is None
    c.close()
    assert_alive(module_server)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_truncated_message_is_dropped(module_server, transport):
    c = rawsip.Client(module_server.sip_port, transport)
    msg = (
        "INVITE sip:202@127.0.0.1:%d SIP/2.0\r\n"
        "Via: SIP/2.0/%s %s;branch=z9hG4bK-trunc%s;rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:201@acme.local>;tag=tr1\r\n"
        "To: <sip:202@acme.lo" % (module_server.sip_port, c.T, c.via, transport)
    )
    c.send(msg.encode())
    assert c.recv(1.0) is None
    c.close()  # TCP: the peer goes away mid-message
    assert_alive(module_server)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_unknown_method_gets_405_or_501(module_server, transport):
    c = rawsip.Client(module_server.sip_port, transport)
    ruri = "sip:127.0.0.1:%d" % module_server.sip_port
    req = c.request("FROBNICATE", ruri, "sip:201@acme.local", ruri)
    c.send(req.data)
    r = c.final(3.0)
    if transport == "tcp":
        # rsipstack's stream codec rejects unknown methods and closes the connection before
        # we can answer (documented limitation); over UDP the datagram guard answers 501.
        assert r is None or r.status in (405, 501), r
        c.close()
        assert_alive(module_server)
        return
    assert r is not None and r.status in (405, 501), r
    if r.status == 405:
        assert r.get("allow"), "405 without Allow"
    c.close()
    assert_alive(module_server)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_options_gets_200(module_server, transport):
    c = rawsip.Client(module_server.sip_port, transport)
    r = c.options()
    assert r is not None and r.status == 200, r
    c.close()


BAD_SDP = "v=0\r\nthis is not an SDP body\r\nm=audio banana RTP/AVP\r\n"


def test_invite_with_bad_sdp_gets_488(module_server, phones):
    server = module_server
    B = phones("B")
    assert B.register(server, "202")["code"] == 200
    c = rawsip.Client(server.sip_port, "udp")
    finals = rawsip.invite(c, "201", "secret201", "acme.local", server.uri("202"), BAD_SDP)
    c.close()
    assert finals and finals[-1].status == 488, finals
    time.sleep(0.5)
    assert B.find("incoming") == [], "the callee rang for an INVITE whose SDP was unusable"
    m = B.mark()
    B.cmd("unregister")
    B.wait_for("reg_state", lambda e: e["code"] >= 200, since=m)
    assert_alive(server)


def test_server_survived_everything(module_server):
    server = module_server
    assert server.alive()
    assert server.healthz() == 200
    for t in ("udp", "tcp"):
        c = rawsip.Client(server.sip_port, t)
        r = c.options()
        assert r is not None and r.status == 200, (t, r)
        c.close()
    # TCP listener still accepts connections
    socket.create_connection(("127.0.0.1", server.sip_port), timeout=3).close()
    server.wait_metric("hookflash_active_calls", 0)
