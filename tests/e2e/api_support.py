"""Helpers for the live-call-control tests (test_api_*.py, test_sipgate_*.py): a real call
between two pjsua2 phones, per-phase recordings, the sipgateio SDK (tests/node) as a
subprocess, the native API, and the music-on-hold check."""
import json
import os
import subprocess
import time

import requests

import audio
from checks import assert_anchored, assert_hears, assert_no_tone
from conftest import F_A, F_B
from hfserver import REPO

NODE_DIR = os.path.join(REPO, "tests", "node")
TOKEN_PATH = "/login/sipgate-apps/protocol/openid-connect/token"

# The built-in music on hold (crates/media/src/audio.rs, MOH_NOTES_HZ): pure sine notes.
MOH_NOTES_HZ = (349.23, 392.00, 440.00, 493.88, 523.25, 587.33, 659.26)


def moh_enabled():
    """The music-on-hold assertions run when the engine plays it (HOOKFLASH_TEST_MOH=1/0
    forces them on/off; by default: when the engine's source wires music on hold in)."""
    forced = os.environ.get("HOOKFLASH_TEST_MOH")
    if forced in ("0", "1"):
        return forced == "1"
    src = os.path.join(REPO, "crates", "engine", "src")
    for root, _, files in os.walk(src):
        for f in files:
            if f.endswith(".rs"):
                with open(os.path.join(root, f), errors="replace") as fh:
                    if "music_on_hold" in fh.read():
                        return True
    return False


def assert_music_on_hold(wav_path, peer_freq, what=""):
    """The held phone hears the built-in melody: not silent, no peer tone, and most loud
    windows are dominated by one of the melody's notes."""
    w = audio.read_wav(wav_path)
    assert not audio.silent(w, 0.2, max_loud_fraction=0.5), "%s: held phone hears silence (%r)" % (what, w)
    assert_no_tone(wav_path, peer_freq, what=what)
    loud = [x for x in audio.windows(w, 0.2) if audio.rms(x) >= audio.SILENCE_RMS]
    hits = sum(
        1 for x in loud if max(audio.tone_share(x, w.rate, f) for f in MOH_NOTES_HZ) >= 0.5
    )
    assert loud and hits >= 0.6 * len(loud), "%s: %d of %d loud windows carry a melody note\n%s" % (
        what, hits, len(loud), audio.window_report(w, list(MOH_NOTES_HZ) + [peer_freq], 0.2)[:30])


def registered(phones, server, name, ext):
    p = phones(name)
    ev = p.register(server, ext)
    assert ev["code"] == 200, "%s (%s) REGISTER: %s" % (name, ext, ev)
    return p


