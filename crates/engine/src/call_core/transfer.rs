//! Transfer (blind and attended), without I/O: which attempt runs, who transfers and who is
//! kept, how far the target got, what each fork's result means, the target's ring timeout,
//! and what a failure leaves (the kept party back with the transferor, or the call's end).
//!
//! The actor (`call/transfer.rs`, `call/consult.rs`) keeps the attempt's handles (the forks'
//! dialogs, the target's sockets, the consultation bridge, the REFER progress channel) and
//! executes what this decides: dial, CANCEL, BYE, move media, report, end.

use std::time::Duration;

use tokio::time::Instant;

use super::{best_failure, Phase, Side};
use crate::model::{EndCause, WrongState};

/// How far the target of the running attempt got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Its forks ring (the ring timeout applies).
    Ringing,
    /// Its ringing forks were CANCELled; their results end the attempt.
    Cancelled,
    /// A fork answered: a blind transfer completes, an attended one joins the consultation.
    Answered,
    /// Attended: the transferor's phone is being re-INVITEd into the consultation.
    Joining,
    /// Attended: the transferor talks to the target until complete or cancel.
    Consulting,
    /// Attended, complete: the target's phone is being re-INVITEd into the transferor's place.
    Completing,
}

#[derive(Debug)]
struct Attempt {
    generation: u32,
    transferor: Side,
    label: String,
    attended: bool,
    stage: Stage,
    /// Per fork, its final status once it has one.
    forks: Vec<Option<u16>>,
    requested_at: Instant,
    ringing_reported: bool,
    /// The transferor hung up (or never was there: unpark, an application's dial).
    transferor_gone: bool,
    /// A phone's REFER asked for it: it gets NOTIFY progress.
    referred: bool,
    ring_deadline: Option<Instant>,
}

/// Why a transfer cannot start now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TransferRefusal {
    /// The call is not in a phase that can be transferred.
    Phase,
    /// Another transfer runs.
    Transferring,
}

/// The first ringing of the target: report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TargetRinging {
    pub(crate) transferor: Side,
    pub(crate) label: String,
    pub(crate) waited: Duration,
    /// Send `180` to the referring phone.
    pub(crate) notify_referrer: bool,
}

/// What a fork's final result means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ForkDecision {
    /// Not the running attempt (or the call is gone): a late 2xx gets BYE, nothing else.
    Stale { release: bool },
    /// An answer after another fork's: BYE to it.
    ReleaseExtra,
    /// The target answered: complete a blind transfer, consult an attended one.
    Answered { attended: bool },
    /// Every fork failed without an answer: [`TransferMachine::fail`] with this status.
    Failed { status: u16 },
    /// Other forks still ring.
    Wait,
}

/// A side hung up while a transfer ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PartyGone {
    /// No transfer runs: the call ends as usual.
    NotTransferring,
    /// The transferor left an attended transfer whose target answered (its move into the
    /// consultation pending, or consulting): the transfer completes, as on a PBX. Give up
    /// the pending move (`abandon`) and move the target into the transferor's place.
    CompleteNow { abandon: bool },
    /// The transferor left while the target is already being moved into its place: the
    /// call goes on; the move's answer decides.
    TransferorLeftCompleting,
    /// The kept party left an attended transfer whose target answered: the consultation
    /// ends with the call (BYE to the target).
    KeptPartyLeftConsulting,
    /// The transferor left a ringing transfer: it goes on, the call too.
    TransferorLeft,
    /// The kept party left: nobody to transfer; CANCEL the target, the call ends.
    KeptPartyLeft,
}

/// The attempt is over because its target answered: the target takes the transferor's
/// place. If the actor cannot make it so after all, [`Completed::failed`] says what is left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Completed {
    pub(crate) transferor: Side,
    pub(crate) label: String,
    pub(crate) requested_at: Instant,
    pub(crate) transferor_gone: bool,
    pub(crate) referred: bool,
}

impl Completed {
    /// The answered target could not be taken (no usable SDP, the caller not answerable):
    /// the attempt failed with `status` after all.
    pub(crate) fn failed(self, status: u16) -> Failed {
        let keep = self.transferor.other();
        Failed {
            transferor: self.transferor,
            label: self.label,
            status,
            cause: EndCause::for_status(status),
            referred: self.referred,
            then: if self.transferor_gone {
                AfterFailure::EndCall {
                    keep,
                    cause: EndCause::TransferFailed,
                }
            } else {
                AfterFailure::Reconnect { keep }
            },
        }
    }
}

