//! Audio from URLs (announcements, hold music, app prompts): fetched with limits, decoded to
//! 8 kHz, cached by URL and revalidated with ETag / Last-Modified so a changed file is picked
//! up and an unchanged one costs a 304.
//!
//! The cache is bounded in **bytes** (decoded PCM plus the URL and validators of each entry,
//! see [`AudioFetcher::with_cache_bytes`], default [`DEFAULT_CACHE_BYTES`]) and evicts the
//! least recently used entry (a hit, fresh or revalidated, counts as a use). A clip that does not
//! fit (larger than the cap, or than [`MAX_CACHED_ITEM_BYTES`]) is served but not cached. So
//! an API client naming many distinct (long) URLs cannot make the cache grow without bound.
//!
//! **Where a fetch may go** ([`FetchPolicy`], docs/security.md): never to link-local or
//! metadata addresses (169.254.0.0/16, fe80::/10), unspecified, multicast or broadcast ones,
//! never to the server's own listeners (HTTP, SIP); loopback and private addresses only while
//! `allow_private` (the default: local apps and WAV servers are normal on a developer's
//! machine). The address classes are enforced by the client's resolver at connect time (no
//! DNS-rebinding window), IP literals before the request; redirects are followed by hand (at
//! most five) and every hop is checked again. Every failure to fetch has one error text, so the
//! API cannot be used to tell a closed port from an HTTP status (an internal port scanner);
//! the real reason is logged.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hookflash_media::audio::{load_wav_limited, Pcm8k, SAMPLE_RATE};
use thiserror::Error;
use tracing::{debug, info};

/// Largest audio file we download.
pub const MAX_AUDIO_BYTES: usize = 20 * 1024 * 1024;
/// Longest announcement we accept.
pub const MAX_AUDIO_DURATION: Duration = Duration::from_secs(600);
/// Default cap of the decoded-audio cache, in bytes (64 MiB).
pub const DEFAULT_CACHE_BYTES: usize = 64 * 1024 * 1024;
/// Largest entry the cache keeps: the decoded size of the longest clip we accept
/// ([`MAX_AUDIO_DURATION`] of 8 kHz 16-bit mono, 9.6 MB) plus room for the URL and validators.
/// The decoder rejects anything longer, so this is a guard rather than a limit in practice.
pub const MAX_CACHED_ITEM_BYTES: usize =
    MAX_AUDIO_DURATION.as_secs() as usize * SAMPLE_RATE as usize * 2 + 64 * 1024;
/// Cached entries younger than this are used without asking the server again.
const FRESH_FOR: Duration = Duration::from_secs(10);
/// Entries at most, whatever their size.
const MAX_ENTRIES: usize = 256;
/// Bookkeeping counted per entry on top of its samples and strings (map slots, the LRU index,
/// the `Arc` header): an estimate, so many tiny clips cannot hide behind a byte count of ~0.
const ENTRY_OVERHEAD: usize = 128;

/// Every failure to fetch reads the same (see the module doc); [`FetchError::reason`] has the
/// details for the log.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FetchError {
    #[error("not an http(s) URL: {0}")]
    BadUrl(String),
    #[error("could not reach usable audio at {url}")]
    Unreachable { url: String, reason: String },
    #[error("could not reach usable audio at {url}")]
    Status { url: String, status: u16 },
    #[error("could not reach usable audio at {url}")]
    TooLarge { url: String, limit: usize },
    #[error("could not reach usable audio at {url}")]
    NotAudio { url: String, reason: String },
    /// The URL (or a redirect) names an address fetches may not go to.
    #[error("could not reach usable audio at {url}")]
    Refused { url: String, reason: String },
}

