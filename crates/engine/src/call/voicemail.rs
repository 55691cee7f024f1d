//! Voicemail. When a call to a user with an enabled mailbox is rejected, forwarded to
//! voicemail, not answered in time, or every device is busy or unavailable, the server
//! answers the caller itself: greeting (the user's WAV, or text-to-speech), a beep, then the
//! caller's audio is recorded to a WAV (left channel) until the caller hangs up, presses `#`
//! or the maximum length is reached. The message is listed with caller id and duration, and a
//! `voicemail` event announces it.
//!
//! The session's stages and its longest length live in the call core
//! (`call_core/voicemail.rs`); this file executes them (answer, greeting, store, recording).

use std::time::Duration;

use hookflash_media::audio::Pcm8k;
use hookflash_media::relay::{Leg, PlayOptions};
use hookflash_store::VoicemailMessage;
use tracing::{info, warn};

use super::{CallActor, CallCommand, Phase, Side};
use crate::control::{CommandError, LegState};
use crate::events::{EventDetail, EventKind};
use crate::model::EndCause;
use crate::sip_glue::now_ms;

/// Spoken when the user has not uploaded a greeting.
pub const DEFAULT_GREETING: &str =
    "The person you are calling is not available. Please leave a message after the tone.";

fn beep() -> Pcm8k {
    let gap = Pcm8k::silence(Duration::from_millis(200));
    let tone = Pcm8k::tone(1400.0, Duration::from_millis(400), 0.3);
    Pcm8k::new([gap.samples(), tone.samples()].concat())
}

impl CallActor {
    /// The callee's user, if their mailbox takes calls now.
    pub(super) async fn mailbox_user(&mut self) -> Option<String> {
        if self.core.originate.is_originated()
            || self.core.phase() != Phase::Ringing
            || self.a.is_none()
        {
            return None;
        }
        let user_id = self.b_leg.owner_user_id.clone()?;
        match self.engine.inner.store.mailbox(&user_id).await {
            Ok(Some(m)) if m.enabled => Some(user_id),
            Ok(_) => None,
            Err(e) => {
                warn!(error = %e, "cannot read the mailbox; no voicemail");
                None
            }
        }
    }

    /// Sends the ringing caller to the callee's mailbox if there is one. True if it did.
    pub(super) async fn try_voicemail(&mut self) -> bool {
        let Some(user) = self.mailbox_user().await else {
            return false;
        };
        match self.start_voicemail(user).await {
            Ok(()) => true,
            Err(e) => {
                warn!(error = %e, "could not send the caller to voicemail");
                false
            }
        }
    }

    /// Answers the ringing caller into `user_id`'s mailbox: greeting first.
    pub(super) async fn start_voicemail(&mut self, user_id: String) -> Result<(), CommandError> {
        let Some(a) = self.a.clone() else {
            return Err(self.wrong_state());
        };
        self.abandon_all_forks();
        let greeting = self.greeting(&user_id).await;
        let body = self.server_answer_sdp()?;
        self.accept_caller(a, body)?;
        self.b_leg.state = LegState::Answered;
        self.b_leg.number = "voicemail".into();
        self.b_leg.voicemail = true;
        self.core.voicemail.start(
            tokio::time::Instant::now(),
            user_id,
            greeting.duration(),
            now_ms(),
        );
        self.apply_forwarding();
        let id = self
            .bridge
            .play(Leg::A, greeting, PlayOptions { looped: false });
        let done = self.bridge.playback_done(id);
        let tx = self.self_tx.clone();
        tokio::spawn(async move {
            let end = done.await;
            let _ = tx
                .send(CallCommand::PlaybackEnded {
                    side: 0,
                    whisper: false,
                    end,
                })
                .await;
        });
        info!("caller answered by voicemail");
        self.publish(EventKind::Answered, Some(Side::B), None);
        Ok(())
    }

