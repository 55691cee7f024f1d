//! Timing of the stream a phone receives across relayed -> played -> relayed, on tokio's paused
//! clock: every packet's arrival is stamped with the virtual time, so the checks compare RTP
//! timestamps with the time that passed without any wall-clock threshold. A "stall" of the
//! relay task is `tokio::time::advance` (the clock jumps while no task runs).
//!
//! What a receiver needs (pjmedia's jitter buffer indexes frames by `timestamp / 160`, so a
//! timestamp ahead of the time that passed is queued as that much extra playout delay, and
//! one behind it after a gap throws its timeline off): one SSRC, sequence numbers +1, and
//! timestamps that keep pace with the emission times at every switch, after a stall, and
//! after a pause of the relayed phone; no more than 5 frames ever sent back to back.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use hookflash_media::audio::Pcm8k;
use hookflash_media::relay::{Bridge, BridgeOptions, Leg, PlayOptions, PlaybackEnd};
use hookflash_media::rtp::{parse_header, write_header, RtpHeader};
use hookflash_media::{Law, MediaStats, PortPool};
use tokio::net::UdpSocket;
use tokio::time::{timeout, Instant};

const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Virtual time: generous, it costs nothing.
const WAIT: Duration = Duration::from_secs(5);
const B_FILL: u8 = 0x55;
const B_SSRC: u32 = 0xB0B0_0002;
const MS: Duration = Duration::from_millis(1);

fn pool() -> Arc<PortPool> {
    PortPool::new(LO, 47_600, 47_699).unwrap()
}

fn rtp(seq: u16, ts: u32) -> Vec<u8> {
    let mut b = vec![B_FILL; 12 + 160];
    write_header(&mut b, false, 0, seq, ts, B_SSRC);
    b
}

/// Every packet that arrives until `quiet` passes without one, stamped with the (virtual)
/// arrival time.
async fn drain(sock: &UdpSocket, quiet: Duration, out: &mut Vec<(Instant, RtpHeader, bool)>) {
    let mut buf = vec![0u8; 2048];
    while let Ok(r) = timeout(quiet, sock.recv_from(&mut buf)).await {
        let (n, _) = r.unwrap();
        let h = parse_header(&buf[..n]).expect("RTP");
        let relayed = buf[12..n].iter().all(|b| *b == B_FILL);
        out.push((Instant::now(), h, relayed));
    }
}

/// The next `n` packets, stamped with the (virtual) arrival time.
async fn take(sock: &UdpSocket, n: usize, out: &mut Vec<(Instant, RtpHeader, bool)>) {
    let mut buf = vec![0u8; 2048];
    for _ in 0..n {
        let (len, _) = timeout(WAIT, sock.recv_from(&mut buf))
            .await
            .expect("packet expected")
            .unwrap();
        let h = parse_header(&buf[..len]).expect("RTP");
        let relayed = buf[12..len].iter().all(|b| *b == B_FILL);
        out.push((Instant::now(), h, relayed));
    }
}

