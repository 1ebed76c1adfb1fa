//! The tokio shell around the flow table: one receive loop per UDP frontend,
//! one connected socket and reply task per flow.
//!
//! The flow table is one `Mutex` for all UDP services (the bound is global);
//! it is held only for the decision, never across an await or a send.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use lb_core::stats;
use lb_core::{FrontendKey, ProxySettings, Snapshot};
use tokio::net::UdpSocket;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, trace, warn};

use super::flows::{FlowKey, FlowTable, Verdict};
use crate::dataplane::Shared;
use crate::sys;

/// Largest UDP payload over IPv4 (65,535 − 8 UDP − 20 IP header bytes). The
/// receive buffers are one byte longer, so nothing is ever cut silently.
pub const MAX_DATAGRAM: usize = 65_507;

/// Buffer length for receives: room for any datagram (IPv6 jumbograms aside).
const RECV_BUFFER: usize = 65_536;

/// Datagrams handled per wake-up before other tasks get a turn.
const BATCH: usize = 64;

/// The shell's resources of one flow. Dropping them (the flow expired, was
/// evicted or moved) stops the reply task, which closes the socket.
pub(crate) struct FlowIo {
    socket: Arc<UdpSocket>,
    /// Where replies leave from on a wildcard frontend: the address the
    /// client last sent to.
    reply_from: Option<IpAddr>,
    _stop: DropGuard,
}

/// Every UDP flow of the data plane.
pub(crate) struct Flows {
    table: Mutex<FlowTable<FlowIo>>,
}

impl std::fmt::Debug for Flows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flows")
            .field("len", &self.lock().len())
            .finish()
    }
}

impl Flows {
    /// An empty table with the limits of `settings`.
    pub(crate) fn new(settings: &ProxySettings) -> Self {
        Flows {
            table: Mutex::new(FlowTable::new(
                settings.udp_idle_timeout,
                settings.udp_max_flows as usize,
            )),
        }
    }

    fn lock(&self) -> MutexGuard<'_, FlowTable<FlowIo>> {
        // Table operations do not panic on any input; if one ever did, the
        // table is still usable (at worst a flow lingers until it expires).
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Re-points or closes the flows a new snapshot affects, at once.
    pub(crate) fn apply(&self, snapshot: &Snapshot) {
        self.lock().apply(snapshot, Instant::now());
    }

    /// New `udp_idle_timeout` / `udp_max_flows` from a reload.
    pub(crate) fn set_limits(&self, settings: &ProxySettings) {
        self.lock().set_limits(
            settings.udp_idle_timeout,
            settings.udp_max_flows as usize,
            Instant::now(),
        );
    }

    /// Frees the resources of flows idle past the timeout.
    pub(crate) fn expire(&self) -> usize {
        self.lock().expire(Instant::now())
    }

    /// Forgets the flows of a frontend whose socket closes.
    pub(crate) fn close_frontend(&self, frontend: SocketAddr) {
        self.lock().retain_frontends(|f| f != frontend);
    }

    /// Forgets every flow (the data plane stops).
    pub(crate) fn clear(&self) {
        self.lock().clear();
    }

    /// Flows open now.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Receives on a UDP frontend until `stop`, relaying each datagram to its
/// flow's endpoint. Per-datagram errors are logged and skipped; the loop
/// never ends because of one.
pub(crate) async fn serve_frontend(
    shared: Arc<Shared>,
    key: FrontendKey,
    socket: UdpSocket,
    stop: CancellationToken,
) {
    let socket = Arc::new(socket);
    let mut buf = vec![0u8; RECV_BUFFER];
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            r = socket.readable() => {
                if let Err(e) = r {
                    warn!(frontend = %key.addr, error = %e, "UDP frontend failed");
                    break;
                }
            }
        }
        for _ in 0..BATCH {
            match sys::try_recv_with_dst(&socket, &mut buf) {
                Ok(rx) => {
                    let client = FlowKey {
                        frontend: key.addr,
                        client: rx.from,
                    };
                    relay_to_endpoint(&shared, &socket, client, &buf[..rx.len], rx.dst);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    debug!(frontend = %key.addr, error = %e, "UDP receive failed");
                    break;
                }
            }
        }
    }
    shared.udp.close_frontend(key.addr);
}

