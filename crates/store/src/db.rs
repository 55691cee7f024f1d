//! The database handle: opening SQLite, migrations, shared helpers.

use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::error::StoreError;

/// File name of the SQLite database inside `data_dir`.
pub const DB_FILE_NAME: &str = "hookflash.db";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// Handle to the database. Cheap to clone (a connection pool behind an `Arc`).
#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) pool: SqlitePool,
}

impl Store {
    /// Opens (creating if needed) `data_dir/hookflash.db` and runs the migrations.
    pub async fn open(data_dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::Io {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let path = data_dir.join(DB_FILE_NAME);
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        let store = Store { pool };
        store.migrate().await?;
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
            .connect_with(options)
            .await?;
        let store = Store { pool };
        store.migrate().await?;
        Ok(store)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn open_creates_the_file_and_reopens_with_data() {
        let dir = std::env::temp_dir().join(format!("hookflash-db-test-{}", uuid::Uuid::new_v4()));
        let nested = dir.join("nested");
        let store = Store::open(&nested).await.unwrap();
        assert!(nested.join(DB_FILE_NAME).exists());
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
    async fn memory_store_keeps_data_across_clones() {
        let store = Store::open_memory().await.unwrap();
        let clone = store.clone();
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
