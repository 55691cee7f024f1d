//! First look at every UDP datagram before the SIP stack parses it.
//!
//! rsipstack silently drops anything its parser rejects, including requests we could and should
//! answer: an unknown method deserves 501, a wrong protocol version 505, a request missing its
//! mandatory headers 400. This module makes that decision with a cheap line scan (no full
//! parse, so the common path stays fast) and builds the stateless reply; [`GuardedUdpSocket`]
//! plugs it under rsipstack's UDP transport.

use std::net::SocketAddr;

/// Largest datagram we accept as SIP; larger ones are dropped (and logged).
pub const MAX_SIP_DATAGRAM: usize = 32 * 1024;

/// Upper bound of a [`Verdict::Rewrite`] of an `n`-byte datagram. Canonicalisation joins folded
/// lines and removes whitespace, but may add a space after a header's colon and a CR before
/// each LF: a line of at least 2 bytes (`:` LF) grows by at most 2, so at most twice the input.
/// The body is kept byte for byte.
pub const fn rewrite_bound(n: usize) -> usize {
    2 * n
}

/// How much larger than the request a stateless reply may be (status line, `Allow`, the To tag,
/// `Content-Length`, compact header names written out in full).
pub const REPLY_SLACK: usize = 256;

/// Upper bound of a [`Verdict::Reply`] to an `n`-byte datagram: `n` + [`REPLY_SLACK`].
pub const fn reply_bound(n: usize) -> usize {
    n + REPLY_SLACK
}

