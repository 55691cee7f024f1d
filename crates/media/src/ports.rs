//! RTP port pool: even RTP ports (RTCP = port + 1) from a configured range.
//!
//! [`PortPool::allocate`] binds both UDP sockets itself, so a port held by another program is
//! simply skipped. A cursor walks the range round-robin, so a port released a moment ago is the
//! last candidate to be handed out again (late packets of an old call do not reach a new one);
//! it starts at a random slot and skips a random 0-63 slots before each allocation, so the next
//! call's port cannot be told from the last one's (an outsider spraying a guessed port during
//! call set-up; the relay's latching rules are the other half of that defence).
//! The reservation lives in the returned [`RtpSocketPair`]: dropping it closes both sockets and
//! returns the port. The pool's lock is only taken on allocate/release, never per packet.

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use tokio::io::unix::{AsyncFd, AsyncFdReadyGuard};
use tokio::io::Interest;

use crate::MediaError;

#[derive(Debug)]
struct PoolState {
    /// Index (into the list of even ports) of the next candidate.
    cursor: usize,
    in_use: HashSet<u16>,
    /// Ports released most recently (oldest first): handed out again only when nothing else
    /// is free, since the random skips may bring the cursor back to them early.
    recent: std::collections::VecDeque<u16>,
}

/// A pool of RTP/RTCP port pairs on one IP address.
#[derive(Debug)]
pub struct PortPool {
    bind_ip: IpAddr,
    /// First even port of the range.
    first: u16,
    /// Number of pairs (even port p with p + 1 <= max).
    slots: usize,
    state: Mutex<PoolState>,
}

