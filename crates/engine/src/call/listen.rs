//! Audio taps of application calls (the jambonz `listen` verb): the decoded audio of both
//! legs in 20 ms frames for the runtime to stream out, a streamed playback towards the
//! caller for audio coming back, and pause/resume (REST `listen_status`). The media side is
//! `hookflash_media::listen`; the tap costs the relay nothing while no listen runs.

use hookflash_media::dtmf::DtmfEvent;
use hookflash_media::listen::{ListenId, ListenStream, StreamFrame};
use hookflash_media::relay::{Leg, PlaybackEnd};
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{debug, info};

use super::{CallActor, Phase};
use crate::control::{CommandError, Reply};

/// What the runtime gets when a tap starts.
#[derive(Debug)]
pub struct AppListen {
    /// Frames of both legs' audio (A = the caller) every 20 ms until the tap stops.
    pub stream: ListenStream,
    /// Key presses on the call's media (with their durations).
    pub dtmf: broadcast::Receiver<DtmfEvent>,
}

/// A streamed playback to the application's caller.
#[derive(Debug)]
pub struct AppStream {
    /// 20 ms frames at 8 kHz; dropping the sender ends the playback.
    pub frames: mpsc::Sender<StreamFrame>,
    /// How it ended.
    pub done: oneshot::Receiver<PlaybackEnd>,
}

/// Listen commands on an application's call.
#[derive(Debug)]
pub enum ListenCommand {
    Start {
        queue_frames: usize,
        reply: Reply<AppListen>,
    },
    Stop {
        id: ListenId,
        reply: Reply<()>,
    },
    /// Pause or resume the running tap (an error when none runs).
    Pause {
        paused: bool,
        reply: Reply<()>,
    },
    PlayStream {
        queue_frames: usize,
        reply: Reply<AppStream>,
    },
}

impl CallActor {
    pub(super) fn app_listen(&mut self, cmd: ListenCommand) {
        match cmd {
            ListenCommand::Start {
                queue_frames,
                reply,
            } => {
                let _ = reply.send(self.app_listen_start(queue_frames));
            }
            ListenCommand::Stop { id, reply } => {
                self.bridge.stop_listen(id);
                debug!(%id, "listen tap stopped");
                let _ = reply.send(Ok(()));
            }
            ListenCommand::Pause { paused, reply } => {
                let _ = reply.send(self.app_listen_pause(paused));
            }
            ListenCommand::PlayStream {
                queue_frames,
                reply,
            } => {
                let _ = reply.send(self.app_play_stream(queue_frames));
            }
        }
    }

    fn app_listen_start(&mut self, queue_frames: usize) -> Result<AppListen, CommandError> {
        if !self.is_app() || self.core.phase() != Phase::Connected {
            return Err(self.wrong_state());
        }
        let dtmf = self.bridge.dtmf_events();
        let stream = self
            .bridge
            .start_listen(queue_frames)
            .map_err(|e| CommandError::Media(e.to_string()))?;
        info!(id = %stream.id, "listen tap started");
        Ok(AppListen { stream, dtmf })
    }

    fn app_listen_pause(&mut self, paused: bool) -> Result<(), CommandError> {
        let Some(id) = self.bridge.listening() else {
            return Err(CommandError::Invalid(
                "no listen stream is active on this call".into(),
            ));
        };
        self.bridge.pause_listen(id, paused);
        info!(%id, paused, "listen tap paused/resumed");
        Ok(())
    }

    fn app_play_stream(&mut self, queue_frames: usize) -> Result<AppStream, CommandError> {
        if !self.is_app() || self.core.phase() != Phase::Connected {
            return Err(self.wrong_state());
        }
        let (id, frames) = self.bridge.play_stream(Leg::A, queue_frames);
        let ended = self.bridge.playback_done(id);
        let (tx, done) = oneshot::channel();
        tokio::spawn(async move {
            let end = ended.await.unwrap_or(PlaybackEnd::BridgeStopped);
            let _ = tx.send(end);
        });
        debug!(%id, "streamed playback started");
        Ok(AppStream { frames, done })
    }
}