/// One datagram from a client: decide under the lock, open the flow's socket
/// if it has none, then send outside the lock.
fn relay_to_endpoint(
    shared: &Arc<Shared>,
    frontend: &Arc<UdpSocket>,
    key: FlowKey,
    data: &[u8],
    dst: Option<IpAddr>,
) {
    let snapshot = shared.table.load();
    let (socket, endpoint, port_stats, endpoint_stats) = {
        let mut table = shared.udp.lock();
        let endpoint = match table.client_datagram(&snapshot, key, Instant::now()) {
            Verdict::Forward { endpoint, change } => {
                trace!(client = %key.client, %endpoint, ?change, "UDP datagram");
                endpoint
            }
            Verdict::Drop(reason) => {
                trace!(client = %key.client, frontend = %key.frontend, ?reason, "UDP datagram dropped");
                return;
            }
        };
        let Some(flow) = table.get_mut(&key) else {
            return;
        };
        if flow.io.is_none() {
            match sys::connect_udp_flow(endpoint) {
                Ok(socket) => {
                    let socket = Arc::new(socket);
                    let stop = CancellationToken::new();
                    tokio::spawn(relay_replies(
                        shared.clone(),
                        key,
                        endpoint,
                        socket.clone(),
                        frontend.clone(),
                        stop.clone(),
                    ));
                    flow.io = Some(FlowIo {
                        socket,
                        reply_from: dst,
                        _stop: stop.drop_guard(),
                    });
                }
                Err(e) => {
                    debug!(client = %key.client, %endpoint, error = %e, "cannot open a UDP flow socket; dropping");
                    table.socket_failed(&key);
                    return;
                }
            }
        }
        let port_stats = flow.port_stats().clone();
        let endpoint_stats = flow.endpoint_stats().clone();
        let Some(io) = flow.io.as_mut() else {
            return;
        };
        if dst.is_some() {
            io.reply_from = dst;
        }
        (io.socket.clone(), endpoint, port_stats, endpoint_stats)
    };
    match sys::try_send(&socket, data) {
        Ok(n) => {
            stats::add(&port_stats.udp_forwarded, 1);
            stats::add(&endpoint_stats.bytes_rx, n as u64);
        }
        Err(e) => {
            debug!(client = %key.client, %endpoint, error = %e, "UDP send to endpoint failed");
            shared.udp.lock().send_failed(&key, endpoint);
        }
    }
}

/// Relays a flow's replies from its endpoint to the client, from the address
/// and port the client sent to, until the flow's resources are dropped. An
/// error on the socket (ICMP port unreachable) is counted and makes the next
/// datagram fail over.
async fn relay_replies(
    shared: Arc<Shared>,
    key: FlowKey,
    endpoint: SocketAddr,
    upstream: Arc<UdpSocket>,
    frontend: Arc<UdpSocket>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            r = upstream.readable() => {
                if r.is_err() {
                    return;
                }
            }
        }
        // Allocated per burst, so a quiet flow holds no 64 KiB buffer.
        let mut buf = vec![0u8; RECV_BUFFER];
        for _ in 0..BATCH {
            match upstream.try_recv(&mut buf) {
                Ok(n) => {
                    let (reply_from, port_stats, endpoint_stats) = {
                        let mut table = shared.udp.lock();
                        let Some(flow) = table.endpoint_datagram(&key, endpoint, Instant::now())
                        else {
                            return;
                        };
                        (
                            flow.io.as_ref().and_then(|io| io.reply_from),
                            flow.port_stats().clone(),
                            flow.endpoint_stats().clone(),
                        )
                    };
                    match sys::try_send_from(&frontend, &buf[..n], key.client, reply_from) {
                        Ok(sent) => {
                            stats::add(&port_stats.udp_replied, 1);
                            stats::add(&endpoint_stats.bytes_tx, sent as u64);
                        }
                        Err(e) => {
                            debug!(client = %key.client, error = %e, "UDP reply to client failed");
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    debug!(client = %key.client, %endpoint, error = %e, "UDP endpoint unreachable; the next datagram fails over");
                    shared.udp.lock().send_failed(&key, endpoint);
                }
            }
        }
    }
}
