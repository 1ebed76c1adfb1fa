//! Topology-aware routing as kube-proxy does it (`pkg/proxy/topology.go`,
//! `CategorizeEndpoints`), with the hints the EndpointSlice controller would
//! write (`k8s.io/endpointslice/trafficdist`), because lb is both.
//!
//! - **Hints.** An endpoint's hints are those its source states (an
//!   EndpointSlice's `hints`, an `[[endpoints]]` address's `for_zones` and
//!   `for_nodes`). When it states none and its service sets
//!   `trafficDistribution`, a *ready* endpoint gets the controller's: its own
//!   zone, and with `PreferSameNode` also its own node.
//! - **Mode.** Over the endpoints that may take connections (ready, weight
//!   above 0): when every one has node hints and one names this node, only
//!   those naming this node are used (`PreferSameNode`); else when every one
//!   has zone hints and one names this node's zone, only those naming the
//!   zone (`PreferSameZone`); else all of them. A node without a zone never
//!   matches a zone hint.
//! - **Where.** Only the cluster-wide table is filtered (cluster IP traffic
//!   under `internalTrafficPolicy: Cluster`, external traffic under
//!   `externalTrafficPolicy: Cluster`); a Local policy's node-local table
//!   ignores topology, and the terminating fallback (no ready endpoint
//!   anywhere) ignores it too, as in kube-proxy.
//!
//! All of it runs when the snapshot is built (`snapshot/build.rs`): a pick
//! reads the prebuilt table and pays nothing for topology.

use crate::model::TrafficDistribution;
use crate::spec::{EndpointHints, NodeSpec};

/// Which endpoints this node's cluster traffic uses (kube-proxy's
/// `topologyMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Every usable endpoint: no hints apply.
    Any,
    /// Endpoints whose zone hints name this node's zone.
    SameZone,
    /// Endpoints whose node hints name this node.
    SameNode,
}

/// One hint list as kube-proxy would read it: stated, derived from one name,
/// or none.
#[derive(Debug, Clone, Copy)]
enum Names<'a> {
    Stated(&'a [String]),
    Derived(&'a str),
    None,
}

impl Names<'_> {
    fn is_empty(self) -> bool {
        match self {
            Names::Stated(list) => list.is_empty(),
            Names::Derived(_) => false,
            Names::None => true,
        }
    }

    fn has(self, name: &str) -> bool {
        match self {
            Names::Stated(list) => list.iter().any(|n| n == name),
            Names::Derived(n) => n == name,
            Names::None => false,
        }
    }
}

/// The hints kube-proxy reads for one endpoint (borrowed: computing them
/// allocates nothing).
#[derive(Debug, Clone, Copy)]
pub struct Hints<'a> {
    zones: Names<'a>,
    nodes: Names<'a>,
}

impl<'a> Hints<'a> {
    /// The hints of an endpoint in `zone` on `node`: those its source
    /// states, else, for a ready endpoint of a service with
    /// `trafficDistribution`, those the EndpointSlice controller derives (the
    /// zone; with `PreferSameNode` the node too). An empty zone or node name
    /// counts as none.
    pub fn of(
        stated: &'a EndpointHints,
        zone: Option<&'a str>,
        node: Option<&'a str>,
        ready: bool,
        distribution: Option<TrafficDistribution>,
    ) -> Self {
        if !stated.is_empty() {
            return Hints {
                zones: Names::Stated(&stated.for_zones),
                nodes: Names::Stated(&stated.for_nodes),
            };
        }
        let derived = |name: Option<&'a str>| match name.filter(|n| !n.is_empty()) {
            Some(n) => Names::Derived(n),
            None => Names::None,
        };
        match distribution.filter(|_| ready) {
            None => Hints {
                zones: Names::None,
                nodes: Names::None,
            },
            Some(d) => Hints {
                zones: derived(zone),
                nodes: if d == TrafficDistribution::PreferSameNode {
                    derived(node)
                } else {
                    Names::None
                },
            },
        }
    }
}

/// kube-proxy's `topologyModeFromHints` over the hints of the endpoints that
/// may take connections (ready, weight above 0).
pub fn mode<'a>(usable: impl IntoIterator<Item = Hints<'a>>, node: &NodeSpec) -> Mode {
    let zone = node.zone.as_deref().filter(|z| !z.is_empty());
    let (mut all_nodes, mut for_node) = (true, false);
    let (mut all_zones, mut for_zone) = (true, false);
    for h in usable {
        if h.nodes.is_empty() {
            all_nodes = false;
        } else if h.nodes.has(&node.name) {
            for_node = true;
        }
        if h.zones.is_empty() {
            all_zones = false;
        } else if zone.is_some_and(|z| h.zones.has(z)) {
            for_zone = true;
        }
    }
    if all_nodes && for_node {
        Mode::SameNode
    } else if all_zones && for_zone {
        Mode::SameZone
    } else {
        Mode::Any
    }
}

