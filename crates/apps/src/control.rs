//! What the runtime needs of a call, as a trait: the engine implements it
//! (`engine_control.rs`), and the runtime's unit tests drive the verbs with a scripted call on
//! a paused clock. Everything here acts on one leg that the application owns.

use async_trait::async_trait;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

/// The leg an application runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRef {
    pub account_id: String,
    /// The engine's call id (the call the leg belongs to).
    pub call_id: String,
    /// The application's leg within it.
    pub leg_id: String,
}

/// Audio to play.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audio {
    /// A WAV at this URL (fetched under the server's fetch policy, cached).
    Url(String),
    /// Text-to-speech.
    Tts {
        text: String,
        voice: Option<String>,
        language: Option<String>,
    },
}

/// How a playback ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlayEnd {
    /// It played to its end.
    Finished,
    /// [`CallControl::stop_play`] (or a newer play) cut it short.
    Stopped,
    /// The call ended while it played.
    CallEnded,
}

/// What happens on the call, in order, for the runtime to react to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallSignal {
    /// The caller pressed a key (RFC 4733 or SIP INFO), once per press.
    Dtmf(char),
    /// The call (or the application's leg) ended.
    Ended {
        /// SIP status of the end where one applies (487 caller cancelled, 200 normal).
        sip_status: u16,
        /// The engine's end cause in its wire word (`normal`, `cancel`, ...).
        cause: String,
    },
}

/// What happens to a REFER of the application's caller (the `sip:refer` verb).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReferProgress {
    /// The caller's final response to the REFER (202: it will call the target).
    Answered { status: u16 },
    /// A NOTIFY of the caller's call to the target (its status); `last` for the final one.
    Notify { status: u16, last: bool },
}

/// What happens to a party the application dials (the `dial` verb).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DialProgress {
    /// A dialled party rings (once per party); its (child) leg id.
    Ringing { leg_id: String },
    /// Answered and connected with the application's caller; the dialled leg's id.
    Answered { leg_id: String },
    /// Not reached (final SIP status): the caller is back with the application.
    Failed { status: u16 },
    /// It answered and has left: the caller is back with the application.
    Completed { duration_secs: u64 },
}

pub use hookflash_media::listen::{ListenFrame, StreamFrame};

/// What a `dial` asks for: targets rung at once (the first to answer is connected, the
/// others get CANCEL), the caller id they see, how long they ring, extra INVITE headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialRequest {
    pub targets: Vec<String>,
    pub caller_id: Option<String>,
    pub timeout: std::time::Duration,
    pub headers: Vec<(String, String)>,
    /// jambonz `answerOnBridge`: an unanswered caller is answered only when a target answers.
    pub answer_on_bridge: bool,
}

/// A dial under way: its progress, the parties rung as (child leg id, target), and the
/// targets left out (cannot be reached) with why.
#[derive(Debug)]
pub struct DialStarted {
    pub progress: mpsc::Receiver<DialProgress>,
    pub children: Vec<(String, String)>,
    pub skipped: Vec<(String, String)>,
}

/// A key pressed by any party of the call (the leg that pressed it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartyDtmf {
    pub leg_id: String,
    pub digit: char,
}

/// A key press seen on the call's media while a tap runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TapDtmf {
    pub digit: char,
    pub duration_ms: u32,
}

/// A running audio tap of the call (the `listen` verb).
#[derive(Debug)]
pub struct Tap {
    /// Identifies the tap for [`CallControl::listen_stop`].
    pub id: u64,
    /// 20 ms frames of both sides' audio (8 kHz) until the tap stops.
    pub frames: mpsc::Receiver<ListenFrame>,
    /// The caller's key presses, with their durations.
    pub dtmf: mpsc::Receiver<TapDtmf>,
}

/// A streamed playback to the caller: frames sent are played every 20 ms (silence while none
/// are queued); dropping the sender ends it.
#[derive(Debug)]
pub struct StreamPlayback {
    pub frames: mpsc::Sender<StreamFrame>,
    pub done: oneshot::Receiver<PlayEnd>,
}

/// A recording of the call that has stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingDone {
    /// The recording's id (its audio is served by the APIs under it).
    pub id: String,
    /// Length of the audio written.
    pub duration_ms: u64,
}

/// How the application's leg joins a conference (the `conference` verb's options).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConferenceJoin {
    pub name: String,
    pub muted: bool,
    pub beep: bool,
    pub end_on_exit: bool,
    pub start_on_enter: bool,
    pub max_participants: Option<usize>,
    /// Record the conference's mix from this join on (started unless it runs already).
    pub record: bool,
}

/// What happened in the conference, as the leg's status hook reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConferenceNoteKind {
    /// The conference started (the first participant joined).
    Start,
    /// The conference ended.
    End,
    /// A participant joined.
    Join,
    /// A participant left.
    Leave,
}

