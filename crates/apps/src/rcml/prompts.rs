//! `<Say>`, `<Play>` and `<Pause>`: on their own and nested in `<Gather>`.

use roxmltree::Node;

use super::{attr, number, repeat, text, RcmlError};
use crate::verbs::common::{OneOrMany, Synthesizer};
use crate::verbs::{Pause, Play, Say, Verb};

/// RCML's default `<Pause>` length.
const DEFAULT_PAUSE_SECS: f64 = 1.0;

pub(super) fn say_props(node: Node) -> Result<Say, RcmlError> {
    let words = text(node);
    if words.is_empty() {
        return Err(RcmlError::invalid("Say", "nothing to say (empty text)"));
    }
    let voice = attr(node, "voice").map(str::to_string);
    let language = attr(node, "language").map(str::to_string);
    Ok(Say {
        text: OneOrMany(vec![words]),
        synthesizer: (voice.is_some() || language.is_some()).then_some(Synthesizer {
            vendor: None,
            language,
            voice,
        }),
        repeat: repeat("Say", node)?,
        early_media: false,
    })
}

pub(super) fn play_props(node: Node) -> Result<Play, RcmlError> {
    let url = text(node);
    if url.is_empty() {
        return Err(RcmlError::invalid("Play", "no URL to play"));
    }
    Ok(Play {
        url: OneOrMany(vec![url]),
        repeat: repeat("Play", node)?,
        early_media: false,
        timeout_secs: None,
        seek_offset: None,
        action_hook: None,
    })
}

pub(super) fn pause_length(node: Node) -> Result<f64, RcmlError> {
    Ok(number("Pause", node, "length")?.unwrap_or(DEFAULT_PAUSE_SECS))
}

pub(super) fn say(node: Node) -> Result<Verb, RcmlError> {
    say_props(node).map(Verb::Say)
}

pub(super) fn play(node: Node) -> Result<Verb, RcmlError> {
    play_props(node).map(Verb::Play)
}

pub(super) fn pause(node: Node) -> Result<Verb, RcmlError> {
    Ok(Verb::Pause(Pause {
        length: pause_length(node)?,
    }))
}
