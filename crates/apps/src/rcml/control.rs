//! `<Redirect>`, `<Hangup>` and `<Reject>`.

use roxmltree::Node;

use super::{attr, hook, method, text, RcmlError};
use crate::verbs::common::SipHeaders;
use crate::verbs::{Decline, Hangup, Redirect, Verb};

pub(super) fn redirect(node: Node) -> Result<Verb, RcmlError> {
    let url = text(node);
    if url.is_empty() {
        return Err(RcmlError::invalid("Redirect", "no URL to redirect to"));
    }
    Ok(Verb::Redirect(Redirect {
        action_hook: hook(&url, method("Redirect", node, "method")?),
    }))
}

pub(super) fn hangup() -> Verb {
    Verb::Hangup(Hangup {
        headers: SipHeaders::default(),
    })
}

/// `reason="busy"` answers 486 Busy Here, `rejected` (the default) 603 Decline.
pub(super) fn reject(node: Node) -> Result<Verb, RcmlError> {
    let (status, phrase) = match attr(node, "reason").map(str::to_ascii_lowercase).as_deref() {
        None | Some("rejected") => (603, "Decline"),
        Some("busy") => (486, "Busy Here"),
        Some(other) => {
            return Err(RcmlError::invalid(
                "Reject",
                format!("reason={other:?} is not busy or rejected"),
            ))
        }
    };
    Ok(Verb::Decline(Decline {
        status,
        reason: Some(phrase.into()),
        headers: SipHeaders::default(),
    }))
}
