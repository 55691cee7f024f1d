//! `sip:refer`: a blind transfer by REFER (RFC 3515). The caller's phone or carrier is asked
//! to call `referTo` (a SIP URI, or a number / extension reached through this server) itself.
//! The verb ends when the REFER is refused, or when the caller's NOTIFY reports the final
//! status of its call to the target. `eventHook` gets every NOTIFY; `actionHook` gets
//! `referStatus` and `final_referred_call_status`. When that call succeeded the caller has
//! left (we hang up our leg, as jambonz does) and the action hook's answer is not run;
//! otherwise the call stays with the application and the answer runs.

use std::time::Duration;

use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use super::common::SipHeaders;
use super::Props;
use crate::alert::AlertKind;
use crate::control::{ControlError, ReferProgress};
use crate::error::AppError;
use crate::exec::{Ending, Exec, Flow};
use crate::hook::HookSpec;

/// How long the REFER may take to be answered (Timer F, 64 * T1).
const REFER_ANSWER: Duration = Duration::from_secs(32);
/// How long the caller's call to the target may take to report its final status.
const FOLLOW_ON_CALL: Duration = Duration::from_secs(120);

/// A string, or a number written without quotes (`"referTo": +15083084809`).
fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(serde::de::Error::custom(format!(
            "expected a string or a number, got {other}"
        ))),
    }
}

fn opt_string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    string_or_number(d).map(Some)
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SipRefer {
    #[serde(deserialize_with = "string_or_number")]
    pub refer_to: String,
    #[serde(default, deserialize_with = "opt_string_or_number")]
    pub referred_by: Option<String>,
    #[serde(default)]
    pub action_hook: Option<HookSpec>,
    #[serde(default)]
    pub event_hook: Option<HookSpec>,
    #[serde(default)]
    pub headers: SipHeaders,
}

impl Props for SipRefer {
    fn check(&self) -> Result<(), String> {
        if self.refer_to.trim().is_empty() {
            return Err("referTo must not be empty".into());
        }
        Ok(())
    }
}

impl SipRefer {
    pub(crate) async fn exec(&self, x: &mut Exec) -> Result<Flow, AppError> {
        let mut results = Map::new();
        let mut progress = match x
            .ctl
            .refer(
                &x.call,
                &self.refer_to,
                self.referred_by.as_deref(),
                self.headers.0.clone(),
            )
            .await
        {
            Ok(rx) => rx,
            Err(ControlError::Gone) => return Err(x.call_ended().await.into()),
            Err(e) => {
                x.alert(AlertKind::CallControl, format!("sip:refer: {e}"));
                results.insert("referStatus".into(), Value::from(400));
                return x
                    .action(self.action_hook.as_ref(), results, "actionHook")
                    .await;
            }
        };
        let refer_status = match tokio::time::timeout(REFER_ANSWER, progress.recv()).await {
            Ok(Some(ReferProgress::Answered { status })) => status,
            // A NOTIFY before the answer (reordered UDP): the REFER was accepted.
            Ok(Some(ReferProgress::Notify { .. })) => 202,
            Ok(None) => return Err(x.call_ended().await.into()),
            Err(_) => 408,
        };
        results.insert("referStatus".into(), Value::from(refer_status));
        let mut final_status = None;
        if (200..300).contains(&refer_status) {
            let deadline = tokio::time::Instant::now() + FOLLOW_ON_CALL;
            loop {
                match tokio::time::timeout_at(deadline, progress.recv()).await {
                    Ok(Some(ReferProgress::Notify { status, last })) => {
                        if let Some(hook) = self.event_hook.as_ref() {
                            let mut ev = Map::new();
                            ev.insert("referStatus".into(), Value::from(refer_status));
                            ev.insert("notify_status".into(), Value::from(status));
                            if let Err(e) = x.request(hook, ev, "eventHook").await {
                                x.alert(AlertKind::WebhookFailure, format!("sip:refer: {e}"));
                            }
                        }
                        if last {
                            final_status = Some(status);
                            break;
                        }
                    }
                    Ok(Some(ReferProgress::Answered { .. })) => {}
                    Ok(None) => return Err(x.call_ended().await.into()),
                    Err(_) => break,
                }
            }
        }
        let _ = x.ctl.refer_done(&x.call).await;
        if let Some(status) = final_status {
            results.insert("final_referred_call_status".into(), Value::from(status));
        }
        if final_status.is_some_and(|s| (200..300).contains(&s)) {
            // The caller talks to the target now: our leg is done.
            if let Some(hook) = self.action_hook.as_ref() {
                if let Err(e) = x.request(hook, results, "actionHook").await {
                    x.alert(AlertKind::WebhookFailure, format!("sip:refer: {e}"));
                }
            }
            match x.ctl.hangup(&x.call, Vec::new()).await {
                Ok(()) | Err(ControlError::Gone) => {}
                Err(e) => x.alert(AlertKind::CallControl, format!("sip:refer: hangup: {e}")),
            }
            return Ok(Flow::End(Ending::HungUp));
        }
        x.action(self.action_hook.as_ref(), results, "actionHook")
            .await
    }
}

#[cfg(test)]
mod tests {
    use crate::verbs::Verb;
    use serde_json::json;

    #[test]
    fn parses_refer_to_as_string_or_number() {
        let Ok(Verb::SipRefer(v)) = Verb::parse(
            &json!({"verb": "sip:refer", "referTo": 15083084809_u64, "actionHook": "/action"}),
        ) else {
            panic!("not parsed");
        };
        assert_eq!(v.refer_to, "15083084809");
        let Ok(Verb::SipRefer(v)) = Verb::parse(
            &json!({"verb": "sip:refer", "referTo": "sip:bob@example.com", "referredBy": "201", "headers": {"X-A": "1"}}),
        ) else {
            panic!("not parsed");
        };
        assert_eq!(v.refer_to, "sip:bob@example.com");
        assert_eq!(v.referred_by.as_deref(), Some("201"));
        assert_eq!(v.headers.0, vec![("X-A".to_string(), "1".to_string())]);
        assert!(Verb::parse(&json!({"verb": "sip:refer"})).is_err());
        assert!(Verb::parse(&json!({"verb": "sip:refer", "referTo": ""})).is_err());
        assert!(Verb::parse(&json!({"verb": "sip:refer", "referTo": [1]})).is_err());
    }
}
