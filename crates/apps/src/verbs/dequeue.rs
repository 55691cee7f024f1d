//! `dequeue`: takes the caller at the head of a named queue of the account (or the one whose
//! call_sid is `callSid`) and connects it with this call: both legs join a two-party bridge
//! (see docs/architecture.md, "Queues"), with a `beep` as they are connected if asked. With
//! an empty queue it waits up to `timeout` seconds (default: forever) for a caller.
//!
//! When the bridge ends (either side hung up or left) or nobody came, the `actionHook` gets
//! `dequeue_result` — `complete` (bridged, then ended), `timeout` (nobody came), `error`
//! (the caller could not be joined) — with `queue_sid`, and for a bridged caller
//! `dequeued_call_sid` and `queue_time` (seconds it waited); its answer replaces the rest of
//! the list, or the application goes on.
//!
//! Difference from jambonz: the beep is heard by both parties (it is the bridge's join beep).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};
use tracing::info;

use super::common::seconds;
use super::conference::LeaveGuard;
use super::enqueue::{check_queue_name, detached_action, LateAction};
use super::Props;
use crate::alert::AlertKind;
use crate::control::{ConferenceJoin, ControlError};
use crate::error::AppError;
use crate::exec::{Exec, Flow};
use crate::hook::HookSpec;

/// Bridges made by this process (part of their names).
static BRIDGES: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Dequeue {
    pub name: String,
    #[serde(default)]
    pub call_sid: Option<String>,
    #[serde(default)]
    pub action_hook: Option<HookSpec>,
    #[serde(default)]
    pub beep: bool,
    /// Seconds to wait on an empty queue (absent: forever).
    #[serde(default)]
    pub timeout: Option<f64>,
}

impl Props for Dequeue {
    fn check(&self) -> Result<(), String> {
        check_queue_name(&self.name)?;
        if let Some(t) = self.timeout {
            seconds("timeout", t)?;
        }
        if self.call_sid.as_deref().is_some_and(str::is_empty) {
            return Err("callSid must not be empty".into());
        }
        Ok(())
    }
}

/// How a dequeue ended (`dequeue_result`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DequeueResult {
    Complete,
    Timeout,
    Error,
}

impl DequeueResult {
    pub fn as_str(self) -> &'static str {
        match self {
            DequeueResult::Complete => "complete",
            DequeueResult::Timeout => "timeout",
            DequeueResult::Error => "error",
        }
    }
}

impl Dequeue {
    fn timeout(&self) -> Option<Duration> {
        self.timeout.and_then(|t| seconds("timeout", t).ok())
    }

    pub(crate) async fn exec(&self, x: &mut Exec) -> Result<Flow, AppError> {
        x.answer().await?;
        let n = BRIDGES.fetch_add(1, Ordering::Relaxed);
        let bridge = format!("queue-bridge-{n}-{}", short(&x.call.leg_id));
        let by = x.session.call_sid();
        let mut fields = Map::new();
        fields.insert(
            "queue_sid".into(),
            Value::from(format!("queue:{}:{}", x.call.account_id, self.name)),
        );
        let taken = x
            .ctl
            .queue_dequeue(
                &x.call,
                &self.name,
                self.call_sid.as_deref(),
                self.timeout(),
                &bridge,
                &by,
            )
            .await;
        let result = match taken {
            Ok(None) => {
                info!(call_id = %x.call.call_id, queue = %self.name, "dequeue: nobody came");
                DequeueResult::Timeout
            }
            Err(ControlError::Gone) => return Err(ControlError::Gone.into()),
            Err(e) => {
                x.alert(
                    AlertKind::CallControl,
                    format!("dequeue {:?}: {e}", self.name),
                );
                DequeueResult::Error
            }
            Ok(Some(caller)) => {
                fields.insert(
                    "dequeued_call_sid".into(),
                    Value::from(caller.call_sid.clone()),
                );
                fields.insert("queue_time".into(), Value::from(caller.waited.as_secs()));
                info!(call_id = %x.call.call_id, queue = %self.name, caller = %caller.call_sid,
                    "dequeue: connecting the caller");
                let mut late = fields.clone();
                late.insert(
                    "dequeue_result".into(),
                    Value::from(DequeueResult::Complete.as_str()),
                );
                // The call ends while bridged: the actionHook still gets `complete`.
                let mut guard =
                    LateAction::new(x, self.action_hook.clone(), "actionHook", move |_| {
                        late.clone()
                    });
                let r = self.bridge(x, &bridge).await;
                guard.disarm();
                match r {
                    Ok(()) => DequeueResult::Complete,
                    Err(AppError::Control(ControlError::Gone)) => {
                        return Err(ControlError::Gone.into())
                    }
                    Err(e) => {
                        x.alert(
                            AlertKind::CallControl,
                            format!("dequeue {:?}: cannot join the caller: {e}", self.name),
                        );
                        DequeueResult::Error
                    }
                }
            }
        };
        fields.insert("dequeue_result".into(), Value::from(result.as_str()));
        detached_action(x, self.action_hook.as_ref(), fields).await
    }

    /// Joins the bridge the taken caller is in, and stays until it ends.
    async fn bridge(&self, x: &mut Exec, bridge: &str) -> Result<(), AppError> {
        x.stop_play().await;
        let join = ConferenceJoin {
            name: bridge.to_string(),
            muted: false,
            beep: self.beep,
            end_on_exit: true,
            start_on_enter: true,
            max_participants: Some(2),
            record: false,
        };
        let mut joined = x.ctl.conference_join(&x.call, join).await?;
        let mut guard = LeaveGuard::new(x.ctl.clone(), x.call.clone());
        // The channel closes after our leave or the bridge's end.
        while joined.notes.recv().await.is_some() {}
        guard.disarm();
        info!(call_id = %x.call.call_id, queue = %self.name, "dequeue: the bridge has ended");
        Ok(())
    }
}

/// The first characters of an id, kept to what a conference name allows.
fn short(id: &str) -> String {
    id.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(12)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verbs::Verb;
    use serde_json::json;

    #[test]
    fn reads_the_jambonz_options_and_refuses_bad_ones() {
        let v = Verb::parse(&json!({"verb": "dequeue", "name": "support", "beep": true,
            "timeout": 5, "actionHook": "/done", "callSid": "abc"}))
        .unwrap();
        let Verb::Dequeue(d) = v else {
            panic!("not a dequeue: {v:?}");
        };
        assert!(d.beep);
        assert_eq!(d.timeout(), Some(Duration::from_secs(5)));
        assert_eq!(d.call_sid.as_deref(), Some("abc"));
        let Ok(Verb::Dequeue(d)) = Verb::parse(&json!({"verb": "dequeue", "name": "q"})) else {
            panic!("a bare dequeue is refused");
        };
        assert_eq!(d.timeout(), None);
        assert!(!d.beep);
        for bad in [
            json!({"verb": "dequeue"}),
            json!({"verb": "dequeue", "name": "a/b"}),
            json!({"verb": "dequeue", "name": "q", "timeout": -1}),
            json!({"verb": "dequeue", "name": "q", "beep": "yes"}),
            json!({"verb": "dequeue", "name": "q", "callSid": ""}),
        ] {
            assert!(Verb::parse(&bad).is_err(), "{bad}");
        }
        assert_eq!(short("1a2b-3c4d-5e6f-7a8b-9c0d"), "1a2b3c4d5e6f");
    }
}
