//! Property types that several verbs share.

use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;
use serde_json::Value;

/// `loop`: a count or `"forever"`. 0 counts as 1 (as jambonz does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loop {
    Times(u32),
    Forever,
}

impl Default for Loop {
    fn default() -> Self {
        Loop::Times(1)
    }
}

impl Loop {
    /// Rounds to play; None: until stopped.
    pub fn rounds(self) -> Option<u32> {
        match self {
            Loop::Times(n) => Some(n.max(1)),
            Loop::Forever => None,
        }
    }
}

impl<'de> Deserialize<'de> for Loop {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        let bad = || de::Error::custom("loop must be a non-negative number or \"forever\"");
        match &v {
            Value::Number(n) => n
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(Loop::Times)
                .ok_or_else(bad),
            Value::String(s) if s.eq_ignore_ascii_case("forever") => Ok(Loop::Forever),
            Value::String(s) => s.trim().parse::<u32>().map(Loop::Times).map_err(|_| bad()),
            _ => Err(bad()),
        }
    }
}

/// A string or a list of strings (`text`, `url`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneOrMany(pub Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            Many(Vec<String>),
        }
        match Raw::deserialize(d) {
            Ok(Raw::One(s)) => Ok(OneOrMany(vec![s])),
            Ok(Raw::Many(v)) => Ok(OneOrMany(v)),
            Err(_) => Err(de::Error::custom(
                "expected a string or an array of strings",
            )),
        }
    }
}

impl OneOrMany {
    /// Every item non-blank and at least one.
    pub fn check(&self, what: &str) -> Result<(), String> {
        if self.0.is_empty() {
            return Err(format!("{what} must not be empty"));
        }
        if self.0.iter().any(|s| s.trim().is_empty()) {
            return Err(format!("{what} must not contain empty strings"));
        }
        Ok(())
    }
}

/// `synthesizer` (TTS settings). Vendor and label are accepted and ignored: the server has
/// one TTS engine.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Synthesizer {
    #[serde(default)]
    pub vendor: Option<String>,
    #[serde(default)]
    pub language: Option<String>,
    #[serde(default)]
    pub voice: Option<String>,
}

/// Extra SIP headers (`headers: {"X-Reason": "..."}`): names are SIP tokens, values single
/// lines (no header injection through an application).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SipHeaders(pub Vec<(String, String)>);

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-.!%*_+`'~".contains(c)
}

impl<'de> Deserialize<'de> for SipHeaders {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        let Value::Object(m) = v else {
            return Err(de::Error::custom("headers must be an object"));
        };
        let mut out = Vec::with_capacity(m.len());
        for (name, value) in m {
            if name.is_empty() || !name.chars().all(is_token_char) {
                return Err(de::Error::custom(format!(
                    "header name {name:?} is not a SIP token"
                )));
            }
            let value = match value {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => {
                    return Err(de::Error::custom(format!(
                        "header {name}: value must be a string or a number"
                    )))
                }
            };
            if value.chars().any(|c| c == '\r' || c == '\n' || c == '\0') {
                return Err(de::Error::custom(format!(
                    "header {name}: value has a line break"
                )));
            }
            out.push((name, value));
        }
        Ok(SipHeaders(out))
    }
}

/// A number of seconds (jambonz takes whole and fractional ones) as a duration.
pub fn seconds(what: &str, secs: f64) -> Result<Duration, String> {
    if !secs.is_finite() || !(0.0..=86_400.0).contains(&secs) {
        return Err(format!("{what} must be between 0 and 86400 seconds"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A DTMF key as RFC 4733 carries it.
pub fn is_dtmf_key(c: char) -> bool {
    c.is_ascii_digit() || matches!(c, '*' | '#' | 'A' | 'B' | 'C' | 'D' | 'a' | 'b' | 'c' | 'd')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn loops() {
        let l = |v: Value| serde_json::from_value::<Loop>(v);
        assert_eq!(l(json!(3)).unwrap(), Loop::Times(3));
        assert_eq!(l(json!("forever")).unwrap(), Loop::Forever);
        assert_eq!(l(json!("2")).unwrap(), Loop::Times(2));
        assert_eq!(l(json!(0)).unwrap().rounds(), Some(1));
        assert!(l(json!(-1)).is_err());
        assert!(l(json!(1.5)).is_err());
        assert!(l(json!(true)).is_err());
    }

    #[test]
    fn headers_refuse_injection() {
        let h = |v: Value| serde_json::from_value::<SipHeaders>(v);
        assert_eq!(
            h(json!({"X-Reason": "gone", "X-N": 5})).unwrap().0,
            vec![
                ("X-N".to_string(), "5".to_string()),
                ("X-Reason".to_string(), "gone".to_string())
            ]
        );
        assert!(h(json!({"X-A": "a\r\nVia: evil"})).is_err());
        assert!(h(json!({"X A": "a"})).is_err());
        assert!(h(json!({"X-A": {"b": 1}})).is_err());
        assert!(h(json!(["X-A"])).is_err());
    }

    #[test]
    fn one_or_many() {
        let o = |v: Value| serde_json::from_value::<OneOrMany>(v);
        assert_eq!(o(json!("a")).unwrap().0, vec!["a"]);
        assert_eq!(o(json!(["a", "b"])).unwrap().0, vec!["a", "b"]);
        assert!(o(json!(5)).is_err());
        assert!(o(json!([])).unwrap().check("text").is_err());
        assert!(o(json!(["a", " "])).unwrap().check("text").is_err());
    }
}
