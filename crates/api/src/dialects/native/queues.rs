//! Call queues: the callers an application put into a named queue (jambonz `enqueue`) and
//! that wait there for a `dequeue` (see `engine/src/queues.rs`).

use axum::extract::State;
use axum::Json;
use hookflash_engine::queues::{QueueInfo, WaitingCall};
use serde::Serialize;
use utoipa::ToSchema;

use crate::native::auth::ApiAccount;
use crate::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct QueuedCall {
    /// The waiting call.
    pub call_id: String,
    /// Its leg that waits (the application's leg; jambonz `call_sid`).
    pub leg_id: String,
    /// 1 = served next.
    pub position: usize,
    /// 0-999, lower is served first (FIFO within one priority).
    pub priority: u16,
    /// When it joined the queue (ms since the epoch).
    pub enqueued_at_ms: i64,
    /// How long it has waited (ms).
    pub wait_ms: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Queue {
    pub name: String,
    /// Callers waiting.
    pub size: usize,
    /// The callers, in the order they are served.
    pub calls: Vec<QueuedCall>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QueueList {
    /// The account's queues with callers, by name (an empty queue is not listed).
    pub queues: Vec<Queue>,
}

impl From<&WaitingCall> for QueuedCall {
    fn from(c: &WaitingCall) -> Self {
        QueuedCall {
            call_id: c.call_id.clone(),
            leg_id: c.leg_id.clone(),
            position: c.position,
            priority: c.priority,
            enqueued_at_ms: c.enqueued_at_ms,
            wait_ms: c.wait_ms,
        }
    }
}

impl From<&QueueInfo> for Queue {
    fn from(q: &QueueInfo) -> Self {
        Queue {
            name: q.name.clone(),
            size: q.size,
            calls: q.calls.iter().map(QueuedCall::from).collect(),
        }
    }
}

/// Lists the account's queues with their waiting callers.
#[utoipa::path(
    get,
    path = "/queues",
    tag = "queues",
    responses(
        (status = 200, body = QueueList, description = "The account's queues"),
    )
)]
pub(crate) async fn list_queues(
    State(state): State<AppState>,
    auth: ApiAccount,
) -> Json<QueueList> {
    let queues = state.engine.queues(&auth.account_id);
    Json(QueueList {
        queues: queues.iter().map(Queue::from).collect(),
    })
}
