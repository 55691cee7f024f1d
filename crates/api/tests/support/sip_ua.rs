//! A tiny SIP user agent over raw UDP for the API tests: enough to place a call from a "carrier"
//! (a trunk, so no digest auth) and to be the phone it rings. It answers re-INVITEs (hold),
//! BYE and CANCEL by itself and logs every message with its arrival time.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::Notify;

#[derive(Debug, Clone)]
pub struct Msg {
    /// Request method, or `None` for a response.
    pub method: Option<String>,
    pub status: Option<u16>,
    pub call_id: String,
    pub cseq_method: String,
    pub body: String,
    pub raw: String,
    pub at: Instant,
}

impl Msg {
    pub fn sdp_direction(&self) -> &'static str {
        for d in ["sendonly", "recvonly", "inactive", "sendrecv"] {
            if self.body.contains(&format!("a={d}")) {
                return d;
            }
        }
        "sendrecv"
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// 180 then 200 with SDP.
    Answer,
    /// 180 only (ring until cancelled).
    Ring,
}

struct Dialog {
    call_id: String,
    /// Headers of the INVITE that created it (to answer CANCEL with 487).
    invite: String,
    local_tag: String,
}

struct Inner {
    log: Vec<Msg>,
    dialogs: Vec<Dialog>,
    answer: Answer,
}

#[derive(Clone)]
pub struct Ua {
    pub sock: Arc<UdpSocket>,
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    notify: Arc<Notify>,
}

fn header<'a>(msg: &'a str, name: &str, compact: &str) -> Option<&'a str> {
    let head = msg.split("\r\n\r\n").next().unwrap_or("");
    for line in head.split("\r\n").skip(1) {
        if let Some((k, v)) = line.split_once(':') {
            let k = k.trim();
            if k.eq_ignore_ascii_case(name)
                || (!compact.is_empty() && k.eq_ignore_ascii_case(compact))
            {
                return Some(v.trim());
            }
        }
    }
    None
}

fn headers<'a>(msg: &'a str, name: &str, compact: &str) -> Vec<&'a str> {
    let head = msg.split("\r\n\r\n").next().unwrap_or("");
    head.split("\r\n")
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .filter(|(k, _)| {
            let k = k.trim();
            k.eq_ignore_ascii_case(name) || (!compact.is_empty() && k.eq_ignore_ascii_case(compact))
        })
        .map(|(_, v)| v.trim())
        .collect()
}

fn uri_in(value: &str) -> String {
    match (value.find('<'), value.find('>')) {
        (Some(a), Some(b)) if a < b => value[a + 1..b].to_string(),
        _ => value.split(';').next().unwrap_or("").trim().to_string(),
    }
}

fn rand_hex() -> String {
    format!("{:016x}", rand::random::<u64>())
}

pub fn sdp(port: u16, direction: &str) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na={direction}\r\n"
    )
}

fn answer_direction(offer: &str) -> &'static str {
    if offer.contains("a=sendonly") {
        "recvonly"
    } else if offer.contains("a=inactive") || offer.contains("a=recvonly") {
        "inactive"
    } else {
        "sendrecv"
    }
}

impl Ua {
    pub async fn bind(answer: Answer) -> Ua {
        let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind UA");
        let addr = sock.local_addr().expect("UA addr");
        let ua = Ua {
            sock: Arc::new(sock),
            addr,
            inner: Arc::new(Mutex::new(Inner {
                log: Vec::new(),
                dialogs: Vec::new(),
                answer,
            })),
            notify: Arc::new(Notify::new()),
        };
        let runner = ua.clone();
        tokio::spawn(async move { runner.run().await });
        ua
    }

    async fn run(self) {
        let mut buf = vec![0u8; 65536];
        loop {
            let Ok((n, from)) = self.sock.recv_from(&mut buf).await else {
                return;
            };
            let raw = String::from_utf8_lossy(&buf[..n]).to_string();
            if raw.trim().is_empty() {
                continue; // keep-alive
            }
            self.handle(raw, from).await;
        }
    }

