//! Call records (history / CDR): one row per call and one per leg.

use sqlx::any::AnyRow;
use sqlx::Row;

use crate::db::{narrow, Store};
use crate::error::StoreError;
use crate::model::{CallRecord, LegRecord};

fn call_from_row(row: &AnyRow) -> Result<CallRecord, StoreError> {
    let status: i64 = row.try_get("sip_status")?;
    Ok(CallRecord {
        id: row.try_get("id")?,
        account_id: row.try_get("account_id")?,
        from: row.try_get("from_uri")?,
        to: row.try_get("to_uri")?,
        direction: row.try_get("direction")?,
        started_at: row.try_get("started_at")?,
        answered_at: row.try_get("answered_at")?,
        ended_at: row.try_get("ended_at")?,
        duration_ms: row.try_get("duration_ms")?,
        end_cause: row.try_get("end_cause")?,
        sip_status: narrow("call_records.sip_status", status)?,
        legs: Vec::new(),
    })
}

fn leg_from_row(row: &AnyRow) -> Result<LegRecord, StoreError> {
    let status: i64 = row.try_get("sip_status")?;
    Ok(LegRecord {
        id: row.try_get("id")?,
        call_id: row.try_get("call_id")?,
        role: row.try_get("role")?,
        direction: row.try_get("direction")?,
        from: row.try_get("from_uri")?,
        to: row.try_get("to_uri")?,
        contact: row.try_get("contact")?,
        started_at: row.try_get("started_at")?,
        answered_at: row.try_get("answered_at")?,
        ended_at: row.try_get("ended_at")?,
        end_cause: row.try_get("end_cause")?,
        sip_status: narrow("call_legs.sip_status", status)?,
    })
}

impl Store {
    /// Writes a finished call and its legs in one transaction. Each leg is stored under the
    /// record's id, whatever its `call_id` says. An existing id gives [`StoreError::Conflict`].
    ///
    /// Returns once the record is committed. Concurrent calls are coalesced into one
    /// transaction by a writer task (group commit); a failure affects only the record that
    /// caused it.
    pub async fn insert_call_record(&self, rec: &CallRecord) -> Result<(), StoreError> {
        self.write_call_record(rec).await
    }

