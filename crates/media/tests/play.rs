//! Players in the relay, end to end on real UDP sockets on 127.0.0.1: audio played to a leg
//! is received by a "phone", decoded with our G.711 and checked by tone (Goertzel); pacing,
//! RTP continuity across relayed -> played -> relayed, forwarding suppression, completion.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use hookflash_media::audio::{default_music_on_hold, Pcm8k, MOH_NOTES_HZ};
use hookflash_media::relay::{Bridge, BridgeHandle, BridgeOptions, Leg, PlayOptions, PlaybackEnd};
use hookflash_media::rtp::{parse_header, write_header, RtpHeader};
use hookflash_media::{Law, MediaStats, PortPool};
use tokio::net::UdpSocket;
use tokio::time::{timeout, Instant};

const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Upper bound for anything that should happen "now" (generous: shared 2-core CI box).
const WAIT: Duration = Duration::from_secs(5);
/// Phone B's relayed packets carry this payload byte, so they are told apart from played ones.
const B_FILL: u8 = 0x55;
const B_SSRC: u32 = 0xB0B0_0001;

/// Each test gets its own port range (the relay tests use 43000-44599).
fn pool(range_index: u16) -> Arc<PortPool> {
    let min = 45_000 + range_index * 100;
    PortPool::new(LO, min, min + 99).unwrap()
}

struct Setup {
    stats: Arc<MediaStats>,
    bridge: BridgeHandle,
    phone_a: UdpSocket,
    phone_b: UdpSocket,
}

async fn start(range_index: u16) -> Setup {
    let pool = pool(range_index);
    let stats = Arc::new(MediaStats::default());
    let bridge = Bridge::start(
        pool.allocate().unwrap(),
        pool.allocate().unwrap(),
        BridgeOptions {
            inactivity_timeout: Duration::from_secs(30),
        },
        Arc::clone(&stats),
    );
    let phone_a = UdpSocket::bind((LO, 0)).await.unwrap();
    let phone_b = UdpSocket::bind((LO, 0)).await.unwrap();
    bridge.set_remote(Leg::A, phone_a.local_addr().unwrap());
    bridge.set_remote(Leg::B, phone_b.local_addr().unwrap());
    Setup {
        stats,
        bridge,
        phone_a,
        phone_b,
    }
}

fn rtp(pt: u8, seq: u16, ts: u32, ssrc: u32, fill: u8) -> Vec<u8> {
    let mut b = vec![fill; 12 + 160];
    write_header(&mut b, false, pt, seq, ts, ssrc);
    b
}

async fn recv(sock: &UdpSocket) -> Vec<u8> {
    let mut buf = vec![0u8; 2048];
    let (n, _) = timeout(WAIT, sock.recv_from(&mut buf))
        .await
        .expect("packet expected")
        .unwrap();
    buf.truncate(n);
    buf
}

async fn try_recv(sock: &UdpSocket, wait: Duration) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 2048];
    match timeout(wait, sock.recv_from(&mut buf)).await {
        Ok(r) => {
            let (n, _) = r.unwrap();
            buf.truncate(n);
            Some(buf)
        }
        Err(_) => None,
    }
}

/// Everything that arrives during `d`.
async fn collect(sock: &UdpSocket, d: Duration) -> Vec<Vec<u8>> {
    let end = Instant::now() + d;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 2048];
    while let Ok(r) = tokio::time::timeout_at(end, sock.recv_from(&mut buf)).await {
        let (n, _) = r.unwrap();
        out.push(buf[..n].to_vec());
    }
    out
}

fn header(p: &[u8]) -> RtpHeader {
    parse_header(p).expect("RTP")
}

fn is_relayed(p: &[u8]) -> bool {
    p[12..].iter().all(|b| *b == B_FILL)
}

fn decode(packets: &[Vec<u8>], law: Law) -> Vec<f32> {
    packets
        .iter()
        .flat_map(|p| {
            let h = header(p);
            law.decode_vec(h.payload(p).unwrap())
        })
        .map(|s| s as f32 / 32768.0)
        .collect()
}

/// Power of `freq` in `x` (Goertzel), normalised so a full-scale sine gives ~1.
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

fn assert_tone(x: &[f32], freq: f32) {
    let p = goertzel(x, freq);
    assert!(p > 0.05, "tone {freq} Hz missing: {p}");
    for other in [440.0, 1000.0, 1500.0, 2000.0] {
        if other != freq {
            let q = goertzel(x, other);
            assert!(q < p / 100.0, "{other} Hz: {q} vs {p} at {freq} Hz");
        }
    }
}

