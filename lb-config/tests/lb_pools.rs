//! LoadBalancer services and `[[ip_pools]]`: validation in Kubernetes' and
//! MetalLB's words, assignment (requested, named pool, auto-assign, pending,
//! sharing), stability across reloads and restarts, and the other
//! LoadBalancer fields (source ranges, node ports, health-check node port,
//! external IPs, `[node] vip_mode`).

mod support;

use std::net::IpAddr;

use lb_config::{check_str, Config, FileStore, Loader, VipMode};
use lb_core::TrafficPolicy;
use support::{errors, ip, memory_loader};

const HEAD: &str =
    "[cluster]\nservice_cidr = \"127.96.0.0/24\"\nnode_port_range = \"30000-30099\"\n\
[[ip_pools]]\nname = \"lb-ip-pool\"\naddresses = [\"127.0.122.110-127.0.122.112\"]\n\
[[ip_pools]]\nname = \"manual\"\naddresses = [\"127.0.123.0/30\"]\nauto_assign = false\n";

fn lb(name: &str, extra: &str) -> String {
    format!("[[services]]\nname = \"{name}\"\ntype = \"LoadBalancer\"\n{extra}\nports = [{{ port = 80 }}]\n")
}

fn file(services: &[String]) -> String {
    let mut text = HEAD.to_string();
    for s in services {
        text.push_str(s);
    }
    text
}

fn ingress(c: &Config, name: &str) -> Option<(IpAddr, String)> {
    let s = c.services.iter().find(|s| s.key.name == name)?;
    assert!(s.load_balancer_ips.len() <= 1);
    s.load_balancer_ips
        .first()
        .map(|ip| (*ip, s.ip_pool.clone()))
}

#[test]
fn a_load_balancer_service_takes_the_first_free_address_of_an_auto_assign_pool() {
    let c = check_str(&file(&[lb("web", ""), lb("api", "")])).unwrap();
    assert_eq!(
        ingress(&c, "web"),
        Some((ip("127.0.122.110"), "lb-ip-pool".into()))
    );
    assert_eq!(ingress(&c, "api").unwrap().0, ip("127.0.122.111"));
    // Node ports and a cluster IP as well.
    let web = &c.services[0];
    assert!(web.cluster_ip.ip().is_some());
    assert!(web.ports[0].node_port.is_some());
}

#[test]
fn a_requested_address_is_honoured_in_any_pool_and_a_named_pool_is_used() {
    let c = check_str(&file(&[
        lb("web", "load_balancer_ip = \"127.0.122.112\""),
        lb("manual", "ip_pool = \"manual\""),
        lb("manual-ip", "load_balancer_ip = \"127.0.123.3\""),
    ]))
    .unwrap();
    assert_eq!(ingress(&c, "web").unwrap().0, ip("127.0.122.112"));
    assert_eq!(
        ingress(&c, "manual"),
        Some((ip("127.0.123.0"), "manual".into()))
    );
    assert_eq!(
        ingress(&c, "manual-ip"),
        Some((ip("127.0.123.3"), "manual".into()))
    );
}

/// `(name, message)` of each pending address, in file order.
fn pending(c: &Config) -> Vec<(String, String)> {
    c.pending_addresses
        .iter()
        .map(|p| (p.key.name.clone(), p.message.clone()))
        .collect()
}

#[test]
fn a_bad_requested_address_or_pool_leaves_only_its_service_pending_in_metallb_words() {
    let c = check_str(&file(&[
        lb("outside", "load_balancer_ip = \"127.0.99.1\""),
        lb(
            "other-pool",
            "namespace = \"shop\"\nip_pool = \"manual\"\nload_balancer_ip = \"127.0.122.110\"",
        ),
        lb("unknown", "ip_pool = \"nope\""),
        lb("fine", ""),
    ]))
    .unwrap();
    assert_eq!(
        pending(&c),
        [
            ("outside".into(), "Failed to allocate IP for \"default/outside\": \"127.0.99.1\" is not allowed in config".into()),
            ("other-pool".into(), "Failed to allocate IP for \"shop/other-pool\": requested loadBalancer IP(s) [\"127.0.122.110\"] is not compatible with requested address pool manual".into()),
            ("unknown".into(), "Failed to allocate IP for \"default/unknown\": unknown pool \"nope\"".into()),
        ]
    );
    assert!(c
        .pending_addresses
        .iter()
        .all(|p| p.reason == "AllocationFailed"));
    // The rest of the file applies; the pending ones keep their cluster IP
    // and node ports.
    assert_eq!(ingress(&c, "fine").unwrap().0, ip("127.0.122.110"));
    for s in &c.services {
        assert!(s.cluster_ip.ip().is_some(), "{}", s.key);
        assert!(s.ports[0].node_port.is_some(), "{}", s.key);
    }
    // A malformed address is still an error on its field, as Kubernetes
    // refuses it.
    assert_eq!(
        errors(&file(&[lb("web", "load_balancer_ip = \"banana\"")])),
        ["services[web].load_balancer_ip: Invalid value: \"banana\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"]
    );
}

