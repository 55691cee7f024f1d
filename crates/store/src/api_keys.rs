//! API keys: only their SHA-256 hash is stored.

use sqlx::any::AnyRow;
use sqlx::Row;

use crate::cache::put_capped;
use crate::crypto::{api_key_hash, generate_api_key};
use crate::db::{new_id, now_secs, Store};
use crate::error::StoreError;
use crate::model::ApiKey;
use crate::normalize::check_name;

fn api_key_from_row(row: &AnyRow) -> Result<ApiKey, StoreError> {
    Ok(ApiKey {
        id: row.try_get("id")?,
        account_id: row.try_get("account_id")?,
        name: row.try_get("name")?,
        prefix: row.try_get("prefix")?,
        created_at: row.try_get("created_at")?,
    })
}

impl Store {
    /// Creates a random key (`hf_` + 40 base62 characters). Returns its metadata and the
    /// plaintext, which is not stored and cannot be shown again.
    pub async fn create_api_key(
        &self,
        account_id: &str,
        name: &str,
    ) -> Result<(ApiKey, String), StoreError> {
        let plaintext = generate_api_key();
        let key = self.insert_api_key(account_id, name, &plaintext).await?;
        Ok((key, plaintext))
    }

    /// Stores a given key (provisioning). Idempotent: a key already stored for this account is
    /// returned as is; a key of another account gives [`StoreError::Conflict`].
    pub async fn insert_api_key(
        &self,
        account_id: &str,
        name: &str,
        plaintext: &str,
    ) -> Result<ApiKey, StoreError> {
        check_name("API key name", name).map_err(StoreError::Invalid)?;
        if plaintext.is_empty()
            || plaintext
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(StoreError::Invalid(
                "API key must be non-empty and without whitespace".into(),
            ));
        }
        let account = self.require_account(account_id).await?;
        let hash = api_key_hash(plaintext);
        if let Some(existing) = self.api_key_by_hash(&hash).await? {
            if existing.account_id == account.id {
                return Ok(existing);
            }
            return Err(StoreError::Conflict(
                "this API key belongs to another account".into(),
            ));
        }
        let key = ApiKey {
            id: new_id(),
            account_id: account.id.clone(),
            name: name.to_string(),
            prefix: plaintext.chars().take(8).collect(),
            created_at: now_secs(),
        };
        let mut tx = self.begin_provisioning().await?;
        sqlx::query(
            "INSERT INTO api_keys (id, account_id, name, prefix, key_hash, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&key.id)
        .bind(&key.account_id)
        .bind(&key.name)
        .bind(&key.prefix)
        .bind(&hash)
        .bind(key.created_at)
        .execute(&mut *tx)
        .await?;
        self.commit_provisioning(tx).await?;
        tracing::info!(account = %account.name, key_id = %key.id, name = %key.name, "API key added");
        Ok(key)
    }

    /// The keys of an account, oldest first.
    pub async fn api_keys(&self, account_id: &str) -> Result<Vec<ApiKey>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, account_id, name, prefix, created_at FROM api_keys \
             WHERE account_id = $1 ORDER BY created_at, id",
        )
        .bind(account_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(api_key_from_row).collect()
    }

    /// Deletes a key of the account by id. False if the account has no such key.
    pub async fn revoke_api_key(&self, account_id: &str, id: &str) -> Result<bool, StoreError> {
        // A provisioning write: it empties the cache of verified keys here and, through the
        // generation, in other processes.
        let mut tx = self.begin_provisioning().await?;
        let res = sqlx::query("DELETE FROM api_keys WHERE account_id = $1 AND id = $2")
            .bind(account_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        self.commit_provisioning(tx).await?;
        let revoked = res.rows_affected() > 0;
        if revoked {
            tracing::info!(account_id, key_id = id, "API key revoked");
        }
        Ok(revoked)
    }

    /// The key's metadata if `plaintext` is a stored key.
    pub async fn verify_api_key(&self, plaintext: &str) -> Result<Option<ApiKey>, StoreError> {
        if plaintext.is_empty() {
            return Ok(None);
        }
        let hash = api_key_hash(plaintext);
        self.refresh_cache().await;
        let ticket = match self.cache.lookup(|s| s.api_keys.get(&hash).cloned()) {
            Ok(hit) => return Ok(Some(hit)),
            Err(ticket) => ticket,
        };
        let key = self.api_key_by_hash(&hash).await?;
        if let Some(key) = &key {
            self.cache
                .fill(ticket, |s| put_capped(&mut s.api_keys, &hash, key.clone()));
        }
        Ok(key)
    }

    async fn api_key_by_hash(&self, hash: &str) -> Result<Option<ApiKey>, StoreError> {
        let row = sqlx::query(
            "SELECT id, account_id, name, prefix, created_at FROM api_keys WHERE key_hash = $1",
        )
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(api_key_from_row).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::testdb::both_backends! {
        async fn created_keys_verify_and_are_stored_hashed() {
            let s = crate::testdb::store().await;
            let a = s.create_account("acme", "acme.local").await.unwrap();
            let (key, plain) = s.create_api_key(&a.id, "ci").await.unwrap();
            assert!(plain.starts_with("hf_") && plain.len() == 43);
            assert_eq!(key.prefix, &plain[..8]);
            assert_eq!(s.verify_api_key(&plain).await.unwrap(), Some(key.clone()));
            assert_eq!(s.verify_api_key("hf_wrong").await.unwrap(), None);
            assert_eq!(s.verify_api_key("").await.unwrap(), None);

            let stored: Vec<String> = sqlx::query_scalar("SELECT key_hash FROM api_keys")
                .fetch_all(&s.pool)
                .await
                .unwrap();
            assert_eq!(stored, vec![api_key_hash(&plain)]);
        }
    }

    crate::testdb::both_backends! {
        async fn insert_is_idempotent_and_scoped() {
            let s = crate::testdb::store().await;
            let a = s.create_account("acme", "acme.local").await.unwrap();
            let b = s.create_account("beta", "beta.local").await.unwrap();
            let k1 = s
                .insert_api_key(&a.id, "config", "hf_test_key_acme")
                .await
                .unwrap();
            let k2 = s
                .insert_api_key(&a.id, "config", "hf_test_key_acme")
                .await
                .unwrap();
            assert_eq!(k1, k2);
            assert_eq!(s.api_keys(&a.id).await.unwrap().len(), 1);
            assert!(matches!(
                s.insert_api_key(&b.id, "config", "hf_test_key_acme").await,
                Err(StoreError::Conflict(_))
            ));
            assert!(matches!(
                s.insert_api_key(&a.id, "config", "has space").await,
                Err(StoreError::Invalid(_))
            ));
            assert_eq!(
                s.verify_api_key("hf_test_key_acme")
                    .await
                    .unwrap()
                    .unwrap()
                    .account_id,
                a.id
            );
        }
    }

    crate::testdb::both_backends! {
        async fn revoke_only_within_the_account() {
            let s = crate::testdb::store().await;
            let a = s.create_account("acme", "acme.local").await.unwrap();
            let b = s.create_account("beta", "beta.local").await.unwrap();
            let (key, plain) = s.create_api_key(&a.id, "ci").await.unwrap();
            assert!(!s.revoke_api_key(&b.id, &key.id).await.unwrap());
            assert!(s.verify_api_key(&plain).await.unwrap().is_some());
            assert!(s.revoke_api_key(&a.id, &key.id).await.unwrap());
            assert_eq!(s.verify_api_key(&plain).await.unwrap(), None);
            assert!(s.api_keys(&a.id).await.unwrap().is_empty());
        }
    }
}
