//! Text-to-speech with espeak-ng, run as a **subprocess** (espeak-ng is GPL-3: it is never
//! linked), with a two-level cache.
//!
//! [`Tts::synthesize`]:
//! 1. validates the request: voice name `[A-Za-z0-9_+-]{1,32}` (e.g. `en`, `en-us`, `de`,
//!    `en+f3`), text non-empty, no NUL, at most [`TtsOptions::max_text_chars`] characters;
//! 2. looks up the key `sha256(voice + "\n" + text)` in a small in-memory LRU, then on disk
//!    (`<cache_dir>/<key>.wav`, 8 kHz mono 16-bit, read back bit-exact; a corrupt entry is
//!    removed and synthesised again): a hit never spawns espeak-ng;
//! 3. otherwise runs `espeak-ng -v <voice> -w <tmp.wav> -- <text>` (`tokio::process`, at most
//!    [`TtsOptions::max_concurrent`] at once, killed after [`TtsOptions::timeout`]), loads its
//!    22,050 Hz output with [`load_wav`] (resampled to 8 kHz), and stores the result on disk
//!    (written to a temporary file and renamed, so readers never see half a file) and in memory.
//!
//! The text is passed as one argument after `--`, so it can never be taken for an option; SSML
//! is off (espeak-ng needs `-m` for it).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::audio::{load_wav, Pcm8k, SAMPLE_RATE};
use crate::MediaError;

/// Why speech could not be synthesised.
#[derive(Debug, thiserror::Error)]
pub enum TtsError {
    #[error(
        "text-to-speech needs espeak-ng, but {program} was not found \
         (install the espeak-ng package or set the TTS program path)"
    )]
    NotInstalled { program: PathBuf },
    #[error("invalid TTS voice {0:?} (expected 1-32 characters of A-Z a-z 0-9 _ + -, not starting with -)")]
    InvalidVoice(String),
    #[error("TTS text is empty")]
    EmptyText,
    #[error("TTS text contains a NUL character")]
    InvalidText,
    #[error("TTS text has {len} characters, more than the limit of {limit}")]
    TextTooLong { len: usize, limit: usize },
    #[error("espeak-ng did not finish within {0:?}")]
    Timeout(Duration),
    /// espeak-ng ran and failed (an unknown voice ends up here: "voice does not exist").
    #[error("espeak-ng failed ({status}): {stderr}")]
    Failed { status: String, stderr: String },
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("TTS cache {path}: {source}")]
    Cache {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Settings of [`Tts`].
#[derive(Debug, Clone)]
pub struct TtsOptions {
    /// The espeak-ng binary (looked up in `PATH` when it has no `/`).
    pub program: PathBuf,
    /// Voice used when the caller gives none.
    pub default_voice: String,
    /// espeak-ng is killed after this long.
    pub timeout: Duration,
    /// Longest text accepted, in characters.
    pub max_text_chars: usize,
    /// Clips kept in memory (least recently used go first) ...
    pub memory_entries: usize,
    /// ... and at most this many samples in all (default 10 minutes of audio, ~9.6 MB).
    pub memory_max_samples: usize,
    /// espeak-ng processes running at the same time.
    pub max_concurrent: usize,
}

impl Default for TtsOptions {
    fn default() -> Self {
        TtsOptions {
            program: PathBuf::from("espeak-ng"),
            default_voice: "en".to_string(),
            timeout: Duration::from_secs(20),
            max_text_chars: 2000,
            memory_entries: 32,
            memory_max_samples: 600 * SAMPLE_RATE as usize,
            max_concurrent: 4,
        }
    }
}

/// Counters of a [`Tts`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TtsStats {
    /// espeak-ng runs (cache misses).
    pub synthesized: u64,
    pub memory_hits: u64,
    pub disk_hits: u64,
}

