//! The jambonz application runtime: runs a leg from its application's hooks.
//!
//! [`Runtime::launch`] spawns one task per leg. The task fetches the call_hook (or the
//! fallback), executes the verbs in order (an actionHook's non-empty answer replaces the
//! rest), and ends the call when the list runs out. The leg's signals are watched the whole
//! time: keys go to the verb that collects them, and the end of the call drops whatever
//! runs (a playback, a pending hook request) at once; only the final status goes out after.
//! Status changes reach the call_status_hook once each and in order
//! ([`Runtime::status`] lets the engine glue add the ones only it sees).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Map;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn, Instrument};

use crate::alert::{AlertKind, AlertSink};
use crate::app::{CallStatus, Hook, Launch};
use crate::control::{CallControl, CallRef, CallSignal, ControlError};
use crate::delivery::Delivery;
use crate::error::AppError;
use crate::exec::{Ending, Exec, Flow, RecordingLinks};
use crate::hook::{self, Answer, HookSpec};
use crate::session::{Command, Session};
use crate::verbs::common::Synthesizer;
use crate::verbs::Script;

/// Keys pressed and not yet read by a verb; more are dropped (a flood cannot grow memory).
const DTMF_BUFFER: usize = 64;

/// A status change for [`Runtime::status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusUpdate {
    pub status: CallStatus,
    pub sip_status: Option<u16>,
    pub sip_reason: Option<String>,
}

impl StatusUpdate {
    pub fn new(status: CallStatus, sip_status: Option<u16>) -> Self {
        StatusUpdate {
            status,
            sip_status,
            sip_reason: None,
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEnd {
    /// The leg ended while the application ran (caller hung up, engine ended it).
    CallEnded {
        sip_status: Option<u16>,
        cause: String,
    },
    /// The application hung up (`hangup`, `leave`, or its list ran out).
    HungUp,
    /// The application declined the call (`sip:decline`) with this status.
    Declined(u16),
    /// The application failed (hook error, invalid answer, call control error); the call was
    /// ended: declined with 480 if unanswered, hung up otherwise.
    Failed(AppError),
}

type CallKey = (String, String);
/// A registered application and whether it started.
type Entry = (Arc<Session>, Arc<AtomicBool>);

fn key(call: &CallRef) -> CallKey {
    (call.call_id.clone(), call.leg_id.clone())
}

struct Inner {
    delivery: Delivery,
    control: Arc<dyn CallControl>,
    calls: Mutex<HashMap<CallKey, Entry>>,
    alerts: Mutex<Option<AlertSink>>,
    recording_links: Mutex<Option<RecordingLinks>>,
}

/// The application runtime (cheap to clone).
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("running", &self.running())
            .finish_non_exhaustive()
    }
}

/// A registered application that has not started: statuses may be reported for it (an
/// outbound call's trying/ringing before its answer starts the application). Dropping it
/// without starting forgets the call.
pub struct Prepared {
    runtime: Runtime,
    session: Option<Entry>,
}

impl Prepared {
    /// Starts the application as a task. A leg answered before it starts (an outbound call)
    /// is reported `in-progress` first ([`Runtime::status`]) or given a launch whose
    /// `call_status` is `in-progress`: the runtime then neither answers it again nor
    /// treats it as ringing (no 480 decline on an error, `completed` with a duration).
    pub fn start(mut self) -> JoinHandle<RunEnd> {
        let (session, started) = match self.session.take() {
            Some(s) => s,
            // Taken only here and in drop.
            None => return tokio::spawn(async { RunEnd::HungUp }),
        };
        started.store(true, Ordering::SeqCst);
        let span = tracing::info_span!("app", call_id = %session.call.call_id,
            leg_id = %session.call.leg_id, call_sid = %session.call_sid());
        let runtime = self.runtime.clone();
        tokio::spawn(async move { runtime.run(session).await }.instrument(span))
    }

    pub fn call(&self) -> Option<&CallRef> {
        self.session.as_ref().map(|(s, _)| &s.call)
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        if let Some((s, _)) = self.session.take() {
            self.runtime.forget(&s);
        }
    }
}

impl Runtime {
    pub fn new(delivery: Delivery, control: Arc<dyn CallControl>) -> Self {
        Runtime {
            inner: Arc::new(Inner {
                delivery,
                control,
                calls: Mutex::new(HashMap::new()),
                alerts: Mutex::new(None),
                recording_links: Mutex::new(None),
            }),
        }
    }

    /// Alerts go to `sink` as well as to the log (for runs started from now on).
    pub fn set_alert_sink(&self, sink: AlertSink) {
        match self.inner.alerts.lock() {
            Ok(mut a) => *a = Some(sink),
            Err(p) => *p.into_inner() = Some(sink),
        }
    }

