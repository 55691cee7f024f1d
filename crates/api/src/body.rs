//! Request helpers shared by the dialects: JSON bodies (parsed whatever the Content-Type says,
//! so curl lines without the header work too) and the Authorization header.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::Response;
use base64::Engine as _;
use serde::de::DeserializeOwned;

use crate::guard::Retry;

/// The TCP peer's IP address (the server's accept loop attaches `ConnectInfo`); never a
/// header such as `X-Forwarded-For`. None when the router runs without a server (tests).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientIp(pub Option<IpAddr>);

impl ClientIp {
    pub(crate) fn of(parts: &Parts) -> ClientIp {
        ClientIp(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
        )
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp::of(parts))
    }
}

/// Adds `Retry-After` (seconds) to a refusal of the password guessing defence.
pub(crate) fn with_retry_after(mut resp: Response, retry: &Retry) -> Response {
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry.after_secs()));
    resp
}

/// Parses a JSON body; the error text says what is wrong (for a 400).
pub(crate) fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err("a JSON body is required".into());
    }
    serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))
}

/// The credentials in an `Authorization` header.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Credentials {
    None,
    Bearer(String),
    Basic {
        user: String,
        password: String,
    },
    /// Present but unusable (unknown scheme, bad base64, no ':').
    Malformed,
}

pub(crate) fn credentials(headers: &HeaderMap) -> Credentials {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Credentials::None;
    };
    let Ok(value) = value.to_str() else {
        return Credentials::Malformed;
    };
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
        return Credentials::Bearer(rest.to_string());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()
            .and_then(|b| String::from_utf8(b).ok());
        if let Some((user, password)) = decoded.as_deref().and_then(|d| d.split_once(':')) {
            return Credentials::Basic {
                user: user.to_string(),
                password: password.to_string(),
            };
        }
    }
    Credentials::Malformed
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn authorization_schemes() {
        assert_eq!(credentials(&HeaderMap::new()), Credentials::None);
        assert_eq!(
            credentials(&with("Bearer abc")),
            Credentials::Bearer("abc".into())
        );
        assert_eq!(
            credentials(&with("bearer  abc ")),
            Credentials::Bearer("abc".into())
        );
        // "token-ABC123:secret"
        assert_eq!(
            credentials(&with("Basic dG9rZW4tQUJDMTIzOnNlY3JldA==")),
            Credentials::Basic {
                user: "token-ABC123".into(),
                password: "secret".into()
            }
        );
        assert_eq!(credentials(&with("Bearer")), Credentials::Malformed);
        assert_eq!(credentials(&with("Basic !!!")), Credentials::Malformed);
        assert_eq!(credentials(&with("Digest x")), Credentials::Malformed);
    }

    #[test]
    fn json_bodies() {
        #[derive(serde::Deserialize, Debug)]
        struct V {
            value: bool,
        }
        assert!(parse_json::<V>(br#"{"value": true}"#).unwrap().value);
        assert!(parse_json::<V>(b"").is_err());
        assert!(parse_json::<V>(br#"{"value": "yes"}"#).is_err());
        assert!(parse_json::<V>(br#"{"value": tru"#).is_err());
        assert!(parse_json::<V>(br#"{}"#).is_err());
    }
}
