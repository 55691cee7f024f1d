//! Voicemail and flip targets of the account's users (addressed by extension): a user's
//! mailbox (on/off, custom greeting), the messages left in the account's mailboxes (list,
//! metadata, WAV, delete), and a user's flip targets (the numbers a call in progress can be
//! moved to).

use std::collections::HashSet;
use std::path::{Path as FsPath, PathBuf};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use hookflash_media::wav::{encode_pcm16, Pcm16Spec};
use hookflash_store::normalize::number_digits;
use hookflash_store::{Forwarding, StoreError, User, VoicemailMessage};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use utoipa::{IntoParams, ToSchema};

use crate::body::parse_json;
use crate::native::auth::ApiAccount;
use crate::native::doc::WavBody;
use crate::native::error::{ErrorBody, ErrorDetail, NativeError};
use crate::wav;
use crate::AppState;

type Result<T> = std::result::Result<T, NativeError>;

/// Messages listed when no `limit` is given, and the most one request lists.
pub const DEFAULT_LIMIT: i64 = 100;
pub const MAX_LIMIT: i64 = 1000;
/// Largest greeting upload (the request body).
pub const MAX_GREETING_BYTES: usize = 10 << 20;
/// Longest greeting.
pub const MAX_GREETING_DURATION: Duration = Duration::from_secs(180);
/// Directory under the data directory that holds the greetings.
pub const GREETINGS_DIR: &str = "greetings";
/// Most flip targets per user.
pub const MAX_FORWARDINGS: usize = 10;
/// Longest flip id and label.
pub const MAX_FLIP_ID_LEN: usize = 16;
pub const MAX_LABEL_LEN: usize = 64;

/// Which greeting callers hear.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GreetingKind {
    /// The built-in text-to-speech greeting.
    Default,
    /// The uploaded WAV.
    Custom,
}

/// A user's mailbox.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MailboxView {
    /// Unanswered calls to the user go to voicemail.
    pub enabled: bool,
    pub greeting: GreetingKind,
}

/// `PUT /users/{extension}/voicemail` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MailboxUpdate {
    pub enabled: bool,
}

/// A message left in a user's mailbox.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Voicemail {
    pub id: String,
    /// The mailbox's user.
    pub user_extension: String,
    /// The call that left it.
    pub call_id: String,
    /// The caller's number or extension.
    pub caller: String,
    pub caller_name: Option<String>,
    /// `recording` (being left now), `complete` or `repaired` (finished after a server
    /// crash).
    pub state: String,
    /// Unix milliseconds.
    pub created_at_ms: i64,
    pub duration_ms: Option<i64>,
    /// Size of the WAV file.
    pub bytes: Option<i64>,
    /// Where the WAV is downloaded (same API key): `/api/v1/voicemail/{id}/audio`.
    pub audio_url: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VoicemailList {
    pub messages: Vec<Voicemail>,
}

/// Query of `GET /voicemail`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct VoicemailQuery {
    /// Only the messages of this user (extension).
    pub user: Option<String>,
    /// At most this many (default 100, at most 1000), newest first.
    #[param(minimum = 1, maximum = 1000, nullable = false)]
    pub limit: Option<i64>,
}

/// A flip target: a number a call in progress can be moved to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForwardingView {
    /// 1-16 characters from `[A-Za-z0-9_-]`, unique per user (e.g. `mobile`).
    #[schema(pattern = "^[A-Za-z0-9_-]{1,16}$", example = "mobile")]
    pub flip_id: String,
    /// 1-20 digits with an optional leading `+`; separators (space, `-`, `.`, `(`, `)`) are
    /// removed (stored and returned without them).
    #[schema(
        pattern = "^[ \\t\\r\\n]*\\+?[ .()-]*([0-9][ .()-]*){1,20}[ \\t\\r\\n]*$",
        example = "+49 170 1234567"
    )]
    pub number: String,
    /// At most 64 characters, no control characters; blank means none.
    #[serde(default)]
    #[schema(max_length = 64, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$")]
    pub label: Option<String>,
}

/// A user's flip targets (also the `PUT` body, which replaces them all).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForwardingList {
    /// At most 10, with different `flip_id`s.
    #[schema(max_items = 10)]
    pub forwardings: Vec<ForwardingView>,
}

