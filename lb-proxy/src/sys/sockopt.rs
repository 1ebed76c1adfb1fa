//! Socket options and the open-file limit: binding service listeners and
//! UDP frontends, a UDP flow's connected socket, `TCP_NODELAY`, resets and
//! half-closes. Everything here is safe: `socket2` for sockets, `nix` for
//! `IP_PKTINFO` and `setrlimit(2)`.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use nix::sys::resource::{getrlimit, setrlimit, Resource};
use nix::sys::socket::{setsockopt, sockopt};
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::net::{TcpStream, UdpSocket};

/// Accept backlog of service listeners.
pub(crate) const LISTEN_BACKLOG: i32 = 1024;

/// Socket buffers asked for on UDP frontends: a burst of datagrams waits here
/// while the relay loop catches up, instead of being dropped by the kernel.
/// Linux caps the request at `net.core.rmem_max`/`wmem_max`.
pub(crate) const UDP_FRONTEND_BUFFER: usize = 4 << 20;

/// Socket buffers asked for on a flow's socket toward its endpoint.
pub(crate) const UDP_FLOW_BUFFER: usize = 1 << 20;

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

/// Shuts down the write side of `stream` (a FIN passed on as a FIN) through
/// a shared reference, as the splice engine holds both legs by `&`.
pub(crate) fn shutdown_write(stream: &TcpStream) -> io::Result<()> {
    match SockRef::from(stream).shutdown(std::net::Shutdown::Write) {
        // The peer is already gone: nothing left to tell it.
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
        other => other,
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, as HAProxy and nginx do
/// at start: every proxied connection holds two descriptors, and the default
/// soft limit (often 1024) would cap the proxy at a few hundred connections.
/// Returns the soft limit now in force.
pub(crate) fn raise_nofile_limit() -> io::Result<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
        return Ok(hard);
    }
    Ok(soft)
}

/// The soft `RLIMIT_NOFILE` in force (read, never changed): what the data
/// plane's descriptor budget is cut from by default. `None` when unlimited.
pub(crate) fn nofile_limit() -> io::Result<Option<u64>> {
    let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE)?;
    Ok((soft != nix::sys::resource::RLIM_INFINITY).then_some(soft))
}

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
        if addr.is_ipv6() {
            setsockopt(&socket, sockopt::Ipv6RecvPacketInfo, &true)?;
        } else {
            setsockopt(&socket, sockopt::Ipv4PacketInfo, &true)?;
        }
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
