//! The call's signalling clock and re-offer rules, without I/O (the quinn-proto shape).
//!
//! [`CallCore`] decides *when* things happen in a call and *whether* a re-INVITE may go: the
//! call's phase, the ring timeout, each leg's session timer (RFC 4028) and each leg's
//! re-INVITE of ours with its glare back-off (RFC 3261 §14.1). It never reads a clock, never
//! touches a socket and never awaits: the call actor feeds it what happened with `now`, asks
//! [`CallCore::poll_timeout`] when to wake it, calls [`CallCore::handle_timeout`] then, and
//! executes what [`CallCore::poll_action`] yields (send the re-INVITE, end the call …).
//! That makes these rules testable with a simulated clock (see the tests below).
//!
//! Each call-routing feature keeps its own state and decisions in a module of the core
//! (`call_core/park.rs`, `call_core/voicemail.rs`, ...), owned by [`CallCore`], whose timers
//! run on the core's clock; the actor (`call.rs`, `call/*.rs`) only executes them (dialogs,
//! media, store).

use std::collections::VecDeque;
use std::time::Duration;

use hookflash_media::sdp::Direction;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use crate::session_timer::SessionTimer;

pub(crate) mod originate;
pub(crate) mod park;
pub(crate) mod replaces;
pub(crate) mod ringing;
pub(crate) mod transfer;
pub(crate) mod voicemail;

use originate::OriginateMachine;
use park::{ParkAction, ParkMachine};
use replaces::ReplacesMachine;
use ringing::{RingAction, RingingMachine};
use transfer::{TransferAction, TransferMachine};
use voicemail::{VoicemailAction, VoicemailMachine};

/// The most times a re-INVITE answered 491 is sent again.
pub(crate) const MAX_GLARE_RETRIES: u32 = 3;

/// While another re-INVITE is in flight, a refresh that falls due waits this long.
const REFRESH_WAIT: Duration = Duration::from_secs(1);

/// The two sides of a call: A is the caller's leg, B the other party's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    A,
    B,
}

impl Side {
    pub(crate) fn index(self) -> usize {
        match self {
            Side::A => 0,
            Side::B => 1,
        }
    }

    pub(crate) fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
}

/// Where the call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Ringing,
    Connected,
    Ended,
}

/// What a re-INVITE of ours is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// A hold or retrieve command.
    Hold,
    /// Putting a side back after a hold another phone refused.
    Undo,
    /// A phone's own re-INVITE, passed on to the other phone.
    Relay,
    /// A session refresh of ours (RFC 4028): UPDATE without SDP where the phone takes
    /// UPDATE, else a re-INVITE with our current SDP.
    Refresh,
    /// Attended transfer: the transferor's phone into the consultation bridge.
    ConsultJoin,
    /// Attended transfer: the transferor's phone back into the call's bridge (the
    /// consultation is over).
    ConsultBack,
    /// Attended transfer complete: the consulted target's phone into the transferor's place.
    /// Sent on the target's dialog; counted on the transferor's side.
    ConsultComplete,
    /// REFER/Replaces or bridge: a phone handed over by another call into this side's place.
    /// Sent on that phone's dialog; counted on the side it takes.
    TakeOver,
}

/// Something the actor must do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Send a re-INVITE (or, for a refresh to a phone that takes it, an UPDATE without SDP)
    /// towards `side` offering `direction`; report its final status with
    /// [`CallCore::reoffer_answered`].
    SendReoffer {
        side: Side,
        purpose: Purpose,
        direction: Direction,
        use_update: bool,
    },
    /// Nobody answered before the ring timeout.
    RingTimeout,
    /// `side`'s session timer ran out without the refresh the phone owed: end the call.
    SessionExpired { side: Side },
    /// A refresh of ours could not be sent (no dialog) or was refused: end the call.
    RefreshFailed { side: Side },
    /// The transfer's decision (`call_core/transfer.rs`).
    Transfer(TransferAction),
    /// The ringing call's decision (`call_core/ringing.rs`).
    Ringing(RingAction),
    /// The parked call's decision (`call_core/park.rs`).
    Park(ParkAction),
    /// The voicemail call's decision (`call_core/voicemail.rs`).
    Voicemail(VoicemailAction),
}

/// How a re-INVITE of ours ended, once no retry follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReofferDone {
    pub purpose: Purpose,
    pub direction: Direction,
    /// The final status (None: no answer, the transaction failed).
    pub status: Option<u16>,
}

/// A phone's re-INVITE or UPDATE: may it proceed?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PeerOffer {
    Proceed,
    /// Ours is pending: answer 491 (the phone retries after its own back-off).
    Glare,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reoffer {
    Idle,
    InFlight {
        purpose: Purpose,
        direction: Direction,
        retries: u32,
    },
    /// Answered 491: sent again at `until`.
    Backoff {
        purpose: Purpose,
        direction: Direction,
        retries: u32,
        until: Instant,
    },
}

