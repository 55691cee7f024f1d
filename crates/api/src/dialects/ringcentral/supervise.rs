//! `POST .../telephony/sessions/{sid}/supervise`, `.../parties/{pid}/supervise` (mode
//! `Listen`) and `.../parties/bring-in`, mapped onto the engine's supervision and added
//! parties (`engine/src/supervise.rs`): the session moves onto a mixer of its own while the
//! supervisor or the brought-in party is in and back to its relay when it leaves.
//!
//! - supervise: the token's extension is the supervisor; `supervisorDeviceId` (or the older
//!   `deviceId`, as ringcentral-call-control sends it) must be one of its registered phones,
//!   which the server rings (its first registered device). The agent is the party in the path
//!   (party form) or the party of `agentExtensionId` / `agentExtensionNumber` (or the SDK's
//!   `extensionNumber`). Any extension of the account may supervise the account's sessions
//!   (RingCentral asks for a call-monitoring permission; there is none here).
//! - bring-in: `{telephonySessionId | sessionId, partyId}` brings a party of another session
//!   the token's extension is in (RingCentral's form: the party stays its session's, its
//!   partner there waits with music); `{extensionNumber | phoneNumber}` dials a new party in
//!   (our addition). The token's extension must be a party of the session.
//!
//! The parties the session gains this way are listed with the session's own parties
//! ([`extra_parties`]) and notified as they join and leave (`subscriptions.rs`).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hookflash_engine::{
    CallInfo, ConferenceEvent, ConferenceEventKind, Event, EventKind, LegDirection, LegInfo,
    LegRole, LegState, ParticipantInfo, ParticipantState, SuperviseMode, Supervision,
};
use serde::Deserialize;
use tracing::info;

use super::account::{check_account, device_owner};
use super::error::RcError;
use super::model;
use super::oauth::RcUser;
use super::sessions::{body, own_session, Result};
use super::RcState;

/// The supervision modes RingCentral offers.
#[derive(Debug, Clone, Copy, Deserialize)]
enum RcMode {
    Listen,
}

