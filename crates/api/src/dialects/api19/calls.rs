//! `Accounts/{AccountSid}/Calls`: create (an outbound call that runs RCML), list, get and
//! modify (live call modification: redirect to new RCML, end, cancel, mute).
//!
//! An api19 call is one leg of an engine call (its CallSid is `CA` + the leg id's hex): a
//! call created here is its leg A (the dialled party the RCML runs); in other calls every
//! leg is a call and leg B has leg A as `parent_call_sid`. Creating and redirecting go
//! through the shared application runtime (`hookflash_apps::dispatch::create_call`, the
//! runtime's redirect), the same as the jambonz dialect.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{OriginalUri, Path, Query, State};
use axum::response::Response;
use hookflash_apps::control::CallRef;
use hookflash_apps::dispatch::{create_call, CreateCall};
use hookflash_apps::rcml::{sids, RcmlOptions, StatusEvent};
use hookflash_apps::{
    AppHooks, CallFields, CallStatus, Direction, Hook, HookSpec, Language, Launch, Method,
};
use hookflash_engine::{CallDirection, CallInfo, CallState, LegDirection, LegInfo, LegState};

use super::error::Api19Error;
use super::render::{self, CallResource, Format, Page, SubresourceUris};
use super::{Api19Account, Api19State, Created};

type Result<T> = std::result::Result<T, Api19Error>;

const API_VERSION: &str = hookflash_apps::rcml::API_VERSION;
/// RestComm's default and largest page size.
const DEFAULT_PAGE_SIZE: usize = 50;
const MAX_PAGE_SIZE: usize = 1000;
/// RestComm's default ringing time for created calls.
const DEFAULT_TIMEOUT_SECS: u64 = 60;

fn iso(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn status(leg: &LegInfo, call: &CallInfo) -> &'static str {
    match leg.state {
        LegState::Setup | LegState::Proceeding => "queued",
        LegState::Ringing => "ringing",
        LegState::Answered | LegState::Held => "in-progress",
        LegState::Disconnected if call.answered_at_ms.is_some() => "completed",
        LegState::Disconnected => "canceled",
    }
}

/// The number or user a party is shown as (`sip:alice@host` → `alice`).
fn shown(target: &str) -> String {
    let t = target.trim();
    let t = t
        .strip_prefix("sip:")
        .or_else(|| t.strip_prefix("sips:"))
        .or_else(|| t.strip_prefix("client:"))
        .unwrap_or(t);
    t.split('@').next().unwrap_or(t).to_string()
}

pub(crate) fn base_of(uri: &str) -> &str {
    [
        "/call/2012-04-24",
        "/calls/2012-04-24",
        "/restcomm/2012-04-24",
    ]
    .into_iter()
    .find(|b| uri.starts_with(b))
    .unwrap_or("/call/2012-04-24")
}

fn resource(
    base: &str,
    account_sid: &str,
    call: &CallInfo,
    leg: &LegInfo,
    parent: Option<&LegInfo>,
    outbound_api: bool,
) -> CallResource {
    let sid = sids::call_sid(&leg.id);
    let duration = call
        .answered_at_ms
        .map(|at| ((now_ms() - at) / 1000).max(0));
    CallResource {
        sid: sid.clone(),
        date_created: iso(call.started_at_ms),
        date_updated: iso(now_ms()),
        parent_call_sid: parent.map(|p| sids::call_sid(&p.id)),
        account_sid: account_sid.to_string(),
        to: shown(if outbound_api || parent.is_some() {
            &leg.number
        } else {
            &call.dialled
        }),
        from: call.from.clone(),
        phone_number_sid: None,
        status: status(leg, call),
        start_time: Some(iso(call.started_at_ms)),
        end_time: None,
        duration,
        price: "0.0".into(),
        price_unit: "USD".into(),
        direction: match (outbound_api, leg.direction) {
            (true, _) => "outbound-api",
            (false, LegDirection::In) => "inbound",
            (false, LegDirection::Out) => "outbound-dial",
        },
        answered_by: None,
        api_version: API_VERSION,
        forwarded_from: None,
        caller_name: Some(call.from.clone()),
        muted: leg.muted,
        uri: format!("/{API_VERSION}/Accounts/{account_sid}/Calls/{sid}.json"),
        subresource_uris: SubresourceUris {
            notifications: format!("{base}/Accounts/{account_sid}/Calls/{sid}/Notifications"),
            recordings: format!("{base}/Accounts/{account_sid}/Calls/{sid}/Recordings"),
        },
    }
}

