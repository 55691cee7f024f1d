//! The command set every API dialect shares: list and inspect calls, hang up, hold, mute.
//! Each command goes to the call's actor and waits for its typed reply; the actor applies it
//! completely or not at all.

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::call::{CallCommand, RingingAction};
use crate::cluster::{Command, Outcome};
use crate::Engine;

pub use crate::model::LegState;
use crate::model::{CallDirection, CallState, EndCause, LegDirection, LegRole, WrongState};

/// One leg (SIP dialog + RTP endpoint) of a call.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LegInfo {
    pub id: String,
    /// `caller` (the leg that placed the call) or `callee`.
    pub role: LegRole,
    /// `in` (we are UAS) or `out` (we are UAC).
    pub direction: LegDirection,
    pub state: LegState,
    /// The number/extension of the party on this leg.
    pub number: String,
    /// The account user on this leg, when the party is one of our users.
    pub owner_user_id: Option<String>,
    pub owner_extension: Option<String>,
    pub muted: bool,
    pub held: bool,
    pub recording: bool,
    /// While the leg rings: the devices (registered contacts) still ringing, for `ignore`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    /// The server's mailbox answered on this leg (the caller is leaving a message). Dialects
    /// that show it (RingCentral's `VoiceMail` party status) read this, not the number.
    #[serde(skip)]
    pub voicemail: bool,
}

/// A call with its legs, as every API renders it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CallInfo {
    pub id: String,
    pub account_id: String,
    pub from: String,
    pub to: String,
    /// What the caller dialled (extension or number, visual separators removed) — for an
    /// inbound trunk call, the DID that was called.
    pub dialled: String,
    /// `internal`, `inbound` or `outbound`.
    pub direction: CallDirection,
    /// `ringing`, `answered` or `ended`.
    pub state: CallState,
    pub started_at_ms: i64,
    pub answered_at_ms: Option<i64>,
    pub legs: Vec<LegInfo>,
    /// Parties an application's `dial` rings and that have not answered: child calls while
    /// they ring (the one that answers becomes leg B with the same id).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dialling: Vec<LegInfo>,
}

impl CallInfo {
    pub fn held(&self) -> bool {
        self.legs.iter().any(|l| l.held)
    }
    pub fn muted(&self) -> bool {
        self.legs.iter().any(|l| l.muted)
    }
    pub fn recording(&self) -> bool {
        self.legs.iter().any(|l| l.recording)
    }
    pub fn leg(&self, leg_id: &str) -> Option<&LegInfo> {
        self.legs.iter().find(|l| l.id == leg_id)
    }
}

/// Why a command was not carried out. The call is unchanged in every case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum CommandError {
    #[error("no such call or leg")]
    NotFound,
    #[error("not possible while the call is {state}")]
    WrongState { state: WrongState },
    #[error("the phone refused: {status} {reason}")]
    Failed { status: u16, reason: String },
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The audio the command names cannot be used (unreachable URL, not audio, too large).
    #[error("audio unusable: {0}")]
    Media(String),
    /// A transfer (or dial) target that names nothing reachable: unknown extension, malformed
    /// number, a user without registered phones.
    #[error("{0}")]
    BadTarget(String),
    /// The dial rules forbid what the command would dial (a premium number, an international
    /// one the account may not call, a session between two outside numbers).
    #[error("{0}")]
    NotPermitted(String),
    /// The account's fraud brakes stop it for now (too many outbound calls at once or in the
    /// last minute).
    #[error("{0}")]
    Limited(String),
    /// The call belongs to another node of the cluster and that node cannot be reached: no
    /// node answers for it on the bus (it is stopped or cut off).
    #[error("the node owning the call ({node}) is unreachable")]
    NodeUnreachable { node: String },
    /// The call's node did not answer a forwarded command in time; whether it was carried
    /// out is unknown.
    #[error("the node owning the call ({node}) did not answer in time")]
    NodeTimeout { node: String },
}

impl CommandError {
    /// A dialled target that leads nowhere: a refusal by the dial rules keeps its kind, any
    /// other failure is described by `describe(status)`.
    pub(crate) fn from_route(
        e: crate::call::RouteError,
        describe: impl FnOnce(u16) -> String,
    ) -> CommandError {
        match e.refusal {
            Some(r) if r.is_limit() => CommandError::Limited(r.to_string()),
            Some(r) => CommandError::NotPermitted(r.to_string()),
            None => CommandError::BadTarget(describe(e.status)),
        }
    }
}

