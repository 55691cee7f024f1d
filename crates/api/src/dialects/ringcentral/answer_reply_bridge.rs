//! The party actions `answer`, `pickup`, `reply` and `bridge`. Each request is checked as RingCentral
//! checks it (the body, the party's state, the named device or session), so a client gets the
//! same 400 / 403 / 404 / 409 it would get there, and then carried out:
//!
//! - `answer {deviceId}`: the named phone (one ringing for the party) is rung again with an
//!   auto-answer (intercom) INVITE; when it answers, the caller is connected to it and the
//!   other devices stop ringing. A phone whose auto-answer setting is off rings on the
//!   ordinary way after a few seconds (the engine's bound), so the call is never dropped.
//! - `pickup {deviceId}`: a parked call (any of the account's: park orbits are shared) is
//!   retrieved onto the named phone of the token's extension: only that phone rings, and
//!   when it answers it takes the parker's place. A call that is not parked is 409 (404 when
//!   the extension cannot see it at all); the call stays as it was.
//! - `reply`: the server answers the ringing caller with text-to-speech and ends the call.
//! - `bridge`: the parties the extension talks to in two sessions are connected, its own two
//!   parties leave.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Response;
use hookflash_engine::{AudioSource, LegInfo, LegState};
use serde::Deserialize;
use tracing::info;

use super::account::check_account;
use super::account::device_contact;
use super::error::RcError;
use super::oauth::RcUser;
use super::parties::{party_of, ringing_callee};
use super::sessions::{body, is_parked, own_party, own_session, party_json, Result};
use super::RcState;

type PartyPath = Path<(String, String, String)>;

/// Longest `replyWithText`.
const MAX_REPLY_TEXT: usize = 1000;

/// `replyWithPattern.pattern` values (ringcentral-call-control's `ReplyWithPattern`).
const REPLY_PATTERNS: &[&str] = &[
    "WillCallYouBack",
    "CallMeBack",
    "OnMyWay",
    "OnTheOtherLine",
    "WillCallYouBackLater",
    "CallMeBackLater",
    "InAMeeting",
    "OnTheOtherLineNoCall",
];
const TIME_UNITS: &[&str] = &["Minute", "Hour", "Day"];

