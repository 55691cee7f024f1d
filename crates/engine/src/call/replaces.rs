//! REFER with Replaces: a phone with two calls through us (A with it, and it with C) asks us
//! to connect A and C and drop it (pjsua2 `xferReplaces`, the attended transfer a desk phone
//! does). The call that holds the replaced dialog hands its other party (C) over to the call
//! that received the REFER, together with its dialog-event stream; C's phone is re-INVITEd
//! to this call's media, and the referring phone is told (NOTIFY 200) and released. The
//! bridge command (RingCentral `bridge`) is the same hand-over, asked for by the API.
//!
//! Nothing here is awaited inside a handler: the other call's answer comes back as
//! [`Feedback::HandOff`], the phone's answer to its move as a `TakeOver` re-offer's answer.
//! The stage of a hand-over and what each answer means are the call core's
//! (`call_core/replaces.rs`); this file holds its handles (the referrer's NOTIFY channel or
//! the bridge command's reply, the phone handed over) and executes. While it runs, a BYE
//! from any party is handled at once: the far party leaving ends the call and releases the
//! phone being moved (the referrer hears 487); the referring phone leaving does not stop it.

use crate::call_core::replaces::{Asker, OtherCall, Outcome, Step};
use crate::call_core::{LegSession, Purpose};
use crate::model::{EndCause, WrongState};
use hookflash_sip::dialog::{DialogEvent, InDialogRequest, InviteLeg};
use hookflash_sip::msg::StatusCode;
use hookflash_sip::router::{CallStateReceiver, CallStates};
use std::net::SocketAddr;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use super::reoffer::Feedback;
use super::transfer::{spawn_refer_notifier, ReferProgress};
use super::{answer_stray, CallActor, CallCommand, CommandSender, MediaSide, Party, Side};
use crate::control::{CallInfo, CommandError, LegInfo, LegState, Reply};
use crate::events::{EventDetail, EventKind};
use crate::Engine;

/// What a call gives up when another call takes over one of its parties.
pub struct HandOff {
    party: Party,
    media: MediaSide,
    leg: LegInfo,
    /// Its leg's session timer as it ran in the call it leaves (RFC 4028).
    session: LegSession,
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

/// Who hears how a hand-over ended.
enum AskerHandle {
    /// The referring phone's NOTIFY progress.
    Refer(mpsc::UnboundedSender<ReferProgress>),
    /// The bridge command's reply.
    Bridge(Reply<CallInfo>),
}

/// The handles of the running hand-over (its state: `core.replaces`).
struct HandOverHandles {
    asker: AskerHandle,
    /// Once the other call gave it: the phone and what it brings.
    handoff: Option<HandOff>,
}

/// A call's REFER/Replaces handles: the hand-over into this call, and, once this call gave
/// a party away, the call that now gets its dialog events.
#[derive(Default)]
pub(super) struct Replacing {
    running: Option<Box<HandOverHandles>>,
    pub(super) states_to: Option<CommandSender>,
}

/// BYE to a phone handed over but not kept, and its dialog out of the table (the call that
/// gave it no longer removes it).
fn release_phone(engine: &Engine, dialog: InviteLeg) {
    engine.inner.sip.dialogs.remove(&dialog.id());
    super::send_bye(dialog, Vec::new(), "the handed-over phone");
}

/// After the call ended: another call's hand-over still to come is released when it comes.
pub(super) fn release_late_handoffs(
    engine: Engine,
    mut pending: futures::stream::FuturesUnordered<super::reoffer::ReofferFuture>,
) {
    use futures::StreamExt;
    tokio::spawn(async move {
        let drain = async {
            while let Some(feedback) = pending.next().await {
                if let Feedback::HandOff { given: Ok(h), .. } = *feedback {
                    info!("a party handed over after the call ended: releasing it");
                    release_phone(&engine, h.party.dialog);
                }
            }
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(40), drain).await;
    });
}

impl CallActor {
    /// REFER whose Refer-To carries Replaces, from the phone on `side`: accepted (202), the
    /// other call is asked for its party; the rest follows its answer
    /// ([`Self::on_handoff`]).
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
        if self.require_stable().is_err() || self.reinvite_in_progress() {
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
        let Some(ticket) = self.core.replaces.ask(side, Asker::Refer) else {
            let _ = handle.reply(StatusCode::RequestPending).await;
            return;
        };
        let _ = handle.reply(StatusCode::Accepted).await;
        let referrer = spawn_refer_notifier(referrer_dialog);
        let _ = referrer.send(ReferProgress {
            status: 100,
            last: false,
            then_bye: false,
        });
        self.replacing.running = Some(Box::new(HandOverHandles {
            asker: AskerHandle::Refer(referrer),
            handoff: None,
        }));
        let to = self.self_tx.clone();
        self.ask_other_call(ticket, other_call, |reply| CallCommand::HandOff {
            sip_call_id: replaced,
            to,
            reply,
        });
    }

