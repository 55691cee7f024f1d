//! The api19 / RestComm dialect (`/call/2012-04-24`, also `/calls/2012-04-24` and
//! `/restcomm/2012-04-24`): live calls under `Accounts/{AccountSid}/Calls` (create with an
//! RCML `Url`, list, get, modify). `.json` paths answer JSON, others XML. Thin: parse the
//! vendor's form, call the engine and the application runtime, render RestComm's resource.
//!
//! Auth: HTTP Basic `AccountSid:AuthToken` (the AuthToken is a native API key of the
//! account) or the API key as the user name with an empty password. AccountSid is `AC` + the
//! account id's hex digits, CallSid `CA` + the leg id's (`hookflash_apps::rcml::sids`).
//! `Recordings/{RecordingSid}(.wav)` serves the audio RCML `<Record>` reports as
//! `RecordingUrl`. `Conferences` lists the account's running conferences and their calls
//! (participant `Mute`), see `conferences.rs`.

mod auth;
mod calls;
mod conferences;
pub mod error;
pub mod recordings;
mod render;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::OriginalUri;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use hookflash_engine::Engine;

use crate::AppState;

pub use auth::Api19Account;
use error::Api19Error;
use render::Format;

/// A call created through this API (the engine does not keep which API made it).
#[derive(Debug, Clone)]
pub(crate) struct Created;

#[derive(Clone)]
pub struct Api19State {
    pub engine: Engine,
    pub(crate) guard: Arc<crate::guard::AuthGuard>,
    pub(crate) user_tokens: Arc<crate::user_token::KeyCell>,
    pub runtime: Option<hookflash_apps::Runtime>,
    /// Legs created through `POST .../Calls` while they live.
    created: Arc<Mutex<HashMap<String, Created>>>,
}

impl Api19State {
    pub fn new(shared: &AppState) -> Self {
        Api19State {
            engine: shared.engine.clone(),
            guard: shared.guard.clone(),
            user_tokens: shared.user_tokens.clone(),
            runtime: shared.runtime.clone(),
            created: Arc::default(),
        }
    }

    fn created(&self) -> MutexGuard<'_, HashMap<String, Created>> {
        match self.created.lock() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        }
    }
}

/// Paths under `Conference/` (singular) name nothing (after authentication, so an outsider
/// learns nothing).
async fn no_conferences(_acct: Api19Account, OriginalUri(uri): OriginalUri) -> Response {
    Api19Error::NotFound("no such resource: conferences are under Conferences/".into())
        .render(Format::of_path(uri.path()))
        .into_response()
}

pub fn router(shared: &AppState) -> Router {
    let state = Api19State::new(shared);
    let mut r = Router::new();
    for base in [
        "/call/2012-04-24",
        "/calls/2012-04-24",
        "/restcomm/2012-04-24",
    ] {
        let acc = format!("{base}/Accounts/{{account_sid}}");
        r = r
            .route(
                &format!("{acc}/Calls"),
                get(calls::list).post(calls::create),
            )
            .route(
                &format!("{acc}/Calls.json"),
                get(calls::list).post(calls::create),
            )
            // `{call_sid}` may end in `.json` (the format comes from the path).
            .route(
                &format!("{acc}/Calls/{{call_sid}}"),
                get(calls::get_one).post(calls::modify),
            )
            // The RestComm SDK's legacy form.
            .route(
                &format!("{acc}/Calls.json/{{call_sid}}"),
                get(calls::get_one).post(calls::modify),
            )
            // `{recording_sid}` may end in `.wav`.
            .route(
                &format!("{acc}/Recordings/{{recording_sid}}"),
                get(recordings::audio),
            )
            .route(
                &format!("{acc}/Conferences"),
                get(conferences::list_conferences),
            )
            .route(
                &format!("{acc}/Conferences.json"),
                get(conferences::list_conferences),
            )
            // `{conference_sid}` and `{call_sid}` may end in `.json`.
            .route(
                &format!("{acc}/Conferences/{{conference_sid}}"),
                get(conferences::get_conference),
            )
            .route(
                &format!("{acc}/Conferences/{{conference_sid}}/Participants"),
                get(conferences::list_participants),
            )
            .route(
                &format!("{acc}/Conferences/{{conference_sid}}/Participants.json"),
                get(conferences::list_participants),
            )
            .route(
                &format!("{acc}/Conferences/{{conference_sid}}/Participants/{{call_sid}}"),
                get(conferences::get_participant).post(conferences::modify_participant),
            )
            .route(&format!("{acc}/Conference/{{*rest}}"), any(no_conferences));
    }
    r.with_state(state)
}
