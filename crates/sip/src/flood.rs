//! Per-source request limits (the "pike" defence): a source that sends more than
//! `max_requests` SIP requests within one `window` is banned for `ban` and everything it sends
//! meanwhile is dropped before the SIP stack makes a transaction of it. A flood of INVITEs
//! from one address then costs a counter increment per datagram instead of a transaction, a
//! challenge and 32 s of retransmission state each.
//!
//! Sans-IO: [`FloodGuard::check`] takes the source and `now`; the table is bounded
//! (`max_sources`) and pruned of quiet sources. Allow-listed addresses (the account trunks'
//! addresses, configured networks) are never limited.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

/// Limits; `max_requests == 0` turns the guard off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FloodLimits {
    pub window: Duration,
    pub max_requests: u32,
    pub ban: Duration,
    /// The most sources tracked at once; beyond it, unknown sources pass uncounted (a spray
    /// of spoofed UDP sources must not grow the table without bound).
    pub max_sources: usize,
}

impl Default for FloodLimits {
    fn default() -> Self {
        FloodLimits {
            window: Duration::from_secs(2),
            max_requests: 200,
            ban: Duration::from_secs(60),
            max_sources: 65_536,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Drop,
}

#[derive(Debug, Clone, Copy)]
struct SourceState {
    window_start: Instant,
    count: u32,
    banned_until: Option<Instant>,
}

/// Counters for /metrics.
#[derive(Debug, Default)]
pub struct FloodStats {
    /// Requests dropped because their source was over its limit or banned.
    pub dropped: AtomicU64,
    /// Bans imposed.
    pub bans: AtomicU64,
}

pub struct FloodGuard {
    limits: FloodLimits,
    allowed: RwLock<HashSet<IpAddr>>,
    sources: Mutex<HashMap<IpAddr, SourceState>>,
    pub stats: FloodStats,
}

impl FloodGuard {
    pub fn new(limits: FloodLimits) -> Self {
        FloodGuard {
            limits,
            allowed: RwLock::new(HashSet::new()),
            sources: Mutex::new(HashMap::new()),
            stats: FloodStats::default(),
        }
    }

    pub fn limits(&self) -> FloodLimits {
        self.limits
    }

    /// Replaces the allow-list (trunk addresses and configured sources).
    pub fn set_allowed(&self, ips: impl IntoIterator<Item = IpAddr>) {
        let set: HashSet<IpAddr> = ips.into_iter().map(canonical).collect();
        match self.allowed.write() {
            Ok(mut g) => *g = set,
            Err(poisoned) => *poisoned.into_inner() = set,
        }
    }

    fn is_allowed(&self, ip: IpAddr) -> bool {
        match self.allowed.read() {
            Ok(g) => g.contains(&ip),
            Err(poisoned) => poisoned.into_inner().contains(&ip),
        }
    }

    /// Counts one request from `ip` at `now`.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Verdict {
        if self.limits.max_requests == 0 {
            return Verdict::Pass;
        }
        let ip = canonical(ip);
        if self.is_allowed(ip) {
            return Verdict::Pass;
        }
        let mut sources = match self.sources.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if !sources.contains_key(&ip) && sources.len() >= self.limits.max_sources {
            self.prune(&mut sources, now);
            if sources.len() >= self.limits.max_sources {
                return Verdict::Pass;
            }
        }
        let state = sources.entry(ip).or_insert(SourceState {
            window_start: now,
            count: 0,
            banned_until: None,
        });
        if let Some(until) = state.banned_until {
            if now < until {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                return Verdict::Drop;
            }
            state.banned_until = None;
            state.window_start = now;
            state.count = 0;
        }
        if now.saturating_duration_since(state.window_start) >= self.limits.window {
            state.window_start = now;
            state.count = 0;
        }
        state.count = state.count.saturating_add(1);
        if state.count > self.limits.max_requests {
            state.banned_until = Some(now + self.limits.ban);
            self.stats.bans.fetch_add(1, Ordering::Relaxed);
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                source = %ip,
                limit = self.limits.max_requests,
                window_ms = self.limits.window.as_millis() as u64,
                ban_secs = self.limits.ban.as_secs(),
                "SIP source over its request limit: banned"
            );
            return Verdict::Drop;
        }
        Verdict::Pass
    }

