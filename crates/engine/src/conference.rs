//! Named conferences: N parties mixed by the media layer's mixer (mix-minus, each in its own
//! G.711 law). A party is either a phone the conference dialled (a dialog of its own) or the
//! leg of an existing call brought in ([`Engine::conference_join_call`]): that leg stays its
//! call's (dialog, records, BYE, DTMF), only its audio is mixed here (see `call/conf_leg.rs`).
//!
//! One actor per conference owns its dialogs, its media and its participant list; the
//! engine's registry maps `account/name` to the actor's command channel. A conference is made
//! by its first participant and ends when its last one leaves (after one has joined), when a
//! participant with `end_on_exit` leaves, or when the server stops. Commands: dial a party in,
//! bring a call's leg in, mute/unmute or hold/unhold one, remove one, describe.
//!
//! Options per joining leg (the jambonz `conference` verb's): start muted, a beep for
//! everybody on join, `end_on_exit`, `start_on_enter = false` (it waits, hearing music and
//! heard by no one, until a participant that starts the conference joins),
//! `max_participants` (never above [`MAX_PARTICIPANTS`]). A participant alone hears music.
//! Every start, join, leave and end is an event on the account's bus
//! ([`crate::events::ConferenceEvent`]) and goes to the watchers of the legs brought in.
//!
//! Recording of the mix and announcements (to all, to one) live in `conference_media.rs`.
//!
//! A conference may be *owned* by a call (`supervise.rs`: a supervisor or an added party);
//! it ends when nobody from outside the call is left, and a supervisor's mode sets who hears
//! it (the mixer's `Hearing`).
//!
//! Not yet here (issue 14): moving legs between calls, queues.

use std::collections::HashMap;
use std::sync::Arc;

use futures::stream::{FuturesUnordered, StreamExt};
use hookflash_media::conference::ConferenceMedia;
use hookflash_media::g711::Law;
use hookflash_media::ports::RtpSocketPair;
use hookflash_media::sdp::{self, Codec, Direction, OriginState, SessionDescription};
use hookflash_sip::dialog::{
    DialogEvent, InDialogRequest, InviteLeg, InviteOutcome, OutgoingInvite, PendingInvite,
};
use hookflash_sip::msg::{Header, StatusCode, Uri};
use hookflash_sip::router::{CallStateReceiver, CallStates};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn, Instrument};

use crate::call::conf_leg::{ConfLegCommand, LegAttach};
use crate::call::CallCommand;
use crate::control::{transfer_target_user, CommandError};
use crate::dialing::OutboundPermit;
use crate::events::{ConferenceEvent, ConferenceEventKind, ConferenceParticipantRef};
use crate::routing::Origin;
use crate::sip_glue::now_ms;
use crate::supervise::{SuperviseMode, Supervision};
use crate::Engine;
use hookflash_media::audio::Pcm8k;
use hookflash_media::mixer::Hearing;

#[path = "conference_media.rs"]
mod media_ops;

/// Conference events queued towards one joined leg's watcher before more are dropped.
pub const WATCH_QUEUE: usize = 32;

/// The most parties one conference takes.
pub const MAX_PARTICIPANTS: usize = 50;
/// The join beep's pitch.
const BEEP_HZ: f32 = 700.0;
/// Longest conference name.
pub const MAX_NAME_LEN: usize = 64;

/// Where a participant is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParticipantState {
    /// Its phone rings.
    Calling,
    /// In the mix.
    Joined,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantInfo {
    pub id: String,
    /// What was dialled (extension or number), or the party of the leg brought in.
    pub number: String,
    pub state: ParticipantState,
    pub muted: bool,
    pub joined_at_ms: Option<i64>,
    /// The call and leg brought in (none for a phone the conference dialled).
    pub call_id: Option<String>,
    pub leg_id: Option<String>,
    /// Held: hears music, heard by no one.
    pub held: bool,
    /// Waits for a participant that starts the conference (hears music meanwhile).
    pub waiting: bool,
    /// A supervisor of the call that owns this conference: how it is heard (see
    /// `supervise.rs`); None for a party.
    pub supervision: Option<Supervision>,
}

/// How a leg joins (the jambonz `conference` verb's options).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinOptions {
    /// Heard by no one until unmuted.
    pub muted: bool,
    /// Everybody hears a short beep when it joins.
    pub beep: bool,
    /// The conference ends when this participant leaves.
    pub end_on_exit: bool,
    /// False: wait (music) until a participant with true joins.
    pub start_on_enter: bool,
    /// The conference takes at most this many (capped at [`MAX_PARTICIPANTS`]).
    pub max_participants: Option<usize>,
}

impl Default for JoinOptions {
    fn default() -> Self {
        JoinOptions {
            muted: false,
            beep: false,
            end_on_exit: false,
            start_on_enter: true,
            max_participants: None,
        }
    }
}

