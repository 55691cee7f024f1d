//! Parties of a telephony session (`.../telephony/sessions/{sid}/parties/{pid}`): GET, PATCH
//! (`muted`), DELETE, and the actions hold, unhold, transfer, forward, reject, ignore, flip,
//! park and recordings. Every action acts on a party of the token's extension (another
//! extension's party: 403; an unknown session or party: 404) and answers with the party's JSON
//! (never 204: the call-control SDK parses it). A refused action leaves the call as it was.
//!
//! Hold on a party is what the hold key of that party's phone does: the other parties are put
//! on hold (their phones get `a=sendonly` and hear music on hold); the party's status is
//! `Hold` while they are held. Mute on a party stops its audio reaching the others.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hookflash_engine::{CallInfo, CommandError, LegInfo, LegRole, LegState, RecordAction, Target};
use serde::Deserialize;
use tracing::{info, warn};

use super::account::{check_account, device_contact};
use super::error::RcError;
use super::model::RecordingState;
use super::oauth::RcUser;
use super::sessions::{body, own_party, own_session, party_json, Result};
use super::RcState;

/// A parked call waits this long before its parker is called back.
const PARK_TIMEOUT: Duration = Duration::from_secs(120);

type PartyPath = Path<(String, String, String)>;

/// The session and the token's party named by the path.
pub(crate) fn party_of(
    state: &RcState,
    auth: &RcUser,
    path: &(String, String, String),
) -> Result<(CallInfo, LegInfo)> {
    let (account, sid, pid) = path;
    check_account(auth, account)?;
    let call = own_session(state, auth, sid)?;
    let leg = own_party(&call, auth, pid)?.clone();
    Ok((call, leg))
}

/// `GET .../parties/{partyId}`.
pub(crate) async fn get_party(
    State(state): State<RcState>,
    auth: RcUser,
    Path(path): PartyPath,
) -> Result<Response> {
    let (call, leg) = party_of(&state, &auth, &path)?;
    party_json(&state, &call, &leg).await
}

/// `{"muted"}`; other fields (`standAlone`) are accepted and ignored: a party is never
/// stand-alone here.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PartyUpdate {
    muted: Option<bool>,
}

