//! rtpgen: the media load generator of hookflash's bench (scenario 2, media relay cost).
//!
//! Plays both phones of N two-party G.711 calls: socket A stands for every caller, socket B
//! for every callee. Each target address (a relay port facing phone A, or facing phone B)
//! gets one 172-byte RTP packet (12-byte header + 160 bytes of PCMU) every ptime ms, the
//! streams' send times spread evenly over the period. The payload carries the send time
//! (CLOCK_REALTIME, ns) and a flag telling whether the packet was sent inside the measured
//! window. The receive side takes the kernel's timestamp (SO_TIMESTAMPNS) of every packet —
//! on loopback that is when the relay handed the packet to the kernel — so
//! transit = relay output time - generator send time, and the RFC 3550 interarrival jitter of
//! that transit is what the relay adds (the generator's own send-time jitter cancels out).
//! SO_RXQ_OVFL tells drops at the generator's own sockets apart from the relay's.
//!
//! Usage: rtpgen --a-bind 127.0.0.1:P --b-bind 127.0.0.1:Q --a-targets FILE --b-targets FILE
//!               [--warmup S] [--measure S] [--ptime MS]
//! Target files: one ip:port per line. Prints `MEASURE` when the measured window starts,
//! `END` when sending stops, then one JSON line of results. Every loop is bounded by the
//! configured durations; the process exits by itself.

use std::fs;
use std::io::{self, Write};
use std::mem;
use std::net::{SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::process::exit;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const HDR: usize = 12;
const PAYLOAD: usize = 160;
const PKT: usize = HDR + PAYLOAD;
const SEND_BATCH: usize = 32;
const POLL_US: u64 = 1000;
const RECV_BATCH: usize = 256;
const HIST_US: usize = 200_000; // 1 µs buckets up to 200 ms
const SSRC_A: u32 = 0x1000_0000; // streams sent by phone A (received on socket B)
const SSRC_B: u32 = 0x2000_0000; // streams sent by phone B (received on socket A)

struct Args {
    a_bind: SocketAddrV4,
    b_bind: SocketAddrV4,
    a_targets: Vec<SocketAddrV4>,
    b_targets: Vec<SocketAddrV4>,
    warmup: Duration,
    measure: Duration,
    ptime: Duration,
}

fn die(msg: &str) -> ! {
    eprintln!("rtpgen: {msg}");
    exit(2)
}

fn read_targets(path: &str) -> Vec<SocketAddrV4> {
    let text = fs::read_to_string(path).unwrap_or_else(|e| die(&format!("{path}: {e}")));
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let a: SocketAddrV4 = l.parse().unwrap_or_else(|_| die(&format!("bad target {l}")));
            if a.ip().octets()[0] != 127 {
                die(&format!("target {a} is not in 127.0.0.0/8"));
            }
            a
        })
        .collect()
}

fn parse_args() -> Args {
    let mut it = std::env::args().skip(1);
    let (mut a_bind, mut b_bind, mut at, mut bt) = (None, None, None, None);
    let (mut warmup, mut measure, mut ptime) = (2.0f64, 10.0f64, 20u64);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_else(|| die(&format!("{k} needs a value")));
        match k.as_str() {
            "--a-bind" => a_bind = Some(v.parse().unwrap_or_else(|_| die("bad --a-bind"))),
            "--b-bind" => b_bind = Some(v.parse().unwrap_or_else(|_| die("bad --b-bind"))),
            "--a-targets" => at = Some(read_targets(&v)),
            "--b-targets" => bt = Some(read_targets(&v)),
            "--warmup" => warmup = v.parse().unwrap_or_else(|_| die("bad --warmup")),
            "--measure" => measure = v.parse().unwrap_or_else(|_| die("bad --measure")),
            "--ptime" => ptime = v.parse().unwrap_or_else(|_| die("bad --ptime")),
            _ => die(&format!("unknown option {k}")),
        }
    }
    let args = Args {
        a_bind: a_bind.unwrap_or_else(|| die("--a-bind required")),
        b_bind: b_bind.unwrap_or_else(|| die("--b-bind required")),
        a_targets: at.unwrap_or_default(),
        b_targets: bt.unwrap_or_default(),
        warmup: Duration::from_secs_f64(warmup.clamp(0.0, 600.0)),
        measure: Duration::from_secs_f64(measure.clamp(0.1, 600.0)),
        ptime: Duration::from_millis(ptime.clamp(5, 200)),
    };
    for a in [args.a_bind, args.b_bind] {
        if a.ip().octets()[0] != 127 {
            die("bind addresses must be in 127.0.0.0/8");
        }
    }
    args
}

