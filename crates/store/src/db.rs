//! The database handle: opening SQLite, migrations, shared helpers.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::sqlite::{
    Sqlite, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::Transaction;

use crate::cache::Cache;
use crate::error::StoreError;
use crate::model::CallRecord;
use crate::record_writer::{insert_one, LiveCall, RecordWriter};

/// File name of the SQLite database inside `data_dir`.
pub const DB_FILE_NAME: &str = "hookflash.db";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// Handle to the database. Cheap to clone (a connection pool, the read cache and the
/// call-record writer, each behind an `Arc`).
///
/// Routing reads (accounts, trunks, users, numbers, registrations) are served from an
/// in-memory cache that every write through the store invalidates (see `cache.rs`); call
/// records are group-committed by a writer task (see `record_writer.rs`).
#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) pool: SqlitePool,
    pub(crate) cache: Arc<Cache>,
    pub(crate) records: Option<RecordWriter>,
    /// The directory holding the database file (`None` for an in-memory store).
    pub(crate) data_dir: Option<Arc<PathBuf>>,
}

impl Store {
    /// Opens (creating if needed) `data_dir/hookflash.db` and runs the migrations.
    pub async fn open(data_dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::Io {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let path = data_dir.join(DB_FILE_NAME);
        // Durability: WAL with synchronous=NORMAL. A commit is in the WAL file (in the OS's
        // page cache) when it returns, so it survives a crash or kill of the process; the WAL
        // is fsynced at checkpoints, not at every commit, so a power loss or kernel crash can
        // roll back the most recent commits (those not yet checkpointed), never corrupt the
        // database. synchronous=FULL would fsync every commit (group commit of call records
        // makes that one fsync per batch, not per call) at the price of commit latency.
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            // An embedded database has no connection that can silently die: no ping (a round
            // trip to the connection's worker thread) before every acquire.
            .test_before_acquire(false)
            .connect_with(options)
            .await?;
        let mut store = Store::with_pool(pool);
        store.data_dir = Some(Arc::new(data_dir.to_path_buf()));
        store.migrate().await?;
        restrict_permissions(data_dir);
        tracing::info!(path = %path.display(), "database open");
        Ok(store)
    }

    /// A private in-memory database (for tests). One connection that never expires, so the
    /// data lives as long as the `Store` (and its clones).
    pub async fn open_memory() -> Result<Store, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")?.foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .test_before_acquire(false)
            .connect_with(options)
            .await?;
        let store = Store::with_pool(pool);
        store.migrate().await?;
        Ok(store)
    }

    fn with_pool(pool: SqlitePool) -> Store {
        Store {
            records: RecordWriter::spawn(pool.clone()),
            cache: Arc::new(Cache::new()),
            pool,
            data_dir: None,
        }
    }

    /// The data directory the database was opened in (`data_dir` of the config), where files
    /// that belong to its rows live (e.g. voicemail greetings under `greetings/`). `None` for
    /// an in-memory store.
    pub fn data_dir(&self) -> Option<&Path> {
        self.data_dir.as_deref().map(PathBuf::as_path)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// Closes the pool (waits for connections to be returned).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// A cheap liveness check for `/readyz`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Starts a transaction that writes provisioning tables; finish it with
    /// [`Store::commit_provisioning`].
    pub(crate) async fn begin_provisioning(
        &self,
    ) -> Result<Transaction<'static, Sqlite>, StoreError> {
        Ok(self.pool.begin().await?)
    }

    /// Commits a write to the cached provisioning tables (accounts, users, numbers, trunks):
    /// bumps the database's provisioning generation in the same transaction (so other
    /// processes' caches notice), commits, and empties this process's read cache — also when
    /// the commit fails, since its outcome is then not known for sure.
    pub(crate) async fn commit_provisioning(
        &self,
        mut tx: Transaction<'static, Sqlite>,
    ) -> Result<(), StoreError> {
        let res = async {
            sqlx::query(
                "UPDATE provisioning_generation SET generation = generation + 1 WHERE id = 1",
            )
            .execute(&mut *tx)
            .await?;
            tx.commit().await
        }
        .await;
        self.cache.invalidate_all();
        res.map_err(StoreError::from)
    }

    /// Looks whether another process changed the provisioning data (at most every
    /// `cache::EXTERNAL_CHECK_INTERVAL`), before a cached read.
    pub(crate) async fn refresh_cache(&self) {
        self.cache.refresh(&self.pool).await;
    }

