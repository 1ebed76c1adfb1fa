//! Where lb once differed from Kubernetes' validation and defaulting, each
//! read through the TOML file and through a manifest: the same rule, the
//! same words (Kubernetes' message, lb's paths).

// Every test here compares the file with a manifest.
#![cfg(feature = "manifests")]

mod support;

use lb_config::manifests::load_str;
use lb_config::source::{load_merged, DesiredState};
use lb_config::{parse_str, Config};
use lb_core::TargetPort;
use support::{errors, load, memory_loader, with_cidr};

const FILE: &str = "[node]\nname = \"node-1\"\naddresses = [\"127.0.1.1\"]\n[cluster]\nservice_cidr = \"127.96.0.0/16\"\n";

/// Loads `yaml` as the manifests beside [`FILE`].
fn manifests(yaml: &str) -> Result<Config, Vec<String>> {
    let file = DesiredState {
        file: Some(parse_str(FILE).unwrap()),
        ..DesiredState::default()
    };
    let state = load_str(yaml, "k8s.yaml").map_err(|e| e.lines())?;
    load_merged(&mut memory_loader(), vec![file, state]).map_err(|e| e.lines())
}

/// The error lines of manifests that must be refused.
fn manifest_errors(yaml: &str) -> Vec<String> {
    match manifests(yaml) {
        Ok(_) => panic!("expected errors for:\n{yaml}"),
        Err(lines) => lines,
    }
}

/// A Service `web` with `spec` (YAML flow-mapping entries) and one port 80.
fn service_yaml(spec: &str) -> String {
    format!("apiVersion: v1\nkind: Service\nmetadata: {{name: web}}\nspec: {{{spec}, ports: [{{port: 80}}]}}\n")
}

/// A TOML service `web` with `fields` and one port 80 (without the
/// `[cluster]` head, which `load` adds).
fn service_toml(fields: &str) -> String {
    format!("[[services]]\nname = \"web\"\n{fields}\nports = [{{ port = 80 }}]\n")
}

/// The error lines of a TOML body (after the `[cluster]` head).
fn toml_errors(body: &str) -> Vec<String> {
    errors(&with_cidr(body))
}

#[test]
fn session_affinity_config_is_forbidden_when_affinity_is_none() {
    let expected =
        "services[web].session_affinity_config: Forbidden: must not be set when session affinity is None";
    for affinity in ["session_affinity = \"None\"\n", ""] {
        let toml = service_toml(&format!(
            "{affinity}session_affinity_config = {{ client_ip = {{ timeout_seconds = 60 }} }}"
        ));
        assert_eq!(toml_errors(&toml), [expected]);
    }
    let yaml = service_yaml(
        "sessionAffinity: None, sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}",
    );
    assert_eq!(manifest_errors(&yaml), [expected]);
    // With ClientIP it is the timeout.
    load(&service_toml(
        "session_affinity = \"ClientIP\"\nsession_affinity_config = { client_ip = { timeout_seconds = 60 } }",
    ));
}

#[test]
fn allocate_load_balancer_node_ports_is_forbidden_on_other_types_whatever_its_value() {
    let expected = "services[web].allocate_load_balancer_node_ports: Forbidden: may only be used when `type` is 'LoadBalancer'";
    for value in ["true", "false"] {
        let toml = service_toml(&format!(
            "type = \"NodePort\"\nallocate_load_balancer_node_ports = {value}"
        ));
        assert_eq!(toml_errors(&toml), [expected]);
        let yaml = service_yaml(&format!(
            "type: ClusterIP, allocateLoadBalancerNodePorts: {value}"
        ));
        assert_eq!(manifest_errors(&yaml), [expected]);
    }
}

#[test]
fn the_first_cluster_ip_must_match_cluster_ip() {
    let expected = "services[web].cluster_ips: Invalid value: []string{\"127.96.0.11\", \"fd00::11\"}: first value must match `clusterIP`";
    let toml =
        service_toml("cluster_ip = \"127.96.0.10\"\ncluster_ips = [\"127.96.0.11\", \"fd00::11\"]");
    assert!(
        toml_errors(&toml).contains(&expected.to_string()),
        "{:?}",
        toml_errors(&toml)
    );
    let yaml = service_yaml("clusterIP: 127.96.0.10, clusterIPs: [127.96.0.11, \"fd00::11\"]");
    assert!(
        manifest_errors(&yaml).contains(&expected.to_string()),
        "{:?}",
        manifest_errors(&yaml)
    );
    // Matching, or given alone: the first is the cluster IP.
    let c = load(&service_toml(
        "cluster_ip = \"127.96.0.10\"\ncluster_ips = [\"127.96.0.10\"]",
    ));
    assert_eq!(c.services[0].cluster_ip.to_string(), "127.96.0.10");
    let c = manifests(&service_yaml("clusterIPs: [127.96.0.12]")).unwrap();
    assert_eq!(c.services[0].cluster_ip.to_string(), "127.96.0.12");
}