fn realtime_ns() -> u64 {
    let mut ts: libc::timespec = unsafe { mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn sockaddr(a: &SocketAddrV4) -> libc::sockaddr_in {
    let mut s: libc::sockaddr_in = unsafe { mem::zeroed() };
    s.sin_family = libc::AF_INET as libc::sa_family_t;
    s.sin_port = a.port().to_be();
    s.sin_addr = libc::in_addr {
        s_addr: u32::from_ne_bytes(a.ip().octets()),
    };
    s
}

fn setsockopt_int(fd: RawFd, level: i32, name: i32, val: i32) -> bool {
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &val as *const i32 as *const libc::c_void,
            mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    r == 0
}

fn open_socket(addr: SocketAddrV4) -> UdpSocket {
    let s = UdpSocket::bind(addr).unwrap_or_else(|e| die(&format!("bind {addr}: {e}")));
    let fd = s.as_raw_fd();
    // Large buffers (FORCE works as root; fall back to the capped variant).
    for (force, plain, size) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, 32 << 20),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, 8 << 20),
    ] {
        if !setsockopt_int(fd, libc::SOL_SOCKET, force, size) {
            setsockopt_int(fd, libc::SOL_SOCKET, plain, size);
        }
    }
    setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1);
    setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RXQ_OVFL, 1);
    s.set_read_timeout(Some(Duration::from_millis(100))).ok();
    s
}

struct Stream {
    on_b: bool,
    dst: libc::sockaddr_in,
    ssrc: u32,
    seq: u16,
    ts: u32,
}

#[derive(Default)]
struct SendStats {
    sent: u64,
    sent_measured_a: Vec<u64>,
    sent_measured_b: Vec<u64>,
    errors: u64,
    lag_hist_us: Vec<u64>, // 100 µs buckets up to 1 s
}

struct Batch {
    bufs: Vec<[u8; PKT]>,
    idx: Vec<usize>,
}

fn flush(
    fd: RawFd,
    batch: &mut Batch,
    streams: &mut [Stream],
    measured: bool,
    st: &mut SendStats,
) {
    let n = batch.idx.len();
    if n == 0 {
        return;
    }
    let tx = realtime_ns();
    let mut iov: [libc::iovec; SEND_BATCH] = unsafe { mem::zeroed() };
    let mut msgs: [libc::mmsghdr; SEND_BATCH] = unsafe { mem::zeroed() };
    for (k, &si) in batch.idx.iter().enumerate() {
        let s = &mut streams[si];
        let b = &mut batch.bufs[k];
        b[0] = 0x80;
        b[1] = 0; // PCMU
        b[2..4].copy_from_slice(&s.seq.to_be_bytes());
        b[4..8].copy_from_slice(&s.ts.to_be_bytes());
        b[8..12].copy_from_slice(&s.ssrc.to_be_bytes());
        b[12..20].copy_from_slice(&tx.to_be_bytes());
        b[20] = measured as u8;
        s.seq = s.seq.wrapping_add(1);
        s.ts = s.ts.wrapping_add(PAYLOAD as u32);
        iov[k] = libc::iovec {
            iov_base: b.as_mut_ptr() as *mut libc::c_void,
            iov_len: PKT,
        };
        msgs[k].msg_hdr.msg_name = &mut s.dst as *mut libc::sockaddr_in as *mut libc::c_void;
        msgs[k].msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        msgs[k].msg_hdr.msg_iov = &mut iov[k];
        msgs[k].msg_hdr.msg_iovlen = 1;
    }
    let mut done = 0usize;
    let mut tries = 0;
    while done < n && tries < 4 * SEND_BATCH {
        tries += 1;
        let r = unsafe {
            libc::sendmmsg(fd, msgs.as_mut_ptr().add(done), (n - done) as u32, 0)
        };
        if r < 0 {
            // The message at `done` failed: count it and go on with the rest.
            st.errors += 1;
            done += 1;
            continue;
        }
        for k in done..done + r as usize {
            st.sent += 1;
            if measured {
                let s = &streams[batch.idx[k]];
                let i = (s.ssrc & 0x0fff_ffff) as usize;
                if s.on_b {
                    st.sent_measured_b[i] += 1;
                } else {
                    st.sent_measured_a[i] += 1;
                }
            }
        }
        done += r as usize;
    }
    batch.idx.clear();
}

