//! `listen`: streams the call's audio to a WebSocket server (jambonz `listen`).
//!
//! The call is answered, a WebSocket opened to `url` (`ws://` or `wss://`, subprotocol
//! `audio.jambonz.org`, `wsAuth` as HTTP Basic) within [`CONNECT_TIMEOUT`]; the first frame
//! is a text frame with the call's fields in camelCase (`callSid`, `from`, `to`, `callId`,
//! `direction`, `callStatus`, `accountSid`, `applicationSid`, ...) plus `sampleRate`,
//! `mixType` and the verb's `metadata` object merged in. Then binary frames of L16 audio
//! (16-bit little-endian PCM), 20 ms each, at `sampleRate` (8000, 16000, 24000, 32000, 48000,
//! 64000; up-sampled from the call's 8 kHz): `mixType` `mono` (the caller), `stereo` (two
//! channels interleaved: caller, other party) or `mixed` (both summed).
//!
//! - `passDtmf`: each key the caller presses goes out as a text frame
//!   `{"event":"dtmf","dtmf":"5","duration":<ms>}`.
//! - `bidirectionalAudio` (`enabled`, default true; `streaming`, default false;
//!   `sampleRate`, default `sampleRate`): with `streaming`, binary frames received are L16 at
//!   that rate and are played to the caller as they come (silence in between). Text messages
//!   `{"type":"playAudio","data":{"audioContent":<base64>,"audioContentType":"raw","sampleRate":..}}`
//!   play a clip (raw L16, or `audioContentType: "wav"` decoded by the shared WAV reader),
//!   answered with `{"type":"playDone"}` once
//!   played; `{"type":"killAudio"}` stops what plays; `{"type":"disconnect"}` ends the listen.
//!   `disableBidirectionalAudio: true` is `enabled: false` (received audio is ignored).
//! - The verb runs until the server closes the socket (or sends `disconnect`), `maxLength`
//!   seconds pass, `timeout` seconds of silence from the caller pass, or the caller presses
//!   a `finishOnKey` key. Then the socket is closed and `actionHook` gets `duration` (seconds
//!   streamed), `digits` (the finishing key, if any) and hookflash's `reason`
//!   (`socketClosed`, `disconnect`, `maxLength`, `timeout`, `finishOnKey`, `connectFailed`,
//!   `error`). A socket that cannot be reached is an alert and `reason: "connectFailed"`,
//!   `status: "fail"` on the actionHook; the application goes on.
//! - When the call ends the run stops (no actionHook, as for every verb).
//! - `REST listen_status: pause|resume` (jambonz update) stops and restarts the audio; the
//!   socket stays open.
//! - Nested in `dial` (while connected) or `config` (in the background): [`Listen::run_beside`].
//! - Not supported (accepted, ignored): `playBeep`, `transcribe`.

use std::time::Duration;

use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tracing::{debug, info, warn};

use super::common::{is_dtmf_key, seconds};
use super::Props;
use crate::alert::AlertKind;
use crate::control::{ControlError, StreamFrame, StreamPlayback};
use crate::error::AppError;
use crate::exec::{Exec, Flow};
use crate::hook::HookSpec;
use crate::listen_audio::{self, Decoder, Encoder, MixType, RATES};

