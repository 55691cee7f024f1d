//! The dialog and transaction layer the engine uses, in hookflash's own types.
//!
//! rsipstack's dialog API (`InviteDialog`, `DialogState`, `Transaction`, `InviteOption`,
//! `TransactionHandle`, `DialogId`, `SipAddr`) churns between releases and is pinned; this
//! module is the one place that names it. The engine sees:
//! - [`ServerTransaction`]: an incoming request waiting for its answer;
//! - [`InviteLeg`]: one INVITE dialog (ours as UAC or UAS) and what can be done on it;
//! - [`DialogEvent`]: what happens on a dialog, delivered per call by the [`crate::router`];
//! - [`InDialogRequest`]: a request received inside a dialog, to be answered;
//! - [`OutgoingInvite`] / [`InviteOutcome`]: an INVITE to send and how it ended.
//!
//! SIP messages themselves (`Request`, `Response`, headers) are rsip's, the message model
//! rsipstack builds on, re-exported as [`crate::msg`]; rsip has kept that model stable.

use std::net::SocketAddr;
use std::sync::Arc;

use rsipstack::dialog::authenticate::Credential as StackCredential;
use rsipstack::dialog::dialog::{
    Dialog, DialogState, DialogStateSender, TerminatedReason, TransactionHandle,
};
use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::dialog::invitation::{InviteAsyncResult, InviteOption};
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::dialog::DialogId;
use rsipstack::sip::{Header, Request, Response, StatusCode, Transport, Uri};
use rsipstack::transaction::{Transaction, TransactionReceiver};
use rsipstack::transport::SipAddr;
use thiserror::Error;

/// A dialog or transaction operation failed (the peer is gone, the dialog ended, a timeout).
#[derive(Debug, Error)]
#[error("{0}")]
pub struct DialogError(String);

impl DialogError {
    fn stack(e: impl std::fmt::Display) -> Self {
        DialogError(e.to_string())
    }
}

pub type DialogResult<T> = Result<T, DialogError>;

/// Identifies one dialog: SIP Call-ID and the two tags.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LegId {
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: String,
}

impl From<DialogId> for LegId {
    fn from(id: DialogId) -> Self {
        LegId {
            call_id: id.call_id,
            local_tag: id.local_tag,
            remote_tag: id.remote_tag,
        }
    }
}

impl From<&LegId> for DialogId {
    fn from(id: &LegId) -> Self {
        DialogId {
            call_id: id.call_id.clone(),
            local_tag: id.local_tag.clone(),
            remote_tag: id.remote_tag.clone(),
        }
    }
}

/// Why a dialog ended, as the SIP layer saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// No ACK, or no answer to a request, in time.
    Timeout,
    /// The caller cancelled before the answer.
    UacCancel,
    /// The caller (UAC) sent BYE.
    UacBye,
    /// The callee (UAS) sent BYE.
    UasBye,
    UacBusy,
    UasBusy,
    UasDecline,
    ProxyError(StatusCode),
    ProxyAuthRequired,
    UacOther(StatusCode),
    UasOther(StatusCode),
}

impl From<TerminatedReason> for Ended {
    fn from(r: TerminatedReason) -> Self {
        match r {
            TerminatedReason::Timeout => Ended::Timeout,
            TerminatedReason::UacCancel => Ended::UacCancel,
            TerminatedReason::UacBye => Ended::UacBye,
            TerminatedReason::UasBye => Ended::UasBye,
            TerminatedReason::UacBusy => Ended::UacBusy,
            TerminatedReason::UasBusy => Ended::UasBusy,
            TerminatedReason::UasDecline => Ended::UasDecline,
            TerminatedReason::ProxyError(s) => Ended::ProxyError(s),
            TerminatedReason::ProxyAuthRequired => Ended::ProxyAuthRequired,
            TerminatedReason::UacOther(s) => Ended::UacOther(s),
            TerminatedReason::UasOther(s) => Ended::UasOther(s),
        }
    }
}

