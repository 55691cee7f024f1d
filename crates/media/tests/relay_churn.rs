//! Bridge churn on the relay threads, shaped like the soak with media (issue 17's long run,
//! where one bridge in 114,400 kept its two port pairs and its 40 uncounted packets after its
//! call ended): many short bridges, all legs talking to one "caller" and one "callee" socket
//! (SIPp sends every call's stream from its one media port), 20 packets each way per bridge,
//! control messages while the relay thread is busy with the bridge's packets, and the owner
//! stopping it from another runtime the way the call actor does (`stop()`, then its `Arc`
//! dropped) once the streams are over. Every bridge must end (its task gone, its ports back
//! in the pool) and every relayed packet be counted in the global stats.
//!
//! A bridge that does not end is poked with one RTP packet: if that ends it, its task was
//! alive and its `Stop` was in the channel, only nobody woke it (the control inbox lost its
//! waker, see `ControlInbox` in relay.rs). On 2 busy cores this found 2 such bridges in
//! 60,000, 2 in 120,000 and 3 in 150,000 (all ended by the poke).
//!
//! Ignored (a load test, ~1.5 min for the default 120,000 bridges; `CHURN_CALLS`,
//! `CHURN_CONCURRENT`, `CHURN_CHATTY` change it):
//! `cargo test -p hookflash-media --test relay_churn -- --ignored --nocapture`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hookflash_media::g711::Law;
use hookflash_media::relay::{start_relay_threads, Bridge, BridgeOptions, Leg};
use hookflash_media::rtp::write_header;
use hookflash_media::{MediaStats, PortPool};
use tokio::net::UdpSocket;

