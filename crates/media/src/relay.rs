//! The relay fast path: a two-leg bridge forwarding RTP/RTCP without decoding.
//!
//! # Model
//! Leg A's [`RtpSocketPair`] faces phone A, leg B's faces phone B. RTP from phone A arriving
//! on A's RTP socket leaves through B's RTP socket towards phone B, and vice versa; RTCP the
//! same way on the +1 sockets (RTCP that arrives multiplexed on an RTP socket, RFC 5761, is
//! recognised with [`crate::rtp::is_rtcp`] and relayed as RTCP).
//!
//! Both socket pairs are allocated up front and passed to [`Bridge::start`]; a leg's sockets
//! exist before its remote is known (advertise [`BridgeHandle::local_addr`] in that leg's SDP,
//! call [`BridgeHandle::set_remote`] when the answer/offer arrives). For early media and
//! forking nothing else is needed: packets towards a leg without a known remote are dropped
//! (counted). [`BridgeHandle::replace_leg`] / [`BridgeHandle::attach_b`] swap a leg's sockets
//! later (transfer, a fork that answered on other sockets); the old pair is closed and its
//! port returned to the pool.
//!
//! # Remote addresses and latching (symmetric RTP)
//! Per leg and per socket (RTP, RTCP) a small state machine ([`Peer`]): the SDP remote is the
//! destination until the bridge *latches* to a source and sends there. A packet from the SDP
//! address latches at once. Another source (a phone behind NAT) is latched only when the SDP
//! address has sent nothing for [`LATCH_GRACE`] since that source's first packet and the
//! source's stream is consistent: [`LATCH_PACKETS`] packets with one SSRC, no other source in
//! between; until then its packets are dropped as `foreign`. An outsider spraying the port
//! range during call set-up therefore never captures a leg whose phone sends from the address
//! it announced, and a NAT phone's first ~0.5 s of audio is lost. It latches once; only a
//! changed SDP remote (`set_remote` with a different address) clears the latch. Once latched,
//! packets from a source that is neither the latched nor the SDP address are dropped and
//! counted as `foreign`. RTCP on its own port (a few packets a minute) is latched only to its
//! SDP address or to a source on the IP the leg's RTP latched to. An unspecified SDP address (`0.0.0.0`, old-style hold) means "send
//! nothing to this leg".
//!
//! # Per-packet path
//! One tokio task per bridge (on a relay thread, see [`start_relay_threads`]), written as a
//! single hand-rolled poll loop (`poll_fn`) instead of `select!`: each wake-up looks at the
//! control channel if a message was posted that it has not taken ([`ControlInbox`]), then
//! reads the four sockets round-robin, one `recvmmsg` batch each into the thread's shared
//! buffers, until all four are pending (or a budget of 64 packets is used, then it yields).
//! Forwarding is a
//! source check, an optional PT rewrite through a 128-entry table per direction
//! ([`BridgeHandle::set_pt_map`]), and a non-blocking `try_send_to` (a full socket buffer
//! drops the packet rather than stalling the other direction). No allocation, no lock, no
//! decoding per packet. Control changes (remote, PT map, forwarding, leg swap, stop) arrive
//! over an unbounded mpsc channel polled in the same loop, so all relay state is owned by the
//! task. Counters: per-bridge atomics written only by the task (plain stores of task-local
//! values); the global [`MediaStats`] get batched `fetch_add`s.
//!
//! Inactivity: the task stores the time of the last accepted RTP packet per leg in an atomic;
//! [`BridgeHandle::inactive`] sleeps until `last + timeout` and re-checks, so the relay task has
//! no timer at all.
//!
//! Stream continuity: by default the fast path does not touch SSRC/seq/timestamp. After a leg
//! swap, [`BridgeHandle::set_continuity`] can make packets *from* a leg go through a
//! [`StreamRewriter`] so the other phone sees one continuous stream.
//!
//! # Players (the first piece of the mixing path)
//! Each leg can have one *player* towards it ([`BridgeHandle::play`]): music on hold,
//! announcements. While a player is active towards leg X:
//! - RTP from the other leg is not relayed to X (still received, latched and counted as
//!   `held_back`); RTP *from* X is handled as before ([`BridgeHandle::set_forwarding`] decides
//!   whether it reaches the other side) and RTCP flows on both ways;
//! - every 20 ms the player encodes 160 samples of its [`Pcm8k`] with X's codec
//!   ([`BridgeHandle::set_send_codec`], PCMU/PT 0 until the engine sets one) and sends them
//!   from X's RTP socket to X's remote.
//!
//! The 20 ms clock is a tokio `Interval` polled inside the same poll loop; it exists only while
//! at least one player, recorder or DTMF sender is active, so a plain relay still has no timer. Missed ticks are caught
//! up in a burst (the phone's jitter buffer expects 50 packets/s), unless the task fell more
//! than 100 ms behind: then the backlog is dropped rather than flooding the phone (at most 5
//! frames ever go out back to back), and the players' timestamps move on by the skipped time
//! (marker on the next frame) so they keep pace with the real time.
//!
//! A non-looped playback ends by itself after its last frame; a new `play` on the same leg
//! replaces the current one; [`BridgeHandle::stop_play`] ends it. Each end is published on a
//! per-leg `watch` channel ([`BridgeHandle::playback_done`], [`BridgeHandle::watch_playback`]).
//!
//! **RTP continuity towards X.** Phone X must see one stream across relayed -> played ->
//! relayed. The fast path remembers the newest SSRC/sequence/timestamp it sent to X (a
//! [`StreamTracker`]: a few loads per packet, nothing else). When the first player starts
//! towards X, a [`StreamRewriter`] is engaged for the direction towards X, *continuing that
//! stream*: the played packets carry **the SSRC X was already receiving** (the other phone's
//! SSRC, or the rewriter's if continuity was already on; a random one if nothing was sent to X
//! yet), sequence numbers continue from the last relayed packet, the timestamp advances by the
//! time elapsed since the last packet sent to X (in whole packet intervals, rounded down, at
//! least one: [`StreamRewriter::rewrite_at`] with the time since the bridge started), and the
//! first played packet has the marker bit. When the player stops, relayed packets go through
//! the same rewriter (marker on the first one, timestamp by the same rule), and it stays engaged
//! for the rest of the bridge: switching it off would make the numbering jump.
//! Keeping the SSRC (rather than a fresh random one) means the phone never sees an SSRC change,
//! which some phones handle badly; the cost is that RTCP sender reports relayed from the other
//! phone no longer match the rewritten timestamps exactly, which voice endpoints ignore.
//!
//! # The shared 20 ms clock
//! Players, the recorder and DTMF senders all run on the one `Interval` above; it exists while
//! at least one of them is active. Per tick: for each leg either its DTMF sender (which then
//! has priority: a player towards that leg pauses meanwhile, without advancing) or its player
//! sends one packet; then the recorder takes one stereo frame.
//!
//! # Recording ([`BridgeHandle::start_recording`], see [`crate::record`])
//! RTP audio accepted from a leg whose forwarding is on is decoded (G.711 by payload type:
//! PT 0/8 by default, plus [`BridgeHandle::set_recv_codec`] and [`BridgeHandle::set_send_codec`]
//! entries) into a per-leg ring; each tick one frame per channel goes to the writer task
//! through a bounded queue (`try_send`; never any file I/O in this task). Left = leg A, right =
//! leg B. Without a recorder the per-packet cost is one `Option` check.
//!
//! # DTMF (RFC 4733, see [`crate::dtmf`])
//! - **Receive**: packets from a leg whose PT is that leg's telephone-event PT
//!   ([`BridgeHandle::set_dtmf_pt`]) go through a [`DtmfDetector`] (one event per press, end
//!   retransmissions ignored) and each press is broadcast on [`BridgeHandle::dtmf_events`].
//!   The packets are still relayed to the other leg as before (PT mapped). Detection does not
//!   depend on forwarding (a muted leg's digits are still seen). Cost without a PT set: one
//!   byte compare per packet.
//! - **Send**: [`BridgeHandle::send_dtmf`] queues digits towards a leg. While they are sent,
//!   the other leg's RTP is held back from that leg (as with a player), and the events go
//!   through the same [`StreamRewriter`] (engaged as for players), so they continue the
//!   stream the phone receives: same SSRC, next sequence numbers, marker on each digit's first
//!   packet; each event's timestamp is its start on the stream clock. When the last digit is
//!   done, the stream's timeline is moved on by the time the events took (their packets repeat
//!   the start timestamp) so relayed audio continues at the right timestamp. Each send's end
//!   is published on a per-leg `watch` ([`BridgeHandle::dtmf_done`]).

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use std::path::PathBuf;

use std::cell::{Cell, RefCell};
use std::os::fd::AsRawFd;

use tokio::sync::{broadcast, mpsc, watch, Notify};
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tracing::Instrument;

use crate::audio::{Pcm8k, FRAME_SAMPLES};
use crate::batch::{RecvBatch, BATCH};
use crate::dtmf::{
    parse_digits, DtmfDetector, DtmfEnd, DtmfError, DtmfEvent, DtmfJob, DtmfOptions, DtmfSendId,
    DtmfSendStatus, DtmfSender, TelephoneEvent,
};
use crate::g711::Law;
use crate::listen::{
    FeedId, FeedStream, LegFeed, ListenError, ListenId, ListenStream, ListenTap, ListenTick,
    StreamFrame,
};
use crate::ports::{LivePair, RelaySocket, RtpSocketPair};
use crate::record::{
    RecordError, RecordOptions, RecorderTap, Recording, RecordingId, RecordingSummary, TapState,
};
use crate::rtp::{
    is_rtcp, parse_header, write_header, StreamRewriter, StreamTracker, RTP_HEADER_LEN,
};
use crate::srtp::LegSrtp;
use crate::MediaStats;

/// Receive buffer size: larger than any Ethernet-MTU datagram.
const BUF_LEN: usize = crate::batch::SLOT;

thread_local! {
    /// Receive buffers of this thread's bridges (one bridge is polled at a time), so a
    /// bridge carries no buffer of its own.
    static RECV_BATCH: RefCell<RecvBatch> = RefCell::new(RecvBatch::new());
    /// Bridge wake-ups on this thread, for its pacer (see [`RelayThreads`]).
    static RELAY_WORK: Cell<u64> = const { Cell::new(0) };
    /// The pacer of this thread while it waits for work, woken by the next bridge wake-up.
    static PACER_WAITING: Cell<Option<std::task::Waker>> = const { Cell::new(None) };
}

/// A bridge ran on this thread: counted for the pacer, which is woken if it waits for work.
fn note_relay_work() {
    RELAY_WORK.with(|w| w.set(w.get().wrapping_add(1)));
    PACER_WAITING.with(|p| {
        if let Some(waker) = p.take() {
            waker.wake();
        }
    });
}
/// Packets handled per wake-up before yielding to other tasks.
const BUDGET: usize = 64;
/// Global counters are flushed after this many packets ...
const FLUSH_PACKETS: u64 = 64;
/// ... or this long after the last flush.
const FLUSH_INTERVAL_MS: u64 = 1000;
/// Players send one frame per tick.
const FRAME_INTERVAL: Duration = Duration::from_millis(20);
/// A tick this late drops the remaining backlog instead of bursting it out.
const MAX_TICK_LAG: Duration = Duration::from_millis(100);
/// StreamRewriter source id of players (relayed sources use the leg generation, a small
/// number); each playback also has its own internal SSRC, so a new playback is a switch too.
const PLAYER_SOURCE: u32 = u32::MAX;
/// StreamRewriter source id of DTMF senders.
const DTMF_SOURCE: u32 = u32::MAX - 1;
/// "No telephone-event PT" (RTP PTs are 7 bits).
const NO_PT: u8 = 0xFF;
/// Capacity of the DTMF event broadcast (a slow subscriber loses the oldest). The call's actor
/// reads it at once, and phones send at most ~10 digits a second; tokio allocates every slot
/// up front, per bridge (64 slots were 3.6 KB per call).
const DTMF_EVENTS: usize = 16;

/// One side of a bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Leg {
    A,
    B,
}

impl Leg {
    pub fn other(self) -> Leg {
        match self {
            Leg::A => Leg::B,
            Leg::B => Leg::A,
        }
    }
    fn idx(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Clone)]
pub struct BridgeOptions {
    /// [`BridgeHandle::inactive`] resolves after this long without RTP from either leg.
    /// `Duration::ZERO` disables the check.
    pub inactivity_timeout: Duration,
}

impl Default for BridgeOptions {
    fn default() -> Self {
        BridgeOptions {
            inactivity_timeout: Duration::from_secs(60),
        }
    }
}

/// Counters of one direction, keyed by the leg the packets came *from*.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectionStats {
    /// RTP packets relayed.
    pub packets: u64,
    /// RTP bytes relayed (whole RTP packets, without UDP/IP headers).
    pub bytes: u64,
    /// RTCP packets relayed.
    pub rtcp_packets: u64,
    /// RTP packets received while forwarding was off (hold/mute); not counted as dropped.
    pub held_back: u64,
}

/// A snapshot of one bridge's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BridgeStats {
    pub a_to_b: DirectionStats,
    pub b_to_a: DirectionStats,
    /// Packets received but not relayed (foreign source, no destination, send failure, not RTP).
    pub dropped: u64,
    /// The part of `dropped` that came from a foreign source.
    pub foreign: u64,
    /// When the last accepted RTP packet arrived from leg A / leg B.
    pub last_packet_a: Option<Instant>,
    pub last_packet_b: Option<Instant>,
    /// Where RTP to leg A / leg B currently goes (latched source, else the SDP remote).
    pub remote_a: Option<SocketAddr>,
    pub remote_b: Option<SocketAddr>,
    /// RTP packets generated by players and sent to leg A / leg B.
    pub played_a: u64,
    pub played_b: u64,
}

