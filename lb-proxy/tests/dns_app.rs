//! The App starts the responder when the file has `[dns]`, and a reload shows
//! in the next answer (endpoints, TTL).
#![cfg(all(feature = "admin", feature = "dns"))]

mod dns_support;

use std::net::{IpAddr, SocketAddr};

use hickory_proto::rr::RecordType;
use lb_proxy::app::{App, AppOptions};

use dns_support::{ask, free_udp_port, ips};

fn file(listen: SocketAddr, ttl: u32, web2_ready: bool) -> String {
    format!(
        r#"
[cluster]
service_cidr = "127.96.0.0/16"
[admin]
listen = ""
[dns]
listen = "{listen}"
ttl = {ttl}
[[pods]]
name = "web-1"
ip = "127.0.244.1"
labels = {{ app = "web" }}
ports = [{{ name = "http", container_port = 8080 }}]
[[pods]]
name = "web-2"
ip = "127.0.244.2"
ready = {web2_ready}
labels = {{ app = "web" }}
ports = [{{ name = "http", container_port = 8080 }}]
[[services]]
name = "pets"
cluster_ip = "None"
selector = {{ app = "web" }}
ports = [{{ name = "http", port = 80, target_port = "http" }}]
"#
    )
}

#[tokio::test]
async fn the_app_serves_dns_and_a_reload_shows_in_the_next_answer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.toml");
    let ip: IpAddr = "127.0.53.20".parse().unwrap();
    let listen = SocketAddr::new(ip, free_udp_port(ip));
    std::fs::write(&path, file(listen, 5, true)).unwrap();
    let app = App::start(AppOptions::new(path.clone())).await.unwrap();
    let addr = app.dns().expect("[dns] starts the responder").local_addr();
    assert_eq!(addr, listen);

    let m = ask(addr, "pets.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(
        ips(&m),
        vec![
            "127.0.244.1".parse::<IpAddr>().unwrap(),
            "127.0.244.2".parse().unwrap()
        ]
    );
    assert_eq!(m.answers()[0].ttl(), 5);

    std::fs::write(&path, file(listen, 30, false)).unwrap();
    assert!(app.reload(true).await);
    let m = ask(addr, "pets.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(ips(&m), vec!["127.0.244.1".parse::<IpAddr>().unwrap()]);
    assert_eq!(m.answers()[0].ttl(), 30, "the new TTL applies at once");
    assert!(
        app.dns()
            .unwrap()
            .counters()
            .local
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 2
    );

    app.shutdown().await;
}

#[tokio::test]
async fn without_a_dns_section_nothing_answers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.toml");
    std::fs::write(&path, "[admin]\nlisten = \"\"\n").unwrap();
    let app = App::start(AppOptions::new(path)).await.unwrap();
    assert!(app.dns().is_none());
    app.shutdown().await;
}

#[tokio::test]
async fn a_taken_dns_port_is_a_start_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.toml");
    let taken = std::net::UdpSocket::bind("127.0.53.21:0").unwrap();
    let listen = taken.local_addr().unwrap();
    std::fs::write(&path, file(listen, 5, true)).unwrap();
    let err = App::start(AppOptions::new(path))
        .await
        .expect_err("the port is taken");
    assert!(
        err.to_string()
            .starts_with(&format!("dns listener {listen}")),
        "{err}"
    );
}
