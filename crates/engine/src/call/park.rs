//! Park and retrieve. Parking releases the parker's phone and keeps the other party in the
//! call's bridge with music on hold, in a numbered orbit of the account (`*71`..`*79`).
//! A phone that dials the orbit's code takes the parker's place (its INVITE is handed to this
//! call's actor); the API can instead have the server dial someone into it; and if nobody
//! retrieves the call before its timeout, the server dials the parker back.
//!
//! The park state and its decisions (orbit, empty place, timeout) live in the call core
//! (`call_core/park.rs`); this file executes them.

use std::time::Duration;

use hookflash_media::relay::PlayOptions;
use hookflash_media::sdp::{self, Codec, OriginState, SessionDescription};
use hookflash_sip::dialog::ServerTransaction;
use hookflash_sip::msg::StatusCode;
use hookflash_store::LegRecord;
use tracing::{debug, info, warn};

use super::{content_type_sdp, CallActor, MediaSide, Party, Side, TransferTarget};
pub(crate) use crate::call_core::park::is_orbit;
use crate::call_core::park::{orbit_candidates, ParkRefusal};
use crate::control::{CallInfo, CommandError, LegInfo, LegState};
use crate::events::{EventDetail, EventKind};
use crate::model::{CallDirection, EndCause, LegDirection, RecordRole, WrongState};
use crate::registrar::reply;
use crate::sip_glue::{header_value, now_ms};
use crate::Engine;

/// A phone that dialled an orbit code, handed to the parked call.
pub struct Pickup {
    pub(crate) tx: ServerTransaction,
    pub(crate) offer: SessionDescription,
    pub(crate) number: String,
    pub(crate) owner: Option<(String, String)>,
}

impl std::fmt::Debug for Pickup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pickup")
            .field("number", &self.number)
            .finish_non_exhaustive()
    }
}

fn orbit_key(account_id: &str, orbit: &str) -> String {
    format!("{account_id}/{orbit}")
}

impl Engine {
    /// Takes the first free orbit of the account for `call_id` (or `wanted`, if free).
    fn claim_orbit(&self, account_id: &str, call_id: &str, wanted: Option<&str>) -> Option<String> {
        let mut orbits = self.inner.orbits.lock().ok()?;
        let free = orbit_candidates(wanted)
            .into_iter()
            .find(|o| !orbits.contains_key(&orbit_key(account_id, o)))?;
        orbits.insert(orbit_key(account_id, &free), call_id.to_string());
        Some(free)
    }

    pub(super) fn release_orbit(&self, account_id: &str, orbit: &str) {
        if let Ok(mut orbits) = self.inner.orbits.lock() {
            orbits.remove(&orbit_key(account_id, orbit));
        }
    }

    /// The call parked in an orbit of the account.
    pub(crate) fn parked_call(&self, account_id: &str, orbit: &str) -> Option<String> {
        self.inner
            .orbits
            .lock()
            .ok()?
            .get(&orbit_key(account_id, orbit))
            .cloned()
    }

    /// Hands a phone's INVITE for an orbit code to the parked call. Answers it 404 if the
    /// orbit is empty (or the call ended meanwhile).
    pub(crate) async fn pick_up(&self, account_id: &str, orbit: &str, mut pickup: Pickup) {
        let sender = self.parked_call(account_id, orbit).and_then(|call_id| {
            self.inner
                .calls
                .lock()
                .ok()
                .and_then(|c| c.get(&call_id).map(|e| e.commands.clone()))
        });
        let Some(sender) = sender else {
            info!(orbit, "nothing parked in this orbit");
            reply(&mut pickup.tx, StatusCode::NotFound, vec![]).await;
            return;
        };
        let cmd = super::CallCommand::PickUp {
            pickup: Box::new(pickup),
        };
        if let Err(tokio::sync::mpsc::error::SendError(super::CallCommand::PickUp { mut pickup })) =
            sender.send(cmd).await
        {
            reply(&mut pickup.tx, StatusCode::NotFound, vec![]).await;
        }
    }
}

