//! Socket options and system calls, in one place.
//!
//! Everything here goes through `socket2`, so this module holds no `unsafe`
//! today; when a splice engine arrives, its `splice(2)` and pipe calls (the only
//! `unsafe` the crate may need) belong here too.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::net::{TcpListener, TcpStream};

/// Accept backlog of service listeners.
pub(crate) const LISTEN_BACKLOG: i32 = 1024;

/// Binds a service listener at `addr` with `SO_REUSEADDR` and `SO_REUSEPORT`,
/// so that a second lb-proxy (or a new version) can bind beside one that drains.
/// IPv6 listeners are v6-only, so `[::]` and `0.0.0.0` can both be served.
pub(crate) fn bind_service_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    TcpListener::from_std(socket.into())
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
