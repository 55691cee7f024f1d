//! RCML (RestComm's TwiML-style XML) as a second application language: a `<Response>`
//! document compiles to the same verbs the jambonz JSON runtime runs (`crate::verbs`), one
//! file per group of RCML verbs here. What differs from jambonz is kept in the language, not
//! in the verbs: requests are form fields (`params.rs`), an action's answer replaces the rest
//! of the document (an empty `<Response/>` ends the call), and an unreadable document is an
//! error of the whole document (the fallback runs, else the call is ended), never a verb
//! skipped.
//!
//! | RCML | runs as |
//! |---|---|
//! | `Say` (voice, language, loop) | `say` |
//! | `Play` (loop) | `play` |
//! | `Pause` (length) | `pause` |
//! | `Gather` (action, method, timeout, finishOnKey, numDigits; nested Say/Play/Pause) | `gather` |
//! | `Dial` (action, method, timeout, timeLimit, callerId, record; Number, Client, Sip) | `dial` |
//! | `Dial` with `Conference` (muted, beep, startConferenceOnEnter, endConferenceOnExit, maxParticipants) | `conference` |
//! | `Record` (action, method, maxLength, finishOnKey, timeout, playBeep) | `record` |
//! | `Sms`, `<Record transcribe>` | refused: not available yet |
//! | `Redirect` (method) | `redirect` |
//! | `Hangup` | `hangup` |
//! | `Reject` (reason busy / rejected) | `sip:decline` 486 / 603 |

mod control;
mod dial;
mod gather;
mod params;
mod prompts;
mod record;
pub mod sids;

use roxmltree::{Document, Node, ParsingOptions};
use thiserror::Error;

use crate::app::CallStatus;
use crate::hook::HookSpec;
use crate::verbs::{Script, Verb};
use crate::Method;

pub use params::form;

/// The API version RCML requests carry (`ApiVersion`).
pub const API_VERSION: &str = "2012-04-24";

/// Most XML nodes one document may have (a hook cannot make us build a huge tree; the body
/// itself is capped by the delivery).
const MAX_NODES: u32 = 10_000;

/// Call progress events a `StatusCallback` wants (`StatusCallbackEvent`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusEvent {
    Initiated,
    Ringing,
    Answered,
    Completed,
}

impl StatusEvent {
    /// Reads one word of `StatusCallbackEvent`.
    pub fn parse(word: &str) -> Option<Self> {
        match word.trim().to_ascii_lowercase().as_str() {
            "initiated" => Some(StatusEvent::Initiated),
            "ringing" => Some(StatusEvent::Ringing),
            "answered" => Some(StatusEvent::Answered),
            "completed" => Some(StatusEvent::Completed),
            _ => None,
        }
    }

    /// The event a call status belongs to.
    pub fn of(status: CallStatus) -> Self {
        match status {
            CallStatus::Queued | CallStatus::Trying => StatusEvent::Initiated,
            CallStatus::Ringing | CallStatus::EarlyMedia => StatusEvent::Ringing,
            CallStatus::InProgress => StatusEvent::Answered,
            CallStatus::Completed
            | CallStatus::Failed
            | CallStatus::Busy
            | CallStatus::NoAnswer => StatusEvent::Completed,
        }
    }
}

/// What an RCML application was started with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RcmlOptions {
    /// The events the status callback gets (RestComm's default: completed only).
    pub status_events: Vec<StatusEvent>,
}

impl Default for RcmlOptions {
    fn default() -> Self {
        RcmlOptions {
            status_events: vec![StatusEvent::Completed],
        }
    }
}

impl RcmlOptions {
    pub fn reports(&self, status: CallStatus) -> bool {
        self.status_events.contains(&StatusEvent::of(status))
    }
}