/// What to do with a call's recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecordAction {
    /// Start a stereo recording (left: caller's leg, right: callee's leg); with `announcement`
    /// every party first hears "this call is being recorded".
    Start {
        announcement: bool,
    },
    Stop,
    /// Silence is written while paused, so the file keeps the call's timeline.
    Pause,
    Resume,
}

/// Audio for announcements, whisper and prompts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AudioSource {
    /// A WAV file at an http(s) URL (any rate, channels, 8/16/24/32-bit).
    Url(String),
    /// Text spoken by the built-in text-to-speech.
    Tts { text: String, voice: Option<String> },
}

/// Which legs a hold applies to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    /// Every leg of the call (sipgate semantics).
    Call,
    Leg(String),
}

pub(crate) type Reply<T> = oneshot::Sender<Result<T, CommandError>>;

/// Spoken to every party when a recording starts with `announcement`.
pub const RECORDING_NOTICE: &str = "This call is being recorded.";

impl Engine {
    /// The account's calls in progress (in a cluster: every node's).
    pub fn calls(&self, account_id: &str) -> Vec<CallInfo> {
        let mut calls = self.local_calls(account_id);
        if self.inner.cluster.get().is_some() {
            calls.extend(self.inner.events.remote_calls(account_id));
            calls.sort_by_key(|c| c.started_at_ms);
        }
        calls
    }

    /// The account's calls in progress on this node.
    pub fn local_calls(&self, account_id: &str) -> Vec<CallInfo> {
        let mut calls: Vec<CallInfo> = self
            .inner
            .calls
            .lock()
            .map(|c| {
                c.values()
                    .filter(|e| e.info.account_id == account_id)
                    .map(|e| e.info.clone())
                    .collect()
            })
            .unwrap_or_default();
        calls.sort_by_key(|c| c.started_at_ms);
        calls
    }

    /// One call of the account; another account's call is `NotFound`, never visible. In a
    /// cluster, another node's call as its latest event showed it.
    pub fn call(&self, account_id: &str, call_id: &str) -> Result<CallInfo, CommandError> {
        match self.local_call(account_id, call_id) {
            Err(CommandError::NotFound) if self.inner.cluster.get().is_some() => self
                .inner
                .events
                .remote_call(call_id)
                .map(|r| r.call)
                .filter(|c| c.account_id == account_id)
                .ok_or(CommandError::NotFound),
            other => other,
        }
    }

    /// One call of the account on this node.
    pub fn local_call(&self, account_id: &str, call_id: &str) -> Result<CallInfo, CommandError> {
        self.inner
            .calls
            .lock()
            .ok()
            .and_then(|c| c.get(call_id).map(|e| e.info.clone()))
            .filter(|c| c.account_id == account_id)
            .ok_or(CommandError::NotFound)
    }

    /// A call as a *user's* credential may see and control it: only one the user is a party
    /// to. A colleague's call is `NotFound`, exactly like one that does not exist (account
    /// API keys use [`Engine::call`] and reach every call of the account).
    pub fn user_call(
        &self,
        account_id: &str,
        user_id: &str,
        call_id: &str,
    ) -> Result<CallInfo, CommandError> {
        let call = self.call(account_id, call_id)?;
        if call
            .legs
            .iter()
            .any(|l| l.owner_user_id.as_deref() == Some(user_id))
        {
            Ok(call)
        } else {
            tracing::info!(call_id, user_id, "not a party to this call");
            Err(CommandError::NotFound)
        }
    }

    pub(crate) async fn send_command<T>(
        &self,
        account_id: &str,
        call_id: &str,
        make: impl FnOnce(Reply<T>) -> CallCommand,
    ) -> Result<T, CommandError> {
        let sender = self
            .inner
            .calls
            .lock()
            .ok()
            .and_then(|c| {
                c.get(call_id)
                    .filter(|e| e.info.account_id == account_id)
                    .map(|e| e.commands.clone())
            })
            .ok_or(CommandError::NotFound)?;
        let (tx, rx) = oneshot::channel();
        sender
            .send(make(tx))
            .await
            .map_err(|_| CommandError::NotFound)?;
        // The actor always answers; a dropped reply means the call ended meanwhile.
        rx.await.map_err(|_| CommandError::NotFound)?
    }

