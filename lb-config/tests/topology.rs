//! Topology: `[node] zone`, endpoint zones and hints, and a service's
//! `traffic_distribution`, through the TOML file and through manifests, down
//! to the endpoints lb-core picks.

mod support;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use lb_config::Config;
use lb_core::{EndpointHints, Protocol, Snapshot, TrafficDistribution};
use support::{errors, load, port, sa, with_cidr};

/// `[node]` `node-1` in zone `a`.
const NODE_A: &str = "[node]\nname = \"node-1\"\naddresses = [\"127.0.1.1\"]\nzone = \"a\"\n";

/// Pods of `app = web` on port 8080: `web-1` on this node (no zone written),
/// `web-2` on node-2 in zone b, `web-3` on node-3 with no zone.
const PODS: &str = r#"
[[pods]]
name = "web-1"
ip = "127.0.171.1"
labels = { app = "web" }
[[pods]]
name = "web-2"
ip = "127.0.171.2"
node = "node-2"
zone = "b"
labels = { app = "web" }
[[pods]]
name = "web-3"
ip = "127.0.171.3"
node = "node-3"
labels = { app = "web" }
"#;

/// A service `web` on 127.96.0.40:80 selecting `app = web`, with `fields`.
fn web(fields: &str) -> String {
    format!(
        "[[services]]\nname = \"web\"\ncluster_ip = \"127.96.0.40\"\nselector = {{ app = \"web\" }}\n{fields}\nports = [{{ port = 80, target_port = 8080 }}]\n"
    )
}

/// The endpoint addresses 30 connections to `web`'s cluster IP reach.
fn reached(c: &Config) -> HashSet<SocketAddr> {
    let s = Snapshot::build(c.node.clone(), c.services.clone(), None, SystemTime::now());
    let e = s.frontend(sa("127.96.0.40:80"), Protocol::Tcp).unwrap();
    (0..30)
        .map(|_| {
            let p = e.pick(sa("127.0.9.9:1").ip(), Instant::now()).unwrap();
            e.port.endpoint(p.index).addr
        })
        .collect()
}

fn zones(c: &Config) -> Vec<Option<String>> {
    port(c, "web", "")
        .endpoints
        .iter()
        .map(|e| e.zone.clone())
        .collect()
}

#[test]
fn a_pod_on_this_node_is_in_this_nodes_zone_unless_it_says_otherwise() {
    let c = load(&format!("{NODE_A}{PODS}{}", web("")));
    assert_eq!(c.node.zone.as_deref(), Some("a"));
    assert_eq!(zones(&c), [Some("a".into()), Some("b".into()), None]);
    // Without a node zone, the pod on this node has none either.
    let c = load(&format!("[node]\nname = \"node-1\"\n{PODS}{}", web("")));
    assert_eq!(c.node.zone, None);
    assert_eq!(zones(&c), [None, Some("b".into()), None]);
}

#[test]
fn prefer_close_sends_cluster_traffic_to_the_zone_while_every_ready_endpoint_has_one() {
    let pods = PODS.replace("node = \"node-3\"\n", "node = \"node-3\"\nzone = \"c\"\n");
    let c = load(&format!(
        "{NODE_A}{pods}{}",
        web("traffic_distribution = \"PreferClose\"")
    ));
    assert_eq!(
        c.services[0].traffic_distribution,
        Some(TrafficDistribution::PreferClose)
    );
    assert_eq!(reached(&c), HashSet::from([sa("127.0.171.1:8080")]));
    // web-3 has no zone: kube-proxy would find an endpoint without a hint and
    // ignore the preference.
    let c = load(&format!(
        "{NODE_A}{PODS}{}",
        web("traffic_distribution = \"PreferSameZone\"")
    ));
    assert_eq!(reached(&c).len(), 3);
    // Without the field, every endpoint.
    let c = load(&format!("{NODE_A}{pods}{}", web("")));
    assert_eq!(reached(&c).len(), 3);
}

#[test]
fn endpoint_addresses_carry_their_zone_and_hints() {
    let c = load(&format!(
        r#"{NODE_A}
[[services]]
name = "db"
cluster_ip = "127.96.0.40"
ports = [{{ port = 80 }}]
[[endpoints]]
name = "db"
[[endpoints.subsets]]
addresses = [
  {{ ip = "127.0.171.11", zone = "b", for_zones = ["a"] }},
  {{ ip = "127.0.171.12", zone = "b", for_zones = ["b"], for_nodes = ["node-2"] }},
]
ports = [{{ port = 80 }}]
"#
    ));
    let eps = &port(&c, "db", "").endpoints;
    assert_eq!(eps[0].zone.as_deref(), Some("b"));
    assert_eq!(
        eps[1].hints,
        EndpointHints {
            for_zones: vec!["b".into()],
            for_nodes: vec!["node-2".into()],
        }
    );
    let s = Snapshot::build(c.node.clone(), c.services.clone(), None, SystemTime::now());
    let e = s.frontend(sa("127.96.0.40:80"), Protocol::Tcp).unwrap();
    for _ in 0..6 {
        let p = e.pick(sa("127.0.9.9:1").ip(), Instant::now()).unwrap();
        assert_eq!(e.port.endpoint(p.index).addr, sa("127.0.171.11:80"));
    }
}

