//! What the native API returns (views of the engine's call model).

use hookflash_engine::{
    CallDirection, CallInfo, CallState, EndCause, Event, EventKind, LegDirection, LegInfo, LegRole,
    LegState,
};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::openapi::schema::Schema;
use utoipa::ToSchema;

use crate::native::doc::{nullable_string_enum, string_enum};

// The native API's words for the engine's call vocabulary. Each is an exhaustive match (no `_`
// arm): a new variant in the engine does not compile until this dialect names it. The
// OpenAPI enums below are built from the same functions.

pub(crate) fn call_state(s: CallState) -> &'static str {
    match s {
        CallState::Ringing => "ringing",
        CallState::Answered => "answered",
        CallState::Ended => "ended",
    }
}

pub(crate) fn call_direction(d: CallDirection) -> &'static str {
    match d {
        CallDirection::Internal => "internal",
        CallDirection::Inbound => "inbound",
        CallDirection::Outbound => "outbound",
    }
}

pub(crate) fn leg_role(r: LegRole) -> &'static str {
    match r {
        LegRole::Caller => "caller",
        LegRole::Callee => "callee",
    }
}

pub(crate) fn leg_direction(d: LegDirection) -> &'static str {
    match d {
        LegDirection::In => "in",
        LegDirection::Out => "out",
    }
}

pub(crate) fn leg_state(s: LegState) -> &'static str {
    match s {
        LegState::Setup => "setup",
        LegState::Proceeding => "proceeding",
        LegState::Ringing => "ringing",
        LegState::Answered => "answered",
        LegState::Held => "held",
        LegState::Disconnected => "disconnected",
    }
}

/// Also the SSE `event` name.
pub(crate) fn event_kind(k: EventKind) -> &'static str {
    match k {
        EventKind::New => "new",
        EventKind::Ringing => "ringing",
        EventKind::Answered => "answered",
        EventKind::Held => "held",
        EventKind::Retrieved => "retrieved",
        EventKind::Muted => "muted",
        EventKind::Unmuted => "unmuted",
        EventKind::Dtmf => "dtmf",
        EventKind::RecordingStarted => "recording_started",
        EventKind::RecordingStopped => "recording_stopped",
        EventKind::Forwarded => "forwarded",
        EventKind::Voicemail => "voicemail",
        EventKind::Parked => "parked",
        EventKind::Unparked => "unparked",
        EventKind::TransferStarted => "transfer_started",
        EventKind::TransferRinging => "transfer_ringing",
        EventKind::TransferConsulting => "transfer_consulting",
        EventKind::Transferred => "transferred",
        EventKind::TransferFailed => "transfer_failed",
        EventKind::Ended => "ended",
    }
}

pub(crate) fn end_cause(c: EndCause) -> &'static str {
    match c {
        EndCause::Normal => "normal",
        EndCause::Api => "api",
        EndCause::Shutdown => "shutdown",
        EndCause::Cancel => "cancel",
        EndCause::Busy => "busy",
        EndCause::Rejected => "rejected",
        EndCause::NotFound => "not_found",
        EndCause::Unavailable => "unavailable",
        EndCause::NoAnswer => "no_answer",
        EndCause::Incompatible => "incompatible",
        EndCause::Failed => "failed",
        EndCause::AckTimeout => "ack_timeout",
        EndCause::RtpTimeout => "rtp_timeout",
        EndCause::SessionExpired => "session_expired",
        EndCause::ParkTimeout => "park_timeout",
        EndCause::Replaced => "replaced",
        EndCause::TransferFailed => "transfer_failed",
        EndCause::Parked => "parked",
        EndCause::Transferred => "transferred",
        EndCause::Crash => "crash",
        EndCause::NodeFailure => "node_failure",
    }
}

