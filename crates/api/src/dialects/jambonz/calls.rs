//! `/v1/Accounts/{account_sid}/Calls`: create (an outbound call an application runs), list,
//! retrieve, update (live call control) and delete.
//!
//! A jambonz call is one leg of an engine call, its `call_sid` the leg's id:
//! - a call created here: its leg A (the dialled party the application runs), `outbound`;
//! - a call to a number routed to an application: the caller's leg, `inbound`;
//! - any other call: both legs; the callee's leg has the caller's as `parent_call_sid`.
//!
//! The application's own side of an application call (leg B) is not a party and not shown;
//! a party its `dial` verb rings or connected is (a child call: `parent_call_sid` is the leg
//! the application runs; listed from the moment it is dialled, `trying`/`ringing`, with the
//! same sid once connected).

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hookflash_apps::control::CallRef;
use hookflash_apps::dispatch::{create_call, CreateCall};
use hookflash_apps::{AppHooks, Hook, HookSpec, Method};
use hookflash_engine::{AudioSource, CallInfo, CallState, LegDirection, LegInfo, LegState};
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::error::JambonzError;
use super::{JambonzAccount, JambonzState};
use crate::body::parse_json;

type Result<T> = std::result::Result<T, JambonzError>;

/// What the engine does not keep about a call created through the API.
#[derive(Debug, Clone)]
pub(crate) struct Created {
    pub application_sid: Option<String>,
}

/// The jambonz call object.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CallView {
    pub call_sid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_call_sid: Option<String>,
    pub account_sid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application_sid: Option<String>,
    /// `inbound` (the party called us) or `outbound` (we called the party).
    pub direction: &'static str,
    pub from: String,
    pub to: String,
    /// hookflash's call (session) id: the same for every leg of a call.
    pub call_id: String,
    pub sip_status: u16,
    pub call_status: &'static str,
    pub caller_name: String,
    /// Seconds since the answer (0 before).
    pub duration: i64,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `call_status` and `sip_status` of a leg.
fn leg_status(leg: &LegInfo, call: &CallInfo) -> (&'static str, u16) {
    match leg.state {
        LegState::Setup | LegState::Proceeding => ("trying", 100),
        LegState::Ringing => ("ringing", 180),
        LegState::Answered | LegState::Held => ("in-progress", 200),
        LegState::Disconnected if call.answered_at_ms.is_some() => ("completed", 200),
        LegState::Disconnected => ("failed", 487),
    }
}

fn view(
    account_id: &str,
    call: &CallInfo,
    leg: &LegInfo,
    parent: Option<&LegInfo>,
    application_sid: Option<String>,
    to: String,
) -> CallView {
    let (call_status, sip_status) = leg_status(leg, call);
    let duration = call
        .answered_at_ms
        .map(|at| ((now_ms() - at) / 1000).max(0))
        .unwrap_or(0);
    CallView {
        call_sid: leg.id.clone(),
        parent_call_sid: parent.map(|p| p.id.clone()),
        account_sid: account_id.to_string(),
        application_sid,
        direction: match leg.direction {
            LegDirection::In => "inbound",
            LegDirection::Out => "outbound",
        },
        from: call.from.clone(),
        to,
        call_id: call.id.clone(),
        sip_status,
        call_status,
        caller_name: call.from.clone(),
        duration,
    }
}

