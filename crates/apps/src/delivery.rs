//! Webhook delivery, once for every dialect and the application runtime.
//!
//! - [`Delivery::send`]: one HTTP request with retries (connection errors, timeouts, 429 and
//!   5xx; exponential backoff), an optional signature header and basic auth. The app runtime
//!   awaits it for the verbs a hook answers.
//! - [`Delivery::enqueue`]: work that must run in order per key (a webhook URL, a call) without
//!   blocking the caller: a bounded queue and one worker per key. A full queue drops the job and
//!   says so in the log and the metrics, so a slow webhook never holds up a call.
//! - Counters for `/metrics` ([`Delivery::metrics_text`]).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use thiserror::Error;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Limits and timing of deliveries.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// Jobs waiting per key before new ones are dropped.
    pub queue_per_key: usize,
    /// Attempts per request (the first try and the retries).
    pub attempts: u32,
    /// Backoff before the first retry; doubled for each further one.
    pub first_backoff: Duration,
    /// Per-attempt timeout (connect + answer + body).
    pub request_timeout: Duration,
    /// Largest answer body read; a longer one is an error (a hook cannot make us buffer
    /// without bound).
    pub max_body_bytes: usize,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            queue_per_key: 256,
            attempts: 5,
            first_backoff: Duration::from_millis(250),
            request_timeout: Duration::from_secs(5),
            max_body_bytes: 1024 * 1024,
        }
    }
}

/// The body of a webhook request.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// No body (GET hooks carry their fields in the query).
    Empty,
    /// `application/x-www-form-urlencoded`, fields in this order.
    Form(Vec<(String, String)>),
    /// `application/json`, serialised compactly (signatures are over these exact bytes).
    Json(serde_json::Value),
}

/// HTTP method of a hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Method {
    Get,
    #[default]
    Post,
}

/// How a request is signed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Signature {
    #[default]
    None,
    /// jambonz: `Jambonz-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
    Jambonz { secret: String },
    /// A token shared with the receiver, sent as it is in the header `name` (RingCentral:
    /// `Validation-Token` on a subscription's handshake, `Verification-Token` on every
    /// notification).
    Token { name: &'static str, value: String },
}

/// One webhook request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub method: Method,
    pub url: String,
    pub body: Body,
    /// GET: these fields go into the query string (after any the URL has).
    pub query: Vec<(String, String)>,
    pub basic_auth: Option<(String, String)>,
    pub signature: Signature,
    /// A short word for logs and metrics ("newCall", "call_hook", "status").
    pub label: &'static str,
}

impl Request {
    pub fn post_form(url: &str, form: Vec<(String, String)>, label: &'static str) -> Self {
        Request {
            method: Method::Post,
            url: url.to_string(),
            body: Body::Form(form),
            query: Vec::new(),
            basic_auth: None,
            signature: Signature::None,
            label,
        }
    }
}

/// What a hook answered (2xx).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: String,
    /// The answer's headers (names in lower case; at most [`MAX_REPLY_HEADERS`]).
    pub headers: Vec<(String, String)>,
}

/// Headers of an answer kept in [`Reply::headers`].
pub const MAX_REPLY_HEADERS: usize = 64;

/// Why a delivery failed for good.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DeliveryError {
    #[error("webhook URL is not usable: {0}")]
    BadUrl(String),
    #[error("webhook answered HTTP {status}")]
    Status { status: u16 },
    #[error("webhook unreachable after {attempts} attempts: {reason}")]
    Unreachable { attempts: u32, reason: String },
    #[error("webhook answer larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("delivery stopped (server shutting down)")]
    Stopped,
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

impl DeliveryError {
    /// The label used in metrics.
    fn outcome(&self) -> &'static str {
        match self {
            DeliveryError::BadUrl(_) => "bad_url",
            DeliveryError::Status { .. } => "status",
            DeliveryError::Unreachable { .. } => "unreachable",
            DeliveryError::TooLarge { .. } => "too_large",
            DeliveryError::Stopped => "stopped",
            DeliveryError::Client(_) => "client",
        }
    }
}

/// A unit of ordered work: an async job run by the key's worker.
pub type Job = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

#[derive(Default)]
struct Counters {
    delivered: AtomicU64,
    failed: AtomicU64,
    retries: AtomicU64,
    dropped: AtomicU64,
}

struct Inner {
    client: Option<reqwest::Client>,
    client_error: String,
    config: DeliveryConfig,
    stop: CancellationToken,
    workers: Mutex<HashMap<String, mpsc::Sender<Job>>>,
    counters: Counters,
}

