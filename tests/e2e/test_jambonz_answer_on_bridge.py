"""jambonz `dial` with `answerOnBridge` and ringing child calls, proven at pjsua2 phones and
with the official @jambonz/node-client SDK.

- answerOnBridge: the application's caller (201) is not answered while 202 rings — the
  phone's call stays EARLY and no 200 reaches it — while the SDK lists 202's leg as a child
  call (`ringing`, `parent_call_sid` = the caller's sid); when 202 answers, 201 gets its 200
  and both hear each other's tones; the child keeps its sid from ringing to in-progress, and
  the call_status_hook gets the child's trying → ringing → in-progress → completed and the
  parent's in-progress only after the child's ringing.
- answerOnBridge with a target that refuses (486): the caller was never answered, so the
  actionHook's `sip:decline` reaches the phone as a final 486 to its INVITE (not a BYE).
- A REST DELETE of the ringing child stops 202 ringing (its phone sees the call end
  unanswered) and the caller stays with the application, whose actionHook gets `no-answer`
  and whose next verb (a tone file the caller hears) runs.
"""
import json
import os
import time

import pytest
import requests

from api_support import Native, registered
from checks import assert_hears, wait_until
from conftest import F_A, F_B
from test_app_runtime import APP_NUMBER, hooks, start  # noqa: F401 (the fixture)
from test_jambonz_sdk import jz

pytestmark = pytest.mark.server

API_KEY = "hf_test_key_acme"


def statuses(hook):
    return [json.loads(r["raw"]) for r in hook.got("/status")]


def test_answer_on_bridge_caller_answered_when_the_target_answers(
        server_factory, phones, tones, hooks, artifacts):  # noqa: F811
    done = []

    def on_done(body):
        done.append(body)
        return 200, [{"verb": "hangup"}]

    hook = hooks({
        "/call": (200, [{
            "verb": "dial", "actionHook": "/dial-done", "timeout": 20, "answerOnBridge": True,
            "target": [{"type": "user", "name": "202@acme.local"}],
        }]),
        "/dial-done": on_done,
        "/status": (200, ""),
    })
    server = start(server_factory, {"name": "bridger", "call_hook": hook.url("/call"),
                                    "call_status_hook": hook.url("/status")})
    acc = Native(server).req("GET", "/account", 200).json()["id"]
    A = registered(phones, server, "A", "201")
    B = registered(phones, server, "B", "202")
    A.play(tones[F_A])
    B.play(tones[F_B])
    c = A.call(server.uri(APP_NUMBER))
    inc = B.wait_incoming(timeout=10)
    # 202 rings: the caller is still unanswered, and the SDK lists the ringing child.
    parent = json.loads(hook.got("/call")[0]["raw"])["call_sid"]

    def ringing_child():
        listed = jz(server, acc, "list")["result"]
        kids = [x for x in listed if x.get("parent_call_sid") == parent]
        return kids if kids and kids[0]["call_status"] == "ringing" else None

    kids = wait_until(ringing_child, timeout=10, what="a ringing child call")
    assert len(kids) == 1 and kids[0]["direction"] == "outbound", kids
    assert kids[0]["to"] == "202", kids
    child_sid = kids[0]["call_sid"]
    assert child_sid != parent
    time.sleep(1.0)
    assert "CONFIRMED" not in A.states(call=c) and "CONNECTING" not in A.states(call=c), \
        A.states(call=c)
    parent_view = jz(server, acc, "retrieve", parent)["result"]
    assert parent_view["call_status"] in ("ringing", "trying"), parent_view
    assert not any(s["call_sid"] == parent and s["call_status"] == "in-progress"
                   for s in statuses(hook)), statuses(hook)

    B.answer(200, call=inc["call"])
    B.wait_state("CONFIRMED", call=inc["call"], timeout=10)
    A.wait_state("CONFIRMED", call=c, timeout=10)
    time.sleep(0.5)
    ra = os.path.join(artifacts, "A_bridged.wav")
    rb = os.path.join(artifacts, "B_bridged.wav")
    A.record(ra)
    B.record(rb)
    time.sleep(2.0)
    A.stop_record()
    B.stop_record()
    assert_hears(ra, F_B, F_A, t0=0.3, what="A hears B")
    assert_hears(rb, F_A, F_B, t0=0.3, what="B hears A")

    # The child kept its sid from ringing to in-progress.
    listed = jz(server, acc, "list")["result"]
    kids = [x for x in listed if x.get("parent_call_sid") == parent]
    assert [k["call_sid"] for k in kids] == [child_sid], listed
    assert kids[0]["call_status"] == "in-progress", kids

    B.hangup(call=inc["call"])
    wait_until(lambda: done, timeout=10, what="the dial's actionHook")
    assert done[0]["dial_call_status"] == "completed", done
    assert done[0]["dial_call_sid"] == child_sid, done
    A.wait_state("DISCONNECTED", call=c, timeout=10)
    server.wait_metric("hookflash_active_calls", 0)

    def child_statuses():
        seen = [s["call_status"] for s in statuses(hook) if s["call_sid"] == child_sid]
        return seen if "completed" in seen else None

    seen = wait_until(child_statuses, timeout=10, what="the child's completed status")
    assert seen == ["trying", "ringing", "in-progress", "completed"], seen
    order = [(s["call_sid"], s["call_status"]) for s in statuses(hook)]
    assert order.index((child_sid, "ringing")) < order.index((parent, "in-progress")), order
    for s in statuses(hook):
        if s["call_sid"] == child_sid:
            assert s["parent_call_sid"] == parent and s["direction"] == "outbound", s


