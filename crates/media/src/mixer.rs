//! The conference mixer, sans-IO: each participant hears the sum of the others (mix-minus).
//!
//! [`Mixer`] takes the RTP packets each participant sends ([`Mixer::receive`]) and, once per
//! 20 ms frame ([`Mixer::tick`]), yields one RTP packet per participant: the others' audio
//! summed, minus its own, encoded in that participant's G.711 law with its own SSRC, sequence
//! and timestamp. A small per-participant buffer absorbs jitter (bounded: a participant that
//! sends faster than the clock loses its oldest audio, not our memory). Muted participants
//! contribute nothing; deaf ones (held) hear nothing from the mix. No sockets and no clock:
//! the I/O shell (`conference.rs`) feeds it and sends what it yields.
//!
//! A participant is either an RTP endpoint of the mixer's own (a phone the conference
//! dialled: packets in, packets out) or a *fed* one ([`Mixer::add_pcm`]): the leg of a call
//! whose relay decodes its audio for us and plays our decoded frames to its phone on the
//! call's own stream (see `relay.rs`, conference feeds). Fed participants give and take
//! 8 kHz samples ([`Mixer::receive_pcm`], the `pcm` output of [`Mixer::tick_all`]).
//!
//! Who hears a participant is its [`Hearing`]: everybody else (`Normal`, a barging
//! supervisor too), no one (`Listen`: a silent supervisor) or one participant alone
//! (`Coach`: the supervisor whispers to its agent). It changes live and is independent of
//! mute (a muted participant is heard by no one whatever its hearing).
//!
//! Two clips can sit on a participant: *music* (it waits alone, or for a moderator) replaces
//! what it hears and keeps it out of the mix; an *overlay* (a join beep, an announcement to
//! it alone: [`Mixer::overlay_one`]) is added once to what it hears.
//!
//! Two extras sit on the mix itself, outside the per-participant rules: an *announcement*
//! ([`Mixer::announce`]) is a source of its own, summed into the mix so every participant
//! that hears the mix hears it (and the recording has it); the *mix tap*
//! ([`Mixer::set_mix_tap`]) keeps each frame's full mix (every participant heard, plus the
//! announcement) for the conference recording.

use std::collections::VecDeque;

use crate::audio::Pcm8k;
use crate::g711::Law;
use crate::rtp;

/// A decoded frame for a fed participant.
pub type PcmFrame = [i16; FRAME_SAMPLES];

/// Samples in one 20 ms frame at 8 kHz.
pub const FRAME_SAMPLES: usize = 160;
/// At most this much audio waits per participant (120 ms); more drops the oldest.
const MAX_BUFFERED: usize = 6 * FRAME_SAMPLES;
/// After an overflow the buffer is cut back to this (60 ms), so latency stays low.
const REFILL_TO: usize = 3 * FRAME_SAMPLES;

/// Who hears a participant (supervision modes). What it hears is the same in every mode:
/// the mix of everybody heard by it, minus itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Hearing {
    /// Heard by every other participant (a party, a barging supervisor).
    #[default]
    Normal,
    /// Heard by no one (a listening supervisor).
    Listen,
    /// Heard by this participant alone (a coaching supervisor whispering to its agent).
    Coach(u32),
}

/// One participant's place in the mixer.
struct Participant {
    id: u32,
    law: Law,
    /// The payload type its audio arrives and leaves with.
    pt: u8,
    /// Fed: samples in, samples out (no RTP of ours).
    pcm: bool,
    muted: bool,
    deaf: bool,
    hearing: Hearing,
    buffered: VecDeque<i16>,
    ssrc: u32,
    seq: u16,
    ts: u32,
    sent_any: bool,
    /// Packets whose audio was dropped because the buffer was full.
    overflows: u64,
    /// Looped instead of the mix; the participant is not heard meanwhile.
    music: Option<Clip>,
    /// Played once on top of what it hears.
    overlay: Option<Clip>,
}

