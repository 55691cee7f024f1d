//! The cluster bus (`[cluster] nats_url`): NATS carries every node's call events (JetStream:
//! one subject per account, whose order is the account's one sequence and whose retained
//! messages are the backlog every node resumes from) and the commands for a call that another
//! node owns (core request/reply to that node's subject). See docs/architecture.md "The bus".
//!
//! Without `nats_url` none of this runs: events are numbered in memory and every call is local.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::push, stream};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::conference::{JoinOptions, ParticipantInfo};
use crate::control::{AudioSource, CallInfo, CommandError, RecordAction, Target};
use crate::events::BusEvent;
use crate::model::WrongState;
use crate::supervise::Supervision;
use crate::Engine;

/// The JetStream stream holding every account's events.
pub const EVENT_STREAM: &str = "HOOKFLASH_EVENTS";
const EVENT_PREFIX: &str = "hookflash.events";
const COMMAND_PREFIX: &str = "hookflash.commands";
/// Wire version of [`WireEvent`], [`WireCommand`] and [`WireReply`]; a node answers a
/// command of another version with `Invalid` rather than guessing.
pub const WIRE_VERSION: u32 = 1;
/// How long a forwarded command waits for the owning node's answer.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);
/// Events waiting for the sequencer (beyond: dropped and logged, calls never wait).
const SEQUENCER_QUEUE: usize = 8192;
/// Forwarded commands one node runs at once (beyond: the requester times out).
const COMMANDS_IN_FLIGHT: usize = 256;
/// How long one event may keep trying to get its number (lost races, a bus failing) before it
/// is dropped (logged).
const SEQUENCE_PATIENCE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("JetStream: {0}")]
    JetStream(String),
}

/// One event as it travels: the node that published it and the event, numbered.
#[derive(Debug, Serialize, Deserialize)]
pub struct WireEvent {
    pub v: u32,
    pub node: String,
    pub event: BusEvent,
}

/// A command for a call, forwarded to the node that owns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    Hangup {
        leg: Option<String>,
    },
    Hold {
        target: Target,
        on: bool,
    },
    Mute {
        leg_id: String,
        on: bool,
    },
    Dtmf {
        leg_id: String,
        digits: String,
    },
    Record {
        action: RecordAction,
    },
    Announce {
        target: Target,
        source: AudioSource,
    },
    Whisper {
        leg_id: String,
        source: AudioSource,
    },
    Transfer {
        transferor_leg: Option<String>,
        target: String,
        attended: bool,
    },
    FinishTransfer {
        complete: bool,
    },
    // Added after the first release of v1 (new variants only: an older node answers them
    // `Invalid`, undecodable).
    Park {
        parker_leg: Option<String>,
        orbit: Option<String>,
        timeout_ms: u64,
    },
    Unpark {
        target: String,
    },
    UnparkToDevice {
        user_id: String,
        extension: String,
        contact: String,
    },
    Forward {
        target: String,
    },
    ForwardToVoicemail,
    Flip {
        leg_id: Option<String>,
        flip_id: String,
    },
    Reject,
    ReplyToCaller {
        message: AudioSource,
    },
    Ignore {
        device: String,
    },
    AnswerOnDevice {
        user_id: String,
        contact: String,
    },
    /// Both calls are the receiving node's (the sender checked that they share an owner).
    Bridge {
        leg_id: String,
        other_call: String,
        other_leg: String,
    },
    ConferenceJoin {
        name: String,
        leg_id: Option<String>,
        opts: JoinOptions,
    },
    ConferenceLeave {
        leg_id: Option<String>,
    },
    ConferenceParticipant {
        leg_id: Option<String>,
    },
    ConferenceMute {
        leg_id: Option<String>,
        muted: bool,
    },
    ConferenceHold {
        leg_id: Option<String>,
        held: bool,
    },
    CallParticipants,
    Supervise {
        user: String,
        supervision: Supervision,
    },
    SuperviseUpdate {
        supervision: Supervision,
    },
    SuperviseEnd,
    AddParty {
        to: String,
    },
    /// Both calls are the receiving node's, as for `Bridge`.
    BringInLeg {
        other_call: String,
        leg_id: String,
    },
    RemoveParty {
        participant_id: String,
    },
}

/// The request on the bus: the command and the call it is for, as the API named them.
#[derive(Debug, Serialize, Deserialize)]
pub struct WireCommand {
    pub v: u32,
    pub account_id: String,
    pub call_id: String,
    pub command: Command,
}

/// What a command returns when it succeeds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "outcome", content = "call", rename_all = "snake_case")]
pub enum Outcome {
    Done,
    Call(Box<CallInfo>),
    // Added after the first release of v1 (new variants only).
    /// A parked call and its orbit.
    Parked(Box<(CallInfo, String)>),
    Participant(Box<ParticipantInfo>),
    Participants(Vec<ParticipantInfo>),
}

/// The owner answered with another kind of result than the command has (a node of another
/// build): an error rather than a guess.
fn unexpected(wanted: &str) -> CommandError {
    CommandError::Invalid(format!("the owning node answered without the {wanted}"))
}

impl Outcome {
    pub(crate) fn done(self) -> Result<(), CommandError> {
        match self {
            Outcome::Done
            | Outcome::Call(_)
            | Outcome::Parked(_)
            | Outcome::Participant(_)
            | Outcome::Participants(_) => Ok(()),
        }
    }

    pub(crate) fn call(self) -> Result<CallInfo, CommandError> {
        match self {
            Outcome::Call(c) => Ok(*c),
            Outcome::Parked(p) => Ok(p.0),
            Outcome::Done | Outcome::Participant(_) | Outcome::Participants(_) => {
                Err(unexpected("call"))
            }
        }
    }

