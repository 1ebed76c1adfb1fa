//! A real DNS client through a UDP service: `dig` asks a cluster IP whose two
//! endpoints are `dnsmasq` instances answering different addresses for one
//! name; over a run of queries both answers come back. Skipped, with a
//! message, where `dig` or `dnsmasq` is not installed (`.ci/run` installs
//! `dnsutils` and `dnsmasq-base`).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use lb_core::{EndpointSpec, NodeSpec, PortSpec, Protocol, ProxySettings, ServiceSpec, Snapshot};
use lb_proxy::DataPlane;

fn have(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn free_udp_port(ip: IpAddr) -> u16 {
    std::net::UdpSocket::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `dig +short` for `name` at `server`; the answer lines, or `None` on a
/// timeout. One try, two seconds at most.
async fn dig(server: SocketAddr, name: &str) -> Option<Vec<String>> {
    let out = tokio::process::Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .arg("-p")
        .arg(server.port().to_string())
        .args([name, "A", "+short", "+time=2", "+tries=1", "+notcp"])
        .output()
        .await
        .expect("dig runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() || text.contains("timed out") {
        return None;
    }
    Some(text.lines().map(str::to_owned).collect())
}

/// A dnsmasq on loopback answering `svc.test` with `answer`; killed on drop.
struct Dnsmasq {
    addr: SocketAddr,
    child: Child,
}

impl Dnsmasq {
    async fn start(ip: &str, answer: &str) -> Dnsmasq {
        let ip: IpAddr = ip.parse().unwrap();
        let addr = SocketAddr::new(ip, free_udp_port(ip));
        let child = Command::new("dnsmasq")
            .args([
                "--no-resolv",
                "--no-hosts",
                "--keep-in-foreground",
                "--bind-interfaces",
                "--conf-file=/dev/null",
                "--cache-size=0",
                "--pid-file=",
            ])
            .arg(format!("--listen-address={ip}"))
            .arg(format!("--port={}", addr.port()))
            .arg(format!("--address=/svc.test/{answer}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq starts");
        let d = Dnsmasq { addr, child };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if dig(addr, "svc.test").await.is_some_and(|a| !a.is_empty()) {
                return d;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("dnsmasq did not answer on {addr} within 5 s");
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn dig_through_the_proxy_gets_answers_from_both_dnsmasq_backends() {
    if !have("dig") || !have("dnsmasq") {
        eprintln!("SKIPPED: dig and dnsmasq are needed (apt-get install dnsutils dnsmasq-base)");
        return;
    }
    let a = Dnsmasq::start("127.0.63.1", "127.1.1.1").await;
    let b = Dnsmasq::start("127.0.63.2", "127.1.1.2").await;
    let vip_ip: IpAddr = "127.99.0.53".parse().unwrap();
    let vip = SocketAddr::new(vip_ip, free_udp_port(vip_ip));
    let port = PortSpec {
        protocol: Protocol::Udp,
        ..PortSpec::tcp("dns", vip.port())
    }
    .with_endpoint(EndpointSpec::new(a.addr))
    .with_endpoint(EndpointSpec::new(b.addr));
    let svc = ServiceSpec::cluster_ip("default", "dns", vip_ip).with_port(port);
    let node = NodeSpec {
        name: "node-1".into(),
        addresses: vec!["127.0.1.1".parse().unwrap()],
    };
    let plane = DataPlane::start(
        ProxySettings::default(),
        Snapshot::build(node, vec![svc], None, SystemTime::now()),
    )
    .await;
    // Each dig is a new client port, so a new flow: round robin alternates.
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..10 {
        let answer = dig(vip, "svc.test")
            .await
            .expect("dig through the proxy timed out");
        assert_eq!(answer.len(), 1, "{answer:?}");
        *seen.entry(answer[0].clone()).or_default() += 1;
    }
    eprintln!("dig through {vip}: {seen:?}");
    assert_eq!(
        seen.keys().map(String::as_str).collect::<Vec<_>>(),
        vec!["127.1.1.1", "127.1.1.2"],
        "both backends answer"
    );
    assert!(
        seen.values().all(|n| *n == 5),
        "round robin spreads evenly: {seen:?}"
    );
    plane.shutdown().await;
}
