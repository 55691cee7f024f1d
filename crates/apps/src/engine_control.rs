//! [`CallControl`] on the real engine: each operation is an engine command on the call's
//! actor; signals come from the engine's event bus, filtered to the call.

use async_trait::async_trait;
use hookflash_engine::control::{AudioSource, CommandError};
use hookflash_engine::events::EventKind;
use hookflash_engine::RecordAction;
use hookflash_engine::{apps::PlaybackEnd, Engine};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use hookflash_media::relay::Leg;

use crate::control::{
    Audio, CallControl, CallRef, CallSignal, ConferenceJoin, ConferenceJoined, ConferenceNote,
    ConferenceNoteKind, ControlError, DequeuedCall, DialProgress, DialRequest, DialStarted,
    PartyDtmf, PlayEnd, Queued, RecordingDone, ReferProgress, StreamPlayback, Tap, TapDtmf,
};
use hookflash_engine::queues::QueueError;
use hookflash_engine::{ConferenceEvent, ConferenceEventKind, JoinOptions};

/// Conference events waiting for the `conference` verb before more are dropped.
const CONFERENCE_NOTES: usize = 32;

fn conference_note(e: ConferenceEvent) -> ConferenceNote {
    let kind = match e.kind {
        ConferenceEventKind::Started => ConferenceNoteKind::Start,
        ConferenceEventKind::Ended => ConferenceNoteKind::End,
        ConferenceEventKind::ParticipantJoined => ConferenceNoteKind::Join,
        ConferenceEventKind::ParticipantLeft => ConferenceNoteKind::Leave,
    };
    ConferenceNote {
        kind,
        leg_id: e.participant.and_then(|p| p.leg_id),
        members: e.participants,
        at_ms: e.at_ms,
        started_at_ms: e.started_at_ms,
    }
}

/// A conference join finding the leg still in its previous conference (just left, released
/// asynchronously) is retried this often, this far apart (at most 0.5 s in all).
const JOIN_RETRIES: u32 = 25;
const JOIN_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(20);

/// Signals buffered per application run before the runtime reads them.
const SIGNAL_QUEUE: usize = 64;

/// Tapped frames waiting for a `listen` socket before new ones are dropped (1 s).
const LISTEN_QUEUE_FRAMES: usize = hookflash_media::listen::LISTEN_QUEUE_FRAMES;

/// Frames queued for a streamed playback before the socket reader waits (0.2 s: audio sent
/// back is played with little delay, and a socket that sends faster than real time is
/// slowed down by TCP back-pressure).
const PLAY_STREAM_FRAMES: usize = 10;

#[derive(Clone)]
pub struct EngineControl {
    engine: Engine,
}

impl EngineControl {
    pub fn new(engine: Engine) -> Self {
        EngineControl { engine }
    }
}

fn control_error(e: CommandError) -> ControlError {
    match e {
        CommandError::NotFound => ControlError::Gone,
        CommandError::WrongState { state } => ControlError::WrongState(state.as_str().to_string()),
        CommandError::Media(why) => ControlError::Audio(why),
        other => ControlError::Failed(other.to_string()),
    }
}

fn queue_error(e: QueueError) -> ControlError {
    match e {
        QueueError::Gone => ControlError::Gone,
        QueueError::BadName | QueueError::AlreadyQueued(_) => ControlError::Failed(e.to_string()),
        QueueError::Full(why) => ControlError::Failed(format!("queue full: {why}")),
    }
}

fn play_end(end: PlaybackEnd) -> PlayEnd {
    match end {
        PlaybackEnd::Finished => PlayEnd::Finished,
        PlaybackEnd::Stopped | PlaybackEnd::Replaced => PlayEnd::Stopped,
        PlaybackEnd::BridgeStopped => PlayEnd::CallEnded,
    }
}

#[async_trait]
impl CallControl for EngineControl {
    async fn answer(&self, call: &CallRef) -> Result<(), ControlError> {
        self.engine
            .app_answer(&call.account_id, &call.call_id, false)
            .await
            .map_err(control_error)
    }

    async fn decline(
        &self,
        call: &CallRef,
        status: u16,
        _reason: Option<String>,
        _headers: Vec<(String, String)>,
    ) -> Result<(), ControlError> {
        self.engine
            .app_decline(&call.account_id, &call.call_id, status)
            .await
            .map_err(control_error)
    }