/// A clip playing to one participant.
struct Clip {
    pcm: Pcm8k,
    pos: usize,
}

impl Clip {
    fn new(pcm: Pcm8k) -> Clip {
        Clip { pcm, pos: 0 }
    }

    /// The next sample; `None` at the end of a clip that does not loop.
    fn next(&mut self, looped: bool) -> Option<i16> {
        let samples = self.pcm.samples();
        if samples.is_empty() {
            return None;
        }
        if self.pos >= samples.len() {
            if !looped {
                return None;
            }
            self.pos = 0;
        }
        let v = samples[self.pos];
        self.pos += 1;
        Some(v)
    }
}

/// The mix of one conference (see the module comment).
#[derive(Default)]
pub struct Mixer {
    parts: Vec<Participant>,
    /// An announcement into the mix (heard by all), played once.
    announcement: Option<Clip>,
    /// The last frame's full mix, while a recording wants it.
    mix_tap: Option<PcmFrame>,
}

impl Mixer {
    pub fn new() -> Mixer {
        Mixer::default()
    }

    /// Adds a participant sending and receiving `law` with payload type `pt`; our packets to
    /// it carry `ssrc`. A participant already there is replaced.
    pub fn add(&mut self, id: u32, law: Law, pt: u8, ssrc: u32) {
        self.insert(id, law, pt, ssrc, false);
    }

    /// Adds a fed participant: its audio arrives decoded ([`Self::receive_pcm`]) and what it
    /// hears leaves decoded (the `pcm` output of [`Self::tick_all`]).
    pub fn add_pcm(&mut self, id: u32) {
        self.insert(id, Law::Mulaw, 0, 0, true);
    }

    fn insert(&mut self, id: u32, law: Law, pt: u8, ssrc: u32, pcm: bool) {
        self.remove(id);
        self.parts.push(Participant {
            id,
            law,
            pt,
            pcm,
            muted: false,
            deaf: false,
            hearing: Hearing::Normal,
            buffered: VecDeque::with_capacity(MAX_BUFFERED),
            ssrc,
            seq: rand_start(ssrc),
            ts: rand_start(ssrc.rotate_left(16)) as u32,
            sent_any: false,
            overflows: 0,
            music: None,
            overlay: None,
        });
    }

    /// Music instead of the mix (`None`: back to the mix). While it plays the participant
    /// hears only the music and nobody hears it.
    pub fn set_music(&mut self, id: u32, music: Option<Pcm8k>) -> bool {
        self.find(id)
            .map(|p| p.music = music.map(Clip::new))
            .is_some()
    }

    /// Whether `id` hears music now.
    pub fn has_music(&self, id: u32) -> bool {
        self.parts.iter().any(|p| p.id == id && p.music.is_some())
    }

    /// Plays `clip` once to every participant, on top of what it hears (a join beep).
    pub fn overlay_all(&mut self, clip: &Pcm8k) {
        for p in &mut self.parts {
            p.overlay = Some(Clip::new(clip.clone()));
        }
    }

    /// Plays `clip` once to participant `id` only, on top of what it hears (replacing a clip
    /// still playing to it that way). False if there is no such participant.
    pub fn overlay_one(&mut self, id: u32, clip: &Pcm8k) -> bool {
        self.find(id)
            .map(|p| p.overlay = Some(Clip::new(clip.clone())))
            .is_some()
    }

    /// Plays `clip` once into the mix, as a source of its own: everybody hearing the mix hears
    /// it, and so does the recording (replaces an announcement still playing).
    pub fn announce(&mut self, clip: &Pcm8k) {
        self.announcement = Some(Clip::new(clip.clone()));
    }

    /// Whether an announcement into the mix is still playing.
    pub fn announcing(&self) -> bool {
        self.announcement.is_some()
    }

    /// Keeps each frame's full mix for [`Self::mix_frame`] (a recording), or stops.
    pub fn set_mix_tap(&mut self, on: bool) {
        self.mix_tap = on.then_some([0; FRAME_SAMPLES]);
    }

