//! The application layer below the dialects: webhook delivery (signed, queued per key,
//! retried with backoff, counted) that every dialect's push events and the application
//! runtime use, and the runtime that runs a call from an application's hooks (jambonz JSON
//! verbs, one file per verb under `verbs/`; RCML XML compiled to the same verbs in `rcml/`).

pub mod alert;
pub mod app;
pub mod control;
pub mod delivery;
pub mod dispatch;
pub mod engine_control;
pub mod error;
mod exec;
pub mod hook;
pub mod listen_audio;
pub mod rcml;
pub mod runtime;
mod session;
pub mod sipgate_xml;
pub mod verbs;

#[cfg(test)]
mod listen_tests;
#[cfg(test)]
mod testing;

pub use alert::{Alert, AlertKind, AlertSink};
pub use app::{AppHooks, CallFields, CallStatus, Direction, Hook, Language, Launch, SipInfo};
pub use delivery::{
    Body, Delivery, DeliveryConfig, DeliveryError, Method, Reply, Request, Signature,
};
pub use error::{AppError, VerbError};
pub use exec::RecordingLinks;
pub use hook::HookSpec;
pub use runtime::{Prepared, RunEnd, Runtime, StatusUpdate};
pub use verbs::{parse_script, Script, Verb};
