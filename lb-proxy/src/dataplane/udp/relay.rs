//! The tokio shell around the flow table: one task per UDP frontend, which
//! receives the clients' datagrams and relays them to their flows' endpoints,
//! and also waits on every one of its flows' connected sockets and relays
//! their replies back through the frontend socket.
//!
//! One task for both directions, rather than a task per flow, because on a
//! DNS-like load the cost is per wake-up (epoll, waking a task, unparking a
//! runtime worker), not per byte: a reply no longer wakes a second task. Both
//! directions move datagrams in batches (`recvmmsg(2)`, and `sendmmsg(2)` for
//! the replies of a flow), and a batch that comes back short says the socket
//! is drained, so no receive is spent only to hear `EAGAIN`.
//!
//! The flow table is one `Mutex` for all UDP services (the bound is global);
//! it is held only for the decision, never across an await or a send.
//!
//! Each frontend task runs in a `udp` span (the frontend address), and each
//! flow's socket has a `flow` span (client, endpoint) entered for its events.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use futures_util::stream::{FuturesUnordered, StreamExt};
use lb_core::stats;
use lb_core::{FrontendKey, Protocol, ProxyProtocol};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tracing::{debug, debug_span, trace, warn, Span};

use super::flows::{DropReason, FlowKey, Verdict};
use super::table::{now, FlowIo, FlowSocket, Watch};
use crate::dataplane::descriptors::{self, Descriptors};
use crate::dataplane::forward::ConnBytes;
use crate::dataplane::proxy_header::{self, Addresses, Encoded, Transport};
use crate::dataplane::shared::Shared;
use crate::dataplane::throttle::once_a_second;
use crate::dataplane::turned_away;
use crate::sys;

/// Largest UDP payload over IPv4 (65,535 − 8 UDP − 20 IP header bytes). The
/// receive buffers are one byte longer, so nothing is ever cut silently.
pub const MAX_DATAGRAM: usize = 65_507;

/// Buffer length for receives: room for any datagram (IPv6 jumbograms aside).
const RECV_BUFFER: usize = 65_536;

/// Datagrams handled per wake-up before other tasks get a turn.
const BATCH: usize = 64;

/// Datagrams received per `recvmmsg(2)` (on the frontend or a flow's
/// socket): a burst costs one system call per this many, and a short batch
/// tells that the socket is drained without a further receive. One batch of
/// buffers per frontend task, reused for every receive; the slots' pages are
/// only touched by datagrams that long, so 16 × 64 KiB costs little memory
/// for DNS-sized traffic.
const RECV_SLOTS: usize = 16;

/// Waits until a flow's socket has a reply to read or an error to report
/// (the wait itself is the flow's [`Watch`]), then hands the flow back to its
/// frontend task, which drains the socket and arms the watch again; ends
/// with `None` once the flow's resources are dropped. It holds no strong
/// reference to the socket, so an evicted flow's socket closes at eviction.
struct FlowWatch {
    watched: Option<Watched>,
}

impl FlowWatch {
    fn new(watched: Watched) -> Self {
        FlowWatch {
            watched: Some(watched),
        }
    }
}

/// What the frontend task knows of one of its flows' sockets.
struct Watched {
    key: FlowKey,
    endpoint: SocketAddr,
    socket: Weak<FlowSocket>,
    watch: Arc<Watch>,
    stop: Pin<Box<WaitForCancellationFutureOwned>>,
    span: Span,
}

