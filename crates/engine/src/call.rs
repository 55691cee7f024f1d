//! One call: an inbound leg (A, the caller's dialog, where we are UAS) bridged to an outbound
//! leg (B, where we are UAC; several forks while ringing), with both legs' RTP anchored in a
//! media bridge. One task runs [`CallActor::run`] and is the only owner of this state.
//!
//! The actor executes; the call core (`call_core.rs` and its feature machines in
//! `call_core/*.rs`: transfer, park, voicemail, originate, ringing) decides. `call/*.rs` are
//! the actor's execution of each feature, `call/inbound.rs` the set-up of a call that comes
//! in and `call/destination.rs` where a dialled string leads.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use hookflash_media::audio::Pcm8k;
use hookflash_media::g711::Law;
use hookflash_media::relay::{Bridge, BridgeHandle, BridgeOptions, Leg, PlayOptions, PlaybackEnd};
use hookflash_media::sdp::{self, Codec, Direction, OriginState, SessionDescription};
use hookflash_sip::dialog::Credential;
use hookflash_sip::dialog::InviteLeg;
use hookflash_sip::dialog::LegId;
use hookflash_sip::dialog::ServerTransaction;
use hookflash_sip::dialog::{DialogEvent, Ended};
use hookflash_sip::dialog::{InviteOutcome, OutgoingInvite, PendingInvite};
use hookflash_sip::msg::{Header, Request, Response, StatusCode, Transport, Uri};
use hookflash_store::{CallRecord, LegRecord, Trunk};
use tokio::sync::mpsc;
use tracing::{debug, info, warn, Instrument};

use crate::auth::{AuthKind, AuthOutcome};
use crate::control::{CallInfo, CommandError, LegInfo, LegState, RecordAction, Reply, Target};
use crate::dialing::{self, DialClasses, OutboundPermit, Refusal};
use crate::events::{EventDetail, EventKind};
use crate::metrics::CauseLabel;
use crate::model::{
    CallDirection, CallState, EndCause, LegDirection, LegRole, RecordRole, WrongState,
};
use crate::registrar::reply;
use crate::routing::{route, Facts, Origin, Route};
use crate::session_timer::{self, SessionTimer};
use crate::sip_glue::{addr_spec, display_name, header_value, header_values, now_ms, now_unix};
use crate::{CallEntry, Engine};
use hookflash_sip::router::{CallStateReceiver, CallStates};

/// The sending side of a call's command queue. Commands travel boxed: tokio allocates a
/// channel's slots 32 at a time, for as long as the call lasts, and the enum is 136 bytes.
#[derive(Clone, Debug)]
pub struct CommandSender(mpsc::Sender<Box<CallCommand>>);

impl CommandSender {
    /// Resolves once the call's actor has ended.
    pub async fn closed(&self) {
        self.0.closed().await
    }

    pub async fn send(
        &self,
        command: CallCommand,
    ) -> Result<(), mpsc::error::SendError<CallCommand>> {
        self.0
            .send(Box::new(command))
            .await
            .map_err(|e| mpsc::error::SendError(*e.0))
    }
}

pub type CommandReceiver = mpsc::Receiver<Box<CallCommand>>;

/// Commands the API layer (and shutdown) send to a call's actor.
#[derive(Debug)]
pub enum CallCommand {
    Hangup {
        cause: EndCause,
        leg: Option<String>,
        reply: Option<Reply<()>>,
    },
    Hold {
        target: Target,
        on: bool,
        reply: Reply<CallInfo>,
    },
    Mute {
        leg_id: String,
        on: bool,
        reply: Reply<CallInfo>,
    },
    Play {
        target: Target,
        pcm: Pcm8k,
        whisper: bool,
        reply: Reply<()>,
    },
    Record {
        action: RecordAction,
        /// Played to every party when a recording starts, if given.
        announcement: Option<Pcm8k>,
        reply: Reply<CallInfo>,
    },
    Dtmf {
        leg_id: String,
        digits: String,
        reply: Reply<()>,
    },
    /// Blind transfer: the party on the other side of `transferor` is connected to `target`
    /// (already resolved to devices); the transferor is released once the target answers.
    Transfer {
        transferor: Option<String>,
        target: TransferTarget,
        attended: bool,
        reply: Reply<CallInfo>,
    },
    /// Attended transfer: join the kept party with the target (`complete`) or go back to
    /// the original call (`cancel`).
    FinishTransfer {
        complete: bool,
        reply: Reply<CallInfo>,
    },
    /// A call that still rings: forward it, reject it, or stop one device ringing.
    Ringing {
        action: RingingAction,
        reply: Reply<CallInfo>,
    },
    /// Park the other party of `parker` (default: the account user's side) in an orbit.
    Park {
        parker: Option<String>,
        orbit: Option<String>,
        timeout: Duration,
        reply: Reply<CallInfo>,
    },
    /// Dial `target` into a parked call.
    Unpark {
        target: TransferTarget,
        reply: Reply<CallInfo>,
    },
    /// A phone dialled this call's orbit.
    PickUp {
        pickup: Box<Pickup>,
    },
    /// Another call takes over the party opposite the dialog with this SIP Call-ID
    /// (REFER/Replaces); this call then ends and passes its dialog events on to `to`.
    HandOff {
        sip_call_id: String,
        to: CommandSender,
        reply: Reply<HandOff>,
    },
    /// [`CallCommand::HandOff`] of the party opposite the leg `leg_id` (a bridge).
    HandOffLeg {
        leg_id: String,
        to: CommandSender,
        reply: Reply<HandOff>,
    },
    /// Bridge: take the party opposite `other_leg` of the call `other` into this call, in the
    /// place of the leg `leg_id` (`replaces.rs`).
    Bridge {
        leg_id: String,
        other: CommandSender,
        other_leg: String,
        reply: Reply<CallInfo>,
    },
    /// A dialog event of a party handed over from another call.
    DialogEvent(Box<DialogEvent>),
    /// Application calls (`app.rs`): answer (or early media), decline, play, stop playing.
    AppAnswer {
        early: bool,
        reply: Reply<()>,
    },
    AppDecline {
        status: u16,
        reply: Reply<()>,
    },
    AppPlay {
        pcm: Pcm8k,
        early: bool,
        reply: Reply<tokio::sync::oneshot::Receiver<PlaybackEnd>>,
    },
    AppStopPlay {
        reply: Reply<()>,
    },
    AppDial {
        target: TransferTarget,
        /// The targets in the order of `target`'s forks: their child legs.
        groups: Vec<DialGroup>,
        caller_id: Option<String>,
        timeout: Duration,
        answer_on_bridge: bool,
        events: tokio::sync::mpsc::Sender<crate::apps::DialEvent>,
        reply: Reply<()>,
    },
    AppHangupDialled {
        reply: Reply<()>,
    },
    /// REFER the application's caller to `refer_to` (`app_refer.rs`).
    AppRefer {
        refer_to: String,
        headers: Vec<(String, String)>,
        events: tokio::sync::mpsc::Sender<crate::apps_refer::ReferEvent>,
        reply: Reply<()>,
    },
    /// End an application call with extra headers on the caller's BYE.
    AppHangup {
        headers: Vec<(String, String)>,
        reply: Reply<()>,
    },
    /// The application stopped following its REFER.
    AppReferDone {
        reply: Reply<()>,
    },
    /// Audio taps and streamed playback of application calls (`listen.rs`).
    AppListen(listen::ListenCommand),
    /// A leg of this call in a named conference (`conf_leg.rs`).
    Conference(conf_leg::ConfLegCommand),
    /// Internal: a playback the actor started has ended.
    PlaybackEnded {
        side: u8,
        whisper: bool,
        end: Option<PlaybackEnd>,
    },
}

/// Where one fork of the B leg is sent.
#[derive(Debug, Clone)]
pub(crate) struct ForkTarget {
    pub(crate) request_uri: String,
    pub(crate) destination: SocketAddr,
    pub(crate) transport: Transport,
    pub(crate) credential: Option<(String, String)>,
    /// A leg out through a trunk holds its account's outbound place (fraud brakes) for as
    /// long as the call lasts.
    pub(crate) permit: Option<Arc<OutboundPermit>>,
}

/// One target of an application's dial: its child leg, and how many of the dial's forks
/// (in order) ring it.
#[derive(Debug, Clone)]
pub struct DialGroup {
    pub(crate) child: crate::apps::DialChild,
    pub(crate) forks: usize,
}

/// Which INVITE a fork's result belongs to: the call's own callee forks, or the forks of
/// transfer attempt number `generation` (results of an abandoned attempt are ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ForkKey {
    Callee(usize),
    /// The caller's phones of a call we originate.
    Caller(usize),
    Transfer {
        generation: u32,
        index: usize,
    },
}

/// The dialog a side's phone is on once the call is answered (a transfer replaces it).
#[derive(Clone)]
struct Party {
    dialog: InviteLeg,
    call_id: String,
}

struct Fork {
    key: ForkKey,
    dialog: InviteLeg,
    call_id: String,
    request_uri: String,
    status: Option<u16>,
    finished: bool,
    /// CANCELled by forward, reject or ignore: it must not answer the call any more.
    abandoned: bool,
}

use crate::call_core::best_failure;
use crate::call_core::park::ParkAction;
use crate::call_core::ringing::RingAction;
use crate::call_core::transfer::TransferAction;
use crate::call_core::voicemail::VoicemailAction;
use crate::call_core::{Action as CoreAction, CallCore, Phase, Side};

