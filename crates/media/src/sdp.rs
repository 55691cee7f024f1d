//! SDP (RFC 4566) parsing/serialising and offer/answer (RFC 3264) helpers. Sans-IO.
//!
//! The parser is small and forgiving: unknown line types and attributes are kept verbatim
//! (`other_lines` / `other_attrs`) so a parsed description prints back the same information,
//! malformed *optional* attributes (a bad `a=rtpmap`, `a=ptime`) are skipped with a debug log,
//! and only structural garbage is rejected with [`SdpError`] (the engine answers 488):
//! no `v=0` first, no or malformed `o=`, malformed `c=`, malformed `m=` (bad port), no `m=`.
//!
//! Inheritance is resolved at parse time: [`MediaSection::direction`] is the *effective*
//! direction (media attribute, else session attribute, else sendrecv). The session-level
//! attribute itself is kept in [`SessionDescription::direction`] for round-tripping.
//!
//! Output uses CRLF line endings and the RFC 4566 line order.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// Errors for SDP that cannot be used (the engine answers 488 Not Acceptable Here).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    #[error("SDP body is empty")]
    Empty,
    #[error("SDP does not start with v=0")]
    MissingVersion,
    #[error("unsupported SDP version {0:?}")]
    BadVersion(String),
    #[error("SDP has no o= line")]
    MissingOrigin,
    #[error("malformed o= line: {0:?}")]
    BadOrigin(String),
    #[error("malformed c= line: {0:?}")]
    BadConnection(String),
    #[error("malformed m= line: {0:?}")]
    BadMedia(String),
    #[error("SDP has no m= line")]
    NoMedia,
    #[error("no common codec")]
    NoCommonCodec,
}

/// Media direction attribute (RFC 3264 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Direction {
    #[default]
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    /// The direction seen from the other side: the answer to `sendonly` is `recvonly`.
    pub fn reverse(self) -> Direction {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            d => d,
        }
    }

    /// The attribute name, e.g. `"sendonly"` (without `a=`).
    pub fn as_attr(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// Parses an attribute name (`"sendrecv"`, ...).
    pub fn from_attr(s: &str) -> Option<Direction> {
        match s {
            "sendrecv" => Some(Direction::SendRecv),
            "sendonly" => Some(Direction::SendOnly),
            "recvonly" => Some(Direction::RecvOnly),
            "inactive" => Some(Direction::Inactive),
            _ => None,
        }
    }

    /// Whether the side using this direction sends media.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether the side using this direction receives media.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    pub fn from_flags(send: bool, recv: bool) -> Direction {
        match (send, recv) {
            (true, true) => Direction::SendRecv,
            (true, false) => Direction::SendOnly,
            (false, true) => Direction::RecvOnly,
            (false, false) => Direction::Inactive,
        }
    }

    /// The direction to put in an answer to an offer with direction `self` when we locally
    /// want `local`: we send only if the offerer receives, we receive only if it sends.
    pub fn answer(self, local: Direction) -> Direction {
        Direction::from_flags(
            self.receives() && local.sends(),
            self.sends() && local.receives(),
        )
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_attr())
    }
}

/// One payload format of an m-line.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Codec {
    pub pt: u8,
    /// Encoding name as written (`"PCMU"`, `"PCMA"`, `"telephone-event"`); empty for a dynamic
    /// PT without `a=rtpmap`.
    pub name: String,
    pub clock: u32,
    pub channels: Option<u8>,
    pub fmtp: Option<String>,
}

impl Codec {
    pub fn new(pt: u8, name: &str, clock: u32) -> Codec {
        Codec {
            pt,
            name: name.to_string(),
            clock,
            channels: None,
            fmtp: None,
        }
    }
    pub fn pcmu() -> Codec {
        Codec::new(0, "PCMU", 8000)
    }
    pub fn pcma() -> Codec {
        Codec::new(8, "PCMA", 8000)
    }
    /// telephone-event/8000 with events 0-16 (RFC 4733).
    pub fn telephone_event(pt: u8) -> Codec {
        Codec {
            fmtp: Some("0-16".to_string()),
            ..Codec::new(pt, "telephone-event", 8000)
        }
    }
    pub fn is_telephone_event(&self) -> bool {
        self.name.eq_ignore_ascii_case("telephone-event")
    }
    /// Same encoding (name, case-insensitive, and clock rate), ignoring the PT number.
    pub fn same_format(&self, other: &Codec) -> bool {
        self.clock == other.clock
            && self.name.eq_ignore_ascii_case(&other.name)
            && self.channels.unwrap_or(1) == other.channels.unwrap_or(1)
    }
    /// PCMU/8000 or PCMA/8000, mono.
    pub fn is_g711(&self) -> bool {
        self.clock == 8000
            && self.channels.unwrap_or(1) == 1
            && (self.name.eq_ignore_ascii_case("PCMU") || self.name.eq_ignore_ascii_case("PCMA"))
    }
}

/// Names of static payload types (RFC 3551) implied when an m-line has no `a=rtpmap`.
fn static_codec(pt: u8) -> Option<(&'static str, u32)> {
    Some(match pt {
        0 => ("PCMU", 8000),
        3 => ("GSM", 8000),
        4 => ("G723", 8000),
        5 => ("DVI4", 8000),
        6 => ("DVI4", 16000),
        7 => ("LPC", 8000),
        8 => ("PCMA", 8000),
        9 => ("G722", 8000),
        12 => ("QCELP", 8000),
        13 => ("CN", 8000),
        15 => ("G728", 8000),
        18 => ("G729", 8000),
        _ => return None,
    })
}

/// The codecs the server offers by default: PCMU, PCMA, telephone-event/101.
pub fn default_codecs() -> Vec<Codec> {
    vec![Codec::pcmu(), Codec::pcma(), Codec::telephone_event(101)]
}