    /// The last frame's full mix (every participant heard, plus the announcement), while the
    /// tap is on.
    pub fn mix_frame(&self) -> Option<&PcmFrame> {
        self.mix_tap.as_ref()
    }

    /// Adds the announcement's next frame to `total` and keeps the result for the tap.
    fn mix_extras(&mut self, total: &mut [i32; FRAME_SAMPLES]) {
        if let Some(a) = self.announcement.as_mut() {
            for t in total.iter_mut() {
                match a.next(false) {
                    Some(s) => *t += i32::from(s),
                    None => {
                        self.announcement = None;
                        break;
                    }
                }
            }
        }
        if let Some(tap) = self.mix_tap.as_mut() {
            for (o, t) in tap.iter_mut().zip(total.iter()) {
                *o = (*t).clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16;
            }
        }
    }

    pub fn remove(&mut self, id: u32) {
        self.parts.retain(|p| p.id != id);
    }

    pub fn len(&self) -> usize {
        self.parts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// A muted participant is heard by no one.
    pub fn set_muted(&mut self, id: u32, muted: bool) -> bool {
        self.find(id).map(|p| p.muted = muted).is_some()
    }

    /// Who hears `id` from now on (see [`Hearing`]).
    pub fn set_hearing(&mut self, id: u32, hearing: Hearing) -> bool {
        self.find(id).map(|p| p.hearing = hearing).is_some()
    }

    /// Who hears `id` now.
    pub fn hearing(&self, id: u32) -> Option<Hearing> {
        self.parts.iter().find(|p| p.id == id).map(|p| p.hearing)
    }

    /// A deaf participant (on hold, hearing music elsewhere) gets no packets from the mix.
    pub fn set_deaf(&mut self, id: u32, deaf: bool) -> bool {
        self.find(id).map(|p| p.deaf = deaf).is_some()
    }

    /// Packets dropped for `id` because its buffer was full (it sent faster than real time).
    pub fn overflows(&self, id: u32) -> u64 {
        self.parts
            .iter()
            .find(|p| p.id == id)
            .map_or(0, |p| p.overflows)
    }

    fn find(&mut self, id: u32) -> Option<&mut Participant> {
        self.parts.iter_mut().find(|p| p.id == id)
    }

    /// An RTP packet from participant `id`. Its audio is buffered if it is in the
    /// participant's payload type; anything else (RTCP, telephone-events, garbage) is ignored.
    /// Returns whether audio was taken.
    pub fn receive(&mut self, id: u32, packet: &[u8]) -> bool {
        let Some(p) = self.find(id) else {
            return false;
        };
        if p.pcm {
            return false;
        }
        let Some(header) = rtp::parse_header(packet) else {
            return false;
        };
        if header.payload_type != p.pt {
            return false;
        }
        let Some(payload) = header.payload(packet) else {
            return false;
        };
        if p.buffered.len() + payload.len() > MAX_BUFFERED {
            p.overflows += 1;
            while p.buffered.len() > REFILL_TO {
                p.buffered.pop_front();
            }
        }
        let law = p.law;
        p.buffered
            .extend(payload.iter().map(|&b| law.decode_sample(b)));
        true
    }

    /// Decoded audio from fed participant `id` (see [`Self::add_pcm`]); bounded like packets.
    pub fn receive_pcm(&mut self, id: u32, samples: &[i16]) -> bool {
        let Some(p) = self.find(id).filter(|p| p.pcm) else {
            return false;
        };
        if p.buffered.len() + samples.len() > MAX_BUFFERED {
            p.overflows += 1;
            while p.buffered.len() > REFILL_TO {
                p.buffered.pop_front();
            }
        }
        let keep = &samples[samples.len().saturating_sub(MAX_BUFFERED)..];
        p.buffered.extend(keep.iter().copied());
        true
    }

    /// One 20 ms frame for the RTP participants only (fed ones get nothing: see
    /// [`Self::tick_all`]).
    pub fn tick(&mut self, out: &mut Vec<(u32, Vec<u8>)>) {
        self.tick_all(out, &mut Vec::new());
    }

    /// One 20 ms frame: a packet for every RTP participant that is not deaf, as (id, packet),
    /// and a decoded frame for every fed one, as (id, frame).
    pub fn tick_all(&mut self, out: &mut Vec<(u32, Vec<u8>)>, pcm_out: &mut Vec<(u32, PcmFrame)>) {
        // `own`: what each participant put into `total` (heard by everybody else);
        // `coached`: what a coaching participant says to its one listener, as (listener, frame).
        let mut own: Vec<Option<[i16; FRAME_SAMPLES]>> = Vec::with_capacity(self.parts.len());
        let mut coached: Vec<(u32, [i16; FRAME_SAMPLES])> = Vec::new();
        let mut total = [0i32; FRAME_SAMPLES];
        for p in &mut self.parts {
            if p.buffered.is_empty() {
                own.push(None);
                continue;
            }
            let mut frame = [0i16; FRAME_SAMPLES];
            for s in frame.iter_mut() {
                match p.buffered.pop_front() {
                    Some(v) => *s = v,
                    None => break,
                }
            }
            if p.muted || p.music.is_some() {
                own.push(None);
                continue;
            }
            match p.hearing {
                Hearing::Normal => {
                    for (t, s) in total.iter_mut().zip(frame.iter()) {
                        *t += i32::from(*s);
                    }
                    own.push(Some(frame));
                }
                Hearing::Listen => own.push(None),
                Hearing::Coach(to) => {
                    if to != p.id {
                        coached.push((to, frame));
                    }
                    own.push(None);
                }
            }
        }
        self.mix_extras(&mut total);
        for (p, mine) in self.parts.iter_mut().zip(own) {
            if p.deaf {
                continue;
            }
            let mut heard = [0i16; FRAME_SAMPLES];
            for (i, h) in heard.iter_mut().enumerate() {
                let mut v = match p.music.as_mut() {
                    Some(m) => i32::from(m.next(true).unwrap_or(0)),
                    None => {
                        total[i] - mine.map_or(0, |f| i32::from(f[i]))
                            + coached
                                .iter()
                                .filter(|(to, _)| *to == p.id)
                                .map(|(_, f)| i32::from(f[i]))
                                .sum::<i32>()
                    }
                };
                if let Some(o) = p.overlay.as_mut() {
                    match o.next(false) {
                        Some(s) => v += i32::from(s),
                        None => p.overlay = None,
                    }
                }
                *h = v.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16;
            }
            if p.pcm {
                pcm_out.push((p.id, heard));
                continue;
            }
            let mut packet = vec![0u8; rtp::RTP_HEADER_LEN + FRAME_SAMPLES];
            rtp::write_header(&mut packet, !p.sent_any, p.pt, p.seq, p.ts, p.ssrc);
            for (b, h) in packet[rtp::RTP_HEADER_LEN..].iter_mut().zip(heard.iter()) {
                *b = p.law.encode_sample(*h);
            }
            p.sent_any = true;
            p.seq = p.seq.wrapping_add(1);
            p.ts = p.ts.wrapping_add(FRAME_SAMPLES as u32);
            out.push((p.id, packet));
        }
    }
}

/// A start value derived from the SSRC (itself random), so sequence and timestamp do not
/// start at 0 (RFC 3550 §5.1) without a second random source here.
fn rand_start(seed: u32) -> u16 {
    (seed ^ (seed >> 16)) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A packet of `law` carrying `samples` of constant `level`.
    fn packet(law: Law, pt: u8, level: i16, samples: usize) -> Vec<u8> {
        let mut p = vec![0u8; rtp::RTP_HEADER_LEN + samples];
        rtp::write_header(&mut p, false, pt, 1, 0, 42);
        for b in &mut p[rtp::RTP_HEADER_LEN..] {
            *b = law.encode_sample(level);
        }
        p
    }

    fn level_of(law: Law, packet: &[u8]) -> i32 {
        let payload = &packet[rtp::RTP_HEADER_LEN..];
        payload
            .iter()
            .map(|&b| i32::from(law.decode_sample(b)))
            .sum::<i32>()
            / payload.len() as i32
    }

    fn heard(out: &[(u32, Vec<u8>)], id: u32, law: Law) -> Option<i32> {
        out.iter()
            .find(|(i, _)| *i == id)
            .map(|(_, p)| level_of(law, p))
    }

    #[test]
    fn each_participant_hears_the_others_and_not_itself() {
        let mut m = Mixer::new();
        m.add(1, Law::Mulaw, 0, 100);
        m.add(2, Law::Alaw, 8, 200);
        m.add(3, Law::Mulaw, 0, 300);
        m.receive(1, &packet(Law::Mulaw, 0, 1000, 160));
        m.receive(2, &packet(Law::Alaw, 8, 2000, 160));
        m.receive(3, &packet(Law::Mulaw, 0, 4000, 160));
        let mut out = Vec::new();
        m.tick(&mut out);
        let near = |got: Option<i32>, want: i32| got.is_some_and(|g| (g - want).abs() <= want / 20);
        assert!(
            near(heard(&out, 1, Law::Mulaw), 6000),
            "{:?}",
            heard(&out, 1, Law::Mulaw)
        );
        assert!(
            near(heard(&out, 2, Law::Alaw), 5000),
            "{:?}",
            heard(&out, 2, Law::Alaw)
        );
        assert!(
            near(heard(&out, 3, Law::Mulaw), 3000),
            "{:?}",
            heard(&out, 3, Law::Mulaw)
        );
        // Each packet is in the participant's own payload type and SSRC.
        let two = out.iter().find(|(i, _)| *i == 2).map(|(_, p)| p.clone());
        let h = two.as_deref().and_then(rtp::parse_header);
        assert_eq!(h.map(|h| (h.payload_type, h.ssrc)), Some((8, 200)));
    }

    #[test]
    fn a_muted_participant_is_heard_by_no_one_and_still_hears() {
        let mut m = Mixer::new();
        m.add(1, Law::Mulaw, 0, 1);
        m.add(2, Law::Mulaw, 0, 2);
        m.add(3, Law::Mulaw, 0, 3);
        assert!(m.set_muted(2, true));
        m.receive(1, &packet(Law::Mulaw, 0, 1000, 160));
        m.receive(2, &packet(Law::Mulaw, 0, 8000, 160));
        let mut out = Vec::new();
        m.tick(&mut out);
        assert!(heard(&out, 3, Law::Mulaw).is_some_and(|l| (l - 1000).abs() < 60));
        assert!(heard(&out, 2, Law::Mulaw).is_some_and(|l| (l - 1000).abs() < 60));
        assert!(heard(&out, 1, Law::Mulaw).is_some_and(|l| l.abs() < 10));
    }

    #[test]
    fn a_deaf_participant_gets_no_packets_but_is_heard() {
        let mut m = Mixer::new();
        m.add(1, Law::Mulaw, 0, 1);
        m.add(2, Law::Mulaw, 0, 2);
        m.set_deaf(1, true);
        m.receive(1, &packet(Law::Mulaw, 0, 3000, 160));
        let mut out = Vec::new();
        m.tick(&mut out);
        assert_eq!(out.len(), 1);
        assert!(heard(&out, 2, Law::Mulaw).is_some_and(|l| (l - 3000).abs() < 150));
    }

    #[test]
    fn sequence_and_timestamp_advance_per_frame_with_the_marker_on_the_first() {
        let mut m = Mixer::new();
        m.add(1, Law::Mulaw, 0, 77);
        m.add(2, Law::Mulaw, 0, 78);
        let mut out = Vec::new();
        m.tick(&mut out);
        m.tick(&mut out);
        let mine: Vec<_> = out
            .iter()
            .filter(|(i, _)| *i == 1)
            .filter_map(|(_, p)| rtp::parse_header(p))
            .collect();
        assert_eq!(mine.len(), 2);
        assert!(mine[0].marker && !mine[1].marker);
        assert_eq!(mine[1].sequence, mine[0].sequence.wrapping_add(1));
        assert_eq!(mine[1].timestamp, mine[0].timestamp.wrapping_add(160));
    }

    #[test]
    fn other_payload_types_and_garbage_are_ignored_and_fast_senders_are_bounded() {
        let mut m = Mixer::new();
        m.add(1, Law::Mulaw, 0, 1);
        assert!(!m.receive(1, &packet(Law::Mulaw, 101, 1000, 4)));
        assert!(!m.receive(1, &[0x80, 0x00]));
        assert!(!m.receive(9, &packet(Law::Mulaw, 0, 1000, 160)));
        for _ in 0..50 {
            assert!(m.receive(1, &packet(Law::Mulaw, 0, 1000, 160)));
        }
        assert!(m.overflows(1) > 0);
        let buffered = m.parts[0].buffered.len();
        assert!(buffered <= MAX_BUFFERED, "{buffered}");
    }

    fn pcm_level(out: &[(u32, PcmFrame)], id: u32) -> Option<i32> {
        out.iter()
            .find(|(i, _)| *i == id)
            .map(|(_, f)| f.iter().map(|&s| i32::from(s)).sum::<i32>() / FRAME_SAMPLES as i32)
    }

    #[test]
    fn fed_participants_mix_with_rtp_ones_both_ways() {
        let mut m = Mixer::new();
        m.add(1, Law::Mulaw, 0, 1);
        m.add_pcm(2);
        m.add_pcm(3);
        m.receive(1, &packet(Law::Mulaw, 0, 1000, 160));
        assert!(m.receive_pcm(2, &[2000; 160]));
        assert!(m.receive_pcm(3, &[4000; 160]));
        // A fed participant takes no packets, an RTP one no samples.
        assert!(!m.receive(2, &packet(Law::Mulaw, 0, 1000, 160)));
        assert!(!m.receive_pcm(1, &[1; 160]));
        let (mut out, mut pcm) = (Vec::new(), Vec::new());
        m.tick_all(&mut out, &mut pcm);
        assert_eq!(out.len(), 1);
        assert!(heard(&out, 1, Law::Mulaw).is_some_and(|l| (l - 6000).abs() < 300));
        // 1's μ-law 1000 decodes a little off; the fed samples are exact.
        assert!(pcm_level(&pcm, 2).is_some_and(|l| (l - 5000).abs() < 60));
        assert!(pcm_level(&pcm, 3).is_some_and(|l| (l - 3000).abs() < 60));
    }

    #[test]
    fn music_replaces_the_mix_and_keeps_the_listener_out_of_it() {
        let mut m = Mixer::new();
        m.add_pcm(1);
        m.add_pcm(2);
        assert!(m.set_music(1, Some(Pcm8k::new(vec![700; 100]))));
        assert!(m.has_music(1));
        m.receive_pcm(1, &[3000; 160]);
        m.receive_pcm(2, &[1000; 160]);
        let (mut out, mut pcm) = (Vec::new(), Vec::new());
        m.tick_all(&mut out, &mut pcm);
        // 1 hears the looped music only; 2 does not hear 1.
        assert_eq!(pcm_level(&pcm, 1), Some(700));
        assert_eq!(pcm_level(&pcm, 2), Some(0));
        m.set_music(1, None);
        m.receive_pcm(1, &[3000; 160]);
        m.receive_pcm(2, &[1000; 160]);
        pcm.clear();
        m.tick_all(&mut out, &mut pcm);
        assert_eq!(pcm_level(&pcm, 1), Some(1000));
        assert_eq!(pcm_level(&pcm, 2), Some(3000));
    }

    #[test]
    fn an_overlay_plays_once_on_top_of_the_mix() {
        let mut m = Mixer::new();
        m.add_pcm(1);
        m.add_pcm(2);
        m.overlay_all(&Pcm8k::new(vec![500; 200]));
        let (mut out, mut pcm) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            m.receive_pcm(2, &[1000; 160]);
            m.tick_all(&mut out, &mut pcm);
        }
        let ones: Vec<i32> = pcm
            .iter()
            .filter(|(i, _)| *i == 1)
            .map(|(_, f)| f.iter().map(|&s| i32::from(s)).sum::<i32>() / FRAME_SAMPLES as i32)
            .collect();
        // 160 samples of beep, then 40 of the second frame, then none.
        assert_eq!(ones, vec![1500, 1000 + 500 * 40 / 160, 1000]);
    }

