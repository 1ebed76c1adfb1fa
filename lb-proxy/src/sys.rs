//! Socket options and system calls, in one place.
//!
//! Sockets go through `socket2`; the one `unsafe` call today is
//! `setrlimit(2)` in [`raise_nofile_limit`]. When a splice engine arrives, its
//! `splice(2)` and pipe calls belong here too.

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