/// Errors of the greeting upload: those of the native API, plus 413 for a body over
/// [`MAX_GREETING_BYTES`] (same JSON shape, code `payload_too_large`).
#[derive(Debug)]
pub(crate) enum UploadError {
    Native(NativeError),
    TooLarge,
}

impl From<NativeError> for UploadError {
    fn from(e: NativeError) -> Self {
        UploadError::Native(e)
    }
}

impl From<StoreError> for UploadError {
    fn from(e: StoreError) -> Self {
        UploadError::Native(e.into())
    }
}

impl IntoResponse for UploadError {
    fn into_response(self) -> Response {
        match self {
            UploadError::Native(e) => e.into_response(),
            UploadError::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                Json(ErrorBody {
                    error: ErrorDetail {
                        code: "payload_too_large".into(),
                        message: format!(
                            "the greeting must be at most {} bytes",
                            MAX_GREETING_BYTES
                        ),
                    },
                }),
            )
                .into_response(),
        }
    }
}

async fn find_user(state: &AppState, account_id: &str, extension: &str) -> Result<User> {
    state
        .engine
        .store()
        .user_by_extension(account_id, extension)
        .await?
        .ok_or_else(|| NativeError::NotFound(format!("no user with extension {extension:?}")))
}

async fn mailbox_view(state: &AppState, user_id: &str) -> Result<MailboxView> {
    let mailbox = state.engine.store().mailbox(user_id).await?;
    Ok(MailboxView {
        enabled: mailbox.as_ref().is_some_and(|m| m.enabled),
        greeting: match mailbox.and_then(|m| m.greeting_path) {
            Some(_) => GreetingKind::Custom,
            None => GreetingKind::Default,
        },
    })
}

/// The user's mailbox: whether voicemail is on, and which greeting callers hear.
#[utoipa::path(
    get,
    path = "/users/{extension}/voicemail",
    tag = "voicemail",
    params(("extension" = String, Path, description = "The user's extension")),
    responses(
        (status = 200, body = MailboxView, description = "The mailbox"),
        (status = 404, body = ErrorBody, description = "`not_found`: no such user (extension) in this account"),
    )
)]
pub(crate) async fn get_mailbox(
    State(state): State<AppState>,
    auth: ApiAccount,
    Path(extension): Path<String>,
) -> Result<Json<MailboxView>> {
    let user = find_user(&state, &auth.account_id, &extension).await?;
    Ok(Json(mailbox_view(&state, &user.id).await?))
}

/// Switches the user's voicemail on or off (the greeting is kept).
#[utoipa::path(
    put,
    path = "/users/{extension}/voicemail",
    tag = "voicemail",
    params(("extension" = String, Path, description = "The user's extension")),
    request_body = MailboxUpdate,
    responses(
        (status = 200, body = MailboxView, description = "The mailbox"),
        (status = 400, body = ErrorBody, description = "`invalid_request`: a body the schema does not allow"),
        (status = 404, body = ErrorBody, description = "`not_found`: no such user (extension) in this account"),
    )
)]
pub(crate) async fn put_mailbox(
    State(state): State<AppState>,
    auth: ApiAccount,
    Path(extension): Path<String>,
    body: Bytes,
) -> Result<Json<MailboxView>> {
    let user = find_user(&state, &auth.account_id, &extension).await?;
    let req: MailboxUpdate = parse_json(&body).map_err(NativeError::BadRequest)?;
    state
        .engine
        .store()
        .set_mailbox(&user.id, req.enabled)
        .await
        .map_err(user_gone)?;
    info!(
        extension,
        enabled = req.enabled,
        "voicemail via the native API"
    );
    Ok(Json(mailbox_view(&state, &user.id).await?))
}

/// The user was removed between the lookup and the write.
fn user_gone(e: StoreError) -> NativeError {
    match e {
        StoreError::NotFound(_) => NativeError::NotFound("no such user".into()),
        other => other.into(),
    }
}

