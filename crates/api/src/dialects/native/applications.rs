//! The API key's account (with the secret its webhooks are signed with) and the account's
//! applications: a call_hook, an optional status hook and fallback hook, and the numbers
//! (DIDs) routed to the application.
//!
//! Every field is checked here exactly as the OpenAPI document states it (the request schemas
//! are written by hand below), so a schema-valid body is never refused as malformed and a
//! schema-invalid one always is. The patterns end in `$`, which in some regex dialects
//! (Python's) also matches before one final newline: one such newline is tolerated and
//! dropped.

use std::borrow::Cow;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use hookflash_store::normalize::number_digits;
use hookflash_store::{Application, ApplicationNumber, ApplicationSpec, Hook, HookMethod};
use hookflash_store::{Store, StoreError};
use serde::{Deserialize, Serialize};
use tracing::info;
use utoipa::openapi::schema::{
    AdditionalProperties, ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type,
};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{PartialSchema, ToSchema};

use crate::body::parse_json;
use crate::native::auth::ApiAccount;
use crate::native::error::{ErrorBody, NativeError};
use crate::AppState;

type Result<T> = std::result::Result<T, NativeError>;

/// Longest application name (characters).
pub const MAX_NAME_CHARS: usize = 128;
/// Longest hook URL (characters; URLs are printable ASCII).
pub const MAX_URL_CHARS: usize = 2048;
/// Longest hook username and password (characters).
pub const MAX_CREDENTIAL_CHARS: usize = 256;

/// C0 and C1 control characters (`char::is_control`).
const CONTROL: &str = "\\x00-\\x1f\\x7f-\\x9f";
/// Unicode White_Space (`char::is_whitespace`), besides the control characters among them.
const SPACE: &str = "\\x20\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";

fn name_pattern() -> String {
    format!("^[^{CONTROL}]*[^{CONTROL}{SPACE}][^{CONTROL}]*$")
}

/// `http://` or `https://` (any case), a host, printable ASCII only.
const URL_PATTERN: &str = "^[Hh][Tt][Tt][Pp][Ss]?://[\\x21-\\x2e\\x30-\\x7e][\\x21-\\x7e]*$";

fn username_pattern() -> String {
    format!("^[^:{CONTROL}]+$")
}

fn password_pattern() -> String {
    format!("^[^{CONTROL}]+$")
}

/// A number: 1-20 digits with an optional leading `+` and the separators ` -.()`.
const NUMBER_PATTERN: &str = "^[ \\t\\r\\n]*\\+?[ .()-]*([0-9][ .()-]*){1,20}[ \\t\\r\\n]*$";

// ---------------------------------------------------------------------------------------------
// Views

/// The API key's account.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AccountView {
    pub id: String,
    pub name: String,
    /// Digest realm and SIP domain of the account.
    pub realm: String,
    /// The secret the account's webhooks (application hooks) are signed with.
    pub webhook_secret: String,
}

/// HTTP method of a hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum HttpMethod {
    #[serde(rename = "GET")]
    Get,
    #[serde(rename = "POST")]
    Post,
}

impl From<HookMethod> for HttpMethod {
    fn from(m: HookMethod) -> Self {
        match m {
            HookMethod::Get => HttpMethod::Get,
            HookMethod::Post => HttpMethod::Post,
        }
    }
}

impl From<HttpMethod> for HookMethod {
    fn from(m: HttpMethod) -> Self {
        match m {
            HttpMethod::Get => HookMethod::Get,
            HttpMethod::Post => HookMethod::Post,
        }
    }
}

/// A hook of an application. The password is never returned.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HookView {
    pub url: String,
    pub method: HttpMethod,
    /// Basic-auth username, if any.
    pub username: Option<String>,
    /// Whether a basic-auth password is stored.
    pub password_set: bool,
}

impl From<&Hook> for HookView {
    fn from(h: &Hook) -> Self {
        HookView {
            url: h.url.clone(),
            method: h.method.into(),
            username: h.username.clone(),
            password_set: h.password.is_some(),
        }
    }
}

