//! Re-INVITEs the call sends without waiting for them: a server-side hold or retrieve, and
//! the relay of one phone's re-INVITE to the other. Each runs as its own task; its answer comes
//! back to the actor as an event, so while one is in flight the call still handles BYE and
//! CANCEL from either side, DTMF and commands.
//!
//! - At most one re-INVITE of ours is in flight per side. A second hold/retrieve while one is
//!   pending is refused (`409 wrong_state`, state `pending`), not queued.
//! - Glare (RFC 3261 §14.1): a re-INVITE from a phone that arrives while ours to it (or a
//!   relay through it) is pending gets 491; a 491 to ours is retried after the random delay of
//!   §14.1 (2.1–4 s where we chose the dialog's Call-ID, 0–2 s where the phone did), at most
//!   three times. These rules and their timing are the call core's (`call_core.rs`); this file
//!   does the I/O they ask for.
//! - Hold stays all or nothing: if a phone refuses, the sides already changed are re-INVITEd
//!   back before the command is answered.

use futures::future::BoxFuture;
use hookflash_media::relay::{Leg, PlayOptions};
use hookflash_media::sdp::{self, Direction};
use hookflash_sip::dialog::{InDialogRequest, InviteLeg};
use hookflash_sip::msg::{Header, Request, Response, StatusCode, StatusCodeKind};
use tracing::{debug, info, warn};

use super::{content_type_sdp, sdp_of_response, CallActor, Phase, Side};
use crate::call_core::transfer::LegMedia;
use crate::call_core::{PeerOffer, Purpose};
use crate::control::{CallInfo, CommandError, LegState, Reply, Target};
use crate::events::EventKind;
use crate::model::WrongState;
use crate::session_timer;
use hookflash_media::sdp::SessionDescription;

/// How a re-INVITE of ours ended.
pub(super) enum Outcome {
    Answered(Option<Response>),
    Error(String),
}

/// What comes back to the actor from work it started and does not wait for.
pub(super) enum Feedback {
    /// The answer to our re-INVITE number `seq` towards `side`.
    Reoffer {
        side: Side,
        seq: u32,
        outcome: Outcome,
    },
    /// Another call's answer to a hand-over request (`replaces.rs`); `Err(None)`: that
    /// call is gone.
    HandOff {
        ticket: u32,
        given: Result<super::HandOff, Option<CommandError>>,
    },
}

/// Boxed answer: the call's run future keeps room for the largest value its `select!` can
/// yield, for as long as the call lasts.
pub(super) type ReofferFuture = BoxFuture<'static, Box<Feedback>>;

/// A hold/retrieve command waiting for its re-INVITEs.
pub(super) struct HoldOp {
    on: bool,
    /// Both sides (hold of the call) or one.
    whole_call: bool,
    waiting: Vec<Side>,
    changed: Vec<Side>,
    /// The first refusal; once set, the op undoes `changed` and answers with it.
    failed: Option<CommandError>,
    undoing: Vec<Side>,
    reply: Reply<CallInfo>,
}

/// A phone's re-INVITE waiting for the other phone's answer.
pub(super) struct RelayOp {
    from: Side,
    wanted: Direction,
    handle: InDialogRequest,
}

impl CallActor {
    /// Starts a re-INVITE towards `side` offering `direction`. False when there is no
    /// dialog to send it on now or one of ours is pending there.
    pub(super) fn start_reoffer(
        &mut self,
        side: Side,
        direction: Direction,
        purpose: Purpose,
    ) -> bool {
        self.reoffer_dialog(side, purpose).is_some()
            && self.core.start_reoffer(side, purpose, direction)
    }

    /// The dialog a re-INVITE for `purpose` counted on `side` goes to: the side's phone, or
    /// the phone that is to take the side's place (a consulted target, a handed-over phone).
    fn reoffer_dialog(&self, side: Side, purpose: Purpose) -> Option<InviteLeg> {
        match purpose {
            Purpose::ConsultComplete => self
                .xfer
                .current
                .as_ref()
                .and_then(|t| t.target_party.as_ref())
                .map(|p| p.dialog.clone()),
            Purpose::TakeOver => self.handed_over_dialog(),
            Purpose::Hold
            | Purpose::Undo
            | Purpose::Relay
            | Purpose::Refresh
            | Purpose::ConsultJoin
            | Purpose::ConsultBack => self.dialog_of(side),
        }
    }

