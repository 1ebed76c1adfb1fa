//! Kubernetes manifests as a source: kinds, `List`, skipped kinds and
//! fields, wrong types, and the merge with the file.

mod support;

use std::path::PathBuf;

use lb_config::manifests::{load_path, load_str};
use lb_config::parse_str;
use lb_config::source::{load_merged, merge, DesiredState};
use support::memory_loader;

const FILE: &str = r#"
[node]
name = "node-1"
addresses = ["127.0.1.1"]
[cluster]
service_cidr = "127.96.0.0/16"
"#;

fn load(file: &str, state: DesiredState) -> Result<lb_config::Config, lb_config::ConfigErrors> {
    let file = DesiredState {
        file: Some(parse_str(file).unwrap()),
        ..DesiredState::default()
    };
    load_merged(&mut memory_loader(), vec![file, state])
}

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/manifests")
}

#[test]
fn service_fields_map_onto_the_files_table() {
    let state = load_str(
        r#"
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
  annotations:
    metallb.universe.tf/address-pool: pool-a
    metallb.universe.tf/allow-shared-ip: key-1
spec:
  type: NodePort
  clusterIP: 127.96.0.10
  selector: {app: web}
  sessionAffinity: ClientIP
  sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}
  externalTrafficPolicy: Local
  internalTrafficPolicy: Cluster
  externalIPs: [127.0.50.1]
  publishNotReadyAddresses: true
  ports:
  - name: http
    protocol: TCP
    port: 80
    targetPort: http
    nodePort: 30080
  - name: dns
    protocol: UDP
    port: 53
    targetPort: 5353
"#,
        "web.yaml",
    )
    .unwrap();
    let s = &state.services[0].object;
    assert_eq!(s.name, "web");
    assert_eq!(s.namespace.as_deref(), Some("shop"));
    assert_eq!(s.service_type.as_deref(), Some("NodePort"));
    assert_eq!(s.cluster_ip.as_deref(), Some("127.96.0.10"));
    assert_eq!(s.session_affinity.as_deref(), Some("ClientIP"));
    assert_eq!(
        s.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds),
        Some(60)
    );
    assert_eq!(s.external_traffic_policy.as_deref(), Some("Local"));
    assert_eq!(s.ip_pool.as_deref(), Some("pool-a"));
    assert_eq!(s.allow_shared_ip.as_deref(), Some("key-1"));
    assert_eq!(s.publish_not_ready_addresses, Some(true));
    assert_eq!(s.ports.len(), 2);
    assert_eq!(
        s.ports[0].target_port,
        Some(lb_config::raw::IntOrString::Str("http".into()))
    );
    assert_eq!(s.ports[0].node_port, Some(30080));
    assert_eq!(
        s.ports[1].target_port,
        Some(lb_config::raw::IntOrString::Int(5353))
    );
    assert!(state.warnings.is_empty(), "{:?}", state.warnings);
}

#[test]
fn load_balancer_ips_annotation_requests_the_address() {
    let state = load_str(
        r#"
apiVersion: v1
kind: Service
metadata:
  name: lb
  annotations: {metallb.universe.tf/loadBalancerIPs: "127.0.122.112"}
spec:
  type: LoadBalancer
  ports: [{port: 80}]
"#,
        "lb.yaml",
    )
    .unwrap();
    assert_eq!(
        state.services[0].object.load_balancer_ip.as_deref(),
        Some("127.0.122.112")
    );
}

#[test]
fn lbs_annotations_set_what_a_service_spec_has_no_field_for() {
    let state = load_str(
        r#"
apiVersion: v1
kind: Service
metadata:
  name: web
  annotations:
    lb-proxy/proxy-protocol: "v2"
    lb-proxy/accept-proxy-protocol: "true"
    lb-proxy/source-address: "client"
spec:
  ports: [{port: 80}]
"#,
        "web.yaml",
    )
    .unwrap();
    let web = &state.services[0].object;
    assert_eq!(web.proxy_protocol.as_deref(), Some("v2"));
    assert_eq!(web.accept_proxy_protocol, Some(true));
    assert_eq!(web.source_address.as_deref(), Some("client"));
}

#[test]
fn list_kind_and_multi_document_files_load_every_item() {
    let state = load_str(
        r#"
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata: {name: a}
  spec: {ports: [{port: 80}]}
- apiVersion: v1
  kind: Service
  metadata: {name: b}
  spec: {ports: [{port: 81}]}
---
apiVersion: v1
kind: Service
metadata: {name: c}
spec: {ports: [{port: 82}]}
---
"#,
        "list.yaml",
    )
    .unwrap();
    let names: Vec<_> = state
        .services
        .iter()
        .map(|s| s.object.name.as_str())
        .collect();
    assert_eq!(names, ["a", "b", "c"]);
}