/// Reads the request body, at most `limit` bytes.
async fn read_limited(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> std::result::Result<Vec<u8>, UploadError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(UploadError::TooLarge);
    }
    let mut out = Vec::with_capacity(declared.map_or(0, |n| n as usize));
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| NativeError::BadRequest(format!("cannot read the request body: {e}")))?;
        if out.len() + chunk.len() > limit {
            return Err(UploadError::TooLarge);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Validates an uploaded greeting and converts it to the 8 kHz mono WAV that is stored.
fn convert_greeting(bytes: &[u8]) -> std::result::Result<Vec<u8>, String> {
    if bytes.is_empty() {
        return Err("a WAV body (Content-Type: audio/wav) is required".into());
    }
    let pcm = hookflash_media::audio::load_wav_limited(bytes, MAX_GREETING_DURATION)
        .map_err(|e| format!("the greeting must be a WAV file: {e}"))?;
    encode_pcm16(Pcm16Spec::MONO_8K, pcm.samples())
        .map_err(|e| format!("the greeting cannot be stored: {e}"))
}

fn greetings_dir(state: &AppState) -> Result<PathBuf> {
    match state.engine.store().data_dir() {
        Some(dir) => Ok(dir.join(GREETINGS_DIR)),
        None => Err(NativeError::Internal(
            "the server has no data directory to keep greetings in".into(),
        )),
    }
}

/// Removes a greeting file the store no longer names, if it is one of ours.
async fn remove_greeting_file(dir: &FsPath, path: &str) {
    let path = FsPath::new(path);
    if path.parent() != Some(dir) {
        warn!(path = %path.display(), "not removing a greeting outside the greetings directory");
        return;
    }
    if let Err(e) = tokio::fs::remove_file(path).await {
        if e.kind() != std::io::ErrorKind::NotFound {
            warn!(path = %path.display(), error = %e, "cannot remove an old greeting");
        }
    }
}

/// Uploads the user's greeting: a WAV (any sample rate, 1-32 channels, 8-32-bit; at most
/// 10 MB and 3 minutes), stored as 8 kHz mono. Replaces a previous custom greeting.
#[utoipa::path(
    put,
    path = "/users/{extension}/voicemail/greeting",
    tag = "voicemail",
    params(("extension" = String, Path, description = "The user's extension")),
    request_body(content = WavBody, content_type = "audio/wav", description = "The greeting: a WAV (any sample rate, 1-32 channels, 8-32-bit; at most 10 MB and 3 minutes). The Content-Type is not checked."),
    responses(
        (status = 200, body = MailboxView, description = "The mailbox, now with the custom greeting"),
        (status = 400, body = ErrorBody, description = "`invalid_request`: no body, or not a usable WAV (not a WAV, an unsupported encoding, longer than 3 minutes)"),
        (status = 404, body = ErrorBody, description = "`not_found`: no such user (extension) in this account"),
        (status = 413, body = ErrorBody, description = "`payload_too_large`: body larger than 10 MB"),
    )
)]
pub(crate) async fn put_greeting(
    State(state): State<AppState>,
    auth: ApiAccount,
    Path(extension): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> std::result::Result<Json<MailboxView>, UploadError> {
    let user = find_user(&state, &auth.account_id, &extension).await?;
    let bytes = read_limited(&headers, body, MAX_GREETING_BYTES).await?;
    let wav = tokio::task::spawn_blocking(move || convert_greeting(&bytes))
        .await
        .map_err(|e| NativeError::Internal(format!("greeting conversion failed: {e}")))?
        .map_err(NativeError::BadRequest)?;

    let dir = greetings_dir(&state)?;
    let io_error = |e: std::io::Error| {
        warn!(dir = %dir.display(), error = %e, "cannot store a greeting");
        NativeError::Internal("cannot store the greeting".into())
    };
    tokio::fs::create_dir_all(&dir).await.map_err(io_error)?;
    // A new name per upload: a player never sees a half-written file or a stale cache entry.
    let name = format!("{}-{}.wav", user.id, uuid::Uuid::now_v7());
    let path = dir.join(&name);
    let tmp = dir.join(format!("{name}.tmp"));
    tokio::fs::write(&tmp, &wav).await.map_err(io_error)?;
    if let Err(e) = tokio::fs::rename(&tmp, &path).await {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(io_error(e).into());
    }
    let Some(path_str) = path.to_str() else {
        let _ = tokio::fs::remove_file(&path).await;
        return Err(NativeError::Internal("the data directory's path is not UTF-8".into()).into());
    };

    let store = state.engine.store();
    let old = store.mailbox(&user.id).await?.and_then(|m| m.greeting_path);
    if let Err(e) = store.set_greeting(&user.id, Some(path_str)).await {
        let _ = tokio::fs::remove_file(&path).await;
        return Err(user_gone(e).into());
    }
    if let Some(old) = old.filter(|o| o != path_str) {
        remove_greeting_file(&dir, &old).await;
    }
    info!(extension, bytes = wav.len(), "voicemail greeting uploaded");
    Ok(Json(mailbox_view(&state, &user.id).await?))
}

/// Removes the user's custom greeting: callers hear the default greeting again.
#[utoipa::path(
    delete,
    path = "/users/{extension}/voicemail/greeting",
    tag = "voicemail",
    params(("extension" = String, Path, description = "The user's extension")),
    responses(
        (status = 200, body = MailboxView, description = "The mailbox, now with the default greeting"),
        (status = 404, body = ErrorBody, description = "`not_found`: no such user (extension) in this account"),
    )
)]
pub(crate) async fn delete_greeting(
    State(state): State<AppState>,
    auth: ApiAccount,
    Path(extension): Path<String>,
) -> Result<Json<MailboxView>> {
    let user = find_user(&state, &auth.account_id, &extension).await?;
    let store = state.engine.store();
    let old = store.mailbox(&user.id).await?.and_then(|m| m.greeting_path);
    if let Some(old) = old {
        store
            .set_greeting(&user.id, None)
            .await
            .map_err(user_gone)?;
        if let Ok(dir) = greetings_dir(&state) {
            remove_greeting_file(&dir, &old).await;
        }
        info!(extension, "voicemail greeting removed");
    }
    Ok(Json(mailbox_view(&state, &user.id).await?))
}