/// An application.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApplicationView {
    pub id: String,
    pub name: String,
    /// Asked what to do with a call.
    pub call_hook: HookView,
    /// Told about the call's progress.
    pub call_status_hook: Option<HookView>,
    /// Asked when the call_hook fails.
    pub fallback: Option<HookView>,
    /// Unix seconds.
    pub created_at: i64,
}

impl From<&Application> for ApplicationView {
    fn from(a: &Application) -> Self {
        ApplicationView {
            id: a.id.clone(),
            name: a.name.clone(),
            call_hook: (&a.call_hook).into(),
            call_status_hook: a.call_status_hook.as_ref().map(HookView::from),
            fallback: a.fallback.as_ref().map(HookView::from),
            created_at: a.created_at,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApplicationList {
    /// Ordered by name.
    pub applications: Vec<ApplicationView>,
}

/// A number routed to an application.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApplicationNumberView {
    pub id: String,
    /// E.164 with a leading `+`.
    pub number: String,
    pub application_id: String,
}

impl From<&ApplicationNumber> for ApplicationNumberView {
    fn from(n: &ApplicationNumber) -> Self {
        ApplicationNumberView {
            id: n.id.clone(),
            number: n.number.clone(),
            application_id: n.application_id.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApplicationNumberList {
    /// Ordered by number.
    pub numbers: Vec<ApplicationNumberView>,
}

// ---------------------------------------------------------------------------------------------
// Requests

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HookRequest {
    url: String,
    #[serde(default)]
    method: Option<HttpMethod>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApplicationRequest {
    name: String,
    call_hook: HookRequest,
    #[serde(default)]
    call_status_hook: Option<HookRequest>,
    #[serde(default)]
    fallback: Option<HookRequest>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NumberRequest {
    number: String,
}

/// The value without one final `\n` (see the module doc).
fn without_final_newline(s: &str) -> &str {
    s.strip_suffix('\n').unwrap_or(s)
}

fn check_name(raw: &str) -> std::result::Result<String, String> {
    let n = raw.chars().count();
    let s = without_final_newline(raw);
    if n == 0 || n > MAX_NAME_CHARS {
        return Err(format!("name must be 1 to {MAX_NAME_CHARS} characters"));
    }
    if s.chars().any(char::is_control) {
        return Err("name must not contain control characters".into());
    }
    if s.chars().all(char::is_whitespace) {
        return Err("name must not be blank".into());
    }
    Ok(s.trim().to_string())
}

fn check_url(what: &str, raw: &str) -> std::result::Result<String, String> {
    if raw.chars().count() > MAX_URL_CHARS {
        return Err(format!(
            "{what}.url must be at most {MAX_URL_CHARS} characters"
        ));
    }
    let s = without_final_newline(raw);
    let printable = |b: u8| (0x21..=0x7e).contains(&b);
    let lower = s.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("http://")
        .or_else(|| lower.strip_prefix("https://"));
    let ok = s.bytes().all(printable)
        && rest.is_some_and(|r| r.bytes().next().is_some_and(|b| b != b'/'));
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{what}.url must be http:// or https:// and a host, printable ASCII without spaces"
        ))
    }
}

fn check_credential(
    what: &str,
    raw: &str,
    colon_allowed: bool,
) -> std::result::Result<String, String> {
    let n = raw.chars().count();
    let s = without_final_newline(raw);
    let bad = |c: char| c.is_control() || (!colon_allowed && c == ':');
    if n == 0 || n > MAX_CREDENTIAL_CHARS || s.is_empty() || s.chars().any(bad) {
        return Err(format!(
            "{what} must be 1 to {MAX_CREDENTIAL_CHARS} characters without control characters{}",
            if colon_allowed { "" } else { " or ':'" }
        ));
    }
    Ok(s.to_string())
}

fn check_hook(what: &str, h: &HookRequest) -> std::result::Result<Hook, String> {
    let url = check_url(what, &h.url)?;
    let username = h
        .username
        .as_deref()
        .map(|u| check_credential(&format!("{what}.username"), u, false))
        .transpose()?;
    let password = h
        .password
        .as_deref()
        .map(|p| check_credential(&format!("{what}.password"), p, true))
        .transpose()?;
    if password.is_some() && username.is_none() {
        return Err(format!("{what}.password needs a username"));
    }
    Ok(Hook {
        url,
        method: h.method.unwrap_or(HttpMethod::Post).into(),
        username,
        password,
    })
}

fn application_spec(body: &[u8]) -> Result<ApplicationSpec> {
    let req: ApplicationRequest = parse_json(body).map_err(NativeError::BadRequest)?;
    let spec = (|| {
        Ok::<_, String>(ApplicationSpec {
            name: check_name(&req.name)?,
            call_hook: check_hook("call_hook", &req.call_hook)?,
            call_status_hook: req
                .call_status_hook
                .as_ref()
                .map(|h| check_hook("call_status_hook", h))
                .transpose()?,
            fallback: req
                .fallback
                .as_ref()
                .map(|h| check_hook("fallback", h))
                .transpose()?,
        })
    })();
    spec.map_err(NativeError::BadRequest)
}

/// Store errors of these routes: a refused value is a 400, a taken name or number a 409.
fn store_error(e: StoreError) -> NativeError {
    match e {
        StoreError::Invalid(m) => NativeError::BadRequest(m),
        StoreError::Conflict(m) => NativeError::Conflict(m),
        StoreError::NotFound(m) => NativeError::NotFound(format!("no such {m}")),
        other => other.into(),
    }
}

fn no_application() -> NativeError {
    NativeError::NotFound("no such application in this account".into())
}

async fn find(store: &Store, account_id: &str, id: &str) -> Result<Application> {
    store
        .application(account_id, id)
        .await?
        .ok_or_else(no_application)
}

// ---------------------------------------------------------------------------------------------
// Handlers

/// The account of the API key, with the secret its webhooks are signed with (made on first
/// use).
#[utoipa::path(
    get,
    path = "/account",
    tag = "account",
    responses(
        (status = 200, body = AccountView, description = "The account"),
        (status = 404, body = ErrorBody, description = "`not_found`: the key's account was removed meanwhile"),
    )
)]
pub(crate) async fn get_account(
    State(state): State<AppState>,
    auth: ApiAccount,
) -> Result<Json<AccountView>> {
    let store = state.engine.store();
    let account = store
        .account_by_id(&auth.account_id)
        .await?
        .ok_or_else(|| NativeError::NotFound("the account is gone".into()))?;
    let webhook_secret = store
        .account_webhook_secret(&account.id)
        .await
        .map_err(store_error)?;
    Ok(Json(AccountView {
        id: account.id,
        name: account.name,
        realm: account.realm,
        webhook_secret,
    }))
}

/// The account's applications, ordered by name.
#[utoipa::path(
    get,
    path = "/applications",
    tag = "applications",
    responses((status = 200, body = ApplicationList, description = "The applications, by name"))
)]
pub(crate) async fn list_applications(
    State(state): State<AppState>,
    auth: ApiAccount,
) -> Result<Json<ApplicationList>> {
    let apps = state.engine.store().applications(&auth.account_id).await?;
    Ok(Json(ApplicationList {
        applications: apps.iter().map(ApplicationView::from).collect(),
    }))
}

