//! What a verb executes with: the call, its control, the run's session and hook client, the
//! caller's digits, and the defaults set by `config`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::alert::AlertKind;
use crate::app::{CallStatus, Hook};
use crate::control::{Audio, CallControl, CallRef, ControlError, PlayEnd};
use crate::error::AppError;
use crate::hook::{self, Answer, HookSpec};
use crate::session::Session;
use crate::verbs::common::{Loop, Synthesizer};
use crate::verbs::Script;

/// What a verb tells the run to do next.
#[derive(Debug)]
pub(crate) enum Flow {
    /// Go on with the next verb.
    Next,
    /// An action hook answered a new list: it replaces the rest.
    Replace(Script),
    /// The application is done.
    End(Ending),
}

/// How an application ended by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// The list ran out (the call is hung up).
    ListDone,
    /// `hangup` ran.
    HungUp,
    /// `sip:decline` ran with this status.
    Declined(u16),
}

/// How a playback (all its items and rounds) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Played {
    Finished,
    Stopped,
    /// `timeoutSecs` ran out and it was stopped.
    TimedOut,
}

/// How long a verb that saw the call end waits for the run's end signal.
const CALL_END_GRACE: Duration = Duration::from_secs(1);

/// A "forever" loop whose rounds take no time at all (audio that ends at once) is cut after
/// this many rounds, so it cannot spin.
const EMPTY_ROUNDS_LIMIT: u32 = 100;

pub(crate) struct Exec {
    pub call: CallRef,
    pub ctl: Arc<dyn CallControl>,
    pub session: Arc<Session>,
    /// The caller's keys, forwarded by the run while it executes verbs.
    pub dtmf: mpsc::Receiver<char>,
    /// `config.synthesizer`: defaults for `say`.
    pub synth: Synthesizer,
    /// Where the account's recordings are downloaded (the runtime's setting).
    pub recording_links: Option<RecordingLinks>,
}

/// The URL of a recording, from (account id, recording id): set by the HTTP API, which
/// serves the audio.
pub type RecordingLinks = Arc<dyn Fn(&str, &str) -> String + Send + Sync>;

impl Exec {
    /// An executor for something that runs beside the verbs (a nested or background
    /// `listen`): the same call, control and session, no keys of its own.
    pub fn beside(&self) -> Exec {
        Exec {
            call: self.call.clone(),
            ctl: self.ctl.clone(),
            session: self.session.clone(),
            dtmf: mpsc::channel(1).1,
            synth: self.synth.clone(),
            recording_links: self.recording_links.clone(),
        }
    }

    /// Answers the leg unless it is answered already.
    pub async fn answer(&mut self) -> Result<(), AppError> {
        if self.session.is_answered() {
            return Ok(());
        }
        self.ctl.answer(&self.call).await?;
        self.session.answered();
        Ok(())
    }

    /// Starts one playback (answering the leg unless `early`).
    pub async fn start_play(
        &mut self,
        audio: Audio,
        early: bool,
    ) -> Result<oneshot::Receiver<PlayEnd>, ControlError> {
        let early = early && !self.session.is_answered();
        let rx = self.ctl.play(&self.call, audio, early).await?;
        if early {
            self.session.report(CallStatus::EarlyMedia, Some(183), None);
        } else {
            self.session.answered();
        }
        Ok(rx)
    }

    /// Stops what plays; a failure is only logged (the playback ends anyway).
    pub async fn stop_play(&mut self) {
        if let Err(e) = self.ctl.stop_play(&self.call).await {
            debug!(error = %e, "stop_play");
        }
    }

