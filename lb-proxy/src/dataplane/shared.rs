//! What the handle, the accept loops, the connection tasks and the UDP relays
//! share, as small types that each own one piece of state and say what can
//! be done with it: the published table, the settings, the generation
//! signal, the TCP connections (tasks, counts, registry), the UDP flows and
//! the descriptor budget. No module reaches into another's fields.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use lb_core::{ForwardEngine, Protocol, ProxySettings, Snapshot, Table};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::dataplane::connections::Connections;
use crate::dataplane::descriptors::Descriptors;
use crate::dataplane::own::{self, LocalAddrs};
use crate::dataplane::udp::table::Flows;
use crate::lifecycle::Tasks;

/// State shared by the handle, the accept loops, the connection tasks and
/// the UDP relays (behind one `Arc`).
#[derive(Debug)]
pub(crate) struct Shared {
    table: Arc<Table>,
    settings: SettingsCell,
    generation: Generation,
    tcp: TcpConnections,
    udp: Flows,
    descriptors: Descriptors,
    local_addrs: LocalAddrs,
    ejections: Ejections,
}

impl Shared {
    /// The state of a data plane serving `snapshot` with `settings`, whose
    /// connection tasks are spawned on `connections` and whose sockets and
    /// pipes are taken from `descriptors`.
    pub(crate) fn new(
        settings: ProxySettings,
        snapshot: Snapshot,
        connections: Tasks,
        descriptors: Descriptors,
    ) -> Self {
        Shared {
            descriptors,
            udp: Flows::new(&settings),
            table: Arc::new(Table::new(snapshot)),
            settings: SettingsCell(ArcSwap::from_pointee(settings)),
            generation: Generation(watch::Sender::new(0)),
            tcp: TcpConnections::new(connections),
            local_addrs: LocalAddrs::default(),
            ejections: Ejections::default(),
        }
    }

    /// Where endpoint ejections are told, for whoever records them.
    pub(crate) fn ejections(&self) -> &Ejections {
        &self.ejections
    }

    /// The published service table.
    pub(crate) fn table(&self) -> &Arc<Table> {
        &self.table
    }

    /// The settings new connections and flows use.
    pub(crate) fn settings(&self) -> &SettingsCell {
        &self.settings
    }

    /// Bumped on every published snapshot; open connections watch it.
    pub(crate) fn generation(&self) -> &Generation {
        &self.generation
    }

    /// The open TCP connections.
    pub(crate) fn tcp(&self) -> &TcpConnections {
        &self.tcp
    }

    /// Every UDP flow (all UDP services share the `udp_max_flows` bound).
    pub(crate) fn udp(&self) -> &Flows {
        &self.udp
    }

    /// The descriptor budget every client connection, flow socket, splice
    /// pipe and listener is taken from.
    pub(crate) fn descriptors(&self) -> &Descriptors {
        &self.descriptors
    }

    /// Whether a dial or a flow to `addr` over `protocol` would reach one of
    /// this proxy's own frontends (as of the published table): it must not
    /// be made, or one client connection multiplies until every descriptor
    /// is used.
    pub(crate) fn is_own_frontend(&self, addr: SocketAddr, protocol: Protocol) -> bool {
        own::is_own_frontend(&self.table.load(), &self.local_addrs, addr, protocol)
    }

    /// Publishes `snapshot`: swaps the table, tells open connections, and
    /// moves the UDP flows whose endpoint left now, not on their next
    /// datagram.
    pub(crate) fn publish(&self, snapshot: Snapshot) {
        self.table.store(snapshot);
        self.generation.bump();
        self.udp.apply(&self.table.load());
    }
}

// === impl SettingsCell ===

/// The settings in force, swapped whole by a reload and read once per new
/// connection without a lock.
#[derive(Debug)]
pub(crate) struct SettingsCell(ArcSwap<ProxySettings>);

impl SettingsCell {
    /// The settings now (one reference-count increment).
    pub(crate) fn load(&self) -> Arc<ProxySettings> {
        self.0.load_full()
    }

