//! Supervision and an added party on a connected call (see `engine/src/supervise.rs`): the
//! call moves onto a mixer of its own while a supervisor or an added party is in, and back to
//! its relay when the last of them leaves.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use hookflash_engine::{CommandError, SuperviseMode, Supervision};
use serde::{Deserialize, Serialize};
use tracing::info;
use utoipa::ToSchema;

use crate::body::parse_json;
use crate::native::auth::ApiAccount;
use crate::native::conferences::Participant;
use crate::native::error::{ErrorBody, NativeError};
use crate::AppState;

type Result<T> = std::result::Result<T, NativeError>;

/// How a supervisor takes part (it hears both parties in every mode).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Heard by no one.
    Listen,
    /// Heard by the agent (`agent_leg`) alone: a whisper.
    Coach,
    /// Heard by both parties.
    Barge,
}

impl From<Mode> for SuperviseMode {
    fn from(m: Mode) -> Self {
        match m {
            Mode::Listen => SuperviseMode::Listen,
            Mode::Coach => SuperviseMode::Coach,
            Mode::Barge => SuperviseMode::Barge,
        }
    }
}

impl From<SuperviseMode> for Mode {
    fn from(m: SuperviseMode) -> Self {
        match m {
            SuperviseMode::Listen => Mode::Listen,
            SuperviseMode::Coach => Mode::Coach,
            SuperviseMode::Barge => Mode::Barge,
        }
    }
}

/// A supervisor's mode, as a participant shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct SupervisionView {
    pub mode: Mode,
    /// The leg a coach is heard by.
    #[schema(required = true)]
    pub agent_leg: Option<String>,
}

impl From<&Supervision> for SupervisionView {
    fn from(s: &Supervision) -> Self {
        SupervisionView {
            mode: s.mode.into(),
            agent_leg: s.agent_leg.clone(),
        }
    }
}

/// Dial a supervisor into the call.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartSupervision {
    /// The supervisor: an extension of the account (or a number), dialled by the server.
    #[schema(min_length = 1, max_length = 128)]
    pub user: String,
    pub mode: Mode,
    /// The agent: one of the call's legs (required for `coach`).
    #[serde(default, deserialize_with = "crate::native::model::present")]
    #[schema(value_type = String)]
    pub agent_leg: Option<String>,
}

/// Change the supervisor's mode live.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSupervision {
    pub mode: Mode,
    /// The agent: one of the call's legs (required for `coach`).
    #[serde(default, deserialize_with = "crate::native::model::present")]
    #[schema(value_type = String)]
    pub agent_leg: Option<String>,
}

/// Dial a third party into the call.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddParty {
    /// An extension, a phone number or a `sip:`/`tel:` URI naming one; routed as the
    /// account dials.
    #[schema(min_length = 1, max_length = 128)]
    pub to: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PartyList {
    /// Everybody in the call's mixer: its own legs (with `leg_id`), the supervisor (with
    /// `supervision`) and added parties. Empty while the call is on its relay.
    pub participants: Vec<Participant>,
}

fn not_found(what: &'static str) -> impl Fn(CommandError) -> NativeError {
    move |e| match e {
        CommandError::NotFound => NativeError::NotFound(what.into()),
        other => other.into(),
    }
}

/// Dials the supervisor's phone; once it answers it hears both parties and is heard as
/// `mode` says. Meanwhile and until it leaves, the call's audio goes through a mixer of its
/// own (`hookflash_calls_on_mixer`); when it hangs up or is removed the call is back on its
/// relay.
#[utoipa::path(
    post,
    path = "/calls/{call_id}/supervisor",
    tag = "calls",
    params(("call_id" = String, Path, description = "Call id")),
    request_body = StartSupervision,
    responses(
        (status = 201, body = Participant, description = "Dialling: the supervisor as a participant"),
        (status = 400, body = ErrorBody, description = "`invalid_request`: a body the schema does not allow (a bad mode), `coach` without `agent_leg`, an agent leg not of this call, or a supervisor that names nothing reachable"),
        (status = 403, body = ErrorBody, description = "`forbidden`: the account's dial rules forbid the target, or a credential that may not use this API"),
        (status = 404, body = ErrorBody, description = "`not_found`: no such call in this account"),
        (status = 409, body = ErrorBody, description = "`wrong_state`: the call is not connected, has a supervisor already, or a leg is in a conference, transferring or parked"),
        (status = 429, body = ErrorBody, description = "`rate_limited`: the outbound-call brakes, or no media port is free; or, with `Retry-After`, too many failed authentication attempts", headers(("Retry-After" = u64, description = "Seconds to wait (password guessing defence only)"))),
    )
)]
pub(crate) async fn start_supervision(
    State(state): State<AppState>,
    auth: ApiAccount,
    Path(call_id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Participant>)> {
    let req: StartSupervision = parse_json(&body).map_err(NativeError::BadRequest)?;
    let sup = Supervision {
        mode: req.mode.into(),
        agent_leg: req.agent_leg,
    };
    let p = state
        .engine
        .supervise(&auth.account_id, &call_id, &req.user, sup)
        .await?;
    info!(call_id, participant = %p.id, "supervisor dialled");
    Ok((StatusCode::CREATED, Json(Participant::from(&p))))
}

/// Switches the supervisor's mode live (listen / coach / barge).
#[utoipa::path(
    patch,
    path = "/calls/{call_id}/supervisor",
    tag = "calls",
    params(("call_id" = String, Path, description = "Call id")),
    request_body = UpdateSupervision,
    responses(
        (status = 200, body = Participant, description = "The supervisor after the change"),
        (status = 400, body = ErrorBody, description = "`invalid_request`: a body the schema does not allow (a bad mode), `coach` without `agent_leg`, or an agent leg not of this call"),
        (status = 404, body = ErrorBody, description = "`not_found`: no such call in this account, or it has no supervisor"),
    )
)]
pub(crate) async fn update_supervision(
    State(state): State<AppState>,
    auth: ApiAccount,
    Path(call_id): Path<String>,
    body: Bytes,
) -> Result<Json<Participant>> {
    let req: UpdateSupervision = parse_json(&body).map_err(NativeError::BadRequest)?;
    let sup = Supervision {
        mode: req.mode.into(),
        agent_leg: req.agent_leg,
    };
    let p = state
        .engine
        .supervise_update(&auth.account_id, &call_id, sup)
        .await
        .map_err(not_found(
            "no such call in this account, or it has no supervisor",
        ))?;
    Ok(Json(Participant::from(&p)))
}

