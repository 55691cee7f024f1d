//! Prometheus metrics a telephony operator expects. Counters are updated by the engine as
//! things happen; gauges that mirror state elsewhere (registrations, dialogs, relay counters)
//! are refreshed just before each scrape.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CauseLabel {
    pub cause: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabel {
    pub method: String,
}

pub struct Metrics {
    pub registry: Registry,
    pub active_calls: Gauge,
    pub active_registrations: Gauge,
    pub calls_started: Counter,
    /// Call records written at start for calls a crash cut.
    pub crash_records: Counter,
    /// Call records this node wrote for calls of dead cluster nodes (cause node_failure).
    pub node_failure_records: Counter,
    /// Cluster nodes this node declared dead.
    pub nodes_declared_dead: Counter,
    pub calls_ended: Family<CauseLabel, Counter>,
    pub rtp_packets_relayed: Gauge,
    pub rtp_packets_dropped: Gauge,
    pub rtp_ports_in_use: Gauge,
    pub recordings_active: Gauge,
    /// Relay bridges whose task runs (a bridge outliving its call shows here and in the RTP
    /// ports in use).
    pub rtp_bridges_active: Gauge,
    pub recording_frames_dropped: Gauge,
    pub sip_dialogs: Gauge,
    pub conferences_active: Gauge,
    /// Calls whose audio goes through a conference mixer of their own (a supervisor or an
    /// added party); the others are on the relay fast path.
    pub calls_on_mixer: Gauge,
    pub sip_transactions: Gauge,
    pub sip_requests: Family<MethodLabel, Counter>,
    pub auth_failures: Counter,
    pub sip_flood_dropped: Gauge,
    pub stateless_challenges: Counter,
    /// Session refreshes (RFC 4028) received from phones whose session timer runs.
    pub session_refreshes: Counter,
    pub sip_tcp_connections: Gauge,
    pub sip_auth_bans: Gauge,
    pub sip_auth_refused: Gauge,
    pub sip_auth_banned_sources: Gauge,
    pub sip_auth_locked_users: Gauge,
    pub sip_tcp_refused: Gauge,
    pub sip_tcp_silent_closed: Gauge,
    pub sip_tcp_accept_errors: Gauge,
    pub sip_tls_handshake_failed: Gauge,
    pub rtp_srtp_rejected: Gauge,
    pub sip_flood_bans: Gauge,
    pub sip_flood_banned_sources: Gauge,
    /// Outbound legs the dial rules refused, by reason (not_permitted, outside_session,
    /// outside_refer, concurrent_limit, rate_limit).
    pub outbound_refused: Family<ReasonLabel, Counter>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("hookflash");
        let m = Metrics {
            active_calls: Gauge::default(),
            active_registrations: Gauge::default(),
            calls_started: Counter::default(),
            crash_records: Counter::default(),
            node_failure_records: Counter::default(),
            nodes_declared_dead: Counter::default(),
            calls_ended: Family::default(),
            rtp_packets_relayed: Gauge::default(),
            rtp_packets_dropped: Gauge::default(),
            rtp_ports_in_use: Gauge::default(),
            recordings_active: Gauge::default(),
            rtp_bridges_active: Gauge::default(),
            recording_frames_dropped: Gauge::default(),
            sip_dialogs: Gauge::default(),
            conferences_active: Gauge::default(),
            calls_on_mixer: Gauge::default(),
            sip_transactions: Gauge::default(),
            sip_requests: Family::default(),
            auth_failures: Counter::default(),
            sip_flood_dropped: Gauge::default(),
            stateless_challenges: Counter::default(),
            session_refreshes: Counter::default(),
            sip_tcp_connections: Gauge::default(),
            sip_auth_bans: Gauge::default(),
            sip_auth_refused: Gauge::default(),
            sip_auth_banned_sources: Gauge::default(),
            sip_auth_locked_users: Gauge::default(),
            sip_tcp_refused: Gauge::default(),
            sip_tcp_silent_closed: Gauge::default(),
            sip_tcp_accept_errors: Gauge::default(),
            sip_tls_handshake_failed: Gauge::default(),
            rtp_srtp_rejected: Gauge::default(),
            sip_flood_bans: Gauge::default(),
            sip_flood_banned_sources: Gauge::default(),
            outbound_refused: Family::default(),
            registry: Registry::default(),
        };
        registry.register("active_calls", "Calls in progress", m.active_calls.clone());
        registry.register(
            "active_registrations",
            "Unexpired registered contacts",
            m.active_registrations.clone(),
        );
        registry.register(
            "calls_started",
            "Calls accepted for routing",
            m.calls_started.clone(),
        );
        registry.register(
            "crash_records",
            "Call records written at start for calls the last crash cut (cause crash)",
            m.crash_records.clone(),
        );
        registry.register(
            "node_failure_records",
            "Call records written for the calls of cluster nodes this node declared dead (cause node_failure)",
            m.node_failure_records.clone(),
        );
        registry.register(
            "nodes_declared_dead",
            "Cluster nodes this node found silent for node_dead_after_secs and declared dead",
            m.nodes_declared_dead.clone(),
        );
        registry.register(
            "calls_ended",
            "Calls ended, by cause",
            m.calls_ended.clone(),
        );
        // Relay counters are monotonic but owned by the media layer; exported as gauges
        // named *_total so dashboards can rate() them.
        registry.register(
            "rtp_packets_relayed_total",
            "RTP/RTCP packets forwarded by the relay",
            m.rtp_packets_relayed.clone(),
        );
        registry.register(
            "rtp_packets_dropped_total",
            "RTP/RTCP packets dropped by the relay (foreign source, no destination)",
            m.rtp_packets_dropped.clone(),
        );
        registry.register(
            "rtp_ports_in_use",
            "RTP port pairs allocated",
            m.rtp_ports_in_use.clone(),
        );
        registry.register(
            "recordings_active",
            "Call recordings running",
            m.recordings_active.clone(),
        );
        registry.register(
            "rtp_bridges_active",
            "Relay bridges whose task runs",
            m.rtp_bridges_active.clone(),
        );
        // Monotonic, owned by the media layer (like the relay counters): a gauge named *_total.
        registry.register(
            "recording_frames_dropped_total",
            "20 ms recording frames lost because a recording's writer fell behind (written as silence)",
            m.recording_frames_dropped.clone(),
        );
        registry.register(
            "sip_dialogs",
            "SIP dialogs held by the stack",
            m.sip_dialogs.clone(),
        );
        registry.register(
            "conferences_active",
            "Conferences running (each mixing its participants)",
            m.conferences_active.clone(),
        );
        registry.register(
            "calls_on_mixer",
            "Two-party calls whose audio goes through a mixer of their own now (a supervisor or an added party); the others take the relay fast path",
            m.calls_on_mixer.clone(),
        );
        registry.register(
            "sip_transactions",
            "SIP transactions running in the stack",
            m.sip_transactions.clone(),
        );
        registry.register(
            "sip_requests",
            "SIP requests received, by method",
            m.sip_requests.clone(),
        );
        registry.register(
            "auth_failures",
            "Digest authentication failures (wrong password, unknown user, bad nonce)",
            m.auth_failures.clone(),
        );
        registry.register(
            "sip_flood_dropped_total",
            "SIP requests dropped unanswered because their source was over its rate limit or banned",
            m.sip_flood_dropped.clone(),
        );
        registry.register(
            "session_refreshes",
            "Session-timer refreshes (re-INVITE/UPDATE) received from callers whose timer runs",
            m.session_refreshes.clone(),
        );
        registry.register(
            "sip_stateless_challenges",
            "INVITEs without credentials answered 407 before the SIP stack made a transaction",
            m.stateless_challenges.clone(),
        );
        registry.register(
            "sip_auth_bans_total",
            "Digest password guessing: sources banned and extensions locked",
            m.sip_auth_bans.clone(),
        );
        registry.register(
            "sip_auth_refused_total",
            "Digest credentials refused unchecked because their source is banned or extension locked",
            m.sip_auth_refused.clone(),
        );
        registry.register(
            "sip_auth_banned_sources",
            "Sources banned now for digest password guessing",
            m.sip_auth_banned_sources.clone(),
        );
        registry.register(
            "sip_auth_locked_users",
            "Extensions locked now for digest password guessing",
            m.sip_auth_locked_users.clone(),
        );
        registry.register(
            "sip_tcp_connections",
            "SIP TCP connections open (admitted by the listener)",
            m.sip_tcp_connections.clone(),
        );
        registry.register(
            "sip_tcp_refused_total",
            "SIP TCP connections closed at once: over the per-source or total limit",
            m.sip_tcp_refused.clone(),
        );
        registry.register(
            "sip_tcp_silent_closed_total",
            "SIP TCP connections closed because they sent nothing in time",
            m.sip_tcp_silent_closed.clone(),
        );
        registry.register(
            "sip_tcp_accept_errors_total",
            "SIP TCP accept errors (e.g. at the open-file limit; the listener backs off)",
            m.sip_tcp_accept_errors.clone(),
        );
        registry.register(
            "sip_tls_handshake_failed_total",
            "SIP TLS connections closed because their handshake failed or did not finish in time",
            m.sip_tls_handshake_failed.clone(),
        );
        registry.register(
            "rtp_srtp_rejected_total",
            "Packets on SRTP legs that did not authenticate (plain RTP, another key, replays): dropped",
            m.rtp_srtp_rejected.clone(),
        );
        registry.register(
            "sip_flood_bans_total",
            "Sources banned for exceeding the per-source SIP request limit",
            m.sip_flood_bans.clone(),
        );
        registry.register(
            "sip_flood_banned_sources",
            "Sources banned now",
            m.sip_flood_banned_sources.clone(),
        );
        registry.register(
            "outbound_refused",
            "Outbound calls refused by the dial rules or the account's fraud limits, by reason",
            m.outbound_refused.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Mirrors the media layer's process-wide counters (relay, recordings) into the gauges.
    pub fn refresh_media(&self, stats: &hookflash_media::MediaStats) {
        use std::sync::atomic::Ordering::Relaxed;
        let v =
            |a: &std::sync::atomic::AtomicU64| i64::try_from(a.load(Relaxed)).unwrap_or(i64::MAX);
        self.rtp_packets_relayed.set(v(&stats.packets_relayed));
        self.rtp_packets_dropped.set(v(&stats.packets_dropped));
        self.rtp_srtp_rejected.set(v(&stats.srtp_rejected));
        self.recordings_active.set(v(&stats.recordings_active));
        self.rtp_bridges_active.set(v(&stats.bridges_active));
        self.recording_frames_dropped
            .set(v(&stats.recording_frames_dropped));
    }

    /// Mirrors the flood guard's counters.
    pub fn refresh_flood(&self, guard: &hookflash_sip::flood::FloodGuard) {
        use std::sync::atomic::Ordering::Relaxed;
        let v =
            |a: &std::sync::atomic::AtomicU64| i64::try_from(a.load(Relaxed)).unwrap_or(i64::MAX);
        self.sip_flood_dropped.set(v(&guard.stats.dropped));
        self.sip_flood_bans.set(v(&guard.stats.bans));
        self.sip_flood_banned_sources
            .set(guard.banned(std::time::Instant::now()) as i64);
    }

    /// Mirrors the SIP TCP listener's counters.
    pub fn refresh_tcp(&self, gate: &hookflash_sip::tcp::TcpGate) {
        use std::sync::atomic::Ordering::Relaxed;
        let v =
            |a: &std::sync::atomic::AtomicU64| i64::try_from(a.load(Relaxed)).unwrap_or(i64::MAX);
        self.sip_tcp_connections.set(gate.open() as i64);
        self.sip_tcp_refused.set(v(&gate.stats.refused));
        self.sip_tcp_silent_closed.set(v(&gate.stats.silent_closed));
        self.sip_tcp_accept_errors.set(v(&gate.stats.accept_errors));
        self.sip_tls_handshake_failed
            .set(v(&gate.stats.tls_handshake_failed));
    }

    /// Mirrors the digest guessing guard's counters.
    pub fn refresh_sip_guard(&self, guard: &hookflash_sip::auth_guard::AuthGuard) {
        use std::sync::atomic::Ordering::Relaxed;
        let v =
            |a: &std::sync::atomic::AtomicU64| i64::try_from(a.load(Relaxed)).unwrap_or(i64::MAX);
        let stats = guard.stats();
        self.sip_auth_bans
            .set(v(&stats.source_bans).saturating_add(v(&stats.identity_locks)));
        self.sip_auth_refused.set(v(&stats.refused));
        let (sources, users) = guard.active(std::time::Instant::now());
        self.sip_auth_banned_sources.set(sources as i64);
        self.sip_auth_locked_users.set(users as i64);
    }

    /// Counts an outbound call refused by the dial rules.
    pub fn refused(&self, reason: &str) {
        self.outbound_refused
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            tracing::warn!("metrics encoding failed");
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_the_operator_metrics() {
        let m = Metrics::new();
        m.calls_started.inc();
        m.calls_ended
            .get_or_create(&CauseLabel {
                cause: "normal".into(),
            })
            .inc();
        m.active_calls.set(3);
        let text = m.encode();
        assert!(text.contains("hookflash_calls_started_total 1"), "{text}");
        assert!(
            text.contains("hookflash_calls_ended_total{cause=\"normal\"} 1"),
            "{text}"
        );
        assert!(text.contains("hookflash_active_calls 3"), "{text}");
        assert!(
            text.contains("hookflash_rtp_packets_relayed_total 0"),
            "{text}"
        );
        assert!(text.contains("hookflash_sip_dialogs 0"), "{text}");
    }

    #[test]
    fn mirrors_the_media_counters() {
        use std::sync::atomic::Ordering::Relaxed;
        let m = Metrics::new();
        let stats = hookflash_media::MediaStats::default();
        stats.packets_relayed.store(7, Relaxed);
        stats.recordings_active.store(3, Relaxed);
        stats.bridges_active.store(2, Relaxed);
        stats.recording_frames_dropped.store(42, Relaxed);
        m.refresh_media(&stats);
        let text = m.encode();
        assert!(
            text.contains("hookflash_rtp_packets_relayed_total 7"),
            "{text}"
        );
        assert!(text.contains("hookflash_recordings_active 3"), "{text}");
        assert!(text.contains("hookflash_rtp_bridges_active 2"), "{text}");
        assert!(
            text.contains("hookflash_recording_frames_dropped_total 42"),
            "{text}"
        );
    }
}