impl BridgeStats {
    /// Counters of packets coming from `leg`.
    pub fn from_leg(&self, leg: Leg) -> &DirectionStats {
        match leg {
            Leg::A => &self.a_to_b,
            Leg::B => &self.b_to_a,
        }
    }
    pub fn last_packet_at(&self, leg: Leg) -> Option<Instant> {
        match leg {
            Leg::A => self.last_packet_a,
            Leg::B => self.last_packet_b,
        }
    }
    pub fn remote(&self, leg: Leg) -> Option<SocketAddr> {
        match leg {
            Leg::A => self.remote_a,
            Leg::B => self.remote_b,
        }
    }
    /// RTP packets played *to* `leg`.
    pub fn played_to(&self, leg: Leg) -> u64 {
        match leg {
            Leg::A => self.played_a,
            Leg::B => self.played_b,
        }
    }
}

/// Options of [`BridgeHandle::play`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlayOptions {
    /// Start over at the end (music on hold) instead of ending the playback.
    pub looped: bool,
}

/// Identifies one [`BridgeHandle::play`] call. Numbers increase per bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PlaybackId {
    leg: Leg,
    n: u64,
}

impl PlaybackId {
    /// The leg the audio is played to.
    pub fn leg(&self) -> Leg {
        self.leg
    }
    pub fn number(&self) -> u64 {
        self.n
    }
}

impl std::fmt::Display for PlaybackId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}->{:?}", self.n, self.leg)
    }
}

/// How a playback ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PlaybackEnd {
    /// A non-looped playback played its last frame.
    Finished,
    /// [`BridgeHandle::stop_play`].
    Stopped,
    /// A newer [`BridgeHandle::play`] on the same leg took over.
    Replaced,
    /// The bridge stopped while it was playing (or before it started).
    BridgeStopped,
}

/// Playback state of one leg, published by the relay task on a `watch` channel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlaybackStatus {
    /// What is playing to the leg now.
    pub playing: Option<PlaybackId>,
    /// The most recent playback on this leg that ended, and how.
    pub last_ended: Option<(PlaybackId, PlaybackEnd)>,
    /// Highest playback number the relay task has taken up for this leg.
    taken: u64,
    /// The last few ends (number, how), newest at `recent_next - 1`.
    recent: [Option<(u64, PlaybackEnd)>; RECENT_ENDS],
    recent_next: usize,
}

const RECENT_ENDS: usize = 8;

impl PlaybackStatus {
    fn record_end(&mut self, id: PlaybackId, how: PlaybackEnd) {
        if self.playing == Some(id) {
            self.playing = None;
        }
        self.last_ended = Some((id, how));
        self.recent[self.recent_next % RECENT_ENDS] = Some((id.n, how));
        self.recent_next = (self.recent_next + 1) % RECENT_ENDS;
    }

    /// How playback `n` ended, if it is among the last few that ended.
    fn end_of(&self, n: u64) -> Option<PlaybackEnd> {
        self.recent
            .iter()
            .flatten()
            .find(|(m, _)| *m == n)
            .map(|(_, how)| *how)
    }

    /// Whether playback `id` is over: taken up by the task and no longer playing.
    fn is_over(&self, id: PlaybackId) -> bool {
        self.taken >= id.n && self.playing != Some(id)
    }
}

/// How long the SDP address must have stayed silent before another source may be latched.
pub const LATCH_GRACE: Duration = Duration::from_millis(500);
/// How many consistent packets (one source, one SSRC) another source must send first.
pub const LATCH_PACKETS: u32 = 5;

/// A source other than the SDP address that may be latched once its stream proves itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Candidate {
    src: SocketAddr,
    ssrc: u32,
    first: Duration,
    packets: u32,
}

/// Remote-address state of one socket of one leg (sans-IO; see the module doc).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peer {
    sdp: Option<SocketAddr>,
    latched: Option<SocketAddr>,
    /// Where the previous peer sent from, until the new one latches: its packets still in
    /// flight after the remote changed (a re-INVITE moved another phone onto this socket)
    /// must not capture the latch, or the new phone would hear nothing.
    stale: Option<SocketAddr>,
    candidate: Option<Candidate>,
}

/// Outcome of [`Peer::accept`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    /// First packet: the peer latched to this source.
    Latched,
    Ok,
    Foreign,
}

impl Peer {
    /// Sets the SDP remote. A different address clears the latch; returns whether it changed.
    pub fn set_sdp(&mut self, addr: Option<SocketAddr>) -> bool {
        if self.sdp == addr {
            return false;
        }
        self.sdp = addr;
        self.latched = None;
        self.stale = None;
        self.candidate = None;
        true
    }

    /// Sets the SDP remote of a *different* phone moved onto this socket. Unlike
    /// [`Self::set_sdp`] (the same phone changing its address, which behind NAT may keep its
    /// public source), the previous phone's source cannot take the latch.
    pub fn move_to_new_party(&mut self, addr: Option<SocketAddr>) -> bool {
        let previous = self.latched.or(self.sdp);
        let changed = self.set_sdp(addr);
        self.stale = previous.filter(|p| Some(*p) != addr);
        changed
    }

    /// Checks a packet's source (`ssrc`: the packet's RTP or RTCP sender SSRC, `now`: the
    /// bridge's clock) and latches when the rules of the module doc allow.
    pub fn accept(&mut self, src: SocketAddr, ssrc: u32, now: Duration) -> Accept {
        match self.latched {
            Some(l) if l == src => Accept::Ok,
            Some(_) if self.sdp == Some(src) => Accept::Ok,
            Some(_) => Accept::Foreign,
            None if self.stale == Some(src) => Accept::Foreign,
            None if self.sdp == Some(src) => self.latch(src),
            None => self.learn(src, ssrc, now),
        }
    }

    /// RTCP on its own port: a few packets a minute, too few to learn a stream from. Its
    /// source is latched when it is the SDP address, or comes from the IP that the leg's RTP
    /// latched to (`rtp`: a NAT maps both from the same public address); nothing else.
    pub fn accept_rtcp(&mut self, src: SocketAddr, rtp: Option<SocketAddr>) -> Accept {
        match self.latched {
            Some(l) if l == src => Accept::Ok,
            Some(_) if self.sdp == Some(src) => Accept::Ok,
            Some(_) => Accept::Foreign,
            None if self.stale == Some(src) => Accept::Foreign,
            None if self.sdp == Some(src) => self.latch(src),
            None if rtp.is_some_and(|r| r.ip() == src.ip()) => self.latch(src),
            None => Accept::Foreign,
        }
    }

    fn latch(&mut self, src: SocketAddr) -> Accept {
        self.latched = Some(src);
        self.stale = None;
        self.candidate = None;
        Accept::Latched
    }

    /// A packet from a source that is not the SDP address, before any latch.
    fn learn(&mut self, src: SocketAddr, ssrc: u32, now: Duration) -> Accept {
        match self.candidate.as_mut() {
            Some(c) if c.src == src && c.ssrc == ssrc => {
                c.packets = c.packets.saturating_add(1);
                if c.packets >= LATCH_PACKETS && now.saturating_sub(c.first) >= LATCH_GRACE {
                    return self.latch(src);
                }
            }
            // Another source (or stream) interrupts: learning starts over with it.
            _ => {
                self.candidate = Some(Candidate {
                    src,
                    ssrc,
                    first: now,
                    packets: 1,
                })
            }
        }
        Accept::Foreign
    }

    /// Where to send: the latched source, else the SDP remote; nothing while the SDP remote
    /// is an unspecified address (hold).
    pub fn dest(&self) -> Option<SocketAddr> {
        if self.sdp.is_some_and(|a| a.ip().is_unspecified()) {
            return None;
        }
        self.latched.or(self.sdp)
    }

    pub fn latched(&self) -> Option<SocketAddr> {
        self.latched
    }
}

#[derive(Debug, Default)]
struct DirCounters {
    packets: AtomicU64,
    bytes: AtomicU64,
    rtcp_packets: AtomicU64,
    held_back: AtomicU64,
}

/// State shared between the handle and the task. The task is the only writer of the counters.
#[derive(Debug)]
struct Shared {
    /// Control messages posted to the relay task and its waker (see [`ControlInbox`]).
    ctrl: ControlSignal,
    start: Instant,
    dirs: [DirCounters; 2],
    dropped: AtomicU64,
    foreign: AtomicU64,
    /// Milliseconds since `start` of the last accepted RTP packet per leg, plus one (0 = never).
    last_rtp: [AtomicU64; 2],
    /// Inactivity timeout in ms, 0 = disabled.
    timeout_ms: AtomicU64,
    timeout_changed: Notify,
    local: Mutex<[SocketAddr; 2]>,
    remotes: Mutex<[Option<SocketAddr>; 2]>,
    /// Packets played to leg A / B.
    played: [AtomicU64; 2],
    /// Last playback number handed out. Held while the Play control is queued, so numbers
    /// reach the task in increasing order even with concurrent callers.
    playback_seq: Mutex<u64>,
    /// Last DTMF send number handed out (same rule as `playback_seq`).
    dtmf_seq: Mutex<u64>,
    /// Telephone-event PT per leg, as told by the engine (checked by `send_dtmf`).
    dtmf_pt: Mutex<[Option<u8>; 2]>,
    /// Detected key presses of both legs.
    dtmf_events: broadcast::Sender<DtmfEvent>,
    /// The running recording (start/stop hold it across their await points).
    recording: tokio::sync::Mutex<Option<Recording>>,
    /// Number of the running recording, 0 = none (for the synchronous pause/resume).
    recording_id: AtomicU64,
    recording_seq: AtomicU64,
    /// Number of the running listen tap, 0 = none.
    listen_id: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug)]
enum Control {
    SetRemote {
        leg: Leg,
        rtp: Option<SocketAddr>,
        rtcp: Option<SocketAddr>,
        new_party: bool,
    },
    SetRemoteRtcp {
        leg: Leg,
        rtcp: Option<SocketAddr>,
    },
    SetPtMap {
        from: Leg,
        map: Vec<(u8, u8)>,
    },
    SetKeepalive {
        leg: Leg,
        on: bool,
    },
    SetForwarding {
        from: Leg,
        on: bool,
    },
    SetContinuity {
        from: Leg,
        on: bool,
    },
    ReplaceLeg {
        leg: Leg,
        pair: RtpSocketPair,
    },
    SetSendCodec {
        leg: Leg,
        pt: u8,
        law: Law,
    },
    Play {
        id: PlaybackId,
        pcm: Pcm8k,
        opts: PlayOptions,
    },
    StopPlay {
        leg: Leg,
    },
    SetRecvCodec {
        leg: Leg,
        pt: u8,
        law: Law,
    },
    SetDtmfPt {
        leg: Leg,
        pt: Option<u8>,
    },
    SendDtmf {
        job: DtmfJob,
    },
    StopDtmf {
        leg: Leg,
    },
    StartRecording {
        tap: Box<RecorderTap>,
    },
    PauseRecording {
        paused: bool,
    },
    StopRecording {
        id: RecordingId,
    },
    StartListen {
        tap: Box<ListenTap>,
    },
    PauseListen {
        id: ListenId,
        paused: bool,
    },
    StopListen {
        id: ListenId,
    },
    PlayStream {
        id: PlaybackId,
        frames: mpsc::Receiver<StreamFrame>,
    },
    StartFeed {
        leg: Leg,
        feed: Box<LegFeed>,
    },
    StopFeed {
        leg: Leg,
        id: FeedId,
    },
    SetSrtp {
        leg: Leg,
        srtp: Option<Box<LegSrtp>>,
    },
    Stop,
}

/// Starts bridges; see the module documentation.
pub struct Bridge;

/// The relay threads: each runs a single-threaded tokio runtime (its own epoll loop and
/// timer) that owns a share of the bridges (a new bridge goes to the thread with the fewest).
/// No work-stealing scheduler, no cross-thread wake-ups, no contention with signalling and
/// API tasks.
///
/// **Paced wake-ups.** With a pace `p > 0` a thread that has bridges does not sleep in epoll
/// (one wake-up and two context switches per arriving packet, the largest single cost of a
/// relayed packet); it sleeps `p` at a time and then handles everything that arrived
/// meanwhile in one pass: a pacer task sleeps the thread, yields, and the runtime then polls
/// epoll without blocking and runs every bridge with input before the pacer sleeps again
/// (tokio's current-thread scheduler wakes yielded tasks after the I/O poll). A packet waits
/// at most `p` more (0.5 `p` on average); RTP is paced at 20 ms and phones buffer 20-60 ms.
/// A thread without bridges, or whose last pass found no bridge with anything to do (calls
/// without RTP: held with no music, SIPp calls without media), blocks in epoll as usual, and
/// its next bridge wake-up starts the pacing again: an idle thread does not wake every `p`.
/// `p = 0`: no pacing.
struct RelayThreads {
    threads: Vec<RelayThread>,
}

struct RelayThread {
    handle: tokio::runtime::Handle,
    /// Bridges running on this thread.
    active: Arc<std::sync::atomic::AtomicUsize>,
    /// Wakes the pacer when the thread gets its first bridge.
    busy: Arc<Notify>,
}

static RELAY_THREADS: std::sync::OnceLock<RelayThreads> = std::sync::OnceLock::new();

/// Starts `n` relay threads (at least one) for all bridges started afterwards in this process,
/// waking at most once per `pace` while they have bridges (see [`RelayThreads`]; zero: on every
/// packet). Without it (tests, embedding) a bridge runs as a task on the runtime that starts it.
/// Calling it again once threads run is a no-op that returns how many run.
pub fn start_relay_threads(n: usize, pace: Duration) -> io::Result<usize> {
    if let Some(t) = RELAY_THREADS.get() {
        return Ok(t.threads.len());
    }
    let mut threads = Vec::new();
    for i in 0..n.max(1) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread = RelayThread {
            handle: rt.handle().clone(),
            active: Default::default(),
            busy: Default::default(),
        };
        let (active, busy) = (Arc::clone(&thread.active), Arc::clone(&thread.busy));
        std::thread::Builder::new()
            .name(format!("hookflash-relay-{i}"))
            .spawn(move || {
                rt.block_on(async move {
                    if !pace.is_zero() {
                        tokio::spawn(pace_thread(pace, active, busy));
                    }
                    std::future::pending::<()>().await
                })
            })?;
        threads.push(thread);
    }
    let count = threads.len();
    let _ = RELAY_THREADS.set(RelayThreads { threads });
    Ok(count)
}

