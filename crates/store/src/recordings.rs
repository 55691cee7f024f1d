//! Call recordings: metadata in the database, audio in WAV files under the data directory.

use sqlx::any::AnyRow;
use sqlx::Row;

use crate::db::Store;
use crate::error::StoreError;
use crate::model::Recording;

fn recording_from_row(row: &AnyRow) -> Result<Recording, StoreError> {
    Ok(Recording {
        id: row.try_get("id")?,
        account_id: row.try_get("account_id")?,
        call_id: row.try_get("call_id")?,
        path: row.try_get("path")?,
        state: row.try_get("state")?,
        started_at: row.try_get("started_at")?,
        ended_at: row.try_get("ended_at")?,
        duration_ms: row.try_get("duration_ms")?,
        bytes: row.try_get("bytes")?,
    })
}

/// The column list, as a macro so queries stay `&'static str` (sqlx 0.9 refuses dynamic SQL).
macro_rules! columns {
    () => {
        "id, account_id, call_id, path, state, started_at, ended_at, duration_ms, bytes"
    };
}

impl Store {
    /// Records that a recording has started (before the first sample is written, so a crash
    /// leaves a row to repair).
    pub async fn insert_recording(&self, r: &Recording) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO recordings (id, account_id, call_id, path, state, started_at, ended_at, duration_ms, bytes) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&r.id)
        .bind(&r.account_id)
        .bind(&r.call_id)
        .bind(&r.path)
        .bind(&r.state)
        .bind(r.started_at)
        .bind(r.ended_at)
        .bind(r.duration_ms)
        .bind(r.bytes)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Marks a recording finished (`complete`, or `repaired` after a crash).
    pub async fn finish_recording(
        &self,
        id: &str,
        state: &str,
        ended_at: i64,
        duration_ms: i64,
        bytes: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE recordings SET state = $2, ended_at = $3, duration_ms = $4, bytes = $5 WHERE id = $1",
        )
        .bind(id)
        .bind(state)
        .bind(ended_at)
        .bind(duration_ms)
        .bind(bytes)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Recordings of the account, newest first; only those of one call if `call_id` is given.
    pub async fn recordings(
        &self,
        account_id: &str,
        call_id: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Recording>, StoreError> {
        let rows = match call_id {
            Some(call) => {
                sqlx::query(concat!(
                    "SELECT ",
                    columns!(),
                    " FROM recordings WHERE account_id = $1 AND call_id = $2 \
                     ORDER BY started_at DESC LIMIT $3"
                ))
                .bind(account_id)
                .bind(call)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(concat!(
                    "SELECT ",
                    columns!(),
                    " FROM recordings WHERE account_id = $1 \
                     ORDER BY started_at DESC LIMIT $2"
                ))
                .bind(account_id)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter().map(recording_from_row).collect()
    }

    /// One recording of the account (another account's id is `None`).
    pub async fn recording(
        &self,
        account_id: &str,
        id: &str,
    ) -> Result<Option<Recording>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM recordings WHERE account_id = $1 AND id = $2"
        ))
        .bind(account_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(recording_from_row).transpose()
    }

    /// Recordings a crash left unfinished (to repair at start-up).
    pub async fn unfinished_recordings(&self) -> Result<Vec<Recording>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM recordings WHERE state = 'recording' ORDER BY started_at"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(recording_from_row).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, account: &str, call: &str, started: i64) -> Recording {
        Recording {
            id: id.into(),
            account_id: account.into(),
            call_id: call.into(),
            path: format!("/tmp/{id}.wav"),
            state: "recording".into(),
            started_at: started,
            ended_at: None,
            duration_ms: None,
            bytes: None,
        }
    }

    crate::testdb::both_backends! {
        async fn lifecycle_listing_and_isolation() {
            let store = crate::testdb::store().await;
            let a = store.create_account("a", "a.local").await.unwrap();
            let b = store.create_account("b", "b.local").await.unwrap();
            store
                .insert_recording(&rec("r1", &a.id, "c1", 1))
                .await
                .unwrap();
            store
                .insert_recording(&rec("r2", &a.id, "c2", 2))
                .await
                .unwrap();
            store
                .insert_recording(&rec("r3", &b.id, "c3", 3))
                .await
                .unwrap();
            assert_eq!(store.unfinished_recordings().await.unwrap().len(), 3);
            assert!(store
                .finish_recording("r1", "complete", 10, 9, 1000)
                .await
                .unwrap());
            let r1 = store.recording(&a.id, "r1").await.unwrap().unwrap();
            assert_eq!(
                (r1.state.as_str(), r1.duration_ms, r1.bytes),
                ("complete", Some(9), Some(1000))
            );
            assert!(
                store.recording(&b.id, "r1").await.unwrap().is_none(),
                "other account sees it"
            );
            let ids: Vec<String> = store
                .recordings(&a.id, None, 10)
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.id)
                .collect();
            assert_eq!(ids, vec!["r2", "r1"]);
            assert_eq!(
                store.recordings(&a.id, Some("c1"), 10).await.unwrap().len(),
                1
            );
            assert_eq!(store.unfinished_recordings().await.unwrap().len(), 2);
            assert!(!store
                .finish_recording("nope", "complete", 1, 1, 1)
                .await
                .unwrap());
        }
    }
}
