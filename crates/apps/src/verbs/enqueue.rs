//! `enqueue`: the caller waits in a named queue of the account (made on first use) until a
//! `dequeue` on another call takes it, it leaves (`leave` in the waitHook's answer), or it
//! hangs up. Meanwhile it hears the server's music on hold, or, with a `waitHook`, what the
//! hook answers: its `say`, `play` and `pause` verbs are run in order and the hook is asked
//! again when they end (with `queue_position`, `queue_size`, `queue_time`, `queue_sid`).
//! Other verbs in that answer are reported and skipped. A round that takes (almost) no time
//! — a hook that answers nothing at once, or fails — is followed by a growing pause, so the
//! loop cannot spin.
//!
//! Taken by a dequeuer, the caller joins the two-party bridge the dequeuer names (see
//! docs/architecture.md, "Queues") and stays until either side leaves; then the actionHook
//! gets `queue_result` `bridged`. The actionHook's fields, as jambonz sends them:
//! `queue_sid`, `queue_result` (`bridged`, `leave`, `hangup`, `error`), `queue_time`
//! (seconds in the queue), `queue_size` (callers left), `queue_position` (where it was when
//! it left). A caller that hangs up while waiting leaves the queue, and the actionHook still
//! gets `hangup` (nothing runs after it). `priority` (0-999, lower first; FIFO within one) as
//! jambonz has it. A full queue (or too many queues) is `error`, with `queue_error` saying
//! why.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::conference::LeaveGuard;
use super::{Props, Verb};
use crate::alert::AlertKind;
use crate::control::{ConferenceJoin, ConferenceNoteKind, ControlError, PlayEnd, QueueOffer};
use crate::error::AppError;
use crate::exec::{Exec, Flow};
use crate::hook::{Answer, HookSpec};

/// The highest priority number (jambonz: 0-999).
const MAX_PRIORITY: u16 = 999;
/// A wait round shorter than this is followed by a pause (growing up to [`MAX_BACKOFF`]).
const SHORT_ROUND: Duration = Duration::from_secs(1);
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How long a dropped queue verb waits for the engine to forget its ended call, and how
/// often it looks.
const GONE_WAIT: Duration = Duration::from_secs(2);
const GONE_POLL: Duration = Duration::from_millis(20);
/// How long a caller that joined the bridge waits, alone, for its dequeuer.
const PARTNER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Enqueue {
    pub name: String,
    #[serde(default)]
    pub priority: Option<u16>,
    #[serde(default)]
    pub action_hook: Option<HookSpec>,
    #[serde(default)]
    pub wait_hook: Option<HookSpec>,
}

/// A queue name: 1-64 letters, digits, '-', '_' or '.'.
pub(crate) fn check_queue_name(n: &str) -> Result<(), String> {
    if n.is_empty()
        || n.len() > 64
        || !n
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err("name must be 1-64 of letters, digits, '-', '_' or '.'".into());
    }
    Ok(())
}

impl Props for Enqueue {
    fn check(&self) -> Result<(), String> {
        check_queue_name(&self.name)?;
        if self.priority.is_some_and(|p| p > MAX_PRIORITY) {
            return Err(format!("priority must be 0-{MAX_PRIORITY}"));
        }
        Ok(())
    }
}

/// Why the caller left the queue (`queue_result`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueResult {
    Bridged,
    Leave,
    Hangup,
    Error,
}

impl QueueResult {
    pub fn as_str(self) -> &'static str {
        match self {
            QueueResult::Bridged => "bridged",
            QueueResult::Leave => "leave",
            QueueResult::Hangup => "hangup",
            QueueResult::Error => "error",
        }
    }
}

/// How the wait loop ended by itself.
enum Waited {
    /// `leave` in the waitHook's answer.
    Leave,
}

/// The facts an actionHook reports.
struct Report {
    result: QueueResult,
    queue_sid: String,
    waited: Duration,
    size: usize,
    position: usize,
    error: Option<String>,
}

impl Report {
    fn fields(&self) -> Map<String, Value> {
        let mut f = Map::new();
        f.insert("queue_sid".into(), Value::from(self.queue_sid.clone()));
        f.insert("queue_result".into(), Value::from(self.result.as_str()));
        f.insert("queue_time".into(), Value::from(self.waited.as_secs()));
        f.insert("queue_size".into(), Value::from(self.size));
        f.insert("queue_position".into(), Value::from(self.position));
        if let Some(e) = &self.error {
            f.insert("queue_error".into(), Value::from(e.clone()));
        }
        f
    }
}

