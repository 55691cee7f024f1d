//! REFER with Replaces (and the bridge command), without I/O: a party handed over from
//! another call takes one side's place here, or this call gives one of its parties away.
//!
//! A hand-over runs in two steps, neither of which the actor waits for inside a handler:
//! 1. *asking the other call*: the call holding the replaced dialog is asked to give up its
//!    other party; its answer comes back as an event ([`ReplacesMachine::other_call_answered`]);
//! 2. *moving the phone*: the handed-over phone is re-INVITEd to this call's media at the
//!    side it takes (the call core's [`Purpose::TakeOver`](super::Purpose::TakeOver)
//!    re-INVITE, with glare retries); its answer comes back through
//!    [`ReplacesMachine::phone_answered`].
//!
//! Each way it can end is an [`Outcome`]; for a REFER it is also the status of the last
//! NOTIFY the referring phone gets ([`Outcome::notify_status`]). Whatever fails, this call
//! stays as it was: a phone handed over but not taken is released (BYE), never left
//! hanging. While a hand-over runs, the call answers other commands `409 pending`; a BYE from
//! any party is handled at once (the call ends, the hand-over with it:
//! [`ReplacesMachine::call_ended`]).

use super::{Phase, Side};

/// Who asked for the hand-over, and so who hears how it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Asker {
    /// A phone's REFER with Replaces: NOTIFY progress, released after success.
    Refer,
    /// The bridge command: its reply; the leg replaced here is released after success.
    Bridge,
}

/// How far the running hand-over got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// The other call was asked to give up its party.
    AskingOtherCall,
    /// The handed-over phone is being re-INVITEd to this call's media.
    MovingPhone,
}

/// The other call's answer to "give up your party".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OtherCall {
    /// It gave its party (and ended).
    Gave,
    /// It cannot (not stable, no such dialog, in a conference ...).
    Refused,
    /// It ended before it answered.
    Gone,
}

/// How a hand-over ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The handed-over phone took the side's place.
    Joined,
    OtherCallRefused,
    OtherCallGone,
    /// The phone refused the move (or it could not be sent).
    PhoneRefused,
    /// The phone hung up while it was being moved.
    PhoneGone,
    /// This call ended first (a party hung up).
    CallEnded,
}

impl Outcome {
    /// The status of the last NOTIFY a referring phone gets (RFC 3515 §2.4.5).
    pub(crate) fn notify_status(self) -> u16 {
        match self {
            Outcome::Joined => 200,
            Outcome::OtherCallRefused => 603,
            Outcome::OtherCallGone => 481,
            Outcome::PhoneRefused | Outcome::PhoneGone => 500,
            Outcome::CallEnded => 487,
        }
    }
}

/// What the actor must do next for a hand-over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Re-INVITE the handed-over phone into `side`'s place (a `TakeOver` re-offer).
    Move { side: Side },
    /// The hand-over is over: tell the asker `outcome`; `release_phone`: BYE the handed-over
    /// phone (it was given to us but is not kept).
    Done {
        side: Side,
        asker: Asker,
        outcome: Outcome,
        release_phone: bool,
        /// The replaced party had left meanwhile and nobody took its place: end the call.
        end_call: bool,
    },
    /// An answer for no running hand-over (this call ended meanwhile): `release_phone` if
    /// the other call gave its party anyway.
    Stale { release_phone: bool },
}

#[derive(Debug, Clone, Copy)]
struct HandOver {
    ticket: u32,
    side: Side,
    asker: Asker,
    stage: Stage,
    /// The party being replaced hung up meanwhile (a phone may leave right after its REFER
    /// was accepted): the hand-over goes on.
    replaced_gone: bool,
}

impl HandOver {
    fn done(self, outcome: Outcome, release_phone: bool) -> Step {
        Step::Done {
            side: self.side,
            asker: self.asker,
            outcome,
            release_phone,
            end_call: self.replaced_gone && outcome != Outcome::Joined,
        }
    }
}

/// The hand-over state of one call (see the module comment).
#[derive(Debug, Default)]
pub(crate) struct ReplacesMachine {
    last_ticket: u32,
    running: Option<HandOver>,
    /// This call gave its party to another call: the SIP Call-ID of that party's dialog
    /// (no longer ours to remove).
    handed_off: Option<String>,
}

impl ReplacesMachine {
    /// A hand-over into `side`'s place is asked for; returns the ticket the other call's
    /// answer must carry. None: one is already running (the asker gets `pending`).
    pub(crate) fn ask(&mut self, side: Side, asker: Asker) -> Option<u32> {
        if self.running.is_some() {
            return None;
        }
        self.last_ticket = self.last_ticket.wrapping_add(1);
        self.running = Some(HandOver {
            ticket: self.last_ticket,
            side,
            asker,
            stage: Stage::AskingOtherCall,
            replaced_gone: false,
        });
        Some(self.last_ticket)
    }

