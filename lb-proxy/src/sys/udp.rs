//! Batched datagram I/O for the UDP relay: `recvmmsg(2)` and `sendmmsg(2)`
//! (one system call per burst of datagrams), with the `IP_PKTINFO` /
//! `IPV6_PKTINFO` control messages through which a UDP frontend bound to a
//! wildcard address learns where each datagram was sent and replies from
//! exactly there.
//!
//! These stay direct `libc` calls rather than `nix`'s `recvmmsg`/`sendmmsg`,
//! because this is the per-datagram path and `nix` would cost there:
//! - `nix::sys::socket::MultiHeaders`, the headers `nix` wants reused across
//!   calls, is not `Send` (it holds raw pointers), so a relay task could not
//!   keep one across an `.await` without an `unsafe impl Send` of our own;
//!   building one per call allocates three buffers per batch.
//! - Reused headers lose control messages: `nix` refills only the iovecs
//!   between calls, so the `msg_controllen` and `msg_namelen` the kernel
//!   shrank stay shrunk (nix-rust/nix#2813, open), and a wildcard frontend
//!   would stop learning destination addresses.
//! - `nix::sys::socket::sendmmsg` shares one set of control messages across
//!   the batch (nix-rust/nix#1954) and takes addresses as `SockaddrStorage`
//!   (128 bytes each, where [`RawAddr`] sets up 28 per datagram).
//!
//! What stays `unsafe` is the header setup, the two calls, and reading the
//! addresses and control messages the kernel wrote.

use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::ptr;

use tokio::io::Interest;
use tokio::net::UdpSocket;

/// One datagram received on a UDP frontend.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Received {
    /// Its length.
    pub(crate) len: usize,
    /// The client's address and port.
    pub(crate) from: SocketAddr,
    /// The address the client sent to, when the socket reports it (wildcard
    /// frontends).
    pub(crate) dst: Option<IpAddr>,
}

/// Room for one `in_pktinfo` or `in6_pktinfo` control message, aligned as
/// `cmsghdr` requires.
#[repr(C, align(8))]
struct ControlBuffer([u8; 64]);

/// Most datagrams one `recvmmsg(2)` or `sendmmsg(2)` call moves: enough that a
/// burst costs one system call per 16 datagrams, small enough that the
/// headers live on the stack and setting them up stays cheap next to the
/// call (on a light load a batch carries one datagram).
pub(crate) const MAX_BATCH: usize = 16;

/// Reusable buffers for [`try_recv_batch`]: `slots` receive buffers of
/// `slot_len` bytes each, with room for each datagram's source address and
/// `IP_PKTINFO`. Allocated once per receiving task and never zeroed again
/// (the kernel writes each slot before it is read); the pages of a slot are
/// only touched once a datagram that long arrives.
pub(crate) struct RecvBatch {
    buf: Vec<u8>,
    slot_len: usize,
    names: Vec<libc::sockaddr_storage>,
    controls: Vec<ControlBuffer>,
    /// (slot, datagram) of the last receive, in arrival order.
    received: Vec<(usize, Received)>,
}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch")
            .field("slots", &self.names.len())
            .field("slot_len", &self.slot_len)
            .field("received", &self.received.len())
            .finish()
    }
}

impl RecvBatch {
    /// Room for `slots` (1 to [`MAX_BATCH`]) datagrams of up to `slot_len`
    /// bytes. With `slot_len` above the largest UDP payload (65,527 bytes)
    /// no datagram can be cut.
    pub(crate) fn new(slots: usize, slot_len: usize) -> Self {
        let slots = slots.clamp(1, MAX_BATCH);
        let slot_len = slot_len.max(1);
        RecvBatch {
            // Zeroed by the allocator (fresh pages), not by a memset.
            buf: vec![0; slots * slot_len],
            slot_len,
            // SAFETY: sockaddr_storage is plain data; all-zero is valid.
            names: vec![unsafe { mem::zeroed() }; slots],
            controls: (0..slots).map(|_| ControlBuffer([0; 64])).collect(),
            received: Vec::with_capacity(slots),
        }
    }

