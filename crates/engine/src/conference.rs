//! Named conferences: N parties mixed by the media layer's mixer (mix-minus, each in its own
//! G.711 law), each party a dialog of ours that the conference dialled.
//!
//! One actor per conference owns its dialogs, its media and its participant list; the
//! engine's registry maps `account/name` to the actor's command channel. A conference is made
//! by its first participant and ends when its last one leaves (after one has joined) or when
//! the server stops. Commands: dial a party in, mute/unmute one, remove one, describe.
//!
//! Not yet here (issue 14): bringing an existing call in, moving legs between calls, the
//! two-party fast path switching into the mixer, supervision modes, queues, recording,
//! announcements into a conference.

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
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn, Instrument};

use crate::control::{transfer_target_user, CommandError};
use crate::dialing::OutboundPermit;
use crate::routing::Origin;
use crate::sip_glue::now_ms;
use crate::Engine;

/// The most parties one conference takes.
pub const MAX_PARTICIPANTS: usize = 50;
/// Longest conference name.
pub const MAX_NAME_LEN: usize = 64;

/// Where a participant is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ParticipantState {
    /// Its phone rings.
    Calling,
    /// In the mix.
    Joined,
}

#[derive(Debug, Clone, Serialize)]
pub struct ParticipantInfo {
    pub id: String,
    /// What was dialled (extension or number).
    pub number: String,
    pub state: ParticipantState,
    pub muted: bool,
    pub joined_at_ms: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConferenceInfo {
    pub name: String,
    pub created_at_ms: i64,
    pub participants: Vec<ParticipantInfo>,
}

enum Command {
    Dial {
        target: String,
        muted: bool,
        reply: oneshot::Sender<Result<ParticipantInfo, CommandError>>,
    },
    Mute {
        participant: String,
        muted: bool,
        reply: oneshot::Sender<Result<ParticipantInfo, CommandError>>,
    },
    Remove {
        participant: String,
        reply: oneshot::Sender<Result<(), CommandError>>,
    },
    Info(oneshot::Sender<ConferenceInfo>),
}

/// The registry's entry for a running conference.
#[derive(Clone)]
pub(crate) struct ConferenceEntry {
    /// Tells this conference from a later one of the same name.
    id: u64,
    commands: mpsc::Sender<Command>,
}

struct Participant {
    info: ParticipantInfo,
    dialog: InviteLeg,
    sip_call_id: String,
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
}

impl ConferenceEntry {
    /// Sends the command `make` builds around a reply channel and waits for the reply. A
    /// conference that ended meanwhile is `NotFound`.
    async fn ask<T>(
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

/// Hangs up a participant's dialog in the background: BYE once it joined, else CANCEL.
fn release(dialog: &InviteLeg, joined: bool) {
    let dialog = dialog.clone();
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

    fn conference_entry(&self, account_id: &str, name: &str) -> Option<ConferenceEntry> {
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
        if !valid_name(name) {
            return Err(CommandError::Invalid(format!(
                "conference name must be 1-{MAX_NAME_LEN} letters, digits, '-', '_' or '.'"
            )));
        }
        if self.inner.shutdown.is_cancelled() {
            return Err(CommandError::Limited("the server is stopping".into()));
        }
        let entry = {
            let Ok(mut map) = self.inner.conferences.lock() else {
                return Err(CommandError::Limited(
                    "conference registry unavailable".into(),
                ));
            };
            match map.get(&key(account_id, name)) {
                Some(e) if !e.commands.is_closed() => e.clone(),
                _ => {
                    let entry = self.start_conference(account_id, name);
                    map.insert(key(account_id, name), entry.clone());
                    entry
                }
            }
        };
        entry
            .ask(|reply| Command::Dial {
                target: target.to_string(),
                muted,
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
                participant: participant.to_string(),
                muted,
                reply,
            })
            .await?
    }

    /// Takes a participant out: BYE (or CANCEL while it rings).
    pub async fn conference_remove(
        &self,
        account_id: &str,
        name: &str,
        participant: &str,
    ) -> Result<(), CommandError> {
        self.conference_entry(account_id, name)
            .ok_or(CommandError::NotFound)?
            .ask(|reply| Command::Remove {
                participant: participant.to_string(),
                reply,
            })
            .await?
    }

    fn start_conference(&self, account_id: &str, name: &str) -> ConferenceEntry {
        let (tx, rx) = mpsc::channel(64);
        let (states, state_rx) = self.inner.states.open();
        let id = rand::random();
        let actor = ConferenceActor {
            id,
            engine: self.clone(),
            account_id: account_id.to_string(),
            name: name.to_string(),
            created_at_ms: now_ms(),
            media: ConferenceMedia::start(),
            participants: Vec::new(),
            states,
            answers: FuturesUnordered::new(),
            started: false,
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
            if self.started && self.participants.is_empty() {
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
            }
            if self.pointless() {
                break;
            }
        }
        for p in self.participants.drain(..) {
            release(&p.dialog, p.media_id.is_some());
        }
        self.unregister();
        self.engine.inner.metrics.conferences_active.dec();
        info!(conference = %self.name, "conference ended");
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
            name: self.name.clone(),
            created_at_ms: self.created_at_ms,
            participants: self.participants.iter().map(|p| p.info.clone()).collect(),
        }
    }

    async fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Info(reply) => {
                let _ = reply.send(self.info());
            }
            Command::Dial {
                target,
                muted,
                reply,
            } => {
                let r = self.dial(&target, muted).await;
                if r.is_err() && self.pointless() {
                    // Gone before the caller hears of the failure: nothing to list.
                    self.unregister();
                }
                let _ = reply.send(r);
            }
            Command::Mute {
                participant,
                muted,
                reply,
            } => {
                let r = match self
                    .participants
                    .iter_mut()
                    .find(|p| p.info.id == participant)
                {
                    Some(p) => {
                        p.info.muted = muted;
                        if let Some(id) = p.media_id {
                            self.media.set_muted(id, muted);
                        }
                        info!(participant = %participant, muted, "conference mute");
                        Ok(p.info.clone())
                    }
                    None => Err(CommandError::NotFound),
                };
                let _ = reply.send(r);
            }
            Command::Remove { participant, reply } => {
                let r = match self.take(&participant) {
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

    /// Takes a participant out of the list and the mix.
    fn take(&mut self, id: &str) -> Option<Participant> {
        let i = self.participants.iter().position(|p| p.info.id == id)?;
        let p = self.participants.remove(i);
        if let Some(m) = p.media_id {
            self.media.remove(m);
        }
        info!(participant = %id, number = %p.info.number, "left the conference");
        Some(p)
    }

    async fn dial(&mut self, target: &str, muted: bool) -> Result<ParticipantInfo, CommandError> {
        if self.participants.len() >= MAX_PARTICIPANTS {
            return Err(CommandError::Limited(format!(
                "a conference takes at most {MAX_PARTICIPANTS} participants"
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
        };
        self.answers
            .push(Box::pin(await_answer(id.clone(), pending)));
        self.participants.push(Participant {
            info: info.clone(),
            dialog,
            sip_call_id,
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
                self.started = true;
                info!(participant = %id, number = %p.info.number, "joined the conference");
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

async fn await_answer(id: String, pending: PendingInvite) -> Answer {
    (id, pending.outcome().await)
}

/// The registry type in the engine.
pub(crate) type Registry = std::sync::Mutex<HashMap<String, ConferenceEntry>>;
