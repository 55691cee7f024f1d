//! Registered contacts of users (persisted so they survive restarts).

use std::sync::Arc;

use sqlx::any::AnyRow;
use sqlx::Row;

use crate::cache::put_capped;
use crate::db::{narrow, Backend, Store};
use crate::error::StoreError;
use crate::model::Registration;

fn registration_from_row(row: &AnyRow) -> Result<Registration, StoreError> {
    let cseq: i64 = row.try_get("cseq")?;
    Ok(Registration {
        user_id: row.try_get("user_id")?,
        contact: row.try_get("contact")?,
        source: row.try_get("source")?,
        transport: row.try_get("transport")?,
        expires_at: row.try_get("expires_at")?,
        call_id: row.try_get("call_id")?,
        cseq: narrow("registrations.cseq", cseq)?,
        user_agent: row.try_get("user_agent")?,
    })
}

impl Store {
    /// Inserts or refreshes the binding `(user_id, contact)`.
    pub async fn upsert_registration(&self, r: &Registration) -> Result<(), StoreError> {
        let res = sqlx::query(
            "INSERT INTO registrations (user_id, contact, source, transport, expires_at, call_id, cseq, user_agent) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (user_id, contact) DO UPDATE SET \
               source = excluded.source, transport = excluded.transport, \
               expires_at = excluded.expires_at, call_id = excluded.call_id, \
               cseq = excluded.cseq, user_agent = excluded.user_agent",
        )
        .bind(&r.user_id)
        .bind(&r.contact)
        .bind(&r.source)
        .bind(&r.transport)
        .bind(r.expires_at)
        .bind(&r.call_id)
        .bind(i64::from(r.cseq))
        .bind(&r.user_agent)
        .execute(&self.pool)
        .await;
        self.cache.invalidate_registrations(Some(&r.user_id));
        res?;
        Ok(())
    }

    /// Removes one binding. False if it did not exist.
    pub async fn remove_registration(
        &self,
        user_id: &str,
        contact: &str,
    ) -> Result<bool, StoreError> {
        let res = sqlx::query("DELETE FROM registrations WHERE user_id = $1 AND contact = $2")
            .bind(user_id)
            .bind(contact)
            .execute(&self.pool)
            .await;
        self.cache.invalidate_registrations(Some(user_id));
        Ok(res?.rows_affected() > 0)
    }

    /// Removes all bindings of a user (`Contact: *`). Returns how many were removed.
    pub async fn remove_registrations(&self, user_id: &str) -> Result<u64, StoreError> {
        let res = sqlx::query("DELETE FROM registrations WHERE user_id = $1")
            .bind(user_id)
            .execute(&self.pool)
            .await;
        self.cache.invalidate_registrations(Some(user_id));
        Ok(res?.rows_affected())
    }

    /// The unexpired bindings of a user (`expires_at > now`), latest expiry first.
    ///
    /// On SQLite served from the read cache: a user's bindings are loaded once (expired ones
    /// too) and filtered against `now` on every read; every registration write drops the
    /// user's entry. On PostgreSQL read from the database every time: several nodes share it,
    /// and a phone registered through one node must be callable from the next request on any
    /// other (their writes never reach this node's cache).
    pub async fn registrations(
        &self,
        user_id: &str,
        now: i64,
    ) -> Result<Vec<Registration>, StoreError> {
        let all = match self.backend {
            Backend::Postgres => self.registrations_from_db(user_id).await?,
            Backend::Sqlite => {
                self.refresh_cache().await;
                match self.cache.lookup(|s| s.registrations.get(user_id).cloned()) {
                    Ok(all) => all,
                    Err(ticket) => {
                        let all = self.registrations_from_db(user_id).await?;
                        self.cache.fill_registrations(ticket, |s| {
                            put_capped(&mut s.registrations, user_id, all.clone())
                        });
                        all
                    }
                }
            }
        };
        Ok(all.iter().filter(|r| r.expires_at > now).cloned().collect())
    }

    async fn registrations_from_db(
        &self,
        user_id: &str,
    ) -> Result<Arc<[Registration]>, StoreError> {
        let rows = sqlx::query(
            "SELECT user_id, contact, source, transport, expires_at, call_id, cseq, user_agent \
             FROM registrations WHERE user_id = $1 ORDER BY expires_at DESC, contact",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(registration_from_row)
            .collect::<Result<Vec<_>, _>>()?
            .into())
    }

    /// The unexpired bindings of all users of an account.
    pub async fn account_registrations(
        &self,
        account_id: &str,
        now: i64,
    ) -> Result<Vec<Registration>, StoreError> {
        let rows = sqlx::query(
            "SELECT r.user_id, r.contact, r.source, r.transport, r.expires_at, r.call_id, r.cseq, r.user_agent \
             FROM registrations r JOIN users u ON u.id = r.user_id \
             WHERE u.account_id = $1 AND r.expires_at > $2 ORDER BY u.extension, r.contact",
        )
        .bind(account_id)
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(registration_from_row).collect()
    }

