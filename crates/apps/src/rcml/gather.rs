//! `<Gather>`: digits with a nested prompt.
//!
//! - `action` (default: the current document's URL) gets `Digits` when keys came in; its
//!   answer replaces the document. With no keys before `timeout` (default 5 s, also the wait
//!   between keys) the document goes on with the next verb and no request is made.
//! - `finishOnKey` (default `#`; empty: none), `numDigits`, `input` (`dtmf`; `speech` is not
//!   recognised here and reported).
//! - Nested `<Say>`s or `<Play>`s are the prompt, played in order; a nested `<Pause>` adds its
//!   length to the wait after the prompt. Says and Plays mixed in one Gather are refused.

use roxmltree::Node;

use super::prompts::{pause_length, play_props, say_props};
use super::{attr, count, hook, method, number, RcmlError};
use crate::verbs::gather::Input;
use crate::verbs::{Gather, Play, Say, Verb};

const DEFAULT_TIMEOUT: f64 = 5.0;

pub(super) fn gather(node: Node) -> Result<Verb, RcmlError> {
    let mut say: Option<Say> = None;
    let mut play: Option<Play> = None;
    let mut extra_wait = 0.0;
    for child in node.children().filter(Node::is_element) {
        match child.tag_name().name() {
            "Say" => {
                let s = say_props(child)?;
                match &mut say {
                    Some(prev) => prev.text.0.extend(s.text.0),
                    None => say = Some(s),
                }
            }
            "Play" => {
                let p = play_props(child)?;
                match &mut play {
                    Some(prev) => prev.url.0.extend(p.url.0),
                    None => play = Some(p),
                }
            }
            "Pause" => extra_wait += pause_length(child)?,
            other => {
                return Err(RcmlError::invalid(
                    "Gather",
                    format!("<{other}> cannot be nested in <Gather> (Say, Play, Pause can)"),
                ))
            }
        }
    }
    if say.is_some() && play.is_some() {
        return Err(RcmlError::NotAvailable {
            verb: "Gather",
            reason: "a prompt mixing <Say> and <Play> is not supported yet; use one kind".into(),
        });
    }
    let finish_on_key = match node.attribute("finishOnKey").map(str::trim) {
        None => Some("#".to_string()),
        Some("") => None,
        Some(k) => {
            let mut chars = k.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) if crate::verbs::common::is_dtmf_key(c) => Some(k.to_string()),
                _ => {
                    return Err(RcmlError::invalid(
                        "Gather",
                        format!("finishOnKey={k:?} is not one DTMF key"),
                    ))
                }
            }
        }
    };
    let input = match attr(node, "input").map(str::to_ascii_lowercase).as_deref() {
        None | Some("dtmf") => vec![Input::Digits],
        Some("speech") => vec![Input::Speech],
        Some("dtmf speech") | Some("speech dtmf") => vec![Input::Digits, Input::Speech],
        Some(other) => {
            return Err(RcmlError::invalid(
                "Gather",
                format!("input={other:?} is not dtmf or speech"),
            ))
        }
    };
    let timeout = number("Gather", node, "timeout")?.unwrap_or(DEFAULT_TIMEOUT);
    let method = method("Gather", node, "method")?;
    // No action: the current document's URL (an empty URL resolves to it).
    let action = hook(attr(node, "action").unwrap_or(""), method);
    Ok(Verb::Gather(Box::new(Gather {
        action_hook: Some(action),
        input: Some(input),
        finish_on_key,
        num_digits: count("Gather", node, "numDigits")?,
        min_digits: None,
        max_digits: None,
        inter_digit_timeout: Some(timeout),
        timeout: Some(timeout + extra_wait),
        dtmf_bargein: Some(true),
        say,
        play,
        fall_through_on_timeout: true,
    })))
}
