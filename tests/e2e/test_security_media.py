"""Media bleed (security issue, item 3): an outsider spraying the whole RTP range of the
server during 50 SIPp call set-ups (with audio both ways) receives no packet at all: the relay
latches a leg to the address its SDP announced, never to the first source that speaks."""
import json
import os
import subprocess
import sys

import pytest

import sipp
from hfserver import free_port

pytestmark = [pytest.mark.server, pytest.mark.timeout(180)]

CALLS = 50
HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.solo  # a spray of the whole RTP range at full speed: runs alone
def test_an_rtp_spray_during_call_setups_receives_nothing(server_factory, artifacts):
    server = server_factory(digest_algorithms=["MD5"])
    remote = "127.0.0.1:%d" % server.sip_port
    uas_port = free_port()
    reg = sipp.run(artifacts, "register105", "register.xml", remote=remote, local_port=uas_port,
                   subst=dict(USER="105", PASSWORD=server.users["105"], REALM="acme.local",
                              EXPIRES=3600), calls=1, timeout_s=15)
    assert reg.rc == sipp.OK and reg.successful == 1, reg.summary()
    # The sprayer hits every port of the range (RTP and RTCP) every 20 ms from 127.0.0.9.
    spray = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "spray.py"), "--src", "127.0.0.9",
         "--lo", str(server.rtp_min), "--hi", str(server.rtp_max), "--seconds", "25"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        uas = sipp.Sipp(artifacts, "uas105", "uas_echo.xml", local_port=uas_port, calls=CALLS,
                        timeout_s=120, rtp_echo=True)
        sipp.wait_listening(uas)
        uac = sipp.run(artifacts, "uac202", "uac_auth.xml", remote=remote,
                       subst=dict(USER="202", PASSWORD=server.users["202"], REALM="acme.local",
                                  CALLEE="105", PCAP=sipp.G711A_PCAP, HOLD_MS=1000),
                       calls=CALLS, rate=5, limit=10, timeout_s=120)
        u = uas.wait(timeout=30)
        assert uac.rc == sipp.OK and uac.successful == CALLS, uac.summary()
        assert u.successful == CALLS, u.summary()
    finally:
        out, err = spray.communicate(timeout=60)
    result = json.loads(out.strip().splitlines()[-1])
    assert result["sent"] > 50_000, result
    assert result["received"] == 0, "the sprayer received audio: %s" % result
    m = server.wait_metric("hookflash_active_calls", 0, timeout=15)
    # The calls' audio went through (echoed both ways) and the spray was dropped as foreign.
    assert (m.value("hookflash_rtp_packets_relayed_total") or 0) >= 10 * CALLS, m
    assert (m.value("hookflash_rtp_packets_dropped_total") or 0) > 1000, m
