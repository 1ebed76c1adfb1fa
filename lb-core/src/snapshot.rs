//! The immutable service table the data path reads, and the one handle that
//! publishes it.
//!
//! A [`Snapshot`] is built whole from [`ServiceSpec`]s off the data path and
//! swapped in with one `ArcSwap` store ([`Table`]); readers `load()` it once per
//! connection and never wait on a writer. State that must outlive a swap (the
//! round-robin position, affinity pins, counters, a service's age) is carried
//! over from the previous snapshot by stable identity: service port key and
//! endpoint address, never vector position.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;

use crate::affinity::AffinityTable;
use crate::health::EndpointHealth;
use crate::model::{
    Protocol, ServiceKey, ServicePortKey, ServiceType, SessionAffinity, TrafficPolicy,
};
use crate::select::WeightedTable;
use crate::spec::{NodeSpec, ServiceSpec, TargetPort};
use crate::stats::{EndpointStats, PortStats};

/// The hasher of the maps a connection looks up on its way in (frontend,
/// endpoint index): foldhash, seeded per map, is several times faster than
/// SipHash on socket addresses and still not predictable from outside.
type FastHash = foldhash::fast::RandomState;

/// Where a listener is: address, port and protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FrontendKey {
    /// Address and port to bind.
    pub addr: SocketAddr,
    /// TCP or UDP.
    pub protocol: Protocol,
}

/// How traffic reached a service port; decides which traffic policy applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrontendKind {
    /// The cluster IP (internal traffic policy).
    ClusterIp,
    /// A node address at the node port (external traffic policy).
    NodePort,
    /// An entry of `external_ips` (external traffic policy).
    ExternalIp,
    /// A LoadBalancer ingress address (external traffic policy).
    LoadBalancer,
}

/// A frontend's route: the service port it serves and how.
#[derive(Debug, Clone)]
pub struct FrontendEntry {
    /// The service port.
    pub port: Arc<ServicePort>,
    /// Which kind of address this is.
    pub kind: FrontendKind,
    /// Whether the applicable traffic policy is Local (node-local endpoints only).
    pub local: bool,
    /// LoadBalancer frontends of a service with `load_balancer_source_ranges`:
    /// the client networks allowed in. `None` admits everyone, so the check on
    /// the data path is one branch for every other frontend.
    pub source_ranges: Option<Arc<[ipnet::IpNet]>>,
}

impl FrontendEntry {
    /// Whether `client` may use this frontend (`load_balancer_source_ranges`).
    pub fn admits(&self, client: IpAddr) -> bool {
        let Some(ranges) = &self.source_ranges else {
            return true;
        };
        // A v4 client on a dual-stack socket arrives as ::ffff:a.b.c.d.
        let client = match client {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(client, IpAddr::V4),
            v4 => v4,
        };
        ranges.iter().any(|net| net.contains(&client))
    }

    /// Whether a new connection here would find an endpoint. A TCP listener is
    /// kept closed while this is false, so clients get "connection refused".
    pub fn has_endpoints(&self) -> bool {
        !self.port.table(self.local).is_empty()
    }

    /// Chooses the endpoint for a new connection or flow from `client`.
    pub fn pick(&self, client: IpAddr, now: Instant) -> Option<Pick> {
        self.port.pick(self.local, client, now)
    }

    /// The endpoint to dial after `failed` did not answer; re-pins affinity.
    pub fn failover(&self, failed: usize, client: IpAddr, now: Instant) -> Option<usize> {
        self.port.failover(self.local, failed, client, now)
    }
}

/// Why an endpoint was chosen (for logs and the connections view).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PickReason {
    /// Weighted round robin.
    RoundRobin,
    /// The client's ClientIP pin.
    Affinity,
    /// A previous dial failed.
    Failover,
}

impl PickReason {
    /// Lower-case name for logs and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            PickReason::RoundRobin => "round_robin",
            PickReason::Affinity => "affinity",
            PickReason::Failover => "failover",
        }
    }
}

/// A chosen endpoint: its index in [`ServicePort::endpoints`] and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pick {
    /// Index into the port's endpoints.
    pub index: usize,
    /// Why.
    pub reason: PickReason,
}

/// One endpoint of one service port, with its conditions resolved.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Where connections go.
    pub addr: SocketAddr,
    /// Node it runs on, when known.
    pub node: Option<String>,
    /// Relative share of new connections.
    pub weight: u32,
    /// EndpointSlice `ready`: serving and not terminating, or forced by
    /// `publish_not_ready_addresses`.
    pub ready: bool,
    /// EndpointSlice `serving`.
    pub serving: bool,
    /// EndpointSlice `terminating`.
    pub terminating: bool,
    /// Pod name, when from a pod.
    pub pod: Option<String>,
    /// Pod hostname, when set.
    pub hostname: Option<String>,
    /// Live counters (carried across snapshots).
    pub stats: Arc<EndpointStats>,
    /// Passive health: dial failures and outlier ejection (carried across
    /// snapshots, read on every pick).
    pub health: Arc<EndpointHealth>,
    /// When the endpoint entered its current conditions (ready, serving,
    /// terminating, weight 0 or not), for the views' "since".
    pub since: SystemTime,
}

