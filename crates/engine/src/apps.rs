//! The engine's side of application calls: a call to a number routed to an application is
//! handed to the application runtime as an [`AppCall`] (one channel, taken once by the
//! runtime), and the runtime drives it with the commands here. The runtime lives above the
//! engine (`crates/apps`); the engine knows only application ids.

use std::sync::Mutex;

use tokio::sync::{mpsc, oneshot};

use crate::call::CallCommand;
use crate::control::{AudioSource, CommandError};
use crate::model::CallDirection;
use crate::Engine;

pub use hookflash_media::relay::PlaybackEnd;

/// What happens to a party an application dials into its call (the `dial` verb).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DialEvent {
    /// A dialled party rings (once per party); its leg id.
    Ringing { leg_id: String },
    /// It answered and is connected with the application's caller; its leg id.
    Answered { leg_id: String },
    /// It was not reached (final SIP status); the caller is back with the application.
    Failed { status: u16 },
    /// It answered and has now left (hung up, or was hung up); the caller is back with the
    /// application.
    Completed { duration_secs: u64 },
}

/// What an application asks to dial (the `dial` verb): several targets rung at once, the first
/// to answer connected with the caller.
#[derive(Debug, Clone, Default)]
pub struct AppDialRequest {
    pub targets: Vec<String>,
    /// The number the targets see (one of the account's numbers or extensions; default: the
    /// caller's number).
    pub caller_id: Option<String>,
    pub timeout: std::time::Duration,
    /// Extra SIP headers on every INVITE (checked by [`check_dial_header`]).
    pub headers: Vec<(String, String)>,
    /// jambonz `answerOnBridge`: a caller not answered yet stays unanswered (ringing) until a
    /// target answers, and is then answered and connected at once. An answered caller: no
    /// difference.
    pub answer_on_bridge: bool,
}

/// A party being dialled: its leg id (a child call while it rings, the connected leg's id if
/// it answers) and the target it was dialled as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialChild {
    pub leg_id: String,
    pub target: String,
}

/// A dial that left: the parties rung, and the targets left out with why.
#[derive(Debug)]
pub struct DialPlaced {
    pub children: Vec<DialChild>,
    pub skipped: Vec<(String, CommandError)>,
}

/// Application calls waiting for the runtime before new ones are refused (503).
pub const APP_QUEUE: usize = 1024;

/// A call that entered an application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppCall {
    pub account_id: String,
    pub call_id: String,
    /// The caller's leg: the one the application runs.
    pub leg_id: String,
    pub application_id: String,
    /// The caller's number or extension.
    pub from: String,
    /// The number dialled.
    pub to: String,
    pub caller_name: Option<String>,
    /// The caller's SIP Call-ID.
    pub sip_call_id: String,
    pub direction: CallDirection,
    /// The INVITE's Request-URI and headers (name, value), as received.
    pub request_uri: String,
    pub headers: Vec<(String, String)>,
}

/// The channel application calls travel on.
pub(crate) struct AppChannel {
    tx: mpsc::Sender<AppCall>,
    rx: Mutex<Option<mpsc::Receiver<AppCall>>>,
}

impl AppChannel {
    pub(crate) fn new() -> Self {
        let (tx, rx) = mpsc::channel(APP_QUEUE);
        AppChannel {
            tx,
            rx: Mutex::new(Some(rx)),
        }
    }

    /// A place in the queue, if a runtime listens and the queue has room.
    pub(crate) fn reserve(&self) -> Option<mpsc::Permit<'_, AppCall>> {
        self.tx.try_reserve().ok()
    }

    /// True once the runtime took the receiver (calls to applications are refused before).
    pub(crate) fn has_runtime(&self) -> bool {
        match self.rx.lock() {
            Ok(rx) => rx.is_none() && !self.tx.is_closed(),
            Err(_) => false,
        }
    }
}

impl Engine {
    /// The application calls from now on; the runtime takes this once (None afterwards).
    /// Until it is taken, calls to application numbers are refused with 503.
    pub fn take_app_calls(&self) -> Option<mpsc::Receiver<AppCall>> {
        self.inner.apps.rx.lock().ok().and_then(|mut rx| rx.take())
    }

    /// Answers an application's call (`early`: 183 with SDP, it keeps ringing).
    pub async fn app_answer(
        &self,
        account_id: &str,
        call_id: &str,
        early: bool,
    ) -> Result<(), CommandError> {
        self.send_command(account_id, call_id, |reply| CallCommand::AppAnswer {
            early,
            reply,
        })
        .await
    }

    /// Refuses an application's ringing call with `status` (400-699).
    pub async fn app_decline(
        &self,
        account_id: &str,
        call_id: &str,
        status: u16,
    ) -> Result<(), CommandError> {
        self.send_command(account_id, call_id, |reply| CallCommand::AppDecline {
            status,
            reply,
        })
        .await
    }

