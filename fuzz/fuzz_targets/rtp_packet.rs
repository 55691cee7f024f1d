//! RTP/RTCP packets from a hostile peer, through the pure functions the relay runs on every
//! received packet (`media/src/relay.rs` `on_packet`, `on_dtmf_packet`, `on_audio_after_dtmf`,
//! `record_packet`): RTCP demultiplexing, RTP header parsing, payload extraction (padding),
//! RFC 4733 telephone-event parsing and the DTMF detector, the PT rewrite, the
//! `StreamRewriter` (continuity) and the `StreamTracker`.
//!
//! Input: one byte of set-up (the telephone-event PT of the leg), then records
//! `[len: u16 BE][source: u8][elapsed ms: u8][len bytes of packet]`; a short last record takes
//! what is left. The relay keeps state across packets, so a run is a stream of packets.
//!
//! Invariants (docs/fuzzing.md):
//! - no panic, whatever the bytes;
//! - `parse_header` only accepts version 2 with the fixed header, CSRCs and extension inside
//!   the packet; `payload` lies inside the packet after the header;
//! - a telephone-event payload round-trips through `TelephoneEvent::write`;
//! - detected digits are DTMF characters, at most one report per (SSRC, timestamp);
//! - the rewriter rewrites exactly the packets `parse_header` accepts, keeps the length, the
//!   payload and the header layout, and stamps its own SSRC.
#![no_main]

use std::time::Duration;

use hookflash_media::dtmf::{DtmfDetector, TelephoneEvent, EVENT_LEN};
use hookflash_media::rtp::{
    is_rtcp, parse_header, set_marker, set_payload_type, RtpHeader, StreamRewriter, StreamTracker,
    RTP_HEADER_LEN,
};
use hookflash_media::Law;
use libfuzzer_sys::fuzz_target;

const DIGITS: &str = "0123456789*#ABCD";

fuzz_target!(|data: &[u8]| {
    let Some((&setup, mut rest)) = data.split_first() else {
        return;
    };
    let dtmf_pt = setup & 0x7f;
    let mut detector = DtmfDetector::default();
    let mut rewriter = StreamRewriter::new(0x5eed_0001);
    let mut tracker = StreamTracker::default();
    let mut taken_over: Option<StreamRewriter> = None;
    let mut reported: Vec<char> = Vec::new();
    let mut now = Duration::ZERO;
    while rest.len() >= 4 {
        let len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
        let source = u32::from(rest[2]);
        now += Duration::from_millis(u64::from(rest[3]));
        rest = &rest[4..];
        let len = len.min(rest.len());
        let (pkt, tail) = rest.split_at(len);
        rest = tail;
        on_packet(
            pkt,
            dtmf_pt,
            source,
            now,
            &mut detector,
            &mut rewriter,
            &mut tracker,
            &mut reported,
        );
        // A player taking over the untouched stream (`StreamRewriter::continuing`).
        if source & 0x80 != 0 {
            if taken_over.is_none() {
                taken_over = StreamRewriter::continuing(&tracker);
            }
            if let Some(rw) = taken_over.as_mut() {
                let mut copy = pkt.to_vec();
                rw.continue_at(source.wrapping_mul(160), 160);
                rw.rewrite(&mut copy, source);
            }
        }
    }
    assert!(reported.iter().all(|d| DIGITS.contains(*d)));
});

#[allow(clippy::too_many_arguments)]
fn on_packet(
    pkt: &[u8],
    dtmf_pt: u8,
    source: u32,
    now: Duration,
    detector: &mut DtmfDetector,
    rewriter: &mut StreamRewriter,
    tracker: &mut StreamTracker,
    reported: &mut Vec<char>,
) {
    let header = parse_header(pkt);
    if let Some(h) = header {
        check_header(pkt, &h);
    }
    if is_rtcp(pkt) {
        // RTCP is relayed opaque (no parser beyond the demultiplexer).
        assert!(pkt.len() >= 8 && pkt[0] >> 6 == 2 && (192..=223).contains(&pkt[1]));
        return;
    }
    if pkt.len() < RTP_HEADER_LEN || pkt[0] >> 6 != 2 {
        assert!(header.is_none(), "non-RTP accepted: {pkt:?}");
        return;
    }
    let mut pkt = pkt.to_vec();
    let pt = pkt[1] & 0x7f;
    if pt == dtmf_pt {
        if let Some(h) = header {
            if let Some(ev) = h.payload(&pkt).and_then(TelephoneEvent::parse) {
                let mut out = [0u8; EVENT_LEN];
                ev.write(&mut out);
                assert_eq!(TelephoneEvent::parse(&out), Some(ev));
                let mut n = 0;
                detector.on_event(h.ssrc, h.timestamp, ev, &mut |d| {
                    n += 1;
                    reported.push(d.digit);
                    assert!(d.duration <= u32::from(u16::MAX));
                });
                assert!(
                    n <= 2,
                    "one packet reports at most the lost press and its own"
                );
            }
        }
    } else {
        if detector.is_pending() {
            if let Some(h) = header {
                detector.on_audio(h.ssrc, h.timestamp, &mut |d| reported.push(d.digit));
            }
        }
        // The recorder's decode of the payload.
        if let Some(payload) = header.and_then(|h| h.payload(&pkt)) {
            let law = if pt == 8 { Law::Alaw } else { Law::Mulaw };
            let sum: i64 = payload
                .iter()
                .map(|b| i64::from(law.decode_sample(*b)))
                .sum();
            std::hint::black_box(sum);
        }
    }
    // PT map and marker as the relay applies them.
    let mapped = pt.wrapping_add(source as u8) & 0x7f;
    set_payload_type(&mut pkt, mapped);
    assert_eq!(pkt[1] & 0x7f, mapped);
    if source & 1 != 0 {
        let marker = pkt[1] & 0x80 != 0;
        set_marker(&mut pkt, !marker);
        set_marker(&mut pkt, marker);
    }
    let before = pkt.clone();
    let rewritten = rewriter.rewrite_at(&mut pkt, source, now);
    assert_eq!(
        rewritten,
        header.is_some(),
        "rewrites exactly the RTP packets"
    );
    assert_eq!(pkt.len(), before.len());
    if rewritten {
        let h = parse_header(&pkt).expect("a rewritten packet is still RTP");
        let old = parse_header(&before).expect("was RTP");
        assert_eq!(h.ssrc, rewriter.ssrc());
        assert_eq!(h.header_len, old.header_len);
        assert_eq!(h.payload_type, old.payload_type);
        assert_eq!(&pkt[12..], &before[12..], "only the fixed header changes");
        assert_eq!(pkt[0], before[0]);
    } else {
        assert_eq!(pkt, before, "a packet that is not rewritten is untouched");
    }
    tracker.note_at(&pkt, now);
}

fn check_header(pkt: &[u8], h: &RtpHeader) {
    assert_eq!(h.version, 2);
    assert_eq!(pkt[0] >> 6, 2);
    assert!(h.header_len >= RTP_HEADER_LEN && h.header_len <= pkt.len());
    assert_eq!(h.header_len % 4, 0);
    assert_eq!(h.csrc_count, pkt[0] & 0x0f);
    assert!(h.payload_type < 128);
    let min = RTP_HEADER_LEN + 4 * h.csrc_count as usize + if h.extension { 4 } else { 0 };
    assert!(h.header_len >= min);
    if let Some(p) = h.payload(pkt) {
        assert!(p.len() <= pkt.len() - h.header_len);
        if !h.padding {
            assert_eq!(p.len(), pkt.len() - h.header_len);
        }
    }
}
