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
//!
//! In a cluster (`[cluster] nats_url`) two dispatchers run ([`Audience`]): the WebHook one
//! reads this node's own calls' events (`subscribe_all`) and delivers to every WebHook
//! subscription of the account in the shared store, so each notification leaves the cluster
//! once, from the node that owns the call; the store's subscriptions are read again on every
//! subscription request and, while there is something to deliver, when this node's copy is
//! older than [`SYNC_INTERVAL_MS`] (a subscription made, renewed or deleted on another node
//! reaches this node's deliveries within that). The WebSocket one reads every node's events
//! (`subscribe_every_node`, in the account's cluster-wide order) for the WebSocket
//! subscriptions of this node's connections.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hookflash_apps::delivery::{Body, Request, Signature};
use hookflash_apps::Delivery;
use hookflash_engine::{CallInfo, Engine, Event, EventKind, LegInfo};
use hookflash_store::{RcSubscription, StoreError};
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
/// Cluster mode: how old this node's copy of the stored WebHook subscriptions may be when it
/// has notifications to deliver (then it reads the store again: at most once per interval).
pub const SYNC_INTERVAL_MS: i64 = 1000;

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

/// Every live subscription (in a cluster: this node's WebSocket ones and its copy of the
/// stored WebHook ones).
#[derive(Default)]
pub struct Registry {
    subs: Mutex<HashMap<String, Subscription>>,
    /// Changes made here (counted under the lock): a read of the store that one of them
    /// overtook is not applied ([`Registry::replace_webhooks`]).
    writes: AtomicU64,
    /// Cluster mode: when the WebHook subscriptions were last read from the store (unix ms).
    synced_ms: AtomicI64,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Subscription>> {
        match self.subs.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn wrote(&self) {
        self.writes.fetch_add(1, Ordering::SeqCst);
    }

    /// Whether `user_id` may have one more subscription.
    fn room_for(subs: &mut HashMap<String, Subscription>, user_id: &str) -> Result<()> {
        let now = now_ms();
        subs.retain(|_, s| s.expires_ms > now);
        if subs.len() >= MAX_TOTAL
            || subs.values().filter(|s| s.user_id == user_id).count() >= MAX_PER_EXTENSION
        {
            return Err(RcError::TooManyRequests(format!(
                "Too many subscriptions (at most {MAX_PER_EXTENSION} per extension)"
            )));
        }
        Ok(())
    }

    /// Whether `user_id` may have one more subscription (checked again by `insert`).
    pub fn check_room(&self, user_id: &str) -> Result<()> {
        Self::room_for(&mut self.lock(), user_id)
    }

    /// Adds a subscription within the limits.
    pub fn insert(&self, sub: Subscription) -> Result<()> {
        let mut subs = self.lock();
        Self::room_for(&mut subs, &sub.user_id)?;
        subs.insert(sub.id.clone(), sub);
        self.wrote();
        Ok(())
    }

    /// Cluster mode: replaces the WebHook subscriptions with `fresh` (the store's, read after
    /// `epoch` = [`Registry::epoch`]), unless a change made here since then could be missing
    /// from it (false: read again later). WebSocket subscriptions stay.
    fn replace_webhooks(&self, fresh: Vec<Subscription>, epoch: u64, read_ms: i64) -> bool {
        let mut subs = self.lock();
        if self.writes.load(Ordering::SeqCst) != epoch {
            return false;
        }
        subs.retain(|_, s| !matches!(s.transport, Transport::WebHook { .. }));
        for sub in fresh {
            subs.insert(sub.id.clone(), sub);
        }
        self.synced_ms.store(read_ms, Ordering::SeqCst);
        true
    }

    fn epoch(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }

    /// True when the copy of the stored subscriptions is older than [`SYNC_INTERVAL_MS`].
    fn stale(&self, now: i64) -> bool {
        now - self.synced_ms.load(Ordering::SeqCst) >= SYNC_INTERVAL_MS
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
        let mut subs = self.lock();
        subs.insert(sub.id.clone(), sub);
        self.wrote();
    }

    pub fn remove(&self, user_id: &str, id: &str) -> bool {
        let mut subs = self.lock();
        if subs.get(id).is_some_and(|s| s.user_id == user_id) {
            subs.remove(id);
            self.wrote();
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

/// A stored WebHook subscription as the registry holds it (None: unreadable, logged).
fn from_stored(row: RcSubscription) -> Option<Subscription> {
    let raw: Vec<String> = match serde_json::from_str(&row.event_filters) {
        Ok(raw) => raw,
        Err(e) => {
            warn!(subscription = %row.id, error = %e, "stored subscription unreadable; skipped");
            return None;
        }
    };
    let filters: Option<Vec<Filter>> = raw
        .iter()
        .map(|f| parse_filter_of(&row.account_id, &row.user_id, f))
        .collect();
    let Some(filters) = filters.filter(|f| !f.is_empty()) else {
        warn!(subscription = %row.id, "stored subscription has unknown filters; skipped");
        return None;
    };
    Some(Subscription {
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
    })
}

/// The stored WebHook subscriptions, back in the registry (at start; expired ones deleted).
async fn restore(engine: &Engine, registry: &Registry) {
    let rows = match engine.store().live_rc_subscriptions(now_ms()).await {
        Ok(rows) => rows,
        Err(e) => {
            warn!(error = %e, "cannot load the stored RingCentral subscriptions");
            return;
        }
    };
    let mut restored = 0;
    for sub in rows.into_iter().filter_map(from_stored) {
        match registry.insert(sub) {
            Ok(()) => restored += 1,
            Err(e) => warn!(error = %e, "stored subscription not restored"),
        }
    }
    if restored > 0 {
        info!(restored, "RingCentral WebHook subscriptions restored");
    }
}

/// Cluster mode: reads the store's WebHook subscriptions (every node's) into the registry.
async fn sync(engine: &Engine, registry: &Registry) -> std::result::Result<(), StoreError> {
    let epoch = registry.epoch();
    let now = now_ms();
    let rows = engine
        .store()
        .unexpired_rc_subscriptions(now, MAX_TOTAL)
        .await?;
    let fresh: Vec<Subscription> = rows.into_iter().filter_map(from_stored).collect();
    if !registry.replace_webhooks(fresh, epoch, now) {
        debug!("RingCentral subscriptions changed here while reading the store; read again later");
    }
    Ok(())
}

/// Before a subscription request is answered: in a cluster, the store's subscriptions (one
/// made, renewed or deleted on another node is found, or not, here too).
async fn current(state: &RcState) -> Result<()> {
    if state.engine.events().is_clustered() {
        sync(&state.engine, &state.subscriptions).await?;
    }
    Ok(())
}

/// The user's unexpired subscription `id` (in a cluster: as the store has it, for WebHooks).
pub(crate) async fn find(state: &RcState, user_id: &str, id: &str) -> Result<Subscription> {
    current(state).await?;
    state
        .subscriptions
        .get(user_id, id)
        .ok_or(RcError::NotFound("subscriptionId"))
}

/// The user's subscriptions, oldest first (in a cluster: the stored WebHook ones of every
/// node and this node's WebSocket ones).
pub(crate) async fn of_user(state: &RcState, user_id: &str) -> Result<Vec<Subscription>> {
    current(state).await?;
    Ok(state.subscriptions.of_user(user_id))
}

/// Deletes the user's subscription `id` (the store's row first, then this node's copy).
pub(crate) async fn remove(state: &RcState, user_id: &str, id: &str) -> Result<()> {
    find(state, user_id, id).await?;
    state.engine.store().delete_rc_subscription(id).await?;
    if state.subscriptions.remove(user_id, id) {
        Ok(())
    } else {
        Err(RcError::NotFound("subscriptionId"))
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
    // Stored first, then added here: a read of the store (cluster) that started before the
    // row existed is not applied over it (`Registry::replace_webhooks`).
    current(state).await?;
    state.subscriptions.check_room(&sub.user_id)?;
    persist(state, &sub).await?;
    if let Err(e) = state.subscriptions.insert(sub.clone()) {
        if matches!(sub.transport, Transport::WebHook { .. }) {
            state.engine.store().delete_rc_subscription(&sub.id).await?;
        }
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
pub(crate) async fn list(State(state): State<RcState>, auth: RcUser) -> Result<Response> {
    let records: Vec<Value> = of_user(&state, &auth.user.id)
        .await?
        .iter()
        .map(render)
        .collect();
    Ok(Json(json!({ "records": records })).into_response())
}

async fn found(state: &RcState, auth: &RcUser, id: &str) -> Result<Subscription> {
    find(state, &auth.user.id, id).await
}

/// `GET /restapi/v1.0/subscription/{id}`.
pub(crate) async fn get_one(
    State(state): State<RcState>,
    auth: RcUser,
    Path(id): Path<String>,
) -> Result<Response> {
    Ok(Json(render(&found(&state, &auth, &id).await?)).into_response())
}

/// `PUT /restapi/v1.0/subscription/{id}` (`eventFilters`, `expiresIn`; a WebHook's address
/// is validated again when it changes).
pub(crate) async fn update(
    State(state): State<RcState>,
    auth: RcUser,
    Path(id): Path<String>,
    payload: Bytes,
) -> Result<Response> {
    let mut sub = found(&state, &auth, &id).await?;
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
    let mut sub = found(&state, &auth, &id).await?;
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
    remove(&state, &auth.user.id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------------------------------
// The dispatcher

/// What the dispatcher remembers of a call: the parties as last notified.
#[derive(Default)]
struct Track {
    sequence: u64,
    parties: Vec<(LegInfo, PartyStatus, bool)>,
    /// Parked, as the call's events say (used for other nodes' calls).
    parked: bool,
}

impl Track {
    /// Follows the park state through the call's events: parked from `parked` until it is
    /// taken (`unparked`), rings or is answered again (the parker called back), or ends.
    fn follow_park(&mut self, kind: EventKind) {
        match kind {
            EventKind::Parked => self.parked = true,
            EventKind::Unparked | EventKind::Ringing | EventKind::Answered | EventKind::Ended => {
                self.parked = false
            }
            EventKind::New
            | EventKind::Held
            | EventKind::Retrieved
            | EventKind::Muted
            | EventKind::Unmuted
            | EventKind::Dtmf
            | EventKind::RecordingStarted
            | EventKind::RecordingStopped
            | EventKind::Forwarded
            | EventKind::Voicemail
            | EventKind::TransferStarted
            | EventKind::TransferRinging
            | EventKind::TransferConsulting
            | EventKind::Transferred
            | EventKind::TransferFailed => {}
        }
    }
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

/// Which subscriptions a dispatcher serves, from which events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Audience {
    /// One node: every subscription, from every event (all calls are this node's).
    Every,
    /// Cluster: the WebHook subscriptions (the store's, every node's), from the events of
    /// this node's own calls: each notification leaves the cluster once, from the call's owner.
    WebHooks,
    /// Cluster: the WebSocket subscriptions of this node's connections, from every node's
    /// events in the account's cluster-wide order.
    WebSockets,
}

impl Audience {
    fn serves(self, transport: &Transport) -> bool {
        match (self, transport) {
            (Audience::Every, Transport::WebHook { .. } | Transport::WebSocket { .. }) => true,
            (Audience::WebHooks, Transport::WebHook { .. }) => true,
            (Audience::WebSockets, Transport::WebSocket { .. }) => true,
            (Audience::WebHooks, Transport::WebSocket { .. })
            | (Audience::WebSockets, Transport::WebHook { .. }) => false,
        }
    }
}

/// Starts the dispatcher (once per server; two in a cluster, see [`Audience`]).
pub fn spawn(engine: Engine, delivery: Delivery, registry: Arc<Registry>, stop: CancellationToken) {
    let events = engine.events();
    if events.is_clustered() {
        let own = events.subscribe_all();
        let every = events.subscribe_every_node();
        tokio::spawn(run(
            engine.clone(),
            delivery.clone(),
            registry.clone(),
            stop.clone(),
            own,
            Audience::WebHooks,
        ));
        tokio::spawn(run(
            engine,
            delivery,
            registry,
            stop,
            every,
            Audience::WebSockets,
        ));
    } else {
        let rx = events.subscribe_all();
        tokio::spawn(run(engine, delivery, registry, stop, rx, Audience::Every));
    }
}

/// What one dispatcher keeps and uses.
struct Dispatcher {
    engine: Engine,
    delivery: Delivery,
    registry: Arc<Registry>,
    audience: Audience,
    tracks: HashMap<String, Track>,
    presence: HashMap<String, String>,
}

async fn run(
    engine: Engine,
    delivery: Delivery,
    registry: Arc<Registry>,
    stop: CancellationToken,
    mut rx: tokio::sync::broadcast::Receiver<hookflash_engine::BusEvent>,
    audience: Audience,
) {
    match audience {
        Audience::Every => restore(&engine, &registry).await,
        Audience::WebHooks => {
            restore(&engine, &registry).await;
            if let Err(e) = sync(&engine, &registry).await {
                warn!(error = %e, "cannot read the stored RingCentral subscriptions");
            }
        }
        Audience::WebSockets => {}
    }
    let mut d = Dispatcher {
        engine,
        delivery,
        registry,
        audience,
        tracks: HashMap::new(),
        presence: HashMap::new(),
    };
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return,
            e = rx.recv() => e,
        };
        match event {
            // A party joining or leaving a session's own mixer (supervisor, bring-in) is a
            // change of that session's parties; other conferences have no notifications.
            Ok(hookflash_engine::BusEvent::Conference(conf)) => {
                if let Some(event) = super::supervise::session_change(&d.engine, &conf) {
                    d.dispatch(&event).await
                }
            }
            Ok(hookflash_engine::BusEvent::Call(event)) => d.dispatch(&event).await,
            Err(RecvError::Lagged(n)) => {
                warn!(
                    missed = n,
                    ?audience,
                    "RingCentral notifications lagged behind the event bus"
                )
            }
            Err(RecvError::Closed) => return,
        }
        if d.tracks.len() > MAX_TRACKED_CALLS {
            let live: Vec<String> = d.engine.active_calls().into_iter().map(|c| c.id).collect();
            let events = d.engine.events();
            d.tracks
                .retain(|id, _| live.contains(id) || events.remote_call(id).is_some());
        }
    }
}

impl Dispatcher {
    async fn dispatch(&mut self, event: &Event) {
        let engine = &self.engine;
        let ended = event.kind == EventKind::Ended;
        // The parties the session gained (supervisor, brought-in parties) count as its parties
        // (known on the node that owns the session's mixer only).
        let mut with_extras = event.call.clone();
        if !ended {
            with_extras
                .legs
                .extend(super::supervise::extra_parties_of(engine, &event.call).await);
        }
        let call = &with_extras;
        // Another node's call: parked as its events say (the orbits are the owner's).
        let remote = engine.events().remote_call(&call.id).is_some();
        let (changed, mut sequence) = {
            let track = self.tracks.entry(call.id.clone()).or_default();
            track.follow_park(event.kind);
            let parked = !ended
                && if remote {
                    track.parked
                } else {
                    parked_in(engine, call)
                };
            let changed = changes(track, call, ended, parked);
            let first = track.sequence;
            track.sequence += changed.len() as u64;
            (changed, first)
        };
        if ended {
            self.tracks.remove(&call.id);
        }
        if changed.is_empty() {
            return;
        }
        if self.audience == Audience::WebHooks && self.registry.stale(now_ms()) {
            if let Err(e) = sync(engine, &self.registry).await {
                warn!(error = %e, "cannot read the stored RingCentral subscriptions; using the last read");
            }
        }
        let audience = self.audience;
        let subs: Vec<Subscription> = self
            .registry
            .of_account(&call.account_id)
            .into_iter()
            .filter(|s| audience.serves(&s.transport))
            .collect();
        if subs.is_empty() {
            return;
        }
        let (delivery, registry) = (&self.delivery, &*self.registry);
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
            let before = self
                .presence
                .get(owner)
                .cloned()
                .unwrap_or_else(|| "NoCall".into());
            if before == tel {
                continue;
            }
            if tel == "NoCall" {
                self.presence.remove(owner);
            } else {
                self.presence.insert(owner.to_string(), tel);
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
}

#[cfg(test)]
mod tests {
    use super::super::model::fixtures::call;
    use super::*;
    use hookflash_engine::{LegInfo, LegRole, LegState};

    fn leg(id: &str, state: LegState) -> LegInfo {
        super::super::model::fixtures::leg(id, LegRole::Caller, state, Some("u1"))
    }

    fn sub(id: &str, user: &str, transport: Transport) -> Subscription {
        Subscription {
            id: id.into(),
            account_id: "a1".into(),
            user_id: user.into(),
            filters: vec![Filter::ExtensionSessions],
            transport,
            created_ms: now_ms(),
            expires_ms: now_ms() + 60_000,
        }
    }

    fn hook(address: &str) -> Transport {
        Transport::WebHook {
            address: address.into(),
            verification_token: None,
        }
    }

    fn ids(registry: &Registry) -> Vec<String> {
        let mut ids: Vec<String> = registry
            .of_account("a1")
            .into_iter()
            .map(|s| s.id)
            .collect();
        ids.sort();
        ids
    }

    #[test]
    fn a_read_of_the_store_replaces_the_webhooks_unless_a_change_here_overtook_it() {
        let registry = Registry::default();
        let (frames, _rx) = mpsc::channel(1);
        let ws = Transport::WebSocket {
            connection: "ws-1".into(),
            frames,
        };
        registry.insert(sub("ws", "u1", ws)).unwrap();
        registry
            .insert(sub("old", "u1", hook("http://h/1")))
            .unwrap();
        assert!(registry.stale(now_ms()), "never read from the store");
        // The store's set (another node deleted "old" and made "new"): the WebSocket one stays.
        let epoch = registry.epoch();
        let read_at = now_ms();
        assert!(registry.replace_webhooks(
            vec![sub("new", "u2", hook("http://h/2"))],
            epoch,
            read_at
        ));
        assert_eq!(ids(&registry), ["new", "ws"]);
        assert!(!registry.stale(read_at));
        assert!(registry.stale(read_at + SYNC_INTERVAL_MS));
        // A read that began before a change made here is not applied (it may lack it).
        let epoch = registry.epoch();
        registry
            .insert(sub("mine", "u1", hook("http://h/3")))
            .unwrap();
        assert!(!registry.replace_webhooks(Vec::new(), epoch, now_ms()));
        assert_eq!(ids(&registry), ["mine", "new", "ws"]);
        let epoch = registry.epoch();
        assert!(registry.remove("u1", "mine"));
        assert!(!registry.replace_webhooks(vec![sub("mine", "u1", hook("http://h/3"))], epoch, 0));
        assert_eq!(ids(&registry), ["new", "ws"]);
    }

    #[test]
    fn in_a_cluster_webhooks_and_websockets_have_their_own_dispatcher() {
        let (frames, _rx) = mpsc::channel(1);
        let ws = Transport::WebSocket {
            connection: "ws-1".into(),
            frames,
        };
        let wh = hook("http://h/1");
        assert!(Audience::Every.serves(&ws) && Audience::Every.serves(&wh));
        assert!(Audience::WebHooks.serves(&wh) && !Audience::WebHooks.serves(&ws));
        assert!(Audience::WebSockets.serves(&ws) && !Audience::WebSockets.serves(&wh));
    }

    #[test]
    fn another_nodes_call_is_parked_as_its_events_say() {
        let mut t = Track::default();
        t.follow_park(EventKind::Answered);
        assert!(!t.parked);
        t.follow_park(EventKind::Parked);
        t.follow_park(EventKind::Dtmf);
        assert!(t.parked);
        t.follow_park(EventKind::Unparked);
        assert!(!t.parked);
        t.follow_park(EventKind::Parked);
        t.follow_park(EventKind::Ringing);
        assert!(!t.parked, "the parker is called back");
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