/// The supervisor leaves (BYE; CANCEL while its phone rings).
#[utoipa::path(
    delete,
    path = "/calls/{call_id}/supervisor",
    tag = "calls",
    params(("call_id" = String, Path, description = "Call id")),
    responses(
        (status = 204, description = "The supervisor left"),
        (status = 404, body = ErrorBody, description = "`not_found`: no such call in this account, or it has no supervisor"),
    )
)]
pub(crate) async fn end_supervision(
    State(state): State<AppState>,
    auth: ApiAccount,
    Path(call_id): Path<String>,
) -> Result<StatusCode> {
    state
        .engine
        .supervise_end(&auth.account_id, &call_id)
        .await
        .map_err(not_found(
            "no such call in this account, or it has no supervisor",
        ))?;
    info!(call_id, "supervisor removed");
    Ok(StatusCode::NO_CONTENT)
}

/// Everybody in the call's own mixer (empty while the call is on its relay).
#[utoipa::path(
    get,
    path = "/calls/{call_id}/parties",
    tag = "calls",
    params(("call_id" = String, Path, description = "Call id")),
    responses(
        (status = 200, body = PartyList, description = "The call's mixer participants"),
        (status = 404, body = ErrorBody, description = "`not_found`: no such call in this account"),
    )
)]
pub(crate) async fn list_parties(
    State(state): State<AppState>,
    auth: ApiAccount,
    Path(call_id): Path<String>,
) -> Result<Json<PartyList>> {
    let ps = state
        .engine
        .call_participants(&auth.account_id, &call_id)
        .await?;
    Ok(Json(PartyList {
        participants: ps.iter().map(Participant::from).collect(),
    }))
}

/// Dials a third party into a connected call: heard by both parties, hears both. When it
/// leaves (hangs up or DELETE) the call is back on its relay.
#[utoipa::path(
    post,
    path = "/calls/{call_id}/parties",
    tag = "calls",
    params(("call_id" = String, Path, description = "Call id")),
    request_body = AddParty,
    responses(
        (status = 201, body = Participant, description = "Dialling: the new party"),
        (status = 400, body = ErrorBody, description = "`invalid_request`: a body the schema does not allow, or a target that names nothing reachable"),
        (status = 403, body = ErrorBody, description = "`forbidden`: the account's dial rules forbid the target, or a credential that may not use this API"),
        (status = 404, body = ErrorBody, description = "`not_found`: no such call in this account"),
        (status = 409, body = ErrorBody, description = "`wrong_state`: the call is not connected, or a leg is in a conference, transferring or parked"),
        (status = 429, body = ErrorBody, description = "`rate_limited`: the outbound-call brakes, the call's mixer is full, or no media port is free; or, with `Retry-After`, too many failed authentication attempts", headers(("Retry-After" = u64, description = "Seconds to wait (password guessing defence only)"))),
    )
)]
pub(crate) async fn add_party(
    State(state): State<AppState>,
    auth: ApiAccount,
    Path(call_id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Participant>)> {
    let req: AddParty = parse_json(&body).map_err(NativeError::BadRequest)?;
    let p = state
        .engine
        .add_party(&auth.account_id, &call_id, &req.to)
        .await?;
    info!(call_id, participant = %p.id, "party dialled into the call");
    Ok((StatusCode::CREATED, Json(Participant::from(&p))))
}

/// Takes an added party (or the supervisor) out of the call (BYE; CANCEL while ringing).
#[utoipa::path(
    delete,
    path = "/calls/{call_id}/parties/{participant_id}",
    tag = "calls",
    params(
        ("call_id" = String, Path, description = "Call id"),
        ("participant_id" = String, Path, description = "Participant id"),
    ),
    responses(
        (status = 204, description = "The party left"),
        (status = 404, body = ErrorBody, description = "`not_found`: no such call in this account, or no such added party"),
    )
)]
pub(crate) async fn remove_party(
    State(state): State<AppState>,
    auth: ApiAccount,
    Path((call_id, participant)): Path<(String, String)>,
) -> Result<StatusCode> {
    state
        .engine
        .remove_party(&auth.account_id, &call_id, &participant)
        .await
        .map_err(not_found(
            "no such call in this account, or no such added party",
        ))?;
    Ok(StatusCode::NO_CONTENT)
}
