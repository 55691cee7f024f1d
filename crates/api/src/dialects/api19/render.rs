//! The RestComm call resource and list page, as JSON (`.json` paths) or XML.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value};

/// What a path asks for: `.json` → JSON, anything else → XML (RestComm's rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Xml,
}

impl Format {
    /// `.json` at the end of the path or of one of its segments (the SDK's legacy
    /// `Calls.json/{CallSid}`).
    pub fn of_path(path: &str) -> Self {
        if path.split('/').any(|seg| seg.ends_with(".json")) {
            Format::Json
        } else {
            Format::Xml
        }
    }
}

pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SubresourceUris {
    pub notifications: String,
    pub recordings: String,
}

/// RestComm's call resource (JSON names; XML uses the same fields in CamelCase).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CallResource {
    pub sid: String,
    pub date_created: String,
    pub date_updated: String,
    pub parent_call_sid: Option<String>,
    pub account_sid: String,
    pub to: String,
    pub from: String,
    pub phone_number_sid: Option<String>,
    pub status: &'static str,
    pub start_time: Option<String>,
    pub end_time: Option<String>,
    pub duration: Option<i64>,
    pub price: String,
    pub price_unit: String,
    pub direction: &'static str,
    pub answered_by: Option<String>,
    pub api_version: &'static str,
    pub forwarded_from: Option<String>,
    pub caller_name: Option<String>,
    pub muted: bool,
    pub uri: String,
    pub subresource_uris: SubresourceUris,
}

/// snake_case → CamelCase (`date_created` → `DateCreated`).
fn camel(name: &str) -> String {
    name.split('_')
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

/// The call's fields in the order RestComm writes them (serde_json's map is sorted).
const CALL_FIELDS: &[&str] = &[
    "sid",
    "date_created",
    "date_updated",
    "parent_call_sid",
    "account_sid",
    "to",
    "from",
    "phone_number_sid",
    "status",
    "start_time",
    "end_time",
    "duration",
    "price",
    "price_unit",
    "direction",
    "answered_by",
    "api_version",
    "forwarded_from",
    "caller_name",
    "muted",
    "uri",
    "subresource_uris",
];

fn xml_fields(m: &Map<String, Value>, order: &[&str], out: &mut String) {
    let ordered = order.iter().filter_map(|k| m.get_key_value(*k));
    let rest = m.iter().filter(|(k, _)| !order.contains(&k.as_str()));
    for (k, v) in ordered.chain(rest) {
        let tag = camel(k);
        match v {
            Value::Null => out.push_str(&format!("<{tag}/>")),
            Value::Object(inner) => {
                out.push_str(&format!("<{tag}>"));
                xml_fields(inner, &[], out);
                out.push_str(&format!("</{tag}>"));
            }
            Value::String(s) => out.push_str(&format!("<{tag}>{}</{tag}>", xml_escape(s))),
            other => out.push_str(&format!("<{tag}>{other}</{tag}>")),
        }
    }
}

fn object<T: Serialize>(t: &T) -> Map<String, Value> {
    match serde_json::to_value(t) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

/// `<Call>...</Call>`
fn call_xml(c: &CallResource) -> String {
    let mut out = String::from("<Call>");
    xml_fields(&object(c), CALL_FIELDS, &mut out);
    out.push_str("</Call>");
    out
}

fn xml_response(body: String) -> Response {
    (
        [(header::CONTENT_TYPE, "application/xml")],
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{body}"),
    )
        .into_response()
}

/// One call: JSON, or XML wrapped in `root` (`RestcommResponse`; `CallResponse` where the
/// seed shows it, after a modification).
pub fn call(format: Format, root: &str, c: &CallResource) -> Response {
    match format {
        Format::Json => axum::Json(c).into_response(),
        Format::Xml => xml_response(format!("<{root}>{}</{root}>", call_xml(c))),
    }
}

/// A page of calls with RestComm's paging fields.
#[derive(Debug, Clone, Serialize)]
pub struct Page {
    pub page: usize,
    pub num_pages: usize,
    pub page_size: usize,
    pub total: usize,
    pub start: usize,
    pub end: usize,
    pub uri: String,
    pub first_page_uri: String,
    pub previous_page_uri: Option<String>,
    pub next_page_uri: Option<String>,
    pub last_page_uri: String,
    pub calls: Vec<CallResource>,
}

pub fn page(format: Format, p: &Page) -> Response {
    match format {
        Format::Json => axum::Json(p).into_response(),
        Format::Xml => {
            let mut attrs = object(p);
            attrs.remove("calls");
            let attrs: String = attrs
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::String(s) => xml_escape(s),
                        Value::Null => String::new(),
                        other => other.to_string(),
                    };
                    format!(" {}=\"{v}\"", k.replace('_', ""))
                })
                .collect();
            let calls: String = p.calls.iter().map(call_xml).collect();
            xml_response(format!(
                "<RestcommResponse><Calls{attrs}>{calls}</Calls></RestcommResponse>"
            ))
        }
    }
}

/// One resource: JSON, or XML `<RestcommResponse><{tag}>...</{tag}></RestcommResponse>`.
pub fn one<T: Serialize>(format: Format, tag: &str, r: &T) -> Response {
    match format {
        Format::Json => axum::Json(r).into_response(),
        Format::Xml => {
            let mut out = format!("<RestcommResponse><{tag}>");
            xml_fields(&object(r), &[], &mut out);
            out.push_str(&format!("</{tag}></RestcommResponse>"));
            xml_response(out)
        }
    }
}

/// A list page (`page` serialises with its items under `list_tag` in snake case): JSON, or
/// XML `<RestcommResponse><{list_tag} page=...><{item_tag}>...</{item_tag}>...`.
pub fn resource<P: Serialize, T: Serialize>(
    format: Format,
    list_tag: &str,
    item_tag: &str,
    page: &P,
    items: &[T],
) -> Response {
    match format {
        Format::Json => axum::Json(page).into_response(),
        Format::Xml => {
            let attrs: String = object(page)
                .iter()
                .filter(|(_, v)| !v.is_array())
                .map(|(k, v)| {
                    let v = match v {
                        Value::String(s) => xml_escape(s),
                        Value::Null => String::new(),
                        other => other.to_string(),
                    };
                    format!(" {}=\"{v}\"", k.replace('_', ""))
                })
                .collect();
            let mut body = String::new();
            for item in items {
                body.push_str(&format!("<{item_tag}>"));
                xml_fields(&object(item), &[], &mut body);
                body.push_str(&format!("</{item_tag}>"));
            }
            xml_response(format!(
                "<RestcommResponse><{list_tag}{attrs}>{body}</{list_tag}></RestcommResponse>"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_names() {
        assert_eq!(
            Format::of_path("/call/2012-04-24/Accounts/AC1/Calls.json"),
            Format::Json
        );
        assert_eq!(
            Format::of_path("/call/2012-04-24/Accounts/AC1/Calls/CA1.json"),
            Format::Json
        );
        assert_eq!(
            Format::of_path("/call/2012-04-24/Accounts/AC1/Calls.json/CA1"),
            Format::Json
        );
        assert_eq!(
            Format::of_path("/call/2012-04-24/Accounts/AC1/Calls/CA1"),
            Format::Xml
        );
        assert_eq!(camel("date_created"), "DateCreated");
        assert_eq!(camel("subresource_uris"), "SubresourceUris");
        assert_eq!(xml_escape("a<b&\"c\""), "a&lt;b&amp;&quot;c&quot;");
    }
}
