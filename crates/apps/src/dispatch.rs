//! Runs the application of every call the engine hands over (a call to a number routed to an
//! application): loads the application and the account's webhook secret, fills the call
//! fields (sent as jambonz JSON or RCML form fields, per the application's language), and launches the runtime on the caller's leg. A call whose application cannot
//! be loaded is declined (500), never left ringing.

use std::sync::Arc;

use hookflash_engine::apps::AppCall;
use hookflash_engine::{CallDirection, Engine};
use hookflash_store::{AppLanguage, HookMethod};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use crate::app::{AppHooks, CallFields, CallStatus, Direction, Hook, Language, Launch, SipInfo};
use crate::control::CallRef;
use crate::delivery::{Delivery, Method};
use crate::engine_control::EngineControl;
use crate::runtime::{Runtime, StatusUpdate};

fn hook(h: &hookflash_store::Hook) -> Hook {
    Hook {
        url: h.url.clone(),
        method: match h.method {
            HookMethod::Get => Method::Get,
            HookMethod::Post => Method::Post,
        },
        basic_auth: h
            .username
            .clone()
            .map(|u| (u, h.password.clone().unwrap_or_default())),
    }
}

/// The INVITE as jambonz's `sip` field: header names in lower case, repeats joined.
fn sip_info(call: &AppCall) -> SipInfo {
    let mut headers = Map::new();
    for (name, value) in &call.headers {
        let key = name.to_ascii_lowercase();
        let joined = match headers.get(&key) {
            Some(Value::String(prev)) => format!("{prev}, {value}"),
            _ => value.clone(),
        };
        headers.insert(key, Value::String(joined));
    }
    SipInfo {
        headers,
        method: Some("INVITE".into()),
        uri: Some(call.request_uri.clone()),
        body: None,
    }
}

/// Starts the dispatcher (once: the engine gives its application calls to one taker) and
/// returns the runtime, or None if another taker has them.
pub fn spawn(engine: Engine, delivery: Delivery, stop: CancellationToken) -> Option<Runtime> {
    let mut calls = engine.take_app_calls()?;
    let runtime = Runtime::new(delivery, Arc::new(EngineControl::new(engine.clone())));
    let rt = runtime.clone();
    tokio::spawn(async move {
        loop {
            let call = tokio::select! {
                _ = stop.cancelled() => break,
                c = calls.recv() => match c { Some(c) => c, None => break },
            };
            let span = tracing::info_span!("app", call_id = %call.call_id);
            launch(&engine, &rt, call).instrument(span).await;
        }
    });
    Some(runtime)
}

async fn launch(engine: &Engine, runtime: &Runtime, call: AppCall) {
    let store = engine.store();
    let app = match store
        .application(&call.account_id, &call.application_id)
        .await
    {
        Ok(Some(app)) => app,
        Ok(None) => {
            warn!(application = %call.application_id, "application gone; declining the call");
            let _ = engine
                .app_decline(&call.account_id, &call.call_id, 404)
                .await;
            return;
        }
        Err(e) => {
            warn!(error = %e, "cannot load the application; declining the call");
            let _ = engine
                .app_decline(&call.account_id, &call.call_id, 500)
                .await;
            return;
        }
    };
    let secret = match store.account_webhook_secret(&call.account_id).await {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "cannot read the webhook secret; declining the call");
            let _ = engine
                .app_decline(&call.account_id, &call.call_id, 500)
                .await;
            return;
        }
    };
    let fields = CallFields {
        call_sid: call.leg_id.clone(),
        direction: match call.direction {
            CallDirection::Outbound => Direction::Outbound,
            CallDirection::Inbound | CallDirection::Internal => Direction::Inbound,
        },
        from: call.from.clone(),
        to: call.to.clone(),
        call_id: call.sip_call_id.clone(),
        sip_status: 100,
        sip_reason: Some("Trying".into()),
        call_status: CallStatus::Trying,
        caller_id: call.caller_name.clone().or_else(|| Some(call.from.clone())),
        account_sid: call.account_id.clone(),
        application_sid: app.id.clone(),
        trace_id: Some(call.call_id.clone()),
        sip: Some(sip_info(&call)),
        ..CallFields::default()
    };
    let launch = Launch {
        call: CallRef {
            account_id: call.account_id.clone(),
            call_id: call.call_id.clone(),
            leg_id: call.leg_id.clone(),
        },
        hooks: AppHooks {
            call_hook: hook(&app.call_hook),
            call_status_hook: app.call_status_hook.as_ref().map(hook),
            fallback: app.fallback.as_ref().map(hook),
        },
        webhook_secret: secret,
        fields,
        language: match app.language {
            AppLanguage::Jambonz => Language::Jambonz,
            // RestComm's default status events: completed only.
            AppLanguage::Rcml => Language::Rcml(crate::rcml::RcmlOptions::default()),
        },
    };
    info!(application = %app.name, language = app.language.as_str(), "application starts");
    runtime.launch(launch);
}

