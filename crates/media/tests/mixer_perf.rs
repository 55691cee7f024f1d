//! The conference mixer's cost, measured on real loopback UDP (a bench, not a test: ignored,
//! run by `bench/run.sh --only mixer` or by hand):
//!
//! `cargo test --release -p hookflash-media --test mixer_perf -- --ignored --nocapture`
//!
//! For each conference size k in `MIXER_SIZES` (default `3,10`) and each total of
//! participants in `MIXER_TOTALS` (default `30,60,150,300,450,600`), it starts total/k
//! conferences on a two-worker tokio runtime (the server's media runs on the same kind), one
//! "phone" socket per participant sending a 20 ms PCMU frame every 20 ms from a generator
//! thread, and measures over `MIXER_SECS` (default 10) seconds:
//! - the CPU time of the runtime's worker threads (`/proc/self/task/*/schedstat`; the
//!   generator's own thread is not counted), as % of one core per participant;
//! - the mixer clock's late frames (more than one frame behind);
//! - the packets the phones received against the frames the mixers should have sent.
//!
//! Steps stop for a size at the first total with a late frame. One JSON line per step
//! (`MIXER_RESULT {...}`) for bench/bench.py.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hookflash_media::conference::ConferenceMedia;
use hookflash_media::{Law, PortPool};

const RUNTIME_THREAD: &str = "mixer-bench-rt";

fn env_list(name: &str, default: &[usize]) -> Vec<usize> {
    match std::env::var(name) {
        Ok(v) => v
            .split(',')
            .filter_map(|s| s.trim().parse().ok())
            .filter(|n| *n > 0)
            .collect(),
        Err(_) => default.to_vec(),
    }
}

/// CPU nanoseconds of this process's threads named `name` (schedstat: time on CPU).
fn threads_cpu_ns(name: &str) -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    let mut total = 0;
    for task in tasks.flatten() {
        let dir = task.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !comm.trim_end().starts_with(name) {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("schedstat")).unwrap_or_default();
        total += stat
            .split_whitespace()
            .next()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0);
    }
    total
}

fn rtp_frame(seq: u16, ts: u32, ssrc: u32, level: u8) -> [u8; 172] {
    let mut p = [level; 172];
    p[0] = 0x80;
    p[1] = 0; // PCMU
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[4..8].copy_from_slice(&ts.to_be_bytes());
    p[8..12].copy_from_slice(&ssrc.to_be_bytes());
    p
}

struct Step {
    size: usize,
    total: usize,
    secs: f64,
    cpu_pct_per_participant: f64,
    cpu_pct_total: f64,
    late_frames: u64,
    sent: u64,
    received: u64,
    expected_out: u64,
    mixer_out: u64,
    foreign: u64,
}

