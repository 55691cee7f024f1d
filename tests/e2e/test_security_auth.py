"""SIP digest hardening (security issue, item 2), checked on the wire with raw sockets:
no user enumeration, a replayed Authorization is refused, password guessing is banned per
source, and an INVITE without credentials is challenged without the server keeping state."""
import hashlib
import re
import uuid

import pytest

import rawsip

pytestmark = pytest.mark.server

REALM = "acme.local"


def md5(s):
    return hashlib.md5(s.encode()).hexdigest()


def challenge_of(resp, header="www-authenticate"):
    """(nonce, realm, algorithm) of the MD5 challenge in a 401/407."""
    for value in resp.all(header):
        if "MD5" in value and "SHA" not in value:
            nonce = re.search(r'nonce="([^"]+)"', value).group(1)
            realm = re.search(r'realm="([^"]+)"', value).group(1)
            return nonce, realm
    raise AssertionError("no MD5 challenge in %r" % resp)


def authorization(user, password, realm, nonce, method, uri, nc=1, cnonce="c0ffee",
                  name="Authorization"):
    ha1 = md5("%s:%s:%s" % (user, realm, password))
    ha2 = md5("%s:%s" % (method, uri))
    ncs = "%08x" % nc
    resp = md5("%s:%s:%s:%s:auth:%s" % (ha1, nonce, ncs, cnonce, ha2))
    return ('%s: Digest username="%s", realm="%s", nonce="%s", uri="%s", response="%s", '
            'algorithm=MD5, qop=auth, nc=%s, cnonce="%s"'
            % (name, user, realm, nonce, uri, resp, ncs, cnonce))


def register(c, server, ext, headers=(), call_id=None, cseq=1):
    aor = "sip:%s@%s" % (ext, REALM)
    uri = "sip:%s" % REALM
    req = c.request("REGISTER", uri, aor, aor, call_id=call_id, cseq=cseq,
                    contact="<sip:%s@%s>" % (ext, c.via), expires=60, headers=headers)
    c.send(req.data)
    return c.final(5.0, cseq_method="REGISTER"), uri


def test_unknown_and_known_extensions_look_the_same(server):
    c = rawsip.Client(server.sip_port, "udp")
    try:
        known, _ = register(c, server, "201")
        unknown, _ = register(c, server, "299")
        assert known.status == 401 and unknown.status == 401, (known, unknown)
        shape = lambda r: sorted(re.sub(r'nonce="[^"]+"', "nonce", v)
                                 for v in r.all("www-authenticate"))
        assert shape(known) == shape(unknown)
        # Wrong credentials: the same 403 for both.
        for ext in ("201", "299"):
            first, uri = register(c, server, ext)
            nonce, realm = challenge_of(first)
            second, _ = register(c, server, ext, headers=[
                authorization(ext, "wrong-password", realm, nonce, "REGISTER", uri)])
            assert second.status == 403, (ext, second)
    finally:
        c.close()


def test_a_replayed_authorization_is_refused(server):
    c = rawsip.Client(server.sip_port, "udp")
    try:
        call_id = uuid.uuid4().hex
        first, uri = register(c, server, "201", call_id=call_id, cseq=1)
        nonce, realm = challenge_of(first)
        auth = authorization("201", server.users["201"], realm, nonce, "REGISTER", uri, nc=1)
        ok, _ = register(c, server, "201", headers=[auth], call_id=call_id, cseq=2)
        assert ok.status == 200, ok
        # The very same credentials again (a captured request replayed in a new transaction).
        replay, _ = register(c, server, "201", headers=[auth], call_id=call_id, cseq=3)
        assert replay.status == 401, replay
        assert "stale=true" in " ".join(replay.all("www-authenticate")).lower(), replay
        # The honest client's next request counts on: accepted.
        auth2 = authorization("201", server.users["201"], realm, nonce, "REGISTER", uri, nc=2)
        again, _ = register(c, server, "201", headers=[auth2], call_id=call_id, cseq=4)
        assert again.status == 200, again
    finally:
        c.close()


def test_password_guessing_bans_the_source(server):
    guesser = rawsip.Client(server.sip_port, "udp", local_host="127.0.0.5")
    honest = rawsip.Client(server.sip_port, "udp", local_host="127.0.0.6")
    try:
        codes = []
        for i in range(11):
            first, uri = register(guesser, server, "202")
            nonce, realm = challenge_of(first)
            r, _ = register(guesser, server, "202", headers=[
                authorization("202", "guess-%d" % i, realm, nonce, "REGISTER", uri)])
            codes.append(r.status)
        assert codes == [403] * 11, codes
        # Banned: the guessing source's requests are dropped before the SIP stack, the right
        # password included (it gets no answer at all, like a flood).
        first, uri = register(guesser, server, "202")
        assert first is None, first
        assert guesser.options(timeout=1.0) is None
        # Another source with the right password is fine (the extension is not locked yet).
        first, uri = register(honest, server, "202")
        nonce, realm = challenge_of(first)
        r, _ = register(honest, server, "202", headers=[
            authorization("202", server.users["202"], realm, nonce, "REGISTER", uri)])
        assert r.status == 200, r
        m = server.metrics()
        assert (m.value("hookflash_sip_auth_bans_total") or 0) >= 1, m
        assert (m.value("hookflash_sip_flood_dropped_total") or 0) >= 2, m
        assert (m.value("hookflash_sip_auth_banned_sources") or 0) >= 1, m
    finally:
        guesser.close()
        honest.close()


def test_an_invite_without_credentials_is_challenged_statelessly(server):
    c = rawsip.Client(server.sip_port, "udp", local_host="127.0.0.7")
    try:
        before = server.metrics()
        stateless_before = before.value("hookflash_sip_stateless_challenges_total") or 0
        req = c.request("INVITE", "sip:202@%s" % REALM, "sip:201@%s" % REALM,
                        "sip:202@%s" % REALM, headers=["Contact: <sip:201@%s>" % c.via])
        c.send(req.data)
        r = c.final(5.0, cseq_method="INVITE")
        assert r is not None and r.status == 407, r
        assert any('realm="%s"' % REALM in v for v in r.all("proxy-authenticate")), r
        assert ";tag=hfsl-" in r.get("to"), r.get("to")
        c.send(c.ack_for(req, r))
        # A retransmission gets the same challenge again (no transaction swallowed it).
        c.send(req.data)
        r2 = c.final(5.0, cseq_method="INVITE")
        assert r2 is not None and r2.status == 407, r2
        after = server.metrics()
        assert (after.value("hookflash_sip_stateless_challenges_total") or 0) >= stateless_before + 2
        # The server still answers (and ACKs absorbed left nothing behind to answer).
        assert c.options().status == 200
    finally:
        c.close()