/// A leg in a conference: its participant, and the conference's events while it is in (the
/// channel closes after its own `participant_left`, or the conference's end).
#[derive(Debug)]
pub struct Membership {
    pub participant: ParticipantInfo,
    pub events: mpsc::Receiver<ConferenceEvent>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConferenceInfo {
    /// This conference's own id (a later conference of the same name has another).
    pub id: String,
    pub name: String,
    pub created_at_ms: i64,
    pub participants: Vec<ParticipantInfo>,
}

pub(crate) enum Command {
    Dial {
        target: String,
        muted: bool,
        supervision: Option<Supervision>,
        reply: oneshot::Sender<Result<ParticipantInfo, CommandError>>,
    },
    Join {
        attach: LegAttach,
        opts: JoinOptions,
        reply: oneshot::Sender<Result<Membership, CommandError>>,
    },
    Mute {
        participant: Who,
        muted: bool,
        reply: oneshot::Sender<Result<ParticipantInfo, CommandError>>,
    },
    Hold {
        participant: Who,
        held: bool,
        reply: oneshot::Sender<Result<ParticipantInfo, CommandError>>,
    },
    Remove {
        participant: Who,
        reply: oneshot::Sender<Result<(), CommandError>>,
    },
    Info(oneshot::Sender<ConferenceInfo>),
    /// Start/stop recording the mix (`conference_media.rs`); answers the recording's id.
    Record {
        on: bool,
        reply: oneshot::Sender<Result<String, CommandError>>,
    },
    /// An announcement (`conference_media.rs`); answers its length in seconds.
    Announce {
        audience: media_ops::Audience,
        clip: Pcm8k,
        reply: oneshot::Sender<Result<f32, CommandError>>,
    },
    /// A supervisor's mode (how it is heard) changes.
    Supervise {
        participant: String,
        supervision: Supervision,
        reply: oneshot::Sender<Result<ParticipantInfo, CommandError>>,
    },
    /// Everybody leaves (legs go back to their calls, dialled phones get BYE/CANCEL).
    End,
}

/// A participant named by its id, or by the call leg it is.
pub(crate) enum Who {
    Id(String),
    Leg(String),
}

impl Who {
    fn is(&self, p: &Participant) -> bool {
        match self {
            Who::Id(id) => p.info.id == *id,
            Who::Leg(leg) => p.info.leg_id.as_deref() == Some(leg.as_str()),
        }
    }
}

/// The registry's entry for a running conference.
#[derive(Clone)]
pub(crate) struct ConferenceEntry {
    /// Tells this conference from a later one of the same name.
    id: u64,
    pub(crate) commands: mpsc::Sender<Command>,
}

struct Participant {
    info: ParticipantInfo,
    /// A phone the conference dialled; None for a call's leg.
    dialog: Option<InviteLeg>,
    /// The dialled phone's SIP Call-ID (empty for a call's leg).
    sip_call_id: String,
    /// A call's leg: the conference's events while it is in.
    watcher: Option<mpsc::Sender<ConferenceEvent>>,
    end_on_exit: bool,
    /// Hears music now instead of the mix (alone, waiting or held).
    music: bool,
    /// The local port offered; moves into the mixer on answer.
    pair: Option<RtpSocketPair>,
    local: std::net::SocketAddr,
    origin: OriginState,
    /// The audio codec the phone answered with (and telephone-event, if it took it).
    codecs: Vec<Codec>,
    media_id: Option<u32>,
    _permit: Option<Arc<OutboundPermit>>,
}

type Answer = (String, Option<InviteOutcome>);

struct ConferenceActor {
    id: u64,
    /// The id dialects show (a UUID).
    uid: String,
    engine: Engine,
    account_id: String,
    name: String,
    created_at_ms: i64,
    media: ConferenceMedia,
    participants: Vec<Participant>,
    states: CallStates,
    answers: FuturesUnordered<futures::future::BoxFuture<'static, Answer>>,
    /// Someone has joined: the conference ends when it is empty again.
    started: bool,
    /// A participant that starts the conference has joined: waiting ones are let in.
    live: bool,
    /// The most participants (the first joiner's `max_participants`, capped).
    max: usize,
    /// A participant with `end_on_exit` left: everybody goes.
    ending: bool,
    /// Watchers of legs that left as the conference ends: they hear the end too.
    departed: Vec<mpsc::Sender<ConferenceEvent>>,
    /// Played to everybody when a participant with `beep` joins.
    beep: Pcm8k,
    /// The mix is being recorded (`conference_media.rs`).
    recording: Option<media_ops::ConfRecording>,
    /// The call this conference belongs to (a supervisor or an added party, `supervise.rs`):
    /// it ends when no phone it dialled is left, or when the call's legs have gone.
    owner: Option<String>,
    /// Owned: a phone was dialled (the end rule applies from here).
    armed: bool,
    /// Owned: the call's legs joined (its audio is on the mixer).
    legs_in: bool,
}

impl ConferenceEntry {
    /// Sends the command `make` builds around a reply channel and waits for the reply. A
    /// conference that ended meanwhile is `NotFound`.
    pub(crate) async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, CommandError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| CommandError::NotFound)?;
        rx.await.map_err(|_| CommandError::NotFound)
    }
}

/// Hangs up a participant's dialog in the background: BYE once it joined, else CANCEL. A
/// call's leg has none: dropping its media handles gives it back to its call.
fn release(dialog: &Option<InviteLeg>, joined: bool) {
    let Some(dialog) = dialog.clone() else {
        return;
    };
    tokio::spawn(async move {
        let _ = if joined {
            dialog.bye().await
        } else {
            dialog.cancel().await
        };
    });
}

fn key(account_id: &str, name: &str) -> String {
    format!("{account_id}/{name}")
}

