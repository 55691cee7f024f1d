//! Test support: a scripted call (the far side of the runtime: it records what the runtime
//! does to the leg and lets a test press keys or hang up) and a local HTTP server playing
//! the application's web server.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::app::{AppHooks, CallFields, CallStatus, Direction, Hook, Launch, SipInfo};
use crate::control::{
    Audio, CallControl, CallRef, CallSignal, ControlError, ListenFrame, PlayEnd, RecordingDone,
    StreamFrame, StreamPlayback, Tap, TapDtmf,
};
use crate::delivery::{Delivery, DeliveryConfig};

/// What the runtime did to the leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Answer,
    Decline {
        status: u16,
        reason: Option<String>,
        headers: Vec<(String, String)>,
    },
    Play {
        audio: Audio,
        early: bool,
    },
    StopPlay,
    SendDtmf(String),
    Hangup {
        headers: Vec<(String, String)>,
    },
    ListenStart,
    ListenStop,
    PlayStream,
    RecordStart,
    RecordStop(String),
}

/// How the fake's playbacks end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlayMode {
    /// At once.
    Instant,
    /// Only when stopped (or the call ends).
    Hold,
    /// After this long (on the tokio clock).
    For(Duration),
}

/// The current playback: its number and how to end it.
type Playing = (u64, oneshot::Sender<PlayEnd>);

pub struct FakeCall {
    ops: Mutex<Vec<Op>>,
    changed: watch::Sender<usize>,
    signal_tx: mpsc::Sender<CallSignal>,
    signal_rx: Mutex<Option<mpsc::Receiver<CallSignal>>>,
    mode: Mutex<PlayMode>,
    playing: Arc<Mutex<Option<Playing>>>,
    generation: AtomicU64,
    /// URLs or texts whose playback fails.
    failing: Mutex<Vec<String>>,
    answered: AtomicBool,
    /// The running tap's feeds (`listen`).
    tap: Mutex<Option<(mpsc::Sender<ListenFrame>, mpsc::Sender<TapDtmf>)>>,
    /// Frames played by streamed playbacks.
    streamed: Arc<Mutex<Vec<StreamFrame>>>,
    /// When the running recording started (`record_start`).
    recording: Mutex<Option<Instant>>,
}

impl FakeCall {
    pub fn new(mode: PlayMode) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(256);
        let (changed, _) = watch::channel(0);
        Arc::new(FakeCall {
            ops: Mutex::new(Vec::new()),
            changed,
            signal_tx: tx,
            signal_rx: Mutex::new(Some(rx)),
            mode: Mutex::new(mode),
            playing: Arc::new(Mutex::new(None)),
            generation: AtomicU64::new(0),
            failing: Mutex::new(Vec::new()),
            answered: AtomicBool::new(false),
            tap: Mutex::new(None),
            streamed: Arc::new(Mutex::new(Vec::new())),
            recording: Mutex::new(None),
        })
    }

    /// Feeds a frame to the running tap (false: none runs).
    pub async fn tap_frame(&self, frame: ListenFrame) -> bool {
        let tx = self.tap.lock().unwrap().as_ref().map(|t| t.0.clone());
        match tx {
            Some(tx) => tx.send(frame).await.is_ok(),
            None => false,
        }
    }

    /// A key press seen by the running tap.
    pub async fn tap_dtmf(&self, digit: char, duration_ms: u32) -> bool {
        let tx = self.tap.lock().unwrap().as_ref().map(|t| t.1.clone());
        match tx {
            Some(tx) => tx.send(TapDtmf { digit, duration_ms }).await.is_ok(),
            None => false,
        }
    }

    /// Frames the streamed playbacks played so far.
    pub fn streamed(&self) -> Vec<StreamFrame> {
        self.streamed.lock().unwrap().clone()
    }

    pub fn fail_audio(&self, what: &str) {
        self.failing.lock().unwrap().push(what.to_string());
    }

    pub fn ops(&self) -> Vec<Op> {
        self.ops.lock().unwrap().clone()
    }

    fn record(&self, op: Op) {
        let n = {
            let mut ops = self.ops.lock().unwrap();
            ops.push(op);
            ops.len()
        };
        self.changed.send_replace(n);
    }

    /// The caller presses a key.
    pub async fn press(&self, key: char) {
        self.signal_tx.send(CallSignal::Dtmf(key)).await.unwrap();
    }

    /// The caller hangs up.
    pub async fn hang_up(&self, sip_status: u16, cause: &str) {
        self.end_playing(PlayEnd::CallEnded);
        self.signal_tx
            .send(CallSignal::Ended {
                sip_status,
                cause: cause.to_string(),
            })
            .await
            .unwrap();
    }

    /// Ends the current playback as if it played to its end.
    pub fn finish_playing(&self) {
        self.end_playing(PlayEnd::Finished);
    }

    /// Ends the current playback with the call, without an end signal.
    pub fn end_playback_with_the_call(&self) {
        self.end_playing(PlayEnd::CallEnded);
    }

    fn end_playing(&self, how: PlayEnd) {
        if let Some((_, tx)) = self.playing.lock().unwrap().take() {
            let _ = tx.send(how);
        }
    }

    /// Waits (on the tokio clock, at most a virtual minute) until `pred` holds for the ops.
    pub async fn wait_for(&self, what: &str, pred: impl Fn(&[Op]) -> bool) {
        let mut rx = self.changed.subscribe();
        let wait = async {
            loop {
                if pred(&self.ops()) {
                    return;
                }
                rx.changed().await.unwrap();
            }
        };
        if tokio::time::timeout(Duration::from_secs(60), wait)
            .await
            .is_err()
        {
            panic!("timed out waiting for {what}; ops: {:?}", self.ops());
        }
    }

    pub async fn wait_plays(&self, n: usize) {
        self.wait_for(&format!("{n} plays"), |ops| {
            ops.iter().filter(|o| matches!(o, Op::Play { .. })).count() >= n
        })
        .await;
    }
}

