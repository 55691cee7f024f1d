//! hookflash-media: SDP offer/answer, RTP header handling, the RTP port pool and the relay
//! fast path (DESIGN.md §4).
//!
//! - [`sdp`]: forgiving sans-IO SDP parser/serialiser and the codec/direction negotiation rules.
//! - [`rtp`]: RTP header parsing, RTCP demux, in-place rewrites, [`rtp::StreamRewriter`].
//! - [`ports`]: [`ports::PortPool`] handing out bound RTP/RTCP socket pairs.
//! - [`relay`]: [`relay::Bridge`], the two-leg packet relay (one task per bridge).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

pub mod ports;
pub mod relay;
pub mod rtp;
pub mod sdp;

pub use ports::{PortPool, RtpSocketPair};
pub use relay::{Bridge, BridgeHandle, BridgeOptions, BridgeStats, Leg};
pub use sdp::{Codec, Direction, MediaSection, OriginState, SdpError, SessionDescription};

/// Errors of the media layer's I/O side (SDP errors are [`SdpError`]).
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("RTP port range exhausted")]
    Exhausted,
    #[error("invalid RTP port range {min}-{max} (needs at least one even/odd pair)")]
    InvalidRange { min: u16, max: u16 },
    #[error("cannot bind RTP socket {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("RTP sockets need a running tokio runtime")]
    NoRuntime,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Process-wide media counters (for `/metrics`). Bridges add to them in small batches (at
/// most 64 packets or 1 s behind) and flush the rest when they end, so the hot path does not
/// bounce one cache line between cores for every packet.
#[derive(Debug, Default)]
pub struct MediaStats {
    /// RTP and RTCP packets sent on to the other leg.
    pub packets_relayed: AtomicU64,
    /// Packets received but not relayed: foreign source, no destination yet, send failure,
    /// not RTP. Packets held back by `set_forwarding(.., false)` are not counted.
    pub packets_dropped: AtomicU64,
    pub bytes_relayed: AtomicU64,
    /// Bridges whose task is running.
    pub bridges_active: AtomicU64,
}

impl MediaStats {
    /// (packets_relayed, packets_dropped, bytes_relayed, bridges_active)
    pub fn snapshot(&self) -> (u64, u64, u64, u64) {
        (
            self.packets_relayed.load(Ordering::Relaxed),
            self.packets_dropped.load(Ordering::Relaxed),
            self.bytes_relayed.load(Ordering::Relaxed),
            self.bridges_active.load(Ordering::Relaxed),
        )
    }
}
