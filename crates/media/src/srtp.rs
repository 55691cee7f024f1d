//! SRTP with SDES key exchange (RFC 4568 `a=crypto`, RFC 3711 SRTP), per leg.
//!
//! A leg whose offer is `RTP/SAVP` with an `a=crypto` line we support gets its own SRTP
//! contexts in the relay ([`crate::relay::BridgeHandle::set_srtp`]): packets *from* it are
//! authenticated and decrypted with the key its SDP gave (anything that does not authenticate,
//! plain RTP included, is dropped and counted), packets *to* it are encrypted with a fresh key of
//! ours that our SDP towards it carries. The other leg may be plain RTP: the relay works on
//! plain packets in between (PT mapping, recording, DTMF, players), exactly as for two plain legs.
//!
//! Crypto: the `webrtc-srtp` crate (pinned), AES_CM_128_HMAC_SHA1_80 and _32. Its pitfalls,
//! handled here: (1) replay protection is off unless asked for (we ask: a 64-packet window per
//! SSRC); (2) it creates per-SSRC state *before* checking the authentication tag, so garbage
//! with ever new SSRCs would grow its table: after [`MAX_UNKNOWN_SSRC_FAILURES`] failures on
//! SSRCs that never authenticated the inbound context is rebuilt from the same key; (3) it
//! allocates the output per packet (only SRTP legs pay that).

use std::fmt;

use base64::Engine as _;
use rand::RngCore;
use thiserror::Error;
use webrtc_srtp::context::Context;
use webrtc_srtp::option::{srtcp_replay_protection, srtp_replay_protection};
use webrtc_srtp::protection_profile::ProtectionProfile;

use crate::sdp::{MediaSection, SessionDescription};

const KEY_LEN: usize = 16;
const SALT_LEN: usize = 14;
/// Failed packets on never-authenticated SSRCs before the inbound context is rebuilt.
pub const MAX_UNKNOWN_SSRC_FAILURES: u32 = 64;
const REPLAY_WINDOW: usize = 64;

/// The SDES crypto suites we speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CryptoSuite {
    AesCm128HmacSha1_80,
    AesCm128HmacSha1_32,
}