    /// Sends the other call its hand-over request; its answer comes back as
    /// [`Feedback::HandOff`] (never awaited here: two calls asking each other at once must
    /// not wait for each other).
    fn ask_other_call(
        &mut self,
        ticket: u32,
        other: CommandSender,
        command: impl FnOnce(Reply<HandOff>) -> CallCommand,
    ) {
        let (tx, rx) = oneshot::channel();
        let command = command(tx);
        self.new_reoffers.push(Box::pin(async move {
            let given = match other.send(command).await {
                Err(_) => Err(None),
                Ok(()) => match rx.await {
                    Ok(Ok(h)) => Ok(h),
                    Ok(Err(e)) => Err(Some(e)),
                    Err(_) => Err(None),
                },
            };
            Box::new(Feedback::HandOff { ticket, given })
        }));
    }

    /// The other call answered: the phone it gave is moved into this call, or the asker
    /// hears why not.
    pub(super) async fn on_handoff(
        &mut self,
        ticket: u32,
        given: Result<HandOff, Option<CommandError>>,
    ) {
        let answer = match &given {
            Ok(_) => OtherCall::Gave,
            Err(Some(_)) => OtherCall::Refused,
            Err(None) => OtherCall::Gone,
        };
        let step = self
            .core
            .replaces
            .other_call_answered(ticket, answer, self.core.phase());
        let (handoff, error) = match given {
            Ok(h) => (Some(h), None),
            Err(e) => (None, e),
        };
        match step {
            Step::Stale { .. } => {
                if let Some(h) = handoff {
                    release_phone(&self.engine, h.party.dialog);
                }
            }
            Step::Move { side } => {
                if let Some(handles) = self.replacing.running.as_mut() {
                    handles.handoff = handoff;
                }
                let direction = hookflash_media::sdp::Direction::SendRecv;
                if !self.start_reoffer(side, direction, Purpose::TakeOver) {
                    if let Some(step) = self.core.replaces.phone_answered(false) {
                        self.hand_over_done(step, None);
                        self.end_if_replaced_gone(step).await;
                    }
                }
            }
            Step::Done { .. } => {
                if let (Some(handles), Some(h)) = (self.replacing.running.as_mut(), handoff) {
                    handles.handoff = Some(h);
                }
                self.hand_over_done(step, error);
                self.end_if_replaced_gone(step).await;
            }
        }
    }

    /// The dialog of the phone being handed over, once the other call gave it.
    pub(super) fn handed_over_dialog(&self) -> Option<InviteLeg> {
        self.replacing
            .running
            .as_ref()
            .and_then(|h| h.handoff.as_ref())
            .map(|h| h.party.dialog.clone())
    }

    pub(super) fn handed_over_media(&mut self) -> Option<&mut MediaSide> {
        self.replacing
            .running
            .as_mut()
            .and_then(|h| h.handoff.as_mut())
            .map(|h| &mut h.media)
    }

    /// Is `call_id` the dialog of the phone being handed over?
    pub(super) fn is_handover_dialog(&self, call_id: &str) -> bool {
        self.replacing
            .running
            .as_ref()
            .and_then(|h| h.handoff.as_ref())
            .is_some_and(|h| h.party.call_id == call_id)
    }

    /// A request or state change on the dialog of the phone being handed over (its events
    /// reach us from the call that gave it).
    pub(super) async fn on_handover_state(&mut self, state: DialogEvent) {
        match state {
            DialogEvent::Terminated(..) => {
                let Some(side) = self.core.replaces.moving_into() else {
                    return;
                };
                info!("the handed-over phone hung up while it was moved: the call stays");
                self.core.abandon_reoffer(side);
                if let Some(step) = self.core.replaces.phone_gone() {
                    self.hand_over_done(step, None);
                    self.end_if_replaced_gone(step).await;
                }
            }
            other => answer_stray(other).await,
        }
    }

    /// The handed-over phone answered its move (`moved`: where it now sends from).
    pub(super) async fn take_over_answered(
        &mut self,
        side: Side,
        moved: Result<Option<SocketAddr>, CommandError>,
    ) {
        if let Err(e) = &moved {
            warn!(error = %e, "the handed-over phone refused the media move; releasing it");
        }
        let Some(step) = self.core.replaces.phone_answered(moved.is_ok()) else {
            return;
        };
        if let (
            Ok(Some(addr)),
            Step::Done {
                outcome: Outcome::Joined,
                ..
            },
        ) = (&moved, step)
        {
            self.bridge.move_remote(side.leg(), *addr);
        }
        self.hand_over_done(step, moved.err());
        self.end_if_replaced_gone(step).await;
    }