/// Creates an application.
#[utoipa::path(
    post,
    path = "/applications",
    tag = "applications",
    request_body = ApplicationRequestDoc,
    responses(
        (status = 201, body = ApplicationView, description = "Created"),
        (status = 400, body = ErrorBody, description = "`invalid_request`: a body the schema does not allow"),
        (status = 409, body = ErrorBody, description = "`conflict`: the account has an application of this name"),
    )
)]
pub(crate) async fn create_application(
    State(state): State<AppState>,
    auth: ApiAccount,
    body: Bytes,
) -> Result<(StatusCode, Json<ApplicationView>)> {
    let spec = application_spec(&body)?;
    let app = state
        .engine
        .store()
        .create_application(&auth.account_id, &spec)
        .await
        .map_err(store_error)?;
    info!(application_id = %app.id, name = %app.name, "application created via the native API");
    Ok((StatusCode::CREATED, Json((&app).into())))
}

/// One application.
#[utoipa::path(
    get,
    path = "/applications/{application_id}",
    tag = "applications",
    params(("application_id" = String, Path, description = "Application id")),
    responses(
        (status = 200, body = ApplicationView, description = "The application"),
        (status = 404, body = ErrorBody, description = "`not_found`: no such application in this account"),
    )
)]
pub(crate) async fn get_application(
    State(state): State<AppState>,
    auth: ApiAccount,
    Path(id): Path<String>,
) -> Result<Json<ApplicationView>> {
    let app = find(state.engine.store(), &auth.account_id, &id).await?;
    Ok(Json((&app).into()))
}

