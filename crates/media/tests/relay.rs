//! End-to-end tests of the relay with real UDP sockets on 127.0.0.1: two "phones" (plain
//! tokio sockets) talk through a Bridge.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hookflash_media::relay::{Bridge, BridgeHandle, BridgeOptions, Leg};
use hookflash_media::rtp::{parse_header, write_header};
use hookflash_media::{MediaStats, PortPool};
use tokio::net::UdpSocket;
use tokio::time::{timeout, Instant};

const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Upper bound for anything that should happen "now" (generous: shared 2-core CI box).
const WAIT: Duration = Duration::from_secs(5);
/// How long to listen when asserting that nothing arrives.
const QUIET: Duration = Duration::from_millis(200);

/// Each test gets its own port range so parallel tests do not steal each other's ports.
fn pool(range_index: u16) -> Arc<PortPool> {
    let min = 43_000 + range_index * 200;
    PortPool::new(LO, min, min + 199).unwrap()
}

async fn phone() -> UdpSocket {
    UdpSocket::bind((LO, 0)).await.unwrap()
}

fn rtp(pt: u8, seq: u16, ts: u32, ssrc: u32, fill: u8) -> Vec<u8> {
    let mut b = vec![fill; 12 + 160];
    write_header(&mut b, false, pt, seq, ts, ssrc);
    b
}

fn rtcp_sr(ssrc: u32) -> Vec<u8> {
    let mut b = vec![0u8; 28];
    b[0] = 0x80;
    b[1] = 200;
    b[3] = 6;
    b[4..8].copy_from_slice(&ssrc.to_be_bytes());
    b
}

async fn recv(sock: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = vec![0u8; 2048];
    let (n, from) = timeout(WAIT, sock.recv_from(&mut buf))
        .await
        .expect("packet expected")
        .unwrap();
    buf.truncate(n);
    (buf, from)
}

async fn expect_nothing(sock: &UdpSocket) {
    let mut buf = vec![0u8; 2048];
    if let Ok(r) = timeout(QUIET, sock.recv_from(&mut buf)).await {
        panic!("unexpected packet: {r:?}");
    }
}

/// Waits until `f` holds (the relay counts asynchronously to the phones' receives).
async fn eventually(mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "condition not reached in time");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// RTP and RTCP phones for legs A and B, set as the bridge's remotes:
/// (RTP A, RTP B, RTCP A, RTCP B).
async fn rtp_and_rtcp_phones(
    bridge: &BridgeHandle,
) -> (UdpSocket, UdpSocket, UdpSocket, UdpSocket) {
    let (phone_a, phone_b) = (phone().await, phone().await);
    let (rtcp_a, rtcp_b) = (phone().await, phone().await);
    bridge.set_remote(Leg::A, phone_a.local_addr().unwrap());
    bridge.set_remote(Leg::B, phone_b.local_addr().unwrap());
    bridge.set_remote_rtcp(Leg::A, rtcp_a.local_addr().unwrap());
    bridge.set_remote_rtcp(Leg::B, rtcp_b.local_addr().unwrap());
    (phone_a, phone_b, rtcp_a, rtcp_b)
}

struct Setup {
    pool: Arc<PortPool>,
    stats: Arc<MediaStats>,
    bridge: BridgeHandle,
}