/// The actionHook of a verb dropped because its call ended (jambonz still reports a queue
/// verb's end then): armed, its drop sends `fields()` to the hook if the call is gone. The
/// answer is not run (nothing runs after the call's end).
/// The actionHook of a queue verb, requested in a task of its own: if the call ends while the
/// request is under way (the bridge ended because this call hung up), the run drops the verb
/// but the hook still gets its request (its answer is then not run).
pub(crate) async fn detached_action(
    x: &mut Exec,
    spec: Option<&HookSpec>,
    fields: Map<String, Value>,
) -> Result<Flow, AppError> {
    let Some(spec) = spec.cloned() else {
        return Ok(Flow::Next);
    };
    let mut bx = x.beside();
    let task = tokio::spawn(async move { bx.action(Some(&spec), fields, "actionHook").await });
    match task.await {
        Ok(r) => r,
        Err(e) => Err(AppError::Control(ControlError::Failed(format!(
            "actionHook task: {e}"
        )))),
    }
}

/// What a late actionHook reports, computed when it is sent.
type LateFields = Box<dyn Fn(&Exec) -> Map<String, Value> + Send + Sync>;

pub(crate) struct LateAction {
    x: Option<Exec>,
    hook: Option<HookSpec>,
    fields: LateFields,
    label: &'static str,
}

impl LateAction {
    pub(crate) fn new(
        x: &Exec,
        hook: Option<HookSpec>,
        label: &'static str,
        fields: impl Fn(&Exec) -> Map<String, Value> + Send + Sync + 'static,
    ) -> Self {
        LateAction {
            x: Some(x.beside()),
            hook,
            fields: Box::new(fields),
            label,
        }
    }

    pub(crate) fn set(
        &mut self,
        fields: impl Fn(&Exec) -> Map<String, Value> + Send + Sync + 'static,
    ) {
        self.fields = Box::new(fields);
    }

    pub(crate) fn disarm(&mut self) {
        self.x = None;
    }
}

impl Drop for LateAction {
    fn drop(&mut self) {
        let Some(mut x) = self.x.take() else {
            return;
        };
        // Computed now (a queue is left by the fields' function where it applies).
        let fields = (self.fields)(&x);
        let Some(hook) = self.hook.take() else {
            return;
        };
        let label = self.label;
        tokio::spawn(async move {
            // The run drops verbs when the call ends, or on a redirect. The engine forgets an
            // ended call just after announcing its end: give it a moment.
            let gone = async {
                while !x.ctl.is_gone(&x.call) {
                    tokio::time::sleep(GONE_POLL).await;
                }
            };
            if tokio::time::timeout(GONE_WAIT, gone).await.is_err() {
                debug!(call_id = %x.call.call_id, label, "queue verb dropped (redirect)");
                return;
            }
            if let Err(e) = x.request(&hook, fields, label).await {
                warn!(call_id = %x.call.call_id, error = %e, label, "late actionHook failed");
            }
        });
    }
}

