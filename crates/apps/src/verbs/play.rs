//! `play`: audio from URLs.
//!
//! `url` (a string or a list played in order), `loop`, `earlyMedia`, `timeoutSecs` (stop
//! after that long), `actionHook` (gets `reason: "playCompleted"`, `playback_seconds`,
//! `playback_milliseconds`; or `reason: "playFailed"`, `status: "fail"` when the audio
//! cannot be fetched). `seekOffset` is accepted and ignored.

use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::time::Instant;

use super::common::{seconds, Loop, OneOrMany};
use super::Props;
use crate::alert::AlertKind;
use crate::control::{Audio, ControlError};
use crate::error::AppError;
use crate::exec::{Exec, Flow};
use crate::hook::HookSpec;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Play {
    pub url: OneOrMany,
    #[serde(default, rename = "loop")]
    pub repeat: Loop,
    #[serde(default)]
    pub early_media: bool,
    #[serde(default)]
    pub timeout_secs: Option<f64>,
    #[serde(default)]
    pub seek_offset: Option<f64>,
    #[serde(default)]
    pub action_hook: Option<HookSpec>,
}

impl Props for Play {
    fn check(&self) -> Result<(), String> {
        self.url.check("url")?;
        if let Some(t) = self.timeout_secs {
            seconds("timeoutSecs", t)?;
        }
        Ok(())
    }
}

impl Play {
    pub(crate) fn audio(&self) -> Vec<Audio> {
        self.url.0.iter().map(|u| Audio::Url(u.clone())).collect()
    }

    pub(crate) async fn exec(&self, x: &mut Exec) -> Result<Flow, AppError> {
        // 0 or less: no limit (jambonz).
        let limit = self
            .timeout_secs
            .filter(|t| *t > 0.0)
            .and_then(|t| seconds("timeoutSecs", t).ok());
        let started = Instant::now();
        let results = match x
            .play_all(&self.audio(), self.repeat, self.early_media, limit)
            .await
        {
            Ok(_) => {
                let played = started.elapsed();
                let mut r = Map::new();
                r.insert("reason".into(), Value::from("playCompleted"));
                r.insert("playback_seconds".into(), Value::from(played.as_secs()));
                r.insert(
                    "playback_milliseconds".into(),
                    Value::from(u64::try_from(played.as_millis()).unwrap_or(u64::MAX)),
                );
                r
            }
            Err(ControlError::Audio(e)) => {
                x.alert(AlertKind::PlayFailed, format!("play: {e}"));
                let mut r = Map::new();
                r.insert("reason".into(), Value::from("playFailed"));
                r.insert("status".into(), Value::from("fail"));
                r
            }
            Err(e) => return Err(e.into()),
        };
        x.action(self.action_hook.as_ref(), results, "actionHook")
            .await
    }
}