#[derive(Debug, Clone, Copy)]
struct SideCore {
    reoffer: Reoffer,
    /// Counts our re-INVITEs sent towards this side: an answer carries the number it was
    /// sent with, so the late answer of one given up is never taken for a newer one's.
    seq: u32,
    timer: Option<SessionTimer>,
    /// We answered this leg's INVITE (the caller's leg of a call that came in); else we sent
    /// it, chose its Call-ID and are its UAC.
    we_are_uas: bool,
    allows_update: bool,
    session_deadline: Option<Instant>,
}

impl SideCore {
    fn new(we_are_uas: bool) -> Self {
        SideCore {
            reoffer: Reoffer::Idle,
            seq: 0,
            timer: None,
            we_are_uas,
            allows_update: false,
            session_deadline: None,
        }
    }
}

/// A leg's session timer as it runs (RFC 4028), to go with its phone when that phone takes
/// another side's place: a transfer's target, a phone handed over by another call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LegSession {
    pub(crate) timer: Option<SessionTimer>,
    pub(crate) allows_update: bool,
    /// We answered the phone's dialog (else we dialled it and chose its Call-ID).
    pub(crate) we_are_uas: bool,
    /// When the next refresh is due (ours) or owed (the phone's); None: not counted yet.
    pub(crate) deadline: Option<Instant>,
}

impl LegSession {
    /// A phone we dialled that answered at `answered` with `timer`, taking a side at `now`.
    /// Where we refresh, the interval runs from its answer (the phone counts from there);
    /// where the phone refreshes, from `now` (its refreshes before, to a consultation, were
    /// not counted here).
    pub(crate) fn dialled(
        timer: Option<SessionTimer>,
        allows_update: bool,
        answered: Instant,
        now: Instant,
    ) -> Self {
        let deadline = timer.map(|t| {
            let from = if t.we_refresh_as(false) {
                answered
            } else {
                now
            };
            from + t.next_deadline_as(false)
        });
        LegSession {
            timer,
            allows_update,
            we_are_uas: false,
            deadline,
        }
    }
}

/// The sans-IO part of one call (see the module comment).
pub(crate) struct CallCore {
    phase: Phase,
    ring_deadline: Option<Instant>,
    sides: [SideCore; 2],
    actions: VecDeque<Action>,
    /// SmallRng: 32 bytes in every call (StdRng was 320) for the glare retry delay.
    rng: SmallRng,
    /// Park: the orbit, the empty place, the park timeout.
    pub(crate) park: ParkMachine,
    /// Voicemail: greeting, message, its longest length.
    pub(crate) voicemail: VoicemailMachine,
    /// Transfer: the running attempt, its forks' results, the target's ring timeout.
    pub(crate) transfer: TransferMachine,
    /// Origination: the caller's phones ring first.
    pub(crate) originate: OriginateMachine,
    /// The ringing call: auto-answer, reply message.
    pub(crate) ringing: RingingMachine,
    /// REFER/Replaces and bridge: a party handed over from another call, or given to one.
    pub(crate) replaces: ReplacesMachine,
}

impl CallCore {
    /// A ringing call. `a_is_uas`: the caller's leg is a dialog we answer (a call that came
    /// in), not one we dialled (an originated call).
    pub(crate) fn new(a_is_uas: bool) -> Self {
        Self::with_rng(a_is_uas, SmallRng::from_entropy())
    }

    /// As [`CallCore::new`] with a given random source (tests: a fixed seed).
    pub(crate) fn with_rng(a_is_uas: bool, rng: SmallRng) -> Self {
        CallCore {
            phase: Phase::Ringing,
            ring_deadline: None,
            sides: [SideCore::new(a_is_uas), SideCore::new(false)],
            actions: VecDeque::new(),
            rng,
            park: ParkMachine::default(),
            voicemail: VoicemailMachine::default(),
            transfer: TransferMachine::default(),
            originate: OriginateMachine::default(),
            ringing: RingingMachine::default(),
            replaces: ReplacesMachine::default(),
        }
    }

    pub(crate) fn phase(&self) -> Phase {
        self.phase
    }

    /// The caller's leg turned out to be ours as UAC after all (an originated call).
    pub(crate) fn set_a_is_uas(&mut self, uas: bool) {
        self.sides[0].we_are_uas = uas;
    }

    pub(crate) fn we_are_uas(&self, side: Side) -> bool {
        self.sides[side.index()].we_are_uas
    }

