//! Where a dialled string leads: the devices of a user, the account's trunk (with the dial
//! rules and the outbound brakes), and what to answer when it leads nowhere.

use super::*;

/// Why a dialled string leads nowhere: the SIP status to answer, and the dial rule that
/// refused it, if one did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RouteError {
    pub(crate) status: u16,
    pub(crate) refusal: Option<Refusal>,
}

impl From<u16> for RouteError {
    fn from(status: u16) -> Self {
        RouteError {
            status,
            refusal: None,
        }
    }
}

impl From<Refusal> for RouteError {
    fn from(refusal: Refusal) -> Self {
        RouteError {
            status: refusal.sip_status(),
            refusal: Some(refusal),
        }
    }
}

/// Where a dialled extension or number leads, for a call from `origin`.
pub(crate) struct Destination {
    pub(crate) targets: Vec<ForkTarget>,
    /// The callee as the call's legs name it (extension, or the number).
    pub(crate) label: String,
    pub(crate) direction: CallDirection,
    /// The account user reached, if any: (user id, extension).
    pub(crate) owner: Option<(String, String)>,
}

/// Resolves a dialled string to the devices or trunk to ring. Errors are SIP statuses:
/// 404 nothing to reach, 482 a user calling itself, 480 no registered device, 503 the trunk
/// does not resolve; a number out through the trunk must also pass the dial rules (403) and
/// the account's fraud brakes (503).
pub(crate) async fn resolve_destination(
    engine: &Engine,
    account_id: &str,
    origin: &Origin,
    dialled: &str,
) -> Result<Destination, RouteError> {
    let store = &engine.inner.store;
    let extension_user = store
        .user_by_extension(account_id, dialled)
        .await
        .ok()
        .flatten();
    let did = store.lookup_number(dialled).await.ok().flatten();
    let did_owner = did
        .as_ref()
        .filter(|(n, _)| n.account_id == account_id)
        .map(|(_, u)| u.clone());
    let outbound = store.outbound_trunk(account_id).await.ok().flatten();
    let facts = Facts {
        extension_user: extension_user.as_ref().map(|u| u.id.clone()),
        did_owner: did_owner.as_ref().map(|u| u.id.clone()),
        outbound_trunk: outbound.as_ref().map(|t| t.id.clone()),
        is_number: hookflash_sip::uri::is_phone_number(dialled),
    };
    match route(origin, dialled, &facts) {
        Route::NotFound => {
            info!(%dialled, "no route");
            Err(404.into())
        }
        Route::Loop => Err(482.into()),
        Route::User { user_id } => {
            let regs = store
                .registrations(&user_id, now_unix())
                .await
                .unwrap_or_default();
            let targets: Vec<ForkTarget> = regs
                .iter()
                .filter_map(|r| {
                    let destination = device_destination(&r.transport, &r.source, &r.contact)?;
                    Some(ForkTarget {
                        request_uri: r.contact.clone(),
                        destination,
                        transport: transport_of(&r.transport),
                        credential: None,
                        permit: None,
                    })
                })
                .collect();
            if targets.is_empty() {
                info!(%dialled, "callee has no registered device");
                return Err(480.into());
            }
            let owner = extension_user.as_ref().or(did_owner.as_ref());
            let label = owner
                .map(|u| u.extension.clone())
                .unwrap_or_else(|| dialled.to_string());
            let direction = match origin {
                Origin::Trunk { .. } => CallDirection::Inbound,
                Origin::User { .. } | Origin::Account { .. } | Origin::Outside { .. } => {
                    CallDirection::Internal
                }
            };
            Ok(Destination {
                targets,
                label,
                direction,
                owner: owner.map(|u| (u.id.clone(), u.extension.clone())),
            })
        }
        Route::Trunk { number, .. } => {
            let Some(trunk) = outbound else {
                return Err(404.into());
            };
            let permit = admit_outbound(engine, account_id, origin, &number).await?;
            match trunk_target(&trunk, &number, permit).await {
                Some(t) => Ok(Destination {
                    targets: vec![t],
                    label: number,
                    direction: CallDirection::Outbound,
                    owner: None,
                }),
                None => {
                    warn!(trunk = %trunk.name, "trunk address does not resolve");
                    Err(503.into())
                }
            }
        }
    }
}

