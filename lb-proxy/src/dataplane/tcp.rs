//! One client connection, from accept to close: admission (`max_connections`,
//! endpoints left), dials with failover, then forwarding until the connection
//! ends, its endpoint's drain deadline passes or the data plane stops.
//!
//! Every open connection is one task, so what this task keeps across its
//! awaits is memory per connection, and what it does before forwarding is
//! CPU per connection: it borrows what it can from the snapshot entry it
//! holds anyway (no key clones, no `Arc` per counter), waits on one timer,
//! and makes no system call the kernel makes redundant (`TCP_NODELAY` is
//! inherited from the listener on Linux; the dial reads the connect result
//! from the readiness event, not `getsockopt(SO_ERROR)`).
//!
//! The task runs in one `conn` span (client, frontend, service), so its
//! events say only what is new; at the binary's default level (info) the
//! span is disabled and costs a check of a static.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lb_core::stats;
use lb_core::{FrontendEntry, FrontendKey, Protocol, ProxySettings, SourceAddress};
use socket2::{Domain, Socket, Type};
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, debug_span, info, Instrument};

use crate::dataplane::access::{self, Rejected};
use crate::dataplane::connections::OpenConnection;
use crate::dataplane::descriptors::{self, Held as HeldFds};
use crate::dataplane::forward::{self, Counters, Drain, Limits};
use crate::dataplane::greeting::{
    accept_header, proxy_header_for, send_header, transparent_bind, Greeting, TransparentFailed,
};
use crate::dataplane::shared::Shared;
use crate::dataplane::throttle::once_a_second;
use crate::dataplane::turned_away;
use crate::sys;

/// Decrements a counter when dropped, so every exit path gives back what an
/// admitted connection took.
struct Held<'a>(&'a AtomicU64);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn hold(counter: &AtomicU64) -> Held<'_> {
    counter.fetch_add(1, Ordering::Relaxed);
    Held(counter)
}

/// Serves one accepted client connection on `frontend`, in its own span,
/// holding `fds` (its two descriptors in the data plane's budget) until it
/// closes. The table is read here, before the task starts, so the span can
/// name the service without the task holding the span twice.
pub(crate) fn serve(
    shared: Arc<Shared>,
    frontend: FrontendKey,
    client: TcpStream,
    peer: SocketAddr,
    fds: HeldFds,
) -> impl Future<Output = ()> + Send {
    // Subscribe before loading the table: a snapshot published after the load
    // is then always seen by the drain watch.
    let generation = shared.generation().subscribe();
    let entry = shared
        .table()
        .load()
        .frontend(frontend.addr, Protocol::Tcp)
        .cloned();
    let span = match &entry {
        Some(entry) => debug_span!("conn", client = %peer, frontend = %frontend.addr,
            service = %entry.port.key()),
        None => debug_span!("conn", client = %peer, frontend = %frontend.addr),
    };
    serve_in_span(shared, frontend, client, peer, generation, entry, fds).instrument(span)
}

/// A client accepted while the data plane's descriptor budget is spent:
/// reset at once (no task, no dial), counted as accepted and as
/// `rejected{reason="local_resources"}`, and logged at most once a second,
/// so the descriptors left stay with the admin API, DNS and health checks.
pub(crate) fn refuse_for_descriptors(shared: &Shared, frontend: FrontendKey, client: TcpStream) {
    if let Some(entry) = shared.table().load().frontend(frontend.addr, Protocol::Tcp) {
        let port_stats = entry.port.stats();
        stats::add(&port_stats.accepted, 1);
        stats::add(&port_stats.rejected_local_resources, 1);
    }
    let budget = shared.descriptors().budget();
    descriptors::local_shortage(
        "client reset",
        &format_args!(
            "descriptor budget spent: {} in use of {} (limit {}, reserve {})",
            budget.in_use,
            budget.allowed().unwrap_or(u64::MAX),
            budget.limit.unwrap_or(u64::MAX),
            budget.reserve
        ),
    );
    sys::reset(client);
}

