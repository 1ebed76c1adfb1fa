//! Topology end to end: a `PreferClose` service over two pods in different
//! zones sends every connection to the one in this node's zone, and when
//! that one goes away (its readiness probe fails), to the other.

use std::net::SocketAddr;

use crate::support::app::TestApp;
use crate::support::config::base_toml;
use crate::support::*;

/// The file: node `node-1` in zone `a`; pod `near` on this node (so in zone
/// a) with a fast TCP probe, pod `far` on node-2 in zone b; service `web` at
/// `vip` with `traffic_distribution = "PreferClose"`.
fn file(admin: SocketAddr, vip: SocketAddr, near: SocketAddr, far: SocketAddr) -> String {
    let head = base_toml(admin).replace("name = \"node-1\"\n", "name = \"node-1\"\nzone = \"a\"\n");
    format!(
        r#"{head}
[[pods]]
name = "near"
ip = "{near_ip}"
labels = {{ app = "web" }}
ports = [{{ name = "http", container_port = {near_port} }}]
[pods.readiness_probe]
tcp_socket = {{ port = "http" }}
period_seconds = 1
failure_threshold = 1

[[pods]]
name = "far"
ip = "{far_ip}"
node = "node-2"
zone = "b"
labels = {{ app = "web" }}
ports = [{{ name = "http", container_port = {far_port} }}]

[[services]]
name = "web"
cluster_ip = "{vip_ip}"
selector = {{ app = "web" }}
traffic_distribution = "PreferClose"
ports = [{{ name = "http", port = {vip_port}, target_port = "http" }}]
"#,
        near_ip = near.ip(),
        near_port = near.port(),
        far_ip = far.ip(),
        far_port = far.port(),
        vip_ip = vip.ip(),
        vip_port = vip.port(),
    )
}

/// The zone `/api/v1/endpoints` shows for the endpoint at `ip`.
fn zone_of(endpoints: &serde_json::Value, ip: &str) -> Option<String> {
    endpoints["items"]
        .as_array()?
        .iter()
        .flat_map(|s| s["endpoints"].as_array().into_iter().flatten())
        .find(|e| e["ip"] == ip)
        .and_then(|e| e["zone"].as_str().map(str::to_string))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefer_close_serves_the_zone_and_falls_back_when_its_endpoint_goes() {
    let near = http_backend("127.0.173.1", "near");
    let far = http_backend("127.0.173.2", "far");
    let ip = fresh_ip();
    let admin = SocketAddr::new(ip, free_port(ip));
    let vip = SocketAddr::new(fresh_ip(), 8080);
    let app = TestApp::from_text(&file(admin, vip, near.addr, far.addr)).await;

    // The probed pod turns ready; from then on every connection is near's.
    assert!(
        eventually_async(WAIT, || async {
            try_fetch(vip).await.as_deref() == Ok("near")
        })
        .await,
        "the in-zone pod takes traffic once ready"
    );
    for _ in 0..20 {
        assert_eq!(fetch(vip).await, "near", "every connection stays in zone a");
    }
    let endpoints = app.json("/api/v1/endpoints").await;
    assert_eq!(zone_of(&endpoints, "127.0.173.1").as_deref(), Some("a"));
    assert_eq!(zone_of(&endpoints, "127.0.173.2").as_deref(), Some("b"));

    // The in-zone pod goes away: its probe fails, and traffic crosses zones.
    near.kill().await;
    assert!(
        eventually_async(WAIT, || async {
            try_fetch(vip).await.as_deref() == Ok("far")
        })
        .await,
        "the other zone takes traffic once the in-zone pod is not ready"
    );
    for _ in 0..10 {
        assert_eq!(fetch(vip).await, "far");
    }
    assert!(far.accepted() >= 11);
    app.shutdown().await;
}