    /// How many datagrams the last receive returned.
    pub(crate) fn len(&self) -> usize {
        self.received.len()
    }

    /// Whether the last receive returned nothing.
    pub(crate) fn is_empty(&self) -> bool {
        self.received.is_empty()
    }

    /// The `i`-th datagram of the last receive and where it came from.
    pub(crate) fn get(&self, i: usize) -> Option<(&[u8], Received)> {
        let &(slot, rx) = self.received.get(i)?;
        let start = slot * self.slot_len;
        Some((&self.buf[start..start + rx.len], rx))
    }
}

/// Receives up to a batch of datagrams with one `recvmmsg(2)`, without
/// waiting. Returns `Ok(true)` when the batch came back full (more may be
/// queued) and `Ok(false)` when the socket is drained: then tokio's readiness
/// is cleared in the same step, so the caller awaits `readable()` without the
/// extra receive that would only say `EAGAIN`. The readiness is sampled
/// before the call (tokio's `try_io`), so a datagram that arrives after it is
/// never missed. `Err` is an error on the socket (e.g. ICMP port unreachable
/// on a connected one); the batch is then empty.
pub(crate) fn try_recv_batch(socket: &UdpSocket, batch: &mut RecvBatch) -> io::Result<bool> {
    batch.received.clear();
    let slots = batch.names.len();
    let r = socket.try_io(Interest::READABLE, || {
        let n = recvmmsg_into(socket.as_raw_fd(), batch)?;
        if n < slots {
            // The queue was empty before the batch filled.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(())
    });
    match r {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
        Err(e) => Err(e),
    }
}

fn recvmmsg_into(fd: RawFd, batch: &mut RecvBatch) -> io::Result<usize> {
    let slots = batch.names.len();
    let mut iovs = [libc::iovec {
        iov_base: ptr::null_mut(),
        iov_len: 0,
    }; MAX_BATCH];
    // SAFETY: mmsghdr is plain data; all-zero is a valid empty value.
    let mut hdrs: [libc::mmsghdr; MAX_BATCH] = unsafe { mem::zeroed() };
    let chunks = batch.buf.chunks_exact_mut(batch.slot_len).take(slots);
    for (i, slot) in chunks.enumerate() {
        iovs[i].iov_base = slot.as_mut_ptr().cast();
        iovs[i].iov_len = slot.len();
        let msg = &mut hdrs[i].msg_hdr;
        msg.msg_name = ptr::from_mut(&mut batch.names[i]).cast();
        msg.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        msg.msg_iov = &mut iovs[i];
        msg.msg_iovlen = 1;
        msg.msg_control = batch.controls[i].0.as_mut_ptr().cast();
        msg.msg_controllen = batch.controls[i].0.len() as _;
    }
    // SAFETY: every header points to live buffers of the lengths given (the
    // batch's slots, names and control buffers, and the iovecs above), all of
    // which outlive the call.
    let n = unsafe {
        libc::recvmmsg(
            fd,
            hdrs.as_mut_ptr(),
            slots as libc::c_uint,
            libc::MSG_DONTWAIT,
            ptr::null_mut(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    for (i, hdr) in hdrs.iter().enumerate().take(n) {
        // A datagram from a non-IP address cannot be answered: skipped.
        let Some(from) = sockaddr_to_std(&batch.names[i], hdr.msg_hdr.msg_namelen) else {
            continue;
        };
        let rx = Received {
            len: (hdr.msg_len as usize).min(batch.slot_len),
            from,
            dst: pktinfo_dst(&hdr.msg_hdr),
        };
        batch.received.push((i, rx));
    }
    Ok(n)
}

/// The IPv4 or IPv6 address in `storage` (`len` bytes written by the kernel).
fn sockaddr_to_std(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET if len >= mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the kernel wrote a sockaddr_in (family AF_INET, long
            // enough) at the start of the storage, which is larger.
            let sin: libc::sockaddr_in =
                unsafe { ptr::read_unaligned(ptr::from_ref(storage).cast()) };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::from((ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 if len >= mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, a sockaddr_in6.
            let sin6: libc::sockaddr_in6 =
                unsafe { ptr::read_unaligned(ptr::from_ref(storage).cast()) };
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// The destination address of a received datagram, from its `IP_PKTINFO` /
/// `IPV6_PKTINFO` control message, if the socket asked for one.
fn pktinfo_dst(msg: &libc::msghdr) -> Option<IpAddr> {
    let mut dst = None;
    // SAFETY: the CMSG_* macros walk the control buffer the kernel filled,
    // within `msg_controllen`; each payload is read unaligned with its own type.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while !cmsg.is_null() {
            let (level, kind) = ((*cmsg).cmsg_level, (*cmsg).cmsg_type);
            if level == libc::IPPROTO_IP && kind == libc::IP_PKTINFO {
                let info: libc::in_pktinfo = ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                dst = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    info.ipi_addr.s_addr,
                ))));
            } else if level == libc::IPPROTO_IPV6 && kind == libc::IPV6_PKTINFO {
                let info: libc::in6_pktinfo = ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                dst = Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)));
            }
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
    }
    dst
}

