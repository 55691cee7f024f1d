//! `gather`: collects DTMF digits, optionally while a nested `say` or `play` prompts.
//!
//! - `input` must include "digits"; speech is not recognised here: `["speech"]` alone posts
//!   `reason: "error"` with `details: "speech input is not supported"` to the actionHook at
//!   once (and the application goes on), `["digits","speech"]` collects digits only.
//! - Ends with `reason: "dtmfDetected"` and `digits` when `numDigits` or `maxDigits` keys
//!   are in, when `finishOnKey` is pressed (not included in `digits`), or when
//!   `interDigitTimeout` (default 5 s) passes after a key with at least `minDigits`
//!   (default 1) collected; otherwise `reason: "timeout"` once `timeout` (default 5 s,
//!   counted from the end of the prompt) or the inter-digit wait passes. 0 turns a timer off.
//! - The first key stops the prompt (`dtmfBargein`, default true); keys pressed while it plays
//!   count. Keys pressed before the gather started do not.
//! - Without an actionHook the application goes on with the next verb.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::common::{is_dtmf_key, seconds, Loop};
use super::{Play, Props, Say};
use crate::alert::AlertKind;
use crate::control::{Audio, ControlError, PlayEnd};
use crate::error::AppError;
use crate::exec::{Exec, Flow};
use crate::hook::HookSpec;

/// What the caller may answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Input {
    Digits,
    Speech,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Gather {
    #[serde(default)]
    pub action_hook: Option<HookSpec>,
    #[serde(default)]
    pub input: Option<Vec<Input>>,
    #[serde(default)]
    pub finish_on_key: Option<String>,
    #[serde(default)]
    pub num_digits: Option<u32>,
    #[serde(default)]
    pub min_digits: Option<u32>,
    #[serde(default)]
    pub max_digits: Option<u32>,
    #[serde(default)]
    pub inter_digit_timeout: Option<f64>,
    #[serde(default)]
    pub timeout: Option<f64>,
    #[serde(default)]
    pub dtmf_bargein: Option<bool>,
    #[serde(default)]
    pub say: Option<Say>,
    #[serde(default)]
    pub play: Option<Play>,
    /// RCML: no keys before the timeout goes on with the next verb without a request
    /// (jambonz posts `reason: "timeout"`).
    #[serde(skip)]
    pub fall_through_on_timeout: bool,
}

pub const SPEECH_NOT_SUPPORTED: &str = "speech input is not supported";
const DEFAULT_TIMEOUT: f64 = 5.0;
const DEFAULT_INTER_DIGIT: f64 = 5.0;

impl Props for Gather {
    fn check(&self) -> Result<(), String> {
        if let Some(k) = &self.finish_on_key {
            let mut chars = k.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) if is_dtmf_key(c) => {}
                _ => return Err(format!("finishOnKey {k:?} is not one DTMF key")),
            }
        }
        if let Some(t) = self.timeout {
            seconds("timeout", t)?;
        }
        if let Some(t) = self.inter_digit_timeout {
            seconds("interDigitTimeout", t)?;
        }
        if let Some(s) = &self.say {
            s.check().map_err(|e| format!("say: {e}"))?;
        }
        if let Some(p) = &self.play {
            p.check().map_err(|e| format!("play: {e}"))?;
        }
        if self.input.as_ref().is_some_and(|i| i.is_empty()) {
            return Err("input must name at least one kind of input".into());
        }
        Ok(())
    }
}

/// How the collection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Digits,
    Timeout,
}

/// The prompt's playbacks, one after the other, `loop` rounds.
struct Prompt {
    items: Vec<Audio>,
    rounds: Option<u32>,
    early: bool,
    next: usize,
    played_rounds: u32,
    /// Playbacks in a row that ended the moment they started (a looped prompt of audio that
    /// ends at once must not spin).
    instant_ends: u32,
}

impl Prompt {
    fn new(items: Vec<Audio>, repeat: Loop, early: bool) -> Self {
        Prompt {
            items,
            rounds: repeat.rounds(),
            early,
            next: 0,
            played_rounds: 0,
            instant_ends: 0,
        }
    }

