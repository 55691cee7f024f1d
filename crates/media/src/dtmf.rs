//! RFC 4733 telephone-events (DTMF), sans-IO: the 4-byte event payload, digit <-> event code,
//! a receive-side [`DtmfDetector`] that reports each key press once, and the send-side state
//! machine the relay drives from its 20 ms clock.
//!
//! # Receive
//! A phone sends one RTP packet per update interval while a key is held, all with the same
//! RTP timestamp (the event start), a growing `duration`, and finally the end packet (E bit)
//! three times. The detector keys an event by (SSRC, timestamp): the first end packet emits the
//! digit with its duration; retransmitted end packets and late updates of an event already
//! reported are ignored (the last 8 keys are remembered). If every end packet of an event is
//! lost, the digit is still reported once: when the next event starts, or when audio from the
//! same leg has moved more than a second past the event's last known end.
//!
//! # Send
//! [`DtmfOptions`]: 100 ms tones with 60 ms gaps by default. Per digit, on the relay's 20 ms
//! clock (so one packet per 20 ms, the usual `ptime`):
//! - tick 0: the first packet, marker bit set, `duration` = 160 (one tick at 8 kHz);
//! - ticks 1 .. n-1: updates with `duration` = (k+1) * 160; tick n-1 already carries the E bit
//!   and the final duration n * 160;
//! - ticks n and n+1: the end packet again (E bit, same timestamp and duration, new sequence
//!   numbers): three end packets in all, as RFC 4733 §2.5.1.4 asks;
//! - the next digit starts at tick n + gap (gap = gap_ms / 20, at least 2 so the
//!   retransmissions fit), with a new event timestamp: the tick's position on the stream clock.
//!
//! All packets of an event carry the same RTP timestamp; the relay passes them through the
//! leg's [`crate::rtp::StreamRewriter`] so they continue the stream the phone was receiving.

use std::collections::VecDeque;
use std::time::Duration;

use crate::audio::FRAME_SAMPLES;
use crate::relay::Leg;
use crate::rtp::{write_header, RTP_HEADER_LEN};

/// Length of one telephone-event payload.
pub const EVENT_LEN: usize = 4;
/// Most digits accepted by one [`crate::relay::BridgeHandle::send_dtmf`].
pub const MAX_DIGITS: usize = 64;
/// Tone length limits of [`DtmfOptions::duration_ms`] (the RFC 4733 `duration` field is 16 bit).
pub const MIN_DURATION_MS: u32 = 40;
pub const MAX_DURATION_MS: u32 = 5000;
/// Limits of [`DtmfOptions::gap_ms`].
pub const MIN_GAP_MS: u32 = 40;
pub const MAX_GAP_MS: u32 = 5000;
/// Ticks of the relay's clock (one packet each).
const TICK_MS: u32 = 20;
/// End packets per event (the first plus two retransmissions).
const END_PACKETS: u32 = 3;

/// The event code (RFC 4733 §3.2: 0-9, `*` = 10, `#` = 11, A-D = 12-15) of a DTMF character.
/// Lower-case a-d are accepted.
pub fn digit_code(c: char) -> Option<u8> {
    match c {
        '0'..='9' => Some(c as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        'A'..='D' => Some(c as u8 - b'A' + 12),
        'a'..='d' => Some(c as u8 - b'a' + 12),
        _ => None,
    }
}

/// The DTMF character of an event code 0..=15.
pub fn code_digit(code: u8) -> Option<char> {
    match code {
        0..=9 => Some((b'0' + code) as char),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some((b'A' + code - 12) as char),
        _ => None,
    }
}

/// Why a DTMF sequence cannot be sent. Nothing was sent when one of these is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DtmfError {
    /// A character that is not `0-9 * # A-D`.
    #[error("invalid DTMF character {ch:?} at position {position} (allowed: 0-9 * # A-D)")]
    InvalidDigit { ch: char, position: usize },
    #[error("empty DTMF sequence")]
    Empty,
    #[error("DTMF sequence of {len} digits is longer than the limit of {limit}")]
    TooLong { len: usize, limit: usize },
    #[error("invalid DTMF options: {0}")]
    InvalidOptions(String),
    /// The leg did not negotiate telephone-event ([`crate::relay::BridgeHandle::set_dtmf_pt`]
    /// was not called): send the digits with SIP INFO instead.
    #[error("leg {leg:?} did not negotiate telephone-event")]
    NoTelephoneEvent { leg: Leg },
    #[error("the bridge has stopped")]
    BridgeStopped,
}

