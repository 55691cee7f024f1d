//! RTP header handling (RFC 3550), sans-IO: parse, RTCP demultiplexing, in-place rewrites and
//! the [`StreamRewriter`] that keeps an outgoing stream continuous across source switches.

/// Fixed RTP header length (no CSRCs, no extension).
pub const RTP_HEADER_LEN: usize = 12;

/// A parsed RTP header. `header_len` covers CSRCs and the extension: the payload starts there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    pub version: u8,
    pub padding: bool,
    pub extension: bool,
    pub csrc_count: u8,
    pub marker: bool,
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub header_len: usize,
}

impl RtpHeader {
    /// Payload bytes of `buf` (the packet this header was parsed from), padding removed.
    /// `None` when the padding count is inconsistent.
    pub fn payload<'a>(&self, buf: &'a [u8]) -> Option<&'a [u8]> {
        let mut end = buf.len();
        if self.padding {
            let pad = *buf.last()? as usize;
            if pad == 0 || pad > end - self.header_len {
                return None;
            }
            end -= pad;
        }
        buf.get(self.header_len..end)
    }
}

/// Parses the RTP header; `None` for anything that is not RTP version 2 or is truncated.
pub fn parse_header(buf: &[u8]) -> Option<RtpHeader> {
    if buf.len() < RTP_HEADER_LEN || buf[0] >> 6 != 2 {
        return None;
    }
    let csrc_count = buf[0] & 0x0f;
    let extension = buf[0] & 0x10 != 0;
    let mut header_len = RTP_HEADER_LEN + 4 * csrc_count as usize;
    if extension {
        let ext = buf.get(header_len..header_len + 4)?;
        let words = u16::from_be_bytes([ext[2], ext[3]]) as usize;
        header_len += 4 + 4 * words;
    }
    if header_len > buf.len() {
        return None;
    }
    Some(RtpHeader {
        version: 2,
        padding: buf[0] & 0x20 != 0,
        extension,
        csrc_count,
        marker: buf[1] & 0x80 != 0,
        payload_type: buf[1] & 0x7f,
        sequence: u16::from_be_bytes([buf[2], buf[3]]),
        timestamp: u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]),
        ssrc: u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]),
        header_len,
    })
}

/// RTCP/RTP demultiplexing (RFC 5761 §4): version 2 and a second octet (RTCP packet type) in
/// 192..=223, which covers the RTCP types in use (SR 200 ... 211) and avoids the RTP PT range
/// 0..=95 with or without the marker bit as long as PTs 64-95 are not used for RTP.
pub fn is_rtcp(buf: &[u8]) -> bool {
    buf.len() >= 8 && buf[0] >> 6 == 2 && (192..=223).contains(&buf[1])
}

/// Replaces the payload type, keeping the marker bit. No-op on a buffer shorter than 2 bytes.
pub fn set_payload_type(buf: &mut [u8], pt: u8) {
    if let Some(b) = buf.get_mut(1) {
        *b = (*b & 0x80) | (pt & 0x7f);
    }
}

/// Sets or clears the marker bit. No-op on a buffer shorter than 2 bytes.
pub fn set_marker(buf: &mut [u8], marker: bool) {
    if let Some(b) = buf.get_mut(1) {
        *b = (*b & 0x7f) | if marker { 0x80 } else { 0 };
    }
}

/// Writes a 12-byte RTP header (version 2, no padding/extension/CSRC) into `buf[..12]`.
/// Returns `false` (and writes nothing) if `buf` is shorter than 12 bytes.
pub fn write_header(buf: &mut [u8], marker: bool, pt: u8, seq: u16, ts: u32, ssrc: u32) -> bool {
    let Some(h) = buf.get_mut(..RTP_HEADER_LEN) else {
        return false;
    };
    h[0] = 0x80;
    h[1] = (pt & 0x7f) | if marker { 0x80 } else { 0 };
    h[2..4].copy_from_slice(&seq.to_be_bytes());
    h[4..8].copy_from_slice(&ts.to_be_bytes());
    h[8..12].copy_from_slice(&ssrc.to_be_bytes());
    true
}

/// `a` is newer than `b` in 16-bit sequence space.
fn seq_newer(a: u16, b: u16) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000
}

/// `a` is newer than (or equal to) `b` in 32-bit timestamp space.
fn ts_newer_eq(a: u32, b: u32) -> bool {
    a.wrapping_sub(b) < 0x8000_0000
}

