//! The task of a bound frontend: an accept loop that spawns one connection
//! task per client (`tcp::serve`), or a UDP relay (`udp::serve_frontend`).
//! Each runs on the runtime it was spawned on (its socket is registered
//! there, so a connection's task runs there too).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use lb_core::FrontendKey;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, debug_span, warn, Instrument};

use crate::dataplane::shared::Shared;
use crate::dataplane::{tcp, udp};
use crate::handover::{Role, SocketKey, Sockets};

/// Pause after an accept error that is not about one connection (out of file
/// descriptors, memory), so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// When a UDP relay ends: `stop` ends it at once; `handed_over` (a
/// successor reads the frontend now) ends its reading of clients, and it
/// ends once its open flows are gone.
pub(crate) struct RelayStops {
    /// Stop now.
    pub(crate) stop: CancellationToken,
    /// Answer open flows only.
    pub(crate) handed_over: CancellationToken,
}

/// A UDP frontend's relay until `stops` end it, in the frontend's span,
/// registered in `sockets` while it reads the socket.
pub(crate) async fn serve_udp(
    shared: Arc<Shared>,
    key: FrontendKey,
    socket: std::net::UdpSocket,
    sockets: Sockets,
    stops: RelayStops,
) {
    let span = debug_span!("udp", frontend = %key.addr);
    // The frontend's socket, counted as long as it is served.
    let _fd = shared.descriptors().take_fixed(1);
    match tokio::net::UdpSocket::from_std(socket) {
        Ok(socket) => {
            // Dropped before the socket closes (declared after it).
            let registered = sockets.register(
                SocketKey::udp(Role::Service, key.addr),
                std::os::fd::AsFd::as_fd(&socket),
            );
            udp::serve_frontend(shared, key, socket, registered, stops)
                .instrument(span)
                .await
        }
        Err(e) => warn!(frontend = %key.addr, error = %e, "cannot register a UDP frontend"),
    }
}

/// An accept loop on one socket until `stop`, the socket registered in
/// `sockets` meanwhile.
pub(crate) async fn accept_loop(
    shared: Arc<Shared>,
    key: FrontendKey,
    socket: std::net::TcpListener,
    sockets: Sockets,
    stop: CancellationToken,
) {
    // The listener's socket, counted as long as it accepts.
    let _fd = shared.descriptors().take_fixed(1);
    let listener = match TcpListener::from_std(socket) {
        Ok(listener) => listener,
        Err(e) => {
            warn!(frontend = %key.addr, error = %e, "cannot register a listener");
            return;
        }
    };
    // Declared after the listener, so it is dropped first: a hand-over never
    // copies a descriptor that was closed.
    let _registered = sockets.register(
        SocketKey::tcp(Role::Service, key.addr),
        std::os::fd::AsFd::as_fd(&listener),
    );
    // Accepted sockets inherit TCP_NODELAY from the listener on Linux, which
    // saves the proxy one setsockopt(2) per connection (`tcp::serve`).
    if let Err(e) = socket2::SockRef::from(&listener).set_tcp_nodelay(true) {
        debug!(frontend = %key.addr, error = %e, "cannot set TCP_NODELAY on the listener");
    }
    loop {
        let accepted = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => match shared.descriptors().try_take(2) {
                Some(fds) => {
                    let connection = tcp::serve(shared.clone(), key, stream, peer, fds);
                    shared.tcp().tasks().spawn(connection);
                }
                None => tcp::refuse_for_descriptors(&shared, key, stream),
            },
            Err(e) if is_per_connection(&e) => {
                debug!(frontend = %key.addr, error = %e, "accept failed for one connection");
            }
            Err(e) => {
                warn!(frontend = %key.addr, error = %e, "accept failed; backing off");
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(ACCEPT_ERROR_BACKOFF) => {}
                }
            }
        }
    }
}

/// Accept errors that concern one connection only (it went away before being
/// accepted), as opposed to the process (file descriptors, memory).
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}
