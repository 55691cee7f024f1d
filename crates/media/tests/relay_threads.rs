//! Bridges on dedicated relay threads (the server's default): sockets allocated on the test's
//! runtime are registered with a relay thread's event loop, relay both ways, survive a leg
//! swap, and are closed (ports back in the pool) when the bridge stops.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hookflash_media::relay::{start_relay_threads, Bridge, BridgeOptions, Leg};
use hookflash_media::rtp::{parse_header, write_header};
use hookflash_media::{MediaStats, PortPool};
use tokio::net::UdpSocket;
use tokio::time::{timeout, Instant};

const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const WAIT: Duration = Duration::from_secs(5);

async fn phone() -> UdpSocket {
    UdpSocket::bind((LO, 0)).await.unwrap()
}

fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut b = vec![0xd5; 12 + 160];
    write_header(&mut b, false, 0, seq, u32::from(seq) * 160, ssrc);
    b
}

/// Sends from `from` towards `to_server` until `at` receives a packet of `ssrc` (the first
/// packets may race the bridge's start on its thread); returns the sender address seen.
async fn relayed(from: &UdpSocket, to_server: SocketAddr, at: &UdpSocket, ssrc: u32) -> SocketAddr {
    let deadline = Instant::now() + WAIT;
    let mut buf = [0u8; 2048];
    let mut seq = 0u16;
    loop {
        assert!(
            Instant::now() < deadline,
            "no packet of ssrc {ssrc:#x} relayed"
        );
        seq = seq.wrapping_add(1);
        from.send_to(&rtp(seq, ssrc), to_server).await.unwrap();
        if let Ok(Ok((n, src))) = timeout(Duration::from_millis(50), at.recv_from(&mut buf)).await {
            let h = parse_header(&buf[..n]).expect("an RTP packet");
            if h.ssrc == ssrc {
                return src;
            }
        }
    }
}

/// (thread id, context switches so far) of this process's relay threads, by thread name.
fn relay_thread_switches() -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = entry.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !comm.starts_with("hookflash-relay") {
            continue;
        }
        let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
        let switches: u64 = status
            .lines()
            .filter(|l| l.contains("ctxt_switches"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum();
        let tid = dir.file_name().unwrap().to_string_lossy().into_owned();
        out.push((tid, switches));
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridges_on_relay_threads_relay_swap_legs_and_free_ports() {
    assert_eq!(start_relay_threads(2, Duration::from_millis(1)).unwrap(), 2);
    assert_eq!(
        start_relay_threads(4, Duration::ZERO).unwrap(),
        2,
        "started once per process"
    );
    let pool = PortPool::new(LO, 47_000, 47_199).unwrap();
    let stats = Arc::new(MediaStats::default());
    // Several bridges, so both threads own some.
    let mut calls = Vec::new();
    for _ in 0..4 {
        let a = pool.allocate().unwrap();
        let b = pool.allocate().unwrap();
        let (la, lb) = (a.local_rtp, b.local_rtp);
        let bridge = Bridge::start(a, b, BridgeOptions::default(), Arc::clone(&stats));
        let (pa, pb) = (phone().await, phone().await);
        bridge.set_remote(Leg::A, pa.local_addr().unwrap());
        bridge.set_remote(Leg::B, pb.local_addr().unwrap());
        calls.push((bridge, la, lb, pa, pb));
    }
    for (i, (_, la, lb, pa, pb)) in calls.iter().enumerate() {
        let ssrc = 0x1000 + i as u32;
        assert_eq!(
            relayed(pa, *la, pb, ssrc).await,
            *lb,
            "A -> B leaves B's socket"
        );
        assert_eq!(
            relayed(pb, *lb, pa, ssrc + 0x100).await,
            *la,
            "B -> A leaves A's socket"
        );
    }
    // Swap B's sockets (a transfer): the new pair is registered on the bridge's thread.
    let (bridge, la, _, pa, _) = &calls[0];
    let new_b = pool.allocate().unwrap();
    let new_lb = new_b.local_rtp;
    let pc = phone().await;
    bridge.replace_leg(Leg::B, new_b);
    bridge.set_remote(Leg::B, pc.local_addr().unwrap());
    assert_eq!(relayed(pa, *la, &pc, 0x2000).await, new_lb);
    assert_eq!(relayed(&pc, new_lb, pa, 0x2001).await, *la);
    assert_eq!(
        pool.in_use(),
        8,
        "the replaced pair was closed and its port returned"
    );
    // No traffic: the paced threads block in epoll instead of waking every pace interval
    // (1 ms here, so 400 wake-ups each in the 400 ms below if they kept pacing).
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = relay_thread_switches();
    assert_eq!(before.len(), 2, "two relay threads: {before:?}");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let after = relay_thread_switches();
    for ((tid, b), (_, a)) in before.iter().zip(&after) {
        assert!(
            a - b < 40,
            "idle relay thread {tid} woke {} times in 400 ms",
            a - b
        );
    }
    // And traffic wakes them again.
    assert_eq!(relayed(pa, *la, &pc, 0x2002).await, new_lb);
    assert_eq!(relayed(&pc, new_lb, pa, 0x2003).await, *la);
    for (bridge, ..) in &calls {
        bridge.stop();
        timeout(WAIT, bridge.stopped()).await.expect("bridge stops");
    }
    assert_eq!(pool.in_use(), 0, "all sockets closed, ports returned");
}