    /// Four fed participants, each sending its own constant level (1: 1000, 2: 2000,
    /// 3: 4000, supervisor 4: 8000); what each hears after one frame.
    fn supervised(hearing: Hearing) -> Vec<(u32, i32)> {
        let mut m = Mixer::new();
        for id in 1..=4 {
            m.add_pcm(id);
        }
        assert!(m.set_hearing(4, hearing));
        assert_eq!(m.hearing(4), Some(hearing));
        for (id, level) in [(1, 1000), (2, 2000), (3, 4000), (4, 8000)] {
            m.receive_pcm(id, &[level; 160]);
        }
        let (mut out, mut pcm) = (Vec::new(), Vec::new());
        m.tick_all(&mut out, &mut pcm);
        (1..=4)
            .map(|id| (id, pcm_level(&pcm, id).unwrap_or(i32::MIN)))
            .collect()
    }

    #[test]
    fn a_listener_hears_everybody_and_is_heard_by_no_one() {
        assert_eq!(
            supervised(Hearing::Listen),
            vec![(1, 6000), (2, 5000), (3, 3000), (4, 7000)]
        );
    }

    #[test]
    fn a_coach_is_heard_by_its_agent_alone() {
        assert_eq!(
            supervised(Hearing::Coach(2)),
            vec![(1, 6000), (2, 13000), (3, 3000), (4, 7000)]
        );
    }

