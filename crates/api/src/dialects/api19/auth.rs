//! HTTP Basic as RestComm takes it: `AccountSid:AuthToken`, or an API token as the user name
//! with an empty password (`curl -u 'API_Token:'`). The AuthToken / API token is one of the
//! account's native API keys, checked by the shared [`crate::dialects::api_key`] helper
//! behind the password guessing defence. The user name, when it is an AccountSid, and the
//! path's `{account_sid}` must be the key's account (`AC` + its id's hex digits).

use std::collections::HashMap;

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::response::Response;
use hookflash_apps::rcml::sids;

use super::error::Api19Error;
use super::render::Format;
use super::Api19State;
use crate::body::{credentials, Credentials};
use crate::dialects::api_key::{self, KeyRefusal};

/// The account that authenticated the request.
#[derive(Debug, Clone)]
pub struct Api19Account {
    pub account_id: String,
    /// `AC...`
    pub account_sid: String,
}

fn refusal(r: KeyRefusal) -> Api19Error {
    match r {
        KeyRefusal::Missing => Api19Error::Unauthorized(
            "missing credentials: use HTTP Basic AccountSid:AuthToken".into(),
        ),
        KeyRefusal::Unsupported => Api19Error::Unauthorized(
            "unsupported Authorization header: use HTTP Basic AccountSid:AuthToken".into(),
        ),
        KeyRefusal::Invalid => Api19Error::Unauthorized("invalid AuthToken".into()),
        KeyRefusal::UserToken => Api19Error::Unauthorized(
            "user access tokens cannot use this API; use an API key as AuthToken".into(),
        ),
        KeyRefusal::TooMany(retry) => Api19Error::TooManyRequests {
            message: format!(
                "too many failed authentication attempts; retry in {} seconds",
                retry.after_secs()
            ),
            retry: Some(retry),
        },
        KeyRefusal::Store(e) => e.into(),
    }
}

/// The token to check and the AccountSid the client claims (if it sent one).
fn token_of(parts: &Parts) -> Result<(String, Option<String>), Api19Error> {
    match credentials(&parts.headers) {
        Credentials::Basic { user, password } if password.is_empty() && !user.is_empty() => {
            Ok((user, None))
        }
        Credentials::Basic { user, password } => Ok((password, Some(user))),
        // What RestComm's own console sends for API tokens.
        Credentials::Bearer(token) => Ok((token, None)),
        Credentials::None => Err(refusal(KeyRefusal::Missing)),
        Credentials::Malformed => Err(refusal(KeyRefusal::Unsupported)),
    }
}

impl FromRequestParts<Api19State> for Api19Account {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Api19State,
    ) -> Result<Self, Self::Rejection> {
        let format = Format::of_path(parts.uri.path());
        let reject = |e: Api19Error| e.render(format);
        let (token, claimed) = token_of(parts).map_err(reject)?;
        let key = api_key::verify_token(
            parts,
            &token,
            &state.engine,
            &state.guard,
            &state.user_tokens,
        )
        .await
        .map_err(|r| reject(refusal(r)))?;
        let account_sid = sids::account_sid(&key.account_id);
        if claimed.is_some_and(|c| !c.eq_ignore_ascii_case(&account_sid)) {
            return Err(reject(Api19Error::Unauthorized(
                "the AccountSid does not own this AuthToken".into(),
            )));
        }
        let params = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map(|p| p.0)
            .unwrap_or_default();
        if let Some(sid) = params.get("account_sid") {
            let sid = sid.strip_suffix(".json").unwrap_or(sid);
            if !sid.eq_ignore_ascii_case(&account_sid) {
                tracing::debug!(path_account = %sid, "api19 request for another account");
                return Err(reject(Api19Error::Unauthorized(
                    "the AccountSid of the path is not the authenticated account".into(),
                )));
            }
        }
        Ok(Api19Account {
            account_id: key.account_id,
            account_sid,
        })
    }
}