/// A request received inside a dialog (re-INVITE, UPDATE, INFO, REFER, NOTIFY …): answer it
/// once with [`InDialogRequest::respond`] (a re-INVITE's answer is a 2xx with SDP).
#[derive(Clone)]
pub struct InDialogRequest(TransactionHandle, Option<(BodyFilter, Vec<u8>)>);

impl std::fmt::Debug for InDialogRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("InDialogRequest").field(&self.0).finish()
    }
}

impl InDialogRequest {
    pub async fn reply(&self, status: StatusCode) -> DialogResult<()> {
        self.0.reply(status).await.map_err(DialogError::stack)
    }

    pub async fn respond(
        &self,
        status: StatusCode,
        headers: Option<Vec<Header>>,
        body: Option<Vec<u8>>,
    ) -> DialogResult<()> {
        // The dialog's body filter applies to our answers too (a re-INVITE from an SRTP leg
        // is answered RTP/SAVP with our key).
        let body = match (&self.1, body) {
            (Some((f, offer)), Some(b)) if !b.is_empty() => Some(f(b, Some(offer))),
            (_, b) => b,
        };
        self.0
            .respond(status, headers, body)
            .await
            .map_err(DialogError::stack)
    }
}

/// What happens on a dialog.
#[derive(Debug)]
pub enum DialogEvent {
    Calling(LegId),
    Trying(LegId),
    /// A provisional response with a To tag (180/183, maybe with SDP).
    Early(LegId, Response),
    WaitAck(LegId, Response),
    Confirmed(LegId, Response),
    /// A re-INVITE or UPDATE from the peer.
    Updated(LegId, Request, InDialogRequest),
    Publish(LegId, Request, InDialogRequest),
    Notify(LegId, Request, InDialogRequest),
    Refer(LegId, Request, InDialogRequest),
    Message(LegId, Request, InDialogRequest),
    Info(LegId, Request, InDialogRequest),
    Options(LegId, Request, InDialogRequest),
    Terminated(LegId, Ended),
}

impl DialogEvent {
    /// The dialog this event is about.
    pub fn leg_id(&self) -> &LegId {
        match self {
            DialogEvent::Calling(id)
            | DialogEvent::Trying(id)
            | DialogEvent::Early(id, _)
            | DialogEvent::WaitAck(id, _)
            | DialogEvent::Confirmed(id, _)
            | DialogEvent::Updated(id, _, _)
            | DialogEvent::Publish(id, _, _)
            | DialogEvent::Notify(id, _, _)
            | DialogEvent::Refer(id, _, _)
            | DialogEvent::Message(id, _, _)
            | DialogEvent::Info(id, _, _)
            | DialogEvent::Options(id, _, _)
            | DialogEvent::Terminated(id, _) => id,
        }
    }
}

impl std::fmt::Display for DialogEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            DialogEvent::Calling(_) => "calling",
            DialogEvent::Trying(_) => "trying",
            DialogEvent::Early(..) => "early",
            DialogEvent::WaitAck(..) => "wait-ack",
            DialogEvent::Confirmed(..) => "confirmed",
            DialogEvent::Updated(..) => "updated",
            DialogEvent::Publish(..) => "publish",
            DialogEvent::Notify(..) => "notify",
            DialogEvent::Refer(..) => "refer",
            DialogEvent::Message(..) => "message",
            DialogEvent::Info(..) => "info",
            DialogEvent::Options(..) => "options",
            DialogEvent::Terminated(_, why) => {
                return write!(f, "terminated ({why:?}) {}", self.leg_id().call_id)
            }
        };
        write!(f, "{kind} {}", self.leg_id().call_id)
    }
}

