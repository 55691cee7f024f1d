//! Errors of the api19/RestComm dialect and their one mapping to statuses, in RestComm's
//! shape: JSON `{"code", "message", "more_info", "status"}` on `.json` paths, else XML
//! `<RestcommResponse><RestException><Code/><Message/><MoreInfo/><Status/></RestException>`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hookflash_engine::CommandError;
use hookflash_store::StoreError;
use serde_json::json;

use super::render::{xml_escape, Format};
use crate::guard::Retry;

pub const CALL_NOT_FOUND: &str = "The requested resource was not found";

#[derive(Debug, thiserror::Error)]
pub enum Api19Error {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    NotFound(String),
    /// The request is understood but the server cannot give what it asks for here.
    #[error("{0}")]
    NotAcceptable(String),
    /// Not possible in the call's state (canceling an answered call).
    #[error("{0}")]
    Conflict(String),
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

impl Api19Error {
    pub fn status(&self) -> StatusCode {
        match self {
            Api19Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Api19Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Api19Error::NotFound(_) => StatusCode::NOT_FOUND,
            Api19Error::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            Api19Error::Conflict(_) => StatusCode::CONFLICT,
            Api19Error::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Api19Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Api19Error::GatewayTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Api19Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// RestComm's (TwiML-family) error code.
    pub fn code(&self) -> u32 {
        match self {
            Api19Error::BadRequest(_) => 20001,
            Api19Error::Unauthorized(_) => 20003,
            Api19Error::NotFound(_) => 20404,
            Api19Error::NotAcceptable(_) => 20406,
            Api19Error::Conflict(_) => 21220,
            Api19Error::TooManyRequests { .. } => 20429,
            Api19Error::Unavailable(_) => 20503,
            Api19Error::GatewayTimeout(_) => 20504,
            Api19Error::Internal(_) => 20500,
        }
    }

    pub fn bad(msg: impl Into<String>) -> Self {
        Api19Error::BadRequest(msg.into())
    }

    pub fn call_not_found() -> Self {
        Api19Error::NotFound(CALL_NOT_FOUND.into())
    }

    /// The response in `format`.
    pub fn render(self, format: Format) -> Response {
        let status = self.status();
        let code = self.code();
        let message = self.to_string();
        let more_info = format!("https://docs.restcomm.com/errors/{code}");
        let retry = match &self {
            Api19Error::TooManyRequests { retry, .. } => *retry,
            _ => None,
        };
        let mut resp = match format {
            Format::Json => (
                status,
                axum::Json(json!({
                    "code": code, "message": message, "more_info": more_info,
                    "status": status.as_u16(),
                })),
            )
                .into_response(),
            Format::Xml => {
                let body = format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<RestcommResponse><RestException><Code>{code}</Code><Message>{}</Message><MoreInfo>{}</MoreInfo><Status>{}</Status></RestException></RestcommResponse>",
                    xml_escape(&message),
                    xml_escape(&more_info),
                    status.as_u16()
                );
                (status, [(header::CONTENT_TYPE, "application/xml")], body).into_response()
            }
        };
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"Restcomm\""),
            );
        }
        if let Some(retry) = retry {
            resp = crate::body::with_retry_after(resp, &retry);
        }
        resp
    }
}

/// The one place where engine command errors become RestComm errors.
impl From<CommandError> for Api19Error {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::NotFound => Api19Error::call_not_found(),
            CommandError::WrongState { state } => {
                Api19Error::Conflict(format!("not possible while the call is {state}"))
            }
            CommandError::Failed { status, reason } if status >= 500 => {
                Api19Error::Unavailable(format!("{status} {reason}"))
            }
            CommandError::Failed { status, reason } => Api19Error::Conflict(format!(
                "the phone refused the change ({status} {reason}); the call is unchanged"
            )),
            CommandError::Invalid(why)
            | CommandError::Media(why)
            | CommandError::BadTarget(why) => Api19Error::BadRequest(why),
            CommandError::NotPermitted(why) => Api19Error::Unauthorized(why),
            CommandError::Limited(why) => Api19Error::TooManyRequests {
                message: why,
                retry: None,
            },
            e @ CommandError::NodeUnreachable { .. } => Api19Error::Unavailable(e.to_string()),
            e @ CommandError::NodeTimeout { .. } => Api19Error::GatewayTimeout(e.to_string()),
        }
    }
}

impl From<StoreError> for Api19Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Invalid(why) => Api19Error::BadRequest(why),
            StoreError::Conflict(why) => Api19Error::Conflict(why),
            StoreError::NotFound(what) => Api19Error::NotFound(format!("{what} not found")),
            other => {
                tracing::warn!(error = %other, "store error in the api19 dialect");
                Api19Error::Internal("internal error".into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookflash_engine::WrongState;

    #[test]
    fn command_errors_map_to_restcomm_statuses() {
        let cases = [
            (CommandError::NotFound, 404),
            (
                CommandError::WrongState {
                    state: WrongState::Ringing,
                },
                409,
            ),
            (CommandError::Invalid("x".into()), 400),
            (CommandError::BadTarget("x".into()), 400),
            (CommandError::Limited("x".into()), 429),
            (CommandError::NodeUnreachable { node: "n2".into() }, 503),
            (CommandError::NodeTimeout { node: "n2".into() }, 504),
            (
                CommandError::Failed {
                    status: 503,
                    reason: "x".into(),
                },
                503,
            ),
        ];
        for (e, want) in cases {
            assert_eq!(Api19Error::from(e).status().as_u16(), want);
        }
    }
}
