//! The WebSocket gateway as `@ringcentral/subscriptions` 5.x uses it: `POST
//! /restapi/oauth/wstoken` (Bearer) -> `{uri, ws_access_token, expires_in}`; the client
//! connects to `uri?access_token=...` and gets `[{"type": "ConnectionDetails", "wsc"}, {...}]`;
//! `[{"type": "ClientRequest", "messageId", "method", "path"}, body?]` creates, updates or
//! deletes a subscription of this connection (answered `[{"type": "ClientRequest",
//! "messageId", "status"}, body]`); notifications arrive as `[{"type": "ServerNotification"},
//! {uuid, event, timestamp, subscriptionId, body}]`; `Heartbeat` frames are answered, and the
//! server sends one after a minute without traffic.
//!
//! Session recovery (what `@ringcentral/subscriptions` 5.x / `@rc-ex/ws` does after a dropped
//! connection): a closed connection's session is kept for [`RECOVERY_TIMEOUT`] with its
//! subscriptions and its frame queue, which goes on collecting notifications (up to
//! [`QUEUE_FRAMES`]). A reconnect of the same extension with `&wsc=<token>` of that session
//! within the timeout gets `recoveryState: "Successful"`, the same subscriptions and every
//! notification it missed, in order; otherwise `"Failed"` (the SDK subscribes again) and the
//! session's subscriptions end when the timeout runs out.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tracing::{debug, info};

use super::error::RcError;
use super::oauth::RcUser;
use super::subscriptions::{self, SubscriptionBody, Transport};
use super::{now_ms, RcState};

/// Path of the WebSocket endpoint.
pub const WS_PATH: &str = "/restapi/v1.0/ws";
/// A ws access token is good for this long.
const WS_TOKEN_TTL: Duration = Duration::from_secs(600);
/// Unexpired ws tokens kept at once (a client asks for one per connection).
const MAX_WS_TOKENS: usize = 2000;
/// Open connections per extension.
const MAX_CONNECTIONS_PER_USER: usize = 5;
/// Largest frame a client may send.
const MAX_FRAME_BYTES: usize = 64 * 1024;
/// Frames waiting for a slow client before notifications are dropped.
const QUEUE_FRAMES: usize = 256;
/// Quiet time after which the server sends a Heartbeat.
const HEARTBEAT_AFTER: Duration = Duration::from_secs(60);
/// How long a dropped connection's session (subscriptions, missed notifications) waits for
/// the client to come back with its `wsc`.
pub const RECOVERY_TIMEOUT: Duration = Duration::from_secs(60);
/// After a recovery, the missed notifications follow ConnectionDetails after this pause.
const RECOVERED_FLUSH_DELAY: Duration = Duration::from_millis(500);
/// Dropped sessions kept at once (each holds at most [`QUEUE_FRAMES`] frames).
const MAX_DROPPED_SESSIONS: usize = 500;

/// A connection's session: what a reconnect with its `wsc` token takes over.
struct WsSession {
    user_id: String,
    /// The id the session's subscriptions name as their connection.
    connection: String,
    frames_tx: mpsc::Sender<String>,
    frames_rx: mpsc::Receiver<String>,
    wsc: Wsc,
}

/// Issued ws access tokens and open connections.
#[derive(Default)]
pub struct Gateway {
    tokens: Mutex<HashMap<String, (RcUser, Instant)>>,
    connections: Mutex<HashMap<String, usize>>,
    /// Sessions of dropped connections by `wsc` token, with when they were dropped.
    dropped: Mutex<HashMap<String, (WsSession, Instant)>>,
    next: AtomicU64,
}

impl Gateway {
    fn issue(&self, auth: &RcUser) -> Result<String, RcError> {
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        tokens.retain(|_, (_, at)| now.duration_since(*at) < WS_TOKEN_TTL);
        if tokens.len() >= MAX_WS_TOKENS {
            return Err(RcError::TooManyRequests(
                "Too many WebSocket tokens issued; retry later".into(),
            ));
        }
        let token = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        tokens.insert(token.clone(), (auth.clone(), now));
        Ok(token)
    }