    /// The offer that moves `side`'s phone to (or keeps it in) the consultation bridge: the
    /// bridge's transferor socket, the leg's own codecs, its next origin version.
    fn consultation_offer(&mut self, side: Side) -> Option<String> {
        let consult = self.xfer.current.as_ref()?.consult.clone()?;
        let media = self.media_mut(side);
        media.origin.next();
        Some(
            sdp::build_offer(
                consult.local_addr(Leg::A),
                &media.origin,
                &media.codecs,
                Direction::SendRecv,
            )
            .to_string(),
        )
    }

    /// Our SDP offer for a re-INVITE for `purpose` towards `side` (None: what it needs is
    /// gone). A move's offer is the address the phone is to send to: the consultation
    /// bridge's, or this call's bridge at `side`.
    fn reoffer_body(
        &mut self,
        side: Side,
        purpose: Purpose,
        direction: Direction,
    ) -> Option<String> {
        let local = self.bridge.local_addr(side.leg());
        match purpose {
            Purpose::ConsultJoin => self.consultation_offer(side),
            Purpose::ConsultComplete => {
                let t = self.xfer.current.as_mut()?;
                t.origin.next();
                Some(
                    sdp::build_offer(local, &t.origin, &t.target_codecs, Direction::SendRecv)
                        .to_string(),
                )
            }
            Purpose::TakeOver => {
                let media = self.handed_over_media()?;
                media.origin.next();
                Some(
                    sdp::build_offer(local, &media.origin, &media.codecs, Direction::SendRecv)
                        .to_string(),
                )
            }
            // A refresh offers what the leg has now: during a consultation the transferor's
            // phone sends to the consultation bridge, and must stay there.
            Purpose::Refresh => match self.core.transfer.media_of(side) {
                LegMedia::Consultation => self.consultation_offer(side),
                LegMedia::Call => Some(self.sdp_towards(side, direction)),
            },
            Purpose::Hold | Purpose::Undo | Purpose::Relay | Purpose::ConsultBack => {
                Some(self.sdp_towards(side, direction))
            }
        }
    }

    /// Sends the re-INVITE (or UPDATE) the call core asked for; its answer comes back to
    /// [`CallActor::on_reoffer`].
    pub(super) fn send_reoffer(
        &mut self,
        side: Side,
        direction: Direction,
        purpose: Purpose,
        use_update: bool,
    ) {
        let seq = self.core.reoffer_seq(side);
        let Some(dialog) = self.reoffer_dialog(side, purpose) else {
            if purpose == Purpose::Refresh {
                // RFC 4028 §10: a refresh that cannot go ends the session.
                self.core.reoffer_unsendable(side);
            } else {
                // Still in flight for the core: this answer tells the re-INVITE's owner.
                self.new_reoffers.push(Box::pin(async move {
                    Box::new(Feedback::Reoffer {
                        side,
                        seq,
                        outcome: Outcome::Error("the leg has no dialog now".into()),
                    })
                }));
            }
            return;
        };
        // A refresh offers what the leg has now.
        let in_consultation = self.core.transfer.media_of(side) == LegMedia::Consultation;
        let direction = match purpose {
            Purpose::Refresh if self.leg(side).held && !in_consultation => Direction::SendOnly,
            Purpose::Refresh => Direction::SendRecv,
            _ => direction,
        };
        // Session-timer headers belong to the side's own dialog, not to a phone moved in.
        let session = match purpose {
            Purpose::ConsultComplete | Purpose::TakeOver => Vec::new(),
            _ => self.session_headers(side),
        };
        let task = if use_update {
            tokio::spawn(async move { dialog.update(Some(session), None).await })
        } else {
            let Some(body) = self.reoffer_body(side, purpose, direction) else {
                self.new_reoffers.push(Box::pin(async move {
                    Box::new(Feedback::Reoffer {
                        side,
                        seq,
                        outcome: Outcome::Error("nothing to offer: the move is over".into()),
                    })
                }));
                return;
            };
            let mut headers = vec![content_type_sdp()];
            headers.extend(session);
            tokio::spawn(async move {
                dialog
                    .reinvite(Some(headers), Some(body.into_bytes()))
                    .await
            })
        };
        self.new_reoffers.push(Box::pin(async move {
            let outcome = match task.await {
                Ok(Ok(resp)) => Outcome::Answered(resp),
                Ok(Err(e)) => Outcome::Error(e.to_string()),
                Err(e) => Outcome::Error(e.to_string()),
            };
            Box::new(Feedback::Reoffer { side, seq, outcome })
        }));
    }

