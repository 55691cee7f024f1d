//! Application calls: a call to a number routed to an application is not rung anywhere; it
//! rings (180) until the application runtime answers it (200 with our SDP), sends early media
//! (183 with SDP) or declines it. The runtime then plays audio to the caller and hears its
//! digits through the events; a leg it does not answer or decline in time is refused 480.

use hookflash_media::audio::Pcm8k;
use hookflash_media::relay::{Leg, PlayOptions, PlaybackEnd};
use hookflash_media::sdp::{self, Direction};
use tokio::sync::oneshot;
use tracing::{debug, info};

use super::{content_type_sdp, CallActor, Party, Phase, Side};
use crate::control::{CommandError, LegState};
use crate::events::EventKind;
use crate::model::EndCause;
use crate::sip_glue::now_ms;

/// The call's application.
pub(super) struct AppSession {
    pub(super) application_id: String,
}

impl CallActor {
    /// True while the call is an application's.
    pub(super) fn is_app(&self) -> bool {
        self.app.is_some()
    }

    /// Our SDP answer to the caller's offer (PCMU/PCMA and telephone-event as offered).
    fn app_answer_sdp(&mut self) -> Result<String, CommandError> {
        let codecs =
            sdp::answer_codecs(&self.a_media.codecs, &sdp::default_codecs()).map_err(|e| {
                CommandError::Failed {
                    status: 488,
                    reason: e.to_string(),
                }
            })?;
        let body = sdp::build_offer(
            self.bridge.local_addr(Leg::A),
            &self.a_media.origin,
            &codecs,
            Direction::SendRecv,
        )
        .to_string();
        self.set_send_codec(Side::A, &codecs);
        self.set_dtmf_pt(Side::A, &codecs);
        self.a_media.codecs = codecs;
        Ok(body)
    }

    /// Answers the application's caller (`early`: 183 with SDP instead, the call keeps
    /// ringing). Answering an answered call is Ok.
    pub(super) fn app_answer(&mut self, early: bool) -> Result<(), CommandError> {
        if !self.is_app() {
            return Err(self.wrong_state());
        }
        match self.phase {
            Phase::Connected => return Ok(()),
            Phase::Ended => return Err(self.wrong_state()),
            Phase::Ringing => {}
        }
        if early && self.sent_early_media {
            return Ok(());
        }
        let Some(a) = self.a.clone() else {
            return Err(self.wrong_state());
        };
        let body = self.app_answer_sdp()?;
        if early {
            a.ringing(Some(vec![content_type_sdp()]), Some(body.into_bytes()))
                .map_err(|e| CommandError::Failed {
                    status: 500,
                    reason: e.to_string(),
                })?;
            self.sent_early_media = true;
            self.mark_ringing();
            info!("application call: early media");
            return Ok(());
        }
        a.accept(
            Some(self.with_session_headers(Side::A, vec![content_type_sdp()])),
            Some(body.into_bytes()),
        )
        .map_err(|e| CommandError::Failed {
            status: 500,
            reason: e.to_string(),
        })?;
        self.parties = [
            Some(Party {
                dialog: a,
                call_id: self.a_call_id.clone(),
            }),
            None,
        ];
        self.phase = Phase::Connected;
        self.answered_at = Some(now_ms());
        self.a_leg.state = LegState::Answered;
        self.b_leg.state = LegState::Answered;
        self.b_leg.devices.clear();
        self.session_refreshed();
        self.apply_forwarding();
        let application = self.app.as_ref().map(|a| a.application_id.as_str());
        info!(application, "application call answered");
        self.publish(EventKind::Answered, None, None);
        Ok(())
    }

    /// Refuses the application's ringing caller with `status`.
    pub(super) fn app_decline(&mut self, status: u16) -> Result<(), CommandError> {
        if !self.is_app() || self.phase != Phase::Ringing {
            return Err(self.wrong_state());
        }
        if !(400..=699).contains(&status) {
            return Err(CommandError::Invalid(format!(
                "decline status {status} is not 400-699"
            )));
        }
        let cause = match status {
            486 | 600 => EndCause::Busy,
            404 | 604 => EndCause::NotFound,
            480 | 408 => EndCause::NoAnswer,
            _ => EndCause::Rejected,
        };
        info!(status, "application declined the call");
        self.fail_caller(status, cause);
        Ok(())
    }

    /// Plays to the application's caller (answering first, or sending early media); the
    /// receiver gets how the playback ended.
    pub(super) fn app_play(
        &mut self,
        pcm: Pcm8k,
        early: bool,
    ) -> Result<oneshot::Receiver<PlaybackEnd>, CommandError> {
        if !self.is_app() {
            return Err(self.wrong_state());
        }
        self.app_answer(early)?;
        let id = self.bridge.play(Leg::A, pcm, PlayOptions { looped: false });
        let done = self.bridge.playback_done(id);
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            let end = done.await.unwrap_or(PlaybackEnd::BridgeStopped);
            let _ = tx.send(end);
        });
        debug!("application playback started");
        Ok(rx)
    }

    /// Stops what plays to the application's caller.
    pub(super) fn app_stop_play(&mut self) -> Result<(), CommandError> {
        if !self.is_app() {
            return Err(self.wrong_state());
        }
        self.bridge.stop_play(Leg::A);
        Ok(())
    }
}
