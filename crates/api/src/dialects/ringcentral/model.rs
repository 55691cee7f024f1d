//! How calls look in the RingCentral dialect: a call is a telephony session (its id is the
//! call's id), each leg a party (its id is the leg's id). Party statuses come from the engine's
//! typed leg states by one exhaustive `match`.

use hookflash_engine::{CallInfo, LegInfo, LegRole, LegState};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::sipgate::history::iso;

/// `status.code` of a party.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum PartyStatus {
    Setup,
    Proceeding,
    Answered,
    Hold,
    Parked,
    Disconnected,
    /// The party left the session without it ending (transferred away, parked by).
    Gone,
    /// The called party's side is the extension's mailbox: the caller hears the greeting or
    /// leaves a message (forwarded or rejected to voicemail, or unanswered).
    VoiceMail,
}

/// True when `leg` is the called side of a call that went to voicemail (the engine marks
/// the leg; it is `answered` from then on).
pub fn in_voicemail(leg: &LegInfo) -> bool {
    leg.role == LegRole::Callee && leg.voicemail
}

/// `direction` of a party, seen from the party: the caller's party is `Outbound`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Direction {
    Inbound,
    Outbound,
}

impl From<LegRole> for Direction {
    fn from(role: LegRole) -> Direction {
        match role {
            LegRole::Caller => Direction::Outbound,
            LegRole::Callee => Direction::Inbound,
        }
    }
}

/// True when every other answered party of the call is held and this one is not: the party
/// holds the call (what `POST .../hold` on it does).
pub fn holds_others(call: &CallInfo, leg: &LegInfo) -> bool {
    let mut others = call
        .legs
        .iter()
        .filter(|l| l.id != leg.id && l.state != LegState::Disconnected)
        .peekable();
    others.peek().is_some() && others.all(|l| l.held)
}

