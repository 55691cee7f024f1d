//! `Authorization: Bearer <API key>` (the account's API keys, checked by the shared
//! [`crate::dialects::api_key`] helper behind the password guessing defence), and the
//! `{account_sid}` of the path, which must be the key's account.

use std::collections::HashMap;

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};

use super::error::{JambonzError, INSUFFICIENT_PRIVILEGES};
use super::JambonzState;
use crate::dialects::api_key::{self, KeyRefusal};

/// The account of the request's API key (the path's `{account_sid}`, if any, is that account).
#[derive(Debug, Clone)]
pub struct JambonzAccount {
    pub account_id: String,
}

fn refusal(r: KeyRefusal) -> JambonzError {
    match r {
        KeyRefusal::Missing => JambonzError::Unauthorized(
            "missing credentials: send Authorization: Bearer <api key>".into(),
        ),
        KeyRefusal::Unsupported => JambonzError::Unauthorized(
            "unsupported Authorization header: send Authorization: Bearer <api key>".into(),
        ),
        KeyRefusal::Invalid => JambonzError::Unauthorized("invalid api key".into()),
        KeyRefusal::UserToken => JambonzError::Forbidden(
            "user access tokens cannot use the jambonz API; use an api key".into(),
        ),
        KeyRefusal::TooMany(retry) => JambonzError::TooManyRequests {
            message: format!(
                "too many failed authentication attempts; retry in {} seconds",
                retry.after_secs()
            ),
            retry: Some(retry),
        },
        KeyRefusal::Store(e) => e.into(),
    }
}

impl FromRequestParts<JambonzState> for JambonzAccount {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &JambonzState,
    ) -> Result<Self, Self::Rejection> {
        let key = api_key::verify(parts, &state.engine, &state.guard, &state.user_tokens)
            .await
            .map_err(|r| refusal(r).into_response())?;
        // Routes without parameters have no path to check.
        let params = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map(|p| p.0)
            .unwrap_or_default();
        if let Some(sid) = params.get("account_sid") {
            if *sid != key.account_id {
                tracing::debug!(path_account = %sid, "jambonz request for another account");
                return Err(JambonzError::Forbidden(INSUFFICIENT_PRIVILEGES.into()).into_response());
            }
        }
        Ok(JambonzAccount {
            account_id: key.account_id,
        })
    }
}