/// kube-proxy's `availableForTopology`: whether an endpoint with `hints` is
/// used under `mode` on `node`.
pub fn available(hints: Hints<'_>, mode: Mode, node: &NodeSpec) -> bool {
    match mode {
        Mode::Any => true,
        Mode::SameNode => hints.nodes.has(&node.name),
        Mode::SameZone => node.zone.as_deref().is_some_and(|z| hints.zones.has(z)),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::net::SocketAddr;
    use std::time::{Instant, SystemTime};

    use proptest::prelude::*;

    use super::*;
    use crate::fixtures::{entry, ip, node};
    use crate::model::{SessionAffinity, TrafficPolicy};
    use crate::snapshot::Snapshot;
    use crate::spec::{EndpointSpec, PortSpec, ServiceSpec};

    fn zoned() -> NodeSpec {
        NodeSpec {
            zone: Some("a".into()),
            ..node()
        }
    }

    /// `web` over endpoints `(last octet, zone, node, ready)` at 127.0.0.X:1.
    fn web(
        eps: &[(u8, Option<&str>, &str, bool)],
        distribution: Option<TrafficDistribution>,
    ) -> ServiceSpec {
        let mut port = PortSpec::tcp("http", 80);
        for &(i, zone, node, ready) in eps {
            let mut e = EndpointSpec::new(SocketAddr::from(([127, 0, 0, i], 1)));
            e.zone = zone.map(str::to_string);
            e.node = Some(node.to_string());
            e.serving = ready;
            port = port.with_endpoint(e);
        }
        let mut s = ServiceSpec::cluster_ip("default", "web", ip("127.96.0.10")).with_port(port);
        s.traffic_distribution = distribution;
        s.session_affinity = SessionAffinity::None;
        s
    }

    /// The last octets of the addresses 40 picks reach.
    fn picked(s: &Snapshot) -> HashSet<u8> {
        let e = entry(s);
        (0..40)
            .map(|_| {
                let p = e.pick(ip("127.0.9.9"), Instant::now()).unwrap();
                match e.port.endpoint(p.index).addr.ip() {
                    std::net::IpAddr::V4(v4) => v4.octets()[3],
                    std::net::IpAddr::V6(_) => 0,
                }
            })
            .collect()
    }

    fn build(node: NodeSpec, svc: ServiceSpec) -> Snapshot {
        Snapshot::build(node, vec![svc], None, SystemTime::now())
    }

    const CLOSE: Option<TrafficDistribution> = Some(TrafficDistribution::PreferClose);

    #[test]
    fn prefer_close_keeps_cluster_traffic_in_this_nodes_zone() {
        let eps = [
            (1, Some("a"), "n1", true),
            (2, Some("b"), "n2", true),
            (3, Some("a"), "n3", true),
        ];
        assert_eq!(
            picked(&build(zoned(), web(&eps, CLOSE))),
            HashSet::from([1, 3])
        );
        let same_zone = Some(TrafficDistribution::PreferSameZone);
        assert_eq!(
            picked(&build(zoned(), web(&eps, same_zone))),
            HashSet::from([1, 3])
        );
        // Without the field, every endpoint.
        assert_eq!(picked(&build(zoned(), web(&eps, None))).len(), 3);
    }

    #[test]
    fn prefer_close_falls_back_to_every_ready_endpoint() {
        // No ready endpoint in zone a: all ready ones.
        let eps = [
            (1, Some("a"), "n1", false),
            (2, Some("b"), "n2", true),
            (3, Some("c"), "n3", true),
        ];
        assert_eq!(
            picked(&build(zoned(), web(&eps, CLOSE))),
            HashSet::from([2, 3])
        );
        // A node without a zone: all ready ones.
        let eps = [(1, Some("a"), "n1", true), (2, Some("b"), "n2", true)];
        assert_eq!(picked(&build(node(), web(&eps, CLOSE))).len(), 2);
        // One ready endpoint without a zone has no hint: kube-proxy ignores
        // every hint of the port.
        let eps = [
            (1, Some("a"), "n1", true),
            (2, Some("b"), "n2", true),
            (3, None, "n3", true),
        ];
        assert_eq!(picked(&build(zoned(), web(&eps, CLOSE))).len(), 3);
    }

    #[test]
    fn prefer_same_node_tries_this_node_then_its_zone_then_all() {
        let same_node = Some(TrafficDistribution::PreferSameNode);
        let eps = [
            (1, Some("a"), "node-1", true),
            (2, Some("a"), "n2", true),
            (3, Some("b"), "n3", true),
        ];
        assert_eq!(
            picked(&build(zoned(), web(&eps, same_node))),
            HashSet::from([1])
        );
        let eps = [
            (1, Some("a"), "node-1", false),
            (2, Some("a"), "n2", true),
            (3, Some("b"), "n3", true),
        ];
        assert_eq!(
            picked(&build(zoned(), web(&eps, same_node))),
            HashSet::from([2])
        );
        let eps = [(2, Some("b"), "n2", true), (3, Some("c"), "n3", true)];
        assert_eq!(picked(&build(zoned(), web(&eps, same_node))).len(), 2);
    }

    #[test]
    fn stated_zone_hints_are_honoured_only_when_every_ready_endpoint_has_them() {
        let hinted = |zones: &[&str]| EndpointHints {
            for_zones: zones.iter().map(|z| z.to_string()).collect(),
            for_nodes: Vec::new(),
        };
        let mut svc = web(
            &[
                (1, Some("b"), "n1", true),
                (2, Some("b"), "n2", true),
                (3, Some("a"), "n3", false),
            ],
            None,
        );
        // Endpoint 1 (in zone b) is hinted for zone a; endpoint 2 for b.
        svc.ports[0].endpoints[0].hints = hinted(&["a"]);
        svc.ports[0].endpoints[1].hints = hinted(&["b"]);
        assert_eq!(picked(&build(zoned(), svc.clone())), HashSet::from([1]));
        // No hint names this node's zone: ignored.
        svc.ports[0].endpoints[0].hints = hinted(&["c"]);
        assert_eq!(picked(&build(zoned(), svc.clone())).len(), 2);
        // A ready endpoint without hints: ignored.
        svc.ports[0].endpoints[0].hints = hinted(&["a"]);
        svc.ports[0].endpoints[1].hints = EndpointHints::default();
        assert_eq!(picked(&build(zoned(), svc.clone())).len(), 2);
        // The node has no zone: ignored.
        svc.ports[0].endpoints[1].hints = hinted(&["b"]);
        assert_eq!(picked(&build(node(), svc)).len(), 2);
    }

    #[test]
    fn local_traffic_policy_wins_over_topology_and_the_terminating_fallback_ignores_it() {
        let eps = [(1, Some("b"), "node-1", true), (2, Some("a"), "n2", true)];
        let mut svc = web(&eps, CLOSE);
        svc.internal_traffic_policy = TrafficPolicy::Local;
        assert_eq!(picked(&build(zoned(), svc)), HashSet::from([1]));
        // Nothing ready anywhere: serving-and-terminating endpoints of every
        // zone.
        let mut svc = web(
            &[(1, Some("a"), "n1", true), (2, Some("b"), "n2", true)],
            CLOSE,
        );
        for e in &mut svc.ports[0].endpoints {
            e.terminating = true;
        }
        assert_eq!(picked(&build(zoned(), svc)).len(), 2);
    }

    #[test]
    fn a_drained_in_zone_endpoint_does_not_hold_the_zone() {
        let mut svc = web(
            &[(1, Some("a"), "n1", true), (2, Some("b"), "n2", true)],
            CLOSE,
        );
        svc.ports[0].endpoints[0].weight = 0;
        assert_eq!(picked(&build(zoned(), svc)), HashSet::from([2]));
    }

    #[test]
    fn the_endpoint_view_carries_the_zone() {
        let s = build(zoned(), web(&[(1, Some("a"), "n1", true)], None));
        assert_eq!(entry(&s).port.endpoint(0).zone.as_deref(), Some("a"));
    }

    proptest! {
        /// With PreferClose and every endpoint in a zone, a pick is in this
        /// node's zone whenever a ready endpoint there exists, and never a
        /// not-ready endpoint while any is ready.
        #[test]
        fn prefer_close_picks_in_zone_and_never_a_not_ready_endpoint(
            eps in proptest::collection::vec((0u8..3, any::<bool>(), 1u32..4), 1..12),
            picks in 1usize..30,
        ) {
            let zones = ["a", "b", "c"];
            let mut port = PortSpec::tcp("http", 80);
            for (i, &(z, ready, w)) in eps.iter().enumerate() {
                let mut e = EndpointSpec::new(SocketAddr::from(([127, 0, 0, i as u8 + 1], 1)))
                    .with_weight(w)
                    .with_zone(zones[z as usize]);
                e.serving = ready;
                port = port.with_endpoint(e);
            }
            let mut svc = ServiceSpec::cluster_ip("default", "web", ip("127.96.0.10")).with_port(port);
            svc.traffic_distribution = CLOSE;
            let s = build(zoned(), svc);
            let any_ready = eps.iter().any(|e| e.1);
            let ready_in_zone = eps.iter().any(|e| e.1 && e.0 == 0);
            let e = entry(&s);
            for _ in 0..picks {
                let Some(p) = e.pick(ip("127.0.9.9"), Instant::now()) else {
                    prop_assert!(!any_ready);
                    continue;
                };
                let chosen = e.port.endpoint(p.index);
                prop_assert!(chosen.ready || !any_ready);
                if ready_in_zone {
                    prop_assert_eq!(chosen.zone.as_deref(), Some("a"));
                }
            }
        }
    }
}
