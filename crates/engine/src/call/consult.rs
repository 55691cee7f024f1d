//! Attended transfer. The kept party hears music on hold in the main bridge while the
//! target is dialled into a consultation bridge; when the target answers, the transferor's
//! phone is re-INVITEd to that bridge and the two talk. *Complete* re-INVITEs the target to
//! the transferor's socket in the main bridge (the kept party then hears it) and releases the
//! transferor; *cancel* re-INVITEs the transferor back and releases the target. Every media
//! move is a plain re-INVITE, so phones need no transfer support.
//!
//! No move is awaited here: each is a re-offer of the call core (`ConsultJoin`,
//! `ConsultComplete`, `ConsultBack`) whose answer comes back to [`CallActor::on_reoffer`];
//! what it means is the transfer machine's decision (`call_core/transfer.rs`). While a move
//! is pending, complete and cancel answer `409 pending`, and a BYE from any party is handled
//! at once:
//! - the kept party leaves: the call ends (BYE to the transferor and the target), the move
//!   is given up and its late answer ignored;
//! - the transferor leaves while it is being moved into the consultation (or consults): the
//!   transfer completes, as on a PBX (its move is given up, the target is moved in);
//! - the transferor leaves while the target is being moved in: the move's answer decides
//!   (joined, or, refused, the call ends);
//! - the target leaves: its move (or the transferor's) is given up and the transferor's
//!   phone goes back to the call.

use hookflash_media::relay::Leg;
use hookflash_media::sdp::{Codec, Direction};
use hookflash_sip::msg::Response;
use std::net::SocketAddr;
use tracing::{debug, info, warn};

use super::{
    configure_dtmf, configure_pt_maps, configure_send_codec, sdp_of_response, CallActor, MediaSide,
    Party, Side,
};
use crate::call_core::transfer::{
    AfterFailure, CancelStep, CompleteResult, ConsultStep, JoinResult,
};
use crate::call_core::Purpose;
use crate::control::{CallInfo, CommandError, Reply};
use crate::events::{EventDetail, EventKind};
use crate::model::WrongState;

impl CallActor {
    /// The target of an attended transfer answered: the transferor's phone is moved into
    /// the consultation bridge (or, if the transferor already hung up, the target into its
    /// place).
    pub(super) async fn consult_answered(&mut self, index: usize, resp: Response) {
        let Some(t) = self.xfer.current.as_mut() else {
            return;
        };
        super::cancel_other_forks(&t.forks, index);
        let answer = sdp_of_response(&resp).filter(|a| a.audio().is_some());
        let fork = t.forks.get(index).map(|f| Party {
            dialog: f.dialog.clone(),
            call_id: f.call_id.clone(),
        });
        let (Some(answer), Some(party), Some(consult)) = (answer, fork, t.consult.clone()) else {
            warn!("transfer target answered without usable SDP");
            if let Some(f) = t.forks.get(index) {
                super::send_bye(f.dialog.clone(), Vec::new(), "the transfer target");
            }
            self.fail_transfer(488).await;
            return;
        };
        let codecs: Vec<Codec> = answer.audio().map(|m| m.codecs.clone()).unwrap_or_default();
        if let Some(addr) = answer.audio_endpoint() {
            consult.set_remote(Leg::B, addr);
        }
        t.target_party = Some(party);
        t.target_codecs = codecs.clone();
        let Some(step) = self.core.transfer.consult_answered() else {
            return;
        };
        let transferor = match step {
            ConsultStep::Join { transferor } | ConsultStep::Complete { transferor } => transferor,
        };
        let transferor_codecs = self.media_of(transferor).codecs.clone();
        configure_pt_maps(&consult, &transferor_codecs, &codecs);
        configure_send_codec(&consult, Leg::A, &transferor_codecs);
        configure_dtmf(&consult, Leg::A, &transferor_codecs);
        configure_send_codec(&consult, Leg::B, &codecs);
        configure_dtmf(&consult, Leg::B, &codecs);
        match step {
            ConsultStep::Complete { transferor } => {
                info!("transferor left before the target answered: completing");
                self.start_consult_complete(transferor).await;
            }
            ConsultStep::Join { transferor } => {
                // Move the transferor's phone over to the consultation bridge.
                if !self.start_reoffer(transferor, Direction::SendRecv, Purpose::ConsultJoin) {
                    self.consult_join_answered(Err(CommandError::WrongState {
                        state: WrongState::Pending,
                    }))
                    .await;
                }
            }
        }
    }

