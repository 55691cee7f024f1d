//! Call recording: start/stop/pause/resume a call's recording (one engine command), and the
//! account's recordings — list, metadata, and the stereo WAV (left = caller's leg, right =
//! callee's leg).

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use axum::Json;
use hookflash_engine::RecordAction;
use serde::Deserialize;
use tracing::info;
use utoipa::IntoParams;

use crate::body::parse_json;
use crate::native::auth::ApiAccount;
use crate::native::doc::{RecordingRequestDoc, WavBody};
use crate::native::error::{ErrorBody, NativeError};
use crate::native::model::{Call, Recording, RecordingList};
use crate::wav;
use crate::AppState;

type Result<T> = std::result::Result<T, NativeError>;

/// Recordings listed when no `limit` is given, and the most one request lists.
pub const DEFAULT_LIMIT: i64 = 100;
pub const MAX_LIMIT: i64 = 1000;

/// What to do with the call's recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordingAction {
    /// Start a stereo recording (left: the caller's leg, right: the callee's leg).
    Start,
    /// Stop it; the file is complete and can be downloaded.
    Stop,
    /// Write silence instead of the call's audio until `resume` (the file keeps the call's
    /// timeline).
    Pause,
    Resume,
}

/// `POST /calls/{call_id}/recording` body (its OpenAPI schema is [`RecordingRequestDoc`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingRequest {
    pub action: RecordingAction,
    /// With `start` only: every party first hears "This call is being recorded."
    #[serde(default)]
    pub announcement: bool,
}

/// Query of `GET /recordings`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RecordingsQuery {
    /// Only the recordings of this call.
    pub call_id: Option<String>,
    /// At most this many (default 100, at most 1000), newest first.
    #[param(minimum = 1, maximum = 1000, nullable = false)]
    pub limit: Option<i64>,
}

/// Starts, stops, pauses or resumes the call's recording. Starting while recording, or
/// stopping/pausing/resuming without one, is a 409.
#[utoipa::path(
    post,
    path = "/calls/{call_id}/recording",
    tag = "recordings",
    params(("call_id" = String, Path, description = "Call id")),
    request_body = RecordingRequestDoc,
    responses(
        (status = 200, body = Call, description = "The call after the change (`recording` shows the state)"),
        (status = 400, body = ErrorBody, description = "`invalid_request`: a body the schema does not allow (e.g. `announcement` without `start`), or the announcement cannot be synthesized"),
        (status = 404, body = ErrorBody, description = "`not_found`: no such call in this account"),
        (status = 409, body = ErrorBody, description = "`wrong_state`: not answered, already recording, or not recording"),
    )
)]
pub(crate) async fn record(
    State(state): State<AppState>,
    auth: ApiAccount,
    Path(call_id): Path<String>,
    body: Bytes,
) -> Result<Json<Call>> {
    let req: RecordingRequest = parse_json(&body).map_err(NativeError::BadRequest)?;
    let action = match req.action {
        RecordingAction::Start => RecordAction::Start {
            announcement: req.announcement,
        },
        _ if req.announcement => {
            return Err(NativeError::BadRequest(
                "`announcement` is only possible with `start`".into(),
            ))
        }
        RecordingAction::Stop => RecordAction::Stop,
        RecordingAction::Pause => RecordAction::Pause,
        RecordingAction::Resume => RecordAction::Resume,
    };
    let call = state
        .engine
        .record(&auth.account_id, &call_id, action)
        .await?;
    info!(call_id, action = ?req.action, "recording via the native API");
    Ok(Json(Call::from(&call)))
}

/// The account's recordings, newest first (of one call with `call_id`).
#[utoipa::path(
    get,
    path = "/recordings",
    tag = "recordings",
    params(RecordingsQuery),
    responses(
        (status = 200, body = RecordingList, description = "The recordings, newest first"),
        (status = 400, body = ErrorBody, description = "`invalid_request`: a query the schema does not allow (unknown parameter, `limit` not 1-1000)"),
    )
)]
pub(crate) async fn list_recordings(
    State(state): State<AppState>,
    auth: ApiAccount,
    RawQuery(query): RawQuery,
) -> Result<Json<RecordingList>> {
    let q: RecordingsQuery = match query.as_deref() {
        None | Some("") => RecordingsQuery::default(),
        Some(q) => serde_urlencoded::from_str(q)
            .map_err(|e| NativeError::BadRequest(format!("invalid query: {e}")))?,
    };
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(NativeError::BadRequest(format!(
            "`limit` must be between 1 and {MAX_LIMIT}"
        )));
    }
    let rows = state
        .engine
        .store()
        .recordings(&auth.account_id, q.call_id.as_deref(), limit)
        .await?;
    Ok(Json(RecordingList {
        recordings: rows.iter().map(Recording::from).collect(),
    }))
}

async fn find(state: &AppState, account_id: &str, id: &str) -> Result<hookflash_store::Recording> {
    state
        .engine
        .store()
        .recording(account_id, id)
        .await?
        .ok_or_else(|| NativeError::NotFound("no such recording".into()))
}

/// One recording's metadata.
#[utoipa::path(
    get,
    path = "/recordings/{recording_id}",
    tag = "recordings",
    params(("recording_id" = String, Path, description = "Recording id")),
    responses(
        (status = 200, body = Recording, description = "The recording"),
        (status = 404, body = ErrorBody, description = "`not_found`: no such recording in this account"),
    )
)]
pub(crate) async fn get_recording(
    State(state): State<AppState>,
    auth: ApiAccount,
    Path(id): Path<String>,
) -> Result<Json<Recording>> {
    let rec = find(&state, &auth.account_id, &id).await?;
    Ok(Json(Recording::from(&rec)))
}

/// The recording's audio: a stereo 16-bit 8 kHz WAV (left = the caller's leg, right = the
/// callee's leg). Available once the recording has stopped (or was repaired after a crash).
#[utoipa::path(
    get,
    path = "/recordings/{recording_id}/audio",
    tag = "recordings",
    params(("recording_id" = String, Path, description = "Recording id")),
    responses(
        (status = 200, body = WavBody, description = "The WAV file", content_type = "audio/wav"),
        (status = 404, body = ErrorBody, description = "`not_found`: no such recording in this account, or its file is gone"),
        (status = 409, body = ErrorBody, description = "`wrong_state`: still recording"),
    )
)]
pub(crate) async fn recording_audio(
    State(state): State<AppState>,
    auth: ApiAccount,
    Path(id): Path<String>,
) -> Result<Response> {
    let rec = find(&state, &auth.account_id, &id).await?;
    Ok(wav::response(&rec).await?)
}