async fn serve_in_span(
    shared: Arc<Shared>,
    frontend: FrontendKey,
    client: TcpStream,
    peer: SocketAddr,
    generation: watch::Receiver<u64>,
    entry: Option<FrontendEntry>,
    fds: HeldFds,
) {
    // Given back on every exit path, after both sockets are closed.
    let _fds = fds;
    let tcp = shared.tcp();
    let open = tcp.open();
    let Some(entry) = entry else {
        debug!("frontend gone; resetting client");
        sys::reset(client);
        return;
    };
    let port_stats = entry.port.stats().clone();
    let settings = shared.settings().load();
    // The access log's clock: read only when the log is on.
    let accepted = settings.access_log.then(Instant::now);
    // `accept_proxy_protocol`: the client is the one the load balancer in
    // front names, for everything from here on; `original` is where that
    // client connected to (sent on in a PROXY header of our own).
    let (peer, original) = if entry.port.accepts_proxy_protocol() {
        match accept_header(&client, peer, &settings).await {
            Ok(Some(addresses)) => (addresses.source, Some(addresses.destination)),
            Ok(None) => (peer, None),
            Err(why) => {
                stats::add(&port_stats.rejected_proxy_protocol, 1);
                debug!(error = %why, "no valid PROXY header; resetting client");
                if let Some(accepted) = accepted {
                    log_rejected(&entry, frontend, peer, accepted, Rejected::ProxyProtocol);
                }
                sys::reset(client);
                return;
            }
        }
    } else {
        (peer, None)
    };
    let turn_away = |client: TcpStream, why: Rejected| {
        if let Some(accepted) = accepted {
            log_rejected(&entry, frontend, peer, accepted, why);
        }
        sys::reset(client);
    };
    if !entry.admits(peer.ip()) {
        // `load_balancer_source_ranges`: reset before any endpoint is chosen,
        // and not counted as an accepted connection.
        stats::add(&port_stats.rejected_source_range, 1);
        debug!("outside load_balancer_source_ranges; resetting client");
        turn_away(client, Rejected::SourceRange);
        return;
    }
    stats::add(&port_stats.accepted, 1);
    let _port_active = hold(&port_stats.active);
    let limit = u64::from(settings.max_connections);
    if limit > 0 && port_stats.active.load(Ordering::Relaxed) > limit {
        stats::add(&port_stats.rejected_limit, 1);
        debug!(limit, "over max_connections; resetting client");
        turn_away(client, Rejected::Limit);
        return;
    }
    stats::peak(&port_stats.peak_active, &port_stats.active);
    let Some(pick) = entry.pick(peer.ip(), now()) else {
        stats::add(&port_stats.rejected_no_endpoints, 1);
        debug!("no endpoint; resetting client");
        turned_away::warn(&entry.port, frontend.addr, &"no endpoints");
        turn_away(client, Rejected::NoEndpoints);
        return;
    };
    // Linux copies TCP_NODELAY from the listener (`listener::accept_on`).
    #[cfg(not(target_os = "linux"))]
    if let Err(e) = client.set_nodelay(true) {
        debug!(error = %e, "cannot set TCP_NODELAY");
    }

    // The PROXY header is the same for every endpoint a failover tries:
    // built once, boxed so that connections without one carry a pointer.
    let header = entry.port.proxy_protocol().map(|version| {
        let destination = original.unwrap_or(frontend.addr);
        Box::new(proxy_header_for(version, &client, peer, destination))
    });
    // `source_address = "client"`: dial from the client's address.
    let from = (entry
        .port
        .source_address()
        .unwrap_or(settings.source_address)
        == SourceAddress::Client)
        .then_some(peer.ip());
    let greeting = Greeting {
        header: header.as_deref(),
        from,
    };
    let dialed = tokio::select! {
        r = dial(&shared, &entry, pick.index, peer.ip(), &settings, greeting) => r,
        () = tcp.kill().cancelled() => {
            sys::reset(client);
            return;
        }
    };
    drop(header);
    let (upstream, index) = match dialed {
        Ok(ok) => ok,
        Err(e) => {
            let why = match e.last() {
                AttemptFailed::Local(inner) => {
                    stats::add(&port_stats.rejected_local_resources, 1);
                    // A failed transparent dial has said why at error level.
                    if !TransparentFailed::is(inner) {
                        descriptors::local_shortage("client reset", &e);
                    }
                    Rejected::LocalResources
                }
                AttemptFailed::SelfLoop(_) => {
                    stats::add(&port_stats.rejected_self_loop, 1);
                    self_loop(&e);
                    Rejected::SelfLoop
                }
                AttemptFailed::Endpoint(_) => {
                    debug!(error = %e, "resetting client");
                    turned_away::warn(&entry.port, frontend.addr, &e.tried());
                    Rejected::ConnectFailed
                }
            };
            turn_away(client, why);
            return;
        }
    };
    let endpoint = entry.port.endpoint(index);
    let endpoint_addr = endpoint.addr;
    let endpoint_stats = &*endpoint.stats;
    stats::add(&endpoint_stats.connections, 1);
    let _endpoint_active = hold(&endpoint_stats.active);
    stats::peak(&endpoint_stats.peak_active, &endpoint_stats.active);
    // A failover is the reason whenever the first pick's dial failed.
    let reason = if index == pick.index {
        pick.reason.as_str()
    } else {
        stats::add(&port_stats.failovers, 1);
        lb_core::PickReason::Failover.as_str()
    };
    let started = Instant::now();
    let registered = tcp.registry().insert(OpenConnection {
        id: 0,
        client: peer,
        frontend: frontend.addr,
        port: entry.port.clone(),
        endpoint: endpoint_addr,
        reason,
        started: std::time::SystemTime::now(),
        opened: started.into_std(),
        bytes: Default::default(),
    });
    let conn_bytes = registered.bytes();
    debug!(endpoint = %endpoint_addr, reason, "connected");

    let limits = Limits {
        idle_timeout: settings.tcp_idle_timeout,
        half_close_timeout: settings.half_close_timeout,
    };
    let mut drain = Drain {
        generation,
        table: shared.table(),
        key: entry.port.key(),
        endpoint: endpoint_addr,
        timeout: settings.drain_timeout,
        kill: tcp.kill(),
    };
    let counters = Counters {
        endpoint: endpoint_stats,
        conn: conn_bytes,
        spliced: tcp.spliced(),
        descriptors: shared.descriptors(),
    };
    let engine = settings.forward_engine;
    let outcome = forward::forward(engine, client, upstream, &limits, counters, &mut drain).await;
    port_stats.closed.count(outcome.cause());
    endpoint_stats.closed.count(outcome.cause());
    // One event per connection: the answer to "why did this connection go to
    // that backend, and how did it end" (and whether the peers saw a FIN or
    // a reset). A cut is this line and a counter, never a control-plane event.
    debug!(endpoint = %endpoint_addr, reason,
        bytes_rx = stats::read(&conn_bytes.rx), bytes_tx = stats::read(&conn_bytes.tx),
        duration_ms = started.elapsed().as_millis() as u64,
        cause = outcome.as_str(), ended = if outcome.cuts() { "reset" } else { "fin" },
        "connection closed");
    if let Some(accepted) = accepted {
        access::log(&access::Entry {
            protocol: Protocol::Tcp,
            client: peer,
            frontend: frontend.addr,
            service: entry.port.key(),
            endpoint: Some(endpoint_addr),
            reason: Some(reason),
            bytes_rx: stats::read(&conn_bytes.rx),
            bytes_tx: stats::read(&conn_bytes.tx),
            duration: accepted.elapsed(),
            cause: outcome.as_str(),
            rejected: None,
        });
    }
    drop(registered);
    drop(open);
}