/// How long opening the socket (TCP, TLS, upgrade) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the closing handshake may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// The subprotocol jambonz servers accept.
pub const SUBPROTOCOL: &str = "audio.jambonz.org";
/// A caller's frame quieter than this (peak) counts as silence for `timeout`.
const SILENCE_PEAK: u16 = 300;
/// Largest `playAudio` clip accepted (decoded bytes: 60 s of 64 kHz L16).
const MAX_CLIP_BYTES: usize = 64_000 * 2 * 60;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct WsAuth {
    pub username: String,
    pub password: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bidirectional {
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub streaming: bool,
    #[serde(default)]
    pub sample_rate: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Listen {
    pub url: String,
    #[serde(default)]
    pub action_hook: Option<HookSpec>,
    #[serde(default)]
    pub mix_type: MixType,
    #[serde(default)]
    pub sample_rate: Option<u32>,
    #[serde(default)]
    pub metadata: Option<Map<String, Value>>,
    #[serde(default)]
    pub pass_dtmf: bool,
    #[serde(default)]
    pub max_length: Option<f64>,
    #[serde(default)]
    pub timeout: Option<f64>,
    #[serde(default)]
    pub finish_on_key: Option<String>,
    #[serde(default)]
    pub bidirectional_audio: Option<Bidirectional>,
    #[serde(default)]
    pub disable_bidirectional_audio: Option<bool>,
    #[serde(default)]
    pub ws_auth: Option<WsAuth>,
    #[serde(default)]
    pub play_beep: bool,
    #[serde(default)]
    pub transcribe: Option<Value>,
}

fn check_rate(what: &str, rate: u32) -> Result<(), String> {
    if RATES.contains(&rate) {
        Ok(())
    } else {
        Err(format!("{what} {rate} is not one of {RATES:?}"))
    }
}

impl Props for Listen {
    fn check(&self) -> Result<(), String> {
        let lower = self.url.to_ascii_lowercase();
        if !(lower.starts_with("ws://") || lower.starts_with("wss://")) {
            return Err(format!("url {:?} is not a ws:// or wss:// URL", self.url));
        }
        if let Some(r) = self.sample_rate {
            check_rate("sampleRate", r)?;
        }
        if let Some(r) = self
            .bidirectional_audio
            .as_ref()
            .and_then(|b| b.sample_rate)
        {
            check_rate("bidirectionalAudio.sampleRate", r)?;
        }
        if let Some(t) = self.max_length {
            seconds("maxLength", t)?;
        }
        if let Some(t) = self.timeout {
            seconds("timeout", t)?;
        }
        if let Some(c) = self
            .finish_on_key
            .as_deref()
            .and_then(|k| k.chars().find(|c| !is_dtmf_key(*c)))
        {
            return Err(format!("finishOnKey: {c:?} is not a DTMF key"));
        }
        Ok(())
    }
}

/// Why the listen ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum End {
    SocketClosed,
    Disconnect,
    MaxLength,
    Timeout,
    FinishOnKey(char),
    /// The tap ended (the call's media stopped).
    CallEnded,
    /// What it ran beside ended (the dial it is nested in; config turned it off).
    Stopped,
    Error(String),
}

impl End {
    fn reason(&self) -> &'static str {
        match self {
            End::SocketClosed => "socketClosed",
            End::Disconnect => "disconnect",
            End::MaxLength => "maxLength",
            End::Timeout => "timeout",
            End::FinishOnKey(_) => "finishOnKey",
            End::CallEnded => "callEnded",
            End::Stopped => "stopped",
            End::Error(_) => "error",
        }
    }
}