impl From<DialogState> for DialogEvent {
    fn from(state: DialogState) -> Self {
        let h = |t: TransactionHandle| InDialogRequest(t, None);
        if let DialogState::Updated(id, r, t) = state {
            let filter = body_filter_of(&id.call_id).map(|f| (f, r.body.clone()));
            return DialogEvent::Updated(id.into(), r, InDialogRequest(t, filter));
        }
        match state {
            DialogState::Calling(id) => DialogEvent::Calling(id.into()),
            DialogState::Trying(id) => DialogEvent::Trying(id.into()),
            DialogState::Early(id, r) => DialogEvent::Early(id.into(), r),
            DialogState::WaitAck(id, r) => DialogEvent::WaitAck(id.into(), r),
            DialogState::Confirmed(id, r) => DialogEvent::Confirmed(id.into(), r),
            DialogState::Updated(id, r, t) => DialogEvent::Updated(id.into(), r, h(t)),
            DialogState::Publish(id, r, t) => DialogEvent::Publish(id.into(), r, h(t)),
            DialogState::Notify(id, r, t) => DialogEvent::Notify(id.into(), r, h(t)),
            DialogState::Refer(id, r, t) => DialogEvent::Refer(id.into(), r, h(t)),
            DialogState::Message(id, r, t) => DialogEvent::Message(id.into(), r, h(t)),
            DialogState::Info(id, r, t) => DialogEvent::Info(id.into(), r, h(t)),
            DialogState::Options(id, r, t) => DialogEvent::Options(id.into(), r, h(t)),
            DialogState::Terminated(id, why) => DialogEvent::Terminated(id.into(), why.into()),
        }
    }
}

/// Where a dialog's events go: made by [`crate::router::CallRoutes::route`] before the dialog.
#[derive(Clone)]
pub struct EventRoute(pub(crate) DialogStateSender);

/// An incoming request (outside any dialog, or one to match to a dialog) and its server
/// transaction.
pub struct ServerTransaction(Transaction);

impl ServerTransaction {
    /// The request as received (stamped with its transport source, see `source.rs`).
    pub fn request(&self) -> &Request {
        &self.0.original
    }

    pub async fn reply(&mut self, status: StatusCode) -> DialogResult<()> {
        self.0.reply(status).await.map_err(DialogError::stack)
    }

    pub async fn reply_with(
        &mut self,
        status: StatusCode,
        headers: Vec<Header>,
        body: Option<Vec<u8>>,
    ) -> DialogResult<()> {
        self.0
            .reply_with(status, headers, body)
            .await
            .map_err(DialogError::stack)
    }
}

/// The stream of incoming server transactions.
pub struct IncomingRequests(TransactionReceiver);

impl IncomingRequests {
    pub(crate) fn new(rx: TransactionReceiver) -> Self {
        IncomingRequests(rx)
    }

    pub async fn next(&mut self) -> Option<ServerTransaction> {
        self.0.recv().await.map(ServerTransaction)
    }
}

/// Digest credentials for an outgoing INVITE (a trunk's account).
#[derive(Debug, Clone)]
pub struct Credential {
    pub username: String,
    pub password: String,
}

/// An INVITE to send (a new dialog of ours, as UAC).
#[derive(Debug, Clone)]
pub struct OutgoingInvite {
    /// Our choice of Call-ID, so the dialog's events can be routed before it exists.
    pub call_id: String,
    pub caller_display_name: Option<String>,
    pub caller: Uri,
    pub callee: Uri,
    pub destination: SocketAddr,
    pub transport: Transport,
    /// The SDP offer.
    pub offer: Vec<u8>,
    pub contact: Uri,
    pub headers: Vec<Header>,
    pub credential: Option<Credential>,
}

/// How an INVITE of ours ended: the dialog and its final response (None: no final response,
/// e.g. cancelled), or the error. None from [`PendingInvite::outcome`]: the task is gone.
pub type InviteOutcome = DialogResult<(LegId, Option<Response>)>;

/// An INVITE on its way: its final outcome arrives when awaited.
pub struct PendingInvite(tokio::task::JoinHandle<InviteAsyncResult>);