/// The access log's line for a connection turned away before it reached
/// an endpoint (out of line: the connection future stays small).
#[inline(never)]
fn log_rejected(
    entry: &FrontendEntry,
    frontend: FrontendKey,
    peer: SocketAddr,
    accepted: Instant,
    why: Rejected,
) {
    access::log(&access::Entry {
        protocol: Protocol::Tcp,
        client: peer,
        frontend: frontend.addr,
        service: entry.port.key(),
        endpoint: None,
        reason: None,
        bytes_rx: 0,
        bytes_tx: 0,
        duration: accepted.elapsed(),
        cause: access::REJECTED,
        rejected: Some(why),
    });
}

/// Dials `first`, then on each failure the next endpoint by failover, one
/// attempt per entry of `connect_timeouts`. Only failures that are the
/// endpoint's count against it (`connect_errors`, outlier ejection); when
/// the proxy itself is short of a resource the remaining attempts would
/// fail alike, so the dial gives up at once. An endpoint that is one of the
/// proxy's own frontends is never dialed: its attempt fails at once, blamed
/// on no one, and the failover goes on.
async fn dial(
    shared: &Shared,
    entry: &FrontendEntry,
    first: usize,
    client: IpAddr,
    settings: &ProxySettings,
    greeting: Greeting<'_>,
) -> Result<(TcpStream, usize), DialFailed> {
    let default_timeouts;
    let timeouts: &[Duration] = if settings.connect_timeouts.is_empty() {
        default_timeouts = ProxySettings::default().connect_timeouts;
        &default_timeouts
    } else {
        &settings.connect_timeouts
    };
    let mut index = first;
    let mut attempts = 0;
    // An endpoint that is lb itself is never dialed, so skipping it costs no
    // entry of `connect_timeouts`; skips are bounded by the endpoint count.
    let mut skips = entry.port.endpoints().len();
    // Allocated only once a dial fails: the failure path.
    let mut tried = Vec::new();
    while let Some(timeout) = timeouts.get(attempts) {
        let endpoint = entry.port.endpoint(index);
        let failed = if shared.is_own_frontend(endpoint.addr, Protocol::Tcp) {
            skips = skips.saturating_sub(1);
            AttemptFailed::SelfLoop(endpoint.addr)
        } else {
            attempts += 1;
            let dial_start = Instant::now();
            let greeted = connect(endpoint.addr, greeting);
            match tokio::time::timeout(*timeout, greeted).await {
                Ok(Ok(stream)) => {
                    entry
                        .port
                        .stats()
                        .connect_duration
                        .record(dial_start.elapsed());
                    endpoint.health.record_success();
                    return Ok((stream, index));
                }
                Ok(Err(e)) => AttemptFailed::classify(e),
                Err(_) => AttemptFailed::Endpoint(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connect timed out after {timeout:?}"),
                )),
            }
        };
        debug!(endpoint = %endpoint.addr, attempts, error = %failed, "dial failed");
        let more = match &failed {
            AttemptFailed::Endpoint(_) => {
                stats::add(&endpoint.stats.connect_errors, 1);
                if let Some(length) = endpoint.health.record_failure(
                    now(),
                    std::time::SystemTime::now(),
                    settings.outlier_consecutive_failures,
                    settings.outlier_base_ejection,
                ) {
                    info!(service = %entry.port.key(), endpoint = %endpoint.addr,
                        ejection = ?length, "endpoint ejected after consecutive dial failures");
                    shared.ejections().tell(crate::dataplane::shared::Ejected {
                        port: entry.port.key().clone(),
                        endpoint: endpoint.addr,
                        length,
                    });
                }
                attempts < timeouts.len()
            }
            AttemptFailed::SelfLoop(_) => skips > 0,
            // The proxy is short of something: every other dial would fail alike.
            AttemptFailed::Local(_) => false,
        };
        let blamed = matches!(failed, AttemptFailed::Endpoint(_));
        tried.push((endpoint.addr, failed));
        if !more {
            break;
        }
        match entry.failover(index, client, now()) {
            Some(next) => {
                if blamed && next != index {
                    // This endpoint's dial failed and the connection moves
                    // on to another one.
                    stats::add(&endpoint.stats.failovers, 1);
                }
                index = next;
            }
            None => break,
        }
    }
    if tried.is_empty() {
        let none = AttemptFailed::Endpoint(io::Error::other("no dial attempted"));
        tried.push((entry.port.endpoint(first).addr, none));
    }
    Err(DialFailed {
        service: entry.port.key().to_string(),
        attempts,
        tried,
    })
}

