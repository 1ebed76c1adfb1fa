//! Endpoints known by DNS name follow the upstream's answer: resolved at
//! start, re-resolved within bounds (dnsmasq answers with TTL 0, so every
//! MIN_REFRESH = 5 s), and a failed resolution keeps the last good answer.
//! The upstream is a loopback dnsmasq; skipped, with a message, without it.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use lb_core::ServiceKey;
use lb_proxy::app::App;

use crate::support::app::TestApp;
use crate::support::tools::{have, Dnsmasq};
use crate::support::{eventually, free_udp_port};

fn endpoints(app: &App) -> Vec<SocketAddr> {
    let snap = app.dataplane().table().load();
    snap.service(&ServiceKey::new("default", "db"))
        .map(|s| s.ports[0].endpoints().iter().map(|e| e.addr).collect())
        .unwrap_or_default()
}

/// The endpoints once they are `want`, or as they are when `within` passed.
async fn wait_for(app: &App, want: &[&str], within: Duration) -> Vec<SocketAddr> {
    let want: Vec<SocketAddr> = want.iter().map(|s| s.parse().unwrap()).collect();
    eventually(within, || endpoints(app) == want).await;
    endpoints(app)
}

#[tokio::test]
async fn host_endpoints_follow_the_upstream_and_survive_its_failure() {
    if !have("dnsmasq") {
        eprintln!("SKIPPED: dnsmasq is not installed (apt-get install dnsmasq-base)");
        return;
    }
    let ip: IpAddr = "127.0.53.30".parse().unwrap();
    let upstream_addr = SocketAddr::new(ip, free_udp_port(ip));
    let upstream = Dnsmasq::start_on(upstream_addr, &["/db1.example.test/127.0.244.41"]).await;
    let listen = SocketAddr::new("127.0.53.31".parse().unwrap(), 0);
    let app = TestApp::from_text(&format!(
        r#"
[cluster]
service_cidr = "127.96.0.0/16"
[admin]
listen = ""
[dns]
listen = "{listen}"
upstreams = ["{upstream_addr}"]
[[services]]
name = "db"
cluster_ip = "127.96.7.1"
ports = [{{ name = "sql", port = 3306 }}]
[[endpoints]]
name = "db"
[[endpoints.subsets]]
addresses = [{{ ip = "127.0.244.40" }}, {{ host = "db1.example.test" }}]
ports = [{{ name = "sql", port = 3307 }}]
"#
    ))
    .await;
    // Resolved before the first snapshot with the name is served.
    let got = wait_for(
        &app,
        &["127.0.244.40:3307", "127.0.244.41:3307"],
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(
        got,
        vec![
            "127.0.244.40:3307".parse::<SocketAddr>().unwrap(),
            "127.0.244.41:3307".parse().unwrap()
        ]
    );

    // The upstream goes away: the next refresh fails, the answer is kept.
    drop(upstream);
    let failed = eventually(Duration::from_secs(12), || app_failures(&app) >= 1).await;
    assert!(failed, "a failed refresh is counted");
    assert_eq!(endpoints(&app).len(), 2, "the last good answer is kept");

    // It comes back with another answer: the endpoints follow.
    let _upstream = Dnsmasq::start_on(upstream_addr, &["/db1.example.test/127.0.244.42"]).await;
    let got = wait_for(
        &app,
        &["127.0.244.40:3307", "127.0.244.42:3307"],
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(
        got,
        vec![
            "127.0.244.40:3307".parse::<SocketAddr>().unwrap(),
            "127.0.244.42:3307".parse().unwrap()
        ]
    );
    app.shutdown().await;
}

fn app_failures(app: &App) -> u64 {
    app.hosts().failures()
}
