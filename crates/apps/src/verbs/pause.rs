//! `pause`: silence for `length` seconds. It does not answer the call (an unanswered call
//! keeps ringing for that long).

use serde::Deserialize;

use super::common::seconds;
use super::Props;
use crate::error::AppError;
use crate::exec::{Exec, Flow};

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Pause {
    pub length: f64,
}

impl Props for Pause {
    fn check(&self) -> Result<(), String> {
        seconds("length", self.length).map(|_| ())
    }
}

impl Pause {
    pub(crate) async fn exec(&self, _x: &mut Exec) -> Result<Flow, AppError> {
        if let Ok(d) = seconds("length", self.length) {
            tokio::time::sleep(d).await;
        }
        Ok(Flow::Next)
    }
}
