"""A hold the phone refuses leaves the call exactly as it was (live call control issue): the
server's re-INVITE to the callee (SIPp) is answered 488, so the API answers 409 `sip_failed`,
the leg the server had already put on hold (the pjsua2 caller) is taken off hold again, the
call reports no held leg, and both directions still carry audio."""
import os
import time

import pytest

import sipp
from api_support import Native, registered
from checks import assert_anchored, assert_hears
from conftest import F_A, F_B
from test_lifecycle import register_sipp_uas

pytestmark = pytest.mark.server


def test_refused_hold_rolls_back_and_the_call_continues(server_factory, phones, tones, artifacts):
    server = server_factory(digest_algorithms=["MD5"])
    port = register_sipp_uas(server, artifacts, ext="202", name="register202")
    callee = sipp.Sipp(artifacts, "callee", "uas_refuse_reinvite.xml", local_port=port,
                       calls=1, timeout_s=40, rtp_echo=True)
    sipp.wait_listening(callee)
    A = registered(phones, server, "A", "201")
    A.play(tones[F_A])
    c = A.call(server.uri("202"))
    A.wait_state("CONFIRMED", call=c, timeout=10)
    assert_anchored(A.wait_media(lambda e: e["active"], call=c), server)

    api = Native(server)
    call = api.one_call()
    m = A.mark()
    r = api.req("POST", "/calls/%s/hold" % call["id"])
    assert r.status_code == 409, r.text
    err = r.json()["error"]
    assert err["code"] == "sip_failed" and "488" in err["message"], err
    # The caller was held first and then restored: it saw sendonly, then sendrecv again.
    A.wait_media(lambda e: e["status"] == "remote_hold", call=c, since=m, timeout=5)
    A.wait_media(lambda e: e["active"] and e["status"] != "remote_hold", call=c, since=m,
                 timeout=5)
    after = api.req("GET", "/calls/%s" % call["id"], 200).json()
    assert not any(l["held"] for l in after["legs"]), after
    assert after["state"] == "answered", after

    # Audio still flows both ways: SIPp echoes A's tone back through the server.
    ra = os.path.join(artifacts, "after_refused_hold_A.wav")
    A.record(ra)
    time.sleep(1.8)
    A.stop_record()
    assert_hears(ra, F_A, F_B, t0=0.5, what="A hears its own tone echoed back by the callee")
    A.hangup(call=c)
    res = callee.wait(timeout=15)
    assert "reinvite-direction sendonly" in res.logs(), res.logs()
    assert res.rc == sipp.OK and res.failed == 0, res.summary()
    server.wait_metric("hookflash_active_calls", 0)