/// Largest timestamp increment taken for a packet interval: 120 ms at 48 kHz.
const MAX_TS_STEP: u32 = 5760;

/// Learns a stream's packet interval (timestamp increment per packet) from consecutive
/// packets. A smaller increment than the current interval is adopted at once; a larger one
/// only when two consecutive in-order packets without the marker bit show it: the first
/// packet of a talkspurt (silence suppression, VAD: the next sequence number but a timestamp
/// advanced by the whole silence, marker set or not) and the packet after a telephone-event
/// (which repeat their start timestamp) are one-off increments, not the interval.
#[derive(Debug, Clone, Copy)]
struct StepLearner {
    step: u32,
    candidate: u32,
}

impl StepLearner {
    fn new(step: u32) -> StepLearner {
        StepLearner { step, candidate: 0 }
    }

    /// `diff`: timestamp increment from the previous packet, which had the previous sequence
    /// number; `marker`: this packet's marker bit.
    fn observe(&mut self, diff: u32, marker: bool) {
        if marker || diff == 0 || diff > MAX_TS_STEP {
            self.candidate = 0;
            return;
        }
        // A gap only ever makes an increment larger: a smaller one is the interval at once.
        if diff == self.candidate || diff < self.step {
            self.step = diff;
        }
        self.candidate = diff;
    }

    /// A packet that does not follow the previous one in sequence: no evidence either way.
    fn interrupt(&mut self) {
        self.candidate = 0;
    }
}

/// Timestamp units in `d` at `clock_rate` Hz (saturating; only differences matter).
fn ts_units(d: std::time::Duration, clock_rate: u32) -> u64 {
    let units = d.as_micros().saturating_mul(clock_rate as u128) / 1_000_000;
    u64::try_from(units).unwrap_or(u64::MAX)
}

/// The timestamp advance of a switch `elapsed` after the last packet: the elapsed time in
/// whole packet intervals, rounded down (never ahead of the real time: for a receiver that
/// places frames by timestamp, ahead is added playout delay), at least one interval; without
/// a time, one interval.
fn switch_advance(elapsed: Option<std::time::Duration>, step: u32, clock_rate: u32) -> u32 {
    let step = step.max(1);
    let Some(elapsed) = elapsed else {
        return step;
    };
    let units = ts_units(elapsed, clock_rate);
    let n = units / step as u64;
    // A gap beyond 2^31 units cannot be expressed in the 32-bit timestamp space anyway.
    let advance = n.max(1).saturating_mul(step as u64).min(0x7fff_ffff);
    advance as u32
}

#[derive(Debug, Clone, Copy)]
struct Source {
    id: u32,
    in_ssrc: u32,
    seq_offset: u16,
    ts_offset: u32,
    last_in_seq: u16,
    last_in_ts: u32,
}

/// Keeps an outgoing RTP stream continuous when its source changes (relay after a transfer,
/// players, the mixer): one SSRC, sequence numbers continuing from the last one sent, and the
/// marker bit on the first packet after a switch. A source "changes" when `source_id` differs
/// from the previous packet's or the same source starts a new SSRC. Within a source, gaps and
/// reordering are preserved.
///
/// **Timestamps at a switch** follow the time that really passed since the last packet sent
/// ([`Self::rewrite_at`]): the elapsed time in whole packet intervals (rounded down), at least
/// one interval. Receivers place packets by timestamp (pjmedia's jitter buffer indexes frames by
/// `timestamp / samples per frame`): a timestamp ahead of the real time would be queued as
/// that much extra playout delay, one behind it as a late packet. Without a time
/// ([`Self::rewrite`]) the timestamp continues by one packet interval. The packet interval is
/// learned from the stream (see `StepLearner`: one-off increments such as the first packet of
/// a talkspurt do not count).
#[derive(Debug, Clone)]
pub struct StreamRewriter {
    ssrc: u32,
    /// Something was sent already: the next source continues `last_out_*`.
    started: bool,
    current: Option<Source>,
    last_out_seq: u16,
    last_out_ts: u32,
    /// When the newest packet went out (the caller's monotonic clock), if known.
    last_out_at: Option<std::time::Duration>,
    /// Timestamp increment per packet learned from the stream (160 = 20 ms at 8 kHz).
    ts_step: StepLearner,
    /// RTP clock rate of the stream (8000 for G.711 and telephone-event).
    clock_rate: u32,
}

