//! `leave`: leaves the conference the caller is in (a redirected application's first verb,
//! for example), and the application goes on with the next verb. In no conference there is
//! nothing to leave: the application goes on too. (In an `enqueue` waitHook's answer, `leave`
//! leaves the queue: `verbs/enqueue.rs` handles it there.)

use serde::Deserialize;

use super::Props;
use crate::control::ControlError;
use crate::error::AppError;
use crate::exec::{Exec, Flow};
use tracing::debug;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Leave {}

impl Props for Leave {}

impl Leave {
    pub(crate) async fn exec(&self, x: &mut Exec) -> Result<Flow, AppError> {
        match x.ctl.conference_leave(&x.call).await {
            Ok(()) => Ok(Flow::Next),
            Err(ControlError::Gone) => Err(ControlError::Gone.into()),
            Err(
                e
                @ (ControlError::WrongState(_) | ControlError::Audio(_) | ControlError::Failed(_)),
            ) => {
                debug!(call_id = %x.call.call_id, error = %e, "leave: in no conference");
                Ok(Flow::Next)
            }
        }
    }
}