fn sender(
    fa: RawFd,
    fb: RawFd,
    mut streams: Vec<Stream>,
    na: usize,
    nb: usize,
    args: &Args,
) -> SendStats {
    let mut st = SendStats {
        sent_measured_a: vec![0; na],
        sent_measured_b: vec![0; nb],
        lag_hist_us: vec![0; 10_001],
        ..Default::default()
    };
    let total = args.warmup + args.measure;
    let s_count = streams.len();
    let period = args.ptime.as_nanos() as u64;
    let mut out = io::stdout();
    if s_count == 0 {
        let _ = writeln!(out, "MEASURE");
        let _ = writeln!(out, "END");
        return st;
    }
    let phase: Vec<u64> = (0..s_count as u64).map(|i| i * period / s_count as u64).collect();
    let mut batches = [
        Batch { bufs: vec![[0xffu8; PKT]; SEND_BATCH], idx: Vec::with_capacity(SEND_BATCH) },
        Batch { bufs: vec![[0xffu8; PKT]; SEND_BATCH], idx: Vec::with_capacity(SEND_BATCH) },
    ];
    let fds = [fa, fb];
    let warm_ns = args.warmup.as_nanos() as u64;
    let total_ns = total.as_nanos() as u64;
    let mut announced = false;
    let start = Instant::now();
    let (mut k, mut idx) = (0u64, 0usize);
    loop {
        let now = start.elapsed().as_nanos() as u64;
        let measured = now >= warm_ns;
        if measured && !announced {
            announced = true;
            let _ = writeln!(out, "MEASURE");
            let _ = out.flush();
        }
        let mut done = false;
        loop {
            let sched = k * period + phase[idx];
            if sched >= total_ns {
                done = true;
                break;
            }
            if sched > now {
                break;
            }
            let lag_us = ((now - sched) / 100_000).min(10_000) as usize;
            st.lag_hist_us[lag_us] += 1;
            let side = streams[idx].on_b as usize;
            batches[side].idx.push(idx);
            if batches[side].idx.len() == SEND_BATCH {
                flush(fds[side], &mut batches[side], &mut streams, measured, &mut st);
            }
            idx += 1;
            if idx == s_count {
                idx = 0;
                k += 1;
            }
        }
        for side in 0..2 {
            flush(fds[side], &mut batches[side], &mut streams, measured, &mut st);
        }
        if done {
            break;
        }
        let next = k * period + phase[idx];
        let now = start.elapsed().as_nanos() as u64;
        if next > now {
            thread::sleep(Duration::from_nanos((next - now).min(1_000_000)));
        }
    }
    let _ = writeln!(out, "END");
    let _ = out.flush();
    st
}

#[derive(Clone, Copy, Default)]
struct StreamRx {
    count: u64,
    jitter_ns: f64,
    last_transit: i64,
    all: u64,
}

struct RecvStats {
    streams: Vec<StreamRx>,
    hist: Vec<u64>, // transit, 1 µs buckets
    negative: u64,
    foreign: u64,
    no_ts: u64,
    overflow: u32,
    packets: u64,
}

