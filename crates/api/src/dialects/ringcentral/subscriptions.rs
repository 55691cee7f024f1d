//! Subscriptions: `POST/GET/PUT/DELETE /restapi/v1.0/subscription[/{id}]` (and `/renew`) with
//! the telephony-session filters (extension and account level) and the detailed presence
//! filter, delivered by WebHook (a `Validation-Token` handshake at creation; every
//! notification carries `Verification-Token`) through the shared webhook delivery, or over
//! this dialect's WebSocket ([`super::ws`]).
//!
//! One dispatcher follows the engine's event bus: for every call it keeps the last status of
//! each party, and each party whose status (or mute) changed gives one notification (in the
//! order of the bus, `sequence` increasing per call). WebHook subscriptions are also stored
//! (`rc_subscriptions`, written through on every change) and loaded again at start, so they
//! survive a restart; WebSocket ones live with their connection's session ([`super::ws`]).
//! Subscriptions are bounded per extension and in total, and expire.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hookflash_apps::delivery::{Body, Request, Signature};
use hookflash_apps::Delivery;
use hookflash_engine::{CallInfo, Engine, Event, EventKind, LegInfo};
use hookflash_store::RcSubscription;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::account::presence_body;
use super::error::RcError;
use super::model::{self, PartyStatus};
use super::oauth::RcUser;
use super::sessions::{body, parked_in, Result};
use super::{now_ms, RcState};
use crate::sipgate::history::iso;

/// Subscriptions one extension may hold.
pub const MAX_PER_EXTENSION: usize = 20;
/// Subscriptions of the whole server.
pub const MAX_TOTAL: usize = 2000;
/// Event filters in one subscription.
const MAX_FILTERS: usize = 10;
/// Longest and default lifetime of a subscription, seconds.
const MAX_EXPIRES_IN: i64 = 7 * 24 * 3600;
const DEFAULT_EXPIRES_IN: i64 = 15 * 60;
/// Calls the dispatcher tracks at once (beyond this, calls the engine no longer has are
/// forgotten).
const MAX_TRACKED_CALLS: usize = 10_000;

/// What a subscription listens to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// `/restapi/v1.0/account/~/extension/~/telephony/sessions`: the extension's parties.
    ExtensionSessions,
    /// `/restapi/v1.0/account/~/telephony/sessions`: every party of the account's extensions.
    AccountSessions,
    /// `/restapi/v1.0/account/~/extension/~/presence?detailedTelephonyState=true...`.
    Presence { query: String },
}

/// How notifications reach the subscriber.
#[derive(Debug, Clone)]
pub enum Transport {
    WebHook {
        address: String,
        verification_token: Option<String>,
    },
    /// A frame queue of one WebSocket connection (`connection`: its id).
    WebSocket {
        connection: String,
        frames: mpsc::Sender<String>,
    },
}

#[derive(Debug, Clone)]
pub struct Subscription {
    pub id: String,
    pub account_id: String,
    pub user_id: String,
    pub filters: Vec<Filter>,
    pub transport: Transport,
    pub created_ms: i64,
    pub expires_ms: i64,
}

