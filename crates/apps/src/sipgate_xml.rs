//! sipgate push API XML: what a sipgate app answers to `newCall` (and to the `onData` of a
//! `<Gather>`), read into [`PushXml`] and compiled to the runtime's verbs (`crate::verbs`),
//! the way RCML is (`crate::rcml`). The push dispatcher (crates/api, sipgate dialect) decides
//! what the engine does with a newCall answer ([`PushXml::plan`]); the runtime runs the rest.
//!
//! | sipgate | runs as |
//! |---|---|
//! | `<Response onAnswer onHangup>` | the follow-up URLs of `answer` / `hangup` events |
//! | `<Dial callerId anonymous target><Number>…</Number>…</Dial>` | newCall: the call rings those numbers instead of the user (engine); later: `dial` |
//! | `<Dial><Voicemail/></Dial>` (or `target="voicemail"`) | newCall: the user's voicemail (engine) |
//! | `<Play><Url>…</Url></Play>` | `play` (answers the call) |
//! | `<Gather onData maxDigits timeout><Play>…</Play></Gather>` | `gather`; digits POSTed as `event=dtmf` to `onData` |
//! | `<Reject reason="busy\|rejected"/>` | `sip:decline` 486 / 603 |
//! | `<Hangup/>` | `hangup` |
//!
//! A document that is not XML or not a `<Response>` is an error of the whole document (the
//! call proceeds as if the app had not answered); an element sipgate does not have, or one
//! that cannot run (an empty `<Number>`), is skipped and listed in [`PushXml::ignored`].

use roxmltree::{Document, Node, ParsingOptions};
use serde_json::{Map, Value};
use thiserror::Error;

use crate::delivery::Method;
use crate::hook::HookSpec;
use crate::verbs::common::{Loop, OneOrMany, SipHeaders};
use crate::verbs::dial::DialTarget;
use crate::verbs::{Decline, Dial, Gather, Hangup, Play, Script, Verb};
use crate::VerbError;

/// Most XML nodes one answer may have (the body itself is capped by the delivery).
const MAX_NODES: u32 = 2_000;
/// Most numbers one `<Dial>` rings.
pub const MAX_DIAL_NUMBERS: usize = 10;
/// `<Gather timeout>` when absent (milliseconds).
pub const DEFAULT_GATHER_TIMEOUT_MS: u64 = 5_000;
/// The longest `<Gather timeout>` we wait (milliseconds).
const MAX_GATHER_TIMEOUT_MS: u64 = 300_000;
/// How long a `<Dial>` run by the runtime rings.
const DIAL_TIMEOUT_SECS: f64 = 60.0;

/// Why a push answer cannot be read at all.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum PushXmlError {
    #[error("not well-formed XML: {0}")]
    Xml(String),
    #[error("the root element is <{0}>, not <Response>")]
    NotResponse(String),
}

/// One instruction of a push answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Ring these numbers / extensions instead.
    Dial {
        numbers: Vec<String>,
        caller_id: Option<String>,
        anonymous: bool,
    },
    /// The user's voicemail.
    Voicemail,
    Play {
        url: String,
    },
    Gather {
        on_data: Option<String>,
        max_digits: Option<u32>,
        timeout_ms: u64,
        play: Option<String>,
    },
    Reject {
        busy: bool,
    },
    Hangup,
}

/// A push answer, read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushXml {
    pub on_answer: Option<String>,
    pub on_hangup: Option<String>,
    pub actions: Vec<Action>,
    /// Elements skipped, with why (for the log).
    pub ignored: Vec<String>,
}

/// What a `newCall` answer asks of a call that rings a user.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Nothing to execute: the call rings the user as before.
    Ring,
    /// Ring these instead of the user (the first `<Dial>` with numbers).
    Dial {
        numbers: Vec<String>,
        caller_id: Option<String>,
        anonymous: bool,
    },
    /// The user's voicemail.
    Voicemail,
    /// The runtime runs these verbs on the call (Play, Gather, Reject, Hangup, ...).
    Run(Script),
}

impl PushXml {
    /// What the engine does with this answer to `newCall`: a leading `<Dial>` re-routes the
    /// ringing call (the rest is not run: the call is the dialled party's), anything else
    /// runs on the runtime.
    pub fn plan(&self) -> Plan {
        match self.actions.first() {
            None => Plan::Ring,
            Some(Action::Dial {
                numbers,
                caller_id,
                anonymous,
            }) => Plan::Dial {
                numbers: numbers.clone(),
                caller_id: caller_id.clone(),
                anonymous: *anonymous,
            },
            Some(Action::Voicemail) => Plan::Voicemail,
            Some(_) => Plan::Run(to_verbs(&self.actions)),
        }
    }