    /// Recordings made by applications (`record`) are reported at `links(account, id)`.
    pub fn set_recording_links(&self, links: RecordingLinks) {
        match self.inner.recording_links.lock() {
            Ok(mut l) => *l = Some(links),
            Err(p) => *p.into_inner() = Some(links),
        }
    }

    pub fn delivery(&self) -> &Delivery {
        &self.inner.delivery
    }

    fn calls(&self) -> MutexGuard<'_, HashMap<CallKey, Entry>> {
        match self.inner.calls.lock() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        }
    }

    /// Applications registered (prepared or running).
    pub fn running(&self) -> usize {
        self.calls().len()
    }

    /// Registers the application of a leg without starting it.
    pub fn prepare(&self, launch: Launch) -> Prepared {
        let alerts = match self.inner.alerts.lock() {
            Ok(a) => a.clone(),
            Err(p) => p.into_inner().clone(),
        };
        let session = Session::new(launch, self.inner.delivery.clone(), alerts);
        let started = Arc::new(AtomicBool::new(false));
        let previous = self
            .calls()
            .insert(key(&session.call), (session.clone(), started.clone()));
        if previous.is_some() {
            warn!(call_id = %session.call.call_id, leg_id = %session.call.leg_id,
                "a second application for the same leg replaces the first's registration");
        }
        Prepared {
            runtime: self.clone(),
            session: Some((session, started)),
        }
    }

    /// Registers and starts the application of a leg with its first list known already (a
    /// sipgate push answer to `newCall`): the call_hook is not fetched for it; it is the base
    /// relative hooks resolve against.
    pub fn launch_with_script(&self, launch: Launch, script: Script) -> JoinHandle<RunEnd> {
        let prepared = self.prepare(launch);
        if let Some((session, _)) = &prepared.session {
            session.set_initial(script);
        }
        prepared.start()
    }

    /// Registers and starts the application of a leg; the handle yields how it ended.
    pub fn launch(&self, launch: Launch) -> JoinHandle<RunEnd> {
        self.prepare(launch).start()
    }

    /// Reports a status change of `call` to its application's call_status_hook (once per
    /// status, never one that goes back; nothing after a final one). False when the call has
    /// no application or the status was not new.
    pub fn status(&self, call: &CallRef, update: StatusUpdate) -> bool {
        let Some((session, started)) = self.calls().get(&key(call)).cloned() else {
            debug!(call_id = %call.call_id, "status for a leg without an application");
            return false;
        };
        let new = session.report(update.status, update.sip_status, update.sip_reason);
        if update.status.is_final() && !started.load(Ordering::SeqCst) {
            self.forget(&session);
        }
        new
    }

    /// Live call control: the running application's list is replaced at once by what `hook`
    /// answers (resolved against the application's call_hook); it becomes the base for
    /// relative hooks. False when the leg runs no application.
    pub fn redirect(&self, call: &CallRef, hook: &HookSpec) -> Result<bool, AppError> {
        let Some((session, _)) = self.calls().get(&key(call)).cloned() else {
            return Ok(false);
        };
        let target = hook::resolve(&session.base(), hook)?;
        Ok(session.command(Command::Redirect(target)))
    }

    /// Live call control: `data` becomes the call's `customerData` in every later hook
    /// request (as the `tag` verb). False when the leg runs no application.
    pub fn tag(&self, call: &CallRef, data: Map<String, serde_json::Value>) -> bool {
        let Some((session, _)) = self.calls().get(&key(call)).cloned() else {
            return false;
        };
        session.set_customer_data(crate::verbs::tag::normalise_map(data));
        true
    }

    /// Live call control: later status changes of the leg go to `hook`. False when the leg
    /// runs no application.
    pub fn set_status_hook(&self, call: &CallRef, hook: Hook) -> bool {
        let Some((session, _)) = self.calls().get(&key(call)).cloned() else {
            return false;
        };
        session.set_status_hook(hook);
        true
    }

    /// Whether an application is registered on the leg `call` names.
    pub fn runs(&self, call: &CallRef) -> bool {
        self.calls().contains_key(&key(call))
    }

    /// The leg a `dial` of the application on `call` has connected, if any (its child call).
    pub fn child(&self, call: &CallRef) -> Option<String> {
        let (session, _) = self.calls().get(&key(call)).cloned()?;
        session.child()
    }

    /// `hook` resolved against the application of `call` (None: the leg runs none).
    pub fn resolve_hook(&self, call: &CallRef, hook: &HookSpec) -> Result<Option<Hook>, AppError> {
        let Some((session, _)) = self.calls().get(&key(call)).cloned() else {
            return Ok(None);
        };
        hook::resolve(&session.base(), hook).map(Some)
    }

    /// Live call control: the running list is replaced by what `hook` (absolute) answers.
    /// False when the leg runs no application.
    pub fn redirect_to(&self, call: &CallRef, hook: Hook) -> bool {
        let Some((session, _)) = self.calls().get(&key(call)).cloned() else {
            return false;
        };
        session.command(Command::Redirect(hook))
    }

    fn forget(&self, session: &Arc<Session>) {
        let mut calls = self.calls();
        let k = key(&session.call);
        if calls.get(&k).is_some_and(|(s, _)| Arc::ptr_eq(s, session)) {
            calls.remove(&k);
        }
    }

    async fn run(self, session: Arc<Session>) -> RunEnd {
        let end = self.run_inner(session.clone()).await;
        self.forget(&session);
        end
    }

    async fn run_inner(&self, session: Arc<Session>) -> RunEnd {
        let ctl = self.inner.control.clone();
        let call = session.call.clone();
        let mut signals = ctl.signals(&call);
        let mut commands = session.take_commands();
        let (dtmf_tx, dtmf_rx) = mpsc::channel(DTMF_BUFFER);
        if session.is_answered() {
            // Launched on an answered leg (outbound): in-progress, unless reported already.
            session.answered();
        }
        let mut x = Exec {
            call: call.clone(),
            ctl: ctl.clone(),
            session: session.clone(),
            dtmf: dtmf_rx,
            synth: Synthesizer::default(),
            recording_links: match self.inner.recording_links.lock() {
                Ok(l) => l.clone(),
                Err(p) => p.into_inner().clone(),
            },
        };
        info!("application starts");
        let mut source = Source::Initial;
        let step = loop {
            let step = {
                let fut = run_source(&mut x, source);
                tokio::pin!(fut);
                loop {
                    tokio::select! {
                        biased;
                        sig = signals.recv() => match sig {
                            Some(CallSignal::Dtmf(c)) => {
                                if dtmf_tx.try_send(c).is_err() {
                                    debug!("key dropped: nobody reads keys");
                                }
                            }
                            Some(CallSignal::Ended { sip_status, cause }) => {
                                break Step::Ended { sip_status: Some(sip_status), cause };
                            }
                            None => {
                                break Step::Ended { sip_status: None, cause: "signals closed".into() };
                            }
                        },
                        cmd = next_command(&mut commands) => match cmd {
                            Command::Redirect(hook) => break Step::Redirect(hook),
                        },
                        r = &mut fut => break Step::Done(r),
                    }
                }
            };
            match step {
                Step::Redirect(hook) => {
                    info!(url = %hook.url, "the application is redirected");
                    x.stop_play().await;
                    x.session.set_base(hook.clone());
                    source = Source::Hook(hook);
                }
                other => break other,
            }
        };
        self.finish(&mut x, step).await
    }

    /// Ends the call as the run's end requires and sends the final status.
    async fn finish(&self, x: &mut Exec, step: Step) -> RunEnd {
        let session = x.session.clone();
        let answered = session.is_answered();
        let (end, status, sip) = match step {
            Step::Ended { sip_status, cause } => {
                info!(sip_status, cause = %cause, "the call ended; the application stops");
                let status = if answered {
                    CallStatus::Completed
                } else if matches!(sip_status, Some(486 | 600)) {
                    CallStatus::Busy
                } else {
                    CallStatus::NoAnswer
                };
                (RunEnd::CallEnded { sip_status, cause }, status, sip_status)
            }
            Step::Done(Ok(ending)) => match ending {
                Ending::ListDone => {
                    info!("the application's verbs are done: hanging up");
                    if let Err(e) = x.ctl.hangup(&x.call, Vec::new()).await {
                        debug!(error = %e, "hangup at the end of the list");
                    }
                    hung_up(answered)
                }
                Ending::HungUp => hung_up(answered),
                Ending::Declined(s) => {
                    let status = if matches!(s, 486 | 600) {
                        CallStatus::Busy
                    } else {
                        CallStatus::Failed
                    };
                    (RunEnd::Declined(s), status, Some(s))
                }
            },
            Step::Done(Err(AppError::Control(ControlError::Gone))) => {
                info!("the call is gone; the application stops");
                let status = if answered {
                    CallStatus::Completed
                } else {
                    CallStatus::NoAnswer
                };
                (
                    RunEnd::CallEnded {
                        sip_status: None,
                        cause: "gone".into(),
                    },
                    status,
                    None,
                )
            }
            Step::Done(Err(e)) => {
                x.alert(
                    alert_kind(&e),
                    format!("the application failed: {e}; ending the call"),
                );
                if answered {
                    if let Err(c) = x.ctl.hangup(&x.call, Vec::new()).await {
                        debug!(error = %c, "hangup after the failure");
                    }
                    (RunEnd::Failed(e), CallStatus::Completed, Some(200))
                } else {
                    let r = x
                        .ctl
                        .decline(
                            &x.call,
                            480,
                            Some("Temporarily Unavailable".into()),
                            Vec::new(),
                        )
                        .await;
                    if let Err(c) = r {
                        // Answered after all: end it anyway.
                        debug!(error = %c, "decline after the failure; hanging up");
                        let _ = x.ctl.hangup(&x.call, Vec::new()).await;
                    }
                    (RunEnd::Failed(e), CallStatus::Failed, Some(480))
                }
            }
            // Redirects loop inside run_inner.
            Step::Redirect(_) => (RunEnd::HungUp, CallStatus::Completed, None),
        };
        session.report(status, sip, None);
        end
    }
}

