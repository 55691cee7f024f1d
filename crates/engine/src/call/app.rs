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

use super::{content_type_sdp, CallActor, DialGroup, Party, Phase, Side, TransferTarget};
use crate::apps::DialEvent;
use crate::control::{CommandError, LegInfo, LegState};
use crate::events::EventKind;
use crate::model::EndCause;
use crate::model::WrongState;
use crate::model::{LegDirection, LegRole};
use crate::sip_glue::now_ms;

/// The call's application.
pub(super) struct AppSession {
    pub(super) application_id: String,
    /// The party the application is dialling or connected to (`dial` verb), if any.
    pub(super) dial: Option<AppDial>,
    /// The caller asked by REFER to call someone else (`sip:refer` verb), if it runs.
    pub(super) refer: Option<super::app_refer::AppRefer>,
}

/// A `dial` in progress: its progress reports, its targets' child legs, and when the party
/// answered.
pub(super) struct AppDial {
    events: mpsc::Sender<DialEvent>,
    answered_at: Option<tokio::time::Instant>,
    groups: Vec<DialGroup>,
    /// Which groups have reported ringing.
    rung: Vec<bool>,
    /// `answerOnBridge` with the caller still unanswered: it is answered when a target does.
    answer_on_bridge: bool,
}

/// What the `dial` verb asks of the actor (see `Engine::app_dial_targets`).
pub(super) struct DialOrder {
    pub(super) target: TransferTarget,
    pub(super) groups: Vec<DialGroup>,
    pub(super) caller_id: Option<String>,
    pub(super) timeout: Duration,
    pub(super) answer_on_bridge: bool,
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