    /// The `onData` of the first `<Gather>`, if any.
    pub fn on_data(&self) -> Option<&str> {
        self.actions.iter().find_map(|a| match a {
            Action::Gather { on_data, .. } => on_data.as_deref(),
            _ => None,
        })
    }
}

/// Reads a push answer. An empty body is an empty answer.
pub fn parse(xml: &str) -> Result<PushXml, PushXmlError> {
    if xml.trim().is_empty() {
        return Ok(PushXml::default());
    }
    let options = ParsingOptions {
        allow_dtd: false,
        nodes_limit: MAX_NODES,
    };
    let doc =
        Document::parse_with_options(xml, options).map_err(|e| PushXmlError::Xml(e.to_string()))?;
    let root = doc.root_element();
    if root.tag_name().name() != "Response" {
        return Err(PushXmlError::NotResponse(
            root.tag_name().name().to_string(),
        ));
    }
    let mut out = PushXml {
        on_answer: url_attr(root, "onAnswer"),
        on_hangup: url_attr(root, "onHangup"),
        ..PushXml::default()
    };
    for node in root.children().filter(Node::is_element) {
        match action(node) {
            Ok(a) => out.actions.push(a),
            Err(why) => out.ignored.push(why),
        }
    }
    Ok(out)
}

/// An http(s) URL attribute (None when absent, blank or not http(s)).
fn url_attr(node: Node, name: &str) -> Option<String> {
    node.attribute(name)
        .map(str::trim)
        .filter(|v| v.starts_with("http://") || v.starts_with("https://"))
        .map(str::to_string)
}

fn text(node: Node) -> String {
    node.children()
        .filter(Node::is_text)
        .filter_map(|n| n.text())
        .collect::<String>()
        .trim()
        .to_string()
}

fn action(node: Node) -> Result<Action, String> {
    match node.tag_name().name() {
        "Dial" => dial(node),
        "Play" => play_url(node).map(|url| Action::Play { url }),
        "Gather" => gather(node),
        "Reject" => match node.attribute("reason").map(str::trim) {
            None | Some("") | Some("rejected") => Ok(Action::Reject { busy: false }),
            Some("busy") => Ok(Action::Reject { busy: true }),
            Some(other) => Err(format!("<Reject reason={other:?}>: not busy or rejected")),
        },
        "Hangup" => Ok(Action::Hangup),
        other => Err(format!("<{other}> is not a sipgate push element")),
    }
}

fn dial(node: Node) -> Result<Action, String> {
    let anonymous = node
        .attribute("anonymous")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let caller_id = node
        .attribute("callerId")
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string);
    let mut numbers = Vec::new();
    let mut voicemail = false;
    match node.attribute("target").map(str::trim) {
        None | Some("") => {}
        Some(t) if t.eq_ignore_ascii_case("voicemail") => voicemail = true,
        Some(t) => numbers.push(t.to_string()),
    }
    for child in node.children().filter(Node::is_element) {
        match child.tag_name().name() {
            "Number" => {
                let n = text(child);
                if n.is_empty() {
                    return Err("<Dial>: an empty <Number>".into());
                }
                numbers.push(n);
            }
            "Voicemail" => voicemail = true,
            other => return Err(format!("<Dial>: <{other}> is not Number or Voicemail")),
        }
    }
    if voicemail && numbers.is_empty() {
        return Ok(Action::Voicemail);
    }
    if voicemail {
        return Err("<Dial>: numbers and <Voicemail/> at once".into());
    }
    if numbers.is_empty() {
        return Err("<Dial>: nothing to dial".into());
    }
    if numbers.len() > MAX_DIAL_NUMBERS {
        return Err(format!(
            "<Dial>: {} numbers, at most {MAX_DIAL_NUMBERS}",
            numbers.len()
        ));
    }
    Ok(Action::Dial {
        numbers,
        caller_id,
        anonymous,
    })
}

/// The `<Url>` of a `<Play>`.
fn play_url(node: Node) -> Result<String, String> {
    let url = node
        .children()
        .filter(Node::is_element)
        .find(|c| c.tag_name().name() == "Url")
        .map(text)
        .unwrap_or_default();
    if url.is_empty() {
        return Err("<Play> without a <Url>".into());
    }
    Ok(url)
}