fn hung_up(answered: bool) -> (RunEnd, CallStatus, Option<u16>) {
    if answered {
        (RunEnd::HungUp, CallStatus::Completed, Some(200))
    } else {
        (RunEnd::HungUp, CallStatus::Failed, None)
    }
}

fn alert_kind(e: &AppError) -> AlertKind {
    match e {
        AppError::Hook { .. } => AlertKind::WebhookFailure,
        AppError::BadHookUrl { .. }
        | AppError::InvalidJson { .. }
        | AppError::InvalidRcml { .. }
        | AppError::InvalidPushXml { .. }
        | AppError::NotAnArray { .. } => AlertKind::InvalidApp,
        AppError::Control(_) => AlertKind::CallControl,
    }
}

enum Source {
    /// The call_hook (then the fallback).
    Initial,
    /// A live redirect.
    Hook(Hook),
}

enum Step {
    Ended {
        sip_status: Option<u16>,
        cause: String,
    },
    Redirect(Hook),
    Done(Result<Ending, AppError>),
}

async fn next_command(c: &mut Option<mpsc::UnboundedReceiver<Command>>) -> Command {
    if let Some(rx) = c {
        if let Some(cmd) = rx.recv().await {
            return cmd;
        }
    }
    std::future::pending().await
}

async fn run_source(x: &mut Exec, source: Source) -> Result<Ending, AppError> {
    let script = match source {
        Source::Initial => initial(x).await?,
        Source::Hook(hook) => fetch_list(x, &hook, "call_hook").await?,
    };
    execute(x, script).await
}

