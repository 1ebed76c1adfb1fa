//! Cluster IPs and node ports: requested, allocated, stable across reloads and
//! restarts, released when a service goes.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use lb_config::{Config, FileStore, Loader};
use lb_core::alloc::AllocationStore;
use proptest::prelude::*;
use support::{errors, ip, memory_loader};

const HEAD: &str =
    "[cluster]\nservice_cidr = \"127.96.0.0/24\"\nnode_port_range = \"30000-30099\"\n";

fn svc(name: &str) -> String {
    format!("[[services]]\nname = \"{name}\"\ntype = \"NodePort\"\nports = [{{ port = 80 }}]\n")
}

fn file(names: &[&str]) -> String {
    let mut text = HEAD.to_string();
    for n in names {
        text.push_str(&svc(n));
    }
    text
}

/// name -> (cluster IP, node port)
fn assigned(c: &Config) -> BTreeMap<String, (IpAddr, u16)> {
    c.services
        .iter()
        .map(|s| {
            let ip = s.cluster_ip.ip().expect("a cluster IP");
            let np = s.ports[0].node_port.expect("a node port");
            (s.key.name.clone(), (ip, np))
        })
        .collect()
}

/// A NodePort service that asks for `ip` and `port`.
fn fixed(name: &str, ip: IpAddr, port: u16) -> String {
    format!(
        "[[services]]\nname = \"{name}\"\ntype = \"NodePort\"\ncluster_ip = \"{ip}\"\nports = [{{ port = 80, node_port = {port} }}]\n"
    )
}

#[test]
fn requested_values_are_kept_and_dynamic_ones_come_from_the_upper_band() {
    let text = format!(
        "{HEAD}{}{}",
        svc("auto"),
        fixed("fixed", ip("127.96.0.1"), 30000)
    );
    let c = memory_loader().load_str(&text).unwrap();
    let a = assigned(&c);
    assert_eq!(a["fixed"], (ip("127.96.0.1"), 30000));
    // A /24 keeps its first 16 addresses (after the network address) for
    // requests; 30000-30099 keeps 16 ports.
    let (auto_ip, auto_port) = a["auto"];
    assert!(
        auto_ip > ip("127.96.0.16") && auto_ip < ip("127.96.0.255"),
        "{auto_ip}"
    );
    assert!((30016..=30099).contains(&auto_port), "{auto_port}");
}

#[test]
fn cluster_ip_services_get_no_node_ports() {
    let c = lb_config::check_str(&format!(
        "{HEAD}[[services]]\nname = \"web\"\nports = [{{ port = 80 }}]\n"
    ))
    .unwrap();
    let got = c.services[0].cluster_ip.ip().expect("a cluster IP");
    assert!(
        "127.96.0.0/24"
            .parse::<ipnet::IpNet>()
            .unwrap()
            .contains(&got),
        "{got}"
    );
    assert_eq!(c.services[0].ports[0].node_port, None);
}

#[test]
fn the_same_services_get_the_same_values_after_a_restart_without_a_state_file() {
    let names = ["web", "api", "db", "cache", "queue"];
    let first = assigned(&memory_loader().load_str(&file(&names)).unwrap());
    let mut reversed = names;
    reversed.reverse();
    let again = assigned(&memory_loader().load_str(&file(&reversed)).unwrap());
    assert_eq!(first, again, "the file's order does not matter");
    let seeded = format!(
        "[cluster]\nallocation_seed = 7\nservice_cidr = \"127.96.0.0/24\"\nnode_port_range = \"30000-30099\"\n{}",
        &file(&names)[HEAD.len()..]
    );
    let other = assigned(&memory_loader().load_str(&seeded).unwrap());
    assert_ne!(first, other, "another seed spreads them elsewhere");
    assert_eq!(other, assigned(&memory_loader().load_str(&seeded).unwrap()));
}

