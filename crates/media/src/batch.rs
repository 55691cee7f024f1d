//! Batched, non-blocking datagram receive (`recvmmsg(2)`) for the relay's sockets.
//!
//! Why by hand: one `recvmmsg` returns every datagram queued on a socket (up to [`BATCH`]),
//! and a short count tells that the queue is empty, so a relay pass costs one receive syscall
//! per socket instead of one per datagram plus a final one that fails with `EAGAIN`. No crate
//! in the tree offers this on a plain UDP socket without also switching on GRO/ECN control
//! messages the relay does not want. The only `unsafe` of the media crate is here.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

/// Datagrams one call can return.
pub(crate) const BATCH: usize = 8;
/// Bytes per datagram slot (larger datagrams are truncated; RTP is far smaller).
pub(crate) const SLOT: usize = 2048;

/// Receive buffers for one batch: reused for every socket of a relay thread.
pub(crate) struct RecvBatch {
    bufs: Box<[[u8; SLOT]; BATCH]>,
    lens: [usize; BATCH],
    srcs: [Option<SocketAddr>; BATCH],
}

impl RecvBatch {
    pub(crate) fn new() -> RecvBatch {
        RecvBatch {
            bufs: Box::new([[0u8; SLOT]; BATCH]),
            lens: [0; BATCH],
            srcs: [None; BATCH],
        }
    }

    /// Receives what is queued on `fd` without blocking: `Ok(n)` datagrams (n >= 1, n < BATCH
    /// means the queue is now empty), or `WouldBlock` when nothing was queued.
    pub(crate) fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        // SAFETY: all-zero is a valid value for these plain C structs.
        let mut names: [libc::sockaddr_storage; BATCH] = unsafe { zeroed() };
        let mut iovs: [libc::iovec; BATCH] = unsafe { zeroed() };
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        for i in 0..BATCH {
            iovs[i].iov_base = self.bufs[i].as_mut_ptr().cast();
            iovs[i].iov_len = SLOT;
            hdrs[i].msg_hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
            hdrs[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
            hdrs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every header points at a live buffer of the stated length and at a
        // sockaddr_storage, all of which outlive the call; the kernel writes only within them.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for i in 0..n {
            self.lens[i] = (hdrs[i].msg_len as usize).min(SLOT);
            self.srcs[i] = socket_addr(&names[i], hdrs[i].msg_hdr.msg_namelen);
        }
        Ok(n)
    }

    /// Datagram `i` of the last [`Self::recv`] and its source (None: not an IP source).
    pub(crate) fn datagram(&mut self, i: usize) -> (&mut [u8], Option<SocketAddr>) {
        let len = self.lens[i];
        (&mut self.bufs[i][..len], self.srcs[i])
    }

    /// The first slot, as scratch space for building packets (players, DTMF).
    pub(crate) fn scratch(&mut self) -> &mut [u8; SLOT] {
        &mut self.bufs[0]
    }
}

fn socket_addr(name: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match libc::c_int::from(name.ss_family) {
        libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the kernel wrote a sockaddr_in (family AF_INET, length checked), and
            // sockaddr_storage is large and aligned enough for it.
            let a =
                unsafe { &*(name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let a =
                unsafe { &*(name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn receives_all_queued_datagrams_with_sources_then_would_block() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        let mut batch = RecvBatch::new();
        let e = batch.recv(rx.as_raw_fd()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        for i in 0..3u8 {
            tx.send_to(&[i; 172][..(170 + i as usize)], to).unwrap();
        }
        // Loopback delivers synchronously: all three are queued now.
        assert_eq!(batch.recv(rx.as_raw_fd()).unwrap(), 3);
        for i in 0..3u8 {
            let (data, src) = batch.datagram(i as usize);
            assert_eq!(data.len(), 170 + i as usize);
            assert!(data.iter().all(|b| *b == i));
            assert_eq!(src, Some(tx.local_addr().unwrap()));
        }
        assert_eq!(
            batch.recv(rx.as_raw_fd()).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }

    #[test]
    fn more_than_a_batch_takes_two_calls() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..(BATCH + 2) {
            tx.send_to(&[i as u8; 20], rx.local_addr().unwrap())
                .unwrap();
        }
        let mut batch = RecvBatch::new();
        assert_eq!(batch.recv(rx.as_raw_fd()).unwrap(), BATCH);
        assert_eq!(batch.datagram(BATCH - 1).0[0], (BATCH - 1) as u8);
        assert_eq!(batch.recv(rx.as_raw_fd()).unwrap(), 2);
        assert_eq!(batch.datagram(1).0[0], (BATCH + 1) as u8);
    }

    #[test]
    fn ipv6_sources() {
        let Ok(rx) = std::net::UdpSocket::bind("[::1]:0") else {
            eprintln!("no IPv6 loopback here: IPv6 source decoding not exercised");
            return;
        };
        let tx = std::net::UdpSocket::bind("[::1]:0").unwrap();
        tx.send_to(b"rtp", rx.local_addr().unwrap()).unwrap();
        let mut batch = RecvBatch::new();
        assert_eq!(batch.recv(rx.as_raw_fd()).unwrap(), 1);
        let (data, src) = batch.datagram(0);
        assert_eq!(data, b"rtp");
        assert_eq!(src, Some(tx.local_addr().unwrap()));
    }
}
