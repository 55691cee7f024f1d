//! `<Record>`: records the caller after a beep.
//!
//! `action` (default: the current document's URL) gets `RecordingUrl`, `RecordingDuration`
//! and `Digits` (the key that ended it) and its answer replaces the document. `maxLength`
//! (default 3600 s), `finishOnKey` (default any key, `1234567890*#`; empty: none),
//! `timeout` (seconds of silence that end it, default 5; 0: none), `playBeep` (default
//! true). `transcribe` is not available (refused).

use roxmltree::Node;

use super::{attr, hook, method, number, RcmlError};
use crate::verbs::{Record, Verb};

const DEFAULT_MAX_LENGTH: f64 = 3600.0;
const DEFAULT_TIMEOUT: f64 = 5.0;
const DEFAULT_FINISH_KEYS: &str = "1234567890*#";

pub(super) fn record(node: Node) -> Result<Verb, RcmlError> {
    let play_beep = match attr(node, "playBeep")
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("true") => true,
        Some("false") => false,
        Some(other) => {
            return Err(RcmlError::invalid(
                "Record",
                format!("playBeep={other:?} is not true or false"),
            ))
        }
    };
    if attr(node, "transcribe").is_some_and(|t| t.eq_ignore_ascii_case("true")) {
        return Err(RcmlError::NotAvailable {
            verb: "Record",
            reason: "transcribe is not available on hookflash".into(),
        });
    }
    let finish_on_key = match node.attribute("finishOnKey") {
        None => DEFAULT_FINISH_KEYS.to_string(),
        Some(k) => k.trim().to_string(),
    };
    // No action: the current document's URL (an empty URL resolves to it).
    let action = hook(
        attr(node, "action").unwrap_or(""),
        method("Record", node, "method")?,
    );
    let verb = Record {
        action_hook: Some(action),
        max_length: number("Record", node, "maxLength")?.unwrap_or(DEFAULT_MAX_LENGTH),
        finish_on_key,
        play_beep,
        timeout: number("Record", node, "timeout")?.unwrap_or(DEFAULT_TIMEOUT),
    };
    verb.check()
        .map_err(|reason| RcmlError::invalid("Record", reason))?;
    Ok(Verb::Record(Box::new(verb)))
}