#[test]
fn exhausted_pools_and_taken_addresses_leave_the_service_pending() {
    let c = check_str(&file(&[
        lb("a", ""),
        lb("b", ""),
        lb("c", ""),
        lb("d", ""),
        lb("e", "load_balancer_ip = \"127.0.122.110\""),
    ]))
    .unwrap();
    // Requests are served before auto-assignment: e holds .110, a and b take
    // .111 and .112, and the pool is exhausted for c and d.
    assert_eq!(ingress(&c, "e").unwrap().0, ip("127.0.122.110"));
    let pending: Vec<&str> = ["a", "b", "c", "d"]
        .into_iter()
        .filter(|n| ingress(&c, n).is_none())
        .collect();
    assert_eq!(pending, ["c", "d"]);
    for s in &c.services {
        assert!(
            s.cluster_ip.ip().is_some(),
            "a pending service keeps its cluster IP"
        );
        assert!(s.ports[0].node_port.is_some(), "and its node ports");
    }
    // Each pending service is reported with MetalLB's event, for status.
    let reported: Vec<(&str, &str, &str)> = c
        .pending_addresses
        .iter()
        .map(|p| (p.key.name.as_str(), p.reason, p.message.as_str()))
        .collect();
    assert_eq!(reported.len(), 2, "{reported:?}");
    assert_eq!(reported[0].0, "c");
    assert_eq!(reported[0].1, "AllocationFailed");
    assert_eq!(
        reported[0].2,
        "Failed to allocate IP for \"default/c\": no available IPs"
    );
    assert_eq!(reported[1].0, "d");
}

#[test]
fn assignments_are_stable_across_reloads_and_released_when_a_service_goes() {
    let mut loader = memory_loader();
    let c = loader
        .load_str(&file(&[lb("web", ""), lb("api", "")]))
        .unwrap();
    assert_eq!(ingress(&c, "api").unwrap().0, ip("127.0.122.111"));
    // A new service that sorts first does not move anyone.
    let c = loader
        .load_str(&file(&[lb("aaa", ""), lb("web", ""), lb("api", "")]))
        .unwrap();
    assert_eq!(ingress(&c, "web").unwrap().0, ip("127.0.122.110"));
    assert_eq!(ingress(&c, "api").unwrap().0, ip("127.0.122.111"));
    assert_eq!(ingress(&c, "aaa").unwrap().0, ip("127.0.122.112"));
    // A requested address held by another service: pending, the holder keeps it.
    let c = loader
        .load_str(&file(&[
            lb("aaa", ""),
            lb("web", ""),
            lb("api", ""),
            lb("thief", "load_balancer_ip = \"127.0.122.110\""),
        ]))
        .unwrap();
    assert_eq!(ingress(&c, "web").unwrap().0, ip("127.0.122.110"));
    assert_eq!(ingress(&c, "thief"), None);
    // web goes: its address is free for the next one that asks.
    let c = loader
        .load_str(&file(&[
            lb("aaa", ""),
            lb("api", ""),
            lb("thief", "load_balancer_ip = \"127.0.122.110\""),
        ]))
        .unwrap();
    assert_eq!(ingress(&c, "thief").unwrap().0, ip("127.0.122.110"));
    assert_eq!(
        loader.allocations().load_balancer_ips.len(),
        3,
        "{:?}",
        loader.allocations()
    );
}

#[test]
fn assignments_survive_a_restart_with_a_state_file() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let mut first = Loader::new(Box::new(FileStore::new(state.clone())));
    first
        .load_str(&file(&[lb("web", ""), lb("api", "")]))
        .unwrap();
    // After a restart, api's position in the file changes but not its address.
    let mut second = Loader::new(Box::new(FileStore::new(state)));
    let c = second
        .load_str(&file(&[lb("api", ""), lb("web", "")]))
        .unwrap();
    assert_eq!(ingress(&c, "web").unwrap().0, ip("127.0.122.110"));
    assert_eq!(ingress(&c, "api").unwrap().0, ip("127.0.122.111"));
}

