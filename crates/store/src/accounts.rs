//! Accounts (tenants).

use std::sync::Arc;

use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use crate::cache::AccountIndex;
use crate::db::{new_id, now_secs, Store};
use crate::error::StoreError;
use crate::model::Account;
use crate::normalize::check_name;

pub(crate) fn account_from_row(row: &SqliteRow) -> Result<Account, StoreError> {
    Ok(Account {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        realm: row.try_get("realm")?,
        created_at: row.try_get("created_at")?,
    })
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
        };
        let mut tx = self.begin_provisioning().await?;
        sqlx::query("INSERT INTO accounts (id, name, realm, created_at) VALUES ($1, $2, $3, $4)")
            .bind(&account.id)
            .bind(&account.name)
            .bind(&account.realm)
            .bind(account.created_at)
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
        let rows =
            sqlx::query("SELECT id, name, realm, created_at FROM accounts ORDER BY created_at, id")
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

    #[tokio::test]
    async fn create_and_look_up_accounts() {
        let s = Store::open_memory().await.unwrap();
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

    #[tokio::test]
    async fn duplicate_name_or_realm_conflicts() {
        let s = Store::open_memory().await.unwrap();
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

    #[tokio::test]
    async fn realm_can_change() {
        let s = Store::open_memory().await.unwrap();
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
