//! User access tokens, shared by the dialects that issue them (sipgate today): JWT-shaped
//! (HS256), as the sipgateio SDK expects them (it checks that the
//! middle segment is base64 JSON). Signed with a server secret kept in the store, so tokens
//! survive a restart; `exp` is enforced, and no token lives longer than
//! [`MAX_TOKEN_LIFETIME_SECS`] (`exp - iat`), whoever signed it.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use hookflash_store::{Store, StoreError};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::sync::OnceCell;

/// Name of the signing secret in the store's `server_secrets`.
pub const SECRET_NAME: &str = "sipgate_jwt_hs256";
/// Issuer claim of our tokens.
pub const ISSUER: &str = "hookflash";
/// The longest lifetime (`exp - iat`, seconds) a token may have: longer ones are not issued
/// and not accepted.
pub const MAX_TOKEN_LIFETIME_SECS: i64 = 3600;

/// The token's claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// The user's id.
    pub sub: String,
    /// The user's account id.
    pub acc: String,
    /// The user's login name (`<extension>@<realm>`).
    pub preferred_username: String,
    /// Unix seconds.
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("the token is not a JWT")]
    Malformed,
    #[error("the token's signature is not valid")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    /// `exp - iat` exceeds [`MAX_TOKEN_LIFETIME_SECS`].
    #[error("the token's lifetime exceeds the maximum")]
    TooLong,
}

/// A signing key, loaded from the store on first use (by default the user access tokens' key,
/// [`SECRET_NAME`]; [`KeyCell::named`] for another purpose's key).
pub struct KeyCell(OnceCell<Vec<u8>>, &'static str);

impl Default for KeyCell {
    fn default() -> Self {
        KeyCell::named(SECRET_NAME)
    }
}

impl KeyCell {
    /// The key stored under `name` in the store's server secrets.
    pub fn named(name: &'static str) -> Self {
        KeyCell(OnceCell::new(), name)
    }

    pub async fn get(&self, store: &Store) -> Result<&[u8], StoreError> {
        let name = self.1;
        let key = self
            .0
            .get_or_try_init(|| async {
                let secret = store.server_secret(name).await?;
                Ok::<_, StoreError>(secret.into_bytes())
            })
            .await?;
        Ok(key.as_slice())
    }
}

fn mac(key: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so the fallback is never taken.
    Hmac::<Sha256>::new_from_slice(key)
        .unwrap_or_else(|_| <Hmac<Sha256> as hmac::digest::KeyInit>::new(&Default::default()))
}

/// `header.payload.signature`, each base64url without padding.
pub fn sign(claims: &Claims, key: &[u8]) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
    let signing_input = format!("{header}.{payload}");
    let mut m = mac(key);
    m.update(signing_input.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(m.finalize().into_bytes());
    format!("{signing_input}.{sig}")
}

/// The claims of a JWT-shaped token *without* checking its signature: only to name the
/// identity a guess targets (password guessing defence), never to authenticate.
pub fn unverified_claims(token: &str) -> Option<Claims> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Checks shape, algorithm, signature (constant time), expiry and the maximum lifetime.
pub fn verify(token: &str, key: &[u8], now: i64) -> Result<Claims, JwtError> {
    verify_with_max(token, key, now, MAX_TOKEN_LIFETIME_SECS)
}

/// [`verify`] with another longest lifetime (`exp - iat`), for longer-lived credentials
/// signed with a key of their own (RingCentral JWT credentials).
pub fn verify_with_max(
    token: &str,
    key: &[u8],
    now: i64,
    max_lifetime_secs: i64,
) -> Result<Claims, JwtError> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let header: serde_json::Value = URL_SAFE_NO_PAD
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(JwtError::Malformed)?;
    if header.get("alg").and_then(|a| a.as_str()) != Some("HS256") {
        return Err(JwtError::BadSignature);
    }
    let sig = URL_SAFE_NO_PAD.decode(s).map_err(|_| JwtError::Malformed)?;
    let mut m = mac(key);
    m.update(h.as_bytes());
    m.update(b".");
    m.update(p.as_bytes());
    m.verify_slice(&sig).map_err(|_| JwtError::BadSignature)?;
    let claims: Claims = URL_SAFE_NO_PAD
        .decode(p)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(JwtError::Malformed)?;
    if claims.iss != ISSUER {
        return Err(JwtError::BadSignature);
    }
    match claims.exp.checked_sub(claims.iat) {
        Some(lifetime) if lifetime <= max_lifetime_secs => {}
        _ => return Err(JwtError::TooLong),
    }
    if now >= claims.exp {
        return Err(JwtError::Expired);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Claims {
        Claims {
            iss: ISSUER.into(),
            sub: "u1".into(),
            acc: "a1".into(),
            preferred_username: "201@acme.local".into(),
            iat: 100,
            exp,
            jti: "j".into(),
        }
    }

    #[test]
    fn round_trip_and_rejections() {
        let key = b"k1";
        let t = sign(&claims(200), key);
        assert_eq!(t.split('.').count(), 3);
        // The SDK's check: the middle segment is base64 JSON.
        let payload = URL_SAFE_NO_PAD
            .decode(t.split('.').nth(1).unwrap())
            .unwrap();
        assert!(serde_json::from_slice::<serde_json::Value>(&payload).is_ok());
        assert_eq!(verify(&t, key, 150), Ok(claims(200)));
        assert_eq!(verify(&t, key, 200), Err(JwtError::Expired));
        assert_eq!(verify(&t, b"k2", 150), Err(JwtError::BadSignature));
        assert_eq!(verify("abc", key, 150), Err(JwtError::Malformed));
        assert_eq!(verify("a.b.c.d", key, 150), Err(JwtError::Malformed));
        // A changed payload with the old signature.
        let mut forged = claims(10_000);
        forged.sub = "u2".into();
        let forged_payload = sign(&forged, b"other")
            .split('.')
            .nth(1)
            .unwrap()
            .to_string();
        let parts: Vec<&str> = t.split('.').collect();
        let tampered = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
        assert_eq!(verify(&tampered, key, 150), Err(JwtError::BadSignature));
        // alg=none is refused.
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
            parts[1]
        );
        assert!(verify(&none, key, 150).is_err());
    }

    #[test]
    fn lifetime_over_the_maximum_is_refused() {
        let key = b"k1";
        let at_max = claims(100 + MAX_TOKEN_LIFETIME_SECS);
        assert_eq!(verify(&sign(&at_max, key), key, 150), Ok(at_max));
        let over = claims(100 + MAX_TOKEN_LIFETIME_SECS + 1);
        assert_eq!(verify(&sign(&over, key), key, 150), Err(JwtError::TooLong));
        // No overflow with extreme claims.
        let mut extreme = claims(i64::MAX);
        extreme.iat = i64::MIN;
        assert_eq!(
            verify(&sign(&extreme, key), key, 150),
            Err(JwtError::TooLong)
        );
        assert_eq!(
            unverified_claims(&sign(&over, b"any")).map(|c| c.sub),
            Some("u1".to_string())
        );
        assert_eq!(unverified_claims("no-token"), None);
    }
}
