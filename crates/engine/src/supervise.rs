//! Supervision and an added party on a connected call, built on the conference machinery.
//!
//! A call that gets a supervisor (listen / coach / barge) or an added party moves onto a
//! conference of its own, named `call.<call id>` ([`call_conference_name`]) and *owned* by
//! the call: the call's legs join it as fed participants (they stay the call's legs, see
//! `call/conf_leg.rs`: no re-INVITE, the mixer is fed from their relay ports) and the extra
//! phone is dialled into it. The conference ends — and both legs go back to their call's
//! relay fast path — when no phone it dialled is left (the supervisor or the added party
//! hung up, was removed, or never answered) or when the call's legs have gone (the call
//! ended). `hookflash_calls_on_mixer` counts the calls on such a mixer.
//!
//! A supervisor is a dialled participant with a [`Supervision`]: `listen` is heard by no
//! one, `coach` by the agent's leg alone, `barge` by everybody; it hears everybody in every
//! mode (the mixer's hearing rules, `media/src/mixer.rs`). The mode changes live. One
//! supervisor per call.
//!
//! Nothing here waits inside an actor: the engine asks the conference actor (dial: answers
//! once the INVITE has left) and the call actor (attach a leg: synchronous) from outside.

use serde::{Deserialize, Serialize};

use crate::call::conf_leg::ConfLegCommand;
use crate::call::CallCommand;
use crate::cluster::{Command as Forwarded, Outcome};
use crate::conference::{Command, ConferenceEntry, JoinOptions, ParticipantInfo, Who};
use crate::control::CommandError;
use crate::model::{CallState, WrongState};
use crate::Engine;

/// How a supervisor takes part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SuperviseMode {
    /// Hears both parties; heard by no one.
    Listen,
    /// Hears both parties; heard by the agent alone (whisper).
    Coach,
    /// Hears both parties; heard by both.
    Barge,
}

impl SuperviseMode {
    pub const ALL: &'static [SuperviseMode] = &[
        SuperviseMode::Listen,
        SuperviseMode::Coach,
        SuperviseMode::Barge,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            SuperviseMode::Listen => "listen",
            SuperviseMode::Coach => "coach",
            SuperviseMode::Barge => "barge",
        }
    }

    pub fn parse(s: &str) -> Option<SuperviseMode> {
        SuperviseMode::ALL.iter().copied().find(|m| m.as_str() == s)
    }
}

/// A supervisor's mode and the leg it supervises (the agent: the one a coach is heard by).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Supervision {
    pub mode: SuperviseMode,
    pub agent_leg: Option<String>,
}

/// The conference a call owns while it has a supervisor or an added party.
pub fn call_conference_name(call_id: &str) -> String {
    format!("call.{call_id}")
}

/// Whether `name` is reserved for a call's own conference.
pub fn is_call_conference_name(name: &str) -> bool {
    name.starts_with("call.")
}

impl Engine {
    /// The participants a call's own conference has now (its legs, the supervisor, added
    /// parties); empty while the call is on the relay.
    pub async fn call_participants(
        &self,
        account_id: &str,
        call_id: &str,
    ) -> Result<Vec<ParticipantInfo>, CommandError> {
        if let Some(out) = self
            .forward_if_remote(account_id, call_id, || Forwarded::CallParticipants)
            .await
        {
            return out.and_then(Outcome::participants);
        }
        self.local_call(account_id, call_id)?;
        let Some(entry) = self.conference_entry(account_id, &call_conference_name(call_id)) else {
            return Ok(Vec::new());
        };
        Ok(entry
            .ask(Command::Info)
            .await
            .map(|i| i.participants)
            .unwrap_or_default())
    }

    /// Dials `user`'s phone into call `call_id` as its supervisor. Errors: `NotFound` (no such
    /// call), `WrongState` (not answered; a supervisor is there already; a leg is in another
    /// conference, transferring or parked), `Invalid` (an agent leg that is not the call's),
    /// `BadTarget`/`NotPermitted`/`Limited` as a dial.
    pub async fn supervise(
        &self,
        account_id: &str,
        call_id: &str,
        user: &str,
        supervision: Supervision,
    ) -> Result<ParticipantInfo, CommandError> {
        if let Some(out) = self
            .forward_if_remote(account_id, call_id, || Forwarded::Supervise {
                user: user.to_string(),
                supervision: supervision.clone(),
            })
            .await
        {
            return out.and_then(Outcome::participant);
        }
        self.check_agent(account_id, call_id, &supervision)?;
        let current = self.call_participants(account_id, call_id).await?;
        if current.iter().any(|p| p.supervision.is_some()) {
            return Err(CommandError::WrongState {
                state: WrongState::InConference,
            });
        }
        self.dial_into_call(account_id, call_id, user, Some(supervision))
            .await
    }

