//! The engine: owns every call. A dispatcher takes each incoming SIP transaction and hands it
//! to the registrar, to the dialog it belongs to, or to a new call actor; one task per call
//! owns that call's dialogs and media bridge and handles its events in order.

pub mod apps;
pub mod apps_refer;
mod auth;
mod call;
mod call_core;
pub mod cluster;
pub mod conference;
pub mod control;
mod dialing;
pub mod events;
pub mod fetch;
pub mod inbound_hook;
mod liveness;
pub mod metrics;
pub mod model;
pub mod queues;
mod registrar;
pub mod routing;
mod secure_media;
mod session_timer;
pub mod sip_glue;
mod stateless;
pub mod supervise;
pub mod validate;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hookflash_config::Config;
use hookflash_media::ports::PortPool;
use hookflash_media::MediaStats;
use hookflash_sip::dialog::{IncomingRequests, ServerTransaction};
use hookflash_sip::digest::{Algorithm, NonceIssuer};
use hookflash_sip::msg::{Header, Method, StatusCode};
use hookflash_sip::registrar::Limits;
use hookflash_sip::{SipServer, SipServerOptions};
use hookflash_store::Store;
use thiserror::Error;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

pub use call::{AppOriginateRequest, CallCommand, CommandSender, OriginateRequest};
pub use conference::{ConferenceInfo, JoinOptions, Membership, ParticipantInfo, ParticipantState};
pub use control::{AudioSource, CallInfo, CommandError, LegInfo, LegState, RecordAction, Target};
pub use events::{
    BusEvent, ConferenceEvent, ConferenceEventKind, ConferenceParticipantRef, Event, EventBus,
    EventDetail, EventKind, Subscription,
};
pub use metrics::Metrics;
pub use model::{
    CallDirection, CallState, EndCause, LegDirection, LegRole, RecordRole, UnknownWord, WrongState,
};
pub use supervise::{SuperviseMode, Supervision};

use crate::registrar::reply;
use crate::sip_glue::now_unix;

#[derive(Debug, Error)]
pub enum EngineError {
    #[error(transparent)]
    Sip(#[from] hookflash_sip::SipServerError),
    #[error("RTP port range: {0}")]
    Media(String),
    #[error("configuration: {0}")]
    Config(String),
    #[error("cluster bus: {0}")]
    Cluster(#[from] cluster::ClusterError),
}

/// Events kept per account for clients that resume (and, in a cluster, retained per account
/// in the JetStream stream).
pub const EVENT_BACKLOG: usize = 1000;

/// What the engine needs from the configuration, resolved once at start.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub advertised_host: String,
    pub ring_timeout: Duration,
    pub registrar: Limits,
    pub digest_algorithms: Vec<Algorithm>,
    pub rtp_inactivity: Duration,
    /// Numbers of the premium class (E.164 prefixes).
    pub premium_prefixes: Vec<String>,
    /// What a party that is not a user of the account may transfer to.
    pub outside_refer: hookflash_config::OutsideRefer,
    /// The shortest session-timer interval we accept (RFC 4028 Min-SE).
    pub session_min_se: u32,
    /// Session timer asked for on legs whose peer did not ask (`sip.session_expires_secs`;
    /// None: off).
    pub session_expires_ask: Option<u32>,
}

pub(crate) struct EngineInner {
    pub cfg: EngineConfig,
    /// The cluster bus, when `[cluster] nats_url` is set.
    pub cluster: std::sync::OnceLock<Arc<cluster::Cluster>>,
    pub store: Store,
    pub sip: SipServer,
    pub ports: Arc<PortPool>,
    pub media_stats: Arc<MediaStats>,
    pub metrics: Metrics,
    pub nonces: NonceIssuer,
    /// Digest nonce counts seen, so a replayed Authorization is refused.
    pub replays: hookflash_sip::digest::ReplayGuard,
    /// Digest password guessing: failures per source and per extension, bans.
    pub sip_guard: hookflash_sip::auth_guard::AuthGuard,
    pub calls: Mutex<HashMap<String, CallEntry>>,
    /// Running conferences: `account_id/name` -> the conference's actor.
    pub conferences: conference::Registry,
    /// Park orbits in use: `account_id/orbit` -> the parked call's id.
    pub orbits: Mutex<HashMap<String, String>>,
    pub events: EventBus,
    /// The dialog-state channel all calls share.
    pub states: hookflash_sip::router::StateRouter,
    /// What a party held by the server hears.
    pub music_on_hold: hookflash_media::audio::Pcm8k,
    pub fetcher: fetch::AudioFetcher,
    pub tts: hookflash_media::Tts,
    /// Where call recordings are written.
    pub recordings_dir: std::path::PathBuf,
    pub shutdown: CancellationToken,
    /// Cancelled when SIP stops at the end of a shutdown (the dispatcher runs until then, so
    /// new INVITEs get their 503 while calls drain).
    pub stopped: CancellationToken,
    /// The SIP port we listen on (UDP, else TCP), for Contact headers.
    pub sip_port: u16,
    /// Each account's calls out through its trunk (fraud brakes).
    pub outbound: Arc<dialing::OutboundGate>,
    /// Calls to application numbers, on their way to the application runtime.
    pub apps: apps::AppChannel,
    /// Asked before an inbound call rings a user (sipgate push `newCall`).
    pub inbound_hook: inbound_hook::HookSlot,
    /// Named call queues per account (jambonz enqueue/dequeue).
    pub queues: queues::Queues,
}

pub(crate) struct CallEntry {
    pub info: CallInfo,
    pub commands: CommandSender,
    /// The SIP Call-IDs of the call's answered dialogs (to find a call a Replaces names).
    pub sip_call_ids: Vec<String>,
}

/// A cheap handle to the running engine.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<EngineInner>,
}

