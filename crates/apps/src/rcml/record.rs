//! `<Record>`: not run yet (refused with a clear error).

use roxmltree::Node;

use super::RcmlError;
use crate::verbs::Verb;

pub(super) fn record(_node: Node) -> Result<Verb, RcmlError> {
    Err(RcmlError::NotAvailable {
        verb: "Record",
        reason: "<Record> is not available yet".into(),
    })
}