const KNOWN_METHODS: &[&str] = &[
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "OPTIONS",
    "REGISTER",
    "PRACK",
    "SUBSCRIBE",
    "NOTIFY",
    "PUBLISH",
    "INFO",
    "REFER",
    "MESSAGE",
    "UPDATE",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Hand to the SIP stack.
    Pass,
    /// Hand these bytes to the SIP stack instead: the same message with its head rewritten to
    /// canonical form (folded lines joined, optional whitespace around `;`, `=`, `/` removed),
    /// which RFC 3261 allows senders to vary but rsipstack's parser does not accept.
    Rewrite(Vec<u8>),
    /// Answer statelessly with this response and do not pass it on.
    Reply {
        status: u16,
        reason: &'static str,
        response: Vec<u8>,
    },
    /// Drop and log why.
    Drop(&'static str),
}

/// Inspects one datagram.
pub fn inspect(packet: &[u8]) -> Verdict {
    if packet.len() > MAX_SIP_DATAGRAM {
        return Verdict::Drop("datagram larger than the SIP size limit");
    }
    let Some((head, body)) = split_head(packet) else {
        return if std::str::from_utf8(packet).is_ok() {
            Verdict::Drop("no end of headers (truncated datagram)")
        } else {
            Verdict::Drop("binary datagram without a SIP head")
        };
    };
    // SIP allows arbitrary bytes in bodies; only the head must be text.
    let Ok(head) = std::str::from_utf8(head) else {
        return Verdict::Drop("non-UTF-8 message head");
    };
    let verdict = match canonical_head(head) {
        None => inspect_head(head, body.len()),
        Some(canonical) => match inspect_head(&canonical, body.len()) {
            Verdict::Pass => {
                let mut out = canonical.into_bytes();
                out.extend_from_slice(b"\r\n\r\n");
                out.extend_from_slice(body);
                Verdict::Rewrite(out)
            }
            other => other,
        },
    };
    match verdict {
        // The source address of a UDP request can be forged: never reflect more than it sent
        // (many short, e.g. compact or tag-less To, headers echoed would amplify it).
        Verdict::Reply { response, .. } if response.len() > reply_bound(packet.len()) => {
            Verdict::Drop("stateless reply would be larger than the request")
        }
        other => other,
    }
}

/// Head (without its last line end) and body of a message, split at the *first* empty line,
/// whatever mix of CRLF and bare LF line ends surrounds it (RFC 3261 §7.5 tolerance). The
/// first one, not the first CRLF CRLF: the SIP stack's parser ends the head there too, so
/// headers after it must not be judged (or canonicalised) as headers.
fn split_head(packet: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut line_start = 0;
    for (i, &b) in packet.iter().enumerate() {
        if b != b'\n' {
            continue;
        }
        if matches!(&packet[line_start..i], b"" | b"\r") {
            let head = &packet[..line_start];
            let head = head.strip_suffix(b"\n").unwrap_or(head);
            let head = head.strip_suffix(b"\r").unwrap_or(head);
            return Some((head, &packet[i + 1..]));
        }
        line_start = i + 1;
    }
    None
}

fn inspect_head(head: &str, body_len: usize) -> Verdict {
    let mut lines = head.split('\n').map(|l| l.trim_end_matches('\r'));
    let Some(start) = lines.next() else {
        return Verdict::Drop("empty datagram");
    };
    if start.starts_with("SIP/") {
        return Verdict::Pass; // responses: nothing to answer, let the stack judge them
    }
    let mut parts = start.split(' ');
    let (Some(method), Some(_uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Verdict::Drop("malformed request line");
    };
    // Collect the headers we need to build a reply, unfolding continuation lines.
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in lines {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = headers.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((canonical(name.trim()), value.trim().to_string()));
        }
    }
    let get = |n: &'static str| {
        headers
            .iter()
            .filter(move |(k, _)| k == n)
            .map(|(_, v)| v.as_str())
    };
    let has_reply_headers = get("Via").next().is_some()
        && get("From").next().is_some()
        && get("To").next().is_some()
        && get("Call-ID").next().is_some()
        && get("CSeq").next().is_some();
    let reply = |status: u16, reason: &'static str| {
        if !has_reply_headers || method == "ACK" {
            return Verdict::Drop(reason);
        }
        Verdict::Reply {
            status,
            reason,
            response: build_reply(&headers, status, reason),
        }
    };
    if !version.eq_ignore_ascii_case("SIP/2.0") {
        return reply(505, "Version Not Supported");
    }
    if !method
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
    {
        return Verdict::Drop("invalid method token");
    }
    if !has_reply_headers {
        return Verdict::Drop("request lacks Via/From/To/Call-ID/CSeq");
    }
    if !KNOWN_METHODS.contains(&method) {
        return reply(501, "Not Implemented");
    }
    // CSeq must carry a number and the request's own method.
    let cseq = get("CSeq").next().unwrap_or_default();
    let mut cseq_parts = cseq.split_whitespace();
    let cseq_ok = matches!(
        (cseq_parts.next().map(|n| n.parse::<u32>()), cseq_parts.next(), cseq_parts.next()),
        (Some(Ok(_)), Some(m), None) if m == method
    );
    if !cseq_ok {
        return reply(400, "Bad CSeq");
    }
    if get("Call-ID").count() > 1 || get("From").count() > 1 || get("To").count() > 1 {
        return reply(400, "Duplicate Header");
    }
    if let Some(cl) = get("Content-Length").next() {
        match cl.parse::<usize>() {
            Ok(n) if n > body_len => return reply(400, "Content-Length Exceeds Body"),
            Ok(_) => {}
            Err(_) => return reply(400, "Bad Content-Length"),
        }
    }
    if let Some(mf) = get("Max-Forwards").next() {
        match mf.parse::<u32>() {
            Ok(0) if method != "OPTIONS" && method != "REGISTER" => {
                return reply(483, "Too Many Hops")
            }
            Ok(_) => {}
            Err(_) => return reply(400, "Bad Max-Forwards"),
        }
    }
    Verdict::Pass
}

/// Headers whose values have parameter syntax we can tighten safely.
fn is_structured(canonical_name: &str) -> bool {
    matches!(
        canonical_name.to_ascii_lowercase().as_str(),
        "via"
            | "from"
            | "to"
            | "contact"
            | "route"
            | "record-route"
            | "cseq"
            | "call-id"
            | "content-length"
            | "max-forwards"
            | "content-type"
            | "expires"
    )
}

/// The head in canonical form, or `None` when it already is. Only requests are rewritten.
pub fn canonical_head(head: &str) -> Option<String> {
    let mut lines = head.split('\n').map(|l| l.trim_end_matches('\r'));
    let start = lines.next()?;
    if start.starts_with("SIP/") {
        return None;
    }
    let mut logical: Vec<String> = Vec::new();
    for line in lines {
        if line.is_empty() {
            // A line of CRs only (the head ends at the first truly empty line): it carries no
            // header, and written as an empty line it would end the head early.
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(last) = logical.last_mut() {
                last.push(' ');
                last.push_str(line.trim());
                continue;
            }
        }
        logical.push(line.to_string());
    }
    let mut out = String::with_capacity(head.len());
    out.push_str(start);
    for line in &logical {
        out.push_str("\r\n");
        match line.split_once(':') {
            Some((name, value)) => {
                let name = name.trim();
                let value = value.trim();
                out.push_str(name);
                out.push_str(": ");
                let canon = canonical(name);
                if is_structured(&canon) {
                    out.push_str(&tighten(value, canon == "Via"));
                } else {
                    out.push_str(value);
                }
            }
            None => out.push_str(line),
        }
    }
    let unchanged = out
        .split("\r\n")
        .eq(head.split('\n').map(|l| l.trim_end_matches('\r')));
    (!unchanged).then_some(out)
}