/// One datagram for [`try_send_batch`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Outgoing<'a> {
    /// Bytes sent before the payload in the same datagram (a PROXY protocol
    /// v2 header); empty for none.
    pub(crate) prefix: &'a [u8],
    /// The payload.
    pub(crate) data: &'a [u8],
    /// The destination; `None` on a connected socket.
    pub(crate) to: Option<SocketAddr>,
    /// The source address (`IP_PKTINFO`), for a wildcard frontend replying
    /// from the address the client used.
    pub(crate) from: Option<IpAddr>,
}

/// Sends datagrams with one `sendmmsg(2)` per [`MAX_BATCH`], without waiting.
///
/// The system call is made directly rather than through tokio's readiness
/// (`try_send` refuses until the reactor has seen the socket writable, which
/// a new socket has not): a full buffer still gives `WouldBlock`, and the
/// datagram is dropped as the kernel would.
/// Returns how many of `msgs`, from the first, were sent; fewer than all means
/// the next one failed (the caller counts it and goes on after it). `Err` is
/// the first datagram's error.
pub(crate) fn try_send_batch(socket: &UdpSocket, msgs: &[Outgoing<'_>]) -> io::Result<usize> {
    let mut sent = 0;
    for chunk in msgs.chunks(MAX_BATCH) {
        match sendmmsg_chunk(socket.as_raw_fd(), chunk) {
            Ok(n) => {
                sent += n;
                if n < chunk.len() {
                    break;
                }
            }
            Err(e) if sent == 0 => return Err(e),
            Err(_) => break,
        }
    }
    Ok(sent)
}

/// A socket address as the kernel takes it, no larger than needed (28 bytes
/// rather than `sockaddr_storage`'s 128: a batch's addresses are set up on
/// every send).
#[repr(C)]
#[derive(Clone, Copy)]
union RawAddr {
    v4: libc::sockaddr_in,
    v6: libc::sockaddr_in6,
}

fn raw_addr(addr: SocketAddr) -> (RawAddr, libc::socklen_t) {
    match addr {
        SocketAddr::V4(a) => (
            RawAddr {
                v4: libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from(*a.ip()).to_be(),
                    },
                    sin_zero: [0; 8],
                },
            },
            mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        ),
        SocketAddr::V6(a) => (
            RawAddr {
                v6: libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: a.flowinfo(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: a.ip().octets(),
                    },
                    sin6_scope_id: a.scope_id(),
                },
            },
            mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
        ),
    }
}

