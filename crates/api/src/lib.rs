//! HTTP surface: liveness, readiness and Prometheus metrics; the native API under `/api/v1`
//! (OpenAPI at `/api/v1/openapi.json`, generated from the routes); one module per vendor
//! dialect (sipgate: `/v2/...` and `/login/...`), and the sipgate push webhooks fed from the
//! engine's event bus. Dialects only translate: every command goes to the engine's shared
//! command set.

mod body;
pub mod native;
pub mod sipgate;
mod wav;

use std::net::SocketAddr;
use std::sync::{Arc, Once};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
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

/// What every handler gets.
#[derive(Clone)]
pub struct AppState {
    pub engine: Engine,
    /// The key that signs sipgate access tokens (loaded from the store on first use).
    pub(crate) sipgate_keys: Arc<sipgate::jwt::KeyCell>,
}

impl AppState {
    pub fn new(engine: Engine) -> Self {
        AppState {
            engine,
            sipgate_keys: Arc::new(sipgate::jwt::KeyCell::default()),
        }
    }
}

/// The whole HTTP application.
pub fn router(engine: Engine) -> Router {
    let state = AppState::new(engine);
    let (native, _) = native::router().split_for_parts();
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(native)
        .merge(sipgate::router())
        .with_state(state)
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
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.engine.metrics_text().await,
    )
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
/// dispatcher, and returns the serving future.
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
    install_crypto_provider();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ApiError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| ApiError::Bind { addr, source })?;
    sipgate::webhooks::spawn(engine.clone(), stop.clone());
    let app = router(engine);
    let fut = async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
            .map_err(ApiError::Serve)
    };
    Ok((local, fut))
}
