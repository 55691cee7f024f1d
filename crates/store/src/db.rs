//! The database handle: opening SQLite or PostgreSQL, migrations, shared helpers.
//!
//! Both backends go through `sqlx::Any`: one set of runtime queries (`$n` placeholders,
//! TEXT / BIGINT columns, booleans as 0/1 BIGINTs, timestamps as integers, no backend-specific
//! functions), two migration sets kept in step (`migrations/sqlite`, `migrations/postgres`).
//! `Any` decodes only booleans, integers, floats, text and blobs, so the schemas use nothing
//! else (a PostgreSQL `NUMERIC`, `TIMESTAMPTZ` or `JSONB` column, or an aggregate that
//! returns one such as `SUM(bigint)`, would fail to decode at run time).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::any::{Any, AnyConnectOptions, AnyPoolOptions};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AnyPool, ConnectOptions, Executor, Transaction};

use hookflash_config::{redact_url, DatabaseUrl};

use crate::cache::Cache;
use crate::error::StoreError;
use crate::model::CallRecord;
use crate::record_writer::{insert_one, LiveCall, RecordWriter};

/// File name of the SQLite database inside `data_dir`.
pub const DB_FILE_NAME: &str = "hookflash.db";

pub(crate) static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
pub(crate) static POSTGRES_MIGRATOR: sqlx::migrate::Migrator =
    sqlx::migrate!("./migrations/postgres");

/// How long [`Store::ping`] waits for the database.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// Connections of a PostgreSQL pool at most (per process).
const PG_MAX_CONNECTIONS: u32 = 16;

/// Which database engine a [`Store`] runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The embedded default: `data_dir/hookflash.db` (or in memory for tests).
    Sqlite,
    /// A PostgreSQL server, chosen by `database_url = "postgres://..."`.
    Postgres,
}

impl Backend {
    fn migrator(self) -> &'static sqlx::migrate::Migrator {
        match self {
            Backend::Sqlite => &SQLITE_MIGRATOR,
            Backend::Postgres => &POSTGRES_MIGRATOR,
        }
    }
}

/// Handle to the database. Cheap to clone (a connection pool, the read cache and the
/// call-record writer, each behind an `Arc`).
///
/// Routing reads (accounts, trunks, users, numbers, registrations) are served from an
/// in-memory cache that every write through the store invalidates (see `cache.rs`); call
/// records are group-committed by a writer task (see `record_writer.rs`).
#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) pool: AnyPool,
    pub(crate) backend: Backend,
    pub(crate) cache: Arc<Cache>,
    pub(crate) records: Option<RecordWriter>,
    /// The directory holding the database file (`None` for an in-memory store).
    pub(crate) data_dir: Option<Arc<PathBuf>>,
    /// The cluster node this process is: written with live calls and call records.
    pub(crate) node: crate::record_writer::NodeId,
}

/// The record of a call a crash or a dead node cut, from its `live_calls` row: ended at the
/// last sign of life `last_seen` (never before its start or answer), SIP status 500, no legs.
pub(crate) fn cut_call_record(
    row: &sqlx::any::AnyRow,
    last_seen: i64,
    cause: &str,
) -> Result<CallRecord, StoreError> {
    use sqlx::Row;
    let started_at: i64 = row.try_get("started_at")?;
    let answered_at: Option<i64> = row.try_get("answered_at")?;
    let ended_at = last_seen.max(started_at).max(answered_at.unwrap_or(0));
    Ok(CallRecord {
        id: row.try_get("id")?,
        account_id: row.try_get("account_id")?,
        from: row.try_get("from_uri")?,
        to: row.try_get("to_uri")?,
        direction: row.try_get("direction")?,
        started_at,
        answered_at,
        ended_at,
        duration_ms: answered_at.map(|a| ended_at - a).unwrap_or(0),
        end_cause: cause.into(),
        sip_status: 500,
        legs: Vec::new(),
    })
}

/// `sqlx::Any` needs its drivers registered (once per process; later calls do nothing)
/// before the first connection.
fn install_drivers() {
    sqlx::any::install_default_drivers();
}

/// Creates `data_dir` if needed.
fn create_data_dir(data_dir: &Path) -> Result<(), StoreError> {
    std::fs::create_dir_all(data_dir).map_err(|source| StoreError::Io {
        path: data_dir.to_path_buf(),
        source,
    })
}

