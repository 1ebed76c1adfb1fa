//! Two of lb's listeners on one address, port and protocol fail at `run`
//! (the admin API, DNS and health-check ports bind without SO_REUSEPORT);
//! `check` refuses the clash first, naming both sides. A service frontend
//! never takes the admin, DNS or a health-check address: from etcd only
//! that object is refused, with its key.

mod support;

use lb_config::parse_str;
use lb_config::source::{load_merged, DesiredState, Sourced};
use support::{assert_error, config, errors, etcd_origin, memory_loader, port, CIDR, NODE};

#[test]
fn dns_on_the_admin_address_is_refused_on_dns_listen_naming_the_admin_listener() {
    let text = r#"
[admin]
listen = "127.0.125.1:10249"
[dns]
listen = "127.0.125.1:10249"
"#;
    assert_eq!(
        errors(text),
        vec!["dns.listen: Invalid value: \"127.0.125.1:10249\": would take admin.listen 127.0.125.1:10249 (TCP), a listener of this proxy"]
    );
    // Another port, or another address, is no clash.
    config("[admin]\nlisten = \"127.0.125.1:10249\"\n[dns]\nlisten = \"127.0.125.1:5353\"\n");
    config("[admin]\nlisten = \"127.0.125.1:10249\"\n[dns]\nlisten = \"127.0.125.2:10249\"\n");
}

#[test]
fn dns_on_a_wildcard_address_takes_the_admin_port_on_every_address() {
    assert_error(
        "[admin]\nlisten = \"127.0.125.1:10249\"\n[dns]\nlisten = \"0.0.0.0:10249\"\n",
        "dns.listen: Invalid value: \"0.0.0.0:10249\": would take admin.listen 127.0.125.1:10249 (TCP), a listener of this proxy: 0.0.0.0 listens on every local address",
    );
}

#[test]
fn port_0_is_chosen_at_bind_and_never_clashes() {
    config("[admin]\nlisten = \"127.0.125.1:0\"\n[dns]\nlisten = \"127.0.125.1:0\"\n");
}

#[test]
fn a_cluster_ip_port_on_the_dns_address_is_refused_on_the_service_port() {
    let text = format!(
        r#"{CIDR}
[dns]
listen = "127.96.7.7:53"
[[services]]
name = "dns"
cluster_ip = "127.96.7.7"
ports = [{{ name = "dns", port = 53, protocol = "UDP" }}]
"#
    );
    assert_eq!(
        errors(&text),
        vec!["services[dns].ports[0].port: Invalid value: 53: the cluster IP 127.96.7.7:53 of services[dns] would take dns.listen 127.96.7.7:53 (UDP), a listener of this proxy"]
    );
}

#[test]
fn a_node_port_on_the_admin_address_is_refused_on_the_node_port() {
    let text = format!(
        r#"{CIDR}{NODE}
[admin]
listen = "127.0.1.1:30080"
[[services]]
name = "web"
type = "NodePort"
ports = [{{ port = 80, node_port = 30080 }}]
"#
    );
    assert_eq!(
        errors(&text),
        vec!["services[web].ports[0].node_port: Invalid value: 30080: the node port 127.0.1.1:30080 of services[web] would take admin.listen 127.0.1.1:30080 (TCP), a listener of this proxy"]
    );
}

#[test]
fn a_health_check_node_port_on_a_wildcard_node_address_takes_the_admin_port() {
    let text = format!(
        r#"{CIDR}
[node]
addresses = ["0.0.0.0"]
[admin]
listen = "127.0.125.1:30090"
[[services]]
name = "web"
type = "LoadBalancer"
external_traffic_policy = "Local"
health_check_node_port = 30090
ports = [{{ port = 80 }}]
"#
    );
    assert_eq!(
        errors(&text),
        vec!["services[web].health_check_node_port: Invalid value: 30090: the health-check node port 0.0.0.0:30090 of services[web] would take admin.listen 127.0.125.1:30090 (TCP), a listener of this proxy: 0.0.0.0 listens on every local address"]
    );
}