    fn user_of(&self, token: &str) -> Option<RcUser> {
        let tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens
            .get(token)
            .filter(|(_, at)| at.elapsed() < WS_TOKEN_TTL)
            .map(|(u, _)| u.clone())
    }

    fn open(&self, user_id: &str) -> bool {
        let mut c = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        let n = c.entry(user_id.to_string()).or_default();
        if *n >= MAX_CONNECTIONS_PER_USER {
            return false;
        }
        *n += 1;
        true
    }

    fn count(&self, user_id: &str) -> usize {
        let c = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        c.get(user_id).copied().unwrap_or(0)
    }

    /// Keeps a dropped connection's session for recovery. Returns the connection ids whose
    /// subscriptions must end now (sessions that timed out, or this one if too many wait).
    fn keep(&self, session: WsSession) -> Vec<String> {
        let mut dropped = self.dropped.lock().unwrap_or_else(|p| p.into_inner());
        let mut gone = Vec::new();
        dropped.retain(|_, (s, at)| {
            let keep = at.elapsed() < RECOVERY_TIMEOUT;
            if !keep {
                gone.push(s.connection.clone());
            }
            keep
        });
        if dropped.len() >= MAX_DROPPED_SESSIONS {
            gone.push(session.connection);
        } else {
            dropped.insert(session.wsc.token.clone(), (session, Instant::now()));
        }
        gone
    }

    /// The dropped session `token` names, if it is `user_id`'s and not timed out.
    fn recover(&self, token: &str, user_id: &str) -> Option<WsSession> {
        let mut dropped = self.dropped.lock().unwrap_or_else(|p| p.into_inner());
        let fits = dropped
            .get(token)
            .is_some_and(|(s, at)| s.user_id == user_id && at.elapsed() < RECOVERY_TIMEOUT);
        if fits {
            dropped.remove(token).map(|(s, _)| s)
        } else {
            None
        }
    }

    /// Ends the session `token` if it still waits (its recovery time ran out): its
    /// connection's id, whose subscriptions end.
    fn expire(&self, token: &str) -> Option<String> {
        let mut dropped = self.dropped.lock().unwrap_or_else(|p| p.into_inner());
        let expired = dropped
            .get(token)
            .is_some_and(|(_, at)| at.elapsed() >= RECOVERY_TIMEOUT);
        if expired {
            dropped.remove(token).map(|(s, _)| s.connection)
        } else {
            None
        }
    }

    fn close(&self, user_id: &str) {
        let mut c = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = c.get_mut(user_id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.remove(user_id);
            }
        }
    }
}

/// `POST /restapi/oauth/wstoken`.
pub(crate) async fn wstoken(
    State(state): State<RcState>,
    auth: RcUser,
    headers: HeaderMap,
) -> Result<Response, RcError> {
    let token = state.gateway.issue(&auth)?;
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            h.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".:-[]".contains(c))
        })
        .unwrap_or("127.0.0.1");
    info!(user = %auth.user.extension, "RingCentral WebSocket token issued");
    Ok(Json(json!({
        "uri": format!("ws://{host}{WS_PATH}"),
        "ws_access_token": token,
        "expires_in": WS_TOKEN_TTL.as_secs(),
    }))
    .into_response())
}

#[derive(Debug, Deserialize)]
pub(crate) struct WsQuery {
    access_token: Option<String>,
    wsc: Option<String>,
}