    /// Anything in flight that a new hold/retrieve, re-INVITE or transfer would cross.
    pub(super) fn reinvite_in_progress(&self) -> bool {
        self.hold_op.is_some()
            || self.relay_op.is_some()
            || self.core.reoffer_pending()
            || self.core.replaces.is_running()
    }

    /// A hold or retrieve command: re-INVITEs go out to the sides to change; the command is
    /// answered when they have answered (see [`CallActor::on_reoffer`]).
    pub(super) fn start_hold(&mut self, target: Target, on: bool, reply: Reply<CallInfo>) {
        if let Err(e) = self.require_stable() {
            let _ = reply.send(Err(e));
            return;
        }
        if self.reinvite_in_progress() {
            let _ = reply.send(Err(CommandError::WrongState {
                state: WrongState::Pending,
            }));
            return;
        }
        let (sides, whole_call) = match &target {
            Target::Call => (vec![Side::A, Side::B], true),
            Target::Leg(id) => match self.side_of_leg(id) {
                Some(side) => (vec![side], false),
                None => {
                    let _ = reply.send(Err(CommandError::NotFound));
                    return;
                }
            },
        };
        let wanted = if on {
            Direction::SendOnly
        } else {
            Direction::SendRecv
        };
        let mut waiting = Vec::new();
        for side in sides {
            if self.leg(side).held == on {
                continue;
            }
            if self.start_reoffer(side, wanted, Purpose::Hold) {
                waiting.push(side);
            } else {
                let _ = reply.send(Err(self.wrong_state()));
                // A side already asked is answered and simply left as it says it is.
                return;
            }
        }
        let op = HoldOp {
            on,
            whole_call,
            waiting,
            changed: Vec::new(),
            failed: None,
            undoing: Vec::new(),
            reply,
        };
        if op.waiting.is_empty() {
            let _ = op.reply.send(Ok(self.info()));
            return;
        }
        self.hold_op = Some(Box::new(op));
    }

    /// A phone's re-INVITE or UPDATE (its own hold button, a codec change): offer the same
    /// change to the other phone; the phone is answered when the other one has answered.
    pub(super) async fn start_relay(&mut self, from: Side, req: Request, handle: InDialogRequest) {
        if self.core.phase() != Phase::Connected {
            let _ = handle.reply(StatusCode::RequestPending).await;
            return;
        }
        let to = from.other();
        if self.core.session_timer(from).is_some() {
            // Any re-INVITE/UPDATE from a phone refreshes its leg's session (RFC 4028 §10).
            self.engine.inner.metrics.session_refreshes.inc();
        }
        let busy = self.hold_op.is_some() || self.relay_op.is_some();
        // Glare: ours towards this phone (or anything it would cross) is in flight.
        if self
            .core
            .peer_offer(from, busy, tokio::time::Instant::now())
            == PeerOffer::Glare
        {
            debug!(leg = ?from, "re-INVITE while one is pending: 491");
            let _ = handle.reply(StatusCode::RequestPending).await;
            return;
        }
        if req.body.is_empty() {
            // Offerless: an INVITE is answered with our current SDP (its ACK carries the answer
            // and changes nothing we relay); an UPDATE without SDP (a session refresh) gets a
            // plain 200.
            if req.method == hookflash_sip::msg::Method::Update {
                let _ = handle
                    .respond(StatusCode::OK, Some(self.session_headers(from)), None)
                    .await;
                return;
            }
            let body = self.sdp_towards(from, Direction::SendRecv);
            let _ = handle
                .respond(
                    StatusCode::OK,
                    Some(self.with_session_headers(from, vec![content_type_sdp()])),
                    Some(body.into_bytes()),
                )
                .await;
            return;
        }
        let offer = match std::str::from_utf8(&req.body)
            .ok()
            .and_then(|t| SessionDescription::parse(t).ok())
        {
            Some(o) if o.audio().is_some() => o,
            _ => {
                let _ = handle.reply(StatusCode::NotAcceptableHere).await;
                return;
            }
        };
        if let Some(addr) = offer.audio_endpoint() {
            self.bridge.set_remote(from.leg(), addr);
        }
        let wanted = offer.direction();
        self.media_mut(from).direction = wanted;
        info!(from = ?from, direction = wanted.as_attr(), "relaying re-INVITE");
        if !self.start_reoffer(to, wanted, Purpose::Relay) {
            let _ = handle.reply(StatusCode::ServerInternalError).await;
            return;
        }
        self.relay_op = Some(Box::new(RelayOp {
            from,
            wanted,
            handle,
        }));
    }

