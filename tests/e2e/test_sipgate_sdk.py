"""The official sipgateio SDK (tests/node, pinned) drives real calls between two pjsua2 phones
through hookflash's sipgate dialect; the phones' recordings prove each effect. Also the seed's
curl lines (docs/sipgate rtcm), verbatim but for the host, and the SDK's webhook server."""
import functools
import http.server
import json
import os
import re
import subprocess
import threading
import time

import pytest
import requests

from api_support import LiveCall, node_available, one_call, sdk, sipgate_login, NODE_DIR
from hfserver import REPO, free_port

pytestmark = [
    pytest.mark.server,
    pytest.mark.skipif(
        not node_available() and os.environ.get("CI") != "true",
        reason="tests/node not installed (scripts/test.sh runs npm ci)",
    ),
]


def test_sdk_lists_holds_mutes_and_hangs_up_a_real_call(server, phones, tones, artifacts):
    call = LiveCall(server, phones, tones, artifacts)
    creds = {"token": sipgate_login(server, "201@acme.local", "secret201")}

    listed = one_call(server, creds)
    assert set(listed) == {"callId", "muted", "recording", "hold", "participants"}, listed
    assert (listed["muted"], listed["hold"], listed["recording"]) == (False, False, False)
    owners = {p["phoneNumber"]: p["owner"] for p in listed["participants"]}
    # 201 (the token's user) owns the DID +4930123456; 202 has no number: its extension.
    assert owners == {"+4930123456": True, "202": False}, listed
    call_id = listed["callId"]
    call.assert_two_way("before")

    # Hold the call: both phones get a=sendonly, neither hears the other.
    m = call.marks()
    sdk(server, creds, "hold", call_id, True)
    call.wait_media(lambda e: e["status"] == "remote_hold", m)
    assert one_call(server, creds)["hold"] is True
    call.assert_held("held")

    m = call.marks()
    sdk(server, creds, "hold", call_id, False)
    call.wait_media(lambda e: e["active"], m)
    assert one_call(server, creds)["hold"] is False
    call.assert_two_way("retrieved")

    # Mute: the token user's own participant (A, 201): B no longer hears A, A still hears B.
    sdk(server, creds, "mute", call_id, True)
    listed = one_call(server, creds)
    assert listed["muted"] is True
    assert {p["phoneNumber"]: p["muted"] for p in listed["participants"]} == {
        "+4930123456": True, "202": False}, listed
    call.assert_a_muted("muted")
    sdk(server, creds, "mute", call_id, False)
    call.assert_two_way("unmuted")

    sdk(server, creds, "hangup", call_id)
    call.assert_both_ended()
    assert sdk(server, creds, "list")["result"] == []
    # The SDK's own error for a call that is gone.
    gone = sdk(server, creds, "hold", call_id, True, expect_ok=False)
    assert gone["error"] == "The requested Call could not be found", gone
    server.wait_metric("hookflash_active_calls", 0)


def test_sdk_hangup_of_a_ringing_call_stops_the_ringing_phone(server, phones, tones, artifacts):
    call = LiveCall(server, phones, tones, artifacts, answer=False)
    creds = {"token": sipgate_login(server)}
    listed = one_call(server, creds)
    held = sdk(server, creds, "hold", listed["callId"], True, expect_ok=False)
    assert not held["ok"], held  # 409: not answered yet
    sdk(server, creds, "hangup", listed["callId"])
    end = call.B.wait_state("DISCONNECTED", call=call.inc["call"], timeout=5)
    assert "CONFIRMED" not in call.B.states(call=call.inc["call"]), end
    call.A.wait_state("DISCONNECTED", call=call.c, timeout=5)
    server.wait_metric("hookflash_active_calls", 0)


