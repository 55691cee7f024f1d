//! Users (extensions) and their digest credentials.

use sqlx::any::AnyRow;
use sqlx::Row;

use crate::cache::put_capped;
use crate::crypto::{constant_time_eq, ha1, DigestAlgorithm};
use crate::db::{new_id, now_secs, Store};
use crate::error::StoreError;
use crate::model::{DialClasses, User};
use crate::normalize::{check_extension, check_webhook_url};

/// The columns [`user_from_row`] reads, as a macro so queries stay `&'static str` (sqlx 0.9
/// refuses dynamic SQL).
macro_rules! user_columns {
    () => {
        "id, account_id, extension, display_name, ha1_md5, ha1_sha256, dial_classes"
    };
}

pub(crate) fn user_from_row(row: &AnyRow) -> Result<User, StoreError> {
    let id: String = row.try_get("id")?;
    let dial_classes: Option<String> = row.try_get("dial_classes")?;
    // A list that cannot be parsed (only possible by editing the database by hand) falls back
    // to the account's classes, which the engine applies anyway.
    let dial_classes = dial_classes.and_then(|csv| match DialClasses::parse_csv(&csv) {
        Ok(set) => Some(set),
        Err(e) => {
            tracing::warn!(user_id = %id, error = %e,
                "stored dial classes of the user unusable; using the account's");
            None
        }
    });
    Ok(User {
        account_id: row.try_get("account_id")?,
        extension: row.try_get("extension")?,
        display_name: row.try_get("display_name")?,
        ha1_md5: row.try_get("ha1_md5")?,
        ha1_sha256: row.try_get("ha1_sha256")?,
        dial_classes,
        id,
    })
}

fn check_password(password: &str) -> Result<(), StoreError> {
    if password.is_empty() {
        return Err(StoreError::Invalid("password must not be empty".into()));
    }
    Ok(())
}

/// `(ha1_md5, ha1_sha256)` for a user; the digest username is the extension.
fn ha1_pair(extension: &str, realm: &str, password: &str) -> (String, String) {
    (
        ha1(DigestAlgorithm::Md5, extension, realm, password),
        ha1(DigestAlgorithm::Sha256, extension, realm, password),
    )
}

impl Store {
    /// Adds a user. The password is only kept as HA1 values. An existing extension in the
    /// account gives [`StoreError::Conflict`], an unknown account [`StoreError::NotFound`].
    pub async fn add_user(
        &self,
        account_id: &str,
        extension: &str,
        password: &str,
        display_name: Option<&str>,
    ) -> Result<User, StoreError> {
        check_extension(extension).map_err(StoreError::Invalid)?;
        check_password(password)?;
        let account = self.require_account(account_id).await?;
        let (ha1_md5, ha1_sha256) = ha1_pair(extension, &account.realm, password);
        let user = User {
            id: new_id(),
            account_id: account.id.clone(),
            extension: extension.to_string(),
            display_name: display_name.map(str::to_string),
            ha1_md5,
            ha1_sha256,
            dial_classes: None,
        };
        let mut tx = self.begin_provisioning().await?;
        sqlx::query(
            "INSERT INTO users (id, account_id, extension, display_name, ha1_md5, ha1_sha256, created_at, \
             password_changed_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
        )
        .bind(&user.id)
        .bind(&user.account_id)
        .bind(&user.extension)
        .bind(&user.display_name)
        .bind(&user.ha1_md5)
        .bind(&user.ha1_sha256)
        .bind(now_secs())
        .execute(&mut *tx)
        .await
        .map_err(|e| match StoreError::from(e) {
            StoreError::Conflict(_) => StoreError::Conflict(format!(
                "user {extension:?} already exists in account {:?}",
                account.name
            )),
            other => other,
        })?;
        self.commit_provisioning(tx).await?;
        tracing::info!(account = %account.name, extension, "user added");
        Ok(user)
    }

