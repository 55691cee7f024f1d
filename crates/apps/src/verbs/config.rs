//! `config`: session defaults. `synthesizer` (voice, language) applies to later `say`
//! verbs; `listen` (`enable`, and the `listen` verb's properties) starts a background listen
//! that streams the call's audio while the application goes on (`enable: false` stops it; a
//! new one replaces it; no actionHook). Every other option (recognizer, bargeIn, record,
//! ...) is reported as not supported yet and ignored.

use serde::Deserialize;
use serde_json::{Map, Value};
use tracing::debug;

use super::common::Synthesizer;
use super::{Listen, Props};
use crate::alert::AlertKind;
use crate::error::AppError;
use crate::exec::{Exec, Flow};

/// `config.listen`: on (with the listen's properties) or off.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ConfigListen {
    #[serde(default = "yes")]
    pub enable: bool,
    #[serde(flatten)]
    pub listen: Option<Box<Listen>>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Config {
    #[serde(default)]
    pub synthesizer: Option<Synthesizer>,
    #[serde(default)]
    pub listen: Option<ConfigListen>,
    /// Options not run yet.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl Props for Config {
    fn check(&self) -> Result<(), String> {
        match &self.listen {
            Some(ConfigListen {
                enable: true,
                listen: None,
            }) => Err("listen: enable needs a url".into()),
            Some(ConfigListen {
                listen: Some(l), ..
            }) => l.check().map_err(|e| format!("listen: {e}")),
            _ => Ok(()),
        }
    }
}

impl Config {
    pub(crate) async fn exec(&self, x: &mut Exec) -> Result<Flow, AppError> {
        if let Some(s) = &self.synthesizer {
            if s.voice.is_some() {
                x.synth.voice = s.voice.clone();
            }
            if s.language.is_some() {
                x.synth.language = s.language.clone();
            }
        }
        if let Some(cfg) = &self.listen {
            if let Some(stop) = x.session.replace_background_listen(None) {
                let _ = stop.send(());
            }
            if let (true, Some(listen)) = (cfg.enable, cfg.listen.clone()) {
                x.answer().await?;
                let (tx, rx) = tokio::sync::oneshot::channel();
                x.session.replace_background_listen(Some(tx));
                let mut beside = x.beside();
                tokio::spawn(async move {
                    let reason = listen.run_beside(&mut beside, rx).await;
                    debug!(reason, "config: background listen ended");
                });
            }
        }
        let ignored: Vec<&str> = self
            .other
            .keys()
            .map(String::as_str)
            .filter(|k| *k != "id")
            .collect();
        if !ignored.is_empty() {
            x.alert(
                AlertKind::NotSupported,
                format!("config: not supported yet, ignored: {}", ignored.join(", ")),
            );
        }
        Ok(Flow::Next)
    }
}