/// Why an RCML document cannot run.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum RcmlError {
    #[error("not well-formed XML: {0}")]
    Xml(String),
    #[error("the root element is <{0}>, not <Response>")]
    NotResponse(String),
    #[error("unknown RCML verb <{0}>")]
    UnknownVerb(String),
    #[error("<{verb}>: {reason}")]
    Invalid { verb: &'static str, reason: String },
    #[error("<{verb}>: {reason}")]
    NotAvailable { verb: &'static str, reason: String },
}

impl RcmlError {
    fn invalid(verb: &'static str, reason: impl Into<String>) -> Self {
        RcmlError::Invalid {
            verb,
            reason: reason.into(),
        }
    }
}

/// Does this answer look like an XML document (for applications whose language is not
/// fixed, and for messages)?
pub fn looks_like_xml(body: &str, content_type: Option<&str>) -> bool {
    content_type.is_some_and(|c| c.to_ascii_lowercase().contains("xml"))
        || body.trim_start().starts_with('<')
}

/// Compiles an RCML document into the verbs it runs. Any error is the whole document's.
pub fn parse(xml: &str) -> Result<Script, RcmlError> {
    let options = ParsingOptions {
        allow_dtd: false,
        nodes_limit: MAX_NODES,
    };
    let doc =
        Document::parse_with_options(xml, options).map_err(|e| RcmlError::Xml(e.to_string()))?;
    let root = doc.root_element();
    if root.tag_name().name() != "Response" {
        return Err(RcmlError::NotResponse(root.tag_name().name().to_string()));
    }
    let mut script = Script::new();
    for node in root.children().filter(Node::is_element) {
        script.push_back(Ok(verb(node)?));
    }
    Ok(script)
}

fn verb(node: Node) -> Result<Verb, RcmlError> {
    match node.tag_name().name() {
        "Say" => prompts::say(node),
        "Play" => prompts::play(node),
        "Pause" => prompts::pause(node),
        "Gather" => gather::gather(node),
        "Dial" => dial::dial(node),
        "Record" => record::record(node),
        "Redirect" => control::redirect(node),
        "Hangup" => Ok(control::hangup()),
        "Reject" => control::reject(node),
        "Sms" | "Fax" | "Email" | "UssdCollect" | "UssdMessage" => Err(RcmlError::NotAvailable {
            verb: "Sms",
            reason: format!("<{}> is not available on hookflash", node.tag_name().name()),
        }),
        other => Err(RcmlError::UnknownVerb(other.to_string())),
    }
}

// Attribute helpers shared by the verb files.

/// An attribute, trimmed; None when absent or blank.
fn attr<'a>(node: Node<'a, '_>, name: &str) -> Option<&'a str> {
    node.attribute(name)
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// The element's text, trimmed.
fn text(node: Node) -> String {
    node.children()
        .filter(Node::is_text)
        .filter_map(|n| n.text())
        .collect::<String>()
        .trim()
        .to_string()
}

fn number(verb: &'static str, node: Node, name: &str) -> Result<Option<f64>, RcmlError> {
    match attr(node, name) {
        None => Ok(None),
        Some(v) => match v.parse::<f64>() {
            Ok(n) if n.is_finite() && (0.0..=86_400.0).contains(&n) => Ok(Some(n)),
            _ => Err(RcmlError::invalid(
                verb,
                format!("{name}={v:?} is not a number of seconds from 0 to 86400"),
            )),
        },
    }
}

fn count(verb: &'static str, node: Node, name: &str) -> Result<Option<u32>, RcmlError> {
    match attr(node, name) {
        None => Ok(None),
        Some(v) => v
            .parse::<u32>()
            .map(Some)
            .map_err(|_| RcmlError::invalid(verb, format!("{name}={v:?} is not a whole number"))),
    }
}

/// `method` (GET or POST; default POST).
fn method(verb: &'static str, node: Node, name: &str) -> Result<Method, RcmlError> {
    match attr(node, name).map(str::to_ascii_uppercase).as_deref() {
        None | Some("POST") => Ok(Method::Post),
        Some("GET") => Ok(Method::Get),
        Some(v) => Err(RcmlError::invalid(
            verb,
            format!("{name}={v:?} is not GET or POST"),
        )),
    }
}

/// A hook from a URL attribute (or text) and its method attribute.
fn hook(url: &str, method: Method) -> HookSpec {
    HookSpec {
        url: url.to_string(),
        method: Some(method),
        basic_auth: None,
    }
}

/// A verb's `action` with `method`; None when there is no action.
fn action(verb: &'static str, node: Node) -> Result<Option<HookSpec>, RcmlError> {
    let m = method(verb, node, "method")?;
    Ok(attr(node, "action").map(|u| hook(u, m)))
}

/// `loop`: 0 means until the call moves on (RCML), a count otherwise.
fn repeat(verb: &'static str, node: Node) -> Result<crate::verbs::common::Loop, RcmlError> {
    use crate::verbs::common::Loop;
    Ok(match count(verb, node, "loop")? {
        None => Loop::Times(1),
        Some(0) => Loop::Forever,
        Some(n) => Loop::Times(n),
    })
}

#[cfg(test)]
mod tests;
