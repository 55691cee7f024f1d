//! hookflash's SIP layer: a thin adapter over rsipstack (pinned) plus the sans-IO pieces we
//! own — digest authentication, registrar decisions, Contact parsing and URI helpers.
//!
//! This crate is the only one that names rsipstack: the engine sees our own dialog and
//! transaction types (`dialog`), the per-call event router (`router`) and rsip's message
//! model re-exported as `msg`. An rsipstack upgrade touches this crate only.

pub mod auth_guard;
pub mod dialog;
pub mod digest;
pub mod flood;
pub mod guard;
pub mod registrar;
pub mod router;
pub mod server;
pub mod source;
pub mod tcp;
pub mod tls;
pub mod uri;

/// SIP messages: rsip's model (`Request`, `Response`, `Header`, `StatusCode`, `Uri` …).
pub use rsipstack::sip as msg;
/// A tracing filter directive that holds the SIP library's own logs at warn: at info it logs
/// every message in full, credentials included.
pub const QUIET_STACK_LOGS: &str = "rsipstack=warn";

pub use server::{SipServer, SipServerError, SipServerOptions};
