//! Password guessing defence for every credential check (SIP digest, HTTP Basic, tokens, API
//! keys), below the dialects and without I/O: failed
//! credential checks are counted per source IP and per targeted identity (a login name, an API
//! key's hash, a token's subject); too many within a window ban the source, or lock the
//! identity, for a while. While banned or locked, a request is refused before its credential
//! is looked at, so a guess made during a ban learns nothing.
//!
//! The caller supplies the time (`now`), so every rule is testable with simulated time. Both
//! tables are bounded: when one is full, entries that no longer matter (no ban, window over)
//! are dropped first, then entries without a ban; when only bans are left, a new source or
//! identity is not tracked until room frees up (the other table still applies).
//!
//! Counting: a window starts at the first failure and lasts `*_window`; more than
//! `*_max_failures` failures inside it start the ban, and counting starts afresh afterwards.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Limits of the guard. [`GuardConfig::default`] holds the documented defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardConfig {
    /// More failures than this from one source within `source_window` ban it.
    pub source_max_failures: u32,
    pub source_window: Duration,
    pub source_ban: Duration,
    /// More failures than this against one identity (from any sources) within
    /// `identity_window` lock it.
    pub identity_max_failures: u32,
    pub identity_window: Duration,
    pub identity_lock: Duration,
    /// Table bounds (entries).
    pub max_sources: usize,
    pub max_identities: usize,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            source_max_failures: 10,
            source_window: Duration::from_secs(60),
            source_ban: Duration::from_secs(300),
            identity_max_failures: 20,
            identity_window: Duration::from_secs(300),
            identity_lock: Duration::from_secs(300),
            max_sources: 65_536,
            max_identities: 65_536,
        }
    }
}

/// Which limit refused the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The source address is banned.
    Source,
    /// The targeted identity is locked.
    Identity,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Source => "source",
            Scope::Identity => "identity",
        }
    }
}

/// A refusal: how long until the ban or lock ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    pub after: Duration,
    pub scope: Scope,
}

impl Retry {
    /// Whole seconds for a `Retry-After` header (rounded up, at least 1).
    pub fn after_secs(&self) -> u64 {
        let secs = self.after.as_secs() + u64::from(self.after.subsec_nanos() > 0);
        secs.max(1)
    }
}

/// What a credential claims to be: kind (`login`, `pat`, `apikey`, `sub`, `token`) and value.
/// Kept as a 128-bit hash, so the table's memory does not depend on what clients send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    key: u128,
    label: String,
}

impl Identity {
    /// An identity whose value is readable in logs (a login name, a token id, a user id);
    /// compared case-insensitively.
    pub fn new(kind: &str, value: &str) -> Identity {
        let value = value.to_lowercase();
        let mut label: String = format!("{kind}:{value}");
        if label.len() > 80 {
            let mut cut = 80;
            while !label.is_char_boundary(cut) {
                cut -= 1;
            }
            label.truncate(cut);
        }
        Identity {
            key: hash128(kind, &value),
            label,
        }
    }

    /// An identity for a secret (an API key, an opaque token): only a hash prefix is logged.
    pub fn secret(kind: &str, secret: &str) -> Identity {
        let key = hash128(kind, secret);
        Identity {
            key,
            label: format!("{kind}:{:08x}", (key >> 96) as u32),
        }
    }

    /// For logs.
    pub fn label(&self) -> &str {
        &self.label
    }
}

fn hash128(kind: &str, value: &str) -> u128 {
    let mut h = Sha256::new();
    h.update(kind.as_bytes());
    h.update([0u8]);
    h.update(value.as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    u128::from_be_bytes(b)
}

/// The key of a source address: IPv4 as is (also IPv4-mapped IPv6), IPv6 by its /64, the
/// smallest block a single subscriber usually gets.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    window_start: Instant,
    failures: u32,
    banned_until: Option<Instant>,
}

/// Still banned, or still inside its counting window.
fn live(e: &Entry, window: Duration, now: Instant) -> bool {
    e.banned_until.is_some_and(|u| u > now) || now < e.window_start + window
}

