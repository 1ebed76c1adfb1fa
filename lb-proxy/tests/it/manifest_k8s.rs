//! Kubernetes objects through the binary as a cluster would serve them: an
//! EndpointSlice's conditions (the terminating fallback) and a port's
//! `appProtocol` in the admin API; a Service's conditions and events, as for
//! one from the file.
//!
//! Addresses: 127.0.252.0/24 (node, admin, backends) and the cluster IPs
//! 127.96.252.10-22, which no other test uses; pool address 127.0.252.110.

use std::ffi::OsString;

use crate::support::bin::Run;
use crate::support::*;

/// Runs lb-proxy over `manifests` (one YAML file), node 127.0.252.1, admin
/// on 127.0.252.9.
fn run_with(manifests: &str) -> (tempfile::TempDir, crate::support::bin::Running) {
    let dir = tempfile::tempdir().unwrap();
    let admin = sa(&format!("127.0.252.9:{}", free_port("127.0.252.9")));
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\nname = \"node-1\"\naddresses = [\"127.0.252.1\"]\n\
             [cluster]\nservice_cidr = \"127.96.0.0/16\"\n[admin]\nlisten = \"{admin}\"\n"
        ),
    )
    .unwrap();
    let path = dir.path().join("objects.yaml");
    std::fs::write(&path, manifests).unwrap();
    let proxy = Run::file(&config)
        .arg(OsString::from("--manifests"))
        .arg(path)
        .admin(admin)
        .start()
        .unwrap();
    (dir, proxy)
}

#[test]
fn a_slice_whose_only_endpoint_is_serving_and_terminating_carries_a_connection() {
    let port = free_port("127.0.252.20");
    let _pod = http_backend(sa(&format!("127.0.252.20:{port}")), "still-serving");
    let (_dir, proxy) = run_with(&format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: db}}\n\
         spec: {{clusterIP: 127.96.252.10, ports: [{{name: http, port: 80, targetPort: {port}}}]}}\n\
         ---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: db-1, labels: {{kubernetes.io/service-name: db}}}}\n\
         addressType: IPv4\nports: [{{name: http, port: {port}, protocol: TCP}}]\n\
         endpoints:\n\
         - addresses: [127.0.252.20]\n  conditions: {{ready: false, serving: true, terminating: true}}\n"
    ));
    assert_eq!(
        ask(sa("127.96.252.10:80")).unwrap_or_else(|e| panic!("{e}\n{}", proxy.logs())),
        "still-serving"
    );
    let eps = proxy.endpoints("db");
    assert_eq!(eps.len(), 1, "{eps:?}");
    assert_eq!(
        (&eps[0]["ready"], &eps[0]["serving"], &eps[0]["terminating"]),
        (
            &serde_json::json!(false),
            &serde_json::json!(true),
            &serde_json::json!(true)
        ),
        "{eps:?}"
    );
}

#[test]
fn a_ports_app_protocol_is_shown_in_the_admin_api() {
    let (_dir, proxy) = run_with(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\n\
         spec: {clusterIP: 127.96.252.11, ports: [{name: h2, port: 80, appProtocol: kubernetes.io/h2c}, {name: plain, port: 81}]}\n",
    );
    let web = proxy.wait_service("web").unwrap();
    assert_eq!(
        web["ports"][0]["app_protocol"], "kubernetes.io/h2c",
        "{web}"
    );
    assert!(web["ports"][1].get("app_protocol").is_none(), "{web}");
}

/// The condition `kind` of service `name` in a `/api/v1/services` body.
fn condition(services: &serde_json::Value, name: &str, kind: &str) -> serde_json::Value {
    services["items"]
        .as_array()
        .and_then(|items| items.iter().find(|s| s["name"] == name))
        .and_then(|s| s["status"]["conditions"].as_array())
        .and_then(|c| c.iter().find(|c| c["type"] == kind))
        .cloned()
        .unwrap_or_else(|| panic!("{name} has no {kind}: {services}"))
}

#[test]
fn manifest_services_carry_conditions_and_events_as_file_ones_do() {
    // One pool address, two LoadBalancer Services: one is pending with
    // MetalLB's event; a Service with no endpoints says so.
    let lb = |name: &str, ip: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\n\
             spec: {{type: LoadBalancer, clusterIP: {ip}, allocateLoadBalancerNodePorts: false, ports: [{{port: 80}}]}}\n---\n"
        )
    };
    let (_dir, proxy) = run_with(&format!(
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\n\
         metadata: {{name: one, namespace: metallb-system}}\nspec: {{addresses: [127.0.252.110-127.0.252.110]}}\n---\n\
         {}{}\
         apiVersion: v1\nkind: Service\nmetadata: {{name: empty}}\n\
         spec: {{clusterIP: 127.96.252.22, ports: [{{port: 80}}]}}\n",
        lb("first", "127.96.252.20"),
        lb("second", "127.96.252.21"),
    ));
    let (status, body) = http_get(proxy.admin(), "/api/v1/services").expect("GET /api/v1/services");
    assert_eq!(status, 200, "{body}");
    let services: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let assigned: Vec<String> = ["first", "second"]
        .iter()
        .map(|n| {
            condition(&services, n, "LoadBalancerAssigned")["status"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    let pending = if assigned[0] == "False" {
        "first"
    } else {
        "second"
    };
    assert_eq!(
        {
            let mut sorted = assigned.clone();
            sorted.sort();
            sorted
        },
        ["False", "True"],
        "{services}"
    );
    let c = condition(&services, pending, "LoadBalancerAssigned");
    assert_eq!(c["reason"], "AllocationFailed");
    assert_eq!(
        c["message"],
        format!("Failed to allocate IP for \"default/{pending}\": no available IPs")
    );
    let c = condition(&services, "empty", "EndpointsAvailable");
    assert_eq!(
        (&c["status"], &c["reason"]),
        (&"False".into(), &"NoEndpoints".into())
    );

    // The same event, on the Service, in /api/v1/events.
    let (status, body) = http_get(proxy.admin(), "/api/v1/events").expect("GET /api/v1/events");
    assert_eq!(status, 200, "{body}");
    let events: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert!(
        events["items"]
            .as_array()
            .is_some_and(|items| items.iter().any(|e| {
                e["type"] == "Warning"
                    && e["reason"] == "AllocationFailed"
                    && e["object"]["kind"] == "Service"
                    && e["object"]["name"] == pending
            })),
        "{events}"
    );
}
