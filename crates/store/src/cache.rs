//! In-memory read cache of the routing data every SIP request reads.
//!
//! An INVITE used to cost six SELECTs (trunk by source, account, user by extension, number,
//! outbound trunk, registrations), each a round trip to SQLite's worker thread. The data behind
//! them changes rarely, so the [`Store`](crate::Store) keeps it here:
//!
//! - accounts (all of them, indexed by id, realm and name) and trunks (all of them, in the
//!   database's `created_at, id` order, with the host parsed as an IP once) as snapshots;
//! - users by (account, extension) and by id, numbers by digits, users' webhook URLs, and the
//!   registrations of each user, per key. Negative results (`None`, no registrations) are
//!   cached too. Per-key maps are bounded ([`MAX_ENTRIES`]): a full map is emptied before an
//!   insert, so a flood of unknown keys costs database reads, not memory.
//!
//! # Invalidation
//!
//! - Every write to the cached provisioning tables (accounts, users, numbers, trunks) goes
//!   through `Store::commit_provisioning`, which bumps the `provisioning_generation` row in the
//!   same transaction, commits, then empties this whole cache ([`Cache::invalidate_all`]).
//!   API keys are cached too (found keys only, by hash): every native API request checks one,
//!   and the database round trip was a thread hop on the path of every call command. Adding
//!   or revoking a key is a provisioning write like the others, so a revocation takes effect
//!   at once in this process and within [`EXTERNAL_CHECK_INTERVAL`] in another one.
//!   Personal access tokens are not cached (every request checks them in the database).
//! - Registration writes (upsert, remove, purge) drop the user's entry (or all entries)
//!   ([`Cache::invalidate_registrations`]). Expiry is applied at read time against the
//!   caller's `now`, exactly as the SQL did (`expires_at > now`).
//! - Another process (the `hookflash` CLI) writing the same database bumps the generation row
//!   as well. A cached read re-reads that row when the last check is older than
//!   [`EXTERNAL_CHECK_INTERVAL`]; the first read after a quiet spell waits for the check, so
//!   a CLI change is seen by the next request, and under load within that interval.
//!
//! A read that misses takes a [`Ticket`] (the generations) *before* it queries the database
//! and fills the cache only if no invalidation happened meanwhile, so a slow read can never
//! put data older than a committed write back into the cache.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use sqlx::AnyPool;

use crate::model::{Account, ApiKey, Number, Registration, Trunk, User};

/// How old the last look at the database's provisioning generation may be before a cached
/// read looks again (changes by other processes are seen within this interval).
pub(crate) const EXTERNAL_CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// Entries per per-key map before it is emptied.
pub(crate) const MAX_ENTRIES: usize = 16_384;

/// All accounts, as `SELECT ... ORDER BY created_at, id` returns them.
#[derive(Debug, Default)]
pub(crate) struct AccountIndex {
    pub(crate) list: Vec<Account>,
    by_id: HashMap<String, usize>,
    by_realm: HashMap<String, usize>,
    by_name: HashMap<String, usize>,
}

impl AccountIndex {
    pub(crate) fn new(list: Vec<Account>) -> AccountIndex {
        let mut idx = AccountIndex {
            by_id: HashMap::with_capacity(list.len()),
            by_realm: HashMap::with_capacity(list.len()),
            by_name: HashMap::with_capacity(list.len()),
            list: Vec::new(),
        };
        // Columns are unique; on a (corrupt) duplicate the oldest row wins, like the SQL.
        for (i, a) in list.iter().enumerate() {
            idx.by_id.entry(a.id.clone()).or_insert(i);
            idx.by_realm.entry(a.realm.clone()).or_insert(i);
            idx.by_name.entry(a.name.clone()).or_insert(i);
        }
        idx.list = list;
        idx
    }

    pub(crate) fn by_id(&self, id: &str) -> Option<&Account> {
        self.by_id.get(id).and_then(|&i| self.list.get(i))
    }

    pub(crate) fn by_realm(&self, realm: &str) -> Option<&Account> {
        self.by_realm.get(realm).and_then(|&i| self.list.get(i))
    }

    pub(crate) fn by_name(&self, name: &str) -> Option<&Account> {
        self.by_name.get(name).and_then(|&i| self.list.get(i))
    }
}