#[async_trait]
impl CallControl for FakeCall {
    async fn answer(&self, _call: &CallRef) -> Result<(), ControlError> {
        self.answered.store(true, Ordering::SeqCst);
        self.record(Op::Answer);
        Ok(())
    }

    async fn decline(
        &self,
        _call: &CallRef,
        status: u16,
        reason: Option<String>,
        headers: Vec<(String, String)>,
    ) -> Result<(), ControlError> {
        if self.answered.load(Ordering::SeqCst) {
            return Err(ControlError::WrongState("answered".into()));
        }
        self.record(Op::Decline {
            status,
            reason,
            headers,
        });
        Ok(())
    }

    async fn play(
        &self,
        _call: &CallRef,
        audio: Audio,
        early_media: bool,
    ) -> Result<oneshot::Receiver<PlayEnd>, ControlError> {
        let key = match &audio {
            Audio::Url(u) => u.clone(),
            Audio::Tts { text, .. } => text.clone(),
        };
        self.record(Op::Play {
            audio,
            early: early_media,
        });
        if self.failing.lock().unwrap().contains(&key) {
            return Err(ControlError::Audio(format!("cannot fetch {key}")));
        }
        if !early_media {
            self.answered.store(true, Ordering::SeqCst);
        }
        // A newer playback cuts the one before.
        self.end_playing(PlayEnd::Stopped);
        let (tx, rx) = oneshot::channel();
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let mode = *self.mode.lock().unwrap();
        match mode {
            PlayMode::Instant => {
                let _ = tx.send(PlayEnd::Finished);
            }
            PlayMode::Hold => *self.playing.lock().unwrap() = Some((generation, tx)),
            PlayMode::For(d) => {
                *self.playing.lock().unwrap() = Some((generation, tx));
                let slot = self.playing.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(d).await;
                    let mut p = slot.lock().unwrap();
                    if p.as_ref().is_some_and(|(g, _)| *g == generation) {
                        if let Some((_, tx)) = p.take() {
                            let _ = tx.send(PlayEnd::Finished);
                        }
                    }
                });
            }
        }
        Ok(rx)
    }

    async fn stop_play(&self, _call: &CallRef) -> Result<(), ControlError> {
        self.record(Op::StopPlay);
        self.end_playing(PlayEnd::Stopped);
        Ok(())
    }

    async fn send_dtmf(&self, _call: &CallRef, digits: &str) -> Result<(), ControlError> {
        self.record(Op::SendDtmf(digits.to_string()));
        Ok(())
    }

    async fn hangup(
        &self,
        _call: &CallRef,
        headers: Vec<(String, String)>,
    ) -> Result<(), ControlError> {
        self.end_playing(PlayEnd::CallEnded);
        self.record(Op::Hangup { headers });
        Ok(())
    }

    async fn listen_start(&self, _call: &CallRef) -> Result<Tap, ControlError> {
        self.record(Op::ListenStart);
        let (ftx, frames) = mpsc::channel(50);
        let (dtx, dtmf) = mpsc::channel(16);
        *self.tap.lock().unwrap() = Some((ftx, dtx));
        Ok(Tap {
            id: 1,
            frames,
            dtmf,
        })
    }

    /// Port 1 stands for an address the server's policy refuses.
    fn connect_allowed(&self, addr: std::net::SocketAddr) -> Result<(), String> {
        if addr.port() == 1 {
            return Err("refused by the test policy".into());
        }
        Ok(())
    }

    async fn listen_stop(&self, _call: &CallRef, _id: u64) -> Result<(), ControlError> {
        self.record(Op::ListenStop);
        self.tap.lock().unwrap().take();
        Ok(())
    }

    async fn play_stream(&self, _call: &CallRef) -> Result<StreamPlayback, ControlError> {
        self.record(Op::PlayStream);
        let (tx, mut rx) = mpsc::channel::<StreamFrame>(10);
        let (done_tx, done) = oneshot::channel();
        let sink = self.streamed.clone();
        tokio::spawn(async move {
            while let Some(f) = rx.recv().await {
                sink.lock().unwrap().push(f);
            }
            let _ = done_tx.send(PlayEnd::Finished);
        });
        Ok(StreamPlayback { frames: tx, done })
    }

    async fn record_start(&self, _call: &CallRef) -> Result<String, ControlError> {
        self.record(Op::RecordStart);
        *self.recording.lock().unwrap() = Some(Instant::now());
        Ok("rec-1".into())
    }

    /// The recording's duration is the time it ran on the tokio clock.
    async fn record_stop(&self, _call: &CallRef, id: &str) -> Result<RecordingDone, ControlError> {
        self.record(Op::RecordStop(id.to_string()));
        let started = self.recording.lock().unwrap().take();
        let started = started.ok_or_else(|| ControlError::WrongState("not recording".into()))?;
        Ok(RecordingDone {
            id: id.to_string(),
            duration_ms: started.elapsed().as_millis() as u64,
        })
    }

    fn signals(&self, _call: &CallRef) -> mpsc::Receiver<CallSignal> {
        match self.signal_rx.lock().unwrap().take() {
            Some(rx) => rx,
            None => mpsc::channel(1).1,
        }
    }
}