impl Engine {
    /// Binds SIP and the RTP port range and starts serving.
    pub async fn start(config: &Config, store: Store) -> Result<Engine, EngineError> {
        let digest_algorithms: Vec<Algorithm> = config
            .sip
            .digest_algorithms
            .iter()
            .filter_map(|a| Algorithm::from_name(a))
            .collect();
        if digest_algorithms.is_empty() {
            return Err(EngineError::Config(
                "sip.digest_algorithms names no known algorithm".into(),
            ));
        }
        let cfg = EngineConfig {
            advertised_host: config.sip_advertised_host(),
            ring_timeout: Duration::from_secs(config.sip.ring_timeout_secs.max(1)),
            registrar: Limits {
                min_expires: config.registrar.min_expires,
                max_expires: config.registrar.max_expires,
                default_expires: config.registrar.default_expires,
            },
            digest_algorithms,
            rtp_inactivity: Duration::from_secs(config.rtp.inactivity_timeout_secs.max(1)),
            premium_prefixes: config.security.premium_prefixes.clone(),
            outside_refer: config.security.outside_refer,
            session_min_se: config.sip.session_min_se_secs,
            session_expires_ask: config.sip.session_expires_secs,
        };
        let music_on_hold = match &config.rtp.music_on_hold {
            Some(path) => hookflash_media::audio::load_music_on_hold(path).map_err(|e| {
                EngineError::Config(format!("rtp.music_on_hold {}: {e}", path.display()))
            })?,
            None => hookflash_media::audio::default_music_on_hold(),
        };
        let ports = PortPool::new(config.rtp.bind_ip, config.rtp.port_min, config.rtp.port_max)
            .map_err(|e| EngineError::Media(e.to_string()))?;
        let relay_threads = match config.rtp.relay_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let pace = Duration::from_micros(config.rtp.relay_pace_us);
        let relay_threads = hookflash_media::relay::start_relay_threads(relay_threads, pace)
            .map_err(|e| EngineError::Media(format!("cannot start the relay threads: {e}")))?;
        info!(
            relay_threads,
            pace_us = config.rtp.relay_pace_us,
            "media relay threads running"
        );
        let sip_tls = secure_media::sip_tls_options(&config.sip)?;
        let (sip, incoming) = SipServer::bind(SipServerOptions {
            udp: config.sip.udp,
            tcp: config.sip.tcp,
            tls: sip_tls,
            fronts: fronts_of(&config.sip.trusted_proxies),
            user_agent: format!("hookflash/{}", env!("CARGO_PKG_VERSION")),
            flood: hookflash_sip::flood::FloodLimits {
                window: Duration::from_millis(config.security.flood_window_ms.max(1)),
                max_requests: config.security.flood_max_requests,
                ban: Duration::from_secs(config.security.flood_ban_secs),
                ..Default::default()
            },
            tcp_limits: hookflash_sip::tcp::TcpLimits {
                per_source: config.security.tcp_per_source,
                max_connections: config.security.tcp_max_connections,
                first_message: Duration::from_secs(config.security.tcp_first_message_secs),
            },
        })
        .await?;
        let nonces = shared_nonce_issuer(&store).await;
        let (sip_udp, sip_tcp, sip_tls_addr) = (sip.udp_addr, sip.tcp_addr, sip.tls_addr);
        let sip_port = sip
            .udp_addr
            .or(sip.tcp_addr)
            .map(|a: SocketAddr| a.port())
            .unwrap_or(5060);
        let engine = Engine {
            inner: Arc::new(EngineInner {
                cfg,
                store,
                sip,
                ports,
                media_stats: Arc::new(MediaStats::default()),
                metrics: Metrics::new(),
                nonces,
                replays: hookflash_sip::digest::ReplayGuard::new(330, 200_000),
                sip_guard: hookflash_sip::auth_guard::AuthGuard::default(),
                calls: Mutex::new(HashMap::new()),
                orbits: Mutex::new(HashMap::new()),
                conferences: std::sync::Mutex::new(HashMap::new()),
                queues: queues::Queues::default(),
                events: EventBus::new(EVENT_BACKLOG),
                cluster: std::sync::OnceLock::new(),
                states: hookflash_sip::router::StateRouter::start(),
                music_on_hold,
                fetcher: fetch::AudioFetcher::with_policy(
                    fetch::DEFAULT_CACHE_BYTES,
                    fetch::FetchPolicy {
                        allow_private: config.security.fetch_private,
                        // Never our own listeners (resolved after binding: port 0 → real).
                        own: [Some(config.http.listen), sip_udp, sip_tcp, sip_tls_addr]
                            .into_iter()
                            .flatten()
                            .collect(),
                    },
                ),
                tts: hookflash_media::Tts::new(config.data_dir.join("tts")),
                recordings_dir: config.data_dir.join("recordings"),
                shutdown: CancellationToken::new(),
                stopped: CancellationToken::new(),
                sip_port,
                outbound: dialing::OutboundGate::new(),
                apps: apps::AppChannel::new(),
                inbound_hook: inbound_hook::HookSlot::default(),
            }),
        };
        let challenger = stateless::Challenger {
            engine: Arc::downgrade(&engine.inner),
        };
        if engine
            .inner
            .sip
            .responder
            .set(Arc::new(challenger))
            .is_err()
        {
            warn!("stateless responder was installed twice");
        }
        let serving = engine.clone();
        tokio::spawn(async move { serving.inner.sip.serve().await });
        let dispatching = engine.clone();
        tokio::spawn(async move { dispatching.dispatch(incoming).await });
        let purging = engine.clone();
        tokio::spawn(async move { purging.purge_registrations().await });
        let allowing = engine.clone();
        let flood_allow = config.security.flood_allow.clone();
        tokio::spawn(async move { allowing.keep_flood_allow_list(flood_allow).await });
        engine.repair_recordings().await;
        engine.repair_voicemails().await;
        // Calls a crash cut get their records now; then the heartbeat that dates the next
        // crash's cut calls starts. Only this node's calls: the others' belong to their
        // nodes (or to the survivor that finds their node dead).
        engine.inner.store.set_node_id(&config.cluster.node_id);
        match engine.inner.store.recover_live_calls().await {
            Ok(0) => {}
            Ok(n) => {
                info!(
                    calls = n,
                    "call records written for calls cut by the last crash"
                );
                engine.inner.metrics.crash_records.inc_by(n as u64);
            }
            Err(e) => warn!(error = %e, "cannot recover the calls of the last crash"),
        }
        let beating = engine.clone();
        let every = Duration::from_secs(config.cluster.heartbeat_secs.max(1));
        let dead_after = Duration::from_secs(config.cluster.node_dead_after_secs.max(1));
        tokio::spawn(async move { beating.heartbeat(every, dead_after).await });
        if let Some(url) = &config.cluster.nats_url {
            let cluster =
                cluster::start(&engine, &config.cluster.node_id, url, EVENT_BACKLOG).await?;
            if engine.inner.cluster.set(cluster).is_err() {
                warn!("the cluster bus was started twice");
            }
        }
        Ok(engine)
    }