/// Parses a DTMF sequence into event codes.
pub fn parse_digits(digits: &str) -> Result<Vec<u8>, DtmfError> {
    let mut codes = Vec::with_capacity(digits.len().min(MAX_DIGITS));
    for (position, ch) in digits.chars().enumerate() {
        let code = digit_code(ch).ok_or(DtmfError::InvalidDigit { ch, position })?;
        codes.push(code);
    }
    if codes.is_empty() {
        return Err(DtmfError::Empty);
    }
    if codes.len() > MAX_DIGITS {
        return Err(DtmfError::TooLong {
            len: codes.len(),
            limit: MAX_DIGITS,
        });
    }
    Ok(codes)
}

/// One RFC 4733 event payload: `event(8) E(1) R(1) volume(6) duration(16)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    pub event: u8,
    pub end: bool,
    /// Power level as -dBm0, 0..=63.
    pub volume: u8,
    /// In timestamp units (samples at 8 kHz) since the event's timestamp.
    pub duration: u16,
}

impl TelephoneEvent {
    /// The first event of a payload (redundant events, if any, follow and are ignored).
    pub fn parse(payload: &[u8]) -> Option<TelephoneEvent> {
        let p = payload.get(..EVENT_LEN)?;
        Some(TelephoneEvent {
            event: p[0],
            end: p[1] & 0x80 != 0,
            volume: p[1] & 0x3f,
            duration: u16::from_be_bytes([p[2], p[3]]),
        })
    }

    pub fn write(&self, out: &mut [u8; EVENT_LEN]) {
        out[0] = self.event;
        out[1] = if self.end { 0x80 } else { 0 } | (self.volume & 0x3f);
        out[2..4].copy_from_slice(&self.duration.to_be_bytes());
    }
}

/// A key press detected on a leg (one per press).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtmfEvent {
    /// The leg whose phone sent it.
    pub leg: Leg,
    /// `0-9 * # A-D`.
    pub digit: char,
    /// Length of the tone as the phone reported it.
    pub duration_ms: u32,
}

/// A digit reported by [`DtmfDetector`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Detected {
    pub digit: char,
    /// Duration in samples (8 kHz).
    pub duration: u32,
    /// `false` when every end packet was lost and the press was closed by what followed.
    pub end_seen: bool,
}

impl Detected {
    pub fn duration_ms(&self) -> u32 {
        self.duration / 8
    }
}

#[derive(Debug, Clone, Copy)]
struct Current {
    ssrc: u32,
    ts: u32,
    code: u8,
    duration: u16,
}

const RECENT_KEYS: usize = 8;
/// Audio this far (1 s) past a pending event's last known end closes it.
const LOST_END_SLACK: u32 = 8000;

/// Turns a leg's telephone-event packets into one report per key press; see the module doc.
#[derive(Debug, Clone, Default)]
pub struct DtmfDetector {
    current: Option<Current>,
    /// (SSRC, timestamp) of events already reported.
    recent: [Option<(u32, u32)>; RECENT_KEYS],
    next: usize,
}

impl DtmfDetector {
    /// An event started but not reported yet (its end packets have not arrived).
    #[inline]
    pub fn is_pending(&self) -> bool {
        self.current.is_some()
    }

    fn reported(&self, key: (u32, u32)) -> bool {
        self.recent.contains(&Some(key))
    }