impl PortPool {
    /// A pool over the even ports `p` with `min <= p` and `p + 1 <= max`.
    pub fn new(bind_ip: IpAddr, min: u16, max: u16) -> Result<Arc<Self>, MediaError> {
        let lowest = min.max(2);
        let first = lowest
            .checked_add(lowest % 2)
            .ok_or(MediaError::InvalidRange { min, max })?;
        if first >= max {
            return Err(MediaError::InvalidRange { min, max });
        }
        let slots = ((max - first - 1) / 2 + 1) as usize;
        let cursor = rand::random::<usize>() % slots;
        Ok(Arc::new(PortPool {
            bind_ip,
            first,
            slots,
            state: Mutex::new(PoolState {
                cursor,
                in_use: HashSet::new(),
                recent: std::collections::VecDeque::new(),
            }),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        // The state stays consistent even if a holder panicked: recover it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn bind_ip(&self) -> IpAddr {
        self.bind_ip
    }

    /// Number of pairs currently handed out.
    pub fn in_use(&self) -> usize {
        self.lock().in_use.len()
    }

    /// Number of pairs in the range.
    pub fn capacity(&self) -> usize {
        self.slots
    }

    /// Allocates the next free pair, binding both (non-blocking) sockets. They join an event
    /// loop only when a bridge starts on them, on whichever runtime runs that bridge (the relay
    /// threads, see [`crate::relay::start_relay_threads`]). `Exhausted` when every pair is in
    /// use or taken by other programs.
    pub fn allocate(self: &Arc<Self>) -> Result<RtpSocketPair, MediaError> {
        let mut st = self.lock();
        let skip = rand::random::<usize>() % self.slots.clamp(1, 64);
        st.cursor = (st.cursor + skip) % self.slots;
        // Two passes: the first leaves the recently released ports alone.
        for n in 0..2 * self.slots {
            let idx = st.cursor;
            st.cursor = (st.cursor + 1) % self.slots;
            let port = self.first + 2 * idx as u16;
            if st.in_use.contains(&port) || (n < self.slots && st.recent.contains(&port)) {
                continue;
            }
            match self.bind_pair(port) {
                Ok((rtp, rtcp)) => {
                    st.in_use.insert(port);
                    st.recent.retain(|p| *p != port);
                    drop(st);
                    let local_rtp = SocketAddr::new(self.bind_ip, port);
                    tracing::trace!(%local_rtp, "rtp port allocated");
                    return Ok(RtpSocketPair {
                        rtp,
                        rtcp,
                        local_rtp,
                        _lease: PortLease {
                            pool: Arc::clone(self),
                            port,
                        },
                    });
                }
                Err(e) if is_taken(&e) => {
                    tracing::debug!(port, error = %e, "rtp port taken by another program, skipping");
                }
                Err(e) => {
                    return Err(MediaError::Bind {
                        addr: SocketAddr::new(self.bind_ip, port),
                        source: e,
                    })
                }
            }
        }
        tracing::warn!(capacity = self.slots, "rtp port range exhausted");
        Err(MediaError::Exhausted)
    }

    fn bind_pair(&self, port: u16) -> io::Result<(std::net::UdpSocket, std::net::UdpSocket)> {
        let rtp = bind_udp(SocketAddr::new(self.bind_ip, port))?;
        let rtcp = bind_udp(SocketAddr::new(self.bind_ip, port + 1))?;
        Ok((rtp, rtcp))
    }

    fn release(&self, port: u16) {
        let mut st = self.lock();
        st.in_use.remove(&port);
        let keep = self.slots.saturating_sub(1).clamp(1, 64);
        while st.recent.len() >= keep {
            st.recent.pop_front();
        }
        st.recent.push_back(port);
        drop(st);
        tracing::trace!(port, "rtp port released");
    }
}

fn bind_udp(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let s = std::net::UdpSocket::bind(addr)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

fn is_taken(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::AddrInUse | io::ErrorKind::PermissionDenied
    )
}

/// Returns the port to the pool on drop (after the sockets, which are declared before it).
#[derive(Debug)]
struct PortLease {
    pool: Arc<PortPool>,
    port: u16,
}

impl Drop for PortLease {
    fn drop(&mut self) {
        self.pool.release(self.port);
    }
}

/// The RTP and RTCP sockets of one leg (bound, non-blocking, not yet registered with an
/// event loop). Dropping it closes both and frees the port.
#[derive(Debug)]
pub struct RtpSocketPair {
    pub rtp: std::net::UdpSocket,
    pub rtcp: std::net::UdpSocket,
    /// The bound RTP address (RTCP is port + 1). Advertise the configured public IP with this port.
    pub local_rtp: SocketAddr,
    // Must stay the last field: fields drop in order, so the sockets are closed first.
    _lease: PortLease,
}

impl RtpSocketPair {
    pub fn local_rtcp(&self) -> SocketAddr {
        SocketAddr::new(self.local_rtp.ip(), self.local_rtp.port() + 1)
    }

    /// Registers both sockets with the event loop of the runtime this is called on.
    pub(crate) fn into_live(self) -> io::Result<LivePair> {
        Ok(LivePair {
            rtp: RelaySocket::new(self.rtp)?,
            rtcp: RelaySocket::new(self.rtcp)?,
            _lease: self._lease,
        })
    }
}

/// An [`RtpSocketPair`] registered with the relay's runtime.
#[derive(Debug)]
pub(crate) struct LivePair {
    pub(crate) rtp: RelaySocket,
    pub(crate) rtcp: RelaySocket,
    _lease: PortLease,
}

/// A relay socket, registered with the event loop for readability only. Sends are plain
/// non-blocking `sendto`s (a full socket buffer drops the packet, the relay never waits to
/// write), so the socket needs no write interest. With it (tokio's `UdpSocket` registers
/// both), the release of every sent datagram raised an `EPOLLOUT` event that the relay
/// thread's epoll had to queue and hand over: one event per relayed packet for nothing.
#[derive(Debug)]
pub(crate) struct RelaySocket(AsyncFd<std::net::UdpSocket>);

impl RelaySocket {
    /// Registers a non-blocking socket with the event loop of the current runtime.
    fn new(socket: std::net::UdpSocket) -> io::Result<RelaySocket> {
        // SAFETY: the `UdpSocket` owns its descriptor, which stays open and the same until
        // the `AsyncFd` (its only owner) drops it.
        let fd = unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }?;
        Ok(RelaySocket(fd))
    }

    /// Sends one datagram now or fails (`WouldBlock` when the socket buffer is full).
    #[inline]
    pub(crate) fn try_send_to(&self, buf: &[u8], dest: SocketAddr) -> io::Result<usize> {
        self.0.get_ref().send_to(buf, dest)
    }

    /// Ready to read (the guard clears the readiness when a read reports `WouldBlock`), or
    /// `Pending` with the task's waker registered.
    #[inline]
    pub(crate) fn poll_read_ready<'a>(
        &'a self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<AsyncFdReadyGuard<'a, std::net::UdpSocket>>> {
        self.0.poll_read_ready(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    /// A free even/odd pair region: ask the OS for a port and use a range around it.
    fn free_base() -> u16 {
        for _ in 0..50 {
            let s = std::net::UdpSocket::bind((LO, 0)).unwrap();
            let p = s.local_addr().unwrap().port() & !1;
            drop(s);
            if p > 1024
                && p < 60_000
                && (0..12).all(|i| std::net::UdpSocket::bind((LO, p + i)).is_ok())
            {
                return p;
            }
        }
        panic!("no free port region");
    }

    #[test]
    fn range_validation_and_capacity() {
        assert!(matches!(
            PortPool::new(LO, 1000, 1000),
            Err(MediaError::InvalidRange { .. })
        ));
        assert!(matches!(
            PortPool::new(LO, 1001, 1001),
            Err(MediaError::InvalidRange { .. })
        ));
        assert!(matches!(
            PortPool::new(LO, 65535, 65535),
            Err(MediaError::InvalidRange { .. })
        ));
        assert_eq!(PortPool::new(LO, 1000, 1001).unwrap().capacity(), 1);
        assert_eq!(PortPool::new(LO, 1001, 1004).unwrap().capacity(), 1); // 1002/1003
        assert_eq!(PortPool::new(LO, 1000, 1009).unwrap().capacity(), 5);
        assert_eq!(PortPool::new(LO, 20000, 29999).unwrap().capacity(), 5000);
        assert_eq!(PortPool::new(LO, 65534, 65535).unwrap().capacity(), 1);
    }

    #[tokio::test]
    async fn the_next_port_is_not_the_one_after_the_last() {
        let base = free_base();
        let pool = PortPool::new(LO, base, base + 399).unwrap(); // 200 pairs
        let mut held = Vec::new();
        let mut steps = std::collections::HashSet::new();
        let mut last = None;
        for _ in 0..40 {
            let p = pool.allocate().unwrap();
            let port = p.local_rtp.port();
            if let Some(prev) = last {
                steps.insert((i32::from(port) - i32::from(prev)).rem_euclid(400));
            }
            last = Some(port);
            held.push(p);
        }
        // Round-robin alone would step by 2 every time.
        assert!(steps.len() > 5, "steps between allocations: {steps:?}");
        let mut ports: Vec<u16> = held.iter().map(|p| p.local_rtp.port()).collect();
        ports.sort();
        ports.dedup();
        assert_eq!(ports.len(), 40, "no port handed out twice");
    }

    #[tokio::test]
    async fn allocates_even_pairs_round_robin_and_releases() {
        let base = free_base();
        let pool = PortPool::new(LO, base, base + 5).unwrap(); // 3 pairs
        assert_eq!(pool.capacity(), 3);
        let a = pool.allocate().unwrap();
        let b = pool.allocate().unwrap();
        let c = pool.allocate().unwrap();
        assert_eq!(pool.in_use(), 3);
        for p in [&a, &b, &c] {
            assert_eq!(p.local_rtp.port() % 2, 0);
            assert_eq!(p.rtp.local_addr().unwrap(), p.local_rtp);
            assert_eq!(p.rtcp.local_addr().unwrap(), p.local_rtcp());
            assert!(p.local_rtp.port() >= base && p.local_rtcp().port() <= base + 5);
        }
        assert!(matches!(pool.allocate(), Err(MediaError::Exhausted)));
        // Free b, then a: both come back (in some order) once the pool is full again.
        let (pb, pa) = (b.local_rtp.port(), a.local_rtp.port());
        drop(b);
        assert_eq!(pool.in_use(), 2);
        assert!(
            std::net::UdpSocket::bind((LO, pb)).is_ok(),
            "socket closed on drop"
        );
        drop(a);
        let x = pool.allocate().unwrap();
        let y = pool.allocate().unwrap();
        let mut got = vec![x.local_rtp.port(), y.local_rtp.port()];
        got.sort();
        let mut want = vec![pa, pb];
        want.sort();
        assert_eq!(got, want);
        drop((x, y, c));
        assert_eq!(pool.in_use(), 0);
    }

    #[tokio::test]
    async fn just_freed_port_is_not_reused_at_once() {
        let base = free_base();
        let pool = PortPool::new(LO, base, base + 7).unwrap(); // 4 pairs
        let a = pool.allocate().unwrap();
        let pa = a.local_rtp.port();
        drop(a);
        let next: Vec<u16> = (0..3)
            .map(|_| pool.allocate().unwrap())
            .map(|p| p.local_rtp.port())
            .collect();
        assert!(!next.contains(&pa), "{pa} reused within {next:?}");
        // It is not lost: holding all four pairs includes it.
        let all: Vec<_> = (0..4).map(|_| pool.allocate().unwrap()).collect();
        assert!(all.iter().any(|p| p.local_rtp.port() == pa));
    }

    #[tokio::test]
    async fn skips_ports_taken_by_others() {
        let base = free_base();
        let pool = PortPool::new(LO, base, base + 5).unwrap();
        // Another program holds the RTCP port of one pair and the RTP port of another.
        let x = std::net::UdpSocket::bind((LO, base + 1)).unwrap();
        let _y = std::net::UdpSocket::bind((LO, base + 2)).unwrap();
        let a = pool.allocate().unwrap();
        assert_eq!(a.local_rtp.port(), base + 4);
        assert!(matches!(pool.allocate(), Err(MediaError::Exhausted)));
        assert_eq!(pool.in_use(), 1);
        // The failed RTP bind of pair `base` did not leak a socket.
        drop(x);
        let b = pool.allocate().unwrap();
        assert_eq!(b.local_rtp.port(), base);
    }

    #[tokio::test]
    async fn other_bind_errors_are_reported() {
        // 192.0.2.1 (TEST-NET-1) is not a local address: EADDRNOTAVAIL.
        let pool = PortPool::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 40000, 40009).unwrap();
        assert!(matches!(pool.allocate(), Err(MediaError::Bind { .. })));
        assert_eq!(pool.in_use(), 0);
    }
}