/// What a failed attempt leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AfterFailure {
    /// The kept party hears the transferor again; the call goes on as it was.
    Reconnect { keep: Side },
    /// The transferor has left: BYE to the kept party, the call ends with `cause`.
    EndCall { keep: Side, cause: EndCause },
}

/// The attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failed {
    pub(crate) transferor: Side,
    pub(crate) label: String,
    pub(crate) status: u16,
    pub(crate) cause: EndCause,
    /// Send the final `status` to the referring phone.
    pub(crate) referred: bool,
    pub(crate) then: AfterFailure,
}

/// What follows an attended transfer's target answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConsultStep {
    /// Move the transferor's phone into the consultation (`ConsultJoin`).
    Join { transferor: Side },
    /// The transferor has left: move the target into its place (`ConsultComplete`).
    Complete { transferor: Side },
}

/// The transferor's phone answered its move into the consultation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JoinResult {
    /// It talks to the target now.
    Consulting { transferor: Side, label: String },
    /// It refused: the attempt failed (the target is released).
    Failed(Failed),
}

/// The target answered its move into the transferor's place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CompleteResult {
    /// It is there: hand the side over to it.
    Completed(Completed),
    /// It refused; the transferor is still there and still consults it.
    Refused,
    /// It refused and the transferor has left: the attempt failed, the call ends.
    Failed(Failed),
}

/// What cancel does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CancelStep {
    /// The target still rings: CANCEL it (its forks' results end the attempt).
    CancelForks,
    /// The target is consulted: release it, the transferor goes back ([`TransferMachine::target_gone`]).
    ReleaseTarget,
}

/// Which bridge a leg's phone sends its media to now: what a session refresh of that leg
/// must offer (RFC 4028: a refresh repeats the session as it is, it moves nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LegMedia {
    /// The call's own bridge, at the leg's side.
    Call,
    /// The attended transfer's consultation bridge (the transferor talks to the target).
    Consultation,
}

/// The consulted target is gone: the attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TargetGone {
    /// A move of the transferor's side was pending: give it up.
    pub(crate) abandon: bool,
    pub(crate) failed: Failed,
}

/// What the actor must do for a transfer when time has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TransferAction {
    /// The target did not answer in time: CANCEL its forks ([`TransferMachine::cancel`]).
    RingTimeout,
}

/// The transfer state of one call (see the module comment).
#[derive(Debug, Default)]
pub(crate) struct TransferMachine {
    generation: u32,
    /// The caller id the next target sees instead of the kept party's number.
    caller_id: Option<String>,
    attempt: Option<Attempt>,
}

impl TransferMachine {
    /// May a transfer start in `phase`? `caller_ringing`: an application dials for a caller
    /// it has not answered yet (`answerOnBridge`; blind only).
    pub(crate) fn check_start(
        &self,
        phase: Phase,
        caller_ringing: bool,
        attended: bool,
    ) -> Result<(), TransferRefusal> {
        let phase_ok = match phase {
            Phase::Connected => true,
            Phase::Ringing => caller_ringing && !attended,
            Phase::Ended => false,
        };
        if !phase_ok {
            return Err(TransferRefusal::Phase);
        }
        if self.attempt.is_some() {
            return Err(TransferRefusal::Transferring);
        }
        Ok(())
    }

    /// The number of the next attempt (its forks' results carry it).
    pub(crate) fn next_generation(&mut self) -> u32 {
        self.generation = self.generation.wrapping_add(1);
        self.generation
    }

    pub(crate) fn set_caller_id(&mut self, caller_id: Option<String>) {
        self.caller_id = caller_id;
    }

    /// The caller id for the target, once (None: the kept party's number).
    pub(crate) fn take_caller_id(&mut self) -> Option<String> {
        self.caller_id.take()
    }