    fn report(&mut self, cur: Current, end_seen: bool, emit: &mut impl FnMut(Detected)) {
        self.recent[self.next] = Some((cur.ssrc, cur.ts));
        self.next = (self.next + 1) % RECENT_KEYS;
        if let Some(digit) = code_digit(cur.code) {
            emit(Detected {
                digit,
                duration: cur.duration as u32,
                end_seen,
            });
        }
    }

    /// A telephone-event packet (SSRC and timestamp from its RTP header).
    pub fn on_event(
        &mut self,
        ssrc: u32,
        ts: u32,
        ev: TelephoneEvent,
        emit: &mut impl FnMut(Detected),
    ) {
        let key = (ssrc, ts);
        if self.reported(key) {
            // A retransmitted end packet or a late update of a reported press.
            return;
        }
        if let Some(cur) = self.current {
            if (cur.ssrc, cur.ts) != key {
                // A new event while the previous one never ended: all its end packets were lost.
                self.current = None;
                self.report(cur, false, emit);
            }
        }
        if ev.event > 15 {
            // Not a DTMF digit (flash, tones): nothing to report, nothing to track.
            return;
        }
        let cur = self.current.get_or_insert(Current {
            ssrc,
            ts,
            code: ev.event,
            duration: 0,
        });
        cur.duration = cur.duration.max(ev.duration);
        if ev.end {
            let cur = *cur;
            self.current = None;
            self.report(cur, true, emit);
        }
    }

    /// An audio packet from the same leg: closes a pending event whose end packets were all lost
    /// once the audio is more than a second past its last known end.
    pub fn on_audio(&mut self, ssrc: u32, ts: u32, emit: &mut impl FnMut(Detected)) {
        let Some(cur) = self.current else {
            return;
        };
        let past = ts.wrapping_sub(cur.ts);
        if ssrc != cur.ssrc || past >= 0x8000_0000 {
            return;
        }
        if past > cur.duration as u32 + LOST_END_SLACK {
            self.current = None;
            self.report(cur, false, emit);
        }
    }
}

/// Options of [`crate::relay::BridgeHandle::send_dtmf`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtmfOptions {
    /// Tone length per digit, 40..=5000 ms (rounded to 20 ms). Default 100.
    pub duration_ms: u32,
    /// Silence between the end of one tone and the start of the next, 40..=5000 ms (rounded to
    /// 20 ms). Default 60.
    pub gap_ms: u32,
    /// Power level as -dBm0, 0..=63. Default 10.
    pub volume: u8,
}

impl Default for DtmfOptions {
    fn default() -> Self {
        DtmfOptions {
            duration_ms: 100,
            gap_ms: 60,
            volume: 10,
        }
    }
}

impl DtmfOptions {
    pub fn validate(&self) -> Result<(), DtmfError> {
        if !(MIN_DURATION_MS..=MAX_DURATION_MS).contains(&self.duration_ms) {
            return Err(DtmfError::InvalidOptions(format!(
                "duration_ms {} outside {MIN_DURATION_MS}..={MAX_DURATION_MS}",
                self.duration_ms
            )));
        }
        if !(MIN_GAP_MS..=MAX_GAP_MS).contains(&self.gap_ms) {
            return Err(DtmfError::InvalidOptions(format!(
                "gap_ms {} outside {MIN_GAP_MS}..={MAX_GAP_MS}",
                self.gap_ms
            )));
        }
        if self.volume > 63 {
            return Err(DtmfError::InvalidOptions(format!(
                "volume {} above 63",
                self.volume
            )));
        }
        Ok(())
    }

    /// Ticks (packets) per tone.
    fn tone_ticks(&self) -> u32 {
        ((self.duration_ms + TICK_MS / 2) / TICK_MS).max(1)
    }

    /// Ticks from the end of one tone to the start of the next (room for two retransmissions).
    fn gap_ticks(&self) -> u32 {
        ((self.gap_ms + TICK_MS / 2) / TICK_MS).max(END_PACKETS - 1)
    }

    /// How long sending `digits` digits takes.
    pub fn sequence_duration(&self, digits: usize) -> Duration {
        let n = digits as u32;
        if n == 0 {
            return Duration::ZERO;
        }
        let ticks = n * self.tone_ticks() + (n - 1) * self.gap_ticks() + END_PACKETS - 1;
        Duration::from_millis((ticks * TICK_MS) as u64)
    }
}