/// One `m=` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaSection {
    /// `audio`, `video`, `image`, ...
    pub kind: String,
    /// 0 = rejected/disabled stream.
    pub port: u16,
    pub proto: String,
    /// Numeric formats in m-line order.
    pub codecs: Vec<Codec>,
    /// Non-numeric formats (e.g. `t38`, `*`), written after the codecs.
    pub other_formats: Vec<String>,
    /// Effective direction (inherits the session-level attribute at parse time).
    pub direction: Direction,
    pub connection: Option<IpAddr>,
    pub ptime: Option<u32>,
    /// `a=rtcp:` port (and address, if given).
    pub rtcp_port: Option<u16>,
    pub rtcp_addr: Option<IpAddr>,
    pub rtcp_mux: bool,
    /// Other attributes without the `a=` prefix, verbatim (rtpmap, fmtp, direction, rtcp,
    /// rtcp-mux, ptime and ICE candidate attributes are parsed/dropped instead).
    pub other_attrs: Vec<String>,
    /// Other lines (`b=`, `i=`, `k=`) including the `x=` prefix, verbatim.
    pub other_lines: Vec<String>,
}

impl MediaSection {
    /// A plain RTP/AVP section with the given codecs.
    pub fn new_audio(port: u16, codecs: Vec<Codec>, direction: Direction) -> MediaSection {
        MediaSection {
            kind: "audio".to_string(),
            port,
            proto: "RTP/AVP".to_string(),
            codecs,
            other_formats: Vec::new(),
            direction,
            connection: None,
            ptime: None,
            rtcp_port: None,
            rtcp_addr: None,
            rtcp_mux: false,
            other_attrs: Vec::new(),
            other_lines: Vec::new(),
        }
    }

    /// A copy that rejects this stream in an answer (port 0, same kind/proto/formats, no attributes).
    pub fn rejected(&self) -> MediaSection {
        MediaSection {
            kind: self.kind.clone(),
            port: 0,
            proto: self.proto.clone(),
            codecs: self
                .codecs
                .iter()
                .map(|c| Codec {
                    fmtp: None,
                    ..c.clone()
                })
                .collect(),
            other_formats: self.other_formats.clone(),
            direction: Direction::Inactive,
            connection: None,
            ptime: None,
            rtcp_port: None,
            rtcp_addr: None,
            rtcp_mux: false,
            other_attrs: Vec::new(),
            other_lines: Vec::new(),
        }
    }

    pub fn codec(&self, pt: u8) -> Option<&Codec> {
        self.codecs.iter().find(|c| c.pt == pt)
    }

    /// The telephone-event codec with the given clock rate (normally 8000).
    pub fn telephone_event(&self, clock: u32) -> Option<&Codec> {
        self.codecs
            .iter()
            .find(|c| c.is_telephone_event() && c.clock == clock)
    }

    /// First non-telephone-event codec (the preferred audio codec).
    pub fn first_audio_codec(&self) -> Option<&Codec> {
        self.codecs
            .iter()
            .find(|c| !c.is_telephone_event() && !c.name.eq_ignore_ascii_case("CN"))
    }

    fn is_audio(&self) -> bool {
        self.kind.eq_ignore_ascii_case("audio")
    }
}

/// A parsed (or built) session description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    pub origin_user: String,
    pub session_id: u64,
    pub session_version: u64,
    /// Address (or host name) of the `o=` line.
    pub origin_addr: String,
    pub session_name: String,
    pub connection: Option<IpAddr>,
    /// Session-level direction attribute, if present (already applied to each media section).
    pub direction: Option<Direction>,
    /// Session-level attributes without `a=` (ICE attributes dropped).
    pub other_attrs: Vec<String>,
    /// Other session lines with their `x=` prefix (`t=`, `b=`, `i=`, ...). When no `t=` line
    /// is present, `t=0 0` is written.
    pub other_lines: Vec<String>,
    pub media: Vec<MediaSection>,
}

/// ICE and similar transport attributes that describe the remote's own transport and must
/// never be carried over; they are dropped at parse time.
fn is_candidate_ish(name: &str) -> bool {
    matches!(
        name,
        "candidate"
            | "end-of-candidates"
            | "remote-candidates"
            | "ice-ufrag"
            | "ice-pwd"
            | "ice-options"
            | "ice-lite"
            | "ice-mismatch"
            | "ice-pacing"
    )
}

fn parse_connection(value: &str) -> Result<IpAddr, SdpError> {
    let bad = || SdpError::BadConnection(value.to_string());
    let mut it = value.split_whitespace();
    let (nettype, _addrtype, addr) = (it.next(), it.next(), it.next());
    if nettype != Some("IN") {
        return Err(bad());
    }
    let addr = addr.ok_or_else(bad)?;
    // Multicast TTL / count suffixes: "224.2.1.1/127/3".
    let addr = addr.split('/').next().unwrap_or(addr);
    addr.parse::<IpAddr>().map_err(|_| bad())
}

fn fmt_connection(ip: &IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("IN IP4 {v4}"),
        IpAddr::V6(v6) => format!("IN IP6 {v6}"),
    }
}

/// Splits an `a=` value into name and optional value.
fn split_attr(v: &str) -> (&str, Option<&str>) {
    match v.split_once(':') {
        Some((n, val)) => (n, Some(val)),
        None => (v, None),
    }
}

#[derive(Default)]
struct MediaBuilder {
    kind: String,
    port: u16,
    proto: String,
    formats: Vec<String>,
    direction: Option<Direction>,
    connection: Option<IpAddr>,
    ptime: Option<u32>,
    rtcp_port: Option<u16>,
    rtcp_addr: Option<IpAddr>,
    rtcp_mux: bool,
    rtpmap: HashMap<u8, RtpMapEntry>,
    fmtp: HashMap<u8, String>,
    other_attrs: Vec<String>,
    other_lines: Vec<String>,
}

