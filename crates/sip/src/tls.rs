//! SIP over TLS (`sips:`, `transport=tls`).
//!
//! rsipstack has a TLS listener of its own (`TlsListenerConnection`), but it has the faults
//! our TCP listener exists to avoid: no per-source or total connection limit, no time limit on
//! the handshake (a connection that never finishes one holds a task and a socket for good),
//! and accept errors are retried at once. So TLS is accepted by the same loop as TCP
//! (`tcp::accept_loop`: the same [`crate::tcp::TcpGate`], i.e. TCP and TLS connections count
//! against one per-source and one total limit), the handshake must finish within the
//! first-message time (`security.tcp_first_message_secs`), and only a finished session is
//! handed to the stack as rsipstack's `TlsConnection`. From then on rsipstack serves it like
//! a TCP connection: responses and in-dialog requests go back over it (its dialogs keep the
//! connection a request came on, RFC 5626 flow affinity), and requests to a device
//! registered over TLS are sent over its registration's connection.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use rsipstack::transaction::endpoint::EndpointInner;
use rsipstack::transport::tls::TlsConnection;
use rsipstack::transport::{SipAddr, SipConnection};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::tcp::{accept_loop, TcpGate};

#[derive(Debug, Error)]
pub enum TlsSetupError {
    #[error("cannot read the TLS certificate {path}: {reason}")]
    Certificate { path: String, reason: String },
    #[error("cannot read the TLS private key {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("TLS certificate and key do not make a server configuration: {0}")]
    Config(String),
}

/// A rustls server configuration from PEM files: the certificate chain (leaf first) and its
/// private key (PKCS#8, PKCS#1 or SEC1). Used for SIP over TLS and for HTTPS.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsSetupError> {
    install_crypto_provider();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsSetupError::Certificate {
            path: cert.display().to_string(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsSetupError::Certificate {
            path: cert.display().to_string(),
            reason: "no certificate in the file".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsSetupError::Key {
        path: key.display().to_string(),
        reason: e.to_string(),
    })?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsSetupError::Config(e.to_string()))?;
    Ok(Arc::new(config))
}

/// rustls needs one process-wide crypto provider; the server links ring only.
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Accepts TLS connections until `cancel`: limits as for TCP, then the handshake within the
/// first-message time, then the session goes to the SIP stack.
pub(crate) async fn serve(
    listener: TcpListener,
    local: SipAddr,
    endpoint: Arc<EndpointInner>,
    gate: Arc<TcpGate>,
    acceptor: TlsAcceptor,
    cancel: CancellationToken,
) {
    let handshake_limit = gate.limits.first_message;
    let stats_gate = gate.clone();
    accept_loop(
        listener,
        gate,
        cancel,
        "TLS",
        move |stream, remote, token| {
            let endpoint = endpoint.clone();
            let local = local.clone();
            let gate = stats_gate.clone();
            let acceptor = acceptor.clone();
            async move {
                let session =
                    match tokio::time::timeout(handshake_limit, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            gate.stats
                                .tls_handshake_failed
                                .fetch_add(1, Ordering::Relaxed);
                            debug!(%remote, error = %e, "SIP TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            gate.stats
                                .tls_handshake_failed
                                .fetch_add(1, Ordering::Relaxed);
                            debug!(%remote, "SIP TLS handshake not finished in time: closed");
                            return;
                        }
                    };
                let remote_addr = SipAddr {
                    r#type: Some(rsipstack::sip::transport::Transport::Tls),
                    addr: remote.into(),
                };
                let conn = match TlsConnection::from_server_stream(
                    session,
                    local,
                    remote_addr,
                    Some(token.clone()),
                )
                .await
                {
                    Ok(c) => c,
                    Err(e) => {
                        debug!(%remote, error = %e, "SIP TLS connection unusable");
                        return;
                    }
                };
                endpoint
                    .transport_layer
                    .add_connection(SipConnection::Tls(conn));
                token.cancelled().await;
            }
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str, body: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("hf-tls-{}-{name}", std::process::id()));
        std::fs::write(&dir, body).unwrap();
        dir
    }

    #[test]
    fn bad_files_are_typed_errors() {
        let missing = Path::new("/nonexistent/hookflash/cert.pem");
        assert!(matches!(
            server_config(missing, missing),
            Err(TlsSetupError::Certificate { .. })
        ));
        let empty = temp("empty.pem", "not a pem file\n");
        assert!(matches!(
            server_config(&empty, &empty),
            Err(TlsSetupError::Certificate { .. })
        ));
        let garbage_cert = temp(
            "garbage.pem",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );
        // A "certificate" that is not one: rustls refuses it when the key is checked
        // against it, or the key file has no key.
        assert!(server_config(&garbage_cert, &empty).is_err());
        let _ = std::fs::remove_file(empty);
        let _ = std::fs::remove_file(garbage_cert);
    }
}