impl CallActor {
    /// Parks the other party of `parker` (default: the account user's side) in an orbit.
    pub(super) fn park(
        &mut self,
        parker: Option<String>,
        orbit: Option<String>,
        timeout: Duration,
    ) -> Result<CallInfo, CommandError> {
        self.require_stable()?;
        if self.reinvite_in_progress() {
            return Err(CommandError::WrongState {
                state: WrongState::Pending,
            });
        }
        match self.core.park.check(orbit.as_deref()) {
            Ok(()) => {}
            Err(ParkRefusal::AlreadyParked) => {
                return Err(CommandError::WrongState {
                    state: WrongState::Parked,
                })
            }
            Err(ParkRefusal::NotAnOrbit(o)) => {
                return Err(CommandError::Invalid(format!(
                    "'{o}' is not an orbit (*71 to *79)"
                )))
            }
        }
        let slot = match parker {
            Some(id) => self.side_of_leg(&id).ok_or(CommandError::NotFound)?,
            None => match self.direction {
                CallDirection::Outbound => Side::A,
                CallDirection::Inbound | CallDirection::Internal => Side::B,
            },
        };
        let keep = slot.other();
        let orbit = self
            .engine
            .claim_orbit(&self.account_id, &self.id, orbit.as_deref())
            .ok_or(CommandError::WrongState {
                state: WrongState::NoFreeOrbit,
            })?;
        let moh = self.engine.inner.music_on_hold.clone();
        self.bridge
            .play(keep.leg(), moh, PlayOptions { looped: true });
        if let Some(old) = self.parties[slot.index()].take() {
            tokio::spawn(async move {
                if let Err(e) = old.dialog.bye().await {
                    debug!(error = %e, "BYE to the parker failed");
                }
            });
        }
        let parker_extension = self.leg(slot).owner_extension.clone();
        self.retire_leg(slot, EndCause::Parked);
        self.leg_mut(slot).state = LegState::Disconnected;
        self.core.park.park(
            tokio::time::Instant::now(),
            timeout,
            orbit.clone(),
            slot,
            parker_extension,
        );
        self.apply_forwarding();
        info!(%orbit, timeout_s = timeout.as_secs(), "call parked");
        self.publish_detail(
            EventKind::Parked,
            Some(keep),
            EventDetail {
                target: Some(orbit),
                ..Default::default()
            },
        );
        Ok(self.info())
    }

    /// Copies a leg into the call record's retired legs (it leaves while the call goes on).
    pub(super) fn retire_leg(&mut self, side: Side, cause: EndCause) {
        let leg = self.leg(side).clone();
        if self.retired.iter().any(|r| r.id == leg.id) {
            return;
        }
        self.retired.push(LegRecord {
            id: leg.id,
            call_id: self.id.clone(),
            role: RecordRole::from(leg.role).as_str().into(),
            direction: leg.direction.as_str().into(),
            from: self.caller_number.clone(),
            to: leg.number,
            contact: None,
            started_at: self.started_at,
            answered_at: self.answered_at,
            ended_at: now_ms(),
            end_cause: cause.as_str().into(),
            sip_status: 200,
        });
    }

    /// Retrieve by API: dial `target` into the parker's place (a blind transfer whose
    /// transferor has already left).
    pub(super) fn unpark_to(&mut self, target: TransferTarget) -> Result<CallInfo, CommandError> {
        let Some(parked) = self.core.park.retrieve() else {
            return Err(CommandError::WrongState {
                state: WrongState::NotParked,
            });
        };
        let parker_leg = self.leg(parked.slot).id.clone();
        let keep = parked.slot.other();
        self.engine.release_orbit(&self.account_id, &parked.orbit);
        // start_transfer refuses while parked and replays music; it must see a normal call.
        self.bridge.stop_play(keep.leg());
        match self.start_transfer(Some(parker_leg), target, false, false) {
            Ok(info) => {
                self.core.transfer.mark_transferor_gone();
                info!(orbit = %parked.orbit, "retrieving the parked call");
                Ok(info)
            }
            Err(e) => {
                // Still parked.
                let _ = self
                    .engine
                    .claim_orbit(&self.account_id, &self.id, Some(&parked.orbit));
                let moh = self.engine.inner.music_on_hold.clone();
                self.bridge
                    .play(keep.leg(), moh, PlayOptions { looped: true });
                self.core.park.restore(parked);
                Err(e)
            }
        }
    }

    /// Nobody retrieved the call from `orbit` in time (`ParkAction::CallParkerBack`): dial the
    /// parker back (or end the call if we cannot).
    pub(super) async fn park_timed_out(&mut self, orbit: String, extension: Option<String>) {
        info!(%orbit, "park timed out: calling the parker back");
        let target = match extension {
            Some(ext) => {
                let origin = crate::routing::Origin::Account {
                    account_id: self.account_id.clone(),
                };
                super::resolve_destination(&self.engine, &self.account_id, &origin, &ext)
                    .await
                    .ok()
            }
            None => None,
        };
        let result = match target {
            Some(d) => self.unpark_to(TransferTarget {
                label: d.label,
                owner: d.owner,
                forks: d.targets,
            }),
            None => Err(CommandError::NotFound),
        };
        if let Err(e) = result {
            warn!(error = %e, "cannot call the parker back: ending the call");
            if let Some(orbit) = self.core.park.give_up() {
                self.engine.release_orbit(&self.account_id, &orbit);
            }
            self.hangup_all(EndCause::ParkTimeout).await;
        }
    }

