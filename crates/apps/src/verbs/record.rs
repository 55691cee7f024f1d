//! `record`: records what the caller says (RCML `<Record>`; jambonz has no verb of this
//! shape, so it is not read from jambonz JSON).
//!
//! - A beep first (`play_beep`), then the call's recording runs until `finish_on_key` is
//!   pressed (the key is reported as `digits`), `max_length` passes, or the caller is silent
//!   for `timeout` (0: no silence limit). Silence is judged on the caller's audio, tapped
//!   while the recording runs.
//! - The action hook gets `recording_url` (the WAV, downloadable with the account's
//!   credentials), `recording_duration` (whole seconds) and `digits`; without a hook the
//!   application goes on.

use std::time::Duration;

use serde_json::{Map, Value};
use tokio::time::Instant;
use tracing::{debug, info};

use hookflash_media::audio::FRAME_SAMPLES;

use super::common::is_dtmf_key;
use crate::alert::AlertKind;
use crate::control::{ControlError, ListenFrame, StreamFrame, Tap};
use crate::error::AppError;
use crate::exec::{Exec, Flow};
use crate::hook::HookSpec;

#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub action_hook: Option<HookSpec>,
    /// Longest recording (seconds).
    pub max_length: f64,
    /// Keys that end the recording (empty: none).
    pub finish_on_key: String,
    pub play_beep: bool,
    /// Seconds of silence that end the recording (0: never).
    pub timeout: f64,
}

/// The beep before recording: 1 kHz for 0.3 s (what callers know from answering machines).
const BEEP_HZ: f64 = 1000.0;
const BEEP_FRAMES: usize = 15;
/// Mean absolute sample value above which a 20 ms frame of the caller counts as sound
/// (speech and tones are hundreds to thousands; line silence and comfort noise are far less).
const SOUND_LEVEL: u32 = 200;

impl Record {
    /// Checks the values a document gave (keys, seconds).
    pub fn check(&self) -> Result<(), String> {
        if let Some(bad) = self.finish_on_key.chars().find(|c| !is_dtmf_key(*c)) {
            return Err(format!("finishOnKey {bad:?} is not a DTMF key"));
        }
        for (name, v) in [("maxLength", self.max_length), ("timeout", self.timeout)] {
            if !v.is_finite() || !(0.0..=86_400.0).contains(&v) {
                return Err(format!("{name} {v} is not 0 to 86400 seconds"));
            }
        }
        if self.max_length < 1.0 {
            return Err("maxLength must be at least 1 second".into());
        }
        Ok(())
    }

    pub(crate) async fn exec(&self, x: &mut Exec) -> Result<Flow, AppError> {
        x.answer().await?;
        if self.play_beep {
            beep(x).await?;
        }
        x.drain_dtmf();
        let id = match x.ctl.record_start(&x.call).await {
            Ok(id) => id,
            Err(ControlError::Gone) => return Err(x.call_ended().await.into()),
            Err(e) => {
                x.alert(AlertKind::CallControl, format!("record: cannot start: {e}"));
                return Ok(Flow::Next);
            }
        };
        info!(recording = %id, "record: recording the caller");
        // The caller's audio, for the silence limit; without it only keys and maxLength end.
        let mut tap = match x.ctl.listen_start(&x.call).await {
            Ok(t) => Some(t),
            Err(e) => {
                x.alert(
                    AlertKind::CallControl,
                    format!("record: no silence detection: {e}"),
                );
                None
            }
        };
        let ended = self.wait(x, &mut tap).await;
        if let Some(t) = tap.take() {
            if let Err(e) = x.ctl.listen_stop(&x.call, t.id).await {
                debug!(error = %e, "record: stopping the tap");
            }
        }
        let done = x.ctl.record_stop(&x.call, &id).await;
        let digits = match ended {
            Ended::Key(k) => k.to_string(),
            Ended::MaxLength | Ended::Silence => String::new(),
        };
        let done = match done {
            Ok(d) => d,
            Err(ControlError::Gone) => return Err(x.call_ended().await.into()),
            Err(e) => {
                x.alert(AlertKind::CallControl, format!("record: cannot stop: {e}"));
                return Ok(Flow::Next);
            }
        };
        info!(recording = %done.id, duration_ms = done.duration_ms, ?ended, "record: done");
        let mut r = Map::new();
        if let Some(url) = x.recording_url(&done.id) {
            r.insert("recording_url".into(), Value::from(url));
        }
        r.insert(
            "recording_duration".into(),
            Value::from((done.duration_ms + 500) / 1000),
        );
        r.insert("digits".into(), Value::from(digits));
        x.action(self.action_hook.as_ref(), r, "action").await
    }