struct Limits {
    max_failures: u32,
    window: Duration,
    ban: Duration,
    cap: usize,
}

/// One bounded table (sources or identities).
struct Table<K> {
    map: HashMap<K, Entry>,
    limits: Limits,
    last_prune: Option<Instant>,
}

impl<K: std::hash::Hash + Eq + Copy> Table<K> {
    fn new(limits: Limits) -> Self {
        Table {
            map: HashMap::new(),
            limits,
            last_prune: None,
        }
    }

    fn banned(&self, key: &K, now: Instant) -> Option<Duration> {
        let until = self.map.get(key)?.banned_until?;
        (until > now).then(|| until - now)
    }

    /// Drops what no longer matters; every `window` at most, or when the table is full.
    fn prune(&mut self, now: Instant, force: bool) {
        let due = self
            .last_prune
            .is_none_or(|t| now.saturating_duration_since(t) >= self.limits.window);
        if !force && !due {
            return;
        }
        self.last_prune = Some(now);
        let window = self.limits.window;
        self.map.retain(|_, e| live(e, window, now));
    }

    /// Counts a failure; `Some(ban)` when this failure starts a ban. `None` also when the
    /// table is full of bans and the key cannot be tracked.
    fn failure(&mut self, key: K, now: Instant) -> Option<Duration> {
        self.prune(now, false);
        if !self.map.contains_key(&key) && self.map.len() >= self.limits.cap {
            self.prune(now, true);
            if self.map.len() >= self.limits.cap {
                // Only counting entries without a ban are dropped: each forgives fewer
                // failures than a ban.
                self.map
                    .retain(|_, e| e.banned_until.is_some_and(|u| u > now));
            }
            if self.map.len() >= self.limits.cap {
                return None;
            }
        }
        let limits = &self.limits;
        let e = self.map.entry(key).or_insert(Entry {
            window_start: now,
            failures: 0,
            banned_until: None,
        });
        if e.banned_until.is_some_and(|u| u > now) {
            // A failure counted while banned (a check raced with the ban's start): no
            // extension, the ban stands as it is.
            return None;
        }
        if e.banned_until.is_some() || now >= e.window_start + limits.window {
            *e = Entry {
                window_start: now,
                failures: 0,
                banned_until: None,
            };
        }
        e.failures += 1;
        if e.failures > limits.max_failures {
            e.banned_until = Some(now + limits.ban);
            e.failures = 0;
            e.window_start = now;
            return Some(limits.ban);
        }
        None
    }

    fn clear(&mut self, key: &K) {
        self.map.remove(key);
    }

    fn banned_count(&self, now: Instant) -> usize {
        self.map
            .values()
            .filter(|e| e.banned_until.is_some_and(|u| u > now))
            .count()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.len()
    }

    #[cfg(test)]
    fn live_count(&self, now: Instant) -> usize {
        let window = self.limits.window;
        self.map.values().filter(|e| live(e, window, now)).count()
    }
}

struct Tables {
    sources: Table<IpAddr>,
    identities: Table<u128>,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct GuardStats {
    /// Failed credential checks counted.
    pub failures: AtomicU64,
    /// Requests refused because their source was banned or their identity locked.
    pub refused: AtomicU64,
    pub source_bans: AtomicU64,
    pub identity_locks: AtomicU64,
}

/// The shared guard (one per HTTP server, in `AppState`).
pub struct AuthGuard {
    config: GuardConfig,
    tables: Mutex<Tables>,
    stats: GuardStats,
}

impl std::fmt::Debug for AuthGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthGuard")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Default for AuthGuard {
    fn default() -> Self {
        AuthGuard::new(GuardConfig::default())
    }
}

