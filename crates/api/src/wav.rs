//! Serving a recording's WAV file (shared by the native API and the sipgate dialect): streamed
//! in chunks, never read into memory whole.

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::stream;
use hookflash_store::Recording;
use tokio::io::AsyncReadExt;

/// Bytes per chunk of the response body.
const CHUNK: usize = 64 * 1024;

/// Why a recording's audio cannot be served.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WavError {
    /// The recording is still running (its header is not final yet).
    #[error("the recording is still running; download it once it has stopped")]
    StillRecording,
    /// The file is gone or unreadable.
    #[error("the recording's audio is not available")]
    Unavailable,
}

/// `200 audio/wav` with the recording's file as the body.
pub(crate) async fn response(rec: &Recording) -> Result<Response, WavError> {
    if rec.state == "recording" {
        return Err(WavError::StillRecording);
    }
    let mut file = tokio::fs::File::open(&rec.path).await.map_err(|e| {
        tracing::warn!(recording = %rec.id, path = %rec.path, error = %e, "cannot open a recording");
        WavError::Unavailable
    })?;
    let len = file
        .metadata()
        .await
        .map_err(|_| WavError::Unavailable)?
        .len();
    // Read the first chunk now, so an unreadable file is an error rather than a cut-off body.
    let mut first = vec![0u8; CHUNK];
    let n = file
        .read(&mut first)
        .await
        .map_err(|_| WavError::Unavailable)?;
    first.truncate(n);
    let chunks = stream::unfold((Some(first), Some(file)), |(pending, file)| async move {
        if let Some(chunk) = pending {
            if chunk.is_empty() {
                return None;
            }
            return Some((
                Ok::<Bytes, std::io::Error>(Bytes::from(chunk)),
                (None, file),
            ));
        }
        let mut file = file?;
        let mut buf = vec![0u8; CHUNK];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), (None, Some(file))))
            }
            Err(e) => Some((Err(e), (None, None))),
        }
    });
    let mut resp = (StatusCode::OK, Body::from_stream(chunks)).into_response();
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("audio/wav"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{}.wav\"", rec.id)) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}
