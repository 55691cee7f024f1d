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
//!
//! Both caches are bounded in bytes, so clients asking for many distinct texts cannot fill
//! memory or the disk: the memory LRU by [`TtsOptions::memory_cache_bytes`] (and
//! [`TtsOptions::memory_entries`]), the directory by [`TtsOptions::disk_cache_bytes`]. When a
//! new file takes the directory over its cap, the least recently used entries are deleted;
//! recency is the file's mtime, which a disk hit updates. The sizes and order of the files are
//! kept in an index built by scanning the directory once, at first use; only files named
//! `<64 hex digits>.wav` directly in the directory are ever counted or deleted.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

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

/// Default of [`TtsOptions::memory_cache_bytes`]: 16 MiB.
pub const DEFAULT_MEMORY_CACHE_BYTES: usize = 16 * 1024 * 1024;
/// Default of [`TtsOptions::disk_cache_bytes`]: 256 MiB.
pub const DEFAULT_DISK_CACHE_BYTES: u64 = 256 * 1024 * 1024;

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
    /// ... and at most this many bytes of them in all (samples and keys; default 16 MiB,
    /// about 17 minutes of audio). A larger clip is not kept in memory.
    pub memory_cache_bytes: usize,
    /// Bytes of WAV files kept in the cache directory (default 256 MiB, about 4.6 hours of
    /// audio); 0 disables the disk cache.
    pub disk_cache_bytes: u64,
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
            memory_cache_bytes: DEFAULT_MEMORY_CACHE_BYTES,
            disk_cache_bytes: DEFAULT_DISK_CACHE_BYTES,
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
    /// Bytes in the memory cache now.
    pub memory_bytes: u64,
    /// Clips dropped from memory to make room.
    pub memory_evictions: u64,
    /// Bytes of cache files in the directory (known from the first disk use on).
    pub disk_bytes: u64,
    /// Cache files deleted to make room.
    pub disk_evictions: u64,
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

/// The memory cache: most recently used first.
#[derive(Default)]
struct Lru {
    entries: VecDeque<(String, Pcm8k)>,
    /// Sum of [`memory_cost`] of the entries.
    bytes: usize,
    evictions: u64,
}

fn memory_cost(key: &str, pcm: &Pcm8k) -> usize {
    pcm.len() * std::mem::size_of::<i16>() + key.len()
}

