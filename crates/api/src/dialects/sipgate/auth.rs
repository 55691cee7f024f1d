//! sipgate authentication: the password-grant token endpoint, and the credentials every `/v2`
//! route accepts — `Bearer <token>` (from the token endpoint), `Basic tokenId:token` (a
//! personal access token) or `Basic <login>:<password>`.
//!
//! Every credential check goes through the password guessing defence ([`crate::guard`]): a
//! banned source or locked identity gets 429 with `Retry-After` before its credential is
//! looked at; a wrong password, unknown token id or badly signed token counts as a failure.
//! A Bearer token must be signed by us, unexpired, at most [`jwt::MAX_TOKEN_LIFETIME_SECS`]
//! long, and issued no earlier than the user's last password change.
//!
//! Login name of a user: `<extension>@<account realm>` (e.g. `201@acme.local`; it has the
//! shape of an e-mail address, which the sipgateio SDK requires); the password is the user's
//! SIP password, checked against the stored digest HA1.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hookflash_engine::Engine;
use hookflash_store::{is_pat_id, Account, StoreError, User};
use serde_json::json;
use tracing::{debug, info};

use super::SipgateState;
use crate::body::{credentials, with_retry_after, ClientIp, Credentials};
use crate::guard::{Identity, Retry};
use crate::sipgate::error::SipgateError;
use crate::user_token::{self as jwt, Claims, JwtError, KeyCell};

/// Lifetime of issued access tokens.
pub const TOKEN_TTL_SECS: i64 = 3600;
const _: () = assert!(TOKEN_TTL_SECS <= jwt::MAX_TOKEN_LIFETIME_SECS);

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The user behind a sipgate request, with their account.
#[derive(Debug, Clone)]
pub struct SipgateUser {
    pub user: User,
    pub account: Account,
}

/// `<extension>@<realm>`
pub fn login_name(extension: &str, realm: &str) -> String {
    format!("{extension}@{realm}")
}

async fn by_password(
    state: &SipgateState,
    login: &str,
    password: &str,
) -> Result<Option<User>, SipgateError> {
    let Some((ext, realm)) = login.rsplit_once('@') else {
        return Ok(None);
    };
    Ok(state
        .engine
        .store()
        .verify_user_password(realm, ext, password)
        .await?)
}

/// Issues a token for a user (also used by tests to make tokens with other lifetimes). A
/// lifetime over [`jwt::MAX_TOKEN_LIFETIME_SECS`] is capped to it.
pub async fn issue_token(
    engine: &Engine,
    keys: &KeyCell,
    user: &User,
    realm: &str,
    ttl_secs: i64,
) -> Result<String, SipgateError> {
    let key = keys.get(engine.store()).await?;
    let ttl_secs = ttl_secs.min(jwt::MAX_TOKEN_LIFETIME_SECS);
    let now = now_secs();
    let claims = Claims {
        iss: jwt::ISSUER.into(),
        sub: user.id.clone(),
        acc: user.account_id.clone(),
        preferred_username: login_name(&user.extension, realm),
        iat: now,
        exp: now + ttl_secs,
        jti: uuid::Uuid::new_v4().to_string(),
    };
    Ok(jwt::sign(&claims, key))
}