    pub(crate) fn is_running(&self) -> bool {
        self.running.is_some()
    }

    pub(crate) fn stage(&self) -> Option<Stage> {
        self.running.map(|h| h.stage)
    }

    /// The side a phone is being moved into, while one is.
    pub(crate) fn moving_into(&self) -> Option<Side> {
        self.running
            .filter(|h| h.stage == Stage::MovingPhone)
            .map(|h| h.side)
    }

    /// The other call answered the request with ticket `ticket`; `phase`: this call's now.
    pub(crate) fn other_call_answered(
        &mut self,
        ticket: u32,
        answer: OtherCall,
        phase: Phase,
    ) -> Step {
        let gave = answer == OtherCall::Gave;
        let Some(h) = self
            .running
            .as_mut()
            .filter(|h| h.ticket == ticket && h.stage == Stage::AskingOtherCall)
        else {
            return Step::Stale {
                release_phone: gave,
            };
        };
        let outcome = match (answer, phase) {
            (_, Phase::Ringing | Phase::Ended) => Outcome::CallEnded,
            (OtherCall::Gave, Phase::Connected) => {
                h.stage = Stage::MovingPhone;
                return Step::Move { side: h.side };
            }
            (OtherCall::Refused, Phase::Connected) => Outcome::OtherCallRefused,
            (OtherCall::Gone, Phase::Connected) => Outcome::OtherCallGone,
        };
        let h = *h;
        self.running = None;
        h.done(outcome, gave)
    }

    /// The party on `side` hung up. True if a hand-over into its place runs: it goes on
    /// (the new phone takes the empty place; if that fails, the call ends).
    pub(crate) fn replaced_party_left(&mut self, side: Side) -> bool {
        match self.running.as_mut().filter(|h| h.side == side) {
            Some(h) => {
                h.replaced_gone = true;
                true
            }
            None => false,
        }
    }

    /// Has the party a running hand-over replaces hung up?
    #[cfg(test)]
    pub(crate) fn replaced_gone(&self) -> bool {
        self.running.is_some_and(|h| h.replaced_gone)
    }

    /// The handed-over phone answered the move (`ok`: 2xx; else refused, failed, or it could
    /// not be sent). None: no phone is being moved.
    pub(crate) fn phone_answered(&mut self, ok: bool) -> Option<Step> {
        let h = self.running.filter(|h| h.stage == Stage::MovingPhone)?;
        self.running = None;
        let outcome = if ok {
            Outcome::Joined
        } else {
            Outcome::PhoneRefused
        };
        // A phone that refused the move is still in a dialog nobody keeps.
        Some(h.done(outcome, !ok))
    }

    /// The handed-over phone hung up while it was being moved: the call stays as it was.
    /// (The actor gives up the move's re-INVITE.)
    pub(crate) fn phone_gone(&mut self) -> Option<Step> {
        let h = self.running.filter(|h| h.stage == Stage::MovingPhone)?;
        self.running = None;
        Some(h.done(Outcome::PhoneGone, false))
    }

    /// Is the other call's answer still awaited?
    pub(crate) fn awaiting_other_call(&self) -> bool {
        self.stage() == Some(Stage::AskingOtherCall)
    }

    /// This call ended (a party hung up) with a hand-over running: it ends too. A phone being
    /// moved is released; one the other call gives later is released when its answer comes
    /// ([`Step::Stale`]).
    pub(crate) fn call_ended(&mut self) -> Option<Step> {
        let h = self.running.take()?;
        Some(Step::Done {
            side: h.side,
            asker: h.asker,
            outcome: Outcome::CallEnded,
            release_phone: h.stage == Stage::MovingPhone,
            end_call: false,
        })
    }

    /// This call gave the party on the dialog `call_id` to another call.
    pub(crate) fn gave_away(&mut self, call_id: String) {
        self.handed_off = Some(call_id);
    }

    /// The SIP Call-ID of the dialog this call gave away, if it did.
    pub(crate) fn handed_off(&self) -> Option<&str> {
        self.handed_off.as_deref()
    }
}

#[cfg(test)]
mod tests {
    //! Hand-overs driven through the call core with a simulated clock; the other call and
    //! the handed-over phone are scripted by the answers the test feeds.

    use super::*;
    use crate::call_core::{run_until, Action, CallCore, Purpose};
    use hookflash_media::sdp::Direction;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;
    use std::time::Duration;
    use tokio::time::Instant;

    fn connected() -> (CallCore, Instant) {
        let mut c = CallCore::with_rng(true, SmallRng::seed_from_u64(9));
        let t0 = Instant::now();
        c.connect(t0);
        (c, t0)
    }

    fn drain(c: &mut CallCore) -> Vec<Action> {
        std::iter::from_fn(|| c.poll_action()).collect()
    }