/// A trunk with its host parsed as an IP literal (None for host names).
#[derive(Debug)]
pub(crate) struct CachedTrunk {
    pub(crate) trunk: Trunk,
    pub(crate) ip: Option<IpAddr>,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    /// Bumped by every invalidation of the provisioning data.
    generation: u64,
    /// Bumped by every registration change (and by every provisioning invalidation).
    reg_generation: u64,
    pub(crate) accounts: Option<Arc<AccountIndex>>,
    /// All trunks, ordered by `created_at, id`.
    pub(crate) trunks: Option<Arc<Vec<CachedTrunk>>>,
    /// account id -> extension -> user.
    pub(crate) users_by_ext: HashMap<String, HashMap<String, Option<User>>>,
    users_by_ext_len: usize,
    pub(crate) users_by_id: HashMap<String, Option<User>>,
    /// Number digits (no `+`) -> the number and the user it rings.
    pub(crate) numbers: HashMap<String, Option<(Number, User)>>,
    pub(crate) webhooks: HashMap<String, Option<String>>,
    /// User id -> all stored bindings (expired ones too), `expires_at DESC, contact`.
    pub(crate) registrations: HashMap<String, Arc<[Registration]>>,
    /// SHA-256 of an API key -> the key (found keys only).
    pub(crate) api_keys: HashMap<String, ApiKey>,
}

impl State {
    pub(crate) fn user_by_ext(&self, account_id: &str, extension: &str) -> Option<Option<User>> {
        self.users_by_ext
            .get(account_id)
            .and_then(|m| m.get(extension))
            .cloned()
    }

    pub(crate) fn put_user_by_ext(&mut self, account_id: &str, extension: &str, v: Option<User>) {
        if self.users_by_ext_len >= MAX_ENTRIES {
            self.users_by_ext.clear();
            self.users_by_ext_len = 0;
        }
        let per_account = self.users_by_ext.entry(account_id.to_string()).or_default();
        if per_account.insert(extension.to_string(), v).is_none() {
            self.users_by_ext_len += 1;
        }
    }

    fn clear_provisioning(&mut self) {
        self.accounts = None;
        self.trunks = None;
        self.users_by_ext.clear();
        self.users_by_ext_len = 0;
        self.users_by_id.clear();
        self.numbers.clear();
        self.webhooks.clear();
        self.registrations.clear();
        self.api_keys.clear();
    }
}

/// Inserts into a bounded map: a full map is emptied first.
pub(crate) fn put_capped<V>(map: &mut HashMap<String, V>, key: &str, v: V) {
    if map.len() >= MAX_ENTRIES && !map.contains_key(key) {
        map.clear();
    }
    map.insert(key.to_string(), v);
}

/// The generations a read saw before it went to the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ticket {
    generation: u64,
    reg_generation: u64,
}

pub(crate) struct Cache {
    state: RwLock<State>,
    origin: Instant,
    /// Milliseconds since `origin` (plus one) of the last look at the database's generation;
    /// 0: never looked.
    last_check_ms: AtomicU64,
    /// The database's generation at the last look.
    db_generation: AtomicI64,
}

/// Sizes only: the entries hold HA1 values, which must not end up in logs.
impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("Cache")
            .field("generation", &state.generation)
            .field("accounts", &state.accounts.as_ref().map(|a| a.list.len()))
            .field("trunks", &state.trunks.as_ref().map(|t| t.len()))
            .field("users_by_ext", &state.users_by_ext_len)
            .field("users_by_id", &state.users_by_id.len())
            .field("numbers", &state.numbers.len())
            .field("webhooks", &state.webhooks.len())
            .field("registrations", &state.registrations.len())
            .field("api_keys", &state.api_keys.len())
            .finish()
    }
}

impl Cache {
    pub(crate) fn new() -> Cache {
        Cache {
            state: RwLock::new(State::default()),
            origin: Instant::now(),
            last_check_ms: AtomicU64::new(0),
            db_generation: AtomicI64::new(i64::MIN),
        }
    }