def test_sdk_basic_auth_with_personal_access_token_and_password(server, phones, tones, artifacts):
    out = server.cli("pat", "create", "--user", "201", "--account", "acme")
    assert out.returncode == 0, out.stderr
    token_id = re.search(r"^token id: (\S+)$", out.stdout, re.M).group(1)
    token = re.search(r"^token: (\S+)$", out.stdout, re.M).group(1)
    assert re.fullmatch(r"token-[A-Za-z0-9]{6}", token_id), out.stdout
    call = LiveCall(server, phones, tones, artifacts)
    for creds in ({"tokenId": token_id, "token": token},
                  {"username": "201@acme.local", "password": "secret201"}):
        listed = one_call(server, creds)
        assert any(p["owner"] for p in listed["participants"]), listed
    bad = sdk(server, {"tokenId": token_id, "token": "00000000-0000-4000-8000-000000000000"},
              "list", expect_ok=False)
    assert bad["error"] == "Unauthorized", bad
    # Another account's user sees nothing, and gets the SDK's "not found" for this call.
    zed = {"username": "301@beta.local", "password": "secret301"}
    assert sdk(server, zed, "list")["result"] == []
    gone = sdk(server, zed, "hangup", listed["callId"], expect_ok=False)
    assert gone["error"] == "The requested Call could not be found", gone
    sdk(server, {"tokenId": token_id, "token": token}, "hangup", listed["callId"])
    call.assert_both_ended()


def seed_curl_lines():
    """The curl commands of shared/seeds/sipgate-rtcm.md, verbatim (placeholders filled)."""
    seed = os.path.join(os.path.dirname(REPO), "shared", "seeds", "sipgate-rtcm.md")
    if not os.path.exists(seed):
        pytest.skip("shared/seeds/sipgate-rtcm.md is not beside the repository")
    with open(seed) as f:
        text = f.read()
    blocks = re.findall(r"```(?:shell|bash)\n(.*?)```", text, re.S)
    out = []
    for b in blocks:
        # One block may hold several commands (Hold / Retrieve ...) separated by comments.
        cmd = []
        for line in b.splitlines():
            s = line.strip()
            if not s:
                continue
            if s.startswith("curl"):
                if cmd:
                    out.append(" ".join(cmd))
                cmd = [s.rstrip("\\").strip()]
            elif cmd and (s.startswith("--") or s.startswith("https://")):
                cmd.append(s.rstrip("\\").strip())
        if cmd:
            out.append(" ".join(cmd))
    return out


def run_curl(cmdline, server, subst):
    cmdline = cmdline.replace("https://api.sipgate.com", server.http)
    for k, v in subst.items():
        cmdline = cmdline.replace(k, v)
    cmdline = cmdline.replace("--verbose", "--silent")
    p = subprocess.run(cmdline + " --write-out '\\n%{http_code}'", shell=True,
                       capture_output=True, text=True, timeout=15)
    body, _, code = p.stdout.rpartition("\n")
    return int(code or 0), body


