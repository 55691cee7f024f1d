//! Blind transfer inside the call actor. The party that stays (the *kept* party) hears music on
//! hold while the server dials the target on a fresh RTP socket pair; when the target answers,
//! that pair replaces the transferor's in the bridge, the transferor gets BYE, and the kept
//! party hears the target. If the target fails, the kept party is put back to the transferor:
//! a transfer never drops the caller.
//!
//! Which attempt runs, how far its target got and what each result means are decided by the
//! call core's transfer machine (`call_core/transfer.rs`); this file holds the attempt's
//! handles (dialogs, sockets, bridge, REFER progress) and executes those decisions.

use crate::call_core::transfer::{
    AfterFailure, Completed, Failed, ForkDecision, PartyGone, TransferRefusal,
};
use crate::call_core::LegSession;

use hookflash_media::ports::RtpSocketPair;
use hookflash_media::relay::PlayOptions;
use hookflash_media::sdp::{self, Codec, Direction, OriginState};
use hookflash_sip::dialog::DialogEvent;
use hookflash_sip::dialog::{InviteOutcome, LegId};
use hookflash_sip::msg::Response;
use hookflash_store::LegRecord;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use hookflash_sip::dialog::InDialogRequest;
use hookflash_sip::dialog::InviteLeg;
use hookflash_sip::msg::{Header, Request, StatusCode};

use crate::dialing::Refusal;
use crate::model::{CallDirection, EndCause, LegDirection, RecordRole, WrongState};
use crate::routing::Origin;
use crate::sip_glue::{addr_spec, header_value};
use hookflash_config::OutsideRefer;

use std::sync::Arc;

use hookflash_media::relay::{Bridge, BridgeHandle, BridgeOptions, Leg};

use super::{
    answer_stray, cancel_other_forks, cause_for_status, invite_outcome, sdp_of_response, CallActor,
    Fork, ForkKey, ForkTarget, MediaSide, Party, Phase, Side,
};
use crate::control::{CallInfo, CommandError, LegInfo, LegState};
use crate::events::{EventDetail, EventKind};

/// A transfer target, already resolved to the devices (or trunk) to ring.
#[derive(Debug, Clone)]
pub struct TransferTarget {
    /// What the target is called in events and the call's legs (extension or number).
    pub(crate) label: String,
    /// The account user the target belongs to, if any: (user id, extension).
    pub(crate) owner: Option<(String, String)>,
    pub(crate) forks: Vec<ForkTarget>,
}

/// The handles of the transfer in progress (its state is `core.transfer`).
pub(super) struct Transfer {
    pub(super) target: TransferTarget,
    /// The target's socket pair until it answers (then it moves into the bridge).
    pub(super) pair: Option<RtpSocketPair>,
    pub(super) origin: OriginState,
    pub(super) forks: Vec<Fork>,
    /// Set when a phone's REFER asked for the transfer: its NOTIFY progress reports.
    pub(super) referrer: Option<mpsc::UnboundedSender<ReferProgress>>,
    /// Attended: the transferor talks to the target first, in a consultation bridge
    /// (A: the transferor's new sockets, B: the target's), until complete or cancel.
    pub(super) consult: Option<Arc<BridgeHandle>>,
    /// Attended, once the target answered: its dialog and codecs.
    pub(super) target_party: Option<Party>,
    pub(super) target_codecs: Vec<Codec>,
    /// The complete command, answered once the target has answered its move.
    pub(super) complete_reply: Option<crate::control::Reply<CallInfo>>,
    /// Once the target answered: the session timer its 2xx set up, whether it takes
    /// UPDATE, and when it answered (its leg's timer runs once it takes the transferor's
    /// place).
    pub(super) target_session: Option<TargetSession>,
}

/// The session timer (RFC 4028) a transfer's target answered with.
#[derive(Debug, Clone, Copy)]
pub(super) struct TargetSession {
    timer: Option<crate::session_timer::SessionTimer>,
    allows_update: bool,
    answered: tokio::time::Instant,
}

/// The transfer's I/O handles (its state: `core.transfer`): the attempt in progress, and the
/// forks of finished attempts (late answers are released, the call record lists them, the
/// dialogs are removed at the end).
#[derive(Default)]
pub(super) struct TransferHandles {
    /// Boxed: a transfer is rare, and its state would otherwise sit in every call.
    pub(super) current: Option<Box<Transfer>>,
    pub(super) old_forks: Vec<Fork>,
}

