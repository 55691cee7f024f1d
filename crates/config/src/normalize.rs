//! Normalisation and validation of identifiers shared by the config and the store.

/// Checks an extension (the SIP user part and digest username of a user): 1 to 64 characters
/// from `[A-Za-z0-9._+-]`, so it can be put into a SIP URI without escaping.
pub fn check_extension(ext: &str) -> Result<(), String> {
    if ext.is_empty() || ext.len() > 64 {
        return Err(format!(
            "extension must be 1 to 64 characters, got {} characters",
            ext.len()
        ));
    }
    if let Some(c) = ext
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-')))
    {
        return Err(format!(
            "extension {ext:?} contains {c:?}; allowed are letters, digits, '.', '_', '+', '-'"
        ));
    }
    Ok(())
}

/// Checks a name (account, trunk, API key): non-empty, at most 128 characters, no control
/// characters.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err(format!("{what} must not be empty"));
    }
    if name.len() > 128 {
        return Err(format!("{what} must be at most 128 characters"));
    }
    if name.chars().any(char::is_control) {
        return Err(format!("{what} must not contain control characters"));
    }
    Ok(())
}

/// Checks a webhook URL: `http://` or `https://` followed by a host, at most 2048 characters,
/// no whitespace or control characters.
pub fn check_webhook_url(url: &str) -> Result<(), String> {
    if url.len() > 2048 {
        return Err("webhook URL must be at most 2048 characters".into());
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("webhook URL must not contain whitespace".into());
    }
    let lower = url.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("http://")
        .or_else(|| lower.strip_prefix("https://"));
    match rest {
        Some(r) if !r.is_empty() && !r.starts_with('/') => Ok(()),
        _ => Err(format!(
            "webhook URL {url:?} must start with http:// or https:// and name a host"
        )),
    }
}

/// Checks a country calling code as stored in a dial policy: 1 to 3 ASCII digits without
/// `+`, not starting with `0` (`"49"`, `"1"`, `"353"`; not `"+49"` or `"049"`).
pub fn check_country_code(cc: &str) -> Result<(), String> {
    let ok = (1..=3).contains(&cc.len())
        && cc.bytes().all(|b| b.is_ascii_digit())
        && !cc.starts_with('0');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "country code {cc:?} must be 1 to 3 digits without '+' and not starting with 0, e.g. \"49\""
        ))
    }
}

/// Normalises a phone number to the digits without `+`, the lookup key of a DID.
///
/// Accepts an optional leading `+` and the visual separators space, `-`, `.`, `(`, `)`; the
/// remaining characters must be 1 to 20 digits. `"+49 30 123456"`, `"4930123456"` and
/// `"+4930123456"` all give `"4930123456"`. Returns `None` for anything else (e.g. `sip:` URIs
/// or letters).
pub fn number_digits(number: &str) -> Option<String> {
    let s = number.trim();
    let s = s.strip_prefix('+').unwrap_or(s);
    let mut digits = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '-' | '.' | '(' | ')' => {}
            _ => return None,
        }
    }
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    Some(digits)
}

/// The stored (display) form of a number: E.164 with a leading `+`.
pub fn number_e164(number: &str) -> Option<String> {
    number_digits(number).map(|d| format!("+{d}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_urls_need_a_scheme_and_host() {
        assert!(check_webhook_url("http://127.0.0.1:9000/hook").is_ok());
        assert!(check_webhook_url("HTTPS://example.com").is_ok());
        assert!(check_webhook_url("ftp://example.com").is_err());
        assert!(check_webhook_url("http://").is_err());
        assert!(check_webhook_url("http:///x").is_err());
        assert!(check_webhook_url("http://a b").is_err());
        assert!(check_webhook_url("example.com").is_err());
    }

    #[test]
    fn numbers_match_with_and_without_plus() {
        assert_eq!(number_digits("+4930123456").as_deref(), Some("4930123456"));
        assert_eq!(number_digits("4930123456").as_deref(), Some("4930123456"));
        assert_eq!(
            number_digits(" +49 (30) 123-456 ").as_deref(),
            Some("4930123456")
        );
        assert_eq!(number_e164("4930123456").as_deref(), Some("+4930123456"));
    }

    #[test]
    fn malformed_numbers_are_rejected() {
        for bad in [
            "",
            "+",
            "abc",
            "sip:123@x",
            "++49",
            "1".repeat(21).as_str(),
            "49*30",
        ] {
            assert_eq!(number_digits(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn extensions_are_uri_safe() {
        assert!(check_extension("101").is_ok());
        assert!(check_extension("alice.smith-2").is_ok());
        assert!(check_extension("").is_err());
        assert!(check_extension("10 1").is_err());
        assert!(check_extension("a@b").is_err());
        assert!(check_extension(&"1".repeat(65)).is_err());
    }

    #[test]
    fn country_codes_are_one_to_three_digits() {
        for ok in ["1", "49", "353"] {
            assert!(check_country_code(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "",
            "+49",
            "049",
            "0",
            "4930",
            "4a",
            " 49",
            "\u{0664}\u{0669}",
        ] {
            assert!(check_country_code(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_must_be_printable_and_non_empty() {
        assert!(check_name("account name", "acme").is_ok());
        assert!(check_name("account name", "  ").is_err());
        assert!(check_name("account name", "a\nb").is_err());
    }
}
