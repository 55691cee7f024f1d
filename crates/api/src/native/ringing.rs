//! A call that still rings: forward, reject, ignore on one device.

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

/// Where a ringing call goes instead: `target` (an extension, a number, or a `sip:`/`tel:`
/// URI), or `"voicemail": true` for the callee's mailbox.
#[derive(Debug, Deserialize, ToSchema)]
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
    pub device: String,
}

/// Forwards a ringing call: its devices stop ringing and `target` rings instead (`forwarded`
/// event). 409 with the current state once the call is answered; 400 for an unknown target.
#[utoipa::path(
    post,
    path = "/calls/{call_id}/forward",
    tag = "calls",
    params(("call_id" = String, Path, description = "Call id")),
    request_body = ForwardRequest,
    responses(
        (status = 200, body = Call),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody),
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
        (status = 200, body = Call),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody),
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
        (status = 200, body = Call),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody),
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