/// Holds tokio's paused clock still while bytes are in flight on loopback.
///
/// On a paused clock tokio jumps to the next timer whenever the runtime has nothing to do,
/// and a busy machine may not have handed an HTTP request or answer written to loopback to
/// the other side yet: the client's request timeout would fire although nothing is late. A
/// blocking task holds auto-advance back while it exists (tokio test-util), so the server
/// keeps one from accepting a connection until the client has closed it, except while a
/// scripted answer is deliberately late.
struct Hold(#[allow(dead_code)] std::sync::mpsc::Sender<()>);

impl Hold {
    fn new() -> Self {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        // Ends when the sender is dropped.
        tokio::task::spawn_blocking(move || {
            let _ = rx.recv();
        });
        Hold(tx)
    }
}

/// One request the hook server received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path with query.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub at: Instant,
}

impl Seen {
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// A scripted answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
    pub delay: Duration,
}

impl Reply {
    pub fn json(v: Value) -> Self {
        Reply {
            status: 200,
            content_type: "application/json",
            body: v.to_string(),
            delay: Duration::ZERO,
        }
    }

    pub fn raw(status: u16, content_type: &'static str, body: &str) -> Self {
        Reply {
            status,
            content_type,
            body: body.to_string(),
            delay: Duration::ZERO,
        }
    }

    pub fn empty() -> Self {
        Reply::raw(200, "text/plain", "")
    }

    pub fn after(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }
}

/// The application's web server on loopback: answers each path with its scripted replies in
/// order (404 once they are used up) and records every request.
#[derive(Clone)]
pub struct HookServer {
    pub base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    routes: Arc<Mutex<HashMap<String, VecDeque<Reply>>>>,
    changed: watch::Sender<usize>,
}

