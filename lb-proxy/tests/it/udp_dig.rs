//! A real DNS client through a UDP service: `dig` asks a cluster IP whose two
//! endpoints are `dnsmasq` instances answering different addresses for one
//! name; over a run of queries both answers come back. Skipped, with a
//! message, where `dig` or `dnsmasq` is not installed (`.ci/run` installs
//! `dnsutils` and `dnsmasq-base`).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use lb_core::ProxySettings;

use crate::support::tools::{dig, have, Dnsmasq};
use crate::support::{free_udp_port, start, udp_service};

/// `dig +short +notcp svc.test A` through `server` from source address
/// `from`: the answer lines, or `None` when dig timed out.
async fn ask(server: SocketAddr, from: &str) -> Option<Vec<String>> {
    let text = dig(server, &["-b", from, "svc.test", "A", "+short", "+notcp"]).await;
    (!text.is_empty()).then(|| text.lines().map(str::to_owned).collect())
}

#[tokio::test]
async fn dig_through_the_proxy_gets_answers_from_both_dnsmasq_backends() {
    if !have("dig") || !have("dnsmasq") {
        eprintln!("SKIPPED: dig and dnsmasq are needed (apt-get install dnsutils dnsmasq-base)");
        return;
    }
    let a = Dnsmasq::start("127.0.63.1", &["/svc.test/127.1.1.1"]).await;
    let b = Dnsmasq::start("127.0.63.2", &["/svc.test/127.1.1.2"]).await;
    let vip_ip: IpAddr = "127.99.0.53".parse().unwrap();
    let vip = SocketAddr::new(vip_ip, free_udp_port(vip_ip));
    let plane = start(
        ProxySettings::default(),
        vec![udp_service("dns", vip, &[a.addr, b.addr])],
    )
    .await;
    // Each dig is a new client, so a new flow: round robin alternates. Each
    // asks from its own source address: two digs on one random source port
    // would be one flow, sent to one backend.
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..10 {
        let from = format!("127.0.64.{}", i + 1);
        let answer = ask(vip, &from)
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
