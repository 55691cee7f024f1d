//! The set-up of a call that comes in: who calls (trunk by source address or user by
//! digest), the caller's offer and session timer, the route, the inbound hook, then the actor.

use super::*;

/// Turns an INVITE that starts a new dialog into a call, or answers it with an error.
pub(crate) async fn run_inbound(engine: Engine, mut tx: ServerTransaction) {
    let call_id = uuid::Uuid::now_v7().to_string();
    tracing::Span::current().record("call_id", call_id.as_str());
    let req = tx.request().clone();
    let started_at = now_ms();

    // 1. Who is calling: a trunk (by the transport's real source address, never by what the
    // request's Via claims) or an authenticated user.
    let source = hookflash_sip::source::transport_source(&req);
    let from_value = header_value(&req, "From").unwrap_or_default();
    let from_uri = addr_spec(&from_value).to_string();
    let ruri = req.uri.to_string();
    let Some(dialled) =
        hookflash_sip::uri::user_part(&ruri).map(hookflash_sip::uri::normalize_number)
    else {
        info!(%ruri, "INVITE without a user part");
        reply(&mut tx, StatusCode::NotFound, vec![]).await;
        return;
    };
    let store = engine.inner.store.clone();
    let trunk = match &source {
        Some(v) => store
            .trunk_by_source(v.addr.ip(), v.addr.port())
            .await
            .ok()
            .flatten(),
        None => None,
    };
    let (origin, account, caller_user) = if let Some(trunk) = &trunk {
        let Ok(Some(account)) = store.account_by_id(&trunk.account_id).await else {
            reply(&mut tx, StatusCode::ServerInternalError, vec![]).await;
            return;
        };
        let origin = Origin::Trunk {
            account_id: account.id.clone(),
            trunk_id: trunk.id.clone(),
        };
        (origin, account, None)
    } else {
        let Some(account) = engine.account_for_uri(&from_uri).await else {
            reply(&mut tx, StatusCode::Forbidden, vec![]).await;
            return;
        };
        match engine.authenticate(&req, AuthKind::Proxy, &account).await {
            AuthOutcome::Ok { account, user } => {
                let origin = Origin::User {
                    account_id: account.id.clone(),
                    user_id: user.id.clone(),
                };
                (origin, account, Some(user))
            }
            AuthOutcome::Challenge { realm, stale } => {
                let headers = engine
                    .challenges(&realm, stale)
                    .into_iter()
                    .map(|c| Header::ProxyAuthenticate(c.into()))
                    .collect();
                reply(&mut tx, StatusCode::ProxyAuthenticationRequired, headers).await;
                return;
            }
            AuthOutcome::Forbidden(why) => {
                debug!(why, "authentication refused");
                reply(&mut tx, StatusCode::Forbidden, vec![]).await;
                return;
            }
        }
    };

    // 2. The caller's offer: we need one we can bridge (offer in the INVITE, PCMU/PCMA).
    let offer = match parse_offer(&req) {
        Ok(o) => o,
        Err(why) => {
            info!(why, "rejecting INVITE with unusable SDP");
            reply(&mut tx, StatusCode::NotAcceptableHere, vec![]).await;
            return;
        }
    };
    // SRTP (SDES) when the caller asks for it: secure_media.rs.
    let a_crypto = match crate::secure_media::caller_crypto(&offer) {
        Ok(c) => c,
        Err(why) => {
            info!(%why, "rejecting INVITE: SRTP offer we cannot answer");
            reply(&mut tx, StatusCode::NotAcceptableHere, vec![]).await;
            return;
        }
    };

    // Session timer (RFC 4028): an interval below our minimum gets 422 with Min-SE.
    let a_timer = match caller_session_timer(&req, engine.inner.cfg.session_min_se) {
        Ok(t) => t,
        Err(min_se) => {
            info!(min_se, "session interval too small: 422");
            let headers = vec![Header::Other("Min-SE".into(), min_se.to_string())];
            reply(&mut tx, StatusCode::SessionIntervalTooSmall, headers).await;
            return;
        }
    };
    // Asking for timers where the caller did not (configurable; off by default): we refresh.
    let a_timer = a_timer.or_else(|| {
        engine
            .inner
            .cfg
            .session_expires_ask
            .map(|expires| SessionTimer {
                expires,
                refresher: session_timer::Refresher::Uas,
                require: false,
            })
    });
    let a_allows_update = header_values(&req, "Allow")
        .iter()
        .flat_map(|v| v.split(','))
        .any(|m| m.trim().eq_ignore_ascii_case("UPDATE"));

    // 3. Where it goes. A park orbit's code picks up the call parked there.
    if is_orbit(&dialled) {
        let number = match (&caller_user, hookflash_sip::uri::user_part(&from_uri)) {
            (Some(u), _) => u.extension.clone(),
            (None, Some(u)) => u.to_string(),
            (None, None) => "anonymous".to_string(),
        };
        let pickup = Pickup {
            tx,
            offer,
            number,
            owner: caller_user
                .as_ref()
                .map(|u| (u.id.clone(), u.extension.clone())),
        };
        engine.pick_up(&account.id, &dialled, pickup).await;
        return;
    }
    // An application's number (of the caller's own account): the application runs the
    // call instead of anyone being rung.
    let application = match &origin {
        Origin::Trunk { .. } | Origin::User { .. } => store
            .application_for_number(&dialled)
            .await
            .unwrap_or_else(|e| {
                warn!(error = %e, "cannot look up the number's application");
                None
            })
            .filter(|app| app.account_id == account.id),
        Origin::Account { .. } | Origin::Outside { .. } => None,
    };
    let app_permit = match &application {
        Some(app) => match engine.inner.apps.reserve() {
            Some(permit) if engine.inner.apps.has_runtime() => Some((permit, app.clone())),
            _ => {
                warn!(application = %app.id, "no application runtime or its queue is full");
                reply(&mut tx, StatusCode::ServiceUnavailable, vec![]).await;
                return;
            }
        },
        None => None,
    };
    let (targets, callee_label, direction, callee_user) = match &app_permit {
        Some((_, app)) => (
            Vec::new(),
            app.name.clone(),
            match origin {
                Origin::Trunk { .. } => CallDirection::Inbound,
                _ => CallDirection::Internal,
            },
            None,
        ),
        None => match resolve_destination(&engine, &account.id, &origin, &dialled).await {
            Ok(d) => (d.targets, d.label, d.direction, d.owner),
            Err(e) => {
                reply(&mut tx, StatusCode::from(e.status), vec![]).await;
                return;
            }
        },
    };

    let caller_number = match (&caller_user, hookflash_sip::uri::user_part(&from_uri)) {
        (Some(u), _) => u.extension.clone(),
        (None, Some(u)) => u.to_string(),
        (None, None) => "anonymous".to_string(),
    };
    // The call hook (sipgate push `newCall`, inbound_hook.rs) is asked twice at most: for
    // the calling user, whose answer may dial another number instead, reject the call or
    // run an application on it, then for the called user, whose answer may re-route it,
    // send it to voicemail or give it to the application runtime.
    let hooked = engine.inbound_hook().is_some();
    if hooked && app_permit.is_none() && (caller_user.is_some() || callee_user.is_some()) {
        // The caller knows we are on it (no INVITE retransmissions, and it may CANCEL)
        // while the hook decides; the CANCEL is answered once the dialog serves.
        if let Err(e) = tx.reply(StatusCode::Trying).await {
            debug!(error = %e, "100 Trying before the call hook failed");
        }
    }
    let mut pre = PreRoute::default();
    let (targets, callee_label, direction, callee_user) = match (&app_permit, &caller_user) {
        (None, Some(u)) if hooked => {
            let calling = crate::inbound_hook::RingingUser {
                account_id: account.id.clone(),
                call_id: call_id.clone(),
                user_id: u.id.clone(),
                party: crate::inbound_hook::Party::Caller,
                from: caller_number.clone(),
                dialled: dialled.clone(),
                direction,
            };
            let decision = engine.before_ring(calling).await;
            match pre.apply(&engine, decision, &account.id, Some(&u.id)).await {
                Some((forks, label, owner)) => {
                    let direction = if forks.iter().any(|f| f.permit.is_some()) {
                        CallDirection::Outbound
                    } else {
                        CallDirection::Internal
                    };
                    (forks, label, direction, owner)
                }
                // Nobody rings: the application runs the caller's call.
                None if pre.app.is_some() => (Vec::new(), callee_label, direction, None),
                None => (targets, callee_label, direction, callee_user),
            }
        }
        _ => (targets, callee_label, direction, callee_user),
    };
    let (targets, callee_label, callee_user) = match (&app_permit, &callee_user) {
        (None, Some((user_id, _))) if pre.app.is_none() => {
            let ringing = crate::inbound_hook::RingingUser {
                account_id: account.id.clone(),
                call_id: call_id.clone(),
                user_id: user_id.clone(),
                party: crate::inbound_hook::Party::Callee,
                from: caller_number.clone(),
                dialled: dialled.clone(),
                direction,
            };
            let decision = engine.before_ring(ringing).await;
            match pre.apply(&engine, decision, &account.id, None).await {
                Some(redirected) => redirected,
                // Nobody rings: voicemail or the application answers.
                None if pre.voicemail || pre.app.is_some() => {
                    (Vec::new(), callee_label, callee_user)
                }
                None => (targets, callee_label, callee_user),
            }
        }
        _ => (targets, callee_label, callee_user),
    };

    // 4. Media: both legs' sockets now, so the B offer can carry our address.
    let (a_pair, b_pair) = match (engine.inner.ports.allocate(), engine.inner.ports.allocate()) {
        (Ok(a), Ok(b)) => (a, b),
        _ => {
            warn!("RTP port range exhausted");
            reply(&mut tx, StatusCode::ServiceUnavailable, vec![]).await;
            return;
        }
    };
    let bridge = Arc::new(Bridge::start(
        a_pair,
        b_pair,
        BridgeOptions {
            inactivity_timeout: engine.inner.cfg.rtp_inactivity,
        },
        engine.inner.media_stats.clone(),
    ));
    if let Some(addr) = offer.audio_endpoint() {
        bridge.set_remote(Leg::A, addr);
    }

    // 5. The caller's dialog. The SIP layer runs its server transaction in `serve`.
    let dialogs = engine.inner.sip.dialogs.clone();
    let (states, state_rx) = engine.inner.states.open();
    let a_call_id = header_value(&req, "Call-ID").unwrap_or_default();
    let contact = engine.local_contact();
    let a = match dialogs.server_invite(&tx, states.route(&a_call_id), contact) {
        Ok(d) => d,
        Err(e) => {
            warn!(error = %e, "could not create the caller's dialog");
            reply(&mut tx, StatusCode::ServerInternalError, vec![]).await;
            return;
        }
    };
    if let Some(theirs) = &a_crypto {
        crate::secure_media::secure_leg(&bridge, Leg::A, &a, theirs);
    }
    let mut a_handler = a.clone();
    tokio::spawn(async move {
        if let Err(e) = a_handler.serve(&mut tx).await {
            debug!(error = %e, "caller INVITE transaction ended with error");
        }
    });

    let caller_name = display_name(&from_value)
        .or_else(|| caller_user.as_ref().and_then(|u| u.display_name.clone()));
    let a_codecs = offer
        .audio()
        .and_then(|m| sdp::supported_codecs(m).ok())
        .unwrap_or_default();
    let (mut actor, cmd_rx) = build_actor(
        &engine,
        NewCall {
            id: call_id,
            account_id: account.id.clone(),
            a: Some(a),
            a_call_id,
            a_from: from_uri,
            a_to: ruri,
            a_direction: LegDirection::In,
            a_media: MediaSide {
                codecs: a_codecs,
                origin: OriginState::new(),
                direction: offer.direction(),
            },
            bridge,
            states,
            started_at,
            caller_number,
            caller_name,
            caller_owner: caller_user
                .as_ref()
                .map(|u| (u.id.clone(), u.extension.clone())),
            direction,
            callee_label,
            callee_owner: callee_user,
            dialled,
            forks: targets.len(),
        },
    );
    actor.core.set_session_timer(
        Side::A,
        a_timer,
        a_allows_update,
        tokio::time::Instant::now(),
    );
    actor.core.voicemail.set_first(pre.voicemail);
    actor.fork_caller_id = pre.caller_id.take();
    if let Some(taker) = pre.app.take() {
        actor.app = Some(Box::new(AppSession {
            application_id: "sipgate-push".into(),
            dial: None,
            refer: None,
        }));
        taker(crate::apps::AppCall {
            account_id: actor.account_id.clone(),
            call_id: actor.id.clone(),
            leg_id: actor.a_leg.id.clone(),
            application_id: "sipgate-push".into(),
            from: actor.caller_number.clone(),
            to: actor.dialled.clone(),
            caller_name: actor.caller_name.clone(),
            sip_call_id: actor.a_call_id.clone(),
            direction: actor.direction,
            request_uri: req.uri.to_string(),
            headers: Vec::new(),
        });
        info!("call runs the called user's push application");
    }
    if let Some((permit, app)) = app_permit {
        actor.app = Some(Box::new(AppSession {
            application_id: app.id.clone(),
            dial: None,
            refer: None,
        }));
        permit.send(crate::apps::AppCall {
            account_id: actor.account_id.clone(),
            call_id: actor.id.clone(),
            leg_id: actor.a_leg.id.clone(),
            application_id: app.id,
            from: actor.caller_number.clone(),
            to: actor.dialled.clone(),
            caller_name: actor.caller_name.clone(),
            sip_call_id: actor.a_call_id.clone(),
            direction: actor.direction,
            request_uri: req.uri.to_string(),
            headers: req
                .headers
                .iter()
                .filter_map(|h| {
                    let text = h.to_string();
                    let (name, value) = text.split_once(':')?;
                    // Our own transport stamp is not the caller's.
                    if name
                        .trim()
                        .eq_ignore_ascii_case(hookflash_sip::source::SOURCE_HEADER)
                    {
                        return None;
                    }
                    Some((name.trim().to_string(), value.trim().to_string()))
                })
                .collect(),
        });
        info!("call runs an application");
    }
    actor.send_forks(&targets);
    // Its own task: the set-up future above is four times the size of the actor's, and
    // would otherwise stay allocated for as long as the call lasts.
    tokio::spawn(Box::new(actor).run(state_rx, cmd_rx).in_current_span());
}