impl StreamRewriter {
    pub fn new(ssrc: u32) -> StreamRewriter {
        StreamRewriter {
            ssrc,
            started: false,
            current: None,
            last_out_seq: 0,
            last_out_ts: 0,
            last_out_at: None,
            ts_step: StepLearner::new(160),
            clock_rate: 8000,
        }
    }

    /// Sets the RTP clock rate used to turn elapsed time into timestamp units (default 8000).
    pub fn set_clock_rate(&mut self, hz: u32) {
        if hz > 0 {
            self.clock_rate = hz;
        }
    }

    /// The packet interval in timestamp units, as learned so far.
    pub fn ts_step(&self) -> u32 {
        self.ts_step.step
    }

    /// A rewriter that continues a stream that so far went out untouched, as recorded by
    /// `tracker`: same SSRC, the next packet gets the next sequence number, a timestamp one
    /// packet interval on, and the marker bit. `None` if the tracker has seen no packet.
    pub fn continuing(tracker: &StreamTracker) -> Option<StreamRewriter> {
        let last = tracker.last?;
        Some(StreamRewriter {
            ssrc: last.ssrc,
            started: true,
            current: None,
            last_out_seq: last.seq,
            last_out_ts: last.ts,
            last_out_at: tracker.last_at,
            ts_step: StepLearner::new(tracker.ts_step.step),
            clock_rate: 8000,
        })
    }

    pub fn with_random_ssrc() -> StreamRewriter {
        StreamRewriter::new(rand::random())
    }

    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// Declares where the stream's timeline stands after a source whose packets do not show
    /// the time that passed (telephone-events repeat their start timestamp): the next *new*
    /// source starts at timestamp `next_ts`, and the packet interval is reset to `step` until
    /// the stream teaches another one.
    pub fn continue_at(&mut self, next_ts: u32, step: u32) {
        if !self.started {
            return;
        }
        let last = next_ts.wrapping_sub(step);
        if ts_newer_eq(last, self.last_out_ts) {
            self.last_out_ts = last;
        }
        self.ts_step = StepLearner::new(step);
    }

    /// Rewrites SSRC, sequence number, timestamp (and marker on a switch) in place, without
    /// knowing the time: a switch continues the timestamp by one packet interval.
    /// Returns `false` and leaves `buf` untouched if it is not an RTP packet.
    pub fn rewrite(&mut self, buf: &mut [u8], source_id: u32) -> bool {
        self.rewrite_inner(buf, source_id, None)
    }

    /// [`Self::rewrite`] for a packet sent at `now` (any monotonic clock, the same for every
    /// call, e.g. the time since the bridge started): a switch advances the timestamp by the
    /// time elapsed since the previous packet went out, in whole packet intervals (rounded
    /// down, at least one), so the stream's timestamps keep pace with the real time across
    /// sources.
    pub fn rewrite_at(&mut self, buf: &mut [u8], source_id: u32, now: std::time::Duration) -> bool {
        self.rewrite_inner(buf, source_id, Some(now))
    }

