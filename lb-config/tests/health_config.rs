//! Readiness probes, Local traffic policies and health-check node ports in the
//! file: parsed, validated in Kubernetes' words, defaulted, and exposed.

mod support;

use std::time::Duration;

use lb_core::health::{PodKey, ProbeAction};
use lb_core::TrafficPolicy;
use support::{CIDR, NODE};

/// `text` on node `node-1` at 127.0.1.1, with the usual service CIDR.
fn file(text: &str) -> String {
    format!("{NODE}{CIDR}{text}")
}

/// [`support::config`] of [`file`]`(text)`.
fn config(text: &str) -> lb_config::Config {
    support::config(&file(text))
}

/// [`support::assert_error`] of [`file`]`(text)`.
fn assert_error(text: &str, expected: &str) {
    support::assert_error(&file(text), expected)
}

const SERVICE: &str = "[[services]]\nname = \"web\"\nselector = { app = \"web\" }\nports = [{ port = 80, target_port = \"http\" }]\n";

fn pod(name: &str, probe: &str) -> String {
    format!(
        "[[pods]]\nname = \"{name}\"\nip = \"127.0.244.1\"\nlabels = {{ app = \"web\" }}\n\
         ports = [{{ name = \"http\", container_port = 8080 }}]\n{probe}"
    )
}

#[test]
fn probes_take_kubernetes_defaults_and_resolve_named_ports() {
    let c = config(&format!(
        "{SERVICE}{}",
        pod(
            "web-1",
            "[pods.readiness_probe]\ntcp_socket = { port = \"http\" }\n"
        )
    ));
    assert_eq!(c.probes.len(), 1);
    let p = &c.probes[0];
    assert_eq!(p.pod, PodKey::new("default", "web-1"));
    assert_eq!(p.ip.to_string(), "127.0.244.1");
    assert_eq!(p.action, ProbeAction::TcpSocket { port: 8080 });
    assert_eq!(p.initial_delay, Duration::ZERO);
    assert_eq!(p.period, Duration::from_secs(10));
    assert_eq!(p.timeout, Duration::from_secs(1));
    assert_eq!((p.success_threshold, p.failure_threshold), (1, 3));
}

#[test]
fn a_pod_with_a_probe_starts_not_serving() {
    let c = config(&format!(
        "{SERVICE}{}{}",
        pod("web-1", "[pods.readiness_probe]\nhttp_get = { path = \"/healthz\", port = 8080 }\ninitial_delay_seconds = 2\nperiod_seconds = 1\ntimeout_seconds = 3\nsuccess_threshold = 2\nfailure_threshold = 1\n"),
        pod("web-2", "").replace("127.0.244.1", "127.0.244.2")
    ));
    let eps = &c.services[0].ports[0].endpoints;
    assert_eq!(eps.len(), 2);
    assert!(!eps[0].serving, "probed pod starts not serving");
    assert!(eps[1].serving, "static readiness without a probe");
    assert_eq!(eps[0].node.as_deref(), Some("node-1"));
    let p = &c.probes[0];
    assert_eq!(
        p.action,
        ProbeAction::HttpGet {
            path: "/healthz".into(),
            port: 8080
        }
    );
    assert_eq!(p.initial_delay, Duration::from_secs(2));
    assert_eq!(p.period, Duration::from_secs(1));
    assert_eq!(p.timeout, Duration::from_secs(3));
    assert_eq!((p.success_threshold, p.failure_threshold), (2, 1));
}

#[test]
fn exec_probes_keep_their_command() {
    let c = config(&pod(
        "web-1",
        "[pods.readiness_probe]\nexec = { command = [\"sh\", \"-c\", \"exit 0\"] }\n",
    ));
    assert_eq!(
        c.probes[0].action,
        ProbeAction::Exec {
            command: vec!["sh".into(), "-c".into(), "exit 0".into()]
        }
    );
}

#[test]
fn probe_validation_speaks_kubernetes() {
    assert_error(
        &pod("p", "[pods.readiness_probe]\nperiod_seconds = 5\n"),
        "pods[p].readiness_probe: Required value: must specify a handler type",
    );
    assert_error(
        &pod(
            "p",
            "[pods.readiness_probe]\ntcp_socket = { port = 80 }\nexec = { command = [\"true\"] }\n",
        ),
        "pods[p].readiness_probe.exec: Forbidden: may not specify more than 1 handler type",
    );
    assert_error(
        &pod(
            "p",
            "[pods.readiness_probe]\ntcp_socket = { port = 80 }\nperiod_seconds = -1\n",
        ),
        "pods[p].readiness_probe.period_seconds: Invalid value: -1: must be greater than or equal to 0",
    );
    assert_error(
        &pod("p", "[pods.readiness_probe]\ntcp_socket = { port = 70000 }\n"),
        "pods[p].readiness_probe.tcp_socket.port: Invalid value: 70000: must be between 1 and 65535, inclusive",
    );
    assert_error(
        &pod("p", "[pods.readiness_probe]\nhttp_get = { port = \"metrics\" }\n"),
        "pods[p].readiness_probe.http_get.port: Invalid value: \"metrics\": must be the name of a TCP container port of the pod",
    );
    assert_error(
        &pod("p", "[pods.readiness_probe]\nexec = { command = [] }\n"),
        "pods[p].readiness_probe.exec.command: Required value",
    );
}

#[test]
fn local_traffic_policies_are_accepted_where_kubernetes_accepts_them() {
    let c = config(
        "[[services]]\nname = \"web\"\ntype = \"NodePort\"\nexternal_traffic_policy = \"Local\"\n\
         internal_traffic_policy = \"Local\"\nports = [{ port = 80 }]\n",
    );
    assert_eq!(c.services[0].external_traffic_policy, TrafficPolicy::Local);
    assert_eq!(c.services[0].internal_traffic_policy, TrafficPolicy::Local);
    let c = config(
        "[[services]]\nname = \"web\"\ninternal_traffic_policy = \"Local\"\nports = [{ port = 80 }]\n",
    );
    assert_eq!(c.services[0].internal_traffic_policy, TrafficPolicy::Local);
}

#[test]
fn external_traffic_policy_local_needs_an_externally_accessible_service() {
    assert_error(
        "[[services]]\nname = \"web\"\nexternal_traffic_policy = \"Local\"\nports = [{ port = 80 }]\n",
        "services[web].external_traffic_policy: Invalid value: \"Local\": may only be set for externally-accessible services",
    );
}

#[test]
fn health_check_node_port_needs_load_balancer_and_local() {
    assert_error(
        "[[services]]\nname = \"web\"\ntype = \"NodePort\"\nexternal_traffic_policy = \"Local\"\nhealth_check_node_port = 30999\nports = [{ port = 80 }]\n",
        "services[web].health_check_node_port: Invalid value: 30999: may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
    );
}
