//! The configuration: built-in defaults, overridden by a TOML file, overridden by environment
//! variables. The shape is the contract documented in `docs/config.md`.
//!
//! Secrets (user and trunk passwords, API keys) are part of the config; the `Debug`
//! implementations of the structs holding them redact them so a stray `?config` in a log line
//! does not leak them.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::database::DatabaseUrl;
use crate::dial::DialClass;
use crate::digest::DigestAlgorithm;
use crate::error::ConfigError;
use crate::normalize::{
    check_country_code, check_extension, check_name, check_webhook_url, number_digits,
};

const REDACTED: &str = "<redacted>";

/// The whole configuration of one hookflash node.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// SQLite database (`hookflash.db`, unless `database_url` is set) and recordings live here.
    pub data_dir: PathBuf,
    /// PostgreSQL instead of SQLite: `postgres://user:password@host:port/database`. Absent:
    /// SQLite in `data_dir`.
    pub database_url: Option<DatabaseUrl>,
    /// Must be true to listen on anything outside 127.0.0.0/8 and ::1.
    pub allow_public_bind: bool,
    /// Create the demo account on first start when no account exists.
    pub demo_account: bool,
    /// On SIGTERM/SIGINT: calls in progress may go on this long (new ones get 503) before the
    /// rest are ended. 0: end them at once.
    pub shutdown_grace_secs: u64,
    pub sip: SipConfig,
    pub registrar: RegistrarConfig,
    pub http: HttpConfig,
    pub rtp: RtpConfig,
    pub security: SecurityConfig,
    /// Token lifetimes of the RingCentral dialect's OAuth endpoint.
    pub oauth: OAuthConfig,
    /// Several nodes sharing one PostgreSQL and one bus (docs/deploy.md).
    pub cluster: ClusterConfig,
    /// Declarative provisioning, applied at every start.
    pub accounts: Vec<AccountSpec>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./data"),
            database_url: None,
            allow_public_bind: false,
            demo_account: true,
            shutdown_grace_secs: 30,
            sip: SipConfig::default(),
            registrar: RegistrarConfig::default(),
            http: HttpConfig::default(),
            rtp: RtpConfig::default(),
            security: SecurityConfig::default(),
            oauth: OAuthConfig::default(),
            cluster: ClusterConfig::default(),
            accounts: Vec::new(),
        }
    }
}

/// `[sip]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SipConfig {
    /// UDP listen address; `""` in the file (or the env var) disables the transport.
    #[serde(deserialize_with = "de_opt_socket_addr")]
    pub udp: Option<SocketAddr>,
    /// TCP listen address; `""` disables the transport.
    #[serde(deserialize_with = "de_opt_socket_addr")]
    pub tcp: Option<SocketAddr>,
    /// Host put into Contact/Via. Default: the UDP (else TCP) listen IP.
    #[serde(deserialize_with = "de_opt_string")]
    pub advertised_host: Option<String>,
    /// Unanswered outgoing legs are cancelled after this many seconds.
    pub ring_timeout_secs: u64,
    /// Digest algorithms offered in challenges, in order of preference
    /// (`"SHA-256"`, `"MD5"`).
    pub digest_algorithms: Vec<String>,
    /// Session timers (RFC 4028): a caller asking for a shorter interval gets 422 with this
    /// Min-SE.
    pub session_min_se_secs: u32,
    /// Session timers asked for on legs whose peer did not ask: our INVITEs carry
    /// `Session-Expires` with this interval and `Supported: timer`, and a caller's 2xx gets
    /// it with us as the refresher. None (the default): off; 1800 is the usual value.
    pub session_expires_secs: Option<u32>,
    /// SIP over TLS listen address (`sips:`, `transport=tls`); off when absent. Needs
    /// `tls_cert` and `tls_key`.
    #[serde(deserialize_with = "de_opt_socket_addr")]
    pub tls: Option<SocketAddr>,
    /// PEM certificate chain of the TLS listener.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the TLS listener.
    pub tls_key: Option<PathBuf>,
    /// SIP fronts (load balancers such as Kamailio, docs/deploy.md) whose
    /// `X-Hookflash-Front-Source` header names the real transport source of a request they
    /// forward: `"ip"` (any port) or `"ip:port"`. A request from anywhere else has that header
    /// removed unread. Empty (the default): no front is trusted.
    pub trusted_proxies: Vec<TrustedProxy>,
}

/// One entry of `sip.trusted_proxies`: an address (any port) or an address and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrustedProxy {
    Ip(IpAddr),
    Addr(SocketAddr),
}

impl TrustedProxy {
    /// `"127.0.0.1"`, `"::1"`, `"127.0.0.1:5070"`, `"[::1]:5070"`.
    pub fn parse(s: &str) -> Option<TrustedProxy> {
        let s = s.trim();
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Some(TrustedProxy::Ip(ip));
        }
        s.parse::<SocketAddr>().ok().map(TrustedProxy::Addr)
    }
}

impl<'de> Deserialize<'de> for TrustedProxy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        TrustedProxy::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "sip.trusted_proxies: {s:?} is neither an IP address nor address:port"
            ))
        })
    }
}

impl Default for SipConfig {
    fn default() -> Self {
        let lo = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 5060);
        SipConfig {
            udp: Some(lo),
            tcp: Some(lo),
            advertised_host: None,
            ring_timeout_secs: 60,
            digest_algorithms: vec!["SHA-256".to_string(), "MD5".to_string()],
            session_min_se_secs: 90,
            session_expires_secs: None,
            tls: None,
            tls_cert: None,
            tls_key: None,
            trusted_proxies: Vec::new(),
        }
    }
}

impl SipConfig {
    /// The configured digest algorithms, parsed. Unknown tokens are skipped here;
    /// [`Config::validate`] rejects them.
    pub fn digest_algorithms(&self) -> Vec<DigestAlgorithm> {
        self.digest_algorithms
            .iter()
            .filter_map(|s| DigestAlgorithm::parse(s))
            .collect()
    }
}

/// What a party that is not a user of the account (a caller who came in over a trunk) may
/// make the server dial by REFER or any other transfer it starts itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutsideRefer {
    /// 403 Forbidden: an outside party transfers nowhere.
    Deny,
    /// Only the account's extensions and numbers, never out through a trunk.
    Extensions,
}

/// `[security]`: defences against strangers on the network (docs/security.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// Per-source SIP request limit: more than `flood_max_requests` requests within
    /// `flood_window_ms` bans the source for `flood_ban_secs` (its requests are dropped
    /// unanswered). 0 turns the limit off.
    pub flood_max_requests: u32,
    pub flood_window_ms: u64,
    pub flood_ban_secs: u64,
    /// Sources never limited (the account trunks' addresses are allowed automatically).
    pub flood_allow: Vec<IpAddr>,
    /// SIP over TCP: connections per source IP, connections in all, and how long a new
    /// connection may stay silent before it is closed.
    pub tcp_per_source: usize,
    pub tcp_max_connections: usize,
    pub tcp_first_message_secs: u64,
    /// Audio and hook fetches may go to loopback and private addresses (local WAV servers
    /// and apps on a developer's machine). Link-local/metadata addresses and the server's own
    /// listeners are refused regardless; turn this off in production.
    pub fetch_private: bool,
    /// REFER (or a transfer) by a party that is not a user of the account.
    pub outside_refer: OutsideRefer,
    /// Premium-rate and special numbers, as E.164 prefixes (`+1900`) or national ones with
    /// the country code (`+49900`). Calls to them need the `premium` dial class.
    pub premium_prefixes: Vec<String>,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            flood_max_requests: 200,
            flood_window_ms: 2000,
            flood_ban_secs: 60,
            flood_allow: Vec::new(),
            tcp_per_source: 32,
            tcp_max_connections: 8192,
            tcp_first_message_secs: 10,
            fetch_private: true,
            outside_refer: OutsideRefer::Deny,
            premium_prefixes: default_premium_prefixes(),
        }
    }
}

/// Well-known premium-rate and special-service ranges (shared-cost, premium, dial-in, paid
/// directory services, satellite and international premium ranges).
pub fn default_premium_prefixes() -> Vec<String> {
    [
        // North America: 900 / 976 premium.
        "+1900", "+1976",
        // United Kingdom: 09 premium, 118 directory, 087 / 084 revenue-share.
        "+449", "+44118", "+4487", "+4484",
        // Germany: 0900 premium, 0137 televoting, 0118 directory, 0180 shared cost, 0190 legacy.
        "+49900", "+49137", "+49118", "+49180", "+49190",
        // Austria, Switzerland: 09xx premium.
        "+43900", "+43930", "+41900", "+41901", "+41906", // France: 08 9x premium.
        "+3389", "+33118",
        // Netherlands 0900 / 0906 / 0909; Italy 89x; Spain 80x/90x premium.
        "+31900", "+31906", "+31909", "+3989", "+34803", "+34806", "+34807", "+34905",
        // Global services: satellite and international premium rate (+979), Inmarsat (+870),
        // Iridium (+8816, +8817), international networks (+882, +883).
        "+979", "+870", "+8816", "+8817", "+882", "+883",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// `[registrar]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrarConfig {
    /// Shorter requested expiries get 423 Interval Too Brief.
    pub min_expires: u32,
    pub max_expires: u32,
    pub default_expires: u32,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        RegistrarConfig {
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
        }
    }
}

/// `[http]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// HTTPS: PEM certificate chain and private key; both or neither (plain HTTP).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// sipgate push API: how long a call to (or placed by) a user with a webhook waits for
    /// the app's answer to `newCall` before it rings the user / goes out as dialled anyway
    /// (milliseconds, 100-10000).
    pub push_answer_timeout_ms: u64,
}

/// Default of [`HttpConfig::push_answer_timeout_ms`].
pub const PUSH_ANSWER_TIMEOUT_MS: u64 = 3_000;

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080),
            tls_cert: None,
            tls_key: None,
            push_answer_timeout_ms: PUSH_ANSWER_TIMEOUT_MS,
        }
    }
}

/// `[rtp]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RtpConfig {
    pub bind_ip: IpAddr,
    /// IP written into SDP `c=` lines. Default: `bind_ip`.
    #[serde(deserialize_with = "de_opt_ip")]
    pub advertised_ip: Option<IpAddr>,
    pub port_min: u16,
    pub port_max: u16,
    /// A call with no RTP in either direction for this long is ended.
    pub inactivity_timeout_secs: u64,
    /// WAV file (any rate, channels, 8–32-bit) a party held by the server hears, looped.
    /// Default: the built-in melody.
    pub music_on_hold: Option<PathBuf>,
    /// Threads that relay RTP (each owns a share of the calls' media). 0: one per CPU core.
    pub relay_threads: usize,
    /// A relay thread with calls wakes at most this often and then relays everything that
    /// arrived meanwhile (fewer wake-ups: less CPU per packet; adds at most this much delay).
    /// 0: wake on every packet.
    pub relay_pace_us: u64,
}

