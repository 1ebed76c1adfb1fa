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
//!
//! How the admin API shows the registry (its JSON, its pages) is the
//! operator surface's business; this module only holds the data.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use lb_core::ServicePort;

use crate::dataplane::forward::ConnBytes;

/// Number of independently locked maps (a power of two).
pub const SHARDS: usize = 16;

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

/// Connections to test with, for this module's tests and the views'.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;
    use lb_core::{EndpointSpec, NodeSpec, PortSpec, Protocol, ServiceSpec, Snapshot};

    /// The one port of `default/web` (`127.0.0.1:80` → `127.0.0.2:8080`).
    pub(crate) fn web_port() -> Arc<ServicePort> {
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

    /// An open connection from `127.0.0.n` to `port`.
    pub(crate) fn conn(n: u8, port: &Arc<ServicePort>) -> OpenConnection {
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
}

#[cfg(test)]
mod tests {
    use super::fixtures::{conn, web_port};
    use super::*;

    #[test]
    fn guards_unregister_and_the_list_is_by_id() {
        let registry = Connections::default();
        let port = web_port();
        let guards: Vec<_> = (1..=5).map(|n| registry.insert(conn(n, &port))).collect();
        assert_eq!(registry.len(), 5);
        let ids: Vec<u64> = registry.list().iter().map(|c| c.id).collect();
        assert_eq!(ids, [1, 2, 3, 4, 5]);
        drop(guards);
        assert!(registry.is_empty());
    }
}
