//! Errors of the native API and their one mapping to status codes and
//! `{"error": {"code", "message"}}` bodies.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hookflash_engine::{CommandError, WrongState};
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, thiserror::Error)]
pub enum NativeError {
    /// No credentials, or credentials that are not valid.
    #[error("{0}")]
    Unauthorized(String),
    /// Valid credentials that may not use this API.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// The call is not in a state that allows the command.
    #[error("{0}")]
    WrongState(String),
    /// A phone refused the change (e.g. the hold re-INVITE); the call is unchanged.
    #[error("{0}")]
    SipFailed(String),
    #[error("{0}")]
    BadRequest(String),
    /// A name or number that is taken already.
    #[error("{0}")]
    Conflict(String),
    /// A limit stops the request for now (the account's outbound-call brakes).
    #[error("{0}")]
    TooManyRequests(String),
    /// The call's node (cluster) is unreachable.
    #[error("{0}")]
    NodeUnavailable(String),
    /// The call's node (cluster) did not answer in time.
    #[error("{0}")]
    NodeTimeout(String),
    #[error("{0}")]
    Internal(String),
}

/// `{"error": {"code": "...", "message": "..."}}`
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// `unauthorized`, `forbidden`, `not_found`, `wrong_state`, `sip_failed`,
    /// `invalid_request`, `conflict`, `rate_limited`, `payload_too_large`, `internal`.
    #[schema(schema_with = crate::native::doc::error_code)]
    pub code: String,
    pub message: String,
}

impl NativeError {
    pub fn status(&self) -> StatusCode {
        match self {
            NativeError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            NativeError::Forbidden(_) => StatusCode::FORBIDDEN,
            NativeError::NotFound(_) => StatusCode::NOT_FOUND,
            NativeError::WrongState(_) | NativeError::SipFailed(_) | NativeError::Conflict(_) => {
                StatusCode::CONFLICT
            }
            NativeError::BadRequest(_) => StatusCode::BAD_REQUEST,
            NativeError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            NativeError::NodeUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            NativeError::NodeTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            NativeError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            NativeError::Unauthorized(_) => "unauthorized",
            NativeError::Forbidden(_) => "forbidden",
            NativeError::NotFound(_) => "not_found",
            NativeError::WrongState(_) => "wrong_state",
            NativeError::SipFailed(_) => "sip_failed",
            NativeError::BadRequest(_) => "invalid_request",
            NativeError::Conflict(_) => "conflict",
            NativeError::TooManyRequests(_) => "rate_limited",
            NativeError::NodeUnavailable(_) => "node_unavailable",
            NativeError::NodeTimeout(_) => "node_timeout",
            NativeError::Internal(_) => "internal",
        }
    }
}

/// The one place where engine command errors become HTTP errors of the native API.
impl From<CommandError> for NativeError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::NotFound => NativeError::NotFound("no such call or leg".into()),
            CommandError::WrongState { state } => NativeError::WrongState(format!(
                "not possible while the call is {}",
                wrong_state(state)
            )),
            CommandError::Failed { status, reason } => NativeError::SipFailed(format!(
                "the phone refused the change ({status} {reason}); the call is unchanged"
            )),
            CommandError::Invalid(why) => NativeError::BadRequest(why),
            CommandError::Media(why) => NativeError::BadRequest(why),
            CommandError::BadTarget(why) => NativeError::BadRequest(why),
            CommandError::NotPermitted(why) => NativeError::Forbidden(why),
            CommandError::Limited(why) => NativeError::TooManyRequests(why),
            e @ CommandError::NodeUnreachable { .. } => NativeError::NodeUnavailable(format!(
                "{e}; the call is unchanged as far as this node knows"
            )),
            e @ CommandError::NodeTimeout { .. } => NativeError::NodeTimeout(format!(
                "{e}; whether the command was carried out is unknown"
            )),
        }
    }
}

/// How the native API words why a command does not fit the call's state now (completing
/// "not possible while the call is ...").
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

impl From<crate::wav::WavError> for NativeError {
    fn from(e: crate::wav::WavError) -> Self {
        match e {
            crate::wav::WavError::StillRecording => NativeError::WrongState(e.to_string()),
            crate::wav::WavError::Unavailable => NativeError::NotFound(e.to_string()),
        }
    }
}

impl From<hookflash_store::StoreError> for NativeError {
    fn from(e: hookflash_store::StoreError) -> Self {
        tracing::warn!(error = %e, "store error in the native API");
        NativeError::Internal("database error".into())
    }
}

impl IntoResponse for NativeError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code().to_string(),
                message: self.to_string(),
            },
        };
        let mut resp = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"hookflash\""),
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
            let e = NativeError::from(CommandError::WrongState { state: *state });
            assert_eq!(e.code(), "wrong_state");
            assert_eq!(e.status(), StatusCode::CONFLICT);
            assert_eq!(
                e.to_string(),
                format!("not possible while the call is {}", state.as_str())
            );
        }
    }
}