    /// Number of unexpired bindings (all accounts).
    pub async fn count_registrations(&self, now: i64) -> Result<i64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM registrations WHERE expires_at > $1")
            .bind(now)
            .fetch_one(&self.pool)
            .await?;
        Ok(n)
    }

    /// Deletes expired bindings (`expires_at <= now`). Returns how many were deleted.
    pub async fn purge_expired_registrations(&self, now: i64) -> Result<u64, StoreError> {
        let res = sqlx::query("DELETE FROM registrations WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.pool)
            .await;
        // Nothing deleted: the cached bindings still match the table (reads filter expired
        // ones themselves).
        if !matches!(&res, Ok(r) if r.rows_affected() == 0) {
            self.cache.invalidate_registrations(None);
        }
        let n = res?.rows_affected();
        if n > 0 {
            tracing::debug!(purged = n, "expired registrations purged");
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(user_id: &str, contact: &str, expires_at: i64, cseq: u32) -> Registration {
        Registration {
            user_id: user_id.into(),
            contact: contact.into(),
            source: "127.0.0.1:5070".into(),
            transport: "udp".into(),
            expires_at,
            call_id: "abc@host".into(),
            cseq,
            user_agent: Some("pjsua".into()),
        }
    }

    async fn setup() -> (Store, String, String, String) {
        let s = crate::testdb::store().await;
        let a = s.create_account("acme", "acme.local").await.unwrap();
        let u1 = s.add_user(&a.id, "201", "pw", None).await.unwrap();
        let u2 = s.add_user(&a.id, "202", "pw", None).await.unwrap();
        (s, a.id, u1.id, u2.id)
    }

    crate::testdb::both_backends! {
        async fn upsert_refreshes_the_same_contact() {
            let (s, _, u1, _) = setup().await;
            s.upsert_registration(&reg(&u1, "sip:201@127.0.0.1:5070", 1_100, 1))
                .await
                .unwrap();
            let mut refreshed = reg(&u1, "sip:201@127.0.0.1:5070", 1_200, 2);
            refreshed.source = "127.0.0.1:5071".into();
            refreshed.cseq = u32::MAX;
            s.upsert_registration(&refreshed).await.unwrap();
            let regs = s.registrations(&u1, 1_000).await.unwrap();
            assert_eq!(regs, vec![refreshed]);
        }
    }

    crate::testdb::both_backends! {
        async fn expiry_filters_counts_and_purges() {
            let (s, acc, u1, u2) = setup().await;
            s.upsert_registration(&reg(&u1, "sip:a@h", 1_100, 1))
                .await
                .unwrap();
            s.upsert_registration(&reg(&u1, "sip:b@h", 900, 1))
                .await
                .unwrap();
            s.upsert_registration(&reg(&u2, "sip:c@h", 1_000, 1))
                .await
                .unwrap();
            // expires_at == now counts as expired.
            let live = s.registrations(&u1, 1_000).await.unwrap();
            assert_eq!(live.len(), 1);
            assert_eq!(live[0].contact, "sip:a@h");
            assert_eq!(s.count_registrations(1_000).await.unwrap(), 1);
            assert_eq!(s.count_registrations(0).await.unwrap(), 3);
            assert_eq!(s.account_registrations(&acc, 0).await.unwrap().len(), 3);
            assert_eq!(s.purge_expired_registrations(1_000).await.unwrap(), 2);
            assert_eq!(s.count_registrations(0).await.unwrap(), 1);
        }
    }

    crate::testdb::both_backends! {
        async fn remove_one_or_all() {
            let (s, _, u1, u2) = setup().await;
            s.upsert_registration(&reg(&u1, "sip:a@h", 2_000, 1))
                .await
                .unwrap();
            s.upsert_registration(&reg(&u1, "sip:b@h", 2_000, 1))
                .await
                .unwrap();
            s.upsert_registration(&reg(&u2, "sip:c@h", 2_000, 1))
                .await
                .unwrap();
            assert!(s.remove_registration(&u1, "sip:a@h").await.unwrap());
            assert!(!s.remove_registration(&u1, "sip:a@h").await.unwrap());
            assert_eq!(s.remove_registrations(&u1).await.unwrap(), 1);
            assert!(s.registrations(&u1, 0).await.unwrap().is_empty());
            assert_eq!(s.registrations(&u2, 0).await.unwrap().len(), 1);
        }
    }

    crate::testdb::both_backends! {
        async fn registrations_survive_reopen() {
            let db = crate::testdb::TestDb::new().await;
            let s = db.open().await;
            let a = s.create_account("acme", "acme.local").await.unwrap();
            let u = s.add_user(&a.id, "201", "pw", None).await.unwrap();
            let r = reg(&u.id, "sip:201@127.0.0.1:5070", i64::MAX / 2, 7);
            s.upsert_registration(&r).await.unwrap();
            s.close().await;
            let s = db.open().await;
            assert_eq!(s.registrations(&u.id, 0).await.unwrap(), vec![r]);
            s.close().await;
        }
    }
}
