//! Operations on a call that still rings (the callee has not answered): forward it to another
//! destination, reject it (every device stops ringing; the caller hears busy), ignore it
//! on one device (the others keep ringing), or reply to the caller with a message (the server
//! answers it, plays the message, and ends the call).

use hookflash_media::audio::Pcm8k;
use hookflash_media::relay::{Leg, PlayOptions};
use tracing::{debug, info};

use super::{CallActor, CallCommand, Phase, Side, TransferTarget};
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
}

impl CallActor {
    pub(super) async fn on_ringing_action(
        &mut self,
        action: RingingAction,
    ) -> Result<CallInfo, CommandError> {
        let still_calling_caller = self.originated.as_ref().is_some_and(|o| !o.caller_answered);
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
        if self.is_app() || self.originated.is_some() {
            return Err(self.wrong_state());
        }
        self.abandon_all_forks();
        let body = self.server_answer_sdp()?;
        self.accept_caller(a, body)?;
        // The callee never answered: its leg is over.
        self.b_leg.state = LegState::Disconnected;
        self.replying = true;
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