fn to_view(m: &VoicemailMessage, extension: &str) -> Voicemail {
    Voicemail {
        id: m.id.clone(),
        user_extension: extension.to_string(),
        call_id: m.call_id.clone(),
        caller: m.caller.clone(),
        caller_name: m.caller_name.clone(),
        state: m.state.clone(),
        created_at_ms: m.created_at,
        duration_ms: m.duration_ms,
        bytes: m.bytes,
        audio_url: format!("{}/voicemail/{}/audio", crate::native::PREFIX, m.id),
    }
}

/// The message's view, with its user's extension (`None` if the user was removed meanwhile).
async fn view_of(state: &AppState, m: &VoicemailMessage) -> Result<Option<Voicemail>> {
    let user = state.engine.store().user_by_id(&m.user_id).await?;
    Ok(user.map(|u| to_view(m, &u.extension)))
}

/// The account's voicemail messages, newest first (of one user with `user`).
#[utoipa::path(
    get,
    path = "/voicemail",
    tag = "voicemail",
    params(VoicemailQuery),
    responses(
        (status = 200, body = VoicemailList, description = "The messages, newest first"),
        (status = 400, body = ErrorBody, description = "`invalid_request`: a query the schema does not allow (unknown parameter, `limit` not 1-1000)"),
        (status = 404, body = ErrorBody, description = "`not_found`: `user` names no user of this account"),
    )
)]
pub(crate) async fn list_voicemail(
    State(state): State<AppState>,
    auth: ApiAccount,
    RawQuery(query): RawQuery,
) -> Result<Json<VoicemailList>> {
    let q: VoicemailQuery = match query.as_deref() {
        None | Some("") => VoicemailQuery::default(),
        Some(q) => serde_urlencoded::from_str(q)
            .map_err(|e| NativeError::BadRequest(format!("invalid query: {e}")))?,
    };
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(NativeError::BadRequest(format!(
            "`limit` must be between 1 and {MAX_LIMIT}"
        )));
    }
    let user = match &q.user {
        Some(ext) => Some(find_user(&state, &auth.account_id, ext).await?),
        None => None,
    };
    let rows = state
        .engine
        .store()
        .voicemails(
            &auth.account_id,
            user.as_ref().map(|u| u.id.as_str()),
            limit,
        )
        .await?;
    let mut messages = Vec::with_capacity(rows.len());
    for m in &rows {
        let view = match &user {
            Some(u) => Some(to_view(m, &u.extension)),
            None => view_of(&state, m).await?,
        };
        messages.extend(view);
    }
    Ok(Json(VoicemailList { messages }))
}