/// Identifies one [`crate::relay::BridgeHandle::send_dtmf`] call. Numbers increase per bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DtmfSendId {
    pub(crate) leg: Leg,
    pub(crate) n: u64,
}

impl DtmfSendId {
    /// The leg the digits are sent to.
    pub fn leg(&self) -> Leg {
        self.leg
    }
    pub fn number(&self) -> u64 {
        self.n
    }
}

impl std::fmt::Display for DtmfSendId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "dtmf{}->{:?}", self.n, self.leg)
    }
}

/// How a DTMF send ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DtmfEnd {
    /// Every digit was sent, each with its three end packets.
    Finished,
    /// [`crate::relay::BridgeHandle::stop_dtmf`] (a tone in progress was ended properly first).
    Cancelled,
    /// The bridge stopped before it was done.
    BridgeStopped,
}

const RECENT_ENDS: usize = 8;

/// DTMF send state of one leg, published by the relay task on a `watch` channel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DtmfSendStatus {
    /// The send in progress to this leg (later ones wait in a queue).
    pub sending: Option<DtmfSendId>,
    /// The most recent send that ended, and how.
    pub last_ended: Option<(DtmfSendId, DtmfEnd)>,
    /// Sends on a leg end in order: every number up to this one has ended.
    ended_upto: u64,
    recent: [Option<(u64, DtmfEnd)>; RECENT_ENDS],
    recent_next: usize,
}

impl DtmfSendStatus {
    pub(crate) fn record_end(&mut self, id: DtmfSendId, how: DtmfEnd) {
        if self.sending == Some(id) {
            self.sending = None;
        }
        self.last_ended = Some((id, how));
        self.ended_upto = self.ended_upto.max(id.n);
        self.recent[self.recent_next] = Some((id.n, how));
        self.recent_next = (self.recent_next + 1) % RECENT_ENDS;
    }

    pub fn is_over(&self, id: DtmfSendId) -> bool {
        self.ended_upto >= id.n
    }

    /// How send `n` ended, if it is among the last few that did.
    pub fn end_of(&self, n: u64) -> Option<DtmfEnd> {
        self.recent
            .iter()
            .flatten()
            .find(|(m, _)| *m == n)
            .map(|(_, how)| *how)
    }
}

/// One queued send.
#[derive(Debug, Clone)]
pub(crate) struct DtmfJob {
    pub id: DtmfSendId,
    pub codes: Vec<u8>,
    pub opts: DtmfOptions,
    /// Cut short by [`DtmfSender::cancel`]: ends as [`DtmfEnd::Cancelled`].
    pub cancelled: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing started yet, or between jobs with no wait.
    Idle,
    /// Tick `t` of the current digit comes next.
    Tone { t: u32 },
    /// Ticks to wait before the next digit.
    Wait { left: u32 },
}

fn end_of(job: &DtmfJob) -> DtmfEnd {
    if job.cancelled {
        DtmfEnd::Cancelled
    } else {
        DtmfEnd::Finished
    }
}

/// What one tick of [`DtmfSender`] produced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SendTick {
    /// A packet of this length is in the buffer.
    pub packet: Option<usize>,
    /// The job that ended with this tick (at most one per tick), and how.
    pub finished: Option<(DtmfSendId, DtmfEnd)>,
    /// The first packet of an event (its marker bit is set).
    pub event_start: bool,
    /// Nothing left to send: the sender can be dropped.
    pub done: bool,
    /// With `done`: ticks from the start of the last event sent through this tick (inclusive),
    /// `None` if no event was sent at all. The stream continues this many ticks after the
    /// event's timestamp.
    pub event_ticks: Option<u32>,
}

