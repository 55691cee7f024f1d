//! hookflash-store: persistence (sqlx + migrations), provisioning of the configured accounts
//! and call records. The configuration itself is `hookflash-config`'s.
//!
//! Two backends: SQLite (the zero-config default, `data_dir/hookflash.db`) and PostgreSQL
//! (`database_url = "postgres://..."`), through `sqlx::Any`. The SQL is portable (runtime
//! queries, `$n` placeholders, TEXT/BIGINT columns, no backend-specific functions); each
//! backend has its own migration set, kept in step (see `db.rs`).

mod accounts;
mod api_keys;
mod applications;
mod cache;
mod calls;
mod crypto;
mod db;
mod error;
mod model;
mod nodes;
mod numbers;
mod oauth;
mod pats;
mod provisioning;
mod rc_subscriptions;
mod record_writer;
mod recordings;
mod registrations;
mod secrets;
#[cfg(test)]
mod testdb;
mod trunks;
mod users;
mod voicemail;

pub use applications::{
    AppLanguage, Application, ApplicationNumber, ApplicationSpec, Hook, HookMethod,
};
pub use calls::UserCallFilter;
pub use crypto::{
    api_key_hash, constant_time_eq, generate_api_key, generate_password, ha1, random_hex,
};
pub use db::{Backend, Store, DB_FILE_NAME};
pub use error::StoreError;
/// The vocabulary the store shares with the configuration (`hookflash-config`), re-exported
/// because the store's own API speaks it (`ha1`, `User::ha1`, `DialClasses`, validation).
pub use hookflash_config::{normalize, DatabaseUrl, DialClass, DigestAlgorithm};
pub use model::{
    Account, ApiKey, CallRecord, DemoCredentials, DialClasses, DialPolicy, LegRecord, Number,
    PersonalAccessToken, Recording, Registration, Trunk, User,
};
pub use nodes::{NodeRow, ReapedNode, NODE_FAILURE_CAUSE};
pub use oauth::{IssuedTokens, OAuthApp, OAuthGrant, MAX_TOKENS_PER_USER_APP};
pub use pats::is_pat_id;
pub use rc_subscriptions::RcSubscription;
pub use record_writer::LiveCall;
pub use voicemail::{Forwarding, Mailbox, VoicemailMessage};
