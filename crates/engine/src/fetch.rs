//! Audio from URLs (announcements, hold music, app prompts): fetched with limits, decoded to
//! 8 kHz, cached by URL and revalidated with ETag / Last-Modified so a changed file is picked
//! up and an unchanged one costs a 304.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hookflash_media::audio::{load_wav_limited, Pcm8k};
use thiserror::Error;
use tracing::{debug, info};

/// Largest audio file we download.
pub const MAX_AUDIO_BYTES: usize = 20 * 1024 * 1024;
/// Longest announcement we accept.
pub const MAX_AUDIO_DURATION: Duration = Duration::from_secs(600);
/// Cached entries younger than this are used without asking the server again.
const FRESH_FOR: Duration = Duration::from_secs(10);
const MAX_ENTRIES: usize = 256;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FetchError {
    #[error("not an http(s) URL: {0}")]
    BadUrl(String),
    #[error("could not reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("{url} is larger than {limit} bytes")]
    TooLarge { url: String, limit: usize },
    #[error("{url} is not playable audio: {reason}")]
    NotAudio { url: String, reason: String },
}

/// reqwest is built without a default TLS crypto provider (aws-lc and ring would both end up
/// in the tree); install ring once, process-wide, before any client is built. Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

struct Entry {
    pcm: Pcm8k,
    etag: Option<String>,
    last_modified: Option<String>,
    checked: Instant,
}

pub struct AudioFetcher {
    client: reqwest::Client,
    cache: Mutex<HashMap<String, Entry>>,
}

impl AudioFetcher {
    pub fn new() -> Self {
        install_crypto_provider();
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("hookflash/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "HTTP client with options failed; using defaults");
                reqwest::Client::new()
            });
        AudioFetcher {
            client,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self, url: &str) -> Option<(Pcm8k, Option<String>, Option<String>, bool)> {
        let cache = self.cache.lock().ok()?;
        cache.get(url).map(|e| {
            (
                e.pcm.clone(),
                e.etag.clone(),
                e.last_modified.clone(),
                e.checked.elapsed() < FRESH_FOR,
            )
        })
    }

    /// The decoded audio at `url`.
    pub async fn get(&self, url: &str) -> Result<Pcm8k, FetchError> {
        let parsed = reqwest::Url::parse(url).map_err(|_| FetchError::BadUrl(url.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(FetchError::BadUrl(url.to_string()));
        }
        let cached = self.cached(url);
        if let Some((pcm, _, _, true)) = &cached {
            debug!(url, "announcement cache hit (fresh)");
            return Ok(pcm.clone());
        }
        let mut request = self.client.get(parsed);
        if let Some((_, etag, last_modified, _)) = &cached {
            if let Some(etag) = etag {
                request = request.header(reqwest::header::IF_NONE_MATCH, etag);
            }
            if let Some(lm) = last_modified {
                request = request.header(reqwest::header::IF_MODIFIED_SINCE, lm);
            }
        }
        let unreachable = |e: reqwest::Error| FetchError::Unreachable {
            url: url.to_string(),
            reason: e.to_string(),
        };
        let mut response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_MODIFIED {
            if let Some((pcm, ..)) = cached {
                self.touch(url);
                debug!(url, "announcement cache hit (304)");
                return Ok(pcm);
            }
        }
        if !status.is_success() {
            return Err(FetchError::Status {
                url: url.to_string(),
                status: status.as_u16(),
            });
        }
        let too_large = || FetchError::TooLarge {
            url: url.to_string(),
            limit: MAX_AUDIO_BYTES,
        };
        if response
            .content_length()
            .is_some_and(|n| n as usize > MAX_AUDIO_BYTES)
        {
            return Err(too_large());
        }
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
                .map(str::to_string)
        };
        let etag = header(reqwest::header::ETAG);
        let last_modified = header(reqwest::header::LAST_MODIFIED);
        // Read in chunks so a server that lies about (or omits) its length cannot make us
        // buffer more than the limit.
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
            if body.len() + chunk.len() > MAX_AUDIO_BYTES {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        let max_secs = MAX_AUDIO_DURATION;
        let pcm = tokio::task::spawn_blocking(move || load_wav_limited(&body, max_secs))
            .await
            .map_err(|e| FetchError::NotAudio {
                url: url.to_string(),
                reason: e.to_string(),
            })?
            .map_err(|e| FetchError::NotAudio {
                url: url.to_string(),
                reason: e.to_string(),
            })?;
        info!(
            url,
            seconds = pcm.duration().as_secs_f32(),
            "announcement fetched"
        );
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= MAX_ENTRIES {
                // Evict the stalest entry; announcements are few, a scan is fine.
                if let Some(oldest) = cache
                    .iter()
                    .min_by_key(|(_, e)| e.checked)
                    .map(|(k, _)| k.clone())
                {
                    cache.remove(&oldest);
                }
            }
            cache.insert(
                url.to_string(),
                Entry {
                    pcm: pcm.clone(),
                    etag,
                    last_modified,
                    checked: Instant::now(),
                },
            );
        }
        Ok(pcm)
    }