fn receiver(fd: RawFd, base: u32, n: usize, stop: Arc<AtomicBool>) -> RecvStats {
    let mut st = RecvStats {
        streams: vec![StreamRx::default(); n],
        hist: vec![0; HIST_US + 1],
        negative: 0,
        foreign: 0,
        no_ts: 0,
        overflow: 0,
        packets: 0,
    };
    let mut bufs = vec![[0u8; 2048]; RECV_BATCH];
    let mut cbufs = vec![[0u64; 16]; RECV_BATCH]; // 128 bytes, 8-aligned
    let mut iov: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec { iov_base: b.as_mut_ptr() as *mut libc::c_void, iov_len: 2048 })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = (0..RECV_BATCH).map(|_| unsafe { mem::zeroed() }).collect();
    // Hard bound: the caller sets `stop`; the socket's 100 ms read timeout lets us see it.
    while !stop.load(Ordering::Relaxed) {
        for k in 0..RECV_BATCH {
            let h = &mut msgs[k].msg_hdr;
            h.msg_name = std::ptr::null_mut();
            h.msg_namelen = 0;
            h.msg_iov = &mut iov[k];
            h.msg_iovlen = 1;
            h.msg_control = cbufs[k].as_mut_ptr() as *mut libc::c_void;
            h.msg_controllen = 128;
            h.msg_flags = 0;
            msgs[k].msg_len = 0;
        }
        let r = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                RECV_BATCH as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if r <= 0 {
            // Drained (EAGAIN): sleep instead of blocking per packet. Receive times come from
            // the kernel's timestamps, so reading late costs no accuracy, and draining a
            // millisecond's worth of packets per call keeps the generator's CPU low.
            thread::sleep(Duration::from_micros(POLL_US));
            continue;
        }
        let fallback = realtime_ns();
        for k in 0..r as usize {
            st.packets += 1;
            let len = msgs[k].msg_len as usize;
            let mut rx: Option<u64> = None;
            unsafe {
                let h = &msgs[k].msg_hdr;
                let mut c = libc::CMSG_FIRSTHDR(h);
                while !c.is_null() {
                    if (*c).cmsg_level == libc::SOL_SOCKET {
                        if (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                            let ts = std::ptr::read_unaligned(
                                libc::CMSG_DATA(c) as *const libc::timespec,
                            );
                            rx = Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
                        } else if (*c).cmsg_type == libc::SO_RXQ_OVFL {
                            let v = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const u32);
                            st.overflow = st.overflow.max(v);
                        }
                    }
                    c = libc::CMSG_NXTHDR(h, c);
                }
            }
            let rx = rx.unwrap_or_else(|| {
                st.no_ts += 1;
                fallback
            });
            let b = &bufs[k];
            if len < 21 || b[0] >> 6 != 2 {
                st.foreign += 1;
                continue;
            }
            let ssrc = u32::from_be_bytes([b[8], b[9], b[10], b[11]]);
            let i = ssrc.wrapping_sub(base) as usize;
            if ssrc & 0xf000_0000 != base || i >= n {
                st.foreign += 1;
                continue;
            }
            let s = &mut st.streams[i];
            s.all += 1;
            if b[20] != 1 {
                continue;
            }
            let tx = u64::from_be_bytes([b[12], b[13], b[14], b[15], b[16], b[17], b[18], b[19]]);
            let transit = rx as i64 - tx as i64;
            if transit < 0 {
                st.negative += 1;
            }
            let us = (transit.max(0) / 1000) as usize;
            st.hist[us.min(HIST_US)] += 1;
            if s.count > 0 {
                let d = (transit - s.last_transit).abs() as f64;
                s.jitter_ns += (d - s.jitter_ns) / 16.0;
            }
            s.last_transit = transit;
            s.count += 1;
        }
    }
    st
}

fn percentile(hist: &[u64], total: u64, q: f64) -> usize {
    if total == 0 {
        return 0;
    }
    let want = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut acc = 0;
    for (i, &c) in hist.iter().enumerate() {
        acc += c;
        if acc >= want {
            return i;
        }
    }
    hist.len() - 1
}