    /// Plays to an application's caller (answering first unless `early`); the receiver gets
    /// how it ended. Audio that cannot be fetched or synthesised is an error, nothing plays.
    pub async fn app_play(
        &self,
        account_id: &str,
        call_id: &str,
        source: &AudioSource,
        early: bool,
    ) -> Result<oneshot::Receiver<PlaybackEnd>, CommandError> {
        self.local_call(account_id, call_id)?;
        let pcm = self.resolve_audio(source).await?;
        self.send_command(account_id, call_id, |reply| CallCommand::AppPlay {
            pcm,
            early,
            reply,
        })
        .await
    }

    /// Dials `target` into the application's answered call (its empty side B), connecting it
    /// with the caller when it answers; the target sees `caller_id` (one of the account's
    /// numbers or extensions; default: the caller's number). The caller hears a ringback tone
    /// meanwhile. Progress arrives on `events` (dropped: the call ended). Returns once the
    /// target is being dialled.
    pub async fn app_dial(
        &self,
        account_id: &str,
        call_id: &str,
        target: &str,
        caller_id: Option<String>,
        timeout: std::time::Duration,
        events: mpsc::Sender<DialEvent>,
    ) -> Result<(), CommandError> {
        let request = AppDialRequest {
            targets: vec![target.to_string()],
            caller_id,
            timeout,
            ..AppDialRequest::default()
        };
        self.app_dial_targets(account_id, call_id, request, events)
            .await
            .map(|_| ())
    }

    /// Like [`Engine::app_dial`] for several targets rung at once (the first to answer is
    /// connected, the others get CANCEL), with extra SIP headers on every INVITE and
    /// `answerOnBridge`. Targets that cannot be reached are left out and returned with why; if
    /// none can, the first's error. Each target rung is a child leg with its own id from the
    /// start (listed while it rings; the connected leg keeps it). Headers ride on each fork's
    /// Request-URI as URI headers (RFC 3261 §19.1.5), which the SIP layer turns into message
    /// headers when it sends the INVITE.
    pub async fn app_dial_targets(
        &self,
        account_id: &str,
        call_id: &str,
        request: AppDialRequest,
        events: mpsc::Sender<DialEvent>,
    ) -> Result<DialPlaced, CommandError> {
        self.local_call(account_id, call_id)?;
        let AppDialRequest {
            targets,
            caller_id,
            timeout,
            headers,
            answer_on_bridge,
        } = request;
        if headers.len() > DIAL_HEADERS_MAX || targets.len() > DIAL_TARGETS_MAX {
            return Err(CommandError::Invalid(format!(
                "at most {DIAL_TARGETS_MAX} targets and {DIAL_HEADERS_MAX} headers"
            )));
        }
        for (name, value) in &headers {
            check_dial_header(name, value)?;
        }
        let mut merged: Option<crate::call::TransferTarget> = None;
        let mut children = Vec::new();
        let mut skipped = Vec::new();
        for target in &targets {
            match self.resolve_target(account_id, None, target).await {
                Ok(t) => {
                    children.push(crate::call::DialGroup {
                        child: DialChild {
                            leg_id: uuid::Uuid::now_v7().to_string(),
                            target: t.label.clone(),
                        },
                        forks: t.forks.len(),
                    });
                    match merged.as_mut() {
                        None => merged = Some(t),
                        Some(m) => {
                            m.label = format!("{},{}", m.label, t.label);
                            m.owner = None;
                            m.forks.extend(t.forks);
                        }
                    }
                }
                Err(e) => skipped.push((target.clone(), e)),
            }
        }
        let Some(mut target) = merged else {
            return Err(skipped
                .into_iter()
                .next()
                .map(|(_, e)| e)
                .unwrap_or_else(|| CommandError::BadTarget("no target to dial".into())));
        };
        if !headers.is_empty() {
            let query = uri_headers(&headers);
            for fork in &mut target.forks {
                let sep = if fork.request_uri.contains('?') {
                    '&'
                } else {
                    '?'
                };
                fork.request_uri = format!("{}{sep}{query}", fork.request_uri);
            }
        }
        let caller_id = match caller_id {
            Some(id) => Some(self.own_caller_id(account_id, &id).await?),
            None => None,
        };
        let placed: Vec<DialChild> = children.iter().map(|g| g.child.clone()).collect();
        self.send_command(account_id, call_id, |reply| CallCommand::AppDial {
            target,
            groups: children,
            caller_id,
            timeout,
            answer_on_bridge,
            events,
            reply,
        })
        .await?;
        Ok(DialPlaced {
            children: placed,
            skipped,
        })
    }

    /// Hangs up the party an application dialled (the caller stays with the application).
    pub async fn app_hangup_dialled(
        &self,
        account_id: &str,
        call_id: &str,
    ) -> Result<(), CommandError> {
        self.send_command(account_id, call_id, |reply| CallCommand::AppHangupDialled {
            reply,
        })
        .await
    }

    /// Stops what plays to an application's caller.
    pub async fn app_stop_play(&self, account_id: &str, call_id: &str) -> Result<(), CommandError> {
        self.send_command(account_id, call_id, |reply| CallCommand::AppStopPlay {
            reply,
        })
        .await
    }
}

