//! The `listen` verb's audio framing: tapped 8 kHz frames to L16 (16-bit little-endian PCM)
//! binary WebSocket frames at the verb's `sampleRate` and `mixType`, and L16 received from
//! the socket at its own rate back to 8 kHz 20 ms frames for the call.
//!
//! Rates are the multiples of 8000 that jambonz allows (8000, 16000, 24000, 32000, 48000,
//! 64000): up-sampling interpolates linearly between neighbouring samples (state kept across
//! frames), down-sampling averages each group of `rate / 8000` samples (a box filter, enough
//! against aliasing for voice into an 8 kHz phone call).

use hookflash_media::listen::{ListenFrame, StreamFrame};

/// Samples of one 20 ms frame at 8 kHz.
pub const FRAME_SAMPLES: usize = 160;

/// The sample rates `listen` accepts.
pub const RATES: &[u32] = &[8000, 16000, 24000, 32000, 48000, 64000];

/// Which audio a `listen` sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MixType {
    /// The caller only (one channel).
    #[default]
    Mono,
    /// Two channels, interleaved: the caller, then the other party.
    Stereo,
    /// Both summed into one channel.
    Mixed,
}

impl MixType {
    pub fn as_str(self) -> &'static str {
        match self {
            MixType::Mono => "mono",
            MixType::Stereo => "stereo",
            MixType::Mixed => "mixed",
        }
    }
}

/// Linear-interpolating up-sampler of one channel by an integer factor.
#[derive(Debug, Clone)]
struct Upsampler {
    factor: usize,
    /// The last input sample of the previous frame.
    prev: i16,
}

impl Upsampler {
    fn new(factor: usize) -> Self {
        Upsampler {
            factor: factor.max(1),
            prev: 0,
        }
    }

    /// Appends `input` at `factor` times its rate to `out`. Output sample `j` of input `i`
    /// lies between input `i - 1` and `i` (one input sample of delay, continuous across
    /// frames).
    fn run(&mut self, input: &[i16], out: &mut Vec<i16>) {
        let k = self.factor as i32;
        for &s in input {
            for j in 1..=k {
                let v = self.prev as i32 + (s as i32 - self.prev as i32) * j / k;
                out.push(v as i16);
            }
            self.prev = s;
        }
    }
}

/// Turns tapped frames into binary WebSocket payloads.
#[derive(Debug, Clone)]
pub struct Encoder {
    mix: MixType,
    up: [Upsampler; 2],
    scratch: [Vec<i16>; 2],
}

impl Encoder {
    /// `rate` must be one of [`RATES`] (others are treated as 8000).
    pub fn new(mix: MixType, rate: u32) -> Self {
        let factor = if RATES.contains(&rate) {
            (rate / 8000) as usize
        } else {
            1
        };
        Encoder {
            mix,
            up: [Upsampler::new(factor), Upsampler::new(factor)],
            scratch: [Vec::new(), Vec::new()],
        }
    }

    /// One frame as L16 little-endian bytes (stereo interleaved: caller, other party).
    pub fn encode(&mut self, frame: &ListenFrame) -> Vec<u8> {
        let [a, b] = &mut self.scratch;
        a.clear();
        b.clear();
        match self.mix {
            MixType::Mono => self.up[0].run(&frame.a, a),
            MixType::Mixed => {
                let mut sum = [0i16; FRAME_SAMPLES];
                for (s, (x, y)) in sum.iter_mut().zip(frame.a.iter().zip(frame.b.iter())) {
                    *s = x.saturating_add(*y);
                }
                self.up[0].run(&sum, a);
            }
            MixType::Stereo => {
                self.up[0].run(&frame.a, a);
                self.up[1].run(&frame.b, b);
            }
        }
        let mut out = Vec::with_capacity((a.len() + b.len()) * 2);
        if self.mix == MixType::Stereo {
            for (x, y) in a.iter().zip(b.iter()) {
                out.extend_from_slice(&x.to_le_bytes());
                out.extend_from_slice(&y.to_le_bytes());
            }
        } else {
            for x in a.iter() {
                out.extend_from_slice(&x.to_le_bytes());
            }
        }
        out
    }
}

