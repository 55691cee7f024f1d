//! Applications (`/v1/Accounts/{account_sid}/Applications`, and `/v1/Applications` with the
//! account taken from the key) and the phone numbers routed to them (`/v1/PhoneNumbers`), in
//! the api-server's shapes: create -> 201 `{"sid"}`, update (PUT, partial) -> 204, delete ->
//! 204. Hook passwords are write-only (never returned).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hookflash_store::{Application, ApplicationNumber, ApplicationSpec, Hook, HookMethod};
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::error::{JambonzError, INSUFFICIENT_PRIVILEGES};
use super::{JambonzAccount, JambonzState};
use crate::body::parse_json;

type Result<T> = std::result::Result<T, JambonzError>;

/// A jambonz Webhook object (the password is never returned).
#[derive(Debug, Clone, Serialize)]
pub struct WebhookView {
    pub url: String,
    pub method: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
}

impl From<&Hook> for WebhookView {
    fn from(h: &Hook) -> Self {
        WebhookView {
            url: h.url.clone(),
            method: h.method.as_str(),
            username: h.username.clone(),
        }
    }
}

/// A jambonz Application object.
#[derive(Debug, Clone, Serialize)]
pub struct ApplicationView {
    pub application_sid: String,
    pub name: String,
    pub account_sid: String,
    pub call_hook: WebhookView,
    pub call_status_hook: Option<WebhookView>,
    pub messaging_hook: Option<WebhookView>,
}

impl From<&Application> for ApplicationView {
    fn from(a: &Application) -> Self {
        ApplicationView {
            application_sid: a.id.clone(),
            name: a.name.clone(),
            account_sid: a.account_id.clone(),
            call_hook: (&a.call_hook).into(),
            call_status_hook: a.call_status_hook.as_ref().map(WebhookView::from),
            messaging_hook: None,
        }
    }
}

/// A jambonz PhoneNumber object.
#[derive(Debug, Clone, Serialize)]
pub struct PhoneNumberView {
    pub phone_number_sid: String,
    pub number: String,
    pub voip_carrier_sid: Option<String>,
    pub account_sid: String,
    pub application_sid: String,
}

impl From<&ApplicationNumber> for PhoneNumberView {
    fn from(n: &ApplicationNumber) -> Self {
        PhoneNumberView {
            phone_number_sid: n.id.clone(),
            number: n.number.clone(),
            voip_carrier_sid: None,
            account_sid: n.account_id.clone(),
            application_sid: n.application_id.clone(),
        }
    }
}

fn object(body: &Bytes) -> Result<Map<String, Value>> {
    match parse_json::<Value>(body).map_err(JambonzError::BadRequest)? {
        Value::Object(m) => Ok(m),
        _ => Err(JambonzError::bad("the body must be a JSON object")),
    }
}

/// A body's `account_sid`, if given, must be the key's account.
fn same_account(req: &Map<String, Value>, account_id: &str) -> Result<()> {
    match req.get("account_sid") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(s)) if s == account_id => Ok(()),
        Some(_) => Err(JambonzError::Forbidden(INSUFFICIENT_PRIVILEGES.into())),
    }
}

/// A Webhook object (or a URL string) as the store keeps it; the store checks the URL.
fn hook(name: &str, v: &Value) -> Result<Hook> {
    let bad = || {
        JambonzError::bad(format!(
            "{name} must be an object containing a url property"
        ))
    };
    let m = match v {
        Value::String(url) => return Ok(Hook::post(url.trim())),
        Value::Object(m) => m,
        _ => return Err(bad()),
    };
    let url = m.get("url").and_then(Value::as_str).ok_or_else(bad)?;
    let text = |k: &str| -> Result<Option<String>> {
        match m.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(JambonzError::bad(format!("{name}.{k} must be a string"))),
        }
    };
    let method = match text("method")?.map(|m| m.to_ascii_uppercase()).as_deref() {
        None | Some("POST") => HookMethod::Post,
        Some("GET") => HookMethod::Get,
        Some(other) => {
            return Err(JambonzError::bad(format!(
                "{name}.method {other:?} is not supported (GET or POST)"
            )))
        }
    };
    Ok(Hook {
        url: url.trim().to_string(),
        method,
        username: text("username")?,
        password: text("password")?,
    })
}

/// The fields a body gives, over `base` (create: nothing; update: the stored application).
fn spec(req: &Map<String, Value>, base: Option<&Application>) -> Result<ApplicationSpec> {
    if present(req, "app_json") {
        return Err(JambonzError::bad(
            "app_json is not supported by hookflash; use a call_hook",
        ));
    }
    let name = match (req.get("name"), base) {
        (Some(Value::String(n)), _) => n.clone(),
        (None | Some(Value::Null), Some(b)) => b.name.clone(),
        (None | Some(Value::Null), None) => return Err(JambonzError::bad("name is required")),
        (Some(_), _) => return Err(JambonzError::bad("name must be a string")),
    };
    let call_hook = match (req.get("call_hook"), base) {
        (Some(v), _) if !v.is_null() => hook("call_hook", v)?,
        (_, Some(b)) => b.call_hook.clone(),
        (_, None) => return Err(JambonzError::bad("call_hook is required")),
    };
    let call_status_hook = match req.get("call_status_hook") {
        // An explicit null (or empty url) removes it on update.
        Some(Value::Null) => None,
        Some(Value::Object(m)) if m.get("url").and_then(Value::as_str) == Some("") => None,
        Some(v) => Some(hook("call_status_hook", v)?),
        None => base.and_then(|b| b.call_status_hook.clone()),
    };
    Ok(ApplicationSpec {
        name,
        call_hook,
        call_status_hook,
        // jambonz has no fallback hook: the stored one (set through the native API) stays.
        fallback: base.and_then(|b| b.fallback.clone()),
    })
}

