//! Where a new call goes. Pure decision over facts the shell looked up, so every rule is
//! unit-tested without a database or sockets.

/// Who placed the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// An authenticated user of the account.
    User { account_id: String, user_id: String },
    /// A carrier trunk of the account (identified by source address).
    Trunk {
        account_id: String,
        trunk_id: String,
    },
    /// The account itself: its API key, or the server acting for it (a parked call coming
    /// back to its parker). The account's dial permissions apply.
    Account { account_id: String },
    /// A party that is not a user of the account (a caller who came in over a trunk, a
    /// number dialled out) transferring its call, where the configuration lets it reach the
    /// account's extensions: never anything outside the account.
    Outside { account_id: String },
}

/// What the shell found out about the dialled string, within the caller's account.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// The dialled string names an extension of the account (its user id).
    pub extension_user: Option<String>,
    /// The dialled string is one of the account's numbers (DIDs), owned by this user.
    pub did_owner: Option<String>,
    /// The account has an outbound trunk (its id).
    pub outbound_trunk: Option<String>,
    /// The dialled string looks like a phone number.
    pub is_number: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Ring every registered contact of this user.
    User { user_id: String },
    /// Send out through this trunk to this number.
    Trunk { trunk_id: String, number: String },
    /// Nothing to reach: 404.
    NotFound,
    /// A user calling itself: 486 would be confusing; 403 Forbidden... we answer 482 (loop).
    Loop,
}

pub fn route(origin: &Origin, dialled: &str, facts: &Facts) -> Route {
    match origin {
        Origin::User { user_id, .. } => {
            let target = facts.extension_user.as_ref().or(facts.did_owner.as_ref());
            match target {
                Some(t) if t == user_id => Route::Loop,
                Some(t) => Route::User { user_id: t.clone() },
                None => match (&facts.outbound_trunk, facts.is_number) {
                    (Some(trunk), true) => Route::Trunk {
                        trunk_id: trunk.clone(),
                        number: dialled.to_string(),
                    },
                    _ => Route::NotFound,
                },
            }
        }
        Origin::Account { .. } => {
            match facts.extension_user.as_ref().or(facts.did_owner.as_ref()) {
                Some(t) => Route::User { user_id: t.clone() },
                None => match (&facts.outbound_trunk, facts.is_number) {
                    (Some(trunk), true) => Route::Trunk {
                        trunk_id: trunk.clone(),
                        number: dialled.to_string(),
                    },
                    _ => Route::NotFound,
                },
            }
        }
        // A carrier may only reach the account's own numbers: never hairpin out again, and
        // never dial extensions directly (that would bypass number ownership).
        Origin::Trunk { .. } => match &facts.did_owner {
            Some(owner) => Route::User {
                user_id: owner.clone(),
            },
            None => Route::NotFound,
        },
        // Inside the account only, never out through the trunk.
        Origin::Outside { .. } => {
            match facts.extension_user.as_ref().or(facts.did_owner.as_ref()) {
                Some(t) => Route::User { user_id: t.clone() },
                None => Route::NotFound,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> Origin {
        Origin::User {
            account_id: "acc".into(),
            user_id: id.into(),
        }
    }

    #[test]
    fn extension_wins_over_trunk() {
        let f = Facts {
            extension_user: Some("u2".into()),
            outbound_trunk: Some("t".into()),
            is_number: true,
            ..Default::default()
        };
        assert_eq!(
            route(&user("u1"), "102", &f),
            Route::User {
                user_id: "u2".into()
            }
        );
    }

    #[test]
    fn internal_call_to_own_did_rings_its_owner() {
        let f = Facts {
            did_owner: Some("u3".into()),
            outbound_trunk: Some("t".into()),
            is_number: true,
            ..Default::default()
        };
        assert_eq!(
            route(&user("u1"), "+4930", &f),
            Route::User {
                user_id: "u3".into()
            }
        );
    }

    #[test]
    fn numbers_go_out_through_the_trunk_names_do_not() {
        let f = Facts {
            outbound_trunk: Some("t".into()),
            is_number: true,
            ..Default::default()
        };
        assert_eq!(
            route(&user("u1"), "+15551234567", &f),
            Route::Trunk {
                trunk_id: "t".into(),
                number: "+15551234567".into()
            }
        );
        let f = Facts {
            outbound_trunk: Some("t".into()),
            is_number: false,
            ..Default::default()
        };
        assert_eq!(route(&user("u1"), "alice", &f), Route::NotFound);
        let f = Facts {
            is_number: true,
            ..Default::default()
        };
        assert_eq!(route(&user("u1"), "999", &f), Route::NotFound);
    }

    #[test]
    fn self_call_is_a_loop() {
        let f = Facts {
            extension_user: Some("u1".into()),
            ..Default::default()
        };
        assert_eq!(route(&user("u1"), "101", &f), Route::Loop);
    }

    #[test]
    fn the_account_reaches_users_and_numbers_an_outsider_only_users() {
        let f = Facts {
            outbound_trunk: Some("t".into()),
            is_number: true,
            ..Default::default()
        };
        let account = Origin::Account {
            account_id: "acc".into(),
        };
        let outside = Origin::Outside {
            account_id: "acc".into(),
        };
        assert_eq!(
            route(&account, "+4969555123", &f),
            Route::Trunk {
                trunk_id: "t".into(),
                number: "+4969555123".into()
            }
        );
        assert_eq!(route(&outside, "+4969555123", &f), Route::NotFound);
        let ext = Facts {
            extension_user: Some("u2".into()),
            outbound_trunk: Some("t".into()),
            is_number: true,
            ..Default::default()
        };
        for o in [&account, &outside] {
            assert_eq!(
                route(o, "102", &ext),
                Route::User {
                    user_id: "u2".into()
                }
            );
        }
    }

    #[test]
    fn trunk_reaches_only_dids() {
        let trunk = Origin::Trunk {
            account_id: "acc".into(),
            trunk_id: "t".into(),
        };
        let f = Facts {
            extension_user: Some("u2".into()),
            outbound_trunk: Some("t".into()),
            is_number: true,
            ..Default::default()
        };
        assert_eq!(route(&trunk, "102", &f), Route::NotFound);
        let f = Facts {
            did_owner: Some("u9".into()),
            ..Default::default()
        };
        assert_eq!(
            route(&trunk, "+4930", &f),
            Route::User {
                user_id: "u9".into()
            }
        );
    }
}
