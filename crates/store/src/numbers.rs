//! Phone numbers (DIDs) routed to users.
//!
//! Numbers are stored in E.164 form with a leading `+` and matched by their digits, so an
//! incoming `4930123456` finds `+4930123456` and vice versa. A number belongs to exactly one
//! account (unique system-wide): inbound trunk calls are routed by number alone.

use sqlx::any::AnyRow;
use sqlx::Row;

use crate::cache::put_capped;
use crate::db::{new_id, now_secs, Store};
use crate::error::StoreError;
use crate::model::{Number, User};
use crate::normalize::number_digits;

pub(crate) fn number_from_row(row: &AnyRow) -> Result<Number, StoreError> {
    Ok(Number {
        id: row.try_get("id")?,
        account_id: row.try_get("account_id")?,
        number: row.try_get("number")?,
        user_id: row.try_get("user_id")?,
    })
}

fn digits_or_invalid(number: &str) -> Result<String, StoreError> {
    number_digits(number).ok_or_else(|| {
        StoreError::Invalid(format!(
            "{number:?} is not a phone number (digits with an optional leading '+')"
        ))
    })
}

impl Store {
    /// Routes `number` to the user `extension` of the account. A number that exists anywhere
    /// gives [`StoreError::Conflict`]; an unknown user [`StoreError::NotFound`].
    pub async fn add_number(
        &self,
        account_id: &str,
        number: &str,
        extension: &str,
    ) -> Result<Number, StoreError> {
        let digits = digits_or_invalid(number)?;
        let user = self.require_user(account_id, extension).await?;
        let n = Number {
            id: new_id(),
            account_id: account_id.to_string(),
            number: format!("+{digits}"),
            user_id: user.id,
        };
        let mut tx = self.begin_provisioning().await?;
        // Unique across user numbers and application numbers.
        let taken: Option<String> =
            sqlx::query_scalar("SELECT id FROM application_numbers WHERE digits = $1")
                .bind(&digits)
                .fetch_optional(&mut *tx)
                .await?;
        if taken.is_some() {
            return Err(StoreError::Conflict(format!(
                "number {} is already assigned",
                n.number
            )));
        }
        sqlx::query(
            "INSERT INTO numbers (id, account_id, number, digits, user_id, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&n.id)
        .bind(&n.account_id)
        .bind(&n.number)
        .bind(&digits)
        .bind(&n.user_id)
        .bind(now_secs())
        .execute(&mut *tx)
        .await
        .map_err(|e| match StoreError::from(e) {
            StoreError::Conflict(_) => {
                StoreError::Conflict(format!("number {} is already assigned", n.number))
            }
            other => other,
        })?;
        self.commit_provisioning(tx).await?;
        tracing::info!(account_id, number = %n.number, extension, "number added");
        Ok(n)
    }

    /// Points an existing number of the account at another user. False if the account has no
    /// such number.
    pub async fn set_number_user(
        &self,
        account_id: &str,
        number: &str,
        extension: &str,
    ) -> Result<bool, StoreError> {
        let digits = digits_or_invalid(number)?;
        let user = self.require_user(account_id, extension).await?;
        let mut tx = self.begin_provisioning().await?;
        let res =
            sqlx::query("UPDATE numbers SET user_id = $1 WHERE account_id = $2 AND digits = $3")
                .bind(&user.id)
                .bind(account_id)
                .bind(&digits)
                .execute(&mut *tx)
                .await?;
        self.commit_provisioning(tx).await?;
        Ok(res.rows_affected() > 0)
    }

    /// The numbers of an account, ordered by number.
    pub async fn numbers(&self, account_id: &str) -> Result<Vec<Number>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, account_id, number, user_id FROM numbers WHERE account_id = $1 ORDER BY number",
        )
        .bind(account_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(number_from_row).collect()
    }

    /// Removes a number of the account (with or without `+`). False if it was not there.
    pub async fn remove_number(&self, account_id: &str, number: &str) -> Result<bool, StoreError> {
        let Some(digits) = number_digits(number) else {
            return Ok(false);
        };
        let mut tx = self.begin_provisioning().await?;
        let res = sqlx::query("DELETE FROM numbers WHERE account_id = $1 AND digits = $2")
            .bind(account_id)
            .bind(&digits)
            .execute(&mut *tx)
            .await?;
        self.commit_provisioning(tx).await?;
        Ok(res.rows_affected() > 0)
    }