/// One NOTIFY (message/sipfrag) to a phone whose REFER we carry out (RFC 3515 §2.4.5).
#[derive(Debug, Clone, Copy)]
pub(super) struct ReferProgress {
    pub(super) status: u16,
    /// The last report: `Subscription-State: terminated`.
    pub(super) last: bool,
    /// After the last report, release the referring phone's dialog (transfer done).
    pub(super) then_bye: bool,
}

/// Sends a REFER's progress reports in order on the referring phone's dialog.
pub(super) fn spawn_refer_notifier(dialog: InviteLeg) -> mpsc::UnboundedSender<ReferProgress> {
    let (tx, mut rx) = mpsc::unbounded_channel::<ReferProgress>();
    tokio::spawn(async move {
        while let Some(p) = rx.recv().await {
            let code = StatusCode::from(p.status);
            let frag = format!("SIP/2.0 {} {}\r\n", p.status, reason_text(p.status));
            let state = if p.last {
                "terminated;reason=noresource"
            } else {
                "active;expires=60"
            };
            let headers = vec![
                Header::Event("refer".into()),
                Header::SubscriptionState(state.into()),
                Header::ContentType("message/sipfrag;version=2.0".into()),
            ];
            if let Err(e) = dialog.notify(Some(headers), Some(frag.into_bytes())).await {
                debug!(error = %e, status = code.code(), "REFER progress NOTIFY failed");
            }
            if p.last {
                if p.then_bye {
                    if let Err(e) = dialog.bye().await {
                        debug!(error = %e, "BYE to the referring phone failed");
                    }
                }
                break;
            }
        }
    });
    tx
}

fn reason_text(status: u16) -> &'static str {
    match status {
        100 => "Trying",
        180 => "Ringing",
        183 => "Session Progress",
        200 => "OK",
        404 => "Not Found",
        408 => "Request Timeout",
        480 => "Temporarily Unavailable",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        503 => "Service Unavailable",
        603 => "Decline",
        _ => "Failed",
    }
}

/// A leg that left the call before it ended, kept for the call record.
pub(super) type RetiredLeg = LegRecord;

impl CallActor {
    /// The side that transfers when the request does not say: the side of the account's user
    /// who received the call (B), or the caller for outbound calls.
    fn default_transferor(&self) -> Side {
        match self.direction {
            CallDirection::Outbound => Side::A,
            CallDirection::Inbound | CallDirection::Internal => Side::B,
        }
    }