/// The party must be connected (409 otherwise).
fn connected(leg: &LegInfo, which: &str) -> Result<()> {
    match leg.state {
        LegState::Answered | LegState::Held => Ok(()),
        LegState::Setup | LegState::Proceeding | LegState::Ringing | LegState::Disconnected => {
            Err(RcError::WrongState(format!(
                "The {which} party is not connected; the call is unchanged"
            )))
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AnswerBody {
    device_id: String,
}

/// `POST .../parties/{partyId}/answer {"deviceId"}`.
pub(crate) async fn answer(
    State(state): State<RcState>,
    auth: RcUser,
    Path(path): PartyPath,
    payload: Bytes,
) -> Result<Response> {
    let (call, leg) = party_of(&state, &auth, &path)?;
    let req: AnswerBody = body(&payload, r#"{"deviceId": "..."}"#)?;
    ringing_callee(&leg)?;
    let Some(contact) = device_contact(&state, &auth.user, &req.device_id).await? else {
        return Err(RcError::invalid(
            "deviceId",
            format!(
                "Device [{}] is not a registered phone of this extension",
                req.device_id
            ),
        ));
    };
    let call = state
        .engine
        .answer_on_device(&call.account_id, &call.id, &auth.user.id, &contact)
        .await?;
    info!(call_id = %call.id, party = %leg.id, device = %req.device_id, "RingCentral answer");
    party_json(&state, &call, &leg).await
}

/// `POST .../parties/{partyId}/pickup {"deviceId"}`: the parked call is connected to the
/// token's extension on that device; the answer is the party.
pub(crate) async fn pickup(
    State(state): State<RcState>,
    auth: RcUser,
    Path(path): PartyPath,
    payload: Bytes,
) -> Result<Response> {
    let (account, sid, pid) = &path;
    check_account(&auth, account)?;
    let req: AnswerBody = body(&payload, r#"{"deviceId": "..."}"#)?;
    // A parked call is the account's to pick up; any other only when the extension is in it.
    let call = state
        .engine
        .call(&auth.account.id, sid)
        .map_err(|_| RcError::NotFound("telephonySessionId"))?;
    let parked = is_parked(&state, &call);
    if !parked && own_session(&state, &auth, sid).is_err() {
        return Err(RcError::NotFound("telephonySessionId"));
    }
    let leg = call.leg(pid).cloned().ok_or(RcError::NotFound("partyId"))?;
    // The parked party waits connected (to the music); the parker's released party is not it.
    let waiting = match leg.state {
        LegState::Answered | LegState::Held => true,
        LegState::Setup | LegState::Proceeding | LegState::Ringing | LegState::Disconnected => {
            false
        }
    };
    if !parked || !waiting {
        return Err(RcError::WrongState(format!(
            "Party [{pid}] is not parked; the call is unchanged"
        )));
    }
    let Some(contact) = device_contact(&state, &auth.user, &req.device_id).await? else {
        return Err(RcError::invalid(
            "deviceId",
            format!(
                "Device [{}] is not a registered phone of this extension",
                req.device_id
            ),
        ));
    };
    let call = state
        .engine
        .unpark_to_device(
            &call.account_id,
            &call.id,
            &auth.user.id,
            &auth.user.extension,
            &contact,
        )
        .await?;
    info!(call_id = %call.id, party = %leg.id, device = %req.device_id, "RingCentral pickup");
    party_json(&state, &call, &leg).await
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ReplyPattern {
    pattern: String,
    time: Option<u32>,
    time_unit: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ReplyBody {
    reply_with_text: Option<String>,
    reply_with_pattern: Option<ReplyPattern>,
}

fn check_reply(req: &ReplyBody) -> Result<()> {
    match (&req.reply_with_text, &req.reply_with_pattern) {
        (Some(text), None) => {
            if text.trim().is_empty() || text.chars().count() > MAX_REPLY_TEXT {
                return Err(RcError::invalid(
                    "replyWithText",
                    format!("Parameter [replyWithText] must be 1 to {MAX_REPLY_TEXT} characters"),
                ));
            }
            Ok(())
        }
        (None, Some(p)) => {
            if !REPLY_PATTERNS.contains(&p.pattern.as_str()) {
                return Err(RcError::invalid(
                    "replyWithPattern.pattern",
                    format!(
                        "Pattern [{}] is not one of {}",
                        p.pattern,
                        REPLY_PATTERNS.join(", ")
                    ),
                ));
            }
            match (&p.time, &p.time_unit) {
                (Some(0), _) => Err(RcError::invalid(
                    "replyWithPattern.time",
                    "Parameter [time] must be positive",
                )),
                (_, Some(unit)) if !TIME_UNITS.contains(&unit.as_str()) => Err(RcError::invalid(
                    "replyWithPattern.timeUnit",
                    "Parameter [timeUnit] must be Minute, Hour or Day",
                )),
                _ => Ok(()),
            }
        }
        _ => Err(RcError::invalid(
            "replyWithText",
            "Give exactly one of [replyWithText] and [replyWithPattern]",
        )),
    }
}

/// The words a reply pattern speaks (`time`/`timeUnit` where the pattern takes them).
fn pattern_text(p: &ReplyPattern) -> String {
    let when = match (p.time, p.time_unit.as_deref()) {
        (Some(n), unit) => {
            let unit = match unit.unwrap_or("Minute") {
                "Hour" => "hour",
                "Day" => "day",
                _ => "minute",
            };
            format!(" in {n} {unit}{}", if n == 1 { "" } else { "s" })
        }
        (None, _) => String::new(),
    };
    match p.pattern.as_str() {
        "WillCallYouBack" => format!("I will call you back{when}."),
        "CallMeBack" => format!("Please call me back{when}."),
        "OnMyWay" => "I am on my way.".into(),
        "OnTheOtherLine" => format!("I am on the other line. I will call you back{when}."),
        "WillCallYouBackLater" => "I will call you back later.".into(),
        "CallMeBackLater" => "Please call me back later.".into(),
        "InAMeeting" => "I am in a meeting.".into(),
        _ => "I am on the other line.".into(),
    }
}

/// `POST .../parties/{partyId}/reply {"replyWithText" | "replyWithPattern"}`: the ringing
/// devices stop, the server answers the caller, speaks the text (text-to-speech) and ends the
/// call; the answer is the party.
pub(crate) async fn reply(
    State(state): State<RcState>,
    auth: RcUser,
    Path(path): PartyPath,
    payload: Bytes,
) -> Result<Response> {
    let (call, leg) = party_of(&state, &auth, &path)?;
    let req: ReplyBody = body(
        &payload,
        r#"{"replyWithText": "..."} or {"replyWithPattern": {"pattern": "OnMyWay"}}"#,
    )?;
    check_reply(&req)?;
    ringing_callee(&leg)?;
    let text = match (&req.reply_with_text, &req.reply_with_pattern) {
        (Some(text), _) => text.trim().to_string(),
        (None, Some(p)) => pattern_text(p),
        (None, None) => return Err(RcError::invalid("replyWithText", "Give a reply")),
    };
    let message = AudioSource::Tts { text, voice: None };
    let call = state
        .engine
        .reply_to_caller(&call.account_id, &call.id, &message)
        .await?;
    info!(call_id = %call.id, party = %leg.id, user = %auth.user.extension, "RingCentral reply");
    party_json(&state, &call, &leg).await
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BridgeBody {
    telephony_session_id: String,
    party_id: String,
}

/// `POST .../parties/{partyId}/bridge {"telephonySessionId", "partyId"}`: the extension's
/// two parties (the one in the path, the one in the body) leave, and the parties they were
/// talking to are connected, in the path's session (the body's session ends). The answer is
/// the party that now sits in the path party's place.
pub(crate) async fn bridge(
    State(state): State<RcState>,
    auth: RcUser,
    Path(path): PartyPath,
    payload: Bytes,
) -> Result<Response> {
    let (call, leg) = party_of(&state, &auth, &path)?;
    let req: BridgeBody = body(
        &payload,
        r#"{"telephonySessionId": "...", "partyId": "..."}"#,
    )?;
    if req.telephony_session_id == path.1 {
        return Err(RcError::invalid(
            "telephonySessionId",
            "A party cannot be bridged with its own session",
        ));
    }
    let other = own_session(&state, &auth, &req.telephony_session_id)?;
    let other_leg = own_party(&other, &auth, &req.party_id)?;
    connected(&leg, "first")?;
    connected(other_leg, "second")?;
    let slot = call.legs.iter().position(|l| l.id == leg.id);
    let bridged = state
        .engine
        .bridge(
            &call.account_id,
            &call.id,
            &leg.id,
            &other.id,
            &other_leg.id,
        )
        .await?;
    info!(call_id = %call.id, party = %leg.id, other = %other_leg.id, "RingCentral bridge");
    let Some(joined) = slot.and_then(|i| bridged.legs.get(i)).cloned() else {
        return party_json(&state, &bridged, &leg).await;
    };
    party_json(&state, &bridged, &joined).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(json: &str) -> Result<()> {
        check_reply(&serde_json::from_str::<ReplyBody>(json).unwrap())
    }

    #[test]
    fn reply_bodies_are_checked_as_the_sdk_sends_them() {
        assert!(reply(r#"{"replyWithText": "On my way"}"#).is_ok());
        assert!(reply(r#"{"replyWithPattern": {"pattern": "OnMyWay"}}"#).is_ok());
        assert!(reply(
            r#"{"replyWithPattern": {"pattern": "CallMeBack", "time": 5, "timeUnit": "Minute"}}"#
        )
        .is_ok());
        for bad in [
            "{}",
            r#"{"replyWithText": " "}"#,
            r#"{"replyWithText": "x", "replyWithPattern": {"pattern": "OnMyWay"}}"#,
            r#"{"replyWithPattern": {"pattern": "Whatever"}}"#,
            r#"{"replyWithPattern": {"pattern": "CallMeBack", "time": 0}}"#,
            r#"{"replyWithPattern": {"pattern": "CallMeBack", "time": 5, "timeUnit": "Week"}}"#,
        ] {
            let e = reply(bad).unwrap_err();
            assert_eq!(e.status().as_u16(), 400, "{bad}");
        }
        let long = format!(
            r#"{{"replyWithText": "{}"}}"#,
            "a".repeat(MAX_REPLY_TEXT + 1)
        );
        assert!(reply(&long).is_err());
    }
}
