//! The SIP TCP listener. rsipstack's own accept loop takes every connection, spins on accept
//! errors (at the open-file limit it wrote ~300,000 log lines a second) and gives each
//! connection two 64 KiB buffers at once, so 20,000 idle connections would cost 2.6 GB. Ours:
//! - at most `per_source` connections per source IP and `max_connections` in all (more are
//!   closed at once and counted),
//! - a connection is handed to the SIP stack only once it has sent its first bytes; one that
//!   sends nothing within `first_message` is closed (idle connections cost a socket and a small
//!   task, no buffers),
//! - accept errors back off (10 ms doubling to 1 s) and are logged at most once a second.
//!
//! A connection the stack serves keeps its place until the stack retires it (it cancels the
//! connection's token then); the stack also closes connections idle for its stream idle
//! timeout.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rsipstack::transaction::endpoint::EndpointInner;
use rsipstack::transport::tcp::TcpConnection;
use rsipstack::transport::{SipAddr, SipConnection};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpLimits {
    pub per_source: usize,
    pub max_connections: usize,
    pub first_message: Duration,
}

impl Default for TcpLimits {
    fn default() -> Self {
        TcpLimits {
            per_source: 32,
            max_connections: 8192,
            first_message: Duration::from_secs(10),
        }
    }
}

/// Counters for /metrics.
#[derive(Debug, Default)]
pub struct TcpStats {
    pub accepted: AtomicU64,
    /// Closed at once: the source (or the server) had as many connections as allowed.
    pub refused: AtomicU64,
    /// Closed because nothing arrived within the first-message time.
    pub silent_closed: AtomicU64,
    pub accept_errors: AtomicU64,
    /// TLS connections whose handshake failed or did not finish within the first-message time.
    pub tls_handshake_failed: AtomicU64,
}

/// Who holds how many connections (sans-IO: admit and release).
#[derive(Debug)]
pub struct TcpGate {
    pub(crate) limits: TcpLimits,
    by_source: Mutex<HashMap<IpAddr, usize>>,
    pub stats: TcpStats,
}

impl TcpGate {
    pub fn new(limits: TcpLimits) -> Self {
        TcpGate {
            limits,
            by_source: Mutex::new(HashMap::new()),
            stats: TcpStats::default(),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        match self.by_source.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Takes a place for a new connection from `ip`, or None when it may not have one.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<TcpPlace> {
        let mut table = self.table();
        let total: usize = table.values().sum();
        let mine = table.get(&ip).copied().unwrap_or(0);
        if total >= self.limits.max_connections || mine >= self.limits.per_source {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *table.entry(ip).or_insert(0) += 1;
        Some(TcpPlace {
            gate: self.clone(),
            ip,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.table().values().sum()
    }

    fn release(&self, ip: IpAddr) {
        let mut table = self.table();
        if let Some(n) = table.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                table.remove(&ip);
            }
        }
    }
}

/// One connection's place; dropping it gives the place back.
#[derive(Debug)]
pub struct TcpPlace {
    gate: Arc<TcpGate>,
    ip: IpAddr,
}

impl Drop for TcpPlace {
    fn drop(&mut self) {
        self.gate.release(self.ip);
    }
}

/// Accepts connections until `cancel`, handing admitted ones to the SIP stack.
pub(crate) async fn serve(
    listener: TcpListener,
    local: SipAddr,
    endpoint: Arc<EndpointInner>,
    gate: Arc<TcpGate>,
    cancel: CancellationToken,
) {
    let first_message = gate.limits.first_message;
    let stats_gate = gate.clone();
    accept_loop(listener, gate, cancel, "TCP", move |stream, remote, token| {
        let endpoint = endpoint.clone();
        let local = local.clone();
        let gate = stats_gate.clone();
        async move {
            // Nothing is allocated for the connection until it says something (`readable()`
            // may wake spuriously; a peek waits for a byte or the end of the stream).
            let mut first = [0u8; 1];
            match tokio::time::timeout(first_message, stream.peek(&mut first)).await {
                Ok(Ok(0)) => return,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    debug!(%remote, error = %e, "SIP TCP connection failed before its first message");
                    return;
                }
                Err(_) => {
                    gate.stats.silent_closed.fetch_add(1, Ordering::Relaxed);
                    debug!(%remote, "SIP TCP connection sent nothing: closed");
                    return;
                }
            }
            let conn = match TcpConnection::from_stream(stream, local, Some(token.clone())) {
                Ok(c) => c,
                Err(e) => {
                    debug!(%remote, error = %e, "SIP TCP connection unusable");
                    return;
                }
            };
            endpoint
                .transport_layer
                .add_connection(SipConnection::Tcp(conn));
            // The stack cancels the connection's token when it retires the connection.
            token.cancelled().await;
        }
    })
    .await
}

/// The accept loop shared by the TCP and TLS listeners: per-source and total limits through
/// `gate`, back-off on accept errors. `handle` runs in its own task per admitted connection
/// and holds the connection's place until it returns.
pub(crate) async fn accept_loop<H, F>(
    listener: TcpListener,
    gate: Arc<TcpGate>,
    cancel: CancellationToken,
    name: &'static str,
    handle: H,
) where
    H: Fn(TcpStream, SocketAddr, CancellationToken) -> F,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let mut backoff = Duration::ZERO;
    let mut last_error_log: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => return,
            a = listener.accept() => a,
        };
        let (stream, remote) = match accepted {
            Ok(a) => {
                backoff = Duration::ZERO;
                a
            }
            Err(e) => {
                gate.stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                backoff = (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                if last_error_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                    warn!(error = %e, backoff_ms = backoff.as_millis() as u64, transport = name, "SIP accept failed; backing off");
                    last_error_log = Some(Instant::now());
                }
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                continue;
            }
        };
        let Some(place) = gate.admit(remote.ip()) else {
            debug!(%remote, transport = name, "SIP connection refused: over the connection limit");
            drop(stream);
            continue;
        };
        gate.stats.accepted.fetch_add(1, Ordering::Relaxed);
        let work = handle(stream, remote, cancel.child_token());
        tokio::spawn(async move {
            work.await;
            drop(place);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn places_are_limited_per_source_and_in_all() {
        let gate = Arc::new(TcpGate::new(TcpLimits {
            per_source: 2,
            max_connections: 3,
            first_message: Duration::from_secs(1),
        }));
        let a1 = gate.admit(ip("127.0.0.2")).unwrap();
        let a2 = gate.admit(ip("127.0.0.2")).unwrap();
        assert!(gate.admit(ip("127.0.0.2")).is_none(), "per source");
        let b1 = gate.admit(ip("127.0.0.3")).unwrap();
        assert!(gate.admit(ip("127.0.0.4")).is_none(), "in all");
        assert_eq!(gate.open(), 3);
        drop(a1);
        let c1 = gate.admit(ip("127.0.0.4")).unwrap();
        assert!(gate.admit(ip("127.0.0.2")).is_none());
        drop((a2, b1, c1));
        assert_eq!(gate.open(), 0);
        assert_eq!(gate.stats.refused.load(Ordering::Relaxed), 3);
    }
}
