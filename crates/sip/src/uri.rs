//! Small, forgiving helpers over SIP URI strings (the engine's routing works on strings so
//! that it stays testable without the stack's types).

/// The user part of a `sip:`/`sips:`/`tel:` URI, without parameters; `None` if there is none.
pub fn user_part(uri: &str) -> Option<&str> {
    let uri = uri.trim().trim_start_matches('<');
    let rest = uri
        .strip_prefix("sip:")
        .or_else(|| uri.strip_prefix("sips:"))
        .or_else(|| uri.strip_prefix("SIP:"))
        .or_else(|| uri.strip_prefix("tel:"));
    let rest = rest?;
    if uri.starts_with("tel:") {
        let end = rest.find([';', '>']).unwrap_or(rest.len());
        return Some(&rest[..end]).filter(|u| !u.is_empty());
    }
    let at = rest.find('@')?;
    let user = &rest[..at];
    // user may carry ;params (user=phone) or :password
    let end = user.find([';', ':']).unwrap_or(user.len());
    Some(&user[..end]).filter(|u| !u.is_empty())
}

/// The host part (no port, no params) of a `sip:` URI.
pub fn host_part(uri: &str) -> Option<&str> {
    let uri = uri.trim().trim_start_matches('<');
    let rest = uri
        .strip_prefix("sip:")
        .or_else(|| uri.strip_prefix("sips:"))?;
    let rest = match rest.find('@') {
        Some(at) => &rest[at + 1..],
        None => rest,
    };
    if let Some(v6) = rest.strip_prefix('[') {
        return v6.find(']').map(|e| &v6[..e]);
    }
    let end = rest.find([':', ';', '>', '?']).unwrap_or(rest.len());
    Some(&rest[..end]).filter(|h| !h.is_empty())
}

/// True when the dialled string looks like a phone number rather than an extension name:
/// an optional '+' and digits (visual separators removed by [`normalize_number`]).
pub fn is_phone_number(user: &str) -> bool {
    let n = normalize_number(user);
    let digits = n.trim_start_matches('+');
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Removes visual separators allowed in tel URIs (RFC 3966): `-`, `.`, `(`, `)`, spaces.
pub fn normalize_number(user: &str) -> String {
    user.chars()
        .filter(|c| !matches!(c, '-' | '.' | '(' | ')' | ' '))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_and_host_parts() {
        assert_eq!(
            user_part("sip:101@127.0.0.1:5060;transport=udp"),
            Some("101")
        );
        assert_eq!(user_part("<sip:+4930123;user=phone@h>"), Some("+4930123"));
        assert_eq!(user_part("sips:alice:pw@h"), Some("alice"));
        assert_eq!(
            user_part("tel:+1-555-123;phone-context=x"),
            Some("+1-555-123")
        );
        assert_eq!(user_part("sip:127.0.0.1"), None);
        assert_eq!(user_part("http://x@y"), None);
        assert_eq!(
            host_part("sip:101@127.0.0.1:5060;transport=udp"),
            Some("127.0.0.1")
        );
        assert_eq!(host_part("sip:acme.local"), Some("acme.local"));
        assert_eq!(host_part("sip:a@[::1]:5060"), Some("::1"));
    }

    #[test]
    fn phone_numbers_versus_extensions() {
        assert!(is_phone_number("+1 (555) 123-4567"));
        assert!(is_phone_number("101"));
        assert!(!is_phone_number("alice"));
        assert!(!is_phone_number("+"));
        assert_eq!(normalize_number("+1 (555) 123-4567"), "+15551234567");
    }
}