/// Generates the telephone-event packets towards one leg (see the module doc), one tick at a
/// time. Its own SSRC/sequence/timestamp numbering is mapped onto the leg's stream by the
/// relay's StreamRewriter.
#[derive(Debug)]
pub(crate) struct DtmfSender {
    jobs: VecDeque<DtmfJob>,
    digit: usize,
    phase: Phase,
    ssrc: u32,
    seq: u16,
    /// Stream clock of the next tick (advances 160 per tick).
    clock: u32,
    /// Timestamp of the event in progress.
    event_ts: u32,
    /// Tone ticks of the event in progress (can shrink on cancel).
    tone: u32,
    /// Ticks since the start of the last event (including its first tick).
    since_event: Option<u32>,
}

impl DtmfSender {
    pub fn new(job: DtmfJob) -> DtmfSender {
        let mut jobs = VecDeque::with_capacity(2);
        jobs.push_back(job);
        DtmfSender {
            jobs,
            digit: 0,
            phase: Phase::Idle,
            ssrc: rand::random(),
            seq: rand::random(),
            clock: rand::random(),
            event_ts: 0,
            tone: 0,
            since_event: None,
        }
    }

    pub fn push(&mut self, job: DtmfJob) {
        self.jobs.push_back(job);
    }

    pub fn current(&self) -> Option<DtmfSendId> {
        self.jobs.front().map(|j| j.id)
    }

    /// Cancels everything. Without a tone in progress, all jobs end at once: they are returned
    /// (in order) for the caller to publish. A tone in progress first gets its end packets (so
    /// the phone does not hear an endless tone); its job and the queued ones then end as
    /// `Cancelled` through [`SendTick::finished`], in order, and nothing is returned.
    pub fn cancel(&mut self) -> Vec<DtmfSendId> {
        let in_tone = match self.phase {
            Phase::Tone { t } if t > 0 => Some(t),
            _ => None,
        };
        match (in_tone, self.jobs.front_mut()) {
            (Some(t), Some(job)) => {
                // Finish this digit early (its end packet goes out on the next tick) and drop
                // the digits after it.
                if t < self.tone {
                    self.tone = t + 1;
                }
                job.codes.truncate(self.digit + 1);
                for j in self.jobs.iter_mut() {
                    j.cancelled = true;
                }
                for j in self.jobs.iter_mut().skip(1) {
                    j.codes.clear();
                }
                Vec::new()
            }
            _ => {
                self.phase = Phase::Idle;
                self.digit = 0;
                self.jobs.drain(..).map(|j| j.id).collect()
            }
        }
    }

    /// No job left.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// Advances one 20 ms tick; writes a packet with payload type `pt` into `buf` if one is due.
    pub fn tick(&mut self, pt: u8, buf: &mut [u8]) -> SendTick {
        let mut out = SendTick::default();
        loop {
            match self.phase {
                Phase::Wait { left } if left > 0 => {
                    self.phase = Phase::Wait { left: left - 1 };
                    break;
                }
                Phase::Wait { .. } | Phase::Idle => {
                    let Some(job) = self.jobs.front() else {
                        self.phase = Phase::Idle;
                        out.done = true;
                        break;
                    };
                    if self.digit >= job.codes.len() {
                        // A queued job emptied by cancel(): it ends now (one per tick).
                        out.finished = self.jobs.pop_front().map(|j| (j.id, end_of(&j)));
                        self.digit = 0;
                        break;
                    }
                    self.tone = job.opts.tone_ticks();
                    self.event_ts = self.clock;
                    self.since_event = Some(0);
                    self.phase = Phase::Tone { t: 0 };
                }
                Phase::Tone { t } => {
                    let Some(job) = self.jobs.front() else {
                        self.phase = Phase::Idle;
                        continue;
                    };
                    let n = self.tone;
                    let ev = TelephoneEvent {
                        event: job.codes[self.digit],
                        end: t + 1 >= n,
                        volume: job.opts.volume,
                        duration: ((t + 1).min(n) * FRAME_SAMPLES as u32).min(u16::MAX as u32)
                            as u16,
                    };
                    let gap = job.opts.gap_ticks();
                    let digits = job.codes.len();
                    out.packet = self.write(buf, pt, t == 0, &ev);
                    out.event_start = t == 0;
                    let t = t + 1;
                    if t < n + END_PACKETS - 1 {
                        self.phase = Phase::Tone { t };
                    } else {
                        // The third end packet is out.
                        self.digit += 1;
                        if self.digit >= digits {
                            out.finished = self.jobs.pop_front().map(|j| (j.id, end_of(&j)));
                            self.digit = 0;
                        }
                        if self.jobs.is_empty() {
                            self.phase = Phase::Idle;
                            out.done = true;
                        } else {
                            // The next tone starts `gap` ticks after this one's end (tick n).
                            self.phase = Phase::Wait {
                                left: gap - (END_PACKETS - 1),
                            };
                        }
                    }
                    break;
                }
            }
        }
        self.clock = self.clock.wrapping_add(FRAME_SAMPLES as u32);
        if let Some(n) = self.since_event.as_mut() {
            *n = n.saturating_add(1);
        }
        if out.done {
            out.event_ticks = self.since_event;
        }
        out
    }

