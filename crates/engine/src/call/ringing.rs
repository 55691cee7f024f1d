//! Operations on a call that still rings (the callee has not answered): forward it to another
//! destination, reject it (every device stops ringing; the caller hears busy), ignore it
//! on one device (the others keep ringing), reply to the caller with a message (the server
//! answers it, plays the message, and ends the call), or answer it on one device: that phone
//! is rung again with an INVITE asking it to answer by itself (the intercom auto-answer
//! headers desk phones honour); when it answers, the other devices stop as for any answer.
//! A device that does not answer that INVITE within `AUTO_ANSWER_WAIT` (`call_core/ringing.rs`) is rung again
//! ordinary way, so the call is never dropped by it.

use hookflash_media::audio::Pcm8k;
use hookflash_media::relay::{Leg, PlayOptions};
use hookflash_sip::msg::Header;
use hookflash_store::Registration;
use tracing::{debug, info};

use super::{CallActor, CallCommand, ForkTarget, Phase, Side, TransferTarget};
use crate::control::{CallInfo, CommandError, LegState};
use crate::events::{EventDetail, EventKind};
use crate::model::{EndCause, WrongState};

/// What to do with a ringing call.
#[derive(Debug)]
pub enum RingingAction {
    /// Stop ringing here and ring this destination instead.
    Forward(TransferTarget),
    /// Stop ringing everywhere; the caller goes to the callee's voicemail, else gets busy.
    Reject,
    /// Stop ringing and send the caller to the callee's voicemail.
    ToVoicemail,
    /// Stop ringing on this device (one of the callee leg's `devices`).
    Ignore { device: String },
    /// Stop ringing everywhere; answer the caller, play this, then end the call.
    Reply(Pcm8k),
    /// Make this ringing device answer: it is rung again with an auto-answer INVITE.
    AnswerOn(AnswerDevice),
}

/// A registered phone of the callee, to be asked to answer (built by [`device_target`]).
#[derive(Debug)]
pub struct AnswerDevice(pub(crate) ForkTarget);

/// The device asked to answer by itself: its ordinary target, to ring again if it does not
/// (its state and wait are `core.ringing`).
#[derive(Debug)]
pub(crate) struct AutoAnswer {
    target: ForkTarget,
}

/// Where a registered phone is rung (None if its registration names no usable address).
pub(crate) fn device_target(reg: &Registration) -> Option<AnswerDevice> {
    let destination = super::device_destination(&reg.transport, &reg.source, &reg.contact)?;
    Some(AnswerDevice(ForkTarget {
        request_uri: reg.contact.clone(),
        destination,
        transport: super::transport_of(&reg.transport),
        credential: None,
        permit: None,
    }))
}

/// The headers that ask a phone to answer an INVITE by itself, in each form desk phones
/// read: `Call-Info ...;answer-after=0` (BroadSoft's, read by Polycom, Grandstream, snom,
/// Gigaset), `Alert-Info ...;info=alert-autoanswer;delay=0` (Yealink, snom, Aastra), and
/// `Answer-Mode: Auto` (RFC 5373). A phone answers only if its auto-answer (intercom)
/// setting allows it.
pub(crate) fn auto_answer_headers(host: &str) -> Vec<Header> {
    vec![
        Header::Other("Call-Info".into(), format!("<sip:{host}>;answer-after=0")),
        Header::Other(
            "Alert-Info".into(),
            "<http://127.0.0.1>;info=alert-autoanswer;delay=0".into(),
        ),
        Header::Other("Answer-Mode".into(), "Auto".into()),
    ]
}