/// The words `word` gives the variants `all`, in order (an OpenAPI enum).
pub(crate) fn words<T: Copy>(all: &[T], word: fn(T) -> &'static str) -> Vec<&'static str> {
    all.iter().map(|v| word(*v)).collect()
}

fn leg_role_schema() -> Schema {
    string_enum(&words(LegRole::ALL, leg_role), "`caller` or `callee`")
}

fn leg_direction_schema() -> Schema {
    string_enum(
        &words(LegDirection::ALL, leg_direction),
        "`in` (the server answered this leg) or `out` (the server placed it)",
    )
}

fn leg_state_schema() -> Schema {
    string_enum(&words(LegState::ALL, leg_state), "The leg's SIP state")
}

fn call_direction_schema() -> Schema {
    string_enum(
        &words(CallDirection::ALL, call_direction),
        "Where the call comes from",
    )
}

fn call_state_schema() -> Schema {
    string_enum(&words(CallState::ALL, call_state), "The call's state")
}

fn end_cause_schema() -> Schema {
    nullable_string_enum(
        &words(EndCause::ALL, end_cause),
        "For `ended`: why the call ended; for `transfer_failed`: why the target was not \
         reached (busy, rejected, not_found, unavailable, no_answer, cancel, incompatible, \
         failed); null for other kinds",
    )
}

fn event_kind_schema() -> Schema {
    string_enum(
        &words(EventKind::ALL, event_kind),
        "What happened (also the SSE `event`)",
    )
}

fn recording_state() -> Schema {
    string_enum(
        &["recording", "complete", "repaired", "failed"],
        "`recording` (running), `complete`, `repaired` (finished after a server crash) or \
         `failed`",
    )
}

/// An optional field that may be left out but not be `null` (`#[serde(default,
/// deserialize_with = "present")]`): the schema says `boolean`, not `boolean | null`.
pub(crate) fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// One leg (SIP dialog + RTP endpoint) of a call.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Leg {
    pub id: String,
    #[schema(schema_with = leg_role_schema)]
    pub role: &'static str,
    #[schema(schema_with = leg_direction_schema)]
    pub direction: &'static str,
    #[schema(schema_with = leg_state_schema)]
    pub state: &'static str,
    /// Number or extension of the party on this leg.
    pub number: String,
    /// The account's user on this leg, if the party is one of its users.
    #[schema(required = true)]
    pub owner_user_id: Option<String>,
    #[schema(required = true)]
    pub owner_extension: Option<String>,
    pub muted: bool,
    pub held: bool,
    pub recording: bool,
    /// While the leg rings: the devices still ringing (use one with `.../ignore`); left out
    /// when there are none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(required = false)]
    pub devices: Vec<String>,
}

/// A call in progress with its legs.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Call {
    pub id: String,
    pub account_id: String,
    pub from: String,
    pub to: String,
    #[schema(schema_with = call_direction_schema)]
    pub direction: &'static str,
    #[schema(schema_with = call_state_schema)]
    pub state: &'static str,
    /// Unix milliseconds.
    pub started_at_ms: i64,
    /// Unix milliseconds; null until answered.
    #[schema(required = true)]
    pub answered_at_ms: Option<i64>,
    /// True when any leg is held.
    pub held: bool,
    /// True when any leg is muted.
    pub muted: bool,
    pub recording: bool,
    pub legs: Vec<Leg>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CallList {
    pub calls: Vec<Call>,
}

/// `PATCH` body of a leg: the fields given are applied (hold first, then mute); at least one.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(min_properties = 1)]
pub struct LegUpdate {
    /// Hold (re-INVITE `a=sendonly`, music on hold) or retrieve the leg.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = bool, required = false)]
    pub held: Option<bool>,
    /// Mute or unmute the leg (no signalling).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = bool, required = false)]
    pub muted: Option<bool>,
}

/// A call recording: a stereo WAV, left = the caller's leg, right = the callee's leg.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Recording {
    pub id: String,
    pub call_id: String,
    #[schema(schema_with = recording_state)]
    pub state: String,
    /// Unix milliseconds.
    pub started_at_ms: i64,
    /// Unix milliseconds; null while recording.
    #[schema(required = true)]
    pub ended_at_ms: Option<i64>,
    #[schema(required = true)]
    pub duration_ms: Option<i64>,
    /// Size of the WAV file; null while recording.
    #[schema(required = true)]
    pub bytes: Option<i64>,
    /// Where the WAV is downloaded (same API key): `/api/v1/recordings/{id}/audio`.
    pub audio_url: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RecordingList {
    pub recordings: Vec<Recording>,
}

/// `POST .../legs/{leg_id}/dtmf` body.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DtmfRequest {
    /// `0-9`, `*`, `#`, `A-D` (lower-case `a-d` too), e.g. `*12345#`.
    #[schema(pattern = "^[0-9*#A-Da-d]+$", example = "*12345#")]
    pub digits: String,
}