/// One conference event seen by the application's leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConferenceNote {
    pub kind: ConferenceNoteKind,
    /// For joins and leaves: the leg the participant is (None: a phone the conference
    /// dialled).
    pub leg_id: Option<String>,
    /// Participants after the event.
    pub members: usize,
    /// When it happened and when the conference started (ms since the epoch).
    pub at_ms: i64,
    pub started_at_ms: i64,
}

/// The application's leg is in a conference: its events until it leaves (the channel
/// closes after its own leave or the conference's end).
#[derive(Debug)]
pub struct ConferenceJoined {
    pub notes: mpsc::Receiver<ConferenceNote>,
}

pub use hookflash_engine::queues::QueueOffer;

/// The application's leg waits in a queue (`enqueue`): an offer to connect arrives on
/// `offers`; dropping it leaves the queue.
#[derive(Debug)]
pub struct Queued {
    pub offers: oneshot::Receiver<QueueOffer>,
    pub queue_sid: String,
    /// 1-based place and the queue's size when it joined.
    pub position: usize,
    pub size: usize,
}

/// A queued caller taken by the `dequeue` verb (it has joined the bridge offered).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DequeuedCall {
    pub call_sid: String,
    pub waited: std::time::Duration,
    /// Callers left in the queue.
    pub remaining: usize,
}

/// Why an operation on the call failed.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum ControlError {
    #[error("the call is gone")]
    Gone,
    #[error("not possible in the call's state: {0}")]
    WrongState(String),
    #[error("audio not usable: {0}")]
    Audio(String),
    #[error("{0}")]
    Failed(String),
}