    fn rewrite_inner(
        &mut self,
        buf: &mut [u8],
        source_id: u32,
        now: Option<std::time::Duration>,
    ) -> bool {
        let Some(h) = parse_header(buf) else {
            return false;
        };
        let first_ever = !self.started;
        self.started = true;
        let switch = match &self.current {
            Some(s) => s.id != source_id || s.in_ssrc != h.ssrc,
            None => true,
        };
        if switch {
            let (seq_offset, ts_offset) = if first_ever {
                // First packet ever: keep the source's numbering.
                (0, 0)
            } else {
                let elapsed = match (now, self.last_out_at) {
                    (Some(now), Some(then)) => Some(now.saturating_sub(then)),
                    _ => None,
                };
                let advance = switch_advance(elapsed, self.ts_step.step, self.clock_rate);
                (
                    self.last_out_seq.wrapping_add(1).wrapping_sub(h.sequence),
                    self.last_out_ts
                        .wrapping_add(advance)
                        .wrapping_sub(h.timestamp),
                )
            };
            self.ts_step.interrupt();
            self.current = Some(Source {
                id: source_id,
                in_ssrc: h.ssrc,
                seq_offset,
                ts_offset,
                last_in_seq: h.sequence,
                last_in_ts: h.timestamp,
            });
        }
        let Some(src) = self.current.as_mut() else {
            return false;
        };
        if !switch && h.sequence == src.last_in_seq.wrapping_add(1) {
            self.ts_step
                .observe(h.timestamp.wrapping_sub(src.last_in_ts), h.marker);
        } else if !switch {
            self.ts_step.interrupt();
        }
        if switch || seq_newer(h.sequence, src.last_in_seq) {
            src.last_in_seq = h.sequence;
            src.last_in_ts = h.timestamp;
        }
        let out_seq = h.sequence.wrapping_add(src.seq_offset);
        let out_ts = h.timestamp.wrapping_add(src.ts_offset);
        if first_ever || seq_newer(out_seq, self.last_out_seq) {
            self.last_out_seq = out_seq;
        }
        if first_ever || ts_newer_eq(out_ts, self.last_out_ts) {
            self.last_out_ts = out_ts;
        }
        if now.is_some() {
            self.last_out_at = now;
        }
        buf[2..4].copy_from_slice(&out_seq.to_be_bytes());
        buf[4..8].copy_from_slice(&out_ts.to_be_bytes());
        buf[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        if switch {
            buf[1] |= 0x80;
        }
        true
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Last {
    ssrc: u32,
    seq: u16,
    ts: u32,
}

/// Remembers the newest SSRC/sequence/timestamp of a stream that the relay forwards untouched,
/// so that a [`StreamRewriter::continuing`] can take it over later (a player starts) without the
/// receiver seeing a new SSRC or a numbering jump. A few loads and compares per packet.
#[derive(Debug, Clone, Copy)]
pub struct StreamTracker {
    last: Option<Last>,
    /// When the newest packet was sent, if the caller said ([`Self::note_at`]).
    last_at: Option<std::time::Duration>,
    ts_step: StepLearner,
}

impl Default for StreamTracker {
    fn default() -> Self {
        StreamTracker {
            last: None,
            last_at: None,
            ts_step: StepLearner::new(160),
        }
    }
}

impl StreamTracker {
    /// Records an outgoing RTP packet; buffers shorter than an RTP header are ignored.
    #[inline]
    pub fn note(&mut self, buf: &[u8]) {
        self.note_inner(buf, None);
    }

    /// [`Self::note`] for a packet sent at `now` (the clock later given to
    /// [`StreamRewriter::rewrite_at`]), so that a rewriter taking the stream over knows how
    /// much time passed since.
    #[inline]
    pub fn note_at(&mut self, buf: &[u8], now: std::time::Duration) {
        self.note_inner(buf, Some(now));
    }

    #[inline]
    fn note_inner(&mut self, buf: &[u8], now: Option<std::time::Duration>) {
        let Some(h) = buf.get(..RTP_HEADER_LEN) else {
            return;
        };
        let marker = h[1] & 0x80 != 0;
        let seq = u16::from_be_bytes([h[2], h[3]]);
        let ts = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
        let ssrc = u32::from_be_bytes([h[8], h[9], h[10], h[11]]);
        match self.last {
            Some(l) if l.ssrc == ssrc => {
                if seq == l.seq.wrapping_add(1) {
                    self.ts_step.observe(ts.wrapping_sub(l.ts), marker);
                } else {
                    self.ts_step.interrupt();
                }
                if seq_newer(seq, l.seq) {
                    self.last = Some(Last { ssrc, seq, ts });
                    self.last_at = now;
                }
            }
            _ => {
                self.last = Some(Last { ssrc, seq, ts });
                self.last_at = now;
                self.ts_step.interrupt();
            }
        }
    }

    /// SSRC, sequence number and timestamp of the newest packet seen.
    pub fn last(&self) -> Option<(u32, u16, u32)> {
        self.last.map(|l| (l.ssrc, l.seq, l.ts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(pt: u8, seq: u16, ts: u32, ssrc: u32) -> Vec<u8> {
        let mut b = vec![0u8; 12 + 160];
        assert!(write_header(&mut b, false, pt, seq, ts, ssrc));
        b[12] = 0xAB;
        b
    }

    #[test]
    fn parses_basic_header() {
        let b = pkt(8, 1000, 160_000, 0xdeadbeef);
        let h = parse_header(&b).unwrap();
        assert_eq!(h.version, 2);
        assert_eq!(h.payload_type, 8);
        assert_eq!(h.sequence, 1000);
        assert_eq!(h.timestamp, 160_000);
        assert_eq!(h.ssrc, 0xdeadbeef);
        assert_eq!(h.header_len, 12);
        assert!(!h.marker && !h.padding && !h.extension);
        assert_eq!(h.payload(&b).unwrap().len(), 160);
    }

    #[test]
    fn parses_csrc_extension_padding() {
        let mut b = vec![0u8; 12 + 8 + 4 + 8 + 10 + 4];
        b[0] = 0x80 | 0x20 | 0x10 | 2; // padding, extension, 2 CSRCs
        b[1] = 0x80 | 101;
        // extension header at 20: profile, length = 2 words
        b[22] = 0;
        b[23] = 2;
        let n = b.len();
        b[n - 1] = 4; // 4 bytes of padding
        let h = parse_header(&b).unwrap();
        assert!(h.marker);
        assert_eq!(h.payload_type, 101);
        assert_eq!(h.csrc_count, 2);
        assert_eq!(h.header_len, 12 + 8 + 4 + 8);
        assert_eq!(h.payload(&b).unwrap().len(), 10);
        // Truncated extension
        assert!(parse_header(&b[..22]).is_none());
        assert!(parse_header(&b[..30]).is_none());
        // Bad padding count
        b[n - 1] = 200;
        assert!(parse_header(&b).unwrap().payload(&b).is_none());
    }

    #[test]
    fn rejects_non_rtp() {
        assert!(parse_header(&[]).is_none());
        assert!(parse_header(&[0x80; 11]).is_none());
        let mut b = pkt(0, 1, 1, 1);
        b[0] = 0x40; // version 1
        assert!(parse_header(&b).is_none());
        // STUN binding request starts with 0x00 0x01
        let mut stun = vec![0u8; 20];
        stun[1] = 1;
        assert!(parse_header(&stun).is_none());
        assert!(!is_rtcp(&stun));
    }

    #[test]
    fn rtcp_detection() {
        let mut sr = vec![0u8; 28];
        sr[0] = 0x80;
        sr[1] = 200;
        assert!(is_rtcp(&sr));
        sr[1] = 201;
        assert!(is_rtcp(&sr));
        sr[1] = 211;
        assert!(is_rtcp(&sr));
        // RTP PT 0 with and without marker, PT 101 with marker (229) are not RTCP.
        for second in [0u8, 0x80, 8, 101, 0x80 | 101, 0x80 | 96] {
            let mut b = pkt(0, 1, 1, 1);
            b[1] = second;
            assert!(!is_rtcp(&b), "{second}");
        }
        assert!(!is_rtcp(&sr[..4]));
    }

    #[test]
    fn set_pt_keeps_marker() {
        let mut b = pkt(101, 1, 1, 1);
        set_marker(&mut b, true);
        set_payload_type(&mut b, 96);
        let h = parse_header(&b).unwrap();
        assert_eq!(h.payload_type, 96);
        assert!(h.marker);
        set_marker(&mut b, false);
        assert!(!parse_header(&b).unwrap().marker);
        set_payload_type(&mut [], 1); // no panic
        assert!(!write_header(&mut [0u8; 5], false, 0, 0, 0, 0));
    }

    #[test]
    fn rewriter_keeps_continuity_across_switch() {
        let mut rw = StreamRewriter::new(0x1111);
        let mut out = Vec::new();
        for i in 0..3u16 {
            let mut b = pkt(0, 500 + i, 8000 + 160 * i as u32, 0xAAAA);
            assert!(rw.rewrite(&mut b, 1));
            out.push(parse_header(&b).unwrap());
        }
        assert!(out[0].marker, "marker on the very first packet");
        assert!(!out[1].marker && !out[2].marker);
        assert_eq!(out[2].sequence, 502);
        assert_eq!(out[2].timestamp, 8320);
        // Switch to source 2 with wildly different numbering.
        let mut b = pkt(0, 60_000, 4_000_000_000, 0xBBBB);
        assert!(rw.rewrite(&mut b, 2));
        let h = parse_header(&b).unwrap();
        assert_eq!(h.ssrc, 0x1111);
        assert_eq!(h.sequence, 503);
        assert_eq!(h.timestamp, 8480);
        assert!(h.marker);
        let mut b = pkt(0, 60_001, 4_000_000_160, 0xBBBB);
        rw.rewrite(&mut b, 2);
        let h = parse_header(&b).unwrap();
        assert_eq!((h.sequence, h.timestamp, h.marker), (504, 8640, false));
        // Payload untouched.
        assert_eq!(b[12], 0xAB);
        // Same source id but new SSRC counts as a switch.
        let mut b = pkt(0, 7, 99, 0xCCCC);
        rw.rewrite(&mut b, 2);
        let h = parse_header(&b).unwrap();
        assert_eq!((h.sequence, h.timestamp, h.marker), (505, 8800, true));
    }

    #[test]
    fn rewriter_preserves_reordering_and_wraps() {
        let mut rw = StreamRewriter::new(9);
        let mut b = pkt(0, 65_534, u32::MAX - 159, 1);
        rw.rewrite(&mut b, 1);
        let mut b = pkt(0, 65_535, (u32::MAX - 159).wrapping_add(160), 1); // wraps ts to 0
        rw.rewrite(&mut b, 1);
        // Reordered: 1 arrives before 0.
        let mut b1 = pkt(0, 1, 320, 1);
        rw.rewrite(&mut b1, 1);
        let mut b0 = pkt(0, 0, 160, 1);
        rw.rewrite(&mut b0, 1);
        assert_eq!(parse_header(&b1).unwrap().sequence, 1);
        assert_eq!(parse_header(&b0).unwrap().sequence, 0);
        // Switch continues after the newest (1), not the last received (0).
        let mut b = pkt(0, 100, 5, 2);
        rw.rewrite(&mut b, 2);
        let h = parse_header(&b).unwrap();
        assert_eq!(h.sequence, 2);
        assert_eq!(h.timestamp, 480);
    }

    #[test]
    fn tracker_and_continuing_rewriter() {
        let mut t = StreamTracker::default();
        assert!(StreamRewriter::continuing(&t).is_none());
        t.note(&[0x80; 5]); // too short: ignored
        assert_eq!(t.last(), None);
        for i in 0..4u16 {
            t.note(&pkt(0, 1000 + i, 50_000 + 240 * i as u32, 0xB0B));
        }
        // A reordered older packet does not move the tracker back.
        t.note(&pkt(0, 1001, 50_240, 0xB0B));
        assert_eq!(t.last(), Some((0xB0B, 1003, 50_720)));
        let mut rw = StreamRewriter::continuing(&t).unwrap();
        assert_eq!(
            rw.ssrc(),
            0xB0B,
            "keeps the SSRC the receiver already knows"
        );
        // A player's packet with its own numbering continues the stream, with the marker.
        let mut b = pkt(0, 7, 99, 42);
        assert!(rw.rewrite(&mut b, u32::MAX));
        let h = parse_header(&b).unwrap();
        assert_eq!(
            (h.ssrc, h.sequence, h.timestamp, h.marker),
            (0xB0B, 1004, 50_960, true)
        );
        let mut b = pkt(0, 8, 259, 42);
        rw.rewrite(&mut b, u32::MAX);
        let h = parse_header(&b).unwrap();
        assert_eq!((h.sequence, h.timestamp, h.marker), (1005, 51_120, false));
        // Back to the relayed source (its own numbering moved on meanwhile).
        let mut b = pkt(0, 1100, 80_000, 0xB0B);
        rw.rewrite(&mut b, 0);
        let h = parse_header(&b).unwrap();
        assert_eq!(
            (h.ssrc, h.sequence, h.timestamp, h.marker),
            (0xB0B, 1006, 51_280, true)
        );
        // A new SSRC resets the tracker.
        t.note(&pkt(0, 5, 5, 0xC0C));
        assert_eq!(t.last(), Some((0xC0C, 5, 5)));
    }

    #[test]
    fn continue_at_moves_the_next_switch() {
        let mut rw = StreamRewriter::new(5);
        rw.continue_at(1000, 160); // nothing sent yet: no-op
        let mut b = pkt(101, 10, 5000, 1);
        rw.rewrite(&mut b, 1);
        let mut b = pkt(101, 11, 5000, 1); // an event repeats its timestamp
        rw.rewrite(&mut b, 1);
        rw.continue_at(5000 + 7 * 160, 160);
        let mut b = pkt(0, 900, 1, 2);
        rw.rewrite(&mut b, 2);
        let h = parse_header(&b).unwrap();
        assert_eq!(
            (h.sequence, h.timestamp, h.marker),
            (12, 5000 + 7 * 160, true)
        );
        // Never backwards.
        rw.continue_at(10, 160);
        let mut b = pkt(0, 1, 1, 3);
        rw.rewrite(&mut b, 3);
        assert_eq!(parse_header(&b).unwrap().timestamp, 5000 + 8 * 160);
    }

    #[test]
    fn rewriter_ignores_non_rtp() {
        let mut rw = StreamRewriter::with_random_ssrc();
        let mut junk = vec![1u8, 2, 3];
        assert!(!rw.rewrite(&mut junk, 1));
        assert_eq!(junk, vec![1, 2, 3]);
    }
    #[test]
    fn a_talkspurt_gap_is_not_taken_for_the_packet_interval() {
        // pjmedia with VAD: after 0.5 s of silence the next packet has the next sequence
        // number, a timestamp 4000 (0.5 s) on, and the marker bit (other phones may leave it
        // out). That is not the packet interval: a switch right after it (untimed) must
        // continue by 160, not jump another 0.5 s ahead.
        for marker in [true, false] {
            let mut t = StreamTracker::default();
            let mut rw = StreamRewriter::new(0x77);
            let mut ts = 8000u32;
            for (seq, i) in (100u16..).zip(0..6) {
                if i == 5 {
                    ts = ts.wrapping_add(4000 - 160);
                }
                let mut b = pkt(0, seq, ts, 0xABC);
                set_marker(&mut b, marker && i == 5);
                t.note(&b);
                rw.rewrite(&mut b, 1);
                ts += 160;
            }
            let (_, last_seq, last_ts) = t.last().unwrap();
            let mut cont = StreamRewriter::continuing(&t).unwrap();
            let mut b = pkt(0, 1, 1, 5);
            cont.rewrite(&mut b, u32::MAX);
            let h = parse_header(&b).unwrap();
            assert_eq!(h.sequence, last_seq.wrapping_add(1));
            assert_eq!(
                h.timestamp,
                last_ts + 160,
                "continuing (marker {marker}): one packet interval on"
            );
            let mut b = pkt(0, 1, 1, 5);
            rw.rewrite(&mut b, 2);
            let h = parse_header(&b).unwrap();
            assert_eq!(
                h.timestamp,
                last_ts + 160,
                "rewriter (marker {marker}): one packet interval on"
            );
        }
        // A packet interval that really changes (30 ms) is learned after two packets.
        let mut t = StreamTracker::default();
        for i in 0..3u16 {
            t.note(&pkt(0, i, 240 * i as u32, 9));
        }
        let mut cont = StreamRewriter::continuing(&t).unwrap();
        assert_eq!(cont.ts_step(), 240);
        let mut b = pkt(0, 1, 1, 5);
        cont.rewrite(&mut b, 1);
        assert_eq!(parse_header(&b).unwrap().timestamp, 480 + 240);
    }

    /// What a receiver sees: when each packet left, and its header.
    type Wire = Vec<(Duration, RtpHeader)>;

    /// Sends `n` packets of one source at 20 ms pace from `t`, through `rw` (or untouched
    /// into `tracker` when `rw` is `None`), returns the time of the last one.
    #[allow(clippy::too_many_arguments)]
    fn send_source(
        wire: &mut Wire,
        rw: Option<&mut StreamRewriter>,
        tracker: &mut StreamTracker,
        source_id: u32,
        ssrc: u32,
        (seq, ts): (u16, u32),
        t: Duration,
        n: u16,
    ) -> Duration {
        let mut rw = rw;
        for i in 0..n {
            let at = t + Duration::from_millis(20 * i as u64);
            let mut b = pkt(
                0,
                seq.wrapping_add(i),
                ts.wrapping_add(160 * i as u32),
                ssrc,
            );
            match rw.as_deref_mut() {
                Some(rw) => assert!(rw.rewrite_at(&mut b, source_id, at)),
                None => tracker.note_at(&b, at),
            }
            wire.push((at, parse_header(&b).unwrap()));
        }
        t + Duration::from_millis(20 * (n as u64 - 1))
    }

    use std::time::Duration;

    #[test]
    fn switches_keep_the_timestamps_in_step_with_the_emission_times() {
        let ms = Duration::from_millis;
        let mut wire: Wire = Vec::new();
        let mut tracker = StreamTracker::default();
        // 1. Phone Y relayed untouched: 20 packets, 0.5 s of silence (VAD: the next packet
        //    has the next sequence number, the timestamp 0.5 s on, the marker), 20 packets.
        let t = send_source(
            &mut wire,
            None,
            &mut tracker,
            0,
            0xB0B,
            (1000, 50_000),
            ms(0),
            20,
        );
        let mut b = pkt(0, 1020, 50_000 + 19 * 160 + 160 + 4000, 0xB0B);
        set_marker(&mut b, true);
        let t = t + ms(20 + 500);
        tracker.note_at(&b, t);
        wire.push((t, parse_header(&b).unwrap()));
        let t = send_source(
            &mut wire,
            None,
            &mut tracker,
            0,
            0xB0B,
            (1021, 50_000 + 21 * 160 + 4000),
            t + ms(20),
            19,
        );
        // 2. A player starts 7 ms after the last relayed packet and plays 1 s.
        let mut rw = StreamRewriter::continuing(&tracker).unwrap();
        let t = send_source(
            &mut wire,
            Some(&mut rw),
            &mut tracker,
            u32::MAX,
            42,
            (7, 123_456),
            t + ms(7),
            50,
        );
        // 3. It stops; phone Y resumes only 300 ms later (re-INVITE after a hold), its own
        //    numbering moved on meanwhile.
        let t = send_source(
            &mut wire,
            Some(&mut rw),
            &mut tracker,
            0,
            0xB0B,
            (1100, 70_000),
            t + ms(300),
            20,
        );
        // 4. Another playback 25 ms after the last relayed packet, 0.2 s; Y again 12 ms after.
        let t = send_source(
            &mut wire,
            Some(&mut rw),
            &mut tracker,
            u32::MAX,
            43,
            (9, 9),
            t + ms(25),
            10,
        );
        send_source(
            &mut wire,
            Some(&mut rw),
            &mut tracker,
            0,
            0xB0B,
            (1200, 90_000),
            t + ms(12),
            10,
        );

        let (t0, h0) = wire[0];
        for (i, w) in wire.windows(2).enumerate() {
            let ((_, a), (_, b)) = (w[0], w[1]);
            assert_eq!(b.ssrc, 0xB0B, "one SSRC (packet {})", i + 1);
            assert_eq!(
                b.sequence,
                a.sequence.wrapping_add(1),
                "sequence continuity (packet {})",
                i + 1
            );
            assert!(
                b.timestamp.wrapping_sub(a.timestamp) >= 160,
                "timestamps advance by at least a packet interval (packet {})",
                i + 1
            );
        }
        // Timestamps against emission times: never more than one packet interval ahead of or
        // behind the time that passed. (pjmedia's jitter buffer indexes frames by timestamp /
        // 160: every 160 units ahead is 20 ms of playout delay added while packets keep coming.)
        for (i, (t, h)) in wire.iter().enumerate() {
            let elapsed = ts_units(*t - t0, 8000) as i64;
            let advanced = h.timestamp.wrapping_sub(h0.timestamp) as i64;
            let drift = advanced - elapsed;
            assert!(
                drift.abs() <= 160,
                "packet {i} sent at {t:?}: timestamp {advanced} units on, time {elapsed} units on \
                 (drift {drift})"
            );
        }
    }

    #[test]
    fn switch_advance_is_the_elapsed_time_in_whole_packet_intervals() {
        let ms = Duration::from_millis;
        assert_eq!(switch_advance(None, 160, 8000), 160);
        assert_eq!(
            switch_advance(Some(ms(0)), 160, 8000),
            160,
            "at least one interval"
        );
        assert_eq!(switch_advance(Some(ms(29)), 160, 8000), 160);
        assert_eq!(
            switch_advance(Some(ms(39)), 160, 8000),
            160,
            "never ahead of the time"
        );
        assert_eq!(switch_advance(Some(ms(41)), 160, 8000), 320);
        assert_eq!(switch_advance(Some(ms(500)), 160, 8000), 4000);
        assert_eq!(
            switch_advance(Some(ms(500)), 240, 8000),
            3840,
            "16.7 intervals: 16"
        );
        assert_eq!(
            switch_advance(Some(Duration::from_secs(1 << 40)), 160, 8000),
            0x7fff_ffff
        );
        assert_eq!(
            switch_advance(Some(ms(20)), 0, 8000),
            160,
            "a zero step is one unit"
        );
    }

    #[test]
    fn timed_rewrite_without_a_previous_time_falls_back_to_one_interval() {
        // A tracker fed without times (note) gives the rewriter no time of the last packet.
        let mut t = StreamTracker::default();
        t.note(&pkt(0, 1, 1000, 5));
        let mut rw = StreamRewriter::continuing(&t).unwrap();
        let mut b = pkt(0, 50, 50, 6);
        rw.rewrite_at(&mut b, 1, Duration::from_secs(10));
        assert_eq!(parse_header(&b).unwrap().timestamp, 1160);
        // From then on it knows: 100 ms later, a switch is 800 units on.
        let mut b = pkt(0, 60, 60, 7);
        rw.rewrite_at(&mut b, 2, Duration::from_millis(10_100));
        assert_eq!(parse_header(&b).unwrap().timestamp, 1960);
    }
}