    /// The answer to a re-INVITE of ours (or the end of a glare back-off).
    pub(super) async fn on_reoffer(&mut self, side: Side, seq: u32, outcome: Outcome) {
        if !self.core.reoffer_current(side, seq) {
            debug!(leg = ?side, "answer to a re-INVITE given up: ignored");
            return;
        }
        let status = match &outcome {
            Outcome::Answered(Some(r)) => Some(r.status_code.code()),
            _ => None,
        };
        let Some(done) = self
            .core
            .reoffer_answered(side, status, tokio::time::Instant::now())
        else {
            if status == Some(491) {
                debug!(leg = ?side, "re-INVITE met glare (491): retrying after the back-off");
            }
            return;
        };
        let resp = match outcome {
            Outcome::Answered(resp) => resp,
            Outcome::Error(e) => {
                warn!(leg = ?side, error = %e, "re-INVITE failed");
                None
            }
        };
        let result = match &resp {
            Some(r) if r.status_code.kind() == StatusCodeKind::Successful => Ok(r),
            Some(r) => Err(CommandError::Failed {
                status: r.status_code.code(),
                reason: r.reason_phrase().unwrap_or_default().to_string(),
            }),
            None => Err(CommandError::WrongState {
                state: WrongState::Updating,
            }),
        };
        // Where the phone now sends its media from (moves: the owner places it).
        let moved = result
            .as_ref()
            .map(|r| sdp_of_response(r).and_then(|s| s.audio_endpoint()))
            .map_err(Clone::clone);
        match done.purpose {
            Purpose::Refresh if self.core.transfer.media_of(side) == LegMedia::Consultation => {
                // The transferor's phone answered in the consultation: that is where it sends.
                if let (Ok(Some(addr)), Some(consult)) = (
                    &moved,
                    self.xfer.current.as_ref().and_then(|t| t.consult.clone()),
                ) {
                    consult.set_remote(Leg::A, *addr);
                }
            }
            Purpose::Hold
            | Purpose::Undo
            | Purpose::Relay
            | Purpose::Refresh
            | Purpose::ConsultBack => {
                if let Ok(Some(addr)) = &moved {
                    self.bridge.set_remote(side.leg(), *addr);
                }
            }
            Purpose::ConsultJoin | Purpose::ConsultComplete | Purpose::TakeOver => {}
        }
        match done.purpose {
            Purpose::ConsultJoin => self.consult_join_answered(moved).await,
            Purpose::ConsultComplete => self.consult_complete_answered(side, moved).await,
            Purpose::TakeOver => self.take_over_answered(side, moved).await,
            Purpose::ConsultBack => {
                if let Err(e) = moved {
                    warn!(leg = ?side, error = %e, "could not move the transferor back to the call");
                }
            }
            Purpose::Hold | Purpose::Undo => self.hold_progress(side, done.purpose, result),
            Purpose::Relay => {
                self.relay_answered(side, resp.as_ref(), result.is_ok())
                    .await
            }
            // The core moved the deadline, or asks to end the call (RFC 4028 §10).
            Purpose::Refresh => {
                if let Err(e) = result {
                    warn!(leg = ?side, error = %e, "session refresh refused: ending the call");
                }
            }
        }
    }