    #[test]
    fn a_barging_participant_is_heard_by_everybody() {
        assert_eq!(
            supervised(Hearing::Normal),
            vec![(1, 14000), (2, 13000), (3, 11000), (4, 7000)]
        );
    }

    #[test]
    fn hearing_changes_live_and_mute_still_wins() {
        let mut m = Mixer::new();
        m.add(1, Law::Alaw, 8, 1);
        m.add(2, Law::Alaw, 8, 2);
        m.add_pcm(3);
        let frame = |m: &mut Mixer| {
            m.receive(1, &packet(Law::Alaw, 8, 1000, 160));
            m.receive(2, &packet(Law::Alaw, 8, 2000, 160));
            m.receive_pcm(3, &[4000; 160]);
            let (mut out, mut pcm) = (Vec::new(), Vec::new());
            m.tick_all(&mut out, &mut pcm);
            (
                heard(&out, 1, Law::Alaw).unwrap_or(i32::MIN),
                heard(&out, 2, Law::Alaw).unwrap_or(i32::MIN),
                pcm_level(&pcm, 3).unwrap_or(i32::MIN),
            )
        };
        let near = |(a, b, c): (i32, i32, i32), want: (i32, i32, i32)| {
            (a - want.0).abs() <= 100 && (b - want.1).abs() <= 100 && (c - want.2).abs() <= 100
        };
        m.set_hearing(3, Hearing::Listen);
        let got = frame(&mut m);
        assert!(near(got, (2000, 1000, 3000)), "listen: {got:?}");
        m.set_hearing(3, Hearing::Coach(1));
        let got = frame(&mut m);
        assert!(near(got, (6000, 1000, 3000)), "coach 1: {got:?}");
        m.set_hearing(3, Hearing::Normal);
        let got = frame(&mut m);
        assert!(near(got, (6000, 5000, 3000)), "barge: {got:?}");
        // A muted coach is heard by no one, its agent included.
        m.set_hearing(3, Hearing::Coach(1));
        m.set_muted(3, true);
        let got = frame(&mut m);
        assert!(near(got, (2000, 1000, 3000)), "muted coach: {got:?}");
        // Unknown participants are refused.
        assert!(!m.set_hearing(9, Hearing::Listen));
        assert_eq!(m.hearing(9), None);
    }
}