/// Every call (leg) of the account with its engine call.
fn visible(state: &Api19State, acct: &Api19Account, base: &str) -> Vec<(CallResource, CallInfo)> {
    let calls = state.engine.calls(&acct.account_id);
    let created = {
        let mut reg = state.created();
        reg.retain(|leg_id, _| {
            calls
                .iter()
                .any(|c| c.legs.first().is_some_and(|l| l.id == *leg_id))
        });
        reg.clone()
    };
    let mut out = Vec::new();
    for call in calls {
        let Some(a) = call.legs.first() else {
            continue;
        };
        if created.contains_key(&a.id) {
            out.push((
                resource(base, &acct.account_sid, &call, a, None, true),
                call.clone(),
            ));
            continue;
        }
        out.push((
            resource(base, &acct.account_sid, &call, a, None, false),
            call.clone(),
        ));
        for b in call.legs.iter().skip(1) {
            out.push((
                resource(base, &acct.account_sid, &call, b, Some(a), false),
                call.clone(),
            ));
        }
    }
    out
}

fn find(
    state: &Api19State,
    acct: &Api19Account,
    base: &str,
    call_sid: &str,
) -> Result<(CallResource, CallInfo)> {
    let sid = call_sid.strip_suffix(".json").unwrap_or(call_sid);
    visible(state, acct, base)
        .into_iter()
        .find(|(r, _)| r.sid.eq_ignore_ascii_case(sid))
        .ok_or_else(Api19Error::call_not_found)
}

/// The form fields of a request (repeated names: the last wins).
fn form(body: &Bytes) -> Result<HashMap<String, String>> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
        .map_err(|e| Api19Error::bad(format!("the body is not form-encoded: {e}")))?;
    Ok(pairs.into_iter().collect())
}

/// A number as curl's unencoded `-d 'From=+1617...'` delivers it: the `+` arrives as a space.
fn number(v: &str) -> String {
    match v.strip_prefix(' ') {
        Some(rest)
            if rest.trim().chars().all(|c| c.is_ascii_digit()) && !rest.trim().is_empty() =>
        {
            format!("+{}", rest.trim())
        }
        _ => v.trim().to_string(),
    }
}

fn method(name: &str, v: Option<&String>) -> Result<Method> {
    match v.map(|m| m.trim().to_ascii_uppercase()).as_deref() {
        None | Some("") | Some("POST") => Ok(Method::Post),
        Some("GET") => Ok(Method::Get),
        Some(other) => Err(Api19Error::bad(format!(
            "{name} {other:?} is not GET or POST"
        ))),
    }
}

