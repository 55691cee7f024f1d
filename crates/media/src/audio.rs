//! Audio clips for the mixing path: [`Pcm8k`] (8 kHz mono 16-bit, shared), WAV loading with
//! downmix and resampling, and the built-in music on hold.
//!
//! Everything played into a call is converted once, up front, to 8 kHz mono `i16` (the G.711
//! sample format), so the relay task only slices and encodes 160-sample frames.
//!
//! WAV data comes from URLs users give us: [`load_wav`] never panics and rejects anything it
//! does not understand with a typed [`AudioError`] (wrapped in [`MediaError::Audio`]).

use std::f32::consts::PI;
use std::fmt;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{
    Async, Fft, FixedAsync, FixedSync, Resampler, SincInterpolationParameters,
    SincInterpolationType, WindowFunction,
};

use crate::{wav, MediaError};

/// The sample rate of [`Pcm8k`] and of G.711.
pub const SAMPLE_RATE: u32 = 8000;
/// Samples in one 20 ms frame at 8 kHz.
pub const FRAME_SAMPLES: usize = 160;
/// Default limit of [`load_wav`]: 10 minutes.
pub const DEFAULT_MAX_DURATION: Duration = Duration::from_secs(600);
/// Limit of [`load_music_on_hold`]: 30 minutes of audio, ...
pub const MOH_MAX_DURATION: Duration = Duration::from_secs(1800);
/// ... in a file of at most 512 MiB.
pub const MOH_MAX_FILE_BYTES: u64 = 512 << 20;
/// Sample rates accepted by [`load_wav`].
pub const MIN_SAMPLE_RATE: u32 = 4000;
pub const MAX_SAMPLE_RATE: u32 = 384_000;
/// Most channels accepted by [`load_wav`] (all are mixed down to mono).
pub const MAX_CHANNELS: u16 = 32;

/// Why audio could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    /// Not a RIFF/WAVE file, or its header is malformed.
    #[error("not a valid WAV file: {0}")]
    NotWav(String),
    /// A WAV file we cannot decode (compressed formats, odd bit depths, rates, channels).
    #[error("unsupported WAV format: {0}")]
    Unsupported(String),
    /// The sample data is truncated or unreadable.
    #[error("corrupt WAV data: {0}")]
    Corrupt(String),
    #[error("WAV audio is {seconds:.1} s long, more than the limit of {limit_seconds} s")]
    TooLong { seconds: f64, limit_seconds: u64 },
    #[error("audio file is {size} bytes, more than the limit of {limit} bytes")]
    FileTooLarge { size: u64, limit: u64 },
    #[error("WAV file contains no audio")]
    Empty,
    #[error("resampling {from} Hz to 8000 Hz failed: {reason}")]
    Resample { from: u32, reason: String },
    #[error("cannot read audio file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// An immutable clip of 8 kHz mono 16-bit PCM. Cloning shares the samples (an `Arc`), so one
/// decoded announcement or music file can play into many calls at once.
#[derive(Clone, PartialEq, Eq)]
pub struct Pcm8k {
    samples: Arc<[i16]>,
}

impl Pcm8k {
    pub fn new(samples: Vec<i16>) -> Pcm8k {
        Pcm8k {
            samples: samples.into(),
        }
    }

    pub fn samples(&self) -> &[i16] {
        &self.samples
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    pub fn duration(&self) -> Duration {
        Duration::from_micros(self.samples.len() as u64 * 1_000_000 / SAMPLE_RATE as u64)
    }

    /// Digital silence of the given length.
    pub fn silence(duration: Duration) -> Pcm8k {
        Pcm8k::new(vec![0; samples_for(duration)])
    }

    /// A pure sine tone (`amplitude` 0.0..=1.0 of full scale), with 5 ms fades at both ends so
    /// it starts and stops without clicks. Beeps, test tones.
    pub fn tone(freq_hz: f32, duration: Duration, amplitude: f32) -> Pcm8k {
        let n = samples_for(duration);
        let fade = 40.min(n / 2).max(1) as f32;
        let amp = amplitude.clamp(0.0, 1.0) * 32767.0;
        let samples = (0..n)
            .map(|i| {
                let edge = (i.min(n - 1 - i) as f32 / fade).min(1.0);
                let v = (2.0 * PI * freq_hz * i as f32 / SAMPLE_RATE as f32).sin();
                (v * amp * edge).round() as i16
            })
            .collect();
        Pcm8k::new(samples)
    }
}

impl fmt::Debug for Pcm8k {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pcm8k")
            .field("samples", &self.samples.len())
            .field("duration", &self.duration())
            .finish()
    }
}

