"""SIPp load through hookflash (engine-foundation issue, part h): a SIPp
UAS registered as user 105 (RTP echo) and a SIPp UAC (user 202, digest with
literal credentials, PCMA from g711a.pcap) placing 200 calls at 20 calls/s,
at most 30 at once. The server challenges with MD5 only (SIPp 3.6.1 does no
SHA-256). Counts are bounded; no timing thresholds."""
import pytest

import sipp
from checks import split_hostport
from hfserver import free_port

# solo: a load test; runs alone, not beside other tests (scripts/test.sh).
pytestmark = [pytest.mark.server, pytest.mark.timeout(180), pytest.mark.solo]

CALLS = 200
RATE = 20
LIMIT = 30


def test_sipp_200_calls_no_failures_no_leftovers(server_factory, artifacts):
    server = server_factory(digest_algorithms=["MD5"])
    remote = "127.0.0.1:%d" % server.sip_port
    uas_port = free_port()
    common = dict(USER="105", PASSWORD=server.users["105"], REALM="acme.local",
                  EXPIRES=3600)
    reg = sipp.run(artifacts, "register105", "register.xml", remote=remote, local_port=uas_port,
                   subst=common, calls=1, timeout_s=15)
    assert reg.rc == sipp.OK and reg.successful == 1, reg.summary()
    server.wait_metric("hookflash_active_registrations", 1)

    uas = sipp.Sipp(artifacts, "uas105", "uas_echo.xml", local_port=uas_port, calls=CALLS,
                    timeout_s=120, rtp_echo=True)
    sipp.wait_listening(uas)
    uac = sipp.run(artifacts, "uac202", "uac_auth.xml", remote=remote,
                   subst=dict(USER="202", PASSWORD=server.users["202"], REALM="acme.local",
                              CALLEE="105", PCAP=sipp.G711A_PCAP, HOLD_MS=1000),
                   calls=CALLS, rate=RATE, limit=LIMIT, timeout_s=120)
    u = uas.wait(timeout=30)

    assert uac.rc == sipp.OK, uac.summary()
    assert uac.successful == CALLS and uac.failed == 0, uac.summary()
    assert u.successful == CALLS and u.failed == 0, u.summary()

    # Media anchored: every SDP each side received names hookflash's RTP range.
    for res, prefix in ((uac, "answer-media "), (u, "offer-media ")):
        addrs = [l.split()[1] for l in res.logs() if l.startswith(prefix)]
        assert len(addrs) == CALLS, (res.name, len(addrs))
        bad = [a for a in addrs
               if split_hostport(a)[0] != "127.0.0.1"
               or not server.rtp_min <= split_hostport(a)[1] <= server.rtp_max]
        assert not bad, "%s got SDP outside 127.0.0.1:[%d-%d]: %s" % (
            res.name, server.rtp_min, server.rtp_max, bad[:5])

    server.wait_metric("hookflash_active_calls", 0, timeout=15)
    m = server.wait_metric("hookflash_sip_dialogs", 0, timeout=40)
    assert (m.value("hookflash_calls_started_total") or 0) >= CALLS, m
    assert (m.sum("hookflash_calls_ended_total") or 0) >= CALLS, m
    # each call streamed ~1 s of 50 packet/s audio, echoed back
    assert (m.value("hookflash_rtp_packets_relayed_total") or 0) >= 10 * CALLS, m
