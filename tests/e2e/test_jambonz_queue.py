"""jambonz queues (`enqueue` / `dequeue`) with independent pjsua2 phones, each playing its own
tone (201: 1000 Hz, 202: 1500 Hz); the applications are plain webhook servers.

- 201 calls application A (`enqueue` "support" with a waitHook that plays a 2000 Hz WAV):
  201 hears the wait tone; the waitHook got queue_sid/queue_position/queue_size; the native
  API lists the queue with 201's leg. 202 calls application B (`dequeue` "support"): 201 and
  202 hear each other's tones. 202 hangs up: A's actionHook gets queue_result=bridged (and its
  answer, a 2000 Hz play, is heard by 201); B's actionHook gets dequeue_result=complete.
- 201 hangs up while waiting: the actionHook gets queue_result=hangup, the queue is empty.
- B dequeues from an empty queue with a timeout: its actionHook gets dequeue_result=timeout
  and the answer (a 2000 Hz play) is heard by 202.
"""
import json
import os
import time

import pytest

import audio
from api_support import Native, registered
from checks import assert_hears, wait_until
from conftest import F_A, F_B, F_C
from test_app_runtime import APP_NUMBER, hooks  # noqa: F401 (fixture)
from test_app_runtime import verify_signature

pytestmark = pytest.mark.server

APP_B_NUMBER = "+4930999001"


def queues(api):
    return api.req("GET", "/queues", 200).json()["queues"]


def record(phone, path, secs):
    phone.record(path)
    time.sleep(secs)
    phone.stop_record()
    return audio.read_wav(path)


def servers(server_factory, hook_a, hook_b):
    return server_factory(applications=[
        {"name": "queue-a", "call_hook": hook_a.url("/call"), "numbers": [APP_NUMBER]},
        {"name": "queue-b", "call_hook": hook_b.url("/call"), "numbers": [APP_B_NUMBER]},
    ])


def test_enqueue_waits_with_the_wait_hook_and_dequeue_connects_both_phones(
        server_factory, phones, tones, hooks, artifacts):  # noqa: F811
    tone_c = os.path.join(artifacts, "tone_c.wav")
    audio.make_tone(tone_c, F_C, seconds=2)
    hook_a = hooks({}, files={"/tone_c.wav": tone_c})
    play_c = {"verb": "play", "url": hook_a.url("/tone_c.wav")}
    hook_a.routes.update({
        "/call": (200, [{"verb": "enqueue", "name": "support", "waitHook": "/wait",
                         "actionHook": "/queue-done"}]),
        "/wait": (200, [play_c]),
        "/queue-done": (200, [play_c, {"verb": "hangup"}]),
    })
    hook_b = hooks({
        "/call": (200, [{"verb": "dequeue", "name": "support", "actionHook": "/dq-done"}]),
        "/dq-done": (200, []),
    })
    server = servers(server_factory, hook_a, hook_b)
    api = Native(server)
    A = registered(phones, server, "A", "201")
    B = registered(phones, server, "B", "202")
    A.play(tones[F_A])
    B.play(tones[F_B])
    ca = A.call(server.uri(APP_NUMBER))
    A.wait_state("CONFIRMED", call=ca, timeout=10)
    wait_until(lambda: hook_a.got("/wait"), timeout=10, what="the waitHook request")
    time.sleep(0.5)
    w = record(A, os.path.join(artifacts, "A_waiting.wav"), 2.0)
    assert audio.tone_fraction(w, F_C, 0.2, w.duration - 0.1) >= 0.5, \
        audio.window_report(w, [F_C, F_B], 0.2)[:30]
    wait_req = hook_a.got("/wait")[0]
    body = json.loads(wait_req["raw"])
    account = api.req("GET", "/account", 200).json()
    verify_signature(wait_req, account["webhook_secret"])
    assert body["queue_position"] == 1 and body["queue_size"] == 1, body
    assert body["queue_sid"].endswith(":support"), body
    assert body["call_sid"], body
    # The native API lists the queue with 201's leg.
    q = api.req("GET", "/queues", 200).json()
    assert [x["name"] for x in q["queues"]] == ["support"], q
    assert q["queues"][0]["size"] == 1
    assert q["queues"][0]["calls"][0]["leg_id"] == body["call_sid"], q
    assert q["queues"][0]["calls"][0]["position"] == 1, q
    # 202 dequeues: both hear each other.
    cb = B.call(server.uri(APP_B_NUMBER))
    B.wait_state("CONFIRMED", call=cb, timeout=10)
    wait_until(lambda: queues(api) == [], timeout=10,
               what="the caller taken out of the queue")
    time.sleep(1.0)
    ra = os.path.join(artifacts, "A_bridged.wav")
    rb = os.path.join(artifacts, "B_bridged.wav")
    A.record(ra)
    B.record(rb)
    time.sleep(2.5)
    A.stop_record()
    B.stop_record()
    assert_hears(ra, F_B, F_A, t0=0.3, what="201 hears 202 through the dequeue")
    assert_hears(rb, F_A, F_B, t0=0.3, what="202 hears 201 through the dequeue")
    # 202 hangs up: A's actionHook says bridged, and its answer is heard by 201.
    B.hangup(call=cb)
    wait_until(lambda: hook_a.got("/queue-done"), timeout=10, what="enqueue actionHook")
    done = json.loads(hook_a.got("/queue-done")[0]["raw"])
    assert done["queue_result"] == "bridged", done
    assert done["queue_time"] >= 2, done
    assert done["queue_sid"] == body["queue_sid"], done
    w = record(A, os.path.join(artifacts, "A_after.wav"), 1.2)
    assert audio.tone_fraction(w, F_C, 0.2, w.duration - 0.1) >= 0.5, \
        audio.window_report(w, [F_C, F_B], 0.2)[:30]
    wait_until(lambda: hook_b.got("/dq-done"), timeout=10, what="dequeue actionHook")
    dq = json.loads(hook_b.got("/dq-done")[0]["raw"])
    assert dq["dequeue_result"] == "complete", dq
    assert dq["dequeued_call_sid"] == body["call_sid"], dq
    # In order: the waitHook(s) came before the actionHook.
    assert max(r["at"] for r in hook_a.got("/wait")) < hook_a.got("/queue-done")[0]["at"]
    A.wait_state("DISCONNECTED", call=ca, timeout=10)
    server.wait_metric("hookflash_active_calls", 0)


