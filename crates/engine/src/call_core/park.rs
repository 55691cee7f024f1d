//! Park, without I/O: which orbit a call sits in, whose place is empty, and when nobody
//! retrieving it means calling the parker back.
//!
//! The actor (`call/park.rs`) executes what this decides: it claims and releases the orbit in
//! the engine's table, plays music to the kept party, releases the parker's phone, answers a
//! pickup, and dials the parker back on [`ParkAction::CallParkerBack`].

use std::time::Duration;

use tokio::time::Instant;

use super::Side;

/// Orbit codes: `*7` and one digit.
pub(crate) const ORBIT_PREFIX: &str = "*7";

/// Whether a dialled string is an orbit code.
pub(crate) fn is_orbit(dialled: &str) -> bool {
    dialled.len() == ORBIT_PREFIX.len() + 1
        && dialled.starts_with(ORBIT_PREFIX)
        && dialled.bytes().last().is_some_and(|b| b.is_ascii_digit())
}

/// The orbits to try, in order: the one asked for, else `*71` to `*79`.
pub(crate) fn orbit_candidates(wanted: Option<&str>) -> Vec<String> {
    match wanted {
        Some(w) => vec![w.to_string()],
        None => (1..=9).map(|n| format!("{ORBIT_PREFIX}{n}")).collect(),
    }
}

/// A parked call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Parked {
    pub(crate) orbit: String,
    /// The parker's side (now empty) and who parked, to dial back on timeout.
    pub(crate) slot: Side,
    pub(crate) parker_extension: Option<String>,
    /// When nobody retrieving it calls the parker back (None: that has happened).
    deadline: Option<Instant>,
}

/// Why a park request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ParkRefusal {
    AlreadyParked,
    NotAnOrbit(String),
}

/// What the actor must do for the parked call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ParkAction {
    /// Nobody retrieved the call from `orbit` in time: dial the parker (`extension`) back into
    /// its place; if that cannot be done, [`ParkMachine::give_up`] and end the call.
    CallParkerBack {
        orbit: String,
        extension: Option<String>,
    },
}

/// The park state of one call (see the module comment).
#[derive(Debug, Default)]
pub(crate) struct ParkMachine {
    parked: Option<Parked>,
}

impl ParkMachine {
    /// May the call be parked (in `wanted`, if given)?
    pub(crate) fn check(&self, wanted: Option<&str>) -> Result<(), ParkRefusal> {
        if self.parked.is_some() {
            return Err(ParkRefusal::AlreadyParked);
        }
        match wanted {
            Some(o) if !is_orbit(o) => Err(ParkRefusal::NotAnOrbit(o.to_string())),
            _ => Ok(()),
        }
    }

    /// The party opposite `slot` now waits in `orbit`; nobody retrieving it by
    /// `now + timeout` yields [`ParkAction::CallParkerBack`].
    pub(crate) fn park(
        &mut self,
        now: Instant,
        timeout: Duration,
        orbit: String,
        slot: Side,
        parker_extension: Option<String>,
    ) {
        self.parked = Some(Parked {
            orbit,
            slot,
            parker_extension,
            deadline: Some(now + timeout),
        });
    }

    pub(crate) fn is_parked(&self) -> bool {
        self.parked.is_some()
    }

    /// The call leaves its orbit (picked up, dialled out of it, or ending): the actor
    /// releases the orbit it returns. [`ParkMachine::restore`] if the retrieve fails.
    pub(crate) fn retrieve(&mut self) -> Option<Parked> {
        self.parked.take()
    }

    /// A retrieve that did not work: the call is parked as before, with the same deadline.
    pub(crate) fn restore(&mut self, parked: Parked) {
        self.parked = Some(parked);
    }

    /// Calling the parker back did not work: the call leaves its orbit (returned, for the
    /// actor to release) and ends.
    pub(crate) fn give_up(&mut self) -> Option<String> {
        self.parked.take().map(|p| p.orbit)
    }

    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.parked.as_ref().and_then(|p| p.deadline)
    }

    /// Time has come to `now`: the park timeout, once.
    pub(crate) fn handle_timeout(&mut self, now: Instant) -> Option<ParkAction> {
        let p = self.parked.as_mut()?;
        if p.deadline.is_none_or(|d| d > now) {
            return None;
        }
        p.deadline = None;
        Some(ParkAction::CallParkerBack {
            orbit: p.orbit.clone(),
            extension: p.parker_extension.clone(),
        })
    }

    /// The call ended: nothing is timed any more (the orbit stays for the actor to release).
    pub(crate) fn stop_timer(&mut self) {
        if let Some(p) = self.parked.as_mut() {
            p.deadline = None;
        }
    }
}

