//! `dial`: calls one or more targets and connects the first to answer with the caller; when
//! the dialled party leaves (or none is reached) the application goes on, after the
//! `actionHook` has the outcome: `dial_call_status` (completed, busy, no-answer, failed),
//! `dial_call_sid`, `dial_sip_status`, `dial_call_duration` (and `duration`, the same:
//! seconds connected).
//!
//! - Targets: `{type: "phone", number}`, `{type: "user", name: "101@realm"}` (the extension
//!   before `@`), `{type: "sip", sipUri}` (its user part, within the account). All are rung
//!   at once; the first to answer is connected, the others get CANCEL. A target that cannot
//!   be reached is reported and left out.
//! - The connected leg is a child call: its own sid (`dial_call_sid`), listed by the jambonz
//!   API with `parent_call_sid`; the call_status_hook gets its `in-progress` and `completed`.
//! - `headers`: extra SIP headers on every INVITE (the server's own — Via, From, To, Call-ID,
//!   CSeq, Contact, Content-*, ... — cannot be given: the dial fails as `failed`).
//! - `timeLimit`: the longest time connected (seconds); then the dialled party is hung up.
//! - `callerId`: the number the target sees (one of the account's numbers or extensions);
//!   `timeout` (default 60 s) how long it rings. The caller hears ringback meanwhile.
//! - `dtmfCapture` (a list of key sequences, or `{parentCall: [...], childCall: [...]}`) and
//!   `dtmfHook`: when either party keys in a sequence while connected, `dtmfHook` gets
//!   `dtmf` (the sequence) and `dtmf_call_sid` (the leg that pressed it); its answer is not
//!   run (the dial goes on).
//! - `listen`: streams the bridged call's audio to a WebSocket (as the `listen` verb, no
//!   actionHook) while connected.
//! - `answerOnBridge`: a caller not answered yet stays ringing while the targets ring and is
//!   answered (200 with our SDP, codec matched to the target's) at the moment one answers; if
//!   none does, it is still unanswered when the actionHook runs (the application may then
//!   decline it). Without it the caller is answered first and hears ringback.
//! - Each target rung is a child call from the start: the call_status_hook gets its
//!   `trying`, `ringing`, then `in-progress`/`completed` or `no-answer`/`busy`/`failed`, and the
//!   jambonz API lists it while it rings.
//! - Not run: `confirmHook`, `transcribe`: reported when present.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::{debug, info};

use super::common::{is_dtmf_key, seconds};
use super::{Listen, Props};
use crate::alert::AlertKind;
use crate::app::CallStatus;
use crate::control::{ControlError, DialProgress, DialRequest, PartyDtmf};
use crate::error::AppError;
use crate::exec::{Exec, Flow};
use crate::hook::HookSpec;

/// One party to dial.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum DialTarget {
    Phone {
        number: String,
    },
    User {
        name: String,
    },
    Sip {
        #[serde(rename = "sipUri")]
        sip_uri: String,
    },
}

