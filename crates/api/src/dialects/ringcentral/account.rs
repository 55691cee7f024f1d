//! Account and extension information: `/restapi/v1.0/account/~`, `/account/~/extension/~`
//! (and by id), `/extension/~/device` (the extension's registered phones; a device id is
//! usable as `deviceId` in call-out and ignore) and `/extension/~/presence` with the active
//! calls (`telephonySessionId`, `partyId`, `sessionId`).

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hookflash_engine::{CallInfo, Engine, LegState};
use hookflash_store::{Account, User};
use serde_json::{json, Value};

use super::error::RcError;
use super::model::{self, Direction, PartyStatus};
use super::oauth::RcUser;
use super::sessions::{parked_in, Result};
use super::{now_secs, RcState};
use crate::sipgate::history::iso;

/// Registered phones listed per extension (the store keeps a bounded number anyway).
const MAX_DEVICES: usize = 50;

/// `~` or the token's own account id; anything else is 404.
pub(crate) fn check_account(auth: &RcUser, account: &str) -> Result<()> {
    if account == "~" || account == auth.account.id {
        Ok(())
    } else {
        Err(RcError::NotFound("accountId"))
    }
}

/// The extension a path names: `~` (the token's) or an extension id of the account.
async fn extension_of(state: &RcState, auth: &RcUser, ext: &str) -> Result<User> {
    if ext == "~" || ext == auth.user.id {
        return Ok(auth.user.clone());
    }
    state
        .engine
        .store()
        .user_by_id(ext)
        .await?
        .filter(|u| u.account_id == auth.account.id)
        .ok_or(RcError::NotFound("extensionId"))
}

fn base(auth: &RcUser) -> String {
    format!("/restapi/v1.0/account/{}", auth.account.id)
}

/// `GET /restapi/v1.0/account/{accountId}`.
pub(crate) async fn account(
    State(state): State<RcState>,
    auth: RcUser,
    Path(account): Path<String>,
) -> Result<Response> {
    check_account(&auth, &account)?;
    let numbers = state.engine.store().numbers(&auth.account.id).await?;
    Ok(Json(json!({
        "id": auth.account.id,
        "uri": base(&auth),
        "mainNumber": numbers.first().map(|n| n.number.clone()),
        "status": "Confirmed",
        "serviceInfo": {"brand": {"id": "hookflash", "name": "hookflash"}},
        "setupWizardState": "Completed",
        "name": auth.account.name,
    }))
    .into_response())
}

fn extension_json(auth: &RcUser, user: &User) -> Value {
    json!({
        "id": user.id,
        "uri": format!("{}/extension/{}", base(auth), user.id),
        "extensionNumber": user.extension,
        "name": user.display_name.clone().unwrap_or_else(|| user.extension.clone()),
        "type": "User",
        "status": "Enabled",
        "account": {"id": auth.account.id, "uri": base(auth)},
        "contact": {"firstName": user.display_name, "email": format!("{}@{}", user.extension, auth.account.realm)},
        "permissions": {"admin": {"enabled": false}},
    })
}

/// `GET /restapi/v1.0/account/{accountId}/extension/{extensionId}`.
pub(crate) async fn extension(
    State(state): State<RcState>,
    auth: RcUser,
    Path((account, ext)): Path<(String, String)>,
) -> Result<Response> {
    check_account(&auth, &account)?;
    let user = extension_of(&state, &auth, &ext).await?;
    Ok(Json(extension_json(&auth, &user)).into_response())
}

/// The RingCentral device id of a user's registered contact: a stable 12-digit number.
pub(crate) fn device_id(user_id: &str, contact: &str) -> String {
    model::twelve_digits(&format!("{user_id}\n{contact}"))
}

/// The registered contact of `user` that `device` names, if any.
pub(crate) async fn device_contact(
    state: &RcState,
    user: &User,
    device: &str,
) -> Result<Option<String>> {
    let regs = state
        .engine
        .store()
        .registrations(&user.id, now_secs())
        .await?;
    Ok(regs
        .into_iter()
        .find(|r| device_id(&user.id, &r.contact) == device)
        .map(|r| r.contact))
}

/// The token's own extension when `device` is one of its registered phones; else 400.
pub(crate) async fn device_owner(state: &RcState, auth: &RcUser, device: &str) -> Result<User> {
    match device_contact(state, &auth.user, device).await? {
        Some(_) => Ok(auth.user.clone()),
        None => Err(RcError::invalid(
            "deviceId",
            format!("Device [{device}] is not a registered phone of this extension"),
        )),
    }
}

