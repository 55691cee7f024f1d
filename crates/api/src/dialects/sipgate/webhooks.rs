//! sipgate push API: form-encoded POSTs of `newCall`, `answer`, `hangup` and `dtmf`, as sipgate
//! sends them, fed from the engine's event bus in a background task.
//!
//! - `newCall` goes to the user's `webhook_url` for every call a user of the account is on
//!   (`direction=in` for the called user, `out` for the caller).
//! - As on sipgate, `answer` and `hangup` go to the URLs the app returned in its `newCall`
//!   answer: `<Response onAnswer="URL" onHangup="URL">` (the sipgateio webhook server sets
//!   them when handlers are registered).
//! - A call to a user with a webhook URL waits for the app's answer to `newCall`
//!   (bounded: `http.push_answer_timeout_ms`) before it rings anyone; the answer's XML is
//!   executed ([`PushHook`], `hookflash_apps::sipgate_xml`): a leading `<Dial>` rings other
//!   numbers instead, `<Dial><Voicemail/></Dial>` the user's voicemail, anything else runs on
//!   the application runtime. No, a failed, a late or an unreadable answer: the call rings the
//!   user as before.
//! - So does a call a user with a webhook URL places (`direction=out`), before it goes out:
//!   a leading `<Dial>` dials those numbers instead of the dialled one (as the user may dial),
//!   `<Reject>`, `<Hangup>`, `<Play>` run on the application runtime on the caller's leg
//!   (nobody rings). An answer with a `<Gather>` is not executed (its `onData` gets the other
//!   party's keys once connected, below), nor is `<Dial><Voicemail/></Dial>`. No usable
//!   answer: the call goes out as dialled.
//! - `dtmf` (`event=dtmf&dtmf=<digit>&callId=...`): a digit pressed by the *other* party of a
//!   user's call (once per press) goes to the `onData` URL of a `<Gather>` in the user's
//!   `newCall` answer (where sipgate sends it); without one, to the user's webhook URL.
//!   Digits the user presses themselves are not sent to their own app.
//! - Numbers are sent without '+'.
//! - Delivery never blocks a call: the engine publishes without waiting; this task hands each
//!   delivery to the shared webhook delivery (`hookflash_apps::delivery`): in order per
//!   webhook URL through a bounded queue (full: the event is dropped, logged and counted),
//!   retried on connection errors, timeouts, 429 and 5xx with exponential backoff.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hookflash_apps::app::{AppHooks, CallFields, CallStatus, Direction, Hook, Language, Launch};
use hookflash_apps::control::CallRef;
use hookflash_apps::sipgate_xml::{self, Plan};
use hookflash_apps::{Delivery, Request, Runtime};
use hookflash_engine::apps::AppCall;
use hookflash_engine::inbound_hook::{InboundDecision, InboundHook, Party, RingingUser};
use hookflash_engine::{
    BusEvent, CallDirection, CallInfo, EndCause, Engine, Event, EventKind, LegInfo, LegRole,
};
use hookflash_store::{normalize::check_webhook_url, User};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::sipgate::auth::login_name;
use crate::sipgate::numbers::{dids, leg_number, with_plus, without_plus, Dids};

/// Calls waiting for a `newCall` answer at once; more ring their user without waiting.
const MAX_AWAITED: usize = 256;
/// Users whose newCall was awaited (the caller, the called user), kept until the call's
/// first event (set-up is instant; older entries belong to calls that never started and are
/// dropped).
const PRE_ROUTED_MAX: usize = 4096;
const PRE_ROUTED_TTL: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    NewCall,
    Answer,
    Hangup,
    Dtmf,
}

/// (call id, user id): the follow-up URLs of a newCall answer are kept per key.
type FollowKey = (String, String);
/// The follow-up URLs of every (call, user) whose newCall was answered; filled and read by
/// the delivery jobs, which run in order per webhook URL.
type FollowMap = Arc<Mutex<HashMap<FollowKey, FollowUps>>>;

/// One user of the account on a call who has a webhook.
#[derive(Debug, Clone)]
struct Target {
    user: User,
    realm: String,
    url: String,
    direction: &'static str,
    /// Its `newCall` went out before the call rang (awaited): not sent again.
    announced: bool,
}

/// The users whose `newCall` was awaited, by call id, until the call's `new` event.
type PreRouted = Arc<Mutex<HashMap<String, (Vec<Target>, Instant)>>>;

fn lock_pre(p: &PreRouted) -> std::sync::MutexGuard<'_, HashMap<String, (Vec<Target>, Instant)>> {
    match p.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// sipgate's hangup causes (`normalClearing`, `busy`, `cancel`, `noAnswer`, `congestion`,