    pub(super) fn start_transfer(
        &mut self,
        transferor: Option<String>,
        target: TransferTarget,
        attended: bool,
        // An application's `answerOnBridge` dial for a caller not answered yet.
        caller_ringing: bool,
    ) -> Result<CallInfo, CommandError> {
        match self
            .core
            .transfer
            .check_start(self.core.phase(), caller_ringing, attended)
        {
            Ok(()) => {}
            Err(TransferRefusal::Phase) => return Err(self.wrong_state()),
            Err(TransferRefusal::Transferring) => {
                return Err(CommandError::WrongState {
                    state: WrongState::Transferring,
                })
            }
        }
        if self.reinvite_in_progress() {
            return Err(CommandError::WrongState {
                state: WrongState::Pending,
            });
        }
        let transferor = match transferor {
            Some(id) => self.side_of_leg(&id).ok_or(CommandError::NotFound)?,
            None => self.default_transferor(),
        };
        let keep = transferor.other();
        let allocate = || {
            self.engine
                .inner
                .ports
                .allocate()
                .map_err(|e| CommandError::Failed {
                    status: 503,
                    reason: format!("no RTP port for the transfer target: {e}"),
                })
        };
        // Blind: the target's sockets wait here and replace the transferor's on answer.
        // Attended: they start in a consultation bridge with new sockets for the transferor.
        let (pair, consult, local) = if attended {
            let (q, p) = (allocate()?, allocate()?);
            let bridge = Arc::new(Bridge::start(
                q,
                p,
                BridgeOptions {
                    inactivity_timeout: self.engine.inner.cfg.rtp_inactivity,
                },
                self.engine.inner.media_stats.clone(),
            ));
            let local = bridge.local_addr(Leg::B);
            (None, Some(bridge), local)
        } else {
            let p = allocate()?;
            let local = p.local_rtp;
            (Some(p), None, local)
        };
        // Offer the target what the kept party speaks, so the bridge never has to transcode.
        let offered: Vec<Codec> = self.media_of(keep).codecs.clone();
        let origin = OriginState::new();
        let offer = sdp::build_offer(local, &origin, &offered, Direction::SendRecv).to_string();
        let generation = self.core.transfer.next_generation();
        let kept_number = self
            .core
            .transfer
            .take_caller_id()
            .unwrap_or_else(|| self.leg(keep).number.clone());
        let sent = self.invite_targets(&target.forks, &kept_number, None, &offer, |index| {
            ForkKey::Transfer { generation, index }
        });
        if sent.is_empty() {
            if let Some(bridge) = &consult {
                bridge.stop();
            }
            return Err(CommandError::Failed {
                status: 503,
                reason: "the transfer target could not be dialled".into(),
            });
        }
        let forks: Vec<Fork> = sent
            .into_iter()
            .map(|(index, dialog, request_uri)| Fork {
                key: ForkKey::Transfer { generation, index },
                call_id: dialog.id().call_id.clone(),
                dialog,
                request_uri,
                status: None,
                finished: false,
                abandoned: false,
            })
            .collect();
        // The kept party hears music while the target rings; the transferor hears nothing.
        // (A caller not answered yet hears nothing from us.)
        if !caller_ringing {
            let moh = self.engine.inner.music_on_hold.clone();
            self.bridge
                .play(keep.leg(), moh, PlayOptions { looped: true });
        }
        info!(transferor = ?transferor, target = %target.label, attended, "transfer started");
        let label = target.label.clone();
        self.core.transfer.start(
            tokio::time::Instant::now(),
            generation,
            transferor,
            label.clone(),
            attended,
            forks.len(),
            self.engine.inner.cfg.ring_timeout,
        );
        self.xfer.current = Some(Box::new(Transfer {
            target,
            pair,
            origin,
            forks,
            referrer: None,
            consult,
            target_party: None,
            target_codecs: Vec::new(),
            complete_reply: None,
            target_session: None,
        }));
        self.apply_forwarding();
        self.publish_detail(
            EventKind::TransferStarted,
            Some(transferor),
            EventDetail {
                target: Some(label),
                ..Default::default()
            },
        );
        Ok(self.info())
    }