    /// Sets a new password (recomputes the HA1 values) and, when it differs from the stored
    /// one, records the time of the change ([`Store::user_password_changed_at`]): HTTP access
    /// tokens issued before it stop working. Setting the same password again (provisioning
    /// does at every start) changes nothing. False if the user does not exist.
    pub async fn set_user_password(
        &self,
        account_id: &str,
        extension: &str,
        password: &str,
    ) -> Result<bool, StoreError> {
        check_password(password)?;
        let Some(account) = self.account_by_id(account_id).await? else {
            return Ok(false);
        };
        let (ha1_md5, ha1_sha256) = ha1_pair(extension, &account.realm, password);
        let mut tx = self.begin_provisioning().await?;
        let res = sqlx::query(
            "UPDATE users SET password_changed_at = CASE \
               WHEN ha1_md5 = $1 AND ha1_sha256 = $2 THEN password_changed_at ELSE $5 END, \
             ha1_md5 = $1, ha1_sha256 = $2 WHERE account_id = $3 AND extension = $4",
        )
        .bind(&ha1_md5)
        .bind(&ha1_sha256)
        .bind(account_id)
        .bind(extension)
        .bind(now_secs())
        .execute(&mut *tx)
        .await?;
        self.commit_provisioning(tx).await?;
        let changed = res.rows_affected() > 0;
        if changed {
            tracing::info!(account = %account.name, extension, "user password changed");
        }
        Ok(changed)
    }

    /// Sets or clears the display name. False if the user does not exist.
    pub async fn set_user_display_name(
        &self,
        account_id: &str,
        extension: &str,
        display_name: Option<&str>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_provisioning().await?;
        let res = sqlx::query(
            "UPDATE users SET display_name = $1 WHERE account_id = $2 AND extension = $3",
        )
        .bind(display_name)
        .bind(account_id)
        .bind(extension)
        .execute(&mut *tx)
        .await?;
        self.commit_provisioning(tx).await?;
        Ok(res.rows_affected() > 0)
    }

    /// Sets (`Some`) or clears (`None`) the user's sipgate push webhook URL (`http://` or
    /// `https://`). False if the user does not exist.
    pub async fn set_user_webhook(
        &self,
        account_id: &str,
        extension: &str,
        url: Option<&str>,
    ) -> Result<bool, StoreError> {
        if let Some(url) = url {
            check_webhook_url(url).map_err(StoreError::Invalid)?;
        }
        let mut tx = self.begin_provisioning().await?;
        let res = sqlx::query(
            "UPDATE users SET webhook_url = $1 WHERE account_id = $2 AND extension = $3",
        )
        .bind(url)
        .bind(account_id)
        .bind(extension)
        .execute(&mut *tx)
        .await?;
        self.commit_provisioning(tx).await?;
        let changed = res.rows_affected() > 0;
        if changed {
            tracing::info!(
                account_id,
                extension,
                set = url.is_some(),
                "user webhook changed"
            );
        }
        Ok(changed)
    }

    /// The user `extension` of the account whose realm is `realm`, if `password` is its SIP
    /// password: the HA1 (SHA-256) is computed and compared, in constant time, with the stored
    /// one. Used by HTTP logins (`<extension>@<realm>` + SIP password).
    pub async fn verify_user_password(
        &self,
        realm: &str,
        extension: &str,
        password: &str,
    ) -> Result<Option<User>, StoreError> {
        if password.is_empty() {
            return Ok(None);
        }
        let Some(account) = self.account_by_realm(realm).await? else {
            return Ok(None);
        };
        let Some(user) = self.user_by_extension(&account.id, extension).await? else {
            return Ok(None);
        };
        let alg = DigestAlgorithm::Sha256;
        let computed = ha1(alg, extension, &account.realm, password);
        if constant_time_eq(computed.as_bytes(), user.ha1(alg).as_bytes()) {
            Ok(Some(user))
        } else {
            Ok(None)
        }
    }

    /// When the user's password was last set (unix seconds; 0 if before this was recorded).
    /// None if the user does not exist. Not cached: read once per token check.
    pub async fn user_password_changed_at(&self, user_id: &str) -> Result<Option<i64>, StoreError> {
        let at: Option<i64> =
            sqlx::query_scalar("SELECT password_changed_at FROM users WHERE id = $1")
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(at)
    }

