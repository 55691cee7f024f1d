//! Errors of the RingCentral dialect and their one mapping to status codes and bodies.
//!
//! REST API errors: `{"errorCode": "CMN-102", "message": "...", "errors": [{"errorCode",
//! "message", "parameterName"?}]}`. OAuth errors (`/restapi/oauth/...`): `{"error":
//! "invalid_grant", "error_description": "...", "errors": [{"errorCode": "OAU-...", "message"}]}`.
//! The SDK shows `message`, else `error_description`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hookflash_engine::{CommandError, WrongState};
use serde_json::{json, Value};

/// A REST API error (`errorCode` + `message`).
#[derive(Debug, thiserror::Error)]
pub enum RcError {
    /// 401: no, unknown, expired or revoked access token.
    #[error("{message}")]
    Unauthorized { code: &'static str, message: String },
    /// 403: the resource exists but is not the token's extension's (another extension's
    /// party), or the dial rules forbid the target.
    #[error("{0}")]
    Forbidden(String),
    /// 404 of a named path parameter (`sessionId`, `partyId`, `recordingId`, `extensionId`).
    #[error("Resource for parameter [{0}] is not found")]
    NotFound(&'static str),
    /// 400 about one body or query parameter.
    #[error("{message}")]
    InvalidParameter {
        parameter: &'static str,
        message: String,
    },
    /// 400 without one parameter to blame (a body that is not JSON).
    #[error("{0}")]
    BadRequest(String),
    /// 409: not possible in the party's (or call's) current state; nothing changed.
    #[error("{0}")]
    WrongState(String),
    /// 429.
    #[error("{0}")]
    TooManyRequests(String),
    /// 501: a feature the engine does not offer.
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

impl RcError {
    pub fn status(&self) -> StatusCode {
        match self {
            RcError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            RcError::Forbidden(_) => StatusCode::FORBIDDEN,
            RcError::NotFound(_) => StatusCode::NOT_FOUND,
            RcError::InvalidParameter { .. } | RcError::BadRequest(_) => StatusCode::BAD_REQUEST,
            RcError::WrongState(_) => StatusCode::CONFLICT,
            RcError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            RcError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            RcError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            RcError::GatewayTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            RcError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// RingCentral's error code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            RcError::Unauthorized { code, .. } => code,
            RcError::Forbidden(_) => "CMN-408",
            RcError::NotFound(_) => "CMN-102",
            RcError::InvalidParameter { .. } => "CMN-101",
            RcError::BadRequest(_) => "CMN-100",
            RcError::WrongState(_) => "TAS-409",
            RcError::TooManyRequests(_) => "CMN-301",
            RcError::NotImplemented(_) => "CMN-501",
            RcError::Unavailable(_) => "CMN-211",
            RcError::GatewayTimeout(_) => "CMN-212",
            RcError::Internal(_) => "CMN-201",
        }
    }

    pub fn invalid(parameter: &'static str, message: impl Into<String>) -> RcError {
        RcError::InvalidParameter {
            parameter,
            message: message.into(),
        }
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        let mut item = json!({"errorCode": self.code(), "message": self.to_string()});
        match self {
            RcError::NotFound(p) => item["parameterName"] = json!(p),
            RcError::InvalidParameter { parameter, .. } => item["parameterName"] = json!(parameter),
            _ => {}
        }
        json!({"errorCode": self.code(), "message": self.to_string(), "errors": [item]})
    }
}

/// The one place where engine command errors become RingCentral errors. `NotFound` names the
/// party: the handlers have found the session and the party before they command.
impl From<CommandError> for RcError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::NotFound => RcError::NotFound("partyId"),
            CommandError::WrongState { state } => RcError::WrongState(format!(
                "The operation is not possible while the call is {}; the call is unchanged",
                wrong_state(state)
            )),
            CommandError::Failed { status, reason } => RcError::WrongState(format!(
                "The phone refused the change ({status} {reason}); the call is unchanged"
            )),
            CommandError::Invalid(why) => RcError::BadRequest(why),
            CommandError::Media(why) => RcError::BadRequest(why),
            CommandError::BadTarget(why) => RcError::invalid("target", why),
            CommandError::NotPermitted(why) => RcError::Forbidden(why),
            CommandError::Limited(why) => RcError::TooManyRequests(why),
            e @ CommandError::NodeUnreachable { .. } => RcError::Unavailable(e.to_string()),
            e @ CommandError::NodeTimeout { .. } => RcError::GatewayTimeout(e.to_string()),
        }
    }
}