    fn log(&self, msg: Msg) {
        if let Ok(mut i) = self.inner.lock() {
            i.log.push(msg);
        }
        self.notify.notify_waiters();
    }

    async fn send(&self, text: String, to: SocketAddr) {
        let _ = self.sock.send_to(text.as_bytes(), to).await;
    }

    fn contact(&self) -> String {
        format!("<sip:ua@{}>", self.addr)
    }

    /// A response to `req` (copying Via, From, To (+tag), Call-ID, CSeq).
    fn response(
        &self,
        req: &str,
        status: u16,
        reason: &str,
        to_tag: Option<&str>,
        body: Option<String>,
    ) -> String {
        let mut out = format!("SIP/2.0 {status} {reason}\r\n");
        for v in headers(req, "Via", "v") {
            out.push_str(&format!("Via: {v}\r\n"));
        }
        out.push_str(&format!(
            "From: {}\r\n",
            header(req, "From", "f").unwrap_or("")
        ));
        let to = header(req, "To", "t").unwrap_or("");
        match to_tag {
            Some(tag) if !to.contains(";tag=") => out.push_str(&format!("To: {to};tag={tag}\r\n")),
            _ => out.push_str(&format!("To: {to}\r\n")),
        }
        out.push_str(&format!(
            "Call-ID: {}\r\n",
            header(req, "Call-ID", "i").unwrap_or("")
        ));
        out.push_str(&format!(
            "CSeq: {}\r\n",
            header(req, "CSeq", "").unwrap_or("")
        ));
        out.push_str(&format!("Contact: {}\r\n", self.contact()));
        match body {
            Some(b) => out.push_str(&format!(
                "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{b}",
                b.len()
            )),
            None => out.push_str("Content-Length: 0\r\n\r\n"),
        }
        out
    }

    async fn handle(&self, raw: String, from: SocketAddr) {
        let first = raw.lines().next().unwrap_or("").to_string();
        let call_id = header(&raw, "Call-ID", "i").unwrap_or("").to_string();
        let cseq = header(&raw, "CSeq", "").unwrap_or("").to_string();
        let cseq_method = cseq.split_whitespace().nth(1).unwrap_or("").to_string();
        let body = raw
            .split_once("\r\n\r\n")
            .map(|x| x.1.to_string())
            .unwrap_or_default();
        let at = Instant::now();
        if let Some(rest) = first.strip_prefix("SIP/2.0 ") {
            let status: u16 = rest
                .split_whitespace()
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            if cseq_method == "INVITE" && (200..300).contains(&status) {
                self.ack(&raw, from).await;
            }
            self.log(Msg {
                method: None,
                status: Some(status),
                call_id,
                cseq_method,
                body,
                raw,
                at,
            });
            return;
        }
        let method = first.split_whitespace().next().unwrap_or("").to_string();
        self.log(Msg {
            method: Some(method.clone()),
            status: None,
            call_id: call_id.clone(),
            cseq_method,
            body: body.clone(),
            raw: raw.clone(),
            at,
        });
        let to_has_tag = header(&raw, "To", "t").is_some_and(|t| t.contains(";tag="));
        match method.as_str() {
            "INVITE" if !to_has_tag => {
                let tag = rand_hex();
                let answer = {
                    let mut i = self.inner.lock().expect("ua lock");
                    i.dialogs.push(Dialog {
                        call_id: call_id.clone(),
                        invite: raw.clone(),
                        local_tag: tag.clone(),
                    });
                    i.answer
                };
                self.send(self.response(&raw, 100, "Trying", None, None), from)
                    .await;
                self.send(self.response(&raw, 180, "Ringing", Some(&tag), None), from)
                    .await;
                if answer == Answer::Answer {
                    let sdp = sdp(self.addr.port() + 1000, answer_direction(&body));
                    self.send(self.response(&raw, 200, "OK", Some(&tag), Some(sdp)), from)
                        .await;
                }
            }
            "INVITE" => {
                let sdp = sdp(self.addr.port() + 1000, answer_direction(&body));
                self.send(self.response(&raw, 200, "OK", None, Some(sdp)), from)
                    .await;
            }
            "ACK" => {}
            "CANCEL" => {
                self.send(self.response(&raw, 200, "OK", None, None), from)
                    .await;
                let invite = {
                    let i = self.inner.lock().expect("ua lock");
                    i.dialogs
                        .iter()
                        .find(|d| d.call_id == call_id)
                        .map(|d| (d.invite.clone(), d.local_tag.clone()))
                };
                if let Some((invite, tag)) = invite {
                    self.send(
                        self.response(&invite, 487, "Request Terminated", Some(&tag), None),
                        from,
                    )
                    .await;
                }
            }
            _ => {
                self.send(self.response(&raw, 200, "OK", None, None), from)
                    .await;
            }
        }
    }

