//! HTTP surface: liveness, readiness and Prometheus metrics; the native API under `/api/v1`
//! (OpenAPI at `/api/v1/openapi.json`, generated from the routes); one module per vendor
//! dialect (sipgate: `/v2/...` and `/login/...`), and the sipgate push webhooks fed from the
//! engine's event bus. Dialects only translate: every command goes to the engine's shared
//! command set.

mod body;
/// The credential-guessing guard lives below the dialects (SIP digest uses it too).
pub use hookflash_sip::auth_guard as guard;
mod dialects;
mod server;
pub mod user_token;
mod wav;

pub use dialects::{api19, jambonz, native, ringcentral, sipgate};

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use hookflash_apps::{Delivery, DeliveryConfig, Runtime};
use hookflash_engine::Engine;
use serde_json::json;
use thiserror::Error;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Error)]
pub enum ApiError {
    #[error("cannot listen for HTTP on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("HTTP server: {0}")]
    Serve(std::io::Error),
}

/// Default of [`HttpOptions::header_read_timeout`].
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Default of [`HttpOptions::push_answer_timeout`] (`http.push_answer_timeout_ms`).
pub const PUSH_ANSWER_TIMEOUT: Duration = Duration::from_secs(3);

/// Settings of the HTTP server.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// A connection that has not sent complete request headers within this is closed (from
    /// accept, and between the requests of a kept-alive connection).
    pub header_read_timeout: Duration,
    /// Failure limits and bans of the password guessing defence.
    pub auth_guard: guard::GuardConfig,
    /// Token lifetimes of the RingCentral dialect's OAuth endpoint.
    pub oauth_lifetimes: ringcentral::OAuthLifetimes,
    /// HTTPS: the TLS configuration (`http.tls_cert`/`tls_key`); None: plain HTTP.
    pub tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    /// How long an inbound call waits for a sipgate push app's answer to `newCall`.
    pub push_answer_timeout: Duration,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            header_read_timeout: HEADER_READ_TIMEOUT,
            auth_guard: guard::GuardConfig::default(),
            oauth_lifetimes: ringcentral::OAuthLifetimes::default(),
            tls: None,
            push_answer_timeout: PUSH_ANSWER_TIMEOUT,
        }
    }
}

/// What every handler gets.
#[derive(Clone)]
pub struct AppState {
    pub engine: Engine,
    /// Failure counts and bans of HTTP credentials, shared by every dialect.
    pub(crate) guard: Arc<guard::AuthGuard>,
    /// The key that signs user access tokens (sipgate's password grant today, RingCentral's
    /// next; the native API recognises them to refuse them clearly); loaded on first use.
    pub(crate) user_tokens: Arc<user_token::KeyCell>,
    /// The webhook client every dialect (and the application runtime) delivers through.
    pub delivery: Delivery,
    /// The application runtime (None in routers built without one, e.g. some tests).
    pub runtime: Option<Runtime>,
    /// Token lifetimes of the RingCentral dialect.
    pub oauth_lifetimes: ringcentral::OAuthLifetimes,
    /// The RingCentral dialect's subscriptions (its notification dispatcher reads them).
    pub(crate) rc_subscriptions: Arc<ringcentral::subscriptions::Registry>,
}

impl AppState {
    pub fn new(engine: Engine) -> Self {
        Self::with_guard(engine, guard::GuardConfig::default())
    }

    pub fn with_guard(engine: Engine, config: guard::GuardConfig) -> Self {
        let delivery = Delivery::new(DeliveryConfig::default(), CancellationToken::new());
        Self::with_parts(engine, config, delivery)
    }

    pub fn with_parts(engine: Engine, config: guard::GuardConfig, delivery: Delivery) -> Self {
        AppState {
            delivery,
            runtime: None,
            oauth_lifetimes: ringcentral::OAuthLifetimes::default(),
            rc_subscriptions: Arc::default(),
            engine,
            guard: Arc::new(guard::AuthGuard::new(config)),
            user_tokens: Arc::new(user_token::KeyCell::default()),
        }
    }
}

/// The whole HTTP application (default limits).
pub fn router(engine: Engine) -> Router {
    router_with_state(AppState::new(engine))
}

/// The whole HTTP application on a given state.
pub fn router_with_state(state: AppState) -> Router {
    let (native, _) = native::router().split_for_parts();
    let sipgate = sipgate::router(&state);
    let jambonz = jambonz::router(&state);
    let ringcentral = ringcentral::router(&state);
    let api19 = api19::router(&state);
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(native)
        .with_state(state)
        .merge(sipgate)
        .merge(jambonz)
        .merge(ringcentral)
        .merge(api19)
}