/// The extras on the mix: announcements (to all, to one) and the recording's tap.
#[cfg(test)]
mod extras_tests {
    use super::*;

    fn send(m: &mut Mixer, id: u32, level: i16) {
        let mut p = vec![0u8; rtp::RTP_HEADER_LEN + FRAME_SAMPLES];
        rtp::write_header(&mut p, false, 0, 1, 0, 42);
        for b in &mut p[rtp::RTP_HEADER_LEN..] {
            *b = Law::Mulaw.encode_sample(level);
        }
        assert!(m.receive(id, &p));
    }

    fn level(out: &[(u32, Vec<u8>)], id: u32) -> i32 {
        let (_, p) = out.iter().find(|(i, _)| *i == id).expect("a packet");
        let payload = &p[rtp::RTP_HEADER_LEN..];
        payload
            .iter()
            .map(|&b| i32::from(Law::Mulaw.decode_sample(b)))
            .sum::<i32>()
            / payload.len() as i32
    }

    fn near(got: i32, want: i32) -> bool {
        (got - want).abs() <= want.abs() / 20 + 16
    }

    fn three() -> Mixer {
        let mut m = Mixer::new();
        for id in 1..=3 {
            m.add(id, Law::Mulaw, 0, id * 100);
        }
        m
    }

    #[test]
    fn the_tap_holds_everybody_and_only_while_on() {
        let mut m = three();
        assert!(m.mix_frame().is_none());
        m.set_mix_tap(true);
        send(&mut m, 1, 1000);
        send(&mut m, 2, 2000);
        send(&mut m, 3, 4000);
        m.set_muted(3, true);
        let mut out = Vec::new();
        m.tick(&mut out);
        let tap = m.mix_frame().expect("the tap is on");
        let avg = tap.iter().map(|&s| i32::from(s)).sum::<i32>() / FRAME_SAMPLES as i32;
        assert!(near(avg, 3000), "{avg}: the muted one is not in the mix");
        m.set_mix_tap(false);
        assert!(m.mix_frame().is_none());
    }

