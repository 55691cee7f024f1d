//! Dial permissions and fraud brakes for calls that leave through a trunk (toll fraud is paid
//! by the account's owner). Pure decisions — which class a number belongs to, whether a
//! dialler may call it — and a small gate that counts each account's outbound calls, fed with
//! `now` so it is tested with a simulated clock.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use hookflash_store::{DialClass, DialClasses, DialPolicy};

/// Why an outbound leg was refused. Exhaustive: each is a metric reason and a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The dialler may not call this class of number.
    NotPermitted(DialClass),
    /// Both parties of a click-to-dial session are outside numbers and the account does not
    /// allow that.
    OutsideSession,
    /// A party that is not a user of the account tried to transfer the call.
    OutsideRefer,
    /// The account has this many calls out through its trunk already.
    ConcurrentLimit(u32),
    /// The account started this many outbound calls in the last minute already.
    RateLimit(u32),
}

impl Refusal {
    /// The label of `hookflash_outbound_refused_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::NotPermitted(_) => "not_permitted",
            Refusal::OutsideSession => "outside_session",
            Refusal::OutsideRefer => "outside_refer",
            Refusal::ConcurrentLimit(_) => "concurrent_limit",
            Refusal::RateLimit(_) => "rate_limit",
        }
    }

    /// The SIP status a phone gets: 403 for a rule, 503 for a brake (try later).
    pub fn sip_status(&self) -> u16 {
        match self {
            Refusal::NotPermitted(_) | Refusal::OutsideSession | Refusal::OutsideRefer => 403,
            Refusal::ConcurrentLimit(_) | Refusal::RateLimit(_) => 503,
        }
    }

    /// A brake that lifts by itself (as opposed to a rule).
    pub fn is_limit(&self) -> bool {
        match self {
            Refusal::ConcurrentLimit(_) | Refusal::RateLimit(_) => true,
            Refusal::NotPermitted(_) | Refusal::OutsideSession | Refusal::OutsideRefer => false,
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NotPermitted(class) => {
                write!(f, "{} numbers may not be dialled", class.as_str())
            }
            Refusal::OutsideSession => {
                write!(f, "sessions between two outside numbers are not allowed")
            }
            Refusal::OutsideRefer => write!(f, "an outside party may not transfer the call"),
            Refusal::ConcurrentLimit(n) => {
                write!(f, "the account has {n} outbound calls already (its limit)")
            }
            Refusal::RateLimit(n) => {
                write!(
                    f,
                    "the account started {n} outbound calls in the last minute (its limit)"
                )
            }
        }
    }
}

/// Country calling codes with one or two digits (ITU-T E.164 assignments); every other code
/// has three digits.
fn country_code_len(digits: &str) -> usize {
    const TWO: &[&str] = &[
        "20", "27", "30", "31", "32", "33", "34", "36", "39", "40", "41", "43", "44", "45", "46",
        "47", "48", "49", "51", "52", "53", "54", "55", "56", "57", "58", "60", "61", "62", "63",
        "64", "65", "66", "81", "82", "84", "86", "90", "91", "92", "93", "94", "95", "98",
    ];
    match digits.as_bytes().first() {
        Some(b'1') | Some(b'7') => 1,
        _ if digits.len() >= 2 && TWO.contains(&&digits[..2]) => 2,
        _ => 3,
    }
}

/// The country calling code of an E.164 number (`+4930...` -> `49`).
pub fn country_code_of(e164: &str) -> Option<&str> {
    let digits = e164.strip_prefix('+')?;
    let n = country_code_len(digits);
    (digits.len() > n && digits.bytes().all(|b| b.is_ascii_digit())).then(|| &digits[..n])
}