    /// Attempt `generation` rings `forks` forks of the target since `now`; not answered by
    /// `now + ring_timeout`, it yields [`TransferAction::RingTimeout`].
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        &mut self,
        now: Instant,
        generation: u32,
        transferor: Side,
        label: String,
        attended: bool,
        forks: usize,
        ring_timeout: Duration,
    ) {
        self.attempt = Some(Attempt {
            generation,
            transferor,
            label,
            attended,
            stage: Stage::Ringing,
            forks: vec![None; forks],
            requested_at: now,
            ringing_reported: false,
            transferor_gone: false,
            referred: false,
            ring_deadline: Some(now + ring_timeout),
        });
    }

    /// The target may ring until `at` instead (an application's dial timeout).
    pub(crate) fn ring_until(&mut self, at: Instant) {
        if let Some(a) = self.attempt.as_mut().filter(|a| a.stage == Stage::Ringing) {
            a.ring_deadline = Some(at);
        }
    }

    /// A phone's REFER asked for the running attempt.
    pub(crate) fn set_referred(&mut self) {
        if let Some(a) = self.attempt.as_mut() {
            a.referred = true;
        }
    }

    /// Nobody is on the transferor's side any more (it hung up, or there was nobody).
    pub(crate) fn mark_transferor_gone(&mut self) {
        if let Some(a) = self.attempt.as_mut() {
            a.transferor_gone = true;
        }
    }

    pub(crate) fn is_active(&self) -> bool {
        self.attempt.is_some()
    }

    #[cfg(test)]
    pub(crate) fn stage(&self) -> Option<Stage> {
        self.attempt.as_ref().map(|a| a.stage)
    }

    /// The target still rings (the ring timeout applies).
    #[cfg(test)]
    pub(crate) fn is_ringing(&self) -> bool {
        self.stage() == Some(Stage::Ringing)
    }

    pub(crate) fn transferor(&self) -> Option<Side> {
        self.attempt.as_ref().map(|a| a.transferor)
    }

    /// Where `side`'s phone has its media now. The transferor's phone is in the consultation
    /// from its join's answer until the target takes its place or the attempt ends (while
    /// its join or the target's move is in flight, no other re-INVITE of ours goes to it).
    pub(crate) fn media_of(&self, side: Side) -> LegMedia {
        match self.attempt.as_ref() {
            Some(a) if a.attended && a.transferor == side && !a.transferor_gone => match a.stage {
                Stage::Consulting | Stage::Completing => LegMedia::Consultation,
                Stage::Ringing | Stage::Cancelled | Stage::Answered | Stage::Joining => {
                    LegMedia::Call
                }
            },
            _ => LegMedia::Call,
        }
    }

    /// A provisional response of the target: the first is reported.
    pub(crate) fn fork_early(&mut self, now: Instant) -> Option<TargetRinging> {
        let a = self.attempt.as_mut()?;
        if a.ringing_reported {
            return None;
        }
        a.ringing_reported = true;
        Some(TargetRinging {
            transferor: a.transferor,
            label: a.label.clone(),
            waited: now.saturating_duration_since(a.requested_at),
            notify_referrer: a.referred,
        })
    }

    /// The final result of fork `index` of attempt `generation`. `live`: the call can still
    /// take the target (connected, or an application's caller waiting for it).
    pub(crate) fn fork_result(
        &mut self,
        generation: u32,
        index: usize,
        status: u16,
        live: bool,
    ) -> ForkDecision {
        let ok = (200..300).contains(&status);
        let Some(a) = self
            .attempt
            .as_mut()
            .filter(|a| a.generation == generation && live)
        else {
            return ForkDecision::Stale { release: ok };
        };
        let Some(slot) = a.forks.get_mut(index) else {
            return ForkDecision::Wait;
        };
        *slot = Some(status);
        let answered = a.stage != Stage::Ringing && a.stage != Stage::Cancelled;
        if ok {
            if answered {
                return ForkDecision::ReleaseExtra;
            }
            a.stage = Stage::Answered;
            a.ring_deadline = None;
            return ForkDecision::Answered {
                attended: a.attended,
            };
        }
        if !answered && a.forks.iter().all(Option::is_some) {
            let statuses: Vec<u16> = a.forks.iter().flatten().copied().collect();
            return ForkDecision::Failed {
                status: best_failure(&statuses),
            };
        }
        ForkDecision::Wait
    }

    /// The target's ringing forks are CANCELled (ring timeout, cancel, the kept party left).
    pub(crate) fn cancel(&mut self) {
        if let Some(a) = self.attempt.as_mut() {
            if a.stage == Stage::Ringing {
                a.stage = Stage::Cancelled;
            }
            a.ring_deadline = None;
        }
    }

    /// Attended: the target answered. The transferor's phone joins it in the consultation
    /// (a `ConsultJoin` re-offer), or, if the transferor has left, the target is moved into
    /// its place at once (a `ConsultComplete` re-offer).
    pub(crate) fn consult_answered(&mut self) -> Option<ConsultStep> {
        let a = self
            .attempt
            .as_mut()
            .filter(|a| a.stage == Stage::Answered)?;
        Some(if a.transferor_gone {
            a.stage = Stage::Completing;
            ConsultStep::Complete {
                transferor: a.transferor,
            }
        } else {
            a.stage = Stage::Joining;
            ConsultStep::Join {
                transferor: a.transferor,
            }
        })
    }

    /// The transferor's phone answered its move into the consultation: it talks to the
    /// target now (`ok`), or it refused and the attempt failed (500; the target is released).
    pub(crate) fn join_answered(&mut self, ok: bool) -> Option<JoinResult> {
        let a = self
            .attempt
            .as_mut()
            .filter(|a| a.stage == Stage::Joining)?;
        if ok {
            a.stage = Stage::Consulting;
            return Some(JoinResult::Consulting {
                transferor: a.transferor,
                label: a.label.clone(),
            });
        }
        self.fail(500).map(JoinResult::Failed)
    }

    /// The complete command: the consulted target is to be moved into the transferor's
    /// place. Refused while a move is pending (`pending`) or before the target answered.
    pub(crate) fn request_complete(&mut self) -> Result<Side, WrongState> {
        let a = self.attempt.as_mut().ok_or(WrongState::NotTransferring)?;
        if !a.attended {
            return Err(WrongState::InBlindTransfer);
        }
        match a.stage {
            Stage::Ringing | Stage::Cancelled | Stage::Answered => Err(WrongState::AwaitingTarget),
            Stage::Joining | Stage::Completing => Err(WrongState::Pending),
            Stage::Consulting => {
                a.stage = Stage::Completing;
                Ok(a.transferor)
            }
        }
    }

    /// The target answered its move into the transferor's place (`ok`), or refused it.
    pub(crate) fn complete_answered(&mut self, ok: bool, status: u16) -> Option<CompleteResult> {
        let a = self
            .attempt
            .as_mut()
            .filter(|a| a.stage == Stage::Completing)?;
        if ok {
            return self.complete().map(CompleteResult::Completed);
        }
        if a.transferor_gone {
            // Nobody to go back to: the attempt failed and the call ends.
            return self.fail(status).map(CompleteResult::Failed);
        }
        // Nothing changed: the transferor still consults the target.
        a.stage = Stage::Consulting;
        Some(CompleteResult::Refused)
    }

    /// The cancel command: what it does at the attempt's stage.
    pub(crate) fn request_cancel(&mut self) -> Result<CancelStep, WrongState> {
        let a = self.attempt.as_ref().ok_or(WrongState::NotTransferring)?;
        match a.stage {
            Stage::Ringing | Stage::Cancelled => Ok(CancelStep::CancelForks),
            Stage::Answered | Stage::Joining | Stage::Completing => Err(WrongState::Pending),
            Stage::Consulting => Ok(CancelStep::ReleaseTarget),
        }
    }

    /// The consulted target is gone (it hung up, or cancel released it) with `status`: the
    /// attempt failed. `abandon`: a move of the transferor's side was pending (give it up);
    /// `Failed::then` says whether the transferor's phone goes back to the call
    /// (`Reconnect`: a `ConsultBack` re-offer) or the call ends. None: no target answered.
    pub(crate) fn target_gone(&mut self, status: u16) -> Option<TargetGone> {
        let a = self.attempt.as_ref()?;
        let abandon = match a.stage {
            Stage::Joining | Stage::Completing => true,
            Stage::Consulting => false,
            Stage::Ringing | Stage::Cancelled | Stage::Answered => return None,
        };
        let failed = self.fail(status)?;
        Some(TargetGone { abandon, failed })
    }

    /// The phone on `side` hung up.
    pub(crate) fn party_gone(&mut self, side: Side) -> PartyGone {
        let Some(a) = self.attempt.as_mut() else {
            return PartyGone::NotTransferring;
        };
        match a.stage {
            Stage::Joining | Stage::Consulting | Stage::Completing if side != a.transferor => {
                PartyGone::KeptPartyLeftConsulting
            }
            Stage::Completing => {
                a.transferor_gone = true;
                PartyGone::TransferorLeftCompleting
            }
            Stage::Joining | Stage::Consulting => {
                let abandon = a.stage == Stage::Joining;
                a.transferor_gone = true;
                a.stage = Stage::Completing;
                PartyGone::CompleteNow { abandon }
            }
            Stage::Ringing | Stage::Cancelled if side == a.transferor => {
                a.transferor_gone = true;
                PartyGone::TransferorLeft
            }
            Stage::Ringing | Stage::Cancelled | Stage::Answered => {
                if a.stage == Stage::Ringing {
                    a.stage = Stage::Cancelled;
                }
                a.ring_deadline = None;
                PartyGone::KeptPartyLeft
            }
        }
    }

    /// The target is taking the transferor's place: the attempt is over.
    pub(crate) fn complete(&mut self) -> Option<Completed> {
        let a = self.attempt.take()?;
        Some(Completed {
            transferor: a.transferor,
            label: a.label,
            requested_at: a.requested_at,
            transferor_gone: a.transferor_gone,
            referred: a.referred,
        })
    }

    /// The target could not be reached (or taken) with `status`: the attempt is over, and
    /// the kept party goes back to the transferor unless the transferor has left.
    pub(crate) fn fail(&mut self, status: u16) -> Option<Failed> {
        self.complete().map(|c| c.failed(status))
    }

    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.attempt.as_ref().and_then(|a| a.ring_deadline)
    }

    /// Time has come to `now`: the target's ring timeout, once.
    pub(crate) fn handle_timeout(&mut self, now: Instant) -> Option<TransferAction> {
        let a = self.attempt.as_mut()?;
        if a.ring_deadline.is_none_or(|d| d > now) {
            return None;
        }
        a.ring_deadline = None;
        (a.stage == Stage::Ringing).then_some(TransferAction::RingTimeout)
    }

    /// The call ended: nothing is timed any more.
    pub(crate) fn stop_timer(&mut self) {
        if let Some(a) = self.attempt.as_mut() {
            a.ring_deadline = None;
        }
    }
}