/// Why one dial attempt gave no connection, which says who is to blame.
#[derive(Debug, thiserror::Error)]
enum AttemptFailed {
    /// The endpoint refused, reset or did not answer in time: counted on the
    /// endpoint and towards its ejection.
    #[error("{0}")]
    Endpoint(io::Error),
    /// The proxy is short of a local resource (`EMFILE`, `ENFILE`,
    /// `ENOBUFS`, `ENOMEM`, `EADDRNOTAVAIL`: no descriptor, buffer or local
    /// port): the proxy's fault, so no endpoint is blamed and the client is
    /// counted as `rejected{reason="local_resources"}`.
    #[error("local resources: {0}")]
    Local(io::Error),
    /// The endpoint is one of this proxy's own frontends: not dialed (the
    /// connection would come back to lb, which would dial again, until
    /// every descriptor is used), not blamed on the endpoint, and counted
    /// as `rejected{reason="self_loop"}` when it was the last one tried.
    #[error("{0} is one of this proxy's own frontends; not dialed, it would loop back into lb")]
    SelfLoop(SocketAddr),
}

impl AttemptFailed {
    /// Tells the proxy's own shortages from the endpoint's failures.
    fn classify(e: io::Error) -> AttemptFailed {
        if TransparentFailed::is(&e) {
            return AttemptFailed::Local(e);
        }
        match e.raw_os_error() {
            Some(
                libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EADDRNOTAVAIL,
            ) => AttemptFailed::Local(e),
            _ => AttemptFailed::Endpoint(e),
        }
    }
}