impl Enqueue {
    pub(crate) async fn exec(&self, x: &mut Exec) -> Result<Flow, AppError> {
        x.answer().await?;
        let priority = self.priority.unwrap_or(MAX_PRIORITY);
        let queued = match x.ctl.queue_enqueue(&x.call, &self.name, priority).await {
            Ok(q) => q,
            Err(ControlError::Gone) => return Err(ControlError::Gone.into()),
            Err(e) => {
                x.alert(
                    AlertKind::CallControl,
                    format!("enqueue {:?}: cannot wait in the queue: {e}", self.name),
                );
                let report = Report {
                    result: QueueResult::Error,
                    queue_sid: format!("queue:{}:{}", x.call.account_id, self.name),
                    waited: Duration::ZERO,
                    size: x.ctl.queue_size(&x.call, &self.name),
                    position: 0,
                    error: Some(e.to_string()),
                };
                return x
                    .action(self.action_hook.as_ref(), report.fields(), "actionHook")
                    .await;
            }
        };
        info!(call_id = %x.call.call_id, queue = %self.name, position = queued.position,
            size = queued.size, "the caller waits in the queue");
        let since = Instant::now();
        let (sid, name) = (queued.queue_sid.clone(), self.name.clone());
        let first_position = queued.position;
        let mut guard = LateAction::new(x, self.action_hook.clone(), "actionHook", move |x| {
            // The call ended while it waited: out of the queue, `hangup`.
            x.ctl.queue_leave(&x.call);
            Report {
                result: QueueResult::Hangup,
                queue_sid: sid.clone(),
                waited: since.elapsed(),
                size: x.ctl.queue_size(&x.call, &name),
                position: first_position,
                error: None,
            }
            .fields()
        });
        let mut position = queued.position;
        let mut offers = queued.offers;
        let outcome = {
            let wait = self.wait(x, &queued.queue_sid, since, &mut position);
            tokio::pin!(wait);
            tokio::select! {
                biased;
                offer = &mut offers => match offer {
                    Ok(offer) => Ok(Some(offer)),
                    // Taken out without an offer: only the engine's watch of the call's end
                    // does that.
                    Err(_) => Err(ControlError::Gone.into()),
                },
                r = &mut wait => r.map(|Waited::Leave| None),
            }
        };
        let waited = since.elapsed();
        let report = |result, error| Report {
            result,
            queue_sid: queued.queue_sid.clone(),
            waited,
            size: 0,
            position,
            error,
        };
        let mut report = match outcome {
            Err(e) => {
                // The call ended (the guard reports it) or a control failure.
                if matches!(e, AppError::Control(ControlError::Gone)) {
                    return Err(e);
                }
                guard.disarm();
                x.ctl.queue_leave(&x.call);
                x.alert(
                    AlertKind::CallControl,
                    format!("enqueue {:?}: waiting failed: {e}", self.name),
                );
                report(QueueResult::Error, Some(e.to_string()))
            }
            Ok(None) => {
                guard.disarm();
                x.ctl.queue_leave(&x.call);
                x.stop_play().await;
                info!(call_id = %x.call.call_id, queue = %self.name, "the caller left the queue");
                report(QueueResult::Leave, None)
            }
            Ok(Some(offer)) => {
                let sid = queued.queue_sid.clone();
                guard.set(move |_| {
                    // The call ended while bridged: `bridged`.
                    Report {
                        result: QueueResult::Bridged,
                        queue_sid: sid.clone(),
                        waited,
                        size: 0,
                        position,
                        error: None,
                    }
                    .fields()
                });
                let r = self.bridged(x, offer).await;
                guard.disarm();
                match r {
                    Ok(()) => report(QueueResult::Bridged, None),
                    Err(AppError::Control(ControlError::Gone)) => {
                        return Err(ControlError::Gone.into())
                    }
                    Err(e) => report(QueueResult::Error, Some(e.to_string())),
                }
            }
        };
        report.size = x.ctl.queue_size(&x.call, &self.name);
        detached_action(x, self.action_hook.as_ref(), report.fields()).await
    }

    /// Joins the bridge a dequeuer offered, accepts, and stays until either side leaves.
    async fn bridged(&self, x: &mut Exec, offer: QueueOffer) -> Result<(), AppError> {
        let QueueOffer {
            bridge,
            by_call_sid,
            accept,
        } = offer;
        x.stop_play().await;
        let join = ConferenceJoin {
            name: bridge.clone(),
            muted: false,
            beep: false,
            end_on_exit: true,
            start_on_enter: true,
            max_participants: Some(2),
            record: false,
        };
        let mut joined = match x.ctl.conference_join(&x.call, join).await {
            Ok(j) => j,
            Err(e) => {
                let _ = accept.send(false);
                x.alert(
                    AlertKind::CallControl,
                    format!("enqueue {:?}: cannot join the dequeuer: {e}", self.name),
                );
                return Err(e.into());
            }
        };
        let mut leave = LeaveGuard::new(x.ctl.clone(), x.call.clone());
        if accept.send(true).is_err() {
            // The dequeuer has gone meanwhile.
            return Err(ControlError::Failed("the dequeuer has gone".into()).into());
        }
        info!(call_id = %x.call.call_id, queue = %self.name, by = %by_call_sid,
            "the queued caller is bridged");
        let mine = x.call.leg_id.clone();
        let deadline = Instant::now() + PARTNER_TIMEOUT;
        let mut partnered = false;
        loop {
            let note = if partnered {
                joined.notes.recv().await
            } else {
                tokio::select! {
                    n = joined.notes.recv() => n,
                    _ = tokio::time::sleep_until(deadline) => {
                        return Err(ControlError::Failed(
                            "the dequeuer did not join the bridge".into()).into());
                    }
                }
            };
            let Some(note) = note else { break };
            let theirs = note.leg_id.as_deref().is_some_and(|l| l != mine);
            match note.kind {
                ConferenceNoteKind::Join if theirs => partnered = true,
                ConferenceNoteKind::Leave if !theirs && note.leg_id.is_some() => leave.disarm(),
                ConferenceNoteKind::Join
                | ConferenceNoteKind::Leave
                | ConferenceNoteKind::Start
                | ConferenceNoteKind::End => {}
            }
        }
        leave.disarm();
        info!(call_id = %x.call.call_id, queue = %self.name, "the bridge has ended");
        Ok(())
    }