    /// (Re)starts ringing: nobody answering by `now + timeout` yields [`Action::RingTimeout`].
    pub(crate) fn ring(&mut self, now: Instant, timeout: Duration) {
        if self.phase != Phase::Ended {
            self.phase = Phase::Ringing;
            self.ring_deadline = Some(now + timeout);
        }
    }

    /// The call is answered: the ring timeout stops, session timers count from `now`.
    pub(crate) fn connect(&mut self, now: Instant) {
        if self.phase == Phase::Ended {
            return;
        }
        self.phase = Phase::Connected;
        self.ring_deadline = None;
        for side in [Side::A, Side::B] {
            self.refreshed(side, now);
        }
    }

    /// The call is over: nothing is timed any more, nothing pending is retried.
    pub(crate) fn end(&mut self) {
        self.phase = Phase::Ended;
        self.ring_deadline = None;
        for s in &mut self.sides {
            s.reoffer = Reoffer::Idle;
            s.session_deadline = None;
        }
        self.park.stop_timer();
        self.transfer.stop_timer();
        self.ringing.stop_timer();
        self.voicemail.stop_timer();
        self.actions.clear();
    }

    /// `side`'s session timer (None: no timer on that leg now) and whether its phone takes
    /// UPDATE. Once connected its deadline counts from `now`.
    pub(crate) fn set_session_timer(
        &mut self,
        side: Side,
        timer: Option<SessionTimer>,
        allows_update: bool,
        now: Instant,
    ) {
        let s = &mut self.sides[side.index()];
        s.timer = timer;
        s.allows_update = allows_update;
        s.session_deadline = None;
        if self.phase == Phase::Connected {
            self.refreshed(side, now);
        }
    }

    /// `side`'s session timer as it runs, to hand over with its phone.
    pub(crate) fn leg_session(&self, side: Side) -> LegSession {
        let s = &self.sides[side.index()];
        LegSession {
            timer: s.timer,
            allows_update: s.allows_update,
            we_are_uas: s.we_are_uas,
            deadline: s.session_deadline,
        }
    }

    /// A phone with `session` takes `side`'s place: its dialog's role and session timer
    /// replace the old party's (none: no timer on that leg now). Its deadline is kept (one
    /// not counted yet counts from `now`, once connected).
    pub(crate) fn adopt_session(&mut self, side: Side, session: LegSession, now: Instant) {
        let connected = self.phase == Phase::Connected;
        let s = &mut self.sides[side.index()];
        s.timer = session.timer;
        s.allows_update = session.allows_update;
        s.we_are_uas = session.we_are_uas;
        s.session_deadline = None;
        if connected {
            match (session.timer, session.deadline) {
                (Some(_), Some(at)) => s.session_deadline = Some(at),
                (Some(_), None) => self.refreshed(side, now),
                (None, _) => {}
            }
        }
    }

    pub(crate) fn session_timer(&self, side: Side) -> Option<SessionTimer> {
        self.sides[side.index()].timer
    }

    /// A refresh happened on `side` (the phone's re-INVITE/UPDATE, or ours succeeded): its
    /// next deadline counts from `now`.
    fn refreshed(&mut self, side: Side, now: Instant) {
        let s = &mut self.sides[side.index()];
        s.session_deadline = s.timer.map(|t| now + t.next_deadline_as(s.we_are_uas));
    }

    /// Is a re-INVITE of ours in flight (or waiting to be retried) towards any side?
    pub(crate) fn reoffer_pending(&self) -> bool {
        self.sides.iter().any(|s| s.reoffer != Reoffer::Idle)
    }

    /// Asks for a re-INVITE towards `side`; false if one of ours is already pending there
    /// (the caller answers its command `409 pending`). Yields [`Action::SendReoffer`].
    pub(crate) fn start_reoffer(
        &mut self,
        side: Side,
        purpose: Purpose,
        direction: Direction,
    ) -> bool {
        if self.phase == Phase::Ended || self.sides[side.index()].reoffer != Reoffer::Idle {
            return false;
        }
        self.send(side, purpose, direction, 0);
        true
    }

    fn send(&mut self, side: Side, purpose: Purpose, direction: Direction, retries: u32) {
        let s = &mut self.sides[side.index()];
        s.seq = s.seq.wrapping_add(1);
        s.reoffer = Reoffer::InFlight {
            purpose,
            direction,
            retries,
        };
        self.actions.push_back(Action::SendReoffer {
            side,
            purpose,
            direction,
            use_update: purpose == Purpose::Refresh && s.allows_update,
        });
    }