    fn next_audio(&mut self) -> Option<Audio> {
        if self.items.is_empty() || self.instant_ends >= 100 {
            return None;
        }
        if self.next == self.items.len() {
            self.next = 0;
            self.played_rounds += 1;
        }
        if self.rounds.is_some_and(|n| self.played_rounds >= n) {
            return None;
        }
        let a = self.items.get(self.next).cloned();
        self.next += 1;
        a
    }
}

/// Awaits the playback in `p`, if any (never resolves without one).
async fn play_end(p: &mut Option<oneshot::Receiver<PlayEnd>>) -> PlayEnd {
    match p {
        Some(rx) => rx.await.unwrap_or(PlayEnd::Finished),
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn timer(value: Option<f64>, default: f64) -> Option<Duration> {
    let secs = value.unwrap_or(default);
    if secs <= 0.0 {
        return None;
    }
    seconds("timer", secs).ok()
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Gather {
    fn prompt(&self, x: &Exec) -> Option<Prompt> {
        if let Some(s) = &self.say {
            return Some(Prompt::new(s.audio(&x.synth), s.repeat, s.early_media));
        }
        self.play
            .as_ref()
            .map(|p| Prompt::new(p.audio(), p.repeat, p.early_media))
    }

    /// Starts the prompt's next playback; None when the prompt is over.
    async fn start_next(
        x: &mut Exec,
        prompt: &mut Option<Prompt>,
    ) -> Result<Option<(oneshot::Receiver<PlayEnd>, Instant)>, AppError> {
        let Some(p) = prompt.as_mut() else {
            return Ok(None);
        };
        let Some(audio) = p.next_audio() else {
            return Ok(None);
        };
        let early = p.early;
        match x.start_play(audio, early).await {
            Ok(rx) => Ok(Some((rx, Instant::now()))),
            Err(ControlError::Audio(e)) => {
                x.alert(AlertKind::PlayFailed, format!("gather prompt: {e}"));
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    pub(crate) async fn exec(&self, x: &mut Exec) -> Result<Flow, AppError> {
        let input = self.input.clone().unwrap_or_else(|| vec![Input::Digits]);
        if !input.contains(&Input::Digits) {
            x.alert(
                AlertKind::NotSupported,
                format!("gather: {SPEECH_NOT_SUPPORTED}"),
            );
            let mut r = Map::new();
            r.insert("reason".into(), Value::from("error"));
            r.insert("details".into(), Value::from(SPEECH_NOT_SUPPORTED));
            return x.action(self.action_hook.as_ref(), r, "actionHook").await;
        }
        if input.contains(&Input::Speech) {
            x.alert(
                AlertKind::NotSupported,
                format!("gather: {SPEECH_NOT_SUPPORTED}; collecting digits only"),
            );
        }
        let (outcome, digits) = self.collect(x).await?;
        if outcome == Outcome::Timeout && self.fall_through_on_timeout {
            return Ok(Flow::Next);
        }
        let mut r = Map::new();
        match outcome {
            Outcome::Digits => {
                r.insert("digits".into(), Value::from(digits));
                r.insert("reason".into(), Value::from("dtmfDetected"));
            }
            Outcome::Timeout => {
                r.insert("reason".into(), Value::from("timeout"));
            }
        }
        x.action(self.action_hook.as_ref(), r, "actionHook").await
    }

    async fn collect(&self, x: &mut Exec) -> Result<(Outcome, String), AppError> {
        let num = self.num_digits.filter(|n| *n > 0).map(|n| n as usize);
        let max = self.max_digits.filter(|n| *n > 0).map(|n| n as usize);
        let min = self.min_digits.unwrap_or(1).max(1) as usize;
        let finish = self.finish_on_key.as_deref().and_then(|k| k.chars().next());
        let timeout = timer(self.timeout, DEFAULT_TIMEOUT);
        let inter = timer(self.inter_digit_timeout, DEFAULT_INTER_DIGIT);
        let barge_in = self.dtmf_bargein != Some(false);

        x.drain_dtmf();
        let mut prompt = self.prompt(x);
        if prompt.is_none() {
            // Nothing to play answers the call: answer it here.
            x.answer().await?;
        }
        let mut playing = None;
        let mut play_started = Instant::now();
        if let Some((rx, at)) = Self::start_next(x, &mut prompt).await? {
            playing = Some(rx);
            play_started = at;
        }
        let mut digits = String::new();
        // Silence after the prompt; set when the prompt is over.
        let mut no_input = match playing {
            None => timeout.map(|t| Instant::now() + t),
            Some(_) => None,
        };
        let mut inter_digit: Option<Instant> = None;

        let outcome = loop {
            tokio::select! {
                biased;
                key = x.dtmf.recv() => {
                    // The run holds the sender while verbs execute.
                    let Some(key) = key else { std::future::pending::<()>().await; continue };
                    if barge_in && playing.take().is_some() {
                        x.stop_play().await;
                        prompt = None;
                    }
                    if Some(key) == finish {
                        break Outcome::Digits;
                    }
                    digits.push(key);
                    if num == Some(digits.len()) || max == Some(digits.len()) {
                        break Outcome::Digits;
                    }
                    if let Some(d) = inter {
                        inter_digit = Some(Instant::now() + d);
                        no_input = None;
                    } else if playing.is_none() && no_input.is_none() {
                        // No wait between keys: the silence timer runs from the barge-in.
                        no_input = timeout.map(|t| Instant::now() + t);
                    }
                }
                end = play_end(&mut playing) => {
                    playing = None;
                    if end == PlayEnd::CallEnded {
                        return Err(x.call_ended().await.into());
                    }
                    if end == PlayEnd::Finished {
                        if let Some(p) = prompt.as_mut() {
                            if play_started.elapsed().is_zero() {
                                p.instant_ends += 1;
                            } else {
                                p.instant_ends = 0;
                            }
                        }
                        if let Some((rx, at)) = Self::start_next(x, &mut prompt).await? {
                            playing = Some(rx);
                            play_started = at;
                            continue;
                        }
                    }
                    // The prompt is over: the silence timer runs unless a key's wait does.
                    prompt = None;
                    if inter_digit.is_none() {
                        no_input = timeout.map(|t| Instant::now() + t);
                    }
                }
                _ = sleep_until(earliest(no_input, inter_digit)) => {
                    break if digits.len() >= min { Outcome::Digits } else { Outcome::Timeout };
                }
            }
        };
        if playing.is_some() {
            x.stop_play().await;
        }
        Ok((outcome, digits))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verbs::Verb;
    use serde_json::json;

    #[test]
    fn properties() {
        let Verb::Gather(g) = Verb::parse(&json!({"verb": "gather", "actionHook": "/d",
            "input": ["digits"], "numDigits": 3, "finishOnKey": "#", "timeout": 8,
            "say": {"text": "press"}}))
        .unwrap() else {
            panic!()
        };
        assert_eq!(g.num_digits, Some(3));
        assert_eq!(g.timeout, Some(8.0));
        assert!(g.say.is_some());
        for bad in [
            json!({"verb": "gather", "input": ["dtmf"]}),
            json!({"verb": "gather", "input": []}),
            json!({"verb": "gather", "finishOnKey": "##"}),
            json!({"verb": "gather", "numDigits": "3"}),
            json!({"verb": "gather", "timeout": -1}),
            json!({"verb": "gather", "say": {"text": ""}}),
            json!({"verb": "gather", "play": {}}),
        ] {
            assert!(Verb::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prompt_rounds() {
        let a = Audio::Url("a".into());
        let b = Audio::Url("b".into());
        let mut p = Prompt::new(vec![a.clone(), b.clone()], Loop::Times(2), false);
        let got: Vec<_> = std::iter::from_fn(|| p.next_audio()).collect();
        assert_eq!(got, vec![a.clone(), b.clone(), a.clone(), b]);
        let mut p = Prompt::new(vec![a.clone()], Loop::Forever, false);
        assert_eq!(p.next_audio(), Some(a.clone()));
        assert_eq!(p.next_audio(), Some(a));
        p.instant_ends = 100;
        assert_eq!(p.next_audio(), None);
    }
}
