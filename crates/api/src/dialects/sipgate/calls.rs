//! sipgate Real Time Call Manipulation: `/v2/calls`. Translation only: every route is one
//! command of the engine's shared command set.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use hookflash_engine::{AudioSource, CallInfo, LegInfo, RecordAction, Target};
use serde::{Deserialize, Serialize};
use tracing::info;

use super::SipgateState;
use crate::body::parse_json;
use crate::sipgate::auth::SipgateUser;
use crate::sipgate::error::SipgateError;
use crate::sipgate::numbers::{dids, leg_number, Dids};

type Result<T> = std::result::Result<T, SipgateError>;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Participant {
    pub participant_id: String,
    pub phone_number: String,
    pub muted: bool,
    pub hold: bool,
    /// True for the participant of the user behind the token.
    pub owner: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Call {
    pub call_id: String,
    /// Whether the token user's own participant is muted (any participant if they have none).
    pub muted: bool,
    pub recording: bool,
    pub hold: bool,
    pub participants: Vec<Participant>,
}

#[derive(Debug, Serialize)]
pub struct CallList {
    pub data: Vec<Call>,
}

/// `{"value": bool}` of PUT hold / muted.
#[derive(Debug, Deserialize)]
struct Value {
    value: bool,
}

fn render(call: &CallInfo, user_id: &str, dids: &Dids) -> Call {
    let own = call
        .legs
        .iter()
        .find(|l| l.owner_user_id.as_deref() == Some(user_id));
    Call {
        call_id: call.id.clone(),
        muted: own.map(|l| l.muted).unwrap_or_else(|| call.muted()),
        recording: call.recording(),
        hold: call.held(),
        participants: call
            .legs
            .iter()
            .map(|l| Participant {
                participant_id: l.id.clone(),
                phone_number: leg_number(l, dids),
                muted: l.muted,
                hold: l.held,
                owner: l.owner_user_id.as_deref() == Some(user_id),
            })
            .collect(),
    }
}

/// A JSON body of the route, or a 400 that says what was wrong and what is expected.
pub(crate) fn body<T: serde::de::DeserializeOwned>(bytes: &[u8], expected: &str) -> Result<T> {
    parse_json::<T>(bytes)
        .map_err(|e| SipgateError::BadRequest(format!("{e}; expected {expected}")))
}

fn value(bytes: &[u8]) -> Result<bool> {
    body::<Value>(bytes, r#"{"value": true|false}"#).map(|v| v.value)
}

/// A call the token's user is a party to (the engine's rule for user credentials).
fn own_call(state: &SipgateState, auth: &SipgateUser, call_id: &str) -> Result<CallInfo> {
    Ok(state
        .engine
        .user_call(&auth.account.id, &auth.user.id, call_id)?)
}

/// `GET /v2/calls`: the account's calls in progress.
pub(crate) async fn list(
    State(state): State<SipgateState>,
    auth: SipgateUser,
) -> Result<Json<CallList>> {
    let calls = state.engine.calls(&auth.account.id);
    let dids = dids(&state.engine.store().numbers(&auth.account.id).await?);
    Ok(Json(CallList {
        data: calls
            .iter()
            .map(|c| render(c, &auth.user.id, &dids))
            .collect(),
    }))
}

/// `PUT /v2/calls/{callId}/hold {"value": bool}`: holds (retrieves) every participant.
pub(crate) async fn hold(
    State(state): State<SipgateState>,
    auth: SipgateUser,
    Path(call_id): Path<String>,
    payload: Bytes,
) -> Result<StatusCode> {
    let call = own_call(&state, &auth, &call_id)?;
    let on = value(&payload)?;
    state
        .engine
        .hold(&call.account_id, &call.id, Target::Call, on)
        .await?;
    info!(call_id, hold = on, user = %auth.user.extension, "sipgate hold");
    Ok(StatusCode::OK)
}

/// `PUT /v2/calls/{callId}/muted {"value": bool}`: mutes (unmutes) the token user's own
/// participant ("your microphone"); the other party stays audible.
pub(crate) async fn muted(
    State(state): State<SipgateState>,
    auth: SipgateUser,
    Path(call_id): Path<String>,
    payload: Bytes,
) -> Result<StatusCode> {
    let call = own_call(&state, &auth, &call_id)?;
    let on = value(&payload)?;
    let leg = call
        .legs
        .iter()
        .find(|l| l.owner_user_id.as_deref() == Some(auth.user.id.as_str()))
        .ok_or_else(|| {
            SipgateError::Conflict(format!(
                "User {} is not a participant of this call",
                auth.user.extension
            ))
        })?;
    state
        .engine
        .mute(&call.account_id, &call.id, &leg.id, on)
        .await?;
    info!(call_id, muted = on, user = %auth.user.extension, "sipgate mute");
    Ok(StatusCode::OK)
}

/// `DELETE /v2/calls/{callId}`: hangs up (a ringing phone stops ringing).
pub(crate) async fn hangup(
    State(state): State<SipgateState>,
    auth: SipgateUser,
    Path(call_id): Path<String>,
) -> Result<StatusCode> {
    own_call(&state, &auth, &call_id)?;
    state
        .engine
        .hangup(&auth.account.id, &call_id, None)
        .await?;
    info!(call_id, user = %auth.user.extension, "sipgate hangup");
    Ok(StatusCode::NO_CONTENT)
}

/// `{"attended": bool, "phoneNumber": "..."}` of POST transfer.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TransferBody {
    #[serde(default)]
    attended: bool,
    phone_number: String,
}

/// `POST /v2/calls/{callId}/transfer {"attended", "phoneNumber"}`: the authenticated user hands
/// the other party to `phoneNumber` (an extension or number). Blind: the server dials the
/// target while the other party hears music; the user is released once it answers, and if it
/// does not, the other party is back with the user. An unknown target is 400 and the call is
/// unchanged. Attended: the other party waits with music while the user talks to the target;
/// when the user hangs up, the other party is joined with the target (if the target hangs up
/// first, the user is back with the other party).
pub(crate) async fn transfer(
    State(state): State<SipgateState>,
    auth: SipgateUser,
    Path(call_id): Path<String>,
    payload: Bytes,
) -> Result<StatusCode> {
    let call = own_call(&state, &auth, &call_id)?;
    let req: TransferBody = body(
        &payload,
        r#"{"attended": true|false, "phoneNumber": "+4915799912345"}"#,
    )?;
    // The user's own leg transfers; for a call without the user on it, the account's side.
    let transferor = call
        .legs
        .iter()
        .find(|l| l.owner_user_id.as_deref() == Some(auth.user.id.as_str()))
        .map(|l| l.id.clone());
    state
        .engine
        .transfer(
            &call.account_id,
            &call.id,
            transferor.as_deref(),
            &req.phone_number,
            req.attended,
        )
        .await?;
    info!(call_id, target = %req.phone_number, attended = req.attended, user = %auth.user.extension, "sipgate transfer");
    Ok(StatusCode::OK)
}

/// `{"value": bool, "announcement": bool}` of PUT recording.
#[derive(Debug, Deserialize)]
struct RecordingBody {
    value: bool,
    #[serde(default)]
    announcement: bool,
}

/// `PUT /v2/calls/{callId}/recording {"value", "announcement"}`: starts (`true`) or stops
/// (`false`) the call's recording; with `announcement` every party first hears "This call is
/// being recorded." Idempotent like every PUT: asking for the state the call is already in
/// changes nothing (and plays no announcement).
pub(crate) async fn recording(
    State(state): State<SipgateState>,
    auth: SipgateUser,
    Path(call_id): Path<String>,
    payload: Bytes,
) -> Result<StatusCode> {
    let call = own_call(&state, &auth, &call_id)?;
    let req: RecordingBody = body(
        &payload,
        r#"{"value": true|false, "announcement": true|false}"#,
    )?;
    if call.recording() != req.value {
        let action = if req.value {
            RecordAction::Start {
                announcement: req.announcement,
            }
        } else {
            RecordAction::Stop
        };
        state
            .engine
            .record(&call.account_id, &call.id, action)
            .await?;
    }
    info!(call_id, recording = req.value, announcement = req.announcement, user = %auth.user.extension, "sipgate recording");
    Ok(StatusCode::OK)
}

/// `{"sequence": "..."}` of POST dtmf.
#[derive(Debug, Deserialize)]
struct DtmfBody {
    sequence: String,
}

/// `POST /v2/calls/{callId}/dtmf {"sequence"}`: sends the digits to the **remote party** of
/// the token user — the participant that is not theirs (as sipgate does: the digits go to the
/// other side of your call). 409 if the user is not on the call; characters outside
/// `0-9 * # A-D` are a 400 and nothing is sent.
pub(crate) async fn dtmf(
    State(state): State<SipgateState>,
    auth: SipgateUser,
    Path(call_id): Path<String>,
    payload: Bytes,
) -> Result<StatusCode> {
    let call = own_call(&state, &auth, &call_id)?;
    let req: DtmfBody = body(&payload, r#"{"sequence": "*12345#"}"#)?;
    let own = |l: &&LegInfo| l.owner_user_id.as_deref() == Some(auth.user.id.as_str());
    let remote = call
        .legs
        .iter()
        .find(own)
        .and_then(|_| call.legs.iter().find(|l| !own(l)))
        .ok_or_else(|| {
            SipgateError::Conflict(format!(
                "User {} is not a participant of this call",
                auth.user.extension
            ))
        })?;
    state
        .engine
        .send_dtmf(&call.account_id, &call.id, &remote.id, &req.sequence)
        .await?;
    info!(call_id, leg = %remote.id, sequence = %req.sequence, user = %auth.user.extension, "sipgate DTMF");
    Ok(StatusCode::OK)
}

/// `{"url": "..."}` of POST announcements.
#[derive(Debug, Deserialize)]
struct Announcement {
    url: String,
}

/// `POST /v2/calls/{callId}/announcements {"url"}`: plays the WAV at `url` to every party.
/// An unreachable URL or a body that is not audio is a 400 and the call continues untouched.
pub(crate) async fn announcements(
    State(state): State<SipgateState>,
    auth: SipgateUser,
    Path(call_id): Path<String>,
    payload: Bytes,
) -> Result<StatusCode> {
    let call = own_call(&state, &auth, &call_id)?;
    let req: Announcement = body(&payload, r#"{"url": "..."}"#)?;
    state
        .engine
        .announce(
            &call.account_id,
            &call.id,
            Target::Call,
            AudioSource::Url(req.url.clone()),
        )
        .await?;
    info!(call_id, url = %req.url, user = %auth.user.extension, "sipgate announcement");
    Ok(StatusCode::OK)
}
