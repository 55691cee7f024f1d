//! Park and retrieve.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use tracing::info;
use utoipa::ToSchema;

use crate::body::parse_json;
use crate::native::auth::ApiAccount;
use crate::native::error::{ErrorBody, NativeError};
use crate::native::model::Call;
use crate::AppState;

type Result<T> = std::result::Result<T, NativeError>;

/// Default and longest time a call may stay parked before the parker is called back.
const DEFAULT_PARK_SECS: u64 = 120;
const MAX_PARK_SECS: u64 = 3600;

/// Park the party on the other side of `leg_id` (default: the account user's side). `orbit`
/// is one of `*71`..`*79` (default: the first free one).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ParkRequest {
    pub leg_id: Option<String>,
    pub orbit: Option<String>,
    /// After this many seconds unretrieved, the parker is called back (default 120).
    pub timeout_secs: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Parked {
    /// Dial this code from a phone of the account to take the call.
    pub orbit: String,
    pub call: Call,
}

/// Who takes a parked call: an extension, a number or a `sip:`/`tel:` URI.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UnparkRequest {
    pub target: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ParkedCall {
    pub orbit: String,
    pub call_id: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ParkList {
    pub parks: Vec<ParkedCall>,
}

/// Parks the call: the parker's phone is released, the other party hears music on hold in an
/// orbit (`parked` event). Retrieve by dialling the orbit's code from any phone of the
/// account, or with `.../unpark`; unretrieved, the parker is called back after the timeout.
#[utoipa::path(
    post,
    path = "/calls/{call_id}/park",
    tag = "calls",
    params(("call_id" = String, Path, description = "Call id")),
    request_body = ParkRequest,
    responses(
        (status = 200, body = Parked),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody),
    )
)]
pub(crate) async fn park_call(
    State(state): State<AppState>,
    auth: ApiAccount,
    Path(call_id): Path<String>,
    body: Bytes,
) -> Result<Json<Parked>> {
    let req = if body.is_empty() {
        ParkRequest::default()
    } else {
        parse_json::<ParkRequest>(&body).map_err(NativeError::BadRequest)?
    };
    let secs = req.timeout_secs.unwrap_or(DEFAULT_PARK_SECS);
    if secs == 0 || secs > MAX_PARK_SECS {
        return Err(NativeError::BadRequest(format!(
            "timeout_secs must be 1 to {MAX_PARK_SECS}"
        )));
    }
    let call = state
        .engine
        .park(
            &auth.account_id,
            &call_id,
            req.leg_id.as_deref(),
            req.orbit.as_deref(),
            std::time::Duration::from_secs(secs),
        )
        .await?;
    let orbit = state
        .engine
        .parked_calls(&auth.account_id)
        .into_iter()
        .find(|(_, id)| *id == call.id)
        .map(|(orbit, _)| orbit)
        .unwrap_or_default();
    info!(call_id, %orbit, "call parked");
    Ok(Json(Parked {
        orbit,
        call: Call::from(&call),
    }))
}

/// Retrieves a parked call by dialling `target` into it.
#[utoipa::path(
    post,
    path = "/calls/{call_id}/unpark",
    tag = "calls",
    params(("call_id" = String, Path, description = "Call id")),
    request_body = UnparkRequest,
    responses(
        (status = 200, body = Call),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody),
    )
)]
pub(crate) async fn unpark_call(
    State(state): State<AppState>,
    auth: ApiAccount,
    Path(call_id): Path<String>,
    body: Bytes,
) -> Result<Json<Call>> {
    let req = parse_json::<UnparkRequest>(&body).map_err(NativeError::BadRequest)?;
    let call = state
        .engine
        .unpark(&auth.account_id, &call_id, &req.target)
        .await?;
    info!(call_id, target = %req.target, "retrieving parked call");
    Ok(Json(Call::from(&call)))
}

/// The account's parked calls by orbit.
#[utoipa::path(
    get,
    path = "/parks",
    tag = "calls",
    responses((status = 200, body = ParkList), (status = 401, body = ErrorBody))
)]
pub(crate) async fn list_parks(
    State(state): State<AppState>,
    auth: ApiAccount,
) -> Result<Json<ParkList>> {
    let parks = state
        .engine
        .parked_calls(&auth.account_id)
        .into_iter()
        .map(|(orbit, call_id)| ParkedCall { orbit, call_id })
        .collect();
    Ok(Json(ParkList { parks }))
}
