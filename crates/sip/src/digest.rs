//! HTTP-digest authentication for SIP (RFC 3261 §22, RFC 8760 SHA-256), server side.
//!
//! Sans-IO: challenges are strings, credentials are parsed from header values, verification
//! takes the stored HA1 (we never keep passwords). Nonces are stateless: a timestamp plus an
//! HMAC over it with a per-process secret, so any node holding the secret can check them and
//! nothing has to be remembered between the challenge and the retry.

use hmac::{Hmac, Mac};
use md5::Md5;
use sha2::{Digest, Sha256};
use thiserror::Error;

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Md5,
    Sha256,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    /// Parses a configured or received algorithm name; `None` for unknown ones.
    pub fn from_name(name: &str) -> Option<Self> {
        match name.trim().trim_matches('"').to_ascii_uppercase().as_str() {
            "MD5" => Some(Algorithm::Md5),
            "SHA-256" | "SHA256" => Some(Algorithm::Sha256),
            _ => None,
        }
    }

    pub fn hash_hex(self, data: &str) -> String {
        match self {
            Algorithm::Md5 => hex::encode(Md5::digest(data.as_bytes())),
            Algorithm::Sha256 => hex::encode(Sha256::digest(data.as_bytes())),
        }
    }
}

/// HA1 = H(username:realm:password), the only credential form we store.
pub fn ha1(algorithm: Algorithm, username: &str, realm: &str, password: &str) -> String {
    algorithm.hash_hex(&format!("{username}:{realm}:{password}"))
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DigestError {
    #[error("credentials are not a Digest scheme")]
    NotDigest,
    #[error("credentials lack the `{0}` parameter")]
    Missing(&'static str),
    #[error("unsupported digest algorithm `{0}`")]
    UnsupportedAlgorithm(String),
    #[error("malformed digest parameters")]
    Malformed,
}

/// The parameters of an `Authorization` / `Proxy-Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    pub response: String,
    pub algorithm: Algorithm,
    pub qop: Option<String>,
    pub nc: Option<String>,
    pub cnonce: Option<String>,
    pub opaque: Option<String>,
}

impl Credentials {
    pub fn parse(value: &str) -> Result<Self, DigestError> {
        let value = value.trim();
        let rest = match value.split_once(char::is_whitespace) {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("digest") => rest,
            _ => return Err(DigestError::NotDigest),
        };
        let params = parse_params(rest)?;
        let get = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let algorithm = match get("algorithm") {
            None => Algorithm::Md5,
            Some(a) => Algorithm::from_name(&a).ok_or(DigestError::UnsupportedAlgorithm(a))?,
        };
        Ok(Credentials {
            username: get("username").ok_or(DigestError::Missing("username"))?,
            realm: get("realm").ok_or(DigestError::Missing("realm"))?,
            nonce: get("nonce").ok_or(DigestError::Missing("nonce"))?,
            uri: get("uri").ok_or(DigestError::Missing("uri"))?,
            response: get("response").ok_or(DigestError::Missing("response"))?,
            algorithm,
            qop: get("qop"),
            nc: get("nc"),
            cnonce: get("cnonce"),
            opaque: get("opaque"),
        })
    }

    /// The response a client knowing the password behind `ha1` would have sent.
    pub fn expected_response(&self, ha1: &str, method: &str) -> String {
        let alg = self.algorithm;
        let ha2 = alg.hash_hex(&format!("{method}:{}", self.uri));
        match (&self.qop, &self.nc, &self.cnonce) {
            (Some(qop), Some(nc), Some(cnonce)) => {
                alg.hash_hex(&format!("{ha1}:{}:{nc}:{cnonce}:{qop}:{ha2}", self.nonce))
            }
            _ => alg.hash_hex(&format!("{ha1}:{}:{ha2}", self.nonce)),
        }
    }

    /// Constant-time comparison of the client's response with the expected one.
    pub fn verify(&self, ha1: &str, method: &str) -> bool {
        let expected = self.expected_response(ha1, method);
        let got = self.response.to_ascii_lowercase();
        expected.len() == got.len()
            && expected
                .bytes()
                .zip(got.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

/// Splits `k=v, k="quoted, value"` lists, honouring quotes and backslash escapes.
fn parse_params(input: &str) -> Result<Vec<(String, String)>, DigestError> {
    let mut out = Vec::new();
    let mut chars = input.chars().peekable();
    loop {
        while matches!(chars.peek(), Some(c) if c.is_whitespace() || *c == ',') {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while matches!(chars.peek(), Some(c) if c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') || key.is_empty() {
            return Err(DigestError::Malformed);
        }
        while matches!(chars.peek(), Some(c) if c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            value.push(n);
                        }
                    }
                    '"' => {
                        closed = true;
                        break;
                    }
                    _ => value.push(c),
                }
            }
            if !closed {
                return Err(DigestError::Malformed);
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
            value = value.trim().to_string();
        }
        out.push((key, value));
    }
    Ok(out)
}

/// Constant-time byte comparison (no early exit on the first difference).
pub(crate) fn eq_ct(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// (user, realm, nonce, cnonce) -> (highest nonce count, expiry in unix seconds).
type NonceCounts = std::collections::HashMap<(String, String, String, String), (u32, u64)>;

/// Refuses a replayed `Authorization`: per (user, realm, nonce, cnonce) the nonce count must
/// grow with every request (RFC 7616 §3.4); credentials without `qop` (no nonce count) may use
/// a nonce once. Only credentials that verified are recorded, so the table holds what real
/// clients sent within the nonce lifetime; it is pruned of expired entries and bounded.
pub struct ReplayGuard {
    ttl_secs: u64,
    max_entries: usize,
    seen: std::sync::Mutex<NonceCounts>,
}

impl ReplayGuard {
    pub fn new(ttl_secs: u64, max_entries: usize) -> Self {
        ReplayGuard {
            ttl_secs,
            max_entries,
            seen: std::sync::Mutex::new(NonceCounts::new()),
        }
    }

    /// Records verified credentials; false when they repeat (or go back on) a nonce count
    /// already seen.
    pub fn accept(&self, creds: &Credentials, now_secs: u64) -> bool {
        let nc = match &creds.nc {
            Some(nc) => match u32::from_str_radix(nc.trim(), 16) {
                Ok(n) => n,
                Err(_) => return false,
            },
            None => 0,
        };
        let key = (
            creds.username.clone(),
            creds.realm.clone(),
            creds.nonce.clone(),
            creds.cnonce.clone().unwrap_or_default(),
        );
        let mut seen = match self.seen.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if seen.len() >= self.max_entries {
            seen.retain(|_, (_, expires)| *expires > now_secs);
            if seen.len() >= self.max_entries {
                tracing::warn!(
                    entries = seen.len(),
                    "digest replay table full: oldest nonces forgotten"
                );
                seen.clear();
            }
        }
        match seen.get_mut(&key) {
            Some((highest, expires)) if *expires > now_secs => {
                if creds.nc.is_none() || nc <= *highest {
                    return false;
                }
                *highest = nc;
                true
            }
            _ => {
                seen.insert(key, (nc, now_secs + self.ttl_secs));
                true
            }
        }
    }
}

/// Outcome of checking a nonce we issued earlier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceStatus {
    Valid,
    /// Ours, but older than the allowed age: re-challenge with `stale=true`.
    Stale,
    /// Not ours (forged, garbled, or from before a secret change).
    Invalid,
}

/// Issues and checks stateless nonces: `<unix secs hex>.<hmac hex>`.
#[derive(Clone)]
pub struct NonceIssuer {
    secret: [u8; 32],
    max_age_secs: u64,
}

impl NonceIssuer {
    pub fn new(secret: [u8; 32], max_age_secs: u64) -> Self {
        NonceIssuer {
            secret,
            max_age_secs,
        }
    }

    pub fn random(max_age_secs: u64) -> Self {
        Self::new(rand::random(), max_age_secs)
    }

    fn mac(&self, stamp: &str) -> String {
        // HMAC accepts keys of any length, so this cannot fail; fall back to an
        // impossible-to-match value rather than panicking.
        match HmacSha256::new_from_slice(&self.secret) {
            Ok(mut mac) => {
                mac.update(stamp.as_bytes());
                hex::encode(&mac.finalize().into_bytes()[..16])
            }
            Err(_) => String::new(),
        }
    }

    /// `<secs hex>-<random hex>.<mac>`: the random part makes every challenge's nonce unique,
    /// so the replay guard can tell two clients challenged in the same second apart.
    pub fn issue(&self, now_secs: u64) -> String {
        let salt: u64 = rand::random();
        let stamp = format!("{now_secs:x}-{salt:016x}");
        let mac = self.mac(&stamp);
        format!("{stamp}.{mac}")
    }

    pub fn check(&self, nonce: &str, now_secs: u64) -> NonceStatus {
        let Some((stamp, mac)) = nonce.split_once('.') else {
            return NonceStatus::Invalid;
        };
        let expected = self.mac(stamp);
        if expected.is_empty() || !crate::digest::eq_ct(expected.as_bytes(), mac.as_bytes()) {
            return NonceStatus::Invalid;
        }
        let secs = stamp.split_once('-').map_or(stamp, |(secs, _)| secs);
        match u64::from_str_radix(secs, 16) {
            Ok(issued) if issued <= now_secs + 5 => {
                if now_secs.saturating_sub(issued) > self.max_age_secs {
                    NonceStatus::Stale
                } else {
                    NonceStatus::Valid
                }
            }
            _ => NonceStatus::Invalid,
        }
    }

    /// A `WWW-Authenticate` / `Proxy-Authenticate` value.
    pub fn challenge(
        &self,
        realm: &str,
        algorithm: Algorithm,
        now_secs: u64,
        stale: bool,
    ) -> String {
        let nonce = self.issue(now_secs);
        let mut s = format!(
            "Digest realm=\"{}\", nonce=\"{nonce}\", algorithm={}, qop=\"auth\"",
            realm.replace('"', ""),
            algorithm.name()
        );
        if stale {
            s.push_str(", stale=true");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(nonce: &str, cnonce: Option<&str>, nc: Option<&str>) -> Credentials {
        Credentials {
            username: "101".into(),
            realm: "hookflash".into(),
            nonce: nonce.into(),
            uri: "sip:hookflash".into(),
            response: String::new(),
            algorithm: Algorithm::Md5,
            qop: nc.map(|_| "auth".into()),
            nc: nc.map(str::to_string),
            cnonce: cnonce.map(str::to_string),
            opaque: None,
        }
    }

    #[test]
    fn a_replayed_nonce_count_is_refused() {
        let g = ReplayGuard::new(300, 100);
        assert!(g.accept(&creds("n1", Some("c"), Some("00000001")), 10));
        assert!(
            !g.accept(&creds("n1", Some("c"), Some("00000001")), 11),
            "replay"
        );
        assert!(g.accept(&creds("n1", Some("c"), Some("00000002")), 12));
        assert!(!g.accept(&creds("n1", Some("c"), Some("00000002")), 12));
        assert!(
            !g.accept(&creds("n1", Some("c"), Some("00000001")), 12),
            "backwards"
        );
        // Another cnonce or nonce is another sequence.
        assert!(g.accept(&creds("n1", Some("d"), Some("00000001")), 12));
        assert!(g.accept(&creds("n2", Some("c"), Some("00000001")), 12));
        // Without qop a nonce is good once.
        assert!(g.accept(&creds("n3", None, None), 12));
        assert!(!g.accept(&creds("n3", None, None), 13));
        // A garbled nc is refused.
        assert!(!g.accept(&creds("n4", Some("c"), Some("zz")), 13));
        // After the nonce's lifetime the entry is gone (the nonce itself is stale by then).
        assert!(g.accept(&creds("n3", None, None), 400));
    }

    #[test]
    fn the_replay_table_is_bounded() {
        let g = ReplayGuard::new(300, 4);
        for i in 0..10 {
            assert!(g.accept(&creds(&format!("n{i}"), None, None), 10));
        }
        let len = g.seen.lock().map(|s| s.len()).unwrap_or(usize::MAX);
        assert!(len <= 4, "{len} entries");
    }

    #[test]
    fn nonces_are_unique_and_old_format_is_refused() {
        let issuer = NonceIssuer::new([7; 32], 300);
        let a = issuer.issue(1000);
        let b = issuer.issue(1000);
        assert_ne!(a, b);
        assert_eq!(issuer.check(&a, 1000), NonceStatus::Valid);
        assert_eq!(issuer.check(&b, 1200), NonceStatus::Valid);
        assert_eq!(issuer.check(&b, 1400), NonceStatus::Stale);
        let forged = format!("{}0", a);
        assert_eq!(issuer.check(&forged, 1000), NonceStatus::Invalid);
    }

    // RFC 2617 §3.5 example (MD5, qop=auth) with the SIP-style method.
    #[test]
    fn rfc2617_example_response_verifies() {
        let c = Credentials::parse(
            r#"Digest username="Mufasa", realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", qop=auth, nc=00000001, cnonce="0a4f113b", response="6629fae49393a05397450978507c4ef1", opaque="5ccc069c403ebaf9f0171e9517f40e41""#,
        )
        .unwrap();
        let h = ha1(
            Algorithm::Md5,
            "Mufasa",
            "testrealm@host.com",
            "Circle Of Life",
        );
        assert!(c.verify(&h, "GET"));
        assert!(!c.verify(&h, "POST"));
        let wrong = ha1(
            Algorithm::Md5,
            "Mufasa",
            "testrealm@host.com",
            "circle of life",
        );
        assert!(!c.verify(&wrong, "GET"));
    }

    #[test]
    fn sha256_round_trip_and_algorithm_is_honoured() {
        let h = ha1(Algorithm::Sha256, "101", "hookflash", "pw");
        assert_eq!(h.len(), 64);
        let mut c = Credentials {
            username: "101".into(),
            realm: "hookflash".into(),
            nonce: "n".into(),
            uri: "sip:127.0.0.1".into(),
            response: String::new(),
            algorithm: Algorithm::Sha256,
            qop: Some("auth".into()),
            nc: Some("00000001".into()),
            cnonce: Some("abc".into()),
            opaque: None,
        };
        c.response = c.expected_response(&h, "REGISTER");
        assert!(c.verify(&h, "REGISTER"));
        // An MD5 HA1 does not verify a SHA-256 response.
        assert!(!c.verify(&ha1(Algorithm::Md5, "101", "hookflash", "pw"), "REGISTER"));
    }

    #[test]
    fn parse_rejects_bad_input() {
        assert_eq!(Credentials::parse("Basic abc"), Err(DigestError::NotDigest));
        assert_eq!(
            Credentials::parse(r#"Digest username="a", realm="r""#),
            Err(DigestError::Missing("nonce"))
        );
        assert_eq!(
            Credentials::parse(r#"Digest username="a"#),
            Err(DigestError::Malformed)
        );
        assert!(matches!(
            Credentials::parse(
                r#"Digest username="a",realm="r",nonce="n",uri="u",response="x",algorithm=SHA-512"#
            ),
            Err(DigestError::UnsupportedAlgorithm(_))
        ));
    }

    #[test]
    fn parse_handles_quoted_commas_and_escapes() {
        let c = Credentials::parse(
            r#"Digest username="a\"b", realm="x, y",nonce=abc , uri="sip:u", response="r""#,
        )
        .unwrap();
        assert_eq!(c.username, "a\"b");
        assert_eq!(c.realm, "x, y");
        assert_eq!(c.nonce, "abc");
        assert_eq!(c.algorithm, Algorithm::Md5);
    }

    #[test]
    fn nonces_are_checked_for_origin_and_age() {
        let issuer = NonceIssuer::new([7; 32], 300);
        let n = issuer.issue(1_000);
        assert_eq!(issuer.check(&n, 1_100), NonceStatus::Valid);
        assert_eq!(issuer.check(&n, 1_400), NonceStatus::Stale);
        let other = NonceIssuer::new([8; 32], 300);
        assert_eq!(other.check(&n, 1_100), NonceStatus::Invalid);
        assert_eq!(issuer.check("garbage", 1_100), NonceStatus::Invalid);
        let tampered = n.replacen("3e8", "3e9", 1);
        assert_eq!(issuer.check(&tampered, 1_100), NonceStatus::Invalid);
    }

    #[test]
    fn challenge_names_realm_algorithm_and_qop() {
        let issuer = NonceIssuer::new([1; 32], 300);
        let c = issuer.challenge("acme", Algorithm::Sha256, 10, true);
        assert!(c.starts_with("Digest realm=\"acme\""));
        assert!(c.contains("algorithm=SHA-256"));
        assert!(c.contains("qop=\"auth\""));
        assert!(c.ends_with("stale=true"));
    }
}