    pub(crate) fn parked(self) -> Result<(CallInfo, String), CommandError> {
        match self {
            Outcome::Parked(p) => Ok(*p),
            Outcome::Done
            | Outcome::Call(_)
            | Outcome::Participant(_)
            | Outcome::Participants(_) => Err(unexpected("park orbit")),
        }
    }

    pub(crate) fn participant(self) -> Result<ParticipantInfo, CommandError> {
        match self {
            Outcome::Participant(p) => Ok(*p),
            Outcome::Done | Outcome::Call(_) | Outcome::Parked(_) | Outcome::Participants(_) => {
                Err(unexpected("participant"))
            }
        }
    }

    pub(crate) fn participants(self) -> Result<Vec<ParticipantInfo>, CommandError> {
        match self {
            Outcome::Participants(p) => Ok(p),
            Outcome::Done | Outcome::Call(_) | Outcome::Parked(_) | Outcome::Participant(_) => {
                Err(unexpected("participants"))
            }
        }
    }
}

/// The owning node's answer, exactly as it would have answered locally.
#[derive(Debug, Serialize, Deserialize)]
pub struct WireReply {
    pub v: u32,
    pub result: Result<Outcome, CommandError>,
}

/// This node's connection to the bus.
pub struct Cluster {
    pub node_id: String,
    client: async_nats::Client,
    remote_orbits: RemoteOrbits,
}

/// Other nodes' parked calls, from their `parked` (in) and `unparked` / `transfer_started`
/// (retrieved by the API or the park timeout) / `ended` (out) events: `account_id/orbit` ->
/// call id (at most one per orbit of an account, so bounded by the accounts' orbits). Park
/// orbits are claimed per node; this is what the other nodes list and show
/// (`Engine::parked_calls`).
#[derive(Default)]
struct RemoteOrbits(std::sync::Mutex<HashMap<String, String>>);

/// An account's entries of an orbit map keyed `account_id/orbit`: (orbit, call id). The
/// node's own orbits (`Engine::parked_calls`) and other nodes' ([`RemoteOrbits`]) are kept
/// this way.
pub(crate) fn parked_of(
    orbits: &std::sync::Mutex<HashMap<String, String>>,
    account_id: &str,
) -> Vec<(String, String)> {
    let prefix = format!("{account_id}/");
    orbits
        .lock()
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| {
                    k.strip_prefix(&prefix)
                        .map(|orbit| (orbit.to_string(), v.clone()))
                })
                .collect()
        })
        .unwrap_or_default()
}

impl RemoteOrbits {
    /// Keeps the map in step with another node's event.
    fn note(&self, event: &BusEvent) {
        let BusEvent::Call(e) = event else {
            return;
        };
        let Ok(mut orbits) = self.0.lock() else {
            return;
        };
        if e.kind == crate::events::EventKind::Parked {
            if let Some(orbit) = &e.target {
                orbits.insert(format!("{}/{orbit}", e.account_id), e.call_id.clone());
            }
        } else if e.kind == crate::events::EventKind::Unparked
            || e.kind == crate::events::EventKind::TransferStarted
            || e.kind == crate::events::EventKind::Ended
        {
            orbits.retain(|_, call| *call != e.call_id);
        }
    }

    /// An account's parked calls: (orbit, call id).
    fn of(&self, account_id: &str) -> Vec<(String, String)> {
        parked_of(&self.0, account_id)
    }
}

impl Cluster {
    /// Other nodes' parked calls of an account: (orbit, call id).
    pub(crate) fn remote_parked(&self, account_id: &str) -> Vec<(String, String)> {
        self.remote_orbits.of(account_id)
    }
}

fn account_subject(account_id: &str) -> String {
    // Account ids are free text to NATS; hex keeps them one subject token.
    format!("{EVENT_PREFIX}.{}", hex::encode(account_id))
}

fn command_subject(node: &str) -> String {
    format!("{COMMAND_PREFIX}.{}", hex::encode(node))
}

