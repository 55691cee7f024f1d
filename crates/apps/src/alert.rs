//! Alerts: what went wrong in an application that its owner should see (jambonz keeps these
//! as "alerts" of the account). Every alert is logged with the call id; a sink set on the
//! runtime may also keep or forward them.

use std::sync::Arc;

use crate::control::CallRef;

/// What kind of problem an alert reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlertKind {
    /// A hook could not be reached or answered with an error status.
    WebhookFailure,
    /// A hook answered something that is not a usable list of verbs.
    InvalidApp,
    /// A verb of a list could not be read (unknown name, wrong types); it was skipped.
    InvalidVerb,
    /// A recognised verb or option that this server does not run yet; it was skipped.
    NotSupported,
    /// Audio could not be played (URL not fetchable, TTS failed).
    PlayFailed,
    /// An operation on the call failed.
    CallControl,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::WebhookFailure => "webhook-failure",
            AlertKind::InvalidApp => "invalid-app-payload",
            AlertKind::InvalidVerb => "invalid-verb",
            AlertKind::NotSupported => "not-supported",
            AlertKind::PlayFailed => "play-failed",
            AlertKind::CallControl => "call-control",
        }
    }
}

/// One alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub call: CallRef,
    pub call_sid: String,
    pub account_sid: String,
    pub kind: AlertKind,
    pub message: String,
}

/// Where alerts go besides the log.
pub type AlertSink = Arc<dyn Fn(Alert) + Send + Sync>;
