//! Accounts (tenants).

use std::sync::Arc;

use sqlx::any::AnyRow;
use sqlx::Row;

use crate::cache::AccountIndex;
use crate::db::{new_id, now_secs, Store};
use crate::error::StoreError;
use crate::model::{Account, DialClasses, DialPolicy};
use crate::normalize::{check_country_code, check_name};

/// The columns [`account_from_row`] reads, as a macro so queries stay `&'static str` (sqlx 0.9
/// refuses dynamic SQL).
macro_rules! account_columns {
    () => {
        "id, name, realm, created_at, country_code, dial_classes, outside_sessions, \
         max_outbound_calls, outbound_calls_per_minute"
    };
}

pub(crate) fn account_from_row(row: &AnyRow) -> Result<Account, StoreError> {
    let id: String = row.try_get("id")?;
    let dial = dial_policy_from_row(&id, row)?;
    Ok(Account {
        name: row.try_get("name")?,
        realm: row.try_get("realm")?,
        created_at: row.try_get("created_at")?,
        dial,
        id,
    })
}

/// The dial policy columns of an account row. A value that cannot be used (only possible by
/// editing the database by hand) is logged and replaced by the new-account default, so one bad
/// row does not make every account unreadable.
fn dial_policy_from_row(account_id: &str, row: &AnyRow) -> Result<DialPolicy, StoreError> {
    let defaults = DialPolicy::default();
    let country_code: Option<String> = row.try_get("country_code")?;
    let country_code = country_code.and_then(|cc| match check_country_code(&cc) {
        Ok(()) => Some(cc),
        Err(e) => {
            tracing::warn!(account_id, error = %e, "stored country code unusable; inferring it");
            None
        }
    });
    let classes: String = row.try_get("dial_classes")?;
    let classes = DialClasses::parse_csv(&classes).unwrap_or_else(|e| {
        tracing::warn!(account_id, error = %e, fallback = %DialClasses::NEW_ACCOUNT.to_csv(),
            "stored dial classes unusable; using the new-account default");
        DialClasses::NEW_ACCOUNT
    });
    let outside_sessions: i64 = row.try_get("outside_sessions")?;
    let limit = |column: &str, default: u32| -> Result<u32, StoreError> {
        let v: i64 = row.try_get(column)?;
        Ok(u32::try_from(v).unwrap_or_else(|_| {
            tracing::warn!(
                account_id,
                column,
                value = v,
                default,
                "stored outbound limit out of range; using the default"
            );
            default
        }))
    };
    Ok(DialPolicy {
        country_code,
        classes,
        outside_sessions: outside_sessions != 0,
        max_outbound_calls: limit("max_outbound_calls", defaults.max_outbound_calls)?,
        outbound_calls_per_minute: limit(
            "outbound_calls_per_minute",
            defaults.outbound_calls_per_minute,
        )?,
    })
}

fn check_dial_policy(policy: &DialPolicy) -> Result<(), StoreError> {
    if let Some(cc) = &policy.country_code {
        check_country_code(cc).map_err(StoreError::Invalid)?;
    }
    Ok(())
}

impl Store {
    /// Creates an account. A name or realm that is taken gives [`StoreError::Conflict`].
    pub async fn create_account(&self, name: &str, realm: &str) -> Result<Account, StoreError> {
        check_name("account name", name).map_err(StoreError::Invalid)?;
        check_name("realm", realm).map_err(StoreError::Invalid)?;
        let account = Account {
            id: new_id(),
            name: name.to_string(),
            realm: realm.to_string(),
            created_at: now_secs(),
            dial: DialPolicy::default(),
        };
        let dial = &account.dial;
        let mut tx = self.begin_provisioning().await?;
        // The dial policy is written explicitly: the column defaults are what accounts that
        // existed before dial permissions got (international allowed).
        sqlx::query(
            "INSERT INTO accounts (id, name, realm, created_at, country_code, dial_classes, \
             outside_sessions, max_outbound_calls, outbound_calls_per_minute) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&account.id)
        .bind(&account.name)
        .bind(&account.realm)
        .bind(account.created_at)
        .bind(&dial.country_code)
        .bind(dial.classes.to_csv())
        .bind(i64::from(dial.outside_sessions))
        .bind(i64::from(dial.max_outbound_calls))
        .bind(i64::from(dial.outbound_calls_per_minute))
        .execute(&mut *tx)
        .await
        .map_err(|e| match StoreError::from(e) {
            StoreError::Conflict(_) => StoreError::Conflict(format!(
                "an account named {name:?} or with realm {realm:?} already exists"
            )),
            other => other,
        })?;
        self.commit_provisioning(tx).await?;
        tracing::info!(account = %account.name, realm = %account.realm, "account created");
        Ok(account)
    }

    /// All accounts, oldest first.
    pub async fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        Ok(self.account_index().await?.list.clone())
    }

