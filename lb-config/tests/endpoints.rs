//! The endpoints controller: which pods and manual endpoints serve each port.

mod support;

use lb_core::EndpointSpec;
use support::{addrs, load, port, sa};

const PODS: &str = r#"
[[pods]]
name = "web-1"
ip = "127.0.244.1"
hostname = "web-1"
labels = { app = "web", tier = "front" }
ports = [{ name = "http", container_port = 8080 }, { name = "metrics", container_port = 9090 }]

[[pods]]
name = "web-2"
ip = "127.0.244.2"
node = "node-2"
weight = 3
labels = { app = "web", tier = "front" }
ports = [{ name = "http", container_port = 8081 }]

[[pods]]
name = "web-other-ns"
namespace = "shop"
ip = "127.0.244.3"
labels = { app = "web", tier = "front" }
ports = [{ name = "http", container_port = 8080 }]

[[pods]]
name = "api"
ip = "127.0.244.4"
labels = { app = "api", tier = "front" }
ports = [{ name = "http", container_port = 8080 }]
"#;

#[test]
fn selector_takes_matching_pods_of_its_namespace_by_target_port_name() {
    let c = load(&format!(
        "{PODS}[[services]]\nname = \"web\"\nselector = {{ app = \"web\", tier = \"front\" }}\nports = [{{ name = \"http\", port = 80, target_port = \"http\" }}]\n"
    ));
    let p = port(&c, "web", "http");
    assert_eq!(
        addrs(p),
        vec![sa("127.0.244.1:8080"), sa("127.0.244.2:8081")]
    );
}

#[test]
fn endpoint_fields_map_from_the_pod() {
    let c = load(&format!(
        "{PODS}[[services]]\nname = \"web\"\nselector = {{ app = \"web\" }}\nports = [{{ name = \"http\", port = 80, target_port = \"http\" }}]\n"
    ));
    let p = port(&c, "web", "http");
    assert_eq!(
        p.endpoints[0],
        EndpointSpec {
            addr: sa("127.0.244.1:8080"),
            node: Some("node-1".into()),
            weight: 1,
            ready: None,
            serving: true,
            terminating: false,
            pod: Some("web-1".into()),
            hostname: Some("web-1".into()),
            zone: None,
            hints: Default::default(),
        }
    );
    assert_eq!(p.endpoints[1].node.as_deref(), Some("node-2"));
    assert_eq!(p.endpoints[1].weight, 3);
}

#[test]
fn selector_matches_pods_in_the_services_own_namespace() {
    let c = load(&format!(
        "{PODS}[[services]]\nname = \"web\"\nnamespace = \"shop\"\nselector = {{ app = \"web\" }}\nports = [{{ name = \"http\", port = 80, target_port = \"http\" }}]\n"
    ));
    assert_eq!(addrs(port(&c, "web", "http")), vec![sa("127.0.244.3:8080")]);
}

#[test]
fn a_number_target_port_needs_no_declared_pod_port() {
    let c = load(&format!(
        "{PODS}[[services]]\nname = \"front\"\nselector = {{ tier = \"front\" }}\nports = [{{ port = 80, target_port = 7000 }}]\n"
    ));
    assert_eq!(
        addrs(port(&c, "front", "")),
        vec![
            sa("127.0.244.1:7000"),
            sa("127.0.244.2:7000"),
            sa("127.0.244.4:7000")
        ]
    );
}

#[test]
fn target_port_defaults_to_port() {
    let c = load(&format!(
        "{PODS}[[services]]\nname = \"api\"\nselector = {{ app = \"api\" }}\nports = [{{ port = 8080 }}]\n"
    ));
    assert_eq!(addrs(port(&c, "api", "")), vec![sa("127.0.244.4:8080")]);
}

#[test]
fn a_pod_without_the_named_port_contributes_nothing() {
    let c = load(&format!(
        "{PODS}[[services]]\nname = \"web\"\nselector = {{ app = \"web\" }}\nports = [{{ name = \"metrics\", port = 9090, target_port = \"metrics\" }}]\n"
    ));
    assert_eq!(
        addrs(port(&c, "web", "metrics")),
        vec![sa("127.0.244.1:9090")]
    );
}

