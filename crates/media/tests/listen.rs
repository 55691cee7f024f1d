//! Listen taps and streamed playback end to end on real UDP sockets on 127.0.0.1: two
//! "phones" send tones through a bridge; the tap's frames carry each leg's tone; pause stops
//! them; a streamed playback reaches phone A.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hookflash_media::audio::Pcm8k;
use hookflash_media::relay::{Bridge, BridgeOptions, Leg, PlaybackEnd};
use hookflash_media::rtp::write_header;
use hookflash_media::{Law, MediaStats, PortPool};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tokio::time::timeout;

const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const WAIT: Duration = Duration::from_secs(10);

/// This file's port range (47800-47999).
fn pool(range_index: u16) -> Arc<PortPool> {
    let min = 47_800 + range_index * 100;
    PortPool::new(LO, min, min + 99).unwrap()
}

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

fn norm(x: &[i16]) -> Vec<f32> {
    x.iter().map(|s| *s as f32 / 32768.0).collect()
}

fn talk(sock: Arc<UdpSocket>, to: SocketAddr, freq: f32, stop: &Arc<AtomicBool>) -> JoinHandle<()> {
    let stop = Arc::clone(stop);
    tokio::spawn(async move {
        let tone = Pcm8k::tone(freq, Duration::from_secs(30), 0.5);
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        for i in 0u32.. {
            tick.tick().await;
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let mut p = vec![0u8; 12 + 160];
            write_header(&mut p, i == 0, 0, i as u16, i * 160, 0x1000 + freq as u32);
            let at = (i as usize * 160) % (tone.len() - 160);
            Law::Mulaw.encode(&tone.samples()[at..at + 160], &mut p[12..]);
            let _ = sock.send_to(&p, to).await;
        }
    })
}

#[tokio::test]
async fn the_tap_carries_both_legs_pauses_and_streamed_audio_reaches_the_phone() {
    let pool = pool(0);
    let bridge = Bridge::start(
        pool.allocate().unwrap(),
        pool.allocate().unwrap(),
        BridgeOptions::default(),
        Arc::new(MediaStats::default()),
    );
    let phone_a = Arc::new(UdpSocket::bind((LO, 0)).await.unwrap());
    let phone_b = Arc::new(UdpSocket::bind((LO, 0)).await.unwrap());
    bridge.set_remote(Leg::A, phone_a.local_addr().unwrap());
    bridge.set_remote(Leg::B, phone_b.local_addr().unwrap());
    bridge.set_send_codec(Leg::A, 0, Law::Mulaw);
    bridge.set_send_codec(Leg::B, 0, Law::Mulaw);
    let stop = Arc::new(AtomicBool::new(false));
    let talkers = [
        talk(phone_a.clone(), bridge.local_addr(Leg::A), 1000.0, &stop),
        talk(phone_b.clone(), bridge.local_addr(Leg::B), 1500.0, &stop),
    ];

    let mut tap = bridge.start_listen(50).unwrap();
    assert_eq!(bridge.listening(), Some(tap.id));
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..40 {
        let f = timeout(WAIT, tap.frames.recv()).await.unwrap().unwrap();
        a.extend_from_slice(&f.a);
        b.extend_from_slice(&f.b);
    }
    // The first frames may precede the first packets: judge the last 0.4 s.
    let (a, b) = (norm(&a[a.len() - 3200..]), norm(&b[b.len() - 3200..]));
    assert!(goertzel(&a, 1000.0) > 0.05, "{}", goertzel(&a, 1000.0));
    assert!(goertzel(&a, 1500.0) < 0.01);
    assert!(goertzel(&b, 1500.0) > 0.05, "{}", goertzel(&b, 1500.0));
    assert!(goertzel(&b, 1000.0) < 0.01);

    // Paused: nothing arrives (beyond what was queued); resumed: frames again.
    bridge.pause_listen(tap.id, true);
    tokio::time::sleep(Duration::from_millis(100)).await;
    while tap.frames.try_recv().is_ok() {}
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(tap.frames.try_recv().is_err(), "frames while paused");
    bridge.pause_listen(tap.id, false);
    assert!(timeout(WAIT, tap.frames.recv()).await.unwrap().is_some());

    // A streamed playback towards phone A: 2000 Hz frames, then the sender goes. (What was
    // relayed from phone B so far is dropped first.)
    let mut buf = [0u8; 2048];
    while phone_a.try_recv_from(&mut buf).is_ok() {}
    let (id, tx) = bridge.play_stream(Leg::A, 10);
    let done = bridge.playback_done(id);
    let tone = Pcm8k::tone(2000.0, Duration::from_millis(600), 0.5);
    let feeder = tokio::spawn(async move {
        for chunk in tone.samples().chunks_exact(160) {
            let mut f = [0i16; 160];
            f.copy_from_slice(chunk);
            if tx.send(f).await.is_err() {
                break;
            }
        }
    });
    let mut heard = Vec::new();
    while heard.len() < 160 * 20 {
        let (n, _) = timeout(WAIT, phone_a.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        if n == 172 {
            let mut pcm = [0i16; 160];
            for (s, b) in pcm.iter_mut().zip(&buf[12..n]) {
                *s = Law::Mulaw.decode_sample(*b);
            }
            heard.extend_from_slice(&pcm);
        }
    }
    let heard = norm(&heard[160 * 5..]);
    assert!(
        goertzel(&heard, 2000.0) > 0.05,
        "{}",
        goertzel(&heard, 2000.0)
    );
    feeder.await.unwrap();
    assert_eq!(
        timeout(WAIT, done).await.unwrap(),
        Some(PlaybackEnd::Finished)
    );

    bridge.stop_listen(tap.id);
    assert_eq!(bridge.listening(), None);
    // A consumer that goes away ends its tap, which is then no longer named.
    let other = bridge.start_listen(50).unwrap();
    assert_eq!(bridge.listening(), Some(other.id));
    drop(other);
    timeout(WAIT, async {
        while bridge.listening().is_some() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    assert!(
        timeout(WAIT, async { while tap.frames.recv().await.is_some() {} })
            .await
            .is_ok()
    );
    stop.store(true, Ordering::Relaxed);
    for t in talkers {
        t.await.unwrap();
    }
    bridge.stop();
}
