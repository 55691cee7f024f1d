//! A hook asked before a call rings a user of the account, and before a call a user of the
//! account places goes out (the sipgate push API's `newCall`, `direction=in` / `out`, whose
//! answer may re-route the call, send it to voicemail or hand it to the application runtime).
//! The engine knows nothing of the hook's language: it waits for a decision (the hook bounds
//! its own wait; [`HOOK_LIMIT`] is the engine's cap) in the call's set-up task, before the
//! call actor exists, and acts on it.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::apps::AppCall;
use crate::model::CallDirection;
use crate::Engine;

/// The longest the set-up of a call waits for the hook, whatever the hook's own timeout.
pub const HOOK_LIMIT: Duration = Duration::from_secs(15);

/// Which end of the call the hook's user is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Party {
    /// The call is about to ring the user.
    Callee,
    /// The user placed the call; nobody rings yet.
    Caller,
}

/// A call about to ring a user of the account, or placed by one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingingUser {
    pub account_id: String,
    /// The call's id (the one its events carry).
    pub call_id: String,
    /// The called user ([`Party::Callee`]) or the calling one ([`Party::Caller`]).
    pub user_id: String,
    pub party: Party,
    /// The caller's number or extension.
    pub from: String,
    /// The number or extension dialled.
    pub dialled: String,
    pub direction: CallDirection,
}

/// Hands an application call to whoever runs it.
pub type AppTaker = Box<dyn FnOnce(AppCall) + Send>;

/// What happens to the call.
pub enum InboundDecision {
    /// Ring the user (a caller's call: what they dialled) as if there were no hook.
    Ring,
    /// Ring these (extensions, numbers; routed and checked as the account dials, or as the
    /// calling user may dial) instead of the user or what the caller dialled; they see
    /// `caller_id` (None: the caller). None of them reachable: the call goes on as if the
    /// hook had said Ring (logged).
    Redirect {
        targets: Vec<String>,
        caller_id: Option<String>,
    },
    /// The called user's voicemail answers at once (no mailbox: the call rings the user). A
    /// caller's call goes on as dialled.
    Voicemail,
    /// Nobody rings: the call is an application call, given to the taker once it exists.
    Application(AppTaker),
}

impl std::fmt::Debug for InboundDecision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InboundDecision::Ring => f.write_str("Ring"),
            InboundDecision::Redirect { targets, caller_id } => f
                .debug_struct("Redirect")
                .field("targets", targets)
                .field("caller_id", caller_id)
                .finish(),
            InboundDecision::Voicemail => f.write_str("Voicemail"),
            InboundDecision::Application(_) => f.write_str("Application"),
        }
    }
}

/// The hook.
pub trait InboundHook: Send + Sync {
    fn before_ring(
        &self,
        call: RingingUser,
    ) -> Pin<Box<dyn Future<Output = InboundDecision> + Send + 'static>>;
}

/// Where the engine keeps its hook.
#[derive(Default)]
pub(crate) struct HookSlot(RwLock<Option<Arc<dyn InboundHook>>>);

impl Engine {
    /// Installs the hook asked before calls ring a user and before a user's calls go out
    /// (replaces an earlier one).
    pub fn set_inbound_hook(&self, hook: Arc<dyn InboundHook>) {
        match self.inner.inbound_hook.0.write() {
            Ok(mut h) => *h = Some(hook),
            Err(p) => *p.into_inner() = Some(hook),
        }
    }

    pub(crate) fn inbound_hook(&self) -> Option<Arc<dyn InboundHook>> {
        match self.inner.inbound_hook.0.read() {
            Ok(h) => h.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The hook's decision for `call` (Ring when there is no hook or it takes too long).
    pub(crate) async fn before_ring(&self, call: RingingUser) -> InboundDecision {
        let Some(hook) = self.inbound_hook() else {
            return InboundDecision::Ring;
        };
        match tokio::time::timeout(HOOK_LIMIT, hook.before_ring(call)).await {
            Ok(d) => d,
            Err(_) => {
                tracing::warn!("the call hook took too long; the call goes on as if unhooked");
                InboundDecision::Ring
            }
        }
    }

    /// The targets of a redirect merged into one, as the account (`as_user`: that user)
    /// dials them; the targets that cannot be reached are left out (logged). None when none
    /// can.
    pub(crate) async fn redirect_target(
        &self,
        account_id: &str,
        as_user: Option<&str>,
        targets: &[String],
    ) -> Option<crate::call::TransferTarget> {
        let mut merged: Option<crate::call::TransferTarget> = None;
        for target in targets {
            match self.resolve_target(account_id, as_user, target).await {
                Ok(t) => match merged.as_mut() {
                    None => merged = Some(t),
                    Some(m) => {
                        m.label = format!("{},{}", m.label, t.label);
                        m.owner = None;
                        m.forks.extend(t.forks);
                    }
                },
                Err(e) => tracing::warn!(%target, error = %e, "redirect target refused"),
            }
        }
        merged
    }
}