impl Default for RtpConfig {
    fn default() -> Self {
        RtpConfig {
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            advertised_ip: None,
            port_min: 20000,
            port_max: 29999,
            inactivity_timeout_secs: 60,
            music_on_hold: None,
            relay_threads: 0,
            relay_pace_us: 1000,
        }
    }
}

/// `[[accounts]]`: one tenant to provision.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountSpec {
    pub name: String,
    /// Digest realm and SIP domain. Default: the account name.
    #[serde(default, deserialize_with = "de_opt_string")]
    pub realm: Option<String>,
    /// Plaintext API keys; stored hashed.
    #[serde(default)]
    pub api_keys: Vec<String>,
    #[serde(default)]
    pub users: Vec<UserSpec>,
    #[serde(default)]
    pub numbers: Vec<NumberSpec>,
    #[serde(default)]
    pub trunks: Vec<TrunkSpec>,
    /// Applications (call hooks) and the numbers routed to them.
    #[serde(default)]
    pub applications: Vec<AppSpec>,
    /// OAuth client applications (the RingCentral dialect's `/restapi/oauth/token`).
    #[serde(default)]
    pub oauth_apps: Vec<OAuthAppSpec>,
    /// Country calling code without `+` (`"49"`): which outside numbers are national.
    /// Absent: left as it is (new accounts: inferred from the account's numbers).
    #[serde(default, deserialize_with = "de_opt_string")]
    pub country_code: Option<String>,
    /// Dial classes of the account's users and API. Absent: left as it is (new accounts:
    /// internal and national).
    #[serde(default)]
    pub dial: Option<Vec<DialClass>>,
    /// Click-to-dial sessions between two outside numbers. Absent: left as it is (new
    /// accounts: false).
    #[serde(default)]
    pub outside_sessions: Option<bool>,
    /// Concurrent calls with an outbound trunk leg; 0 = unlimited. Absent: left as it is (new
    /// accounts: 20).
    #[serde(default)]
    pub max_outbound_calls: Option<u32>,
    /// Outbound trunk legs started per minute; 0 = unlimited. Absent: left as it is (new
    /// accounts: 60).
    #[serde(default)]
    pub outbound_calls_per_minute: Option<u32>,
}

impl AccountSpec {
    /// The realm to use: the configured one, else the account name.
    pub fn effective_realm(&self) -> &str {
        self.realm.as_deref().unwrap_or(&self.name)
    }
}

impl fmt::Debug for AccountSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountSpec")
            .field("name", &self.name)
            .field("realm", &self.realm)
            .field(
                "api_keys",
                &format_args!("[{} redacted]", self.api_keys.len()),
            )
            .field("users", &self.users)
            .field("numbers", &self.numbers)
            .field("trunks", &self.trunks)
            .field("applications", &self.applications)
            .field("oauth_apps", &self.oauth_apps)
            .field("country_code", &self.country_code)
            .field("dial", &self.dial)
            .field("outside_sessions", &self.outside_sessions)
            .field("max_outbound_calls", &self.max_outbound_calls)
            .field("outbound_calls_per_minute", &self.outbound_calls_per_minute)
            .finish()
    }
}

/// `[[accounts.users]]`
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserSpec {
    pub extension: String,
    pub password: String,
    #[serde(default, deserialize_with = "de_opt_string")]
    pub display_name: Option<String>,
    /// sipgate push API: `newCall` events of this user are POSTed here. Absent: left as it is
    /// (the CLI may have set it).
    #[serde(default, deserialize_with = "de_opt_string")]
    pub webhook_url: Option<String>,
    /// Voicemail: `true` switches the user's mailbox on, `false` off. Absent: left as it is
    /// (the CLI or the API may have set it).
    #[serde(default)]
    pub voicemail: Option<bool>,
    /// The user's own dial classes (intersected with the account's). Absent: left as it is
    /// (new users: the account's).
    #[serde(default)]
    pub dial: Option<Vec<DialClass>>,
}

impl fmt::Debug for UserSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserSpec")
            .field("extension", &self.extension)
            .field("password", &REDACTED)
            .field("display_name", &self.display_name)
            .field("webhook_url", &self.webhook_url)
            .field("voicemail", &self.voicemail)
            .field("dial", &self.dial)
            .finish()
    }
}

/// `[[accounts.numbers]]`: a DID routed to a user of the same account.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NumberSpec {
    pub number: String,
    /// Extension of the user the number rings.
    pub user: String,
}

/// `[[accounts.trunks]]`
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrunkSpec {
    pub name: String,
    /// Outbound gateway; also the source address of inbound calls.
    pub host: String,
    #[serde(default = "default_trunk_port")]
    pub port: u16,
    /// `"udp"` or `"tcp"`.
    #[serde(default = "default_trunk_transport")]
    pub transport: String,
    /// Optional digest credentials for outbound INVITEs.
    #[serde(default, deserialize_with = "de_opt_string")]
    pub username: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    pub password: Option<String>,
}

fn default_trunk_port() -> u16 {
    5060
}

fn default_trunk_transport() -> String {
    "udp".to_string()
}

impl fmt::Debug for TrunkSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrunkSpec")
            .field("name", &self.name)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("transport", &self.transport)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| REDACTED))
            .finish()
    }
}

impl TrunkSpec {
    /// Checks one trunk definition (shared by the config validation and the store).
    pub fn check(&self) -> Result<(), String> {
        check_name("trunk name", &self.name)?;
        if self.host.trim().is_empty() || self.host.chars().any(|c| c.is_whitespace()) {
            return Err(format!(
                "trunk {:?}: host must be a non-empty host name or IP",
                self.name
            ));
        }
        if self.port == 0 {
            return Err(format!("trunk {:?}: port must not be 0", self.name));
        }
        if self.transport != "udp" && self.transport != "tcp" {
            return Err(format!(
                "trunk {:?}: transport must be \"udp\" or \"tcp\", got {:?}",
                self.name, self.transport
            ));
        }
        if self.username.is_some() != self.password.is_some() {
            return Err(format!(
                "trunk {:?}: username and password must be given together",
                self.name
            ));
        }
        Ok(())
    }
}

/// HTTP method of an application hook: `"GET"` or `"POST"` (any case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HookMethod {
    Get,
    #[default]
    Post,
}

impl HookMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            HookMethod::Get => "GET",
            HookMethod::Post => "POST",
        }
    }

    /// `GET` or `POST`, any case.
    pub fn parse(s: &str) -> Option<Self> {
        if s.eq_ignore_ascii_case("GET") {
            Some(HookMethod::Get)
        } else if s.eq_ignore_ascii_case("POST") {
            Some(HookMethod::Post)
        } else {
            None
        }
    }
}

impl serde::Serialize for HookMethod {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for HookMethod {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if let Some(m) = HookMethod::parse(&s) {
            Ok(m)
        } else {
            Err(de::Error::custom(format!(
                "hook method {s:?} is not \"GET\" or \"POST\""
            )))
        }
    }
}

/// A hook of an application: a URL string (`"https://app.example/call"`, method POST) or a
/// table `{ url, method, username, password }` (basic-auth credentials optional).
#[derive(Clone, PartialEq, Eq)]
pub struct HookSpec {
    pub url: String,
    pub method: HookMethod,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl HookSpec {
    /// Checks one hook; `what` names it in the message (`application "ivr": call_hook`).
    pub fn check(&self, what: &str) -> Result<(), String> {
        check_webhook_url(&self.url).map_err(|e| format!("{what}: {e}"))?;
        if self.password.is_some() && self.username.is_none() {
            return Err(format!("{what}: a password needs a username"));
        }
        for v in [&self.username, &self.password].into_iter().flatten() {
            if v.chars().any(char::is_control) || v.len() > 256 {
                return Err(format!(
                    "{what}: username and password must be at most 256 characters without \
                     control characters"
                ));
            }
        }
        Ok(())
    }
}

impl fmt::Debug for HookSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HookSpec")
            .field("url", &self.url)
            .field("method", &self.method)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| REDACTED))
            .finish()
    }
}

/// The table form of a hook.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HookTable {
    url: String,
    #[serde(default)]
    method: HookMethod,
    #[serde(default, deserialize_with = "de_opt_string")]
    username: Option<String>,
    #[serde(default, deserialize_with = "de_opt_string")]
    password: Option<String>,
}

impl<'de> Deserialize<'de> for HookSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct HookVisitor;
        impl<'de> Visitor<'de> for HookVisitor {
            type Value = HookSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a URL string or a table { url, method, username, password }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HookSpec, E> {
                Ok(HookSpec {
                    url: v.to_string(),
                    method: HookMethod::Post,
                    username: None,
                    password: None,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<HookSpec, A::Error> {
                let t = HookTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(HookSpec {
                    url: t.url,
                    method: t.method,
                    username: t.username,
                    password: t.password,
                })
            }
        }
        d.deserialize_any(HookVisitor)
    }
}

/// `[[accounts.applications]]`: an application (matched by name) and the numbers routed to it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSpec {
    pub name: String,
    /// Asked what to do with a call.
    pub call_hook: HookSpec,
    /// Told about the call's progress. Absent: none.
    #[serde(default)]
    pub call_status_hook: Option<HookSpec>,
    /// Asked when the call_hook fails. Absent: none.
    #[serde(default)]
    pub fallback: Option<HookSpec>,
    /// DIDs whose inbound calls run this application.
    #[serde(default)]
    pub numbers: Vec<String>,
    /// The language its hooks speak: `"jambonz"` (default) or `"rcml"`.
    #[serde(default)]
    pub language: AppLanguage,
}

/// The language an application's hooks speak: jambonz (signed JSON requests, a JSON array of
/// verbs back) or RCML (RestComm form-encoded requests, a `<Response>` document back).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AppLanguage {
    #[default]
    Jambonz,
    Rcml,
}

impl AppLanguage {
    pub fn as_str(self) -> &'static str {
        match self {
            AppLanguage::Jambonz => "jambonz",
            AppLanguage::Rcml => "rcml",
        }
    }

    /// `jambonz` or `rcml`, any case.
    pub fn parse(s: &str) -> Option<Self> {
        if s.eq_ignore_ascii_case("jambonz") {
            Some(AppLanguage::Jambonz)
        } else if s.eq_ignore_ascii_case("rcml") {
            Some(AppLanguage::Rcml)
        } else {
            None
        }
    }
}

