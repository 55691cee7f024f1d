//! The verb model and one file per verb with its executor.
//!
//! jambonz JSON is read here: a verb is `{"verb": "say", ...}` or `{"say": {...}}`. Each
//! array element is read on its own; one that cannot be read (unknown name, wrong types) is
//! an error of that verb only: the run reports and skips it.

use std::collections::VecDeque;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::{kind_of, AppError, VerbError};
use crate::exec::{Exec, Flow};

pub mod answer;
pub mod common;
pub mod conference;
pub mod config;
pub mod decline;
pub mod dequeue;
pub mod dial;
pub mod dtmf;
pub mod enqueue;
pub mod gather;
pub mod hangup;
pub mod leave;
pub mod listen;
pub mod pause;
pub mod play;
pub mod record;
pub mod redirect;
pub mod say;
pub mod sip_refer;
pub mod tag;
pub mod unsupported;

pub use answer::Answer;
pub use conference::Conference;
pub use config::Config;
pub use decline::Decline;
pub use dequeue::Dequeue;
pub use dial::Dial;
pub use dtmf::Dtmf;
pub use enqueue::Enqueue;
pub use gather::Gather;
pub use hangup::Hangup;
pub use leave::Leave;
pub use listen::Listen;
pub use pause::Pause;
pub use play::Play;
pub use record::Record;
pub use redirect::Redirect;
pub use say::Say;
pub use sip_refer::SipRefer;
pub use tag::Tag;
pub use unsupported::NotYet;

/// One verb of an application.
#[derive(Debug, Clone, PartialEq)]
pub enum Verb {
    Say(Say),
    Play(Play),
    Gather(Box<Gather>),
    Pause(Pause),
    Hangup(Hangup),
    Answer(Answer),
    Decline(Decline),
    Dial(Box<Dial>),
    SipRefer(Box<SipRefer>),
    Tag(Tag),
    Config(Config),
    Dtmf(Dtmf),
    Leave(Leave),
    Redirect(Redirect),
    Listen(Box<Listen>),
    /// RCML `<Record>` (not a jambonz verb).
    Record(Box<Record>),
    Conference(Box<Conference>),
    Enqueue(Box<Enqueue>),
    Dequeue(Box<Dequeue>),
    /// A jambonz verb this server does not run yet (reported and skipped).
    NotYet(NotYet),
}

/// A list of verbs as read: each one, or why it cannot run.
pub type Script = VecDeque<Result<Verb, VerbError>>;

/// Reads a list of verbs, each on its own.
pub fn parse_script(values: Vec<Value>) -> Script {
    values.iter().map(Verb::parse).collect()
}

/// A verb's properties, read and checked.
pub(crate) trait Props: DeserializeOwned {
    /// Checks beyond types (ranges, non-empty strings).
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Checks a verb built elsewhere (RCML) as its JSON form is checked.
pub(crate) fn check_props<T: Props>(t: &T) -> Result<(), String> {
    t.check()
}

pub(crate) fn props<T: Props>(verb: &str, data: Map<String, Value>) -> Result<T, VerbError> {
    let t: T =
        serde_json::from_value(Value::Object(data)).map_err(|e| VerbError::invalid(verb, e))?;
    t.check().map_err(|e| VerbError::invalid(verb, e))?;
    Ok(t)
}

impl Verb {
    /// The jambonz name of the verb.
    pub fn name(&self) -> &str {
        match self {
            Verb::Say(_) => "say",
            Verb::Play(_) => "play",
            Verb::Gather(_) => "gather",
            Verb::Pause(_) => "pause",
            Verb::Hangup(_) => "hangup",
            Verb::Answer(_) => "answer",
            Verb::Decline(_) => "sip:decline",
            Verb::SipRefer(_) => "sip:refer",
            Verb::Dial(_) => "dial",
            Verb::Tag(_) => "tag",
            Verb::Config(_) => "config",
            Verb::Dtmf(_) => "dtmf",
            Verb::Leave(_) => "leave",
            Verb::Redirect(_) => "redirect",
            Verb::Listen(_) => "listen",
            Verb::Record(_) => "record",
            Verb::Conference(_) => "conference",
            Verb::Enqueue(_) => "enqueue",
            Verb::Dequeue(_) => "dequeue",
            Verb::NotYet(n) => &n.name,
        }
    }

    /// Reads one element of a jambonz verb array.
    pub fn parse(v: &Value) -> Result<Verb, VerbError> {
        let Value::Object(obj) = v else {
            return Err(VerbError::NotAnObject(kind_of(v)));
        };
        let (name, data) = match obj.get("verb") {
            Some(Value::String(name)) => {
                let mut data = obj.clone();
                data.remove("verb");
                (name.clone(), data)
            }
            Some(other) => {
                return Err(VerbError::invalid(
                    "verb",
                    format!("the verb name must be a string, got {}", kind_of(other)),
                ))
            }
            None => {
                // The older form: {"say": {...}}.
                let mut it = obj.iter();
                match (it.next(), it.next()) {
                    (Some((name, Value::Object(data))), None) => (name.clone(), data.clone()),
                    (Some((name, _)), None) if is_known(name) => {
                        return Err(VerbError::invalid(name, "properties must be an object"))
                    }
                    _ => return Err(VerbError::MissingName),
                }
            }
        };
        Self::from_props(&name, data)
    }