/// An outbound call an application runs (jambonz `POST /Calls`).
#[derive(Debug, Clone)]
pub struct CreateCall {
    pub account_id: String,
    /// Extension, number, or SIP URI whose user part is one of the account's.
    pub target: String,
    /// The number the called party sees (one of the account's numbers or extensions).
    pub from: Option<String>,
    pub hooks: AppHooks,
    /// The stored application the hooks come from, if any (`application_sid`).
    pub application_sid: Option<String>,
    /// How long the target may ring.
    pub timeout: Option<std::time::Duration>,
    /// Initial `customerData`.
    pub tag: Option<Map<String, Value>>,
    /// The language of the hooks (jambonz JSON, RCML).
    pub language: Language,
}

/// Dials `req.target` and runs the application when it answers. Returns the call once the
/// INVITE has left (its leg A is the application's leg: the jambonz call sid); statuses
/// (trying, ringing, then in-progress from the runtime or a final one) go to the status hook.
pub async fn create_call(
    engine: &Engine,
    runtime: &Runtime,
    req: CreateCall,
) -> Result<hookflash_engine::CallInfo, hookflash_engine::CommandError> {
    use hookflash_engine::{AppOriginateRequest, EndCause, EventKind};

    let secret = engine
        .store()
        .account_webhook_secret(&req.account_id)
        .await
        .map_err(|e| hookflash_engine::CommandError::Failed {
            status: 500,
            reason: e.to_string(),
        })?;
    // Subscribed before the INVITE leaves, so no progress is missed.
    let mut live = engine.events().subscribe_all();
    let info = engine
        .app_originate(
            &req.account_id,
            AppOriginateRequest {
                target: req.target.clone(),
                caller_id: req.from.clone(),
                application: req
                    .application_sid
                    .clone()
                    .unwrap_or_else(|| "application".into()),
                timeout: req.timeout,
            },
        )
        .await?;
    let Some(leg) = info.legs.first().cloned() else {
        return Err(hookflash_engine::CommandError::Failed {
            status: 500,
            reason: "the new call has no leg".into(),
        });
    };
    let call = CallRef {
        account_id: req.account_id.clone(),
        call_id: info.id.clone(),
        leg_id: leg.id.clone(),
    };
    let fields = CallFields {
        call_sid: leg.id.clone(),
        direction: Direction::Outbound,
        from: info.from.clone(),
        to: leg.number.clone(),
        call_id: String::new(),
        sip_status: 100,
        sip_reason: Some("Trying".into()),
        call_status: CallStatus::Trying,
        caller_id: Some(info.from.clone()),
        account_sid: req.account_id.clone(),
        application_sid: req.application_sid.clone().unwrap_or_default(),
        trace_id: Some(info.id.clone()),
        customer_data: req.tag.clone(),
        ..CallFields::default()
    };
    let prepared = runtime.prepare(Launch {
        call: call.clone(),
        hooks: req.hooks,
        webhook_secret: secret,
        fields,
        language: req.language,
    });
    runtime.status(&call, StatusUpdate::new(CallStatus::Trying, Some(100)));
    let runtime = runtime.clone();
    let span = tracing::info_span!("app", call_id = %info.id);
    tokio::spawn(
        async move {
            let mut prepared = Some(prepared);
            loop {
                let event = match live.recv().await {
                    Ok(hookflash_engine::BusEvent::Call(e)) => e,
                    Ok(hookflash_engine::BusEvent::Conference(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                if event.call_id != call.call_id {
                    continue;
                }
                match event.kind {
                    EventKind::Ringing => {
                        runtime.status(&call, StatusUpdate::new(CallStatus::Ringing, Some(180)));
                    }
                    EventKind::Answered => {
                        if let Some(p) = prepared.take() {
                            info!("answered; the application starts");
                            // Answered before it starts: in-progress first, so the call_hook
                            // request says so and the runtime does not answer again.
                            runtime.status(
                                &call,
                                StatusUpdate::new(CallStatus::InProgress, Some(200)),
                            );
                            p.start();
                        }
                        return;
                    }
                    EventKind::Ended => {
                        let (status, sip) = match event.cause {
                            Some(EndCause::Busy | EndCause::Rejected) => (CallStatus::Busy, 486),
                            Some(EndCause::NoAnswer | EndCause::Unavailable) => {
                                (CallStatus::NoAnswer, 480)
                            }
                            _ => (CallStatus::Failed, 503),
                        };
                        runtime.status(&call, StatusUpdate::new(status, Some(sip)));
                        return;
                    }
                    _ => {}
                }
            }
        }
        .instrument(span),
    );
    Ok(info)
}