/// Every jambonz call (leg) of the account, with the engine call it belongs to.
async fn visible(state: &JambonzState, account_id: &str) -> Result<Vec<(CallView, CallInfo)>> {
    let calls = state.engine.calls(account_id);
    let created: HashMap<String, Created> = {
        let mut reg = state.created();
        // Forget the calls that ended.
        reg.retain(|sid, _| {
            calls
                .iter()
                .any(|c| c.legs.first().is_some_and(|l| l.id == *sid))
        });
        reg.clone()
    };
    let store = state.engine.store();
    let mut out = Vec::new();
    for call in calls {
        let (Some(a), b) = (call.legs.first(), call.legs.get(1)) else {
            continue;
        };
        let child = |app_sid: Option<String>| {
            let runtime = state.runtime.as_ref()?;
            let b = b?;
            let parent = CallRef {
                account_id: account_id.to_string(),
                call_id: call.id.clone(),
                leg_id: a.id.clone(),
            };
            (runtime.child(&parent).as_deref() == Some(b.id.as_str()))
                .then(|| view(account_id, &call, b, Some(a), app_sid, b.number.clone()))
        };
        // The parties the application's dial rings: child calls before they answer.
        let ringing = |app_sid: Option<String>| -> Vec<CallView> {
            call.dialling
                .iter()
                .map(|leg| {
                    view(
                        account_id,
                        &call,
                        leg,
                        Some(a),
                        app_sid.clone(),
                        leg.number.clone(),
                    )
                })
                .collect()
        };
        if let Some(c) = created.get(&a.id) {
            let v = view(
                account_id,
                &call,
                a,
                None,
                c.application_sid.clone(),
                a.number.clone(),
            );
            let dialled = child(c.application_sid.clone());
            let rung = ringing(c.application_sid.clone());
            out.push((v, call.clone()));
            out.extend(dialled.map(|d| (d, call.clone())));
            out.extend(rung.into_iter().map(|d| (d, call.clone())));
            continue;
        }
        let app = store
            .application_for_number(&call.dialled)
            .await?
            .filter(|app| app.account_id == account_id);
        if let Some(app) = app {
            let dialled = child(Some(app.id.clone()));
            let rung = ringing(Some(app.id.clone()));
            let v = view(
                account_id,
                &call,
                a,
                None,
                Some(app.id),
                call.dialled.clone(),
            );
            out.push((v, call.clone()));
            out.extend(dialled.map(|d| (d, call.clone())));
            out.extend(rung.into_iter().map(|d| (d, call.clone())));
            continue;
        }
        let a_view = view(account_id, &call, a, None, None, call.dialled.clone());
        let b_view = b.map(|b| view(account_id, &call, b, Some(a), None, b.number.clone()));
        out.push((a_view, call.clone()));
        if let Some(b_view) = b_view {
            out.push((b_view, call.clone()));
        }
    }
    Ok(out)
}

/// The call (leg) `call_sid` names.
async fn find(
    state: &JambonzState,
    account_id: &str,
    call_sid: &str,
) -> Result<(CallView, CallInfo)> {
    visible(state, account_id)
        .await?
        .into_iter()
        .find(|(v, _)| v.call_sid == call_sid)
        .ok_or_else(JambonzError::call_not_found)
}

fn object(body: &Bytes) -> Result<Map<String, Value>> {
    match parse_json::<Value>(body).map_err(JambonzError::BadRequest)? {
        Value::Object(m) => Ok(m),
        _ => Err(JambonzError::bad("the body must be a JSON object")),
    }
}

/// A hook as the api-server takes it: a URL string (POST) or `{url, method, username,
/// password}`; `name` is the field, for messages.
fn parse_hook(name: &str, v: &Value) -> Result<Hook> {
    let bad_shape = || {
        JambonzError::bad(format!(
            "{name} must be string or an object containing a url property"
        ))
    };
    let (url, method, user, password) = match v {
        Value::String(s) => (s.clone(), None, None, None),
        Value::Object(m) => {
            let url = m.get("url").and_then(Value::as_str).ok_or_else(bad_shape)?;
            let str_field = |k: &str| -> Result<Option<String>> {
                match m.get(k) {
                    None | Some(Value::Null) => Ok(None),
                    Some(Value::String(s)) => Ok(Some(s.clone())),
                    Some(_) => Err(JambonzError::bad(format!("{name}.{k} must be a string"))),
                }
            };
            (
                url.to_string(),
                str_field("method")?,
                str_field("username")?,
                str_field("password")?,
            )
        }
        _ => return Err(bad_shape()),
    };
    let lower = url.trim().to_ascii_lowercase();
    if lower.starts_with("ws://") || lower.starts_with("wss://") {
        return Err(JambonzError::bad(format!(
            "{name}: websocket applications are not supported, use an http(s) url"
        )));
    }
    let absolute = reqwest_like_absolute(&lower);
    if !absolute {
        return Err(JambonzError::bad(format!(
            "{name} url must be an absolute url"
        )));
    }
    let method = match method.as_deref().map(str::to_ascii_uppercase).as_deref() {
        None | Some("POST") => Method::Post,
        Some("GET") => Method::Get,
        Some(other) => {
            return Err(JambonzError::bad(format!(
                "{name}.method {other:?} is not supported (GET or POST)"
            )))
        }
    };
    let basic_auth = match (user, password) {
        (Some(u), p) if !u.is_empty() => Some((u, p.unwrap_or_default())),
        _ => None,
    };
    Ok(Hook {
        url: url.trim().to_string(),
        method,
        basic_auth,
    })
}