    /// Sets (`Some`) the classes a user may dial, or clears (`None`) the user's own list so the
    /// account's classes apply. The engine intersects the user's classes with the account's.
    /// False if the user does not exist.
    pub async fn set_user_dial_classes(
        &self,
        user_id: &str,
        classes: Option<DialClasses>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_provisioning().await?;
        let res = sqlx::query("UPDATE users SET dial_classes = $1 WHERE id = $2")
            .bind(classes.map(DialClasses::to_csv))
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        self.commit_provisioning(tx).await?;
        let changed = res.rows_affected() > 0;
        if changed {
            tracing::info!(
                user_id,
                classes = classes
                    .map(DialClasses::to_csv)
                    .as_deref()
                    .unwrap_or("account's"),
                "user dial classes changed"
            );
        }
        Ok(changed)
    }

    /// The user's sipgate push webhook URL, if set (kept out of [`User`] on purpose: only the
    /// webhook dispatcher needs it).
    pub async fn user_webhook(&self, user_id: &str) -> Result<Option<String>, StoreError> {
        self.refresh_cache().await;
        let ticket = match self.cache.lookup(|s| s.webhooks.get(user_id).cloned()) {
            Ok(hit) => return Ok(hit),
            Err(ticket) => ticket,
        };
        let url: Option<Option<String>> =
            sqlx::query_scalar("SELECT webhook_url FROM users WHERE id = $1")
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await?;
        let url = url.flatten();
        self.cache.fill(ticket, |s| {
            put_capped(&mut s.webhooks, user_id, url.clone())
        });
        Ok(url)
    }