/// `PATCH .../parties/{partyId} {"muted": bool}`.
pub(crate) async fn patch_party(
    State(state): State<RcState>,
    auth: RcUser,
    Path(path): PartyPath,
    payload: Bytes,
) -> Result<Response> {
    let (call, leg) = party_of(&state, &auth, &path)?;
    let req: PartyUpdate = body(&payload, r#"{"muted": true|false}"#)?;
    let call = match req.muted {
        Some(on) if on != leg.muted => {
            let call = state
                .engine
                .mute(&call.account_id, &call.id, &leg.id, on)
                .await?;
            info!(call_id = %call.id, party = %leg.id, muted = on, user = %auth.user.extension, "RingCentral mute");
            call
        }
        _ => call,
    };
    party_json(&state, &call, &leg).await
}

/// `DELETE .../parties/{partyId}`: the party leaves (hangs up); in a two-party call that ends
/// the call. 204.
pub(crate) async fn delete_party(
    State(state): State<RcState>,
    auth: RcUser,
    Path(path): PartyPath,
) -> Result<StatusCode> {
    // A supervisor or a brought-in party of the session leaves it (the call goes on).
    if let Some(done) = super::supervise::remove_extra(&state, &auth, &path).await {
        return done;
    }
    let (call, leg) = party_of(&state, &auth, &path)?;
    state
        .engine
        .hangup(&call.account_id, &call.id, Some(&leg.id))
        .await?;
    info!(call_id = %call.id, party = %leg.id, user = %auth.user.extension, "RingCentral party dropped");
    Ok(StatusCode::NO_CONTENT)
}

/// The other live parties of the call.
fn others<'a>(call: &'a CallInfo, leg: &'a LegInfo) -> impl Iterator<Item = &'a LegInfo> {
    call.legs
        .iter()
        .filter(move |l| l.id != leg.id && l.state != LegState::Disconnected)
}

/// Holds (`on`) or retrieves the other parties of `leg`. If one refuses, those already changed
/// are changed back, so the call stays as it was.
async fn hold_others(
    state: &RcState,
    call: &CallInfo,
    leg: &LegInfo,
    on: bool,
) -> Result<CallInfo> {
    if leg.state != LegState::Answered {
        return Err(RcError::WrongState(format!(
            "The party is not connected (it is {:?}); the call is unchanged",
            leg.state.as_str()
        )));
    }
    let targets: Vec<String> = others(call, leg)
        .filter(|l| l.held != on)
        .map(|l| l.id.clone())
        .collect();
    if others(call, leg).next().is_none() {
        return Err(RcError::WrongState(
            "The party has nobody to hold; the call is unchanged".into(),
        ));
    }
    let mut latest = call.clone();
    let mut done: Vec<String> = Vec::new();
    for id in targets {
        match state
            .engine
            .hold(&call.account_id, &call.id, Target::Leg(id.clone()), on)
            .await
        {
            Ok(c) => {
                latest = c;
                done.push(id);
            }
            Err(e) => {
                for back in done {
                    if let Err(undo) = state
                        .engine
                        .hold(&call.account_id, &call.id, Target::Leg(back.clone()), !on)
                        .await
                    {
                        warn!(call_id = %call.id, party = %back, error = %undo, "could not undo a hold");
                    }
                }
                return Err(e.into());
            }
        }
    }
    Ok(latest)
}

/// `POST .../parties/{partyId}/hold`: answers the party (status `Hold`).
pub(crate) async fn hold(
    State(state): State<RcState>,
    auth: RcUser,
    Path(path): PartyPath,
) -> Result<Response> {
    let (call, leg) = party_of(&state, &auth, &path)?;
    let call = hold_others(&state, &call, &leg, true).await?;
    info!(call_id = %call.id, party = %leg.id, user = %auth.user.extension, "RingCentral hold");
    party_json(&state, &call, &leg).await
}

/// `POST .../parties/{partyId}/unhold`: answers the party (status `Answered`).
pub(crate) async fn unhold(
    State(state): State<RcState>,
    auth: RcUser,
    Path(path): PartyPath,
) -> Result<Response> {
    let (call, leg) = party_of(&state, &auth, &path)?;
    let call = hold_others(&state, &call, &leg, false).await?;
    info!(call_id = %call.id, party = %leg.id, user = %auth.user.extension, "RingCentral unhold");
    party_json(&state, &call, &leg).await
}

/// Body of transfer and forward: exactly one target.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TargetBody {
    phone_number: Option<String>,
    extension_number: Option<String>,
    voicemail: Option<String>,
    park_orbit: Option<String>,
}

/// Where a transfer or forward goes.
enum Destination {
    Dial(String),
    Voicemail,
    Park(String),
}

fn destination(req: TargetBody, allow_park: bool) -> Result<Destination> {
    let given = [
        req.phone_number.is_some(),
        req.extension_number.is_some(),
        req.voicemail.is_some(),
        req.park_orbit.is_some(),
    ]
    .iter()
    .filter(|g| **g)
    .count();
    let expected = if allow_park {
        "Give exactly one of [phoneNumber], [extensionNumber], [voicemail] and [parkOrbit]"
    } else {
        "Give exactly one of [phoneNumber], [extensionNumber] and [voicemail]"
    };
    if given != 1 {
        return Err(RcError::invalid("phoneNumber", expected));
    }
    let non_empty = |p: &'static str, v: String| {
        if v.trim().is_empty() {
            Err(RcError::invalid(p, format!("Parameter [{p}] is empty")))
        } else {
            Ok(v)
        }
    };
    if let Some(n) = req.phone_number {
        return Ok(Destination::Dial(non_empty("phoneNumber", n)?));
    }
    if let Some(n) = req.extension_number {
        return Ok(Destination::Dial(non_empty("extensionNumber", n)?));
    }
    if req.voicemail.is_some() {
        return Ok(Destination::Voicemail);
    }
    match req.park_orbit {
        Some(o) if allow_park => Ok(Destination::Park(non_empty("parkOrbit", o)?)),
        _ => Err(RcError::invalid("parkOrbit", expected)),
    }
}