/// `http(s)://` followed by a host.
fn reqwest_like_absolute(lower: &str) -> bool {
    let rest = lower
        .strip_prefix("http://")
        .or_else(|| lower.strip_prefix("https://"));
    rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'))
}

fn store_hook(h: &hookflash_store::Hook) -> Hook {
    Hook {
        url: h.url.clone(),
        method: match h.method {
            hookflash_store::HookMethod::Get => Method::Get,
            hookflash_store::HookMethod::Post => Method::Post,
        },
        basic_auth: h
            .username
            .clone()
            .map(|u| (u, h.password.clone().unwrap_or_default())),
    }
}

/// The engine's target for a jambonz target object.
fn target(to: Option<&Value>, realm: &str) -> Result<String> {
    let invalid = || {
        JambonzError::bad(format!(
            "missing or invalid to property: {}",
            to.map(Value::to_string)
                .unwrap_or_else(|| "undefined".into())
        ))
    };
    let Some(Value::Object(to)) = to else {
        return Err(invalid());
    };
    let field = |k: &str| to.get(k).and_then(Value::as_str).map(str::trim);
    match to.get("type").and_then(Value::as_str) {
        Some("phone") => field("number")
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .ok_or_else(invalid),
        Some("user") => {
            let name = field("name")
                .filter(|n| !n.is_empty())
                .ok_or_else(invalid)?;
            match name.split_once('@') {
                Some((user, domain)) if !domain.eq_ignore_ascii_case(realm) => {
                    Err(JambonzError::bad(format!(
                        "user {user}@{domain} is not in this account's sip realm ({realm})"
                    )))
                }
                Some((user, _)) => Ok(user.to_string()),
                None => Ok(name.to_string()),
            }
        }
        Some("sip") => field("sipUri")
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .ok_or_else(invalid),
        Some("teams") => Err(JambonzError::bad(
            "to.type \"teams\" is not supported by hookflash",
        )),
        _ => Err(invalid()),
    }
}

/// `POST /v1/Accounts/{account_sid}/Calls` -> 201 `{"sid": call_sid}` once the INVITE left.
pub(crate) async fn create(
    State(state): State<JambonzState>,
    acct: JambonzAccount,
    body: Bytes,
) -> Result<Response> {
    let account_id = acct.account_id;
    let req = object(&body)?;
    let from = match req.get("from") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
        _ => return Err(JambonzError::bad("missing from parameter")),
    };
    let store = state.engine.store();
    let realm = store
        .account_by_id(&account_id)
        .await?
        .map(|a| a.realm)
        .unwrap_or_default();
    let target = target(req.get("to"), &realm)?;
    // A user target names one of the account's users (never a number through the trunk).
    if req
        .get("to")
        .and_then(|t| t.get("type"))
        .and_then(Value::as_str)
        == Some("user")
        && store
            .user_by_extension(&account_id, &target)
            .await?
            .is_none()
    {
        return Err(JambonzError::bad(format!(
            "no user {target} in this account"
        )));
    }
    let application_sid = match req.get("application_sid") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(JambonzError::bad("application_sid must be a string")),
    };
    let hooks = match &application_sid {
        Some(sid) => {
            let app = store
                .application(&account_id, sid)
                .await?
                .ok_or_else(|| JambonzError::bad(format!("application_sid not found {sid}")))?;
            AppHooks {
                call_hook: store_hook(&app.call_hook),
                call_status_hook: app.call_status_hook.as_ref().map(store_hook),
                fallback: app.fallback.as_ref().map(store_hook),
            }
        }
        None => {
            let call_hook = match req.get("call_hook") {
                None | Some(Value::Null) => {
                    return Err(JambonzError::bad(
                        "either call_hook or application_sid required",
                    ))
                }
                Some(v) => parse_hook("call_hook", v)?,
            };
            let call_status_hook = match req.get("call_status_hook") {
                None | Some(Value::Null) => None,
                Some(v) => Some(parse_hook("call_status_hook", v)?),
            };
            AppHooks {
                call_hook,
                call_status_hook,
                fallback: None,
            }
        }
    };
    let timeout = match req.get("timeout") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(secs @ 1..=3600) => Some(Duration::from_secs(secs)),
            _ => {
                return Err(JambonzError::bad(
                    "timeout must be a whole number of seconds from 1 to 3600",
                ))
            }
        },
    };
    let tag = match req.get("tag") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m.clone()),
        Some(_) => return Err(JambonzError::bad("tag must be an object")),
    };
    let runtime = state.runtime.as_ref().ok_or_else(|| {
        JambonzError::Unavailable("the application runtime is not running".into())
    })?;
    let info = create_call(
        &state.engine,
        runtime,
        CreateCall {
            account_id: account_id.clone(),
            target,
            from: Some(from),
            hooks,
            application_sid: application_sid.clone(),
            timeout,
            tag,
            language: hookflash_apps::Language::Jambonz,
        },
    )
    .await?;
    let sid = info
        .legs
        .first()
        .map(|l| l.id.clone())
        .ok_or_else(|| JambonzError::Internal("the new call has no leg".into()))?;
    state
        .created()
        .insert(sid.clone(), Created { application_sid });
    tracing::info!(call_sid = %sid, call_id = %info.id, "jambonz call created");
    Ok((StatusCode::CREATED, Json(json!({ "sid": sid }))).into_response())
}