mod app;
mod app_refer;
mod destination;
use destination::{device_destination, transport_of};
pub(crate) use destination::{resolve_destination, Destination, RouteError};
mod inbound;
use app::AppSession;
pub(crate) use inbound::run_inbound;
pub(crate) mod conf_leg;
mod consult;
pub(crate) mod listen;
mod originate;
mod park;
pub(crate) use park::{is_orbit, Pickup};
mod reoffer;
mod replaces;
pub use replaces::HandOff;
mod ringing;
pub use ringing::RingingAction;
pub(crate) use ringing::{device_target, AnswerDevice};
mod transfer;
mod voicemail;
use originate::Originated;
pub use originate::{AppOriginateRequest, OriginateRequest};
pub(crate) use transfer::TransferTarget;
use transfer::{RetiredLeg, TransferHandles};

impl Side {
    fn leg(self) -> Leg {
        match self {
            Side::A => Leg::A,
            Side::B => Leg::B,
        }
    }
}

/// Per-side media state: the codecs negotiated with that phone (in its payload numbers),
/// our SDP origin towards it, and the direction it last asked for.
struct MediaSide {
    codecs: Vec<Codec>,
    origin: OriginState,
    direction: Direction,
}

/// What differs between a call that came in and one we originate; the rest of a new call's
/// state starts the same.
struct NewCall {
    id: String,
    account_id: String,
    /// The caller's dialog (None while we are still ringing the caller of an originated call).
    a: Option<InviteLeg>,
    a_call_id: String,
    a_from: String,
    a_to: String,
    /// `In` (the caller called us) or `Out` (we called the caller).
    a_direction: LegDirection,
    a_media: MediaSide,
    bridge: Arc<BridgeHandle>,
    states: CallStates,
    started_at: i64,
    caller_number: String,
    caller_name: Option<String>,
    caller_owner: Option<(String, String)>,
    direction: CallDirection,
    callee_label: String,
    callee_owner: Option<(String, String)>,
    dialled: String,
    forks: usize,
}

/// Registers a new call (listed by the API, `new` event) and builds its actor.
fn build_actor(engine: &Engine, call: NewCall) -> (CallActor, CommandReceiver) {
    let (cmd_tx, cmd_rx) = mpsc::channel(16);
    let cmd_tx = CommandSender(cmd_tx);
    let self_tx = cmd_tx.clone();
    let leg = |role, direction, state, number: &str, owner: &Option<(String, String)>| LegInfo {
        id: uuid::Uuid::now_v7().to_string(),
        role,
        direction,
        state,
        number: number.to_string(),
        owner_user_id: owner.as_ref().map(|(id, _)| id.clone()),
        owner_extension: owner.as_ref().map(|(_, ext)| ext.clone()),
        muted: false,
        held: false,
        recording: false,
        devices: Vec::new(),
        voicemail: false,
    };
    let a_state = match call.a_direction {
        LegDirection::In => LegState::Proceeding,
        LegDirection::Out => LegState::Setup,
    };
    let a_leg = leg(
        LegRole::Caller,
        call.a_direction,
        a_state,
        &call.caller_number,
        &call.caller_owner,
    );
    let b_leg = leg(
        LegRole::Callee,
        LegDirection::Out,
        LegState::Setup,
        &call.callee_label,
        &call.callee_owner,
    );
    let info = CallInfo {
        id: call.id.clone(),
        account_id: call.account_id.clone(),
        from: call.caller_number.clone(),
        to: call.callee_label.clone(),
        dialled: call.dialled.clone(),
        direction: call.direction,
        state: CallState::Ringing,
        started_at_ms: call.started_at,
        answered_at_ms: None,
        legs: vec![a_leg.clone(), b_leg.clone()],
        dialling: Vec::new(),
    };
    if let Ok(mut calls) = engine.inner.calls.lock() {
        calls.insert(
            call.id.clone(),
            CallEntry {
                info: info.clone(),
                commands: cmd_tx,
                sip_call_ids: Vec::new(),
            },
        );
    }
    engine.inner.metrics.calls_started.inc();
    // Marked live, so a crash still leaves this call a record at the next start.
    engine.inner.store.call_started(hookflash_store::LiveCall {
        id: info.id.clone(),
        account_id: Some(info.account_id.clone()),
        from: info.from.clone(),
        to: info.to.clone(),
        direction: info.direction.as_str().to_string(),
        started_at: info.started_at_ms,
    });
    engine
        .inner
        .events
        .publish(EventKind::New, &info, None, None);
    info!(
        from = %call.caller_number,
        to = %call.callee_label,
        direction = call.direction.as_str(),
        forks = call.forks,
        "call started"
    );
    let actor = CallActor {
        engine: engine.clone(),
        id: call.id,
        account_id: call.account_id,
        core: CallCore::new(true),
        a: call.a,
        a_call_id: call.a_call_id,
        a_from: call.a_from,
        a_to: call.a_to,
        forks: Vec::new(),
        winner: None,
        parties: [None, None],
        new_invites: Vec::new(),
        xfer: TransferHandles::default(),
        retired: Vec::new(),
        originated: None,
        app: None,
        replacing: replaces::Replacing::default(),
        custom_ring_timeout: None,
        fork_caller_id: None,
        states: call.states,
        bridge: call.bridge,
        a_media: call.a_media,
        b_media: MediaSide {
            codecs: Vec::new(),
            origin: OriginState::new(),
            direction: Direction::SendRecv,
        },
        sent_ringing: false,
        sent_early_media: false,
        started_at: call.started_at,
        answered_at: None,
        end_cause: None,
        end_status: 0,
        caller_number: call.caller_number,
        caller_name: call.caller_name,
        direction: call.direction,
        callee_label: call.callee_label,
        a_leg,
        b_leg,
        whispering: [false; 2],
        keepalive: std::cell::Cell::new([false; 2]),
        recording: None,
        self_tx,
        dialled: call.dialled,
        outbound_permits: Vec::new(),
        new_reoffers: Vec::new(),
        hold_op: None,
        relay_op: None,
        bye_headers: Vec::new(),
        conf_legs: [None, None],
        auto_answer: None,
    };
    (actor, cmd_rx)
}

fn parse_offer(req: &Request) -> Result<SessionDescription, &'static str> {
    if req.body.is_empty() {
        return Err("no SDP offer in INVITE (delayed offer is not supported)");
    }
    let text = std::str::from_utf8(&req.body).map_err(|_| "SDP is not UTF-8")?;
    let sdp = SessionDescription::parse(text).map_err(|_| "SDP does not parse")?;
    let audio = sdp.audio().ok_or("SDP has no audio stream")?;
    sdp::supported_codecs(audio).map_err(|_| "no common codec (PCMU/PCMA)")?;
    if sdp.audio_endpoint().is_none() {
        return Err("SDP has no connection address");
    }
    Ok(sdp)
}

fn sdp_of_response(resp: &Response) -> Option<SessionDescription> {
    if resp.body.is_empty() {
        return None;
    }
    std::str::from_utf8(&resp.body)
        .ok()
        .and_then(|t| SessionDescription::parse(t).ok())
}

fn content_type_sdp() -> Header {
    Header::ContentType("application/sdp".into())
}

fn cause_for_status(status: u16) -> EndCause {
    EndCause::for_status(status)
}

type ForkFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = (ForkKey, Option<InviteOutcome>)> + Send>>;

struct CallActor {
    engine: Engine,
    id: String,
    account_id: String,
    /// The call's phase, timers and re-offer rules, without I/O (see `call_core.rs`).
    core: CallCore,
    /// The caller's dialog; None while an originated call still rings the caller.
    a: Option<InviteLeg>,
    a_call_id: String,
    a_from: String,
    a_to: String,
    forks: Vec<Fork>,
    winner: Option<usize>,
    /// Per side (A, B), once answered: the dialog of the phone on that side now.
    parties: [Option<Party>; 2],
    /// INVITEs just sent (callee forks, transfer forks); `run` moves them into the set it
    /// polls, since the select cannot borrow the actor while a handler runs.
    new_invites: Vec<ForkFuture>,
    /// The transfer's handles: the attempt in progress and the forks of finished ones (its
    /// state: `core.transfer`).
    xfer: TransferHandles,
    /// Legs that left the call while it went on (released transferors).
    retired: Vec<RetiredLeg>,
    /// The handles of a call we originate (click-to-dial; its state: `core.originate`).
    originated: Option<Originated>,
    /// Set for a call an application runs (see `app.rs`).
    app: Option<Box<AppSession>>,
    /// REFER/Replaces and bridge: the handles of a hand-over into this call, and the call
    /// that gets this call's dialog events after it gave a party away (its state:
    /// `core.replaces`).
    replacing: replaces::Replacing,
    /// A ring timeout of its own (an application's outbound call), else the server's.
    custom_ring_timeout: Option<Duration>,
    /// The number the callee's phones see instead of the caller's (inbound hook redirect).
    fork_caller_id: Option<String>,
    /// This call's routes in the shared dialog-state channel (see `hookflash_sip::router`).
    states: CallStates,
    bridge: Arc<BridgeHandle>,
    a_media: MediaSide,
    b_media: MediaSide,
    sent_ringing: bool,
    sent_early_media: bool,
    started_at: i64,
    answered_at: Option<i64>,
    /// Why the call ends, once known (`normal` if nothing else was set).
    end_cause: Option<EndCause>,
    end_status: u16,
    caller_number: String,
    caller_name: Option<String>,
    direction: CallDirection,
    callee_label: String,
    a_leg: LegInfo,
    b_leg: LegInfo,
    /// Per side (A, B): a whisper is playing to it, so its own audio is kept from the other.
    whispering: [bool; 2],
    /// Per side: the keepalive silence the bridge was last told (see `apply_forwarding`).
    keepalive: std::cell::Cell<[bool; 2]>,
    /// The running recording's id.
    recording: Option<String>,
    /// For completions the actor schedules to itself (playback ended).
    self_tx: CommandSender,
    dialled: String,
    /// The account's outbound places this call's trunk legs hold (released with the actor).
    outbound_permits: Vec<Arc<OutboundPermit>>,
    /// Our re-INVITEs' answers not yet polled (see `reoffer.rs`), and the hold command or
    /// relayed re-INVITE waiting for them.
    new_reoffers: Vec<reoffer::ReofferFuture>,
    hold_op: Option<Box<reoffer::HoldOp>>,
    relay_op: Option<Box<reoffer::RelayOp>>,
    /// Extra headers for the BYE that ends the call (an application's `hangup`).
    bye_headers: Vec<(String, String)>,
    /// Per side (A, B): the conference its audio goes to, if any (`conf_leg.rs`).
    conf_legs: [Option<Box<conf_leg::ConfLeg>>; 2],
    /// The ordinary target of a device asked to answer by itself (`RingingAction::AnswerOn`;
    /// its state and wait: `core.ringing`).
    auto_answer: Option<Box<ringing::AutoAnswer>>,
}