    /// The REFER from the phone on A is accepted and the other call gives its party: the
    /// phone's move into A's place is sent.
    fn moving(c: &mut CallCore) -> u32 {
        let ticket = c.replaces.ask(Side::A, Asker::Refer).expect("idle");
        assert_eq!(c.replaces.stage(), Some(Stage::AskingOtherCall));
        let step = c
            .replaces
            .other_call_answered(ticket, OtherCall::Gave, c.phase());
        assert_eq!(step, Step::Move { side: Side::A });
        assert!(c.start_reoffer(Side::A, Purpose::TakeOver, Direction::SendRecv));
        assert_eq!(
            drain(c),
            vec![Action::SendReoffer {
                side: Side::A,
                purpose: Purpose::TakeOver,
                direction: Direction::SendRecv,
                use_update: false
            }]
        );
        c.reoffer_seq(Side::A)
    }

    #[test]
    fn the_main_path_joins_the_phone_and_notifies_200() {
        let (mut c, t0) = connected();
        let seq = moving(&mut c);
        assert_eq!(c.replaces.moving_into(), Some(Side::A));
        // A second hand-over meanwhile is refused (pending).
        assert_eq!(c.replaces.ask(Side::B, Asker::Bridge), None);
        assert!(c.reoffer_current(Side::A, seq));
        let done = c
            .reoffer_answered(Side::A, Some(200), t0 + Duration::from_millis(80))
            .expect("answered");
        assert_eq!(done.purpose, Purpose::TakeOver);
        let step = c.replaces.phone_answered(true);
        assert_eq!(
            step,
            Some(Step::Done {
                side: Side::A,
                asker: Asker::Refer,
                outcome: Outcome::Joined,
                release_phone: false,
                end_call: false
            })
        );
        assert_eq!(Outcome::Joined.notify_status(), 200);
        assert!(!c.replaces.is_running());
        assert_eq!(c.poll_timeout(), None);
    }

    #[test]
    fn the_other_call_refusing_or_gone_leaves_the_call_as_it_was() {
        let (mut c, _) = connected();
        let t = c.replaces.ask(Side::B, Asker::Refer).expect("idle");
        let step = c
            .replaces
            .other_call_answered(t, OtherCall::Refused, c.phase());
        assert!(matches!(
            step,
            Step::Done {
                outcome: Outcome::OtherCallRefused,
                release_phone: false,
                ..
            }
        ));
        assert_eq!(Outcome::OtherCallRefused.notify_status(), 603);
        let t = c.replaces.ask(Side::B, Asker::Refer).expect("idle again");
        let step = c
            .replaces
            .other_call_answered(t, OtherCall::Gone, c.phase());
        assert!(matches!(
            step,
            Step::Done {
                outcome: Outcome::OtherCallGone,
                ..
            }
        ));
        assert_eq!(Outcome::OtherCallGone.notify_status(), 481);
        // Nothing was sent, nothing is timed, the call is connected as before.
        assert!(drain(&mut c).is_empty());
        assert_eq!(c.poll_timeout(), None);
        assert_eq!(c.phase(), Phase::Connected);
        assert!(!c.reoffer_pending());
    }

    #[test]
    fn the_phone_refusing_the_move_is_released_and_the_referrer_hears_500() {
        let (mut c, t0) = connected();
        moving(&mut c);
        c.reoffer_answered(Side::A, Some(488), t0 + Duration::from_millis(50));
        let step = c.replaces.phone_answered(false);
        assert_eq!(
            step,
            Some(Step::Done {
                side: Side::A,
                asker: Asker::Refer,
                outcome: Outcome::PhoneRefused,
                release_phone: true,
                end_call: false
            })
        );
        assert_eq!(Outcome::PhoneRefused.notify_status(), 500);
        assert_eq!(c.phase(), Phase::Connected);
        assert!(!c.reoffer_pending());
    }

    #[test]
    fn a_491_to_the_move_is_retried_after_the_rfc_delay_then_joins() {
        let (mut c, t0) = connected();
        moving(&mut c);
        assert_eq!(c.reoffer_answered(Side::A, Some(491), t0), None);
        // Still moving: the hand-over waits for the retry, nothing is decided.
        assert_eq!(c.replaces.moving_into(), Some(Side::A));
        let fired = run_until(&mut c, t0 + Duration::from_secs(5));
        assert!(matches!(
            fired[..],
            [(
                _,
                Action::SendReoffer {
                    purpose: Purpose::TakeOver,
                    ..
                }
            )]
        ));
        let seq = c.reoffer_seq(Side::A);
        assert!(c.reoffer_current(Side::A, seq));
        let done = c.reoffer_answered(Side::A, Some(200), t0 + Duration::from_secs(5));
        assert_eq!(done.map(|d| d.purpose), Some(Purpose::TakeOver));
        assert!(matches!(
            c.replaces.phone_answered(true),
            Some(Step::Done {
                outcome: Outcome::Joined,
                ..
            })
        ));
    }

