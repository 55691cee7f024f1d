//! `sip:refer` for application calls: the server asks the application's caller (a phone or a
//! carrier) with a REFER (RFC 3515) to call someone else, and reports to the application the
//! REFER's answer and the follow-on call's progress, which the caller sends as NOTIFYs
//! (`message/sipfrag`, RFC 3420). The REFER goes out from a task: the actor never waits on
//! the network.

use hookflash_sip::msg::{Header, Request};
use tokio::sync::mpsc;
use tracing::{debug, info};

use super::{CallActor, Phase, Side};
use crate::apps_refer::ReferEvent;
use crate::control::CommandError;
use crate::model::WrongState;

/// A REFER of the application's caller in progress.
pub(super) struct AppRefer {
    events: mpsc::Sender<ReferEvent>,
}

/// The status line of a `message/sipfrag` body (`SIP/2.0 200 OK`), if it is one.
pub(crate) fn sipfrag_status(body: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(body).ok()?;
    let line = text.lines().next()?.trim();
    let mut parts = line.split_whitespace();
    if !parts.next()?.eq_ignore_ascii_case("SIP/2.0") {
        return None;
    }
    let status: u16 = parts.next()?.parse().ok()?;
    (100..700).contains(&status).then_some(status)
}

/// True when the NOTIFY ends the implicit subscription (`Subscription-State: terminated`).
fn subscription_terminated(req: &Request) -> bool {
    req.headers.iter().any(|h| {
        let text = h.to_string();
        let Some((name, value)) = text.split_once(':') else {
            return false;
        };
        name.trim().eq_ignore_ascii_case("Subscription-State")
            && value.trim().to_ascii_lowercase().starts_with("terminated")
    })
}

impl CallActor {
    /// Sends the REFER to the application's caller. Its answer and the NOTIFYs that follow
    /// come on `events`.
    pub(super) fn app_refer(
        &mut self,
        refer_to: String,
        headers: Vec<(String, String)>,
        events: mpsc::Sender<ReferEvent>,
    ) -> Result<(), CommandError> {
        if self.core.phase() != Phase::Connected {
            return Err(self.wrong_state());
        }
        let busy = match self.app.as_ref() {
            None => return Err(self.wrong_state()),
            Some(app) => app.dial.is_some() || app.refer.is_some(),
        };
        if busy || self.parties[Side::B.index()].is_some() {
            return Err(CommandError::WrongState {
                state: WrongState::Transferring,
            });
        }
        let Some(dialog) = self.dialog_of(Side::A) else {
            return Err(self.wrong_state());
        };
        let extra = headers
            .into_iter()
            .map(|(name, value)| Header::Other(name, value))
            .collect();
        if let Some(app) = self.app.as_mut() {
            app.refer = Some(AppRefer {
                events: events.clone(),
            });
        }
        info!(%refer_to, "REFER to the application's caller");
        tokio::spawn(async move {
            let status = match dialog.refer(&refer_to, extra).await {
                Ok(Some(resp)) => resp.status_code.code(),
                Ok(None) => 408,
                Err(e) => {
                    debug!(error = %e, "REFER failed");
                    500
                }
            };
            let _ = events.send(ReferEvent::Answered { status }).await;
        });
        Ok(())
    }

    /// A NOTIFY from the caller while a REFER of ours runs: its progress for the application.
    /// False when no REFER runs (the NOTIFY is not ours to take).
    pub(super) fn app_refer_notify(&mut self, req: &Request) -> bool {
        let Some(refer) = self.app.as_ref().and_then(|app| app.refer.as_ref()) else {
            return false;
        };
        let status = sipfrag_status(&req.body).unwrap_or(100);
        let last = subscription_terminated(req) || status >= 200;
        // Bounded queue: a caller flooding NOTIFYs loses reports, never blocks the call.
        let _ = refer.events.try_send(ReferEvent::Notify { status, last });
        if last {
            if let Some(app) = self.app.as_mut() {
                app.refer = None;
            }
        }
        true
    }

    /// The application gave up on its REFER (its verb ended): later NOTIFYs are not reported.
    pub(super) fn app_refer_done(&mut self) {
        if let Some(app) = self.app.as_mut() {
            app.refer = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::sipfrag_status;

    #[test]
    fn reads_the_status_of_a_sipfrag() {
        assert_eq!(sipfrag_status(b"SIP/2.0 200 OK\r\n"), Some(200));
        assert_eq!(sipfrag_status(b"SIP/2.0 100 Trying"), Some(100));
        assert_eq!(sipfrag_status(b"sip/2.0 486 Busy Here\r\n"), Some(486));
        assert_eq!(sipfrag_status(b""), None);
        assert_eq!(sipfrag_status(b"HTTP/1.1 200 OK"), None);
        assert_eq!(sipfrag_status(b"SIP/2.0 abc"), None);
        assert_eq!(sipfrag_status(b"SIP/2.0 99 Low"), None);
        assert_eq!(sipfrag_status(&[0xff, 0xfe]), None);
    }
}