impl FetchError {
    /// What really went wrong, for the log (never for the API client).
    pub fn reason(&self) -> String {
        match self {
            FetchError::BadUrl(u) => format!("not an http(s) URL: {u}"),
            FetchError::Unreachable { reason, .. } => format!("unreachable: {reason}"),
            FetchError::Status { status, .. } => format!("HTTP {status}"),
            FetchError::TooLarge { limit, .. } => format!("larger than {limit} bytes"),
            FetchError::NotAudio { reason, .. } => format!("not playable audio: {reason}"),
            FetchError::Refused { reason, .. } => format!("address not allowed: {reason}"),
        }
    }
}

/// Where fetches may go.
#[derive(Debug, Clone, Default)]
pub struct FetchPolicy {
    /// Loopback and private (RFC 1918, CGNAT, unique-local) addresses allowed.
    pub allow_private: bool,
    /// The server's own listeners (HTTP, SIP): never fetched from.
    pub own: Vec<SocketAddr>,
}

impl FetchPolicy {
    /// May a fetch connect to `ip` at all (any port)?
    pub fn ip_allowed(&self, ip: IpAddr) -> Result<(), &'static str> {
        let ip = match ip {
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        };
        match ip {
            IpAddr::V4(v4) => {
                if v4.is_link_local() {
                    return Err("link-local / metadata address");
                }
                if v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast() {
                    return Err("not a unicast address");
                }
                let o = v4.octets();
                let cgnat = o[0] == 100 && (64..128).contains(&o[1]);
                if (v4.is_loopback() || v4.is_private() || cgnat) && !self.allow_private {
                    return Err("loopback or private address");
                }
            }
            IpAddr::V6(v6) => {
                let seg = v6.segments();
                if seg[0] & 0xffc0 == 0xfe80 {
                    return Err("link-local / metadata address");
                }
                if v6.is_unspecified() || v6.is_multicast() {
                    return Err("not a unicast address");
                }
                let unique_local = seg[0] & 0xfe00 == 0xfc00;
                if (v6.is_loopback() || unique_local) && !self.allow_private {
                    return Err("loopback or private address");
                }
            }
        }
        Ok(())
    }

    /// May a fetch connect to `addr` (its IP allowed, and not one of our own listeners)?
    pub fn addr_allowed(&self, addr: SocketAddr) -> Result<(), &'static str> {
        self.ip_allowed(addr.ip())?;
        let is_own = self.own.iter().any(|l| {
            l.port() == addr.port()
                && (l.ip() == addr.ip()
                    || (l.ip().is_unspecified() || l.ip().is_loopback()) && addr.ip().is_loopback()
                    || l.ip().is_unspecified() && is_local_ip(addr.ip()))
        });
        if is_own {
            return Err("the server's own listener");
        }
        Ok(())
    }
}