    pub async fn account_by_name(&self, name: &str) -> Result<Option<Account>, StoreError> {
        Ok(self.account_index().await?.by_name(name).cloned())
    }

    pub async fn account_by_id(&self, id: &str) -> Result<Option<Account>, StoreError> {
        Ok(self.account_index().await?.by_id(id).cloned())
    }

    pub async fn account_by_realm(&self, realm: &str) -> Result<Option<Account>, StoreError> {
        Ok(self.account_index().await?.by_realm(realm).cloned())
    }

    /// The oldest account (the one the CLI and single-tenant setups use by default).
    pub async fn default_account(&self) -> Result<Option<Account>, StoreError> {
        Ok(self.account_index().await?.list.first().cloned())
    }

    /// All accounts, from the read cache (loaded on a miss).
    async fn account_index(&self) -> Result<Arc<AccountIndex>, StoreError> {
        self.refresh_cache().await;
        let ticket = match self.cache.lookup(|s| s.accounts.clone()) {
            Ok(idx) => return Ok(idx),
            Err(ticket) => ticket,
        };
        let rows = sqlx::query(concat!(
            "SELECT ",
            account_columns!(),
            " FROM accounts ORDER BY created_at, id"
        ))
        .fetch_all(&self.pool)
        .await?;
        let list = rows
            .iter()
            .map(account_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let idx = Arc::new(AccountIndex::new(list));
        self.cache.fill(ticket, |s| s.accounts = Some(idx.clone()));
        Ok(idx)
    }

    /// Changes an account's realm. The HA1 values of its users were computed with the old
    /// realm: users keep working only after their passwords are set again.
    pub async fn set_account_realm(
        &self,
        account_id: &str,
        realm: &str,
    ) -> Result<bool, StoreError> {
        check_name("realm", realm).map_err(StoreError::Invalid)?;
        let mut tx = self.begin_provisioning().await?;
        let res = sqlx::query("UPDATE accounts SET realm = $1 WHERE id = $2")
            .bind(realm)
            .bind(account_id)
            .execute(&mut *tx)
            .await
            .map_err(|e| match StoreError::from(e) {
                StoreError::Conflict(_) => {
                    StoreError::Conflict(format!("realm {realm:?} is used by another account"))
                }
                other => other,
            })?;
        self.commit_provisioning(tx).await?;
        Ok(res.rows_affected() > 0)
    }

    /// Replaces an account's dial policy (classes, country code, outside sessions, outbound
    /// limits). A country code that is not 1 to 3 digits gives [`StoreError::Invalid`]. False if
    /// the account does not exist.
    pub async fn set_account_dial_policy(
        &self,
        account_id: &str,
        policy: &DialPolicy,
    ) -> Result<bool, StoreError> {
        check_dial_policy(policy)?;
        let mut tx = self.begin_provisioning().await?;
        let res = sqlx::query(
            "UPDATE accounts SET country_code = $1, dial_classes = $2, outside_sessions = $3, \
             max_outbound_calls = $4, outbound_calls_per_minute = $5 WHERE id = $6",
        )
        .bind(&policy.country_code)
        .bind(policy.classes.to_csv())
        .bind(i64::from(policy.outside_sessions))
        .bind(i64::from(policy.max_outbound_calls))
        .bind(i64::from(policy.outbound_calls_per_minute))
        .bind(account_id)
        .execute(&mut *tx)
        .await?;
        self.commit_provisioning(tx).await?;
        let changed = res.rows_affected() > 0;
        if changed {
            tracing::info!(
                account_id,
                country_code = policy.country_code.as_deref().unwrap_or("inferred"),
                classes = %policy.classes.to_csv(),
                outside_sessions = policy.outside_sessions,
                max_outbound_calls = policy.max_outbound_calls,
                outbound_calls_per_minute = policy.outbound_calls_per_minute,
                "account dial policy changed"
            );
        }
        Ok(changed)
    }

    /// The account or [`StoreError::NotFound`].
    pub(crate) async fn require_account(&self, account_id: &str) -> Result<Account, StoreError> {
        self.account_by_id(account_id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("account {account_id}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::testdb::both_backends! {
        async fn create_and_look_up_accounts() {
            let s = crate::testdb::store().await;
            assert_eq!(s.default_account().await.unwrap(), None);
            let a = s.create_account("acme", "acme.local").await.unwrap();
            let b = s.create_account("beta", "beta.local").await.unwrap();
            assert_eq!(s.account_by_name("acme").await.unwrap(), Some(a.clone()));
            assert_eq!(s.account_by_id(&b.id).await.unwrap(), Some(b.clone()));
            assert_eq!(
                s.account_by_realm("beta.local").await.unwrap(),
                Some(b.clone())
            );
            assert_eq!(s.account_by_name("nope").await.unwrap(), None);
            assert_eq!(s.accounts().await.unwrap(), vec![a.clone(), b]);
            assert_eq!(s.default_account().await.unwrap(), Some(a));
        }
    }

    crate::testdb::both_backends! {
        async fn duplicate_name_or_realm_conflicts() {
            let s = crate::testdb::store().await;
            s.create_account("acme", "acme.local").await.unwrap();
            assert!(matches!(
                s.create_account("acme", "other").await,
                Err(StoreError::Conflict(_))
            ));
            assert!(matches!(
                s.create_account("other", "acme.local").await,
                Err(StoreError::Conflict(_))
            ));
            assert!(matches!(
                s.create_account("", "x").await,
                Err(StoreError::Invalid(_))
            ));
            assert_eq!(s.accounts().await.unwrap().len(), 1);
        }
    }

    crate::testdb::both_backends! {
        async fn a_new_account_gets_the_default_dial_policy() {
            let s = crate::testdb::store().await;
            let a = s.create_account("acme", "acme.local").await.unwrap();
            assert_eq!(a.dial, DialPolicy::default());
            assert_eq!(a.dial.classes, DialClasses::NEW_ACCOUNT);
            assert_eq!(
                (a.dial.max_outbound_calls, a.dial.outbound_calls_per_minute),
                (20, 60)
            );
            let stored = s.account_by_id(&a.id).await.unwrap().unwrap();
            assert_eq!(stored, a);
            // Written explicitly, not left to the column default (which is for old rows).
            let (classes, outside, max, per_minute): (String, i64, i64, i64) = sqlx::query_as(
                "SELECT dial_classes, outside_sessions, max_outbound_calls, \
                 outbound_calls_per_minute FROM accounts WHERE id = $1",
            )
            .bind(&a.id)
            .fetch_one(&s.pool)
            .await
            .unwrap();
            assert_eq!(
                (classes.as_str(), outside, max, per_minute),
                ("internal,national", 0, 20, 60)
            );
        }
    }

    crate::testdb::both_backends! {
        async fn dial_policy_round_trip_is_seen_through_the_cache() {
            use crate::model::DialClass;
            let s = crate::testdb::store().await;
            let a = s.create_account("acme", "acme.local").await.unwrap();
            let b = s.create_account("beta", "beta.local").await.unwrap();
            // Fill the read cache first.
            assert_eq!(
                s.account_by_id(&a.id).await.unwrap().unwrap().dial,
                DialPolicy::default()
            );
            let policy = DialPolicy {
                country_code: Some("49".into()),
                classes: DialClasses::of([DialClass::Internal, DialClass::International]),
                outside_sessions: true,
                max_outbound_calls: 0,
                outbound_calls_per_minute: 5,
            };
            assert!(s.set_account_dial_policy(&a.id, &policy).await.unwrap());
            assert_eq!(s.account_by_id(&a.id).await.unwrap().unwrap().dial, policy);
            assert_eq!(
                s.account_by_name("acme").await.unwrap().unwrap().dial,
                policy
            );
            assert_eq!(
                s.account_by_realm("acme.local")
                    .await
                    .unwrap()
                    .unwrap()
                    .dial,
                policy
            );
            assert_eq!(s.default_account().await.unwrap().unwrap().dial, policy);
            // The other account is untouched.
            assert_eq!(
                s.account_by_id(&b.id).await.unwrap().unwrap().dial,
                DialPolicy::default()
            );

            // Back to an inferred country and no classes at all.
            let cleared = DialPolicy {
                country_code: None,
                classes: DialClasses::NONE,
                ..policy
            };
            assert!(s.set_account_dial_policy(&a.id, &cleared).await.unwrap());
            assert_eq!(s.accounts().await.unwrap()[0].dial, cleared);
            assert!(!s
                .set_account_dial_policy("no-such-account", &cleared)
                .await
                .unwrap());
        }
    }

    crate::testdb::both_backends! {
        async fn a_bad_country_code_is_refused() {
            let s = crate::testdb::store().await;
            let a = s.create_account("acme", "acme.local").await.unwrap();
            for bad in ["", "+49", "049", "4930", "4a", " 49"] {
                let policy = DialPolicy {
                    country_code: Some(bad.into()),
                    ..DialPolicy::default()
                };
                assert!(
                    matches!(
                        s.set_account_dial_policy(&a.id, &policy).await,
                        Err(StoreError::Invalid(_))
                    ),
                    "{bad:?}"
                );
            }
            assert_eq!(
                s.account_by_id(&a.id).await.unwrap().unwrap().dial,
                DialPolicy::default()
            );
        }
    }

    crate::testdb::both_backends! {
        async fn unusable_stored_dial_values_fall_back_without_failing() {
            let s = crate::testdb::store().await;
            let a = s.create_account("acme", "acme.local").await.unwrap();
            let b = s.create_account("beta", "beta.local").await.unwrap();
            // Hand-edited rows (nothing in the store writes these), before anything is cached.
            sqlx::query(
                "UPDATE accounts SET dial_classes = 'internal,everything', country_code = '+49', \
                 max_outbound_calls = -1, outbound_calls_per_minute = 99999999999, \
                 outside_sessions = 1 WHERE id = $1",
            )
            .bind(&a.id)
            .execute(&s.pool)
            .await
            .unwrap();
            let got = s.account_by_id(&a.id).await.unwrap().unwrap().dial;
            assert_eq!(
                got,
                DialPolicy {
                    outside_sessions: true,
                    ..DialPolicy::default()
                }
            );
            assert_eq!(
                s.account_by_id(&b.id).await.unwrap().unwrap().dial,
                DialPolicy::default()
            );
        }
    }

    crate::testdb::both_backends! {
        async fn realm_can_change() {
            let s = crate::testdb::store().await;
            let a = s.create_account("acme", "acme.local").await.unwrap();
            s.create_account("b", "b.local").await.unwrap();
            assert!(s.set_account_realm(&a.id, "acme.example").await.unwrap());
            assert_eq!(
                s.account_by_realm("acme.example")
                    .await
                    .unwrap()
                    .unwrap()
                    .id,
                a.id
            );
            assert!(matches!(
                s.set_account_realm(&a.id, "b.local").await,
                Err(StoreError::Conflict(_))
            ));
            assert!(!s.set_account_realm("missing", "z").await.unwrap());
        }
    }
}
