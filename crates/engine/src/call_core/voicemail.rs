//! Voicemail, without I/O: a caller in a mailbox hears the greeting, then is recorded until
//! it hangs up, presses `#`, or the longest message is reached.
//!
//! The actor (`call/voicemail.rs`) executes what this decides: it answers the caller, plays
//! the greeting, writes the message row and the recording, and ends the call on
//! [`VoicemailAction::MaxLength`] or when [`VoicemailMachine::digit`] says so.

use std::time::Duration;

use tokio::time::Instant;

/// The longest message we record.
pub(crate) const MAX_MESSAGE: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Stage {
    /// The greeting (and beep) plays.
    Greeting,
    /// The caller is recorded into the message `id`.
    Recording { id: String },
}

#[derive(Debug)]
struct Session {
    user_id: String,
    stage: Stage,
    /// Wall-clock ms when the caller was answered (the duration when the recording cannot
    /// say).
    started_at_ms: i64,
    deadline: Option<Instant>,
}

/// What the actor must do for the voicemail call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum VoicemailAction {
    /// The longest message is reached: end the call normally (the message is kept).
    MaxLength,
}

/// A message that was recorded, to complete when the call ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Message {
    pub(crate) id: String,
    pub(crate) started_at_ms: i64,
}

/// The voicemail state of one call (see the module comment).
#[derive(Debug, Default)]
pub(crate) struct VoicemailMachine {
    /// The inbound hook sent the call to the callee's voicemail first.
    first: bool,
    session: Option<Session>,
}

impl VoicemailMachine {
    pub(crate) fn set_first(&mut self, first: bool) {
        self.first = first;
    }

    /// The call goes to voicemail before anything rings.
    pub(crate) fn first(&self) -> bool {
        self.first
    }

    /// Is a caller in a mailbox (greeting or message)?
    pub(crate) fn is_active(&self) -> bool {
        self.session.is_some()
    }

    /// The caller was answered into `user_id`'s mailbox at `now`; the greeting lasts
    /// `greeting`. The whole call lasts at most greeting + [`MAX_MESSAGE`].
    pub(crate) fn start(
        &mut self,
        now: Instant,
        user_id: String,
        greeting: Duration,
        started_at_ms: i64,
    ) {
        self.session = Some(Session {
            user_id,
            stage: Stage::Greeting,
            started_at_ms,
            deadline: Some(now + MAX_MESSAGE + greeting),
        });
    }

    /// The greeting has played: the user whose message to record now, if the call is still
    /// connected and not recording already. Then [`VoicemailMachine::recording`].
    pub(crate) fn greeting_done(&self, connected: bool) -> Option<String> {
        let s = self.session.as_ref()?;
        (connected && s.stage == Stage::Greeting).then(|| s.user_id.clone())
    }

    /// Recording of the message `id` runs since `now`: it lasts at most [`MAX_MESSAGE`].
    pub(crate) fn recording(&mut self, now: Instant, id: String) {
        if let Some(s) = self.session.as_mut() {
            s.stage = Stage::Recording { id };
            s.deadline = Some(now + MAX_MESSAGE);
        }
    }

    /// A digit from the caller: true when it ends the message (`#` while recording).
    pub(crate) fn digit(&self, digit: char) -> bool {
        digit == '#'
            && self
                .session
                .as_ref()
                .is_some_and(|s| matches!(s.stage, Stage::Recording { .. }))
    }

    /// The call ends: the message to complete, if recording had begun.
    pub(crate) fn finish(&mut self) -> Option<Message> {
        let s = self.session.take()?;
        match s.stage {
            Stage::Recording { id } => Some(Message {
                id,
                started_at_ms: s.started_at_ms,
            }),
            Stage::Greeting => None,
        }
    }

    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.session.as_ref().and_then(|s| s.deadline)
    }

    /// Time has come to `now`: the longest message, once.
    pub(crate) fn handle_timeout(&mut self, now: Instant) -> Option<VoicemailAction> {
        let s = self.session.as_mut()?;
        if s.deadline.is_none_or(|d| d > now) {
            return None;
        }
        s.deadline = None;
        Some(VoicemailAction::MaxLength)
    }

    /// The call ended: nothing is timed any more.
    pub(crate) fn stop_timer(&mut self) {
        if let Some(s) = self.session.as_mut() {
            s.deadline = None;
        }
    }
}

#[cfg(test)]
mod tests {
    //! Voicemail driven by a simulated clock through the call core.

    use super::*;
    use crate::call_core::run_until;
    use crate::call_core::{Action, CallCore};
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    fn core() -> (CallCore, Instant) {
        let c = CallCore::with_rng(true, SmallRng::seed_from_u64(3));
        (c, Instant::now())
    }

    #[test]
    fn greeting_then_message_ended_by_hash_is_completed() {
        let (mut c, t0) = core();
        let s = Duration::from_secs;
        c.connect(t0);
        c.voicemail.start(t0, "u202".into(), s(6), 1_000);
        // `#` during the greeting does nothing.
        assert!(!c.voicemail.digit('#'));
        assert_eq!(c.voicemail.greeting_done(true), Some("u202".into()));
        c.voicemail.recording(t0 + s(6), "m1".into());
        // Only once: a second greeting end starts no second recording.
        assert_eq!(c.voicemail.greeting_done(true), None);
        assert!(!c.voicemail.digit('5'));
        assert!(run_until(&mut c, t0 + s(30)).is_empty());
        assert!(c.voicemail.digit('#'));
        assert_eq!(
            c.voicemail.finish(),
            Some(Message {
                id: "m1".into(),
                started_at_ms: 1_000
            })
        );
        assert!(!c.voicemail.is_active());
        assert_eq!(c.poll_timeout(), None);
    }

    #[test]
    fn the_longest_message_ends_the_call_at_its_length_after_the_greeting() {
        let (mut c, t0) = core();
        let s = Duration::from_secs;
        c.connect(t0);
        c.voicemail.start(t0, "u202".into(), s(8), 0);
        // The greeting ended a little after its length; the message counts from then.
        c.voicemail.recording(t0 + s(9), "m2".into());
        let fired = run_until(&mut c, t0 + s(600));
        assert_eq!(
            fired,
            vec![(
                t0 + s(9) + MAX_MESSAGE,
                Action::Voicemail(VoicemailAction::MaxLength)
            )]
        );
        assert_eq!(c.voicemail.finish().map(|m| m.id), Some("m2".into()));
    }

    #[test]
    fn a_greeting_that_never_ends_is_still_bounded_and_a_caller_gone_leaves_no_message() {
        let (mut c, t0) = core();
        let s = Duration::from_secs;
        c.connect(t0);
        c.voicemail.start(t0, "u202".into(), s(5), 0);
        let fired = run_until(&mut c, t0 + s(600));
        assert_eq!(
            fired,
            vec![(
                t0 + s(5) + MAX_MESSAGE,
                Action::Voicemail(VoicemailAction::MaxLength)
            )]
        );
        // The caller hung up during the greeting: nothing to complete.
        assert_eq!(c.voicemail.greeting_done(false), None);
        assert_eq!(c.voicemail.finish(), None);
    }
}