impl CryptoSuite {
    pub fn name(self) -> &'static str {
        match self {
            CryptoSuite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            CryptoSuite::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
        }
    }

    fn parse(s: &str) -> Option<CryptoSuite> {
        if s.eq_ignore_ascii_case("AES_CM_128_HMAC_SHA1_80") {
            Some(CryptoSuite::AesCm128HmacSha1_80)
        } else if s.eq_ignore_ascii_case("AES_CM_128_HMAC_SHA1_32") {
            Some(CryptoSuite::AesCm128HmacSha1_32)
        } else {
            None
        }
    }

    fn profile(self) -> ProtectionProfile {
        match self {
            CryptoSuite::AesCm128HmacSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
            CryptoSuite::AesCm128HmacSha1_32 => ProtectionProfile::Aes128CmHmacSha1_32,
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SdesError {
    #[error("a=crypto without a tag")]
    MissingTag,
    #[error("a=crypto tag {0:?} is not a number of 1-9 digits")]
    BadTag(String),
    #[error("a=crypto without a crypto suite")]
    MissingSuite,
    #[error("crypto suite {0:?} is not supported")]
    UnsupportedSuite(String),
    #[error("a=crypto without key parameters")]
    MissingKey,
    #[error("key method {0:?} is not inline")]
    BadKeyMethod(String),
    #[error("the inline key is not base64")]
    BadBase64,
    #[error("the inline key has {0} bytes, not 30 (16 key + 14 salt)")]
    BadKeyLength(usize),
    #[error("more than one key (MKI) is not supported")]
    MultipleKeys,
    #[error("the key lifetime {0:?} is not a number or 2^n")]
    BadLifetime(String),
    #[error("an MKI is not supported")]
    MkiUnsupported,
    #[error("RTP/SAVP offered without an a=crypto line we support")]
    NoUsableCrypto,
}

/// One `a=crypto` line: tag, suite and inline master key + salt.
#[derive(Clone, PartialEq, Eq)]
pub struct SdesCrypto {
    pub tag: u32,
    pub suite: CryptoSuite,
    key: [u8; KEY_LEN],
    salt: [u8; SALT_LEN],
}

impl fmt::Debug for SdesCrypto {
    // Never the key in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SdesCrypto")
            .field("tag", &self.tag)
            .field("suite", &self.suite)
            .finish_non_exhaustive()
    }
}

impl SdesCrypto {
    /// A fresh random master key and salt.
    pub fn generate(tag: u32, suite: CryptoSuite) -> SdesCrypto {
        let mut key = [0u8; KEY_LEN];
        let mut salt = [0u8; SALT_LEN];
        rand::thread_rng().fill_bytes(&mut key);
        rand::thread_rng().fill_bytes(&mut salt);
        SdesCrypto {
            tag,
            suite,
            key,
            salt,
        }
    }

    /// Parses the value of an `a=crypto:` attribute (without `crypto:`), RFC 4568 §9.1:
    /// `<tag> <suite> inline:<key||salt base64>[|<lifetime>][|<mki>:<len>] [session params]`.
    pub fn parse(value: &str) -> Result<SdesCrypto, SdesError> {
        let mut fields = value.split_ascii_whitespace();
        let tag = fields.next().ok_or(SdesError::MissingTag)?;
        if tag.is_empty() || tag.len() > 9 || !tag.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SdesError::BadTag(tag.chars().take(32).collect()));
        }
        let tag: u32 = tag
            .parse()
            .map_err(|_| SdesError::BadTag(tag.to_string()))?;
        let suite = fields.next().ok_or(SdesError::MissingSuite)?;
        let suite = CryptoSuite::parse(suite)
            .ok_or_else(|| SdesError::UnsupportedSuite(suite.chars().take(64).collect()))?;
        let params = fields.next().ok_or(SdesError::MissingKey)?;
        if params.contains(';') {
            return Err(SdesError::MultipleKeys);
        }
        let (method, info) = params
            .split_once(':')
            .ok_or_else(|| SdesError::BadKeyMethod(params.chars().take(16).collect()))?;
        if !method.eq_ignore_ascii_case("inline") {
            return Err(SdesError::BadKeyMethod(method.chars().take(16).collect()));
        }
        let mut parts = info.split('|');
        let key_salt = parts.next().unwrap_or_default();
        for extra in parts {
            if extra.contains(':') {
                return Err(SdesError::MkiUnsupported);
            }
            let lifetime_ok = match extra.strip_prefix("2^") {
                Some(exp) => exp.parse::<u8>().is_ok_and(|e| e <= 48),
                None => extra.parse::<u64>().is_ok(),
            };
            if !lifetime_ok {
                return Err(SdesError::BadLifetime(extra.chars().take(32).collect()));
            }
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(key_salt)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(key_salt))
            .map_err(|_| SdesError::BadBase64)?;
        if raw.len() != KEY_LEN + SALT_LEN {
            return Err(SdesError::BadKeyLength(raw.len()));
        }
        let mut key = [0u8; KEY_LEN];
        let mut salt = [0u8; SALT_LEN];
        key.copy_from_slice(&raw[..KEY_LEN]);
        salt.copy_from_slice(&raw[KEY_LEN..]);
        Ok(SdesCrypto {
            tag,
            suite,
            key,
            salt,
        })
    }

    /// Same master key and salt (whatever the tag).
    pub fn same_key(&self, other: &SdesCrypto) -> bool {
        self.suite == other.suite && self.key == other.key && self.salt == other.salt
    }

    /// The attribute as it goes into SDP, without `a=`: `crypto:<tag> <suite> inline:...`.
    pub fn to_attr(&self) -> String {
        let mut raw = Vec::with_capacity(KEY_LEN + SALT_LEN);
        raw.extend_from_slice(&self.key);
        raw.extend_from_slice(&self.salt);
        format!(
            "crypto:{} {} inline:{}",
            self.tag,
            self.suite.name(),
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }

    fn context(&self, replay: bool) -> Result<Context, SrtpError> {
        let (rtp, rtcp) = if replay {
            (
                Some(srtp_replay_protection(REPLAY_WINDOW)),
                Some(srtcp_replay_protection(REPLAY_WINDOW)),
            )
        } else {
            (None, None)
        };
        Context::new(&self.key, &self.salt, self.suite.profile(), rtp, rtcp)
            .map_err(|e| SrtpError::Setup(e.to_string()))
    }
}

/// Whether the SDP audio section asks for SRTP: `RTP/SAVP` (or `RTP/SAVPF`).
pub fn is_secure(m: &MediaSection) -> bool {
    m.proto.eq_ignore_ascii_case("RTP/SAVP") || m.proto.eq_ignore_ascii_case("RTP/SAVPF")
}

