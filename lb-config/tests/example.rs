//! The contract's example file, with addresses moved to loopback and the
//! features of later releases left out, is a valid config.

mod support;

use std::time::Duration;

use lb_core::{ClusterIp, ServiceType, SessionAffinity, TargetPort};
use support::{addrs, ip, memory_loader, sa};

const EXAMPLE: &str = r#"
[node]                       # who this proxy is (kube-proxy's node)
name = "node-1"              # default: the hostname
addresses = ["127.0.1.1"]    # where NodePorts listen; default ["0.0.0.0"]
vip_mode = "bind"            # bind | freebind | interface (see the LoadBalancer issue)
announce_interface = ""      # interface mode: where LoadBalancer addresses are announced

[cluster]
service_cidr = "127.96.0.0/16"
node_port_range = "30000-32767"   # default shown
domain = "cluster.local"          # DNS zone (default shown)

[proxy]
connect_timeouts_ms = [250, 500, 1000, 2000]  # one dial per entry, each to the next endpoint
tcp_idle_timeout = "1h"           # 0 = none
half_close_timeout = "60s"        # after one side sends FIN, the other side has this long
udp_idle_timeout = "30s"
drain_timeout = "30s"
max_connections = 0               # per service port, 0 = unlimited
outlier_consecutive_failures = 5  # dial failures in a row that eject an endpoint (0 = off)
outlier_base_ejection = "10s"     # first ejection; grows while the endpoint keeps failing
udp_max_flows = 16384

[admin]
listen = "127.0.0.1:10249"        # /healthz /readyz /metrics /api/v1/...; "" disables

[[pods]]                          # a backend instance, what Kubernetes calls a Pod
name = "nginx-1"
namespace = "default"             # default "default" (everywhere)
ip = "127.0.244.82"
node = "node-1"                   # file source default: this node; from etcd no default (local nowhere)
hostname = "nginx-1"              # optional, for DNS of headless services
labels = { app = "nginx-deployment" }
ports = [{ name = "http", container_port = 80, protocol = "TCP" }]
weight = 1                        # extension: relative share of new connections, 0 = drain
ready = true                      # static readiness when there is no probe
terminating = false

[[services]]
name = "nginx-service"
namespace = "default"
type = "ClusterIP"                # ClusterIP | NodePort | LoadBalancer | ExternalName
cluster_ip = "127.96.100.100"     # omitted: allocated; "None": headless
selector = { app = "nginx-deployment" }   # omitted: endpoints come from [[endpoints]]
session_affinity = "None"         # None | ClientIP
# session_affinity_config = { client_ip = { timeout_seconds = 10800 } }   # ClientIP only (Forbidden with None)
external_traffic_policy = "Cluster"   # Cluster | Local (NodePort/LoadBalancer/external IPs)
internal_traffic_policy = "Cluster"   # Cluster | Local
external_ips = []
load_balancer_source_ranges = []      # LoadBalancer: allowed client CIDRs, empty = all
allow_shared_ip = ""                  # LoadBalancer: services with the same key may share an address
# allocate_load_balancer_node_ports = true   # LoadBalancer only (Forbidden on other types)
health_check_node_port = 0            # LoadBalancer + Local: allocated when 0
publish_not_ready_addresses = false
external_name = ""                    # ExternalName target
[[services.ports]]
name = "http"                     # required when more than one port
protocol = "TCP"                  # TCP | UDP
port = 80
target_port = 80                  # number or pod port name; default = port

[[services]]
name = "service-no-selector"
type = "NodePort"
[[services.ports]]
name = "http"
port = 80
target_port = "http"
node_port = 30001                 # NodePort/LoadBalancer; omitted: allocated

[[endpoints]]                     # manual Endpoints for a service without selector
name = "service-no-selector"      # same name and namespace as the service
[[endpoints.subsets]]
addresses = [{ ip = "127.0.244.82" }, { ip = "127.0.68.3", node_name = "node-2", weight = 2 }]
not_ready_addresses = []
ports = [{ name = "http", port = 80, protocol = "TCP" }]   # serves the service port of the same name
"#;

#[test]
fn the_contract_example_is_valid() {
    let c = memory_loader()
        .load_str(EXAMPLE)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert_eq!(c.node.name, "node-1");
    assert_eq!(c.node.addresses, vec![ip("127.0.1.1")]);
    assert_eq!(c.proxy.tcp_idle_timeout, Some(Duration::from_secs(3600)));
    assert_eq!(c.admin_listen, Some("127.0.0.1:10249".parse().unwrap()));

    let web = &c.services[0];
    assert_eq!(web.key.name, "nginx-service");
    assert_eq!(
        web.cluster_ip,
        ClusterIp::Ip("127.96.100.100".parse().unwrap())
    );
    assert_eq!(web.session_affinity, SessionAffinity::None);
    assert_eq!(web.ports[0].target_port, TargetPort::Number(80));
    assert_eq!(addrs(&web.ports[0]), vec![sa("127.0.244.82:80")]);

    let manual = &c.services[1];
    assert_eq!(manual.service_type, ServiceType::NodePort);
    assert_eq!(manual.ports[0].node_port, Some(30001));
    assert_eq!(manual.ports[0].target_port, TargetPort::Name("http".into()));
    assert_eq!(manual.ports[0].endpoints.len(), 2);
    assert!(matches!(manual.cluster_ip, ClusterIp::Ip(_)));
}

#[test]
fn the_example_survives_a_round_trip_through_the_raw_structs() {
    let raw = lb_config::parse_str(EXAMPLE).unwrap();
    let text = toml::to_string(&raw).unwrap();
    assert_eq!(lb_config::parse_str(&text).unwrap(), raw);
}