impl From<RcMode> for SuperviseMode {
    fn from(m: RcMode) -> Self {
        match m {
            RcMode::Listen => SuperviseMode::Listen,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SuperviseBody {
    mode: String,
    supervisor_device_id: Option<String>,
    /// ringcentral-call-control's name for `supervisorDeviceId`.
    device_id: Option<String>,
    agent_extension_id: Option<String>,
    agent_extension_number: Option<String>,
    /// ringcentral-call-control's name for `agentExtensionNumber`.
    extension_number: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    auto_answer: Option<bool>,
}

fn mode(req: &SuperviseBody) -> Result<RcMode> {
    serde_json::from_value::<RcMode>(serde_json::Value::String(req.mode.clone())).map_err(|_| {
        RcError::invalid(
            "mode",
            format!(
                "Parameter [mode] value '{}' is invalid: only Listen is supported",
                req.mode
            ),
        )
    })
}

/// A session of the token's account (supervisors need not be its parties); 404 otherwise.
fn account_session(state: &RcState, auth: &RcUser, account: &str, sid: &str) -> Result<CallInfo> {
    check_account(auth, account)?;
    state
        .engine
        .call(&auth.account.id, sid)
        .map_err(|_| RcError::NotFound("telephonySessionId"))
}

/// The supervisor device, which must be one of the token's extension's phones.
async fn supervisor_device(state: &RcState, auth: &RcUser, req: &SuperviseBody) -> Result<()> {
    let Some(device) = req.supervisor_device_id.as_ref().or(req.device_id.as_ref()) else {
        return Err(RcError::invalid(
            "supervisorDeviceId",
            "Parameter [supervisorDeviceId] is required",
        ));
    };
    device_owner(state, auth, device).await.map(|_| ())
}

async fn supervise_as(
    state: &RcState,
    auth: &RcUser,
    call: &CallInfo,
    agent: Option<String>,
    mode: RcMode,
) -> Result<Response> {
    let sup = Supervision {
        mode: mode.into(),
        agent_leg: agent,
    };
    let p = state
        .engine
        .supervise(&call.account_id, &call.id, &auth.user.extension, sup)
        .await?;
    info!(call_id = %call.id, supervisor = %auth.user.extension, participant = %p.id, "RingCentral supervise");
    let leg = extra_leg(&p, Some((&auth.user.id, &auth.user.extension)));
    Ok(Json(model::party(call, &leg, false, None)).into_response())
}

/// `POST .../telephony/sessions/{sid}/supervise {"mode": "Listen", "supervisorDeviceId",
/// "agentExtensionId" | "agentExtensionNumber"}`: the supervisor's party.
pub(crate) async fn supervise_session(
    State(state): State<RcState>,
    auth: RcUser,
    Path((account, sid)): Path<(String, String)>,
    payload: Bytes,
) -> Result<Response> {
    let call = account_session(&state, &auth, &account, &sid)?;
    let req: SuperviseBody = body(
        &payload,
        r#"{"mode": "Listen", "supervisorDeviceId": "...", "agentExtensionId": "..."}"#,
    )?;
    let mode = mode(&req)?;
    let number = req
        .agent_extension_number
        .as_ref()
        .or(req.extension_number.as_ref());
    let agent = match (&req.agent_extension_id, number) {
        (Some(id), _) => Some(
            call.legs
                .iter()
                .find(|l| l.owner_user_id.as_deref() == Some(id.as_str()))
                .ok_or_else(|| {
                    RcError::invalid(
                        "agentExtensionId",
                        format!("Extension [{id}] is not a party of this session"),
                    )
                })?
                .id
                .clone(),
        ),
        (None, Some(n)) => Some(
            call.legs
                .iter()
                .find(|l| l.owner_extension.as_deref() == Some(n.as_str()))
                .ok_or_else(|| {
                    RcError::invalid(
                        "agentExtensionNumber",
                        format!("Extension number [{n}] is not a party of this session"),
                    )
                })?
                .id
                .clone(),
        ),
        (None, None) => None,
    };
    supervisor_device(&state, &auth, &req).await?;
    supervise_as(&state, &auth, &call, agent, mode).await
}

/// `POST .../parties/{pid}/supervise {"mode": "Listen", "supervisorDeviceId"}`: the party in
/// the path is the agent.
pub(crate) async fn supervise_party(
    State(state): State<RcState>,
    auth: RcUser,
    Path((account, sid, pid)): Path<(String, String, String)>,
    payload: Bytes,
) -> Result<Response> {
    let call = account_session(&state, &auth, &account, &sid)?;
    let agent = call
        .leg(&pid)
        .ok_or(RcError::NotFound("partyId"))?
        .id
        .clone();
    let req: SuperviseBody = body(
        &payload,
        r#"{"mode": "Listen", "supervisorDeviceId": "..."}"#,
    )?;
    let mode = mode(&req)?;
    supervisor_device(&state, &auth, &req).await?;
    supervise_as(&state, &auth, &call, Some(agent), mode).await
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct BringInBody {
    telephony_session_id: Option<String>,
    /// ringcentral-call-control's name for `telephonySessionId`.
    session_id: Option<String>,
    party_id: Option<String>,
    extension_number: Option<String>,
    phone_number: Option<String>,
}

/// `POST .../telephony/sessions/{sid}/parties/bring-in`: the new party.
pub(crate) async fn bring_in(
    State(state): State<RcState>,
    auth: RcUser,
    Path((account, sid)): Path<(String, String)>,
    payload: Bytes,
) -> Result<Response> {
    check_account(&auth, &account)?;
    let call = own_session(&state, &auth, &sid)?;
    let req: BringInBody = body(
        &payload,
        r#"{"telephonySessionId": "...", "partyId": "..."} or {"extensionNumber": "..."}"#,
    )?;
    let other = req
        .telephony_session_id
        .as_ref()
        .or(req.session_id.as_ref());
    let dial = req.extension_number.as_ref().or(req.phone_number.as_ref());
    let engine = &state.engine;
    let p = match (other, &req.party_id, dial) {
        (Some(other), Some(pid), None) => {
            if *other == call.id {
                return Err(RcError::invalid(
                    "telephonySessionId",
                    "A session's own party cannot be brought into it",
                ));
            }
            let from = own_session(&state, &auth, other)?;
            from.leg(pid).ok_or(RcError::NotFound("partyId"))?;
            engine
                .bring_in_leg(&call.account_id, &call.id, &from.id, pid)
                .await?
        }
        (None, None, Some(target)) => engine.add_party(&call.account_id, &call.id, target).await?,
        _ => {
            return Err(RcError::invalid(
                "partyId",
                "Give [telephonySessionId] and [partyId], or one of [extensionNumber] and [phoneNumber]",
            ))
        }
    };
    info!(call_id = %call.id, participant = %p.id, "RingCentral bring-in");
    let owner = engine
        .store()
        .user_by_extension(&call.account_id, &p.number)
        .await
        .ok()
        .flatten();
    let leg = extra_leg(
        &p,
        owner
            .as_ref()
            .map(|u| (u.id.as_str(), u.extension.as_str())),
    );
    Ok(Json(model::party(&call, &leg, false, None)).into_response())
}

/// A participant of the session's own mixer that is not one of its legs, as a party: a
/// supervisor, a dialled party or another session's party brought in (by its own party id).
pub(crate) fn extra_leg(p: &ParticipantInfo, owner: Option<(&str, &str)>) -> LegInfo {
    LegInfo {
        id: p.leg_id.clone().unwrap_or_else(|| p.id.clone()),
        role: LegRole::Callee,
        direction: LegDirection::Out,
        state: match p.state {
            ParticipantState::Calling => LegState::Proceeding,
            ParticipantState::Joined if p.held => LegState::Held,
            ParticipantState::Joined => LegState::Answered,
        },
        number: p.number.clone(),
        owner_user_id: owner.map(|(id, _)| id.to_string()),
        owner_extension: owner.map(|(_, ext)| ext.to_string()),
        muted: p.muted,
        held: p.held,
        recording: false,
        devices: Vec::new(),
        voicemail: false,
    }
}

/// The parties session `call` has gained (supervisor, dialled or brought-in parties), as
/// legs, with their extensions looked up by number.
pub(crate) async fn extra_parties(state: &RcState, call: &CallInfo) -> Vec<LegInfo> {
    extra_parties_of(&state.engine, call).await
}

pub(crate) async fn extra_parties_of(
    engine: &hookflash_engine::Engine,
    call: &CallInfo,
) -> Vec<LegInfo> {
    let Ok(ps) = engine.call_participants(&call.account_id, &call.id).await else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for p in ps
        .iter()
        .filter(|p| p.call_id.as_deref() != Some(call.id.as_str()))
    {
        let owner = engine
            .store()
            .user_by_extension(&call.account_id, &p.number)
            .await
            .ok()
            .flatten();
        out.push(extra_leg(
            p,
            owner
                .as_ref()
                .map(|u| (u.id.as_str(), u.extension.as_str())),
        ));
    }
    out
}

/// A join or leave of an outside party in a session's own mixer, as an event of the session
/// (the notification dispatcher compares the session's parties before and after). None for
/// any other conference event.
pub(crate) fn session_change(
    engine: &hookflash_engine::Engine,
    conf: &ConferenceEvent,
) -> Option<Event> {
    let call_id = conf.conference.strip_prefix("call.")?;
    match conf.kind {
        ConferenceEventKind::ParticipantJoined | ConferenceEventKind::ParticipantLeft => {}
        ConferenceEventKind::Started | ConferenceEventKind::Ended => return None,
    }
    let who = conf.participant.as_ref()?;
    if who.call_id.as_deref() == Some(call_id) {
        return None;
    }
    let call = engine.call(&conf.account_id, call_id).ok()?;
    Some(Event {
        seq: conf.seq,
        account_id: conf.account_id.clone(),
        // Not `Ended`: the session goes on; the kind is not shown in the notification.
        kind: EventKind::Answered,
        call_id: call.id.clone(),
        leg_id: None,
        cause: None,
        at_ms: conf.at_ms,
        digit: None,
        recording_id: None,
        target: None,
        call,
    })
}

/// `DELETE .../parties/{pid}` when `pid` is a party the session gained (a supervisor, a
/// dialled or brought-in party) and the token's extension is a party of the session: it
/// leaves (BYE; another session's party goes back to its session), 204. None: not such a
/// party, the caller goes on with the session's own parties.
pub(crate) async fn remove_extra(
    state: &RcState,
    auth: &RcUser,
    path: &(String, String, String),
) -> Option<Result<StatusCode>> {
    let (account, sid, pid) = path;
    check_account(auth, account).ok()?;
    let call = own_session(state, auth, sid).ok()?;
    if call.leg(pid).is_some() {
        return None;
    }
    if !extra_parties(state, &call)
        .await
        .iter()
        .any(|l| l.id == *pid)
    {
        return None;
    }
    let r = state
        .engine
        .remove_party(&call.account_id, &call.id, pid)
        .await
        .map(|()| StatusCode::NO_CONTENT)
        .map_err(RcError::from);
    info!(call_id = %call.id, party = %pid, user = %auth.user.extension, "RingCentral extra party removed");
    Some(r)
}