/// Why a Bearer token was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum TokenRefusal {
    #[error(transparent)]
    Jwt(#[from] JwtError),
    #[error("the token's user no longer exists")]
    UserGone,
    #[error("the token was issued before the user's password was last changed")]
    PasswordChanged,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl TokenRefusal {
    /// A token we did not sign (or no token at all): counts as a guess. Our own tokens that
    /// expired or were revoked do not.
    pub fn is_guess(&self) -> bool {
        matches!(
            self,
            TokenRefusal::Jwt(JwtError::Malformed | JwtError::BadSignature)
        )
    }
}

/// The user of a valid sipgate user token: signed by us, unexpired, not longer-lived than the
/// maximum, its user still in its account, issued no earlier than the user's last password
/// change.
pub async fn verify_user_token(
    engine: &Engine,
    keys: &KeyCell,
    token: &str,
) -> Result<User, TokenRefusal> {
    let store = engine.store();
    let key = keys.get(store).await?;
    let claims = jwt::verify(token, key, now_secs())?;
    let user = store
        .user_by_id(&claims.sub)
        .await?
        .filter(|u| u.account_id == claims.acc)
        .ok_or(TokenRefusal::UserGone)?;
    let changed_at = store
        .user_password_changed_at(&user.id)
        .await?
        .ok_or(TokenRefusal::UserGone)?;
    if claims.iat < changed_at {
        return Err(TokenRefusal::PasswordChanged);
    }
    Ok(user)
}

/// True when `token` is a valid sipgate user token ([`verify_user_token`]).
pub async fn is_valid_user_token(state: &SipgateState, token: &str) -> bool {
    verify_user_token(&state.engine, &state.keys, token)
        .await
        .is_ok()
}

/// The identity a Bearer credential targets: a token's subject when it has the shape of one
/// of our tokens (signature unchecked: it only names whom a guess is aimed at), else the
/// credential itself (hashed).
pub(crate) fn bearer_identity(token: &str) -> Identity {
    match jwt::unverified_claims(token) {
        Some(claims) => Identity::new("sub", &claims.sub),
        None => Identity::secret("bearer", token),
    }
}

/// The identity of a `<extension>@<realm>` login (token endpoint and Basic auth alike).
fn login_identity(login: &str) -> Identity {
    Identity::new("login", login)
}

fn too_many(retry: &Retry) -> Response {
    let err = SipgateError::TooManyRequests(format!(
        "Too many failed authentication attempts; retry in {} seconds",
        retry.after_secs()
    ));
    with_retry_after(err.into_response(), retry)
}

fn oauth_too_many(retry: &Retry) -> Response {
    let resp = oauth_error(
        StatusCode::TOO_MANY_REQUESTS,
        "temporarily_unavailable",
        &format!(
            "Too many failed login attempts; retry in {} seconds",
            retry.after_secs()
        ),
    );
    with_retry_after(resp, retry)
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

/// `POST /login/sipgate-apps/protocol/openid-connect/token` (form: `grant_type=password`,
/// `username`, `password`, `client_id` ignored) -> `{"token", "access_token", "expires_in",
/// "token_type"}`. Errors in the OAuth 2.0 shape (`{"error", "error_description"}`).
pub(crate) async fn token(
    State(state): State<SipgateState>,
    ClientIp(source): ClientIp,
    body: Bytes,
) -> Response {
    let Ok(form) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the body must be application/x-www-form-urlencoded",
        );
    };
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    match field("grant_type") {
        Some("password") => {}
        Some(_) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "only grant_type=password is supported",
            )
        }
        None => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "missing grant_type",
            )
        }
    }
    let (Some(username), Some(password)) = (field("username"), field("password")) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "username and password are required",
        );
    };
    let identity = login_identity(username);
    if let Err(retry) = state.guard.check(source, &identity, Instant::now()) {
        debug!(username, source = ?source, "sipgate login refused: too many failures");
        return oauth_too_many(&retry);
    }
    let user = match by_password(&state, username, password).await {
        Ok(Some(u)) => u,
        Ok(None) => {
            debug!(username, source = ?source, "sipgate login refused");
            if let Err(retry) = state.guard.failure(source, &identity, Instant::now()) {
                return oauth_too_many(&retry);
            }
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_grant",
                "Invalid user credentials",
            );
        }
        Err(e) => return e.into_response(),
    };
    state.guard.success(&identity);
    let realm = username
        .rsplit_once('@')
        .map(|(_, r)| r)
        .unwrap_or_default();
    match issue_token(&state.engine, &state.keys, &user, realm, TOKEN_TTL_SECS).await {
        Ok(token) => {
            info!(user = %user.extension, "sipgate access token issued");
            (
                StatusCode::OK,
                [(header::CACHE_CONTROL, "no-store")],
                Json(json!({
                    "token": token,
                    "access_token": token,
                    "expires_in": TOKEN_TTL_SECS,
                    "refresh_expires_in": 0,
                    "token_type": "Bearer",
                    "scope": "all",
                })),
            )
                .into_response()
        }
        Err(e) => e.into_response(),
    }
}

