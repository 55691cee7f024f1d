//! A call that still rings, without I/O: the device asked to answer by itself (and how long
//! it has before it is rung the ordinary way again), and whether the caller is hearing a
//! reply message after which the call ends.
//!
//! The actor (`call/ringing.rs`) executes what this decides: it sends the auto-answer INVITE,
//! CANCELs it on [`RingAction::CancelAutoAnswer`], rings the device again when
//! [`RingingMachine::auto_answer_ended`] says so, and ends the call after the reply.

use std::time::Duration;

use tokio::time::Instant;

/// How long a device asked to answer by itself has before it is rung the ordinary way again.
pub const AUTO_ANSWER_WAIT: Duration = Duration::from_secs(4);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AutoAnswer {
    /// The callee fork that carries the auto-answer INVITE.
    fork: usize,
    deadline: Option<Instant>,
}

/// What the actor must do for the ringing call when time has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RingAction {
    /// The device did not answer by itself in time: CANCEL its auto-answer INVITE (fork
    /// `fork`); its final response then rings it the ordinary way again.
    CancelAutoAnswer { fork: usize },
}

/// An auto-answer request that cannot start now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AutoAnswerPending;

/// The ringing-call state of one call (see the module comment).
#[derive(Debug, Default)]
pub(crate) struct RingingMachine {
    auto_answer: Option<AutoAnswer>,
    replying: bool,
}

impl RingingMachine {
    /// May a device be asked to answer now (one at a time)?
    pub(crate) fn check_answer_on(&self) -> Result<(), AutoAnswerPending> {
        match self.auto_answer {
            Some(_) => Err(AutoAnswerPending),
            None => Ok(()),
        }
    }

    /// The auto-answer INVITE went out at `now` as callee fork `fork`.
    pub(crate) fn auto_answer_sent(&mut self, now: Instant, fork: usize) {
        self.auto_answer = Some(AutoAnswer {
            fork,
            deadline: Some(now + AUTO_ANSWER_WAIT),
        });
    }

    /// Callee fork `index` ended without an answer. True when it was the auto-answer INVITE
    /// and the device must be rung the ordinary way again: `still_wanted` says the call
    /// still rings, nobody answered, and the fork was not abandoned (forward, reject, ...).
    pub(crate) fn auto_answer_ended(&mut self, index: usize, still_wanted: bool) -> bool {
        if self.auto_answer.map(|a| a.fork) != Some(index) {
            return false;
        }
        self.auto_answer = None;
        still_wanted
    }

    /// The caller is answered with a reply message; the call ends when it has played.
    pub(crate) fn start_reply(&mut self) {
        self.replying = true;
    }

    pub(crate) fn replying(&self) -> bool {
        self.replying
    }

    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.auto_answer.and_then(|a| a.deadline)
    }

    /// Time has come to `now`: the auto-answer wait, once.
    pub(crate) fn handle_timeout(&mut self, now: Instant) -> Option<RingAction> {
        let a = self.auto_answer.as_mut()?;
        if a.deadline.is_none_or(|d| d > now) {
            return None;
        }
        a.deadline = None;
        Some(RingAction::CancelAutoAnswer { fork: a.fork })
    }

    /// The call stopped ringing: nothing is timed any more.
    pub(crate) fn stop_timer(&mut self) {
        if let Some(a) = self.auto_answer.as_mut() {
            a.deadline = None;
        }
    }
}

#[cfg(test)]
mod tests {
    //! The ringing call driven by a simulated clock through the call core.

    use super::*;
    use crate::call_core::run_until;
    use crate::call_core::{Action, CallCore};
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    fn ringing() -> (CallCore, Instant) {
        let mut c = CallCore::with_rng(true, SmallRng::seed_from_u64(11));
        let t0 = Instant::now();
        c.ring(t0, Duration::from_secs(60));
        (c, t0)
    }

    #[test]
    fn a_device_that_does_not_answer_by_itself_is_cancelled_then_rung_again() {
        let (mut c, t0) = ringing();
        assert_eq!(c.ringing.check_answer_on(), Ok(()));
        c.ringing.auto_answer_sent(t0, 3);
        // One at a time.
        assert_eq!(c.ringing.check_answer_on(), Err(AutoAnswerPending));
        let fired = run_until(&mut c, t0 + Duration::from_secs(10));
        assert_eq!(
            fired,
            vec![(
                t0 + AUTO_ANSWER_WAIT,
                Action::Ringing(RingAction::CancelAutoAnswer { fork: 3 })
            )]
        );
        // Another fork's failure is not it.
        assert!(!c.ringing.auto_answer_ended(1, true));
        // Its 487: ring it again the ordinary way.
        assert!(c.ringing.auto_answer_ended(3, true));
        assert_eq!(c.ringing.check_answer_on(), Ok(()));
    }

    #[test]
    fn a_device_that_answers_by_itself_is_not_cancelled() {
        let (mut c, t0) = ringing();
        c.ringing.auto_answer_sent(t0, 0);
        c.connect(t0 + Duration::from_secs(1));
        assert!(run_until(&mut c, t0 + Duration::from_secs(60)).is_empty());
    }

    #[test]
    fn a_refusal_after_the_call_was_forwarded_rings_nothing_again() {
        let (mut c, t0) = ringing();
        c.ringing.auto_answer_sent(t0, 2);
        assert!(!c.ringing.auto_answer_ended(2, false));
        assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(60)));
        assert!(!c.ringing.replying());
        c.ringing.start_reply();
        assert!(c.ringing.replying());
    }
}