    /// The final status of our re-INVITE towards `side` (None: it failed without one). A 491
    /// to one of ours is retried after the §14.1 delay (up to [`MAX_GLARE_RETRIES`] times)
    /// and gives None here; anything else ends it and says what it was for. A relayed
    /// re-INVITE's 491 is not retried: it goes back to the phone that sent it.
    pub(crate) fn reoffer_answered(
        &mut self,
        side: Side,
        status: Option<u16>,
        now: Instant,
    ) -> Option<ReofferDone> {
        let s = &mut self.sides[side.index()];
        let Reoffer::InFlight {
            purpose,
            direction,
            retries,
        } = s.reoffer
        else {
            return None;
        };
        if status == Some(491) && purpose != Purpose::Relay && retries < MAX_GLARE_RETRIES {
            let delay = glare_delay(!s.we_are_uas, &mut self.rng);
            s.reoffer = Reoffer::Backoff {
                purpose,
                direction,
                retries: retries + 1,
                until: now + delay,
            };
            return None;
        }
        s.reoffer = Reoffer::Idle;
        let ok = status.is_some_and(|c| (200..300).contains(&c));
        if purpose == Purpose::Refresh {
            if ok {
                self.refreshed(side, now);
            } else if self.phase == Phase::Connected {
                // RFC 4028 §10: a refresh that fails ends the session.
                self.actions.push_back(Action::RefreshFailed { side });
            }
        }
        Some(ReofferDone {
            purpose,
            direction,
            status,
        })
    }

    /// The number of the re-INVITE last sent towards `side` (its answer carries it).
    pub(crate) fn reoffer_seq(&self, side: Side) -> u32 {
        self.sides[side.index()].seq
    }

    /// Is an answer sent as number `seq` towards `side` the answer to the re-INVITE in
    /// flight there? (False: one given up with [`CallCore::abandon_reoffer`], or no longer
    /// waited for.)
    pub(crate) fn reoffer_current(&self, side: Side, seq: u32) -> bool {
        let s = &self.sides[side.index()];
        s.seq == seq && matches!(s.reoffer, Reoffer::InFlight { .. })
    }

    /// Gives up the re-INVITE of ours pending towards `side` (the phone it moves left, or
    /// another move replaces it): its answer, whenever it comes, is ignored. Says what it
    /// was for.
    pub(crate) fn abandon_reoffer(&mut self, side: Side) -> Option<Purpose> {
        let s = &mut self.sides[side.index()];
        let purpose = match s.reoffer {
            Reoffer::Idle => None,
            Reoffer::InFlight { purpose, .. } | Reoffer::Backoff { purpose, .. } => Some(purpose),
        };
        s.reoffer = Reoffer::Idle;
        purpose
    }

    /// A refresh of ours pending towards `side` is given up because a move must go there
    /// now (its answer, whenever it comes, is ignored); the refresh falls due again at `now`
    /// and goes out, with what the leg has then, once nothing else is in flight. False: no
    /// refresh was pending there.
    pub(crate) fn postpone_refresh(&mut self, side: Side, now: Instant) -> bool {
        let s = &mut self.sides[side.index()];
        let refreshing = match s.reoffer {
            Reoffer::InFlight { purpose, .. } | Reoffer::Backoff { purpose, .. } => {
                purpose == Purpose::Refresh
            }
            Reoffer::Idle => false,
        };
        if refreshing {
            s.reoffer = Reoffer::Idle;
            s.session_deadline = Some(now);
        }
        refreshing
    }

    /// Our re-INVITE towards `side` could not even be sent (the leg has no dialog now).
    pub(crate) fn reoffer_unsendable(&mut self, side: Side) {
        let s = &mut self.sides[side.index()];
        let was_refresh = matches!(
            s.reoffer,
            Reoffer::InFlight {
                purpose: Purpose::Refresh,
                ..
            }
        );
        s.reoffer = Reoffer::Idle;
        if was_refresh && self.phase == Phase::Connected {
            self.actions.push_back(Action::RefreshFailed { side });
        }
    }

    /// A phone on `side` sent a re-INVITE or UPDATE. Any of them refreshes its leg's session
    /// (RFC 4028 §10). `busy`: the actor has something else in flight it would cross.
    pub(crate) fn peer_offer(&mut self, side: Side, busy: bool, now: Instant) -> PeerOffer {
        if self.phase == Phase::Connected {
            self.refreshed(side, now);
        }
        if busy || self.reoffer_pending() {
            PeerOffer::Glare
        } else {
            PeerOffer::Proceed
        }
    }

    /// Drops every re-INVITE of ours still pending (the call is ending); says which sides had
    /// one.
    pub(crate) fn abandon_reoffers(&mut self) -> Vec<Side> {
        let mut had = Vec::new();
        for side in [Side::A, Side::B] {
            if self.sides[side.index()].reoffer != Reoffer::Idle {
                had.push(side);
                self.sides[side.index()].reoffer = Reoffer::Idle;
            }
        }
        had
    }