fn gather(node: Node) -> Result<Action, String> {
    let max_digits = match node.attribute("maxDigits").map(str::trim) {
        None | Some("") => None,
        Some(v) => match v.parse::<u32>() {
            Ok(n) if (1..=100).contains(&n) => Some(n),
            _ => {
                return Err(format!(
                    "<Gather maxDigits={v:?}>: not a number from 1 to 100"
                ))
            }
        },
    };
    let timeout_ms = match node.attribute("timeout").map(str::trim) {
        None | Some("") => DEFAULT_GATHER_TIMEOUT_MS,
        Some(v) => match v.parse::<u64>() {
            Ok(n) if n <= MAX_GATHER_TIMEOUT_MS => n,
            _ => {
                return Err(format!(
                    "<Gather timeout={v:?}>: not milliseconds from 0 to {MAX_GATHER_TIMEOUT_MS}"
                ))
            }
        },
    };
    let mut play = None;
    for child in node.children().filter(Node::is_element) {
        match child.tag_name().name() {
            "Play" => play = Some(play_url(child)?),
            other => return Err(format!("<Gather>: <{other}> cannot be nested (Play can)")),
        }
    }
    Ok(Action::Gather {
        on_data: url_attr(node, "onData"),
        max_digits,
        timeout_ms,
        play,
    })
}

fn play_verb(url: &str) -> Play {
    Play {
        url: OneOrMany(vec![url.to_string()]),
        repeat: Loop::Times(1),
        early_media: false,
        timeout_secs: None,
        seek_offset: None,
        action_hook: None,
    }
}

/// The verbs the runtime runs for these instructions. `<Voicemail/>` can only be the first
/// answer to newCall (the engine sends the ringing call there): later it is skipped.
pub fn to_verbs(actions: &[Action]) -> Script {
    actions.iter().map(verb).collect()
}

fn verb(action: &Action) -> Result<Verb, VerbError> {
    Ok(match action {
        Action::Dial {
            numbers,
            caller_id,
            anonymous,
        } => Verb::Dial(Box::new(Dial {
            target: numbers
                .iter()
                .map(|n| DialTarget::Phone { number: n.clone() })
                .collect(),
            action_hook: None,
            caller_id: if *anonymous {
                Some("anonymous".into())
            } else {
                caller_id.clone()
            },
            timeout: Some(DIAL_TIMEOUT_SECS),
            time_limit: None,
            // As on sipgate: a caller not answered yet rings until a number answers.
            answer_on_bridge: Some(true),
            headers: None,
            dtmf_capture: None,
            dtmf_hook: None,
            confirm_hook: None,
            listen: None,
            transcribe: None,
            record: None,
        })),
        Action::Voicemail => {
            return Err(VerbError::Invalid {
                verb: "Dial".into(),
                reason: "<Voicemail/> only as the first instruction of a newCall answer".into(),
            })
        }
        Action::Play { url } => Verb::Play(play_verb(url)),
        Action::Gather {
            on_data,
            max_digits,
            timeout_ms,
            play,
        } => {
            let secs = *timeout_ms as f64 / 1000.0;
            Verb::Gather(Box::new(Gather {
                action_hook: on_data.as_ref().map(|u| HookSpec {
                    url: u.clone(),
                    method: Some(Method::Post),
                    basic_auth: None,
                }),
                input: None,
                finish_on_key: None,
                num_digits: None,
                min_digits: None,
                max_digits: *max_digits,
                inter_digit_timeout: Some(secs),
                timeout: Some(secs),
                dtmf_bargein: Some(true),
                say: None,
                play: play.as_deref().map(play_verb),
                fall_through_on_timeout: false,
            }))
        }
        Action::Reject { busy } => Verb::Decline(Decline {
            status: if *busy { 486 } else { 603 },
            reason: Some(if *busy { "Busy Here" } else { "Decline" }.into()),
            headers: SipHeaders::default(),
        }),
        Action::Hangup => Verb::Hangup(Hangup {
            headers: SipHeaders::default(),
        }),
    })
}