/// The status of a live party of a call (`parked`: the call waits in a park orbit).
pub fn party_status(call: &CallInfo, leg: &LegInfo, parked: bool) -> PartyStatus {
    match leg.state {
        LegState::Setup => PartyStatus::Setup,
        LegState::Proceeding | LegState::Ringing => PartyStatus::Proceeding,
        LegState::Answered if in_voicemail(leg) => PartyStatus::VoiceMail,
        LegState::Answered | LegState::Held if parked => PartyStatus::Parked,
        LegState::Held => PartyStatus::Hold,
        LegState::Answered if leg.held || holds_others(call, leg) => PartyStatus::Hold,
        LegState::Answered => PartyStatus::Answered,
        LegState::Disconnected => PartyStatus::Disconnected,
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub code: PartyStatus,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    pub phone_number: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extension_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extension_number: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Owner {
    pub account_id: String,
    pub extension_id: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RecordingState {
    pub id: String,
    pub active: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Party {
    pub id: String,
    pub status: Status,
    pub direction: Direction,
    pub from: Endpoint,
    pub to: Endpoint,
    /// Present for parties of the account's extensions (the SDK finds its own party by it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extension_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    pub muted: bool,
    pub stand_alone: bool,
    pub missed_call: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub recordings: Vec<RecordingState>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Origin {
    #[serde(rename = "type")]
    pub kind: &'static str,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    pub id: String,
    pub session_id: String,
    pub server_id: &'static str,
    pub creation_time: String,
    pub origin: Origin,
    pub parties: Vec<Party>,
}

/// A stable 12-digit number naming `input` (RingCentral's numeric ids: `sessionId`, device
/// ids).
pub fn twelve_digits(input: &str) -> String {
    let digest = Sha256::digest(input.as_bytes());
    let mut n = [0u8; 8];
    n.copy_from_slice(&digest[..8]);
    format!(
        "{}",
        u64::from_be_bytes(n) % 900_000_000_000 + 100_000_000_000
    )
}

/// RingCentral's numeric `sessionId` of a call.
pub fn numeric_session_id(call_id: &str) -> String {
    twelve_digits(call_id)
}

fn endpoint(call: &CallInfo, role: LegRole, fallback: &str) -> Endpoint {
    match call.legs.iter().find(|l| l.role == role) {
        Some(l) => Endpoint {
            phone_number: l.number.clone(),
            extension_id: l.owner_user_id.clone(),
            extension_number: l.owner_extension.clone(),
        },
        None => Endpoint {
            phone_number: fallback.to_string(),
            extension_id: None,
            extension_number: None,
        },
    }
}

/// One party of a call. `recording`: the call's running recording, if any.
pub fn party(
    call: &CallInfo,
    leg: &LegInfo,
    parked: bool,
    recording: Option<&RecordingState>,
) -> Party {
    let owner = leg.owner_user_id.as_ref().map(|user| Owner {
        account_id: call.account_id.clone(),
        extension_id: user.clone(),
    });
    Party {
        id: leg.id.clone(),
        status: Status {
            code: party_status(call, leg, parked),
        },
        direction: leg.role.into(),
        from: endpoint(call, LegRole::Caller, &call.from),
        to: endpoint(call, LegRole::Callee, &call.to),
        extension_id: owner.as_ref().map(|o| o.extension_id.clone()),
        account_id: owner.as_ref().map(|o| o.account_id.clone()),
        owner,
        muted: leg.muted,
        stand_alone: false,
        missed_call: false,
        recordings: match recording {
            Some(r) if leg.recording => vec![r.clone()],
            _ => vec![],
        },
    }
}

/// The whole session.
pub fn session(call: &CallInfo, parked: bool, recording: Option<&RecordingState>) -> Session {
    Session {
        id: call.id.clone(),
        session_id: numeric_session_id(&call.id),
        server_id: "hookflash",
        creation_time: iso(call.started_at_ms),
        origin: Origin { kind: "Call" },
        parties: call
            .legs
            .iter()
            .map(|l| party(call, l, parked, recording))
            .collect(),
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    use hookflash_engine::{
        CallDirection, CallInfo, CallState, LegDirection, LegInfo, LegRole, LegState,
    };

    pub(crate) fn leg(id: &str, role: LegRole, state: LegState, owner: Option<&str>) -> LegInfo {
        LegInfo {
            id: id.into(),
            role,
            direction: LegDirection::In,
            state,
            number: format!("n-{id}"),
            owner_user_id: owner.map(str::to_string),
            owner_extension: owner.map(|_| "201".to_string()),
            muted: false,
            held: false,
            recording: false,
            devices: vec![],
            voicemail: false,
        }
    }

    pub(crate) fn call(legs: Vec<LegInfo>) -> CallInfo {
        CallInfo {
            id: "c1".into(),
            account_id: "acc".into(),
            from: "201".into(),
            to: "202".into(),
            dialled: "202".into(),
            direction: CallDirection::Internal,
            state: CallState::Answered,
            started_at_ms: 0,
            answered_at_ms: Some(0),
            legs,
            dialling: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{call, leg};
    use super::*;

    #[test]
    fn statuses_follow_the_leg_states() {
        let c = call(vec![
            leg("a", LegRole::Caller, LegState::Answered, Some("u1")),
            leg("b", LegRole::Callee, LegState::Ringing, None),
        ]);
        assert_eq!(party_status(&c, &c.legs[0], false), PartyStatus::Answered);
        assert_eq!(party_status(&c, &c.legs[1], false), PartyStatus::Proceeding);
        assert_eq!(party_status(&c, &c.legs[0], true), PartyStatus::Parked);
        let mut held = c.clone();
        held.legs[1].state = LegState::Answered;
        held.legs[1].held = true;
        // The party whose peer is held holds the call; the held party is on hold too.
        assert_eq!(party_status(&held, &held.legs[0], false), PartyStatus::Hold);
        assert_eq!(party_status(&held, &held.legs[1], false), PartyStatus::Hold);
        let p = party(&held, &held.legs[0], false, None);
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["status"]["code"], "Hold");
        assert_eq!(json["direction"], "Outbound");
        assert_eq!(json["owner"]["extensionId"], "u1");
        assert_eq!(json["owner"]["accountId"], "acc");
        assert_eq!(json["to"]["phoneNumber"], "n-b");
        let s = serde_json::to_value(session(&held, false, None)).unwrap();
        assert_eq!(s["origin"]["type"], "Call");
        assert!(s["parties"][1].get("owner").is_none());
        assert_eq!(numeric_session_id("c1").len(), 12);
        // The callee's side once the caller is in its mailbox; the caller stays Answered.
        let mut vm = c.clone();
        vm.legs[1].state = LegState::Answered;
        vm.legs[1].voicemail = true;
        assert_eq!(
            party_status(&vm, &vm.legs[1], false),
            PartyStatus::VoiceMail
        );
        assert_eq!(party_status(&vm, &vm.legs[0], false), PartyStatus::Answered);
        let s = serde_json::to_value(party(&vm, &vm.legs[1], false, None)).unwrap();
        assert_eq!(s["status"]["code"], "VoiceMail");
        // A caller's leg that happens to be numbered so is not in voicemail.
        vm.legs[0].number = "voicemail".into();
        assert_eq!(party_status(&vm, &vm.legs[0], false), PartyStatus::Answered);
        assert_eq!(numeric_session_id("c1"), numeric_session_id("c1"));
    }
}
