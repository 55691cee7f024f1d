//! A leg of this call in a named conference (`engine/src/conference.rs`).
//!
//! The leg stays this call's: its dialog, BYE, re-INVITEs, DTMF, recording and records are
//! the actor's as before. Only its audio goes through the conference's mixer while it is in:
//! the relay *feeds* the leg's decoded audio to the conference
//! ([`hookflash_media::relay::BridgeHandle::start_feed`]) and plays the mixer's frames to the
//! phone as a streamed playback on the leg's own RTP stream (same SSRC, continuing sequence
//! numbers and timestamps: the players' continuity rules). No re-INVITE is sent, so joining
//! and leaving cannot fail at the phone. Meanwhile the leg's audio does not reach the call's
//! other party, which hears music on hold (if there is one and it is not in a conference too):
//! a player towards a leg holds the other leg's audio back, so forwarding stays as it was and
//! a recording of the call still takes the leg's voice.
//!
//! The conference owns the feed's receiving end and the playback's sending end. The leg
//! leaves when either side lets go: the conference drops both (leave, kick, conference
//! ended), which ends the streamed playback — the actor sees that end and restores the call;
//! or the call's bridge stops (hang-up), which ends the feed — the conference sees that.
//! Attaching is synchronous in the actor; the conference is told by the engine, outside it.

use hookflash_media::listen::{FeedId, FeedStream, StreamFrame, FEED_QUEUE};
use hookflash_media::relay::{PlayOptions, PlaybackId};
use tokio::sync::mpsc;
use tracing::{debug, info};

use super::{CallActor, CallCommand, Phase, Side};
use crate::control::{CommandError, Reply};
use crate::model::WrongState;

/// Frames of conference audio queued towards the phone (the relay takes one per 20 ms tick;
/// the mixer runs on its own 20 ms clock, so a few frames absorb the phase between them).
const PLAY_QUEUE: usize = 4;

/// What the conference takes over from the call when a leg joins.
#[derive(Debug)]
pub struct LegAttach {
    pub call_id: String,
    pub leg_id: String,
    /// The leg's party (its number or extension).
    pub number: String,
    /// The leg's audio, decoded.
    pub feed: FeedStream,
    /// Frames towards the leg's phone; dropping it takes the leg out.
    pub play: mpsc::Sender<StreamFrame>,
}

/// A side of this call in a conference.
pub(super) struct ConfLeg {
    pub(super) name: String,
    feed: FeedId,
    playback: PlaybackId,
}

/// Conference commands on a call.
#[derive(Debug)]
pub enum ConfLegCommand {
    /// Hand leg `leg_id` (default: the caller's) to conference `name`.
    Attach {
        leg_id: Option<String>,
        name: String,
        reply: Reply<LegAttach>,
    },
    /// Which conference the leg is in: (leg id, conference name).
    Membership {
        leg_id: Option<String>,
        reply: Reply<(String, String)>,
    },
    /// Internal: the conference audio towards a side ended.
    Ended { side: u8, playback: PlaybackId },
}

impl CallActor {
    pub(super) fn conf_leg_command(&mut self, cmd: ConfLegCommand) {
        match cmd {
            ConfLegCommand::Attach {
                leg_id,
                name,
                reply,
            } => {
                let _ = reply.send(self.conf_attach(leg_id.as_deref(), name));
            }
            ConfLegCommand::Membership { leg_id, reply } => {
                let r = self.conf_side(leg_id.as_deref()).and_then(|side| {
                    match &self.conf_legs[side.index()] {
                        Some(c) => Ok((self.leg(side).id.clone(), c.name.clone())),
                        None => Err(CommandError::WrongState {
                            state: WrongState::NotInConference,
                        }),
                    }
                });
                let _ = reply.send(r);
            }
            ConfLegCommand::Ended { side, playback } => {
                let side = if side == 0 { Side::A } else { Side::B };
                self.conf_detached(side, playback);
            }
        }
    }

    /// The side `leg_id` names (default: the caller's).
    fn conf_side(&self, leg_id: Option<&str>) -> Result<Side, CommandError> {
        match leg_id {
            None => Ok(Side::A),
            Some(id) => self.side_of_leg(id).ok_or(CommandError::NotFound),
        }
    }

