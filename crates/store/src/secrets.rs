//! Server secrets: random keys the server generates once and keeps (e.g. the key that signs
//! sipgate-style access tokens, so tokens survive a restart).

use crate::crypto::random_hex;
use crate::db::{now_secs, Store};
use crate::error::StoreError;
use crate::normalize::check_name;

impl Store {
    /// The secret called `name`: created (32 random bytes, lowercase hex) on first use and the
    /// same value ever after, also when two callers race for the first use.
    pub async fn server_secret(&self, name: &str) -> Result<String, StoreError> {
        check_name("secret name", name).map_err(StoreError::Invalid)?;
        let existing: Option<String> =
            sqlx::query_scalar("SELECT value FROM server_secrets WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        if let Some(v) = existing {
            return Ok(v);
        }
        sqlx::query(
            "INSERT INTO server_secrets (name, value, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(random_hex(32))
        .bind(now_secs())
        .execute(&self.pool)
        .await?;
        let value: String = sqlx::query_scalar("SELECT value FROM server_secrets WHERE name = $1")
            .bind(name)
            .fetch_one(&self.pool)
            .await?;
        tracing::info!(name, "server secret created");
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    crate::testdb::both_backends! {
        async fn secrets_are_created_once_and_persist() {
            let db = crate::testdb::TestDb::new().await;
            let s = db.open().await;
            let a = s.server_secret("jwt").await.unwrap();
            assert_eq!(a.len(), 64);
            assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
            assert_eq!(s.server_secret("jwt").await.unwrap(), a);
            assert_ne!(s.server_secret("other").await.unwrap(), a);
            s.close().await;
            let s = db.open().await;
            assert_eq!(s.server_secret("jwt").await.unwrap(), a);
            s.close().await;
        }
    }
}