/// Every dial of a connection failed or timed out; the client is reset. One
/// connection's failure, so it is logged at debug and counted, never
/// returned to the data plane's owner.
#[derive(Debug, thiserror::Error)]
#[error("no endpoint of {service} answered after {attempts} dial(s); last error: {}", self.last())]
struct DialFailed {
    /// The service port (`namespace/name:port/TCP`).
    service: String,
    /// How many dials were made.
    attempts: usize,
    /// Each endpoint tried and why it gave no connection, in order (never
    /// empty).
    tried: Vec<(SocketAddr, AttemptFailed)>,
}

impl DialFailed {
    /// The last attempt's failure, which says who is to blame.
    fn last(&self) -> &AttemptFailed {
        // `dial` never returns an empty list; a self-loop stands in.
        static NONE: AttemptFailed = AttemptFailed::SelfLoop(SocketAddr::V4(
            std::net::SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0),
        ));
        self.tried.last().map_or(&NONE, |(_, e)| e)
    }

    /// Every endpoint tried with its error, as the turned-away warning
    /// names them (formatted only when the warning is logged).
    fn tried(&self) -> impl std::fmt::Display + '_ {
        Tried(&self.tried)
    }
}

/// `every dial failed: 127.0.0.1:9 Connection refused (os error 111); ...`
struct Tried<'a>(&'a [(SocketAddr, AttemptFailed)]);

impl std::fmt::Display for Tried<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("every dial failed:")?;
        for (i, (addr, e)) in self.0.iter().enumerate() {
            let sep = if i == 0 { " " } else { "; " };
            write!(f, "{sep}{addr} {e}")?;
        }
        Ok(())
    }
}