/// The pacer of one relay thread (see [`RelayThreads`]).
async fn pace_thread(
    pace: Duration,
    active: Arc<std::sync::atomic::AtomicUsize>,
    busy: Arc<Notify>,
) {
    let mut last = std::time::Instant::now();
    loop {
        if active.load(Ordering::Acquire) == 0 {
            busy.notified().await;
            last = std::time::Instant::now();
            continue;
        }
        let work = RELAY_WORK.with(Cell::get);
        // Blocking this thread on purpose: its bridges' packets queue in their sockets.
        let elapsed = last.elapsed();
        if elapsed < pace {
            std::thread::sleep(pace - elapsed);
        }
        last = std::time::Instant::now();
        // The runtime polls epoll and runs the bridges with input before this task again.
        tokio::task::yield_now().await;
        if RELAY_WORK.with(Cell::get) == work {
            // Nothing arrived during a whole pace interval: block in epoll until a bridge
            // has something (its wake-up wakes this task), then pace again.
            wait_for_relay_work(work).await;
            last = std::time::Instant::now();
        }
    }
}

/// Returns once a bridge on this thread has run since the work count was `seen`.
async fn wait_for_relay_work(seen: u64) {
    poll_fn(|cx| {
        if RELAY_WORK.with(Cell::get) != seen {
            return Poll::Ready(());
        }
        PACER_WAITING.with(|p| p.set(Some(cx.waker().clone())));
        Poll::Pending
    })
    .await
}

