//! hookflash-store: configuration, persistence (sqlx + migrations), provisioning and call
//! records.
//!
//! The SQL is kept portable (runtime queries, `$n` placeholders, TEXT/BIGINT columns, no
//! backend-specific functions) so the same queries run on Postgres later.

mod accounts;
mod api_keys;
mod cache;
mod calls;
pub mod config;
mod crypto;
mod db;
mod error;
mod model;
pub mod normalize;
mod numbers;
mod pats;
mod provisioning;
mod record_writer;
mod recordings;
mod registrations;
mod secrets;
mod trunks;
mod users;
mod voicemail;

pub use calls::UserCallFilter;
pub use config::{
    default_premium_prefixes, AccountSpec, Config, HttpConfig, NumberSpec, OutsideRefer,
    RegistrarConfig, RtpConfig, SecurityConfig, SipConfig, TrunkSpec, UserSpec,
};
pub use crypto::{
    api_key_hash, constant_time_eq, generate_api_key, generate_password, ha1, random_hex,
    DigestAlgorithm,
};
pub use db::{Store, DB_FILE_NAME};
pub use error::{ConfigError, StoreError};
pub use model::{
    Account, ApiKey, CallRecord, DemoCredentials, DialClass, DialClasses, DialPolicy, LegRecord,
    Number, PersonalAccessToken, Recording, Registration, Trunk, User,
};
pub use pats::is_pat_id;
pub use voicemail::{Forwarding, Mailbox, VoicemailMessage};
