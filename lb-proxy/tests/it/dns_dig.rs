//! `dig` (Debian's dnsutils) against the running `lb-proxy` binary with a
//! `[dns]` section: what an operator would type. Skipped, with a message,
//! where dig is not installed (`.ci/run` installs `dnsutils`).
//!
//! The service's cluster IP, 127.96.53.10, is this file's alone.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::bin::Run;
use crate::support::tools::{dig, have};
use crate::support::{eventually_async, free_udp_port};

/// `dig +norec ARGS` against `server`.
async fn ask(server: SocketAddr, args: &[&str]) -> String {
    dig(server, &[&["+norec"], args].concat()).await
}

#[tokio::test]
async fn dig_gets_a_srv_and_ptr_answers_from_the_binary() {
    if !have("dig") {
        eprintln!("SKIPPED: dig is not installed (apt-get install dnsutils)");
        return;
    }
    let ip = "127.0.53.10".parse().unwrap();
    let listen = SocketAddr::new(ip, free_udp_port(ip));
    let _proxy = Run::text(&format!(
        r#"
[cluster]
service_cidr = "127.96.0.0/16"
domain = "k8s.test"
[admin]
listen = ""
[dns]
listen = "{listen}"
ttl = 7
[[pods]]
name = "web-1"
ip = "127.0.244.1"
hostname = "pet-1"
labels = {{ app = "web" }}
ports = [{{ name = "http", container_port = 8080 }}]
[[services]]
name = "web"
cluster_ip = "127.96.53.10"
selector = {{ app = "web" }}
ports = [{{ name = "http", port = 80, target_port = "http" }}]
[[services]]
name = "pets"
cluster_ip = "None"
selector = {{ app = "web" }}
ports = [{{ name = "http", port = 80, target_port = "http" }}]
"#
    ))
    .spawn()
    .expect("lb-proxy starts");
    let short = std::sync::Mutex::new(String::new());
    eventually_async(Duration::from_secs(10), || async {
        let answer = ask(listen, &["+short", "web.default.svc.k8s.test", "A"]).await;
        // Until the binary listens, dig prints its own error text: wait for
        // an answer that is an address.
        let answered = answer.trim().parse::<std::net::IpAddr>().is_ok();
        *short.lock().unwrap() = answer;
        answered
    })
    .await;
    let short = short.into_inner().unwrap();
    assert_eq!(short.trim(), "127.96.53.10");

    let full = ask(listen, &["web.default.svc.k8s.test", "A"]).await;
    assert!(full.contains("status: NOERROR"), "{full}");
    assert!(full.contains("flags: qr aa"), "{full}");
    assert!(
        full.contains("web.default.svc.k8s.test. 7\tIN\tA\t127.96.53.10"),
        "{full}"
    );

    let srv = ask(
        listen,
        &["+short", "_http._tcp.pets.default.svc.k8s.test", "SRV"],
    )
    .await;
    assert_eq!(srv.trim(), "0 100 8080 pet-1.pets.default.svc.k8s.test.");
    let srv = ask(
        listen,
        &[
            "+tcp",
            "+short",
            "_http._tcp.web.default.svc.k8s.test",
            "SRV",
        ],
    )
    .await;
    assert_eq!(srv.trim(), "0 100 80 web.default.svc.k8s.test.");

    let ptr = ask(listen, &["+short", "-x", "127.96.53.10"]).await;
    assert_eq!(ptr.trim(), "web.default.svc.k8s.test.");
    let ptr = ask(listen, &["+short", "-x", "127.0.244.1"]).await;
    assert_eq!(ptr.trim(), "pet-1.pets.default.svc.k8s.test.");

    let nx = ask(listen, &["nope.default.svc.k8s.test", "A"]).await;
    assert!(nx.contains("status: NXDOMAIN"), "{nx}");
    assert!(nx.contains("SOA"), "{nx}");
    let refused = ask(listen, &["www.example.test", "A"]).await;
    assert!(refused.contains("status: REFUSED"), "{refused}");
}
