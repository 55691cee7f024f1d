//! Answers without a transaction: the digest challenge to a new INVITE that carries no
//! credentials and does not come from a trunk. Such an INVITE is answered 407 in any case; doing
//! it here, before the SIP stack sees it, leaves no transaction, retransmission timer or
//! waiting-for-ACK entry behind — an unauthenticated INVITE flood from any number of sources
//! then costs a lookup and a datagram per request (the stack's clean-up of finished
//! transactions grows with their number).

use std::sync::Weak;

use async_trait::async_trait;
use hookflash_sip::msg::{Header, Method, Request, StatusCode};
use hookflash_sip::source::{StatelessResponder, TransportSource};

use hookflash_sip::digest::NonceStatus;

use crate::auth::{credentials_for, AuthKind};
use crate::sip_glue::{addr_spec, header_value, now_unix};
use crate::{Engine, EngineInner, ToTagPresent};

pub(crate) struct Challenger {
    pub(crate) engine: Weak<EngineInner>,
}

#[async_trait]
impl StatelessResponder for Challenger {
    async fn respond(
        &self,
        req: &Request,
        source: &TransportSource,
    ) -> Option<(StatusCode, Vec<Header>)> {
        if req.method != Method::Invite || req.to_header_tag_present() {
            return None;
        }
        // Malformed requests get their precise error from the usual path.
        if crate::validate::check_request(req).is_some() {
            return None;
        }
        let engine = Engine {
            inner: self.engine.upgrade()?,
        };
        if engine.inner.shutdown.is_cancelled() {
            return None;
        }
        let trunk = engine
            .inner
            .store
            .trunk_by_source(source.addr.ip(), source.addr.port())
            .await
            .ok()?;
        if trunk.is_some() {
            return None;
        }
        let from = header_value(req, "From")?;
        let account = engine.account_for_uri(addr_spec(&from)).await?;
        // Credentials that can only be answered with a challenge anyway — none for our realm,
        // or a nonce that is not ours or too old — are answered here too: a flood with made-up
        // credentials then leaves no state either. Only credentials on a nonce we issued go on
        // to the stack (and to the guessing guard, which bans a source that fails too often).
        let stale = match credentials_for(req, AuthKind::Proxy, &account.realm) {
            None => false,
            Some(creds) => match engine.inner.nonces.check(&creds.nonce, now_unix() as u64) {
                NonceStatus::Valid => return None,
                NonceStatus::Stale => true,
                NonceStatus::Invalid => false,
            },
        };
        engine.inner.metrics.stateless_challenges.inc();
        let headers = engine
            .challenges(&account.realm, stale)
            .into_iter()
            .map(|c| Header::ProxyAuthenticate(c.into()))
            .collect();
        Some((StatusCode::ProxyAuthenticationRequired, headers))
    }
}