    /// Finds the number (any account) and the user it rings. `"+4930123456"` and
    /// `"4930123456"` both match; anything that is not a phone number gives `None`.
    pub async fn lookup_number(&self, number: &str) -> Result<Option<(Number, User)>, StoreError> {
        let Some(digits) = number_digits(number) else {
            return Ok(None);
        };
        self.refresh_cache().await;
        let ticket = match self.cache.lookup(|s| s.numbers.get(&digits).cloned()) {
            Ok(hit) => return Ok(hit),
            Err(ticket) => ticket,
        };
        let found = self.lookup_number_db(&digits).await?;
        self.cache.fill(ticket, |s| {
            put_capped(&mut s.numbers, &digits, found.clone())
        });
        Ok(found)
    }

    async fn lookup_number_db(&self, digits: &str) -> Result<Option<(Number, User)>, StoreError> {
        let row = sqlx::query(
            "SELECT n.id AS n_id, n.account_id AS n_account_id, n.number AS n_number, \
                    u.id, u.account_id, u.extension, u.display_name, u.ha1_md5, u.ha1_sha256, \
                    u.dial_classes \
             FROM numbers n JOIN users u ON u.id = n.user_id WHERE n.digits = $1",
        )
        .bind(digits)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let user = crate::users::user_from_row(&row)?;
        let number = Number {
            id: row.try_get("n_id")?,
            account_id: row.try_get("n_account_id")?,
            number: row.try_get("n_number")?,
            user_id: user.id.clone(),
        };
        Ok(Some((number, user)))
    }

    /// A number by its digits (any account).
    pub(crate) async fn number_by_digits(
        &self,
        digits: &str,
    ) -> Result<Option<Number>, StoreError> {
        let row =
            sqlx::query("SELECT id, account_id, number, user_id FROM numbers WHERE digits = $1")
                .bind(digits)
                .fetch_optional(&self.pool)
                .await?;
        row.as_ref().map(number_from_row).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn setup() -> (Store, String) {
        let s = crate::testdb::store().await;
        let a = s.create_account("acme", "acme.local").await.unwrap();
        s.add_user(&a.id, "201", "pw", None).await.unwrap();
        s.add_user(&a.id, "202", "pw", None).await.unwrap();
        (s, a.id)
    }

    crate::testdb::both_backends! {
        async fn numbers_match_with_or_without_plus() {
            let (s, acc) = setup().await;
            let n = s.add_number(&acc, "4930123456", "201").await.unwrap();
            assert_eq!(n.number, "+4930123456");
            for q in ["+4930123456", "4930123456", "+49 30 123456"] {
                let (found, user) = s.lookup_number(q).await.unwrap().unwrap();
                assert_eq!(found, n, "{q}");
                assert_eq!(user.extension, "201");
            }
            assert_eq!(s.lookup_number("+4930123457").await.unwrap(), None);
            assert_eq!(s.lookup_number("sip:foo").await.unwrap(), None);
        }
    }

    crate::testdb::both_backends! {
        async fn numbers_are_unique_everywhere() {
            let (s, acc) = setup().await;
            s.add_number(&acc, "+4930123456", "201").await.unwrap();
            assert!(matches!(
                s.add_number(&acc, "4930123456", "202").await,
                Err(StoreError::Conflict(_))
            ));
            let b = s.create_account("beta", "beta.local").await.unwrap();
            s.add_user(&b.id, "301", "pw", None).await.unwrap();
            assert!(matches!(
                s.add_number(&b.id, "+4930123456", "301").await,
                Err(StoreError::Conflict(_))
            ));
            assert!(matches!(
                s.add_number(&acc, "abc", "201").await,
                Err(StoreError::Invalid(_))
            ));
            assert!(matches!(
                s.add_number(&acc, "+4930000000", "999").await,
                Err(StoreError::NotFound(_))
            ));
        }
    }

    crate::testdb::both_backends! {
        async fn list_reassign_and_remove() {
            let (s, acc) = setup().await;
            s.add_number(&acc, "+4930200000", "201").await.unwrap();
            s.add_number(&acc, "+4930100000", "201").await.unwrap();
            let listed: Vec<String> = s
                .numbers(&acc)
                .await
                .unwrap()
                .into_iter()
                .map(|n| n.number)
                .collect();
            assert_eq!(listed, vec!["+4930100000", "+4930200000"]);

            assert!(s.set_number_user(&acc, "4930100000", "202").await.unwrap());
            let (_, user) = s.lookup_number("+4930100000").await.unwrap().unwrap();
            assert_eq!(user.extension, "202");

            // Another account cannot remove it.
            let b = s.create_account("beta", "beta.local").await.unwrap();
            assert!(!s.remove_number(&b.id, "+4930100000").await.unwrap());
            assert!(s.remove_number(&acc, "4930100000").await.unwrap());
            assert!(!s.remove_number(&acc, "4930100000").await.unwrap());
            assert!(!s.remove_number(&acc, "garbage").await.unwrap());
            assert_eq!(s.numbers(&acc).await.unwrap().len(), 1);
        }
    }
}
