//! Calls and legs: list, get, hang up, hold/retrieve, mute/unmute. Each handler is one engine
//! command; errors map in one place (`NativeError::from(CommandError)`).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use hookflash_engine::Target;
use tracing::info;

use crate::body::parse_json;
use crate::native::auth::ApiAccount;
use crate::native::error::{ErrorBody, NativeError};
use crate::native::model::{Call, CallList, LegUpdate};
use crate::AppState;

type Result<T> = std::result::Result<T, NativeError>;

/// The account's calls in progress, oldest first.
#[utoipa::path(
    get,
    path = "/calls",
    tag = "calls",
    responses((status = 200, body = CallList, description = "The account's calls in progress, oldest first"))
)]
pub(crate) async fn list_calls(
    State(state): State<AppState>,
    auth: ApiAccount,
) -> Result<Json<CallList>> {
    let calls = state.engine.calls(&auth.account_id);
    Ok(Json(CallList {
        calls: calls.iter().map(Call::from).collect(),
    }))
}

/// One call with its legs.
#[utoipa::path(
    get,
    path = "/calls/{call_id}",
    tag = "calls",
    params(("call_id" = String, Path, description = "Call id")),
    responses(
        (status = 200, body = Call, description = "The call"),
        (status = 404, body = ErrorBody, description = "`not_found`: no such call in this account (or it has ended)"),
    )
)]
pub(crate) async fn get_call(
    State(state): State<AppState>,
    auth: ApiAccount,
    Path(call_id): Path<String>,
) -> Result<Json<Call>> {
    let call = state.engine.call(&auth.account_id, &call_id)?;
    Ok(Json(Call::from(&call)))
}

/// Hangs up the call: BYE to answered legs, CANCEL to ringing ones (the phone stops ringing).
#[utoipa::path(
    delete,
    path = "/calls/{call_id}",
    tag = "calls",
    params(("call_id" = String, Path, description = "Call id")),
    responses(
        (status = 204, description = "The call is ending"),
        (status = 404, body = ErrorBody, description = "`not_found`: no such call in this account (or it has ended)"),
    )
)]
pub(crate) async fn hangup_call(
    State(state): State<AppState>,
    auth: ApiAccount,
    Path(call_id): Path<String>,
) -> Result<StatusCode> {
    state
        .engine
        .hangup(&auth.account_id, &call_id, None)
        .await?;
    info!(call_id, "call hung up via the native API");
    Ok(StatusCode::NO_CONTENT)
}

/// Hangs up one leg (in a two-party call this ends the call).
#[utoipa::path(
    delete,
    path = "/calls/{call_id}/legs/{leg_id}",
    tag = "calls",
    params(
        ("call_id" = String, Path, description = "Call id"),
        ("leg_id" = String, Path, description = "Leg id"),
    ),
    responses(
        (status = 204, description = "The leg is ending"),
        (status = 404, body = ErrorBody, description = "`not_found`: no such call or leg in this account"),
    )
)]
pub(crate) async fn hangup_leg(
    State(state): State<AppState>,
    auth: ApiAccount,
    Path((call_id, leg_id)): Path<(String, String)>,
) -> Result<StatusCode> {
    state
        .engine
        .hangup(&auth.account_id, &call_id, Some(&leg_id))
        .await?;
    info!(call_id, leg_id, "leg hung up via the native API");
    Ok(StatusCode::NO_CONTENT)
}

async fn hold(
    state: &AppState,
    account: &str,
    call_id: &str,
    target: Target,
    on: bool,
) -> Result<Json<Call>> {
    let call = state.engine.hold(account, call_id, target, on).await?;
    Ok(Json(Call::from(&call)))
}

async fn mute(
    state: &AppState,
    account: &str,
    call_id: &str,
    leg_id: &str,
    on: bool,
) -> Result<Json<Call>> {
    let call = state.engine.mute(account, call_id, leg_id, on).await?;
    Ok(Json(Call::from(&call)))
}

/// Holds every leg of the call: re-INVITE `a=sendonly`, the held phones hear music on hold.
/// All or nothing: if a phone refuses, the call stays as it was (409 `sip_failed`).
#[utoipa::path(
    post,
    path = "/calls/{call_id}/hold",
    tag = "calls",
    params(("call_id" = String, Path, description = "Call id")),
    responses(
        (status = 200, body = Call, description = "The call after the change"),
        (status = 404, body = ErrorBody, description = "`not_found`: no such call in this account"),
        (status = 409, body = ErrorBody, description = "`wrong_state`: not answered yet or ended; `sip_failed`: a phone refused (the call is unchanged)"),
    )
)]
pub(crate) async fn hold_call(
    State(state): State<AppState>,
    auth: ApiAccount,
    Path(call_id): Path<String>,
) -> Result<Json<Call>> {
    hold(&state, &auth.account_id, &call_id, Target::Call, true).await
}

/// Retrieves every held leg of the call (re-INVITE `a=sendrecv`).
#[utoipa::path(
    post,
    path = "/calls/{call_id}/unhold",
    tag = "calls",
    params(("call_id" = String, Path, description = "Call id")),
    responses(
        (status = 200, body = Call, description = "The call after the change"),
        (status = 404, body = ErrorBody, description = "`not_found`: no such call in this account"),
        (status = 409, body = ErrorBody, description = "`wrong_state`: not answered yet or ended; `sip_failed`: a phone refused (the call is unchanged)"),
    )
)]
pub(crate) async fn unhold_call(
    State(state): State<AppState>,
    auth: ApiAccount,
    Path(call_id): Path<String>,
) -> Result<Json<Call>> {
    hold(&state, &auth.account_id, &call_id, Target::Call, false).await
}