/// What the inbound hook decided for a call that rings a user, as run_inbound applies it.
#[derive(Default)]
struct PreRoute {
    voicemail: bool,
    caller_id: Option<String>,
    app: Option<crate::inbound_hook::AppTaker>,
}

/// The targets, callee label and callee of a call that rings a user.
type Ringing = (Vec<ForkTarget>, String, Option<(String, String)>);

impl PreRoute {
    /// The targets of a redirect (None: the user's or what the caller dialled, or nobody's
    /// for voicemail and an application). `caller`: the calling user's decision (its
    /// redirect is dialled as that user may dial).
    async fn apply(
        &mut self,
        engine: &Engine,
        decision: crate::inbound_hook::InboundDecision,
        account_id: &str,
        caller: Option<&str>,
    ) -> Option<Ringing> {
        use crate::inbound_hook::InboundDecision;
        match decision {
            InboundDecision::Ring => None,
            InboundDecision::Redirect { targets, caller_id } => {
                let Some(t) = engine.redirect_target(account_id, caller, &targets).await else {
                    warn!(
                        ?targets,
                        "no redirect target can be reached; the call goes on as it was"
                    );
                    return None;
                };
                info!(target = %t.label, caller = caller.is_some(), "the call is redirected by a push answer");
                self.caller_id = caller_id;
                Some((t.forks, t.label, t.owner))
            }
            InboundDecision::Voicemail if caller.is_some() => {
                info!("a caller's push answer asks for voicemail; the call goes on as dialled");
                None
            }
            InboundDecision::Voicemail => {
                self.voicemail = true;
                info!("the callee's push answer sends the call to voicemail");
                None
            }
            InboundDecision::Application(taker) => {
                self.app = Some(taker);
                None
            }
        }
    }
}

/// The session timer a caller's INVITE asks for, as we run it; `Err(min_se)` when its
/// interval is below our minimum (answer 422).
fn caller_session_timer(req: &Request, min_se: u32) -> Result<Option<SessionTimer>, u32> {
    let mut supported = header_values(req, "Supported");
    supported.extend(header_values(req, "k"));
    supported.extend(header_values(req, "Require"));
    let se = header_value(req, "Session-Expires").or_else(|| header_value(req, "x"));
    let Some(asked) = session_timer::requested(se.as_deref(), &supported) else {
        return Ok(None);
    };
    match session_timer::answer(&asked, min_se) {
        session_timer::Answer::TooSmall { min_se } => Err(min_se),
        session_timer::Answer::Run {
            expires,
            refresher,
            require,
        } => Ok(Some(SessionTimer {
            expires,
            refresher,
            require,
        })),
    }
}
