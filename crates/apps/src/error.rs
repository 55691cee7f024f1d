//! The runtime's errors.

use thiserror::Error;

use crate::control::ControlError;
use crate::delivery::DeliveryError;

/// Why an application could not go on.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum AppError {
    /// A hook request failed for good (after the delivery's retries).
    #[error("{label} {url}: {source}")]
    Hook {
        label: &'static str,
        url: String,
        #[source]
        source: DeliveryError,
    },
    /// A hook URL (or a relative one joined to the call_hook) is not an http(s) URL.
    #[error("hook URL {url:?} is not usable: {reason}")]
    BadHookUrl { url: String, reason: String },
    /// The hook answered something that is not JSON.
    #[error("{label} {url} answered invalid JSON: {reason}")]
    InvalidJson {
        label: &'static str,
        url: String,
        reason: String,
    },
    /// The hook answered an RCML document that cannot run (not XML, not a `<Response>`, an
    /// unknown or invalid verb).
    #[error("{label} {url} answered invalid RCML: {reason}")]
    InvalidRcml {
        label: &'static str,
        url: String,
        reason: String,
    },
    /// The hook answered something that is not a sipgate push `<Response>`.
    #[error("{label} {url} answered invalid sipgate push XML: {reason}")]
    InvalidPushXml {
        label: &'static str,
        url: String,
        reason: String,
    },
    /// The hook answered no list of verbs where one is needed.
    #[error("{label} {url} answered {what}, not an array of verbs")]
    NotAnArray {
        label: &'static str,
        url: String,
        what: String,
    },
    /// An operation on the call failed.
    #[error("call control: {0}")]
    Control(#[from] ControlError),
}

/// Why one verb of a list is not run.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum VerbError {
    #[error("a verb must be a JSON object, got {0}")]
    NotAnObject(&'static str),
    #[error("verb object without a \"verb\" name")]
    MissingName,
    #[error("unknown verb {0:?}")]
    Unknown(String),
    #[error("{verb}: {reason}")]
    Invalid { verb: String, reason: String },
}

impl VerbError {
    pub(crate) fn invalid(verb: &str, reason: impl std::fmt::Display) -> Self {
        VerbError::Invalid {
            verb: verb.to_string(),
            reason: reason.to_string(),
        }
    }
}

/// What [`serde_json::Value`] kind a value is, for messages.
pub(crate) fn kind_of(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}
