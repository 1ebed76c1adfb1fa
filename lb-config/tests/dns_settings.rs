//! `[dns]` is accepted and typed; bad values get Kubernetes-style errors.

mod support;

use lb_config::{check_str, DnsSettings};
use support::errors;

#[test]
fn no_dns_section_means_no_responder() {
    assert_eq!(check_str("").unwrap().dns, None);
}

#[test]
fn the_dns_section_is_typed_with_defaults() {
    let c = check_str("[dns]\nlisten = \"127.0.0.1:5353\"\n").unwrap();
    assert_eq!(
        c.dns,
        Some(DnsSettings {
            listen: "127.0.0.1:5353".parse().unwrap(),
            ttl: 5,
            upstreams: vec![],
        })
    );
    assert_eq!(c.cluster.domain, "cluster.local");
}

#[test]
fn upstreams_are_ip_or_ip_and_port() {
    let c = check_str(
        "[cluster]\ndomain = \"k8s.test\"\n[dns]\nlisten = \"127.0.0.1:5353\"\nttl = 30\n\
         upstreams = [\"127.0.0.53\", \"127.0.0.54:5300\", \"[::1]:53\"]\n",
    )
    .unwrap();
    let dns = c.dns.unwrap();
    assert_eq!(dns.ttl, 30);
    assert_eq!(
        dns.upstreams,
        vec![
            "127.0.0.53:53".parse().unwrap(),
            "127.0.0.54:5300".parse().unwrap(),
            "[::1]:53".parse().unwrap()
        ]
    );
    assert_eq!(c.cluster.domain, "k8s.test");
}

#[test]
fn bad_dns_values_are_reported_each() {
    let l = errors(
        "[dns]\nlisten = \"localhost:53\"\nttl = -1\nupstreams = [\"ns1.example\", \"127.0.0.1:0\"]\n",
    );
    assert!(
        l.contains(
            &"dns.listen: Invalid value: \"localhost:53\": must be IP:PORT (e.g. 127.0.0.1:5353)"
                .to_string()
        ),
        "{l:?}"
    );
    assert!(
        l.contains(
            &"dns.ttl: Invalid value: -1: must be between 0 and 2147483647, inclusive".to_string()
        ),
        "{l:?}"
    );
    assert!(
        l.iter()
            .any(|x| x.starts_with("dns.upstreams[0]: Invalid value: \"ns1.example\"")),
        "{l:?}"
    );
    assert!(
        l.iter()
            .any(|x| x.starts_with("dns.upstreams[1]: Invalid value: \"127.0.0.1:0\"")),
        "{l:?}"
    );
    assert_eq!(l.len(), 4, "{l:?}");
}

#[test]
fn listen_is_required() {
    let l = errors("[dns]\nttl = 5\n");
    assert_eq!(l.len(), 1, "{l:?}");
    assert!(l[0].starts_with("dns.listen: Required value"), "{l:?}");
}

#[test]
fn the_domain_must_be_a_dns_subdomain() {
    let l = errors("[cluster]\ndomain = \"Cluster_Local\"\n");
    assert!(
        l[0].starts_with("cluster.domain: Invalid value: \"Cluster_Local\""),
        "{l:?}"
    );
}

#[test]
fn endpoint_addresses_by_name_are_kept_for_the_resolver() {
    let c = check_str(
        "[[services]]\nname = \"db\"\nports = [{ name = \"sql\", port = 3306 }]\n\
         [[endpoints]]\nname = \"db\"\n[[endpoints.subsets]]\n\
         addresses = [{ ip = \"127.0.244.9\" }, { host = \"DB1.example.test.\", weight = 2 }]\n\
         not_ready_addresses = [{ host = \"db2.example.test\" }]\n\
         ports = [{ name = \"sql\", port = 3307 }]\n",
    )
    .unwrap();
    assert_eq!(
        c.services[0].ports[0].endpoints.len(),
        1,
        "names are not endpoints until resolved"
    );
    let hosts: Vec<(&str, u16, bool, u32)> = c
        .host_endpoints
        .iter()
        .map(|h| (h.host.as_str(), h.port, h.serving, h.weight))
        .collect();
    assert_eq!(
        hosts,
        vec![
            ("db1.example.test", 3307, true, 2),
            ("db2.example.test", 3307, false, 1)
        ]
    );
    assert_eq!(c.host_endpoints[0].port_name, "sql");
}

#[test]
fn an_endpoint_host_must_be_a_dns_name() {
    let l = errors(
        "[[endpoints]]\nname = \"e\"\n[[endpoints.subsets]]\naddresses = [{ host = \"not a name\" }]\nports = [{ port = 80 }]\n",
    );
    assert!(
        l[0].starts_with(
            "endpoints[e].subsets[0].addresses[0].host: Invalid value: \"not a name\""
        ),
        "{l:?}"
    );
}
