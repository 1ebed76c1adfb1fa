//! The registry of open TCP connections behind `/api/v1/connections`: who is
//! connected, through which frontend, to which endpoint, and why that
//! endpoint was picked.
//!
//! The data path touches it twice per connection: one insert once the dial
//! succeeded and one remove when the connection ends (a guard's `Drop`). Both
//! lock one of [`SHARDS`] small maps chosen by the connection id, so
//! connections on different workers rarely meet on a lock, and the lock is
//! never held across an await. Bytes are read from per-connection atomics the
//! forwarding engine already bumps; nothing is formatted until someone asks.
//!
//! An entry is one allocation (an `Arc` the map and the connection share)
//! and copies nothing: the service port is the snapshot's `Arc` the
//! connection holds anyway, not a clone of its key's strings.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use lb_core::{ServicePort, ServicePortKey};
use serde::{Deserialize, Serialize};

use crate::dataplane::forward::ConnBytes;

/// Number of independently locked maps (a power of two).
pub const SHARDS: usize = 16;

/// Largest page `/api/v1/connections` returns, whatever `limit` asks.
pub const MAX_PAGE: usize = 5000;

/// One open connection as the registry holds it (a clone is a reading: its
/// byte counters no longer move).
#[derive(Debug, Clone)]
pub struct OpenConnection {
    /// Registry id: increasing, so pages can continue after the last one seen.
    pub id: u64,
    /// The client's address and port.
    pub client: SocketAddr,
    /// The frontend (listener address) the client connected to.
    pub frontend: SocketAddr,
    /// The service port it belongs to (of the snapshot it was accepted
    /// under).
    pub port: Arc<ServicePort>,
    /// The endpoint it is forwarded to.
    pub endpoint: SocketAddr,
    /// Why that endpoint: `round_robin`, `affinity` or `failover`.
    pub reason: &'static str,
    /// Wall-clock start, for display.
    pub started: SystemTime,
    /// Monotonic start, for the age.
    pub opened: Instant,
    /// This connection's own byte counters (`rx` from the client, `tx` to
    /// it).
    pub bytes: ConnBytes,
}

/// One independently locked part of the registry.
type Shard = Mutex<HashMap<u64, Arc<OpenConnection>>>;

/// Every open connection, sharded by id.
#[derive(Debug)]
pub struct Connections {
    next: AtomicU64,
    shards: Box<[Shard]>,
}

impl Default for Connections {
    fn default() -> Self {
        Connections {
            next: AtomicU64::new(1),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

/// Removes its connection from the registry when dropped, so every exit
/// path of a connection task unregisters it.
#[derive(Debug)]
pub struct Registered<'a> {
    registry: &'a Connections,
    connection: Arc<OpenConnection>,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        let id = self.connection.id;
        self.registry.shard(id).remove(&id);
    }
}

impl Registered<'_> {
    /// The connection's id in the registry.
    pub fn id(&self) -> u64 {
        self.connection.id
    }

    /// The connection's byte counters, for the forwarding engine to bump.
    pub fn bytes(&self) -> &ConnBytes {
        &self.connection.bytes
    }
}

impl Connections {
    fn shard(&self, id: u64) -> MutexGuard<'_, HashMap<u64, Arc<OpenConnection>>> {
        // Entries are inserted and removed whole, so a poisoned shard is
        // still consistent.
        self.shards[(id as usize) & (SHARDS - 1)]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a connection (its `id` is assigned here) until the returned
    /// guard drops.
    pub fn insert(&self, mut connection: OpenConnection) -> Registered<'_> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        connection.id = id;
        let connection = Arc::new(connection);
        self.shard(id).insert(id, connection.clone());
        Registered {
            registry: self,
            connection,
        }
    }

    /// How many connections are registered now.
    pub fn len(&self) -> usize {
        (0..SHARDS).map(|i| self.shard(i as u64).len()).sum()
    }

    /// Whether no connection is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every open connection, by id (each shard is locked in turn, briefly).
    pub fn list(&self) -> Vec<OpenConnection> {
        let mut all: Vec<OpenConnection> = (0..SHARDS)
            .flat_map(|i| {
                self.shard(i as u64)
                    .values()
                    .map(|c| OpenConnection::clone(c))
                    .collect::<Vec<_>>()
            })
            .collect();
        all.sort_by_key(|c| c.id);
        all
    }
}

/// Body of `GET /api/v1/connections`: one page of open connections, by id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ConnectionList {
    /// The connections of this page.
    pub items: Vec<ConnectionView>,
    /// Pass as `?continue=` for the next page; empty on the last page
    /// (Kubernetes' list pagination).
    #[serde(default, rename = "continue")]
    pub continue_token: String,
    /// Open connections in all, across pages.
    #[serde(default)]
    pub total: usize,
}