#[test]
fn a_removed_service_releases_its_values() {
    let mut loader = memory_loader();
    let first = assigned(&loader.load_str(&file(&["a", "b"])).unwrap());
    loader.load_str(&file(&["b"])).unwrap();
    let held = loader.allocations();
    assert!(!held.cluster_ips.contains_key("default/a"));
    assert!(!held.node_ports.contains_key("default/a/TCP/80"));
    // What a held is free: another service may ask for it.
    let (a_ip, a_port) = first["a"];
    let third = assigned(
        &loader
            .load_str(&format!("{}{}", file(&["b"]), fixed("c", a_ip, a_port)))
            .unwrap(),
    );
    assert_eq!(third["c"], first["a"]);
    assert_eq!(third["b"], first["b"]);
}

#[test]
fn a_request_for_what_a_running_service_holds_fails_the_load_and_changes_nothing() {
    let mut loader = memory_loader();
    let first = assigned(&loader.load_str(&file(&["a"])).unwrap());
    let saved = loader.allocations();
    let (a_ip, a_port) = first["a"];
    let text = format!("{}{}", file(&["a"]), fixed("b", a_ip, a_port));
    let lines = loader.load_str(&text).unwrap_err().lines();
    assert_eq!(
        lines,
        vec![
            format!("services[b].cluster_ip: Invalid value: []string{{\"{a_ip}\"}}: failed to allocate IP {a_ip}: provided IP is already allocated"),
            format!("services[b].ports[0].node_port: Invalid value: {a_port}: provided port is already allocated"),
        ]
    );
    assert_eq!(loader.allocations(), saved);
    let again = assigned(&loader.load_str(&file(&["a"])).unwrap());
    assert_eq!(again["a"], first["a"], "the holder was never renumbered");
}

#[test]
fn a_request_for_a_held_health_check_node_port_fails_the_load() {
    let local = |name: &str, extra: &str| {
        format!(
            "[[services]]\nname = \"{name}\"\ntype = \"LoadBalancer\"\nexternal_traffic_policy = \"Local\"\n{extra}ports = [{{ port = 80 }}]\n"
        )
    };
    let mut loader = memory_loader();
    let c = loader
        .load_str(&format!("{HEAD}{}", local("a", "")))
        .unwrap();
    let hc = c.services[0].health_check_node_port;
    let lines = loader
        .load_str(&format!(
            "{HEAD}{}{}",
            local("a", ""),
            local("b", &format!("health_check_node_port = {hc}\n"))
        ))
        .unwrap_err()
        .lines();
    assert_eq!(
        lines,
        vec![format!("services[b].health_check_node_port: Internal error: failed to allocate requested HealthCheck NodePort {hc}: provided port is already allocated")]
    );
}

#[test]
fn a_changed_cluster_ip_fails_the_load_and_changes_nothing() {
    let mut loader = memory_loader();
    let first = assigned(&loader.load_str(&file(&["a"])).unwrap());
    let saved = loader.allocations();
    let (a_ip, a_port) = first["a"];
    // Naming the address it holds, or none, is no change.
    let same = assigned(
        &loader
            .load_str(&format!("{HEAD}{}", fixed("a", a_ip, a_port)))
            .unwrap(),
    );
    assert_eq!(same["a"], first["a"]);
    let other = if a_ip == ip("127.96.0.200") {
        ip("127.96.0.201")
    } else {
        ip("127.96.0.200")
    };
    let moved = format!("{HEAD}{}", fixed("a", other, a_port));
    assert_eq!(
        loader.load_str(&moved).unwrap_err().lines(),
        vec![format!("services[a].cluster_ip: Invalid value: []string{{\"{other}\"}}: may not change once set")]
    );
    let headless = format!(
        "{HEAD}[[services]]\nname = \"a\"\ncluster_ip = \"None\"\nports = [{{ port = 80 }}]\n"
    );
    assert_eq!(
        loader.load_str(&headless).unwrap_err().lines(),
        vec!["services[a].cluster_ip: Invalid value: []string{\"None\"}: may not change once set"]
    );
    assert_eq!(loader.allocations(), saved);
    // Moving a service: remove it, reload, add it with the new address.
    loader.load_str(HEAD).unwrap();
    let c = loader.load_str(&moved).unwrap();
    assert_eq!(assigned(&c)["a"], (other, a_port));
}