impl MediaBuilder {
    fn from_m_line(value: &str) -> Result<MediaBuilder, SdpError> {
        let bad = || SdpError::BadMedia(value.to_string());
        let mut it = value.split_whitespace();
        let kind = it.next().ok_or_else(bad)?;
        let port_s = it.next().ok_or_else(bad)?;
        let proto = it.next().ok_or_else(bad)?;
        // "<port>/<count>": the count (hierarchical encoding) is ignored.
        let port_s = port_s.split('/').next().unwrap_or(port_s);
        let port = port_s.parse::<u16>().map_err(|_| bad())?;
        Ok(MediaBuilder {
            kind: kind.to_string(),
            port,
            proto: proto.to_string(),
            formats: it.map(str::to_string).collect(),
            ..Default::default()
        })
    }

    fn attr(&mut self, value: &str) {
        let (name, val) = split_attr(value);
        if let Some(d) = Direction::from_attr(name) {
            self.direction = Some(d);
            return;
        }
        match (name, val) {
            ("rtpmap", Some(v)) => match parse_rtpmap(v) {
                Some((pt, entry)) => {
                    self.rtpmap.insert(pt, entry);
                }
                None => tracing::debug!(attr = value, "ignoring malformed rtpmap"),
            },
            ("fmtp", Some(v)) => {
                let (pt, params) = v.trim().split_once(' ').unwrap_or((v.trim(), ""));
                match pt.parse::<u8>() {
                    Ok(pt) => {
                        self.fmtp.insert(pt, params.trim().to_string());
                    }
                    Err(_) => tracing::debug!(attr = value, "ignoring malformed fmtp"),
                }
            }
            ("ptime", Some(v)) => match v.trim().parse::<u32>() {
                Ok(p) => self.ptime = Some(p),
                Err(_) => tracing::debug!(attr = value, "ignoring malformed ptime"),
            },
            ("rtcp", Some(v)) => {
                let mut it = v.split_whitespace();
                match it.next().and_then(|p| p.parse::<u16>().ok()) {
                    Some(p) => {
                        self.rtcp_port = Some(p);
                        let rest: Vec<&str> = it.collect();
                        if rest.len() == 3 {
                            self.rtcp_addr = parse_connection(&rest.join(" ")).ok();
                        }
                    }
                    None => tracing::debug!(attr = value, "ignoring malformed rtcp"),
                }
            }
            ("rtcp-mux", None) => self.rtcp_mux = true,
            (n, _) if is_candidate_ish(n) => {}
            _ => self.other_attrs.push(value.to_string()),
        }
    }

    fn finish(self, session_dir: Option<Direction>) -> MediaSection {
        let mut codecs = Vec::new();
        let mut other_formats = Vec::new();
        for f in &self.formats {
            let pt = match f.parse::<u8>() {
                Ok(pt) if pt < 128 => pt,
                _ => {
                    other_formats.push(f.clone());
                    continue;
                }
            };
            let (name, clock, channels) = match self.rtpmap.get(&pt) {
                Some((n, c, ch)) => (n.clone(), *c, *ch),
                None => match static_codec(pt) {
                    Some((n, c)) => (n.to_string(), c, None),
                    None => (String::new(), 0, None),
                },
            };
            codecs.push(Codec {
                pt,
                name,
                clock,
                channels,
                fmtp: self.fmtp.get(&pt).cloned(),
            });
        }
        MediaSection {
            kind: self.kind,
            port: self.port,
            proto: self.proto,
            codecs,
            other_formats,
            direction: self.direction.or(session_dir).unwrap_or_default(),
            connection: self.connection,
            ptime: self.ptime,
            rtcp_port: self.rtcp_port,
            rtcp_addr: self.rtcp_addr,
            rtcp_mux: self.rtcp_mux,
            other_attrs: self.other_attrs,
            other_lines: self.other_lines,
        }
    }
}

/// Encoding name, clock rate, channels of one `a=rtpmap`.
type RtpMapEntry = (String, u32, Option<u8>);

/// `"<pt> <name>/<clock>[/<channels>]"`
fn parse_rtpmap(v: &str) -> Option<(u8, RtpMapEntry)> {
    let (pt, enc) = v.trim().split_once(char::is_whitespace)?;
    let pt = pt.parse::<u8>().ok()?;
    let mut parts = enc.trim().split('/');
    let name = parts.next()?.trim();
    if name.is_empty() {
        return None;
    }
    let clock = parts.next()?.trim().parse::<u32>().ok()?;
    let channels = match parts.next() {
        Some(ch) => Some(ch.trim().parse::<u8>().ok()?),
        None => None,
    };
    Some((pt, (name.to_string(), clock, channels)))
}

/// RFC 4566 order of the optional lines, used to place `other_lines` on output.
fn line_rank(line: &str) -> u8 {
    match line.as_bytes().first() {
        Some(b'i') => 0,
        Some(b'u') => 1,
        Some(b'e') => 2,
        Some(b'p') => 3,
        // c= is rank 4 (written from `connection`)
        Some(b'b') => 5,
        Some(b't') => 6,
        Some(b'r') => 7,
        Some(b'z') => 8,
        Some(b'k') => 9,
        _ => 10,
    }
}

