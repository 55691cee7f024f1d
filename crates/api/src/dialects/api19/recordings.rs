//! `GET …/Accounts/{AccountSid}/Recordings/{RecordingSid}(.wav)`: a recording's audio, where
//! the `RecordingUrl` of RCML `<Record>` and `<Dial record>` action requests points. The
//! account's credentials (HTTP Basic AccountSid:AuthToken) fetch it; other accounts'
//! recordings are not found.

use std::sync::Arc;

use axum::extract::{OriginalUri, Path, State};
use axum::response::{IntoResponse, Response};
use hookflash_apps::rcml::sids;

use super::error::Api19Error;
use super::render::Format;
use super::{Api19Account, Api19State};
use crate::wav::WavError;

/// The `RecordingUrl` of recording `id` of `account_id` on the server at `base`
/// (`http://host:port`).
pub fn link(base: &str, account_id: &str, id: &str) -> String {
    format!(
        "{base}/restcomm/2012-04-24/Accounts/{}/Recordings/{}.wav",
        sids::account_sid(account_id),
        sids::recording_sid(id)
    )
}

/// [`link`] for the application runtime.
pub fn links(base: String) -> hookflash_apps::RecordingLinks {
    Arc::new(move |account_id, id| link(&base, account_id, id))
}

pub(crate) async fn audio(
    State(state): State<Api19State>,
    acct: Api19Account,
    OriginalUri(uri): OriginalUri,
    Path((_, recording_sid)): Path<(String, String)>,
) -> Response {
    let format = Format::of_path(uri.path());
    match find(&state, &acct, &recording_sid).await {
        Ok(rec) => match crate::wav::response(&rec).await {
            Ok(r) => r,
            Err(WavError::StillRecording) => {
                Api19Error::Conflict(WavError::StillRecording.to_string()).render(format)
            }
            Err(WavError::Unavailable) => {
                Api19Error::NotFound(WavError::Unavailable.to_string()).render(format)
            }
        },
        Err(e) => e.render(format),
    }
    .into_response()
}

async fn find(
    state: &Api19State,
    acct: &Api19Account,
    recording_sid: &str,
) -> Result<hookflash_store::Recording, Api19Error> {
    let not_found = || Api19Error::NotFound("The requested recording was not found".into());
    let sid = recording_sid.strip_suffix(".wav").unwrap_or(recording_sid);
    let id = sids::recording_id(sid).ok_or_else(not_found)?;
    state
        .engine
        .store()
        .recording(&acct.account_id, &id)
        .await?
        .ok_or_else(not_found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_name_the_account_and_recording_sids() {
        let l = links("http://127.0.0.1:8080".into());
        assert_eq!(
            l(
                "0190f3a2-7b1c-7d4e-9f00-0123456789ab",
                "0190f3a2-7b1c-7d4e-9f00-0123456789ac"
            ),
            "http://127.0.0.1:8080/restcomm/2012-04-24/Accounts/AC0190f3a27b1c7d4e9f000123456789ab\
             /Recordings/RE0190f3a27b1c7d4e9f000123456789ac.wav"
        );
    }
}
