//! Call recording: stereo 16-bit 8 kHz WAV, left = audio received from leg A, right = audio
//! received from leg B, written incrementally. The header is [`crate::wav`]'s, and so is
//! [`crate::wav::repair_wav`] for files a crash left behind.
//!
//! # Pipeline
//! - **Relay task** (no I/O): while a recording runs, RTP audio accepted from a leg (whose
//!   forwarding is on: a muted/held leg is not recorded) is decoded with that leg's receive codec
//!   (G.711 by payload type, [`crate::relay::BridgeHandle::set_recv_codec`]) into a small per-leg
//!   sample ring. Telephone-events, comfort noise and unknown payload types are not audio.
//! - **Frame clock**: on every tick of the relay's 20 ms clock one stereo frame (160 samples per
//!   channel) is taken: a leg's next 160 samples if its ring holds that many, else silence
//!   (a leg that sent nothing, or a packet that is late: it lands in the next frame, so jitter
//!   up to the ring's depth is absorbed). Packets are placed by arrival time, not by RTP
//!   timestamp; the ring is capped at 200 ms (oldest samples dropped) so latency cannot grow.
//! - **Queue**: frames go to a writer task through a bounded channel with `try_send`; the relay
//!   never waits. A full queue (disk slower than real time) drops the frame and counts it
//!   ([`RecordingSummary::dropped_frames`]); the lost time is written as silence once the
//!   queue has room again, so the file's timeline stays true to the wall clock.
//! - **Wall clock**: ticks the relay task skipped (it fell more than 100 ms behind) are written
//!   as silence, and at the end the file is topped up with silence to the time from start to
//!   stop if ticks were still due when the stop arrived.
//! - **Writer task**: appends the samples and rewrites the RIFF and `data` sizes in the header
//!   ([`crate::wav::patch_sizes`]) every [`RecordOptions::header_interval`] (1 s), each time in
//!   one `spawn_blocking` call; on stop it writes the rest, fixes the header and fsyncs. A
//!   process killed in between leaves a file whose header lags at most one interval behind its
//!   data: [`crate::wav::repair_wav`] fixes it.
//!
//! # Pause
//! Pausing writes **silence** for as long as the pause lasts (and drops the audio received
//! meanwhile): the pause leaves an audible gap at the right place in the timeline, and the
//! file's duration equals the time from start to stop.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::audio::FRAME_SAMPLES;
use crate::g711::Law;
use crate::wav::{self, Pcm16Spec};

/// The format of a recording: 8 kHz 16-bit stereo.
pub const FORMAT: Pcm16Spec = Pcm16Spec::STEREO_8K;
/// Channels of a recording (left = leg A, right = leg B).
pub const CHANNELS: u16 = FORMAT.channels;
/// Length of the header the recorder writes ([`wav::header`]).
pub const WAV_HEADER_LEN: u64 = wav::HEADER_LEN as u64;
const BYTES_PER_SECOND: u64 = FORMAT.byte_rate() as u64;
/// Samples (both channels) of one 20 ms frame.
const FRAME_LEN: usize = FRAME_SAMPLES * CHANNELS as usize;
const FRAME_BYTES: usize = FRAME_LEN * 2;
/// Largest `data` chunk a RIFF size field can describe (about 37 hours here).
const MAX_DATA_BYTES: u64 = FORMAT.max_data_bytes();
/// Per-leg sample ring: 200 ms.
const RING_SAMPLES: usize = 10 * FRAME_SAMPLES;
/// During a pause the accumulated silence is handed to the writer at least once a second.
const GAP_FLUSH_FRAMES: u32 = 50;

/// Why a recording could not be started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("a recording is already running on this bridge")]
    AlreadyRecording,
    #[error("no recording is running on this bridge")]
    NotRecording,
    #[error("the bridge has stopped")]
    BridgeStopped,
    #[error("recording file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The writer task ended without a result (panicked, or the runtime shut down).
    #[error("the recording writer of {path} failed: {reason}")]
    Writer { path: PathBuf, reason: String },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RecordError + '_ {
    move |source| RecordError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Options of [`crate::relay::BridgeHandle::start_recording`].