/// One service port: its endpoints, prebuilt selection tables, affinity and
/// counters.
#[derive(Debug)]
pub struct ServicePort {
    key: ServicePortKey,
    service_type: ServiceType,
    target_port: TargetPort,
    node_port: Option<u16>,
    endpoints: Vec<Endpoint>,
    index_of: HashMap<SocketAddr, u32, FastHash>,
    cluster: WeightedTable,
    local: WeightedTable,
    affinity: Option<PortAffinity>,
    stats: Arc<PortStats>,
}

/// A sticky port's pin table and its endpoints' ids in it.
#[derive(Debug)]
struct PortAffinity {
    table: Arc<AffinityTable>,
    /// The id of each endpoint (by index), which pins store instead of the
    /// address ([`AffinityTable::endpoint_ids`]).
    ids: Vec<u32>,
    /// `(id, index)` sorted by id: finds a pinned endpoint after a snapshot
    /// moved it (the pin's index hint no longer matches).
    by_id: Vec<(u32, u32)>,
}

impl PortAffinity {
    fn new(table: Arc<AffinityTable>, endpoints: &[Endpoint]) -> Self {
        let addrs: Vec<SocketAddr> = endpoints.iter().map(|e| e.addr).collect();
        let ids = table.endpoint_ids(&addrs);
        let mut by_id: Vec<(u32, u32)> = ids.iter().zip(0..).map(|(&id, i)| (id, i)).collect();
        by_id.sort_unstable();
        PortAffinity { table, ids, by_id }
    }

    /// The index of the endpoint with this id, trying `hint` first.
    #[inline]
    fn index(&self, id: u32, hint: u32) -> Option<usize> {
        match self.ids.get(hint as usize) {
            Some(&at) if at == id => Some(hint as usize),
            _ => self
                .by_id
                .binary_search_by_key(&id, |&(id, _)| id)
                .ok()
                .map(|k| self.by_id[k].1 as usize),
        }
    }
}

impl ServicePort {
    /// The port's identity.
    pub fn key(&self) -> &ServicePortKey {
        &self.key
    }

    /// The service's type.
    pub fn service_type(&self) -> ServiceType {
        self.service_type
    }

    /// Target port as configured.
    pub fn target_port(&self) -> &TargetPort {
        &self.target_port
    }

    /// The node port, if any.
    pub fn node_port(&self) -> Option<u16> {
        self.node_port
    }

    /// All endpoints, ready or not, in a stable order (by address).
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// One endpoint by index (from a [`Pick`]).
    pub fn endpoint(&self, index: usize) -> &Endpoint {
        &self.endpoints[index]
    }

    /// The index of the endpoint at `addr`.
    pub fn index_of(&self, addr: SocketAddr) -> Option<usize> {
        self.index_of.get(&addr).map(|i| *i as usize)
    }

    /// Port counters.
    pub fn stats(&self) -> &Arc<PortStats> {
        &self.stats
    }

    /// The affinity table, when the service uses ClientIP.
    pub fn affinity(&self) -> Option<&Arc<AffinityTable>> {
        self.affinity.as_ref().map(|a| &a.table)
    }

    /// The selection table for the cluster-wide or the node-local policy.
    pub fn table(&self, local: bool) -> &WeightedTable {
        if local {
            &self.local
        } else {
            &self.cluster
        }
    }

    /// Chooses the endpoint for a new connection from `client`: its unexpired
    /// pin if that endpoint may still take connections, else the next by weight
    /// (pinning it when the port has ClientIP affinity).
    pub fn pick(&self, local: bool, client: IpAddr, now: Instant) -> Option<Pick> {
        let table = self.table(local);
        if let Some(affinity) = &self.affinity {
            // One lock and one hash per pick, hit or miss: the table decides
            // and re-pins in place.
            let sticky = affinity.table.pick(
                client,
                now,
                |id, hint| self.pinned(local, affinity.index(id, hint)?, now),
                || {
                    let index = self.next_healthy(table, now)?;
                    Some((index as u32, affinity.ids[index]))
                },
            )?;
            return Some(Pick {
                index: sticky.index as usize,
                reason: if sticky.hit {
                    PickReason::Affinity
                } else {
                    PickReason::RoundRobin
                },
            });
        }
        self.next_healthy(table, now).map(|index| Pick {
            index,
            reason: PickReason::RoundRobin,
        })
    }

