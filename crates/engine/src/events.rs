//! Call and conference events, sequenced per account, with a bounded backlog so a client
//! that reconnects with its last sequence number gets what it missed instead of re-listing.
//!
//! The bus carries [`BusEvent`]s: a call's event ([`Event`], always with the call as it is
//! after it) or a conference's ([`ConferenceEvent`], with the conference's name and, for
//! joins and leaves, the participant and the call leg it is). One sequence per account covers
//! both. Per-call watchers ([`EventBus::watch_call`]) get call events only.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, OnceLock};

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};

use crate::control::CallInfo;
use crate::model::{wire_enum, EndCause};

wire_enum! {
    /// What happened to a call (the native SSE `event`).
    pub enum EventKind {
        New => "new",
        Ringing => "ringing",
        Answered => "answered",
        Held => "held",
        Retrieved => "retrieved",
        Muted => "muted",
        Unmuted => "unmuted",
        /// A DTMF digit pressed on a phone (RFC 4733), once per press.
        Dtmf => "dtmf",
        RecordingStarted => "recording_started",
        RecordingStopped => "recording_stopped",
        /// A ringing call was forwarded to another destination (`target`).
        Forwarded => "forwarded",
        /// A caller left a voicemail message (`recording_id`: the message's id).
        Voicemail => "voicemail",
        /// The call was parked (`target`: the orbit); the parked party hears music.
        Parked => "parked",
        /// A phone dialled the orbit and took the parked call.
        Unparked => "unparked",
        /// A blind transfer began: the kept party hears music while the target rings.
        TransferStarted => "transfer_started",
        /// The transfer target's phone is ringing.
        TransferRinging => "transfer_ringing",
        /// Attended transfer: the target answered and talks to the transferor.
        TransferConsulting => "transfer_consulting",
        /// The target answered and replaced the transferor.
        Transferred => "transferred",
        /// The target could not be reached; the parties are back together (cause says why).
        TransferFailed => "transfer_failed",
        Ended => "ended",
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    /// Per account, starting at 1, no gaps.
    pub seq: u64,
    pub account_id: String,
    pub kind: EventKind,
    pub call_id: String,
    /// The leg the event is about, when it is about one leg.
    pub leg_id: Option<String>,
    /// For `ended`: why the call ended; for `transfer_failed`: why the target was not reached.
    pub cause: Option<EndCause>,
    pub at_ms: i64,
    /// For `dtmf`: the digit (`0-9 * # A-D`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digit: Option<String>,
    /// For `recording_started` / `recording_stopped`: the recording's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording_id: Option<String>,
    /// For transfer events: the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The call as it is after the event.
    pub call: CallInfo,
}

wire_enum! {
    /// What happened to a conference (the native SSE `event`).
    pub enum ConferenceEventKind {
        /// The first participant joined.
        Started => "conference_started",
        /// The last participant left, or one with `end_on_exit` did.
        Ended => "conference_ended",
        ParticipantJoined => "participant_joined",
        ParticipantLeft => "participant_left",
    }
}

/// The participant a conference event is about.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConferenceParticipantRef {
    /// The participant's id in the conference.
    pub id: String,
    /// The call whose leg it is (a call brought in), none for a phone the conference dialled.
    pub call_id: Option<String>,
    pub leg_id: Option<String>,
    /// The extension or number dialled, or the leg's party.
    pub number: String,
    pub muted: bool,
}

/// An event of a named conference.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConferenceEvent {
    /// Per account, in the same sequence as call events.
    pub seq: u64,
    pub account_id: String,
    pub kind: ConferenceEventKind,
    /// The conference's name.
    pub conference: String,
    /// For joins and leaves.
    pub participant: Option<ConferenceParticipantRef>,
    /// Participants in the conference after the event.
    pub participants: usize,
    pub at_ms: i64,
    /// When the conference started (ms since the epoch).
    pub started_at_ms: i64,
}

/// One event on the bus.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum BusEvent {
    Call(Event),
    Conference(ConferenceEvent),
}

