//! Socket options and system calls, in one place.
//!
//! Sockets go through `socket2`; the `unsafe` calls are `setrlimit(2)` in
//! [`raise_nofile_limit`], the batched `recvmmsg(2)`/`sendmmsg(2)` of the UDP
//! relay (one system call per burst of datagrams), with `IP_PKTINFO` so that
//! a UDP frontend bound to a wildcard address learns where each datagram was
//! sent and replies from exactly there, and the `pipe2(2)`,
//! `fcntl(F_SETPIPE_SZ)` and `splice(2)` calls of the splice engine.

use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;
use std::time::Duration;

use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::io::Interest;
use tokio::net::{TcpStream, UdpSocket};

/// Accept backlog of service listeners.
pub(crate) const LISTEN_BACKLOG: i32 = 1024;

/// Binds a service listener at `addr` with `SO_REUSEADDR` and `SO_REUSEPORT`,
/// so that a second lb-proxy (or a new version) can bind beside one that drains.
/// IPv6 listeners are v6-only, so `[::]` and `0.0.0.0` can both be served.
/// With `freebind` (`vip_mode` "freebind" or "interface") it sets
/// `IP_FREEBIND`, so the address need not be local yet.
pub(crate) fn bind_service_listener(
    addr: SocketAddr,
    freebind: bool,
) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    set_freebind(&socket, addr, freebind)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// `IP_FREEBIND` / `IPV6_FREEBIND`: lets `bind(2)` take an address that is
/// not (yet) configured on this host.
fn set_freebind(socket: &Socket, addr: SocketAddr, freebind: bool) -> io::Result<()> {
    if !freebind {
        return Ok(());
    }
    if addr.is_ipv6() {
        socket.set_freebind_v6(true)
    } else {
        socket.set_freebind_v4(true)
    }
}

/// Closes `stream` with a reset instead of a FIN (`SO_LINGER` 0, then close):
/// how a reset from one leg is passed on to the other, and how a client that
/// cannot be served is told so at once.
pub(crate) fn reset(stream: TcpStream) {
    // If the option cannot be set, the socket still closes (with a FIN).
    let _ = SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}

/// Sets `TCP_NODELAY`: the proxy forwards whatever it reads at once, so Nagle's
/// algorithm would only add latency.
pub(crate) fn set_nodelay(stream: &TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, as HAProxy and nginx do
/// at start: every proxied connection holds two descriptors, and the default
/// soft limit (often 1024) would cap the proxy at a few hundred connections.
/// Returns the soft limit now in force.
pub(crate) fn raise_nofile_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit struct through a valid pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads one rlimit struct through a valid pointer.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
        limit = raised;
    }
    Ok(limit.rlim_cur)
}

/// Socket buffers asked for on UDP frontends: a burst of datagrams waits here
/// while the relay loop catches up, instead of being dropped by the kernel.
/// Linux caps the request at `net.core.rmem_max`/`wmem_max`.
pub(crate) const UDP_FRONTEND_BUFFER: usize = 4 << 20;

/// Socket buffers asked for on a flow's socket toward its endpoint.
pub(crate) const UDP_FLOW_BUFFER: usize = 1 << 20;