/// Connects, makes sure the event stream exists, switches the event bus to cluster mode and
/// starts the sequencer, the event reader and the command server.
pub async fn start(
    engine: &Engine,
    node_id: &str,
    url: &str,
    backlog_per_account: usize,
) -> Result<Arc<Cluster>, ClusterError> {
    let client = async_nats::ConnectOptions::new()
        .name(format!("hookflash {node_id}"))
        .retry_on_initial_connect()
        .connect(url)
        .await
        .map_err(|e| ClusterError::Connect {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
    let js = jetstream::new(client.clone());
    let mut stream = js
        .get_or_create_stream(stream::Config {
            name: EVENT_STREAM.to_string(),
            subjects: vec![format!("{EVENT_PREFIX}.>")],
            max_messages_per_subject: backlog_per_account as i64,
            storage: stream::StorageType::File,
            discard: stream::DiscardPolicy::Old,
            ..Default::default()
        })
        .await
        .map_err(|e| ClusterError::JetStream(e.to_string()))?;
    // Older messages fill the backlog only (they were acted on when they were new).
    let replay_until = stream
        .info()
        .await
        .map_err(|e| ClusterError::JetStream(e.to_string()))?
        .state
        .last_sequence;
    let (tx, rx) = mpsc::channel(SEQUENCER_QUEUE);
    if !engine.inner.events.enable_cluster(tx) {
        warn!("the cluster bus was started twice");
    }
    let cluster = Arc::new(Cluster {
        node_id: node_id.to_string(),
        client: client.clone(),
        remote_orbits: RemoteOrbits::default(),
    });
    tokio::spawn(sequencer(
        js.clone(),
        stream.clone(),
        node_id.to_string(),
        rx,
    ));
    tokio::spawn(reader(
        engine.clone(),
        cluster.clone(),
        client.clone(),
        stream,
        node_id.to_string(),
        replay_until,
    ));
    let commands = client
        .subscribe(command_subject(node_id))
        .await
        .map_err(|e| ClusterError::Connect {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
    tokio::spawn(serve_commands(engine.clone(), client, commands));
    info!(node_id, url, "cluster bus connected");
    Ok(cluster)
}

/// The last number given out in an account's sequence and the stream sequence of that
/// message (0, 0 for an account without events).
async fn last_of(
    stream: &stream::Stream,
    subject: &str,
) -> Result<(u64, u64), stream::LastRawMessageError> {
    match stream.get_last_raw_message_by_subject(subject).await {
        Ok(m) => {
            let seq = serde_json::from_slice::<WireEvent>(&m.payload)
                .map(|w| w.event.seq())
                .unwrap_or(0);
            Ok((seq, m.sequence))
        }
        Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok((0, 0)),
        Err(e) => Err(e),
    }
}

/// Numbers each of this node's events in its account's cluster-wide sequence: it publishes
/// number n+1 on the condition that the account's subject still ends with the message that
/// carried n (`Nats-Expected-Last-Subject-Sequence`); if another node got there first, it
/// reads the new last number and tries again. So the stream's order on the subject is the
/// sequence, without gaps or doubles, and no lock or counter lives outside NATS.
async fn sequencer(
    js: jetstream::Context,
    stream: stream::Stream,
    node: String,
    mut rx: mpsc::Receiver<BusEvent>,
) {
    let mut last: HashMap<String, (u64, u64)> = HashMap::new();
    while let Some(mut event) = rx.recv().await {
        let account = event.account_id().to_string();
        let subject = account_subject(&account);
        let mut published = false;
        let deadline = tokio::time::Instant::now() + SEQUENCE_PATIENCE;
        let mut attempt: u32 = 0;
        while tokio::time::Instant::now() < deadline {
            attempt = attempt.saturating_add(1);
            let (seq, stream_seq) = match last.get(&account) {
                Some(l) => *l,
                None => match last_of(&stream, &subject).await {
                    Ok(l) => l,
                    Err(e) => {
                        warn!(error = %e, account_id = %account, "cannot read the account's last event");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            event.set_seq(seq + 1);
            let wire = WireEvent {
                v: WIRE_VERSION,
                node: node.clone(),
                event,
            };
            let payload = match serde_json::to_vec(&wire) {
                Ok(p) => p,
                Err(e) => {
                    warn!(error = %e, "cannot encode an event");
                    event = wire.event;
                    break;
                }
            };
            event = wire.event;
            let message = jetstream::message::PublishMessage::build()
                .payload(payload.into())
                .expected_last_subject_sequence(stream_seq);
            let acked = match js.send_publish(subject.clone(), message).await {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            match acked {
                Ok(ack) => {
                    last.insert(account.clone(), (seq + 1, ack.sequence));
                    published = true;
                    break;
                }
                Err(e) => {
                    // Lost the race (another node numbered one first) or the bus failed:
                    // read the account's last number afresh.
                    last.remove(&account);
                    if e.kind() != jetstream::context::PublishErrorKind::WrongLastSequence {
                        warn!(error = %e, account_id = %account, "publishing an event failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    } else {
                        // Back off a random while, longer after each lost race, so that a
                        // node publishing a burst on the account does not starve this one.
                        let most = 1u64 << attempt.min(6);
                        let wait = rand::random::<u64>() % most + 1;
                        debug!(account_id = %account, attempt, wait_ms = wait, "another node numbered first: retrying");
                        tokio::time::sleep(Duration::from_millis(wait)).await;
                    }
                }
            }
        }
        if !published {
            warn!(account_id = %account, kind = %event.kind_str(), "event lost: the cluster bus did not take it");
        }
    }
}

/// Feeds every node's events, in stream order, into this node's event bus.
async fn reader(
    engine: Engine,
    cluster: Arc<Cluster>,
    client: async_nats::Client,
    stream: stream::Stream,
    node: String,
    replay_until: u64,
) {
    let mut delivered = 0u64;
    loop {
        // After a failure, resume after the last message taken.
        let deliver_policy = if delivered == 0 {
            async_nats::jetstream::consumer::DeliverPolicy::All
        } else {
            async_nats::jetstream::consumer::DeliverPolicy::ByStartSequence {
                start_sequence: delivered + 1,
            }
        };
        let consumer = stream
            .create_consumer(push::OrderedConfig {
                deliver_subject: client.new_inbox(),
                filter_subject: format!("{EVENT_PREFIX}.>"),
                deliver_policy,
                ..Default::default()
            })
            .await;
        let messages = match consumer {
            Ok(c) => c.messages().await,
            Err(e) => {
                warn!(error = %e, "cannot read the cluster's events: retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut messages = match messages {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "cannot read the cluster's events: retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        while let Some(message) = messages.next().await {
            let message = match message {
                Ok(m) => m,
                Err(e) => {
                    warn!(error = %e, "the cluster's event feed failed");
                    break;
                }
            };
            let Ok(stream_seq) = message.info().map(|i| i.stream_sequence) else {
                continue;
            };
            delivered = stream_seq;
            match serde_json::from_slice::<WireEvent>(&message.payload) {
                Ok(w) if w.v == WIRE_VERSION => {
                    let own = w.node == node;
                    if !own {
                        cluster.remote_orbits.note(&w.event);
                    }
                    engine
                        .inner
                        .events
                        .ingest(w.event, &w.node, own, stream_seq > replay_until);
                }
                Ok(w) => warn!(version = w.v, "an event of another wire version: skipped"),
                Err(e) => warn!(error = %e, "an event that does not decode: skipped"),
            }
        }
        if engine.inner.shutdown.is_cancelled() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Answers the commands other nodes forward for this node's calls.
async fn serve_commands(
    engine: Engine,
    client: async_nats::Client,
    mut requests: async_nats::Subscriber,
) {
    let limit = Arc::new(tokio::sync::Semaphore::new(COMMANDS_IN_FLIGHT));
    while let Some(request) = requests.next().await {
        let Some(reply_to) = request.reply.clone() else {
            continue;
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            warn!("too many forwarded commands at once: one is left unanswered");
            continue;
        };
        let (engine, client) = (engine.clone(), client.clone());
        tokio::spawn(async move {
            let result = match serde_json::from_slice::<WireCommand>(&request.payload) {
                Ok(c) if c.v == WIRE_VERSION => {
                    debug!(call_id = %c.call_id, command = ?c.command, "forwarded command");
                    engine
                        .run_command(&c.account_id, &c.call_id, c.command)
                        .await
                }
                Ok(c) => Err(CommandError::Invalid(format!(
                    "command wire version {} (this node speaks {WIRE_VERSION})",
                    c.v
                ))),
                Err(e) => Err(CommandError::Invalid(format!("undecodable command: {e}"))),
            };
            let reply = WireReply {
                v: WIRE_VERSION,
                result,
            };
            match serde_json::to_vec(&reply) {
                Ok(body) => {
                    if let Err(e) = client.publish(reply_to, body.into()).await {
                        warn!(error = %e, "cannot answer a forwarded command");
                    }
                }
                Err(e) => warn!(error = %e, "cannot encode a command's answer"),
            }
            drop(permit);
        });
    }
}

impl Cluster {
    /// Sends a command to the node owning the call and returns its answer: no node listening
    /// there is `NodeUnreachable`, no answer within [`FORWARD_TIMEOUT`] is `NodeTimeout`.
    pub async fn forward(
        &self,
        node: &str,
        account_id: &str,
        call_id: &str,
        command: Command,
    ) -> Result<Outcome, CommandError> {
        let request = WireCommand {
            v: WIRE_VERSION,
            account_id: account_id.to_string(),
            call_id: call_id.to_string(),
            command,
        };
        let body = serde_json::to_vec(&request)
            .map_err(|e| CommandError::Invalid(format!("cannot encode the command: {e}")))?;
        let unreachable = || CommandError::NodeUnreachable {
            node: node.to_string(),
        };
        let timeout = || CommandError::NodeTimeout {
            node: node.to_string(),
        };
        let sent = tokio::time::timeout(
            FORWARD_TIMEOUT,
            self.client.request(command_subject(node), body.into()),
        )
        .await;
        let answer = match sent {
            Err(_) => {
                warn!(node, call_id, "a forwarded command timed out");
                return Err(timeout());
            }
            Ok(Err(e)) => {
                warn!(node, call_id, error = %e, "a forwarded command failed");
                return Err(match e.kind() {
                    async_nats::client::RequestErrorKind::NoResponders => unreachable(),
                    async_nats::client::RequestErrorKind::TimedOut => timeout(),
                    async_nats::client::RequestErrorKind::InvalidSubject
                    | async_nats::client::RequestErrorKind::MaxPayloadExceeded
                    | async_nats::client::RequestErrorKind::Other => unreachable(),
                });
            }
            Ok(Ok(m)) => m,
        };
        let reply: WireReply = serde_json::from_slice(&answer.payload).map_err(|e| {
            CommandError::Invalid(format!("the owning node's answer does not decode: {e}"))
        })?;
        reply.result
    }
}

impl Engine {
    /// Runs a command on a call of this node (what a forwarded command does on arrival).
    pub(crate) async fn run_command(
        &self,
        account_id: &str,
        call_id: &str,
        command: Command,
    ) -> Result<Outcome, CommandError> {
        // Only this node's own calls: a call it does not own is not forwarded again.
        self.local_call(account_id, call_id)?;
        match command {
            Command::Hangup { leg } => self
                .hangup(account_id, call_id, leg.as_deref())
                .await
                .map(|()| Outcome::Done),
            Command::Hold { target, on } => {
                self.hold(account_id, call_id, target, on).await.map(call)
            }
            Command::Mute { leg_id, on } => {
                self.mute(account_id, call_id, &leg_id, on).await.map(call)
            }
            Command::Dtmf { leg_id, digits } => self
                .send_dtmf(account_id, call_id, &leg_id, &digits)
                .await
                .map(|()| Outcome::Done),
            Command::Record { action } => self.record(account_id, call_id, action).await.map(call),
            Command::Announce { target, source } => self
                .announce(account_id, call_id, target, source)
                .await
                .map(|()| Outcome::Done),
            Command::Whisper { leg_id, source } => self
                .whisper(account_id, call_id, &leg_id, source)
                .await
                .map(|()| Outcome::Done),
            Command::Transfer {
                transferor_leg,
                target,
                attended,
            } => self
                .transfer(
                    account_id,
                    call_id,
                    transferor_leg.as_deref(),
                    &target,
                    attended,
                )
                .await
                .map(call),
            Command::FinishTransfer { complete } => self
                .finish_transfer(account_id, call_id, complete)
                .await
                .map(call),
            Command::Park {
                parker_leg,
                orbit,
                timeout_ms,
            } => self
                .park_in_orbit(
                    account_id,
                    call_id,
                    parker_leg.as_deref(),
                    orbit.as_deref(),
                    Duration::from_millis(timeout_ms),
                )
                .await
                .map(|p| Outcome::Parked(Box::new(p))),
            Command::Unpark { target } => self.unpark(account_id, call_id, &target).await.map(call),
            Command::UnparkToDevice {
                user_id,
                extension,
                contact,
            } => self
                .unpark_to_device(account_id, call_id, &user_id, &extension, &contact)
                .await
                .map(call),
            Command::Forward { target } => {
                self.forward(account_id, call_id, &target).await.map(call)
            }
            Command::ForwardToVoicemail => self
                .forward_to_voicemail(account_id, call_id)
                .await
                .map(call),
            Command::Flip { leg_id, flip_id } => self
                .flip(account_id, call_id, leg_id.as_deref(), &flip_id)
                .await
                .map(call),
            Command::Reject => self.reject(account_id, call_id).await.map(call),
            Command::ReplyToCaller { message } => self
                .reply_to_caller(account_id, call_id, &message)
                .await
                .map(call),
            Command::Ignore { device } => self.ignore(account_id, call_id, &device).await.map(call),
            Command::AnswerOnDevice { user_id, contact } => self
                .answer_on_device(account_id, call_id, &user_id, &contact)
                .await
                .map(call),
            Command::Bridge {
                leg_id,
                other_call,
                other_leg,
            } => self
                .bridge(account_id, call_id, &leg_id, &other_call, &other_leg)
                .await
                .map(call),
            Command::ConferenceJoin { name, leg_id, opts } => self
                .conference_join_call(account_id, &name, call_id, leg_id.as_deref(), opts)
                .await
                // The conference's events for the leg stay on the owning node (dialects'
                // routes do not read them; an application's run is on the call's node).
                .map(|m| participant(m.participant)),
            Command::ConferenceLeave { leg_id } => self
                .conference_leave_call(account_id, call_id, leg_id.as_deref())
                .await
                .map(|()| Outcome::Done),
            Command::ConferenceParticipant { leg_id } => self
                .conference_participant_of_call(account_id, call_id, leg_id.as_deref())
                .await
                .map(participant),
            Command::ConferenceMute { leg_id, muted } => self
                .conference_mute_call(account_id, call_id, leg_id.as_deref(), muted)
                .await
                .map(participant),
            Command::ConferenceHold { leg_id, held } => self
                .conference_hold_call(account_id, call_id, leg_id.as_deref(), held)
                .await
                .map(participant),
            Command::CallParticipants => self
                .call_participants(account_id, call_id)
                .await
                .map(Outcome::Participants),
            Command::Supervise { user, supervision } => self
                .supervise(account_id, call_id, &user, supervision)
                .await
                .map(participant),
            Command::SuperviseUpdate { supervision } => self
                .supervise_update(account_id, call_id, supervision)
                .await
                .map(participant),
            Command::SuperviseEnd => self
                .supervise_end(account_id, call_id)
                .await
                .map(|()| Outcome::Done),
            Command::AddParty { to } => self
                .add_party(account_id, call_id, &to)
                .await
                .map(participant),
            Command::BringInLeg { other_call, leg_id } => self
                .bring_in_leg(account_id, call_id, &other_call, &leg_id)
                .await
                .map(participant),
            Command::RemoveParty { participant_id } => self
                .remove_party(account_id, call_id, &participant_id)
                .await
                .map(|()| Outcome::Done),
        }
    }

    /// Which node has the call: this one, another one (cluster mode), or none (for this
    /// account).
    pub(crate) fn call_owner(&self, account_id: &str, call_id: &str) -> CallOwner {
        if self.local_call(account_id, call_id).is_ok() {
            return CallOwner::Here;
        }
        if self.inner.cluster.get().is_none() {
            return CallOwner::Nowhere;
        }
        match self.inner.events.remote_call(call_id) {
            Some(r) if r.call.account_id == account_id => CallOwner::Node(r.node),
            Some(_) | None => CallOwner::Nowhere,
        }
    }

    /// The one place commands leave for another node: when the call is not this node's but
    /// another node's (cluster mode), the command built by `command` runs there and its
    /// answer is returned (`Some`); `None`: run it here as always.
    pub(crate) async fn forward_if_remote(
        &self,
        account_id: &str,
        call_id: &str,
        command: impl FnOnce() -> Command,
    ) -> Option<Result<Outcome, CommandError>> {
        let cluster = self.inner.cluster.get()?;
        if self.local_call(account_id, call_id).is_ok() {
            return None;
        }
        let remote = self.inner.events.remote_call(call_id)?;
        if remote.call.account_id != account_id {
            return Some(Err(CommandError::NotFound));
        }
        Some(
            cluster
                .forward(&remote.node, account_id, call_id, command())
                .await,
        )
    }

    /// For a command that needs two calls on one node (bridge, bringing another call's leg
    /// in): both another node's, the same one: forwarded there (`Some`); both here, or
    /// either unknown: `None` (run here, which answers `NotFound` for an unknown one); on
    /// two different nodes: `WrongState(OnAnotherNode)`, nothing changes anywhere.
    pub(crate) async fn forward_pair_if_remote(
        &self,
        account_id: &str,
        call_id: &str,
        other_call: &str,
        command: impl FnOnce() -> Command,
    ) -> Option<Result<Outcome, CommandError>> {
        let cluster = self.inner.cluster.get()?;
        match pair_route(
            self.call_owner(account_id, call_id),
            self.call_owner(account_id, other_call),
        ) {
            PairRoute::Here => None,
            PairRoute::Forward(node) => {
                Some(cluster.forward(&node, account_id, call_id, command()).await)
            }
            PairRoute::Split => {
                info!(
                    call_id,
                    other_call, "the two calls are on different nodes: refused"
                );
                Some(Err(CommandError::WrongState {
                    state: WrongState::OnAnotherNode,
                }))
            }
        }
    }
}

/// Where a command needing two calls on one node runs.
#[derive(Debug, PartialEq, Eq)]
enum PairRoute {
    /// Here (both here, or one unknown: answered `NotFound` here as on one node).
    Here,
    /// Both are this other node's.
    Forward(String),
    /// On two different nodes.
    Split,
}

fn pair_route(first: CallOwner, second: CallOwner) -> PairRoute {
    match (first, second) {
        (CallOwner::Here, CallOwner::Here) | (CallOwner::Nowhere, _) | (_, CallOwner::Nowhere) => {
            PairRoute::Here
        }
        (CallOwner::Node(a), CallOwner::Node(b)) if a == b => PairRoute::Forward(a),
        (CallOwner::Here, CallOwner::Node(_)) | (CallOwner::Node(_), _) => PairRoute::Split,
    }
}

/// Where a call runs (see [`Engine::call_owner`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CallOwner {
    Here,
    Node(String),
    Nowhere,
}

fn call(c: CallInfo) -> Outcome {
    Outcome::Call(Box::new(c))
}

fn participant(p: ParticipantInfo) -> Outcome {
    Outcome::Participant(Box::new(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One of each variant; the exhaustive match makes a new variant a compile error here
    /// until the list has it too.
    fn every_command() -> Vec<Command> {
        let sup = Supervision {
            mode: crate::supervise::SuperviseMode::Coach,
            agent_leg: Some("l1".into()),
        };
        let all = vec![
            Command::Hangup { leg: None },
            Command::Hold {
                target: Target::Leg("l2".into()),
                on: true,
            },
            Command::Mute {
                leg_id: "l1".into(),
                on: false,
            },
            Command::Dtmf {
                leg_id: "l1".into(),
                digits: "12#".into(),
            },
            Command::Record {
                action: RecordAction::Start { announcement: true },
            },
            Command::Announce {
                target: Target::Call,
                source: AudioSource::Tts {
                    text: "hi".into(),
                    voice: None,
                },
            },
            Command::Whisper {
                leg_id: "l2".into(),
                source: AudioSource::Url("http://127.0.0.1/a.wav".into()),
            },
            Command::Transfer {
                transferor_leg: Some("l2".into()),
                target: "203".into(),
                attended: true,
            },
            Command::FinishTransfer { complete: false },
            Command::Park {
                parker_leg: None,
                orbit: Some("*72".into()),
                timeout_ms: 60_000,
            },
            Command::Unpark {
                target: "203".into(),
            },
            Command::UnparkToDevice {
                user_id: "u3".into(),
                extension: "203".into(),
                contact: "sip:203@127.0.0.1:5070".into(),
            },
            Command::Forward {
                target: "+4969555123".into(),
            },
            Command::ForwardToVoicemail,
            Command::Flip {
                leg_id: Some("l2".into()),
                flip_id: "1".into(),
            },
            Command::Reject,
            Command::ReplyToCaller {
                message: AudioSource::Tts {
                    text: "later".into(),
                    voice: Some("en".into()),
                },
            },
            Command::Ignore {
                device: "sip:202@127.0.0.1:5071".into(),
            },
            Command::AnswerOnDevice {
                user_id: "u2".into(),
                contact: "sip:202@127.0.0.1:5071".into(),
            },
            Command::Bridge {
                leg_id: "l2".into(),
                other_call: "c2".into(),
                other_leg: "l3".into(),
            },
            Command::ConferenceJoin {
                name: "room".into(),
                leg_id: None,
                opts: JoinOptions {
                    muted: true,
                    beep: true,
                    end_on_exit: false,
                    start_on_enter: false,
                    max_participants: Some(5),
                },
            },
            Command::ConferenceLeave {
                leg_id: Some("l1".into()),
            },
            Command::ConferenceParticipant { leg_id: None },
            Command::ConferenceMute {
                leg_id: Some("l1".into()),
                muted: true,
            },
            Command::ConferenceHold {
                leg_id: None,
                held: false,
            },
            Command::CallParticipants,
            Command::Supervise {
                user: "203".into(),
                supervision: sup.clone(),
            },
            Command::SuperviseUpdate { supervision: sup },
            Command::SuperviseEnd,
            Command::AddParty { to: "203".into() },
            Command::BringInLeg {
                other_call: "c2".into(),
                leg_id: "l3".into(),
            },
            Command::RemoveParty {
                participant_id: "p1".into(),
            },
        ];
        let index = |c: &Command| match c {
            Command::Hangup { .. } => 0,
            Command::Hold { .. } => 1,
            Command::Mute { .. } => 2,
            Command::Dtmf { .. } => 3,
            Command::Record { .. } => 4,
            Command::Announce { .. } => 5,
            Command::Whisper { .. } => 6,
            Command::Transfer { .. } => 7,
            Command::FinishTransfer { .. } => 8,
            Command::Park { .. } => 9,
            Command::Unpark { .. } => 10,
            Command::UnparkToDevice { .. } => 11,
            Command::Forward { .. } => 12,
            Command::ForwardToVoicemail => 13,
            Command::Flip { .. } => 14,
            Command::Reject => 15,
            Command::ReplyToCaller { .. } => 16,
            Command::Ignore { .. } => 17,
            Command::AnswerOnDevice { .. } => 18,
            Command::Bridge { .. } => 19,
            Command::ConferenceJoin { .. } => 20,
            Command::ConferenceLeave { .. } => 21,
            Command::ConferenceParticipant { .. } => 22,
            Command::ConferenceMute { .. } => 23,
            Command::ConferenceHold { .. } => 24,
            Command::CallParticipants => 25,
            Command::Supervise { .. } => 26,
            Command::SuperviseUpdate { .. } => 27,
            Command::SuperviseEnd => 28,
            Command::AddParty { .. } => 29,
            Command::BringInLeg { .. } => 30,
            Command::RemoveParty { .. } => 31,
        };
        let indices: Vec<usize> = all.iter().map(index).collect();
        assert_eq!(
            indices,
            (0..=31).collect::<Vec<_>>(),
            "one of each, in order"
        );
        all
    }

    #[test]
    fn commands_and_replies_read_back_as_written() {
        let mut tags = std::collections::HashSet::new();
        for c in every_command() {
            let wire = WireCommand {
                v: WIRE_VERSION,
                account_id: "a".into(),
                call_id: "c".into(),
                command: c.clone(),
            };
            let json = serde_json::to_string(&wire).unwrap();
            let back: WireCommand = serde_json::from_str(&json).unwrap();
            assert_eq!(back.command, c);
            let value: serde_json::Value = serde_json::from_str(&json).unwrap();
            assert!(tags.insert(value["command"]["command"].as_str().unwrap().to_string()));
        }
        // The first release's words are unchanged (v 1 stays compatible: new variants only).
        let v1 = r#"{"v":1,"account_id":"a","call_id":"c","command":{"command":"finish_transfer","complete":true}}"#;
        let back: WireCommand = serde_json::from_str(v1).unwrap();
        assert_eq!(back.command, Command::FinishTransfer { complete: true });
        for tag in [
            "hangup", "hold", "mute", "dtmf", "record", "announce", "whisper", "transfer",
        ] {
            assert!(tags.contains(tag), "{tag}");
        }
        // Every kind of answer reads back too.
        let participant = ParticipantInfo {
            id: "p1".into(),
            number: "203".into(),
            state: crate::conference::ParticipantState::Joined,
            muted: false,
            joined_at_ms: Some(5),
            call_id: None,
            leg_id: None,
            held: false,
            waiting: false,
            supervision: Some(Supervision {
                mode: crate::supervise::SuperviseMode::Listen,
                agent_leg: None,
            }),
        };
        let call = match event("a", "c") {
            BusEvent::Call(e) => e.call,
            BusEvent::Conference(_) => unreachable!(),
        };
        let outcomes = [
            Outcome::Done,
            Outcome::Call(Box::new(call.clone())),
            Outcome::Parked(Box::new((call, "*71".into()))),
            Outcome::Participant(Box::new(participant.clone())),
            Outcome::Participants(vec![participant.clone(), participant]),
        ];
        for o in outcomes {
            let reply = WireReply {
                v: WIRE_VERSION,
                result: Ok(o.clone()),
            };
            let back: WireReply =
                serde_json::from_str(&serde_json::to_string(&reply).unwrap()).unwrap();
            let back = back.result.unwrap();
            match o {
                Outcome::Done => assert!(matches!(back, Outcome::Done)),
                Outcome::Call(c) => assert_eq!(back.call().unwrap().id, c.id),
                Outcome::Parked(p) => {
                    let (c, orbit) = back.parked().unwrap();
                    let (pc, po) = *p;
                    assert_eq!((c.id, orbit), (pc.id, po));
                }
                Outcome::Participant(p) => assert_eq!(back.participant().unwrap(), *p),
                Outcome::Participants(p) => assert_eq!(back.participants().unwrap(), p),
            }
        }
        // An answer of the wrong kind is an error, never a made-up result.
        assert!(matches!(
            Outcome::Done.participant(),
            Err(CommandError::Invalid(_))
        ));
        let json = serde_json::to_value(WireCommand {
            v: 1,
            account_id: "a".into(),
            call_id: "c".into(),
            command: Command::Hold {
                target: Target::Call,
                on: true,
            },
        })
        .unwrap();
        assert_eq!(json["command"]["command"], "hold");
        for e in [
            CommandError::NotFound,
            CommandError::WrongState {
                state: crate::model::WrongState::Ringing,
            },
            CommandError::Failed {
                status: 488,
                reason: "Not Acceptable Here".into(),
            },
            CommandError::WrongState {
                state: WrongState::OnAnotherNode,
            },
            CommandError::NodeTimeout { node: "n2".into() },
        ] {
            let reply = WireReply {
                v: WIRE_VERSION,
                result: Err(e.clone()),
            };
            let back: WireReply =
                serde_json::from_str(&serde_json::to_string(&reply).unwrap()).unwrap();
            assert_eq!(back.result.err(), Some(e));
        }
    }

    /// A throwaway `nats-server -js` on a free loopback port (the Debian package's binary).
    struct Nats {
        child: std::process::Child,
        url: String,
        dir: std::path::PathBuf,
    }

    impl Nats {
        fn start() -> Nats {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let dir = std::env::temp_dir().join(format!("hf-nats-{}", uuid::Uuid::new_v4()));
            let bin = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
                .into_iter()
                .find(|p| std::path::Path::new(p).exists())
                .expect("nats-server is installed (scripts/test.sh installs it)");
            let child = std::process::Command::new(bin)
                .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
                .arg(&dir)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            Nats {
                child,
                url: format!("nats://127.0.0.1:{port}"),
                dir,
            }
        }
    }

    impl Drop for Nats {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn event(account: &str, call: &str) -> BusEvent {
        BusEvent::Call(crate::events::Event {
            seq: 0,
            account_id: account.into(),
            kind: crate::events::EventKind::New,
            call_id: call.into(),
            leg_id: None,
            cause: None,
            at_ms: 0,
            digit: None,
            recording_id: None,
            target: None,
            call: CallInfo {
                id: call.into(),
                account_id: account.into(),
                from: "201".into(),
                to: "202".into(),
                dialled: "202".into(),
                direction: crate::model::CallDirection::Internal,
                state: crate::model::CallState::Ringing,
                started_at_ms: 0,
                answered_at_ms: None,
                legs: vec![],
                dialling: vec![],
            },
        })
    }

    #[tokio::test]
    async fn two_nodes_publishing_at_once_share_one_gap_free_sequence_per_account() {
        let nats = Nats::start();
        let mut stream = None;
        let mut contexts = Vec::new();
        for _ in 0..2 {
            let client = async_nats::ConnectOptions::new()
                .retry_on_initial_connect()
                .connect(nats.url.as_str())
                .await
                .unwrap();
            let js = jetstream::new(client);
            let s = js
                .get_or_create_stream(stream::Config {
                    name: EVENT_STREAM.to_string(),
                    subjects: vec![format!("{EVENT_PREFIX}.>")],
                    max_messages_per_subject: 1000,
                    storage: stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .unwrap();
            stream.get_or_insert(s.clone());
            contexts.push((js, s));
        }
        // Two sequencers (two nodes) race on account "a"; "b" has its own numbers.
        let mut senders = Vec::new();
        let mut tasks = Vec::new();
        for (i, (js, s)) in contexts.into_iter().enumerate() {
            let (tx, rx) = mpsc::channel(1000);
            senders.push(tx);
            tasks.push(tokio::spawn(sequencer(js, s, format!("n{i}"), rx)));
        }
        const EACH: usize = 150;
        for k in 0..EACH {
            for (i, tx) in senders.iter().enumerate() {
                tx.send(event("a", &format!("n{i}-{k}"))).await.unwrap();
            }
        }
        senders[0].send(event("b", "b1")).await.unwrap();
        drop(senders);
        for t in tasks {
            t.await.unwrap();
        }
        // Read the account's subject back in stream order.
        let stream = stream.unwrap();
        let mut seqs = Vec::new();
        let mut nodes = std::collections::HashSet::new();
        let mut calls = std::collections::HashSet::new();
        let mut next = 1;
        loop {
            let m = match stream.get_raw_message(next).await {
                Ok(m) => m,
                Err(_) => break,
            };
            next += 1;
            let w: WireEvent = serde_json::from_slice(&m.payload).unwrap();
            if m.subject.as_str() == account_subject("a") {
                seqs.push(w.event.seq());
                nodes.insert(w.node);
                if let BusEvent::Call(e) = w.event {
                    calls.insert(e.call_id);
                }
            } else {
                assert_eq!(w.event.seq(), 1, "account b numbers from 1");
            }
        }
        assert_eq!(seqs, (1..=2 * EACH as u64).collect::<Vec<_>>());
        assert_eq!(calls.len(), 2 * EACH, "every event once");
        assert_eq!(nodes.len(), 2);
    }

    #[test]
    fn two_calls_run_where_both_are_or_are_refused_when_split() {
        use CallOwner::{Here, Node, Nowhere};
        let n = |s: &str| Node(s.to_string());
        assert_eq!(pair_route(Here, Here), PairRoute::Here);
        assert_eq!(
            pair_route(n("n2"), n("n2")),
            PairRoute::Forward("n2".into())
        );
        assert_eq!(pair_route(Here, n("n2")), PairRoute::Split);
        assert_eq!(pair_route(n("n2"), Here), PairRoute::Split);
        assert_eq!(pair_route(n("n2"), n("n3")), PairRoute::Split);
        // An unknown call is this node's 404, wherever the other one is.
        for other in [Here, n("n2"), Nowhere] {
            assert_eq!(pair_route(Nowhere, other.clone()), PairRoute::Here);
            assert_eq!(pair_route(other, Nowhere), PairRoute::Here);
        }
    }

    #[test]
    fn other_nodes_parked_calls_are_listed_until_retrieved_or_ended() {
        let orbits = RemoteOrbits::default();
        let with = |kind, call: &str, account: &str, target: Option<&str>| {
            let mut e = event(account, call);
            if let BusEvent::Call(c) = &mut e {
                c.kind = kind;
                c.target = target.map(str::to_string);
            }
            e
        };
        use crate::events::EventKind::{Dtmf, Ended, Parked, TransferStarted, Unparked};
        orbits.note(&with(Parked, "c1", "a", Some("*71")));
        orbits.note(&with(Parked, "c2", "a", Some("*72")));
        orbits.note(&with(Parked, "c3", "a", Some("*73")));
        orbits.note(&with(Parked, "b1", "b", Some("*71")));
        let mut a = orbits.of("a");
        a.sort();
        assert_eq!(
            a,
            [("*71", "c1"), ("*72", "c2"), ("*73", "c3")]
                .map(|(o, c)| (o.to_string(), c.to_string()))
        );
        // Other events of a parked call leave it parked.
        orbits.note(&with(Dtmf, "c1", "a", None));
        assert_eq!(orbits.of("a").len(), 3);
        orbits.note(&with(Unparked, "c1", "a", Some("*71")));
        orbits.note(&with(TransferStarted, "c2", "a", Some("203")));
        assert_eq!(orbits.of("a"), [("*73".to_string(), "c3".to_string())]);
        orbits.note(&with(Ended, "c3", "a", None));
        assert!(orbits.of("a").is_empty());
        assert_eq!(orbits.of("b"), [("*71".to_string(), "b1".to_string())]);
    }

    #[test]
    fn subjects_are_single_tokens_whatever_the_id() {
        assert_eq!(account_subject("a.b *>"), "hookflash.events.612e62202a3e");
        assert_eq!(command_subject("node1"), "hookflash.commands.6e6f646531");
    }
}
