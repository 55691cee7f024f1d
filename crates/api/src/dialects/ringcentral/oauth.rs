//! RingCentral OAuth: `POST /restapi/oauth/token` (HTTP Basic client credentials of one of the
//! account's OAuth apps; grants `password`, `urn:ietf:params:oauth:grant-type:jwt-bearer` and
//! `refresh_token`), `POST /restapi/oauth/revoke`, and the Bearer check of every REST route.
//!
//! Tokens are opaque random strings; the store keeps their SHA-256 with the pair's expiry, so
//! they survive a restart and a revocation or refresh (rotation: the old pair is deleted)
//! takes effect at once. A token issued before its user's last password change is refused.
//! JWT credentials (`hookflash user jwt`) are HS256 JWTs signed with a key of their own.
//!
//! Every credential check goes through the password guessing defence ([`crate::guard`]).

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hookflash_store::{Account, IssuedTokens, OAuthApp, Store, StoreError, User};
use serde_json::json;
use tracing::{debug, info};

use super::error::{OAuthError, RcError};
use super::{now_secs, RcState};
use crate::body::{credentials, with_retry_after, ClientIp, Credentials};
use crate::guard::{Identity, Retry};
use crate::user_token::{self as jwt, Claims, JwtError, KeyCell};

/// Name of the JWT credentials' signing secret in the store.
pub const JWT_SECRET_NAME: &str = "ringcentral_jwt_credential_hs256";
/// The JWT bearer grant's `grant_type`.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Form bodies larger than this are refused before parsing.
const MAX_FORM_BYTES: usize = 16 * 1024;

/// Token lifetimes (`[oauth]` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OAuthLifetimes {
    pub access_secs: i64,
    pub refresh_secs: i64,
    pub jwt_credential_max_secs: i64,
}

impl Default for OAuthLifetimes {
    fn default() -> Self {
        OAuthLifetimes {
            access_secs: 3600,
            refresh_secs: 7 * 24 * 3600,
            jwt_credential_max_secs: 365 * 24 * 3600,
        }
    }
}

/// A lifetime a client asked for: honoured when it is a positive number of seconds no longer
/// than the configured one (the SDK sends `-1` or its last `expires_in`; anything else is
/// ignored, as RingCentral does).
fn asked_ttl(asked: Option<&str>, configured: i64) -> i64 {
    match asked.and_then(|v| v.trim().parse::<i64>().ok()) {
        Some(v) if v > 0 && v <= configured => v,
        _ => configured,
    }
}

/// Issues a JWT credential for the user (the `assertion` of the JWT bearer grant), valid for
/// `ttl_secs` (capped to the configured maximum).
pub async fn issue_jwt_credential(
    store: &Store,
    user: &User,
    realm: &str,
    ttl_secs: i64,
    max_secs: i64,
) -> Result<String, StoreError> {
    let keys = KeyCell::named(JWT_SECRET_NAME);
    let key = keys.get(store).await?;
    let now = now_secs();
    let claims = Claims {
        iss: jwt::ISSUER.into(),
        sub: user.id.clone(),
        acc: user.account_id.clone(),
        preferred_username: format!("{}@{realm}", user.extension),
        iat: now,
        exp: now.saturating_add(ttl_secs.clamp(1, max_secs)),
        jti: uuid::Uuid::new_v4().to_string(),
    };
    Ok(jwt::sign(&claims, key))
}

fn too_many_oauth(retry: &Retry) -> Response {
    let err = OAuthError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "temporarily_unavailable",
        "CMN-301",
        format!(
            "Too many failed authentication attempts; retry in {} seconds",
            retry.after_secs()
        ),
    );
    with_retry_after(err.into_response(), retry)
}

