//! SDP from a hostile peer: `SessionDescription::parse` and everything the engine runs on a
//! parsed offer (`engine/src/call.rs` `parse_offer`, answering, PT maps) or on a callee's answer.
//!
//! Invariants (docs/fuzzing.md):
//! - no panic, whatever the bytes;
//! - a parsed description prints as SDP that parses again, and printing is stable from then
//!   on (print(parse(print(x))) == print(x)) with the same audio endpoint, direction, codecs;
//! - payload types of parsed codecs are < 128 (the relay's PT tables have 128 entries);
//! - an offer that passes the engine's checks (audio stream, PCMU/PCMA, connection address)
//!   can be answered, and the answer mirrors its m-lines and parses with our address.
#![no_main]

use std::net::SocketAddr;

use hookflash_media::sdp::{self, Codec, Direction, OriginState, SessionDescription};
use hookflash_media::Law;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The engine takes the body as UTF-8 first (`parse_offer`), so does this target.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(offer) = SessionDescription::parse(text) else {
        return;
    };
    check_round_trip(&offer);
    inspect(&offer);
    answer_as_offer(&offer);
    use_as_callee_answer(&offer);
});

fn check_round_trip(sdp: &SessionDescription) {
    let printed = sdp.to_string();
    let again = SessionDescription::parse(&printed)
        .unwrap_or_else(|e| panic!("printed SDP does not parse ({e}): {printed:?}"));
    assert_eq!(again.to_string(), printed, "printing is not stable");
    assert_eq!(again.audio_endpoint(), sdp.audio_endpoint());
    assert_eq!(again.audio_rtcp_endpoint(), sdp.audio_rtcp_endpoint());
    assert_eq!(again.direction(), sdp.direction());
    assert_eq!(again.is_hold(), sdp.is_hold());
    assert_eq!(again.media.len(), sdp.media.len());
    for (a, b) in again.media.iter().zip(&sdp.media) {
        assert_eq!(a.codecs, b.codecs);
        assert_eq!((a.port, a.direction), (b.port, b.direction));
    }
}

/// What the engine reads from any SDP it gets.
fn inspect(sdp: &SessionDescription) {
    let _ = sdp.direction();
    let _ = sdp.is_hold();
    let _ = sdp.audio_rtcp_endpoint();
    for m in &sdp.media {
        for c in &m.codecs {
            assert!(c.pt < 128, "payload type {} out of range", c.pt);
            let _ = Law::for_codec(c);
        }
        let _ = m.first_audio_codec();
        let _ = m.telephone_event(8000);
        let _ = m.rejected().to_string();
    }
}

/// `parse_offer` + answering the caller (voicemail/park style: our default codecs).
fn answer_as_offer(offer: &SessionDescription) {
    let Some(audio) = offer.audio() else {
        return;
    };
    let Ok(codecs) = sdp::supported_codecs(audio) else {
        return;
    };
    assert!(codecs.iter().any(Codec::is_g711));
    assert!(codecs
        .iter()
        .all(|c| c.is_g711() || (c.is_telephone_event() && c.clock == 8000)));
    let Some(_endpoint) = offer.audio_endpoint() else {
        return;
    };
    let local: SocketAddr = "192.0.2.1:40000".parse().unwrap();
    let answer_codecs = sdp::answer_codecs(&codecs, &sdp::default_codecs())
        .expect("an offer with PCMU/PCMA must be answerable with the default codecs");
    let direction = offer.direction().answer(Direction::SendRecv);
    let answer = sdp::build_answer(
        offer,
        local,
        &OriginState::with(1, 1),
        &answer_codecs,
        direction,
    );
    assert_eq!(
        answer.media.len(),
        offer.media.len(),
        "one m-line per offered m-line"
    );
    let text = answer.to_string();
    let parsed = SessionDescription::parse(&text)
        .unwrap_or_else(|e| panic!("our answer does not parse ({e}): {text:?}"));
    assert_eq!(parsed.audio_endpoint(), Some(local));
    assert_eq!(parsed.direction(), direction);
    // The offer the engine sends the callee with the caller's codecs.
    let fwd = sdp::build_offer(local, &OriginState::with(2, 1), &codecs, offer.direction());
    let text = fwd.to_string();
    let parsed = SessionDescription::parse(&text)
        .unwrap_or_else(|e| panic!("our offer does not parse ({e}): {text:?}"));
    assert_eq!(parsed.audio().map(|m| &m.codecs), Some(&codecs));
    for (a, b) in sdp::pt_map(&codecs, &answer_codecs) {
        assert!(a < 128 && b < 128);
    }
}

/// The same SDP arriving as the callee's answer (`answer_codecs_for_a`, `configure_pt_maps`).
fn use_as_callee_answer(answer: &SessionDescription) {
    let caller = sdp::default_codecs();
    let b_codecs = answer.audio().map(|m| m.codecs.clone()).unwrap_or_default();
    if let Ok(a) = sdp::answer_codecs(&caller, &b_codecs) {
        assert!(!a.is_empty());
        assert!(a.iter().all(|c| caller.contains(c)));
    }
    for (a, b) in sdp::pt_map(&caller, &b_codecs)
        .into_iter()
        .chain(sdp::pt_map(&b_codecs, &caller))
    {
        assert!(a < 128 && b < 128);
    }
}