#[test]
fn other_kinds_and_unknown_fields_are_skipped_with_a_warning() {
    let state = load_str(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: nginx-deployment}
spec: {replicas: 3}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cm}
data: {a: b}
---
apiVersion: v1
kind: Service
metadata:
  name: web
  uid: 1234
  resourceVersion: "77"
spec:
  ipFamilies: [IPv4]
  topologyKeys: ["*"]
  ports: [{port: 80, appProtocol: http}]
status: {loadBalancer: {}}
"#,
        "mixed.yaml",
    )
    .unwrap();
    assert_eq!(state.services.len(), 1);
    let w = state.warnings.join("\n");
    assert!(
        w.contains("mixed.yaml: document 1 (Deployment nginx-deployment): skipped"),
        "{w}"
    );
    assert!(w.contains("(ConfigMap cm): skipped"), "{w}");
    assert!(w.contains("ignored fields: spec.topologyKeys"), "{w}");
    assert!(
        !w.contains("uid"),
        "server-filled metadata is ignored silently: {w}"
    );
    assert_eq!(state.warnings.len(), 3, "{w}");
}

#[test]
fn a_wrong_type_is_an_error_naming_the_document_and_field() {
    let err = load_str(
        r#"
apiVersion: v1
kind: Service
metadata: {name: ok}
spec: {ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  ports:
  - port: eighty
"#,
        "bad.yaml",
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(
            "bad.yaml:12:11: document 2 (Service shop/web).spec.ports[0].port: expected an integer, found a string \"eighty\""
        ),
        "{text}"
    );
}

#[test]
fn pods_take_address_node_and_readiness_from_status_and_spec() {
    let state = load_str(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: web-1
  labels: {app: web}
spec:
  nodeName: node-2
  hostname: web-1
  containers:
  - name: c
    image: nginx
    ports: [{name: http, containerPort: 8080}]
    readinessProbe:
      httpGet: {path: /healthz, port: http}
      periodSeconds: 2
status:
  podIP: 127.0.244.9
  conditions:
  - {type: PodScheduled, status: "True"}
  - {type: Ready, status: "False", lastTransitionTime: "2024-04-30T00:00:00Z"}
---
apiVersion: v1
kind: Pod
metadata: {name: pending}
spec: {containers: [{name: c}]}
status: {phase: Pending}
---
apiVersion: v1
kind: Pod
metadata: {name: going, deletionTimestamp: "2024-04-30T00:00:00Z"}
spec: {nodeName: node-1, containers: [{name: c}]}
status: {podIP: 127.0.244.10, conditions: [{type: Ready, status: "True"}]}
"#,
        "pods.yaml",
    )
    .unwrap();
    assert_eq!(state.pods.len(), 2, "a pod without podIP is skipped");
    let p = &state.pods[0].object;
    assert_eq!(p.ip, "127.0.244.9");
    assert_eq!(p.node.as_deref(), Some("node-2"));
    assert_eq!(p.ready, Some(false));
    assert_eq!(p.ports[0].container_port, 8080);
    let probe = p.readiness_probe.as_ref().unwrap();
    assert_eq!(probe.period_seconds, Some(2));
    assert!(probe.http_get.is_some());
    assert_eq!(state.pods[1].object.terminating, Some(true));
    assert!(state
        .warnings
        .iter()
        .any(|w| w.contains("(Pod pending): skipped: no status.podIP")));
}

#[test]
fn endpoint_slices_become_the_services_endpoints() {
    let state = load_str(
        r#"
apiVersion: v1
kind: Service
metadata: {name: db}
spec: {ports: [{name: sql, port: 3306}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: db-abc
  labels: {kubernetes.io/service-name: db}
addressType: IPv4
endpoints:
- addresses: [127.0.244.1]
  conditions: {ready: true, serving: true, terminating: false}
  nodeName: node-1
- addresses: [127.0.244.2]
  conditions: {ready: false}
ports: [{name: sql, port: 3306, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: orphan}
addressType: IPv4
endpoints: []
"#,
        "slices.yaml",
    )
    .unwrap();
    assert_eq!(state.endpoints.len(), 1);
    let e = &state.endpoints[0].object;
    assert_eq!(e.name, "db");
    assert_eq!(e.subsets[0].addresses[0].ip.as_deref(), Some("127.0.244.1"));
    assert_eq!(
        e.subsets[0].addresses[0].node_name.as_deref(),
        Some("node-1")
    );
    assert_eq!(
        e.subsets[0].not_ready_addresses[0].ip.as_deref(),
        Some("127.0.244.2")
    );
    assert!(state
        .warnings
        .iter()
        .any(|w| w.contains("orphan") && w.contains("kubernetes.io/service-name")));
    let config = load(FILE, state).unwrap();
    let db = &config.services[0];
    assert_eq!(db.ports[0].endpoints.len(), 2);
}

#[test]
fn endpoint_slices_replace_their_services_endpoints_object_and_no_other() {
    let doc = |kind: &str, name: &str, ip: &str| match kind {
        "Endpoints" => format!(
            "apiVersion: v1\nkind: Endpoints\nmetadata: {{name: {name}}}\n\
             subsets: [{{addresses: [{{ip: {ip}}}], ports: [{{port: 80}}]}}]\n---\n"
        ),
        _ => format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: {name}-x, labels: {{kubernetes.io/service-name: {name}}}}}\n\
             addressType: IPv4\nendpoints: [{{addresses: [{ip}]}}]\nports: [{{port: 80}}]\n---\n"
        ),
    };
    let text = [
        doc("Endpoints", "a", "127.0.244.1"),
        doc("EndpointSlice", "a", "127.0.244.2"),
        doc("Endpoints", "b", "127.0.244.3"),
        doc("EndpointSlice", "c", "127.0.244.4"),
    ]
    .concat();
    let state = load_str(&text, "mixed.yaml").unwrap();
    let ip_of = |name: &str| {
        let e: Vec<_> = state
            .endpoints
            .iter()
            .filter(|e| e.object.name == name)
            .collect();
        assert_eq!(e.len(), 1, "one Endpoints object for {name}");
        e[0].object.subsets[0].addresses[0].ip.clone()
    };
    assert_eq!(ip_of("a").as_deref(), Some("127.0.244.2"), "the slice wins");
    assert_eq!(ip_of("b").as_deref(), Some("127.0.244.3"), "no slice: kept");
    assert_eq!(ip_of("c").as_deref(), Some("127.0.244.4"));
    let ignored: Vec<_> = state
        .warnings
        .iter()
        .filter(|w| w.contains("the Endpoints object is ignored"))
        .collect();
    assert_eq!(ignored.len(), 1, "{ignored:?}");
    assert!(
        ignored[0].starts_with("endpoints[default/a]"),
        "{ignored:?}"
    );
}

#[test]
fn the_same_object_in_the_file_and_the_manifests_is_an_error() {
    let state = load_str(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80}]}\n",
        "dup.yaml",
    )
    .unwrap();
    let file = format!("{FILE}\n[[services]]\nname = \"web\"\nports = [{{ port = 80 }}]\n");
    let err = merge(&parse_str(&file).unwrap(), vec![state]).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("services[web].name: Duplicate value"),
        "{text}"
    );
    assert!(text.contains("dup.yaml (document 1)"), "{text}");
}