impl BusEvent {
    pub fn seq(&self) -> u64 {
        match self {
            BusEvent::Call(e) => e.seq,
            BusEvent::Conference(e) => e.seq,
        }
    }

    pub(crate) fn set_seq(&mut self, seq: u64) {
        match self {
            BusEvent::Call(e) => e.seq = seq,
            BusEvent::Conference(e) => e.seq = seq,
        }
    }

    pub fn account_id(&self) -> &str {
        match self {
            BusEvent::Call(e) => &e.account_id,
            BusEvent::Conference(e) => &e.account_id,
        }
    }

    /// The event's wire word (`answered`, `participant_joined`, ...).
    pub fn kind_str(&self) -> &'static str {
        match self {
            BusEvent::Call(e) => e.kind.as_str(),
            BusEvent::Conference(e) => e.kind.as_str(),
        }
    }
}

/// Fields of an event that only some kinds carry.
#[derive(Debug, Clone, Default)]
pub struct EventDetail {
    pub digit: Option<String>,
    pub recording_id: Option<String>,
    /// A transfer's target (extension or number).
    pub target: Option<String>,
}

/// Result of a subscription: what was missed (oldest first) and the live feed.
pub struct Subscription {
    pub missed: Vec<BusEvent>,
    /// True when the requested sequence is older than the backlog: some events are lost and
    /// the client should re-list.
    pub gap: bool,
    pub live: broadcast::Receiver<BusEvent>,
}

struct AccountLog {
    next_seq: u64,
    backlog: VecDeque<BusEvent>,
}

impl AccountLog {
    fn new() -> AccountLog {
        AccountLog {
            next_seq: 1,
            backlog: VecDeque::new(),
        }
    }
}

pub struct EventBus {
    capacity: usize,
    accounts: Mutex<HashMap<String, AccountLog>>,
    sender: broadcast::Sender<BusEvent>,
    /// Cluster mode (`[cluster] nats_url`): events go to the sequencer, which numbers them in
    /// the account's cluster-wide sequence (JetStream); every node's events come back through
    /// [`EventBus::ingest`]. Unset on a single node: numbered here, as always.
    cluster: OnceLock<mpsc::Sender<BusEvent>>,
    /// Cluster mode: this node's own events once sequenced, for the consumers that act once
    /// per event in the cluster (webhooks, applications): [`EventBus::subscribe_all`].
    owned: broadcast::Sender<BusEvent>,
    /// Cluster mode: other nodes' calls in progress as their last event showed them, with the
    /// node that owns each (for listing and for forwarding commands). Locked after `accounts`
    /// in [`EventBus::ingest`]; nothing locks `accounts` while holding it.
    remote_calls: Mutex<HashMap<String, RemoteCall>>,
    /// Consumers of one call's events (an application run): fed directly, so each of N
    /// concurrent consumers does not wake for every event of every call (N² wake-ups).
    watchers: Mutex<HashMap<String, Vec<mpsc::Sender<Event>>>>,
}

/// How many events a call's watcher may have unread before more are dropped (and logged).
pub const CALL_WATCH_QUEUE: usize = 64;

/// How many other nodes' calls a node keeps track of (beyond it the oldest are forgotten:
/// listed nowhere, commands to them `NotFound`).
pub const REMOTE_CALLS_MAX: usize = 100_000;

/// Another node's call, as its latest event showed it.
#[derive(Debug, Clone)]
pub struct RemoteCall {
    pub node: String,
    pub call: CallInfo,
}

impl EventBus {
    pub fn new(backlog_per_account: usize) -> Self {
        let (sender, _) = broadcast::channel(4096);
        let (owned, _) = broadcast::channel(4096);
        EventBus {
            capacity: backlog_per_account.max(1),
            accounts: Mutex::new(HashMap::new()),
            sender,
            cluster: OnceLock::new(),
            owned,
            remote_calls: Mutex::new(HashMap::new()),
            watchers: Mutex::new(HashMap::new()),
        }
    }

    /// Sequences and publishes an event. Never blocks (slow subscribers lag, they do not stall
    /// calls).
    pub fn publish(
        &self,
        kind: EventKind,
        call: &CallInfo,
        leg_id: Option<&str>,
        cause: Option<EndCause>,
    ) {
        self.publish_detail(kind, call, leg_id, cause, EventDetail::default());
    }

