//! Errors of the jambonz dialect and their one mapping to status codes: every error body is
//! the api-server's `{"msg": "..."}`. 401 adds `WWW-Authenticate: Bearer`, 429 `Retry-After`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hookflash_engine::CommandError;
use hookflash_store::StoreError;
use serde_json::json;

use crate::guard::Retry;

/// The message of every 404 about a call.
pub const CALL_NOT_FOUND: &str = "call not found";
/// The message of a 403 for another account's path (the api-server's wording).
pub const INSUFFICIENT_PRIVILEGES: &str = "insufficient privileges";

#[derive(Debug, thiserror::Error)]
pub enum JambonzError {
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    /// Well-formed, but not possible now (the call's state) or a duplicate.
    #[error("{0}")]
    Unprocessable(String),
    #[error("{message}")]
    TooManyRequests {
        message: String,
        retry: Option<Retry>,
    },
    #[error("{0}")]
    Unavailable(String),
    /// The call's node (cluster) did not answer in time.
    #[error("{0}")]
    GatewayTimeout(String),
    #[error("{0}")]
    Internal(String),
}

impl JambonzError {
    pub fn status(&self) -> StatusCode {
        match self {
            JambonzError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            JambonzError::Forbidden(_) => StatusCode::FORBIDDEN,
            JambonzError::NotFound(_) => StatusCode::NOT_FOUND,
            JambonzError::BadRequest(_) => StatusCode::BAD_REQUEST,
            JambonzError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            JambonzError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            JambonzError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            JambonzError::GatewayTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            JambonzError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn bad(msg: impl Into<String>) -> Self {
        JambonzError::BadRequest(msg.into())
    }

    pub fn call_not_found() -> Self {
        JambonzError::NotFound(CALL_NOT_FOUND.into())
    }
}

/// The one place where engine command errors become jambonz errors.
impl From<CommandError> for JambonzError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::NotFound => JambonzError::call_not_found(),
            CommandError::WrongState { state } => {
                JambonzError::Unprocessable(format!("not possible while the call is {state}"))
            }
            CommandError::Failed { status, reason } if status >= 500 => {
                JambonzError::Unavailable(format!("{status} {reason}"))
            }
            CommandError::Failed { status, reason } => JambonzError::Unprocessable(format!(
                "the phone refused the change ({status} {reason}); the call is unchanged"
            )),
            CommandError::Invalid(why)
            | CommandError::Media(why)
            | CommandError::BadTarget(why) => JambonzError::BadRequest(why),
            CommandError::NotPermitted(why) => JambonzError::Forbidden(why),
            CommandError::Limited(why) => JambonzError::TooManyRequests {
                message: why,
                retry: None,
            },
            e @ CommandError::NodeUnreachable { .. } => JambonzError::Unavailable(e.to_string()),
            e @ CommandError::NodeTimeout { .. } => JambonzError::GatewayTimeout(e.to_string()),
        }
    }
}

impl From<StoreError> for JambonzError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Invalid(why) => JambonzError::BadRequest(why),
            StoreError::Conflict(why) => JambonzError::Unprocessable(why),
            StoreError::NotFound(what) => JambonzError::NotFound(format!("{what} not found")),
            other => {
                tracing::warn!(error = %other, "store error in the jambonz dialect");
                JambonzError::Internal("internal error".into())
            }
        }
    }
}

impl IntoResponse for JambonzError {
    fn into_response(self) -> Response {
        let status = self.status();
        let retry = match &self {
            JambonzError::TooManyRequests { retry, .. } => *retry,
            _ => None,
        };
        let mut resp = (status, Json(json!({ "msg": self.to_string() }))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"jambonz\""),
            );
        }
        if let Some(retry) = retry {
            resp = crate::body::with_retry_after(resp, &retry);
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookflash_engine::WrongState;

    #[test]
    fn command_errors_map_to_the_api_servers_statuses() {
        let cases = [
            (CommandError::NotFound, 404),
            (
                CommandError::WrongState {
                    state: WrongState::Ringing,
                },
                422,
            ),
            (CommandError::Invalid("x".into()), 400),
            (CommandError::BadTarget("x".into()), 400),
            (CommandError::NotPermitted("x".into()), 403),
            (CommandError::Limited("x".into()), 429),
            (CommandError::NodeUnreachable { node: "n2".into() }, 503),
            (CommandError::NodeTimeout { node: "n2".into() }, 504),
            (
                CommandError::Failed {
                    status: 488,
                    reason: "x".into(),
                },
                422,
            ),
            (
                CommandError::Failed {
                    status: 503,
                    reason: "x".into(),
                },
                503,
            ),
        ];
        for (e, want) in cases {
            assert_eq!(JambonzError::from(e).status().as_u16(), want);
        }
        assert_eq!(
            JambonzError::from(CommandError::NotFound).to_string(),
            CALL_NOT_FOUND
        );
    }
}