    /// The user's greeting (custom WAV or the default text-to-speech) and the beep.
    async fn greeting(&mut self, user_id: &str) -> Pcm8k {
        let custom = match self.engine.inner.store.mailbox(user_id).await {
            Ok(Some(m)) => m.greeting_path,
            _ => None,
        };
        let mut pcm = None;
        if let Some(path) = custom {
            match tokio::fs::read(&path).await {
                Ok(bytes) => match hookflash_media::audio::load_wav(&bytes) {
                    Ok(p) => pcm = Some(p),
                    Err(e) => warn!(%path, error = %e, "greeting is not usable; default used"),
                },
                Err(e) => warn!(%path, error = %e, "greeting unreadable; default used"),
            }
        }
        if pcm.is_none() {
            match self
                .engine
                .inner
                .tts
                .synthesize(DEFAULT_GREETING, None)
                .await
            {
                Ok(p) => pcm = Some(p),
                Err(e) => warn!(error = %e, "no text-to-speech for the greeting; beep only"),
            }
        }
        let greeting = pcm.unwrap_or_else(|| Pcm8k::silence(Duration::from_millis(100)));
        Pcm8k::new([greeting.samples(), beep().samples()].concat())
    }

    /// The greeting has played: record the caller.
    pub(super) async fn voicemail_greeting_done(&mut self) {
        let connected = self.core.phase() == Phase::Connected;
        let Some(user_id) = self.core.voicemail.greeting_done(connected) else {
            return;
        };
        let id = uuid::Uuid::now_v7().to_string();
        let dir = self
            .engine
            .inner
            .recordings_dir
            .parent()
            .map(|p| p.join("voicemail"))
            .unwrap_or_else(|| self.engine.inner.recordings_dir.join("voicemail"));
        if let Err(e) = tokio::fs::create_dir_all(&dir).await {
            warn!(error = %e, dir = %dir.display(), "cannot create the voicemail directory");
            self.hangup_all(EndCause::Failed).await;
            return;
        }
        let path = dir.join(format!("{id}.wav"));
        let row = VoicemailMessage {
            id: id.clone(),
            account_id: self.account_id.clone(),
            user_id,
            call_id: self.id.clone(),
            caller: self.caller_number.clone(),
            caller_name: self.caller_name.clone(),
            path: path.to_string_lossy().into_owned(),
            state: "recording".into(),
            created_at: now_ms(),
            duration_ms: None,
            bytes: None,
        };
        // The row first: a crash after this leaves a message to repair and list.
        if let Err(e) = self.engine.inner.store.insert_voicemail(&row).await {
            warn!(error = %e, "cannot save the voicemail message");
            self.hangup_all(EndCause::Failed).await;
            return;
        }
        if let Err(e) = self
            .bridge
            .start_recording(path, hookflash_media::RecordOptions::default())
            .await
        {
            warn!(error = %e, "cannot record the voicemail message");
            let _ = self
                .engine
                .inner
                .store
                .finish_voicemail(&id, "failed", 0, 0)
                .await;
            self.hangup_all(EndCause::Failed).await;
            return;
        }
        self.core
            .voicemail
            .recording(tokio::time::Instant::now(), id.clone());
        info!(message = %id, "recording voicemail");
    }

    /// `#` from the caller ends the message.
    pub(super) async fn voicemail_digit(&mut self, digit: char) {
        if self.core.voicemail.digit(digit) {
            info!("caller ended the message with #");
            self.hangup_all(EndCause::Normal).await;
        }
    }

    /// Completes the message when the call ends (file header, row, event).
    pub(super) async fn finish_voicemail(&mut self) {
        let Some(message) = self.core.voicemail.finish() else {
            return;
        };
        let id = message.id;
        let (duration, bytes) = match self.bridge.stop_recording().await {
            Ok(summary) => (summary.duration.as_millis() as i64, summary.bytes as i64),
            Err(e) => {
                warn!(message = %id, error = %e, "voicemail recording did not stop cleanly");
                (now_ms() - message.started_at_ms, 0)
            }
        };
        if let Err(e) = self
            .engine
            .inner
            .store
            .finish_voicemail(&id, "complete", duration, bytes)
            .await
        {
            warn!(message = %id, error = %e, "cannot complete the voicemail row");
        }
        info!(message = %id, duration_ms = duration, "voicemail message left");
        self.publish_detail(
            EventKind::Voicemail,
            Some(Side::B),
            EventDetail {
                recording_id: Some(id),
                ..Default::default()
            },
        );
    }
}
