//! Conferences: named N-party calls mixed by the server (see `engine/src/conference.rs`).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use hookflash_engine::{CommandError, ConferenceInfo, ParticipantInfo, ParticipantState};
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
