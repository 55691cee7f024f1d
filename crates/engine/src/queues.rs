//! Named call queues per account (the jambonz `enqueue` / `dequeue` verbs).
//!
//! A queue is made by its first caller and forgotten when it is empty. Callers wait in order
//! of priority (lower first) and, within one priority, of arrival (FIFO). A waiting caller
//! keeps its call (actor, dialog, media): the queue only holds a ticket for it and a channel
//! on which a dequeuer offers it a connection. Whoever runs the call (the application
//! runtime) plays the wait audio, and on an offer joins the bridge the offer names and
//! accepts; the dequeuer then joins too (see docs/architecture.md, "Queues").
//!
//! Bounded: at most [`MAX_QUEUES_PER_ACCOUNT`] queues per account and
//! [`MAX_CALLERS_PER_QUEUE`] callers per queue ([`QueueError::Full`] beyond). A caller leaves
//! when its call ends (the engine watches the call), when its ticket holder lets go (the
//! offer channel's receiver is dropped), or by [`Engine::queue_leave`].
//!
//! Nothing here runs in a call's actor: the registry is a plain map under a mutex (never
//! held across an await), and a dequeuer waiting for a caller awaits a version counter.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::sync::{oneshot, watch};
use tracing::{debug, info};

use crate::events::EventKind;
use crate::sip_glue::now_ms;
use crate::Engine;

/// Queues one account may have at once.
pub const MAX_QUEUES_PER_ACCOUNT: usize = 20;
/// Callers one queue holds at once.
pub const MAX_CALLERS_PER_QUEUE: usize = 50;
/// A queue name: 1-64 of letters, digits, `-`, `_`, `.`.
pub const MAX_NAME_LEN: usize = 64;
/// The default priority (jambonz: 0-999, lower is served first).
pub const DEFAULT_PRIORITY: u16 = 999;
/// How long a dequeuer waits for an offered caller to accept (join the bridge).
const ACCEPT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum QueueError {
    #[error("queue name must be 1-{MAX_NAME_LEN} letters, digits, '-', '_' or '.'")]
    BadName,
    /// A limit: too many queues in the account or callers in the queue (HTTP 429).
    #[error("{0}")]
    Full(String),
    #[error("the call is already waiting in queue {0:?}")]
    AlreadyQueued(String),
    #[error("the call has ended")]
    Gone,
}

/// What a dequeuer offers a waiting caller: join `bridge` (a conference name) and accept.
#[derive(Debug)]
pub struct QueueOffer {
    pub bridge: String,
    /// The dequeuing leg (its jambonz call_sid).
    pub by_call_sid: String,
    /// Send true once joined (false: cannot, the dequeuer tries the next caller).
    pub accept: oneshot::Sender<bool>,
}

/// A caller's place in a queue, held by whoever runs its call. Dropping `offers` leaves.
#[derive(Debug)]
pub struct QueueTicket {
    pub offers: oneshot::Receiver<QueueOffer>,
    /// The queue's id (`queue:<account>:<name>`, as jambonz names queues).
    pub queue_sid: String,
    /// 1-based place after joining, and the queue's size.
    pub position: usize,
    pub size: usize,
}

/// A caller taken out of a queue by a dequeuer that it accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dequeued {
    pub call_id: String,
    pub leg_id: String,
    pub waited: Duration,
    /// Callers left in the queue.
    pub remaining: usize,
}

/// One caller as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitingCall {
    pub call_id: String,
    pub leg_id: String,
    pub position: usize,
    pub priority: u16,
    pub enqueued_at_ms: i64,
    pub wait_ms: u64,
}

/// One queue as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueInfo {
    pub name: String,
    pub size: usize,
    pub calls: Vec<WaitingCall>,
}

struct Waiter {
    call_id: String,
    leg_id: String,
    priority: u16,
    seq: u64,
    since: Instant,
    since_ms: i64,
    offer: oneshot::Sender<QueueOffer>,
}

impl Waiter {
    fn live(&self) -> bool {
        !self.offer.is_closed()
    }
}

/// A caller taken out of its queue, to be offered a connection.
struct Taken {
    waiter: Waiter,
    remaining: usize,
}

#[derive(Default)]
struct Registry {
    /// account -> queue name -> callers in serving order.
    accounts: HashMap<String, HashMap<String, Vec<Waiter>>>,
    seq: u64,
}

