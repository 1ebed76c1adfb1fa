//! A service made of the very objects the last good load served it from
//! (sources share unchanged objects between reads) is served as the very
//! same spec; anything it is made of that changed makes it resolved again.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use lb_config::raw::RawConfig;
use lb_config::{parse_str, Config, Loader};
use lb_core::alloc::MemoryStore;

const CLUSTER: &str = "[cluster]\nservice_cidr = \"127.96.0.0/16\"\n";

fn service(name: &str, ip: &str, port: u16) -> String {
    format!(
        "[[services]]\nname = \"{name}\"\ncluster_ip = \"{ip}\"\nports = [{{ name = \"p\", port = {port}, target_port = 8080 }}]\n"
    )
}

fn endpoints(name: &str, ips: &[&str]) -> String {
    let addresses: Vec<String> = ips
        .iter()
        .map(|ip| format!("{{ ip = \"{ip}\" }}"))
        .collect();
    format!(
        "[[endpoints]]\nname = \"{name}\"\n[[endpoints.subsets]]\naddresses = [{}]\nports = [{{ name = \"p\", port = 8080 }}]\n",
        addresses.join(", ")
    )
}

fn raw(parts: &[String]) -> RawConfig {
    parse_str(&format!("{CLUSTER}{}", parts.concat())).expect("parses")
}

fn loader() -> Loader {
    Loader::new(Box::<MemoryStore>::default()).with_default_node_name("node-a")
}

fn served<'c>(config: &'c Config, name: &str) -> &'c Arc<lb_core::ServiceSpec> {
    config
        .services
        .iter()
        .find(|s| s.key.name == name)
        .expect("served")
}

fn addrs(spec: &lb_core::ServiceSpec) -> Vec<SocketAddr> {
    spec.ports[0].endpoints.iter().map(|e| e.addr).collect()
}

fn two_services() -> RawConfig {
    raw(&[
        service("web", "127.96.0.10", 80),
        service("db", "127.96.0.11", 5432),
        endpoints("web", &["127.0.90.1", "127.0.90.2"]),
        endpoints("db", &["127.0.91.1"]),
    ])
}

#[test]
fn a_service_made_of_the_same_objects_is_served_as_the_same_spec() {
    let mut loader = loader();
    let raw = two_services();
    let first = loader.load_raw(&raw).expect("valid");
    let again = loader.load_raw(&raw).expect("valid");
    for name in ["web", "db"] {
        assert!(
            Arc::ptr_eq(served(&first, name), served(&again, name)),
            "{name}: the very same spec"
        );
    }
    assert_eq!(
        addrs(served(&again, "web")),
        vec![
            "127.0.90.1:8080".parse::<SocketAddr>().unwrap(),
            "127.0.90.2:8080".parse().unwrap()
        ]
    );
}

#[test]
fn a_changed_endpoints_object_resolves_its_service_again_and_only_it() {
    let mut loader = loader();
    let raw = two_services();
    let first = loader.load_raw(&raw).expect("valid");
    let mut next = raw.clone();
    next.endpoints[0] = raw_endpoints("web", &["127.0.90.3"]);
    let second = loader.load_raw(&next).expect("valid");
    assert!(!Arc::ptr_eq(served(&first, "web"), served(&second, "web")));
    assert_eq!(
        addrs(served(&second, "web")),
        vec!["127.0.90.3:8080".parse::<SocketAddr>().unwrap()]
    );
    assert!(Arc::ptr_eq(served(&first, "db"), served(&second, "db")));
}

#[test]
fn a_changed_service_takes_the_addresses_of_its_unchanged_endpoints_object() {
    let mut loader = loader();
    let raw = two_services();
    loader.load_raw(&raw).expect("valid");
    let mut next = raw.clone();
    // The Endpoints object is the same one: its validation was deferred.
    next.services[0] = parse_str(&service("web", "127.96.0.10", 81))
        .expect("parses")
        .services[0]
        .clone();
    let second = loader.load_raw(&next).expect("valid");
    let web = served(&second, "web");
    assert_eq!(web.ports[0].port, 81);
    assert_eq!(
        addrs(web).len(),
        2,
        "its addresses, from the deferred object"
    );
}

#[test]
fn a_service_whose_allocation_moved_is_resolved_again() {
    let pool = |range: &str| format!("[[ip_pools]]\nname = \"front\"\naddresses = [\"{range}\"]\n");
    let lb = "[[services]]\nname = \"lb\"\ntype = \"LoadBalancer\"\nports = [{ name = \"p\", port = 80, target_port = 8080 }]\n".to_string();
    let mut loader = loader();
    let raw = raw(&[
        pool("127.0.125.120-127.0.125.127"),
        lb,
        endpoints("lb", &["127.0.90.1"]),
    ]);
    let first = loader.load_raw(&raw).expect("valid");
    let address: IpAddr = "127.0.125.120".parse().unwrap();
    assert_eq!(served(&first, "lb").load_balancer_ips, vec![address]);
    // Same service and Endpoints objects; only the pool moved.
    let mut next = raw.clone();
    next.ip_pools[0] = parse_str(&pool("127.0.125.200-127.0.125.207"))
        .expect("parses")
        .ip_pools[0]
        .clone();
    let second = loader.load_raw(&next).expect("valid");
    let moved: IpAddr = "127.0.125.200".parse().unwrap();
    assert_eq!(served(&second, "lb").load_balancer_ips, vec![moved]);
    assert_eq!(addrs(served(&second, "lb")).len(), 1);
}