    /// When the actor must call [`CallCore::handle_timeout`] next (None: nothing is timed).
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        if self.phase == Phase::Ringing {
            consider(self.ring_deadline);
            consider(self.ringing.deadline());
        }
        if self.phase != Phase::Ended {
            consider(self.transfer.deadline());
            consider(self.park.deadline());
            consider(self.voicemail.deadline());
        }
        for s in &self.sides {
            if let Reoffer::Backoff { until, .. } = s.reoffer {
                consider(Some(until));
            }
            if self.phase == Phase::Connected {
                consider(s.session_deadline);
            }
        }
        next
    }

    /// Time has come to `now`: whatever is due yields its action.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if self.phase == Phase::Ringing && self.ring_deadline.is_some_and(|d| d <= now) {
            self.ring_deadline = None;
            self.actions.push_back(Action::RingTimeout);
        }
        if self.phase == Phase::Ringing {
            if let Some(a) = self.ringing.handle_timeout(now) {
                self.actions.push_back(Action::Ringing(a));
            }
        }
        if self.phase != Phase::Ended {
            if let Some(a) = self.transfer.handle_timeout(now) {
                self.actions.push_back(Action::Transfer(a));
            }
            if let Some(a) = self.park.handle_timeout(now) {
                self.actions.push_back(Action::Park(a));
            }
            if let Some(a) = self.voicemail.handle_timeout(now) {
                self.actions.push_back(Action::Voicemail(a));
            }
        }
        for side in [Side::A, Side::B] {
            if let Reoffer::Backoff {
                purpose,
                direction,
                retries,
                until,
            } = self.sides[side.index()].reoffer
            {
                if until <= now && self.phase != Phase::Ended {
                    self.send(side, purpose, direction, retries);
                }
            }
        }
        if self.phase != Phase::Connected {
            return;
        }
        for side in [Side::A, Side::B] {
            let s = self.sides[side.index()];
            let (Some(deadline), Some(timer)) = (s.session_deadline, s.timer) else {
                continue;
            };
            if deadline > now {
                continue;
            }
            if !timer.we_refresh_as(s.we_are_uas) {
                self.sides[side.index()].session_deadline = None;
                self.actions.push_back(Action::SessionExpired { side });
                continue;
            }
            if self.reoffer_pending() {
                // Something else is being renegotiated; try again shortly.
                self.sides[side.index()].session_deadline = Some(now + REFRESH_WAIT);
                continue;
            }
            self.sides[side.index()].session_deadline = None;
            // Our refresh offers what the leg has now; the actor fills in the SDP.
            self.send(side, Purpose::Refresh, Direction::SendRecv, 0);
        }
    }

    /// The next thing to do, in order.
    pub(crate) fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }
}

/// Picks the response the caller gets when every fork failed (RFC 3261 §16.7, simplified):
/// a global failure (6xx) wins, then busy, then the most specific 4xx, then 5xx.
pub(crate) fn best_failure(statuses: &[u16]) -> u16 {
    let rank = |s: u16| match s {
        600..=699 => 0,
        486 => 1,
        400..=499 if s != 408 && s != 480 && s != 487 => 2,
        480 => 3,
        408 => 4,
        487 => 5,
        500..=599 => 6,
        _ => 7,
    };
    statuses
        .iter()
        .copied()
        .filter(|s| *s >= 300)
        .min_by_key(|s| rank(*s))
        .unwrap_or(480)
}

/// RFC 3261 §14.1: the owner of the dialog's Call-ID waits 2.1–4 s before retrying, the
/// other side 0–2 s.
fn glare_delay(we_own_call_id: bool, rng: &mut SmallRng) -> Duration {
    let ms = if we_own_call_id {
        rng.gen_range(2100..=4000)
    } else {
        rng.gen_range(0..=2000)
    };
    Duration::from_millis(ms)
}