/// Counts a bridge on its thread for as long as its task lives.
struct OnThread(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for OnThread {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Where a new bridge runs: the relay thread with the fewest bridges, or, without relay
/// threads, the runtime that starts it.
struct Placement {
    runtime: Option<tokio::runtime::Handle>,
    /// Counts the bridge on its relay thread; the relay keeps it for as long as it lives.
    on_thread: Option<OnThread>,
}

impl Placement {
    fn choose() -> Placement {
        let chosen = RELAY_THREADS.get().and_then(|t| {
            t.threads
                .iter()
                .min_by_key(|t| t.active.load(Ordering::Relaxed))
        });
        let Some(t) = chosen else {
            return Placement {
                runtime: None,
                on_thread: None,
            };
        };
        if t.active.fetch_add(1, Ordering::AcqRel) == 0 {
            t.busy.notify_one();
        }
        Placement {
            runtime: Some(t.handle.clone()),
            on_thread: Some(OnThread(Arc::clone(&t.active))),
        }
    }

    /// Runs `f` inside the chosen runtime's context (sockets created there join its epoll).
    fn enter<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.runtime {
            Some(handle) => {
                let _entered = handle.enter();
                f()
            }
            None => f(),
        }
    }

    fn spawn<F>(&self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        match &self.runtime {
            Some(handle) => drop(handle.spawn(task)),
            None => drop(tokio::spawn(task)),
        }
    }
}

impl Bridge {
    /// Spawns the relay task for legs `a` and `b` on a relay thread (see [`start_relay_threads`];
    /// without them, on the current tokio runtime, which must exist).
    /// The task runs inside a child of the current tracing span.
    pub fn start(
        a: RtpSocketPair,
        b: RtpSocketPair,
        opts: BridgeOptions,
        stats: Arc<MediaStats>,
    ) -> BridgeHandle {
        let start = Instant::now();
        let shared = Arc::new(Shared {
            ctrl: ControlSignal::default(),
            start,
            dirs: Default::default(),
            dropped: AtomicU64::new(0),
            foreign: AtomicU64::new(0),
            last_rtp: Default::default(),
            timeout_ms: AtomicU64::new(duration_ms(opts.inactivity_timeout)),
            timeout_changed: Notify::new(),
            local: Mutex::new([a.local_rtp, b.local_rtp]),
            remotes: Mutex::new([None, None]),
            played: Default::default(),
            playback_seq: Mutex::new(0),
            dtmf_seq: Mutex::new(0),
            dtmf_pt: Mutex::new([None, None]),
            dtmf_events: broadcast::channel(DTMF_EVENTS).0,
            recording: tokio::sync::Mutex::new(None),
            recording_id: AtomicU64::new(0),
            recording_seq: AtomicU64::new(0),
            listen_id: AtomicU64::new(0),
        });
        let (ctrl_tx, ctrl_rx) = mpsc::unbounded_channel();
        let (done_tx, done_rx) = watch::channel(());
        let (play_a_tx, play_a_rx) = watch::channel(PlaybackStatus::default());
        let (play_b_tx, play_b_rx) = watch::channel(PlaybackStatus::default());
        let (dtmf_a_tx, dtmf_a_rx) = watch::channel(DtmfSendStatus::default());
        let (dtmf_b_tx, dtmf_b_rx) = watch::channel(DtmfSendStatus::default());
        let span = tracing::debug_span!("bridge", a = %a.local_rtp, b = %b.local_rtp);
        let handle = BridgeHandle {
            ctrl: ctrl_tx,
            shared,
            done: done_rx,
            playback: [play_a_rx, play_b_rx],
            dtmf: [dtmf_a_rx, dtmf_b_rx],
        };
        // Built here, not inside the task, so the task's future holds the relay state once
        // (an async block would keep its inputs and the state built from them side by side).
        let mut placement = Placement::choose();
        // The sockets join the event loop of the runtime that runs this bridge.
        let legs = match placement.enter(|| (a.into_live(), b.into_live())) {
            (Ok(a), Ok(b)) => [LegIo::new(a), LegIo::new(b)],
            (Err(e), _) | (_, Err(e)) => {
                // The handle reports the bridge as stopped (its task never ran).
                tracing::error!(error = %e, "bridge cannot register its RTP sockets");
                return handle;
            }
        };
        stats.bridges_active.fetch_add(1, Ordering::Relaxed);
        let relay = Relay {
            legs,
            pt_map: [identity_map(), identity_map()],
            forwarding: [true, true],
            keepalive: [false, false],
            relay_on: [true, true],
            rewriter: [None, None],
            continuity_pinned: [false, false],
            tracker: [StreamTracker::default(), StreamTracker::default()],
            send_codec: [None, None],
            players: [None, None],
            ticker: None,
            played: [0, 0],
            play_status: [play_a_tx, play_b_tx],
            recv_law: [default_recv_laws(), default_recv_laws()],
            dtmf_pt: [NO_PT, NO_PT],
            dtmf_rx: [DtmfDetector::default(), DtmfDetector::default()],
            dtmf_tx: [None, None],
            dtmf_out_ts: [0, 0],
            dtmf_status: [dtmf_a_tx, dtmf_b_tx],
            recorder: None,
            listener: None,
            feeds: [None, None],
            srtp: [None, None],
            ctrl: ControlInbox::new(ctrl_rx),
            rotate: 0,
            local: [LocalCounters::default(), LocalCounters::default()],
            dropped: 0,
            foreign: 0,
            pending: Pending::default(),
            last_flush_ms: 0,
            shared: Arc::clone(&handle.shared),
            global: stats,
            _on_thread: placement.on_thread.take(),
            _done: done_tx,
        };
        placement.spawn(relay.run().instrument(span));
        handle
    }
}

fn duration_ms(d: Duration) -> u64 {
    if d.is_zero() {
        0
    } else {
        (d.as_millis() as u64).max(1)
    }
}

fn identity_map() -> [u8; 128] {
    std::array::from_fn(|i| i as u8)
}

/// RFC 3551 static payload types of G.711.
fn default_recv_laws() -> [Option<Law>; 128] {
    let mut t = [None; 128];
    t[0] = Some(Law::Mulaw);
    t[8] = Some(Law::Alaw);
    t
}

/// Controls a running bridge. Dropping it stops the bridge (like [`BridgeHandle::stop`]).
#[derive(Debug)]
pub struct BridgeHandle {
    ctrl: mpsc::UnboundedSender<Control>,
    shared: Arc<Shared>,
    done: watch::Receiver<()>,
    playback: [watch::Receiver<PlaybackStatus>; 2],
    dtmf: [watch::Receiver<DtmfSendStatus>; 2],
}

impl BridgeHandle {
    /// Every control message goes through here: the flag must be set before the send.
    fn post(&self, c: Control) -> Result<(), mpsc::error::SendError<Control>> {
        post_control(&self.ctrl, &self.shared.ctrl, c)
    }

    fn send(&self, c: Control) {
        if self.post(c).is_err() {
            tracing::debug!("bridge already stopped; control message ignored");
        }
    }

    /// Sets the RTP remote of `leg` from its SDP (RTCP: port + 1, see [`Self::set_remote_rtcp`]).
    /// A changed address clears the latch; the same address again is a no-op.
    pub fn set_remote(&self, leg: Leg, addr: SocketAddr) {
        let rtcp = SocketAddr::new(addr.ip(), addr.port().wrapping_add(1));
        self.send(Control::SetRemote {
            leg,
            rtp: Some(addr),
            rtcp: Some(rtcp),
            new_party: false,
        });
    }

    /// Like [`Self::set_remote`], for a different phone moved onto `leg`'s sockets by a
    /// re-INVITE (attended transfer, REFER/Replaces): packets the previous phone still has in
    /// flight cannot take the latch away from the new one.
    pub fn move_remote(&self, leg: Leg, addr: SocketAddr) {
        let rtcp = SocketAddr::new(addr.ip(), addr.port().wrapping_add(1));
        self.send(Control::SetRemote {
            leg,
            rtp: Some(addr),
            rtcp: Some(rtcp),
            new_party: true,
        });
    }

    /// Overrides the RTCP remote of `leg` (SDP `a=rtcp`). Call after `set_remote`.
    pub fn set_remote_rtcp(&self, leg: Leg, addr: SocketAddr) {
        self.send(Control::SetRemoteRtcp {
            leg,
            rtcp: Some(addr),
        });
    }

    /// Payload-type rewrites for packets coming *from* `from` (e.g. `[(101, 96)]`). Replaces the
    /// previous map; PTs not listed pass unchanged.
    pub fn set_pt_map(&self, from: Leg, map: Vec<(u8, u8)>) {
        self.send(Control::SetPtMap { from, map });
    }

    /// Turns relaying of RTP *from* `from` on or off (hold, mute). Packets received while off
    /// still count as activity and are counted as `held_back`, not as dropped. RTCP flows on.
    pub fn set_forwarding(&self, from: Leg, on: bool) {
        self.send(Control::SetForwarding { from, on });
    }

    /// While on, `leg` receives a silence frame every 20 ms whenever nothing else is sent to
    /// it (no relayed audio, playback or DTMF): a party that hears nothing (the other party
    /// is muted or held, an application is between prompts) still gets a stream at the
    /// packet rate, so its media-inactivity timer does not drop the call. The frames continue
    /// the stream the phone receives (same SSRC, sequence and timestamps move on).
    pub fn set_keepalive(&self, leg: Leg, on: bool) {
        self.send(Control::SetKeepalive { leg, on });
    }

    /// SRTP on `leg` (SDES, see [`crate::srtp`]): packets from it must authenticate with its
    /// key and are decrypted before anything else sees them (others are dropped and counted
    /// in `MediaStats::srtp_rejected`); everything sent to it is encrypted with ours. None:
    /// plain RTP again.
    pub fn set_srtp(&self, leg: Leg, srtp: Option<LegSrtp>) {
        self.send(Control::SetSrtp {
            leg,
            srtp: srtp.map(Box::new),
        });
    }

    /// Rewrites SSRC/sequence/timestamp of RTP *from* `from` so the other leg sees one continuous
    /// stream across remote changes and leg swaps (see [`StreamRewriter`]). Off by default.
    pub fn set_continuity(&self, from: Leg, on: bool) {
        self.send(Control::SetContinuity { from, on });
    }

    /// Replaces the socket pair of `leg` (its remote and latch are reset). The old pair is closed
    /// and its port returned to its pool.
    pub fn replace_leg(&self, leg: Leg, pair: RtpSocketPair) {
        lock(&self.shared.local)[leg.idx()] = pair.local_rtp;
        self.send(Control::ReplaceLeg { leg, pair });
    }

    /// The codec RTP generated *to* `leg` uses (players): the payload type and G.711 law
    /// negotiated towards that leg. Call after every SDP negotiation with that leg's phone
    /// (see [`Law::for_codec`]). Until then players send PCMU with PT 0.
    ///
    /// The same (PT, law) is also registered for decoding audio received *from* `leg` (the
    /// recorder), since a phone sends the payload types of its own SDP.
    pub fn set_send_codec(&self, leg: Leg, pt: u8, law: Law) {
        self.send(Control::SetSendCodec { leg, pt, law });
    }

    /// Registers a payload type `leg`'s phone may send, and its G.711 law, for decoding (the
    /// recorder). PT 0 (PCMU) and 8 (PCMA) are known from the start, and
    /// [`Self::set_send_codec`] registers its codec too: call this for further G.711 payload
    /// types of the leg's SDP (dynamic ones in particular). Other PTs are not recorded.
    pub fn set_recv_codec(&self, leg: Leg, pt: u8, law: Law) {
        self.send(Control::SetRecvCodec { leg, pt, law });
    }

    /// The telephone-event (RFC 4733) payload type negotiated with `leg` (the number in that
    /// leg's SDP). Enables receiving digits from that leg ([`Self::dtmf_events`]) and sending
    /// digits to it ([`Self::send_dtmf`]). Call after every negotiation with that leg's phone;
    /// [`Self::clear_dtmf_pt`] when a renegotiation drops telephone-event.
    pub fn set_dtmf_pt(&self, leg: Leg, pt: u8) {
        if pt >= 128 {
            tracing::warn!(?leg, pt, "invalid telephone-event payload type ignored");
            return;
        }
        lock(&self.shared.dtmf_pt)[leg.idx()] = Some(pt);
        self.send(Control::SetDtmfPt { leg, pt: Some(pt) });
    }

    /// `leg` did not negotiate telephone-event: [`Self::send_dtmf`] answers
    /// [`DtmfError::NoTelephoneEvent`]; a send in progress to that leg is cancelled.
    pub fn clear_dtmf_pt(&self, leg: Leg) {
        lock(&self.shared.dtmf_pt)[leg.idx()] = None;
        self.send(Control::SetDtmfPt { leg, pt: None });
    }

    /// A receiver of the key presses detected on both legs, one [`DtmfEvent`] per press. Only
    /// presses after this call are seen; a receiver that lags more than 64 events behind loses
    /// the oldest (`RecvError::Lagged`).
    pub fn dtmf_events(&self) -> broadcast::Receiver<DtmfEvent> {
        self.shared.dtmf_events.subscribe()
    }

    /// Sends `digits` (`0-9 * # A-D`) to `leg` as RFC 4733 telephone-events (see
    /// [`crate::dtmf`] for the packet schedule), after any send still in progress to that leg.
    /// Everything is checked before anything is sent: invalid characters or options,
    /// [`DtmfError::NoTelephoneEvent`] when `leg` did not negotiate telephone-event (fall back
    /// to SIP INFO). Await the end with [`Self::dtmf_done`].
    pub fn send_dtmf(
        &self,
        leg: Leg,
        digits: &str,
        opts: DtmfOptions,
    ) -> Result<DtmfSendId, DtmfError> {
        let codes = parse_digits(digits)?;
        opts.validate()?;
        if lock(&self.shared.dtmf_pt)[leg.idx()].is_none() {
            return Err(DtmfError::NoTelephoneEvent { leg });
        }
        if self.is_stopped() {
            return Err(DtmfError::BridgeStopped);
        }
        let mut seq = lock(&self.shared.dtmf_seq);
        *seq += 1;
        let id = DtmfSendId { leg, n: *seq };
        let job = DtmfJob {
            id,
            codes,
            opts,
            cancelled: false,
        };
        self.post(Control::SendDtmf { job })
            .map_err(|_| DtmfError::BridgeStopped)?;
        Ok(id)
    }

    /// Cancels the DTMF sends to `leg`: a tone in progress is ended properly (its end packets
    /// go out), queued digits are dropped. They end as [`DtmfEnd::Cancelled`].
    pub fn stop_dtmf(&self, leg: Leg) {
        self.send(Control::StopDtmf { leg });
    }

    /// The DTMF send state of `leg`.
    pub fn dtmf_status(&self, leg: Leg) -> DtmfSendStatus {
        self.dtmf[leg.idx()].borrow().clone()
    }

    /// Resolves when DTMF send `id` is over, with how it ended (`None` only if more than 8
    /// later sends on the leg ended before this was polled). Does not borrow the handle.
    pub fn dtmf_done(
        &self,
        id: DtmfSendId,
    ) -> impl std::future::Future<Output = Option<DtmfEnd>> + Send + 'static {
        let mut rx = self.dtmf[id.leg.idx()].clone();
        async move {
            loop {
                {
                    let s = rx.borrow_and_update();
                    if s.is_over(id) {
                        return s.end_of(id.n);
                    }
                }
                if rx.changed().await.is_err() {
                    let s = rx.borrow();
                    return Some(s.end_of(id.n).unwrap_or(DtmfEnd::BridgeStopped));
                }
            }
        }
    }

    /// Starts recording the call into a new stereo WAV file at `path` (left = audio from leg
    /// A, right = from leg B; see [`crate::record`]). The file must not exist; missing parent
    /// directories are created. One recording per bridge at a time.
    pub async fn start_recording(
        &self,
        path: impl Into<PathBuf>,
        opts: RecordOptions,
    ) -> Result<RecordingId, RecordError> {
        let mut slot = self.shared.recording.lock().await;
        if slot.is_some() {
            return Err(RecordError::AlreadyRecording);
        }
        if self.is_stopped() {
            return Err(RecordError::BridgeStopped);
        }
        let n = self.shared.recording_seq.fetch_add(1, Ordering::Relaxed) + 1;
        let (tap, rec) = crate::record::start(RecordingId(n), path.into(), &opts).await?;
        let id = rec.id;
        if self
            .post(Control::StartRecording { tap: Box::new(tap) })
            .is_err()
        {
            // The bridge stopped meanwhile: the writer closes the (empty) file; remove it.
            let path = rec.path.clone();
            tokio::spawn(async move {
                let _ = rec.done.await;
                let _ = tokio::fs::remove_file(&path).await;
            });
            return Err(RecordError::BridgeStopped);
        }
        self.shared.recording_id.store(n, Ordering::Relaxed);
        *slot = Some(rec);
        Ok(id)
    }

    /// The running recording, if any.
    pub fn recording(&self) -> Option<RecordingId> {
        match self.shared.recording_id.load(Ordering::Relaxed) {
            0 => None,
            n => Some(RecordingId(n)),
        }
    }

    /// Pauses the recording: silence is written until [`Self::resume_recording`] (the pause
    /// stays audible as a gap in the timeline), audio received meanwhile is not recorded.
    pub fn pause_recording(&self) -> Result<(), RecordError> {
        self.set_recording_paused(true)
    }

    pub fn resume_recording(&self) -> Result<(), RecordError> {
        self.set_recording_paused(false)
    }

    fn set_recording_paused(&self, paused: bool) -> Result<(), RecordError> {
        if self.recording().is_none() {
            return Err(RecordError::NotRecording);
        }
        self.send(Control::PauseRecording { paused });
        Ok(())
    }

    /// Stops the recording and waits until the file is complete (header fixed, fsynced).
    /// Also returns the summary of a recording that ended because the bridge stopped.
    pub async fn stop_recording(&self) -> Result<RecordingSummary, RecordError> {
        let rec = {
            let mut slot = self.shared.recording.lock().await;
            let rec = slot.take().ok_or(RecordError::NotRecording)?;
            self.shared.recording_id.store(0, Ordering::Relaxed);
            self.send(Control::StopRecording { id: rec.id });
            rec
        };
        match rec.done.await {
            Ok(r) => r,
            Err(_) => Err(RecordError::Writer {
                path: rec.path,
                reason: "the writer task ended without a result".into(),
            }),
        }
    }

    /// Starts tapping the call's decoded audio (both legs, 20 ms frames; see
    /// [`crate::listen`]), replacing a tap that ran. At most `queue_frames` frames wait for the
    /// consumer; more are dropped. Dropping the stream's receiver ends the tap.
    pub fn start_listen(&self, queue_frames: usize) -> Result<ListenStream, ListenError> {
        if self.is_stopped() {
            return Err(ListenError::BridgeStopped);
        }
        let n = self.shared.recording_seq.fetch_add(1, Ordering::Relaxed) + 1;
        let (tap, stream) = ListenTap::new(ListenId(n), queue_frames);
        self.post(Control::StartListen { tap: Box::new(tap) })
            .map_err(|_| ListenError::BridgeStopped)?;
        self.shared.listen_id.store(n, Ordering::Relaxed);
        Ok(stream)
    }

    /// The running listen tap, if one was started and not stopped here (a tap whose consumer
    /// went away is still named until [`Self::stop_listen`]).
    pub fn listening(&self) -> Option<ListenId> {
        match self.shared.listen_id.load(Ordering::Relaxed) {
            0 => None,
            n => Some(ListenId(n)),
        }
    }

    /// Pauses (nothing is sent, audio meanwhile is dropped) or resumes tap `id`.
    pub fn pause_listen(&self, id: ListenId, paused: bool) {
        self.send(Control::PauseListen { id, paused });
    }

    /// Ends tap `id` (its stream then ends).
    pub fn stop_listen(&self, id: ListenId) {
        let _ =
            self.shared
                .listen_id
                .compare_exchange(id.0, 0, Ordering::Relaxed, Ordering::Relaxed);
        self.send(Control::StopListen { id });
    }

    /// Starts feeding `leg`'s decoded audio to a conference (see [`crate::listen::LegFeed`]),
    /// replacing a feed of that leg. At most `queue` chunks (one per packet) wait.
    pub fn start_feed(&self, leg: Leg, queue: usize) -> Result<FeedStream, ListenError> {
        if self.is_stopped() {
            return Err(ListenError::BridgeStopped);
        }
        let n = self.shared.recording_seq.fetch_add(1, Ordering::Relaxed) + 1;
        let (feed, stream) = LegFeed::new(FeedId(n), queue);
        self.post(Control::StartFeed {
            leg,
            feed: Box::new(feed),
        })
        .map_err(|_| ListenError::BridgeStopped)?;
        Ok(stream)
    }

    /// Ends feed `id` of `leg` (its stream then ends).
    pub fn stop_feed(&self, leg: Leg, id: FeedId) {
        self.send(Control::StopFeed { leg, id });
    }

    /// Plays a stream of 20 ms frames to `leg` (replacing what played there, as
    /// [`Self::play`]): each tick takes the next queued frame, silence when none is queued.
    /// The playback ends ([`PlaybackEnd::Finished`]) when the sender is dropped, or by
    /// [`Self::stop_play`]. The queue holds `queue_frames` frames; the sender waits for room.
    pub fn play_stream(
        &self,
        leg: Leg,
        queue_frames: usize,
    ) -> (PlaybackId, mpsc::Sender<StreamFrame>) {
        let (tx, frames) = mpsc::channel(queue_frames.max(1));
        let mut seq = lock(&self.shared.playback_seq);
        *seq += 1;
        let id = PlaybackId { leg, n: *seq };
        self.send(Control::PlayStream { id, frames });
        (id, tx)
    }

    /// Plays `pcm` to `leg`, replacing whatever played there (which ends as
    /// [`PlaybackEnd::Replaced`]). While it plays, the other leg's RTP is not relayed to `leg`
    /// (see the module doc). A non-looped playback ends after its last frame; an empty clip
    /// ends at once. Await the end with [`Self::playback_done`].
    pub fn play(&self, leg: Leg, pcm: Pcm8k, opts: PlayOptions) -> PlaybackId {
        let mut seq = lock(&self.shared.playback_seq);
        *seq += 1;
        let id = PlaybackId { leg, n: *seq };
        self.send(Control::Play { id, pcm, opts });
        id
    }

    /// Stops what plays to `leg` ([`PlaybackEnd::Stopped`]) and resumes relaying the other
    /// leg's RTP to it (if its forwarding is on). No-op when nothing plays.
    pub fn stop_play(&self, leg: Leg) {
        self.send(Control::StopPlay { leg });
    }

    /// The current playback state of `leg`.
    pub fn playback_status(&self, leg: Leg) -> PlaybackStatus {
        self.playback[leg.idx()].borrow().clone()
    }

    /// A receiver of `leg`'s playback state, to follow playbacks as they start and end.
    pub fn watch_playback(&self, leg: Leg) -> watch::Receiver<PlaybackStatus> {
        self.playback[leg.idx()].clone()
    }

    /// Resolves when playback `id` is over, with how it ended. `None` only if so many later
    /// playbacks on the same leg ended before this was polled that the reason was forgotten
    /// (more than 8). The future does not borrow the handle (it can be spawned); a bridge that
    /// stops ends it with [`PlaybackEnd::BridgeStopped`].
    pub fn playback_done(
        &self,
        id: PlaybackId,
    ) -> impl std::future::Future<Output = Option<PlaybackEnd>> + Send + 'static {
        let mut rx = self.playback[id.leg.idx()].clone();
        async move {
            loop {
                {
                    let s = rx.borrow_and_update();
                    if s.is_over(id) {
                        return s.end_of(id.n);
                    }
                }
                if rx.changed().await.is_err() {
                    // The task is gone; it recorded every end before dropping the sender.
                    let s = rx.borrow();
                    return Some(s.end_of(id.n).unwrap_or(PlaybackEnd::BridgeStopped));
                }
            }
        }
    }

    /// `replace_leg(Leg::B, b)`.
    pub fn attach_b(&self, b: RtpSocketPair) {
        self.replace_leg(Leg::B, b);
    }

    /// The local RTP address of `leg`'s sockets (put the advertised IP and this port in its SDP).
    pub fn local_addr(&self, leg: Leg) -> SocketAddr {
        lock(&self.shared.local)[leg.idx()]
    }

    pub fn stats(&self) -> BridgeStats {
        let s = &self.shared;
        let dir = |i: usize| DirectionStats {
            packets: s.dirs[i].packets.load(Ordering::Relaxed),
            bytes: s.dirs[i].bytes.load(Ordering::Relaxed),
            rtcp_packets: s.dirs[i].rtcp_packets.load(Ordering::Relaxed),
            held_back: s.dirs[i].held_back.load(Ordering::Relaxed),
        };
        let last = |i: usize| match s.last_rtp[i].load(Ordering::Relaxed) {
            0 => None,
            ms => Some(s.start + Duration::from_millis(ms - 1)),
        };
        let remotes = *lock(&s.remotes);
        BridgeStats {
            a_to_b: dir(0),
            b_to_a: dir(1),
            dropped: s.dropped.load(Ordering::Relaxed),
            foreign: s.foreign.load(Ordering::Relaxed),
            last_packet_a: last(0),
            last_packet_b: last(1),
            remote_a: remotes[0],
            remote_b: remotes[1],
            played_a: s.played[0].load(Ordering::Relaxed),
            played_b: s.played[1].load(Ordering::Relaxed),
        }
    }

    /// Changes the inactivity timeout (`None` disables it, e.g. while a call is on hold with
    /// `a=inactive`). A pending [`Self::inactive`] picks up the change.
    pub fn set_inactivity_timeout(&self, timeout: Option<Duration>) {
        let ms = timeout.map(duration_ms).unwrap_or(0);
        self.shared.timeout_ms.store(ms, Ordering::Relaxed);
        self.shared.timeout_changed.notify_waiters();
    }

    /// Resolves once no RTP has been accepted from either leg for the inactivity timeout
    /// (measured from bridge start until the first packet). Cancel-safe; never resolves while
    /// the timeout is disabled.
    pub async fn inactive(&self) {
        let s = &self.shared;
        loop {
            // Created before reading the timeout so a concurrent change is not missed.
            let changed = s.timeout_changed.notified();
            let timeout = s.timeout_ms.load(Ordering::Relaxed);
            if timeout == 0 {
                changed.await;
                continue;
            }
            let last = s
                .last_rtp
                .iter()
                .map(|t| t.load(Ordering::Relaxed).saturating_sub(1))
                .max()
                .unwrap_or(0);
            let deadline = s.start + Duration::from_millis(last + timeout);
            if Instant::now() >= deadline {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {}
                _ = changed => {}
            }
        }
    }

    /// Ends the relay task; it closes the sockets and returns the ports to the pool as it exits
    /// (asynchronously, within a scheduler tick; await [`Self::stopped`] to be sure).
    pub fn stop(&self) {
        // A closed channel means the task already ended.
        let _ = self.post(Control::Stop);
    }

    /// Resolves when the relay task has ended and its sockets are closed.
    pub async fn stopped(&self) {
        let mut done = self.done.clone();
        while done.changed().await.is_ok() {}
    }

    pub fn is_stopped(&self) -> bool {
        self.done.has_changed().is_err()
    }
}