/// A conference name: 1–64 of letters, digits, `-`, `_`, `.`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl Engine {
    /// The account's conferences.
    pub async fn conferences(&self, account_id: &str) -> Vec<ConferenceInfo> {
        let prefix = format!("{account_id}/");
        let entries: Vec<ConferenceEntry> = self
            .inner
            .conferences
            .lock()
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| k.starts_with(&prefix))
                    .map(|(_, v)| v.clone())
                    .collect()
            })
            .unwrap_or_default();
        let mut out = Vec::new();
        for e in entries {
            let (tx, rx) = oneshot::channel();
            if e.commands.send(Command::Info(tx)).await.is_ok() {
                if let Ok(info) = rx.await {
                    out.push(info);
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    pub(crate) fn conference_entry(&self, account_id: &str, name: &str) -> Option<ConferenceEntry> {
        self.inner
            .conferences
            .lock()
            .ok()
            .and_then(|m| m.get(&key(account_id, name)).cloned())
    }

    pub async fn conference(
        &self,
        account_id: &str,
        name: &str,
    ) -> Result<ConferenceInfo, CommandError> {
        self.conference_entry(account_id, name)
            .ok_or(CommandError::NotFound)?
            .ask(Command::Info)
            .await
    }

    /// Dials `target` (an extension or number, routed as the account dials) into conference
    /// `name`, making the conference if it does not exist. Answers once the INVITE has left.
    pub async fn conference_dial(
        &self,
        account_id: &str,
        name: &str,
        target: &str,
        muted: bool,
    ) -> Result<ParticipantInfo, CommandError> {
        let entry = self.conference_or_start(account_id, name)?;
        entry
            .ask(|reply| Command::Dial {
                target: target.to_string(),
                muted,
                supervision: None,
                reply,
            })
            .await?
    }

    /// The running conference `name`, made if there is none (the name is checked first).
    fn conference_or_start(
        &self,
        account_id: &str,
        name: &str,
    ) -> Result<ConferenceEntry, CommandError> {
        if crate::supervise::is_call_conference_name(name) {
            return Err(CommandError::Invalid(
                "conference names starting with 'call.' belong to calls".into(),
            ));
        }
        self.conference_or_start_owned(account_id, name, None)
    }

    /// Like [`Self::conference_or_start`]; a conference made here belongs to call `owner`
    /// (see `supervise.rs`).
    pub(crate) fn conference_or_start_owned(
        &self,
        account_id: &str,
        name: &str,
        owner: Option<&str>,
    ) -> Result<ConferenceEntry, CommandError> {
        if !valid_name(name) {
            return Err(CommandError::Invalid(format!(
                "conference name must be 1-{MAX_NAME_LEN} letters, digits, '-', '_' or '.'"
            )));
        }
        if self.inner.shutdown.is_cancelled() {
            return Err(CommandError::Limited("the server is stopping".into()));
        }
        let Ok(mut map) = self.inner.conferences.lock() else {
            return Err(CommandError::Limited(
                "conference registry unavailable".into(),
            ));
        };
        Ok(match map.get(&key(account_id, name)) {
            Some(e) if !e.commands.is_closed() => e.clone(),
            _ => {
                let entry = self.start_conference(account_id, name, owner);
                map.insert(key(account_id, name), entry.clone());
                entry
            }
        })
    }

    /// Brings leg `leg_id` (default: the caller's) of call `call_id` into conference `name`
    /// (made on the first join). The leg stays its call's; only its audio is mixed. Errors:
    /// `NotFound` (no such call or leg), `WrongState` (not answered, already in a conference,
    /// transferring, parked), `Invalid` (a bad name), `Limited` (the conference is full).
    pub async fn conference_join_call(
        &self,
        account_id: &str,
        name: &str,
        call_id: &str,
        leg_id: Option<&str>,
        opts: JoinOptions,
    ) -> Result<Membership, CommandError> {
        if !valid_name(name) {
            return Err(CommandError::Invalid(format!(
                "conference name must be 1-{MAX_NAME_LEN} letters, digits, '-', '_' or '.'"
            )));
        }
        if let crate::cluster::CallOwner::Node(_) = self.call_owner(account_id, call_id) {
            // Conferences are the node's that runs them: one running here cannot mix another
            // node's call; else the call's node joins it (making the conference there).
            if self
                .conference_entry(account_id, name)
                .is_some_and(|e| !e.commands.is_closed())
            {
                return Err(CommandError::WrongState {
                    state: crate::model::WrongState::OnAnotherNode,
                });
            }
        }
        if let Some(out) = self
            .forward_if_remote(account_id, call_id, || {
                crate::cluster::Command::ConferenceJoin {
                    name: name.to_string(),
                    leg_id: leg_id.map(str::to_string),
                    opts: opts.clone(),
                }
            })
            .await
        {
            // The conference's events for the leg stay on the owning node: the watcher
            // here hears nothing (its channel is closed at once).
            let (_, events) = mpsc::channel(1);
            return out
                .and_then(crate::cluster::Outcome::participant)
                .map(|participant| Membership {
                    participant,
                    events,
                });
        }
        let leg = leg_id.map(str::to_string);
        let conf = name.to_string();
        let attach = self
            .send_command(account_id, call_id, |reply| {
                CallCommand::Conference(ConfLegCommand::Attach {
                    leg_id: leg,
                    name: conf,
                    reply,
                })
            })
            .await?;
        // From here a failure drops `attach`, which hands the leg back to its call.
        let entry = self.conference_or_start(account_id, name)?;
        let r = entry
            .ask(|reply| Command::Join {
                attach,
                opts,
                reply,
            })
            .await;
        match r {
            Ok(r) => r,
            Err(e) => {
                // The conference ended while the join was on its way.
                self.drop_if_pointless(account_id, name, &entry);
                Err(e)
            }
        }
    }

    fn drop_if_pointless(&self, account_id: &str, name: &str, entry: &ConferenceEntry) {
        if let Ok(mut map) = self.inner.conferences.lock() {
            let k = key(account_id, name);
            if map
                .get(&k)
                .is_some_and(|e| e.id == entry.id && e.commands.is_closed())
            {
                map.remove(&k);
            }
        }
    }

    /// The conference leg `leg_id` (default: the caller's) of call `call_id` is in.
    async fn conference_of_leg(
        &self,
        account_id: &str,
        call_id: &str,
        leg_id: Option<&str>,
    ) -> Result<(String, ConferenceEntry), CommandError> {
        let leg = leg_id.map(str::to_string);
        let (leg_id, name) = self
            .send_command(account_id, call_id, |reply| {
                CallCommand::Conference(ConfLegCommand::Membership { leg_id: leg, reply })
            })
            .await?;
        let entry = self
            .conference_entry(account_id, &name)
            .ok_or(CommandError::WrongState {
                state: crate::model::WrongState::NotInConference,
            })?;
        Ok((leg_id, entry))
    }

    /// Takes a call's leg out of its conference; the call goes on (its other party, if any,
    /// hears it again). `WrongState` when the leg is in none.
    pub async fn conference_leave_call(
        &self,
        account_id: &str,
        call_id: &str,
        leg_id: Option<&str>,
    ) -> Result<(), CommandError> {
        if let Some(out) = self
            .forward_if_remote(account_id, call_id, || {
                crate::cluster::Command::ConferenceLeave {
                    leg_id: leg_id.map(str::to_string),
                }
            })
            .await
        {
            return out.and_then(crate::cluster::Outcome::done);
        }
        let (leg, entry) = self.conference_of_leg(account_id, call_id, leg_id).await?;
        entry
            .ask(|reply| Command::Remove {
                participant: Who::Leg(leg),
                reply,
            })
            .await?
            .map_err(|_| CommandError::WrongState {
                state: crate::model::WrongState::NotInConference,
            })
    }

    /// A call's leg as a participant of its conference.
    pub async fn conference_participant_of_call(
        &self,
        account_id: &str,
        call_id: &str,
        leg_id: Option<&str>,
    ) -> Result<ParticipantInfo, CommandError> {
        if let Some(out) = self
            .forward_if_remote(account_id, call_id, || {
                crate::cluster::Command::ConferenceParticipant {
                    leg_id: leg_id.map(str::to_string),
                }
            })
            .await
        {
            return out.and_then(crate::cluster::Outcome::participant);
        }
        let (leg, entry) = self.conference_of_leg(account_id, call_id, leg_id).await?;
        entry
            .ask(Command::Info)
            .await?
            .participants
            .into_iter()
            .find(|p| p.leg_id.as_deref() == Some(leg.as_str()))
            .ok_or(CommandError::WrongState {
                state: crate::model::WrongState::NotInConference,
            })
    }

    /// Mutes (heard by no one) or unmutes a call's leg in its conference.
    pub async fn conference_mute_call(
        &self,
        account_id: &str,
        call_id: &str,
        leg_id: Option<&str>,
        muted: bool,
    ) -> Result<ParticipantInfo, CommandError> {
        if let Some(out) = self
            .forward_if_remote(account_id, call_id, || {
                crate::cluster::Command::ConferenceMute {
                    leg_id: leg_id.map(str::to_string),
                    muted,
                }
            })
            .await
        {
            return out.and_then(crate::cluster::Outcome::participant);
        }
        let (leg, entry) = self.conference_of_leg(account_id, call_id, leg_id).await?;
        entry
            .ask(|reply| Command::Mute {
                participant: Who::Leg(leg),
                muted,
                reply,
            })
            .await?
    }

    /// Holds (hears music, heard by no one) or unholds a call's leg in its conference.
    pub async fn conference_hold_call(
        &self,
        account_id: &str,
        call_id: &str,
        leg_id: Option<&str>,
        held: bool,
    ) -> Result<ParticipantInfo, CommandError> {
        if let Some(out) = self
            .forward_if_remote(account_id, call_id, || {
                crate::cluster::Command::ConferenceHold {
                    leg_id: leg_id.map(str::to_string),
                    held,
                }
            })
            .await
        {
            return out.and_then(crate::cluster::Outcome::participant);
        }
        let (leg, entry) = self.conference_of_leg(account_id, call_id, leg_id).await?;
        entry
            .ask(|reply| Command::Hold {
                participant: Who::Leg(leg),
                held,
                reply,
            })
            .await?
    }

    pub async fn conference_mute(
        &self,
        account_id: &str,
        name: &str,
        participant: &str,
        muted: bool,
    ) -> Result<ParticipantInfo, CommandError> {
        self.conference_entry(account_id, name)
            .ok_or(CommandError::NotFound)?
            .ask(|reply| Command::Mute {
                participant: Who::Id(participant.to_string()),
                muted,
                reply,
            })
            .await?
    }

    /// Takes a participant out: BYE (or CANCEL while it rings); a call's leg goes back to
    /// its call.
    pub async fn conference_remove(
        &self,
        account_id: &str,
        name: &str,
        participant: &str,
    ) -> Result<(), CommandError> {
        self.conference_entry(account_id, name)
            .ok_or(CommandError::NotFound)?
            .ask(|reply| Command::Remove {
                participant: Who::Id(participant.to_string()),
                reply,
            })
            .await?
    }

    fn start_conference(
        &self,
        account_id: &str,
        name: &str,
        owner: Option<&str>,
    ) -> ConferenceEntry {
        let (tx, rx) = mpsc::channel(64);
        let (states, state_rx) = self.inner.states.open();
        let id = rand::random();
        let actor = ConferenceActor {
            id,
            uid: uuid::Uuid::new_v4().to_string(),
            engine: self.clone(),
            account_id: account_id.to_string(),
            name: name.to_string(),
            created_at_ms: now_ms(),
            media: ConferenceMedia::start(),
            participants: Vec::new(),
            states,
            answers: FuturesUnordered::new(),
            started: false,
            live: false,
            max: MAX_PARTICIPANTS,
            ending: false,
            departed: Vec::new(),
            beep: Pcm8k::tone(BEEP_HZ, std::time::Duration::from_millis(150), 0.25),
            recording: None,
            owner: owner.map(str::to_string),
            armed: false,
            legs_in: false,
        };
        info!(conference = %name, account = %account_id, "conference created");
        self.inner.metrics.conferences_active.inc();
        let span = tracing::info_span!("conference", name = %name);
        tokio::spawn(actor.run(rx, state_rx).instrument(span));
        ConferenceEntry { id, commands: tx }
    }
}

impl ConferenceActor {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>, mut states: CallStateReceiver) {
        let shutdown = self.engine.inner.shutdown.clone();
        loop {
            if (self.started && self.participants.is_empty()) || self.ending || self.owner_done() {
                break;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd).await,
                    None => break,
                },
                Some(event) = states.recv() => self.on_dialog_event(*event),
                Some((id, outcome)) = self.answers.next(), if !self.answers.is_empty() => {
                    self.on_answer(&id, outcome);
                }
                Some(media_id) = self.media.gone() => self.on_media_gone(media_id),
            }
            if self.pointless() {
                break;
            }
        }
        // Refuse what is still queued (their legs go back to their calls).
        commands.close();
        let parting: Vec<String> = self
            .participants
            .iter()
            .map(|p| p.info.id.clone())
            .collect();
        for id in parting {
            if let Some(p) = self.take(&id) {
                release(&p.dialog, p.media_id.is_some());
            }
        }
        self.stop_recording_at_end().await;
        if self.started {
            self.publish(ConferenceEventKind::Ended, None, None);
        }
        self.unregister();
        if self.legs_in {
            self.engine.inner.metrics.calls_on_mixer.dec();
            info!(call_id = ?self.owner, "the call's audio is back on the relay");
        }
        self.engine.inner.metrics.conferences_active.dec();
        info!(conference = %self.name, "conference ended");
    }

    /// A conference owned by a call ends when no phone it dialled is left (they hung up,
    /// were removed or did not answer), or when the call's legs have gone (it ended).
    fn owner_done(&self) -> bool {
        let Some(owner) = self.owner.as_deref() else {
            return false;
        };
        owned_conference_done(
            owner,
            self.armed,
            self.legs_in,
            self.participants.iter().map(|p| p.info.call_id.as_deref()),
        )
    }

    /// Who hears each supervisor (listen: no one; coach: its agent's participant alone,
    /// no one while the agent is not in; barge: everybody).
    fn refresh_hearing(&mut self) {
        for p in &self.participants {
            let (Some(media_id), Some(sup)) = (p.media_id, p.info.supervision.as_ref()) else {
                continue;
            };
            let agent = || {
                self.participants
                    .iter()
                    .find(|a| a.info.leg_id.is_some() && a.info.leg_id == sup.agent_leg)
                    .and_then(|a| a.media_id)
            };
            let hearing = match sup.mode {
                SuperviseMode::Listen => Hearing::Listen,
                SuperviseMode::Barge => Hearing::Normal,
                SuperviseMode::Coach => agent().map_or(Hearing::Listen, Hearing::Coach),
            };
            self.media.set_hearing(media_id, hearing);
        }
    }

    /// Nobody was ever reached and nobody is ringing.
    fn pointless(&self) -> bool {
        !self.started && self.participants.is_empty() && self.answers.is_empty()
    }

    /// Takes this conference out of the registry (if the entry there is still this one).
    fn unregister(&mut self) {
        if let Ok(mut map) = self.engine.inner.conferences.lock() {
            let k = key(&self.account_id, &self.name);
            if map.get(&k).is_some_and(|e| e.id == self.id) {
                map.remove(&k);
            }
        }
    }

    fn info(&self) -> ConferenceInfo {
        ConferenceInfo {
            id: self.uid.clone(),
            name: self.name.clone(),
            created_at_ms: self.created_at_ms,
            participants: self.participants.iter().map(|p| p.info.clone()).collect(),
        }
    }

    /// Publishes a conference event on the account's bus and hands it to every joined leg's
    /// watcher (and to `also`, a participant that just left).
    fn publish(
        &mut self,
        kind: ConferenceEventKind,
        participant: Option<&ParticipantInfo>,
        also: Option<&mpsc::Sender<ConferenceEvent>>,
    ) {
        let who = participant.map(|p| ConferenceParticipantRef {
            id: p.id.clone(),
            call_id: p.call_id.clone(),
            leg_id: p.leg_id.clone(),
            number: p.number.clone(),
            muted: p.muted,
        });
        let count = self
            .participants
            .iter()
            .filter(|p| p.info.state == ParticipantState::Joined)
            .count();
        let Some(event) = self.engine.inner.events.publish_conference(
            &self.account_id,
            kind,
            &self.name,
            who,
            count,
            self.created_at_ms,
        ) else {
            return;
        };
        let watchers = self
            .participants
            .iter()
            .filter_map(|p| p.watcher.as_ref())
            .chain(also)
            .chain(self.departed.iter());
        for w in watchers {
            if let Err(mpsc::error::TrySendError::Full(_)) = w.try_send(event.clone()) {
                warn!(conference = %self.name, "a participant's event watcher is full: event dropped");
            }
        }
    }

    async fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Info(reply) => {
                let _ = reply.send(self.info());
            }
            Command::Record { on, reply } => {
                let _ = reply.send(self.record(on).await);
            }
            Command::Announce {
                audience,
                clip,
                reply,
            } => {
                let _ = reply.send(self.announce(audience, clip));
            }
            Command::Dial {
                target,
                muted,
                supervision,
                reply,
            } => {
                let r = self.dial(&target, muted, supervision).await;
                if r.is_ok() {
                    self.armed = true;
                }
                if r.is_err() && self.pointless() {
                    // Gone before the caller hears of the failure: nothing to list.
                    self.unregister();
                }
                let _ = reply.send(r);
            }
            Command::Join {
                attach,
                opts,
                reply,
            } => {
                let r = self.join(attach, opts);
                if r.is_err() && self.pointless() {
                    self.unregister();
                }
                let _ = reply.send(r);
            }
            Command::Supervise {
                participant,
                supervision,
                reply,
            } => {
                let r = match self
                    .participants
                    .iter_mut()
                    .find(|p| p.info.id == participant && p.info.supervision.is_some())
                {
                    Some(p) => {
                        info!(participant = %p.info.id, mode = supervision.mode.as_str(), "supervision mode");
                        p.info.supervision = Some(supervision);
                        let info = p.info.clone();
                        self.refresh_hearing();
                        Ok(info)
                    }
                    None => Err(CommandError::NotFound),
                };
                let _ = reply.send(r);
            }
            Command::End => {
                info!(conference = %self.name, "ended on request");
                self.ending = true;
            }
            Command::Mute {
                participant,
                muted,
                reply,
            } => {
                let r = match self.participants.iter_mut().find(|p| participant.is(p)) {
                    Some(p) => {
                        p.info.muted = muted;
                        if let Some(id) = p.media_id {
                            self.media.set_muted(id, muted);
                        }
                        info!(participant = %p.info.id, muted, "conference mute");
                        Ok(p.info.clone())
                    }
                    None => Err(CommandError::NotFound),
                };
                let _ = reply.send(r);
            }
            Command::Hold {
                participant,
                held,
                reply,
            } => {
                let r = match self.participants.iter_mut().find(|p| participant.is(p)) {
                    Some(p) => {
                        p.info.held = held;
                        info!(participant = %p.info.id, held, "conference hold");
                        let info = p.info.clone();
                        self.refresh_music();
                        Ok(info)
                    }
                    None => Err(CommandError::NotFound),
                };
                let _ = reply.send(r);
            }
            Command::Remove { participant, reply } => {
                let id = self
                    .participants
                    .iter()
                    .find(|p| participant.is(p))
                    .map(|p| p.info.id.clone());
                let r = match id.and_then(|id| self.take(&id)) {
                    Some(p) => {
                        release(&p.dialog, p.media_id.is_some());
                        Ok(())
                    }
                    None => Err(CommandError::NotFound),
                };
                let _ = reply.send(r);
            }
        }
    }

    /// The most participants this conference takes now.
    fn full(&self, wanted: Option<usize>) -> bool {
        let max = wanted.map_or(self.max, |w| w.min(self.max));
        self.participants.len() >= max
    }

    /// A call's leg joins (see `call/conf_leg.rs`).
    fn join(&mut self, attach: LegAttach, opts: JoinOptions) -> Result<Membership, CommandError> {
        if self.full(opts.max_participants) {
            return Err(CommandError::Limited(format!(
                "the conference takes at most {} participants",
                opts.max_participants.map_or(self.max, |w| w.min(self.max))
            )));
        }
        if self
            .participants
            .iter()
            .any(|p| p.info.leg_id.as_deref() == Some(attach.leg_id.as_str()))
        {
            return Err(CommandError::WrongState {
                state: crate::model::WrongState::InConference,
            });
        }
        if !self.started && self.participants.is_empty() {
            if let Some(m) = opts.max_participants {
                self.max = m.clamp(1, MAX_PARTICIPANTS);
            }
        }
        let LegAttach {
            call_id,
            leg_id,
            number,
            feed,
            play,
        } = attach;
        let media_id = self.media.add_fed(feed, play);
        if opts.muted {
            self.media.set_muted(media_id, true);
        }
        let (tx, events) = mpsc::channel(WATCH_QUEUE);
        let info = ParticipantInfo {
            id: uuid::Uuid::new_v4().to_string(),
            number,
            state: ParticipantState::Joined,
            muted: opts.muted,
            joined_at_ms: Some(now_ms()),
            call_id: Some(call_id.clone()),
            leg_id: Some(leg_id.clone()),
            held: false,
            waiting: false,
            supervision: None,
        };
        match self.owner.as_deref() {
            Some(owner) if owner == call_id && !self.legs_in => {
                self.legs_in = true;
                self.engine.inner.metrics.calls_on_mixer.inc();
            }
            Some(owner) if owner == call_id => {}
            // Another call's leg brought into this call (RingCentral bring-in).
            Some(_) => self.armed = true,
            None => {}
        }
        self.participants.push(Participant {
            info: info.clone(),
            dialog: None,
            sip_call_id: String::new(),
            watcher: Some(tx),
            end_on_exit: opts.end_on_exit,
            music: false,
            pair: None,
            local: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
            origin: OriginState::new(),
            codecs: Vec::new(),
            media_id: Some(media_id),
            _permit: None,
        });
        info!(participant = %info.id, call_id = %call_id, leg_id = %leg_id, "a call's leg joined the conference");
        self.joined(&info.id, opts.start_on_enter, opts.beep);
        let participant = self
            .participants
            .iter()
            .find(|p| p.info.id == info.id)
            .map_or(info, |p| p.info.clone());
        Ok(Membership {
            participant,
            events,
        })
    }

    /// Participant `id` is in the mix now: the conference starts (or goes live), the beep,
    /// the events, everybody's music.
    fn joined(&mut self, id: &str, start_on_enter: bool, beep: bool) {
        let first = !self.started;
        self.started = true;
        if start_on_enter {
            self.live = true;
        }
        if first {
            self.publish(ConferenceEventKind::Started, None, None);
        }
        if beep {
            self.media.overlay_all(self.beep.clone());
        }
        self.refresh_music();
        self.refresh_hearing();
        if let Some(info) = self
            .participants
            .iter()
            .find(|p| p.info.id == id)
            .map(|p| p.info.clone())
        {
            self.publish(ConferenceEventKind::ParticipantJoined, Some(&info), None);
        }
    }

    /// Who hears music: everybody while nobody that starts the conference has joined, a
    /// participant alone, a held one. Music also keeps a participant out of the mix.
    fn refresh_music(&mut self) {
        let joined = self
            .participants
            .iter()
            .filter(|p| p.media_id.is_some())
            .count();
        let live = self.live;
        for p in &mut self.participants {
            let Some(media_id) = p.media_id else {
                continue;
            };
            p.info.waiting = !live;
            let want = hears_music(live, joined, p.info.held);
            if want != p.music {
                p.music = want;
                self.media.set_music(
                    media_id,
                    want.then(|| self.engine.inner.music_on_hold.clone()),
                );
            }
        }
    }

    /// A call's media went away (its call ended): it leaves.
    fn on_media_gone(&mut self, media_id: u32) {
        let id = self
            .participants
            .iter()
            .find(|p| p.media_id == Some(media_id))
            .map(|p| p.info.id.clone());
        if let Some(id) = id {
            debug!(participant = %id, "the leg's call ended");
            self.take(&id);
        }
    }

    /// Takes a participant out of the list and the mix (a call's leg goes back to its call:
    /// its media handles drop here), with its `participant_left` event.
    fn take(&mut self, id: &str) -> Option<Participant> {
        let i = self.participants.iter().position(|p| p.info.id == id)?;
        let p = self.participants.remove(i);
        if let Some(m) = p.media_id {
            self.media.remove(m);
        }
        info!(participant = %id, number = %p.info.number, "left the conference");
        if p.media_id.is_some() {
            self.publish(
                ConferenceEventKind::ParticipantLeft,
                Some(&p.info),
                p.watcher.as_ref(),
            );
            if p.end_on_exit && !self.ending {
                info!(participant = %id, "a participant with end_on_exit left: the conference ends");
                self.ending = true;
            }
            if self.participants.is_empty() || self.ending {
                // Its watcher hears the end too (it is published after the others leave).
                if let Some(w) = &p.watcher {
                    self.departed.push(w.clone());
                }
            } else {
                self.refresh_music();
            }
        }
        Some(p)
    }
    async fn dial(
        &mut self,
        target: &str,
        muted: bool,
        supervision: Option<Supervision>,
    ) -> Result<ParticipantInfo, CommandError> {
        if self.full(None) {
            return Err(CommandError::Limited(format!(
                "the conference takes at most {} participants",
                self.max
            )));
        }
        let user = transfer_target_user(target).ok_or_else(|| {
            CommandError::BadTarget(format!("'{target}' is not an extension or number"))
        })?;
        let origin = Origin::Account {
            account_id: self.account_id.clone(),
        };
        let dest = crate::call::resolve_destination(&self.engine, &self.account_id, &origin, &user)
            .await
            .map_err(|e| {
                CommandError::from_route(e, |status| match status {
                    480 => format!("'{user}' has no registered phone"),
                    _ => format!("'{user}' cannot be reached ({status})"),
                })
            })?;
        // The first device: a conference rings one phone per participant.
        let Some(fork) = dest.targets.first() else {
            return Err(CommandError::BadTarget(format!(
                "'{user}' has no registered phone"
            )));
        };
        let pair = self
            .engine
            .inner
            .ports
            .allocate()
            .map_err(|e| CommandError::Limited(format!("no media port free: {e}")))?;
        let codecs = [Codec::pcmu(), Codec::pcma(), Codec::telephone_event(101)];
        let origin = OriginState::new();
        let local = pair.local_rtp;
        let offer = sdp::build_offer(local, &origin, &codecs, Direction::SendRecv).to_string();
        let host = &self.engine.inner.cfg.advertised_host;
        let (Ok(caller), Ok(callee)) = (
            Uri::try_from(format!("sip:conference@{host}").as_str()),
            Uri::try_from(fork.request_uri.as_str()),
        ) else {
            return Err(CommandError::BadTarget(format!(
                "'{user}' has no usable address"
            )));
        };
        let sip_call_id = uuid::Uuid::new_v4().to_string();
        let invite = OutgoingInvite {
            call_id: sip_call_id.clone(),
            caller_display_name: Some(self.name.clone()),
            caller,
            callee,
            destination: fork.destination,
            transport: fork.transport,
            offer: offer.into_bytes(),
            contact: self.engine.local_contact(),
            headers: Vec::<Header>::new(),
            credential: fork
                .credential
                .as_ref()
                .map(|(u, p)| hookflash_sip::dialog::Credential {
                    username: u.clone(),
                    password: p.clone(),
                }),
        };
        let (dialog, pending) = self
            .engine
            .inner
            .sip
            .dialogs
            .invite(invite, self.states.route(&sip_call_id))
            .map_err(|e| CommandError::Failed {
                status: 500,
                reason: e.to_string(),
            })?;
        let id = uuid::Uuid::new_v4().to_string();
        let info = ParticipantInfo {
            id: id.clone(),
            number: dest.label.clone(),
            state: ParticipantState::Calling,
            muted,
            joined_at_ms: None,
            call_id: None,
            leg_id: None,
            held: false,
            waiting: false,
            supervision,
        };
        self.answers
            .push(Box::pin(await_answer(id.clone(), pending)));
        self.participants.push(Participant {
            info: info.clone(),
            dialog: Some(dialog),
            sip_call_id,
            watcher: None,
            end_on_exit: false,
            music: false,
            pair: Some(pair),
            local,
            origin,
            codecs: Vec::new(),
            media_id: None,
            _permit: fork.permit.clone(),
        });
        info!(participant = %id, number = %dest.label, "dialling into the conference");
        Ok(info)
    }

    fn on_answer(&mut self, id: &str, outcome: Option<InviteOutcome>) {
        let Some(i) = self.participants.iter().position(|p| p.info.id == id) else {
            return;
        };
        let response = match outcome {
            Some(Ok((_, Some(r)))) if (200..300).contains(&r.status_code.code()) => r,
            other => {
                let status = match other {
                    Some(Ok((_, Some(r)))) => r.status_code.code(),
                    _ => 408,
                };
                info!(participant = %id, status, "the participant did not answer");
                self.participants.remove(i);
                return;
            }
        };
        let answer = std::str::from_utf8(&response.body)
            .ok()
            .and_then(|t| SessionDescription::parse(t).ok());
        let chosen = answer.as_ref().and_then(|a| {
            let audio = a.audio()?;
            let codec = audio
                .codecs
                .iter()
                .find_map(|c| Law::for_codec(c).map(|law| (law, c.pt)))?;
            Some((a.audio_endpoint()?, codec))
        });
        let p = &mut self.participants[i];
        if let Some(audio) = answer.as_ref().and_then(|a| a.audio()) {
            p.codecs = audio
                .codecs
                .iter()
                .filter(|c| c.is_g711() || c.is_telephone_event())
                .cloned()
                .collect();
        }
        let Some((remote, (law, pt))) = chosen else {
            warn!(participant = %id, "the answer has no G.711 audio: leaving");
            release(&p.dialog, true);
            self.participants.remove(i);
            return;
        };
        let Some(pair) = p.pair.take() else {
            return;
        };
        match self.media.add(pair, remote, law, pt) {
            Ok(media_id) => {
                p.media_id = Some(media_id);
                p.info.state = ParticipantState::Joined;
                p.info.joined_at_ms = Some(now_ms());
                if p.info.muted {
                    self.media.set_muted(media_id, true);
                }
                info!(participant = %id, number = %p.info.number, "joined the conference");
                self.joined(id, true, false);
            }
            Err(e) => {
                warn!(participant = %id, error = %e, "conference media failed: leaving");
                release(&p.dialog, true);
                self.participants.remove(i);
            }
        }
    }

    fn on_dialog_event(&mut self, event: DialogEvent) {
        let call_id = event.leg_id().call_id.clone();
        let Some(i) = self
            .participants
            .iter()
            .position(|p| p.sip_call_id == call_id)
        else {
            return;
        };
        let id = self.participants[i].info.id.clone();
        match event {
            DialogEvent::Terminated(_, why) => {
                debug!(participant = %id, ?why, "participant's dialog ended");
                self.take(&id);
            }
            DialogEvent::Updated(_, req, request) => self.on_reoffer(i, &req.body, request),
            DialogEvent::Info(_, _, request) | DialogEvent::Options(_, _, request) => {
                tokio::spawn(async move {
                    let _ = request.reply(StatusCode::OK).await;
                });
            }
            DialogEvent::Refer(_, _, request)
            | DialogEvent::Message(_, _, request)
            | DialogEvent::Notify(_, _, request)
            | DialogEvent::Publish(_, _, request) => {
                tokio::spawn(async move {
                    let _ = request.reply(StatusCode::NotImplemented).await;
                });
            }
            DialogEvent::Calling(_)
            | DialogEvent::Trying(_)
            | DialogEvent::Early(..)
            | DialogEvent::WaitAck(..)
            | DialogEvent::Confirmed(..) => {}
        }
    }

    /// A participant's re-INVITE or UPDATE: its hold (sendonly/inactive) takes it out of what
    /// it hears (it hears its own music), a new address moves our packets; the answer is our
    /// SDP on the same port. An offerless UPDATE (a session refresh) gets a plain 200.
    fn on_reoffer(&mut self, i: usize, body: &[u8], request: InDialogRequest) {
        let p = &mut self.participants[i];
        if body.is_empty() {
            tokio::spawn(async move {
                let _ = request.reply(StatusCode::OK).await;
            });
            return;
        }
        let offer = std::str::from_utf8(body)
            .ok()
            .and_then(|t| SessionDescription::parse(t).ok());
        let Some(offer) = offer.filter(|o| o.audio().is_some()) else {
            tokio::spawn(async move {
                let _ = request.reply(StatusCode::NotAcceptableHere).await;
            });
            return;
        };
        let wanted = offer.direction();
        if let Some(media_id) = p.media_id {
            self.media.set_deaf(media_id, !wanted.receives());
            if let Some(addr) = offer.audio_endpoint() {
                self.media.set_remote(media_id, addr);
            }
        }
        p.origin.next();
        let answer = sdp::build_answer(
            &offer,
            p.local,
            &p.origin,
            &p.codecs,
            wanted.answer(Direction::SendRecv),
        )
        .to_string();
        info!(participant = %p.info.id, direction = wanted.as_attr(), "participant re-INVITE");
        tokio::spawn(async move {
            let ct = Header::ContentType("application/sdp".into());
            let _ = request
                .respond(StatusCode::OK, Some(vec![ct]), Some(answer.into_bytes()))
                .await;
        });
    }
}