    /// Every job, the one in progress first.
    pub fn job_ids(&self) -> impl Iterator<Item = DtmfSendId> + '_ {
        self.jobs.iter().map(|j| j.id)
    }

    fn write(
        &mut self,
        buf: &mut [u8],
        pt: u8,
        marker: bool,
        ev: &TelephoneEvent,
    ) -> Option<usize> {
        let len = RTP_HEADER_LEN + EVENT_LEN;
        let pkt = buf.get_mut(..len)?;
        write_header(pkt, marker, pt, self.seq, self.event_ts, self.ssrc);
        let mut payload = [0u8; EVENT_LEN];
        ev.write(&mut payload);
        pkt[RTP_HEADER_LEN..].copy_from_slice(&payload);
        self.seq = self.seq.wrapping_add(1);
        Some(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtp::parse_header;

    #[test]
    fn digit_codes_round_trip() {
        let all = "0123456789*#ABCD";
        for (i, c) in all.chars().enumerate() {
            assert_eq!(digit_code(c), Some(i as u8));
            assert_eq!(code_digit(i as u8), Some(c));
        }
        assert_eq!(digit_code('b'), Some(13));
        assert_eq!(digit_code('E'), None);
        assert_eq!(digit_code(' '), None);
        assert_eq!(code_digit(16), None);
        assert_eq!(parse_digits("*12#").unwrap(), vec![10, 1, 2, 11]);
        assert_eq!(
            parse_digits("12x4"),
            Err(DtmfError::InvalidDigit {
                ch: 'x',
                position: 2
            })
        );
        assert_eq!(parse_digits(""), Err(DtmfError::Empty));
        assert!(matches!(
            parse_digits(&"1".repeat(MAX_DIGITS + 1)),
            Err(DtmfError::TooLong { .. })
        ));
    }

    #[test]
    fn event_payload_round_trip() {
        let ev = TelephoneEvent {
            event: 11,
            end: true,
            volume: 10,
            duration: 800,
        };
        let mut b = [0u8; 4];
        ev.write(&mut b);
        assert_eq!(b, [11, 0x80 | 10, 0x03, 0x20]);
        assert_eq!(TelephoneEvent::parse(&b), Some(ev));
        assert_eq!(TelephoneEvent::parse(&b[..3]), None);
    }

    #[test]
    fn options_validation_and_timing() {
        assert!(DtmfOptions::default().validate().is_ok());
        for bad in [
            DtmfOptions {
                duration_ms: 10,
                ..Default::default()
            },
            DtmfOptions {
                gap_ms: 9000,
                ..Default::default()
            },
            DtmfOptions {
                volume: 64,
                ..Default::default()
            },
        ] {
            assert!(matches!(bad.validate(), Err(DtmfError::InvalidOptions(_))));
        }
        let o = DtmfOptions::default();
        assert_eq!((o.tone_ticks(), o.gap_ticks()), (5, 3));
        // 7 digits: 7 * 100 ms + 6 * 60 ms + 2 retransmissions of 20 ms.
        assert_eq!(o.sequence_duration(7), Duration::from_millis(1100));
    }

    fn collect(d: &mut DtmfDetector, ssrc: u32, ts: u32, ev: TelephoneEvent) -> Vec<Detected> {
        let mut out = Vec::new();
        d.on_event(ssrc, ts, ev, &mut |x| out.push(x));
        out
    }

    fn ev(event: u8, end: bool, duration: u16) -> TelephoneEvent {
        TelephoneEvent {
            event,
            end,
            volume: 10,
            duration,
        }
    }

    #[test]
    fn detector_reports_once_per_press() {
        let mut d = DtmfDetector::default();
        let mut got = Vec::new();
        for (ts, code) in [(1000u32, 5u8), (3000, 11)] {
            // Start repeated (some phones send the first packet 3 times), updates, 3 ends.
            for e in [
                ev(code, false, 0),
                ev(code, false, 0),
                ev(code, false, 160),
                ev(code, false, 320),
                ev(code, true, 480),
                ev(code, true, 480),
                ev(code, true, 480),
            ] {
                got.extend(collect(&mut d, 7, ts, e));
            }
            assert!(!d.is_pending());
        }
        assert_eq!(
            got,
            vec![
                Detected {
                    digit: '5',
                    duration: 480,
                    end_seen: true
                },
                Detected {
                    digit: '#',
                    duration: 480,
                    end_seen: true
                },
            ]
        );
        assert_eq!(got[0].duration_ms(), 60);
        // A late retransmission of the first press is still ignored.
        assert!(collect(&mut d, 7, 1000, ev(5, true, 480)).is_empty());
        // The same digit pressed again (new timestamp) is a new press.
        assert_eq!(collect(&mut d, 7, 5000, ev(5, true, 800)).len(), 1);
    }

    #[test]
    fn detector_closes_presses_whose_ends_were_lost() {
        let mut d = DtmfDetector::default();
        assert!(collect(&mut d, 7, 1000, ev(1, false, 320)).is_empty());
        assert!(d.is_pending());
        // The next press closes it.
        let got = collect(&mut d, 7, 4000, ev(2, false, 160));
        assert_eq!(
            got,
            vec![Detected {
                digit: '1',
                duration: 320,
                end_seen: false
            }]
        );
        // Audio shortly after does not close it; a second later it does.
        let mut out = Vec::new();
        d.on_audio(7, 4000 + 160 + 800, &mut |x| out.push(x));
        assert!(out.is_empty());
        d.on_audio(8, 4000 + 160 + 9000, &mut |x| out.push(x));
        assert!(out.is_empty(), "other SSRC");
        d.on_audio(7, 4000 + 160 + 9000, &mut |x| out.push(x));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].digit, '2');
        assert!(!d.is_pending());
        // Non-digit events are not reported.
        assert!(collect(&mut d, 7, 9000, ev(16, true, 800)).is_empty());
        assert!(!d.is_pending());
    }

    fn run(s: &mut DtmfSender, ticks: usize) -> Vec<(usize, Option<Vec<u8>>, SendTick)> {
        let mut out = Vec::new();
        for i in 0..ticks {
            let mut buf = [0u8; 64];
            let r = s.tick(101, &mut buf);
            out.push((i, r.packet.map(|n| buf[..n].to_vec()), r));
            if r.done {
                break;
            }
        }
        out
    }

    fn job(n: u64, digits: &str, opts: DtmfOptions) -> DtmfJob {
        DtmfJob {
            id: DtmfSendId { leg: Leg::B, n },
            codes: parse_digits(digits).unwrap(),
            opts,
            cancelled: false,
        }
    }

    #[test]
    fn sender_packet_schedule() {
        let mut s = DtmfSender::new(job(1, "1#", DtmfOptions::default()));
        let ticks = run(&mut s, 100);
        let packets: Vec<(usize, Vec<u8>)> = ticks
            .iter()
            .filter_map(|(i, p, _)| p.clone().map(|p| (*i, p)))
            .collect();
        // Per digit 5 tone packets (the 5th with E) + 2 retransmissions.
        assert_eq!(packets.len(), 14);
        let first: Vec<usize> = packets[..7].iter().map(|(i, _)| *i).collect();
        assert_eq!(first, vec![0, 1, 2, 3, 4, 5, 6]);
        // Second digit at tick 5 + 3 (gap 60 ms).
        assert_eq!(packets[7].0, 8);
        let hdr: Vec<_> = packets
            .iter()
            .map(|(_, p)| parse_header(p).unwrap())
            .collect();
        let evs: Vec<_> = packets
            .iter()
            .map(|(_, p)| TelephoneEvent::parse(&p[12..]).unwrap())
            .collect();
        for (k, e) in evs[..7].iter().enumerate() {
            assert_eq!(e.event, 1);
            assert_eq!(e.end, k >= 4, "{k}");
            assert_eq!(e.duration as usize, 160 * (k + 1).min(5));
            assert_eq!(e.volume, 10);
        }
        assert_eq!(evs[7].event, 11);
        assert!(hdr[0].marker && hdr[7].marker);
        assert_eq!(hdr.iter().filter(|h| h.marker).count(), 2);
        assert!(hdr.iter().all(|h| h.payload_type == 101));
        for w in hdr.windows(2) {
            assert_eq!(w[1].sequence, w[0].sequence.wrapping_add(1));
            assert_eq!(w[1].ssrc, w[0].ssrc);
        }
        assert!(hdr[..7].iter().all(|h| h.timestamp == hdr[0].timestamp));
        assert_eq!(hdr[7].timestamp, hdr[0].timestamp.wrapping_add(8 * 160));
        let last = ticks.last().unwrap().2;
        assert!(last.done);
        assert_eq!(
            last.finished.map(|(id, how)| (id.n, how)),
            Some((1, DtmfEnd::Finished))
        );
        assert_eq!(last.event_ticks, Some(7));
        assert_eq!(ticks.len(), 15);
    }

    #[test]
    fn sender_queue_and_cancel() {
        let o = DtmfOptions::default();
        let mut s = DtmfSender::new(job(1, "1", o));
        s.push(job(2, "2", o));
        let ticks = run(&mut s, 100);
        let finished: Vec<(usize, u64)> = ticks
            .iter()
            .filter_map(|(i, _, t)| t.finished.map(|(id, _)| (*i, id.n)))
            .collect();
        assert_eq!(finished, vec![(6, 1), (14, 2)]);

        // Cancel in the middle of a tone: the tone ends with 3 end packets, nothing else.
        let mut s = DtmfSender::new(job(3, "123", o));
        s.push(job(4, "9", o));
        run(&mut s, 2);
        assert!(s.cancel().is_empty(), "ends come through the ticks");
        let rest = run(&mut s, 100);
        let evs: Vec<TelephoneEvent> = rest
            .iter()
            .filter_map(|(_, p, _)| p.as_ref().map(|p| TelephoneEvent::parse(&p[12..]).unwrap()))
            .collect();
        assert_eq!(evs.len(), 3);
        assert!(evs
            .iter()
            .all(|e| e.end && e.event == 1 && e.duration == 480));
        let ends: Vec<_> = rest.iter().filter_map(|(_, _, t)| t.finished).collect();
        assert_eq!(
            ends,
            vec![
                (DtmfSendId { leg: Leg::B, n: 3 }, DtmfEnd::Cancelled),
                (DtmfSendId { leg: Leg::B, n: 4 }, DtmfEnd::Cancelled)
            ]
        );
        assert!(s.is_empty());

        // Cancel before anything was sent: nothing goes out.
        let mut s = DtmfSender::new(job(5, "1", o));
        assert_eq!(s.cancel().len(), 1);
        let r = run(&mut s, 3);
        assert!(r.iter().all(|(_, p, _)| p.is_none()));
        assert!(r[0].2.done);
        assert_eq!(r[0].2.event_ticks, None);
    }
}
