//! `answer`: answers the call (200 OK) without playing anything.

use serde::Deserialize;

use super::Props;
use crate::error::AppError;
use crate::exec::{Exec, Flow};

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Answer {}

impl Props for Answer {}

impl Answer {
    pub(crate) async fn exec(&self, x: &mut Exec) -> Result<Flow, AppError> {
        x.answer().await?;
        Ok(Flow::Next)
    }
}