impl Drop for BridgeHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

struct LegIo {
    pair: LivePair,
    rtp: Peer,
    rtcp: Peer,
    /// Bumped when the leg's remote or sockets change: the source id for the StreamRewriter.
    generation: u32,
}

impl LegIo {
    fn new(pair: LivePair) -> LegIo {
        LegIo {
            pair,
            rtp: Peer::default(),
            rtcp: Peer::default(),
            generation: 0,
        }
    }
}

#[derive(Default)]
struct LocalCounters {
    packets: u64,
    bytes: u64,
    rtcp_packets: u64,
    held_back: u64,
}

#[derive(Default)]
struct Pending {
    packets: u64,
    bytes: u64,
    dropped: u64,
    played: u64,
}

/// One playback towards a leg.
struct Player {
    id: PlaybackId,
    pcm: Pcm8k,
    /// Next sample to play.
    pos: usize,
    looped: bool,
    /// The player's own numbering (random start); the StreamRewriter maps it onto the stream
    /// the phone already receives.
    seq: u16,
    ts: u32,
    /// The next frame starts a talkspurt (marker bit): ticks were skipped before it.
    resync: bool,
    /// A streamed source ([`BridgeHandle::play_stream`]) instead of `pcm`.
    stream: Option<mpsc::Receiver<StreamFrame>>,
    /// The silence of [`BridgeHandle::set_keepalive`]: no playback status of its own, and
    /// any real playback replaces it.
    keepalive: bool,
}

impl Player {
    /// Marker, sequence number and timestamp of the next frame; moves the numbering on by one
    /// frame.
    fn next_header(&mut self) -> (bool, u16, u32) {
        let h = (self.resync, self.seq, self.ts);
        self.resync = false;
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(FRAME_SAMPLES as u32);
        h
    }

    /// The clock skipped `ticks` frames (the task fell too far behind to catch up): the
    /// timestamp moves on by that time, so the stream's timestamps keep pace with the real time
    /// (a receiver treats the gap like lost packets or a silence), the sequence number does not
    /// (nothing was sent), and the next frame carries the marker bit. The clip's position is
    /// kept: nothing of an announcement is skipped.
    fn skip_ticks(&mut self, ticks: u32) {
        if ticks == 0 {
            return;
        }
        self.ts = self
            .ts
            .wrapping_add(ticks.wrapping_mul(FRAME_SAMPLES as u32));
        self.resync = true;
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Rtp,
    Rtcp,
}

/// The four sockets in polling order.
const SOCKETS: [(Leg, Kind); 4] = [
    (Leg::A, Kind::Rtp),
    (Leg::B, Kind::Rtp),
    (Leg::A, Kind::Rtcp),
    (Leg::B, Kind::Rtcp),
];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum DropReason {
    Foreign,
    Other,
}

/// The task state. Owned by the task; nothing here is shared except through `shared`.
struct Relay {
    legs: [LegIo; 2],
    /// PT rewrite table per *from* leg.
    pt_map: [[u8; 128]; 2],
    forwarding: [bool; 2],
    /// Per leg: send silence to it when nothing else is ([`BridgeHandle::set_keepalive`]).
    keepalive: [bool; 2],
    /// Per *from* leg: `forwarding` and no player towards the other leg. The fast-path check.
    relay_on: [bool; 2],
    /// Per *from* leg: rewrites packets from that leg, i.e. the stream *to* the other leg.
    rewriter: [Option<StreamRewriter>; 2],
    /// Per *from* leg: the rewriter was engaged by a player and stays (set_continuity(false)
    /// is ignored).
    continuity_pinned: [bool; 2],
    /// Per *to* leg: the newest header relayed there untouched (no rewriter).
    tracker: [StreamTracker; 2],
    /// Per *to* leg: (PT, law) of generated RTP.
    send_codec: [Option<(u8, Law)>; 2],
    /// Per *to* leg.
    players: [Option<Player>; 2],
    /// The 20 ms clock; only while a player is active.
    ticker: Option<Interval>,
    /// Per *to* leg: packets played.
    played: [u64; 2],
    /// Per *to* leg.
    play_status: [watch::Sender<PlaybackStatus>; 2],
    /// Per *from* leg: the G.711 law of each payload type (recording).
    recv_law: [[Option<Law>; 128]; 2],
    /// Per leg: its telephone-event PT, [`NO_PT`] if none.
    dtmf_pt: [u8; 2],
    /// Per *from* leg.
    dtmf_rx: [DtmfDetector; 2],
    /// Per *to* leg.
    dtmf_tx: [Option<DtmfSender>; 2],
    /// Per *to* leg: the (rewritten) timestamp of the event being sent.
    dtmf_out_ts: [u32; 2],
    /// Per *to* leg.
    dtmf_status: [watch::Sender<DtmfSendStatus>; 2],
    recorder: Option<RecorderTap>,
    /// The audio tap of a `listen` (boxed: the relay stays small without one).
    listener: Option<Box<ListenTap>>,
    /// Per *from* leg: its audio decoded towards a conference (boxed, as the listener).
    feeds: [Option<Box<LegFeed>>; 2],
    /// Per leg: its SRTP contexts when it speaks SRTP ([`BridgeHandle::set_srtp`]).
    srtp: [Option<Box<LegSrtp>>; 2],
    ctrl: ControlInbox<Control>,
    rotate: usize,
    local: [LocalCounters; 2],
    dropped: u64,
    foreign: u64,
    pending: Pending,
    last_flush_ms: u64,
    shared: Arc<Shared>,
    global: Arc<MediaStats>,
    /// Counts this bridge on its relay thread while it lives.
    _on_thread: Option<OnThread>,
    // Last field: dropped after the sockets, so `stopped()` means the ports are free.
    _done: watch::Sender<()>,
}

/// What senders share with a [`ControlInbox`]: how many messages were posted, and the relay
/// task's waker, which stays registered (senders wake it by reference).
#[derive(Debug, Default)]
struct ControlSignal {
    posted: AtomicU64,
    waker: Mutex<Option<std::task::Waker>>,
}

/// Sends `msg` to a [`ControlInbox`]: counted in `posted` first, then sent, then the relay
/// task woken.
fn post_control<T>(
    tx: &mpsc::UnboundedSender<T>,
    signal: &ControlSignal,
    msg: T,
) -> Result<(), mpsc::error::SendError<T>> {
    signal.posted.fetch_add(1, Ordering::AcqRel);
    tx.send(msg)?;
    let waker = lock(&signal.waker).clone();
    if let Some(waker) = waker {
        waker.wake();
    }
    Ok(())
}

/// The receiving end of a relay's control channel, polled only when a message was posted
/// that has not been taken yet: polling the tokio channel on every packet wake-up costs
/// measurable CPU. Senders count each message *before* sending it and wake the relay task
/// *after* ([`post_control`]), through a waker of our own that the relay registers on every
/// look (a lock and a `will_wake` compare) and that a wake-up does not consume. The
/// channel's own waker could not be relied on: a send's wake-up takes it out of the channel,
/// and when the relay on another core had already taken that send's message (it was in the
/// channel before the wake-up ran) and registered again, the late wake-up took the new
/// registration, the relay found nothing new to read and did not poll the channel again, and
/// the next message - a call's `Stop` - woke nobody: the bridge kept running with its ports
/// until a packet arrived (issue 17's soak: one bridge in 114,400).
struct ControlInbox<T> {
    rx: mpsc::UnboundedReceiver<T>,
    taken: u64,
}

impl<T> ControlInbox<T> {
    fn new(rx: mpsc::UnboundedReceiver<T>) -> Self {
        Self { rx, taken: 0 }
    }

    fn poll_recv(&mut self, signal: &ControlSignal, cx: &mut Context<'_>) -> Poll<Option<T>> {
        {
            let mut waker = lock(&signal.waker);
            if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *waker = Some(cx.waker().clone());
            }
        }
        // Registered before the count is read: a message posted after this read wakes us.
        if signal.posted.load(Ordering::Acquire) == self.taken {
            return Poll::Pending;
        }
        let rx = &mut self.rx;
        let mut recv = std::pin::pin!(tokio::task::unconstrained(poll_fn(|cx| rx.poll_recv(cx))));
        let r = std::future::Future::poll(recv.as_mut(), cx);
        if let Poll::Ready(Some(_)) = r {
            self.taken += 1;
        }
        r
    }
}

impl Relay {
    /// The bridge's task. A `poll_fn` that owns the relay, not an `async fn`: an async fn keeps
    /// its argument and the body's copy of it side by side (twice the relay's 2 KB per
    /// bridge), and boxing the relay instead would put its hot state on another memory page
    /// than the task's, touched on every wake-up.
    fn run(mut self) -> impl std::future::Future<Output = ()> {
        let mut started = false;
        poll_fn(move |cx| {
            if !started {
                started = true;
                tracing::debug!("bridge started");
            }
            note_relay_work();
            let done = RECV_BATCH.with(|batch| match batch.try_borrow_mut() {
                Ok(mut batch) => self.poll(cx, &mut batch),
                // Not reachable (a bridge never polls another), but never a panic.
                Err(_) => self.poll(cx, &mut RecvBatch::new()),
            });
            if done.is_ready() {
                tracing::debug!(
                    a_to_b = self.local[0].packets,
                    b_to_a = self.local[1].packets,
                    dropped = self.dropped,
                    "bridge stopped"
                );
            }
            done
        })
    }

