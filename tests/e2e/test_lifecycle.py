"""Call and registration lifecycle with independent peers: registrations
survive a restart and expire, unanswered calls time out (408), early media is
relayed, silent calls are ended (RTP inactivity), nothing is left behind after
any kind of ending, and the trunk answers a carrier's digest challenge.

Peers: pjsua2 phones (phone_agent.py), SIPp (tests/sipp/*.xml), raw SIP
(rawsip.py). Timeouts in the server config are short (2-3 s) so the whole
module stays well under 90 s; every wait is bounded."""
import os
import re
import time

import pytest

import rawsip
import sipp
from checks import assert_anchored, assert_hears, sip_user, split_hostport, wait_until
from conftest import F_A, F_B
from hfserver import free_port

pytestmark = pytest.mark.server

RING_TIMEOUT = 3
RTP_TIMEOUT = 3
# A national number for acme (country 49): new accounts may not dial international ones.
DIALLED = "+4969555123"
TRUNK_USER, TRUNK_PASSWORD, TRUNK_REALM = "acct-7781", "carrier-pw-53", "carrier.example"


# ------------------------------------------------------------------ helpers
def registered(phones, server, name, ext, expires=300):
    p = phones(name)
    ev = p.register(server, ext, expires=expires)
    assert ev["code"] == 200, "%s (%s) REGISTER: %s" % (name, ext, ev)
    return p


def counter(m, name, **labels):
    return m.value(name, **labels) or 0


def wait_gauges_zero(server, names, timeout=15.0):
    """Poll /metrics until every gauge in ``names`` is 0 (dialogs are removed
    shortly after the call ends); fails with the last values."""
    last = {}

    def ok():
        m = server.metrics()
        last.clear()
        last.update({n: m.value(n) for n in names})
        return all(v == 0 for v in last.values())

    try:
        wait_until(ok, timeout=timeout, what="gauges %s at 0" % ", ".join(names))
    except AssertionError:
        raise AssertionError("after %.0fs: %s\nserver log tail:\n%s"
                             % (timeout, last, server.log_tail(40)))


def sipp_times(res, what):
    """gettimeofday values the scenario logged as '<what> S U'."""
    out = []
    for line in res.logs():
        parts = line.split()
        if len(parts) == 3 and parts[0] == what:
            out.append(float(parts[1]) + float(parts[2]) / 1e6)
    return out


def received_requests(phone, method, call_id):
    """Requests of ``method`` with this Call-ID that pjsip logged as received
    (the agent runs with msgLogging: 'RX ... Request msg METHOD/...' blocks)."""
    with open(phone.log_path, errors="replace") as f:
        text = f.read()
    out = []
    for m in re.finditer(r"RX \d+ bytes Request msg %s/.*?\n(.*?)--end msg--" % method, text, re.S):
        if re.search(r"(?im)^(call-id|i)\s*:\s*%s\s*$" % re.escape(call_id), m.group(1)):
            out.append(m.group(1))
    return out


# ------------------------------------------------ call scenarios (reused)
def busy_call(server, A, B):
    B.auto_answer(486)
    mb = B.mark()
    c = A.call(server.uri("202"))
    inc = B.wait_incoming(since=mb)
    assert A.end_status(call=c) == 486
    B.wait_state("DISCONNECTED", call=inc["call"], timeout=5)
    B.auto_answer(0)


def cancelled_call(server, A, B):
    mb = B.mark()
    c = A.call(server.uri("202"))
    inc = B.wait_incoming(since=mb)
    A.wait_for("call_state", lambda e: e["call"] == c and e["state"] == "EARLY", timeout=5)
    time.sleep(0.3)
    A.hangup(call=c)  # CANCEL
    assert A.end_status(call=c) == 487
    B.wait_state("DISCONNECTED", call=inc["call"], timeout=5)
    assert "CONFIRMED" not in B.states(call=inc["call"])


