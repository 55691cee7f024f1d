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

use crate::control::{AudioSource, CallInfo, CommandError, RecordAction, Target};
use crate::events::BusEvent;
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
}

impl Outcome {
    pub(crate) fn done(self) -> Result<(), CommandError> {
        match self {
            Outcome::Done => Ok(()),
            Outcome::Call(_) => Ok(()),
        }
    }

    pub(crate) fn call(self) -> Result<CallInfo, CommandError> {
        match self {
            Outcome::Call(c) => Ok(*c),
            Outcome::Done => Err(CommandError::Invalid(
                "the owning node answered without the call".into(),
            )),
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
    });
    tokio::spawn(sequencer(
        js.clone(),
        stream.clone(),
        node_id.to_string(),
        rx,
    ));
    tokio::spawn(reader(
        engine.clone(),
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
            Command::Hold { target, on } => self
                .hold(account_id, call_id, target, on)
                .await
                .map(|c| Outcome::Call(Box::new(c))),
            Command::Mute { leg_id, on } => self
                .mute(account_id, call_id, &leg_id, on)
                .await
                .map(|c| Outcome::Call(Box::new(c))),
            Command::Dtmf { leg_id, digits } => self
                .send_dtmf(account_id, call_id, &leg_id, &digits)
                .await
                .map(|()| Outcome::Done),
            Command::Record { action } => self
                .record(account_id, call_id, action)
                .await
                .map(|c| Outcome::Call(Box::new(c))),
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
                .map(|c| Outcome::Call(Box::new(c))),
            Command::FinishTransfer { complete } => self
                .finish_transfer(account_id, call_id, complete)
                .await
                .map(|c| Outcome::Call(Box::new(c))),
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_replies_read_back_as_written() {
        let commands = [
            Command::Hangup { leg: None },
            Command::Hold {
                target: Target::Leg("l2".into()),
                on: true,
            },
            Command::Mute {
                leg_id: "l1".into(),
                on: false,
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
        ];
        for c in commands {
            let wire = WireCommand {
                v: WIRE_VERSION,
                account_id: "a".into(),
                call_id: "c".into(),
                command: c.clone(),
            };
            let json = serde_json::to_string(&wire).unwrap();
            let back: WireCommand = serde_json::from_str(&json).unwrap();
            assert_eq!(back.command, c);
        }
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
    fn subjects_are_single_tokens_whatever_the_id() {
        assert_eq!(account_subject("a.b *>"), "hookflash.events.612e62202a3e");
        assert_eq!(command_subject("node1"), "hookflash.commands.6e6f646531");
    }
}
