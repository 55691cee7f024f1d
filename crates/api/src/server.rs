//! The HTTP accept loop. What `axum::serve(..).with_graceful_shutdown(..)` did (HTTP/1 with
//! upgrades, one task per connection, graceful shutdown that waits for open connections),
//! plus what it cannot do: a header read timeout (a client that has not sent complete request
//! headers within it is disconnected: slowloris), and the TCP peer address attached to every
//! request as `ConnectInfo<SocketAddr>`.
//!
//! With a TLS acceptor (HTTPS) the handshake must finish within the header read timeout too.
//!
//! hyper's header read timeout runs whenever the connection waits for a request head: from
//! the moment of accept, and again after each response on a kept-alive connection, so it is
//! also the idle timeout of kept-alive connections.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;
use tracing::{debug, warn};

/// Serves `app` on `listener` until `stop` is cancelled; then stops accepting, lets every open
/// connection finish its request in progress, and returns when all are closed.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    stop: CancellationToken,
    header_read_timeout: Duration,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    // Every connection task holds a receiver; `closed()` resolves when the last one is gone.
    let (close_tx, close_rx) = watch::channel(());
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.cancelled() => break,
        };
        let (tcp, remote) = match accepted {
            Ok(conn) => conn,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of descriptors and the like: wait a moment instead of spinning.
                warn!(error = %e, "HTTP accept failed; retrying in 1 s");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = stop.cancelled() => break,
                }
            }
        };
        let (app, stop, close_rx) = (app.clone(), stop.clone(), close_rx.clone());
        match &tls {
            None => {
                tokio::spawn(connection(
                    tcp,
                    remote,
                    app,
                    stop,
                    close_rx,
                    header_read_timeout,
                ));
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(header_read_timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(session)) => {
                            connection(session, remote, app, stop, close_rx, header_read_timeout)
                                .await
                        }
                        Ok(Err(e)) => debug!(peer = %remote, error = %e, "HTTPS handshake failed"),
                        Err(_) => debug!(peer = %remote, "HTTPS handshake not finished in time"),
                    }
                });
            }
        }
    }
    drop(close_rx);
    drop(listener);
    debug!(
        connections = close_tx.receiver_count(),
        "HTTP: waiting for open connections"
    );
    close_tx.closed().await;
}

async fn connection<T>(
    tcp: T,
    remote: SocketAddr,
    app: Router,
    stop: CancellationToken,
    close_rx: watch::Receiver<()>,
    header_read_timeout: Duration,
) where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(app.map_request(move |req: Request<Incoming>| {
        let mut req = req.map(Body::new);
        req.extensions_mut().insert(ConnectInfo(remote));
        req
    }));
    // hyper's HTTP/1 connection directly (axum::serve without its http2 feature speaks
    // HTTP/1 only too): hyper-util's auto builder first sniffs for the HTTP/2 preface, and
    // that phase waits for bytes without any timeout, so a client that sends nothing at all
    // would never be cut off.
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let conn = builder
        .serve_connection(TokioIo::new(tcp), service)
        .with_upgrades();
    tokio::pin!(conn);
    let stopping = stop.cancelled();
    tokio::pin!(stopping);
    let mut shutting_down = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    debug!(peer = %remote, error = %e, "HTTP connection ended with an error");
                }
                break;
            }
            _ = &mut stopping, if !shutting_down => {
                shutting_down = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
    drop(close_rx);
}

/// Errors of one incoming connection (not of the listener): accept the next one at once.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}