#[test]
fn a_named_port_must_match_the_protocol_too() {
    let c = load(
        "[[pods]]\nname = \"dns\"\nip = \"127.0.244.9\"\nlabels = { app = \"dns\" }\nports = [{ name = \"dns\", container_port = 53, protocol = \"UDP\" }]\n\
         [[services]]\nname = \"dns\"\nselector = { app = \"dns\" }\nports = [{ name = \"dns\", port = 53, target_port = \"dns\" }]\n",
    );
    assert!(port(&c, "dns", "dns").endpoints.is_empty());
}

#[test]
fn not_ready_pods_are_not_serving_and_terminating_maps_through() {
    let c = load(
        "[[pods]]\nname = \"a\"\nip = \"127.0.244.1\"\nready = false\nlabels = { app = \"x\" }\n\
         [[pods]]\nname = \"b\"\nip = \"127.0.244.2\"\nterminating = true\nweight = 0\nlabels = { app = \"x\" }\n\
         [[services]]\nname = \"x\"\nselector = { app = \"x\" }\nports = [{ port = 80 }]\n",
    );
    let eps = &port(&c, "x", "").endpoints;
    assert!(!eps[0].serving && !eps[0].terminating);
    assert!(eps[1].serving && eps[1].terminating);
    assert_eq!(eps[1].weight, 0);
}

#[test]
fn publish_not_ready_addresses_is_passed_to_the_core() {
    let c = load(
        "[[pods]]\nname = \"a\"\nip = \"127.0.244.1\"\nready = false\nlabels = { app = \"x\" }\n\
         [[services]]\nname = \"x\"\npublish_not_ready_addresses = true\nselector = { app = \"x\" }\nports = [{ port = 80 }]\n",
    );
    assert!(c.services[0].publish_not_ready_addresses);
    assert!(!c.services[0].ports[0].endpoints[0].serving);
}

const MANUAL: &str = r#"
[[services]]
name = "legacy"
ports = [{ name = "http", port = 80 }, { name = "admin", port = 81 }]

[[endpoints]]
name = "legacy"
[[endpoints.subsets]]
addresses = [{ ip = "127.0.245.1" }, { ip = "127.0.245.2", node_name = "node-2", weight = 2 }]
not_ready_addresses = [{ ip = "127.0.245.3" }]
ports = [{ name = "http", port = 8080 }, { name = "other", port = 9999 }]
"#;

#[test]
fn a_selectorless_service_takes_its_endpoints_by_port_name() {
    let c = load(MANUAL);
    let p = port(&c, "legacy", "http");
    assert_eq!(
        addrs(p),
        vec![
            sa("127.0.245.1:8080"),
            sa("127.0.245.2:8080"),
            sa("127.0.245.3:8080")
        ]
    );
    assert!(p.endpoints[0].serving && p.endpoints[0].node.is_none());
    assert_eq!(p.endpoints[1].node.as_deref(), Some("node-2"));
    assert_eq!(p.endpoints[1].weight, 2);
    assert!(
        !p.endpoints[2].serving,
        "not_ready_addresses are not serving"
    );
}

#[test]
fn a_port_name_mismatch_means_no_endpoints_not_an_error() {
    let c = load(MANUAL);
    assert!(port(&c, "legacy", "admin").endpoints.is_empty());
}

#[test]
fn endpoints_of_another_namespace_do_not_count() {
    let c = load(
        "[[services]]\nname = \"legacy\"\nports = [{ port = 80 }]\n\
         [[endpoints]]\nname = \"legacy\"\nnamespace = \"shop\"\n[[endpoints.subsets]]\naddresses = [{ ip = \"127.0.245.1\" }]\nports = [{ port = 80 }]\n",
    );
    assert!(port(&c, "legacy", "").endpoints.is_empty());
}

#[test]
fn endpoints_for_a_selector_service_are_ignored_with_a_warning() {
    let c = load(
        "[[services]]\nname = \"web\"\nselector = { app = \"web\" }\nports = [{ port = 80 }]\n\
         [[endpoints]]\nname = \"web\"\n[[endpoints.subsets]]\naddresses = [{ ip = \"127.0.245.1\" }]\nports = [{ port = 80 }]\n",
    );
    assert!(port(&c, "web", "").endpoints.is_empty());
    assert!(
        c.warnings
            .iter()
            .any(|w| w.starts_with("endpoints[web]: ignored")),
        "{:?}",
        c.warnings
    );
}