/// `GET /restapi/v1.0/ws?access_token=...` (WebSocket upgrade).
pub(crate) async fn connect(
    State(state): State<RcState>,
    Query(q): Query<WsQuery>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let Some(auth) = q
        .access_token
        .as_deref()
        .and_then(|t| state.gateway.user_of(t))
    else {
        return RcError::Unauthorized {
            code: "WSG-401",
            message: "Invalid or expired WebSocket access token".into(),
        }
        .into_response();
    };
    let too_many = || {
        RcError::TooManyRequests(format!(
            "At most {MAX_CONNECTIONS_PER_USER} WebSocket connections per extension"
        ))
    };
    if state.gateway.count(&auth.user.id) >= MAX_CONNECTIONS_PER_USER {
        return too_many().into_response();
    }
    let recover = q.wsc.clone();
    upgrade
        .max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .on_upgrade(move |mut socket| async move {
            let user_id = auth.user.id.clone();
            // Counted once the connection exists (a failed upgrade holds no slot).
            if !state.gateway.open(&user_id) {
                let err = too_many();
                let frame = json!([{"type": "Error", "status": 429}, err.body()]);
                let _ = socket.send(Message::text(frame.to_string())).await;
                return;
            }
            run(state.clone(), auth, socket, recover).await;
            state.gateway.close(&user_id);
        })
}

/// The connection's `wsc` (its token and a sequence that grows with each frame sent).
struct Wsc {
    token: String,
    sequence: u64,
}

impl Wsc {
    fn next(&mut self) -> Value {
        self.sequence += 1;
        json!({"token": self.token, "sequence": self.sequence})
    }
}

/// A new session, or the dropped one `recover` names (with its subscriptions and the frames
/// queued since it dropped).
fn session_for(state: &RcState, auth: &RcUser, recover: Option<&str>) -> (WsSession, bool) {
    if let Some(session) = recover.and_then(|t| state.gateway.recover(t, &auth.user.id)) {
        return (session, true);
    }
    let (frames_tx, frames_rx) = mpsc::channel::<String>(QUEUE_FRAMES);
    let session = WsSession {
        user_id: auth.user.id.clone(),
        connection: format!(
            "ws-{}-{}",
            state.gateway.next.fetch_add(1, Ordering::Relaxed),
            uuid::Uuid::new_v4().simple()
        ),
        frames_tx,
        frames_rx,
        wsc: Wsc {
            token: uuid::Uuid::new_v4().simple().to_string(),
            sequence: 0,
        },
    };
    (session, false)
}

async fn run(state: RcState, auth: RcUser, mut socket: WebSocket, recover: Option<String>) {
    let (session, recovered) = session_for(&state, &auth, recover.as_deref());
    let WsSession {
        user_id,
        connection,
        frames_tx,
        mut frames_rx,
        mut wsc,
    } = session;
    let mut details = json!({
        "creationTime": crate::sipgate::history::iso(now_ms()),
        "maxConnectionsPerSession": 1,
        "recoveryBufferSize": QUEUE_FRAMES,
        "recoveryTimeout": RECOVERY_TIMEOUT.as_secs(),
        "idleTimeout": 900,
        "absoluteTimeout": 86400,
        "maxActiveRequests": 10,
    });
    match (recover.is_some(), recovered) {
        (true, true) => details["recoveryState"] = json!("Successful"),
        (true, false) => {
            details["recoveryState"] = json!("Failed");
            details["recoveryErrorCode"] = json!("WSG-412");
        }
        (false, _) => {}
    }
    let first = json!([
        {"type": "ConnectionDetails", "messageId": uuid::Uuid::new_v4().to_string(), "status": 200, "wsc": wsc.next()},
        details,
    ]);
    if socket.send(Message::text(first.to_string())).await.is_err() {
        // Nothing was taken over yet: the session waits for the next attempt.
        drop_session(&state, user_id, connection, frames_tx, frames_rx, wsc);
        return;
    }
    info!(user = %auth.user.extension, connection, recovered, "RingCentral WebSocket connected");
    if recovered {
        // @rc-ex/ws re-attaches the subscription's listener only once it has read
        // ConnectionDetails: queued notifications arriving in the same read would be lost.
        tokio::time::sleep(RECOVERED_FLUSH_DELAY).await;
    }
    loop {
        let heartbeat = tokio::time::sleep(HEARTBEAT_AFTER);
        tokio::select! {
            incoming = socket.recv() => {
                let Some(Ok(msg)) = incoming else { break };
                let text = match msg {
                    Message::Text(t) => t.to_string(),
                    Message::Close(_) => break,
                    _ => continue,
                };
                let reply = handle_frame(&state, &auth, &connection, &frames_tx, &text, &mut wsc).await;
                if let Some(reply) = reply {
                    if socket.send(Message::text(reply.to_string())).await.is_err() {
                        break;
                    }
                }
            }
            frame = frames_rx.recv() => {
                let Some(frame) = frame else { break };
                // Notifications carry the connection's wsc like every server frame.
                let frame = match serde_json::from_str::<Value>(&frame) {
                    Ok(mut v) => {
                        if let Some(meta) = v.get_mut(0) {
                            meta["wsc"] = wsc.next();
                            meta["messageId"] = json!(uuid::Uuid::new_v4().to_string());
                            meta["status"] = json!(200);
                        }
                        v.to_string()
                    }
                    Err(_) => frame,
                };
                if socket.send(Message::text(frame)).await.is_err() {
                    break;
                }
            }
            _ = heartbeat => {
                let beat = json!([{"type": "Heartbeat", "messageId": uuid::Uuid::new_v4().to_string(), "status": 200, "wsc": wsc.next()}]);
                if socket.send(Message::text(beat.to_string())).await.is_err() {
                    break;
                }
            }
        }
    }
    info!(user = %auth.user.extension, connection, "RingCentral WebSocket closed");
    drop_session(&state, user_id, connection, frames_tx, frames_rx, wsc);
}

