//! The sipgate.io dialect: Real Time Call Manipulation (`/v2/calls/...`), click-to-dial
//! (`/v2/sessions/calls`), the call history
//! with recordings (`/v2/history`, `/v2/{userId}/history`, `/v2/recordings/{id}`), the
//! password-grant token endpoint (`/login/sipgate-apps/protocol/openid-connect/token`) and the
//! push API webhooks (`newCall`, `answer`, `hangup`, `dtmf`). Thin: parse the vendor's request, call the
//! engine's command set, render the vendor's response.

pub mod auth;
mod calls;
pub mod error;
pub(crate) mod history;
pub(crate) mod numbers;
mod sessions;
pub mod webhooks;

use std::sync::Arc;

use axum::routing::{delete, get, post, put};
use axum::Router;
use hookflash_engine::Engine;

use crate::user_token::KeyCell;
use crate::AppState;

/// What the sipgate handlers use, taken from the server-wide [`AppState`] when the router is
/// built; anything only sipgate needs goes here, not there.
#[derive(Clone)]
pub struct SipgateState {
    pub engine: Engine,
    pub(crate) keys: Arc<KeyCell>,
    pub(crate) guard: Arc<crate::guard::AuthGuard>,
}

/// Token endpoint path (Keycloak's, as api.sipgate.com serves it).
pub const TOKEN_PATH: &str = "/login/sipgate-apps/protocol/openid-connect/token";

pub fn router(shared: &AppState) -> Router {
    let state = SipgateState {
        engine: shared.engine.clone(),
        keys: shared.user_tokens.clone(),
        guard: shared.guard.clone(),
    };
    Router::new()
        .route(TOKEN_PATH, post(auth::token))
        .route("/v2/calls", get(calls::list))
        .route("/v2/sessions/calls", post(sessions::initiate))
        .route("/v2/calls/{call_id}", delete(calls::hangup))
        .route("/v2/calls/{call_id}/hold", put(calls::hold))
        .route("/v2/calls/{call_id}/muted", put(calls::muted))
        .route("/v2/calls/{call_id}/transfer", post(calls::transfer))
        .route("/v2/calls/{call_id}/recording", put(calls::recording))
        .route("/v2/calls/{call_id}/dtmf", post(calls::dtmf))
        .route(
            "/v2/calls/{call_id}/announcements",
            post(calls::announcements),
        )
        .route("/v2/history", get(history::history))
        .route("/v2/{user_id}/history", get(history::user_history))
        .route(
            "/v2/recordings/{recording_id}",
            get(history::recording_audio),
        )
        .with_state(state)
}
