//! api19/RestComm ids: `AC` + the account's UUID as 32 hex digits, `CA` + the leg's, `RE` +
//! a recording's. The one
//! mapping between hookflash ids and RestComm sids, for RCML requests and the api19 dialect.

/// `AC` + the account id's hex digits.
pub fn account_sid(account_id: &str) -> String {
    format!("AC{}", compact(account_id))
}

/// `CA` + the leg id's hex digits.
pub fn call_sid(leg_id: &str) -> String {
    format!("CA{}", compact(leg_id))
}

/// `RE` + the recording id's hex digits.
pub fn recording_sid(recording_id: &str) -> String {
    format!("RE{}", compact(recording_id))
}

/// `CF` + the conference id's hex digits.
pub fn conference_sid(conference_id: &str) -> String {
    format!("CF{}", compact(conference_id))
}

/// The conference id a `CF...` sid names (None: not a conference sid).
pub fn conference_id(sid: &str) -> Option<String> {
    expand(sid.strip_prefix("CF")?)
}

/// The recording id an `RE...` sid names (None: not a recording sid).
pub fn recording_id(sid: &str) -> Option<String> {
    expand(sid.strip_prefix("RE")?)
}

/// The account id an `AC...` sid names (None: not an account sid).
pub fn account_id(sid: &str) -> Option<String> {
    expand(sid.strip_prefix("AC")?)
}

/// The leg id a `CA...` sid names (None: not a call sid).
pub fn leg_id(sid: &str) -> Option<String> {
    expand(sid.strip_prefix("CA")?)
}

/// A UUID without its dashes; any other id as it is.
fn compact(id: &str) -> String {
    match uuid::Uuid::parse_str(id) {
        Ok(u) => u.simple().to_string(),
        Err(_) => id.to_string(),
    }
}

fn expand(rest: &str) -> Option<String> {
    if rest.is_empty() {
        return None;
    }
    if rest.len() == 32 && rest.chars().all(|c| c.is_ascii_hexdigit()) {
        return uuid::Uuid::parse_str(rest)
            .ok()
            .map(|u| u.hyphenated().to_string());
    }
    Some(rest.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sids_round_trip() {
        let id = "0190f3a2-7b1c-7d4e-9f00-0123456789ab";
        let sid = call_sid(id);
        assert_eq!(sid, "CA0190f3a27b1c7d4e9f000123456789ab");
        assert_eq!(sid.len(), 34);
        assert_eq!(leg_id(&sid).as_deref(), Some(id));
        assert_eq!(account_id(&account_sid(id)).as_deref(), Some(id));
        assert_eq!(conference_id(&conference_sid(id)).as_deref(), Some(id));
        assert_eq!(conference_id(&sid), None);
        // Upper-case hex names the same id.
        let upper = format!("CA{}", sid[2..].to_uppercase());
        assert_eq!(leg_id(&upper).as_deref(), Some(id));
        assert_eq!(leg_id("AC0190f3a27b1c7d4e9f000123456789ab"), None);
        assert_eq!(leg_id("CA"), None);
        assert_eq!(account_sid("acc"), "ACacc");
        assert_eq!(recording_id(&recording_sid(id)).as_deref(), Some(id));
        assert_eq!(recording_id(&sid), None);
        assert_eq!(account_id("ACacc").as_deref(), Some("acc"));
    }
}
