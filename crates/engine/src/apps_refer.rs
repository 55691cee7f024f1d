//! The application runtime's `sip:refer`: REFER the application's caller to another
//! destination (see `call/app_refer.rs` for the call's side).

use hookflash_sip::msg::Uri;
use tokio::sync::mpsc;

use crate::apps::check_dial_header;
use crate::call::CallCommand;
use crate::control::CommandError;
use crate::Engine;

/// What happens to a REFER an application sent its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReferEvent {
    /// The caller's final response to the REFER (202: it will call; 408: no answer).
    Answered { status: u16 },
    /// A NOTIFY of the follow-on call's progress (its sipfrag status); `last` when it is the
    /// final one.
    Notify { status: u16, last: bool },
}

/// At most this many NOTIFY reports wait for the application (a flood loses reports).
pub const REFER_EVENTS: usize = 16;

fn bad(msg: String) -> CommandError {
    CommandError::Invalid(msg)
}

/// The `Refer-To` URI for `target`: a SIP URI as given, or a number / user name made a URI
/// on this server (the caller calls it through us, with the usual routing and permissions).
pub(crate) fn refer_uri(target: &str, our_host: &str) -> Result<String, CommandError> {
    let target = target.trim();
    if target.is_empty() || target.len() > 512 {
        return Err(bad(
            "referTo must be a SIP URI or a number (1-512 characters)".into(),
        ));
    }
    let lower = target.to_ascii_lowercase();
    let uri = if lower.starts_with("sip:") || lower.starts_with("sips:") {
        target.to_string()
    } else if target
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "+*#._-".contains(c))
    {
        format!("sip:{target}@{our_host}")
    } else {
        return Err(bad(format!(
            "referTo {target:?} is not a SIP URI or a number"
        )));
    };
    // No header injection and a URI the SIP layer can write.
    if uri
        .chars()
        .any(|c| c.is_control() || c == '<' || c == '>' || c == '"')
        || Uri::try_from(uri.as_str()).is_err()
    {
        return Err(bad(format!("referTo {target:?} is not a valid SIP URI")));
    }
    Ok(uri)
}

/// Extra SIP headers an application asked for on a request of ours (REFER, BYE): each as
/// [`check_dial_header`] (token names, not the SIP layer's own, one-line values), bounded.
pub(crate) fn check_headers(headers: &[(String, String)]) -> Result<(), CommandError> {
    if headers.len() > 32 {
        return Err(bad("at most 32 extra headers".into()));
    }
    headers
        .iter()
        .try_for_each(|(name, value)| check_dial_header(name, value))
}

impl Engine {
    /// Ends an application call, with extra `headers` on the BYE to the caller (`hangup`
    /// verb); a call not yet answered is refused as by [`Engine::hangup`].
    pub async fn app_hangup(
        &self,
        account_id: &str,
        call_id: &str,
        headers: Vec<(String, String)>,
    ) -> Result<(), CommandError> {
        check_headers(&headers)?;
        self.send_command(account_id, call_id, |reply| CallCommand::AppHangup {
            headers,
            reply,
        })
        .await
    }

    /// Sends a REFER to an application call's caller, asking it to call `target` (a SIP URI, or
    /// a number / extension reached through this server), `Referred-By` the same kind of
    /// address if given, with extra `headers`. The REFER's answer and the follow-on call's NOTIFYs arrive on `events`.
    pub async fn app_refer(
        &self,
        account_id: &str,
        call_id: &str,
        target: &str,
        referred_by: Option<&str>,
        mut headers: Vec<(String, String)>,
        events: mpsc::Sender<ReferEvent>,
    ) -> Result<(), CommandError> {
        self.local_call(account_id, call_id)?;
        let contact = self.local_contact();
        let host = contact.host_with_port.to_string();
        let refer_to = refer_uri(target, &host)?;
        if let Some(by) = referred_by {
            headers.push(("Referred-By".into(), format!("<{}>", refer_uri(by, &host)?)));
        }
        check_headers(&headers)?;
        if headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("refer-to"))
        {
            return Err(bad("Refer-To is set from referTo".into()));
        }
        self.send_command(account_id, call_id, |reply| CallCommand::AppRefer {
            refer_to,
            headers,
            events,
            reply,
        })
        .await
    }

    /// The application no longer follows its REFER (later NOTIFYs are only answered).
    pub async fn app_refer_done(
        &self,
        account_id: &str,
        call_id: &str,
    ) -> Result<(), CommandError> {
        self.send_command(account_id, call_id, |reply| CallCommand::AppReferDone {
            reply,
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::refer_uri;

    #[test]
    fn refer_targets() {
        let host = "127.0.0.1:5060";
        assert_eq!(
            refer_uri("+4930123", host).ok().as_deref(),
            Some("sip:+4930123@127.0.0.1:5060")
        );
        assert_eq!(
            refer_uri("sip:bob@example.com", host).ok().as_deref(),
            Some("sip:bob@example.com")
        );
        assert_eq!(
            refer_uri("202", host).ok().as_deref(),
            Some("sip:202@127.0.0.1:5060")
        );
        for bad in [
            "",
            "a b",
            "sip:x>\r\nVia: evil",
            "tel:\u{0}",
            "<sip:x>",
            "bob@evil",
        ] {
            assert!(refer_uri(bad, host).is_err(), "{bad:?}");
        }
    }
}