async fn find(state: &AppState, account_id: &str, id: &str) -> Result<VoicemailMessage> {
    state
        .engine
        .store()
        .voicemail(account_id, id)
        .await?
        .ok_or_else(|| NativeError::NotFound("no such voicemail message".into()))
}

/// One voicemail message.
#[utoipa::path(
    get,
    path = "/voicemail/{message_id}",
    tag = "voicemail",
    params(("message_id" = String, Path, description = "Message id")),
    responses(
        (status = 200, body = Voicemail, description = "The message"),
        (status = 404, body = ErrorBody, description = "`not_found`: no such voicemail message in this account"),
    )
)]
pub(crate) async fn get_voicemail(
    State(state): State<AppState>,
    auth: ApiAccount,
    Path(id): Path<String>,
) -> Result<Json<Voicemail>> {
    let m = find(&state, &auth.account_id, &id).await?;
    view_of(&state, &m)
        .await?
        .map(Json)
        .ok_or_else(|| NativeError::NotFound("no such voicemail message".into()))
}

/// Deletes a voicemail message and its audio. A message still being left is a 409.
#[utoipa::path(
    delete,
    path = "/voicemail/{message_id}",
    tag = "voicemail",
    params(("message_id" = String, Path, description = "Message id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, body = ErrorBody, description = "`not_found`: no such voicemail message in this account"),
        (status = 409, body = ErrorBody, description = "`wrong_state`: the message is still being left"),
    )
)]
pub(crate) async fn delete_voicemail(
    State(state): State<AppState>,
    auth: ApiAccount,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let m = find(&state, &auth.account_id, &id).await?;
    if m.state == "recording" {
        return Err(NativeError::WrongState(
            "the message is still being left; delete it once it is complete".into(),
        ));
    }
    let Some(gone) = state
        .engine
        .store()
        .delete_voicemail(&auth.account_id, &id)
        .await?
    else {
        return Err(NativeError::NotFound("no such voicemail message".into()));
    };
    if let Err(e) = tokio::fs::remove_file(&gone.path).await {
        if e.kind() != std::io::ErrorKind::NotFound {
            warn!(id, path = %gone.path, error = %e, "cannot remove a voicemail file");
        }
    }
    info!(id, "voicemail deleted via the native API");
    Ok(StatusCode::NO_CONTENT)
}

/// The message's audio: a WAV. Available once the message is complete (or was repaired after
/// a crash).
#[utoipa::path(
    get,
    path = "/voicemail/{message_id}/audio",
    tag = "voicemail",
    params(("message_id" = String, Path, description = "Message id")),
    responses(
        (status = 200, body = WavBody, description = "The WAV file", content_type = "audio/wav"),
        (status = 404, body = ErrorBody, description = "`not_found`: no such voicemail message in this account, or its file is gone"),
        (status = 409, body = ErrorBody, description = "`wrong_state`: still being left"),
    )
)]
pub(crate) async fn voicemail_audio(
    State(state): State<AppState>,
    auth: ApiAccount,
    Path(id): Path<String>,
) -> Result<Response> {
    let m = find(&state, &auth.account_id, &id).await?;
    // Served like a recording's file (streamed, 409 while being written).
    let file = hookflash_store::Recording {
        id: m.id,
        account_id: m.account_id,
        call_id: m.call_id,
        path: m.path,
        state: m.state,
        started_at: m.created_at,
        ended_at: None,
        duration_ms: m.duration_ms,
        bytes: m.bytes,
    };
    Ok(wav::response(&file).await?)
}