    /// Changes the supervisor's mode (and agent) live.
    pub async fn supervise_update(
        &self,
        account_id: &str,
        call_id: &str,
        supervision: Supervision,
    ) -> Result<ParticipantInfo, CommandError> {
        if let Some(out) = self
            .forward_if_remote(account_id, call_id, || Forwarded::SuperviseUpdate {
                supervision: supervision.clone(),
            })
            .await
        {
            return out.and_then(Outcome::participant);
        }
        self.check_agent(account_id, call_id, &supervision)?;
        let (entry, sup) = self.supervisor_of(account_id, call_id).await?;
        entry
            .ask(|reply| Command::Supervise {
                participant: sup.id,
                supervision,
                reply,
            })
            .await?
    }

    /// The supervisor leaves (BYE); without other added parties the call is back on its
    /// relay.
    pub async fn supervise_end(&self, account_id: &str, call_id: &str) -> Result<(), CommandError> {
        if let Some(out) = self
            .forward_if_remote(account_id, call_id, || Forwarded::SuperviseEnd)
            .await
        {
            return out.and_then(Outcome::done);
        }
        let (entry, sup) = self.supervisor_of(account_id, call_id).await?;
        entry
            .ask(|reply| Command::Remove {
                participant: Who::Id(sup.id),
                reply,
            })
            .await?
    }

    /// Dials `to` (an extension or number, routed as the account dials) into call `call_id`
    /// as a third party: heard by both, hears both.
    pub async fn add_party(
        &self,
        account_id: &str,
        call_id: &str,
        to: &str,
    ) -> Result<ParticipantInfo, CommandError> {
        if let Some(out) = self
            .forward_if_remote(account_id, call_id, || Forwarded::AddParty {
                to: to.to_string(),
            })
            .await
        {
            return out.and_then(Outcome::participant);
        }
        self.dial_into_call(account_id, call_id, to, None).await
    }

    /// Brings leg `leg_id` of another call `other_call_id` into call `call_id`: heard by
    /// both parties, hears both. The leg stays its own call's (its partner there hears music
    /// meanwhile); when it leaves (its call ends, or [`Self::remove_party`] with its leg id)
    /// call `call_id` is back on its relay.
    pub async fn bring_in_leg(
        &self,
        account_id: &str,
        call_id: &str,
        other_call_id: &str,
        leg_id: &str,
    ) -> Result<ParticipantInfo, CommandError> {
        if let Some(out) = self
            .forward_pair_if_remote(account_id, call_id, other_call_id, || {
                Forwarded::BringInLeg {
                    other_call: other_call_id.to_string(),
                    leg_id: leg_id.to_string(),
                }
            })
            .await
        {
            return out.and_then(Outcome::participant);
        }
        let call = self.local_call(account_id, call_id)?;
        if call.state != CallState::Answered {
            return Err(CommandError::WrongState {
                state: call.state.into(),
            });
        }
        if other_call_id == call_id {
            return Err(CommandError::Invalid(
                "a call's own leg cannot be brought into it".into(),
            ));
        }
        let name = call_conference_name(call_id);
        let (leg, conf) = (leg_id.to_string(), name.clone());
        let attach = self
            .send_command(account_id, other_call_id, |reply| {
                CallCommand::Conference(ConfLegCommand::Attach {
                    leg_id: Some(leg),
                    name: conf,
                    reply,
                })
            })
            .await?;
        let entry = self.conference_or_start_owned(account_id, &name, Some(call_id))?;
        let party = entry
            .ask(|reply| Command::Join {
                attach,
                opts: JoinOptions::default(),
                reply,
            })
            .await??
            .participant;
        if let Err(e) = self.bring_legs_in(account_id, call_id, &name, &entry).await {
            tracing::info!(call_id, error = %e, "the call's legs could not join: the brought-in leg goes back");
            let _ = entry.commands.send(Command::End).await;
            return Err(e);
        }
        Ok(party)
    }

    /// Takes an added party (or the supervisor) out of the call (BYE, CANCEL while ringing).
    /// The call's own legs are not parties here: `NotFound`.
    pub async fn remove_party(
        &self,
        account_id: &str,
        call_id: &str,
        participant_id: &str,
    ) -> Result<(), CommandError> {
        if let Some(out) = self
            .forward_if_remote(account_id, call_id, || Forwarded::RemoveParty {
                participant_id: participant_id.to_string(),
            })
            .await
        {
            return out.and_then(Outcome::done);
        }
        let entry = self.owned_entry(account_id, call_id)?;
        let info = entry.ask(Command::Info).await?;
        // An outside party: a dialled phone (by participant id) or another call's leg (by
        // participant or leg id); the call's own legs are not parties to remove.
        let Some(p) = info.participants.iter().find(|p| {
            p.call_id.as_deref() != Some(call_id)
                && (p.id == participant_id || p.leg_id.as_deref() == Some(participant_id))
        }) else {
            return Err(CommandError::NotFound);
        };
        let id = p.id.clone();
        entry
            .ask(|reply| Command::Remove {
                participant: Who::Id(id),
                reply,
            })
            .await?
    }

