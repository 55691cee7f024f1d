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
    /// The parker's leg (default: the account user's side).
    pub leg_id: Option<String>,
    #[schema(schema_with = crate::native::doc::orbit)]
    pub orbit: Option<String>,
    /// After this many seconds unretrieved, the parker is called back (default 120, at most
    /// 3600).
    #[schema(minimum = 1, maximum = 3600)]
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
    /// An extension, a phone number or a `sip:`/`tel:` URI naming one.
    #[schema(min_length = 1)]
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
    request_body(content = Option<ParkRequest>, description = "Optional: no body parks with the defaults"),
    responses(
        (status = 200, body = Parked, description = "Parked: the orbit and the call"),
        (status = 400, body = ErrorBody, description = "`invalid_request`: a body the schema does not allow"),
        (status = 404, body = ErrorBody, description = "`not_found`: no such call (or `leg_id`) in this account"),
        (status = 409, body = ErrorBody, description = "`wrong_state`: the call is not answered, parked already, a transfer runs, or the orbit (every orbit) is taken"),
    )
)]
pub(crate) async fn park_call(
    State(state): State<AppState>,
    auth: ApiAccount,
    Path(call_id): Path<String>,
    body: Bytes,
) -> Result<Json<Parked>> {
    // No body (or `null`): the defaults.
    let req = if body.iter().all(u8::is_ascii_whitespace) {
        ParkRequest::default()
    } else {
        parse_json::<Option<ParkRequest>>(&body)
            .map_err(NativeError::BadRequest)?
            .unwrap_or_default()
    };
    let secs = req.timeout_secs.unwrap_or(DEFAULT_PARK_SECS);
    if secs == 0 || secs > MAX_PARK_SECS {
        return Err(NativeError::BadRequest(format!(
            "timeout_secs must be 1 to {MAX_PARK_SECS}"
        )));
    }
    // The orbit comes with the answer: in a cluster the call may be parked on another node.
    let (call, orbit) = state
        .engine
        .park_in_orbit(
            &auth.account_id,
            &call_id,
            req.leg_id.as_deref(),
            req.orbit.as_deref(),
            std::time::Duration::from_secs(secs),
        )
        .await?;
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
        (status = 200, body = Call, description = "The call, dialling the target"),
        (status = 400, body = ErrorBody, description = "`invalid_request`: a body the schema does not allow, or a target that names nothing reachable"),
        (status = 403, body = ErrorBody, description = "`forbidden`: the account's dial rules forbid the target (premium, international, ...), or a credential that may not use this API"),
        (status = 404, body = ErrorBody, description = "`not_found`: no such call in this account"),
        (status = 409, body = ErrorBody, description = "`wrong_state`: the call is not parked"),
        (status = 429, body = ErrorBody, description = "`rate_limited`: the account's outbound-call brakes stop the target for now; or, with `Retry-After`, too many failed authentication attempts", headers(("Retry-After" = u64, description = "Seconds to wait (password guessing defence only)"))),
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
    responses((status = 200, body = ParkList, description = "The parked calls by orbit"))
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
