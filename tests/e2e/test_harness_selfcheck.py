"""The harness checked against itself, without hookflash: pjsua2 phone to
phone directly, SIPp against SIPp, tone detection on generated audio, digest
against published vectors, torture files against their own Content-Length.
Each check is shown able to fail as well as to pass."""
import math
import os
import re
import struct
import time

import pytest

import audio
import rawsip
import sipp
from checks import assert_hears, assert_no_tone, split_hostport
from conftest import F_A, F_B
from hfserver import Metrics, free_port, parse_prometheus


# ----------------------------------------------------------------- audio.py
def test_audio_tone_detection_on_generated_wavs(tmp_path, tones):
    t1000, t1500 = audio.read_wav(tones[F_A]), audio.read_wav(tones[F_B])
    assert t1000.rate == 8000 and t1000.duration == pytest.approx(30, abs=0.01)
    assert audio.has_tone(t1000, 1000, 0, 3) and not audio.has_tone(t1000, 1500, 0, 3)
    assert audio.tone_ratio(t1000, 1000, 1500, 0, 3) > 1e4
    assert audio.tone_ratio(t1000, 1500, 1000, 0, 3) < 1e-4
    assert audio.has_tone(t1500, 1500, 0, 3) and not audio.silent(t1500, 0, 3)
    assert audio.silent(tones["silence"]) and not audio.has_tone(tones["silence"], 1000)

    # 16 kHz like pjsua2's recorder: 1 s of 1000 Hz, 1 s silence, 1 s of 1500 Hz
    rate = 16000
    samples = [int(12000 * math.sin(2 * math.pi * 1000 * i / rate))
               for i in range(rate)]
    samples += [0] * rate
    samples += [int(12000 * math.sin(2 * math.pi * 1500 * i / rate))
                for i in range(rate)]
    p = audio.write_wav(str(tmp_path / "mix.wav"), samples, rate)
    assert audio.has_tone(p, 1000, 0, 1) and not audio.has_tone(p, 1500, 0, 1)
    assert audio.silent(p, 1, 2) and not audio.silent(p, 0, 1)
    assert audio.has_tone(p, 1500, 2, 3) and not audio.has_tone(p, 1000, 2, 3)
    assert audio.tone_fraction(p, 1000) == pytest.approx(1 / 3, abs=0.05)
    with pytest.raises(AssertionError):
        assert_hears(p, 1500, 1000, t0=0)  # 1500 Hz only in a third: must fail
    with pytest.raises(AssertionError):
        assert_no_tone(p, 1000)


def test_audio_reads_unfinalised_and_missing_wavs(tmp_path):
    p = audio.write_wav(str(tmp_path / "x.wav"), [1000, -1000] * 800, 16000)
    data = bytearray(open(p, "rb").read())
    i = data.find(b"data")
    data[i + 4 : i + 8] = struct.pack("<I", 0)  # header never finalised
    open(p, "wb").write(bytes(data))
    assert len(audio.read_wav(p).samples) == 1600
    missing = str(tmp_path / "missing.wav")
    assert audio.read_wav(missing).samples == []
    assert audio.silent(missing) and not audio.has_tone(missing, 1000)
    assert audio.tone_ratio(missing, 1000, 1500) == 0.0


# ------------------------------------------------------------- hfserver.py
def test_prometheus_text_parsing():
    text = """# HELP hookflash_active_calls Calls in progress.
# TYPE hookflash_active_calls gauge
hookflash_active_calls 2
# TYPE hookflash_calls_ended_total counter
hookflash_calls_ended_total{cause="normal"} 5
hookflash_calls_ended_total{cause="busy",direction="in"} 1.0
hookflash_calls_ended_total{direction="out",cause="no \\"answer\\""} 3
hookflash_rtp_packets_relayed_total 1.2e3 1700000000000
"""
    m = Metrics(parse_prometheus(text))
    assert m.value("hookflash_active_calls") == 2
    assert m.value("hookflash_calls_ended_total", cause="normal") == 5
    assert m.value("hookflash_calls_ended_total", cause="busy") is None  # labels must match exactly
    assert m.value("hookflash_calls_ended_total", direction="in", cause="busy") == 1
    assert m.sum("hookflash_calls_ended_total") == 9
    assert m.sum("hookflash_calls_ended_total", direction="out") == 3
    assert m.value("hookflash_rtp_packets_relayed_total") == 1200
    assert m.value("hookflash_sip_dialogs") is None and m.sum("hookflash_sip_dialogs") is None
    assert 'hookflash_calls_ended_total{cause="busy",direction="in"}' in m