/// `notFound`) from the engine's end causes.
pub fn hangup_cause(cause: EndCause) -> &'static str {
    match cause {
        EndCause::Busy | EndCause::Rejected => "busy",
        EndCause::Cancel => "cancel",
        EndCause::NoAnswer | EndCause::Unavailable => "noAnswer",
        EndCause::NotFound => "notFound",
        EndCause::Normal
        | EndCause::Api
        | EndCause::Shutdown
        | EndCause::RtpTimeout
        | EndCause::Parked
        | EndCause::Transferred => "normalClearing",
        // Failures of the call or the network.
        EndCause::Failed
        | EndCause::Incompatible
        | EndCause::AckTimeout
        | EndCause::SessionExpired
        | EndCause::ParkTimeout
        | EndCause::Replaced
        | EndCause::TransferFailed
        | EndCause::Crash
        | EndCause::NodeFailure => "congestion",
    }
}

/// The push events an engine event becomes (None: sipgate has no push for it).
fn push_kind(kind: EventKind) -> Option<Kind> {
    match kind {
        EventKind::New => Some(Kind::NewCall),
        EventKind::Answered => Some(Kind::Answer),
        EventKind::Ended => Some(Kind::Hangup),
        EventKind::Dtmf => Some(Kind::Dtmf),
        EventKind::Ringing
        | EventKind::Held
        | EventKind::Retrieved
        | EventKind::Muted
        | EventKind::Unmuted
        | EventKind::RecordingStarted
        | EventKind::RecordingStopped
        | EventKind::Forwarded
        | EventKind::Voicemail
        | EventKind::Parked
        | EventKind::Unparked
        | EventKind::TransferStarted
        | EventKind::TransferRinging
        | EventKind::TransferConsulting
        | EventKind::Transferred
        | EventKind::TransferFailed => None,
    }
}

/// The push `direction` of a user on a leg: `out` for the caller, `in` for the called.
fn push_direction(role: LegRole) -> &'static str {
    match role {
        LegRole::Caller => "out",
        LegRole::Callee => "in",
    }
}

/// Starts the dispatcher and installs the engine's inbound hook (awaited `newCall`, XML
/// executed; `runtime` runs what the engine does not). It runs until `stop` is cancelled.
pub fn spawn(
    engine: Engine,
    delivery: Delivery,
    stop: CancellationToken,
    runtime: Option<Runtime>,
    answer_timeout: Duration,
) {
    // The live feed carries every account's events; the account filter is ours.
    let live = engine.events().subscribe_all();
    let follow = FollowMap::default();
    let pre = PreRouted::default();
    engine.set_inbound_hook(Arc::new(PushHook {
        engine: engine.clone(),
        delivery: delivery.clone(),
        runtime,
        follow: follow.clone(),
        pre: pre.clone(),
        timeout: answer_timeout,
        gate: Arc::new(Semaphore::new(MAX_AWAITED)),
    }));
    let dispatcher = Dispatcher {
        engine,
        delivery,
        stop,
        follow,
        pre,
        calls: HashMap::new(),
    };
    tokio::spawn(dispatcher.run(live));
}

struct Dispatcher {
    engine: Engine,
    delivery: Delivery,
    stop: CancellationToken,
    follow: FollowMap,
    pre: PreRouted,
    /// Webhook targets of each call, decided at `new`.
    calls: HashMap<String, Vec<Target>>,
}

impl Dispatcher {
    async fn run(mut self, mut live: tokio::sync::broadcast::Receiver<BusEvent>) {
        loop {
            let event = tokio::select! {
                _ = self.stop.cancelled() => break,
                e = live.recv() => e,
            };
            match event {
                Ok(BusEvent::Call(e)) => self.on_event(e).await,
                // sipgate's push API has no conference events.
                Ok(BusEvent::Conference(_)) => {}
                Err(RecvError::Lagged(n)) => {
                    warn!(
                        skipped = n,
                        "webhook dispatcher lagged; events were not delivered"
                    )
                }
                Err(RecvError::Closed) => break,
            }
        }
        debug!("webhook dispatcher stopped");
    }