/// The operations a verb can use.
#[async_trait]
pub trait CallControl: Send + Sync + 'static {
    /// Answers the leg (200 OK with our SDP). Answering an answered leg is Ok.
    async fn answer(&self, call: &CallRef) -> Result<(), ControlError>;
    /// Rejects a leg that has not been answered with `status` (4xx-6xx), optional reason
    /// phrase and extra headers.
    async fn decline(
        &self,
        call: &CallRef,
        status: u16,
        reason: Option<String>,
        headers: Vec<(String, String)>,
    ) -> Result<(), ControlError>;
    /// Starts playing to the leg (answering it first unless `early_media`, which sends 183
    /// with SDP instead); the receiver resolves when the playback ends. A URL that cannot be
    /// fetched or TTS that fails is an error before anything plays.
    async fn play(
        &self,
        call: &CallRef,
        audio: Audio,
        early_media: bool,
    ) -> Result<oneshot::Receiver<PlayEnd>, ControlError>;
    /// Stops what plays to the leg now (nothing playing: Ok).
    async fn stop_play(&self, call: &CallRef) -> Result<(), ControlError>;
    /// Sends RFC 4733 digits to the leg's phone.
    async fn send_dtmf(&self, call: &CallRef, digits: &str) -> Result<(), ControlError>;
    /// REFERs the answered leg's phone to `target` (a SIP URI, number or extension),
    /// `Referred-By` `referred_by`, with extra headers (`sip:refer`). The REFER's answer and
    /// the NOTIFYs of the phone's call to the target on the receiver (closed: the call ended).
    async fn refer(
        &self,
        _call: &CallRef,
        _target: &str,
        _referred_by: Option<&str>,
        _headers: Vec<(String, String)>,
    ) -> Result<mpsc::Receiver<ReferProgress>, ControlError> {
        Err(ControlError::Failed("refer is not available".into()))
    }
    /// The verb no longer follows its REFER.
    async fn refer_done(&self, _call: &CallRef) -> Result<(), ControlError> {
        Ok(())
    }
    /// Ends the leg (BYE, or a final response if not answered) with extra headers.
    async fn hangup(
        &self,
        call: &CallRef,
        headers: Vec<(String, String)>,
    ) -> Result<(), ControlError>;
    /// Dials `target` (extension, number, `sip:` URI) into the answered leg's call, connecting
    /// it with the caller when it answers; `caller_id` is what the target sees (one of the
    /// account's numbers or extensions). Progress on the receiver (closed: the call ended).
    async fn dial(
        &self,
        _call: &CallRef,
        _target: &str,
        _caller_id: Option<String>,
        _timeout: std::time::Duration,
    ) -> Result<mpsc::Receiver<DialProgress>, ControlError> {
        Err(ControlError::Failed("dial is not available".into()))
    }
    /// [`CallControl::dial`] for several targets with headers. Default: the first target
    /// only, without headers (the others are reported as skipped).
    async fn dial_many(
        &self,
        call: &CallRef,
        req: DialRequest,
    ) -> Result<DialStarted, ControlError> {
        let Some(first) = req.targets.first() else {
            return Err(ControlError::Failed("no target".into()));
        };
        let progress = self
            .dial(call, first, req.caller_id.clone(), req.timeout)
            .await?;
        let skipped = req.targets[1..]
            .iter()
            .map(|t| (t.clone(), "only one target is dialled here".to_string()))
            .collect();
        Ok(DialStarted {
            progress,
            children: Vec::new(),
            skipped,
        })
    }
    /// Every key pressed on the call from now on, by any party (closed: the call ended).
    fn call_dtmf(&self, _call: &CallRef) -> mpsc::Receiver<PartyDtmf> {
        mpsc::channel(1).1
    }
    /// Hangs up (or stops ringing) the party the application dialled; the caller stays.
    async fn hangup_dialled(&self, _call: &CallRef) -> Result<(), ControlError> {
        Ok(())
    }
    /// Starts tapping the answered call's audio (`listen`); a slow consumer loses frames.
    async fn listen_start(&self, _call: &CallRef) -> Result<Tap, ControlError> {
        Err(ControlError::Failed("listen is not available".into()))
    }
    /// May the application's WebSocket connect to `addr` (the server's outbound policy)?
    fn connect_allowed(&self, _addr: std::net::SocketAddr) -> Result<(), String> {
        Ok(())
    }
    /// Ends the tap `id`.
    async fn listen_stop(&self, _call: &CallRef, _id: u64) -> Result<(), ControlError> {
        Ok(())
    }
    /// Starts a streamed playback to the answered caller (replacing what plays).
    async fn play_stream(&self, _call: &CallRef) -> Result<StreamPlayback, ControlError> {
        Err(ControlError::Failed(
            "streamed playback is not available".into(),
        ))
    }
    /// Starts recording the answered call (the caller's audio, and the dialled party's when
    /// one is connected); the recording's id.
    async fn record_start(&self, _call: &CallRef) -> Result<String, ControlError> {
        Err(ControlError::Failed("recording is not available".into()))
    }
    /// Stops the call's running recording `id`; its file is complete.
    async fn record_stop(&self, _call: &CallRef, _id: &str) -> Result<RecordingDone, ControlError> {
        Err(ControlError::Failed("recording is not available".into()))
    }
    /// Brings the answered leg into a named conference (`conference` verb).
    async fn conference_join(
        &self,
        _call: &CallRef,
        _join: ConferenceJoin,
    ) -> Result<ConferenceJoined, ControlError> {
        Err(ControlError::Failed("conferences are not available".into()))
    }
    /// Takes the leg out of its conference (`leave` verb); `WrongState` when it is in none.
    async fn conference_leave(&self, _call: &CallRef) -> Result<(), ControlError> {
        Err(ControlError::WrongState("not in a conference".into()))
    }
    /// Puts the answered leg into queue `name` of its account (made on first use; bounded:
    /// `Full` beyond the limits).
    async fn queue_enqueue(
        &self,
        _call: &CallRef,
        _name: &str,
        _priority: u16,
    ) -> Result<Queued, ControlError> {
        Err(ControlError::Failed("queues are not available".into()))
    }
    /// The leg's 1-based place in queue `name` and the queue's size (None: not in it).
    fn queue_position(&self, _call: &CallRef, _name: &str) -> Option<(usize, usize)> {
        None
    }
    /// Callers waiting in queue `name` of the leg's account.
    fn queue_size(&self, _call: &CallRef, _name: &str) -> usize {
        0
    }
    /// Takes the leg out of its queue (true if it was in one).
    fn queue_leave(&self, _call: &CallRef) -> bool {
        false
    }
    /// Takes a caller from queue `name` (the first, or the one whose call_sid is
    /// `call_sid`), waiting up to `timeout` (None: forever) for one, and has it join
    /// conference `bridge`. None: nobody came in time.
    async fn queue_dequeue(
        &self,
        _call: &CallRef,
        _name: &str,
        _call_sid: Option<&str>,
        _timeout: Option<std::time::Duration>,
        _bridge: &str,
        _by_call_sid: &str,
    ) -> Result<Option<DequeuedCall>, ControlError> {
        Err(ControlError::Failed("queues are not available".into()))
    }
    /// Has the leg's call ended (the engine no longer knows it)?
    fn is_gone(&self, _call: &CallRef) -> bool {
        false
    }
    /// Plays the server's music on hold to the answered leg once (a queue's wait music).
    async fn play_music(
        &self,
        _call: &CallRef,
    ) -> Result<oneshot::Receiver<PlayEnd>, ControlError> {
        Err(ControlError::Failed("music is not available".into()))
    }
    /// The leg's signals from now on (DTMF, end). Call once per application run.
    fn signals(&self, call: &CallRef) -> mpsc::Receiver<CallSignal>;
}