    /// A REFER from the phone on `side`: blind transfer of the other party to the Refer-To
    /// target, carried out by us (we never forward REFER), with NOTIFY progress to the phone.
    pub(super) async fn on_refer(&mut self, side: Side, req: Request, handle: InDialogRequest) {
        let refer_to = header_value(&req, "Refer-To").or_else(|| header_value(&req, "r"));
        let Some(refer_to) = refer_to else {
            let _ = handle.reply(StatusCode::BadRequest).await;
            return;
        };
        let uri = addr_spec(&refer_to).to_string();
        if uri.to_ascii_lowercase().contains("replaces=") {
            self.on_refer_replaces(side, &uri, handle).await;
            return;
        }
        if self.core.transfer.is_active() {
            let _ = handle.reply(StatusCode::RequestPending).await;
            return;
        }
        let Some(dialled) = crate::control::transfer_target_user(&uri) else {
            info!(%uri, "REFER to an unusable target");
            let _ = handle.reply(StatusCode::BadRequest).await;
            return;
        };
        // Who is asking decides what may be dialled: a user of the account with that user's
        // dial rules; anyone else (a caller from the trunk, a number we dialled out) is an
        // outside party that must never make the server dial out on the account's trunk.
        let origin = match self.leg(side).owner_user_id.clone() {
            Some(user_id) => Origin::User {
                account_id: self.account_id.clone(),
                user_id,
            },
            None => match self.engine.inner.cfg.outside_refer {
                OutsideRefer::Extensions => Origin::Outside {
                    account_id: self.account_id.clone(),
                },
                OutsideRefer::Deny => {
                    let refusal = Refusal::OutsideRefer;
                    self.engine.inner.metrics.refused(refusal.reason());
                    warn!(leg = ?side, %dialled, "REFER refused: {refusal}");
                    let _ = handle.reply(StatusCode::Forbidden).await;
                    return;
                }
            },
        };
        let outside = matches!(origin, Origin::Outside { .. });
        let destination =
            match super::resolve_destination(&self.engine, &self.account_id, &origin, &dialled)
                .await
            {
                Ok(d) => d,
                Err(e) => {
                    let status = match e.status {
                        // An outside party asking for anything beyond the account: refused.
                        404 if outside => {
                            let refusal = Refusal::OutsideRefer;
                            self.engine.inner.metrics.refused(refusal.reason());
                            warn!(leg = ?side, %dialled, "REFER refused: {refusal}");
                            403
                        }
                        482 => 403,
                        other => other,
                    };
                    info!(%dialled, status, "REFER target cannot be reached");
                    let _ = handle.reply(StatusCode::from(status)).await;
                    return;
                }
            };
        let target = TransferTarget {
            label: destination.label,
            owner: destination.owner,
            forks: destination.targets,
        };
        let leg_id = self.leg(side).id.clone();
        let Some(dialog) = self.dialog_of(side) else {
            let _ = handle.reply(StatusCode::ServerInternalError).await;
            return;
        };
        match self.start_transfer(Some(leg_id), target, false, false) {
            Ok(_) => {
                let _ = handle.reply(StatusCode::Accepted).await;
                let referrer = spawn_refer_notifier(dialog);
                let _ = referrer.send(ReferProgress {
                    status: 100,
                    last: false,
                    then_bye: false,
                });
                self.core.transfer.set_referred();
                if let Some(t) = self.xfer.current.as_mut() {
                    t.referrer = Some(referrer);
                }
                info!(leg = ?side, %dialled, "REFER accepted: blind transfer");
            }
            Err(e) => {
                warn!(error = %e, "REFER could not start a transfer");
                let _ = handle.reply(StatusCode::ServiceUnavailable).await;
            }
        }
    }

    /// CANCELs every transfer fork still ringing; their results end the attempt.
    pub(super) fn cancel_transfer_forks(&mut self) {
        self.core.transfer.cancel();
        let Some(t) = self.xfer.current.as_mut() else {
            return;
        };
        for fork in t.forks.iter().filter(|f| !f.finished) {
            let dialog = fork.dialog.clone();
            tokio::spawn(async move {
                if let Err(e) = dialog.cancel().await {
                    debug!(error = %e, "CANCEL to the transfer target failed");
                }
            });
        }
    }

    pub(super) fn is_transfer_dialog(&self, call_id: &str) -> bool {
        self.xfer
            .current
            .as_ref()
            .is_some_and(|t| t.forks.iter().any(|f| f.call_id == call_id))
            || self.xfer.old_forks.iter().any(|f| f.call_id == call_id)
    }

    /// Provisional responses and requests on a transfer target's dialog.
    pub(super) async fn on_transfer_state(&mut self, state: DialogEvent) {
        match state {
            DialogEvent::Early(id, _) => {
                let fork = self
                    .xfer
                    .current
                    .as_ref()
                    .and_then(|t| t.forks.iter().find(|f| f.call_id == id.call_id))
                    .map(|f| f.key);
                if let Some(ForkKey::Transfer { index, .. }) = fork {
                    self.app_dial_fork_ringing(index);
                }
                let Some(ringing) = self.core.transfer.fork_early(tokio::time::Instant::now())
                else {
                    return;
                };
                let referrer = self.xfer.current.as_ref().and_then(|t| t.referrer.as_ref());
                if let (true, Some(referrer)) = (ringing.notify_referrer, referrer) {
                    let _ = referrer.send(ReferProgress {
                        status: 180,
                        last: false,
                        then_bye: false,
                    });
                }
                info!(
                    target = %ringing.label,
                    ms = ringing.waited.as_secs_f64() * 1000.0,
                    "transfer target ringing"
                );
                self.publish_detail(
                    EventKind::TransferRinging,
                    Some(ringing.transferor),
                    EventDetail {
                        target: Some(ringing.label),
                        ..Default::default()
                    },
                );
            }
            DialogEvent::Terminated(id, _) => self.on_consult_target_gone(&id.call_id).await,
            other => answer_stray(other).await,
        }
    }