    /// The index of a pinned endpoint if it may still take the connection.
    #[inline]
    fn pinned(&self, local: bool, index: usize, now: Instant) -> Option<u32> {
        (self.table(local).is_candidate(index) && !self.is_ejected(local, index, now))
            .then_some(index as u32)
    }

    /// The next candidate by weight that is not ejected. While nothing is
    /// ejected this is one pick and one relaxed load. Otherwise it redraws a
    /// bounded number of times, then walks the candidates; when every
    /// candidate is ejected, ejection is ignored (the contract's panic rule).
    fn next_healthy(&self, table: &WeightedTable, now: Instant) -> Option<usize> {
        let first = table.next()?;
        if !self.endpoints[first].health.is_ejected(now) {
            return Some(first);
        }
        let candidates = table.candidates();
        for _ in 0..candidates.len() {
            let i = table.next()?;
            if !self.endpoints[i].health.is_ejected(now) {
                return Some(i);
            }
        }
        Some(
            candidates
                .iter()
                .map(|&i| i as usize)
                .find(|&i| !self.endpoints[i].health.is_ejected(now))
                .unwrap_or(first),
        )
    }

    /// Whether endpoint `index` is ejected at `now` for the cluster-wide or
    /// node-local table, after the panic rule: when every candidate of the
    /// table is ejected, none is.
    #[inline]
    pub fn is_ejected(&self, local: bool, index: usize, now: Instant) -> bool {
        if !self.endpoints[index].health.is_ejected(now) {
            return false;
        }
        self.table(local)
            .candidates()
            .iter()
            .any(|&i| !self.endpoints[i as usize].health.is_ejected(now))
    }

