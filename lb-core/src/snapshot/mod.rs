//! The immutable service table the data path reads, and the one handle that
//! publishes it.
//!
//! A [`Snapshot`] is built whole from [`ServiceSpec`]s off the data path and
//! swapped in with one `ArcSwap` store ([`Table`]); readers `load()` it once per
//! connection and never wait on a writer. State that must outlive a swap (the
//! round-robin position, affinity pins, counters, a service's age) is carried
//! over from the previous snapshot by stable identity: service port key and
//! endpoint address, never vector position.
//!
//! One concept per file: [`FrontendKey`] and its route ([`FrontendEntry`]) in
//! `frontend.rs`; a [`ServicePort`] and its pick, failover and ejection
//! policy in `port.rs`; [`Snapshot::build`] and its carry-over in `build.rs`;
//! [`Table`] and its retired list in `table.rs`.

mod build;
mod frontend;
mod port;
mod table;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

pub use frontend::{FrontendEntry, FrontendKey, FrontendKind};
pub use port::{Endpoint, Pick, PickReason, ServicePort};
pub use table::Table;

use crate::model::{Protocol, ServiceKey, ServicePortKey};
use crate::spec::{NodeSpec, ServiceSpec};

/// The hasher of the map a connection looks up on its way in (the
/// frontends; an endpoint's index is a search of its port's sorted
/// endpoints): foldhash, seeded per map, is several times faster than
/// SipHash on socket addresses and still not predictable from outside.
type FastHash = foldhash::fast::RandomState;

/// A service as the views see it.
#[derive(Debug, Clone)]
pub struct ServiceEntry {
    /// The validated spec.
    pub spec: Arc<ServiceSpec>,
    /// When this service first appeared (for the AGE column); kept across
    /// reloads while the service keeps its name.
    pub created: SystemTime,
    /// Its ports, in spec order.
    pub ports: Vec<Arc<ServicePort>>,
}

/// The whole service table at one moment.
#[derive(Debug, Default)]
pub struct Snapshot {
    generation: u64,
    node: NodeSpec,
    services: BTreeMap<ServiceKey, ServiceEntry>,
    frontends: HashMap<FrontendKey, FrontendEntry, FastHash>,
}

impl Snapshot {
    /// An empty table (no services), generation 0.
    pub fn empty(node: NodeSpec) -> Self {
        Snapshot {
            node,
            ..Default::default()
        }
    }

    /// Monotonic build number; a flow or connection can tell whether the table
    /// changed under it.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The node this table was built for.
    pub fn node(&self) -> &NodeSpec {
        &self.node
    }

    /// The route for a frontend, if any.
    pub fn frontend(&self, addr: SocketAddr, protocol: Protocol) -> Option<&FrontendEntry> {
        self.frontends.get(&FrontendKey { addr, protocol })
    }

    /// Every frontend with its route.
    pub fn frontends(&self) -> impl Iterator<Item = (&FrontendKey, &FrontendEntry)> {
        self.frontends.iter()
    }

    /// Services in namespace/name order.
    pub fn services(&self) -> impl Iterator<Item = &ServiceEntry> {
        self.services.values()
    }

    /// One service by key.
    pub fn service(&self, key: &ServiceKey) -> Option<&ServiceEntry> {
        self.services.get(key)
    }

    /// The service port with this key.
    pub fn port(&self, key: &ServicePortKey) -> Option<&Arc<ServicePort>> {
        self.services
            .get(&key.service)
            .and_then(|s| s.ports.iter().find(|p| &p.key == key))
    }

    /// Removes expired affinity pins everywhere; returns how many went.
    pub fn reap_affinity(&self, now: Instant) -> usize {
        self.services
            .values()
            .flat_map(|s| s.ports.iter())
            .filter_map(|p| p.affinity.as_ref())
            .map(|a| a.table.reap(now))
            .sum()
    }
}
