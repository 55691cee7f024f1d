//! The native API under `/api/v1`: calls and legs (list, get, hang up, hold, mute) and the
//! call event stream (SSE, resumable by sequence number). API-key bearer auth. Every route is
//! registered through `utoipa_axum::routes!`, so the OpenAPI document served at
//! `/api/v1/openapi.json` is generated from the routes themselves.

mod applications;
pub mod auth;
mod calls;
mod conference_media;
mod conferences;
mod doc;
pub mod error;
mod events;
mod media;
pub mod model;
mod originate;
mod park;
mod queues;
mod recordings;
mod ringing;
mod supervise;
mod transfer;
mod voicemail;

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;

pub const PREFIX: &str = "/api/v1";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "hookflash native API",
        description = "Live call control: list calls, hang up, hold/retrieve and mute/unmute \
                       calls and legs; announcements, whisper, DTMF and recording; the \
                       recordings; a resumable event stream; the account's applications (call hooks) and the \
                       numbers routed to them. Errors are \
                       `{\"error\": {\"code\", \"message\"}}`.",
        license(name = "MIT")
    ),
    modifiers(&BearerAuth),
    components(schemas(model::CallEvent, model::Gap)),
    security(("api_key" = [])),
    tags((name = "calls", description = "Calls and their legs"),
         (name = "recordings", description = "Call recordings (stereo WAV)"),
         (name = "voicemail", description = "Users' mailboxes, greetings and voicemail messages"),
         (name = "forwardings", description = "Users' flip targets (numbers a call can be moved to)"),
         (name = "events", description = "Call event stream"),
         (name = "account", description = "The API key's account"),
         (name = "applications", description = "Applications (call hooks) and the numbers routed to them"),
         (name = "queues", description = "Call queues (jambonz enqueue/dequeue) and their waiting callers"),
         (name = "meta", description = "This document"))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key of the account (`hookflash apikey create`)",
                    ))
                    .build(),
            ),
        );
    }
}

/// The native API's routes with their OpenAPI description (paths include the `/api/v1`
/// prefix).
pub fn router() -> OpenApiRouter<AppState> {
    let inner = OpenApiRouter::new()
        .routes(routes!(calls::list_calls, originate::originate_call))
        .routes(routes!(calls::get_call, calls::hangup_call))
        .routes(routes!(calls::hold_call))
        .routes(routes!(calls::unhold_call))
        .routes(routes!(calls::update_leg, calls::hangup_leg))
        .routes(routes!(calls::hold_leg))
        .routes(routes!(calls::unhold_leg))
        .routes(routes!(calls::mute_leg))
        .routes(routes!(calls::unmute_leg))
        .routes(routes!(media::announce))
        .routes(routes!(media::whisper))
        .routes(routes!(media::send_dtmf))
        .routes(routes!(transfer::transfer_call))
        .routes(routes!(transfer::complete_transfer))
        .routes(routes!(transfer::cancel_transfer))
        .routes(routes!(transfer::flip_call))
        .routes(routes!(transfer::bridge_calls))
        .routes(routes!(ringing::forward_call))
        .routes(routes!(ringing::reject_call))
        .routes(routes!(ringing::ignore_call))
        .routes(routes!(park::park_call))
        .routes(routes!(park::unpark_call))
        .routes(routes!(park::list_parks))
        .routes(routes!(recordings::record))
        .routes(routes!(recordings::list_recordings))
        .routes(routes!(recordings::get_recording))
        .routes(routes!(recordings::recording_audio))
        .routes(routes!(voicemail::get_mailbox, voicemail::put_mailbox))
        .routes(routes!(voicemail::put_greeting, voicemail::delete_greeting))
        .routes(routes!(voicemail::list_voicemail))
        .routes(routes!(
            voicemail::get_voicemail,
            voicemail::delete_voicemail
        ))
        .routes(routes!(voicemail::voicemail_audio))
        .routes(routes!(
            voicemail::get_forwardings,
            voicemail::put_forwardings
        ))
        .routes(routes!(queues::list_queues))
        .routes(routes!(conferences::list_conferences))
        .routes(routes!(conferences::get_conference))
        .routes(routes!(conferences::add_participant))
        .routes(routes!(
            conferences::update_participant,
            conferences::remove_participant
        ))
        .routes(routes!(
            conferences::join_conference,
            conferences::update_conference_leg,
            conferences::leave_conference
        ))
        .routes(routes!(
            conference_media::start_recording,
            conference_media::stop_recording
        ))
        .routes(routes!(conference_media::announce))
        .routes(routes!(
            supervise::start_supervision,
            supervise::update_supervision,
            supervise::end_supervision
        ))
        .routes(routes!(supervise::list_parties, supervise::add_party))
        .routes(routes!(supervise::remove_party))
        .routes(routes!(events::event_stream))
        .routes(routes!(applications::get_account))
        .routes(routes!(
            applications::list_applications,
            applications::create_application
        ))
        .routes(routes!(
            applications::get_application,
            applications::put_application,
            applications::delete_application
        ))
        .routes(routes!(
            applications::list_numbers,
            applications::add_number
        ))
        .routes(routes!(applications::remove_number))
        .routes(routes!(openapi_json));
    OpenApiRouter::with_openapi(ApiDoc::openapi()).nest(PREFIX, inner)
}

/// The generated OpenAPI document, with the responses every authenticated route shares
/// (added once the routes are in it).
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = router().into_openapi();
    doc::CommonResponses.modify(&mut doc);
    doc
}

/// The OpenAPI document (JSON).
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    security(()),
    responses((status = 200, description = "This OpenAPI 3.1 document", content_type = "application/json"))
)]
async fn openapi_json() -> impl IntoResponse {
    static DOC: OnceLock<String> = OnceLock::new();
    let body = DOC.get_or_init(|| {
        openapi()
            .to_pretty_json()
            .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    });
    ([(header::CONTENT_TYPE, "application/json")], body.as_str())
}