/// Consecutive sequence numbers and +160 timestamps within one run of packets.
fn assert_contiguous(packets: &[Vec<u8>]) {
    for w in packets.windows(2) {
        let (a, b) = (header(&w[0]), header(&w[1]));
        assert_eq!(b.sequence, a.sequence.wrapping_add(1), "sequence");
        assert_eq!(b.timestamp, a.timestamp.wrapping_add(160), "timestamp");
        assert_eq!(a.ssrc, b.ssrc);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plays_a_tone_with_the_leg_codec_at_20ms_pace() {
    let Setup {
        bridge,
        phone_a,
        stats,
        ..
    } = start(0).await;
    bridge.set_send_codec(Leg::A, 8, Law::Alaw);
    let tone = Pcm8k::tone(1000.0, Duration::from_secs(3), 0.5);
    let id = bridge.play(Leg::A, tone, PlayOptions::default());
    assert_eq!(id.leg(), Leg::A);

    let first = recv(&phone_a).await;
    let mut packets = vec![first];
    packets.extend(collect(&phone_a, Duration::from_millis(1000)).await);
    // ~50 in 1 s; loose bounds for a loaded 2-core box.
    assert!(
        (30..=70).contains(&packets.len()),
        "{} packets in ~1 s",
        packets.len()
    );
    for p in &packets {
        let h = header(p);
        assert_eq!(h.payload_type, 8, "the leg's negotiated PT");
        assert_eq!(h.payload(p).unwrap().len(), 160, "20 ms frames");
    }
    assert!(
        header(&packets[0]).marker,
        "marker on the first played packet"
    );
    assert!(packets[1..].iter().all(|p| !header(p).marker));
    assert_contiguous(&packets);
    let audio = decode(&packets, Law::Alaw);
    // Skip the 5 ms fade-in.
    assert_tone(&audio[80..], 1000.0);

    assert!(bridge.stats().played_to(Leg::A) >= packets.len() as u64);
    assert_eq!(bridge.stats().played_to(Leg::B), 0);
    bridge.stop_play(Leg::A);
    assert_eq!(
        timeout(WAIT, bridge.playback_done(id)).await.unwrap(),
        Some(PlaybackEnd::Stopped)
    );
    // Nothing more is played once the backlog in the socket is drained.
    collect(&phone_a, Duration::from_millis(100)).await;
    assert!(try_recv(&phone_a, Duration::from_millis(150))
        .await
        .is_none());
    bridge.stop();
    timeout(WAIT, bridge.stopped()).await.unwrap();
    assert!(
        stats
            .packets_played
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 30
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuity_across_relayed_played_relayed() {
    let Setup {
        bridge,
        phone_a,
        phone_b,
        ..
    } = start(1).await;
    bridge.set_send_codec(Leg::A, 0, Law::Mulaw);
    let lb = bridge.local_addr(Leg::B);
    // Phone B talks for the whole test: 20 ms packets, its own numbering.
    let talker = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        for i in 0..75u16 {
            tick.tick().await;
            let p = rtp(
                0,
                30_000u16.wrapping_add(i),
                7_000_000 + 160 * i as u32,
                B_SSRC,
                B_FILL,
            );
            phone_b.send_to(&p, lb).await.unwrap();
        }
        phone_b
    });
    let mut got = Vec::new();
    // Relayed first (fast path, untouched).
    while got.len() < 10 {
        got.push(recv(&phone_a).await);
    }
    assert!(got.iter().all(|p| is_relayed(p)));
    // 300 ms of tone (15 frames), then back to relaying.
    let id = bridge.play(
        Leg::A,
        Pcm8k::tone(1000.0, Duration::from_millis(300), 0.5),
        PlayOptions::default(),
    );
    let done = bridge.playback_done(id);
    let end = timeout(WAIT, done).await.unwrap();
    assert_eq!(end, Some(PlaybackEnd::Finished));
    got.extend(collect(&phone_a, Duration::from_millis(400)).await);
    let _phone_b = talker.await.unwrap();
    got.extend(collect(&phone_a, Duration::from_millis(100)).await);

    // Segments: relayed, played, relayed.
    let first_played = got.iter().position(|p| !is_relayed(p)).unwrap();
    let resumed = first_played
        + got[first_played..]
            .iter()
            .position(|p| is_relayed(p))
            .expect("relaying resumed");
    let played = &got[first_played..resumed];
    assert_eq!(played.len(), 15, "the whole clip, once");
    assert!(
        got[resumed..].iter().all(|p| is_relayed(p)),
        "no more played packets"
    );
    assert!(got.len() - resumed >= 5, "relayed after the playback");

    // One SSRC (phone B's, the one A already knew), seq +1 throughout, ts increasing.
    for (i, w) in got.windows(2).enumerate() {
        let (a, b) = (header(&w[0]), header(&w[1]));
        assert_eq!(b.ssrc, B_SSRC, "packet {}", i + 1);
        assert_eq!(
            b.sequence,
            a.sequence.wrapping_add(1),
            "seq at packet {}",
            i + 1
        );
        let step = b.timestamp.wrapping_sub(a.timestamp);
        assert!(step > 0 && step < 0x8000_0000, "ts at packet {}", i + 1);
        if i + 1 != first_played && i + 1 != resumed {
            assert_eq!(step, 160, "ts within a segment, packet {}", i + 1);
        }
    }
    // Marker exactly at the two switches.
    let markers: Vec<usize> = (0..got.len()).filter(|i| header(&got[*i]).marker).collect();
    assert_eq!(markers, vec![first_played, resumed]);
    // Before the switch the fast path left B's numbering alone.
    assert_eq!(header(&got[0]).sequence, 30_000);
    // The played audio is the tone.
    let audio = decode(played, Law::Mulaw);
    assert_tone(&audio[80..audio.len() - 80], 1000.0);
    // B's packets during the playback were held back, not dropped.
    let s = bridge.stats();
    assert!(s.b_to_a.held_back >= 10, "{:?}", s.b_to_a);
    assert_eq!(s.dropped, 0);
    assert_eq!(s.played_a, 15);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn music_on_hold_suppresses_other_leg_until_stop() {
    let Setup {
        bridge,
        phone_a,
        phone_b,
        ..
    } = start(2).await;
    bridge.set_send_codec(Leg::A, 8, Law::Alaw);
    let (la, lb) = (bridge.local_addr(Leg::A), bridge.local_addr(Leg::B));
    // B -> A relays.
    phone_b
        .send_to(&rtp(0, 1, 160, B_SSRC, B_FILL), lb)
        .await
        .unwrap();
    assert!(is_relayed(&recv(&phone_a).await));

    let id = bridge.play(
        Leg::A,
        default_music_on_hold(),
        PlayOptions { looped: true },
    );
    let moh: Vec<Vec<u8>> = collect(&phone_a, Duration::from_millis(600)).await;
    assert!(moh.len() >= 15, "{}", moh.len());
    // B keeps talking: not relayed to A while the music plays ...
    for i in 0..5u16 {
        phone_b
            .send_to(&rtp(0, 2 + i, 320 + 160 * i as u32, B_SSRC, B_FILL), lb)
            .await
            .unwrap();
    }
    // ... and A -> B is unaffected.
    phone_a.send_to(&rtp(8, 9, 9, 0xA, 0x11), la).await.unwrap();
    assert_eq!(recv(&phone_b).await[12], 0x11);
    let more = collect(&phone_a, Duration::from_millis(200)).await;
    assert!(
        moh.iter().chain(&more).all(|p| !is_relayed(p)),
        "B leaked into the music"
    );
    let deadline = Instant::now() + WAIT;
    while bridge.stats().b_to_a.held_back < 5 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // It is the documented music: the first note (12 frames = 240 ms) is MOH_NOTES_HZ[0].
    let audio = decode(&moh[..12], Law::Alaw);
    let first = goertzel(&audio, MOH_NOTES_HZ[0]);
    assert!(first > 0.005, "{first}");
    for test_tone in [1000.0, 1500.0] {
        assert!(goertzel(&audio, test_tone) < first / 100.0);
    }
    assert_eq!(bridge.playback_status(Leg::A).playing, Some(id));

    bridge.stop_play(Leg::A);
    assert_eq!(
        timeout(WAIT, bridge.playback_done(id)).await.unwrap(),
        Some(PlaybackEnd::Stopped)
    );
    // Relaying resumes, in the same stream (B's SSRC, marker on the first).
    phone_b
        .send_to(&rtp(0, 7, 1120, B_SSRC, B_FILL), lb)
        .await
        .unwrap();
    let mut last_played = header(more.last().unwrap_or_else(|| moh.last().unwrap()));
    let h = loop {
        let p = recv(&phone_a).await;
        if is_relayed(&p) {
            break header(&p);
        }
        last_played = header(&p);
    };
    assert_eq!(h.ssrc, B_SSRC);
    assert_eq!(last_played.ssrc, B_SSRC);
    assert!(h.marker);
    assert_eq!(h.sequence, last_played.sequence.wrapping_add(1));
    // And only relays now.
    assert!(try_recv(&phone_a, Duration::from_millis(150))
        .await
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn looped_playback_keeps_going_and_completion_is_notified() {
    let Setup {
        bridge,
        phone_a,
        phone_b,
        ..
    } = start(3).await;
    bridge.set_send_codec(Leg::B, 0, Law::Mulaw);
    // A 100 ms clip (5 frames) looped: far more packets than the clip has.
    let clip = Pcm8k::tone(1500.0, Duration::from_millis(100), 0.5);
    let looped = bridge.play(Leg::B, clip.clone(), PlayOptions { looped: true });
    let packets = collect(&phone_b, Duration::from_millis(700)).await;
    assert!(packets.len() >= 20, "{}", packets.len());
    assert_contiguous(&packets);
    assert!(packets.iter().all(|p| header(p).payload_type == 0));
    assert_tone(&decode(&packets, Law::Mulaw), 1500.0);
    // Not done while it loops.
    assert!(
        timeout(Duration::from_millis(100), bridge.playback_done(looped))
            .await
            .is_err()
    );
    assert_eq!(bridge.playback_status(Leg::B).playing, Some(looped));
    // Nothing is played to A.
    assert!(try_recv(&phone_a, Duration::from_millis(50))
        .await
        .is_none());

    // A new play replaces the looped one; a non-looped clip ends by itself.
    let once = bridge.play(Leg::B, clip, PlayOptions::default());
    assert_eq!(
        timeout(WAIT, bridge.playback_done(looped)).await.unwrap(),
        Some(PlaybackEnd::Replaced)
    );
    assert_eq!(
        timeout(WAIT, bridge.playback_done(once)).await.unwrap(),
        Some(PlaybackEnd::Finished)
    );
    let status = bridge.playback_status(Leg::B);
    assert_eq!(status.playing, None);
    assert_eq!(status.last_ended, Some((once, PlaybackEnd::Finished)));
    // An already-finished playback resolves at once.
    assert_eq!(
        timeout(WAIT, bridge.playback_done(once)).await.unwrap(),
        Some(PlaybackEnd::Finished)
    );
    // Then nothing is sent (once the backlog in the socket is drained).
    collect(&phone_b, Duration::from_millis(100)).await;
    assert!(try_recv(&phone_b, Duration::from_millis(150))
        .await
        .is_none());

    // An empty clip is over at once.
    let empty = bridge.play(Leg::B, Pcm8k::new(vec![]), PlayOptions::default());
    assert_eq!(
        timeout(WAIT, bridge.playback_done(empty)).await.unwrap(),
        Some(PlaybackEnd::Finished)
    );

    // Stopping the bridge ends a playback.
    let forever = bridge.play(
        Leg::A,
        default_music_on_hold(),
        PlayOptions { looped: true },
    );
    let done = bridge.playback_done(forever);
    recv(&phone_a).await;
    bridge.stop();
    assert_eq!(
        timeout(WAIT, done).await.unwrap(),
        Some(PlaybackEnd::BridgeStopped)
    );
    timeout(WAIT, bridge.stopped()).await.unwrap();
    // A play on a stopped bridge is over as well.
    let late = bridge.play(Leg::A, default_music_on_hold(), PlayOptions::default());
    assert_eq!(
        timeout(WAIT, bridge.playback_done(late)).await.unwrap(),
        Some(PlaybackEnd::BridgeStopped)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_sends_silence_when_nothing_else_and_yields_to_playback() {
    let Setup {
        bridge,
        phone_a,
        phone_b,
        ..
    } = start(4).await;
    bridge.set_send_codec(Leg::B, 0, Law::Mulaw);
    // A is muted (nothing relayed to B): without the keepalive B receives nothing.
    bridge.set_forwarding(Leg::A, false);
    assert!(try_recv(&phone_b, Duration::from_millis(150))
        .await
        .is_none());
    bridge.set_keepalive(Leg::B, true);
    let silence = collect(&phone_b, Duration::from_millis(600)).await;
    // ~30 frames at 20 ms (generous lower bound for a shared 2-core box).
    assert!(silence.len() >= 15, "{}", silence.len());
    assert_contiguous(&silence);
    assert!(silence.iter().all(|p| header(p).payload_type == 0));
    let pcm = decode(&silence, Law::Mulaw);
    assert!(pcm.iter().all(|s| s.abs() < 0.01), "not silence");
    // Nothing goes to A.
    assert!(try_recv(&phone_a, Duration::from_millis(50))
        .await
        .is_none());
    // A playback takes over (its status is its own), then the silence resumes, continuing
    // the same stream.
    let clip = Pcm8k::tone(1500.0, Duration::from_millis(200), 0.5);
    let id = bridge.play(Leg::B, clip, PlayOptions::default());
    assert_eq!(
        timeout(WAIT, bridge.playback_done(id)).await.unwrap(),
        Some(PlaybackEnd::Finished)
    );
    let after = collect(&phone_b, Duration::from_millis(400)).await;
    assert!(after.len() >= 10, "{}", after.len());
    let ssrc = header(&silence[0]).ssrc;
    assert!(after.iter().all(|p| header(p).ssrc == ssrc), "a new stream");
    assert_eq!(bridge.playback_status(Leg::B).playing, None);
    // Off: nothing more (after the socket's backlog).
    bridge.set_keepalive(Leg::B, false);
    collect(&phone_b, Duration::from_millis(100)).await;
    assert!(try_recv(&phone_b, Duration::from_millis(150))
        .await
        .is_none());
}
