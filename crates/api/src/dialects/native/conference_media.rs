//! A conference's recording (the full mix as one WAV, listed and downloaded with the call
//! recordings) and announcements (into the mix for everybody, or to one participant). Each
//! handler is one engine command (`engine/src/conference_media.rs`).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use hookflash_engine::{AudioSource, CommandError};
use serde::Deserialize;
use tracing::info;

use crate::body::parse_json;
use crate::native::auth::ApiAccount;
use crate::native::doc::ConferenceAnnouncementDoc;
use crate::native::error::{ErrorBody, NativeError};
use crate::native::model::Recording;
use crate::AppState;

type Result<T> = std::result::Result<T, NativeError>;

/// `POST /conferences/{name}/announcements` body (its OpenAPI schema is
/// [`ConferenceAnnouncementDoc`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConferenceAnnouncement {
    pub url: Option<String>,
    pub text: Option<String>,
    pub voice: Option<String>,
    pub participant_id: Option<String>,
}

/// "No such conference or participant", not the engine's "no such call".
fn not_found(e: CommandError) -> NativeError {
    match e {
        CommandError::NotFound => {
            NativeError::NotFound("no such conference or participant in this account".into())
        }
        other => other.into(),
    }
}

/// Starts recording the conference's mix (every participant heard, and announcements into
/// it) as one WAV: the call recordings' format (8 kHz 16-bit stereo, the mix on both
/// channels), listed under `/recordings` with `call_id` = the conference's id, downloaded at
/// `audio_url` once stopped. It stops on `DELETE` or when the conference ends.
#[utoipa::path(
    post,
    path = "/conferences/{name}/recording",
    tag = "conferences",
    params(("name" = String, Path, description = "Conference name")),
    responses(
        (status = 201, body = Recording, description = "Recording (`state` `recording`)"),
        (status = 404, body = ErrorBody, description = "`not_found`: no such conference in this account"),
        (status = 409, body = ErrorBody, description = "`wrong_state`: the conference is being recorded already"),
    )
)]
pub(crate) async fn start_recording(
    State(state): State<AppState>,
    auth: ApiAccount,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<Recording>)> {
    let r = state
        .engine
        .conference_record(&auth.account_id, &name, true)
        .await
        .map_err(not_found)?;
    info!(conference = %name, recording = %r.id, "conference recording started");
    Ok((StatusCode::CREATED, Json(Recording::from(&r))))
}

/// Stops the conference's recording; the WAV is complete when this answers.
#[utoipa::path(
    delete,
    path = "/conferences/{name}/recording",
    tag = "conferences",
    params(("name" = String, Path, description = "Conference name")),
    responses(
        (status = 200, body = Recording, description = "The finished recording (`state` `complete`)"),
        (status = 404, body = ErrorBody, description = "`not_found`: no such conference in this account"),
        (status = 409, body = ErrorBody, description = "`wrong_state`: the conference is not being recorded"),
    )
)]
pub(crate) async fn stop_recording(
    State(state): State<AppState>,
    auth: ApiAccount,
    Path(name): Path<String>,
) -> Result<Json<Recording>> {
    let r = state
        .engine
        .conference_record(&auth.account_id, &name, false)
        .await
        .map_err(not_found)?;
    info!(conference = %name, recording = %r.id, "conference recording stopped");
    Ok(Json(Recording::from(&r)))
}

/// Plays audio once into the conference: into the mix (every participant hearing the mix
/// hears it on top of the others, and a recording has it), or to `participant_id` alone.
/// Answers once it plays; an unreachable URL or a body that is not audio is a 400.
#[utoipa::path(
    post,
    path = "/conferences/{name}/announcements",
    tag = "conferences",
    params(("name" = String, Path, description = "Conference name")),
    request_body = ConferenceAnnouncementDoc,
    responses(
        (status = 202, description = "Playing"),
        (status = 400, body = ErrorBody, description = "`invalid_request`: a body the schema does not allow, or audio that cannot be used (unreachable URL, not a WAV, too large, unknown voice)"),
        (status = 404, body = ErrorBody, description = "`not_found`: no such conference (or participant) in this account"),
        (status = 409, body = ErrorBody, description = "`wrong_state`: the participant's phone still rings"),
    )
)]
pub(crate) async fn announce(
    State(state): State<AppState>,
    auth: ApiAccount,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<StatusCode> {
    let req: ConferenceAnnouncement = parse_json(&body).map_err(NativeError::BadRequest)?;
    let source = match (&req.url, &req.text) {
        (Some(url), None) => AudioSource::Url(url.clone()),
        (None, Some(text)) if !text.trim().is_empty() => AudioSource::Tts {
            text: text.clone(),
            voice: req.voice.clone(),
        },
        _ => {
            return Err(NativeError::BadRequest(
                "give exactly one of `url` and a non-empty `text`".into(),
            ))
        }
    };
    let seconds = state
        .engine
        .conference_announce(
            &auth.account_id,
            &name,
            req.participant_id.as_deref(),
            &source,
        )
        .await
        .map_err(not_found)?;
    info!(conference = %name, participant = ?req.participant_id, seconds, "conference announcement");
    Ok(StatusCode::ACCEPTED)
}
