//! Repeated warnings are rate-limited: an outsider who can make the server warn (malformed
//! packets, failing logins, a flood) must not be able to fill the disk or drown the one line
//! an operator needs. Each warning or error *call site* may log `burst` events per `window`;
//! beyond that its events are counted, not written, and a summary line per call site says how
//! many were suppressed once its window is over.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::callsite::Identifier;
use tracing::{Level, Metadata};
use tracing_subscriber::layer::{Context, Filter};

#[derive(Debug)]
struct Site {
    window_start: Instant,
    logged: u32,
    suppressed: u64,
    name: String,
}

/// Decisions for one call site (sans-IO: fed with `now`).
#[derive(Debug)]
pub struct RepeatLimiter {
    burst: u32,
    window: Duration,
    sites: Mutex<HashMap<Identifier, Site>>,
}

impl RepeatLimiter {
    pub fn new(burst: u32, window: Duration) -> Arc<Self> {
        Arc::new(RepeatLimiter {
            burst,
            window,
            sites: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Identifier, Site>> {
        match self.sites.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// May this event of `site` be written now?
    pub fn allow(&self, site: Identifier, name: impl FnOnce() -> String, now: Instant) -> bool {
        let mut sites = self.lock();
        let s = sites.entry(site).or_insert_with(|| Site {
            window_start: now,
            logged: 0,
            suppressed: 0,
            name: name(),
        });
        if now.saturating_duration_since(s.window_start) >= self.window && s.suppressed == 0 {
            s.window_start = now;
            s.logged = 0;
        }
        if s.logged < self.burst {
            s.logged += 1;
            true
        } else {
            s.suppressed += 1;
            false
        }
    }

    /// Call sites whose window is over and that suppressed events: (name, count). Their
    /// windows start afresh.
    pub fn take_suppressed(&self, now: Instant) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for s in self.lock().values_mut() {
            if s.suppressed > 0 && now.saturating_duration_since(s.window_start) >= self.window {
                out.push((s.name.clone(), s.suppressed));
                s.suppressed = 0;
                s.logged = 0;
                s.window_start = now;
            }
        }
        out.sort();
        out
    }
}

/// The `tracing` filter: limits WARN and ERROR events per call site; everything else passes.
pub struct RepeatFilter(pub Arc<RepeatLimiter>);

impl<S> Filter<S> for RepeatFilter {
    fn enabled(&self, _meta: &Metadata<'_>, _cx: &Context<'_, S>) -> bool {
        true
    }

    fn event_enabled(&self, event: &tracing::Event<'_>, _cx: &Context<'_, S>) -> bool {
        let meta = event.metadata();
        if *meta.level() > Level::WARN {
            return true;
        }
        let name = || {
            format!(
                "{}:{}",
                meta.file().unwrap_or(meta.target()),
                meta.line().unwrap_or(0)
            )
        };
        self.0.allow(meta.callsite(), name, Instant::now())
    }
}

/// Writes the summaries of suppressed warnings every `every`, from its own thread (a filter
/// cannot log from inside the dispatch).
pub fn report_suppressed(limiter: Arc<RepeatLimiter>, every: Duration) {
    let spawned = std::thread::Builder::new()
        .name("log-limit".into())
        .spawn(move || loop {
            std::thread::sleep(every);
            for (site, count) in limiter.take_suppressed(Instant::now()) {
                tracing::warn!(%site, suppressed = count, "repeated warnings suppressed");
            }
        });
    if let Err(e) = spawned {
        eprintln!("hookflash: cannot start the log limiter thread: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static CS_A: tracing::callsite::DefaultCallsite =
        tracing::callsite::DefaultCallsite::new(&META_A);
    static META_A: Metadata<'static> = tracing::metadata!(
        name: "a",
        target: "t",
        level: Level::WARN,
        fields: &[],
        callsite: &CS_A,
        kind: tracing::metadata::Kind::EVENT
    );
    static CS_B: tracing::callsite::DefaultCallsite =
        tracing::callsite::DefaultCallsite::new(&META_B);
    static META_B: Metadata<'static> = tracing::metadata!(
        name: "b",
        target: "t",
        level: Level::WARN,
        fields: &[],
        callsite: &CS_B,
        kind: tracing::metadata::Kind::EVENT
    );

    #[test]
    fn a_noisy_call_site_is_limited_and_summarised_others_are_not() {
        let l = RepeatLimiter::new(3, Duration::from_secs(10));
        let t0 = Instant::now();
        let a = META_A.callsite();
        let b = META_B.callsite();
        let passed = (0..100)
            .filter(|_| l.allow(a.clone(), || "a.rs:1".into(), t0))
            .count();
        assert_eq!(passed, 3);
        assert!(l.allow(b.clone(), || "b.rs:2".into(), t0), "another site");
        // Nothing to report before the window is over.
        assert!(l.take_suppressed(t0 + Duration::from_secs(5)).is_empty());
        let later = t0 + Duration::from_secs(10);
        assert_eq!(l.take_suppressed(later), vec![("a.rs:1".to_string(), 97)]);
        // A fresh window: the site may log again.
        assert!(l.allow(a, || "a.rs:1".into(), later));
        assert!(l
            .take_suppressed(later + Duration::from_secs(60))
            .is_empty());
    }
}
