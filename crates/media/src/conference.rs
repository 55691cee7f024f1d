//! The I/O shell of a conference's media: one task runs the [`Mixer`] on a 20 ms clock; one
//! small task per participant reads its RTP socket. The engine adds and removes participants
//! with a [`ConferenceMedia`] handle; dropping the handle (or `stop`) ends it all and returns
//! the ports to the pool.
//!
//! A participant's packets are taken only from the address its SDP named, or, with symmetric
//! RTP (a phone behind NAT), from the first source on that IP; other sources are dropped.
//!
//! A *fed* participant ([`ConferenceMedia::add_fed`]) is the leg of a call that stays on its
//! call's relay: the relay decodes the leg's audio into a [`FeedStream`] and plays the frames
//! we send back on the leg's own RTP stream (a streamed player: same SSRC, continuing
//! sequence numbers and timestamps). When the feed ends (the call's bridge stopped, or the
//! call took its leg back) the participant is gone: [`ConferenceMedia::gone`] says so.
//!
//! A conference can be recorded ([`ConferenceMedia::start_recording`]): the mixer's tap of the
//! full mix feeds the call recordings' writer (`record.rs`: same format, same incremental
//! header, repaired after a crash the same way), the mix on both channels. Announcements go
//! into the mix for everybody ([`ConferenceMedia::announce`]) or to one participant.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::audio::Pcm8k;
use crate::g711::Law;
use crate::listen::{FeedStream, StreamFrame};
use crate::mixer::{Hearing, Mixer, PcmFrame};
use crate::ports::RtpSocketPair;
use crate::record::{self, RecordError, RecordOptions, RecorderTap, RecordingId, TapState};
use crate::RecordingSummary;

/// Counters of one conference's media (for tests and `/metrics`).
#[derive(Debug, Default)]
pub struct ConferenceStats {
    pub packets_in: AtomicU64,
    pub packets_out: AtomicU64,
    pub foreign_dropped: AtomicU64,
    /// Frames the mixer clock started late (more than one frame behind).
    pub late_frames: AtomicU64,
}

enum Command {
    Add {
        id: u32,
        socket: Arc<UdpSocket>,
        remote: SocketAddr,
        law: Law,
        pt: u8,
    },
    AddFed {
        id: u32,
        play: mpsc::Sender<StreamFrame>,
    },
    Pcm {
        id: u32,
        samples: Vec<i16>,
    },
    Music(u32, Option<Pcm8k>),
    Overlay(Pcm8k),
    /// An announcement: into the mix (None), or to one participant.
    Announce(Option<u32>, Pcm8k),
    StartRecording(Box<RecorderTap>),
    StopRecording,
    Remove(u32),
    Mute(u32, bool),
    Hearing(u32, Hearing),
    Deaf(u32, bool),
    Remote(u32, SocketAddr),
    Packet {
        id: u32,
        from: SocketAddr,
        data: Vec<u8>,
    },
}

/// The engine's handle on a conference's media.
pub struct ConferenceMedia {
    tx: mpsc::UnboundedSender<Command>,
    stats: Arc<ConferenceStats>,
    next_id: u32,
    /// Each participant's socket pair, kept here so the ports stay leased while it is in.
    sockets: HashMap<u32, (RtpSocketPair, tokio::task::JoinHandle<()>)>,
    /// Each fed participant's feed reader.
    fed: HashMap<u32, tokio::task::JoinHandle<()>>,
    gone_tx: mpsc::UnboundedSender<u32>,
    gone_rx: mpsc::UnboundedReceiver<u32>,
    /// The running recording of the mix.
    recording: Option<record::Recording>,
    recordings: u64,
}

