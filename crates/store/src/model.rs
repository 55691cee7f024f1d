//! Rows of the store, as plain data.

use serde::Serialize;

/// A tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Account {
    /// UUID.
    pub id: String,
    pub name: String,
    /// Digest realm and SIP domain.
    pub realm: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// A user (extension) of an account. The password is never stored: only the digest HA1 values
/// `H(extension ":" realm ":" password)` for MD5 and SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    pub id: String,
    pub account_id: String,
    pub extension: String,
    pub display_name: Option<String>,
    #[serde(skip)]
    pub ha1_md5: String,
    #[serde(skip)]
    pub ha1_sha256: String,
}

impl User {
    /// The stored HA1 for a digest algorithm.
    pub fn ha1(&self, algorithm: crate::DigestAlgorithm) -> &str {
        match algorithm {
            crate::DigestAlgorithm::Md5 => &self.ha1_md5,
            crate::DigestAlgorithm::Sha256 => &self.ha1_sha256,
        }
    }
}

/// A phone number (DID) that rings a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Number {
    pub id: String,
    pub account_id: String,
    /// E.164 with a leading `+`, e.g. `+4930123456`.
    pub number: String,
    pub user_id: String,
}

/// A SIP gateway: where outbound calls go, and where inbound DID calls come from.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct Trunk {
    pub id: String,
    pub account_id: String,
    pub name: String,
    pub host: String,
    pub port: u16,
    /// `"udp"` or `"tcp"`.
    pub transport: String,
    pub username: Option<String>,
    /// Stored in clear text: answering the carrier's digest challenge needs it. Never logged,
    /// never serialized.
    #[serde(skip)]
    pub password: Option<String>,
}

impl std::fmt::Debug for Trunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trunk")
            .field("id", &self.id)
            .field("account_id", &self.account_id)
            .field("name", &self.name)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("transport", &self.transport)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// An API key's metadata. The key itself is only stored as a SHA-256 hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiKey {
    pub id: String,
    pub account_id: String,
    pub name: String,
    /// First 8 characters of the key, to recognise it in listings.
    pub prefix: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// A personal access token's metadata (sipgate-style `tokenId:token` Basic credentials of a
/// user). The secret token itself is only stored as a SHA-256 hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PersonalAccessToken {
    /// The public token id, `token-` followed by 6 alphanumerics.
    pub id: String,
    pub account_id: String,
    pub user_id: String,
    pub name: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// One registered contact of a user. Survives restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Registration {
    pub user_id: String,
    /// The Contact URI.
    pub contact: String,
    /// `"ip:port"` the REGISTER came from.
    pub source: String,
    pub transport: String,
    /// Unix seconds.
    pub expires_at: i64,
    pub call_id: String,
    pub cseq: u32,
    pub user_agent: Option<String>,
}

/// History of one call, written when it ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallRecord {
    pub id: String,
    pub account_id: Option<String>,
    pub from: String,
    pub to: String,
    /// `"internal"`, `"inbound"` or `"outbound"`.
    pub direction: String,
    /// Unix milliseconds.
    pub started_at: i64,
    pub answered_at: Option<i64>,
    pub ended_at: i64,
    /// From answer to end; 0 when unanswered.
    pub duration_ms: i64,
    pub end_cause: String,
    pub sip_status: u16,
    pub legs: Vec<LegRecord>,
}

/// History of one leg of a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LegRecord {
    pub id: String,
    /// The call this leg belongs to ([`CallRecord::id`]; the store writes the record's id).
    pub call_id: String,
    /// `"caller"` or `"callee"`.
    pub role: String,
    /// `"in"` or `"out"`.
    pub direction: String,
    pub from: String,
    pub to: String,
    pub contact: Option<String>,
    /// Unix milliseconds.
    pub started_at: i64,
    pub answered_at: Option<i64>,
    pub ended_at: i64,
    pub end_cause: String,
    pub sip_status: u16,
}

/// What [`crate::Store::ensure_demo_account`] created, with the plaintext secrets (shown once).
#[derive(Clone)]
pub struct DemoCredentials {
    pub account: Account,
    /// `(extension, password)`.
    pub users: Vec<(String, String)>,
    pub api_key: String,
}

impl std::fmt::Debug for DemoCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoCredentials")
            .field("account", &self.account)
            .field(
                "users",
                &self
                    .users
                    .iter()
                    .map(|(e, _)| e.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("api_key", &"<redacted>")
            .finish()
    }
}

/// A call recording: stereo WAV (left = the caller's leg, right = the callee's leg).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recording {
    pub id: String,
    pub account_id: String,
    pub call_id: String,
    #[serde(skip)]
    pub path: String,
    /// `recording`, `complete` or `repaired` (finished after a crash).
    pub state: String,
    /// Unix milliseconds.
    pub started_at: i64,
    pub ended_at: Option<i64>,
    pub duration_ms: Option<i64>,
    pub bytes: Option<i64>,
}
