//! The form fields of RCML requests, mapped from the call fields and verb results the runtime
//! keeps under their jambonz names (one mapping, so the verbs stay the same for both
//! languages).

use serde_json::{Map, Value};

use super::{sids, API_VERSION};

/// RestComm's word for a jambonz `call_status`.
fn call_status<'a>(jambonz: &'a str, direction: &str) -> &'a str {
    match jambonz {
        "queued" => "queued",
        // A created call on its way out.
        "trying" if direction == "outbound" => "queued",
        // An inbound call's first request, while it is not answered.
        "trying" | "ringing" | "early-media" => "ringing",
        "in-progress" => "in-progress",
        "completed" => "completed",
        "failed" => "failed",
        "busy" => "busy",
        "no-answer" => "no-answer",
        other => other,
    }
}

fn direction(jambonz: &str) -> &str {
    match jambonz {
        "outbound" => "outbound-api",
        _ => "inbound",
    }
}

fn plain(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

/// The RCML fields for a request whose jambonz payload (call fields plus a verb's results)
/// is `payload`. Fields RCML has no name for are left out.
pub fn form(payload: &Map<String, Value>) -> Vec<(String, String)> {
    let get = |k: &str| payload.get(k).and_then(plain);
    let mut out: Vec<(String, String)> = Vec::new();
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            out.push((k.to_string(), v));
        }
    };
    put("CallSid", get("call_sid").map(|s| sids::call_sid(&s)));
    put(
        "AccountSid",
        get("account_sid").map(|s| sids::account_sid(&s)),
    );
    put("From", get("from"));
    put("To", get("to"));
    let dir = get("direction").unwrap_or_default();
    put(
        "CallStatus",
        get("call_status").map(|s| call_status(&s, &dir).to_string()),
    );
    put("ApiVersion", Some(API_VERSION.to_string()));
    put(
        "Direction",
        get("direction").map(|d| direction(&d).to_string()),
    );
    put("CallerName", get("caller_id"));
    put("Digits", get("digits"));
    let dialled = payload.contains_key("dial_call_status");
    put("DialCallStatus", get("dial_call_status"));
    put(
        "DialCallSid",
        get("dial_call_sid").map(|s| sids::call_sid(&s)),
    );
    if dialled {
        put("DialCallDuration", get("duration"));
    } else {
        put("CallDuration", get("duration"));
    }
    put("Timestamp", get("timestamp"));
    put("CallbackSource", get("callback_source"));
    put("SequenceNumber", get("sequence_number"));
    put("RecordingUrl", get("recording_url"));
    put("RecordingDuration", get("recording_duration"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn m(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn call_fields_become_rcml_names() {
        let f = form(&m(json!({
            "call_sid": "0190f3a2-7b1c-7d4e-9f00-0123456789ab", "account_sid": "acc",
            "from": "+16175551212", "to": "201", "call_status": "trying",
            "direction": "inbound", "caller_id": "Alice", "sip_status": 100,
            "digits": "42", "reason": "dtmfDetected", "customerData": {"a": 1}
        })));
        let names: Vec<&str> = f.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "CallSid",
                "AccountSid",
                "From",
                "To",
                "CallStatus",
                "ApiVersion",
                "Direction",
                "CallerName",
                "Digits"
            ]
        );
        let get = |k: &str| f.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("CallSid"), Some("CA0190f3a27b1c7d4e9f000123456789ab"));
        assert_eq!(get("AccountSid"), Some("ACacc"));
        assert_eq!(get("CallStatus"), Some("ringing"));
        assert_eq!(get("ApiVersion"), Some("2012-04-24"));
        assert_eq!(get("Direction"), Some("inbound"));

        let d = form(&m(
            json!({"direction": "outbound", "call_status": "in-progress",
            "dial_call_status": "busy", "dial_call_sid": "x", "duration": 0}),
        ));
        let get = |k: &str| d.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("Direction"), Some("outbound-api"));
        assert_eq!(get("DialCallStatus"), Some("busy"));
        assert_eq!(get("DialCallSid"), Some("CAx"));
        assert_eq!(get("DialCallDuration"), Some("0"));
        assert_eq!(get("CallDuration"), None);
        let s = form(&m(json!({"call_status": "completed", "duration": 7})));
        assert!(s.contains(&("CallDuration".into(), "7".into())));
    }
}
