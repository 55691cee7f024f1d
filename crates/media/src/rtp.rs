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
/// players, the mixer): one SSRC, sequence numbers continuing from the last one sent,
/// timestamps continuing by one packet interval, and the marker bit on the first packet after
/// a switch. A source "changes" when `source_id` differs from the previous packet's or the same
/// source starts a new SSRC. Within a source, gaps and reordering are preserved.
#[derive(Debug, Clone)]
pub struct StreamRewriter {
    ssrc: u32,
    /// Something was sent already: the next source continues `last_out_*`.
    started: bool,
    current: Option<Source>,
    last_out_seq: u16,
    last_out_ts: u32,
    /// Timestamp increment per packet learned from the stream (160 = 20 ms at 8 kHz).
    ts_step: u32,
}

impl StreamRewriter {
    pub fn new(ssrc: u32) -> StreamRewriter {
        StreamRewriter {
            ssrc,
            started: false,
            current: None,
            last_out_seq: 0,
            last_out_ts: 0,
            ts_step: 160,
        }
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
            ts_step: tracker.ts_step,
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
        self.ts_step = step;
    }

    /// Rewrites SSRC, sequence number, timestamp (and marker on a switch) in place.
    /// Returns `false` and leaves `buf` untouched if it is not an RTP packet.
    pub fn rewrite(&mut self, buf: &mut [u8], source_id: u32) -> bool {
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
                (
                    self.last_out_seq.wrapping_add(1).wrapping_sub(h.sequence),
                    self.last_out_ts
                        .wrapping_add(self.ts_step)
                        .wrapping_sub(h.timestamp),
                )
            };
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
            let step = h.timestamp.wrapping_sub(src.last_in_ts);
            // Ignore 0 (DTMF events repeat the timestamp) and implausible jumps (> 1 s at 48 kHz).
            if step > 0 && step <= 48_000 {
                self.ts_step = step;
            }
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
    ts_step: u32,
}

impl Default for StreamTracker {
    fn default() -> Self {
        StreamTracker {
            last: None,
            ts_step: 160,
        }
    }
}

impl StreamTracker {
    /// Records an outgoing RTP packet; buffers shorter than an RTP header are ignored.
    #[inline]
    pub fn note(&mut self, buf: &[u8]) {
        let Some(h) = buf.get(..RTP_HEADER_LEN) else {
            return;
        };
        let seq = u16::from_be_bytes([h[2], h[3]]);
        let ts = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
        let ssrc = u32::from_be_bytes([h[8], h[9], h[10], h[11]]);
        match self.last {
            Some(l) if l.ssrc == ssrc => {
                if seq == l.seq.wrapping_add(1) {
                    let step = ts.wrapping_sub(l.ts);
                    if step > 0 && step <= 48_000 {
                        self.ts_step = step;
                    }
                }
                if seq_newer(seq, l.seq) {
                    self.last = Some(Last { ssrc, seq, ts });
                }
            }
            _ => self.last = Some(Last { ssrc, seq, ts }),
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
}
