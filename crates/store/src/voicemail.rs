//! Voicemail (a user's mailbox, its greeting and the messages left in it) and flip targets (the
//! numbers a user's call in progress can be moved to).
//!
//! None of these tables is in the routing read cache: they are read once per call (mailbox,
//! forwardings) or by the API, and written without touching the provisioning generation.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::db::Store;
use crate::error::StoreError;

/// A user's mailbox. A user without a row has voicemail off and the default greeting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mailbox {
    pub user_id: String,
    /// Unanswered calls to the user go to voicemail.
    pub enabled: bool,
    /// The custom greeting (8 kHz mono WAV); `None`: the default text-to-speech greeting.
    pub greeting_path: Option<String>,
}

/// A message left in a user's mailbox: a WAV file plus this row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VoicemailMessage {
    pub id: String,
    pub account_id: String,
    /// The mailbox's user.
    pub user_id: String,
    /// The call that left the message.
    pub call_id: String,
    /// The caller's number or extension.
    pub caller: String,
    pub caller_name: Option<String>,
    #[serde(skip)]
    pub path: String,
    /// `recording` (being left now), `complete` or `repaired` (finished after a crash).
    pub state: String,
    /// Unix milliseconds.
    pub created_at: i64,
    pub duration_ms: Option<i64>,
    /// Size of the WAV file.
    pub bytes: Option<i64>,
}

/// A flip target of a user: a number (or extension) a call in progress can be moved to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Forwarding {
    pub user_id: String,
    /// Short id chosen by the user, unique per user (e.g. `mobile`).
    pub flip_id: String,
    pub number: String,
    pub label: Option<String>,
}

fn message_from_row(row: &AnyRow) -> Result<VoicemailMessage, StoreError> {
    Ok(VoicemailMessage {
        id: row.try_get("id")?,
        account_id: row.try_get("account_id")?,
        user_id: row.try_get("user_id")?,
        call_id: row.try_get("call_id")?,
        caller: row.try_get("caller")?,
        caller_name: row.try_get("caller_name")?,
        path: row.try_get("path")?,
        state: row.try_get("state")?,
        created_at: row.try_get("created_at")?,
        duration_ms: row.try_get("duration_ms")?,
        bytes: row.try_get("bytes")?,
    })
}

fn forwarding_from_row(row: &AnyRow) -> Result<Forwarding, StoreError> {
    Ok(Forwarding {
        user_id: row.try_get("user_id")?,
        flip_id: row.try_get("flip_id")?,
        number: row.try_get("number")?,
        label: row.try_get("label")?,
    })
}

/// A write that names a user (or account) that does not exist fails its foreign key: report it
/// as [`StoreError::NotFound`] rather than as a database error.
fn missing_user(e: sqlx::Error, user_id: &str) -> StoreError {
    if let sqlx::Error::Database(db) = &e {
        if db.is_foreign_key_violation() {
            return StoreError::NotFound(format!("user {user_id:?}"));
        }
    }
    StoreError::from(e)
}

/// The column list, as a macro so queries stay `&'static str` (sqlx 0.9 refuses dynamic SQL).
macro_rules! columns {
    () => {
        "id, account_id, user_id, call_id, caller, caller_name, path, state, created_at, \
         duration_ms, bytes"
    };
}

