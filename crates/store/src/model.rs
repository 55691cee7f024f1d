//! Rows of the store, as plain data.

use serde::Serialize;

pub use hookflash_config::DialClass;

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
    /// Outbound dialling rules and fraud brakes (not part of the API's JSON).
    #[serde(skip)]
    pub dial: DialPolicy,
}

/// The bit of a class in a [`DialClasses`] set.
fn bit(class: DialClass) -> u8 {
    match class {
        DialClass::Internal => 1,
        DialClass::National => 2,
        DialClass::International => 4,
        DialClass::Premium => 8,
    }
}

/// A set of dial classes (bit set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct DialClasses(u8);

impl DialClasses {
    /// The empty set: nothing may be dialled.
    pub const NONE: DialClasses = DialClasses(0);
    /// What a new account may dial: internal and national.
    pub const NEW_ACCOUNT: DialClasses = DialClasses(1 | 2);

    /// The set of the given classes.
    pub fn of(classes: impl IntoIterator<Item = DialClass>) -> DialClasses {
        classes
            .into_iter()
            .fold(DialClasses::NONE, |set, c| set.with(c))
    }

    pub fn contains(self, c: DialClass) -> bool {
        self.0 & bit(c) != 0
    }

    /// This set plus `c`.
    pub fn with(self, c: DialClass) -> DialClasses {
        DialClasses(self.0 | bit(c))
    }

    /// The classes in both sets.
    pub fn intersect(self, other: DialClasses) -> DialClasses {
        DialClasses(self.0 & other.0)
    }

    /// The classes of the set, in [`DialClass::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = DialClass> {
        DialClass::ALL
            .into_iter()
            .filter(move |c| self.contains(*c))
    }

    /// `"internal,national"`; `""` for the empty set.
    pub fn to_csv(self) -> String {
        self.iter()
            .map(DialClass::as_str)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Parses a comma-separated list of class names (case-insensitive, whitespace and empty
    /// items ignored): `""` is the empty set, an unknown name an error naming it.
    pub fn parse_csv(s: &str) -> Result<DialClasses, String> {
        let mut set = DialClasses::NONE;
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let class = DialClass::parse(item).ok_or_else(|| {
                format!(
                    "unknown dial class {item:?} (known: internal, national, international, premium)"
                )
            })?;
            set = set.with(class);
        }
        Ok(set)
    }
}

/// An account's outbound dialling rules and fraud brakes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialPolicy {
    /// Country calling code without '+', e.g. "49"; None: inferred by the engine from the
    /// account's numbers.
    pub country_code: Option<String>,
    /// Classes the account's users and API may dial.
    pub classes: DialClasses,
    /// Click-to-dial / sessions whose both parties are outside numbers.
    pub outside_sessions: bool,
    /// Concurrent calls with an outbound trunk leg; 0 = unlimited.
    pub max_outbound_calls: u32,
    /// Outbound trunk legs started per minute; 0 = unlimited.
    pub outbound_calls_per_minute: u32,
}

impl Default for DialPolicy {
    /// What a new account gets: country inferred, internal and national calls, no outside
    /// sessions, at most 20 concurrent outbound calls and 60 outbound legs per minute.
    fn default() -> Self {
        DialPolicy {
            country_code: None,
            classes: DialClasses::NEW_ACCOUNT,
            outside_sessions: false,
            max_outbound_calls: 20,
            outbound_calls_per_minute: 60,
        }
    }
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
    /// Classes this user may dial; None: the account's. The engine intersects it with the
    /// account's classes.
    #[serde(skip)]
    pub dial_classes: Option<DialClasses>,
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
    /// An OAuth client of the account (RingCentral dialect), its secret shown once.
    pub oauth_client_id: String,
    pub oauth_client_secret: String,
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
            .field("oauth_client_id", &self.oauth_client_id)
            .field("oauth_client_secret", &"<redacted>")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dial_class_sets() {
        use DialClass::*;
        assert_eq!(DialClasses::default(), DialClasses::NONE);
        assert_eq!(
            DialClasses::NEW_ACCOUNT,
            DialClasses::of([Internal, National])
        );
        let s = DialClasses::NONE.with(Premium).with(Internal).with(Premium);
        assert!(s.contains(Internal) && s.contains(Premium));
        assert!(!s.contains(National) && !s.contains(International));
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![Internal, Premium]);
        assert_eq!(
            s.intersect(DialClasses::NEW_ACCOUNT),
            DialClasses::of([Internal])
        );
        assert_eq!(DialClasses::of(DialClass::ALL).iter().count(), 4);
        assert_eq!(DialClasses::NONE.iter().count(), 0);
    }

    #[test]
    fn dial_classes_csv() {
        use DialClass::*;
        assert_eq!(DialClasses::NEW_ACCOUNT.to_csv(), "internal,national");
        assert_eq!(DialClasses::NONE.to_csv(), "");
        assert_eq!(
            DialClasses::of([Premium, International, Internal, National]).to_csv(),
            "internal,national,international,premium"
        );
        assert_eq!(DialClasses::parse_csv(""), Ok(DialClasses::NONE));
        assert_eq!(DialClasses::parse_csv(" , "), Ok(DialClasses::NONE));
        assert_eq!(
            DialClasses::parse_csv(" National ,internal,,national"),
            Ok(DialClasses::NEW_ACCOUNT)
        );
        for set in [
            DialClasses::NONE,
            DialClasses::NEW_ACCOUNT,
            DialClasses::of([International, Premium]),
            DialClasses::of(DialClass::ALL),
        ] {
            assert_eq!(DialClasses::parse_csv(&set.to_csv()), Ok(set));
        }
        let err = DialClasses::parse_csv("internal,mobile").unwrap_err();
        assert!(err.contains("\"mobile\""), "{err}");
    }

    #[test]
    fn dial_policy_default() {
        let p = DialPolicy::default();
        assert_eq!(p.country_code, None);
        assert_eq!(p.classes, DialClasses::NEW_ACCOUNT);
        assert!(!p.outside_sessions);
        assert_eq!(
            (p.max_outbound_calls, p.outbound_calls_per_minute),
            (20, 60)
        );
    }
}