impl DialTarget {
    /// What the engine dials: a number, an extension, or a SIP URI.
    pub fn dial_string(&self) -> String {
        match self {
            DialTarget::Phone { number } => number.trim().to_string(),
            DialTarget::User { name } => name
                .split_once('@')
                .map(|(user, _)| user)
                .unwrap_or(name)
                .trim()
                .to_string(),
            DialTarget::Sip { sip_uri } => sip_uri.trim().to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Dial {
    pub target: Vec<DialTarget>,
    #[serde(default)]
    pub action_hook: Option<HookSpec>,
    #[serde(default)]
    pub caller_id: Option<String>,
    #[serde(default)]
    pub timeout: Option<f64>,
    /// Longest time connected (seconds): then the dialled party is hung up.
    #[serde(default)]
    pub time_limit: Option<f64>,
    #[serde(default)]
    pub answer_on_bridge: Option<bool>,
    #[serde(default)]
    pub headers: Option<Map<String, Value>>,
    #[serde(default)]
    pub dtmf_capture: Option<DtmfCapture>,
    #[serde(default)]
    pub dtmf_hook: Option<HookSpec>,
    #[serde(default)]
    pub confirm_hook: Option<Value>,
    #[serde(default)]
    pub listen: Option<Box<Listen>>,
    #[serde(default)]
    pub transcribe: Option<Value>,
    /// RCML `record`: the call is recorded while dialled or connected; the action hook gets
    /// `recording_url` and `recording_duration`.
    #[serde(skip)]
    pub record: Option<DialRecord>,
}

/// `dtmfCapture`: key sequences for both parties, or per party.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum DtmfCapture {
    Both(Vec<String>),
    #[serde(rename_all = "camelCase")]
    PerParty {
        #[serde(default)]
        parent_call: Vec<String>,
        #[serde(default)]
        child_call: Vec<String>,
    },
}

/// Most `dtmfCapture` sequences, and their longest length.
const CAPTURE_MAX: usize = 20;
const CAPTURE_LEN_MAX: usize = 16;

impl DtmfCapture {
    fn patterns(&self, child: bool) -> &[String] {
        match self {
            DtmfCapture::Both(p) => p,
            DtmfCapture::PerParty {
                parent_call,
                child_call,
            } => {
                if child {
                    child_call
                } else {
                    parent_call
                }
            }
        }
    }

    fn check(&self) -> Result<(), String> {
        let all: Vec<&String> = match self {
            DtmfCapture::Both(p) => p.iter().collect(),
            DtmfCapture::PerParty {
                parent_call,
                child_call,
            } => parent_call.iter().chain(child_call).collect(),
        };
        if all.len() > CAPTURE_MAX {
            return Err(format!("dtmfCapture: at most {CAPTURE_MAX} sequences"));
        }
        for p in all {
            if p.is_empty() || p.len() > CAPTURE_LEN_MAX || !p.chars().all(is_dtmf_key) {
                return Err(format!(
                    "dtmfCapture: {p:?} is not 1-{CAPTURE_LEN_MAX} DTMF keys"
                ));
            }
        }
        Ok(())
    }
}

/// The keys a party pressed lately, matched against the capture sequences.
#[derive(Debug, Default)]
struct KeyBuffer(String);

impl KeyBuffer {
    /// Adds a key; the sequence it completes, if any (then the buffer starts over).
    fn push(&mut self, key: char, patterns: &[String]) -> Option<String> {
        self.0.push(key);
        if self.0.len() > CAPTURE_LEN_MAX {
            self.0.remove(0);
        }
        let hit = patterns.iter().find(|p| self.0.ends_with(p.as_str()))?;
        self.0.clear();
        Some(hit.clone())
    }
}

/// When a dial's recording starts (RCML `record`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialRecord {
    /// When the dialled party answers.
    FromAnswer,
    /// As soon as it is dialled.
    FromRinging,
}

const DEFAULT_TIMEOUT: f64 = 60.0;
/// Most targets rung at once.
const TARGETS_MAX: usize = hookflash_engine::apps::DIAL_TARGETS_MAX;

impl Props for Dial {
    fn check(&self) -> Result<(), String> {
        if self.target.is_empty() {
            return Err("target must name at least one party".into());
        }
        for t in &self.target {
            let s = t.dial_string();
            if s.is_empty() || s.len() > 256 {
                return Err(format!("target {t:?} is empty or too long"));
            }
        }
        if let Some(t) = self.timeout {
            seconds("timeout", t)?;
        }
        if let Some(t) = self.time_limit {
            seconds("timeLimit", t)?;
        }
        if self.target.len() > TARGETS_MAX {
            return Err(format!("at most {TARGETS_MAX} targets"));
        }
        if let Some(h) = &self.headers {
            if h.len() > hookflash_engine::apps::DIAL_HEADERS_MAX {
                return Err(format!(
                    "headers: at most {}",
                    hookflash_engine::apps::DIAL_HEADERS_MAX
                ));
            }
        }
        if let Some(c) = &self.dtmf_capture {
            c.check()?;
        }
        if let Some(l) = &self.listen {
            l.check().map_err(|e| format!("listen: {e}"))?;
        }
        Ok(())
    }
}

/// How the dial ended, for the actionHook.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    status: &'static str,
    sip_status: u16,
    call_sid: Option<String>,
    duration: u64,
}

