//! Telephony sessions: `GET`/`DELETE /restapi/v1.0/account/~/telephony/sessions/{sid}` and
//! `POST /restapi/v1.0/account/~/telephony/call-out`, plus what the party routes share:
//! finding the token's session and party, and rendering them.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hookflash_engine::{CallInfo, LegInfo, OriginateRequest};
use serde::Deserialize;
use serde_json::json;
use tracing::info;

use super::account::{check_account, device_owner};
use super::error::RcError;
use super::model::{self, RecordingState};
use super::oauth::RcUser;
use super::RcState;
use crate::body::parse_json;

pub(crate) type Result<T> = std::result::Result<T, RcError>;

/// A JSON body, or a 400 that names what was expected.
pub(crate) fn body<T: serde::de::DeserializeOwned>(bytes: &[u8], expected: &str) -> Result<T> {
    parse_json::<T>(bytes).map_err(|e| RcError::BadRequest(format!("{e}; expected {expected}")))
}

/// A session the token's extension is a party to; any other (another extension's, another
/// account's, ended, unknown) is 404.
pub(crate) fn own_session(state: &RcState, auth: &RcUser, sid: &str) -> Result<CallInfo> {
    state
        .engine
        .user_call(&auth.account.id, &auth.user.id, sid)
        .map_err(|_| RcError::NotFound("telephonySessionId"))
}

/// The party `pid` of the session when it is the token's extension's: 404 when the session
/// has no such party, 403 when it is another extension's (or nobody's).
pub(crate) fn own_party<'a>(call: &'a CallInfo, auth: &RcUser, pid: &str) -> Result<&'a LegInfo> {
    let leg = call.leg(pid).ok_or(RcError::NotFound("partyId"))?;
    if leg.owner_user_id.as_deref() != Some(auth.user.id.as_str()) {
        return Err(RcError::Forbidden(format!(
            "Party [{pid}] does not belong to extension [{}]",
            auth.user.extension
        )));
    }
    Ok(leg)
}

/// Whether the call waits in a park orbit.
pub(crate) fn is_parked(state: &RcState, call: &CallInfo) -> bool {
    parked_in(&state.engine, call)
}

pub(crate) fn parked_in(engine: &hookflash_engine::Engine, call: &CallInfo) -> bool {
    engine
        .parked_calls(&call.account_id)
        .iter()
        .any(|(_, id)| *id == call.id)
}

/// The call's running recording (its id), if it is recorded.
pub(crate) async fn running_recording(
    state: &RcState,
    call: &CallInfo,
) -> Result<Option<RecordingState>> {
    if !call.recording() {
        return Ok(None);
    }
    let recordings = state
        .engine
        .store()
        .recordings(&call.account_id, Some(&call.id), 1)
        .await?;
    Ok(recordings
        .into_iter()
        .find(|r| r.state == "recording")
        .map(|r| RecordingState {
            id: r.id,
            active: true,
        }))
}

/// The party `pid` of `call` rendered (a party that left the call is `Gone`).
pub(crate) async fn party_json(
    state: &RcState,
    call: &CallInfo,
    left: &LegInfo,
) -> Result<Response> {
    let parked = is_parked(state, call);
    let recording = running_recording(state, call).await?;
    let party = match call.leg(&left.id) {
        Some(leg) => model::party(call, leg, parked, recording.as_ref()),
        None => {
            let mut gone = model::party(call, left, parked, None);
            gone.status.code = model::PartyStatus::Gone;
            gone
        }
    };
    Ok(Json(party).into_response())
}

/// `GET /restapi/v1.0/account/~/telephony/sessions/{telephonySessionId}`.
pub(crate) async fn get_session(
    State(state): State<RcState>,
    auth: RcUser,
    Path((account, sid)): Path<(String, String)>,
) -> Result<Response> {
    check_account(&auth, &account)?;
    let mut call = own_session(&state, &auth, &sid)?;
    let recording = running_recording(&state, &call).await?;
    let extras = super::supervise::extra_parties(&state, &call).await;
    call.legs.extend(extras);
    let session = model::session(&call, is_parked(&state, &call), recording.as_ref());
    Ok(Json(session).into_response())
}

/// `DELETE /restapi/v1.0/account/~/telephony/sessions/{telephonySessionId}`: ends the call
/// for every party. 204.
pub(crate) async fn delete_session(
    State(state): State<RcState>,
    auth: RcUser,
    Path((account, sid)): Path<(String, String)>,
) -> Result<StatusCode> {
    check_account(&auth, &account)?;
    let call = own_session(&state, &auth, &sid)?;
    state
        .engine
        .hangup(&call.account_id, &call.id, None)
        .await
        .map_err(|e| match e {
            hookflash_engine::CommandError::NotFound => RcError::NotFound("telephonySessionId"),
            other => other.into(),
        })?;
    info!(call_id = %call.id, user = %auth.user.extension, "RingCentral session dropped");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CallOutFrom {
    device_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CallOutTo {
    phone_number: Option<String>,
    extension_number: Option<String>,
}

#[derive(Debug, Deserialize)]
struct CallOutBody {
    from: CallOutFrom,
    to: CallOutTo,
}

/// `POST /restapi/v1.0/account/~/telephony/call-out {"from": {"deviceId"}, "to":
/// {"phoneNumber" | "extensionNumber"}}`: the device's extension is called first (its
/// phones ring), then the target. Answers `{"session": {...}}`.
pub(crate) async fn call_out(
    State(state): State<RcState>,
    auth: RcUser,
    Path(account): Path<String>,
    payload: Bytes,
) -> Result<Response> {
    check_account(&auth, &account)?;
    let req: CallOutBody = body(
        &payload,
        r#"{"from": {"deviceId": "..."}, "to": {"phoneNumber": "+1..."}}"#,
    )?;
    let device = req.from.device_id.ok_or_else(|| {
        RcError::invalid("from.deviceId", "Parameter [from.deviceId] is required")
    })?;
    let owner = device_owner(&state, &auth, &device).await?;
    let target = match (req.to.phone_number, req.to.extension_number) {
        (Some(n), None) | (None, Some(n)) if !n.trim().is_empty() => n,
        _ => {
            return Err(RcError::invalid(
                "to",
                "Give exactly one of [to.phoneNumber] and [to.extensionNumber]",
            ))
        }
    };
    let call = state
        .engine
        .originate(
            &auth.account.id,
            OriginateRequest {
                caller: owner.extension.clone(),
                callee: target.clone(),
                caller_id: None,
            },
        )
        .await?;
    info!(call_id = %call.id, device, target, user = %auth.user.extension, "RingCentral call-out");
    let session = model::session(&call, false, None);
    Ok((StatusCode::OK, Json(json!({ "session": session }))).into_response())
}