/// Test support for the feature machines: fires the core's timers up to `to`, in order, and
/// collects the actions each one yields.
#[cfg(test)]
pub(crate) fn run_until(core: &mut CallCore, to: Instant) -> Vec<(Instant, Action)> {
    let mut seen = Vec::new();
    while let Some(t) = core.poll_timeout() {
        if t > to {
            break;
        }
        core.handle_timeout(t);
        while let Some(a) = core.poll_action() {
            seen.push((t, a));
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    //! The call core driven by a simulated clock: `now` is a value the test moves; nothing
    //! sleeps and nothing touches the network. A scripted peer is the sequence of inputs the
    //! test feeds (its final responses, its re-INVITEs, its silence).

    use super::*;
    use crate::session_timer::Refresher;

    fn core() -> (CallCore, Instant) {
        (
            CallCore::with_rng(true, SmallRng::seed_from_u64(7)),
            Instant::now(),
        )
    }

    fn drain(core: &mut CallCore) -> Vec<Action> {
        std::iter::from_fn(|| core.poll_action()).collect()
    }

    /// Runs the clock from `from` to `to` the way the actor does: wake at each timeout.
    fn run_until(core: &mut CallCore, to: Instant) -> Vec<(Instant, Action)> {
        let mut seen = Vec::new();
        while let Some(t) = core.poll_timeout() {
            if t > to {
                break;
            }
            core.handle_timeout(t);
            for a in drain(core) {
                seen.push((t, a));
            }
        }
        seen
    }

    fn timer(expires: u32, refresher: Refresher) -> SessionTimer {
        SessionTimer {
            expires,
            refresher,
            require: true,
        }
    }

    #[test]
    fn the_ring_timeout_fires_once_at_its_deadline_and_not_after_an_answer() {
        let (mut c, t0) = core();
        c.ring(t0, Duration::from_secs(30));
        assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(30)));
        assert!(run_until(&mut c, t0 + Duration::from_secs(29)).is_empty());
        let fired = run_until(&mut c, t0 + Duration::from_secs(60));
        assert_eq!(
            fired,
            vec![(t0 + Duration::from_secs(30), Action::RingTimeout)]
        );
        assert_eq!(c.poll_timeout(), None);

        let (mut c, t0) = core();
        c.ring(t0, Duration::from_secs(30));
        c.connect(t0 + Duration::from_secs(5));
        assert_eq!(c.phase(), Phase::Connected);
        assert!(run_until(&mut c, t0 + Duration::from_secs(120)).is_empty());
    }

    #[test]
    fn ringing_again_restarts_the_ring_timeout() {
        let (mut c, t0) = core();
        c.ring(t0, Duration::from_secs(30));
        c.ring(t0 + Duration::from_secs(20), Duration::from_secs(30));
        let fired = run_until(&mut c, t0 + Duration::from_secs(100));
        assert_eq!(
            fired,
            vec![(t0 + Duration::from_secs(50), Action::RingTimeout)]
        );
    }

    #[test]
    fn a_refresh_that_never_comes_ends_the_call_at_the_expiry() {
        // The caller refreshes (uac) every 90 s: we wait 90 - 30 = 60 s, then end the call.
        let (mut c, t0) = core();
        c.set_session_timer(Side::A, Some(timer(90, Refresher::Uac)), false, t0);
        c.connect(t0);
        // It refreshes once at 40 s ...
        assert_eq!(
            c.peer_offer(Side::A, false, t0 + Duration::from_secs(40)),
            PeerOffer::Proceed
        );
        // ... and never again.
        let fired = run_until(&mut c, t0 + Duration::from_secs(300));
        assert_eq!(
            fired,
            vec![(
                t0 + Duration::from_secs(100),
                Action::SessionExpired { side: Side::A }
            )]
        );
    }

    #[test]
    fn where_we_refresh_we_send_at_half_the_interval_and_each_success_moves_the_deadline() {
        let (mut c, t0) = core();
        // The callee's leg: we are UAC and the refresher is uac (us); it takes UPDATE.
        c.set_session_timer(Side::B, Some(timer(90, Refresher::Uac)), true, t0);
        c.connect(t0);
        let fired = run_until(&mut c, t0 + Duration::from_secs(45));
        assert_eq!(
            fired,
            vec![(
                t0 + Duration::from_secs(45),
                Action::SendReoffer {
                    side: Side::B,
                    purpose: Purpose::Refresh,
                    direction: Direction::SendRecv,
                    use_update: true
                }
            )]
        );
        let done = c.reoffer_answered(Side::B, Some(200), t0 + Duration::from_secs(46));
        assert_eq!(done.map(|d| d.purpose), Some(Purpose::Refresh));
        assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(91)));
        // A refused refresh ends the session.
        run_until(&mut c, t0 + Duration::from_secs(91));
        c.reoffer_answered(Side::B, Some(481), t0 + Duration::from_secs(92));
        assert_eq!(drain(&mut c), vec![Action::RefreshFailed { side: Side::B }]);
    }

    #[test]
    fn a_phone_taking_a_side_brings_its_session_timer_and_its_dialog_role() {
        let s = Duration::from_secs;
        // Another call: its caller (we are UAS) refreshes every 90 s; it refreshed at 40 s,
        // so it owes the next by 100 s.
        let (mut other, t0) = core();
        other.set_session_timer(Side::A, Some(timer(90, Refresher::Uac)), true, t0);
        other.connect(t0);
        other.peer_offer(Side::A, false, t0 + s(40));
        let handed = other.leg_session(Side::A);
        assert_eq!(handed.deadline, Some(t0 + s(100)));
        assert!(handed.we_are_uas && handed.allows_update);
        // This call (no timers) takes that phone on its B side at 50 s: the phone's
        // deadline stays 100 s; no refresh comes, the call ends then.
        let (mut c, _) = core();
        c.connect(t0);
        c.adopt_session(Side::B, handed, t0 + s(50));
        assert!(c.we_are_uas(Side::B));
        assert_eq!(
            run_until(&mut c, t0 + s(300)),
            vec![(t0 + s(100), Action::SessionExpired { side: Side::B })]
        );

        // A transfer target we dialled answered at 10 s asking us (its UAC) to refresh
        // every 90 s; it takes the caller's side at 30 s: our first refresh goes out 45 s
        // after its answer, as a re-INVITE of ours (we chose that dialog's Call-ID).
        let (mut c, _) = core();
        c.set_session_timer(Side::A, Some(timer(90, Refresher::Uac)), false, t0);
        c.connect(t0);
        let target = LegSession::dialled(
            Some(timer(90, Refresher::Uac)),
            false,
            t0 + s(10),
            t0 + s(30),
        );
        c.adopt_session(Side::A, target, t0 + s(30));
        assert!(!c.we_are_uas(Side::A));
        assert_eq!(
            run_until(&mut c, t0 + s(56)),
            vec![(
                t0 + s(55),
                Action::SendReoffer {
                    side: Side::A,
                    purpose: Purpose::Refresh,
                    direction: Direction::SendRecv,
                    use_update: false
                }
            )]
        );
        // One that refreshes itself owes it 60 s after it took the side.
        let (mut c, _) = core();
        c.connect(t0);
        let target = LegSession::dialled(
            Some(timer(90, Refresher::Uas)),
            true,
            t0 + s(10),
            t0 + s(30),
        );
        c.adopt_session(Side::B, target, t0 + s(30));
        assert_eq!(
            run_until(&mut c, t0 + s(300)),
            vec![(t0 + s(90), Action::SessionExpired { side: Side::B })]
        );
        // A phone without a timer leaves none behind.
        let (mut c, _) = core();
        c.set_session_timer(Side::B, Some(timer(90, Refresher::Uac)), false, t0);
        c.connect(t0);
        c.adopt_session(Side::B, LegSession::dialled(None, false, t0, t0), t0 + s(1));
        assert!(run_until(&mut c, t0 + s(300)).is_empty());
    }

    #[test]
    fn a_phone_reinvite_while_ours_is_pending_is_glare_and_ours_goes_on() {
        let (mut c, t0) = core();
        c.connect(t0);
        assert!(c.start_reoffer(Side::B, Purpose::Hold, Direction::SendOnly));
        assert!(matches!(
            drain(&mut c)[..],
            [Action::SendReoffer { side: Side::B, .. }]
        ));
        // The phone on B sends its own re-INVITE meanwhile: 491 to it.
        assert_eq!(c.peer_offer(Side::B, false, t0), PeerOffer::Glare);
        // A second hold meanwhile is refused (409 pending), not queued.
        assert!(!c.start_reoffer(Side::B, Purpose::Hold, Direction::SendRecv));
        let done = c.reoffer_answered(Side::B, Some(200), t0 + Duration::from_millis(50));
        assert_eq!(
            done,
            Some(ReofferDone {
                purpose: Purpose::Hold,
                direction: Direction::SendOnly,
                status: Some(200)
            })
        );
        assert_eq!(c.peer_offer(Side::B, false, t0), PeerOffer::Proceed);
    }

    #[test]
    fn a_491_to_ours_is_retried_after_the_rfc_delay_and_gives_up_after_three() {
        let (mut c, t0) = core();
        c.connect(t0);
        assert!(c.start_reoffer(Side::B, Purpose::Hold, Direction::SendOnly));
        drain(&mut c);
        let mut now = t0;
        for attempt in 1..=MAX_GLARE_RETRIES {
            assert_eq!(c.reoffer_answered(Side::B, Some(491), now), None);
            let retry_at = c.poll_timeout().expect("a retry is timed");
            // We chose the callee leg's Call-ID: 2.1–4 s (RFC 3261 §14.1).
            let wait = retry_at - now;
            assert!(
                wait >= Duration::from_millis(2100) && wait <= Duration::from_millis(4000),
                "attempt {attempt}: waited {wait:?}"
            );
            // Nothing is sent before the delay is over.
            c.handle_timeout(retry_at - Duration::from_millis(1));
            assert!(drain(&mut c).is_empty());
            c.handle_timeout(retry_at);
            assert!(matches!(
                drain(&mut c)[..],
                [Action::SendReoffer {
                    side: Side::B,
                    purpose: Purpose::Hold,
                    ..
                }]
            ));
            now = retry_at;
        }
        let done = c.reoffer_answered(Side::B, Some(491), now);
        assert_eq!(done.map(|d| d.status), Some(Some(491)));
        assert_eq!(c.poll_timeout(), None);
    }

    #[test]
    fn on_the_leg_whose_call_id_the_phone_chose_the_glare_wait_is_up_to_two_seconds() {
        let (mut c, t0) = core();
        c.connect(t0);
        for _ in 0..20 {
            assert!(c.start_reoffer(Side::A, Purpose::Hold, Direction::SendOnly));
            drain(&mut c);
            c.reoffer_answered(Side::A, Some(491), t0);
            let wait = c.poll_timeout().expect("a retry is timed") - t0;
            assert!(wait <= Duration::from_millis(2000), "waited {wait:?}");
            c.abandon_reoffers();
        }
    }

    #[test]
    fn a_relayed_reinvite_answered_491_is_not_retried_by_us() {
        let (mut c, t0) = core();
        c.connect(t0);
        assert!(c.start_reoffer(Side::B, Purpose::Relay, Direction::SendOnly));
        drain(&mut c);
        let done = c.reoffer_answered(Side::B, Some(491), t0);
        assert_eq!(done.map(|d| d.purpose), Some(Purpose::Relay));
        assert_eq!(c.poll_timeout(), None);
    }

    #[test]
    fn a_bye_during_a_pending_hold_ends_at_once_and_its_late_answer_is_ignored() {
        let (mut c, t0) = core();
        c.set_session_timer(Side::A, Some(timer(90, Refresher::Uas)), false, t0);
        c.connect(t0);
        assert!(c.start_reoffer(Side::B, Purpose::Hold, Direction::SendOnly));
        drain(&mut c);
        // The caller hangs up while the callee sits on our hold re-INVITE.
        assert_eq!(c.abandon_reoffers(), vec![Side::B]);
        c.end();
        assert_eq!(c.phase(), Phase::Ended);
        // Nothing is timed any more: no refresh, no retry.
        assert_eq!(c.poll_timeout(), None);
        // The callee's answer 3 s later changes nothing.
        assert_eq!(
            c.reoffer_answered(Side::B, Some(200), t0 + Duration::from_secs(3)),
            None
        );
        assert!(drain(&mut c).is_empty());
        assert!(!c.start_reoffer(Side::A, Purpose::Hold, Direction::SendOnly));
    }

    #[test]
    fn feature_timers_fire_once_in_time_order_and_can_be_moved_or_cleared() {
        let (mut c, t0) = core();
        c.connect(t0);
        let s = Duration::from_secs;
        c.voicemail.start(t0, "u1".into(), s(0), 0);
        c.park.park(t0, s(60), "*71".into(), Side::B, None);
        let g = c.transfer.next_generation();
        c.transfer
            .start(t0, g, Side::A, "203".into(), false, 1, s(30));
        // The transfer target answered: its ring deadline goes.
        c.transfer.fork_result(g, 0, 200, true);
        // The greeting ended at 10 s, the message may last 120 s from then.
        c.voicemail.recording(t0 + s(10), "m".into());
        let fired = run_until(&mut c, t0 + s(600));
        assert_eq!(
            fired,
            vec![
                (
                    t0 + s(60),
                    Action::Park(ParkAction::CallParkerBack {
                        orbit: "*71".into(),
                        extension: None
                    })
                ),
                (t0 + s(130), Action::Voicemail(VoicemailAction::MaxLength)),
            ]
        );
        // Nothing is timed after the call ends.
        c.park.park(t0 + s(600), s(60), "*72".into(), Side::B, None);
        c.end();
        assert_eq!(c.poll_timeout(), None);
    }

    #[test]
    fn a_refresh_due_while_a_hold_is_pending_waits_and_is_sent_after() {
        let (mut c, t0) = core();
        c.set_session_timer(Side::A, Some(timer(90, Refresher::Uas)), false, t0);
        c.connect(t0);
        assert!(c.start_reoffer(Side::B, Purpose::Hold, Direction::SendOnly));
        drain(&mut c);
        let t45 = t0 + Duration::from_secs(45);
        c.handle_timeout(t45);
        assert!(drain(&mut c).is_empty());
        assert_eq!(c.poll_timeout(), Some(t45 + REFRESH_WAIT));
        c.reoffer_answered(Side::B, Some(200), t45);
        c.handle_timeout(t45 + REFRESH_WAIT);
        assert!(matches!(
            drain(&mut c)[..],
            [Action::SendReoffer {
                side: Side::A,
                purpose: Purpose::Refresh,
                use_update: false,
                ..
            }]
        ));
    }
}
