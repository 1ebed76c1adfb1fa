//! One client connection, from accept to close: admission (`max_connections`,
//! endpoints left), dials with failover, then forwarding until the connection
//! ends, its endpoint's drain deadline passes or the data plane stops.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lb_core::stats::{self, EndpointStats};
use lb_core::{FrontendEntry, FrontendKey, Protocol, ProxySettings, ServicePortKey, Table};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::dataplane::Shared;
use crate::error::Error;
use crate::forward::{self, Limits};
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

/// Counts an open client connection for `DataPlane::active_connections`.
struct Open(Arc<Shared>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves one accepted client connection on `frontend`.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    frontend: FrontendKey,
    client: TcpStream,
    peer: SocketAddr,
) {
    shared.open.fetch_add(1, Ordering::Relaxed);
    let open = Open(shared.clone());
    // Subscribe before loading the table: a snapshot published after the load
    // is then always seen by the drain watch below.
    let generation = shared.generation.subscribe();
    let snapshot = shared.table.load();
    let Some(entry) = snapshot.frontend(frontend.addr, Protocol::Tcp).cloned() else {
        debug!(frontend = %frontend.addr, client = %peer, "frontend gone; resetting client");
        sys::reset(client);
        return;
    };
    drop(snapshot);
    let port_stats = entry.port.stats().clone();
    if !entry.admits(peer.ip()) {
        // `load_balancer_source_ranges`: reset before any endpoint is chosen,
        // and not counted as an accepted connection.
        stats::add(&port_stats.rejected_source_range, 1);
        debug!(service = %entry.port.key(), client = %peer, "outside load_balancer_source_ranges; resetting client");
        sys::reset(client);
        return;
    }
    let settings = shared.settings.load_full();
    stats::add(&port_stats.accepted, 1);
    let _port_active = hold(&port_stats.active);
    let limit = u64::from(settings.max_connections);
    if limit > 0 && port_stats.active.load(Ordering::Relaxed) > limit {
        stats::add(&port_stats.rejected_limit, 1);
        debug!(service = %entry.port.key(), client = %peer, limit, "over max_connections; resetting client");
        sys::reset(client);
        return;
    }
    let Some(pick) = entry.pick(peer.ip(), now()) else {
        stats::add(&port_stats.rejected_no_endpoints, 1);
        debug!(service = %entry.port.key(), client = %peer, "no endpoint; resetting client");
        sys::reset(client);
        return;
    };
    sys::set_nodelay(&client);

    let dialed = tokio::select! {
        r = dial(&entry, pick.index, peer.ip(), &settings) => r,
        () = shared.kill.cancelled() => {
            sys::reset(client);
            return;
        }
    };
    let (upstream, index) = match dialed {
        Ok(ok) => ok,
        Err(e) => {
            debug!(client = %peer, error = %e, "resetting client");
            sys::reset(client);
            return;
        }
    };
    sys::set_nodelay(&upstream);
    let endpoint = entry.port.endpoint(index);
    let endpoint_addr = endpoint.addr;
    let endpoint_stats: Arc<EndpointStats> = endpoint.stats.clone();
    stats::add(&endpoint_stats.connections, 1);
    let _endpoint_active = hold(&endpoint_stats.active);
    // A failover is the reason whenever the first pick's dial failed.
    let reason = if index == pick.index {
        pick.reason.as_str()
    } else {
        lb_core::PickReason::Failover.as_str()
    };
    let conn_bytes: Arc<EndpointStats> = Arc::default();
    let started = Instant::now();
    let _registered = shared.registry.insert(crate::connections::OpenConnection {
        id: 0,
        client: peer,
        frontend: frontend.addr,
        service: entry.port.key().clone(),
        endpoint: endpoint_addr,
        reason,
        started: std::time::SystemTime::now(),
        opened: started.into_std(),
        bytes: conn_bytes.clone(),
    });
    debug!(service = %entry.port.key(), client = %peer, endpoint = %endpoint_addr,
        reason, "connected");

    let limits = Limits {
        idle_timeout: settings.tcp_idle_timeout,
        half_close_timeout: settings.half_close_timeout,
    };
    let stop = drain_watch(
        generation,
        shared.table.clone(),
        entry.port.key().clone(),
        endpoint_addr,
        settings.drain_timeout,
        shared.kill.clone(),
    );
    let outcome = shared
        .engine()
        .run(
            client,
            upstream,
            limits,
            &endpoint_stats,
            &conn_bytes,
            &shared.spliced,
            stop,
        )
        .await;
    // One event per connection: the answer to "why did this connection go to
    // that backend, and how did it end".
    debug!(service = %entry.port.key(), client = %peer, frontend = %frontend.addr,
        endpoint = %endpoint_addr, reason,
        bytes_rx = stats::read(&conn_bytes.bytes_rx), bytes_tx = stats::read(&conn_bytes.bytes_tx),
        duration_ms = started.elapsed().as_millis() as u64,
        cause = outcome.as_str(), "connection closed");
    drop(open);
}