    /// Bridges two calls of the account: the party opposite `leg_id` in `call_id` and the
    /// party opposite `other_leg` in `other_call` are connected (in `call_id`); the two named
    /// legs (typically one user's two calls) are released and `other_call` ends. Both calls
    /// must be answered and stable (409 otherwise). The moved phone is re-INVITEd to the
    /// bridge; if it refuses, it is released and `call_id` stays as it was.
    pub async fn bridge(
        &self,
        account_id: &str,
        call_id: &str,
        leg_id: &str,
        other_call: &str,
        other_leg: &str,
    ) -> Result<CallInfo, CommandError> {
        if call_id == other_call {
            return Err(CommandError::Invalid(
                "a call cannot be bridged with itself".into(),
            ));
        }
        if let Some(out) = self
            .forward_pair_if_remote(account_id, call_id, other_call, || Command::Bridge {
                leg_id: leg_id.to_string(),
                other_call: other_call.to_string(),
                other_leg: other_leg.to_string(),
            })
            .await
        {
            return out.and_then(Outcome::call);
        }
        let other = self
            .inner
            .calls
            .lock()
            .ok()
            .and_then(|c| {
                c.get(other_call)
                    .filter(|e| e.info.account_id == account_id)
                    .map(|e| e.commands.clone())
            })
            .ok_or(CommandError::NotFound)?;
        let (leg_id, other_leg) = (leg_id.to_string(), other_leg.to_string());
        self.send_command(account_id, call_id, |reply| CallCommand::Bridge {
            leg_id,
            other,
            other_leg,
            reply,
        })
        .await
    }

    /// Ends the call (`leg` = None) or one leg. A ringing leg is cancelled (its phone stops
    /// ringing); an answered one gets BYE. Ending either leg of a two-party call ends the call.
    pub async fn hangup(
        &self,
        account_id: &str,
        call_id: &str,
        leg: Option<&str>,
    ) -> Result<(), CommandError> {
        if let Some(out) = self
            .forward_if_remote(account_id, call_id, || crate::cluster::Command::Hangup {
                leg: leg.map(str::to_string),
            })
            .await
        {
            return out.and_then(crate::cluster::Outcome::done);
        }
        let leg = leg.map(str::to_string);
        self.send_command(account_id, call_id, |reply| CallCommand::Hangup {
            cause: EndCause::Api,
            leg,
            reply: Some(reply),
        })
        .await
    }

    /// Holds (`on`) or retrieves the call or one leg: re-INVITE with `a=sendonly` and music on
    /// hold to the held leg(s); `a=sendrecv` to retrieve. If a phone rejects the re-INVITE the
    /// call stays as it was and the error says why.
    pub async fn hold(
        &self,
        account_id: &str,
        call_id: &str,
        target: Target,
        on: bool,
    ) -> Result<CallInfo, CommandError> {
        if let Some(out) = self
            .forward_if_remote(account_id, call_id, || crate::cluster::Command::Hold {
                target: target.clone(),
                on,
            })
            .await
        {
            return out.and_then(crate::cluster::Outcome::call);
        }
        self.send_command(account_id, call_id, |reply| CallCommand::Hold {
            target,
            on,
            reply,
        })
        .await
    }

    pub(crate) async fn resolve_audio(
        &self,
        source: &AudioSource,
    ) -> Result<hookflash_media::audio::Pcm8k, CommandError> {
        match source {
            AudioSource::Url(url) => self
                .inner
                .fetcher
                .get(url)
                .await
                .map_err(|e| CommandError::Media(e.to_string())),
            AudioSource::Tts { text, voice } => self
                .inner
                .tts
                .synthesize(text, voice.as_deref())
                .await
                .map_err(|e| CommandError::Media(e.to_string())),
        }
    }

    /// Plays audio to every party of the call (`Target::Call`) or to one leg; while it plays,
    /// that party hears it instead of the other party. Returns once playback has started. A
    /// URL that cannot be fetched or is not audio is an error and the call is untouched.
    pub async fn announce(
        &self,
        account_id: &str,
        call_id: &str,
        target: Target,
        source: AudioSource,
    ) -> Result<(), CommandError> {
        if let Some(out) = self
            .forward_if_remote(account_id, call_id, || crate::cluster::Command::Announce {
                target: target.clone(),
                source: source.clone(),
            })
            .await
        {
            return out.and_then(crate::cluster::Outcome::done);
        }
        self.local_call(account_id, call_id)?;
        let pcm = self.resolve_audio(&source).await?;
        self.send_command(account_id, call_id, |reply| CallCommand::Play {
            target,
            pcm,
            whisper: false,
            reply,
        })
        .await
    }

