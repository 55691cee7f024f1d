//! Cluster liveness: which nodes are alive, and closing the calls of one that died.
//!
//! Every node of a cluster sharing one database writes its row in `nodes` every
//! `[cluster] heartbeat_secs` ([`Store::node_heartbeat`]). Each node also looks for nodes
//! silent for longer than `node_dead_after_secs` ([`Store::reap_dead_nodes`]; only among the
//! nodes it watched stay silent through its own ticks, so a stall of its own or a clock step
//! never makes live nodes look dead: `engine/src/liveness.rs`): for each one it
//! finds, it sets the row's `dead_since` with a conditional UPDATE (`WHERE dead_since IS NULL
//! AND last_seen = <what it read>`), and only if that UPDATE changed the row — so exactly one
//! survivor, however many look at once (PostgreSQL re-checks the condition after the winner's
//! commit; SQLite has one writer) — it writes, in the same transaction, a call record for every
//! call still marked live on that node: ended at the node's last heartbeat (never before the
//! call's start or answer), end cause `node_failure`, SIP status 500, and removes the live rows.
//! A record that already exists (written just before the node died) wins.
//!
//! A node that starts again clears its `dead_since` with its first heartbeat and recovers
//! what is still marked live for it (`Store::recover_live_calls`, cause `crash`).

use sqlx::Row;

use crate::db::Store;
use crate::error::StoreError;

/// The end cause of a call whose node died (`EndCause::NodeFailure` in the engine).
pub const NODE_FAILURE_CAUSE: &str = "node_failure";

/// A node a survivor declared dead, and what it closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReapedNode {
    pub node_id: String,
    /// The node's last heartbeat (unix ms).
    pub last_seen: i64,
    /// Calls of the node that got their record (cause `node_failure`).
    pub calls: usize,
}

/// A node's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRow {
    pub node_id: String,
    pub started_at: i64,
    pub last_seen: i64,
    pub dead_since: Option<i64>,
}

impl Store {
    /// This server's node id: written on each live call's row, so only this node's calls are
    /// recovered at its start and a survivor closes exactly the calls of a dead node. Set once
    /// (at start, before the first call); a second call is ignored with a warning.
    /// Live calls and call records carry it. False if it was set already.
    pub fn set_node_id(&self, node_id: &str) -> bool {
        let first = self.node.set(node_id.to_string()).is_ok();
        if !first {
            tracing::warn!(node_id, "store node id already set; kept the first");
        }
        first
    }

    /// The node id set with [`Store::set_node_id`].
    pub fn node_id(&self) -> Option<&str> {
        self.node.get().map(String::as_str)
    }