/// A dialled number in E.164 form where its form says which country it is in: `+...` as it
/// is, `00...` (international prefix), `0...` (national trunk prefix) with the account's
/// country. Local and short numbers without a prefix give None.
pub fn to_e164(number: &str, country: Option<&str>) -> Option<String> {
    let n = hookflash_sip::uri::normalize_number(number);
    if let Some(rest) = n.strip_prefix('+') {
        return Some(format!("+{rest}"));
    }
    if let Some(rest) = n.strip_prefix("00") {
        return Some(format!("+{rest}"));
    }
    if let (Some(rest), Some(cc)) = (n.strip_prefix('0'), country) {
        return Some(format!("+{cc}{rest}"));
    }
    None
}

/// Which class a number dialled out through a trunk belongs to. Premium prefixes win; a
/// number in another country (or any `+` number of an account whose country is unknown) is
/// international; everything else, including local numbers without a prefix, is national.
pub fn classify(number: &str, country: Option<&str>, premium_prefixes: &[String]) -> DialClass {
    match to_e164(number, country) {
        Some(e164) => {
            if premium_prefixes
                .iter()
                .any(|p| e164.starts_with(p.as_str()))
            {
                return DialClass::Premium;
            }
            match (country, country_code_of(&e164)) {
                (Some(ours), Some(theirs)) if ours == theirs => DialClass::National,
                _ => DialClass::International,
            }
        }
        None => {
            // A local number: premium ranges are written with the country code, so check the
            // number as if it were prefixed with it.
            let local = hookflash_sip::uri::normalize_number(number);
            if let Some(cc) = country {
                let as_e164 = format!("+{cc}{local}");
                if premium_prefixes
                    .iter()
                    .any(|p| as_e164.starts_with(p.as_str()))
                {
                    return DialClass::Premium;
                }
            }
            DialClass::National
        }
    }
}

/// The account's country: the configured code, else the most common country code among its
/// own E.164 numbers (the first of equals).
pub fn account_country(policy: &DialPolicy, numbers: &[String]) -> Option<String> {
    if let Some(cc) = &policy.country_code {
        return Some(cc.clone());
    }
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for n in numbers {
        if let Some(cc) = country_code_of(n) {
            match counts.iter_mut().find(|(c, _)| *c == cc) {
                Some((_, k)) => *k += 1,
                None => counts.push((cc, 1)),
            }
        }
    }
    let best = counts.iter().map(|(_, k)| *k).max()?;
    counts
        .iter()
        .find(|(_, k)| *k == best)
        .map(|(c, _)| c.to_string())
}

/// The classes a dialler may call: the account's, narrowed by the user's own list if it has
/// one (a user can never dial more than the account).
pub fn allowed(policy: &DialPolicy, user: Option<DialClasses>) -> DialClasses {
    match user {
        Some(u) => policy.classes.intersect(u),
        None => policy.classes,
    }
}

/// May this dialler call a number of `class`?
pub fn check_class(
    policy: &DialPolicy,
    user: Option<DialClasses>,
    class: DialClass,
) -> Result<(), Refusal> {
    if allowed(policy, user).contains(class) {
        Ok(())
    } else {
        Err(Refusal::NotPermitted(class))
    }
}

#[derive(Debug, Default)]
struct Usage {
    active: u32,
    /// When each outbound call of the last minute started.
    recent: VecDeque<Instant>,
}

/// Counts each account's calls out through a trunk (concurrent, and started per minute).
#[derive(Debug, Default)]
pub struct OutboundGate {
    usage: Mutex<HashMap<String, Usage>>,
}

const MINUTE: Duration = Duration::from_secs(60);