def normal_call(server, A, B, tones, artifacts, tag="normal"):
    mb = B.mark()
    A.play(tones[F_A])
    B.play(tones[F_B])
    B.auto_answer(200)
    c = A.call(server.uri("202"))
    inc = B.wait_incoming(since=mb)
    A.wait_state("CONFIRMED", call=c)
    B.wait_state("CONFIRMED", call=inc["call"])
    A.wait_media(lambda e: e["active"], call=c)
    # while the call is up the gauges that must return to 0 are not 0
    m = server.metrics()
    assert (m.value("hookflash_sip_dialogs") or 0) >= 2, m.series("hookflash_sip_dialogs")
    assert (m.value("hookflash_rtp_ports_in_use") or 0) >= 1, m.series("hookflash_rtp_ports_in_use")
    ra = os.path.join(artifacts, "A_%s.wav" % tag)
    A.record(ra)
    time.sleep(1.5)
    A.stop_record()
    A.hangup(call=c)
    B.wait_state("DISCONNECTED", call=inc["call"], timeout=5)
    A.wait_state("DISCONNECTED", call=c, timeout=5)
    B.auto_answer(0)
    assert_hears(ra, F_B, F_A, t0=0.3, what="A hears B (%s call)" % tag)


def ring_timeout_call(server, A, B):
    """A calls B, B only rings (180) and never answers: after the ring
    timeout A gets 408 and B's ringing call is CANCELled. Closes B (to read
    its complete pjsip log), so B is unusable afterwards."""
    B.auto_answer(0)  # the agent sends 180 and waits
    mb = B.mark()
    before = server.metrics()
    c = A.call(server.uri("202"))
    inc = B.wait_incoming(since=mb)
    A.wait_for("call_state", lambda e: e["call"] == c and e["state"] == "EARLY", timeout=5)
    t_ring = time.monotonic()
    end_a = A.wait_state("DISCONNECTED", call=c, timeout=RING_TIMEOUT + 10)
    waited = time.monotonic() - t_ring
    assert end_a["last_status"] == 408, "caller's call ended with %s, expected 408: %s" % (
        end_a["last_status"], end_a)
    # the 408 comes from the ring timeout, not from something that failed at once
    assert waited >= RING_TIMEOUT - 1, "408 after only %.1fs of ringing (ring timeout %ds)" % (
        waited, RING_TIMEOUT)
    end_b = B.wait_state("DISCONNECTED", call=inc["call"], timeout=5)
    assert "CONFIRMED" not in B.states(call=inc["call"]), B.states(call=inc["call"])
    assert end_b["last_status"] == 487, "callee's ringing call ended with %s (CANCEL -> 487 expected)" % (
        end_b)
    after = server.wait_metric("hookflash_active_calls", 0)
    got = counter(after, "hookflash_calls_ended_total", cause="no_answer") - counter(
        before, "hookflash_calls_ended_total", cause="no_answer")
    assert got == 1, "calls_ended_total{cause=no_answer} grew by %s: %s" % (
        got, after.series("hookflash_calls_ended_total"))
    # pjlib's log is block-buffered: B's process must exit before its log is
    # complete (the phones fixture still closes B's pipes at teardown)
    B.request_quit()
    B.proc.wait(10)
    assert received_requests(B, "CANCEL", inc["call_id"]), (
        "callee never received a CANCEL for its ringing call %s" % inc["call_id"])


def register_sipp_uas(server, artifacts, ext="105", name="register105"):
    """SIPp registers ``ext`` with Contact = its local port; returns the port
    for the SIPp UAS to listen on."""
    port = free_port()
    reg = sipp.run(artifacts, name, "register.xml", remote="127.0.0.1:%d" % server.sip_port,
                   local_port=port, calls=1, timeout_s=15,
                   subst=dict(USER=ext, PASSWORD=server.users[ext], REALM="acme.local",
                              EXPIRES=3600))
    assert reg.rc == sipp.OK and reg.successful == 1, reg.summary()
    return port