/// Replaces an application's name and hooks (hooks left out are removed; passwords must be
/// sent again). Its numbers stay.
#[utoipa::path(
    put,
    path = "/applications/{application_id}",
    tag = "applications",
    params(("application_id" = String, Path, description = "Application id")),
    request_body = ApplicationRequestDoc,
    responses(
        (status = 200, body = ApplicationView, description = "The application as stored"),
        (status = 400, body = ErrorBody, description = "`invalid_request`: a body the schema does not allow"),
        (status = 404, body = ErrorBody, description = "`not_found`: no such application in this account"),
        (status = 409, body = ErrorBody, description = "`conflict`: another application of the account has this name"),
    )
)]
pub(crate) async fn put_application(
    State(state): State<AppState>,
    auth: ApiAccount,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<ApplicationView>> {
    let store = state.engine.store();
    find(store, &auth.account_id, &id).await?;
    let spec = application_spec(&body)?;
    if !store
        .update_application(&auth.account_id, &id, &spec)
        .await
        .map_err(store_error)?
    {
        return Err(no_application());
    }
    info!(application_id = %id, name = %spec.name, "application updated via the native API");
    let app = find(store, &auth.account_id, &id).await?;
    Ok(Json((&app).into()))
}

/// Deletes an application; the numbers routed to it are freed.
#[utoipa::path(
    delete,
    path = "/applications/{application_id}",
    tag = "applications",
    params(("application_id" = String, Path, description = "Application id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, body = ErrorBody, description = "`not_found`: no such application in this account"),
    )
)]
pub(crate) async fn delete_application(
    State(state): State<AppState>,
    auth: ApiAccount,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    if !state
        .engine
        .store()
        .delete_application(&auth.account_id, &id)
        .await?
    {
        return Err(no_application());
    }
    info!(application_id = %id, "application deleted via the native API");
    Ok(StatusCode::NO_CONTENT)
}

/// The numbers routed to an application, ordered by number.
#[utoipa::path(
    get,
    path = "/applications/{application_id}/numbers",
    tag = "applications",
    params(("application_id" = String, Path, description = "Application id")),
    responses(
        (status = 200, body = ApplicationNumberList, description = "The numbers, by number"),
        (status = 404, body = ErrorBody, description = "`not_found`: no such application in this account"),
    )
)]
pub(crate) async fn list_numbers(
    State(state): State<AppState>,
    auth: ApiAccount,
    Path(id): Path<String>,
) -> Result<Json<ApplicationNumberList>> {
    let store = state.engine.store();
    find(store, &auth.account_id, &id).await?;
    let numbers = store.application_numbers(&auth.account_id).await?;
    Ok(Json(ApplicationNumberList {
        numbers: numbers
            .iter()
            .filter(|n| n.application_id == id)
            .map(ApplicationNumberView::from)
            .collect(),
    }))
}

/// Routes a number (DID) to the application: inbound calls to it run the application.
#[utoipa::path(
    post,
    path = "/applications/{application_id}/numbers",
    tag = "applications",
    params(("application_id" = String, Path, description = "Application id")),
    request_body = NumberRequestDoc,
    responses(
        (status = 201, body = ApplicationNumberView, description = "Routed"),
        (status = 400, body = ErrorBody, description = "`invalid_request`: a body the schema does not allow"),
        (status = 404, body = ErrorBody, description = "`not_found`: no such application in this account"),
        (status = 409, body = ErrorBody, description = "`conflict`: the number is routed already (to a user or an application, of any account)"),
    )
)]
pub(crate) async fn add_number(
    State(state): State<AppState>,
    auth: ApiAccount,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<ApplicationNumberView>)> {
    let store = state.engine.store();
    find(store, &auth.account_id, &id).await?;
    let req: NumberRequest = parse_json(&body).map_err(NativeError::BadRequest)?;
    let Some(digits) = number_digits(req.number.trim()) else {
        return Err(NativeError::BadRequest(format!(
            "number {:?} must be 1 to 20 digits with an optional leading '+'",
            req.number
        )));
    };
    let n = store
        .add_application_number(&auth.account_id, &digits, &id)
        .await
        .map_err(|e| match e {
            StoreError::NotFound(_) => no_application(),
            other => store_error(other),
        })?;
    info!(application_id = %id, number = %n.number, "number routed via the native API");
    Ok((StatusCode::CREATED, Json((&n).into())))
}