    /// Plays the wait audio until dropped (taken by a dequeuer) or `leave`.
    async fn wait(
        &self,
        x: &mut Exec,
        queue_sid: &str,
        since: Instant,
        position: &mut usize,
    ) -> Result<Waited, AppError> {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let round = Instant::now();
            match &self.wait_hook {
                None => {
                    let rx = x.ctl.play_music(&x.call).await?;
                    match rx.await.unwrap_or(PlayEnd::CallEnded) {
                        PlayEnd::Finished | PlayEnd::Stopped => {}
                        PlayEnd::CallEnded => return Err(x.call_ended().await.into()),
                    }
                }
                Some(hook) => {
                    if let Some(Waited::Leave) =
                        self.wait_round(x, hook, queue_sid, since, position).await?
                    {
                        return Ok(Waited::Leave);
                    }
                }
            }
            if round.elapsed() < SHORT_ROUND {
                debug!(call_id = %x.call.call_id, pause_ms = backoff.as_millis() as u64,
                    "a wait round took no time: pausing");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            } else {
                backoff = FIRST_BACKOFF;
            }
        }
    }

    /// One request of the waitHook and its verbs.
    async fn wait_round(
        &self,
        x: &mut Exec,
        hook: &HookSpec,
        queue_sid: &str,
        since: Instant,
        position: &mut usize,
    ) -> Result<Option<Waited>, AppError> {
        let (pos, size) = x
            .ctl
            .queue_position(&x.call, &self.name)
            .unwrap_or((*position, 0));
        *position = pos;
        let mut fields = Map::new();
        fields.insert("queue_sid".into(), Value::from(queue_sid));
        fields.insert("queue_position".into(), Value::from(pos));
        fields.insert("queue_size".into(), Value::from(size));
        fields.insert("queue_time".into(), Value::from(since.elapsed().as_secs()));
        let script = match x.request(hook, fields, "waitHook").await {
            Ok(Answer::Verbs(script)) => script,
            Ok(Answer::Nothing(what)) => {
                debug!(call_id = %x.call.call_id, "waitHook: {what}");
                return Ok(None);
            }
            Err(e) => {
                x.alert(AlertKind::WebhookFailure, format!("waitHook: {e}"));
                return Ok(None);
            }
        };
        for verb in script {
            match verb {
                Ok(Verb::Say(v)) => {
                    v.exec(x).await?;
                }
                Ok(Verb::Play(v)) => {
                    v.exec(x).await?;
                }
                Ok(Verb::Pause(v)) => {
                    v.exec(x).await?;
                }
                Ok(Verb::Leave(_)) => return Ok(Some(Waited::Leave)),
                Ok(other) => x.alert(
                    AlertKind::NotSupported,
                    format!(
                        "waitHook: verb {:?} is not allowed while queued (say, play, pause, \
                         leave); skipped",
                        other.name()
                    ),
                ),
                Err(e) => x.alert(AlertKind::InvalidVerb, format!("waitHook: {e}; skipped")),
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_the_jambonz_options_and_refuses_bad_ones() {
        let v = Verb::parse(&json!({"verb": "enqueue", "name": "support",
            "actionHook": "/after", "waitHook": "/wait", "priority": 5}))
        .unwrap();
        let Verb::Enqueue(e) = v else {
            panic!("not an enqueue: {v:?}");
        };
        assert_eq!(e.name, "support");
        assert_eq!(e.priority, Some(5));
        assert!(e.wait_hook.is_some() && e.action_hook.is_some());
        for bad in [
            json!({"verb": "enqueue"}),
            json!({"verb": "enqueue", "name": ""}),
            json!({"verb": "enqueue", "name": "a b"}),
            json!({"verb": "enqueue", "name": "q", "priority": 1000}),
            json!({"verb": "enqueue", "name": "q", "priority": -1}),
            json!({"verb": "enqueue", "name": "q", "waitHook": 5}),
        ] {
            assert!(Verb::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_report_has_jambonz_field_names() {
        let r = Report {
            result: QueueResult::Hangup,
            queue_sid: "queue:a:support".into(),
            waited: Duration::from_millis(2500),
            size: 1,
            position: 2,
            error: None,
        };
        let f = r.fields();
        assert_eq!(f["queue_result"], "hangup");
        assert_eq!(f["queue_time"], 2);
        assert_eq!(f["queue_size"], 1);
        assert_eq!(f["queue_position"], 2);
        assert_eq!(f["queue_sid"], "queue:a:support");
        assert!(!f.contains_key("queue_error"));
    }
}
