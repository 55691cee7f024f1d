//! What the runtime is given to run a call: the application's hooks, the account's webhook
//! secret and the jambonz call fields that every hook request carries.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::control::CallRef;
use crate::delivery::Method;

/// One web callback of an application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    /// Absolute http(s) URL.
    pub url: String,
    pub method: Method,
    /// HTTP basic auth (user, password).
    pub basic_auth: Option<(String, String)>,
}

impl Hook {
    /// A POST hook without auth.
    pub fn post(url: &str) -> Self {
        Hook {
            url: url.to_string(),
            method: Method::Post,
            basic_auth: None,
        }
    }
}

/// The hooks of an application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppHooks {
    /// Fetched when the application starts; relative verb hooks resolve against its URL.
    pub call_hook: Hook,
    /// Receives the call's status changes (once each, in order).
    pub call_status_hook: Option<Hook>,
    /// Tried when the call_hook fails (unreachable, error status, invalid answer).
    pub fallback: Option<Hook>,
}

/// `direction` of the jambonz call fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    #[default]
    Inbound,
    Outbound,
}

/// jambonz `call_status`, in the order a call goes through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CallStatus {
    Queued,
    #[default]
    Trying,
    Ringing,
    EarlyMedia,
    InProgress,
    Completed,
    Failed,
    Busy,
    NoAnswer,
}

impl CallStatus {
    /// The wire word.
    pub fn as_str(self) -> &'static str {
        match self {
            CallStatus::Queued => "queued",
            CallStatus::Trying => "trying",
            CallStatus::Ringing => "ringing",
            CallStatus::EarlyMedia => "early-media",
            CallStatus::InProgress => "in-progress",
            CallStatus::Completed => "completed",
            CallStatus::Failed => "failed",
            CallStatus::Busy => "busy",
            CallStatus::NoAnswer => "no-answer",
        }
    }

    /// Whether the call is over in this status.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            CallStatus::Completed | CallStatus::Failed | CallStatus::Busy | CallStatus::NoAnswer
        )
    }

    /// Position in a call's life; a status is reported only after lower ones.
    pub(crate) fn rank(self) -> u8 {
        match self {
            CallStatus::Queued => 0,
            CallStatus::Trying => 1,
            CallStatus::Ringing => 2,
            CallStatus::EarlyMedia => 3,
            CallStatus::InProgress => 4,
            CallStatus::Completed
            | CallStatus::Failed
            | CallStatus::Busy
            | CallStatus::NoAnswer => 5,
        }
    }
}

/// The SIP request of an inbound call, as jambonz sends it in `sip` on the first request.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct SipInfo {
    /// Header names in lower case; repeated headers joined with ", ".
    pub headers: Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

/// The jambonz call fields sent (snake_case, as jambonz does) on every hook request.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct CallFields {
    pub call_sid: String,
    pub direction: Direction,
    pub from: String,
    pub to: String,
    /// SIP Call-ID of the leg.
    pub call_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sbc_callid: Option<String>,
    pub sip_status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sip_reason: Option<String>,
    pub call_status: CallStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caller_id: Option<String>,
    pub account_sid: String,
    pub application_sid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_call_sid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub originating_sip_ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub originating_sip_trunk_name: Option<String>,
    /// Seconds from answer to end; set on the final status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<u64>,
    /// The call's tag (REST `tag`, `tag` verb).
    #[serde(rename = "customerData", skip_serializing_if = "Option::is_none")]
    pub customer_data: Option<Map<String, Value>>,
    /// The INVITE of an inbound call; sent on the first (POST) request only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sip: Option<SipInfo>,
}

impl CallFields {
    /// The fields as a JSON object.
    pub fn to_json(&self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m,
            // A struct of strings and numbers always serialises to an object.
            _ => Map::new(),
        }
    }
}

/// The language an application's hooks speak: what its requests carry (jambonz: signed JSON
/// with the jambonz call fields; RCML: form fields `CallSid`, `AccountSid`, ...) and how its
/// answers read (a JSON array of verbs; an RCML `<Response>` document). Both compile to the
/// same verbs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Language {
    #[default]
    Jambonz,
    Rcml(crate::rcml::RcmlOptions),
    /// sipgate push XML (`crate::sipgate_xml`): a `<Gather>`'s digits go to its `onData` as
    /// sipgate posts them, and the answer is a push `<Response>`.
    Sipgate,
}

impl Language {
    pub fn is_rcml(&self) -> bool {
        matches!(self, Language::Rcml(_))
    }
}

/// Everything needed to run an application on a leg.
#[derive(Debug, Clone)]
pub struct Launch {
    pub call: CallRef,
    pub hooks: AppHooks,
    /// The account's webhook secret (`Jambonz-Signature`); empty: requests go unsigned.
    pub webhook_secret: String,
    /// The call fields as they are now. `call_status: in-progress` means the leg is answered
    /// already (an outbound call from the REST API runs its application on answer).
    pub fields: CallFields,
    pub language: Language,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_serialise_as_jambonz_names() {
        let mut f = CallFields {
            call_sid: "cs".into(),
            from: "+1".into(),
            to: "+2".into(),
            call_id: "abc@h".into(),
            sip_status: 100,
            sip_reason: Some("Trying".into()),
            account_sid: "acc".into(),
            application_sid: "app".into(),
            ..CallFields::default()
        };
        let mut tag = Map::new();
        tag.insert("k".into(), Value::from(1));
        f.customer_data = Some(tag);
        let mut sip = SipInfo::default();
        sip.headers.insert("x-a".into(), Value::from("b"));
        f.sip = Some(sip);
        let v = serde_json::to_value(&f).unwrap();
        assert_eq!(v["direction"], "inbound");
        assert_eq!(v["call_status"], "trying");
        assert_eq!(v["sip_status"], 100);
        assert_eq!(v["customerData"]["k"], 1);
        assert_eq!(v["sip"]["headers"]["x-a"], "b");
        assert!(v.get("parent_call_sid").is_none());
        assert!(v.get("duration").is_none());
        assert_eq!(
            serde_json::to_value(CallStatus::EarlyMedia).unwrap(),
            "early-media"
        );
        assert_eq!(CallStatus::NoAnswer.as_str(), "no-answer");
    }
}
