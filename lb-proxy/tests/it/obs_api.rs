//! The operator API added for observability: `/api/v1/connections` (open
//! connections with client, endpoint, bytes and the pick reason, paginated),
//! `/api/v1/config` (the effective config with allocations), `/api/v1/events`
//! and the status page at `/`.

use tokio::net::TcpStream;

use crate::support::app::TestApp;
use crate::support::config::service_toml;
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_show_an_open_connection_with_its_pick_reason() {
    let a_backend = echo_backend(fresh_ip());
    let a = a_backend.addr;
    let vip = fresh_ip();
    let port = free_port(vip);
    let proxy = TestApp::start(&service_toml(
        "sticky",
        vip,
        port,
        &[a],
        "session_affinity = \"ClientIP\"",
    ))
    .await;
    let client_ip = fresh_ip();
    let target = std::net::SocketAddr::new(vip, port);
    // The first connection is picked by round robin and pins the client; the
    // second from the same IP follows the pin.
    let mut first = connect_from(client_ip, target).await.expect("connect");
    echo(&mut first, b"ping").await;
    let mut second = connect_from(client_ip, target).await.expect("connect");
    echo(&mut second, b"pong!").await;

    let body = proxy.json("/api/v1/connections").await;
    let items = body["items"].as_array().expect("items");
    assert_eq!(items.len(), 2, "{body}");
    assert_eq!(body["total"], 2);
    assert_eq!(body["continue"], "");
    let first_view = &items[0];
    assert_eq!(
        first_view["client"],
        first.local_addr().unwrap().to_string()
    );
    assert_eq!(first_view["frontend"], target.to_string());
    assert_eq!(first_view["namespace"], "default");
    assert_eq!(first_view["service"], "sticky");
    assert_eq!(first_view["port"], "tcp");
    assert_eq!(first_view["protocol"], "TCP");
    assert_eq!(first_view["endpoint"], a.to_string());
    assert_eq!(first_view["pick_reason"], "round_robin");
    assert_eq!(first_view["bytes_rx"], 4);
    assert_eq!(first_view["bytes_tx"], 4);
    assert!(first_view["age_seconds"].is_u64());
    assert_eq!(items[1]["pick_reason"], "affinity");
    assert_eq!(items[1]["bytes_rx"], 5);

    // Pagination: one per page, continue after the last id seen.
    let page1 = proxy.json("/api/v1/connections?limit=1").await;
    assert_eq!(page1["items"].as_array().map(Vec::len), Some(1));
    let token = page1["continue"]
        .as_str()
        .expect("a continue token")
        .to_string();
    assert!(!token.is_empty());
    let page2 = proxy
        .json(&format!("/api/v1/connections?limit=1&continue={token}"))
        .await;
    assert_eq!(page2["items"][0]["pick_reason"], "affinity");
    assert_eq!(page2["continue"], "");
    let (status, _) = proxy.get("/api/v1/connections?limit=x").await;
    assert_eq!(status, 400);

    drop(first);
    drop(second);
    let gone = eventually_async(WAIT, || async {
        proxy.json("/api/v1/connections").await["total"] == 0
    })
    .await;
    assert!(gone, "closed connections leave the registry");
    proxy.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_failed_over_says_so() {
    let live_backend = echo_backend(fresh_ip());
    let live = live_backend.addr;
    // A second endpoint on an address where nothing listens, same port.
    let dead_ip = fresh_ip();
    let vip = fresh_ip();
    let port = free_port(vip);
    let dead = std::net::SocketAddr::new(dead_ip, live.port());
    let proxy = TestApp::start(&service_toml("flaky", vip, port, &[live, dead], "")).await;
    // Round robin alternates; within a few connections one starts on the dead
    // endpoint and fails over to the live one.
    let mut open = Vec::new();
    let mut failed_over = false;
    for _ in 0..6 {
        let mut c = TcpStream::connect((vip, port)).await.expect("connect");
        echo(&mut c, b"x").await;
        open.push(c);
        let body = proxy.json("/api/v1/connections").await;
        if body["items"]
            .as_array()
            .is_some_and(|items| items.iter().any(|i| i["pick_reason"] == "failover"))
        {
            failed_over = true;
            break;
        }
    }
    assert!(failed_over, "a connection shows pick_reason failover");
    proxy.app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_shows_allocations_and_events_show_reloads() {
    let a_backend = echo_backend(fresh_ip());
    let a = a_backend.addr;
    let vip = fresh_ip();
    let port = free_port(vip);
    // No cluster_ip: one is allocated from service_cidr.
    let services = service_toml("alloc", vip, port, &[a], "")
        .replace(&format!("cluster_ip = \"{vip}\"\n"), "");
    let proxy = TestApp::start(&services).await;
    let config = proxy.json("/api/v1/config").await;
    let svc = &config["services"][0];
    assert_eq!(svc["name"], "alloc");
    let ip: std::net::IpAddr = svc["cluster_ip"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("an allocated cluster IP");
    assert!(ip.to_string().starts_with("127.77."), "{ip}");
    assert_eq!(config["node"]["name"], "node-1");
    assert_eq!(config["proxy"]["drain_timeout"], "2s");
    assert_eq!(config["proxy"]["connect_timeouts_ms"], "[200, 200, 200]");

    std::fs::write(&proxy.path, "[[services]]\nname = \"Bad\"\n").expect("write");
    assert!(!proxy.app.reload(true).await);
    let events = proxy.json("/api/v1/events").await;
    let newest = &events["items"][0];
    assert_eq!(newest["type"], "Warning");
    assert_eq!(newest["reason"], "ReloadFailed");
    assert_eq!(newest["object"]["kind"], "Node");
    assert_eq!(newest["object"]["name"], "node-1");
    assert_eq!(newest["count"], 1);
    assert!(newest["message"]
        .as_str()
        .is_some_and(|m| m.contains("services[Bad].name")));
    // Where in the file, as `check` says it.
    assert!(
        newest["message"]
            .as_str()
            .is_some_and(|m| m.contains("lb.toml:2:") && m.contains(": services[Bad].name")),
        "{newest}"
    );

    let (status, page) = proxy.get("/").await;
    assert_eq!(status, 200);
    assert!(page.contains("<title>lb-proxy status</title>"));
    proxy.app.shutdown().await;
}