/// Validates a voice name: `[A-Za-z0-9_+-]{1,32}`, and not starting with `-` (it would look
/// like an option to espeak-ng).
pub fn valid_voice(voice: &str) -> bool {
    (1..=32).contains(&voice.len())
        && !voice.starts_with('-')
        && voice
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'-'))
}

/// The cache key of `text` in `voice`: hex sha256 of `voice`, a newline, and `text`.
pub fn cache_key(voice: &str, text: &str) -> String {
    let mut h = Sha256::new();
    h.update(voice.as_bytes());
    h.update(b"\n");
    h.update(text.as_bytes());
    hex::encode(h.finalize())
}

#[derive(Default)]
struct Lru {
    entries: VecDeque<(String, Pcm8k)>,
    samples: usize,
}

/// espeak-ng text-to-speech with caches; see the module doc. Share it (`Arc`) across calls.
pub struct Tts {
    dir: PathBuf,
    opts: TtsOptions,
    memory: Mutex<Lru>,
    running: Semaphore,
    synthesized: AtomicU64,
    memory_hits: AtomicU64,
    disk_hits: AtomicU64,
}

impl std::fmt::Debug for Tts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tts")
            .field("dir", &self.dir)
            .field("program", &self.opts.program)
            .field("stats", &self.stats())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Removes a temporary file when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Tts {
    /// A TTS with default options caching under `cache_dir` (created on first use).
    pub fn new(cache_dir: impl Into<PathBuf>) -> Tts {
        Tts::with_options(cache_dir, TtsOptions::default())
    }

    pub fn with_options(cache_dir: impl Into<PathBuf>, opts: TtsOptions) -> Tts {
        Tts {
            dir: cache_dir.into(),
            running: Semaphore::new(opts.max_concurrent.max(1)),
            opts,
            memory: Mutex::new(Lru::default()),
            synthesized: AtomicU64::new(0),
            memory_hits: AtomicU64::new(0),
            disk_hits: AtomicU64::new(0),
        }
    }

    pub fn cache_dir(&self) -> &Path {
        &self.dir
    }

    pub fn stats(&self) -> TtsStats {
        TtsStats {
            synthesized: self.synthesized.load(Ordering::Relaxed),
            memory_hits: self.memory_hits.load(Ordering::Relaxed),
            disk_hits: self.disk_hits.load(Ordering::Relaxed),
        }
    }

    /// Speech for `text` in `voice` (default [`TtsOptions::default_voice`]) as 8 kHz PCM.
    /// Errors: [`MediaError::Tts`] (invalid input, espeak-ng missing/failing/too slow),
    /// [`MediaError::Audio`] (espeak-ng wrote something that is not a usable WAV).
    pub async fn synthesize(&self, text: &str, voice: Option<&str>) -> Result<Pcm8k, MediaError> {
        let voice = voice.unwrap_or(&self.opts.default_voice);
        if !valid_voice(voice) {
            return Err(TtsError::InvalidVoice(voice.chars().take(64).collect()).into());
        }
        if text.trim().is_empty() {
            return Err(TtsError::EmptyText.into());
        }
        if text.contains('\0') {
            return Err(TtsError::InvalidText.into());
        }
        let len = text.chars().count();
        if len > self.opts.max_text_chars {
            return Err(TtsError::TextTooLong {
                len,
                limit: self.opts.max_text_chars,
            }
            .into());
        }
        let key = cache_key(voice, text);
        if let Some(pcm) = self.memory_get(&key) {
            self.memory_hits.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%key, "tts memory cache hit");
            return Ok(pcm);
        }
        let path = self.dir.join(format!("{key}.wav"));
        if let Some(pcm) = self.disk_get(&path).await {
            self.disk_hits.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%key, "tts disk cache hit");
            self.memory_put(&key, &pcm);
            return Ok(pcm);
        }
        let pcm = self.run_espeak(&key, voice, text).await?;
        if let Err(e) = self.disk_put(&key, &path, &pcm).await {
            tracing::warn!(error = %e, "tts result not cached on disk");
        }
        self.memory_put(&key, &pcm);
        Ok(pcm)
    }

    fn memory_get(&self, key: &str) -> Option<Pcm8k> {
        let mut m = lock(&self.memory);
        let i = m.entries.iter().position(|(k, _)| k == key)?;
        let e = m.entries.remove(i)?;
        let pcm = e.1.clone();
        m.entries.push_front(e);
        Some(pcm)
    }

    fn memory_put(&self, key: &str, pcm: &Pcm8k) {
        if self.opts.memory_entries == 0 || pcm.len() > self.opts.memory_max_samples {
            return;
        }
        let mut m = lock(&self.memory);
        if let Some(i) = m.entries.iter().position(|(k, _)| k == key) {
            if let Some((_, old)) = m.entries.remove(i) {
                m.samples -= old.len();
            }
        }
        m.samples += pcm.len();
        m.entries.push_front((key.to_string(), pcm.clone()));
        while m.entries.len() > self.opts.memory_entries || m.samples > self.opts.memory_max_samples
        {
            match m.entries.pop_back() {
                Some((_, old)) => m.samples -= old.len(),
                None => break,
            }
        }
    }

    async fn disk_get(&self, path: &Path) -> Option<Pcm8k> {
        let bytes = tokio::fs::read(path).await.ok()?;
        match read_cache_wav(&bytes) {
            Ok(pcm) => Some(pcm),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "corrupt TTS cache entry removed");
                let _ = tokio::fs::remove_file(path).await;
                None
            }
        }
    }

    async fn disk_put(&self, key: &str, path: &Path, pcm: &Pcm8k) -> Result<(), TtsError> {
        let cache_err = |source| TtsError::Cache {
            path: path.to_path_buf(),
            source,
        };
        let bytes = encode_wav(pcm).map_err(cache_err)?;
        let tmp = TempFile(
            self.dir
                .join(format!(".{key}.{:08x}.part", rand::random::<u32>())),
        );
        tokio::fs::write(&tmp.0, &bytes).await.map_err(cache_err)?;
        tokio::fs::rename(&tmp.0, path).await.map_err(cache_err)?;
        Ok(())
    }

    async fn run_espeak(&self, key: &str, voice: &str, text: &str) -> Result<Pcm8k, MediaError> {
        // The semaphore is never closed; a closed one would just not limit.
        let _permit = self.running.acquire().await.ok();
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|source| TtsError::Cache {
                path: self.dir.clone(),
                source,
            })?;
        let out = TempFile(
            self.dir
                .join(format!(".{key}.{:08x}.espeak.wav", rand::random::<u32>())),
        );
        let program = &self.opts.program;
        let child = tokio::process::Command::new(program)
            .arg("-v")
            .arg(voice)
            .arg("-w")
            .arg(&out.0)
            .arg("--")
            .arg(text)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::NotFound => TtsError::NotInstalled {
                    program: program.clone(),
                },
                _ => TtsError::Spawn {
                    program: program.clone(),
                    source,
                },
            })?;
        self.synthesized.fetch_add(1, Ordering::Relaxed);
        let started = std::time::Instant::now();
        // On timeout the future (and with it the child) is dropped: kill_on_drop kills it.
        let output = tokio::time::timeout(self.opts.timeout, child.wait_with_output())
            .await
            .map_err(|_| TtsError::Timeout(self.opts.timeout))?
            .map_err(|source| TtsError::Spawn {
                program: program.clone(),
                source,
            })?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(TtsError::Failed {
                status: output.status.to_string(),
                stderr: stderr.trim().chars().take(500).collect(),
            }
            .into());
        }
        let bytes = tokio::fs::read(&out.0)
            .await
            .map_err(|source| TtsError::Failed {
                status: output.status.to_string(),
                stderr: format!("no output file: {source}"),
            })?;
        let pcm = decode(bytes).await?;
        tracing::debug!(
            voice,
            chars = text.chars().count(),
            duration = ?pcm.duration(),
            took = ?started.elapsed(),
            "tts synthesized"
        );
        Ok(pcm)
    }
}