impl PendingInvite {
    pub async fn outcome(self) -> Option<InviteOutcome> {
        match self.0.await {
            Ok(result) => Some(
                result
                    .map(|(id, resp)| (id.into(), resp))
                    .map_err(DialogError::stack),
            ),
            Err(_) => None,
        }
    }
}

/// Rewrites every SDP body a dialog sends (e.g. to make it RTP/SAVP with our SRTP key). The
/// second argument is the peer's offer being answered, when the body answers a request the
/// peer sent inside the dialog (a re-INVITE); None for our offers and the first answer.
pub type BodyFilter = Arc<dyn Fn(Vec<u8>, Option<&[u8]>) -> Vec<u8> + Send + Sync>;

/// Body filters by Call-ID (every leg of ours has its own), so the answer to a request the
/// peer sends inside the dialog (a re-INVITE) is filtered like everything else we send there.
/// Weak: the dialog's `InviteLeg`s own the filter.
type FilterTable =
    std::collections::HashMap<String, std::sync::Weak<std::sync::OnceLock<BodyFilter>>>;

fn filter_table() -> std::sync::MutexGuard<'static, FilterTable> {
    static TABLE: std::sync::OnceLock<std::sync::Mutex<FilterTable>> = std::sync::OnceLock::new();
    let m = TABLE.get_or_init(Default::default);
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

fn body_filter_of(call_id: &str) -> Option<BodyFilter> {
    let table = filter_table();
    table.get(call_id)?.upgrade()?.get().cloned()
}

/// One INVITE dialog, ours as UAC (we sent the INVITE) or UAS (we answer it). Cheap to clone.
#[derive(Clone)]
pub struct InviteLeg(InviteDialog, Arc<std::sync::OnceLock<BodyFilter>>);

impl InviteLeg {
    fn new(dialog: InviteDialog) -> InviteLeg {
        InviteLeg(dialog, Arc::new(std::sync::OnceLock::new()))
    }

    /// From now on every body this dialog sends (provisional and final answers, re-INVITE,
    /// UPDATE) goes through `filter` first; shared by all clones. Set once; a second call
    /// is ignored (false).
    pub fn set_body_filter(&self, filter: BodyFilter) -> bool {
        if self.1.set(filter).is_err() {
            return false;
        }
        let mut table = filter_table();
        // Entries of dialogs that are gone go when the table is swept.
        if table.len() >= 64 && table.len().is_power_of_two() {
            table.retain(|_, w| w.strong_count() > 0);
        }
        table.insert(self.0.id().call_id, Arc::downgrade(&self.1));
        true
    }

    fn filtered(&self, body: Option<Vec<u8>>) -> Option<Vec<u8>> {
        match (self.1.get(), body) {
            (Some(f), Some(b)) if !b.is_empty() => Some(f(b, None)),
            (_, b) => b,
        }
    }

    pub fn id(&self) -> LegId {
        self.0.id().into()
    }

    /// UAS: a provisional response (180, or 183 with the SDP in `body`).
    pub fn ringing(&self, headers: Option<Vec<Header>>, body: Option<Vec<u8>>) -> DialogResult<()> {
        self.0
            .ringing(headers, self.filtered(body))
            .map_err(DialogError::stack)
    }

    /// UAS: the 200 OK.
    pub fn accept(&self, headers: Option<Vec<Header>>, body: Option<Vec<u8>>) -> DialogResult<()> {
        self.0
            .accept(headers, self.filtered(body))
            .map_err(DialogError::stack)
    }

    /// UAS: a final failure response.
    pub fn reject(&self, status: Option<StatusCode>, reason: Option<String>) -> DialogResult<()> {
        self.0.reject(status, reason).map_err(DialogError::stack)
    }

    /// UAC: CANCEL the INVITE while it rings.
    pub async fn cancel(&self) -> DialogResult<()> {
        self.0.cancel().await.map_err(DialogError::stack)
    }

    pub async fn bye(&self) -> DialogResult<()> {
        self.0.bye().await.map_err(DialogError::stack)
    }