impl CallActor {
    pub(super) async fn on_ringing_action(
        &mut self,
        action: RingingAction,
    ) -> Result<CallInfo, CommandError> {
        let still_calling_caller = self.core.originate.calling_caller();
        if self.core.phase() != Phase::Ringing || still_calling_caller {
            return Err(CommandError::WrongState {
                state: if still_calling_caller {
                    WrongState::CallingCaller
                } else {
                    self.state().into()
                },
            });
        }
        match action {
            RingingAction::Forward(target) => {
                self.abandon_forks(|_| true);
                info!(target = %target.label, "forwarding the ringing call");
                self.b_leg.number = target.label.clone();
                self.b_leg.owner_user_id = target.owner.as_ref().map(|(id, _)| id.clone());
                self.b_leg.owner_extension = target.owner.as_ref().map(|(_, e)| e.clone());
                self.callee_label = target.label.clone();
                self.core.ring(
                    tokio::time::Instant::now(),
                    self.engine.inner.cfg.ring_timeout,
                );
                self.send_forks(&target.forks);
                self.publish_detail(
                    EventKind::Forwarded,
                    Some(super::Side::B),
                    EventDetail {
                        target: Some(target.label),
                        ..Default::default()
                    },
                );
            }
            RingingAction::Reject => {
                info!("call rejected while ringing");
                if !self.try_voicemail().await {
                    self.abandon_forks(|_| true);
                    self.fail_caller(486, EndCause::Rejected);
                }
            }
            RingingAction::ToVoicemail => {
                let Some(user) = self.mailbox_user().await else {
                    return Err(CommandError::BadTarget(
                        "the callee has no voicemail".into(),
                    ));
                };
                self.start_voicemail(user).await?;
            }
            RingingAction::Reply(message) => self.reply_to_caller(message)?,
            RingingAction::AnswerOn(AnswerDevice(target)) => self.answer_on(target)?,
            RingingAction::Ignore { device } => {
                let found = self
                    .forks
                    .iter()
                    .any(|f| !f.finished && !f.abandoned && f.request_uri == device);
                if !found {
                    return Err(CommandError::Invalid(format!(
                        "'{device}' is not a device of this call that is ringing"
                    )));
                }
                self.abandon_forks(|f| f.request_uri == device);
                info!(%device, "device stopped ringing (ignored)");
                if self.forks.iter().all(|f| f.finished || f.abandoned) {
                    self.fail_caller(480, EndCause::Unavailable);
                }
            }
        }
        self.refresh_devices();
        self.sync_registry();
        Ok(self.info())
    }

    /// Answers the ringing caller with `message` instead of the callee: the forks are
    /// cancelled, the server answers with its own SDP, plays the message, and ends the call
    /// when it is over (`PlaybackEnded` with `replying` set).
    fn reply_to_caller(&mut self, message: Pcm8k) -> Result<(), CommandError> {
        let Some(a) = self.a.clone() else {
            return Err(self.wrong_state());
        };
        if self.is_app() || self.core.originate.is_originated() {
            return Err(self.wrong_state());
        }
        self.abandon_all_forks();
        let body = self.server_answer_sdp()?;
        self.accept_caller(a, body)?;
        // The callee never answered: its leg is over.
        self.b_leg.state = LegState::Disconnected;
        self.core.ringing.start_reply();
        self.apply_forwarding();
        let seconds = message.duration().as_secs_f32();
        let id = self
            .bridge
            .play(Leg::A, message, PlayOptions { looped: false });
        let done = self.bridge.playback_done(id);
        let tx = self.self_tx.clone();
        tokio::spawn(async move {
            let end = done.await;
            let _ = tx
                .send(CallCommand::PlaybackEnded {
                    side: 0,
                    whisper: false,
                    end,
                })
                .await;
        });
        info!(
            seconds,
            "ringing call: the caller is answered with a reply message"
        );
        self.publish(EventKind::Answered, Some(Side::A), None);
        Ok(())
    }

    /// Rings `target` (one of the devices ringing now) again with an auto-answer INVITE; its
    /// ordinary INVITE is cancelled. The other devices ring on until it answers (then they
    /// are cancelled as for any answer). Not answered within `AUTO_ANSWER_WAIT` (`call_core/ringing.rs`) (or
    /// refused): the device is rung the ordinary way again (`auto_answer_failed`).
    fn answer_on(&mut self, target: ForkTarget) -> Result<(), CommandError> {
        if self.is_app() {
            return Err(self.wrong_state());
        }
        if self.core.ringing.check_answer_on().is_err() {
            return Err(CommandError::WrongState {
                state: WrongState::Pending,
            });
        }
        let device = target.request_uri.clone();
        let ringing = self
            .forks
            .iter()
            .any(|f| !f.finished && !f.abandoned && f.request_uri == device);
        if !ringing {
            return Err(CommandError::Invalid(format!(
                "'{device}' is not a device of this call that is ringing"
            )));
        }
        self.abandon_forks(|f| f.request_uri == device);
        let first = self.forks.len();
        let headers = auto_answer_headers(&self.engine.inner.cfg.advertised_host);
        self.send_forks_with(std::slice::from_ref(&target), &headers);
        let Some(fork) = self.forks.get(first) else {
            // The INVITE could not be sent: ring the device as before.
            self.send_forks(&[target]);
            return Err(CommandError::Failed {
                status: 500,
                reason: "the auto-answer INVITE could not be sent".into(),
            });
        };
        debug!(call_id = %fork.call_id, "auto-answer INVITE sent");
        info!(%device, "ringing call: the device is asked to answer (auto-answer INVITE)");
        self.core
            .ringing
            .auto_answer_sent(tokio::time::Instant::now(), first);
        self.auto_answer = Some(Box::new(AutoAnswer { target }));
        Ok(())
    }