/// Collapses whitespace runs to one space and removes it around `;`, `=`, `,` (and `/` in
/// Via), outside quoted strings.
fn tighten(value: &str, via: bool) -> String {
    let tight = |c: char| matches!(c, ';' | '=' | ',') || (via && c == '/');
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars().peekable();
    let (mut quoted, mut escaped) = (false, false);
    while let Some(c) = chars.next() {
        if quoted {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => quoted = false,
                _ => {}
            }
            continue;
        }
        if c.is_whitespace() {
            while matches!(chars.peek(), Some(n) if n.is_whitespace()) {
                chars.next();
            }
            let prev_tight = out.chars().last().is_some_and(tight);
            let next_tight = chars.peek().is_some_and(|n| tight(*n));
            if !prev_tight && !next_tight && !out.is_empty() {
                out.push(' ');
            }
            continue;
        }
        if c == '"' {
            quoted = true;
        }
        out.push(c);
    }
    out
}

/// Maps compact forms (RFC 3261 §7.3.3) and case variants onto the canonical names we use.
fn canonical(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    match lower.as_str() {
        "v" | "via" => "Via",
        "f" | "from" => "From",
        "t" | "to" => "To",
        "i" | "call-id" => "Call-ID",
        "cseq" => "CSeq",
        "l" | "content-length" => "Content-Length",
        "max-forwards" => "Max-Forwards",
        "m" | "contact" => "Contact",
        "c" | "content-type" => "Content-Type",
        _ => return name.to_string(),
    }
    .to_string()
}

