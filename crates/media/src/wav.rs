//! WAV (RIFF/WAVE) files: the one place that knows their byte layout.
//!
//! Decoding samples is [`hound`]'s job ([`crate::audio::load_wav`], the TTS cache); this module
//! writes the headers and fixes their sizes:
//! - [`header`] / [`encode_pcm16`]: the canonical 44-byte header of 16-bit PCM (`RIFF`,
//!   `fmt `, `data`, nothing else) and a whole file in memory (uploaded voicemail greetings, the
//!   TTS cache). It is byte for byte the header hound writes for the same format.
//! - [`patch_sizes`]: rewrites the RIFF and `data` sizes of a file that grows, in place (the
//!   call recorder, [`crate::record`], after every flush).
//! - [`Layout::parse`]: walks the chunks of a header up to `data` (any PCM WAV whose `data`
//!   chunk is its last, as streaming writers leave them).
//! - [`clamp_data_len`]: a copy of an in-memory file whose `data` size claims more bytes than
//!   there are (a streaming writer's `0xFFFFFFFF`, a cut-off download), so hound accepts it.
//! - [`repair_wav`]: the same fix for a file on disk, in place: what a crash (kill -9, power
//!   loss) leaves of a recording is made consistent at the next start.

use std::fs::OpenOptions;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::audio::SAMPLE_RATE;

/// Length of the canonical header [`header`] writes.
pub const HEADER_LEN: usize = 44;
/// Offset of the `data` chunk in the canonical header.
const CANONICAL_DATA_CHUNK: u64 = 36;
/// How much of a file [`repair_wav`] reads to find its `data` chunk.
const REPAIR_HEAD_BYTES: u64 = 4096;

/// The format of a 16-bit integer PCM WAV (the only kind this server writes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pcm16Spec {
    pub channels: u16,
    pub sample_rate: u32,
}

impl Pcm16Spec {
    /// 8 kHz mono: voicemail greetings, TTS output.
    pub const MONO_8K: Pcm16Spec = Pcm16Spec {
        channels: 1,
        sample_rate: SAMPLE_RATE,
    };
    /// 8 kHz stereo: call recordings (left = leg A, right = leg B).
    pub const STEREO_8K: Pcm16Spec = Pcm16Spec {
        channels: 2,
        sample_rate: SAMPLE_RATE,
    };

    /// Bytes of one sample frame (all channels).
    pub const fn block_align(self) -> u16 {
        self.channels * 2
    }

    pub const fn byte_rate(self) -> u32 {
        self.sample_rate * self.block_align() as u32
    }

    /// The largest `data` chunk, in whole frames, that the canonical header's RIFF size can
    /// describe (about 37 hours of 8 kHz stereo).
    pub const fn max_data_bytes(self) -> u64 {
        max_data_after(CANONICAL_DATA_CHUNK, self.block_align() as u64)
    }
}

/// The largest `data` chunk, in whole frames of `block_align` bytes, of a file whose `data`
/// chunk starts at `data_chunk`: the RIFF size (`data_chunk + data`) must fit a `u32`.
const fn max_data_after(data_chunk: u64, block_align: u64) -> u64 {
    let room = (u32::MAX as u64).saturating_sub(data_chunk);
    room - room % block_align
}

/// Why bytes are not a WAV this module can handle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WavError {
    /// Not a RIFF/WAVE file, or its chunks up to `data` are malformed.
    #[error("{0}")]
    Malformed(&'static str),
    /// More samples than a WAV header can describe.
    #[error("{bytes} bytes of samples are more than a WAV file can hold ({max})")]
    TooLarge { bytes: u64, max: u64 },
}

/// Why [`repair_wav`] failed.
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    #[error("WAV file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a WAV file that can be repaired: {reason}")]
    NotWav {
        path: PathBuf,
        #[source]
        reason: WavError,
    },
}

/// The canonical 44-byte header of 16-bit PCM in `spec` with `data_len` bytes of samples.
pub fn header(spec: Pcm16Spec, data_len: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&riff_len(CANONICAL_DATA_CHUNK, data_len).to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&1u16.to_le_bytes()); // PCM
    h[22..24].copy_from_slice(&spec.channels.to_le_bytes());
    h[24..28].copy_from_slice(&spec.sample_rate.to_le_bytes());
    h[28..32].copy_from_slice(&spec.byte_rate().to_le_bytes());
    h[32..34].copy_from_slice(&spec.block_align().to_le_bytes());
    h[34..36].copy_from_slice(&16u16.to_le_bytes()); // bits per sample
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&data_len.to_le_bytes());
    h
}