#[test]
fn an_endpoints_subset_needs_an_address() {
    let expected = "endpoints[web].subsets[0]: Required value: must specify `addresses` or `notReadyAddresses`";
    let toml = String::from(
        "[[services]]\nname = \"web\"\nports = [{ port = 80 }]\n\
         [[endpoints]]\nname = \"web\"\n[[endpoints.subsets]]\nports = [{ port = 8080 }]\n",
    );
    assert_eq!(toml_errors(&toml), [expected]);
    let yaml = format!(
        "{}---\napiVersion: v1\nkind: Endpoints\nmetadata: {{name: web}}\nsubsets:\n- ports: [{{port: 8080}}]\n",
        service_yaml("type: ClusterIP")
    );
    assert_eq!(manifest_errors(&yaml), [expected]);
    // An EndpointSlice with no endpoints is a service with no pods, not an
    // error.
    let yaml = format!(
        "{}---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: web-1, labels: {{kubernetes.io/service-name: web}}}}\n\
         addressType: IPv4\nendpoints: []\nports: [{{port: 8080}}]\n",
        service_yaml("type: ClusterIP")
    );
    let c = manifests(&yaml).unwrap();
    assert!(c.services[0].ports[0].endpoints.is_empty());
}

#[test]
fn a_manifest_target_port_of_0_or_empty_defaults_to_port() {
    let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  ports:\n  \
                - {name: a, port: 80, targetPort: 0}\n  - {name: b, port: 81, targetPort: \"\"}\n";
    let c = manifests(yaml).unwrap();
    let targets: Vec<&TargetPort> = c.services[0].ports.iter().map(|p| &p.target_port).collect();
    assert_eq!(targets, [&TargetPort::Number(80), &TargetPort::Number(81)]);
}

#[test]
fn external_name_on_another_type_is_ignored_with_kubernetes_warning() {
    let expected =
        "services[web].external_name is ignored when services[web].type is not \"ExternalName\"";
    let c = load(&service_toml("external_name = \"db.example.com\""));
    assert!(c.warnings.iter().any(|w| w == expected), "{:?}", c.warnings);
    assert_eq!(c.services[0].external_name, "");
    let c = manifests(&service_yaml(
        "type: ClusterIP, externalName: db.example.com",
    ))
    .unwrap();
    assert!(c.warnings.iter().any(|w| w == expected), "{:?}", c.warnings);
    assert_eq!(c.services[0].external_name, "");
}

#[test]
fn app_protocol_is_kept_and_validated_as_a_qualified_name() {
    let toml = String::from(
        "[[services]]\nname = \"web\"\nports = [{ name = \"a\", port = 80, app_protocol = \"kubernetes.io/h2c\" }, { name = \"b\", port = 81 }]\n",
    );
    let c = load(&toml);
    assert_eq!(
        c.services[0].ports[0].app_protocol.as_deref(),
        Some("kubernetes.io/h2c")
    );
    assert_eq!(c.services[0].ports[1].app_protocol, None);
    let c = manifests(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80, appProtocol: http}]}\n",
    )
    .unwrap();
    assert_eq!(c.services[0].ports[0].app_protocol.as_deref(), Some("http"));

    let prefix = "services[web].ports[0].app_protocol: Invalid value: \"-h2c\": name part must consist of alphanumeric characters";
    let lines = toml_errors(&service_toml("").replace(
        "ports = [{ port = 80 }]",
        "ports = [{ port = 80, app_protocol = \"-h2c\" }]",
    ));
    assert!(
        lines.len() == 1 && lines[0].starts_with(prefix),
        "{lines:?}"
    );
    let lines = manifest_errors(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80, appProtocol: \"-h2c\"}]}\n",
    );
    assert!(
        lines.len() == 1 && lines[0].starts_with(prefix),
        "{lines:?}"
    );
}

#[test]
fn a_bad_source_range_in_a_manifest_has_kubernetes_current_message() {
    let lines = manifest_errors(&service_yaml(
        "type: LoadBalancer, loadBalancerSourceRanges: [10.0.0.300/8]",
    ));
    assert!(
        lines.contains(&"services[web].load_balancer_source_ranges[0]: Invalid value: \"10.0.0.300/8\": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)".to_string()),
        "{lines:?}"
    );
}

#[test]
fn a_manifest_pod_without_conditions_is_not_ready_and_a_file_pod_follows_its_ready() {
    let yaml = "apiVersion: v1\nkind: Pod\nmetadata: {name: web-1, labels: {app: web}}\n\
                spec: {nodeName: node-1, containers: [{name: c}]}\nstatus: {podIP: 127.0.251.20}\n\
                ---\n\
                apiVersion: v1\nkind: Pod\nmetadata: {name: web-2, labels: {app: web}}\n\
                spec: {nodeName: node-1, containers: [{name: c}]}\n\
                status: {podIP: 127.0.251.21, conditions: [{type: Ready, status: \"True\"}]}\n\
                ---\n\
                apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {selector: {app: web}, ports: [{port: 80}]}\n";
    let c = manifests(yaml).unwrap();
    let serving: Vec<(String, bool)> = c.services[0].ports[0]
        .endpoints
        .iter()
        .map(|e| (e.addr.ip().to_string(), e.serving))
        .collect();
    assert_eq!(
        serving,
        [
            ("127.0.251.20".to_string(), false),
            ("127.0.251.21".to_string(), true)
        ]
    );
    // In the file, `ready` says it (default true).
    let c = load(
        "[[pods]]\nname = \"a\"\nip = \"127.0.251.22\"\nlabels = { app = \"web\" }\n\
         [[pods]]\nname = \"b\"\nip = \"127.0.251.23\"\nready = false\nlabels = { app = \"web\" }\n\
         [[services]]\nname = \"web\"\nselector = { app = \"web\" }\nports = [{ port = 80 }]\n",
    );
    let serving: Vec<bool> = c.services[0].ports[0]
        .endpoints
        .iter()
        .map(|e| e.serving)
        .collect();
    assert_eq!(serving, [true, false]);
}