fn present(req: &Map<String, Value>, k: &str) -> bool {
    req.get(k).is_some_and(|v| !v.is_null())
}

fn app_not_found() -> JambonzError {
    JambonzError::NotFound("application not found".into())
}

/// `GET .../Applications`
pub(crate) async fn list(
    State(state): State<JambonzState>,
    acct: JambonzAccount,
) -> Result<Json<Vec<ApplicationView>>> {
    let apps = state.engine.store().applications(&acct.account_id).await?;
    Ok(Json(apps.iter().map(ApplicationView::from).collect()))
}

/// `POST .../Applications` -> 201 `{"sid"}`
pub(crate) async fn create(
    State(state): State<JambonzState>,
    acct: JambonzAccount,
    body: Bytes,
) -> Result<Response> {
    let req = object(&body)?;
    same_account(&req, &acct.account_id)?;
    let spec = spec(&req, None)?;
    let app = state
        .engine
        .store()
        .create_application(&acct.account_id, &spec)
        .await?;
    Ok((StatusCode::CREATED, Json(json!({ "sid": app.id }))).into_response())
}

/// The last path parameter (the application sid; the account sid, if any, comes first).
fn last(params: Vec<String>) -> String {
    params.into_iter().last().unwrap_or_default()
}

/// `GET .../Applications/{application_sid}`
pub(crate) async fn retrieve(
    State(state): State<JambonzState>,
    acct: JambonzAccount,
    Path(params): Path<Vec<String>>,
) -> Result<Json<ApplicationView>> {
    let app = state
        .engine
        .store()
        .application(&acct.account_id, &last(params))
        .await?
        .ok_or_else(app_not_found)?;
    Ok(Json((&app).into()))
}

/// `PUT .../Applications/{application_sid}` (the fields given replace the stored ones) -> 204
pub(crate) async fn update(
    State(state): State<JambonzState>,
    acct: JambonzAccount,
    Path(params): Path<Vec<String>>,
    body: Bytes,
) -> Result<StatusCode> {
    let id = last(params);
    let req = object(&body)?;
    same_account(&req, &acct.account_id)?;
    let store = state.engine.store();
    let app = store
        .application(&acct.account_id, &id)
        .await?
        .ok_or_else(app_not_found)?;
    let spec = spec(&req, Some(&app))?;
    if !store
        .update_application(&acct.account_id, &id, &spec)
        .await?
    {
        return Err(app_not_found());
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE .../Applications/{application_sid}` -> 204 (its numbers go with it)
pub(crate) async fn delete(
    State(state): State<JambonzState>,
    acct: JambonzAccount,
    Path(params): Path<Vec<String>>,
) -> Result<StatusCode> {
    if state
        .engine
        .store()
        .delete_application(&acct.account_id, &last(params))
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(app_not_found())
    }
}

/// `GET /v1/PhoneNumbers`: the numbers of the key's account routed to applications.
pub(crate) async fn list_numbers(
    State(state): State<JambonzState>,
    acct: JambonzAccount,
) -> Result<Json<Vec<PhoneNumberView>>> {
    let numbers = state
        .engine
        .store()
        .application_numbers(&acct.account_id)
        .await?;
    Ok(Json(numbers.iter().map(PhoneNumberView::from).collect()))
}

/// `POST /v1/PhoneNumbers` `{number, application_sid, account_sid?}` -> 201 `{"sid"}`
pub(crate) async fn create_number(
    State(state): State<JambonzState>,
    acct: JambonzAccount,
    body: Bytes,
) -> Result<Response> {
    let req = object(&body)?;
    same_account(&req, &acct.account_id)?;
    let number = match req.get("number") {
        Some(Value::String(n)) if !n.trim().is_empty() => n.trim().to_string(),
        _ => return Err(JambonzError::bad("number is required")),
    };
    let application_sid =
        match req.get("application_sid") {
            Some(Value::String(a)) if !a.is_empty() => a.clone(),
            _ => return Err(JambonzError::bad(
                "application_sid is required (hookflash routes a phone number to an application)",
            )),
        };
    let store = state.engine.store();
    if store
        .application(&acct.account_id, &application_sid)
        .await?
        .is_none()
    {
        return Err(JambonzError::bad(format!(
            "application_sid not found {application_sid}"
        )));
    }
    let n = store
        .add_application_number(&acct.account_id, &number, &application_sid)
        .await?;
    Ok((StatusCode::CREATED, Json(json!({ "sid": n.id }))).into_response())
}

async fn number_of(state: &JambonzState, account_id: &str, sid: &str) -> Result<ApplicationNumber> {
    state
        .engine
        .store()
        .application_numbers(account_id)
        .await?
        .into_iter()
        .find(|n| n.id == sid)
        .ok_or_else(|| JambonzError::NotFound("phone number not found".into()))
}

/// `GET /v1/PhoneNumbers/{phone_number_sid}`
pub(crate) async fn retrieve_number(
    State(state): State<JambonzState>,
    acct: JambonzAccount,
    Path(sid): Path<String>,
) -> Result<Json<PhoneNumberView>> {
    let n = number_of(&state, &acct.account_id, &sid).await?;
    Ok(Json((&n).into()))
}

/// `DELETE /v1/PhoneNumbers/{phone_number_sid}` -> 204
pub(crate) async fn delete_number(
    State(state): State<JambonzState>,
    acct: JambonzAccount,
    Path(sid): Path<String>,
) -> Result<StatusCode> {
    if state
        .engine
        .store()
        .remove_application_number(&acct.account_id, &sid)
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(JambonzError::NotFound("phone number not found".into()))
    }
}