/// Checks and normalises a `PUT .../forwardings` list: flip ids of 1-16 characters from
/// `[A-Za-z0-9_-]`, unique; numbers of digits with an optional leading `+` (separators
/// removed); labels of at most 64 characters without control characters (blank = none); at
/// most [`MAX_FORWARDINGS`] entries.
pub(crate) fn normalize_forwardings(
    list: &[ForwardingView],
) -> std::result::Result<Vec<ForwardingView>, String> {
    if list.len() > MAX_FORWARDINGS {
        return Err(format!(
            "at most {MAX_FORWARDINGS} forwardings, got {}",
            list.len()
        ));
    }
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(list.len());
    for f in list {
        let id = f.flip_id.as_str();
        if id.is_empty() || id.len() > MAX_FLIP_ID_LEN {
            return Err(format!(
                "flip_id {id:?} must be 1 to {MAX_FLIP_ID_LEN} characters"
            ));
        }
        if !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!(
                "flip_id {id:?} may only contain letters, digits, '_' and '-'"
            ));
        }
        if !seen.insert(id) {
            return Err(format!("flip_id {id:?} is given twice"));
        }
        let trimmed = f.number.trim();
        let Some(digits) = number_digits(trimmed) else {
            return Err(format!(
                "number {:?} of {id:?} must be digits with an optional leading '+'",
                f.number
            ));
        };
        let number = if trimmed.starts_with('+') {
            format!("+{digits}")
        } else {
            digits
        };
        let label = match f.label.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(l) if l.chars().count() > MAX_LABEL_LEN => {
                return Err(format!(
                    "label of {id:?} must be at most {MAX_LABEL_LEN} characters"
                ))
            }
            Some(l) if l.chars().any(char::is_control) => {
                return Err(format!(
                    "label of {id:?} must not contain control characters"
                ))
            }
            Some(l) => Some(l.to_string()),
        };
        out.push(ForwardingView {
            flip_id: id.to_string(),
            number,
            label,
        });
    }
    Ok(out)
}

async fn forwarding_list(state: &AppState, user_id: &str) -> Result<ForwardingList> {
    let rows = state.engine.store().forwardings(user_id).await?;
    Ok(ForwardingList {
        forwardings: rows
            .into_iter()
            .map(|f| ForwardingView {
                flip_id: f.flip_id,
                number: f.number,
                label: f.label,
            })
            .collect(),
    })
}

/// The user's flip targets, ordered by `flip_id`.
#[utoipa::path(
    get,
    path = "/users/{extension}/forwardings",
    tag = "forwardings",
    params(("extension" = String, Path, description = "The user's extension")),
    responses(
        (status = 200, body = ForwardingList, description = "The flip targets, ordered by `flip_id`"),
        (status = 404, body = ErrorBody, description = "`not_found`: no such user (extension) in this account"),
    )
)]
pub(crate) async fn get_forwardings(
    State(state): State<AppState>,
    auth: ApiAccount,
    Path(extension): Path<String>,
) -> Result<Json<ForwardingList>> {
    let user = find_user(&state, &auth.account_id, &extension).await?;
    Ok(Json(forwarding_list(&state, &user.id).await?))
}