/// The RIFF chunk's size field of a file whose `data` chunk (at `data_chunk`) holds
/// `data_len` bytes and is the last chunk.
fn riff_len(data_chunk: u64, data_len: u32) -> u32 {
    // RIFF size = everything after the 8-byte RIFF header = data_chunk + 8 + data_len - 8.
    u32::try_from(data_chunk)
        .unwrap_or(u32::MAX)
        .saturating_add(data_len)
}

/// A whole WAV file in memory: the canonical header and `samples` (interleaved when `spec`
/// has several channels).
pub fn encode_pcm16(spec: Pcm16Spec, samples: &[i16]) -> Result<Vec<u8>, WavError> {
    let bytes = samples.len() as u64 * 2;
    let max = spec.max_data_bytes();
    if bytes > max {
        return Err(WavError::TooLarge { bytes, max });
    }
    let mut out = Vec::with_capacity(HEADER_LEN + samples.len() * 2);
    out.extend_from_slice(&header(spec, bytes as u32));
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    Ok(out)
}

/// Rewrites the RIFF and `data` sizes of a file written with [`header`] to `data_len` bytes of
/// samples, and leaves the position at the end of the file (ready for the next append).
pub fn patch_sizes<W: Write + Seek>(w: &mut W, data_len: u32) -> io::Result<()> {
    patch_sizes_at(w, CANONICAL_DATA_CHUNK, data_len)?;
    w.seek(SeekFrom::End(0))?;
    Ok(())
}

/// Rewrites the RIFF size and the size of the `data` chunk found at `data_chunk`.
fn patch_sizes_at<W: Write + Seek>(w: &mut W, data_chunk: u64, data_len: u32) -> io::Result<()> {
    w.seek(SeekFrom::Start(4))?;
    w.write_all(&riff_len(data_chunk, data_len).to_le_bytes())?;
    w.seek(SeekFrom::Start(data_chunk + 4))?;
    w.write_all(&data_len.to_le_bytes())?;
    Ok(())
}

/// Where a WAV file's `data` chunk is and what its header claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Offset of the `data` chunk's id; its samples start 8 bytes later.
    pub data_chunk: u64,
    /// The RIFF size field as written.
    pub riff_len: u32,
    /// The `data` size field as written.
    pub data_len: u32,
    /// Bytes of one sample frame (never 0).
    pub block_align: u16,
    /// Bytes per second, as the `fmt ` chunk says.
    pub byte_rate: u32,
}

/// Whether `bytes` start like a WAV file (`RIFF` ... `WAVE`).
pub fn is_riff_wave(bytes: &[u8]) -> bool {
    bytes.len() >= 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WAVE"
}

