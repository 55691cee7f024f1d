//! `<Dial>`: connects the caller with a number, a registered client or a SIP URI.
//!
//! Nouns `<Number>`, `<Client>` (a user of the account, by extension) and `<Sip>`, or the
//! number as the Dial's own text; the first is dialled (further ones are reported, as the
//! jambonz dial does). `action` gets `DialCallStatus`, `DialCallSid`, `DialCallDuration` and
//! its answer replaces the document; without it the document goes on. `timeout` (default 30
//! s) rings, `timeLimit` caps the connected time, `callerId` is what the callee sees.
//! `record` (`record-from-answer`, `record-from-ringing`, their `-dual` forms, `true`) records
//! the call; the action then also gets `RecordingUrl` and `RecordingDuration`.
//! `<Conference>name</Conference>` puts the caller into the account's named conference (the
//! `conference` verb): attributes `muted`, `beep` (`true`/`onEnter`: a beep when it joins;
//! `false`/`onExit`: none), `startConferenceOnEnter` (default true), `endConferenceOnExit`,
//! `maxParticipants` (1-50), `record` (`record-from-start`: the conference's mix is recorded
//! from this join on, one WAV listed with the account's recordings; `do-not-record`);
//! `waitUrl` is not fetched (music on hold). The Dial's `action` is requested when the caller
//! leaves the conference. `statusCallback` is not sent.

use roxmltree::Node;

use super::{action, attr, number, text, RcmlError};
use crate::verbs::dial::{DialRecord, DialTarget};
use crate::verbs::{Conference, Dial, Verb};

const DEFAULT_TIMEOUT: f64 = 30.0;

pub(super) fn dial(node: Node) -> Result<Verb, RcmlError> {
    let mut target = Vec::new();
    for child in node.children().filter(Node::is_element) {
        let value = text(child);
        let name = child.tag_name().name();
        if name == "Conference" {
            return conference(node, child);
        }
        if value.is_empty() {
            return Err(RcmlError::invalid("Dial", format!("<{name}> is empty")));
        }
        target.push(match name {
            "Number" => DialTarget::Phone { number: value },
            "Client" => DialTarget::User { name: value },
            "Sip" => DialTarget::Sip { sip_uri: value },
            other => {
                return Err(RcmlError::invalid(
                    "Dial",
                    format!("<{other}> is not a Dial noun (Number, Client, Sip)"),
                ))
            }
        });
    }
    if target.is_empty() {
        let number = text(node);
        if number.is_empty() {
            return Err(RcmlError::invalid("Dial", "nothing to dial"));
        }
        target.push(DialTarget::Phone { number });
    }
    let record = match attr(node, "record").map(str::to_ascii_lowercase).as_deref() {
        None | Some("do-not-record") | Some("false") => None,
        Some("true") | Some("record-from-answer") | Some("record-from-answer-dual") => {
            Some(DialRecord::FromAnswer)
        }
        Some("record-from-ringing") | Some("record-from-ringing-dual") => {
            Some(DialRecord::FromRinging)
        }
        Some(other) => {
            return Err(RcmlError::invalid(
                "Dial",
                format!(
                "record={other:?} is not do-not-record, record-from-answer or record-from-ringing"
            ),
            ))
        }
    };
    Ok(Verb::Dial(Box::new(Dial {
        target,
        action_hook: action("Dial", node)?,
        caller_id: attr(node, "callerId").map(str::to_string),
        timeout: Some(number("Dial", node, "timeout")?.unwrap_or(DEFAULT_TIMEOUT)),
        time_limit: number("Dial", node, "timeLimit")?,
        answer_on_bridge: None,
        headers: None,
        dtmf_capture: None,
        dtmf_hook: None,
        confirm_hook: None,
        listen: None,
        transcribe: None,
        record,
    })))
}

/// A `true`/`false` attribute (default `default`).
fn flag(node: Node, name: &str, default: bool) -> Result<bool, RcmlError> {
    match attr(node, name).map(str::to_ascii_lowercase).as_deref() {
        None => Ok(default),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(other) => Err(RcmlError::invalid(
            "Dial",
            format!("<Conference {name}={other:?}> is not true or false"),
        )),
    }
}

/// `<Dial><Conference>`: the `conference` verb.
fn conference(dial: Node, noun: Node) -> Result<Verb, RcmlError> {
    let beep = match attr(noun, "beep").map(str::to_ascii_lowercase).as_deref() {
        None | Some("true") | Some("onenter") => true,
        Some("false") | Some("onexit") => false,
        Some(other) => {
            return Err(RcmlError::invalid(
                "Dial",
                format!("<Conference beep={other:?}> is not true, false, onEnter or onExit"),
            ))
        }
    };
    let max_participants = match attr(noun, "maxParticipants") {
        None => None,
        Some(v) => match v.parse::<u32>() {
            Ok(n) if (1..=50).contains(&n) => Some(n),
            _ => {
                return Err(RcmlError::invalid(
                    "Dial",
                    format!("<Conference maxParticipants={v:?}> is not 1-50"),
                ))
            }
        },
    };
    let record_from_start = match attr(noun, "record").map(str::to_ascii_lowercase).as_deref() {
        None | Some("do-not-record") => false,
        Some("record-from-start") => true,
        Some(other) => {
            return Err(RcmlError::invalid(
                "Dial",
                format!("<Conference record={other:?}> is not record-from-start or do-not-record"),
            ))
        }
    };
    let c = Conference {
        name: text(noun),
        beep,
        start_conference_on_enter: Some(flag(noun, "startConferenceOnEnter", true)?),
        end_conference_on_exit: flag(noun, "endConferenceOnExit", false)?,
        max_participants,
        join_muted: flag(noun, "muted", false)?,
        wait_hook: None,
        status_hook: None,
        status_events: Vec::new(),
        action_hook: action("Dial", dial)?,
        member_tag: None,
        speak_only_to: None,
        enter_hook: None,
        end_hook: None,
        record: None,
        listen: None,
        distribute_dtmf: None,
        end_conference_duration: None,
        record_from_start,
    };
    crate::verbs::check_props(&c).map_err(|reason| RcmlError::invalid("Dial", reason))?;
    Ok(Verb::Conference(Box::new(c)))
}