    /// `node` is alive at `at_ms`. Its first heartbeat (no row yet, or the row declared dead)
    /// also sets `started_at` and clears `dead_since`.
    pub async fn node_heartbeat(&self, node: &str, at_ms: i64) -> Result<(), StoreError> {
        let was_dead: Option<Option<i64>> =
            sqlx::query_scalar("SELECT dead_since FROM nodes WHERE node_id = $1")
                .bind(node)
                .fetch_optional(&self.pool)
                .await?;
        if let Some(Some(since)) = was_dead {
            tracing::warn!(
                node,
                dead_since = since,
                "this node had been declared dead by another node; alive again"
            );
        }
        sqlx::query(
            "INSERT INTO nodes (node_id, started_at, last_seen, dead_since) \
             VALUES ($1, $2, $2, NULL) \
             ON CONFLICT (node_id) DO UPDATE SET last_seen = excluded.last_seen, \
               dead_since = NULL, \
               started_at = CASE WHEN nodes.dead_since IS NULL THEN nodes.started_at \
                                 ELSE excluded.started_at END",
        )
        .bind(node)
        .bind(at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every node's row, by id.
    pub async fn nodes(&self) -> Result<Vec<NodeRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT node_id, started_at, last_seen, dead_since FROM nodes ORDER BY node_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(NodeRow {
                    node_id: r.try_get("node_id")?,
                    started_at: r.try_get("started_at")?,
                    last_seen: r.try_get("last_seen")?,
                    dead_since: r.try_get("dead_since")?,
                })
            })
            .collect()
    }

    /// Looks for nodes other than `me`, among `watched_silent` (the nodes the caller itself
    /// watched stay silent: `engine/src/liveness.rs`), silent since before
    /// `now_ms - dead_after_ms`, and closes the calls of each one this call wins (module
    /// docs). Returns the nodes it declared dead.
    pub async fn reap_dead_nodes(
        &self,
        me: &str,
        now_ms: i64,
        dead_after_ms: i64,
        watched_silent: &[String],
    ) -> Result<Vec<ReapedNode>, StoreError> {
        if watched_silent.is_empty() {
            return Ok(Vec::new());
        }
        let cutoff = now_ms - dead_after_ms;
        let silent = sqlx::query(
            "SELECT node_id, last_seen FROM nodes \
             WHERE node_id <> $1 AND dead_since IS NULL AND last_seen < $2",
        )
        .bind(me)
        .bind(cutoff)
        .fetch_all(&self.pool)
        .await?;
        let mut reaped = Vec::new();
        for row in &silent {
            let node_id: String = row.try_get("node_id")?;
            if !watched_silent.contains(&node_id) {
                continue;
            }
            let last_seen: i64 = row.try_get("last_seen")?;
            if let Some(calls) = self.reap_node(&node_id, last_seen, now_ms).await? {
                tracing::warn!(node = %node_id, last_seen, calls,
                    "node silent too long: declared dead, its live calls closed (node_failure)");
                reaped.push(ReapedNode {
                    node_id,
                    last_seen,
                    calls,
                });
            }
        }
        Ok(reaped)
    }

    /// One dead node, in one transaction: None if another survivor (or the node itself,
    /// beating again) got there first.
    async fn reap_node(
        &self,
        node_id: &str,
        last_seen: i64,
        now_ms: i64,
    ) -> Result<Option<usize>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let won = sqlx::query(
            "UPDATE nodes SET dead_since = $1 \
             WHERE node_id = $2 AND dead_since IS NULL AND last_seen = $3",
        )
        .bind(now_ms)
        .bind(node_id)
        .bind(last_seen)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !won {
            tx.rollback().await?;
            return Ok(None);
        }
        let rows = sqlx::query(
            "SELECT id, account_id, from_uri, to_uri, direction, started_at, answered_at \
             FROM live_calls WHERE node_id = $1",
        )
        .bind(node_id)
        .fetch_all(&mut *tx)
        .await?;
        let mut n = 0;
        for row in &rows {
            let id: String = row.try_get("id")?;
            let exists: Option<String> =
                sqlx::query_scalar("SELECT id FROM call_records WHERE id = $1")
                    .bind(&id)
                    .fetch_optional(&mut *tx)
                    .await?;
            if exists.is_some() {
                sqlx::query("DELETE FROM live_calls WHERE id = $1")
                    .bind(&id)
                    .execute(&mut *tx)
                    .await?;
                continue;
            }
            let rec = crate::db::cut_call_record(row, last_seen, NODE_FAILURE_CAUSE)?;
            // Removes the live row too.
            crate::record_writer::insert_rows_pub(&mut tx, &rec, Some(node_id)).await?;
            n += 1;
        }
        tx.commit().await?;
        Ok(Some(n))
    }
}

#[cfg(test)]
mod tests {
    use crate::LiveCall;

    fn live(id: &str, started_at: i64) -> LiveCall {
        LiveCall {
            id: id.into(),
            account_id: None,
            from: "201".into(),
            to: "202".into(),
            direction: "internal".into(),
            started_at,
        }
    }

