//! Application calls: a call to a number routed to an application is not rung anywhere; it
//! rings (180) until the application runtime answers it (200 with our SDP), sends early media
//! (183 with SDP) or declines it. The runtime then plays audio to the caller and hears its
//! digits through the events; a leg it does not answer or decline in time is refused 480.

use hookflash_media::audio::Pcm8k;
use hookflash_media::relay::{Leg, PlayOptions, PlaybackEnd};
use hookflash_media::sdp::{self, Direction};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info};

use super::{content_type_sdp, CallActor, Party, Phase, Side, TransferTarget};
use crate::apps::DialEvent;
use crate::control::{CommandError, LegState};
use crate::events::EventKind;
use crate::model::EndCause;
use crate::model::WrongState;
use crate::sip_glue::now_ms;

/// The call's application.
pub(super) struct AppSession {
    pub(super) application_id: String,
    /// The party the application is dialling or connected to (`dial` verb), if any.
    pub(super) dial: Option<AppDial>,
    /// The caller asked by REFER to call someone else (`sip:refer` verb), if it runs.
    pub(super) refer: Option<super::app_refer::AppRefer>,
}

/// A `dial` in progress: its progress reports, and when the party answered.
pub(super) struct AppDial {
    events: mpsc::Sender<DialEvent>,
    answered_at: Option<tokio::time::Instant>,
}

/// Ringback for the application's caller while the dialled party rings: 425 Hz, 1 s on,
/// 4 s off (ETSI).
fn ringback() -> Pcm8k {
    let on = Pcm8k::tone(425.0, Duration::from_secs(1), 0.3);
    let off = Pcm8k::silence(Duration::from_secs(4));
    Pcm8k::new([on.samples(), off.samples()].concat())
}

impl CallActor {
    /// True while the call is an application's.
    pub(super) fn is_app(&self) -> bool {
        self.app.is_some()
    }

    /// Our SDP answer to the caller's offer (PCMU/PCMA and telephone-event as offered) when
    /// the server itself answers the caller (an application, voicemail); the A side's media
    /// is set to it.
    pub(super) fn server_answer_sdp(&mut self) -> Result<String, CommandError> {
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
        match self.core.phase() {
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
        let body = self.server_answer_sdp()?;
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
        self.core.connect(tokio::time::Instant::now());
        self.answered_at = Some(now_ms());
        self.a_leg.state = LegState::Answered;
        self.b_leg.state = LegState::Answered;
        self.b_leg.devices.clear();
        self.apply_forwarding();
        let application = self.app.as_ref().map(|a| a.application_id.as_str());
        info!(application, "application call answered");
        self.publish(EventKind::Answered, None, None);
        Ok(())
    }

    /// Refuses the application's ringing caller with `status`.
    pub(super) fn app_decline(&mut self, status: u16) -> Result<(), CommandError> {
        if !self.is_app() || self.core.phase() != Phase::Ringing {
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

    /// Dials `target` into the application's answered call (the empty side B); see
    /// `Engine::app_dial`. The transfer machinery does the dialling: the target takes side B
    /// when it answers.
    pub(super) fn app_dial(
        &mut self,
        target: TransferTarget,
        caller_id: Option<String>,
        timeout: Duration,
        events: mpsc::Sender<DialEvent>,
    ) -> Result<(), CommandError> {
        let Some(app) = self.app.as_ref() else {
            return Err(self.wrong_state());
        };
        if self.core.phase() != Phase::Connected {
            return Err(self.wrong_state());
        }
        if app.dial.is_some() || self.parties[Side::B.index()].is_some() {
            return Err(CommandError::WrongState {
                state: WrongState::Transferring,
            });
        }
        self.bridge.stop_play(Leg::A);
        let b_leg = self.b_leg.id.clone();
        self.transfer_caller_id = caller_id;
        let started = self.start_transfer(Some(b_leg), target, false);
        self.transfer_caller_id = None;
        started?;
        if let Some(t) = self.transfer.as_mut() {
            t.transferor_gone = true;
            self.core.set_deadline(
                crate::call_core::Deadline::TransferRing,
                tokio::time::Instant::now() + timeout,
            );
        }
        // The caller hears ringback, not music on hold.
        self.bridge
            .play(Leg::A, ringback(), PlayOptions { looped: true });
        if let Some(app) = self.app.as_mut() {
            app.dial = Some(AppDial {
                events,
                answered_at: None,
            });
        }
        info!(timeout_s = timeout.as_secs(), "application dials");
        Ok(())
    }

    /// Hangs up the party the application dialled (or stops it ringing).
    pub(super) async fn app_hangup_dialled(&mut self) -> Result<(), CommandError> {
        if !self.is_app() {
            return Err(self.wrong_state());
        }
        if self.transfer.is_some() {
            self.cancel_transfer_forks();
            return Ok(());
        }
        if let Some(party) = self.parties[Side::B.index()].take() {
            if let Err(e) = party.dialog.bye().await {
                debug!(error = %e, "BYE to the dialled party failed");
            }
            self.app_dialled_left(EndCause::Api);
        }
        Ok(())
    }

    /// Sends a progress report to the application's running dial, if any.
    pub(super) fn app_dial_event(&mut self, event: DialEvent) {
        if let Some(dial) = self.app.as_ref().and_then(|a| a.dial.as_ref()) {
            let _ = dial.events.try_send(event);
        }
    }

    /// The dialled party answered and now sits on side B.
    pub(super) fn app_dial_answered(&mut self) {
        let leg_id = self.b_leg.id.clone();
        if let Some(dial) = self.app.as_mut().and_then(|a| a.dial.as_mut()) {
            dial.answered_at = Some(tokio::time::Instant::now());
            let _ = dial.events.try_send(DialEvent::Answered { leg_id });
        }
    }

    /// The dialled party was not reached: true when this was an application's dial (the
    /// caller stays with the application, the call goes on).
    pub(super) fn app_dial_failed(&mut self, status: u16) -> bool {
        let Some(dial) = self.app.as_mut().and_then(|a| a.dial.take()) else {
            return false;
        };
        let _ = dial.events.try_send(DialEvent::Failed { status });
        self.bridge.stop_play(Leg::A);
        self.apply_forwarding();
        info!(
            status,
            "application dial failed; the caller is back with the application"
        );
        true
    }

    /// The party on side B left an application's call: the caller stays with the
    /// application. False when this is not an application's call.
    pub(super) fn app_dialled_left(&mut self, cause: EndCause) -> bool {
        if !self.is_app() {
            return false;
        }
        self.parties[Side::B.index()] = None;
        self.core
            .set_session_timer(Side::B, None, false, tokio::time::Instant::now());
        self.retire_leg(Side::B, cause);
        self.b_leg.state = LegState::Disconnected;
        let dial = self.app.as_mut().and_then(|a| a.dial.take());
        if let Some(dial) = dial {
            let duration_secs = dial.answered_at.map(|t| t.elapsed().as_secs()).unwrap_or(0);
            let _ = dial.events.try_send(DialEvent::Completed { duration_secs });
        }
        self.apply_forwarding();
        info!("the dialled party left; the caller is back with the application");
        true
    }
}