def test_answer_on_bridge_refused_target_leaves_the_caller_unanswered(
        server_factory, phones, hooks):  # noqa: F811
    done = []

    def on_done(body):
        done.append(body)
        return 200, [{"verb": "sip:decline", "status": 486, "reason": "Busy Here"}]

    hook = hooks({
        "/call": (200, [{
            "verb": "dial", "actionHook": "/dial-done", "timeout": 20, "answerOnBridge": True,
            "target": [{"type": "user", "name": "202@acme.local"}],
        }]),
        "/dial-done": on_done,
        "/status": (200, ""),
    })
    server = start(server_factory, {"name": "refused", "call_hook": hook.url("/call"),
                                    "call_status_hook": hook.url("/status")})
    A = registered(phones, server, "A", "201")
    B = registered(phones, server, "B", "202")
    B.auto_answer(486)
    c = A.call(server.uri(APP_NUMBER))
    status = A.end_status(call=c, timeout=15)
    assert status == 486, status
    assert "CONFIRMED" not in A.states(call=c), A.states(call=c)
    assert done and done[0]["dial_call_status"] == "busy", done
    assert done[0]["dial_sip_status"] == 486, done
    del B
    server.wait_metric("hookflash_active_calls", 0)


def test_delete_of_a_ringing_child_stops_it_and_the_app_goes_on(
        server_factory, phones, tones, hooks, artifacts):  # noqa: F811
    done = []

    def on_done(body):
        done.append(body)
        return 200, [{"verb": "play", "url": hook.url("/tone.wav")},
                     {"verb": "pause", "length": 5}, {"verb": "hangup"}]

    hook = hooks({
        "/call": (200, [{
            "verb": "dial", "actionHook": "/dial-done", "timeout": 30,
            "target": [{"type": "user", "name": "202@acme.local"}],
        }]),
        "/dial-done": on_done,
        "/status": (200, ""),
    }, files={"/tone.wav": tones[F_B]})
    server = start(server_factory, {"name": "cutter", "call_hook": hook.url("/call"),
                                    "call_status_hook": hook.url("/status")})
    acc = Native(server).req("GET", "/account", 200).json()["id"]
    A = registered(phones, server, "A", "201")
    B = registered(phones, server, "B", "202")
    c = A.call(server.uri(APP_NUMBER))
    inc = B.wait_incoming(timeout=10)
    parent = json.loads(hook.got("/call")[0]["raw"])["call_sid"]

    def child():
        listed = jz(server, acc, "list")["result"]
        kids = [x for x in listed if x.get("parent_call_sid") == parent]
        return kids[0] if kids else None

    kid = wait_until(child, timeout=10, what="the child call")
    r = requests.delete("%s/v1/Accounts/%s/Calls/%s" % (server.http, acc, kid["call_sid"]),
                        headers={"Authorization": "Bearer " + API_KEY}, timeout=10)
    assert r.status_code == 204, r.text
    # 202's phone stops ringing without having answered.
    B.wait_state("DISCONNECTED", call=inc["call"], timeout=10)
    assert "CONFIRMED" not in B.states(call=inc["call"]), B.states(call=inc["call"])
    wait_until(lambda: done, timeout=10, what="the dial's actionHook")
    assert done[0]["dial_call_status"] == "no-answer", done
    # The caller is still with the application: it hears the next verb's tone.
    path = os.path.join(artifacts, "A_after_cut.wav")
    A.record(path)
    time.sleep(2.5)
    A.stop_record()
    assert_hears(path, F_B, F_A, t0=0.2, what="the caller hears the application's next verb")
    assert "DISCONNECTED" not in A.states(call=c)
    A.hangup(call=c)
    server.wait_metric("hookflash_active_calls", 0)