/// The shared webhook client (cheap to clone).
#[derive(Clone)]
pub struct Delivery {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// reqwest is built without a default TLS crypto provider: install ring's once.
pub(crate) fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err means a provider is installed already: fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

impl Delivery {
    /// A client; deliveries stop (and queued jobs are abandoned) when `stop` is cancelled.
    pub fn new(config: DeliveryConfig, stop: CancellationToken) -> Self {
        install_crypto_provider();
        let built = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(config.request_timeout)
            .user_agent(concat!("hookflash/", env!("CARGO_PKG_VERSION")))
            // A hook's redirect is not followed: the URL the account configured is the one
            // we talk to.
            .redirect(reqwest::redirect::Policy::none())
            .build();
        let (client, client_error) = match built {
            Ok(c) => (Some(c), String::new()),
            Err(e) => {
                warn!(error = %e, "cannot build the webhook HTTP client; webhooks are off");
                (None, e.to_string())
            }
        };
        Delivery {
            inner: Arc::new(Inner {
                client,
                client_error,
                config,
                stop,
                workers: Mutex::new(HashMap::new()),
                counters: Counters::default(),
            }),
        }
    }

    pub fn config(&self) -> &DeliveryConfig {
        &self.inner.config
    }

    /// Sends `request`, retrying failures; the 2xx answer, or why it failed for good.
    pub async fn send(&self, request: &Request) -> Result<Reply, DeliveryError> {
        self.send_attempts(request, self.inner.config.attempts)
            .await
    }

    /// Sends `request` once, without retries (an answer someone waits for now, such as the
    /// sipgate push `newCall` a ringing call waits for).
    pub async fn send_once(&self, request: &Request) -> Result<Reply, DeliveryError> {
        self.send_attempts(request, 1).await
    }

    async fn send_attempts(
        &self,
        request: &Request,
        attempts: u32,
    ) -> Result<Reply, DeliveryError> {
        let result = self.send_inner(request, attempts).await;
        let c = &self.inner.counters;
        match &result {
            Ok(_) => c.delivered.fetch_add(1, Ordering::Relaxed),
            Err(_) => c.failed.fetch_add(1, Ordering::Relaxed),
        };
        if let Err(e) = &result {
            warn!(url = %request.url, label = request.label, outcome = e.outcome(), error = %e,
                "webhook given up");
        }
        result
    }

