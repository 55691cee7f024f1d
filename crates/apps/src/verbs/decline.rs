//! `sip:decline`: rejects the unanswered call with `status` (400-699), optional `reason`
//! phrase and `headers`. On an answered call it hangs up instead (jambonz cannot decline an
//! answered call either; it ends the call).

use serde::Deserialize;
use tracing::warn;

use super::common::SipHeaders;
use super::Props;
use crate::control::ControlError;
use crate::error::AppError;
use crate::exec::{Ending, Exec, Flow};

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Decline {
    pub status: u16,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub headers: SipHeaders,
}

impl Props for Decline {
    fn check(&self) -> Result<(), String> {
        if !(400..=699).contains(&self.status) {
            return Err(format!(
                "status {} is not a 4xx-6xx final response",
                self.status
            ));
        }
        if self
            .reason
            .as_deref()
            .is_some_and(|r| r.chars().any(|c| c.is_control()))
        {
            return Err("reason must be one line of text".into());
        }
        Ok(())
    }
}

impl Decline {
    pub(crate) async fn exec(&self, x: &mut Exec) -> Result<Flow, AppError> {
        if x.session.is_answered() {
            warn!(call_id = %x.call.call_id, "sip:decline on an answered call: hanging up");
            x.ctl.hangup(&x.call, self.headers.0.clone()).await?;
            return Ok(Flow::End(Ending::HungUp));
        }
        let declined = x
            .ctl
            .decline(
                &x.call,
                self.status,
                self.reason.clone(),
                self.headers.0.clone(),
            )
            .await;
        match declined {
            Ok(()) => Ok(Flow::End(Ending::Declined(self.status))),
            // Answered after all (the engine knows best): end it.
            Err(ControlError::WrongState(state)) => {
                warn!(call_id = %x.call.call_id, state, "sip:decline not possible: hanging up");
                x.ctl.hangup(&x.call, self.headers.0.clone()).await?;
                Ok(Flow::End(Ending::HungUp))
            }
            Err(e) => Err(e.into()),
        }
    }
}