    /// ACK for a 2xx to our INVITE.
    async fn ack(&self, resp: &str, from: SocketAddr) {
        let target = header(resp, "Contact", "m")
            .map(uri_in)
            .unwrap_or_else(|| format!("sip:{from}"));
        let cseq_no = header(resp, "CSeq", "")
            .and_then(|c| c.split_whitespace().next())
            .unwrap_or("1");
        let ack = format!(
            "ACK {target} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bK{};rport\r\nMax-Forwards: 70\r\n\
             From: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {cseq_no} ACK\r\nContent-Length: 0\r\n\r\n",
            self.addr,
            rand_hex(),
            header(resp, "From", "f").unwrap_or(""),
            header(resp, "To", "t").unwrap_or(""),
            header(resp, "Call-ID", "i").unwrap_or(""),
        );
        self.send(ack, from).await;
    }

    /// Sends an INVITE for `number` to `server`; returns the Call-ID.
    pub async fn invite(&self, server: SocketAddr, number: &str, from_number: &str) -> String {
        let call_id = format!("{}@ua", rand_hex());
        let body = sdp(self.addr.port() + 1000, "sendrecv");
        let msg = format!(
            "INVITE sip:{number}@{server} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{br};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:{from_number}@{me}>;tag={tag}\r\nTo: <sip:{number}@{server}>\r\n\
             Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:carrier@{me}>\r\n\
             Content-Type: application/sdp\r\nContent-Length: {len}\r\n\r\n{body}",
            me = self.addr,
            br = rand_hex(),
            tag = rand_hex(),
            len = body.len(),
        );
        self.send(msg, server).await;
        call_id
    }

    pub fn messages(&self) -> Vec<Msg> {
        self.inner.lock().map(|i| i.log.clone()).unwrap_or_default()
    }

    /// Waits for a message matching `pred` that arrived at index >= `since` of the log.
    pub async fn wait(&self, since: usize, timeout: Duration, pred: impl Fn(&Msg) -> bool) -> Msg {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.notify.notified();
            if let Some(m) = self.messages().into_iter().skip(since).find(|m| pred(m)) {
                return m;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let log: Vec<String> = self
                    .messages()
                    .iter()
                    .map(|m| m.raw.lines().next().unwrap_or("").to_string())
                    .collect();
                panic!(
                    "UA {}: no matching SIP message within {timeout:?}; log: {log:#?}",
                    self.addr
                );
            }
            let _ = tokio::time::timeout(left.min(Duration::from_millis(100)), notified).await;
        }
    }

    pub fn answers(&self) -> bool {
        self.inner
            .lock()
            .map(|i| i.answer == Answer::Answer)
            .unwrap_or(true)
    }

    pub fn mark(&self) -> usize {
        self.inner.lock().map(|i| i.log.len()).unwrap_or(0)
    }
}

pub fn is_request(m: &Msg, method: &str) -> bool {
    m.method.as_deref() == Some(method)
}

pub fn is_response(m: &Msg, status: u16, method: &str) -> bool {
    m.status == Some(status) && m.cseq_method == method
}