/// The `a=crypto` line of an offer we answer with SDES: None for plain RTP; for `RTP/SAVP`
/// the first supported line (offerer's order, RFC 4568 §7.1.1), or an error when none is.
pub fn choose_offered(m: &MediaSection) -> Result<Option<SdesCrypto>, SdesError> {
    if !is_secure(m) {
        return Ok(None);
    }
    let mut first_error = None;
    for attr in &m.other_attrs {
        let Some(value) = attr.strip_prefix("crypto:") else {
            continue;
        };
        match SdesCrypto::parse(value) {
            Ok(c) => return Ok(Some(c)),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    tracing::debug!(error = ?first_error, "no usable a=crypto line");
    Err(SdesError::NoUsableCrypto)
}

/// Makes our SDP towards an SRTP leg `RTP/SAVP` with our key: every audio stream that is
/// not rejected gets the proto and exactly our `a=crypto` line. A body that does not parse is
/// returned unchanged.
pub fn secure_sdp(body: &[u8], ours: &SdesCrypto) -> Vec<u8> {
    let Some(mut sdp) = std::str::from_utf8(body)
        .ok()
        .and_then(|t| SessionDescription::parse(t).ok())
    else {
        return body.to_vec();
    };
    for m in sdp.media.iter_mut() {
        if !m.kind.eq_ignore_ascii_case("audio") || m.port == 0 {
            continue;
        }
        m.proto = "RTP/SAVP".to_string();
        m.other_attrs.retain(|a| !a.starts_with("crypto:"));
        m.other_attrs.push(ours.to_attr());
    }
    sdp.to_string().into_bytes()
}

#[derive(Debug, Error)]
pub enum SrtpError {
    #[error("SRTP context: {0}")]
    Setup(String),
}

/// The SRTP state of one leg: its key for what it sends us, ours for what we send it.
pub struct LegSrtp {
    remote: SdesCrypto,
    inbound: Context,
    outbound: Context,
    /// SSRCs that authenticated at least once.
    known: Vec<u32>,
    unknown_failures: u32,
    /// Packets that did not authenticate / decrypt (the relay's counter).
    pub rejected: u64,
}

impl fmt::Debug for LegSrtp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LegSrtp")
            .field("suite", &self.remote.suite)
            .field("rejected", &self.rejected)
            .finish_non_exhaustive()
    }
}

impl LegSrtp {
    /// `remote`: the key the leg's SDP gave; `local`: ours, carried by our SDP to it.
    pub fn new(remote: &SdesCrypto, local: &SdesCrypto) -> Result<LegSrtp, SrtpError> {
        Ok(LegSrtp {
            remote: remote.clone(),
            inbound: remote.context(true)?,
            outbound: local.context(false)?,
            known: Vec::new(),
            unknown_failures: 0,
            rejected: 0,
        })
    }

    /// Authenticates and decrypts a packet from the leg in place; the plain length, or None
    /// (dropped: not SRTP of this key, a replay, too short).
    pub fn unprotect(&mut self, rtcp: bool, pkt: &mut [u8]) -> Option<usize> {
        let ssrc = if rtcp { pkt.get(4..8) } else { pkt.get(8..12) }
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        let result = if rtcp {
            self.inbound.decrypt_rtcp(pkt)
        } else {
            self.inbound.decrypt_rtp(pkt)
        };
        match result {
            Ok(plain) if plain.len() <= pkt.len() => {
                if let Some(ssrc) = ssrc.filter(|s| !self.known.contains(s)) {
                    if self.known.len() < 16 {
                        self.known.push(ssrc);
                    }
                }
                pkt[..plain.len()].copy_from_slice(&plain);
                Some(plain.len())
            }
            _ => {
                self.rejected += 1;
                if ssrc.is_none_or(|s| !self.known.contains(&s)) {
                    self.unknown_failures += 1;
                    if self.unknown_failures >= MAX_UNKNOWN_SSRC_FAILURES {
                        // Bound the library's per-SSRC table (see the module notes).
                        if let Ok(fresh) = self.remote.context(true) {
                            self.inbound = fresh;
                        }
                        self.unknown_failures = 0;
                    }
                }
                None
            }
        }
    }