    fn touch(&self, url: &str) {
        if let Ok(mut cache) = self.cache.lock() {
            if let Some(e) = cache.get_mut(url) {
                e.checked = Instant::now();
            }
        }
    }
}

impl Default for AudioFetcher {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{header, HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    use axum::routing::get;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn wav_44k_stereo_tone(freq: f32, secs: f32) -> Vec<u8> {
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 44_100,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut cursor = std::io::Cursor::new(Vec::new());
        {
            let mut w = hound::WavWriter::new(&mut cursor, spec).unwrap();
            for i in 0..(44_100.0 * secs) as usize {
                let v =
                    ((i as f32 * freq * std::f32::consts::TAU / 44_100.0).sin() * 12_000.0) as i16;
                w.write_sample(v).unwrap();
                w.write_sample(v).unwrap();
            }
            w.finalize().unwrap();
        }
        cursor.into_inner()
    }

    async fn serve(hits: Arc<AtomicUsize>) -> String {
        let wav = Arc::new(wav_44k_stereo_tone(1000.0, 0.5));
        let app = axum::Router::new()
            .route(
                "/a.wav",
                get({
                    let hits = hits.clone();
                    move |headers: HeaderMap| {
                        let wav = wav.clone();
                        let hits = hits.clone();
                        async move {
                            hits.fetch_add(1, Ordering::SeqCst);
                            if headers
                                .get(header::IF_NONE_MATCH)
                                .is_some_and(|v| v == "\"v1\"")
                            {
                                return StatusCode::NOT_MODIFIED.into_response();
                            }
                            ([(header::ETAG, "\"v1\"")], wav.as_ref().clone()).into_response()
                        }
                    }
                }),
            )
            .route("/text", get(|| async { "this is not audio" }))
            .route("/big", get(|| async { vec![0u8; MAX_AUDIO_BYTES + 1] }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.ok() });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn fetches_resamples_caches_and_revalidates() {
        let hits = Arc::new(AtomicUsize::new(0));
        let base = serve(hits.clone()).await;
        let f = AudioFetcher::new();
        let pcm = f.get(&format!("{base}/a.wav")).await.unwrap();
        // 0.5 s of 44.1 kHz stereo becomes ~4000 samples of 8 kHz mono.
        assert!(
            (3900..=4100).contains(&pcm.samples().len()),
            "{}",
            pcm.samples().len()
        );
        // Fresh: served from memory without a request.
        f.get(&format!("{base}/a.wav")).await.unwrap();
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        // Stale: revalidated with If-None-Match and answered 304.
        if let Ok(mut c) = f.cache.lock() {
            for e in c.values_mut() {
                e.checked = Instant::now() - FRESH_FOR * 2;
            }
        }
        let again = f.get(&format!("{base}/a.wav")).await.unwrap();
        assert_eq!(hits.load(Ordering::SeqCst), 2);
        assert_eq!(again.samples().len(), pcm.samples().len());
    }

    #[tokio::test]
    async fn bad_urls_and_bodies_are_clear_errors() {
        let base = serve(Arc::new(AtomicUsize::new(0))).await;
        let f = AudioFetcher::new();
        assert!(matches!(
            f.get("ftp://x/a.wav").await,
            Err(FetchError::BadUrl(_))
        ));
        assert!(matches!(
            f.get("not a url").await,
            Err(FetchError::BadUrl(_))
        ));
        assert!(matches!(
            f.get(&format!("{base}/missing.wav")).await,
            Err(FetchError::Status { status: 404, .. })
        ));
        assert!(matches!(
            f.get(&format!("{base}/text")).await,
            Err(FetchError::NotAudio { .. })
        ));
        assert!(matches!(
            f.get(&format!("{base}/big")).await,
            Err(FetchError::TooLarge { .. })
        ));
        // Nothing listens on port 9 of loopback.
        assert!(matches!(
            f.get("http://127.0.0.1:9/a.wav").await,
            Err(FetchError::Unreachable { .. })
        ));
    }
}
