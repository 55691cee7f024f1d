//! Conferences: named N-party calls mixed by the server (see `engine/src/conference.rs`):
//! phones the conference dials, and legs of existing calls brought in
//! (`/calls/{call_id}/legs/{leg_id}/conference`), which stay their calls' legs.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use hookflash_engine::{
    CommandError, ConferenceEvent, ConferenceEventKind, ConferenceInfo, JoinOptions,
    ParticipantInfo, ParticipantState,
};
use serde::{Deserialize, Serialize};
use tracing::info;
use utoipa::ToSchema;

use crate::body::parse_json;
use crate::native::auth::ApiAccount;
use crate::native::error::{ErrorBody, NativeError};
use crate::AppState;

type Result<T> = std::result::Result<T, NativeError>;

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ParticipantStatus {
    /// Its phone rings.
    Calling,
    /// In the mix: it hears the others, the others hear it (unless muted).
    Joined,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Participant {
    pub id: String,
    /// The extension or number dialled.
    pub number: String,
    pub state: ParticipantStatus,
    /// Heard by no one.
    pub muted: bool,
    /// When it joined (ms since the epoch).
    pub joined_at_ms: Option<i64>,
    /// The call whose leg this is (a call brought in); null for a phone the conference
    /// dialled.
    #[schema(required = true)]
    pub call_id: Option<String>,
    /// The leg of `call_id`.
    #[schema(required = true)]
    pub leg_id: Option<String>,
    /// Held: hears music, heard by no one.
    pub held: bool,
    /// Waits (hearing music, heard by no one) until a participant that starts the
    /// conference joins.
    pub waiting: bool,
    /// A call's supervisor: its mode and agent (null for everybody else).
    #[schema(required = true)]
    pub supervision: Option<crate::native::supervise::SupervisionView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Conference {
    pub name: String,
    pub created_at_ms: i64,
    pub participants: Vec<Participant>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConferenceList {
    pub conferences: Vec<Conference>,
}

/// Dial a party into the conference.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddParticipant {
    /// An extension, a phone number or a `sip:`/`tel:` URI naming one; routed as the
    /// account dials (dial rules and outbound brakes apply).
    #[schema(min_length = 1, max_length = 128)]
    pub to: String,
    /// Join muted (default false).
    #[serde(default)]
    pub muted: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateParticipant {
    /// Muted: heard by no one (it still hears the others).
    pub muted: bool,
}

impl From<&ParticipantInfo> for Participant {
    fn from(p: &ParticipantInfo) -> Self {
        Participant {
            id: p.id.clone(),
            number: p.number.clone(),
            state: match p.state {
                ParticipantState::Calling => ParticipantStatus::Calling,
                ParticipantState::Joined => ParticipantStatus::Joined,
            },
            muted: p.muted,
            joined_at_ms: p.joined_at_ms,
            call_id: p.call_id.clone(),
            leg_id: p.leg_id.clone(),
            held: p.held,
            waiting: p.waiting,
            supervision: p
                .supervision
                .as_ref()
                .map(crate::native::supervise::SupervisionView::from),
        }
    }
}

impl From<&ConferenceInfo> for Conference {
    fn from(c: &ConferenceInfo) -> Self {
        Conference {
            name: c.name.clone(),
            created_at_ms: c.created_at_ms,
            participants: c.participants.iter().map(Participant::from).collect(),
        }
    }
}

/// Conference routes answer "no such conference", not the engine's "no such call".
fn not_found(e: CommandError) -> NativeError {
    match e {
        CommandError::NotFound => {
            NativeError::NotFound("no such conference or participant in this account".into())
        }
        other => other.into(),
    }
}

/// Lists the account's conferences with their participants.
#[utoipa::path(
    get,
    path = "/conferences",
    tag = "conferences",
    responses(
        (status = 200, body = ConferenceList, description = "The account's conferences"),
    )
)]
pub(crate) async fn list_conferences(
    State(state): State<AppState>,
    auth: ApiAccount,
) -> Json<ConferenceList> {
    let conferences = state.engine.conferences(&auth.account_id).await;
    Json(ConferenceList {
        conferences: conferences.iter().map(Conference::from).collect(),
    })
}

/// One conference with its participants.
#[utoipa::path(
    get,
    path = "/conferences/{name}",
    tag = "conferences",
    params(("name" = String, Path, description = "Conference name")),
    responses(
        (status = 200, body = Conference, description = "The conference"),
        (status = 404, body = ErrorBody, description = "`not_found`: no such conference in this account"),
    )
)]
pub(crate) async fn get_conference(
    State(state): State<AppState>,
    auth: ApiAccount,
    Path(name): Path<String>,
) -> Result<Json<Conference>> {
    let c = state
        .engine
        .conference(&auth.account_id, &name)
        .await
        .map_err(not_found)?;
    Ok(Json(Conference::from(&c)))
}