    /// The server answers the ringing caller itself (an application, voicemail, a reply):
    /// 200 with `body` (our SDP from [`Self::server_answer_sdp`]), the caller's dialog becomes
    /// side A's party and the call is connected. What side B is now is the caller's to say.
    pub(super) fn accept_caller(
        &mut self,
        a: hookflash_sip::dialog::InviteLeg,
        body: String,
    ) -> Result<(), CommandError> {
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
        self.b_leg.devices.clear();
        Ok(())
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
        self.accept_caller(a, body)?;
        self.b_leg.state = LegState::Answered;
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

    /// Dials the order's targets into the application's call (the empty side B); see
    /// `Engine::app_dial_targets`. The transfer machinery does the dialling: the target that
    /// answers takes side B. The call must be answered, unless `answer_on_bridge`: then a
    /// ringing caller stays ringing (hearing its own ringback, or ours if early media was
    /// sent) and is answered when a target answers.
    pub(super) fn app_dial(
        &mut self,
        order: DialOrder,
        events: mpsc::Sender<DialEvent>,
    ) -> Result<(), CommandError> {
        let Some(app) = self.app.as_ref() else {
            return Err(self.wrong_state());
        };
        let unanswered = match self.core.phase() {
            Phase::Connected => false,
            Phase::Ringing if order.answer_on_bridge => true,
            Phase::Ringing | Phase::Ended => return Err(self.wrong_state()),
        };
        if app.dial.is_some() || self.parties[Side::B.index()].is_some() {
            return Err(CommandError::WrongState {
                state: WrongState::Transferring,
            });
        }
        self.bridge.stop_play(Leg::A);
        let b_leg = self.b_leg.id.clone();
        self.core.transfer.set_caller_id(order.caller_id);
        let started = self.start_transfer(Some(b_leg), order.target, false, unanswered);
        self.core.transfer.set_caller_id(None);
        started?;
        let now = tokio::time::Instant::now();
        self.core.transfer.mark_transferor_gone();
        self.core.transfer.ring_until(now + order.timeout);
        if unanswered {
            // The caller's own ring timeout must not cut the dial short; it starts over if
            // the dial fails and the application goes on.
            self.core.ring(now, order.timeout + Duration::from_secs(5));
        }
        // The caller hears ringback, not music on hold (a caller that has no media from us yet
        // hears its phone's own ringback).
        if unanswered && !self.sent_early_media {
            self.bridge.stop_play(Leg::A);
        } else {
            self.bridge
                .play(Leg::A, ringback(), PlayOptions { looped: true });
        }
        let rung = vec![false; order.groups.len()];
        if let Some(app) = self.app.as_mut() {
            app.dial = Some(AppDial {
                events,
                answered_at: None,
                groups: order.groups,
                rung,
                answer_on_bridge: unanswered,
            });
        }
        self.sync_registry();
        info!(
            timeout_s = order.timeout.as_secs(),
            answer_on_bridge = unanswered,
            "application dials"
        );
        Ok(())
    }

    /// True while an `answerOnBridge` dial runs for a caller not answered yet.
    pub(super) fn app_dial_bridges_on_answer(&self) -> bool {
        self.core.phase() == Phase::Ringing
            && self
                .app
                .as_ref()
                .and_then(|a| a.dial.as_ref())
                .is_some_and(|d| d.answer_on_bridge)
    }

    /// The group (target) of the dial's fork `index`.
    fn app_dial_group(&self, index: usize) -> Option<usize> {
        let dial = self.app.as_ref()?.dial.as_ref()?;
        let mut first = 0;
        for (g, group) in dial.groups.iter().enumerate() {
            if index < first + group.forks {
                return Some(g);
            }
            first += group.forks;
        }
        None
    }

    /// The child leg (id, target) of the target the dial's fork `index` rings.
    pub(super) fn app_dial_child(&self, index: usize) -> Option<crate::apps::DialChild> {
        let g = self.app_dial_group(index)?;
        let dial = self.app.as_ref()?.dial.as_ref()?;
        dial.groups.get(g).map(|group| group.child.clone())
    }

    /// A dial fork rings: its target's child reports ringing (once).
    pub(super) fn app_dial_fork_ringing(&mut self, index: usize) {
        let Some(g) = self.app_dial_group(index) else {
            return;
        };
        let Some(dial) = self.app.as_mut().and_then(|a| a.dial.as_mut()) else {
            return;
        };
        if dial.rung.get(g).copied().unwrap_or(true) || dial.answered_at.is_some() {
            return;
        }
        if let Some(r) = dial.rung.get_mut(g) {
            *r = true;
        }
        if let Some(group) = dial.groups.get(g) {
            let _ = dial.events.try_send(DialEvent::Ringing {
                leg_id: group.child.leg_id.clone(),
            });
        }
        self.sync_registry();
    }

    /// The parties an application's dial rings (not answered yet), as legs: jambonz lists
    /// them as child calls while they ring.
    pub(super) fn dialling_legs(&self) -> Vec<LegInfo> {
        let Some(dial) = self.app.as_ref().and_then(|a| a.dial.as_ref()) else {
            return Vec::new();
        };
        if dial.answered_at.is_some() || !self.core.transfer.is_active() {
            return Vec::new();
        }
        dial.groups
            .iter()
            .zip(&dial.rung)
            .map(|(group, rung)| LegInfo {
                id: group.child.leg_id.clone(),
                role: LegRole::Callee,
                direction: LegDirection::Out,
                state: if *rung {
                    LegState::Ringing
                } else {
                    LegState::Proceeding
                },
                number: group.child.target.clone(),
                owner_user_id: None,
                owner_extension: None,
                muted: false,
                held: false,
                recording: false,
                devices: Vec::new(),
                voicemail: false,
            })
            .collect()
    }

    /// An `answerOnBridge` dial's target answered with `codecs`: the ringing caller is answered
    /// now, with the target's codec where the caller offered it (so the bridge need not
    /// transcode).
    pub(super) fn app_answer_on_bridge(
        &mut self,
        codecs: &[hookflash_media::sdp::Codec],
    ) -> Result<(), CommandError> {
        let shared: Vec<_> = self
            .a_media
            .codecs
            .iter()
            .filter(|c| codecs.iter().any(|t| t.same_format(c)))
            .cloned()
            .collect();
        if shared.iter().any(|c| !c.is_telephone_event()) {
            self.a_media.codecs = shared;
        }
        self.app_answer(false)
    }

    /// Hangs up the party the application dialled (or stops it ringing).
    pub(super) fn app_hangup_dialled(&mut self) -> Result<(), CommandError> {
        if !self.is_app() {
            return Err(self.wrong_state());
        }
        if self.core.transfer.is_active() {
            self.cancel_transfer_forks();
            return Ok(());
        }
        if let Some(party) = self.parties[Side::B.index()].take() {
            // The BYE leaves from its own task: the actor never waits for the phone's answer.
            super::send_bye(party.dialog, Vec::new(), "the dialled party");
            self.app_dialled_left(EndCause::Api);
        }
        Ok(())
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
        if self.core.phase() == Phase::Ringing {
            // answerOnBridge: the caller still rings; the application has the ring timeout
            // again to answer or decline it.
            let ring_timeout = self
                .custom_ring_timeout
                .unwrap_or(self.engine.inner.cfg.ring_timeout);
            self.core.ring(tokio::time::Instant::now(), ring_timeout);
        }
        self.sync_registry();
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
        // Listed as gone before its conference (if any) hears of it: an application on that
        // leg then finds nothing left to hang up.
        self.sync_registry();
        self.conf_party_gone(Side::B);
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
