//! sipgate authentication: the password-grant token endpoint, and the credentials every `/v2`
//! route accepts — `Bearer <token>` (from the token endpoint), `Basic tokenId:token` (a
//! personal access token) or `Basic <login>:<password>`.
//!
//! Login name of a user: `<extension>@<account realm>` (e.g. `201@acme.local`; it has the
//! shape of an e-mail address, which the sipgateio SDK requires); the password is the user's
//! SIP password, checked against the stored digest HA1.

use axum::body::Bytes;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hookflash_store::{is_pat_id, Account, User};
use serde_json::json;
use tracing::{debug, info};

use crate::body::{credentials, Credentials};
use crate::sipgate::error::SipgateError;
use crate::sipgate::jwt::{self, Claims, JwtError};
use crate::AppState;

/// Lifetime of issued access tokens.
pub const TOKEN_TTL_SECS: i64 = 3600;

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
    state: &AppState,
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

/// Issues a token for a user (also used by tests to make tokens with other lifetimes).
pub async fn issue_token(
    state: &AppState,
    user: &User,
    realm: &str,
    ttl_secs: i64,
) -> Result<String, SipgateError> {
    let key = state.sipgate_keys.get(state.engine.store()).await?;
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

/// True when `token` is a valid (signed, unexpired) sipgate user token.
pub async fn is_valid_user_token(state: &AppState, token: &str) -> bool {
    match state.sipgate_keys.get(state.engine.store()).await {
        Ok(key) => jwt::verify(token, key, now_secs()).is_ok(),
        Err(_) => false,
    }
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
pub(crate) async fn token(State(state): State<AppState>, body: Bytes) -> Response {
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
    let user = match by_password(&state, username, password).await {
        Ok(Some(u)) => u,
        Ok(None) => {
            debug!(username, "sipgate login refused");
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_grant",
                "Invalid user credentials",
            );
        }
        Err(e) => return e.into_response(),
    };
    let realm = username
        .rsplit_once('@')
        .map(|(_, r)| r)
        .unwrap_or_default();
    match issue_token(&state, &user, realm, TOKEN_TTL_SECS).await {
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

impl FromRequestParts<AppState> for SipgateUser {
    type Rejection = SipgateError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let store = state.engine.store();
        let user = match credentials(&parts.headers) {
            Credentials::None => {
                return Err(SipgateError::Unauthorized(
                    "Full authentication is required to access this resource".into(),
                ))
            }
            Credentials::Malformed => {
                return Err(SipgateError::Unauthorized(
                    "Unsupported Authorization header".into(),
                ))
            }
            Credentials::Bearer(token) => {
                let key = state.sipgate_keys.get(store).await?;
                let claims = jwt::verify(&token, key, now_secs()).map_err(|e| {
                    SipgateError::Unauthorized(match e {
                        JwtError::Expired => "The access token has expired".into(),
                        _ => "Invalid access token".into(),
                    })
                })?;
                store
                    .user_by_id(&claims.sub)
                    .await?
                    .filter(|u| u.account_id == claims.acc)
                    .ok_or_else(|| {
                        SipgateError::Unauthorized("The token's user no longer exists".into())
                    })?
            }
            Credentials::Basic { user, password } if is_pat_id(&user) => store
                .verify_pat(&user, &password)
                .await?
                .map(|(_, u)| u)
                .ok_or_else(|| {
                    SipgateError::Unauthorized("Invalid personal access token".into())
                })?,
            Credentials::Basic { user, password } => by_password(state, &user, &password)
                .await?
                .ok_or_else(|| SipgateError::Unauthorized("Invalid user credentials".into()))?,
        };
        let account = store
            .account_by_id(&user.account_id)
            .await?
            .ok_or_else(|| {
                SipgateError::Unauthorized("The user's account no longer exists".into())
            })?;
        Ok(SipgateUser { user, account })
    }
}
