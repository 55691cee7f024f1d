//! `dial`: calls a target and connects it with the caller; when the dialled party leaves (or
//! is not reached) the application goes on, after the `actionHook` has the outcome:
//! `dial_call_status` (completed, busy, no-answer, failed), `dial_call_sid`, `dial_sip_status`
//! and `duration` (seconds connected).
//!
//! - Targets: `{type: "phone", number}`, `{type: "user", name: "101@realm"}` (the extension
//!   before `@`), `{type: "sip", sipUri}` (its user part, within the account). The first
//!   target is dialled; further ones (jambonz rings them all at once) are reported and left
//!   out.
//! - `timeLimit`: the longest time connected (seconds); then the dialled party is hung up.
//! - `callerId`: the number the target sees (one of the account's numbers or extensions);
//!   `timeout` (default 60 s) how long it rings. The caller hears ringback meanwhile.
//! - Not run yet: `headers`, `answerOnBridge` (the caller is answered first), `dtmfCapture`/
//!   `dtmfHook`, `confirmHook`, `listen`, `transcribe`: reported when present.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::time::Instant;
use tracing::debug;

use super::common::seconds;
use super::Props;
use crate::alert::AlertKind;
use crate::control::{ControlError, DialProgress};
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
    pub dtmf_capture: Option<Value>,
    #[serde(default)]
    pub dtmf_hook: Option<Value>,
    #[serde(default)]
    pub confirm_hook: Option<Value>,
    #[serde(default)]
    pub listen: Option<Value>,
    #[serde(default)]
    pub transcribe: Option<Value>,
    /// RCML `record`: the call is recorded while dialled or connected; the action hook gets
    /// `recording_url` and `recording_duration`.
    #[serde(skip)]
    pub record: Option<DialRecord>,
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
        if self.target.len() > 1 {
            unsupported.push("more than one target (only the first is dialled)");
        }
        if self.headers.as_ref().is_some_and(|h| !h.is_empty()) {
            unsupported.push("headers");
        }
        if self.answer_on_bridge == Some(true) {
            unsupported.push("answerOnBridge");
        }
        if self.dtmf_capture.is_some() || self.dtmf_hook.is_some() {
            unsupported.push("dtmfCapture/dtmfHook");
        }
        if self.confirm_hook.is_some() {
            unsupported.push("confirmHook");
        }
        if self.listen.is_some() || self.transcribe.is_some() {
            unsupported.push("listen/transcribe");
        }
        if !unsupported.is_empty() {
            x.alert(
                AlertKind::NotSupported,
                format!("dial: not supported yet: {}", unsupported.join(", ")),
            );
        }
    }

    pub(crate) async fn exec(&self, x: &mut Exec) -> Result<Flow, AppError> {
        self.report_unsupported(x);
        let Some(first) = self.target.first() else {
            return Ok(Flow::Next);
        };
        let timeout = seconds("timeout", self.timeout.unwrap_or(DEFAULT_TIMEOUT))
            .unwrap_or(Duration::from_secs(60));
        x.answer().await?;
        let mut recording = None;
        if self.record == Some(DialRecord::FromRinging) {
            recording = start_recording(x).await?;
        }
        let outcome = match x
            .ctl
            .dial(
                &x.call,
                &first.dial_string(),
                self.caller_id.clone(),
                timeout,
            )
            .await
        {
            Ok(mut progress) => {
                let mut answered_at: Option<Instant> = None;
                let mut call_sid = None;
                let limit = self
                    .time_limit
                    .filter(|t| *t > 0.0)
                    .and_then(|t| seconds("timeLimit", t).ok());
                let mut limit_reached = false;
                loop {
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
                    };
                    match next {
                        Some(DialProgress::Ringing) => {}
                        Some(DialProgress::Answered { leg_id }) => {
                            answered_at = Some(Instant::now());
                            call_sid = Some(leg_id);
                            if self.record == Some(DialRecord::FromAnswer) {
                                recording = start_recording(x).await?;
                            }
                        }
                        Some(DialProgress::Failed { status }) => {
                            break Outcome {
                                status: failed_status(status),
                                sip_status: status,
                                call_sid,
                                duration: 0,
                            }
                        }
                        Some(DialProgress::Completed { duration_secs }) => {
                            let duration = answered_at
                                .map(|t| t.elapsed().as_secs())
                                .unwrap_or(duration_secs);
                            break Outcome {
                                status: "completed",
                                sip_status: 200,
                                call_sid,
                                duration,
                            };
                        }
                        // The caller's call ended meanwhile.
                        None => return Err(x.call_ended().await.into()),
                    }
                }
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
        let mut r = Map::new();
        r.insert("dial_call_status".into(), Value::from(outcome.status));
        r.insert("dial_sip_status".into(), Value::from(outcome.sip_status));
        if let Some(sid) = outcome.call_sid {
            r.insert("dial_call_sid".into(), Value::from(sid));
        }
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
    fn failures_map_to_jambonz_statuses() {
        assert_eq!(failed_status(486), "busy");
        assert_eq!(failed_status(480), "no-answer");
        assert_eq!(failed_status(487), "no-answer");
        assert_eq!(failed_status(503), "failed");
    }
}
