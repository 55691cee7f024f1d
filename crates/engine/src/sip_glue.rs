//! String-level helpers between SIP messages (`hookflash_sip::msg`) and the engine, kept sans-IO and tested.

use hookflash_sip::msg::{HasHeaders, Header, Request};

/// All values of a header by name (case-insensitive), including comma-joined repeats kept as
/// separate entries the way they arrived.
pub fn header_values<'a>(req: &'a Request, name: &str) -> Vec<String> {
    req.headers()
        .iter()
        .filter(|h: &&'a Header| h.name().eq_ignore_ascii_case(name))
        .map(|h| h.value().trim().to_string())
        .collect()
}

pub fn header_value(req: &Request, name: &str) -> Option<String> {
    header_values(req, name).into_iter().next()
}

/// The URI inside a From/To/Contact value: between `<>` or up to the first `;`.
pub fn addr_spec(value: &str) -> &str {
    let value = value.trim();
    if let Some(open) = value.find('<') {
        if let Some(close) = value[open..].find('>') {
            return &value[open + 1..open + close];
        }
    }
    value.split(';').next().unwrap_or(value).trim()
}

/// The display name of a From/To value, unquoted.
pub fn display_name(value: &str) -> Option<String> {
    let value = value.trim();
    let open = value.find('<')?;
    let name = value[..open].trim().trim_matches('"').trim();
    (!name.is_empty()).then(|| name.to_string())
}

pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addr_spec_and_display_name() {
        assert_eq!(addr_spec("\"Alice\" <sip:101@h>;tag=1"), "sip:101@h");
        assert_eq!(addr_spec("sip:101@h;tag=1"), "sip:101@h");
        assert_eq!(
            display_name("\"Alice A\" <sip:101@h>;tag=1").as_deref(),
            Some("Alice A")
        );
        assert_eq!(display_name("<sip:101@h>"), None);
    }
}
