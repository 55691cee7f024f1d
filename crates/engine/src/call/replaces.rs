//! REFER with Replaces: a phone with two calls through us (A with it, and it with C) asks us
//! to connect A and C and drop it (pjsua2 `xferReplaces`, the attended transfer a desk phone
//! does). The call that holds the replaced dialog hands its other party (C) over to the call
//! that received the REFER, together with its dialog-event stream; C's phone is re-INVITEd
//! to this call's media, and the referring phone is told (NOTIFY 200) and released.

use crate::model::{EndCause, WrongState};
use hookflash_sip::dialog::InDialogRequest;
use hookflash_sip::msg::StatusCode;
use hookflash_sip::router::{CallStateReceiver, CallStates};
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use super::transfer::{spawn_refer_notifier, ReferProgress};
use super::{reoffer, CallActor, CallCommand, CommandSender, MediaSide, Party, Side};
use crate::control::{CallInfo, CommandError, LegInfo, LegState, Reply};
use crate::events::{EventDetail, EventKind};
use crate::Engine;

/// What a call gives up when another call takes over one of its parties.
pub struct HandOff {
    party: Party,
    media: MediaSide,
    leg: LegInfo,
}

impl std::fmt::Debug for HandOff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandOff")
            .field("call_id", &self.party.call_id)
            .finish_non_exhaustive()
    }
}

/// The Call-ID named by `Replaces=` in a Refer-To URI's headers (RFC 3891, percent-encoded).
pub(crate) fn replaces_call_id(uri: &str) -> Option<String> {
    let lower = uri.to_ascii_lowercase();
    let at = lower.find("replaces=")? + "replaces=".len();
    let value = uri.get(at..)?.split('&').next()?;
    let decoded = percent_decode(value)?;
    decoded
        .split(';')
        .next()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl Engine {
    /// The call (other than `except`) one of whose answered dialogs has this SIP Call-ID.
    fn call_with_dialog(&self, sip_call_id: &str, except: &str) -> Option<CommandSender> {
        let calls = self.inner.calls.lock().ok()?;
        calls
            .iter()
            .find(|(id, e)| *id != except && e.sip_call_ids.iter().any(|c| c == sip_call_id))
            .map(|(_, e)| e.commands.clone())
    }
}

/// Passes a finished call's dialog events on to the call that took its party, for as long as
/// that call lasts (`routes` keeps the finished call's Call-IDs routed until then).
pub(super) fn forward_states(mut states: CallStateReceiver, routes: CallStates, to: CommandSender) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                state = states.recv() => {
                    let Some(state) = state else { break };
                    if to.send(CallCommand::DialogEvent(state)).await.is_err() {
                        break;
                    }
                }
                _ = to.closed() => break,
            }
        }
        drop(routes);
    });
}

impl CallActor {
    /// REFER whose Refer-To carries Replaces, from the phone on `side`.
    pub(super) async fn on_refer_replaces(
        &mut self,
        side: Side,
        uri: &str,
        handle: InDialogRequest,
    ) {
        let Some(replaced) = replaces_call_id(uri) else {
            let _ = handle.reply(StatusCode::BadRequest).await;
            return;
        };
        if self.require_stable().is_err() {
            let _ = handle.reply(StatusCode::RequestPending).await;
            return;
        }
        let Some(other_call) = self.engine.call_with_dialog(&replaced, &self.id) else {
            info!(%replaced, "REFER/Replaces names no dialog of another call");
            let _ = handle.reply(StatusCode::CallTransactionDoesNotExist).await;
            return;
        };
        let Some(referrer_dialog) = self.dialog_of(side) else {
            let _ = handle.reply(StatusCode::ServerInternalError).await;
            return;
        };
        let _ = handle.reply(StatusCode::Accepted).await;
        let referrer = spawn_refer_notifier(referrer_dialog);
        let notify = |status: u16, last: bool, then_bye: bool| ReferProgress {
            status,
            last,
            then_bye,
        };
        let _ = referrer.send(notify(100, false, false));

        let (tx, rx) = oneshot::channel();
        let asked = other_call
            .send(CallCommand::HandOff {
                sip_call_id: replaced.clone(),
                to: self.self_tx.clone(),
                reply: tx,
            })
            .await;
        let handoff = match (asked, rx.await) {
            (Ok(()), Ok(Ok(h))) => h,
            (_, Ok(Err(e))) => {
                info!(error = %e, "the other call cannot give up its party");
                let _ = referrer.send(notify(603, true, false));
                return;
            }
            _ => {
                let _ = referrer.send(notify(481, true, false));
                return;
            }
        };
        match self.take_over(side, handoff).await {
            Ok(label) => {
                let _ = referrer.send(notify(200, true, true));
                info!(target = %label, "REFER/Replaces: parties joined, referring phone released");
            }
            Err(_) => {
                let _ = referrer.send(notify(500, true, false));
            }
        }
    }

