//! Click-to-dial: the server rings the caller's phones first; when one answers it hears a
//! ringback tone while the server dials the callee, and the two are bridged when the callee
//! answers. The same call actor then runs the call: from here on it is like any other.

use std::sync::Arc;
use std::time::Duration;

use hookflash_media::audio::Pcm8k;
use hookflash_media::relay::{Bridge, BridgeOptions, Leg, PlayOptions};
use hookflash_media::sdp::{self, Codec, Direction, OriginState, SessionDescription};
use hookflash_sip::dialog::DialogEvent;
use hookflash_sip::dialog::{InviteOutcome, LegId};
use tracing::{debug, info, warn, Instrument};

use super::{
    answer_stray, build_actor, invite_outcome, resolve_destination, sdp_of_response, CallActor,
    Destination, Fork, ForkKey, ForkTarget, MediaSide, NewCall, Phase, Side,
};
use crate::call_core::originate::CallerDecision;
use crate::control::{transfer_target_user, CallInfo, CommandError, LegState};
use crate::dialing::Refusal;
use crate::events::EventKind;
use crate::model::{CallDirection, EndCause, LegDirection};
use crate::routing::Origin;
use crate::sip_glue::now_ms;
use crate::Engine;

/// A click-to-dial request in the engine's terms.
#[derive(Debug, Clone)]
pub struct OriginateRequest {
    /// Whose phones ring first: an extension, one of the account's numbers (its owner), or an
    /// external number (rung through the account's trunk).
    pub caller: String,
    /// Who is dialled once the caller answers: extension, number, or `sip:`/`tel:` URI.
    pub callee: String,
    /// The number the callee sees; must be the caller's extension or one of the account's
    /// numbers. Default: the caller's extension (or number).
    pub caller_id: Option<String>,
}

/// An outbound call an application runs: the server dials `target`, and the application
/// starts when it answers (jambonz `POST /Calls`).
#[derive(Debug, Clone)]
pub struct AppOriginateRequest {
    /// Extension, one of the account's numbers, an external number (through the trunk), or a
    /// `sip:`/`tel:` URI whose user part is one of those.
    pub target: String,
    /// The number the called party sees: one of the account's numbers or extensions.
    /// Default: the target's own label.
    pub caller_id: Option<String>,
    /// The application (for logs and the call's label).
    pub application: String,
    /// How long the target may ring (default: the server's ring timeout).
    pub timeout: Option<Duration>,
}

/// Both ends of an originated call, resolved before anything is dialled.
pub(crate) struct OriginatePlan {
    caller: Destination,
    callee: Destination,
    caller_id: String,
    dialled: String,
}

/// The handles of an originated call (its state is `core.originate`): the caller's phones
/// and where the callee is dialled once the caller answers.
pub(super) struct Originated {
    pub(super) caller_forks: Vec<Fork>,
    pub(super) callee_targets: Vec<ForkTarget>,
}

fn bad(msg: String) -> CommandError {
    CommandError::BadTarget(msg)
}

/// Ringback tone for the caller while the callee rings: 425 Hz, 1 s on, 4 s off (ETSI).
fn ringback() -> Pcm8k {
    let on = Pcm8k::tone(425.0, Duration::from_secs(1), 0.3);
    let off = Pcm8k::silence(Duration::from_secs(4));
    Pcm8k::new([on.samples(), off.samples()].concat())
}

impl Engine {
    /// Click-to-dial. Both ends are resolved first (an unknown extension or malformed number
    /// is `BadTarget` and nothing is dialled); then the call exists (listed, `new` event) and
    /// the caller's phones ring. Returns the call at once; its id is the session id.
    pub async fn originate(
        &self,
        account_id: &str,
        req: OriginateRequest,
    ) -> Result<CallInfo, CommandError> {
        let plan = self.plan_originate(account_id, &req).await?;
        self.start_originated(account_id, plan)
    }

    /// Dials `req.target` as a call the application runs once it answers. The target is
    /// resolved like a click-to-dial caller (an unknown extension or malformed number is
    /// `BadTarget` and nothing is dialled; the account's dial rules apply to numbers). Returns
    /// once the INVITE is on its way; the call's leg A is the dialled party.
    pub async fn app_originate(
        &self,
        account_id: &str,
        req: AppOriginateRequest,
    ) -> Result<CallInfo, CommandError> {
        let user = transfer_target_user(&req.target).ok_or_else(|| {
            bad(format!(
                "target '{}' is not an extension, number or SIP URI of one",
                req.target
            ))
        })?;
        let origin = Origin::Account {
            account_id: account_id.to_string(),
        };
        let target = resolve_destination(self, account_id, &origin, &user)
            .await
            .map_err(|e| {
                CommandError::from_route(e, |status| match status {
                    480 => format!("'{user}' has no registered phone"),
                    404 => format!("no extension or number '{user}' can be reached"),
                    _ => format!("'{user}' cannot be reached ({status})"),
                })
            })?;
        let caller_id = match &req.caller_id {
            None => None,
            Some(id) => Some(self.own_caller_id(account_id, id).await?),
        };
        let plan = OriginatePlan {
            callee: Destination {
                targets: Vec::new(),
                label: req.application.clone(),
                direction: target.direction,
                owner: None,
            },
            caller_id: caller_id.unwrap_or_else(|| target.label.clone()),
            caller: target,
            dialled: user,
        };
        self.start_app_originated(account_id, plan, req.timeout)
    }