def test_hanging_up_while_queued_reports_hangup(server_factory, phones, tones, hooks,
                                                artifacts):  # noqa: F811
    hook_a = hooks({
        "/call": (200, [{"verb": "enqueue", "name": "support", "actionHook": "/queue-done"}]),
        "/queue-done": (200, []),
    })
    hook_b = hooks({"/call": (200, [{"verb": "hangup"}])})
    server = servers(server_factory, hook_a, hook_b)
    api = Native(server)
    A = registered(phones, server, "A", "201")
    A.play(tones[F_A])
    ca = A.call(server.uri(APP_NUMBER))
    A.wait_state("CONFIRMED", call=ca, timeout=10)
    wait_until(lambda: queues(api), timeout=10,
               what="the caller in the queue")
    # No waitHook: the server's music on hold (energy, not our own tone).
    w = record(A, os.path.join(artifacts, "A_moh.wav"), 1.5)
    assert audio.rms(w.samples[int(0.3 * w.rate):]) > 100, "silence while queued"
    time.sleep(1.0)
    A.hangup(call=ca)
    wait_until(lambda: hook_a.got("/queue-done"), timeout=10, what="enqueue actionHook")
    done = json.loads(hook_a.got("/queue-done")[0]["raw"])
    assert done["queue_result"] == "hangup", done
    assert done["queue_time"] >= 2, done
    assert done["queue_size"] == 0, done
    assert queues(api) == []
    server.wait_metric("hookflash_active_calls", 0)


def test_dequeue_on_an_empty_queue_times_out_and_the_app_goes_on(
        server_factory, phones, tones, hooks, artifacts):  # noqa: F811
    tone_c = os.path.join(artifacts, "tone_c.wav")
    audio.make_tone(tone_c, F_C, seconds=2)
    hook_a = hooks({"/call": (200, [{"verb": "hangup"}])})
    hook_b = hooks({}, files={"/tone_c.wav": tone_c})
    hook_b.routes.update({
        "/call": (200, [{"verb": "dequeue", "name": "nobody", "timeout": 2,
                         "actionHook": "/dq-done"}]),
        "/dq-done": (200, [{"verb": "play", "url": hook_b.url("/tone_c.wav")}]),
    })
    server = servers(server_factory, hook_a, hook_b)
    B = registered(phones, server, "B", "202")
    B.play(tones[F_B])
    cb = B.call(server.uri(APP_B_NUMBER))
    B.wait_state("CONFIRMED", call=cb, timeout=10)
    wait_until(lambda: hook_b.got("/dq-done"), timeout=10, what="dequeue actionHook")
    dq = json.loads(hook_b.got("/dq-done")[0]["raw"])
    assert dq["dequeue_result"] == "timeout", dq
    assert dq["queue_sid"].endswith(":nobody"), dq
    w = record(B, os.path.join(artifacts, "B_after_timeout.wav"), 1.2)
    assert audio.tone_fraction(w, F_C, 0.2, w.duration - 0.1) >= 0.5, \
        audio.window_report(w, [F_C, F_A], 0.2)[:30]
    B.wait_state("DISCONNECTED", call=cb, timeout=10)