/// Binds a UDP frontend at `addr` with `SO_REUSEADDR` and `SO_REUSEPORT` (as
/// TCP listeners), large buffers, and, on a wildcard address, the socket
/// option that reports each datagram's destination address (`IP_PKTINFO` /
/// `IPV6_RECVPKTINFO`), so replies can leave from the address the client used.
pub(crate) fn bind_udp_frontend(
    addr: SocketAddr,
    freebind: bool,
) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    set_freebind(&socket, addr, freebind)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    set_buffers(&socket, UDP_FRONTEND_BUFFER);
    if addr.ip().is_unspecified() {
        set_pktinfo(&socket, addr.is_ipv6())?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Opens a flow's socket: bound to an ephemeral port and connected to
/// `endpoint`, so the kernel filters replies to that endpoint and reports its
/// ICMP errors (port unreachable) on this socket.
pub(crate) fn connect_udp_flow(endpoint: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(
        Domain::for_address(endpoint),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    set_buffers(&socket, UDP_FLOW_BUFFER);
    socket.set_nonblocking(true)?;
    let any: SocketAddr = match endpoint {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    socket.bind(&any.into())?;
    socket.connect(&endpoint.into())?;
    UdpSocket::from_std(socket.into())
}

fn set_buffers(socket: &Socket, size: usize) {
    // Best effort: a smaller buffer still works, only less burst-tolerant.
    if let Err(e) = socket.set_recv_buffer_size(size) {
        tracing::debug!(error = %e, "cannot set SO_RCVBUF");
    }
    if let Err(e) = socket.set_send_buffer_size(size) {
        tracing::debug!(error = %e, "cannot set SO_SNDBUF");
    }
}

fn set_pktinfo(socket: &Socket, v6: bool) -> io::Result<()> {
    let on: libc::c_int = 1;
    let (level, name) = if v6 {
        (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO)
    } else {
        (libc::IPPROTO_IP, libc::IP_PKTINFO)
    };
    // SAFETY: setsockopt reads one c_int through a valid pointer of the given
    // length, on a descriptor this socket owns.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            ptr::from_ref(&on).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

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
    // SAFETY: iovec and mmsghdr are plain data; all-zero is a valid empty value.
    let mut iovs: [libc::iovec; MAX_BATCH] = unsafe { mem::zeroed() };
    let mut hdrs: [libc::mmsghdr; MAX_BATCH] = unsafe { mem::zeroed() };
    let base = batch.buf.as_mut_ptr();
    for i in 0..slots {
        // SAFETY: slot i lies within `buf` (slots * slot_len bytes).
        iovs[i].iov_base = unsafe { base.add(i * batch.slot_len) }.cast();
        iovs[i].iov_len = batch.slot_len;
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
    // SAFETY: iovec and mmsghdr are plain data; all-zero is a valid empty value.
    let mut iovs: [libc::iovec; MAX_BATCH] = unsafe { mem::zeroed() };
    let mut hdrs: [libc::mmsghdr; MAX_BATCH] = unsafe { mem::zeroed() };
    for i in 0..n {
        let m = &msgs[i];
        iovs[i].iov_base = m.data.as_ptr().cast_mut().cast();
        iovs[i].iov_len = m.data.len();
        let msg = &mut hdrs[i].msg_hdr;
        if let Some(to) = m.to {
            let (raw, len) = raw_addr(to);
            msg.msg_name = names[i].write(raw) as *mut RawAddr as *mut libc::c_void;
            msg.msg_namelen = len;
        }
        msg.msg_iov = &mut iovs[i];
        msg.msg_iovlen = 1;
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

/// Shuts down the write side of `stream` (a FIN passed on as a FIN) through
/// a shared reference, as the splice engine holds both legs by `&`.
pub(crate) fn shutdown_write(stream: &TcpStream) -> io::Result<()> {
    match SockRef::from(stream).shutdown(std::net::Shutdown::Write) {
        // The peer is already gone: nothing left to tell it.
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
        other => other,
    }
}

/// A pipe for the splice engine: non-blocking, close-on-exec, asked to hold
/// `size` bytes (`F_SETPIPE_SZ`, best effort). Returns (read end, write end,
/// capacity in bytes).
#[cfg(target_os = "linux")]
pub(crate) fn pipe(size: usize) -> io::Result<(OwnedFd, OwnedFd, usize)> {
    let mut fds: [libc::c_int; 2] = [-1, -1];
    // SAFETY: pipe2 writes two descriptors into a valid array of two c_ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by
    // nobody else; OwnedFd now closes them.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let size = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
    // SAFETY: fcntl on a descriptor we own, with an integer argument.
    let mut cap = unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, size) };
    if cap < 0 {
        // Above fs.pipe-max-size (or out of pipe quota): keep the default size.
        // SAFETY: fcntl on a descriptor we own, no argument.
        cap = unsafe { libc::fcntl(w.as_raw_fd(), libc::F_GETPIPE_SZ) };
    }
    let cap = usize::try_from(cap).unwrap_or(0).max(4096);
    Ok((r, w, cap))
}

/// Moves up to `len` bytes from `from` to `to` inside the kernel, one of
/// them a pipe (`splice(2)` with `SPLICE_F_MOVE | SPLICE_F_NONBLOCK`): the
/// payload never enters user space. `WouldBlock` when the socket has nothing
/// to give or no room to take; `Ok(0)` at EOF.
#[cfg(target_os = "linux")]
pub(crate) fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: splice takes two descriptors and null offsets (both are streams
    // or pipes); no memory of ours is read or written.
    let n = unsafe {
        libc::splice(
            from,
            ptr::null_mut(),
            to,
            ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Sends one raw Ethernet `frame` (header included) on interface `ifindex`
/// through an `AF_PACKET` socket: how interface mode announces a
/// LoadBalancer address with a gratuitous ARP (the frame is built by
/// `vip::arp`). Needs `CAP_NET_RAW`.
pub(crate) fn send_ethernet_frame(ifindex: u32, dst_mac: [u8; 6], frame: &[u8]) -> io::Result<()> {
    let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    // SAFETY: plain system calls on a descriptor this function owns; the
    // address is a fully initialised `sockaddr_ll` passed with its size.
    unsafe {
        let fd = libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            i32::from(ethertype.to_be()),
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = OwnedFd::from_raw_fd(fd);
        let mut addr: libc::sockaddr_ll = mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = ethertype.to_be();
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&dst_mac);
        let sent = libc::sendto(
            fd.as_raw_fd(),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            ptr::addr_of!(addr).cast(),
            mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        );
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