/// Dials `first`, then on each failure the next endpoint by failover, one
/// attempt per entry of `connect_timeouts`.
async fn dial(
    entry: &FrontendEntry,
    first: usize,
    client: IpAddr,
    settings: &ProxySettings,
) -> Result<(TcpStream, usize), Error> {
    let default_timeouts;
    let timeouts: &[Duration] = if settings.connect_timeouts.is_empty() {
        default_timeouts = ProxySettings::default().connect_timeouts;
        &default_timeouts
    } else {
        &settings.connect_timeouts
    };
    let mut index = first;
    let mut attempts = 0;
    let mut last = io::Error::other("no dial attempted");
    for (n, timeout) in timeouts.iter().enumerate() {
        let endpoint = entry.port.endpoint(index);
        attempts += 1;
        let dial_start = Instant::now();
        match tokio::time::timeout(*timeout, TcpStream::connect(endpoint.addr)).await {
            Ok(Ok(stream)) => {
                endpoint.stats.connect_duration.record(dial_start.elapsed());
                endpoint.health.record_success();
                return Ok((stream, index));
            }
            Ok(Err(e)) => last = e,
            Err(_) => {
                last = io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connect timed out after {timeout:?}"),
                )
            }
        }
        stats::add(&endpoint.stats.connect_errors, 1);
        debug!(service = %entry.port.key(), endpoint = %endpoint.addr, attempt = n + 1,
            error = %last, "dial failed");
        if let Some(length) = endpoint.health.record_failure(
            now(),
            std::time::SystemTime::now(),
            settings.outlier_consecutive_failures,
            settings.outlier_base_ejection,
        ) {
            info!(service = %entry.port.key(), endpoint = %endpoint.addr, ejection = ?length,
                "endpoint ejected after consecutive dial failures");
        }
        if n + 1 < timeouts.len() {
            match entry.failover(index, client, now()) {
                Some(next) => index = next,
                None => break,
            }
        }
    }
    Err(Error::Dial {
        service: entry.port.key().to_string(),
        attempts,
        source: last,
    })
}

/// The time picks and ejections are judged by: tokio's clock, so tests that
/// pause time move ejections along with every other timer.
fn now() -> std::time::Instant {
    Instant::now().into_std()
}

/// Resolves when the connection must close from outside: its endpoint left
/// the table (or took weight 0) `drain_timeout` ago, or the data plane stops.
/// An endpoint that comes back before the deadline cancels it.
async fn drain_watch(
    mut generation: watch::Receiver<u64>,
    table: Arc<Table>,
    key: ServicePortKey,
    endpoint: SocketAddr,
    drain_timeout: Duration,
    kill: CancellationToken,
) {
    let mut deadline: Option<Instant> = None;
    let mut watching = true;
    loop {
        tokio::select! {
            () = kill.cancelled() => return,
            () = forward::sleep_until_opt(deadline) => return,
            changed = generation.changed(), if watching => {
                if changed.is_err() {
                    watching = false;
                    continue;
                }
                let snapshot = table.load();
                let keeps = snapshot
                    .port(&key)
                    .and_then(|p| p.index_of(endpoint).map(|i| p.endpoint(i).weight > 0))
                    .unwrap_or(false);
                if keeps {
                    deadline = None;
                } else if deadline.is_none() {
                    debug!(service = %key, %endpoint, ?drain_timeout, "endpoint left; draining");
                    deadline = Some(Instant::now() + drain_timeout);
                }
            }
        }
    }
}