/// Dials a party into conference `name` (made on the first participant; it ends when the
/// last one leaves). Answers once the INVITE has left; the participant is `calling` until
/// its phone answers, then `joined`.
#[utoipa::path(
    post,
    path = "/conferences/{name}/participants",
    tag = "conferences",
    params(("name" = String, Path, description = "Conference name: 1-64 of letters, digits, '-', '_', '.'")),
    request_body = AddParticipant,
    responses(
        (status = 201, body = Participant, description = "Dialling: the new participant"),
        (status = 400, body = ErrorBody, description = "`invalid_request`: a body the schema does not allow, a bad conference name, or a target that names nothing reachable"),
        (status = 403, body = ErrorBody, description = "`forbidden`: the account's dial rules forbid the target, or a credential that may not use this API"),
        (status = 404, body = ErrorBody, description = "`not_found`: the conference ended while the request was on its way"),
        (status = 429, body = ErrorBody, description = "`rate_limited`: the outbound-call brakes, the conference is full, or no media port is free; or, with `Retry-After`, too many failed authentication attempts", headers(("Retry-After" = u64, description = "Seconds to wait (password guessing defence only)"))),
    )
)]
pub(crate) async fn add_participant(
    State(state): State<AppState>,
    auth: ApiAccount,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Participant>)> {
    let req: AddParticipant = parse_json(&body).map_err(NativeError::BadRequest)?;
    let p = state
        .engine
        .conference_dial(&auth.account_id, &name, &req.to, req.muted)
        .await
        .map_err(not_found)?;
    info!(conference = %name, participant = %p.id, "participant dialled");
    Ok((StatusCode::CREATED, Json(Participant::from(&p))))
}

/// Mutes or unmutes a participant.
#[utoipa::path(
    patch,
    path = "/conferences/{name}/participants/{participant_id}",
    tag = "conferences",
    params(
        ("name" = String, Path, description = "Conference name"),
        ("participant_id" = String, Path, description = "Participant id"),
    ),
    request_body = UpdateParticipant,
    responses(
        (status = 200, body = Participant, description = "The participant"),
        (status = 400, body = ErrorBody, description = "`invalid_request`: a body the schema does not allow"),
        (status = 404, body = ErrorBody, description = "`not_found`: no such conference or participant"),
    )
)]
pub(crate) async fn update_participant(
    State(state): State<AppState>,
    auth: ApiAccount,
    Path((name, participant)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Participant>> {
    let req: UpdateParticipant = parse_json(&body).map_err(NativeError::BadRequest)?;
    let p = state
        .engine
        .conference_mute(&auth.account_id, &name, &participant, req.muted)
        .await
        .map_err(not_found)?;
    Ok(Json(Participant::from(&p)))
}

/// Takes a participant out (BYE; CANCEL while its phone rings).
#[utoipa::path(
    delete,
    path = "/conferences/{name}/participants/{participant_id}",
    tag = "conferences",
    params(
        ("name" = String, Path, description = "Conference name"),
        ("participant_id" = String, Path, description = "Participant id"),
    ),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, body = ErrorBody, description = "`not_found`: no such conference or participant"),
    )
)]
pub(crate) async fn remove_participant(
    State(state): State<AppState>,
    auth: ApiAccount,
    Path((name, participant)): Path<(String, String)>,
) -> Result<StatusCode> {
    state
        .engine
        .conference_remove(&auth.account_id, &name, &participant)
        .await
        .map_err(not_found)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Bring a call's leg into a conference.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinConference {
    /// The conference (made on the first join): 1-64 of letters, digits, '-', '_', '.'.
    #[schema(min_length = 1, max_length = 64)]
    pub name: String,
    /// Join muted: heard by no one (default false).
    #[serde(default, deserialize_with = "crate::native::model::present")]
    #[schema(value_type = bool)]
    pub muted: Option<bool>,
    /// Everybody hears a short beep when it joins (default false).
    #[serde(default, deserialize_with = "crate::native::model::present")]
    #[schema(value_type = bool)]
    pub beep: Option<bool>,
    /// The conference ends when this leg leaves (default false).
    #[serde(default, deserialize_with = "crate::native::model::present")]
    #[schema(value_type = bool)]
    pub end_on_exit: Option<bool>,
    /// False: the leg waits, hearing music, until a participant with true joins (default
    /// true).
    #[serde(default, deserialize_with = "crate::native::model::present")]
    #[schema(value_type = bool)]
    pub start_on_enter: Option<bool>,
    /// The conference takes at most this many participants (the first joiner sets it;
    /// never above 50).
    #[serde(default, deserialize_with = "crate::native::model::present")]
    #[schema(value_type = u32, minimum = 1, maximum = 50)]
    pub max_participants: Option<u32>,
}

