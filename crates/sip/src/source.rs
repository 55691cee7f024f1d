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

/// The header a trusted SIP front (Kamailio, docs/deploy.md) adds to a request it forwards:
/// `<transport> <ip>:<port>` of the party it received the request from. Read only on requests
/// whose transport source is a configured front ([`Fronts`]); removed unread from all others,
/// so a phone cannot claim another address by sending it.
pub const FRONT_HEADER: &str = "X-Hookflash-Front-Source";

/// The SIP fronts (`sip.trusted_proxies`) whose [`FRONT_HEADER`] is believed.
#[derive(Debug, Clone, Default)]
pub struct Fronts {
    /// A front at this address, any source port (e.g. TCP connections from ephemeral ports).
    pub ips: Vec<std::net::IpAddr>,
    /// A front at exactly this address and port.
    pub addrs: Vec<SocketAddr>,
}

impl Fronts {
    pub fn is_empty(&self) -> bool {
        self.ips.is_empty() && self.addrs.is_empty()
    }

    /// Is `from` (a transport source) one of the fronts?
    pub fn trusts(&self, from: SocketAddr) -> bool {
        self.ips.contains(&from.ip()) || self.addrs.contains(&from)
    }

    /// The source to believe for `req`, which came from `transport`/`from`: the front's
    /// header when `from` is a front and the header is well formed, else the transport's own.
    /// Every front header is removed from the request either way.
    pub fn resolve(&self, req: &mut Request, transport: &str, from: SocketAddr) -> TransportSource {
        let claimed = req
            .headers()
            .iter()
            .find(|h| h.name().eq_ignore_ascii_case(FRONT_HEADER))
            .map(|h| h.value().trim().to_string());
        let own = TransportSource {
            transport: transport.to_ascii_lowercase(),
            addr: from,
        };
        let Some(claimed) = claimed else {
            return own;
        };
        req.headers_mut()
            .retain(|h| !h.name().eq_ignore_ascii_case(FRONT_HEADER));
        if !self.trusts(from) {
            tracing::debug!(%from, "front-source header from a source that is no front; ignored");
            return own;
        }
        match parse_front(&claimed) {
            Some(real) => real,
            None => {
                tracing::warn!(%from, value = %claimed, "garbled front-source header; using the front's address");
                own
            }
        }
    }
}

/// `udp 192.0.2.1:5060`, `tcp [2001:db8::1]:5060`, or Kamailio's unbracketed `udp 2001:db8::1:5060`.
fn parse_front(value: &str) -> Option<TransportSource> {
    if let Some(s) = parse_stamp(value) {
        return Some(s);
    }
    let (transport, addr) = value.split_once(' ')?;
    let (ip, port) = addr.trim().rsplit_once(':')?;
    let ip: std::net::IpAddr = ip.parse().ok()?;
    Some(TransportSource {
        transport: transport.to_ascii_lowercase(),
        addr: SocketAddr::new(ip, port.parse().ok()?),
    })
}

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

/// To-tags of responses sent without a transaction start with this, so the ACK a client sends
/// for one (RFC 3261 §17.1.1.3) is recognised and absorbed here instead of making a
/// transaction for nothing.
pub const STATELESS_TAG_PREFIX: &str = "hfsl-";

/// Decides, for a request just arrived, whether to answer it at once without a transaction
/// (e.g. the digest challenge to an INVITE without credentials): a flood of such requests
/// then leaves no transaction state behind, however many sources it comes from.
#[async_trait]
pub trait StatelessResponder: Send + Sync {
    /// The status and extra headers to answer with, or None to let the stack handle it.
    async fn respond(
        &self,
        req: &Request,
        source: &TransportSource,
    ) -> Option<(rsipstack::sip::StatusCode, Vec<Header>)>;
}

/// Where the engine installs its responder once it exists (the SIP server is built first).
pub type ResponderSlot =
    std::sync::Arc<std::sync::OnceLock<std::sync::Arc<dyn StatelessResponder>>>;

/// A response to `req` built without a transaction: Via, From, Call-ID and CSeq copied, a
/// To-tag of ours added, then `extra`.
pub fn stateless_response(
    req: &Request,
    status: rsipstack::sip::StatusCode,
    extra: Vec<Header>,
    user_agent: &str,
) -> rsipstack::sip::Response {
    let mut headers: Vec<Header> = Vec::new();
    for h in req.headers().iter() {
        match h {
            Header::Via(_) | Header::CallId(_) | Header::From(_) | Header::CSeq(_) => {
                headers.push(h.clone())
            }
            Header::To(to) => {
                let tag: u64 = rand::random();
                let value = if to.value().contains(";tag=") {
                    to.value().to_string()
                } else {
                    format!("{};tag={STATELESS_TAG_PREFIX}{tag:x}", to.value())
                };
                headers.push(Header::To(value.into()));
            }
            _ => {}
        }
    }
    headers.extend(extra);
    headers.push(Header::Server(user_agent.to_string().into()));
    headers.push(Header::ContentLength(0u32.into()));
    rsipstack::sip::Response {
        status_code: status,
        wire_reason: None,
        version: rsipstack::sip::Version::V2,
        headers: headers.into(),
        body: Vec::new(),
    }
}

/// Is this the ACK of a response we sent without a transaction?
fn acks_a_stateless_response(req: &Request) -> bool {
    req.method == rsipstack::sip::Method::Ack
        && req.headers().iter().any(|h| match h {
            Header::To(to) => to.value().contains(&format!(";tag={STATELESS_TAG_PREFIX}")),
            _ => false,
        })
}