    /// The newest `limit` calls (of one account, or of all when `None`), newest first, each
    /// with its legs in start order.
    pub async fn call_history(
        &self,
        account_id: Option<&str>,
        limit: i64,
    ) -> Result<Vec<CallRecord>, StoreError> {
        let limit = limit.max(0);
        let (call_rows, leg_rows) = match account_id {
            Some(acc) => {
                let calls = sqlx::query(
                    "SELECT id, account_id, from_uri, to_uri, direction, started_at, answered_at, \
                       ended_at, duration_ms, end_cause, sip_status \
                     FROM call_records WHERE account_id = $1 \
                     ORDER BY started_at DESC, id DESC LIMIT $2",
                )
                .bind(acc)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                let legs = sqlx::query(
                    "SELECT l.id, l.call_id, l.role, l.direction, l.from_uri, l.to_uri, l.contact, \
                       l.started_at, l.answered_at, l.ended_at, l.end_cause, l.sip_status \
                     FROM call_legs l JOIN ( \
                       SELECT id FROM call_records WHERE account_id = $1 \
                       ORDER BY started_at DESC, id DESC LIMIT $2) c ON c.id = l.call_id \
                     ORDER BY l.started_at, l.id",
                )
                .bind(acc)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                (calls, legs)
            }
            None => {
                let calls = sqlx::query(
                    "SELECT id, account_id, from_uri, to_uri, direction, started_at, answered_at, \
                       ended_at, duration_ms, end_cause, sip_status \
                     FROM call_records ORDER BY started_at DESC, id DESC LIMIT $1",
                )
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                let legs = sqlx::query(
                    "SELECT l.id, l.call_id, l.role, l.direction, l.from_uri, l.to_uri, l.contact, \
                       l.started_at, l.answered_at, l.ended_at, l.end_cause, l.sip_status \
                     FROM call_legs l JOIN ( \
                       SELECT id FROM call_records ORDER BY started_at DESC, id DESC LIMIT $1) c \
                       ON c.id = l.call_id \
                     ORDER BY l.started_at, l.id",
                )
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                (calls, legs)
            }
        };
        let mut calls = call_rows
            .iter()
            .map(call_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let index: std::collections::HashMap<String, usize> = calls
            .iter()
            .enumerate()
            .map(|(i, c)| (c.id.clone(), i))
            .collect();
        for row in &leg_rows {
            let leg = leg_from_row(row)?;
            if let Some(&i) = index.get(&leg.call_id) {
                calls[i].legs.push(leg);
            }
        }
        Ok(calls)
    }

    /// One call record with its legs.
    pub async fn call_record(&self, id: &str) -> Result<Option<CallRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT id, account_id, from_uri, to_uri, direction, started_at, answered_at, \
               ended_at, duration_ms, end_cause, sip_status FROM call_records WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut call = call_from_row(&row)?;
        let legs = sqlx::query(
            "SELECT id, call_id, role, direction, from_uri, to_uri, contact, started_at, \
               answered_at, ended_at, end_cause, sip_status \
             FROM call_legs WHERE call_id = $1 ORDER BY started_at, id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        call.legs = legs.iter().map(leg_from_row).collect::<Result<_, _>>()?;
        Ok(Some(call))
    }
}

/// Which of one user's calls [`Store::user_calls`] returns: the calls the user placed
/// (`internal`/`outbound` calls from the extension) and received (`internal`/`inbound` calls
/// to it), answered or missed, optionally within a start-time window, one page at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserCallFilter {
    pub account_id: String,
    pub extension: String,
    /// Placed and answered.
    pub outgoing: bool,
    /// Placed, not answered.
    pub missed_outgoing: bool,
    /// Received and answered.
    pub incoming: bool,
    /// Received, not answered.
    pub missed_incoming: bool,
    /// Started at or after (Unix milliseconds).
    pub from_ms: Option<i64>,
    /// Started before (Unix milliseconds).
    pub to_ms: Option<i64>,
    pub limit: i64,
    pub offset: i64,
}

impl UserCallFilter {
    /// Every call of the user, newest first, `limit` from `offset`.
    pub fn all(account_id: &str, extension: &str, limit: i64, offset: i64) -> Self {
        UserCallFilter {
            account_id: account_id.to_string(),
            extension: extension.to_string(),
            outgoing: true,
            missed_outgoing: true,
            incoming: true,
            missed_incoming: true,
            from_ms: None,
            to_ms: None,
            limit,
            offset,
        }
    }
}

/// The `FROM ... WHERE` of a user's calls ($1 account, $2 extension, $3-$6 the four kinds,
/// $7/$8 the start window). A macro so the queries stay `&'static str`.
macro_rules! user_calls_where {
    () => {
        " FROM call_records WHERE account_id = $1 AND ( \
           ($3 AND from_uri = $2 AND direction IN ('internal', 'outbound') AND answered_at IS NOT NULL) \
           OR ($4 AND from_uri = $2 AND direction IN ('internal', 'outbound') AND answered_at IS NULL) \
           OR ($5 AND to_uri = $2 AND direction IN ('internal', 'inbound') AND answered_at IS NOT NULL) \
           OR ($6 AND to_uri = $2 AND direction IN ('internal', 'inbound') AND answered_at IS NULL)) \
           AND ($7 IS NULL OR started_at >= $7) AND ($8 IS NULL OR started_at < $8)"
    };
}

