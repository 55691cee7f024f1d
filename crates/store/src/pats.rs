//! Personal access tokens: sipgate-style `tokenId:token` credentials of one user
//! (`token-XXXXXX` and a UUIDv4). Only the SHA-256 of the token is stored.

use sqlx::any::AnyRow;
use sqlx::Row;

use crate::crypto::{api_key_hash, constant_time_eq, random_base62};
use crate::db::{now_secs, Store};
use crate::error::StoreError;
use crate::model::{PersonalAccessToken, User};
use crate::normalize::check_name;

fn pat_from_row(row: &AnyRow) -> Result<PersonalAccessToken, StoreError> {
    Ok(PersonalAccessToken {
        id: row.try_get("id")?,
        account_id: row.try_get("account_id")?,
        user_id: row.try_get("user_id")?,
        name: row.try_get("name")?,
        created_at: row.try_get("created_at")?,
    })
}

/// True for the shape of a token id: `token-` and 6 ASCII alphanumerics.
pub fn is_pat_id(id: &str) -> bool {
    id.strip_prefix("token-")
        .is_some_and(|r| r.len() == 6 && r.chars().all(|c| c.is_ascii_alphanumeric()))
}

impl Store {
    /// Creates a token for the user `extension` of the account. Returns its metadata and the
    /// secret token (a UUIDv4), which is not stored and cannot be shown again.
    pub async fn create_pat(
        &self,
        account_id: &str,
        extension: &str,
        name: &str,
    ) -> Result<(PersonalAccessToken, String), StoreError> {
        check_name("token name", name).map_err(StoreError::Invalid)?;
        let user = self.require_user(account_id, extension).await?;
        let token = uuid::Uuid::new_v4().to_string();
        let hash = api_key_hash(&token);
        // 62^6 ids: retry the rare collision instead of failing.
        for _ in 0..8 {
            let pat = PersonalAccessToken {
                id: format!("token-{}", random_base62(6)),
                account_id: user.account_id.clone(),
                user_id: user.id.clone(),
                name: name.to_string(),
                created_at: now_secs(),
            };
            let res = sqlx::query(
                "INSERT INTO personal_access_tokens (id, account_id, user_id, name, token_hash, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&pat.id)
            .bind(&pat.account_id)
            .bind(&pat.user_id)
            .bind(&pat.name)
            .bind(&hash)
            .bind(pat.created_at)
            .execute(&self.pool)
            .await;
            match res.map_err(StoreError::from) {
                Ok(_) => {
                    tracing::info!(account_id, extension, token_id = %pat.id, "personal access token created");
                    return Ok((pat, token));
                }
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Conflict(
            "could not find a free token id; try again".into(),
        ))
    }

    /// The user behind `token_id:token`, if the pair is valid.
    pub async fn verify_pat(
        &self,
        token_id: &str,
        token: &str,
    ) -> Result<Option<(PersonalAccessToken, User)>, StoreError> {
        if !is_pat_id(token_id) || token.is_empty() {
            return Ok(None);
        }
        let row = sqlx::query(
            "SELECT id, account_id, user_id, name, token_hash, created_at \
             FROM personal_access_tokens WHERE id = $1",
        )
        .bind(token_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let stored: String = row.try_get("token_hash")?;
        if !constant_time_eq(stored.as_bytes(), api_key_hash(token).as_bytes()) {
            return Ok(None);
        }
        let pat = pat_from_row(&row)?;
        let Some(user) = self.user_by_id(&pat.user_id).await? else {
            return Ok(None);
        };
        Ok(Some((pat, user)))
    }

    /// The tokens of an account, oldest first.
    pub async fn pats(&self, account_id: &str) -> Result<Vec<PersonalAccessToken>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, account_id, user_id, name, created_at FROM personal_access_tokens \
             WHERE account_id = $1 ORDER BY created_at, id",
        )
        .bind(account_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(pat_from_row).collect()
    }

    /// Deletes a token of the account. False if the account has no such token.
    pub async fn revoke_pat(&self, account_id: &str, token_id: &str) -> Result<bool, StoreError> {
        let res =
            sqlx::query("DELETE FROM personal_access_tokens WHERE account_id = $1 AND id = $2")
                .bind(account_id)
                .bind(token_id)
                .execute(&self.pool)
                .await?;
        let revoked = res.rows_affected() > 0;
        if revoked {
            tracing::info!(account_id, token_id, "personal access token revoked");
        }
        Ok(revoked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::testdb::both_backends! {
        async fn tokens_verify_are_hashed_scoped_and_revocable() {
            let s = crate::testdb::store().await;
            let a = s.create_account("acme", "acme.local").await.unwrap();
            let b = s.create_account("beta", "beta.local").await.unwrap();
            let u = s.add_user(&a.id, "201", "pw", None).await.unwrap();
            let (pat, token) = s.create_pat(&a.id, "201", "sdk").await.unwrap();
            assert!(is_pat_id(&pat.id), "{}", pat.id);
            assert_eq!(uuid::Uuid::parse_str(&token).unwrap().get_version_num(), 4);
            let (got, user) = s.verify_pat(&pat.id, &token).await.unwrap().unwrap();
            assert_eq!(got, pat);
            assert_eq!(user.id, u.id);
            assert!(s.verify_pat(&pat.id, "wrong").await.unwrap().is_none());
            assert!(s
                .verify_pat("token-ZZZZZZ", &token)
                .await
                .unwrap()
                .is_none());
            assert!(s.verify_pat("nope", &token).await.unwrap().is_none());
            let stored: Vec<String> =
                sqlx::query_scalar("SELECT token_hash FROM personal_access_tokens")
                    .fetch_all(&s.pool)
                    .await
                    .unwrap();
            assert_eq!(stored, vec![api_key_hash(&token)]);
            assert!(matches!(
                s.create_pat(&a.id, "999", "x").await,
                Err(StoreError::NotFound(_))
            ));
            assert_eq!(s.pats(&a.id).await.unwrap().len(), 1);
            assert!(!s.revoke_pat(&b.id, &pat.id).await.unwrap());
            assert!(s.revoke_pat(&a.id, &pat.id).await.unwrap());
            assert!(s.verify_pat(&pat.id, &token).await.unwrap().is_none());
        }
    }

    crate::testdb::both_backends! {
        async fn removing_the_user_removes_its_tokens() {
            let s = crate::testdb::store().await;
            let a = s.create_account("acme", "acme.local").await.unwrap();
            s.add_user(&a.id, "201", "pw", None).await.unwrap();
            let (pat, token) = s.create_pat(&a.id, "201", "sdk").await.unwrap();
            assert!(s.remove_user(&a.id, "201").await.unwrap());
            assert!(s.verify_pat(&pat.id, &token).await.unwrap().is_none());
            assert!(s.pats(&a.id).await.unwrap().is_empty());
        }
    }
}
