//! The call event stream (Server-Sent Events). Each event's SSE `id` is its per-account
//! sequence number; a client that reconnects with `Last-Event-ID` (or `?after=N`) first gets
//! what it missed from the engine's bounded backlog, then live events. If the backlog no
//! longer holds everything it missed, a `gap` event tells it to re-list.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::stream::{self, Stream};
use hookflash_engine::{BusEvent, Engine};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::broadcast::Receiver;
use tracing::debug;
use utoipa::IntoParams;

use crate::native::auth::ApiAccount;
use crate::native::conferences::ConferenceEventView;
use crate::native::doc::StreamItemDoc;
use crate::native::error::{ErrorBody, NativeError};
use crate::native::model::{CallEvent, Gap};
use crate::AppState;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct EventsQuery {
    /// Resume after this sequence number (the `Last-Event-ID` header wins when both are sent).
    /// Without either, only new events are streamed.
    #[param(schema_with = after_param)]
    after: Option<u64>,
}

fn after_param() -> utoipa::openapi::schema::Schema {
    crate::native::doc::sequence("A sequence number")
}

enum Item {
    Event(Box<BusEvent>),
    Gap(Gap),
}

struct StreamState {
    engine: Engine,
    account_id: String,
    live: Receiver<BusEvent>,
    pending: VecDeque<Item>,
    /// The last sequence delivered (or resumed after).
    last: Option<u64>,
}

impl StreamState {
    /// Queues what the engine's backlog holds after `after`, with a gap marker if some of it
    /// is lost; replaces the live receiver.
    fn resume(&mut self, after: Option<u64>) {
        let sub = self.engine.events().subscribe(&self.account_id, after);
        if sub.gap {
            self.pending.push_back(Item::Gap(Gap {
                after: after.unwrap_or(0),
                resumes_at: sub.missed.first().map(BusEvent::seq),
            }));
        }
        self.pending
            .extend(sub.missed.into_iter().map(|e| Item::Event(Box::new(e))));
        self.live = sub.live;
    }
}

fn render(item: Item) -> SseEvent {
    match item {
        Item::Event(e) => {
            let sse = match e.as_ref() {
                BusEvent::Call(e) => SseEvent::default()
                    .id(e.seq.to_string())
                    .event(crate::native::model::event_kind(e.kind))
                    .json_data(CallEvent::from(e)),
                BusEvent::Conference(e) => SseEvent::default()
                    .id(e.seq.to_string())
                    .event(crate::native::conferences::conference_event_kind(e.kind))
                    .json_data(ConferenceEventView::from(e)),
            };
            sse.unwrap_or_else(|_| SseEvent::default().comment("unserializable event"))
        }
        Item::Gap(g) => SseEvent::default()
            .event("gap")
            .json_data(&g)
            .unwrap_or_else(|_| SseEvent::default().comment("gap")),
    }
}

/// Server-Sent Events of the account's calls (SSE `event` = the kind: `new`, `ringing`,
/// `answered`, `held`, `retrieved`, `muted`, `unmuted`, `dtmf`, `recording_started`,
/// `recording_stopped`, `forwarded`, `voicemail`, `parked`, `unparked`, `transfer_started`,
/// `transfer_ringing`, `transfer_consulting`, `transferred`, `transfer_failed`, `ended`), each
/// with `id` = sequence and `data` = a `CallEvent` JSON; `event: gap` (no `id`, `data` = a
/// `Gap`) when resumed events were lost or the client is ahead of the server. Comments keep
/// the connection alive every 15 s. The stream does not end by itself.
#[utoipa::path(
    get,
    path = "/events",
    tag = "events",
    params(
        EventsQuery,
        ("Last-Event-ID" = Option<u64>, Header, nullable = false, minimum = 0, maximum = 18446744073709551615_u64, description = "Resume after this sequence (sent by EventSource on reconnect): a decimal number, surrounding spaces allowed"),
    ),
    responses(
        (status = 200, description = "text/event-stream: each event's `data` is a CallEvent (`event:` its kind, `id:` its seq) or, for `event: gap`, a Gap", content_type = "text/event-stream", body = StreamItemDoc),
        (status = 400, body = ErrorBody, description = "`invalid_request`: `Last-Event-ID` or `after` is not a sequence number, or an unknown query parameter"),
    )
)]
pub(crate) async fn event_stream(
    State(state): State<AppState>,
    auth: ApiAccount,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, NativeError> {
    let query = query.map_err(|e| NativeError::BadRequest(format!("invalid query: {e}")))?;
    let header_after = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    NativeError::BadRequest("Last-Event-ID must be a sequence number".into())
                })?,
        ),
    };
    let after = header_after.or(query.after);
    let engine = state.engine.clone();
    // Where a client without `after` starts: read before subscribing, so every live event
    // has a higher sequence (and recovery after lagging knows where to resume).
    let now = engine.events().last_seq(&auth.account_id);
    // A client ahead of the server (sequences restart with the server): a gap, then live.
    let ahead = after.filter(|a| *a > now);
    let after = if ahead.is_some() { Some(now) } else { after };
    let first = engine.events().subscribe(&auth.account_id, after);
    let mut st = StreamState {
        engine,
        account_id: auth.account_id.clone(),
        live: first.live,
        pending: VecDeque::new(),
        last: Some(after.unwrap_or(now)),
    };
    if let Some(a) = ahead {
        st.pending.push_back(Item::Gap(Gap {
            after: a,
            resumes_at: None,
        }));
    } else if first.gap {
        st.pending.push_back(Item::Gap(Gap {
            after: after.unwrap_or(0),
            resumes_at: first.missed.first().map(BusEvent::seq),
        }));
    }
    st.pending
        .extend(first.missed.into_iter().map(|e| Item::Event(Box::new(e))));
    debug!(account = %auth.account_id, ?after, "event stream opened");

    let events = stream::unfold(st, |mut st| async move {
        loop {
            if let Some(item) = st.pending.pop_front() {
                if let Item::Event(e) = &item {
                    // Never deliver a sequence twice (backlog and live may overlap on resume).
                    if st.last.is_some_and(|l| e.seq() <= l) {
                        continue;
                    }
                    st.last = Some(e.seq());
                }
                return Some((Ok(render(item)), st));
            }
            match st.live.recv().await {
                Ok(e) if e.account_id() == st.account_id => {
                    st.pending.push_back(Item::Event(Box::new(e)))
                }
                Ok(_) => {}
                Err(RecvError::Lagged(n)) => {
                    debug!(
                        skipped = n,
                        "event stream lagged; resuming from the backlog"
                    );
                    let last = st.last;
                    st.resume(last);
                }
                Err(RecvError::Closed) => return None,
            }
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