/// The OAuth app named by the request's HTTP Basic credentials.
async fn client_app(
    state: &RcState,
    parts_headers: &axum::http::HeaderMap,
    source: Option<std::net::IpAddr>,
) -> Result<OAuthApp, Response> {
    let (client_id, secret) = match credentials(parts_headers) {
        Credentials::Basic { user, password } => (user, password),
        _ => return Err(OAuthError::invalid_client().into_response()),
    };
    let identity = Identity::new("oauth_client", &client_id);
    if let Err(retry) = state.guard.check(source, &identity, Instant::now()) {
        return Err(too_many_oauth(&retry));
    }
    match state
        .engine
        .store()
        .verify_oauth_client(&client_id, &secret)
        .await
    {
        Ok(Some(app)) => {
            state.guard.success(&identity);
            Ok(app)
        }
        Ok(None) => {
            debug!(client_id, source = ?source, "RingCentral OAuth client refused");
            if let Err(retry) = state.guard.failure(source, &identity, Instant::now()) {
                return Err(too_many_oauth(&retry));
            }
            Err(OAuthError::invalid_client().into_response())
        }
        Err(e) => Err(OAuthError::from(e).into_response()),
    }
}

type Form = Vec<(String, String)>;

fn parse_form(body: &[u8]) -> Result<Form, OAuthError> {
    if body.len() > MAX_FORM_BYTES {
        return Err(OAuthError::bad_request(
            "OAU-101",
            "The request body is too large",
        ));
    }
    serde_urlencoded::from_bytes::<Form>(body).map_err(|_| {
        OAuthError::bad_request(
            "OAU-101",
            "The body must be application/x-www-form-urlencoded",
        )
    })
}

fn field<'a>(form: &'a Form, name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The user a password-grant `username` names in the app's account: `201`, `201@realm`,
/// `+4930123456*201` (a number of the account and an extension), or `+4930123456` (the user
/// the number rings).
async fn user_by_login(
    store: &Store,
    account: &Account,
    username: &str,
) -> Result<Option<User>, StoreError> {
    let username = username.trim();
    if let Some((number, ext)) = username.rsplit_once('*') {
        let Some((n, _)) = store.lookup_number(number).await? else {
            return Ok(None);
        };
        if n.account_id != account.id {
            return Ok(None);
        }
        return store.user_by_extension(&account.id, ext).await;
    }
    if let Some((ext, realm)) = username.rsplit_once('@') {
        if !realm.eq_ignore_ascii_case(&account.realm) {
            return Ok(None);
        }
        return store.user_by_extension(&account.id, ext).await;
    }
    if username.starts_with('+') {
        return Ok(store
            .lookup_number(username)
            .await?
            .map(|(_, u)| u)
            .filter(|u| u.account_id == account.id));
    }
    match store.user_by_extension(&account.id, username).await? {
        Some(u) => Ok(Some(u)),
        None => Ok(store
            .lookup_number(username)
            .await?
            .map(|(_, u)| u)
            .filter(|u| u.account_id == account.id)),
    }
}

fn token_response(tokens: &IssuedTokens, user: &User) -> Response {
    let g = &tokens.grant;
    let now = now_secs();
    (
        StatusCode::OK,
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({
            "access_token": tokens.access_token,
            "token_type": "bearer",
            "expires_in": (g.access_expires_at - now).max(0),
            "refresh_token": tokens.refresh_token,
            "refresh_token_expires_in": (g.refresh_expires_at - now).max(0),
            "scope": "ReadAccounts CallControl ReadPresence TelephonySessions WebSocketsSubscription",
            "owner_id": user.id,
            "endpoint_id": g.id,
        })),
    )
        .into_response()
}

/// `POST /restapi/oauth/token`.
pub(crate) async fn token(
    State(state): State<RcState>,
    ClientIp(source): ClientIp,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let app = match client_app(&state, &headers, source).await {
        Ok(app) => app,
        Err(resp) => return resp,
    };
    match grant(&state, &app, source, &body).await {
        Ok(resp) => resp,
        Err(e) => e,
    }
}

