//! Building a snapshot: every service port from its spec, with the state that
//! outlives a swap carried over from the previous snapshot by stable identity
//! (service port key, endpoint address): round-robin position, affinity pins,
//! counters, passive health, a service's age, and whole service ports when
//! their service did not change.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use super::port::{Endpoint, PortAffinity, ServicePort};
use super::{FastHash, ServiceEntry, Snapshot};
use crate::affinity::AffinityTable;
use crate::model::{ServiceKey, ServicePortKey, SessionAffinity};
use crate::select::WeightedTable;
use crate::spec::{EndpointSpec, NodeSpec, PortSpec, ServiceSpec};
use crate::topology::{self, Hints};

impl Snapshot {
    /// Builds the table for `services` on `node`, carrying over state from
    /// `previous` for the service ports and endpoints that survive. `now` is the
    /// wall-clock time used as the creation time of new services.
    ///
    /// When two frontends collide (validation should prevent it), the service
    /// that sorts first by namespace/name keeps the address.
    ///
    /// `services` may be owned specs or `Arc`s: a spec handed in as an `Arc`
    /// is kept as that `Arc`, so the desired state and the snapshot share one
    /// copy of every service the overlays did not change.
    pub fn build<S: Into<Arc<ServiceSpec>>>(
        node: NodeSpec,
        services: impl IntoIterator<Item = S>,
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
        let mut specs: Vec<Arc<ServiceSpec>> = services.into_iter().map(Into::into).collect();
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
            // The entry takes the new spec's `Arc` (equal to the old one), so
            // the old copy is freed with the old snapshot rather than kept
            // beside the desired state's.
            if let Some(prev) = prev_service
                .filter(|p| same_node && (Arc::ptr_eq(&p.spec, &spec) || *p.spec == *spec))
            {
                out.add_frontends(&spec, &prev.ports);
                entries.push((
                    spec.key.clone(),
                    ServiceEntry {
                        spec,
                        created: prev.created,
                        ports: prev.ports.clone(),
                    },
                ));
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
                    spec,
                    created,
                    ports,
                },
            ));
        }
        out.services = entries.into_iter().collect();
        out
    }
}

fn build_port(
    node: &NodeSpec,
    spec: &ServiceSpec,
    port: &PortSpec,
    key: ServicePortKey,
    prev: Option<&ServicePort>,
    now: SystemTime,
) -> ServicePort {
    let mut eps: Vec<&EndpointSpec> = port.endpoints.iter().collect();
    eps.sort_by_key(|e| e.addr);
    eps.dedup_by_key(|e| e.addr);
    let endpoints: Vec<Endpoint> = eps
        .iter()
        .map(|e| {
            let before = prev.and_then(|p| p.index_of(e.addr).map(|i| &p.endpoints[i]));
            let ready =
                e.ready.unwrap_or(e.serving && !e.terminating) || spec.publish_not_ready_addresses;
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
                zone: e.zone.clone(),
                stats: before.map(|b| b.stats.clone()).unwrap_or_default(),
                health: before.map(|b| b.health.clone()).unwrap_or_default(),
                since: before
                    .filter(|b| (b.ready, b.serving, b.terminating, b.weight > 0) == conditions)
                    .map_or(now, |b| b.since),
            }
        })
        .collect();
    debug_assert!(endpoints.windows(2).all(|w| w[0].addr < w[1].addr));
    // Topology (kube-proxy's CategorizeEndpoints) narrows the cluster-wide
    // table's ready endpoints; the node-local table ignores it.
    let hints: Vec<Hints> = eps
        .iter()
        .zip(&endpoints)
        .map(|(spec_ep, ep)| {
            Hints::of(
                &spec_ep.hints,
                spec_ep.zone.as_deref(),
                spec_ep.node.as_deref(),
                ep.ready,
                spec.traffic_distribution,
            )
        })
        .collect();
    let mode = topology::mode(
        endpoints
            .iter()
            .zip(&hints)
            .filter(|(e, _)| e.ready && e.weight > 0)
            .map(|(_, h)| *h),
        node,
    );
    let cluster = selection(
        &endpoints,
        |_| true,
        |i| topology::available(hints[i], mode, node),
        prev.map(|p| (&p.cluster, &p.endpoints[..])),
    );
    let local = selection(
        &endpoints,
        |e| e.node.as_deref() == Some(node.name.as_str()),
        |_| true,
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
        cluster,
        local,
        affinity,
        stats: prev.map(|p| p.stats.clone()).unwrap_or_default(),
        proxy_protocol: spec.proxy_protocol,
        accept_proxy_protocol: spec.accept_proxy_protocol,
        source_address: spec.source_address,
    }
}