impl Layout {
    /// Walks the chunks of `head` (the start of a file) up to `data`, which must come after
    /// `fmt ` and lie within `head`.
    pub fn parse(head: &[u8]) -> Result<Layout, WavError> {
        if !is_riff_wave(head) {
            return Err(WavError::Malformed("no RIFF/WAVE header"));
        }
        // `len` bytes at `at`, if `head` holds them (no arithmetic can overflow).
        let bytes_at = |at: usize, len: usize| head.get(at..at.checked_add(len)?);
        let u32_at = |at: usize| -> Option<u32> {
            let b = bytes_at(at, 4)?;
            Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        let mut pos = 12usize;
        let mut fmt = None;
        loop {
            let (Some(id), Some(len)) = (bytes_at(pos, 4), pos.checked_add(4).and_then(u32_at))
            else {
                return Err(WavError::Malformed("no data chunk"));
            };
            if id == b"fmt " {
                let f = pos
                    .checked_add(8)
                    .and_then(|body| bytes_at(body, 16))
                    .ok_or(WavError::Malformed("truncated fmt chunk"))?;
                let block_align = u16::from_le_bytes([f[12], f[13]]);
                if block_align == 0 {
                    return Err(WavError::Malformed("block align 0"));
                }
                fmt = Some((block_align, u32::from_le_bytes([f[8], f[9], f[10], f[11]])));
            } else if id == b"data" {
                let Some((block_align, byte_rate)) = fmt else {
                    return Err(WavError::Malformed("data chunk before fmt chunk"));
                };
                return Ok(Layout {
                    data_chunk: pos as u64,
                    riff_len: u32_at(4).unwrap_or(0),
                    data_len: len,
                    block_align,
                    byte_rate,
                });
            }
            // Chunks are padded to an even length.
            pos = (len as usize)
                .checked_add(len as usize & 1)
                .and_then(|l| l.checked_add(8))
                .and_then(|l| pos.checked_add(l))
                .ok_or(WavError::Malformed("chunk length overflow"))?;
        }
    }

    /// Offset of the first sample.
    pub fn data_start(&self) -> u64 {
        self.data_chunk + 8
    }

    /// The `data` size a file of `file_len` bytes really holds, in whole frames and capped at
    /// what the size fields can describe, and the bytes beyond it (a torn last frame).
    pub fn data_in(&self, file_len: u64) -> (u64, u64) {
        let available = file_len.saturating_sub(self.data_start());
        let align = self.block_align as u64;
        let data = (available - available % align).min(max_data_after(self.data_chunk, align));
        (data, available - data)
    }

    /// Length of `data_len` bytes of samples.
    pub fn duration_of(&self, data_len: u64) -> Duration {
        if self.byte_rate == 0 {
            Duration::ZERO
        } else {
            Duration::from_micros(data_len * 1_000_000 / self.byte_rate as u64)
        }
    }
}

/// If the `data` chunk of the WAV in `bytes` claims more bytes than there are, a copy whose
/// `data` size is the bytes present in whole frames; `None` when nothing needs fixing, or when
/// the chunks are too broken to tell (hound then says what is wrong).
pub fn clamp_data_len(bytes: &[u8]) -> Option<Vec<u8>> {
    let layout = Layout::parse(bytes).ok()?;
    let available = (bytes.len() as u64).saturating_sub(layout.data_start());
    if u64::from(layout.data_len) <= available {
        return None;
    }
    let (data, _) = layout.data_in(bytes.len() as u64);
    let mut copy = bytes.to_vec();
    let at = layout.data_chunk as usize + 4;
    copy[at..at + 4].copy_from_slice(&(data as u32).to_le_bytes());
    Some(copy)
}

/// What [`repair_wav`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairOutcome {
    /// The header sizes were wrong and have been rewritten.
    pub changed: bool,
    /// Bytes of sample data now described by the header.
    pub data_bytes: u64,
    pub duration: Duration,
    /// Bytes of an incomplete sample frame cut off the end of the file.
    pub trimmed_bytes: u64,
}

