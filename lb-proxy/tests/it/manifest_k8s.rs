//! Kubernetes objects through the binary as a cluster would serve them: an
//! EndpointSlice's conditions (the terminating fallback) and a port's
//! `appProtocol` in the admin API.
//!
//! Addresses: 127.0.252.0/24 (node, admin, backends) and the cluster IPs
//! 127.96.252.10-11, which no other test uses.

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
