//! SIP session timers (RFC 4028), the decisions without I/O: what a caller's INVITE asks for,
//! what we answer (or 422), who refreshes, and when the next deadline falls. The call actor
//! keeps one [`SessionTimer`] for the caller's leg and acts on its deadline: send a refresh
//! where we are the refresher, end the call with BYE where the phone was and did not refresh.

use std::time::Duration;

/// Who sends the session refreshes (RFC 4028 §7.1), seen from the dialog's INVITE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresher {
    /// The caller (the dialog's UAC).
    Uac,
    /// We, answering (the UAS).
    Uas,
}

impl Refresher {
    pub fn as_str(self) -> &'static str {
        match self {
            Refresher::Uac => "uac",
            Refresher::Uas => "uas",
        }
    }
}

/// What an INVITE says about session timers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requested {
    /// `Session-Expires` delta-seconds.
    pub expires: u32,
    pub refresher: Option<Refresher>,
    /// The caller lists `timer` in `Supported` (or `Require`).
    pub supports_timer: bool,
}

/// Reads `Session-Expires` (or its compact form `x`) and `Supported`/`Require` values.
/// None when the INVITE asks for no session timer or the header does not parse.
pub fn requested(session_expires: Option<&str>, supported: &[String]) -> Option<Requested> {
    let value = session_expires?;
    let mut parts = value.split(';');
    let expires: u32 = parts.next()?.trim().parse().ok()?;
    let mut refresher = None;
    for p in parts {
        if let Some((k, v)) = p.split_once('=') {
            if k.trim().eq_ignore_ascii_case("refresher") {
                refresher = match v.trim().to_ascii_lowercase().as_str() {
                    "uac" => Some(Refresher::Uac),
                    "uas" => Some(Refresher::Uas),
                    _ => None,
                };
            }
        }
    }
    let supports_timer = supported
        .iter()
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("timer"));
    Some(Requested {
        expires,
        refresher,
        supports_timer,
    })
}

/// Our answer to a caller's request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// 422 Session Interval Too Small, with `Min-SE: min_se`.
    TooSmall { min_se: u32 },
    /// The timer runs with this interval and refresher; `require` says whether the 2xx carries
    /// `Require: timer` (only when the caller supports it).
    Run {
        expires: u32,
        refresher: Refresher,
        require: bool,
    },
}

/// RFC 4028 §9: below our minimum → 422; otherwise the caller's interval, and the refresher
/// it named, else the caller when it supports timers (it then does the work), else us.
pub fn answer(req: &Requested, min_se: u32) -> Answer {
    if req.expires < min_se {
        return Answer::TooSmall { min_se };
    }
    let refresher = match (req.refresher, req.supports_timer) {
        (Some(r), true) => r,
        (_, true) => Refresher::Uac,
        // A caller without timer support cannot refresh on request: we do.
        (_, false) => Refresher::Uas,
    };
    Answer::Run {
        expires: req.expires,
        refresher,
        require: req.supports_timer,
    }
}

/// The header values of a 2xx that runs the timer: `Session-Expires` and, when the caller
/// supports timers, `Require: timer`.
pub fn response_headers(
    expires: u32,
    refresher: Refresher,
    require: bool,
) -> Vec<(String, String)> {
    let mut h = vec![(
        "Session-Expires".to_string(),
        format!("{expires};refresher={}", refresher.as_str()),
    )];
    if require {
        h.push(("Require".to_string(), "timer".to_string()));
    }
    h
}

/// A running session timer of one leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimer {
    pub expires: u32,
    pub refresher: Refresher,
    pub require: bool,
}

impl SessionTimer {
    /// From the last refresh to the next deadline: where we refresh, half the interval
    /// (§10: "at half the session expiration"); where the phone does, the interval less
    /// min(32 s, a third of it) (§10: the BYE "before the session expires").
    pub fn next_deadline(&self) -> Duration {
        let expires = u64::from(self.expires);
        match self.refresher {
            Refresher::Uas => Duration::from_secs(expires.div_ceil(2).max(1)),
            Refresher::Uac => Duration::from_secs(expires - (expires / 3).min(32)),
        }
    }

    /// [`Self::next_deadline`] on a leg where we are the dialog's UAS (`we_are_uas`, the
    /// caller's leg) or its UAC (a leg we dialled).
    pub fn next_deadline_as(&self, we_are_uas: bool) -> Duration {
        let mine = SessionTimer {
            refresher: if self.we_refresh_as(we_are_uas) {
                Refresher::Uas
            } else {
                Refresher::Uac
            },
            ..*self
        };
        mine.next_deadline()
    }

    /// Do we send the refreshes on a leg where we are the UAS (`we_are_uas`) or the UAC?
    pub fn we_refresh_as(&self, we_are_uas: bool) -> bool {
        (self.refresher == Refresher::Uas) == we_are_uas
    }
}