impl AuthGuard {
    pub fn new(config: GuardConfig) -> AuthGuard {
        let tables = Tables {
            sources: Table::new(Limits {
                max_failures: config.source_max_failures,
                window: config.source_window,
                ban: config.source_ban,
                cap: config.max_sources.max(1),
            }),
            identities: Table::new(Limits {
                max_failures: config.identity_max_failures,
                window: config.identity_window,
                ban: config.identity_lock,
                cap: config.max_identities.max(1),
            }),
        };
        AuthGuard {
            config,
            tables: Mutex::new(tables),
            stats: GuardStats::default(),
        }
    }

    pub fn config(&self) -> &GuardConfig {
        &self.config
    }

    pub fn stats(&self) -> &GuardStats {
        &self.stats
    }

    fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        // The tables stay consistent even if a holder panicked (no invariant spans a call).
        self.tables.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Before a credential is checked: `Err` while the source is banned or the identity
    /// locked (the longer of both when both apply).
    pub fn check(
        &self,
        source: Option<IpAddr>,
        identity: &Identity,
        now: Instant,
    ) -> Result<(), Retry> {
        let t = self.tables();
        let by_source = source
            .and_then(|ip| t.sources.banned(&source_key(ip), now))
            .map(|after| Retry {
                after,
                scope: Scope::Source,
            });
        let by_identity = t.identities.banned(&identity.key, now).map(|after| Retry {
            after,
            scope: Scope::Identity,
        });
        drop(t);
        let refusal = match (by_source, by_identity) {
            (Some(s), Some(i)) => Some(if i.after > s.after { i } else { s }),
            (s, i) => s.or(i),
        };
        match refusal {
            Some(r) => {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                Err(r)
            }
            None => Ok(()),
        }
    }

    /// After a credential failed: counts it against the source and the identity. `Err` when
    /// this failure started a ban or lock (the caller answers as during one).
    pub fn failure(
        &self,
        source: Option<IpAddr>,
        identity: &Identity,
        now: Instant,
    ) -> Result<(), Retry> {
        self.stats.failures.fetch_add(1, Ordering::Relaxed);
        let mut t = self.tables();
        let source = source.map(source_key);
        let source_ban = source.and_then(|ip| t.sources.failure(ip, now));
        let identity_lock = t.identities.failure(identity.key, now);
        drop(t);
        if let (Some(ban), Some(ip)) = (source_ban, source) {
            self.stats.source_bans.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(source = %ip, identity = identity.label(), ban_secs = ban.as_secs(),
                "too many failed logins from this source: banned");
        }
        if let Some(lock) = identity_lock {
            self.stats.identity_locks.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(identity = identity.label(), source = ?source, lock_secs = lock.as_secs(),
                "too many failed logins for this identity: locked");
        }
        match (source_ban, identity_lock) {
            (Some(s), Some(i)) if i > s => Err(Retry {
                after: i,
                scope: Scope::Identity,
            }),
            (Some(s), _) => Err(Retry {
                after: s,
                scope: Scope::Source,
            }),
            (None, Some(i)) => Err(Retry {
                after: i,
                scope: Scope::Identity,
            }),
            (None, None) => Ok(()),
        }
    }

    /// After a credential was accepted: the identity's failures are forgotten (the source's
    /// count is kept: it may have guessed at other identities).
    pub fn success(&self, identity: &Identity) {
        self.tables().identities.clear(&identity.key);
    }

