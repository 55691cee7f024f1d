//! RingCentral WebHook subscriptions (`rc_subscriptions`): written through by the dialect on
//! create / update / renew / delete and read back at start, so a restart keeps them. In a
//! cluster the table is the subscriptions' one truth: every node reads it again (at most once
//! a second while it has notifications to deliver, and on each subscription request).

use sqlx::any::AnyRow;
use sqlx::Row;

use crate::db::Store;
use crate::error::StoreError;

/// A stored WebHook subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RcSubscription {
    pub id: String,
    pub account_id: String,
    pub user_id: String,
    /// The event filters as the subscription names them (the dialect's encoding, opaque
    /// here).
    pub event_filters: String,
    pub address: String,
    pub verification_token: Option<String>,
    pub created_ms: i64,
    pub expires_ms: i64,
}

fn from_row(row: &AnyRow) -> Result<RcSubscription, StoreError> {
    Ok(RcSubscription {
        id: row.try_get("id")?,
        account_id: row.try_get("account_id")?,
        user_id: row.try_get("user_id")?,
        event_filters: row.try_get("event_filters")?,
        address: row.try_get("address")?,
        verification_token: row.try_get("verification_token")?,
        created_ms: row.try_get("created_ms")?,
        expires_ms: row.try_get("expires_ms")?,
    })
}

impl Store {
    /// Creates or replaces the subscription (by id).
    pub async fn save_rc_subscription(&self, sub: &RcSubscription) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO rc_subscriptions (id, account_id, user_id, event_filters, address, \
             verification_token, created_ms, expires_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (id) DO UPDATE SET event_filters = excluded.event_filters, \
             address = excluded.address, verification_token = excluded.verification_token, \
             expires_ms = excluded.expires_ms",
        )
        .bind(&sub.id)
        .bind(&sub.account_id)
        .bind(&sub.user_id)
        .bind(&sub.event_filters)
        .bind(&sub.address)
        .bind(&sub.verification_token)
        .bind(sub.created_ms)
        .bind(sub.expires_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn delete_rc_subscription(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM rc_subscriptions WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The subscriptions not expired at `now_ms` (expired ones are deleted), oldest first.
    pub async fn live_rc_subscriptions(
        &self,
        now_ms: i64,
    ) -> Result<Vec<RcSubscription>, StoreError> {
        sqlx::query("DELETE FROM rc_subscriptions WHERE expires_ms <= $1")
            .bind(now_ms)
            .execute(&self.pool)
            .await?;
        let rows = sqlx::query(
            "SELECT id, account_id, user_id, event_filters, address, verification_token, \
             created_ms, expires_ms FROM rc_subscriptions ORDER BY created_ms, id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// The subscriptions not expired at `now_ms`, oldest first, at most `limit` (read only:
    /// the nodes of a cluster read them often, [`Store::live_rc_subscriptions`] cleans up).
    pub async fn unexpired_rc_subscriptions(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<RcSubscription>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, account_id, user_id, event_filters, address, verification_token, \
             created_ms, expires_ms FROM rc_subscriptions WHERE expires_ms > $1 \
             ORDER BY created_ms, id LIMIT $2",
        )
        .bind(now_ms)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(from_row).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::testdb::both_backends! {
        async fn subscriptions_round_trip_and_expire() {
            let store = crate::testdb::store().await;
            let account = store.create_account("acme", "acme.local").await.unwrap();
            let user = store
                .add_user(&account.id, "201", "secret201", None)
                .await
                .unwrap();
            let mut sub = RcSubscription {
                id: "s1".into(),
                account_id: account.id.clone(),
                user_id: user.id.clone(),
                event_filters: r#"["/restapi/v1.0/account/a/telephony/sessions"]"#.into(),
                address: "http://127.0.0.1:9/hook".into(),
                verification_token: Some("vt".into()),
                created_ms: 1_000,
                expires_ms: 10_000,
            };
            store.save_rc_subscription(&sub).await.unwrap();
            sub.expires_ms = 20_000;
            store.save_rc_subscription(&sub).await.unwrap();
            assert_eq!(
                store.live_rc_subscriptions(5_000).await.unwrap(),
                vec![sub.clone()]
            );
            assert!(store
                .live_rc_subscriptions(20_000)
                .await
                .unwrap()
                .is_empty());
            assert!(!store.delete_rc_subscription("s1").await.unwrap());
            // The read-only view: unexpired ones, oldest first, bounded; nothing deleted.
            let mut newer = sub.clone();
            newer.id = "s2".into();
            newer.created_ms = 2_000;
            newer.expires_ms = 30_000;
            let mut old = sub.clone();
            old.id = "s0".into();
            old.expires_ms = 4_000;
            for s in [&newer, &sub, &old] {
                store.save_rc_subscription(s).await.unwrap();
            }
            let ids = |rows: Vec<RcSubscription>| rows.into_iter().map(|r| r.id).collect::<Vec<_>>();
            assert_eq!(
                ids(store.unexpired_rc_subscriptions(5_000, 10).await.unwrap()),
                ["s1", "s2"]
            );
            assert_eq!(
                ids(store.unexpired_rc_subscriptions(5_000, 1).await.unwrap()),
                ["s1"]
            );
            assert_eq!(
                ids(store.unexpired_rc_subscriptions(0, 10).await.unwrap()),
                ["s0", "s1", "s2"]
            );
            assert!(store.delete_rc_subscription("s0").await.unwrap());
            assert!(store.delete_rc_subscription("s2").await.unwrap());
            store.save_rc_subscription(&sub).await.unwrap();
            assert!(store.delete_rc_subscription("s1").await.unwrap());
        }
    }
}