#[cfg(test)]
mod tests {
    //! Transfers driven by a simulated clock through the call core; the scripted target is
    //! the sequence of fork results the test feeds.

    use super::*;
    use crate::call_core::run_until;
    use crate::call_core::{Action, CallCore, Purpose};
    use hookflash_media::sdp::Direction;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    const RING: Duration = Duration::from_secs(30);

    fn connected() -> (CallCore, Instant) {
        let mut c = CallCore::with_rng(true, SmallRng::seed_from_u64(5));
        let t0 = Instant::now();
        c.connect(t0);
        (c, t0)
    }

    /// Starts a transfer of the caller (A) by B to "203" with `forks` forks.
    fn start(c: &mut CallCore, now: Instant, attended: bool, forks: usize) -> u32 {
        assert_eq!(c.transfer.check_start(c.phase(), false, attended), Ok(()));
        let g = c.transfer.next_generation();
        c.transfer
            .start(now, g, Side::B, "203".into(), attended, forks, RING);
        g
    }

    #[test]
    fn blind_transfer_rings_reports_once_and_completes_on_the_answer() {
        let (mut c, t0) = connected();
        let s = Duration::from_secs;
        let g = start(&mut c, t0, false, 2);
        assert_eq!(
            c.transfer.check_start(c.phase(), false, false),
            Err(TransferRefusal::Transferring)
        );
        assert!(c.transfer.is_ringing());
        let ringing = c.transfer.fork_early(t0 + s(1));
        assert_eq!(
            ringing,
            Some(TargetRinging {
                transferor: Side::B,
                label: "203".into(),
                waited: s(1),
                notify_referrer: false
            })
        );
        assert_eq!(c.transfer.fork_early(t0 + s(2)), None);
        // One device is busy, the other answers.
        assert_eq!(c.transfer.fork_result(g, 0, 486, true), ForkDecision::Wait);
        assert_eq!(
            c.transfer.fork_result(g, 1, 200, true),
            ForkDecision::Answered { attended: false }
        );
        // The ring timeout no longer applies.
        assert!(run_until(&mut c, t0 + s(300)).is_empty());
        let done = c.transfer.complete().expect("running");
        assert_eq!(
            (done.transferor, done.label.as_str(), done.requested_at),
            (Side::B, "203", t0)
        );
        assert!(!c.transfer.is_active());
        // A late answer of that attempt is released.
        assert_eq!(
            c.transfer.fork_result(g, 0, 200, true),
            ForkDecision::Stale { release: true }
        );
    }