#[derive(Debug, Clone)]
pub struct RecordOptions {
    /// Frames (20 ms each) the queue between the relay and the writer holds; beyond that frames
    /// are dropped (and counted). Default 250 (5 s).
    pub queue_frames: usize,
    /// How often the writer appends to the file and updates the header sizes. Default 1 s:
    /// a crash loses at most this much of the header's count (the data is in the file and
    /// [`wav::repair_wav`] recovers it).
    pub header_interval: Duration,
}

impl Default for RecordOptions {
    fn default() -> Self {
        RecordOptions {
            queue_frames: 250,
            header_interval: Duration::from_secs(1),
        }
    }
}

/// Identifies one recording of a bridge. Numbers increase per bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecordingId(pub(crate) u64);

impl RecordingId {
    pub fn number(&self) -> u64 {
        self.0
    }
}

impl std::fmt::Display for RecordingId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "rec{}", self.0)
    }
}

/// A finished recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingSummary {
    pub id: RecordingId,
    pub path: PathBuf,
    /// Length of the audio (pauses included, as silence).
    pub duration: Duration,
    /// Size of the file, header included.
    pub bytes: u64,
    /// 20 ms frames lost because the writer fell behind (written as silence instead).
    pub dropped_frames: u64,
}

/// Messages from the relay task to the writer. Frames travel inline (640 bytes) in the
/// channel's preallocated slots: boxing them would allocate 50 times a second per recording.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub(crate) enum WriterMsg {
    /// One 20 ms stereo frame, interleaved L R L R ...
    Frame([i16; FRAME_LEN]),
    /// This many 20 ms frames of silence (pause, frames dropped earlier, a stalled clock).
    Silence(u32),
}

/// Counters shared by the relay-side tap and the writer.
#[derive(Debug, Default)]
pub(crate) struct TapCounters {
    dropped: AtomicU64,
}

/// A ring of decoded samples of one leg, allocated once per recording.
#[derive(Debug)]
struct SampleRing {
    buf: Box<[i16]>,
    head: usize,
    len: usize,
}

impl SampleRing {
    fn new() -> SampleRing {
        SampleRing {
            buf: vec![0; RING_SAMPLES].into_boxed_slice(),
            head: 0,
            len: 0,
        }
    }

    fn clear(&mut self) {
        self.head = 0;
        self.len = 0;
    }

    /// Appends decoded G.711; when full the oldest samples go.
    fn push_g711(&mut self, law: Law, payload: &[u8]) {
        let cap = self.buf.len();
        let payload = &payload[payload.len().saturating_sub(cap)..];
        let overflow = (self.len + payload.len()).saturating_sub(cap);
        if overflow > 0 {
            self.head = (self.head + overflow) % cap;
            self.len -= overflow;
        }
        let mut tail = (self.head + self.len) % cap;
        for b in payload {
            self.buf[tail] = law.decode_sample(*b);
            tail += 1;
            if tail == cap {
                tail = 0;
            }
        }
        self.len += payload.len();
    }

    /// Appends decoded samples; when full the oldest samples go.
    fn push_pcm(&mut self, samples: &[i16]) {
        let cap = self.buf.len();
        let samples = &samples[samples.len().saturating_sub(cap)..];
        let overflow = (self.len + samples.len()).saturating_sub(cap);
        if overflow > 0 {
            self.head = (self.head + overflow) % cap;
            self.len -= overflow;
        }
        let mut tail = (self.head + self.len) % cap;
        for s in samples {
            self.buf[tail] = *s;
            tail += 1;
            if tail == cap {
                tail = 0;
            }
        }
        self.len += samples.len();
    }

    /// Moves one frame into every other slot of `out` (`offset` 0 = left, 1 = right), if a whole
    /// frame is there; else leaves `out` (silence) alone.
    fn pop_frame(&mut self, out: &mut [i16; FRAME_LEN], offset: usize) {
        if self.len < FRAME_SAMPLES {
            return;
        }
        let cap = self.buf.len();
        for i in 0..FRAME_SAMPLES {
            out[2 * i + offset] = self.buf[self.head];
            self.head += 1;
            if self.head == cap {
                self.head = 0;
            }
        }
        self.len -= FRAME_SAMPLES;
    }
}

/// What [`RecorderTap::tick`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TapState {
    Running,
    /// The writer is gone (I/O error, size limit): drop the tap.
    WriterGone,
}

