//! A conference's recording and announcements (a child of `conference.rs`, so the actor's
//! own types stay private there).
//!
//! - Recording: the full mix (every participant heard, and announcements into the mix) as
//!   one WAV in the call recordings' format and place, through the same writer: the row is
//!   stored first (state `recording`, `call_id` = the conference's id), so a crash leaves a
//!   file that the start-up repair fixes and lists like a call's. It stops on request or when
//!   the conference ends.
//! - Announcements: audio (a WAV URL or text-to-speech, resolved before the actor sees it)
//!   played once into the mix (heard by everybody hearing the mix, and recorded) or to one
//!   participant alone.

use hookflash_media::audio::Pcm8k;
use tracing::{info, warn};

use super::{Command, ConferenceActor, Who};
use crate::control::{AudioSource, CommandError};
use crate::model::WrongState;
use crate::sip_glue::now_ms;
use crate::Engine;

/// The conference's running recording: its row's id.
pub(super) struct ConfRecording {
    id: String,
}

/// Who hears an announcement.
pub(crate) enum Audience {
    All,
    One(Who),
}

impl Engine {
    /// Starts (`on`) or stops recording conference `name`'s mix. Answers the recording's row
    /// (state `recording`, or `complete` with its duration and size once stopped).
    pub async fn conference_record(
        &self,
        account_id: &str,
        name: &str,
        on: bool,
    ) -> Result<hookflash_store::Recording, CommandError> {
        let entry = self
            .conference_entry(account_id, name)
            .ok_or(CommandError::NotFound)?;
        let id = entry.ask(|reply| Command::Record { on, reply }).await??;
        self.inner
            .store
            .recording(account_id, &id)
            .await
            .ok()
            .flatten()
            .ok_or(CommandError::NotFound)
    }

    /// Plays `audio` once into conference `name` (everybody), or to `participant` alone.
    /// Answers the clip's length in seconds.
    pub async fn conference_announce(
        &self,
        account_id: &str,
        name: &str,
        participant: Option<&str>,
        audio: &AudioSource,
    ) -> Result<f32, CommandError> {
        let entry = self
            .conference_entry(account_id, name)
            .ok_or(CommandError::NotFound)?;
        let clip = self.resolve_audio(audio).await?;
        let audience = match participant {
            Some(p) => Audience::One(Who::Id(p.to_string())),
            None => Audience::All,
        };
        entry
            .ask(|reply| Command::Announce {
                audience,
                clip,
                reply,
            })
            .await?
    }
}

impl ConferenceActor {
    /// Starts or stops the recording; answers its row id.
    pub(super) async fn record(&mut self, on: bool) -> Result<String, CommandError> {
        let wrong = |state| CommandError::WrongState { state };
        if !on {
            let Some(rec) = self.recording.take() else {
                return Err(wrong(WrongState::NotRecording));
            };
            self.finish_recording(&rec).await;
            return Ok(rec.id);
        }
        if self.recording.is_some() {
            return Err(wrong(WrongState::AlreadyRecording));
        }
        let id = uuid::Uuid::now_v7().to_string();
        let path = self.engine.inner.recordings_dir.join(format!("{id}.wav"));
        let row = hookflash_store::Recording {
            id: id.clone(),
            account_id: self.account_id.clone(),
            call_id: self.uid.clone(),
            path: path.to_string_lossy().into_owned(),
            state: "recording".into(),
            started_at: now_ms(),
            ended_at: None,
            duration_ms: None,
            bytes: None,
        };
        // The row first: a crash after this leaves something to repair and list.
        let store = &self.engine.inner.store;
        store
            .insert_recording(&row)
            .await
            .map_err(|e| CommandError::Failed {
                status: 500,
                reason: format!("cannot save the recording: {e}"),
            })?;
        if let Err(e) = self
            .media
            .start_recording(path.clone(), &hookflash_media::RecordOptions::default())
            .await
        {
            warn!(recording = %id, error = %e, "the conference recording did not start");
            let _ = store.finish_recording(&id, "failed", now_ms(), 0, 0).await;
            return Err(CommandError::Failed {
                status: 500,
                reason: e.to_string(),
            });
        }
        info!(conference = %self.name, recording = %id, path = %path.display(), "conference recording started");
        self.recording = Some(ConfRecording { id: id.clone() });
        Ok(id)
    }

    /// Completes the file and the row.
    pub(super) async fn finish_recording(&mut self, rec: &ConfRecording) {
        let store = &self.engine.inner.store;
        match self.media.stop_recording().await {
            Ok(summary) => {
                let duration = summary.duration.as_millis() as i64;
                if let Err(e) = store
                    .finish_recording(
                        &rec.id,
                        "complete",
                        now_ms(),
                        duration,
                        summary.bytes as i64,
                    )
                    .await
                {
                    warn!(recording = %rec.id, error = %e, "could not complete the recording's row");
                }
                info!(conference = %self.name, recording = %rec.id, duration_ms = duration, "conference recording stopped");
            }
            Err(e) => {
                warn!(recording = %rec.id, error = %e, "the conference recording did not stop cleanly");
                let _ = store
                    .finish_recording(&rec.id, "failed", now_ms(), 0, 0)
                    .await;
            }
        }
    }

    /// Stops a running recording (the conference ends).
    pub(super) async fn stop_recording_at_end(&mut self) {
        if let Some(rec) = self.recording.take() {
            self.finish_recording(&rec).await;
        }
    }

    pub(super) fn announce(
        &mut self,
        audience: Audience,
        clip: Pcm8k,
    ) -> Result<f32, CommandError> {
        let seconds = clip.duration().as_secs_f32();
        match audience {
            Audience::All => {
                self.media.announce(clip);
                info!(conference = %self.name, seconds, "announcement to the conference");
            }
            Audience::One(who) => {
                let p = self
                    .participants
                    .iter()
                    .find(|p| who.is(p))
                    .ok_or(CommandError::NotFound)?;
                let media_id = p.media_id.ok_or(CommandError::WrongState {
                    state: WrongState::Ringing,
                })?;
                self.media.announce_to(media_id, clip);
                info!(conference = %self.name, participant = %p.info.id, seconds, "announcement to one participant");
            }
        }
        Ok(seconds)
    }
}