#[test]
fn traffic_distribution_takes_kubernetes_values_only() {
    for value in ["PreferClose", "PreferSameZone", "PreferSameNode"] {
        load(&web(&format!("traffic_distribution = \"{value}\"")));
    }
    assert_eq!(
        errors(&with_cidr(&web("traffic_distribution = \"Nearest\""))),
        [
            "services[web].traffic_distribution: Unsupported value: \"Nearest\": supported values: \"PreferClose\", \"PreferSameZone\", \"PreferSameNode\""
        ]
    );
}

#[test]
fn zones_and_hints_are_checked_as_kubernetes_checks_them() {
    let lines = errors(&with_cidr(
        r#"[node]
zone = "not a zone"
[[pods]]
name = "p"
ip = "127.0.171.1"
zone = "-b"
[[services]]
name = "db"
ports = [{ port = 80 }]
[[endpoints]]
name = "db"
[[endpoints.subsets]]
addresses = [
  { ip = "127.0.171.11", for_zones = ["a", "a"] },
  { ip = "127.0.171.12", for_zones = ["a", "b", "c", "d", "e", "f", "g", "h", "i"] },
  { ip = "127.0.171.13", for_nodes = ["Node_1"] },
]
ports = [{ port = 80 }]
"#,
    ));
    let label = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
    let expected = [
        format!("node.zone: Invalid value: \"not a zone\": {label}"),
        format!("pods[p].zone: Invalid value: \"-b\": {label}"),
        "endpoints[db].subsets[0].addresses[0].for_zones[1]: Duplicate value: \"a\"".to_string(),
        "endpoints[db].subsets[0].addresses[1].for_zones: Too many: 9: must have at most 8 items"
            .to_string(),
    ];
    for e in &expected {
        assert!(
            lines.contains(e),
            "missing\n  {e}\namong\n  {}",
            lines.join("\n  ")
        );
    }
    assert!(
        lines.iter().any(|l| l.starts_with(
            "endpoints[db].subsets[0].addresses[2].for_nodes[0]: Invalid value: \"Node_1\""
        )),
        "{}",
        lines.join("\n")
    );
}

/// The same through manifests: a Service's `trafficDistribution`, Pods
/// (zoned by this node's zone when they run on it), and EndpointSlices'
/// `zone` and `hints`.
#[cfg(feature = "manifests")]
mod manifests {
    use lb_config::manifests::load_str;
    use lb_config::parse_str;
    use lb_config::source::{load_merged, DesiredState};

    use super::*;
    use support::memory_loader;

    fn manifests(yaml: &str) -> Result<Config, Vec<String>> {
        let file = DesiredState {
            file: Some(parse_str(&with_cidr(NODE_A)).unwrap()),
            ..DesiredState::default()
        };
        let state = load_str(yaml, "k8s.yaml").map_err(|e| e.lines())?;
        load_merged(&mut memory_loader(), vec![file, state]).map_err(|e| e.lines())
    }

    fn service(extra: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: web}}\nspec: {{clusterIP: 127.96.0.40, {extra}ports: [{{port: 80, targetPort: 8080}}]}}\n"
        )
    }

    fn pod(name: &str, ip: &str, node: &str) -> String {
        format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{app: web}}}}\nspec: {{nodeName: {node}}}\nstatus: {{podIP: {ip}, conditions: [{{type: Ready, status: \"True\"}}]}}\n"
        )
    }

    #[test]
    fn a_manifest_pod_on_this_node_is_in_its_zone_and_prefer_close_keeps_traffic_there() {
        let yaml = format!(
            "{}{}{}",
            service("selector: {app: web}, trafficDistribution: PreferClose, "),
            pod("web-1", "127.0.171.1", "node-1"),
            pod("web-2", "127.0.171.2", "node-2"),
        );
        let c = manifests(&yaml).unwrap();
        assert_eq!(zones(&c), [Some("a".into()), None]);
        assert_eq!(
            c.services[0].traffic_distribution,
            Some(TrafficDistribution::PreferClose)
        );
        // web-2's node has no zone lb knows: no hint, so no preference, as
        // kube-proxy does with an endpoint the controller could not hint.
        assert_eq!(reached(&c).len(), 2);
    }

    #[test]
    fn slice_zones_and_hints_are_read_and_honoured() {
        let yaml = format!(
            "{}---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: web-x, labels: {{kubernetes.io/service-name: web}}}}\naddressType: IPv4\nports: [{{port: 8080}}]\nendpoints:\n- {{addresses: [127.0.171.1], zone: b, hints: {{forZones: [{{name: b}}]}}}}\n- {{addresses: [127.0.171.2], zone: a, hints: {{forZones: [{{name: a}}], forNodes: [{{name: node-2}}]}}}}\n",
            service(""),
        );
        let c = manifests(&yaml).unwrap();
        assert_eq!(zones(&c), [Some("b".into()), Some("a".into())]);
        assert_eq!(
            port(&c, "web", "").endpoints[1].hints,
            EndpointHints {
                for_zones: vec!["a".into()],
                for_nodes: vec!["node-2".into()],
            }
        );
        assert_eq!(reached(&c), HashSet::from([sa("127.0.171.2:8080")]));
    }

    #[test]
    fn an_unknown_traffic_distribution_has_the_same_words_as_in_the_file() {
        let lines = manifests(&service("trafficDistribution: Nearest, ")).unwrap_err();
        assert_eq!(
            lines,
            [
                "services[web].traffic_distribution: Unsupported value: \"Nearest\": supported values: \"PreferClose\", \"PreferSameZone\", \"PreferSameNode\""
            ]
        );
    }
}
