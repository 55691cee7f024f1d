//! Attended transfer. The kept party hears music on hold in the main bridge while the
//! target is dialled into a consultation bridge; when the target answers, the transferor's
//! phone is re-INVITEd to that bridge and the two talk. *Complete* re-INVITEs the target to
//! the transferor's socket in the main bridge (the kept party then hears it) and releases the
//! transferor; *cancel* re-INVITEs the transferor back and releases the target. Every media
//! move is a plain re-INVITE, so phones need no transfer support.

use hookflash_media::relay::Leg;
use hookflash_media::sdp::{self, Codec, Direction};
use hookflash_sip::msg::Response;
use tracing::{debug, info, warn};

use super::{
    configure_dtmf, configure_pt_maps, configure_send_codec, reoffer, sdp_of_response, CallActor,
    MediaSide, Party, Side,
};
use crate::control::CommandError;
use crate::events::{EventDetail, EventKind};
use crate::model::WrongState;

fn not_consulting(state: WrongState) -> CommandError {
    CommandError::WrongState { state }
}

impl CallActor {
    /// The target of an attended transfer answered: the transferor joins it in the
    /// consultation bridge (or, if the transferor already hung up, the transfer completes).
    pub(super) async fn consult_answered(&mut self, index: usize, resp: Response) {
        let Some(t) = self.transfer.as_mut() else {
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
                let dialog = f.dialog.clone();
                tokio::spawn(async move {
                    let _ = dialog.bye().await;
                });
            }
            self.fail_transfer(488).await;
            return;
        };
        let codecs: Vec<Codec> = answer.audio().map(|m| m.codecs.clone()).unwrap_or_default();
        if let Some(addr) = answer.audio_endpoint() {
            consult.set_remote(Leg::B, addr);
        }
        t.target_party = Some(party.clone());
        t.target_codecs = codecs.clone();
        let label = t.target.label.clone();
        self.core.transfer.consulting();
        let (Some(transferor), gone) = (
            self.core.transfer.transferor(),
            self.core.transfer.transferor_gone(),
        ) else {
            return;
        };
        let transferor_codecs = self.media_of(transferor).codecs.clone();
        configure_pt_maps(&consult, &transferor_codecs, &codecs);
        configure_send_codec(&consult, Leg::A, &transferor_codecs);
        configure_dtmf(&consult, Leg::A, &transferor_codecs);
        configure_send_codec(&consult, Leg::B, &codecs);
        configure_dtmf(&consult, Leg::B, &codecs);
        if gone {
            info!("transferor left before the target answered: completing");
            if let Err(e) = self.complete_attended().await {
                warn!(error = %e, "could not complete the transfer");
                self.release_consult_target(&party);
                self.fail_transfer(500).await;
            }
            return;
        }
        // Move the transferor's phone over to the consultation bridge.
        let body = {
            let media = self.media_mut(transferor);
            media.origin.next();
            sdp::build_offer(
                consult.local_addr(Leg::A),
                &media.origin,
                &media.codecs,
                Direction::SendRecv,
            )
            .to_string()
        };
        let Some(dialog) = self.dialog_of(transferor) else {
            return;
        };
        match reoffer(&dialog, body).await {
            Ok(addr) => {
                if let Some(addr) = addr {
                    consult.set_remote(Leg::A, addr);
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
            Err(e) => {
                warn!(error = %e, "transferor refused the move to the consultation");
                self.release_consult_target(&party);
                self.fail_transfer(500).await;
            }
        }
    }

    fn release_consult_target(&self, party: &Party) {
        let dialog = party.dialog.clone();
        tokio::spawn(async move {
            if let Err(e) = dialog.bye().await {
                debug!(error = %e, "BYE to the transfer target failed");
            }
        });
    }

    /// Joins the kept party with the consulted target and releases the transferor. If the
    /// target refuses the re-INVITE, nothing changes and the error says why.
    pub(super) async fn complete_attended(&mut self) -> Result<(), CommandError> {
        let t = self
            .transfer
            .as_mut()
            .ok_or_else(|| not_consulting(WrongState::NotTransferring))?;
        if t.consult.is_none() {
            return Err(not_consulting(WrongState::InBlindTransfer));
        }
        let party = t
            .target_party
            .clone()
            .ok_or_else(|| not_consulting(WrongState::AwaitingTarget))?;
        let slot = self
            .core
            .transfer
            .transferor()
            .ok_or_else(|| not_consulting(WrongState::NotTransferring))?;
        let codecs = t.target_codecs.clone();
        t.origin.next();
        let origin = t.origin.clone();
        let body = sdp::build_offer(
            self.bridge.local_addr(slot.leg()),
            &origin,
            &codecs,
            Direction::SendRecv,
        )
        .to_string();
        let addr = reoffer(&party.dialog, body).await?;
        let Some(t) = self.transfer.take() else {
            return Ok(());
        };
        let Some(done) = self.core.transfer.complete() else {
            return Ok(());
        };
        if let Some(addr) = addr {
            self.bridge.move_remote(slot.leg(), addr);
        }
        *self.media_mut(slot) = MediaSide {
            codecs: codecs.clone(),
            origin,
            direction: Direction::SendRecv,
        };
        let (a_codecs, b_codecs) = (self.a_media.codecs.clone(), self.b_media.codecs.clone());
        self.apply_pt_maps(&a_codecs, &b_codecs);
        self.set_send_codec(slot, &codecs);
        self.set_dtmf_pt(slot, &codecs);
        self.hand_over(t, done, party, None);
        Ok(())
    }

    /// Back to the original call: a ringing target is cancelled; a consulted one is released
    /// and the transferor's phone re-INVITEd back to the main bridge.
    pub(super) async fn cancel_attended(&mut self) -> Result<(), CommandError> {
        let t = self
            .transfer
            .as_mut()
            .ok_or_else(|| not_consulting(WrongState::NotTransferring))?;
        match t.target_party.clone() {
            None => {
                // The CANCELled forks' results end the attempt (transfer_failed, cause cancel).
                self.cancel_transfer_forks();
            }
            Some(party) => {
                self.release_consult_target(&party);
                self.consult_back_to_call(487).await;
            }
        }
        Ok(())
    }

    /// The consulted target is gone (released or hung up): the transferor's phone goes back
    /// to the main bridge and the parties are together again.
    pub(super) async fn consult_back_to_call(&mut self, status: u16) {
        let Some(transferor) = self.core.transfer.transferor() else {
            return;
        };
        if !self.core.transfer.transferor_gone() {
            if let Err(e) = self.reinvite_side(transferor, Direction::SendRecv).await {
                warn!(error = %e, "could not move the transferor back to the call");
            }
        }
        self.fail_transfer(status).await;
    }

    /// The side's phone left while an attended transfer was consulting. The transferor
    /// hanging up completes the transfer (as on a PBX); the kept party leaving ends the
    /// consultation with the call. Returns true when the call goes on.
    pub(super) async fn on_party_gone_while_consulting(&mut self, side: Side) -> bool {
        let Some(t) = self.transfer.as_mut() else {
            return false;
        };
        let Some(party) = t.target_party.clone() else {
            return false;
        };
        if Some(side) == self.core.transfer.transferor() {
            self.core.transfer.mark_transferor_gone();
            info!("transferor hung up during the consultation: completing the transfer");
            if let Err(e) = self.complete_attended().await {
                warn!(error = %e, "could not complete the transfer; ending the call");
                self.release_consult_target(&party);
                return false;
            }
            return true;
        }
        info!("the held party hung up during the consultation: ending it");
        if let Some(bridge) = t.consult.take() {
            bridge.stop();
        }
        self.release_consult_target(&party);
        false
    }

    /// The consulted target's dialog ended (it hung up).
    pub(super) async fn on_consult_target_gone(&mut self, call_id: &str) {
        let consulting = self.transfer.as_ref().is_some_and(|t| {
            t.target_party
                .as_ref()
                .is_some_and(|p| p.call_id == call_id)
        });
        if consulting {
            info!("the consulted target hung up: back to the call");
            self.consult_back_to_call(200).await;
        }
    }
}