    /// Writes a finished call and its legs, durably: returns once the transaction holding them
    /// is committed. Concurrent callers share one transaction (group commit); see
    /// `record_writer.rs`.
    pub(crate) async fn write_call_record(&self, rec: &CallRecord) -> Result<(), StoreError> {
        match &self.records {
            Some(writer) => writer.write(&self.pool, rec).await,
            None => insert_one(&self.pool, rec).await,
        }
    }

    /// A call started: its row in `live_calls` is queued (not awaited), so that a crash still
    /// leaves a call record at the next start ([`Store::recover_live_calls`]).
    pub fn call_started(&self, call: LiveCall) {
        if let Some(writer) = &self.records {
            writer.note(Some(call), None);
        }
    }

    /// A live call was answered at `at_ms` (queued, not awaited).
    pub fn call_answered(&self, id: &str, at_ms: i64) {
        if let Some(writer) = &self.records {
            writer.note(None, Some((id.to_string(), at_ms)));
        }
    }

    /// Notes that the server is alive now (the crash recovery ends cut calls no later).
    pub async fn heartbeat(&self, at_ms: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO server_heartbeat (id, at) VALUES (1, $1) \
             ON CONFLICT (id) DO UPDATE SET at = excluded.at",
        )
        .bind(at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// At start: every call still marked live was cut by a crash (or a kill). Each gets its
    /// call record, ended at the last heartbeat (never before its start or answer), cause
    /// `crash`, SIP status 500; the live rows are removed. Returns how many.
    pub async fn recover_live_calls(&self) -> Result<usize, StoreError> {
        let mut tx = self.pool.begin().await?;
        let last_seen: Option<i64> =
            sqlx::query_scalar("SELECT at FROM server_heartbeat WHERE id = 1")
                .fetch_optional(&mut *tx)
                .await?;
        let rows = sqlx::query(
            "SELECT id, account_id, from_uri, to_uri, direction, started_at, answered_at \
             FROM live_calls",
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut n = 0;
        for row in &rows {
            use sqlx::Row;
            let id: String = row.try_get("id")?;
            let started_at: i64 = row.try_get("started_at")?;
            let answered_at: Option<i64> = row.try_get("answered_at")?;
            let ended_at = last_seen
                .unwrap_or(started_at)
                .max(started_at)
                .max(answered_at.unwrap_or(0));
            let rec = CallRecord {
                id: id.clone(),
                account_id: row.try_get("account_id")?,
                from: row.try_get("from_uri")?,
                to: row.try_get("to_uri")?,
                direction: row.try_get("direction")?,
                started_at,
                answered_at,
                ended_at,
                duration_ms: answered_at.map(|a| ended_at - a).unwrap_or(0),
                end_cause: "crash".into(),
                sip_status: 500,
                legs: Vec::new(),
            };
            // A record that exists already (written just before the crash) wins.
            let exists: Option<String> =
                sqlx::query_scalar("SELECT id FROM call_records WHERE id = $1")
                    .bind(&id)
                    .fetch_optional(&mut *tx)
                    .await?;
            if exists.is_none() {
                crate::record_writer::insert_rows_pub(&mut tx, &rec).await?;
                n += 1;
            }
        }
        sqlx::query("DELETE FROM live_calls")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        if n > 0 {
            tracing::warn!(
                calls = n,
                "calls cut by a crash got their call records (cause crash)"
            );
        }
        Ok(n)
    }
}

/// Current time in unix seconds.
pub(crate) fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub(crate) fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Converts a stored integer into a narrower unsigned type, or reports a corrupt row.
pub(crate) fn narrow<T: TryFrom<i64>>(what: &str, v: i64) -> Result<T, StoreError> {
    T::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what} = {v} is out of range")))
}

/// The data directory holds password-equivalent digest HA1 values, API key hashes, the token
/// signing key, trunk passwords, recordings and voicemail: the directory itself becomes 0700
/// and every file already in it (the database and its WAL, recordings, voicemail, caches)
/// 0600, so a data directory made by an older version or by hand is tightened at start. New
/// files are created under the server's umask (0077, set in `main`). Failures are logged,
/// not fatal: a read-only or foreign-owned directory still serves.
#[cfg(unix)]
pub fn restrict_permissions(data_dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    fn set(path: &Path, mode: u32) {
        if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)) {
            tracing::warn!(path = %path.display(), error = %e, "cannot restrict permissions");
        }
    }
    fn walk(dir: &Path, depth: usize) {
        set(dir, 0o700);
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let path = entry.path();
            if kind.is_dir() && depth < 4 {
                walk(&path, depth + 1);
            } else if kind.is_file() {
                set(&path, 0o600);
            }
        }
    }
    walk(data_dir, 0);
}

