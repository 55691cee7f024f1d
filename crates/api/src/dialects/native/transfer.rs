//! Call transfer: hand the party on the other side of a leg to a new target, blind or after
//! a consultation (attended: start, then complete or cancel).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::Json;
use serde::Deserialize;
use tracing::info;
use utoipa::ToSchema;

use crate::body::parse_json;
use crate::native::auth::ApiAccount;
use crate::native::error::{ErrorBody, NativeError};
use crate::native::model::Call;
use crate::AppState;

type Result<T> = std::result::Result<T, NativeError>;

/// A blind transfer: `target` is an extension, a phone number (via the account's trunk), or a
/// `sip:`/`tel:` URI naming one. `leg_id` is the transferor (released once the target
/// answers); by default the account user's side (the callee of inbound and internal calls,
/// the caller of outbound ones).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    /// An extension, a phone number or a `sip:`/`tel:` URI naming one.
    #[schema(min_length = 1, example = "202")]
    pub target: String,
    /// The transferor's leg (default: the account user's side).
    pub leg_id: Option<String>,
    /// Attended: the transferor first talks to the target (consultation) while the other
    /// party hears music; then `POST .../transfer/complete` or `.../transfer/cancel`.
    #[serde(default)]
    pub attended: bool,
}

/// Blind transfer. The other party hears music on hold while the target rings; when it
/// answers it replaces the transferor, who gets BYE (`transferred` event). If the target is
/// busy, rejects or does not answer, the parties are reconnected (`transfer_failed`). An
/// unknown or malformed target is a 400 and the call is unchanged. Answers once the target
/// is being dialled.
#[utoipa::path(
    post,
    path = "/calls/{call_id}/transfer",
    tag = "calls",
    params(("call_id" = String, Path, description = "Call id")),
    request_body = TransferRequest,
    responses(
        (status = 202, body = Call, description = "Dialling the target"),
        (status = 400, body = ErrorBody, description = "`invalid_request`: a body the schema does not allow, or a target that names nothing reachable (unknown extension, malformed number, no registered phone, the party itself); the call is unchanged"),
        (status = 403, body = ErrorBody, description = "`forbidden`: the account's dial rules forbid the target (premium, international, ...), or a credential that may not use this API"),
        (status = 404, body = ErrorBody, description = "`not_found`: no such call (or `leg_id`) in this account"),
        (status = 409, body = ErrorBody, description = "`wrong_state`: the call is not answered, or a transfer or park is running"),
        (status = 429, body = ErrorBody, description = "`rate_limited`: the account's outbound-call brakes stop the target for now; or, with `Retry-After`, too many failed authentication attempts", headers(("Retry-After" = u64, description = "Seconds to wait (password guessing defence only)"))),
    )
)]
pub(crate) async fn transfer_call(
    State(state): State<AppState>,
    auth: ApiAccount,
    Path(call_id): Path<String>,
    body: Bytes,
) -> Result<(axum::http::StatusCode, Json<Call>)> {
    let req = parse_json::<TransferRequest>(&body).map_err(NativeError::BadRequest)?;
    let call = state
        .engine
        .transfer(
            &auth.account_id,
            &call_id,
            req.leg_id.as_deref(),
            &req.target,
            req.attended,
        )
        .await?;
    info!(call_id, target = %req.target, attended = req.attended, "transfer requested");
    Ok((axum::http::StatusCode::ACCEPTED, Json(Call::from(&call))))
}

/// Attended transfer: joins the held party with the consulted target and releases the
/// transferor (`transferred` event). 409 while the target has not answered yet or no attended
/// transfer runs; if the target's phone refuses the media move, 409 and nothing changes.
#[utoipa::path(
    post,
    path = "/calls/{call_id}/transfer/complete",
    tag = "calls",
    params(("call_id" = String, Path, description = "Call id")),
    responses(
        (status = 200, body = Call, description = "The call, now with the target"),
        (status = 404, body = ErrorBody, description = "`not_found`: no such call in this account"),
        (status = 409, body = ErrorBody, description = "`wrong_state`: no attended transfer runs or the target has not answered yet; `sip_failed`: the target's phone refused the media move (nothing changed)"),
    )
)]
pub(crate) async fn complete_transfer(
    State(state): State<AppState>,
    auth: ApiAccount,
    Path(call_id): Path<String>,
) -> Result<Json<Call>> {
    let call = state
        .engine
        .finish_transfer(&auth.account_id, &call_id, true)
        .await?;
    info!(call_id, "attended transfer completed");
    Ok(Json(Call::from(&call)))
}

/// Cancels a transfer: a ringing target stops ringing, a consulted one is released, and the
/// original parties are back together (`transfer_failed` with cause `cancel`).
#[utoipa::path(
    post,
    path = "/calls/{call_id}/transfer/cancel",
    tag = "calls",
    params(("call_id" = String, Path, description = "Call id")),
    responses(
        (status = 200, body = Call, description = "The call with its original parties"),
        (status = 404, body = ErrorBody, description = "`not_found`: no such call in this account"),
        (status = 409, body = ErrorBody, description = "`wrong_state`: no transfer runs; `sip_failed`: a phone refused to be moved back"),
    )
)]
pub(crate) async fn cancel_transfer(
    State(state): State<AppState>,
    auth: ApiAccount,
    Path(call_id): Path<String>,
) -> Result<Json<Call>> {
    let call = state
        .engine
        .finish_transfer(&auth.account_id, &call_id, false)
        .await?;
    info!(call_id, "transfer cancelled");
    Ok(Json(Call::from(&call)))
}