    /// The transferor's phone answered its move into the consultation (`moved`: where it
    /// now sends from).
    pub(super) async fn consult_join_answered(
        &mut self,
        moved: Result<Option<SocketAddr>, CommandError>,
    ) {
        let ok = moved.is_ok();
        match self.core.transfer.join_answered(ok) {
            None => {}
            Some(JoinResult::Consulting { transferor, label }) => {
                if let (Ok(Some(addr)), Some(consult)) = (
                    &moved,
                    self.xfer.current.as_ref().and_then(|t| t.consult.clone()),
                ) {
                    consult.set_remote(Leg::A, *addr);
                }
                info!(target = %label, "consultation: transferor talks to the target");
                self.publish_detail(
                    EventKind::TransferConsulting,
                    Some(transferor),
                    EventDetail {
                        target: Some(label),
                        ..Default::default()
                    },
                );
            }
            Some(JoinResult::Failed(failed)) => {
                if let Err(e) = &moved {
                    warn!(error = %e, "transferor refused the move to the consultation");
                }
                self.release_consult_target();
                self.transfer_failed(failed).await;
            }
        }
    }

    /// BYE to the consulted target (it is no longer wanted).
    fn release_consult_target(&mut self) {
        if let Some(party) = self
            .xfer
            .current
            .as_mut()
            .and_then(|t| t.target_party.take())
        {
            super::send_bye(party.dialog, Vec::new(), "the transfer target");
        }
    }

    /// Moves the consulted target into the transferor's place in the main bridge.
    async fn start_consult_complete(&mut self, transferor: Side) {
        // Whatever the transferor's side still had pending is moot now.
        self.core.abandon_reoffer(transferor);
        if !self.start_reoffer(transferor, Direction::SendRecv, Purpose::ConsultComplete) {
            self.consult_complete_answered(
                transferor,
                Err(CommandError::WrongState {
                    state: WrongState::Updating,
                }),
            )
            .await;
        }
    }

    /// The complete command: the target is moved into the transferor's place; the command is
    /// answered when it has answered (see [`Self::consult_complete_answered`]).
    pub(super) async fn complete_attended(&mut self, reply: Reply<CallInfo>) {
        if self.core.reoffer_pending() {
            let _ = reply.send(Err(CommandError::WrongState {
                state: WrongState::Pending,
            }));
            return;
        }
        match self.core.transfer.request_complete() {
            Err(state) => {
                let _ = reply.send(Err(CommandError::WrongState { state }));
            }
            Ok(transferor) => {
                if let Some(t) = self.xfer.current.as_mut() {
                    t.complete_reply = Some(reply);
                }
                self.start_consult_complete(transferor).await;
            }
        }
    }

    /// The target answered its move into the transferor's place: the kept party and the
    /// target are joined and the transferor released; refused, the transferor still
    /// consults it (or, if it has left, the call ends).
    pub(super) async fn consult_complete_answered(
        &mut self,
        slot: Side,
        moved: Result<Option<SocketAddr>, CommandError>,
    ) {
        let status = match &moved {
            Err(CommandError::Failed { status, .. }) => *status,
            _ => 500,
        };
        let reply = self
            .xfer
            .current
            .as_mut()
            .and_then(|t| t.complete_reply.take());
        match self.core.transfer.complete_answered(moved.is_ok(), status) {
            None => {
                if let Some(reply) = reply {
                    let _ = reply.send(Err(CommandError::WrongState {
                        state: WrongState::NotTransferring,
                    }));
                }
            }
            Some(CompleteResult::Completed(done)) => {
                let Some(mut t) = self.xfer.current.take() else {
                    return;
                };
                let Some(party) = t.target_party.take() else {
                    return;
                };
                if let Ok(Some(addr)) = moved {
                    self.bridge.move_remote(slot.leg(), addr);
                }
                let codecs = t.target_codecs.clone();
                *self.media_mut(slot) = MediaSide {
                    codecs: codecs.clone(),
                    origin: t.origin.clone(),
                    direction: Direction::SendRecv,
                };
                let (a_codecs, b_codecs) =
                    (self.a_media.codecs.clone(), self.b_media.codecs.clone());
                self.apply_pt_maps(&a_codecs, &b_codecs);
                self.set_send_codec(slot, &codecs);
                self.set_dtmf_pt(slot, &codecs);
                self.hand_over(*t, done, party, None);
                if let Some(reply) = reply {
                    let _ = reply.send(Ok(self.info()));
                }
            }
            Some(CompleteResult::Refused) => {
                let e = moved.err().unwrap_or(CommandError::WrongState {
                    state: WrongState::Updating,
                });
                warn!(error = %e, "the target refused the move: still consulting");
                if let Some(reply) = reply {
                    let _ = reply.send(Err(e));
                }
            }
            Some(CompleteResult::Failed(failed)) => {
                let e = moved.err().unwrap_or(CommandError::WrongState {
                    state: WrongState::Updating,
                });
                warn!(error = %e, "could not complete the transfer; ending the call");
                if let Some(reply) = reply {
                    let _ = reply.send(Err(e));
                }
                self.release_consult_target();
                self.transfer_failed(failed).await;
            }
        }
    }