#[test]
fn the_walkthrough_manifests_load_with_loopback_addresses() {
    let state = load_path(&examples()).unwrap();
    let file = std::fs::read_to_string(examples().join("node.toml")).unwrap();
    let config = load(&file, state).unwrap();
    let by_name = |n: &str| {
        config
            .services
            .iter()
            .find(|s| s.key.name == n)
            .unwrap_or_else(|| panic!("{n} missing"))
    };
    assert_eq!(
        by_name("nginx-service").cluster_ip.to_string(),
        "127.96.100.100"
    );
    assert_eq!(by_name("nginx-service").ports[0].endpoints.len(), 3);
    assert_eq!(
        by_name("nginx-nodeport-fixed").ports[0].node_port,
        Some(30001)
    );
    assert!(by_name("nginx-nodeport").ports[0].node_port.is_some());
    assert_eq!(by_name("service-no-selector").ports[0].endpoints.len(), 3);
    by_name("nginx-headless");
    by_name("service-external-name");
    by_name("nginxlb");
}

#[test]
fn a_zero_byte_manifest_file_fails_the_read_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), "").unwrap();
    let err = load_path(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("a.yaml") && err.contains("empty file"),
        "{err}"
    );
    std::fs::write(dir.path().join("a.yaml"), "# nothing here yet\n").unwrap();
    assert!(load_path(dir.path()).is_ok());
}

