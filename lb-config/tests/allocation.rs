//! Cluster IPs and node ports: requested, allocated, stable across reloads and
//! restarts, released when a service goes.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use lb_config::{Config, FileStore, Loader};
use lb_core::alloc::AllocationStore;
use lb_core::ClusterIp;
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

#[test]
fn requested_values_are_kept_and_others_get_the_lowest_free() {
    let text = format!(
        "{HEAD}[[services]]\nname = \"auto\"\ntype = \"NodePort\"\nports = [{{ port = 80 }}]\n\
         [[services]]\nname = \"fixed\"\ntype = \"NodePort\"\ncluster_ip = \"127.96.0.1\"\nports = [{{ port = 80, node_port = 30000 }}]\n"
    );
    let c = memory_loader().load_str(&text).unwrap();
    let a = assigned(&c);
    assert_eq!(a["fixed"], (ip("127.96.0.1"), 30000));
    assert_eq!(
        a["auto"],
        (ip("127.96.0.2"), 30001),
        "requests are served before allocation"
    );
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
fn cluster_ip_services_get_no_node_ports() {
    let c = lb_config::check_str(&format!(
        "{HEAD}[[services]]\nname = \"web\"\nports = [{{ port = 80 }}]\n"
    ))
    .unwrap();
    assert_eq!(c.services[0].cluster_ip, ClusterIp::Ip(ip("127.96.0.1")));
    assert_eq!(c.services[0].ports[0].node_port, None);
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
fn a_removed_service_releases_its_values() {
    let mut loader = memory_loader();
    let first = assigned(&loader.load_str(&file(&["a", "b"])).unwrap());
    loader.load_str(&file(&["b"])).unwrap();
    assert!(!loader.allocations().cluster_ips.contains_key("default/a"));
    let third = assigned(&loader.load_str(&file(&["b", "c"])).unwrap());
    assert_eq!(
        third["c"], first["a"],
        "the freed values are the lowest again"
    );
    assert_eq!(third["b"], first["b"]);
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
fn a_previous_value_taken_by_a_request_moves_to_a_free_one() {
    let mut loader = memory_loader();
    let first = assigned(&loader.load_str(&file(&["a"])).unwrap());
    let (a_ip, a_port) = first["a"];
    let text = format!(
        "{}[[services]]\nname = \"b\"\ntype = \"NodePort\"\ncluster_ip = \"{a_ip}\"\nports = [{{ port = 80, node_port = {a_port} }}]\n",
        file(&["a"])
    );
    let after = assigned(&loader.load_str(&text).unwrap());
    assert_eq!(after["b"], (a_ip, a_port));
    assert_ne!(after["a"].0, a_ip);
    assert_ne!(after["a"].1, a_port);
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