    /// Like [`EventBus::publish`], with the fields only some kinds carry.
    pub fn publish_detail(
        &self,
        kind: EventKind,
        call: &CallInfo,
        leg_id: Option<&str>,
        cause: Option<EndCause>,
        detail: EventDetail,
    ) {
        if let Some(sequencer) = self.cluster.get() {
            // Numbered by the sequencer (cluster-wide); the call's own watchers need no number.
            let event = Event {
                seq: 0,
                account_id: call.account_id.clone(),
                kind,
                call_id: call.id.clone(),
                leg_id: leg_id.map(str::to_string),
                cause,
                at_ms: crate::sip_glue::now_ms(),
                digit: detail.digit,
                recording_id: detail.recording_id,
                target: detail.target,
                call: call.clone(),
            };
            to_sequencer(sequencer, BusEvent::Call(event.clone()));
            self.feed_watchers(event);
            return;
        }
        let Ok(mut accounts) = self.accounts.lock() else {
            return;
        };
        let log = accounts
            .entry(call.account_id.clone())
            .or_insert_with(AccountLog::new);
        let event = Event {
            seq: log.next_seq,
            account_id: call.account_id.clone(),
            kind,
            call_id: call.id.clone(),
            leg_id: leg_id.map(str::to_string),
            cause,
            at_ms: crate::sip_glue::now_ms(),
            digit: detail.digit,
            recording_id: detail.recording_id,
            target: detail.target,
            call: call.clone(),
        };
        log.next_seq += 1;
        if log.backlog.len() == self.capacity {
            log.backlog.pop_front();
        }
        log.backlog.push_back(BusEvent::Call(event.clone()));
        // Sent under the lock so live order equals sequence order.
        let _ = self.sender.send(BusEvent::Call(event.clone()));
        drop(accounts);
        self.feed_watchers(event);
    }

    /// Sequences and publishes a conference's event (in the account's one sequence) and
    /// returns it as published.
    pub fn publish_conference(
        &self,
        account_id: &str,
        kind: ConferenceEventKind,
        conference: &str,
        participant: Option<ConferenceParticipantRef>,
        participants: usize,
        started_at_ms: i64,
    ) -> Option<ConferenceEvent> {
        if let Some(sequencer) = self.cluster.get() {
            // Numbered by the sequencer; the participants' watchers get it unnumbered (0).
            let event = ConferenceEvent {
                seq: 0,
                account_id: account_id.to_string(),
                kind,
                conference: conference.to_string(),
                participant,
                participants,
                at_ms: crate::sip_glue::now_ms(),
                started_at_ms,
            };
            to_sequencer(sequencer, BusEvent::Conference(event.clone()));
            return Some(event);
        }
        let mut accounts = self.accounts.lock().ok()?;
        let log = accounts
            .entry(account_id.to_string())
            .or_insert_with(AccountLog::new);
        let event = ConferenceEvent {
            seq: log.next_seq,
            account_id: account_id.to_string(),
            kind,
            conference: conference.to_string(),
            participant,
            participants,
            at_ms: crate::sip_glue::now_ms(),
            started_at_ms,
        };
        log.next_seq += 1;
        if log.backlog.len() == self.capacity {
            log.backlog.pop_front();
        }
        log.backlog.push_back(BusEvent::Conference(event.clone()));
        let _ = self.sender.send(BusEvent::Conference(event.clone()));
        Some(event)
    }

    /// One call's events from now on, until (and including) its `ended`. Subscribe before
    /// checking that the call still exists, so no end is missed.
    pub fn watch_call(&self, call_id: &str) -> mpsc::Receiver<Event> {
        let (tx, rx) = mpsc::channel(CALL_WATCH_QUEUE);
        if let Ok(mut watchers) = self.watchers.lock() {
            watchers.entry(call_id.to_string()).or_default().push(tx);
        }
        rx
    }