/// Candidates for new connections among the `eligible` endpoints: the ready
/// ones that topology leaves (`preferred`, by index); when none is, the
/// serving-and-terminating ones (Kubernetes' terminating fallback, which
/// ignores topology as kube-proxy's does).
fn selection(
    endpoints: &[Endpoint],
    eligible: impl Fn(&Endpoint) -> bool,
    preferred: impl Fn(usize) -> bool,
    prev: Option<(&WeightedTable, &[Endpoint])>,
) -> WeightedTable {
    let pick = |cond: &dyn Fn(usize, &Endpoint) -> bool| -> Vec<(u32, u32)> {
        endpoints
            .iter()
            .enumerate()
            .filter(|&(i, e)| eligible(e) && cond(i, e) && e.weight > 0)
            .map(|(i, e)| (i as u32, e.weight))
            .collect()
    };
    let mut weighted = pick(&|i, e| e.ready && preferred(i));
    if weighted.is_empty() {
        weighted = pick(&|_, e| e.serving && e.terminating);
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

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::net::IpAddr;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::fixtures::{entry, ip, node, sa, web};
    use crate::snapshot::{PickReason, Table};

    #[test]
    fn every_endpoint_is_found_by_its_address_whatever_the_order_given() {
        let given = [
            "127.0.0.9:1",
            "127.0.0.2:7",
            "127.0.0.2:1",
            "127.0.0.9:1",
            "127.0.0.10:1",
        ];
        let s = Snapshot::build(
            node(),
            vec![web(&given, SessionAffinity::None)],
            None,
            SystemTime::now(),
        );
        let port = entry(&s).port;
        assert_eq!(port.endpoints().len(), 4, "one per address");
        for addr in given {
            let i = port.index_of(sa(addr)).expect("found");
            assert_eq!(port.endpoint(i).addr, sa(addr));
        }
        assert_eq!(port.index_of(sa("127.0.0.2:2")), None);
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
    fn a_stated_ready_is_taken_as_it_is_as_kube_proxy_does() {
        let mut spec = web(&["127.0.0.1:1", "127.0.0.2:1"], SessionAffinity::None);
        // Ready and terminating (a slice may say so): still a ready endpoint,
        // shown as terminating.
        spec.ports[0].endpoints[0].terminating = true;
        spec.ports[0].endpoints[0].ready = Some(true);
        // Serving, not terminating, but stated not ready: never picked.
        spec.ports[0].endpoints[1].ready = Some(false);
        let s = Snapshot::build(node(), vec![spec], None, SystemTime::now());
        let e = entry(&s);
        assert!((0..4).all(|_| e.pick(ip("127.0.0.9"), Instant::now()).unwrap().index == 0));
        let first = &e.port.endpoints()[0];
        assert!(first.ready && first.terminating);
        assert!(!e.port.endpoints()[1].ready);
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
    fn a_spec_handed_in_as_an_arc_is_shared_not_copied() {
        let first = Arc::new(web(&["127.0.0.1:1"], SessionAffinity::None));
        let a = Snapshot::build(node(), vec![first.clone()], None, SystemTime::now());
        let spec = |s: &Snapshot| {
            s.service(&ServiceKey::new("default", "web"))
                .unwrap()
                .spec
                .clone()
        };
        assert!(
            Arc::ptr_eq(&spec(&a), &first),
            "the snapshot holds the caller's Arc"
        );
        // The next desired state is a new, equal Arc: the ports are carried
        // over and the entry takes the new Arc, so the old copy goes with
        // the old snapshot instead of living beside the new desired state.
        let second = Arc::new(web(&["127.0.0.1:1"], SessionAffinity::None));
        let b = Snapshot::build(node(), vec![second.clone()], Some(&a), SystemTime::now());
        assert!(Arc::ptr_eq(&spec(&b), &second));
        let port =
            |s: &Snapshot| s.service(&ServiceKey::new("default", "web")).unwrap().ports[0].clone();
        assert!(Arc::ptr_eq(&port(&a), &port(&b)));
        drop(a);
        assert_eq!(
            Arc::strong_count(&first),
            1,
            "only the caller holds the old spec"
        );
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
