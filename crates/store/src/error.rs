//! Error type of the store layer.

use std::path::PathBuf;

/// Errors of the persistence layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot create data directory {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A unique name/extension/number/key already exists.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A referenced object (account, user, ...) does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// An argument is malformed (empty extension, number with letters, ...).
    #[error("invalid: {0}")]
    Invalid(String),
    /// A row holds a value that cannot be mapped (e.g. a port outside 0..=65535).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The call-record writer stopped (its runtime shut down) before it answered: whether the
    /// record was committed is unknown.
    #[error("the call-record writer stopped before confirming the write")]
    WriterGone,
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e {
            if db.is_unique_violation() {
                return StoreError::Conflict(db.message().to_string());
            }
        }
        StoreError::Database(e)
    }
}