/// Every live subscription.
#[derive(Default)]
pub struct Registry {
    subs: Mutex<HashMap<String, Subscription>>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Subscription>> {
        match self.subs.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Adds a subscription within the limits.
    pub fn insert(&self, sub: Subscription) -> Result<()> {
        let mut subs = self.lock();
        let now = now_ms();
        subs.retain(|_, s| s.expires_ms > now);
        if subs.len() >= MAX_TOTAL
            || subs.values().filter(|s| s.user_id == sub.user_id).count() >= MAX_PER_EXTENSION
        {
            return Err(RcError::TooManyRequests(format!(
                "Too many subscriptions (at most {MAX_PER_EXTENSION} per extension)"
            )));
        }
        subs.insert(sub.id.clone(), sub);
        Ok(())
    }

    /// The user's unexpired subscription `id`.
    pub fn get(&self, user_id: &str, id: &str) -> Option<Subscription> {
        let now = now_ms();
        self.lock()
            .get(id)
            .filter(|s| s.user_id == user_id && s.expires_ms > now)
            .cloned()
    }

    pub fn of_user(&self, user_id: &str) -> Vec<Subscription> {
        let now = now_ms();
        let mut out: Vec<Subscription> = self
            .lock()
            .values()
            .filter(|s| s.user_id == user_id && s.expires_ms > now)
            .cloned()
            .collect();
        out.sort_by_key(|s| s.created_ms);
        out
    }

    pub fn update(&self, sub: Subscription) {
        self.lock().insert(sub.id.clone(), sub);
    }

    pub fn remove(&self, user_id: &str, id: &str) -> bool {
        let mut subs = self.lock();
        if subs.get(id).is_some_and(|s| s.user_id == user_id) {
            subs.remove(id);
            true
        } else {
            false
        }
    }

    /// Drops the subscriptions of a closed WebSocket connection.
    pub fn remove_connection(&self, connection: &str) {
        self.lock().retain(|_, s| {
            !matches!(&s.transport, Transport::WebSocket { connection: c, .. } if c == connection)
        });
    }

    fn of_account(&self, account_id: &str) -> Vec<Subscription> {
        let now = now_ms();
        let mut subs = self.lock();
        subs.retain(|_, s| s.expires_ms > now);
        subs.values()
            .filter(|s| s.account_id == account_id)
            .cloned()
            .collect()
    }
}

/// Parses one event filter of `auth`'s (ids or `~`; with or without `/restapi/v1.0`).
fn parse_filter(auth: &RcUser, filter: &str) -> Option<Filter> {
    parse_filter_of(&auth.account.id, &auth.user.id, filter)
}

/// Parses one event filter of the user `user_id` of `account_id`.
fn parse_filter_of(account_id: &str, user_id: &str, filter: &str) -> Option<Filter> {
    let (path, query) = filter.split_once('?').unwrap_or((filter, ""));
    let path = path.trim_end_matches('/');
    let path = path.strip_prefix("/restapi/v1.0").unwrap_or(path);
    let rest = path.strip_prefix("/account/")?;
    let (account, rest) = rest.split_once('/')?;
    if account != "~" && account != account_id {
        return None;
    }
    if rest == "telephony/sessions" {
        return Some(Filter::AccountSessions);
    }
    let rest = rest.strip_prefix("extension/")?;
    let (ext, what) = rest.split_once('/')?;
    if ext != "~" && ext != user_id {
        return None;
    }
    match what {
        "telephony/sessions" => Some(Filter::ExtensionSessions),
        "presence" => Some(Filter::Presence {
            query: query.to_string(),
        }),
        _ => None,
    }
}

/// A filter as the subscription and its notifications name it (with real ids).
fn filter_event(sub: &Subscription, filter: &Filter) -> String {
    let account = format!("/restapi/v1.0/account/{}", sub.account_id);
    match filter {
        Filter::ExtensionSessions => {
            format!("{account}/extension/{}/telephony/sessions", sub.user_id)
        }
        Filter::AccountSessions => format!("{account}/telephony/sessions"),
        Filter::Presence { query } if query.is_empty() => {
            format!("{account}/extension/{}/presence", sub.user_id)
        }
        Filter::Presence { query } => {
            format!("{account}/extension/{}/presence?{query}", sub.user_id)
        }
    }
}

fn transport_json(t: &Transport) -> Value {
    match t {
        Transport::WebHook { address, .. } => {
            json!({"transportType": "WebHook", "address": address, "encryption": false})
        }
        Transport::WebSocket { .. } => json!({"transportType": "WebSocket", "encryption": false}),
    }
}

/// The subscription's JSON.
pub fn render(sub: &Subscription) -> Value {
    let now = now_ms();
    json!({
        "id": sub.id,
        "uri": format!("/restapi/v1.0/subscription/{}", sub.id),
        "creationTime": iso(sub.created_ms),
        "status": "Active",
        "eventFilters": sub.filters.iter().map(|f| filter_event(sub, f)).collect::<Vec<_>>(),
        "expirationTime": iso(sub.expires_ms),
        "expiresIn": ((sub.expires_ms - now) / 1000).max(0),
        "deliveryMode": transport_json(&sub.transport),
    })
}

/// Writes a WebHook subscription through to the store (WebSocket ones are not stored).
pub(crate) async fn persist(state: &RcState, sub: &Subscription) -> Result<()> {
    let Transport::WebHook {
        address,
        verification_token,
    } = &sub.transport
    else {
        return Ok(());
    };
    let filters: Vec<String> = sub.filters.iter().map(|f| filter_event(sub, f)).collect();
    let row = RcSubscription {
        id: sub.id.clone(),
        account_id: sub.account_id.clone(),
        user_id: sub.user_id.clone(),
        event_filters: serde_json::to_string(&filters)
            .map_err(|e| RcError::Internal(format!("cannot encode the event filters: {e}")))?,
        address: address.clone(),
        verification_token: verification_token.clone(),
        created_ms: sub.created_ms,
        expires_ms: sub.expires_ms,
    };
    state.engine.store().save_rc_subscription(&row).await?;
    Ok(())
}

/// The stored WebHook subscriptions, back in the registry (at start).
async fn restore(engine: &Engine, registry: &Registry) {
    let rows = match engine.store().live_rc_subscriptions(now_ms()).await {
        Ok(rows) => rows,
        Err(e) => {
            warn!(error = %e, "cannot load the stored RingCentral subscriptions");
            return;
        }
    };
    let mut restored = 0;
    for row in rows {
        let raw: Vec<String> = match serde_json::from_str(&row.event_filters) {
            Ok(raw) => raw,
            Err(e) => {
                warn!(subscription = %row.id, error = %e, "stored subscription unreadable; skipped");
                continue;
            }
        };
        let filters: Option<Vec<Filter>> = raw
            .iter()
            .map(|f| parse_filter_of(&row.account_id, &row.user_id, f))
            .collect();
        let Some(filters) = filters.filter(|f| !f.is_empty()) else {
            warn!(subscription = %row.id, "stored subscription has unknown filters; skipped");
            continue;
        };
        let sub = Subscription {
            id: row.id,
            account_id: row.account_id,
            user_id: row.user_id,
            filters,
            transport: Transport::WebHook {
                address: row.address,
                verification_token: row.verification_token,
            },
            created_ms: row.created_ms,
            expires_ms: row.expires_ms,
        };
        match registry.insert(sub) {
            Ok(()) => restored += 1,
            Err(e) => warn!(error = %e, "stored subscription not restored"),
        }
    }
    if restored > 0 {
        info!(restored, "RingCentral WebHook subscriptions restored");
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeliveryModeBody {
    transport_type: String,
    address: Option<String>,
    verification_token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SubscriptionBody {
    event_filters: Option<Vec<String>>,
    delivery_mode: Option<DeliveryModeBody>,
    expires_in: Option<i64>,
}

fn filters(auth: &RcUser, raw: &[String]) -> Result<Vec<Filter>> {
    if raw.is_empty() || raw.len() > MAX_FILTERS {
        return Err(RcError::invalid(
            "eventFilters",
            format!("Give 1 to {MAX_FILTERS} event filters"),
        ));
    }
    raw.iter()
        .map(|f| {
            parse_filter(auth, f).ok_or_else(|| {
                RcError::invalid(
                    "eventFilters",
                    format!("Event filter [{f}] is not supported (telephony/sessions and presence of this extension or account are)"),
                )
            })
        })
        .collect()
}

/// The filters a PUT body sets (None: it sets none).
pub(crate) fn refilter(auth: &RcUser, req: &SubscriptionBody) -> Result<Option<Vec<Filter>>> {
    req.event_filters
        .as_deref()
        .map(|raw| filters(auth, raw))
        .transpose()
}

/// The expiry a body asks for.
pub(crate) fn expiry_of(req: &SubscriptionBody) -> i64 {
    expiry(req.expires_in)
}

fn expiry(expires_in: Option<i64>) -> i64 {
    let secs = match expires_in {
        Some(s) if s > 0 => s.min(MAX_EXPIRES_IN),
        _ => DEFAULT_EXPIRES_IN,
    };
    now_ms() + secs * 1000
}

/// Creates a subscription from a body (the REST route and the WebSocket's `ClientRequest`).
/// `websocket`: the connection's frame queue, for `transportType: WebSocket`.
pub(crate) async fn create(
    state: &RcState,
    auth: &RcUser,
    req: SubscriptionBody,
    websocket: Option<(String, mpsc::Sender<String>)>,
) -> Result<Subscription> {
    let filters = filters(auth, req.event_filters.as_deref().unwrap_or_default())?;
    let mode = req
        .delivery_mode
        .ok_or_else(|| RcError::invalid("deliveryMode", "Parameter [deliveryMode] is required"))?;
    let transport = match (mode.transport_type.as_str(), websocket) {
        ("WebHook", _) => {
            let address = mode
                .address
                .filter(|a| !a.trim().is_empty())
                .ok_or_else(|| {
                    RcError::invalid("deliveryMode.address", "Parameter [address] is required")
                })?;
            check_address(state, &address).await?;
            validate_webhook(&state.delivery, &address).await?;
            Transport::WebHook {
                address,
                verification_token: mode.verification_token,
            }
        }
        ("WebSocket", Some((connection, frames))) => Transport::WebSocket { connection, frames },
        ("WebSocket", None) => {
            return Err(RcError::invalid(
                "deliveryMode.transportType",
                "WebSocket subscriptions are made over the WebSocket (POST /restapi/oauth/wstoken)",
            ))
        }
        (other, _) => {
            return Err(RcError::invalid(
                "deliveryMode.transportType",
                format!("Transport type [{other}] is not supported (WebHook, WebSocket are)"),
            ))
        }
    };
    let sub = Subscription {
        id: uuid::Uuid::new_v4().to_string(),
        account_id: auth.account.id.clone(),
        user_id: auth.user.id.clone(),
        filters,
        transport,
        created_ms: now_ms(),
        expires_ms: expiry(req.expires_in),
    };
    state.subscriptions.insert(sub.clone())?;
    if let Err(e) = persist(state, &sub).await {
        state.subscriptions.remove(&sub.user_id, &sub.id);
        return Err(e);
    }
    info!(subscription = %sub.id, user = %auth.user.extension, "RingCentral subscription created");
    Ok(sub)
}

/// A WebHook address a user names must obey the server's outbound policy (the audio fetch
/// policy, docs/security.md): http(s), every address its host resolves to allowed (never
/// link-local/metadata or the server's own listeners; private ones only with
/// `security.fetch_private`).
async fn check_address(state: &RcState, address: &str) -> Result<()> {
    let refused = |why: &str| {
        RcError::invalid(
            "deliveryMode.address",
            format!("WebHook address [{address}] is not allowed: {why}"),
        )
    };
    let url = reqwest::Url::parse(address).map_err(|_| refused("not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(refused("only http and https"));
    }
    let host = url.host_str().ok_or_else(|| refused("no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = url.port_or_known_default().unwrap_or(80);
    let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|_| refused("the host does not resolve"))?
        .collect();
    if addrs.is_empty() {
        return Err(refused("the host does not resolve"));
    }
    for addr in addrs {
        state.engine.media_connect_allowed(addr).map_err(refused)?;
    }
    Ok(())
}

/// The WebHook handshake: a POST with `Validation-Token` that the receiver must answer with
/// 200 and the same header.
async fn validate_webhook(delivery: &Delivery, address: &str) -> Result<()> {
    let token = uuid::Uuid::new_v4().to_string();
    let mut request = Request::post_form(address, vec![], "rc_validation");
    request.body = Body::Empty;
    request.signature = Signature::Token {
        name: "Validation-Token",
        value: token.clone(),
    };
    let refused = |why: String| {
        RcError::invalid(
            "deliveryMode.address",
            format!("WebHook validation failed: {why}"),
        )
    };
    let reply = delivery
        .send(&request)
        .await
        .map_err(|e| refused(e.to_string()))?;
    let echoed = reply
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("validation-token"))
        .map(|(_, v)| v.as_str());
    if reply.status != 200 || echoed != Some(token.as_str()) {
        return Err(refused(
            "the address must answer 200 with the Validation-Token header it was sent".into(),
        ));
    }
    Ok(())
}

/// `POST /restapi/v1.0/subscription`.
pub(crate) async fn create_route(
    State(state): State<RcState>,
    auth: RcUser,
    payload: Bytes,
) -> Result<Response> {
    let req: SubscriptionBody = body(
        &payload,
        r#"{"eventFilters": ["/restapi/v1.0/account/~/extension/~/telephony/sessions"], "deliveryMode": {"transportType": "WebHook", "address": "https://..."}}"#,
    )?;
    let sub = create(&state, &auth, req, None).await?;
    Ok(Json(render(&sub)).into_response())
}

/// `GET /restapi/v1.0/subscription`.
pub(crate) async fn list(State(state): State<RcState>, auth: RcUser) -> Response {
    let records: Vec<Value> = state
        .subscriptions
        .of_user(&auth.user.id)
        .iter()
        .map(render)
        .collect();
    Json(json!({ "records": records })).into_response()
}

fn found(state: &RcState, auth: &RcUser, id: &str) -> Result<Subscription> {
    state
        .subscriptions
        .get(&auth.user.id, id)
        .ok_or(RcError::NotFound("subscriptionId"))
}

/// `GET /restapi/v1.0/subscription/{id}`.
pub(crate) async fn get_one(
    State(state): State<RcState>,
    auth: RcUser,
    Path(id): Path<String>,
) -> Result<Response> {
    Ok(Json(render(&found(&state, &auth, &id)?)).into_response())
}

/// `PUT /restapi/v1.0/subscription/{id}` (`eventFilters`, `expiresIn`; a WebHook's address
/// is validated again when it changes).
pub(crate) async fn update(
    State(state): State<RcState>,
    auth: RcUser,
    Path(id): Path<String>,
    payload: Bytes,
) -> Result<Response> {
    let mut sub = found(&state, &auth, &id)?;
    let req: SubscriptionBody = body(&payload, r#"{"eventFilters": [...], "expiresIn": 900}"#)?;
    if let Some(raw) = &req.event_filters {
        sub.filters = filters(&auth, raw)?;
    }
    if let (Some(mode), Transport::WebHook { address, .. }) = (&req.delivery_mode, &sub.transport) {
        if let Some(new) = mode.address.as_ref().filter(|a| *a != address) {
            check_address(&state, new).await?;
            validate_webhook(&state.delivery, new).await?;
            sub.transport = Transport::WebHook {
                address: new.clone(),
                verification_token: mode.verification_token.clone(),
            };
        }
    }
    sub.expires_ms = expiry(req.expires_in);
    persist(&state, &sub).await?;
    state.subscriptions.update(sub.clone());
    Ok(Json(render(&sub)).into_response())
}

/// `POST /restapi/v1.0/subscription/{id}/renew`.
pub(crate) async fn renew(
    State(state): State<RcState>,
    auth: RcUser,
    Path(id): Path<String>,
) -> Result<Response> {
    let mut sub = found(&state, &auth, &id)?;
    sub.expires_ms = expiry(Some((sub.expires_ms - sub.created_ms) / 1000));
    persist(&state, &sub).await?;
    state.subscriptions.update(sub.clone());
    Ok(Json(render(&sub)).into_response())
}

/// `DELETE /restapi/v1.0/subscription/{id}` -> 204.
pub(crate) async fn delete(
    State(state): State<RcState>,
    auth: RcUser,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    if state.subscriptions.remove(&auth.user.id, &id) {
        state.engine.store().delete_rc_subscription(&id).await?;
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(RcError::NotFound("subscriptionId"))
    }
}

// ---------------------------------------------------------------------------------------------
// The dispatcher

/// What the dispatcher remembers of a call: the parties as last notified.
#[derive(Default)]
struct Track {
    sequence: u64,
    parties: Vec<(LegInfo, PartyStatus, bool)>,
}

/// One party's change, ready to send.
struct Change {
    owner: Option<String>,
    party: Value,
}

/// The parties of `call` whose status or mute changed since `track` (legs that left are
/// `Disconnected`); updates `track`.
fn changes(track: &mut Track, call: &CallInfo, ended: bool, parked: bool) -> Vec<Change> {
    let mut out = Vec::new();
    let mut now: Vec<(LegInfo, PartyStatus, bool)> = Vec::new();
    for leg in &call.legs {
        let status = if ended {
            PartyStatus::Disconnected
        } else {
            model::party_status(call, leg, parked)
        };
        now.push((leg.clone(), status, leg.muted));
    }
    for (leg, status, muted) in &now {
        let before = track.parties.iter().find(|(l, _, _)| l.id == leg.id);
        if before.is_some_and(|(_, s, m)| s == status && m == muted) {
            continue;
        }
        let mut party = model::party(call, leg, parked, None);
        party.status.code = *status;
        out.push(Change {
            owner: leg.owner_user_id.clone(),
            party: serde_json::to_value(&party).unwrap_or(Value::Null),
        });
    }
    for (leg, status, _) in &track.parties {
        if *status != PartyStatus::Disconnected && !now.iter().any(|(l, _, _)| l.id == leg.id) {
            let mut party = model::party(call, leg, parked, None);
            party.status.code = PartyStatus::Disconnected;
            out.push(Change {
                owner: leg.owner_user_id.clone(),
                party: serde_json::to_value(&party).unwrap_or(Value::Null),
            });
        }
    }
    track.parties = now;
    out
}

/// Sends one notification over the subscription's transport (in order per subscription).
fn deliver(
    delivery: &Delivery,
    registry: &Registry,
    sub: &Subscription,
    event: String,
    body: Value,
) {
    let envelope = json!({
        "uuid": uuid::Uuid::new_v4().to_string(),
        "event": event,
        "timestamp": iso(now_ms()),
        "subscriptionId": sub.id,
        "ownerId": sub.user_id,
        "body": body,
    });
    match &sub.transport {
        Transport::WebHook {
            address,
            verification_token,
        } => {
            let mut request = Request::post_form(address, vec![], "rc_notification");
            request.body = Body::Json(envelope);
            if let Some(token) = verification_token {
                request.signature = Signature::Token {
                    name: "Verification-Token",
                    value: token.clone(),
                };
            }
            let d = delivery.clone();
            delivery.enqueue(
                &format!("rc-sub-{}", sub.id),
                Box::pin(async move {
                    let _ = d.send(&request).await;
                }),
            );
        }
        Transport::WebSocket { connection, frames } => {
            let frame = json!([{"type": "ServerNotification"}, envelope]).to_string();
            if let Err(e) = frames.try_send(frame) {
                match e {
                    mpsc::error::TrySendError::Full(_) => {
                        warn!(subscription = %sub.id, "WebSocket too slow: notification dropped")
                    }
                    mpsc::error::TrySendError::Closed(_) => registry.remove_connection(connection),
                }
            }
        }
    }
}

/// Starts the dispatcher (once per server).
pub fn spawn(engine: Engine, delivery: Delivery, registry: Arc<Registry>, stop: CancellationToken) {
    let mut rx = engine.events().subscribe_all();
    tokio::spawn(async move {
        restore(&engine, &registry).await;
        let mut tracks: HashMap<String, Track> = HashMap::new();
        let mut presence: HashMap<String, String> = HashMap::new();
        loop {
            let event = tokio::select! {
                _ = stop.cancelled() => return,
                e = rx.recv() => e,
            };
            match event {
                // A party joining or leaving a session's own mixer (supervisor, bring-in) is a
                // change of that session's parties; other conferences have no notifications.
                Ok(hookflash_engine::BusEvent::Conference(conf)) => {
                    if let Some(event) = super::supervise::session_change(&engine, &conf) {
                        dispatch(
                            &engine,
                            &delivery,
                            &registry,
                            &mut tracks,
                            &mut presence,
                            &event,
                        )
                        .await
                    }
                }
                Ok(hookflash_engine::BusEvent::Call(event)) => {
                    dispatch(
                        &engine,
                        &delivery,
                        &registry,
                        &mut tracks,
                        &mut presence,
                        &event,
                    )
                    .await
                }
                Err(RecvError::Lagged(n)) => {
                    warn!(
                        missed = n,
                        "RingCentral notifications lagged behind the event bus"
                    )
                }
                Err(RecvError::Closed) => return,
            }
            if tracks.len() > MAX_TRACKED_CALLS {
                let live: Vec<String> = engine.active_calls().into_iter().map(|c| c.id).collect();
                tracks.retain(|id, _| live.contains(id));
            }
        }
    });
}

async fn dispatch(
    engine: &Engine,
    delivery: &Delivery,
    registry: &Registry,
    tracks: &mut HashMap<String, Track>,
    presence: &mut HashMap<String, String>,
    event: &Event,
) {
    let ended = event.kind == EventKind::Ended;
    // The parties the session gained (supervisor, brought-in parties) count as its parties.
    let mut with_extras = event.call.clone();
    if !ended {
        with_extras
            .legs
            .extend(super::supervise::extra_parties_of(engine, &event.call).await);
    }
    let call = &with_extras;
    let parked = !ended && parked_in(engine, call);
    let (changed, mut sequence) = {
        let track = tracks.entry(call.id.clone()).or_default();
        let changed = changes(track, call, ended, parked);
        let first = track.sequence;
        track.sequence += changed.len() as u64;
        (changed, first)
    };
    if ended {
        tracks.remove(&call.id);
    }
    if changed.is_empty() {
        return;
    }
    let subs = registry.of_account(&call.account_id);
    if subs.is_empty() {
        return;
    }
    for change in &changed {
        sequence += 1;
        for sub in &subs {
            for filter in &sub.filters {
                let wanted = match filter {
                    Filter::ExtensionSessions => change.owner.as_deref() == Some(&sub.user_id),
                    Filter::AccountSessions => change.owner.is_some(),
                    Filter::Presence { .. } => false,
                };
                if !wanted {
                    continue;
                }
                let body = json!({
                    "sequence": sequence,
                    "sessionId": model::numeric_session_id(&call.id),
                    "telephonySessionId": call.id,
                    "serverId": "hookflash",
                    "eventTime": iso(event.at_ms),
                    "accountId": call.account_id,
                    "extensionId": sub.user_id,
                    "parties": [change.party],
                    "origin": {"type": "Call"},
                });
                debug!(subscription = %sub.id, sequence, "RingCentral telephony notification");
                deliver(delivery, registry, sub, filter_event(sub, filter), body);
            }
        }
    }
    // Presence: the owners whose telephony status changed.
    let mut owners: Vec<&str> = changed.iter().filter_map(|c| c.owner.as_deref()).collect();
    owners.dedup();
    for owner in owners {
        let wants: Vec<&Subscription> = subs
            .iter()
            .filter(|s| {
                s.user_id == owner
                    && s.filters
                        .iter()
                        .any(|f| matches!(f, Filter::Presence { .. }))
            })
            .collect();
        let store = engine.store();
        let (Ok(Some(user)), Ok(Some(account))) = (
            store.user_by_id(owner).await,
            store.account_by_id(&call.account_id).await,
        ) else {
            continue;
        };
        let body = presence_body(engine, &account, &user);
        let tel = body["telephonyStatus"]
            .as_str()
            .unwrap_or("NoCall")
            .to_string();
        let before = presence
            .get(owner)
            .cloned()
            .unwrap_or_else(|| "NoCall".into());
        if before == tel {
            continue;
        }
        if tel == "NoCall" {
            presence.remove(owner);
        } else {
            presence.insert(owner.to_string(), tel);
        }
        for sub in wants {
            for filter in sub
                .filters
                .iter()
                .filter(|f| matches!(f, Filter::Presence { .. }))
            {
                let mut body = body.clone();
                body["sequence"] = json!(event.seq);
                deliver(delivery, registry, sub, filter_event(sub, filter), body);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::model::fixtures::call;
    use super::*;
    use hookflash_engine::{LegInfo, LegRole, LegState};

    fn leg(id: &str, state: LegState) -> LegInfo {
        super::super::model::fixtures::leg(id, LegRole::Caller, state, Some("u1"))
    }

    #[test]
    fn one_change_per_party_whose_status_changed() {
        let mut t = Track::default();
        let c1 = call(vec![leg("x", LegState::Proceeding)]);
        assert_eq!(changes(&mut t, &c1, false, false).len(), 1);
        assert_eq!(changes(&mut t, &c1, false, false).len(), 0);
        let c2 = call(vec![
            leg("x", LegState::Answered),
            leg("y", LegState::Ringing),
        ]);
        let ch = changes(&mut t, &c2, false, false);
        assert_eq!(ch.len(), 2);
        assert_eq!(ch[0].party["status"]["code"], "Answered");
        assert_eq!(ch[1].party["status"]["code"], "Proceeding");
        let c3 = call(vec![leg("x", LegState::Answered)]);
        let ch = changes(&mut t, &c3, false, false);
        // x's peer left (y Disconnected) and x is no longer "holding".
        assert!(ch
            .iter()
            .any(|c| c.party["id"] == "y" && c.party["status"]["code"] == "Disconnected"));
        let ch = changes(&mut t, &c3, true, false);
        assert_eq!(ch.len(), 1);
        assert_eq!(ch[0].party["status"]["code"], "Disconnected");
    }
}