/// Replaces all of the user's flip targets (an empty list removes them). All or nothing.
#[utoipa::path(
    put,
    path = "/users/{extension}/forwardings",
    tag = "forwardings",
    params(("extension" = String, Path, description = "The user's extension")),
    request_body = ForwardingList,
    responses(
        (status = 200, body = ForwardingList, description = "The stored list (normalised, ordered by `flip_id`)"),
        (status = 400, body = ErrorBody, description = "`invalid_request`: a body the schema does not allow, or a flip id given twice (nothing changes)"),
        (status = 404, body = ErrorBody, description = "`not_found`: no such user (extension) in this account"),
    )
)]
pub(crate) async fn put_forwardings(
    State(state): State<AppState>,
    auth: ApiAccount,
    Path(extension): Path<String>,
    body: Bytes,
) -> Result<Json<ForwardingList>> {
    let user = find_user(&state, &auth.account_id, &extension).await?;
    let req: ForwardingList = parse_json(&body).map_err(NativeError::BadRequest)?;
    let list = normalize_forwardings(&req.forwardings).map_err(NativeError::BadRequest)?;
    let rows: Vec<Forwarding> = list
        .into_iter()
        .map(|f| Forwarding {
            user_id: user.id.clone(),
            flip_id: f.flip_id,
            number: f.number,
            label: f.label,
        })
        .collect();
    state
        .engine
        .store()
        .set_forwardings(&user.id, &rows)
        .await
        .map_err(|e| match e {
            StoreError::Conflict(why) => NativeError::BadRequest(why),
            other => user_gone(other),
        })?;
    info!(
        extension,
        count = rows.len(),
        "forwardings via the native API"
    );
    Ok(Json(forwarding_list(&state, &user.id).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(id: &str, number: &str, label: Option<&str>) -> ForwardingView {
        ForwardingView {
            flip_id: id.into(),
            number: number.into(),
            label: label.map(str::to_string),
        }
    }

    #[test]
    fn forwardings_are_normalised() {
        let out = normalize_forwardings(&[
            f("mobile", " +49 (170) 123-45.67 ", Some("  Mobile ")),
            f("home_2", "030 123456", Some("   ")),
            f("A-b", "201", None),
        ])
        .unwrap();
        assert_eq!(
            out,
            vec![
                f("mobile", "+491701234567", Some("Mobile")),
                f("home_2", "030123456", None),
                f("A-b", "201", None),
            ]
        );
        assert_eq!(normalize_forwardings(&[]).unwrap(), vec![]);
        let sixteen = "a".repeat(16);
        assert!(normalize_forwardings(&[f(&sixteen, "1", None)]).is_ok());
    }

    #[test]
    fn bad_forwardings_are_refused_with_a_reason() {
        let bad = |list: &[ForwardingView], needle: &str| {
            let err = normalize_forwardings(list).unwrap_err();
            assert!(err.contains(needle), "{err}");
        };
        bad(&[f("", "1", None)], "1 to 16");
        bad(&[f(&"a".repeat(17), "1", None)], "1 to 16");
        bad(&[f("mo bile", "1", None)], "may only contain");
        bad(&[f("mobilé", "1", None)], "may only contain");
        bad(&[f("a", "1", None), f("a", "2", None)], "twice");
        bad(&[f("a", "", None)], "digits");
        bad(&[f("a", "+", None)], "digits");
        bad(&[f("a", "sip:bob@example.com", None)], "digits");
        bad(&[f("a", "12+3", None)], "digits");
        bad(&[f("a", "1", Some(&"x".repeat(65)))], "at most 64");
        bad(&[f("a", "1", Some("a\nb"))], "control");
        let eleven: Vec<ForwardingView> = (0..11).map(|i| f(&format!("f{i}"), "1", None)).collect();
        bad(&eleven, "at most 10");
        assert!(normalize_forwardings(&eleven[..10]).is_ok());
    }

    #[test]
    fn greetings_are_converted_to_8k_mono() {
        // A 16 kHz stereo 16-bit WAV of 0.5 s.
        let frames = 8000usize;
        let samples: Vec<i16> = (0..frames)
            .flat_map(|i| {
                let v = ((i as f32 * 0.1).sin() * 8000.0) as i16;
                [v, v]
            })
            .collect();
        let spec = Pcm16Spec {
            channels: 2,
            sample_rate: 16_000,
        };
        let wav = encode_pcm16(spec, &samples).unwrap();
        let out = convert_greeting(&wav).unwrap();
        assert_eq!(&out[0..4], b"RIFF");
        assert_eq!(&out[8..16], b"WAVEfmt ");
        assert_eq!(u16::from_le_bytes([out[22], out[23]]), 1, "mono");
        assert_eq!(
            u32::from_le_bytes([out[24], out[25], out[26], out[27]]),
            8000
        );
        let samples = (out.len() - 44) / 2;
        assert!((3900..=4100).contains(&samples), "{samples}");
        // What is stored loads again, unchanged in length.
        let again = hookflash_media::audio::load_wav(&out).unwrap();
        assert_eq!(again.len(), samples);

        let err = convert_greeting(b"").unwrap_err();
        assert!(err.contains("required"), "{err}");
        let err = convert_greeting(b"{\"enabled\": true}").unwrap_err();
        assert!(err.contains("must be a WAV file"), "{err}");
    }
}