impl serde::Serialize for AppLanguage {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for AppLanguage {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        AppLanguage::parse(&s).ok_or_else(|| {
            de::Error::custom(format!(
                "application language {s:?} is not \"jambonz\" or \"rcml\""
            ))
        })
    }
}

/// `[[accounts.oauth_apps]]`: an OAuth client application (matched by `client_id`); the
/// secret is stored hashed.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthAppSpec {
    pub client_id: String,
    pub client_secret: String,
    /// Default: the client id.
    #[serde(default, deserialize_with = "de_opt_string")]
    pub name: Option<String>,
}

impl fmt::Debug for OAuthAppSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthAppSpec")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("name", &self.name)
            .finish()
    }
}

/// `[oauth]`: lifetimes of the tokens `/restapi/oauth/token` issues (RingCentral dialect).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OAuthConfig {
    /// Access tokens live this long (a client may ask for less with `access_token_ttl`).
    pub access_token_ttl_secs: u64,
    /// Refresh tokens live this long (a client may ask for less with `refresh_token_ttl`).
    pub refresh_token_ttl_secs: u64,
    /// Longest lifetime of a JWT credential (`hookflash user jwt`).
    pub jwt_credential_max_days: u64,
}

impl Default for OAuthConfig {
    fn default() -> Self {
        OAuthConfig {
            access_token_ttl_secs: 3600,
            refresh_token_ttl_secs: 7 * 24 * 3600,
            jwt_credential_max_days: 365,
        }
    }
}

/// `[cluster]`: this node's name among several, and the bus they share.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's name, unique in the cluster: each call records the node that owns it.
    pub node_id: String,
    /// The NATS server the nodes share (`nats://host:port`). None (the default): one node
    /// alone, no bus.
    #[serde(deserialize_with = "de_opt_string")]
    pub nats_url: Option<String>,
    /// How often this node writes that it is alive (shared store).
    pub heartbeat_secs: u64,
    /// A node silent this long is taken for dead by the survivors (its calls' records are
    /// closed as cut by the failure).
    pub node_dead_after_secs: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            node_id: "node1".into(),
            nats_url: None,
            heartbeat_secs: 5,
            node_dead_after_secs: 20,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// serde helpers: "" means "not set" for optional addresses and strings.

fn de_opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = Option::<String>::deserialize(d)?;
    Ok(s.filter(|s| !s.trim().is_empty()))
}

fn de_opt_socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    match de_opt_string(d)? {
        None => Ok(None),
        Some(s) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("invalid socket address {s:?}"))),
    }
}

fn de_opt_ip<'de, D: Deserializer<'de>>(d: D) -> Result<Option<IpAddr>, D::Error> {
    match de_opt_string(d)? {
        None => Ok(None),
        Some(s) => parse_ip(&s)
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("invalid IP address {s:?}"))),
    }
}

/// Parses an IP, accepting IPv6 in brackets too.
fn parse_ip(s: &str) -> Result<IpAddr, std::net::AddrParseError> {
    let s = s.trim();
    let s = s
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(s);
    s.parse()
}

// ---------------------------------------------------------------------------------------------
// Environment overrides

/// Reads an environment variable of the process. Non-UTF-8 values are an error.
fn process_env(var: &str) -> Result<Option<String>, ConfigError> {
    match std::env::var_os(var) {
        None => Ok(None),
        Some(v) => v.into_string().map(Some).map_err(|_| ConfigError::Env {
            var: var.to_string(),
            reason: "not valid UTF-8".to_string(),
        }),
    }
}

fn env_err(var: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Env {
        var: var.to_string(),
        reason: reason.into(),
    }
}

fn parse_env<T: std::str::FromStr>(var: &str, value: &str, what: &str) -> Result<T, ConfigError> {
    value
        .trim()
        .parse()
        .map_err(|_| env_err(var, format!("expected {what}, got {value:?}")))
}

fn parse_env_bool(var: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(env_err(
            var,
            format!("expected true or false, got {value:?}"),
        )),
    }
}

fn parse_env_opt_addr(var: &str, value: &str) -> Result<Option<SocketAddr>, ConfigError> {
    if value.trim().is_empty() {
        Ok(None)
    } else {
        parse_env(var, value, "an address like 127.0.0.1:5060").map(Some)
    }
}

fn parse_env_ip(var: &str, value: &str) -> Result<IpAddr, ConfigError> {
    parse_ip(value).map_err(|_| env_err(var, format!("expected an IP address, got {value:?}")))
}