/// Why the socket could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    #[error("invalid WebSocket request: {0}")]
    Request(String),
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("address not allowed: {0}")]
    NotAllowed(String),
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// `snake_case` to `camelCase`.
fn camel(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut up = false;
    for c in key.chars() {
        if c == '_' {
            up = true;
        } else if up {
            out.extend(c.to_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// The first text frame: the call's fields in camelCase, `sampleRate`, `mixType`, and the
/// verb's `metadata` merged in.
pub(crate) fn metadata_frame(
    fields: Map<String, Value>,
    sample_rate: u32,
    mix: MixType,
    metadata: Option<&Map<String, Value>>,
) -> Value {
    let mut m = Map::new();
    for (k, v) in fields {
        if k == "sip" {
            continue;
        }
        m.insert(camel(&k), v);
    }
    m.insert("sampleRate".into(), Value::from(sample_rate));
    m.insert("mixType".into(), Value::from(mix.as_str()));
    if let Some(extra) = metadata {
        for (k, v) in extra {
            m.insert(k.clone(), v.clone());
        }
    }
    Value::Object(m)
}

/// The DTMF text frame (`duration` in milliseconds).
pub(crate) fn dtmf_frame(digit: char, duration_ms: u32) -> Value {
    serde_json::json!({"event": "dtmf", "dtmf": digit.to_string(), "duration": duration_ms})
}

/// A `playAudio` message's audio as 8 kHz frames.
pub(crate) fn play_audio_frames(
    data: &Value,
    default_rate: u32,
) -> Result<Vec<StreamFrame>, String> {
    let content_type = data
        .get("audioContentType")
        .and_then(Value::as_str)
        .unwrap_or("raw");
    let wav = content_type.eq_ignore_ascii_case("wav") || content_type.eq_ignore_ascii_case("wave");
    if !wav && !content_type.eq_ignore_ascii_case("raw") {
        return Err(format!(
            "audioContentType {content_type:?} is not supported (raw or wav)"
        ));
    }
    if wav {
        return wav_frames(data);
    }
    let rate = match data.get("sampleRate") {
        None | Some(Value::Null) => default_rate,
        Some(Value::Number(n)) => n.as_u64().and_then(|n| u32::try_from(n).ok()).unwrap_or(0),
        Some(Value::String(s)) => s.trim().parse().unwrap_or(0),
        Some(_) => 0,
    };
    check_rate("sampleRate", rate)?;
    let bytes = clip_bytes(data)?;
    let mut dec = Decoder::new(rate);
    let mut frames = Vec::new();
    dec.push(&bytes, &mut frames);
    frames.extend(dec.flush());
    Ok(frames)
}

/// The decoded `audioContent` of a `playAudio` message (base64, at most
/// [`MAX_CLIP_BYTES`]).
fn clip_bytes(data: &Value) -> Result<Vec<u8>, String> {
    let b64 = data
        .get("audioContent")
        .and_then(Value::as_str)
        .ok_or("audioContent is missing")?;
    if b64.len() / 4 * 3 > MAX_CLIP_BYTES {
        return Err("audioContent is too long".into());
    }
    base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| format!("audioContent is not base64: {e}"))
}

/// A WAV clip (any rate, channels, sample format the shared reader takes; at most a
/// minute) as 8 kHz frames, the last one padded with silence.
fn wav_frames(data: &Value) -> Result<Vec<StreamFrame>, String> {
    let bytes = clip_bytes(data)?;
    let pcm = hookflash_media::audio::load_wav_limited(&bytes, MAX_CLIP)
        .map_err(|e| format!("audioContent is not a usable WAV: {e}"))?;
    Ok(pcm
        .samples()
        .chunks(crate::listen_audio::FRAME_SAMPLES)
        .map(|chunk| {
            let mut f: StreamFrame = [0; crate::listen_audio::FRAME_SAMPLES];
            f[..chunk.len()].copy_from_slice(chunk);
            f
        })
        .collect())
}

/// Longest `playAudio` WAV clip.
const MAX_CLIP: Duration = Duration::from_secs(60);

impl Listen {
    fn rate(&self) -> u32 {
        self.sample_rate.unwrap_or(8000)
    }

    fn bidi(&self) -> Option<Bidirectional> {
        let b = self.bidirectional_audio.clone().unwrap_or_default();
        let enabled = b.enabled.unwrap_or(true) && self.disable_bidirectional_audio != Some(true);
        enabled.then_some(b)
    }

    async fn connect(&self, ctl: &dyn crate::control::CallControl) -> Result<Socket, ConnectError> {
        crate::delivery::install_crypto_provider();
        let mut req = self
            .url
            .as_str()
            .into_client_request()
            .map_err(|e| ConnectError::Request(e.to_string()))?;
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static(SUBPROTOCOL),
        );
        if let Some(auth) = &self.ws_auth {
            let token = base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", auth.username, auth.password));
            let value = HeaderValue::from_str(&format!("Basic {token}"))
                .map_err(|e| ConnectError::Request(e.to_string()))?;
            req.headers_mut().insert("Authorization", value);
        }
        let host = req
            .uri()
            .host()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_string())
            .ok_or_else(|| ConnectError::Request("the url has no host".into()))?;
        let secure = req.uri().scheme_str() == Some("wss");
        let port = req
            .uri()
            .port_u16()
            .unwrap_or(if secure { 443 } else { 80 });
        let open = async {
            // Resolved here and every address checked against the server's outbound policy,
            // then connected to that very address (no second lookup to rebind).
            let addrs = tokio::net::lookup_host((host.as_str(), port))
                .await
                .map_err(|e| ConnectError::Connect(format!("cannot resolve {host}: {e}")))?;
            let mut last = ConnectError::Connect(format!("{host} has no address"));
            for addr in addrs {
                if let Err(why) = ctl.connect_allowed(addr) {
                    last = ConnectError::NotAllowed(why);
                    continue;
                }
                match tokio::net::TcpStream::connect(addr).await {
                    Ok(tcp) => {
                        let _ = tcp.set_nodelay(true);
                        return tokio_tungstenite::client_async_tls_with_config(
                            req, tcp, None, None,
                        )
                        .await
                        .map(|(ws, _)| ws)
                        .map_err(|e| ConnectError::Connect(e.to_string()));
                    }
                    Err(e) => last = ConnectError::Connect(format!("{addr}: {e}")),
                }
            }
            Err(last)
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, open).await {
            Ok(r) => r,
            Err(_) => Err(ConnectError::Timeout(CONNECT_TIMEOUT)),
        }
    }

    pub(crate) async fn exec(&self, x: &mut Exec) -> Result<Flow, AppError> {
        x.answer().await?;
        let call_id = x.call.call_id.clone();
        let mut ws = match self.connect(x.ctl.as_ref()).await {
            Ok(ws) => ws,
            Err(e) => {
                warn!(%call_id, url = %self.url, error = %e, "listen: socket not opened");
                x.alert(AlertKind::CallControl, format!("listen: {}: {e}", self.url));
                let mut r = Map::new();
                r.insert("reason".into(), Value::from("connectFailed"));
                r.insert("status".into(), Value::from("fail"));
                r.insert("duration".into(), Value::from(0));
                return x.action(self.action_hook.as_ref(), r, "actionHook").await;
            }
        };
        let tap = match x.ctl.listen_start(&x.call).await {
            Ok(t) => t,
            Err(e) => {
                close(&mut ws).await;
                return Err(e.into());
            }
        };
        info!(%call_id, url = %self.url, mix = self.mix_type.as_str(), rate = self.rate(), "listen started");
        let started = Instant::now();
        let outcome = self.run(x, &mut ws, tap.frames, tap.dtmf, None).await;
        if let Err(e) = x.ctl.listen_stop(&x.call, tap.id).await {
            debug!(%call_id, error = %e, "listen_stop");
        }
        let (end, playing) = outcome;
        if playing {
            x.stop_play().await;
        }
        if end != End::SocketClosed {
            close(&mut ws).await;
        }
        let secs = started.elapsed().as_secs();
        info!(%call_id, reason = end.reason(), secs, "listen ended");
        x.drain_dtmf();
        if end == End::CallEnded {
            return Err(x.call_ended().await.into());
        }
        let mut r = Map::new();
        r.insert("reason".into(), Value::from(end.reason()));
        r.insert("duration".into(), Value::from(secs));
        match &end {
            End::FinishOnKey(k) => {
                r.insert("digits".into(), Value::from(k.to_string()));
            }
            End::Error(e) => {
                r.insert("status".into(), Value::from("fail"));
                r.insert("error".into(), Value::from(e.clone()));
            }
            _ => {}
        }
        x.action(self.action_hook.as_ref(), r, "actionHook").await
    }

    /// A listen beside other verbs (nested in `dial`, or `config`'s background listen): it
    /// streams until `stop` fires (or its sender is dropped), the socket closes or the call
    /// ends. No actionHook; a socket that cannot be opened is an alert. How it ended.
    pub(crate) async fn run_beside(
        &self,
        x: &mut Exec,
        stop: oneshot::Receiver<()>,
    ) -> &'static str {
        let call_id = x.call.call_id.clone();
        let mut ws = match self.connect(x.ctl.as_ref()).await {
            Ok(ws) => ws,
            Err(e) => {
                x.alert(AlertKind::CallControl, format!("listen: {}: {e}", self.url));
                return "connectFailed";
            }
        };
        let tap = match x.ctl.listen_start(&x.call).await {
            Ok(t) => t,
            Err(e) => {
                x.alert(AlertKind::CallControl, format!("listen: {e}"));
                close(&mut ws).await;
                return "error";
            }
        };
        info!(%call_id, url = %self.url, mix = self.mix_type.as_str(), "listen started beside");
        let (end, playing) = self.run(x, &mut ws, tap.frames, tap.dtmf, Some(stop)).await;
        if let Err(e) = x.ctl.listen_stop(&x.call, tap.id).await {
            debug!(%call_id, error = %e, "listen_stop");
        }
        if playing && end != End::CallEnded {
            x.stop_play().await;
        }
        if end != End::SocketClosed {
            close(&mut ws).await;
        }
        info!(%call_id, reason = end.reason(), "listen beside ended");
        end.reason()
    }

    /// The listen's loop; how it ended, and whether a playback may still run.
    async fn run(
        &self,
        x: &mut Exec,
        ws: &mut Socket,
        mut frames: mpsc::Receiver<crate::control::ListenFrame>,
        mut dtmf: mpsc::Receiver<crate::control::TapDtmf>,
        mut stop: Option<oneshot::Receiver<()>>,
    ) -> (End, bool) {
        let call_id = x.call.call_id.clone();
        let meta = metadata_frame(
            x.session.payload(),
            self.rate(),
            self.mix_type,
            self.metadata.as_ref(),
        );
        if let Err(e) = ws.send(Message::text(meta.to_string())).await {
            return (End::Error(format!("sending metadata: {e}")), false);
        }
        let bidi = self.bidi();
        let back_rate = bidi
            .as_ref()
            .and_then(|b| b.sample_rate)
            .unwrap_or(self.rate());
        let mut decoder = Decoder::new(back_rate);
        let mut encoder = Encoder::new(self.mix_type, self.rate());
        let mut player: Option<StreamPlayback> = None;
        // A playAudio clip waiting for its playDone: when its frames are all played out.
        let mut play_done_at: Option<Instant> = None;
        let max_at = self
            .max_length
            .and_then(|t| seconds("maxLength", t).ok())
            .map(|d| Instant::now() + d);
        let silence_limit = self
            .timeout
            .filter(|t| *t > 0.0)
            .and_then(|t| seconds("timeout", t).ok());
        let mut silent_since = Instant::now();
        let finish = self.finish_on_key.clone().unwrap_or_default();
        let mut scratch: Vec<StreamFrame> = Vec::new();
        let far = Instant::now() + Duration::from_secs(86400 * 365);
        let end = loop {
            let silence_at = silence_limit.map(|d| silent_since + d);
            tokio::select! {
                f = frames.recv() => {
                    let Some(f) = f else { break End::CallEnded };
                    if listen_audio::peak(&f.a) >= SILENCE_PEAK {
                        silent_since = Instant::now();
                    }
                    let bytes = encoder.encode(&f);
                    if let Err(e) = ws.send(Message::binary(bytes)).await {
                        break socket_error(e);
                    }
                }
                m = ws.next() => {
                    let m = match m {
                        None => break End::SocketClosed,
                        Some(Err(e)) => break socket_error(e),
                        Some(Ok(m)) => m,
                    };
                    match m {
                        Message::Binary(b) => {
                            if !bidi.as_ref().is_some_and(|b| b.streaming) {
                                continue;
                            }
                            scratch.clear();
                            decoder.push(&b, &mut scratch);
                            if let Err(e) = play(x, &mut player, &scratch).await {
                                break e;
                            }
                        }
                        Message::Text(t) => {
                            let msg: Value = match serde_json::from_str(t.as_str()) {
                                Ok(v) => v,
                                Err(e) => {
                                    debug!(%call_id, error = %e, "listen: text frame is not JSON; ignored");
                                    continue;
                                }
                            };
                            match msg.get("type").and_then(Value::as_str) {
                                Some("disconnect") => break End::Disconnect,
                                Some("killAudio") => {
                                    if player.take().is_some() {
                                        x.stop_play().await;
                                    }
                                    play_done_at = None;
                                }
                                Some("playAudio") if bidi.is_some() => {
                                    let data = msg.get("data").cloned().unwrap_or(Value::Null);
                                    match play_audio_frames(&data, back_rate) {
                                        Ok(clip) => {
                                            if let Err(e) = play(x, &mut player, &clip).await {
                                                break e;
                                            }
                                            // Played out once the queue has drained.
                                            let queued = player.as_ref().map_or(0, |p| {
                                                p.frames.max_capacity() - p.frames.capacity()
                                            });
                                            play_done_at = Some(Instant::now() + Duration::from_millis(20 * queued as u64 + 40));
                                        }
                                        Err(e) => {
                                            x.alert(AlertKind::PlayFailed, format!("listen playAudio: {e}"));
                                        }
                                    }
                                }
                                other => debug!(%call_id, ?other, "listen: message ignored"),
                            }
                        }
                        Message::Close(_) => break End::SocketClosed,
                        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                    }
                }
                d = dtmf.recv() => {
                    let Some(d) = d else { continue };
                    if self.pass_dtmf {
                        let frame = dtmf_frame(d.digit, d.duration_ms).to_string();
                        if let Err(e) = ws.send(Message::text(frame)).await {
                            break socket_error(e);
                        }
                    }
                    if finish.contains(d.digit) {
                        break End::FinishOnKey(d.digit);
                    }
                }
                _ = tokio::time::sleep_until(play_done_at.unwrap_or(far)), if play_done_at.is_some() => {
                    play_done_at = None;
                    let done = serde_json::json!({"type": "playDone"}).to_string();
                    if let Err(e) = ws.send(Message::text(done)).await {
                        break socket_error(e);
                    }
                }
                _ = tokio::time::sleep_until(max_at.unwrap_or(far)), if max_at.is_some() => {
                    break End::MaxLength;
                }
                _ = async { if let Some(s) = stop.as_mut() { let _ = s.await; } }, if stop.is_some() => {
                    break End::Stopped;
                }
                _ = tokio::time::sleep_until(silence_at.unwrap_or(far)), if silence_at.is_some() => {
                    break End::Timeout;
                }
            }
        };
        (end, player.is_some())
    }
}