    fn owned_entry(
        &self,
        account_id: &str,
        call_id: &str,
    ) -> Result<ConferenceEntry, CommandError> {
        self.local_call(account_id, call_id)?;
        self.conference_entry(account_id, &call_conference_name(call_id))
            .ok_or(CommandError::NotFound)
    }

    async fn supervisor_of(
        &self,
        account_id: &str,
        call_id: &str,
    ) -> Result<(ConferenceEntry, ParticipantInfo), CommandError> {
        let entry = self.owned_entry(account_id, call_id)?;
        let sup = entry
            .ask(Command::Info)
            .await?
            .participants
            .into_iter()
            .find(|p| p.supervision.is_some())
            .ok_or(CommandError::NotFound)?;
        Ok((entry, sup))
    }

    /// A coach needs an agent; any agent named must be a leg of the call.
    fn check_agent(
        &self,
        account_id: &str,
        call_id: &str,
        supervision: &Supervision,
    ) -> Result<(), CommandError> {
        let call = self.local_call(account_id, call_id)?;
        match (&supervision.agent_leg, supervision.mode) {
            (None, SuperviseMode::Coach) => Err(CommandError::Invalid(
                "coach needs agent_leg: the leg that hears the supervisor".into(),
            )),
            (None, SuperviseMode::Listen | SuperviseMode::Barge) => Ok(()),
            (Some(leg), _) if call.leg(leg).is_some() => Ok(()),
            (Some(leg), _) => Err(CommandError::Invalid(format!(
                "agent_leg '{leg}' is not a leg of this call"
            ))),
        }
    }

    /// Dials `target` into the call's own conference (made here), then brings the call's
    /// legs in. A failure after the dial ends the conference (the phone gets CANCEL, the
    /// legs go back).
    async fn dial_into_call(
        &self,
        account_id: &str,
        call_id: &str,
        target: &str,
        supervision: Option<Supervision>,
    ) -> Result<ParticipantInfo, CommandError> {
        let call = self.local_call(account_id, call_id)?;
        if call.state != CallState::Answered {
            return Err(CommandError::WrongState {
                state: call.state.into(),
            });
        }
        let name = call_conference_name(call_id);
        let entry = self.conference_or_start_owned(account_id, &name, Some(call_id))?;
        let party = entry
            .ask(|reply| Command::Dial {
                target: target.to_string(),
                muted: false,
                supervision,
                reply,
            })
            .await??;
        if let Err(e) = self.bring_legs_in(account_id, call_id, &name, &entry).await {
            tracing::info!(call_id, error = %e, "the call's legs could not join: the added phone is let go");
            let _ = entry.commands.send(Command::End).await;
            return Err(e);
        }
        Ok(party)
    }

    /// The call's answered legs that are not in its conference yet join it.
    async fn bring_legs_in(
        &self,
        account_id: &str,
        call_id: &str,
        name: &str,
        entry: &ConferenceEntry,
    ) -> Result<(), CommandError> {
        let inside = entry.ask(Command::Info).await?.participants;
        let call = self.local_call(account_id, call_id)?;
        for leg in &call.legs {
            if inside
                .iter()
                .any(|p| p.leg_id.as_deref() == Some(leg.id.as_str()))
            {
                continue;
            }
            let (leg_id, conf) = (leg.id.clone(), name.to_string());
            let attach = self
                .send_command(account_id, call_id, |reply| {
                    CallCommand::Conference(ConfLegCommand::Attach {
                        leg_id: Some(leg_id),
                        name: conf,
                        reply,
                    })
                })
                .await?;
            // A refusal (or a conference that ended meanwhile) drops `attach`: the leg goes
            // back to its call.
            entry
                .ask(|reply| Command::Join {
                    attach,
                    opts: JoinOptions::default(),
                    reply,
                })
                .await??;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_round_trip_and_call_conferences_are_recognised() {
        for m in SuperviseMode::ALL {
            assert_eq!(SuperviseMode::parse(m.as_str()), Some(*m));
        }
        assert_eq!(SuperviseMode::parse("whisper"), None);
        let name = call_conference_name("0f8c2a8e-7f0e-4a59-9d6b-1f5f0b7d9a11");
        assert!(crate::conference::valid_name(&name));
        assert!(is_call_conference_name(&name));
        assert!(!is_call_conference_name("sales"));
    }
}