    fn from_props(name: &str, data: Map<String, Value>) -> Result<Verb, VerbError> {
        Ok(match name {
            "say" => Verb::Say(props(name, data)?),
            "play" => Verb::Play(props(name, data)?),
            "gather" => Verb::Gather(Box::new(props(name, data)?)),
            "pause" => Verb::Pause(props(name, data)?),
            "hangup" => Verb::Hangup(props(name, data)?),
            "answer" => Verb::Answer(props(name, data)?),
            "sip:decline" => Verb::Decline(props(name, data)?),
            "sip:refer" => Verb::SipRefer(Box::new(props(name, data)?)),
            "dial" => Verb::Dial(Box::new(props(name, data)?)),
            "tag" => Verb::Tag(props(name, data)?),
            "config" => Verb::Config(props(name, data)?),
            "dtmf" => Verb::Dtmf(props(name, data)?),
            "leave" => Verb::Leave(props(name, data)?),
            "redirect" => Verb::Redirect(props(name, data)?),
            "listen" => Verb::Listen(Box::new(props(name, data)?)),
            "conference" => Verb::Conference(Box::new(props(name, data)?)),
            "enqueue" => Verb::Enqueue(Box::new(props(name, data)?)),
            "dequeue" => Verb::Dequeue(Box::new(props(name, data)?)),
            n if unsupported::NOT_YET.contains(&n) => Verb::NotYet(NotYet {
                name: n.to_string(),
            }),
            other => return Err(VerbError::Unknown(other.to_string())),
        })
    }

    pub(crate) async fn exec(&self, x: &mut Exec) -> Result<Flow, AppError> {
        match self {
            Verb::Say(v) => v.exec(x).await,
            Verb::Play(v) => v.exec(x).await,
            Verb::Gather(v) => v.exec(x).await,
            Verb::Pause(v) => v.exec(x).await,
            Verb::Hangup(v) => v.exec(x).await,
            Verb::Answer(v) => v.exec(x).await,
            Verb::Decline(v) => v.exec(x).await,
            Verb::SipRefer(v) => v.exec(x).await,
            Verb::Dial(v) => v.exec(x).await,
            Verb::Tag(v) => v.exec(x).await,
            Verb::Config(v) => v.exec(x).await,
            Verb::Dtmf(v) => v.exec(x).await,
            Verb::Leave(v) => v.exec(x).await,
            Verb::Redirect(v) => v.exec(x).await,
            Verb::Listen(v) => v.exec(x).await,
            Verb::Record(v) => v.exec(x).await,
            Verb::Conference(v) => v.exec(x).await,
            Verb::Enqueue(v) => v.exec(x).await,
            Verb::Dequeue(v) => v.exec(x).await,
            Verb::NotYet(v) => v.exec(x).await,
        }
    }
}

fn is_known(name: &str) -> bool {
    matches!(
        name,
        "say"
            | "play"
            | "gather"
            | "pause"
            | "hangup"
            | "answer"
            | "sip:decline"
            | "sip:refer"
            | "dial"
            | "tag"
            | "config"
            | "dtmf"
            | "leave"
            | "redirect"
            | "listen"
            | "conference"
            | "enqueue"
            | "dequeue"
    ) || unsupported::NOT_YET.contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn both_forms_parse() {
        let a = Verb::parse(&json!({"verb": "say", "text": "hi"})).unwrap();
        let b = Verb::parse(&json!({"say": {"text": "hi"}})).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.name(), "say");
    }

    #[test]
    fn bad_elements_are_errors_of_their_own() {
        let script = parse_script(vec![
            json!("say"),
            json!({}),
            json!({"verb": 5}),
            json!({"verb": "frobnicate"}),
            json!({"verb": "say", "text": 5}),
            json!({"say": "hi"}),
            json!({"verb": "dial", "target": []}),
            json!({"verb": "transcribe"}),
            json!({"verb": "hangup"}),
        ]);
        let r: Vec<_> = script.into_iter().collect();
        assert_eq!(r[0], Err(VerbError::NotAnObject("a string")));
        assert_eq!(r[1], Err(VerbError::MissingName));
        assert!(matches!(r[2], Err(VerbError::Invalid { .. })));
        assert_eq!(r[3], Err(VerbError::Unknown("frobnicate".into())));
        assert!(matches!(&r[4], Err(VerbError::Invalid { verb, .. }) if verb == "say"));
        assert!(matches!(&r[5], Err(VerbError::Invalid { verb, .. }) if verb == "say"));
        // A dial without a target is an error of that verb.
        assert!(matches!(&r[6], Err(VerbError::Invalid { verb, .. }) if verb == "dial"));
        assert_eq!(
            r[7],
            Ok(Verb::NotYet(NotYet {
                name: "transcribe".into()
            }))
        );
        assert!(matches!(r[8], Ok(Verb::Hangup(_))));
    }
}