    /// A phone dialled this call's orbit: answer it into the parker's place.
    pub(super) async fn on_pickup(&mut self, mut pickup: Pickup) {
        let Some(parked) = self.core.park.retrieve() else {
            reply(&mut pickup.tx, StatusCode::NotFound, vec![]).await;
            return;
        };
        let slot = parked.slot;
        let keep = slot.other();
        let offered: Vec<Codec> = pickup
            .offer
            .audio()
            .and_then(|m| sdp::supported_codecs(m).ok())
            .unwrap_or_default();
        let codecs = sdp::answer_codecs(&offered, &self.media_of(keep).codecs).unwrap_or_default();
        let pair = self.engine.inner.ports.allocate();
        let (false, Ok(pair)) = (codecs.is_empty(), pair) else {
            warn!("cannot take the pickup (no common codec or no RTP port)");
            reply(&mut pickup.tx, StatusCode::NotAcceptableHere, vec![]).await;
            self.core.park.restore(parked);
            return;
        };
        let dialogs = self.engine.inner.sip.dialogs.clone();
        let contact = self.engine.local_contact();
        let call_id = header_value(pickup.tx.request(), "Call-ID").unwrap_or_default();
        let dialog = match dialogs.server_invite(&pickup.tx, self.states.route(&call_id), contact) {
            Ok(d) => d,
            Err(e) => {
                warn!(error = %e, "could not create the pickup's dialog");
                reply(&mut pickup.tx, StatusCode::ServerInternalError, vec![]).await;
                self.core.park.restore(parked);
                return;
            }
        };
        let mut handler = dialog.clone();
        let mut tx = pickup.tx;
        tokio::spawn(async move {
            if let Err(e) = handler.serve(&mut tx).await {
                debug!(error = %e, "pickup INVITE transaction ended with error");
            }
        });
        let local = pair.local_rtp;
        self.bridge.replace_leg(slot.leg(), pair);
        if let Some(addr) = pickup.offer.audio_endpoint() {
            self.bridge.set_remote(slot.leg(), addr);
        }
        let origin = OriginState::new();
        let body = sdp::build_offer(local, &origin, &codecs, pickup.offer.direction()).to_string();
        if let Err(e) = dialog.accept(Some(vec![content_type_sdp()]), Some(body.into_bytes())) {
            warn!(error = %e, "could not answer the pickup");
            self.core.park.restore(parked);
            return;
        }
        self.engine.release_orbit(&self.account_id, &parked.orbit);
        *self.media_mut(slot) = MediaSide {
            codecs: codecs.clone(),
            origin,
            direction: pickup.offer.direction(),
        };
        let (a_codecs, b_codecs) = (self.a_media.codecs.clone(), self.b_media.codecs.clone());
        self.apply_pt_maps(&a_codecs, &b_codecs);
        self.set_send_codec(slot, &codecs);
        self.set_dtmf_pt(slot, &codecs);
        self.parties[slot.index()] = Some(Party { dialog, call_id });
        *self.leg_mut(slot) = LegInfo {
            id: uuid::Uuid::now_v7().to_string(),
            role: self.leg(slot).role,
            direction: LegDirection::In,
            state: LegState::Answered,
            number: pickup.number,
            owner_user_id: pickup.owner.as_ref().map(|(id, _)| id.clone()),
            owner_extension: pickup.owner.as_ref().map(|(_, e)| e.clone()),
            muted: false,
            held: false,
            recording: self.recording.is_some(),
            devices: Vec::new(),
            voicemail: false,
        };
        if !self.leg(keep).held {
            self.bridge.stop_play(keep.leg());
        }
        self.apply_forwarding();
        info!(orbit = %parked.orbit, "parked call picked up by dialling the orbit");
        self.publish_detail(
            EventKind::Unparked,
            Some(slot),
            EventDetail {
                target: Some(parked.orbit),
                ..Default::default()
            },
        );
    }

    /// The call ends while parked: free the orbit.
    pub(super) fn leave_orbit(&mut self) {
        if let Some(parked) = self.core.park.retrieve() {
            self.engine.release_orbit(&self.account_id, &parked.orbit);
        }
    }
}