impl Config {
    /// Loads the configuration: defaults, then the TOML file (`path`, else the file named by
    /// `HOOKFLASH_CONFIG`, else none), then the `HOOKFLASH_*` environment variables.
    /// Does not validate; call [`Config::validate`].
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_with_env(path, process_env)
    }

    /// [`Config::load`] with an explicit environment lookup (for tests and embedding).
    pub fn load_with_env<F>(path: Option<&Path>, env: F) -> Result<Config, ConfigError>
    where
        F: Fn(&str) -> Result<Option<String>, ConfigError>,
    {
        let from_env = env("HOOKFLASH_CONFIG")?
            .filter(|s| !s.trim().is_empty())
            .map(PathBuf::from);
        let file = path.map(Path::to_path_buf).or(from_env);
        let mut config = match &file {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.clone(),
                    source,
                })?;
                let c = Self::from_toml_str(&text).map_err(|source| ConfigError::Parse {
                    path: p.clone(),
                    source: Box::new(source),
                })?;
                tracing::debug!(path = %p.display(), "loaded config file");
                c
            }
            None => Config::default(),
        };
        config.apply_env(env)?;
        Ok(config)
    }

    /// Parses a TOML document (missing fields take their defaults).
    pub fn from_toml_str(text: &str) -> Result<Config, toml::de::Error> {
        toml::from_str(text)
    }

    /// Applies the `HOOKFLASH_*` overrides (see `docs/config.md`).
    pub fn apply_env<F>(&mut self, env: F) -> Result<(), ConfigError>
    where
        F: Fn(&str) -> Result<Option<String>, ConfigError>,
    {
        let get = |var: &str| -> Result<Option<String>, ConfigError> { env(var) };

        if let Some(v) = get("HOOKFLASH_DATA_DIR")? {
            if v.trim().is_empty() {
                return Err(env_err("HOOKFLASH_DATA_DIR", "must not be empty"));
            }
            self.data_dir = PathBuf::from(v);
        }
        if let Some(v) = get("HOOKFLASH_DATABASE_URL")? {
            // Empty: SQLite (overrides a database_url of the file).
            self.database_url = match v.trim() {
                "" => None,
                url => Some(
                    DatabaseUrl::parse(url)
                        .map_err(|reason| env_err("HOOKFLASH_DATABASE_URL", reason))?,
                ),
            };
        }
        if let Some(v) = get("HOOKFLASH_ALLOW_PUBLIC_BIND")? {
            self.allow_public_bind = parse_env_bool("HOOKFLASH_ALLOW_PUBLIC_BIND", &v)?;
        }
        if let Some(v) = get("HOOKFLASH_CLUSTER_NODE_ID")? {
            self.cluster.node_id = v;
        }
        if let Some(v) = get("HOOKFLASH_CLUSTER_NATS_URL")? {
            self.cluster.nats_url = Some(v).filter(|s| !s.trim().is_empty());
        }
        if let Some(v) = get("HOOKFLASH_SHUTDOWN_GRACE_SECS")? {
            self.shutdown_grace_secs =
                parse_env("HOOKFLASH_SHUTDOWN_GRACE_SECS", &v, "a number of seconds")?;
        }
        if let Some(v) = get("HOOKFLASH_DEMO_ACCOUNT")? {
            self.demo_account = parse_env_bool("HOOKFLASH_DEMO_ACCOUNT", &v)?;
        }
        if let Some(v) = get("HOOKFLASH_SIP_UDP")? {
            self.sip.udp = parse_env_opt_addr("HOOKFLASH_SIP_UDP", &v)?;
        }
        if let Some(v) = get("HOOKFLASH_SIP_TCP")? {
            self.sip.tcp = parse_env_opt_addr("HOOKFLASH_SIP_TCP", &v)?;
        }
        if let Some(v) = get("HOOKFLASH_SIP_TLS")? {
            self.sip.tls = parse_env_opt_addr("HOOKFLASH_SIP_TLS", &v)?;
        }
        if let Some(v) = get("HOOKFLASH_SIP_TLS_CERT")? {
            self.sip.tls_cert = (!v.trim().is_empty()).then(|| PathBuf::from(v.trim()));
        }
        if let Some(v) = get("HOOKFLASH_SIP_TLS_KEY")? {
            self.sip.tls_key = (!v.trim().is_empty()).then(|| PathBuf::from(v.trim()));
        }
        if let Some(v) = get("HOOKFLASH_HTTP_TLS_CERT")? {
            self.http.tls_cert = (!v.trim().is_empty()).then(|| PathBuf::from(v.trim()));
        }
        if let Some(v) = get("HOOKFLASH_HTTP_TLS_KEY")? {
            self.http.tls_key = (!v.trim().is_empty()).then(|| PathBuf::from(v.trim()));
        }
        if let Some(v) = get("HOOKFLASH_SIP_ADVERTISED_HOST")? {
            let v = v.trim();
            self.sip.advertised_host = (!v.is_empty()).then(|| v.to_string());
        }
        if let Some(v) = get("HOOKFLASH_SIP_RING_TIMEOUT_SECS")? {
            self.sip.ring_timeout_secs =
                parse_env("HOOKFLASH_SIP_RING_TIMEOUT_SECS", &v, "a number of seconds")?;
        }
        if let Some(v) = get("HOOKFLASH_SIP_DIGEST_ALGORITHMS")? {
            self.sip.digest_algorithms = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
        }
        if let Some(v) = get("HOOKFLASH_SIP_SESSION_MIN_SE_SECS")? {
            self.sip.session_min_se_secs = parse_env(
                "HOOKFLASH_SIP_SESSION_MIN_SE_SECS",
                &v,
                "a number of seconds",
            )?;
        }
        if let Some(v) = get("HOOKFLASH_SIP_SESSION_EXPIRES_SECS")? {
            self.sip.session_expires_secs = Some(parse_env(
                "HOOKFLASH_SIP_SESSION_EXPIRES_SECS",
                &v,
                "a number of seconds",
            )?);
        }
        if let Some(v) = get("HOOKFLASH_REGISTRAR_MIN_EXPIRES")? {
            self.registrar.min_expires =
                parse_env("HOOKFLASH_REGISTRAR_MIN_EXPIRES", &v, "a number of seconds")?;
        }
        if let Some(v) = get("HOOKFLASH_REGISTRAR_MAX_EXPIRES")? {
            self.registrar.max_expires =
                parse_env("HOOKFLASH_REGISTRAR_MAX_EXPIRES", &v, "a number of seconds")?;
        }
        if let Some(v) = get("HOOKFLASH_REGISTRAR_DEFAULT_EXPIRES")? {
            self.registrar.default_expires = parse_env(
                "HOOKFLASH_REGISTRAR_DEFAULT_EXPIRES",
                &v,
                "a number of seconds",
            )?;
        }
        if let Some(v) = get("HOOKFLASH_HTTP_LISTEN")? {
            self.http.listen = parse_env(
                "HOOKFLASH_HTTP_LISTEN",
                &v,
                "an address like 127.0.0.1:8080",
            )?;
        }
        if let Some(v) = get("HOOKFLASH_RTP_BIND_IP")? {
            self.rtp.bind_ip = parse_env_ip("HOOKFLASH_RTP_BIND_IP", &v)?;
        }
        if let Some(v) = get("HOOKFLASH_RTP_ADVERTISED_IP")? {
            self.rtp.advertised_ip = if v.trim().is_empty() {
                None
            } else {
                Some(parse_env_ip("HOOKFLASH_RTP_ADVERTISED_IP", &v)?)
            };
        }
        if let Some(v) = get("HOOKFLASH_RTP_PORT_MIN")? {
            self.rtp.port_min = parse_env("HOOKFLASH_RTP_PORT_MIN", &v, "a port number")?;
        }
        if let Some(v) = get("HOOKFLASH_RTP_PORT_MAX")? {
            self.rtp.port_max = parse_env("HOOKFLASH_RTP_PORT_MAX", &v, "a port number")?;
        }
        if let Some(v) = get("HOOKFLASH_RTP_MUSIC_ON_HOLD")? {
            self.rtp.music_on_hold = (!v.trim().is_empty()).then(|| PathBuf::from(v.trim()));
        }
        if let Some(v) = get("HOOKFLASH_RTP_RELAY_THREADS")? {
            self.rtp.relay_threads =
                parse_env("HOOKFLASH_RTP_RELAY_THREADS", &v, "a number of threads")?;
        }
        if let Some(v) = get("HOOKFLASH_RTP_RELAY_PACE_US")? {
            self.rtp.relay_pace_us = parse_env(
                "HOOKFLASH_RTP_RELAY_PACE_US",
                &v,
                "a number of microseconds",
            )?;
        }
        if let Some(v) = get("HOOKFLASH_SECURITY_FLOOD_MAX_REQUESTS")? {
            self.security.flood_max_requests = parse_env(
                "HOOKFLASH_SECURITY_FLOOD_MAX_REQUESTS",
                &v,
                "a number of requests",
            )?;
        }
        if let Some(v) = get("HOOKFLASH_SECURITY_FLOOD_WINDOW_MS")? {
            self.security.flood_window_ms = parse_env(
                "HOOKFLASH_SECURITY_FLOOD_WINDOW_MS",
                &v,
                "a number of milliseconds",
            )?;
        }
        if let Some(v) = get("HOOKFLASH_SECURITY_FLOOD_BAN_SECS")? {
            self.security.flood_ban_secs = parse_env(
                "HOOKFLASH_SECURITY_FLOOD_BAN_SECS",
                &v,
                "a number of seconds",
            )?;
        }
        if let Some(v) = get("HOOKFLASH_SIP_TRUSTED_PROXIES")? {
            self.sip.trusted_proxies = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    TrustedProxy::parse(s).ok_or_else(|| {
                        env_err(
                            "HOOKFLASH_SIP_TRUSTED_PROXIES",
                            format!("expected an IP address or address:port, got {s:?}"),
                        )
                    })
                })
                .collect::<Result<_, _>>()?;
        }
        if let Some(v) = get("HOOKFLASH_SECURITY_FLOOD_ALLOW")? {
            self.security.flood_allow = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| parse_env_ip("HOOKFLASH_SECURITY_FLOOD_ALLOW", s))
                .collect::<Result<_, _>>()?;
        }
        if let Some(v) = get("HOOKFLASH_SECURITY_TCP_PER_SOURCE")? {
            self.security.tcp_per_source = parse_env(
                "HOOKFLASH_SECURITY_TCP_PER_SOURCE",
                &v,
                "a number of connections",
            )?;
        }
        if let Some(v) = get("HOOKFLASH_SECURITY_TCP_MAX_CONNECTIONS")? {
            self.security.tcp_max_connections = parse_env(
                "HOOKFLASH_SECURITY_TCP_MAX_CONNECTIONS",
                &v,
                "a number of connections",
            )?;
        }
        if let Some(v) = get("HOOKFLASH_SECURITY_TCP_FIRST_MESSAGE_SECS")? {
            self.security.tcp_first_message_secs = parse_env(
                "HOOKFLASH_SECURITY_TCP_FIRST_MESSAGE_SECS",
                &v,
                "a number of seconds",
            )?;
        }
        if let Some(v) = get("HOOKFLASH_SECURITY_FETCH_PRIVATE")? {
            self.security.fetch_private = parse_env_bool("HOOKFLASH_SECURITY_FETCH_PRIVATE", &v)?;
        }
        if let Some(v) = get("HOOKFLASH_SECURITY_OUTSIDE_REFER")? {
            self.security.outside_refer = match v.trim() {
                "deny" => OutsideRefer::Deny,
                "extensions" => OutsideRefer::Extensions,
                other => {
                    return Err(env_err(
                        "HOOKFLASH_SECURITY_OUTSIDE_REFER",
                        format!("expected deny or extensions, got {other:?}"),
                    ))
                }
            };
        }
        if let Some(v) = get("HOOKFLASH_RTP_INACTIVITY_TIMEOUT_SECS")? {
            self.rtp.inactivity_timeout_secs = parse_env(
                "HOOKFLASH_RTP_INACTIVITY_TIMEOUT_SECS",
                &v,
                "a number of seconds",
            )?;
        }
        Ok(())
    }

    /// Checks the configuration for mistakes that would make the server misbehave.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |msg: String| Err(ConfigError::Invalid(msg));

        if self.data_dir.as_os_str().is_empty() {
            return invalid("data_dir must not be empty".into());
        }
        let o = &self.oauth;
        if !(60..=86_400).contains(&o.access_token_ttl_secs) {
            return invalid("oauth.access_token_ttl_secs must be 60-86400".into());
        }
        if !(o.access_token_ttl_secs..=31_536_000).contains(&o.refresh_token_ttl_secs) {
            return invalid(
                "oauth.refresh_token_ttl_secs must be at least the access token's and at most 31536000"
                    .into(),
            );
        }
        if !(1..=3650).contains(&o.jwt_credential_max_days) {
            return invalid("oauth.jwt_credential_max_days must be 1-3650".into());
        }
        let c = &self.cluster;
        if c.node_id.is_empty()
            || c.node_id.len() > 64
            || !c
                .node_id
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '.' | '_' | '-'))
        {
            return invalid("cluster.node_id must be 1-64 characters from [A-Za-z0-9._-]".into());
        }
        if let Some(url) = &c.nats_url {
            if !url.starts_with("nats://") || url.len() <= "nats://".len() {
                return invalid(format!(
                    "cluster.nats_url must be nats://host:port, got {url:?}"
                ));
            }
        }
        if !(1..=60).contains(&c.heartbeat_secs) {
            return invalid("cluster.heartbeat_secs must be 1-60".into());
        }
        if c.node_dead_after_secs < 3 * c.heartbeat_secs || c.node_dead_after_secs > 600 {
            return invalid(
                "cluster.node_dead_after_secs must be at least 3 heartbeats and at most 600".into(),
            );
        }

        // Binding outside loopback exposes the server: require an explicit opt-in.
        if !self.allow_public_bind {
            let binds = [
                ("sip.udp", self.sip.udp.map(|a| a.ip())),
                ("sip.tcp", self.sip.tcp.map(|a| a.ip())),
                ("sip.tls", self.sip.tls.map(|a| a.ip())),
                ("http.listen", Some(self.http.listen.ip())),
                ("rtp.bind_ip", Some(self.rtp.bind_ip)),
            ];
            for (key, ip) in binds {
                if let Some(ip) = ip {
                    if !ip.is_loopback() {
                        return invalid(format!(
                            "{key} = {ip} is not a loopback address; set allow_public_bind = true \
                             (or HOOKFLASH_ALLOW_PUBLIC_BIND=true) to listen on it"
                        ));
                    }
                }
            }
        }

        if !(100..=10_000).contains(&self.http.push_answer_timeout_ms) {
            return invalid("http.push_answer_timeout_ms must be 100-10000".into());
        }

        // RFC 4028 §5: Min-SE is at least 90 s.
        if self.sip.session_min_se_secs < 90 {
            return invalid("sip.session_min_se_secs must be at least 90 (RFC 4028)".into());
        }
        if let Some(se) = self.sip.session_expires_secs {
            if se < self.sip.session_min_se_secs || se > 86_400 {
                return invalid(format!(
                    "sip.session_expires_secs must be from sip.session_min_se_secs ({}) to 86400",
                    self.sip.session_min_se_secs
                ));
            }
        }

        // Security
        if self.security.tcp_per_source == 0
            || self.security.tcp_max_connections == 0
            || self.security.tcp_first_message_secs == 0
        {
            return invalid(
                "security.tcp_per_source, tcp_max_connections and tcp_first_message_secs must \
                 be at least 1"
                    .into(),
            );
        }
        if self.security.flood_max_requests > 0 && self.security.flood_window_ms == 0 {
            return invalid("security.flood_window_ms must be at least 1".into());
        }
        for p in &self.security.premium_prefixes {
            let digits = p.strip_prefix('+').unwrap_or("");
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return invalid(format!(
                    "security.premium_prefixes: {p:?} is not an E.164 prefix like \"+1900\""
                ));
            }
        }

        // TLS: a listener needs its certificate and key; HTTPS needs both or neither.
        if self.sip.tls.is_some() && (self.sip.tls_cert.is_none() || self.sip.tls_key.is_none()) {
            return invalid("sip.tls needs sip.tls_cert and sip.tls_key (PEM files)".into());
        }
        if self.http.tls_cert.is_some() != self.http.tls_key.is_some() {
            return invalid("http.tls_cert and http.tls_key go together".into());
        }

        // SIP
        let sip_ip = match (self.sip.udp, self.sip.tcp) {
            (None, None) => {
                return invalid("sip.udp and sip.tcp are both disabled; enable at least one".into())
            }
            (Some(a), _) | (None, Some(a)) => a.ip(),
        };
        match &self.sip.advertised_host {
            Some(h) if h.chars().any(|c| c.is_whitespace() || c == '/' || c == '@') => {
                return invalid(format!(
                    "sip.advertised_host {h:?} is not a host name or IP"
                ));
            }
            None if sip_ip.is_unspecified() => {
                return invalid(format!(
                    "sip listens on the unspecified address {sip_ip}; set sip.advertised_host \
                     to the address phones should reach"
                ));
            }
            _ => {}
        }
        if self.sip.ring_timeout_secs == 0 {
            return invalid("sip.ring_timeout_secs must be at least 1".into());
        }
        if self.sip.digest_algorithms.is_empty() {
            return invalid("sip.digest_algorithms must name at least one algorithm".into());
        }
        let mut seen = HashSet::new();
        for a in &self.sip.digest_algorithms {
            let Some(alg) = DigestAlgorithm::parse(a) else {
                return invalid(format!(
                    "sip.digest_algorithms: unsupported algorithm {a:?} (supported: \"SHA-256\", \"MD5\")"
                ));
            };
            if !seen.insert(alg) {
                return invalid(format!("sip.digest_algorithms: {a:?} is listed twice"));
            }
        }

        // Registrar
        let r = &self.registrar;
        if r.min_expires == 0 {
            return invalid("registrar.min_expires must be at least 1".into());
        }
        if !(r.min_expires <= r.default_expires && r.default_expires <= r.max_expires) {
            return invalid(format!(
                "registrar: need min_expires <= default_expires <= max_expires, got {} / {} / {}",
                r.min_expires, r.default_expires, r.max_expires
            ));
        }

        // RTP
        let rtp = &self.rtp;
        if rtp.port_min == 0 {
            return invalid("rtp.port_min must not be 0".into());
        }
        if rtp.port_min >= rtp.port_max {
            return invalid(format!(
                "rtp.port_min ({}) must be below rtp.port_max ({})",
                rtp.port_min, rtp.port_max
            ));
        }
        // RTP takes an even port and RTCP the next odd one: the range must hold one such pair.
        let first_even = u32::from(rtp.port_min) + u32::from(rtp.port_min % 2);
        if first_even + 1 > u32::from(rtp.port_max) {
            return invalid(format!(
                "rtp port range {}-{} holds no even/odd port pair for RTP/RTCP",
                rtp.port_min, rtp.port_max
            ));
        }
        if rtp.bind_ip.is_unspecified() && rtp.advertised_ip.is_none() {
            return invalid(format!(
                "rtp.bind_ip is the unspecified address {}; set rtp.advertised_ip to the address \
                 phones should send RTP to",
                rtp.bind_ip
            ));
        }
        if let Some(ip) = rtp.advertised_ip {
            if ip.is_unspecified() {
                return invalid("rtp.advertised_ip must not be the unspecified address".into());
            }
        }
        if rtp.inactivity_timeout_secs == 0 {
            return invalid("rtp.inactivity_timeout_secs must be at least 1".into());
        }
        if rtp.relay_pace_us > 20_000 {
            return invalid(
                "rtp.relay_pace_us must be at most 20000 (one RTP packet interval)".into(),
            );
        }
        if rtp.relay_threads > 256 {
            return invalid("rtp.relay_threads must be at most 256".into());
        }

        self.validate_accounts()
    }

    fn validate_accounts(&self) -> Result<(), ConfigError> {
        let invalid = |msg: String| Err(ConfigError::Invalid(msg));
        let mut names = HashSet::new();
        let mut realms = HashSet::new();
        // Digits of every configured number -> what it is routed to (for the messages).
        let mut dids: HashMap<String, String> = HashMap::new();
        let mut oauth_clients = HashSet::new();
        for a in &self.accounts {
            if let Err(e) = check_name("accounts.name", &a.name) {
                return invalid(e);
            }
            if !names.insert(a.name.as_str()) {
                return invalid(format!("account {:?} is defined twice", a.name));
            }
            let realm = a.effective_realm();
            if let Err(e) = check_name("accounts.realm", realm) {
                return invalid(e);
            }
            if !realms.insert(realm) {
                return invalid(format!("realm {realm:?} is used by two accounts"));
            }
            if let Some(cc) = &a.country_code {
                if let Err(e) = check_country_code(cc) {
                    return invalid(format!("account {:?}: {e}", a.name));
                }
            }
            for k in &a.api_keys {
                if k.is_empty() || k.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    // Never echo the key itself.
                    return invalid(format!(
                        "account {:?}: api_keys must be non-empty and without whitespace",
                        a.name
                    ));
                }
            }
            let mut exts = HashSet::new();
            for u in &a.users {
                if let Err(e) = check_extension(&u.extension) {
                    return invalid(format!("account {:?}: {e}", a.name));
                }
                if !exts.insert(u.extension.as_str()) {
                    return invalid(format!(
                        "account {:?}: user {:?} is defined twice",
                        a.name, u.extension
                    ));
                }
                if u.password.is_empty() {
                    return invalid(format!(
                        "account {:?}: user {:?} has an empty password",
                        a.name, u.extension
                    ));
                }
                if let Some(url) = &u.webhook_url {
                    if let Err(e) = check_webhook_url(url) {
                        return invalid(format!(
                            "account {:?}: user {:?}: {e}",
                            a.name, u.extension
                        ));
                    }
                }
            }
            for n in &a.numbers {
                let Some(digits) = number_digits(&n.number) else {
                    return invalid(format!(
                        "account {:?}: number {:?} is not a phone number (digits with an optional leading '+')",
                        a.name, n.number
                    ));
                };
                if let Err(e) = check_extension(&n.user) {
                    return invalid(format!("account {:?}: number {:?}: {e}", a.name, n.number));
                }
                if dids
                    .insert(digits, format!("user {:?} of account {:?}", n.user, a.name))
                    .is_some()
                {
                    return invalid(format!("number {:?} is defined twice", n.number));
                }
            }
            for o in &a.oauth_apps {
                for (key, value) in [
                    ("client_id", &o.client_id),
                    ("client_secret", &o.client_secret),
                ] {
                    if value.is_empty()
                        || value.len() > 200
                        || value.chars().any(|c| c.is_whitespace() || c.is_control())
                    {
                        // Never echo the secret itself.
                        return invalid(format!(
                            "account {:?}: oauth_apps {key} must be 1-200 characters without whitespace",
                            a.name
                        ));
                    }
                }
                if !oauth_clients.insert(o.client_id.as_str()) {
                    return invalid(format!(
                        "oauth_apps client_id {:?} is defined twice",
                        o.client_id
                    ));
                }
            }
            let mut apps = HashSet::new();
            for app in &a.applications {
                if let Err(e) = check_name("application name", &app.name) {
                    return invalid(format!("account {:?}: {e}", a.name));
                }
                if !apps.insert(app.name.trim()) {
                    return invalid(format!(
                        "account {:?}: application {:?} is defined twice",
                        a.name, app.name
                    ));
                }
                let hooks = [
                    ("call_hook", Some(&app.call_hook)),
                    ("call_status_hook", app.call_status_hook.as_ref()),
                    ("fallback", app.fallback.as_ref()),
                ];
                for (key, hook) in hooks {
                    if let Some(hook) = hook {
                        if let Err(e) = hook.check(&format!("application {:?}: {key}", app.name)) {
                            return invalid(format!("account {:?}: {e}", a.name));
                        }
                    }
                }
                for number in &app.numbers {
                    let Some(digits) = number_digits(number) else {
                        return invalid(format!(
                            "account {:?}: application {:?}: number {number:?} is not a phone \
                             number (digits with an optional leading '+')",
                            a.name, app.name
                        ));
                    };
                    let owner = format!("application {:?} of account {:?}", app.name, a.name);
                    if let Some(other) = dids.insert(digits, owner.clone()) {
                        return invalid(if other == owner {
                            format!("number {number:?} is listed twice for {owner}")
                        } else {
                            format!("number {number:?} is routed both to {other} and to {owner}")
                        });
                    }
                }
            }
            let mut trunks = HashSet::new();
            for t in &a.trunks {
                if let Err(e) = t.check() {
                    return invalid(format!("account {:?}: {e}", a.name));
                }
                if !trunks.insert(t.name.as_str()) {
                    return invalid(format!(
                        "account {:?}: trunk {:?} is defined twice",
                        a.name, t.name
                    ));
                }
            }
        }
        Ok(())
    }

    /// The host to put into Contact/Via: `sip.advertised_host`, else the UDP (else TCP) listen
    /// IP. Returned without brackets; callers bracket IPv6 literals when building URIs.
    pub fn sip_advertised_host(&self) -> String {
        if let Some(h) = &self.sip.advertised_host {
            let h = h.trim();
            return h
                .strip_prefix('[')
                .and_then(|s| s.strip_suffix(']'))
                .unwrap_or(h)
                .to_string();
        }
        self.sip
            .udp
            .or(self.sip.tcp)
            .map(|a| a.ip())
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
            .to_string()
    }

    /// The IP written into SDP `c=` lines: `rtp.advertised_ip`, else `rtp.bind_ip`.
    pub fn rtp_advertised_ip(&self) -> IpAddr {
        self.rtp.advertised_ip.unwrap_or(self.rtp.bind_ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Result<Option<String>, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| Ok(map.get(k).cloned())
    }

    fn no_env(_: &str) -> Result<Option<String>, ConfigError> {
        Ok(None)
    }

    fn temp_file(name: &str, text: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("hookflash-config-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// The TOML block of docs/config.md, the contract other tools generate.
    fn doc_example() -> String {
        let doc = include_str!("../../../docs/config.md");
        let start = doc.find("```toml\n").unwrap() + "```toml\n".len();
        let end = start + doc[start..].find("```").unwrap();
        doc[start..end].to_string()
    }

    #[test]
    fn defaults_are_zero_config_loopback() {
        let c = Config::load_with_env(None, no_env).unwrap();
        c.validate().unwrap();
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert!(c.demo_account);
        assert!(!c.allow_public_bind);
        assert_eq!(c.sip.udp, Some("127.0.0.1:5060".parse().unwrap()));
        assert_eq!(c.sip.tcp, Some("127.0.0.1:5060".parse().unwrap()));
        assert_eq!(c.sip.digest_algorithms, vec!["SHA-256", "MD5"]);
        assert_eq!(
            c.sip.digest_algorithms(),
            vec![DigestAlgorithm::Sha256, DigestAlgorithm::Md5]
        );
        assert_eq!(c.http.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!((c.rtp.port_min, c.rtp.port_max), (20000, 29999));
        assert_eq!(c.sip_advertised_host(), "127.0.0.1");
        assert_eq!(
            c.rtp_advertised_ip(),
            "127.0.0.1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn push_answer_timeout_is_bounded() {
        let c = Config::from_toml_str("").unwrap();
        assert_eq!(c.http.push_answer_timeout_ms, PUSH_ANSWER_TIMEOUT_MS);
        let mut c = Config::from_toml_str("[http]\npush_answer_timeout_ms = 1000\n").unwrap();
        assert_eq!(c.http.push_answer_timeout_ms, 1000);
        c.validate().unwrap();
        for bad in [0, 99, 10_001] {
            c.http.push_answer_timeout_ms = bad;
            assert!(c.validate().is_err(), "{bad}");
        }
    }

    #[test]
    fn docs_example_parses_and_validates() {
        let c = Config::from_toml_str(&doc_example()).unwrap();
        c.validate().unwrap();
        assert_eq!(c.accounts.len(), 1);
        let a = &c.accounts[0];
        assert_eq!(a.name, "acme");
        assert_eq!(a.effective_realm(), "acme.local");
        assert_eq!(a.api_keys, vec!["hf_test_key_acme"]);
        assert_eq!(a.users[0].extension, "201");
        assert_eq!(a.users[0].display_name.as_deref(), Some("Alice"));
        assert_eq!(a.users[0].voicemail, Some(true));
        assert_eq!(a.country_code.as_deref(), Some("49"));
        assert_eq!(a.dial, Some(vec![DialClass::Internal, DialClass::National]));
        assert_eq!(a.outside_sessions, Some(false));
        assert_eq!(
            (a.max_outbound_calls, a.outbound_calls_per_minute),
            (Some(20), Some(60))
        );
        assert_eq!(
            a.users[0].dial,
            Some(vec![DialClass::Internal, DialClass::National])
        );
        assert_eq!(a.numbers[0].number, "+4930123456");
        assert_eq!(a.trunks[0].port, 5080);
        assert_eq!(a.trunks[0].password.as_deref(), Some("pw"));
        assert_eq!(c.sip.ring_timeout_secs, 60);
        let app = &a.applications[0];
        assert_eq!(app.name, "ivr");
        assert_eq!(
            app.call_hook,
            HookSpec {
                url: "http://127.0.0.1:9100/call".into(),
                method: HookMethod::Post,
                username: None,
                password: None,
            }
        );
        let status = app.call_status_hook.as_ref().unwrap();
        assert_eq!(status.method, HookMethod::Get);
        assert_eq!(status.username.as_deref(), Some("hf"));
        assert_eq!(status.password.as_deref(), Some("hookpw"));
        assert_eq!(
            app.fallback.as_ref().map(|h| h.url.as_str()),
            Some("http://127.0.0.1:9101/call")
        );
        assert_eq!(app.numbers, vec!["+4930123457"]);
    }

    #[test]
    fn application_hooks_parse_as_url_or_table() {
        let text = "[[accounts]]\nname = \"a\"\n[[accounts.applications]]\nname = \"x\"\n\
                    call_hook = { url = \"https://app.example/call\", method = \"get\" }\n";
        let c = Config::from_toml_str(text).unwrap();
        c.validate().unwrap();
        let app = &c.accounts[0].applications[0];
        assert_eq!(app.call_hook.method, HookMethod::Get);
        assert_eq!(app.call_status_hook, None);
        assert!(app.numbers.is_empty());
        assert_eq!(app.language, AppLanguage::Jambonz);
        let base = "[[accounts]]\nname = \"a\"\n[[accounts.applications]]\nname = \"x\"\n";
        let c = Config::from_toml_str(&format!(
            "{base}call_hook = \"http://h/\"\nlanguage = \"RCML\"\n"
        ))
        .unwrap();
        assert_eq!(c.accounts[0].applications[0].language, AppLanguage::Rcml);
        let err = Config::from_toml_str(&format!(
            "{base}call_hook = \"http://h/\"\nlanguage = \"twiml\"\n"
        ))
        .unwrap_err();
        assert!(err.to_string().contains("twiml"), "{err}");
        // A table with an unknown key, a bad method, a number as a hook: parse errors.
        let base = "[[accounts]]\nname = \"a\"\n[[accounts.applications]]\nname = \"x\"\n";
        let err = Config::from_toml_str(&format!(
            "{base}call_hook = {{ url = \"http://h/\", methd = \"GET\" }}\n"
        ))
        .unwrap_err();
        assert!(err.to_string().contains("methd"), "{err}");
        let err = Config::from_toml_str(&format!(
            "{base}call_hook = {{ url = \"http://h/\", method = \"PUT\" }}\n"
        ))
        .unwrap_err();
        assert!(err.to_string().contains("PUT"), "{err}");
        assert!(Config::from_toml_str(&format!("{base}call_hook = 5\n")).is_err());
        assert!(
            Config::from_toml_str(base).is_err(),
            "call_hook is required"
        );
    }

    #[test]
    fn application_specs_are_checked() {
        let base = "[[accounts]]\nname = \"a\"\n\
                    [[accounts.users]]\nextension = \"201\"\npassword = \"p\"\n\
                    [[accounts.numbers]]\nnumber = \"+4930123456\"\nuser = \"201\"\n";
        let app = |name: &str, extra: &str| {
            format!(
                "[[accounts.applications]]\nname = \"{name}\"\n\
                 call_hook = \"http://127.0.0.1:9/call\"\n{extra}"
            )
        };
        let check = |extra: &str| {
            Config::from_toml_str(&format!("{base}{extra}"))
                .unwrap()
                .validate()
        };
        let msg = |extra: &str| check(extra).unwrap_err().to_string();
        assert!(check(&app("ivr", "numbers = [\"+4930123457\"]\n")).is_ok());

        let e = msg(&app("ivr", "call_status_hook = \"ftp://x\"\n"));
        assert!(e.contains("call_status_hook") && e.contains("ivr"), "{e}");
        let e = msg(&app("ivr", "fallback = \"not a url\"\n"));
        assert!(e.contains("fallback"), "{e}");
        let e = msg("[[accounts.applications]]\nname = \"ivr\"\ncall_hook = \"127.0.0.1/call\"\n");
        assert!(e.contains("call_hook"), "{e}");
        let e = msg(&app(
            "ivr",
            "call_status_hook = { url = \"http://h/s\", password = \"p\" }\n",
        ));
        assert!(e.contains("username"), "{e}");
        let e = msg(&format!("{}{}", app("ivr", ""), app("ivr", "")));
        assert!(e.contains("\"ivr\" is defined twice"), "{e}");
        assert!(check(&app(" ", "")).is_err(), "empty name");

        // A number on a user and on an application.
        let e = msg(&app("ivr", "numbers = [\"4930123456\"]\n"));
        assert!(
            e.contains("user \"201\"") && e.contains("application \"ivr\""),
            "{e}"
        );
        // On two applications, twice on one, or not a number.
        let e = msg(&format!(
            "{}{}",
            app("a1", "numbers = [\"+49301\"]\n"),
            app("a2", "numbers = [\"+49 301\"]\n")
        ));
        assert!(e.contains("a1") && e.contains("a2"), "{e}");
        let e = msg(&app("ivr", "numbers = [\"+49301\", \"49301\"]\n"));
        assert!(e.contains("twice"), "{e}");
        let e = msg(&app("ivr", "numbers = [\"sip:x\"]\n"));
        assert!(e.contains("not a phone number"), "{e}");
        // Across accounts too.
        let e = msg(&format!(
            "{}[[accounts]]\nname = \"b\"\n{}",
            app("ivr", "numbers = [\"+49301\"]\n"),
            app("ivr", "numbers = [\"+49301\"]\n")
        ));
        assert!(e.contains("account \"b\""), "{e}");
    }

    #[test]
    fn shipped_example_file_parses_and_validates() {
        let text = include_str!("../../../config/hookflash.example.toml");
        let c = Config::from_toml_str(text).unwrap();
        c.validate().unwrap();
        assert!(!c.accounts.is_empty());
    }

    #[test]
    fn unknown_keys_are_errors() {
        let err = Config::from_toml_str("[sip]\nudpp = \"127.0.0.1:5060\"\n").unwrap_err();
        assert!(err.to_string().contains("udpp"), "{err}");
        assert!(Config::from_toml_str("data_dri = \"x\"\n").is_err());
        assert!(Config::from_toml_str(
            "[[accounts]]\nname = \"a\"\n[[accounts.users]]\nextension = \"1\"\npasword = \"x\"\n"
        )
        .is_err());
    }

    #[test]
    fn security_section_from_file_env_and_its_checks() {
        let c = Config::default();
        assert_eq!(c.security.flood_max_requests, 200);
        assert_eq!(c.security.outside_refer, OutsideRefer::Deny);
        assert!(c.security.premium_prefixes.iter().any(|p| p == "+49900"));
        let c = Config::from_toml_str(
            "[security]\nflood_max_requests = 0\noutside_refer = \"extensions\"\n\
             premium_prefixes = [\"+4969\"]\nflood_allow = [\"127.0.0.9\"]\ntcp_per_source = 4\n",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.security.flood_max_requests, 0);
        assert_eq!(c.security.outside_refer, OutsideRefer::Extensions);
        assert_eq!(c.security.premium_prefixes, vec!["+4969".to_string()]);
        assert_eq!(
            c.security.flood_allow,
            vec!["127.0.0.9".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(c.security.tcp_per_source, 4);
        assert!(Config::from_toml_str("[security]\noutside_refer = \"all\"\n").is_err());
        let bad = Config::from_toml_str("[security]\npremium_prefixes = [\"0900\"]\n").unwrap();
        assert!(matches!(bad.validate(), Err(ConfigError::Invalid(_))));
        let bad = Config::from_toml_str("[security]\ntcp_per_source = 0\n").unwrap();
        assert!(matches!(bad.validate(), Err(ConfigError::Invalid(_))));

        let mut c = Config::default();
        c.apply_env(env_of(&[
            ("HOOKFLASH_SECURITY_FLOOD_MAX_REQUESTS", "50"),
            ("HOOKFLASH_SECURITY_FLOOD_ALLOW", "127.0.0.2, ::1"),
            ("HOOKFLASH_SECURITY_OUTSIDE_REFER", "extensions"),
            ("HOOKFLASH_SECURITY_TCP_MAX_CONNECTIONS", "100"),
        ]))
        .unwrap();
        assert_eq!(c.security.flood_max_requests, 50);
        assert_eq!(c.security.flood_allow.len(), 2);
        assert_eq!(c.security.outside_refer, OutsideRefer::Extensions);
        assert_eq!(c.security.tcp_max_connections, 100);
        let mut c = Config::default();
        assert!(c
            .apply_env(env_of(&[("HOOKFLASH_SECURITY_OUTSIDE_REFER", "maybe")]))
            .is_err());
    }

    #[test]
    fn empty_string_disables_a_transport() {
        let c = Config::from_toml_str("[sip]\nudp = \"\"\n").unwrap();
        assert_eq!(c.sip.udp, None);
        assert!(c.sip.tcp.is_some());
        c.validate().unwrap();
        assert_eq!(c.sip_advertised_host(), "127.0.0.1");
        let both = Config::from_toml_str("[sip]\nudp = \"\"\ntcp = \"\"\n").unwrap();
        assert!(matches!(both.validate(), Err(ConfigError::Invalid(_))));
    }

    #[test]
    fn database_url_from_file_and_env() {
        assert_eq!(Config::default().database_url, None);
        let c =
            Config::from_toml_str("database_url = \"postgres://hf:pw@127.0.0.1:5432/hookflash\"\n")
                .unwrap();
        let url = c.database_url.clone().unwrap();
        assert_eq!(url.as_str(), "postgres://hf:pw@127.0.0.1:5432/hookflash");
        assert!(!format!("{c:?}").contains("pw@"), "{c:?}");
        let err = Config::from_toml_str("database_url = \"sqlite://x.db\"\n").unwrap_err();
        assert!(err.to_string().contains("postgres://"), "{err}");

        let file = temp_file(
            "hf-db.toml",
            "database_url = \"postgres://hf@db.example/hookflash\"\n",
        );
        let to_pg = Config::load_with_env(
            None,
            env_of(&[("HOOKFLASH_DATABASE_URL", "postgresql://hf@127.0.0.1/hf")]),
        )
        .unwrap();
        assert_eq!(
            to_pg.database_url.unwrap().as_str(),
            "postgresql://hf@127.0.0.1/hf"
        );
        // Empty: back to SQLite whatever the file says.
        let to_sqlite =
            Config::load_with_env(Some(&file), env_of(&[("HOOKFLASH_DATABASE_URL", "")])).unwrap();
        assert_eq!(to_sqlite.database_url, None);
        let bad = Config::load_with_env(
            None,
            env_of(&[("HOOKFLASH_DATABASE_URL", "mysql://u:secret@h/d")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            bad.contains("HOOKFLASH_DATABASE_URL") && !bad.contains("secret"),
            "{bad}"
        );
    }

    #[test]
    fn env_overrides_file() {
        let file = temp_file(
            "hf.toml",
            "data_dir = \"/from/file\"\n[http]\nlisten = \"127.0.0.1:9000\"\n[rtp]\nport_min = 30000\nport_max = 30010\n",
        );
        let env = env_of(&[
            ("HOOKFLASH_DATA_DIR", "/from/env"),
            ("HOOKFLASH_SIP_UDP", ""),
            ("HOOKFLASH_SIP_TCP", "127.0.0.1:5070"),
            ("HOOKFLASH_SIP_ADVERTISED_HOST", "pbx.example"),
            ("HOOKFLASH_RTP_PORT_MAX", "30020"),
            ("HOOKFLASH_RTP_ADVERTISED_IP", "[::1]"),
            ("HOOKFLASH_DEMO_ACCOUNT", "false"),
            ("HOOKFLASH_SIP_DIGEST_ALGORITHMS", "MD5"),
            ("HOOKFLASH_REGISTRAR_MIN_EXPIRES", "30"),
        ]);
        let c = Config::load_with_env(Some(&file), env).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/from/env"));
        assert_eq!(c.http.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(c.sip.udp, None);
        assert_eq!(c.sip.tcp, Some("127.0.0.1:5070".parse().unwrap()));
        assert_eq!(c.sip_advertised_host(), "pbx.example");
        assert_eq!((c.rtp.port_min, c.rtp.port_max), (30000, 30020));
        assert_eq!(c.rtp_advertised_ip(), "::1".parse::<IpAddr>().unwrap());
        assert!(!c.demo_account);
        assert_eq!(c.sip.digest_algorithms, vec!["MD5"]);
        assert_eq!(c.registrar.min_expires, 30);
        c.validate().unwrap();
    }

    #[test]
    fn relay_threads_and_pace_from_file_and_env_and_their_bounds() {
        let c = Config::from_toml_str("").unwrap();
        assert_eq!((c.rtp.relay_threads, c.rtp.relay_pace_us), (0, 1000));
        let file = temp_file("hf.toml", "[rtp]\nrelay_threads = 3\nrelay_pace_us = 500\n");
        let c = Config::load_with_env(Some(&file), no_env).unwrap();
        assert_eq!((c.rtp.relay_threads, c.rtp.relay_pace_us), (3, 500));
        let env = env_of(&[
            ("HOOKFLASH_RTP_RELAY_THREADS", "2"),
            ("HOOKFLASH_RTP_RELAY_PACE_US", "0"),
        ]);
        let c = Config::load_with_env(Some(&file), env).unwrap();
        assert_eq!((c.rtp.relay_threads, c.rtp.relay_pace_us), (2, 0));
        c.validate().unwrap();
        let mut c = Config::from_toml_str("[rtp]\nrelay_pace_us = 20001\n").unwrap();
        assert!(
            c.validate().is_err(),
            "a pace longer than a packet interval"
        );
        c.rtp.relay_pace_us = 20_000;
        c.validate().unwrap();
        c.rtp.relay_threads = 257;
        assert!(c.validate().is_err());
        let err = Config::load_with_env(None, env_of(&[("HOOKFLASH_RTP_RELAY_PACE_US", "-1")]))
            .unwrap_err();
        assert!(
            matches!(&err, ConfigError::Env { var, .. } if var == "HOOKFLASH_RTP_RELAY_PACE_US"),
            "{err}"
        );
    }

    #[test]
    fn hookflash_config_env_names_the_file() {
        let file = temp_file("hf.toml", "demo_account = false\n");
        let path = file.to_string_lossy().to_string();
        let c = Config::load_with_env(None, env_of(&[("HOOKFLASH_CONFIG", &path)])).unwrap();
        assert!(!c.demo_account);
        // An explicit path wins over HOOKFLASH_CONFIG.
        let other = temp_file("other.toml", "demo_account = true\n");
        let c =
            Config::load_with_env(Some(&other), env_of(&[("HOOKFLASH_CONFIG", &path)])).unwrap();
        assert!(c.demo_account);
    }

    #[test]
    fn bad_env_values_name_the_variable() {
        let err =
            Config::load_with_env(None, env_of(&[("HOOKFLASH_RTP_PORT_MIN", "lots")])).unwrap_err();
        assert!(
            matches!(&err, ConfigError::Env { var, .. } if var == "HOOKFLASH_RTP_PORT_MIN"),
            "{err}"
        );
        assert!(
            Config::load_with_env(None, env_of(&[("HOOKFLASH_ALLOW_PUBLIC_BIND", "maybe")]))
                .is_err()
        );
        assert!(Config::load_with_env(None, env_of(&[("HOOKFLASH_HTTP_LISTEN", "8080")])).is_err());
    }

    #[test]
    fn missing_or_broken_file_is_an_error() {
        let err = Config::load_with_env(Some(Path::new("/nonexistent/hookflash.toml")), no_env)
            .unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }));
        let file = temp_file("broken.toml", "[sip\n");
        let err = Config::load_with_env(Some(&file), no_env).unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }));
    }

    #[test]
    fn public_bind_needs_opt_in() {
        let mut c = Config::from_toml_str("[http]\nlisten = \"0.0.0.0:8080\"\n").unwrap();
        let err = c.validate().unwrap_err();
        assert!(err.to_string().contains("http.listen"), "{err}");
        c.allow_public_bind = true;
        c.validate().unwrap();

        let mut c = Config::from_toml_str(
            "[sip]\nudp = \"192.0.2.10:5060\"\ntcp = \"\"\n[rtp]\nbind_ip = \"192.0.2.10\"\n",
        )
        .unwrap();
        assert!(c.validate().is_err());
        c.allow_public_bind = true;
        c.validate().unwrap();
        assert_eq!(c.sip_advertised_host(), "192.0.2.10");
        assert_eq!(
            c.rtp_advertised_ip(),
            "192.0.2.10".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn unspecified_bind_needs_an_advertised_address() {
        let mut c = Config::from_toml_str(
            "allow_public_bind = true\n[sip]\nudp = \"0.0.0.0:5060\"\ntcp = \"\"\n",
        )
        .unwrap();
        assert!(c.validate().is_err());
        c.sip.advertised_host = Some("203.0.113.5".into());
        c.validate().unwrap();
        c.rtp.bind_ip = "0.0.0.0".parse().unwrap();
        assert!(c.validate().is_err());
        c.rtp.advertised_ip = Some("203.0.113.5".parse().unwrap());
        c.validate().unwrap();
    }

    #[test]
    fn port_range_and_timers_are_checked() {
        let check = |toml: &str| Config::from_toml_str(toml).unwrap().validate();
        assert!(check("[rtp]\nport_min = 20000\nport_max = 20000\n").is_err());
        assert!(check("[rtp]\nport_min = 20001\nport_max = 20002\n").is_err());
        assert!(check("[rtp]\nport_min = 20000\nport_max = 20001\n").is_ok());
        assert!(check("[rtp]\nport_min = 20001\nport_max = 20003\n").is_ok());
        assert!(check("[rtp]\nport_min = 0\nport_max = 20\n").is_err());
        assert!(check("[registrar]\nmin_expires = 600\ndefault_expires = 300\n").is_err());
        assert!(check("[registrar]\nmin_expires = 0\n").is_err());
        assert!(check("[sip]\nring_timeout_secs = 0\n").is_err());
        assert!(check("[sip]\ndigest_algorithms = [\"SHA-512-256\"]\n").is_err());
        assert!(check("[sip]\ndigest_algorithms = []\n").is_err());
        assert!(check("[sip]\ndigest_algorithms = [\"MD5\", \"md5\"]\n").is_err());
        assert!(check("[sip]\ndigest_algorithms = [\"MD5\"]\n").is_ok());
    }

    #[test]
    fn tls_settings_are_checked() {
        let check = |toml: &str| Config::from_toml_str(toml).unwrap().validate();
        assert!(
            check("[sip]\ntls = \"127.0.0.1:5061\"\n").is_err(),
            "no cert/key"
        );
        assert!(check("[sip]\ntls = \"127.0.0.1:5061\"\ntls_cert = \"c.pem\"\n").is_err());
        assert!(check(
            "[sip]\ntls = \"127.0.0.1:5061\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n"
        )
        .is_ok());
        assert!(
            check("[sip]\ntls = \"0.0.0.0:5061\"\ntls_cert = \"c\"\ntls_key = \"k\"\n").is_err(),
            "public bind needs the opt-in"
        );
        assert!(
            check("[http]\ntls_cert = \"c.pem\"\n").is_err(),
            "cert without key"
        );
        assert!(check("[http]\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n").is_ok());
        assert!(
            Config::from_toml_str("[http]\ntls = true\n").is_err(),
            "unknown key"
        );
    }

    #[test]
    fn account_specs_are_checked() {
        let base = "[[accounts]]\nname = \"a\"\n";
        let check = |extra: &str| {
            Config::from_toml_str(&format!("{base}{extra}"))
                .unwrap()
                .validate()
        };
        assert!(check("").is_ok());
        assert!(
            check("[[accounts]]\nname = \"a\"\n").is_err(),
            "duplicate account"
        );
        let user = "[[accounts.users]]\nextension = \"1\"\npassword = \"p\"\n";
        assert!(check(&format!("{user}webhook_url = \"http://127.0.0.1:9/h\"\n")).is_ok());
        assert!(check(&format!("{user}webhook_url = \"ftp://x\"\n")).is_err());
        assert!(check(&format!("{user}voicemail = true\n")).is_ok());
        assert!(check(&format!("{user}voicemail = false\n")).is_ok());
        assert!(Config::from_toml_str(&format!("{base}{user}voicemail = \"yes\"\n")).is_err());
        assert!(
            check("[[accounts]]\nname = \"b\"\nrealm = \"a\"\n").is_err(),
            "duplicate realm"
        );
        assert!(check("[[accounts.users]]\nextension = \"1 1\"\npassword = \"p\"\n").is_err());
        assert!(check("[[accounts.users]]\nextension = \"11\"\npassword = \"\"\n").is_err());
        assert!(check("[[accounts.numbers]]\nnumber = \"abc\"\nuser = \"11\"\n").is_err());
        assert!(check(
            "[[accounts.trunks]]\nname = \"t\"\nhost = \"127.0.0.1\"\ntransport = \"tls\"\n"
        )
        .is_err());
        assert!(check(
            "[[accounts.trunks]]\nname = \"t\"\nhost = \"127.0.0.1\"\nusername = \"u\"\n"
        )
        .is_err());
        assert!(check("api_keys = [\"\"]\n").is_err());
        let ok = Config::from_toml_str(&format!(
            "{base}[[accounts.trunks]]\nname = \"t\"\nhost = \"127.0.0.1\"\n"
        ))
        .unwrap();
        ok.validate().unwrap();
        assert_eq!(ok.accounts[0].trunks[0].port, 5060);
        assert_eq!(ok.accounts[0].trunks[0].transport, "udp");
        assert_eq!(ok.accounts[0].effective_realm(), "a");
    }

    #[test]
    fn dial_permission_keys_parse_and_are_checked() {
        let text = "[[accounts]]\nname = \"a\"\ncountry_code = \"49\"\n\
                    dial = [\"internal\", \"national\", \"premium\"]\noutside_sessions = true\n\
                    max_outbound_calls = 0\noutbound_calls_per_minute = 30\n\
                    [[accounts.users]]\nextension = \"1\"\npassword = \"p\"\ndial = []\n\
                    [[accounts.users]]\nextension = \"2\"\npassword = \"p\"\n";
        let c = Config::from_toml_str(text).unwrap();
        c.validate().unwrap();
        let a = &c.accounts[0];
        assert_eq!(a.country_code.as_deref(), Some("49"));
        assert_eq!(
            a.dial,
            Some(vec![
                DialClass::Internal,
                DialClass::National,
                DialClass::Premium
            ])
        );
        assert_eq!(a.outside_sessions, Some(true));
        assert_eq!(a.max_outbound_calls, Some(0));
        assert_eq!(a.outbound_calls_per_minute, Some(30));
        assert_eq!(a.users[0].dial, Some(vec![]));
        assert_eq!(a.users[1].dial, None);
        let dbg = format!("{c:?}");
        assert!(
            dbg.contains("country_code") && dbg.contains("Premium"),
            "{dbg}"
        );

        // Absent keys stay absent (the store keeps what it has).
        let c = Config::from_toml_str("[[accounts]]\nname = \"a\"\ncountry_code = \"\"\n").unwrap();
        let a = &c.accounts[0];
        assert_eq!(a.country_code, None, "\"\" is not set");
        assert!(a.dial.is_none() && a.outside_sessions.is_none());
        assert!(a.max_outbound_calls.is_none() && a.outbound_calls_per_minute.is_none());

        let base = "[[accounts]]\nname = \"a\"\n";
        for bad in ["+49", "049", "4930", "DE"] {
            let c = Config::from_toml_str(&format!("{base}country_code = \"{bad}\"\n")).unwrap();
            let err = c.validate().unwrap_err();
            assert!(err.to_string().contains("country code"), "{bad}: {err}");
        }
        let err = Config::from_toml_str(&format!("{base}dial = [\"internal\", \"mobile\"]\n"))
            .unwrap_err();
        assert!(err.to_string().contains("mobile"), "{err}");
        assert!(Config::from_toml_str(&format!("{base}dial = \"internal\"\n")).is_err());
        assert!(Config::from_toml_str(&format!("{base}max_outbound_calls = -1\n")).is_err());
        assert!(Config::from_toml_str(&format!("{base}outside_sessions = \"yes\"\n")).is_err());
    }

    #[test]
    fn trusted_proxies_are_addresses_with_or_without_port() {
        let c = Config::from_toml_str(
            "[sip]\ntrusted_proxies = [\"127.0.0.1:5070\", \"10.0.0.9\", \"[::1]:5060\"]\n",
        )
        .unwrap();
        assert_eq!(
            c.sip.trusted_proxies,
            vec![
                TrustedProxy::Addr("127.0.0.1:5070".parse().unwrap()),
                TrustedProxy::Ip("10.0.0.9".parse().unwrap()),
                TrustedProxy::Addr("[::1]:5060".parse().unwrap()),
            ]
        );
        assert!(Config::from_toml_str("[sip]\ntrusted_proxies = [\"kamailio\"]\n").is_err());
        let mut c = Config::default();
        let env = |k: &str| -> Result<Option<String>, ConfigError> {
            Ok((k == "HOOKFLASH_SIP_TRUSTED_PROXIES").then(|| "127.0.0.2, 127.0.0.3:9".into()))
        };
        c.apply_env(env).unwrap();
        assert_eq!(
            c.sip.trusted_proxies,
            vec![
                TrustedProxy::Ip("127.0.0.2".parse().unwrap()),
                TrustedProxy::Addr("127.0.0.3:9".parse().unwrap()),
            ]
        );
        let bad = |k: &str| -> Result<Option<String>, ConfigError> {
            Ok((k == "HOOKFLASH_SIP_TRUSTED_PROXIES").then(|| "front".into()))
        };
        assert!(Config::default().apply_env(bad).is_err());
    }

    #[test]
    fn the_deployed_cluster_node_config_is_valid() {
        let c = Config::from_toml_str(include_str!("../../../deploy/hookflash/node.toml"))
            .expect("deploy/hookflash/node.toml parses");
        c.validate().expect("deploy/hookflash/node.toml is valid");
        assert_eq!(c.cluster.node_id, "node1");
        assert_eq!(
            c.sip.trusted_proxies,
            vec![TrustedProxy::Addr("10.0.0.10:5060".parse().unwrap())]
        );
    }

    #[test]
    fn cluster_section_is_read_and_checked() {
        let c = Config::from_toml_str(
            "[cluster]\nnode_id = \"n2\"\nnats_url = \"nats://127.0.0.1:4222\"\n",
        )
        .unwrap();
        assert_eq!(c.cluster.node_id, "n2");
        assert_eq!(c.cluster.nats_url.as_deref(), Some("nats://127.0.0.1:4222"));
        c.validate().unwrap();
        for bad in [
            "[cluster]\nnode_id = \"\"\n",
            "[cluster]\nnode_id = \"a b\"\n",
            "[cluster]\nnats_url = \"http://x\"\n",
            "[cluster]\nheartbeat_secs = 10\nnode_dead_after_secs = 20\n",
        ] {
            let c = Config::from_toml_str(bad).unwrap();
            assert!(
                matches!(c.validate(), Err(ConfigError::Invalid(m)) if m.contains("cluster.")),
                "{bad}"
            );
        }
        let mut c = Config::default();
        let env = |k: &str| -> Result<Option<String>, ConfigError> {
            Ok(match k {
                "HOOKFLASH_CLUSTER_NODE_ID" => Some("n3".into()),
                "HOOKFLASH_CLUSTER_NATS_URL" => Some("".into()),
                _ => None,
            })
        };
        c.apply_env(env).unwrap();
        assert_eq!(c.cluster.node_id, "n3");
        assert_eq!(c.cluster.nats_url, None);
    }

    #[test]
    fn oauth_apps_and_lifetimes_are_validated() {
        let text = "[oauth]\naccess_token_ttl_secs = 600\n[[accounts]]\nname = \"a\"\n\
                    [[accounts.oauth_apps]]\nclient_id = \"cid\"\nclient_secret = \"sec\"\n";
        let c = Config::from_toml_str(text).unwrap();
        c.validate().unwrap();
        assert_eq!(c.oauth.access_token_ttl_secs, 600);
        assert_eq!(c.oauth.refresh_token_ttl_secs, 7 * 24 * 3600);
        assert_eq!(c.accounts[0].oauth_apps[0].client_id, "cid");
        assert!(!format!("{c:?}").contains("sec\""));
        let twice = format!(
            "{text}[[accounts]]\nname = \"b\"\n[[accounts.oauth_apps]]\nclient_id = \"cid\"\nclient_secret = \"x\"\n"
        );
        let e = Config::from_toml_str(&twice)
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("defined twice"), "{e}");
        let spaced = text.replace("\"sec\"", "\"s e c\"");
        let e = Config::from_toml_str(&spaced)
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(!e.to_string().contains("s e c"), "{e}");
        let short = text.replace("600", "5");
        assert!(Config::from_toml_str(&short).unwrap().validate().is_err());
    }

    #[test]
    fn debug_output_redacts_secrets() {
        let c = Config::from_toml_str(&doc_example()).unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("secret201"), "{dbg}");
        assert!(!dbg.contains("hf_test_key_acme"), "{dbg}");
        assert!(!dbg.contains("\"pw\""), "{dbg}");
        assert!(!dbg.contains("hookpw"), "{dbg}");
        assert!(dbg.contains("201") && dbg.contains("carrier"));
    }
}