fn samples_for(d: Duration) -> usize {
    (d.as_micros() * SAMPLE_RATE as u128 / 1_000_000) as usize
}

/// Decodes a WAV file (any sample rate from 4 to 384 kHz, 1 to 32 channels, 8/16/24/32-bit
/// integer or 32-bit float PCM) to 8 kHz mono: channels are averaged, other rates resampled
/// with rubato. At most [`DEFAULT_MAX_DURATION`] of audio; see [`load_wav_limited`].
pub fn load_wav(bytes: &[u8]) -> Result<Pcm8k, MediaError> {
    load_wav_limited(bytes, DEFAULT_MAX_DURATION)
}

/// [`load_wav`] with an explicit limit on the audio's duration; longer files are rejected
/// before any sample is decoded.
pub fn load_wav_limited(bytes: &[u8], max_duration: Duration) -> Result<Pcm8k, MediaError> {
    // The decoders are not expected to panic on any input; this is belt and braces for data
    // that comes from arbitrary URLs.
    match std::panic::catch_unwind(|| decode_wav(bytes, max_duration)) {
        Ok(r) => r.map_err(MediaError::Audio),
        Err(_) => {
            tracing::error!(len = bytes.len(), "WAV decoder panicked; input rejected");
            Err(MediaError::Audio(AudioError::Corrupt(
                "decoder failure".to_string(),
            )))
        }
    }
}

fn decode_wav(bytes: &[u8], max_duration: Duration) -> Result<Pcm8k, AudioError> {
    if !wav::is_riff_wave(bytes) {
        return Err(AudioError::NotWav("no RIFF/WAVE header".to_string()));
    }
    // Streaming writers leave the data length at 0xFFFFFFFF (or a download was cut short):
    // clamp it to what is actually there, else hound refuses the header.
    let patched = wav::clamp_data_len(bytes);
    let bytes = patched.as_deref().unwrap_or(bytes);
    let reader = hound::WavReader::new(Cursor::new(bytes)).map_err(|e| match e {
        hound::Error::Unsupported => {
            AudioError::Unsupported("compressed or unknown encoding".into())
        }
        hound::Error::TooWide => AudioError::Unsupported("sample width".into()),
        hound::Error::IoError(e) => AudioError::NotWav(format!("truncated header: {e}")),
        other => AudioError::NotWav(other.to_string()),
    })?;
    let spec = reader.spec();
    let (rate, channels) = (spec.sample_rate, spec.channels);
    if !(MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&rate) {
        return Err(AudioError::Unsupported(format!("sample rate {rate} Hz")));
    }
    if channels == 0 || channels > MAX_CHANNELS {
        return Err(AudioError::Unsupported(format!("{channels} channels")));
    }
    let format_ok = match spec.sample_format {
        hound::SampleFormat::Int => matches!(spec.bits_per_sample, 8 | 16 | 24 | 32),
        hound::SampleFormat::Float => spec.bits_per_sample == 32,
    };
    if !format_ok {
        return Err(AudioError::Unsupported(format!(
            "{}-bit {:?} samples",
            spec.bits_per_sample, spec.sample_format
        )));
    }
    // The header's claim, capped by what the bytes can actually hold.
    let bytes_per_frame = (spec.bits_per_sample as usize).div_ceil(8) * channels as usize;
    let frames = (reader.duration() as usize).min(bytes.len() / bytes_per_frame.max(1));
    let seconds = frames as f64 / rate as f64;
    if seconds > max_duration.as_secs_f64() {
        return Err(AudioError::TooLong {
            seconds,
            limit_seconds: max_duration.as_secs(),
        });
    }
    if frames == 0 {
        return Err(AudioError::Empty);
    }
    let mono = downmix(reader, frames, channels as usize)?;
    tracing::debug!(rate, channels, frames, "WAV decoded");
    let out = if rate == SAMPLE_RATE {
        mono
    } else {
        resample(&mono, rate)?
    };
    let pcm: Vec<i16> = out
        .iter()
        .map(|v| (v * 32767.0).round().clamp(-32768.0, 32767.0) as i16)
        .collect();
    if pcm.is_empty() {
        return Err(AudioError::Empty);
    }
    Ok(Pcm8k::new(pcm))
}