    #[test]
    fn a_failed_transfer_reconnects_the_kept_party_and_the_call_goes_on() {
        let (mut c, t0) = connected();
        let g = start(&mut c, t0, false, 2);
        c.transfer.set_referred();
        assert_eq!(c.transfer.fork_result(g, 0, 480, true), ForkDecision::Wait);
        assert_eq!(
            c.transfer.fork_result(g, 1, 486, true),
            ForkDecision::Failed { status: 486 }
        );
        let failed = c.transfer.fail(486).expect("running");
        assert_eq!(
            failed,
            Failed {
                transferor: Side::B,
                label: "203".into(),
                status: 486,
                cause: EndCause::Busy,
                referred: true,
                then: AfterFailure::Reconnect { keep: Side::A },
            }
        );
        assert_eq!(c.phase(), Phase::Connected);
        assert_eq!(c.poll_timeout(), None);
        // A new transfer may start, with a new generation; the old one's results are stale.
        let g2 = start(&mut c, t0, false, 1);
        assert_ne!(g, g2);
        assert_eq!(
            c.transfer.fork_result(g, 0, 486, true),
            ForkDecision::Stale { release: false }
        );
    }

    #[test]
    fn the_transferor_leaving_then_the_target_failing_ends_the_call() {
        let (mut c, t0) = connected();
        let g = start(&mut c, t0, false, 1);
        assert_eq!(c.transfer.party_gone(Side::B), PartyGone::TransferorLeft);
        assert!(c.transfer.is_active());
        assert_eq!(
            c.transfer.fork_result(g, 0, 603, true),
            ForkDecision::Failed { status: 603 }
        );
        let failed = c.transfer.fail(603).expect("running");
        assert_eq!(
            failed.then,
            AfterFailure::EndCall {
                keep: Side::A,
                cause: EndCause::TransferFailed
            }
        );
    }