/// An address of this machine (best effort: loopback, or one of its interfaces' addresses as
/// far as the OS lets us bind to it).
fn is_local_ip(ip: IpAddr) -> bool {
    ip.is_loopback() || std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// The client's resolver: only addresses the policy allows are connected to.
struct GuardedResolver {
    policy: Arc<FetchPolicy>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| policy.ip_allowed(a.ip()).is_ok())
                .collect();
            if allowed.is_empty() {
                return Err(format!("{host}: no address a fetch may go to").into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The most redirects a fetch follows (each hop checked again).
const MAX_REDIRECTS: usize = 5;

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
    /// Recency stamp, the key of this entry in [`Cache::order`] (larger: used more recently).
    used: u64,
    /// What the entry counts against the cap (see [`entry_cost`]).
    cost: usize,
}

/// What an entry counts against the cap: its decoded samples, its strings and
/// [`ENTRY_OVERHEAD`].
fn entry_cost(url: &str, pcm: &Pcm8k, etag: Option<&str>, last_modified: Option<&str>) -> usize {
    pcm.len() * std::mem::size_of::<i16>()
        + url.len()
        + etag.map_or(0, str::len)
        + last_modified.map_or(0, str::len)
        + ENTRY_OVERHEAD
}

/// The URL → audio map with least-recently-used order and a byte budget.
struct Cache {
    entries: HashMap<String, Entry>,
    /// Recency stamp → URL; the first is the least recently used.
    order: BTreeMap<u64, String>,
    next_stamp: u64,
    /// Sum of the entries' costs, never above `cap` after an insert.
    bytes: usize,
    cap: usize,
    evictions: u64,
    uncached: u64,
}

impl Cache {
    fn new(cap: usize) -> Cache {
        Cache {
            entries: HashMap::new(),
            order: BTreeMap::new(),
            next_stamp: 0,
            bytes: 0,
            cap,
            evictions: 0,
            uncached: 0,
        }
    }

    fn max_item(&self) -> usize {
        self.cap.min(MAX_CACHED_ITEM_BYTES)
    }

    fn stamp(&mut self) -> u64 {
        self.next_stamp += 1;
        self.next_stamp
    }

    /// The entry for `url`, marked as the most recently used.
    fn use_entry(&mut self, url: &str) -> Option<&mut Entry> {
        let stamp = self.stamp();
        let e = self.entries.get_mut(url)?;
        self.order.remove(&e.used);
        e.used = stamp;
        self.order.insert(stamp, url.to_string());
        Some(e)
    }

    fn remove(&mut self, url: &str) -> Option<Entry> {
        let e = self.entries.remove(url)?;
        self.order.remove(&e.used);
        self.bytes -= e.cost;
        Some(e)
    }

    /// Caches `pcm` for `url` (replacing what was there), evicting the least recently used
    /// entries until it fits. False when it is too large to be cached at all.
    fn insert(
        &mut self,
        url: &str,
        pcm: Pcm8k,
        etag: Option<String>,
        last_modified: Option<String>,
    ) -> bool {
        let cost = entry_cost(url, &pcm, etag.as_deref(), last_modified.as_deref());
        // The old version is outdated whether or not the new one can be kept.
        self.remove(url);
        if cost > self.max_item() {
            self.uncached += 1;
            return false;
        }
        while self.bytes + cost > self.cap || self.entries.len() >= MAX_ENTRIES {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some(e) = self.entries.remove(&oldest) {
                self.bytes -= e.cost;
                self.evictions += 1;
                debug!(url = %oldest, bytes = e.cost, "announcement evicted from cache");
            }
        }
        let used = self.stamp();
        self.order.insert(used, url.to_string());
        self.bytes += cost;
        self.entries.insert(
            url.to_string(),
            Entry {
                pcm,
                etag,
                last_modified,
                checked: Instant::now(),
                used,
                cost,
            },
        );
        true
    }
}

/// Counters and sizes of an [`AudioFetcher`]'s cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FetchStats {
    /// Clips cached now.
    pub entries: usize,
    /// What they count against the cap (decoded samples plus URL and validators).
    pub bytes: usize,
    /// The cap.
    pub cap_bytes: usize,
    /// Entries removed to make room for others.
    pub evictions: u64,
    /// Fetched clips served without being cached because they were too large.
    pub uncached: u64,
}

/// Fetches, decodes and caches audio by URL; see the module doc. Share it across calls.
pub struct AudioFetcher {
    client: reqwest::Client,
    cache: Mutex<Cache>,
    policy: Arc<FetchPolicy>,
}

impl AudioFetcher {
    /// A fetcher whose cache holds up to [`DEFAULT_CACHE_BYTES`], private addresses allowed.
    pub fn new() -> Self {
        Self::with_cache_bytes(DEFAULT_CACHE_BYTES)
    }

    /// A fetcher whose cache holds up to `cap` bytes (0: nothing is cached).
    pub fn with_cache_bytes(cap: usize) -> Self {
        Self::with_policy(
            cap,
            FetchPolicy {
                allow_private: true,
                own: Vec::new(),
            },
        )
    }

    /// Where this fetcher may go (also applied to other outbound media connections, such as
    /// the `listen` verb's WebSocket).
    pub fn policy(&self) -> &FetchPolicy {
        &self.policy
    }

    /// A fetcher with a cache of `cap` bytes that only goes where `policy` allows.
    pub fn with_policy(cap: usize, policy: FetchPolicy) -> Self {
        install_crypto_provider();
        let policy = Arc::new(policy);
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("hookflash/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver {
                policy: policy.clone(),
            }))
            .build()
            .unwrap_or_else(|e| {
                // Without our resolver the address rules would not hold: fetch nothing.
                tracing::error!(error = %e, "HTTP client for audio fetches could not be built");
                reqwest::Client::new()
            });
        AudioFetcher {
            client,
            cache: Mutex::new(Cache::new(cap)),
            policy,
        }
    }

    /// Checks a URL (the first or a redirect's) before a request goes to it: an IP literal
    /// against every rule, a host name against the own-listener rule (its address classes are
    /// checked again by the resolver when the connection is made).
    /// Errors name `asked` (the URL the client gave), never a redirect's target.
    async fn check_target(&self, url: &reqwest::Url, asked: &str) -> Result<(), FetchError> {
        let refused = |reason: &str| FetchError::Refused {
            url: asked.to_string(),
            reason: format!("{url}: {reason}"),
        };
        if !matches!(url.scheme(), "http" | "https") {
            return Err(refused("not http(s)"));
        }
        let port = url.port_or_known_default().unwrap_or(80);
        let Some(host) = url.host_str() else {
            return Err(refused("no host"));
        };
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = match literal.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| FetchError::Unreachable {
                    url: asked.to_string(),
                    reason: format!("{url}: {e}"),
                })?
                .collect(),
        };
        if addrs.is_empty() {
            return Err(refused("no address"));
        }
        for a in &addrs {
            self.policy.addr_allowed(*a).map_err(&refused)?;
        }
        Ok(())
    }

    /// The cache's cap in bytes.
    pub fn cache_bytes(&self) -> usize {
        self.lock().cap
    }

    pub fn stats(&self) -> FetchStats {
        let c = self.lock();
        FetchStats {
            entries: c.entries.len(),
            bytes: c.bytes,
            cap_bytes: c.cap,
            evictions: c.evictions,
            uncached: c.uncached,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Cache> {
        // Every update leaves the cache consistent before anything that could panic.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached entry (marked as used): audio, validators, and whether it is still fresh.
    fn cached(&self, url: &str) -> Option<(Pcm8k, Option<String>, Option<String>, bool)> {
        let mut cache = self.lock();
        cache.use_entry(url).map(|e| {
            (
                e.pcm.clone(),
                e.etag.clone(),
                e.last_modified.clone(),
                e.checked.elapsed() < FRESH_FOR,
            )
        })
    }

    /// The decoded audio at `url`. A failure is logged with its real reason.
    pub async fn get(&self, url: &str) -> Result<Pcm8k, FetchError> {
        let result = self.fetch(url).await;
        if let Err(e) = &result {
            info!(url, reason = %e.reason(), "audio fetch failed");
        }
        result
    }

    async fn fetch(&self, url: &str) -> Result<Pcm8k, FetchError> {
        let parsed = reqwest::Url::parse(url).map_err(|_| FetchError::BadUrl(url.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(FetchError::BadUrl(url.to_string()));
        }
        let cached = self.cached(url);
        if let Some((pcm, _, _, true)) = &cached {
            debug!(url, "announcement cache hit (fresh)");
            return Ok(pcm.clone());
        }
        let unreachable = |e: reqwest::Error| FetchError::Unreachable {
            url: url.to_string(),
            reason: e.to_string(),
        };
        // Redirects by hand: every hop is checked like the first URL.
        let mut target = parsed;
        let mut hops = 0;
        let mut response = loop {
            self.check_target(&target, url).await?;
            let mut request = self.client.get(target.clone());
            if let Some((_, etag, last_modified, _)) = &cached {
                if let Some(etag) = etag {
                    request = request.header(reqwest::header::IF_NONE_MATCH, etag);
                }
                if let Some(lm) = last_modified {
                    request = request.header(reqwest::header::IF_MODIFIED_SINCE, lm);
                }
            }
            let response = request.send().await.map_err(unreachable)?;
            // 304 (our revalidation) is a 3xx but no redirect.
            if !response.status().is_redirection()
                || response.status() == reqwest::StatusCode::NOT_MODIFIED
            {
                break response;
            }
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|l| target.join(l).ok());
            match location {
                Some(next) if hops < MAX_REDIRECTS => {
                    hops += 1;
                    debug!(from = %target, to = %next, "audio fetch redirected");
                    target = next;
                }
                _ => {
                    return Err(FetchError::Status {
                        url: url.to_string(),
                        status: response.status().as_u16(),
                    })
                }
            }
        };
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
        let mut cache = self.lock();
        if !cache.insert(url, pcm.clone(), etag, last_modified) {
            info!(
                url,
                bytes = pcm.len() * 2,
                cap = cache.max_item(),
                "announcement too large for the cache; served uncached"
            );
        }
        Ok(pcm)
    }

    /// Marks the entry for `url` as just revalidated (fresh again) and most recently used.
    fn touch(&self, url: &str) {
        if let Some(e) = self.lock().use_entry(url) {
            e.checked = Instant::now();
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
            .route(
                "/redirect-metadata",
                get(|| async {
                    (
                        StatusCode::FOUND,
                        [(header::LOCATION, "http://169.254.169.254/latest/meta-data")],
                    )
                        .into_response()
                }),
            )
            .route(
                "/redirect-ok",
                get(|| async {
                    (StatusCode::FOUND, [(header::LOCATION, "/a.wav")]).into_response()
                }),
            )
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
            for e in c.entries.values_mut() {
                e.checked = Instant::now() - FRESH_FOR * 2;
            }
        }
        let again = f.get(&format!("{base}/a.wav")).await.unwrap();
        assert_eq!(hits.load(Ordering::SeqCst), 2);
        assert_eq!(again.samples().len(), pcm.samples().len());
    }

    #[test]
    fn address_classes() {
        let open = FetchPolicy {
            allow_private: true,
            own: vec!["127.0.0.1:8080".parse().unwrap()],
        };
        let strict = FetchPolicy {
            allow_private: false,
            own: Vec::new(),
        };
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        for p in [&open, &strict] {
            assert!(p.ip_allowed(ip("169.254.169.254")).is_err(), "metadata");
            assert!(p.ip_allowed(ip("fe80::1")).is_err());
            assert!(p.ip_allowed(ip("::ffff:169.254.1.1")).is_err());
            assert!(p.ip_allowed(ip("0.0.0.0")).is_err());
            assert!(p.ip_allowed(ip("224.0.0.1")).is_err());
            assert!(p.ip_allowed(ip("93.184.216.34")).is_ok());
        }
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.1.1",
            "172.16.0.1",
            "100.64.0.1",
            "::1",
            "fd00::1",
        ] {
            assert!(open.ip_allowed(ip(private)).is_ok(), "{private}");
            assert!(strict.ip_allowed(ip(private)).is_err(), "{private}");
        }
        // Our own listener, on any loopback address, is refused; another port is not.
        assert!(open
            .addr_allowed("127.0.0.1:8080".parse().unwrap())
            .is_err());
        assert!(open
            .addr_allowed("127.0.0.2:8080".parse().unwrap())
            .is_err());
        assert!(open.addr_allowed("127.0.0.1:8081".parse().unwrap()).is_ok());
    }

    #[tokio::test]
    async fn refused_targets_and_redirects_all_fail_alike() {
        let base = serve(Arc::new(AtomicUsize::new(0))).await;
        let port: u16 = base.rsplit(':').next().unwrap().parse().unwrap();
        // The WAV server is "our own listener": refused, even though it would answer.
        let own = AudioFetcher::with_policy(
            DEFAULT_CACHE_BYTES,
            FetchPolicy {
                allow_private: true,
                own: vec![SocketAddr::from(([127, 0, 0, 1], port))],
            },
        );
        let e = own.get(&format!("{base}/a.wav")).await.unwrap_err();
        assert!(matches!(e, FetchError::Refused { .. }), "{e:?}");
        // No private addresses: refused (host name or literal).
        let strict = AudioFetcher::with_policy(
            DEFAULT_CACHE_BYTES,
            FetchPolicy {
                allow_private: false,
                own: Vec::new(),
            },
        );
        assert!(matches!(
            strict.get(&format!("{base}/a.wav")).await,
            Err(FetchError::Refused { .. })
        ));
        assert!(matches!(
            strict.get(&format!("http://localhost:{port}/a.wav")).await,
            Err(FetchError::Refused { .. }) | Err(FetchError::Unreachable { .. })
        ));
        // Redirects are checked hop by hop: to the metadata address, refused; to a good
        // target, followed.
        let open = AudioFetcher::new();
        let e = open
            .get(&format!("{base}/redirect-metadata"))
            .await
            .unwrap_err();
        assert!(matches!(e, FetchError::Refused { .. }), "{e:?}");
        assert!(open.get(&format!("{base}/redirect-ok")).await.is_ok());
        // One text for every failure: a closed port, an HTTP 404, a refused address, not audio.
        let closed = open.get("http://127.0.0.1:9/a.wav").await.unwrap_err();
        let missing = open.get(&format!("{base}/missing.wav")).await.unwrap_err();
        let text = open.get(&format!("{base}/text")).await.unwrap_err();
        let shape = |e: &FetchError, url: &str| e.to_string().replace(url, "URL");
        assert_eq!(
            shape(&closed, "http://127.0.0.1:9/a.wav"),
            "could not reach usable audio at URL"
        );
        assert_eq!(
            shape(&missing, &format!("{base}/missing.wav")),
            shape(&closed, "http://127.0.0.1:9/a.wav")
        );
        assert_eq!(
            shape(&text, &format!("{base}/text")),
            shape(&closed, "http://127.0.0.1:9/a.wav")
        );
        assert_eq!(
            shape(&e, &format!("{base}/redirect-metadata")),
            shape(&closed, "http://127.0.0.1:9/a.wav")
        );
        assert_ne!(
            closed.reason(),
            missing.reason(),
            "the log keeps the difference"
        );
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

    /// 8 kHz mono 16-bit WAV of `ms` milliseconds (decodes to exactly `ms * 8` samples).
    fn wav_8k(ms: usize) -> Vec<u8> {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 8000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut cursor = std::io::Cursor::new(Vec::new());
        {
            let mut w = hound::WavWriter::new(&mut cursor, spec).unwrap();
            for i in 0..ms * 8 {
                w.write_sample(((i % 16) as i16 - 8) * 1000).unwrap();
            }
            w.finalize().unwrap();
        }
        cursor.into_inner()
    }

    /// Serves `/tone/<ms>/<anything>` as a WAV of `<ms>` milliseconds with ETag `"v1"`
    /// (answering 304 to `If-None-Match: "v1"`); counts the requests.
    async fn serve_tones(hits: Arc<AtomicUsize>) -> String {
        let app = axum::Router::new().fallback(move |uri: axum::http::Uri, headers: HeaderMap| {
            let hits = hits.clone();
            async move {
                hits.fetch_add(1, Ordering::SeqCst);
                let ms = uri
                    .path()
                    .strip_prefix("/tone/")
                    .and_then(|rest| rest.split('/').next())
                    .and_then(|ms| ms.parse::<usize>().ok());
                let Some(ms) = ms else {
                    return StatusCode::NOT_FOUND.into_response();
                };
                if headers
                    .get(header::IF_NONE_MATCH)
                    .is_some_and(|v| v == "\"v1\"")
                {
                    return StatusCode::NOT_MODIFIED.into_response();
                }
                ([(header::ETAG, "\"v1\"")], wav_8k(ms)).into_response()
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.ok() });
        format!("http://{addr}")
    }

    fn is_cached(f: &AudioFetcher, url: &str) -> bool {
        f.lock().entries.contains_key(url)
    }

    /// The cache's own bookkeeping agrees with its entries.
    fn assert_consistent(f: &AudioFetcher) {
        let c = f.lock();
        assert_eq!(c.bytes, c.entries.values().map(|e| e.cost).sum::<usize>());
        assert_eq!(c.order.len(), c.entries.len());
        assert!(c.bytes <= c.cap, "{} > {}", c.bytes, c.cap);
        assert!(c.entries.len() <= MAX_ENTRIES);
    }

    #[tokio::test]
    async fn byte_cap_evicts_least_recently_used() {
        let hits = Arc::new(AtomicUsize::new(0));
        let base = serve_tones(hits.clone()).await;
        let url = |name: &str| format!("{base}/tone/100/{name}.wav");
        let cost = entry_cost(&url("a"), &Pcm8k::new(vec![0; 800]), Some("\"v1\""), None);
        // Room for three clips, not four.
        let f = AudioFetcher::with_cache_bytes(cost * 3 + cost / 2);
        assert_eq!(f.cache_bytes(), cost * 3 + cost / 2);
        for name in ["a", "b", "c"] {
            assert_eq!(f.get(&url(name)).await.unwrap().len(), 800);
            assert_consistent(&f);
        }
        assert_eq!(f.stats().bytes, 3 * cost);
        assert_eq!(f.stats().entries, 3);
        assert_eq!(hits.load(Ordering::SeqCst), 3);

        // A (fresh) hit makes "a" the most recently used: "b" goes for "d".
        if let Some(e) = f.lock().entries.get_mut(&url("a")) {
            e.checked = Instant::now();
        }
        f.get(&url("a")).await.unwrap();
        assert_eq!(hits.load(Ordering::SeqCst), 3, "served from the cache");
        f.get(&url("d")).await.unwrap();
        assert_consistent(&f);
        assert!(!is_cached(&f, &url("b")), "b was least recently used");
        for name in ["a", "c", "d"] {
            assert!(is_cached(&f, &url(name)), "{name}");
        }
        assert_eq!(f.stats().evictions, 1);

        // A revalidation (304) is a use too: now "a" is the least recently used.
        if let Some(e) = f.lock().entries.get_mut(&url("c")) {
            e.checked = Instant::now() - FRESH_FOR * 2;
        }
        assert_eq!(f.get(&url("c")).await.unwrap().len(), 800);
        assert_eq!(hits.load(Ordering::SeqCst), 5, "d, then c revalidated");
        f.get(&url("e")).await.unwrap();
        assert_consistent(&f);
        assert!(!is_cached(&f, &url("a")), "a was least recently used");
        for name in ["c", "d", "e"] {
            assert!(is_cached(&f, &url(name)), "{name}");
        }
        assert_eq!(
            f.stats(),
            FetchStats {
                entries: 3,
                bytes: 3 * cost,
                cap_bytes: cost * 3 + cost / 2,
                evictions: 2,
                uncached: 0,
            }
        );
    }

    #[tokio::test]
    async fn clip_larger_than_the_cap_is_served_but_not_cached() {
        let hits = Arc::new(AtomicUsize::new(0));
        let base = serve_tones(hits.clone()).await;
        let small = format!("{base}/tone/100/small.wav");
        let big = format!("{base}/tone/1000/big.wav");
        let f = AudioFetcher::with_cache_bytes(4000);
        f.get(&small).await.unwrap();
        assert!(is_cached(&f, &small));
        // One second is 16,000 bytes of samples: served, not cached, nothing evicted for it.
        assert_eq!(f.get(&big).await.unwrap().len(), 8000);
        assert!(!is_cached(&f, &big));
        assert!(is_cached(&f, &small));
        f.get(&big).await.unwrap();
        assert_eq!(
            hits.load(Ordering::SeqCst),
            3,
            "each request for it is a download"
        );
        let stats = f.stats();
        assert_eq!((stats.entries, stats.evictions, stats.uncached), (1, 0, 2));
        assert_consistent(&f);

        // A cap of 0 caches nothing.
        let none = AudioFetcher::with_cache_bytes(0);
        none.get(&small).await.unwrap();
        assert_eq!(none.stats().entries, 0);
        assert_eq!(none.stats().bytes, 0);
    }

    /// The reported issue in small: many distinct URLs (320 long WAVs took the server to
    /// 2.9 GB) no longer grow the cache beyond its cap.
    #[tokio::test]
    async fn thousand_distinct_urls_stay_within_the_cap() {
        let hits = Arc::new(AtomicUsize::new(0));
        let base = serve_tones(hits.clone()).await;
        let cap = 64 * 1024;
        let f = AudioFetcher::with_cache_bytes(cap);
        let url = |i: usize| format!("{base}/tone/{}/clip-{i:04}.wav", 20 + (i % 7) * 20);
        for i in 0..1000 {
            let pcm = f.get(&url(i)).await.unwrap();
            assert_eq!(pcm.len(), (20 + (i % 7) * 20) * 8);
            let stats = f.stats();
            assert!(stats.bytes <= cap, "after {i}: {} > {cap}", stats.bytes);
        }
        assert_consistent(&f);
        let stats = f.stats();
        assert_eq!(hits.load(Ordering::SeqCst), 1000);
        assert!(stats.entries > 10 && stats.entries < 200, "{stats:?}");
        assert_eq!(stats.evictions as usize, 1000 - stats.entries);
        assert!(is_cached(&f, &url(999)), "the most recent survives");
        assert!(!is_cached(&f, &url(0)), "the oldest is gone");
    }

    #[test]
    fn cache_accounting() {
        let pcm = |n| Pcm8k::new(vec![0; n]);
        let mut c = Cache::new(1_000_000);
        // Replacing an entry (a changed file) counts it once.
        assert!(c.insert("http://x/a", pcm(100), Some("\"1\"".into()), None));
        assert!(c.insert("http://x/a", pcm(200), None, Some("yesterday".into())));
        assert_eq!(c.entries.len(), 1);
        assert_eq!(
            c.bytes,
            entry_cost("http://x/a", &pcm(200), None, Some("yesterday"))
        );
        // A new version too large to keep drops the old one.
        assert!(!c.insert("http://x/a", pcm(600_000), None, None));
        assert_eq!((c.entries.len(), c.bytes, c.uncached), (0, 0, 1));
        // Tiny clips are bounded by the entry limit as well.
        for i in 0..MAX_ENTRIES + 10 {
            assert!(c.insert(&format!("http://x/{i}"), pcm(1), None, None));
        }
        assert_eq!(c.entries.len(), MAX_ENTRIES);
        assert_eq!(c.order.len(), MAX_ENTRIES);
        assert!(c
            .entries
            .contains_key(&format!("http://x/{}", MAX_ENTRIES + 9)));
        assert!(!c.entries.contains_key("http://x/0"));
        assert_eq!(c.evictions, 10);
        assert!(c.remove("http://x/nothing").is_none());
        // The largest clip the decoder accepts fits the default cap.
        let longest = MAX_AUDIO_DURATION.as_secs() as usize * SAMPLE_RATE as usize;
        assert!(entry_cost("http://x/long", &pcm(longest), None, None) <= MAX_CACHED_ITEM_BYTES);
        const { assert!(MAX_CACHED_ITEM_BYTES < DEFAULT_CACHE_BYTES) };
    }
}