    /// A caller id the account may present: one of its numbers or extensions.
    pub(crate) async fn own_caller_id(
        &self,
        account_id: &str,
        id: &str,
    ) -> Result<String, CommandError> {
        let id = transfer_target_user(id)
            .ok_or_else(|| bad(format!("callerId '{id}' is not a number or extension")))?;
        let store = &self.inner.store;
        let own_number = store
            .lookup_number(&id)
            .await
            .ok()
            .flatten()
            .is_some_and(|(n, _)| n.account_id == account_id)
            || store
                .application_for_number(&id)
                .await
                .ok()
                .flatten()
                .is_some_and(|a| a.account_id == account_id);
        let own_extension = store
            .user_by_extension(account_id, &id)
            .await
            .ok()
            .flatten()
            .is_some();
        if own_number || own_extension {
            Ok(id)
        } else {
            Err(bad(format!(
                "callerId '{id}' is neither a number nor an extension of this account"
            )))
        }
    }

    fn start_app_originated(
        &self,
        account_id: &str,
        plan: OriginatePlan,
        timeout: Option<Duration>,
    ) -> Result<CallInfo, CommandError> {
        self.spawn_originated(account_id, plan, timeout, true)
    }

    async fn plan_originate(
        &self,
        account_id: &str,
        req: &OriginateRequest,
    ) -> Result<OriginatePlan, CommandError> {
        let caller_user = transfer_target_user(&req.caller).ok_or_else(|| {
            bad(format!(
                "caller '{}' is not an extension or number",
                req.caller
            ))
        })?;
        let callee_user = transfer_target_user(&req.callee).ok_or_else(|| {
            bad(format!(
                "callee '{}' is not an extension or number",
                req.callee
            ))
        })?;
        let anyone = Origin::Account {
            account_id: account_id.to_string(),
        };
        let caller = resolve_destination(self, account_id, &anyone, &caller_user)
            .await
            .map_err(|e| {
                CommandError::from_route(e, |status| match status {
                    480 => format!("caller '{caller_user}' has no registered phone"),
                    _ => format!("caller '{caller_user}' cannot be reached ({status})"),
                })
            })?;
        // A caller out through the trunk is an outside party: unless the account allows
        // sessions between two outside numbers, the callee must be inside the account.
        let caller_outside = caller.direction == CallDirection::Outbound;
        let outside_sessions = self
            .inner
            .store
            .account_by_id(account_id)
            .await
            .ok()
            .flatten()
            .is_some_and(|a| a.dial.outside_sessions);
        let as_caller = match (&caller.owner, caller_outside && !outside_sessions) {
            (_, true) => Origin::Outside {
                account_id: account_id.to_string(),
            },
            (Some((id, _)), false) => Origin::User {
                account_id: account_id.to_string(),
                user_id: id.clone(),
            },
            (None, false) => Origin::Account {
                account_id: account_id.to_string(),
            },
        };
        let callee = match resolve_destination(self, account_id, &as_caller, &callee_user).await {
            Ok(c) => c,
            Err(e) if e.status == 404 && matches!(as_caller, Origin::Outside { .. }) => {
                let refusal = Refusal::OutsideSession;
                self.inner.metrics.refused(refusal.reason());
                info!(caller = %caller_user, callee = %callee_user, "{refusal}");
                return Err(CommandError::NotPermitted(refusal.to_string()));
            }
            Err(e) => {
                return Err(CommandError::from_route(e, |status| match status {
                    482 => format!("caller and callee are both '{callee_user}'"),
                    480 => format!("callee '{callee_user}' has no registered phone"),
                    404 => format!("no extension or number '{callee_user}' can be reached"),
                    _ => format!("callee '{callee_user}' cannot be reached ({status})"),
                }))
            }
        };
        let caller_id = match &req.caller_id {
            None => caller.label.clone(),
            Some(id) => {
                let id = transfer_target_user(id)
                    .ok_or_else(|| bad(format!("callerId '{id}' is not a number")))?;
                let own_number = self
                    .inner
                    .store
                    .lookup_number(&id)
                    .await
                    .ok()
                    .flatten()
                    .is_some_and(|(n, _)| n.account_id == account_id);
                if id != caller.label && !own_number {
                    return Err(bad(format!(
                        "callerId '{id}' is neither the caller nor a number of this account"
                    )));
                }
                id
            }
        };
        Ok(OriginatePlan {
            caller,
            callee,
            caller_id,
            dialled: callee_user,
        })
    }