/// Whether `name` is a cache entry's file name: 64 lowercase hex digits and `.wav`. Temporary
/// files (`.<key>.<n>.part`, `.<key>.<n>.espeak.wav`) and anything else are not.
fn is_cache_file_name(name: &str) -> bool {
    name.strip_suffix(".wav").is_some_and(|stem| {
        stem.len() == 64 && stem.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// A cache file in the [`DiskIndex`].
struct DiskFile {
    size: u64,
    /// Recency stamp, the key of this file in [`DiskIndex::order`].
    used: u64,
}

/// Sizes and use order of the cache files in the directory, built by one scan at first use
/// (ordered by mtime then) and kept up to date by this process's writes, hits and deletions.
/// Files other processes add later are not counted until the next start.
struct DiskIndex {
    dir: PathBuf,
    cap: u64,
    scanned: bool,
    /// Directory scans done (one, unless a scan failed).
    scans: u32,
    /// File name → size and recency.
    files: HashMap<String, DiskFile>,
    /// Recency stamp → file name; the first is the least recently used.
    order: BTreeMap<u64, String>,
    next_stamp: u64,
    bytes: u64,
    evictions: u64,
}

impl DiskIndex {
    fn new(dir: PathBuf, cap: u64) -> DiskIndex {
        DiskIndex {
            dir,
            cap,
            scanned: false,
            scans: 0,
            files: HashMap::new(),
            order: BTreeMap::new(),
            next_stamp: 0,
            bytes: 0,
            evictions: 0,
        }
    }

    fn stamp(&mut self) -> u64 {
        self.next_stamp += 1;
        self.next_stamp
    }

    /// Records `name` (`size` bytes) as the most recently used file. Only cache file names
    /// enter the index, so eviction can only ever delete those, inside the directory.
    fn put(&mut self, name: &str, size: u64) {
        if !is_cache_file_name(name) {
            tracing::warn!(name, "not a TTS cache file name; not indexed");
            return;
        }
        self.forget(name);
        let used = self.stamp();
        self.order.insert(used, name.to_string());
        self.files.insert(name.to_string(), DiskFile { size, used });
        self.bytes += size;
    }

    /// Drops `name` from the index (the file is gone or about to be).
    fn forget(&mut self, name: &str) {
        if let Some(f) = self.files.remove(name) {
            self.order.remove(&f.used);
            self.bytes -= f.size;
        }
    }

    /// Scans the directory once (a missing directory is an empty cache). On error the index
    /// stays as it is and the next use tries again.
    fn ensure_scanned(&mut self) {
        if self.scanned {
            return;
        }
        match self.scan() {
            Ok(()) => self.scanned = true,
            Err(e) => tracing::warn!(error = %e, "TTS cache directory not scanned"),
        }
    }

    fn scan(&mut self) -> Result<(), TtsError> {
        let dir_err = |source| TtsError::Cache {
            path: self.dir.clone(),
            source,
        };
        self.scans += 1;
        let read = match std::fs::read_dir(&self.dir) {
            Ok(read) => read,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(dir_err(e)),
        };
        let mut found = Vec::new();
        for entry in read {
            let entry = entry.map_err(dir_err)?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if !is_cache_file_name(&name) {
                continue;
            }
            // Not following symbolic links: only regular files count.
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            found.push((mtime, name, meta.len()));
        }
        found.sort();
        // Files seen by the scan are older than those this process used already (only if an
        // earlier scan failed): they go first, oldest mtime first.
        let known: Vec<String> = std::mem::take(&mut self.order).into_values().collect();
        self.next_stamp = 0;
        for (_, name, size) in found {
            if !self.files.contains_key(&name) {
                self.put(&name, size);
            }
        }
        for name in known {
            let stamp = self.stamp();
            if let Some(f) = self.files.get_mut(&name) {
                f.used = stamp;
                self.order.insert(stamp, name);
            }
        }
        tracing::debug!(
            dir = %self.dir.display(),
            files = self.files.len(),
            bytes = self.bytes,
            "TTS disk cache scanned"
        );
        Ok(())
    }

    /// A cache file was (re)written: counts it as the most recently used, then deletes the
    /// least recently used files while the directory is over its cap.
    fn written(&mut self, name: &str, size: u64) {
        self.ensure_scanned();
        self.put(name, size);
        self.evict();
    }

    /// A cache file was read: marks it as the most recently used, in the index and in its
    /// mtime (the recency a later scan sees).
    fn hit(&mut self, name: &str, size: u64) {
        self.ensure_scanned();
        let path = self.dir.join(name);
        if let Err(e) = std::fs::File::open(&path).and_then(|f| f.set_modified(SystemTime::now())) {
            tracing::debug!(path = %path.display(), error = %e, "TTS cache entry not touched");
        }
        self.put(name, size);
        self.evict();
    }

    /// Deletes least recently used files until the total is within the cap.
    fn evict(&mut self) {
        while self.bytes > self.cap {
            let Some((_, name)) = self.order.pop_first() else {
                break;
            };
            let Some(f) = self.files.remove(&name) else {
                continue;
            };
            self.bytes -= f.size;
            self.evictions += 1;
            // `name` is a bare `<hex>.wav` (checked when it entered the index, in `put`):
            // always a file directly inside the cache directory.
            let path = self.dir.join(&name);
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    tracing::debug!(path = %path.display(), bytes = f.size, "TTS cache entry evicted")
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(
                    path = %path.display(),
                    error = %e,
                    "TTS cache entry could not be deleted; no longer counted"
                ),
            }
        }
    }
}

/// espeak-ng text-to-speech with caches; see the module doc. Share it (`Arc`) across calls.
pub struct Tts {
    dir: PathBuf,
    opts: TtsOptions,
    memory: Mutex<Lru>,
    /// Shared with the blocking tasks that touch the directory.
    disk: Arc<Mutex<DiskIndex>>,
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
        let dir = cache_dir.into();
        Tts {
            disk: Arc::new(Mutex::new(DiskIndex::new(
                dir.clone(),
                opts.disk_cache_bytes,
            ))),
            dir,
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
        let (memory_bytes, memory_evictions) = {
            let m = lock(&self.memory);
            (m.bytes as u64, m.evictions)
        };
        let (disk_bytes, disk_evictions) = {
            let d = lock(&self.disk);
            (d.bytes, d.evictions)
        };
        TtsStats {
            synthesized: self.synthesized.load(Ordering::Relaxed),
            memory_hits: self.memory_hits.load(Ordering::Relaxed),
            disk_hits: self.disk_hits.load(Ordering::Relaxed),
            memory_bytes,
            memory_evictions,
            disk_bytes,
            disk_evictions,
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
        let name = format!("{key}.wav");
        let path = self.dir.join(&name);
        if let Some((pcm, size)) = self.disk_get(&name, &path).await {
            self.disk_hits.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%key, "tts disk cache hit");
            self.with_disk(move |d| d.hit(&name, size)).await;
            self.memory_put(&key, &pcm);
            return Ok(pcm);
        }
        let pcm = self.run_espeak(&key, voice, text).await?;
        match self.disk_put(&key, &path, &pcm).await {
            Ok(Some(size)) => self.with_disk(move |d| d.written(&name, size)).await,
            Ok(None) => tracing::debug!(%key, "tts result larger than the disk cache"),
            Err(e) => tracing::warn!(error = %e, "tts result not cached on disk"),
        }
        self.memory_put(&key, &pcm);
        Ok(pcm)
    }

    /// Runs `f` on the disk index in a blocking task (it deletes, touches and scans files).
    async fn with_disk(&self, f: impl FnOnce(&mut DiskIndex) + Send + 'static) {
        let disk = self.disk.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || f(&mut lock(&disk))).await {
            tracing::warn!(error = %e, "TTS disk cache bookkeeping failed");
        }
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
        let cost = memory_cost(key, pcm);
        let mut m = lock(&self.memory);
        if let Some(i) = m.entries.iter().position(|(k, _)| k == key) {
            if let Some((k, old)) = m.entries.remove(i) {
                m.bytes -= memory_cost(&k, &old);
            }
        }
        if self.opts.memory_entries == 0 || cost > self.opts.memory_cache_bytes {
            return;
        }
        m.bytes += cost;
        m.entries.push_front((key.to_string(), pcm.clone()));
        while m.entries.len() > self.opts.memory_entries || m.bytes > self.opts.memory_cache_bytes {
            match m.entries.pop_back() {
                Some((k, old)) => {
                    m.bytes -= memory_cost(&k, &old);
                    m.evictions += 1;
                }
                None => break,
            }
        }
    }

    /// The cache file `name` at `path` and its size, if it is there and sound. A corrupt one
    /// is deleted.
    async fn disk_get(&self, name: &str, path: &Path) -> Option<(Pcm8k, u64)> {
        let bytes = tokio::fs::read(path).await.ok()?;
        match read_cache_wav(&bytes) {
            Ok(pcm) => Some((pcm, bytes.len() as u64)),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "corrupt TTS cache entry removed");
                let _ = tokio::fs::remove_file(path).await;
                let name = name.to_string();
                self.with_disk(move |d| d.forget(&name)).await;
                None
            }
        }
    }

    /// Writes the cache file for `pcm`; its size, or `None` when it is larger than the whole
    /// disk cache (and not written).
    async fn disk_put(&self, key: &str, path: &Path, pcm: &Pcm8k) -> Result<Option<u64>, TtsError> {
        let cache_err = |source| TtsError::Cache {
            path: path.to_path_buf(),
            source,
        };
        let bytes = encode_wav(pcm).map_err(cache_err)?;
        let size = bytes.len() as u64;
        if size > self.opts.disk_cache_bytes {
            return Ok(None);
        }
        let tmp = TempFile(
            self.dir
                .join(format!(".{key}.{:08x}.part", rand::random::<u32>())),
        );
        tokio::fs::write(&tmp.0, &bytes).await.map_err(cache_err)?;
        tokio::fs::rename(&tmp.0, path).await.map_err(cache_err)?;
        Ok(Some(size))
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
    crate::wav::encode_pcm16(crate::wav::Pcm16Spec::MONO_8K, pcm.samples())
        .map_err(std::io::Error::other)
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
        let stats = tts.stats();
        assert_eq!(
            (stats.synthesized, stats.memory_hits, stats.disk_hits),
            (1, 1, 0)
        );
        assert_eq!(stats.memory_bytes as usize, memory_cost("k", &pcm) + 63);
        assert_eq!(stats.disk_bytes, 44 + 2 * pcm.len() as u64);
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
    fn memory_lru_is_capped_in_bytes() {
        let cost = memory_cost("a", &Pcm8k::new(vec![1; 100]));
        assert_eq!(cost, 201);
        let tts = Tts::with_options(
            dir("lru"),
            TtsOptions {
                memory_entries: 2,
                memory_cache_bytes: 2000,
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
        assert_eq!(tts.stats().memory_bytes, 2 * 201);
        // The byte budget evicts too: 901 samples are 1803 bytes, which leave no room for
        // another; a clip over the budget is not kept.
        tts.memory_put("d", &clip(901));
        assert!(tts.memory_get("d").is_some());
        assert_eq!(lock(&tts.memory).entries.len(), 1);
        assert_eq!(tts.stats().memory_bytes, 1803);
        tts.memory_put("e", &clip(1000));
        assert!(tts.memory_get("e").is_none());
        assert!(tts.memory_get("d").is_some());
        assert_eq!(tts.stats().memory_evictions, 3);

        // Many distinct clips: the total never exceeds the cap, the newest stays.
        let tts = Tts::with_options(
            dir("lru-many"),
            TtsOptions {
                memory_entries: 10_000,
                memory_cache_bytes: 50_000,
                ..Default::default()
            },
        );
        for i in 0..1000 {
            tts.memory_put(&format!("k{i}"), &clip(100 + i % 300));
            let m = lock(&tts.memory);
            assert!(m.bytes <= 50_000, "{}", m.bytes);
            assert_eq!(
                m.bytes,
                m.entries
                    .iter()
                    .map(|(k, p)| memory_cost(k, p))
                    .sum::<usize>()
            );
        }
        assert!(tts.memory_get("k999").is_some());
        assert!(tts.memory_get("k0").is_none());
    }

    #[test]
    fn cache_file_names() {
        let key = cache_key("en", "hello");
        assert!(is_cache_file_name(&format!("{key}.wav")));
        for bad in [
            key.clone(),
            format!("{key}.WAV"),
            format!("{}.wav", key.to_uppercase()),
            format!(".{key}.0badf00d.part"),
            format!(".{key}.0badf00d.espeak.wav"),
            format!("../{key}.wav"),
            format!("x{key}.wav"),
            "notes.wav".to_string(),
        ] {
            assert!(!is_cache_file_name(&bad), "{bad}");
        }
    }

    /// A file of `size` bytes named like cache entry `n`, with its mtime `age_secs` after an
    /// arbitrary fixed instant (so the order by mtime is known).
    fn cache_file(dir: &Path, n: usize, size: usize, age_secs: u64) -> String {
        let name = format!("{}.wav", cache_key("en", &format!("clip {n}")));
        write_with_mtime(&dir.join(&name), size, age_secs);
        name
    }

    fn write_with_mtime(path: &Path, size: usize, age_secs: u64) {
        std::fs::write(path, vec![0u8; size]).unwrap();
        let when = SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000 + age_secs);
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(when)
            .unwrap();
    }

    fn mtime(path: &Path) -> SystemTime {
        std::fs::metadata(path).unwrap().modified().unwrap()
    }

    fn assert_index_consistent(d: &DiskIndex) {
        assert_eq!(d.bytes, d.files.values().map(|f| f.size).sum::<u64>());
        assert_eq!(d.order.len(), d.files.len());
        for (stamp, name) in &d.order {
            assert_eq!(d.files[name].used, *stamp);
        }
    }

    /// The disk cache's eviction, with synthetic files (no espeak-ng needed).
    #[test]
    fn disk_cache_evicts_least_recently_used_by_mtime() {
        let root = dir("disk-lru");
        let d = root.join("tts");
        std::fs::create_dir_all(d.join("sub")).unwrap();
        // Oldest to newest by mtime: a, b, c.
        let a = cache_file(&d, 1, 1000, 10);
        let b = cache_file(&d, 2, 1000, 20);
        let c = cache_file(&d, 3, 1000, 30);
        // Never counted nor deleted, however old and big: other names, temporary files, a
        // directory, a file in a subdirectory, a symbolic link, a file beside the directory.
        let bystanders = [
            d.join("notes.txt"),
            d.join(".0123.part"),
            d.join(format!(".{}.0badf00d.espeak.wav", cache_key("en", "x"))),
            d.join("sub")
                .join(format!("{}.wav", cache_key("en", "sub"))),
            root.join(format!("{}.wav", cache_key("en", "outside"))),
        ];
        for p in &bystanders {
            write_with_mtime(p, 100_000, 0);
        }
        let link = d.join(format!("{}.wav", cache_key("en", "link")));
        std::os::unix::fs::symlink(&bystanders[4], &link).unwrap();
        std::fs::create_dir(d.join(format!("{}.wav", cache_key("en", "dir")))).unwrap();

        let mut idx = DiskIndex::new(d.clone(), 3500);
        // A hit on the oldest makes it the most recently used, on disk too.
        idx.hit(&a, 1000);
        assert_eq!(idx.scans, 1);
        assert_eq!(idx.bytes, 3000, "only the three cache files count");
        assert!(mtime(&d.join(&a)) > mtime(&d.join(&c)), "mtime updated");
        // A fourth file takes the total over the cap: b, now the least recently used, goes.
        let e = cache_file(&d, 4, 1000, 0);
        idx.written(&e, 1000);
        assert_index_consistent(&idx);
        assert!(!d.join(&b).exists(), "b was least recently used");
        for name in [&a, &c, &e] {
            assert!(d.join(name).exists(), "{name}");
        }
        assert_eq!((idx.bytes, idx.evictions), (3000, 1));
        // A file larger than what is left pushes out as many as needed, oldest first.
        let big = cache_file(&d, 5, 2000, 0);
        idx.written(&big, 2000);
        assert_index_consistent(&idx);
        assert!(!d.join(&c).exists() && !d.join(&a).exists());
        assert!(d.join(&e).exists() && d.join(&big).exists());
        assert_eq!((idx.bytes, idx.evictions), (3000, 3));
        // Still the one scan: writes do not rescan the directory.
        assert_eq!(idx.scans, 1);
        for p in bystanders.iter().chain([&link]) {
            assert!(p.symlink_metadata().is_ok(), "{} kept", p.display());
        }
        assert!(d.join(format!("{}.wav", cache_key("en", "dir"))).is_dir());

        // After a restart the order comes from the mtimes: with a smaller cap, the oldest go.
        write_with_mtime(&d.join(&e), 1000, 50);
        write_with_mtime(&d.join(&big), 2000, 40);
        let f = cache_file(&d, 6, 1000, 45);
        let mut idx = DiskIndex::new(d.clone(), 2500);
        let g = cache_file(&d, 7, 1000, 0);
        idx.written(&g, 1000);
        assert_index_consistent(&idx);
        assert_eq!(idx.scans, 1);
        // By mtime: big (40), f (45), e (50); then g, just written. 5000 bytes: big and f go.
        assert!(!d.join(&big).exists() && !d.join(&f).exists());
        assert!(d.join(&e).exists() && d.join(&g).exists());
        assert_eq!((idx.bytes, idx.evictions), (2000, 2));
        for p in bystanders.iter().chain([&link]) {
            assert!(p.symlink_metadata().is_ok(), "{} kept", p.display());
        }

        // Entries gone behind the index's back are not an error.
        std::fs::remove_file(d.join(&e)).unwrap();
        let h = cache_file(&d, 8, 2000, 0);
        idx.written(&h, 2000);
        assert!(d.join(&h).exists() && !d.join(&g).exists());
        assert_eq!(idx.bytes, 2000);
        // A missing directory is an empty cache.
        let mut none = DiskIndex::new(root.join("missing"), 10);
        none.written(&a, 5);
        assert_eq!((none.scans, none.bytes), (1, 5));
        // Only cache file names are ever indexed (so only they can be deleted).
        none.written("../../etc/passwd", 5);
        none.written("notes.txt", 5);
        assert_eq!((none.files.len(), none.bytes), (1, 5));
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// A stand-in for espeak-ng (`-v VOICE -w OUT -- TEXT`) that writes a fixed WAV of
    /// `samples` samples, so the whole path can be tested without espeak-ng.
    fn fake_espeak(d: &Path, samples: usize) -> PathBuf {
        std::fs::create_dir_all(d).unwrap();
        let wav = d.join("fixed.wav");
        std::fs::write(&wav, encode_wav(&Pcm8k::new(vec![100; samples])).unwrap()).unwrap();
        let script = d.join("fake-espeak");
        std::fs::write(
            &script,
            format!("#!/bin/sh\nexec cp '{}' \"$4\"\n", wav.display()),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        script
    }

    /// `synthesize`, retrying while a just-written script cannot be executed yet ("text file
    /// busy": another test thread forked while it was open for writing).
    async fn speak(tts: &Tts, text: &str) -> Pcm8k {
        for _ in 0..50 {
            match tts.synthesize(text, None).await {
                Err(MediaError::Tts(TtsError::Spawn { .. })) => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                other => return other.unwrap(),
            }
        }
        panic!("fake espeak-ng could not be started");
    }

    #[tokio::test]
    async fn disk_cache_cap_through_synthesize() {
        let root = dir("disk-synth");
        let program = fake_espeak(&root.join("bin"), 1000);
        let file_size = 44 + 2 * 1000;
        let opts = TtsOptions {
            program,
            // No memory cache: every repeat goes to the disk.
            memory_entries: 0,
            disk_cache_bytes: 2 * file_size + file_size / 2,
            ..Default::default()
        };
        let d = root.join("tts");
        let tts = Tts::with_options(&d, opts.clone());
        let file = |text: &str| d.join(format!("{}.wav", cache_key("en", text)));
        speak(&tts, "one").await;
        speak(&tts, "two").await;
        assert!(file("one").exists() && file("two").exists());
        // A disk hit on "one" makes "two" the least recently used.
        assert_eq!(speak(&tts, "one").await.len(), 1000);
        speak(&tts, "three").await;
        assert!(file("one").exists() && file("three").exists());
        assert!(!file("two").exists(), "two was least recently used");
        let stats = tts.stats();
        assert_eq!(
            (stats.synthesized, stats.disk_hits, stats.memory_hits),
            (3, 1, 0)
        );
        assert_eq!((stats.disk_bytes, stats.disk_evictions), (2 * file_size, 1));
        assert_eq!(stats.memory_bytes, 0);

        // Many distinct texts: the directory never holds more than the cap.
        for i in 0..20 {
            speak(&tts, &format!("text {i}")).await;
            let on_disk: u64 = std::fs::read_dir(&d)
                .unwrap()
                .map(|e| e.unwrap().metadata().unwrap().len())
                .sum();
            assert!(on_disk <= opts.disk_cache_bytes, "{on_disk}");
        }
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 2);
        assert!(file("text 19").exists() && file("text 18").exists());

        // A clip larger than the whole disk cache is served but not written.
        let tiny = Tts::with_options(
            root.join("tiny"),
            TtsOptions {
                disk_cache_bytes: 1000,
                ..opts
            },
        );
        assert_eq!(speak(&tiny, "big").await.len(), 1000);
        assert_eq!(std::fs::read_dir(root.join("tiny")).unwrap().count(), 0);
        assert_eq!(tiny.stats().disk_bytes, 0);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