/// `POST .../parties/{partyId}/transfer {"phoneNumber" | "extensionNumber" | "parkOrbit"}`
/// (blind): the other party is connected to the target and this party is released once the
/// target answers. An unknown target is 400 and the call is unchanged; `voicemail` is 400
/// (a connected call cannot be sent to voicemail here).
pub(crate) async fn transfer(
    State(state): State<RcState>,
    auth: RcUser,
    Path(path): PartyPath,
    payload: Bytes,
) -> Result<Response> {
    let (call, leg) = party_of(&state, &auth, &path)?;
    let req: TargetBody = body(
        &payload,
        r#"{"phoneNumber": "+1..."} or {"extensionNumber": "102"}"#,
    )?;
    let call = match destination(req, true)? {
        Destination::Dial(target) => {
            let c = state
                .engine
                .transfer(&call.account_id, &call.id, Some(&leg.id), &target, false)
                .await?;
            info!(call_id = %call.id, party = %leg.id, target, user = %auth.user.extension, "RingCentral transfer");
            c
        }
        Destination::Park(orbit) => {
            state
                .engine
                .park(
                    &call.account_id,
                    &call.id,
                    Some(&leg.id),
                    Some(&orbit),
                    PARK_TIMEOUT,
                )
                .await?
        }
        Destination::Voicemail => {
            return Err(RcError::invalid(
                "voicemail",
                "A connected call cannot be transferred to voicemail; use forward while it rings",
            ))
        }
    };
    party_json(&state, &call, &leg).await
}

/// The token's party must be the called party of a ringing call.
pub(crate) fn ringing_callee(leg: &LegInfo) -> Result<()> {
    match (leg.role, leg.state) {
        (LegRole::Callee, LegState::Setup | LegState::Proceeding | LegState::Ringing) => Ok(()),
        (LegRole::Caller, _) => Err(RcError::WrongState(
            "Only the called party of a ringing call can do this; the call is unchanged".into(),
        )),
        (LegRole::Callee, LegState::Answered | LegState::Held | LegState::Disconnected) => Err(
            RcError::WrongState("The call is not ringing; the call is unchanged".into()),
        ),
    }
}

/// `POST .../parties/{partyId}/forward {"phoneNumber" | "extensionNumber" | "voicemail"}`: a
/// ringing call rings the target instead (or goes to the extension's voicemail).
pub(crate) async fn forward(
    State(state): State<RcState>,
    auth: RcUser,
    Path(path): PartyPath,
    payload: Bytes,
) -> Result<Response> {
    let (call, leg) = party_of(&state, &auth, &path)?;
    let req: TargetBody = body(
        &payload,
        r#"{"phoneNumber": "+1..."} or {"voicemail": "..."}"#,
    )?;
    let dest = destination(req, false)?;
    ringing_callee(&leg)?;
    let call = match dest {
        Destination::Dial(target) => {
            state
                .engine
                .forward(&call.account_id, &call.id, &target)
                .await?
        }
        Destination::Voicemail => {
            state
                .engine
                .forward_to_voicemail(&call.account_id, &call.id)
                .await?
        }
        Destination::Park(_) => {
            return Err(RcError::invalid(
                "parkOrbit",
                "A ringing call cannot be parked",
            ))
        }
    };
    info!(call_id = %call.id, party = %leg.id, user = %auth.user.extension, "RingCentral forward");
    party_json(&state, &call, &leg).await
}