fn failed_status(sip: u16) -> &'static str {
    match sip {
        486 | 600 | 603 => "busy",
        408 | 480 | 487 => "no-answer",
        _ => "failed",
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Dial {
    fn report_unsupported(&self, x: &Exec) {
        let mut unsupported = Vec::new();
        if self.confirm_hook.is_some() {
            unsupported.push("confirmHook");
        }
        if self.transcribe.is_some() {
            unsupported.push("transcribe");
        }
        if self.dtmf_capture.is_some() != self.dtmf_hook.is_some() {
            unsupported.push("dtmfCapture without dtmfHook (or the reverse)");
        }
        if !unsupported.is_empty() {
            x.alert(
                AlertKind::NotSupported,
                format!("dial: not supported, ignored: {}", unsupported.join(", ")),
            );
        }
    }

    /// The headers as (name, value); values that are not strings are written as JSON.
    fn header_list(&self) -> Vec<(String, String)> {
        self.headers
            .iter()
            .flatten()
            .map(|(k, v)| {
                let value = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), value)
            })
            .collect()
    }

    pub(crate) async fn exec(&self, x: &mut Exec) -> Result<Flow, AppError> {
        self.report_unsupported(x);
        if self.target.is_empty() {
            return Ok(Flow::Next);
        }
        let timeout = seconds("timeout", self.timeout.unwrap_or(DEFAULT_TIMEOUT))
            .unwrap_or(Duration::from_secs(60));
        // answerOnBridge: the caller is answered when a target answers (by the engine).
        let answer_on_bridge = self.answer_on_bridge == Some(true) && !x.session.is_answered();
        if !answer_on_bridge {
            x.answer().await?;
        }
        let mut recording = None;
        if self.record == Some(DialRecord::FromRinging) {
            recording = start_recording(x).await?;
        }
        let request = DialRequest {
            targets: self.target.iter().map(DialTarget::dial_string).collect(),
            caller_id: self.caller_id.clone(),
            timeout,
            headers: self.header_list(),
            answer_on_bridge,
        };
        // Keys of both parties, for dtmfCapture (subscribed before anything can be pressed).
        let mut keys = match (&self.dtmf_capture, &self.dtmf_hook) {
            (Some(_), Some(_)) => Some(x.ctl.call_dtmf(&x.call)),
            _ => None,
        };
        let outcome = match x.ctl.dial_many(&x.call, request).await {
            Ok(started) => {
                for (target, why) in &started.skipped {
                    x.alert(
                        AlertKind::CallControl,
                        format!("dial: target {target} left out: {why}"),
                    );
                }
                let mut children = Children::new(started.children);
                children.report_all(x, CallStatus::Trying, 100);
                self.follow(x, started.progress, children, &mut keys, &mut recording)
                    .await?
            }
            Err(ControlError::Gone) => return Err(x.call_ended().await.into()),
            Err(e) => {
                x.alert(AlertKind::NotSupported, format!("dial: {e}"));
                Outcome {
                    status: "failed",
                    sip_status: 404,
                    call_sid: None,
                    duration: 0,
                }
            }
        };
        x.drain_dtmf();
        let mut r = Map::new();
        r.insert("dial_call_status".into(), Value::from(outcome.status));
        r.insert("dial_sip_status".into(), Value::from(outcome.sip_status));
        if let Some(sid) = outcome.call_sid {
            r.insert("dial_call_sid".into(), Value::from(sid));
        }
        r.insert("dial_call_duration".into(), Value::from(outcome.duration));
        r.insert("duration".into(), Value::from(outcome.duration));
        if let Some(id) = recording {
            match x.ctl.record_stop(&x.call, &id).await {
                Ok(done) => {
                    if let Some(url) = x.recording_url(&done.id) {
                        r.insert("recording_url".into(), Value::from(url));
                    }
                    r.insert(
                        "recording_duration".into(),
                        Value::from((done.duration_ms + 500) / 1000),
                    );
                }
                Err(ControlError::Gone) => return Err(x.call_ended().await.into()),
                Err(e) => x.alert(AlertKind::CallControl, format!("dial: recording: {e}")),
            }
        }
        x.action(self.action_hook.as_ref(), r, "actionHook").await
    }

    /// Follows the dial until the party is not reached or has left; a nested `listen` runs
    /// while it is connected, captured keys go to the dtmfHook.
    async fn follow(
        &self,
        x: &mut Exec,
        mut progress: tokio::sync::mpsc::Receiver<DialProgress>,
        mut children: Children,
        keys: &mut Option<tokio::sync::mpsc::Receiver<PartyDtmf>>,
        recording: &mut Option<String>,
    ) -> Result<Outcome, AppError> {
        let mut answered_at: Option<Instant> = None;
        let mut call_sid: Option<String> = None;
        let limit = self
            .time_limit
            .filter(|t| *t > 0.0)
            .and_then(|t| seconds("timeLimit", t).ok());
        let mut limit_reached = false;
        let mut listen_stop: Option<oneshot::Sender<()>> = None;
        let listen_task = async {
            std::future::pending::<()>().await;
        };
        let mut nested: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> =
            Box::pin(listen_task);
        let mut nested_running = false;
        let mut parent_keys = KeyBuffer::default();
        let mut child_keys = KeyBuffer::default();
        let capture = self.dtmf_capture.clone();
        let outcome = loop {
            let cut_at = answered_at.zip(limit).map(|(at, l)| at + l);
            let next = tokio::select! {
                p = progress.recv() => p,
                _ = sleep_until(cut_at), if !limit_reached => {
                    // Its Completed progress follows.
                    limit_reached = true;
                    if let Err(e) = x.ctl.hangup_dialled(&x.call).await {
                        debug!(error = %e, "dial: hanging up at the time limit");
                    }
                    continue;
                }
                k = next_key(keys) => {
                    let Some(k) = k else { *keys = None; continue };
                    // Only while connected: keys to the application's prompts are not captured.
                    let Some(child) = call_sid.as_ref().filter(|_| answered_at.is_some()) else {
                        continue;
                    };
                    let is_child = k.leg_id == *child;
                    let (Some(capture), Some(hook)) = (&capture, &self.dtmf_hook) else { continue };
                    let buffer = if is_child { &mut child_keys } else { &mut parent_keys };
                    if let Some(seq) = buffer.push(k.digit, capture.patterns(is_child)) {
                        let mut r = Map::new();
                        r.insert("dtmf".into(), Value::from(seq.clone()));
                        r.insert("dtmf_call_sid".into(), Value::from(if is_child { child.clone() } else { x.session.call_sid() }));
                        r.insert("dial_call_sid".into(), Value::from(child.clone()));
                        info!(call_id = %x.call.call_id, sequence = %seq, child = is_child, "dial: dtmf captured");
                        // The dial goes on whatever the hook answers.
                        if let Err(e) = x.request(hook, r, "dtmfHook").await {
                            x.alert(AlertKind::WebhookFailure, format!("dial: dtmfHook: {e}"));
                        }
                    }
                    continue;
                }
                _ = &mut nested, if nested_running => {
                    nested_running = false;
                    continue;
                }
            };
            match next {
                Some(DialProgress::Ringing { leg_id }) => {
                    children.report(x, &leg_id, CallStatus::Ringing, 180);
                }
                Some(DialProgress::Answered { leg_id }) => {
                    answered_at = Some(Instant::now());
                    if !x.session.is_answered() {
                        // answerOnBridge: the engine answered the caller with the target.
                        x.session.answered();
                    }
                    x.session.set_child(Some(leg_id.clone()));
                    children.report(x, &leg_id, CallStatus::InProgress, 200);
                    // The others were cancelled.
                    children.report_all(x, CallStatus::NoAnswer, 487);
                    call_sid = Some(leg_id);
                    if self.record == Some(DialRecord::FromAnswer) {
                        *recording = start_recording(x).await?;
                    }
                    if let Some(listen) = &self.listen {
                        let (tx, rx) = oneshot::channel();
                        listen_stop = Some(tx);
                        let mut beside = x.beside();
                        nested = Box::pin(async move {
                            let reason = listen.run_beside(&mut beside, rx).await;
                            debug!(reason, "dial: nested listen ended");
                        });
                        nested_running = true;
                    }
                }
                Some(DialProgress::Failed { status }) => {
                    children.report_all(x, child_failure(status), status);
                    break Outcome {
                        status: failed_status(status),
                        sip_status: status,
                        call_sid: call_sid.clone(),
                        duration: 0,
                    };
                }
                Some(DialProgress::Completed { duration_secs }) => {
                    let duration = answered_at
                        .map(|t| t.elapsed().as_secs())
                        .unwrap_or(duration_secs);
                    break Outcome {
                        status: "completed",
                        sip_status: 200,
                        call_sid: call_sid.clone(),
                        duration,
                    };
                }
                // The caller's call ended meanwhile.
                None => {
                    x.session.set_child(None);
                    return Err(x.call_ended().await.into());
                }
            }
        };
        if let Some(stop) = listen_stop.take() {
            let _ = stop.send(());
        }
        if nested_running {
            nested.await;
        }
        x.session.set_child(None);
        if let (Some(sid), "completed") = (&outcome.call_sid, outcome.status) {
            let to = children.target(sid);
            x.session.report_child(
                sid,
                to.as_deref(),
                CallStatus::Completed,
                Some(outcome.duration),
            );
        }
        Ok(outcome)
    }
}