    /// Plays a prompt to one leg only; meanwhile the other party hears silence from it, and
    /// both are reconnected when the prompt ends.
    pub async fn whisper(
        &self,
        account_id: &str,
        call_id: &str,
        leg_id: &str,
        source: AudioSource,
    ) -> Result<(), CommandError> {
        if let Some(out) = self
            .forward_if_remote(account_id, call_id, || crate::cluster::Command::Whisper {
                leg_id: leg_id.to_string(),
                source: source.clone(),
            })
            .await
        {
            return out.and_then(crate::cluster::Outcome::done);
        }
        self.local_call(account_id, call_id)?;
        let pcm = self.resolve_audio(&source).await?;
        let target = Target::Leg(leg_id.to_string());
        self.send_command(account_id, call_id, |reply| CallCommand::Play {
            target,
            pcm,
            whisper: true,
            reply,
        })
        .await
    }

    /// Starts, stops, pauses or resumes the call's recording. Returns the call (every leg's
    /// `recording` flag shows the state).
    pub async fn record(
        &self,
        account_id: &str,
        call_id: &str,
        action: RecordAction,
    ) -> Result<CallInfo, CommandError> {
        if let Some(out) = self
            .forward_if_remote(account_id, call_id, || crate::cluster::Command::Record {
                action,
            })
            .await
        {
            return out.and_then(crate::cluster::Outcome::call);
        }
        self.local_call(account_id, call_id)?;
        let announcement = match action {
            RecordAction::Start { announcement: true } => Some(
                self.resolve_audio(&AudioSource::Tts {
                    text: RECORDING_NOTICE.into(),
                    voice: None,
                })
                .await?,
            ),
            _ => None,
        };
        self.send_command(account_id, call_id, |reply| CallCommand::Record {
            action,
            announcement,
            reply,
        })
        .await
    }

    /// Sends DTMF digits (`0-9 * # A-D`) to the phone on `leg_id`: RFC 4733 events when that
    /// leg negotiated telephone-event, else SIP INFO (application/dtmf-relay).
    pub async fn send_dtmf(
        &self,
        account_id: &str,
        call_id: &str,
        leg_id: &str,
        digits: &str,
    ) -> Result<(), CommandError> {
        if let Some(out) = self
            .forward_if_remote(account_id, call_id, || crate::cluster::Command::Dtmf {
                leg_id: leg_id.to_string(),
                digits: digits.to_string(),
            })
            .await
        {
            return out.and_then(crate::cluster::Outcome::done);
        }
        let digits = digits.to_ascii_uppercase();
        if digits.is_empty()
            || !digits
                .chars()
                .all(|c| c.is_ascii_digit() || matches!(c, '*' | '#' | 'A'..='D'))
        {
            return Err(CommandError::Invalid(
                "DTMF digits must be 0-9, *, #, A-D".into(),
            ));
        }
        let leg_id = leg_id.to_string();
        self.send_command(account_id, call_id, |reply| CallCommand::Dtmf {
            leg_id,
            digits,
            reply,
        })
        .await
    }

    /// Transfer (blind, or attended with `attended`: see [`Engine::finish_transfer`]): the
    /// party on the other side of `transferor_leg` (default: the account
    /// user's side, B for inbound and internal calls, A for outbound) is connected to `target`
    /// (an extension, a phone number, or a `sip:`/`tel:` URI naming one). The target is resolved
    /// before anything changes, so an unknown target is an error and the call is untouched.
    /// Returns once the target is being dialled; the outcome arrives as `transferred` or
    /// `transfer_failed` (then the parties are back together).
    pub async fn transfer(
        &self,
        account_id: &str,
        call_id: &str,
        transferor_leg: Option<&str>,
        target: &str,
        attended: bool,
    ) -> Result<CallInfo, CommandError> {
        if let Some(out) = self
            .forward_if_remote(account_id, call_id, || crate::cluster::Command::Transfer {
                transferor_leg: transferor_leg.map(str::to_string),
                target: target.to_string(),
                attended,
            })
            .await
        {
            return out.and_then(crate::cluster::Outcome::call);
        }
        let call = self.local_call(account_id, call_id)?;
        if call.state != CallState::Answered {
            return Err(CommandError::WrongState {
                state: call.state.into(),
            });
        }
        let transferor = user_side(&call, transferor_leg)?;
        // Routed as if the transferor dialled it (their own extension is a loop).
        let target = self
            .resolve_target(account_id, transferor.owner_user_id.as_deref(), target)
            .await?;
        let transferor = Some(transferor.id);
        self.send_command(account_id, call_id, |reply| CallCommand::Transfer {
            transferor,
            target,
            attended,
            reply,
        })
        .await
    }

