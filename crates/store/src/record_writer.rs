//! Group commit of call records.
//!
//! Every finished call writes its record (one call row, one row per leg). Each write used to be
//! its own transaction, i.e. its own commit and WAL append, on SQLite's single writer. Now the
//! callers of [`Store::insert_call_record`](crate::Store::insert_call_record) hand their record
//! to one writer task and wait; the writer takes everything queued (up to [`MAX_BATCH`]),
//! writes it in one transaction, and answers each caller only after that transaction has been
//! committed. Nothing waits for company: a lone record is written at once, and records that
//! arrive while a batch is being written form the next batch.
//!
//! If anything in a batch fails (one record's id already exists, the commit fails), the batch
//! is rolled back and each record is written again in its own transaction, so every caller gets
//! the outcome of its own record — a duplicate id fails only that record.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use sqlx::AnyConnection;
use sqlx::AnyPool;
use tokio::sync::{mpsc, oneshot};

use crate::error::StoreError;
use crate::model::CallRecord;

/// Records per transaction at most.
pub(crate) const MAX_BATCH: usize = 128;

/// Records queued for the writer before callers wait to enqueue.
const QUEUE: usize = 4_096;

/// What the writer writes, in the order queued: a call's start (and answer) into
/// `live_calls`, then its record (which removes that row).
enum Job {
    Record {
        rec: CallRecord,
        done: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Fire and forget: a call started (its row in `live_calls`).
    Live(LiveCall),
    /// Fire and forget: a live call was answered at this time (unix ms).
    Answered { id: String, at: i64 },
}

/// The node id rows are written with, set once at start (shared by the store's clones).
pub(crate) type NodeId = Arc<std::sync::OnceLock<String>>;

/// A call in progress, as the crash recovery needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveCall {
    pub id: String,
    pub account_id: Option<String>,
    pub from: String,
    pub to: String,
    pub direction: String,
    /// Unix milliseconds.
    pub started_at: i64,
}

/// The handle to the writer task. The task ends when every handle is gone (after writing what
/// was queued).
#[derive(Clone, Debug)]
pub(crate) struct RecordWriter {
    queue: mpsc::Sender<Job>,
    /// The node this process is ([`crate::Store::set_node`]), written with each row.
    node: NodeId,
    #[cfg_attr(not(test), allow(dead_code))] // read by the tests
    pub(crate) stats: Arc<WriterStats>,
}

/// What the writer did so far.
#[derive(Debug, Default)]
pub(crate) struct WriterStats {
    /// Batches taken from the queue (each one transaction, unless it fell back).
    pub(crate) batches: AtomicU64,
    /// Records taken from the queue.
    pub(crate) records: AtomicU64,
    /// Batches that failed and were written again one record per transaction.
    pub(crate) fallbacks: AtomicU64,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (kind, id) = match self {
            Job::Record { rec, .. } => ("record", &rec.id),
            Job::Live(l) => ("live", &l.id),
            Job::Answered { id, .. } => ("answered", id),
        };
        f.debug_struct("Job")
            .field("kind", &kind)
            .field("call_id", id)
            .finish()
    }
}

impl RecordWriter {
    /// Starts the writer task on the current tokio runtime; `None` outside of one (then
    /// records are written directly).
    pub(crate) fn spawn(pool: AnyPool, node: NodeId) -> Option<RecordWriter> {
        let handle = tokio::runtime::Handle::try_current().ok()?;
        let (queue, rx) = mpsc::channel(QUEUE);
        let stats = Arc::new(WriterStats::default());
        handle.spawn(run(pool, stats.clone(), rx, node.clone()));
        Some(RecordWriter { queue, node, stats })
    }

    /// Queues the record and waits until it is committed (or failed).
    pub(crate) async fn write(&self, pool: &AnyPool, rec: &CallRecord) -> Result<(), StoreError> {
        let (done, outcome) = oneshot::channel();
        let job = Job::Record {
            rec: rec.clone(),
            done,
        };
        if let Err(mpsc::error::SendError(_)) = self.queue.send(job).await {
            // The writer task is gone (its runtime is shutting down): write it ourselves.
            tracing::debug!(call_id = %rec.id, "call-record writer gone; writing directly");
            return insert_one(pool, rec, self.node.get().map(String::as_str)).await;
        }
        outcome.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Queues a live call's row (or its answer time) without waiting. A full queue drops it
    /// (logged): the call then only loses its crash record.
    pub(crate) fn note(&self, job_live: Option<LiveCall>, answered: Option<(String, i64)>) {
        let job = match (job_live, answered) {
            (Some(l), _) => Job::Live(l),
            (None, Some((id, at))) => Job::Answered { id, at },
            (None, None) => return,
        };
        if let Err(e) = self.queue.try_send(job) {
            tracing::warn!(error = %e, "call-record queue full; a live-call note was dropped");
        }
    }
}

async fn run(pool: AnyPool, stats: Arc<WriterStats>, mut rx: mpsc::Receiver<Job>, node: NodeId) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let node = node.get().map(String::as_str);
        write_batch(&pool, &stats, &mut batch, node).await;
    }
    tracing::debug!(
        batches = stats.batches.load(Ordering::Relaxed),
        records = stats.records.load(Ordering::Relaxed),
        fallbacks = stats.fallbacks.load(Ordering::Relaxed),
        "call-record writer stopped"
    );
}