    /// BYE with extra headers (an application's `hangup` with `headers`).
    pub async fn bye_with_headers(&self, headers: Vec<(String, String)>) -> DialogResult<()> {
        let headers = headers
            .into_iter()
            .map(|(name, value)| Header::Other(name, value))
            .collect();
        self.0
            .bye_with_headers(Some(headers))
            .await
            .map_err(DialogError::stack)
    }

    /// A re-INVITE; the peer's final response (None if none came).
    pub async fn reinvite(
        &self,
        headers: Option<Vec<Header>>,
        body: Option<Vec<u8>>,
    ) -> DialogResult<Option<Response>> {
        self.0
            .reinvite(headers, self.filtered(body))
            .await
            .map_err(DialogError::stack)
    }

    pub async fn update(
        &self,
        headers: Option<Vec<Header>>,
        body: Option<Vec<u8>>,
    ) -> DialogResult<Option<Response>> {
        self.0
            .update(headers, self.filtered(body))
            .await
            .map_err(DialogError::stack)
    }

    pub async fn info(
        &self,
        headers: Option<Vec<Header>>,
        body: Option<Vec<u8>>,
    ) -> DialogResult<Option<Response>> {
        self.0.info(headers, body).await.map_err(DialogError::stack)
    }

    pub async fn notify(
        &self,
        headers: Option<Vec<Header>>,
        body: Option<Vec<u8>>,
    ) -> DialogResult<Option<Response>> {
        self.0
            .notify(headers, body)
            .await
            .map_err(DialogError::stack)
    }

    /// REFER (RFC 3515): asks the peer to call `refer_to` (a SIP URI, written into
    /// `Refer-To`), with `extra` headers (e.g. `Referred-By`). The peer's final response (None
    /// if none came or the dialog is not confirmed); its progress comes as NOTIFYs.
    pub async fn refer(
        &self,
        refer_to: &str,
        extra: Vec<Header>,
    ) -> DialogResult<Option<Response>> {
        let mut headers = vec![Header::Other("Refer-To".into(), format!("<{refer_to}>"))];
        headers.extend(extra);
        self.0
            .request(rsipstack::sip::Method::Refer, Some(headers), None)
            .await
            .map_err(DialogError::stack)
    }

    /// UAS: runs the dialog's side of the INVITE server transaction `tx` (retransmissions,
    /// CANCEL, ACK) until it ends.
    pub async fn serve(&mut self, tx: &mut ServerTransaction) -> DialogResult<()> {
        self.0.handle(&mut tx.0).await.map_err(DialogError::stack)
    }
}

/// The dialog layer: every dialog of the server. Cheap to clone.
#[derive(Clone)]
pub struct Dialogs(pub(crate) Arc<DialogLayer>, Option<u16>);

impl Dialogs {
    /// `tls_port`: our SIP-over-TLS listener's port, for the Contact of dialogs over TLS.
    pub(crate) fn new(layer: Arc<DialogLayer>, tls_port: Option<u16>) -> Dialogs {
        Dialogs(layer, tls_port)
    }

    fn contact_for(&self, contact: Uri, transport: Option<&str>) -> Uri {
        tls_contact(contact, self.1, transport)
    }

    /// Sends an INVITE; the dialog exists at once, its outcome comes with [`PendingInvite`].
    pub fn invite(
        &self,
        invite: OutgoingInvite,
        route: EventRoute,
    ) -> DialogResult<(InviteLeg, PendingInvite)> {
        let mut destination = SipAddr::from(invite.destination);
        destination.r#type = Some(invite.transport);
        let mut invite = invite;
        // Headers in the callee's URI become headers of the request (RFC 3261 §19.1.5); they
        // never appear in the Request-URI or To.
        for (name, value) in std::mem::take(&mut invite.callee.headers) {
            invite
                .headers
                .push(Header::Other(percent_decode(&name), percent_decode(&value)));
        }
        let transport = invite.transport.to_string();
        let contact = self.contact_for(invite.contact, Some(&transport));
        let opt = InviteOption {
            call_id: Some(invite.call_id),
            caller_display_name: invite.caller_display_name,
            caller: invite.caller,
            callee: invite.callee,
            destination: Some(destination),
            content_type: Some("application/sdp".into()),
            offer: Some(invite.offer),
            contact,
            headers: (!invite.headers.is_empty()).then_some(invite.headers),
            credential: invite.credential.map(|c| StackCredential {
                username: c.username,
                password: c.password,
                realm: None,
                auth_username: None,
            }),
            ..Default::default()
        };
        let (dialog, handle) = self
            .0
            .do_invite_async(opt, route.0)
            .map_err(DialogError::stack)?;
        Ok((InviteLeg::new(dialog), PendingInvite(handle)))
    }

