//! String-level helpers between rsipstack messages and the engine, kept sans-IO and tested.

use std::net::{IpAddr, SocketAddr};

use hookflash_sip::stack::sip::{HasHeaders, Header, Request};

/// The transport and source address of a request, from its top Via (rsipstack adds
/// `received`/`rport` to it on arrival, RFC 3581).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViaSource {
    pub transport: String,
    pub addr: SocketAddr,
}

pub fn parse_via(via: &str) -> Option<ViaSource> {
    // "SIP/2.0/UDP host:port;branch=..;received=1.2.3.4;rport=5060"
    let via = via.split(',').next()?.trim();
    let rest = via
        .strip_prefix("SIP/2.0/")
        .or_else(|| via.strip_prefix("sip/2.0/"))?;
    let (transport, rest) = rest.split_once(char::is_whitespace)?;
    let mut parts = rest.trim().split(';');
    let sent_by = parts.next()?.trim();
    let (host, port) = split_host_port(sent_by)?;
    let mut ip: Option<IpAddr> = host.parse().ok();
    let mut port = port.unwrap_or(5060);
    for p in parts {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        match k.trim().to_ascii_lowercase().as_str() {
            "received" => ip = v.trim().trim_matches(['[', ']']).parse().ok().or(ip),
            "rport" => {
                if let Ok(n) = v.trim().parse() {
                    port = n;
                }
            }
            _ => {}
        }
    }
    Some(ViaSource {
        transport: transport.to_ascii_lowercase(),
        addr: SocketAddr::new(ip?, port),
    })
}

fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    if let Some(v6) = s.strip_prefix('[') {
        let end = v6.find(']')?;
        let port = v6[end + 1..].strip_prefix(':').and_then(|p| p.parse().ok());
        return Some((&v6[..end], port));
    }
    match s.rsplit_once(':') {
        Some((h, p)) => Some((h, p.parse().ok())),
        None => Some((s, None)),
    }
}

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
    fn via_source_prefers_received_and_rport() {
        let v =
            parse_via("SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK1;received=127.0.0.1;rport=40000")
                .unwrap();
        assert_eq!(v.transport, "udp");
        assert_eq!(v.addr, "127.0.0.1:40000".parse().unwrap());
        let v = parse_via("SIP/2.0/TCP 127.0.0.1;branch=z9hG4bK1").unwrap();
        assert_eq!(v.transport, "tcp");
        assert_eq!(v.addr, "127.0.0.1:5060".parse().unwrap());
        let v = parse_via("SIP/2.0/UDP [::1]:5062;rport").unwrap();
        assert_eq!(v.addr, "[::1]:5062".parse().unwrap());
        assert!(parse_via("garbage").is_none());
        // A host name without `received` gives no address.
        assert!(parse_via("SIP/2.0/UDP example.com:5060;branch=z9hG4bK1").is_none());
    }

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