    /// A side hung up while a transfer runs. Returns true when the call goes on: the
    /// transferor leaving a blind transfer does not stop it.
    pub(super) async fn on_party_gone_during_transfer(&mut self, side: Side) -> bool {
        match self.core.transfer.party_gone(side) {
            PartyGone::NotTransferring => false,
            PartyGone::CompleteNow { .. } => {
                self.transferor_gone_complete(side).await;
                true
            }
            PartyGone::TransferorLeftCompleting => {
                self.leg_mut(side).state = LegState::Disconnected;
                info!("transferor hung up while the target is moved in: the move decides");
                true
            }
            PartyGone::KeptPartyLeftConsulting => {
                self.kept_party_gone_consulting();
                false
            }
            PartyGone::TransferorLeft => {
                self.leg_mut(side).state = LegState::Disconnected;
                info!("transferor hung up; the transfer goes on");
                true
            }
            PartyGone::KeptPartyLeft => {
                // There is nobody to transfer.
                self.cancel_transfer_forks();
                false
            }
        }
    }

    pub(super) async fn on_transfer_result(
        &mut self,
        generation: u32,
        index: usize,
        result: Option<InviteOutcome>,
    ) {
        let (response, status) = invite_outcome(result, "transfer INVITE failed");
        let live = self.core.phase() == Phase::Connected || self.app_dial_bridges_on_answer();
        let decision = self
            .core
            .transfer
            .fork_result(generation, index, status, live);
        if let ForkDecision::Stale { release } = decision {
            if release {
                self.release_late_answer(ForkKey::Transfer { generation, index });
            }
            return;
        }
        // The fork's own record (for the call record and CANCEL).
        let Some(fork) = self
            .xfer
            .current
            .as_mut()
            .and_then(|t| t.forks.get_mut(index))
        else {
            return;
        };
        fork.finished = true;
        fork.status = Some(status);
        let dialog = fork.dialog.clone();
        match decision {
            ForkDecision::Stale { .. } | ForkDecision::Wait => {}
            ForkDecision::ReleaseExtra => {
                tokio::spawn(async move {
                    let _ = dialog.bye().await;
                });
            }
            ForkDecision::Answered { attended } => match response {
                Some(resp) if attended => {
                    self.note_target_session(&resp);
                    self.consult_answered(index, resp).await
                }
                Some(resp) => {
                    self.note_target_session(&resp);
                    self.complete_transfer(index, resp).await
                }
                None => self.fail_transfer(500).await,
            },
            ForkDecision::Failed { status } => self.fail_transfer(status).await,
        }
    }

    /// The target answered with `resp`: the session timer its leg will run.
    fn note_target_session(&mut self, resp: &Response) {
        let (timer, allows_update) = self.callee_session(resp);
        if let Some(t) = self.xfer.current.as_mut() {
            t.target_session = Some(TargetSession {
                timer,
                allows_update,
                answered: tokio::time::Instant::now(),
            });
        }
    }