impl FromRequestParts<SipgateState> for SipgateUser {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &SipgateState,
    ) -> Result<Self, Self::Rejection> {
        let store = state.engine.store();
        let source = ClientIp::of(parts).0;
        let creds = credentials(&parts.headers);
        let identity = match &creds {
            Credentials::None => {
                return Err(SipgateError::Unauthorized(
                    "Full authentication is required to access this resource".into(),
                )
                .into_response())
            }
            Credentials::Malformed => {
                return Err(
                    SipgateError::Unauthorized("Unsupported Authorization header".into())
                        .into_response(),
                )
            }
            Credentials::Bearer(token) => bearer_identity(token),
            Credentials::Basic { user, .. } if is_pat_id(user) => Identity::new("pat", user),
            Credentials::Basic { user, .. } => login_identity(user),
        };
        if let Err(retry) = state.guard.check(source, &identity, Instant::now()) {
            debug!(identity = identity.label(), source = ?source,
                "sipgate request refused: too many failures");
            return Err(too_many(&retry));
        }
        // Err((error, counts as a guess))
        let checked: Result<User, (SipgateError, bool)> = match creds {
            Credentials::None | Credentials::Malformed => Err((
                SipgateError::Unauthorized("Unsupported Authorization header".into()),
                false,
            )),
            Credentials::Bearer(token) => {
                match verify_user_token(&state.engine, &state.keys, &token).await {
                    Ok(user) => Ok(user),
                    Err(TokenRefusal::Store(e)) => Err((e.into(), false)),
                    Err(refusal) => {
                        let guess = refusal.is_guess();
                        let message = match refusal {
                            TokenRefusal::Jwt(JwtError::Expired) => "The access token has expired",
                            TokenRefusal::Jwt(JwtError::TooLong) => {
                                tracing::warn!(source = ?source,
                                "sipgate token with a lifetime over the maximum refused");
                                "Invalid access token"
                            }
                            TokenRefusal::UserGone => "The token's user no longer exists",
                            TokenRefusal::PasswordChanged => {
                                "The access token was issued before the password was changed"
                            }
                            _ => "Invalid access token",
                        };
                        Err((SipgateError::Unauthorized(message.into()), guess))
                    }
                }
            }
            Credentials::Basic { user, password } if is_pat_id(&user) => {
                match store.verify_pat(&user, &password).await {
                    Ok(Some((_, u))) => Ok(u),
                    Ok(None) => Err((
                        SipgateError::Unauthorized("Invalid personal access token".into()),
                        true,
                    )),
                    Err(e) => Err((e.into(), false)),
                }
            }
            Credentials::Basic { user, password } => {
                match by_password(state, &user, &password).await {
                    Ok(Some(u)) => Ok(u),
                    Ok(None) => Err((
                        SipgateError::Unauthorized("Invalid user credentials".into()),
                        true,
                    )),
                    Err(e) => Err((e, false)),
                }
            }
        };
        let user = match checked {
            Ok(user) => {
                state.guard.success(&identity);
                user
            }
            Err((err, guess)) => {
                if guess {
                    debug!(identity = identity.label(), source = ?source,
                        "sipgate credentials refused");
                    if let Err(retry) = state.guard.failure(source, &identity, Instant::now()) {
                        return Err(too_many(&retry));
                    }
                }
                return Err(err.into_response());
            }
        };
        let account = store
            .account_by_id(&user.account_id)
            .await
            .map_err(|e| SipgateError::from(e).into_response())?
            .ok_or_else(|| {
                SipgateError::Unauthorized("The user's account no longer exists".into())
                    .into_response()
            })?;
        Ok(SipgateUser { user, account })
    }
}