pub use crate::call::listen::{AppListen, AppStream};
pub use hookflash_media::listen::{ListenFrame, ListenId, StreamFrame};

impl Engine {
    /// Starts tapping an answered application call's audio (both legs, 20 ms frames; at most
    /// `queue_frames` wait for the consumer, more are dropped). One tap per call: a new one
    /// replaces the old.
    pub async fn app_listen_start(
        &self,
        account_id: &str,
        call_id: &str,
        queue_frames: usize,
    ) -> Result<AppListen, CommandError> {
        use crate::call::listen::ListenCommand;
        self.send_command(account_id, call_id, |reply| {
            CallCommand::AppListen(ListenCommand::Start {
                queue_frames,
                reply,
            })
        })
        .await
    }

    /// May an application's media connection (the `listen` WebSocket) go to `addr`? The
    /// audio fetch policy's answer (docs/security.md): never link-local/metadata or the
    /// server's own listeners; private addresses only with `security.fetch_private`.
    pub fn media_connect_allowed(&self, addr: std::net::SocketAddr) -> Result<(), &'static str> {
        self.inner.fetcher.policy().addr_allowed(addr)
    }

    /// Ends tap `id`.
    pub async fn app_listen_stop(
        &self,
        account_id: &str,
        call_id: &str,
        id: ListenId,
    ) -> Result<(), CommandError> {
        use crate::call::listen::ListenCommand;
        self.send_command(account_id, call_id, |reply| {
            CallCommand::AppListen(ListenCommand::Stop { id, reply })
        })
        .await
    }

    /// Pauses (`true`) or resumes the call's running tap: the stream stays, no audio is sent
    /// meanwhile. [`CommandError::Invalid`] when no tap runs.
    pub async fn app_listen_pause(
        &self,
        account_id: &str,
        call_id: &str,
        paused: bool,
    ) -> Result<(), CommandError> {
        use crate::call::listen::ListenCommand;
        self.send_command(account_id, call_id, |reply| {
            CallCommand::AppListen(ListenCommand::Pause { paused, reply })
        })
        .await
    }

    /// Starts a streamed playback to an answered application call's caller (replacing what
    /// plays): frames sent on the returned sender are played every 20 ms, silence while none
    /// are queued; it ends when the sender is dropped or by [`Engine::app_stop_play`].
    pub async fn app_play_stream(
        &self,
        account_id: &str,
        call_id: &str,
        queue_frames: usize,
    ) -> Result<AppStream, CommandError> {
        use crate::call::listen::ListenCommand;
        self.send_command(account_id, call_id, |reply| {
            CallCommand::AppListen(ListenCommand::PlayStream {
                queue_frames,
                reply,
            })
        })
        .await
    }
}

/// Most headers an application may add to a dialled INVITE.
pub const DIAL_HEADERS_MAX: usize = 20;
/// Most targets one application dial rings at once.
pub const DIAL_TARGETS_MAX: usize = 10;

/// Headers the SIP layer owns: an application may not set them on a dialled INVITE.
const RESERVED_HEADERS: &[&str] = &[
    "via",
    "v",
    "from",
    "f",
    "to",
    "t",
    "call-id",
    "i",
    "cseq",
    "contact",
    "m",
    "content-length",
    "l",
    "content-type",
    "c",
    "max-forwards",
    "route",
    "record-route",
    "authorization",
    "proxy-authorization",
    "session-expires",
    "x",
    "supported",
    "k",
    "require",
    "allow",
    "expires",
];

/// A header an application asks for on a dialled INVITE: a token name that is not the SIP
/// layer's own, and a printable value of at most 1024 bytes.
pub fn check_dial_header(name: &str, value: &str) -> Result<(), CommandError> {
    let token = |c: char| c.is_ascii_alphanumeric() || "-.!%*_+`'~".contains(c);
    if name.is_empty() || name.len() > 64 || !name.chars().all(token) {
        return Err(CommandError::Invalid(format!(
            "header name {name:?} is not a SIP token"
        )));
    }
    if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
        return Err(CommandError::Invalid(format!(
            "header {name} is set by the server and cannot be given"
        )));
    }
    if value.len() > 1024 || value.chars().any(|c| c.is_control()) {
        return Err(CommandError::Invalid(format!(
            "header {name}: the value must be printable and at most 1024 bytes"
        )));
    }
    Ok(())
}

/// `name=value&...`, each part percent-encoded beyond the unreserved characters.
fn uri_headers(headers: &[(String, String)]) -> String {
    fn enc(s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b) {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    }
    headers
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod dial_header_tests {
    use super::*;

    #[test]
    fn headers_are_checked_and_encoded() {
        assert!(check_dial_header("X-Customer", "42 a&b=c").is_ok());
        assert!(check_dial_header("Call-ID", "x").is_err());
        assert!(check_dial_header("X Bad", "x").is_err());
        assert!(check_dial_header("X-Ok", "a\r\nVia: x").is_err());
        assert_eq!(
            uri_headers(&[("X-A".into(), "1 2&3=%".into())]),
            "X-A=1%202%263%3D%25"
        );
    }
}
