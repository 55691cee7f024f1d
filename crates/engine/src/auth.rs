//! Digest authentication of REGISTER (401/Authorization) and INVITE (407/Proxy-Authorization)
//! against the stored HA1 values.

use hookflash_sip::auth_guard::{Identity, Scope};
use hookflash_sip::digest::{Algorithm, Credentials, NonceStatus};
use hookflash_sip::msg::Request;
use hookflash_store::{Account, DigestAlgorithm, User};
use tracing::{debug, info};

use crate::sip_glue::{header_values, now_unix};
use crate::Engine;

#[derive(Debug)]
// Lives for one request only; boxing the account and user would cost two allocations on
// every authenticated request for nothing.
#[allow(clippy::large_enum_variant)]
pub enum AuthOutcome {
    Ok {
        account: Account,
        user: User,
    },
    /// Send a challenge (401/407); `stale` when the nonce was ours but old.
    Challenge {
        realm: String,
        stale: bool,
    },
    /// Credentials were checked and are wrong: 403.
    Forbidden(&'static str),
}

#[derive(Clone, Copy)]
pub enum AuthKind {
    /// REGISTER: `Authorization` / `WWW-Authenticate`, 401.
    Registrar,
    /// Other requests: `Proxy-Authorization` / `Proxy-Authenticate`, 407.
    Proxy,
}

impl AuthKind {
    pub fn credentials_header(self) -> &'static str {
        match self {
            AuthKind::Registrar => "Authorization",
            AuthKind::Proxy => "Proxy-Authorization",
        }
    }
}

/// The request's digest credentials for `realm`: a client may send one per realm/algorithm.
pub(crate) fn credentials_for(req: &Request, kind: AuthKind, realm: &str) -> Option<Credentials> {
    header_values(req, kind.credentials_header())
        .into_iter()
        .filter_map(|v| Credentials::parse(&v).ok())
        .find(|c| c.realm == realm)
}

pub fn to_store_alg(a: Algorithm) -> DigestAlgorithm {
    match a {
        Algorithm::Md5 => DigestAlgorithm::Md5,
        Algorithm::Sha256 => DigestAlgorithm::Sha256,
    }
}

impl Engine {
    /// Checks the request's credentials for `realm` (the account the request addresses).
    pub(crate) async fn authenticate(
        &self,
        req: &Request,
        kind: AuthKind,
        account: &Account,
    ) -> AuthOutcome {
        let now = now_unix() as u64;
        let challenge = |stale| AuthOutcome::Challenge {
            realm: account.realm.clone(),
            stale,
        };
        let Some(creds) = credentials_for(req, kind, &account.realm) else {
            return challenge(false);
        };
        if !self.inner.cfg.digest_algorithms.contains(&creds.algorithm) {
            return challenge(false);
        }
        match self.inner.nonces.check(&creds.nonce, now) {
            NonceStatus::Valid => {}
            NonceStatus::Stale => return challenge(true),
            NonceStatus::Invalid => {
                debug!(user = %creds.username, "digest nonce not ours; re-challenging");
                return challenge(false);
            }
        }
        // Password guessing: a banned source or a locked extension is refused before its
        // credentials are looked at; every wrong answer counts against both.
        let source = hookflash_sip::source::transport_source(req).map(|s| s.addr.ip());
        let identity = Identity::new("sip", &format!("{}@{}", creds.username, account.realm));
        let started = std::time::Instant::now();
        if let Err(retry) = self.inner.sip_guard.check(source, &identity, started) {
            debug!(user = %creds.username, scope = retry.scope.as_str(), "digest auth refused: guessing limit");
            return AuthOutcome::Forbidden("Too Many Failures");
        }
        let failed = |why: &'static str| {
            self.inner.metrics.auth_failures.inc();
            // The ban (if this failure starts one) applies from the next request on; a banned
            // source's requests are then dropped before the SIP stack, like a flood's.
            if let Err(retry) = self.inner.sip_guard.failure(source, &identity, started) {
                if let (Scope::Source, Some(ip)) = (retry.scope, source) {
                    self.inner.sip.flood.ban(ip, started, retry.after);
                }
            }
            AuthOutcome::Forbidden(why)
        };
        let user = match self
            .inner
            .store
            .user_by_extension(&account.id, &creds.username)
            .await
        {
            Ok(Some(u)) => u,
            Ok(None) => {
                info!(user = %creds.username, realm = %account.realm, "digest auth for unknown user");
                return failed("Unknown User");
            }
            Err(e) => {
                tracing::warn!(error = %e, "store error during authentication");
                return challenge(false);
            }
        };
        let ha1 = user.ha1(to_store_alg(creds.algorithm)).to_string();
        if creds.verify(&ha1, req.method.to_string().as_str()) {
            if !self.inner.replays.accept(&creds, now) {
                // A copy of credentials already used (captured and replayed, or a client
                // repeating its nonce count): they prove nothing now.
                info!(user = %creds.username, realm = %account.realm, "digest credentials replayed: re-challenging");
                return challenge(true);
            }
            self.inner.sip_guard.success(&identity);
            AuthOutcome::Ok {
                account: account.clone(),
                user,
            }
        } else {
            info!(user = %creds.username, realm = %account.realm, "digest auth failed: wrong credentials");
            failed("Wrong Credentials")
        }
    }

    /// One challenge header value per configured algorithm, preferred first (RFC 8760 §2.4).
    pub(crate) fn challenges(&self, realm: &str, stale: bool) -> Vec<String> {
        let now = now_unix() as u64;
        self.inner
            .cfg
            .digest_algorithms
            .iter()
            .map(|a| self.inner.nonces.challenge(realm, *a, now, stale))
            .collect()
    }

    /// The account a request addresses: by the host of the given URI (the account realm), or
    /// the default account when the host is an address rather than a realm.
    pub(crate) async fn account_for_uri(&self, uri: &str) -> Option<Account> {
        let host = hookflash_sip::uri::host_part(uri).unwrap_or_default();
        match self.inner.store.account_by_realm(host).await {
            Ok(Some(a)) => return Some(a),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "store error looking up account");
                return None;
            }
        }
        self.inner.store.default_account().await.ok().flatten()
    }
}
