//! API-key bearer auth of the native API.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::body::{credentials, Credentials};
use crate::native::error::NativeError;
use crate::AppState;

/// The account whose API key authenticated the request.
#[derive(Debug, Clone)]
pub struct ApiAccount {
    pub account_id: String,
    pub key_id: String,
}

impl FromRequestParts<AppState> for ApiAccount {
    type Rejection = NativeError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = match credentials(&parts.headers) {
            Credentials::Bearer(t) => t,
            Credentials::None => {
                return Err(NativeError::Unauthorized(
                    "missing credentials: send Authorization: Bearer <API key>".into(),
                ))
            }
            Credentials::Basic { .. } | Credentials::Malformed => {
                return Err(NativeError::Unauthorized(
                    "unsupported Authorization header: send Authorization: Bearer <API key>".into(),
                ))
            }
        };
        let store = state.engine.store();
        if let Some(key) = store.verify_api_key(&token).await? {
            return Ok(ApiAccount {
                account_id: key.account_id,
                key_id: key.id,
            });
        }
        // A valid user token of a dialect is a real credential, just not for this API.
        if crate::sipgate::auth::is_valid_user_token(state, &token).await {
            return Err(NativeError::Forbidden(
                "user access tokens cannot use the native API; use an API key".into(),
            ));
        }
        Err(NativeError::Unauthorized("invalid API key".into()))
    }
}