    /// `Session-Expires` (and `Require: timer`, or `Supported: timer` where we are the UAC)
    /// for requests and 2xx towards `side`, while its session timer runs.
    pub(super) fn session_headers(&self, side: Side) -> Vec<Header> {
        let Some(t) = self.core.session_timer(side) else {
            return Vec::new();
        };
        let mut h: Vec<Header> = session_timer::response_headers(t.expires, t.refresher, t.require)
            .into_iter()
            .map(|(k, v)| Header::Other(k, v))
            .collect();
        if !self.core.we_are_uas(side) {
            h.push(Header::Other("Supported".into(), "timer".into()));
        }
        h
    }

    /// A leg we dialled answered (`resp`): its 2xx sets that leg's session timer (what the
    /// party chose, or what we asked for), and whether it takes UPDATE.
    pub(super) fn set_callee_timer(&mut self, resp: &hookflash_sip::msg::Response) {
        let (timer, allows_update) = self.callee_session(resp);
        self.core
            .set_session_timer(Side::B, timer, allows_update, tokio::time::Instant::now());
        if let Some(t) = timer {
            info!(
                expires = t.expires,
                refresher = t.refresher.as_str(),
                "session timer on the callee's leg"
            );
        }
    }

    /// The session timer a dialled party's 2xx (`resp`) sets up (what it chose, or what we
    /// asked for), and whether it takes UPDATE.
    pub(super) fn callee_session(
        &self,
        resp: &hookflash_sip::msg::Response,
    ) -> (Option<session_timer::SessionTimer>, bool) {
        let se = resp.headers.iter().find_map(|h| {
            let text = h.to_string();
            let (name, value) = text.split_once(':')?;
            let name = name.trim();
            (name.eq_ignore_ascii_case("Session-Expires") || name.eq_ignore_ascii_case("x"))
                .then(|| value.trim().to_string())
        });
        let allows_update = resp.headers.iter().any(|h| {
            let text = h.to_string();
            text.split_once(':').is_some_and(|(name, value)| {
                name.trim().eq_ignore_ascii_case("Allow")
                    && value
                        .split(',')
                        .any(|m| m.trim().eq_ignore_ascii_case("UPDATE"))
            })
        });
        let timer =
            session_timer::callee_timer(se.as_deref(), self.engine.inner.cfg.session_expires_ask);
        (timer, allows_update)
    }

    pub(super) fn with_session_headers(&self, side: Side, mut headers: Vec<Header>) -> Vec<Header> {
        headers.extend(self.session_headers(side));
        headers
    }

    fn hold_progress(
        &mut self,
        side: Side,
        purpose: Purpose,
        result: Result<&Response, CommandError>,
    ) {
        let Some(op) = self.hold_op.as_mut() else {
            return;
        };
        match purpose {
            Purpose::Hold => {
                op.waiting.retain(|s| *s != side);
                match result {
                    Ok(_) => op.changed.push(side),
                    Err(e) => {
                        warn!(leg = ?side, error = %e, "hold re-INVITE refused; restoring the call");
                        op.failed.get_or_insert(e);
                    }
                }
            }
            Purpose::Undo => {
                op.undoing.retain(|s| *s != side);
                if let Err(e) = result {
                    warn!(leg = ?side, error = %e, "could not restore a leg after a failed hold");
                }
            }
            Purpose::Relay
            | Purpose::Refresh
            | Purpose::ConsultJoin
            | Purpose::ConsultBack
            | Purpose::ConsultComplete
            | Purpose::TakeOver => {}
        }
        if !op.waiting.is_empty() || !op.undoing.is_empty() {
            return;
        }
        if op.failed.is_some() && !op.changed.is_empty() {
            // Put back what changed, then answer with the refusal.
            let undo = if op.on {
                Direction::SendRecv
            } else {
                Direction::SendOnly
            };
            let changed = std::mem::take(&mut op.changed);
            let mut undoing = Vec::new();
            for s in changed {
                if self.start_reoffer(s, undo, Purpose::Undo) {
                    undoing.push(s);
                }
            }
            if let Some(op) = self.hold_op.as_mut() {
                op.undoing = undoing;
                if !op.undoing.is_empty() {
                    return;
                }
            }
        }
        let Some(op) = self.hold_op.take() else {
            return;
        };
        if let Some(e) = op.failed {
            let _ = op.reply.send(Err(e));
            return;
        }
        self.apply_hold(op.on, op.whole_call, &op.changed);
        let _ = op.reply.send(Ok(self.info()));
    }