impl ConferenceMedia {
    /// Starts the mixer clock on the current runtime.
    pub fn start() -> ConferenceMedia {
        let (tx, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(ConferenceStats::default());
        tokio::spawn(mix(rx, stats.clone()));
        let (gone_tx, gone_rx) = mpsc::unbounded_channel();
        ConferenceMedia {
            tx,
            stats,
            next_id: 1,
            sockets: HashMap::new(),
            fed: HashMap::new(),
            gone_tx,
            gone_rx,
            recording: None,
            recordings: 0,
        }
    }

    /// Plays `clip` once into the mix: everybody hearing the mix hears it, and a recording
    /// has it.
    pub fn announce(&self, clip: Pcm8k) {
        let _ = self.tx.send(Command::Announce(None, clip));
    }

    /// Plays `clip` once to participant `id` alone, on top of what it hears.
    pub fn announce_to(&self, id: u32, clip: Pcm8k) {
        let _ = self.tx.send(Command::Announce(Some(id), clip));
    }

    /// Starts recording the full mix into a new WAV at `path` (the call recordings' format
    /// and writer, the mix on both channels).
    pub async fn start_recording(
        &mut self,
        path: std::path::PathBuf,
        opts: &RecordOptions,
    ) -> Result<RecordingId, RecordError> {
        if self.recording.is_some() {
            return Err(RecordError::AlreadyRecording);
        }
        self.recordings += 1;
        let (tap, rec) = record::start(RecordingId(self.recordings), path, opts).await?;
        let id = rec.id;
        if self
            .tx
            .send(Command::StartRecording(Box::new(tap)))
            .is_err()
        {
            return Err(RecordError::BridgeStopped);
        }
        self.recording = Some(rec);
        Ok(id)
    }

    /// Whether the mix is being recorded.
    pub fn recording(&self) -> bool {
        self.recording.is_some()
    }

    /// Stops the recording; answers when the file is complete (header fixed, synced).
    pub async fn stop_recording(&mut self) -> Result<RecordingSummary, RecordError> {
        let rec = self.recording.take().ok_or(RecordError::NotRecording)?;
        let _ = self.tx.send(Command::StopRecording);
        rec.done.await.map_err(|_| RecordError::Writer {
            path: rec.path.clone(),
            reason: "the writer ended without a result".into(),
        })?
    }

    /// Adds a fed participant: `feed` is its leg's decoded audio, `play` the streamed
    /// playback towards its phone (frames offered with `try_send`: a full queue loses the
    /// frame, the mixer never waits). Returns its id in this conference.
    pub fn add_fed(&mut self, feed: FeedStream, play: mpsc::Sender<StreamFrame>) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        let _ = self.tx.send(Command::AddFed { id, play });
        let reader = tokio::spawn(read_feed(id, feed, self.tx.clone(), self.gone_tx.clone()));
        self.fed.insert(id, reader);
        id
    }

    /// The next fed participant whose feed ended (its call's media is gone). It is already
    /// out of the mix; the caller still calls [`Self::remove`] to forget it.
    pub async fn gone(&mut self) -> Option<u32> {
        self.gone_rx.recv().await
    }

    /// `music` instead of the mix for `id` (`None`: back to the mix); nobody hears `id`
    /// meanwhile.
    pub fn set_music(&self, id: u32, music: Option<Pcm8k>) {
        let _ = self.tx.send(Command::Music(id, music));
    }

    /// Plays `clip` once to everybody on top of the mix (a join beep).
    pub fn overlay_all(&self, clip: Pcm8k) {
        let _ = self.tx.send(Command::Overlay(clip));
    }

    pub fn stats(&self) -> &Arc<ConferenceStats> {
        &self.stats
    }

    /// Adds a participant on `pair` (its local port is in our SDP), sending to `remote` in
    /// `law` with payload type `pt`. Returns its id in this conference.
    pub fn add(
        &mut self,
        pair: RtpSocketPair,
        remote: SocketAddr,
        law: Law,
        pt: u8,
    ) -> std::io::Result<u32> {
        let id = self.next_id;
        self.next_id += 1;
        let std_socket = pair.rtp.try_clone()?;
        let socket = Arc::new(UdpSocket::from_std(std_socket)?);
        let reader = tokio::spawn(read(id, socket.clone(), self.tx.clone()));
        let _ = self.tx.send(Command::Add {
            id,
            socket,
            remote,
            law,
            pt,
        });
        self.sockets.insert(id, (pair, reader));
        Ok(id)
    }

