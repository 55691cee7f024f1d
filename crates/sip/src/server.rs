//! The SIP endpoint: transports (UDP, TCP), rsipstack's transaction and dialog layers.
//!
//! This is the only place that knows how rsipstack is assembled; the engine receives incoming
//! transactions and uses the dialog layer through our own types in `dialog.rs`.

use std::net::SocketAddr;
use std::sync::Arc;

use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::transaction::{Endpoint, EndpointBuilder};
use rsipstack::transport::udp::UdpConnection;
use rsipstack::transport::{SipAddr, TransportLayer};
use thiserror::Error;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::dialog::{Dialogs, IncomingRequests};
use crate::flood::{FloodGuard, FloodLimits};
use crate::guard::GuardedUdpSocket;
use crate::source::{ResponderSlot, SourceStamp};
use crate::tcp::{TcpGate, TcpLimits};

#[derive(Debug, Error)]
pub enum SipServerError {
    #[error("cannot listen for SIP on {transport} {addr}: {source}")]
    Bind {
        transport: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("SIP stack: {0}")]
    Stack(String),
    #[error("no SIP transport configured (udp, tcp and tls are all disabled)")]
    NoTransport,
}

pub struct SipServerOptions {
    pub udp: Option<SocketAddr>,
    pub tcp: Option<SocketAddr>,
    pub user_agent: String,
    /// Per-source request limits applied before the transaction layer.
    pub flood: FloodLimits,
    /// TCP connection limits (TLS connections count against the same ones).
    pub tcp_limits: TcpLimits,
    /// SIP over TLS: listen address and server configuration ([`crate::tls::server_config`]).
    pub tls: Option<(SocketAddr, Arc<rustls::ServerConfig>)>,
    /// SIP fronts whose front-source header is believed (`source.rs`).
    pub fronts: crate::source::Fronts,
}

/// A running SIP endpoint. Dropping it does not stop it; call [`SipServer::shutdown`].
pub struct SipServer {
    endpoint: Endpoint,
    pub dialogs: Dialogs,
    pub cancel: CancellationToken,
    pub udp_addr: Option<SocketAddr>,
    pub tcp_addr: Option<SocketAddr>,
    pub tls_addr: Option<SocketAddr>,
    /// Per-source limits; the engine keeps its allow-list (trunk addresses) current.
    pub flood: Arc<FloodGuard>,
    /// Where the engine installs its stateless responder.
    pub responder: ResponderSlot,
    /// TCP connection places and counters.
    pub tcp_gate: Arc<TcpGate>,
}

impl SipServer {
    /// Binds the transports and builds the endpoint. The caller must spawn
    /// [`SipServer::serve`] and consume the returned incoming transactions.
    pub async fn bind(
        opts: SipServerOptions,
    ) -> Result<(SipServer, IncomingRequests), SipServerError> {
        if opts.udp.is_none() && opts.tcp.is_none() && opts.tls.is_none() {
            return Err(SipServerError::NoTransport);
        }
        let cancel = CancellationToken::new();
        let transport_layer = TransportLayer::new(cancel.clone());
        let mut udp_addr = None;
        if let Some(addr) = opts.udp {
            let bind_err = |source: std::io::Error| SipServerError::Bind {
                transport: "udp",
                addr,
                source,
            };
            let socket = tokio::net::UdpSocket::bind(addr).await.map_err(bind_err)?;
            let socket: Arc<dyn rsipstack::platform::net::UdpSocket> =
                Arc::new(GuardedUdpSocket::new(socket));
            let conn = UdpConnection::from_socket(socket, None, Some(cancel.child_token()))
                .await
                .map_err(|e| SipServerError::Stack(e.to_string()))?;
            udp_addr = conn.get_addr().get_socketaddr().ok();
            transport_layer.add_transport(conn.into());
        }
        let mut tcp = None;
        if let Some(addr) = opts.tcp {
            // Our own accept loop (see `tcp.rs`), not rsipstack's listener.
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| SipServerError::Bind {
                    transport: "tcp",
                    addr,
                    source,
                })?;
            let bound = listener
                .local_addr()
                .map_err(|source| SipServerError::Bind {
                    transport: "tcp",
                    addr,
                    source,
                })?;
            tcp = Some((listener, bound));
        }
        let tcp_addr = tcp.as_ref().map(|(_, bound)| *bound);
        let mut tls = None;
        if let Some((addr, config)) = opts.tls {
            let bind_err = |source: std::io::Error| SipServerError::Bind {
                transport: "tls",
                addr,
                source,
            };
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(bind_err)?;
            let bound = listener.local_addr().map_err(bind_err)?;
            tls = Some((listener, bound, tokio_rustls::TlsAcceptor::from(config)));
        }
        let tls_addr = tls.as_ref().map(|(_, bound, _)| *bound);
        let flood = Arc::new(FloodGuard::new(opts.flood));
        let responder: ResponderSlot = Arc::new(std::sync::OnceLock::new());
        let endpoint = EndpointBuilder::new()
            .with_cancel_token(cancel.clone())
            .with_transport_layer(transport_layer)
            .with_user_agent(&opts.user_agent)
            // Every request is stamped with its real transport source (and counted against
            // its source's limit) before rsipstack sees it: see `source.rs`.
            .with_transport_inspector(Box::new(SourceStamp::new(
                flood.clone(),
                responder.clone(),
                opts.user_agent.clone(),
                opts.fronts.clone(),
            )))
            .build();
        let incoming = endpoint
            .incoming_transactions()
            .map_err(|e| SipServerError::Stack(e.to_string()))?;
        let tcp_gate = Arc::new(TcpGate::new(opts.tcp_limits));
        if let Some((listener, bound)) = tcp {
            let local = SipAddr {
                r#type: Some(rsipstack::sip::transport::Transport::Tcp),
                addr: bound.into(),
            };
            tokio::spawn(crate::tcp::serve(
                listener,
                local,
                endpoint.inner.clone(),
                tcp_gate.clone(),
                cancel.child_token(),
            ));
        }
        if let Some((listener, bound, acceptor)) = tls {
            let local = SipAddr {
                r#type: Some(rsipstack::sip::transport::Transport::Tls),
                addr: bound.into(),
            };
            tokio::spawn(crate::tls::serve(
                listener,
                local,
                endpoint.inner.clone(),
                tcp_gate.clone(),
                acceptor,
                cancel.child_token(),
            ));
        }
        let dialogs = Dialogs::new(
            Arc::new(DialogLayer::new(endpoint.inner.clone())),
            tls_addr.map(|a| a.port()),
        );
        info!(udp = ?udp_addr, tcp = ?tcp_addr, tls = ?tls_addr, "SIP transports bound");
        Ok((
            SipServer {
                endpoint,
                dialogs,
                cancel,
                udp_addr,
                tcp_addr,
                tls_addr,
                flood,
                responder,
                tcp_gate,
            },
            IncomingRequests::new(incoming),
        ))
    }

    /// Runs the transport and timer loops until shutdown.
    pub async fn serve(&self) {
        self.endpoint.serve().await;
    }

    /// Transactions in progress (a gauge on `/metrics`).
    pub fn running_transactions(&self) -> usize {
        self.endpoint.inner.get_stats().running_transactions
    }

    pub fn shutdown(&self) {
        self.cancel.cancel();
    }
}
