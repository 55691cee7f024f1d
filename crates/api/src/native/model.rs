//! What the native API returns (views of the engine's call model).

use hookflash_engine::{CallInfo, Event, LegInfo};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::openapi::schema::Schema;
use utoipa::ToSchema;

use crate::native::doc::string_enum;

fn leg_role() -> Schema {
    string_enum(&["caller", "callee"], "`caller` or `callee`")
}

fn leg_direction() -> Schema {
    string_enum(
        &["in", "out"],
        "`in` (the server answered this leg) or `out` (the server placed it)",
    )
}

fn leg_state() -> Schema {
    string_enum(
        &[
            "setup",
            "proceeding",
            "ringing",
            "answered",
            "held",
            "disconnected",
        ],
        "The leg's SIP state",
    )
}

fn call_direction() -> Schema {
    string_enum(
        &["internal", "inbound", "outbound"],
        "Where the call comes from",
    )
}

fn call_state() -> Schema {
    string_enum(&["ringing", "answered", "ended"], "The call's state")
}

fn event_kind() -> Schema {
    string_enum(
        &[
            "new",
            "ringing",
            "answered",
            "held",
            "retrieved",
            "muted",
            "unmuted",
            "dtmf",
            "recording_started",
            "recording_stopped",
            "forwarded",
            "voicemail",
            "parked",
            "unparked",
            "transfer_started",
            "transfer_ringing",
            "transfer_consulting",
            "transferred",
            "transfer_failed",
            "ended",
        ],
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
    #[schema(schema_with = leg_role)]
    pub role: String,
    #[schema(schema_with = leg_direction)]
    pub direction: String,
    #[schema(schema_with = leg_state)]
    pub state: String,
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
    #[schema(schema_with = call_direction)]
    pub direction: String,
    #[schema(schema_with = call_state)]
    pub state: String,
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
    #[schema(schema_with = event_kind)]
    pub kind: String,
    pub call_id: String,
    /// The leg the event is about, if it is about one.
    #[schema(required = true)]
    pub leg_id: Option<String>,
    /// For `ended`: normal, busy, cancel, no_answer, not_found, unavailable, api,
    /// rtp_timeout, ...; for `transfer_failed`: busy, rejected, no_answer, cancel, ...
    #[schema(required = true)]
    pub cause: Option<String>,
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
            role: l.role.clone(),
            direction: l.direction.clone(),
            state: l.state.as_str().to_string(),
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
            direction: c.direction.clone(),
            state: c.state.clone(),
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
            kind: e.kind.as_str().to_string(),
            call_id: e.call_id.clone(),
            leg_id: e.leg_id.clone(),
            cause: e.cause.clone(),
            digit: e.digit.clone(),
            recording_id: e.recording_id.clone(),
            target: e.target.clone(),
            at_ms: e.at_ms,
            call: Call::from(&e.call),
        }
    }
}