/// Change a call's leg in its conference.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateConferenceLeg {
    /// Muted: heard by no one.
    #[serde(default, deserialize_with = "crate::native::model::present")]
    #[schema(value_type = bool)]
    pub muted: Option<bool>,
    /// Held: hears music, heard by no one.
    #[serde(default, deserialize_with = "crate::native::model::present")]
    #[schema(value_type = bool)]
    pub held: Option<bool>,
}

/// Brings leg `leg_id` of call `call_id` into conference `name` (made on the first join).
/// The leg stays its call's (same call id, records, hang-up, DTMF); only its audio is mixed
/// in the conference until it leaves. Its call's other party, if any, hears music meanwhile.
#[utoipa::path(
    post,
    path = "/calls/{call_id}/legs/{leg_id}/conference",
    tag = "conferences",
    params(
        ("call_id" = String, Path, description = "Call id"),
        ("leg_id" = String, Path, description = "Leg id"),
    ),
    request_body = JoinConference,
    responses(
        (status = 201, body = Participant, description = "The leg is in the conference"),
        (status = 400, body = ErrorBody, description = "`invalid_request`: a body the schema does not allow or a bad conference name"),
        (status = 404, body = ErrorBody, description = "`not_found`: no such call or leg in this account"),
        (status = 409, body = ErrorBody, description = "`wrong_state`: the call is not answered, or the leg is in a conference already, or it is being transferred or parked"),
        (status = 429, body = ErrorBody, description = "`rate_limited`: the conference is full; or, with `Retry-After`, too many failed authentication attempts", headers(("Retry-After" = u64, description = "Seconds to wait (password guessing defence only)"))),
    )
)]
pub(crate) async fn join_conference(
    State(state): State<AppState>,
    auth: ApiAccount,
    Path((call_id, leg_id)): Path<(String, String)>,
    body: Bytes,
) -> Result<(StatusCode, Json<Participant>)> {
    let req: JoinConference = parse_json(&body).map_err(NativeError::BadRequest)?;
    if req.max_participants.is_some_and(|m| !(1..=50).contains(&m)) {
        return Err(NativeError::BadRequest(
            "max_participants must be 1-50".into(),
        ));
    }
    let opts = JoinOptions {
        muted: req.muted.unwrap_or(false),
        beep: req.beep.unwrap_or(false),
        end_on_exit: req.end_on_exit.unwrap_or(false),
        start_on_enter: req.start_on_enter.unwrap_or(true),
        max_participants: req.max_participants.map(|m| m as usize),
    };
    let m = state
        .engine
        .conference_join_call(&auth.account_id, &req.name, &call_id, Some(&leg_id), opts)
        .await?;
    info!(conference = %req.name, call_id, leg_id, participant = %m.participant.id, "call leg joined a conference");
    Ok((StatusCode::CREATED, Json(Participant::from(&m.participant))))
}