/// How this dialect words a state a command does not fit.
fn wrong_state(state: WrongState) -> &'static str {
    match state {
        WrongState::Ringing => "ringing",
        WrongState::Answered => "answered",
        WrongState::Ended => "ended",
        WrongState::Pending => "waiting for a phone's answer to a change",
        WrongState::Updating => "being updated",
        WrongState::Transferring => "being transferred",
        WrongState::Parked => "parked",
        WrongState::NotParked => "not parked",
        WrongState::InVoicemail => "in voicemail",
        WrongState::AlreadyRecording => "already recorded",
        WrongState::NotRecording => "not recorded",
        WrongState::NoFreeOrbit => "without a free park orbit",
        WrongState::CallingCaller => "still calling its caller",
        WrongState::NotTransferring => "not being transferred",
        WrongState::InBlindTransfer => "in a blind transfer",
        WrongState::AwaitingTarget => "waiting for the transfer target to answer",
        WrongState::InConference => "in a conference",
        WrongState::NotInConference => "not in a conference",
        WrongState::OnAnotherNode => "on another node than the other session",
    }
}

impl From<hookflash_store::StoreError> for RcError {
    fn from(e: hookflash_store::StoreError) -> Self {
        tracing::warn!(error = %e, "store error in the RingCentral dialect");
        RcError::Internal("Internal error".into())
    }
}

impl IntoResponse for RcError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut resp = (status, Json(self.body())).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"RingCentral REST API\""),
            );
        }
        resp
    }
}

/// An error of the OAuth endpoints (RFC 6749 shape plus RingCentral's `errors[]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    pub status: StatusCode,
    /// RFC 6749 `error` (`invalid_request`, `invalid_client`, `invalid_grant`,
    /// `unsupported_grant_type`, ...).
    pub error: &'static str,
    /// RingCentral's `errorCode` (`OAU-...`).
    pub code: &'static str,
    pub description: String,
}

impl OAuthError {
    pub fn new(
        status: StatusCode,
        error: &'static str,
        code: &'static str,
        description: impl Into<String>,
    ) -> Self {
        OAuthError {
            status,
            error,
            code,
            description: description.into(),
        }
    }

    pub fn bad_request(code: &'static str, description: impl Into<String>) -> Self {
        OAuthError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            code,
            description,
        )
    }

    pub fn invalid_grant(description: impl Into<String>) -> Self {
        OAuthError::new(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "OAU-140",
            description,
        )
    }

    pub fn invalid_client() -> Self {
        OAuthError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "OAU-123",
            "Invalid client: the client id or secret is wrong",
        )
    }
}

impl From<hookflash_store::StoreError> for OAuthError {
    fn from(e: hookflash_store::StoreError) -> Self {
        tracing::warn!(error = %e, "store error in the RingCentral OAuth endpoint");
        OAuthError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "OAU-500",
            "Internal error",
        )
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = json!({
            "error": self.error,
            "error_description": self.description,
            "errors": [{"errorCode": self.code, "message": self.description}],
        });
        let mut resp = (
            self.status,
            [(header::CACHE_CONTROL, "no-store")],
            Json(body),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"RingCentral OAuth\""),
            );
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_carry_code_message_and_errors() {
        let e = RcError::NotFound("sessionId");
        assert_eq!(e.status(), StatusCode::NOT_FOUND);
        let b = e.body();
        assert_eq!(b["errorCode"], "CMN-102");
        assert_eq!(
            b["message"],
            "Resource for parameter [sessionId] is not found"
        );
        assert_eq!(b["errors"][0]["parameterName"], "sessionId");
        for state in WrongState::ALL {
            let e = RcError::from(CommandError::WrongState { state: *state });
            assert_eq!(e.status(), StatusCode::CONFLICT);
            assert!(e.to_string().contains(wrong_state(*state)));
        }
        let e = RcError::from(CommandError::BadTarget("no such extension".into()));
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert_eq!(e.body()["errors"][0]["parameterName"], "target");
    }
}