#[test]
fn services_with_the_same_sharing_key_share_an_address_when_ports_differ() {
    let c = check_str(&file(&[
        "[[services]]\nname = \"dns-tcp\"\ntype = \"LoadBalancer\"\nallow_shared_ip = \"dns\"\n\
         load_balancer_ip = \"127.0.122.111\"\nports = [{ port = 53, protocol = \"TCP\" }]\n"
            .to_string(),
        "[[services]]\nname = \"dns-udp\"\ntype = \"LoadBalancer\"\nallow_shared_ip = \"dns\"\n\
         load_balancer_ip = \"127.0.122.111\"\nports = [{ port = 53, protocol = \"UDP\" }]\n"
            .to_string(),
        "[[services]]\nname = \"clash\"\ntype = \"LoadBalancer\"\nallow_shared_ip = \"dns\"\n\
         load_balancer_ip = \"127.0.122.111\"\nports = [{ port = 53, protocol = \"UDP\" }]\n"
            .to_string(),
    ]))
    .unwrap();
    assert_eq!(ingress(&c, "dns-tcp").unwrap().0, ip("127.0.122.111"));
    assert_eq!(ingress(&c, "dns-udp").unwrap().0, ip("127.0.122.111"));
    assert_eq!(ingress(&c, "clash"), None);
}

#[test]
fn ipv6_pools_work_like_ipv4_ones() {
    let text = "[cluster]\nservice_cidr = \"127.96.0.0/24\"\n\
        [[ip_pools]]\nname = \"v6\"\naddresses = [\"fd00:122::/120\"]\n"
        .to_string()
        + &lb("web", "")
        + &lb("pinned", "load_balancer_ip = \"fd00:122::42\"");
    let c = check_str(&text).unwrap();
    assert_eq!(ingress(&c, "web").unwrap().0, ip("fd00:122::"));
    assert_eq!(ingress(&c, "pinned").unwrap().0, ip("fd00:122::42"));
}

#[test]
fn malformed_and_overlapping_pools_are_errors() {
    let text = "[[ip_pools]]\nname = \"a\"\naddresses = [\"127.0.122.0/28\", \"127.0.9.9-127.0.9.1\"]\n\
        [[ip_pools]]\nname = \"b\"\naddresses = [\"127.0.122.8-127.0.122.20\", \"banana\", \"127.0.1.1-fd00::1\"]\n\
        [[ip_pools]]\nname = \"Bad_Name\"\naddresses = []\n";
    assert_eq!(
        errors(text),
        [
            "ip_pools[a].addresses[1]: Invalid value: \"127.0.9.9-127.0.9.1\": the first address of the range is after the last",
            "ip_pools[b].addresses[0]: Invalid value: \"127.0.122.8-127.0.122.20\": overlaps with ip_pools[a]",
            "ip_pools[b].addresses[1]: Invalid value: \"banana\": must be a CIDR (e.g. 192.168.10.0/24) or a range FIRST-LAST (e.g. 192.168.10.10-192.168.10.20)",
            "ip_pools[b].addresses[2]: Invalid value: \"127.0.1.1-fd00::1\": the range mixes IPv4 and IPv6",
            "ip_pools[Bad_Name].name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
            "ip_pools[Bad_Name].addresses: Required value: at least one CIDR or range",
        ]
    );
}

#[test]
fn source_ranges_are_cidrs_and_only_for_load_balancers() {
    let c = check_str(&file(&[lb(
        "web",
        "load_balancer_source_ranges = [\"127.0.0.5/32\", \"10.0.0.1/8\"]",
    )]))
    .unwrap();
    let ranges: Vec<String> = c.services[0]
        .load_balancer_source_ranges
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(ranges, ["127.0.0.5/32", "10.0.0.0/8"]);
    assert_eq!(
        errors(&file(&[lb("web", "load_balancer_source_ranges = [\"10.0.0.300/8\"]")])),
        ["services[web].load_balancer_source_ranges[0]: Invalid value: \"10.0.0.300/8\": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"]
    );
    let text = format!(
        "{HEAD}[[services]]\nname = \"web\"\nload_balancer_source_ranges = [\"127.0.0.5/32\"]\nports = [{{ port = 80 }}]\n"
    );
    assert_eq!(
        errors(&text),
        ["services[web].load_balancer_source_ranges: Forbidden: may only be used when `type` is 'LoadBalancer'"]
    );
}

