//! `hangup`: ends the call (BYE, or a final response if it was not answered), with extra
//! SIP `headers`.

use serde::Deserialize;

use super::common::SipHeaders;
use super::Props;
use crate::error::AppError;
use crate::exec::{Ending, Exec, Flow};

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Hangup {
    #[serde(default)]
    pub headers: SipHeaders,
}

impl Props for Hangup {}

impl Hangup {
    pub(crate) async fn exec(&self, x: &mut Exec) -> Result<Flow, AppError> {
        x.ctl.hangup(&x.call, self.headers.0.clone()).await?;
        Ok(Flow::End(Ending::HungUp))
    }
}