    /// Plays `items` in order, `times` rounds, for at most `limit`. A playback that ends
    /// with the call is [`ControlError::Gone`].
    pub async fn play_all(
        &mut self,
        items: &[Audio],
        times: Loop,
        early: bool,
        limit: Option<Duration>,
    ) -> Result<Played, ControlError> {
        let deadline = limit.map(|d| Instant::now() + d);
        let mut round = 0u32;
        let mut empty_rounds = 0u32;
        loop {
            if times.rounds().is_some_and(|n| round >= n) {
                return Ok(Played::Finished);
            }
            round = round.saturating_add(1);
            let started = Instant::now();
            for item in items {
                let rx = self.start_play(item.clone(), early).await?;
                let end = match deadline {
                    None => rx.await.unwrap_or(PlayEnd::Finished),
                    Some(at) => tokio::select! {
                        end = rx => end.unwrap_or(PlayEnd::Finished),
                        _ = tokio::time::sleep_until(at) => {
                            self.stop_play().await;
                            return Ok(Played::TimedOut);
                        }
                    },
                };
                match end {
                    PlayEnd::Finished => {}
                    PlayEnd::Stopped => return Ok(Played::Stopped),
                    PlayEnd::CallEnded => return Err(self.call_ended().await),
                }
            }
            if times == Loop::Forever && started.elapsed().is_zero() {
                empty_rounds += 1;
                if empty_rounds >= EMPTY_ROUNDS_LIMIT {
                    warn!(call_id = %self.call.call_id, "a looped playback takes no time; stopped");
                    return Ok(Played::Finished);
                }
                tokio::task::yield_now().await;
            } else {
                empty_rounds = 0;
            }
        }
    }

    /// A playback ended with the call: the run's end signal is due. Wait a moment for it
    /// (the run drops this verb when it comes); without it, the call is gone all the same.
    /// Nothing after this runs another verb or hook.
    pub async fn call_ended(&mut self) -> ControlError {
        tokio::time::sleep(CALL_END_GRACE).await;
        ControlError::Gone
    }

    /// Forgets keys pressed before now (a gather listens from its start).
    pub fn drain_dtmf(&mut self) {
        while self.dtmf.try_recv().is_ok() {}
    }

    /// Requests `spec` (resolved against the application's base) with the call fields and
    /// `results`; what it answered.
    pub async fn request(
        &mut self,
        spec: &HookSpec,
        results: Map<String, Value>,
        label: &'static str,
    ) -> Result<Answer, AppError> {
        let target = hook::resolve(&self.session.base(), spec)?;
        self.request_to(&target, results, label).await
    }

    pub async fn request_to(
        &mut self,
        target: &Hook,
        results: Map<String, Value>,
        label: &'static str,
    ) -> Result<Answer, AppError> {
        let mut payload = self.session.payload();
        payload.extend(results);
        let request = hook::request(
            target,
            payload,
            &self.session.secret,
            &self.session.language,
            label,
        );
        let reply = self
            .session
            .delivery
            .send(&request)
            .await
            .map_err(|source| AppError::Hook {
                label,
                url: target.url.clone(),
                source,
            })?;
        hook::parse_answer(&reply, &self.session.language, label, &target.url)
    }

    /// A verb's actionHook with its results: a non-empty list answered replaces the rest of
    /// the application; anything else (empty body, `[]`, not JSON) lets it go on, as jambonz
    /// does. RCML: the answer always replaces the rest (an empty `<Response/>` ends the
    /// call). Without a hook: go on.
    pub async fn action(
        &mut self,
        spec: Option<&HookSpec>,
        results: Map<String, Value>,
        label: &'static str,
    ) -> Result<Flow, AppError> {
        let Some(spec) = spec else {
            return Ok(Flow::Next);
        };
        match self.request(spec, results, label).await? {
            Answer::Verbs(v) if !v.is_empty() => Ok(Flow::Replace(v)),
            Answer::Verbs(v) if self.session.language.is_rcml() => Ok(Flow::Replace(v)),
            Answer::Verbs(_) => Ok(Flow::Next),
            Answer::Nothing(what) => {
                debug!(call_id = %self.call.call_id, label, "{what}: the application goes on");
                Ok(Flow::Next)
            }
        }
    }

    /// The download URL of recording `id` of this call's account (None: no API serves them).
    pub fn recording_url(&self, id: &str) -> Option<String> {
        self.recording_links
            .as_ref()
            .map(|link| link(&self.call.account_id, id))
    }

    pub fn alert(&self, kind: AlertKind, message: String) {
        self.session.alert(kind, message);
    }
}