/// Unroutes a number of the application (calls to it then reach nobody).
#[utoipa::path(
    delete,
    path = "/applications/{application_id}/numbers/{number_id}",
    tag = "applications",
    params(
        ("application_id" = String, Path, description = "Application id"),
        ("number_id" = String, Path, description = "The number's id (from the list)"),
    ),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, body = ErrorBody, description = "`not_found`: no such application in this account, or no such number of it"),
    )
)]
pub(crate) async fn remove_number(
    State(state): State<AppState>,
    auth: ApiAccount,
    Path((id, number_id)): Path<(String, String)>,
) -> Result<StatusCode> {
    let store = state.engine.store();
    find(store, &auth.account_id, &id).await?;
    let routed_here = store
        .application_numbers(&auth.account_id)
        .await?
        .iter()
        .any(|n| n.id == number_id && n.application_id == id);
    if !routed_here
        || !store
            .remove_application_number(&auth.account_id, &number_id)
            .await?
    {
        return Err(NativeError::NotFound(
            "no such number of this application".into(),
        ));
    }
    info!(application_id = %id, number_id, "number unrouted via the native API");
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------------------------------
// The request schemas (hand-written: "a password needs a username" is a `oneOf`).

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

fn closed_object() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(AdditionalProperties::<Schema>::FreeForm(false)))
}

fn url_schema() -> ObjectBuilder {
    string()
        .min_length(Some(1))
        .max_length(Some(MAX_URL_CHARS))
        .pattern(Some(URL_PATTERN))
        .description(Some(
            "`http://` or `https://` and a host; printable ASCII (percent-encode the rest)",
        ))
}

fn method_schema() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(SchemaType::Array(vec![Type::String, Type::Null]))
        .enum_values(Some([
            serde_json::Value::from("GET"),
            serde_json::Value::from("POST"),
            serde_json::Value::Null,
        ]))
        .description(Some("`GET` or `POST`; default (absent or null): `POST`"))
}

fn username_schema(nullable: bool) -> ObjectBuilder {
    let b = if nullable {
        ObjectBuilder::new().schema_type(SchemaType::Array(vec![Type::String, Type::Null]))
    } else {
        string()
    };
    b.min_length(Some(1))
        .max_length(Some(MAX_CREDENTIAL_CHARS))
        .pattern(Some(username_pattern()))
        .description(Some(
            "Basic-auth username: 1-256 characters, no control characters, no `:`",
        ))
}

fn hook_schema() -> Schema {
    let without_password = closed_object()
        .title(Some("without password"))
        .property("url", url_schema())
        .required("url")
        .property("method", method_schema())
        .property("username", username_schema(true))
        .property(
            "password",
            ObjectBuilder::new()
                .schema_type(Type::Null)
                .description(Some("No password")),
        );
    let with_password = closed_object()
        .title(Some("with basic auth"))
        .property("url", url_schema())
        .required("url")
        .property("method", method_schema())
        .property("username", username_schema(false))
        .required("username")
        .property(
            "password",
            string()
                .min_length(Some(1))
                .max_length(Some(MAX_CREDENTIAL_CHARS))
                .pattern(Some(password_pattern()))
                .description(Some(
                    "Basic-auth password: 1-256 characters, no control characters; never \
                     returned",
                )),
        )
        .required("password");
    OneOfBuilder::new()
        .item(without_password)
        .item(with_password)
        .description(Some(
            "A hook: `url`, `method` and optional basic auth (a `password` needs a `username`)",
        ))
        .into()
}