    /// Notes every `every` that this node is alive (its row in the shared store's `nodes`),
    /// and closes the calls of any other node silent for `dead_after` (cause `node_failure`,
    /// exactly once across the survivors: `store/src/nodes.rs`). Ends with the shutdown.
    async fn heartbeat(&self, every: Duration, dead_after: Duration) {
        let store = &self.inner.store;
        let me = store.node_id().unwrap_or_default().to_string();
        let mut watch = liveness::SilenceWatch::new(&me, every, dead_after);
        loop {
            let now = sip_glue::now_ms();
            if let Err(e) = store.heartbeat(now).await {
                warn!(error = %e, "heartbeat not written");
            } else {
                // One read of the nodes per tick. Only nodes this node itself watched stay
                // silent are declared dead (liveness.rs): a stall or a clock step here must
                // not make live nodes look dead.
                let rows = match store.nodes().await {
                    Ok(rows) => rows,
                    Err(e) => {
                        warn!(error = %e, "cannot read the cluster's nodes");
                        Vec::new()
                    }
                };
                let silent = watch.tick(&rows);
                let mut dead: Vec<String> = rows
                    .into_iter()
                    .filter(|n| n.dead_since.is_some())
                    .map(|n| n.node_id)
                    .collect();
                match store
                    .reap_dead_nodes(&me, now, dead_after.as_millis() as i64, &silent)
                    .await
                {
                    Ok(reaped) => {
                        for node in reaped {
                            warn!(node = %node.node_id, calls = node.calls,
                                "cluster node declared dead; its calls got records (node_failure)");
                            self.inner.metrics.nodes_declared_dead.inc();
                            self.inner
                                .metrics
                                .node_failure_records
                                .inc_by(node.calls as u64);
                            dead.push(node.node_id);
                        }
                    }
                    Err(e) => warn!(error = %e, "cannot look for dead cluster nodes"),
                }
                // Every survivor (not only the one that closed the records) stops listing
                // the calls of a node taken for dead: they went down with it. (One another
                // survivor declares dead after this tick's read is seen at the next tick.)
                if self.inner.cluster.get().is_some() {
                    for node in &dead {
                        let forgotten = self.inner.events.forget_node(node);
                        if forgotten > 0 {
                            info!(node = %node, calls = forgotten,
                                "no longer listing a dead node's calls");
                        }
                    }
                }
            }
            tokio::select! {
                _ = self.inner.stopped.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }

    pub fn sip_udp_addr(&self) -> Option<SocketAddr> {
        self.inner.sip.udp_addr
    }

    pub fn sip_tcp_addr(&self) -> Option<SocketAddr> {
        self.inner.sip.tcp_addr
    }

    /// The SIP-over-TLS listener's address, when `sip.tls` is set.
    pub fn sip_tls_addr(&self) -> Option<SocketAddr> {
        self.inner.sip.tls_addr
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Where call recordings (and, beside them, voicemail) are written.
    pub fn recordings_dir(&self) -> &std::path::Path {
        &self.inner.recordings_dir
    }

    /// Trunk addresses are never rate-limited by the flood guard: the allow-list is the
    /// configured sources plus every trunk whose host is an IP literal, refreshed every few
    /// seconds (the store's cache makes an unchanged list cheap).
    async fn keep_flood_allow_list(&self, configured: Vec<std::net::IpAddr>) {
        let mut last: Option<Vec<std::net::IpAddr>> = None;
        loop {
            let mut allow = configured.clone();
            match self.inner.store.trunk_ips().await {
                Ok(ips) => allow.extend(ips),
                Err(e) => warn!(error = %e, "cannot list trunk addresses for the flood allow-list"),
            }
            allow.sort();
            allow.dedup();
            if last.as_ref() != Some(&allow) {
                debug!(sources = allow.len(), "flood guard allow-list updated");
                self.inner.sip.flood.set_allowed(allow.iter().copied());
                last = Some(allow);
            }
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
        }
    }

    async fn dispatch(&self, mut incoming: IncomingRequests) {
        loop {
            let tx = tokio::select! {
                _ = self.inner.stopped.cancelled() => break,
                tx = incoming.next() => match tx { Some(tx) => tx, None => break },
            };
            self.inner
                .metrics
                .sip_requests
                .get_or_create(&metrics::MethodLabel {
                    method: tx.request().method.to_string(),
                })
                .inc();
            let engine = self.clone();
            tokio::spawn(async move { engine.handle_transaction(tx).await });
        }
        debug!("SIP dispatcher stopped");
    }

    async fn handle_transaction(&self, mut tx: ServerTransaction) {
        let method = tx.request().method;
        if method != Method::Ack {
            if let Some((status, why)) = validate::check_request(tx.request()) {
                info!(%method, why, "refusing malformed request");
                reply(&mut tx, status, vec![]).await;
                return;
            }
        }
        let in_dialog = tx.request().to_header_tag_present();
        if in_dialog {
            match self.inner.sip.dialogs.handle_in_dialog(&mut tx).await {
                Some(Err(e)) => {
                    debug!(error = %e, %method, "in-dialog request handling ended with error");
                }
                Some(Ok(())) => {}
                None if method == Method::Ack => {}
                None => reply(&mut tx, StatusCode::CallTransactionDoesNotExist, vec![]).await,
            }
            return;
        }
        match method {
            Method::Register => self.handle_register(tx).await,
            Method::Invite => {
                if self.inner.shutdown.is_cancelled() {
                    // Draining for a stop: the caller should try another node or later.
                    let retry = Header::Other("Retry-After".into(), "30".into());
                    reply(&mut tx, StatusCode::ServiceUnavailable, vec![retry]).await;
                    return;
                }
                let span = tracing::info_span!("call", call_id = tracing::field::Empty);
                // Boxed: the call set-up future is large, other requests need not carry it.
                Box::pin(call::run_inbound(self.clone(), tx).instrument(span)).await
            }
            Method::Options => {
                let allow = Header::Allow(ALLOW.into());
                if self.inner.shutdown.is_cancelled() {
                    // Draining: a SIP front probing with OPTIONS takes this node out.
                    let retry = Header::Other("Retry-After".into(), "30".into());
                    reply(&mut tx, StatusCode::ServiceUnavailable, vec![allow, retry]).await;
                    return;
                }
                reply(&mut tx, StatusCode::OK, vec![allow]).await
            }
            Method::Ack => {}
            Method::Bye | Method::Cancel => {
                reply(&mut tx, StatusCode::CallTransactionDoesNotExist, vec![]).await
            }
            _ => {
                let allow = Header::Allow(ALLOW.into());
                reply(&mut tx, StatusCode::MethodNotAllowed, vec![allow]).await
            }
        }
    }

    /// Recordings a crash left unfinished: fix their WAV headers so they play, and list them
    /// as `repaired` (or `failed` if the file is gone or unreadable).
    /// Voicemail messages a crash left unfinished: repair the WAV, complete the row.
    async fn repair_voicemails(&self) {
        let store = &self.inner.store;
        let unfinished = match store.unfinished_voicemails().await {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "cannot list unfinished voicemail messages");
                return;
            }
        };
        for msg in unfinished {
            let path = msg.path.clone();
            let outcome =
                tokio::task::spawn_blocking(move || hookflash_media::repair_wav(&path)).await;
            let (state, duration_ms) = match outcome {
                Ok(Ok(o)) => ("repaired", o.duration.as_millis() as i64),
                Ok(Err(e)) => {
                    warn!(message = %msg.id, error = %e, "voicemail could not be repaired");
                    ("failed", 0)
                }
                Err(e) => {
                    warn!(message = %msg.id, error = %e, "repair task failed");
                    ("failed", 0)
                }
            };
            let bytes = std::fs::metadata(&msg.path)
                .map(|m| m.len() as i64)
                .unwrap_or(0);
            match store
                .finish_voicemail(&msg.id, state, duration_ms, bytes)
                .await
            {
                Ok(_) => {
                    info!(message = %msg.id, state, duration_ms, "unfinished voicemail repaired")
                }
                Err(e) => warn!(message = %msg.id, error = %e, "cannot complete the voicemail row"),
            }
        }
    }

    async fn repair_recordings(&self) {
        let store = &self.inner.store;
        let unfinished = match store.unfinished_recordings().await {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "cannot list unfinished recordings");
                return;
            }
        };
        for rec in unfinished {
            let path = rec.path.clone();
            let outcome =
                tokio::task::spawn_blocking(move || hookflash_media::repair_wav(&path)).await;
            let (state, duration_ms, bytes) = match outcome {
                Ok(Ok(o)) => (
                    "repaired",
                    o.duration.as_millis() as i64,
                    std::fs::metadata(&rec.path)
                        .map(|m| m.len() as i64)
                        .unwrap_or(0),
                ),
                Ok(Err(e)) => {
                    warn!(recording = %rec.id, error = %e, "recording could not be repaired");
                    ("failed", 0, 0)
                }
                Err(e) => {
                    warn!(recording = %rec.id, error = %e, "repair task failed");
                    ("failed", 0, 0)
                }
            };
            let ended = rec.started_at + duration_ms;
            if let Err(e) = store
                .finish_recording(&rec.id, state, ended, duration_ms, bytes)
                .await
            {
                warn!(recording = %rec.id, error = %e, "cannot mark the recording repaired");
            } else {
                info!(recording = %rec.id, state, duration_ms, "unfinished recording repaired after restart");
            }
        }
    }

    async fn purge_registrations(&self) {
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        loop {
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            match self
                .inner
                .store
                .purge_expired_registrations(now_unix())
                .await
            {
                Ok(0) => {}
                Ok(n) => info!(removed = n, "expired registrations purged"),
                Err(e) => warn!(error = %e, "could not purge registrations"),
            }
        }
    }

    /// Prometheus text, with the mirrored gauges refreshed first.
    pub async fn metrics_text(&self) -> String {
        let m = &self.inner.metrics;
        let active = self.inner.calls.lock().map(|c| c.len()).unwrap_or(0);
        m.active_calls.set(active as i64);
        if let Ok(n) = self.inner.store.count_registrations(now_unix()).await {
            m.active_registrations.set(n);
        }
        m.refresh_media(&self.inner.media_stats);
        m.refresh_flood(&self.inner.sip.flood);
        m.refresh_tcp(&self.inner.sip.tcp_gate);
        m.refresh_sip_guard(&self.inner.sip_guard);
        m.rtp_ports_in_use.set(self.inner.ports.in_use() as i64);
        m.sip_dialogs.set(self.inner.sip.dialogs.len() as i64);
        m.sip_transactions
            .set(self.inner.sip.running_transactions() as i64);
        m.encode()
    }

    /// Every call in progress, all accounts (operator view).
    pub fn active_calls(&self) -> Vec<CallInfo> {
        self.inner
            .calls
            .lock()
            .map(|c| c.values().map(|e| e.info.clone()).collect())
            .unwrap_or_default()
    }

    /// The event bus (subscribe for an account's call events).
    pub fn events(&self) -> &EventBus {
        &self.inner.events
    }

    /// True once the SIP transports are serving and the database answers.
    pub async fn ready(&self) -> bool {
        !self.inner.shutdown.is_cancelled() && self.inner.store.ping().await.is_ok()
    }

    /// Stops the server gracefully: at once `/readyz` says not ready and new INVITEs get 503
    /// with Retry-After; calls in progress go on for up to `grace`; then the remaining ones are
    /// ended (BYE/CANCEL with cause "shutdown"), their records written (up to 5 s), and SIP
    /// stops.
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.shutdown.cancel();
        let remaining = || self.inner.calls.lock().map(|c| c.len()).unwrap_or(0);
        if remaining() > 0 && !grace.is_zero() {
            info!(
                calls = remaining(),
                grace_secs = grace.as_secs(),
                "draining: calls in progress may finish, new ones get 503"
            );
            let until = tokio::time::Instant::now() + grace;
            while tokio::time::Instant::now() < until && remaining() > 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        if remaining() > 0 {
            info!(calls = remaining(), "ending the calls still in progress");
        }
        let grace = Duration::from_secs(5);
        let senders: Vec<_> = self
            .inner
            .calls
            .lock()
            .map(|c| c.values().map(|e| e.commands.clone()).collect())
            .unwrap_or_default();
        for s in senders {
            let _ = s
                .send(CallCommand::Hangup {
                    cause: EndCause::Shutdown,
                    leg: None,
                    reply: None,
                })
                .await;
        }
        let deadline = tokio::time::Instant::now() + grace;
        while tokio::time::Instant::now() < deadline
            && self
                .inner
                .calls
                .lock()
                .map(|c| !c.is_empty())
                .unwrap_or(false)
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.inner.stopped.cancel();
        self.inner.sip.shutdown();
    }
}