impl OutboundGate {
    pub fn new() -> Arc<Self> {
        Arc::new(OutboundGate::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Usage>> {
        match self.usage.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Takes a place for one outbound call of `account_id`, or says which brake stops it.
    /// The place is given back when the permit is dropped.
    pub fn try_acquire(
        self: &Arc<Self>,
        account_id: &str,
        policy: &DialPolicy,
        now: Instant,
    ) -> Result<OutboundPermit, Refusal> {
        let mut usage = self.lock();
        let u = usage.entry(account_id.to_string()).or_default();
        while u
            .recent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= MINUTE)
        {
            u.recent.pop_front();
        }
        let max = policy.max_outbound_calls;
        if max > 0 && u.active >= max {
            return Err(Refusal::ConcurrentLimit(max));
        }
        let per_minute = policy.outbound_calls_per_minute;
        if per_minute > 0 && u.recent.len() >= per_minute as usize {
            return Err(Refusal::RateLimit(per_minute));
        }
        u.active += 1;
        u.recent.push_back(now);
        Ok(OutboundPermit {
            gate: self.clone(),
            account_id: account_id.to_string(),
        })
    }

    /// Calls of `account_id` out through a trunk now.
    #[cfg(test)]
    pub fn active(&self, account_id: &str) -> u32 {
        self.lock().get(account_id).map_or(0, |u| u.active)
    }

    fn release(&self, account_id: &str) {
        let mut usage = self.lock();
        if let Some(u) = usage.get_mut(account_id) {
            u.active = u.active.saturating_sub(1);
            if u.active == 0 && u.recent.is_empty() {
                usage.remove(account_id);
            }
        }
    }
}

/// One outbound call's place in its account's count; dropping it gives the place back.
#[derive(Debug)]
pub struct OutboundPermit {
    gate: Arc<OutboundGate>,
    account_id: String,
}

impl Drop for OutboundPermit {
    fn drop(&mut self) {
        self.gate.release(&self.account_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn premium() -> Vec<String> {
        hookflash_config::default_premium_prefixes()
    }

    fn policy(classes: &[DialClass]) -> DialPolicy {
        DialPolicy {
            classes: DialClasses::of(classes.iter().copied()),
            ..DialPolicy::default()
        }
    }

    #[test]
    fn country_codes_of_one_two_and_three_digits() {
        assert_eq!(country_code_of("+15551234567"), Some("1"));
        assert_eq!(country_code_of("+74951234567"), Some("7"));
        assert_eq!(country_code_of("+4930123456"), Some("49"));
        assert_eq!(country_code_of("+441234567"), Some("44"));
        assert_eq!(country_code_of("+353123456"), Some("353"));
        assert_eq!(country_code_of("+880123456"), Some("880"));
        assert_eq!(country_code_of("4930"), None);
        assert_eq!(country_code_of("+49"), None);
        assert_eq!(country_code_of("+49a1"), None);
    }

    #[test]
    fn numbers_are_classified_by_their_form_and_the_account_country() {
        let p = premium();
        let de = Some("49");
        assert_eq!(classify("+4969555123", de, &p), DialClass::National);
        assert_eq!(classify("069555123", de, &p), DialClass::National);
        assert_eq!(classify("0049 69 555123", de, &p), DialClass::National);
        assert_eq!(classify("555123", de, &p), DialClass::National);
        assert_eq!(classify("+15551234567", de, &p), DialClass::International);
        assert_eq!(classify("0015551234567", de, &p), DialClass::International);
        assert_eq!(classify("+49900123456", de, &p), DialClass::Premium);
        assert_eq!(classify("0900123456", de, &p), DialClass::Premium);
        assert_eq!(classify("0900-123-456", de, &p), DialClass::Premium);
        assert_eq!(classify("+19005551234", de, &p), DialClass::Premium);
        assert_eq!(classify("+8816123456", de, &p), DialClass::Premium);
        // Unknown country: every '+' number is international, a 0-number national.
        assert_eq!(classify("+4969555123", None, &p), DialClass::International);
        assert_eq!(classify("069555123", None, &p), DialClass::National);
        // Premium in another country is still premium.
        assert_eq!(classify("+44909123456", de, &p), DialClass::Premium);
        // Configured prefixes replace the defaults.
        let own = vec!["+4969555".to_string()];
        assert_eq!(classify("069555123", de, &own), DialClass::Premium);
        assert_eq!(classify("0900123456", de, &own), DialClass::National);
    }

    #[test]
    fn the_country_comes_from_the_setting_else_the_numbers() {
        let none = DialPolicy::default();
        let nums = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            account_country(&none, &nums(&["+4930123", "+4989123", "+15551234"])),
            Some("49".into())
        );
        assert_eq!(account_country(&none, &nums(&["0301234", "abc"])), None);
        assert_eq!(account_country(&none, &[]), None);
        let set = DialPolicy {
            country_code: Some("43".into()),
            ..DialPolicy::default()
        };
        assert_eq!(
            account_country(&set, &nums(&["+4930123"])),
            Some("43".into())
        );
    }

    #[test]
    fn a_user_never_dials_more_than_the_account() {
        use DialClass::*;
        let account = policy(&[Internal, National, International]);
        assert!(check_class(&account, None, International).is_ok());
        assert_eq!(
            check_class(&account, None, Premium),
            Err(Refusal::NotPermitted(Premium))
        );
        let user = Some(DialClasses::of([Internal]));
        assert_eq!(
            check_class(&account, user, National),
            Err(Refusal::NotPermitted(National))
        );
        let greedy = Some(DialClasses::of(DialClass::ALL));
        assert!(check_class(&account, greedy, Premium).is_err());
        // New accounts: no international, no premium.
        let fresh = DialPolicy::default();
        assert!(check_class(&fresh, None, National).is_ok());
        assert!(check_class(&fresh, None, International).is_err());
        assert!(check_class(&fresh, None, Premium).is_err());
    }

    #[test]
    fn the_gate_brakes_concurrent_and_per_minute_calls() {
        let gate = OutboundGate::new();
        let p = DialPolicy {
            max_outbound_calls: 2,
            outbound_calls_per_minute: 3,
            ..DialPolicy::default()
        };
        let t0 = Instant::now();
        let a = gate.try_acquire("acc", &p, t0).unwrap();
        let b = gate.try_acquire("acc", &p, t0).unwrap();
        assert_eq!(
            gate.try_acquire("acc", &p, t0).unwrap_err(),
            Refusal::ConcurrentLimit(2)
        );
        // Another account is counted on its own.
        let other = gate.try_acquire("other", &p, t0).unwrap();
        assert_eq!(gate.active("acc"), 2);
        drop(a);
        assert_eq!(gate.active("acc"), 1);
        let c = gate
            .try_acquire("acc", &p, t0 + Duration::from_secs(1))
            .unwrap();
        drop(b);
        drop(c);
        // Three started within the minute: the fourth waits for the oldest to age out.
        let at = t0 + Duration::from_secs(30);
        assert_eq!(
            gate.try_acquire("acc", &p, at).unwrap_err(),
            Refusal::RateLimit(3)
        );
        let later = t0 + Duration::from_secs(60);
        let d = gate.try_acquire("acc", &p, later).unwrap();
        assert_eq!(gate.active("acc"), 1);
        drop(d);
        drop(other);
        // Unlimited when both are 0.
        let open = DialPolicy {
            max_outbound_calls: 0,
            outbound_calls_per_minute: 0,
            ..DialPolicy::default()
        };
        let many: Vec<_> = (0..100)
            .map(|_| gate.try_acquire("big", &open, t0).unwrap())
            .collect();
        assert_eq!(gate.active("big"), 100);
        drop(many);
        assert_eq!(gate.active("big"), 0);
    }

    #[test]
    fn refusals_map_to_sip_statuses_and_reasons() {
        assert_eq!(Refusal::NotPermitted(DialClass::Premium).sip_status(), 403);
        assert_eq!(Refusal::OutsideRefer.sip_status(), 403);
        assert_eq!(Refusal::RateLimit(3).sip_status(), 503);
        assert_eq!(Refusal::ConcurrentLimit(2).reason(), "concurrent_limit");
        assert!(Refusal::RateLimit(1).is_limit());
        assert!(!Refusal::OutsideSession.is_limit());
    }
}
