//! Hook requests of the runtime: where a verb's hook points (relative URLs resolve against
//! the application's call_hook), the request in the application's language (jambonz: signed
//! JSON; RCML: form fields), and what an answer means.

use serde::de::{self, Deserializer};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::app::{Hook, Language};
use crate::delivery::{Body, Method, Reply, Request, Signature};
use crate::error::{kind_of, AppError};
use crate::rcml;
use crate::verbs::{parse_script, Script};

/// A hook as a verb gives it: `"actionHook": "/digits"` or
/// `{"url": "...", "method": "GET", "username": "...", "password": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookSpec {
    pub url: String,
    pub method: Option<Method>,
    pub basic_auth: Option<(String, String)>,
}

impl<'de> Deserialize<'de> for HookSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Url(String),
            Obj {
                url: String,
                #[serde(default)]
                method: Option<String>,
                #[serde(default)]
                username: Option<String>,
                #[serde(default)]
                password: Option<String>,
            },
        }
        let raw = Raw::deserialize(d).map_err(|_| {
            de::Error::custom("a hook must be a URL string or an object with a \"url\"")
        })?;
        let spec = match raw {
            Raw::Url(url) => HookSpec {
                url,
                method: None,
                basic_auth: None,
            },
            Raw::Obj {
                url,
                method,
                username,
                password,
            } => {
                let method = match method.as_deref().map(str::to_ascii_uppercase).as_deref() {
                    None => None,
                    Some("POST") => Some(Method::Post),
                    Some("GET") => Some(Method::Get),
                    Some(other) => {
                        return Err(de::Error::custom(format!(
                            "hook method {other:?} is not supported (GET or POST)"
                        )))
                    }
                };
                let basic_auth = match (username, password) {
                    (Some(u), Some(p)) if !u.is_empty() => Some((u, p)),
                    _ => None,
                };
                HookSpec {
                    url,
                    method,
                    basic_auth,
                }
            }
        };
        if spec.url.trim().is_empty() {
            return Err(de::Error::custom("a hook URL must not be empty"));
        }
        Ok(spec)
    }
}

impl From<&Hook> for HookSpec {
    fn from(h: &Hook) -> Self {
        HookSpec {
            url: h.url.clone(),
            method: Some(h.method),
            basic_auth: h.basic_auth.clone(),
        }
    }
}

/// `spec` made absolute against `base` (the application's hook): relative URLs join the
/// base URL; the base's basic auth goes along to the base's own origin only.
pub(crate) fn resolve(base: &Hook, spec: &HookSpec) -> Result<Hook, AppError> {
    let bad = |reason: String| AppError::BadHookUrl {
        url: spec.url.clone(),
        reason,
    };
    let base_url = reqwest::Url::parse(&base.url).map_err(|e| bad(format!("base: {e}")))?;
    let url = base_url
        .join(spec.url.trim())
        .map_err(|e| bad(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad(format!("scheme {:?} is not http(s)", url.scheme())));
    }
    let basic_auth = match &spec.basic_auth {
        Some(a) => Some(a.clone()),
        None if url.origin() == base_url.origin() => base.basic_auth.clone(),
        None => None,
    };
    Ok(Hook {
        url: url.to_string(),
        method: spec.method.unwrap_or(Method::Post),
        basic_auth,
    })
}

/// The request for `payload` to `hook` in `language`.
pub(crate) fn request(
    hook: &Hook,
    payload: Map<String, Value>,
    secret: &str,
    language: &Language,
    label: &'static str,
) -> Request {
    match language {
        Language::Jambonz => jambonz_request(hook, payload, secret, label),
        Language::Rcml(_) => rcml_request(hook, &payload, label),
        Language::Sipgate => to_hook(
            hook,
            Body::Form(crate::sipgate_xml::form(&payload)),
            Vec::new(),
            Signature::None,
            label,
        ),
    }
}

/// RCML: the fields form-encoded in a POST body, or in the query of a GET.
fn rcml_request(hook: &Hook, payload: &Map<String, Value>, label: &'static str) -> Request {
    let fields = rcml::form(payload);
    let (body, query) = match hook.method {
        Method::Post => (Body::Form(fields), Vec::new()),
        Method::Get => (Body::Empty, fields),
    };
    to_hook(hook, body, query, Signature::None, label)
}

