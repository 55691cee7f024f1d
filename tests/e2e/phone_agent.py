#!/usr/bin/env python3
"""One independent pjsua2 phone per OS process, driven by JSON lines.

Commands arrive as JSON lines on fd 0 (read raw with os.read, never a buffered
readline); events leave as JSON lines on --event-fd (default 3), because pjlib
logs to stdout. Every command gets an ``ack`` event carrying its ``id``.

Pitfalls handled (see shared/reference/test-peers.md): threadCnt=0 +
mainThreadOnly with libHandleEvents polling; at most 4 calls per process;
Call objects kept alive until exit, then libDestroy + os._exit; player and
recorder reconnected on every onCallMediaState.

Commands (``{"cmd": NAME, "id": N, ...}``):
  register {server, user, password, realm?, transport udp|tcp|tls, local_port,
            expires?, rtp_port?, no_register?, srtp? disabled|optional|mandatory}
            (tls: the server's certificate is not verified; srtp: SDES, RFC 4568)
  unregister / reregister
  call {uri}                      -> ack.result = {"call": idx}
  answer {code, call?}            (200, 180, 486, ...)
  auto_answer {code, delay_ms}    (code 0 disables; 180 is sent meanwhile)
  intercom {enabled}              (the phones' "auto-answer intercom calls" setting: an
                                   INVITE carrying an auto-answer header, see
                                   auto_answer_header(), is answered 200 at once)
  hangup {code?, call?}
  hold {call?} / unhold {call?}
  play {wav, loop?} / stop_play
  record {wav} / stop_record      (stop_record finalises the WAV header)
  (option --drain: calls also play to the null sound device, see Agent.drain)
  dtmf {digits, call?}
  info                            -> ack.result = list of call infos
  quit
Events: ready, ack, reg_state, incoming, call_state, media_state, sdp, dtmf,
        error.
"""
import argparse
import json
import os
import select
import sys
import time
import traceback

import pjsua2 as pj

AGENT = None

MEDIA_STATUS = {
    pj.PJSUA_CALL_MEDIA_NONE: "none",
    pj.PJSUA_CALL_MEDIA_ACTIVE: "active",
    pj.PJSUA_CALL_MEDIA_LOCAL_HOLD: "local_hold",
    pj.PJSUA_CALL_MEDIA_REMOTE_HOLD: "remote_hold",
    pj.PJSUA_CALL_MEDIA_ERROR: "error",
}
MEDIA_DIR = {
    0: "none",
    pj.PJMEDIA_DIR_ENCODING: "sendonly",
    pj.PJMEDIA_DIR_DECODING: "recvonly",
    pj.PJMEDIA_DIR_ENCODING_DECODING: "sendrecv",
}


def header_value(msg, *names):
    """First value of a header (long or compact name) in a raw SIP message."""
    wanted = {n.lower() for n in names}
    for line in msg.split("\r\n")[1:]:
        if not line:
            break
        if ":" in line:
            k, v = line.split(":", 1)
            if k.strip().lower() in wanted:
                return v.strip()
    return ""


def header_values(msg, *names):
    """Every value of a header (long or compact name) in a raw SIP message."""
    wanted = {n.lower() for n in names}
    out = []
    for line in msg.split("\r\n")[1:]:
        if not line:
            break
        if ":" in line:
            k, v = line.split(":", 1)
            if k.strip().lower() in wanted:
                out.append(v.strip())
    return out


def auto_answer_header(msg):
    """The auto-answer (intercom) request a server put in an INVITE, as desk phones read it:
    `Call-Info: <uri>;answer-after=N` (BroadSoft; Polycom, Grandstream, Gigaset, snom),
    `Alert-Info: <uri>;info=alert-autoanswer` or `Alert-Info: ...Auto Answer` /
    `answer-after=0` / `intercom` (Yealink, snom, Aastra, Gigaset), and `Answer-Mode: Auto`
    (RFC 5373). Returns the header line that asked, or ""."""
    for v in header_values(msg, "Call-Info"):
        if "answer-after=" in v.replace(" ", "").lower():
            return "Call-Info: " + v
    for v in header_values(msg, "Alert-Info"):
        low = v.replace(" ", "").lower()
        if any(k in low for k in ("info=alert-autoanswer", "autoanswer", "answer-after=",
                                  "intercom")):
            return "Alert-Info: " + v
    for v in header_values(msg, "Answer-Mode"):
        if v.split(";")[0].strip().lower() == "auto":
            return "Answer-Mode: " + v
    return ""