    /// Ends an attended transfer: `complete` joins the held party with the consulted target
    /// and releases the transferor (the target must have answered); otherwise (cancel) the
    /// target is released or stops ringing and the original parties are back together.
    pub async fn finish_transfer(
        &self,
        account_id: &str,
        call_id: &str,
        complete: bool,
    ) -> Result<CallInfo, CommandError> {
        if let Some(out) = self
            .forward_if_remote(account_id, call_id, || {
                crate::cluster::Command::FinishTransfer { complete }
            })
            .await
        {
            return out.and_then(crate::cluster::Outcome::call);
        }
        self.send_command(account_id, call_id, |reply| CallCommand::FinishTransfer {
            complete,
            reply,
        })
        .await
    }

    /// Resolves an extension, number or `sip:`/`tel:` URI to the devices to ring, as if
    /// `as_user` dialled it. Anything unreachable is `BadTarget` with the reason.
    pub(crate) async fn resolve_target(
        &self,
        account_id: &str,
        as_user: Option<&str>,
        target: &str,
    ) -> Result<crate::call::TransferTarget, CommandError> {
        let dialled = transfer_target_user(target).ok_or_else(|| {
            CommandError::BadTarget(format!(
                "'{target}' is not an extension, a phone number or a sip:/tel: URI"
            ))
        })?;
        let origin = match as_user {
            Some(user_id) => crate::routing::Origin::User {
                account_id: account_id.to_string(),
                user_id: user_id.to_string(),
            },
            None => crate::routing::Origin::Account {
                account_id: account_id.to_string(),
            },
        };
        let destination = crate::call::resolve_destination(self, account_id, &origin, &dialled)
            .await
            .map_err(|e| {
                CommandError::from_route(e, |status| match status {
                    404 => format!("no extension or number '{dialled}' can be reached"),
                    482 => format!("'{dialled}' is the party itself"),
                    480 => format!("'{dialled}' has no registered phone"),
                    _ => format!("'{dialled}' cannot be reached now ({status})"),
                })
            })?;
        Ok(crate::call::TransferTarget {
            label: destination.label,
            owner: destination.owner,
            forks: destination.targets,
        })
    }

    /// Forwards a call that is still ringing: every device stops ringing and `target` rings
    /// instead (resolved as if the callee dialled it). 409 once answered.
    pub async fn forward(
        &self,
        account_id: &str,
        call_id: &str,
        target: &str,
    ) -> Result<CallInfo, CommandError> {
        if let Some(out) = self
            .forward_if_remote(account_id, call_id, || Command::Forward {
                target: target.to_string(),
            })
            .await
        {
            return out.and_then(Outcome::call);
        }
        let call = self.local_call(account_id, call_id)?;
        if call.state != CallState::Ringing {
            return Err(CommandError::WrongState {
                state: call.state.into(),
            });
        }
        let callee = call.legs.get(1).and_then(|l| l.owner_user_id.clone());
        let target = self
            .resolve_target(account_id, callee.as_deref(), target)
            .await?;
        self.ringing_action(account_id, call_id, RingingAction::Forward(target))
            .await
    }

    /// Forwards a ringing call to the callee's voicemail (`BadTarget` if they have none).
    pub async fn forward_to_voicemail(
        &self,
        account_id: &str,
        call_id: &str,
    ) -> Result<CallInfo, CommandError> {
        if let Some(out) = self
            .forward_if_remote(account_id, call_id, || Command::ForwardToVoicemail)
            .await
        {
            return out.and_then(Outcome::call);
        }
        self.ringing_action(account_id, call_id, RingingAction::ToVoicemail)
            .await
    }

    /// Flip: moves the account user's side of an answered call (`leg_id`, default: the
    /// user's side as for transfers) to one of that user's forwarding numbers, by flip id.
    /// The number is dialled; when it answers it replaces the user's device, which is
    /// released (if it does not answer, the call stays on the device).
    pub async fn flip(
        &self,
        account_id: &str,
        call_id: &str,
        leg_id: Option<&str>,
        flip_id: &str,
    ) -> Result<CallInfo, CommandError> {
        if let Some(out) = self
            .forward_if_remote(account_id, call_id, || Command::Flip {
                leg_id: leg_id.map(str::to_string),
                flip_id: flip_id.to_string(),
            })
            .await
        {
            return out.and_then(Outcome::call);
        }
        let call = self.local_call(account_id, call_id)?;
        if call.state != CallState::Answered {
            return Err(CommandError::WrongState {
                state: call.state.into(),
            });
        }
        let leg = user_side(&call, leg_id)?;
        let user_id = leg.owner_user_id.clone().ok_or_else(|| {
            CommandError::BadTarget("that leg is not one of the account's users".into())
        })?;
        let forwarding = self
            .inner
            .store
            .forwarding(&user_id, flip_id)
            .await
            .map_err(|e| CommandError::Failed {
                status: 500,
                reason: e.to_string(),
            })?
            .ok_or_else(|| {
                CommandError::BadTarget(format!("no forwarding with flip id '{flip_id}'"))
            })?;
        // The number is dialled on the user's behalf, with the user's routing.
        let target = self
            .resolve_target(account_id, Some(&user_id), &forwarding.number)
            .await?;
        let transferor = Some(leg.id);
        self.send_command(account_id, call_id, |reply| CallCommand::Transfer {
            transferor,
            target,
            attended: false,
            reply,
        })
        .await
    }

