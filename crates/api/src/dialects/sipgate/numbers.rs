//! How the sipgate dialect renders the parties of a call: the REST API shows E.164 numbers with
//! '+', the push webhooks the same digits without '+' (the SDK puts the '+' back).
//!
//! A leg whose party is one of the account's users shows the user's first phone number (DID)
//! if it has one, else its extension. Other parties show their number: `+49...` stays,
//! `0049...` becomes `+49...`, 8 or more digits not starting with 0 get a '+', anything else
//! (national numbers, short codes, `anonymous`) is shown as it came.

use std::collections::HashMap;

use hookflash_engine::LegInfo;
use hookflash_store::Number;

/// user id -> that user's first number (E.164 with '+').
pub(crate) type Dids = HashMap<String, String>;

pub(crate) fn dids(numbers: &[Number]) -> Dids {
    let mut map = Dids::new();
    for n in numbers {
        map.entry(n.user_id.clone())
            .or_insert_with(|| n.number.clone());
    }
    map
}

/// A number as the REST API shows it.
pub(crate) fn with_plus(raw: &str) -> String {
    let s = raw.trim();
    let all_digits = |x: &str| !x.is_empty() && x.chars().all(|c| c.is_ascii_digit());
    if let Some(rest) = s.strip_prefix('+') {
        if all_digits(rest) {
            return s.to_string();
        }
    }
    if let Some(rest) = s.strip_prefix("00") {
        if all_digits(rest) && rest.len() >= 6 {
            return format!("+{rest}");
        }
    }
    if all_digits(s) && s.len() >= 8 && !s.starts_with('0') {
        return format!("+{s}");
    }
    s.to_string()
}

/// A number as the push webhooks send it (no '+').
pub(crate) fn without_plus(raw: &str) -> String {
    let s = with_plus(raw);
    match s.strip_prefix('+') {
        Some(rest) => rest.to_string(),
        None => s,
    }
}

/// The party on a leg, as the REST API shows it.
pub(crate) fn leg_number(leg: &LegInfo, dids: &Dids) -> String {
    if let Some(did) = leg.owner_user_id.as_ref().and_then(|u| dids.get(u)) {
        return did.clone();
    }
    if let Some(ext) = &leg.owner_extension {
        return ext.clone();
    }
    with_plus(&leg.number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookflash_engine::{LegDirection, LegRole, LegState};

    #[test]
    fn numbers_render_like_sipgate() {
        assert_eq!(with_plus("+4915799912345"), "+4915799912345");
        assert_eq!(with_plus("4915799912345"), "+4915799912345");
        assert_eq!(with_plus("004915799912345"), "+4915799912345");
        assert_eq!(with_plus("015799912345"), "015799912345");
        assert_eq!(with_plus("201"), "201");
        assert_eq!(with_plus("anonymous"), "anonymous");
        assert_eq!(without_plus("+4930123456"), "4930123456");
        assert_eq!(without_plus("201"), "201");
    }

    #[test]
    fn users_show_their_did_or_extension() {
        let mut leg = LegInfo {
            id: "l".into(),
            role: LegRole::Callee,
            direction: LegDirection::Out,
            state: LegState::Answered,
            number: "201".into(),
            owner_user_id: Some("u1".into()),
            owner_extension: Some("201".into()),
            muted: false,
            held: false,
            recording: false,
            devices: vec![],
            voicemail: false,
        };
        let dids: Dids = [("u1".to_string(), "+4930123456".to_string())].into();
        assert_eq!(leg_number(&leg, &dids), "+4930123456");
        assert_eq!(leg_number(&leg, &Dids::new()), "201");
        leg.owner_user_id = None;
        leg.owner_extension = None;
        leg.number = "4915799912345".into();
        assert_eq!(leg_number(&leg, &dids), "+4915799912345");
    }
}