    /// The device did not answer by itself in time (`RingAction::CancelAutoAnswer`): CANCEL
    /// its INVITE; the final response rings it the ordinary way again.
    pub(super) fn cancel_auto_answer(&mut self, fork: usize) {
        let Some(dialog) = self.forks.get(fork).map(|f| f.dialog.clone()) else {
            return;
        };
        tokio::spawn(async move {
            // A no-op once the INVITE ended otherwise.
            if let Err(e) = dialog.cancel().await {
                debug!(error = %e, "CANCEL of the auto-answer INVITE failed");
            }
        });
    }

    /// Fork `index` ended without answering: if it was the auto-answer INVITE and the call
    /// still rings, the device rings the ordinary way again.
    pub(super) fn auto_answer_failed(&mut self, index: usize) {
        let abandoned = self.forks.get(index).is_some_and(|f| f.abandoned);
        let still_wanted =
            !abandoned && self.core.phase() == Phase::Ringing && self.winner.is_none();
        if !self.core.ringing.auto_answer_ended(index, still_wanted) {
            return;
        }
        let Some(pending) = self.auto_answer.take() else {
            return;
        };
        info!(device = %pending.target.request_uri, "the device did not answer by itself; it rings again");
        self.send_forks(&[pending.target]);
    }

    pub(super) fn abandon_all_forks(&mut self) {
        self.abandon_forks(|_| true);
    }

    /// CANCELs the live forks `which` selects and marks them so they can no longer answer.
    fn abandon_forks(&mut self, which: impl Fn(&super::Fork) -> bool) {
        for fork in self
            .forks
            .iter_mut()
            .filter(|f| !f.finished && !f.abandoned)
            .filter(|f| which(f))
        {
            fork.abandoned = true;
            let dialog = fork.dialog.clone();
            tokio::spawn(async move {
                if let Err(e) = dialog.cancel().await {
                    debug!(error = %e, "CANCEL failed");
                }
            });
        }
    }

    /// The callee leg's list of devices still ringing.
    pub(super) fn refresh_devices(&mut self) {
        self.b_leg.devices = if self.core.phase() == Phase::Ringing {
            self.forks
                .iter()
                .filter(|f| !f.finished && !f.abandoned)
                .map(|f| f.request_uri.clone())
                .collect()
        } else {
            Vec::new()
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(transport: &str, source: &str, contact: &str) -> Registration {
        Registration {
            user_id: "u".into(),
            contact: contact.into(),
            source: source.into(),
            transport: transport.into(),
            expires_at: 0,
            call_id: "c".into(),
            cseq: 1,
            user_agent: None,
        }
    }

    #[test]
    fn a_device_is_rung_where_it_registered_from() {
        let d = device_target(&reg("udp", "127.0.0.1:40000", "sip:201@10.0.0.9:5070"))
            .expect("a usable registration");
        assert_eq!(d.0.request_uri, "sip:201@10.0.0.9:5070");
        assert_eq!(d.0.destination, "127.0.0.1:40000".parse().unwrap());
        assert!(d.0.credential.is_none() && d.0.permit.is_none());
        assert!(device_target(&reg("udp", "not an address", "sip:201@x")).is_none());
    }

    #[test]
    fn auto_answer_is_asked_in_each_form_phones_read() {
        let h: Vec<(String, String)> = auto_answer_headers("pbx.example")
            .into_iter()
            .filter_map(|h| match h {
                Header::Other(n, v) => Some((n, v)),
                _ => None,
            })
            .collect();
        let get = |name: &str| {
            h.iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        assert_eq!(get("Call-Info"), "<sip:pbx.example>;answer-after=0");
        assert!(get("Alert-Info").contains(";info=alert-autoanswer"));
        assert_eq!(get("Answer-Mode"), "Auto");
    }
}
