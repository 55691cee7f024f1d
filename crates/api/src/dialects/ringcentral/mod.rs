//! The RingCentral dialect: OAuth (`/restapi/oauth/token`, `/restapi/oauth/revoke`), account,
//! extension, device and presence information, and Call Control (telephony sessions and their
//! parties, call-out) under `/restapi/v1.0/...`. Thin: parse the vendor's request, call the
//! engine's command set, render the vendor's response. Identity comes from the Bearer token
//! alone: every route acts for the extension (user) the token was issued to.

pub mod account;
mod answer_reply_bridge;
pub mod error;
pub mod model;
pub mod oauth;
mod parties;
mod sessions;
pub mod subscriptions;
mod supervise;
pub mod ws;

use std::sync::Arc;

use axum::routing::{get, patch, post};
use axum::Router;
use hookflash_engine::Engine;

pub use oauth::{issue_jwt_credential, OAuthLifetimes};

use crate::user_token::KeyCell;
use crate::AppState;

/// What the RingCentral handlers use, taken from the server-wide [`AppState`].
#[derive(Clone)]
pub struct RcState {
    pub engine: Engine,
    pub(crate) guard: Arc<crate::guard::AuthGuard>,
    /// The JWT credentials' signing key.
    pub(crate) jwt_keys: Arc<KeyCell>,
    pub lifetimes: OAuthLifetimes,
    /// The webhook client (WebHook subscriptions).
    pub delivery: hookflash_apps::Delivery,
    /// Live subscriptions, shared with the notification dispatcher.
    pub subscriptions: Arc<subscriptions::Registry>,
    /// WebSocket tokens and connections.
    pub(crate) gateway: Arc<ws::Gateway>,
}

/// Unix milliseconds now.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Unix seconds now.
pub(crate) fn now_secs() -> i64 {
    now_ms() / 1000
}

const SESSION: &str = "/restapi/v1.0/account/{account}/telephony/sessions/{sid}";
const PARTY: &str = "/restapi/v1.0/account/{account}/telephony/sessions/{sid}/parties/{pid}";

pub fn router(shared: &AppState) -> Router {
    let state = RcState {
        engine: shared.engine.clone(),
        guard: shared.guard.clone(),
        jwt_keys: Arc::new(KeyCell::named(oauth::JWT_SECRET_NAME)),
        lifetimes: shared.oauth_lifetimes,
        delivery: shared.delivery.clone(),
        subscriptions: shared.rc_subscriptions.clone(),
        gateway: Arc::new(ws::Gateway::default()),
    };
    let party = |action: &str| format!("{PARTY}/{action}");
    Router::new()
        .route("/restapi/oauth/token", post(oauth::token))
        .route("/restapi/oauth/revoke", post(oauth::revoke))
        .route("/restapi/oauth/wstoken", post(ws::wstoken))
        .route(ws::WS_PATH, get(ws::connect))
        .route(
            "/restapi/v1.0/subscription",
            post(subscriptions::create_route).get(subscriptions::list),
        )
        .route(
            "/restapi/v1.0/subscription/{id}",
            get(subscriptions::get_one)
                .put(subscriptions::update)
                .delete(subscriptions::delete),
        )
        .route(
            "/restapi/v1.0/subscription/{id}/renew",
            post(subscriptions::renew),
        )
        .route("/restapi/v1.0/account/{account}", get(account::account))
        .route(
            "/restapi/v1.0/account/{account}/extension/{ext}",
            get(account::extension),
        )
        .route(
            "/restapi/v1.0/account/{account}/extension/{ext}/device",
            get(account::devices),
        )
        .route(
            "/restapi/v1.0/account/{account}/extension/{ext}/presence",
            get(account::presence),
        )
        .route(
            "/restapi/v1.0/account/{account}/telephony/call-out",
            post(sessions::call_out),
        )
        .route(
            SESSION,
            get(sessions::get_session).delete(sessions::delete_session),
        )
        .route(
            PARTY,
            get(parties::get_party)
                .patch(parties::patch_party)
                .delete(parties::delete_party),
        )
        .route(
            &format!("{SESSION}/supervise"),
            post(supervise::supervise_session),
        )
        .route(
            &format!("{SESSION}/parties/bring-in"),
            post(supervise::bring_in),
        )
        .route(&party("supervise"), post(supervise::supervise_party))
        .route(&party("hold"), post(parties::hold))
        .route(&party("unhold"), post(parties::unhold))
        .route(&party("transfer"), post(parties::transfer))
        .route(&party("forward"), post(parties::forward))
        .route(&party("reject"), post(parties::reject))
        .route(&party("ignore"), post(parties::ignore))
        .route(&party("flip"), post(parties::flip))
        .route(&party("park"), post(parties::park))
        .route(&party("answer"), post(answer_reply_bridge::answer))
        .route(&party("pickup"), post(answer_reply_bridge::pickup))
        .route(&party("reply"), post(answer_reply_bridge::reply))
        .route(&party("bridge"), post(answer_reply_bridge::bridge))
        .route(&party("recordings"), post(parties::start_recording))
        .route(&party("recordings/{rid}"), patch(parties::update_recording))
        .with_state(state)
}