#[cfg(not(unix))]
pub fn restrict_permissions(_data_dir: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[tokio::test]
    async fn the_data_directory_is_private_after_open() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("hf-perm-{}", crate::db::new_id()));
        std::fs::create_dir_all(dir.join("recordings")).unwrap();
        std::fs::write(dir.join("recordings/old.wav"), b"RIFF").unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(
            dir.join("recordings/old.wav"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let store = Store::open(&dir).await.unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("recordings")), 0o700);
        assert_eq!(mode(&dir.join("recordings/old.wav")), 0o600);
        assert_eq!(mode(&dir.join(DB_FILE_NAME)), 0o600);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn open_creates_the_file_and_reopens_with_data() {
        let dir = std::env::temp_dir().join(format!("hookflash-db-test-{}", uuid::Uuid::new_v4()));
        let nested = dir.join("nested");
        let store = Store::open(&nested).await.unwrap();
        assert!(nested.join(DB_FILE_NAME).exists());
        assert_eq!(store.data_dir(), Some(nested.as_path()));
        assert_eq!(store.clone().data_dir(), Some(nested.as_path()));
        store.create_account("acme", "acme.local").await.unwrap();
        store.close().await;

        // Reopening runs the (already applied) migrations again and keeps the data.
        let store = Store::open(&nested).await.unwrap();
        let accounts = store.accounts().await.unwrap();
        assert_eq!(accounts.len(), 1);
        assert_eq!(accounts[0].name, "acme");
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(mode.to_lowercase(), "wal");
        store.close().await;
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn the_dial_policy_migration_keeps_international_for_existing_rows() {
        use crate::model::{DialClass, DialClasses, DialPolicy};
        // A database as it was before migration 6, with an account and a user in it.
        let options = SqliteConnectOptions::from_str("sqlite::memory:")
            .unwrap()
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .unwrap();
        MIGRATOR.run_to(5, &pool).await.unwrap();
        sqlx::query(
            "INSERT INTO accounts (id, name, realm, created_at) VALUES ('a1', 'old', 'old.local', 1)",
        )
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO users (id, account_id, extension, ha1_md5, ha1_sha256, created_at) \
             VALUES ('u1', 'a1', '201', 'x', 'y', 1)",
        )
        .execute(&pool)
        .await
        .unwrap();

        let store = Store::with_pool(pool);
        store.migrate().await.unwrap();
        let old = store.account_by_id("a1").await.unwrap().unwrap();
        assert_eq!(
            old.dial,
            DialPolicy {
                classes: DialClasses::of([
                    DialClass::Internal,
                    DialClass::National,
                    DialClass::International
                ]),
                ..DialPolicy::default()
            }
        );
        assert_eq!(
            store.user_by_id("u1").await.unwrap().unwrap().dial_classes,
            None
        );
        // Accounts created after the upgrade get the new-account default.
        let new = store.create_account("new", "new.local").await.unwrap();
        assert_eq!(
            store.account_by_id(&new.id).await.unwrap().unwrap().dial,
            DialPolicy::default()
        );
    }

    #[tokio::test]
    async fn memory_store_keeps_data_across_clones() {
        let store = Store::open_memory().await.unwrap();
        let clone = store.clone();
        assert_eq!(store.data_dir(), None);
        store.create_account("a", "a.local").await.unwrap();
        assert_eq!(clone.accounts().await.unwrap().len(), 1);
        store.ping().await.unwrap();
    }

    #[tokio::test]
    async fn open_fails_cleanly_on_a_file_in_the_way() {
        let file = std::env::temp_dir().join(format!("hookflash-db-file-{}", uuid::Uuid::new_v4()));
        std::fs::write(&file, b"x").unwrap();
        let err = Store::open(&file).await.unwrap_err();
        assert!(matches!(err, StoreError::Io { .. }), "{err}");
        std::fs::remove_file(&file).unwrap();
    }
}
