//! `dtmf`: sends `dtmf` (0-9, *, #, A-D; w/W pauses) to the caller as RFC 4733 events,
//! answering the call first. `duration` is accepted and left to the media layer.

use serde::Deserialize;

use super::common::is_dtmf_key;
use super::Props;
use crate::error::AppError;
use crate::exec::{Exec, Flow};

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Dtmf {
    pub dtmf: String,
    #[serde(default)]
    pub duration: Option<u32>,
}

impl Props for Dtmf {
    fn check(&self) -> Result<(), String> {
        if self.dtmf.is_empty() {
            return Err("dtmf must not be empty".into());
        }
        if let Some(c) = self
            .dtmf
            .chars()
            .find(|c| !is_dtmf_key(*c) && !matches!(c, 'w' | 'W'))
        {
            return Err(format!("{c:?} is not a DTMF key"));
        }
        Ok(())
    }
}

impl Dtmf {
    pub(crate) async fn exec(&self, x: &mut Exec) -> Result<Flow, AppError> {
        x.answer().await?;
        x.ctl.send_dtmf(&x.call, &self.dtmf).await?;
        Ok(Flow::Next)
    }
}