/// The relay task's side of a recording: sample rings and the queue to the writer.
#[derive(Debug)]
pub(crate) struct RecorderTap {
    pub id: RecordingId,
    tx: mpsc::Sender<WriterMsg>,
    paused: bool,
    rings: [SampleRing; 2],
    /// Silence frames not yet handed to the writer.
    gap: u32,
    /// Ticks run, and ticks skipped ([`Self::add_missed`]).
    frames: u64,
    missed: u64,
    created: std::time::Instant,
    counters: Arc<TapCounters>,
    /// The process-wide counters, once the relay task has taken the tap up.
    global: Option<Arc<crate::MediaStats>>,
}

impl Drop for RecorderTap {
    fn drop(&mut self) {
        if let Some(g) = self.global.take() {
            g.recordings_active.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl RecorderTap {
    /// Counts this recording in the process-wide `stats` (active recordings, dropped frames)
    /// until the tap is dropped.
    pub fn attach_stats(&mut self, stats: &Arc<crate::MediaStats>) {
        if self.global.is_none() {
            stats.recordings_active.fetch_add(1, Ordering::Relaxed);
            self.global = Some(Arc::clone(stats));
        }
    }

    /// Audio received from leg `leg_idx` (0 = A, 1 = B).
    #[inline]
    pub fn on_audio(&mut self, leg_idx: usize, law: Law, payload: &[u8]) {
        if !self.paused {
            self.rings[leg_idx].push_g711(law, payload);
        }
    }

    /// Decoded audio for both channels (a conference's mix: one mixed recording in the
    /// call recordings' format, the same on left and right).
    pub fn on_pcm_both(&mut self, samples: &[i16]) {
        if !self.paused {
            for r in &mut self.rings {
                r.push_pcm(samples);
            }
        }
    }

    pub fn set_paused(&mut self, paused: bool) {
        if self.paused != paused {
            tracing::debug!(id = %self.id, paused, "recording pause changed");
        }
        self.paused = paused;
        for r in &mut self.rings {
            r.clear();
        }
    }

    /// Ticks the relay's clock skipped (it fell behind): silence, to keep the timeline.
    pub fn add_missed(&mut self, frames: u32) {
        self.missed += frames as u64;
        self.gap = self.gap.saturating_add(frames);
    }

    /// One 20 ms tick of the frame clock.
    pub fn tick(&mut self) -> TapState {
        self.frames += 1;
        if self.paused {
            self.gap = self.gap.saturating_add(1);
            if self.gap >= GAP_FLUSH_FRAMES {
                return self.flush_gap();
            }
            return TapState::Running;
        }
        let mut frame = [0i16; FRAME_LEN];
        self.rings[0].pop_frame(&mut frame, 0);
        self.rings[1].pop_frame(&mut frame, 1);
        if self.flush_gap() == TapState::WriterGone {
            return TapState::WriterGone;
        }
        if self.gap > 0 {
            // Still queued up: this frame is lost too.
            self.count_drop();
            return TapState::Running;
        }
        match self.tx.try_send(WriterMsg::Frame(frame)) {
            Ok(()) => TapState::Running,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.count_drop();
                TapState::Running
            }
            Err(mpsc::error::TrySendError::Closed(_)) => TapState::WriterGone,
        }
    }

    fn count_drop(&mut self) {
        let n = self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        if let Some(g) = &self.global {
            g.recording_frames_dropped.fetch_add(1, Ordering::Relaxed);
        }
        if n == 0 {
            tracing::warn!(id = %self.id, "recording writer falls behind: frames dropped");
        }
        self.gap = self.gap.saturating_add(1);
    }

    /// Hands the accumulated silence to the writer if the queue has room.
    fn flush_gap(&mut self) -> TapState {
        if self.gap == 0 {
            return TapState::Running;
        }
        match self.tx.try_send(WriterMsg::Silence(self.gap)) {
            Ok(()) => {
                self.gap = 0;
                TapState::Running
            }
            Err(mpsc::error::TrySendError::Full(_)) => TapState::Running,
            Err(mpsc::error::TrySendError::Closed(_)) => TapState::WriterGone,
        }
    }

    /// Ends the recording: pending silence (a pause) is handed over if possible; dropping the
    /// sender lets the writer finish the file.
    pub fn finish(mut self) {
        // Ticks that were due but not run (the task was busy when the stop arrived, or the
        // control came late) become silence: the file covers the wall-clock span.
        let due = (self.created.elapsed().as_millis() / 20) as u64;
        let short = due.saturating_sub(self.frames + self.missed);
        if short > 1 {
            tracing::debug!(id = %self.id, short, "recording topped up with silence at the end");
            self.gap = self.gap.saturating_add(short as u32);
        }
        let _ = self.flush_gap();
        tracing::debug!(id = %self.id, frames = self.frames, "recording tap closed");
    }
}

/// The handle side of a running recording.
#[derive(Debug)]
pub(crate) struct Recording {
    pub id: RecordingId,
    pub path: PathBuf,
    pub done: oneshot::Receiver<Result<RecordingSummary, RecordError>>,
}

/// Creates the file (header with zero sizes) and starts the writer task. Must run in a tokio
/// runtime.
pub(crate) async fn start(
    id: RecordingId,
    path: PathBuf,
    opts: &RecordOptions,
) -> Result<(RecorderTap, Recording), RecordError> {
    let p = path.clone();
    let file = tokio::task::spawn_blocking(move || -> Result<File, RecordError> {
        if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        }
        let mut f = File::create_new(&p).map_err(io_err(&p))?;
        f.write_all(&wav::header(FORMAT, 0)).map_err(io_err(&p))?;
        Ok(f)
    })
    .await
    .map_err(|e| RecordError::Writer {
        path: path.clone(),
        reason: e.to_string(),
    })??;
    let (tx, rx) = mpsc::channel(opts.queue_frames.max(8));
    let (done_tx, done_rx) = oneshot::channel();
    let counters = Arc::new(TapCounters::default());
    let writer = Writer {
        id,
        path: path.clone(),
        file: Some(file),
        buf: Vec::with_capacity(flush_bytes(opts.header_interval) + FRAME_BYTES),
        data_len: 0,
        flush_at: flush_bytes(opts.header_interval),
        counters: Arc::clone(&counters),
    };
    tokio::spawn(writer.run(rx, opts.header_interval, done_tx));
    tracing::info!(%id, path = %path.display(), "recording started");
    Ok((
        RecorderTap {
            id,
            tx,
            paused: false,
            rings: [SampleRing::new(), SampleRing::new()],
            gap: 0,
            frames: 0,
            missed: 0,
            created: std::time::Instant::now(),
            counters,
            global: None,
        },
        Recording {
            id,
            path,
            done: done_rx,
        },
    ))
}

fn flush_bytes(interval: Duration) -> usize {
    let b = (BYTES_PER_SECOND as f64 * interval.as_secs_f64()) as usize;
    b.clamp(FRAME_BYTES, 1 << 22)
}

struct Writer {
    id: RecordingId,
    path: PathBuf,
    /// `None` only while a blocking write has it.
    file: Option<File>,
    buf: Vec<u8>,
    /// Data bytes in the file (not counting `buf`).
    data_len: u64,
    flush_at: usize,
    counters: Arc<TapCounters>,
}

impl Writer {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<WriterMsg>,
        interval: Duration,
        done: oneshot::Sender<Result<RecordingSummary, RecordError>>,
    ) {
        let mut timer = tokio::time::interval(interval.max(Duration::from_millis(20)));
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        timer.tick().await;
        let result = loop {
            let r = tokio::select! {
                m = rx.recv() => match m {
                    Some(WriterMsg::Frame(f)) => {
                        for s in f {
                            self.buf.extend_from_slice(&s.to_le_bytes());
                        }
                        self.maybe_flush().await
                    }
                    Some(WriterMsg::Silence(n)) => self.silence(n).await,
                    None => break self.finish().await,
                },
                _ = timer.tick() => self.flush(false).await,
            };
            match r {
                Ok(true) => {}
                // The size limit: close the file as it is.
                Ok(false) => {
                    tracing::warn!(id = %self.id, "recording reached the WAV size limit");
                    rx.close();
                    break self.finish().await;
                }
                Err(e) => {
                    tracing::error!(id = %self.id, error = %e, "recording write failed");
                    break Err(e);
                }
            }
        };
        let _ = done.send(result);
    }