/// Holds one leg.
#[utoipa::path(
    post,
    path = "/calls/{call_id}/legs/{leg_id}/hold",
    tag = "calls",
    params(
        ("call_id" = String, Path, description = "Call id"),
        ("leg_id" = String, Path, description = "Leg id"),
    ),
    responses(
        (status = 200, body = Call, description = "The call after the change"),
        (status = 404, body = ErrorBody, description = "`not_found`: no such call or leg in this account"),
        (status = 409, body = ErrorBody, description = "`wrong_state`: not answered yet or ended; `sip_failed`: a phone refused (the call is unchanged)"),
    )
)]
pub(crate) async fn hold_leg(
    State(state): State<AppState>,
    auth: ApiAccount,
    Path((call_id, leg_id)): Path<(String, String)>,
) -> Result<Json<Call>> {
    hold(
        &state,
        &auth.account_id,
        &call_id,
        Target::Leg(leg_id),
        true,
    )
    .await
}

/// Retrieves one leg.
#[utoipa::path(
    post,
    path = "/calls/{call_id}/legs/{leg_id}/unhold",
    tag = "calls",
    params(
        ("call_id" = String, Path, description = "Call id"),
        ("leg_id" = String, Path, description = "Leg id"),
    ),
    responses(
        (status = 200, body = Call, description = "The call after the change"),
        (status = 404, body = ErrorBody, description = "`not_found`: no such call or leg in this account"),
        (status = 409, body = ErrorBody, description = "`wrong_state`: not answered yet or ended; `sip_failed`: a phone refused (the call is unchanged)"),
    )
)]
pub(crate) async fn unhold_leg(
    State(state): State<AppState>,
    auth: ApiAccount,
    Path((call_id, leg_id)): Path<(String, String)>,
) -> Result<Json<Call>> {
    hold(
        &state,
        &auth.account_id,
        &call_id,
        Target::Leg(leg_id),
        false,
    )
    .await
}

/// Mutes one leg: its audio no longer reaches the other party (no signalling).
#[utoipa::path(
    post,
    path = "/calls/{call_id}/legs/{leg_id}/mute",
    tag = "calls",
    params(
        ("call_id" = String, Path, description = "Call id"),
        ("leg_id" = String, Path, description = "Leg id"),
    ),
    responses(
        (status = 200, body = Call, description = "The call after the change"),
        (status = 404, body = ErrorBody, description = "`not_found`: no such call or leg in this account"),
    )
)]
pub(crate) async fn mute_leg(
    State(state): State<AppState>,
    auth: ApiAccount,
    Path((call_id, leg_id)): Path<(String, String)>,
) -> Result<Json<Call>> {
    mute(&state, &auth.account_id, &call_id, &leg_id, true).await
}

/// Unmutes one leg.
#[utoipa::path(
    post,
    path = "/calls/{call_id}/legs/{leg_id}/unmute",
    tag = "calls",
    params(
        ("call_id" = String, Path, description = "Call id"),
        ("leg_id" = String, Path, description = "Leg id"),
    ),
    responses(
        (status = 200, body = Call, description = "The call after the change"),
        (status = 404, body = ErrorBody, description = "`not_found`: no such call or leg in this account"),
    )
)]
pub(crate) async fn unmute_leg(
    State(state): State<AppState>,
    auth: ApiAccount,
    Path((call_id, leg_id)): Path<(String, String)>,
) -> Result<Json<Call>> {
    mute(&state, &auth.account_id, &call_id, &leg_id, false).await
}

/// Sets a leg's state: `{"held": bool, "muted": bool}` (either or both; hold first).
#[utoipa::path(
    patch,
    path = "/calls/{call_id}/legs/{leg_id}",
    tag = "calls",
    params(
        ("call_id" = String, Path, description = "Call id"),
        ("leg_id" = String, Path, description = "Leg id"),
    ),
    request_body = LegUpdate,
    responses(
        (status = 200, body = Call, description = "The call after the change"),
        (status = 400, body = ErrorBody, description = "`invalid_request`: malformed JSON, wrong types (also `null`), unknown or no fields"),
        (status = 404, body = ErrorBody, description = "`not_found`: no such call or leg in this account"),
        (status = 409, body = ErrorBody, description = "`wrong_state`: not answered yet or ended (hold); `sip_failed`: the phone refused the hold (nothing changed)"),
    )
)]
pub(crate) async fn update_leg(
    State(state): State<AppState>,
    auth: ApiAccount,
    Path((call_id, leg_id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Call>> {
    let update: LegUpdate = parse_json(&body).map_err(NativeError::BadRequest)?;
    if update.held.is_none() && update.muted.is_none() {
        return Err(NativeError::BadRequest(
            "nothing to change: give \"held\" and/or \"muted\"".into(),
        ));
    }
    // Fail before changing anything if the call or leg does not exist.
    let call = state.engine.call(&auth.account_id, &call_id)?;
    if call.leg(&leg_id).is_none() {
        return Err(NativeError::NotFound("no such call or leg".into()));
    }
    let mut result = Json(Call::from(&call));
    if let Some(on) = update.held {
        result = hold(
            &state,
            &auth.account_id,
            &call_id,
            Target::Leg(leg_id.clone()),
            on,
        )
        .await?;
    }
    if let Some(on) = update.muted {
        result = mute(&state, &auth.account_id, &call_id, &leg_id, on).await?;
    }
    Ok(result)
}
