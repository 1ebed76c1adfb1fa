//! `proxy_protocol`: which PROXY protocol header a service's endpoints get,
//! from the TOML file (the manifests' annotation: `manifest_kinds.rs`).

mod support;

use lb_core::ProxyProtocol;
use support::{errors, load};

fn service(extra: &str, protocol: &str) -> String {
    format!(
        "[[services]]\nname = \"web\"\n{extra}\nports = [{{ port = 80, protocol = \"{protocol}\" }}]\n"
    )
}

#[test]
fn no_header_is_sent_unless_asked() {
    let c = load(&service("", "TCP"));
    assert_eq!(c.services[0].proxy_protocol, None);
    let c = load(&service("proxy_protocol = \"\"", "TCP"));
    assert_eq!(c.services[0].proxy_protocol, None);
}

#[test]
fn v1_and_v2_are_the_two_versions() {
    let c = load(&service("proxy_protocol = \"v1\"", "TCP"));
    assert_eq!(c.services[0].proxy_protocol, Some(ProxyProtocol::V1));
    let c = load(&service("proxy_protocol = \"v2\"", "UDP"));
    assert_eq!(c.services[0].proxy_protocol, Some(ProxyProtocol::V2));
}

#[test]
fn another_version_is_refused_with_the_supported_ones() {
    let text = format!(
        "[cluster]\nservice_cidr = \"127.96.0.0/16\"\n{}",
        service("proxy_protocol = \"V2\"", "TCP")
    );
    let lines = errors(&text);
    assert!(
        lines.iter().any(|l| l
            == "services[web].proxy_protocol: Unsupported value: \"V2\": supported values: \"v1\", \"v2\""),
        "{lines:?}"
    );
}

#[test]
fn v1_on_a_service_with_a_udp_port_is_refused() {
    let text = format!(
        "[cluster]\nservice_cidr = \"127.96.0.0/16\"\n{}",
        service("proxy_protocol = \"v1\"", "UDP")
    );
    let lines = errors(&text);
    assert!(
        lines.iter().any(|l| l.starts_with(
            "services[web].proxy_protocol: Invalid value: \"v1\": v1 is for TCP only"
        )),
        "{lines:?}"
    );
}

#[test]
fn accepting_headers_is_off_unless_asked_and_trusts_no_one_by_default() {
    let c = load(&service("", "TCP"));
    assert!(!c.services[0].accept_proxy_protocol);
    assert!(c.proxy.proxy_protocol_trusted_cidrs.is_empty());
    let c = load(&format!(
        "[proxy]\nproxy_protocol_trusted_cidrs = [\"127.0.90.0/24\", \"::1/128\"]\n{}",
        service("accept_proxy_protocol = true", "TCP")
    ));
    assert!(c.services[0].accept_proxy_protocol);
    assert!(c
        .proxy
        .trusts_proxy_header_from("127.0.90.7".parse().unwrap()));
    assert!(
        c.proxy
            .trusts_proxy_header_from("::ffff:127.0.90.7".parse().unwrap()),
        "a v4 client on a dual-stack socket is matched as IPv4"
    );
    assert!(!c
        .proxy
        .trusts_proxy_header_from("127.0.89.7".parse().unwrap()));
}

#[test]
fn a_trusted_source_that_is_no_cidr_is_refused_with_its_index() {
    let lines = errors(&format!(
        "[cluster]\nservice_cidr = \"127.96.0.0/16\"\n[proxy]\nproxy_protocol_trusted_cidrs = [\"127.0.90.0/24\", \"balancer\"]\n{}",
        service("", "TCP")
    ));
    assert!(
        lines.iter().any(|l| l.starts_with(
            "proxy.proxy_protocol_trusted_cidrs[1]: Invalid value: \"balancer\": must be a valid CIDR value"
        )),
        "{lines:?}"
    );
}

#[test]
fn endpoints_are_dialed_from_the_proxy_unless_a_service_or_the_proxy_says_client() {
    let c = load(&service("", "TCP"));
    assert_eq!(c.services[0].source_address, None);
    assert_eq!(c.proxy.source_address, lb_core::SourceAddress::Proxy);
    let c = load(&format!(
        "[proxy]\nsource_address = \"client\"\n{}",
        service("source_address = \"proxy\"", "TCP")
    ));
    assert_eq!(c.proxy.source_address, lb_core::SourceAddress::Client);
    assert_eq!(
        c.services[0].source_address,
        Some(lb_core::SourceAddress::Proxy),
        "a service's own choice beats [proxy]'s"
    );
    let lines = errors(&format!(
        "[cluster]\nservice_cidr = \"127.96.0.0/16\"\n{}",
        service("source_address = \"transparent\"", "TCP")
    ));
    assert!(
        lines.iter().any(|l| l
            == "services[web].source_address: Unsupported value: \"transparent\": supported values: \"proxy\", \"client\""),
        "{lines:?}"
    );
}

#[test]
fn a_probe_sends_a_local_header_only_when_its_action_asks() {
    let pod = |probe: &str| {
        format!(
            "[[pods]]\nname = \"web-1\"\nip = \"127.0.181.101\"\nlabels = {{ app = \"web\" }}\n\
             ports = [{{ name = \"http\", container_port = 8080 }}]\n\
             readiness_probe = {{ {probe} }}\n"
        )
    };
    let c = load(&pod("http_get = { path = \"/\", port = \"http\" }"));
    assert_eq!(c.probes[0].proxy_protocol, None);
    let c = load(&pod(
        "http_get = { path = \"/\", port = \"http\", proxy_protocol = \"v2\" }",
    ));
    assert_eq!(c.probes[0].proxy_protocol, Some(ProxyProtocol::V2));
    let c = load(&pod(
        "tcp_socket = { port = 8080, proxy_protocol = \"v1\" }",
    ));
    assert_eq!(c.probes[0].proxy_protocol, Some(ProxyProtocol::V1));
}