fn sendmmsg_chunk(fd: RawFd, msgs: &[Outgoing<'_>]) -> io::Result<usize> {
    let n = msgs.len().min(MAX_BATCH);
    // Written before use, and only for the datagrams that need them.
    let mut names = [const { mem::MaybeUninit::<RawAddr>::uninit() }; MAX_BATCH];
    let mut controls = [const { mem::MaybeUninit::<ControlBuffer>::uninit() }; MAX_BATCH];
    let empty = libc::iovec {
        iov_base: ptr::null_mut(),
        iov_len: 0,
    };
    // Per datagram the prefix (when there is one) and the payload.
    let mut iovs = [[empty; 2]; MAX_BATCH];
    // SAFETY: mmsghdr is plain data; all-zero is a valid empty value.
    let mut hdrs: [libc::mmsghdr; MAX_BATCH] = unsafe { mem::zeroed() };
    for i in 0..n {
        let m = &msgs[i];
        let iov = |part: &[u8]| libc::iovec {
            iov_base: part.as_ptr().cast_mut().cast(),
            iov_len: part.len(),
        };
        let parts = if m.prefix.is_empty() {
            iovs[i][0] = iov(m.data);
            1
        } else {
            iovs[i] = [iov(m.prefix), iov(m.data)];
            2
        };
        let msg = &mut hdrs[i].msg_hdr;
        if let Some(to) = m.to {
            let (raw, len) = raw_addr(to);
            msg.msg_name = names[i].write(raw) as *mut RawAddr as *mut libc::c_void;
            msg.msg_namelen = len;
        }
        msg.msg_iov = iovs[i].as_mut_ptr();
        msg.msg_iovlen = parts;
        if let Some(src) = m.from {
            set_pktinfo_cmsg(msg, controls[i].write(ControlBuffer([0; 64])), src);
        }
    }
    // SAFETY: every header points to live buffers of the lengths given (the
    // payloads, addresses, control buffers and iovecs above), all of which
    // outlive the call; the kernel only reads them.
    let rc =
        unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), n as libc::c_uint, libc::MSG_DONTWAIT) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc as usize)
}

/// Puts one `IP_PKTINFO` / `IPV6_PKTINFO` control message into `msg` (using
/// `control` as its buffer) that makes the datagram leave from `src`.
fn set_pktinfo_cmsg(msg: &mut libc::msghdr, control: &mut ControlBuffer, src: IpAddr) {
    msg.msg_control = control.0.as_mut_ptr().cast();
    // SAFETY: the control buffer (64 bytes, 8-aligned) has room for one
    // cmsghdr with an in_pktinfo or in6_pktinfo payload; CMSG_FIRSTHDR is
    // non-null because msg_controllen is at least one header long.
    unsafe {
        let (level, kind, len) = match src {
            IpAddr::V4(_) => (
                libc::IPPROTO_IP,
                libc::IP_PKTINFO,
                mem::size_of::<libc::in_pktinfo>(),
            ),
            IpAddr::V6(_) => (
                libc::IPPROTO_IPV6,
                libc::IPV6_PKTINFO,
                mem::size_of::<libc::in6_pktinfo>(),
            ),
        };
        msg.msg_controllen = libc::CMSG_SPACE(len as u32) as _;
        let cmsg = libc::CMSG_FIRSTHDR(msg);
        (*cmsg).cmsg_level = level;
        (*cmsg).cmsg_type = kind;
        (*cmsg).cmsg_len = libc::CMSG_LEN(len as u32) as _;
        match src {
            IpAddr::V4(ip) => ptr::write_unaligned(
                libc::CMSG_DATA(cmsg).cast(),
                libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from(ip).to_be(),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                },
            ),
            IpAddr::V6(ip) => ptr::write_unaligned(
                libc::CMSG_DATA(cmsg).cast(),
                libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr {
                        s6_addr: ip.octets(),
                    },
                    ipi6_ifindex: 0,
                },
            ),
        }
    }
}