    /// Rejects a ringing call: every device stops ringing; the caller goes to the callee's
    /// voicemail if they have one, else hears busy.
    pub async fn reject(&self, account_id: &str, call_id: &str) -> Result<CallInfo, CommandError> {
        if let Some(out) = self
            .forward_if_remote(account_id, call_id, || Command::Reject)
            .await
        {
            return out.and_then(Outcome::call);
        }
        self.ringing_action(account_id, call_id, RingingAction::Reject)
            .await
    }

    /// Replies to a ringing call's caller: every device stops ringing, the server answers the
    /// caller itself, plays `message` (e.g. text-to-speech) and then ends the call (cause
    /// `rejected`). RingCentral's `reply`.
    pub async fn reply_to_caller(
        &self,
        account_id: &str,
        call_id: &str,
        message: &AudioSource,
    ) -> Result<CallInfo, CommandError> {
        if let Some(out) = self
            .forward_if_remote(account_id, call_id, || Command::ReplyToCaller {
                message: message.clone(),
            })
            .await
        {
            return out.and_then(Outcome::call);
        }
        self.local_call(account_id, call_id)?;
        let pcm = self.resolve_audio(message).await?;
        self.ringing_action(account_id, call_id, RingingAction::Reply(pcm))
            .await
    }

    /// Stops one ringing device (one of the callee leg's `devices`); the others ring on. When
    /// none is left the caller hears "unavailable".
    pub async fn ignore(
        &self,
        account_id: &str,
        call_id: &str,
        device: &str,
    ) -> Result<CallInfo, CommandError> {
        if let Some(out) = self
            .forward_if_remote(account_id, call_id, || Command::Ignore {
                device: device.to_string(),
            })
            .await
        {
            return out.and_then(Outcome::call);
        }
        let device = device.to_string();
        self.ringing_action(account_id, call_id, RingingAction::Ignore { device })
            .await
    }

    /// Answers a ringing call on one of the callee's registered phones (`contact`, a
    /// registration of `user_id`): the phone is rung again with an auto-answer (intercom)
    /// INVITE; when it answers, the caller is connected to it and the other devices stop.
    /// A phone that does not answer by itself rings on the ordinary way. RingCentral's
    /// `answer {deviceId}`.
    pub async fn answer_on_device(
        &self,
        account_id: &str,
        call_id: &str,
        user_id: &str,
        contact: &str,
    ) -> Result<CallInfo, CommandError> {
        if let Some(out) = self
            .forward_if_remote(account_id, call_id, || Command::AnswerOnDevice {
                user_id: user_id.to_string(),
                contact: contact.to_string(),
            })
            .await
        {
            return out.and_then(Outcome::call);
        }
        self.local_call(account_id, call_id)?;
        let device = self.registered_device(user_id, contact).await?;
        self.ringing_action(account_id, call_id, RingingAction::AnswerOn(device))
            .await
    }

