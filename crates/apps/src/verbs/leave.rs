//! `leave`: leaves a queue or conference. Neither runs yet, so for now it ends the
//! application's list (and the call is hung up as at any end of the list).

use serde::Deserialize;

use super::Props;
use crate::error::AppError;
use crate::exec::{Ending, Exec, Flow};

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Leave {}

impl Props for Leave {}

impl Leave {
    pub(crate) async fn exec(&self, _x: &mut Exec) -> Result<Flow, AppError> {
        Ok(Flow::End(Ending::Leave))
    }
}