/// The parties a dial rings, as child calls: each one's status goes to the call_status_hook
/// once per status, until its final one.
struct Children {
    /// (child leg id, target, whether its final status was reported)
    all: Vec<(String, String, bool)>,
    last: std::collections::HashMap<String, CallStatus>,
}

impl Children {
    fn new(children: Vec<(String, String)>) -> Self {
        Children {
            all: children.into_iter().map(|(id, t)| (id, t, false)).collect(),
            last: std::collections::HashMap::new(),
        }
    }

    fn target(&self, leg_id: &str) -> Option<String> {
        self.all
            .iter()
            .find(|(id, _, _)| id == leg_id)
            .map(|(_, t, _)| t.clone())
    }

    /// Reports `status` for one child (not after its final status, not twice in a row).
    fn report(&mut self, x: &Exec, leg_id: &str, status: CallStatus, sip_status: u16) {
        let Some(entry) = self.all.iter_mut().find(|(id, _, _)| id == leg_id) else {
            return;
        };
        if entry.2 || self.last.get(leg_id) == Some(&status) {
            return;
        }
        let final_status = !matches!(
            status,
            CallStatus::Trying | CallStatus::Ringing | CallStatus::EarlyMedia | CallStatus::Queued
        );
        // in-progress is final for this list: completed is reported when the dial ends.
        entry.2 = final_status;
        self.last.insert(leg_id.to_string(), status);
        x.session
            .report_child_sip(leg_id, Some(&entry.1), status, sip_status, None);
    }

