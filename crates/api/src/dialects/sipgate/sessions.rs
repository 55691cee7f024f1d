//! sipgate click-to-dial: `POST /v2/sessions/calls {caller, callee, callerId, deviceId}` →
//! `{sessionId}`. The caller's phone rings first; when it is answered the callee is dialled.

use axum::body::Bytes;
use axum::extract::State;
use axum::Json;
use hookflash_engine::OriginateRequest;
use serde::{Deserialize, Serialize};
use tracing::info;

use super::SipgateState;
use crate::sipgate::auth::SipgateUser;
use crate::sipgate::calls::body;
use crate::sipgate::error::SipgateError;

type Result<T> = std::result::Result<T, SipgateError>;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SessionCall {
    caller: String,
    callee: String,
    #[serde(default)]
    caller_id: Option<String>,
    #[serde(default)]
    device_id: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionId {
    pub session_id: String,
}

/// sipgate extension ids name our users by extension: `e201`/`p201` (a device or person id
/// whose number is the extension) is user 201, and `e0`/`p0`/`w0` is the user behind the
/// token. Anything else (an extension `201`, a number `+49...`) is passed on as it is.
fn extension_of(id: &str, me: &str) -> String {
    let id = id.trim();
    let mut chars = id.chars();
    match (chars.next(), chars.as_str()) {
        (Some('e' | 'p' | 'w' | 'x' | 'y'), "0") => me.to_string(),
        (Some('e' | 'p' | 'w' | 'x' | 'y'), rest)
            if !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()) =>
        {
            rest.to_string()
        }
        _ => id.to_string(),
    }
}

/// Starts a click-to-dial call: the phones of `deviceId` (or of `caller`) ring first; once
/// answered, `callee` is dialled; `callerId` (one of the account's numbers) is what the
/// callee sees. 400 when a side cannot be reached (unknown extension, no registered phone,
/// malformed number); nothing is dialled then.
pub(crate) async fn initiate(
    State(state): State<SipgateState>,
    auth: SipgateUser,
    payload: Bytes,
) -> Result<Json<SessionId>> {
    let req: SessionCall = body(
        &payload,
        r#"{"caller": "e0", "callee": "+4915799912345", "callerId": "+4930123456", "deviceId": "e0"}"#,
    )?;
    let me = auth.user.extension.as_str();
    let ringing = extension_of(req.device_id.as_deref().unwrap_or(&req.caller), me);
    let call = state
        .engine
        .originate(
            &auth.account.id,
            OriginateRequest {
                caller: ringing,
                callee: req.callee.clone(),
                caller_id: req.caller_id.clone(),
            },
        )
        .await?;
    info!(session = %call.id, callee = %req.callee, user = %auth.user.extension, "sipgate click-to-dial");
    Ok(Json(SessionId {
        session_id: call.id,
    }))
}

#[cfg(test)]
mod tests {
    use super::extension_of;

    #[test]
    fn sipgate_extension_ids_map_to_our_extensions() {
        assert_eq!(extension_of("e0", "201"), "201");
        assert_eq!(extension_of("p0", "201"), "201");
        assert_eq!(extension_of("e202", "201"), "202");
        assert_eq!(extension_of("202", "201"), "202");
        assert_eq!(extension_of("+4930123456", "201"), "+4930123456");
        assert_eq!(extension_of("e", "201"), "e");
        assert_eq!(extension_of("e2x", "201"), "e2x");
    }
}