    /// One registered phone of `user_id` (its registration's `contact`) as a dial target;
    /// 400 when the user has no such registration now.
    async fn registered_device(
        &self,
        user_id: &str,
        contact: &str,
    ) -> Result<crate::call::AnswerDevice, CommandError> {
        let regs = self
            .inner
            .store
            .registrations(user_id, crate::sip_glue::now_unix())
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "registrations unavailable");
                CommandError::Failed {
                    status: 500,
                    reason: "registrations unavailable".into(),
                }
            })?;
        regs.iter()
            .find(|r| r.contact == contact)
            .and_then(crate::call::device_target)
            .ok_or_else(|| CommandError::Invalid(format!("'{contact}' is not a registered phone")))
    }

    async fn ringing_action(
        &self,
        account_id: &str,
        call_id: &str,
        action: RingingAction,
    ) -> Result<CallInfo, CommandError> {
        self.send_command(account_id, call_id, |reply| CallCommand::Ringing {
            action,
            reply,
        })
        .await
    }

    /// Parks the call: the party on the other side of `parker_leg` (default: the account
    /// user's side) waits with music in an orbit (`orbit`, or the first free of `*71`..`*79`);
    /// the parker's phone is released. A phone dialling the orbit's code takes the call, or
    /// [`Engine::unpark`] dials someone into it; after `timeout` the parker is called back.
    pub async fn park(
        &self,
        account_id: &str,
        call_id: &str,
        parker_leg: Option<&str>,
        orbit: Option<&str>,
        timeout: std::time::Duration,
    ) -> Result<CallInfo, CommandError> {
        self.park_in_orbit(account_id, call_id, parker_leg, orbit, timeout)
            .await
            .map(|(call, _)| call)
    }

    /// [`Engine::park`], answering the orbit the call waits in too (in a cluster, an orbit
    /// of the node owning the call).
    pub async fn park_in_orbit(
        &self,
        account_id: &str,
        call_id: &str,
        parker_leg: Option<&str>,
        orbit: Option<&str>,
        timeout: std::time::Duration,
    ) -> Result<(CallInfo, String), CommandError> {
        if let Some(out) = self
            .forward_if_remote(account_id, call_id, || Command::Park {
                parker_leg: parker_leg.map(str::to_string),
                orbit: orbit.map(str::to_string),
                timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            })
            .await
        {
            return out.and_then(Outcome::parked);
        }
        let parker = parker_leg.map(str::to_string);
        let orbit = orbit.map(str::to_string);
        let call = self
            .send_command(account_id, call_id, |reply| CallCommand::Park {
                parker,
                orbit,
                timeout,
                reply,
            })
            .await?;
        let orbit = self
            .parked_calls(account_id)
            .into_iter()
            .find(|(_, id)| *id == call.id)
            .map(|(orbit, _)| orbit)
            .unwrap_or_default();
        Ok((call, orbit))
    }

    /// Retrieves a parked call by dialling `target` into it (it takes the parker's place).
    pub async fn unpark(
        &self,
        account_id: &str,
        call_id: &str,
        target: &str,
    ) -> Result<CallInfo, CommandError> {
        if let Some(out) = self
            .forward_if_remote(account_id, call_id, || Command::Unpark {
                target: target.to_string(),
            })
            .await
        {
            return out.and_then(Outcome::call);
        }
        self.local_call(account_id, call_id)?;
        let target = self.resolve_target(account_id, None, target).await?;
        self.send_command(account_id, call_id, |reply| CallCommand::Unpark {
            target,
            reply,
        })
        .await
    }

    /// Retrieves a parked call onto one registered phone (`contact`, a registration of the
    /// user `user_id` with extension `extension`): only that phone rings (the ordinary way)
    /// and takes the parker's place when it answers. RingCentral's `pickup {deviceId}`.
    pub async fn unpark_to_device(
        &self,
        account_id: &str,
        call_id: &str,
        user_id: &str,
        extension: &str,
        contact: &str,
    ) -> Result<CallInfo, CommandError> {
        if let Some(out) = self
            .forward_if_remote(account_id, call_id, || Command::UnparkToDevice {
                user_id: user_id.to_string(),
                extension: extension.to_string(),
                contact: contact.to_string(),
            })
            .await
        {
            return out.and_then(Outcome::call);
        }
        self.local_call(account_id, call_id)?;
        let device = self.registered_device(user_id, contact).await?;
        let target = crate::call::TransferTarget {
            label: extension.to_string(),
            owner: Some((user_id.to_string(), extension.to_string())),
            forks: vec![device.0],
        };
        self.send_command(account_id, call_id, |reply| CallCommand::Unpark {
            target,
            reply,
        })
        .await
    }

    /// The account's parked calls: (orbit, call id), by orbit. In a cluster, every node's
    /// (each node claims its own orbits: two nodes may each have a call in `*71`).
    pub fn parked_calls(&self, account_id: &str) -> Vec<(String, String)> {
        let mut out = crate::cluster::parked_of(&self.inner.orbits, account_id);
        if let Some(cluster) = self.inner.cluster.get() {
            // Only calls the node still lists (a dead node's calls are forgotten).
            out.extend(
                cluster
                    .remote_parked(account_id)
                    .into_iter()
                    .filter(|(_, call)| self.inner.events.remote_call(call).is_some()),
            );
        }
        out.sort();
        out
    }

    /// Mutes (`on`) or unmutes one leg: its audio stops reaching the other party. No signalling.
    pub async fn mute(
        &self,
        account_id: &str,
        call_id: &str,
        leg_id: &str,
        on: bool,
    ) -> Result<CallInfo, CommandError> {
        if let Some(out) = self
            .forward_if_remote(account_id, call_id, || crate::cluster::Command::Mute {
                leg_id: leg_id.to_string(),
                on,
            })
            .await
        {
            return out.and_then(crate::cluster::Outcome::call);
        }
        let leg_id = leg_id.to_string();
        self.send_command(account_id, call_id, |reply| CallCommand::Mute {
            leg_id,
            on,
            reply,
        })
        .await
    }
}