    /// Sources banned and identities locked now (for `/metrics`).
    pub fn active(&self, now: Instant) -> (usize, usize) {
        let t = self.tables();
        (t.sources.banned_count(now), t.identities.banned_count(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(n: u32) -> Option<IpAddr> {
        Some(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n)))
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_source_is_banned_after_more_than_n_failures_and_the_ban_expires() {
        let g = AuthGuard::default();
        let t0 = Instant::now();
        let alice = Identity::new("login", "201@acme.local");
        for i in 0..10 {
            // Ten different identities, so only the source limit applies.
            let who = Identity::new("login", &format!("{i}@acme.local"));
            assert_eq!(g.check(ip(1), &who, t0), Ok(()));
            assert_eq!(g.failure(ip(1), &who, t0 + secs(i)), Ok(()));
        }
        // The eleventh failure within 60 s starts the 300 s ban.
        let r = g.failure(ip(1), &alice, t0 + secs(10)).unwrap_err();
        assert_eq!(
            r,
            Retry {
                after: secs(300),
                scope: Scope::Source
            }
        );
        // Refused for any identity, before any credential is looked at.
        let r = g.check(ip(1), &alice, t0 + secs(11)).unwrap_err();
        assert_eq!((r.scope, r.after_secs()), (Scope::Source, 299));
        let other = Identity::new("login", "202@acme.local");
        assert!(g.check(ip(1), &other, t0 + secs(309)).is_err());
        // Another source is not affected.
        assert_eq!(g.check(ip(2), &alice, t0 + secs(11)), Ok(()));
        // Over at 10 + 300 s; counting starts afresh.
        assert_eq!(g.check(ip(1), &alice, t0 + secs(310)), Ok(()));
        assert_eq!(g.failure(ip(1), &alice, t0 + secs(311)), Ok(()));
        assert_eq!(g.check(ip(1), &alice, t0 + secs(312)), Ok(()));
        assert_eq!(g.stats().source_bans.load(Ordering::Relaxed), 1);
        assert_eq!(g.stats().refused.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn failures_spread_over_more_than_the_window_do_not_ban() {
        let g = AuthGuard::default();
        let t0 = Instant::now();
        // 10 failures every 61 s, 50 in all: never more than 10 in one window (different
        // identities, so only the source limit applies).
        for i in 0..50u64 {
            let now = t0 + secs((i / 10) * 61 + i % 10);
            let who = Identity::new("login", &i.to_string());
            assert_eq!(g.failure(ip(1), &who, now), Ok(()), "failure {i}");
            assert_eq!(g.check(ip(1), &Identity::new("x", "y"), now), Ok(()));
        }
    }

    #[test]
    fn an_identity_is_locked_across_sources_and_success_clears_its_count() {
        let g = AuthGuard::default();
        let t0 = Instant::now();
        let alice = Identity::new("login", "201@acme.local");
        // 20 failures from 20 sources (one each: no source ban).
        for i in 0..20 {
            assert_eq!(g.failure(ip(i), &alice, t0 + secs(u64::from(i))), Ok(()));
        }
        let r = g.failure(ip(100), &alice, t0 + secs(30)).unwrap_err();
        assert_eq!(r.scope, Scope::Identity);
        assert_eq!(r.after, secs(300));
        // Locked from every source, also a fresh one; case does not evade it.
        let r = g
            .check(
                ip(200),
                &Identity::new("login", "201@ACME.local"),
                t0 + secs(31),
            )
            .unwrap_err();
        assert_eq!(r.scope, Scope::Identity);
        // Other identities are fine from a source that was not banned.
        assert_eq!(
            g.check(
                ip(200),
                &Identity::new("login", "202@acme.local"),
                t0 + secs(31)
            ),
            Ok(())
        );
        // Lock over after 300 s.
        assert_eq!(g.check(ip(200), &alice, t0 + secs(330)), Ok(()));

        // A success clears the identity's count, not the source's.
        let bob = Identity::new("login", "202@acme.local");
        for i in 0..10 {
            assert_eq!(g.failure(ip(7), &bob, t0 + secs(400 + i)), Ok(()));
        }
        g.success(&bob);
        // The source's 11th failure still bans it.
        let r = g
            .failure(
                ip(7),
                &Identity::new("login", "203@acme.local"),
                t0 + secs(411),
            )
            .unwrap_err();
        assert_eq!(r.scope, Scope::Source);
        // Bob's count restarted: 20 more failures (from fresh sources) do not lock him.
        for i in 0..20 {
            assert_eq!(g.failure(ip(1000 + i), &bob, t0 + secs(420)), Ok(()));
        }
        assert_eq!(g.check(ip(5000), &bob, t0 + secs(421)), Ok(()));
    }

    #[test]
    fn without_a_source_only_the_identity_counts() {
        let g = AuthGuard::default();
        let t0 = Instant::now();
        let alice = Identity::secret("apikey", "hf_wrong");
        for _ in 0..20 {
            assert_eq!(g.failure(None, &alice, t0), Ok(()));
        }
        assert!(g.failure(None, &alice, t0).is_err());
        assert!(g.check(None, &alice, t0).is_err());
        assert!(!alice.label().contains("hf_wrong"));
    }

    #[test]
    fn ipv6_sources_count_by_their_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        assert_eq!(source_key(a), source_key(b));
        assert_ne!(
            source_key(a),
            source_key("2001:db8:1:3::1".parse().unwrap())
        );
        assert_eq!(
            source_key("::ffff:10.0.0.1".parse().unwrap()),
            "10.0.0.1".parse::<IpAddr>().unwrap()
        );
        let g = AuthGuard::default();
        let t0 = Instant::now();
        for i in 0..11 {
            let v6: IpAddr = format!("2001:db8:1:2::{i:x}").parse().unwrap();
            let _ = g.failure(Some(v6), &Identity::new("login", &i.to_string()), t0);
        }
        assert!(g
            .check(Some(b), &Identity::new("login", "x"), t0 + secs(1))
            .is_err());
    }

    #[test]
    fn tables_stay_bounded_under_a_spray_of_sources_and_keep_bans() {
        let cfg = GuardConfig {
            max_sources: 64,
            max_identities: 64,
            ..GuardConfig::default()
        };
        let g = AuthGuard::new(cfg);
        let t0 = Instant::now();
        // Source 1 is banned first.
        for i in 0..11 {
            let _ = g.failure(ip(1), &Identity::new("login", &format!("a{i}")), t0);
        }
        assert!(g.check(ip(1), &Identity::new("login", "z"), t0).is_err());
        // Then 10,000 sources with one failure each, all at nearly the same time.
        for i in 0..10_000u32 {
            let _ = g.failure(
                ip(10 + i),
                &Identity::new("login", &format!("spray{i}")),
                t0 + Duration::from_millis(u64::from(i)),
            );
            let t = g.tables();
            assert!(t.sources.len() <= 64 && t.identities.len() <= 64);
        }
        // The ban survived the spray.
        assert!(g
            .check(ip(1), &Identity::new("login", "z"), t0 + secs(20))
            .is_err());
        // Once the windows are over, entries go at the next prune.
        let later = t0 + secs(1000);
        let _ = g.failure(ip(99_999), &Identity::new("login", "late"), later);
        let t = g.tables();
        assert_eq!(t.sources.live_count(later), 1);
        assert!(t.sources.len() <= 2, "{}", t.sources.len());
    }

    #[test]
    fn a_table_full_of_bans_tracks_no_new_keys_but_keeps_the_bans() {
        let cfg = GuardConfig {
            max_sources: 2,
            source_max_failures: 0,
            ..GuardConfig::default()
        };
        let g = AuthGuard::new(cfg);
        let t0 = Instant::now();
        let who = |i: u32| Identity::new("login", &format!("u{i}"));
        assert!(g.failure(ip(1), &who(1), t0).is_err());
        assert!(g.failure(ip(2), &who(2), t0).is_err());
        // No room: source 3 is not tracked (not banned), 1 and 2 stay banned.
        assert_eq!(g.failure(ip(3), &who(3), t0), Ok(()));
        assert_eq!(g.check(ip(3), &who(9), t0), Ok(()));
        assert!(g.check(ip(1), &who(9), t0).is_err());
        assert!(g.check(ip(2), &who(9), t0).is_err());
    }

    #[test]
    fn retry_after_rounds_up() {
        let r = |ms| Retry {
            after: Duration::from_millis(ms),
            scope: Scope::Source,
        };
        assert_eq!(r(1).after_secs(), 1);
        assert_eq!(r(0).after_secs(), 1);
        assert_eq!(r(1000).after_secs(), 1);
        assert_eq!(r(1001).after_secs(), 2);
    }
}