    /// The target answered: it takes the transferor's place in the bridge.
    async fn complete_transfer(&mut self, index: usize, resp: Response) {
        let Some(mut t) = self.xfer.current.take() else {
            return;
        };
        let Some(done) = self.core.transfer.complete() else {
            return;
        };
        cancel_other_forks(&t.forks, index);
        let answer = sdp_of_response(&resp).filter(|a| a.audio().is_some());
        let (Some(answer), Some(pair)) = (answer, t.pair.take()) else {
            warn!("transfer target answered without usable SDP");
            if let Some(fork) = t.forks.get(index) {
                let dialog = fork.dialog.clone();
                tokio::spawn(async move {
                    let _ = dialog.bye().await;
                });
            }
            self.xfer.current = Some(t);
            self.transfer_failed(done.failed(488)).await;
            return;
        };
        let slot = done.transferor;
        let codecs: Vec<Codec> = answer.audio().map(|m| m.codecs.clone()).unwrap_or_default();
        if self.app_dial_bridges_on_answer() {
            // answerOnBridge: the caller is answered now that the target has.
            if let Err(e) = self.app_answer_on_bridge(&codecs) {
                warn!(error = %e, "answerOnBridge: the caller could not be answered");
                if let Some(fork) = t.forks.get(index) {
                    super::send_bye(fork.dialog.clone(), Vec::new(), "the dialled party");
                }
                self.xfer.current = Some(t);
                self.transfer_failed(done.failed(500)).await;
                return;
            }
        }
        self.bridge.replace_leg(slot.leg(), pair);
        if let Some(addr) = answer.audio_endpoint() {
            self.bridge.set_remote(slot.leg(), addr);
        }
        *self.media_mut(slot) = MediaSide {
            codecs: codecs.clone(),
            origin: t.origin.clone(),
            direction: answer.direction(),
        };
        let (a_codecs, b_codecs) = (self.a_media.codecs.clone(), self.b_media.codecs.clone());
        self.apply_pt_maps(&a_codecs, &b_codecs);
        self.set_send_codec(slot, &codecs);
        self.set_dtmf_pt(slot, &codecs);
        let Some(party) = t.forks.get(index).map(|fork| Party {
            dialog: fork.dialog.clone(),
            call_id: fork.call_id.clone(),
        }) else {
            return;
        };
        let child = t.forks.get(index).and_then(|f| match f.key {
            ForkKey::Transfer { index, .. } => self.app_dial_child(index),
            _ => None,
        });
        self.hand_over(*t, done, party, child);
    }

    /// The target's media already flows through the main bridge in the transferor's slot:
    /// make it that side's party, release the transferor, give the kept party its audio back.
    /// `child`: the new leg's id and target if it was given them when dialled (an
    /// application's dial of several targets).
    pub(super) fn hand_over(
        &mut self,
        mut t: Transfer,
        done: Completed,
        party: Party,
        child: Option<crate::apps::DialChild>,
    ) {
        let slot = done.transferor;
        let keep = slot.other();
        if let Some(bridge) = t.consult.take() {
            bridge.stop();
        }
        let old = self.parties[slot.index()].replace(party);
        // The old party's session timer leaves with it; the target's runs from now on
        // (we dialled it: we are its dialog's UAC).
        let now = tokio::time::Instant::now();
        let session = match t.target_session {
            Some(s) => LegSession::dialled(s.timer, s.allows_update, s.answered, now),
            None => LegSession::dialled(None, false, now, now),
        };
        if let Some(timer) = session.timer {
            info!(
                expires = timer.expires,
                refresher = timer.refresher.as_str(),
                "session timer on the transfer target's leg"
            );
        }
        self.core.adopt_session(slot, session, now);
        match (&t.referrer, old, done.transferor_gone) {
            // The referring phone first hears that it worked, then is released.
            (Some(referrer), _, gone) => {
                let _ = referrer.send(ReferProgress {
                    status: 200,
                    last: true,
                    then_bye: !gone,
                });
            }
            (None, Some(old), false) => {
                tokio::spawn(async move {
                    if let Err(e) = old.dialog.bye().await {
                        debug!(error = %e, "BYE to the transferor failed");
                    }
                });
            }
            (None, _, _) => {}
        }
        let new_leg = LegInfo {
            id: child
                .as_ref()
                .map(|c| c.leg_id.clone())
                .unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
            role: self.leg(slot).role,
            direction: LegDirection::Out,
            state: LegState::Answered,
            number: child
                .map(|c| c.target)
                .unwrap_or_else(|| t.target.label.clone()),
            owner_user_id: t.target.owner.as_ref().map(|(id, _)| id.clone()),
            owner_extension: t.target.owner.as_ref().map(|(_, ext)| ext.clone()),
            muted: false,
            held: false,
            recording: self.recording.is_some(),
            devices: Vec::new(),
            voicemail: false,
        };
        self.retire_leg(slot, EndCause::Transferred);
        *self.leg_mut(slot) = new_leg;
        if !self.leg(keep).held {
            self.bridge.stop_play(keep.leg());
        }
        let elapsed = done.requested_at.elapsed();
        let label = done.label;
        self.xfer.old_forks.append(&mut t.forks);
        self.apply_forwarding();
        info!(
            target = %label,
            ms = elapsed.as_secs_f64() * 1000.0,
            "transfer completed"
        );
        self.app_dial_answered();
        self.publish_detail(
            EventKind::Transferred,
            Some(slot),
            EventDetail {
                target: Some(label),
                ..Default::default()
            },
        );
    }

