//! API-key bearer auth of the native API, behind the password guessing defence
//! ([`crate::guard`]): a banned source or locked identity gets 429 (`rate_limited`) with
//! `Retry-After` before the key is looked at; an unknown key counts as a failure.

use std::time::Instant;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};

use crate::body::{credentials, with_retry_after, ClientIp, Credentials};
use crate::guard::Retry;
use crate::native::error::NativeError;
use crate::sipgate::auth::{bearer_identity, verify_user_token, TokenRefusal};
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
        let token = match credentials(&parts.headers) {
            Credentials::Bearer(t) => t,
            Credentials::None => {
                return Err(NativeError::Unauthorized(
                    "missing credentials: send Authorization: Bearer <API key>".into(),
                )
                .into_response())
            }
            Credentials::Basic { .. } | Credentials::Malformed => {
                return Err(NativeError::Unauthorized(
                    "unsupported Authorization header: send Authorization: Bearer <API key>".into(),
                )
                .into_response())
            }
        };
        let source = ClientIp::of(parts).0;
        let identity = bearer_identity(&token);
        if let Err(retry) = state.guard.check(source, &identity, Instant::now()) {
            tracing::debug!(identity = identity.label(), source = ?source,
                "native API request refused: too many failures");
            return Err(too_many(&retry));
        }
        let store = state.engine.store();
        let key = store
            .verify_api_key(&token)
            .await
            .map_err(|e| NativeError::from(e).into_response())?;
        if let Some(key) = key {
            state.guard.success(&identity);
            return Ok(ApiAccount {
                account_id: key.account_id,
                key_id: key.id,
            });
        }
        match verify_user_token(&state.engine, &state.user_tokens, &token).await {
            // A valid user token of a dialect is a real credential, just not for this API.
            Ok(_) => {
                state.guard.success(&identity);
                Err(NativeError::Forbidden(
                    "user access tokens cannot use the native API; use an API key".into(),
                )
                .into_response())
            }
            Err(TokenRefusal::Store(e)) => Err(NativeError::from(e).into_response()),
            Err(refusal) => {
                if refusal.is_guess() {
                    tracing::debug!(identity = identity.label(), source = ?source,
                        "native API key refused");
                    if let Err(retry) = state.guard.failure(source, &identity, Instant::now()) {
                        return Err(too_many(&retry));
                    }
                }
                Err(NativeError::Unauthorized("invalid API key".into()).into_response())
            }
        }
    }
}
