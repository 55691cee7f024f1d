//! Audio taps for streaming a call's audio out (the jambonz `listen` verb).
//!
//! Like the recorder ([`crate::record`]): RTP audio accepted from either leg is decoded into a
//! small per-leg ring in the relay task; on each tick of the shared 20 ms clock one
//! [`ListenFrame`] (160 samples of each leg, silence where a leg had none) goes to the consumer
//! through a **bounded** channel with `try_send`. A consumer that falls behind (a slow
//! WebSocket) loses frames, counted; the relay never waits. Without a tap the per-packet cost
//! is one `Option` check.
//!
//! Pausing ([`crate::relay::BridgeHandle::pause_listen`]) keeps the tap and its channel but
//! sends nothing (audio received meanwhile is dropped).

use std::fmt;

use tokio::sync::mpsc;

use crate::audio::FRAME_SAMPLES;
use crate::g711::Law;

/// Frames queued towards a tap's consumer before new ones are dropped (1 s).
pub const LISTEN_QUEUE_FRAMES: usize = 50;

/// Samples kept per leg between two ticks before the oldest go (80 ms: jitter between packet
/// arrival and the clock).
const RING_SAMPLES: usize = 4 * FRAME_SAMPLES;

/// One 20 ms frame of 8 kHz audio for a streamed playback
/// ([`crate::relay::BridgeHandle::play_stream`]).
pub type StreamFrame = [i16; FRAME_SAMPLES];

/// Why a tap cannot start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListenError {
    #[error("the call's media has stopped")]
    BridgeStopped,
}

/// 20 ms of both legs' decoded audio (8 kHz, 16-bit).
#[derive(Clone, PartialEq, Eq)]
pub struct ListenFrame {
    /// From leg A (the caller of an application call).
    pub a: [i16; FRAME_SAMPLES],
    /// From leg B (the other party; silence when there is none).
    pub b: [i16; FRAME_SAMPLES],
}

impl fmt::Debug for ListenFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenFrame").finish_non_exhaustive()
    }
}

impl Default for ListenFrame {
    fn default() -> Self {
        ListenFrame {
            a: [0; FRAME_SAMPLES],
            b: [0; FRAME_SAMPLES],
        }
    }
}

/// Identifies one tap of a bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListenId(pub(crate) u64);

impl ListenId {
    /// The id of [`Self::number`] `n` (as the engine's callers carry it).
    pub fn from_number(n: u64) -> ListenId {
        ListenId(n)
    }

    pub fn number(&self) -> u64 {
        self.0
    }
}

impl fmt::Display for ListenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "listen-{}", self.0)
    }
}

/// The consumer's side of a tap: frames every 20 ms until the tap stops (`None`).
#[derive(Debug)]
pub struct ListenStream {
    pub id: ListenId,
    pub frames: mpsc::Receiver<ListenFrame>,
}

/// Decoded samples of one leg between two ticks.
#[derive(Debug)]
struct Ring {
    buf: [i16; RING_SAMPLES],
    len: usize,
}

impl Ring {
    fn new() -> Ring {
        Ring {
            buf: [0; RING_SAMPLES],
            len: 0,
        }
    }

    /// Appends decoded G.711; when full, the oldest samples go.
    fn push_g711(&mut self, law: Law, payload: &[u8]) {
        let payload = &payload[payload.len().saturating_sub(RING_SAMPLES)..];
        let overflow = (self.len + payload.len()).saturating_sub(RING_SAMPLES);
        if overflow > 0 {
            self.buf.copy_within(overflow..self.len, 0);
            self.len -= overflow;
        }
        for (dst, b) in self.buf[self.len..].iter_mut().zip(payload) {
            *dst = law.decode_sample(*b);
        }
        self.len += payload.len();
    }

    /// One frame into `out` if a whole one is there (else `out` stays silence).
    fn pop_frame(&mut self, out: &mut [i16; FRAME_SAMPLES]) {
        if self.len < FRAME_SAMPLES {
            return;
        }
        out.copy_from_slice(&self.buf[..FRAME_SAMPLES]);
        self.buf.copy_within(FRAME_SAMPLES..self.len, 0);
        self.len -= FRAME_SAMPLES;
    }
}