/// [`load_wav`] off the runtime (resampling is CPU work).
async fn decode(bytes: Vec<u8>) -> Result<Pcm8k, MediaError> {
    tokio::task::spawn_blocking(move || load_wav(&bytes))
        .await
        .unwrap_or_else(|e| {
            Err(MediaError::Audio(crate::AudioError::Corrupt(format!(
                "decoder task failed: {e}"
            ))))
        })
}

/// Reads a cache entry written by [`encode_wav`] (exactly, without any conversion).
fn read_cache_wav(bytes: &[u8]) -> Result<Pcm8k, String> {
    let r = hound::WavReader::new(std::io::Cursor::new(bytes)).map_err(|e| e.to_string())?;
    let spec = r.spec();
    if spec.channels != 1
        || spec.sample_rate != SAMPLE_RATE
        || spec.bits_per_sample != 16
        || spec.sample_format != hound::SampleFormat::Int
    {
        return Err(format!("unexpected format {spec:?}"));
    }
    let samples = r
        .into_samples::<i16>()
        .collect::<Result<Vec<i16>, _>>()
        .map_err(|e| e.to_string())?;
    if samples.is_empty() {
        return Err("no samples".into());
    }
    Ok(Pcm8k::new(samples))
}

/// 8 kHz mono 16-bit WAV bytes of `pcm`.
fn encode_wav(pcm: &Pcm8k) -> std::io::Result<Vec<u8>> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: SAMPLE_RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut cur = std::io::Cursor::new(Vec::with_capacity(44 + pcm.len() * 2));
    let to_io = |e: hound::Error| std::io::Error::other(e.to_string());
    let mut w = hound::WavWriter::new(&mut cur, spec).map_err(to_io)?;
    for s in pcm.samples() {
        w.write_sample(*s).map_err(to_io)?;
    }
    w.finalize().map_err(to_io)?;
    Ok(cur.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("hookflash-tts-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn tts_err(r: Result<Pcm8k, MediaError>) -> TtsError {
        match r {
            Err(MediaError::Tts(e)) => e,
            other => panic!("expected a TTS error, got {other:?}"),
        }
    }

    #[test]
    fn voices_and_keys() {
        for ok in ["en", "en-us", "de", "en+f3", "mb_x", &"a".repeat(32)] {
            assert!(valid_voice(ok), "{ok}");
        }
        for bad in ["", "en us", "../x", "en;rm", "é", &"a".repeat(33), "-v"] {
            assert!(!valid_voice(bad), "{bad}");
        }
        assert_eq!(cache_key("en", "hi"), cache_key("en", "hi"));
        assert_ne!(cache_key("en", "hi"), cache_key("de", "hi"));
        assert_ne!(cache_key("e", "nhi"), cache_key("en", "hi"));
        assert_eq!(cache_key("en", "hi").len(), 64);
    }

    #[tokio::test]
    async fn rejects_bad_input_without_running_anything() {
        let tts = Tts::new(dir("input"));
        assert!(matches!(
            tts_err(tts.synthesize("hello", Some("en us")).await),
            TtsError::InvalidVoice(_)
        ));
        assert!(matches!(
            tts_err(tts.synthesize("  ", None).await),
            TtsError::EmptyText
        ));
        assert!(matches!(
            tts_err(tts.synthesize("a\0b", None).await),
            TtsError::InvalidText
        ));
        assert!(matches!(
            tts_err(tts.synthesize(&"a".repeat(2001), None).await),
            TtsError::TextTooLong { len: 2001, .. }
        ));
        assert_eq!(tts.stats(), TtsStats::default());
    }

    #[tokio::test]
    async fn missing_program_is_a_clear_error() {
        let tts = Tts::with_options(
            dir("missing"),
            TtsOptions {
                program: PathBuf::from("/nonexistent/espeak-ng"),
                ..Default::default()
            },
        );
        let e = tts_err(tts.synthesize("hello", None).await);
        assert!(matches!(e, TtsError::NotInstalled { .. }), "{e}");
        assert!(e.to_string().contains("espeak-ng"));
    }

    fn rms(s: &[i16]) -> f64 {
        (s.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / s.len().max(1) as f64).sqrt()
    }

    /// Needs espeak-ng (installed here and by scripts/test.sh in CI).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn synthesizes_and_caches() {
        let d = dir("speak");
        let tts = Tts::new(&d);
        let text = "This call is being recorded.";
        let t0 = std::time::Instant::now();
        let pcm = tts.synthesize(text, Some("en")).await.unwrap();
        let first = t0.elapsed();
        // About 1.5-2.5 s of speech at espeak-ng's default rate.
        let dur = pcm.duration();
        assert!(
            dur > Duration::from_millis(800) && dur < Duration::from_secs(5),
            "{dur:?}"
        );
        assert!(
            rms(pcm.samples()) > 300.0,
            "audible: {}",
            rms(pcm.samples())
        );
        assert_eq!(tts.stats().synthesized, 1);

        // Memory hit: no process, same samples.
        let t1 = std::time::Instant::now();
        let again = tts.synthesize(text, None).await.unwrap();
        let hit = t1.elapsed();
        assert_eq!(again, pcm);
        assert_eq!(
            tts.stats(),
            TtsStats {
                synthesized: 1,
                memory_hits: 1,
                disk_hits: 0
            }
        );
        tracing::info!(?first, ?hit, "tts latency");

        // A new instance on the same directory: a disk hit.
        let tts2 = Tts::new(&d);
        let from_disk = tts2.synthesize(text, Some("en")).await.unwrap();
        assert_eq!(from_disk, pcm);
        assert_eq!(tts2.stats().disk_hits, 1);
        assert_eq!(tts2.stats().synthesized, 0);
        let files: Vec<_> = std::fs::read_dir(&d).unwrap().flatten().collect();
        assert_eq!(files.len(), 1, "only the cache entry, no temporary files");
        assert_eq!(
            files[0].file_name().to_string_lossy(),
            format!("{}.wav", cache_key("en", text))
        );

        // Another voice is another entry; an unknown voice is an error from espeak-ng.
        let de = tts.synthesize(text, Some("de")).await.unwrap();
        assert_ne!(de, pcm);
        assert_eq!(tts.stats().synthesized, 2);
        let e = tts_err(tts.synthesize(text, Some("xx-nonexistent")).await);
        assert!(matches!(e, TtsError::Failed { .. }), "{e}");
        // Text that looks like an option is spoken, not parsed.
        let dash = tts.synthesize("-w /tmp/evil.wav", None).await.unwrap();
        assert!(rms(dash.samples()) > 300.0);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn lru_evicts_least_recently_used() {
        let tts = Tts::with_options(
            dir("lru"),
            TtsOptions {
                memory_entries: 2,
                memory_max_samples: 1000,
                ..Default::default()
            },
        );
        let clip = |n| Pcm8k::new(vec![1; n]);
        tts.memory_put("a", &clip(100));
        tts.memory_put("b", &clip(100));
        assert!(tts.memory_get("a").is_some());
        tts.memory_put("c", &clip(100));
        assert!(tts.memory_get("b").is_none(), "b was least recently used");
        assert!(tts.memory_get("a").is_some() && tts.memory_get("c").is_some());
        // The sample budget evicts too; a clip over the budget is not kept.
        tts.memory_put("d", &clip(901));
        assert!(tts.memory_get("d").is_some());
        assert_eq!(lock(&tts.memory).entries.len(), 1);
        tts.memory_put("e", &clip(2000));
        assert!(tts.memory_get("e").is_none());
    }
}
