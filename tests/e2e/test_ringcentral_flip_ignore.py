"""RingCentral Call Control flip and ignore through ringcentral-call-control 0.2.12 (tests/node,
pinned), each effect proven at independent pjsua2 phones: flip moves the extension's side of an
answered call to its forwarding number (that phone rings, answers and hears the caller; the
device is released); ignore stops one ringing device (it gets CANCEL, never answers) while the
extension's other device rings on and takes the call. Plain HTTP checks the refusals (400 / 409
in RingCentral's error shape) and that the call is unchanged after each."""
import os
import time

import pytest

from api_support import LiveCall, Native, registered
from checks import assert_hears, wait_until
from conftest import F_A, F_B, F_C
from rc_support import Rc, assert_rc_error, cc, rc_available

pytestmark = [
    pytest.mark.server,
    pytest.mark.skipif(
        not rc_available() and os.environ.get("CI") != "true",
        reason="tests/node not installed (scripts/test.sh runs npm ci)",
    ),
]


def _hears(phone, artifacts, name, tone, own):
    path = os.path.join(artifacts, name)
    time.sleep(0.7)
    phone.record(path)
    time.sleep(2)
    phone.stop_record()
    assert_hears(path, tone, own, t0=0.5, what="%s hears %s Hz" % (name, tone))


def test_call_control_flip_moves_the_call_to_the_forwarding_number(server, phones, tones,
                                                                    artifacts):
    Native(server).req("PUT", "/users/202/forwardings", 200,
                       json={"forwardings": [{"flip_id": "desk", "number": "103"}]})
    call = LiveCall(server, phones, tones, artifacts)
    C = registered(phones, server, "C", "103")
    C.play(tones[F_C])
    C.auto_answer(200, delay_ms=300)
    b = Rc(server, "202")
    sid, pid = [(c["telephonySessionId"], c["partyId"]) for c in b.presence()["activeCalls"]][0]
    flip = "/account/~/telephony/sessions/%s/parties/%s/flip" % (sid, pid)
    # Unknown flip id, missing body, another extension's party: refused, nothing dialled.
    assert_rc_error(b.req("POST", flip, json={"callFlipId": "nope"}), 400, "CMN-101")
    assert_rc_error(b.req("POST", flip, json={}), 400)
    assert_rc_error(Rc(server, "201").req("POST", flip, json={"callFlipId": "desk"}), 403)
    assert "DISCONNECTED" not in call.B.states(call=call.inc["call"])
    call.assert_two_way("after refused flips")

    mc = C.mark()
    out = cc(server, "202", "flip", sid, {"callFlipId": "desk"})
    assert out["result"]["id"] == pid, out
    inc = C.wait_incoming(since=mc, timeout=5)
    C.wait_state("CONFIRMED", call=inc["call"], timeout=5)
    call.B.wait_state("DISCONNECTED", call=call.inc["call"], timeout=5)
    _hears(call.A, artifacts, "A_after_flip.wav", F_C, F_A)
    _hears(C, artifacts, "C_after_flip.wav", F_A, F_C)
    call.A.hangup(call=call.c)
    C.wait_state("DISCONNECTED", call=inc["call"], timeout=5)


def test_call_control_ignore_stops_one_device_the_other_rings_on(server, phones, tones,
                                                                 artifacts):
    A = registered(phones, server, "A", "201")
    A.play(tones[F_A])
    B1 = registered(phones, server, "B1", "202")
    B2 = registered(phones, server, "B2", "202")
    B2.play(tones[F_B])
    c = A.call(server.uri("202"))
    i1, i2 = B1.wait_incoming(timeout=5), B2.wait_incoming(timeout=5)
    b = Rc(server, "202")
    wait_until(lambda: b.presence()["activeCalls"], what="the ringing call in presence")
    sid, pid = [(x["telephonySessionId"], x["partyId"]) for x in b.presence()["activeCalls"]][0]
    ignore = "/account/~/telephony/sessions/%s/parties/%s/ignore" % (sid, pid)
    assert_rc_error(b.req("POST", ignore, json={"deviceId": "123"}), 400, "CMN-101")
    assert_rc_error(b.req("POST", ignore, json={}), 400)

    b1_port = B1.local.split(":")[-1]
    out = cc(server, "202", "ignore", sid, {"sipUriContains": ":" + b1_port})
    ignored = out["result"]
    B1.wait_state("DISCONNECTED", call=i1["call"], timeout=5)
    assert "CONFIRMED" not in B1.states(call=i1["call"])
    # The same device again: it no longer rings (400); the call rings on at B2.
    assert_rc_error(b.req("POST", ignore, json={"deviceId": ignored}), 400)
    time.sleep(0.5)
    assert "DISCONNECTED" not in B2.states(call=i2["call"]), "the other device must ring on"
    assert "DISCONNECTED" not in A.states(call=c), "the caller must still be ringing"
    parties = b.session(sid)["parties"]
    assert [p["status"]["code"] for p in parties] == ["Proceeding", "Proceeding"], parties

    B2.answer(call=i2["call"])
    A.wait_state("CONFIRMED", call=c, timeout=5)
    _hears(A, artifacts, "A.wav", F_B, F_A)
    # Answered now: ignore is a ringing-call action (409).
    assert_rc_error(b.req("POST", ignore, json={"deviceId": ignored}), 409, "TAS-409")
    A.hangup(call=c)
    B2.wait_state("DISCONNECTED", call=i2["call"], timeout=5)