    async fn on_event(&mut self, event: Event) {
        let Some(kind) = push_kind(event.kind) else {
            return;
        };
        if kind == Kind::NewCall {
            let mut targets = self.targets(&event.call).await;
            // The users whose newCall was awaited: not announced twice, and still told of
            // the call when their app sent it elsewhere.
            let awaited = lock_pre(&self.pre).remove(&event.call_id);
            for pre in awaited.map(|(p, _)| p).unwrap_or_default() {
                match targets.iter_mut().find(|t| t.user.id == pre.user.id) {
                    Some(t) => t.announced = true,
                    None => targets.push(pre),
                }
            }
            if targets.is_empty() {
                return;
            }
            self.calls.insert(event.call_id.clone(), targets);
        }
        let targets = if kind == Kind::Hangup {
            self.calls.remove(&event.call_id)
        } else {
            self.calls.get(&event.call_id).cloned()
        };
        let Some(targets) = targets else {
            return;
        };
        let numbers = match self.engine.store().numbers(&event.account_id).await {
            Ok(n) => dids(&n),
            Err(e) => {
                warn!(error = %e, "webhook: cannot read numbers; rendering extensions");
                Dids::new()
            }
        };
        for target in &targets {
            if kind == Kind::Dtmf && pressed_by(&event, &target.user.id) {
                continue;
            }
            if kind == Kind::NewCall && target.announced {
                continue;
            }
            let form = form(kind, &event, target, &numbers);
            let key = (event.call_id.clone(), target.user.id.clone());
            let job = deliver(
                self.delivery.clone(),
                self.follow.clone(),
                target.url.clone(),
                kind,
                key,
                form,
            );
            if !self.delivery.enqueue(&target.url, Box::pin(job)) {
                warn!(url = %target.url, event = ?kind, "sipgate push event dropped");
            }
        }
    }

    /// Users of the account on this call with a webhook URL.
    async fn targets(&self, call: &CallInfo) -> Vec<Target> {
        let store = self.engine.store();
        let realm = match store.account_by_id(&call.account_id).await {
            Ok(Some(a)) => a.realm,
            _ => String::new(),
        };
        let mut out: Vec<Target> = Vec::new();
        for leg in &call.legs {
            let Some(user_id) = &leg.owner_user_id else {
                continue;
            };
            if out.iter().any(|t| &t.user.id == user_id) {
                continue;
            }
            let user = match store.user_by_id(user_id).await {
                Ok(Some(u)) => u,
                Ok(None) => continue,
                Err(e) => {
                    warn!(error = %e, "webhook: cannot read user");
                    continue;
                }
            };
            let url = match store.user_webhook(user_id).await {
                Ok(Some(url)) => url,
                Ok(None) => continue,
                Err(e) => {
                    warn!(error = %e, "webhook: cannot read the user's webhook URL");
                    continue;
                }
            };
            if user.account_id != call.account_id || check_webhook_url(&url).is_err() {
                continue;
            }
            out.push(Target {
                user,
                realm: realm.clone(),
                url,
                direction: push_direction(leg.role),
                announced: false,
            });
        }
        out
    }
}

/// True when the event's leg (the phone that pressed a digit) is the user's own.
fn pressed_by(event: &Event, user_id: &str) -> bool {
    event.leg_id.as_ref().is_some_and(|leg| {
        event
            .call
            .leg(leg)
            .is_some_and(|l| l.owner_user_id.as_deref() == Some(user_id))
    })
}

fn caller(call: &CallInfo) -> Option<&LegInfo> {
    call.legs.iter().find(|l| l.role == LegRole::Caller)
}

fn callee(call: &CallInfo) -> Option<&LegInfo> {
    call.legs.iter().find(|l| l.role == LegRole::Callee)
}

fn user_name(u: &User) -> String {
    u.display_name
        .clone()
        .unwrap_or_else(|| u.extension.clone())
}

