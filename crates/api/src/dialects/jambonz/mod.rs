//! The jambonz dialect (`/v1/...`, as the jambonz api-server and `@jambonz/node-client`
//! speak it): live calls (`/v1/Accounts/{account_sid}/Calls`: create, list, retrieve, update,
//! delete), applications (`/v1/Accounts/{account_sid}/Applications` and `/v1/Applications`)
//! and the phone numbers routed to them (`/v1/PhoneNumbers`). Thin: parse the vendor's
//! request, call the engine and the application runtime, render the vendor's response.
//!
//! A jambonz "call" is one leg of an engine call; its `call_sid` is the leg's id. Auth is
//! `Authorization: Bearer <API key>` (the account's native API keys); `{account_sid}` in a
//! path must be the key's account id, else 403 `{"msg": "insufficient privileges"}` (what
//! the api-server's account permission check answers).

mod applications;
mod auth;
mod calls;
pub mod error;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::routing::get;
use axum::Router;
use hookflash_engine::Engine;

use crate::AppState;

pub use auth::JambonzAccount;

/// What the jambonz handlers use, taken from the server-wide [`AppState`] when the router is
/// built.
#[derive(Clone)]
pub struct JambonzState {
    pub engine: Engine,
    pub(crate) guard: Arc<crate::guard::AuthGuard>,
    pub(crate) user_tokens: Arc<crate::user_token::KeyCell>,
    pub runtime: Option<hookflash_apps::Runtime>,
    /// Calls created through `POST .../Calls` while they live: call sid -> what the engine
    /// does not keep (the application they run).
    created: Arc<Mutex<HashMap<String, calls::Created>>>,
}

impl JambonzState {
    pub fn new(shared: &AppState) -> Self {
        JambonzState {
            engine: shared.engine.clone(),
            guard: shared.guard.clone(),
            user_tokens: shared.user_tokens.clone(),
            runtime: shared.runtime.clone(),
            created: Arc::default(),
        }
    }

    fn created(&self) -> MutexGuard<'_, HashMap<String, calls::Created>> {
        match self.created.lock() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        }
    }
}

pub fn router(shared: &AppState) -> Router {
    let state = JambonzState::new(shared);
    let calls_path = "/v1/Accounts/{account_sid}/Calls";
    let call_path = "/v1/Accounts/{account_sid}/Calls/{call_sid}";
    let apps_path = "/v1/Accounts/{account_sid}/Applications";
    let app_path = "/v1/Accounts/{account_sid}/Applications/{application_sid}";
    Router::new()
        .route(calls_path, get(calls::list).post(calls::create))
        // The node-client lists with a trailing slash.
        .route(
            "/v1/Accounts/{account_sid}/Calls/",
            get(calls::list).post(calls::create),
        )
        .route(
            call_path,
            get(calls::retrieve)
                .put(calls::update)
                .post(calls::update)
                .delete(calls::delete),
        )
        .route(
            apps_path,
            get(applications::list).post(applications::create),
        )
        .route(
            "/v1/Accounts/{account_sid}/Applications/",
            get(applications::list).post(applications::create),
        )
        .route(
            app_path,
            get(applications::retrieve)
                .put(applications::update)
                .delete(applications::delete),
        )
        .route(
            "/v1/Applications",
            get(applications::list).post(applications::create),
        )
        .route(
            "/v1/Applications/",
            get(applications::list).post(applications::create),
        )
        .route(
            "/v1/Applications/{application_sid}",
            get(applications::retrieve)
                .put(applications::update)
                .delete(applications::delete),
        )
        .route(
            "/v1/PhoneNumbers",
            get(applications::list_numbers).post(applications::create_number),
        )
        .route(
            "/v1/PhoneNumbers/",
            get(applications::list_numbers).post(applications::create_number),
        )
        .route(
            "/v1/PhoneNumbers/{phone_number_sid}",
            get(applications::retrieve_number).delete(applications::delete_number),
        )
        .with_state(state)
}