    async fn play(
        &self,
        call: &CallRef,
        audio: Audio,
        early_media: bool,
    ) -> Result<oneshot::Receiver<PlayEnd>, ControlError> {
        let source = match audio {
            Audio::Url(url) => AudioSource::Url(url),
            Audio::Tts { text, voice, .. } => AudioSource::Tts { text, voice },
        };
        let done = self
            .engine
            .app_play(&call.account_id, &call.call_id, &source, early_media)
            .await
            .map_err(control_error)?;
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            let end = done.await.map(play_end).unwrap_or(PlayEnd::CallEnded);
            let _ = tx.send(end);
        });
        Ok(rx)
    }

    async fn stop_play(&self, call: &CallRef) -> Result<(), ControlError> {
        self.engine
            .app_stop_play(&call.account_id, &call.call_id)
            .await
            .map_err(control_error)
    }

    async fn send_dtmf(&self, call: &CallRef, digits: &str) -> Result<(), ControlError> {
        self.engine
            .send_dtmf(&call.account_id, &call.call_id, &call.leg_id, digits)
            .await
            .map_err(control_error)
    }

    async fn refer(
        &self,
        call: &CallRef,
        target: &str,
        referred_by: Option<&str>,
        headers: Vec<(String, String)>,
    ) -> Result<mpsc::Receiver<ReferProgress>, ControlError> {
        use hookflash_engine::apps_refer::{ReferEvent, REFER_EVENTS};
        let (events, mut from_engine) = mpsc::channel(REFER_EVENTS);
        self.engine
            .app_refer(
                &call.account_id,
                &call.call_id,
                target,
                referred_by,
                headers,
                events,
            )
            .await
            .map_err(control_error)?;
        let (tx, rx) = mpsc::channel(REFER_EVENTS);
        tokio::spawn(async move {
            while let Some(event) = from_engine.recv().await {
                let progress = match event {
                    ReferEvent::Answered { status } => ReferProgress::Answered { status },
                    ReferEvent::Notify { status, last } => ReferProgress::Notify { status, last },
                };
                if tx.send(progress).await.is_err() {
                    return;
                }
            }
        });
        Ok(rx)
    }

    async fn refer_done(&self, call: &CallRef) -> Result<(), ControlError> {
        self.engine
            .app_refer_done(&call.account_id, &call.call_id)
            .await
            .map_err(control_error)
    }

    async fn hangup(
        &self,
        call: &CallRef,
        headers: Vec<(String, String)>,
    ) -> Result<(), ControlError> {
        // An application on the call's second leg (both legs moved to new RCML, api19
        // MoveConnectedCallLeg) hangs up that leg: the dialled party of an application's call
        // leaves alone (the caller stays with its application), and once it has left there
        // is nothing left to end.
        if let Ok(info) = self.engine.call(&call.account_id, &call.call_id) {
            let second = info.legs.iter().skip(1).find(|l| l.id == call.leg_id);
            if let Some(leg) = second {
                if leg.state == hookflash_engine::LegState::Disconnected {
                    return Ok(());
                }
                return self
                    .engine
                    .hangup(&call.account_id, &call.call_id, Some(&call.leg_id))
                    .await
                    .map_err(control_error);
            }
        }
        if headers.is_empty() {
            return self
                .engine
                .hangup(&call.account_id, &call.call_id, None)
                .await
                .map_err(control_error);
        }
        match self
            .engine
            .app_hangup(&call.account_id, &call.call_id, headers)
            .await
        {
            // Headers we will not write: the call still ends, without them.
            Err(CommandError::Invalid(why)) => {
                warn!(call_id = %call.call_id, %why, "hangup headers dropped");
                self.engine
                    .hangup(&call.account_id, &call.call_id, None)
                    .await
                    .map_err(control_error)
            }
            other => other.map_err(control_error),
        }
    }

    async fn dial(
        &self,
        call: &CallRef,
        target: &str,
        caller_id: Option<String>,
        timeout: std::time::Duration,
    ) -> Result<mpsc::Receiver<DialProgress>, ControlError> {
        let (events_tx, events) = mpsc::channel(hookflash_engine::apps::DIAL_TARGETS_MAX + 4);
        self.engine
            .app_dial(
                &call.account_id,
                &call.call_id,
                target,
                caller_id,
                timeout,
                events_tx,
            )
            .await
            .map_err(control_error)?;
        Ok(dial_progress(events))
    }

    async fn dial_many(
        &self,
        call: &CallRef,
        req: DialRequest,
    ) -> Result<DialStarted, ControlError> {
        // Room for every party's ringing report and the outcome.
        let (events_tx, events) = mpsc::channel(hookflash_engine::apps::DIAL_TARGETS_MAX + 4);
        let request = hookflash_engine::apps::AppDialRequest {
            targets: req.targets,
            caller_id: req.caller_id,
            timeout: req.timeout,
            headers: req.headers,
            answer_on_bridge: req.answer_on_bridge,
        };
        let placed = self
            .engine
            .app_dial_targets(&call.account_id, &call.call_id, request, events_tx)
            .await
            .map_err(|e| match e {
                CommandError::Invalid(why) | CommandError::BadTarget(why) => {
                    ControlError::Failed(why)
                }
                other => control_error(other),
            })?;
        Ok(DialStarted {
            progress: dial_progress(events),
            children: placed
                .children
                .into_iter()
                .map(|c| (c.leg_id, c.target))
                .collect(),
            skipped: placed
                .skipped
                .into_iter()
                .map(|(t, e)| (t, e.to_string()))
                .collect(),
        })
    }

    fn call_dtmf(&self, call: &CallRef) -> mpsc::Receiver<PartyDtmf> {
        let (tx, rx) = mpsc::channel(SIGNAL_QUEUE);
        let mut live = self.engine.events().watch_call(&call.call_id);
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    _ = tx.closed() => return,
                    e = live.recv() => e,
                };
                let Some(event) = event else { return };
                match event.kind {
                    EventKind::Dtmf => {
                        let digit = event.digit.as_deref().and_then(|d| d.chars().next());
                        let (Some(digit), Some(leg_id)) = (digit, event.leg_id) else {
                            continue;
                        };
                        if tx.send(PartyDtmf { leg_id, digit }).await.is_err() {
                            return;
                        }
                    }
                    EventKind::Ended => return,
                    _ => {}
                }
            }
        });
        rx
    }

    async fn hangup_dialled(&self, call: &CallRef) -> Result<(), ControlError> {
        self.engine
            .app_hangup_dialled(&call.account_id, &call.call_id)
            .await
            .map_err(control_error)
    }

    async fn listen_start(&self, call: &CallRef) -> Result<Tap, ControlError> {
        let tap = self
            .engine
            .app_listen_start(&call.account_id, &call.call_id, LISTEN_QUEUE_FRAMES)
            .await
            .map_err(control_error)?;
        let id = tap.stream.id.number();
        let mut presses = tap.dtmf;
        let (dtmf_tx, dtmf) = mpsc::channel(SIGNAL_QUEUE);
        let call_id = call.call_id.clone();
        tokio::spawn(async move {
            loop {
                let ev = tokio::select! {
                    _ = dtmf_tx.closed() => return,
                    e = presses.recv() => e,
                };
                match ev {
                    // The application's caller is leg A.
                    Ok(ev) if ev.leg == Leg::A => {
                        let press = TapDtmf {
                            digit: ev.digit,
                            duration_ms: ev.duration_ms,
                        };
                        if dtmf_tx.send(press).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(n)) => {
                        warn!(%call_id, missed = n, "listen DTMF lagged");
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        });
        Ok(Tap {
            id,
            frames: tap.stream.frames,
            dtmf,
        })
    }

    fn connect_allowed(&self, addr: std::net::SocketAddr) -> Result<(), String> {
        self.engine
            .media_connect_allowed(addr)
            .map_err(str::to_string)
    }

    async fn listen_stop(&self, call: &CallRef, id: u64) -> Result<(), ControlError> {
        let id = hookflash_media::listen::ListenId::from_number(id);
        match self
            .engine
            .app_listen_stop(&call.account_id, &call.call_id, id)
            .await
        {
            // The call is gone: so is its tap.
            Ok(()) | Err(CommandError::NotFound) => Ok(()),
            Err(e) => Err(control_error(e)),
        }
    }

    async fn play_stream(&self, call: &CallRef) -> Result<StreamPlayback, ControlError> {
        let s = self
            .engine
            .app_play_stream(&call.account_id, &call.call_id, PLAY_STREAM_FRAMES)
            .await
            .map_err(control_error)?;
        let (tx, done) = oneshot::channel();
        let ended = s.done;
        tokio::spawn(async move {
            let end = ended.await.map(play_end).unwrap_or(PlayEnd::CallEnded);
            let _ = tx.send(end);
        });
        Ok(StreamPlayback {
            frames: s.frames,
            done,
        })
    }

    async fn record_start(&self, call: &CallRef) -> Result<String, ControlError> {
        self.engine
            .record(
                &call.account_id,
                &call.call_id,
                RecordAction::Start {
                    announcement: false,
                },
            )
            .await
            .map_err(control_error)?;
        // One recording runs per call: the newest of the call is the one just started.
        let rows = self
            .engine
            .store()
            .recordings(&call.account_id, Some(&call.call_id), 1)
            .await
            .map_err(|e| ControlError::Failed(format!("cannot read the recording: {e}")))?;
        rows.into_iter()
            .find(|r| r.state == "recording")
            .map(|r| r.id)
            .ok_or_else(|| ControlError::Failed("the recording started but is not listed".into()))
    }

    async fn record_stop(&self, call: &CallRef, id: &str) -> Result<RecordingDone, ControlError> {
        match self
            .engine
            .record(&call.account_id, &call.call_id, RecordAction::Stop)
            .await
        {
            // Stopped already (the call ended, which ends its recording): the file is done.
            Ok(_) | Err(CommandError::NotFound) | Err(CommandError::WrongState { .. }) => {}
            Err(e) => return Err(control_error(e)),
        }
        let row = self
            .engine
            .store()
            .recording(&call.account_id, id)
            .await
            .map_err(|e| ControlError::Failed(format!("cannot read the recording: {e}")))?
            .ok_or_else(|| ControlError::Failed(format!("recording {id} is gone")))?;
        Ok(RecordingDone {
            id: row.id,
            duration_ms: row.duration_ms.unwrap_or(0).max(0) as u64,
        })
    }

    async fn conference_join(
        &self,
        call: &CallRef,
        join: ConferenceJoin,
    ) -> Result<ConferenceJoined, ControlError> {
        let opts = JoinOptions {
            muted: join.muted,
            beep: join.beep,
            end_on_exit: join.end_on_exit,
            start_on_enter: join.start_on_enter,
            max_participants: join.max_participants,
        };
        // A leg whose application was just redirected out of a conference verb is released
        // by its conference asynchronously (the call hears of it when the conference audio
        // towards the leg has ended): a join in that window is retried for a short, bounded
        // time before "in a conference" is the answer.
        let mut tries = 0;
        let m = loop {
            let r = self
                .engine
                .conference_join_call(
                    &call.account_id,
                    &join.name,
                    &call.call_id,
                    Some(&call.leg_id),
                    opts.clone(),
                )
                .await;
            match r {
                Err(CommandError::WrongState {
                    state: hookflash_engine::WrongState::InConference,
                }) if tries < JOIN_RETRIES => {
                    tries += 1;
                    tokio::time::sleep(JOIN_RETRY_PAUSE).await;
                }
                other => break other.map_err(control_error)?,
            }
        };
        if join.record {
            // RCML record="record-from-start": the mix is recorded (once per conference).
            match self
                .engine
                .conference_record(&call.account_id, &join.name, true)
                .await
            {
                Ok(r) => {
                    info!(conference = %join.name, recording = %r.id, "conference recording started on join")
                }
                Err(hookflash_engine::CommandError::WrongState { .. }) => {
                    debug!(conference = %join.name, "the conference is being recorded already")
                }
                Err(e) => {
                    warn!(conference = %join.name, error = %e, "cannot record the conference")
                }
            }
        }
        let mut events = m.events;
        let (tx, notes) = mpsc::channel(CONFERENCE_NOTES);
        tokio::spawn(async move {
            while let Some(e) = events.recv().await {
                if tx.send(conference_note(e)).await.is_err() {
                    return;
                }
            }
        });
        Ok(ConferenceJoined { notes })
    }

    async fn conference_leave(&self, call: &CallRef) -> Result<(), ControlError> {
        self.engine
            .conference_leave_call(&call.account_id, &call.call_id, Some(&call.leg_id))
            .await
            .map_err(control_error)
    }

    async fn queue_enqueue(
        &self,
        call: &CallRef,
        name: &str,
        priority: u16,
    ) -> Result<Queued, ControlError> {
        let t = self
            .engine
            .queue_enqueue(
                &call.account_id,
                name,
                &call.call_id,
                &call.leg_id,
                priority,
            )
            .map_err(queue_error)?;
        Ok(Queued {
            offers: t.offers,
            queue_sid: t.queue_sid,
            position: t.position,
            size: t.size,
        })
    }

    fn queue_position(&self, call: &CallRef, name: &str) -> Option<(usize, usize)> {
        self.engine
            .queue_position(&call.account_id, name, &call.leg_id)
    }

    fn is_gone(&self, call: &CallRef) -> bool {
        self.engine.call(&call.account_id, &call.call_id).is_err()
    }

    fn queue_size(&self, call: &CallRef, name: &str) -> usize {
        self.engine.queue_size(&call.account_id, name)
    }

    fn queue_leave(&self, call: &CallRef) -> bool {
        self.engine
            .queue_leave(&call.account_id, &call.call_id, &call.leg_id)
    }

    async fn queue_dequeue(
        &self,
        call: &CallRef,
        name: &str,
        call_sid: Option<&str>,
        timeout: Option<std::time::Duration>,
        bridge: &str,
        by_call_sid: &str,
    ) -> Result<Option<DequeuedCall>, ControlError> {
        let d = self
            .engine
            .queue_dequeue(
                &call.account_id,
                name,
                call_sid,
                timeout,
                bridge,
                by_call_sid,
            )
            .await
            .map_err(queue_error)?;
        Ok(d.map(|d| DequeuedCall {
            call_sid: d.leg_id,
            waited: d.waited,
            remaining: d.remaining,
        }))
    }

    async fn play_music(&self, call: &CallRef) -> Result<oneshot::Receiver<PlayEnd>, ControlError> {
        let done = self
            .engine
            .app_play_music(&call.account_id, &call.call_id)
            .await
            .map_err(control_error)?;
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            let end = done.await.map(play_end).unwrap_or(PlayEnd::CallEnded);
            let _ = tx.send(end);
        });
        Ok(rx)
    }

    fn signals(&self, call: &CallRef) -> mpsc::Receiver<CallSignal> {
        let (tx, rx) = mpsc::channel(SIGNAL_QUEUE);
        let mut live = self.engine.events().watch_call(&call.call_id);
        let engine = self.engine.clone();
        let call = call.clone();
        tokio::spawn(async move {
            // The call may have ended before we subscribed.
            if engine.call(&call.account_id, &call.call_id).is_err() {
                let _ = tx
                    .send(CallSignal::Ended {
                        sip_status: 487,
                        cause: "normal".into(),
                    })
                    .await;
                return;
            }
            loop {
                let event = tokio::select! {
                    _ = tx.closed() => return,
                    e = live.recv() => e,
                };
                // The bus drops the watcher after the call's end.
                let Some(event) = event else { return };
                match event.kind {
                    EventKind::Dtmf if event.leg_id.as_deref() == Some(call.leg_id.as_str()) => {
                        let Some(digit) = event.digit.as_deref().and_then(|d| d.chars().next())
                        else {
                            continue;
                        };
                        if tx.send(CallSignal::Dtmf(digit)).await.is_err() {
                            return;
                        }
                    }
                    EventKind::Ended => {
                        let cause = event.cause.map(|c| c.as_str()).unwrap_or("normal");
                        let sip_status = if event.call.answered_at_ms.is_some() {
                            200
                        } else {
                            487
                        };
                        let _ = tx
                            .send(CallSignal::Ended {
                                sip_status,
                                cause: cause.to_string(),
                            })
                            .await;
                        return;
                    }
                    _ => {}
                }
            }
        });
        rx
    }
}

/// The engine's dial events as the runtime's progress.
fn dial_progress(
    mut events: mpsc::Receiver<hookflash_engine::apps::DialEvent>,
) -> mpsc::Receiver<DialProgress> {
    use hookflash_engine::apps::DialEvent;
    let (tx, rx) = mpsc::channel(hookflash_engine::apps::DIAL_TARGETS_MAX + 4);
    tokio::spawn(async move {
        while let Some(e) = events.recv().await {
            let p = match e {
                DialEvent::Ringing { leg_id } => DialProgress::Ringing { leg_id },
                DialEvent::Answered { leg_id } => DialProgress::Answered { leg_id },
                DialEvent::Failed { status } => DialProgress::Failed { status },
                DialEvent::Completed { duration_secs } => DialProgress::Completed { duration_secs },
            };
            if tx.send(p).await.is_err() {
                return;
            }
        }
    });
    rx
}
