//! One dialog-event channel for all calls, routed to each call by SIP Call-ID.
//!
//! rsipstack reports a dialog's states on an unbounded tokio channel of `DialogState`s (304
//! bytes each), and tokio allocates a channel's first 32-slot block when the channel is made:
//! one channel per call cost 9.7 KB of every call's memory (BENCHMARKS.md). Here one channel
//! serves the whole server and a dispatcher task passes each state, boxed, to the call that
//! registered the dialog's Call-ID. A call registers a Call-ID before the dialog exists (an
//! incoming INVITE carries it; for an outgoing one we choose it), so no state can arrive for
//! a Call-ID that is not routed yet. The dispatcher turns each rsipstack state into our
//! [`DialogEvent`] on the way.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rsipstack::dialog::dialog::{DialogState, DialogStateSender};

use crate::dialog::{DialogEvent, EventRoute};
use tokio::sync::mpsc;
use tracing::debug;

/// A call's end of the router: its dialog events arrive here, in the order rsipstack sent them.
pub type CallStateReceiver = mpsc::UnboundedReceiver<Box<DialogEvent>>;

/// Routes are weak: a call that has ended (dropped its [`CallStates`]) receives nothing, and
/// its routes are removed when a state for them arrives or by the next sweep.
struct Routes {
    by_call_id: HashMap<String, mpsc::WeakUnboundedSender<Box<DialogEvent>>>,
    /// Table size after the last sweep; the next sweep runs when the table has doubled.
    swept_len: usize,
}

const MIN_SWEEP_LEN: usize = 64;

impl Routes {
    fn insert(&mut self, call_id: String, to: &mpsc::UnboundedSender<Box<DialogEvent>>) {
        self.by_call_id.insert(call_id, to.downgrade());
        if self.by_call_id.len() >= (2 * self.swept_len).max(MIN_SWEEP_LEN) {
            self.by_call_id.retain(|_, to| to.strong_count() > 0);
            self.swept_len = self.by_call_id.len();
        }
    }

    /// The live call a Call-ID is routed to; forgets the route if that call has ended.
    fn target(&mut self, call_id: &str) -> Option<mpsc::UnboundedSender<Box<DialogEvent>>> {
        let to = self.by_call_id.get(call_id)?.upgrade();
        if to.is_none() {
            self.by_call_id.remove(call_id);
        }
        to
    }
}

/// The shared channel and its routing table. Cheap to clone.
#[derive(Clone)]
pub struct StateRouter {
    shared: DialogStateSender,
    routes: Arc<Mutex<Routes>>,
}

impl StateRouter {
    /// Makes the shared channel and spawns its dispatcher on the current tokio runtime.
    pub fn start() -> StateRouter {
        let (shared, states) = mpsc::unbounded_channel();
        let routes = Arc::new(Mutex::new(Routes {
            by_call_id: HashMap::new(),
            swept_len: 0,
        }));
        tokio::spawn(dispatch(states, Arc::clone(&routes)));
        StateRouter { shared, routes }
    }

    /// A new call's handle on the router and the receiver its actor reads.
    pub fn open(&self) -> (CallStates, CallStateReceiver) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            CallStates {
                tx,
                router: self.clone(),
            },
            rx,
        )
    }

    /// How many Call-IDs are routed (live or not yet swept), for tests.
    #[cfg(test)]
    fn routed(&self) -> usize {
        lock(&self.routes).by_call_id.len()
    }
}

/// A call's registration with the router; holding it keeps the call's routes alive.
#[derive(Clone)]
pub struct CallStates {
    tx: mpsc::UnboundedSender<Box<DialogEvent>>,
    router: StateRouter,
}

impl CallStates {
    /// Routes the states of dialogs with this SIP Call-ID to this call and returns the sender
    /// to give rsipstack for such a dialog. Call it before the dialog is made.
    pub fn route(&self, sip_call_id: &str) -> EventRoute {
        lock(&self.router.routes).insert(sip_call_id.to_string(), &self.tx);
        EventRoute(self.router.shared.clone())
    }