/// The relay task's side of a tap.
#[derive(Debug)]
pub(crate) struct ListenTap {
    pub id: ListenId,
    tx: mpsc::Sender<ListenFrame>,
    paused: bool,
    rings: [Ring; 2],
    dropped: u64,
    sent: u64,
}

/// What [`ListenTap::tick`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListenTick {
    Running,
    /// The consumer dropped its receiver: drop the tap.
    ConsumerGone,
}

impl ListenTap {
    /// A tap and its consumer's stream.
    pub(crate) fn new(id: ListenId, queue_frames: usize) -> (ListenTap, ListenStream) {
        let (tx, rx) = mpsc::channel(queue_frames.max(2));
        (
            ListenTap {
                id,
                tx,
                paused: false,
                rings: [Ring::new(), Ring::new()],
                dropped: 0,
                sent: 0,
            },
            ListenStream { id, frames: rx },
        )
    }

    /// Audio received from leg `leg_idx` (0 = A, 1 = B).
    #[inline]
    pub(crate) fn on_audio(&mut self, leg_idx: usize, law: Law, payload: &[u8]) {
        if !self.paused {
            self.rings[leg_idx].push_g711(law, payload);
        }
    }

    pub(crate) fn set_paused(&mut self, paused: bool) {
        if self.paused != paused {
            tracing::debug!(id = %self.id, paused, "listen tap pause changed");
        }
        self.paused = paused;
        for r in &mut self.rings {
            r.len = 0;
        }
    }

    /// One 20 ms tick of the frame clock.
    pub(crate) fn tick(&mut self) -> ListenTick {
        if self.tx.is_closed() {
            return ListenTick::ConsumerGone;
        }
        if self.paused {
            return ListenTick::Running;
        }
        let mut frame = ListenFrame::default();
        self.rings[0].pop_frame(&mut frame.a);
        self.rings[1].pop_frame(&mut frame.b);
        match self.tx.try_send(frame) {
            Ok(()) => self.sent += 1,
            Err(mpsc::error::TrySendError::Full(_)) => {
                if self.dropped == 0 {
                    tracing::warn!(id = %self.id, "listen consumer falls behind: frames dropped");
                }
                self.dropped += 1;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return ListenTick::ConsumerGone,
        }
        ListenTick::Running
    }

    /// Logs the tap's totals (it is being dropped).
    pub(crate) fn finish(&self) {
        tracing::debug!(id = %self.id, sent = self.sent, dropped = self.dropped, "listen tap closed");
    }
}

/// Chunks of one leg's decoded audio queued towards a conference before new ones are
/// dropped (one chunk per packet: 500 ms of 20 ms packets).
pub const FEED_QUEUE: usize = 25;

/// Identifies one conference feed of a bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FeedId(pub(crate) u64);

impl FeedId {
    pub fn number(&self) -> u64 {
        self.0
    }
}

impl fmt::Display for FeedId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "feed-{}", self.0)
    }
}

/// The consumer's side of a conference feed: one leg's audio, decoded, one chunk per packet
/// as it arrives (the mixer's jitter buffer takes it from there). Ends (`None`) when the
/// feed is stopped or the bridge ends.
#[derive(Debug)]
pub struct FeedStream {
    pub id: FeedId,
    pub chunks: mpsc::Receiver<Vec<i16>>,
}

/// The relay task's side of a conference feed (one per leg): every audio packet the leg
/// sends is decoded and offered to the conference with `try_send` (a full queue drops the
/// chunk, never waits). Independent of forwarding: the conference decides who is heard.
#[derive(Debug)]
pub(crate) struct LegFeed {
    pub id: FeedId,
    tx: mpsc::Sender<Vec<i16>>,
    dropped: u64,
}

impl LegFeed {
    pub(crate) fn new(id: FeedId, queue: usize) -> (LegFeed, FeedStream) {
        let (tx, rx) = mpsc::channel(queue.max(2));
        (
            LegFeed { id, tx, dropped: 0 },
            FeedStream { id, chunks: rx },
        )
    }

