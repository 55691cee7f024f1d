//! `conference`: the caller joins a named conference of the account (made on the first join)
//! and stays until it leaves: taken out by the API (native or jambonz REST), the conference
//! ends (another participant with `endConferenceOnExit` left), or the caller hangs up. Then
//! the `actionHook` is requested and its answer replaces the rest of the list (or the
//! application goes on). A REST `call_hook` redirect drops the verb: its guard takes the leg
//! out of the conference and the new application runs (where `leave` is a no-op).
//!
//! Options as jambonz has them: `name`, `beep`, `startConferenceOnEnter` (false: wait,
//! hearing music, until a participant that starts it joins), `endConferenceOnExit`,
//! `maxParticipants`, `joinMuted`; `waitHook` is not requested: the waiting caller hears the
//! server's music on hold instead. `statusHook` with `statusEvents` (`start`, `end`, `join`,
//! `leave`; `start-talking`/`stop-talking` are accepted and never sent) gets this participant's
//! events, as jambonz sends them: `event`, `time` (ISO 8601), `members`, `duration` (seconds
//! since the conference started), `conference_sid` (`conf:<account_sid>:<name>`) and
//! `friendly_name`, with the call's fields.
//! Accepted and ignored: `memberTag`, `speakOnlyTo`, `enterHook`, `endHook`, `record`,
//! `listen`, `distributeDtmf`, `endConferenceDuration`.

use serde::Deserialize;
use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tracing::{debug, info, warn};

use super::Props;
use crate::alert::AlertKind;
use crate::control::{CallControl, CallRef, ConferenceJoin, ConferenceNote, ConferenceNoteKind};
use crate::error::AppError;
use crate::exec::{Exec, Flow};
use crate::hook::HookSpec;

/// The most participants a conference takes (the engine's limit).
const MAX_PARTICIPANTS: u32 = 50;

/// Status events an application can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StatusEvent {
    Start,
    End,
    Join,
    Leave,
    StartTalking,
    StopTalking,
}

impl StatusEvent {
    fn as_str(self) -> &'static str {
        match self {
            StatusEvent::Start => "start",
            StatusEvent::End => "end",
            StatusEvent::Join => "join",
            StatusEvent::Leave => "leave",
            StatusEvent::StartTalking => "start-talking",
            StatusEvent::StopTalking => "stop-talking",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Conference {
    pub name: String,
    #[serde(default)]
    pub beep: bool,
    #[serde(default)]
    pub start_conference_on_enter: Option<bool>,
    #[serde(default)]
    pub end_conference_on_exit: bool,
    #[serde(default)]
    pub max_participants: Option<u32>,
    #[serde(default)]
    pub join_muted: bool,
    #[serde(default)]
    pub wait_hook: Option<HookSpec>,
    #[serde(default)]
    pub status_hook: Option<HookSpec>,
    #[serde(default)]
    pub status_events: Vec<StatusEvent>,
    #[serde(default)]
    pub action_hook: Option<HookSpec>,
    #[serde(default)]
    pub member_tag: Option<String>,
    #[serde(default)]
    pub speak_only_to: Option<String>,
    #[serde(default)]
    pub enter_hook: Option<HookSpec>,
    #[serde(default)]
    pub end_hook: Option<HookSpec>,
    #[serde(default)]
    pub record: Option<Value>,
    #[serde(default)]
    pub listen: Option<Value>,
    #[serde(default)]
    pub distribute_dtmf: Option<bool>,
    #[serde(default)]
    pub end_conference_duration: Option<f64>,
    /// RCML `<Conference record="record-from-start">`: the conference's mix is recorded from
    /// this join on (not a jambonz property; jambonz's `record` stays ignored).
    #[serde(skip)]
    pub record_from_start: bool,
}

impl Props for Conference {
    fn check(&self) -> Result<(), String> {
        let n = &self.name;
        if n.is_empty()
            || n.len() > 64
            || !n
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err("name must be 1-64 of letters, digits, '-', '_' or '.'".into());
        }
        if self
            .max_participants
            .is_some_and(|m| !(1..=MAX_PARTICIPANTS).contains(&m))
        {
            return Err(format!("maxParticipants must be 1-{MAX_PARTICIPANTS}"));
        }
        Ok(())
    }
}

/// Takes the leg out of the conference if the verb is dropped while it is in (a redirect,
/// the end of the run).
pub(crate) struct LeaveGuard {
    ctl: std::sync::Arc<dyn CallControl>,
    call: CallRef,
    armed: bool,
}

impl LeaveGuard {
    pub(crate) fn new(ctl: std::sync::Arc<dyn CallControl>, call: CallRef) -> Self {
        LeaveGuard {
            ctl,
            call,
            armed: true,
        }
    }

    /// The leg has left already.
    pub(crate) fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for LeaveGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let ctl = self.ctl.clone();
        let call = self.call.clone();
        tokio::spawn(async move {
            if let Err(e) = ctl.conference_leave(&call).await {
                debug!(call_id = %call.call_id, error = %e, "conference verb dropped: leave");
            }
        });
    }
}

impl Conference {
    fn join_request(&self) -> ConferenceJoin {
        ConferenceJoin {
            name: self.name.clone(),
            muted: self.join_muted,
            beep: self.beep,
            end_on_exit: self.end_conference_on_exit,
            start_on_enter: self.start_conference_on_enter.unwrap_or(true),
            max_participants: self.max_participants.map(|m| m as usize),
            record: self.record_from_start,
        }
    }

