//! The registrar shell: REGISTER in, store updated, 200 with the current bindings out.

use hookflash_sip::dialog::ServerTransaction;
use hookflash_sip::msg::{Header, StatusCode};
use hookflash_sip::registrar::{decide, parse_contacts, Decision};
use hookflash_store::Registration;
use tracing::{debug, info, warn};

use crate::auth::{AuthKind, AuthOutcome};
use crate::sip_glue::{addr_spec, header_value, header_values, now_unix};
use crate::Engine;

impl Engine {
    pub(crate) async fn handle_register(&self, mut tx: ServerTransaction) {
        let req = tx.request().clone();
        let to = header_value(&req, "To").unwrap_or_default();
        let aor = addr_spec(&to).to_string();
        let Some(ext) = hookflash_sip::uri::user_part(&aor).map(str::to_string) else {
            reply(&mut tx, StatusCode::BadRequest, vec![]).await;
            return;
        };
        let Some(account) = self.account_for_uri(&aor).await else {
            reply(&mut tx, StatusCode::NotFound, vec![]).await;
            return;
        };
        // Known or unknown extension, the answer is the same challenge and then the same 403
        // for wrong credentials: nobody learns which extensions exist (no user enumeration).
        let user = match self.authenticate(&req, AuthKind::Registrar, &account).await {
            AuthOutcome::Ok { user, .. } => user,
            AuthOutcome::Challenge { realm, stale } => {
                let headers = self
                    .challenges(&realm, stale)
                    .into_iter()
                    .map(|c| Header::WwwAuthenticate(c.into()))
                    .collect();
                reply(&mut tx, StatusCode::Unauthorized, headers).await;
                return;
            }
            AuthOutcome::Forbidden(why) => {
                debug!(why, "authentication refused");
                reply(&mut tx, StatusCode::Forbidden, vec![]).await;
                return;
            }
        };
        if user.extension != ext {
            // Authenticated as someone else than the address being registered.
            reply(&mut tx, StatusCode::Forbidden, vec![]).await;
            return;
        }
        let contact_values = header_values(&req, "Contact");
        let contacts = match parse_contacts(contact_values.iter().map(String::as_str)) {
            Ok(c) => c,
            Err(e) => {
                info!(error = %e, "REGISTER with a bad Contact");
                reply(&mut tx, StatusCode::BadRequest, vec![]).await;
                return;
            }
        };
        let expires = header_value(&req, "Expires").and_then(|v| v.parse::<u32>().ok());
        let now = now_unix();
        // Where this phone really is: the transport source, not what its Via claims.
        let source = hookflash_sip::source::transport_source(&req);
        let call_id = header_value(&req, "Call-ID").unwrap_or_default();
        let cseq = header_value(&req, "CSeq")
            .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
            .unwrap_or(0);
        let store = &self.inner.store;
        let result = match decide(&contacts, expires, self.inner.cfg.registrar) {
            Decision::Query => Ok(()),
            Decision::RemoveAll => store.remove_registrations(&user.id).await.map(|_| ()),
            Decision::TooBrief(min) => {
                let headers = vec![Header::MinExpires(min.to_string().into())];
                reply(&mut tx, StatusCode::IntervalTooBrief, headers).await;
                return;
            }
            Decision::Bad(why) => {
                info!(why, "bad REGISTER");
                reply(&mut tx, StatusCode::BadRequest, vec![]).await;
                return;
            }
            Decision::Update { upsert, remove } => {
                let mut r = Ok(());
                for uri in remove {
                    if let Err(e) = store.remove_registration(&user.id, &uri).await {
                        r = Err(e);
                    }
                }
                for (uri, secs) in upsert {
                    let reg = Registration {
                        user_id: user.id.clone(),
                        contact: uri,
                        source: source
                            .as_ref()
                            .map(|s| s.addr.to_string())
                            .unwrap_or_default(),
                        transport: source
                            .as_ref()
                            .map(|s| s.transport.clone())
                            .unwrap_or_else(|| "udp".into()),
                        expires_at: now + secs as i64,
                        call_id: call_id.clone(),
                        cseq,
                        user_agent: header_value(&req, "User-Agent"),
                    };
                    if let Err(e) = store.upsert_registration(&reg).await {
                        r = Err(e);
                    }
                }
                r
            }
        };
        if let Err(e) = result {
            warn!(error = %e, "store error saving registration");
            reply(&mut tx, StatusCode::ServerInternalError, vec![]).await;
            return;
        }
        let bindings = store.registrations(&user.id, now).await.unwrap_or_default();
        info!(ext = %user.extension, account = %account.name, bindings = bindings.len(), "registered");
        let headers = bindings
            .iter()
            .map(|b| {
                Header::Contact(
                    format!("<{}>;expires={}", b.contact, (b.expires_at - now).max(0)).into(),
                )
            })
            .collect();
        reply(&mut tx, StatusCode::OK, headers).await;
    }
}

pub(crate) async fn reply(tx: &mut ServerTransaction, status: StatusCode, headers: Vec<Header>) {
    if let Err(e) = tx.reply_with(status, headers, None).await {
        warn!(error = %e, "could not send SIP response");
    }
}
