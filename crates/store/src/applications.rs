//! Applications (a call_hook, a status hook and a fallback hook per account) and the numbers
//! routed to them. An inbound call to such a number runs the application instead of ringing a
//! user. A number is unique system-wide across user numbers and application numbers.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::db::{new_id, now_secs, Store};
use crate::error::StoreError;
use crate::normalize::{check_webhook_url, number_digits};

/// HTTP method of a hook: the configuration's vocabulary, one enum for both.
pub use hookflash_config::HookMethod;

/// The language an application's hooks speak: the configuration's vocabulary.
pub use hookflash_config::AppLanguage;

/// A webhook an application names: URL, method and optional basic-auth credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hook {
    pub url: String,
    pub method: HookMethod,
    pub username: Option<String>,
    #[serde(skip)]
    pub password: Option<String>,
}

impl Hook {
    pub fn post(url: &str) -> Self {
        Hook {
            url: url.to_string(),
            method: HookMethod::Post,
            username: None,
            password: None,
        }
    }

    fn check(&self) -> Result<(), StoreError> {
        check_webhook_url(&self.url).map_err(|e| StoreError::Invalid(e.to_string()))?;
        if self.password.is_some() && self.username.is_none() {
            return Err(StoreError::Invalid(
                "a hook password needs a username".into(),
            ));
        }
        Ok(())
    }
}

/// An application of an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Application {
    /// UUID.
    pub id: String,
    pub account_id: String,
    pub name: String,
    pub call_hook: Hook,
    pub call_status_hook: Option<Hook>,
    pub fallback: Option<Hook>,
    /// jambonz (the default; what the API creates) or RCML (set from the configuration).
    pub language: AppLanguage,
    /// Unix seconds.
    pub created_at: i64,
}

/// What an application is made of (create and full update).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplicationSpec {
    pub name: String,
    pub call_hook: Hook,
    pub call_status_hook: Option<Hook>,
    pub fallback: Option<Hook>,
}

impl ApplicationSpec {
    fn check(&self) -> Result<(), StoreError> {
        let name = self.name.trim();
        if name.is_empty() || name.chars().count() > 128 {
            return Err(StoreError::Invalid(
                "an application needs a name of 1 to 128 characters".into(),
            ));
        }
        self.call_hook.check()?;
        if let Some(h) = &self.call_status_hook {
            h.check()?;
        }
        if let Some(h) = &self.fallback {
            h.check()?;
        }
        Ok(())
    }
}

/// A number routed to an application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApplicationNumber {
    pub id: String,
    pub account_id: String,
    /// E.164 with a leading `+`.
    pub number: String,
    pub application_id: String,
}

fn hook_from(row: &AnyRow, prefix: &str) -> Result<Option<Hook>, StoreError> {
    let url: Option<String> = row.try_get(format!("{prefix}_url").as_str())?;
    let Some(url) = url else {
        return Ok(None);
    };
    let method: String = row.try_get(format!("{prefix}_method").as_str())?;
    Ok(Some(Hook {
        url,
        method: HookMethod::parse(&method).ok_or_else(|| StoreError::Corrupt(method.clone()))?,
        username: row.try_get(format!("{prefix}_username").as_str())?,
        password: row.try_get(format!("{prefix}_password").as_str())?,
    }))
}

fn application_from_row(row: &AnyRow) -> Result<Application, StoreError> {
    Ok(Application {
        id: row.try_get("id")?,
        account_id: row.try_get("account_id")?,
        name: row.try_get("name")?,
        call_hook: hook_from(row, "call_hook")?
            .ok_or_else(|| StoreError::Corrupt("application without call_hook".into()))?,
        call_status_hook: hook_from(row, "status_hook")?,
        fallback: hook_from(row, "fallback")?,
        language: {
            let l: String = row.try_get("language")?;
            AppLanguage::parse(&l).ok_or(StoreError::Corrupt(l))?
        },
        created_at: row.try_get("created_at")?,
    })
}

fn number_from_row(row: &AnyRow) -> Result<ApplicationNumber, StoreError> {
    Ok(ApplicationNumber {
        id: row.try_get("id")?,
        account_id: row.try_get("account_id")?,
        number: row.try_get("number")?,
        application_id: row.try_get("application_id")?,
    })
}

/// The columns of `applications`, in insert order (a macro: the SQL strings stay static).
macro_rules! columns {
    () => {
        "id, account_id, name, call_hook_url, call_hook_method, call_hook_username, \
         call_hook_password, status_hook_url, status_hook_method, status_hook_username, \
         status_hook_password, fallback_url, fallback_method, fallback_username, \
         fallback_password, created_at, language"
    };
}

