//! Origination (click-to-dial), without I/O: the caller's phones ring first; the first to
//! answer becomes the call's side A and the callee is dialled then; if none answers, the call
//! ends with the best of their failures.
//!
//! The actor (`call/originate.rs`) keeps the caller's fork dialogs and the callee's targets
//! and executes what this decides (CANCEL the other phones, BYE a late answer, dial the
//! callee, end the call). The caller's ring timeout is the core's own ring timeout.

use super::best_failure;
use crate::model::EndCause;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// The caller's phones ring.
    CallingCaller,
    /// A phone of the caller answered: the rest of the call is an ordinary one.
    CallerAnswered,
}

/// What a final response of one of the caller's phones means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallerDecision {
    /// Not a phone of this call's caller: nothing.
    Ignore,
    /// An answer after another phone's (or after the call stopped ringing): BYE to it.
    ReleaseExtra,
    /// The caller answered on this phone: CANCEL the others, make it side A, dial the callee.
    Answered,
    /// Every phone of the caller failed: end the call with `status` and `cause`.
    Failed { status: u16, cause: EndCause },
    /// Other phones still ring.
    Wait,
}

/// The origination state of one call (see the module comment); idle for calls that came in.
#[derive(Debug, Default)]
pub(crate) struct OriginateMachine {
    stage: Option<Stage>,
    /// Per phone of the caller, its final status once it has one.
    caller_forks: Vec<Option<u16>>,
}

impl OriginateMachine {
    /// This call is originated: `forks` phones of the caller ring.
    pub(crate) fn ring_caller(&mut self, forks: usize) {
        self.stage = Some(Stage::CallingCaller);
        self.caller_forks = vec![None; forks];
    }

    pub(crate) fn is_originated(&self) -> bool {
        self.stage.is_some()
    }

    /// Still ringing the caller (the callee is not dialled yet).
    pub(crate) fn calling_caller(&self) -> bool {
        self.stage == Some(Stage::CallingCaller)
    }

    /// The final `status` of the caller's phone `index`. `ringing`: the call still rings
    /// (it may have ended meanwhile).
    pub(crate) fn caller_result(
        &mut self,
        index: usize,
        status: u16,
        ringing: bool,
    ) -> CallerDecision {
        let Some(stage) = self.stage else {
            return CallerDecision::Ignore;
        };
        let Some(slot) = self.caller_forks.get_mut(index) else {
            return CallerDecision::Ignore;
        };
        *slot = Some(status);
        let answered = stage == Stage::CallerAnswered;
        if (200..300).contains(&status) {
            if answered || !ringing {
                return CallerDecision::ReleaseExtra;
            }
            self.stage = Some(Stage::CallerAnswered);
            return CallerDecision::Answered;
        }
        if !answered && self.caller_forks.iter().all(Option::is_some) {
            let statuses: Vec<u16> = self.caller_forks.iter().flatten().copied().collect();
            let status = best_failure(&statuses);
            return CallerDecision::Failed {
                status,
                cause: EndCause::for_status(status),
            };
        }
        CallerDecision::Wait
    }
}

#[cfg(test)]
mod tests {
    //! Origination driven through the call core with a simulated clock: the caller's phones
    //! are scripted by the results the test feeds.

    use super::*;
    use crate::call_core::{Action, CallCore, Phase};
    use rand::rngs::SmallRng;
    use rand::SeedableRng;
    use std::time::Duration;
    use tokio::time::Instant;

    fn originated(forks: usize) -> (CallCore, Instant) {
        // We dial the caller's leg: we are its UAC.
        let mut c = CallCore::with_rng(false, SmallRng::seed_from_u64(9));
        let t0 = Instant::now();
        c.ring(t0, Duration::from_secs(30));
        c.originate.ring_caller(forks);
        (c, t0)
    }

    #[test]
    fn the_first_phone_to_answer_is_the_caller_and_a_second_answer_is_released() {
        let (mut c, _) = originated(3);
        assert!(c.originate.calling_caller());
        assert_eq!(
            c.originate.caller_result(0, 486, true),
            CallerDecision::Wait
        );
        assert_eq!(
            c.originate.caller_result(1, 200, true),
            CallerDecision::Answered
        );
        assert!(!c.originate.calling_caller() && c.originate.is_originated());
        assert_eq!(
            c.originate.caller_result(2, 200, true),
            CallerDecision::ReleaseExtra
        );
        // The caller answered before the 487 of the cancelled phone: no failure.
        assert_eq!(
            c.originate.caller_result(2, 487, true),
            CallerDecision::Wait
        );
    }

    #[test]
    fn every_phone_failing_ends_the_call_with_the_best_failure() {
        let (mut c, _) = originated(2);
        assert_eq!(
            c.originate.caller_result(0, 480, true),
            CallerDecision::Wait
        );
        assert_eq!(
            c.originate.caller_result(1, 603, true),
            CallerDecision::Failed {
                status: 603,
                cause: EndCause::Rejected
            }
        );
    }

    #[test]
    fn a_caller_that_does_not_answer_meets_the_ring_timeout_and_its_late_answer_is_released() {
        let (mut c, t0) = originated(1);
        assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(30)));
        c.handle_timeout(t0 + Duration::from_secs(30));
        assert_eq!(c.poll_action(), Some(Action::RingTimeout));
        c.end();
        assert_eq!(c.phase(), Phase::Ended);
        assert_eq!(
            c.originate
                .caller_result(0, 200, c.phase() == Phase::Ringing),
            CallerDecision::ReleaseExtra
        );
    }

    #[test]
    fn a_call_that_came_in_is_not_originated() {
        let mut c = CallCore::with_rng(true, SmallRng::seed_from_u64(9));
        assert!(!c.originate.is_originated() && !c.originate.calling_caller());
        assert_eq!(
            c.originate.caller_result(0, 200, true),
            CallerDecision::Ignore
        );
    }
}