    /// Whether the call's receiver is gone.
    #[cfg(test)]
    fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// The routing table. Only a panic while holding the lock poisons it, and nothing done under
/// it panics, so a poisoned table is still consistent.
fn lock(routes: &Mutex<Routes>) -> MutexGuard<'_, Routes> {
    routes.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn dispatch(mut states: mpsc::UnboundedReceiver<DialogState>, routes: Arc<Mutex<Routes>>) {
    while let Some(state) = states.recv().await {
        let event = DialogEvent::from(state);
        let call_id = &event.leg_id().call_id;
        let target = lock(&routes).target(call_id);
        match target {
            Some(to) => {
                if let Err(mpsc::error::SendError(event)) = to.send(Box::new(event)) {
                    debug!(sip_call_id = %event.leg_id().call_id, "dialog state for a call that just ended dropped");
                }
            }
            None => debug!(sip_call_id = %call_id, "dialog state for no live call dropped"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsipstack::dialog::dialog::TerminatedReason;
    use rsipstack::dialog::DialogId;
    use std::time::Duration;

    fn id(call_id: &str) -> DialogId {
        DialogId {
            call_id: call_id.into(),
            local_tag: "l".into(),
            remote_tag: "r".into(),
        }
    }

    async fn next(rx: &mut CallStateReceiver) -> Option<DialogEvent> {
        tokio::time::timeout(Duration::from_secs(2), rx.recv())
            .await
            .ok()
            .flatten()
            .map(|s| *s)
    }

    fn is_empty(rx: &mut CallStateReceiver) -> bool {
        matches!(rx.try_recv(), Err(mpsc::error::TryRecvError::Empty))
    }

    #[tokio::test]
    async fn each_call_gets_the_states_of_its_own_call_ids_in_order() {
        let router = StateRouter::start();
        let (one, mut one_rx) = router.open();
        let (two, mut two_rx) = router.open();
        let to_one = one.route("a@x");
        let to_one_again = one.route("b@x");
        let to_two = two.route("c@x");
        to_one.0.send(DialogState::Calling(id("a@x"))).ok();
        to_two.0.send(DialogState::Trying(id("c@x"))).ok();
        to_one_again
            .0
            .send(DialogState::Terminated(id("b@x"), TerminatedReason::UacBye))
            .ok();
        to_one.0.send(DialogState::Trying(id("a@x"))).ok();

        let got: Vec<(String, &str)> = [
            next(&mut one_rx).await,
            next(&mut one_rx).await,
            next(&mut one_rx).await,
        ]
        .into_iter()
        .flatten()
        .map(|s| {
            let kind = match &s {
                DialogEvent::Calling(_) => "calling",
                DialogEvent::Trying(_) => "trying",
                DialogEvent::Terminated(..) => "terminated",
                _ => "other",
            };
            (s.leg_id().call_id.clone(), kind)
        })
        .collect();
        assert_eq!(
            got,
            vec![
                ("a@x".to_string(), "calling"),
                ("b@x".to_string(), "terminated"),
                ("a@x".to_string(), "trying"),
            ]
        );
        let two_got = next(&mut two_rx).await.map(|s| s.leg_id().call_id.clone());
        assert_eq!(two_got.as_deref(), Some("c@x"));
        assert!(is_empty(&mut one_rx) && is_empty(&mut two_rx));
    }

    #[tokio::test]
    async fn states_for_unknown_or_ended_calls_are_dropped_and_the_router_keeps_going() {
        let router = StateRouter::start();
        let (gone, gone_rx) = router.open();
        let shared = gone.route("gone@x");
        drop(gone_rx);
        drop(gone);
        let (live, mut live_rx) = router.open();
        live.route("live@x");
        shared.0.send(DialogState::Calling(id("nobody@x"))).ok();
        shared.0.send(DialogState::Calling(id("gone@x"))).ok();
        shared.0.send(DialogState::Calling(id("live@x"))).ok();
        let got = next(&mut live_rx).await.map(|s| s.leg_id().call_id.clone());
        assert_eq!(got.as_deref(), Some("live@x"));
        // The ended call's route went when its state arrived.
        assert_eq!(router.routed(), 1);
    }

    #[tokio::test]
    async fn ended_calls_routes_are_swept_as_the_table_grows() {
        let router = StateRouter::start();
        for i in 0..1000 {
            let (call, _rx) = router.open();
            call.route(&format!("{i}@x"));
        }
        let (live, _live_rx) = router.open();
        live.route("live@x");
        // Sweeps run whenever the table doubles: never more than twice the live routes
        // plus the sweep floor.
        assert!(
            router.routed() <= MIN_SWEEP_LEN,
            "{} routes kept",
            router.routed()
        );
    }

    #[tokio::test]
    async fn a_clone_of_a_calls_handle_keeps_its_routes_after_the_call_drops_its_own() {
        let router = StateRouter::start();
        let (call, mut rx) = router.open();
        let shared = call.route("kept@x");
        let forwarder = call.clone();
        drop(call);
        shared.0.send(DialogState::Calling(id("kept@x"))).ok();
        assert!(next(&mut rx).await.is_some());
        assert!(!forwarder.is_closed());
        drop(rx);
        assert!(forwarder.is_closed());
    }
}
