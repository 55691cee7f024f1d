//! Checks on a parsed request that the SIP stack accepts but RFC 3261 says to refuse. They run on
//! every transport (the UDP datagram guard in the sip crate only sees UDP).

use hookflash_sip::msg::{Method, Request, Scheme, StatusCode, Version};

use crate::sip_glue::header_values;

/// `Some((status, reason))` when the request must be refused before anything else.
pub fn check_request(req: &Request) -> Option<(StatusCode, &'static str)> {
    if req.version != Version::V2 {
        return Some((StatusCode::VersionNotSupported, "SIP Version Not Supported"));
    }
    let uri = req.uri.to_string().to_ascii_lowercase();
    let scheme_ok = matches!(
        req.uri.scheme,
        Some(Scheme::Sip) | Some(Scheme::Sips) | None
    ) && (uri.starts_with("sip:") || uri.starts_with("sips:"))
        || uri.starts_with("tel:");
    if !scheme_ok && req.method != Method::Ack {
        return Some((StatusCode::UnsupportedUriScheme, "Unsupported URI Scheme"));
    }
    let cseq = header_values(req, "CSeq");
    let cseq_method_ok = cseq.first().is_some_and(|v| {
        let mut parts = v.split_whitespace();
        let number_ok = parts.next().is_some_and(|n| n.parse::<u32>().is_ok());
        number_ok
            && parts
                .next()
                .is_some_and(|m| m.eq_ignore_ascii_case(&req.method.to_string()))
    });
    if !cseq_method_ok {
        return Some((StatusCode::BadRequest, "Bad CSeq"));
    }
    for name in ["From", "To", "Via", "Contact"] {
        if header_values(req, name)
            .iter()
            .any(|v| has_empty_parameter(v))
        {
            return Some((StatusCode::BadRequest, "Empty Header Parameter"));
        }
    }
    None
}

/// True when a header value has an empty parameter or list element (`;;`, `;,`, a trailing
/// `;`), outside quoted strings and angle brackets — RFC 4475 §3.1.2.1.
pub fn has_empty_parameter(value: &str) -> bool {
    let mut quoted = false;
    let mut escaped = false;
    let mut depth = 0i32;
    let mut last_sep: Option<char> = None;
    for c in value.chars() {
        if quoted {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => quoted = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                quoted = true;
                last_sep = None;
            }
            '<' => depth += 1,
            '>' => depth -= 1,
            ';' | ',' if depth == 0 => {
                if last_sep == Some(';') {
                    return true;
                }
                last_sep = Some(c);
            }
            c if c.is_whitespace() => {}
            _ => last_sep = None,
        }
    }
    last_sep == Some(';')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_parameters_are_found_outside_quotes_and_brackets() {
        assert!(has_empty_parameter("sip:caller@example.net;;tag=1"));
        assert!(has_empty_parameter("SIP/2.0/UDP 192.0.2.15;;,;,,"));
        assert!(has_empty_parameter("\"Joe\" <sip:joe@example.org>;;;;"));
        assert!(has_empty_parameter("<sip:a@b>;tag=1;"));
        assert!(!has_empty_parameter("<sip:a@b;lr;;x>;tag=1"));
        assert!(!has_empty_parameter("\"a;;b\" <sip:a@b>;tag=1"));
        assert!(!has_empty_parameter(
            "SIP/2.0/UDP h;branch=z9hG4bK1, SIP/2.0/UDP g;branch=z9hG4bK2"
        ));
        assert!(!has_empty_parameter("<sip:a@b>, <sip:c@d>;expires=3"));
    }

    fn request(text: &str) -> Request {
        Request::try_from(text).expect("test request parses")
    }

    const GOOD: &str = "OPTIONS sip:u@h SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:u@h>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";

    #[test]
    fn good_request_passes_and_bad_ones_get_their_status() {
        assert_eq!(check_request(&request(GOOD)), None);
        let mismatch = GOOD.replace("CSeq: 1 OPTIONS", "CSeq: 1 INVITE");
        assert_eq!(
            check_request(&request(&mismatch)).map(|r| r.0),
            Some(StatusCode::BadRequest)
        );
        let seps = GOOD.replace("From: <sip:a@h>;tag=1", "From: <sip:a@h>;;tag=1");
        assert_eq!(
            check_request(&request(&seps)).map(|r| r.0),
            Some(StatusCode::BadRequest)
        );
    }

    #[test]
    fn version_and_scheme() {
        if let Ok(r) = Request::try_from(GOOD.replace("SIP/2.0\r\nVia", "SIP/7.0\r\nVia").as_str())
        {
            assert_eq!(
                check_request(&r).map(|r| r.0),
                Some(StatusCode::VersionNotSupported)
            );
        }
        if let Ok(r) = Request::try_from(
            GOOD.replace("sip:u@h SIP", "nobodyKnowsThisScheme:opaque SIP")
                .as_str(),
        ) {
            assert_eq!(
                check_request(&r).map(|r| r.0),
                Some(StatusCode::UnsupportedUriScheme)
            );
        }
    }
}