/// `GET /restapi/v1.0/account/{accountId}/extension/{extensionId}/device`.
pub(crate) async fn devices(
    State(state): State<RcState>,
    auth: RcUser,
    Path((account, ext)): Path<(String, String)>,
) -> Result<Response> {
    check_account(&auth, &account)?;
    let user = extension_of(&state, &auth, &ext).await?;
    let regs = state
        .engine
        .store()
        .registrations(&user.id, now_secs())
        .await?;
    let records: Vec<Value> = regs
        .iter()
        .take(MAX_DEVICES)
        .map(|r| {
            let id = device_id(&user.id, &r.contact);
            json!({
                "id": id,
                "uri": format!("{}/device/{id}", base(&auth)),
                "type": "OtherPhone",
                "name": r.user_agent.clone().unwrap_or_else(|| "SIP phone".into()),
                "status": "Online",
                "extension": {"id": user.id, "extensionNumber": user.extension},
                "sipUri": r.contact,
            })
        })
        .collect();
    let n = records.len();
    Ok(Json(json!({
        "records": records,
        "paging": {"page": 1, "perPage": n.max(1), "pageStart": 0, "pageEnd": n.saturating_sub(1), "totalElements": n, "totalPages": 1},
        "navigation": {},
    }))
    .into_response())
}

/// The presence `telephonyStatus` of a party status.
fn telephony_status(status: PartyStatus) -> &'static str {
    match status {
        PartyStatus::Setup | PartyStatus::Proceeding => "Ringing",
        PartyStatus::Answered => "CallConnected",
        PartyStatus::Hold => "OnHold",
        PartyStatus::Parked => "ParkedCall",
        // The caller talks to the mailbox, not to the extension's phones.
        PartyStatus::Disconnected | PartyStatus::Gone | PartyStatus::VoiceMail => "NoCall",
    }
}

fn active_call(call: &CallInfo, party_id: &str, direction: Direction, tel: &str) -> Value {
    json!({
        "id": call.id,
        "direction": direction,
        "from": call.from,
        "to": call.to,
        "telephonyStatus": tel,
        "sipData": {"toTag": "", "fromTag": "", "remoteUri": "", "localUri": ""},
        "telephonySessionId": call.id,
        "partyId": party_id,
        "sessionId": model::numeric_session_id(&call.id),
        "startTime": iso(call.started_at_ms),
    })
}

/// `GET /restapi/v1.0/account/{accountId}/extension/{extensionId}/presence` (the query's
/// `detailedTelephonyState`/`sipData` are accepted; active calls are always listed).
pub(crate) async fn presence(
    State(state): State<RcState>,
    auth: RcUser,
    Path((account, ext)): Path<(String, String)>,
) -> Result<Response> {
    check_account(&auth, &account)?;
    let user = extension_of(&state, &auth, &ext).await?;
    let mut presence = presence_body(&state.engine, &auth.account, &user);
    presence["uri"] = json!(format!("{}/extension/{}/presence", base(&auth), user.id));
    Ok(Json(presence).into_response())
}

/// The presence of `user` (also the body of presence notifications).
pub(crate) fn presence_body(engine: &Engine, account: &Account, user: &User) -> Value {
    let (calls, telephony) = active_calls_of_account(engine, &account.id, &user.id);
    json!({
        "extension": {"id": user.id, "uri": format!("/restapi/v1.0/account/{}/extension/{}", account.id, user.id), "extensionNumber": user.extension},
        "extensionId": user.id,
        "presenceStatus": if telephony == "NoCall" { "Available" } else { "Busy" },
        "telephonyStatus": telephony,
        "userStatus": "Available",
        "dndStatus": "TakeAllCalls",
        "allowSeeMyPresence": true,
        "ringOnMonitoredCall": false,
        "pickUpCallsOnHold": false,
        "totalActiveCalls": calls.len(),
        "activeCalls": calls,
    })
}

fn active_calls_of_account(
    engine: &Engine,
    account_id: &str,
    user_id: &str,
) -> (Vec<Value>, &'static str) {
    let mut overall = "NoCall";
    let mut out = Vec::new();
    for call in engine.calls(account_id) {
        let Some(leg) = call.legs.iter().find(|l| {
            l.owner_user_id.as_deref() == Some(user_id) && l.state != LegState::Disconnected
        }) else {
            continue;
        };
        let status = model::party_status(&call, leg, parked_in(engine, &call));
        let tel = telephony_status(status);
        if overall == "NoCall" || tel == "CallConnected" {
            overall = tel;
        }
        out.push(active_call(&call, &leg.id, leg.role.into(), tel));
    }
    (out, overall)
}