    /// Encrypts a plain packet towards the leg into `out`; the SRTP bytes, or None.
    pub fn protect(&mut self, rtcp: bool, pkt: &[u8]) -> Option<bytes::Bytes> {
        let r = if rtcp {
            self.outbound.encrypt_rtcp(pkt)
        } else {
            self.outbound.encrypt_rtp(pkt)
        };
        r.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";

    #[test]
    fn parses_the_rfc_example_and_writes_it_back() {
        let line = format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^20|1:4");
        // An MKI is not supported ...
        assert_eq!(SdesCrypto::parse(&line), Err(SdesError::MkiUnsupported));
        // ... the same without one is.
        let c = SdesCrypto::parse(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^20")).unwrap();
        assert_eq!(c.tag, 1);
        assert_eq!(c.suite, CryptoSuite::AesCm128HmacSha1_80);
        assert_eq!(
            c.to_attr(),
            format!("crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}")
        );
        let c32 = SdesCrypto::parse(&format!("2 aes_cm_128_hmac_sha1_32 inline:{KEY}")).unwrap();
        assert_eq!(c32.suite, CryptoSuite::AesCm128HmacSha1_32);
        assert!(!format!("{c:?}").contains(KEY), "no key in Debug");
    }

    #[test]
    fn bad_lines_are_typed_errors() {
        let cases: Vec<(String, SdesError)> = vec![
            ("".into(), SdesError::MissingTag),
            (
                "x AES_CM_128_HMAC_SHA1_80 inline:a".into(),
                SdesError::BadTag("x".into()),
            ),
            (
                "1234567890 AES_CM_128_HMAC_SHA1_80".into(),
                SdesError::BadTag("1234567890".into()),
            ),
            ("1".into(), SdesError::MissingSuite),
            (
                "1 F8_128_HMAC_SHA1_80 inline:x".into(),
                SdesError::UnsupportedSuite("F8_128_HMAC_SHA1_80".into()),
            ),
            ("1 AES_CM_128_HMAC_SHA1_80".into(), SdesError::MissingKey),
            (
                "1 AES_CM_128_HMAC_SHA1_80 uri:x".into(),
                SdesError::BadKeyMethod("uri".into()),
            ),
            (
                "1 AES_CM_128_HMAC_SHA1_80 inlinex".into(),
                SdesError::BadKeyMethod("inlinex".into()),
            ),
            (
                "1 AES_CM_128_HMAC_SHA1_80 inline:!!!!".into(),
                SdesError::BadBase64,
            ),
            (
                "1 AES_CM_128_HMAC_SHA1_80 inline:QUJD".into(),
                SdesError::BadKeyLength(3),
            ),
            (
                format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY};inline:{KEY}"),
                SdesError::MultipleKeys,
            ),
            (
                format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^99"),
                SdesError::BadLifetime("2^99".into()),
            ),
            (
                format!("1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|soon"),
                SdesError::BadLifetime("soon".into()),
            ),
        ];
        for (line, want) in cases {
            assert_eq!(SdesCrypto::parse(&line), Err(want), "{line:?}");
        }
        // Arbitrary bytes never panic.
        for junk in [
            "\u{0}\u{1}",
            "1 AES_CM_128_HMAC_SHA1_80 inline:",
            "1 AES_CM_128_HMAC_SHA1_80 inline:|",
            "ü ü ü",
            "1  AES_CM_128_HMAC_SHA1_80  inline:==",
        ] {
            assert!(SdesCrypto::parse(junk).is_err(), "{junk:?}");
        }
    }

    fn offer(proto: &str, attrs: &[&str]) -> MediaSection {
        let mut m = MediaSection::new_audio(
            4000,
            crate::sdp::default_codecs(),
            crate::sdp::Direction::SendRecv,
        );
        m.proto = proto.into();
        m.other_attrs = attrs.iter().map(|s| s.to_string()).collect();
        m
    }

    #[test]
    fn chooses_the_first_supported_line_of_a_savp_offer() {
        assert_eq!(choose_offered(&offer("RTP/AVP", &[])), Ok(None));
        let a = format!("crypto:1 AES_256_CM_HMAC_SHA1_80 inline:{KEY}");
        let b = format!("crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{KEY}");
        let chosen = choose_offered(&offer("RTP/SAVP", &[&a, &b]))
            .unwrap()
            .unwrap();
        assert_eq!(
            (chosen.tag, chosen.suite),
            (2, CryptoSuite::AesCm128HmacSha1_32)
        );
        assert_eq!(
            choose_offered(&offer("RTP/SAVP", &[&a])),
            Err(SdesError::NoUsableCrypto)
        );
        assert_eq!(
            choose_offered(&offer("RTP/SAVP", &[])),
            Err(SdesError::NoUsableCrypto)
        );
    }

    #[test]
    fn secured_sdp_is_savp_with_exactly_our_key() {
        let ours = SdesCrypto::generate(1, CryptoSuite::AesCm128HmacSha1_80);
        let plain = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=crypto:9 AES_CM_128_HMAC_SHA1_80 inline:old\r\nm=video 0 RTP/AVP 96\r\n";
        let out = String::from_utf8(secure_sdp(plain.as_bytes(), &ours)).unwrap();
        assert!(out.contains("m=audio 4000 RTP/SAVP 0\r\n"), "{out}");
        assert!(out.contains("m=video 0 RTP/AVP 96"), "{out}");
        assert_eq!(out.matches("a=crypto:").count(), 1, "{out}");
        assert!(out.contains(&format!("a={}", ours.to_attr())), "{out}");
        assert_eq!(secure_sdp(b"\xff\xfe", &ours), b"\xff\xfe".to_vec());
    }

    fn rtp(seq: u16, ssrc: u32, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
        p[8..12].copy_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn protect_unprotect_round_trip_both_suites() {
        for suite in [
            CryptoSuite::AesCm128HmacSha1_80,
            CryptoSuite::AesCm128HmacSha1_32,
        ] {
            let phone = SdesCrypto::generate(1, suite);
            let ours = SdesCrypto::generate(1, suite);
            // The server's view of the leg, and the phone's (keys swapped).
            let mut server = LegSrtp::new(&phone, &ours).unwrap();
            let mut far = LegSrtp::new(&ours, &phone).unwrap();
            let tag = if suite == CryptoSuite::AesCm128HmacSha1_80 {
                10
            } else {
                4
            };
            for seq in 0..5u16 {
                let plain = rtp(seq, 0x1234, &[0x55; 160]);
                let secured = far.protect(false, &plain).unwrap();
                assert_eq!(secured.len(), plain.len() + tag);
                assert_ne!(&secured[12..172], &plain[12..], "payload encrypted");
                let mut buf = secured.to_vec();
                let n = server.unprotect(false, &mut buf).unwrap();
                assert_eq!(&buf[..n], &plain[..]);
                // Our direction: the phone decrypts what we send.
                let back = server.protect(false, &plain).unwrap();
                let mut buf = back.to_vec();
                let n = far.unprotect(false, &mut buf).unwrap();
                assert_eq!(&buf[..n], &plain[..]);
            }
            // A replay is refused.
            let replayed = far.protect(false, &rtp(100, 0x1234, &[1; 20])).unwrap();
            let mut once = replayed.to_vec();
            assert!(server.unprotect(false, &mut once).is_some());
            let mut twice = replayed.to_vec();
            assert!(server.unprotect(false, &mut twice).is_none());
            // RTCP too (a minimal receiver report).
            let rr = [0x80u8, 201, 0, 1, 0, 0, 0x12, 0x34];
            let mut s = far.protect(true, &rr).unwrap().to_vec();
            let n = server.unprotect(true, &mut s).unwrap();
            assert_eq!(&s[..n], &rr[..]);
        }
    }

    #[test]
    fn plain_and_garbage_packets_are_rejected_and_bounded() {
        let phone = SdesCrypto::generate(1, CryptoSuite::AesCm128HmacSha1_80);
        let ours = SdesCrypto::generate(1, CryptoSuite::AesCm128HmacSha1_80);
        let mut server = LegSrtp::new(&phone, &ours).unwrap();
        let mut plain = rtp(1, 7, &[0x55; 160]);
        assert!(server.unprotect(false, &mut plain).is_none(), "plain RTP");
        let mut short = vec![0x80, 0, 0];
        assert!(server.unprotect(false, &mut short).is_none());
        assert!(server.unprotect(true, &mut [0u8; 0]).is_none());
        // Many SSRCs of garbage: rejected, the context is rebuilt on the way, and the real
        // stream still authenticates afterwards.
        for ssrc in 0..(3 * MAX_UNKNOWN_SSRC_FAILURES) {
            let mut p = rtp(1, 1000 + ssrc, &[0; 40]);
            assert!(server.unprotect(false, &mut p).is_none());
        }
        assert_eq!(
            server.rejected,
            3 + 3 * u64::from(MAX_UNKNOWN_SSRC_FAILURES)
        );
        let mut far = LegSrtp::new(&ours, &phone).unwrap();
        let mut ok = far.protect(false, &rtp(2, 9, &[1; 160])).unwrap().to_vec();
        assert!(server.unprotect(false, &mut ok).is_some());
    }
}