def rtp_timeout_call(server, artifacts, tag="rtp"):
    """SIPp 202 calls SIPp 105; neither sends RTP; the server must BYE both
    about RTP_TIMEOUT s after the call is up."""
    before = server.metrics()
    uas_port = register_sipp_uas(server, artifacts, name="register105_" + tag)
    bye_wait_ms = (RTP_TIMEOUT + 12) * 1000
    uas = sipp.Sipp(artifacts, "uas105_" + tag, "uas_silent.xml", local_port=uas_port, calls=1,
                    timeout_s=30, subst=dict(BYE_WAIT_MS=bye_wait_ms))
    sipp.wait_listening(uas)
    uac = sipp.run(artifacts, "uac202_" + tag, "uac_auth_wait_bye.xml",
                   remote="127.0.0.1:%d" % server.sip_port, calls=1, timeout_s=30,
                   subst=dict(USER="202", PASSWORD=server.users["202"], REALM="acme.local",
                              CALLEE="105", BYE_WAIT_MS=bye_wait_ms))
    u = uas.wait(timeout=20)
    assert uac.rc == sipp.OK and uac.successful == 1, (
        "caller side: no BYE from the server after the silent call\n" + uac.summary())
    assert u.rc == sipp.OK and u.successful == 1, (
        "callee side: no BYE from the server after the silent call\n" + u.summary())

    # media was anchored (the server's RTP range on both sides) ...
    for res, prefix in ((uac, "answer-media "), (u, "offer-media ")):
        addrs = [l.split()[1] for l in res.logs() if l.startswith(prefix)]
        assert len(addrs) == 1, (res.name, res.logs())
        host, port = split_hostport(addrs[0])
        assert host == "127.0.0.1" and server.rtp_min <= port <= server.rtp_max, (res.name, addrs)
    # ... and each BYE came after the inactivity timeout, not at once
    for res in (uac, u):
        acked, bye = sipp_times(res, "acked"), sipp_times(res, "bye")
        assert len(acked) == 1 and len(bye) == 1, (res.name, res.logs())
        dt = bye[0] - acked[0]
        assert RTP_TIMEOUT - 1 <= dt <= RTP_TIMEOUT + 8, (
            "%s: BYE %.1fs after the ACK (rtp inactivity timeout %ds)" % (res.name, dt, RTP_TIMEOUT))

    after = server.wait_metric("hookflash_active_calls", 0)
    got = counter(after, "hookflash_calls_ended_total", cause="rtp_timeout") - counter(
        before, "hookflash_calls_ended_total", cause="rtp_timeout")
    assert got == 1, "calls_ended_total{cause=rtp_timeout} grew by %s: %s" % (
        got, after.series("hookflash_calls_ended_total"))


# -------------------------------------------------------------------- tests
def test_registrations_survive_restart(server, phones, tones, artifacts):
    # expires 3600: pjsua2 would only refresh near the end, never during the test
    B = registered(phones, server, "B", "202", expires=3600)
    A = registered(phones, server, "A", "201", expires=3600)
    server.wait_metric("hookflash_active_registrations", 2)
    m = server.metrics()
    assert counter(m, "hookflash_sip_requests_total", method="REGISTER") >= 2, m

    server.restart()

    server.wait_metric("hookflash_active_registrations", 2)
    A.play(tones[F_A])
    B.play(tones[F_B])
    B.auto_answer(200, delay_ms=300)
    ra, rb = os.path.join(artifacts, "A.wav"), os.path.join(artifacts, "B.wav")
    A.record(ra)
    B.record(rb)
    c = A.call(server.uri("202"))
    inc = B.wait_incoming(timeout=10)
    assert sip_user(inc["from"]) == "201", inc
    A.wait_state("CONFIRMED", call=c)
    B.wait_state("CONFIRMED", call=inc["call"])
    assert_anchored(A.wait_media(lambda e: e["active"], call=c), server)
    assert_anchored(B.wait_media(lambda e: e["active"], call=inc["call"]), server)
    time.sleep(2.5)
    A.stop_record()
    B.stop_record()
    A.hangup(call=c)
    B.wait_state("DISCONNECTED", call=inc["call"], timeout=5)
    assert_hears(ra, F_B, F_A, what="A hears B after restart")
    assert_hears(rb, F_A, F_B, what="B hears A after restart")

    # Nobody re-registered: the restarted server saw no REGISTER at all, and
    # each phone registered exactly once.
    m = server.metrics()
    assert counter(m, "hookflash_sip_requests_total", method="REGISTER") == 0, (
        "REGISTERs after restart: %s" % m.series("hookflash_sip_requests_total"))
    for p in (A, B):
        regs = p.find("reg_state")
        assert [e["code"] for e in regs] == [200], (p.name, regs)
    server.wait_metric("hookflash_active_calls", 0)