impl HookServer {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (changed, _) = watch::channel(0);
        let server = HookServer {
            base: format!("http://{addr}"),
            seen: Arc::new(Mutex::new(Vec::new())),
            routes: Arc::new(Mutex::new(HashMap::new())),
            changed,
        };
        // A connection is only seen here once accepted; before that the client may wait
        // for it on an idle runtime. Small ticks keep the paused clock's jumps small then
        // (to the next tick, not to the client's request timeout).
        tokio::spawn(async {
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        let s = server.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let hold = Hold::new();
                tokio::spawn(s.clone().serve(sock, hold));
            }
        });
        server
    }

    async fn serve(self, mut sock: tokio::net::TcpStream, hold: Hold) {
        let mut hold = Some(hold);
        let mut buf = vec![0u8; 65536];
        let mut got = Vec::new();
        let (head, body) = loop {
            let Ok(k) = sock.read(&mut buf).await else {
                return;
            };
            if k == 0 {
                return;
            }
            got.extend_from_slice(&buf[..k]);
            let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&got[..end]).to_string();
            let len = head
                .lines()
                .find_map(|l| {
                    let (n, v) = l.split_once(':')?;
                    n.trim()
                        .eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                let body = String::from_utf8_lossy(&got[end + 4..end + 4 + len]).to_string();
                break (head, body);
            }
        };
        let mut lines = head.lines();
        let request_line = lines.next().unwrap_or("");
        let mut parts = request_line.split(' ');
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let seen = Seen {
            method,
            target,
            headers,
            body,
            at: Instant::now(),
        };
        let reply = self
            .routes
            .lock()
            .unwrap()
            .get_mut(seen.path())
            .and_then(|q| q.pop_front())
            .unwrap_or_else(|| Reply::raw(404, "text/plain", "no reply scripted"));
        let n = {
            let mut s = self.seen.lock().unwrap();
            s.push(seen);
            s.len()
        };
        self.changed.send_replace(n);
        if !reply.delay.is_zero() {
            // Nothing is in flight while the answer is late: the clock may run.
            drop(hold.take());
            tokio::time::sleep(reply.delay).await;
            hold = Some(Hold::new());
        }
        let resp = format!(
            "HTTP/1.1 {} X\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
            reply.status,
            reply.content_type,
            reply.body.len(),
            reply.body
        );
        if sock.write_all(resp.as_bytes()).await.is_ok() {
            // Until the client has read the answer and closed the connection.
            while matches!(sock.read(&mut buf).await, Ok(n) if n > 0) {}
        }
        drop(hold);
    }

    /// Scripts the next answers of `path`.
    pub fn route(&self, path: &str, replies: Vec<Reply>) {
        self.routes
            .lock()
            .unwrap()
            .entry(path.to_string())
            .or_default()
            .extend(replies);
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn seen_at(&self, path: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.path() == path)
            .collect()
    }

    /// Waits (at most a virtual minute) until `path` got `n` requests.
    pub async fn wait_for(&self, path: &str, n: usize) -> Vec<Seen> {
        let mut rx = self.changed.subscribe();
        let wait = async {
            loop {
                let s = self.seen_at(path);
                if s.len() >= n {
                    return s;
                }
                rx.changed().await.unwrap();
            }
        };
        match tokio::time::timeout(Duration::from_secs(60), wait).await {
            Ok(s) => s,
            Err(_) => panic!(
                "timed out waiting for {n} requests to {path}; seen: {:?}",
                self.seen()
            ),
        }
    }
}

/// A delivery with quick retries and a request timeout far beyond any test's (virtual)
/// time, so that only a deliberately late answer times out ([`delivery_timing_out_after`]).
pub fn delivery() -> Delivery {
    delivery_timing_out_after(Duration::from_secs(3600))
}

pub fn delivery_timing_out_after(timeout: Duration) -> Delivery {
    Delivery::new(
        DeliveryConfig {
            attempts: 3,
            first_backoff: Duration::from_millis(100),
            request_timeout: timeout,
            ..DeliveryConfig::default()
        },
        CancellationToken::new(),
    )
}

pub const SECRET: &str = "wh-secret";

pub fn call_ref() -> CallRef {
    CallRef {
        account_id: "acc-1".into(),
        call_id: "call-1".into(),
        leg_id: "leg-1".into(),
    }
}

/// An inbound call's launch: call_hook `/call`, status hook `/status`.
pub fn launch(server: &HookServer) -> Launch {
    let mut sip = SipInfo {
        method: Some("INVITE".into()),
        uri: Some("sip:+4930123@hookflash".into()),
        ..SipInfo::default()
    };
    sip.headers.insert("x-carrier".into(), Value::from("acme"));
    Launch {
        call: call_ref(),
        hooks: AppHooks {
            call_hook: Hook::post(&server.url("/call")),
            call_status_hook: Some(Hook::post(&server.url("/status"))),
            fallback: None,
        },
        webhook_secret: SECRET.into(),
        fields: CallFields {
            call_sid: "cs-1".into(),
            direction: Direction::Inbound,
            from: "+4915111".into(),
            to: "+4930123".into(),
            call_id: "abc@10.0.0.1".into(),
            sip_status: 100,
            sip_reason: Some("Trying".into()),
            call_status: CallStatus::Trying,
            account_sid: "acc-sid".into(),
            application_sid: "app-sid".into(),
            sip: Some(sip),
            ..CallFields::default()
        },
        language: crate::app::Language::Jambonz,
    }
}
