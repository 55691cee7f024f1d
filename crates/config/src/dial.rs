//! Dial classes: the destinations an account or user may be allowed to call
//! (`accounts.dial`, `accounts.users.dial`, and the store's dial policies).

use serde::{Deserialize, Serialize};

/// A class of destination for dial permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DialClass {
    /// The account's own extensions and numbers.
    Internal,
    /// Outside numbers in the account's country.
    National,
    /// Outside numbers in other countries.
    International,
    /// Premium-rate and special-service numbers (`security.premium_prefixes`).
    Premium,
}

impl DialClass {
    /// Every class, in the order sets are listed.
    pub const ALL: [DialClass; 4] = [
        DialClass::Internal,
        DialClass::National,
        DialClass::International,
        DialClass::Premium,
    ];

    /// `"internal"`, `"national"`, `"international"` or `"premium"`.
    pub fn as_str(self) -> &'static str {
        match self {
            DialClass::Internal => "internal",
            DialClass::National => "national",
            DialClass::International => "international",
            DialClass::Premium => "premium",
        }
    }

    /// The class named `s` (case-insensitive, surrounding whitespace ignored).
    pub fn parse(s: &str) -> Option<DialClass> {
        let s = s.trim();
        DialClass::ALL
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dial_class_names() {
        for c in DialClass::ALL {
            assert_eq!(DialClass::parse(c.as_str()), Some(c));
        }
        assert_eq!(
            DialClass::parse(" International "),
            Some(DialClass::International)
        );
        assert_eq!(DialClass::parse("PREMIUM"), Some(DialClass::Premium));
        assert_eq!(DialClass::parse("local"), None);
        assert_eq!(DialClass::parse(""), None);
    }

    #[test]
    fn dial_class_serde_names() {
        #[derive(Deserialize)]
        struct T {
            d: Vec<DialClass>,
        }
        let t: T = toml::from_str("d = [\"internal\", \"premium\"]").unwrap();
        assert_eq!(t.d, vec![DialClass::Internal, DialClass::Premium]);
        assert!(toml::from_str::<T>("d = [\"Internal\"]").is_err());
    }
}