fn to_hook(
    hook: &Hook,
    body: Body,
    query: Vec<(String, String)>,
    signature: Signature,
    label: &'static str,
) -> Request {
    Request {
        method: hook.method,
        url: hook.url.clone(),
        body,
        query,
        basic_auth: hook.basic_auth.clone(),
        signature,
        label,
    }
}

/// The signed request for `payload` to `hook`: POST carries it as compact JSON, GET in the
/// query (nested objects in bracket form, `customerData[k]=v`, as `qs` writes them).
fn jambonz_request(
    hook: &Hook,
    payload: Map<String, Value>,
    secret: &str,
    label: &'static str,
) -> Request {
    let signature = if secret.is_empty() {
        Signature::None
    } else {
        Signature::Jambonz {
            secret: secret.to_string(),
        }
    };
    let (body, query) = match hook.method {
        Method::Post => (Body::Json(Value::Object(payload)), Vec::new()),
        Method::Get => {
            // jambonz sends the INVITE (`sip`) only in POST bodies.
            let mut payload = payload;
            payload.remove("sip");
            let mut q = Vec::new();
            for (k, v) in &payload {
                flatten(k, v, &mut q);
            }
            (Body::Empty, q)
        }
    };
    to_hook(hook, body, query, signature, label)
}

fn flatten(key: &str, v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Null => {}
        Value::Bool(b) => out.push((key.to_string(), b.to_string())),
        Value::Number(n) => out.push((key.to_string(), n.to_string())),
        Value::String(s) => out.push((key.to_string(), s.clone())),
        Value::Array(a) => {
            for (i, item) in a.iter().enumerate() {
                flatten(&format!("{key}[{i}]"), item, out);
            }
        }
        Value::Object(m) => {
            for (k, item) in m {
                flatten(&format!("{key}[{k}]"), item, out);
            }
        }
    }
}

/// What a hook answered.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Answer {
    /// A list of verbs: a JSON array, or an RCML document (possibly empty).
    Verbs(Script),
    /// No verbs: an empty body, a non-JSON content type (`res.sendStatus(200)`), or JSON
    /// that is not an array. The string says which, for messages.
    Nothing(String),
}

/// Reads a hook's answer in `language`.
pub(crate) fn parse_answer(
    reply: &Reply,
    language: &Language,
    label: &'static str,
    url: &str,
) -> Result<Answer, AppError> {
    match language {
        Language::Jambonz => parse_jambonz(reply, label, url),
        Language::Rcml(_) => parse_rcml(reply, label, url),
        Language::Sipgate => parse_sipgate(reply, label, url),
    }
}

/// sipgate push XML: a `<Response>` (or an empty body: nothing to do); elements that cannot
/// run are skipped with a log line.
fn parse_sipgate(reply: &Reply, label: &'static str, url: &str) -> Result<Answer, AppError> {
    let xml = crate::sipgate_xml::parse(&reply.body).map_err(|e| AppError::InvalidPushXml {
        label,
        url: url.to_string(),
        reason: e.to_string(),
    })?;
    for why in &xml.ignored {
        tracing::warn!(label, url, "sipgate push answer: skipped {why}");
    }
    Ok(Answer::Verbs(crate::sipgate_xml::to_verbs(&xml.actions)))
}

/// RCML: the answer must be a `<Response>` document.
fn parse_rcml(reply: &Reply, label: &'static str, url: &str) -> Result<Answer, AppError> {
    rcml::parse(&reply.body)
        .map(Answer::Verbs)
        .map_err(|e| AppError::InvalidRcml {
            label,
            url: url.to_string(),
            reason: e.to_string(),
        })
}