/// Runs `total` participants in conferences of `size` for `secs` seconds after a warm-up.
fn run_step(size: usize, total: usize, secs: f64) -> Result<Step, String> {
    let conferences = total / size;
    let total = conferences * size;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(RUNTIME_THREAD)
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let pool = PortPool::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 40000, 49999)
        .map_err(|e| format!("pool: {e}"))?;
    // Phones: one std socket each, non-blocking; `targets[i]` is its participant's port.
    let mut phones = Vec::with_capacity(total);
    let mut targets = Vec::with_capacity(total);
    let mut medias = Vec::with_capacity(conferences);
    let mut stats = Vec::with_capacity(conferences);
    let _guard = rt.enter();
    for _ in 0..conferences {
        let mut media = ConferenceMedia::start();
        for _ in 0..size {
            let phone = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| e.to_string())?;
            phone.set_nonblocking(true).map_err(|e| e.to_string())?;
            let pair = pool.allocate().map_err(|e| format!("ports: {e}"))?;
            let local: SocketAddr = pair.local_rtp;
            let remote = phone.local_addr().map_err(|e| e.to_string())?;
            media
                .add(pair, remote, Law::Mulaw, 0)
                .map_err(|e| format!("add: {e}"))?;
            phones.push(phone);
            targets.push(local);
        }
        stats.push(media.stats().clone());
        medias.push(media);
    }
    let running = Arc::new(AtomicBool::new(true));
    let sent = Arc::new(AtomicU64::new(0));
    let received = Arc::new(AtomicU64::new(0));
    let gen = {
        let (running, sent, received) = (running.clone(), sent.clone(), received.clone());
        std::thread::Builder::new()
            .name("mixer-bench-gen".into())
            .spawn(move || {
                let start = Instant::now();
                let mut buf = [0u8; 2048];
                let mut frame: u64 = 0;
                while running.load(Ordering::Relaxed) {
                    for (i, phone) in phones.iter().enumerate() {
                        let p = rtp_frame(
                            frame as u16,
                            (frame * 160) as u32,
                            0x1000 + i as u32,
                            0x80 | (i % 64) as u8,
                        );
                        if phone.send_to(&p, targets[i]).is_ok() {
                            sent.fetch_add(1, Ordering::Relaxed);
                        }
                        while let Ok(n) = phone.recv(&mut buf) {
                            if n >= 12 {
                                received.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    frame += 1;
                    let next = start + Duration::from_millis(20 * frame);
                    if let Some(wait) = next.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                }
            })
            .map_err(|e| e.to_string())?
    };
    // Warm-up: jitter buffers fill, sockets latch.
    std::thread::sleep(Duration::from_secs(2));
    let late0: u64 = stats
        .iter()
        .map(|s| s.late_frames.load(Ordering::Relaxed))
        .sum();
    let out0: u64 = stats
        .iter()
        .map(|s| s.packets_out.load(Ordering::Relaxed))
        .sum();
    let (sent0, recv0) = (
        sent.load(Ordering::Relaxed),
        received.load(Ordering::Relaxed),
    );
    let cpu0 = threads_cpu_ns(RUNTIME_THREAD);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    let wall = t0.elapsed().as_secs_f64();
    let cpu = (threads_cpu_ns(RUNTIME_THREAD) - cpu0) as f64 / 1e9;
    let late: u64 = stats
        .iter()
        .map(|s| s.late_frames.load(Ordering::Relaxed))
        .sum::<u64>()
        - late0;
    let out: u64 = stats
        .iter()
        .map(|s| s.packets_out.load(Ordering::Relaxed))
        .sum::<u64>()
        - out0;
    let foreign: u64 = stats
        .iter()
        .map(|s| s.foreign_dropped.load(Ordering::Relaxed))
        .sum();
    let step = Step {
        size,
        total,
        secs: wall,
        cpu_pct_per_participant: 100.0 * cpu / wall / total as f64,
        cpu_pct_total: 100.0 * cpu / wall,
        late_frames: late,
        sent: sent.load(Ordering::Relaxed) - sent0,
        received: received.load(Ordering::Relaxed) - recv0,
        expected_out: (wall * 50.0) as u64 * total as u64,
        mixer_out: out,
        foreign,
    };
    running.store(false, Ordering::Relaxed);
    let _ = gen.join();
    drop(medias);
    drop(_guard);
    rt.shutdown_timeout(Duration::from_secs(2));
    Ok(step)
}

#[test]
#[ignore = "a bench: run with --ignored (bench/run.sh --only mixer)"]
fn conference_mixer_cost() {
    let sizes = env_list("MIXER_SIZES", &[3, 10]);
    let totals = env_list("MIXER_TOTALS", &[30, 60, 150, 300, 450, 600]);
    let secs: f64 = std::env::var("MIXER_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10.0);
    let mut steps = 0;
    for &size in &sizes {
        for &total in &totals {
            if total < size {
                continue;
            }
            let step = match run_step(size, total, secs) {
                Ok(s) => s,
                Err(e) => {
                    println!("MIXER_ERROR size={size} total={total}: {e}");
                    break;
                }
            };
            steps += 1;
            println!(
                "MIXER_RESULT {{\"size\": {}, \"participants\": {}, \"secs\": {:.2}, \
                 \"cpu_pct_per_participant\": {:.4}, \"cpu_pct_total\": {:.2}, \
                 \"late_frames\": {}, \"sent\": {}, \"received\": {}, \"expected_out\": {}, \
                 \"mixer_out\": {}, \"foreign_dropped\": {}}}",
                step.size,
                step.total,
                step.secs,
                step.cpu_pct_per_participant,
                step.cpu_pct_total,
                step.late_frames,
                step.sent,
                step.received,
                step.expected_out,
                step.mixer_out,
                step.foreign
            );
            // The mixers' output reached the phones (a bench that measured idle mixers would
            // say nothing).
            assert!(
                step.received * 10 >= step.expected_out * 9,
                "phones received {} of {} expected frames",
                step.received,
                step.expected_out
            );
            if step.late_frames > 0 {
                break;
            }
        }
    }
    assert!(steps > 0, "no step ran");
}
