//! `config`: session defaults. `synthesizer` (voice, language) applies to later `say`
//! verbs; every other option (recognizer, bargeIn, record, listen, ...) is reported as not
//! supported yet and ignored.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::common::Synthesizer;
use super::Props;
use crate::alert::AlertKind;
use crate::error::AppError;
use crate::exec::{Exec, Flow};

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Config {
    #[serde(default)]
    pub synthesizer: Option<Synthesizer>,
    /// Options not run yet.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl Props for Config {}

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