    async fn send_inner(&self, request: &Request, attempts: u32) -> Result<Reply, DeliveryError> {
        let Some(client) = &self.inner.client else {
            return Err(DeliveryError::Client(self.inner.client_error.clone()));
        };
        let url = reqwest::Url::parse(&request.url)
            .map_err(|_| DeliveryError::BadUrl(request.url.clone()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(DeliveryError::BadUrl(request.url.clone()));
        }
        let config = &self.inner.config;
        let attempts = attempts.max(1);
        let mut backoff = config.first_backoff;
        let mut last = String::new();
        let mut last_status: Option<u16> = None;
        for attempt in 1..=attempts {
            let built = build(client, &url, request);
            let retry = match built.send().await {
                Ok(resp) if resp.status().is_success() => {
                    let status = resp.status().as_u16();
                    let content_type = resp
                        .headers()
                        .get(reqwest::header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    let headers = resp
                        .headers()
                        .iter()
                        .take(MAX_REPLY_HEADERS)
                        .filter_map(|(k, v)| {
                            v.to_str()
                                .ok()
                                .map(|v| (k.as_str().to_string(), v.to_string()))
                        })
                        .collect();
                    let body = read_limited(resp, config.max_body_bytes).await?;
                    info!(url = %request.url, label = request.label, attempt, "webhook delivered");
                    return Ok(Reply {
                        status,
                        content_type,
                        body,
                        headers,
                    });
                }
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    warn!(url = %request.url, label = request.label, attempt, status,
                        "webhook answered with an error");
                    if !(resp.status().is_server_error() || status == 429) {
                        return Err(DeliveryError::Status { status });
                    }
                    last_status = Some(status);
                    true
                }
                Err(e) => {
                    warn!(url = %request.url, label = request.label, attempt, error = %e,
                        "webhook delivery failed");
                    last_status = None;
                    last = if e.is_timeout() {
                        "timed out".to_string()
                    } else {
                        "connection failed".to_string()
                    };
                    true
                }
            };
            if !retry || attempt == attempts {
                break;
            }
            self.inner.counters.retries.fetch_add(1, Ordering::Relaxed);
            tokio::select! {
                _ = self.inner.stop.cancelled() => return Err(DeliveryError::Stopped),
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = backoff.saturating_mul(2);
        }
        if let Some(status) = last_status {
            return Err(DeliveryError::Status { status });
        }
        Err(DeliveryError::Unreachable {
            attempts,
            reason: last,
        })
    }

    /// Runs `job` after the jobs queued before it under `key`, on that key's worker. Returns
    /// false (and logs) when the key's queue is full: the job is dropped.
    pub fn enqueue(&self, key: &str, job: Job) -> bool {
        let mut workers = match self.inner.workers.lock() {
            Ok(w) => w,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut job = job;
        for _ in 0..2 {
            let sender = workers
                .entry(key.to_string())
                .or_insert_with(|| self.spawn_worker(key));
            match sender.try_send(job) {
                Ok(()) => return true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.inner.counters.dropped.fetch_add(1, Ordering::Relaxed);
                    warn!(key, "webhook queue full; delivery dropped");
                    return false;
                }
                Err(mpsc::error::TrySendError::Closed(j)) => {
                    // The worker ended (idle or stopped): start a new one.
                    workers.remove(key);
                    job = j;
                }
            }
        }
        self.inner.counters.dropped.fetch_add(1, Ordering::Relaxed);
        warn!(key, "webhook worker unavailable; delivery dropped");
        false
    }

    /// Workers queued per key now (for tests and metrics).
    pub fn queues(&self) -> usize {
        match self.inner.workers.lock() {
            Ok(w) => w.len(),
            Err(poisoned) => poisoned.into_inner().len(),
        }
    }

    fn spawn_worker(&self, key: &str) -> mpsc::Sender<Job> {
        let (tx, mut rx) = mpsc::channel::<Job>(self.inner.config.queue_per_key.max(1));
        let stop = self.inner.stop.clone();
        let inner = Arc::downgrade(&self.inner);
        let key = key.to_string();
        tokio::spawn(async move {
            loop {
                let job = tokio::select! {
                    _ = stop.cancelled() => break,
                    j = rx.recv() => match j { Some(j) => j, None => break },
                    // An idle worker ends; its key is removed so the map does not grow
                    // with every URL or call ever seen.
                    _ = tokio::time::sleep(Duration::from_secs(60)) => {
                        if let Some(inner) = inner.upgrade() {
                            let mut w = match inner.workers.lock() {
                                Ok(w) => w,
                                Err(p) => p.into_inner(),
                            };
                            if rx.is_empty() {
                                w.remove(&key);
                                break;
                            }
                        }
                        continue;
                    }
                };
                job.await;
            }
            debug!(key, "webhook worker ended");
        });
        tx
    }

    /// The counters in OpenMetrics text (appended to the server's `/metrics`).
    pub fn metrics_text(&self, out: &mut String) {
        let c = &self.inner.counters;
        let _ = write!(
            out,
            "# HELP hookflash_webhook_deliveries Webhook requests by final outcome.\n\
             # TYPE hookflash_webhook_deliveries counter\n\
             hookflash_webhook_deliveries_total{{outcome=\"delivered\"}} {}\n\
             hookflash_webhook_deliveries_total{{outcome=\"failed\"}} {}\n\
             # HELP hookflash_webhook_retries Webhook attempts repeated after a failure.\n\
             # TYPE hookflash_webhook_retries counter\n\
             hookflash_webhook_retries_total {}\n\
             # HELP hookflash_webhook_dropped Webhook deliveries dropped because their queue was full.\n\
             # TYPE hookflash_webhook_dropped counter\n\
             hookflash_webhook_dropped_total {}\n",
            c.delivered.load(Ordering::Relaxed),
            c.failed.load(Ordering::Relaxed),
            c.retries.load(Ordering::Relaxed),
            c.dropped.load(Ordering::Relaxed),
        );
    }
}

fn build(client: &reqwest::Client, url: &reqwest::Url, r: &Request) -> reqwest::RequestBuilder {
    let mut url = url.clone();
    if r.method == Method::Get && !r.query.is_empty() {
        let mut pairs = url.query_pairs_mut();
        for (k, v) in &r.query {
            pairs.append_pair(k, v);
        }
    }
    let (mut builder, bytes) = match (r.method, &r.body) {
        (Method::Get, _) | (_, Body::Empty) => {
            let b = match r.method {
                Method::Get => client.get(url),
                Method::Post => client.post(url),
            };
            (b, Vec::new())
        }
        (Method::Post, Body::Form(form)) => {
            let bytes = serde_urlencoded::to_string(form)
                .unwrap_or_default()
                .into_bytes();
            (
                client
                    .post(url)
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded",
                    )
                    .body(bytes.clone()),
                bytes,
            )
        }
        (Method::Post, Body::Json(value)) => {
            let bytes = serde_json::to_vec(value).unwrap_or_default();
            (
                client
                    .post(url)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(bytes.clone()),
                bytes,
            )
        }
    };
    if let Some((user, password)) = &r.basic_auth {
        builder = builder.basic_auth(user, Some(password));
    }
    match &r.signature {
        Signature::None => {}
        Signature::Jambonz { secret } => {
            let t = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            builder = builder.header("Jambonz-Signature", jambonz_signature(secret, t, &bytes));
        }
        Signature::Token { name, value } => {
            builder = builder.header(*name, value.as_str());
        }
    }
    builder
}

/// `t=<t>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`, as jambonz signs its webhooks.
pub fn jambonz_signature(secret: &str, t: u64, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        // HMAC takes keys of any length; this arm is never taken.
        Err(_) => return format!("t={t},v1="),
    };
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

async fn read_limited(resp: reqwest::Response, limit: usize) -> Result<String, DeliveryError> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(DeliveryError::TooLarge { limit });
    }
    let mut resp = resp;
    let mut buf: Vec<u8> = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if buf.len() + chunk.len() > limit {
                    return Err(DeliveryError::TooLarge { limit });
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => {
                return Err(DeliveryError::Unreachable {
                    attempts: 1,
                    reason: format!("body: {e}"),
                })
            }
        }
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A local HTTP server that answers the n-th request with `answers[n]` (status, body) and
    /// records each request's head and body.
    async fn server(answers: Vec<(u16, &'static str)>) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        let n = Arc::new(AtomicUsize::new(0));
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let i = n.fetch_add(1, Ordering::SeqCst);
                let (status, body) = answers.get(i).copied().unwrap_or((500, "no more answers"));
                let seen = seen2.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    let mut got = Vec::new();
                    loop {
                        let Ok(k) = sock.read(&mut buf).await else {
                            return;
                        };
                        if k == 0 {
                            return;
                        }
                        got.extend_from_slice(&buf[..k]);
                        let text = String::from_utf8_lossy(&got).to_string();
                        if let Some(head_end) = text.find("\r\n\r\n") {
                            let len = text[..head_end]
                                .lines()
                                .find_map(|l| {
                                    l.to_ascii_lowercase()
                                        .strip_prefix("content-length:")
                                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                                })
                                .unwrap_or(0);
                            if got.len() >= head_end + 4 + len {
                                seen.lock().unwrap().push(text);
                                break;
                            }
                        }
                    }
                    let resp = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = sock.write_all(resp.as_bytes()).await;
                });
            }
        });
        (format!("http://{addr}/hook"), seen)
    }

    fn fast() -> DeliveryConfig {
        DeliveryConfig {
            first_backoff: Duration::from_millis(5),
            attempts: 3,
            ..DeliveryConfig::default()
        }
    }

    #[tokio::test]
    async fn retries_5xx_then_returns_the_answer() {
        let (url, seen) = server(vec![(503, ""), (500, ""), (200, "[]")]).await;
        let d = Delivery::new(fast(), CancellationToken::new());
        let reply = d
            .send(&Request::post_form(
                &url,
                vec![("a".into(), "1".into())],
                "t",
            ))
            .await
            .unwrap();
        assert_eq!(reply.body, "[]");
        assert_eq!(seen.lock().unwrap().len(), 3);
        let mut m = String::new();
        d.metrics_text(&mut m);
        assert!(m.contains("hookflash_webhook_retries_total 2"), "{m}");
        assert!(m.contains("outcome=\"delivered\"} 1"), "{m}");
    }

    #[tokio::test]
    async fn a_4xx_is_not_retried() {
        let (url, seen) = server(vec![(404, ""), (200, "")]).await;
        let d = Delivery::new(fast(), CancellationToken::new());
        let err = d
            .send(&Request::post_form(&url, vec![], "t"))
            .await
            .unwrap_err();
        assert_eq!(err, DeliveryError::Status { status: 404 });
        assert_eq!(seen.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn gives_up_after_the_attempts() {
        let (url, seen) = server(vec![(500, ""), (502, ""), (503, ""), (200, "")]).await;
        let d = Delivery::new(fast(), CancellationToken::new());
        let err = d
            .send(&Request::post_form(&url, vec![], "t"))
            .await
            .unwrap_err();
        assert_eq!(err, DeliveryError::Status { status: 503 });
        assert_eq!(seen.lock().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn unreachable_and_bad_urls_are_errors() {
        // A port nobody listens on: bound but not listening, so connections are refused
        // and no other test (process) gets the port meanwhile.
        let reserved = tokio::net::TcpSocket::new_v4().unwrap();
        reserved.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = reserved.local_addr().unwrap().port();
        let d = Delivery::new(fast(), CancellationToken::new());
        let err = d
            .send(&Request::post_form(
                &format!("http://127.0.0.1:{port}/x"),
                vec![],
                "t",
            ))
            .await
            .unwrap_err();
        assert!(
            matches!(err, DeliveryError::Unreachable { attempts: 3, .. }),
            "{err:?}"
        );
        for bad in ["not a url", "ftp://127.0.0.1/x", ""] {
            let err = d
                .send(&Request::post_form(bad, vec![], "t"))
                .await
                .unwrap_err();
            assert!(matches!(err, DeliveryError::BadUrl(_)), "{bad}: {err:?}");
        }
    }

    #[tokio::test]
    async fn token_header_is_sent_and_reply_headers_are_kept() {
        let (url, seen) = server(vec![(200, "")]).await;
        let d = Delivery::new(fast(), CancellationToken::new());
        let mut r = Request::post_form(&url, vec![], "t");
        r.signature = Signature::Token {
            name: "Verification-Token",
            value: "tok-1".into(),
        };
        let reply = d.send(&r).await.unwrap();
        let text = seen.lock().unwrap()[0].clone();
        assert!(text.contains("verification-token: tok-1"), "{text}");
        assert!(
            reply.headers.iter().any(|(k, _)| k == "content-length"),
            "{:?}",
            reply.headers
        );
    }

    #[tokio::test]
    async fn json_is_signed_over_the_exact_body_and_get_carries_a_query() {
        let (url, seen) = server(vec![(200, "[]"), (200, "[]")]).await;
        let d = Delivery::new(fast(), CancellationToken::new());
        let mut r = Request::post_form(&url, vec![], "t");
        r.body = Body::Json(serde_json::json!({"call_sid": "abc", "n": 1}));
        r.signature = Signature::Jambonz {
            secret: "s3cret".into(),
        };
        r.basic_auth = Some(("u".into(), "p".into()));
        d.send(&r).await.unwrap();
        let text = seen.lock().unwrap()[0].clone();
        let body = text.split("\r\n\r\n").nth(1).unwrap();
        assert_eq!(body, r#"{"call_sid":"abc","n":1}"#);
        let sig = text
            .lines()
            .find_map(|l| l.strip_prefix("jambonz-signature: "))
            .unwrap()
            .to_string();
        let t: u64 = sig
            .strip_prefix("t=")
            .unwrap()
            .split(',')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(sig, jambonz_signature("s3cret", t, body.as_bytes()));
        assert!(text.contains("authorization: Basic dTpw"), "{text}");

        let mut g = Request::post_form(&format!("{url}?x=1"), vec![], "t");
        g.method = Method::Get;
        g.query = vec![("call_sid".into(), "a b".into())];
        d.send(&g).await.unwrap();
        let text = seen.lock().unwrap()[1].clone();
        assert!(text.starts_with("GET /hook?x=1&call_sid=a+b "), "{text}");
    }

    #[test]
    fn signature_matches_a_known_value() {
        // HMAC-SHA256("key", "1.{}") computed independently (python hmac).
        assert_eq!(
            jambonz_signature("key", 1, b"{}"),
            "t=1,v1=1ba6b8171186efc613e8bcc0cbdab2748f24984d7c5a84faa2637afa0e40d224"
        );
    }

    #[tokio::test]
    async fn jobs_run_in_order_per_key_and_a_full_queue_drops() {
        let d = Delivery::new(
            DeliveryConfig {
                queue_per_key: 2,
                ..fast()
            },
            CancellationToken::new(),
        );
        let order = Arc::new(Mutex::new(Vec::new()));
        let (gate_tx, gate_rx) = tokio::sync::oneshot::channel::<()>();
        // The first job blocks the worker until the gate opens.
        let o = order.clone();
        assert!(d.enqueue(
            "k",
            Box::pin(async move {
                let _ = gate_rx.await;
                o.lock().unwrap().push(0);
            })
        ));
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut accepted = 0;
        for i in 1..=4 {
            let o = order.clone();
            if d.enqueue(
                "k",
                Box::pin(async move {
                    o.lock().unwrap().push(i);
                }),
            ) {
                accepted += 1;
            }
        }
        assert_eq!(accepted, 2, "queue of 2 behind a busy worker");
        let _ = gate_tx.send(());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2]);
        let mut m = String::new();
        d.metrics_text(&mut m);
        assert!(m.contains("hookflash_webhook_dropped_total 2"), "{m}");
    }
}