class PhoneCall(pj.Call):
    def __init__(self, agent, acc, idx, call_id=pj.PJSUA_INVALID_ID):
        pj.Call.__init__(self, acc, call_id)
        self.agent = agent
        self.idx = idx
        self.state = "NULL"
        self.audio = None  # current AudioMedia (re-fetched on every media state)
        self.answer_at = None
        self.answer_code = 0

    def onCallState(self, prm):
        ci = self.getInfo()
        self.state = ci.stateText
        if ci.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self.audio = None
        self.agent.emit(
            "call_state",
            call=self.idx,
            state=ci.stateText,
            last_status=ci.lastStatusCode,
            last_reason=ci.lastReason,
            call_id=ci.callIdString,
            remote_uri=ci.remoteUri,
            local_uri=ci.localUri,
        )

    def onCallMediaState(self, prm):
        ci = self.getInfo()
        for mi in ci.media:
            if mi.type != pj.PJMEDIA_TYPE_AUDIO:
                continue
            status = MEDIA_STATUS.get(mi.status, str(mi.status))
            remote_rtp = local_dir = codec = ""
            try:
                si = self.getStreamInfo(mi.index)
                remote_rtp = si.remoteRtpAddress
                local_dir = MEDIA_DIR.get(si.dir, str(si.dir))
                codec = si.codecName
            except pj.Error:
                pass
            self.audio = None
            if mi.status in (
                pj.PJSUA_CALL_MEDIA_ACTIVE,
                pj.PJSUA_CALL_MEDIA_LOCAL_HOLD,
                pj.PJSUA_CALL_MEDIA_REMOTE_HOLD,
            ):
                try:
                    self.audio = self.getAudioMedia(mi.index)
                except pj.Error:
                    self.audio = None
            self.agent.connect_call(self)
            self.agent.emit(
                "media_state",
                call=self.idx,
                status=status,
                active=mi.status == pj.PJSUA_CALL_MEDIA_ACTIVE,
                held=mi.status
                in (pj.PJSUA_CALL_MEDIA_LOCAL_HOLD, pj.PJSUA_CALL_MEDIA_REMOTE_HOLD),
                dir=MEDIA_DIR.get(mi.dir, str(mi.dir)),
                stream_dir=local_dir,
                remote_rtp=remote_rtp,
                codec=codec,
            )
            break

    def onCallSdpCreated(self, prm):
        try:
            rem = prm.remSdp.wholeSdp
        except Exception:
            rem = ""
        if rem:
            self.agent.emit("sdp", call=self.idx, remote=rem)

    def onDtmfDigit(self, prm):
        self.agent.emit("dtmf", call=self.idx, digit=prm.digit, method=str(prm.method))

    def onCallTransferRequest(self, prm):
        # A REFER to this phone (RFC 3515): accepted (202), and the call to the target is a
        # call of this agent like any other (its own index, media connected, events).
        agent = self.agent
        call = PhoneCall(agent, agent.acc, len(agent.calls))
        agent.calls.append(call)
        prm.newCall = call
        prm.statusCode = 202
        agent.emit("transfer_request", call=self.idx, new_call=call.idx, dst=prm.dstUri)

    def onCallTransferStatus(self, prm):
        # The NOTIFY sipfrag progress of a REFER this phone sent (RFC 3515).
        self.agent.emit(
            "xfer_status",
            call=self.idx,
            code=prm.statusCode,
            reason=prm.reason,
            final=bool(prm.finalNotify),
        )


class PhoneAccount(pj.Account):
    def __init__(self, agent):
        pj.Account.__init__(self)
        self.agent = agent

    def onRegState(self, prm):
        try:
            active = self.getInfo().regIsActive
        except pj.Error:
            active = False
        self.agent.emit(
            "reg_state",
            code=prm.code,
            reason=prm.reason,
            expires=prm.expiration,
            active=active,
        )

    def onIncomingCall(self, prm):
        agent = self.agent
        call = PhoneCall(agent, self, len(agent.calls), prm.callId)
        agent.calls.append(call)
        msg = prm.rdata.wholeMsg
        first = msg.split("\r\n", 1)[0]
        parts = first.split(" ")
        ruri = parts[1] if len(parts) > 1 else ""
        agent.emit(
            "incoming",
            call=call.idx,
            request_uri=ruri,
            **{"from": header_value(msg, "From", "f")},
            to=header_value(msg, "To", "t"),
            call_id=header_value(msg, "Call-ID", "i"),
            src=prm.rdata.srcAddress,
            has_sdp=("\r\n\r\nv=0" in msg),
            auto_answer_header=auto_answer_header(msg),
        )
        if agent.intercom and auto_answer_header(msg):
            agent.answer(call, 200)
        elif agent.auto_code:
            if agent.auto_code == 200 and agent.auto_delay_ms > 0:
                agent.answer(call, 180)
            if agent.auto_delay_ms > 0:
                call.answer_at = time.monotonic() + agent.auto_delay_ms / 1000.0
                call.answer_code = agent.auto_code
            else:
                agent.answer(call, agent.auto_code)
        else:
            agent.answer(call, 180)