    fn start_originated(
        &self,
        account_id: &str,
        plan: OriginatePlan,
    ) -> Result<CallInfo, CommandError> {
        self.spawn_originated(account_id, plan, None, false)
    }

    /// Starts the actor of an originated call: rings `plan.caller` first. For an
    /// application's call (`app`), there is no callee: the application runs on answer.
    fn spawn_originated(
        &self,
        account_id: &str,
        plan: OriginatePlan,
        ring_timeout: Option<Duration>,
        app: bool,
    ) -> Result<CallInfo, CommandError> {
        let ports = &self.inner.ports;
        let (a_pair, b_pair) = match (ports.allocate(), ports.allocate()) {
            (Ok(a), Ok(b)) => (a, b),
            _ => {
                return Err(CommandError::Failed {
                    status: 503,
                    reason: "RTP port range exhausted".into(),
                })
            }
        };
        let bridge = Arc::new(Bridge::start(
            a_pair,
            b_pair,
            BridgeOptions {
                inactivity_timeout: self.inner.cfg.rtp_inactivity,
            },
            self.inner.media_stats.clone(),
        ));
        let id = uuid::Uuid::now_v7().to_string();
        let span = tracing::info_span!("call", call_id = %id);
        let _enter = span.enter();
        let (states, state_rx) = self.inner.states.open();
        let caller_label = plan.caller.label.clone();
        let (mut actor, cmd_rx) = build_actor(
            self,
            NewCall {
                id,
                account_id: account_id.to_string(),
                a: None,
                a_call_id: String::new(),
                a_from: plan.callee.label.clone(),
                a_to: caller_label.clone(),
                a_direction: LegDirection::Out,
                a_media: MediaSide {
                    codecs: sdp::default_codecs(),
                    origin: OriginState::new(),
                    direction: Direction::SendRecv,
                },
                bridge,
                states,
                started_at: now_ms(),
                caller_number: plan.caller_id,
                caller_name: None,
                caller_owner: plan.caller.owner.clone(),
                direction: plan.callee.direction,
                callee_label: plan.callee.label.clone(),
                callee_owner: plan.callee.owner.clone(),
                dialled: plan.dialled,
                forks: plan.caller.targets.len(),
            },
        );
        actor.a_leg.number = caller_label;
        actor.originated = Some(Originated {
            caller_forks: Vec::new(),
            callee_targets: plan.callee.targets,
        });
        actor.custom_ring_timeout = ring_timeout;
        // We dial the caller's leg: we are its UAC and chose its Call-ID.
        actor.core.set_a_is_uas(false);
        if app {
            actor.app = Some(Box::new(super::AppSession {
                application_id: plan.callee.label.clone(),
                dial: None,
                refer: None,
            }));
            // The dialled party sees the caller id, not the application.
            let shown = actor.caller_number.clone();
            actor.send_caller_forks(&plan.caller.targets, &shown);
        } else {
            actor.send_caller_forks(&plan.caller.targets, &plan.callee.label);
        }
        let info = actor.info();
        drop(_enter);
        tokio::spawn(Box::new(actor).run(state_rx, cmd_rx).instrument(span));
        Ok(info)
    }
}

impl CallActor {
    /// Rings the caller's phones; they see the callee as the calling party.
    fn send_caller_forks(&mut self, targets: &[ForkTarget], shown_as: &str) {
        let offer = sdp::build_offer(
            self.bridge.local_addr(Leg::A),
            &self.a_media.origin,
            &self.a_media.codecs,
            Direction::SendRecv,
        )
        .to_string();
        let sent = self.invite_targets(targets, shown_as, None, &offer, ForkKey::Caller);
        let forks = sent.into_iter().map(|(index, dialog, request_uri)| Fork {
            key: ForkKey::Caller(index),
            call_id: dialog.id().call_id.clone(),
            dialog,
            request_uri,
            status: None,
            finished: false,
            abandoned: false,
        });
        if let Some(o) = self.originated.as_mut() {
            o.caller_forks.extend(forks);
            self.core.originate.ring_caller(o.caller_forks.len());
        }
        info!(
            devices = targets.len(),
            "ringing the caller first (click-to-dial)"
        );
    }

    pub(super) fn caller_fork_by_call_id(&self, call_id: &str) -> bool {
        self.originated
            .as_ref()
            .is_some_and(|o| o.caller_forks.iter().any(|f| f.call_id == call_id))
    }