    /// The hold took on every side asked: held parties hear music on hold, events go out.
    fn apply_hold(&mut self, on: bool, whole_call: bool, changed: &[Side]) {
        for side in changed {
            self.leg_mut(*side).held = on;
            self.leg_mut(*side).state = if on {
                LegState::Held
            } else {
                LegState::Answered
            };
            // The held party hears music instead of the other party; retrieve gives the
            // other party back (the relay keeps one continuous RTP stream across the switch).
            if on {
                let moh = self.engine.inner.music_on_hold.clone();
                self.bridge
                    .play(side.leg(), moh, PlayOptions { looped: true });
            } else {
                self.bridge.stop_play(side.leg());
            }
        }
        self.apply_forwarding();
        if !changed.is_empty() {
            let kind = if on {
                EventKind::Held
            } else {
                EventKind::Retrieved
            };
            let leg = if whole_call {
                None
            } else {
                changed.first().copied()
            };
            self.publish(kind, leg, None);
            info!(held = on, legs = changed.len(), "hold changed");
        }
    }

    async fn relay_answered(&mut self, to: Side, resp: Option<&Response>, ok: bool) {
        let Some(op) = self.relay_op.take() else {
            return;
        };
        let from = op.from;
        if !ok {
            let status = resp.map_or(StatusCode::ServerInternalError, |r| r.status_code.clone());
            let _ = op.handle.reply(status).await;
            return;
        }
        let answered = resp.and_then(sdp_of_response);
        let answered_dir = answered
            .as_ref()
            .map(|s| s.direction())
            .unwrap_or(op.wanted.reverse());
        self.media_mut(to).direction = answered_dir;
        let back = self.sdp_towards(from, answered_dir);
        let _ = op
            .handle
            .respond(
                StatusCode::OK,
                Some(self.with_session_headers(from, vec![content_type_sdp()])),
                Some(back.into_bytes()),
            )
            .await;
        let held = op.wanted != Direction::SendRecv;
        if self.leg(from).held != held {
            self.leg_mut(from).held = held;
            self.leg_mut(from).state = if held {
                LegState::Held
            } else {
                LegState::Answered
            };
            let kind = if held {
                EventKind::Held
            } else {
                EventKind::Retrieved
            };
            self.publish(kind, Some(from), None);
        }
    }

    /// The call is over: whatever still waits for a re-INVITE is answered now.
    pub(super) async fn abandon_reoffers(&mut self) {
        self.core.abandon_reoffers();
        if let Some(op) = self.hold_op.take() {
            let _ = op.reply.send(Err(CommandError::WrongState {
                state: WrongState::Ended,
            }));
        }
        if let Some(op) = self.relay_op.take() {
            let _ = op.handle.reply(StatusCode::RequestTerminated).await;
        }
        // A complete command waiting for the target's move.
        if let Some(reply) = self
            .xfer
            .current
            .as_mut()
            .and_then(|t| t.complete_reply.take())
        {
            let _ = reply.send(Err(CommandError::WrongState {
                state: WrongState::Ended,
            }));
        }
        // A hand-over running: the phone being moved is released, the asker told.
        if let Some(step) = self.core.replaces.call_ended() {
            self.hand_over_done(step, None);
        }
    }
}