    /// Whether `side` is in a conference now.
    pub(super) fn in_conference(&self, side: Side) -> bool {
        self.conf_legs[side.index()].is_some()
    }

    fn conf_attach(
        &mut self,
        leg_id: Option<&str>,
        name: String,
    ) -> Result<LegAttach, CommandError> {
        let side = self.conf_side(leg_id)?;
        if self.core.phase() != Phase::Connected || self.parties[side.index()].is_none() {
            return Err(self.wrong_state());
        }
        if self.in_conference(side) {
            return Err(CommandError::WrongState {
                state: WrongState::InConference,
            });
        }
        if self.core.transfer.is_active() {
            return Err(CommandError::WrongState {
                state: WrongState::Transferring,
            });
        }
        if self.core.park.is_parked() {
            return Err(CommandError::WrongState {
                state: WrongState::Parked,
            });
        }
        if self.core.voicemail.is_active() {
            return Err(CommandError::WrongState {
                state: WrongState::InVoicemail,
            });
        }
        let leg = side.leg();
        let feed = self
            .bridge
            .start_feed(leg, FEED_QUEUE)
            .map_err(|e| CommandError::Media(e.to_string()))?;
        let (playback, play) = self.bridge.play_stream(leg, PLAY_QUEUE);
        let done = self.bridge.playback_done(playback);
        let tx = self.self_tx.clone();
        tokio::spawn(async move {
            let end = done.await;
            debug!(?end, "conference audio towards the leg ended");
            let _ = tx
                .send(CallCommand::Conference(ConfLegCommand::Ended {
                    side: side.index() as u8,
                    playback,
                }))
                .await;
        });
        self.conf_legs[side.index()] = Some(Box::new(ConfLeg {
            name: name.clone(),
            feed: feed.id,
            playback,
        }));
        self.apply_forwarding();
        self.conf_other_music(side, true);
        let info = self.leg(side);
        info!(leg = ?side, conference = %name, "leg handed to a conference");
        Ok(LegAttach {
            call_id: self.id.clone(),
            leg_id: info.id.clone(),
            number: info.number.clone(),
            feed,
            play,
        })
    }

    /// The conference audio towards `side` ended: the leg is the call's alone again.
    fn conf_detached(&mut self, side: Side, playback: PlaybackId) {
        let Some(c) = self.conf_legs[side.index()].take_if(|c| c.playback == playback) else {
            return;
        };
        // If the conference still holds the feed, its end tells it the leg has gone.
        self.bridge.stop_feed(side.leg(), c.feed);
        if self.core.phase() != Phase::Connected {
            return;
        }
        info!(leg = ?side, conference = %c.name, "leg back from the conference");
        self.apply_forwarding();
        if self.in_conference(side.other()) {
            // Its partner is still in a conference: it waits with music, as the partner did.
            if !self.leg(side).held {
                let moh = self.engine.inner.music_on_hold.clone();
                self.bridge
                    .play(side.leg(), moh, PlayOptions { looped: true });
            }
        } else {
            self.conf_other_music(side, false);
        }
    }

    /// `side`'s party left the call while in a conference (the dialled party of an
    /// application's call hung up): its feed ends, so the conference drops the participant;
    /// nothing is restored towards a party that is gone.
    pub(super) fn conf_party_gone(&mut self, side: Side) {
        if let Some(c) = self.conf_legs[side.index()].take() {
            self.bridge.stop_feed(side.leg(), c.feed);
            info!(leg = ?side, conference = %c.name, "a party in a conference left the call");
        }
    }

    /// While `side` is in a conference its call's other party (if any, and not in a
    /// conference itself or held) hears music on hold.
    fn conf_other_music(&mut self, side: Side, on: bool) {
        let other = side.other();
        if self.parties[other.index()].is_none()
            || self.in_conference(other)
            || self.leg(other).held
        {
            return;
        }
        if on {
            let moh = self.engine.inner.music_on_hold.clone();
            self.bridge
                .play(other.leg(), moh, PlayOptions { looped: true });
        } else {
            self.bridge.stop_play(other.leg());
        }
    }
}
