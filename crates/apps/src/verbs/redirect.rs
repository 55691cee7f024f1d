//! `redirect`: fetches a new list from `actionHook` (with the call fields); a non-empty list
//! replaces the current one. An empty answer lets the current list go on (jambonz).

use serde::Deserialize;
use serde_json::Map;

use super::Props;
use crate::error::AppError;
use crate::exec::{Exec, Flow};
use crate::hook::HookSpec;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Redirect {
    pub action_hook: HookSpec,
}

impl Props for Redirect {}

impl Redirect {
    pub(crate) async fn exec(&self, x: &mut Exec) -> Result<Flow, AppError> {
        x.action(Some(&self.action_hook), Map::new(), "redirect")
            .await
    }
}