    /// Puts a party handed over from another call in `side`'s place: its phone is re-INVITEd
    /// to this call's media at that side; the party that was there is retired (its dialog is
    /// the caller's to release). Returns the new party's label. If the phone refuses the
    /// move it is released (BYE) and this call stays as it was.
    async fn take_over(&mut self, side: Side, handoff: HandOff) -> Result<String, CommandError> {
        // C's phone now sends its media to this call, in the replaced party's place.
        let HandOff {
            party,
            mut media,
            mut leg,
        } = handoff;
        media.origin.next();
        let body = hookflash_media::sdp::build_offer(
            self.bridge.local_addr(side.leg()),
            &media.origin,
            &media.codecs,
            hookflash_media::sdp::Direction::SendRecv,
        )
        .to_string();
        match reoffer(&party.dialog, body).await {
            Ok(addr) => {
                if let Some(addr) = addr {
                    self.bridge.move_remote(side.leg(), addr);
                }
            }
            Err(e) => {
                warn!(error = %e, "the handed-over phone refused the media move; releasing it");
                super::send_bye(party.dialog.clone(), Vec::new(), "the handed-over phone");
                return Err(e);
            }
        }
        let codecs = media.codecs.clone();
        media.direction = hookflash_media::sdp::Direction::SendRecv;
        *self.media_mut(side) = media;
        let (a_codecs, b_codecs) = (self.a_media.codecs.clone(), self.b_media.codecs.clone());
        self.apply_pt_maps(&a_codecs, &b_codecs);
        self.set_send_codec(side, &codecs);
        self.set_dtmf_pt(side, &codecs);
        self.parties[side.index()] = Some(party);
        self.retire_leg(side, EndCause::Transferred);
        leg.role = self.leg(side).role;
        leg.state = LegState::Answered;
        leg.recording = self.recording.is_some();
        let label = leg.number.clone();
        *self.leg_mut(side) = leg;
        self.apply_forwarding();
        self.publish_detail(
            EventKind::Transferred,
            Some(side),
            EventDetail {
                target: Some(label.clone()),
                ..Default::default()
            },
        );
        Ok(label)
    }

    /// Bridge (RingCentral `bridge`): the party opposite `leg_id` here and the party opposite
    /// `other_leg` in `other` are connected in this call; the two legs named (one person's
    /// two calls) are released and the other call ends. Both calls must be connected and
    /// stable; if the moved phone refuses the media move it is released and this call stays.
    pub(super) async fn bridge_with(
        &mut self,
        leg_id: String,
        other: CommandSender,
        other_leg: String,
    ) -> Result<CallInfo, CommandError> {
        self.require_stable()?;
        let side = self.side_of_leg(&leg_id).ok_or(CommandError::NotFound)?;
        self.require_no_conference()?;
        let (tx, rx) = oneshot::channel();
        other
            .send(CallCommand::HandOffLeg {
                leg_id: other_leg,
                to: self.self_tx.clone(),
                reply: tx,
            })
            .await
            .map_err(|_| CommandError::NotFound)?;
        let handoff = rx.await.map_err(|_| CommandError::NotFound)??;
        let old = self.parties[side.index()].clone();
        let label = self.take_over(side, handoff).await?;
        if let Some(old) = old {
            super::send_bye(old.dialog, Vec::new(), "the bridged leg");
        }
        info!(target = %label, "bridge: parties of two calls joined");
        Ok(self.info())
    }