#[test]
fn an_external_ip_on_the_admin_address_is_refused_on_the_external_ip() {
    let text = format!(
        r#"{CIDR}
[admin]
listen = "127.0.125.1:10249"
[[services]]
name = "web"
external_ips = ["127.0.125.2", "127.0.125.1"]
ports = [{{ port = 10249 }}]
"#
    );
    assert_eq!(
        errors(&text),
        vec!["services[web].external_ips[1]: Invalid value: \"127.0.125.1\": the external IP 127.0.125.1:10249 of services[web] would take admin.listen 127.0.125.1:10249 (TCP), a listener of this proxy"]
    );
}

#[test]
fn a_wildcard_admin_address_takes_its_port_on_every_cluster_ip() {
    let text = format!(
        r#"{CIDR}
[admin]
listen = "0.0.0.0:8080"
[[services]]
name = "web"
cluster_ip = "127.96.7.8"
ports = [{{ port = 8080 }}]
"#
    );
    assert_error(
        &text,
        "services[web].ports[0].port: Invalid value: 8080: the cluster IP 127.96.7.8:8080 of services[web] would take admin.listen 0.0.0.0:8080 (TCP), a listener of this proxy: 0.0.0.0 listens on every local address",
    );
}

#[test]
fn the_same_address_and_port_over_another_protocol_is_no_clash() {
    config(&format!(
        r#"{CIDR}
[admin]
listen = "127.96.7.9:10249"
[[services]]
name = "web"
cluster_ip = "127.96.7.9"
ports = [{{ port = 10249, protocol = "UDP" }}]
"#
    ));
}

#[test]
fn a_node_port_is_never_allocated_on_the_admin_port() {
    let c = config(&format!(
        r#"{CIDR}node_port_range = "30000-30001"
{NODE}
[admin]
listen = "127.0.1.1:30000"
[[services]]
name = "web"
type = "NodePort"
ports = [{{ name = "http", port = 80 }}]
"#
    ));
    assert_eq!(port(&c, "web", "http").node_port, Some(30001));
}

#[test]
fn an_etcd_service_on_the_admin_address_is_skipped_with_its_key_and_the_rest_applies() {
    let file = format!(
        r#"{CIDR}
[admin]
listen = "127.0.125.1:10249"
[[services]]
name = "web"
ports = [{{ port = 80 }}]
"#
    );
    let local = DesiredState {
        file: Some(parse_str(&file).unwrap()),
        ..DesiredState::default()
    };
    let from_etcd = parse_str(
        r#"
[[services]]
name = "grab"
external_ips = ["127.0.125.1"]
ports = [{ port = 10249 }]
[[services]]
name = "fine"
ports = [{ port = 81 }]
"#,
    )
    .unwrap();
    let etcd = DesiredState {
        services: vec![
            Sourced::new(
                (*from_etcd.services[0]).clone(),
                etcd_origin("/lb/services/default/grab", 5),
            ),
            Sourced::new(
                (*from_etcd.services[1]).clone(),
                etcd_origin("/lb/services/default/fine", 6),
            ),
        ],
        ..DesiredState::default()
    };
    let config = load_merged(&mut memory_loader(), vec![local, etcd]).unwrap();
    assert!(
        config.warnings.iter().any(|w| w
            == "skipped etcd object: /lb/services/default/grab: services[grab].external_ips[0]: Invalid value: \"127.0.125.1\": the external IP 127.0.125.1:10249 of services[grab] would take admin.listen 127.0.125.1:10249 (TCP), a listener of this proxy"),
        "{:?}",
        config.warnings
    );
    let names: Vec<&str> = config
        .services
        .iter()
        .map(|s| s.key.name.as_str())
        .collect();
    assert_eq!(names, ["web", "fine"]);
}