def test_registration_expires_then_calls_get_480(server_factory, phones):
    server = server_factory(registrar=dict(min_expires=2))
    c = rawsip.Client(server.sip_port, "udp")
    try:
        _, final = rawsip.register(c, "202", "secret202", "acme.local", expires=1)
        assert final is not None and final.status == 423, final
        assert final.get("min-expires") == "2", final.headers

        _, final = rawsip.register(c, "202", "secret202", "acme.local", expires=3)
        assert final is not None and final.status == 200, final
        granted = [re.search(r"expires=(\d+)", v) for v in final.all("contact")
                   if ":%d" % c.local_port in v]
        assert granted and granted[0] and int(granted[0].group(1)) <= 3, final.all("contact")
        t_reg = time.monotonic()
        server.wait_metric("hookflash_active_registrations", 1, timeout=2)
        server.wait_metric("hookflash_active_registrations", 0, timeout=8)
        assert time.monotonic() - t_reg >= 1.5, "binding vanished long before its 3 s expiry"

        A = registered(phones, server, "A", "201")
        call = A.call(server.uri("202"))
        assert A.end_status(call=call) == 480
        # the expired contact was not tried
        got = []
        while True:
            msg = c.recv(0.3)
            if msg is None:
                break
            got.append(msg)
        assert not [m for m in got if m.method == "INVITE"], (
            "expired contact still received: %s" % got)
    finally:
        c.close()


def test_ring_timeout_gives_408_and_cancels_callee(server_factory, phones):
    server = server_factory(ring_timeout_secs=RING_TIMEOUT)
    A = registered(phones, server, "A", "201")
    B = registered(phones, server, "B", "202")
    ring_timeout_call(server, A, B)


def test_early_media_is_relayed_before_answer(server, phones, tones, artifacts):
    A = registered(phones, server, "A", "201")
    B = registered(phones, server, "B", "202")
    A.play(tones[F_A])
    B.play(tones[F_B])
    c = A.call(server.uri("202"))
    inc = B.wait_incoming()
    ma = A.mark()
    B.answer(183, call=inc["call"])  # 183 Session Progress with SDP
    early = A.wait_media(lambda e: e["active"], call=c, since=ma, timeout=5)
    assert_anchored(early, server)
    assert A.states(call=c)[-1] == "EARLY", A.states(call=c)
    re_early = os.path.join(artifacts, "A_early.wav")
    A.record(re_early)
    time.sleep(2)
    A.stop_record()
    assert "CONFIRMED" not in A.states(call=c), A.states(call=c)
    assert "CONFIRMED" not in B.states(call=inc["call"]), B.states(call=inc["call"])
    assert_hears(re_early, F_B, F_A, t0=0.3, what="A hears B's early media (183)")

    B.answer(200, call=inc["call"])
    A.wait_state("CONFIRMED", call=c)
    B.wait_state("CONFIRMED", call=inc["call"])
    assert_anchored(B.wait_media(lambda e: e["active"], call=inc["call"]), server)
    time.sleep(0.5)
    ra, rb = os.path.join(artifacts, "A_talk.wav"), os.path.join(artifacts, "B_talk.wav")
    A.record(ra)
    B.record(rb)
    time.sleep(2)
    A.stop_record()
    B.stop_record()
    B.hangup(call=inc["call"])
    A.wait_state("DISCONNECTED", call=c, timeout=5)
    assert_hears(ra, F_B, F_A, t0=0.3, what="A hears B after 200")
    assert_hears(rb, F_A, F_B, t0=0.3, what="B hears A after 200")
    server.wait_metric("hookflash_active_calls", 0)


def test_silent_call_is_ended_by_rtp_inactivity(server_factory, artifacts):
    server = server_factory(digest_algorithms=["MD5"], rtp_inactivity_secs=RTP_TIMEOUT)
    rtp_timeout_call(server, artifacts)
    wait_gauges_zero(server, ["hookflash_active_calls", "hookflash_sip_dialogs",
                              "hookflash_rtp_ports_in_use"])
    m = server.metrics()
    assert counter(m, "hookflash_calls_ended_total", cause="rtp_timeout") >= 1, m


def test_no_leftovers_after_every_kind_of_ending(server_factory, phones, tones, artifacts):
    server = server_factory(digest_algorithms=["MD5"], ring_timeout_secs=RING_TIMEOUT,
                            rtp_inactivity_secs=RTP_TIMEOUT)
    A = registered(phones, server, "A", "201")
    B = registered(phones, server, "B", "202")
    busy_call(server, A, B)
    cancelled_call(server, A, B)
    normal_call(server, A, B, tones, artifacts)
    ring_timeout_call(server, A, B)
    rtp_timeout_call(server, artifacts)

    wait_gauges_zero(server, ["hookflash_active_calls", "hookflash_sip_dialogs",
                              "hookflash_rtp_ports_in_use", "hookflash_rtp_bridges_active"])
    m = server.metrics()
    for cause in ("busy", "cancel", "normal", "no_answer", "rtp_timeout"):
        assert counter(m, "hookflash_calls_ended_total", cause=cause) >= 1, (
            cause, m.series("hookflash_calls_ended_total"))
    assert counter(m, "hookflash_calls_started_total") >= 5, m