#[cfg(test)]
mod tests {
    //! Park driven by a simulated clock through the call core.

    use super::*;
    use crate::call_core::run_until;
    use crate::call_core::{Action, CallCore};
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    fn core() -> (CallCore, Instant) {
        let mut c = CallCore::with_rng(true, SmallRng::seed_from_u64(1));
        let t0 = Instant::now();
        c.connect(t0);
        (c, t0)
    }

    #[test]
    fn orbit_codes_are_star_seven_and_one_digit() {
        assert!(is_orbit("*71") && is_orbit("*79") && is_orbit("*70"));
        assert!(!is_orbit("*7") && !is_orbit("*710") && !is_orbit("*7a") && !is_orbit("71"));
        assert_eq!(orbit_candidates(Some("*75")), vec!["*75".to_string()]);
        let all = orbit_candidates(None);
        assert_eq!(all.len(), 9);
        assert_eq!((all[0].as_str(), all[8].as_str()), ("*71", "*79"));
    }

    #[test]
    fn a_parked_call_picked_up_in_time_calls_nobody_back() {
        let (mut c, t0) = core();
        let s = Duration::from_secs;
        assert_eq!(c.park.check(None), Ok(()));
        c.park
            .park(t0, s(60), "*71".into(), Side::B, Some("202".into()));
        assert_eq!(c.park.check(None), Err(ParkRefusal::AlreadyParked));
        assert_eq!(c.poll_timeout(), Some(t0 + s(60)));
        // A phone dials *71 after 20 s: the call leaves the orbit, nothing is timed.
        assert!(run_until(&mut c, t0 + s(20)).is_empty());
        let p = c.park.retrieve().expect("parked");
        assert_eq!((p.orbit.as_str(), p.slot), ("*71", Side::B));
        assert!(run_until(&mut c, t0 + s(600)).is_empty());
        assert_eq!(c.park.check(Some("*72")), Ok(()));
    }

    #[test]
    fn the_park_timeout_calls_the_parker_back_once_and_a_failed_call_back_gives_up() {
        let (mut c, t0) = core();
        let s = Duration::from_secs;
        c.park
            .park(t0, s(45), "*73".into(), Side::B, Some("202".into()));
        let fired = run_until(&mut c, t0 + s(600));
        assert_eq!(
            fired,
            vec![(
                t0 + s(45),
                Action::Park(ParkAction::CallParkerBack {
                    orbit: "*73".into(),
                    extension: Some("202".into())
                })
            )]
        );
        // Still parked while the parker is looked up; the parker cannot be dialled.
        assert!(c.park.is_parked());
        assert_eq!(c.park.give_up(), Some("*73".into()));
        assert!(!c.park.is_parked());
        assert_eq!(c.poll_timeout(), None);
    }

    #[test]
    fn a_failed_retrieve_leaves_the_call_parked_with_its_deadline() {
        let (mut c, t0) = core();
        let s = Duration::from_secs;
        assert_eq!(
            c.park.check(Some("*80")),
            Err(ParkRefusal::NotAnOrbit("*80".into()))
        );
        c.park.park(t0, s(30), "*74".into(), Side::A, None);
        let p = c.park.retrieve().expect("parked");
        // Dialling the target failed: back in the orbit.
        c.park.restore(p);
        let fired = run_until(&mut c, t0 + s(100));
        assert_eq!(
            fired,
            vec![(
                t0 + s(30),
                Action::Park(ParkAction::CallParkerBack {
                    orbit: "*74".into(),
                    extension: None
                })
            )]
        );
    }

    #[test]
    fn an_ended_call_times_no_park() {
        let (mut c, t0) = core();
        c.park
            .park(t0, Duration::from_secs(30), "*71".into(), Side::B, None);
        c.end();
        assert_eq!(c.poll_timeout(), None);
        // The orbit is still there for the actor to release.
        assert_eq!(c.park.retrieve().map(|p| p.orbit), Some("*71".into()));
    }
}