    /// Takes a participant out; its port returns to the pool.
    pub fn remove(&mut self, id: u32) {
        let _ = self.tx.send(Command::Remove(id));
        if let Some((_, reader)) = self.sockets.remove(&id) {
            reader.abort();
        }
        if let Some(reader) = self.fed.remove(&id) {
            // Its feed stream drops with the task: the relay then stops feeding.
            reader.abort();
        }
    }

    pub fn set_muted(&self, id: u32, muted: bool) {
        let _ = self.tx.send(Command::Mute(id, muted));
    }

    /// Who hears `id` from now on (supervision: listen, coach, barge).
    pub fn set_hearing(&self, id: u32, hearing: Hearing) {
        let _ = self.tx.send(Command::Hearing(id, hearing));
    }

    pub fn set_deaf(&self, id: u32, deaf: bool) {
        let _ = self.tx.send(Command::Deaf(id, deaf));
    }

    /// The participant's SDP names a new address (a re-INVITE).
    pub fn set_remote(&self, id: u32, remote: SocketAddr) {
        let _ = self.tx.send(Command::Remote(id, remote));
    }

    pub fn len(&self) -> usize {
        self.sockets.len() + self.fed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty() && self.fed.is_empty()
    }
}

impl Drop for ConferenceMedia {
    fn drop(&mut self) {
        for (_, (_, reader)) in self.sockets.drain() {
            reader.abort();
        }
        for (_, reader) in self.fed.drain() {
            reader.abort();
        }
        // The mixer task ends when its command channel closes (this handle held the last
        // sender besides the readers, which are aborted).
    }
}