/// An absolute http(s) URL; user-info (`https://AC..:TOKEN@host/x.xml`) becomes the hook's
/// Basic auth and leaves the URL.
fn hook(name: &str, url: &str, method: Method) -> Result<Hook> {
    let mut parsed = reqwest::Url::parse(url.trim())
        .map_err(|e| Api19Error::bad(format!("{name} {url:?} is not an absolute URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(Api19Error::bad(format!("{name} must be an http(s) URL")));
    }
    let basic_auth = (!parsed.username().is_empty()).then(|| {
        (
            percent_decode(parsed.username()),
            parsed.password().map(percent_decode).unwrap_or_default(),
        )
    });
    // Cannot fail for http(s) URLs with a host.
    let _ = parsed.set_username("");
    let _ = parsed.set_password(None);
    Ok(Hook {
        url: parsed.to_string(),
        method,
        basic_auth,
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| s.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match escaped {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The engine's target for `To`: a number, `sip:user@host`, or `client:name` (a user of the
/// account, by extension).
async fn target(state: &Api19State, account_id: &str, to: &str) -> Result<String> {
    let to = number(to);
    if to.is_empty() {
        return Err(Api19Error::bad("To is required"));
    }
    if let Some(name) = to.strip_prefix("client:") {
        let name = name.trim();
        let user = state
            .engine
            .store()
            .user_by_extension(account_id, name)
            .await?;
        if user.is_none() {
            return Err(Api19Error::NotFound(format!(
                "client {name:?} is not a registered client of this account"
            )));
        }
        return Ok(name.to_string());
    }
    Ok(to)
}

fn status_events(v: Option<&String>) -> Result<Vec<StatusEvent>> {
    let Some(v) = v.filter(|v| !v.trim().is_empty()) else {
        return Ok(RcmlOptions::default().status_events);
    };
    v.split([' ', ','])
        .filter(|w| !w.is_empty())
        .map(|w| {
            StatusEvent::parse(w).ok_or_else(|| {
                Api19Error::bad(format!(
                    "StatusCallbackEvent {w:?} is not initiated, ringing, answered or completed"
                ))
            })
        })
        .collect()
}

fn runtime(state: &Api19State) -> Result<&hookflash_apps::Runtime> {
    state
        .runtime
        .as_ref()
        .ok_or_else(|| Api19Error::Unavailable("the application runtime is not running".into()))
}

/// `POST .../Calls(.json)`: dials `To` and runs the RCML at `Url` when it answers.
pub(crate) async fn create(
    State(state): State<Api19State>,
    acct: Api19Account,
    OriginalUri(uri): OriginalUri,
    body: Bytes,
) -> Response {
    let format = Format::of_path(uri.path());
    match create_inner(&state, &acct, base_of(uri.path()), body).await {
        Ok(r) => render::call(format, "RestcommResponse", &r),
        Err(e) => e.render(format),
    }
}

async fn create_inner(
    state: &Api19State,
    acct: &Api19Account,
    base: &str,
    body: Bytes,
) -> Result<CallResource> {
    let f = form(&body)?;
    let from = f.get("From").map(|v| number(v)).unwrap_or_default();
    if from.is_empty() {
        return Err(Api19Error::bad("From is required"));
    }
    let to = f.get("To").cloned().unwrap_or_default();
    let target = target(state, &acct.account_id, &to).await?;
    let url = f
        .get("Url")
        .filter(|u| !u.trim().is_empty())
        .ok_or_else(|| Api19Error::bad("Url is required"))?;
    let call_hook = hook("Url", url, method("Method", f.get("Method"))?)?;
    let fallback = f
        .get("FallbackUrl")
        .filter(|u| !u.trim().is_empty())
        .map(|u| {
            hook(
                "FallbackUrl",
                u,
                method("FallbackMethod", f.get("FallbackMethod"))?,
            )
        })
        .transpose()?;
    let call_status_hook = f
        .get("StatusCallback")
        .filter(|u| !u.trim().is_empty())
        .map(|u| {
            hook(
                "StatusCallback",
                u,
                method("StatusCallbackMethod", f.get("StatusCallbackMethod"))?,
            )
        })
        .transpose()?;
    let events = status_events(f.get("StatusCallbackEvent"))?;
    let timeout = match f.get("Timeout").map(|t| t.trim()) {
        None | Some("") => DEFAULT_TIMEOUT_SECS,
        Some(t) => match t.parse::<u64>() {
            Ok(s @ 1..=600) => s,
            _ => return Err(Api19Error::bad("Timeout must be 1 to 600 seconds")),
        },
    };
    let info = create_call(
        &state.engine,
        runtime(state)?,
        CreateCall {
            account_id: acct.account_id.clone(),
            target,
            from: Some(from),
            hooks: AppHooks {
                call_hook,
                call_status_hook,
                fallback,
            },
            application_sid: None,
            timeout: Some(Duration::from_secs(timeout)),
            tag: None,
            language: Language::Rcml(RcmlOptions {
                status_events: events,
            }),
        },
    )
    .await?;
    let leg = info
        .legs
        .first()
        .ok_or_else(|| Api19Error::Internal("the new call has no leg".into()))?;
    state.created().insert(leg.id.clone(), Created);
    let mut r = resource(base, &acct.account_sid, &info, leg, None, true);
    // Nothing has rung yet.
    r.status = "queued";
    r.to = shown(&to);
    tracing::info!(call_sid = %r.sid, call_id = %info.id, "api19 call created");
    Ok(r)
}

/// `GET .../Calls(.json)`: filters `From`, `To`, `Status`; paging `PageSize`, `Page`.
pub(crate) async fn list(
    State(state): State<Api19State>,
    acct: Api19Account,
    OriginalUri(uri): OriginalUri,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let format = Format::of_path(uri.path());
    match list_inner(&state, &acct, uri.path(), &q) {
        Ok(p) => render::page(format, &p),
        Err(e) => e.render(format),
    }
}

fn list_inner(
    state: &Api19State,
    acct: &Api19Account,
    path: &str,
    q: &HashMap<String, String>,
) -> Result<Page> {
    let size = match q.get("PageSize") {
        None => DEFAULT_PAGE_SIZE,
        Some(s) => match s.trim().parse::<usize>() {
            Ok(n @ 1..=MAX_PAGE_SIZE) => n,
            _ => return Err(Api19Error::bad("PageSize must be 1 to 1000")),
        },
    };
    let page = match q.get("Page") {
        None => 0,
        Some(s) => s
            .trim()
            .parse::<usize>()
            .map_err(|_| Api19Error::bad("Page must be a whole number"))?,
    };
    let from = q.get("From").map(|v| number(v));
    let to = q.get("To").map(|v| shown(&number(v)));
    let wanted = q.get("Status").map(|s| s.trim().to_ascii_lowercase());
    let mut calls: Vec<CallResource> = visible(state, acct, base_of(path))
        .into_iter()
        .map(|(r, _)| r)
        .filter(|r| from.as_ref().is_none_or(|f| r.from == *f))
        .filter(|r| to.as_ref().is_none_or(|t| r.to == *t))
        .filter(|r| wanted.as_ref().is_none_or(|s| r.status == s))
        .collect();
    calls.sort_by(|a, b| a.date_created.cmp(&b.date_created).then(a.sid.cmp(&b.sid)));
    let total = calls.len();
    let num_pages = total.div_ceil(size).max(1);
    let start = page.saturating_mul(size);
    let items: Vec<CallResource> = calls.into_iter().skip(start).take(size).collect();
    let page_uri = |p: usize| format!("{path}?Page={p}&PageSize={size}");
    Ok(Page {
        page,
        num_pages,
        page_size: size,
        total,
        start,
        end: (start + items.len()).saturating_sub(1).max(start),
        uri: page_uri(page),
        first_page_uri: page_uri(0),
        previous_page_uri: (page > 0).then(|| page_uri(page - 1)),
        next_page_uri: (start + size < total).then(|| page_uri(page + 1)),
        last_page_uri: page_uri(num_pages - 1),
        calls: items,
    })
}

/// `GET .../Calls/{CallSid}(.json)`
pub(crate) async fn get_one(
    State(state): State<Api19State>,
    acct: Api19Account,
    OriginalUri(uri): OriginalUri,
    Path((_, call_sid)): Path<(String, String)>,
) -> Response {
    let format = Format::of_path(uri.path());
    match find(&state, &acct, base_of(uri.path()), &call_sid) {
        Ok((r, _)) => render::call(format, "RestcommResponse", &r),
        Err(e) => e.render(format),
    }
}

/// What a modification does, checked before the call is looked up.
#[derive(Debug, Clone, PartialEq)]
enum Modify {
    Redirect(HookSpec),
    /// `MoveConnectedCallLeg=true` with `Url`: both connected legs run the RCML at the hook.
    MoveBoth(Hook),
    Completed,
    Canceled,
    Mute(bool),
}

fn parse_modify(f: &HashMap<String, String>) -> Result<Modify> {
    let flag = |k: &str| -> Result<Option<bool>> {
        match f.get(k).map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            None | Some("") => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(v) => Err(Api19Error::bad(format!("{k} {v:?} is not true or false"))),
        }
    };
    let url = f.get("Url").filter(|u| !u.trim().is_empty());
    if flag("MoveConnectedCallLeg")? == Some(true) {
        let Some(url) = url else {
            return Err(Api19Error::bad(
                "MoveConnectedCallLeg needs the Url both legs are moved to",
            ));
        };
        if f.contains_key("Status") || f.contains_key("Mute") {
            return Err(Api19Error::bad(
                "MoveConnectedCallLeg goes with Url only, not Status or Mute",
            ));
        }
        return Ok(Modify::MoveBoth(hook(
            "Url",
            url,
            method("Method", f.get("Method"))?,
        )?));
    }
    let status = f.get("Status").map(|s| s.trim().to_ascii_lowercase());
    let mute = flag("Mute")?;
    let asked = [url.is_some(), status.is_some(), mute.is_some()];
    match asked.iter().filter(|a| **a).count() {
        0 => {
            return Err(Api19Error::bad(
                "nothing to modify: send Url, Status (completed, canceled) or Mute",
            ))
        }
        1 => {}
        _ => {
            return Err(Api19Error::bad(
                "send one of Url, Status or Mute per request",
            ))
        }
    }
    if let Some(url) = url {
        let h = hook("Url", url, method("Method", f.get("Method"))?)?;
        return Ok(Modify::Redirect(HookSpec::from(&h)));
    }
    if let Some(on) = mute {
        return Ok(Modify::Mute(on));
    }
    match status.as_deref() {
        Some("completed") => Ok(Modify::Completed),
        Some("canceled") => Ok(Modify::Canceled),
        other => Err(Api19Error::bad(format!(
            "Status {:?} is not completed or canceled",
            other.unwrap_or_default()
        ))),
    }
}

/// `POST .../Calls/{CallSid}(.json)` (also the SDK's `Calls.json/{CallSid}`).
pub(crate) async fn modify(
    State(state): State<Api19State>,
    acct: Api19Account,
    OriginalUri(uri): OriginalUri,
    Path((_, call_sid)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let format = Format::of_path(uri.path());
    match modify_inner(&state, &acct, base_of(uri.path()), &call_sid, body).await {
        Ok(r) => render::call(format, "CallResponse", &r),
        Err(e) => e.render(format),
    }
}

async fn modify_inner(
    state: &Api19State,
    acct: &Api19Account,
    base: &str,
    call_sid: &str,
    body: Bytes,
) -> Result<CallResource> {
    let change = parse_modify(&form(&body)?)?;
    let (view, call) = find(state, acct, base, call_sid)?;
    let leg_id = sids::leg_id(&view.sid).ok_or_else(Api19Error::call_not_found)?;
    let engine = &state.engine;
    let account_id = acct.account_id.as_str();
    let ended = match change {
        Modify::Completed => Some("completed"),
        Modify::Canceled => Some("canceled"),
        Modify::Redirect(_) | Modify::MoveBoth(_) | Modify::Mute(_) => None,
    };
    match change {
        Modify::Redirect(spec) => {
            let call_ref = CallRef {
                account_id: account_id.to_string(),
                call_id: call.id.clone(),
                leg_id: leg_id.clone(),
            };
            let redirected = runtime(state)?
                .redirect(&call_ref, &spec)
                .map_err(|e| Api19Error::bad(e.to_string()))?;
            if !redirected {
                return Err(Api19Error::Conflict(
                    "the call is not running RCML; only calls created here or routed to an application can be redirected".into(),
                ));
            }
        }
        Modify::MoveBoth(target) => move_both(state, account_id, &call, target).await?,
        Modify::Completed => engine.hangup(account_id, &call.id, Some(&leg_id)).await?,
        Modify::Canceled => {
            if call.state == CallState::Answered || view.status == "in-progress" {
                return Err(Api19Error::Conflict(
                    "the call is answered: canceled is for queued or ringing calls; use Status=completed".into(),
                ));
            }
            engine.hangup(account_id, &call.id, Some(&leg_id)).await?;
        }
        Modify::Mute(on) => {
            engine.mute(account_id, &call.id, &leg_id, on).await?;
        }
    }
    // The call as it is now; an ended one as it was, with the status it ends in.
    let mut now = match find(state, acct, base, call_sid) {
        Ok((r, _)) => r,
        Err(_) => view,
    };
    if let Some(status) = ended {
        now.status = status;
        now.end_time = Some(iso(now_ms()));
    }
    Ok(now)
}

/// `MoveConnectedCallLeg=true`: each of the call's two connected legs runs the RCML at
/// `target` as its own application (RestComm moves both legs to the new RCML, typically
/// `<Dial><Conference>`, so both parties meet there). A leg that runs RCML already is
/// redirected (its application, status callback and all, goes on with the new document); the
/// other gets an application of its own whose CallSid is the leg's. The legs stay one call
/// of the engine (see docs/api.md for what that means). A call without two answered legs is
/// a conflict and stays as it was.
async fn move_both(
    state: &Api19State,
    account_id: &str,
    call: &CallInfo,
    target: Hook,
) -> Result<()> {
    let rt = runtime(state)?;
    let on = |leg: &LegInfo| CallRef {
        account_id: account_id.to_string(),
        call_id: call.id.clone(),
        leg_id: leg.id.clone(),
    };
    let answered = |l: &&LegInfo| matches!(l.state, LegState::Answered | LegState::Held);
    let legs: Vec<&LegInfo> = call.legs.iter().filter(answered).collect();
    // An application's call lists its second leg as answered before anyone is dialled: there
    // a second party is connected when the application's dial connected it (its child), or
    // when that leg runs an application of its own (moved before).
    let second_party = match legs.as_slice() {
        [a, b] => {
            !rt.runs(&on(a))
                || rt.child(&on(a)).as_deref() == Some(b.id.as_str())
                || rt.runs(&on(b))
        }
        _ => false,
    };
    if call.state != CallState::Answered || !second_party {
        return Err(Api19Error::Conflict(
            "the call has no connected call leg to move: MoveConnectedCallLeg needs an answered \
             call between two parties"
                .into(),
        ));
    }
    let secret = state
        .engine
        .store()
        .account_webhook_secret(account_id)
        .await?;
    let spec = HookSpec::from(&target);
    let parent = legs[0].id.clone();
    for (i, leg) in legs.iter().enumerate() {
        let call_ref = on(leg);
        if rt
            .redirect(&call_ref, &spec)
            .map_err(|e| Api19Error::bad(e.to_string()))?
        {
            tracing::info!(call_id = %call.id, leg_id = %leg.id, "api19 move: leg redirected");
            continue;
        }
        let outbound = i > 0 || call.direction == CallDirection::Outbound;
        let fields = CallFields {
            call_sid: leg.id.clone(),
            direction: if outbound {
                Direction::Outbound
            } else {
                Direction::Inbound
            },
            from: call.from.clone(),
            to: leg.number.clone(),
            sip_status: 200,
            call_status: CallStatus::InProgress,
            caller_id: Some(call.from.clone()),
            account_sid: account_id.to_string(),
            trace_id: Some(call.id.clone()),
            parent_call_sid: (i > 0).then(|| parent.clone()),
            ..CallFields::default()
        };
        rt.launch(Launch {
            call: call_ref,
            hooks: AppHooks {
                call_hook: target.clone(),
                call_status_hook: None,
                fallback: None,
            },
            webhook_secret: secret.clone(),
            fields,
            language: Language::Rcml(RcmlOptions::default()),
        });
        tracing::info!(call_id = %call.id, leg_id = %leg.id, "api19 move: leg runs the RCML");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn numbers_keep_their_plus() {
        assert_eq!(number(" 16175551212"), "+16175551212");
        assert_eq!(number("+16175551212"), "+16175551212");
        assert_eq!(number("201"), "201");
        assert_eq!(number(" sip:a@b"), "sip:a@b");
        assert_eq!(shown("sip:alice@mycompany.com"), "alice");
        assert_eq!(shown("client:alice"), "alice");
    }

    #[test]
    fn user_info_becomes_basic_auth() {
        let h = hook(
            "Url",
            "https://ACabc:tok%40en@mycompany.com/callapi/demos/hello-play.xml",
            Method::Post,
        )
        .unwrap();
        assert_eq!(h.url, "https://mycompany.com/callapi/demos/hello-play.xml");
        assert_eq!(h.basic_auth, Some(("ACabc".into(), "tok@en".into())));
        assert!(hook("Url", "/relative.xml", Method::Post).is_err());
        assert!(hook("Url", "ftp://h/x", Method::Post).is_err());
    }

    #[test]
    fn modifications() {
        assert!(matches!(
            parse_modify(&m(&[("Url", "http://h/x.xml")])),
            Ok(Modify::Redirect(_))
        ));
        assert_eq!(
            parse_modify(&m(&[("Status", "completed")])).unwrap(),
            Modify::Completed
        );
        assert_eq!(
            parse_modify(&m(&[("Status", "canceled")])).unwrap(),
            Modify::Canceled
        );
        assert_eq!(
            parse_modify(&m(&[("Mute", "true")])).unwrap(),
            Modify::Mute(true)
        );
        assert_eq!(
            parse_modify(&m(&[("Mute", "false")])).unwrap(),
            Modify::Mute(false)
        );
        for bad in [
            m(&[]),
            m(&[("Status", "busy")]),
            m(&[("Mute", "maybe")]),
            m(&[("MoveConnectedCallLeg", "true")]),
            m(&[("MoveConnectedCallLeg", "yes"), ("Url", "http://h/x.xml")]),
            m(&[
                ("Url", "http://h/x.xml"),
                ("MoveConnectedCallLeg", "true"),
                ("Mute", "true"),
            ]),
            m(&[("Url", "ftp://h/x.xml"), ("MoveConnectedCallLeg", "true")]),
            m(&[("Url", "http://h/x.xml"), ("Status", "completed")]),
            m(&[("Url", "nota url")]),
        ] {
            assert_eq!(
                parse_modify(&bad).unwrap_err().status().as_u16(),
                400,
                "{bad:?}"
            );
        }
        // The seed's redirect with From/To alongside: those are ignored.
        assert!(matches!(
            parse_modify(&m(&[
                ("From", " 1617"),
                ("To", "sip:a@b"),
                ("Url", "http://h/x")
            ])),
            Ok(Modify::Redirect(_))
        ));
        // Both legs to new RCML: the Url's user-info becomes its Basic auth.
        match parse_modify(&m(&[
            ("Url", "http://AC1:tok@h/conf.xml"),
            ("MoveConnectedCallLeg", "TRUE"),
        ])) {
            Ok(Modify::MoveBoth(h)) => {
                assert_eq!(h.url, "http://h/conf.xml");
                assert_eq!(h.basic_auth, Some(("AC1".into(), "tok".into())));
            }
            other => panic!("{other:?}"),
        }
        // MoveConnectedCallLeg=false is a plain redirect.
        assert!(matches!(
            parse_modify(&m(&[
                ("Url", "http://h/x"),
                ("MoveConnectedCallLeg", "false")
            ])),
            Ok(Modify::Redirect(_))
        ));
        let events = status_events(Some(&"initiated ringing answered completed".into())).unwrap();
        assert_eq!(events.len(), 4);
        assert!(status_events(Some(&"hungup".into())).is_err());
    }
}
