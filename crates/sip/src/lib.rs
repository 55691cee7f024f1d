//! hookflash's SIP layer: a thin adapter over rsipstack (pinned) plus the sans-IO pieces we
//! own — digest authentication, registrar decisions, Contact parsing and URI helpers.
//!
//! The engine uses rsipstack's dialog layer through the `stack` re-export, so that a version
//! bump of rsipstack touches this crate and the engine's `sip_glue` only.

pub mod auth_guard;
pub mod digest;
pub mod flood;
pub mod guard;
pub mod registrar;
pub mod server;
pub mod source;
pub mod tcp;
pub mod uri;

pub use rsipstack as stack;
pub use server::{SipServer, SipServerError, SipServerOptions};