    /// The users of an account, ordered by extension.
    pub async fn users(&self, account_id: &str) -> Result<Vec<User>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE account_id = $1 ORDER BY extension"
        ))
        .bind(account_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(user_from_row).collect()
    }

    pub async fn user_by_extension(
        &self,
        account_id: &str,
        extension: &str,
    ) -> Result<Option<User>, StoreError> {
        self.refresh_cache().await;
        let ticket = match self.cache.lookup(|s| s.user_by_ext(account_id, extension)) {
            Ok(hit) => return Ok(hit),
            Err(ticket) => ticket,
        };
        let row = sqlx::query(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE account_id = $1 AND extension = $2"
        ))
        .bind(account_id)
        .bind(extension)
        .fetch_optional(&self.pool)
        .await?;
        let user = row.as_ref().map(user_from_row).transpose()?;
        self.cache.fill(ticket, |s| {
            s.put_user_by_ext(account_id, extension, user.clone())
        });
        Ok(user)
    }

    pub async fn user_by_id(&self, id: &str) -> Result<Option<User>, StoreError> {
        self.refresh_cache().await;
        let ticket = match self.cache.lookup(|s| s.users_by_id.get(id).cloned()) {
            Ok(hit) => return Ok(hit),
            Err(ticket) => ticket,
        };
        let row = sqlx::query(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let user = row.as_ref().map(user_from_row).transpose()?;
        self.cache
            .fill(ticket, |s| put_capped(&mut s.users_by_id, id, user.clone()));
        Ok(user)
    }

    /// Removes a user together with its registrations and numbers. False if it did not exist.
    pub async fn remove_user(&self, account_id: &str, extension: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin_provisioning().await?;
        let user_id: Option<String> =
            sqlx::query_scalar("SELECT id FROM users WHERE account_id = $1 AND extension = $2")
                .bind(account_id)
                .bind(extension)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(user_id) = user_id else {
            return Ok(false);
        };
        sqlx::query("DELETE FROM registrations WHERE user_id = $1")
            .bind(&user_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM numbers WHERE user_id = $1")
            .bind(&user_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(&user_id)
            .execute(&mut *tx)
            .await?;
        self.commit_provisioning(tx).await?;
        tracing::info!(account_id, extension, "user removed");
        Ok(true)
    }

    /// The user or [`StoreError::NotFound`].
    pub(crate) async fn require_user(
        &self,
        account_id: &str,
        extension: &str,
    ) -> Result<User, StoreError> {
        self.user_by_extension(account_id, extension)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("user {extension:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Registration;

    crate::testdb::both_backends! {
        async fn add_user_stores_ha1_not_password() {
            let s = crate::testdb::store().await;
            let a = s.create_account("acme", "acme.local").await.unwrap();
            let u = s
                .add_user(&a.id, "201", "secret201", Some("Alice"))
                .await
                .unwrap();
            assert_eq!(
                u.ha1_md5,
                ha1(DigestAlgorithm::Md5, "201", "acme.local", "secret201")
            );
            assert_eq!(
                u.ha1(DigestAlgorithm::Sha256),
                ha1(DigestAlgorithm::Sha256, "201", "acme.local", "secret201")
            );
            assert_eq!(
                s.user_by_extension(&a.id, "201").await.unwrap(),
                Some(u.clone())
            );
            assert_eq!(s.user_by_id(&u.id).await.unwrap(), Some(u.clone()));
            assert_eq!(s.user_by_extension(&a.id, "202").await.unwrap(), None);

            // The plaintext appears nowhere in the users table.
            let rows: Vec<(String, String, String)> =
                sqlx::query_as("SELECT extension, ha1_md5, ha1_sha256 FROM users")
                    .fetch_all(&s.pool)
                    .await
                    .unwrap();
            assert!(rows
                .iter()
                .all(|(a, b, c)| ![a, b, c].iter().any(|v| v.contains("secret201"))));
        }
    }

    crate::testdb::both_backends! {
        async fn duplicates_and_bad_input_are_rejected() {
            let s = crate::testdb::store().await;
            let a = s.create_account("acme", "acme.local").await.unwrap();
            let b = s.create_account("beta", "beta.local").await.unwrap();
            s.add_user(&a.id, "201", "pw", None).await.unwrap();
            assert!(matches!(
                s.add_user(&a.id, "201", "pw2", None).await,
                Err(StoreError::Conflict(_))
            ));
            // Same extension in another account is fine.
            s.add_user(&b.id, "201", "pw", None).await.unwrap();
            assert!(matches!(
                s.add_user(&a.id, "2 1", "pw", None).await,
                Err(StoreError::Invalid(_))
            ));
            assert!(matches!(
                s.add_user(&a.id, "202", "", None).await,
                Err(StoreError::Invalid(_))
            ));
            assert!(matches!(
                s.add_user("no-such-account", "202", "pw", None).await,
                Err(StoreError::NotFound(_))
            ));
            let users = s.users(&a.id).await.unwrap();
            assert_eq!(users.len(), 1);
        }
    }

    crate::testdb::both_backends! {
        async fn password_changed_at_is_set_at_creation_and_on_real_changes_only() {
            let s = crate::testdb::store().await;
            let a = s.create_account("acme", "acme.local").await.unwrap();
            let before = now_secs();
            let u = s.add_user(&a.id, "201", "old", None).await.unwrap();
            let at = s.user_password_changed_at(&u.id).await.unwrap().unwrap();
            assert!(at >= before && at <= now_secs(), "{at}");
            assert_eq!(s.user_password_changed_at("nobody").await.unwrap(), None);
            // Pretend the password was set long ago.
            sqlx::query("UPDATE users SET password_changed_at = 5 WHERE id = $1")
                .bind(&u.id)
                .execute(&s.pool)
                .await
                .unwrap();
            // The same password again (provisioning at every start): unchanged.
            assert!(s.set_user_password(&a.id, "201", "old").await.unwrap());
            assert_eq!(s.user_password_changed_at(&u.id).await.unwrap(), Some(5));
            // A new one: now.
            let before = now_secs();
            assert!(s.set_user_password(&a.id, "201", "new").await.unwrap());
            let at = s.user_password_changed_at(&u.id).await.unwrap().unwrap();
            assert!(at >= before && at <= now_secs(), "{at}");
        }
    }

    crate::testdb::both_backends! {
        async fn password_change_recomputes_ha1() {
            let s = crate::testdb::store().await;
            let a = s.create_account("acme", "acme.local").await.unwrap();
            s.add_user(&a.id, "201", "old", None).await.unwrap();
            assert!(s.set_user_password(&a.id, "201", "new").await.unwrap());
            let u = s.user_by_extension(&a.id, "201").await.unwrap().unwrap();
            assert_eq!(
                u.ha1_md5,
                ha1(DigestAlgorithm::Md5, "201", "acme.local", "new")
            );
            assert!(!s.set_user_password(&a.id, "999", "new").await.unwrap());
            assert!(s
                .set_user_display_name(&a.id, "201", Some("Al"))
                .await
                .unwrap());
            assert_eq!(
                s.user_by_extension(&a.id, "201")
                    .await
                    .unwrap()
                    .unwrap()
                    .display_name
                    .as_deref(),
                Some("Al")
            );
        }
    }

    crate::testdb::both_backends! {
        async fn password_login_and_webhook_url() {
            let s = crate::testdb::store().await;
            let a = s.create_account("acme", "acme.local").await.unwrap();
            s.add_user(&a.id, "201", "secret201", None).await.unwrap();
            let u = s
                .verify_user_password("acme.local", "201", "secret201")
                .await
                .unwrap()
                .unwrap();
            assert_eq!(u.extension, "201");
            assert_eq!(s.user_webhook(&u.id).await.unwrap(), None);
            for (realm, ext, pw) in [
                ("acme.local", "201", "wrong"),
                ("acme.local", "201", ""),
                ("acme.local", "202", "secret201"),
                ("other", "201", "secret201"),
            ] {
                assert!(s
                    .verify_user_password(realm, ext, pw)
                    .await
                    .unwrap()
                    .is_none());
            }
            assert!(s
                .set_user_webhook(&a.id, "201", Some("http://127.0.0.1:9/hook"))
                .await
                .unwrap());
            assert_eq!(
                s.user_webhook(&u.id).await.unwrap().as_deref(),
                Some("http://127.0.0.1:9/hook")
            );
            assert!(matches!(
                s.set_user_webhook(&a.id, "201", Some("nope")).await,
                Err(StoreError::Invalid(_))
            ));
            assert!(!s.set_user_webhook(&a.id, "999", None).await.unwrap());
            assert!(s.set_user_webhook(&a.id, "201", None).await.unwrap());
            assert_eq!(s.user_webhook(&u.id).await.unwrap(), None);
            assert_eq!(s.user_webhook("no-such-user").await.unwrap(), None);
        }
    }

    crate::testdb::both_backends! {
        async fn user_dial_classes_round_trip_through_the_cache() {
            use crate::model::DialClass;
            let s = crate::testdb::store().await;
            let a = s.create_account("acme", "acme.local").await.unwrap();
            let u = s.add_user(&a.id, "201", "pw", None).await.unwrap();
            let other = s.add_user(&a.id, "202", "pw", None).await.unwrap();
            s.add_number(&a.id, "+4930123456", "201").await.unwrap();
            assert_eq!(u.dial_classes, None);
            // Fill the read caches first.
            assert_eq!(
                s.user_by_id(&u.id).await.unwrap().unwrap().dial_classes,
                None
            );
            assert_eq!(
                s.user_by_extension(&a.id, "201")
                    .await
                    .unwrap()
                    .unwrap()
                    .dial_classes,
                None
            );
            assert_eq!(
                s.lookup_number("4930123456")
                    .await
                    .unwrap()
                    .unwrap()
                    .1
                    .dial_classes,
                None
            );

            let internal = DialClasses::of([DialClass::Internal]);
            assert!(s
                .set_user_dial_classes(&u.id, Some(internal))
                .await
                .unwrap());
            assert_eq!(
                s.user_by_id(&u.id).await.unwrap().unwrap().dial_classes,
                Some(internal)
            );
            assert_eq!(
                s.user_by_extension(&a.id, "201")
                    .await
                    .unwrap()
                    .unwrap()
                    .dial_classes,
                Some(internal)
            );
            assert_eq!(
                s.lookup_number("4930123456")
                    .await
                    .unwrap()
                    .unwrap()
                    .1
                    .dial_classes,
                Some(internal)
            );
            assert_eq!(
                s.users(&a.id).await.unwrap()[0].dial_classes,
                Some(internal)
            );
            assert_eq!(
                s.user_by_id(&other.id).await.unwrap().unwrap().dial_classes,
                None
            );

            // The empty set is an override too (nothing may be dialled), not the account's.
            assert!(s
                .set_user_dial_classes(&u.id, Some(DialClasses::NONE))
                .await
                .unwrap());
            assert_eq!(
                s.user_by_id(&u.id).await.unwrap().unwrap().dial_classes,
                Some(DialClasses::NONE)
            );
            assert!(s.set_user_dial_classes(&u.id, None).await.unwrap());
            assert_eq!(
                s.user_by_id(&u.id).await.unwrap().unwrap().dial_classes,
                None
            );
            assert!(!s
                .set_user_dial_classes("no-such-user", Some(internal))
                .await
                .unwrap());
        }
    }

    crate::testdb::both_backends! {
        async fn unusable_stored_user_dial_classes_mean_the_accounts() {
            let s = crate::testdb::store().await;
            let a = s.create_account("acme", "acme.local").await.unwrap();
            let u = s.add_user(&a.id, "201", "pw", None).await.unwrap();
            sqlx::query("UPDATE users SET dial_classes = 'internal,satellite' WHERE id = $1")
                .bind(&u.id)
                .execute(&s.pool)
                .await
                .unwrap();
            assert_eq!(
                s.user_by_id(&u.id).await.unwrap().unwrap().dial_classes,
                None
            );
        }
    }

    crate::testdb::both_backends! {
        async fn users_are_listed_per_account_in_order() {
            let s = crate::testdb::store().await;
            let a = s.create_account("acme", "acme.local").await.unwrap();
            let b = s.create_account("beta", "beta.local").await.unwrap();
            s.add_user(&a.id, "202", "pw", None).await.unwrap();
            s.add_user(&a.id, "201", "pw", None).await.unwrap();
            s.add_user(&b.id, "301", "pw", None).await.unwrap();
            let exts: Vec<String> = s
                .users(&a.id)
                .await
                .unwrap()
                .into_iter()
                .map(|u| u.extension)
                .collect();
            assert_eq!(exts, vec!["201", "202"]);
        }
    }

    crate::testdb::both_backends! {
        async fn remove_user_removes_registrations_and_numbers() {
            let s = crate::testdb::store().await;
            let a = s.create_account("acme", "acme.local").await.unwrap();
            let u = s.add_user(&a.id, "201", "pw", None).await.unwrap();
            let keep = s.add_user(&a.id, "202", "pw", None).await.unwrap();
            s.add_number(&a.id, "+4930123456", "201").await.unwrap();
            s.add_number(&a.id, "+4930999999", "202").await.unwrap();
            for user in [&u, &keep] {
                s.upsert_registration(&Registration {
                    user_id: user.id.clone(),
                    contact: "sip:x@127.0.0.1:5070".into(),
                    source: "127.0.0.1:5070".into(),
                    transport: "udp".into(),
                    expires_at: 2_000,
                    call_id: "c".into(),
                    cseq: 1,
                    user_agent: None,
                })
                .await
                .unwrap();
            }
            assert!(s.remove_user(&a.id, "201").await.unwrap());
            assert!(!s.remove_user(&a.id, "201").await.unwrap());
            assert_eq!(s.user_by_id(&u.id).await.unwrap(), None);
            assert!(s.registrations(&u.id, 1_000).await.unwrap().is_empty());
            assert_eq!(s.lookup_number("+4930123456").await.unwrap(), None);
            // The other user is untouched.
            assert_eq!(s.registrations(&keep.id, 1_000).await.unwrap().len(), 1);
            assert!(s.lookup_number("4930999999").await.unwrap().is_some());
        }
    }
}