def test_trunk_answers_carrier_digest_challenge(server_factory, phones, artifacts):
    server = server_factory(trunk_credentials=(TRUNK_USER, TRUNK_PASSWORD))
    carrier = sipp.Sipp(artifacts, "carrier", "uas_trunk_auth.xml", local_port=server.trunk_port,
                        calls=1, timeout_s=30,
                        subst=dict(USER=TRUNK_USER, PASSWORD=TRUNK_PASSWORD, REALM=TRUNK_REALM))
    sipp.wait_listening(carrier)
    A = registered(phones, server, "A", "201")
    c = A.call(server.uri(DIALLED))
    end = A.wait_for("call_state", lambda e: e["call"] == c and e["state"] in (
        "CONFIRMED", "DISCONNECTED"), timeout=10)
    if end["state"] == "CONFIRMED":
        assert_anchored(A.wait_media(lambda e: e["active"], call=c), server)
        time.sleep(0.5)
        A.hangup(call=c)  # the carrier expects the BYE
    A.wait_state("DISCONNECTED", call=c, timeout=5)
    res = carrier.wait(timeout=15)
    logs = res.logs()
    assert "auth ok" in logs, "carrier's verifyauth rejected the INVITE: %s\n%s" % (
        logs, res.summary())
    assert "auth-user %s" % TRUNK_USER in logs, logs
    assert "ruri %s" % DIALLED in logs, logs
    assert res.rc == sipp.OK and res.successful == 1 and res.failed == 0, res.summary()
    assert end["state"] == "CONFIRMED", "caller's outbound call: %s" % end
    server.wait_metric("hookflash_active_calls", 0)


def test_unanswerable_trunk_challenge_becomes_503_for_the_caller(server_factory, phones, artifacts):
    """A trunk that demands credentials we were not given: the caller must get a clean 503,
    not the carrier's 401 (which would carry no challenge of ours)."""
    server = server_factory()  # trunk configured without credentials
    carrier = sipp.Sipp(artifacts, "carrier", "uas_trunk_auth.xml", local_port=server.trunk_port,
                        calls=1, timeout_s=15,
                        subst=dict(USER=TRUNK_USER, PASSWORD=TRUNK_PASSWORD, REALM=TRUNK_REALM))
    sipp.wait_listening(carrier)
    A = registered(phones, server, "A", "201")
    c = A.call(server.uri(DIALLED))
    assert A.end_status(call=c) == 503
    carrier.stop()
    server.wait_metric("hookflash_active_calls", 0)


def test_a_callee_that_never_answers_bye_does_not_keep_the_call(server, phones):
    """201 calls out through the trunk to a carrier that never answers BYE. When 201 hangs up,
    the carrier gets its BYE at once (and its retransmissions) and the call leaves the API's
    list and the active-calls gauge at once, not after the BYE transaction's 32 s."""
    from api_support import Native

    carrier = rawsip.Peer(server.sip_port, port=server.trunk_port, name="carrier",
                          silent_bye=True)
    try:
        A = phones("A")
        assert A.register(server, "201")["code"] == 200
        c = A.call(server.uri("+4969555123"))
        A.wait_state("CONFIRMED", call=c, timeout=10)
        api = Native(server)
        assert len(api.calls()) == 1
        m = carrier.mark()
        t0 = time.monotonic()
        A.hangup(call=c)
        A.wait_state("DISCONNECTED", call=c, timeout=5)
        assert carrier.wait_request("BYE", timeout=2, since=m) is not None, "no BYE"
        wait_until(lambda: not api.calls(), timeout=3,
                   what="the call to leave GET /calls")
        server.wait_metric("hookflash_active_calls", 0, timeout=3)
        gone = time.monotonic() - t0
        # The BYE is retransmitted (Timer E) while it is unanswered: the transaction lives on
        # without the call.
        time.sleep(1.0)
        assert len(carrier.requests("BYE", since=m)) >= 2, "the BYE was not retransmitted"
        print("call gone %.2f s after the hangup" % gone)
    finally:
        carrier.close()