class Agent:
    def __init__(self, args):
        self.name = args.name
        self.event_fd = args.event_fd
        self.codecs = [c.strip().upper() for c in args.codecs.split(",") if c.strip()]
        # --drain: every call's audio also goes to the (null) playback device, so pjmedia's
        # conference bridge reads the call's port every tick even while nothing records. The
        # bridge skips ports without listeners, and then the stream's jitter buffer fills
        # up: a later recording starts with that backlog (tests/e2e/README.md, playout).
        self.drain = args.drain
        self.rtp_port = args.rtp_port
        self.calls = []
        self.acc = None
        self.transport_id = None
        self.player = None
        self.player_loop = True
        self.recorder = None
        self.auto_code = 0
        self.auto_delay_ms = 0
        self.intercom = False
        self.running = True

        self.ep = pj.Endpoint()
        self.ep.libCreate()
        cfg = pj.EpConfig()
        cfg.uaConfig.threadCnt = 0
        cfg.uaConfig.mainThreadOnly = True
        cfg.uaConfig.maxCalls = 4
        cfg.uaConfig.userAgent = "hookflash-e2e-phone/" + self.name
        cfg.logConfig.level = args.log_level
        cfg.logConfig.consoleLevel = args.log_level
        cfg.logConfig.msgLogging = 1
        cfg.medConfig.noVad = True
        cfg.medConfig.ecTailLen = 0
        self.ep.libInit(cfg)
        self.ep.audDevManager().setNullDev()
        self.set_codecs()
        self.ep.libStart()

    # ------------------------------------------------------------------ util
    def emit(self, event, **kw):
        kw["event"] = event
        kw["phone"] = self.name
        kw["t"] = time.monotonic()
        data = (json.dumps(kw, default=str) + "\n").encode()
        try:
            os.write(self.event_fd, data)
        except OSError:
            self.running = False

    def set_codecs(self):
        for ci in self.ep.codecEnum2():
            cid = ci.codecId
            name = cid.split("/")[0].upper()
            if name in self.codecs:
                prio = 255 - self.codecs.index(name)
            elif name == "TELEPHONE-EVENT":
                prio = 128
            else:
                prio = 0
            self.ep.codecSetPriority(cid, prio)

    def call_of(self, args):
        if "call" in args and args["call"] is not None:
            return self.calls[int(args["call"])]
        for c in reversed(self.calls):
            if c.state != "DISCONNECTED":
                return c
        if not self.calls:
            raise RuntimeError("no call")
        return self.calls[-1]

    def answer(self, call, code):
        prm = pj.CallOpParam(True)
        prm.statusCode = code
        call.answer(prm)

    def connect_call(self, call):
        if call.audio is None:
            return
        if self.player is not None:
            self.player.startTransmit(call.audio)
        if self.recorder is not None:
            call.audio.startTransmit(self.recorder)
        if self.drain:
            call.audio.startTransmit(self.ep.audDevManager().getPlaybackDevMedia())

    def live_calls(self):
        return [c for c in self.calls if c.audio is not None and c.state != "DISCONNECTED"]

    def drop_media(self, obj, connect_from_calls):
        """Disconnect and destroy a player/recorder while the library is alive."""
        for c in self.live_calls():
            try:
                if connect_from_calls:
                    c.audio.stopTransmit(obj)
                else:
                    obj.stopTransmit(c.audio)
            except pj.Error:
                pass
        # The caller drops its last reference on return: the object is
        # destroyed while the library is alive (finalising a recorder's WAV).

    # -------------------------------------------------------------- commands
    def cmd_register(self, a):
        if self.acc is not None:
            raise RuntimeError("already registered/bound; one account per phone")
        transport = a.get("transport", "udp").lower()
        tcfg = pj.TransportConfig()
        tcfg.port = int(a.get("local_port", 0))
        tcfg.boundAddress = "127.0.0.1"
        tcfg.publicAddress = "127.0.0.1"
        ttype = {"tcp": pj.PJSIP_TRANSPORT_TCP, "tls": pj.PJSIP_TRANSPORT_TLS}.get(
            transport, pj.PJSIP_TRANSPORT_UDP)
        if transport == "tls":
            # Test servers have self-signed certificates.
            tcfg.tlsConfig.verifyServer = False
            tcfg.tlsConfig.verifyClient = False
        self.transport_id = self.ep.transportCreate(ttype, tcfg)
        tinfo = self.ep.transportGetInfo(self.transport_id)

        server = a.get("server", "127.0.0.1")
        user = a["user"]
        realm = a.get("realm") or ""
        domain = realm or server.split(":")[0]
        acfg = pj.AccountConfig()
        acfg.idUri = "sip:%s@%s" % (user, domain)
        if a.get("display_name"):
            acfg.idUri = '"%s" <%s>' % (a["display_name"], acfg.idUri)
        tparam = ";transport=%s" % transport if transport in ("tcp", "tls") else ""
        if not a.get("no_register"):
            acfg.regConfig.registrarUri = "sip:%s%s" % (server, tparam)
            acfg.regConfig.registerOnAdd = True
            acfg.regConfig.timeoutSec = int(a.get("expires", 300))
            acfg.regConfig.retryIntervalSec = 0
            acfg.regConfig.firstRetryIntervalSec = 0
            acfg.regConfig.unregWaitMsec = 2000
        else:
            acfg.regConfig.registerOnAdd = False
        if a.get("password") is not None:
            acfg.sipConfig.authCreds.append(
                pj.AuthCredInfo("digest", realm or "*", a.get("auth_user", user), 0, a["password"])
            )
        acfg.sipConfig.transportId = self.transport_id
        acfg.natConfig.contactRewriteUse = 0
        acfg.natConfig.viaRewriteUse = 0
        acfg.natConfig.sdpNatRewriteUse = 0
        acfg.natConfig.sipOutboundUse = 0
        acfg.natConfig.iceEnabled = False
        acfg.natConfig.udpKaIntervalSec = 0
        acfg.mediaConfig.transportConfig.boundAddress = "127.0.0.1"
        acfg.mediaConfig.transportConfig.publicAddress = "127.0.0.1"
        acfg.mediaConfig.transportConfig.port = int(a.get("rtp_port", self.rtp_port))
        acfg.mediaConfig.transportConfig.portRange = 64
        acfg.mediaConfig.srtpUse = {
            "mandatory": pj.PJMEDIA_SRTP_MANDATORY,
            "optional": pj.PJMEDIA_SRTP_OPTIONAL,
        }.get(a.get("srtp") or "disabled", pj.PJMEDIA_SRTP_DISABLED)
        # SDES keys only over TLS (pjsua refuses SRTP on a call whose signalling is not).
        acfg.mediaConfig.srtpSecureSignaling = 1 if a.get("srtp") else 0
        if a.get("session_expires"):
            # RFC 4028 session timers on every call of this phone (pjsua refreshes itself).
            acfg.callConfig.timerUse = pj.PJSUA_SIP_TIMER_ALWAYS
            acfg.callConfig.timerSessExpiresSec = int(a["session_expires"])
            acfg.callConfig.timerMinSESec = 90
        else:
            acfg.callConfig.timerUse = pj.PJSUA_SIP_TIMER_INACTIVE
        acfg.callConfig.prackUse = pj.PJSUA_100REL_NOT_USED
        acc = PhoneAccount(self)
        acc.create(acfg, True)
        self.acc = acc
        return {"local": tinfo.localName, "id_uri": acfg.idUri}

    def cmd_unregister(self, a):
        self.acc.setRegistration(False)

    def cmd_reregister(self, a):
        self.acc.setRegistration(True)

    def cmd_call(self, a):
        if self.acc is None:
            raise RuntimeError("register (or no_register) first")
        call = PhoneCall(self, self.acc, len(self.calls))
        self.calls.append(call)
        prm = pj.CallOpParam(True)
        prm.opt.audioCount = 1
        prm.opt.videoCount = 0
        call.makeCall(a["uri"], prm)
        return {"call": call.idx}

    def cmd_answer(self, a):
        self.answer(self.call_of(a), int(a.get("code", 200)))

    def cmd_auto_answer(self, a):
        self.auto_code = int(a.get("code", 200))
        self.auto_delay_ms = int(a.get("delay_ms", 0))

    def cmd_intercom(self, a):
        self.intercom = bool(a.get("enabled", True))

    def cmd_hangup(self, a):
        prm = pj.CallOpParam(True)
        if a.get("code"):
            prm.statusCode = int(a["code"])
        self.call_of(a).hangup(prm)

    def cmd_hold(self, a):
        self.call_of(a).setHold(pj.CallOpParam(True))

    def cmd_unhold(self, a):
        prm = pj.CallOpParam(True)
        prm.opt.flag = pj.PJSUA_CALL_UNHOLD
        self.call_of(a).reinvite(prm)

    def cmd_play(self, a):
        if self.player is not None:
            old, self.player = self.player, None
            self.drop_media(old, connect_from_calls=False)
        p = pj.AudioMediaPlayer()
        p.createPlayer(a["wav"], 0 if a.get("loop", True) else pj.PJMEDIA_FILE_NO_LOOP)
        self.player = p
        for c in self.live_calls():
            self.connect_call(c)

    def cmd_stop_play(self, a):
        if self.player is not None:
            old, self.player = self.player, None
            self.drop_media(old, connect_from_calls=False)

    def cmd_record(self, a):
        if self.recorder is not None:
            old, self.recorder = self.recorder, None
            self.drop_media(old, connect_from_calls=True)
        r = pj.AudioMediaRecorder()
        r.createRecorder(a["wav"])
        self.recorder = r
        for c in self.live_calls():
            self.connect_call(c)
        return {"t_start": time.monotonic()}

    def cmd_stop_record(self, a):
        if self.recorder is not None:
            old, self.recorder = self.recorder, None
            self.drop_media(old, connect_from_calls=True)

    def cmd_xfer(self, a):
        # Blind transfer: REFER with Refer-To: a["uri"] on this call.
        self.call_of(a).xfer(a["uri"], pj.CallOpParam(True))

    def cmd_xfer_replaces(self, a):
        # Attended transfer: REFER on this call whose Refer-To replaces call a["other"].
        other = self.calls[int(a["other"])]
        self.call_of(a).xferReplaces(other, pj.CallOpParam(True))

    def cmd_dtmf(self, a):
        self.call_of(a).dialDtmf(str(a["digits"]))

    def cmd_info(self, a):
        out = []
        for c in self.calls:
            try:
                ci = c.getInfo()
                out.append(
                    {
                        "call": c.idx,
                        "state": ci.stateText,
                        "last_status": ci.lastStatusCode,
                        "call_id": ci.callIdString,
                    }
                )
            except pj.Error:
                out.append({"call": c.idx, "state": c.state})
        return out

    def cmd_quit(self, a):
        self.running = False

    # ------------------------------------------------------------------ loop
    def handle_line(self, line):
        try:
            msg = json.loads(line)
        except ValueError as e:
            self.emit("error", message="bad json: %s" % e)
            return
        cmd = msg.get("cmd", "")
        fn = getattr(self, "cmd_" + cmd, None)
        try:
            if fn is None:
                raise RuntimeError("unknown command %r" % cmd)
            result = fn(msg)
            self.emit("ack", id=msg.get("id"), cmd=cmd, ok=True, result=result)
        except Exception as e:  # report, keep running
            err = getattr(e, "info", None)
            text = err() if callable(err) else str(e)
            self.emit("ack", id=msg.get("id"), cmd=cmd, ok=False, error=text)
            self.emit("error", message="%s: %s" % (cmd, text), trace=traceback.format_exc())

    def run(self):
        self.emit("ready", pid=os.getpid())
        buf = b""
        while self.running:
            self.ep.libHandleEvents(10)
            now = time.monotonic()
            for c in self.calls:
                if c.answer_at is not None and now >= c.answer_at:
                    c.answer_at = None
                    if c.state not in ("DISCONNECTED", "CONFIRMED"):
                        try:
                            self.answer(c, c.answer_code)
                        except pj.Error as e:
                            self.emit("error", message="auto answer: %s" % e.info())
            r, _, _ = select.select([0], [], [], 0)
            if r:
                data = os.read(0, 65536)
                if not data:
                    break
                buf += data
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        self.handle_line(line.decode())
        self.shutdown()

    def shutdown(self):
        try:
            self.ep.hangupAllCalls()
            end = time.monotonic() + 0.5
            while time.monotonic() < end:
                self.ep.libHandleEvents(10)
            self.cmd_stop_record({})
            self.cmd_stop_play({})
            self.ep.libHandleEvents(10)
        except Exception:
            traceback.print_exc()
        sys.stdout.flush()
        try:
            self.ep.libDestroy()
        except Exception:
            traceback.print_exc()
        sys.stdout.flush()
        os._exit(0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", default="phone")
    ap.add_argument("--event-fd", type=int, default=3)
    ap.add_argument("--codecs", default="PCMU,PCMA")
    ap.add_argument("--rtp-port", type=int, default=0)
    ap.add_argument("--log-level", type=int, default=4)
    ap.add_argument("--drain", action="store_true")
    args = ap.parse_args()
    global AGENT
    AGENT = Agent(args)
    AGENT.run()


if __name__ == "__main__":
    main()