fn main() {
    let args = parse_args();
    let sa = open_socket(args.a_bind);
    let sb = open_socket(args.b_bind);
    let (na, nb) = (args.a_targets.len(), args.b_targets.len());
    let mut streams = Vec::with_capacity(na + nb);
    // Interleave A and B streams so both directions are spread over the period alike.
    for i in 0..na.max(nb) {
        if i < na {
            streams.push(Stream {
                on_b: false,
                dst: sockaddr(&args.a_targets[i]),
                ssrc: SSRC_A + i as u32,
                seq: (i as u16).wrapping_mul(7919),
                ts: (i as u32).wrapping_mul(104_729),
            });
        }
        if i < nb {
            streams.push(Stream {
                on_b: true,
                dst: sockaddr(&args.b_targets[i]),
                ssrc: SSRC_B + i as u32,
                seq: (i as u16).wrapping_mul(7907),
                ts: (i as u32).wrapping_mul(104_723),
            });
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    // Socket B receives what phone A sent (SSRC_A streams) and vice versa.
    let rb = {
        let (fd, stop) = (sb.as_raw_fd(), stop.clone());
        thread::spawn(move || receiver(fd, SSRC_A, na, stop))
    };
    let ra = {
        let (fd, stop) = (sa.as_raw_fd(), stop.clone());
        thread::spawn(move || receiver(fd, SSRC_B, nb, stop))
    };
    let t0 = Instant::now();
    let ss = sender(sa.as_raw_fd(), sb.as_raw_fd(), streams, na, nb, &args);
    let send_secs = t0.elapsed().as_secs_f64();
    thread::sleep(Duration::from_millis(500)); // drain what is in flight
    stop.store(true, Ordering::Relaxed);
    let rb = rb.join().unwrap_or_else(|_| die("receiver B panicked"));
    let ra = ra.join().unwrap_or_else(|_| die("receiver A panicked"));

    // Merge.
    let mut hist = vec![0u64; HIST_US + 1];
    for (i, h) in hist.iter_mut().enumerate() {
        *h = ra.hist[i] + rb.hist[i];
    }
    let sent_measured: u64 =
        ss.sent_measured_a.iter().sum::<u64>() + ss.sent_measured_b.iter().sum::<u64>();
    let recv_measured: u64 = hist.iter().sum();
    let mut jit: Vec<f64> = Vec::new();
    let mut silent = 0u64; // streams of which nothing measured arrived
    let mut lossy = 0u64; // streams that lost at least one measured packet
    for (sent, rx) in [(&ss.sent_measured_a, &rb), (&ss.sent_measured_b, &ra)] {
        for (i, s) in rx.streams.iter().enumerate() {
            if sent[i] > 0 && s.count == 0 {
                silent += 1;
            }
            if s.count < sent[i] {
                lossy += 1;
            }
            if s.count > 1 {
                jit.push(s.jitter_ns / 1000.0);
            }
        }
    }
    jit.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let jmean = if jit.is_empty() { 0.0 } else { jit.iter().sum::<f64>() / jit.len() as f64 };
    let jp = |q: f64| -> f64 {
        if jit.is_empty() {
            0.0
        } else {
            jit[((jit.len() as f64 * q).ceil() as usize).clamp(1, jit.len()) - 1]
        }
    };
    let lag_total: u64 = ss.lag_hist_us.iter().sum();
    let lost = sent_measured.saturating_sub(recv_measured);
    let max_transit = hist.iter().rposition(|&c| c > 0).unwrap_or(0);
    println!(
        concat!(
            "{{\"streams\":{},\"calls\":{},\"send_secs\":{:.3},\"sent\":{},\"send_errors\":{},",
            "\"sent_measured\":{},\"recv_measured\":{},\"lost\":{},\"loss_pct\":{:.4},",
            "\"silent_streams\":{},\"lossy_streams\":{},",
            "\"jitter_mean_us\":{:.1},\"jitter_p50_us\":{:.1},\"jitter_p99_us\":{:.1},\"jitter_max_us\":{:.1},",
            "\"transit_p50_us\":{},\"transit_p99_us\":{},\"transit_p999_us\":{},\"transit_max_us\":{},",
            "\"sender_lag_p99_us\":{},\"sender_lag_max_us\":{},",
            "\"gen_rx_overflow\":{},\"foreign\":{},\"no_kernel_ts\":{},\"negative_transit\":{}}}"
        ),
        na + nb,
        na.max(nb),
        send_secs,
        ss.sent,
        ss.errors,
        sent_measured,
        recv_measured,
        lost,
        if sent_measured > 0 { 100.0 * lost as f64 / sent_measured as f64 } else { 0.0 },
        silent,
        lossy,
        jmean,
        jp(0.5),
        jp(0.99),
        jp(1.0),
        percentile(&hist, recv_measured, 0.5),
        percentile(&hist, recv_measured, 0.99),
        percentile(&hist, recv_measured, 0.999),
        max_transit,
        percentile(&ss.lag_hist_us, lag_total, 0.99) * 100,
        ss.lag_hist_us.iter().rposition(|&c| c > 0).unwrap_or(0) * 100,
        ra.overflow as u64 + rb.overflow as u64,
        ra.foreign + rb.foreign,
        ra.no_ts + rb.no_ts,
        ra.negative + rb.negative,
    );
}
