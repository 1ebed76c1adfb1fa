//! The App starts the responder when the file has `[dns]`, and a reload shows
//! in the next answer (endpoints, TTL).

use std::net::{IpAddr, SocketAddr};

use hickory_proto::rr::RecordType;

use crate::support::app::TestApp;
use crate::support::dns::{ips, query};
use crate::support::{eventually_async, free_udp_port, WAIT};

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
    let ip: IpAddr = "127.0.53.20".parse().unwrap();
    let listen = SocketAddr::new(ip, free_udp_port(ip));
    let app = TestApp::from_text(&file(listen, 5, true)).await;
    let addr = app.dns().expect("[dns] starts the responder").local_addr();
    assert_eq!(addr, listen);

    let m = query(addr, "pets.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(
        ips(&m),
        vec![
            "127.0.244.1".parse::<IpAddr>().unwrap(),
            "127.0.244.2".parse().unwrap()
        ]
    );
    assert_eq!(m.answers()[0].ttl(), 5);

    assert!(app.rewrite_file(&file(listen, 30, false)).await);
    // The records come from the live table: the next answer shows them.
    let m = query(addr, "pets.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(ips(&m), vec!["127.0.244.1".parse::<IpAddr>().unwrap()]);
    // The `[dns]` settings reach the responder on the ops thread, moments
    // after the reload.
    assert!(
        eventually_async(WAIT, || async {
            let m = query(addr, "pets.default.svc.cluster.local.", RecordType::A).await;
            m.answers().first().map(|a| a.ttl()) == Some(30)
        })
        .await,
        "the new TTL applies"
    );
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
    let app = TestApp::from_text("[admin]\nlisten = \"\"\n").await;
    assert!(app.dns().is_none());
    app.shutdown().await;
}

#[tokio::test]
async fn a_taken_dns_port_is_a_start_error() {
    let taken = std::net::UdpSocket::bind("127.0.53.21:0").unwrap();
    let listen = taken.local_addr().unwrap();
    let err = TestApp::try_from_text(&file(listen, 5, true))
        .await
        .expect_err("the port is taken");
    assert!(
        err.to_string()
            .starts_with(&format!("dns listener {listen}")),
        "{err}"
    );
}

#[tokio::test]
async fn another_proxys_service_is_not_served_but_still_has_a_name() {
    // As CoreDNS: every Service has a name, whichever proxy serves it.
    let ip: IpAddr = "127.0.53.30".parse().unwrap();
    let listen = SocketAddr::new(ip, free_udp_port(ip));
    let app = TestApp::from_text(&format!(
        r#"
[cluster]
service_cidr = "127.96.0.0/16"
[admin]
listen = ""
[dns]
listen = "{listen}"
[[services]]
name = "mine"
cluster_ip = "127.96.54.10"
ports = [{{ port = 80 }}]
[[services]]
name = "theirs"
cluster_ip = "127.96.54.11"
labels = {{ "service.kubernetes.io/service-proxy-name" = "other-proxy" }}
ports = [{{ port = 80 }}]
"#
    ))
    .await;
    let addr = app.dns().expect("[dns] starts the responder").local_addr();
    let served: Vec<String> = app
        .dataplane()
        .table()
        .load()
        .services()
        .map(|s| s.spec.key.name.clone())
        .collect();
    assert_eq!(served, ["mine"], "another proxy's service is not served");
    for (name, want) in [("mine", "127.96.54.10"), ("theirs", "127.96.54.11")] {
        let m = query(
            addr,
            &format!("{name}.default.svc.cluster.local."),
            RecordType::A,
        )
        .await;
        assert_eq!(ips(&m), vec![want.parse::<IpAddr>().unwrap()], "{name}");
    }
    let m = query(addr, "nobody.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(m.response_code(), hickory_proto::op::ResponseCode::NXDomain);
    app.shutdown().await;
}