    /// The endpoint to try after `failed`: the next candidate in order, so
    /// repeated failures cycle through all of them. Re-pins the client.
    pub fn failover(
        &self,
        local: bool,
        failed: usize,
        client: IpAddr,
        now: Instant,
    ) -> Option<usize> {
        let table = self.table(local);
        let mut index = table.after(failed)?;
        let first = index;
        for _ in 0..table.candidates().len() {
            if !self.endpoints[index].health.is_ejected(now) {
                break;
            }
            index = table.after(index)?;
            if index == first {
                break;
            }
        }
        if self.endpoints[index].health.is_ejected(now) {
            // Every candidate is ejected: the panic rule ignores ejection.
            index = first;
        }
        if let Some(affinity) = &self.affinity {
            affinity
                .table
                .pin_at(client, affinity.ids[index], index as u32, now);
        }
        Some(index)
    }
}

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

    /// Builds the table for `services` on `node`, carrying over state from
    /// `previous` for the service ports and endpoints that survive. `now` is the
    /// wall-clock time used as the creation time of new services.
    ///
    /// When two frontends collide (validation should prevent it), the service
    /// that sorts first by namespace/name keeps the address.
    pub fn build(
        node: NodeSpec,
        services: Vec<ServiceSpec>,
        previous: Option<&Snapshot>,
        now: SystemTime,
    ) -> Self {
        let mut out = Snapshot {
            generation: previous.map_or(1, |p| p.generation + 1),
            node,
            services: BTreeMap::new(),
            frontends: HashMap::with_capacity_and_hasher(
                previous.map_or(0, |p| p.frontends.len()),
                FastHash::default(),
            ),
        };
        let same_node = previous.is_some_and(|p| p.node == out.node);
        let mut specs = services;
        specs.sort_by(|a, b| a.key.cmp(&b.key));
        // Both sides are in key order: walk the previous services beside the
        // new ones (a merge, not 10,000 tree searches), and bulk-build the
        // new map from sorted entries (`from_iter` keeps the last of equal
        // keys, as inserting in order did).
        let mut prev_services = previous.map(|p| p.services.iter().peekable());
        let mut entries: Vec<(ServiceKey, ServiceEntry)> = Vec::with_capacity(specs.len());
        for spec in specs {
            let prev_service = prev_services.as_mut().and_then(|it| {
                while it.next_if(|(k, _)| **k < spec.key).is_some() {}
                it.peek().filter(|(k, _)| **k == spec.key).map(|(_, v)| *v)
            });
            // A service whose spec is unchanged (on an unchanged node) keeps
            // its service ports as they are: building them again would give
            // equal ports (every carried-over piece of state is carried over
            // whole), but would cost the writer 10 allocations per endpoint
            // and make readers miss the cache on memory they had warm. A
            // reload that changes one service of 10,000 rebuilds one.
            if let Some(prev) = prev_service.filter(|p| same_node && *p.spec == spec) {
                out.add_frontends(&prev.spec, &prev.ports);
                entries.push((spec.key, prev.clone()));
                continue;
            }
            let created = prev_service.map_or(now, |s| s.created);
            let ports: Vec<Arc<ServicePort>> = spec
                .ports
                .iter()
                .map(|port| {
                    let key = ServicePortKey {
                        service: spec.key.clone(),
                        port_name: port.name.clone(),
                        protocol: port.protocol,
                        port: port.port,
                    };
                    let prev = prev_service.and_then(|s| s.ports.iter().find(|p| p.key == key));
                    Arc::new(build_port(
                        &out.node,
                        &spec,
                        port,
                        key,
                        prev.map(|p| &**p),
                        now,
                    ))
                })
                .collect();
            out.add_frontends(&spec, &ports);
            entries.push((
                spec.key.clone(),
                ServiceEntry {
                    spec: Arc::new(spec),
                    created,
                    ports,
                },
            ));
        }
        out.services = entries.into_iter().collect();
        out
    }

    fn add_frontends(&mut self, spec: &ServiceSpec, ports: &[Arc<ServicePort>]) {
        if spec.service_type == ServiceType::ExternalName {
            return;
        }
        let internal_local = spec.internal_traffic_policy == TrafficPolicy::Local;
        let external_local = spec.external_traffic_policy == TrafficPolicy::Local;
        let ranges: Option<Arc<[ipnet::IpNet]>> = (spec.service_type == ServiceType::LoadBalancer
            && !spec.load_balancer_source_ranges.is_empty())
        .then(|| spec.load_balancer_source_ranges.clone().into());
        for (port_spec, port) in spec.ports.iter().zip(ports) {
            let mut add = |ip: IpAddr, number: u16, kind: FrontendKind, local: bool| {
                let key = FrontendKey {
                    addr: SocketAddr::new(ip, number),
                    protocol: port_spec.protocol,
                };
                let source_ranges = if kind == FrontendKind::LoadBalancer {
                    ranges.clone()
                } else {
                    None
                };
                self.frontends.entry(key).or_insert_with(|| FrontendEntry {
                    port: port.clone(),
                    kind,
                    local,
                    source_ranges,
                });
            };
            if let Some(ip) = spec.cluster_ip.ip() {
                add(ip, port_spec.port, FrontendKind::ClusterIp, internal_local);
                for ip in &spec.external_ips {
                    add(
                        *ip,
                        port_spec.port,
                        FrontendKind::ExternalIp,
                        external_local,
                    );
                }
                for ip in &spec.load_balancer_ips {
                    add(
                        *ip,
                        port_spec.port,
                        FrontendKind::LoadBalancer,
                        external_local,
                    );
                }
            }
            if spec.service_type.has_node_ports() {
                if let Some(node_port) = port_spec.node_port {
                    for ip in self.node.addresses.clone() {
                        add(ip, node_port, FrontendKind::NodePort, external_local);
                    }
                }
            }
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

fn build_port(
    node: &NodeSpec,
    spec: &ServiceSpec,
    port: &crate::spec::PortSpec,
    key: ServicePortKey,
    prev: Option<&ServicePort>,
    now: SystemTime,
) -> ServicePort {
    let mut eps: Vec<&crate::spec::EndpointSpec> = port.endpoints.iter().collect();
    eps.sort_by_key(|e| e.addr);
    eps.dedup_by_key(|e| e.addr);
    let endpoints: Vec<Endpoint> = eps
        .into_iter()
        .map(|e| {
            let before = prev.and_then(|p| p.index_of(e.addr).map(|i| &p.endpoints[i]));
            let ready = (e.serving && !e.terminating) || spec.publish_not_ready_addresses;
            let conditions = (ready, e.serving, e.terminating, e.weight > 0);
            Endpoint {
                addr: e.addr,
                node: e.node.clone(),
                weight: e.weight,
                ready,
                serving: e.serving,
                terminating: e.terminating,
                pod: e.pod.clone(),
                hostname: e.hostname.clone(),
                stats: before.map(|b| b.stats.clone()).unwrap_or_default(),
                health: before.map(|b| b.health.clone()).unwrap_or_default(),
                since: before
                    .filter(|b| (b.ready, b.serving, b.terminating, b.weight > 0) == conditions)
                    .map_or(now, |b| b.since),
            }
        })
        .collect();
    let index_of = endpoints
        .iter()
        .enumerate()
        .map(|(i, e)| (e.addr, i as u32))
        .collect();
    let cluster = selection(
        &endpoints,
        |_| true,
        prev.map(|p| (&p.cluster, &p.endpoints[..])),
    );
    let local = selection(
        &endpoints,
        |e| e.node.as_deref() == Some(node.name.as_str()),
        prev.map(|p| (&p.local, &p.endpoints[..])),
    );
    let affinity = match spec.session_affinity {
        SessionAffinity::None => None,
        SessionAffinity::ClientIp { timeout } => {
            let table = prev
                .and_then(|p| p.affinity.as_ref())
                .map(|a| a.table.clone())
                .unwrap_or_else(|| Arc::new(AffinityTable::new(timeout)));
            table.set_timeout(timeout);
            // Drops pins to endpoints that left.
            Some(PortAffinity::new(table, &endpoints))
        }
    };
    ServicePort {
        key,
        service_type: spec.service_type,
        target_port: port.target_port.clone(),
        node_port: port.node_port,
        endpoints,
        index_of,
        cluster,
        local,
        affinity,
        stats: prev.map(|p| p.stats.clone()).unwrap_or_default(),
    }
}

/// Candidates for new connections: ready endpoints; when none is ready, the
/// serving-and-terminating ones (Kubernetes' terminating fallback).
fn selection(
    endpoints: &[Endpoint],
    eligible: impl Fn(&Endpoint) -> bool,
    prev: Option<(&WeightedTable, &[Endpoint])>,
) -> WeightedTable {
    let pick = |cond: &dyn Fn(&Endpoint) -> bool| -> Vec<(u32, u32)> {
        endpoints
            .iter()
            .enumerate()
            .filter(|(_, e)| eligible(e) && cond(e) && e.weight > 0)
            .map(|(i, e)| (i as u32, e.weight))
            .collect()
    };
    let mut weighted = pick(&|e| e.ready);
    if weighted.is_empty() {
        weighted = pick(&|e| e.serving && e.terminating);
    }
    let signature = |pairs: &[(u32, u32)], eps: &[Endpoint]| -> Vec<(SocketAddr, u32)> {
        pairs
            .iter()
            .map(|&(i, w)| (eps[i as usize].addr, w))
            .collect()
    };
    let cursor = prev.and_then(|(table, prev_eps)| {
        let prev_pairs: Vec<(u32, u32)> = table
            .candidates()
            .iter()
            .map(|&i| (i, prev_eps[i as usize].weight))
            .collect();
        (signature(&prev_pairs, prev_eps) == signature(&weighted, endpoints))
            .then(|| table.cursor())
    });
    WeightedTable::new(&weighted, cursor)
}

/// The one handle through which snapshots are published: writers `store` a
/// whole new table, readers `load` without ever waiting on them.
///
/// A replaced snapshot is freed by the publisher, never by a reader: freeing a
/// 10,000-service table takes tens of milliseconds, and a reader that happened
/// to hold the last reference when a swap landed used to pay for it inside a
/// connection's pick (the snapshot bench's p99). So `store` keeps each replaced
/// snapshot in `retired` and frees, on its own thread, those no reader holds
/// any more; a reader that lets go of a retired snapshot only decrements a
/// count. What readers still hold is freed by a later `store` or by
/// [`Table::collect`].
#[derive(Debug)]
pub struct Table {
    current: ArcSwap<Snapshot>,
    retired: Mutex<Vec<Arc<Snapshot>>>,
}

impl Table {
    /// A handle publishing `snapshot`.
    pub fn new(snapshot: Snapshot) -> Self {
        Table {
            current: ArcSwap::from_pointee(snapshot),
            retired: Mutex::new(Vec::new()),
        }
    }

    /// The current snapshot (cheap; hold it for the length of one decision).
    #[inline]
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Publishes a new snapshot. The one it replaces is freed here once no
    /// reader holds it, or kept for a later `store` or [`Table::collect`].
    pub fn store(&self, snapshot: Snapshot) {
        let old = self.current.swap(Arc::new(snapshot));
        self.retire(Some(old));
    }

    /// Frees the replaced snapshots that no reader holds any more; returns how
    /// many are still held. Call it now and then (lb-proxy does every second)
    /// so a snapshot a reader held across the last `store` does not stay in
    /// memory until the next one.
    pub fn collect(&self) -> usize {
        self.retire(None)
    }

    fn retire(&self, old: Option<Arc<Snapshot>>) -> usize {
        let (dead, held) = {
            // Every update of the list is a push or a partition, so a panic
            // elsewhere while holding the lock leaves it consistent.
            let mut retired = self.retired.lock().unwrap_or_else(|e| e.into_inner());
            retired.extend(old);
            // A retired snapshot is no longer in `current`, so no reader can
            // take a new reference to it: a count of one (ours) stays one.
            let (dead, held): (Vec<_>, Vec<_>) =
                retired.drain(..).partition(|s| Arc::strong_count(s) == 1);
            *retired = held;
            (dead, retired.len())
        };
        // Freed outside the lock, on the publisher's thread.
        drop(dead);
        held
    }

    /// Builds the next snapshot from `services` with state carried over from the
    /// current one, and publishes it. Returns the new generation.
    pub fn rebuild(&self, node: NodeSpec, services: Vec<ServiceSpec>, now: SystemTime) -> u64 {
        let next = {
            let prev = self.load();
            Snapshot::build(node, services, Some(&prev), now)
            // `prev` goes here, before the store, so the retired snapshot
            // is ours alone unless a reader holds it.
        };
        let generation = next.generation();
        self.store(next);
        generation
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{EndpointSpec, PortSpec};
    use std::collections::HashSet;
    use std::time::Duration;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }
    fn node() -> NodeSpec {
        NodeSpec {
            name: "node-1".into(),
            addresses: vec![ip("127.0.1.1")],
        }
    }
    fn web(eps: &[&str], affinity: SessionAffinity) -> ServiceSpec {
        let mut port = PortSpec::tcp("http", 80);
        for e in eps {
            port = port.with_endpoint(EndpointSpec::new(sa(e)));
        }
        ServiceSpec::cluster_ip("default", "web", ip("127.96.0.10"))
            .with_port(port)
            .with_affinity(affinity)
    }
    fn entry(s: &Snapshot) -> FrontendEntry {
        s.frontend(sa("127.96.0.10:80"), Protocol::Tcp)
            .unwrap()
            .clone()
    }

    #[test]
    fn source_ranges_filter_only_load_balancer_frontends() {
        let mut svc = web(&["127.0.244.1:8080"], SessionAffinity::None);
        svc.service_type = ServiceType::LoadBalancer;
        svc.load_balancer_ips = vec![ip("127.0.122.110")];
        svc.load_balancer_source_ranges = vec!["127.0.0.5/32".parse().unwrap()];
        svc.ports[0].node_port = Some(30080);
        let s = Snapshot::build(node(), vec![svc], None, SystemTime::now());
        let lb = s.frontend(sa("127.0.122.110:80"), Protocol::Tcp).unwrap();
        assert_eq!(lb.kind, FrontendKind::LoadBalancer);
        assert!(lb.admits(ip("127.0.0.5")));
        assert!(lb.admits(ip("::ffff:127.0.0.5")));
        assert!(!lb.admits(ip("127.0.0.6")));
        for other in ["127.96.0.10:80", "127.0.1.1:30080"] {
            let f = s.frontend(sa(other), Protocol::Tcp).unwrap();
            assert!(f.admits(ip("127.0.0.6")), "{other} must not filter");
        }
    }

    #[test]
    fn round_robin_position_survives_a_swap_with_the_same_endpoints() {
        let eps = ["127.0.0.1:1", "127.0.0.2:1", "127.0.0.3:1"];
        let now = Instant::now();
        let a = Snapshot::build(
            node(),
            vec![web(&eps, SessionAffinity::None)],
            None,
            SystemTime::now(),
        );
        let first = entry(&a).pick(ip("127.0.0.9"), now).unwrap().index;
        let b = Snapshot::build(
            node(),
            vec![web(&eps, SessionAffinity::None)],
            Some(&a),
            SystemTime::now(),
        );
        let second = entry(&b).pick(ip("127.0.0.9"), now).unwrap().index;
        assert_eq!(second, (first + 1) % 3);
        assert_eq!(b.generation(), 2);
    }

    #[test]
    fn client_ip_affinity_survives_endpoint_churn() {
        let aff = SessionAffinity::ClientIp {
            timeout: Duration::from_secs(60),
        };
        let now = Instant::now();
        let a = Snapshot::build(
            node(),
            vec![web(&["127.0.0.1:1", "127.0.0.2:1"], aff)],
            None,
            SystemTime::now(),
        );
        let e = entry(&a);
        let pinned = e
            .port
            .endpoint(e.pick(ip("127.0.0.9"), now).unwrap().index)
            .addr;
        let other = if pinned == sa("127.0.0.1:1") {
            "127.0.0.2:1"
        } else {
            "127.0.0.1:1"
        };
        // A third endpoint joins: the pin holds.
        let b = Snapshot::build(
            node(),
            vec![web(&["127.0.0.1:1", "127.0.0.2:1", "127.0.0.3:1"], aff)],
            Some(&a),
            SystemTime::now(),
        );
        let e = entry(&b);
        for _ in 0..10 {
            let p = e.pick(ip("127.0.0.9"), now).unwrap();
            assert_eq!(e.port.endpoint(p.index).addr, pinned);
            assert_eq!(p.reason, PickReason::Affinity);
        }
        // The pinned endpoint leaves: the client moves, and stays moved.
        let c = Snapshot::build(
            node(),
            vec![web(&[other, "127.0.0.3:1"], aff)],
            Some(&b),
            SystemTime::now(),
        );
        let e = entry(&c);
        let moved = e
            .port
            .endpoint(e.pick(ip("127.0.0.9"), now).unwrap().index)
            .addr;
        assert_ne!(moved, pinned);
        for _ in 0..5 {
            assert_eq!(
                e.port
                    .endpoint(e.pick(ip("127.0.0.9"), now).unwrap().index)
                    .addr,
                moved
            );
        }
    }

    #[test]
    fn a_pin_follows_its_endpoint_to_a_new_position_and_not_an_old_snapshots_departed_one() {
        let aff = SessionAffinity::ClientIp {
            timeout: Duration::from_secs(60),
        };
        let now = Instant::now();
        let eps = ["127.0.0.2:1", "127.0.0.4:1", "127.0.0.6:1"];
        let a = Snapshot::build(node(), vec![web(&eps, aff)], None, SystemTime::now());
        let clients: Vec<IpAddr> = (1..=6).map(|c| IpAddr::from([127, 0, 9, c])).collect();
        let pick = |s: &Snapshot, c: IpAddr| {
            let e = entry(s);
            let p = e.pick(c, now).unwrap();
            (e.port.endpoint(p.index).addr, p.reason)
        };
        let pinned: Vec<SocketAddr> = clients.iter().map(|&c| pick(&a, c).0).collect();
        // Endpoints join before each one: every index moves, every pin holds.
        let moved = [
            "127.0.0.1:1",
            "127.0.0.2:1",
            "127.0.0.3:1",
            "127.0.0.4:1",
            "127.0.0.5:1",
            "127.0.0.6:1",
        ];
        let b = Snapshot::build(node(), vec![web(&moved, aff)], Some(&a), SystemTime::now());
        for (&c, &addr) in clients.iter().zip(&pinned) {
            assert_eq!(pick(&b, c), (addr, PickReason::Affinity));
        }
        // 127.0.0.4 leaves; `b` (still in use during the reload) pins a new
        // client to it after `c` was built. `c` does not honour that pin.
        let c = Snapshot::build(
            node(),
            vec![web(&["127.0.0.2:1", "127.0.0.6:1"], aff)],
            Some(&b),
            SystemTime::now(),
        );
        let late = IpAddr::from([127, 0, 9, 99]);
        let e = entry(&b);
        let four = e.port.index_of(sa("127.0.0.4:1")).unwrap();
        e.failover(
            e.port.table(false).candidates()[four - 1] as usize,
            late,
            now,
        );
        assert_eq!(pick(&b, late), (sa("127.0.0.4:1"), PickReason::Affinity));
        let (now_at, reason) = pick(&c, late);
        assert_ne!(now_at, sa("127.0.0.4:1"));
        assert_eq!(reason, PickReason::RoundRobin);
        assert_eq!(pick(&c, late), (now_at, PickReason::Affinity));
    }

    #[test]
    fn switching_affinity_off_and_on_applies_live() {
        let aff = SessionAffinity::ClientIp {
            timeout: Duration::from_secs(60),
        };
        let eps = ["127.0.0.1:1", "127.0.0.2:1"];
        let now = Instant::now();
        let a = Snapshot::build(
            node(),
            vec![web(&eps, SessionAffinity::None)],
            None,
            SystemTime::now(),
        );
        assert!(entry(&a).port.affinity().is_none());
        let b = Snapshot::build(node(), vec![web(&eps, aff)], Some(&a), SystemTime::now());
        let e = entry(&b);
        let first = e.pick(ip("127.0.0.9"), now).unwrap().index;
        assert!((0..5).all(|_| e.pick(ip("127.0.0.9"), now).unwrap().index == first));
        let c = Snapshot::build(
            node(),
            vec![web(&eps, SessionAffinity::None)],
            Some(&b),
            SystemTime::now(),
        );
        let e = entry(&c);
        let picks: HashSet<usize> = (0..4)
            .map(|_| e.pick(ip("127.0.0.9"), now).unwrap().index)
            .collect();
        assert_eq!(picks.len(), 2);
    }

    #[test]
    fn terminating_endpoints_serve_only_when_none_is_ready() {
        let mut spec = web(&["127.0.0.1:1", "127.0.0.2:1"], SessionAffinity::None);
        spec.ports[0].endpoints[0].terminating = true;
        let s = Snapshot::build(node(), vec![spec.clone()], None, SystemTime::now());
        let e = entry(&s);
        assert!((0..4).all(|_| e.pick(ip("127.0.0.9"), Instant::now()).unwrap().index == 1));
        spec.ports[0].endpoints[1].serving = false;
        let s = Snapshot::build(node(), vec![spec.clone()], None, SystemTime::now());
        let e = entry(&s);
        assert_eq!(e.pick(ip("127.0.0.9"), Instant::now()).unwrap().index, 0);
        spec.ports[0].endpoints[0].serving = false;
        let s = Snapshot::build(node(), vec![spec], None, SystemTime::now());
        assert!(!entry(&s).has_endpoints());
    }

    #[test]
    fn publish_not_ready_addresses_makes_every_endpoint_ready() {
        let mut spec = web(&["127.0.0.1:1"], SessionAffinity::None);
        spec.ports[0].endpoints[0].serving = false;
        spec.publish_not_ready_addresses = true;
        let s = Snapshot::build(node(), vec![spec], None, SystemTime::now());
        assert!(entry(&s).has_endpoints());
    }

    #[test]
    fn node_port_services_listen_on_every_node_address() {
        let mut spec = web(&["127.0.0.1:1"], SessionAffinity::None);
        spec.service_type = ServiceType::NodePort;
        spec.ports[0].node_port = Some(30001);
        let s = Snapshot::build(node(), vec![spec], None, SystemTime::now());
        let f = s.frontend(sa("127.0.1.1:30001"), Protocol::Tcp).unwrap();
        assert_eq!(f.kind, FrontendKind::NodePort);
        assert_eq!(s.frontends().count(), 2);
    }

    #[test]
    fn headless_and_external_name_services_have_no_frontends() {
        let mut headless = web(&["127.0.0.1:1"], SessionAffinity::None);
        headless.cluster_ip = crate::spec::ClusterIp::None;
        let s = Snapshot::build(node(), vec![headless], None, SystemTime::now());
        assert_eq!(s.frontends().count(), 0);
        assert_eq!(s.services().count(), 1);
    }

    #[test]
    fn failover_cycles_through_every_candidate() {
        let s = Snapshot::build(
            node(),
            vec![web(
                &["127.0.0.1:1", "127.0.0.2:1", "127.0.0.3:1"],
                SessionAffinity::None,
            )],
            None,
            SystemTime::now(),
        );
        let e = entry(&s);
        let now = Instant::now();
        let mut seen = HashSet::new();
        let mut i = e.pick(ip("127.0.0.9"), now).unwrap().index;
        for _ in 0..3 {
            seen.insert(i);
            i = e.failover(i, ip("127.0.0.9"), now).unwrap();
        }
        assert_eq!(seen.len(), 3);
    }

    #[test]
    fn an_unchanged_service_keeps_its_ports_and_a_changed_one_is_rebuilt() {
        let mut other = web(&["127.0.0.2:1"], SessionAffinity::None);
        other.key = ServiceKey::new("default", "other");
        other.cluster_ip = crate::spec::ClusterIp::Ip(ip("127.96.0.11"));
        let a = Snapshot::build(
            node(),
            vec![web(&["127.0.0.1:1"], SessionAffinity::None), other.clone()],
            None,
            SystemTime::now(),
        );
        other.ports[0].endpoints[0].weight = 2;
        let b = Snapshot::build(
            node(),
            vec![other, web(&["127.0.0.1:1"], SessionAffinity::None)],
            Some(&a),
            SystemTime::now(),
        );
        let port = |s: &Snapshot, name: &str| {
            s.service(&ServiceKey::new("default", name)).unwrap().ports[0].clone()
        };
        assert!(Arc::ptr_eq(&port(&a, "web"), &port(&b, "web")));
        assert!(!Arc::ptr_eq(&port(&a, "other"), &port(&b, "other")));
        assert_eq!(port(&b, "other").endpoint(0).weight, 2);
        assert!(Arc::ptr_eq(&entry(&b).port, &port(&b, "web")));
        // On another node, Local policies may select other endpoints: rebuilt.
        let elsewhere = NodeSpec {
            name: "node-2".into(),
            ..node()
        };
        let c = Snapshot::build(
            elsewhere,
            vec![web(&["127.0.0.1:1"], SessionAffinity::None)],
            Some(&b),
            SystemTime::now(),
        );
        assert!(!Arc::ptr_eq(&port(&b, "web"), &port(&c, "web")));
    }

    #[test]
    fn a_replaced_snapshot_is_freed_by_the_publisher_not_the_reader() {
        let table = Table::new(Snapshot::empty(node()));
        let held = table.load();
        table.rebuild(
            node(),
            vec![web(&["127.0.0.1:1"], SessionAffinity::None)],
            SystemTime::now(),
        );
        // The reader's copy is not the last one: the table keeps it retired.
        assert_eq!(Arc::strong_count(&held), 2);
        assert_eq!(table.collect(), 1);
        drop(held);
        assert_eq!(table.collect(), 0);
        // Nobody held the previous one this time: the store freed it.
        table.rebuild(node(), vec![], SystemTime::now());
        assert_eq!(table.collect(), 0);
    }

    #[test]
    fn counters_and_age_survive_rebuilds() {
        let table = Table::new(Snapshot::empty(node()));
        let t0 = SystemTime::now();
        table.rebuild(
            node(),
            vec![web(&["127.0.0.1:1"], SessionAffinity::None)],
            t0,
        );
        let snap = table.load();
        crate::stats::add(&entry(&snap).port.endpoint(0).stats.connections, 3);
        table.rebuild(
            node(),
            vec![web(&["127.0.0.1:1", "127.0.0.2:1"], SessionAffinity::None)],
            t0 + Duration::from_secs(5),
        );
        let snap = table.load();
        let e = entry(&snap);
        let idx = e.port.index_of(sa("127.0.0.1:1")).unwrap();
        assert_eq!(
            crate::stats::read(&e.port.endpoint(idx).stats.connections),
            3
        );
        assert_eq!(snap.services().next().unwrap().created, t0);
    }
}
