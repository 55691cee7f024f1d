"""Registrar and digest authentication (engine-foundation issue, part a)."""
import pytest

import rawsip

pytestmark = pytest.mark.server

SDP = (
    "v=0\r\no=raw 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 31998 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=sendrecv\r\n"
)


def test_register_challenge_offers_sha256_and_md5_in_account_realm(server):
    c = rawsip.Client(server.sip_port, "udp")
    first, final = rawsip.register(c, "201", "secret201", "acme.local", algorithm="SHA-256")
    assert first is not None and first.status == 401, first
    chals = rawsip.challenges(first)
    assert chals, "401 without WWW-Authenticate"
    assert {ch["realm"] for ch in chals} == {"acme.local"}
    algs = {ch["algorithm"].upper() for ch in chals}
    assert {"SHA-256", "MD5"} <= algs, algs
    assert all(ch.get("nonce") for ch in chals)
    assert final is not None and final.status == 200, final
    assert any(":%d" % c.local_port in v for v in final.all("contact")), final.all("contact")
    server.wait_metric("hookflash_active_registrations", 1)

    t = rawsip.Client(server.sip_port, "tcp")
    first, final = rawsip.register(t, "202", "secret202", "acme.local", algorithm="MD5")
    assert first.status == 401 and final is not None and final.status == 200, final
    server.wait_metric("hookflash_active_registrations", 2)

    # un-REGISTER (Expires: 0) removes each binding
    _, final = rawsip.register(c, "201", "secret201", "acme.local", expires=0)
    assert final.status == 200, final
    server.wait_metric("hookflash_active_registrations", 1)
    _, final = rawsip.register(t, "202", "secret202", "acme.local", expires=0)
    assert final.status == 200, final
    server.wait_metric("hookflash_active_registrations", 0)
    c.close()
    t.close()


def test_register_too_brief_expires_gets_423(server):
    c = rawsip.Client(server.sip_port, "udp")
    _, final = rawsip.register(c, "201", "secret201", "acme.local", expires=30)
    assert final is not None and final.status == 423, final
    assert final.get("min-expires") == "60"
    assert server.metrics().value("hookflash_active_registrations") == 0


def test_phones_register_wrong_password_unknown_user_unregister(server, phones):
    A = phones("A")
    ev = A.register(server, "201")
    assert ev["code"] == 200 and ev["expires"] > 0, ev
    B = phones("B")
    ev = B.register(server, "202", transport="tcp")
    assert ev["code"] == 200 and ev["expires"] > 0, ev
    server.wait_metric("hookflash_active_registrations", 2)

    W = phones("W")
    ev = W.register(server, "202", password="not-the-password")
    assert ev["code"] == 403, ev
    # An extension that does not exist is answered exactly like a wrong password (challenge,
    # then 403): the registrar does not tell which extensions exist.
    U = phones("U")
    ev = U.register(server, "299", password="whatever", realm="acme.local")
    assert ev["code"] == 403, ev
    assert server.metrics().value("hookflash_active_registrations") == 2

    m = A.mark()
    A.cmd("unregister")
    ev = A.wait_for("reg_state", lambda e: e["code"] >= 200, since=m)
    assert ev["code"] == 200 and ev["expires"] == 0, ev
    server.wait_metric("hookflash_active_registrations", 1)
    m = B.mark()
    B.cmd("unregister")
    ev = B.wait_for("reg_state", lambda e: e["code"] >= 200, since=m)
    assert ev["code"] == 200, ev
    server.wait_metric("hookflash_active_registrations", 0)


def test_invite_is_challenged_with_407_and_accepts_both_algorithms(server):
    c = rawsip.Client(server.sip_port, "udp")
    target = server.uri("104")  # provisioned, never registered -> 480 once authenticated
    req = c.request("INVITE", target, "sip:201@acme.local", target, body=SDP,
                    content_type="application/sdp",
                    contact="<sip:201@%s>" % c.via)
    c.send(req.data)
    r = c.final(5, "INVITE")
    assert r is not None and r.status == 407, r
    chals = rawsip.challenges(r)
    assert chals and {ch["realm"] for ch in chals} == {"acme.local"}, r.all("proxy-authenticate")
    assert {"SHA-256", "MD5"} <= {ch["algorithm"].upper() for ch in chals}
    c.send(c.ack_for(req, r))

    for alg in ("SHA-256", "MD5"):
        finals = rawsip.invite(c, "201", "secret201", "acme.local", target, SDP, algorithm=alg)
        assert [f.status for f in finals] == [407, 480], (alg, finals)
    finals = rawsip.invite(c, "201", "wrong", "acme.local", target, SDP)
    assert finals and finals[0].status == 407 and finals[-1].status in (403, 407), finals
    c.close()


def test_md5_only_config_challenges_md5_only(server_factory):
    s = server_factory(digest_algorithms=["MD5"])
    c = rawsip.Client(s.sip_port, "udp")
    first, final = rawsip.register(c, "201", "secret201", "acme.local", algorithm="MD5")
    assert first.status == 401
    assert {ch["algorithm"].upper() for ch in rawsip.challenges(first)} == {"MD5"}
    assert final is not None and final.status == 200, final
