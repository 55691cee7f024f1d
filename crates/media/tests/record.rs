//! Recording end to end on real UDP sockets on 127.0.0.1: two "phones" send tones through a
//! bridge while it records; the WAV is read back with hound and checked by Goertzel per channel.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hookflash_media::audio::Pcm8k;
use hookflash_media::record::{RecordError, RecordOptions};
use hookflash_media::relay::{Bridge, BridgeHandle, BridgeOptions, Leg};
use hookflash_media::rtp::write_header;
use hookflash_media::wav::repair_wav;
use hookflash_media::{Law, MediaStats, PortPool};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};

const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const WAIT: Duration = Duration::from_secs(10);

/// Each test gets its own port range (relay tests 43000-44599, play tests 45000-45399).
fn pool(range_index: u16) -> Arc<PortPool> {
    let min = 46_000 + range_index * 100;
    PortPool::new(LO, min, min + 99).unwrap()
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hookflash-rec-it-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    let _ = std::fs::remove_file(&p);
    p
}

struct Phones {
    bridge: BridgeHandle,
    stop: Arc<AtomicBool>,
    talkers: Vec<JoinHandle<()>>,
}

/// A bridge with phone A sending 1000 Hz PCMU and phone B 1500 Hz PCMA, 20 ms packets, until
/// `stop` is set.
async fn start_call(range_index: u16) -> Phones {
    let pool = pool(range_index);
    let bridge = Bridge::start(
        pool.allocate().unwrap(),
        pool.allocate().unwrap(),
        BridgeOptions::default(),
        Arc::new(MediaStats::default()),
    );
    let phone_a = UdpSocket::bind((LO, 0)).await.unwrap();
    let phone_b = UdpSocket::bind((LO, 0)).await.unwrap();
    bridge.set_remote(Leg::A, phone_a.local_addr().unwrap());
    bridge.set_remote(Leg::B, phone_b.local_addr().unwrap());
    bridge.set_send_codec(Leg::A, 0, Law::Mulaw);
    bridge.set_send_codec(Leg::B, 8, Law::Alaw);
    let stop = Arc::new(AtomicBool::new(false));
    let talkers = vec![
        talk(
            phone_a,
            bridge.local_addr(Leg::A),
            1000.0,
            0,
            Law::Mulaw,
            &stop,
        ),
        talk(
            phone_b,
            bridge.local_addr(Leg::B),
            1500.0,
            8,
            Law::Alaw,
            &stop,
        ),
    ];
    Phones {
        bridge,
        stop,
        talkers,
    }
}

fn talk(
    sock: UdpSocket,
    to: SocketAddr,
    freq: f32,
    pt: u8,
    law: Law,
    stop: &Arc<AtomicBool>,
) -> JoinHandle<()> {
    let stop = Arc::clone(stop);
    tokio::spawn(async move {
        let tone = Pcm8k::tone(freq, Duration::from_secs(60), 0.5);
        let ssrc = rand_ssrc(freq);
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let mut buf = [0u8; 2048];
        for i in 0u32.. {
            tick.tick().await;
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let mut p = vec![0u8; 12 + 160];
            write_header(&mut p, i == 0, pt, i as u16, i * 160, ssrc);
            let at = (i as usize * 160) % (tone.len() - 160);
            law.encode(&tone.samples()[at..at + 160], &mut p[12..]);
            sock.send_to(&p, to).await.unwrap();
            // Drain what the bridge relays to us.
            while sock.try_recv_from(&mut buf).is_ok() {}
        }
    })
}

fn rand_ssrc(freq: f32) -> u32 {
    0x5000_0000 + freq as u32
}

impl Phones {
    async fn hang_up(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.talkers {
            t.await.unwrap();
        }
        self.bridge.stop();
        timeout(WAIT, self.bridge.stopped()).await.unwrap();
    }
}