# --------------------------------------------------------------- rawsip.py
def test_digest_matches_published_vectors():
    # RFC 2617 section 3.5 (MD5, qop=auth)
    chal = rawsip.parse_challenge(
        'Digest realm="testrealm@host.com", qop="auth,auth-int", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"')
    h = rawsip.digest_authorization(chal, "GET", "/dir/index.html", "Mufasa", "Circle Of Life",
                                    cnonce="0a4f113b")
    assert 'response="6629fae49393a05397450978507c4ef1"' in h
    # RFC 7616 section 3.9.1 (SHA-256, qop=auth)
    chal = rawsip.parse_challenge(
        'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=SHA-256, '
        'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
        'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"')
    h = rawsip.digest_authorization(chal, "GET", "/dir/index.html", "Mufasa", "Circle of Life",
                                    cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ")
    assert 'response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"' in h
    assert "algorithm=SHA-256" in h
    wrong = rawsip.digest_authorization(chal, "GET", "/dir/index.html", "Mufasa", "circle of life",
                                        cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ")
    assert "753927fa0e85" not in wrong


def test_torture_files_render_faithfully():
    msgs = rawsip.torture_messages()
    assert len(msgs) >= 10
    names = {m.name for m in msgs}
    assert {"wsinv", "intmeth", "esc01", "badinv01", "clerr", "mismatch01", "insuf"} <= names
    for m in msgs:
        assert m.meta.get("rfc", "").startswith("RFC 4475"), m.name
        for t in m.transports:
            data = m.render(t, "127.0.0.1:5999", "127.0.0.1:5060")
            assert b"${" not in data and b"<hex>" not in data and b"allOneLine" not in data, m.name
            assert b"\n" not in data.replace(b"\r\n", b""), m.name + ": bare LF"
            head, sep, body = data.partition(b"\r\n\r\n")
            assert sep, m.name + ": no end of headers"
            if m.check_length:
                cl = int(re.search(rb"(?im)^(?:content-length|l)\s*:\s*(\d+)", head).group(1))
                assert cl == len(body), "%s: Content-Length %d, body %d" % (m.name, cl, len(body))
    intmeth = [m for m in msgs if m.name == "intmeth"][0].render("udp", "h:1", "s:2")
    assert b'"BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f"' in intmeth
    by = {m.name: m for m in msgs}
    assert by["unreason"].matches("udp", None) and not by["unreason"].matches("udp", 200)
    assert by["mismatch01"].matches("tcp", 400) and not by["mismatch01"].matches("tcp", 200)
    assert not by["mismatch01"].matches("udp", None)
    assert by["wsinv"].matches("udp", 407) and not by["wsinv"].matches("udp", None)
    assert by["clerr"].matches("tcp", None) and not by["clerr"].matches("tcp", 400)


# ------------------------------------------------------------- phone agent
def _direct_pair(phones, tones, artifacts, answer_delay_ms=300):
    A, B = phones("A"), phones("B")
    pa, pb = free_port(), free_port()
    A.bind(pa, user="a")
    B.bind(pb, user="b")
    A.play(tones[F_A])
    B.play(tones[F_B])
    return A, B, pb


def test_phone_direct_call_two_way_audio(phones, tones, artifacts):
    A, B, pb = _direct_pair(phones, tones, artifacts)
    B.auto_answer(200, delay_ms=300)
    ra, rb = os.path.join(artifacts, "a.wav"), os.path.join(artifacts, "b.wav")
    A.record(ra)
    B.record(rb)
    c = A.call("sip:b@127.0.0.1:%d" % pb)
    inc = B.wait_incoming()
    assert inc["request_uri"] == "sip:b@127.0.0.1:%d" % pb and inc["has_sdp"]
    assert A.wait_for("call_state", lambda e: e["state"] == "EARLY")["last_status"] == 180
    A.wait_state("CONFIRMED", call=c)
    B.wait_state("CONFIRMED")
    ma = A.wait_media(lambda e: e["active"])
    mb = B.wait_media(lambda e: e["active"])
    # Direct call: each phone sends to the other phone's RTP port (>= 30000),
    # so the "anchored in hookflash" check (20000-29999) would fail here.
    assert split_hostport(ma["remote_rtp"])[1] >= 30000 and split_hostport(mb["remote_rtp"])[1] >= 30000
    time.sleep(3)
    A.stop_record()
    B.stop_record()
    B.hangup()
    A.wait_state("DISCONNECTED", call=c)
    B.wait_state("DISCONNECTED")
    assert_hears(ra, F_B, F_A, what="A")
    assert_hears(rb, F_A, F_B, what="B")
    with pytest.raises(AssertionError):
        assert_hears(ra, F_A, F_B)  # A's own tone is not in its recording


def test_phone_direct_hold_unhold(phones, tones, artifacts):
    A, B, pb = _direct_pair(phones, tones, artifacts)
    B.auto_answer(200)
    c = A.call("sip:b@127.0.0.1:%d" % pb)
    A.wait_state("CONFIRMED", call=c)
    A.wait_media(lambda e: e["active"])
    rec = lambda n: os.path.join(artifacts, n)  # noqa: E731
    A.record(rec("a_before.wav"))
    time.sleep(1.5)
    A.stop_record()
    ma, mb = A.mark(), B.mark()
    A.hold()
    held = A.wait_media(lambda e: e["status"] == "local_hold", since=ma)
    assert held["dir"] == "sendonly"
    assert B.wait_media(lambda e: e["status"] == "remote_hold", since=mb)["dir"] == "recvonly"
    time.sleep(0.3)
    A.record(rec("a_hold.wav"))
    time.sleep(1.5)
    A.stop_record()
    ma, mb = A.mark(), B.mark()
    A.unhold()
    A.wait_media(lambda e: e["active"], since=ma)
    B.wait_media(lambda e: e["active"], since=mb)
    time.sleep(0.3)
    A.record(rec("a_after.wav"))
    time.sleep(1.5)
    A.stop_record()
    A.hangup()
    B.wait_state("DISCONNECTED")
    assert_hears(rec("a_before.wav"), F_B, F_A, t0=0.3)
    assert_no_tone(rec("a_hold.wav"), F_B)
    assert_hears(rec("a_after.wav"), F_B, F_A, t0=0.3)
    with pytest.raises(AssertionError):
        assert_hears(rec("a_hold.wav"), F_B, F_A)


def test_phone_direct_busy_cancel_dtmf(phones, tones, artifacts):
    A, B, pb = _direct_pair(phones, tones, artifacts)
    uri = "sip:b@127.0.0.1:%d" % pb
    B.auto_answer(486)
    c1 = A.call(uri)
    assert A.end_status(call=c1) == 486
    B.auto_answer(0)  # ring (180) and wait
    m = B.mark()
    c2 = A.call(uri)
    inc = B.wait_incoming(since=m)
    A.wait_for("call_state", lambda e: e["call"] == c2 and e["state"] == "EARLY")
    A.hangup(call=c2)  # CANCEL
    assert A.end_status(call=c2) == 487
    end = B.wait_state("DISCONNECTED", call=inc["call"])
    assert end["last_status"] == 487
    assert "CONFIRMED" not in B.states(call=inc["call"])
    B.auto_answer(200)
    c3 = A.call(uri)
    A.wait_state("CONFIRMED", call=c3)
    A.wait_media(lambda e: e["active"] and e["call"] == c3)
    time.sleep(0.5)
    A.dtmf("1#", call=c3)
    B.wait_for("dtmf", lambda e: e["digit"] == "1")
    B.wait_for("dtmf", lambda e: e["digit"] == "#")
    A.hangup(call=c3)
    B.wait_for("call_state", lambda e: e["state"] == "DISCONNECTED" and e["call"] != inc["call"])


def test_phone_agent_reports_command_errors(phones):
    A = phones("A")
    with pytest.raises(AssertionError, match="register .*first|no call"):
        A.cmd("call", uri="sip:x@127.0.0.1:9")
    with pytest.raises(AssertionError, match="unknown command"):
        A.cmd("frobnicate")
    with pytest.raises(AssertionError, match="no 'incoming' event"):
        A.wait_for("incoming", timeout=0.3)


# -------------------------------------------------------------------- SIPp
SUBST = dict(USER="202", PASSWORD="secret202", REALM="acme.local", CALLEE="105",
             PCAP=sipp.G711A_PCAP, HOLD_MS=500, EXPIRES=3600)


def test_sipp_register_scenario_against_sipp_registrar(artifacts):
    uas = sipp.Sipp(artifacts, "registrar", "selfcheck_registrar.xml", subst=SUBST, calls=1,
                    timeout_s=15)
    sipp.wait_listening(uas)
    r = sipp.run(artifacts, "register", "register.xml", remote="127.0.0.1:%d" % uas.local_port,
                 subst=SUBST, calls=1, timeout_s=15)
    assert r.rc == sipp.OK and r.successful == 1 and r.failed == 0, r.summary()
    assert uas.wait().failed == 0

    uas = sipp.Sipp(artifacts, "registrar2", "selfcheck_registrar.xml", subst=SUBST, calls=1,
                    timeout_s=15)
    sipp.wait_listening(uas)
    bad = sipp.run(artifacts, "register_badpw", "register.xml",
                   remote="127.0.0.1:%d" % uas.local_port,
                   subst=dict(SUBST, PASSWORD="wrong"), calls=1, timeout_s=15)
    assert bad.rc == sipp.SOME_FAILED and bad.failed == 1, bad.summary()
    uas.wait()


def test_sipp_uac_auth_scenario_against_sipp(artifacts):
    n = 20
    uas = sipp.Sipp(artifacts, "uas_auth", "selfcheck_uas_auth.xml", subst=SUBST, calls=n,
                    timeout_s=30, rtp_echo=True)
    sipp.wait_listening(uas)
    r = sipp.run(artifacts, "uac", "uac_auth.xml", remote="127.0.0.1:%d" % uas.local_port,
                 subst=SUBST, calls=n, rate=20, limit=30, timeout_s=30)
    assert r.rc == sipp.OK and r.successful == n and r.failed == 0, r.summary()
    u = uas.wait()
    assert u.successful == n and u.failed == 0, u.summary()
    media = [l for l in r.logs() if l.startswith("answer-media ")]
    assert len(media) == n
    host, port = split_hostport(media[0].split()[1])
    assert host == "127.0.0.1" and port == uas.mp


def test_sipp_uas_echo_scenario_against_builtin_uac(artifacts):
    uas = sipp.Sipp(artifacts, "uas_echo", "uas_echo.xml", calls=5, timeout_s=20, rtp_echo=True)
    sipp.wait_listening(uas)
    r = sipp.run(artifacts, "builtin_uac", "sn:uac", remote="127.0.0.1:%d" % uas.local_port,
                 calls=5, rate=10, timeout_s=20, extra=["-d", "200"])
    assert r.rc == sipp.OK and r.successful == 5, r.summary()
    u = uas.wait()
    assert u.successful == 5 and u.failed == 0, u.summary()
    assert len([l for l in u.logs() if l.startswith("offer-media 127.0.0.1:")]) == 5


def test_sipp_failure_is_detected(artifacts):
    # uac_auth.xml insists on a 407; the echo UAS answers 180/200 instead.
    uas = sipp.Sipp(artifacts, "uas_noauth", "uas_echo.xml", calls=2, timeout_s=10)
    sipp.wait_listening(uas)
    r = sipp.run(artifacts, "uac_expects_407", "uac_auth.xml",
                 remote="127.0.0.1:%d" % uas.local_port, subst=SUBST, calls=2, rate=10,
                 timeout_s=10)
    uas.stop()
    assert r.rc != sipp.OK and r.failed >= 1 and r.successful == 0, r.summary()