    pub(super) fn cancel_caller_forks(&mut self) {
        let Some(o) = self.originated.as_ref() else {
            return;
        };
        for fork in o.caller_forks.iter().filter(|f| !f.finished) {
            let dialog = fork.dialog.clone();
            tokio::spawn(async move {
                if let Err(e) = dialog.cancel().await {
                    debug!(error = %e, "CANCEL to the caller's phone failed");
                }
            });
        }
    }

    pub(super) fn caller_dialog_ids(&self) -> Vec<LegId> {
        self.originated
            .iter()
            .flat_map(|o| o.caller_forks.iter())
            .map(|f| f.dialog.id())
            .collect()
    }

    /// A caller's phone rings.
    pub(super) async fn on_caller_fork_state(&mut self, state: DialogEvent) {
        match state {
            DialogEvent::Early(_, _) if self.a_leg.state == LegState::Setup => {
                self.a_leg.state = LegState::Ringing;
                self.publish(EventKind::Ringing, Some(Side::A), None);
            }
            other => answer_stray(other).await,
        }
    }

    pub(super) async fn on_caller_result(&mut self, index: usize, result: Option<InviteOutcome>) {
        let (response, status) = invite_outcome(result, "INVITE to the caller failed");
        let ringing = self.core.phase() == Phase::Ringing;
        let decision = self.core.originate.caller_result(index, status, ringing);
        let Some(fork) = self
            .originated
            .as_mut()
            .and_then(|o| o.caller_forks.get_mut(index))
        else {
            return;
        };
        fork.finished = true;
        fork.status = Some(status);
        let dialog = fork.dialog.clone();
        let call_id = fork.call_id.clone();
        let device = fork.request_uri.clone();
        match decision {
            CallerDecision::Ignore | CallerDecision::Wait => {}
            CallerDecision::ReleaseExtra => {
                tokio::spawn(async move {
                    let _ = dialog.bye().await;
                });
            }
            CallerDecision::Answered => {
                self.cancel_caller_forks();
                let answer = response
                    .as_ref()
                    .and_then(sdp_of_response)
                    .filter(|a| a.audio().is_some());
                self.a = Some(dialog);
                self.a_call_id = call_id;
                let Some(answer) = answer else {
                    warn!("the caller's phone answered without usable SDP");
                    self.fail_caller(488, EndCause::Incompatible);
                    return;
                };
                self.caller_answered(answer, &device);
            }
            CallerDecision::Failed { status, cause } => {
                info!(status, "the caller did not answer");
                self.end_cause = Some(cause);
                self.end_status = status;
                self.core.end();
            }
        }
    }

    /// The caller picked up: ringback to it, and dial the callee with the codec it chose.
    /// An application's call is connected instead: the application runs from here.
    fn caller_answered(&mut self, answer: SessionDescription, device: &str) {
        let codecs: Vec<Codec> = answer.audio().map(|m| m.codecs.clone()).unwrap_or_default();
        if let Some(addr) = answer.audio_endpoint() {
            self.bridge.set_remote(Leg::A, addr);
        }
        self.set_send_codec(Side::A, &codecs);
        self.set_dtmf_pt(Side::A, &codecs);
        self.a_media.codecs = codecs;
        self.a_media.direction = answer.direction();
        self.a_leg.state = LegState::Answered;
        if self.app.is_some() {
            if let Some(dialog) = self.a.clone() {
                self.parties = [
                    Some(super::Party {
                        dialog,
                        call_id: self.a_call_id.clone(),
                    }),
                    None,
                ];
            }
            self.core.connect(tokio::time::Instant::now());
            self.answered_at = Some(now_ms());
            self.b_leg.state = LegState::Answered;
            self.b_leg.devices.clear();
            self.apply_forwarding();
            info!(%device, "answered; the application runs");
            self.publish(EventKind::Answered, None, None);
            return;
        }
        self.core.ring(
            tokio::time::Instant::now(),
            self.engine.inner.cfg.ring_timeout,
        );
        info!(%device, "caller answered; dialling the callee");
        self.bridge
            .play(Leg::A, ringback(), PlayOptions { looped: true });
        let targets = self
            .originated
            .as_ref()
            .map(|o| o.callee_targets.clone())
            .unwrap_or_default();
        self.send_forks(&targets);
        if self.forks.is_empty() {
            self.fail_caller(503, EndCause::Failed);
        }
    }

    /// Provisional responses from the callee of an originated call: its early media (183
    /// with SDP) replaces our ringback; a plain 180 leaves the ringback playing.
    pub(super) fn on_callee_progress(&mut self, code: u16, sdp: Option<SessionDescription>) {
        if let Some(answer) = sdp {
            if let Some(addr) = answer.audio_endpoint() {
                self.bridge.set_remote(Leg::B, addr);
                self.bridge.stop_play(Leg::A);
            }
        }
        if code >= 180 {
            self.mark_ringing();
        }
    }
}