/// Writes the batch (emptying it) and answers every job.
async fn write_batch(
    pool: &AnyPool,
    stats: &WriterStats,
    batch: &mut Vec<Job>,
    node: Option<&str>,
) {
    let n = batch.len();
    stats.batches.fetch_add(1, Ordering::Relaxed);
    stats.records.fetch_add(n as u64, Ordering::Relaxed);
    if n > 1 {
        match insert_many(pool, batch, node).await {
            Ok(()) => {
                tracing::debug!(records = n, "call records written in one transaction");
                for job in batch.drain(..) {
                    answer(job, Ok(()));
                }
                return;
            }
            Err(e) => {
                stats.fallbacks.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, records = n,
                    "batched call-record write failed; writing the records one by one");
            }
        }
    }
    write_one_by_one(pool, batch, node).await;
}

async fn write_one_by_one(pool: &AnyPool, batch: &mut Vec<Job>, node: Option<&str>) {
    for job in batch.drain(..) {
        match job {
            Job::Record { ref rec, .. } => {
                let res = insert_one(pool, rec, node).await;
                answer(job, res);
            }
            Job::Live(_) | Job::Answered { .. } => {
                let res = async {
                    let mut tx = pool.begin().await?;
                    write_note(&mut tx, &job, node).await?;
                    tx.commit().await?;
                    Ok::<(), StoreError>(())
                }
                .await;
                if let Err(e) = res {
                    tracing::warn!(error = %e, job = ?job, "live-call note not written");
                }
            }
        }
    }
}

fn answer(job: Job, res: Result<(), StoreError>) {
    let Job::Record { rec, done } = job else {
        return;
    };
    if let Err(res) = done.send(res) {
        // The caller stopped waiting (cancelled); the outcome stands either way.
        tracing::debug!(call_id = %rec.id, ok = res.is_ok(),
            "call-record writer: caller no longer waiting");
    }
}

/// A live-call row, or its answer time.
async fn write_note(
    conn: &mut AnyConnection,
    job: &Job,
    node: Option<&str>,
) -> Result<(), StoreError> {
    match job {
        Job::Live(l) => {
            sqlx::query(
                "INSERT INTO live_calls (id, account_id, from_uri, to_uri, direction, started_at, \
                   node_id) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING",
            )
            .bind(&l.id)
            .bind(&l.account_id)
            .bind(&l.from)
            .bind(&l.to)
            .bind(&l.direction)
            .bind(l.started_at)
            .bind(node)
            .execute(&mut *conn)
            .await?;
        }
        Job::Answered { id, at } => {
            sqlx::query("UPDATE live_calls SET answered_at = $1 WHERE id = $2")
                .bind(at)
                .bind(id)
                .execute(&mut *conn)
                .await?;
        }
        Job::Record { .. } => {}
    }
    Ok(())
}

/// All records in one transaction; any failure rolls all of them back.
async fn insert_many(pool: &AnyPool, batch: &[Job], node: Option<&str>) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    for job in batch {
        match job {
            Job::Record { rec, .. } => insert_rows(&mut tx, rec, node).await?,
            Job::Live(_) | Job::Answered { .. } => write_note(&mut tx, job, node).await?,
        }
    }
    tx.commit().await?;
    Ok(())
}

/// One record in its own transaction.
pub(crate) async fn insert_one(
    pool: &AnyPool,
    rec: &CallRecord,
    node: Option<&str>,
) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    insert_rows(&mut tx, rec, node).await?;
    tx.commit().await?;
    tracing::debug!(call_id = %rec.id, legs = rec.legs.len(), "call record written");
    Ok(())
}

/// [`insert_rows`] for the crash recovery's own transaction.
pub(crate) async fn insert_rows_pub(
    conn: &mut AnyConnection,
    rec: &CallRecord,
    node: Option<&str>,
) -> Result<(), StoreError> {
    insert_rows(conn, rec, node).await
}