#[test]
fn deeply_nested_yaml_is_refused_at_once_with_its_line() {
    // 200 KB of nested flow sequences: quadratic for the parser.
    let text = format!(
        "kind: Service\nspec: {}{}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let err = load_str(&text, "deep.yaml").unwrap_err().to_string();
    assert!(
        err.contains("deep.yaml: line 2") && err.contains("64"),
        "{err}"
    );
}

/// A service `db` (port 3306) and one EndpointSlice of it whose endpoints
/// have the given `conditions`, one per address 127.0.251.1, .2, ...
fn slice_conditions(conditions: &[&str]) -> DesiredState {
    let mut text = String::from(
        "apiVersion: v1\nkind: Service\nmetadata: {name: db}\nspec: {ports: [{name: sql, port: 3306}]}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {name: db-1, labels: {kubernetes.io/service-name: db}}\naddressType: IPv4\n\
         ports: [{name: sql, port: 3306}]\nendpoints:\n",
    );
    for (i, c) in conditions.iter().enumerate() {
        text.push_str(&format!(
            "- addresses: [127.0.251.{}]\n  conditions: {c}\n",
            i + 1
        ));
    }
    load_str(&text, "slice.yaml").unwrap()
}

/// An endpoint's (ready, serving, terminating).
type Conditions = (Option<bool>, bool, bool);

/// The conditions of each endpoint of `db`, and the addresses new
/// connections go to.
fn conditions_and_picks(state: DesiredState) -> (Vec<Conditions>, Vec<std::net::SocketAddr>) {
    use lb_core::{Protocol, Snapshot};
    let c = load(FILE, state).unwrap_or_else(|e| panic!("{e}"));
    let s = &c.services[0];
    let conditions = s.ports[0]
        .endpoints
        .iter()
        .map(|e| (e.ready, e.serving, e.terminating))
        .collect();
    let snapshot = Snapshot::build(
        c.node.clone(),
        c.services.clone(),
        None,
        std::time::SystemTime::now(),
    );
    let vip = std::net::SocketAddr::new(s.cluster_ip.ip().unwrap(), 3306);
    let entry = snapshot.frontend(vip, Protocol::Tcp).unwrap();
    let mut picks: Vec<_> = (0..6)
        .filter_map(|_| entry.pick("127.0.0.9".parse().unwrap(), std::time::Instant::now()))
        .map(|p| entry.port.endpoints()[p.index].addr)
        .collect();
    picks.sort();
    picks.dedup();
    (conditions, picks)
}

#[test]
fn slice_conditions_default_as_the_api_says_and_kube_proxy_reads_them() {
    // ready and serving unset are true, terminating unset is false.
    let (conditions, picks) = conditions_and_picks(slice_conditions(&["{}"]));
    assert_eq!(conditions, [(Some(true), true, false)]);
    assert_eq!(picks, ["127.0.251.1:3306".parse().unwrap()]);
    // `ready` is taken as stated (kube-proxy does not derive it).
    let (conditions, picks) = conditions_and_picks(slice_conditions(&[
        "{ready: true, terminating: true}",
        "{ready: false, serving: true}",
    ]));
    assert_eq!(
        conditions,
        [(Some(true), true, true), (Some(false), true, false)]
    );
    assert_eq!(picks, ["127.0.251.1:3306".parse().unwrap()]);
}

#[test]
fn a_slice_whose_only_endpoint_is_serving_and_terminating_serves_it() {
    let (conditions, picks) = conditions_and_picks(slice_conditions(&[
        "{ready: false, serving: true, terminating: true}",
        "{ready: false, serving: false, terminating: true}",
    ]));
    assert_eq!(
        conditions,
        [(Some(false), true, true), (Some(false), false, true)]
    );
    assert_eq!(picks, ["127.0.251.1:3306".parse().unwrap()]);
    // With a ready endpoint beside it, the terminating one takes nothing.
    let (_, picks) = conditions_and_picks(slice_conditions(&[
        "{ready: false, serving: true, terminating: true}",
        "{ready: true}",
    ]));
    assert_eq!(picks, ["127.0.251.2:3306".parse().unwrap()]);
}

#[test]
fn a_slice_endpoint_with_two_addresses_is_one_endpoint_at_its_first_as_kube_proxy_reads_it() {
    let text = "apiVersion: v1\nkind: Service\nmetadata: {name: db}\nspec: {ports: [{name: sql, port: 3306}]}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {name: db-1, labels: {kubernetes.io/service-name: db}}\naddressType: IPv4\n\
         ports: [{name: sql, port: 3306}]\nendpoints:\n\
         - addresses: [127.0.251.1, 127.0.251.2]\n";
    let (_, picks) = conditions_and_picks(load_str(text, "slice.yaml").unwrap());
    assert!(
        picks
            .iter()
            .all(|p| *p == "127.0.251.1:3306".parse().unwrap()),
        "{picks:?}"
    );
    let c = load(FILE, load_str(text, "slice.yaml").unwrap()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.services[0].ports[0].endpoints.len(), 1);
}