    /// Offers one packet's audio; false when the consumer has gone (drop the feed).
    pub(crate) fn on_audio(&mut self, law: Law, payload: &[u8]) -> bool {
        let chunk: Vec<i16> = payload.iter().map(|&b| law.decode_sample(b)).collect();
        match self.tx.try_send(chunk) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                if self.dropped == 0 {
                    tracing::debug!(id = %self.id, "conference feed full: audio dropped");
                }
                self.dropped += 1;
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    #[cfg(test)]
    pub(crate) fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mulaw(sample: i16, n: usize) -> Vec<u8> {
        let mut out = vec![0u8; n];
        Law::Mulaw.encode(&vec![sample; n], &mut out);
        out
    }

    #[test]
    fn frames_carry_both_legs_and_silence_where_nothing_came() {
        let (mut tap, mut stream) = ListenTap::new(ListenId(1), 4);
        tap.on_audio(0, Law::Mulaw, &mulaw(1000, 160));
        assert_eq!(tap.tick(), ListenTick::Running);
        let f = stream.frames.try_recv().unwrap();
        assert!(f.a.iter().all(|s| (s - 1000).abs() < 40), "{:?}", &f.a[..4]);
        assert!(f.b.iter().all(|s| *s == 0));
        // Half a frame is kept until a whole one is there.
        tap.on_audio(1, Law::Mulaw, &mulaw(-2000, 80));
        tap.tick();
        let f = stream.frames.try_recv().unwrap();
        assert!(f.b.iter().all(|s| *s == 0));
        tap.on_audio(1, Law::Mulaw, &mulaw(-2000, 80));
        tap.tick();
        let f = stream.frames.try_recv().unwrap();
        assert!(f.b.iter().all(|s| (s + 2000).abs() < 80));
    }

    #[test]
    fn a_full_queue_drops_frames_and_never_blocks() {
        let (mut tap, mut stream) = ListenTap::new(ListenId(2), 2);
        for _ in 0..10 {
            assert_eq!(tap.tick(), ListenTick::Running);
        }
        assert_eq!(tap.sent, 2);
        assert_eq!(tap.dropped, 8);
        assert!(stream.frames.try_recv().is_ok());
        drop(stream);
        assert_eq!(tap.tick(), ListenTick::ConsumerGone);
    }

    #[test]
    fn paused_sends_nothing_and_forgets_audio() {
        let (mut tap, mut stream) = ListenTap::new(ListenId(3), 4);
        tap.set_paused(true);
        tap.on_audio(0, Law::Mulaw, &mulaw(1000, 160));
        tap.tick();
        assert!(stream.frames.try_recv().is_err());
        tap.set_paused(false);
        tap.tick();
        let f = stream.frames.try_recv().unwrap();
        assert!(f.a.iter().all(|s| *s == 0));
    }

    #[test]
    fn a_feed_decodes_each_packet_drops_when_full_and_sees_its_consumer_go() {
        let (mut feed, mut stream) = LegFeed::new(FeedId(1), 2);
        assert!(feed.on_audio(Law::Mulaw, &mulaw(1000, 160)));
        assert!(feed.on_audio(Law::Mulaw, &mulaw(1000, 80)));
        assert!(feed.on_audio(Law::Mulaw, &mulaw(1000, 160)));
        assert_eq!(feed.dropped, 1);
        let first = stream.chunks.try_recv().unwrap();
        assert_eq!(first.len(), 160);
        assert!(first.iter().all(|s| (s - 1000).abs() < 40));
        assert_eq!(stream.chunks.try_recv().unwrap().len(), 80);
        drop(stream);
        assert!(feed.is_closed());
        assert!(!feed.on_audio(Law::Mulaw, &mulaw(1000, 160)));
    }

    #[test]
    fn the_ring_keeps_the_newest_samples() {
        let mut r = Ring::new();
        r.push_g711(Law::Mulaw, &mulaw(100, RING_SAMPLES));
        r.push_g711(Law::Mulaw, &mulaw(5000, FRAME_SAMPLES));
        assert_eq!(r.len, RING_SAMPLES);
        let mut out = [0; FRAME_SAMPLES];
        for _ in 0..3 {
            r.pop_frame(&mut out);
        }
        r.pop_frame(&mut out);
        assert!(out.iter().all(|s| (s - 5000).abs() < 200));
    }
}
