//! Who really sent a request: the transport's source address, stamped onto every incoming
//! request before anything else sees it.
//!
//! Identity decisions (is this the carrier's trunk? where does this phone live?) must rest on
//! what the transport proves, never on what a message says about itself. A request's top Via
//! is written by its sender: rsipstack adds `received`/`rport` only in some cases and leaves a
//! sender's own `received=`/`rport=` in place in others (e.g. over TCP, or when the sent-by
//! already matches), so a stranger could claim to be a trunk. The [`SourceStamp`] inspector
//! removes any header of our private name that arrived on the wire and adds one carrying the
//! real transport and source address; [`transport_source`] reads it back.

use std::net::SocketAddr;

use async_trait::async_trait;
use rsipstack::sip::{HasHeaders, Header, Request, SipMessage};
use rsipstack::transaction::endpoint::TransportEventInspector;
use rsipstack::transport::TransportEvent;

use crate::flood::{FloodGuard, Verdict};

/// The private header carrying the transport source. Anything a sender puts under this name is
/// removed on arrival, so its presence on a request inside the server is proof.
pub const SOURCE_HEADER: &str = "X-Hookflash-Source";

/// The transport a request arrived on and the address it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportSource {
    /// `udp`, `tcp`, `tls`, `ws`, ...
    pub transport: String,
    pub addr: SocketAddr,
}

/// The source stamped on `req` on arrival (None for a request that did not come off the
/// network, e.g. one built in a test).
pub fn transport_source(req: &Request) -> Option<TransportSource> {
    let value = req
        .headers()
        .iter()
        .find(|h| h.name().eq_ignore_ascii_case(SOURCE_HEADER))
        .map(|h| h.value().trim().to_string())?;
    parse_stamp(&value)
}

fn parse_stamp(value: &str) -> Option<TransportSource> {
    let (transport, addr) = value.split_once(' ')?;
    Some(TransportSource {
        transport: transport.to_ascii_lowercase(),
        addr: addr.trim().parse().ok()?,
    })
}

/// Removes any claimed source header and stamps the real one.
pub fn stamp(req: &mut Request, transport: &str, addr: SocketAddr) {
    strip(req.headers_mut());
    req.headers_mut().push(Header::Other(
        SOURCE_HEADER.to_string(),
        format!("{} {}", transport.to_ascii_lowercase(), addr),
    ));
}

fn strip(headers: &mut rsipstack::sip::Headers) {
    headers.retain(|h| !h.name().eq_ignore_ascii_case(SOURCE_HEADER));
}

/// The transport inspector: stamps requests, strips the header from responses, and lets the
/// flood guard drop what a source sends beyond its allowance before rsipstack makes a
/// transaction of it.
pub struct SourceStamp {
    flood: std::sync::Arc<FloodGuard>,
}

impl SourceStamp {
    pub fn new(flood: std::sync::Arc<FloodGuard>) -> Self {
        SourceStamp { flood }
    }
}

#[async_trait]
impl TransportEventInspector for SourceStamp {
    async fn handle(&self, event: TransportEvent) -> Option<TransportEvent> {
        match event {
            TransportEvent::Incoming(msg, connection, from) => {
                let Ok(addr) = from.get_socketaddr() else {
                    tracing::debug!(%from, "dropping a message whose source is not an address");
                    return None;
                };
                let transport = from.r#type.unwrap_or_default().to_string();
                let msg = match msg {
                    SipMessage::Request(mut req) => {
                        if self.flood.check(addr.ip(), std::time::Instant::now()) == Verdict::Drop {
                            return None;
                        }
                        stamp(&mut req, &transport, addr);
                        SipMessage::Request(req)
                    }
                    SipMessage::Response(mut resp) => {
                        strip(resp.headers_mut());
                        SipMessage::Response(resp)
                    }
                };
                Some(TransportEvent::Incoming(msg, connection, from))
            }
            other => Some(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(extra: &str) -> Request {
        let raw = format!(
            "INVITE sip:102@127.0.0.1 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1;received=10.9.9.9;rport=5080\r\n\
             {extra}\
             From: <sip:101@127.0.0.1>;tag=a\r\nTo: <sip:102@127.0.0.1>\r\n\
             Call-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        );
        Request::try_from(raw.as_str()).expect("test request parses")
    }

    #[test]
    fn the_stamp_is_the_transport_source_not_the_via() {
        let mut req = request("");
        let real: SocketAddr = "127.0.0.3:40000".parse().unwrap();
        stamp(&mut req, "UDP", real);
        assert_eq!(
            transport_source(&req),
            Some(TransportSource {
                transport: "udp".into(),
                addr: real
            })
        );
    }

    #[test]
    fn a_claimed_source_header_is_replaced() {
        let mut req = request("x-hookflash-source: udp 10.9.9.9:5080\r\n");
        assert_eq!(
            transport_source(&req).map(|s| s.addr),
            Some("10.9.9.9:5080".parse().unwrap()),
            "the wire header is visible before stamping"
        );
        let real: SocketAddr = "127.0.0.3:40000".parse().unwrap();
        stamp(&mut req, "tcp", real);
        let stamps = req
            .headers()
            .iter()
            .filter(|h| h.name().eq_ignore_ascii_case(SOURCE_HEADER))
            .count();
        assert_eq!(stamps, 1);
        assert_eq!(transport_source(&req).map(|s| s.addr), Some(real));
    }

    #[test]
    fn unstamped_or_garbled_is_none() {
        assert_eq!(transport_source(&request("")), None);
        assert_eq!(parse_stamp("udp"), None);
        assert_eq!(parse_stamp("udp not-an-addr"), None);
        assert_eq!(
            parse_stamp("TCP [::1]:5060").map(|s| s.transport),
            Some("tcp".into())
        );
    }
}