/// Makes a PCM WAV file whose writer died (kill -9, power loss) consistent again: the RIFF and
/// `data` sizes are set from the file's length, and an incomplete last sample frame is cut off.
/// The `data` chunk must be the file's last chunk and start within its first 4 KiB (true of the
/// recorder's files and of most streaming writers). A consistent file is left untouched
/// (`changed: false`).
///
/// Blocking file I/O: call it at startup or from `spawn_blocking`.
pub fn repair_wav(path: impl AsRef<Path>) -> Result<RepairOutcome, RepairError> {
    let path = path.as_ref();
    let io_err = |source| RepairError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io_err)?;
    let file_len = f.metadata().map_err(io_err)?.len();
    let mut head = vec![0u8; file_len.min(REPAIR_HEAD_BYTES) as usize];
    f.read_exact(&mut head).map_err(io_err)?;
    let layout = Layout::parse(&head).map_err(|reason| RepairError::NotWav {
        path: path.to_path_buf(),
        reason,
    })?;
    let (data, trimmed) = layout.data_in(file_len);
    let riff = riff_len(layout.data_chunk, data as u32);
    let changed = trimmed > 0 || u64::from(layout.data_len) != data || layout.riff_len != riff;
    if changed {
        if trimmed > 0 {
            f.set_len(layout.data_start() + data).map_err(io_err)?;
        }
        patch_sizes_at(&mut f, layout.data_chunk, data as u32).map_err(io_err)?;
        f.sync_all().map_err(io_err)?;
        tracing::info!(path = %path.display(), data_bytes = data, trimmed, "WAV header repaired");
    }
    Ok(RepairOutcome {
        changed,
        data_bytes: data,
        duration: layout.duration_of(data),
        trimmed_bytes: trimmed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("hookflash-wav-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        let _ = std::fs::remove_file(&p);
        p
    }

    fn hound_spec(spec: Pcm16Spec) -> hound::WavSpec {
        hound::WavSpec {
            channels: spec.channels,
            sample_rate: spec.sample_rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        }
    }

    fn hound_encode(spec: Pcm16Spec, samples: &[i16]) -> Vec<u8> {
        let mut cur = Cursor::new(Vec::new());
        let mut w = hound::WavWriter::new(&mut cur, hound_spec(spec)).unwrap();
        for s in samples {
            w.write_sample(*s).unwrap();
        }
        w.finalize().unwrap();
        cur.into_inner()
    }

    fn hound_decode(bytes: &[u8]) -> (hound::WavSpec, Vec<i16>) {
        let r = hound::WavReader::new(Cursor::new(bytes)).unwrap();
        let spec = r.spec();
        let samples = r.into_samples().map(|s| s.unwrap()).collect();
        (spec, samples)
    }

    #[test]
    fn header_round_trips_through_hound_and_layout() {
        for spec in [
            Pcm16Spec::MONO_8K,
            Pcm16Spec::STEREO_8K,
            Pcm16Spec {
                channels: 2,
                sample_rate: 44_100,
            },
        ] {
            let samples: Vec<i16> = (0..400).map(|i| (i * 37 - 7000) as i16).collect();
            let bytes = encode_pcm16(spec, &samples).unwrap();
            // Byte for byte what hound writes for the same format.
            assert_eq!(bytes, hound_encode(spec, &samples), "{spec:?}");
            let (read, back) = hound_decode(&bytes);
            assert_eq!(read, hound_spec(spec));
            assert_eq!(back, samples);
            let layout = Layout::parse(&bytes).unwrap();
            assert_eq!(
                layout,
                Layout {
                    data_chunk: 36,
                    riff_len: 36 + 800,
                    data_len: 800,
                    block_align: spec.block_align(),
                    byte_rate: spec.byte_rate(),
                }
            );
            assert_eq!(layout.data_in(bytes.len() as u64), (800, 0));
            assert_eq!(clamp_data_len(&bytes), None, "nothing to clamp");
        }
        let h = header(Pcm16Spec::STEREO_8K, 8);
        assert_eq!(h.len(), HEADER_LEN);
        assert_eq!(&h[0..4], b"RIFF");
        assert_eq!(u32::from_le_bytes([h[4], h[5], h[6], h[7]]), 44);
        assert_eq!(Pcm16Spec::STEREO_8K.byte_rate(), 32_000);
        assert_eq!(
            Pcm16Spec::STEREO_8K.max_data_bytes(),
            (u32::MAX as u64 - 36) / 4 * 4
        );
    }

    #[test]
    fn patch_sizes_follows_a_growing_file() {
        let spec = Pcm16Spec::STEREO_8K;
        let mut cur = Cursor::new(header(spec, 0).to_vec());
        cur.seek(SeekFrom::End(0)).unwrap();
        for chunk in 0..3i16 {
            let frame: Vec<u8> = [chunk, -chunk]
                .iter()
                .flat_map(|s| s.to_le_bytes())
                .collect();
            cur.write_all(&frame).unwrap();
            let data = (cur.get_ref().len() - HEADER_LEN) as u32;
            patch_sizes(&mut cur, data).unwrap();
            assert_eq!(cur.position(), cur.get_ref().len() as u64, "at the end");
            let (_, s) = hound_decode(cur.get_ref());
            assert_eq!(s.len(), 2 * (chunk as usize + 1));
        }
        assert_eq!(cur.get_ref()[..HEADER_LEN], header(spec, 12));
    }

    #[test]
    fn layout_walks_extra_chunks_and_rejects_broken_ones() {
        // A LIST chunk of odd length (padded) between fmt and data.
        let base = encode_pcm16(Pcm16Spec::MONO_8K, &[1, 2, 3]).unwrap();
        let mut bytes = base[..36].to_vec();
        bytes.extend_from_slice(b"LIST");
        bytes.extend_from_slice(&3u32.to_le_bytes());
        bytes.extend_from_slice(&[b'a', b'b', b'c', 0]);
        bytes.extend_from_slice(&base[36..]);
        let layout = Layout::parse(&bytes).unwrap();
        assert_eq!((layout.data_chunk, layout.data_len), (48, 6));
        assert_eq!(bytes[layout.data_start() as usize..], [1, 0, 2, 0, 3, 0]);

        let malformed = |b: &[u8]| matches!(Layout::parse(b), Err(WavError::Malformed(_)));
        assert!(malformed(b""));
        assert!(malformed(b"RIFF\0\0\0\0WAVE"));
        assert!(malformed(b"ID3\x04 not a wav at all"));
        assert!(malformed(&base[..40]), "cut inside the data chunk header");
        let mut no_fmt = base[..12].to_vec();
        no_fmt.extend_from_slice(&base[36..]);
        assert!(malformed(&no_fmt));
        let mut zero_align = base.clone();
        zero_align[32..34].copy_from_slice(&0u16.to_le_bytes());
        assert!(malformed(&zero_align));
        let mut huge = base.clone();
        huge[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(malformed(&huge));
        assert!(matches!(
            encode_pcm16(Pcm16Spec::MONO_8K, &[]),
            Ok(b) if b.len() == HEADER_LEN
        ));
    }

    #[test]
    fn clamp_fixes_a_data_size_larger_than_the_bytes() {
        let samples: Vec<i16> = (0..100).collect();
        let good = encode_pcm16(Pcm16Spec::STEREO_8K, &samples).unwrap();
        let mut streaming = good.clone();
        streaming[40..44].copy_from_slice(&u32::MAX.to_le_bytes());
        streaming[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        let fixed = clamp_data_len(&streaming).unwrap();
        assert_eq!(hound_decode(&fixed).1, samples);
        // Cut mid-frame: whole frames only.
        let fixed = clamp_data_len(&good[..good.len() - 3]).unwrap();
        assert_eq!(Layout::parse(&fixed).unwrap().data_len, 200 - 4);
        assert_eq!(clamp_data_len(b"junk"), None);
    }

    #[test]
    fn repair_restores_a_truncated_file() {
        let p = tmp("truncated.wav");
        let spec = Pcm16Spec::STEREO_8K;
        // As the recorder leaves it after a crash: the header of the start (sizes 0), the
        // samples flushed since, and a torn last frame.
        let mut bytes = header(spec, 0).to_vec();
        for i in 0..1000i16 {
            bytes.extend_from_slice(&i.to_le_bytes());
            bytes.extend_from_slice(&(-i).to_le_bytes());
        }
        bytes.extend_from_slice(&[7, 7, 7]);
        std::fs::write(&p, &bytes).unwrap();
        assert_eq!(hound::WavReader::open(&p).unwrap().duration(), 0);

        let out = repair_wav(&p).unwrap();
        assert_eq!(
            out,
            RepairOutcome {
                changed: true,
                data_bytes: 4000,
                duration: Duration::from_millis(125),
                trimmed_bytes: 3,
            }
        );
        let repaired = std::fs::read(&p).unwrap();
        assert_eq!(repaired.len(), HEADER_LEN + 4000);
        assert_eq!(repaired[..HEADER_LEN], header(spec, 4000));
        let (_, s) = hound_decode(&repaired);
        assert_eq!((s[0], s[1], s[1998], s[1999]), (0, 0, 999, -999));
        // Again: nothing to do, nothing written.
        let again = repair_wav(&p).unwrap();
        assert!(!again.changed);
        assert_eq!((again.data_bytes, again.trimmed_bytes), (4000, 0));

        // A header claiming more than there is, behind an extra chunk (a foreign writer).
        let mut foreign = repaired[..36].to_vec();
        foreign.extend_from_slice(b"LIST");
        foreign.extend_from_slice(&4u32.to_le_bytes());
        foreign.extend_from_slice(b"abcd");
        foreign.extend_from_slice(b"data");
        foreign.extend_from_slice(&u32::MAX.to_le_bytes());
        foreign.extend_from_slice(&repaired[HEADER_LEN..]);
        foreign[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        std::fs::write(&p, &foreign).unwrap();
        let out = repair_wav(&p).unwrap();
        assert!(out.changed);
        assert_eq!((out.data_bytes, out.trimmed_bytes), (4000, 0));
        let fixed = std::fs::read(&p).unwrap();
        let layout = Layout::parse(&fixed).unwrap();
        assert_eq!((layout.data_len, layout.riff_len), (4000, 48 + 4000));
        assert_eq!(hound_decode(&fixed).1.len(), 2000);
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn repair_rejects_what_it_cannot_fix() {
        let p = tmp("junk.wav");
        std::fs::write(&p, b"hello world, not a wav at all").unwrap();
        assert!(matches!(repair_wav(&p), Err(RepairError::NotWav { .. })));
        std::fs::write(&p, b"RIFF\0\0\0\0WAVE").unwrap();
        let e = repair_wav(&p).unwrap_err();
        assert!(matches!(e, RepairError::NotWav { .. }));
        assert!(e.to_string().contains("no data chunk"), "{e}");
        assert!(matches!(
            repair_wav(p.with_extension("missing")),
            Err(RepairError::Io { .. })
        ));
        std::fs::remove_file(&p).unwrap();
    }
}