/// The call row and its leg rows (each leg stored under the record's id); the call is no
/// longer live.
async fn insert_rows(
    conn: &mut AnyConnection,
    rec: &CallRecord,
    node: Option<&str>,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM live_calls WHERE id = $1")
        .bind(&rec.id)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO call_records (id, account_id, from_uri, to_uri, direction, started_at, \
           answered_at, ended_at, duration_ms, end_cause, sip_status, node_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(&rec.id)
    .bind(&rec.account_id)
    .bind(&rec.from)
    .bind(&rec.to)
    .bind(&rec.direction)
    .bind(rec.started_at)
    .bind(rec.answered_at)
    .bind(rec.ended_at)
    .bind(rec.duration_ms)
    .bind(&rec.end_cause)
    .bind(i64::from(rec.sip_status))
    .bind(node)
    .execute(&mut *conn)
    .await?;
    for leg in &rec.legs {
        sqlx::query(
            "INSERT INTO call_legs (id, call_id, role, direction, from_uri, to_uri, contact, \
               started_at, answered_at, ended_at, end_cause, sip_status) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(&leg.id)
        .bind(&rec.id)
        .bind(&leg.role)
        .bind(&leg.direction)
        .bind(&leg.from)
        .bind(&leg.to)
        .bind(&leg.contact)
        .bind(leg.started_at)
        .bind(leg.answered_at)
        .bind(leg.ended_at)
        .bind(&leg.end_cause)
        .bind(i64::from(leg.sip_status))
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    use crate::db::Store;
    use crate::error::StoreError;
    use crate::model::{CallRecord, LegRecord};

    fn record(id: &str) -> CallRecord {
        let leg = |n: &str, role: &str| LegRecord {
            id: format!("{id}-{n}"),
            call_id: "ignored".into(),
            role: role.into(),
            direction: "in".into(),
            from: "201".into(),
            to: "202".into(),
            contact: None,
            started_at: 1_000,
            answered_at: None,
            ended_at: 2_000,
            end_cause: "busy".into(),
            sip_status: 486,
        };
        CallRecord {
            id: id.into(),
            account_id: Some("acc".into()),
            from: "201".into(),
            to: "202".into(),
            direction: "internal".into(),
            started_at: 1_000,
            answered_at: None,
            ended_at: 2_000,
            duration_ms: 0,
            end_cause: "busy".into(),
            sip_status: 486,
            legs: vec![leg("a", "caller"), leg("b", "callee")],
        }
    }

    fn stats(s: &Store) -> (u64, u64, u64) {
        let st = &s.records.as_ref().unwrap().stats;
        (
            st.batches.load(Ordering::Relaxed),
            st.records.load(Ordering::Relaxed),
            st.fallbacks.load(Ordering::Relaxed),
        )
    }

    crate::testdb::both_backends! {
        multi_thread
        async fn concurrent_records_are_group_committed_and_all_readable() {
            let db = crate::testdb::TestDb::new().await;
            let s = Arc::new(db.open().await);
            const N: usize = 400;
            let mut tasks = Vec::new();
            for i in 0..N {
                let s = s.clone();
                tasks.push(tokio::spawn(async move {
                    s.insert_call_record(&record(&format!("c{i:04}"))).await
                }));
            }
            for t in tasks {
                t.await.unwrap().unwrap();
            }
            let (batches, records, fallbacks) = stats(&s);
            assert_eq!(records, N as u64);
            assert_eq!(fallbacks, 0);
            assert!(batches < records, "{batches} batches for {records} records");

            // Committed: a fresh connection (another store on the file) reads every record.
            let other = db.open().await;
            let all = other.call_history(None, 1_000).await.unwrap();
            assert_eq!(all.len(), N);
            assert!(all.iter().all(|c| c.legs.len() == 2));
            other.close().await;
            s.close().await;
        }
    }

    crate::testdb::both_backends! {
        async fn a_failing_record_in_a_batch_fails_alone() {
            let s = crate::testdb::store().await;
            s.insert_call_record(&record("dup")).await.unwrap();
            // Hold the only connection so the records queue up and form one batch.
            let held = s.pool.begin().await.unwrap();
            let mut tasks = Vec::new();
            for i in 0..20 {
                let s = s.clone();
                tasks.push(tokio::spawn(async move {
                    s.insert_call_record(&record(&format!("ok{i}"))).await
                }));
            }
            let dup = {
                let s = s.clone();
                tokio::spawn(async move { s.insert_call_record(&record("dup")).await })
            };
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            drop(held);
            for t in tasks {
                t.await.unwrap().unwrap();
            }
            let err = dup.await.unwrap().unwrap_err();
            assert!(matches!(err, StoreError::Conflict(_)), "{err}");
            let (batches, records, fallbacks) = stats(&s);
            assert_eq!(records, 22);
            assert!(batches < records, "{batches} batches for {records} records");
            assert_eq!(
                fallbacks, 1,
                "the batch with the duplicate was rewritten one by one"
            );
            let all = s.call_history(None, 100).await.unwrap();
            assert_eq!(all.len(), 21);
            assert!(all.iter().all(|c| c.legs.len() == 2));
        }
    }

    crate::testdb::both_backends! {
        async fn errors_reach_the_caller() {
            let s = crate::testdb::store().await;
            // Conflict (duplicate id) on a lone record.
            s.insert_call_record(&record("c1")).await.unwrap();
            let err = s.insert_call_record(&record("c1")).await.unwrap_err();
            assert!(matches!(err, StoreError::Conflict(_)), "{err}");
            // The database is gone.
            s.close().await;
            let err = s.insert_call_record(&record("c2")).await.unwrap_err();
            assert!(matches!(err, StoreError::Database(_)), "{err}");
        }
    }
}