    /// Room left under the WAV size limit (bytes of data).
    fn room(&self) -> u64 {
        MAX_DATA_BYTES.saturating_sub(self.data_len + self.buf.len() as u64)
    }

    async fn maybe_flush(&mut self) -> Result<bool, RecordError> {
        if self.room() == 0 {
            return Ok(false);
        }
        if self.buf.len() >= self.flush_at {
            self.flush(false).await?;
        }
        Ok(true)
    }

    async fn silence(&mut self, frames: u32) -> Result<bool, RecordError> {
        let mut left = frames as u64 * FRAME_BYTES as u64;
        while left > 0 {
            let room = self.room();
            if room == 0 {
                return Ok(false);
            }
            let n = left
                .min(room)
                .min((self.flush_at + FRAME_BYTES - self.buf.len().min(self.flush_at)) as u64);
            self.buf.resize(self.buf.len() + n as usize, 0);
            left -= n;
            if self.buf.len() >= self.flush_at {
                self.flush(false).await?;
            }
        }
        Ok(true)
    }

    /// Appends `buf` and rewrites the header sizes (and fsyncs when `sync`), off the runtime.
    async fn flush(&mut self, sync: bool) -> Result<bool, RecordError> {
        let room = MAX_DATA_BYTES.saturating_sub(self.data_len);
        if (self.buf.len() as u64) > room {
            self.buf.truncate(room as usize);
        }
        if self.buf.is_empty() && !sync {
            return Ok(true);
        }
        let Some(mut file) = self.file.take() else {
            return Err(RecordError::Writer {
                path: self.path.clone(),
                reason: "file lost after an earlier failure".into(),
            });
        };
        let mut buf = std::mem::take(&mut self.buf);
        let data_len = self.data_len + buf.len() as u64;
        let (file, buf, r) = tokio::task::spawn_blocking(move || {
            let r = write_and_patch(&mut file, &buf, data_len, sync);
            buf.clear();
            (file, buf, r)
        })
        .await
        .map_err(|e| RecordError::Writer {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        self.file = Some(file);
        self.buf = buf;
        r.map_err(io_err(&self.path))?;
        self.data_len = data_len;
        Ok(true)
    }

    async fn finish(mut self) -> Result<RecordingSummary, RecordError> {
        self.flush(true).await?;
        let dropped_frames = self.counters.dropped.load(Ordering::Relaxed);
        let summary = RecordingSummary {
            id: self.id,
            path: self.path.clone(),
            duration: Duration::from_micros(self.data_len * 1_000_000 / BYTES_PER_SECOND),
            bytes: WAV_HEADER_LEN + self.data_len,
            dropped_frames,
        };
        tracing::info!(
            id = %self.id,
            path = %self.path.display(),
            duration = ?summary.duration,
            dropped_frames,
            "recording finished"
        );
        Ok(summary)
    }
}

/// Appends `data` and sets the header's sizes to `data_len` (at most [`MAX_DATA_BYTES`]).
fn write_and_patch(file: &mut File, data: &[u8], data_len: u64, sync: bool) -> std::io::Result<()> {
    file.write_all(data)?;
    wav::patch_sizes(file, data_len as u32)?;
    if sync {
        file.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("hookflash-rec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        let _ = std::fs::remove_file(&p);
        p
    }

    #[test]
    fn ring_frames_and_overflow() {
        let mut r = SampleRing::new();
        let mut out = [0i16; FRAME_LEN];
        r.push_g711(Law::Mulaw, &[0x80; 100]);
        r.pop_frame(&mut out, 0);
        assert!(out.iter().all(|s| *s == 0), "partial frame stays");
        r.push_g711(Law::Mulaw, &[0x80; 100]);
        r.pop_frame(&mut out, 1);
        assert!(out.iter().step_by(2).all(|s| *s == 0));
        assert!(out.iter().skip(1).step_by(2).all(|s| *s == 32124));
        assert_eq!(r.len, 40);
        // Overflow keeps the newest samples.
        r.push_g711(Law::Mulaw, &vec![0xFF; RING_SAMPLES]);
        assert_eq!(r.len, RING_SAMPLES);
        let mut out = [1i16; FRAME_LEN];
        r.pop_frame(&mut out, 0);
        assert_eq!(out[0], 0);
        r.push_g711(Law::Alaw, &vec![0xD5; 3 * RING_SAMPLES]);
        assert_eq!(r.len, RING_SAMPLES);
    }

    #[tokio::test]
    async fn writer_writes_incrementally_and_finishes() {
        let p = tmp("writer.wav");
        let opts = RecordOptions {
            queue_frames: 100,
            header_interval: Duration::from_millis(100),
        };
        let (mut tap, rec) = start(RecordingId(1), p.clone(), &opts).await.unwrap();
        // Creating over an existing file is refused.
        assert!(matches!(
            start(RecordingId(2), p.clone(), &opts).await,
            Err(RecordError::Io { .. })
        ));
        for _ in 0..10 {
            tap.on_audio(0, Law::Mulaw, &[0x80; 160]);
            tap.on_audio(1, Law::Mulaw, &[0x00; 160]);
            assert_eq!(tap.tick(), TapState::Running);
        }
        tap.set_paused(true);
        tap.on_audio(0, Law::Mulaw, &[0x80; 160]);
        for _ in 0..5 {
            tap.tick();
        }
        tap.set_paused(false);
        // While it runs, the header follows the data (within an interval).
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mid = wav::repair_wav(&p).unwrap();
        assert!(!mid.changed, "header already up to date: {mid:?}");
        assert_eq!(mid.data_bytes, 10 * FRAME_BYTES as u64);
        tap.tick();
        // Manual ticks, not wall-clock ones: no top-up at the end.
        tap.created = std::time::Instant::now();
        tap.finish();
        let summary = rec.done.await.unwrap().unwrap();
        assert_eq!(summary.duration, Duration::from_millis(16 * 20));
        assert_eq!(summary.bytes, 44 + 16 * FRAME_BYTES as u64);
        assert_eq!(summary.dropped_frames, 0);
        let r = hound::WavReader::open(&p).unwrap();
        let s: Vec<i16> = r.into_samples().map(|s| s.unwrap()).collect();
        assert_eq!(s.len(), 16 * FRAME_LEN);
        assert!(s[..10 * FRAME_LEN].chunks(2).all(|c| c == [32124, -32124]));
        assert!(
            s[10 * FRAME_LEN..].iter().all(|v| *v == 0),
            "pause = silence"
        );
        std::fs::remove_file(&p).unwrap();
    }

    #[tokio::test]
    async fn finish_tops_up_to_the_wall_clock() {
        let p = tmp("topped.wav");
        let (mut tap, rec) = start(RecordingId(1), p.clone(), &RecordOptions::default())
            .await
            .unwrap();
        tap.tick();
        tap.add_missed(4);
        // 300 ms pass, but only 1 tick ran and 4 were skipped: 10 more frames are due.
        tap.created -= Duration::from_millis(300);
        tap.finish();
        let s = rec.done.await.unwrap().unwrap();
        assert_eq!(s.duration, Duration::from_millis(300));
        std::fs::remove_file(&p).unwrap();
    }

    #[tokio::test]
    async fn full_queue_counts_drops_and_keeps_the_timeline() {
        let p = tmp("slow.wav");
        let opts = RecordOptions {
            queue_frames: 8,
            header_interval: Duration::from_secs(1),
        };
        let (mut tap, rec) = start(RecordingId(1), p.clone(), &opts).await.unwrap();
        let global = Arc::new(crate::MediaStats::default());
        tap.attach_stats(&global);
        tap.attach_stats(&global); // idempotent
        assert_eq!(global.recordings_active.load(Ordering::Relaxed), 1);
        // On a current-thread runtime the writer cannot run while we tick: the queue fills.
        for _ in 0..20 {
            tap.on_audio(0, Law::Mulaw, &[0x80; 160]);
            tap.tick();
        }
        assert_eq!(tap.counters.dropped.load(Ordering::Relaxed), 12);
        assert_eq!(global.recording_frames_dropped.load(Ordering::Relaxed), 12);
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        tap.tick();
        tap.created = std::time::Instant::now();
        tap.finish();
        assert_eq!(global.recordings_active.load(Ordering::Relaxed), 0);
        let s = rec.done.await.unwrap().unwrap();
        assert_eq!(s.dropped_frames, 12);
        assert_eq!(
            s.duration,
            Duration::from_millis(21 * 20),
            "drops become silence"
        );
        std::fs::remove_file(&p).unwrap();
    }
}