impl SessionDescription {
    /// Parses an SDP body (CRLF or LF line endings).
    pub fn parse(s: &str) -> Result<Self, SdpError> {
        let mut lines = s
            .split('\n')
            .map(|l| l.trim_end_matches('\r').trim_end())
            .filter(|l| !l.is_empty())
            .peekable();

        match lines.next() {
            None => return Err(SdpError::Empty),
            Some(first) => {
                let v = first.strip_prefix("v=").ok_or(SdpError::MissingVersion)?;
                if v.trim() != "0" {
                    return Err(SdpError::BadVersion(v.to_string()));
                }
            }
        }

        let mut origin: Option<(String, u64, u64, String)> = None;
        let mut session_name = None;
        let mut connection = None;
        let mut direction = None;
        let mut other_attrs = Vec::new();
        let mut other_lines = Vec::new();
        let mut media: Vec<MediaBuilder> = Vec::new();

        for line in lines {
            let b = line.as_bytes();
            if b.len() < 2 || b[1] != b'=' || !b[0].is_ascii_alphabetic() {
                tracing::debug!(line, "ignoring malformed SDP line");
                continue;
            }
            // Safe to slice: byte 0 is ASCII and byte 1 is '='.
            let (typ, value) = (b[0], &line[2..]);
            if typ == b'm' {
                media.push(MediaBuilder::from_m_line(value)?);
                continue;
            }
            if let Some(m) = media.last_mut() {
                match typ {
                    b'c' => m.connection = Some(parse_connection(value)?),
                    b'a' => m.attr(value),
                    _ => m.other_lines.push(line.to_string()),
                }
                continue;
            }
            match typ {
                b'o' => origin = Some(parse_origin(value)?),
                b's' => session_name = Some(value.to_string()),
                b'c' => connection = Some(parse_connection(value)?),
                b'v' => tracing::debug!("ignoring repeated v= line"),
                b'a' => {
                    let (name, _) = split_attr(value);
                    if let Some(d) = Direction::from_attr(name) {
                        direction = Some(d);
                    } else if !is_candidate_ish(name) {
                        other_attrs.push(value.to_string());
                    }
                }
                _ => other_lines.push(line.to_string()),
            }
        }

        let (origin_user, session_id, session_version, origin_addr) =
            origin.ok_or(SdpError::MissingOrigin)?;
        if media.is_empty() {
            return Err(SdpError::NoMedia);
        }
        Ok(SessionDescription {
            origin_user,
            session_id,
            session_version,
            origin_addr,
            session_name: session_name.unwrap_or_else(|| "-".to_string()),
            connection,
            direction,
            other_attrs,
            other_lines,
            media: media.into_iter().map(|m| m.finish(direction)).collect(),
        })
    }

    /// First audio section with a non-zero port.
    pub fn audio(&self) -> Option<&MediaSection> {
        self.media.iter().find(|m| m.is_audio() && m.port != 0)
    }

    pub fn audio_mut(&mut self) -> Option<&mut MediaSection> {
        self.media.iter_mut().find(|m| m.is_audio() && m.port != 0)
    }

    /// Where the remote wants to receive RTP: media-level `c=` else session `c=`, plus the
    /// audio port. May be an unspecified address (`0.0.0.0`, old-style hold): see [`Self::is_hold`].
    pub fn audio_endpoint(&self) -> Option<SocketAddr> {
        let m = self.audio()?;
        let ip = m.connection.or(self.connection)?;
        Some(SocketAddr::new(ip, m.port))
    }

    /// Where the remote wants to receive RTCP: `a=rtcp` if present, else RTP port + 1.
    pub fn audio_rtcp_endpoint(&self) -> Option<SocketAddr> {
        let m = self.audio()?;
        let rtp = self.audio_endpoint()?;
        match m.rtcp_port {
            Some(p) => Some(SocketAddr::new(m.rtcp_addr.unwrap_or(rtp.ip()), p)),
            None => Some(SocketAddr::new(rtp.ip(), rtp.port().wrapping_add(1))),
        }
    }

    /// The audio stream's effective direction (media attribute > session attribute >
    /// sendrecv), as written. `sendrecv` when there is no usable audio stream.
    pub fn direction(&self) -> Direction {
        self.audio().map(|m| m.direction).unwrap_or_default()
    }

    /// Whether the audio stream is on hold: direction `sendonly`/`inactive`, or an
    /// unspecified connection address (`c=IN IP4 0.0.0.0`, RFC 2543 style).
    pub fn is_hold(&self) -> bool {
        matches!(self.direction(), Direction::SendOnly | Direction::Inactive)
            || self
                .audio_endpoint()
                .is_some_and(|a| a.ip().is_unspecified())
    }
}

fn parse_origin(value: &str) -> Result<(String, u64, u64, String), SdpError> {
    let bad = || SdpError::BadOrigin(value.to_string());
    let f: Vec<&str> = value.split_whitespace().collect();
    if f.len() != 6 {
        return Err(bad());
    }
    let id = parse_digits(f[1]).ok_or_else(bad)?;
    let ver = parse_digits(f[2]).ok_or_else(bad)?;
    Ok((f[0].to_string(), id, ver, f[5].to_string()))
}

/// Decimal digits as u64; numbers beyond u64 (some stacks use 20+ digit ids) wrap instead of
/// failing, so comparing versions for equality still works.
fn parse_digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.bytes().fold(0u64, |acc, b| {
        acc.wrapping_mul(10).wrapping_add(u64::from(b - b'0'))
    }))
}

impl FromStr for SessionDescription {
    type Err = SdpError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SessionDescription::parse(s)
    }
}

impl fmt::Display for SessionDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addrtype = if self.origin_addr.contains(':') {
            "IP6"
        } else {
            "IP4"
        };
        write!(f, "v=0\r\n")?;
        write!(
            f,
            "o={} {} {} IN {} {}\r\n",
            self.origin_user, self.session_id, self.session_version, addrtype, self.origin_addr
        )?;
        write!(f, "s={}\r\n", self.session_name)?;
        let mut lines: Vec<&String> = self.other_lines.iter().collect();
        lines.sort_by_key(|l| line_rank(l)); // stable: keeps t=/r= pairs in order
        for l in lines.iter().filter(|l| line_rank(l) < 4) {
            write!(f, "{l}\r\n")?;
        }
        if let Some(c) = &self.connection {
            write!(f, "c={}\r\n", fmt_connection(c))?;
        }
        for l in lines.iter().filter(|l| line_rank(l) == 5) {
            write!(f, "{l}\r\n")?;
        }
        if !lines.iter().any(|l| l.starts_with("t=")) {
            write!(f, "t=0 0\r\n")?;
        }
        for l in lines.iter().filter(|l| line_rank(l) > 5) {
            write!(f, "{l}\r\n")?;
        }
        if let Some(d) = self.direction {
            write!(f, "a={d}\r\n")?;
        }
        for a in &self.other_attrs {
            write!(f, "a={a}\r\n")?;
        }
        for m in &self.media {
            write!(f, "{m}")?;
        }
        Ok(())
    }
}

