//! A real engine on ephemeral loopback ports with a provisioned store, the HTTP API bound on
//! 127.0.0.1:0, and two raw-SIP user agents: "carrier" (the account's trunk) and "phone"
//! (registered as user 201, who owns the DID +4930123456). A call is placed by the carrier to
//! the DID, so it rings the phone.
#![allow(dead_code)]

pub mod sip_ua;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use hookflash_config::Config;
use hookflash_engine::{CallInfo, CallState, Engine};
use hookflash_store::{Registration, Store};
use serde_json::Value;
use sip_ua::{is_request, is_response, Answer, Ua};
use tokio_util::sync::CancellationToken;

pub const API_KEY_A: &str = "hf_test_key_acme";
pub const API_KEY_B: &str = "hf_test_key_beta";
pub const DID: &str = "+4930123456";
pub const CALLER: &str = "+4915799912345";

/// RTP ports: 33000-39999, a block of 40 per server, different per test process.
fn rtp_range() -> (u16, u16) {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let slot = (std::process::id() as u16 % 7) * 25 + NEXT.fetch_add(1, Ordering::Relaxed) % 25;
    let lo = 33000 + slot * 40;
    (lo, lo + 39)
}

pub struct TestServer {
    pub engine: Engine,
    pub store: Store,
    pub http: String,
    pub sip: SocketAddr,
    pub stop: CancellationToken,
    pub carrier: Ua,
    pub phone: Ua,
    pub acme: String,
    pub beta: String,
    pub client: reqwest::Client,
    /// Recordings and caches of this server (removed at shutdown).
    pub data_dir: std::path::PathBuf,
}

fn config_toml(carrier_port: u16) -> String {
    format!(
        r#"
[[accounts]]
name = "acme"
realm = "acme.local"
api_keys = ["{API_KEY_A}"]
  [[accounts.users]]
  extension = "201"
  password = "secret201"
  display_name = "Alice"
  [[accounts.users]]
  extension = "202"
  password = "secret202"
  [[accounts.numbers]]
  number = "{DID}"
  user = "201"
  [[accounts.trunks]]
  name = "carrier"
  host = "127.0.0.1"
  port = {carrier_port}

[[accounts]]
name = "beta"
realm = "beta.local"
api_keys = ["{API_KEY_B}"]
  [[accounts.users]]
  extension = "301"
  password = "secret301"
"#
    )
}

impl TestServer {
    /// In-memory store.
    pub async fn start(phone_answers: Answer) -> TestServer {
        let store = Store::open_memory().await.expect("store");
        Self::start_with(store, phone_answers).await
    }

    /// A store in `dir` (survives a restart of the server).
    pub async fn start_in(dir: &Path, phone_answers: Answer) -> TestServer {
        let store = Store::open(dir).await.expect("store");
        Self::start_with(store, phone_answers).await
    }

    pub async fn start_with(store: Store, phone_answers: Answer) -> TestServer {
        Self::start_with_options(store, phone_answers, hookflash_api::HttpOptions::default()).await
    }

    /// In-memory store, HTTP server with these options (guard limits, header timeout).
    pub async fn start_opts(
        phone_answers: Answer,
        options: hookflash_api::HttpOptions,
    ) -> TestServer {
        let store = Store::open_memory().await.expect("store");
        Self::start_with_options(store, phone_answers, options).await
    }

    pub async fn start_with_options(
        store: Store,
        phone_answers: Answer,
        options: hookflash_api::HttpOptions,
    ) -> TestServer {
        hookflash_api::install_crypto_provider();
        let carrier = Ua::bind(Answer::Answer).await;
        let phone = Ua::bind(phone_answers).await;
        let mut config = Config::from_toml_str(&config_toml(carrier.addr.port())).expect("toml");
        let lo: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        config.sip.udp = Some(lo);
        config.sip.tcp = None;
        config.sip.advertised_host = Some("127.0.0.1".into());
        config.sip.ring_timeout_secs = 30;
        let (min, max) = rtp_range();
        config.rtp.port_min = min;
        config.rtp.port_max = max;
        config.rtp.inactivity_timeout_secs = 300;
        // Recordings and the TTS cache go to a fresh directory, not the crate's ./data.
        config.data_dir =
            std::env::temp_dir().join(format!("hookflash-api-test-{}", uuid::Uuid::new_v4()));
        config.validate().expect("valid config");
        store
            .apply_provisioning(&config.accounts)
            .await
            .expect("provisioning");
        let acme = store.account_by_name("acme").await.unwrap().unwrap().id;
        let beta = store.account_by_name("beta").await.unwrap().unwrap().id;
        let alice = store
            .user_by_extension(&acme, "201")
            .await
            .unwrap()
            .unwrap();
        store
            .upsert_registration(&Registration {
                user_id: alice.id.clone(),
                contact: format!("sip:201@{}", phone.addr),
                source: phone.addr.to_string(),
                transport: "udp".into(),
                expires_at: 4_000_000_000,
                call_id: "test-registration".into(),
                cseq: 1,
                user_agent: None,
            })
            .await
            .expect("registration");
        let engine = Engine::start(&config, store.clone()).await.expect("engine");
        let sip = engine.sip_udp_addr().expect("sip udp");
        let stop = CancellationToken::new();
        let (http_addr, serving) =
            hookflash_api::bind_with(lo, engine.clone(), stop.clone(), options)
                .await
                .expect("http");
        tokio::spawn(serving);
        TestServer {
            engine,
            store,
            http: format!("http://{http_addr}"),
            sip,
            stop,
            carrier,
            phone,
            acme,
            beta,
            data_dir: config.data_dir.clone(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client"),
        }
    }

    pub async fn shutdown(&self) {
        self.engine.shutdown(Duration::from_secs(2)).await;
        self.stop.cancel();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.http, path)
    }

    /// Carrier calls the DID; returns the engine's call once the phone rings (Ring) or the call
    /// is answered and ACKed (Answer).
    pub async fn place_call(&self) -> CallInfo {
        let mark = self.phone.mark();
        let sip_call_id = self.carrier.invite(self.sip, DID, CALLER).await;
        self.phone
            .wait(mark, Duration::from_secs(5), |m| is_request(m, "INVITE"))
            .await;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let calls = self.engine.calls(&self.acme);
            if let Some(c) = calls.last() {
                let wanted = if self.phone_answers() {
                    CallState::Answered
                } else {
                    CallState::Ringing
                };
                if c.state == wanted {
                    if wanted == CallState::Answered {
                        // The carrier got its 200 and sent the ACK.
                        self.carrier
                            .wait(0, Duration::from_secs(5), |m| {
                                is_response(m, 200, "INVITE") && m.call_id == sip_call_id
                            })
                            .await;
                        self.phone
                            .wait(0, Duration::from_secs(5), |m| is_request(m, "ACK"))
                            .await;
                    }
                    return c.clone();
                }
            }
            assert!(Instant::now() < deadline, "call not set up: {calls:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn phone_answers(&self) -> bool {
        self.phone.answers()
    }

    pub async fn wait_no_calls(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.engine.calls(&self.acme).is_empty() {
            assert!(Instant::now() < deadline, "call did not end");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn req(
        &self,
        method: reqwest::Method,
        path: &str,
        auth: Option<&str>,
        body: Option<&str>,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let mut r = self.client.request(method, self.url(path));
        if let Some(a) = auth {
            r = r.header("Authorization", a);
        }
        if let Some(b) = body {
            r = r
                .header("Content-Type", "application/json")
                .body(b.to_string());
        }
        let resp = r.send().await.expect("HTTP request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, json, headers)
    }
}

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

pub fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}
