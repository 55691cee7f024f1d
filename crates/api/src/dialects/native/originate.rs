//! Click-to-dial in the native API: `POST /calls`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use hookflash_engine::OriginateRequest;
use serde::Deserialize;
use tracing::info;
use utoipa::ToSchema;

use crate::body::parse_json;
use crate::native::auth::ApiAccount;
use crate::native::error::{ErrorBody, NativeError};
use crate::native::model::Call;
use crate::AppState;

type Result<T> = std::result::Result<T, NativeError>;

/// A call the server places: `caller`'s phones ring first (an extension, one of the
/// account's numbers, or an external number via the trunk); when one answers, `callee` is
/// dialled and the two are bridged. `caller_id` is what the callee sees: the caller's
/// extension (default) or one of the account's numbers.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OriginateBody {
    /// Whose phones ring first: an extension, one of the account's numbers, or an external
    /// number (via the account's trunk).
    #[schema(min_length = 1, example = "201")]
    pub caller: String,
    /// Dialled once the caller answers: an extension, a number, or a `sip:`/`tel:` URI.
    #[schema(min_length = 1, example = "+4930123456")]
    pub callee: String,
    /// What the callee sees: the caller's extension (default) or one of the account's numbers.
    #[schema(min_length = 1)]
    pub caller_id: Option<String>,
}

/// Click-to-dial. 201 with the call (ringing the caller); follow it with the event stream
/// (`ringing` for each side, `answered`, `ended` with a cause if either side fails). 400 when
/// either side cannot be reached; nothing is dialled then.
#[utoipa::path(
    post,
    path = "/calls",
    tag = "calls",
    request_body = OriginateBody,
    responses(
        (status = 201, body = Call, description = "Ringing the caller"),
        (status = 400, body = ErrorBody, description = "`invalid_request`: a body the schema does not allow, or a side that names nothing reachable (unknown extension, malformed number, no registered phone, caller and callee the same, a `caller_id` that is neither the caller nor a number of the account); nothing is dialled"),
        (status = 403, body = ErrorBody, description = "`forbidden`: the account's dial rules forbid the number (premium, international, a session between two outside numbers), or a credential that may not use this API"),
        (status = 409, body = ErrorBody, description = "`sip_failed`: the server has no RTP ports free"),
        (status = 429, body = ErrorBody, description = "`rate_limited`: the account's outbound-call brakes (calls at once, calls per minute); or, with `Retry-After`, too many failed authentication attempts", headers(("Retry-After" = u64, description = "Seconds to wait (password guessing defence only)"))),
    )
)]
pub(crate) async fn originate_call(
    State(state): State<AppState>,
    auth: ApiAccount,
    body: Bytes,
) -> Result<(StatusCode, Json<Call>)> {
    let req = parse_json::<OriginateBody>(&body).map_err(NativeError::BadRequest)?;
    let call = state
        .engine
        .originate(
            &auth.account_id,
            OriginateRequest {
                caller: req.caller.clone(),
                callee: req.callee.clone(),
                caller_id: req.caller_id,
            },
        )
        .await?;
    info!(call_id = %call.id, caller = %req.caller, callee = %req.callee, "click-to-dial");
    Ok((StatusCode::CREATED, Json(Call::from(&call))))
}
