//! Call events, sequenced per account, with a bounded backlog so a client that reconnects
//! with its last sequence number gets what it missed instead of re-listing.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use serde::Serialize;
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

#[derive(Debug, Clone, Serialize)]
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digit: Option<String>,
    /// For `recording_started` / `recording_stopped`: the recording's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recording_id: Option<String>,
    /// For transfer events: the target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The call as it is after the event.
    pub call: CallInfo,
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
    pub missed: Vec<Event>,
    /// True when the requested sequence is older than the backlog: some events are lost and
    /// the client should re-list.
    pub gap: bool,
    pub live: broadcast::Receiver<Event>,
}

struct AccountLog {
    next_seq: u64,
    backlog: VecDeque<Event>,
}

pub struct EventBus {
    capacity: usize,
    accounts: Mutex<HashMap<String, AccountLog>>,
    sender: broadcast::Sender<Event>,
    /// Consumers of one call's events (an application run): fed directly, so each of N
    /// concurrent consumers does not wake for every event of every call (N² wake-ups).
    watchers: Mutex<HashMap<String, Vec<mpsc::Sender<Event>>>>,
}

/// How many events a call's watcher may have unread before more are dropped (and logged).
pub const CALL_WATCH_QUEUE: usize = 64;

impl EventBus {
    pub fn new(backlog_per_account: usize) -> Self {
        let (sender, _) = broadcast::channel(4096);
        EventBus {
            capacity: backlog_per_account.max(1),
            accounts: Mutex::new(HashMap::new()),
            sender,
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
        let Ok(mut accounts) = self.accounts.lock() else {
            return;
        };
        let log = accounts
            .entry(call.account_id.clone())
            .or_insert(AccountLog {
                next_seq: 1,
                backlog: VecDeque::new(),
            });
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
        log.backlog.push_back(event.clone());
        // Sent under the lock so live order equals sequence order.
        let _ = self.sender.send(event.clone());
        drop(accounts);
        self.feed_watchers(event);
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
    pub fn subscribe_all(&self) -> broadcast::Receiver<Event> {
        self.sender.subscribe()
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
                let oldest = log.backlog.front().map(|e| e.seq).unwrap_or(log.next_seq);
                let missed = log
                    .backlog
                    .iter()
                    .filter(|e| e.seq > after)
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
            s.missed.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![4, 5]
        );
        assert!(!s.gap);
        // Only 3..=5 are kept: asking from 1 means 2 is lost.
        let s = bus.subscribe("a", Some(1));
        assert!(s.gap);
        assert_eq!(s.missed.first().map(|e| e.seq), Some(3));
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
        let e = s.live.recv().await.unwrap();
        assert_eq!(e.seq, 1);
        assert_eq!(e.kind, EventKind::Ended);
        assert_eq!(e.cause, Some(EndCause::Normal));
    }
}