impl fmt::Display for MediaSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "m={} {} {}", self.kind, self.port, self.proto)?;
        for c in &self.codecs {
            write!(f, " {}", c.pt)?;
        }
        for o in &self.other_formats {
            write!(f, " {o}")?;
        }
        write!(f, "\r\n")?;
        let mut lines: Vec<&String> = self.other_lines.iter().collect();
        lines.sort_by_key(|l| line_rank(l));
        for l in lines.iter().filter(|l| line_rank(l) < 4) {
            write!(f, "{l}\r\n")?;
        }
        if let Some(c) = &self.connection {
            write!(f, "c={}\r\n", fmt_connection(c))?;
        }
        for l in lines.iter().filter(|l| line_rank(l) > 4) {
            write!(f, "{l}\r\n")?;
        }
        for c in &self.codecs {
            if !c.name.is_empty() {
                write!(f, "a=rtpmap:{} {}/{}", c.pt, c.name, c.clock)?;
                if let Some(ch) = c.channels {
                    write!(f, "/{ch}")?;
                }
                write!(f, "\r\n")?;
            }
            if let Some(p) = &c.fmtp {
                write!(f, "a=fmtp:{} {}\r\n", c.pt, p)?;
            }
        }
        if let Some(p) = self.ptime {
            write!(f, "a=ptime:{p}\r\n")?;
        }
        if let Some(p) = self.rtcp_port {
            match &self.rtcp_addr {
                Some(a) => write!(f, "a=rtcp:{p} {}\r\n", fmt_connection(a))?,
                None => write!(f, "a=rtcp:{p}\r\n")?,
            }
        }
        if self.rtcp_mux {
            write!(f, "a=rtcp-mux\r\n")?;
        }
        for a in &self.other_attrs {
            write!(f, "a={a}\r\n")?;
        }
        write!(f, "a={}\r\n", self.direction)
    }
}

/// The `o=` identity of the SDP the server sends on one leg: a stable random session id and a
/// version the caller bumps (with [`OriginState::next`]) before each *new* offer/answer that
/// differs from the previous one (RFC 3264 §8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginState {
    session_id: u64,
    version: u64,
}

impl OriginState {
    /// Random session id (kept below 2^62 so it prints short and fits signed parsers), version 1.
    pub fn new() -> OriginState {
        let id = rand::random::<u64>() >> 2;
        OriginState {
            session_id: id,
            version: 1,
        }
    }
    pub fn with(session_id: u64, version: u64) -> OriginState {
        OriginState {
            session_id,
            version,
        }
    }
    /// Bumps and returns the version. (Named as the engine's API expects; not an iterator.)
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.version = self.version.wrapping_add(1);
        self.version
    }
    pub fn session_id(&self) -> u64 {
        self.session_id
    }
    pub fn version(&self) -> u64 {
        self.version
    }
}

impl Default for OriginState {
    fn default() -> Self {
        OriginState::new()
    }
}

/// Builds the SDP the server sends to one leg: our address/port, our origin (current version;
/// the caller bumps it), the codecs and the direction. `ptime` is 20.
pub fn build_offer(
    local: SocketAddr,
    origin: &OriginState,
    codecs: &[Codec],
    direction: Direction,
) -> SessionDescription {
    let mut m = MediaSection::new_audio(local.port(), codecs.to_vec(), direction);
    m.ptime = Some(20);
    SessionDescription {
        origin_user: "hookflash".to_string(),
        session_id: origin.session_id,
        session_version: origin.version,
        origin_addr: local.ip().to_string(),
        session_name: "hookflash".to_string(),
        connection: Some(local.ip()),
        direction: None,
        other_attrs: Vec::new(),
        other_lines: vec!["t=0 0".to_string()],
        media: vec![m],
    }
}

/// Builds an answer to `offer`: one m-line per offered m-line (RFC 3264 §6); the first usable
/// audio stream gets our address, `codecs` and `direction`, every other stream is rejected
/// (port 0). Use [`answer_codecs`] for `codecs` and [`Direction::answer`] for `direction`.
pub fn build_answer(
    offer: &SessionDescription,
    local: SocketAddr,
    origin: &OriginState,
    codecs: &[Codec],
    direction: Direction,
) -> SessionDescription {
    let mut answer = build_offer(local, origin, codecs, direction);
    let audio_idx = offer.media.iter().position(|m| m.is_audio() && m.port != 0);
    let ours = answer.media.remove(0);
    answer.media = offer
        .media
        .iter()
        .enumerate()
        .map(|(i, m)| {
            if Some(i) == audio_idx {
                let mut a = ours.clone();
                a.ptime = m.ptime.or(a.ptime);
                a
            } else {
                m.rejected()
            }
        })
        .collect();
    answer
}

/// The codecs of `offer` the server can relay/handle: PCMU/8000, PCMA/8000 and
/// telephone-event/8000, in the offerer's order with the offerer's PT numbers.
/// `NoCommonCodec` when no audio codec (PCMU/PCMA) is left.
pub fn supported_codecs(offer: &MediaSection) -> Result<Vec<Codec>, SdpError> {
    let kept: Vec<Codec> = offer
        .codecs
        .iter()
        .filter(|c| c.is_g711() || (c.is_telephone_event() && c.clock == 8000))
        .cloned()
        .collect();
    if kept.iter().any(Codec::is_g711) {
        Ok(kept)
    } else {
        Err(SdpError::NoCommonCodec)
    }
}