    /// The forwarding engine for a new connection.
    pub(crate) fn engine(&self) -> ForwardEngine {
        self.0.load().forward_engine
    }

    /// How long connections may drain.
    pub(crate) fn drain_timeout(&self) -> Duration {
        self.0.load().drain_timeout
    }

    /// Replaces the settings for connections and flows from now on.
    pub(crate) fn store(&self, settings: ProxySettings) {
        self.0.store(Arc::new(settings));
    }
}

// === impl Generation ===

/// Tells open connections (and followers such as the health-check node
/// ports) that a new snapshot was published.
#[derive(Debug)]
pub(crate) struct Generation(watch::Sender<u64>);

impl Generation {
    /// A receiver that changes on every publish. A connection subscribes
    /// before it loads the table, so no later publish is missed.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.0.subscribe()
    }

    fn bump(&self) {
        self.0.send_modify(|g| *g += 1);
    }
}

// === impl TcpConnections ===

/// The TCP connections: their tasks (whose token is the kill switch at the
/// end of a drain), how many are open, the registry behind
/// `/api/v1/connections`, and the bytes `splice(2)` moved for them.
#[derive(Debug)]
pub(crate) struct TcpConnections {
    tasks: Tasks,
    open: AtomicUsize,
    spliced: AtomicU64,
    registry: Connections,
}

impl TcpConnections {
    fn new(tasks: Tasks) -> Self {
        TcpConnections {
            tasks,
            open: AtomicUsize::new(0),
            spliced: AtomicU64::new(0),
            registry: Connections::default(),
        }
    }

    /// Where connection tasks are spawned (and waited for by the drain).
    pub(crate) fn tasks(&self) -> &Tasks {
        &self.tasks
    }

    /// Cancelled when the drain timeout has passed: open connections close.
    pub(crate) fn kill(&self) -> &CancellationToken {
        self.tasks.token()
    }

    /// Counts a client connection as open until the guard drops.
    pub(crate) fn open(&self) -> Open<'_> {
        self.open.fetch_add(1, Ordering::Relaxed);
        Open(&self.open)
    }

    /// Client connections open now (including ones still dialing).
    pub(crate) fn active(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Bytes `splice(2)` moved so far, for the engines to add to.
    pub(crate) fn spliced(&self) -> &AtomicU64 {
        &self.spliced
    }

    /// Open connections that reached an endpoint.
    pub(crate) fn registry(&self) -> &Connections {
        &self.registry
    }
}

/// An open client connection, counted until dropped, so every exit path of
/// a connection task gives it back.
#[derive(Debug)]
pub(crate) struct Open<'a>(&'a AtomicUsize);

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An endpoint that dial failures just ejected (outlier detection), told to
/// whoever records events (the App records `EndpointEjected` on its
/// Service). Sent once per ejection, off every hot path but a failing dial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ejected {
    /// The service port (`namespace/name:port/PROTO`) the endpoint serves.
    pub port: lb_core::ServicePortKey,
    /// The endpoint.
    pub endpoint: SocketAddr,
    /// How long it is out of rotation.
    pub length: Duration,
}

/// How many ejection notices wait for their reader before new ones are
/// dropped (the log line stays): a reader that is gone or slow costs the
/// data plane nothing.
const EJECTION_BACKLOG: usize = 256;

/// The ejection notices: a bounded channel whose receiver the App takes.
#[derive(Debug)]
pub(crate) struct Ejections {
    tx: tokio::sync::mpsc::Sender<Ejected>,
    rx: std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<Ejected>>>,
}

impl Default for Ejections {
    fn default() -> Self {
        let (tx, rx) = tokio::sync::mpsc::channel(EJECTION_BACKLOG);
        Ejections {
            tx,
            rx: std::sync::Mutex::new(Some(rx)),
        }
    }
}

impl Ejections {
    /// Tells of an ejection; dropped when the backlog is full.
    pub(crate) fn tell(&self, ejected: Ejected) {
        let _ = self.tx.try_send(ejected);
    }

    /// The receiver, once.
    pub(crate) fn take(&self) -> Option<tokio::sync::mpsc::Receiver<Ejected>> {
        self.rx.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}
