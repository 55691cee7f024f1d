//! OAuth 2.0 client applications and the token pairs issued to them (the RingCentral dialect's
//! `/restapi/oauth/...`). Client secrets and tokens are stored as their SHA-256 only, so a
//! copy of the database grants nothing; token pairs survive a restart.

use sqlx::any::AnyRow;
use sqlx::Row;

use crate::crypto::{api_key_hash, constant_time_eq, random_base62};
use crate::db::{new_id, now_secs, Store};
use crate::error::StoreError;
use crate::normalize::check_name;

/// Live token pairs one user may hold per application; issuing more drops the oldest (a
/// client that logs in in a loop cannot fill the database).
pub const MAX_TOKENS_PER_USER_APP: i64 = 50;

/// An OAuth client application of an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthApp {
    pub id: String,
    pub account_id: String,
    pub client_id: String,
    pub name: String,
    pub created_at: i64,
}

/// A token pair as stored (without the tokens).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthGrant {
    pub id: String,
    pub app_id: String,
    pub account_id: String,
    pub user_id: String,
    pub access_expires_at: i64,
    pub refresh_expires_at: i64,
    /// Unix seconds when this pair was issued (a refresh issues a new pair).
    pub created_at: i64,
}

/// A freshly issued pair with its plaintext tokens (shown once).
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedTokens {
    pub grant: OAuthGrant,
    pub access_token: String,
    pub refresh_token: String,
}

impl std::fmt::Debug for IssuedTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedTokens")
            .field("grant", &self.grant)
            .field("access_token", &"<redacted>")
            .field("refresh_token", &"<redacted>")
            .finish()
    }
}

fn app_from_row(row: &AnyRow) -> Result<OAuthApp, StoreError> {
    Ok(OAuthApp {
        id: row.try_get("id")?,
        account_id: row.try_get("account_id")?,
        client_id: row.try_get("client_id")?,
        name: row.try_get("name")?,
        created_at: row.try_get("created_at")?,
    })
}

fn grant_from_row(row: &AnyRow) -> Result<OAuthGrant, StoreError> {
    Ok(OAuthGrant {
        id: row.try_get("id")?,
        app_id: row.try_get("app_id")?,
        account_id: row.try_get("account_id")?,
        user_id: row.try_get("user_id")?,
        access_expires_at: row.try_get("access_expires_at")?,
        refresh_expires_at: row.try_get("refresh_expires_at")?,
        created_at: row.try_get("created_at")?,
    })
}

macro_rules! grant_select {
    ($column:literal) => {
        concat!(
            "SELECT id, app_id, account_id, user_id, access_expires_at, refresh_expires_at, ",
            "created_at FROM oauth_tokens WHERE ",
            $column,
            " = $1"
        )
    };
}

fn check_credential(what: &str, value: &str) -> Result<(), StoreError> {
    if value.is_empty()
        || value.len() > 200
        || value.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(StoreError::Invalid(format!(
            "{what} must be 1-200 characters without whitespace"
        )));
    }
    Ok(())
}