    /// Back to the original call: a ringing target is cancelled; a consulted one is released
    /// and the transferor's phone re-INVITEd back to the main bridge.
    pub(super) async fn cancel_attended(&mut self) -> Result<(), CommandError> {
        match self.core.transfer.request_cancel() {
            Err(state) => Err(CommandError::WrongState { state }),
            Ok(CancelStep::CancelForks) => {
                // The CANCELled forks' results end the attempt (transfer_failed, cause cancel).
                self.cancel_transfer_forks();
                Ok(())
            }
            Ok(CancelStep::ReleaseTarget) => {
                self.release_consult_target();
                self.consult_back_to_call(487).await;
                Ok(())
            }
        }
    }

    /// The consulted target is gone (released or hung up): a move pending for it is given
    /// up, the transferor's phone goes back to the main bridge and the parties are together
    /// again (or, the transferor gone too, the call ends).
    pub(super) async fn consult_back_to_call(&mut self, status: u16) {
        let Some(transferor) = self.core.transfer.transferor() else {
            return;
        };
        let Some(gone) = self.core.transfer.target_gone(status) else {
            return;
        };
        if gone.abandon {
            self.core.abandon_reoffer(transferor);
        }
        // A refresh of ours in flight to the transferor would keep its move back from
        // going: it is sent again after the move, offering the call's bridge.
        if self
            .core
            .postpone_refresh(transferor, tokio::time::Instant::now())
        {
            debug!(leg = ?transferor, "session refresh postponed: the transferor goes back first");
        }
        if let AfterFailure::Reconnect { .. } = gone.failed.then {
            if !self.start_reoffer(transferor, Direction::SendRecv, Purpose::ConsultBack) {
                warn!("could not move the transferor back to the call");
            }
        }
        if let Some(t) = self.xfer.current.as_mut() {
            t.target_party = None;
        }
        self.transfer_failed(gone.failed).await;
    }

    /// The consulted target's dialog ended (it hung up).
    pub(super) async fn on_consult_target_gone(&mut self, call_id: &str) {
        let consulting = self.xfer.current.as_ref().is_some_and(|t| {
            t.target_party
                .as_ref()
                .is_some_and(|p| p.call_id == call_id)
        });
        if consulting {
            info!("the consulted target hung up: back to the call");
            self.consult_back_to_call(200).await;
        }
    }

    /// The transferor left with the target answered: the target is moved into its place.
    pub(super) async fn transferor_gone_complete(&mut self, side: Side) {
        info!("transferor hung up during the consultation: completing the transfer");
        self.leg_mut(side).state = crate::control::LegState::Disconnected;
        self.start_consult_complete(side).await;
    }

    /// The kept party left during the consultation: it ends with the call.
    pub(super) fn kept_party_gone_consulting(&mut self) {
        info!("the held party hung up during the consultation: ending it");
        if let Some(bridge) = self.xfer.current.as_mut().and_then(|t| t.consult.take()) {
            bridge.stop();
        }
        self.release_consult_target();
        debug!("consultation ended with the call");
    }
}
