//! An endpoint that is one of this proxy's own frontends would loop every
//! connection back into lb: refused on the endpoint's own path, naming the
//! frontend, once frontends are allocated.

mod support;

use lb_config::parse_str;
use lb_config::source::{load_merged, DesiredState, Sourced};
use support::{assert_error, config, errors, etcd_origin, memory_loader, CIDR, NODE};

/// A service `web` on cluster IP 127.96.5.5:80 (and node port 30000 on
/// 127.0.1.1), with two pods behind it.
const WEB: &str = r#"
[[services]]
name = "web"
type = "NodePort"
cluster_ip = "127.96.5.5"
selector = { app = "web" }
ports = [{ name = "http", port = 80, target_port = 8080 }]
[[pods]]
name = "web-1"
ip = "127.0.245.1"
labels = { app = "web" }
"#;

fn file(body: &str) -> String {
    file_on(NODE, body)
}

/// [`WEB`] and `body` on the node `node` (a `[node]` table), with one node
/// port to allocate: 30000.
fn file_on(node: &str, body: &str) -> String {
    format!("{CIDR}node_port_range = \"30000-30000\"\n{node}{WEB}{body}")
}

#[test]
fn an_endpoint_that_is_a_cluster_ip_of_the_same_file_is_refused_on_its_address() {
    // The loop is the second address of the subset; a host name before it
    // keeps its index in the path.
    let text = file(
        r#"
[[services]]
name = "loop"
ports = [{ name = "http", port = 81 }]
[[endpoints]]
name = "loop"
[[endpoints.subsets]]
addresses = [{ host = "db.example.test" }, { ip = "127.96.5.5" }]
ports = [{ name = "http", port = 80 }]
"#,
    );
    assert_error(
        &text,
        "endpoints[loop].subsets[0].addresses[1]: Invalid value: \"127.96.5.5:80\": must not be a frontend of this proxy: it is the cluster IP 127.96.5.5:80 of services[web], so connections to it would loop back into lb",
    );
}

#[test]
fn a_not_ready_address_that_is_the_services_own_cluster_ip_is_refused_too() {
    let text = format!(
        "{CIDR}{}",
        r#"
[[services]]
name = "self"
namespace = "shop"
cluster_ip = "127.96.5.6"
ports = [{ name = "http", port = 80 }]
[[endpoints]]
name = "self"
namespace = "shop"
[[endpoints.subsets]]
addresses = [{ ip = "127.0.245.2" }]
not_ready_addresses = [{ ip = "127.96.5.6" }]
ports = [{ name = "http", port = 80 }]
"#
    );
    assert_eq!(
        errors(&text),
        vec!["endpoints[shop/self].subsets[0].not_ready_addresses[0]: Invalid value: \"127.96.5.6:80\": must not be a frontend of this proxy: it is the cluster IP 127.96.5.6:80 of services[shop/self], so connections to it would loop back into lb"]
    );
}

#[test]
fn a_pod_that_is_a_node_address_at_an_allocated_node_port_is_refused_on_the_pod() {
    // web's node port is allocated: the range holds only 30000.
    let text = file(
        r#"
[[services]]
name = "api"
selector = { app = "api" }
ports = [{ port = 80, target_port = 30000 }]
[[pods]]
name = "api-1"
ip = "127.0.1.1"
labels = { app = "api" }
"#,
    );
    assert_eq!(
        errors(&text),
        vec!["pods[api-1]: Invalid value: \"127.0.1.1:30000\": must not be a frontend of this proxy: it is the node port 127.0.1.1:30000 of services[web], so connections to it would loop back into lb"]
    );
}

#[test]
fn a_loopback_endpoint_at_a_node_port_on_a_wildcard_node_address_is_a_loop_and_another_address_is_left_to_the_data_plane(
) {
    let wildcard = |ip: &str| {
        file_on(
            "[node]\naddresses = [\"0.0.0.0\"]\n",
            &format!(
                r#"
[[services]]
name = "api"
ports = [{{ name = "http", port = 80 }}]
[[endpoints]]
name = "api"
[[endpoints.subsets]]
addresses = [{{ ip = "{ip}" }}]
ports = [{{ name = "http", port = 30000 }}]
"#
            ),
        )
    };
    assert_eq!(
        errors(&wildcard("127.0.245.9")),
        vec!["endpoints[api].subsets[0].addresses[0]: Invalid value: \"127.0.245.9:30000\": must not be a frontend of this proxy: it reaches the node port 0.0.0.0:30000 of services[web] (node address 0.0.0.0 listens on every local address), so connections to it would loop back into lb"]
    );
    // Whether 10.9.9.9 is this host's is known only where it runs.
    config(&wildcard("10.9.9.9"));
}

#[test]
fn the_same_address_and_port_over_another_protocol_is_no_loop() {
    config(&file(
        r#"
[[services]]
name = "dns"
ports = [{ name = "dns", port = 53, protocol = "UDP" }]
[[endpoints]]
name = "dns"
[[endpoints.subsets]]
addresses = [{ ip = "127.96.5.5" }]
ports = [{ name = "dns", port = 80, protocol = "UDP" }]
"#,
    ));
}

#[test]
fn a_looping_etcd_object_is_skipped_with_its_key_and_the_rest_applies() {
    let local = DesiredState {
        file: Some(parse_str(&file("")).unwrap()),
        ..DesiredState::default()
    };
    let from_etcd = parse_str(
        r#"
[[services]]
name = "loop"
ports = [{ name = "http", port = 81 }]
[[endpoints]]
name = "loop"
[[endpoints.subsets]]
addresses = [{ ip = "127.96.5.5" }]
ports = [{ name = "http", port = 80 }]
"#,
    )
    .unwrap();
    let etcd = DesiredState {
        services: vec![Sourced::new(
            (*from_etcd.services[0]).clone(),
            etcd_origin("/lb/services/default/loop", 5),
        )],
        endpoints: vec![Sourced::new(
            (*from_etcd.endpoints[0]).clone(),
            etcd_origin("/lb/endpoints/default/loop", 6),
        )],
        ..DesiredState::default()
    };
    let config = load_merged(&mut memory_loader(), vec![local, etcd]).unwrap();
    assert!(
        config.warnings.iter().any(|w| w.starts_with(
            "skipped etcd object: /lb/endpoints/default/loop: endpoints[loop].subsets[0].addresses[0]: Invalid value: \"127.96.5.5:80\""
        )),
        "{:?}",
        config.warnings
    );
    let looped = config
        .services
        .iter()
        .find(|s| s.key.name == "loop")
        .unwrap();
    assert!(looped.ports[0].endpoints.is_empty());
}