/// Turns L16 received from the socket (any chunking) into 8 kHz 20 ms frames.
#[derive(Debug, Clone)]
pub struct Decoder {
    factor: usize,
    /// An odd byte left from the last chunk.
    odd: Option<u8>,
    /// Samples of the group being averaged.
    acc: i32,
    acc_n: usize,
    frame: Vec<i16>,
}

impl Decoder {
    /// `rate` must be one of [`RATES`] (others are treated as 8000).
    pub fn new(rate: u32) -> Self {
        let factor = if RATES.contains(&rate) {
            (rate / 8000) as usize
        } else {
            1
        };
        Decoder {
            factor,
            odd: None,
            acc: 0,
            acc_n: 0,
            frame: Vec::with_capacity(FRAME_SAMPLES),
        }
    }

    /// Feeds bytes; whole frames come out in `out`.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<StreamFrame>) {
        let mut rest = bytes;
        if let Some(lo) = self.odd.take() {
            match rest.split_first() {
                Some((hi, tail)) => {
                    self.sample(i16::from_le_bytes([lo, *hi]), out);
                    rest = tail;
                }
                None => {
                    self.odd = Some(lo);
                    return;
                }
            }
        }
        let mut pairs = rest.chunks_exact(2);
        for p in &mut pairs {
            self.sample(i16::from_le_bytes([p[0], p[1]]), out);
        }
        if let [last] = pairs.remainder() {
            self.odd = Some(*last);
        }
    }

    /// What is left (less than a frame), padded with silence; None if nothing is.
    pub fn flush(&mut self) -> Option<StreamFrame> {
        self.odd = None;
        self.acc = 0;
        self.acc_n = 0;
        if self.frame.is_empty() {
            return None;
        }
        let mut f = [0i16; FRAME_SAMPLES];
        f[..self.frame.len()].copy_from_slice(&self.frame);
        self.frame.clear();
        Some(f)
    }

    fn sample(&mut self, s: i16, out: &mut Vec<StreamFrame>) {
        self.acc += s as i32;
        self.acc_n += 1;
        if self.acc_n < self.factor {
            return;
        }
        let v = (self.acc / self.factor as i32) as i16;
        self.acc = 0;
        self.acc_n = 0;
        self.frame.push(v);
        if self.frame.len() == FRAME_SAMPLES {
            let mut f = [0i16; FRAME_SAMPLES];
            f.copy_from_slice(&self.frame);
            self.frame.clear();
            out.push(f);
        }
    }
}