async fn grant(
    state: &RcState,
    app: &OAuthApp,
    source: Option<std::net::IpAddr>,
    body: &[u8],
) -> Result<Response, Response> {
    let store = state.engine.store();
    let form = parse_form(body).map_err(IntoResponse::into_response)?;
    let life = state.lifetimes;
    let access_ttl = asked_ttl(field(&form, "access_token_ttl"), life.access_secs);
    let refresh_ttl = asked_ttl(field(&form, "refresh_token_ttl"), life.refresh_secs);
    let oauth = |e: OAuthError| e.into_response();
    let account = store
        .account_by_id(&app.account_id)
        .await
        .map_err(|e| oauth(e.into()))?
        .ok_or_else(|| oauth(OAuthError::invalid_client()))?;
    let user = match field(&form, "grant_type") {
        Some("password") => {
            let (Some(username), Some(password)) =
                (field(&form, "username"), field(&form, "password"))
            else {
                return Err(oauth(OAuthError::bad_request(
                    "OAU-101",
                    "Parameters [username] and [password] are required",
                )));
            };
            let identity = Identity::new("rc_login", &format!("{}/{username}", account.id));
            if let Err(retry) = state.guard.check(source, &identity, Instant::now()) {
                return Err(too_many_oauth(&retry));
            }
            let found = user_by_login(store, &account, username)
                .await
                .map_err(|e| oauth(e.into()))?;
            let verified = match found {
                Some(u) => store
                    .verify_user_password(&account.realm, &u.extension, password)
                    .await
                    .map_err(|e| oauth(e.into()))?,
                None => None,
            };
            match verified {
                Some(u) => {
                    state.guard.success(&identity);
                    u
                }
                None => {
                    debug!(username, source = ?source, "RingCentral password grant refused");
                    if let Err(retry) = state.guard.failure(source, &identity, Instant::now()) {
                        return Err(too_many_oauth(&retry));
                    }
                    return Err(oauth(OAuthError::invalid_grant(
                        "Invalid resource owner credentials",
                    )));
                }
            }
        }
        Some(JWT_BEARER) => {
            let Some(assertion) = field(&form, "assertion") else {
                return Err(oauth(OAuthError::bad_request(
                    "OAU-101",
                    "Parameter [assertion] is required",
                )));
            };
            let identity = crate::sipgate::auth::bearer_identity(assertion);
            if let Err(retry) = state.guard.check(source, &identity, Instant::now()) {
                return Err(too_many_oauth(&retry));
            }
            match verify_jwt_credential(state, assertion, &account).await {
                Ok(u) => {
                    state.guard.success(&identity);
                    u
                }
                Err((e, guess)) => {
                    if guess {
                        if let Err(retry) = state.guard.failure(source, &identity, Instant::now()) {
                            return Err(too_many_oauth(&retry));
                        }
                    }
                    return Err(oauth(e));
                }
            }
        }
        Some("refresh_token") => {
            let Some(refresh) = field(&form, "refresh_token") else {
                return Err(oauth(OAuthError::bad_request(
                    "OAU-101",
                    "Parameter [refresh_token] is required",
                )));
            };
            let identity = Identity::secret("rc_refresh", refresh);
            if let Err(retry) = state.guard.check(source, &identity, Instant::now()) {
                return Err(too_many_oauth(&retry));
            }
            let grant = store
                .oauth_grant_by_refresh(refresh)
                .await
                .map_err(|e| oauth(e.into()))?;
            let Some(grant) = grant.filter(|g| g.app_id == app.id) else {
                if let Err(retry) = state.guard.failure(source, &identity, Instant::now()) {
                    return Err(too_many_oauth(&retry));
                }
                return Err(oauth(OAuthError::invalid_grant("Token not found")));
            };
            if grant.refresh_expires_at <= now_secs() {
                return Err(oauth(OAuthError::invalid_grant("Token is expired")));
            }
            let user = live_user(store, &grant.user_id, &grant.account_id, grant.created_at)
                .await
                .map_err(|e| oauth(e.into()))?
                .ok_or_else(|| oauth(OAuthError::invalid_grant("Token is revoked")))?;
            // Rotation: the old pair is gone whatever happens next; a second use of the same
            // refresh token finds nothing.
            if !store
                .delete_oauth_grant(&grant.id)
                .await
                .map_err(|e| oauth(e.into()))?
            {
                return Err(oauth(OAuthError::invalid_grant("Token not found")));
            }
            state.guard.success(&identity);
            // A refreshed pair keeps no more refresh lifetime than the old one had left.
            let left = grant.refresh_expires_at - now_secs();
            let tokens = store
                .issue_oauth_tokens(app, &user.id, access_ttl.min(left), refresh_ttl.min(left))
                .await
                .map_err(|e| oauth(e.into()))?;
            info!(user = %user.extension, client_id = %app.client_id, "RingCentral token refreshed");
            return Ok(token_response(&tokens, &user));
        }
        Some(other) => {
            return Err(oauth(OAuthError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "OAU-250",
                format!("Unsupported grant type [{other}]"),
            )))
        }
        None => {
            return Err(oauth(OAuthError::bad_request(
                "OAU-101",
                "Parameter [grant_type] is required",
            )))
        }
    };
    let tokens = store
        .issue_oauth_tokens(app, &user.id, access_ttl, refresh_ttl)
        .await
        .map_err(|e| oauth(e.into()))?;
    info!(user = %user.extension, client_id = %app.client_id, "RingCentral access token issued");
    Ok(token_response(&tokens, &user))
}