/// `GET /v1/Accounts/{account_sid}/Calls` (filters: `direction`, `from`, `to`, `callStatus`).
pub(crate) async fn list(
    State(state): State<JambonzState>,
    acct: JambonzAccount,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Vec<CallView>>> {
    let keep = |v: &CallView| {
        q.get("direction").is_none_or(|d| v.direction == d)
            && q.get("from").is_none_or(|f| v.from == *f)
            && q.get("to").is_none_or(|t| v.to == *t)
            && q.get("callStatus").is_none_or(|s| v.call_status == s)
    };
    Ok(Json(
        visible(&state, &acct.account_id)
            .await?
            .into_iter()
            .map(|(v, _)| v)
            .filter(keep)
            .collect(),
    ))
}

/// `GET /v1/Accounts/{account_sid}/Calls/{call_sid}`
pub(crate) async fn retrieve(
    State(state): State<JambonzState>,
    acct: JambonzAccount,
    Path((_, call_sid)): Path<(String, String)>,
) -> Result<Json<CallView>> {
    Ok(Json(find(&state, &acct.account_id, &call_sid).await?.0))
}

/// `DELETE /v1/Accounts/{account_sid}/Calls/{call_sid}` -> 204: ends the call (real jambonz
/// only removes its record).
pub(crate) async fn delete(
    State(state): State<JambonzState>,
    acct: JambonzAccount,
    Path((_, call_sid)): Path<(String, String)>,
) -> Result<StatusCode> {
    let (view, call) = find(&state, &acct.account_id, &call_sid).await?;
    state
        .engine
        .hangup(&acct.account_id, &call.id, Some(&view.call_sid))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The options of an update that exclude each other (one per request), as the api-server
/// counts them, plus `dtmf` and `tag`.
const EXCLUSIVE: &[&str] = &[
    "call_hook",
    "child_call_hook",
    "call_status",
    "listen_status",
    "conf_hold_status",
    "conf_mute_status",
    "mute_status",
    "sip_request",
    "record",
    "dtmf",
    "tag",
    "dub",
    "conferenceParticipantAction",
    "media_path",
];

/// Largest `tag` a live update may set (its JSON).
const TAG_MAX_BYTES: usize = 16 * 1024;

/// What an update does, validated before the call is looked up.
#[derive(Debug, Clone, PartialEq)]
enum Action {
    /// A new application; with `call_status_hook`, a new status hook too.
    Redirect(HookSpec, Option<Hook>),
    /// `tag`: the call's new customerData.
    Tag(Map<String, Value>),
    Status {
        completed: bool,
    },
    Mute(bool),
    Record(hookflash_engine::RecordAction),
    Dtmf(String),
    /// `listen_status`: pause (true; `silence` too) or resume the call's listen stream.
    Listen(bool),
    /// `conf_mute_status`: mute (true) or unmute the leg in its conference.
    ConfMute(bool),
    /// `conf_hold_status`: hold (true: hears music, heard by no one) or unhold it there.
    ConfHold(bool),
    /// Only a whisper.
    Nothing,
}

#[derive(Debug, Clone, PartialEq)]
struct Update {
    action: Action,
    whisper: Option<AudioSource>,
}

fn present(req: &Map<String, Value>, k: &str) -> bool {
    req.get(k).is_some_and(|v| !v.is_null())
}

fn word<'a>(req: &'a Map<String, Value>, k: &str) -> Option<&'a str> {
    req.get(k).and_then(Value::as_str)
}