impl Store {
    /// Opens the configured database: PostgreSQL when `database_url` is set, else SQLite in
    /// `data_dir/hookflash.db`. Files that belong to rows (recordings, voicemail, greetings)
    /// live under `data_dir` either way. Runs the migrations.
    pub async fn open_configured(
        data_dir: &Path,
        database_url: Option<&DatabaseUrl>,
    ) -> Result<Store, StoreError> {
        match database_url {
            None => Store::open(data_dir).await,
            Some(url) => Store::open_postgres(url.as_str(), data_dir).await,
        }
    }

    /// Opens (creating if needed) `data_dir/hookflash.db` and runs the migrations.
    pub async fn open(data_dir: &Path) -> Result<Store, StoreError> {
        install_drivers();
        create_data_dir(data_dir)?;
        let path = data_dir.join(DB_FILE_NAME);
        // `Any` connects from a URL only; the options a URL cannot carry are set per
        // connection below. Foreign keys are on and the busy timeout is 5 s by default.
        let url = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .to_url_lossy();
        let options = AnyConnectOptions::from_url(&url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(8)
            // An embedded database has no connection that can silently die: no ping (a round
            // trip to the connection's worker thread) before every acquire.
            .test_before_acquire(false)
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    // Durability: WAL with synchronous=NORMAL. A commit is in the WAL file (in
                    // the OS's page cache) when it returns, so it survives a crash or kill of
                    // the process; the WAL is fsynced at checkpoints, not at every commit, so a
                    // power loss or kernel crash can roll back the most recent commits (those
                    // not yet checkpointed), never corrupt the database. synchronous=FULL
                    // would fsync every commit (group commit of call records makes that one
                    // fsync per batch, not per call) at the price of commit latency.
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute("PRAGMA synchronous = NORMAL").await?;
                    conn.execute("PRAGMA foreign_keys = ON").await?;
                    conn.execute("PRAGMA busy_timeout = 5000").await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        let mut store = Store::with_pool(pool, Backend::Sqlite);
        store.data_dir = Some(Arc::new(data_dir.to_path_buf()));
        store.migrate().await?;
        restrict_permissions(data_dir);
        tracing::info!(path = %path.display(), "database open (SQLite)");
        Ok(store)
    }

    /// Connects to the PostgreSQL database `url` names and runs its migrations; `data_dir`
    /// holds the files that belong to rows (recordings, voicemail, greetings).
    pub async fn open_postgres(url: &str, data_dir: &Path) -> Result<Store, StoreError> {
        create_data_dir(data_dir)?;
        let store = Store::connect_postgres(url, Some(data_dir)).await?;
        restrict_permissions(data_dir);
        Ok(store)
    }

    /// [`Store::open_postgres`] without a data directory when `data_dir` is `None` (tests).
    pub(crate) async fn connect_postgres(
        url: &str,
        data_dir: Option<&Path>,
    ) -> Result<Store, StoreError> {
        install_drivers();
        let options: AnyConnectOptions = url.parse()?;
        let pool = AnyPoolOptions::new()
            .max_connections(PG_MAX_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        let mut store = Store::with_pool(pool, Backend::Postgres);
        store.data_dir = data_dir.map(|d| Arc::new(d.to_path_buf()));
        store.migrate().await?;
        tracing::info!(server = %redact_url(url), "database open (PostgreSQL)");
        Ok(store)
    }

    /// A private in-memory database (for tests). One connection that never expires, so the
    /// data lives as long as the `Store` (and its clones).
    pub async fn open_memory() -> Result<Store, StoreError> {
        install_drivers();
        // Every connection made from this URL is a new, empty database: the pool keeps its
        // single connection for good.
        let options: AnyConnectOptions = "sqlite::memory:".parse()?;
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .test_before_acquire(false)
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    conn.execute("PRAGMA foreign_keys = ON").await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        let store = Store::with_pool(pool, Backend::Sqlite);
        store.migrate().await?;
        Ok(store)
    }

    pub(crate) fn with_pool(pool: AnyPool, backend: Backend) -> Store {
        let node = Arc::new(std::sync::OnceLock::new());
        Store {
            records: RecordWriter::spawn(pool.clone(), node.clone()),
            node,
            cache: Arc::new(Cache::new()),
            pool,
            backend,
            data_dir: None,
        }
    }

    /// The database engine this store runs on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The data directory the database was opened in (`data_dir` of the config), where files
    /// that belong to its rows live (e.g. voicemail greetings under `greetings/`). `None` for
    /// an in-memory store.
    pub fn data_dir(&self) -> Option<&Path> {
        self.data_dir.as_deref().map(PathBuf::as_path)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        self.backend.migrator().run(&self.pool).await?;
        Ok(())
    }

    /// Closes the pool (waits for connections to be returned).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// A cheap liveness check for `/readyz`: fails within [`PING_TIMEOUT`] when the database
    /// does not answer (a PostgreSQL server that went away), instead of waiting for the pool.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match tokio::time::timeout(PING_TIMEOUT, sqlx::query("SELECT 1").execute(&self.pool)).await
        {
            Ok(res) => {
                res?;
                Ok(())
            }
            Err(_) => Err(StoreError::Database(sqlx::Error::PoolTimedOut)),
        }
    }

    /// Starts a transaction that writes provisioning tables; finish it with
    /// [`Store::commit_provisioning`].
    pub(crate) async fn begin_provisioning(&self) -> Result<Transaction<'static, Any>, StoreError> {
        let mut tx = self.pool.begin().await?;
        match self.backend {
            // SQLite has one writer at a time: a provisioning transaction's checks (a number
            // routed nowhere yet, across users' and applications' numbers) hold until it
            // commits, or its write fails as busy.
            Backend::Sqlite => {}
            // PostgreSQL (READ COMMITTED) would let two transactions, e.g. of two processes,
            // pass the same check and both write: every provisioning transaction first locks
            // the generation row it bumps at commit, so they run one after the other and each
            // sees what the one before it committed.
            Backend::Postgres => {
                sqlx::query(
                    "SELECT generation FROM provisioning_generation WHERE id = 1 FOR UPDATE",
                )
                .execute(&mut *tx)
                .await?;
            }
        }
        Ok(tx)
    }