/// A connection ended: its session waits [`RECOVERY_TIMEOUT`] for a reconnect (its queue
/// keeps collecting notifications meanwhile), then its subscriptions end.
fn drop_session(
    state: &RcState,
    user_id: String,
    connection: String,
    frames_tx: mpsc::Sender<String>,
    frames_rx: mpsc::Receiver<String>,
    wsc: Wsc,
) {
    let token = wsc.token.clone();
    let session = WsSession {
        user_id,
        connection,
        frames_tx,
        frames_rx,
        wsc,
    };
    for gone in state.gateway.keep(session) {
        state.subscriptions.remove_connection(&gone);
    }
    let state = state.clone();
    tokio::spawn(async move {
        tokio::time::sleep(RECOVERY_TIMEOUT).await;
        if let Some(gone) = state.gateway.expire(&token) {
            debug!(connection = %gone, "RingCentral WebSocket session not recovered in time");
            state.subscriptions.remove_connection(&gone);
        }
    });
}

/// Answers one client frame (None: nothing to answer).
async fn handle_frame(
    state: &RcState,
    auth: &RcUser,
    connection: &str,
    frames: &mpsc::Sender<String>,
    text: &str,
    wsc: &mut Wsc,
) -> Option<Value> {
    let Ok(Value::Array(parts)) = serde_json::from_str::<Value>(text) else {
        let err = RcError::BadRequest("A frame must be a JSON array".into());
        return Some(json!([{"type": "Error", "status": 400, "wsc": wsc.next()}, err.body()]));
    };
    let meta = parts.first().cloned().unwrap_or(Value::Null);
    let message_id = meta.get("messageId").cloned().unwrap_or(Value::Null);
    match meta.get("type").and_then(Value::as_str) {
        Some("Heartbeat") => Some(
            json!([{"type": "Heartbeat", "messageId": message_id, "status": 200, "wsc": wsc.next()}]),
        ),
        Some("ClientRequest") => {
            let method = meta.get("method").and_then(Value::as_str).unwrap_or("");
            let path = meta.get("path").and_then(Value::as_str).unwrap_or("");
            let body = parts.get(1).cloned().unwrap_or(Value::Null);
            let (status, answer) =
                match client_request(state, auth, connection, frames, method, path, body).await {
                    Ok((status, answer)) => (status, answer),
                    Err(e) => (e.status().as_u16(), Some(e.body())),
                };
            debug!(method, path, status, "RingCentral WebSocket request");
            let head = json!({"type": "ClientRequest", "messageId": message_id, "status": status, "headers": {}, "wsc": wsc.next()});
            Some(match answer {
                Some(a) => json!([head, a]),
                None => json!([head]),
            })
        }
        _ => None,
    }
}