/// The application's first list: the call_hook's, or the fallback's when that fails.
async fn initial(x: &mut Exec) -> Result<Script, AppError> {
    if let Some(script) = x.session.take_initial() {
        x.session.forget_sip();
        return Ok(script);
    }
    let hooks = x.session.hooks.clone();
    let result = match fetch_list(x, &hooks.call_hook, "call_hook").await {
        Ok(s) => Ok(s),
        Err(e) => match hooks.fallback {
            Some(fallback) => {
                x.alert(alert_kind(&e), format!("{e}; trying the fallback"));
                let r = fetch_list(x, &fallback, "fallback").await;
                if r.is_ok() {
                    // Its relative hooks go to the server that answered.
                    x.session.set_base(fallback);
                }
                r
            }
            None => Err(e),
        },
    };
    x.session.forget_sip();
    result
}

/// A hook whose answer must be a list of verbs.
async fn fetch_list(x: &mut Exec, hook: &Hook, label: &'static str) -> Result<Script, AppError> {
    match x.request_to(hook, Map::new(), label).await? {
        Answer::Verbs(v) if !v.is_empty() => Ok(v),
        // An empty RCML <Response/> is a document that hangs up.
        Answer::Verbs(v) if x.session.language.is_rcml() => Ok(v),
        Answer::Verbs(_) => Err(AppError::NotAnArray {
            label,
            url: hook.url.clone(),
            what: "an empty array".into(),
        }),
        Answer::Nothing(what) => Err(AppError::NotAnArray {
            label,
            url: hook.url.clone(),
            what,
        }),
    }
}

/// Runs the verbs in order until the list runs out or a verb ends the application.
async fn execute(x: &mut Exec, script: Script) -> Result<Ending, AppError> {
    let mut list = script;
    while let Some(item) = list.pop_front() {
        let verb = match item {
            Ok(v) => v,
            Err(e) => {
                x.alert(AlertKind::InvalidVerb, format!("verb skipped: {e}"));
                continue;
            }
        };
        debug!(verb = verb.name(), "verb");
        match verb.exec(x).await? {
            Flow::Next => {}
            Flow::Replace(new) => {
                debug!(verbs = new.len(), "the list is replaced");
                list = new;
            }
            Flow::End(ending) => return Ok(ending),
        }
    }
    Ok(Ending::ListDone)
}

#[cfg(test)]
#[path = "runtime_tests.rs"]
mod tests;