    fn feed_watchers(&self, event: Event) {
        let Ok(mut watchers) = self.watchers.lock() else {
            return;
        };
        let ended = event.kind == EventKind::Ended;
        let Some(list) = watchers.get_mut(&event.call_id) else {
            return;
        };
        list.retain(|w| match w.try_send(event.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(call_id = %event.call_id, kind = %event.kind.as_str(), "a call watcher is full: event dropped");
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
        if ended || list.is_empty() {
            watchers.remove(&event.call_id);
        }
    }

    /// Every account's live events (for server-side consumers such as webhook delivery).
    /// In a cluster: this node's own calls' events only (numbered), so that each event is
    /// acted on once in the cluster, by the node that owns the call.
    pub fn subscribe_all(&self) -> broadcast::Receiver<BusEvent> {
        if self.cluster.get().is_some() {
            self.owned.subscribe()
        } else {
            self.sender.subscribe()
        }
    }

    /// Every account's live events of every node, in each account's sequence (for consumers
    /// that serve clients connected to this node, such as a WebSocket's subscriptions). On a
    /// single node the same as [`EventBus::subscribe_all`]; in a cluster each event reaches
    /// every node's receivers, so do not *act* on it once per cluster here.
    pub fn subscribe_every_node(&self) -> broadcast::Receiver<BusEvent> {
        self.sender.subscribe()
    }

    /// True in cluster mode (`[cluster] nats_url`): events come from the cluster's bus.
    pub fn is_clustered(&self) -> bool {
        self.cluster.get().is_some()
    }

    /// Switches to cluster mode: from now on events are numbered by `sequencer`'s reader and
    /// come back through [`EventBus::ingest`]. Call before anything subscribes.
    pub(crate) fn enable_cluster(&self, sequencer: mpsc::Sender<BusEvent>) -> bool {
        self.cluster.set(sequencer).is_ok()
    }

    /// Cluster mode: one numbered event from the bus (any node's, in the account's order).
    /// `own`: this node published it; `live`: published since this node started (older ones
    /// only fill the backlog, so a restarted node resumes clients without acting twice).
    pub(crate) fn ingest(&self, event: BusEvent, origin: &str, own: bool, live: bool) {
        let Ok(mut accounts) = self.accounts.lock() else {
            return;
        };
        let log = accounts
            .entry(event.account_id().to_string())
            .or_insert_with(AccountLog::new);
        if event.seq() < log.next_seq {
            return; // seen already (the consumer was re-created)
        }
        log.next_seq = event.seq() + 1;
        if log.backlog.len() == self.capacity {
            log.backlog.pop_front();
        }
        log.backlog.push_back(event.clone());
        // Another node's call is tracked before its event goes out, so a consumer that looks
        // the call up (`Engine::call`, `Engine::calls`) on the event sees it as the event does.
        if let (false, BusEvent::Call(e)) = (own, &event) {
            self.track_remote(origin, e);
        }
        if live {
            let _ = self.sender.send(event.clone());
            if own {
                let _ = self.owned.send(event);
            }
        }
    }

    fn track_remote(&self, node: &str, event: &Event) {
        let Ok(mut remote) = self.remote_calls.lock() else {
            return;
        };
        if event.kind == EventKind::Ended {
            remote.remove(&event.call_id);
            return;
        }
        if remote.len() >= REMOTE_CALLS_MAX && !remote.contains_key(&event.call_id) {
            let oldest = remote
                .iter()
                .min_by_key(|(_, r)| r.call.started_at_ms)
                .map(|(id, _)| id.clone());
            if let Some(id) = oldest {
                tracing::warn!(call_id = %id, "too many other nodes' calls tracked: the oldest is forgotten");
                remote.remove(&id);
            }
        }
        remote.insert(
            event.call_id.clone(),
            RemoteCall {
                node: node.to_string(),
                call: event.call.clone(),
            },
        );
    }

    /// Another node's call in progress (cluster mode), if this node has seen it.
    pub fn remote_call(&self, call_id: &str) -> Option<RemoteCall> {
        self.remote_calls
            .lock()
            .ok()
            .and_then(|r| r.get(call_id).cloned())
    }

    /// Other nodes' calls in progress of an account (cluster mode).
    pub fn remote_calls(&self, account_id: &str) -> Vec<CallInfo> {
        self.remote_calls
            .lock()
            .map(|r| {
                r.values()
                    .filter(|c| c.call.account_id == account_id)
                    .map(|c| c.call.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Forgets the calls of a node (it is dead: its calls are lost with it).
    pub fn forget_node(&self, node: &str) -> usize {
        let Ok(mut remote) = self.remote_calls.lock() else {
            return 0;
        };
        let before = remote.len();
        remote.retain(|_, c| c.node != node);
        before - remote.len()
    }

    /// Subscribes to an account's events; `after` = the last sequence the client saw.
    /// The live receiver carries every account's events: filter by `account_id`.
    pub fn subscribe(&self, account_id: &str, after: Option<u64>) -> Subscription {
        let Ok(accounts) = self.accounts.lock() else {
            return Subscription {
                missed: vec![],
                gap: true,
                live: self.sender.subscribe(),
            };
        };
        let live = self.sender.subscribe();
        let (missed, gap) = match (after, accounts.get(account_id)) {
            (Some(after), Some(log)) => {
                let oldest = log
                    .backlog
                    .front()
                    .map(BusEvent::seq)
                    .unwrap_or(log.next_seq);
                let missed = log
                    .backlog
                    .iter()
                    .filter(|e| e.seq() > after)
                    .cloned()
                    .collect();
                (missed, after + 1 < oldest)
            }
            _ => (vec![], false),
        };
        Subscription { missed, gap, live }
    }

    /// The last sequence number given out for an account (0 if none).
    pub fn last_seq(&self, account_id: &str) -> u64 {
        self.accounts
            .lock()
            .ok()
            .and_then(|a| a.get(account_id).map(|l| l.next_seq - 1))
            .unwrap_or(0)
    }
}

/// Hands an event to the sequencer without waiting: a full queue (the bus is down or slow)
/// drops the event, logged, rather than stalling a call.
fn to_sequencer(sequencer: &mpsc::Sender<BusEvent>, event: BusEvent) {
    if let Err(e) = sequencer.try_send(event) {
        let (why, event) = match e {
            mpsc::error::TrySendError::Full(ev) => ("full", ev),
            mpsc::error::TrySendError::Closed(ev) => ("closed", ev),
        };
        tracing::warn!(account_id = %event.account_id(), kind = %event.kind_str(), why, "event not sent to the cluster bus");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CallDirection, CallState};

    fn call(account: &str) -> CallInfo {
        CallInfo {
            id: "c1".into(),
            account_id: account.into(),
            from: "101".into(),
            to: "102".into(),
            dialled: "102".into(),
            direction: CallDirection::Internal,
            state: CallState::Ringing,
            started_at_ms: 0,
            answered_at_ms: None,
            legs: vec![],
            dialling: Vec::new(),
        }
    }

    #[test]
    fn sequences_are_per_account_and_resume_from_backlog() {
        let bus = EventBus::new(3);
        for _ in 0..5 {
            bus.publish(EventKind::New, &call("a"), None, None);
        }
        bus.publish(EventKind::New, &call("b"), None, None);
        assert_eq!(bus.last_seq("a"), 5);
        assert_eq!(bus.last_seq("b"), 1);
        let s = bus.subscribe("a", Some(3));
        assert_eq!(
            s.missed.iter().map(BusEvent::seq).collect::<Vec<_>>(),
            vec![4, 5]
        );
        assert!(!s.gap);
        // Only 3..=5 are kept: asking from 1 means 2 is lost.
        let s = bus.subscribe("a", Some(1));
        assert!(s.gap);
        assert_eq!(s.missed.first().map(BusEvent::seq), Some(3));
        assert!(bus.subscribe("b", Some(1)).missed.is_empty());
    }

    #[test]
    fn a_call_watcher_gets_only_its_calls_events_up_to_the_end_and_is_then_dropped() {
        let bus = EventBus::new(16);
        let mut mine = call("a");
        mine.id = "mine".into();
        let mut other = call("a");
        other.id = "other".into();
        let mut rx = bus.watch_call("mine");
        bus.publish(EventKind::New, &other, None, None);
        bus.publish(EventKind::New, &mine, None, None);
        bus.publish(EventKind::Answered, &other, None, None);
        bus.publish(EventKind::Ended, &mine, None, Some(EndCause::Normal));
        bus.publish(EventKind::New, &mine, None, None);
        let mut got = Vec::new();
        while let Ok(e) = rx.try_recv() {
            got.push((e.call_id, e.kind));
        }
        assert_eq!(
            got,
            vec![
                ("mine".to_string(), EventKind::New),
                ("mine".to_string(), EventKind::Ended)
            ]
        );
        // After the end the watcher is gone: its receiver reports the channel closed.
        assert!(matches!(
            rx.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
        assert!(bus.watchers.lock().map(|w| w.is_empty()).unwrap_or(false));
    }

    #[test]
    fn in_a_cluster_events_are_numbered_by_the_bus_and_only_own_ones_reach_subscribe_all() {
        let bus = EventBus::new(3);
        let (tx, mut sequencer) = mpsc::channel(16);
        assert!(!bus.is_clustered());
        assert!(bus.enable_cluster(tx));
        assert!(bus.is_clustered());
        let mut watcher = bus.watch_call("c1");
        let mut all = bus.subscribe_all();
        let mut every = bus.subscribe_every_node();
        let sub = bus.subscribe("a", None);
        let mut live = sub.live;
        // Published here: unnumbered to the sequencer, straight to the call's watcher, not
        // into the backlog (that is filled from the bus).
        bus.publish(EventKind::New, &call("a"), None, None);
        let queued = sequencer.try_recv().unwrap();
        assert_eq!((queued.seq(), queued.kind_str()), (0, "new"));
        assert_eq!(
            watcher.try_recv().map(|e| e.kind).ok(),
            Some(EventKind::New)
        );
        assert_eq!(bus.last_seq("a"), 0);
        // Back from the bus, numbered: ours (live), another node's (live), a replayed one.
        let mut ours = queued;
        ours.set_seq(1);
        bus.ingest(ours, "n1", true, true);
        let mut theirs = call("a");
        theirs.id = "c2".into();
        let mut e = BusEvent::Call(Event {
            seq: 2,
            account_id: "a".into(),
            kind: EventKind::Answered,
            call_id: "c2".into(),
            leg_id: None,
            cause: None,
            at_ms: 0,
            digit: None,
            recording_id: None,
            target: None,
            call: theirs,
        });
        bus.ingest(e.clone(), "n2", false, true);
        bus.ingest(e.clone(), "n2", false, true); // again: ignored
        assert_eq!(bus.last_seq("a"), 2);
        assert_eq!(live.try_recv().map(|e| e.seq()).ok(), Some(1));
        assert_eq!(live.try_recv().map(|e| e.seq()).ok(), Some(2));
        assert!(live.try_recv().is_err());
        // Acting consumers get this node's events only (each event acted on once).
        assert_eq!(all.try_recv().map(|e| e.seq()).ok(), Some(1));
        assert!(all.try_recv().is_err());
        // Consumers serving this node's clients get every node's events, in sequence.
        assert_eq!(every.try_recv().map(|e| e.seq()).ok(), Some(1));
        assert_eq!(every.try_recv().map(|e| e.seq()).ok(), Some(2));
        assert!(every.try_recv().is_err());
        // The other node's call is known, with its owner, until it ends or the node is dropped.
        assert_eq!(
            bus.remote_call("c2").map(|r| r.node),
            Some("n2".to_string())
        );
        assert_eq!(bus.remote_calls("a").len(), 1);
        assert!(bus.remote_calls("b").is_empty());
        assert!(bus.remote_call("c1").is_none(), "own calls are not remote");
        assert_eq!(bus.forget_node("n2"), 1);
        assert!(bus.remote_call("c2").is_none());
        // Resume from the backlog across the replayed history; older than it: a gap.
        e.set_seq(3);
        bus.ingest(e.clone(), "n2", false, false);
        e.set_seq(4);
        bus.ingest(e, "n2", false, false);
        assert!(live.try_recv().is_err(), "replayed events are not live");
        let s = bus.subscribe("a", Some(2));
        assert_eq!(
            s.missed.iter().map(BusEvent::seq).collect::<Vec<_>>(),
            vec![3, 4]
        );
        assert!(!s.gap);
        assert!(bus.subscribe("a", Some(0)).gap);
    }

    #[test]
    fn event_kinds_are_todays_words() {
        let words: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(
            words,
            [
                "new",
                "ringing",
                "answered",
                "held",
                "retrieved",
                "muted",
                "unmuted",
                "dtmf",
                "recording_started",
                "recording_stopped",
                "forwarded",
                "voicemail",
                "parked",
                "unparked",
                "transfer_started",
                "transfer_ringing",
                "transfer_consulting",
                "transferred",
                "transfer_failed",
                "ended",
            ]
        );
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(*k));
            assert_eq!(
                serde_json::to_string(k).unwrap(),
                format!("\"{}\"", k.as_str())
            );
        }
    }

    #[test]
    fn events_serialize_with_todays_strings() {
        let bus = EventBus::new(10);
        let mut s = bus.subscribe("a", Some(0));
        bus.publish(
            EventKind::TransferFailed,
            &call("a"),
            None,
            Some(EndCause::NoAnswer),
        );
        let e = s.missed.pop().or_else(|| s.live.try_recv().ok()).unwrap();
        assert!(matches!(e, BusEvent::Call(_)));
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["kind"], "transfer_failed");
        assert_eq!(json["cause"], "no_answer");
        assert_eq!(json["call"]["direction"], "internal");
        assert_eq!(json["call"]["state"], "ringing");
    }

    #[tokio::test]
    async fn live_events_follow_the_backlog() {
        let bus = EventBus::new(10);
        let mut s = bus.subscribe("a", Some(0));
        bus.publish(
            EventKind::Ended,
            &call("a"),
            Some("leg"),
            Some(EndCause::Normal),
        );
        let BusEvent::Call(e) = s.live.recv().await.unwrap() else {
            panic!("a call event was published");
        };
        assert_eq!(e.seq, 1);
        assert_eq!(e.kind, EventKind::Ended);
        assert_eq!(e.cause, Some(EndCause::Normal));
    }

    #[test]
    fn conference_events_share_the_accounts_sequence_and_reach_no_call_watcher() {
        let bus = EventBus::new(10);
        let mut rx = bus.watch_call("c1");
        bus.publish(EventKind::New, &call("a"), None, None);
        let p = ConferenceParticipantRef {
            id: "p1".into(),
            call_id: Some("c1".into()),
            leg_id: Some("l1".into()),
            number: "201".into(),
            muted: false,
        };
        let started = bus
            .publish_conference("a", ConferenceEventKind::Started, "room", None, 1, 5)
            .unwrap();
        bus.publish_conference(
            "a",
            ConferenceEventKind::ParticipantJoined,
            "room",
            Some(p),
            1,
            5,
        );
        assert_eq!(started.seq, 2);
        let s = bus.subscribe("a", Some(0));
        let kinds: Vec<(u64, &str)> = s.missed.iter().map(|e| (e.seq(), e.kind_str())).collect();
        assert_eq!(
            kinds,
            [
                (1, "new"),
                (2, "conference_started"),
                (3, "participant_joined")
            ]
        );
        let json = serde_json::to_value(&s.missed[2]).unwrap();
        assert_eq!(json["kind"], "participant_joined");
        assert_eq!(json["conference"], "room");
        assert_eq!(json["participant"]["call_id"], "c1");
        assert_eq!(json["participant"]["leg_id"], "l1");
        // The call's watcher saw its own event only.
        assert_eq!(rx.try_recv().map(|e| e.kind).ok(), Some(EventKind::New));
        assert!(rx.try_recv().is_err());
        assert_eq!(
            ConferenceEventKind::ALL
                .iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>(),
            [
                "conference_started",
                "conference_ended",
                "participant_joined",
                "participant_left"
            ]
        );
    }
}