    /// Bans `ip` until `now + for_how_long` (e.g. for password guessing found by the auth
    /// guard): its requests are then dropped before the stack sees them. Allow-listed sources
    /// are never banned.
    pub fn ban(&self, ip: IpAddr, now: Instant, for_how_long: Duration) {
        let ip = canonical(ip);
        if self.is_allowed(ip) {
            return;
        }
        let mut sources = match self.sources.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if !sources.contains_key(&ip) && sources.len() >= self.limits.max_sources {
            self.prune(&mut sources, now);
        }
        let until = now + for_how_long;
        let state = sources.entry(ip).or_insert(SourceState {
            window_start: now,
            count: 0,
            banned_until: None,
        });
        if state.banned_until.is_none_or(|u| u < until) {
            state.banned_until = Some(until);
            self.stats.bans.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sources banned now.
    pub fn banned(&self, now: Instant) -> usize {
        let sources = match self.sources.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        sources
            .values()
            .filter(|s| s.banned_until.is_some_and(|u| now < u))
            .count()
    }

    /// Forgets sources that are neither banned nor inside a current window.
    fn prune(&self, sources: &mut HashMap<IpAddr, SourceState>, now: Instant) {
        let window = self.limits.window;
        sources.retain(|_, s| {
            s.banned_until.is_some_and(|u| now < u)
                || now.saturating_duration_since(s.window_start) < window
        });
    }
}

/// IPv4-mapped IPv6 addresses count as their IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: u32) -> FloodLimits {
        FloodLimits {
            window: Duration::from_secs(2),
            max_requests: max,
            ban: Duration::from_secs(10),
            max_sources: 4,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_source_over_its_limit_is_banned_then_forgiven() {
        let g = FloodGuard::new(limits(3));
        let t0 = Instant::now();
        let a = ip("127.0.0.3");
        for _ in 0..3 {
            assert_eq!(g.check(a, t0), Verdict::Pass);
        }
        assert_eq!(g.check(a, t0), Verdict::Drop, "fourth in the window");
        // Banned: even after the window rolls over.
        assert_eq!(g.check(a, t0 + Duration::from_secs(5)), Verdict::Drop);
        assert_eq!(g.banned(t0 + Duration::from_secs(5)), 1);
        // Another source is not affected.
        assert_eq!(g.check(ip("127.0.0.4"), t0), Verdict::Pass);
        // After the ban a fresh window starts.
        let later = t0 + Duration::from_secs(11);
        assert_eq!(g.check(a, later), Verdict::Pass);
        assert_eq!(g.banned(later), 0);
        assert_eq!(g.stats.bans.load(Ordering::Relaxed), 1);
        assert_eq!(g.stats.dropped.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_steady_source_under_the_rate_is_never_limited() {
        let g = FloodGuard::new(limits(3));
        let t0 = Instant::now();
        let a = ip("127.0.0.5");
        // 3 requests per 2 s window, for a minute.
        for i in 0..90u64 {
            let now = t0 + Duration::from_millis(i * 667);
            assert_eq!(g.check(a, now), Verdict::Pass, "request {i}");
        }
    }

    #[test]
    fn allow_listed_sources_and_a_disabled_guard_pass() {
        let g = FloodGuard::new(limits(1));
        g.set_allowed([ip("::ffff:127.0.0.9")]);
        let t0 = Instant::now();
        for _ in 0..100 {
            assert_eq!(g.check(ip("127.0.0.9"), t0), Verdict::Pass);
        }
        let off = FloodGuard::new(limits(0));
        for _ in 0..100 {
            assert_eq!(off.check(ip("127.0.0.3"), t0), Verdict::Pass);
        }
    }

    #[test]
    fn a_source_banned_from_outside_is_dropped_until_the_ban_ends() {
        let g = FloodGuard::new(limits(100));
        g.set_allowed([ip("127.0.0.9")]);
        let t0 = Instant::now();
        g.ban(ip("127.0.0.3"), t0, Duration::from_secs(5));
        g.ban(ip("127.0.0.9"), t0, Duration::from_secs(5));
        assert_eq!(g.check(ip("127.0.0.3"), t0), Verdict::Drop);
        assert_eq!(g.check(ip("127.0.0.9"), t0), Verdict::Pass, "allow-listed");
        assert_eq!(
            g.check(ip("127.0.0.3"), t0 + Duration::from_secs(6)),
            Verdict::Pass
        );
    }

    #[test]
    fn the_table_is_bounded_and_pruned() {
        let g = FloodGuard::new(limits(1));
        let t0 = Instant::now();
        for i in 1..=4 {
            g.check(ip(&format!("10.0.0.{i}")), t0);
        }
        // Full: a fifth source passes uncounted while the others are in their window.
        for _ in 0..5 {
            assert_eq!(g.check(ip("10.0.0.5"), t0), Verdict::Pass);
        }
        // Once their windows are over they are pruned and the new source is counted.
        let later = t0 + Duration::from_secs(3);
        assert_eq!(g.check(ip("10.0.0.5"), later), Verdict::Pass);
        assert_eq!(g.check(ip("10.0.0.5"), later), Verdict::Drop);
    }
}