fn start(range_index: u16, inactivity: Duration) -> Setup {
    let pool = pool(range_index);
    let a = pool.allocate().unwrap();
    let b = pool.allocate().unwrap();
    let stats = Arc::new(MediaStats::default());
    let bridge = Bridge::start(
        a,
        b,
        BridgeOptions {
            inactivity_timeout: inactivity,
        },
        Arc::clone(&stats),
    );
    Setup {
        pool,
        stats,
        bridge,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_both_ways_with_pt_mapping_and_counters() {
    let Setup {
        pool,
        stats,
        bridge,
    } = start(0, Duration::from_secs(30));
    let (phone_a, phone_b, rtcp_a, rtcp_b) = rtp_and_rtcp_phones(&bridge).await;
    // telephone-event is 101 on A and 96 on B.
    bridge.set_pt_map(Leg::A, vec![(101, 96)]);
    bridge.set_pt_map(Leg::B, vec![(96, 101)]);
    let (la, lb) = (bridge.local_addr(Leg::A), bridge.local_addr(Leg::B));
    assert_ne!(la, lb);
    assert_eq!(la.ip(), LO);

    let mut a_bytes = 0;
    for i in 0..10u16 {
        let pt = if i % 3 == 2 { 101 } else { 0 };
        let mut p = rtp(pt, 100 + i, 160 * i as u32, 0xA, i as u8);
        if i == 5 {
            p[1] |= 0x80; // marker survives the PT rewrite
        }
        a_bytes += p.len() as u64;
        phone_a.send_to(&p, la).await.unwrap();
        let (got, from) = recv(&phone_b).await;
        assert_eq!(from, lb, "B hears the relay from B's socket");
        let h = parse_header(&got).unwrap();
        assert_eq!(h.payload_type, if pt == 101 { 96 } else { 0 });
        assert_eq!(h.marker, i == 5);
        assert_eq!(
            (h.sequence, h.timestamp, h.ssrc),
            (100 + i, 160 * i as u32, 0xA),
            "fast path keeps numbering"
        );
        assert_eq!(&got[2..], &p[2..], "everything but byte 1 intact");
    }
    for i in 0..5u16 {
        let pt = if i == 4 { 96 } else { 8 };
        let p = rtp(pt, i, 0, 0xB, 0x55);
        phone_b.send_to(&p, lb).await.unwrap();
        let (got, from) = recv(&phone_a).await;
        assert_eq!(from, la);
        assert_eq!(
            parse_header(&got).unwrap().payload_type,
            if pt == 96 { 101 } else { 8 }
        );
        assert_eq!(&got[12..], &p[12..]);
    }
    // RTCP on the +1 sockets, both ways.
    let sr = rtcp_sr(0xA);
    rtcp_a
        .send_to(&sr, SocketAddr::new(la.ip(), la.port() + 1))
        .await
        .unwrap();
    let (got, from) = recv(&rtcp_b).await;
    assert_eq!(got, sr);
    assert_eq!(from.port(), lb.port() + 1);
    rtcp_b
        .send_to(&rtcp_sr(0xB), SocketAddr::new(lb.ip(), lb.port() + 1))
        .await
        .unwrap();
    assert_eq!(recv(&rtcp_a).await.0, rtcp_sr(0xB));
    // Multiplexed RTCP arriving on the RTP socket goes out as RTCP.
    phone_a.send_to(&sr, la).await.unwrap();
    assert_eq!(recv(&rtcp_b).await.0, sr);

    eventually(|| bridge.stats().a_to_b.rtcp_packets == 2).await;
    let s = bridge.stats();
    assert_eq!(s.a_to_b.packets, 10);
    assert_eq!(s.a_to_b.bytes, a_bytes);
    assert_eq!(s.b_to_a.packets, 5);
    assert_eq!(s.b_to_a.bytes, 5 * 172);
    assert_eq!(s.b_to_a.rtcp_packets, 1);
    assert_eq!((s.dropped, s.foreign), (0, 0));
    assert!(s.last_packet_a.is_some() && s.last_packet_b.is_some());
    assert_eq!(s.remote(Leg::A), Some(phone_a.local_addr().unwrap()));

    bridge.stop();
    timeout(WAIT, bridge.stopped()).await.unwrap();
    assert!(bridge.is_stopped());
    let (relayed, dropped, bytes, active) = stats.snapshot();
    assert_eq!(relayed, 10 + 5 + 3);
    assert_eq!(dropped, 0);
    assert_eq!(bytes, a_bytes + 5 * 172 + 3 * 28);
    assert_eq!(active, 0);
    assert_eq!(pool.in_use(), 0);
}

#[tokio::test]
async fn latches_to_real_source_and_drops_foreign() {
    let Setup { bridge, stats, .. } = start(1, Duration::from_secs(30));
    // Phone A's SDP says `sdp_a`, but its packets come from `nat_a` (NAT rewrote the port).
    let (sdp_a, nat_a, phone_b, intruder) =
        (phone().await, phone().await, phone().await, phone().await);
    bridge.set_remote(Leg::A, sdp_a.local_addr().unwrap());
    bridge.set_remote(Leg::B, phone_b.local_addr().unwrap());
    let (la, lb) = (bridge.local_addr(Leg::A), bridge.local_addr(Leg::B));

    // Before A sent anything, B's audio goes to A's SDP address.
    phone_b.send_to(&rtp(0, 1, 0, 0xB, 1), lb).await.unwrap();
    recv(&sdp_a).await;

    // A sends from another source than its SDP address (NAT): its stream is latched only
    // after 500 ms of it, with at least 5 packets of one SSRC (the earlier ones are dropped).
    for seq in 1..=14u16 {
        nat_a
            .send_to(&rtp(0, seq, 160 * u32::from(seq), 0xA, seq as u8), la)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let first = recv(&phone_b).await.0[12];
    assert!(
        (13..=14).contains(&first),
        "B hears A only once A's stream is latched (packet {first})"
    );
    phone_b.send_to(&rtp(0, 2, 160, 0xB, 3), lb).await.unwrap();
    // Packets relayed before the latch went to the SDP address; from now on, to the source.
    eventually(|| bridge.stats().remote_a == Some(nat_a.local_addr().unwrap())).await;
    let mut to_nat = recv(&nat_a).await.0[12];
    if to_nat != 3 {
        to_nat = recv(&nat_a).await.0[12];
    }
    assert_eq!(to_nat, 3, "B's audio now goes to the latched source");
    let learning_drops = bridge.stats().foreign;
    assert!((12..=13).contains(&learning_drops), "{learning_drops}");

    // A foreign source is dropped and counted; the SDP address itself is still accepted.
    intruder.send_to(&rtp(0, 9, 0, 0xEE, 9), la).await.unwrap();
    expect_nothing(&phone_b).await;
    sdp_a.send_to(&rtp(0, 2, 160, 0xA, 4), la).await.unwrap();
    assert_eq!(recv(&phone_b).await.0[12], 4);
    let s = bridge.stats();
    assert_eq!(
        (s.dropped, s.foreign),
        (learning_drops + 1, learning_drops + 1)
    );

    // Same SDP remote again: no relatch (the intruder is still foreign).
    bridge.set_remote(Leg::A, sdp_a.local_addr().unwrap());
    intruder.send_to(&rtp(0, 10, 0, 0xEE, 9), la).await.unwrap();
    expect_nothing(&phone_b).await;
    // A new SDP remote (re-INVITE): its address latches at once.
    bridge.set_remote(Leg::A, intruder.local_addr().unwrap());
    intruder.send_to(&rtp(0, 11, 0, 0xEE, 5), la).await.unwrap();
    assert_eq!(recv(&phone_b).await.0[12], 5);
    phone_b.send_to(&rtp(0, 3, 320, 0xB, 6), lb).await.unwrap();
    assert_eq!(recv(&intruder).await.0[12], 6);
    expect_nothing(&nat_a).await;

    eventually(|| bridge.stats().foreign == learning_drops + 2).await;
    drop(bridge); // Drop stops the bridge as well.
    eventually(|| stats.bridges_active.load(Ordering::Relaxed) == 0).await;
    assert_eq!(
        stats.packets_dropped.load(Ordering::Relaxed),
        learning_drops + 2
    );
}

#[tokio::test]
async fn forwarding_off_stops_one_direction() {
    let Setup { bridge, .. } = start(2, Duration::from_secs(30));
    let (phone_a, phone_b) = (phone().await, phone().await);
    bridge.set_remote(Leg::A, phone_a.local_addr().unwrap());
    bridge.set_remote(Leg::B, phone_b.local_addr().unwrap());
    let (la, lb) = (bridge.local_addr(Leg::A), bridge.local_addr(Leg::B));

    bridge.set_forwarding(Leg::A, false); // A muted / held
    phone_a.send_to(&rtp(0, 1, 0, 0xA, 1), la).await.unwrap();
    expect_nothing(&phone_b).await;
    phone_b.send_to(&rtp(0, 1, 0, 0xB, 2), lb).await.unwrap();
    assert_eq!(
        recv(&phone_a).await.0[12],
        2,
        "the other direction still flows"
    );
    let s = bridge.stats();
    assert_eq!(s.a_to_b.held_back, 1);
    assert_eq!(s.a_to_b.packets, 0);
    assert_eq!(s.dropped, 0, "held back is not loss");
    assert!(s.last_packet_a.is_some(), "still counts as activity");

    bridge.set_forwarding(Leg::A, true);
    phone_a.send_to(&rtp(0, 2, 160, 0xA, 3), la).await.unwrap();
    assert_eq!(recv(&phone_b).await.0[12], 3);
}

#[tokio::test]
async fn inactive_fires_after_timeout_when_traffic_stops() {
    let timeout_len = Duration::from_millis(400);
    let Setup { bridge, .. } = start(3, timeout_len);
    let (phone_a, phone_b) = (phone().await, phone().await);
    bridge.set_remote(Leg::A, phone_a.local_addr().unwrap());
    bridge.set_remote(Leg::B, phone_b.local_addr().unwrap());
    let la = bridge.local_addr(Leg::A);

    // Traffic keeps it alive well past one timeout.
    let mut last_send = Instant::now();
    {
        let inactive = bridge.inactive();
        tokio::pin!(inactive);
        for i in 0..16u16 {
            phone_a.send_to(&rtp(0, i, 0, 0xA, 0), la).await.unwrap();
            last_send = Instant::now();
            tokio::select! {
                _ = &mut inactive => panic!("inactive() fired during traffic"),
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    }
    // Then it stops: inactive() resolves, not before `timeout` after the last packet.
    timeout(WAIT, bridge.inactive())
        .await
        .expect("inactive() should fire");
    assert!(last_send.elapsed() + Duration::from_millis(5) >= timeout_len);

    // Disabling the timeout keeps inactive() pending; re-enabling wakes it up.
    bridge.set_inactivity_timeout(None);
    assert!(timeout(QUIET, bridge.inactive()).await.is_err());
    let pending = bridge.inactive();
    tokio::pin!(pending);
    assert!(timeout(Duration::from_millis(50), &mut pending)
        .await
        .is_err());
    bridge.set_inactivity_timeout(Some(Duration::from_millis(100)));
    timeout(WAIT, pending)
        .await
        .expect("re-enabled timeout fires");
}

#[tokio::test]
async fn inactive_fires_without_any_traffic() {
    let Setup { bridge, .. } = start(4, Duration::from_millis(150));
    let t0 = Instant::now();
    timeout(WAIT, bridge.inactive())
        .await
        .expect("inactive() should fire");
    assert!(t0.elapsed() >= Duration::from_millis(140));
}

#[tokio::test]
async fn stop_frees_ports() {
    let Setup { pool, bridge, .. } = start(5, Duration::from_secs(30));
    assert_eq!(pool.in_use(), 2);
    let (la, lb) = (bridge.local_addr(Leg::A), bridge.local_addr(Leg::B));
    bridge.stop();
    timeout(WAIT, bridge.stopped()).await.unwrap();
    assert_eq!(pool.in_use(), 0);
    for a in [la, lb] {
        std::net::UdpSocket::bind(a).expect("RTP port free again");
        std::net::UdpSocket::bind(SocketAddr::new(a.ip(), a.port() + 1))
            .expect("RTCP port free again");
    }
    bridge.stop(); // idempotent
    bridge.set_remote(Leg::A, la); // ignored after stop, no panic
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_media_then_attach_new_b_leg_with_continuity() {
    let Setup { pool, bridge, .. } = start(6, Duration::from_secs(30));
    let (phone_a, phone_b, phone_c) = (phone().await, phone().await, phone().await);
    bridge.set_remote(Leg::A, phone_a.local_addr().unwrap());
    let la = bridge.local_addr(Leg::A);
    let old_b = bridge.local_addr(Leg::B);

    // B not known yet: A's packets have nowhere to go (dropped, counted).
    phone_a.send_to(&rtp(0, 1, 0, 0xA, 1), la).await.unwrap();
    eventually(|| bridge.stats().dropped == 1).await;

    // B answers; early media from B reaches A, and continuity is on for packets from B.
    bridge.set_continuity(Leg::B, true);
    bridge.set_remote(Leg::B, phone_b.local_addr().unwrap());
    for i in 0..3u16 {
        phone_b
            .send_to(&rtp(0, 1000 + i, 5000 + 160 * i as u32, 0xB, 7), old_b)
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(parse_header(&recv(&phone_a).await.0).unwrap());
    }

    // Transfer: B's leg is replaced by C on fresh sockets; the old port returns to the pool.
    let c_pair = pool.allocate().unwrap();
    let new_b = c_pair.local_rtp;
    bridge.attach_b(c_pair);
    assert_eq!(bridge.local_addr(Leg::B), new_b);
    bridge.set_remote(Leg::B, phone_c.local_addr().unwrap());
    eventually(|| pool.in_use() == 2).await;
    std::net::UdpSocket::bind(old_b).expect("old B port closed");

    phone_c
        .send_to(&rtp(0, 42, 999_999, 0xC, 8), new_b)
        .await
        .unwrap();
    let h = parse_header(&recv(&phone_a).await.0).unwrap();
    let prev = seen[2];
    assert_eq!(h.ssrc, prev.ssrc, "A keeps seeing one SSRC");
    assert_eq!(h.sequence, prev.sequence.wrapping_add(1));
    assert_eq!(h.timestamp, prev.timestamp.wrapping_add(160));
    assert!(h.marker, "marker on the first packet after the switch");
    assert_eq!(seen[1].sequence, seen[0].sequence.wrapping_add(1));

    // A to C works on the new sockets.
    phone_a.send_to(&rtp(0, 2, 160, 0xA, 9), la).await.unwrap();
    let (got, from) = recv(&phone_c).await;
    assert_eq!((got[12], from), (9, new_b));
    expect_nothing(&phone_b).await;
}

/// RTCP gets through to an idle bridge (no RTP at all), in between RTP (each report once), and
/// on a leg's replacement sockets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtcp_reaches_an_idle_bridge_and_a_replaced_leg() {
    let Setup { pool, bridge, .. } = start(7, Duration::from_secs(30));
    let (phone_a, phone_b, rtcp_a, rtcp_b) = rtp_and_rtcp_phones(&bridge).await;
    let (la, lb) = (bridge.local_addr(Leg::A), bridge.local_addr(Leg::B));
    let rtcp_port = |a: SocketAddr| SocketAddr::new(a.ip(), a.port() + 1);

    // Idle: the task sleeps with only socket wakers registered.
    tokio::time::sleep(Duration::from_millis(100)).await;
    rtcp_a.send_to(&rtcp_sr(1), rtcp_port(la)).await.unwrap();
    assert_eq!(recv(&rtcp_b).await.0, rtcp_sr(1));
    tokio::time::sleep(Duration::from_millis(50)).await;
    rtcp_b.send_to(&rtcp_sr(2), rtcp_port(lb)).await.unwrap();
    assert_eq!(recv(&rtcp_a).await.0, rtcp_sr(2));

    // RTP and RTCP interleaved: every RTCP report arrives, once.
    for i in 0..20u16 {
        phone_a
            .send_to(&rtp(0, i, 160 * u32::from(i), 0xA, 1), la)
            .await
            .unwrap();
        if i % 5 == 0 {
            rtcp_a
                .send_to(&rtcp_sr(100 + u32::from(i)), rtcp_port(la))
                .await
                .unwrap();
        }
        recv(&phone_b).await;
    }
    for i in (0..20u32).step_by(5) {
        assert_eq!(recv(&rtcp_b).await.0, rtcp_sr(100 + i));
    }
    expect_nothing(&rtcp_b).await;

    // New sockets for A (a transfer): their RTCP is relayed too, from the first report.
    let new_a = pool.allocate().unwrap();
    let new_la = new_a.local_rtp;
    bridge.replace_leg(Leg::A, new_a);
    let (phone_c, rtcp_c) = (phone().await, phone().await);
    bridge.set_remote(Leg::A, phone_c.local_addr().unwrap());
    bridge.set_remote_rtcp(Leg::A, rtcp_c.local_addr().unwrap());
    tokio::time::sleep(Duration::from_millis(50)).await;
    rtcp_c
        .send_to(&rtcp_sr(3), rtcp_port(new_la))
        .await
        .unwrap();
    assert_eq!(recv(&rtcp_b).await.0, rtcp_sr(3));
    rtcp_b.send_to(&rtcp_sr(4), rtcp_port(lb)).await.unwrap();
    let (got, from) = recv(&rtcp_c).await;
    assert_eq!(got, rtcp_sr(4));
    assert_eq!(from, rtcp_port(new_la), "from A's new RTCP socket");
    bridge.stop();
    timeout(WAIT, bridge.stopped()).await.expect("bridge stops");
}