/// Power of `freq` (Goertzel), ~1 for a full-scale sine.
fn goertzel(x: &[f32], freq: f32) -> f32 {
    let w = 2.0 * std::f32::consts::PI * freq / 8000.0;
    let c = 2.0 * w.cos();
    let (mut s1, mut s2) = (0f32, 0f32);
    for v in x {
        let s = v + c * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    let n = x.len() as f32;
    4.0 * (s1 * s1 + s2 * s2 - c * s1 * s2) / (n * n)
}

/// (left, right) as f32 in -1..1.
fn read_stereo(path: &PathBuf) -> (Vec<f32>, Vec<f32>) {
    let r = hound::WavReader::open(path).unwrap();
    let spec = r.spec();
    assert_eq!(
        (spec.channels, spec.sample_rate, spec.bits_per_sample),
        (2, 8000, 16)
    );
    let s: Vec<i16> = r.into_samples().map(|s| s.unwrap()).collect();
    let left = s.iter().step_by(2).map(|v| *v as f32 / 32768.0).collect();
    let right = s
        .iter()
        .skip(1)
        .step_by(2)
        .map(|v| *v as f32 / 32768.0)
        .collect();
    (left, right)
}

fn assert_dominant(x: &[f32], freq: f32, other: f32, what: &str) {
    let p = goertzel(x, freq);
    let q = goertzel(x, other);
    assert!(p > 0.05, "{what}: {freq} Hz missing ({p})");
    assert!(q < p / 100.0, "{what}: {other} Hz {q} vs {freq} Hz {p}");
}

fn energy(x: &[f32]) -> f32 {
    x.iter().map(|v| v * v).sum::<f32>() / x.len().max(1) as f32
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_each_side_on_its_own_channel() {
    let call = start_call(0).await;
    // The call runs a while before the recording starts: that part is not in the file.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let path = tmp("two-tones.wav");
    let t0 = Instant::now();
    let id = call
        .bridge
        .start_recording(&path, RecordOptions::default())
        .await
        .unwrap();
    assert_eq!(call.bridge.recording(), Some(id));
    assert!(matches!(
        call.bridge
            .start_recording(tmp("second.wav"), RecordOptions::default())
            .await,
        Err(RecordError::AlreadyRecording)
    ));
    let t1 = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let t2 = Instant::now();
    let summary = timeout(WAIT, call.bridge.stop_recording())
        .await
        .unwrap()
        .unwrap();
    let t3 = Instant::now();
    assert_eq!(call.bridge.recording(), None);
    assert!(matches!(
        call.bridge.stop_recording().await,
        Err(RecordError::NotRecording)
    ));
    assert!(matches!(
        call.bridge.pause_recording(),
        Err(RecordError::NotRecording)
    ));
    // The call goes on after the recording.
    let relayed_before = call.bridge.stats().a_to_b.packets;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(call.bridge.stats().a_to_b.packets > relayed_before);
    call.hang_up().await;

    assert_eq!(summary.id, id);
    assert_eq!(summary.path, path);
    assert_eq!(summary.dropped_frames, 0);
    // The recorded span: from start to stop on the wall clock (one frame of rounding).
    let (shortest, longest) = (t2 - t1, t3 - t0);
    assert!(
        summary.duration + Duration::from_millis(20) >= shortest
            && summary.duration <= longest + Duration::from_millis(20),
        "{:?} not in {shortest:?}..{longest:?}",
        summary.duration
    );
    assert_eq!(
        summary.bytes,
        std::fs::metadata(&path).unwrap().len(),
        "size in the summary"
    );
    let (left, right) = read_stereo(&path);
    assert_eq!(left.len() as u64 * 4 + 44, summary.bytes);
    // Skip the first 100 ms (the rings fill), then: A on the left, B on the right.
    assert_dominant(&left[800..], 1000.0, 1500.0, "left");
    assert_dominant(&right[800..], 1500.0, 1000.0, "right");
    std::fs::remove_file(&path).unwrap();
}

fn frame_silent(left: &[f32], right: &[f32], f: usize) -> bool {
    left[f * 160..(f + 1) * 160].iter().all(|v| *v == 0.0)
        && right[f * 160..(f + 1) * 160].iter().all(|v| *v == 0.0)
}

fn frames(d: Duration) -> usize {
    (d.as_millis() / 20) as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_leaves_a_silent_gap() {
    let call = start_call(1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let path = tmp("paused.wav");
    let t0 = Instant::now();
    call.bridge
        .start_recording(&path, RecordOptions::default())
        .await
        .unwrap();
    let t1 = Instant::now();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let t_pause = Instant::now();
    call.bridge.pause_recording().unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let t_resume = Instant::now();
    call.bridge.resume_recording().unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let t_stop = Instant::now();
    let summary = call.bridge.stop_recording().await.unwrap();
    call.hang_up().await;

    assert!(
        summary.duration + Duration::from_millis(20) >= t_stop - t1,
        "the pause is in the timeline: {:?}",
        summary.duration
    );
    let (left, right) = read_stereo(&path);
    // Where the pause begins and ends in the file, within the scheduling uncertainty (the
    // control messages take effect a little after the calls; 100 ms of slack).
    let slack = 5;
    let pause_at = (frames(t_pause - t1), frames(t_pause - t0) + slack);
    let resume_at = (frames(t_resume - t1), frames(t_resume - t0) + slack);
    let loud: Vec<usize> = (pause_at.1 + 1..resume_at.0)
        .filter(|f| !frame_silent(&left, &right, *f))
        .collect();
    assert!(
        loud.is_empty(),
        "frames with sound during the pause: {loud:?}"
    );
    assert!(
        resume_at.0 - pause_at.1 >= 20,
        "a long enough pause was checked"
    );
    // Tones before and after the gap.
    let before = (pause_at.0 - 15) * 160..pause_at.0 * 160;
    let after = (resume_at.1 + 2) * 160..(resume_at.1 + 17) * 160;
    for span in [before, after] {
        assert_dominant(&left[span.clone()], 1000.0, 1500.0, "left");
        assert_dominant(&right[span.clone()], 1500.0, 1000.0, "right");
    }
    assert!(energy(&left) > 0.01);
    std::fs::remove_file(&path).unwrap();
}

/// A recording whose process dies mid-call: the writer never finalises, and the header on disk
/// is stale (here: still the one written at start, as after a crash right after it, plus a torn
/// last frame). `repair_wav` makes it playable with the samples intact.
#[test]
fn repair_after_a_simulated_crash() {
    let path = tmp("crashed.wav");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let call = start_call(2).await;
        call.bridge
            .start_recording(
                &path,
                RecordOptions {
                    header_interval: Duration::from_millis(200),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1300)).await;
        // "kill -9": everything is dropped without stop_recording or bridge stop, below.
        std::mem::forget(call);
    });
    // Shutting the runtime down cancels every task where it stands: no finalisation.
    rt.shutdown_background();
    // A blocking write that was in flight finishes on its own thread.
    std::thread::sleep(Duration::from_millis(200));
    let len = std::fs::metadata(&path).unwrap().len();
    assert!(
        len > 44 + 16_000,
        "at least half a second was flushed: {len}"
    );
    let mut bytes = std::fs::read(&path).unwrap();
    // The stale header of a crash right after the start, and half a frame torn off the end.
    bytes[4..8].copy_from_slice(&36u32.to_le_bytes());
    bytes[40..44].copy_from_slice(&0u32.to_le_bytes());
    bytes.extend_from_slice(&[0x12, 0x34]);
    std::fs::write(&path, &bytes).unwrap();
    // As written, players see no audio.
    assert_eq!(hound::WavReader::open(&path).unwrap().duration(), 0);

    let out = repair_wav(&path).unwrap();
    assert!(out.changed);
    assert_eq!(out.trimmed_bytes, 2);
    assert_eq!(out.data_bytes, len - 44);
    assert!(
        out.duration >= Duration::from_millis(500),
        "{:?}",
        out.duration
    );
    let (left, right) = read_stereo(&path);
    assert_eq!(left.len() as u64 * 4, out.data_bytes);
    assert_dominant(&left[800..], 1000.0, 1500.0, "left");
    assert_dominant(&right[800..], 1500.0, 1000.0, "right");
    // Repairing again changes nothing.
    assert!(!repair_wav(&path).unwrap().changed);
    std::fs::remove_file(&path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recording_ends_with_the_bridge() {
    let call = start_call(3).await;
    let path = tmp("bridge-ends.wav");
    call.bridge
        .start_recording(&path, RecordOptions::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    call.bridge.stop();
    timeout(WAIT, call.bridge.stopped()).await.unwrap();
    // The file is finished without stop_recording; stop_recording still reports it.
    let summary = timeout(WAIT, call.bridge.stop_recording())
        .await
        .unwrap()
        .unwrap();
    assert!(
        summary.duration >= Duration::from_millis(450),
        "{:?}",
        summary.duration
    );
    assert!(!repair_wav(&path).unwrap().changed, "header already final");
    assert!(matches!(
        call.bridge
            .start_recording(tmp("late.wav"), RecordOptions::default())
            .await,
        Err(RecordError::BridgeStopped)
    ));
    call.stop.store(true, Ordering::Relaxed);
    for t in call.talkers {
        t.await.unwrap();
    }
    std::fs::remove_file(&path).unwrap();
}
