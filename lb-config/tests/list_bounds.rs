//! Every list of the file has a bound, refused in Kubernetes' words
//! (`field.TooMany`) with one error, not one per item: a list of 100,000
//! dial timeouts would make one client connection try 100,000 endpoints.

mod support;

use support::{config, errors, CIDR};

/// `n` copies of `item`, comma-separated.
fn items(item: &str, n: usize) -> String {
    vec![item; n].join(", ")
}

/// `n` distinct quoted addresses 127.0.125.1, 127.0.125.2, ...
fn addresses(n: usize) -> String {
    (0..n)
        .map(|i| format!("\"127.0.{}.{}\"", 125 + i / 250, 1 + i % 250))
        .collect::<Vec<_>>()
        .join(", ")
}

#[test]
fn seventeen_connect_timeouts_are_refused_and_sixteen_are_accepted() {
    let file = |n| format!("[proxy]\nconnect_timeouts_ms = [{}]\n", items("250", n));
    assert_eq!(
        errors(&file(17)),
        vec!["proxy.connect_timeouts_ms: Too many: 17: must have at most 16 items"]
    );
    assert_eq!(config(&file(16)).proxy.connect_timeouts.len(), 16);
}

#[test]
fn a_hundred_thousand_connect_timeouts_are_one_error() {
    assert_eq!(
        errors(&format!(
            "[proxy]\nconnect_timeouts_ms = [{}]\n",
            items("1", 100_000)
        )),
        vec!["proxy.connect_timeouts_ms: Too many: 100000: must have at most 16 items"]
    );
}

#[test]
fn every_other_list_has_its_bound() {
    let service = |field: &str| {
        format!("{CIDR}[[services]]\nname = \"web\"\n{field}\nports = [{{ port = 80 }}]\n")
    };
    let ports: String = (1..=101)
        .map(|p| format!("{{ name = \"p{p}\", port = {p} }}"))
        .collect::<Vec<_>>()
        .join(", ");
    let cases = [
        (
            format!("[node]\naddresses = [{}]\n", addresses(65)),
            "node.addresses: Too many: 65: must have at most 64 items",
        ),
        (
            format!("[node]\nallowed_external_cidrs = [{}]\n", addresses(257)),
            "node.allowed_external_cidrs: Too many: 257: must have at most 256 items",
        ),
        (
            format!(
                "[admin]\nallowed_hosts = [{}]\n",
                items("\"lb.example\"", 65)
            ),
            "admin.allowed_hosts: Too many: 65: must have at most 64 items",
        ),
        (
            format!(
                "[dns]\nlisten = \"127.0.125.1:5353\"\nupstreams = [{}]\n",
                addresses(16)
            ),
            "dns.upstreams: Too many: 16: must have at most 15 items",
        ),
        (
            format!("{CIDR}[[services]]\nname = \"web\"\nports = [{ports}]\n"),
            "services[web].ports: Too many: 101: must have at most 100 items",
        ),
        (
            service(&format!("external_ips = [{}]", addresses(65))),
            "services[web].external_ips: Too many: 65: must have at most 64 items",
        ),
        (
            service(&format!(
                "type = \"LoadBalancer\"\nload_balancer_source_ranges = [{}]",
                items("\"127.0.0.0/8\"", 257)
            )),
            "services[web].load_balancer_source_ranges: Too many: 257: must have at most 256 items",
        ),
        (
            format!(
                "[[ip_pools]]\nname = \"p\"\naddresses = [{}]\n",
                addresses(257)
            ),
            "ip_pools[p].addresses: Too many: 257: must have at most 256 items",
        ),
    ];
    let mut failures = Vec::new();
    for (file, want) in &cases {
        let got = errors(file);
        if got != [*want] {
            failures.push(format!("want [{want}]\n got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn lists_at_their_bound_are_accepted() {
    let ports: String = (1..=100)
        .map(|p| format!("{{ name = \"p{p}\", port = {p} }}"))
        .collect::<Vec<_>>()
        .join(", ");
    config(&format!(
        "{CIDR}[node]\naddresses = [{}]\n[dns]\nlisten = \"127.0.125.1:5353\"\nupstreams = [{}]\n[[services]]\nname = \"web\"\nports = [{ports}]\n",
        addresses(64),
        addresses(15)
    ));
}