/// `sip.trusted_proxies` as the SIP layer checks them.
fn fronts_of(list: &[hookflash_config::TrustedProxy]) -> hookflash_sip::source::Fronts {
    let mut fronts = hookflash_sip::source::Fronts::default();
    for p in list {
        match p {
            hookflash_config::TrustedProxy::Ip(ip) => fronts.ips.push(*ip),
            hookflash_config::TrustedProxy::Addr(a) => fronts.addrs.push(*a),
        }
    }
    fronts
}

/// The digest nonce issuer, keyed with a secret kept in the store: every node sharing the
/// database accepts the nonces of the others (behind a SIP front, a phone's authenticated
/// retry may reach another node than its challenge came from). Falls back to a random key
/// (nonces valid on this node only) if the store cannot give one.
async fn shared_nonce_issuer(store: &Store) -> NonceIssuer {
    const MAX_AGE_SECS: u64 = 300;
    match store.server_secret("sip_digest_nonce_key").await {
        Ok(hex_key) => {
            let mut key = [0u8; 32];
            match hex::decode_to_slice(hex_key.trim(), &mut key) {
                Ok(()) => return NonceIssuer::new(key, MAX_AGE_SECS),
                Err(e) => warn!(error = %e, "stored digest nonce key unusable; using a random one"),
            }
        }
        Err(e) => warn!(error = %e, "no digest nonce key from the store; using a random one"),
    }
    NonceIssuer::random(MAX_AGE_SECS)
}

pub(crate) const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, REGISTER, INFO, UPDATE";

trait ToTagPresent {
    fn to_header_tag_present(&self) -> bool;
}

impl ToTagPresent for hookflash_sip::msg::Request {
    fn to_header_tag_present(&self) -> bool {
        sip_glue::header_value(self, "To")
            .map(|t| t.to_ascii_lowercase().contains(";tag="))
            .unwrap_or(false)
    }
}
