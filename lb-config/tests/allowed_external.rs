//! `node.allowed_external_cidrs`: whoever writes a service (the file, a
//! manifest, etcd) may put its external IPs and LoadBalancer addresses only
//! inside them; default empty: anywhere, as in Kubernetes.

mod support;

#[cfg(feature = "manifests")]
use lb_config::manifests::load_str;
use lb_config::parse_str;
use lb_config::source::{load_merged, DesiredState, Sourced};
use support::{assert_error, config, errors, etcd_origin, memory_loader, CIDR};

/// `[node]` allowing 127.0.125.0/25 only.
const LOCKED: &str = "[node]\nname = \"node-1\"\naddresses = [\"127.0.1.1\"]\nallowed_external_cidrs = [\"127.0.125.0/25\"]\n";

fn locked(body: &str) -> String {
    format!("{CIDR}{LOCKED}{body}")
}

#[test]
fn an_external_ip_outside_the_allowed_cidrs_is_refused_naming_them() {
    let service = |ip: &str| {
        locked(&format!(
            "[[services]]\nname = \"web\"\nexternal_ips = [\"{ip}\"]\nports = [{{ port = 80 }}]\n"
        ))
    };
    assert_eq!(
        errors(&service("127.0.125.200")),
        vec!["services[web].external_ips[0]: Invalid value: \"127.0.125.200\": not in node.allowed_external_cidrs [\"127.0.125.0/25\"]"]
    );
    config(&service("127.0.125.100"));
}

#[test]
fn without_allowed_cidrs_any_external_ip_is_accepted_as_in_kubernetes() {
    config(&format!(
        "{CIDR}[[services]]\nname = \"web\"\nexternal_ips = [\"127.0.125.200\"]\nports = [{{ port = 80 }}]\n"
    ));
}

#[test]
fn a_requested_load_balancer_ip_outside_is_refused_for_that_reason_alone() {
    let text = locked(
        r#"
[[services]]
name = "lb"
type = "LoadBalancer"
load_balancer_ip = "127.0.125.201"
ports = [{ port = 80 }]
"#,
    );
    assert_eq!(
        errors(&text),
        vec!["services[lb].load_balancer_ip: Invalid value: \"127.0.125.201\": not in node.allowed_external_cidrs [\"127.0.125.0/25\"]"]
    );
}

#[test]
#[cfg(feature = "manifests")]
fn the_metallb_annotation_in_a_manifest_is_held_to_the_same_cidrs() {
    let manifest = load_str(
        r#"
apiVersion: v1
kind: Service
metadata:
  name: lb
  annotations: {metallb.universe.tf/loadBalancerIPs: "127.0.125.202"}
spec:
  type: LoadBalancer
  ports: [{port: 80}]
"#,
        "lb.yaml",
    )
    .unwrap();
    let file = DesiredState {
        file: Some(parse_str(&locked("")).unwrap()),
        ..DesiredState::default()
    };
    let err = load_merged(&mut memory_loader(), vec![file, manifest]).unwrap_err();
    assert_eq!(
        err.lines(),
        vec!["services[lb].load_balancer_ip: Invalid value: \"127.0.125.202\": not in node.allowed_external_cidrs [\"127.0.125.0/25\"]"]
    );
}

#[test]
fn a_pool_reaching_outside_the_allowed_cidrs_is_refused_so_none_of_it_is_assigned() {
    let text = locked(
        r#"
[[ip_pools]]
name = "wide"
addresses = ["127.0.125.120-127.0.125.130"]
[[services]]
name = "lb"
type = "LoadBalancer"
ports = [{ port = 80 }]
"#,
    );
    assert_eq!(
        errors(&text),
        vec!["ip_pools[wide].addresses[0]: Invalid value: \"127.0.125.120-127.0.125.130\": not inside node.allowed_external_cidrs [\"127.0.125.0/25\"]: a pool may hold only allowed addresses"]
    );
    // A pool wholly inside hands its addresses out.
    let c = config(&locked(
        r#"
[[ip_pools]]
name = "inside"
addresses = ["127.0.125.120-127.0.125.127"]
[[services]]
name = "lb"
type = "LoadBalancer"
ports = [{ port = 80 }]
"#,
    ));
    assert_eq!(
        c.services[0].load_balancer_ips,
        vec!["127.0.125.120".parse::<std::net::IpAddr>().unwrap()]
    );
}

#[test]
fn an_allowed_cidr_must_be_a_cidr() {
    assert_error(
        &format!("{CIDR}[node]\nallowed_external_cidrs = [\"127.0.125.0/33\"]\n"),
        "node.allowed_external_cidrs[0]: Invalid value: \"127.0.125.0/33\": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
    );
}

#[test]
fn from_etcd_only_the_object_outside_is_skipped_with_its_key() {
    let local = DesiredState {
        file: Some(parse_str(&locked("")).unwrap()),
        ..DesiredState::default()
    };
    let objects = parse_str(
        r#"
[[services]]
name = "grab"
external_ips = ["127.0.0.1"]
ports = [{ port = 22 }]
[[services]]
name = "fine"
external_ips = ["127.0.125.10"]
ports = [{ port = 80 }]
[[ip_pools]]
name = "everything"
addresses = ["127.0.0.0/8"]
"#,
    )
    .unwrap();
    let from_etcd = DesiredState {
        services: vec![
            Sourced::new(
                (*objects.services[0]).clone(),
                etcd_origin("/lb/services/default/grab", 5),
            ),
            Sourced::new(
                (*objects.services[1]).clone(),
                etcd_origin("/lb/services/default/fine", 6),
            ),
        ],
        ip_pools: vec![Sourced::new(
            (*objects.ip_pools[0]).clone(),
            etcd_origin("/lb/ip_pools/everything", 7),
        )],
        ..DesiredState::default()
    };
    let config = load_merged(&mut memory_loader(), vec![local, from_etcd]).unwrap();
    for expected in [
        "skipped etcd object: /lb/services/default/grab: services[grab].external_ips[0]: Invalid value: \"127.0.0.1\": not in node.allowed_external_cidrs [\"127.0.125.0/25\"]",
        "skipped etcd object: /lb/ip_pools/everything: ip_pools[everything].addresses[0]: Invalid value: \"127.0.0.0/8\": not inside node.allowed_external_cidrs [\"127.0.125.0/25\"]: a pool may hold only allowed addresses",
    ] {
        assert!(
            config.warnings.iter().any(|w| w == expected),
            "missing {expected:?} in {:#?}",
            config.warnings
        );
    }
    let names: Vec<&str> = config
        .services
        .iter()
        .map(|s| s.key.name.as_str())
        .collect();
    assert_eq!(names, ["fine"]);
}
