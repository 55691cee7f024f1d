//! hookflash-store: configuration, persistence (sqlx + migrations), provisioning and call
//! records.
//!
//! The SQL is kept portable (runtime queries, `$n` placeholders, TEXT/BIGINT columns, no
//! backend-specific functions) so the same queries run on Postgres later.

mod accounts;
mod api_keys;
mod calls;
pub mod config;
mod crypto;
mod db;
mod error;
mod model;
pub mod normalize;
mod numbers;
mod provisioning;
mod registrations;
mod trunks;
mod users;

pub use config::{
    AccountSpec, Config, HttpConfig, NumberSpec, RegistrarConfig, RtpConfig, SipConfig, TrunkSpec,
    UserSpec,
};
pub use crypto::{api_key_hash, generate_api_key, generate_password, ha1, DigestAlgorithm};
pub use db::{Store, DB_FILE_NAME};
pub use error::{ConfigError, StoreError};
pub use model::{
    Account, ApiKey, CallRecord, DemoCredentials, LegRecord, Number, Registration, Trunk, User,
};
