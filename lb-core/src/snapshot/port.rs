//! A service port and its selection policy: which endpoint a new connection
//! or flow gets (its client's affinity pin, else the next by weight), which one
//! to try after a dial failed, and how passive-health ejection bends both
//! (ejected endpoints are skipped, unless every candidate is ejected: the
//! panic rule).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::affinity::AffinityTable;
use crate::health::EndpointHealth;
use crate::model::{ProxyProtocol, ServicePortKey, ServiceType, SourceAddress};
use crate::select::WeightedTable;
use crate::spec::TargetPort;
use crate::stats::{EndpointStats, PortStats};

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
    /// EndpointSlice `zone`, when known (shown in the views; topology was
    /// applied to the selection tables when the snapshot was built).
    pub zone: Option<String>,
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
    // The fields are the snapshot's to fill (`build.rs`): everyone else reads
    // them through the methods below.
    pub(super) key: ServicePortKey,
    pub(super) service_type: ServiceType,
    pub(super) target_port: TargetPort,
    pub(super) node_port: Option<u16>,
    /// Sorted by address, one per address: [`ServicePort::index_of`]
    /// searches it (a map beside it was 6 MB at 10,000 ports of 10).
    pub(super) endpoints: Vec<Endpoint>,
    pub(super) cluster: WeightedTable,
    pub(super) local: WeightedTable,
    pub(super) affinity: Option<PortAffinity>,
    pub(super) stats: Arc<PortStats>,
    pub(super) proxy_protocol: Option<ProxyProtocol>,
    pub(super) accept_proxy_protocol: bool,
    pub(super) source_address: Option<SourceAddress>,
}

/// A sticky port's pin table and its endpoints' ids in it.
#[derive(Debug)]
pub(super) struct PortAffinity {
    pub(super) table: Arc<AffinityTable>,
    /// The id of each endpoint (by index), which pins store instead of the
    /// address ([`AffinityTable::endpoint_ids`]).
    ids: Vec<u32>,
    /// `(id, index)` sorted by id: finds a pinned endpoint after a snapshot
    /// moved it (the pin's index hint no longer matches).
    by_id: Vec<(u32, u32)>,
}

impl PortAffinity {
    pub(super) fn new(table: Arc<AffinityTable>, endpoints: &[Endpoint]) -> Self {
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

    /// The PROXY protocol header each connection (UDP: datagram) to an
    /// endpoint starts with, if the service asks for one.
    pub fn proxy_protocol(&self) -> Option<ProxyProtocol> {
        self.proxy_protocol
    }

    /// Whether each TCP connection to it must start with a PROXY header
    /// (`accept_proxy_protocol`).
    pub fn accepts_proxy_protocol(&self) -> bool {
        self.accept_proxy_protocol
    }

    /// Where its endpoints are dialed from, when the service says
    /// (otherwise `[proxy] source_address`).
    pub fn source_address(&self) -> Option<SourceAddress> {
        self.source_address
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
        self.endpoints.binary_search_by_key(&addr, |e| e.addr).ok()
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
        (self.table(local).is_candidate(index) && !self.ejection_in_force(local, index, now))
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

    /// Whether picks skip endpoint `index` at `now` because it is ejected, in
    /// the cluster-wide or node-local table: its own ejection
    /// ([`EndpointHealth::is_ejected`]) after the port's panic rule, under
    /// which, when every candidate of the table is ejected, none is.
    #[inline]
    pub fn ejection_in_force(&self, local: bool, index: usize, now: Instant) -> bool {
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

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::time::Duration;

    use super::*;
    use crate::fixtures::{entry, ip, node, web};
    use crate::model::SessionAffinity;
    use crate::snapshot::{FrontendEntry, Snapshot};
    use crate::spec::{EndpointSpec, NodeSpec, PortSpec, ServiceSpec};

    /// `web` over `n` endpoints, 127.0.0.1:1 to 127.0.0.n:1.
    fn snapshot(n: u8) -> Snapshot {
        let mut port = PortSpec::tcp("http", 80);
        for i in 1..=n {
            port = port.with_endpoint(EndpointSpec::new(SocketAddr::from(([127, 0, 0, i], 1))));
        }
        let svc =
            ServiceSpec::cluster_ip("default", "web", [127, 96, 0, 10].into()).with_port(port);
        Snapshot::build(NodeSpec::default(), vec![svc], None, SystemTime::now())
    }

    /// Ejects endpoint `index` of `e` from `now` for 10 s.
    fn eject(e: &FrontendEntry, index: usize, now: Instant) {
        let h = &e.port.endpoint(index).health;
        assert!(h
            .record_failure(now, SystemTime::now(), 1, Duration::from_secs(10))
            .is_some());
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
    fn ejected_endpoints_get_no_picks_until_the_ejection_runs_out() {
        let s = snapshot(3);
        let e = entry(&s);
        let now = Instant::now();
        eject(&e, 1, now);
        let client = IpAddr::from([127, 0, 0, 9]);
        let picked: HashSet<usize> = (0..30)
            .map(|_| e.pick(client, now).unwrap().index)
            .collect();
        assert_eq!(picked, HashSet::from([0, 2]));
        assert!(e.port.ejection_in_force(false, 1, now));
        assert_eq!(e.failover(0, client, now), Some(2));
        assert_eq!(e.failover(2, client, now), Some(0));
        let later = now + Duration::from_secs(10);
        let picked: HashSet<usize> = (0..30)
            .map(|_| e.pick(client, later).unwrap().index)
            .collect();
        assert_eq!(picked.len(), 3);
    }

    #[test]
    fn when_every_endpoint_is_ejected_none_is() {
        let s = snapshot(3);
        let e = entry(&s);
        let now = Instant::now();
        for i in 0..3 {
            eject(&e, i, now);
        }
        let client = IpAddr::from([127, 0, 0, 9]);
        let picked: HashSet<usize> = (0..30)
            .map(|_| e.pick(client, now).unwrap().index)
            .collect();
        assert_eq!(
            picked.len(),
            3,
            "the panic rule keeps every endpoint in rotation"
        );
        assert!((0..3).all(|i| !e.port.ejection_in_force(false, i, now)));
        assert!(e.failover(0, client, now).is_some());
    }

    #[test]
    fn ejection_survives_a_rebuild() {
        let a = snapshot(2);
        let now = Instant::now();
        eject(&entry(&a), 0, now);
        let spec = (*a.services().next().unwrap().spec).clone();
        let b = Snapshot::build(NodeSpec::default(), vec![spec], Some(&a), SystemTime::now());
        assert!(entry(&b).port.ejection_in_force(false, 0, now));
    }
}