    /// The target could not be reached: the kept party goes back to the transferor, or, if the
    /// transferor has hung up meanwhile, the call ends.
    pub(super) async fn fail_transfer(&mut self, status: u16) {
        if let Some(failed) = self.core.transfer.fail(status) {
            self.transfer_failed(failed).await;
        }
    }

    /// Executes a failed attempt (`core.transfer` has ended it).
    pub(super) async fn transfer_failed(&mut self, failed: Failed) {
        let Some(mut t) = self.xfer.current.take() else {
            return;
        };
        let status = failed.status;
        let keep = failed.transferor.other();
        drop(t.pair.take());
        if let Some(bridge) = t.consult.take() {
            bridge.stop();
        }
        self.xfer.old_forks.append(&mut t.forks);
        if !self.leg(keep).held {
            self.bridge.stop_play(keep.leg());
        }
        self.apply_forwarding();
        if let Some(reply) = t.complete_reply.take() {
            let _ = reply.send(Err(CommandError::Failed {
                status,
                reason: "the transfer failed".into(),
            }));
        }
        if let Some(referrer) = &t.referrer {
            let _ = referrer.send(ReferProgress {
                status,
                last: true,
                then_bye: false,
            });
        }
        let cause = failed.cause;
        info!(status, cause = cause.as_str(), target = %failed.label, "transfer failed; parties reconnected");
        self.emit(
            EventKind::TransferFailed,
            Some(failed.transferor),
            Some(cause),
            EventDetail {
                target: Some(failed.label.clone()),
                ..Default::default()
            },
        );
        if self.app_dial_failed(status) {
            return;
        }
        match failed.then {
            AfterFailure::Reconnect { .. } => {}
            AfterFailure::EndCall { keep, cause } => {
                info!("the transferor has left: ending the call");
                if let Some(dialog) = self.dialog_of(keep) {
                    super::send_bye(dialog, Vec::new(), "the kept party");
                }
                self.end_cause = Some(cause);
                self.end_status = 200;
                self.core.end();
            }
        }
    }

    /// BYE to a fork that answered after its INVITE stopped mattering.
    pub(super) fn release_late_answer(&self, key: ForkKey) {
        let dialog = self
            .forks
            .iter()
            .chain(self.xfer.current.iter().flat_map(|t| t.forks.iter()))
            .chain(self.xfer.old_forks.iter())
            .chain(self.originated.iter().flat_map(|o| o.caller_forks.iter()))
            .find(|f| f.key == key)
            .map(|f| f.dialog.clone());
        if let Some(dialog) = dialog {
            tokio::spawn(async move {
                let _ = dialog.bye().await;
            });
        }
    }

    /// Transfer forks as call-record legs.
    pub(super) fn transfer_leg_records(&self, ended_at: i64) -> Vec<LegRecord> {
        let current = self.xfer.current.iter().flat_map(|t| t.forks.iter());
        current
            .chain(self.xfer.old_forks.iter())
            .map(|fork| {
                let status = fork.status.unwrap_or(487);
                LegRecord {
                    id: uuid::Uuid::now_v7().to_string(),
                    call_id: self.id.clone(),
                    role: RecordRole::Transfer.as_str().into(),
                    direction: LegDirection::Out.as_str().into(),
                    from: self.caller_number.clone(),
                    to: fork.request_uri.clone(),
                    contact: Some(fork.request_uri.clone()),
                    started_at: self.started_at,
                    answered_at: None,
                    ended_at,
                    end_cause: if (200..300).contains(&status) {
                        EndCause::Transferred
                    } else {
                        cause_for_status(status)
                    }
                    .as_str()
                    .into(),
                    sip_status: status,
                }
            })
            .collect()
    }

    /// Every dialog a transfer created (for clean-up when the call ends).
    pub(super) fn transfer_dialog_ids(&self) -> Vec<LegId> {
        self.xfer
            .current
            .iter()
            .flat_map(|t| t.forks.iter())
            .chain(self.xfer.old_forks.iter())
            .map(|f| f.dialog.id())
            .collect()
    }
}
