"""Who may touch a call (security issue, item 4): a user's credential (sipgate token) controls
only calls its user is a party to; a colleague's call answers 404 and is left exactly as it
was (the phones stay connected); the parties' own tokens and the account's API key work."""
import time

import pytest
import requests

from api_support import Native, sipgate_login

pytestmark = pytest.mark.server


def test_a_colleagues_call_cannot_be_touched(server, phones):
    A = phones("A")
    assert A.register(server, "201")["code"] == 200
    B = phones("B")
    assert B.register(server, "202")["code"] == 200
    B.auto_answer(200, delay_ms=200)
    c = A.call(server.uri("202"))
    inc = B.wait_incoming()
    A.wait_state("CONFIRMED", call=c, timeout=10)
    call_id = Native(server).one_call()["id"]

    carol = sipgate_login(server, "103@acme.local", "secret103")
    h = {"Authorization": "Bearer " + carol, "Content-Type": "application/json"}
    base = server.http + "/v2/calls/" + call_id
    attempts = [
        ("PUT", base + "/hold", {"value": True}),
        ("PUT", base + "/recording", {"value": True, "announcement": False}),
        ("POST", base + "/transfer", {"attended": False, "phoneNumber": "104"}),
        ("POST", base + "/dtmf", {"sequence": "1"}),
        ("POST", base + "/announcements", {"url": "http://127.0.0.1:9/x.wav"}),
        ("DELETE", base, None),
    ]
    for method, url, body in attempts:
        r = requests.request(method, url, json=body, headers=h, timeout=5)
        assert r.status_code == 404, (method, url, r.status_code, r.text)
        assert r.json()["status"] == 404, r.text
    # Nothing changed: both phones are still connected, nobody is held or recorded.
    time.sleep(0.5)
    call = Native(server).one_call()
    assert not any(l["held"] or l["recording"] for l in call["legs"]), call
    assert not A.find("call_state", lambda e: e["state"] == "DISCONNECTED" and e["call"] == c)
    # The caller's own token may hold it; the account's API key may hang it up.
    alice = sipgate_login(server, "201@acme.local", "secret201")
    r = requests.put(base + "/hold", json={"value": True},
                     headers={"Authorization": "Bearer " + alice}, timeout=10)
    assert r.status_code == 200, r.text
    Native(server).req("DELETE", "/calls/" + call_id, 204)
    A.wait_state("DISCONNECTED", call=c, timeout=5)
    B.wait_state("DISCONNECTED", call=inc["call"], timeout=5)