/// The end rule of a conference owned by call `owner`, given each participant's call (None
/// for a dialled phone): once armed (something from outside was added), it ends when nobody
/// from outside is left, or when the call's own legs were in and have all gone.
fn owned_conference_done<'a>(
    owner: &str,
    armed: bool,
    legs_in: bool,
    participants: impl Iterator<Item = Option<&'a str>> + Clone,
) -> bool {
    let own = |c: &Option<&str>| *c == Some(owner);
    armed
        && (!participants.clone().any(|c| !own(&c))
            || (legs_in && !participants.clone().any(|c| own(&c))))
}

/// Whether a participant in the mix hears music instead of it: while nobody that starts the
/// conference has joined (`live` false), while it is alone, or while it is held.
fn hears_music(live: bool, joined: usize, held: bool) -> bool {
    !live || joined < 2 || held
}

async fn await_answer(id: String, pending: PendingInvite) -> Answer {
    (id, pending.outcome().await)
}

/// The registry type in the engine.
pub(crate) type Registry = std::sync::Mutex<HashMap<String, ConferenceEntry>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn music_while_alone_waiting_or_held_and_never_otherwise() {
        // Alone, live or not.
        assert!(hears_music(true, 1, false));
        assert!(hears_music(false, 1, false));
        // Waiting for a participant that starts the conference, however many wait.
        assert!(hears_music(false, 3, false));
        // Held in a live conference of several.
        assert!(hears_music(true, 3, true));
        // In the mix.
        assert!(!hears_music(true, 2, false));
        assert!(!hears_music(true, 50, false));
    }

    #[test]
    fn a_call_owned_conference_ends_when_nobody_from_outside_is_left_or_the_call_is_gone() {
        let done = |armed, legs_in, ps: &[Option<&str>]| {
            owned_conference_done("c1", armed, legs_in, ps.iter().copied())
        };
        // Not armed yet (nothing dialled): never.
        assert!(!done(false, false, &[]));
        assert!(!done(false, true, &[Some("c1"), Some("c1")]));
        // A dialled phone rings or talks with the call's legs: goes on.
        assert!(!done(true, false, &[None]));
        assert!(!done(true, true, &[Some("c1"), Some("c1"), None]));
        // Another call's leg brought in counts as outside.
        assert!(!done(true, true, &[Some("c1"), Some("c2")]));
        // The outside party left: ends (the legs go back to the relay).
        assert!(done(true, true, &[Some("c1"), Some("c1")]));
        // The call's legs have gone (it ended): ends, the dialled phone gets BYE.
        assert!(done(true, true, &[None]));
        // Legs not in yet (joining right after the dial): the dialled phone alone goes on.
        assert!(!done(true, false, &[None, None]));
    }

    #[test]
    fn names_are_short_plain_words() {
        assert!(valid_name("room-1_a.b"));
        assert!(valid_name(&"x".repeat(MAX_NAME_LEN)));
        for bad in ["", "bad name", "a/b", "ü", &"x".repeat(MAX_NAME_LEN + 1)] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_participant_is_named_by_its_id_or_its_call_leg() {
        let mut info = ParticipantInfo {
            id: "p1".into(),
            number: "201".into(),
            state: ParticipantState::Joined,
            muted: false,
            joined_at_ms: None,
            call_id: Some("c1".into()),
            leg_id: Some("l1".into()),
            held: false,
            waiting: false,
            supervision: None,
        };
        let p = |info: &ParticipantInfo| Participant {
            info: info.clone(),
            dialog: None,
            sip_call_id: String::new(),
            watcher: None,
            end_on_exit: false,
            music: false,
            pair: None,
            local: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
            origin: OriginState::new(),
            codecs: Vec::new(),
            media_id: None,
            _permit: None,
        };
        assert!(Who::Id("p1".into()).is(&p(&info)));
        assert!(Who::Leg("l1".into()).is(&p(&info)));
        assert!(!Who::Leg("p1".into()).is(&p(&info)));
        // A dialled phone has no leg: no leg name matches it.
        info.leg_id = None;
        assert!(!Who::Leg(String::new()).is(&p(&info)));
    }
}