/// A REST request over the socket: only the subscription routes.
async fn client_request(
    state: &RcState,
    auth: &RcUser,
    connection: &str,
    frames: &mpsc::Sender<String>,
    method: &str,
    path: &str,
    body: Value,
) -> Result<(u16, Option<Value>), RcError> {
    let path = path.split('?').next().unwrap_or("");
    let rest = path
        .strip_prefix("/restapi/v1.0/subscription")
        .ok_or_else(|| {
            RcError::NotImplemented(format!(
                "[{path}] is not served over the WebSocket (only /restapi/v1.0/subscription)"
            ))
        })?;
    let id = rest.trim_start_matches('/');
    let parse = |body: Value| {
        serde_json::from_value::<SubscriptionBody>(body)
            .map_err(|e| RcError::BadRequest(format!("invalid subscription body: {e}")))
    };
    match (method.to_ascii_uppercase().as_str(), id) {
        ("POST", "") => {
            let req = parse(body)?;
            let sub = subscriptions::create(
                state,
                auth,
                req,
                Some((connection.to_string(), frames.clone())),
            )
            .await?;
            Ok((200, Some(subscriptions::render(&sub))))
        }
        ("GET", "") => {
            let records: Vec<Value> = subscriptions::of_user(state, &auth.user.id)
                .await?
                .iter()
                .map(subscriptions::render)
                .collect();
            Ok((200, Some(json!({ "records": records }))))
        }
        ("PUT", id) if !id.is_empty() => {
            let mut sub = subscriptions::find(state, &auth.user.id, id).await?;
            let req = parse(body)?;
            sub.filters = subscriptions::refilter(auth, &req)?.unwrap_or(sub.filters);
            sub.expires_ms = subscriptions::expiry_of(&req);
            if let Transport::WebSocket { .. } = sub.transport {
                sub.transport = Transport::WebSocket {
                    connection: connection.to_string(),
                    frames: frames.clone(),
                };
            }
            subscriptions::persist(state, &sub).await?;
            state.subscriptions.update(sub.clone());
            Ok((200, Some(subscriptions::render(&sub))))
        }
        ("DELETE", id) if !id.is_empty() => {
            subscriptions::remove(state, &auth.user.id, id).await?;
            Ok((204, None))
        }
        _ => Err(RcError::NotImplemented(format!(
            "{method} {path} is not served over the WebSocket"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(user: &str, connection: &str, token: &str) -> WsSession {
        let (frames_tx, frames_rx) = mpsc::channel(4);
        WsSession {
            user_id: user.into(),
            connection: connection.into(),
            frames_tx,
            frames_rx,
            wsc: Wsc {
                token: token.into(),
                sequence: 7,
            },
        }
    }

    #[test]
    fn a_dropped_session_is_recovered_once_by_its_own_user_with_what_it_missed() {
        let gateway = Gateway::default();
        let s = session("u1", "ws-1", "tok");
        let tx = s.frames_tx.clone();
        assert!(gateway.keep(s).is_empty());
        // A notification while the client is away waits in the session's queue.
        tx.try_send("missed".into()).unwrap();
        assert!(
            gateway.recover("tok", "u2").is_none(),
            "another user's token"
        );
        assert!(gateway.recover("nope", "u1").is_none());
        let mut back = gateway.recover("tok", "u1").expect("recovered");
        assert_eq!(back.connection, "ws-1");
        assert_eq!(back.wsc.sequence, 7);
        assert_eq!(back.frames_rx.try_recv().unwrap(), "missed");
        assert!(gateway.recover("tok", "u1").is_none(), "taken once");
        // Not expired yet: nothing to end.
        assert!(gateway.expire("tok").is_none());
    }
}