/// The whisper prompt: one say/play verb or an array of them. Say-only arrays are spoken as
/// one text; a play verb must be the only one (prompts are not chained yet).
fn whisper(v: &Value) -> Result<AudioSource> {
    let verbs: Vec<&Value> = match v {
        Value::Array(a) => a.iter().collect(),
        other => vec![other],
    };
    if verbs.is_empty() {
        return Err(JambonzError::bad("whisper must contain a play or say verb"));
    }
    let mut texts = Vec::new();
    let mut urls = Vec::new();
    for verb in &verbs {
        let text_of = |k: &str| verb.get(k).and_then(Value::as_str).map(str::trim);
        match verb.get("verb").and_then(Value::as_str) {
            Some("say") => match text_of("text") {
                Some(t) if !t.is_empty() => texts.push(t.to_string()),
                _ => return Err(JambonzError::bad("whisper: a say verb needs a text")),
            },
            Some("play") => match text_of("url") {
                Some(u) if !u.is_empty() => urls.push(u.to_string()),
                _ => return Err(JambonzError::bad("whisper: a play verb needs a url")),
            },
            _ => {
                return Err(JambonzError::bad(
                    "invalid whisper: only a 'play' or 'say' verb (or an array of them) is allowed",
                ))
            }
        }
    }
    match (texts.is_empty(), urls.len()) {
        (false, 0) => Ok(AudioSource::Tts {
            text: texts.join(" "),
            voice: None,
        }),
        (true, 1) => Ok(AudioSource::Url(urls.remove(0))),
        _ => Err(JambonzError::bad(
            "whisper: a play verb must be the only verb of the prompt (hookflash does not chain whisper prompts yet)",
        )),
    }
}