const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut b = vec![0xd5; 12 + 160];
    write_header(&mut b, false, 0, seq, u32::from(seq) * 160, ssrc);
    b
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Counts what a phone socket receives until told to stop.
fn counter(sock: Arc<UdpSocket>, got: Arc<AtomicU64>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while sock.recv_from(&mut buf).await.is_ok() {
            got.fetch_add(1, Ordering::Relaxed);
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn churned_bridges_free_their_ports_and_count_every_packet() {
    let calls = env("CHURN_CALLS", 120_000);
    let concurrent = env("CHURN_CONCURRENT", 150) as usize;
    start_relay_threads(2, Duration::from_millis(1)).unwrap();
    let pool = PortPool::new(LO, 44_000, 47_999).unwrap();
    let stats = Arc::new(MediaStats::default());
    let caller = Arc::new(UdpSocket::bind((LO, 0)).await.unwrap());
    let callee = Arc::new(UdpSocket::bind((LO, 0)).await.unwrap());
    let (got_a, got_b) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let ca = counter(Arc::clone(&caller), Arc::clone(&got_a));
    let cb = counter(Arc::clone(&callee), Arc::clone(&got_b));
    let (caller_addr, callee_addr) = (caller.local_addr().unwrap(), callee.local_addr().unwrap());
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrent));
    let mut tasks = tokio::task::JoinSet::new();
    let (stuck, counted) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let woken_by_rtp = Arc::new(AtomicU64::new(0));
    for n in 0..calls {
        let permit = Arc::clone(&sem).acquire_owned().await.unwrap();
        let (pool, stats) = (Arc::clone(&pool), Arc::clone(&stats));
        let (caller, callee) = (Arc::clone(&caller), Arc::clone(&callee));
        let (stuck, counted) = (Arc::clone(&stuck), Arc::clone(&counted));
        let woken_by_rtp = Arc::clone(&woken_by_rtp);
        tasks.spawn(async move {
            let _permit = permit;
            // The pool may be briefly empty while stopped bridges close their sockets.
            let pair = || loop {
                if let Ok(p) = pool.allocate() {
                    return p;
                }
                std::thread::sleep(Duration::from_millis(1));
            };
            let (a, b) = (pair(), pair());
            let (la, lb): (SocketAddr, SocketAddr) = (a.local_rtp, b.local_rtp);
            let bridge = Arc::new(Bridge::start(
                a,
                b,
                BridgeOptions {
                    inactivity_timeout: Duration::from_secs(600),
                },
                stats,
            ));
            bridge.set_remote(Leg::A, caller_addr);
            // The actor's `inactive` future holds a clone for the call's life.
            let watcher = Arc::clone(&bridge);
            let inactive = tokio::spawn(async move { watcher.inactive().await });
            tokio::task::yield_now().await;
            bridge.set_remote(Leg::B, callee_addr);
            bridge.set_pt_map(Leg::A, vec![(0, 0)]);
            bridge.set_pt_map(Leg::B, vec![(0, 0)]);
            bridge.set_send_codec(Leg::A, 0, Law::Mulaw);
            bridge.set_send_codec(Leg::B, 0, Law::Mulaw);
            let ssrc = n as u32;
            let chatty = env("CHURN_CHATTY", 20) as u16;
            for seq in 0..20u16 {
                let _ = caller.send_to(&rtp(seq, ssrc), la).await;
                let _ = callee.send_to(&rtp(seq, ssrc ^ 0x8000_0000), lb).await;
                if seq >= 20 - chatty {
                    // A control message while the relay thread is likely busy with this
                    // call's packets (a re-INVITE's remote, a mute, DTMF payload types).
                    bridge.set_pt_map(Leg::A, vec![(0, 0)]);
                }
                if seq % 5 == 4 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            // Give the relay a moment for the last packets, as a call's hold time would.
            tokio::time::sleep(Duration::from_millis(2 + n % 7)).await;
            let checker = Arc::clone(&bridge);
            bridge.stop();
            inactive.abort();
            drop(bridge);
            // What the bridge relayed, once it has ended (its task publishes its final count).
            if tokio::time::timeout(Duration::from_secs(10), checker.stopped())
                .await
                .is_err()
            {
                stuck.fetch_add(1, Ordering::Relaxed);
                // Is the task only deaf to its inbox? One RTP packet wakes it through its socket.
                let poke = UdpSocket::bind((LO, 0)).await.unwrap();
                let _ = poke.send_to(&rtp(1, 1), la).await;
                if tokio::time::timeout(Duration::from_secs(2), checker.stopped())
                    .await
                    .is_ok()
                {
                    woken_by_rtp.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
            let st = checker.stats();
            counted.fetch_add(
                st.a_to_b.packets
                    + st.b_to_a.packets
                    + st.a_to_b.rtcp_packets
                    + st.b_to_a.rtcp_packets,
                Ordering::Relaxed,
            );
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    // Everything stops within a few seconds.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while (pool.in_use() > 0 || stats.bridges_active.load(Ordering::Relaxed) > 0)
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    ca.abort();
    cb.abort();
    let per_bridge = counted.load(Ordering::Relaxed);
    let relayed = stats.packets_relayed.load(Ordering::Relaxed);
    eprintln!(
        "calls {calls}, stuck {} (of which stopped by one RTP packet {}), per-bridge relayed {per_bridge}, received {},",
        stuck.load(Ordering::Relaxed),
        woken_by_rtp.load(Ordering::Relaxed),
        got_a.load(Ordering::Relaxed) + got_b.load(Ordering::Relaxed)
    );
    eprintln!(
        " relayed (stats) {relayed}, dropped {}, in use {}, bridges {}",
        stats.packets_dropped.load(Ordering::Relaxed),
        pool.in_use(),
        stats.bridges_active.load(Ordering::Relaxed)
    );
    assert_eq!(
        stuck.load(Ordering::Relaxed),
        0,
        "bridges that did not stop within 10 s"
    );
    assert_eq!(pool.in_use(), 0, "port pairs still allocated");
    assert_eq!(
        stats.bridges_active.load(Ordering::Relaxed),
        0,
        "bridge tasks still running"
    );
    assert_eq!(
        relayed, per_bridge,
        "relayed packets not flushed to the stats"
    );
}