impl Store {
    /// The user's mailbox; `None` if the user has no mailbox row (voicemail off, default
    /// greeting).
    pub async fn mailbox(&self, user_id: &str) -> Result<Option<Mailbox>, StoreError> {
        let row =
            sqlx::query("SELECT user_id, enabled, greeting_path FROM mailboxes WHERE user_id = $1")
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|row| {
            let enabled: i64 = row.try_get("enabled")?;
            Ok(Mailbox {
                user_id: row.try_get("user_id")?,
                enabled: enabled != 0,
                greeting_path: row.try_get("greeting_path")?,
            })
        })
        .transpose()
    }

    /// Turns the user's voicemail on or off (creating the mailbox row; the greeting is kept).
    /// An unknown user is [`StoreError::NotFound`].
    pub async fn set_mailbox(&self, user_id: &str, enabled: bool) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO mailboxes (user_id, enabled, greeting_path) VALUES ($1, $2, NULL) \
             ON CONFLICT (user_id) DO UPDATE SET enabled = excluded.enabled",
        )
        .bind(user_id)
        .bind(i64::from(enabled))
        .execute(&self.pool)
        .await
        .map_err(|e| missing_user(e, user_id))?;
        tracing::info!(user_id, enabled, "voicemail switched");
        Ok(())
    }

    /// Sets (`Some(path)`) or clears (`None`: back to the default greeting) the user's custom
    /// greeting. Without a mailbox row, one is created with voicemail off; `enabled` is never
    /// changed. An unknown user is [`StoreError::NotFound`].
    pub async fn set_greeting(&self, user_id: &str, path: Option<&str>) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO mailboxes (user_id, enabled, greeting_path) VALUES ($1, 0, $2) \
             ON CONFLICT (user_id) DO UPDATE SET greeting_path = excluded.greeting_path",
        )
        .bind(user_id)
        .bind(path)
        .execute(&self.pool)
        .await
        .map_err(|e| missing_user(e, user_id))?;
        tracing::info!(
            user_id,
            custom = path.is_some(),
            "voicemail greeting changed"
        );
        Ok(())
    }

    /// Records that a message is being left (before the first sample is written, so a crash
    /// leaves a row to repair). An unknown user or account is [`StoreError::NotFound`].
    pub async fn insert_voicemail(&self, m: &VoicemailMessage) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO voicemail_messages (id, account_id, user_id, call_id, caller, caller_name, \
             path, state, created_at, duration_ms, bytes) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&m.id)
        .bind(&m.account_id)
        .bind(&m.user_id)
        .bind(&m.call_id)
        .bind(&m.caller)
        .bind(&m.caller_name)
        .bind(&m.path)
        .bind(&m.state)
        .bind(m.created_at)
        .bind(m.duration_ms)
        .bind(m.bytes)
        .execute(&self.pool)
        .await
        .map_err(|e| missing_user(e, &m.user_id))?;
        Ok(())
    }

    /// Marks a message finished (`complete`, or `repaired` after a crash). False if there is no
    /// such message (e.g. deleted meanwhile).
    pub async fn finish_voicemail(
        &self,
        id: &str,
        state: &str,
        duration_ms: i64,
        bytes: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE voicemail_messages SET state = $2, duration_ms = $3, bytes = $4 WHERE id = $1",
        )
        .bind(id)
        .bind(state)
        .bind(duration_ms)
        .bind(bytes)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Messages of the account, newest first; only those of one user (by user id) if
    /// `user_id` is given.
    pub async fn voicemails(
        &self,
        account_id: &str,
        user_id: Option<&str>,
        limit: i64,
    ) -> Result<Vec<VoicemailMessage>, StoreError> {
        let rows = match user_id {
            Some(user) => {
                sqlx::query(concat!(
                    "SELECT ",
                    columns!(),
                    " FROM voicemail_messages WHERE account_id = $1 AND user_id = $2 \
                     ORDER BY created_at DESC, id DESC LIMIT $3"
                ))
                .bind(account_id)
                .bind(user)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(concat!(
                    "SELECT ",
                    columns!(),
                    " FROM voicemail_messages WHERE account_id = $1 \
                     ORDER BY created_at DESC, id DESC LIMIT $2"
                ))
                .bind(account_id)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter().map(message_from_row).collect()
    }

    /// One message of the account (another account's id is `None`).
    pub async fn voicemail(
        &self,
        account_id: &str,
        id: &str,
    ) -> Result<Option<VoicemailMessage>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM voicemail_messages WHERE account_id = $1 AND id = $2"
        ))
        .bind(account_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(message_from_row).transpose()
    }

    /// Messages a crash left unfinished (to repair at start-up), oldest first.
    pub async fn unfinished_voicemails(&self) -> Result<Vec<VoicemailMessage>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM voicemail_messages WHERE state = 'recording' ORDER BY created_at, id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(message_from_row).collect()
    }

    /// Deletes a message of the account and returns it (the caller removes its file); `None`
    /// if there is no such message in this account.
    pub async fn delete_voicemail(
        &self,
        account_id: &str,
        id: &str,
    ) -> Result<Option<VoicemailMessage>, StoreError> {
        let row = sqlx::query(concat!(
            "DELETE FROM voicemail_messages WHERE account_id = $1 AND id = $2 RETURNING ",
            columns!()
        ))
        .bind(account_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let deleted = row.as_ref().map(message_from_row).transpose()?;
        if deleted.is_some() {
            tracing::info!(account_id, id, "voicemail deleted");
        }
        Ok(deleted)
    }

    /// The user's flip targets, ordered by `flip_id`.
    pub async fn forwardings(&self, user_id: &str) -> Result<Vec<Forwarding>, StoreError> {
        let rows = sqlx::query(
            "SELECT user_id, flip_id, number, label FROM user_forwardings WHERE user_id = $1 \
             ORDER BY flip_id",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(forwarding_from_row).collect()
    }

    /// Replaces all of the user's flip targets with `list`, in one transaction (all or
    /// nothing). The entries' `user_id` is ignored: they are stored for `user_id`. A repeated
    /// `flip_id` is [`StoreError::Conflict`], an unknown user [`StoreError::NotFound`].
    pub async fn set_forwardings(
        &self,
        user_id: &str,
        list: &[Forwarding],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM user_forwardings WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        for f in list {
            sqlx::query(
                "INSERT INTO user_forwardings (user_id, flip_id, number, label) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(user_id)
            .bind(&f.flip_id)
            .bind(&f.number)
            .bind(&f.label)
            .execute(&mut *tx)
            .await
            .map_err(|e| match missing_user(e, user_id) {
                StoreError::Conflict(_) => {
                    StoreError::Conflict(format!("flip id {:?} is given twice", f.flip_id))
                }
                other => other,
            })?;
        }
        tx.commit().await?;
        tracing::info!(user_id, count = list.len(), "forwardings replaced");
        Ok(())
    }

    /// One flip target of the user.
    pub async fn forwarding(
        &self,
        user_id: &str,
        flip_id: &str,
    ) -> Result<Option<Forwarding>, StoreError> {
        let row = sqlx::query(
            "SELECT user_id, flip_id, number, label FROM user_forwardings \
             WHERE user_id = $1 AND flip_id = $2",
        )
        .bind(user_id)
        .bind(flip_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(forwarding_from_row).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: &str, account: &str, user: &str, created: i64) -> VoicemailMessage {
        VoicemailMessage {
            id: id.into(),
            account_id: account.into(),
            user_id: user.into(),
            call_id: format!("call-{id}"),
            caller: "+4915799912345".into(),
            caller_name: Some("Bob".into()),
            path: format!("/tmp/{id}.wav"),
            state: "recording".into(),
            created_at: created,
            duration_ms: None,
            bytes: None,
        }
    }

    fn fwd(flip: &str, number: &str, label: Option<&str>) -> Forwarding {
        Forwarding {
            user_id: String::new(),
            flip_id: flip.into(),
            number: number.into(),
            label: label.map(str::to_string),
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
        async fn mailbox_upserts_keep_the_other_field() {
            let (s, _, u, other) = setup().await;
            assert_eq!(s.mailbox(&u).await.unwrap(), None);

            // A greeting without a row creates one with voicemail off.
            s.set_greeting(&u, Some("/data/greetings/a.wav"))
                .await
                .unwrap();
            let m = s.mailbox(&u).await.unwrap().unwrap();
            assert_eq!(
                (m.user_id.as_str(), m.enabled, m.greeting_path.as_deref()),
                (u.as_str(), false, Some("/data/greetings/a.wav"))
            );

            // Switching on keeps the greeting; a new greeting keeps it on.
            s.set_mailbox(&u, true).await.unwrap();
            let m = s.mailbox(&u).await.unwrap().unwrap();
            assert!(m.enabled);
            assert_eq!(m.greeting_path.as_deref(), Some("/data/greetings/a.wav"));
            s.set_greeting(&u, Some("/data/greetings/b.wav"))
                .await
                .unwrap();
            s.set_greeting(&u, None).await.unwrap();
            let m = s.mailbox(&u).await.unwrap().unwrap();
            assert!(m.enabled);
            assert_eq!(m.greeting_path, None);
            s.set_mailbox(&u, false).await.unwrap();
            assert!(!s.mailbox(&u).await.unwrap().unwrap().enabled);

            // set_mailbox creates a row too; other users are untouched.
            s.set_mailbox(&other, true).await.unwrap();
            assert_eq!(
                s.mailbox(&other).await.unwrap(),
                Some(Mailbox {
                    user_id: other.clone(),
                    enabled: true,
                    greeting_path: None
                })
            );
            assert!(!s.mailbox(&u).await.unwrap().unwrap().enabled);

            // Unknown users.
            assert!(matches!(
                s.set_mailbox("no-such-user", true).await,
                Err(StoreError::NotFound(_))
            ));
            assert!(matches!(
                s.set_greeting("no-such-user", Some("/x.wav")).await,
                Err(StoreError::NotFound(_))
            ));
            assert_eq!(s.mailbox("no-such-user").await.unwrap(), None);
        }
    }

    crate::testdb::both_backends! {
        async fn messages_lifecycle_listing_and_isolation() {
            let (s, a, u1, u2) = setup().await;
            let b = s.create_account("beta", "beta.local").await.unwrap();
            let u3 = s.add_user(&b.id, "301", "pw", None).await.unwrap();
            s.insert_voicemail(&msg("m1", &a, &u1, 1)).await.unwrap();
            s.insert_voicemail(&msg("m2", &a, &u2, 2)).await.unwrap();
            s.insert_voicemail(&msg("m3", &a, &u1, 3)).await.unwrap();
            s.insert_voicemail(&msg("m4", &b.id, &u3.id, 4))
                .await
                .unwrap();
            assert!(matches!(
                s.insert_voicemail(&msg("m1", &a, &u1, 5)).await,
                Err(StoreError::Conflict(_))
            ));
            assert!(matches!(
                s.insert_voicemail(&msg("m9", &a, "no-such-user", 5)).await,
                Err(StoreError::NotFound(_))
            ));

            let unfinished: Vec<String> = s
                .unfinished_voicemails()
                .await
                .unwrap()
                .into_iter()
                .map(|m| m.id)
                .collect();
            assert_eq!(unfinished, vec!["m1", "m2", "m3", "m4"]);

            assert!(s
                .finish_voicemail("m1", "complete", 4200, 67244)
                .await
                .unwrap());
            assert!(!s.finish_voicemail("nope", "complete", 1, 1).await.unwrap());
            let m1 = s.voicemail(&a, "m1").await.unwrap().unwrap();
            assert_eq!(
                (m1.state.as_str(), m1.duration_ms, m1.bytes),
                ("complete", Some(4200), Some(67244))
            );
            assert_eq!(m1.caller_name.as_deref(), Some("Bob"));
            assert_eq!(m1, {
                let mut want = msg("m1", &a, &u1, 1);
                want.state = "complete".into();
                want.duration_ms = Some(4200);
                want.bytes = Some(67244);
                want
            });
            assert!(
                s.voicemail(&b.id, "m1").await.unwrap().is_none(),
                "other account sees it"
            );

            let ids = |v: Vec<VoicemailMessage>| v.into_iter().map(|m| m.id).collect::<Vec<_>>();
            assert_eq!(
                ids(s.voicemails(&a, None, 10).await.unwrap()),
                vec!["m3", "m2", "m1"]
            );
            assert_eq!(
                ids(s.voicemails(&a, Some(&u1), 10).await.unwrap()),
                vec!["m3", "m1"]
            );
            assert_eq!(ids(s.voicemails(&a, None, 1).await.unwrap()), vec!["m3"]);
            assert!(s.voicemails(&a, Some(&u3.id), 10).await.unwrap().is_empty());
            assert_eq!(s.unfinished_voicemails().await.unwrap().len(), 3);

            // Delete returns the row, once, and only within the account.
            assert_eq!(s.delete_voicemail(&b.id, "m3").await.unwrap(), None);
            let gone = s.delete_voicemail(&a, "m3").await.unwrap().unwrap();
            assert_eq!(
                (gone.id.as_str(), gone.path.as_str()),
                ("m3", "/tmp/m3.wav")
            );
            assert_eq!(s.delete_voicemail(&a, "m3").await.unwrap(), None);
            assert!(s.voicemail(&a, "m3").await.unwrap().is_none());
            assert_eq!(
                ids(s.voicemails(&a, None, 10).await.unwrap()),
                vec!["m2", "m1"]
            );
        }
    }

    crate::testdb::both_backends! {
        async fn newest_first_with_equal_timestamps_is_stable() {
            let (s, a, u, _) = setup().await;
            s.insert_voicemail(&msg("x1", &a, &u, 7)).await.unwrap();
            s.insert_voicemail(&msg("x2", &a, &u, 7)).await.unwrap();
            let ids: Vec<String> = s
                .voicemails(&a, Some(&u), 10)
                .await
                .unwrap()
                .into_iter()
                .map(|m| m.id)
                .collect();
            assert_eq!(ids, vec!["x2", "x1"]);
        }
    }

    crate::testdb::both_backends! {
        async fn forwardings_are_replaced_as_a_whole() {
            let (s, _, u, other) = setup().await;
            assert!(s.forwardings(&u).await.unwrap().is_empty());
            s.set_forwardings(
                &u,
                &[
                    fwd("mobile", "+4917012345678", Some("Mobile")),
                    fwd("home", "+4930555", None),
                ],
            )
            .await
            .unwrap();
            s.set_forwardings(&other, &[fwd("mobile", "+491111", None)])
                .await
                .unwrap();
            let list = s.forwardings(&u).await.unwrap();
            assert_eq!(
                list,
                vec![
                    Forwarding {
                        user_id: u.clone(),
                        flip_id: "home".into(),
                        number: "+4930555".into(),
                        label: None
                    },
                    Forwarding {
                        user_id: u.clone(),
                        flip_id: "mobile".into(),
                        number: "+4917012345678".into(),
                        label: Some("Mobile".into())
                    },
                ],
                "ordered by flip id, stored for the user"
            );
            assert_eq!(
                s.forwarding(&u, "mobile").await.unwrap().unwrap().number,
                "+4917012345678"
            );
            assert_eq!(s.forwarding(&u, "car").await.unwrap(), None);

            // Replace: the old set is gone.
            s.set_forwardings(&u, &[fwd("car", "0301234", Some("Car"))])
                .await
                .unwrap();
            let flips: Vec<String> = s
                .forwardings(&u)
                .await
                .unwrap()
                .into_iter()
                .map(|f| f.flip_id)
                .collect();
            assert_eq!(flips, vec!["car"]);
            assert_eq!(s.forwarding(&u, "mobile").await.unwrap(), None);

            // A failing replace changes nothing (one transaction).
            assert!(matches!(
                s.set_forwardings(&u, &[fwd("a", "1", None), fwd("a", "2", None)])
                    .await,
                Err(StoreError::Conflict(_))
            ));
            assert_eq!(s.forwardings(&u).await.unwrap().len(), 1);
            assert!(matches!(
                s.set_forwardings("no-such-user", &[fwd("a", "1", None)])
                    .await,
                Err(StoreError::NotFound(_))
            ));

            // An empty list clears; the other user keeps theirs.
            s.set_forwardings(&u, &[]).await.unwrap();
            assert!(s.forwardings(&u).await.unwrap().is_empty());
            assert_eq!(s.forwardings(&other).await.unwrap().len(), 1);
        }
    }

    crate::testdb::both_backends! {
        async fn removing_a_user_or_account_removes_their_rows() {
            let (s, a, u, keep) = setup().await;
            for user in [&u, &keep] {
                s.set_mailbox(user, true).await.unwrap();
                s.set_forwardings(user, &[fwd("mobile", "+491", None)])
                    .await
                    .unwrap();
            }
            s.insert_voicemail(&msg("m1", &a, &u, 1)).await.unwrap();
            s.insert_voicemail(&msg("m2", &a, &keep, 2)).await.unwrap();

            assert!(s.remove_user(&a, "201").await.unwrap());
            assert_eq!(s.mailbox(&u).await.unwrap(), None);
            assert!(s.forwardings(&u).await.unwrap().is_empty());
            assert!(s.voicemail(&a, "m1").await.unwrap().is_none());
            // The other user is untouched.
            assert!(s.mailbox(&keep).await.unwrap().unwrap().enabled);
            assert_eq!(s.forwardings(&keep).await.unwrap().len(), 1);
            assert!(s.voicemail(&a, "m2").await.unwrap().is_some());

            // Accounts have no delete yet: the foreign keys cascade.
            sqlx::query("DELETE FROM accounts WHERE id = $1")
                .bind(&a)
                .execute(&s.pool)
                .await
                .unwrap();
            assert!(s.voicemails(&a, None, 10).await.unwrap().is_empty());
            assert_eq!(s.mailbox(&keep).await.unwrap(), None);
            assert!(s.forwardings(&keep).await.unwrap().is_empty());
        }
    }
}