    #[test]
    fn an_announcement_is_heard_by_all_and_recorded_then_ends() {
        let mut m = three();
        m.set_mix_tap(true);
        let clip = Pcm8k::new(vec![1500; FRAME_SAMPLES * 2]);
        m.announce(&clip);
        let mut out = Vec::new();
        for _ in 0..2 {
            out.clear();
            m.tick(&mut out);
            for id in 1..=3 {
                assert!(near(level(&out, id), 1500), "{id}: {}", level(&out, id));
            }
            assert!(near(i32::from(m.mix_frame().expect("tap")[80]), 1500));
        }
        out.clear();
        m.tick(&mut out);
        assert!(!m.announcing());
        for id in 1..=3 {
            assert!(near(level(&out, id), 0), "{id}: silence after the clip");
        }
    }

    #[test]
    fn an_announcement_to_one_is_heard_by_it_alone() {
        let mut m = three();
        m.set_mix_tap(true);
        assert!(m.overlay_one(2, &Pcm8k::new(vec![1500; FRAME_SAMPLES])));
        assert!(!m.overlay_one(9, &Pcm8k::new(vec![1500; FRAME_SAMPLES])));
        let mut out = Vec::new();
        m.tick(&mut out);
        assert!(near(level(&out, 2), 1500));
        assert!(near(level(&out, 1), 0) && near(level(&out, 3), 0));
        assert!(near(i32::from(m.mix_frame().expect("tap")[80]), 0));
    }
}
