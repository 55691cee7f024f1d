//! hookflash-config: the server's configuration — built-in defaults, overridden by a TOML
//! file, overridden by environment variables — and its validation. The shape is the contract
//! documented in `docs/config.md`.
//!
//! Also home of the plain vocabulary the configuration is written in and the store shares:
//! digest algorithm names ([`DigestAlgorithm`]), dial classes ([`DialClass`]) and the
//! validation/normalisation of identifiers ([`normalize`]). This crate depends on no other
//! hookflash crate; the store applies the configured accounts to the database
//! (`Store::apply_provisioning`).

mod config;
mod database;
mod dial;
mod digest;
mod error;
pub mod normalize;

pub use config::{
    default_premium_prefixes, AccountSpec, AppLanguage, AppSpec, ClusterConfig, Config, HookMethod,
    HookSpec, HttpConfig, NumberSpec, OAuthAppSpec, OAuthConfig, OutsideRefer, RegistrarConfig,
    RtpConfig, SecurityConfig, SipConfig, TrunkSpec, TrustedProxy, UserSpec,
};
pub use database::{redact_url, DatabaseUrl};
pub use dial::DialClass;
pub use digest::DigestAlgorithm;
pub use error::ConfigError;