    #[test]
    fn a_bye_while_the_phone_is_moved_ends_the_call_and_releases_the_phone() {
        let (mut c, t0) = connected();
        let seq = moving(&mut c);
        // The far party (B) hangs up while the handed-over phone sits on our re-INVITE.
        assert_eq!(c.abandon_reoffers(), vec![Side::A]);
        let step = c.replaces.call_ended();
        c.end();
        assert_eq!(
            step,
            Some(Step::Done {
                side: Side::A,
                asker: Asker::Refer,
                outcome: Outcome::CallEnded,
                release_phone: true,
                end_call: false
            })
        );
        // Its answer 3 s later changes nothing.
        assert!(!c.reoffer_current(Side::A, seq));
        assert_eq!(
            c.reoffer_answered(Side::A, Some(200), t0 + Duration::from_secs(3)),
            None
        );
        assert_eq!(c.replaces.phone_answered(true), None);
        assert_eq!(c.poll_timeout(), None);
    }

    #[test]
    fn the_call_ending_while_the_other_call_is_asked_releases_what_it_gives_later() {
        let (mut c, _) = connected();
        let t = c.replaces.ask(Side::A, Asker::Bridge).expect("idle");
        assert!(c.replaces.awaiting_other_call());
        let step = c.replaces.call_ended();
        c.end();
        assert!(matches!(
            step,
            Some(Step::Done {
                outcome: Outcome::CallEnded,
                release_phone: false,
                ..
            })
        ));
        assert_eq!(
            c.replaces
                .other_call_answered(t, OtherCall::Gave, c.phase()),
            Step::Stale {
                release_phone: true
            }
        );
        // A stale ticket never starts a move.
        let t2 = c.replaces.ask(Side::A, Asker::Refer).expect("idle");
        assert_eq!(
            c.replaces
                .other_call_answered(t2.wrapping_add(5), OtherCall::Gave, c.phase()),
            Step::Stale {
                release_phone: true
            }
        );
        assert!(matches!(
            c.replaces
                .other_call_answered(t2, OtherCall::Gave, c.phase()),
            Step::Done {
                outcome: Outcome::CallEnded,
                release_phone: true,
                ..
            }
        ));
    }

    #[test]
    fn the_phone_hanging_up_while_moved_gives_up_the_move_and_the_call_stays() {
        let (mut c, t0) = connected();
        let seq = moving(&mut c);
        assert_eq!(c.abandon_reoffer(Side::A), Some(Purpose::TakeOver));
        assert!(matches!(
            c.replaces.phone_gone(),
            Some(Step::Done {
                outcome: Outcome::PhoneGone,
                release_phone: false,
                ..
            })
        ));
        assert_eq!(c.phase(), Phase::Connected);
        // A hold may go now; the abandoned move's late answer is not taken for its answer.
        assert!(c.start_reoffer(Side::A, Purpose::Hold, Direction::SendOnly));
        assert!(!c.reoffer_current(Side::A, seq));
        assert!(c.reoffer_current(Side::A, c.reoffer_seq(Side::A)));
        let done = c.reoffer_answered(Side::A, Some(200), t0 + Duration::from_secs(1));
        assert_eq!(done.map(|d| d.purpose), Some(Purpose::Hold));
    }

    #[test]
    fn the_referrer_hanging_up_after_its_refer_does_not_stop_the_hand_over() {
        let (mut c, t0) = connected();
        moving(&mut c);
        // The referring phone (on A) leaves right after 202: the far party stays.
        assert!(c.replaces.replaced_party_left(Side::A));
        assert!(!c.replaces.replaced_party_left(Side::B));
        assert!(c.replaces.replaced_gone());
        c.reoffer_answered(Side::A, Some(200), t0 + Duration::from_millis(40));
        assert!(matches!(
            c.replaces.phone_answered(true),
            Some(Step::Done {
                outcome: Outcome::Joined,
                end_call: false,
                ..
            })
        ));
        // The same, but the phone refuses: nobody is left on A, the call ends.
        moving(&mut c);
        c.replaces.replaced_party_left(Side::A);
        c.reoffer_answered(Side::A, Some(603), t0 + Duration::from_secs(1));
        assert!(matches!(
            c.replaces.phone_answered(false),
            Some(Step::Done {
                outcome: Outcome::PhoneRefused,
                release_phone: true,
                end_call: true,
                ..
            })
        ));
    }

    #[test]
    fn giving_a_party_away_remembers_its_dialog() {
        let mut m = ReplacesMachine::default();
        assert_eq!(m.handed_off(), None);
        m.gave_away("c2@h".into());
        assert_eq!(m.handed_off(), Some("c2@h"));
    }
}