/// The transport inspector: stamps requests, strips the header from responses, lets the
/// flood guard drop what a source sends beyond its allowance, and answers at once what the
/// engine's stateless responder takes, all before rsipstack makes a transaction of it.
pub struct SourceStamp {
    flood: std::sync::Arc<FloodGuard>,
    fronts: Fronts,
    responder: ResponderSlot,
    user_agent: String,
}

impl SourceStamp {
    pub fn new(
        flood: std::sync::Arc<FloodGuard>,
        responder: ResponderSlot,
        user_agent: String,
        fronts: Fronts,
    ) -> Self {
        SourceStamp {
            flood,
            fronts,
            responder,
            user_agent,
        }
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
                        // Through a trusted front: the party the front received it from.
                        let source = self.fronts.resolve(&mut req, &transport, addr);
                        if self
                            .flood
                            .check(source.addr.ip(), std::time::Instant::now())
                            == Verdict::Drop
                        {
                            return None;
                        }
                        if acks_a_stateless_response(&req) {
                            return None;
                        }
                        stamp(&mut req, &source.transport, source.addr);
                        if let Some(responder) = self.responder.get() {
                            if let Some((status, extra)) = responder.respond(&req, &source).await {
                                let resp =
                                    stateless_response(&req, status, extra, &self.user_agent);
                                if let Err(e) = connection.send(resp.into(), Some(&from)).await {
                                    tracing::debug!(error = %e, %from, "stateless response not sent");
                                }
                                return None;
                            }
                        }
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
    fn a_stateless_response_echoes_the_transaction_and_tags_to() {
        let req = request("");
        let resp = stateless_response(
            &req,
            rsipstack::sip::StatusCode::ProxyAuthenticationRequired,
            vec![Header::ProxyAuthenticate("Digest realm=\"r\"".into())],
            "hookflash/test",
        );
        let text = resp.to_string();
        assert!(text.starts_with("SIP/2.0 407"), "{text}");
        for want in [
            "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1",
            "Call-ID: c1",
            "CSeq: 1 INVITE",
            "From: <sip:101@127.0.0.1>;tag=a",
            "Proxy-Authenticate: Digest realm=\"r\"",
            "Content-Length: 0",
        ] {
            assert!(text.contains(want), "missing {want:?} in {text}");
        }
        let to = text
            .lines()
            .find(|l| l.starts_with("To:"))
            .unwrap_or_default();
        assert!(to.contains(";tag=hfsl-"), "{to}");
        // The client's ACK for it carries that tag and is recognised; an ordinary one is not.
        let tag = to.split(";tag=").nth(1).unwrap_or_default();
        let ack = |to_tag: &str| {
            Request::try_from(
                format!(
                    "ACK sip:102@127.0.0.1 SIP/2.0\r\n\
                     Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n\
                     From: <sip:101@127.0.0.1>;tag=a\r\nTo: <sip:102@127.0.0.1>;tag={to_tag}\r\n\
                     Call-ID: c1\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
                )
                .as_str(),
            )
            .expect("ack parses")
        };
        assert!(acks_a_stateless_response(&ack(tag)));
        assert!(!acks_a_stateless_response(&ack("b2bua-dialog-tag")));
        assert!(!acks_a_stateless_response(&req));
    }

    #[test]
    fn a_front_header_is_believed_only_from_a_front() {
        let front: SocketAddr = "127.0.0.1:5070".parse().unwrap();
        let fronts = Fronts {
            ips: vec!["10.0.0.7".parse().unwrap()],
            addrs: vec![front],
        };
        let phone: SocketAddr = "192.0.2.10:40000".parse().unwrap();
        let hdr = "X-Hookflash-Front-Source: udp 192.0.2.10:40000\r\n";
        // From the front (address and port): the phone's address, header gone.
        let mut req = request(hdr);
        let got = fronts.resolve(&mut req, "UDP", front);
        assert_eq!((got.transport.as_str(), got.addr), ("udp", phone));
        assert!(!req
            .to_string()
            .to_ascii_lowercase()
            .contains("front-source"));
        // From an address-only front on any port.
        let mut req = request(hdr);
        let any_port: SocketAddr = "10.0.0.7:33333".parse().unwrap();
        assert_eq!(fronts.resolve(&mut req, "tcp", any_port).addr, phone);
        // The same header from the front's IP on another port, or from a stranger: ignored
        // and removed.
        for stranger in ["127.0.0.1:5071", "192.0.2.99:5060"] {
            let stranger: SocketAddr = stranger.parse().unwrap();
            let mut req = request(hdr);
            let got = fronts.resolve(&mut req, "udp", stranger);
            assert_eq!(got.addr, stranger);
            assert!(!req
                .to_string()
                .to_ascii_lowercase()
                .contains("front-source"));
        }
        // The front's own requests (its OPTIONS probes) carry none: its own address.
        let mut req = request("");
        assert_eq!(fronts.resolve(&mut req, "udp", front).addr, front);
        // Garbled from the front: the front's address, not a guess.
        let mut req = request("X-Hookflash-Front-Source: udp nowhere\r\n");
        assert_eq!(fronts.resolve(&mut req, "udp", front).addr, front);
        // Kamailio writes IPv6 without brackets.
        assert_eq!(
            parse_front("udp 2001:db8::1:5062").map(|s| s.addr),
            Some("[2001:db8::1]:5062".parse().unwrap())
        );
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