    /// Reports `status` for every child without a final status yet.
    fn report_all(&mut self, x: &Exec, status: CallStatus, sip_status: u16) {
        let ids: Vec<String> = self.all.iter().map(|(id, _, _)| id.clone()).collect();
        for id in ids {
            self.report(x, &id, status, sip_status);
        }
    }
}

/// The child status of a dial that reached nobody.
fn child_failure(sip: u16) -> CallStatus {
    match failed_status(sip) {
        "busy" => CallStatus::Busy,
        "no-answer" => CallStatus::NoAnswer,
        _ => CallStatus::Failed,
    }
}

async fn next_key(keys: &mut Option<tokio::sync::mpsc::Receiver<PartyDtmf>>) -> Option<PartyDtmf> {
    match keys {
        Some(k) => k.recv().await,
        None => std::future::pending().await,
    }
}

/// Starts the dial's recording; a failure is reported and the dial goes on unrecorded.
async fn start_recording(x: &mut Exec) -> Result<Option<String>, AppError> {
    match x.ctl.record_start(&x.call).await {
        Ok(id) => Ok(Some(id)),
        Err(ControlError::Gone) => Err(x.call_ended().await.into()),
        Err(e) => {
            x.alert(AlertKind::CallControl, format!("dial: cannot record: {e}"));
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn targets_read_as_jambonz_writes_them() {
        let d: Dial = serde_json::from_value(json!({
            "target": [
                {"type": "phone", "number": "+4930123456"},
                {"type": "user", "name": "202@acme.local"},
                {"type": "sip", "sipUri": "sip:203@acme.local"}
            ],
            "callerId": "+4930123456",
            "timeout": 20,
            "actionHook": "/dial-done"
        }))
        .unwrap();
        assert!(d.check().is_ok());
        let s: Vec<String> = d.target.iter().map(DialTarget::dial_string).collect();
        assert_eq!(s, ["+4930123456", "202", "sip:203@acme.local"]);
        assert_eq!(d.timeout, Some(20.0));
    }

    #[test]
    fn bad_dials_are_refused() {
        let empty: Dial = serde_json::from_value(json!({"target": []})).unwrap();
        assert!(empty.check().is_err());
        assert!(serde_json::from_value::<Dial>(json!({"target": [{"type": "teams"}]})).is_err());
        let neg: Dial = serde_json::from_value(
            json!({"target": [{"type": "phone", "number": "1"}], "timeout": -1}),
        )
        .unwrap();
        assert!(neg.check().is_err());
    }

    #[test]
    fn dtmf_capture_reads_both_forms_and_matches_sequences() {
        let d: Dial = serde_json::from_value(json!({
            "target": [{"type": "user", "name": "202"}],
            "dtmfCapture": ["*2", "#1"], "dtmfHook": "/dtmf",
            "listen": {"url": "ws://127.0.0.1:9/", "mixType": "stereo"},
            "headers": {"X-Customer": "42", "X-Num": 7}
        }))
        .unwrap();
        assert!(d.check().is_ok());
        assert_eq!(
            d.header_list(),
            [
                ("X-Customer".into(), "42".into()),
                ("X-Num".into(), "7".into())
            ]
        );
        let capture = d.dtmf_capture.clone().unwrap();
        assert_eq!(capture.patterns(true), ["*2", "#1"]);
        let mut keys = KeyBuffer::default();
        assert_eq!(keys.push('1', capture.patterns(false)), None);
        assert_eq!(keys.push('*', capture.patterns(false)), None);
        assert_eq!(
            keys.push('2', capture.patterns(false)).as_deref(),
            Some("*2")
        );
        // The buffer starts over after a match.
        assert_eq!(keys.push('2', capture.patterns(false)), None);

        let per: Dial = serde_json::from_value(json!({
            "target": [{"type": "user", "name": "202"}],
            "dtmfCapture": {"parentCall": ["*9"], "childCall": ["0"]}, "dtmfHook": "/d"
        }))
        .unwrap();
        let c = per.dtmf_capture.unwrap();
        assert_eq!(
            (c.patterns(false), c.patterns(true)),
            (&["*9".to_string()][..], &["0".to_string()][..])
        );

        let bad: Dial = serde_json::from_value(json!({
            "target": [{"type": "user", "name": "202"}], "dtmfCapture": ["*x"]
        }))
        .unwrap();
        assert!(bad.check().is_err());
        let bad_listen: Dial = serde_json::from_value(json!({
            "target": [{"type": "user", "name": "202"}], "listen": {"url": "http://x/"}
        }))
        .unwrap();
        assert!(bad_listen.check().is_err());
    }

    #[test]
    fn failures_map_to_jambonz_statuses() {
        assert_eq!(failed_status(486), "busy");
        assert_eq!(failed_status(480), "no-answer");
        assert_eq!(failed_status(487), "no-answer");
        assert_eq!(failed_status(503), "failed");
    }
}