/// The leg `leg_id` names, or by default the account user's side: the callee of inbound and
/// internal calls, the caller of outbound ones.
fn user_side(call: &CallInfo, leg_id: Option<&str>) -> Result<LegInfo, CommandError> {
    match leg_id {
        Some(id) => call.leg(id).cloned().ok_or(CommandError::NotFound),
        None => {
            let index = match call.direction {
                CallDirection::Outbound => 0,
                CallDirection::Inbound | CallDirection::Internal => 1,
            };
            call.legs.get(index).cloned().ok_or(CommandError::NotFound)
        }
    }
}

/// The user part of a transfer target: `2002`, `+49 211 123`, `sip:2002@host`, `tel:+49211`.
/// None for anything else (empty, spaces inside a SIP user, other schemes, other characters).
pub(crate) fn transfer_target_user(target: &str) -> Option<String> {
    let target = target.trim();
    let user = if target.contains(':') {
        hookflash_sip::uri::user_part(target)?.to_string()
    } else {
        target.to_string()
    };
    // Visual separators are dropped from numbers only ("+49 (211) 123"), not from names.
    let number = hookflash_sip::uri::normalize_number(&user);
    let user = if hookflash_sip::uri::is_phone_number(&number) {
        number
    } else {
        user
    };
    let ok = !user.is_empty()
        && user.len() <= 64
        && user.chars().enumerate().all(|(i, c)| {
            c.is_ascii_alphanumeric() || (i == 0 && c == '+') || "*#-._~".contains(c)
        });
    ok.then_some(user)
}

#[cfg(test)]
mod model_tests {
    use super::*;

    #[test]
    fn call_info_serializes_with_todays_strings() {
        let leg = LegInfo {
            id: "l1".into(),
            role: LegRole::Caller,
            direction: LegDirection::In,
            state: LegState::Proceeding,
            number: "201".into(),
            owner_user_id: None,
            owner_extension: None,
            muted: false,
            held: false,
            recording: false,
            devices: vec![],
            voicemail: false,
        };
        let call = CallInfo {
            id: "c1".into(),
            account_id: "a".into(),
            from: "201".into(),
            to: "202".into(),
            dialled: "202".into(),
            direction: CallDirection::Outbound,
            state: CallState::Answered,
            started_at_ms: 0,
            answered_at_ms: None,
            legs: vec![leg],
            dialling: Vec::new(),
        };
        let json = serde_json::to_value(&call).unwrap();
        assert_eq!(json["direction"], "outbound");
        assert_eq!(json["state"], "answered");
        assert_eq!(json["legs"][0]["role"], "caller");
        assert_eq!(json["legs"][0]["direction"], "in");
        assert_eq!(json["legs"][0]["state"], "proceeding");
    }

    #[test]
    fn wrong_state_reads_as_before() {
        let e = CommandError::WrongState {
            state: WrongState::NoFreeOrbit,
        };
        assert_eq!(
            e.to_string(),
            "not possible while the call is without a free park orbit"
        );
        let e = CommandError::WrongState {
            state: CallState::Ringing.into(),
        };
        assert_eq!(e.to_string(), "not possible while the call is ringing");
    }
}

#[cfg(test)]
mod transfer_target_tests {
    use super::transfer_target_user;

    #[test]
    fn accepts_extensions_numbers_and_uris() {
        assert_eq!(transfer_target_user("2002").as_deref(), Some("2002"));
        assert_eq!(
            transfer_target_user("no-such.user").as_deref(),
            Some("no-such.user")
        );
        assert_eq!(
            transfer_target_user("+49 (211) 123-45").as_deref(),
            Some("+4921112345")
        );
        assert_eq!(
            transfer_target_user("sip:2002@127.0.0.1").as_deref(),
            Some("2002")
        );
        assert_eq!(
            transfer_target_user("tel:+4921112345").as_deref(),
            Some("+4921112345")
        );
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "  ",
            "abc def",
            "http://x/y",
            "20+02",
            "sip:@host",
            "a;b",
            "20\n02",
        ] {
            assert_eq!(transfer_target_user(bad), None, "{bad:?}");
        }
    }
}