/// (url, method, username, password) bind values of an optional hook.
fn parts(h: Option<&Hook>) -> (Option<String>, String, Option<String>, Option<String>) {
    match h {
        Some(h) => (
            Some(h.url.clone()),
            h.method.as_str().to_string(),
            h.username.clone(),
            h.password.clone(),
        ),
        None => (None, "POST".to_string(), None, None),
    }
}

impl Store {
    /// Creates an application. A name the account already uses is a conflict.
    pub async fn create_application(
        &self,
        account_id: &str,
        spec: &ApplicationSpec,
    ) -> Result<Application, StoreError> {
        spec.check()?;
        let id = new_id();
        let created_at = now_secs();
        let (cu, cm, cn, cp) = parts(Some(&spec.call_hook));
        let (su, sm, sn, sp) = parts(spec.call_status_hook.as_ref());
        let (fu, fm, fname, fp) = parts(spec.fallback.as_ref());
        sqlx::query(concat!(
            "INSERT INTO applications (",
            columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
             'jambonz')"
        ))
        .bind(&id)
        .bind(account_id)
        .bind(spec.name.trim())
        .bind(cu)
        .bind(cm)
        .bind(cn)
        .bind(cp)
        .bind(su)
        .bind(sm)
        .bind(sn)
        .bind(sp)
        .bind(fu)
        .bind(fm)
        .bind(fname)
        .bind(fp)
        .bind(created_at)
        .execute(&self.pool)
        .await
        .map_err(|e| match StoreError::from(e) {
            StoreError::Conflict(_) => StoreError::Conflict(format!(
                "an application named {:?} exists",
                spec.name.trim()
            )),
            StoreError::Database(e) if e.to_string().contains("FOREIGN KEY") => {
                StoreError::NotFound("account".into())
            }
            other => other,
        })?;
        tracing::info!(account_id, application_id = %id, name = %spec.name.trim(), "application created");
        self.application(account_id, &id)
            .await?
            .ok_or_else(|| StoreError::NotFound("application".into()))
    }

    /// Replaces an application's name and hooks. False if the account has no such one.
    pub async fn update_application(
        &self,
        account_id: &str,
        id: &str,
        spec: &ApplicationSpec,
    ) -> Result<bool, StoreError> {
        spec.check()?;
        let (cu, cm, cn, cp) = parts(Some(&spec.call_hook));
        let (su, sm, sn, sp) = parts(spec.call_status_hook.as_ref());
        let (fu, fm, fname, fp) = parts(spec.fallback.as_ref());
        let res = sqlx::query(
            "UPDATE applications SET name = $1, call_hook_url = $2, call_hook_method = $3, \
             call_hook_username = $4, call_hook_password = $5, status_hook_url = $6, \
             status_hook_method = $7, status_hook_username = $8, status_hook_password = $9, \
             fallback_url = $10, fallback_method = $11, fallback_username = $12, \
             fallback_password = $13 WHERE account_id = $14 AND id = $15",
        )
        .bind(spec.name.trim())
        .bind(cu)
        .bind(cm)
        .bind(cn)
        .bind(cp)
        .bind(su)
        .bind(sm)
        .bind(sn)
        .bind(sp)
        .bind(fu)
        .bind(fm)
        .bind(fname)
        .bind(fp)
        .bind(account_id)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(|e| match StoreError::from(e) {
            StoreError::Conflict(_) => StoreError::Conflict(format!(
                "an application named {:?} exists",
                spec.name.trim()
            )),
            other => other,
        })?;
        Ok(res.rows_affected() > 0)
    }

    /// Sets the language of an application's hooks. False if the account has no such one.
    pub async fn set_application_language(
        &self,
        account_id: &str,
        id: &str,
        language: AppLanguage,
    ) -> Result<bool, StoreError> {
        let res =
            sqlx::query("UPDATE applications SET language = $1 WHERE account_id = $2 AND id = $3")
                .bind(language.as_str())
                .bind(account_id)
                .bind(id)
                .execute(&self.pool)
                .await?;
        Ok(res.rows_affected() > 0)
    }

    /// One application of the account.
    pub async fn application(
        &self,
        account_id: &str,
        id: &str,
    ) -> Result<Option<Application>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM applications WHERE account_id = $1 AND id = $2"
        ))
        .bind(account_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(application_from_row).transpose()
    }

    /// An application of the account by name.
    pub async fn application_by_name(
        &self,
        account_id: &str,
        name: &str,
    ) -> Result<Option<Application>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM applications WHERE account_id = $1 AND name = $2"
        ))
        .bind(account_id)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(application_from_row).transpose()
    }

    /// The account's applications, by name.
    pub async fn applications(&self, account_id: &str) -> Result<Vec<Application>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM applications WHERE account_id = $1 ORDER BY name"
        ))
        .bind(account_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(application_from_row).collect()
    }

    /// Deletes an application (its numbers go with it). False if it was not there.
    pub async fn delete_application(&self, account_id: &str, id: &str) -> Result<bool, StoreError> {
        let res = sqlx::query("DELETE FROM applications WHERE account_id = $1 AND id = $2")
            .bind(account_id)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(res.rows_affected() > 0)
    }

    /// Routes `number` to an application of the account. A number routed anywhere already
    /// (to a user or an application, in any account) is a conflict.
    pub async fn add_application_number(
        &self,
        account_id: &str,
        number: &str,
        application_id: &str,
    ) -> Result<ApplicationNumber, StoreError> {
        let digits = number_digits(number)
            .ok_or_else(|| StoreError::Invalid(format!("{number:?} is not a phone number")))?;
        if self
            .application(account_id, application_id)
            .await?
            .is_none()
        {
            return Err(StoreError::NotFound("application".into()));
        }
        let n = ApplicationNumber {
            id: new_id(),
            account_id: account_id.to_string(),
            number: format!("+{digits}"),
            application_id: application_id.to_string(),
        };
        let mut tx = self.begin_provisioning().await?;
        let taken: Option<String> = sqlx::query_scalar("SELECT id FROM numbers WHERE digits = $1")
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
            "INSERT INTO application_numbers (id, account_id, number, digits, application_id, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&n.id)
        .bind(&n.account_id)
        .bind(&n.number)
        .bind(&digits)
        .bind(&n.application_id)
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
        tracing::info!(account_id, number = %n.number, application_id, "number routed to an application");
        Ok(n)
    }

    /// The account's numbers routed to applications, by number.
    pub async fn application_numbers(
        &self,
        account_id: &str,
    ) -> Result<Vec<ApplicationNumber>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, account_id, number, application_id FROM application_numbers \
             WHERE account_id = $1 ORDER BY number",
        )
        .bind(account_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(number_from_row).collect()
    }

    /// Removes an application number of the account by its id. False if it was not there.
    pub async fn remove_application_number(
        &self,
        account_id: &str,
        id: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_provisioning().await?;
        let res = sqlx::query("DELETE FROM application_numbers WHERE account_id = $1 AND id = $2")
            .bind(account_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        self.commit_provisioning(tx).await?;
        Ok(res.rows_affected() > 0)
    }

    /// The application a dialled number runs (any account), if it is routed to one.
    pub async fn application_for_number(
        &self,
        number: &str,
    ) -> Result<Option<Application>, StoreError> {
        let Some(digits) = number_digits(number) else {
            return Ok(None);
        };
        let row = sqlx::query(
            "SELECT a.* FROM applications a JOIN application_numbers n \
             ON n.application_id = a.id WHERE n.digits = $1",
        )
        .bind(&digits)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(application_from_row).transpose()
    }

    /// The secret the account's webhooks are signed with; made (random) on first use.
    pub async fn account_webhook_secret(&self, account_id: &str) -> Result<String, StoreError> {
        let existing: Option<Option<String>> =
            sqlx::query_scalar("SELECT webhook_secret FROM accounts WHERE id = $1")
                .bind(account_id)
                .fetch_optional(&self.pool)
                .await?;
        match existing {
            None => Err(StoreError::NotFound("account".into())),
            Some(Some(secret)) => Ok(secret),
            Some(None) => {
                let secret = crate::crypto::random_hex(32);
                // Two first uses at once: the first write wins, both read it back.
                sqlx::query(
                    "UPDATE accounts SET webhook_secret = $1 WHERE id = $2 AND webhook_secret IS NULL",
                )
                .bind(&secret)
                .bind(account_id)
                .execute(&self.pool)
                .await?;
                let stored: Option<String> =
                    sqlx::query_scalar("SELECT webhook_secret FROM accounts WHERE id = $1")
                        .bind(account_id)
                        .fetch_one(&self.pool)
                        .await?;
                stored.ok_or_else(|| StoreError::Corrupt("webhook secret".into()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store_with_account() -> (Store, String) {
        let store = crate::testdb::store().await;
        let account = store.create_account("acme", "acme.local").await.unwrap();
        (store, account.id)
    }

    fn spec(name: &str) -> ApplicationSpec {
        ApplicationSpec {
            name: name.into(),
            call_hook: Hook::post("http://127.0.0.1:9/call"),
            call_status_hook: Some(Hook {
                url: "http://127.0.0.1:9/status".into(),
                method: HookMethod::Get,
                username: Some("u".into()),
                password: Some("p".into()),
            }),
            fallback: None,
        }
    }

    crate::testdb::both_backends! {
        async fn applications_round_trip_and_numbers_route_to_them() {
            let (store, acc) = store_with_account().await;
            let app = store.create_application(&acc, &spec("ivr")).await.unwrap();
            assert_eq!(app.name, "ivr");
            assert_eq!(
                app.call_status_hook.as_ref().unwrap().method,
                HookMethod::Get
            );
            assert_eq!(
                app.call_status_hook.as_ref().unwrap().password.as_deref(),
                Some("p")
            );
            assert!(matches!(
                store.create_application(&acc, &spec("ivr")).await,
                Err(StoreError::Conflict(_))
            ));
            let n = store
                .add_application_number(&acc, "4930999000", &app.id)
                .await
                .unwrap();
            assert_eq!(n.number, "+4930999000");
            let found = store.application_for_number("+4930999000").await.unwrap();
            assert_eq!(found.map(|a| a.id), Some(app.id.clone()));
            assert!(matches!(
                store
                    .add_application_number(&acc, "+4930999000", &app.id)
                    .await,
                Err(StoreError::Conflict(_))
            ));
            assert_eq!(
                store.application_for_number("+4930999001").await.unwrap(),
                None
            );

            let mut changed = spec("ivr2");
            changed.fallback = Some(Hook::post("https://example.com/fb"));
            assert!(store
                .update_application(&acc, &app.id, &changed)
                .await
                .unwrap());
            let got = store.application(&acc, &app.id).await.unwrap().unwrap();
            assert_eq!(got.name, "ivr2");
            assert_eq!(got.fallback.unwrap().url, "https://example.com/fb");
            assert_eq!(store.applications(&acc).await.unwrap().len(), 1);

            // Deleting the application frees its numbers.
            assert!(store.delete_application(&acc, &app.id).await.unwrap());
            assert_eq!(
                store.application_for_number("+4930999000").await.unwrap(),
                None
            );
            assert!(store.application_numbers(&acc).await.unwrap().is_empty());
        }
    }

    crate::testdb::both_backends! {
        async fn bad_specs_are_refused() {
            let (store, acc) = store_with_account().await;
            let mut s = spec("x");
            s.call_hook.url = "ftp://x".into();
            assert!(matches!(
                store.create_application(&acc, &s).await,
                Err(StoreError::Invalid(_))
            ));
            let mut s = spec(" ");
            s.call_hook = Hook::post("http://127.0.0.1/x");
            assert!(matches!(
                store.create_application(&acc, &s).await,
                Err(StoreError::Invalid(_))
            ));
        }
    }

    crate::testdb::both_backends! {
        async fn webhook_secret_is_made_once() {
            let (store, acc) = store_with_account().await;
            let a = store.account_webhook_secret(&acc).await.unwrap();
            let b = store.account_webhook_secret(&acc).await.unwrap();
            assert_eq!(a, b);
            assert!(a.len() >= 32);
            assert!(matches!(
                store.account_webhook_secret("nope").await,
                Err(StoreError::NotFound(_))
            ));
        }
    }

    crate::testdb::both_backends! {
        multi_thread
        async fn a_number_raced_to_a_user_and_an_application_goes_to_one() {
            // Two stores on one database (two processes), each routing the same number at the
            // same time, one to a user and one to an application: never both.
            let db = crate::testdb::TestDb::new().await;
            let (one, two) = (db.open().await, db.open().await);
            let acc = one.create_account("acme", "acme.local").await.unwrap().id;
            one.add_user(&acc, "201", "pw", None).await.unwrap();
            let app = one.create_application(&acc, &spec("ivr")).await.unwrap();
            let mut wins = 0;
            for i in 0..20 {
                let number = format!("+49301234{i:02}");
                let (to_user, to_app) = tokio::join!(
                    tokio::spawn({
                        let (one, acc, number) = (one.clone(), acc.clone(), number.clone());
                        async move { one.add_number(&acc, &number, "201").await }
                    }),
                    tokio::spawn({
                        let (two, acc, number, app) =
                            (two.clone(), acc.clone(), number.clone(), app.id.clone());
                        async move { two.add_application_number(&acc, &number, &app).await }
                    }),
                );
                let ok = [to_user.unwrap().is_ok(), to_app.unwrap().is_ok()];
                assert!(!(ok[0] && ok[1]), "{number} went to both");
                let digits = &number[1..];
                let rows: i64 = sqlx::query_scalar(
                    "SELECT (SELECT COUNT(*) FROM numbers WHERE digits = $1) + \
                     (SELECT COUNT(*) FROM application_numbers WHERE digits = $1)",
                )
                .bind(digits)
                .fetch_one(&one.pool)
                .await
                .unwrap();
                assert_eq!(rows, ok.iter().filter(|o| **o).count() as i64, "{number}");
                wins += rows;
            }
            // PostgreSQL serializes them (the second sees the first's number: a conflict);
            // SQLite may refuse the second as busy instead. Either way most get through.
            assert!(wins >= 10, "{wins} of 20 numbers routed");
        }
    }
}