/// Checks an update body as the seed and the api-server do.
fn parse_update(req: &Map<String, Value>) -> Result<Update> {
    let ops: Vec<&str> = EXCLUSIVE
        .iter()
        .copied()
        .filter(|k| present(req, k))
        .collect();
    let has_whisper = present(req, "whisper");
    match ops.len() {
        0 if !has_whisper => {
            return Err(JambonzError::bad("no valid options supplied to updateCall"))
        }
        0 | 1 => {}
        _ => {
            return Err(JambonzError::bad(
                "multiple options are not allowed in updateCall",
            ))
        }
    }
    let op = ops.first().copied();
    if has_whisper && !matches!(op, None | Some("mute_status") | Some("listen_status")) {
        return Err(JambonzError::bad(
            "whisper may only be combined with mute_status or listen_status",
        ));
    }
    if present(req, "call_status_hook") && op != Some("call_hook") {
        return Err(JambonzError::bad(
            "call_status_hook may only be provided together with call_hook",
        ));
    }
    let action = match op {
        None => Action::Nothing,
        Some("call_hook") => {
            let status_hook = req
                .get("call_status_hook")
                .filter(|v| !v.is_null())
                .map(|v| parse_hook("call_status_hook", v))
                .transpose()?;
            let spec: HookSpec = req
                .get("call_hook")
                .cloned()
                .map(serde_json::from_value)
                .transpose()
                .map_err(|e| JambonzError::bad(format!("call_hook: {e}")))?
                .ok_or_else(|| JambonzError::bad("call_hook is required"))?;
            Action::Redirect(spec, status_hook)
        }
        Some("call_status") => match word(req, "call_status") {
            Some("completed") => Action::Status { completed: true },
            Some("no-answer") => Action::Status { completed: false },
            _ => return Err(JambonzError::bad("invalid call_status")),
        },
        Some("mute_status") => match word(req, "mute_status") {
            Some("mute") => Action::Mute(true),
            Some("unmute") => Action::Mute(false),
            _ => return Err(JambonzError::bad("invalid mute_status")),
        },
        Some("conf_mute_status") => match word(req, "conf_mute_status") {
            Some("mute") => Action::ConfMute(true),
            Some("unmute") => Action::ConfMute(false),
            _ => return Err(JambonzError::bad("invalid conf_mute_status")),
        },
        Some("conf_hold_status") => match word(req, "conf_hold_status") {
            Some("hold") => Action::ConfHold(true),
            Some("unhold") => Action::ConfHold(false),
            _ => return Err(JambonzError::bad("invalid conf_hold_status")),
        },
        Some("listen_status") => match word(req, "listen_status") {
            Some("pause" | "silence") => Action::Listen(true),
            Some("resume") => Action::Listen(false),
            _ => return Err(JambonzError::bad("invalid listen_status")),
        },
        Some("record") => {
            use hookflash_engine::RecordAction;
            let action = req
                .get("record")
                .and_then(|r| r.get("action"))
                .and_then(Value::as_str)
                .ok_or_else(|| JambonzError::bad("record requires action property"))?;
            Action::Record(match action {
                "startCallRecording" => RecordAction::Start {
                    announcement: false,
                },
                "stopCallRecording" => RecordAction::Stop,
                "pauseCallRecording" => RecordAction::Pause,
                "resumeCallRecording" => RecordAction::Resume,
                other => {
                    return Err(JambonzError::bad(format!(
                        "invalid record action {other:?}"
                    )))
                }
            })
        }
        Some("dtmf") => {
            let digit = req
                .get("dtmf")
                .and_then(|d| d.get("digit"))
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|d| !d.is_empty())
                .ok_or_else(|| JambonzError::bad("dtmf requires a digit property"))?;
            Action::Dtmf(digit.to_string())
        }
        Some("tag") => match req.get("tag") {
            Some(Value::Object(m)) => {
                if serde_json::to_vec(m).map_or(true, |b| b.len() > TAG_MAX_BYTES) {
                    return Err(JambonzError::bad(format!(
                        "tag must be at most {TAG_MAX_BYTES} bytes of JSON"
                    )));
                }
                Action::Tag(m.clone())
            }
            _ => return Err(JambonzError::bad("tag must be an object")),
        },
        Some(other) => {
            return Err(JambonzError::bad(format!(
                "{other} is not supported by hookflash"
            )))
        }
    };
    let whisper = req
        .get("whisper")
        .filter(|v| !v.is_null())
        .map(whisper)
        .transpose()?;
    Ok(Update { action, whisper })
}

fn not_running() -> JambonzError {
    JambonzError::Unprocessable("the call is not running an application".into())
}

/// The runtime and the leg an update names.
fn app_of<'a>(
    state: &'a JambonzState,
    account_id: &str,
    call_id: &str,
    call_sid: &str,
) -> Result<(&'a hookflash_apps::Runtime, CallRef)> {
    let runtime = state.runtime.as_ref().ok_or_else(|| {
        JambonzError::Unavailable("the application runtime is not running".into())
    })?;
    Ok((
        runtime,
        CallRef {
            account_id: account_id.to_string(),
            call_id: call_id.to_string(),
            leg_id: call_sid.to_string(),
        },
    ))
}