#[test]
fn a_change_to_external_name_releases_the_cluster_ip_and_back_assigns_one() {
    let mut loader = memory_loader();
    let first = assigned(&loader.load_str(&file(&["a"])).unwrap());
    let external = format!(
        "{HEAD}[[services]]\nname = \"a\"\ntype = \"ExternalName\"\nexternal_name = \"db.example.com\"\n"
    );
    loader.load_str(&external).unwrap();
    assert!(loader.allocations().cluster_ips.is_empty());
    // Its old address is free for another service meanwhile.
    let (a_ip, _) = first["a"];
    let taken = format!(
        "{external}[[services]]\nname = \"b\"\ncluster_ip = \"{a_ip}\"\nports = [{{ port = 80 }}]\n"
    );
    loader.load_str(&taken).unwrap();
    let back = loader
        .load_str(&format!("{}{}", file(&["a"]), &taken[external.len()..]))
        .unwrap();
    let a = back.services.iter().find(|s| s.key.name == "a").unwrap();
    assert!(a.cluster_ip.ip().is_some_and(|got| got != a_ip));
}

#[test]
fn node_ports_may_change_and_an_omitted_one_keeps_what_is_held() {
    let mut loader = memory_loader();
    let first = assigned(&loader.load_str(&file(&["a"])).unwrap());
    let (a_ip, a_port) = first["a"];
    let new_port = if a_port == 30050 { 30051 } else { 30050 };
    let c = loader
        .load_str(&format!("{HEAD}{}", fixed("a", a_ip, new_port)))
        .unwrap();
    assert_eq!(assigned(&c)["a"], (a_ip, new_port));
    // The old port is free: another service may ask for it.
    let c = loader
        .load_str(&format!(
            "{HEAD}{}{}",
            fixed("a", a_ip, new_port),
            fixed("b", ip("127.96.0.3"), a_port)
        ))
        .unwrap();
    assert_eq!(assigned(&c)["b"].1, a_port);
    // Leaving node_port out keeps the one allocated.
    let c = loader
        .load_str(&format!(
            "{}{}",
            file(&["a"]),
            fixed("b", ip("127.96.0.3"), a_port)
        ))
        .unwrap();
    assert_eq!(assigned(&c)["a"].1, new_port);
}

#[test]
fn a_new_service_never_takes_the_health_check_node_port_another_holds() {
    let local = "[[services]]\nname = \"local\"\ntype = \"LoadBalancer\"\n\
        external_traffic_policy = \"Local\"\nports = [{ port = 80 }]\n";
    let mut loader = memory_loader();
    let hc = |c: &Config| {
        c.services
            .iter()
            .find(|s| s.key.name == "local")
            .map(|s| s.health_check_node_port)
    };
    let first = loader
        .load_str(&format!("{}{local}", file(&["web"])))
        .unwrap();
    let before = hc(&first).expect("local");
    assert_ne!(before, 0);
    // "late" sorts after, and the lowest free port is the one after the
    // health-check port: it must not move it.
    let second = loader
        .load_str(&format!("{}{local}{}", file(&["web"]), svc("late")))
        .unwrap();
    assert_eq!(hc(&second), Some(before));
    let late = second
        .services
        .iter()
        .find(|s| s.key.name == "late")
        .and_then(|s| s.ports[0].node_port);
    assert_ne!(late, Some(before));
}

#[test]
fn allocations_are_stable_across_reloads_when_services_are_added() {
    let mut loader = memory_loader();
    let before = assigned(&loader.load_str(&file(&["b", "d"])).unwrap());
    // "a" comes first in the file now, and would take the lowest values if
    // allocation ignored history.
    let after = assigned(&loader.load_str(&file(&["a", "b", "c", "d"])).unwrap());
    assert_eq!(after["b"], before["b"]);
    assert_eq!(after["d"], before["d"]);
    assert_ne!(after["a"], after["b"]);
}

