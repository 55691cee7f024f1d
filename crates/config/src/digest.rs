//! The digest algorithms a deployment may enable (`sip.digest_algorithms`).
//!
//! Only the names live here; hashing (HA1 values) is the store's (`hookflash_store::ha1`).

/// A digest algorithm of RFC 8760 that hookflash supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DigestAlgorithm {
    Md5,
    Sha256,
}

impl DigestAlgorithm {
    /// The token used in `WWW-Authenticate`/`Authorization` headers and in the config
    /// (`"MD5"`, `"SHA-256"`).
    pub fn as_str(self) -> &'static str {
        match self {
            DigestAlgorithm::Md5 => "MD5",
            DigestAlgorithm::Sha256 => "SHA-256",
        }
    }

    /// Parses the header/config token, case-insensitively.
    pub fn parse(s: &str) -> Option<DigestAlgorithm> {
        if s.eq_ignore_ascii_case("MD5") {
            Some(DigestAlgorithm::Md5)
        } else if s.eq_ignore_ascii_case("SHA-256") {
            Some(DigestAlgorithm::Sha256)
        } else {
            None
        }
    }
}

impl std::fmt::Display for DigestAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithm_tokens_round_trip() {
        for alg in [DigestAlgorithm::Md5, DigestAlgorithm::Sha256] {
            assert_eq!(DigestAlgorithm::parse(alg.as_str()), Some(alg));
        }
        assert_eq!(
            DigestAlgorithm::parse("sha-256"),
            Some(DigestAlgorithm::Sha256)
        );
        assert_eq!(DigestAlgorithm::parse("SHA-512-256"), None);
    }
}