    /// Waits for what ends the recording.
    async fn wait(&self, x: &mut Exec, tap: &mut Option<Tap>) -> Ended {
        let started = Instant::now();
        let max_at = started + Duration::from_secs_f64(self.max_length);
        let silence = (self.timeout > 0.0).then(|| Duration::from_secs_f64(self.timeout));
        let mut last_sound = started;
        loop {
            let silence_at = silence.map(|s| last_sound + s);
            tokio::select! {
                key = x.dtmf.recv() => match key {
                    Some(k) if self.finish_on_key.contains(k) => return Ended::Key(k),
                    Some(_) => {}
                    // The run holds the sender while verbs execute.
                    None => std::future::pending::<()>().await,
                },
                frame = next_frame(tap) => match frame {
                    Some(f) => {
                        if is_sound(&f) {
                            last_sound = Instant::now();
                        }
                    }
                    // The tap ended (replaced, or the call's media stopped).
                    None => *tap = None,
                },
                _ = tokio::time::sleep_until(max_at) => return Ended::MaxLength,
                _ = sleep_until(silence_at), if tap.is_some() => return Ended::Silence,
            }
        }
    }
}

/// Why the recording ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    Key(char),
    MaxLength,
    Silence,
}

async fn next_frame(tap: &mut Option<Tap>) -> Option<ListenFrame> {
    match tap {
        Some(t) => t.frames.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// True when the caller's side of the frame has sound in it.
fn is_sound(f: &ListenFrame) -> bool {
    let sum: u32 = f.a.iter().map(|s| s.unsigned_abs() as u32).sum();
    sum / f.a.len().max(1) as u32 > SOUND_LEVEL
}

/// 20 ms frames of the beep.
fn beep_frames() -> Vec<StreamFrame> {
    let mut n = 0usize;
    (0..BEEP_FRAMES)
        .map(|_| {
            let mut f: StreamFrame = [0; FRAME_SAMPLES];
            for s in f.iter_mut() {
                let t = n as f64 / 8000.0;
                *s = (0.3 * i16::MAX as f64 * (2.0 * std::f64::consts::PI * BEEP_HZ * t).sin())
                    as i16;
                n += 1;
            }
            f
        })
        .collect()
}

/// Plays the beep and waits for its end (a failure is reported; the recording goes on).
async fn beep(x: &mut Exec) -> Result<(), AppError> {
    let stream = match x.ctl.play_stream(&x.call).await {
        Ok(s) => s,
        Err(ControlError::Gone) => return Err(x.call_ended().await.into()),
        Err(e) => {
            x.alert(AlertKind::PlayFailed, format!("record: no beep: {e}"));
            return Ok(());
        }
    };
    for f in beep_frames() {
        if stream.frames.send(f).await.is_err() {
            break;
        }
    }
    drop(stream.frames);
    let _ = stream.done.await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            action_hook: None,
            max_length: 3600.0,
            finish_on_key: "1234567890*#".into(),
            play_beep: true,
            timeout: 5.0,
        }
    }

    #[test]
    fn checks_keys_and_seconds() {
        assert!(record().check().is_ok());
        for bad in [
            Record {
                finish_on_key: "#x".into(),
                ..record()
            },
            Record {
                max_length: 0.0,
                ..record()
            },
            Record {
                timeout: -1.0,
                ..record()
            },
            Record {
                max_length: f64::NAN,
                ..record()
            },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sound_and_silence() {
        let silent = ListenFrame::default();
        assert!(!is_sound(&silent));
        let mut loud = ListenFrame::default();
        for (i, s) in loud.a.iter_mut().enumerate() {
            *s = if i % 2 == 0 { 3000 } else { -3000 };
        }
        assert!(is_sound(&loud));
        // The other side's audio does not count.
        let other = ListenFrame {
            b: loud.a,
            ..Default::default()
        };
        assert!(!is_sound(&other));
        let beep = beep_frames();
        assert_eq!(beep.len(), BEEP_FRAMES);
        assert!(beep.iter().all(|f| {
            is_sound(&ListenFrame {
                a: *f,
                b: [0; FRAME_SAMPLES],
            })
        }));
    }
}