#[test]
fn a_failed_load_changes_nothing() {
    let mut loader = memory_loader();
    let first = assigned(&loader.load_str(&file(&["b"])).unwrap());
    let saved = loader.allocations();
    let bad = format!(
        "{}{}",
        file(&["a"]),
        "[[services]]\nname = \"Bad\"\nports = [{ port = 80 }]\n"
    );
    loader.load_str(&bad).unwrap_err();
    assert_eq!(loader.allocations(), saved);
    let again = assigned(&loader.load_str(&file(&["a", "b"])).unwrap());
    assert_eq!(again["b"], first["b"]);
}

#[test]
fn allocations_survive_a_restart_through_the_state_file() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state/allocations.json");
    let first = {
        let mut loader = Loader::new(Box::new(FileStore::new(&state)));
        assigned(&loader.load_str(&file(&["b", "d"])).unwrap())
    };
    assert!(state.exists());
    let mut loader = Loader::new(Box::new(FileStore::new(&state)));
    let after = assigned(&loader.load_str(&file(&["a", "b", "c", "d"])).unwrap());
    assert_eq!(after["b"], first["b"]);
    assert_eq!(after["d"], first["d"]);
    let saved = FileStore::new(&state).load().unwrap();
    assert_eq!(saved.cluster_ips.len(), 4);
    assert_eq!(saved.node_ports["default/b/TCP/80"], first["b"].1);
}

#[test]
fn a_corrupt_state_file_starts_afresh_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("allocations.json");
    std::fs::write(&state, "{oops").unwrap();
    let mut loader = Loader::new(Box::new(FileStore::new(&state)));
    let c = loader.load_str(&file(&["a"])).unwrap();
    assert!(
        c.warnings
            .iter()
            .any(|w| w.starts_with("allocations: starting afresh")),
        "{:?}",
        c.warnings
    );
    assert!(FileStore::new(&state).load().is_ok(), "rewritten");
}

#[test]
fn a_full_range_is_an_internal_error() {
    let text = "[cluster]\nservice_cidr = \"127.96.0.0/30\"\n\
        [[services]]\nname = \"a\"\nports = [{ port = 80 }]\n[[services]]\nname = \"b\"\nports = [{ port = 80 }]\n\
        [[services]]\nname = \"c\"\nports = [{ port = 80 }]\n";
    let lines = errors(text);
    assert_eq!(
        lines,
        vec![
            "services[c].cluster_ip: Internal error: failed to allocate a serviceIP: range is full"
        ]
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Random sequences of service sets: values never repeat, never the network
    /// or broadcast address, and a service present in consecutive loads keeps
    /// its values.
    #[test]
    fn allocations_are_unique_valid_and_stable(
        sets in proptest::collection::vec(proptest::collection::btree_set(0u8..40, 0..30), 1..6)
    ) {
        let mut loader = memory_loader();
        let mut previous: BTreeMap<String, (IpAddr, u16)> = BTreeMap::new();
        for set in sets {
            let names: Vec<String> = set.iter().map(|i| format!("s{i}")).collect();
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let now = assigned(&loader.load_str(&file(&refs)).unwrap());
            let ips: BTreeSet<IpAddr> = now.values().map(|v| v.0).collect();
            let ports: BTreeSet<u16> = now.values().map(|v| v.1).collect();
            prop_assert_eq!(ips.len(), now.len());
            prop_assert_eq!(ports.len(), now.len());
            prop_assert!(!ips.contains(&ip("127.96.0.0")));
            prop_assert!(!ips.contains(&ip("127.96.0.255")));
            prop_assert!(ports.iter().all(|p| (30000..=30099).contains(p)));
            for (name, v) in &now {
                if let Some(old) = previous.get(name) {
                    prop_assert_eq!(old, v, "{} moved", name);
                }
            }
            previous = now;
        }
    }
}