/// The session timer a dialled party's 2xx sets up (we are the UAC): its `Session-Expires`
/// with the refresher it names (RFC 4028 §7.2: none named means the UAC, us). `asked`: what
/// our INVITE asked for, when it asked; a 2xx without `Session-Expires` then runs our request
/// with us refreshing (§7.2, the UAS did not support timers). None: no timer on this leg.
pub fn callee_timer(session_expires: Option<&str>, asked: Option<u32>) -> Option<SessionTimer> {
    match requested(session_expires, &[]) {
        Some(r) => Some(SessionTimer {
            expires: r.expires,
            refresher: r.refresher.unwrap_or(Refresher::Uac),
            require: false,
        }),
        None => asked.map(|expires| SessionTimer {
            expires,
            refresher: Refresher::Uac,
            require: false,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sup(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_request_is_read_from_session_expires_and_supported() {
        assert_eq!(requested(None, &sup(&["timer"])), None);
        assert_eq!(
            requested(Some("90;refresher=uac"), &sup(&["100rel, timer"])),
            Some(Requested {
                expires: 90,
                refresher: Some(Refresher::Uac),
                supports_timer: true
            })
        );
        assert_eq!(
            requested(Some(" 1800 "), &[]),
            Some(Requested {
                expires: 1800,
                refresher: None,
                supports_timer: false
            })
        );
        assert_eq!(requested(Some("soon"), &[]), None);
        assert_eq!(
            requested(Some("90;refresher=UAS"), &sup(&["Timer"])).and_then(|r| r.refresher),
            Some(Refresher::Uas)
        );
    }

    #[test]
    fn a_dialled_partys_2xx_sets_the_timer_of_its_leg() {
        // The callee refreshes: we end the call if it does not, the interval less a third
        // (at most 32 s) after the last refresh.
        let t = callee_timer(Some("90;refresher=uas"), None).unwrap();
        assert!(!t.we_refresh_as(false));
        assert_eq!(t.next_deadline_as(false), Duration::from_secs(60));
        // We refresh (named, or not named: the UAC), at half the interval.
        for se in ["1800;refresher=uac", "1800"] {
            let t = callee_timer(Some(se), None).unwrap();
            assert!(t.we_refresh_as(false), "{se}");
            assert_eq!(t.next_deadline_as(false), Duration::from_secs(900));
        }
        // No Session-Expires in the 2xx: none, unless we asked (then we refresh).
        assert_eq!(callee_timer(None, None), None);
        let t = callee_timer(None, Some(1800)).unwrap();
        assert!(t.we_refresh_as(false));
        // The caller's leg is unchanged: there we are the UAS.
        let a = SessionTimer {
            expires: 90,
            refresher: Refresher::Uas,
            require: true,
        };
        assert!(a.we_refresh_as(true));
        assert_eq!(a.next_deadline_as(true), a.next_deadline());
    }

    #[test]
    fn too_small_intervals_get_422_with_our_minimum() {
        let r = requested(Some("60"), &sup(&["timer"])).unwrap();
        assert_eq!(answer(&r, 90), Answer::TooSmall { min_se: 90 });
        let r = requested(Some("90"), &sup(&["timer"])).unwrap();
        assert!(matches!(answer(&r, 90), Answer::Run { expires: 90, .. }));
    }

    #[test]
    fn the_refresher_is_the_callers_choice_else_the_caller_else_us() {
        let run = |se: &str, s: &[&str]| answer(&requested(Some(se), &sup(s)).unwrap(), 90);
        assert_eq!(
            run("90;refresher=uas", &["timer"]),
            Answer::Run {
                expires: 90,
                refresher: Refresher::Uas,
                require: true
            }
        );
        assert_eq!(
            run("90", &["timer"]),
            Answer::Run {
                expires: 90,
                refresher: Refresher::Uac,
                require: true
            }
        );
        // Without timer support the caller cannot be made to refresh, nor be sent Require.
        assert_eq!(
            run("90;refresher=uac", &[]),
            Answer::Run {
                expires: 90,
                refresher: Refresher::Uas,
                require: false
            }
        );
    }

    #[test]
    fn deadlines_are_half_the_interval_or_before_expiry() {
        let ours = SessionTimer {
            expires: 90,
            refresher: Refresher::Uas,
            require: true,
        };
        assert_eq!(ours.next_deadline(), Duration::from_secs(45));
        assert!(ours.we_refresh_as(true));
        let theirs = SessionTimer {
            expires: 90,
            refresher: Refresher::Uac,
            require: true,
        };
        assert_eq!(theirs.next_deadline(), Duration::from_secs(60));
        let long = SessionTimer {
            expires: 1800,
            refresher: Refresher::Uac,
            require: true,
        };
        assert_eq!(long.next_deadline(), Duration::from_secs(1768));
        assert_eq!(
            response_headers(90, Refresher::Uac, true),
            vec![
                (
                    "Session-Expires".to_string(),
                    "90;refresher=uac".to_string()
                ),
                ("Require".to_string(), "timer".to_string())
            ]
        );
        assert_eq!(response_headers(90, Refresher::Uas, false).len(), 1);
    }
}