/// The form of a runtime request in the sipgate language: the digits a `<Gather>` collected,
/// as sipgate posts them to `onData` (`event=dtmf&dtmf=123&callId=...&origCallId=...`; no
/// digits: `dtmf` is empty). The call id is the engine's (`trace_id` of the call fields),
/// the one every push event carries.
pub fn form(payload: &Map<String, Value>) -> Vec<(String, String)> {
    let get = |k: &str| {
        payload
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let call_id = get("trace_id");
    vec![
        ("event".into(), "dtmf".into()),
        ("dtmf".into(), get("digits")),
        ("callId".into(), call_id.clone()),
        ("origCallId".into(), call_id),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The XML the sipgateio SDK's webhook server writes (js2xml, compact, 4 spaces).
    #[test]
    fn sdk_answers_read() {
        let xml = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<Response onAnswer=\"http://127.0.0.1:9/\" onHangup=\"http://127.0.0.1:9/\">\n    <Dial callerId=\"+4930123456\" anonymous=\"false\">\n        <Number>202</Number>\n        <Number>203</Number>\n    </Dial>\n</Response>";
        let p = parse(xml).unwrap();
        assert_eq!(p.on_answer.as_deref(), Some("http://127.0.0.1:9/"));
        assert_eq!(p.on_hangup.as_deref(), Some("http://127.0.0.1:9/"));
        assert_eq!(
            p.plan(),
            Plan::Dial {
                numbers: vec!["202".into(), "203".into()],
                caller_id: Some("+4930123456".into()),
                anonymous: false
            }
        );
        let xml = "<Response><Dial><Voicemail/></Dial></Response>";
        assert_eq!(parse(xml).unwrap().plan(), Plan::Voicemail);
        let xml = "<Response><Dial target=\"voicemail\"/></Response>";
        assert_eq!(parse(xml).unwrap().plan(), Plan::Voicemail);
        let xml = "<Response>\n    <Gather maxDigits=\"3\" timeout=\"4000\" onData=\"http://127.0.0.1:9/d\">\n        <Play>\n            <Url>http://127.0.0.1:9/a.wav</Url>\n        </Play>\n    </Gather>\n</Response>";
        let p = parse(xml).unwrap();
        assert_eq!(p.on_data(), Some("http://127.0.0.1:9/d"));
        let Plan::Run(script) = p.plan() else {
            panic!("a Gather runs on the runtime");
        };
        let Some(Ok(Verb::Gather(g))) = script.front() else {
            panic!("{script:?}");
        };
        assert_eq!(g.max_digits, Some(3));
        assert_eq!(g.timeout, Some(4.0));
        assert!(!g.fall_through_on_timeout);
        assert_eq!(
            g.play.as_ref().map(|p| p.url.0.clone()),
            Some(vec!["http://127.0.0.1:9/a.wav".to_string()])
        );
        assert_eq!(
            g.action_hook.as_ref().map(|h| h.url.as_str()),
            Some("http://127.0.0.1:9/d")
        );
    }

    #[test]
    fn reject_hangup_and_play() {
        let run = |xml: &str| match parse(xml).unwrap().plan() {
            Plan::Run(s) => s.into_iter().collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        match &run("<Response><Reject reason=\"busy\"/></Response>")[..] {
            [Ok(Verb::Decline(d))] => assert_eq!(d.status, 486),
            other => panic!("{other:?}"),
        }
        match &run("<Response><Reject/></Response>")[..] {
            [Ok(Verb::Decline(d))] => assert_eq!(d.status, 603),
            other => panic!("{other:?}"),
        }
        match &run("<Response><Play><Url>http://h/x.wav</Url></Play><Hangup/></Response>")[..] {
            [Ok(Verb::Play(p)), Ok(Verb::Hangup(_))] => {
                assert_eq!(p.url.0, vec!["http://h/x.wav".to_string()])
            }
            other => panic!("{other:?}"),
        }
        // Voicemail after something else cannot run there: reported, not run.
        match &run(
            "<Response><Play><Url>http://h/x.wav</Url></Play><Dial><Voicemail/></Dial></Response>",
        )[..]
        {
            [Ok(Verb::Play(_)), Err(VerbError::Invalid { .. })] => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_answers() {
        assert!(matches!(parse("garbage <"), Err(PushXmlError::Xml(_))));
        assert!(matches!(
            parse("<Html/>"),
            Err(PushXmlError::NotResponse(n)) if n == "Html"
        ));
        assert_eq!(parse("").unwrap().plan(), Plan::Ring);
        assert_eq!(parse("<Response/>").unwrap().plan(), Plan::Ring);
        // Unknown or unusable elements are skipped and listed; the rest counts.
        let p = parse("<Response><Say>hi</Say><Dial><Number> </Number></Dial><Reject reason=\"x\"/></Response>").unwrap();
        assert_eq!(p.plan(), Plan::Ring);
        assert_eq!(p.ignored.len(), 3, "{:?}", p.ignored);
        let p = parse(
            "<Response onAnswer=\"javascript:x\"><Gather maxDigits=\"0\"/><Hangup/></Response>",
        )
        .unwrap();
        assert_eq!(p.on_answer, None);
        assert_eq!(p.actions, vec![Action::Hangup]);
        let many = (0..11)
            .map(|i| format!("<Number>2{i:02}</Number>"))
            .collect::<String>();
        let p = parse(&format!("<Response><Dial>{many}</Dial></Response>")).unwrap();
        assert_eq!(p.plan(), Plan::Ring);
        assert!(parse("<!DOCTYPE x [<!ENTITY a \"b\">]><Response/>").is_err());
    }

    #[test]
    fn gather_digits_form() {
        let mut payload = Map::new();
        payload.insert("trace_id".into(), Value::from("c1"));
        payload.insert("call_sid".into(), Value::from("leg"));
        payload.insert("digits".into(), Value::from("123"));
        assert_eq!(
            serde_urlencoded::to_string(form(&payload)).unwrap(),
            "event=dtmf&dtmf=123&callId=c1&origCallId=c1"
        );
        payload.remove("digits");
        assert_eq!(form(&payload)[1], ("dtmf".to_string(), String::new()));
    }
}