/// Codecs for an answer: the first offered audio codec that is also in `available` (matched by
/// name/clock, keeping the offer's PT number), plus the offer's telephone-event at the same clock
/// if `available` has telephone-event too. A single audio codec is answered on purpose so the
/// stream cannot switch codecs mid-call (the relay does not transcode). `NoCommonCodec` when no
/// audio codec matches.
pub fn answer_codecs(offer: &[Codec], available: &[Codec]) -> Result<Vec<Codec>, SdpError> {
    let audio = offer
        .iter()
        .filter(|c| !c.is_telephone_event() && !c.name.is_empty())
        .find(|c| available.iter().any(|a| a.same_format(c)))
        .ok_or(SdpError::NoCommonCodec)?;
    let mut out = vec![audio.clone()];
    let te = offer
        .iter()
        .find(|c| c.is_telephone_event() && c.clock == audio.clock);
    if let Some(te) = te {
        if available
            .iter()
            .any(|a| a.is_telephone_event() && a.clock == te.clock)
        {
            out.push(te.clone());
        }
    }
    Ok(out)
}

/// PT mapping for the relay: for each codec of `from` find the same format in `to` and pair
/// their PT numbers where they differ (e.g. telephone-event 101 on A is 96 on B).
pub fn pt_map(from: &[Codec], to: &[Codec]) -> Vec<(u8, u8)> {
    from.iter()
        .filter_map(|f| {
            let t = to.iter().find(|t| t.same_format(f))?;
            (t.pt != f.pt).then_some((f.pt, t.pt))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINPHONE: &str = "v=0\r\n\
o=alice 3724 1234 IN IP4 192.168.1.10\r\n\
s=Talk\r\n\
c=IN IP4 192.168.1.10\r\n\
b=AS:380\r\n\
t=0 0\r\n\
a=rtcp-xr:rcvr-rtt=all:10000 stat-summary=loss,dup,jitt,TTL voip-metrics\r\n\
m=audio 7078 RTP/AVP 96 0 8 101 97\r\n\
a=rtpmap:96 opus/48000/2\r\n\
a=fmtp:96 useinbandfec=1\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-15\r\n\
a=rtpmap:97 telephone-event/48000\r\n\
a=rtcp:7079\r\n\
a=candidate:1 1 UDP 2130706431 192.168.1.10 7078 typ host\r\n\
a=ice-ufrag:abcd\r\n\
a=ssrc:12345 cname:alice@host\r\n\
a=sendrecv\r\n\
m=video 9078 RTP/AVP 96\r\n\
a=rtpmap:96 VP8/90000\r\n";

    #[test]
    fn parses_typical_offer() {
        let sdp = SessionDescription::parse(LINPHONE).unwrap();
        assert_eq!(sdp.origin_user, "alice");
        assert_eq!(sdp.session_id, 3724);
        assert_eq!(sdp.session_version, 1234);
        assert_eq!(sdp.origin_addr, "192.168.1.10");
        assert_eq!(sdp.session_name, "Talk");
        assert_eq!(sdp.media.len(), 2);
        let a = sdp.audio().unwrap();
        assert_eq!(a.port, 7078);
        let names: Vec<_> = a
            .codecs
            .iter()
            .map(|c| (c.pt, c.name.as_str(), c.clock))
            .collect();
        assert_eq!(
            names,
            vec![
                (96, "opus", 48000),
                (0, "PCMU", 8000),
                (8, "PCMA", 8000),
                (101, "telephone-event", 8000),
                (97, "telephone-event", 48000)
            ]
        );
        assert_eq!(a.codecs[0].channels, Some(2));
        assert_eq!(a.codecs[0].fmtp.as_deref(), Some("useinbandfec=1"));
        assert_eq!(a.rtcp_port, Some(7079));
        assert_eq!(
            a.other_attrs,
            vec!["ssrc:12345 cname:alice@host".to_string()]
        );
        assert_eq!(a.direction, Direction::SendRecv);
        assert_eq!(
            sdp.audio_endpoint(),
            Some("192.168.1.10:7078".parse().unwrap())
        );
        assert_eq!(
            sdp.audio_rtcp_endpoint(),
            Some("192.168.1.10:7079".parse().unwrap())
        );
        assert!(!sdp.is_hold());
        assert!(sdp.other_lines.contains(&"b=AS:380".to_string()));
        assert_eq!(sdp.other_attrs.len(), 1);
    }

    #[test]
    fn round_trips_with_crlf() {
        let sdp = SessionDescription::parse(LINPHONE).unwrap();
        let out = sdp.to_string();
        assert!(out.ends_with("\r\n"));
        assert!(!out.replace("\r\n", "").contains('\n'));
        let again = SessionDescription::parse(&out).unwrap();
        assert_eq!(sdp, again);
        // The unknown attributes survive verbatim, c= comes before b= and t=.
        assert!(out.contains("a=ssrc:12345 cname:alice@host\r\n"));
        assert!(out.contains("a=rtcp-xr:rcvr-rtt=all:10000"));
        let c = out.find("c=IN IP4").unwrap();
        assert!(
            c < out.find("b=AS").unwrap() && out.find("b=AS").unwrap() < out.find("t=0 0").unwrap()
        );
        assert!(!out.contains("candidate"));
        assert!(!out.contains("ice-ufrag"));
    }

    #[test]
    fn static_pts_get_implied_names_and_lf_is_accepted() {
        let s = "v=0\no=- 1 2 IN IP4 10.0.0.1\ns=-\nc=IN IP4 10.0.0.1\nt=0 0\nm=audio 4000 RTP/AVP 8 0 18 13 120\n";
        let sdp = SessionDescription::parse(s).unwrap();
        let a = sdp.audio().unwrap();
        let names: Vec<_> = a.codecs.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, vec!["PCMA", "PCMU", "G729", "CN", ""]);
        assert_eq!(a.codecs[0].clock, 8000);
        // Dynamic PT without rtpmap is kept but prints without rtpmap.
        let out = sdp.to_string();
        assert!(out.contains("m=audio 4000 RTP/AVP 8 0 18 13 120\r\n"));
        assert!(!out.contains("rtpmap:120"));
        assert!(out.contains("a=rtpmap:8 PCMA/8000\r\n"));
    }

    #[test]
    fn direction_inheritance_and_hold() {
        let s = "v=0\r\no=- 1 2 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\na=sendonly\r\nm=audio 4000 RTP/AVP 0\r\n";
        let sdp = SessionDescription::parse(s).unwrap();
        assert_eq!(sdp.direction, Some(Direction::SendOnly));
        assert_eq!(sdp.direction(), Direction::SendOnly);
        assert!(sdp.is_hold());

        let s = "v=0\r\no=- 1 2 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\na=sendonly\r\nm=audio 4000 RTP/AVP 0\r\na=recvonly\r\n";
        let sdp = SessionDescription::parse(s).unwrap();
        assert_eq!(sdp.direction(), Direction::RecvOnly);
        assert!(!sdp.is_hold());

        // Old-style hold: c=0.0.0.0 with sendrecv, reported as written.
        let s = "v=0\r\no=- 1 3 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
        let sdp = SessionDescription::parse(s).unwrap();
        assert_eq!(sdp.direction(), Direction::SendRecv);
        assert!(sdp.is_hold());
        assert_eq!(sdp.audio_endpoint(), Some("0.0.0.0:4000".parse().unwrap()));

        let s = "v=0\r\no=- 1 3 IN IP4 10.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=inactive\r\n";
        let sdp = SessionDescription::parse(s).unwrap();
        assert!(sdp.is_hold());
        assert_eq!(sdp.audio_endpoint(), None, "no c= anywhere");
    }

    #[test]
    fn media_level_connection_wins_and_ipv6() {
        let s = "v=0\r\no=- 1 2 IN IP6 ::1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 0 RTP/AVP 0\r\nm=audio 5000 RTP/AVP 0\r\nc=IN IP6 2001:db8::5\r\n";
        let sdp = SessionDescription::parse(s).unwrap();
        assert_eq!(sdp.audio().unwrap().port, 5000, "port 0 stream skipped");
        assert_eq!(
            sdp.audio_endpoint(),
            Some("[2001:db8::5]:5000".parse().unwrap())
        );
        let out = sdp.to_string();
        assert!(out.contains("o=- 1 2 IN IP6 ::1\r\n"));
        assert!(out.contains("c=IN IP6 2001:db8::5\r\n"));
        assert_eq!(SessionDescription::parse(&out).unwrap(), sdp);
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(SessionDescription::parse(""), Err(SdpError::Empty));
        assert_eq!(SessionDescription::parse("\r\n\r\n"), Err(SdpError::Empty));
        assert_eq!(
            SessionDescription::parse("hello world"),
            Err(SdpError::MissingVersion)
        );
        assert_eq!(
            SessionDescription::parse("v=1\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio 1 RTP/AVP 0\r\n"),
            Err(SdpError::BadVersion("1".into()))
        );
        assert_eq!(
            SessionDescription::parse("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\n"),
            Err(SdpError::NoMedia)
        );
        assert_eq!(
            SessionDescription::parse("v=0\r\ns=-\r\nm=audio 1 RTP/AVP 0\r\n"),
            Err(SdpError::MissingOrigin)
        );
        assert!(matches!(
            SessionDescription::parse("v=0\r\no=- x 1 IN IP4 1.2.3.4\r\nm=audio 1 RTP/AVP 0\r\n"),
            Err(SdpError::BadOrigin(_))
        ));
        assert!(matches!(
            SessionDescription::parse(
                "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio 70000 RTP/AVP 0\r\n"
            ),
            Err(SdpError::BadMedia(_))
        ));
        assert!(matches!(
            SessionDescription::parse("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio\r\n"),
            Err(SdpError::BadMedia(_))
        ));
        assert!(matches!(
            SessionDescription::parse(
                "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nc=IN IP4 nope\r\nm=audio 1 RTP/AVP 0\r\n"
            ),
            Err(SdpError::BadConnection(_))
        ));
    }

    #[test]
    fn origin_numbers() {
        assert_eq!(parse_digits("0"), Some(0));
        assert_eq!(
            parse_digits("4611731400430051336"),
            Some(4611731400430051336)
        );
        assert_eq!(parse_digits("18446744073709551615"), Some(u64::MAX));
        assert!(parse_digits("123456789012345678901234").is_some());
        assert_eq!(parse_digits(""), None);
        assert_eq!(parse_digits("-1"), None);
        assert_eq!(parse_digits("12a"), None);
    }

    #[test]
    fn forgiving_about_minor_problems() {
        // Bad rtpmap/ptime ignored, junk line ignored, missing s= and t= defaulted, UTF-8 safe.
        let s = "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nü=x\r\njunk\r\nm=audio 1000 RTP/AVP 0 96\r\na=rtpmap:96 broken\r\na=ptime:abc\r\na=rtpmap:0 PCMU/8000\r\n";
        let sdp = SessionDescription::parse(s).unwrap();
        let a = sdp.audio().unwrap();
        assert_eq!(a.codecs[1].name, "");
        assert_eq!(a.ptime, None);
        assert_eq!(sdp.session_name, "-");
        assert!(sdp.to_string().contains("t=0 0\r\n"));
    }

    #[test]
    fn direction_helpers() {
        assert_eq!(Direction::SendOnly.reverse(), Direction::RecvOnly);
        assert_eq!(Direction::RecvOnly.reverse(), Direction::SendOnly);
        assert_eq!(Direction::Inactive.reverse(), Direction::Inactive);
        assert_eq!(Direction::SendRecv.reverse(), Direction::SendRecv);
        assert_eq!(Direction::SendOnly.as_attr(), "sendonly");
        assert_eq!(
            Direction::SendOnly.answer(Direction::SendRecv),
            Direction::RecvOnly
        );
        assert_eq!(
            Direction::SendRecv.answer(Direction::SendOnly),
            Direction::SendOnly
        );
        assert_eq!(
            Direction::RecvOnly.answer(Direction::RecvOnly),
            Direction::Inactive
        );
        assert_eq!(
            Direction::Inactive.answer(Direction::SendRecv),
            Direction::Inactive
        );
    }

    #[test]
    fn build_offer_output() {
        let mut origin = OriginState::with(42, 1);
        let local: SocketAddr = "127.0.0.1:20000".parse().unwrap();
        let sdp = build_offer(local, &origin, &default_codecs(), Direction::SendRecv);
        let text = sdp.to_string();
        assert_eq!(
            text,
            "v=0\r\no=hookflash 42 1 IN IP4 127.0.0.1\r\ns=hookflash\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio 20000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
        );
        assert_eq!(origin.next(), 2);
        let sdp2 = build_offer(local, &origin, &[Codec::pcma()], Direction::SendOnly);
        assert_eq!(sdp2.session_id, 42);
        assert_eq!(sdp2.session_version, 2);
        let parsed = SessionDescription::parse(&sdp2.to_string()).unwrap();
        assert_eq!(parsed.direction(), Direction::SendOnly);
        assert_eq!(parsed.audio_endpoint(), Some(local));
        let a = OriginState::new();
        let b = OriginState::new();
        assert_ne!(a.session_id(), b.session_id());
        assert!(a.session_id() < (1 << 62));
    }

    #[test]
    fn build_answer_mirrors_mlines() {
        let offer = SessionDescription::parse(LINPHONE).unwrap();
        let codecs = answer_codecs(&offer.audio().unwrap().codecs, &default_codecs()).unwrap();
        let local: SocketAddr = "10.1.1.1:30000".parse().unwrap();
        let ans = build_answer(
            &offer,
            local,
            &OriginState::with(7, 1),
            &codecs,
            offer.direction().answer(Direction::SendRecv),
        );
        assert_eq!(ans.media.len(), 2);
        assert_eq!(ans.media[0].port, 30000);
        assert_eq!(ans.media[1].port, 0);
        assert_eq!(ans.media[1].kind, "video");
        let text = ans.to_string();
        assert!(text.contains("m=video 0 RTP/AVP 96\r\n"));
        let parsed = SessionDescription::parse(&text).unwrap();
        let pts: Vec<u8> = parsed
            .audio()
            .unwrap()
            .codecs
            .iter()
            .map(|c| c.pt)
            .collect();
        assert_eq!(pts, vec![0, 101]);
    }

    #[test]
    fn supported_codecs_filters_in_offer_order() {
        let offer = SessionDescription::parse(LINPHONE).unwrap();
        let kept = supported_codecs(offer.audio().unwrap()).unwrap();
        let pts: Vec<u8> = kept.iter().map(|c| c.pt).collect();
        assert_eq!(pts, vec![0, 8, 101]);
        assert_eq!(kept[2].fmtp.as_deref(), Some("0-15"));

        let s = "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nc=IN IP4 1.2.3.4\r\nm=audio 1000 RTP/AVP 18 101\r\na=rtpmap:101 telephone-event/8000\r\n";
        let sdp = SessionDescription::parse(s).unwrap();
        assert_eq!(
            supported_codecs(sdp.audio().unwrap()),
            Err(SdpError::NoCommonCodec)
        );

        // Dynamic PT for PCMA, lowercase name.
        let s = "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nc=IN IP4 1.2.3.4\r\nm=audio 1000 RTP/AVP 110\r\na=rtpmap:110 pcma/8000\r\n";
        let sdp = SessionDescription::parse(s).unwrap();
        assert_eq!(supported_codecs(sdp.audio().unwrap()).unwrap()[0].pt, 110);
    }

    #[test]
    fn answer_codecs_rules() {
        let offer = vec![
            Codec::new(18, "G729", 8000),
            Codec::pcma(),
            Codec::pcmu(),
            Codec::telephone_event(96),
        ];
        // Offerer's preference wins, PT numbers of the offer are kept.
        let available = vec![Codec::pcmu(), Codec::pcma(), Codec::telephone_event(101)];
        let ans = answer_codecs(&offer, &available).unwrap();
        assert_eq!(ans.iter().map(|c| c.pt).collect::<Vec<_>>(), vec![8, 96]);
        // No telephone-event on our side: none in the answer.
        let ans = answer_codecs(&offer, &[Codec::pcmu()]).unwrap();
        assert_eq!(ans, vec![Codec::pcmu()]);
        // No common audio codec.
        assert_eq!(
            answer_codecs(
                &[Codec::new(18, "G729", 8000), Codec::telephone_event(101)],
                &available
            ),
            Err(SdpError::NoCommonCodec)
        );
        // Only telephone-event in common is not enough.
        assert_eq!(
            answer_codecs(&[Codec::telephone_event(101)], &available),
            Err(SdpError::NoCommonCodec)
        );
    }

    #[test]
    fn pt_map_pairs_differing_numbers() {
        let a = vec![Codec::pcmu(), Codec::telephone_event(101)];
        let b = vec![Codec::pcmu(), Codec::telephone_event(96)];
        assert_eq!(pt_map(&a, &b), vec![(101, 96)]);
        assert_eq!(pt_map(&b, &a), vec![(96, 101)]);
        assert!(pt_map(&a, &a).is_empty());
    }
}
