//! `say`: text to speech.
//!
//! `text` (a string, or a list spoken in order), `synthesizer.voice`/`language` (else the
//! `config` defaults), `loop` (count or "forever"), `earlyMedia` (speak before answering,
//! 183). A TTS failure is reported and the application goes on.

use serde::Deserialize;

use super::common::{Loop, OneOrMany, Synthesizer};
use super::Props;
use crate::alert::AlertKind;
use crate::control::{Audio, ControlError};
use crate::error::AppError;
use crate::exec::{Exec, Flow};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Say {
    pub text: OneOrMany,
    #[serde(default)]
    pub synthesizer: Option<Synthesizer>,
    #[serde(default, rename = "loop")]
    pub repeat: Loop,
    #[serde(default)]
    pub early_media: bool,
}

impl Props for Say {
    fn check(&self) -> Result<(), String> {
        self.text.check("text")
    }
}

impl Say {
    /// The audio to play, with the call's TTS defaults filled in.
    pub(crate) fn audio(&self, defaults: &Synthesizer) -> Vec<Audio> {
        let s = self.synthesizer.as_ref();
        let voice = s
            .and_then(|s| s.voice.clone())
            .or_else(|| defaults.voice.clone());
        let language = s
            .and_then(|s| s.language.clone())
            .or_else(|| defaults.language.clone());
        self.text
            .0
            .iter()
            .map(|t| Audio::Tts {
                text: t.clone(),
                voice: voice.clone(),
                language: language.clone(),
            })
            .collect()
    }

    pub(crate) async fn exec(&self, x: &mut Exec) -> Result<Flow, AppError> {
        let audio = self.audio(&x.synth);
        match x
            .play_all(&audio, self.repeat, self.early_media, None)
            .await
        {
            Ok(_) => Ok(Flow::Next),
            Err(ControlError::Audio(e)) => {
                x.alert(
                    AlertKind::PlayFailed,
                    format!("say: text to speech failed: {e}"),
                );
                Ok(Flow::Next)
            }
            Err(e) => Err(e.into()),
        }
    }
}
