//! The etcd source under trouble while traffic flows: a compaction that
//! makes the watch start over from a full read, and an etcd restart on the
//! same data directory and port. A client keeps opening connections through
//! lb-proxy the whole time; every one gets its answer, and a change made
//! afterwards still arrives.

use std::time::Duration;

use crate::support::bin::{Run, Running};
use crate::support::etcd::*;
use crate::support::*;

const POD: &[u8] = br#"{"name":"pod-a","ip":"127.0.39.1","node":"node-1","labels":{"app":"web"},"ports":[{"name":"http","container_port":8080}]}"#;
const WEB: &[u8] = br#"{"name":"web","type":"NodePort","selector":{"app":"web"},"ports":[{"port":80,"target_port":"http"}]}"#;
/// `web` with a second port: the change the watch must not miss.
const WEB_TWO_PORTS: &[u8] = br#"{"name":"web","type":"NodePort","selector":{"app":"web"},"ports":[{"name":"a","port":80,"target_port":"http"},{"name":"b","port":81,"target_port":"http"}]}"#;

/// Starts one node (node-1 on `ip`) reading etcd at `etcd_url`, with `web`
/// served; returns it and web's first node port.
fn start_node(dir: &std::path::Path, ip: &str, etcd_url: &str) -> (Running, u64) {
    let admin = free_port(ip);
    let config = dir.join("node-1.toml");
    std::fs::write(&config, node_config("node-1", ip, admin, etcd_url, "")).unwrap();
    let p = Run::file(&config)
        .admin(sa(&format!("{ip}:{admin}")))
        .start()
        .unwrap();
    let port = p
        .node_port("web", 0)
        .unwrap_or_else(|| panic!("web has no node port: {}", p.logs()));
    (p, port)
}

/// The second port of `web` once it shows, then asked through.
fn second_port_serves(p: &Running, ip: &str) {
    let port = p
        .node_port("web", 1)
        .unwrap_or_else(|| panic!("the change never arrived: {}", p.logs()));
    let to = sa(&format!("{ip}:{port}"));
    assert!(
        eventually_blocking(Duration::from_secs(5), || ask(to)
            .is_ok_and(|a| a == "pod-a")),
        "{}",
        p.logs()
    );
}

/// Clients opening connections to `to` one every 10 ms (3000 at most, for
/// 40 s at most), each answered `pod-a`; returns once some were answered.
fn traffic(to: std::net::SocketAddr) -> Traffic {
    let traffic = Traffic::start(
        to,
        &["pod-a"],
        Duration::from_millis(10),
        3000,
        Duration::from_secs(40),
    );
    flows_on(&traffic);
    traffic
}

/// Waits until `traffic` has 20 more answers than now: it went on through
/// whatever just happened.
fn flows_on(traffic: &Traffic) {
    let from = traffic.answered();
    assert!(
        eventually_blocking(WAIT, || traffic.answered() >= from + 20),
        "the traffic stalled at {} answers",
        traffic.answered()
    );
}

fn assert_no_loss(report: TrafficReport, p: &Running) {
    assert!(
        report.failures.is_empty(),
        "{} of {} connections failed: {:?}\n{}",
        report.failures.len(),
        report.failures.len() + report.answered,
        &report.failures[..report.failures.len().min(10)],
        p.logs()
    );
    // The traffic was waited for before the trouble and after it (20 answers
    // each); how many more arrived depends on the machine's speed.
    assert!(report.answered >= 40, "too little traffic: {report:?}");
}

#[test]
fn a_watch_that_restarts_behind_a_compaction_relists_without_losing_a_connection() {
    let etcd = Etcd::start("127.0.38.1").unwrap();
    let relay = Relay::start("127.0.38.1", etcd.client_addr()).unwrap();
    let _pod = http_backend("127.0.39.1:8080", "pod-a");
    let c = etcd.client();
    c.put("/lbtest/pods/default/pod-a", POD).unwrap();
    c.put("/lbtest/services/default/web", WEB).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (p, port) = start_node(dir.path(), "127.0.38.10", &relay.url());
    let resyncs = "lb_source_resyncs_total{source=\"etcd\"}";
    assert_eq!(p.metric(resyncs), Some(1.0));
    let traffic = traffic(sa(&format!("127.0.38.10:{port}")));

    // The watch stream drops; lb-proxy re-watches from its last revision,
    // and that request waits in the relay while the store moves on and is
    // compacted past it.
    relay.cut_and_hold_watches();
    assert!(
        eventually_blocking(Duration::from_secs(5), || relay.held() == 1),
        "no re-watch: {}",
        p.logs()
    );
    c.put("/lbtest/services/default/web", WEB_TWO_PORTS)
        .unwrap();
    let rev = c.put("/other/unrelated", b"x").unwrap();
    etcd.compact(rev).unwrap();
    relay.release_watches();

    // etcd refuses the compacted revision; lb-proxy reads everything again.
    assert!(
        eventually_blocking(Duration::from_secs(10), || p.metric(resyncs) == Some(2.0)),
        "{}",
        p.logs()
    );
    assert!(p.logs().contains("compacted"), "{}", p.logs());
    second_port_serves(&p, "127.0.38.10");
    flows_on(&traffic);
    assert_no_loss(traffic.finish(), &p);
    assert_eq!(p.readyz().0, 200);
}

#[test]
fn an_etcd_restart_during_traffic_loses_no_connection_and_the_watch_resumes() {
    let mut etcd = Etcd::start("127.0.38.2").unwrap();
    let _pod = http_backend("127.0.39.2:8080", "pod-a");
    let c = etcd.client();
    c.put(
        "/lbtest/pods/default/pod-a",
        &String::from_utf8_lossy(POD)
            .replace("127.0.39.1", "127.0.39.2")
            .into_bytes(),
    )
    .unwrap();
    c.put("/lbtest/services/default/web", WEB).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (p, port) = start_node(dir.path(), "127.0.38.11", &etcd.url());
    let traffic = traffic(sa(&format!("127.0.38.11:{port}")));

    etcd.kill();
    assert!(
        eventually_blocking(Duration::from_secs(10), || p.readyz().0 == 503),
        "{}",
        p.logs()
    );
    etcd.restart().unwrap();
    assert!(
        eventually_blocking(Duration::from_secs(10), || p.readyz().0 == 200),
        "{}",
        p.logs()
    );
    etcd.client()
        .put("/lbtest/services/default/web", WEB_TWO_PORTS)
        .unwrap();
    second_port_serves(&p, "127.0.38.11");
    flows_on(&traffic);
    assert_no_loss(traffic.finish(), &p);
}