fn socket_error(e: tokio_tungstenite::tungstenite::Error) -> End {
    use tokio_tungstenite::tungstenite::Error as E;
    match e {
        E::ConnectionClosed | E::AlreadyClosed => End::SocketClosed,
        other => End::Error(other.to_string()),
    }
}

/// Queues `frames` on the streamed playback, starting one if none runs (or it ended).
async fn play(
    x: &mut Exec,
    player: &mut Option<StreamPlayback>,
    frames: &[StreamFrame],
) -> Result<(), End> {
    for f in frames {
        if player.as_ref().is_none_or(|p| p.frames.is_closed()) {
            match x.ctl.play_stream(&x.call).await {
                Ok(p) => *player = Some(p),
                Err(ControlError::Gone) => return Err(End::CallEnded),
                Err(e) => return Err(End::Error(format!("playback: {e}"))),
            }
        }
        let Some(p) = player.as_ref() else {
            return Ok(());
        };
        if p.frames.send(*f).await.is_err() {
            // The playback ended meanwhile (stopped, replaced): the rest starts a new one.
            *player = None;
        }
    }
    Ok(())
}

/// Closes the socket (normal closure), waiting a moment for the server's answer.
async fn close(ws: &mut Socket) {
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "listen ended".into(),
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        if ws.close(Some(frame)).await.is_ok() {
            // Read until the server's close arrives.
            while let Some(Ok(_)) = ws.next().await {}
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn listen(v: Value) -> Result<Listen, String> {
        let Value::Object(m) = v else { unreachable!() };
        let l: Listen = serde_json::from_value(Value::Object(m)).map_err(|e| e.to_string())?;
        l.check()?;
        Ok(l)
    }

    #[test]
    fn properties_are_read_and_checked() {
        let l = listen(json!({
            "url": "ws://127.0.0.1:9/x", "mixType": "stereo", "sampleRate": 16000,
            "passDtmf": true, "finishOnKey": "#", "maxLength": 30,
            "bidirectionalAudio": {"enabled": true, "streaming": true, "sampleRate": 8000},
            "metadata": {"a": 1}
        }))
        .unwrap();
        assert_eq!(l.mix_type, MixType::Stereo);
        assert_eq!(l.rate(), 16000);
        assert!(l.bidi().unwrap().streaming);
        let l = listen(json!({"url": "wss://h/x"})).unwrap();
        assert_eq!(l.mix_type, MixType::Mono);
        assert_eq!(l.rate(), 8000);
        assert!(l.bidi().is_some_and(|b| !b.streaming));
        let l = listen(json!({"url": "wss://h/x", "disableBidirectionalAudio": true})).unwrap();
        assert!(l.bidi().is_none());
        assert!(listen(json!({"url": "http://h/x"})).is_err());
        assert!(listen(json!({"url": "ws://h/x", "sampleRate": 11025})).is_err());
        assert!(listen(json!({"url": "ws://h/x", "mixType": "quad"})).is_err());
        assert!(listen(json!({"url": "ws://h/x", "finishOnKey": "x"})).is_err());
    }

    #[test]
    fn the_metadata_frame_is_camel_case_with_rate_mix_and_metadata() {
        let mut fields = Map::new();
        fields.insert("call_sid".into(), json!("c1"));
        fields.insert("account_sid".into(), json!("a1"));
        fields.insert("from".into(), json!("201"));
        fields.insert("sip".into(), json!({"raw": "INVITE"}));
        let meta = json!({"tenant": "x"});
        let m = metadata_frame(fields, 16000, MixType::Mixed, meta.as_object());
        assert_eq!(
            m,
            json!({"callSid": "c1", "accountSid": "a1", "from": "201", "sampleRate": 16000,
                   "mixType": "mixed", "tenant": "x"})
        );
        assert_eq!(
            dtmf_frame('5', 120),
            json!({"event": "dtmf", "dtmf": "5", "duration": 120})
        );
    }

    #[test]
    fn play_audio_is_raw_l16_at_its_rate() {
        let samples: Vec<i16> = (0..640).map(|i| (i % 7) as i16 * 100).collect();
        let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
        let frames = play_audio_frames(
            &json!({"audioContent": b64, "audioContentType": "raw", "sampleRate": "16000"}),
            8000,
        )
        .unwrap();
        assert_eq!(frames.len(), 2);
        let frames =
            play_audio_frames(&json!({"audioContent": b64, "sampleRate": 8000}), 8000).unwrap();
        assert_eq!(frames.len(), 4);
        assert_eq!(&frames[0][..], &samples[..160]);
        assert!(play_audio_frames(
            &json!({"audioContent": b64, "audioContentType": "wav"}),
            8000
        )
        .is_err());
        assert!(play_audio_frames(&json!({"audioContent": "!!"}), 8000).is_err());
        // A real WAV (16 kHz mono, 0.1 s) through the shared reader: 0.1 s at 8 kHz.
        let tone: Vec<i16> = (0..1600)
            .map(|i| ((i as f64 * 0.2).sin() * 8000.0) as i16)
            .collect();
        let spec = hookflash_media::wav::Pcm16Spec {
            channels: 1,
            sample_rate: 16000,
        };
        let wav = hookflash_media::wav::encode_pcm16(spec, &tone).unwrap();
        let b64w = base64::engine::general_purpose::STANDARD.encode(&wav);
        let frames = play_audio_frames(
            &json!({"audioContent": b64w, "audioContentType": "wav"}),
            8000,
        )
        .unwrap();
        assert_eq!(frames.len(), 5);
        assert!(frames[2].iter().any(|s| s.abs() > 4000));
        assert!(play_audio_frames(&json!({"audioContent": b64, "sampleRate": 7}), 8000).is_err());
    }
}