impl Store {
    /// One page of a user's call records (newest first; without their legs) and how many
    /// records match the filter in total.
    pub async fn user_calls(
        &self,
        f: &UserCallFilter,
    ) -> Result<(Vec<CallRecord>, i64), StoreError> {
        let total: i64 = sqlx::query(concat!("SELECT COUNT(*) AS n", user_calls_where!()))
            .bind(&f.account_id)
            .bind(&f.extension)
            .bind(f.outgoing)
            .bind(f.missed_outgoing)
            .bind(f.incoming)
            .bind(f.missed_incoming)
            .bind(f.from_ms)
            .bind(f.to_ms)
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?;
        let rows = sqlx::query(concat!(
            "SELECT id, account_id, from_uri, to_uri, direction, started_at, answered_at, \
               ended_at, duration_ms, end_cause, sip_status",
            user_calls_where!(),
            " ORDER BY started_at DESC, id DESC LIMIT $9 OFFSET $10"
        ))
        .bind(&f.account_id)
        .bind(&f.extension)
        .bind(f.outgoing)
        .bind(f.missed_outgoing)
        .bind(f.incoming)
        .bind(f.missed_incoming)
        .bind(f.from_ms)
        .bind(f.to_ms)
        .bind(f.limit.max(0))
        .bind(f.offset.max(0))
        .fetch_all(&self.pool)
        .await?;
        let calls = rows
            .iter()
            .map(call_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok((calls, total))
    }

    /// True when the finished call `call_id` of the account is in the user's history (the
    /// user placed or received it).
    pub async fn user_was_on_call(
        &self,
        account_id: &str,
        extension: &str,
        call_id: &str,
    ) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM call_records WHERE id = $3 AND account_id = $1 AND ( \
               (from_uri = $2 AND direction IN ('internal', 'outbound')) \
               OR (to_uri = $2 AND direction IN ('internal', 'inbound')))",
        )
        .bind(account_id)
        .bind(extension)
        .bind(call_id)
        .fetch_one(&self.pool)
        .await?
        .try_get("n")?;
        Ok(n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, account: Option<&str>, started_at: i64, answered: bool) -> CallRecord {
        let answered_at = answered.then_some(started_at + 2_000);
        let ended_at = started_at + 10_000;
        let leg = |n: &str, role: &str, dir: &str, offset: i64| LegRecord {
            id: format!("{id}-{n}"),
            call_id: "ignored".into(),
            role: role.into(),
            direction: dir.into(),
            from: "sip:201@acme.local".into(),
            to: "sip:202@acme.local".into(),
            contact: Some("sip:202@127.0.0.1:5072".into()),
            started_at: started_at + offset,
            answered_at,
            ended_at,
            end_cause: "normal".into(),
            sip_status: if answered { 200 } else { 486 },
        };
        CallRecord {
            id: id.into(),
            account_id: account.map(str::to_string),
            from: "sip:201@acme.local".into(),
            to: "sip:202@acme.local".into(),
            direction: "internal".into(),
            started_at,
            answered_at,
            ended_at,
            duration_ms: if answered { 8_000 } else { 0 },
            end_cause: if answered { "caller_hangup" } else { "busy" }.into(),
            sip_status: if answered { 200 } else { 486 },
            legs: vec![leg("b", "callee", "out", 50), leg("a", "caller", "in", 0)],
        }
    }

    fn live(id: &str, started_at: i64) -> crate::LiveCall {
        crate::LiveCall {
            id: id.into(),
            account_id: Some("acc1".into()),
            from: "201".into(),
            to: "202".into(),
            direction: "internal".into(),
            started_at,
        }
    }

    crate::testdb::both_backends! {
        async fn calls_cut_by_a_crash_get_their_record_at_the_next_start() {
            let s = crate::testdb::store().await;
            // x: answered, then the server died; y: never answered; z: ended normally.
            s.call_started(live("x", 1_000));
            s.call_answered("x", 3_000);
            s.call_started(live("y", 2_000));
            s.call_started(live("z", 2_500));
            s.heartbeat(9_000).await.unwrap();
            // Queued in order: once z's record is committed, the notes before it are too.
            s.insert_call_record(&record("z", Some("acc1"), 2_500, true))
                .await
                .unwrap();
            assert_eq!(s.recover_live_calls().await.unwrap(), 2);
            let x = s.call_record("x").await.unwrap().unwrap();
            assert_eq!(x.end_cause, "crash");
            assert_eq!(
                (x.answered_at, x.ended_at, x.duration_ms),
                (Some(3_000), 9_000, 6_000)
            );
            let y = s.call_record("y").await.unwrap().unwrap();
            assert_eq!((y.answered_at, y.ended_at, y.duration_ms), (None, 9_000, 0));
            assert_eq!(y.sip_status, 500);
            // z kept its own record; nothing is recovered twice.
            assert_eq!(
                s.call_record("z").await.unwrap().unwrap().end_cause,
                "caller_hangup"
            );
            assert_eq!(s.recover_live_calls().await.unwrap(), 0);
        }
    }