    /// Waits until the writer has put the live rows in (it is fire and forget).
    async fn live_rows(s: &crate::Store, want: i64) {
        for _ in 0..200 {
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM live_calls")
                .fetch_one(&s.pool)
                .await
                .unwrap();
            if n == want {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("live_calls never had {want} rows");
    }

    crate::testdb::both_backends! {
        async fn a_dead_nodes_calls_are_closed_once_and_only_its_own() {
            // Two stores on one database play two nodes.
            let s = crate::testdb::store().await;
            let a = crate::Store::with_pool(s.pool.clone(), s.backend);
            let b = crate::Store::with_pool(s.pool.clone(), s.backend);
            a.set_node_id("a");
            b.set_node_id("b");
            a.node_heartbeat("a", 1_000).await.unwrap();
            b.node_heartbeat("b", 1_000).await.unwrap();
            a.call_started(live("ca1", 1_100));
            a.call_started(live("ca2", 1_200));
            a.call_answered("ca2", 1_300);
            b.call_started(live("cb1", 1_100));
            live_rows(&a, 3).await;
            // b keeps beating, a is silent: not yet dead at 5_000 with 10 s.
            b.node_heartbeat("b", 5_000).await.unwrap();
            let a_watched = ["a".to_string()];
            assert!(b.reap_dead_nodes("b", 5_000, 10_000, &a_watched).await.unwrap().is_empty());
            // Old enough, but not among the nodes the caller watched stay silent: kept.
            assert!(b.reap_dead_nodes("b", 20_000, 10_000, &[]).await.unwrap().is_empty());
            assert!(b
                .reap_dead_nodes("b", 20_000, 10_000, &["z".to_string()])
                .await
                .unwrap()
                .is_empty());
            // Dead at 20_000; b reaps a's two calls, a third look (or c) finds nothing.
            b.node_heartbeat("b", 20_000).await.unwrap();
            let reaped = b.reap_dead_nodes("b", 20_000, 10_000, &a_watched).await.unwrap();
            assert_eq!(reaped.len(), 1);
            assert_eq!((reaped[0].node_id.as_str(), reaped[0].calls, reaped[0].last_seen), ("a", 2, 1_000));
            assert!(b.reap_dead_nodes("b", 21_000, 10_000, &a_watched).await.unwrap().is_empty());
            assert!(b.reap_dead_nodes("c", 21_000, 10_000, &a_watched).await.unwrap().is_empty());
            let r1 = b.call_record("ca1").await.unwrap().unwrap();
            assert_eq!((r1.end_cause.as_str(), r1.sip_status, r1.ended_at), ("node_failure", 500, 1_100));
            let r2 = b.call_record("ca2").await.unwrap().unwrap();
            assert_eq!((r2.answered_at, r2.ended_at, r2.duration_ms), (Some(1_300), 1_300, 0));
            // b's own call is untouched.
            assert!(b.call_record("cb1").await.unwrap().is_none());
            live_rows(&b, 1).await;
            let rows = b.nodes().await.unwrap();
            assert_eq!(rows[0].dead_since, Some(20_000));
            // a comes back: alive, a new start, nothing left to recover.
            a.node_heartbeat("a", 30_000).await.unwrap();
            let rows = b.nodes().await.unwrap();
            assert_eq!((rows[0].dead_since, rows[0].started_at), (None, 30_000));
            assert_eq!(a.recover_live_calls().await.unwrap(), 0);
            live_rows(&b, 1).await;
            // b's own recovery at its next start takes its own call only.
            assert_eq!(b.recover_live_calls().await.unwrap(), 1);
            assert_eq!(b.call_record("cb1").await.unwrap().unwrap().end_cause, "crash");
        }
    }

    crate::testdb::both_backends! {
        async fn survivors_looking_at_once_close_a_dead_nodes_calls_once() {
            let s = crate::testdb::store().await;
            let dead = crate::Store::with_pool(s.pool.clone(), s.backend);
            dead.set_node_id("x");
            dead.node_heartbeat("x", 1_000).await.unwrap();
            for i in 0..5 {
                dead.call_started(live(&format!("cx{i}"), 1_000 + i));
            }
            live_rows(&dead, 5).await;
            let st = |_| crate::Store::with_pool(s.pool.clone(), s.backend);
            let (a, b, c) = (st(0), st(1), st(2));
            let x_watched = ["x".to_string()];
            let (ra, rb, rc) = tokio::join!(
                a.reap_dead_nodes("s0", 60_000, 10_000, &x_watched),
                b.reap_dead_nodes("s1", 60_000, 10_000, &x_watched),
                c.reap_dead_nodes("s2", 60_000, 10_000, &x_watched),
            );
            let outcomes = [ra.unwrap(), rb.unwrap(), rc.unwrap()];
            let won: Vec<usize> = outcomes.iter().flatten().map(|r| r.calls).collect();
            assert_eq!(won, vec![5], "{outcomes:?}");
            let n: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM call_records WHERE end_cause = 'node_failure'",
            )
            .fetch_one(&s.pool)
            .await
            .unwrap();
            assert_eq!(n, 5);
            live_rows(&s, 0).await;
        }
    }
}