/// Connects to `addr` with `TCP_NODELAY` set (the proxy forwards whatever it
/// reads at once, so Nagle's algorithm would only add latency): `socket(2)`
/// non-blocking in one call, `connect(2)`, `setsockopt`, then one wait for
/// writability. A failed connect shows in that readiness event as an error
/// or hang-up, so `getsockopt(SO_ERROR)` runs only then, not on every dial
/// as in `TcpStream::connect`.
///
/// With a PROXY protocol `header`, the connection is not made until the
/// header is written: a failure to send it is the endpoint's, like a refused
/// dial, and the failover sends it again to the next endpoint.
async fn connect(addr: SocketAddr, greeting: Greeting<'_>) -> io::Result<TcpStream> {
    #[cfg(target_os = "linux")]
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking(),
        Some(socket2::Protocol::TCP),
    )?;
    // Elsewhere SOCK_NONBLOCK may not exist: one fcntl(2) more.
    #[cfg(not(target_os = "linux"))]
    let socket = {
        let socket = Socket::new(
            Domain::for_address(addr),
            Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        socket.set_nonblocking(true)?;
        socket
    };
    if let Some(from) = greeting.from {
        transparent_bind(&socket, from, addr)?;
    }
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    let stream = TcpStream::from_std(socket.into())?;
    sys::set_nodelay(&stream);
    let ready = stream.ready(Interest::WRITABLE).await?;
    if ready.is_error() || ready.is_write_closed() {
        return Err(stream
            .take_error()?
            .unwrap_or_else(|| io::ErrorKind::ConnectionRefused.into()));
    }
    if let Some(header) = greeting.header {
        send_header(&stream, header.as_bytes()).await?;
    }
    Ok(stream)
}

/// Logs a client reset because every endpoint left was lb itself, at warn
/// (a config mistake the operator must fix), at most once a second for the
/// whole process: every client of that service would log.
fn self_loop(e: &DialFailed) {
    static LAST: AtomicU64 = AtomicU64::new(0);
    if once_a_second(&LAST) {
        tracing::warn!(error = %e, "client reset: the endpoint is this proxy's own frontend (self-loop)");
    }
}

/// The time picks and ejections are judged by: tokio's clock, so tests that
/// pause time move ejections along with every other timer.
fn now() -> std::time::Instant {
    Instant::now().into_std()
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_core::{NodeSpec, Snapshot};

    #[test]
    fn a_local_shortage_is_the_proxys_and_a_refusal_the_endpoints() {
        for errno in [
            libc::EMFILE,
            libc::ENFILE,
            libc::ENOBUFS,
            libc::EADDRNOTAVAIL,
        ] {
            let e = io::Error::from_raw_os_error(errno);
            assert!(matches!(
                AttemptFailed::classify(e),
                AttemptFailed::Local(_)
            ));
        }
        for errno in [libc::ECONNREFUSED, libc::EHOSTUNREACH, libc::ECONNRESET] {
            let e = io::Error::from_raw_os_error(errno);
            assert!(matches!(
                AttemptFailed::classify(e),
                AttemptFailed::Endpoint(_)
            ));
        }
    }

    /// Every idle connection keeps its task's future in memory, so its size
    /// is part of the memory per connection (BENCHMARKS.md, "TCP").
    #[tokio::test]
    async fn the_connection_future_stays_small() {
        let snapshot = Snapshot::empty(NodeSpec::default());
        let plane = crate::DataPlane::start(ProxySettings::default(), snapshot).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (accepted, peer) = listener.accept().await.unwrap();
        let key = FrontendKey {
            addr,
            protocol: Protocol::Tcp,
        };
        let fds = plane.shared().descriptors().take_fixed(2);
        let future = serve(plane.shared(), key, accepted, peer, fds);
        let size = std::mem::size_of_val(&future);
        println!("connection future: {size} bytes");
        assert!(size <= 2048, "connection future is {size} bytes");
    }
}