/// The engine's queues (see the module docs).
pub struct Queues {
    reg: Mutex<Registry>,
    /// Bumped on every enqueue: dequeuers waiting on an empty queue look again.
    version: watch::Sender<u64>,
}

impl Default for Queues {
    fn default() -> Self {
        Queues {
            reg: Mutex::new(Registry::default()),
            version: watch::channel(0).0,
        }
    }
}

pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

pub fn queue_sid(account_id: &str, name: &str) -> String {
    format!("queue:{account_id}:{name}")
}

impl Registry {
    /// Forgets callers whose ticket holder let go, and empty queues.
    fn prune(&mut self, account_id: &str) {
        if let Some(queues) = self.accounts.get_mut(account_id) {
            for q in queues.values_mut() {
                q.retain(Waiter::live);
            }
            queues.retain(|_, q| !q.is_empty());
            if queues.is_empty() {
                self.accounts.remove(account_id);
            }
        }
    }
}

impl Queues {
    fn reg(&self) -> std::sync::MutexGuard<'_, Registry> {
        match self.reg.lock() {
            Ok(r) => r,
            Err(p) => p.into_inner(),
        }
    }

    /// Puts leg `leg_id` of `call_id` into queue `name` (made if new).
    pub fn enqueue(
        &self,
        account_id: &str,
        name: &str,
        call_id: &str,
        leg_id: &str,
        priority: u16,
    ) -> Result<QueueTicket, QueueError> {
        if !valid_name(name) {
            return Err(QueueError::BadName);
        }
        let mut reg = self.reg();
        reg.prune(account_id);
        if let Some(queues) = reg.accounts.get(account_id) {
            if let Some((q, _)) = queues
                .iter()
                .find(|(_, q)| q.iter().any(|w| w.leg_id == leg_id))
            {
                return Err(QueueError::AlreadyQueued(q.clone()));
            }
            if !queues.contains_key(name) && queues.len() >= MAX_QUEUES_PER_ACCOUNT {
                return Err(QueueError::Full(format!(
                    "the account has {MAX_QUEUES_PER_ACCOUNT} queues already"
                )));
            }
            if queues
                .get(name)
                .is_some_and(|q| q.len() >= MAX_CALLERS_PER_QUEUE)
            {
                return Err(QueueError::Full(format!(
                    "queue {name:?} is full ({MAX_CALLERS_PER_QUEUE} callers)"
                )));
            }
        }
        reg.seq += 1;
        let seq = reg.seq;
        let (tx, rx) = oneshot::channel();
        let queue = reg
            .accounts
            .entry(account_id.to_string())
            .or_default()
            .entry(name.to_string())
            .or_default();
        let waiter = Waiter {
            call_id: call_id.to_string(),
            leg_id: leg_id.to_string(),
            priority,
            seq,
            since: Instant::now(),
            since_ms: now_ms(),
            offer: tx,
        };
        // Serving order: priority, then arrival.
        let at = queue.partition_point(|w| (w.priority, w.seq) <= (priority, seq));
        queue.insert(at, waiter);
        let size = queue.len();
        drop(reg);
        self.version.send_modify(|v| *v = v.wrapping_add(1));
        Ok(QueueTicket {
            offers: rx,
            queue_sid: queue_sid(account_id, name),
            position: at + 1,
            size,
        })
    }

    /// The leg's 1-based place in queue `name` and the queue's size (None: not in it).
    pub fn position(&self, account_id: &str, name: &str, leg_id: &str) -> Option<(usize, usize)> {
        let mut reg = self.reg();
        reg.prune(account_id);
        let q = reg.accounts.get(account_id)?.get(name)?;
        let at = q.iter().position(|w| w.leg_id == leg_id)?;
        Some((at + 1, q.len()))
    }

    /// Callers waiting in queue `name`.
    pub fn size(&self, account_id: &str, name: &str) -> usize {
        let mut reg = self.reg();
        reg.prune(account_id);
        reg.accounts
            .get(account_id)
            .and_then(|a| a.get(name))
            .map_or(0, Vec::len)
    }

    /// Takes the leg (or, with `leg_id` None, the call's legs) out of whatever queue it is
    /// in; true if it was in one.
    pub fn leave(&self, account_id: &str, call_id: &str, leg_id: Option<&str>) -> bool {
        let mut reg = self.reg();
        let Some(queues) = reg.accounts.get_mut(account_id) else {
            return false;
        };
        let mut left = false;
        for q in queues.values_mut() {
            let before = q.len();
            q.retain(|w| !(w.call_id == call_id && leg_id.is_none_or(|l| w.leg_id == l)));
            left |= q.len() != before;
        }
        reg.prune(account_id);
        left
    }

    /// Takes the first live caller of queue `name` (or the one whose leg is `leg_id`).
    fn take(&self, account_id: &str, name: &str, leg_id: Option<&str>) -> Option<Taken> {
        let mut reg = self.reg();
        reg.prune(account_id);
        let q = reg.accounts.get_mut(account_id)?.get_mut(name)?;
        let at = match leg_id {
            Some(l) => q.iter().position(|w| w.leg_id == l)?,
            None => 0,
        };
        if at >= q.len() {
            return None;
        }
        let waiter = q.remove(at);
        let remaining = q.len();
        reg.prune(account_id);
        Some(Taken { waiter, remaining })
    }

    /// The account's queues with their callers, by name.
    pub fn list(&self, account_id: &str) -> Vec<QueueInfo> {
        let mut reg = self.reg();
        reg.prune(account_id);
        let now = Instant::now();
        let mut out: Vec<QueueInfo> = reg
            .accounts
            .get(account_id)
            .map(|queues| {
                queues
                    .iter()
                    .map(|(name, q)| QueueInfo {
                        name: name.clone(),
                        size: q.len(),
                        calls: q
                            .iter()
                            .enumerate()
                            .map(|(i, w)| WaitingCall {
                                call_id: w.call_id.clone(),
                                leg_id: w.leg_id.clone(),
                                position: i + 1,
                                priority: w.priority,
                                enqueued_at_ms: w.since_ms,
                                wait_ms: now.duration_since(w.since).as_millis() as u64,
                            })
                            .collect(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Takes a caller from queue `name` (the first, or leg `leg_id`), waiting up to
    /// `timeout` (None: until one comes) for one, offers it the `bridge` and waits for it to
    /// accept; a caller that does not accept is skipped (it has gone). None: nobody came.
    pub async fn dequeue(
        &self,
        account_id: &str,
        name: &str,
        leg_id: Option<&str>,
        timeout: Option<Duration>,
        bridge: &str,
        by_call_sid: &str,
    ) -> Result<Option<Dequeued>, QueueError> {
        if !valid_name(name) {
            return Err(QueueError::BadName);
        }
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let mut version = self.version.subscribe();
        loop {
            version.borrow_and_update();
            while let Some(taken) = self.take(account_id, name, leg_id) {
                let Taken { waiter, remaining } = taken;
                let (accept_tx, accept_rx) = oneshot::channel();
                let offer = QueueOffer {
                    bridge: bridge.to_string(),
                    by_call_sid: by_call_sid.to_string(),
                    accept: accept_tx,
                };
                if waiter.offer.send(offer).is_err() {
                    debug!(leg_id = %waiter.leg_id, "queued caller gone before the offer");
                    continue;
                }
                match tokio::time::timeout(ACCEPT_TIMEOUT, accept_rx).await {
                    Ok(Ok(true)) => {
                        return Ok(Some(Dequeued {
                            call_id: waiter.call_id,
                            leg_id: waiter.leg_id,
                            waited: waiter.since.elapsed(),
                            remaining,
                        }))
                    }
                    _ => {
                        info!(leg_id = %waiter.leg_id, "queued caller did not accept; next");
                    }
                }
            }
            let changed = version.changed();
            match deadline {
                None => {
                    if changed.await.is_err() {
                        return Ok(None);
                    }
                }
                Some(at) => {
                    tokio::select! {
                        r = changed => if r.is_err() { return Ok(None) },
                        _ = tokio::time::sleep_until(at) => return Ok(None),
                    }
                }
            }
        }
    }
}

impl Engine {
    /// Puts the application leg `leg_id` of `call_id` into queue `name`; it leaves when the
    /// call ends or the ticket's receiver is dropped.
    pub fn queue_enqueue(
        &self,
        account_id: &str,
        name: &str,
        call_id: &str,
        leg_id: &str,
        priority: u16,
    ) -> Result<QueueTicket, QueueError> {
        // Watch before the check, so an end in between is not missed.
        let mut watch = self.inner.events.watch_call(call_id);
        if self.local_call(account_id, call_id).is_err() {
            return Err(QueueError::Gone);
        }
        let ticket = self
            .inner
            .queues
            .enqueue(account_id, name, call_id, leg_id, priority)?;
        let engine = self.clone();
        let (account, call) = (account_id.to_string(), call_id.to_string());
        tokio::spawn(async move {
            while let Some(e) = watch.recv().await {
                if e.kind == EventKind::Ended {
                    break;
                }
            }
            if engine.inner.queues.leave(&account, &call, None) {
                info!(call_id = %call, "the call ended while queued: it left the queue");
            }
        });
        Ok(ticket)
    }

    /// Plays the music on hold to the application's answered caller once (a queue's wait
    /// music when the application gives no waitHook).
    pub async fn app_play_music(
        &self,
        account_id: &str,
        call_id: &str,
    ) -> Result<oneshot::Receiver<crate::apps::PlaybackEnd>, crate::CommandError> {
        let pcm = self.inner.music_on_hold.clone();
        self.send_command(account_id, call_id, |reply| crate::CallCommand::AppPlay {
            pcm,
            early: false,
            reply,
        })
        .await
    }

    pub fn queue_leave(&self, account_id: &str, call_id: &str, leg_id: &str) -> bool {
        self.inner.queues.leave(account_id, call_id, Some(leg_id))
    }

    pub fn queue_position(
        &self,
        account_id: &str,
        name: &str,
        leg_id: &str,
    ) -> Option<(usize, usize)> {
        self.inner.queues.position(account_id, name, leg_id)
    }

    pub fn queue_size(&self, account_id: &str, name: &str) -> usize {
        self.inner.queues.size(account_id, name)
    }

    pub fn queues(&self, account_id: &str) -> Vec<QueueInfo> {
        self.inner.queues.list(account_id)
    }

    /// See [`Queues::dequeue`].
    pub async fn queue_dequeue(
        &self,
        account_id: &str,
        name: &str,
        leg_id: Option<&str>,
        timeout: Option<Duration>,
        bridge: &str,
        by_call_sid: &str,
    ) -> Result<Option<Dequeued>, QueueError> {
        self.inner
            .queues
            .dequeue(account_id, name, leg_id, timeout, bridge, by_call_sid)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept_all(mut t: QueueTicket) -> tokio::task::JoinHandle<Option<String>> {
        tokio::spawn(async move {
            let offer = (&mut t.offers).await.ok()?;
            let bridge = offer.bridge.clone();
            offer.accept.send(true).ok()?;
            Some(bridge)
        })
    }

    #[tokio::test]
    async fn fifo_within_a_priority_and_lower_priority_first() {
        let q = Queues::default();
        let a = q.enqueue("acc", "support", "c1", "l1", 999).unwrap();
        assert_eq!((a.position, a.size), (1, 1));
        let b = q.enqueue("acc", "support", "c2", "l2", 999).unwrap();
        assert_eq!((b.position, b.size), (2, 2));
        // Priority 5 goes before both.
        let c = q.enqueue("acc", "support", "c3", "l3", 5).unwrap();
        assert_eq!((c.position, c.size), (1, 3));
        assert_eq!(q.position("acc", "support", "l1"), Some((2, 3)));
        assert_eq!(q.list("acc")[0].calls.len(), 3);
        let (ha, hb, hc) = (accept_all(a), accept_all(b), accept_all(c));
        let mut order = Vec::new();
        for _ in 0..3 {
            let d = q
                .dequeue("acc", "support", None, Some(Duration::ZERO), "br", "agent")
                .await
                .unwrap()
                .unwrap();
            order.push(d.leg_id);
        }
        assert_eq!(order, ["l3", "l1", "l2"]);
        assert_eq!(hc.await.unwrap().as_deref(), Some("br"));
        assert!(ha.await.unwrap().is_some() && hb.await.unwrap().is_some());
        // Empty queues are forgotten.
        assert!(q.list("acc").is_empty());
    }

    #[tokio::test]
    async fn a_named_caller_is_taken_out_of_order() {
        let q = Queues::default();
        let a = q.enqueue("acc", "s", "c1", "l1", 999).unwrap();
        let b = q.enqueue("acc", "s", "c2", "l2", 999).unwrap();
        let _hb = accept_all(b);
        let d = q
            .dequeue("acc", "s", Some("l2"), Some(Duration::ZERO), "br", "x")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(d.leg_id, "l2");
        assert_eq!(d.remaining, 1);
        assert_eq!(q.position("acc", "s", "l1"), Some((1, 1)));
        drop(a);
    }

    #[tokio::test]
    async fn bounds_per_account_and_per_queue() {
        let q = Queues::default();
        let mut keep = Vec::new();
        for i in 0..MAX_CALLERS_PER_QUEUE {
            keep.push(
                q.enqueue("acc", "big", &format!("c{i}"), &format!("l{i}"), 999)
                    .unwrap(),
            );
        }
        assert!(matches!(
            q.enqueue("acc", "big", "cx", "lx", 999),
            Err(QueueError::Full(_))
        ));
        for i in 1..MAX_QUEUES_PER_ACCOUNT {
            keep.push(
                q.enqueue(
                    "acc",
                    &format!("q{i}"),
                    &format!("d{i}"),
                    &format!("m{i}"),
                    999,
                )
                .unwrap(),
            );
        }
        assert!(matches!(
            q.enqueue("acc", "one-more", "cy", "ly", 999),
            Err(QueueError::Full(_))
        ));
        // Another account has its own limits.
        keep.push(q.enqueue("other", "one-more", "cz", "lz", 999).unwrap());
        // The same leg cannot wait twice; bad names are refused.
        assert!(matches!(
            q.enqueue("acc", "big", "c0", "l0", 999),
            Err(QueueError::AlreadyQueued(_))
        ));
        assert_eq!(
            q.enqueue("acc", "bad name", "c", "l", 999).err(),
            Some(QueueError::BadName)
        );
    }

    #[tokio::test]
    async fn a_caller_leaves_on_hangup_or_when_its_ticket_is_dropped() {
        let q = Queues::default();
        let a = q.enqueue("acc", "s", "c1", "l1", 999).unwrap();
        let _b = q.enqueue("acc", "s", "c2", "l2", 999).unwrap();
        let c = q.enqueue("acc", "s", "c3", "l3", 999).unwrap();
        // The call ended (the engine's watcher): out.
        assert!(q.leave("acc", "c1", None));
        assert!(!q.leave("acc", "c1", None));
        assert_eq!(q.position("acc", "s", "l2"), Some((1, 2)));
        // The application's verb dropped its ticket: out too.
        drop(c);
        assert_eq!(q.size("acc", "s"), 1);
        // A dequeuer never gets a caller that left.
        drop(a);
        drop(_b);
        let r = q
            .dequeue("acc", "s", None, Some(Duration::ZERO), "br", "x")
            .await
            .unwrap();
        assert_eq!(r, None);
    }

    #[tokio::test]
    async fn a_dequeuer_waits_for_the_next_caller_and_skips_one_that_refuses() {
        let q = std::sync::Arc::new(Queues::default());
        let q2 = q.clone();
        let waiting =
            tokio::spawn(async move { q2.dequeue("acc", "s", None, None, "br", "x").await });
        tokio::task::yield_now().await;
        // The first caller refuses the offer, the second accepts.
        let mut a = q.enqueue("acc", "s", "c1", "l1", 999).unwrap();
        let b = q.enqueue("acc", "s", "c2", "l2", 999).unwrap();
        let refuse = tokio::spawn(async move {
            if let Ok(offer) = (&mut a.offers).await {
                let _ = offer.accept.send(false);
            }
        });
        let hb = accept_all(b);
        let d = waiting.await.unwrap().unwrap().unwrap();
        assert_eq!(d.leg_id, "l2");
        refuse.await.unwrap();
        assert_eq!(hb.await.unwrap().as_deref(), Some("br"));
    }

    #[tokio::test]
    async fn an_empty_queue_times_out() {
        let q = Queues::default();
        let r = q
            .dequeue("acc", "s", None, Some(Duration::from_millis(50)), "br", "x")
            .await
            .unwrap();
        assert_eq!(r, None);
    }
}