    /// The UAS dialog of an incoming INVITE (`tx`), answering with `contact`.
    pub fn server_invite(
        &self,
        tx: &ServerTransaction,
        route: EventRoute,
        contact: Uri,
    ) -> DialogResult<InviteLeg> {
        let source = crate::source::transport_source(tx.request());
        let contact = self.contact_for(contact, source.as_ref().map(|s| s.transport.as_str()));
        self.0
            .get_or_create_server_invite(&tx.0, route.0, None, Some(contact))
            .map(InviteLeg::new)
            .map_err(DialogError::stack)
    }

    /// Hands a request inside a dialog to that dialog. None: no such dialog.
    pub async fn handle_in_dialog(&self, tx: &mut ServerTransaction) -> Option<DialogResult<()>> {
        let mut dialog: Dialog = self.0.match_dialog(&tx.0)?;
        Some(dialog.handle(&mut tx.0).await.map_err(DialogError::stack))
    }

    /// Forgets a dialog (after its call ended).
    pub fn remove(&self, id: &LegId) {
        self.0.remove_dialog(&DialogId::from(id));
    }

    /// How many dialogs exist now.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// `%XX` escapes decoded (a malformed escape stays as written).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod uri_header_tests {
    #[test]
    fn escapes_decode() {
        assert_eq!(super::percent_decode("1%202%263%3D%25"), "1 2&3=%");
        assert_eq!(super::percent_decode("50%"), "50%");
        assert_eq!(super::percent_decode("%zz"), "%zz");
    }
}

/// Over TLS our Contact is a `transport=tls` URI at our TLS port: the peer sends its
/// in-dialog requests there (a Contact without it would make it use plain UDP). Other
/// transports, or no TLS listener: `contact` as it is.
fn tls_contact(contact: Uri, tls_port: Option<u16>, transport: Option<&str>) -> Uri {
    let (Some(port), Some(t)) = (tls_port, transport) else {
        return contact;
    };
    if !t.eq_ignore_ascii_case("tls") {
        return contact;
    }
    let host = contact.host_with_port.host.to_string();
    let user = contact.user().map(|u| format!("{u}@")).unwrap_or_default();
    Uri::try_from(format!("sip:{user}{host}:{port};transport=tls").as_str()).unwrap_or(contact)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> Uri {
        Uri::try_from(s).unwrap()
    }

    #[test]
    fn contact_over_tls_names_our_tls_port_and_transport() {
        let ours = uri("sip:127.0.0.1:5060");
        assert_eq!(
            tls_contact(ours.clone(), Some(5061), Some("TLS")).to_string(),
            "sip:127.0.0.1:5061;transport=TLS"
        );
        assert_eq!(
            tls_contact(uri("sip:hf@pbx.example:5060"), Some(5061), Some("tls")).to_string(),
            "sip:hf@pbx.example:5061;transport=TLS"
        );
        assert_eq!(tls_contact(ours.clone(), Some(5061), Some("udp")), ours);
        assert_eq!(tls_contact(ours.clone(), Some(5061), None), ours);
        assert_eq!(
            tls_contact(ours.clone(), None, Some("tls")),
            ours,
            "no TLS listener"
        );
    }
}
