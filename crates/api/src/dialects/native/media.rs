//! Audio into a running call: announcements (every party, or one leg), whisper (one leg, the
//! other party hears silence meanwhile) and DTMF to one leg's phone. Each handler is one engine
//! command.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use hookflash_engine::{AudioSource, Target};
use serde::Deserialize;
use tracing::info;

use crate::body::parse_json;
use crate::native::auth::ApiAccount;
use crate::native::doc::{AudioRequestDoc, WhisperRequestDoc};
use crate::native::error::{ErrorBody, NativeError};
use crate::native::model::DtmfRequest;
use crate::AppState;

type Result<T> = std::result::Result<T, NativeError>;

/// What to play: a WAV at `url` (any sample rate, channels, 8–32-bit), or `text` spoken by the
/// built-in text-to-speech in `voice`. Exactly one of `url` and `text`. (Its OpenAPI schema is
/// [`AudioRequestDoc`] / [`WhisperRequestDoc`].)
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudioRequest {
    pub url: Option<String>,
    pub text: Option<String>,
    pub voice: Option<String>,
    /// Announcements only: play to this leg alone instead of to every party.
    pub leg_id: Option<String>,
}

fn source(req: &AudioRequest) -> Result<AudioSource> {
    match (&req.url, &req.text) {
        (Some(url), None) => Ok(AudioSource::Url(url.clone())),
        (None, Some(text)) if !text.trim().is_empty() => Ok(AudioSource::Tts {
            text: text.clone(),
            voice: req.voice.clone(),
        }),
        _ => Err(NativeError::BadRequest(
            "give exactly one of `url` and a non-empty `text`".into(),
        )),
    }
}

fn request(body: &[u8]) -> Result<AudioRequest> {
    parse_json::<AudioRequest>(body).map_err(NativeError::BadRequest)
}

/// Plays audio to every party of the call (or to `leg_id` only); while it plays, they hear it
/// instead of each other. Answers once playback has started; an unreachable URL or a body that
/// is not audio is a 400 and the call is untouched.
#[utoipa::path(
    post,
    path = "/calls/{call_id}/announcements",
    tag = "calls",
    params(("call_id" = String, Path, description = "Call id")),
    request_body = AudioRequestDoc,
    responses(
        (status = 202, description = "Playing"),
        (status = 400, body = ErrorBody, description = "`invalid_request`: a body the schema does not allow, or audio that cannot be used (unreachable URL, not a WAV, too large, unknown voice)"),
        (status = 404, body = ErrorBody, description = "`not_found`: no such call (or `leg_id`) in this account"),
        (status = 409, body = ErrorBody, description = "`wrong_state`: the call is not answered"),
    )
)]
pub(crate) async fn announce(
    State(state): State<AppState>,
    auth: ApiAccount,
    Path(call_id): Path<String>,
    body: Bytes,
) -> Result<StatusCode> {
    let req = request(&body)?;
    let source = source(&req)?;
    let target = req.leg_id.clone().map(Target::Leg).unwrap_or(Target::Call);
    state
        .engine
        .announce(&auth.account_id, &call_id, target, source)
        .await?;
    info!(call_id, "announcement via the native API");
    Ok(StatusCode::ACCEPTED)
}

/// Plays a prompt to one leg only; the other party hears silence from it meanwhile, and both
/// are reconnected when the prompt ends.
#[utoipa::path(
    post,
    path = "/calls/{call_id}/legs/{leg_id}/whisper",
    tag = "calls",
    params(
        ("call_id" = String, Path, description = "Call id"),
        ("leg_id" = String, Path, description = "The leg that hears the prompt"),
    ),
    request_body = WhisperRequestDoc,
    responses(
        (status = 202, description = "Playing"),
        (status = 400, body = ErrorBody, description = "`invalid_request`: a body the schema does not allow (also `leg_id` in it), or audio that cannot be used (unreachable URL, not a WAV, too large, unknown voice)"),
        (status = 404, body = ErrorBody, description = "`not_found`: no such call or leg in this account"),
        (status = 409, body = ErrorBody, description = "`wrong_state`: the call is not answered"),
    )
)]
pub(crate) async fn whisper(
    State(state): State<AppState>,
    auth: ApiAccount,
    Path((call_id, leg_id)): Path<(String, String)>,
    body: Bytes,
) -> Result<StatusCode> {
    let req = request(&body)?;
    if req.leg_id.is_some() {
        return Err(NativeError::BadRequest(
            "`leg_id` is part of the path for whisper".into(),
        ));
    }
    let source = source(&req)?;
    state
        .engine
        .whisper(&auth.account_id, &call_id, &leg_id, source)
        .await?;
    info!(call_id, leg_id, "whisper via the native API");
    Ok(StatusCode::ACCEPTED)
}

/// Sends DTMF digits to the phone on `leg_id`: RFC 4733 telephone-events (100 ms per digit
/// with end packets, 60 ms apart) when that leg negotiated them, else SIP INFO
/// (`application/dtmf-relay`). Answers once the digits are queued.
#[utoipa::path(
    post,
    path = "/calls/{call_id}/legs/{leg_id}/dtmf",
    tag = "calls",
    params(
        ("call_id" = String, Path, description = "Call id"),
        ("leg_id" = String, Path, description = "The leg whose phone receives the digits"),
    ),
    request_body = DtmfRequest,
    responses(
        (status = 202, description = "Sending"),
        (status = 400, body = ErrorBody, description = "`invalid_request`: bad body, or a character outside 0-9 * # A-D"),
        (status = 404, body = ErrorBody, description = "`not_found`: no such call or leg in this account"),
        (status = 409, body = ErrorBody, description = "`wrong_state`: the call is not answered, or the leg has no dialog to send SIP INFO on"),
    )
)]
pub(crate) async fn send_dtmf(
    State(state): State<AppState>,
    auth: ApiAccount,
    Path((call_id, leg_id)): Path<(String, String)>,
    body: Bytes,
) -> Result<StatusCode> {
    let req: DtmfRequest = parse_json(&body).map_err(NativeError::BadRequest)?;
    state
        .engine
        .send_dtmf(&auth.account_id, &call_id, &leg_id, &req.digits)
        .await?;
    info!(call_id, leg_id, digits = %req.digits, "DTMF via the native API");
    Ok(StatusCode::ACCEPTED)
}