async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.engine.ready().await {
        (StatusCode::OK, Json(json!({"status": "ready"})))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not ready"})),
        )
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut text = state.engine.metrics_text().await;
    // The engine's exposition ends with "# EOF": ours goes before it.
    let eof = text.strip_suffix("# EOF\n").is_some();
    if eof {
        text.truncate(text.len() - "# EOF\n".len());
    }
    guard_metrics(&state.guard, &mut text);
    state.delivery.metrics_text(&mut text);
    if eof {
        text.push_str("# EOF\n");
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
}

/// The password guessing defence's counters in OpenMetrics text.
fn guard_metrics(guard: &guard::AuthGuard, out: &mut String) {
    let stats = guard.stats();
    let (sources, identities) = guard.active(Instant::now());
    let _ = write!(
        out,
        "# HELP hookflash_http_auth_failures Failed HTTP credential checks.\n\
         # TYPE hookflash_http_auth_failures counter\n\
         hookflash_http_auth_failures_total {}\n\
         # HELP hookflash_http_auth_refused HTTP requests refused (429) while their source was banned or their identity locked.\n\
         # TYPE hookflash_http_auth_refused counter\n\
         hookflash_http_auth_refused_total {}\n\
         # HELP hookflash_http_auth_bans Bans of sources and locks of identities started.\n\
         # TYPE hookflash_http_auth_bans counter\n\
         hookflash_http_auth_bans_total{{scope=\"source\"}} {}\n\
         hookflash_http_auth_bans_total{{scope=\"identity\"}} {}\n\
         # HELP hookflash_http_auth_banned Sources banned and identities locked now.\n\
         # TYPE hookflash_http_auth_banned gauge\n\
         hookflash_http_auth_banned{{scope=\"source\"}} {}\n\
         hookflash_http_auth_banned{{scope=\"identity\"}} {}\n",
        stats.failures.load(Ordering::Relaxed),
        stats.refused.load(Ordering::Relaxed),
        stats.source_bans.load(Ordering::Relaxed),
        stats.identity_locks.load(Ordering::Relaxed),
        sources,
        identities,
    );
}

/// Installs rustls' ring crypto provider for the process (once). Without it rustls cannot
/// choose between providers when both end up in the dependency tree.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err means a provider is installed already: fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Binds the listener (so a port in use is a start-up error), starts the sipgate webhook
/// dispatcher, and returns the serving future (default [`HttpOptions`]).
pub async fn bind(
    addr: SocketAddr,
    engine: Engine,
    stop: CancellationToken,
) -> Result<
    (
        SocketAddr,
        impl std::future::Future<Output = Result<(), ApiError>>,
    ),
    ApiError,
> {
    bind_with(addr, engine, stop, HttpOptions::default()).await
}

/// [`bind`] with explicit options.
pub async fn bind_with(
    addr: SocketAddr,
    engine: Engine,
    stop: CancellationToken,
    options: HttpOptions,
) -> Result<
    (
        SocketAddr,
        impl std::future::Future<Output = Result<(), ApiError>>,
    ),
    ApiError,
> {
    install_crypto_provider();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ApiError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| ApiError::Bind { addr, source })?;
    let delivery = Delivery::new(DeliveryConfig::default(), stop.clone());
    // The application runtime takes the engine's application calls (once per engine).
    let runtime = hookflash_apps::dispatch::spawn(engine.clone(), delivery.clone(), stop.clone());
    sipgate::webhooks::spawn(
        engine.clone(),
        delivery.clone(),
        stop.clone(),
        runtime.clone(),
        options.push_answer_timeout,
    );
    match &runtime {
        // RCML `<Record>` reports the api19 dialect's download URL of its recordings.
        Some(rt) => rt.set_recording_links(api19::recordings::links(format!(
            "{}://{local}",
            if options.tls.is_some() {
                "https"
            } else {
                "http"
            }
        ))),
        None => tracing::warn!("application runtime already running for this engine"),
    }
    let mut state = AppState::with_parts(engine, options.auth_guard, delivery);
    state.runtime = runtime;
    state.oauth_lifetimes = options.oauth_lifetimes;
    ringcentral::subscriptions::spawn(
        state.engine.clone(),
        state.delivery.clone(),
        state.rc_subscriptions.clone(),
        stop.clone(),
    );
    let app = router_with_state(state);
    let fut = async move {
        let tls = options.tls.map(tokio_rustls::TlsAcceptor::from);
        server::serve(listener, app, stop, options.header_read_timeout, tls).await;
        Ok(())
    };
    Ok((local, fut))
}
