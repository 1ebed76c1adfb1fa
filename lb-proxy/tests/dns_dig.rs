//! `dig` (Debian's dnsutils) against the running `lb-proxy` binary with a
//! `[dns]` section: what an operator would type. Skipped, with a message,
//! where dig is not installed (`.ci/run` installs `dnsutils`).
#![cfg(feature = "cli")]

mod dns_support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use dns_support::{eventually_blocking, free_udp_port, have};

struct Proxy(Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn dig(server: SocketAddr, args: &[&str]) -> String {
    let out = Command::new("dig")
        .args(["+norec", "+time=2", "+tries=1", "-p"])
        .arg(server.port().to_string())
        .arg(format!("@{}", server.ip()))
        .args(args)
        .output()
        .expect("dig runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn dig_gets_a_srv_and_ptr_answers_from_the_binary() {
    if !have("dig") {
        eprintln!("SKIPPED: dig is not installed (apt-get install dnsutils)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ip = "127.0.53.10".parse().unwrap();
    let listen = SocketAddr::new(ip, free_udp_port(ip));
    let config = dir.path().join("lb.toml");
    std::fs::write(
        &config,
        format!(
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
cluster_ip = "127.96.0.10"
selector = {{ app = "web" }}
ports = [{{ name = "http", port = 80, target_port = "http" }}]
[[services]]
name = "pets"
cluster_ip = "None"
selector = {{ app = "web" }}
ports = [{{ name = "http", port = 80, target_port = "http" }}]
"#
        ),
    )
    .unwrap();
    let _proxy = Proxy(
        Command::new(env!("CARGO_BIN_EXE_lb-proxy"))
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut short = String::new();
    eventually_blocking(Duration::from_secs(10), || {
        // Until the binary listens, dig prints its own error text: wait for
        // an answer that is an address.
        short = dig(listen, &["+short", "web.default.svc.k8s.test", "A"]);
        short.trim().parse::<std::net::IpAddr>().is_ok()
    });
    assert_eq!(short.trim(), "127.96.0.10");

    let full = dig(listen, &["web.default.svc.k8s.test", "A"]);
    assert!(full.contains("status: NOERROR"), "{full}");
    assert!(full.contains("flags: qr aa"), "{full}");
    assert!(
        full.contains("web.default.svc.k8s.test. 7\tIN\tA\t127.96.0.10"),
        "{full}"
    );

    let srv = dig(
        listen,
        &["+short", "_http._tcp.pets.default.svc.k8s.test", "SRV"],
    );
    assert_eq!(srv.trim(), "0 100 8080 pet-1.pets.default.svc.k8s.test.");
    let srv = dig(
        listen,
        &[
            "+tcp",
            "+short",
            "_http._tcp.web.default.svc.k8s.test",
            "SRV",
        ],
    );
    assert_eq!(srv.trim(), "0 100 80 web.default.svc.k8s.test.");

    let ptr = dig(listen, &["+short", "-x", "127.96.0.10"]);
    assert_eq!(ptr.trim(), "web.default.svc.k8s.test.");
    let ptr = dig(listen, &["+short", "-x", "127.0.244.1"]);
    assert_eq!(ptr.trim(), "pet-1.pets.default.svc.k8s.test.");

    let nx = dig(listen, &["nope.default.svc.k8s.test", "A"]);
    assert!(nx.contains("status: NXDOMAIN"), "{nx}");
    assert!(nx.contains("SOA"), "{nx}");
    let refused = dig(listen, &["www.example.test", "A"]);
    assert!(refused.contains("status: REFUSED"), "{refused}");
}