    /// A bridge moves plain two-party calls only: a leg in a conference (a named one, or
    /// the call's own mixer with a supervisor or an added party) would leave the mixer
    /// feeding a dialog that changed hands.
    fn require_no_conference(&self) -> Result<(), CommandError> {
        if [Side::A, Side::B]
            .into_iter()
            .any(|s| self.in_conference(s))
        {
            return Err(CommandError::WrongState {
                state: WrongState::InConference,
            });
        }
        Ok(())
    }

    /// [`Self::hand_off`] for the dialog of the leg `leg_id` (a bridge).
    pub(super) async fn hand_off_leg(
        &mut self,
        leg_id: String,
        to: CommandSender,
        reply: Reply<HandOff>,
    ) {
        if let Err(e) = self.require_no_conference() {
            let _ = reply.send(Err(e));
            return;
        }
        let sip_call_id = self
            .side_of_leg(&leg_id)
            .and_then(|side| self.parties[side.index()].as_ref())
            .map(|p| p.call_id.clone());
        match sip_call_id {
            Some(id) => self.hand_off(id, to, reply).await,
            None => {
                let _ = reply.send(Err(CommandError::NotFound));
            }
        }
    }

    /// Another call takes the party opposite the dialog `sip_call_id` names: give it up with
    /// its dialog events, release the replaced phone, and end this call.
    pub(super) async fn hand_off(
        &mut self,
        sip_call_id: String,
        to: CommandSender,
        reply: Reply<HandOff>,
    ) {
        let result = (|| {
            self.require_stable()?;
            let replaced = self
                .side_of_call_id(&sip_call_id)
                .ok_or(CommandError::NotFound)?;
            let keep = replaced.other();
            let party = self.parties[keep.index()]
                .clone()
                .ok_or(CommandError::NotFound)?;
            Ok((replaced, keep, party))
        })();
        let (replaced, keep, party) = match result {
            Ok(r) => r,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let media = self.media_of(keep);
        let handoff = HandOff {
            party: party.clone(),
            media: MediaSide {
                codecs: media.codecs.clone(),
                origin: media.origin.clone(),
                direction: media.direction,
            },
            leg: self.leg(keep).clone(),
        };
        if reply.send(Ok(handoff)).is_err() {
            return;
        }
        if let Some(old) = self.parties[replaced.index()].take() {
            tokio::spawn(async move {
                if let Err(e) = old.dialog.bye().await {
                    debug!(error = %e, "BYE to the replaced phone failed");
                }
            });
        }
        self.parties[keep.index()] = None;
        self.handed_off = Some(party.call_id);
        self.states_to = Some(to);
        self.end_cause = Some(EndCause::Replaced);
        self.end_status = 200;
        self.core.end();
        info!("party handed over to another call (REFER/Replaces)");
    }
}

#[cfg(test)]
mod tests {
    use super::replaces_call_id;

    #[test]
    fn reads_the_call_id_of_replaces() {
        let uri = "sip:127.0.0.1:5060?Replaces=abc%40host%3Bto-tag%3D1%3Bfrom-tag%3D2";
        assert_eq!(replaces_call_id(uri).as_deref(), Some("abc@host"));
        let uri = "sip:103@h?replaces=xyz;to-tag=1&Require=replaces";
        assert_eq!(replaces_call_id(uri).as_deref(), Some("xyz"));
        assert_eq!(replaces_call_id("sip:103@h"), None);
        assert_eq!(replaces_call_id("sip:h?Replaces=%ZZ"), None);
        assert_eq!(replaces_call_id("sip:h?Replaces="), None);
    }
}