    crate::testdb::both_backends! {
        async fn a_node_recovers_only_its_own_live_calls_and_records_carry_the_node() {
            let s = crate::testdb::store().await;
            assert!(s.set_node_id("n1"));
            assert!(!s.set_node_id("n2"), "the node is named once");
            s.call_started(live("mine", 1_000));
            // Another node's call in progress, in the shared database.
            sqlx::query(
                "INSERT INTO live_calls (id, account_id, from_uri, to_uri, direction, \
                   started_at, node_id) VALUES ('theirs', 'acc1', '201', '202', 'internal', \
                   1000, 'n2')",
            )
            .execute(&s.pool)
            .await
            .unwrap();
            s.insert_call_record(&record("done", Some("acc1"), 2_500, true))
                .await
                .unwrap();
            s.heartbeat(9_000).await.unwrap();
            assert_eq!(s.recover_live_calls().await.unwrap(), 1);
            assert_eq!(
                s.call_record("mine").await.unwrap().unwrap().end_cause,
                "crash"
            );
            assert!(s.call_record("theirs").await.unwrap().is_none());
            let left: Vec<(String, Option<String>)> =
                sqlx::query_as("SELECT id, node_id FROM live_calls")
                    .fetch_all(&s.pool)
                    .await
                    .unwrap();
            assert_eq!(left, vec![("theirs".to_string(), Some("n2".to_string()))]);
            let nodes: Vec<(String, Option<String>)> =
                sqlx::query_as("SELECT id, node_id FROM call_records ORDER BY id")
                    .fetch_all(&s.pool)
                    .await
                    .unwrap();
            assert_eq!(
                nodes,
                vec![
                    ("done".to_string(), Some("n1".to_string())),
                    ("mine".to_string(), Some("n1".to_string()))
                ]
            );
        }
    }

    crate::testdb::both_backends! {
        async fn records_round_trip_with_legs_newest_first() {
            let s = crate::testdb::store().await;
            s.insert_call_record(&record("c1", Some("acc1"), 1_000, true))
                .await
                .unwrap();
            s.insert_call_record(&record("c2", Some("acc1"), 3_000, false))
                .await
                .unwrap();
            s.insert_call_record(&record("c3", Some("acc2"), 2_000, true))
                .await
                .unwrap();
            s.insert_call_record(&record("c4", None, 4_000, true))
                .await
                .unwrap();

            let all = s.call_history(None, 10).await.unwrap();
            let ids: Vec<&str> = all.iter().map(|c| c.id.as_str()).collect();
            assert_eq!(ids, vec!["c4", "c2", "c3", "c1"]);

            let acc1 = s.call_history(Some("acc1"), 10).await.unwrap();
            assert_eq!(acc1.len(), 2);
            let c2 = &acc1[0];
            assert_eq!(c2.id, "c2");
            assert_eq!(
                (c2.answered_at, c2.duration_ms, c2.sip_status),
                (None, 0, 486)
            );
            // Legs come back under the record's id, ordered by start.
            let roles: Vec<&str> = c2.legs.iter().map(|l| l.role.as_str()).collect();
            assert_eq!(roles, vec!["caller", "callee"]);
            assert!(c2.legs.iter().all(|l| l.call_id == "c2"));

            let mut expected = record("c1", Some("acc1"), 1_000, true);
            expected.legs.reverse();
            for l in &mut expected.legs {
                l.call_id = "c1".into();
            }
            assert_eq!(acc1[1], expected);
            assert_eq!(s.call_record("c1").await.unwrap(), Some(expected));
            assert_eq!(s.call_record("nope").await.unwrap(), None);
        }
    }