/// Mutes/unmutes or holds/unholds a call's leg in its conference (an empty body changes
/// nothing and answers the participant).
#[utoipa::path(
    patch,
    path = "/calls/{call_id}/legs/{leg_id}/conference",
    tag = "conferences",
    params(
        ("call_id" = String, Path, description = "Call id"),
        ("leg_id" = String, Path, description = "Leg id"),
    ),
    request_body = UpdateConferenceLeg,
    responses(
        (status = 200, body = Participant, description = "The participant after the change"),
        (status = 400, body = ErrorBody, description = "`invalid_request`: a body the schema does not allow"),
        (status = 404, body = ErrorBody, description = "`not_found`: no such call or leg in this account"),
        (status = 409, body = ErrorBody, description = "`wrong_state`: the leg is in no conference"),
    )
)]
pub(crate) async fn update_conference_leg(
    State(state): State<AppState>,
    auth: ApiAccount,
    Path((call_id, leg_id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Participant>> {
    let req: UpdateConferenceLeg = parse_json(&body).map_err(NativeError::BadRequest)?;
    let engine = &state.engine;
    let account = &auth.account_id;
    let mut last = None;
    if let Some(muted) = req.muted {
        last = Some(
            engine
                .conference_mute_call(account, &call_id, Some(&leg_id), muted)
                .await?,
        );
    }
    if let Some(held) = req.held {
        last = Some(
            engine
                .conference_hold_call(account, &call_id, Some(&leg_id), held)
                .await?,
        );
    }
    let p = match last {
        Some(p) => p,
        // Nothing to change: the participant as it is.
        None => {
            engine
                .conference_participant_of_call(account, &call_id, Some(&leg_id))
                .await?
        }
    };
    Ok(Json(Participant::from(&p)))
}

/// Takes a call's leg out of its conference; the call goes on as before (its other party,
/// if any, hears it again).
#[utoipa::path(
    delete,
    path = "/calls/{call_id}/legs/{leg_id}/conference",
    tag = "conferences",
    params(
        ("call_id" = String, Path, description = "Call id"),
        ("leg_id" = String, Path, description = "Leg id"),
    ),
    responses(
        (status = 204, description = "The leg left the conference"),
        (status = 404, body = ErrorBody, description = "`not_found`: no such call or leg in this account"),
        (status = 409, body = ErrorBody, description = "`wrong_state`: the leg is in no conference"),
    )
)]
pub(crate) async fn leave_conference(
    State(state): State<AppState>,
    auth: ApiAccount,
    Path((call_id, leg_id)): Path<(String, String)>,
) -> Result<StatusCode> {
    state
        .engine
        .conference_leave_call(&auth.account_id, &call_id, Some(&leg_id))
        .await?;
    info!(call_id, leg_id, "call leg left its conference");
    Ok(StatusCode::NO_CONTENT)
}

/// The SSE `event` word of a conference event.
pub(crate) fn conference_event_kind(k: ConferenceEventKind) -> &'static str {
    match k {
        ConferenceEventKind::Started => "conference_started",
        ConferenceEventKind::Ended => "conference_ended",
        ConferenceEventKind::ParticipantJoined => "participant_joined",
        ConferenceEventKind::ParticipantLeft => "participant_left",
    }
}

fn conference_event_kind_schema() -> utoipa::openapi::schema::Schema {
    crate::native::doc::string_enum(
        &crate::native::model::words(ConferenceEventKind::ALL, conference_event_kind),
        "What happened (also the SSE `event`)",
    )
}

/// The participant a conference event is about.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EventParticipant {
    pub id: String,
    /// The call whose leg it is; null for a phone the conference dialled.
    #[schema(required = true)]
    pub call_id: Option<String>,
    #[schema(required = true)]
    pub leg_id: Option<String>,
    pub number: String,
    pub muted: bool,
}

/// One conference event of the stream (the SSE `data`; the SSE `id` is `seq`, the SSE
/// `event` is `kind`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConferenceEventView {
    /// Per account, in the same sequence as the call events.
    #[schema(minimum = 1)]
    pub seq: u64,
    #[schema(schema_with = conference_event_kind_schema)]
    pub kind: &'static str,
    /// The conference's name.
    pub conference: String,
    /// For `participant_joined` / `participant_left`.
    #[schema(required = true)]
    pub participant: Option<EventParticipant>,
    /// Participants in the conference after the event.
    pub participants: usize,
    pub at_ms: i64,
    /// When the conference started.
    pub started_at_ms: i64,
}

impl From<&ConferenceEvent> for ConferenceEventView {
    fn from(e: &ConferenceEvent) -> Self {
        ConferenceEventView {
            seq: e.seq,
            kind: conference_event_kind(e.kind),
            conference: e.conference.clone(),
            participant: e.participant.as_ref().map(|p| EventParticipant {
                id: p.id.clone(),
                call_id: p.call_id.clone(),
                leg_id: p.leg_id.clone(),
                number: p.number.clone(),
                muted: p.muted,
            }),
            participants: e.participants,
            at_ms: e.at_ms,
            started_at_ms: e.started_at_ms,
        }
    }
}