/// The user of a token pair issued at `issued_at`, if they still exist in the account and
/// have not changed their password since.
async fn live_user(
    store: &Store,
    user_id: &str,
    account_id: &str,
    issued_at: i64,
) -> Result<Option<User>, StoreError> {
    let Some(user) = store
        .user_by_id(user_id)
        .await?
        .filter(|u| u.account_id == account_id)
    else {
        return Ok(None);
    };
    let changed_at = store.user_password_changed_at(&user.id).await?;
    Ok(match changed_at {
        Some(changed) if issued_at >= changed => Some(user),
        _ => None,
    })
}

/// The user of a JWT credential of the app's account. Err((error, counts as a guess)).
async fn verify_jwt_credential(
    state: &RcState,
    assertion: &str,
    account: &Account,
) -> Result<User, (OAuthError, bool)> {
    let store = state.engine.store();
    let key = state
        .jwt_keys
        .get(store)
        .await
        .map_err(|e| (OAuthError::from(e), false))?;
    let claims = jwt::verify_with_max(
        assertion,
        key,
        now_secs(),
        state.lifetimes.jwt_credential_max_secs,
    )
    .map_err(|e| {
        let guess = matches!(e, JwtError::Malformed | JwtError::BadSignature);
        let message = match e {
            JwtError::Expired => "JWT token is expired",
            JwtError::Malformed | JwtError::BadSignature | JwtError::TooLong => "Invalid JWT token",
        };
        (OAuthError::invalid_grant(message), guess)
    })?;
    if claims.acc != account.id {
        // A credential of another account's user used with this account's app.
        return Err((OAuthError::invalid_grant("Invalid JWT token"), false));
    }
    live_user(store, &claims.sub, &claims.acc, claims.iat)
        .await
        .map_err(|e| (OAuthError::from(e), false))?
        .ok_or((OAuthError::invalid_grant("JWT token is revoked"), false))
}