impl Future for FlowWatch {
    type Output = Option<Watched>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(w) = self.watched.as_mut() else {
            return Poll::Ready(None);
        };
        if w.stop.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        match w.watch.poll_ready(cx) {
            Poll::Ready(true) => Poll::Ready(self.watched.take()),
            // The flow is gone, or the reactor is (the runtime stops).
            Poll::Ready(false) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The flows a frontend task waits on.
type Watches = FuturesUnordered<FlowWatch>;

/// Serves a UDP frontend until `stop`: relays each client datagram to its
/// flow's endpoint and each endpoint reply back to the client, from the
/// address and port the client sent to. Per-datagram errors are logged and
/// skipped; the loop never ends because of one. The caller runs it in the
/// frontend's span.
///
/// Once `stops.handed_over` fires (a successor process reads the frontend
/// socket now), it stops reading clients, drops its registration in the
/// socket inventory, and only relays the replies of its open flows, ending
/// when the last of them is gone (idled out, or cut by the drain).
pub(crate) async fn serve_frontend(
    shared: Arc<Shared>,
    key: FrontendKey,
    socket: UdpSocket,
    registered: crate::handover::Registration,
    stops: crate::dataplane::accept::RelayStops,
) {
    let mut batch = sys::RecvBatch::new(RECV_SLOTS, RECV_BUFFER);
    let mut routes = Vec::with_capacity(RECV_SLOTS);
    let mut watches = Watches::new();
    let stop = stops.stop;
    let handed_over = stops.handed_over;
    let mut registered = Some(registered);
    loop {
        if registered.is_none() && watches.is_empty() {
            break;
        }
        // Not `biased`: under a flood on one side the other still gets turns.
        tokio::select! {
            () = stop.cancelled() => break,
            () = handed_over.cancelled(), if registered.is_some() => {
                registered = None;
                debug!(flows = watches.len(), "handed over: answering open flows only");
            }
            r = socket.readable(), if registered.is_some() => {
                if let Err(e) = r {
                    warn!(error = %e, "UDP frontend failed");
                    break;
                }
                from_clients(&shared, key, &socket, &mut batch, &mut routes, &mut watches);
            }
            Some(ready) = watches.next(), if !watches.is_empty() => {
                if let Some(watched) = ready {
                    if let Some(flow_socket) = watched.socket.upgrade() {
                        if from_endpoint(&shared, &socket, &mut batch, &watched, &flow_socket)
                            && watched.watch.arm(&flow_socket)
                        {
                            watches.push(FlowWatch::new(watched));
                        }
                    }
                }
            }
        }
    }
    shared.udp().close_frontend(key.addr);
}

/// Drains the frontend socket (at most [`BATCH`] datagrams, so replies get a
/// turn), relaying each datagram to its flow's endpoint: the datagrams of one
/// batch that go to the same flow leave with one `sendmmsg(2)`, in the order
/// they came.
fn from_clients(
    shared: &Arc<Shared>,
    key: FrontendKey,
    socket: &UdpSocket,
    batch: &mut sys::RecvBatch,
    routes: &mut Vec<(usize, Route)>,
    watches: &mut Watches,
) {
    for _ in 0..BATCH.div_ceil(RECV_SLOTS) {
        let more = match sys::try_recv_batch(socket, batch) {
            Ok(more) => more,
            Err(e) => {
                debug!(error = %e, "UDP receive failed");
                return;
            }
        };
        for i in 0..batch.len() {
            let Some((data, rx)) = batch.get(i) else {
                break;
            };
            let flow = FlowKey {
                frontend: key.addr,
                local: rx.dst.unwrap_or(key.addr.ip()),
                client: rx.from,
            };
            if let Some(route) = route_to_endpoint(shared, flow, data.len(), watches) {
                routes.push((i, route));
            }
        }
        send_routed(shared, batch, routes);
        if !more {
            return;
        }
    }
}

/// Where one client datagram of a batch goes: decided under the lock, sent
/// after it.
struct Route {
    key: FlowKey,
    endpoint: SocketAddr,
    socket: Arc<FlowSocket>,
    span: Span,
    port_stats: Arc<lb_core::stats::PortStats>,
    endpoint_stats: Arc<lb_core::stats::EndpointStats>,
    /// The flow's own bytes, when the access log records it.
    log_bytes: Option<Arc<ConnBytes>>,
    /// The PROXY protocol v2 header each of the flow's datagrams starts
    /// with, when its service asks for one.
    header: Option<Arc<Encoded>>,
}

/// One datagram from a client (`len` bytes): decides under the lock where it
/// goes, opening the flow's socket (and starting to watch it) if it has none.
/// `None`: dropped (and counted by the table).
fn route_to_endpoint(
    shared: &Arc<Shared>,
    key: FlowKey,
    len: usize,
    watches: &mut Watches,
) -> Option<Route> {
    let snapshot = shared.table().load();
    let mut table = shared.udp().lock();
    {
        let endpoint = match table.client_datagram(&snapshot, key, now()) {
            Verdict::Forward { endpoint, change } => {
                trace!(client = %key.client, %endpoint, ?change, "UDP datagram");
                endpoint
            }
            Verdict::Drop(reason) => {
                trace!(client = %key.client, len, ?reason, "UDP datagram dropped");
                if reason == DropReason::NoEndpoints {
                    if let Some(entry) = snapshot.frontend(key.frontend, Protocol::Udp) {
                        turned_away::warn(&entry.port, key.frontend, &"no endpoints");
                    }
                }
                return None;
            }
        };
        if table.get(&key)?.io.is_none() && shared.is_own_frontend(endpoint, Protocol::Udp) {
            table.self_loop(&key);
            self_loop(key, endpoint);
            return None;
        }
        let flow = table.get_mut(&key)?;
        if flow.io.is_none() {
            // One descriptor of the data plane's budget per flow socket, held
            // until the socket closes.
            let opened = match shared.descriptors().try_take(1) {
                Some(fd) => sys::connect_udp_flow(endpoint).map(|s| FlowSocket::new(s, fd)),
                None => Err(Descriptors::refused()),
            };
            match opened {
                Ok(socket) => {
                    let socket = Arc::new(socket);
                    let header = snapshot
                        .frontend(key.frontend, Protocol::Udp)
                        .and_then(|entry| entry.port.proxy_protocol())
                        .map(|version| Arc::new(flow_header(version, key)));
                    let watch = Arc::new(Watch::new(&socket));
                    let stop = CancellationToken::new();
                    let span = debug_span!("flow", client = %key.client, %endpoint);
                    watches.push(FlowWatch::new(Watched {
                        key,
                        endpoint,
                        socket: Arc::downgrade(&socket),
                        watch: watch.clone(),
                        stop: Box::pin(stop.clone().cancelled_owned()),
                        span: span.clone(),
                    }));
                    flow.io = Some(FlowIo {
                        socket,
                        watch,
                        _stop: stop.drop_guard(),
                        span,
                        header,
                    });
                }
                Err(e) => {
                    debug!(client = %key.client, %endpoint, error = %e, "cannot open a UDP flow socket; dropping");
                    descriptors::local_shortage("UDP datagram dropped (flow_limit)", &e);
                    table.socket_failed(&key);
                    return None;
                }
            }
        }
        let port_stats = flow.port_stats().clone();
        let endpoint_stats = flow.endpoint_stats().clone();
        let log_bytes = flow.log_bytes().cloned();
        let io = flow.io.as_mut()?;
        Some(Route {
            key,
            endpoint,
            socket: io.socket.clone(),
            span: io.span.clone(),
            port_stats,
            endpoint_stats,
            log_bytes,
            header: io.header.clone(),
        })
    }
}

/// The PROXY protocol v2 header of a flow's datagrams: the client, and the
/// address and port it sent to (for a wildcard frontend, the address the
/// datagram arrived at).
fn flow_header(version: ProxyProtocol, key: FlowKey) -> Encoded {
    proxy_header::encode(
        version,
        Transport::Datagram,
        &Addresses {
            source: key.client,
            destination: SocketAddr::new(key.local, key.frontend.port()),
        },
    )
}

/// Logs a datagram dropped because its flow's endpoint is lb itself, at
/// warn (a config mistake), at most once a second for the whole process.
fn self_loop(key: FlowKey, endpoint: SocketAddr) {
    static LAST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    if once_a_second(&LAST) {
        warn!(client = %key.client, frontend = %key.frontend, %endpoint,
            "UDP datagram dropped: the endpoint is this proxy's own frontend (self-loop)");
    }
}

/// Sends the routed datagrams of `batch` (slot, route) outside the lock,
/// then forgets the routes: per flow socket, its datagrams in arrival order
/// with one `sendmmsg(2)`. A datagram the kernel refuses is counted
/// (`send_error`) and makes the flow's next datagram fail over.
fn send_routed(shared: &Arc<Shared>, batch: &sys::RecvBatch, routes: &mut Vec<(usize, Route)>) {
    // Routes already sent, one bit each (a batch holds at most 16).
    let mut done: u32 = 0;
    let empty = sys::Outgoing {
        prefix: &[],
        data: &[],
        to: None,
        from: None,
    };
    let mut msgs = [empty; RECV_SLOTS];
    for first in 0..routes.len().min(RECV_SLOTS) {
        if done & (1 << first) != 0 {
            continue;
        }
        let route = &routes[first].1;
        let mut n = 0;
        for (j, (slot, other)) in routes.iter().enumerate().skip(first) {
            if done & (1 << j) != 0 || !Arc::ptr_eq(&other.socket, &route.socket) {
                continue;
            }
            done |= 1 << j;
            if let Some((data, _)) = batch.get(*slot) {
                msgs[n].prefix = route.header.as_deref().map_or(&[], Encoded::as_bytes);
                msgs[n].data = data;
                n += 1;
            }
        }
        let mut i = 0;
        while i < n {
            match sys::try_send_batch(&route.socket, &msgs[i..n]) {
                Ok(k) if k > 0 => {
                    let bytes: usize = msgs[i..i + k].iter().map(|m| m.data.len()).sum();
                    stats::add(&route.port_stats.udp_forwarded, k as u64);
                    stats::add(&route.endpoint_stats.bytes_rx, bytes as u64);
                    if let Some(log) = &route.log_bytes {
                        stats::add(&log.rx, bytes as u64);
                    }
                    i += k;
                }
                Ok(_) => i += 1,
                Err(e) => {
                    debug!(parent: &route.span, error = %e, "UDP send to endpoint failed");
                    shared.udp().lock().send_failed(&route.key, route.endpoint);
                    i += 1;
                }
            }
        }
    }
    routes.clear();
}

/// Drains a flow's socket (at most [`BATCH`] datagrams) and relays the
/// replies to the client through the frontend socket, one `sendmmsg(2)` per
/// batch. Returns whether to keep watching the flow: not once it is gone or
/// points at another endpoint (a late reply from the endpoint it left is
/// dropped). An error on the socket (ICMP port unreachable) is counted and
/// makes the next datagram fail over.
fn from_endpoint(
    shared: &Arc<Shared>,
    frontend: &UdpSocket,
    batch: &mut sys::RecvBatch,
    w: &Watched,
    socket: &UdpSocket,
) -> bool {
    // An error readiness (ICMP port unreachable, with no reply queued): take
    // the socket's pending error (`SO_ERROR`, which also clears it) and clear
    // the readiness, or the next wait would return at once, forever. The
    // closure runs only when tokio saw the error, so replies pay nothing.
    let mut pending = None;
    let _ = socket.try_io(Interest::ERROR, || {
        pending = socket.take_error().ok().flatten();
        Err::<(), _>(std::io::ErrorKind::WouldBlock.into())
    });
    if let Some(e) = pending {
        endpoint_failed(shared, w, &e);
    }
    for _ in 0..BATCH.div_ceil(RECV_SLOTS) {
        let more = match sys::try_recv_batch(socket, batch) {
            Ok(more) => more,
            Err(e) => {
                endpoint_failed(shared, w, &e);
                continue;
            }
        };
        if !batch.is_empty() {
            let (reply_from, port_stats, endpoint_stats, log_bytes) = {
                let mut table = shared.udp().lock();
                let Some(flow) = table.endpoint_datagram(&w.key, w.endpoint, now()) else {
                    return false;
                };
                (
                    // On a wildcard frontend, from the address the client
                    // sent to (part of the flow's key).
                    w.key.frontend.ip().is_unspecified().then_some(w.key.local),
                    flow.port_stats().clone(),
                    flow.endpoint_stats().clone(),
                    flow.log_bytes().cloned(),
                )
            };
            let empty = sys::Outgoing {
                prefix: &[],
                data: &[],
                to: None,
                from: None,
            };
            let mut msgs = [empty; RECV_SLOTS];
            let mut n = 0;
            for i in 0..batch.len().min(RECV_SLOTS) {
                if let Some((data, _)) = batch.get(i) {
                    msgs[n] = sys::Outgoing {
                        prefix: &[],
                        data,
                        to: Some(w.key.client),
                        from: reply_from,
                    };
                    n += 1;
                }
            }
            let (sent, bytes) = send_all(frontend, &msgs[..n], &w.span);
            stats::add(&port_stats.udp_replied, sent);
            stats::add(&endpoint_stats.bytes_tx, bytes);
            if let Some(log) = &log_bytes {
                stats::add(&log.tx, bytes);
            }
        }
        if !more {
            break;
        }
    }
    true
}

/// The flow's socket reported an error (ICMP port unreachable, found by
/// `SO_ERROR` or by a receive): counted, and the next datagram fails over.
fn endpoint_failed(shared: &Shared, w: &Watched, e: &std::io::Error) {
    debug!(parent: &w.span, error = %e, "UDP endpoint unreachable; the next datagram fails over");
    shared.udp().lock().send_failed(&w.key, w.endpoint);
}

/// Sends `msgs` from `socket` with as few `sendmmsg(2)` calls as the kernel
/// allows; a datagram it refuses (a full buffer, an unreachable client) is
/// logged and dropped, as the kernel would. Returns datagrams and bytes sent.
fn send_all(socket: &UdpSocket, msgs: &[sys::Outgoing<'_>], span: &Span) -> (u64, u64) {
    let (mut sent, mut bytes) = (0u64, 0u64);
    let mut i = 0;
    while i < msgs.len() {
        match sys::try_send_batch(socket, &msgs[i..]) {
            Ok(k) if k > 0 => {
                for m in &msgs[i..i + k] {
                    bytes += m.data.len() as u64;
                }
                sent += k as u64;
                i += k;
            }
            Ok(_) => i += 1,
            Err(e) => {
                debug!(parent: span, error = %e, "UDP reply to client failed");
                i += 1;
            }
        }
    }
    (sent, bytes)
}
