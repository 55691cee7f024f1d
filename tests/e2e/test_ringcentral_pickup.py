"""RingCentral party action `pickup {deviceId}` (ringcentral-call-control 0.2.12 has it only
commented out, so the script sends it with @ringcentral/sdk's platform().post): a call parked
with the SDK's `park` is picked up on one phone of the token's extension; only that phone rings,
and once it answers it and the parked caller hear each other. Plain HTTP checks the refusals in
RingCentral's error shape (409 not parked, 400 unknown device, 404 not visible) with the call
unchanged after each."""
import os
import time

import pytest

from api_support import assert_music_on_hold, moh_enabled, registered
from checks import assert_hears, assert_no_tone, wait_until
from conftest import F_A, F_B, F_C
from rc_support import Rc, assert_rc_error, cc, rc_available

pytestmark = [
    pytest.mark.server,
    pytest.mark.skipif(
        not rc_available() and os.environ.get("CI") != "true",
        reason="tests/node not installed (scripts/test.sh runs npm ci)",
    ),
]

EXTRA = [("203", "secret203", "Carol")]


def _record(phone, path, seconds=2.0):
    phone.record(path)
    time.sleep(seconds)
    phone.stop_record()
    return path


def _port(phone):
    return ":" + phone.local.split(":")[-1]


def test_pickup_of_a_parked_call_on_a_device(server_factory, phones, tones, artifacts):
    server = server_factory(extra_users=EXTRA)
    C = registered(phones, server, "C", "203")
    C.play(tones[F_A])
    A = registered(phones, server, "A", "201")
    A.play(tones[F_B])
    B1 = registered(phones, server, "B1", "202")
    B2 = registered(phones, server, "B2", "202")
    B2.play(tones[F_C])
    A.auto_answer(200, delay_ms=200)
    c = C.call(server.uri("201"))
    ia = A.wait_incoming(timeout=5)
    A.wait_state("CONFIRMED", call=ia["call"], timeout=5)
    C.wait_state("CONFIRMED", call=c, timeout=5)
    a, b, carol = Rc(server, "201"), Rc(server, "202"), Rc(server, "203")
    wait_until(lambda: a.presence()["activeCalls"], what="the call in 201's presence")
    sid, apid = [(x["telephonySessionId"], x["partyId"]) for x in a.presence()["activeCalls"]][0]
    cpid = [x["partyId"] for x in carol.presence()["activeCalls"]][0]
    a_dev = [d["id"] for d in a.req("GET", "/account/~/extension/~/device", 200).json()["records"]]
    b_devs = b.req("GET", "/account/~/extension/~/device", 200).json()["records"]
    assert len(a_dev) == 1 and len(b_devs) == 2, (a_dev, b_devs)

    # Not parked: 409 for the extension in the call, 404 for one that cannot see it.
    pick = "/account/~/telephony/sessions/%s/parties/%s/pickup"
    assert_rc_error(a.req("POST", pick % (sid, cpid), json={"deviceId": a_dev[0]}), 409)
    assert_rc_error(b.req("POST", pick % (sid, cpid), json={"deviceId": b_devs[0]["id"]}), 404)
    assert_rc_error(a.req("POST", pick % (sid, cpid), json={}), 400)
    time.sleep(0.5)
    rc_ = _record(C, os.path.join(artifacts, "C_before.wav"))
    assert_hears(rc_, F_B, F_A, t0=0.5, what="203 still hears 201 after the refusals")

    # 201 parks its party with the SDK: 203 waits with music, 201's phone is released.
    out = cc(server, "201", "park", sid)
    assert out["result"]["id"] == apid, out
    A.wait_state("DISCONNECTED", call=ia["call"], timeout=5)
    parties = carol.session(sid)["parties"]
    assert [p["status"]["code"] for p in parties if p["id"] == cpid] == ["Parked"], parties

    # An unknown device (or another extension's): 400 CMN-101; the call stays parked.
    for dev in ("123", a_dev[0]):
        assert_rc_error(b.req("POST", pick % (sid, cpid), json={"deviceId": dev}), 400,
                        "CMN-101")
    # The parker's released party is not the parked one: 409.
    assert_rc_error(b.req("POST", pick % (sid, apid), json={"deviceId": b_devs[0]["id"]}), 409)
    # Unknown session / party: 404.
    assert_rc_error(b.req("POST", pick % ("nope", cpid), json={"deviceId": b_devs[0]["id"]}),
                    404)
    assert_rc_error(b.req("POST", pick % (sid, "nope"), json={"deviceId": b_devs[0]["id"]}),
                    404)
    time.sleep(0.3)
    rc_ = _record(C, os.path.join(artifacts, "C_parked.wav"), 1.5)
    assert_no_tone(rc_, F_B, t0=0.5, what="parked 203 must not hear 201")
    if moh_enabled():
        assert_music_on_hold(rc_, F_A, what="parked 203 hears music")
    assert [p["status"]["code"] for p in carol.session(sid)["parties"]
            if p["id"] == cpid] == ["Parked"]

    # 202 picks it up on its second phone (B2): only B2 rings; it answers; 203 and B2 talk.
    B2.auto_answer(200, delay_ms=300)
    m1 = B1.mark()
    out = cc(server, "202", "pickup", sid, {"partyId": cpid, "sipUriContains": _port(B2)})
    assert out["ok"] and out["result"]["id"] == cpid, out
    ib = B2.wait_incoming(timeout=5)
    B2.wait_state("CONFIRMED", call=ib["call"], timeout=5)
    time.sleep(0.7)
    rc_ = os.path.join(artifacts, "C_picked.wav")
    rb = os.path.join(artifacts, "B2_picked.wav")
    C.record(rc_)
    B2.record(rb)
    time.sleep(2.0)
    C.stop_record()
    B2.stop_record()
    assert_hears(rc_, F_C, F_A, t0=0.5, what="203 hears 202's B2 after the pickup")
    assert_hears(rb, F_A, F_C, t0=0.5, what="B2 hears 203 after the pickup")
    assert not B1.find("incoming", since=m1), "B1 (not the chosen device) must not ring"
    codes = {p["status"]["code"] for p in b.session(sid)["parties"]
             if p["status"]["code"] not in ("Disconnected", "Gone")}
    assert codes == {"Answered"}, b.session(sid)
    # Picked up: not parked any more (409).
    assert_rc_error(b.req("POST", pick % (sid, cpid), json={"deviceId": b_devs[0]["id"]}), 409)
    C.hangup(call=c)
    B2.wait_state("DISCONNECTED", call=ib["call"], timeout=5)
    server.wait_metric("hookflash_active_calls", 0)