    #[test]
    fn the_kept_party_leaving_cancels_the_target() {
        let (mut c, t0) = connected();
        start(&mut c, t0, false, 1);
        assert_eq!(c.transfer.party_gone(Side::A), PartyGone::KeptPartyLeft);
        assert_eq!(c.transfer.stage(), Some(Stage::Cancelled));
        assert_eq!(c.poll_timeout(), None);
    }

    #[test]
    fn the_ring_timeout_cancels_the_target_and_its_487_fails_the_attempt() {
        let (mut c, t0) = connected();
        let g = start(&mut c, t0, false, 1);
        let fired = run_until(&mut c, t0 + Duration::from_secs(300));
        assert_eq!(
            fired,
            vec![(t0 + RING, Action::Transfer(TransferAction::RingTimeout))]
        );
        c.transfer.cancel();
        assert!(!c.transfer.is_ringing());
        assert_eq!(
            c.transfer.fork_result(g, 0, 487, true),
            ForkDecision::Failed { status: 487 }
        );
        assert_eq!(
            c.transfer.fail(487).map(|f| (f.cause, f.then)),
            Some((EndCause::Cancel, AfterFailure::Reconnect { keep: Side::A }))
        );
    }

    #[test]
    fn an_application_dial_rings_for_its_own_timeout() {
        let (mut c, t0) = connected();
        start(&mut c, t0, false, 1);
        c.transfer.mark_transferor_gone();
        c.transfer.ring_until(t0 + Duration::from_secs(8));
        let fired = run_until(&mut c, t0 + Duration::from_secs(300));
        assert_eq!(
            fired,
            vec![(
                t0 + Duration::from_secs(8),
                Action::Transfer(TransferAction::RingTimeout)
            )]
        );
    }

    /// An attended transfer of A by B whose target answered: B's phone is being moved into
    /// the consultation (the `ConsultJoin` re-offer is in flight).
    fn joining(c: &mut CallCore, t0: Instant) -> u32 {
        let g = start(c, t0, true, 2);
        assert_eq!(
            c.transfer.fork_result(g, 0, 200, true),
            ForkDecision::Answered { attended: true }
        );
        assert_eq!(
            c.transfer.consult_answered(),
            Some(ConsultStep::Join {
                transferor: Side::B
            })
        );
        assert!(c.start_reoffer(Side::B, Purpose::ConsultJoin, Direction::SendRecv));
        assert!(matches!(
            drain(c)[..],
            [Action::SendReoffer {
                side: Side::B,
                purpose: Purpose::ConsultJoin,
                ..
            }]
        ));
        g
    }

    fn drain(c: &mut CallCore) -> Vec<Action> {
        std::iter::from_fn(|| c.poll_action()).collect()
    }

    #[test]
    fn attended_transfer_joins_consults_completes_and_a_second_answer_is_released() {
        let (mut c, t0) = connected();
        let g = joining(&mut c, t0);
        // Commands meanwhile: complete and cancel are `pending`.
        assert_eq!(c.transfer.request_complete(), Err(WrongState::Pending));
        assert_eq!(c.transfer.request_cancel(), Err(WrongState::Pending));
        let done = c.reoffer_answered(Side::B, Some(200), t0 + Duration::from_secs(1));
        assert_eq!(done.map(|d| d.purpose), Some(Purpose::ConsultJoin));
        assert_eq!(
            c.transfer.join_answered(true),
            Some(JoinResult::Consulting {
                transferor: Side::B,
                label: "203".into()
            })
        );
        assert_eq!(
            c.transfer.fork_result(g, 1, 200, true),
            ForkDecision::ReleaseExtra
        );
        assert_eq!(c.transfer.request_complete(), Ok(Side::B));
        assert!(c.start_reoffer(Side::B, Purpose::ConsultComplete, Direction::SendRecv));
        assert_eq!(c.transfer.request_complete(), Err(WrongState::Pending));
        // The target refuses the move: nothing changes, B still consults it.
        c.reoffer_answered(Side::B, Some(488), t0 + Duration::from_secs(2));
        assert_eq!(
            c.transfer.complete_answered(false, 488),
            Some(CompleteResult::Refused)
        );
        assert_eq!(c.transfer.stage(), Some(Stage::Consulting));
        // Asked again, it takes the move: the attempt is over.
        assert_eq!(c.transfer.request_complete(), Ok(Side::B));
        match c.transfer.complete_answered(true, 200) {
            Some(CompleteResult::Completed(done)) => {
                assert_eq!((done.transferor, done.transferor_gone), (Side::B, false))
            }
            other => panic!("{other:?}"),
        }
        assert!(!c.transfer.is_active());
        assert_eq!(c.poll_timeout(), None);
    }

