//! Encrypted transports at the engine's edge: the SIP-over-TLS listener's configuration and
//! SRTP (SDES) on a call leg whose offer asks for it. Kept apart from the call actor: the
//! actor calls [`caller_crypto`] when it checks the caller's offer and [`secure_leg`] once the
//! caller's dialog exists; the rest (encryption per packet, SDP rewriting) lives in the media
//! and SIP crates.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use hookflash_config::SipConfig;
use hookflash_media::relay::{BridgeHandle, Leg};
use hookflash_media::sdp::SessionDescription;
use hookflash_media::srtp::{self, LegSrtp, SdesCrypto, SdesError};
use hookflash_sip::dialog::InviteLeg;
use tracing::{info, warn};

use crate::EngineError;

/// `[sip] tls`: the listen address and the rustls configuration from the PEM files.
pub(crate) fn sip_tls_options(
    sip: &SipConfig,
) -> Result<Option<(SocketAddr, Arc<rustls::ServerConfig>)>, EngineError> {
    let Some(addr) = sip.tls else {
        return Ok(None);
    };
    let (Some(cert), Some(key)) = (&sip.tls_cert, &sip.tls_key) else {
        return Err(EngineError::Config(
            "sip.tls needs sip.tls_cert and sip.tls_key".into(),
        ));
    };
    let config = hookflash_sip::tls::server_config(cert, key)
        .map_err(|e| EngineError::Config(format!("sip.tls: {e}")))?;
    Ok(Some((addr, config)))
}

/// The caller's SDES key when its offer is `RTP/SAVP`: None for plain RTP, an error (the
/// caller gets 488) when it asks for SRTP without an `a=crypto` line we support.
pub(crate) fn caller_crypto(offer: &SessionDescription) -> Result<Option<SdesCrypto>, SdesError> {
    match offer.audio() {
        Some(m) => srtp::choose_offered(m),
        None => Ok(None),
    }
}

/// Makes `leg` an SRTP leg: a fresh key of ours (same tag and suite as the one chosen from its
/// offer), the relay's contexts, and every SDP the leg's dialog sends made `RTP/SAVP` with our
/// key. The leg's own re-offers (hold, codec lock) are answered with the tag they chose, and a
/// new key of theirs re-keys the relay. False if the contexts could not be made (the leg stays
/// plain; logged).
pub(crate) fn secure_leg(
    bridge: &Arc<BridgeHandle>,
    leg: Leg,
    dialog: &InviteLeg,
    theirs: &SdesCrypto,
) -> bool {
    let ours = SdesCrypto::generate(theirs.tag, theirs.suite);
    let contexts = match LegSrtp::new(theirs, &ours) {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "cannot set up SRTP for the leg");
            return false;
        }
    };
    bridge.set_srtp(leg, Some(contexts));
    let state = Mutex::new((theirs.clone(), ours));
    // Weak: the dialog (and its filter) may outlive the call in a BYE's task; the bridge's
    // memory goes with the call.
    let bridge = Arc::downgrade(bridge);
    dialog.set_body_filter(Arc::new(move |body, peer_offer| {
        let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(new) = peer_offer.and_then(offered_crypto) {
            let (current, ours) = &mut *st;
            if new.same_key(current) {
                ours.tag = new.tag;
            } else if let Some(rekeyed) = rekey(&new, ours) {
                if let Some(bridge) = bridge.upgrade() {
                    bridge.set_srtp(leg, Some(rekeyed));
                }
            }
            *current = new;
        }
        srtp::secure_sdp(&body, &st.1)
    }));
    info!(?leg, suite = theirs.suite.name(), "SRTP (SDES) on the leg");
    true
}

/// The usable `a=crypto` line of an SDP offer (None: plain, or none we support).
fn offered_crypto(body: &[u8]) -> Option<SdesCrypto> {
    let sdp = SessionDescription::parse(std::str::from_utf8(body).ok()?).ok()?;
    caller_crypto(&sdp).ok().flatten()
}

/// New contexts for a leg that changed its key (ours keeps its key, takes their tag/suite).
fn rekey(theirs: &SdesCrypto, ours: &mut SdesCrypto) -> Option<LegSrtp> {
    if ours.suite != theirs.suite {
        *ours = SdesCrypto::generate(theirs.tag, theirs.suite);
    }
    ours.tag = theirs.tag;
    match LegSrtp::new(theirs, ours) {
        Ok(c) => {
            info!(
                suite = theirs.suite.name(),
                "SRTP leg re-keyed by its re-offer"
            );
            Some(c)
        }
        Err(e) => {
            warn!(error = %e, "cannot re-key the SRTP leg");
            None
        }
    }
}