#[tokio::test(start_paused = true)]
async fn timestamps_keep_pace_with_the_clock_across_switches_stalls_and_pauses() {
    let pool = pool();
    let bridge = Bridge::start(
        pool.allocate().unwrap(),
        pool.allocate().unwrap(),
        BridgeOptions {
            inactivity_timeout: Duration::from_secs(60),
        },
        Arc::new(MediaStats::default()),
    );
    let phone_a = UdpSocket::bind((LO, 0)).await.unwrap();
    let phone_b = UdpSocket::bind((LO, 0)).await.unwrap();
    bridge.set_remote(Leg::A, phone_a.local_addr().unwrap());
    bridge.set_remote(Leg::B, phone_b.local_addr().unwrap());
    bridge.set_send_codec(Leg::A, 0, Law::Mulaw);
    let lb = bridge.local_addr(Leg::B);
    let mut got: Vec<(Instant, RtpHeader, bool)> = Vec::new();

    // 1. Phone B talks: 10 packets relayed untouched to A, 20 ms apart.
    for i in 0..10u16 {
        phone_b
            .send_to(&rtp(100 + i, 8_000 + 160 * i as u32), lb)
            .await
            .unwrap();
        drain(&phone_a, 5 * MS, &mut got).await;
        tokio::time::sleep(15 * MS).await;
    }
    assert_eq!(got.len(), 10);
    // 2. 7 ms after B's last packet an announcement of 1 s starts (B stops talking).
    tokio::time::sleep(7 * MS).await;
    let id = bridge.play(
        Leg::A,
        Pcm8k::tone(1000.0, Duration::from_secs(1), 0.5),
        PlayOptions::default(),
    );
    // 3. 200 ms in (10 frames), the relay task stalls for 300 ms: more than it may catch up
    //    in a burst. 200 ms later (10 frames on) for 90 ms: less, caught up in a burst.
    take(&phone_a, 10, &mut got).await;
    tokio::time::advance(300 * MS).await;
    take(&phone_a, 10, &mut got).await;
    tokio::time::advance(90 * MS).await;
    take(&phone_a, 30, &mut got).await;
    let end = timeout(WAIT, bridge.playback_done(id)).await.unwrap();
    assert_eq!(end, Some(PlaybackEnd::Finished));
    drain(&phone_a, 30 * MS, &mut got).await;
    // 4. B resumes 300 ms after the announcement (a re-INVITE, say), its numbering moved on.
    tokio::time::sleep(300 * MS).await;
    for i in 0..10u16 {
        phone_b
            .send_to(&rtp(500 + i, 90_000 + 160 * i as u32), lb)
            .await
            .unwrap();
        drain(&phone_a, 5 * MS, &mut got).await;
        tokio::time::sleep(15 * MS).await;
    }

    let played = got.iter().filter(|p| !p.2).count();
    assert_eq!(
        played, 50,
        "the whole clip, once (stalls skip time, not audio)"
    );
    assert_eq!(got.len(), 70);
    assert!(got[60..].iter().all(|p| p.2), "relaying resumed");
    for (i, w) in got.windows(2).enumerate() {
        let (a, b) = (&w[0].1, &w[1].1);
        assert_eq!(b.ssrc, B_SSRC, "one SSRC, packet {}", i + 1);
        assert_eq!(
            b.sequence,
            a.sequence.wrapping_add(1),
            "sequence +1, packet {}",
            i + 1
        );
        let step = b.timestamp.wrapping_sub(a.timestamp);
        assert!(
            (160..0x8000_0000).contains(&step),
            "timestamp moves on by at least a frame, packet {}: {step}",
            i + 1
        );
    }
    // Timestamps against arrival (= emission) times: never more than one frame ahead of the
    // time that passed (ahead = playout delay added at the receiver), and never more behind
    // it than the frames of a caught-up burst are late (the catch-up cap, 100 ms, plus a
    // frame): a gap, a stall or a switch must not leave the timeline behind for good.
    let (t0, h0, _) = got[0];
    for (i, (t, h, relayed)) in got.iter().enumerate() {
        let elapsed = ((*t - t0).as_micros() * 8 / 1000) as i64;
        let advanced = h.timestamp.wrapping_sub(h0.timestamp) as i64;
        let drift = advanced - elapsed;
        assert!(
            (-960..=160).contains(&drift),
            "packet {i} ({}) at +{:?}: timestamp +{advanced}, time +{elapsed} units",
            if *relayed { "relayed" } else { "played" },
            *t - t0
        );
    }
    // After the burst the frames are on time again: the last played frame, and the first
    // relayed one after B's pause, are within one frame of the time.
    for i in [59, 60] {
        let (t, h, _) = got[i];
        let elapsed = ((t - t0).as_micros() * 8 / 1000) as i64;
        let advanced = h.timestamp.wrapping_sub(h0.timestamp) as i64;
        assert!(
            (advanced - elapsed).abs() <= 160,
            "packet {i}: {advanced} vs {elapsed}"
        );
    }
    // Back to back (same virtual instant): never more than 5 frames (the 100 ms catch-up cap).
    let mut burst = 1;
    let mut max_burst = 1;
    for w in got.windows(2) {
        burst = if w[1].0 == w[0].0 { burst + 1 } else { 1 };
        max_burst = max_burst.max(burst);
    }
    assert!(max_burst <= 5, "a burst of {max_burst} frames");
    assert!(max_burst >= 4, "the 90 ms stall is caught up ({max_burst})");
    // Markers: the two switches and the talkspurt after the long stall.
    let markers = got.iter().filter(|p| p.1.marker).count();
    assert_eq!(markers, 3);
}