def test_seed_curl_lines_work_with_only_the_host_changed(server, phones, tones, artifacts):
    lines = seed_curl_lines()
    token_cmd = [l for l in lines if "openid-connect/token" in l]
    assert len(token_cmd) == 1, lines
    code, body = run_curl(token_cmd[0], server, {
        "<your_sipgate_email>": "201@acme.local", "<your_sipgate_username>": "secret201"})
    assert code == 200, body
    token = json.loads(body)["token"]

    call = LiveCall(server, phones, tones, artifacts)
    listing = [l for l in lines if l.endswith("/v2/calls") and "GET" in l]
    assert len(listing) == 1, lines
    code, body = run_curl(listing[0], server, {"<access_token>": token})
    assert code == 200, body
    call_id = json.loads(body)["data"][0]["callId"]
    subst = {"<access_token>": token, "<callId>": call_id}

    def by(path_end, data=None):
        found = [l for l in lines if l.split("--url ")[-1].split()[0].endswith(path_end)
                 and (data is None or data in l)]
        assert found, (path_end, data, lines)
        return found[0]

    m = call.marks()
    code, body = run_curl(by("/hold", '"value": true'), server, subst)
    assert code == 200, body
    call.wait_media(lambda e: e["status"] == "remote_hold", m)
    m = call.marks()
    code, body = run_curl(by("/hold", '"value": false'), server, subst)
    assert code == 200, body
    call.wait_media(lambda e: e["active"], m)
    for value in ("true", "false"):
        code, body = run_curl(by("/muted", '"value": %s' % value), server, subst)
        assert code == 200, body
    # The announcement's WAV host is changed too: tests never reach beyond loopback, so the
    # seed's example file is served by a local web server (a 44.1 kHz stereo tone).
    wav_dir = os.path.join(artifacts, "www")
    os.makedirs(os.path.join(wav_dir, "examples", "wav"), exist_ok=True)
    subprocess.run(["sox", "-n", "-r", "44100", "-c", "2", "-b", "16",
                    os.path.join(wav_dir, "examples", "wav", "example.wav"),
                    "synth", "1", "sine", "700", "vol", "0.5"], check=True)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=wav_dir)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        local = "http://127.0.0.1:%d/examples/wav/example.wav" % httpd.server_address[1]
        code, body = run_curl(by("/announcements"), server, dict(
            subst, **{"https://static.sipgate.com/examples/wav/example.wav": local}))
        assert code == 200, body
    finally:
        httpd.shutdown()
    time.sleep(1.2)  # the one-second announcement is over
    # Recording (start with the notice, stop) and DTMF work with the seed's lines verbatim
    # (their effects: test_recording.py, test_dtmf.py).
    code, body = run_curl(by("/recording", '"value": true'), server, subst)
    assert code == 200, body
    time.sleep(2.0)  # the recording notice is over
    code, body = run_curl(by("/recording", '"value": false'), server, subst)
    assert code == 200, body
    code, body = run_curl(by("/dtmf"), server, subst)
    assert code == 200, body
    # Both transfer lines (attended, blind) to the seed's +4915799912345, which the account's
    # trunk peer answers busy: each is accepted (200), the number rings at the trunk, and the
    # parties are back together afterwards.
    transfers = [l for l in lines if l.split("--url ")[-1].split()[0].endswith("/transfer")]
    assert len(transfers) == 2 and '"attended": true' in transfers[0], transfers
    carrier = phones("carrier")
    carrier.bind(server.trunk_port, user="carrier")
    carrier.auto_answer(486)
    for line in transfers:
        mc = carrier.mark()
        code, body = run_curl(line, server, subst)
        assert code == 200, body
        inc = carrier.wait_incoming(since=mc, timeout=5)
        assert "4915799912345" in inc["request_uri"], inc
        carrier.wait_state("DISCONNECTED", call=inc["call"], timeout=5)
        time.sleep(0.7)
    call.assert_two_way("after curl")
    hangup = [l for l in lines if "DELETE" in l]
    code, body = run_curl(hangup[0], server, subst)
    assert code == 204, body
    call.assert_both_ended()


def test_sdk_webhook_module_receives_newcall_answer_hangup(server, phones, tones, artifacts):
    port = free_port(udp=False)
    log = open(os.path.join(artifacts, "webhook.log"), "w")
    proc = subprocess.Popen(["node", os.path.join(NODE_DIR, "sipgate_webhook.js"), str(port)],
                            cwd=NODE_DIR, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        first = json.loads(proc.stdout.readline())
        assert first["event"] == "listening", first
        out = server.cli("user", "webhook", "202", "http://127.0.0.1:%d" % port, "--account", "acme")
        assert out.returncode == 0, out.stderr
        call = LiveCall(server, phones, tones, artifacts)
        time.sleep(0.5)
        call.A.hangup(call=call.c)
        call.assert_both_ended()
        events = []
        deadline = time.monotonic() + 10
        while len(events) < 3 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            events.append(json.loads(line))
        kinds = [e["event"] for e in events]
        assert kinds == ["newCall", "answer", "hangup"], events
        new, ans, hup = events
        # The SDK puts '+' in front of the numbers we send without it.
        # A (201) shows its number +4930123456; B (202) has none: its extension.
        assert new["direction"] == "in" and new["from"] == "+4930123456" and new["to"] == "+202", new
        assert new["users"] == ["Bob"] and new["userIds"] == ["202"], new
        assert new["fullUserIds"] == ["202@acme.local"], new
        assert new["callId"] == ans["callId"] == hup["callId"], events
        assert ans["answeringNumber"] == "+202" and ans["user"] == "Bob", ans
        assert hup["cause"] == "normalClearing", hup
        requests.get(server.http + "/healthz", timeout=2)
    finally:
        proc.kill()
        proc.wait(5)
        log.close()