    /// Commits a write to the cached provisioning tables (accounts, users, numbers, trunks):
    /// bumps the database's provisioning generation in the same transaction (so other
    /// processes' caches notice), commits, and empties this process's read cache — also when
    /// the commit fails, since its outcome is then not known for sure.
    pub(crate) async fn commit_provisioning(
        &self,
        mut tx: Transaction<'static, Any>,
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
            None => insert_one(&self.pool, rec, self.node_id()).await,
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

    /// Notes that the server is alive now (the crash recovery ends cut calls no later). With a
    /// node id set, the node's row in `nodes` (see `nodes.rs`).
    pub async fn heartbeat(&self, at_ms: i64) -> Result<(), StoreError> {
        if let Some(node) = self.node.get() {
            return self.node_heartbeat(node, at_ms).await;
        }
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
    ///
    /// With a node id set ([`Store::set_node_id`]) only this node's live calls (and those
    /// written before calls had a node), ended at this node's last heartbeat: the other nodes'
    /// calls are theirs (or a survivor's, `nodes.rs`).
    pub async fn recover_live_calls(&self) -> Result<usize, StoreError> {
        let mut tx = self.pool.begin().await?;
        let node = self.node.get().cloned();
        let last_seen: Option<i64> = match &node {
            Some(node) => sqlx::query_scalar("SELECT last_seen FROM nodes WHERE node_id = $1")
                .bind(node)
                .fetch_optional(&mut *tx)
                .await?
                .or(
                    sqlx::query_scalar("SELECT at FROM server_heartbeat WHERE id = 1")
                        .fetch_optional(&mut *tx)
                        .await?,
                ),
            None => {
                sqlx::query_scalar("SELECT at FROM server_heartbeat WHERE id = 1")
                    .fetch_optional(&mut *tx)
                    .await?
            }
        };
        let rows = sqlx::query(
            "SELECT id, account_id, from_uri, to_uri, direction, started_at, answered_at \
             FROM live_calls WHERE node_id IS NULL OR node_id = $1 OR $2 = 0",
        )
        .bind(node.clone().unwrap_or_default())
        .bind(i64::from(node.is_some()))
        .fetch_all(&mut *tx)
        .await?;
        let mut n = 0;
        let mut ids = Vec::with_capacity(rows.len());
        for row in &rows {
            use sqlx::Row;
            let id: String = row.try_get("id")?;
            ids.push(id.clone());
            let rec = cut_call_record(row, last_seen.unwrap_or(0), "crash")?;
            // A record that exists already (written just before the crash) wins.
            let exists: Option<String> =
                sqlx::query_scalar("SELECT id FROM call_records WHERE id = $1")
                    .bind(&id)
                    .fetch_optional(&mut *tx)
                    .await?;
            if exists.is_none() {
                crate::record_writer::insert_rows_pub(&mut tx, &rec, self.node_id()).await?;
                n += 1;
            }
        }
        for id in &ids {
            sqlx::query("DELETE FROM live_calls WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
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

    /// One column as both migration sets must define it: (table, column) -> (type, not
    /// null, default). Types normalized: TEXT -> text, INTEGER/BIGINT -> integer.
    type Schema = std::collections::BTreeMap<(String, String), (String, bool, Option<String>)>;

    fn normalize_type(t: &str) -> String {
        match t.to_ascii_lowercase().as_str() {
            "text" => "text".into(),
            "integer" | "bigint" => "integer".into(),
            other => format!("unexpected type {other}"),
        }
    }

    async fn sqlite_schema() -> Schema {
        use sqlx::sqlite::SqlitePoolOptions;
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .unwrap();
        SQLITE_MIGRATOR.run(&pool).await.unwrap();
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' \
             AND name NOT LIKE 'sqlite_%' AND name <> '_sqlx_migrations'",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        let mut schema = Schema::new();
        for table in tables {
            let cols: Vec<(String, String, i64, Option<String>, i64)> = sqlx::query_as(
                "SELECT name, type, \"notnull\", dflt_value, pk FROM pragma_table_info($1)",
            )
            .bind(&table)
            .fetch_all(&pool)
            .await
            .unwrap();
            for (name, ty, notnull, default, pk) in cols {
                // A primary key column is NOT NULL in PostgreSQL whatever it says.
                let key = (table.clone(), name);
                schema.insert(key, (normalize_type(&ty), notnull != 0 || pk > 0, default));
            }
        }
        schema
    }

    async fn postgres_schema() -> Schema {
        use sqlx::Connection;
        let url = crate::testdb::fresh_postgres_url().await;
        let mut conn = sqlx::postgres::PgConnection::connect(&url).await.unwrap();
        POSTGRES_MIGRATOR.run(&mut conn).await.unwrap();
        let cols: Vec<(String, String, String, String, Option<String>)> = sqlx::query_as(
            "SELECT table_name::text, column_name::text, data_type::text, is_nullable::text, \
             column_default::text FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name <> '_sqlx_migrations'",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        let mut schema = Schema::new();
        for (table, name, ty, nullable, default) in cols {
            // `'POST'::text` is SQLite's `'POST'`.
            let default = default.map(|d| match d.split_once("::") {
                Some((value, _cast)) => value.to_string(),
                None => d,
            });
            schema.insert(
                (table, name),
                (normalize_type(&ty), nullable == "NO", default),
            );
        }
        schema
    }

    /// The two migration sets are kept in step: after each set, the same tables with the
    /// same columns (type, NOT NULL, default) and the same migration versions.
    #[tokio::test]
    async fn migration_sets_define_the_same_schema() {
        let versions = |m: &sqlx::migrate::Migrator| {
            m.iter()
                .map(|m| (m.version, m.description.to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(versions(&SQLITE_MIGRATOR), versions(&POSTGRES_MIGRATOR));
        let sqlite = sqlite_schema().await;
        let postgres = postgres_schema().await;
        assert!(sqlite.len() > 100, "{} columns", sqlite.len());
        for (key, col) in &sqlite {
            assert_eq!(Some(col), postgres.get(key), "{key:?} differs");
        }
        for key in postgres.keys() {
            assert!(sqlite.contains_key(key), "{key:?} only in PostgreSQL");
        }
    }

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
        // The per-connection pragmas `Any`'s URL cannot carry: synchronous=NORMAL (1),
        // foreign keys on, the busy timeout.
        let mut conn = store.pool.acquire().await.unwrap();
        for (pragma, want) in [
            ("synchronous", 1),
            ("foreign_keys", 1),
            ("busy_timeout", 5000),
        ] {
            let got: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("PRAGMA {pragma}")))
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            assert_eq!(got, want, "{pragma}");
        }
        drop(conn);
        store.close().await;
        std::fs::remove_dir_all(&dir).unwrap();
    }

    crate::testdb::both_backends! {
        async fn the_dial_policy_migration_keeps_international_for_existing_rows() {
            use crate::model::{DialClass, DialClasses, DialPolicy};
            // A database as it was before migration 6, with an account and a user in it.
            let backend = crate::testdb::backend();
            let url = match backend {
                Backend::Sqlite => "sqlite::memory:".to_string(),
                Backend::Postgres => crate::testdb::fresh_postgres_url().await,
            };
            install_drivers();
            let pool = AnyPoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .connect(&url)
                .await
                .unwrap();
            backend.migrator().run_to(5, &pool).await.unwrap();
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

            let store = Store::with_pool(pool, backend);
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
    }

    #[tokio::test]
    async fn open_configured_picks_the_backend_by_database_url() {
        let dir = std::env::temp_dir().join(format!("hookflash-cfg-{}", uuid::Uuid::new_v4()));
        let sqlite = Store::open_configured(&dir.join("a"), None).await.unwrap();
        assert_eq!(sqlite.backend(), Backend::Sqlite);
        assert!(dir.join("a").join(DB_FILE_NAME).exists());
        sqlite.close().await;

        let url = DatabaseUrl::parse(&crate::testdb::fresh_postgres_url().await).unwrap();
        let pg = Store::open_configured(&dir.join("b"), Some(&url))
            .await
            .unwrap();
        assert_eq!(pg.backend(), Backend::Postgres);
        assert_eq!(pg.data_dir(), Some(dir.join("b").as_path()));
        // The rows are in PostgreSQL: no database file, but the data directory for files.
        assert!(dir.join("b").is_dir());
        assert!(!dir.join("b").join(DB_FILE_NAME).exists());
        pg.create_account("acme", "acme.local").await.unwrap();
        let server: String = sqlx::query_scalar("SELECT version()")
            .fetch_one(&pg.pool)
            .await
            .unwrap();
        assert!(server.starts_with("PostgreSQL"), "{server}");
        pg.close().await;
        let again = Store::open_configured(&dir.join("b"), Some(&url))
            .await
            .unwrap();
        assert_eq!(again.accounts().await.unwrap().len(), 1);
        again.close().await;

        // A server that is not there: a clean error, not a hang or a panic.
        let nowhere = DatabaseUrl::parse("postgres://hookflash@127.0.0.1:1/hookflash").unwrap();
        let err = Store::open_configured(&dir.join("c"), Some(&nowhere))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Database(_)), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Whether the store's connection to PostgreSQL is encrypted.
    async fn over_tls(store: &Store) -> bool {
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&store.pool)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn postgres_over_tls_verifies_the_server() {
        let ca = crate::testdb::cluster_ca()
            .expect("the test PostgreSQL offers TLS (scripts/pg-test-cluster.sh needs openssl)");
        let base = crate::testdb::fresh_postgres_url().await;
        let verified = format!("{base}&sslmode=verify-full&sslrootcert={ca}");
        let s = Store::connect_postgres(&verified, None).await.unwrap();
        assert!(over_tls(&s).await);
        s.create_account("acme", "acme.local").await.unwrap();
        s.close().await;
        let plain = Store::connect_postgres(&format!("{base}&sslmode=disable"), None)
            .await
            .unwrap();
        assert!(!over_tls(&plain).await);
        assert_eq!(plain.accounts().await.unwrap().len(), 1);
        plain.close().await;
        // A certificate no trusted root signed is refused (verify-full without sslrootcert
        // trusts the public web roots only).
        let err = Store::connect_postgres(&format!("{base}&sslmode=verify-full"), None)
            .await
            .unwrap_err();
        assert!(
            err.to_string().to_lowercase().contains("certificate"),
            "{err}"
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