/// Flip: the user's side moves to one of the user's forwarding numbers.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FlipRequest {
    /// The flip id of one of the user's forwardings (`PUT /users/{extension}/forwardings`).
    #[schema(pattern = "^[A-Za-z0-9_-]{1,16}$", example = "mobile")]
    pub flip_id: String,
    /// The user's leg (default: the account user's side, as for transfers).
    pub leg_id: Option<String>,
}

/// Flip: dials the user's forwarding number with this flip id (see
/// `PUT /users/{extension}/forwardings`); when it answers it replaces the user's device,
/// which is released (`transferred`). If it does not answer, the call stays where it was.
#[utoipa::path(
    post,
    path = "/calls/{call_id}/flip",
    tag = "calls",
    params(("call_id" = String, Path, description = "Call id")),
    request_body = FlipRequest,
    responses(
        (status = 202, body = Call, description = "Dialling the flip number"),
        (status = 400, body = ErrorBody, description = "`invalid_request`: a body the schema does not allow, the leg is not one of the account's users, the user has no forwarding with that flip id, or its number cannot be reached"),
        (status = 403, body = ErrorBody, description = "`forbidden`: the account's dial rules forbid the target (premium, international, ...), or a credential that may not use this API"),
        (status = 404, body = ErrorBody, description = "`not_found`: no such call (or `leg_id`) in this account"),
        (status = 409, body = ErrorBody, description = "`wrong_state`: the call is not answered, or a transfer or park is running"),
        (status = 429, body = ErrorBody, description = "`rate_limited`: the account's outbound-call brakes stop the target for now; or, with `Retry-After`, too many failed authentication attempts", headers(("Retry-After" = u64, description = "Seconds to wait (password guessing defence only)"))),
    )
)]
pub(crate) async fn flip_call(
    State(state): State<AppState>,
    auth: ApiAccount,
    Path(call_id): Path<String>,
    body: Bytes,
) -> Result<(axum::http::StatusCode, Json<Call>)> {
    let req = parse_json::<FlipRequest>(&body).map_err(NativeError::BadRequest)?;
    let call = state
        .engine
        .flip(
            &auth.account_id,
            &call_id,
            req.leg_id.as_deref(),
            &req.flip_id,
        )
        .await?;
    info!(call_id, flip_id = %req.flip_id, "flip requested");
    Ok((axum::http::StatusCode::ACCEPTED, Json(Call::from(&call))))
}

/// Bridge two calls of the account: the party opposite `leg_id` in the path's call and the
/// party opposite `other_leg_id` in `other_call_id` are connected in the path's call.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BridgeRequest {
    /// A leg of this call; it is released and the party it talked to stays.
    #[schema(min_length = 1)]
    pub leg_id: String,
    /// The other call (it ends).
    #[schema(min_length = 1)]
    pub other_call_id: String,
    /// A leg of the other call; it is released and the party it talked to moves here.
    #[schema(min_length = 1)]
    pub other_leg_id: String,
}

/// Moves a leg between calls: the party opposite `other_leg_id` in `other_call_id` leaves
/// its call and is connected to the party opposite `leg_id` in this call (its phone is
/// re-INVITEd to this call's media). The two named legs (typically one user's two calls)
/// get BYE and the other call ends (`transferred` on this call). Both calls must be
/// answered and stable. If the moved phone refuses the re-INVITE it is released and this
/// call stays as it was.
#[utoipa::path(
    post,
    path = "/calls/{call_id}/bridge",
    tag = "calls",
    params(("call_id" = String, Path, description = "Call id")),
    request_body = BridgeRequest,
    responses(
        (status = 200, body = Call, description = "This call, with the moved party"),
        (status = 400, body = ErrorBody, description = "`invalid_request`: a body the schema does not allow, or the call bridged with itself"),
        (status = 404, body = ErrorBody, description = "`not_found`: no such call or leg (either of them) in this account"),
        (status = 409, body = ErrorBody, description = "`wrong_state`: a call is not answered, a transfer or park runs, or a leg of either call is in a conference (or on its call's mixer); `sip_failed`: the moved phone refused the re-INVITE (it is released, this call is unchanged)"),
    )
)]
pub(crate) async fn bridge_calls(
    State(state): State<AppState>,
    auth: ApiAccount,
    Path(call_id): Path<String>,
    body: Bytes,
) -> Result<Json<Call>> {
    let req = parse_json::<BridgeRequest>(&body).map_err(NativeError::BadRequest)?;
    let call = state
        .engine
        .bridge(
            &auth.account_id,
            &call_id,
            &req.leg_id,
            &req.other_call_id,
            &req.other_leg_id,
        )
        .await?;
    info!(call_id, other_call_id = %req.other_call_id, "calls bridged");
    Ok(Json(Call::from(&call)))
}