    pub(crate) async fn exec(&self, x: &mut Exec) -> Result<Flow, AppError> {
        x.answer().await?;
        let mut joined = match x.ctl.conference_join(&x.call, self.join_request()).await {
            Ok(j) => j,
            Err(e) => {
                x.alert(
                    AlertKind::CallControl,
                    format!("conference {:?}: cannot join: {e}", self.name),
                );
                return Ok(Flow::Next);
            }
        };
        let mut guard = LeaveGuard {
            ctl: x.ctl.clone(),
            call: x.call.clone(),
            armed: true,
        };
        info!(call_id = %x.call.call_id, conference = %self.name, "joined the conference");
        let mut joined_yet = false;
        while let Some(note) = joined.notes.recv().await {
            let mine = note.leg_id.as_deref() == Some(x.call.leg_id.as_str());
            let event = match note.kind {
                // The start before our own join is ours: we started it.
                ConferenceNoteKind::Start if !joined_yet => Some(StatusEvent::Start),
                ConferenceNoteKind::Start => None,
                ConferenceNoteKind::Join if mine => {
                    joined_yet = true;
                    Some(StatusEvent::Join)
                }
                ConferenceNoteKind::Leave if mine => Some(StatusEvent::Leave),
                ConferenceNoteKind::Join | ConferenceNoteKind::Leave => None,
                ConferenceNoteKind::End => Some(StatusEvent::End),
            };
            if let Some(event) = event {
                self.status(x, event, &note).await;
            }
            if mine && note.kind == ConferenceNoteKind::Leave {
                guard.armed = false;
            }
        }
        // The channel closes after our leave (or the conference's end, which includes it).
        guard.armed = false;
        info!(call_id = %x.call.call_id, conference = %self.name, "left the conference");
        x.action(self.action_hook.as_ref(), Map::new(), "actionHook")
            .await
    }

    /// Sends `event` to the statusHook if the application asked for it.
    async fn status(&self, x: &mut Exec, event: StatusEvent, note: &ConferenceNote) {
        let Some(hook) = self.status_hook.as_ref() else {
            return;
        };
        if !self.status_events.contains(&event) {
            return;
        }
        let mut fields = Map::new();
        fields.insert("event".into(), Value::from(event.as_str()));
        let time = OffsetDateTime::from_unix_timestamp_nanos(i128::from(note.at_ms) * 1_000_000)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok());
        if let Some(time) = time {
            fields.insert("time".into(), Value::from(time));
        }
        fields.insert("members".into(), Value::from(note.members));
        let duration = (note.at_ms - note.started_at_ms).max(0) as f64 / 1000.0;
        fields.insert("duration".into(), Value::from(duration));
        fields.insert(
            "conference_sid".into(),
            Value::from(format!("conf:{}:{}", x.call.account_id, self.name)),
        );
        fields.insert("friendly_name".into(), Value::from(self.name.clone()));
        // The hook's answer is not a list to run.
        if let Err(e) = x.request(hook, fields, "statusHook").await {
            warn!(call_id = %x.call.call_id, error = %e, "conference statusHook failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verbs::Verb;
    use serde_json::json;

    #[test]
    fn reads_the_jambonz_options_and_refuses_bad_ones() {
        let v = Verb::parse(&json!({
            "verb": "conference", "name": "room-1", "beep": true,
            "startConferenceOnEnter": false, "endConferenceOnExit": true,
            "maxParticipants": 5, "joinMuted": true, "waitHook": "/wait",
            "statusHook": "/status", "statusEvents": ["start", "join", "leave", "end",
            "start-talking"], "actionHook": "/after", "memberTag": "x"
        }))
        .unwrap();
        let Verb::Conference(c) = v else {
            panic!("not a conference: {v:?}");
        };
        let j = c.join_request();
        assert_eq!(
            j,
            ConferenceJoin {
                name: "room-1".into(),
                muted: true,
                beep: true,
                end_on_exit: true,
                start_on_enter: false,
                max_participants: Some(5),
                record: false,
            }
        );
        assert_eq!(c.status_events.len(), 5);
        assert_eq!(c.status_events[4].as_str(), "start-talking");
        // Defaults: starts the conference on enter, unmuted.
        let Ok(Verb::Conference(d)) = Verb::parse(&json!({"verb": "conference", "name": "r"}))
        else {
            panic!("a bare conference verb is refused");
        };
        assert!(d.join_request().start_on_enter && !d.join_request().muted);
        // jambonz's `record` is not the RCML record-from-start: not recorded.
        assert!(!d.join_request().record);
        let rcml = Conference {
            record_from_start: true,
            ..(*d).clone()
        };
        assert!(rcml.join_request().record);
        for bad in [
            json!({"verb": "conference"}),
            json!({"verb": "conference", "name": "bad name"}),
            json!({"verb": "conference", "name": "r", "maxParticipants": 0}),
            json!({"verb": "conference", "name": "r", "maxParticipants": 51}),
            json!({"verb": "conference", "name": "r", "statusEvents": ["boom"]}),
            json!({"verb": "conference", "name": "r", "beep": "yes"}),
        ] {
            assert!(Verb::parse(&bad).is_err(), "{bad}");
        }
    }
}