/// Reads `frames` frames and averages the channels into one f32 channel in -1.0..=1.0.
fn downmix(
    reader: hound::WavReader<Cursor<&[u8]>>,
    frames: usize,
    channels: usize,
) -> Result<Vec<f32>, AudioError> {
    let spec = reader.spec();
    let total = frames * channels;
    let mut mono = Vec::with_capacity(frames);
    let mut acc = 0f32;
    let mut ch = 0;
    let mut push = |v: f32| {
        acc += v;
        ch += 1;
        if ch == channels {
            mono.push(acc / channels as f32);
            acc = 0.0;
            ch = 0;
        }
    };
    // A file cut short (interrupted download) keeps what is there; anything else is corrupt.
    let mut ended_early = false;
    let mut check = |e: hound::Error| match e {
        hound::Error::IoError(_) => {
            ended_early = true;
            Ok(())
        }
        e => Err(AudioError::Corrupt(e.to_string())),
    };
    match spec.sample_format {
        hound::SampleFormat::Float => {
            for s in reader.into_samples::<f32>().take(total) {
                match s {
                    // NaN/inf in a float WAV: silence rather than poison for the resampler.
                    Ok(v) => push(if v.is_finite() {
                        v.clamp(-1.0, 1.0)
                    } else {
                        0.0
                    }),
                    Err(e) => {
                        check(e)?;
                        break;
                    }
                }
            }
        }
        hound::SampleFormat::Int => {
            let scale = 1.0 / (1u64 << (spec.bits_per_sample - 1)) as f32;
            for s in reader.into_samples::<i32>().take(total) {
                match s {
                    Ok(v) => push(v as f32 * scale),
                    Err(e) => {
                        check(e)?;
                        break;
                    }
                }
            }
        }
    }
    if ended_early {
        tracing::debug!(frames = mono.len(), "WAV data shorter than its header says");
    }
    Ok(mono)
}

/// Resamples mono f32 audio from `rate` to 8 kHz. Rates with a simple ratio to 8 kHz (all the
/// usual ones: 11.025, 16, 22.05, 44.1, 48 kHz ...) use rubato's synchronous FFT resampler;
/// odd rates its asynchronous sinc resampler. Both low-pass filter against aliasing.
fn resample(mono: &[f32], rate: u32) -> Result<Vec<f32>, AudioError> {
    let err = |reason: String| AudioError::Resample { from: rate, reason };
    let gcd = gcd(rate, SAMPLE_RATE);
    let mut resampler: Box<dyn Resampler<f32>> = if rate / gcd <= 2048 && SAMPLE_RATE / gcd <= 2048
    {
        Box::new(
            Fft::<f32>::new(
                rate as usize,
                SAMPLE_RATE as usize,
                1024,
                1,
                FixedSync::Input,
            )
            .map_err(|e| err(e.to_string()))?,
        )
    } else {
        let params = SincInterpolationParameters::new(128, WindowFunction::BlackmanHarris2)
            .interpolation(SincInterpolationType::Linear);
        Box::new(
            Async::<f32>::new_sinc(
                SAMPLE_RATE as f64 / rate as f64,
                1.0,
                &params,
                1024,
                1,
                FixedAsync::Input,
            )
            .map_err(|e| err(e.to_string()))?,
        )
    };
    let input = InterleavedSlice::new(mono, 1, mono.len()).map_err(|e| err(e.to_string()))?;
    let out = resampler
        .process_all(&input, mono.len(), None)
        .map_err(|e| err(e.to_string()))?;
    Ok(out.take_data())
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.max(1)
}