impl Store {
    /// Creates or updates (by client id) an application of the account with the given secret.
    /// A client id of another account is a [`StoreError::Conflict`].
    pub async fn upsert_oauth_app(
        &self,
        account_id: &str,
        name: &str,
        client_id: &str,
        client_secret: &str,
    ) -> Result<OAuthApp, StoreError> {
        check_name("OAuth app name", name).map_err(StoreError::Invalid)?;
        check_credential("client_id", client_id)?;
        check_credential("client_secret", client_secret)?;
        let account = self.require_account(account_id).await?;
        let hash = api_key_hash(client_secret);
        if let Some(existing) = self.oauth_app_by_client_id(client_id).await? {
            if existing.account_id != account.id {
                return Err(StoreError::Conflict(format!(
                    "OAuth client_id {client_id:?} belongs to another account"
                )));
            }
            sqlx::query("UPDATE oauth_apps SET secret_hash = $1, name = $2 WHERE id = $3")
                .bind(&hash)
                .bind(name)
                .bind(&existing.id)
                .execute(&self.pool)
                .await?;
            return Ok(OAuthApp {
                name: name.to_string(),
                ..existing
            });
        }
        let app = OAuthApp {
            id: new_id(),
            account_id: account.id,
            client_id: client_id.to_string(),
            name: name.to_string(),
            created_at: now_secs(),
        };
        sqlx::query(
            "INSERT INTO oauth_apps (id, account_id, client_id, secret_hash, name, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&app.id)
        .bind(&app.account_id)
        .bind(&app.client_id)
        .bind(&hash)
        .bind(&app.name)
        .bind(app.created_at)
        .execute(&self.pool)
        .await?;
        tracing::info!(account_id, client_id, "OAuth app created");
        Ok(app)
    }

    /// Creates an application with a random client id and secret; returns the secret once.
    pub async fn create_oauth_app(
        &self,
        account_id: &str,
        name: &str,
    ) -> Result<(OAuthApp, String), StoreError> {
        let client_id = random_base62(22);
        let secret = random_base62(40);
        let app = self
            .upsert_oauth_app(account_id, name, &client_id, &secret)
            .await?;
        Ok((app, secret))
    }

    pub async fn oauth_app_by_client_id(
        &self,
        client_id: &str,
    ) -> Result<Option<OAuthApp>, StoreError> {
        let row = sqlx::query(
            "SELECT id, account_id, client_id, name, created_at FROM oauth_apps WHERE client_id = $1",
        )
        .bind(client_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(app_from_row).transpose()
    }

    /// The application of `client_id` when `client_secret` is its secret.
    pub async fn verify_oauth_client(
        &self,
        client_id: &str,
        client_secret: &str,
    ) -> Result<Option<OAuthApp>, StoreError> {
        let row = sqlx::query(
            "SELECT id, account_id, client_id, name, created_at, secret_hash FROM oauth_apps \
             WHERE client_id = $1",
        )
        .bind(client_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let stored: String = row.try_get("secret_hash")?;
        let given = api_key_hash(client_secret);
        if constant_time_eq(stored.as_bytes(), given.as_bytes()) {
            Ok(Some(app_from_row(&row)?))
        } else {
            Ok(None)
        }
    }

    /// The account's applications, by client id.
    pub async fn oauth_apps(&self, account_id: &str) -> Result<Vec<OAuthApp>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, account_id, client_id, name, created_at FROM oauth_apps \
             WHERE account_id = $1 ORDER BY client_id",
        )
        .bind(account_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(app_from_row).collect()
    }

    /// Issues a new token pair for `user_id` through `app`, living `access_ttl` and
    /// `refresh_ttl` seconds. Expired pairs of the user are dropped, and the oldest beyond
    /// [`MAX_TOKENS_PER_USER_APP`].
    pub async fn issue_oauth_tokens(
        &self,
        app: &OAuthApp,
        user_id: &str,
        access_ttl: i64,
        refresh_ttl: i64,
    ) -> Result<IssuedTokens, StoreError> {
        let now = now_secs();
        let access_token = random_base62(48);
        let refresh_token = random_base62(48);
        let grant = OAuthGrant {
            id: new_id(),
            app_id: app.id.clone(),
            account_id: app.account_id.clone(),
            user_id: user_id.to_string(),
            access_expires_at: now.saturating_add(access_ttl),
            refresh_expires_at: now.saturating_add(refresh_ttl),
            created_at: now,
        };
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "DELETE FROM oauth_tokens WHERE user_id = $1 AND app_id = $2 \
             AND refresh_expires_at <= $3 AND access_expires_at <= $3",
        )
        .bind(user_id)
        .bind(&app.id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM oauth_tokens WHERE user_id = $1 AND app_id = $2 \
             AND id NOT IN (SELECT id FROM oauth_tokens \
             WHERE user_id = $1 AND app_id = $2 ORDER BY created_at DESC, id DESC LIMIT $3)",
        )
        .bind(user_id)
        .bind(&app.id)
        .bind(MAX_TOKENS_PER_USER_APP - 1)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO oauth_tokens (id, app_id, account_id, user_id, access_hash, \
             access_expires_at, refresh_hash, refresh_expires_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&grant.id)
        .bind(&grant.app_id)
        .bind(&grant.account_id)
        .bind(&grant.user_id)
        .bind(api_key_hash(&access_token))
        .bind(grant.access_expires_at)
        .bind(api_key_hash(&refresh_token))
        .bind(grant.refresh_expires_at)
        .bind(grant.created_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(IssuedTokens {
            grant,
            access_token,
            refresh_token,
        })
    }

    /// The pair an access token belongs to (expired or not: the caller checks).
    pub async fn oauth_grant_by_access(
        &self,
        access_token: &str,
    ) -> Result<Option<OAuthGrant>, StoreError> {
        let row = sqlx::query(grant_select!("access_hash"))
            .bind(api_key_hash(access_token))
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(grant_from_row).transpose()
    }

    /// The pair a refresh token belongs to (expired or not: the caller checks).
    pub async fn oauth_grant_by_refresh(
        &self,
        refresh_token: &str,
    ) -> Result<Option<OAuthGrant>, StoreError> {
        let row = sqlx::query(grant_select!("refresh_hash"))
            .bind(api_key_hash(refresh_token))
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(grant_from_row).transpose()
    }

    /// Deletes a pair (revocation, or the old pair of a refresh). False if it was gone.
    pub async fn delete_oauth_grant(&self, grant_id: &str) -> Result<bool, StoreError> {
        let res = sqlx::query("DELETE FROM oauth_tokens WHERE id = $1")
            .bind(grant_id)
            .execute(&self.pool)
            .await?;
        Ok(res.rows_affected() > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store_with_user() -> (Store, String, String) {
        let s = crate::testdb::store().await;
        let a = s.create_account("acme", "acme.local").await.unwrap();
        let u = s.add_user(&a.id, "201", "secret201", None).await.unwrap();
        (s, a.id, u.id)
    }

    crate::testdb::both_backends! {
        async fn client_secret_is_checked_and_client_ids_stay_in_their_account() {
            let (s, acc, _) = store_with_user().await;
            let app = s.upsert_oauth_app(&acc, "sdk", "cid", "sec").await.unwrap();
            assert_eq!(
                s.verify_oauth_client("cid", "sec").await.unwrap(),
                Some(app.clone())
            );
            assert_eq!(s.verify_oauth_client("cid", "nope").await.unwrap(), None);
            assert_eq!(s.verify_oauth_client("other", "sec").await.unwrap(), None);
            // A new secret replaces the old one.
            s.upsert_oauth_app(&acc, "sdk", "cid", "sec2")
                .await
                .unwrap();
            assert_eq!(s.verify_oauth_client("cid", "sec").await.unwrap(), None);
            assert!(s
                .verify_oauth_client("cid", "sec2")
                .await
                .unwrap()
                .is_some());
            let beta = s.create_account("beta", "beta.local").await.unwrap();
            assert!(matches!(
                s.upsert_oauth_app(&beta.id, "x", "cid", "s").await,
                Err(StoreError::Conflict(_))
            ));
            assert!(matches!(
                s.upsert_oauth_app(&acc, "x", "has space", "s").await,
                Err(StoreError::Invalid(_))
            ));
        }
    }

    crate::testdb::both_backends! {
        async fn tokens_are_found_by_their_hash_and_capped_per_user() {
            let (s, acc, user) = store_with_user().await;
            let app = s.upsert_oauth_app(&acc, "sdk", "cid", "sec").await.unwrap();
            let t = s.issue_oauth_tokens(&app, &user, 60, 600).await.unwrap();
            assert!(!format!("{t:?}").contains(&t.access_token));
            let g = s
                .oauth_grant_by_access(&t.access_token)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(g, t.grant);
            assert_eq!(
                s.oauth_grant_by_refresh(&t.refresh_token)
                    .await
                    .unwrap()
                    .map(|g| g.id),
                Some(g.id.clone())
            );
            assert_eq!(
                s.oauth_grant_by_access(&t.refresh_token).await.unwrap(),
                None
            );
            assert!(s.delete_oauth_grant(&g.id).await.unwrap());
            assert_eq!(
                s.oauth_grant_by_access(&t.access_token).await.unwrap(),
                None
            );
            let mut last = None;
            for _ in 0..(MAX_TOKENS_PER_USER_APP + 5) {
                last = Some(s.issue_oauth_tokens(&app, &user, 60, 600).await.unwrap());
            }
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM oauth_tokens")
                .fetch_one(&s.pool)
                .await
                .unwrap();
            assert_eq!(n, MAX_TOKENS_PER_USER_APP);
            let last = last.unwrap();
            assert!(s
                .oauth_grant_by_access(&last.access_token)
                .await
                .unwrap()
                .is_some());
        }
    }
}
