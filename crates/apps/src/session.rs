//! One application run's shared state: the call fields as they change, the hook requests'
//! base, and the status reports (once each, in order, through the delivery's per-call queue).

use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{info, warn, Instrument};

use crate::alert::{Alert, AlertKind, AlertSink};
use crate::app::{AppHooks, CallFields, CallStatus, Hook, Language, Launch, SipInfo};
use crate::control::CallRef;
use crate::delivery::Delivery;
use crate::hook;

/// Commands into a running application (live call control).
#[derive(Debug)]
pub(crate) enum Command {
    /// Replace the running list with the one this hook answers.
    Redirect(Hook),
}

struct State {
    fields: CallFields,
    answered_at: Option<Instant>,
    /// Rank of the last status reported.
    reported: Option<u8>,
    /// The final status went out: nothing more is sent.
    finished: bool,
    /// Relative hooks resolve against this (the call_hook, or the fallback that served).
    base: Hook,
    /// Status callbacks sent so far (RCML `SequenceNumber`).
    status_sent: u64,
    /// Where status changes go: the application's call_status_hook, or the one a live
    /// update gave.
    status_hook: Option<Hook>,
    /// The leg a `dial` connected (its child call), while connected.
    child: Option<String>,
    /// Stops `config`'s background listen, while one runs.
    background_listen: Option<tokio::sync::oneshot::Sender<()>>,
}

pub(crate) struct Session {
    pub call: CallRef,
    pub hooks: AppHooks,
    pub secret: String,
    pub language: Language,
    pub delivery: Delivery,
    alerts: Option<AlertSink>,
    state: Mutex<State>,
    commands: mpsc::UnboundedSender<Command>,
    command_rx: Mutex<Option<mpsc::UnboundedReceiver<Command>>>,
    /// The first list when it is known before the run (a sipgate push answer): the
    /// call_hook is not fetched.
    initial: Mutex<Option<crate::verbs::Script>>,
}

impl Session {
    pub fn new(launch: Launch, delivery: Delivery, alerts: Option<AlertSink>) -> Arc<Self> {
        let answered_at = (launch.fields.call_status == CallStatus::InProgress).then(Instant::now);
        let (tx, rx) = mpsc::unbounded_channel();
        Arc::new(Session {
            call: launch.call,
            secret: launch.webhook_secret,
            delivery,
            alerts,
            state: Mutex::new(State {
                fields: launch.fields,
                answered_at,
                reported: None,
                finished: false,
                base: launch.hooks.call_hook.clone(),
                status_sent: 0,
                status_hook: launch.hooks.call_status_hook.clone(),
                child: None,
                background_listen: None,
            }),
            language: launch.language,
            hooks: launch.hooks,
            commands: tx,
            command_rx: Mutex::new(Some(rx)),
            initial: Mutex::new(None),
        })
    }

    /// The first list, instead of the call_hook's answer.
    pub fn set_initial(&self, script: crate::verbs::Script) {
        match self.initial.lock() {
            Ok(mut i) => *i = Some(script),
            Err(p) => *p.into_inner() = Some(script),
        }
    }

