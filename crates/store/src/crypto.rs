//! Hashing helpers: SIP digest HA1 values, API key hashes and random secrets.

use md5::Md5;
use rand::distributions::Alphanumeric;
use rand::Rng;
use sha2::{Digest, Sha256};

pub use hookflash_config::DigestAlgorithm;

/// Lowercase hex digest of `data` with `algorithm` (the `H()` of RFC 7616).
fn hash_hex(algorithm: DigestAlgorithm, data: &[u8]) -> String {
    match algorithm {
        DigestAlgorithm::Md5 => hex::encode(Md5::digest(data)),
        DigestAlgorithm::Sha256 => hex::encode(Sha256::digest(data)),
    }
}

/// `HA1 = H(username ":" realm ":" password)` as lowercase hex.
pub fn ha1(algorithm: DigestAlgorithm, username: &str, realm: &str, password: &str) -> String {
    hash_hex(
        algorithm,
        format!("{username}:{realm}:{password}").as_bytes(),
    )
}

/// SHA-256 of an API key, lowercase hex (what the database stores).
pub fn api_key_hash(plaintext: &str) -> String {
    hex::encode(Sha256::digest(plaintext.as_bytes()))
}

/// `len` random characters from `[A-Za-z0-9]` (from the thread-local CSPRNG).
pub fn random_base62(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// `bytes` random bytes (thread-local CSPRNG) as lowercase hex.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill(buf.as_mut_slice());
    hex::encode(buf)
}

/// Constant-time equality of two byte strings (for comparing secrets and hashes).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A fresh API key: `"hf_"` followed by 40 base62 characters.
pub fn generate_api_key() -> String {
    format!("hf_{}", random_base62(40))
}

/// A random password for generated users (12 base62 characters).
pub fn generate_password() -> String {
    random_base62(12)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ha1_md5_matches_rfc2617_example() {
        // RFC 2617 section 3.5: Mufasa / testrealm@host.com / Circle Of Life.
        assert_eq!(
            ha1(
                DigestAlgorithm::Md5,
                "Mufasa",
                "testrealm@host.com",
                "Circle Of Life"
            ),
            "939e7578ed9e3c518a452acee763bce9"
        );
    }

    #[test]
    fn ha1_sha256_matches_rfc7616_example() {
        // RFC 7616 section 3.9.1: Mufasa / http-auth@example.org / Circle of Life.
        assert_eq!(
            ha1(
                DigestAlgorithm::Sha256,
                "Mufasa",
                "http-auth@example.org",
                "Circle of Life"
            ),
            "7987c64c30e25f1b74be53f966b49b90f2808aa92faf9a00262392d7b4794232"
        );
    }

    #[test]
    fn generated_keys_have_the_documented_shape() {
        let k = generate_api_key();
        assert_eq!(k.len(), 43);
        assert!(k.starts_with("hf_"));
        assert!(k[3..].chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(k, generate_api_key());
        let p = generate_password();
        assert_eq!(p.len(), 12);
        assert!(p.chars().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn api_key_hash_is_sha256_hex() {
        assert_eq!(
            api_key_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