impl CallActor {
    fn send_forks(&mut self, targets: &[ForkTarget]) {
        self.send_forks_with(targets, &[]);
    }

    /// `send_forks` with `extra` headers in each INVITE (an auto-answer request).
    fn send_forks_with(&mut self, targets: &[ForkTarget], extra: &[Header]) {
        let b_local = self.bridge.local_addr(Leg::B);
        let offer = sdp::build_offer(
            b_local,
            &self.b_media.origin,
            &self.a_media.codecs,
            self.a_media.direction,
        )
        .to_string();
        let caller_number = self
            .fork_caller_id
            .clone()
            .unwrap_or_else(|| self.caller_number.clone());
        let caller_name = self.caller_name.clone();
        let first = self.forks.len();
        let sent = self.invite_targets_with(
            targets,
            &caller_number,
            caller_name,
            &offer,
            |i| ForkKey::Callee(first + i),
            extra,
        );
        for (i, dialog, request_uri) in sent {
            self.forks.push(Fork {
                key: ForkKey::Callee(first + i),
                call_id: dialog.id().call_id.clone(),
                dialog,
                request_uri,
                status: None,
                finished: false,
                abandoned: false,
            });
        }
        self.refresh_devices();
    }

    /// Sends one INVITE per target with `offer`; each fork's outcome arrives on `pending`
    /// under `key(i)`. Returns the dialogs created (index, dialog, request URI), in order.
    fn invite_targets(
        &mut self,
        targets: &[ForkTarget],
        caller_number: &str,
        caller_name: Option<String>,
        offer: &str,
        key: impl Fn(usize) -> ForkKey,
    ) -> Vec<(usize, InviteLeg, String)> {
        self.invite_targets_with(targets, caller_number, caller_name, offer, key, &[])
    }

    /// `invite_targets` with `extra` headers in each INVITE.
    fn invite_targets_with(
        &mut self,
        targets: &[ForkTarget],
        caller_number: &str,
        caller_name: Option<String>,
        offer: &str,
        key: impl Fn(usize) -> ForkKey,
        extra: &[Header],
    ) -> Vec<(usize, InviteLeg, String)> {
        let mut sent = Vec::new();
        let host = &self.engine.inner.cfg.advertised_host;
        let caller = Uri::try_from(format!("sip:{caller_number}@{host}").as_str())
            .or_else(|_| Uri::try_from(format!("sip:anonymous@{host}").as_str()));
        let Ok(caller) = caller else {
            warn!("cannot build the caller URI for an outgoing INVITE");
            return sent;
        };
        for target in targets {
            let Ok(callee) = Uri::try_from(target.request_uri.as_str()) else {
                warn!(uri = %target.request_uri, "unusable target URI");
                continue;
            };
            // Our Call-ID, so its dialog states are routed here before the INVITE leaves.
            let sip_call_id = uuid::Uuid::new_v4().to_string();
            let invite = OutgoingInvite {
                call_id: sip_call_id.clone(),
                caller_display_name: caller_name.clone(),
                caller: caller.clone(),
                callee,
                destination: target.destination,
                transport: target.transport,
                offer: offer.as_bytes().to_vec(),
                contact: self.engine.local_contact(),
                // Asking the dialled party for session timers, where configured.
                headers: self
                    .engine
                    .inner
                    .cfg
                    .session_expires_ask
                    .map(|se| {
                        vec![
                            Header::Other("Session-Expires".into(), se.to_string()),
                            Header::Other("Supported".into(), "timer".into()),
                        ]
                    })
                    .unwrap_or_default()
                    .into_iter()
                    .chain(extra.iter().cloned())
                    .collect(),
                credential: target.credential.as_ref().map(|(u, p)| Credential {
                    username: u.clone(),
                    password: p.clone(),
                }),
            };
            match self
                .engine
                .inner
                .sip
                .dialogs
                .invite(invite, self.states.route(&sip_call_id))
            {
                Ok((dialog, handle)) => {
                    if let Some(permit) = &target.permit {
                        self.outbound_permits.push(permit.clone());
                    }
                    let index = sent.len();
                    self.new_invites
                        .push(Box::pin(join_fork(key(index), handle)));
                    sent.push((index, dialog, target.request_uri.clone()));
                }
                Err(e) => warn!(error = %e, uri = %target.request_uri, "could not send INVITE"),
            }
        }
        sent
    }