/// One call event of the stream (the SSE `data`; the SSE `id` is `seq`, the SSE `event` is
/// `kind`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CallEvent {
    /// Per account, from 1, without gaps.
    #[schema(minimum = 1)]
    pub seq: u64,
    #[schema(schema_with = event_kind_schema)]
    pub kind: &'static str,
    pub call_id: String,
    /// The leg the event is about, if it is about one.
    #[schema(required = true)]
    pub leg_id: Option<String>,
    /// For `ended`: why the call ended; for `transfer_failed`: why the target was not
    /// reached.
    #[schema(required = true, schema_with = end_cause_schema)]
    pub cause: Option<&'static str>,
    /// For `dtmf`: the digit pressed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digit: Option<String>,
    /// For `recording_started` / `recording_stopped`; for `voicemail`: the message's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recording_id: Option<String>,
    /// For `forwarded` and transfer events: the target (extension or number); for `parked` /
    /// `unparked`: the orbit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub at_ms: i64,
    /// The call after the event.
    pub call: Call,
}

/// Sent (as SSE event `gap`, without `id`) when events the client asked for are no longer in
/// the backlog, or the client is ahead of the server (sequences restart with the server):
/// re-list the calls.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Gap {
    /// The sequence the client resumed after.
    pub after: u64,
    /// The oldest sequence that follows; null when none is in the backlog yet.
    #[schema(required = true)]
    pub resumes_at: Option<u64>,
}

impl From<&LegInfo> for Leg {
    fn from(l: &LegInfo) -> Self {
        Leg {
            id: l.id.clone(),
            role: leg_role(l.role),
            direction: leg_direction(l.direction),
            state: leg_state(l.state),
            number: l.number.clone(),
            owner_user_id: l.owner_user_id.clone(),
            owner_extension: l.owner_extension.clone(),
            muted: l.muted,
            held: l.held,
            recording: l.recording,
            devices: l.devices.clone(),
        }
    }
}

impl From<&CallInfo> for Call {
    fn from(c: &CallInfo) -> Self {
        Call {
            id: c.id.clone(),
            account_id: c.account_id.clone(),
            from: c.from.clone(),
            to: c.to.clone(),
            direction: call_direction(c.direction),
            state: call_state(c.state),
            started_at_ms: c.started_at_ms,
            answered_at_ms: c.answered_at_ms,
            held: c.held(),
            muted: c.muted(),
            recording: c.recording(),
            legs: c.legs.iter().map(Leg::from).collect(),
        }
    }
}

impl From<&hookflash_store::Recording> for Recording {
    fn from(r: &hookflash_store::Recording) -> Self {
        Recording {
            id: r.id.clone(),
            call_id: r.call_id.clone(),
            state: r.state.clone(),
            started_at_ms: r.started_at,
            ended_at_ms: r.ended_at,
            duration_ms: r.duration_ms,
            bytes: r.bytes,
            audio_url: format!("{}/recordings/{}/audio", crate::native::PREFIX, r.id),
        }
    }
}

impl From<&Event> for CallEvent {
    fn from(e: &Event) -> Self {
        CallEvent {
            seq: e.seq,
            kind: event_kind(e.kind),
            call_id: e.call_id.clone(),
            leg_id: e.leg_id.clone(),
            cause: e.cause.map(end_cause),
            digit: e.digit.clone(),
            recording_id: e.recording_id.clone(),
            target: e.target.clone(),
            at_ms: e.at_ms,
            call: Call::from(&e.call),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The native API shows the engine's own words: its JSON stays what it was.
    #[test]
    fn native_words_are_the_engine_words() {
        for v in CallState::ALL {
            assert_eq!(call_state(*v), v.as_str());
        }
        for v in CallDirection::ALL {
            assert_eq!(call_direction(*v), v.as_str());
        }
        for v in LegRole::ALL {
            assert_eq!(leg_role(*v), v.as_str());
        }
        for v in LegDirection::ALL {
            assert_eq!(leg_direction(*v), v.as_str());
        }
        for v in LegState::ALL {
            assert_eq!(leg_state(*v), v.as_str());
        }
        for v in EventKind::ALL {
            assert_eq!(event_kind(*v), v.as_str());
        }
        for v in EndCause::ALL {
            assert_eq!(end_cause(*v), v.as_str());
        }
        assert_eq!(
            words(CallState::ALL, call_state),
            ["ringing", "answered", "ended"]
        );
    }
}