/// A hook in a request.
pub struct HookRequestDoc;

impl PartialSchema for HookRequestDoc {
    fn schema() -> RefOr<Schema> {
        hook_schema().into()
    }
}

impl ToSchema for HookRequestDoc {
    fn name() -> Cow<'static, str> {
        "HookRequest".into()
    }
}

fn optional_hook(description: &str) -> Schema {
    OneOfBuilder::new()
        .item(Ref::from_schema_name("HookRequest"))
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .description(Some(description))
        .into()
}

/// Body of `POST /applications` and `PUT /applications/{application_id}`.
pub struct ApplicationRequestDoc;

impl PartialSchema for ApplicationRequestDoc {
    fn schema() -> RefOr<Schema> {
        Schema::from(
            closed_object()
                .property(
                    "name",
                    string()
                        .min_length(Some(1))
                        .max_length(Some(MAX_NAME_CHARS))
                        .pattern(Some(name_pattern()))
                        .description(Some(
                            "1-128 characters, not blank, no control characters; unique in the \
                             account (stored without surrounding white space)",
                        )),
                )
                .required("name")
                .property("call_hook", Ref::from_schema_name("HookRequest"))
                .required("call_hook")
                .property(
                    "call_status_hook",
                    optional_hook("Told about the call's progress; absent or null: none"),
                )
                .property(
                    "fallback",
                    optional_hook("Asked when the call_hook fails; absent or null: none"),
                ),
        )
        .into()
    }
}

impl ToSchema for ApplicationRequestDoc {
    fn name() -> Cow<'static, str> {
        "ApplicationRequest".into()
    }

    fn schemas(out: &mut Vec<(String, RefOr<Schema>)>) {
        out.push((HookRequestDoc::name().into(), HookRequestDoc::schema()));
    }
}

/// Body of `POST /applications/{application_id}/numbers`.
pub struct NumberRequestDoc;

impl PartialSchema for NumberRequestDoc {
    fn schema() -> RefOr<Schema> {
        Schema::from(
            closed_object()
                .property(
                    "number",
                    string().pattern(Some(NUMBER_PATTERN)).description(Some(
                        "1-20 digits with an optional leading `+`; separators (space, `-`, \
                         `.`, `(`, `)`) are ignored (stored as E.164 with `+`)",
                    )),
                )
                .required("number"),
        )
        .into()
    }
}

impl ToSchema for NumberRequestDoc {
    fn name() -> Cow<'static, str> {
        "NumberRequest".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_as_documented() {
        assert_eq!(check_name(" ivr ").unwrap(), "ivr");
        assert_eq!(check_name("ivr\n").unwrap(), "ivr");
        assert_eq!(check_name(&"ä".repeat(128)).unwrap(), "ä".repeat(128));
        for bad in ["", " ", "\u{3000}", "a\u{7}", "a\n\n", &"x".repeat(129)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn urls_and_credentials_are_checked_as_documented() {
        assert!(check_url("h", "HTTPS://app.example/x?y=1").is_ok());
        assert_eq!(check_url("h", "http://a\n").unwrap(), "http://a");
        for bad in [
            "ftp://a",
            "http://",
            "http:///x",
            "http://a b",
            "http://ä",
            "",
        ] {
            assert!(check_url("h", bad).is_err(), "{bad:?}");
        }
        assert!(check_credential("u", "user", false).is_ok());
        assert!(check_credential("u", "a:b", false).is_err());
        assert!(check_credential("p", "a:b", true).is_ok());
        assert!(check_credential("p", "\n", true).is_err());
        assert!(check_credential("p", "a\tb", true).is_err());
    }

    #[test]
    fn a_password_needs_a_username() {
        let h = HookRequest {
            url: "http://a/".into(),
            method: None,
            username: None,
            password: Some("p".into()),
        };
        assert!(check_hook("call_hook", &h).is_err());
        let h = HookRequest {
            username: Some("u".into()),
            ..h
        };
        let hook = check_hook("call_hook", &h).unwrap();
        assert_eq!(hook.method, HookMethod::Post);
        assert_eq!(hook.password.as_deref(), Some("p"));
    }
}