    /// Boxed: an async fn keeps its arguments and the body's copies of them side by side, so a
    /// by-value actor would take twice its size for as long as the call lasts.
    async fn run(
        mut self: Box<Self>,
        mut states: CallStateReceiver,
        mut commands: CommandReceiver,
    ) {
        if self.forks.is_empty()
            && !self.core.originate.is_originated()
            && self.app.is_none()
            && !self.core.voicemail.first()
        {
            self.fail_caller(503, EndCause::Failed);
        }
        if self
            .originated
            .as_ref()
            .is_some_and(|o| o.caller_forks.is_empty())
        {
            self.end_cause = Some(EndCause::Failed);
            self.end_status = 503;
            self.core.end();
        }
        let ring_timeout = self
            .custom_ring_timeout
            .unwrap_or(self.engine.inner.cfg.ring_timeout);
        self.core.ring(tokio::time::Instant::now(), ring_timeout);
        if self.core.voicemail.first() && !Box::pin(self.try_voicemail()).await {
            self.fail_caller(480, EndCause::Unavailable);
        }
        let bridge = self.bridge.clone();
        let mut inactive = Box::pin(async move { bridge.inactive().await });
        let mut dtmf = self.bridge.dtmf_events();
        let mut pending: FuturesUnordered<ForkFuture> = FuturesUnordered::new();
        let mut reoffers: FuturesUnordered<reoffer::ReofferFuture> = FuturesUnordered::new();
        while self.core.phase() != Phase::Ended {
            // What the core asked for last time round is done before anything new comes in
            // (it may start re-INVITEs, whose answers are polled below).
            Box::pin(self.run_core_actions()).await;
            if self.core.phase() == Phase::Ended {
                break;
            }
            pending.extend(self.new_invites.drain(..));
            reoffers.extend(self.new_reoffers.drain(..));
            let core_timeout = self.core.poll_timeout();
            let core_wake = core_timeout.unwrap_or_else(tokio::time::Instant::now);
            tokio::select! {
                state = states.recv() => match state {
                    Some(state) => Box::pin(self.on_dialog_state(*state)).await,
                    None => break,
                },
                Some((key, result)) = pending.next(), if !pending.is_empty() => {
                    match key {
                        ForkKey::Callee(index) => Box::pin(self.on_fork_result(index, result)).await,
                        ForkKey::Caller(index) => Box::pin(self.on_caller_result(index, result)).await,
                        ForkKey::Transfer { generation, index } => {
                            Box::pin(self.on_transfer_result(generation, index, result)).await
                        }
                    }
                }
                Some(feedback) = reoffers.next(), if !reoffers.is_empty() => match *feedback {
                    reoffer::Feedback::Reoffer { side, seq, outcome } => {
                        Box::pin(self.on_reoffer(side, seq, outcome)).await
                    }
                    reoffer::Feedback::HandOff { ticket, given } => {
                        Box::pin(self.on_handoff(ticket, given)).await
                    }
                },
                _ = tokio::time::sleep_until(core_wake), if core_timeout.is_some() => {
                    self.core.handle_timeout(tokio::time::Instant::now());
                }
                _ = &mut inactive, if self.core.phase() == Phase::Connected => {
                    info!("no RTP from either side: ending the call");
                    Box::pin(self.hangup_all(EndCause::RtpTimeout)).await;
                }
                Some(cmd) = commands.recv() => Box::pin(self.on_command(*cmd)).await,
                pressed = dtmf.recv() => match pressed {
                    Ok(ev) => {
                        let side = if ev.leg == Leg::A { Side::A } else { Side::B };
                        info!(leg = ?side, digit = %ev.digit, "DTMF received");
                        self.publish_detail(EventKind::Dtmf, Some(side), EventDetail {
                            digit: Some(ev.digit.to_string()),
                            ..Default::default()
                        });
                        if self.core.voicemail.is_active() {
                            Box::pin(self.voicemail_digit(ev.digit)).await;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        warn!(missed = n, "DTMF events lagged");
                    }
                    // The bridge is gone; keep the loop alive for the SIP side.
                    Err(_) => dtmf = tokio::sync::broadcast::channel(1).1,
                },
            }
        }
        // (Each handler above is boxed: inline, the largest of them would set the size of
        // this future, which lives as long as the call.)
        // A hold command or a phone's re-INVITE still waiting for an answer is answered now;
        // the re-INVITE tasks end by themselves. A party another call may still hand over is
        // released when it comes.
        let awaiting_handoff = self.core.replaces.awaiting_other_call();
        Box::pin(self.abandon_reoffers()).await;
        reoffers.extend(self.new_reoffers.drain(..));
        if awaiting_handoff {
            replaces::release_late_handoffs(self.engine.clone(), reoffers);
        } else {
            drop(reoffers);
        }
        // Let the SIP layer finish the forks we cancelled so their dialogs are cleaned up, but
        // never wait long.
        let drain = async {
            pending.extend(self.new_invites.drain(..));
            while let Some((key, result)) = pending.next().await {
                if let Some(Ok((_, Some(resp)))) = result {
                    if resp.status_code.kind() == hookflash_sip::msg::StatusCodeKind::Successful {
                        self.release_late_answer(key);
                    }
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), drain).await;
        if let Some(to) = self.replacing.states_to.take() {
            replaces::forward_states(states, self.states.clone(), to);
        }
        Box::pin(self.finish()).await;
    }

    /// Does what the call core asked for (see `call_core.rs`), in order.
    async fn run_core_actions(&mut self) {
        while let Some(action) = self.core.poll_action() {
            match action {
                CoreAction::SendReoffer {
                    side,
                    purpose,
                    direction,
                    use_update,
                } => self.send_reoffer(side, direction, purpose, use_update),
                CoreAction::RingTimeout => {
                    info!("no answer before the ring timeout");
                    if self.is_app() {
                        // The application neither answered nor declined in time.
                        self.fail_caller(480, EndCause::NoAnswer);
                    } else if !Box::pin(self.try_voicemail()).await {
                        Box::pin(self.cancel_forks(None)).await;
                        self.fail_caller(408, EndCause::NoAnswer);
                    }
                }
                CoreAction::SessionExpired { side } => {
                    info!(leg = ?side, "session expired without a refresh: ending the call");
                    Box::pin(self.hangup_all(EndCause::SessionExpired)).await;
                }
                CoreAction::RefreshFailed { side } => {
                    info!(leg = ?side, "our session refresh failed: ending the call");
                    Box::pin(self.hangup_all(EndCause::SessionExpired)).await;
                }
                CoreAction::Park(ParkAction::CallParkerBack { orbit, extension }) => {
                    Box::pin(self.park_timed_out(orbit, extension)).await;
                }
                CoreAction::Ringing(RingAction::CancelAutoAnswer { fork }) => {
                    info!("the device did not answer by itself in time");
                    self.cancel_auto_answer(fork);
                }
                CoreAction::Transfer(TransferAction::RingTimeout) => {
                    info!("transfer target did not answer in time");
                    self.cancel_transfer_forks();
                }
                CoreAction::Voicemail(VoicemailAction::MaxLength) => {
                    info!("voicemail: longest message reached");
                    Box::pin(self.hangup_all(EndCause::Normal)).await;
                }
            }
        }
    }

    fn fork_by_call_id(&self, call_id: &str) -> Option<usize> {
        self.forks.iter().position(|f| f.call_id == call_id)
    }

    async fn on_dialog_state(&mut self, state: DialogEvent) {
        let id = state.leg_id().clone();
        if let Some(side) = self.side_of_call_id(&id.call_id) {
            self.on_party_state(side, state).await;
        } else if id.call_id == self.a_call_id && self.core.phase() == Phase::Ringing {
            // Once answered, the caller's dialog is one of the parties (or has left them).
            self.on_a_state(state).await;
        } else if let Some(index) = self.fork_by_call_id(&id.call_id) {
            self.on_fork_state(index, state).await;
        } else if self.caller_fork_by_call_id(&id.call_id) {
            self.on_caller_fork_state(state).await;
        } else if self.is_transfer_dialog(&id.call_id) {
            self.on_transfer_state(state).await;
        } else if self.is_handover_dialog(&id.call_id) {
            self.on_handover_state(state).await;
        } else {
            // A released transferor or a losing fork: answer what needs an answer.
            answer_stray(state).await;
        }
    }

    fn side_of_call_id(&self, call_id: &str) -> Option<Side> {
        [Side::A, Side::B].into_iter().find(|side| {
            self.parties[side.index()]
                .as_ref()
                .is_some_and(|p| p.call_id == call_id)
        })
    }

    /// Requests and state changes of an answered side's dialog.
    async fn on_party_state(&mut self, side: Side, state: DialogEvent) {
        match state {
            DialogEvent::Terminated(_, reason) => {
                if self.core.phase() == Phase::Ended {
                    return;
                }
                let (cause, status) = match reason {
                    Ended::Timeout => (EndCause::AckTimeout, 408),
                    _ => (EndCause::Normal, 200),
                };
                info!(leg = ?side, ?reason, "leg ended");
                if self.core.replaces.replaced_party_left(side) {
                    // A phone may leave right after its REFER/Replaces was accepted: the
                    // phone handed over takes the empty place.
                    info!(leg = ?side, "the replaced party left: the hand-over goes on");
                    self.leg_mut(side).state = LegState::Disconnected;
                    return;
                }
                if self.on_party_gone_during_transfer(side).await {
                    return;
                }
                if side == Side::B && self.app_dialled_left(cause) {
                    return;
                }
                self.end_cause = Some(cause);
                self.end_status = status;
                if let Some(other) = self.dialog_of(side.other()) {
                    send_bye(other, Vec::new(), "the other leg");
                }
                self.core.end();
            }
            DialogEvent::Updated(_, req, handle) => {
                if self.core.transfer.is_active() {
                    let _ = handle.reply(StatusCode::RequestPending).await;
                } else {
                    self.start_relay(side, req, handle).await
                }
            }
            DialogEvent::Options(_, _, handle) | DialogEvent::Info(_, _, handle) => {
                let _ = handle.reply(StatusCode::OK).await;
            }
            DialogEvent::Refer(_, req, handle) => self.on_refer(side, req, handle).await,
            DialogEvent::Notify(_, req, handle)
                if side == Side::A && self.app_refer_notify(&req) =>
            {
                let _ = handle.reply(StatusCode::OK).await;
            }
            DialogEvent::Message(_, _, handle)
            | DialogEvent::Notify(_, _, handle)
            | DialogEvent::Publish(_, _, handle) => {
                let _ = handle.reply(StatusCode::NotImplemented).await;
            }
            other => debug!(state = %other, leg = ?side, "dialog"),
        }
    }

    async fn on_a_state(&mut self, state: DialogEvent) {
        match state {
            DialogEvent::Terminated(_, reason) => {
                let (cause, status) = match reason {
                    Ended::UacCancel => (EndCause::Cancel, 487),
                    Ended::UacBye => (EndCause::Normal, 200),
                    Ended::Timeout => (EndCause::AckTimeout, 408),
                    _ => (EndCause::Normal, self.end_status.max(200)),
                };
                if self.core.phase() == Phase::Ended {
                    return;
                }
                info!(cause = cause.as_str(), "caller leg ended");
                self.end_cause = Some(cause);
                self.end_status = status;
                self.cancel_forks(None).await;
                // An application's answerOnBridge dial rings for this caller.
                self.cancel_transfer_forks();
                self.core.end();
            }
            DialogEvent::Updated(_, _, handle) => {
                let _ = handle.reply(StatusCode::RequestPending).await;
            }
            DialogEvent::Options(_, _, handle) | DialogEvent::Info(_, _, handle) => {
                let _ = handle.reply(StatusCode::OK).await;
            }
            DialogEvent::Refer(_, _, handle)
            | DialogEvent::Message(_, _, handle)
            | DialogEvent::Notify(_, _, handle)
            | DialogEvent::Publish(_, _, handle) => {
                let _ = handle.reply(StatusCode::NotImplemented).await;
            }
            other => debug!(state = %other, "caller dialog"),
        }
    }

    async fn on_fork_state(&mut self, index: usize, state: DialogEvent) {
        let abandoned = self.forks.get(index).is_some_and(|f| f.abandoned);
        match state {
            DialogEvent::Early(_, resp) if self.core.phase() == Phase::Ringing && !abandoned => {
                self.on_provisional(resp);
            }
            other => {
                debug!(fork = index, "callee fork dialog");
                answer_stray(other).await;
            }
        }
    }

    /// 180 → ringing to the caller once; 183 with SDP → early media through the bridge.
    fn on_provisional(&mut self, resp: Response) {
        let code = resp.status_code.code();
        if self.core.originate.is_originated() {
            self.on_callee_progress(code, sdp_of_response(&resp));
            return;
        }
        let Some(a) = self.a.clone() else {
            return;
        };
        if let Some(answer) = sdp_of_response(&resp) {
            if self.sent_early_media {
                return;
            }
            if let Some(addr) = answer.audio_endpoint() {
                self.bridge.set_remote(Leg::B, addr);
            }
            let codecs = self.answer_codecs_for_a(&answer);
            let body = sdp::build_offer(
                self.bridge.local_addr(Leg::A),
                &self.a_media.origin,
                &codecs,
                answer.direction(),
            )
            .to_string();
            if let Err(e) = a.ringing(Some(vec![content_type_sdp()]), Some(body.into_bytes())) {
                debug!(error = %e, "could not send 183 to caller");
            }
            self.sent_early_media = true;
            self.mark_ringing();
        } else if code == 180 && !self.sent_ringing {
            if let Err(e) = a.ringing(None, None) {
                debug!(error = %e, "could not send 180 to caller");
            }
            self.mark_ringing();
        }
    }

    /// The codecs we answer the caller with: what the callee chose, in the caller's numbers.
    fn answer_codecs_for_a(&self, b_answer: &SessionDescription) -> Vec<Codec> {
        let b_codecs = b_answer
            .audio()
            .map(|m| m.codecs.clone())
            .unwrap_or_default();
        sdp::answer_codecs(&self.a_media.codecs, &b_codecs)
            .unwrap_or_else(|_| self.a_media.codecs.clone())
    }

    async fn on_fork_result(&mut self, index: usize, result: Option<InviteOutcome>) {
        let Some(fork) = self.forks.get_mut(index) else {
            return;
        };
        fork.finished = true;
        let (response, status) = invite_outcome(result, "fork INVITE failed");
        fork.status = Some(status);
        if (200..300).contains(&status) {
            if self.winner.is_some() || self.core.phase() != Phase::Ringing || fork.abandoned {
                // A second device answered too, or one we stopped ringing, or the caller is
                // gone: release it.
                let dialog = fork.dialog.clone();
                tokio::spawn(async move {
                    let _ = dialog.bye().await;
                });
                return;
            }
            if let Some(resp) = response {
                self.on_answer(index, resp).await;
            }
            return;
        }
        self.auto_answer_failed(index);
        self.refresh_devices();
        if self.core.phase() == Phase::Ringing
            && self.winner.is_none()
            && self.forks.iter().all(|f| f.finished || f.abandoned)
        {
            // Devices the user ignored count as unavailable.
            let statuses: Vec<u16> = self
                .forks
                .iter()
                .map(|f| {
                    if f.abandoned {
                        480
                    } else {
                        f.status.unwrap_or(480)
                    }
                })
                .collect();
            let best = best_failure(&statuses);
            info!(status = best, "every device failed");
            if !(matches!(best, 486 | 480 | 408 | 603) && self.try_voicemail().await) {
                self.fail_caller(best, cause_for_status(best));
            }
        }
    }

    async fn on_answer(&mut self, index: usize, resp: Response) {
        self.winner = Some(index);
        self.cancel_forks(Some(index)).await;
        let Some(answer) = sdp_of_response(&resp) else {
            warn!("callee answered without usable SDP");
            self.bye_b();
            self.fail_caller(488, EndCause::Incompatible);
            return;
        };
        let b_codecs = answer.audio().map(|m| m.codecs.clone()).unwrap_or_default();
        let a_codecs = self.answer_codecs_for_a(&answer);
        if let Some(addr) = answer.audio_endpoint() {
            self.bridge.set_remote(Leg::B, addr);
        }
        self.apply_pt_maps(&a_codecs, &b_codecs);
        self.set_send_codec(Side::A, &a_codecs);
        self.set_send_codec(Side::B, &b_codecs);
        self.set_dtmf_pt(Side::A, &a_codecs);
        self.set_dtmf_pt(Side::B, &b_codecs);
        self.b_media.codecs = b_codecs;
        self.b_media.direction = answer.direction();
        let body = sdp::build_offer(
            self.bridge.local_addr(Leg::A),
            &self.a_media.origin,
            &a_codecs,
            answer.direction(),
        )
        .to_string();
        self.a_media.codecs = a_codecs;
        let Some(a) = self.a.clone() else {
            return;
        };
        if self.core.originate.is_originated() {
            // We called the caller: it answered long ago; it stops hearing the ringback.
            self.bridge.stop_play(Leg::A);
        } else if let Err(e) = a.accept(
            Some(self.with_session_headers(Side::A, vec![content_type_sdp()])),
            Some(body.into_bytes()),
        ) {
            warn!(error = %e, "could not answer the caller");
            self.bye_b();
            self.end_cause = Some(EndCause::Failed);
            self.end_status = 500;
            self.core.end();
            return;
        }
        self.parties = [
            Some(Party {
                dialog: a,
                call_id: self.a_call_id.clone(),
            }),
            Some(Party {
                dialog: self.forks[index].dialog.clone(),
                call_id: self.forks[index].call_id.clone(),
            }),
        ];
        self.core.connect(tokio::time::Instant::now());
        self.answered_at = Some(now_ms());
        self.a_leg.state = LegState::Answered;
        self.b_leg.state = LegState::Answered;
        self.b_leg.devices.clear();
        self.set_callee_timer(&resp);
        self.publish(EventKind::Answered, None, None);
        info!(device = %self.forks[index].request_uri, "call answered");
    }

    /// Tells the bridge the telephone-event payload type negotiated with a leg (RFC 4733), so
    /// digits from that phone are detected and digits to it are sent that way.
    fn set_dtmf_pt(&self, side: Side, codecs: &[Codec]) {
        configure_dtmf(&self.bridge, side.leg(), codecs);
    }

    /// Tells the bridge which codec to use when it plays audio (music on hold) to a leg.
    fn set_send_codec(&self, side: Side, codecs: &[Codec]) {
        configure_send_codec(&self.bridge, side.leg(), codecs);
    }

    /// Payload numbers can differ between the legs (telephone-event 101 vs 96): map them.
    fn apply_pt_maps(&self, a_codecs: &[Codec], b_codecs: &[Codec]) {
        configure_pt_maps(&self.bridge, a_codecs, b_codecs);
    }

    /// The SIP dialog of one side: the caller's, or the fork that answered.
    fn dialog_of(&self, side: Side) -> Option<InviteLeg> {
        self.parties[side.index()]
            .as_ref()
            .map(|p| p.dialog.clone())
    }

    fn media_of(&self, side: Side) -> &MediaSide {
        match side {
            Side::A => &self.a_media,
            Side::B => &self.b_media,
        }
    }

    fn media_mut(&mut self, side: Side) -> &mut MediaSide {
        match side {
            Side::A => &mut self.a_media,
            Side::B => &mut self.b_media,
        }
    }

    /// A new SDP (offer or answer) from us towards one side, bumping our version there.
    fn sdp_towards(&mut self, side: Side, direction: Direction) -> String {
        let local = self.bridge.local_addr(side.leg());
        let media = self.media_mut(side);
        media.origin.next();
        sdp::build_offer(local, &media.origin, &media.codecs.clone(), direction).to_string()
    }

    /// CANCEL every fork still ringing, except `keep`.
    async fn cancel_forks(&mut self, keep: Option<usize>) {
        for (i, fork) in self.forks.iter().enumerate() {
            if Some(i) == keep || fork.finished {
                continue;
            }
            let dialog = fork.dialog.clone();
            tokio::spawn(async move {
                if let Err(e) = dialog.cancel().await {
                    debug!(error = %e, "CANCEL failed");
                }
            });
        }
    }

    fn bye_b(&mut self) {
        let dialog = self.dialog_of(Side::B).or_else(|| {
            self.winner
                .and_then(|i| self.forks.get(i))
                .map(|f| f.dialog.clone())
        });
        if let Some(dialog) = dialog {
            send_bye(dialog, Vec::new(), "the callee");
        }
    }

    /// Rejects the ringing caller and ends the call.
    fn fail_caller(&mut self, status: u16, cause: EndCause) {
        self.cancel_transfer_forks();
        let code = StatusCode::from(status);
        match (&self.a, self.core.originate.is_originated()) {
            // An originated call's caller has answered us: it gets BYE.
            (Some(a), true) => {
                let a = a.clone();
                tokio::spawn(async move {
                    if let Err(e) = a.bye().await {
                        debug!(error = %e, "BYE to the caller failed");
                    }
                });
            }
            (Some(a), false) => {
                if let Err(e) = a.reject(Some(code), None) {
                    debug!(error = %e, "could not reject the caller");
                }
            }
            (None, _) => self.cancel_caller_forks(),
        }
        self.end_cause = Some(cause);
        self.end_status = status;
        self.core.end();
    }

    async fn hangup_all(&mut self, cause: EndCause) {
        match self.core.phase() {
            Phase::Ringing => {
                self.cancel_forks(None).await;
                self.fail_caller(
                    if cause == EndCause::Shutdown {
                        503
                    } else {
                        487
                    },
                    cause,
                );
            }
            Phase::Connected => {
                self.cancel_transfer_forks();
                let a = self.dialog_of(Side::A).or_else(|| self.a.clone());
                let headers = std::mem::take(&mut self.bye_headers);
                if let Some(a) = a {
                    send_bye(a, headers, "the caller");
                }
                self.bye_b();
                self.end_cause = Some(cause);
                self.end_status = 200;
                self.core.end();
            }
            Phase::Ended => {}
        }
    }

    fn mark_ringing(&mut self) {
        if !self.sent_ringing {
            self.sent_ringing = true;
            self.b_leg.state = LegState::Ringing;
            self.publish(EventKind::Ringing, Some(Side::B), None);
        }
    }

    fn leg(&self, side: Side) -> &LegInfo {
        match side {
            Side::A => &self.a_leg,
            Side::B => &self.b_leg,
        }
    }

    fn leg_mut(&mut self, side: Side) -> &mut LegInfo {
        match side {
            Side::A => &mut self.a_leg,
            Side::B => &mut self.b_leg,
        }
    }

    fn side_of_leg(&self, leg_id: &str) -> Option<Side> {
        if self.a_leg.id == leg_id {
            Some(Side::A)
        } else if self.b_leg.id == leg_id {
            Some(Side::B)
        } else {
            None
        }
    }

    fn state(&self) -> CallState {
        match self.core.phase() {
            Phase::Ringing => CallState::Ringing,
            Phase::Connected => CallState::Answered,
            Phase::Ended => CallState::Ended,
        }
    }

    /// `WrongState` with the call's state as the reason.
    fn wrong_state(&self) -> CommandError {
        CommandError::WrongState {
            state: self.state().into(),
        }
    }

    fn info(&self) -> CallInfo {
        CallInfo {
            id: self.id.clone(),
            account_id: self.account_id.clone(),
            from: self.caller_number.clone(),
            to: self.callee_label.clone(),
            dialled: self.dialled.clone(),
            direction: self.direction,
            state: self.state(),
            started_at_ms: self.started_at,
            answered_at_ms: self.answered_at,
            legs: vec![self.a_leg.clone(), self.b_leg.clone()],
            dialling: self.dialling_legs(),
        }
    }

    fn publish_detail(&self, kind: EventKind, leg: Option<Side>, detail: EventDetail) {
        self.emit(kind, leg, None, detail);
    }

    fn publish(&self, kind: EventKind, leg: Option<Side>, cause: Option<EndCause>) {
        self.emit(kind, leg, cause, EventDetail::default());
    }

    /// Updates the registry's copy of the call (what the API lists) without an event.
    fn sync_registry(&self) {
        self.registry_update(self.info());
    }

    fn registry_update(&self, info: CallInfo) {
        let sip_call_ids = self
            .parties
            .iter()
            .flatten()
            .map(|p| p.call_id.clone())
            .collect();
        if let Ok(mut calls) = self.engine.inner.calls.lock() {
            if let Some(entry) = calls.get_mut(&self.id) {
                entry.info = info;
                entry.sip_call_ids = sip_call_ids;
            }
        }
    }

    /// Updates the registry's copy of the call and publishes the event.
    fn emit(
        &self,
        kind: EventKind,
        leg: Option<Side>,
        cause: Option<EndCause>,
        detail: EventDetail,
    ) {
        let info = self.info();
        self.registry_update(info.clone());
        if kind == EventKind::Answered {
            if let Some(at) = info.answered_at_ms {
                self.engine.inner.store.call_answered(&info.id, at);
            }
        }
        let leg_id = leg.map(|s| self.leg(s).id.clone());
        self.engine
            .inner
            .events
            .publish_detail(kind, &info, leg_id.as_deref(), cause, detail);
    }

    /// Audio from a leg reaches the other only if it is not muted and neither side is held.
    fn apply_forwarding(&self) {
        // While a transfer runs or the call is parked, the kept party hears music and nobody
        // hears each other.
        let transferring = self.core.transfer.is_active() || self.core.park.is_parked();
        let mut forwarding = [true; 2];
        for side in [Side::A, Side::B] {
            let on = !transferring
                && !self.leg(side).muted
                && !self.leg(side).held
                && !self.leg(side.other()).held
                && !self.whispering[side.index()];
            self.bridge.set_forwarding(side.leg(), on);
            forwarding[side.index()] = on;
        }
        // A connected party that hears nothing from the other side (muted or held by us, or
        // an application's caller with nobody dialled) still gets silence
        // at the packet rate, so its media-inactivity timer keeps the call.
        let mut sent = self.keepalive.get();
        for side in [Side::A, Side::B] {
            let other = side.other();
            // Not while a transfer runs: the kept party hears music, and the transferor's
            // phone may be consulting on another bridge (our silence would reach the same
            // address as the consultation's audio).
            let want = self.core.phase() == Phase::Connected
                && !self.core.transfer.is_active()
                && self.parties[side.index()].is_some()
                && !self.leg(side).held
                && (!forwarding[other.index()] || self.parties[other.index()].is_none());
            if want != sent[side.index()] {
                self.bridge.set_keepalive(side.leg(), want);
                sent[side.index()] = want;
            }
        }
        self.keepalive.set(sent);
    }

    async fn on_command(&mut self, cmd: CallCommand) {
        match cmd {
            CallCommand::Hangup { cause, leg, reply } => {
                // The party an application dialled (ringing or connected): only it goes, the
                // caller stays with the application.
                let dialled = leg.as_deref().is_some_and(|l| {
                    self.dialling_legs().iter().any(|d| d.id == l)
                        || (self.is_app()
                            && self.parties[Side::B.index()].is_some()
                            && self.side_of_leg(l) == Some(Side::B))
                });
                let result = match leg.as_deref().map(|l| self.side_of_leg(l)) {
                    _ if dialled => self.app_hangup_dialled(),
                    Some(None) => Err(CommandError::NotFound),
                    _ => {
                        // Either leg of a two-party call: the call ends.
                        self.hangup_all(cause).await;
                        Ok(())
                    }
                };
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                }
            }
            CallCommand::Hold { target, on, reply } => self.start_hold(target, on, reply),
            CallCommand::AppAnswer { early, reply } => {
                let _ = reply.send(self.app_answer(early));
            }
            CallCommand::AppDecline { status, reply } => {
                let _ = reply.send(self.app_decline(status));
            }
            CallCommand::AppPlay { pcm, early, reply } => {
                let _ = reply.send(self.app_play(pcm, early));
            }
            CallCommand::AppStopPlay { reply } => {
                let _ = reply.send(self.app_stop_play());
            }
            CallCommand::AppDial {
                target,
                groups,
                caller_id,
                timeout,
                answer_on_bridge,
                events,
                reply,
            } => {
                let dial = app::DialOrder {
                    target,
                    groups,
                    caller_id,
                    timeout,
                    answer_on_bridge,
                };
                let _ = reply.send(self.app_dial(dial, events));
            }
            CallCommand::AppHangupDialled { reply } => {
                let _ = reply.send(self.app_hangup_dialled());
            }
            CallCommand::AppRefer {
                refer_to,
                headers,
                events,
                reply,
            } => {
                let _ = reply.send(self.app_refer(refer_to, headers, events));
            }
            CallCommand::AppHangup { headers, reply } => {
                self.bye_headers = headers;
                self.hangup_all(EndCause::Normal).await;
                let _ = reply.send(Ok(()));
            }
            CallCommand::AppReferDone { reply } => {
                self.app_refer_done();
                let _ = reply.send(Ok(()));
            }
            CallCommand::AppListen(cmd) => self.app_listen(cmd),
            CallCommand::Conference(cmd) => self.conf_leg_command(cmd),
            CallCommand::Play {
                target,
                pcm,
                whisper,
                reply,
            } => {
                let result = self.play(target, pcm, whisper);
                let _ = reply.send(result);
            }
            CallCommand::Record {
                action,
                announcement,
                reply,
            } => {
                let result = self.record(action, announcement).await;
                let _ = reply.send(result);
            }
            CallCommand::Dtmf {
                leg_id,
                digits,
                reply,
            } => {
                let result = self.send_dtmf(&leg_id, &digits);
                let _ = reply.send(result);
            }
            CallCommand::Transfer {
                transferor,
                target,
                attended,
                reply,
            } => {
                let result = self.start_transfer(transferor, target, attended, false);
                let _ = reply.send(result);
            }
            CallCommand::Park {
                parker,
                orbit,
                timeout,
                reply,
            } => {
                let result = self.park(parker, orbit, timeout);
                let _ = reply.send(result);
            }
            CallCommand::Unpark { target, reply } => {
                let result = self.unpark_to(target);
                let _ = reply.send(result);
            }
            CallCommand::PickUp { pickup } => self.on_pickup(*pickup).await,
            CallCommand::HandOff {
                sip_call_id,
                to,
                reply,
            } => self.hand_off(sip_call_id, to, reply).await,
            CallCommand::HandOffLeg { leg_id, to, reply } => {
                self.hand_off_leg(leg_id, to, reply).await
            }
            CallCommand::Bridge {
                leg_id,
                other,
                other_leg,
                reply,
            } => self.bridge_with(leg_id, other, other_leg, reply),
            CallCommand::DialogEvent(state) => self.on_dialog_state(*state).await,
            CallCommand::Ringing { action, reply } => {
                let result = self.on_ringing_action(action).await;
                let _ = reply.send(result);
            }
            CallCommand::FinishTransfer { complete, reply } => {
                if complete {
                    // Answered once the target has answered its move.
                    self.complete_attended(reply).await;
                } else {
                    let result = self.cancel_attended().await;
                    let _ = reply.send(result.map(|_| self.info()));
                }
            }
            CallCommand::PlaybackEnded { side, whisper, end } => {
                if self.core.voicemail.is_active() {
                    self.voicemail_greeting_done().await;
                    return;
                }
                if self.core.ringing.replying() {
                    info!("reply message played: ending the call");
                    self.end_cause = Some(EndCause::Rejected);
                    self.end_status = 200;
                    if let Some(a) = self.dialog_of(Side::A) {
                        send_bye(a, Vec::new(), "the caller after the reply");
                    }
                    self.core.end();
                    return;
                }
                let side = if side == 0 { Side::A } else { Side::B };
                if whisper && self.whispering[side.index()] {
                    self.whispering[side.index()] = false;
                    self.apply_forwarding();
                    info!(leg = ?side, "whisper ended; parties reconnected");
                }
                // A held party goes back to music once its announcement is over.
                if end == Some(PlaybackEnd::Finished)
                    && !self.core.transfer.is_active()
                    && self.leg(side).held
                    && self.core.phase() == Phase::Connected
                {
                    let moh = self.engine.inner.music_on_hold.clone();
                    self.bridge
                        .play(side.leg(), moh, PlayOptions { looped: true });
                }
            }
            CallCommand::Mute { leg_id, on, reply } => {
                let result = match self.side_of_leg(&leg_id) {
                    None => Err(CommandError::NotFound),
                    Some(side) => {
                        if self.leg(side).muted != on {
                            self.leg_mut(side).muted = on;
                            self.apply_forwarding();
                            let kind = if on {
                                EventKind::Muted
                            } else {
                                EventKind::Unmuted
                            };
                            self.publish(kind, Some(side), None);
                            info!(leg = ?side, muted = on, "mute changed");
                        }
                        Ok(self.info())
                    }
                };
                let _ = reply.send(result);
            }
        }
    }

    async fn record(
        &mut self,
        action: RecordAction,
        announcement: Option<Pcm8k>,
    ) -> Result<CallInfo, CommandError> {
        if self.core.phase() != Phase::Connected {
            return Err(self.wrong_state());
        }
        let wrong = |state: WrongState| CommandError::WrongState { state };
        match action {
            RecordAction::Start { .. } => {
                if self.recording.is_some() {
                    return Err(wrong(WrongState::AlreadyRecording));
                }
                let id = uuid::Uuid::now_v7().to_string();
                let path = self.engine.inner.recordings_dir.join(format!("{id}.wav"));
                let row = hookflash_store::Recording {
                    id: id.clone(),
                    account_id: self.account_id.clone(),
                    call_id: self.id.clone(),
                    path: path.to_string_lossy().into_owned(),
                    state: "recording".into(),
                    started_at: now_ms(),
                    ended_at: None,
                    duration_ms: None,
                    bytes: None,
                };
                // The row first: a crash after this leaves something to repair and list.
                self.engine
                    .inner
                    .store
                    .insert_recording(&row)
                    .await
                    .map_err(|e| CommandError::Failed {
                        status: 500,
                        reason: format!("cannot save the recording: {e}"),
                    })?;
                if let Err(e) = self
                    .bridge
                    .start_recording(path.clone(), hookflash_media::RecordOptions::default())
                    .await
                {
                    let _ = self
                        .engine
                        .inner
                        .store
                        .finish_recording(&id, "failed", now_ms(), 0, 0)
                        .await;
                    return Err(CommandError::Failed {
                        status: 500,
                        reason: e.to_string(),
                    });
                }
                self.recording = Some(id.clone());
                self.a_leg.recording = true;
                self.b_leg.recording = true;
                if let Some(notice) = announcement {
                    self.play(Target::Call, notice, false)?;
                }
                info!(recording = %id, path = %path.display(), "recording started");
                self.publish_detail(
                    EventKind::RecordingStarted,
                    None,
                    EventDetail {
                        recording_id: Some(id),
                        ..Default::default()
                    },
                );
            }
            RecordAction::Stop => {
                if self.recording.is_none() {
                    return Err(wrong(WrongState::NotRecording));
                }
                self.stop_recording().await;
            }
            RecordAction::Pause | RecordAction::Resume => {
                if self.recording.is_none() {
                    return Err(wrong(WrongState::NotRecording));
                }
                let result = if action == RecordAction::Pause {
                    self.bridge.pause_recording()
                } else {
                    self.bridge.resume_recording()
                };
                result.map_err(|e| CommandError::Failed {
                    status: 500,
                    reason: e.to_string(),
                })?;
                info!(
                    paused = (action == RecordAction::Pause),
                    "recording paused/resumed"
                );
            }
        }
        Ok(self.info())
    }

    /// Finishes the running recording (file header fixed, row completed).
    async fn stop_recording(&mut self) {
        let Some(id) = self.recording.take() else {
            return;
        };
        self.a_leg.recording = false;
        self.b_leg.recording = false;
        match self.bridge.stop_recording().await {
            Ok(summary) => {
                let duration = summary.duration.as_millis() as i64;
                if let Err(e) = self
                    .engine
                    .inner
                    .store
                    .finish_recording(&id, "complete", now_ms(), duration, summary.bytes as i64)
                    .await
                {
                    warn!(recording = %id, error = %e, "could not complete the recording's row");
                }
                info!(recording = %id, duration_ms = duration, dropped_frames = summary.dropped_frames, "recording stopped");
            }
            Err(e) => warn!(recording = %id, error = %e, "recording did not stop cleanly"),
        }
        self.publish_detail(
            EventKind::RecordingStopped,
            None,
            EventDetail {
                recording_id: Some(id),
                ..Default::default()
            },
        );
    }

    /// DTMF to one phone: RFC 4733 if it negotiated telephone-event, else SIP INFO.
    fn send_dtmf(&mut self, leg_id: &str, digits: &str) -> Result<(), CommandError> {
        if self.core.phase() != Phase::Connected {
            return Err(self.wrong_state());
        }
        let side = self.side_of_leg(leg_id).ok_or(CommandError::NotFound)?;
        match self
            .bridge
            .send_dtmf(side.leg(), digits, hookflash_media::DtmfOptions::default())
        {
            Ok(_) => {
                info!(leg = ?side, digits, "sending DTMF (RFC 4733)");
                Ok(())
            }
            Err(hookflash_media::DtmfError::NoTelephoneEvent { .. }) => {
                let dialog = self.dialog_of(side).ok_or(CommandError::WrongState {
                    state: WrongState::Updating,
                })?;
                info!(leg = ?side, digits, "sending DTMF as SIP INFO (no telephone-event)");
                let digits = digits.to_string();
                tokio::spawn(async move {
                    for digit in digits.chars() {
                        let body = format!("Signal={digit}\r\nDuration=160\r\n");
                        let ct = Header::ContentType("application/dtmf-relay".into());
                        if let Err(e) = dialog.info(Some(vec![ct]), Some(body.into_bytes())).await {
                            warn!(error = %e, "DTMF INFO failed");
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                });
                Ok(())
            }
            Err(e) => Err(CommandError::Invalid(e.to_string())),
        }
    }

    /// Starts a one-shot playback to the target leg(s) and arranges to hear when it ends.
    fn play(&mut self, target: Target, pcm: Pcm8k, whisper: bool) -> Result<(), CommandError> {
        self.require_stable()?;
        let sides = match &target {
            Target::Call => vec![Side::A, Side::B],
            Target::Leg(id) => vec![self.side_of_leg(id).ok_or(CommandError::NotFound)?],
        };
        for side in sides {
            let id = self
                .bridge
                .play(side.leg(), pcm.clone(), PlayOptions { looped: false });
            if whisper {
                self.whispering[side.index()] = true;
            }
            let done = self.bridge.playback_done(id);
            let tx = self.self_tx.clone();
            let side_index = side.index() as u8;
            tokio::spawn(async move {
                let end = done.await;
                let _ = tx
                    .send(CallCommand::PlaybackEnded {
                        side: side_index,
                        whisper,
                        end,
                    })
                    .await;
            });
            info!(leg = ?side, whisper, seconds = pcm.duration().as_secs_f32(), "playing audio");
        }
        self.apply_forwarding();
        Ok(())
    }

    /// Answered and no transfer running: the state every media change needs.
    fn require_stable(&self) -> Result<(), CommandError> {
        if self.core.phase() != Phase::Connected {
            return Err(self.wrong_state());
        }
        if self.core.transfer.is_active() {
            return Err(CommandError::WrongState {
                state: WrongState::Transferring,
            });
        }
        if self.core.park.is_parked() {
            return Err(CommandError::WrongState {
                state: WrongState::Parked,
            });
        }
        if self.core.voicemail.is_active() {
            return Err(CommandError::WrongState {
                state: WrongState::InVoicemail,
            });
        }
        if self.core.replaces.is_running() {
            // A party of another call is being handed over into this one.
            return Err(CommandError::WrongState {
                state: WrongState::Pending,
            });
        }
        Ok(())
    }

    /// Frees media and dialogs, writes the call record, updates metrics.
    async fn finish(&mut self) {
        self.leave_orbit();
        self.finish_voicemail().await;
        if self.recording.is_some() {
            self.stop_recording().await;
        }
        if let Some(t) = self.xfer.current.as_mut() {
            // The call ended during an attended transfer's consultation: end that too.
            if let Some(bridge) = t.consult.take() {
                bridge.stop();
            }
            if let Some(party) = t.target_party.take() {
                send_bye(party.dialog, Vec::new(), "the consulted target");
            }
        }
        self.bridge.stop();
        let dialogs = &self.engine.inner.sip.dialogs;
        // A dialog handed to another call lives on there.
        let ours = |id: &LegId| self.core.replaces.handed_off() != Some(id.call_id.as_str());
        for id in self
            .parties
            .iter()
            .flatten()
            .map(|p| p.dialog.id())
            .chain(self.a.iter().map(|a| a.id()))
            .chain(self.caller_dialog_ids())
            .chain(self.forks.iter().map(|f| f.dialog.id()))
            .chain(self.transfer_dialog_ids())
            .filter(|id| ours(id))
        {
            dialogs.remove(&id);
        }
        let ended_at = now_ms();
        let cause = self.end_cause.unwrap_or(EndCause::Normal);
        let status = if self.answered_at.is_some() {
            200
        } else {
            self.end_status
        };
        let mut legs = vec![LegRecord {
            id: uuid::Uuid::now_v7().to_string(),
            call_id: self.id.clone(),
            role: RecordRole::Caller.as_str().into(),
            direction: LegDirection::In.as_str().into(),
            from: self.a_from.clone(),
            to: self.a_to.clone(),
            contact: None,
            started_at: self.started_at,
            answered_at: self.answered_at,
            ended_at,
            end_cause: cause.as_str().into(),
            sip_status: status,
        }];
        for (i, fork) in self.forks.iter().enumerate() {
            let won = self.winner == Some(i);
            legs.push(LegRecord {
                id: uuid::Uuid::now_v7().to_string(),
                call_id: self.id.clone(),
                role: RecordRole::Callee.as_str().into(),
                direction: LegDirection::Out.as_str().into(),
                from: self.caller_number.clone(),
                to: self.callee_label.clone(),
                contact: Some(fork.request_uri.clone()),
                started_at: self.started_at,
                answered_at: if won { self.answered_at } else { None },
                ended_at,
                end_cause: if won {
                    cause
                } else {
                    cause_for_status(fork.status.unwrap_or(487))
                }
                .as_str()
                .into(),
                sip_status: fork.status.unwrap_or(487),
            });
        }
        legs.append(&mut self.retired);
        legs.extend(self.transfer_leg_records(ended_at));
        let record = CallRecord {
            id: self.id.clone(),
            account_id: Some(self.account_id.clone()),
            from: self.caller_number.clone(),
            to: self.callee_label.clone(),
            direction: self.direction.as_str().into(),
            started_at: self.started_at,
            answered_at: self.answered_at,
            ended_at,
            duration_ms: self.answered_at.map(|a| ended_at - a).unwrap_or(0),
            end_cause: cause.as_str().into(),
            sip_status: status,
            legs,
        };
        if let Err(e) = self.engine.inner.store.insert_call_record(&record).await {
            warn!(error = %e, "could not write the call record");
        }
        self.a_leg.state = LegState::Disconnected;
        self.b_leg.state = LegState::Disconnected;
        self.publish(EventKind::Ended, None, Some(cause));
        self.engine
            .inner
            .metrics
            .calls_ended
            .get_or_create(&CauseLabel {
                cause: cause.as_str().to_string(),
            })
            .inc();
        if let Ok(mut calls) = self.engine.inner.calls.lock() {
            calls.remove(&self.id);
        }
        info!(
            cause = cause.as_str(),
            status,
            duration_ms = record.duration_ms,
            "call ended"
        );
    }
}

/// BYE on `dialog` from a task of its own: the call ends now, not when (or whether) the
/// phone answers its BYE (a phone that does not answer would keep the call listed for the
/// 32 s of the BYE transaction).
fn send_bye(dialog: InviteLeg, headers: Vec<(String, String)>, whom: &'static str) {
    tokio::spawn(async move {
        let sent = if headers.is_empty() {
            dialog.bye().await
        } else {
            dialog.bye_with_headers(headers).await
        };
        if let Err(e) = sent {
            debug!(error = %e, whom, "BYE failed");
        }
    });
}

/// The telephone-event payload type negotiated with a leg (RFC 4733), or none.
fn configure_dtmf(bridge: &BridgeHandle, leg: Leg, codecs: &[Codec]) {
    match codecs
        .iter()
        .find(|c| c.name.eq_ignore_ascii_case("telephone-event"))
    {
        Some(te) => bridge.set_dtmf_pt(leg, te.pt),
        None => bridge.clear_dtmf_pt(leg),
    }
}

/// The G.711 codec the bridge's players use towards a leg.
fn configure_send_codec(bridge: &BridgeHandle, leg: Leg, codecs: &[Codec]) {
    if let Some((codec, law)) = codecs
        .iter()
        .find_map(|c| Law::for_codec(c).map(|law| (c, law)))
    {
        bridge.set_send_codec(leg, codec.pt, law);
    }
}

/// Payload-number translation between the legs. Always set, even empty: a transfer may have
/// replaced a leg whose numbers differed.
fn configure_pt_maps(bridge: &BridgeHandle, a_codecs: &[Codec], b_codecs: &[Codec]) {
    let pairs: Vec<(u8, u8)> = a_codecs
        .iter()
        .filter_map(|ac| {
            b_codecs
                .iter()
                .find(|bc| bc.name.eq_ignore_ascii_case(&ac.name) && bc.clock == ac.clock)
                .map(|bc| (ac.pt, bc.pt))
        })
        .filter(|(a, b)| a != b)
        .collect();
    bridge.set_pt_map(Leg::B, pairs.iter().map(|(a, b)| (*b, *a)).collect());
    bridge.set_pt_map(Leg::A, pairs);
}

async fn join_fork(key: ForkKey, invite: PendingInvite) -> (ForkKey, Option<InviteOutcome>) {
    (key, invite.outcome().await)
}

/// The final response of an INVITE we sent and the status it counts as: no response is a
/// timeout (408); a challenge we could not answer (no or wrong credentials) is ours to deal
/// with, so it counts as 503 (the caller cannot answer it).
fn invite_outcome(result: Option<InviteOutcome>, what: &str) -> (Option<Response>, u16) {
    let response = match result {
        Some(Ok((_, resp))) => resp,
        Some(Err(e)) => {
            debug!(error = %e, "{what}");
            None
        }
        None => None,
    };
    let status = match response.as_ref().map(|r| r.status_code.code()) {
        Some(401) | Some(407) => {
            warn!("the far side demands credentials we do not have");
            503
        }
        Some(code) => code,
        None => 408,
    };
    (response, status)
}

/// CANCELs every fork still ringing except the one that answered.
fn cancel_other_forks(forks: &[Fork], answered: usize) {
    for (i, fork) in forks.iter().enumerate() {
        if i != answered && !fork.finished {
            let dialog = fork.dialog.clone();
            tokio::spawn(async move {
                let _ = dialog.cancel().await;
            });
        }
    }
}

/// Answers an in-dialog request on a dialog that is no longer (or not yet) part of the call.
async fn answer_stray(state: DialogEvent) {
    match state {
        DialogEvent::Options(_, _, handle) | DialogEvent::Info(_, _, handle) => {
            let _ = handle.reply(StatusCode::OK).await;
        }
        DialogEvent::Updated(_, _, handle)
        | DialogEvent::Refer(_, _, handle)
        | DialogEvent::Message(_, _, handle)
        | DialogEvent::Notify(_, _, handle)
        | DialogEvent::Publish(_, _, handle) => {
            let _ = handle.reply(StatusCode::NotImplemented).await;
        }
        other => debug!(state = %other, "dialog event outside the call's current legs"),
    }
}

impl Engine {
    /// Our Contact for dialogs we create.
    pub(crate) fn local_contact(&self) -> Uri {
        let host = &self.inner.cfg.advertised_host;
        let port = self.inner.sip_port;
        Uri::try_from(format!("sip:{host}:{port}").as_str()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_failure_prefers_busy_and_global_failures() {
        assert_eq!(best_failure(&[487, 486]), 486);
        assert_eq!(best_failure(&[480, 408]), 480);
        assert_eq!(best_failure(&[503, 404]), 404);
        assert_eq!(best_failure(&[603, 486]), 603);
        assert_eq!(best_failure(&[]), 480);
        assert_eq!(best_failure(&[500]), 500);
    }

    #[test]
    fn device_destination_by_transport() {
        let contact = "sip:201@127.0.0.1:5072;transport=tcp";
        assert_eq!(
            device_destination("udp", "127.0.0.1:40000", contact),
            Some("127.0.0.1:40000".parse().unwrap())
        );
        assert_eq!(
            device_destination("tcp", "127.0.0.1:40000", contact),
            Some("127.0.0.1:5072".parse().unwrap())
        );
        assert_eq!(
            device_destination(
                "tcp",
                "127.0.0.1:40000",
                "sip:201@phone.example;transport=tcp"
            ),
            Some("127.0.0.1:40000".parse().unwrap())
        );
        assert_eq!(
            device_destination("tcp", "x", "sip:201@127.0.0.1;transport=tcp"),
            Some("127.0.0.1:5060".parse().unwrap())
        );
    }

    /// Every call in progress holds one `CallActor` (boxed) and one task with its `run`
    /// future, for as long as it lasts: memory per active call is a target (BENCHMARKS.md,
    /// "<= 64 KB RSS per active call"). A rare feature's state belongs in a `Box`, and a
    /// handler awaited in `run` in `Box::pin`, or these grow for every call (fd2c339 had
    /// 2,608 and 2,336 bytes in a release build: +2.5-3 KB per call).
    #[test]
    fn the_per_call_actor_and_its_task_stay_small() {
        fn future_size<F, Fut>(_: F) -> usize
        where
            F: FnOnce(Box<CallActor>, CallStateReceiver, CommandReceiver) -> Fut,
        {
            std::mem::size_of::<Fut>()
        }
        let actor = std::mem::size_of::<CallActor>();
        let run = future_size(CallActor::run);
        println!("CallActor {actor} bytes, its run future {run} bytes");
        assert!(actor <= 2_048, "CallActor is {actor} bytes");
        assert!(run <= 1_024, "CallActor::run's future is {run} bytes");
    }

    #[test]
    fn causes_name_the_failure() {
        assert_eq!(cause_for_status(486), EndCause::Busy);
        assert_eq!(cause_for_status(487), EndCause::Cancel);
        assert_eq!(cause_for_status(408), EndCause::NoAnswer);
        assert_eq!(cause_for_status(500), EndCause::Failed);
    }
}