/// The form fields of one event for one user, as sipgate sends them.
fn form(kind: Kind, event: &Event, target: &Target, dids: &Dids) -> Vec<(String, String)> {
    let call = &event.call;
    if kind == Kind::Dtmf {
        return vec![
            ("event".to_string(), "dtmf".to_string()),
            ("dtmf".to_string(), event.digit.clone().unwrap_or_default()),
            ("callId".to_string(), call.id.clone()),
            ("origCallId".to_string(), call.id.clone()),
        ];
    }
    let number = |leg: Option<&LegInfo>, fallback: &str| {
        without_plus(
            &leg.map(|l| leg_number(l, dids))
                .unwrap_or_else(|| fallback.to_string()),
        )
    };
    let from = number(caller(call), &call.from);
    // An inbound call was to one of the user's numbers: the one the caller dialled.
    let to = match call.direction {
        CallDirection::Inbound => without_plus(&call.dialled),
        CallDirection::Internal | CallDirection::Outbound => number(callee(call), &call.to),
    };
    let mut f: Vec<(String, String)> = Vec::new();
    let mut add = |k: &str, v: String| f.push((k.to_string(), v));
    add(
        "event",
        match kind {
            Kind::NewCall => "newCall",
            Kind::Answer => "answer",
            Kind::Hangup => "hangup",
            Kind::Dtmf => "dtmf",
        }
        .to_string(),
    );
    if kind == Kind::Hangup {
        add(
            "cause",
            hangup_cause(event.cause.unwrap_or(EndCause::Normal)).to_string(),
        );
    }
    add("direction", target.direction.to_string());
    add("from", from);
    add("to", to.clone());
    add("callId", call.id.clone());
    add("origCallId", call.id.clone());
    add("xcid", call.id.clone());
    let u = &target.user;
    match kind {
        Kind::NewCall => {
            add("user[]", user_name(u));
            add("userId[]", u.extension.clone());
            add("fullUserId[]", login_name(&u.extension, &target.realm));
        }
        Kind::Answer => {
            add("user", user_name(u));
            add("userId", u.extension.clone());
            add("fullUserId", login_name(&u.extension, &target.realm));
            add("answeringNumber", to);
        }
        Kind::Hangup => {
            if call.answered_at_ms.is_some() {
                add("answeringNumber", to);
            }
        }
        Kind::Dtmf => {}
    }
    f
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FollowUps {
    pub on_answer: Option<String>,
    pub on_hangup: Option<String>,
    /// `onData` of a `<Gather>`: where `dtmf` events go.
    pub on_data: Option<String>,
    /// The answer was executed (the runtime runs the call): keys are not forwarded one by
    /// one; a `<Gather>` posts them.
    pub executed: bool,
}

fn lock(follow: &FollowMap) -> std::sync::MutexGuard<'_, HashMap<FollowKey, FollowUps>> {
    match follow.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// One push event's delivery, run in order with the others of the user's webhook URL: a
/// `newCall` answer's follow-up URLs are known before that call's `answer` is sent.
async fn deliver(
    delivery: Delivery,
    follow: FollowMap,
    url: String,
    kind: Kind,
    key: FollowKey,
    form: Vec<(String, String)>,
) {
    let label = match kind {
        Kind::NewCall => "newCall",
        Kind::Answer => "answer",
        Kind::Hangup => "hangup",
        Kind::Dtmf => "dtmf",
    };
    let target = match kind {
        Kind::NewCall => Some(url.clone()),
        Kind::Answer => lock(&follow).get(&key).and_then(|f| f.on_answer.clone()),
        Kind::Hangup => lock(&follow).remove(&key).and_then(|f| f.on_hangup),
        Kind::Dtmf => {
            let f = lock(&follow).get(&key).cloned().unwrap_or_default();
            if f.executed {
                None
            } else {
                Some(f.on_data.unwrap_or_else(|| url.clone()))
            }
        }
    };
    let Some(target) = target else {
        return;
    };
    let result = delivery
        .send(&Request::post_form(&target, form, label))
        .await;
    if kind == Kind::NewCall {
        if let Ok(reply) = result {
            lock(&follow).insert(key, parse_follow_ups(&reply.body));
        }
    }
}

/// `onAnswer` / `onHangup` of the `<Response>` element of a newCall answer and `onData` of its
/// `<Gather>` (http(s) URLs only; an unreadable answer has none).
pub fn parse_follow_ups(xml: &str) -> FollowUps {
    match sipgate_xml::parse(xml) {
        Ok(x) => follow_ups(&x, false),
        Err(e) => {
            debug!(error = %e, "newCall answer unreadable: no follow-up URLs");
            FollowUps::default()
        }
    }
}

fn follow_ups(x: &sipgate_xml::PushXml, executed: bool) -> FollowUps {
    let ok = |u: Option<&str>| {
        u.filter(|v| check_webhook_url(v).is_ok())
            .map(str::to_string)
    };
    FollowUps {
        on_answer: ok(x.on_answer.as_deref()),
        on_hangup: ok(x.on_hangup.as_deref()),
        on_data: if executed { None } else { ok(x.on_data()) },
        executed,
    }
}

/// The engine's call hook: a call to or from a user with a webhook URL waits for the app's
/// answer to `newCall` and does what it says.
struct PushHook {
    engine: Engine,
    delivery: Delivery,
    runtime: Option<Runtime>,
    follow: FollowMap,
    pre: PreRouted,
    timeout: Duration,
    /// Bounds the calls waiting for an answer at once.
    gate: Arc<Semaphore>,
}

impl InboundHook for PushHook {
    fn before_ring(
        &self,
        call: RingingUser,
    ) -> Pin<Box<dyn Future<Output = InboundDecision> + Send + 'static>> {
        let hook = PushHook {
            engine: self.engine.clone(),
            delivery: self.delivery.clone(),
            runtime: self.runtime.clone(),
            follow: self.follow.clone(),
            pre: self.pre.clone(),
            timeout: self.timeout,
            gate: self.gate.clone(),
        };
        Box::pin(async move { hook.decide(call).await })
    }
}