/// Peak level of a frame (for the silence `timeout`).
pub fn peak(samples: &[i16]) -> u16 {
    samples.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(freq: f64, rate: f64, n: usize, phase0: usize) -> Vec<i16> {
        (0..n)
            .map(|i| {
                let t = (i + phase0) as f64 / rate;
                (8000.0 * (2.0 * std::f64::consts::PI * freq * t).sin()) as i16
            })
            .collect()
    }

    fn frame(a: &[i16], b: &[i16]) -> ListenFrame {
        let mut f = ListenFrame::default();
        f.a.copy_from_slice(a);
        f.b.copy_from_slice(b);
        f
    }

    fn samples(bytes: &[u8]) -> Vec<i16> {
        bytes
            .chunks_exact(2)
            .map(|p| i16::from_le_bytes([p[0], p[1]]))
            .collect()
    }

    /// Goertzel power of `freq` relative to the signal's energy.
    fn relative_power(x: &[i16], freq: f64, rate: f64) -> f64 {
        let w = 2.0 * std::f64::consts::PI * freq / rate;
        let c = 2.0 * w.cos();
        let (mut s1, mut s2) = (0.0f64, 0.0f64);
        for &v in x {
            let s0 = v as f64 + c * s1 - s2;
            s2 = s1;
            s1 = s0;
        }
        let p = s1 * s1 + s2 * s2 - c * s1 * s2;
        let e: f64 = x.iter().map(|v| (*v as f64).powi(2)).sum();
        p / (e * x.len() as f64 / 2.0)
    }

    #[test]
    fn mono_at_8k_is_the_callers_samples_little_endian() {
        let a: Vec<i16> = (0..160).map(|i| i as i16 * 100 - 8000).collect();
        let b = vec![1234i16; 160];
        let mut enc = Encoder::new(MixType::Mono, 8000);
        let out = enc.encode(&frame(&a, &b));
        assert_eq!(out.len(), 320);
        assert_eq!(&out[..2], &(-8000i16).to_le_bytes());
        assert_eq!(samples(&out), a);
    }

    #[test]
    fn stereo_interleaves_caller_then_other_party() {
        let a = vec![100i16; 160];
        let b = vec![-200i16; 160];
        let out = samples(&Encoder::new(MixType::Stereo, 8000).encode(&frame(&a, &b)));
        assert_eq!(out.len(), 320);
        assert!(out.chunks(2).all(|p| p == [100, -200]));
    }

    #[test]
    fn mixed_sums_and_saturates() {
        let a = vec![30000i16; 160];
        let b = vec![10000i16; 160];
        let out = samples(&Encoder::new(MixType::Mixed, 8000).encode(&frame(&a, &b)));
        assert_eq!(out.len(), 160);
        assert!(out.iter().all(|s| *s == i16::MAX));
        let b = vec![-100i16; 160];
        let a = vec![300i16; 160];
        let out = samples(&Encoder::new(MixType::Mixed, 8000).encode(&frame(&a, &b)));
        assert!(out.iter().all(|s| *s == 200));
    }

    #[test]
    fn upsampling_to_16k_keeps_the_tone_and_doubles_the_samples() {
        let mut enc = Encoder::new(MixType::Mono, 16000);
        let mut all = Vec::new();
        for k in 0..10 {
            let a = tone(1000.0, 8000.0, 160, k * 160);
            all.extend(samples(&enc.encode(&frame(&a, &[0; 160]))));
        }
        assert_eq!(all.len(), 3200);
        assert!(relative_power(&all, 1000.0, 16000.0) > 0.8);
        assert!(relative_power(&all, 1500.0, 16000.0) < 0.05);
        // Continuous across frames: no step larger than a 1 kHz sine at 16 kHz can make.
        let max_step = all
            .windows(2)
            .map(|w| (w[1] as i32 - w[0] as i32).abs())
            .max()
            .unwrap();
        assert!(max_step < 3300, "{max_step}");
        let stereo = Encoder::new(MixType::Stereo, 48000).encode(&ListenFrame::default());
        assert_eq!(stereo.len(), 160 * 6 * 2 * 2);
    }

    #[test]
    fn decoding_16k_gives_8k_frames_of_the_tone_across_odd_chunks() {
        let x = tone(1500.0, 16000.0, 3200, 0);
        let bytes: Vec<u8> = x.iter().flat_map(|s| s.to_le_bytes()).collect();
        let mut dec = Decoder::new(16000);
        let mut frames = Vec::new();
        for chunk in bytes.chunks(333) {
            dec.push(chunk, &mut frames);
        }
        assert_eq!(frames.len(), 10);
        assert!(dec.flush().is_none());
        let all: Vec<i16> = frames.iter().flatten().copied().collect();
        assert!(relative_power(&all, 1500.0, 8000.0) > 0.8);
    }

    #[test]
    fn decoding_8k_passes_samples_through_and_flushes_the_rest() {
        let x: Vec<i16> = (0..200).map(|i| i as i16).collect();
        let bytes: Vec<u8> = x.iter().flat_map(|s| s.to_le_bytes()).collect();
        let mut dec = Decoder::new(8000);
        let mut frames = Vec::new();
        dec.push(&bytes, &mut frames);
        assert_eq!(frames.len(), 1);
        assert_eq!(&frames[0][..], &x[..160]);
        let rest = dec.flush().unwrap();
        assert_eq!(&rest[..40], &x[160..]);
        assert!(rest[40..].iter().all(|s| *s == 0));
    }

    #[test]
    fn peak_level() {
        assert_eq!(peak(&[0, -300, 20]), 300);
        assert_eq!(peak(&[i16::MIN]), 32768);
        assert_eq!(peak(&[]), 0);
    }
}