/// jambonz: a body that claims or looks like JSON must parse.
fn parse_jambonz(reply: &Reply, label: &'static str, url: &str) -> Result<Answer, AppError> {
    let body = reply.body.trim();
    if body.is_empty() {
        return Ok(Answer::Nothing("an empty body".into()));
    }
    let says_json = reply
        .content_type
        .as_deref()
        .is_some_and(|c| c.to_ascii_lowercase().contains("json"));
    let looks_json = body.starts_with('[') || body.starts_with('{');
    if !says_json && !looks_json {
        return Ok(Answer::Nothing(format!(
            "a {} body",
            reply.content_type.as_deref().unwrap_or("non-JSON")
        )));
    }
    match serde_json::from_str::<Value>(body) {
        Ok(Value::Array(a)) => Ok(Answer::Verbs(parse_script(a))),
        Ok(other) => Ok(Answer::Nothing(kind_of(&other).to_string())),
        Err(e) => Err(AppError::InvalidJson {
            label,
            url: url.to_string(),
            reason: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Hook {
        Hook {
            url: "http://app.example:8080/jambonz/call?x=1".into(),
            method: Method::Post,
            basic_auth: Some(("u".into(), "p".into())),
        }
    }

    fn spec(v: Value) -> HookSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn relative_urls_join_the_call_hook_and_keep_its_auth_on_its_origin() {
        let h = resolve(&base(), &spec(json!("/digits"))).unwrap();
        assert_eq!(h.url, "http://app.example:8080/digits");
        assert_eq!(h.method, Method::Post);
        assert_eq!(h.basic_auth, Some(("u".into(), "p".into())));

        let h = resolve(&base(), &spec(json!("next"))).unwrap();
        assert_eq!(h.url, "http://app.example:8080/jambonz/next");

        let h = resolve(&base(), &spec(json!("https://other.example/x"))).unwrap();
        assert_eq!(h.url, "https://other.example/x");
        assert_eq!(h.basic_auth, None, "credentials stay with their origin");

        let h = resolve(
            &base(),
            &spec(json!({"url": "https://other.example/y", "method": "get",
                "username": "a", "password": "b"})),
        )
        .unwrap();
        assert_eq!(h.method, Method::Get);
        assert_eq!(h.basic_auth, Some(("a".into(), "b".into())));

        assert!(matches!(
            resolve(&base(), &spec(json!("ftp://x/y"))),
            Err(AppError::BadHookUrl { .. })
        ));
    }

    #[test]
    fn hook_specs_reject_wrong_shapes() {
        for bad in [
            json!(5),
            json!({"method": "POST"}),
            json!(""),
            json!({"url": "/x", "method": "WS"}),
        ] {
            assert!(
                serde_json::from_value::<HookSpec>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn get_requests_carry_the_fields_in_the_query() {
        let mut hook = base();
        hook.method = Method::Get;
        let payload = json!({"call_sid": "c", "sip_status": 200, "customerData": {"a": "b", "n": [1, 2]}, "x": null});
        let Value::Object(m) = payload else {
            unreachable!()
        };
        let r = request(&hook, m, "s", &Language::Jambonz, "t");
        assert_eq!(r.body, Body::Empty);
        assert_eq!(
            r.query,
            vec![
                ("call_sid".to_string(), "c".to_string()),
                ("customerData[a]".to_string(), "b".to_string()),
                ("customerData[n][0]".to_string(), "1".to_string()),
                ("customerData[n][1]".to_string(), "2".to_string()),
                ("sip_status".to_string(), "200".to_string()),
            ]
        );
        assert_eq!(r.signature, Signature::Jambonz { secret: "s".into() });
        let r = request(&base(), Map::new(), "", &Language::Jambonz, "t");
        assert_eq!(r.signature, Signature::None);
        assert_eq!(r.body, Body::Json(json!({})));
    }

    #[test]
    fn answers() {
        let reply = |ct: Option<&str>, body: &str| Reply {
            status: 200,
            content_type: ct.map(str::to_string),
            body: body.to_string(),
            headers: vec![],
        };
        let p = |r: Reply| parse_answer(&r, &Language::Jambonz, "t", "u");
        assert_eq!(
            p(reply(Some("application/json"), r#"[{"verb":"hangup"}]"#)).unwrap(),
            Answer::Verbs(parse_script(vec![json!({"verb": "hangup"})]))
        );
        assert_eq!(p(reply(None, "[]")).unwrap(), Answer::Verbs(Script::new()));
        assert!(matches!(
            p(reply(Some("text/plain"), "OK")).unwrap(),
            Answer::Nothing(_)
        ));
        assert!(matches!(p(reply(None, "  ")).unwrap(), Answer::Nothing(_)));
        assert!(matches!(
            p(reply(Some("application/json"), "{}")).unwrap(),
            Answer::Nothing(_)
        ));
        assert!(matches!(
            p(reply(Some("application/json"), "not json")),
            Err(AppError::InvalidJson { .. })
        ));
        assert!(matches!(
            p(reply(Some("text/html"), "[oops")),
            Err(AppError::InvalidJson { .. })
        ));
    }
}
