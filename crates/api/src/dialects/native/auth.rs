//! API-key bearer auth of the native API: the shared check of `dialects/api_key.rs` (the
//! password guessing defence first: a banned source or locked identity gets 429
//! (`rate_limited`) with `Retry-After` before the key is looked at; an unknown key counts as a
//! failure), mapped to the native error shape.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};

use crate::body::with_retry_after;
use crate::dialects::api_key::{self, KeyRefusal};
use crate::guard::Retry;
use crate::native::error::NativeError;
use crate::AppState;

/// The account whose API key authenticated the request.
#[derive(Debug, Clone)]
pub struct ApiAccount {
    pub account_id: String,
    pub key_id: String,
}

fn too_many(retry: &Retry) -> Response {
    let err = NativeError::TooManyRequests(format!(
        "too many failed authentication attempts; retry in {} seconds",
        retry.after_secs()
    ));
    with_retry_after(err.into_response(), retry)
}

impl FromRequestParts<AppState> for ApiAccount {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let unauthorized = |msg: &str| NativeError::Unauthorized(msg.into()).into_response();
        match api_key::verify(parts, &state.engine, &state.guard, &state.user_tokens).await {
            Ok(key) => Ok(ApiAccount {
                account_id: key.account_id,
                key_id: key.key_id,
            }),
            Err(KeyRefusal::Missing) => Err(unauthorized(
                "missing credentials: send Authorization: Bearer <API key>",
            )),
            Err(KeyRefusal::Unsupported) => Err(unauthorized(
                "unsupported Authorization header: send Authorization: Bearer <API key>",
            )),
            Err(KeyRefusal::TooMany(retry)) => Err(too_many(&retry)),
            Err(KeyRefusal::Invalid) => Err(unauthorized("invalid API key")),
            // A valid user token of a dialect is a real credential, just not for this API.
            Err(KeyRefusal::UserToken) => Err(NativeError::Forbidden(
                "user access tokens cannot use the native API; use an API key".into(),
            )
            .into_response()),
            Err(KeyRefusal::Store(e)) => Err(NativeError::from(e).into_response()),
        }
    }
}