    crate::testdb::both_backends! {
        async fn limit_applies_to_calls_not_legs() {
            let s = crate::testdb::store().await;
            for i in 0..5 {
                s.insert_call_record(&record(&format!("c{i}"), Some("a"), i * 1_000, true))
                    .await
                    .unwrap();
            }
            let h = s.call_history(Some("a"), 2).await.unwrap();
            assert_eq!(
                h.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
                vec!["c4", "c3"]
            );
            assert!(h.iter().all(|c| c.legs.len() == 2));
            assert!(s.call_history(None, 0).await.unwrap().is_empty());
        }
    }

    crate::testdb::both_backends! {
        async fn a_failing_leg_rolls_back_the_whole_record() {
            let s = crate::testdb::store().await;
            s.insert_call_record(&record("c1", None, 1_000, true))
                .await
                .unwrap();
            // Same leg ids as c1: the leg insert fails, the call row must not remain.
            let mut dup = record("c1", None, 5_000, true);
            dup.id = "c9".into();
            let err = s.insert_call_record(&dup).await.unwrap_err();
            assert!(matches!(err, StoreError::Conflict(_)), "{err}");
            assert_eq!(s.call_record("c9").await.unwrap(), None);
            assert_eq!(s.call_history(None, 10).await.unwrap().len(), 1);
        }
    }

    crate::testdb::both_backends! {
        async fn a_users_calls_are_the_ones_they_placed_or_received() {
            let s = crate::testdb::store().await;
            let rec = |id: &str, from: &str, to: &str, dir: &str, at: i64, answered: bool| {
                let mut r = record(id, Some("a"), at, answered);
                r.from = from.into();
                r.to = to.into();
                r.direction = dir.into();
                for (i, l) in r.legs.iter_mut().enumerate() {
                    l.id = format!("{id}-{i}");
                }
                r
            };
            for r in [
                rec("out1", "201", "202", "internal", 1_000, true),
                rec("in1", "202", "201", "internal", 2_000, false),
                rec("trunk_in", "+4915799912345", "201", "inbound", 3_000, true),
                rec(
                    "trunk_out",
                    "201",
                    "+4915799912345",
                    "outbound",
                    4_000,
                    false,
                ),
                // A trunk caller whose number looks like the extension is not the user.
                rec("spoof", "201", "202", "inbound", 5_000, true),
                rec("other", "103", "202", "internal", 6_000, true),
            ] {
                s.insert_call_record(&r).await.unwrap();
            }
            let mut other_account = rec("acc_b", "201", "202", "internal", 7_000, true);
            other_account.account_id = Some("b".into());
            s.insert_call_record(&other_account).await.unwrap();

            let ids = |v: &[CallRecord]| v.iter().map(|c| c.id.clone()).collect::<Vec<_>>();
            let (page, total) = s
                .user_calls(&UserCallFilter::all("a", "201", 10, 0))
                .await
                .unwrap();
            assert_eq!(total, 4);
            assert_eq!(ids(&page), vec!["trunk_out", "trunk_in", "in1", "out1"]);
            let (page, total) = s
                .user_calls(&UserCallFilter::all("a", "201", 2, 1))
                .await
                .unwrap();
            assert_eq!(
                (ids(&page), total),
                (vec!["trunk_in".to_string(), "in1".into()], 4)
            );
            let mut f = UserCallFilter::all("a", "201", 10, 0);
            f.outgoing = false;
            f.missed_outgoing = false;
            f.missed_incoming = false;
            assert_eq!(ids(&s.user_calls(&f).await.unwrap().0), vec!["trunk_in"]);
            let mut f = UserCallFilter::all("a", "201", 10, 0);
            f.from_ms = Some(2_000);
            f.to_ms = Some(4_000);
            assert_eq!(
                ids(&s.user_calls(&f).await.unwrap().0),
                vec!["trunk_in", "in1"]
            );
            assert!(s.user_was_on_call("a", "201", "out1").await.unwrap());
            assert!(s.user_was_on_call("a", "202", "out1").await.unwrap());
            assert!(!s.user_was_on_call("a", "201", "spoof").await.unwrap());
            assert!(!s.user_was_on_call("b", "201", "out1").await.unwrap());
            assert!(!s.user_was_on_call("a", "201", "nope").await.unwrap());
        }
    }
}
