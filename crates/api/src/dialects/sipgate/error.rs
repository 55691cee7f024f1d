//! Errors of the sipgate dialect and their one mapping to status codes and bodies:
//! `{"status": 404, "error": "Not Found", "message": "The requested Call could not be found"}`.
//! The sipgateio SDK only looks at the status (404 -> "The requested Call could not be found",
//! 401 -> "Unauthorized", 403 -> "Forbidden").

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hookflash_engine::{CommandError, WrongState};
use serde_json::json;

/// The message of every 404 about a call (as sipgate and its SDK word it).
pub const CALL_NOT_FOUND: &str = "The requested Call could not be found";

#[derive(Debug, thiserror::Error)]
pub enum SipgateError {
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{CALL_NOT_FOUND}")]
    CallNotFound,
    /// Something other than a call that does not exist (or is not the user's).
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    TooManyRequests(String),
    #[error("{0}")]
    NotImplemented(String),
    /// The call's node (cluster) is unreachable.
    #[error("{0}")]
    Unavailable(String),
    /// The call's node (cluster) did not answer in time.
    #[error("{0}")]
    GatewayTimeout(String),
    #[error("{0}")]
    Internal(String),
}

impl SipgateError {
    pub fn status(&self) -> StatusCode {
        match self {
            SipgateError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            SipgateError::Forbidden(_) => StatusCode::FORBIDDEN,
            SipgateError::CallNotFound | SipgateError::NotFound(_) => StatusCode::NOT_FOUND,
            SipgateError::Conflict(_) => StatusCode::CONFLICT,
            SipgateError::BadRequest(_) => StatusCode::BAD_REQUEST,
            SipgateError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            SipgateError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            SipgateError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            SipgateError::GatewayTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            SipgateError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// The one place where engine command errors become sipgate errors.
impl From<CommandError> for SipgateError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::NotFound => SipgateError::CallNotFound,
            CommandError::WrongState { state } => SipgateError::Conflict(format!(
                "Not possible while the call is {}",
                wrong_state(state)
            )),
            CommandError::Failed { status, reason } => SipgateError::Conflict(format!(
                "The phone refused the change ({status} {reason}); the call is unchanged"
            )),
            CommandError::Invalid(why) => SipgateError::BadRequest(why),
            CommandError::Media(why) => SipgateError::BadRequest(why),
            CommandError::BadTarget(why) => SipgateError::BadRequest(why),
            CommandError::NotPermitted(why) => SipgateError::Forbidden(why),
            CommandError::Limited(why) => SipgateError::TooManyRequests(why),
            e @ CommandError::NodeUnreachable { .. } => SipgateError::Unavailable(e.to_string()),
            e @ CommandError::NodeTimeout { .. } => SipgateError::GatewayTimeout(e.to_string()),
        }
    }
}

/// How the sipgate dialect words why a command does not fit the call's state now (completing
/// "Not possible while the call is ...").
pub(crate) fn wrong_state(state: WrongState) -> &'static str {
    match state {
        WrongState::Ringing => "ringing",
        WrongState::Answered => "answered",
        WrongState::Ended => "ended",
        WrongState::Pending => "pending",
        WrongState::Updating => "updating",
        WrongState::Transferring => "transferring",
        WrongState::Parked => "parked",
        WrongState::NotParked => "not parked",
        WrongState::InVoicemail => "in voicemail",
        WrongState::AlreadyRecording => "already recording",
        WrongState::NotRecording => "not recording",
        WrongState::NoFreeOrbit => "without a free park orbit",
        WrongState::CallingCaller => "calling the caller",
        WrongState::NotTransferring => "not transferring",
        WrongState::InBlindTransfer => "in a blind transfer",
        WrongState::AwaitingTarget => "waiting for the transfer target to answer",
        WrongState::InConference => "in a conference",
        WrongState::NotInConference => "not in a conference",
        WrongState::OnAnotherNode => "on another node than the other call",
    }
}

impl From<crate::wav::WavError> for SipgateError {
    fn from(e: crate::wav::WavError) -> Self {
        match e {
            crate::wav::WavError::StillRecording => SipgateError::Conflict(e.to_string()),
            crate::wav::WavError::Unavailable => SipgateError::NotFound(e.to_string()),
        }
    }
}

impl From<hookflash_store::StoreError> for SipgateError {
    fn from(e: hookflash_store::StoreError) -> Self {
        tracing::warn!(error = %e, "store error in the sipgate dialect");
        SipgateError::Internal("Internal error".into())
    }
}

impl IntoResponse for SipgateError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = json!({
            "status": status.as_u16(),
            "error": status.canonical_reason().unwrap_or(""),
            "message": self.to_string(),
        });
        let mut resp = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"sipgate\""),
            );
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_state_messages_read_as_before() {
        for state in WrongState::ALL {
            let e = SipgateError::from(CommandError::WrongState { state: *state });
            assert_eq!(e.status(), StatusCode::CONFLICT);
            assert_eq!(
                e.to_string(),
                format!("Not possible while the call is {}", state.as_str())
            );
        }
        let e = SipgateError::from(CommandError::WrongState {
            state: WrongState::Ringing,
        });
        assert_eq!(e.to_string(), "Not possible while the call is ringing");
    }
}