class LiveCall:
    """A (201, plays 1000 Hz) calls B (202, plays 1500 Hz) through the server."""

    def __init__(self, server, phones, tones, artifacts, answer=True):
        self.server = server
        self.artifacts = artifacts
        self.A = registered(phones, server, "A", "201")
        self.B = registered(phones, server, "B", "202")
        self.A.play(tones[F_A])
        self.B.play(tones[F_B])
        if answer:
            self.B.auto_answer(200)
        self.c = self.A.call(server.uri("202"))
        self.inc = self.B.wait_incoming()
        if answer:
            self.A.wait_state("CONFIRMED", call=self.c, timeout=10)
            self.B.wait_state("CONFIRMED", call=self.inc["call"])
            assert_anchored(self.A.wait_media(lambda e: e["active"], call=self.c), server)
            assert_anchored(self.B.wait_media(lambda e: e["active"], call=self.inc["call"]), server)
        else:
            self.A.wait_for(
                "call_state", lambda e: e["call"] == self.c and e["state"] == "EARLY", timeout=5
            )
        self.n = 0

    def marks(self):
        return self.A.mark(), self.B.mark()

    def wait_media(self, pred, marks, timeout=5):
        ma, mb = marks
        a = self.A.wait_media(pred, call=self.c, since=ma, timeout=timeout)
        b = self.B.wait_media(pred, call=self.inc["call"], since=mb, timeout=timeout)
        return a, b

    def record(self, name, seconds=2.0, settle=0.3):
        """Both phones record ``seconds``; returns (A.wav, B.wav)."""
        time.sleep(settle)
        self.n += 1
        ra = os.path.join(self.artifacts, "%02d_%s_A.wav" % (self.n, name))
        rb = os.path.join(self.artifacts, "%02d_%s_B.wav" % (self.n, name))
        self.A.record(ra)
        self.B.record(rb)
        time.sleep(seconds)
        self.A.stop_record()
        self.B.stop_record()
        return ra, rb

    def assert_two_way(self, name):
        ra, rb = self.record(name)
        assert_hears(ra, F_B, F_A, t0=0.2, what="%s: A hears B" % name)
        assert_hears(rb, F_A, F_B, t0=0.2, what="%s: B hears A" % name)

    def assert_held(self, name):
        ra, rb = self.record(name)
        assert_no_tone(ra, F_B, what="%s: A must not hear B" % name)
        assert_no_tone(rb, F_A, what="%s: B must not hear A" % name)
        if moh_enabled():
            assert_music_on_hold(ra, F_B, what="%s: A hears music on hold" % name)
            assert_music_on_hold(rb, F_A, what="%s: B hears music on hold" % name)

    def assert_a_muted(self, name):
        # No re-INVITE resets B's stream here: a recording started on B's pjsua2 conference
        # port begins with ~0.5 s of audio buffered before the mute (seen at any delay after
        # it), then digital silence. Judge from 0.7 s into the recording on.
        ra, rb = self.record(name, seconds=2.7)
        assert_no_tone(rb, F_A, t0=0.7, what="%s: B must not hear muted A" % name)
        assert_hears(ra, F_B, F_A, t0=0.2, what="%s: A still hears B" % name)

    def assert_both_ended(self, timeout=5):
        self.A.wait_state("DISCONNECTED", call=self.c, timeout=timeout)
        self.B.wait_state("DISCONNECTED", call=self.inc["call"], timeout=timeout)


# ------------------------------------------------------------------ sipgate
def sipgate_login(server, login="201@acme.local", password="secret201"):
    r = requests.post(
        server.http + TOKEN_PATH,
        data={"client_id": "sipgate-app-web", "grant_type": "password", "username": login,
              "password": password},
        headers={"Accept": "application/json"},
        timeout=5,
    )
    assert r.status_code == 200, "token: %s %s" % (r.status_code, r.text)
    return r.json()["token"]


def sdk(server, creds, action, call_id="", value=None, expect_ok=True):
    """Runs tests/node/sipgate_rtcm.js (the sipgateio SDK); returns its JSON line."""
    args = ["node", os.path.join(NODE_DIR, "sipgate_rtcm.js"), server.http, json.dumps(creds),
            action, call_id]
    if isinstance(value, str):
        args.append(value)
    elif value is not None:
        args.append("true" if value else "false")
    t0 = time.monotonic()
    p = subprocess.run(args, capture_output=True, text=True, timeout=30, cwd=NODE_DIR)
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    assert lines, "sipgateio %s: no output (rc=%s)\nstdout: %s\nstderr: %s" % (
        action, p.returncode, p.stdout, p.stderr)
    out = json.loads(lines[-1])
    out["elapsed"] = time.monotonic() - t0
    if expect_ok:
        assert out["ok"], "sipgateio %s failed: %s\nstderr: %s" % (action, out, p.stderr)
    return out


def one_call(server, creds):
    calls = sdk(server, creds, "list")["result"]
    assert len(calls) == 1, calls
    return calls[0]


# ------------------------------------------------------------------- native
class Native:
    def __init__(self, server, key="hf_test_key_acme"):
        self.base = server.http + "/api/v1"
        self.h = {"Authorization": "Bearer " + key}

    def req(self, method, path, expect=None, **kw):
        r = requests.request(method, self.base + path, headers=self.h, timeout=10, **kw)
        if expect is not None:
            assert r.status_code == expect, "%s %s -> %s %s" % (method, path, r.status_code, r.text)
        return r

    def calls(self):
        return self.req("GET", "/calls", 200).json()["calls"]

    def one_call(self):
        calls = self.calls()
        assert len(calls) == 1, calls
        return calls[0]

    @staticmethod
    def leg(call, ext):
        for l in call["legs"]:
            if l["owner_extension"] == ext:
                return l
        raise AssertionError("no leg of %s in %s" % (ext, call))


def node_available():
    return os.path.isdir(os.path.join(NODE_DIR, "node_modules", "sipgateio"))