impl PushHook {
    async fn decide(self, call: RingingUser) -> InboundDecision {
        let store = self.engine.store();
        let url = match store.user_webhook(&call.user_id).await {
            Ok(Some(url)) if check_webhook_url(&url).is_ok() => url,
            Ok(_) => return InboundDecision::Ring,
            Err(e) => {
                warn!(error = %e, "webhook: cannot read the user's webhook URL");
                return InboundDecision::Ring;
            }
        };
        let user = match store.user_by_id(&call.user_id).await {
            Ok(Some(u)) if u.account_id == call.account_id => u,
            _ => return InboundDecision::Ring,
        };
        let Ok(_permit) = self.gate.clone().try_acquire_owned() else {
            warn!("too many calls wait for a newCall answer; this one rings without waiting");
            return InboundDecision::Ring;
        };
        let realm = match store.account_by_id(&call.account_id).await {
            Ok(Some(a)) => a.realm,
            _ => String::new(),
        };
        let numbers = store.numbers(&call.account_id).await.unwrap_or_default();
        let dids = dids(&numbers);
        // The caller as the push shows it: a user of the account by their number.
        let from = match store.user_by_extension(&call.account_id, &call.from).await {
            Ok(Some(u)) => dids.get(&u.id).cloned().unwrap_or(u.extension),
            _ => with_plus(&call.from),
        };
        let to = match (call.party, call.direction) {
            // What the caller dialled: a user of the account by their number.
            (Party::Caller, _) => match store
                .user_by_extension(&call.account_id, &call.dialled)
                .await
            {
                Ok(Some(u)) => dids.get(&u.id).cloned().unwrap_or(u.extension),
                _ => with_plus(&call.dialled),
            },
            (Party::Callee, CallDirection::Inbound) => call.dialled.clone(),
            (Party::Callee, CallDirection::Internal | CallDirection::Outbound) => dids
                .get(&user.id)
                .cloned()
                .unwrap_or_else(|| user.extension.clone()),
        };
        let direction = match call.party {
            Party::Callee => "in",
            Party::Caller => "out",
        };
        let target = Target {
            user: user.clone(),
            realm: realm.clone(),
            url: url.clone(),
            direction,
            announced: true,
        };
        {
            let mut pre = lock_pre(&self.pre);
            let now = Instant::now();
            // Calls that never started: forget them and their follow-up URLs.
            let stale: Vec<FollowKey> = pre
                .iter()
                .filter(|(_, (_, at))| now.duration_since(*at) >= PRE_ROUTED_TTL)
                .flat_map(|(call, (ts, _))| ts.iter().map(|t| (call.clone(), t.user.id.clone())))
                .collect();
            if !stale.is_empty() {
                let mut follow = lock(&self.follow);
                for key in &stale {
                    pre.remove(&key.0);
                    follow.remove(key);
                }
            }
            if pre.len() >= PRE_ROUTED_MAX && !pre.contains_key(&call.call_id) {
                warn!("too many calls between newCall and their start; ringing without waiting");
                return InboundDecision::Ring;
            }
            pre.entry(call.call_id.clone())
                .or_insert_with(|| (Vec::new(), now))
                .0
                .push(target);
        }
        let form = new_call_form(&call.call_id, direction, &from, &to, &user, &realm);
        let request = Request::post_form(&url, form, "newCall");
        let reply =
            match tokio::time::timeout(self.timeout, self.delivery.send_once(&request)).await {
                Ok(Ok(reply)) => reply,
                Ok(Err(e)) => {
                    info!(%url, error = %e, "newCall answer failed; the call goes on as it was");
                    return InboundDecision::Ring;
                }
                Err(_) => {
                    info!(%url, timeout_ms = self.timeout.as_millis() as u64,
                    "no newCall answer in time; the call goes on as it was");
                    return InboundDecision::Ring;
                }
            };
        let xml = match sipgate_xml::parse(&reply.body) {
            Ok(x) => x,
            Err(e) => {
                warn!(%url, error = %e, "newCall answer is not sipgate XML; the call goes on as it was");
                return InboundDecision::Ring;
            }
        };
        for why in &xml.ignored {
            warn!(%url, "newCall answer: skipped {why}");
        }
        let key = (call.call_id.clone(), user.id.clone());
        let mut plan = xml.plan();
        // A caller's <Gather> is not executed: the call goes out as dialled and the keys the
        // other party presses go to its onData (the dtmf push), as before.
        let gathers = xml
            .actions
            .iter()
            .any(|a| matches!(a, sipgate_xml::Action::Gather { .. }));
        if call.party == Party::Caller && gathers && matches!(plan, Plan::Run(_)) {
            info!(%url, "a caller's newCall answer with <Gather> is not executed; the call goes out as dialled");
            plan = Plan::Ring;
        }
        let executed = matches!(plan, Plan::Run(_));
        lock(&self.follow).insert(key, follow_ups(&xml, executed));
        match plan {
            Plan::Ring => InboundDecision::Ring,
            Plan::Dial {
                numbers: targets,
                caller_id,
                anonymous,
            } => {
                let caller_id = if anonymous {
                    Some("anonymous".to_string())
                } else {
                    caller_id.and_then(|c| {
                        let ours = numbers.iter().any(|n| n.number == with_plus(&c));
                        if !ours {
                            warn!(caller_id = %c, "Dial callerId is not a number of the account; ignored");
                        }
                        ours.then(|| with_plus(&c))
                    })
                };
                InboundDecision::Redirect { targets, caller_id }
            }
            Plan::Voicemail if call.party == Party::Caller => {
                info!(
                    "<Dial><Voicemail/> in a caller's newCall answer; the call goes out as dialled"
                );
                InboundDecision::Ring
            }
            Plan::Voicemail => match store.mailbox(&user.id).await {
                Ok(Some(m)) if m.enabled => InboundDecision::Voicemail,
                _ => {
                    warn!(user = %user.extension, "<Voicemail/>: the user has no mailbox; the call rings the user");
                    InboundDecision::Ring
                }
            },
            Plan::Run(script) => {
                let Some(runtime) = self.runtime.clone() else {
                    warn!(
                        "no application runtime to run the newCall answer; the call goes on as it was"
                    );
                    lock(&self.follow).insert(
                        (call.call_id.clone(), user.id.clone()),
                        follow_ups(&xml, false),
                    );
                    return InboundDecision::Ring;
                };
                let hook = Hook::post(&url);
                let direction = match call.party {
                    Party::Callee => Direction::Inbound,
                    Party::Caller => Direction::Outbound,
                };
                InboundDecision::Application(Box::new(move |app: AppCall| {
                    let launch = push_launch(&app, hook, direction, from, to);
                    runtime.launch_with_script(launch, script);
                }))
            }
        }
    }
}