    /// The hand-over is over: the phone takes the side's place (joined) or is released, and
    /// the asker is told.
    pub(super) fn hand_over_done(&mut self, step: Step, error: Option<CommandError>) {
        let Step::Done {
            side,
            outcome,
            release_phone: release,
            end_call,
            ..
        } = step
        else {
            return;
        };
        let Some(handles) = self.replacing.running.take() else {
            return;
        };
        let HandOverHandles { asker, handoff } = *handles;
        let mut joined = None;
        match (outcome, handoff) {
            (Outcome::Joined, Some(h)) => joined = Some(self.take_over(side, h)),
            (_, Some(h)) if release => release_phone(&self.engine, h.party.dialog),
            _ => {}
        }
        info!(outcome = ?outcome, "hand-over over");
        match asker {
            AskerHandle::Refer(referrer) => {
                let _ = referrer.send(ReferProgress {
                    status: outcome.notify_status(),
                    last: true,
                    then_bye: outcome == Outcome::Joined && !end_call,
                });
            }
            AskerHandle::Bridge(reply) => {
                let result = match (&joined, error) {
                    (Some(old), _) => {
                        if let Some(old) = old {
                            super::send_bye(old.dialog.clone(), Vec::new(), "the bridged leg");
                        }
                        Ok(self.info())
                    }
                    (None, Some(e)) => Err(e),
                    (None, None) => Err(match outcome {
                        Outcome::OtherCallGone | Outcome::CallEnded => CommandError::NotFound,
                        Outcome::Joined
                        | Outcome::OtherCallRefused
                        | Outcome::PhoneRefused
                        | Outcome::PhoneGone => CommandError::Failed {
                            status: outcome.notify_status(),
                            reason: "the party could not be moved".into(),
                        },
                    }),
                };
                let _ = reply.send(result);
            }
        }
    }

    /// The party a failed hand-over was to replace had hung up: nobody is on that side.
    async fn end_if_replaced_gone(&mut self, step: Step) {
        if let Step::Done { end_call: true, .. } = step {
            info!("the replaced party has left and nobody took its place: ending the call");
            self.hangup_all(EndCause::Normal).await;
        }
    }

    /// Puts a party handed over from another call in `side`'s place (its phone already sends
    /// to this call's media there); the party that was there is retired (its dialog is the
    /// caller's to release: returned).
    fn take_over(&mut self, side: Side, handoff: HandOff) -> Option<Party> {
        let HandOff {
            party,
            mut media,
            mut leg,
            session,
        } = handoff;
        let codecs = media.codecs.clone();
        media.direction = hookflash_media::sdp::Direction::SendRecv;
        *self.media_mut(side) = media;
        let (a_codecs, b_codecs) = (self.a_media.codecs.clone(), self.b_media.codecs.clone());
        self.apply_pt_maps(&a_codecs, &b_codecs);
        self.set_send_codec(side, &codecs);
        self.set_dtmf_pt(side, &codecs);
        let old = self.parties[side.index()].replace(party);
        // The old party's session timer leaves with it; the phone's comes with it, as it
        // ran in the call it left (same dialog, same role, same deadline).
        self.core
            .adopt_session(side, session, tokio::time::Instant::now());
        self.retire_leg(side, EndCause::Transferred);
        leg.role = self.leg(side).role;
        leg.state = LegState::Answered;
        leg.recording = self.recording.is_some();
        let label = leg.number.clone();
        *self.leg_mut(side) = leg;
        self.apply_forwarding();
        info!(target = %label, "hand-over: parties joined");
        self.publish_detail(
            EventKind::Transferred,
            Some(side),
            EventDetail {
                target: Some(label),
                ..Default::default()
            },
        );
        old
    }

    /// Bridge (RingCentral `bridge`): the party opposite `leg_id` here and the party opposite
    /// `other_leg` in `other` are connected in this call; the two legs named (one person's
    /// two calls) are released and the other call ends. Both calls must be connected and
    /// stable; if the moved phone refuses the media move it is released and this call stays.
    /// Answered once the phone has answered its move.
    pub(super) fn bridge_with(
        &mut self,
        leg_id: String,
        other: CommandSender,
        other_leg: String,
        reply: Reply<CallInfo>,
    ) {
        let asked = (|| {
            self.require_stable()?;
            let side = self.side_of_leg(&leg_id).ok_or(CommandError::NotFound)?;
            self.require_no_conference()?;
            if self.reinvite_in_progress() {
                return Err(CommandError::WrongState {
                    state: WrongState::Pending,
                });
            }
            self.core
                .replaces
                .ask(side, Asker::Bridge)
                .ok_or(CommandError::WrongState {
                    state: WrongState::Pending,
                })
        })();
        let ticket = match asked {
            Ok(t) => t,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        self.replacing.running = Some(Box::new(HandOverHandles {
            asker: AskerHandle::Bridge(reply),
            handoff: None,
        }));
        let to = self.self_tx.clone();
        self.ask_other_call(ticket, other, |reply| CallCommand::HandOffLeg {
            leg_id: other_leg,
            to,
            reply,
        });
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
            if self.reinvite_in_progress() {
                return Err(CommandError::WrongState {
                    state: WrongState::Pending,
                });
            }
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
            session: self.core.leg_session(keep),
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
        self.core.replaces.gave_away(party.call_id);
        self.replacing.states_to = Some(to);
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