fn build_reply(headers: &[(String, String)], status: u16, reason: &str) -> Vec<u8> {
    let mut out = format!("SIP/2.0 {status} {reason}\r\n");
    for (name, value) in headers {
        if matches!(name.as_str(), "Via" | "From" | "Call-ID" | "CSeq") {
            out.push_str(&format!("{name}: {value}\r\n"));
        } else if name == "To" {
            if value.contains(";tag=") {
                out.push_str(&format!("To: {value}\r\n"));
            } else {
                out.push_str(&format!("To: {value};tag=hf{}\r\n", rand::random::<u32>()));
            }
        }
    }
    if status == 501 {
        out.push_str(
            "Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, REGISTER, INFO, UPDATE, REFER, NOTIFY\r\n",
        );
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out.into_bytes()
}

/// The responder needs the source for Via `received`/`rport`; RFC 3261 §18.2.2 says answer to
/// the source address for unreliable transports when rport is present, which on loopback and
/// for our stateless replies is always the source.
pub fn reply_destination(source: SocketAddr) -> SocketAddr {
    source
}

/// A UDP socket for rsipstack that answers or drops what [`inspect`] rejects.
pub struct GuardedUdpSocket {
    inner: tokio::net::UdpSocket,
}

impl GuardedUdpSocket {
    pub fn new(inner: tokio::net::UdpSocket) -> Self {
        GuardedUdpSocket { inner }
    }
}

#[async_trait::async_trait]
impl rsipstack::platform::net::UdpSocket for GuardedUdpSocket {
    async fn recv_from(&self, buf: &mut [u8]) -> rsipstack::Result<(usize, SocketAddr)> {
        loop {
            let (len, src) = self.inner.recv_from(buf).await?;
            let packet = &buf[..len];
            if len <= 4 && packet.iter().all(|b| b.is_ascii_whitespace()) {
                return Ok((len, src)); // keep-alive: the stack answers it
            }
            if len == buf.len() {
                tracing::info!(%src, len, "dropped SIP datagram: filled the receive buffer (truncated)");
                continue;
            }
            match inspect(packet) {
                Verdict::Pass => return Ok((len, src)),
                Verdict::Rewrite(bytes) if bytes.len() <= buf.len() => {
                    tracing::debug!(%src, "rewrote a SIP head to canonical form");
                    buf[..bytes.len()].copy_from_slice(&bytes);
                    return Ok((bytes.len(), src));
                }
                Verdict::Rewrite(_) => {
                    tracing::info!(%src, len, "dropped SIP datagram: canonical form too large");
                }
                Verdict::Drop(why) => {
                    tracing::info!(%src, len, reason = why, "dropped SIP datagram");
                }
                Verdict::Reply {
                    status,
                    reason,
                    response,
                } => {
                    tracing::info!(%src, status, reason, "answered malformed SIP request statelessly");
                    if let Err(e) = self.inner.send_to(&response, reply_destination(src)).await {
                        tracing::warn!(%src, error = %e, "could not send stateless SIP reply");
                    }
                }
            }
        }
    }

    async fn send_to(&self, buf: &[u8], addr: SocketAddr) -> rsipstack::Result<usize> {
        Ok(self.inner.send_to(buf, addr).await?)
    }

    fn local_addr(&self) -> rsipstack::Result<SocketAddr> {
        Ok(self.inner.local_addr()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(start: &str, headers: &[&str], body: &str) -> Vec<u8> {
        let mut s = format!("{start}\r\n");
        for h in headers {
            s.push_str(h);
            s.push_str("\r\n");
        }
        s.push_str("\r\n");
        s.push_str(body);
        s.into_bytes()
    }

    const BASE: &[&str] = &[
        "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1",
        "From: <sip:a@h>;tag=1",
        "To: <sip:b@h>",
        "Call-ID: c1",
        "Max-Forwards: 70",
    ];

    fn with(extra: &[&str]) -> Vec<&'static str> {
        let mut v: Vec<&str> = BASE.to_vec();
        v.extend(
            extra
                .iter()
                .map(|s| -> &'static str { Box::leak(s.to_string().into_boxed_str()) }),
        );
        v
    }

    #[test]
    fn valid_request_passes() {
        let m = req(
            "OPTIONS sip:h SIP/2.0",
            &with(&["CSeq: 1 OPTIONS", "Content-Length: 0"]),
            "",
        );
        assert_eq!(inspect(&m), Verdict::Pass);
        assert_eq!(inspect(b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n"), Verdict::Pass);
    }

    #[test]
    fn unknown_method_gets_501_with_headers_echoed() {
        let m = req("NEWMETHOD sip:h SIP/2.0", &with(&["CSeq: 8 NEWMETHOD"]), "");
        let Verdict::Reply {
            status, response, ..
        } = inspect(&m)
        else {
            panic!("expected reply")
        };
        assert_eq!(status, 501);
        let text = String::from_utf8(response).unwrap();
        assert!(text.starts_with("SIP/2.0 501 Not Implemented\r\n"));
        assert!(text.contains("Call-ID: c1\r\n"));
        assert!(text.contains("CSeq: 8 NEWMETHOD\r\n"));
        assert!(text.contains("To: <sip:b@h>;tag=hf"));
        assert!(text.contains("Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n"));
    }

    #[test]
    fn bad_version_cseq_length_and_hops() {
        let status = |m: Vec<u8>| match inspect(&m) {
            Verdict::Reply { status, .. } => status,
            other => panic!("expected a reply, got {other:?}"),
        };
        assert_eq!(
            status(req(
                "OPTIONS sip:h SIP/7.0",
                &with(&["CSeq: 1 OPTIONS"]),
                ""
            )),
            505
        );
        assert_eq!(
            status(req("INVITE sip:h SIP/2.0", &with(&["CSeq: 1 OPTIONS"]), "")),
            400
        );
        assert_eq!(
            status(req("INVITE sip:h SIP/2.0", &with(&["CSeq: x INVITE"]), "")),
            400
        );
        assert_eq!(
            status(req(
                "INVITE sip:h SIP/2.0",
                &with(&["CSeq: 1 INVITE", "Content-Length: 500"]),
                "v=0"
            )),
            400
        );
        let m = req(
            "INVITE sip:h SIP/2.0",
            &[
                "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1",
                "From: <sip:a@h>;tag=1",
                "To: <sip:b@h>",
                "Call-ID: c1",
                "CSeq: 1 INVITE",
                "Max-Forwards: 0",
            ],
            "",
        );
        assert_eq!(status(m), 483);
    }

    #[test]
    fn unanswerable_garbage_is_dropped() {
        assert!(matches!(inspect(b"\x00\x01\x02garbage"), Verdict::Drop(_)));
        assert!(matches!(
            inspect(b"INVITE sip:h SIP/2.0\r\nVia: x\r\n"),
            Verdict::Drop(_)
        ));
        assert!(matches!(
            inspect(&vec![b'a'; MAX_SIP_DATAGRAM + 1]),
            Verdict::Drop(_)
        ));
        // Missing Call-ID: nothing to build a reply from.
        let m = req(
            "OPTIONS sip:h SIP/2.0",
            &[
                "Via: SIP/2.0/UDP h;branch=z9hG4bK1",
                "From: <sip:a@h>;tag=1",
                "To: <sip:b@h>",
                "CSeq: 1 OPTIONS",
            ],
            "",
        );
        assert!(matches!(inspect(&m), Verdict::Drop(_)));
        // ACK is never answered.
        let m = req("ACK sip:h SIP/7.0", &with(&["CSeq: 1 ACK"]), "");
        assert!(matches!(inspect(&m), Verdict::Drop(_)));
    }

    #[test]
    fn tortuous_whitespace_is_canonicalised_for_the_parser() {
        // RFC 4475 §3.1.1.1 (wsinv), with our Via on top and no body.
        let wsinv = concat!(
            "INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0\r\n",
            "TO :\r\n sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n\r\n",
            "from   : \"J Rosenberg \\\\\\\"\"       <sip:jdrosen@example.com>\r\n  ;\r\n  tag = 98asjd8\r\n",
            "MaX-fOrWaRdS: 0068\r\n",
            "Call-ID: wsinv.ndaksdj@192.0.2.1\r\n",
            "Content-Length   : 0\r\n",
            "cseq: 0009\r\n  INVITE\r\n",
            "Via  : SIP  /   2.0\r\n /UDP\r\n    127.0.0.1:5070;rport;branch=390skdjuw\r\n",
            "s :\r\n",
            "NewFangledHeader:   newfangled value\r\n continued newfangled value\r\n",
            "v:  SIP  / 2.0  / TCP     spindle.example.com   ;\r\n  branch  =   z9hG4bK9ikj8  ,\r\n",
            " SIP  /    2.0   / UDP  192.168.255.111   ; branch=\r\n z9hG4bK30239\r\n",
            "m:\"Quoted string \\\"\\\"\" <sip:jdrosen@example.com> ; newparam =\r\n",
            "      newvalue ;\r\n  secondparam ; q = 0.33\r\n\r\n",
        );
        let Verdict::Rewrite(bytes) = inspect(wsinv.as_bytes()) else {
            panic!("expected a rewrite");
        };
        let text = String::from_utf8(bytes).unwrap();
        for expected in [
            "\r\nTO: sip:vivekg@chair-dnrc.example.com;tag=1918181833n\r\n",
            "\r\nfrom: \"J Rosenberg \\\\\\\"\" <sip:jdrosen@example.com>;tag=98asjd8\r\n",
            "\r\ncseq: 0009 INVITE\r\n",
            "\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;rport;branch=390skdjuw\r\n",
            "\r\nv: SIP/2.0/TCP spindle.example.com;branch=z9hG4bK9ikj8,SIP/2.0/UDP 192.168.255.111;branch=z9hG4bK30239\r\n",
            "\r\nNewFangledHeader: newfangled value continued newfangled value\r\n",
            "\r\nm: \"Quoted string \\\"\\\"\" <sip:jdrosen@example.com>;newparam=newvalue;secondparam;q=0.33\r\n",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in {text}");
        }
        assert!(
            rsipstack::sip::SipMessage::try_from(text.as_str()).is_ok(),
            "the stack must parse the canonical form: {text}"
        );
        // Already-canonical messages are passed through untouched.
        let plain = req("OPTIONS sip:h SIP/2.0", &with(&["CSeq: 1 OPTIONS"]), "");
        assert_eq!(inspect(&plain), Verdict::Pass);
    }

    #[test]
    fn compact_headers_and_folding_are_understood() {
        let m = req(
            "OPTIONS sip:h SIP/2.0",
            &[
                "v: SIP/2.0/UDP h;branch=z9hG4bK1",
                "f: <sip:a@h>;tag=1",
                "t: <sip:b@h>",
                "i: c",
                "CSeq: 1",
                " OPTIONS",
                "l: 0",
            ],
            "",
        );
        // Folded CSeq is joined; the result is what the stack parses.
        let Verdict::Rewrite(bytes) = inspect(&m) else {
            panic!("folded header must be rewritten");
        };
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains("\r\nCSeq: 1 OPTIONS\r\n"), "{text}");
        assert!(
            rsipstack::sip::SipMessage::try_from(text.as_str()).is_ok(),
            "{text}"
        );
    }

    /// Fuzz finding (sip_guard): the head ended at the first CRLF CRLF even when an empty line
    /// (LF, or LF then CRLF) came earlier. The guard judged and canonicalised the headers after
    /// that empty line, and its rewrite turned the empty line into CRLF CRLF: the stack then
    /// saw a different head than the guard had checked, and part of the head as body.
    #[test]
    fn head_ends_at_the_first_empty_line_of_any_line_end_style() {
        let m = b"OPTIONS sip:h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
From: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: c1\r\nAccept: x\n\r\n\
CSeq: 1 OPTIONS\r\nl: 0\r\n\r\n";
        // CSeq is not part of the head: nothing to build a reply from.
        assert!(matches!(inspect(m), Verdict::Drop(_)), "{:?}", inspect(m));
        let (head, body) = split_head(m).unwrap();
        assert!(head.ends_with(b"Accept: x"));
        assert!(body.starts_with(b"CSeq: 1 OPTIONS"));
        assert_eq!(split_head(b"A\r\n\r\nb"), Some((&b"A"[..], &b"b"[..])));
        assert_eq!(split_head(b"A\n\nb"), Some((&b"A"[..], &b"b"[..])));
        assert_eq!(split_head(b"A\r\n\nb"), Some((&b"A"[..], &b"b"[..])));
        assert_eq!(split_head(b"\r\nA"), Some((&b""[..], &b"A"[..])));
        assert_eq!(split_head(b"A\r\nB\r\n"), None);
        // A binary body after a bare-LF head is fine too.
        let m = b"SIP/2.0 200 OK\nVia: x\n\n\xff\xfe";
        assert_eq!(inspect(m), Verdict::Pass);
    }

    /// Fuzz finding (sip_guard): a line of CRs only inside the head (`CR CR LF`) was written as
    /// an empty line by the rewrite, ending the head early for the stack (and the body the
    /// guard had measured Content-Length against moved).
    #[test]
    fn lines_of_carriage_returns_do_not_become_empty_lines() {
        let m = req(
            "OPTIONS sip:h SIP/2.0",
            &with(&["CSeq: 1\r\n OPTIONS", "\r", "Content-Length: 0"]),
            "",
        );
        let Verdict::Rewrite(out) = inspect(&m) else {
            panic!("folded CSeq must be rewritten: {:?}", inspect(&m));
        };
        let text = String::from_utf8(out.clone()).unwrap();
        assert_eq!(text.find("\r\n\r\n"), Some(text.len() - 4), "{text:?}");
        assert!(text.contains("\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n"));
        assert_eq!(inspect(&out), Verdict::Pass, "a rewrite is canonical");
    }

    /// Fuzz finding (sip_guard): stateless replies echo every Via/From/To/Call-ID/CSeq and add
    /// a tag to each tag-less To, so a small request of many short headers (`t:` lines) got a
    /// reply several times its size, towards a source address that UDP lets anyone forge.
    #[test]
    fn replies_are_never_much_larger_than_the_request() {
        let mut m = String::from("FOO sip:h SIP/2.0\r\nv: x\r\nf: a\r\ni: c\r\nCSeq: 1 FOO\r\n");
        for _ in 0..200 {
            m.push_str("t:\r\n");
        }
        m.push_str("\r\n");
        assert!(matches!(inspect(m.as_bytes()), Verdict::Drop(_)));
        // An ordinary request still gets its reply, and the compact one too.
        let m = req("FOO sip:h SIP/2.0", &with(&["CSeq: 1 FOO"]), "");
        let Verdict::Reply { response, .. } = inspect(&m) else {
            panic!("expected a reply");
        };
        assert!(response.len() <= reply_bound(m.len()));
        let m = b"FOO sip:h SIP/2.0\r\nv: x\r\nf: a\r\nt: b\r\ni: c\r\nCSeq: 1 FOO\r\n\r\n";
        assert!(matches!(inspect(m), Verdict::Reply { status: 501, .. }));
    }

    #[test]
    fn rewrites_stay_within_their_bound() {
        // Worst case: every line a bare `:` with LF line ends, each written as `: ` CRLF.
        let mut m = String::from("OPTIONS sip:h SIP/2.0\nv:x\nf:a\nt:b\ni:c\nCSeq:1 OPTIONS\n");
        for _ in 0..50 {
            m.push_str(":\n");
        }
        m.push('\n');
        let Verdict::Rewrite(out) = inspect(m.as_bytes()) else {
            panic!("expected a rewrite");
        };
        assert!(
            out.len() <= rewrite_bound(m.len()),
            "{} > 2 * {}",
            out.len(),
            m.len()
        );
    }
}