/// The `newCall` form of the called user of a call that is about to ring them
/// (`direction` in), or of the user who places it (out).
fn new_call_form(
    call_id: &str,
    direction: &str,
    from: &str,
    to: &str,
    u: &User,
    realm: &str,
) -> Vec<(String, String)> {
    let mut f: Vec<(String, String)> = Vec::new();
    let mut add = |k: &str, v: String| f.push((k.to_string(), v));
    add("event", "newCall".into());
    add("direction", direction.into());
    add("from", without_plus(from));
    add("to", without_plus(to));
    add("callId", call_id.to_string());
    add("origCallId", call_id.to_string());
    add("xcid", call_id.to_string());
    add("user[]", user_name(u));
    add("userId[]", u.extension.clone());
    add("fullUserId[]", login_name(&u.extension, realm));
    f
}

/// The runtime's launch for a call the push answer runs: its hook requests (a Gather's
/// `onData`) speak sipgate; the user's webhook URL is the base of relative URLs.
fn push_launch(
    app: &AppCall,
    hook: Hook,
    direction: Direction,
    from: String,
    to: String,
) -> Launch {
    Launch {
        call: CallRef {
            account_id: app.account_id.clone(),
            call_id: app.call_id.clone(),
            leg_id: app.leg_id.clone(),
        },
        hooks: AppHooks {
            call_hook: hook,
            call_status_hook: None,
            fallback: None,
        },
        webhook_secret: String::new(),
        fields: CallFields {
            call_sid: app.leg_id.clone(),
            direction,
            from,
            to,
            call_id: app.sip_call_id.clone(),
            sip_status: 100,
            sip_reason: Some("Trying".into()),
            call_status: CallStatus::Trying,
            caller_id: app.caller_name.clone(),
            account_sid: app.account_id.clone(),
            application_sid: app.application_id.clone(),
            trace_id: Some(app.call_id.clone()),
            ..CallFields::default()
        },
        language: Language::Sipgate,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookflash_engine::{CallState, LegDirection, LegState};

    #[test]
    fn follow_ups_from_the_sdk_response() {
        let xml = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<Response onAnswer=\"http://127.0.0.1:9/x?a=1&amp;b=2\" onHangup='http://127.0.0.1:9/x'/>";
        assert_eq!(
            parse_follow_ups(xml),
            FollowUps {
                on_answer: Some("http://127.0.0.1:9/x?a=1&b=2".into()),
                on_hangup: Some("http://127.0.0.1:9/x".into()),
                on_data: None,
                executed: false,
            }
        );
        // The SDK's gatherDTMF answer: onData on the Gather element.
        let xml = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<Response onHangup=\"http://127.0.0.1:9/h\">\n    <Gather maxDigits=\"3\" timeout=\"5000\" onData=\"http://127.0.0.1:9/d\"/>\n</Response>";
        assert_eq!(
            parse_follow_ups(xml),
            FollowUps {
                on_answer: None,
                on_hangup: Some("http://127.0.0.1:9/h".into()),
                on_data: Some("http://127.0.0.1:9/d".into()),
                executed: false,
            }
        );
        assert_eq!(
            parse_follow_ups("<ResponseX onAnswer=\"http://127.0.0.1:9/x\">"),
            FollowUps::default()
        );
        assert_eq!(
            parse_follow_ups("<Response></Response>"),
            FollowUps::default()
        );
        assert_eq!(parse_follow_ups(""), FollowUps::default());
        assert_eq!(
            parse_follow_ups("<Response onAnswer=\"javascript:x\">"),
            FollowUps::default()
        );
        assert_eq!(
            parse_follow_ups("<Response onAnswer=\"http://a"),
            FollowUps::default()
        );
    }

    #[test]
    fn executed_answers_take_the_keys_themselves() {
        let xml = "<Response onHangup=\"http://127.0.0.1:9/h\"><Gather onData=\"http://127.0.0.1:9/d\" maxDigits=\"2\"/></Response>";
        let x = sipgate_xml::parse(xml).unwrap();
        // Executed: the Gather posts its digits; none are forwarded one by one.
        let f = follow_ups(&x, true);
        assert_eq!(f.on_data, None);
        assert!(f.executed);
        assert_eq!(f.on_hangup.as_deref(), Some("http://127.0.0.1:9/h"));
        // Not executed (an outbound newCall): each key goes to onData.
        assert_eq!(
            follow_ups(&x, false).on_data.as_deref(),
            Some("http://127.0.0.1:9/d")
        );
        let user = User {
            id: "id-201".into(),
            account_id: "a".into(),
            extension: "201".into(),
            display_name: Some("Alice".into()),
            ha1_md5: String::new(),
            ha1_sha256: String::new(),
            dial_classes: None,
        };
        let f = new_call_form(
            "c1",
            "in",
            "+4915799912345",
            "+4930123456",
            &user,
            "acme.local",
        );
        assert_eq!(
            serde_urlencoded::to_string(&f).unwrap(),
            "event=newCall&direction=in&from=4915799912345&to=4930123456&callId=c1\
             &origCallId=c1&xcid=c1&user%5B%5D=Alice&userId%5B%5D=201\
             &fullUserId%5B%5D=201%40acme.local"
        );
    }

    /// Every engine end cause, by its wire word, with the sipgate cause it must become. A new
    /// cause fails to compile in `hangup_cause` and then fails here until it is listed.
    const SIPGATE_CAUSES: &[(&str, &str)] = &[
        ("normal", "normalClearing"),
        ("api", "normalClearing"),
        ("shutdown", "normalClearing"),
        ("cancel", "cancel"),
        ("busy", "busy"),
        ("rejected", "busy"),
        ("not_found", "notFound"),
        ("unavailable", "noAnswer"),
        ("no_answer", "noAnswer"),
        ("incompatible", "congestion"),
        ("failed", "congestion"),
        ("ack_timeout", "congestion"),
        ("rtp_timeout", "normalClearing"),
        ("session_expired", "congestion"),
        ("park_timeout", "congestion"),
        ("replaced", "congestion"),
        ("transfer_failed", "congestion"),
        ("parked", "normalClearing"),
        ("transferred", "normalClearing"),
        ("crash", "congestion"),
        ("node_failure", "congestion"),
    ];

    #[test]
    fn every_cause_maps_to_a_sipgate_name() {
        let listed: Vec<&str> = SIPGATE_CAUSES.iter().map(|(c, _)| *c).collect();
        let all: Vec<&str> = EndCause::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(listed, all, "every EndCause, in declaration order");
        let sipgate = [
            "normalClearing",
            "busy",
            "cancel",
            "noAnswer",
            "congestion",
            "notFound",
        ];
        for (word, expected) in SIPGATE_CAUSES {
            let cause = EndCause::parse(word).unwrap();
            assert_eq!(hangup_cause(cause), *expected, "{word}");
            assert!(sipgate.contains(expected), "{expected} is a sipgate cause");
        }
    }

    #[test]
    fn only_call_life_events_are_pushed() {
        let pushed: Vec<(EventKind, Kind)> = EventKind::ALL
            .iter()
            .filter_map(|k| push_kind(*k).map(|p| (*k, p)))
            .collect();
        assert_eq!(
            pushed,
            [
                (EventKind::New, Kind::NewCall),
                (EventKind::Answered, Kind::Answer),
                (EventKind::Dtmf, Kind::Dtmf),
                (EventKind::Ended, Kind::Hangup),
            ]
        );
        assert_eq!(push_direction(LegRole::Caller), "out");
        assert_eq!(push_direction(LegRole::Callee), "in");
    }

    fn leg(role: LegRole, number: &str, user: Option<&str>) -> LegInfo {
        LegInfo {
            id: format!("leg-{role}"),
            role,
            direction: match role {
                LegRole::Caller => LegDirection::In,
                LegRole::Callee => LegDirection::Out,
            },
            state: LegState::Answered,
            number: number.into(),
            owner_user_id: user.map(|u| format!("id-{u}")),
            owner_extension: user.map(str::to_string),
            muted: false,
            held: false,
            recording: false,
            devices: vec![],
            voicemail: false,
        }
    }

    #[test]
    fn forms_are_sipgate_shaped() {
        let call = CallInfo {
            id: "c1".into(),
            account_id: "a".into(),
            from: "+4915799912345".into(),
            to: "201".into(),
            dialled: "+4930123456".into(),
            direction: CallDirection::Inbound,
            state: CallState::Answered,
            started_at_ms: 0,
            answered_at_ms: Some(1),
            legs: vec![
                leg(LegRole::Caller, "+4915799912345", None),
                leg(LegRole::Callee, "201", Some("201")),
            ],
            dialling: Vec::new(),
        };
        let user = User {
            id: "id-201".into(),
            account_id: "a".into(),
            extension: "201".into(),
            display_name: Some("Alice".into()),
            ha1_md5: String::new(),
            ha1_sha256: String::new(),
            dial_classes: None,
        };
        let target = Target {
            user,
            realm: "acme.local".into(),
            url: "http://x".into(),
            direction: "in",
            announced: false,
        };
        let dids: Dids = [("id-201".to_string(), "+4930123456".to_string())].into();
        let ev = |kind, cause: Option<EndCause>| Event {
            seq: 1,
            account_id: "a".into(),
            kind,
            call_id: "c1".into(),
            leg_id: None,
            cause,
            at_ms: 0,
            digit: None,
            recording_id: None,
            target: None,
            call: call.clone(),
        };
        let get = |f: &[(String, String)], k: &str| {
            f.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        };
        let f = form(Kind::NewCall, &ev(EventKind::New, None), &target, &dids);
        assert_eq!(get(&f, "event").as_deref(), Some("newCall"));
        assert_eq!(get(&f, "from").as_deref(), Some("4915799912345"));
        assert_eq!(get(&f, "to").as_deref(), Some("4930123456"));
        assert_eq!(get(&f, "direction").as_deref(), Some("in"));
        assert_eq!(get(&f, "user[]").as_deref(), Some("Alice"));
        assert_eq!(get(&f, "userId[]").as_deref(), Some("201"));
        assert_eq!(get(&f, "fullUserId[]").as_deref(), Some("201@acme.local"));
        assert_eq!(get(&f, "callId").as_deref(), Some("c1"));
        let body = serde_urlencoded::to_string(&f).unwrap();
        assert!(body.contains("user%5B%5D=Alice"), "{body}");
        let f = form(Kind::Answer, &ev(EventKind::Answered, None), &target, &dids);
        assert_eq!(get(&f, "answeringNumber").as_deref(), Some("4930123456"));
        assert_eq!(get(&f, "user").as_deref(), Some("Alice"));
        let f = form(
            Kind::Hangup,
            &ev(EventKind::Ended, Some(EndCause::Busy)),
            &target,
            &dids,
        );
        assert_eq!(get(&f, "event").as_deref(), Some("hangup"));
        assert_eq!(get(&f, "cause").as_deref(), Some("busy"));
        let mut dtmf = ev(EventKind::Dtmf, None);
        dtmf.digit = Some("#".into());
        dtmf.leg_id = Some("leg-caller".into());
        let f = form(Kind::Dtmf, &dtmf, &target, &dids);
        assert_eq!(get(&f, "event").as_deref(), Some("dtmf"));
        assert_eq!(get(&f, "dtmf").as_deref(), Some("#"));
        assert_eq!(get(&f, "callId").as_deref(), Some("c1"));
        assert_eq!(
            serde_urlencoded::to_string(&f).unwrap(),
            "event=dtmf&dtmf=%23&callId=c1&origCallId=c1"
        );
        // The caller pressed it: it goes to 201's app; 201's own digits do not.
        assert!(!pressed_by(&dtmf, "id-201"));
        dtmf.leg_id = Some("leg-callee".into());
        assert!(pressed_by(&dtmf, "id-201"));
    }
}
