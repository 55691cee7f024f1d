//! Registrar decisions (RFC 3261 §10.3), sans-IO.
//!
//! The shell parses the REGISTER into a [`RegisterRequest`], asks [`decide`] what to do, applies
//! the result to the store and answers. Contact parsing lives here too because it is the only
//! header the registrar needs beyond what rsipstack types for us.

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactEntry {
    /// The URI between the angle brackets (or the bare URI).
    pub uri: String,
    /// The `expires` parameter, when present and numeric.
    pub expires: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContactList {
    /// `Contact: *` (remove every binding; only valid with Expires: 0).
    Star,
    Entries(Vec<ContactEntry>),
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ContactError {
    #[error("unterminated `<` in Contact")]
    Unterminated,
    #[error("empty Contact URI")]
    Empty,
    #[error("Contact URI is not a sip/sips URI: {0}")]
    NotSip(String),
}

/// Parses the values of all Contact headers of a message.
pub fn parse_contacts<'a>(
    values: impl IntoIterator<Item = &'a str>,
) -> Result<ContactList, ContactError> {
    let mut entries = Vec::new();
    for value in values {
        for part in split_outside_brackets(value) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            if part == "*" {
                return Ok(ContactList::Star);
            }
            entries.push(parse_one(part)?);
        }
    }
    Ok(ContactList::Entries(entries))
}

fn split_outside_brackets(value: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut quoted, mut start) = (0i32, false, 0usize);
    for (i, c) in value.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '<' if !quoted => depth += 1,
            '>' if !quoted => depth -= 1,
            ',' if !quoted && depth == 0 => {
                parts.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&value[start..]);
    parts
}

fn parse_one(part: &str) -> Result<ContactEntry, ContactError> {
    let (uri, params) = match part.find('<') {
        Some(open) => {
            let close = part[open..].find('>').ok_or(ContactError::Unterminated)? + open;
            (part[open + 1..close].trim(), &part[close + 1..])
        }
        None => match part.find(';') {
            Some(semi) => (part[..semi].trim(), &part[semi..]),
            None => (part.trim(), ""),
        },
    };
    if uri.is_empty() {
        return Err(ContactError::Empty);
    }
    let lower = uri.to_ascii_lowercase();
    if !(lower.starts_with("sip:") || lower.starts_with("sips:")) {
        return Err(ContactError::NotSip(uri.to_string()));
    }
    let expires = params
        .split(';')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("expires"))
        .and_then(|(_, v)| v.trim().trim_matches('"').parse::<u32>().ok());
    Ok(ContactEntry {
        uri: uri.to_string(),
        expires,
    })
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub min_expires: u32,
    pub max_expires: u32,
    pub default_expires: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No Contact: answer 200 with the current bindings.
    Query,
    /// `Contact: *` with Expires: 0.
    RemoveAll,
    /// Bindings to add/refresh (uri, granted expiry secs) and to remove.
    Update {
        upsert: Vec<(String, u32)>,
        remove: Vec<String>,
    },
    /// 423 Interval Too Brief with this Min-Expires.
    TooBrief(u32),
    /// 400 with a reason phrase.
    Bad(&'static str),
}

pub fn decide(contacts: &ContactList, expires_header: Option<u32>, limits: Limits) -> Decision {
    match contacts {
        ContactList::Star => {
            if expires_header == Some(0) {
                Decision::RemoveAll
            } else {
                Decision::Bad("Contact * requires Expires: 0")
            }
        }
        ContactList::Entries(entries) if entries.is_empty() => Decision::Query,
        ContactList::Entries(entries) => {
            let mut upsert = Vec::new();
            let mut remove = Vec::new();
            for e in entries {
                let requested = e
                    .expires
                    .or(expires_header)
                    .unwrap_or(limits.default_expires);
                if requested == 0 {
                    remove.push(e.uri.clone());
                } else if requested < limits.min_expires {
                    return Decision::TooBrief(limits.min_expires);
                } else {
                    upsert.push((e.uri.clone(), requested.min(limits.max_expires)));
                }
            }
            Decision::Update { upsert, remove }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        min_expires: 60,
        max_expires: 3600,
        default_expires: 1800,
    };

    #[test]
    fn parses_multiple_contacts_with_params_and_display_names() {
        let list = parse_contacts([
            r#""Alice, A" <sip:101@127.0.0.1:5070;transport=udp>;expires=300;+sip.instance="<urn:x>""#,
            "sip:101@10.0.0.1:5071, <sips:101@h>;q=0.5",
        ])
        .unwrap();
        let ContactList::Entries(e) = list else {
            panic!("expected entries")
        };
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].uri, "sip:101@127.0.0.1:5070;transport=udp");
        assert_eq!(e[0].expires, Some(300));
        assert_eq!(e[1].uri, "sip:101@10.0.0.1:5071");
        assert_eq!(e[1].expires, None);
        assert_eq!(e[2].uri, "sips:101@h");
    }

    #[test]
    fn star_and_errors() {
        assert_eq!(parse_contacts(["*"]).unwrap(), ContactList::Star);
        assert_eq!(
            parse_contacts(["<sip:a@b"]),
            Err(ContactError::Unterminated)
        );
        assert!(matches!(
            parse_contacts(["<http://x>"]),
            Err(ContactError::NotSip(_))
        ));
        assert_eq!(parse_contacts(["<>"]), Err(ContactError::Empty));
    }

    #[test]
    fn decisions_follow_rfc3261_10_3() {
        let one = |exp: Option<u32>| {
            ContactList::Entries(vec![ContactEntry {
                uri: "sip:a@b".into(),
                expires: exp,
            }])
        };
        assert_eq!(
            decide(&ContactList::Entries(vec![]), None, LIMITS),
            Decision::Query
        );
        assert_eq!(
            decide(&ContactList::Star, Some(0), LIMITS),
            Decision::RemoveAll
        );
        assert!(matches!(
            decide(&ContactList::Star, Some(10), LIMITS),
            Decision::Bad(_)
        ));
        assert_eq!(decide(&one(Some(10)), None, LIMITS), Decision::TooBrief(60));
        assert_eq!(
            decide(&one(None), Some(7200), LIMITS),
            Decision::Update {
                upsert: vec![("sip:a@b".into(), 3600)],
                remove: vec![]
            }
        );
        assert_eq!(
            decide(&one(None), None, LIMITS),
            Decision::Update {
                upsert: vec![("sip:a@b".into(), 1800)],
                remove: vec![]
            }
        );
        // The contact's own expires wins over the header, and 0 removes.
        assert_eq!(
            decide(&one(Some(0)), Some(3600), LIMITS),
            Decision::Update {
                upsert: vec![],
                remove: vec!["sip:a@b".into()]
            }
        );
    }
}