/// `PUT` (and the legacy `POST`) `/v1/Accounts/{account_sid}/Calls/{call_sid}` -> 204.
pub(crate) async fn update(
    State(state): State<JambonzState>,
    acct: JambonzAccount,
    Path((_, call_sid)): Path<(String, String)>,
    body: Bytes,
) -> Result<StatusCode> {
    let account_id = acct.account_id.as_str();
    let req = object(&body)?;
    let update = parse_update(&req)?;
    let (view, call) = find(&state, account_id, &call_sid).await?;
    let engine = &state.engine;
    match update.action {
        Action::Nothing => {}
        Action::Redirect(spec, status_hook) => {
            let (runtime, call_ref) = app_of(&state, account_id, &call.id, &call_sid)?;
            // Checked before anything changes: a bad URL leaves the call as it was.
            let target = runtime
                .resolve_hook(&call_ref, &spec)
                .map_err(|e| JambonzError::bad(e.to_string()))?
                .ok_or_else(not_running)?;
            if let Some(hook) = status_hook {
                runtime.set_status_hook(&call_ref, hook);
            }
            if !runtime.redirect_to(&call_ref, target) {
                return Err(not_running());
            }
        }
        Action::Tag(data) => {
            let (runtime, call_ref) = app_of(&state, account_id, &call.id, &call_sid)?;
            if !runtime.tag(&call_ref, data) {
                return Err(not_running());
            }
        }
        Action::Status { completed } => {
            if !completed && call.state == CallState::Answered {
                return Err(JambonzError::Unprocessable(
                    "call_status no-answer is for a ringing call; use completed".into(),
                ));
            }
            engine.hangup(account_id, &call.id, Some(&call_sid)).await?;
        }
        Action::Mute(on) => {
            engine.mute(account_id, &call.id, &call_sid, on).await?;
        }
        Action::Record(action) => {
            engine.record(account_id, &call.id, action).await?;
        }
        Action::Dtmf(digits) => {
            engine
                .send_dtmf(account_id, &call.id, &call_sid, &digits)
                .await?;
        }
        Action::Listen(paused) => {
            engine
                .app_listen_pause(account_id, &call.id, paused)
                .await?;
        }
        Action::ConfMute(on) => {
            engine
                .conference_mute_call(account_id, &call.id, Some(&call_sid), on)
                .await?;
        }
        Action::ConfHold(on) => {
            engine
                .conference_hold_call(account_id, &call.id, Some(&call_sid), on)
                .await?;
        }
    }
    if let Some(source) = update.whisper {
        engine
            .whisper(account_id, &call.id, &view.call_sid, source)
            .await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upd(v: Value) -> Result<Update> {
        match v {
            Value::Object(m) => parse_update(&m),
            _ => unreachable!(),
        }
    }

    fn msg(v: Value) -> String {
        match upd(v) {
            Err(e) => e.to_string(),
            Ok(u) => panic!("accepted: {u:?}"),
        }
    }

    #[test]
    fn update_combinations_follow_the_seed() {
        assert_eq!(msg(json!({})), "no valid options supplied to updateCall");
        assert_eq!(
            msg(json!({"call_status": "completed", "mute_status": "mute"})),
            "multiple options are not allowed in updateCall"
        );
        assert_eq!(
            msg(json!({"call_hook": {"url": "/x"}, "call_status": "completed"})),
            "multiple options are not allowed in updateCall"
        );
        assert!(
            msg(json!({"call_status": "completed", "whisper": {"verb": "say", "text": "x"}}))
                .contains("whisper may only be combined")
        );
        assert!(
            msg(json!({"call_status_hook": {"url": "http://h/s"}, "mute_status": "mute"}))
                .contains("only be provided together with call_hook")
        );
        assert_eq!(msg(json!({"call_status": "busy"})), "invalid call_status");
        assert_eq!(msg(json!({"mute_status": "off"})), "invalid mute_status");
        assert_eq!(
            msg(json!({"listen_status": "stop"})),
            "invalid listen_status"
        );
        assert_eq!(
            upd(json!({"listen_status": "pause"})).unwrap().action,
            Action::Listen(true)
        );
        assert_eq!(
            upd(json!({"listen_status": "resume"})).unwrap().action,
            Action::Listen(false)
        );
        assert_eq!(
            msg(json!({"record": {}})),
            "record requires action property"
        );
        assert!(msg(json!({"whisper": {"verb": "gather"}})).contains("only a 'play' or 'say'"));

        let u = upd(
            json!({"mute_status": "mute", "whisper": [{"verb": "say", "text": "Your call"},
            {"verb": "say", "text": "has been muted."}]}),
        )
        .unwrap();
        assert_eq!(u.action, Action::Mute(true));
        assert_eq!(
            u.whisper,
            Some(AudioSource::Tts {
                text: "Your call has been muted.".into(),
                voice: None
            })
        );
        let u = upd(json!({"whisper": {"verb": "play", "url": "http://h/a.wav"}})).unwrap();
        assert_eq!(u.action, Action::Nothing);
        assert_eq!(u.whisper, Some(AudioSource::Url("http://h/a.wav".into())));
        let u = upd(json!({"call_hook": {"url": "/transfer-to-support"}})).unwrap();
        assert!(
            matches!(u.action, Action::Redirect(ref s, None) if s.url == "/transfer-to-support")
        );
        let u = upd(json!({"call_hook": "/next", "call_status_hook": "http://h/status"})).unwrap();
        assert!(matches!(u.action, Action::Redirect(_, Some(ref h)) if h.url == "http://h/status"));
        assert_eq!(
            msg(json!({"call_hook": "/next", "call_status_hook": "/relative"})),
            "call_status_hook url must be an absolute url"
        );
        let u = upd(json!({"tag": {"stage": 2}})).unwrap();
        assert_eq!(
            u.action,
            Action::Tag(json!({"stage": 2}).as_object().unwrap().clone())
        );
        assert_eq!(msg(json!({"tag": "x"})), "tag must be an object");
        assert_eq!(
            msg(json!({"tag": {"a": 1}, "mute_status": "mute"})),
            "multiple options are not allowed in updateCall"
        );
        let u = upd(json!({"dtmf": {"digit": "1#", "duration": 250}})).unwrap();
        assert_eq!(u.action, Action::Dtmf("1#".into()));
        // null counts as absent
        let u = upd(json!({"call_status": "no-answer", "mute_status": null})).unwrap();
        assert_eq!(u.action, Action::Status { completed: false });
    }

    #[test]
    fn targets() {
        let t = |v: Value| target(Some(&v), "acme.local");
        assert_eq!(
            t(json!({"type": "phone", "number": "+4930123"})).unwrap(),
            "+4930123"
        );
        assert_eq!(
            t(json!({"type": "user", "name": "201@acme.local"})).unwrap(),
            "201"
        );
        assert_eq!(t(json!({"type": "user", "name": "201"})).unwrap(), "201");
        assert!(t(json!({"type": "user", "name": "201@other.realm"})).is_err());
        assert_eq!(
            t(json!({"type": "sip", "sipUri": "sip:201@acme.local"})).unwrap(),
            "sip:201@acme.local"
        );
        assert!(t(json!({"type": "teams", "number": "1"})).is_err());
        assert_eq!(
            t(json!({"type": "fax"})).unwrap_err().to_string(),
            r#"missing or invalid to property: {"type":"fax"}"#
        );
        assert!(target(None, "r").is_err());
    }

    #[test]
    fn hooks_must_be_absolute() {
        assert_eq!(
            parse_hook("call_hook", &json!("/relative"))
                .unwrap_err()
                .to_string(),
            "call_hook url must be an absolute url"
        );
        let h = parse_hook(
            "call_hook",
            &json!({"url": "http://h:1/x", "method": "get", "username": "u", "password": "p"}),
        )
        .unwrap();
        assert_eq!(h.method, Method::Get);
        assert_eq!(h.basic_auth, Some(("u".into(), "p".into())));
        assert!(parse_hook("call_hook", &json!({"method": "POST"})).is_err());
        assert!(parse_hook("call_hook", &json!("wss://h/x")).is_err());
    }

    #[test]
    fn conference_mute_and_hold_words() {
        let a = |v| upd(v).map(|u| u.action);
        assert_eq!(
            a(json!({"conf_mute_status": "mute"})).ok(),
            Some(Action::ConfMute(true))
        );
        assert_eq!(
            a(json!({"conf_mute_status": "unmute"})).ok(),
            Some(Action::ConfMute(false))
        );
        assert_eq!(
            a(json!({"conf_hold_status": "hold"})).ok(),
            Some(Action::ConfHold(true))
        );
        assert_eq!(
            a(json!({"conf_hold_status": "unhold"})).ok(),
            Some(Action::ConfHold(false))
        );
        assert_eq!(
            msg(json!({"conf_mute_status": "loud"})),
            "invalid conf_mute_status"
        );
        assert_eq!(
            msg(json!({"conf_hold_status": 1})),
            "invalid conf_hold_status"
        );
        assert_eq!(
            msg(json!({"conf_hold_status": "hold", "conf_mute_status": "mute"})),
            "multiple options are not allowed in updateCall"
        );
    }
}