/// Where to send requests for a registered device. UDP: the address the REGISTER came from
/// (works behind NAT, RFC 3581). TCP: the Contact's address when it is an IP literal, since
/// the registering connection may be gone; otherwise the source.
pub(super) fn device_destination(
    transport: &str,
    source: &str,
    contact: &str,
) -> Option<SocketAddr> {
    let from_source = source.parse::<SocketAddr>().ok();
    if !transport.eq_ignore_ascii_case("tcp") {
        return from_source;
    }
    let host = hookflash_sip::uri::host_part(contact)?;
    let ip: std::net::IpAddr = match host.parse() {
        Ok(ip) => ip,
        Err(_) => return from_source,
    };
    let after_host = contact.split_once(host).map(|(_, rest)| rest).unwrap_or("");
    let after_host = after_host.trim_start_matches(']');
    let port = after_host
        .strip_prefix(':')
        .and_then(|p| p.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|p| p.parse().ok())
        .unwrap_or(5060);
    Some(SocketAddr::new(ip, port))
}

pub(super) fn transport_of(name: &str) -> Transport {
    if name.eq_ignore_ascii_case("tcp") {
        Transport::Tcp
    } else if name.eq_ignore_ascii_case("tls") {
        // Sent over the device's registration connection (its source address).
        Transport::Tls
    } else {
        Transport::Udp
    }
}

/// The dial rules and fraud brakes for a number out through the account's trunk, as dialled
/// by `origin`: its class must be one the dialler may call, and the account must be under its
/// outbound limits. The permit holds the account's place until the call ends.
pub(crate) async fn admit_outbound(
    engine: &Engine,
    account_id: &str,
    origin: &Origin,
    number: &str,
) -> Result<Arc<OutboundPermit>, RouteError> {
    let store = &engine.inner.store;
    let refuse = |refusal: Refusal| {
        engine.inner.metrics.refused(refusal.reason());
        warn!(%number, reason = refusal.reason(), "outbound call refused: {refusal}");
        RouteError::from(refusal)
    };
    let Ok(Some(account)) = store.account_by_id(account_id).await else {
        return Err(500.into());
    };
    let user_classes = match origin {
        Origin::User { user_id, .. } if !user_id.is_empty() => {
            match store.user_by_id(user_id).await {
                Ok(Some(u)) => u.dial_classes,
                // A user that is gone dials nothing.
                _ => Some(DialClasses::NONE),
            }
        }
        Origin::User { .. } | Origin::Account { .. } => None,
        // Routing never sends these out through a trunk; refuse if it ever did.
        Origin::Trunk { .. } | Origin::Outside { .. } => Some(DialClasses::NONE),
    };
    // The account's own numbers tell its country when it has none configured.
    let numbers: Vec<String> = if account.dial.country_code.is_none() {
        store
            .numbers(account_id)
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|n| n.number)
            .collect()
    } else {
        Vec::new()
    };
    let country = dialing::account_country(&account.dial, &numbers);
    let class = dialing::classify(
        number,
        country.as_deref(),
        &engine.inner.cfg.premium_prefixes,
    );
    dialing::check_class(&account.dial, user_classes, class).map_err(refuse)?;
    engine
        .inner
        .outbound
        .try_acquire(account_id, &account.dial, std::time::Instant::now())
        .map(Arc::new)
        .map_err(refuse)
}

async fn trunk_target(
    trunk: &Trunk,
    number: &str,
    permit: Arc<OutboundPermit>,
) -> Option<ForkTarget> {
    let destination = tokio::net::lookup_host((trunk.host.as_str(), trunk.port))
        .await
        .ok()?
        .next()?;
    let transport = transport_of(&trunk.transport);
    let tparam = if transport == Transport::Tcp {
        ";transport=tcp"
    } else {
        ""
    };
    Some(ForkTarget {
        request_uri: format!("sip:{number}@{}:{}{tparam}", trunk.host, trunk.port),
        destination,
        transport,
        credential: match (&trunk.username, &trunk.password) {
            (Some(u), Some(p)) => Some((u.clone(), p.clone())),
            _ => None,
        },
        permit: Some(permit),
    })
}