/// Where new connections to `service`'s first port go now: the addresses the
/// snapshot picks over a few connections.
fn picked(c: &lb_config::Config, service: &str) -> Vec<std::net::SocketAddr> {
    use lb_core::{Protocol, Snapshot};
    let snapshot = Snapshot::build(
        c.node.clone(),
        c.services.clone(),
        None,
        std::time::SystemTime::now(),
    );
    let s = c.services.iter().find(|s| s.key.name == service).unwrap();
    let vip = std::net::SocketAddr::new(s.cluster_ip.ip().unwrap(), s.ports[0].port);
    let entry = snapshot.frontend(vip, Protocol::Tcp).unwrap();
    let mut out: Vec<_> = (0..4)
        .filter_map(|_| entry.pick(ip_of("127.0.0.9"), std::time::Instant::now()))
        .map(|p| entry.port.endpoints()[p.index].addr)
        .collect();
    out.sort();
    out.dedup();
    out
}

fn ip_of(s: &str) -> std::net::IpAddr {
    s.parse().unwrap()
}

const DB: &str = "[[services]]\nname = \"db\"\nports = [{ name = \"sql\", port = 3306 }]\n";

#[test]
fn a_serving_terminating_address_is_picked_only_while_none_is_ready() {
    let only_terminating = format!(
        "{DB}[[endpoints]]\nname = \"db\"\n[[endpoints.subsets]]\n\
         not_ready_addresses = [{{ ip = \"127.0.244.1\", serving = true, terminating = true }}, {{ ip = \"127.0.244.2\" }}]\n\
         ports = [{{ name = \"sql\", port = 3306 }}]\n"
    );
    let c = load(&only_terminating);
    let e = &port(&c, "db", "sql").endpoints;
    assert_eq!(
        (e[0].ready, e[0].serving, e[0].terminating),
        (Some(false), true, true)
    );
    assert_eq!(
        (e[1].ready, e[1].serving, e[1].terminating),
        (Some(false), false, false),
        "a not-ready address is not serving unless it says so"
    );
    assert_eq!(picked(&c, "db"), vec![sa("127.0.244.1:3306")]);

    let with_ready = only_terminating.replace(
        "not_ready_addresses",
        "addresses = [{ ip = \"127.0.244.3\" }]\nnot_ready_addresses",
    );
    assert_eq!(
        picked(&load(&with_ready), "db"),
        vec![sa("127.0.244.3:3306")],
        "a ready address takes every new connection"
    );
}

#[test]
fn a_ready_address_stays_ready_when_it_says_terminating() {
    let c = load(&format!(
        "{DB}[[endpoints]]\nname = \"db\"\n[[endpoints.subsets]]\n\
         addresses = [{{ ip = \"127.0.244.1\", terminating = true }}]\n\
         not_ready_addresses = [{{ ip = \"127.0.244.2\", serving = true, terminating = true }}]\n\
         ports = [{{ name = \"sql\", port = 3306 }}]\n"
    ));
    assert_eq!(picked(&c, "db"), vec![sa("127.0.244.1:3306")]);
}

#[test]
fn a_selector_that_matches_no_pod_is_warned_about() {
    let c = load(&format!(
        "{PODS}[[services]]\nname = \"web\"\nselector = {{ app = \"wbe\" }}\nports = [{{ name = \"http\", port = 80, target_port = \"http\" }}]\n"
    ));
    assert!(port(&c, "web", "http").endpoints.is_empty());
    assert_eq!(
        c.warnings,
        vec![
            "services[web].selector: app=wbe matches no pod in namespace \"default\"; the service has no endpoints until one does"
        ]
    );
}

#[test]
fn a_target_port_name_no_selected_pod_has_is_warned_about() {
    let c = load(&format!(
        "{PODS}[[services]]\nname = \"web\"\nselector = {{ app = \"web\" }}\nports = [{{ name = \"http\", port = 80, target_port = \"http\" }}, {{ name = \"admin\", port = 81, target_port = \"admin\" }}]\n"
    ));
    assert_eq!(port(&c, "web", "http").endpoints.len(), 2);
    assert_eq!(
        c.warnings,
        vec![
            "services[web].ports[1].target_port: no pod selected by app=web has a TCP port named \"admin\"; the port has no endpoints"
        ]
    );
}

#[test]
fn a_target_port_some_selected_pods_have_is_not_warned_about() {
    // web-2 lacks "metrics": it contributes nothing, web-1 serves.
    let c = load(&format!(
        "{PODS}[[services]]\nname = \"web\"\nselector = {{ app = \"web\" }}\nports = [{{ name = \"metrics\", port = 9090, target_port = \"metrics\" }}]\n"
    ));
    assert_eq!(port(&c, "web", "metrics").endpoints.len(), 1);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}