/// `POST .../parties/{partyId}/reject`: a ringing call stops ringing; the caller goes to
/// voicemail if the extension has one, else hears busy.
pub(crate) async fn reject(
    State(state): State<RcState>,
    auth: RcUser,
    Path(path): PartyPath,
) -> Result<Response> {
    let (call, leg) = party_of(&state, &auth, &path)?;
    ringing_callee(&leg)?;
    let call = state.engine.reject(&call.account_id, &call.id).await?;
    info!(call_id = %call.id, party = %leg.id, user = %auth.user.extension, "RingCentral reject");
    party_json(&state, &call, &leg).await
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeviceBody {
    device_id: String,
}

/// `POST .../parties/{partyId}/ignore {"deviceId"}`: that phone stops ringing, others ring on.
pub(crate) async fn ignore(
    State(state): State<RcState>,
    auth: RcUser,
    Path(path): PartyPath,
    payload: Bytes,
) -> Result<Response> {
    let (call, leg) = party_of(&state, &auth, &path)?;
    let req: DeviceBody = body(&payload, r#"{"deviceId": "..."}"#)?;
    ringing_callee(&leg)?;
    let contact = device_contact(&state, &auth.user, &req.device_id)
        .await?
        .ok_or_else(|| {
            RcError::invalid(
                "deviceId",
                format!("Device [{}] is not ringing", req.device_id),
            )
        })?;
    let call = state
        .engine
        .ignore(&call.account_id, &call.id, &contact)
        .await?;
    info!(call_id = %call.id, party = %leg.id, device = %req.device_id, "RingCentral ignore");
    party_json(&state, &call, &leg).await
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FlipBody {
    call_flip_id: String,
}

/// `POST .../parties/{partyId}/flip {"callFlipId"}`: the party moves to the extension's
/// forwarding number with that flip id.
pub(crate) async fn flip(
    State(state): State<RcState>,
    auth: RcUser,
    Path(path): PartyPath,
    payload: Bytes,
) -> Result<Response> {
    let (call, leg) = party_of(&state, &auth, &path)?;
    let req: FlipBody = body(&payload, r#"{"callFlipId": "1"}"#)?;
    let call = state
        .engine
        .flip(&call.account_id, &call.id, Some(&leg.id), &req.call_flip_id)
        .await?;
    info!(call_id = %call.id, party = %leg.id, flip = %req.call_flip_id, "RingCentral flip");
    party_json(&state, &call, &leg).await
}

/// `POST .../parties/{partyId}/park`: the other party waits in the first free orbit; this
/// party is released.
pub(crate) async fn park(
    State(state): State<RcState>,
    auth: RcUser,
    Path(path): PartyPath,
) -> Result<Response> {
    let (call, leg) = party_of(&state, &auth, &path)?;
    let call = state
        .engine
        .park(
            &call.account_id,
            &call.id,
            Some(&leg.id),
            None,
            PARK_TIMEOUT,
        )
        .await?;
    info!(call_id = %call.id, party = %leg.id, "RingCentral park");
    party_json(&state, &call, &leg).await
}

/// `POST .../parties/{partyId}/recordings`: starts recording the call -> `{"id", "active"}`.
pub(crate) async fn start_recording(
    State(state): State<RcState>,
    auth: RcUser,
    Path(path): PartyPath,
) -> Result<Response> {
    let (call, leg) = party_of(&state, &auth, &path)?;
    let bus = state.engine.events();
    let before = bus.last_seq(&call.account_id);
    state
        .engine
        .record(
            &call.account_id,
            &call.id,
            RecordAction::Start {
                announcement: false,
            },
        )
        .await?;
    // The engine names the recording in its event, published before the command's reply.
    let id = bus
        .subscribe(&call.account_id, Some(before))
        .missed
        .into_iter()
        .filter_map(|e| match e {
            hookflash_engine::BusEvent::Call(e) => Some(e),
            hookflash_engine::BusEvent::Conference(_) => None,
        })
        .find(|e| e.call_id == call.id && e.kind == hookflash_engine::EventKind::RecordingStarted)
        .and_then(|e| e.recording_id)
        .ok_or_else(|| RcError::Internal("The recording started but has no id".into()))?;
    info!(call_id = %call.id, party = %leg.id, recording = %id, "RingCentral recording started");
    Ok((
        StatusCode::CREATED,
        Json(RecordingState { id, active: true }),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
struct RecordingUpdate {
    active: bool,
}

/// `PATCH .../parties/{partyId}/recordings/{recordingId} {"active"}`: pauses (`false`) or
/// resumes (`true`) the call's running recording -> `{"id", "active"}`.
pub(crate) async fn update_recording(
    State(state): State<RcState>,
    auth: RcUser,
    Path((account, sid, pid, rid)): Path<(String, String, String, String)>,
    payload: Bytes,
) -> Result<Response> {
    let (call, leg) = party_of(&state, &auth, &(account, sid, pid))?;
    let req: RecordingUpdate = body(&payload, r#"{"active": true|false}"#)?;
    let running = state
        .engine
        .store()
        .recording(&call.account_id, &rid)
        .await?
        .filter(|r| r.call_id == call.id && r.state == "recording")
        .ok_or(RcError::NotFound("recordingId"))?;
    let action = if req.active {
        RecordAction::Resume
    } else {
        RecordAction::Pause
    };
    state
        .engine
        .record(&call.account_id, &call.id, action)
        .await
        .map_err(|e| match e {
            CommandError::NotFound => RcError::NotFound("telephonySessionId"),
            other => other.into(),
        })?;
    info!(call_id = %call.id, party = %leg.id, recording = %running.id, active = req.active, "RingCentral recording updated");
    Ok(Json(RecordingState {
        id: running.id,
        active: req.active,
    })
    .into_response())
}
