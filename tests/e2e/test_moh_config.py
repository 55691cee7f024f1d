"""Music on hold is configurable (live call control issue): with `rtp.music_on_hold` (here via
HOOKFLASH_RTP_MUSIC_ON_HOLD) pointing at a WAV — 44.1 kHz stereo, a 600 Hz tone — the phones
held by the server hear that file instead of the built-in melody; retrieve gives them back each
other. A path that is not a WAV stops the server at start-up with a clear error."""
import os
import subprocess

import pytest

from api_support import LiveCall, Native
from checks import assert_hears, assert_no_tone
from conftest import F_A, F_B

pytestmark = pytest.mark.server

F_MOH = 600


def test_configured_music_on_hold_is_what_held_phones_hear(server_factory, phones, tones, artifacts):
    wav = os.path.join(artifacts, "moh.wav")
    subprocess.run(["sox", "-n", "-r", "44100", "-c", "2", "-b", "16", wav, "synth", "3",
                    "sine", str(F_MOH), "vol", "0.5"], check=True)
    server = server_factory(env={"HOOKFLASH_RTP_MUSIC_ON_HOLD": wav})
    call = LiveCall(server, phones, tones, artifacts)
    api = Native(server)
    live = api.one_call()
    m = call.marks()
    api.req("POST", "/calls/%s/hold" % live["id"], 200)
    call.wait_media(lambda e: e["status"] == "remote_hold", m)
    ra, rb = call.record("held", seconds=2.0)
    assert_hears(ra, F_MOH, F_B, t0=0.6, what="A hears the configured music")
    assert_hears(rb, F_MOH, F_A, t0=0.6, what="B hears the configured music")
    assert_no_tone(ra, F_B, t0=0.6, what="A must not hear B while held")
    m = call.marks()
    api.req("POST", "/calls/%s/unhold" % live["id"], 200)
    call.wait_media(lambda e: e["active"] and e["status"] != "remote_hold", m)
    call.assert_two_way("retrieved")


def test_unusable_music_on_hold_file_is_a_startup_error(tmp_path, hookflash_bin):
    bad = tmp_path / "moh.wav"
    bad.write_text("not a wav file")
    env = dict(os.environ, HOOKFLASH_RTP_MUSIC_ON_HOLD=str(bad), HOOKFLASH_DATA_DIR=str(tmp_path / "d"),
               HOOKFLASH_SIP_UDP="127.0.0.1:0", HOOKFLASH_SIP_TCP="127.0.0.1:0",
               HOOKFLASH_HTTP_LISTEN="127.0.0.1:0")
    p = subprocess.run([hookflash_bin, "serve"], env=env, capture_output=True, text=True, timeout=20)
    assert p.returncode != 0, p.stdout
    assert "music_on_hold" in p.stderr, p.stderr