    #[test]
    fn the_transferor_hanging_up_while_its_move_to_the_consultation_is_pending_completes() {
        let (mut c, t0) = connected();
        let _ = joining(&mut c, t0);
        let join_seq = c.reoffer_seq(Side::B);
        assert_eq!(
            c.transfer.party_gone(Side::B),
            PartyGone::CompleteNow { abandon: true }
        );
        assert_eq!(c.abandon_reoffer(Side::B), Some(Purpose::ConsultJoin));
        assert!(c.start_reoffer(Side::B, Purpose::ConsultComplete, Direction::SendRecv));
        // The transferor's late 200 to the abandoned join is not the target's answer.
        assert!(!c.reoffer_current(Side::B, join_seq));
        assert!(c.reoffer_current(Side::B, c.reoffer_seq(Side::B)));
        let done = c.reoffer_answered(Side::B, Some(200), t0 + Duration::from_secs(3));
        assert_eq!(done.map(|d| d.purpose), Some(Purpose::ConsultComplete));
        match c.transfer.complete_answered(true, 200) {
            Some(CompleteResult::Completed(done)) => assert!(done.transferor_gone),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_kept_party_hanging_up_while_the_transferor_is_moved_ends_the_call_at_once() {
        let (mut c, t0) = connected();
        let join_seq = {
            joining(&mut c, t0);
            c.reoffer_seq(Side::B)
        };
        assert_eq!(
            c.transfer.party_gone(Side::A),
            PartyGone::KeptPartyLeftConsulting
        );
        assert_eq!(c.abandon_reoffers(), vec![Side::B]);
        c.end();
        // The transferor's answer 3 s later changes nothing.
        assert!(!c.reoffer_current(Side::B, join_seq));
        assert_eq!(
            c.reoffer_answered(Side::B, Some(200), t0 + Duration::from_secs(3)),
            None
        );
        assert!(run_until(&mut c, t0 + Duration::from_secs(300)).is_empty());
    }

    #[test]
    fn the_transferor_refusing_the_consultation_fails_the_attempt_and_reconnects() {
        let (mut c, t0) = connected();
        joining(&mut c, t0);
        c.reoffer_answered(Side::B, Some(488), t0 + Duration::from_secs(1));
        match c.transfer.join_answered(false) {
            Some(JoinResult::Failed(f)) => {
                assert_eq!(f.status, 500);
                assert_eq!(f.then, AfterFailure::Reconnect { keep: Side::A });
            }
            other => panic!("{other:?}"),
        }
        assert!(!c.transfer.is_active());
    }

    #[test]
    fn the_target_hanging_up_while_it_is_moved_gives_up_the_move_and_goes_back() {
        let (mut c, t0) = connected();
        joining(&mut c, t0);
        c.reoffer_answered(Side::B, Some(200), t0);
        c.transfer.join_answered(true);
        assert_eq!(c.transfer.request_cancel(), Ok(CancelStep::ReleaseTarget));
        assert_eq!(c.transfer.request_complete(), Ok(Side::B));
        assert!(c.start_reoffer(Side::B, Purpose::ConsultComplete, Direction::SendRecv));
        let gone = c.transfer.target_gone(200).expect("consulted");
        assert!(gone.abandon);
        assert_eq!(gone.failed.then, AfterFailure::Reconnect { keep: Side::A });
        assert_eq!(c.abandon_reoffer(Side::B), Some(Purpose::ConsultComplete));
        // The transferor's phone goes back to the call.
        assert!(c.start_reoffer(Side::B, Purpose::ConsultBack, Direction::SendRecv));
        assert!(!c.transfer.is_active());
    }

    #[test]
    fn the_target_refusing_after_the_transferor_left_ends_the_call() {
        let (mut c, t0) = connected();
        joining(&mut c, t0);
        c.reoffer_answered(Side::B, Some(200), t0);
        c.transfer.join_answered(true);
        assert_eq!(
            c.transfer.party_gone(Side::B),
            PartyGone::CompleteNow { abandon: false }
        );
        // Meanwhile the transferor is gone for good; a second BYE changes nothing.
        assert_eq!(
            c.transfer.party_gone(Side::B),
            PartyGone::TransferorLeftCompleting
        );
        match c.transfer.complete_answered(false, 488) {
            Some(CompleteResult::Failed(f)) => assert_eq!(
                f.then,
                AfterFailure::EndCall {
                    keep: Side::A,
                    cause: EndCause::TransferFailed
                }
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_refresh_to_the_transferor_waits_for_its_moves_and_offers_where_its_media_is() {
        use crate::session_timer::{Refresher, SessionTimer};
        let s = Duration::from_secs;
        let (mut c, t0) = connected();
        // The transferor's leg (B, dialled by us): we refresh it every 45 s.
        let timer = SessionTimer {
            expires: 90,
            refresher: Refresher::Uac,
            require: false,
        };
        c.set_session_timer(Side::B, Some(timer), false, t0);
        assert_eq!(c.transfer.media_of(Side::B), LegMedia::Call);
        let _ = joining(&mut c, t0);
        // The refresh falls due while the join is in flight: it waits, the join goes on.
        assert!(run_until(&mut c, t0 + s(45) + Duration::from_millis(500)).is_empty());
        assert_eq!(c.transfer.media_of(Side::B), LegMedia::Call);
        c.reoffer_answered(Side::B, Some(200), t0 + s(45) + Duration::from_millis(500));
        c.transfer.join_answered(true);
        // Joined: the refresh goes out now and offers the consultation (the kept party's
        // side is not the consultation's).
        assert_eq!(c.transfer.media_of(Side::B), LegMedia::Consultation);
        assert_eq!(c.transfer.media_of(Side::A), LegMedia::Call);
        let refresh = Action::SendReoffer {
            side: Side::B,
            purpose: Purpose::Refresh,
            direction: Direction::SendRecv,
            use_update: false,
        };
        assert_eq!(
            run_until(&mut c, t0 + s(47)),
            vec![(t0 + s(46), refresh.clone())]
        );
        let done = c.reoffer_answered(Side::B, Some(200), t0 + s(47));
        assert_eq!(done.map(|d| d.purpose), Some(Purpose::Refresh));
        // The next one, still consulting, is in flight when the target hangs up: the
        // refresh is given up so the transferor's move back can go, and is sent again
        // after it, offering the call's bridge.
        assert_eq!(
            run_until(&mut c, t0 + s(92)),
            vec![(t0 + s(92), refresh.clone())]
        );
        assert_eq!(c.transfer.media_of(Side::B), LegMedia::Consultation);
        let refresh_seq = c.reoffer_seq(Side::B);
        let gone = c.transfer.target_gone(200).expect("consulting");
        assert!(!gone.abandon);
        assert!(c.postpone_refresh(Side::B, t0 + s(93)));
        assert!(c.start_reoffer(Side::B, Purpose::ConsultBack, Direction::SendRecv));
        assert_eq!(
            drain(&mut c),
            vec![Action::SendReoffer {
                side: Side::B,
                purpose: Purpose::ConsultBack,
                direction: Direction::SendRecv,
                use_update: false,
            }]
        );
        assert!(!c.reoffer_current(Side::B, refresh_seq));
        assert_eq!(c.transfer.media_of(Side::B), LegMedia::Call);
        assert!(run_until(&mut c, t0 + s(93) + Duration::from_millis(500)).is_empty());
        let done = c.reoffer_answered(Side::B, Some(200), t0 + s(93) + Duration::from_millis(500));
        assert_eq!(done.map(|d| d.purpose), Some(Purpose::ConsultBack));
        assert!(!c.postpone_refresh(Side::B, t0 + s(94)));
        assert_eq!(run_until(&mut c, t0 + s(95)), vec![(t0 + s(94), refresh)]);
    }

    #[test]
    fn only_a_connected_call_or_an_answer_on_bridge_dial_may_transfer() {
        let c = CallCore::with_rng(true, SmallRng::seed_from_u64(5));
        assert_eq!(
            c.transfer.check_start(Phase::Ringing, false, false),
            Err(TransferRefusal::Phase)
        );
        assert_eq!(c.transfer.check_start(Phase::Ringing, true, false), Ok(()));
        assert_eq!(
            c.transfer.check_start(Phase::Ringing, true, true),
            Err(TransferRefusal::Phase)
        );
        assert_eq!(
            c.transfer.check_start(Phase::Ended, false, false),
            Err(TransferRefusal::Phase)
        );
    }
}
