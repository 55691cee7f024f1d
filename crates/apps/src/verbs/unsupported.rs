//! jambonz verbs this server does not run yet: recognised, reported (log and alert) and
//! skipped; the call goes on with the next verb.

use crate::alert::AlertKind;
use crate::error::AppError;
use crate::exec::{Exec, Flow};

/// The names (jambonz verb specifications).
pub const NOT_YET: &[&str] = &[
    "alert",
    "dialogflow",
    "dub",
    "lex",
    "llm",
    "message",
    "rasa",
    "rest:dial",
    "s2s",
    "openai_s2s",
    "google_s2s",
    "elevenlabs_s2s",
    "deepgram_s2s",
    "ultravox_s2s",
    "voice_agent_s2s",
    "say:legacy",
    "sip:notify",
    "sip:redirect",
    "sip:request",
    "stream",
    "transcribe",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotYet {
    pub name: String,
}

impl NotYet {
    pub(crate) async fn exec(&self, x: &mut Exec) -> Result<Flow, AppError> {
        x.alert(
            AlertKind::NotSupported,
            format!("verb {:?} is not supported yet; skipped", self.name),
        );
        Ok(Flow::Next)
    }
}
