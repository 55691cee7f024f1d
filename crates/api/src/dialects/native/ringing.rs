//! A call that still rings: forward, reject, ignore on one device.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::Json;
use serde::Deserialize;
use tracing::info;
use utoipa::ToSchema;

use crate::body::parse_json;
use crate::native::auth::ApiAccount;
use crate::native::doc::ForwardRequestDoc;
use crate::native::error::{ErrorBody, NativeError};
use crate::native::model::Call;
use crate::AppState;

type Result<T> = std::result::Result<T, NativeError>;

/// Where a ringing call goes instead: `target` (an extension, a number, or a `sip:`/`tel:`
/// URI), or `"voicemail": true` for the callee's mailbox. (Its OpenAPI schema is
/// [`ForwardRequestDoc`].)
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardRequest {
    pub target: Option<String>,
    #[serde(default)]
    pub voicemail: bool,
}

/// The device to stop ringing: one of the callee leg's `devices`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IgnoreRequest {
    /// One of the callee leg's `devices`.
    #[schema(min_length = 1)]
    pub device: String,
}

/// Forwards a ringing call: its devices stop ringing and `target` rings instead (`forwarded`
/// event). 409 with the current state once the call is answered; 400 for an unknown target.
#[utoipa::path(
    post,
    path = "/calls/{call_id}/forward",
    tag = "calls",
    params(("call_id" = String, Path, description = "Call id")),
    request_body = ForwardRequestDoc,
    responses(
        (status = 200, body = Call, description = "The call, ringing at the new target (or leaving a voicemail)"),
        (status = 400, body = ErrorBody, description = "`invalid_request`: a body the schema does not allow, a target that names nothing reachable, or (voicemail) the callee has no mailbox"),
        (status = 403, body = ErrorBody, description = "`forbidden`: the account's dial rules forbid the target (premium, international, ...), or a credential that may not use this API"),
        (status = 404, body = ErrorBody, description = "`not_found`: no such call in this account"),
        (status = 409, body = ErrorBody, description = "`wrong_state`: the call is not ringing (answered, or its caller is still being called)"),
        (status = 429, body = ErrorBody, description = "`rate_limited`: the account's outbound-call brakes stop the target for now; or, with `Retry-After`, too many failed authentication attempts", headers(("Retry-After" = u64, description = "Seconds to wait (password guessing defence only)"))),
    )
)]
pub(crate) async fn forward_call(
    State(state): State<AppState>,
    auth: ApiAccount,
    Path(call_id): Path<String>,
    body: Bytes,
) -> Result<Json<Call>> {
    let req = parse_json::<ForwardRequest>(&body).map_err(NativeError::BadRequest)?;
    let call = match (&req.target, req.voicemail) {
        (Some(target), false) => {
            state
                .engine
                .forward(&auth.account_id, &call_id, target)
                .await?
        }
        (None, true) => {
            state
                .engine
                .forward_to_voicemail(&auth.account_id, &call_id)
                .await?
        }
        _ => {
            return Err(NativeError::BadRequest(
                "give either `target` or `\"voicemail\": true`".into(),
            ))
        }
    };
    info!(call_id, target = ?req.target, voicemail = req.voicemail, "ringing call forwarded");
    Ok(Json(Call::from(&call)))
}

/// Rejects a ringing call: every device stops ringing; the caller goes to the callee's
/// voicemail if they have one, else hears busy (486).
#[utoipa::path(
    post,
    path = "/calls/{call_id}/reject",
    tag = "calls",
    params(("call_id" = String, Path, description = "Call id")),
    responses(
        (status = 200, body = Call, description = "The call, now going to voicemail or ending busy"),
        (status = 404, body = ErrorBody, description = "`not_found`: no such call in this account"),
        (status = 409, body = ErrorBody, description = "`wrong_state`: the call is not ringing (answered, or its caller is still being called)"),
    )
)]
pub(crate) async fn reject_call(
    State(state): State<AppState>,
    auth: ApiAccount,
    Path(call_id): Path<String>,
) -> Result<Json<Call>> {
    let call = state.engine.reject(&auth.account_id, &call_id).await?;
    info!(call_id, "ringing call rejected");
    Ok(Json(Call::from(&call)))
}

/// Stops one device ringing; the callee's other devices ring on. When none is left, the
/// caller hears "temporarily unavailable" (480).
#[utoipa::path(
    post,
    path = "/calls/{call_id}/ignore",
    tag = "calls",
    params(("call_id" = String, Path, description = "Call id")),
    request_body = IgnoreRequest,
    responses(
        (status = 200, body = Call, description = "The call, still ringing on the other devices"),
        (status = 400, body = ErrorBody, description = "`invalid_request`: a body the schema does not allow, or not a device of this call that is ringing"),
        (status = 404, body = ErrorBody, description = "`not_found`: no such call in this account"),
        (status = 409, body = ErrorBody, description = "`wrong_state`: the call is not ringing (answered, or its caller is still being called)"),
    )
)]
pub(crate) async fn ignore_call(
    State(state): State<AppState>,
    auth: ApiAccount,
    Path(call_id): Path<String>,
    body: Bytes,
) -> Result<Json<Call>> {
    let req = parse_json::<IgnoreRequest>(&body).map_err(NativeError::BadRequest)?;
    let call = state
        .engine
        .ignore(&auth.account_id, &call_id, &req.device)
        .await?;
    info!(call_id, device = %req.device, "device stopped ringing");
    Ok(Json(Call::from(&call)))
}