    fn poll(&mut self, cx: &mut Context<'_>, batch: &mut RecvBatch) -> Poll<()> {
        loop {
            match self.ctrl.poll_recv(&self.shared.ctrl, cx) {
                Poll::Ready(Some(Control::Stop)) | Poll::Ready(None) => return Poll::Ready(()),
                Poll::Ready(Some(c)) => self.apply(c),
                Poll::Pending => break,
            }
        }
        if self.ticker.is_some() {
            self.poll_ticker(cx, batch.scratch());
        }
        let mut budget = BUDGET;
        let mut idle = 0;
        let mut i = self.rotate;
        self.rotate = (self.rotate + 1) % SOCKETS.len();
        // Round-robin one batch per socket until all four report Pending in a row (each then
        // has our waker registered). A batch is everything queued on the socket (up to
        // `BATCH`); a short batch means the queue is empty, so the socket's readiness is
        // cleared without the extra receive that would fail with EAGAIN. (Clearing is safe:
        // a datagram that arrives meanwhile raises a new readiness event, which tokio does
        // not clear.)
        while idle < SOCKETS.len() {
            let (leg, kind) = SOCKETS[i];
            i = (i + 1) % SOCKETS.len();
            let io = &self.legs[leg.idx()];
            let sock = match kind {
                Kind::Rtp => &io.pair.rtp,
                Kind::Rtcp => &io.pair.rtcp,
            };
            let mut ready = match sock.poll_read_ready(cx) {
                Poll::Pending => {
                    idle += 1;
                    continue;
                }
                Poll::Ready(Ok(ready)) => ready,
                Poll::Ready(Err(e)) => {
                    self.on_recv_error(leg, e);
                    idle += 1;
                    continue;
                }
            };
            let mut got = 0;
            let received = ready.try_io(|sock| {
                got = batch.recv(sock.as_raw_fd())?;
                if got < BATCH {
                    Err(io::ErrorKind::WouldBlock.into())
                } else {
                    Ok(())
                }
            });
            match received {
                // A full batch, or a short one (`WouldBlock`: the readiness was cleared).
                Ok(Ok(())) | Err(_) => {}
                // ECONNREFUSED after an ICMP port-unreachable for an earlier send, etc.: the
                // socket is still fine.
                Ok(Err(e)) => self.on_recv_error(leg, e),
            }
            for d in 0..got {
                let (pkt, src) = batch.datagram(d);
                if let Some(src) = src {
                    self.on_packet(leg, kind, src, pkt);
                }
            }
            idle = 0;
            budget = budget.saturating_sub(got.max(1));
            if budget == 0 {
                self.publish();
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
        self.publish();
        Poll::Pending
    }

    fn on_recv_error(&mut self, leg: Leg, e: io::Error) {
        tracing::trace!(?leg, error = %e, "recv error ignored");
    }

    fn apply(&mut self, c: Control) {
        tracing::debug!(?c, "bridge control");
        match c {
            Control::SetRemote {
                leg,
                rtp,
                rtcp,
                new_party,
            } => {
                let io = &mut self.legs[leg.idx()];
                let changed = if new_party {
                    io.rtcp.move_to_new_party(rtcp);
                    io.rtp.move_to_new_party(rtp)
                } else {
                    io.rtcp.set_sdp(rtcp);
                    io.rtp.set_sdp(rtp)
                };
                if changed {
                    io.generation = io.generation.wrapping_add(1);
                }
                self.publish_remote(leg);
            }
            Control::SetRemoteRtcp { leg, rtcp } => {
                self.legs[leg.idx()].rtcp.set_sdp(rtcp);
            }
            Control::SetPtMap { from, map } => {
                let t = &mut self.pt_map[from.idx()];
                *t = identity_map();
                for (src, dst) in map {
                    if src < 128 && dst < 128 {
                        t[src as usize] = dst;
                    } else {
                        tracing::warn!(src, dst, "ignoring invalid payload type mapping");
                    }
                }
            }
            Control::SetForwarding { from, on } => {
                self.forwarding[from.idx()] = on;
                self.update_relay_on();
            }
            Control::SetSrtp { leg, srtp } => {
                self.srtp[leg.idx()] = srtp;
            }
            Control::SetKeepalive { leg, on } => {
                self.keepalive[leg.idx()] = on;
                self.sync_keepalive(leg);
            }
            Control::SetContinuity { from, on } => {
                let r = &mut self.rewriter[from.idx()];
                match (on, r.is_some()) {
                    (true, false) => *r = Some(StreamRewriter::with_random_ssrc()),
                    (false, true) if self.continuity_pinned[from.idx()] => {
                        tracing::debug!(?from, "continuity stays on after a playback");
                    }
                    (false, _) => *r = None,
                    _ => {}
                }
            }
            Control::SetSendCodec { leg, pt, law } => {
                self.send_codec[leg.idx()] = Some((pt & 0x7f, law));
                self.recv_law[leg.idx()][(pt & 0x7f) as usize] = Some(law);
            }
            Control::SetRecvCodec { leg, pt, law } => {
                self.recv_law[leg.idx()][(pt & 0x7f) as usize] = Some(law);
            }
            Control::SetDtmfPt { leg, pt } => {
                self.dtmf_pt[leg.idx()] = pt.map_or(NO_PT, |p| p & 0x7f);
                if pt.is_none() {
                    // No end packets either: the phone no longer knows the payload type.
                    if let Some(sender) = self.dtmf_tx[leg.idx()].take() {
                        self.dtmf_status[leg.idx()].send_modify(|s| {
                            for id in sender.job_ids() {
                                s.record_end(id, DtmfEnd::Cancelled);
                            }
                        });
                        self.update_relay_on();
                        self.release_clock();
                    }
                }
            }
            Control::SendDtmf { job } => self.start_dtmf(job),
            Control::StopDtmf { leg } => self.cancel_dtmf(leg),
            Control::StartRecording { mut tap } => {
                tap.attach_stats(&self.global);
                if let Some(old) = self.recorder.replace(*tap) {
                    old.finish();
                }
                self.ensure_clock();
            }
            Control::PauseRecording { paused } => {
                if let Some(r) = self.recorder.as_mut() {
                    r.set_paused(paused);
                }
            }
            Control::StopRecording { id } => {
                if self.recorder.as_ref().is_some_and(|r| r.id == id) {
                    if let Some(r) = self.recorder.take() {
                        r.finish();
                    }
                    self.release_clock();
                }
            }
            Control::StartListen { tap } => {
                if let Some(old) = self.listener.replace(tap) {
                    old.finish();
                }
                self.ensure_clock();
            }
            Control::PauseListen { id, paused } => {
                if let Some(l) = self.listener.as_mut().filter(|l| l.id == id) {
                    l.set_paused(paused);
                }
            }
            Control::StopListen { id } => {
                if self.listener.as_ref().is_some_and(|l| l.id == id) {
                    if let Some(l) = self.listener.take() {
                        l.finish();
                    }
                    self.release_clock();
                }
            }
            Control::StartFeed { leg, feed } => {
                tracing::debug!(?leg, id = %feed.id, "conference feed started");
                self.feeds[leg.idx()] = Some(feed);
            }
            Control::StopFeed { leg, id } => {
                if self.feeds[leg.idx()].as_ref().is_some_and(|f| f.id == id) {
                    tracing::debug!(?leg, %id, "conference feed stopped");
                    self.feeds[leg.idx()] = None;
                }
            }
            Control::PlayStream { id, frames } => self.start_player(
                id,
                Pcm8k::new(Vec::new()),
                PlayOptions::default(),
                Some(frames),
            ),
            Control::Play { id, pcm, opts } => self.start_player(id, pcm, opts, None),
            Control::StopPlay { leg } => self.end_player(leg, PlaybackEnd::Stopped),
            Control::ReplaceLeg { leg, pair } => {
                let pair = match pair.into_live() {
                    Ok(p) => p,
                    Err(e) => {
                        // The leg keeps its old sockets; the new pair closes here.
                        tracing::error!(?leg, error = %e, "cannot register the new RTP sockets");
                        return;
                    }
                };
                let io = &mut self.legs[leg.idx()];
                let generation = io.generation.wrapping_add(1);
                // The old pair drops here: sockets closed, port back to its pool.
                *io = LegIo::new(pair);
                io.generation = generation;
                self.publish_remote(leg);
            }
            Control::Stop => {}
        }
    }

    fn publish_remote(&self, leg: Leg) {
        lock(&self.shared.remotes)[leg.idx()] = self.legs[leg.idx()].rtp.dest();
    }

    fn drop_packet(&mut self, why: DropReason) {
        self.dropped += 1;
        self.pending.dropped += 1;
        if why == DropReason::Foreign {
            self.foreign += 1;
        }
    }

    fn on_packet(&mut self, from: Leg, kind: Kind, src: SocketAddr, pkt: &mut [u8]) {
        let pkt = match self.srtp[from.idx()].as_mut() {
            None => pkt,
            Some(srtp) => {
                // Before latching and everything else: only what authenticates is audio.
                let rtcp = kind == Kind::Rtcp || is_rtcp(pkt);
                match srtp.unprotect(rtcp, pkt) {
                    Some(n) => &mut pkt[..n],
                    None => {
                        self.global.srtp_rejected.fetch_add(1, Ordering::Relaxed);
                        tracing::trace!(?from, %src, "packet did not authenticate as SRTP: dropped");
                        return self.drop_packet(DropReason::Other);
                    }
                }
            }
        };
        if kind == Kind::Rtcp || is_rtcp(pkt) {
            return self.on_rtcp(from, kind, src, pkt);
        }
        if pkt.len() < crate::rtp::RTP_HEADER_LEN || pkt[0] >> 6 != 2 {
            // STUN keepalives, garbage.
            tracing::trace!(?from, %src, len = pkt.len(), "non-RTP packet dropped");
            return self.drop_packet(DropReason::Other);
        }
        let f = from.idx();
        let ssrc = u32::from_be_bytes([pkt[8], pkt[9], pkt[10], pkt[11]]);
        // One clock read per packet: for the latch rules and the inactivity stamp below.
        let now = self.shared.start.elapsed();
        match self.legs[f].rtp.accept(src, ssrc, now) {
            Accept::Ok => {}
            Accept::Latched => {
                tracing::debug!(?from, %src, "rtp latched");
                self.publish_remote(from);
            }
            Accept::Foreign => {
                tracing::trace!(?from, %src, "rtp from foreign source dropped");
                return self.drop_packet(DropReason::Foreign);
            }
        }
        let now_ms = now.as_millis() as u64;
        self.shared.last_rtp[f].store(now_ms + 1, Ordering::Relaxed);
        if now_ms.saturating_sub(self.last_flush_ms) >= FLUSH_INTERVAL_MS {
            self.flush_global(now_ms);
        }
        let pt = pkt[1] & 0x7f;
        if pt == self.dtmf_pt[f] {
            self.on_dtmf_packet(from, pkt);
        } else {
            if self.dtmf_rx[f].is_pending() {
                self.on_audio_after_dtmf(from, pkt);
            }
            if self.recorder.is_some() && self.forwarding[f] {
                self.record_packet(from, pt, pkt);
            }
            if self.listener.is_some() {
                self.listen_packet(from, pt, pkt);
            }
            if self.feeds[f].is_some() {
                self.feed_packet(from, pt, pkt);
            }
        }
        if !self.relay_on[f] {
            self.local[f].held_back += 1;
            return;
        }
        let mapped = self.pt_map[f][pt as usize];
        if mapped != pt {
            pkt[1] = (pkt[1] & 0x80) | mapped;
        }
        if let Some(rw) = self.rewriter[f].as_mut() {
            rw.rewrite_at(pkt, self.legs[f].generation, now);
        } else {
            self.tracker[from.other().idx()].note_at(pkt, now);
        }
        let to = &self.legs[from.other().idx()];
        let Some(dest) = to.rtp.dest() else {
            return self.drop_packet(DropReason::Other);
        };
        match send_to_leg(
            &mut self.srtp[from.other().idx()],
            &to.pair.rtp,
            false,
            pkt,
            dest,
        ) {
            Ok(_) => {
                let c = &mut self.local[f];
                c.packets += 1;
                c.bytes += pkt.len() as u64;
                self.pending.packets += 1;
                self.pending.bytes += pkt.len() as u64;
            }
            Err(e) => {
                tracing::trace!(%dest, error = %e, "rtp send failed, dropped");
                self.drop_packet(DropReason::Other);
            }
        }
    }

    fn on_rtcp(&mut self, from: Leg, kind: Kind, src: SocketAddr, pkt: &[u8]) {
        let f = from.idx();
        let clock = self.shared.start.elapsed();
        let io = &mut self.legs[f];
        // Multiplexed RTCP comes from the RTP source.
        let accepted = if kind == Kind::Rtp {
            // Multiplexed on the RTP port: the RTP rules, with the report's sender SSRC
            // (bytes 4..8 of the RTCP header).
            let ssrc = pkt
                .get(4..8)
                .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
            io.rtp.accept(src, ssrc, clock)
        } else {
            let rtp = io.rtp.latched();
            io.rtcp.accept_rtcp(src, rtp)
        };
        match accepted {
            Accept::Ok => {}
            Accept::Latched => tracing::debug!(?from, %src, "rtcp latched"),
            Accept::Foreign => return self.drop_packet(DropReason::Foreign),
        }
        let to = &self.legs[from.other().idx()];
        let Some(dest) = to.rtcp.dest() else {
            return self.drop_packet(DropReason::Other);
        };
        match send_to_leg(
            &mut self.srtp[from.other().idx()],
            &to.pair.rtcp,
            true,
            pkt,
            dest,
        ) {
            Ok(_) => {
                self.local[f].rtcp_packets += 1;
                self.pending.packets += 1;
                self.pending.bytes += pkt.len() as u64;
            }
            Err(e) => {
                tracing::trace!(%dest, error = %e, "rtcp send failed, dropped");
                self.drop_packet(DropReason::Other);
            }
        }
    }

    /// Copies the task-local counters into the shared atomics (single writer: plain stores)
    /// and flushes the global counters when enough has accumulated.
    fn publish(&mut self) {
        let s = &self.shared;
        for (c, d) in self.local.iter().zip(s.dirs.iter()) {
            d.packets.store(c.packets, Ordering::Relaxed);
            d.bytes.store(c.bytes, Ordering::Relaxed);
            d.rtcp_packets.store(c.rtcp_packets, Ordering::Relaxed);
            d.held_back.store(c.held_back, Ordering::Relaxed);
        }
        for (c, d) in self.played.iter().zip(s.played.iter()) {
            d.store(*c, Ordering::Relaxed);
        }
        s.dropped.store(self.dropped, Ordering::Relaxed);
        s.foreign.store(self.foreign, Ordering::Relaxed);
        if self.pending.packets + self.pending.dropped >= FLUSH_PACKETS {
            let now_ms = s.start.elapsed().as_millis() as u64;
            self.flush_global(now_ms);
        }
    }

    fn flush_global(&mut self, now_ms: u64) {
        let p = std::mem::take(&mut self.pending);
        self.last_flush_ms = now_ms;
        if p.packets > 0 {
            self.global
                .packets_relayed
                .fetch_add(p.packets, Ordering::Relaxed);
            self.global
                .bytes_relayed
                .fetch_add(p.bytes, Ordering::Relaxed);
        }
        if p.dropped > 0 {
            self.global
                .packets_dropped
                .fetch_add(p.dropped, Ordering::Relaxed);
        }
        if p.played > 0 {
            self.global
                .packets_played
                .fetch_add(p.played, Ordering::Relaxed);
        }
    }

    fn update_relay_on(&mut self) {
        for from in [Leg::A, Leg::B] {
            let to = from.other().idx();
            self.relay_on[from.idx()] = self.forwarding[from.idx()]
                && self.players[to].is_none()
                && self.dtmf_tx[to].is_none();
        }
    }

    fn start_player(
        &mut self,
        id: PlaybackId,
        pcm: Pcm8k,
        opts: PlayOptions,
        stream: Option<mpsc::Receiver<StreamFrame>>,
    ) {
        let to = id.leg;
        let t = to.idx();
        // Keep the clock running across a replacement: the new clip continues the 20 ms grid.
        let ticker = self.ticker.take();
        self.end_player(to, PlaybackEnd::Replaced);
        self.ticker = ticker;
        // `taken` changes in the same update as `playing` / the end: waiters never see a
        // taken-but-neither-playing-nor-ended playback.
        if pcm.is_empty() && stream.is_none() {
            tracing::debug!(%id, "empty clip: playback over at once");
            self.play_status[t].send_modify(|s| {
                s.taken = s.taken.max(id.n);
                s.record_end(id, PlaybackEnd::Finished);
            });
            self.release_clock();
            return;
        }
        if self.send_codec[t].is_none() {
            tracing::warn!(?to, "playing before set_send_codec: using PCMU/0");
        }
        self.engage_rewriter(to);
        tracing::debug!(%id, duration = ?pcm.duration(), looped = opts.looped, "playback started");
        self.players[t] = Some(Player {
            id,
            pcm,
            pos: 0,
            looped: opts.looped,
            seq: rand::random(),
            ts: rand::random(),
            resync: false,
            stream,
            keepalive: false,
        });
        self.play_status[t].send_modify(|s| {
            s.taken = s.taken.max(id.n);
            s.playing = Some(id);
        });
        self.update_relay_on();
        self.ensure_clock();
    }

    /// Engages the rewriter of the stream towards `to`, continuing what the phone already
    /// receives (module doc: RTP continuity). It stays for the rest of the bridge.
    fn engage_rewriter(&mut self, to: Leg) {
        let r = from_idx_towards(to);
        if self.rewriter[r].is_none() {
            let rw = StreamRewriter::continuing(&self.tracker[to.idx()])
                .unwrap_or_else(StreamRewriter::with_random_ssrc);
            tracing::debug!(?to, ssrc = rw.ssrc(), "stream rewriter engaged");
            self.rewriter[r] = Some(rw);
        }
        self.continuity_pinned[r] = true;
    }

    fn clock_needed(&self) -> bool {
        self.players.iter().any(Option::is_some)
            || self.dtmf_tx.iter().any(Option::is_some)
            || self.recorder.is_some()
            || self.listener.is_some()
    }

    /// Starts the 20 ms clock if it is not running. The first tick is immediate: the first
    /// frame goes out in this wake-up.
    fn ensure_clock(&mut self) {
        if self.ticker.is_none() {
            let mut iv = tokio::time::interval(FRAME_INTERVAL);
            iv.set_missed_tick_behavior(MissedTickBehavior::Burst);
            self.ticker = Some(iv);
        }
    }

    /// Stops the clock when nothing needs it any more.
    fn release_clock(&mut self) {
        if !self.clock_needed() {
            self.ticker = None;
        }
    }

    fn end_player(&mut self, to: Leg, how: PlaybackEnd) {
        let Some(p) = self.players[to.idx()].take() else {
            return;
        };
        if !p.keepalive {
            tracing::debug!(id = %p.id, ?how, frames = p.pos / FRAME_SAMPLES, "playback ended");
            self.play_status[to.idx()].send_modify(|s| s.record_end(p.id, how));
        }
        self.update_relay_on();
        self.release_clock();
        // A playback that ended by itself or was stopped: the keepalive (if on) takes over.
        if matches!(how, PlaybackEnd::Finished | PlaybackEnd::Stopped) {
            self.sync_keepalive(to);
        }
    }

    /// Starts or stops the keepalive silence towards `to` as its flag says (never over a
    /// real playback).
    fn sync_keepalive(&mut self, to: Leg) {
        let t = to.idx();
        match (&self.players[t], self.keepalive[t]) {
            (None, true) => {
                self.engage_rewriter(to);
                self.players[t] = Some(Player {
                    id: PlaybackId { leg: to, n: 0 },
                    pcm: Pcm8k::silence(FRAME_INTERVAL),
                    pos: 0,
                    looped: true,
                    seq: rand::random(),
                    ts: rand::random(),
                    resync: false,
                    stream: None,
                    keepalive: true,
                });
                self.update_relay_on();
                self.ensure_clock();
            }
            (Some(p), false) if p.keepalive => {
                self.players[t] = None;
                self.update_relay_on();
                self.release_clock();
            }
            _ => {}
        }
    }

    /// Sends one frame per due tick for every active player, until the clock is pending (its
    /// waker registered) or no player is left.
    fn poll_ticker(&mut self, cx: &mut Context<'_>, buf: &mut [u8; BUF_LEN]) {
        while let Some(iv) = self.ticker.as_mut() {
            let Poll::Ready(at) = iv.poll_tick(cx) else {
                return;
            };
            let late = at.elapsed();
            if late > MAX_TICK_LAG {
                tracing::debug!(?late, "media clock fell behind; backlog dropped");
                iv.reset();
                let missed = (late.as_millis() / FRAME_INTERVAL.as_millis()) as u32;
                if let Some(r) = self.recorder.as_mut() {
                    // The recording keeps wall-clock time: the skipped ticks become silence.
                    r.add_missed(missed);
                }
                // So do the players' timestamps (the frames themselves are not skipped).
                for p in self.players.iter_mut().flatten() {
                    p.skip_ticks(missed);
                }
            }
            for to in [Leg::A, Leg::B] {
                if self.dtmf_tx[to.idx()].is_some() {
                    self.dtmf_frame(to, buf);
                } else {
                    self.play_frame(to, buf);
                }
            }
            if let Some(r) = self.recorder.as_mut() {
                if r.tick() == TapState::WriterGone {
                    tracing::warn!(id = %r.id, "recording writer gone; recording ends");
                    self.recorder = None;
                    self.release_clock();
                }
            }
            if let Some(l) = self.listener.as_mut() {
                if l.tick() == ListenTick::ConsumerGone {
                    l.finish();
                    // No longer named by `listening()` (a REST pause then finds no stream).
                    let _ = self.shared.listen_id.compare_exchange(
                        l.id.number(),
                        0,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                    self.listener = None;
                    self.release_clock();
                }
            }
        }
    }

    /// Decodes an audio packet from `from` into the listen tap.
    fn listen_packet(&mut self, from: Leg, pt: u8, pkt: &[u8]) {
        let Some(law) = self.recv_law[from.idx()][pt as usize] else {
            return;
        };
        let Some(tap) = self.listener.as_mut() else {
            return;
        };
        if let Some(payload) = parse_header(pkt).and_then(|h| h.payload(pkt)) {
            tap.on_audio(from.idx(), law, payload);
        }
    }

    /// Decodes an audio packet from `from` into its conference feed (dropped when the
    /// conference has gone).
    fn feed_packet(&mut self, from: Leg, pt: u8, pkt: &[u8]) {
        let Some(law) = self.recv_law[from.idx()][pt as usize] else {
            return;
        };
        let Some(feed) = self.feeds[from.idx()].as_mut() else {
            return;
        };
        if let Some(payload) = parse_header(pkt).and_then(|h| h.payload(pkt)) {
            if !feed.on_audio(law, payload) {
                tracing::debug!(?from, id = %feed.id, "conference feed consumer gone");
                self.feeds[from.idx()] = None;
            }
        }
    }

    /// Decodes an audio packet from `from` into the recorder.
    fn record_packet(&mut self, from: Leg, pt: u8, pkt: &[u8]) {
        let Some(law) = self.recv_law[from.idx()][pt as usize] else {
            return;
        };
        let Some(rec) = self.recorder.as_mut() else {
            return;
        };
        if let Some(payload) = parse_header(pkt).and_then(|h| h.payload(pkt)) {
            rec.on_audio(from.idx(), law, payload);
        }
    }

    /// A telephone-event packet from `from`: detection (it is relayed as usual afterwards).
    fn on_dtmf_packet(&mut self, from: Leg, pkt: &[u8]) {
        let Some(h) = parse_header(pkt) else {
            return;
        };
        let Some(ev) = h.payload(pkt).and_then(TelephoneEvent::parse) else {
            return;
        };
        let tx = &self.shared.dtmf_events;
        self.dtmf_rx[from.idx()].on_event(h.ssrc, h.timestamp, ev, &mut |d| {
            tracing::debug!(?from, digit = %d.digit, duration = d.duration_ms(), end_seen = d.end_seen, "dtmf received");
            let _ = tx.send(DtmfEvent {
                leg: from,
                digit: d.digit,
                duration_ms: d.duration_ms(),
            });
        });
    }

    /// Audio from `from` while a received event waits for its end packets (lost-end fallback).
    fn on_audio_after_dtmf(&mut self, from: Leg, pkt: &[u8]) {
        let Some(h) = parse_header(pkt) else {
            return;
        };
        let tx = &self.shared.dtmf_events;
        self.dtmf_rx[from.idx()].on_audio(h.ssrc, h.timestamp, &mut |d| {
            tracing::debug!(?from, digit = %d.digit, "dtmf received (end packets lost)");
            let _ = tx.send(DtmfEvent {
                leg: from,
                digit: d.digit,
                duration_ms: d.duration_ms(),
            });
        });
    }

    fn start_dtmf(&mut self, job: DtmfJob) {
        let to = job.id.leg;
        let t = to.idx();
        let id = job.id;
        if self.dtmf_pt[t] == NO_PT {
            tracing::debug!(%id, "telephone-event gone before the send started");
            self.dtmf_status[t].send_modify(|s| s.record_end(id, DtmfEnd::Cancelled));
            return;
        }
        tracing::debug!(%id, digits = job.codes.len(), "dtmf send queued");
        match self.dtmf_tx[t].as_mut() {
            Some(sender) => {
                sender.push(job);
                if sender.current() == Some(id) {
                    // The sender had nothing left (cancelled): this one is next.
                    self.dtmf_status[t].send_modify(|s| s.sending = Some(id));
                }
            }
            None => {
                self.engage_rewriter(to);
                self.dtmf_tx[t] = Some(DtmfSender::new(job));
                self.dtmf_status[t].send_modify(|s| s.sending = Some(id));
                self.update_relay_on();
                self.ensure_clock();
            }
        }
    }

    fn cancel_dtmf(&mut self, to: Leg) {
        let t = to.idx();
        let Some(sender) = self.dtmf_tx[t].as_mut() else {
            return;
        };
        for id in sender.cancel() {
            tracing::debug!(%id, "dtmf send cancelled");
            self.dtmf_status[t].send_modify(|s| s.record_end(id, DtmfEnd::Cancelled));
        }
        // With a tone in progress, its end packets go out first and the jobs end through the
        // ticks, in order; either way the sender finishes on a coming tick.
    }

    /// One tick of the DTMF sender towards `to`.
    fn dtmf_frame(&mut self, to: Leg, buf: &mut [u8; BUF_LEN]) {
        let t = to.idx();
        let pt = self.dtmf_pt[t];
        let Some(sender) = self.dtmf_tx[t].as_mut() else {
            return;
        };
        let r = sender.tick(pt, &mut buf[..]);
        let next = sender.current();
        if let Some(len) = r.packet {
            let pkt = &mut buf[..len];
            if let Some(rw) = self.rewriter[from_idx_towards(to)].as_mut() {
                rw.rewrite_at(pkt, DTMF_SOURCE, self.shared.start.elapsed());
            }
            if r.event_start {
                self.dtmf_out_ts[t] = u32::from_be_bytes([pkt[4], pkt[5], pkt[6], pkt[7]]);
            }
            let leg = &self.legs[t];
            match leg.rtp.dest() {
                Some(dest) => match send_to_leg(&mut self.srtp[t], &leg.pair.rtp, false, pkt, dest)
                {
                    Ok(_) => {
                        self.played[t] += 1;
                        self.pending.played += 1;
                    }
                    Err(e) => tracing::debug!(%dest, error = %e, "dtmf packet not sent"),
                },
                None => tracing::debug!(?to, "no remote: dtmf packet not sent"),
            }
        }
        if let Some((id, how)) = r.finished {
            tracing::debug!(%id, ?how, "dtmf send ended");
            self.dtmf_status[t].send_modify(|s| {
                s.record_end(id, how);
                s.sending = next;
            });
        }
        if r.done {
            if let (Some(ticks), Some(rw)) =
                (r.event_ticks, self.rewriter[from_idx_towards(to)].as_mut())
            {
                // Events repeat their start timestamp: move the stream's timeline on by the
                // time they took, so what follows continues at the right timestamp.
                let step = FRAME_SAMPLES as u32;
                rw.continue_at(self.dtmf_out_ts[t].wrapping_add(ticks * step), step);
            }
            self.dtmf_tx[t] = None;
            self.update_relay_on();
            self.release_clock();
        }
    }

    /// Encodes and sends the next 20 ms of the player towards `to` (if any).
    fn play_frame(&mut self, to: Leg, buf: &mut [u8; BUF_LEN]) {
        let t = to.idx();
        let Some(p) = self.players[t].as_mut() else {
            return;
        };
        let (pt, law) = self.send_codec[t].unwrap_or((0, Law::Mulaw));
        let samples = p.pcm.samples();
        let payload = &mut buf[RTP_HEADER_LEN..RTP_HEADER_LEN + FRAME_SAMPLES];
        let mut filled = 0;
        let mut stream_closed = false;
        if let Some(rx) = p.stream.as_mut() {
            // A streamed source: the next queued frame, silence while none is queued.
            match rx.try_recv() {
                Ok(frame) => {
                    law.encode(&frame[..], payload);
                    filled = FRAME_SAMPLES;
                }
                Err(mpsc::error::TryRecvError::Empty) => {}
                Err(mpsc::error::TryRecvError::Disconnected) => stream_closed = true,
            }
        }
        if stream_closed {
            self.end_player(to, PlaybackEnd::Finished);
            return;
        }
        let streaming = p.stream.is_some();
        while !streaming && filled < FRAME_SAMPLES {
            if p.pos >= samples.len() {
                if !p.looped {
                    break;
                }
                p.pos = 0;
            }
            let n = (FRAME_SAMPLES - filled).min(samples.len() - p.pos);
            law.encode(&samples[p.pos..p.pos + n], &mut payload[filled..filled + n]);
            filled += n;
            p.pos += n;
        }
        // The last frame of a clip that is not a multiple of 20 ms: pad with silence.
        payload[filled..].fill(law.silence());
        let finished = !streaming && !p.looped && p.pos >= samples.len();
        let id = p.id;
        let (marker, seq, ts) = p.next_header();
        write_header(&mut buf[..], marker, pt, seq, ts, id.n as u32);
        let pkt = &mut buf[..RTP_HEADER_LEN + FRAME_SAMPLES];
        if let Some(rw) = self.rewriter[from_idx_towards(to)].as_mut() {
            rw.rewrite_at(pkt, PLAYER_SOURCE, self.shared.start.elapsed());
        }
        let leg = &self.legs[t];
        match leg.rtp.dest() {
            Some(dest) => match send_to_leg(&mut self.srtp[t], &leg.pair.rtp, false, pkt, dest) {
                Ok(_) => {
                    self.played[t] += 1;
                    self.pending.played += 1;
                }
                Err(e) => tracing::trace!(%dest, error = %e, "played frame not sent"),
            },
            None => tracing::trace!(?to, "no remote: played frame not sent"),
        }
        if finished {
            self.end_player(to, PlaybackEnd::Finished);
        }
    }
}

/// Sends a plain packet to a leg, encrypted first when the leg speaks SRTP.
fn send_to_leg(
    srtp: &mut Option<Box<LegSrtp>>,
    sock: &RelaySocket,
    rtcp: bool,
    pkt: &[u8],
    dest: SocketAddr,
) -> io::Result<usize> {
    match srtp.as_mut() {
        None => sock.try_send_to(pkt, dest),
        Some(s) => match s.protect(rtcp, pkt) {
            Some(secured) => sock.try_send_to(&secured, dest),
            None => Err(io::Error::other("SRTP protect failed")),
        },
    }
}

/// Index of the *from* leg whose rewriter shapes the stream *to* `to`.
fn from_idx_towards(to: Leg) -> usize {
    to.other().idx()
}

impl Drop for Relay {
    fn drop(&mut self) {
        for leg in [Leg::A, Leg::B] {
            self.end_player(leg, PlaybackEnd::BridgeStopped);
            if let Some(sender) = self.dtmf_tx[leg.idx()].take() {
                self.dtmf_status[leg.idx()].send_modify(|s| {
                    for id in sender.job_ids() {
                        s.record_end(id, DtmfEnd::BridgeStopped);
                    }
                });
            }
        }
        if let Some(r) = self.recorder.take() {
            // The writer finishes the file on its own.
            r.finish();
        }
        if let Some(l) = self.listener.take() {
            l.finish();
        }
        self.publish();
        self.flush_global(0);
        self.global.bridges_active.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Counts wake-ups.
    struct CountingWaker(AtomicU64);

    impl std::task::Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn control_counted_but_not_yet_sent_is_not_lost() {
        let (tx, rx) = mpsc::unbounded_channel::<u32>();
        let posted = ControlSignal::default();
        let mut inbox = ControlInbox::new(rx);
        let wakes = Arc::new(CountingWaker(AtomicU64::new(0)));
        let waker = std::task::Waker::from(Arc::clone(&wakes));
        let mut cx = Context::from_waker(&waker);
        // Nothing posted: the first look registers the waker, and the first send wakes it.
        assert!(inbox.poll_recv(&posted, &mut cx).is_pending());
        post_control(&tx, &posted, 1).unwrap();
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert_eq!(inbox.poll_recv(&posted, &mut cx), Poll::Ready(Some(1)));
        assert!(inbox.poll_recv(&posted, &mut cx).is_pending());
        // A sender between its count and its send when the relay looks (the race that lost
        // a pause): the relay finds the channel empty, and the send then wakes it.
        posted.posted.fetch_add(1, Ordering::AcqRel);
        assert!(inbox.poll_recv(&posted, &mut cx).is_pending());
        let before = wakes.0.load(Ordering::SeqCst);
        tx.send(2).unwrap();
        assert!(
            wakes.0.load(Ordering::SeqCst) > before,
            "the send wakes the relay"
        );
        assert_eq!(inbox.poll_recv(&posted, &mut cx), Poll::Ready(Some(2)));
        // Several posted: all are taken, in order, then the inbox is idle again.
        for n in 3..6 {
            post_control(&tx, &posted, n).unwrap();
        }
        for n in 3..6 {
            assert_eq!(inbox.poll_recv(&posted, &mut cx), Poll::Ready(Some(n)));
        }
        assert!(inbox.poll_recv(&posted, &mut cx).is_pending());
        assert_eq!(inbox.taken, posted.posted.load(Ordering::Acquire));
    }

    /// `n` consistent packets of one stream from `src`, 40 ms apart from `t0`; the outcomes.
    fn stream(p: &mut Peer, src: &str, ssrc: u32, t0: u64, n: u64) -> Vec<Accept> {
        (0..n)
            .map(|i| p.accept(addr(src), ssrc, Duration::from_millis(t0 + 40 * i)))
            .collect()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_sdp_address_latches_at_once_and_others_are_foreign() {
        let mut p = Peer::default();
        assert_eq!(p.dest(), None);
        p.set_sdp(Some(addr("10.0.0.1:4000")));
        assert_eq!(p.dest(), Some(addr("10.0.0.1:4000")));
        assert_eq!(p.accept(addr("10.0.0.1:4000"), 7, ms(0)), Accept::Latched);
        assert_eq!(p.accept(addr("10.0.0.1:4000"), 7, ms(20)), Accept::Ok);
        // Anything else is foreign, however consistent and long.
        assert!(stream(&mut p, "198.51.100.9:5000", 9, 40, 50)
            .iter()
            .all(|a| *a == Accept::Foreign));
        assert_eq!(p.dest(), Some(addr("10.0.0.1:4000")));
        // Same SDP again: no relatch.
        assert!(!p.set_sdp(Some(addr("10.0.0.1:4000"))));
        assert_eq!(p.latched(), Some(addr("10.0.0.1:4000")));
    }

    #[test]
    fn a_spray_before_the_phone_speaks_never_captures_the_leg() {
        let mut p = Peer::default();
        p.set_sdp(Some(addr("10.0.0.1:4000")));
        // A sprayer hits the port with packets of changing sources/SSRCs: nothing latches.
        for i in 0..200u64 {
            let src = format!("198.51.100.{}:5000", 1 + i % 3);
            assert_eq!(p.accept(addr(&src), i as u32, ms(i * 5)), Accept::Foreign);
        }
        // The phone's first packet from its SDP address latches at once.
        assert_eq!(
            p.accept(addr("10.0.0.1:4000"), 1, ms(1001)),
            Accept::Latched
        );
        assert_eq!(p.dest(), Some(addr("10.0.0.1:4000")));
        // A consistent stream that starts before the phone speaks is not latched before the
        // grace time is over, and the phone still wins meanwhile.
        let mut q = Peer::default();
        q.set_sdp(Some(addr("10.0.0.1:4000")));
        assert!(stream(&mut q, "198.51.100.9:5000", 9, 0, 10)
            .iter()
            .all(|a| *a == Accept::Foreign));
        assert_eq!(q.accept(addr("10.0.0.1:4000"), 1, ms(400)), Accept::Latched);
    }

    #[test]
    fn a_nat_phone_is_latched_after_the_grace_time_with_a_consistent_stream() {
        let mut p = Peer::default();
        p.set_sdp(Some(addr("10.0.0.1:4000")));
        // 40 ms apart: the 13th packet is 480 ms after the first, the 14th 520 ms.
        let got = stream(&mut p, "203.0.113.5:61000", 0xA, 0, 14);
        assert!(got[..13].iter().all(|a| *a == Accept::Foreign), "{got:?}");
        assert_eq!(got[13], Accept::Latched);
        assert_eq!(p.dest(), Some(addr("203.0.113.5:61000")));
        assert_eq!(
            p.accept(addr("203.0.113.5:61000"), 0xA, ms(600)),
            Accept::Ok
        );
        // The SDP address is still accepted but does not re-latch.
        assert_eq!(p.accept(addr("10.0.0.1:4000"), 0xA, ms(620)), Accept::Ok);
        assert_eq!(p.dest(), Some(addr("203.0.113.5:61000")));
        // An interleaved second source keeps either from latching.
        let mut q = Peer::default();
        q.set_sdp(Some(addr("10.0.0.1:4000")));
        for i in 0..100u64 {
            let (src, ssrc) = if i % 2 == 0 {
                ("203.0.113.5:61000", 1)
            } else {
                ("198.51.100.9:5000", 2)
            };
            assert_eq!(q.accept(addr(src), ssrc, ms(i * 20)), Accept::Foreign);
        }
        // A changed SSRC from the same source starts the count over.
        let mut r = Peer::default();
        r.set_sdp(Some(addr("10.0.0.1:4000")));
        stream(&mut r, "203.0.113.5:61000", 1, 0, 10);
        assert_eq!(
            r.accept(addr("203.0.113.5:61000"), 2, ms(700)),
            Accept::Foreign
        );
        assert_eq!(r.latched(), None);
    }

    #[test]
    fn rtcp_latches_only_to_its_sdp_address_or_the_rtp_sources_ip() {
        let mut p = Peer::default();
        p.set_sdp(Some(addr("10.0.0.1:4001")));
        // A sprayer is never latched, however long it sends.
        for _ in 0..100 {
            assert_eq!(
                p.accept_rtcp(addr("198.51.100.9:5001"), Some(addr("203.0.113.5:61000"))),
                Accept::Foreign
            );
        }
        assert_eq!(
            p.accept_rtcp(addr("198.51.100.9:5001"), None),
            Accept::Foreign
        );
        // The NAT phone's RTCP comes from the IP its RTP latched to.
        assert_eq!(
            p.accept_rtcp(addr("203.0.113.5:61001"), Some(addr("203.0.113.5:61000"))),
            Accept::Latched
        );
        assert_eq!(p.dest(), Some(addr("203.0.113.5:61001")));
        // Or from the SDP address.
        let mut q = Peer::default();
        q.set_sdp(Some(addr("10.0.0.1:4001")));
        assert_eq!(q.accept_rtcp(addr("10.0.0.1:4001"), None), Accept::Latched);
    }

    #[test]
    fn peer_does_not_relatch_to_the_previous_phone_after_a_move() {
        let mut p = Peer::default();
        p.set_sdp(Some(addr("127.0.0.1:4000")));
        assert_eq!(p.accept(addr("127.0.0.1:4000"), 1, ms(0)), Accept::Latched);
        // Another phone is moved onto this socket; the old one still has packets in flight.
        assert!(p.move_to_new_party(Some(addr("127.0.0.1:4100"))));
        assert_eq!(p.accept(addr("127.0.0.1:4000"), 1, ms(20)), Accept::Foreign);
        assert_eq!(p.dest(), Some(addr("127.0.0.1:4100")));
        assert_eq!(p.accept(addr("127.0.0.1:4100"), 2, ms(40)), Accept::Latched);
        assert_eq!(p.dest(), Some(addr("127.0.0.1:4100")));
        // Once the new phone latched, the old address is just foreign, never remembered.
        assert_eq!(p.accept(addr("127.0.0.1:4000"), 1, ms(60)), Accept::Foreign);
        // A move back to the first phone's address latches to it again.
        assert!(p.move_to_new_party(Some(addr("127.0.0.1:4000"))));
        assert_eq!(p.accept(addr("127.0.0.1:4000"), 1, ms(80)), Accept::Latched);
    }

    #[test]
    fn same_phone_changing_its_sdp_behind_nat_is_learned_again() {
        let mut p = Peer::default();
        p.set_sdp(Some(addr("10.0.0.1:4000")));
        assert_eq!(
            stream(&mut p, "203.0.113.5:61000", 7, 0, 14)[13],
            Accept::Latched
        );
        // A re-INVITE from the same phone with a new private port: the NAT source may stay,
        // and is learned again by the same rule.
        assert!(p.set_sdp(Some(addr("10.0.0.1:4002"))));
        assert_eq!(p.dest(), Some(addr("10.0.0.1:4002")));
        assert_eq!(
            stream(&mut p, "203.0.113.5:61000", 7, 1000, 14)[13],
            Accept::Latched
        );
        assert_eq!(p.dest(), Some(addr("203.0.113.5:61000")));
    }

    #[test]
    fn duration_conversion() {
        assert_eq!(duration_ms(Duration::ZERO), 0);
        assert_eq!(duration_ms(Duration::from_micros(10)), 1);
        assert_eq!(duration_ms(Duration::from_secs(2)), 2000);
        let m = identity_map();
        assert_eq!(m[0], 0);
        assert_eq!(m[127], 127);
    }

    #[test]
    fn leg_helpers() {
        assert_eq!(Leg::A.other(), Leg::B);
        assert_eq!(Leg::B.other(), Leg::A);
        assert_eq!(Leg::A.idx(), 0);
        assert_eq!(Leg::B.idx(), 1);
    }
    #[test]
    fn player_numbering_and_skipped_ticks() {
        let mut p = Player {
            id: PlaybackId { leg: Leg::A, n: 1 },
            pcm: Pcm8k::new(Vec::new()),
            pos: 0,
            looped: false,
            seq: u16::MAX,
            ts: 1000,
            resync: false,
            stream: None,
            keepalive: false,
        };
        assert_eq!(p.next_header(), (false, u16::MAX, 1000));
        assert_eq!(p.next_header(), (false, 0, 1160));
        p.skip_ticks(0);
        assert_eq!(p.next_header(), (false, 1, 1320));
        // 7 ticks skipped: the timestamp keeps pace with the time, the sequence number does
        // not jump (nothing was sent), and the marker flags the new talkspurt once.
        p.skip_ticks(7);
        assert_eq!(p.next_header(), (true, 2, 1480 + 7 * 160));
        assert_eq!(p.next_header(), (false, 3, 1640 + 7 * 160));
    }
}
