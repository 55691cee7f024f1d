//! Account API keys as a Bearer credential, behind the password guessing defence
//! ([`crate::guard`]), for every dialect that authenticates with them (the native API's
//! `Bearer <API key>`, jambonz's `Authorization: Bearer <api key>`). Each dialect maps a
//! [`KeyRefusal`] to its own error shape; the checks and their order live here only:
//! a banned source or locked identity is refused before the key is looked at; an unknown
//! key counts as a failure; a valid user access token (sipgate's) is recognised and refused
//! without counting as a guess.

use std::time::Instant;

use axum::http::request::Parts;
use hookflash_engine::Engine;
use hookflash_store::StoreError;

use crate::body::{credentials, ClientIp, Credentials};
use crate::guard::{AuthGuard, Retry};
use crate::sipgate::auth::{bearer_identity, verify_user_token, TokenRefusal};
use crate::user_token::KeyCell;

/// The account whose API key authenticated a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyAccount {
    pub account_id: String,
    pub key_id: String,
}

/// Why a request's API key was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum KeyRefusal {
    #[error("missing credentials")]
    Missing,
    /// Basic, or a header that is not `Bearer <token>`.
    #[error("unsupported Authorization header")]
    Unsupported,
    /// The source is banned or the identity locked (too many failures).
    #[error("too many failed authentication attempts")]
    TooMany(Retry),
    #[error("invalid API key")]
    Invalid,
    /// A valid user access token: a real credential, not one for an account API.
    #[error("user access tokens cannot be used here")]
    UserToken,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Verifies the request's `Authorization: Bearer <API key>`.
pub async fn verify(
    parts: &Parts,
    engine: &Engine,
    guard: &AuthGuard,
    user_tokens: &KeyCell,
) -> Result<KeyAccount, KeyRefusal> {
    let token = match credentials(&parts.headers) {
        Credentials::Bearer(t) => t,
        Credentials::None => return Err(KeyRefusal::Missing),
        Credentials::Basic { .. } | Credentials::Malformed => return Err(KeyRefusal::Unsupported),
    };
    verify_token(parts, &token, engine, guard, user_tokens).await
}

/// Verifies an API key the dialect took from its own credential form (api19's HTTP Basic
/// `AccountSid:AuthToken` or `API_Token:`), with the same guard and order as [`verify`].
pub async fn verify_token(
    parts: &Parts,
    token: &str,
    engine: &Engine,
    guard: &AuthGuard,
    user_tokens: &KeyCell,
) -> Result<KeyAccount, KeyRefusal> {
    let token = token.to_string();
    let source = ClientIp::of(parts).0;
    let identity = bearer_identity(&token);
    guard
        .check(source, &identity, Instant::now())
        .map_err(KeyRefusal::TooMany)?;
    if let Some(key) = engine.store().verify_api_key(&token).await? {
        guard.success(&identity);
        return Ok(KeyAccount {
            account_id: key.account_id,
            key_id: key.id,
        });
    }
    match verify_user_token(engine, user_tokens, &token).await {
        Ok(_) => {
            guard.success(&identity);
            Err(KeyRefusal::UserToken)
        }
        Err(TokenRefusal::Store(e)) => Err(KeyRefusal::Store(e)),
        Err(refusal) => {
            if refusal.is_guess() {
                tracing::debug!(identity = identity.label(), source = ?source, "API key refused");
                guard
                    .failure(source, &identity, Instant::now())
                    .map_err(KeyRefusal::TooMany)?;
            }
            Err(KeyRefusal::Invalid)
        }
    }
}