/// Reads a WAV file for music on hold (at most [`MOH_MAX_FILE_BYTES`] and
/// [`MOH_MAX_DURATION`]). Blocking file I/O: call at startup or from `spawn_blocking`.
pub fn load_music_on_hold(path: impl AsRef<Path>) -> Result<Pcm8k, MediaError> {
    let path = path.as_ref();
    let read_err = |source| {
        MediaError::Audio(AudioError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    let size = std::fs::metadata(path).map_err(read_err)?.len();
    if size > MOH_MAX_FILE_BYTES {
        return Err(MediaError::Audio(AudioError::FileTooLarge {
            size,
            limit: MOH_MAX_FILE_BYTES,
        }));
    }
    let bytes = std::fs::read(path).map_err(read_err)?;
    let pcm = load_wav_limited(&bytes, MOH_MAX_DURATION)?;
    tracing::info!(path = %path.display(), duration = ?pcm.duration(), "music on hold loaded");
    Ok(pcm)
}

/// Note frequencies of [`default_music_on_hold`], in order (Hz).
pub const MOH_NOTES_HZ: [f32; 16] = [
    440.00, 523.25, 659.26, 523.25, // A minor: A4 C5 E5 C5
    349.23, 440.00, 523.25, 440.00, // F major: F4 A4 C5 A4
    392.00, 523.25, 659.26, 523.25, // C major: G4 C5 E5 C5
    392.00, 493.88, 587.33, 493.88, // G major: G4 B4 D5 B4
];
/// Length of each note of [`default_music_on_hold`]: 312.5 ms (2,500 samples).
pub const MOH_NOTE_SAMPLES: usize = 2500;

/// The built-in music on hold: a soft arpeggio over Am–F–C–G, 16 notes of 312.5 ms each,
/// 5.0 s in all (exactly 250 frames of 20 ms), starting and ending in silence so it loops
/// seamlessly.
///
/// Each note is one pure sine (no harmonics) at 8 kHz, peak about -11 dBFS, with a 10 ms
/// attack, an exponential decay and a 40 ms fade-out, and only one note sounds at a time. The
/// frequencies, in order ([`MOH_NOTES_HZ`]):
///
/// | chord | notes (Hz) |
/// | --- | --- |
/// | A minor | 440.00, 523.25, 659.26, 523.25 |
/// | F major | 349.23, 440.00, 523.25, 440.00 |
/// | C major | 392.00, 523.25, 659.26, 523.25 |
/// | G major | 392.00, 493.88, 587.33, 493.88 |
///
/// So every note lasts ≥ 250 ms and every frequency is within 349–660 Hz: tests detect the
/// music by tone (e.g. Goertzel at 440/523.25/659.26 Hz) and tell it apart from 1000/1500 Hz
/// test tones. Synthesised once per process, then shared.
pub fn default_music_on_hold() -> Pcm8k {
    static MOH: OnceLock<Pcm8k> = OnceLock::new();
    MOH.get_or_init(synthesize_moh).clone()
}

fn synthesize_moh() -> Pcm8k {
    let rate = SAMPLE_RATE as f32;
    let attack = 80; // 10 ms
    let release = 320; // 40 ms
    let peak = 0.28 * 32767.0;
    let mut out = Vec::with_capacity(MOH_NOTES_HZ.len() * MOH_NOTE_SAMPLES);
    for freq in MOH_NOTES_HZ {
        for i in 0..MOH_NOTE_SAMPLES {
            let t = i as f32 / rate;
            let mut env = (-t / 0.35).exp();
            if i < attack {
                env *= i as f32 / attack as f32;
            }
            let left = MOH_NOTE_SAMPLES - 1 - i;
            if left < release {
                // Raised-cosine fade to exactly zero.
                env *= 0.5 - 0.5 * (PI * left as f32 / release as f32).cos();
            }
            out.push((peak * env * (2.0 * PI * freq * t).sin()).round() as i16);
        }
    }
    Pcm8k::new(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Relative power of `freq` in `x` (Goertzel), normalised so a full-scale sine gives ~1.
    pub(crate) fn goertzel(x: &[f32], rate: f32, freq: f32) -> f32 {
        let w = 2.0 * PI * freq / rate;
        let c = 2.0 * w.cos();
        let (mut s1, mut s2) = (0f32, 0f32);
        for v in x {
            let s = v + c * s1 - s2;
            s2 = s1;
            s1 = s;
        }
        let power = s1 * s1 + s2 * s2 - c * s1 * s2;
        let n = x.len() as f32;
        4.0 * power / (n * n)
    }

    fn to_f32(pcm: &[i16]) -> Vec<f32> {
        pcm.iter().map(|s| *s as f32 / 32768.0).collect()
    }

    fn wav(spec: hound::WavSpec, frames: usize, f: impl Fn(usize, u16) -> f64) -> Vec<u8> {
        let mut cur = Cursor::new(Vec::new());
        let mut w = hound::WavWriter::new(&mut cur, spec).unwrap();
        for i in 0..frames {
            for c in 0..spec.channels {
                let v = f(i, c);
                match (spec.sample_format, spec.bits_per_sample) {
                    (hound::SampleFormat::Float, _) => w.write_sample(v as f32).unwrap(),
                    (_, 8) => w.write_sample((v * 127.0) as i8).unwrap(),
                    (_, 16) => w.write_sample((v * 32767.0) as i16).unwrap(),
                    (_, 24) => w.write_sample((v * 8_388_607.0) as i32).unwrap(),
                    (_, 32) => w.write_sample((v * 2_147_483_647.0) as i32).unwrap(),
                    _ => unreachable!(),
                }
            }
        }
        w.finalize().unwrap();
        cur.into_inner()
    }

    fn spec(rate: u32, channels: u16, bits: u16, float: bool) -> hound::WavSpec {
        hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: bits,
            sample_format: if float {
                hound::SampleFormat::Float
            } else {
                hound::SampleFormat::Int
            },
        }
    }

    fn sine(rate: u32, freq: f64, amp: f64) -> impl Fn(usize, u16) -> f64 {
        move |i, _| amp * (2.0 * std::f64::consts::PI * freq * i as f64 / rate as f64).sin()
    }

    fn assert_tone(pcm: &Pcm8k, freq: f32, min_power: f32) {
        // Skip the edges (resampler transients), analyse the middle.
        let s = pcm.samples();
        let mid = &s[s.len() / 4..s.len() * 3 / 4];
        let x = to_f32(mid);
        let p = goertzel(&x, 8000.0, freq);
        assert!(p > min_power, "power at {freq} Hz only {p}");
        for other in [freq * 0.5, freq * 1.5, 300.0, 2500.0] {
            let q = goertzel(&x, 8000.0, other);
            assert!(q < p / 100.0, "{other} Hz has {q} vs {p} at {freq} Hz");
        }
    }

    #[test]
    fn goertzel_sanity() {
        let x: Vec<f32> = (0..8000)
            .map(|i| (2.0 * PI * 1000.0 * i as f32 / 8000.0).sin())
            .collect();
        assert!((goertzel(&x, 8000.0, 1000.0) - 1.0).abs() < 0.05);
        assert!(goertzel(&x, 8000.0, 1500.0) < 1e-3);
    }

    #[test]
    fn resamples_44k1_stereo_keeping_1khz_tone() {
        let rate = 44_100;
        let bytes = wav(
            spec(rate, 2, 16, false),
            rate as usize * 2,
            sine(rate, 1000.0, 0.5),
        );
        let pcm = load_wav(&bytes).unwrap();
        // 2 s at 8 kHz, give or take the resampler's edges.
        assert!((15_900..=16_100).contains(&pcm.len()), "{}", pcm.len());
        assert_tone(&pcm, 1000.0, 0.2);
        assert!((pcm.duration().as_secs_f64() - 2.0).abs() < 0.02);
    }

    #[test]
    fn every_sample_format_and_rate() {
        let cases = [
            (8000, 1, 8, false),
            (8000, 1, 16, false),
            (16_000, 1, 24, false),
            (48_000, 2, 32, false),
            (22_050, 1, 32, true),
            (11_025, 3, 16, false),
            (11_111, 1, 16, false), // odd rate: the asynchronous sinc path
        ];
        for (rate, ch, bits, float) in cases {
            let bytes = wav(
                spec(rate, ch, bits, float),
                rate as usize,
                sine(rate, 1500.0, 0.6),
            );
            let pcm = load_wav(&bytes).unwrap_or_else(|e| panic!("{rate}/{ch}/{bits}: {e}"));
            assert!(
                (7_900..=8_100).contains(&pcm.len()),
                "{rate}/{ch}/{bits}: {} samples",
                pcm.len()
            );
            assert_tone(&pcm, 1500.0, 0.2);
        }
    }

    #[test]
    fn eight_khz_passes_through_exactly() {
        let bytes = wav(spec(8000, 1, 16, false), 400, |i, _| {
            (i as f64 - 200.0) / 400.0
        });
        let pcm = load_wav(&bytes).unwrap();
        assert_eq!(pcm.len(), 400);
        for (i, s) in pcm.samples().iter().enumerate() {
            let expect = (((i as f64 - 200.0) / 400.0) * 32767.0) as i16;
            assert!(
                (*s as i32 - expect as i32).abs() <= 1,
                "{i}: {s} vs {expect}"
            );
        }
    }

    #[test]
    fn downmix_averages_channels() {
        // Left +0.5, right -0.5: silence.
        let bytes = wav(spec(8000, 2, 16, false), 800, |_, c| {
            if c == 0 {
                0.5
            } else {
                -0.5
            }
        });
        let pcm = load_wav(&bytes).unwrap();
        assert!(pcm.samples().iter().all(|s| s.abs() <= 1));
        // A tone in one channel only comes out at half amplitude.
        let bytes = wav(spec(8000, 2, 16, false), 8000, |i, c| {
            if c == 1 {
                sine(8000, 1000.0, 0.8)(i, c)
            } else {
                0.0
            }
        });
        let pcm = load_wav(&bytes).unwrap();
        let peak = pcm
            .samples()
            .iter()
            .map(|s| s.unsigned_abs())
            .max()
            .unwrap();
        assert!((12_900..=13_300).contains(&peak), "{peak}");
    }

    #[test]
    fn rejects_bad_input_with_typed_errors() {
        let audio = |r: Result<Pcm8k, MediaError>| match r {
            Err(MediaError::Audio(e)) => e,
            other => panic!("expected an audio error, got {other:?}"),
        };
        assert!(matches!(audio(load_wav(b"")), AudioError::NotWav(_)));
        assert!(matches!(
            audio(load_wav(b"ID3\x04 this is an mp3")),
            AudioError::NotWav(_)
        ));
        assert!(matches!(
            audio(load_wav(&[0u8; 100])),
            AudioError::NotWav(_)
        ));
        let good = wav(spec(8000, 1, 16, false), 8000, sine(8000, 440.0, 0.5));
        // Header only.
        assert!(matches!(
            audio(load_wav(&good[..30])),
            AudioError::NotWav(_)
        ));
        // Too long for the limit.
        let e = audio(load_wav_limited(&good, Duration::from_millis(500)));
        assert!(matches!(e, AudioError::TooLong { .. }), "{e}");
        assert!(load_wav_limited(&good, Duration::from_secs(1)).is_ok());
        // No frames.
        let empty = wav(spec(8000, 1, 16, false), 0, |_, _| 0.0);
        assert!(matches!(audio(load_wav(&empty)), AudioError::Empty));
        // Unsupported rate.
        let slow = wav(spec(2000, 1, 16, false), 100, |_, _| 0.0);
        assert!(matches!(audio(load_wav(&slow)), AudioError::Unsupported(_)));
        // Compressed format tag (ADPCM = 2).
        let mut adpcm = good.clone();
        adpcm[20] = 2;
        assert!(matches!(
            audio(load_wav(&adpcm)),
            AudioError::Unsupported(_)
        ));
        // A header claiming a huge data chunk that is not there: limited by the real bytes.
        let mut lying = good.clone();
        lying[40..44].copy_from_slice(&u32::MAX.to_le_bytes());
        lying[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        let pcm = load_wav(&lying).unwrap();
        assert_eq!(pcm.len(), 8000);
        lying[40..44].copy_from_slice(&0x7FFF_FFFEu32.to_le_bytes());
        assert_eq!(load_wav(&lying[..1000]).unwrap().len(), (1000 - 44) / 2);
        // Truncated in the middle of the samples: the header claims more than is there.
        let pcm = load_wav(&good[..good.len() - 1001]).unwrap();
        assert_eq!(pcm.len(), 8000 - 501);
    }

    #[test]
    fn never_panics_on_mangled_input() {
        let good = wav(spec(44_100, 2, 16, false), 2000, sine(44_100, 440.0, 0.5));
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut rnd = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..300 {
            let mut b = good.clone();
            // Flip a few header bytes and cut at a random length.
            for _ in 0..3 {
                let i = (rnd() % 64) as usize;
                b[i] = rnd() as u8;
            }
            b.truncate((rnd() % good.len() as u64) as usize);
            let _ = load_wav(&b);
        }
    }

    #[test]
    fn music_on_hold_is_documented_arpeggio() {
        let moh = default_music_on_hold();
        assert_eq!(moh.len(), 16 * MOH_NOTE_SAMPLES);
        assert_eq!(moh.len() % FRAME_SAMPLES, 0, "whole frames");
        assert_eq!(moh.duration(), Duration::from_secs(5));
        let s = moh.samples();
        assert_eq!((s[0], s[s.len() - 1]), (0, 0), "loops without a click");
        let peak = s.iter().map(|v| v.unsigned_abs()).max().unwrap();
        assert!((6000..=10_000).contains(&peak), "{peak}");
        for (n, freq) in MOH_NOTES_HZ.iter().enumerate() {
            assert!((300.0..=900.0).contains(freq));
            // The first 250 ms of each note.
            let note = to_f32(&s[n * MOH_NOTE_SAMPLES..n * MOH_NOTE_SAMPLES + 2000]);
            let p = goertzel(&note, 8000.0, *freq);
            assert!(p > 0.002, "note {n} ({freq} Hz): {p}");
            for test_tone in [1000.0, 1500.0] {
                assert!(goertzel(&note, 8000.0, test_tone) < p / 1000.0);
            }
        }
        // Shared, not re-synthesised.
        assert!(Arc::ptr_eq(&moh.samples, &default_music_on_hold().samples));
    }

    #[test]
    fn tone_and_silence_helpers() {
        let t = Pcm8k::tone(1000.0, Duration::from_millis(500), 0.5);
        assert_eq!(t.len(), 4000);
        assert_eq!(t.samples()[0], 0);
        assert_tone(&t, 1000.0, 0.2);
        let s = Pcm8k::silence(Duration::from_millis(20));
        assert_eq!(s.len(), FRAME_SAMPLES);
        assert!(s.samples().iter().all(|v| *v == 0));
        assert!(format!("{t:?}").contains("4000"));
        assert!(Pcm8k::new(vec![]).is_empty());
    }

    #[test]
    fn loads_music_on_hold_file() {
        let dir = std::env::temp_dir().join(format!("hookflash-moh-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("moh.wav");
        std::fs::write(
            &path,
            wav(spec(16_000, 1, 16, false), 16_000, sine(16_000, 440.0, 0.5)),
        )
        .unwrap();
        let pcm = load_music_on_hold(&path).unwrap();
        assert!((7_900..=8_100).contains(&pcm.len()));
        let missing = load_music_on_hold(dir.join("nope.wav"));
        assert!(matches!(
            missing,
            Err(MediaError::Audio(AudioError::Read { .. }))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