    /// Runs `f` on the state: `Ok` with its answer on a hit, `Err` with a ticket on a miss.
    pub(crate) fn lookup<R>(&self, f: impl FnOnce(&State) -> Option<R>) -> Result<R, Ticket> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // matters (every entry is a complete value), so a poisoned lock is used as is.
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        f(&state).ok_or(Ticket {
            generation: state.generation,
            reg_generation: state.reg_generation,
        })
    }

    /// Stores what a read found, unless the provisioning data changed since its ticket.
    pub(crate) fn fill(&self, ticket: Ticket, f: impl FnOnce(&mut State)) {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        if state.generation == ticket.generation {
            f(&mut state);
        }
    }

    /// Stores registrations a read found, unless anything changed since its ticket.
    pub(crate) fn fill_registrations(&self, ticket: Ticket, f: impl FnOnce(&mut State)) {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        if state.generation == ticket.generation && state.reg_generation == ticket.reg_generation {
            f(&mut state);
        }
    }

    /// Forgets everything (after a provisioning write, or one by another process).
    pub(crate) fn invalidate_all(&self) {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        state.generation = state.generation.wrapping_add(1);
        state.reg_generation = state.reg_generation.wrapping_add(1);
        state.clear_provisioning();
    }

    /// Forgets one user's registrations (`Some`) or everyone's (`None`).
    pub(crate) fn invalidate_registrations(&self, user_id: Option<&str>) {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        state.reg_generation = state.reg_generation.wrapping_add(1);
        match user_id {
            Some(id) => {
                state.registrations.remove(id);
            }
            None => state.registrations.clear(),
        }
    }

    /// Looks at the database's provisioning generation if the last look is older than the
    /// check interval, and forgets everything when it moved (another process wrote). Only one
    /// caller looks at a time; the others go on with the cache meanwhile.
    pub(crate) async fn refresh(&self, pool: &AnyPool) {
        let now = u64::try_from(self.origin.elapsed().as_millis())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1);
        let last = self.last_check_ms.load(Ordering::Acquire);
        let interval = u64::try_from(EXTERNAL_CHECK_INTERVAL.as_millis()).unwrap_or(u64::MAX);
        if last != 0 && now.saturating_sub(last) < interval {
            return;
        }
        if self
            .last_check_ms
            .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        let res: Result<i64, sqlx::Error> =
            sqlx::query_scalar("SELECT generation FROM provisioning_generation WHERE id = 1")
                .fetch_one(pool)
                .await;
        match res {
            Ok(g) => {
                if self.db_generation.swap(g, Ordering::AcqRel) != g {
                    self.invalidate_all();
                }
            }
            Err(e) => {
                // Without the generation nothing says the cache is current: drop it, and look
                // again on the next read.
                tracing::warn!(error = %e, "cannot read the provisioning generation; read cache dropped");
                self.invalidate_all();
                self.last_check_ms.store(0, Ordering::Release);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fill_after_an_invalidation_is_dropped() {
        let c = Cache::new();
        let ticket = c.lookup(|s| s.numbers.get("1").cloned()).unwrap_err();
        c.invalidate_all();
        c.fill(ticket, |s| put_capped(&mut s.numbers, "1", None));
        assert!(c.lookup(|s| s.numbers.get("1").cloned()).is_err());
        let ticket = c.lookup(|s| s.numbers.get("1").cloned()).unwrap_err();
        c.fill(ticket, |s| put_capped(&mut s.numbers, "1", None));
        assert_eq!(c.lookup(|s| s.numbers.get("1").cloned()), Ok(None));
    }

    #[test]
    fn a_registration_fill_after_a_registration_write_is_dropped() {
        let c = Cache::new();
        let ticket = c.lookup(|s| s.registrations.get("u").cloned()).unwrap_err();
        c.invalidate_registrations(Some("other"));
        c.fill_registrations(ticket, |s| {
            put_capped(&mut s.registrations, "u", Arc::from(Vec::new()))
        });
        assert!(c.lookup(|s| s.registrations.get("u").cloned()).is_err());
        // Provisioning fills are not affected by registration writes.
        let ticket = c.lookup(|s| s.webhooks.get("u").cloned()).unwrap_err();
        c.invalidate_registrations(None);
        c.fill(ticket, |s| put_capped(&mut s.webhooks, "u", None));
        assert_eq!(c.lookup(|s| s.webhooks.get("u").cloned()), Ok(None));
    }

    crate::testdb::both_backends! {
        async fn debug_output_shows_no_secrets() {
            let s = crate::testdb::store().await;
            let a = s.create_account("acme", "acme.local").await.unwrap();
            let u = s.add_user(&a.id, "201", "pw", None).await.unwrap();
            assert!(s.user_by_id(&u.id).await.unwrap().is_some());
            let shown = format!("{s:?}");
            assert!(shown.contains("users_by_id: 1"), "{shown}");
            assert!(!shown.contains(&u.ha1_md5), "{shown}");
        }
    }

    #[test]
    fn maps_are_bounded() {
        let c = Cache::new();
        for i in 0..MAX_ENTRIES + 10 {
            let ticket = c.lookup(|_| None::<()>).unwrap_err();
            c.fill(ticket, |s| {
                put_capped(&mut s.numbers, &i.to_string(), None);
                s.put_user_by_ext("acc", &i.to_string(), None);
            });
        }
        c.lookup(|s| {
            assert!(s.numbers.len() <= MAX_ENTRIES);
            assert!(s.users_by_ext_len <= MAX_ENTRIES);
            assert_eq!(
                s.users_by_ext_len,
                s.users_by_ext.values().map(HashMap::len).sum::<usize>()
            );
            Some(())
        })
        .unwrap();
    }
}

/// The cache through the [`Store`](crate::Store): every kind of write must be visible to the
/// next read. Each test first reads (so the old answer is cached), writes, and reads again; it
/// fails if that write path did not invalidate.
#[cfg(test)]
mod store_tests {
    use std::net::IpAddr;

    use crate::crypto::{ha1, DigestAlgorithm};
    use crate::model::Registration;
    use hookflash_config::TrunkSpec;

    fn trunk(name: &str, host: &str, port: u16) -> TrunkSpec {
        TrunkSpec {
            name: name.into(),
            host: host.into(),
            port,
            transport: "udp".into(),
            username: None,
            password: None,
        }
    }

    fn reg(user_id: &str, contact: &str, expires_at: i64) -> Registration {
        Registration {
            user_id: user_id.into(),
            contact: contact.into(),
            source: "127.0.0.1:5070".into(),
            transport: "udp".into(),
            expires_at,
            call_id: "c@h".into(),
            cseq: 1,
            user_agent: None,
        }
    }

    fn lo() -> IpAddr {
        "127.0.0.1".parse().unwrap()
    }

    crate::testdb::both_backends! {
        async fn reads_are_served_from_the_cache() {
            // A change behind the store's back (raw SQL, no generation bump) is not seen: the
            // answers come from memory. (This is what makes the invalidation tests meaningful.)
            let s = crate::testdb::store().await;
            let a = s.create_account("acme", "acme.local").await.unwrap();
            let u = s.add_user(&a.id, "201", "pw", None).await.unwrap();
            s.add_number(&a.id, "+4930123456", "201").await.unwrap();
            s.add_trunk(&a.id, &trunk("carrier", "127.0.0.1", 5080))
                .await
                .unwrap();
            // The writes above moved the database's generation; the cache learns it on its
            // next look (after the check interval) and then forgets what it held. Let that look
            // happen now, so that no look later in this test - however slow the machine - finds
            // a moved generation: the raw SQL below does not move it.
            tokio::time::sleep(crate::cache::EXTERNAL_CHECK_INTERVAL + std::time::Duration::from_millis(20))
                .await;
            assert!(s.user_by_extension(&a.id, "201").await.unwrap().is_some());
            assert!(s.user_by_extension(&a.id, "299").await.unwrap().is_none());
            assert!(s.lookup_number("4930123456").await.unwrap().is_some());
            assert!(s.trunk_by_source(lo(), 5080).await.unwrap().is_some());
            assert!(s.account_by_realm("acme.local").await.unwrap().is_some());
            assert!(s.registrations(&u.id, 0).await.unwrap().is_empty());
            for sql in [
                "UPDATE users SET display_name = 'sneaky'",
                "DELETE FROM numbers",
                "DELETE FROM trunks",
                "UPDATE accounts SET realm = 'moved'",
            ] {
                sqlx::query(sql).execute(&s.pool).await.unwrap();
            }
            sqlx::query(
                "INSERT INTO registrations (user_id, contact, source, transport, expires_at, call_id, cseq) \
                 VALUES ($1, 'sip:x@h', 'h:1', 'udp', 99999, 'c', 1)",
            )
            .bind(&u.id)
            .execute(&s.pool)
            .await
            .unwrap();
            let cached = s.user_by_extension(&a.id, "201").await.unwrap().unwrap();
            assert_eq!(cached.display_name, None);
            assert!(s.lookup_number("4930123456").await.unwrap().is_some());
            assert!(s.trunk_by_source(lo(), 5080).await.unwrap().is_some());
            assert!(s.account_by_realm("acme.local").await.unwrap().is_some());
            // Registrations: cached on SQLite; on PostgreSQL (shared by the nodes of a
            // cluster) read from the database, so another node's registration is seen at once.
            let regs = s.registrations(&u.id, 0).await.unwrap();
            match s.backend() {
                crate::db::Backend::Sqlite => assert!(regs.is_empty()),
                crate::db::Backend::Postgres => assert_eq!(regs.len(), 1),
            }
        }
    }

    crate::testdb::both_backends! {
        async fn a_registration_through_one_node_is_seen_by_the_other_at_once() {
            // Two stores on one database play two nodes. Node b looked (and found nothing)
            // before the phone registered through node a, unregistered and registered again.
            let s = crate::testdb::store().await;
            let a = crate::Store::with_pool(s.pool.clone(), s.backend);
            let b = crate::Store::with_pool(s.pool.clone(), s.backend);
            let acc = a.create_account("acme", "acme.local").await.unwrap();
            let u = a.add_user(&acc.id, "202", "pw", None).await.unwrap();
            assert!(b.registrations(&u.id, 0).await.unwrap().is_empty());
            a.upsert_registration(&reg(&u.id, "sip:202@h", 5_000))
                .await
                .unwrap();
            let seen = b.registrations(&u.id, 0).await.unwrap();
            match s.backend() {
                // One node alone owns a SQLite file: its cache is the truth.
                crate::db::Backend::Sqlite => assert!(seen.is_empty()),
                // Shared by nodes: the other node's registration is there at once.
                crate::db::Backend::Postgres => {
                    assert_eq!(seen.len(), 1);
                    a.remove_registrations(&u.id).await.unwrap();
                    assert!(b.registrations(&u.id, 0).await.unwrap().is_empty());
                }
            }
        }
    }

    crate::testdb::both_backends! {
        async fn account_writes_invalidate() {
            let s = crate::testdb::store().await;
            assert_eq!(s.default_account().await.unwrap(), None);
            assert_eq!(s.account_by_realm("acme.local").await.unwrap(), None);
            assert!(s.accounts().await.unwrap().is_empty());
            let a = s.create_account("acme", "acme.local").await.unwrap();
            assert_eq!(s.default_account().await.unwrap(), Some(a.clone()));
            assert_eq!(
                s.account_by_realm("acme.local").await.unwrap(),
                Some(a.clone())
            );
            assert_eq!(s.account_by_id(&a.id).await.unwrap(), Some(a.clone()));
            assert_eq!(s.account_by_name("acme").await.unwrap(), Some(a.clone()));
            assert_eq!(s.accounts().await.unwrap(), vec![a.clone()]);

            assert_eq!(s.account_by_realm("acme.example").await.unwrap(), None);
            assert!(s.set_account_realm(&a.id, "acme.example").await.unwrap());
            assert_eq!(s.account_by_realm("acme.local").await.unwrap(), None);
            assert_eq!(
                s.account_by_realm("acme.example")
                    .await
                    .unwrap()
                    .unwrap()
                    .id,
                a.id
            );
            assert_eq!(
                s.account_by_id(&a.id).await.unwrap().unwrap().realm,
                "acme.example"
            );
            // A failed write (conflict) changes nothing and is no problem either.
            let b = s.create_account("beta", "beta.local").await.unwrap();
            assert!(s.set_account_realm(&b.id, "acme.example").await.is_err());
            assert_eq!(s.accounts().await.unwrap().len(), 2);
            assert_eq!(
                s.account_by_realm("beta.local").await.unwrap().unwrap().id,
                b.id
            );
        }
    }

    crate::testdb::both_backends! {
        async fn user_writes_invalidate() {
            let s = crate::testdb::store().await;
            let a = s.create_account("acme", "acme.local").await.unwrap();
            assert_eq!(s.user_by_extension(&a.id, "201").await.unwrap(), None);
            let u = s.add_user(&a.id, "201", "old", None).await.unwrap();
            assert_eq!(
                s.user_by_extension(&a.id, "201").await.unwrap(),
                Some(u.clone())
            );
            assert_eq!(s.user_by_id(&u.id).await.unwrap(), Some(u.clone()));

            assert!(s.set_user_password(&a.id, "201", "new").await.unwrap());
            let new_ha1 = ha1(DigestAlgorithm::Md5, "201", "acme.local", "new");
            assert_eq!(
                s.user_by_extension(&a.id, "201")
                    .await
                    .unwrap()
                    .unwrap()
                    .ha1_md5,
                new_ha1
            );
            assert_eq!(s.user_by_id(&u.id).await.unwrap().unwrap().ha1_md5, new_ha1);
            assert!(s
                .verify_user_password("acme.local", "201", "new")
                .await
                .unwrap()
                .is_some());
            assert!(s
                .verify_user_password("acme.local", "201", "old")
                .await
                .unwrap()
                .is_none());

            assert!(s
                .set_user_display_name(&a.id, "201", Some("Alice"))
                .await
                .unwrap());
            assert_eq!(
                s.user_by_id(&u.id)
                    .await
                    .unwrap()
                    .unwrap()
                    .display_name
                    .as_deref(),
                Some("Alice")
            );
            assert_eq!(
                s.user_by_extension(&a.id, "201")
                    .await
                    .unwrap()
                    .unwrap()
                    .display_name
                    .as_deref(),
                Some("Alice")
            );

            assert_eq!(s.user_webhook(&u.id).await.unwrap(), None);
            assert!(s
                .set_user_webhook(&a.id, "201", Some("http://127.0.0.1:9/h"))
                .await
                .unwrap());
            assert_eq!(
                s.user_webhook(&u.id).await.unwrap().as_deref(),
                Some("http://127.0.0.1:9/h")
            );
            assert!(s.set_user_webhook(&a.id, "201", None).await.unwrap());
            assert_eq!(s.user_webhook(&u.id).await.unwrap(), None);

            // Removing the user also removes its numbers and registrations.
            s.add_number(&a.id, "+4930123456", "201").await.unwrap();
            s.upsert_registration(&reg(&u.id, "sip:201@h", 5_000))
                .await
                .unwrap();
            assert!(s.lookup_number("4930123456").await.unwrap().is_some());
            assert_eq!(s.registrations(&u.id, 0).await.unwrap().len(), 1);
            assert!(s.remove_user(&a.id, "201").await.unwrap());
            assert_eq!(s.user_by_extension(&a.id, "201").await.unwrap(), None);
            assert_eq!(s.user_by_id(&u.id).await.unwrap(), None);
            assert_eq!(s.user_webhook(&u.id).await.unwrap(), None);
            assert_eq!(s.lookup_number("4930123456").await.unwrap(), None);
            assert!(s.registrations(&u.id, 0).await.unwrap().is_empty());
        }
    }

    crate::testdb::both_backends! {
        async fn number_writes_invalidate() {
            let s = crate::testdb::store().await;
            let a = s.create_account("acme", "acme.local").await.unwrap();
            s.add_user(&a.id, "201", "pw", None).await.unwrap();
            s.add_user(&a.id, "202", "pw", None).await.unwrap();
            assert_eq!(s.lookup_number("+4930123456").await.unwrap(), None);
            s.add_number(&a.id, "4930123456", "201").await.unwrap();
            let (_, u) = s.lookup_number("+4930123456").await.unwrap().unwrap();
            assert_eq!(u.extension, "201");
            assert!(s
                .set_number_user(&a.id, "+4930123456", "202")
                .await
                .unwrap());
            let (_, u) = s.lookup_number("4930123456").await.unwrap().unwrap();
            assert_eq!(u.extension, "202");
            assert!(s.remove_number(&a.id, "4930123456").await.unwrap());
            assert_eq!(s.lookup_number("+4930123456").await.unwrap(), None);
        }
    }

    crate::testdb::both_backends! {
        async fn trunk_writes_invalidate() {
            let s = crate::testdb::store().await;
            let a = s.create_account("acme", "acme.local").await.unwrap();
            assert_eq!(s.trunk_by_source(lo(), 5080).await.unwrap(), None);
            assert_eq!(s.outbound_trunk(&a.id).await.unwrap(), None);
            assert!(s.trunks_by_ip(lo()).await.unwrap().is_empty());
            let t = s
                .add_trunk(&a.id, &trunk("carrier", "127.0.0.1", 5080))
                .await
                .unwrap();
            assert_eq!(
                s.trunk_by_source(lo(), 5080).await.unwrap(),
                Some(t.clone())
            );
            assert_eq!(s.outbound_trunk(&a.id).await.unwrap(), Some(t.clone()));
            assert_eq!(s.trunks_by_ip(lo()).await.unwrap(), vec![t.clone()]);

            assert!(s
                .update_trunk(&a.id, &trunk("carrier", "127.0.0.1", 5090))
                .await
                .unwrap());
            assert_eq!(s.trunk_by_source(lo(), 5080).await.unwrap(), None);
            assert_eq!(
                s.trunk_by_source(lo(), 5090).await.unwrap().unwrap().id,
                t.id
            );
            assert_eq!(s.outbound_trunk(&a.id).await.unwrap().unwrap().port, 5090);

            assert!(s.remove_trunk(&a.id, "carrier").await.unwrap());
            assert_eq!(s.trunk_by_source(lo(), 5090).await.unwrap(), None);
            assert_eq!(s.outbound_trunk(&a.id).await.unwrap(), None);
            assert!(s.trunks_by_ip(lo()).await.unwrap().is_empty());
        }
    }

    crate::testdb::both_backends! {
        async fn provisioning_from_config_invalidates() {
            let s = crate::testdb::store().await;
            let spec = |pw: &str, port: u16, user: &str| hookflash_config::AccountSpec {
                name: "acme".into(),
                realm: Some("acme.local".into()),
                users: vec![
                    hookflash_config::UserSpec {
                        extension: "201".into(),
                        password: pw.into(),
                        display_name: None,
                        webhook_url: None,
                        voicemail: None,
                        dial: None,
                    },
                    hookflash_config::UserSpec {
                        extension: "202".into(),
                        password: "x".into(),
                        display_name: None,
                        webhook_url: None,
                        voicemail: None,
                        dial: None,
                    },
                ],
                numbers: vec![hookflash_config::NumberSpec {
                    number: "+4930123456".into(),
                    user: user.into(),
                }],
                trunks: vec![trunk("carrier", "127.0.0.1", port)],
                applications: vec![],
                oauth_apps: vec![],
                api_keys: vec![],
                country_code: None,
                dial: None,
                outside_sessions: None,
                max_outbound_calls: None,
                outbound_calls_per_minute: None,
            };
            s.apply_provisioning(&[spec("one", 5080, "201")])
                .await
                .unwrap();
            let a = s.account_by_name("acme").await.unwrap().unwrap();
            assert_eq!(s.outbound_trunk(&a.id).await.unwrap().unwrap().port, 5080);
            assert_eq!(
                s.lookup_number("4930123456")
                    .await
                    .unwrap()
                    .unwrap()
                    .1
                    .extension,
                "201"
            );
            s.apply_provisioning(&[spec("two", 5090, "202")])
                .await
                .unwrap();
            assert_eq!(s.outbound_trunk(&a.id).await.unwrap().unwrap().port, 5090);
            assert_eq!(
                s.lookup_number("4930123456")
                    .await
                    .unwrap()
                    .unwrap()
                    .1
                    .extension,
                "202"
            );
            assert_eq!(
                s.user_by_extension(&a.id, "201")
                    .await
                    .unwrap()
                    .unwrap()
                    .ha1_md5,
                ha1(DigestAlgorithm::Md5, "201", "acme.local", "two")
            );
        }
    }

    crate::testdb::both_backends! {
        async fn registration_writes_invalidate_and_expiry_is_applied_at_read() {
            let s = crate::testdb::store().await;
            let a = s.create_account("acme", "acme.local").await.unwrap();
            let u = s.add_user(&a.id, "201", "pw", None).await.unwrap();
            let v = s.add_user(&a.id, "202", "pw", None).await.unwrap();
            assert!(s.registrations(&u.id, 1_000).await.unwrap().is_empty());

            s.upsert_registration(&reg(&u.id, "sip:a@h", 1_100))
                .await
                .unwrap();
            s.upsert_registration(&reg(&u.id, "sip:b@h", 1_500))
                .await
                .unwrap();
            s.upsert_registration(&reg(&v.id, "sip:c@h", 1_500))
                .await
                .unwrap();
            let contacts = |r: Vec<Registration>| r.into_iter().map(|r| r.contact).collect::<Vec<_>>();
            assert_eq!(
                contacts(s.registrations(&u.id, 1_000).await.unwrap()),
                vec!["sip:b@h", "sip:a@h"]
            );
            // Same cached entry, later `now`: expiry applies at read time (expires_at == now is
            // expired, as in the SQL).
            assert_eq!(
                contacts(s.registrations(&u.id, 1_100).await.unwrap()),
                vec!["sip:b@h"]
            );
            assert!(s.registrations(&u.id, 1_500).await.unwrap().is_empty());

            // A refresh changes the order (latest expiry first).
            s.upsert_registration(&reg(&u.id, "sip:a@h", 2_000))
                .await
                .unwrap();
            assert_eq!(
                contacts(s.registrations(&u.id, 1_000).await.unwrap()),
                vec!["sip:a@h", "sip:b@h"]
            );

            assert!(s.remove_registration(&u.id, "sip:a@h").await.unwrap());
            assert_eq!(
                contacts(s.registrations(&u.id, 1_000).await.unwrap()),
                vec!["sip:b@h"]
            );
            assert_eq!(s.remove_registrations(&u.id).await.unwrap(), 1);
            assert!(s.registrations(&u.id, 1_000).await.unwrap().is_empty());

            // A purge is seen even by a read with an earlier `now`, like the SQL.
            assert_eq!(s.registrations(&v.id, 1_000).await.unwrap().len(), 1);
            assert_eq!(s.purge_expired_registrations(1_600).await.unwrap(), 1);
            assert!(s.registrations(&v.id, 1_000).await.unwrap().is_empty());
            // Other users' entries stay right through all that.
            s.upsert_registration(&reg(&v.id, "sip:d@h", 3_000))
                .await
                .unwrap();
            assert_eq!(s.registrations(&v.id, 1_000).await.unwrap().len(), 1);
            s.upsert_registration(&reg(&u.id, "sip:e@h", 3_000))
                .await
                .unwrap();
            assert_eq!(s.registrations(&v.id, 1_000).await.unwrap().len(), 1);
            assert_eq!(s.registrations(&u.id, 1_000).await.unwrap().len(), 1);
        }
    }

    crate::testdb::both_backends! {
        async fn verified_api_keys_are_cached_and_a_revocation_is_immediate() {
            let s = crate::testdb::store().await;
            let a = s.create_account("acme", "acme.local").await.unwrap();
            let (key, plain) = s.create_api_key(&a.id, "k").await.unwrap();
            let (other, other_plain) = s.create_api_key(&a.id, "other").await.unwrap();
            assert_eq!(s.verify_api_key(&plain).await.unwrap(), Some(key.clone()));
            assert_eq!(
                s.verify_api_key(&other_plain).await.unwrap(),
                Some(other.clone())
            );
            assert!(format!("{s:?}").contains("api_keys: 2"), "{s:?}");
            // A second verification is served from the cache: the row is gone behind the
            // store's back (as no code path does), yet the key still verifies.
            sqlx::query("DELETE FROM api_keys WHERE id = $1")
                .bind(&key.id)
                .execute(&s.pool)
                .await
                .unwrap();
            assert_eq!(s.verify_api_key(&plain).await.unwrap(), Some(key.clone()));
            // A revocation through the store empties the cache at once.
            assert!(s.revoke_api_key(&a.id, &other.id).await.unwrap());
            assert!(s.verify_api_key(&plain).await.unwrap().is_none());
            assert!(s.verify_api_key(&other_plain).await.unwrap().is_none());
            // Unknown keys are not cached.
            assert!(s.verify_api_key("hf_nothing").await.unwrap().is_none());
            assert!(format!("{s:?}").contains("api_keys: 0"), "{s:?}");
        }
    }

    crate::testdb::both_backends! {
        async fn another_process_writing_the_database_is_noticed() {
            // Two stores on one file stand for the server and the `hookflash` CLI.
            let db = crate::testdb::TestDb::new().await;
            let server = db.open().await;
            let a = server.create_account("acme", "acme.local").await.unwrap();
            let u = server.add_user(&a.id, "201", "old", None).await.unwrap();
            assert_eq!(server.user_webhook(&u.id).await.unwrap(), None);
            assert_eq!(server.user_by_extension(&a.id, "202").await.unwrap(), None);
            assert_eq!(server.lookup_number("4930123456").await.unwrap(), None);

            let (key, plain) = server.create_api_key(&a.id, "k").await.unwrap();
            assert!(server.verify_api_key(&plain).await.unwrap().is_some());

            let cli = db.open().await;
            assert!(cli.revoke_api_key(&a.id, &key.id).await.unwrap());
            cli.set_user_webhook(&a.id, "201", Some("http://127.0.0.1:9/h"))
                .await
                .unwrap();
            cli.add_user(&a.id, "202", "pw", None).await.unwrap();
            cli.add_number(&a.id, "+4930123456", "202").await.unwrap();
            cli.set_user_password(&a.id, "201", "new").await.unwrap();
            let policy = crate::model::DialPolicy {
                max_outbound_calls: 1,
                ..Default::default()
            };
            cli.set_account_dial_policy(&a.id, &policy).await.unwrap();
            cli.set_user_dial_classes(&u.id, Some(crate::model::DialClasses::NONE))
                .await
                .unwrap();
            cli.close().await;

            // The server's next read after the check interval looks at the generation.
            tokio::time::sleep(crate::cache::EXTERNAL_CHECK_INTERVAL + std::time::Duration::from_millis(20))
                .await;
            assert_eq!(
                server.user_webhook(&u.id).await.unwrap().as_deref(),
                Some("http://127.0.0.1:9/h")
            );
            assert!(server
                .user_by_extension(&a.id, "202")
                .await
                .unwrap()
                .is_some());
            assert_eq!(
                server
                    .lookup_number("4930123456")
                    .await
                    .unwrap()
                    .unwrap()
                    .1
                    .extension,
                "202"
            );
            assert_eq!(
                server.user_by_id(&u.id).await.unwrap().unwrap().ha1_md5,
                ha1(DigestAlgorithm::Md5, "201", "acme.local", "new")
            );
            assert!(server.verify_api_key(&plain).await.unwrap().is_none());
            assert_eq!(
                server.account_by_id(&a.id).await.unwrap().unwrap().dial,
                policy
            );
            assert_eq!(
                server
                    .user_by_id(&u.id)
                    .await
                    .unwrap()
                    .unwrap()
                    .dial_classes,
                Some(crate::model::DialClasses::NONE)
            );
            server.close().await;
        }
    }

    crate::testdb::both_backends! {
        async fn read_errors_are_reported_not_cached() {
            let s = crate::testdb::store().await;
            let a = s.create_account("acme", "acme.local").await.unwrap();
            s.close().await;
            // Nothing cached yet for these: the database is asked and its error comes back.
            assert!(s.user_by_extension(&a.id, "201").await.is_err());
            assert!(s.lookup_number("4930123456").await.is_err());
            assert!(s.registrations("u", 0).await.is_err());
        }
    }
}