#[test]
fn a_new_frontend_on_a_carried_services_endpoint_is_still_refused() {
    let mut loader = loader();
    let raw = raw(&[
        service("web", "127.96.0.10", 80),
        endpoints("web", &["127.96.0.20"]),
    ]);
    loader.load_raw(&raw).expect("valid");
    let mut next = raw.clone();
    next.services.push(
        parse_str(&service("loop", "127.96.0.20", 8080))
            .expect("parses")
            .services[0]
            .clone(),
    );
    let errors = loader.load_raw(&next).expect_err("a self-loop");
    let text = errors.to_string();
    assert!(
        text.contains("endpoints[web].subsets[0].addresses[0]") && text.contains("loop back"),
        "{text}"
    );
}

fn raw_endpoints(name: &str, ips: &[&str]) -> Arc<lb_config::raw::RawEndpoints> {
    parse_str(&endpoints(name, ips)).expect("parses").endpoints[0].clone()
}

fn host_endpoints(name: &str, host: &str) -> String {
    format!(
        "[[endpoints]]\nname = \"{name}\"\n[[endpoints.subsets]]\naddresses = [{{ host = \"{host}\" }}]\nports = [{{ name = \"p\", port = 8080 }}]\n"
    )
}

/// Every state of `states`, loaded in turn by one loader (carrying what it
/// can), gives what a fresh loader gives for the same state.
fn same_as_fresh(states: &[RawConfig]) {
    let mut carrying = loader();
    for (i, state) in states.iter().enumerate() {
        let carried = carrying.load_raw(state).expect("valid");
        let fresh = loader().load_raw(state).expect("valid");
        let specs = |c: &Config| -> Vec<lb_core::ServiceSpec> {
            let mut v: Vec<_> = c.services.iter().map(|s| (**s).clone()).collect();
            v.sort_by(|a, b| a.key.cmp(&b.key));
            v
        };
        assert_eq!(specs(&carried), specs(&fresh), "state {i}: services");
        let mut hosts = (carried.host_endpoints.clone(), fresh.host_endpoints.clone());
        hosts.0.sort_by(|a, b| a.service.cmp(&b.service));
        hosts.1.sort_by(|a, b| a.service.cmp(&b.service));
        assert_eq!(hosts.0, hosts.1, "state {i}: host-name endpoints");
    }
}

#[test]
fn a_carried_load_serves_what_a_fresh_load_of_the_same_objects_serves() {
    let base = raw(&[
        service("web", "127.96.0.10", 80),
        service("db", "127.96.0.11", 5432),
        service("named", "127.96.0.12", 80),
        endpoints("web", &["127.0.90.1", "127.0.90.2"]),
        host_endpoints("named", "backend.example"),
    ]);
    // db gets an Endpoints object, then web loses its own, then db's
    // changes; every other object stays the very same one.
    let mut db_gets_endpoints = base.clone();
    db_gets_endpoints
        .endpoints
        .push(raw_endpoints("db", &["127.0.91.1"]));
    let mut web_loses_its_own = db_gets_endpoints.clone();
    web_loses_its_own.endpoints.remove(0);
    let mut db_changes = web_loses_its_own.clone();
    let last = db_changes.endpoints.len() - 1;
    db_changes.endpoints[last] = raw_endpoints("db", &["127.0.91.2", "127.0.91.3"]);
    same_as_fresh(&[
        base.clone(),
        db_gets_endpoints,
        web_loses_its_own,
        db_changes,
        base,
    ]);
}

#[test]
fn a_carried_service_keeps_its_host_name_endpoints() {
    let mut loader = loader();
    let raw = raw(&[
        service("named", "127.96.0.12", 80),
        host_endpoints("named", "backend.example"),
        service("web", "127.96.0.10", 80),
    ]);
    let first = loader.load_raw(&raw).expect("valid");
    let mut next = raw.clone();
    next.services[1] = parse_str(&service("web", "127.96.0.10", 81))
        .expect("parses")
        .services[0]
        .clone();
    let second = loader.load_raw(&next).expect("valid");
    assert!(Arc::ptr_eq(
        served(&first, "named"),
        served(&second, "named")
    ));
    assert_eq!(second.host_endpoints, first.host_endpoints);
    assert_eq!(second.host_endpoints.len(), 1);
    assert_eq!(second.host_endpoints[0].host, "backend.example");
}

#[test]
fn a_failed_load_between_two_good_ones_leaves_the_carry_as_the_first_left_it() {
    let mut loader = loader();
    let raw = two_services();
    let first = loader.load_raw(&raw).expect("valid");
    // web's addresses change, and an unrelated error fails the load.
    let mut bad = raw.clone();
    bad.endpoints[0] = raw_endpoints("web", &["127.0.90.9"]);
    bad.services.push(
        parse_str(&service("broken", "127.96.0.13", 0))
            .expect("parses")
            .services[0]
            .clone(),
    );
    loader.load_raw(&bad).expect_err("port 0");
    // Back to the first objects: served as the first load served them.
    let again = loader.load_raw(&raw).expect("valid");
    for name in ["web", "db"] {
        assert!(
            Arc::ptr_eq(served(&first, name), served(&again, name)),
            "{name}"
        );
    }
    // And the change, loaded good this time, is resolved.
    bad.services.pop();
    let changed = loader.load_raw(&bad).expect("valid");
    assert_eq!(
        addrs(served(&changed, "web")),
        vec!["127.0.90.9:8080".parse::<SocketAddr>().unwrap()]
    );
}