#[test]
fn node_ports_can_be_left_out_of_a_load_balancer() {
    let c = check_str(&file(&[
        lb("web", "allocate_load_balancer_node_ports = false"),
        "[[services]]\nname = \"kept\"\ntype = \"LoadBalancer\"\nallocate_load_balancer_node_ports = false\n\
         ports = [{ port = 80, node_port = 30042 }]\n"
            .to_string(),
    ]))
    .unwrap();
    assert_eq!(c.services[0].ports[0].node_port, None);
    assert_eq!(c.services[1].ports[0].node_port, Some(30042));
    assert!(c.services[0].cluster_ip.ip().is_some());
    assert!(!c.services[0].load_balancer_ips.is_empty());
}

#[test]
fn a_local_load_balancer_gets_a_health_check_node_port() {
    let c = check_str(&file(&[
        lb("web", "external_traffic_policy = \"Local\""),
        lb(
            "fixed",
            "external_traffic_policy = \"Local\"\nhealth_check_node_port = 30099",
        ),
    ]))
    .unwrap();
    let web = &c.services[0];
    assert_eq!(web.external_traffic_policy, TrafficPolicy::Local);
    assert!((30000..=30099).contains(&web.health_check_node_port));
    assert_ne!(web.health_check_node_port, web.ports[0].node_port.unwrap());
    assert_eq!(c.services[1].health_check_node_port, 30099);
}

#[test]
fn external_ips_are_accepted_on_any_type() {
    let text = format!(
        "{HEAD}[[services]]\nname = \"web\"\nexternal_ips = [\"127.0.5.5\", \"127.0.5.6\"]\nports = [{{ port = 80 }}]\n"
    );
    let c = check_str(&text).unwrap();
    assert_eq!(
        c.services[0].external_ips,
        vec![ip("127.0.5.5"), ip("127.0.5.6")]
    );
    let bad = format!(
        "{HEAD}[[services]]\nname = \"web\"\nexternal_ips = [\"0.0.0.0\"]\nports = [{{ port = 80 }}]\n"
    );
    assert_eq!(
        errors(&bad),
        ["services[web].external_ips[0]: Invalid value: \"0.0.0.0\": may not be unspecified (0.0.0.0)"]
    );
}

#[test]
fn vip_modes_and_their_interfaces() {
    let c = check_str("[node]\nvip_mode = \"interface\"\n").unwrap();
    assert_eq!(c.vip_mode, VipMode::Interface);
    assert_eq!(c.vip_interface, "lb-vips0");
    assert_eq!(c.announce_interface, "");
    let c = check_str(
        "[node]\nvip_mode = \"interface\"\nvip_interface = \"lo\"\nannounce_interface = \"eth0\"\n",
    )
    .unwrap();
    assert_eq!(
        (c.vip_interface.as_str(), c.announce_interface.as_str()),
        ("lo", "eth0")
    );
    assert_eq!(
        check_str("[node]\nvip_mode = \"freebind\"\n")
            .unwrap()
            .vip_mode,
        VipMode::Freebind
    );
    assert_eq!(
        errors("[node]\nvip_interface = \"lo\"\n"),
        ["node.vip_interface: Forbidden: may only be used when `vip_mode` is 'interface'"]
    );
    assert_eq!(
        errors("[node]\nvip_mode = \"interface\"\nvip_interface = \"much-too-long-name0\"\n"),
        ["node.vip_interface: Invalid value: \"much-too-long-name0\": must be an interface name: 1-15 characters, no '/', ':' or white space"]
    );
}

#[test]
fn a_pool_that_is_not_local_is_a_warning_in_bind_mode_only() {
    let pool = "[[ip_pools]]\nname = \"l2\"\naddresses = [\"192.168.122.110-192.168.122.119\"]\n";
    let c = check_str(&format!(
        "[cluster]\nservice_cidr = \"127.96.0.0/24\"\n{pool}"
    ))
    .unwrap();
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    assert!(c.warnings[0].starts_with("ip_pools[l2]: not a loopback range"));
    let c = check_str(&format!(
        "[node]\nvip_mode = \"interface\"\nvip_interface = \"lo\"\n[cluster]\nservice_cidr = \"127.96.0.0/24\"\n{pool}"
    ))
    .unwrap();
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}