/// One participant's socket reader: every datagram goes to the mixer task with its source.
async fn read(id: u32, socket: Arc<UdpSocket>, tx: mpsc::UnboundedSender<Command>) {
    let mut buf = vec![0u8; 2048];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, from)) => {
                let data = buf[..n].to_vec();
                if tx.send(Command::Packet { id, from, data }).is_err() {
                    return;
                }
            }
            Err(e) => {
                debug!(error = %e, participant = id, "conference socket read failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// One fed participant's feed reader: its chunks go to the mixer task; when the feed ends,
/// the participant leaves the mix and the engine hears of it.
async fn read_feed(
    id: u32,
    mut feed: FeedStream,
    tx: mpsc::UnboundedSender<Command>,
    gone: mpsc::UnboundedSender<u32>,
) {
    while let Some(samples) = feed.chunks.recv().await {
        if tx.send(Command::Pcm { id, samples }).is_err() {
            return;
        }
    }
    let _ = tx.send(Command::Remove(id));
    let _ = gone.send(id);
}

struct Peer {
    socket: Arc<UdpSocket>,
    remote: SocketAddr,
    latched: bool,
}

/// The mixer task: commands and packets in, one mixed frame per participant every 20 ms out.
async fn mix(mut rx: mpsc::UnboundedReceiver<Command>, stats: Arc<ConferenceStats>) {
    let mut mixer = Mixer::new();
    let mut peers: HashMap<u32, Peer> = HashMap::new();
    // Fed participants: the streamed playback towards each one's phone (None once the call
    // stopped taking frames).
    let mut fed: HashMap<u32, Option<mpsc::Sender<StreamFrame>>> = HashMap::new();
    let mut pcm_out: Vec<(u32, PcmFrame)> = Vec::new();
    let mut clock = tokio::time::interval(Duration::from_millis(20));
    // A late frame is sent late, not skipped: the participants' clocks count frames.
    clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut out = Vec::new();
    let mut rec: Option<Box<RecorderTap>> = None;
    loop {
        tokio::select! {
            cmd = rx.recv() => {
                let Some(cmd) = cmd else { return };
                match cmd {
                    Command::Add { id, socket, remote, law, pt } => {
                        mixer.add(id, law, pt, rand::random());
                        peers.insert(id, Peer { socket, remote, latched: false });
                    }
                    Command::AddFed { id, play } => {
                        mixer.add_pcm(id);
                        fed.insert(id, Some(play));
                    }
                    Command::Pcm { id, samples } => {
                        if mixer.receive_pcm(id, &samples) {
                            stats.packets_in.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Command::Music(id, music) => {
                        mixer.set_music(id, music);
                    }
                    Command::Overlay(clip) => mixer.overlay_all(&clip),
                    Command::Announce(None, clip) => mixer.announce(&clip),
                    Command::Announce(Some(id), clip) => {
                        mixer.overlay_one(id, &clip);
                    }
                    Command::StartRecording(tap) => {
                        mixer.set_mix_tap(true);
                        rec = Some(tap);
                    }
                    Command::StopRecording => {
                        mixer.set_mix_tap(false);
                        if let Some(tap) = rec.take() {
                            tap.finish();
                        }
                    }
                    Command::Remove(id) => {
                        mixer.remove(id);
                        peers.remove(&id);
                        fed.remove(&id);
                    }
                    Command::Mute(id, on) => {
                        mixer.set_muted(id, on);
                    }
                    Command::Hearing(id, hearing) => {
                        mixer.set_hearing(id, hearing);
                    }
                    Command::Deaf(id, on) => {
                        mixer.set_deaf(id, on);
                    }
                    Command::Remote(id, remote) => {
                        if let Some(peer) = peers.get_mut(&id) {
                            peer.remote = remote;
                            peer.latched = false;
                        }
                    }
                    Command::Packet { id, from, data } => {
                        let Some(peer) = peers.get_mut(&id) else { continue };
                        if from != peer.remote {
                            // Symmetric RTP: the first source on the SDP's IP is the phone.
                            if from.ip() == peer.remote.ip() && !peer.latched {
                                peer.remote = from;
                            } else {
                                stats.foreign_dropped.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                        }
                        peer.latched = true;
                        stats.packets_in.fetch_add(1, Ordering::Relaxed);
                        mixer.receive(id, &data);
                    }
                }
            }
            tick = clock.tick() => {
                if tick.elapsed() > Duration::from_millis(20) {
                    stats.late_frames.fetch_add(1, Ordering::Relaxed);
                }
                out.clear();
                pcm_out.clear();
                mixer.tick_all(&mut out, &mut pcm_out);
                if let Some(tap) = rec.as_mut() {
                    if let Some(frame) = mixer.mix_frame() {
                        tap.on_pcm_both(frame);
                    }
                    if tap.tick() == TapState::WriterGone {
                        warn!("the conference recording's writer is gone");
                        mixer.set_mix_tap(false);
                        rec = None;
                    }
                }
                for (id, frame) in &pcm_out {
                    let Some(slot) = fed.get_mut(id) else { continue };
                    let Some(play) = slot.as_ref() else { continue };
                    match play.try_send(*frame) {
                        Ok(()) => {
                            stats.packets_out.fetch_add(1, Ordering::Relaxed);
                        }
                        // The call's player takes one frame a tick: a full queue means our
                        // clock ran ahead for a moment; this frame is lost.
                        Err(mpsc::error::TrySendError::Full(_)) => {}
                        Err(mpsc::error::TrySendError::Closed(_)) => {
                            debug!(participant = id, "the call stopped taking conference audio");
                            *slot = None;
                        }
                    }
                }
                for (id, packet) in &out {
                    let Some(peer) = peers.get(id) else { continue };
                    match peer.socket.try_send_to(packet, peer.remote) {
                        Ok(_) => {
                            stats.packets_out.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(e) => warn!(error = %e, participant = id, "conference send failed"),
                    }
                }
            }
        }
    }
}