/// `POST /restapi/oauth/revoke` (form `token`: an access or refresh token of the app): the
/// pair is deleted. 200 with an empty body, also for a token already gone (RFC 7009).
pub(crate) async fn revoke(
    State(state): State<RcState>,
    ClientIp(source): ClientIp,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let app = match client_app(&state, &headers, source).await {
        Ok(app) => app,
        Err(resp) => return resp,
    };
    let form = match parse_form(&body) {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let Some(token) = field(&form, "token") else {
        return OAuthError::bad_request("OAU-101", "Parameter [token] is required").into_response();
    };
    let store = state.engine.store();
    let found = match store.oauth_grant_by_access(token).await {
        Ok(Some(g)) => Some(g),
        Ok(None) => match store.oauth_grant_by_refresh(token).await {
            Ok(g) => g,
            Err(e) => return OAuthError::from(e).into_response(),
        },
        Err(e) => return OAuthError::from(e).into_response(),
    };
    if let Some(grant) = found.filter(|g| g.app_id == app.id) {
        if let Err(e) = store.delete_oauth_grant(&grant.id).await {
            return OAuthError::from(e).into_response();
        }
        info!(client_id = %app.client_id, "RingCentral token revoked");
    }
    StatusCode::OK.into_response()
}

/// The extension behind a REST request's Bearer token, with its account.
#[derive(Debug, Clone)]
pub struct RcUser {
    pub user: User,
    pub account: Account,
}

fn unauthorized(code: &'static str, message: &str) -> Response {
    RcError::Unauthorized {
        code,
        message: message.into(),
    }
    .into_response()
}

impl FromRequestParts<RcState> for RcUser {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &RcState,
    ) -> Result<Self, Self::Rejection> {
        let source = ClientIp::of(parts).0;
        let token = match credentials(&parts.headers) {
            Credentials::Bearer(t) => t,
            Credentials::None => {
                return Err(unauthorized(
                    "AGW-401",
                    "Authorization header is not specified",
                ))
            }
            _ => {
                return Err(unauthorized(
                    "AGW-402",
                    "Invalid Authorization header: a Bearer access token is required",
                ))
            }
        };
        let identity = Identity::secret("rc_access", &token);
        if let Err(retry) = state.guard.check(source, &identity, Instant::now()) {
            let err = RcError::TooManyRequests(format!(
                "Too many failed authentication attempts; retry in {} seconds",
                retry.after_secs()
            ));
            return Err(with_retry_after(err.into_response(), &retry));
        }
        let store = state.engine.store();
        let grant = store
            .oauth_grant_by_access(&token)
            .await
            .map_err(|e| RcError::from(e).into_response())?;
        let Some(grant) = grant else {
            debug!(source = ?source, "RingCentral access token refused");
            if let Err(retry) = state.guard.failure(source, &identity, Instant::now()) {
                let err = RcError::TooManyRequests(format!(
                    "Too many failed authentication attempts; retry in {} seconds",
                    retry.after_secs()
                ));
                return Err(with_retry_after(err.into_response(), &retry));
            }
            return Err(unauthorized("TokenInvalid", "Token not found"));
        };
        if grant.access_expires_at <= now_secs() {
            return Err(unauthorized("TokenExpired", "Access token expired"));
        }
        let user = live_user(store, &grant.user_id, &grant.account_id, grant.created_at)
            .await
            .map_err(|e| RcError::from(e).into_response())?
            .ok_or_else(|| unauthorized("TokenInvalid", "Token is revoked"))?;
        state.guard.success(&identity);
        let account = store
            .account_by_id(&user.account_id)
            .await
            .map_err(|e| RcError::from(e).into_response())?
            .ok_or_else(|| unauthorized("TokenInvalid", "Token is revoked"))?;
        Ok(RcUser { user, account })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asked_lifetimes_are_honoured_only_when_shorter_and_positive() {
        assert_eq!(asked_ttl(None, 3600), 3600);
        assert_eq!(asked_ttl(Some("-1"), 3600), 3600);
        assert_eq!(asked_ttl(Some("0"), 3600), 3600);
        assert_eq!(asked_ttl(Some("abc"), 3600), 3600);
        assert_eq!(asked_ttl(Some("7200"), 3600), 3600);
        assert_eq!(asked_ttl(Some("2"), 3600), 2);
    }
}