    /// The first list given before the run, once.
    pub fn take_initial(&self) -> Option<crate::verbs::Script> {
        match self.initial.lock() {
            Ok(mut i) => i.take(),
            Err(p) => p.into_inner().take(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        }
    }

    pub fn call_sid(&self) -> String {
        self.state().fields.call_sid.clone()
    }

    /// The fields for a hook request (with `sip` only while the first request is pending).
    pub fn payload(&self) -> Map<String, Value> {
        self.state().fields.to_json()
    }

    /// Drops `sip` once the first request is done.
    pub fn forget_sip(&self) -> Option<SipInfo> {
        self.state().fields.sip.take()
    }

    pub fn base(&self) -> Hook {
        self.state().base.clone()
    }

    pub fn set_base(&self, hook: Hook) {
        self.state().base = hook;
    }

    pub fn set_customer_data(&self, data: Map<String, Value>) {
        self.state().fields.customer_data = Some(data);
    }

    /// A live update's new status hook: later status changes go there.
    pub fn set_status_hook(&self, hook: Hook) {
        self.state().status_hook = Some(hook);
    }

    /// The dialled leg connected now (None: none is).
    pub fn set_child(&self, child: Option<String>) {
        self.state().child = child;
    }

    /// Keeps the stop of a new background listen; the previous one's, to stop it.
    pub fn replace_background_listen(
        &self,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
    ) -> Option<tokio::sync::oneshot::Sender<()>> {
        std::mem::replace(&mut self.state().background_listen, stop)
    }

    pub fn child(&self) -> Option<String> {
        self.state().child.clone()
    }

    /// A status of the child call `child_sid` (a leg `dial` connected) to the status hook:
    /// the parent's fields with the child's sid, `parent_call_sid`, `direction: outbound`
    /// and the dialled `to`.
    pub fn report_child(
        &self,
        child_sid: &str,
        to: Option<&str>,
        status: CallStatus,
        duration: Option<u64>,
    ) {
        self.report_child_sip(child_sid, to, status, 200, duration);
    }

    /// [`Self::report_child`] with the child's SIP status (180 ringing, 486 busy, ...).
    pub fn report_child_sip(
        &self,
        child_sid: &str,
        to: Option<&str>,
        status: CallStatus,
        sip_status: u16,
        duration: Option<u64>,
    ) {
        let (payload, hook) = {
            let st = self.state();
            let Some(hook) = st.status_hook.clone() else {
                return;
            };
            let mut f = st.fields.clone();
            f.parent_call_sid = Some(f.call_sid.clone());
            f.call_sid = child_sid.to_string();
            f.direction = crate::app::Direction::Outbound;
            f.call_status = status;
            f.sip_status = sip_status;
            f.sip = None;
            f.duration = duration;
            if let Some(to) = to {
                f.to = to.to_string();
            }
            (f.to_json(), hook)
        };
        info!(call_id = %self.call.call_id, child = child_sid, status = status.as_str(), "child call status");
        let request = hook::request(
            &hook,
            payload,
            &self.secret,
            &self.language,
            "call_status_hook",
        );
        let delivery = self.delivery.clone();
        let job = async move {
            if let Err(e) = delivery.send(&request).await {
                warn!(error = %e, "child call status not delivered");
            }
        };
        self.delivery
            .enqueue(&format!("jambonz-status:{child_sid}"), Box::pin(job));
    }

    pub fn is_answered(&self) -> bool {
        self.state().answered_at.is_some()
    }

    /// The leg is answered now: `in-progress` (once).
    pub fn answered(&self) {
        self.report(CallStatus::InProgress, Some(200), None);
    }

    pub fn take_commands(&self) -> Option<mpsc::UnboundedReceiver<Command>> {
        match self.command_rx.lock() {
            Ok(mut c) => c.take(),
            Err(p) => p.into_inner().take(),
        }
    }

    pub fn command(&self, c: Command) -> bool {
        self.commands.send(c).is_ok()
    }

    /// Records a status change and sends it to the status hook, unless a status as far or
    /// further along went out already. Returns whether it was new.
    pub fn report(
        &self,
        status: CallStatus,
        sip_status: Option<u16>,
        sip_reason: Option<String>,
    ) -> bool {
        let (payload, status_hook) = {
            let mut st = self.state();
            if st.finished || st.reported.is_some_and(|r| r >= status.rank()) {
                return false;
            }
            st.reported = Some(status.rank());
            st.fields.call_status = status;
            if let Some(s) = sip_status {
                st.fields.sip_status = s;
            }
            if sip_reason.is_some() {
                st.fields.sip_reason = sip_reason;
            }
            if status == CallStatus::InProgress && st.answered_at.is_none() {
                st.answered_at = Some(Instant::now());
            }
            if status.is_final() {
                st.finished = true;
                st.fields.duration = Some(st.answered_at.map_or(0, |t| t.elapsed().as_secs()));
            }
            let mut p = st.fields.to_json();
            p.remove("sip");
            if let Language::Rcml(options) = &self.language {
                if !options.reports(status) {
                    info!(call_id = %self.call.call_id, status = status.as_str(), "call status");
                    return true;
                }
                p.insert("sequence_number".into(), Value::from(st.status_sent));
                p.insert("timestamp".into(), Value::from(rfc2822_now()));
                p.insert(
                    "callback_source".into(),
                    Value::from("call-progress-events"),
                );
            }
            st.status_sent += 1;
            (p, st.status_hook.clone())
        };
        info!(call_id = %self.call.call_id, status = status.as_str(), "call status");
        let Some(status_hook) = &status_hook else {
            return true;
        };
        let request = hook::request(
            status_hook,
            payload,
            &self.secret,
            &self.language,
            "call_status_hook",
        );
        let delivery = self.delivery.clone();
        let call_sid = self.call_sid();
        let span = tracing::info_span!("call_status_hook", call_id = %self.call.call_id,
            call_sid = %call_sid, status = status.as_str());
        let job = async move {
            if let Err(e) = delivery.send(&request).await {
                warn!(error = %e, "call status not delivered");
            }
        }
        .instrument(span);
        self.delivery
            .enqueue(&format!("jambonz-status:{call_sid}"), Box::pin(job));
        true
    }

    /// Logs an alert with the call id and hands it to the sink.
    pub fn alert(&self, kind: AlertKind, message: String) {
        let (call_sid, account_sid) = {
            let st = self.state();
            (st.fields.call_sid.clone(), st.fields.account_sid.clone())
        };
        warn!(call_id = %self.call.call_id, leg_id = %self.call.leg_id, call_sid = %call_sid,
            alert = kind.as_str(), "{message}");
        if let Some(sink) = &self.alerts {
            sink(Alert {
                call: self.call.clone(),
                call_sid,
                account_sid,
                kind,
                message,
            });
        }
    }
}

/// Now as RFC 2822 (`Tue, 15 Mar 2017 10:10:57 +0000`), as RestComm's callbacks carry it.
fn rfc2822_now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc2822)
        .unwrap_or_default()
}