/// One open connection as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionView {
    /// Registry id.
    pub id: u64,
    /// `IP:PORT` of the client.
    pub client: String,
    /// `IP:PORT` the client connected to.
    pub frontend: String,
    /// Service namespace.
    pub namespace: String,
    /// Service name.
    pub service: String,
    /// Service port name, or its number when unnamed.
    pub port: String,
    /// `TCP`.
    pub protocol: String,
    /// `IP:PORT` of the endpoint.
    pub endpoint: String,
    /// `round_robin`, `affinity` or `failover`.
    pub pick_reason: String,
    /// When it was accepted, RFC 3339 in UTC.
    pub started: String,
    /// Seconds since it was accepted.
    pub age_seconds: u64,
    /// Bytes from the client so far.
    pub bytes_rx: u64,
    /// Bytes to the client so far.
    pub bytes_tx: u64,
}

/// The service port's label: its name, or its number when unnamed (as in
/// `/metrics`).
pub fn port_label(key: &ServicePortKey) -> String {
    if key.port_name.is_empty() {
        key.port.to_string()
    } else {
        key.port_name.clone()
    }
}

impl ConnectionView {
    /// The API view of `c` at `now`.
    pub fn new(c: &OpenConnection, now: Instant) -> ConnectionView {
        ConnectionView {
            id: c.id,
            client: c.client.to_string(),
            frontend: c.frontend.to_string(),
            namespace: c.port.key().service.namespace.clone(),
            service: c.port.key().service.name.clone(),
            port: port_label(c.port.key()),
            protocol: c.port.key().protocol.to_string(),
            endpoint: c.endpoint.to_string(),
            pick_reason: c.reason.to_string(),
            started: crate::ops::views::format_rfc3339(c.started),
            age_seconds: now.saturating_duration_since(c.opened).as_secs(),
            bytes_rx: lb_core::stats::read(&c.bytes.rx),
            bytes_tx: lb_core::stats::read(&c.bytes.tx),
        }
    }
}

/// One page of `all` (sorted by id): at most `limit` connections (capped at
/// [`MAX_PAGE`]; 0 = the cap) with an id above `after`.
pub fn page(all: &[OpenConnection], limit: usize, after: u64, now: Instant) -> ConnectionList {
    let limit = if limit == 0 {
        MAX_PAGE
    } else {
        limit.min(MAX_PAGE)
    };
    let start = all.partition_point(|c| c.id <= after);
    let rest = &all[start..];
    let items: Vec<ConnectionView> = rest
        .iter()
        .take(limit)
        .map(|c| ConnectionView::new(c, now))
        .collect();
    let continue_token = if rest.len() > limit {
        items.last().map(|c| c.id.to_string()).unwrap_or_default()
    } else {
        String::new()
    };
    ConnectionList {
        items,
        continue_token,
        total: all.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_core::{EndpointSpec, NodeSpec, PortSpec, Protocol, ServiceSpec, Snapshot};

    fn web_port() -> Arc<ServicePort> {
        let port = PortSpec::tcp("", 80)
            .with_endpoint(EndpointSpec::new("127.0.0.2:8080".parse().unwrap()));
        let svc =
            ServiceSpec::cluster_ip("default", "web", "127.0.0.1".parse().unwrap()).with_port(port);
        let snapshot = Snapshot::build(NodeSpec::default(), vec![svc], None, SystemTime::now());
        let entry = snapshot
            .frontend("127.0.0.1:80".parse().unwrap(), Protocol::Tcp)
            .unwrap();
        entry.port.clone()
    }

    fn conn(n: u8, port: &Arc<ServicePort>) -> OpenConnection {
        OpenConnection {
            id: 0,
            client: SocketAddr::from(([127, 0, 0, n], 40000)),
            frontend: "127.0.0.1:80".parse().unwrap(),
            port: port.clone(),
            endpoint: "127.0.0.2:8080".parse().unwrap(),
            reason: "round_robin",
            started: SystemTime::now(),
            opened: Instant::now(),
            bytes: ConnBytes::default(),
        }
    }

    #[test]
    fn guards_unregister_and_pages_continue_after_the_last_id() {
        let registry = Connections::default();
        let port = web_port();
        let guards: Vec<_> = (1..=5).map(|n| registry.insert(conn(n, &port))).collect();
        assert_eq!(registry.len(), 5);
        let all = registry.list();
        let first = page(&all, 2, 0, Instant::now());
        assert_eq!(first.items.len(), 2);
        assert_eq!(first.total, 5);
        let after: u64 = first.continue_token.parse().unwrap();
        let second = page(&all, 10, after, Instant::now());
        assert_eq!(second.items.len(), 3);
        assert!(second.continue_token.is_empty());
        assert_eq!(second.items[0].port, "80");
        drop(guards);
        assert!(registry.is_empty());
    }
}
