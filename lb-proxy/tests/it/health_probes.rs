//! Readiness probes on loopback: lb-proxy as the kubelet and the endpoints
//! controller. A backend that dies leaves rotation within
//! `period × failure_threshold + period`, comes back when it returns; http_get,
//! exec, initial delay, publish_not_ready_addresses and the terminating
//! fallback behave as in Kubernetes.

use std::net::SocketAddr;
use std::time::Duration;

use lb_core::health::{PodKey, ProbeAction};
use lb_proxy::control::ControlPlane;

use crate::support::*;

const PERIOD: Duration = Duration::from_millis(200);
const FAILURES: u32 = 2;
/// Room for scheduling and the coalesced rebuild on a busy test machine.
const SLACK: Duration = Duration::from_millis(1000);

/// Three backends answering "a", "b", "c", pods `p-a`, `p-b`, `p-c` with TCP
/// probes, behind a fresh VIP.
async fn three() -> (Vec<Backend>, SocketAddr, lb_proxy::DataPlane, ControlPlane) {
    let backends = vec![
        http_backend("127.0.242.1", "a"),
        http_backend("127.0.242.2", "b"),
        http_backend("127.0.242.3", "c"),
    ];
    let vip = vip();
    let names = ["p-a", "p-b", "p-c"];
    let pods = names
        .iter()
        .zip(&backends)
        .map(|(n, b)| pod(n, b.addr, "node-1"))
        .collect();
    let probes = names
        .iter()
        .zip(&backends)
        .map(|(n, b)| tcp_probe(n, b.addr, PERIOD, FAILURES))
        .collect();
    let (plane, health) =
        start_probed(no_ejection(), vec![pod_service("web", vip, pods)], probes).await;
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    assert!(
        eventually(WAIT, || addrs.iter().all(|a| is_ready(&plane, vip, *a))).await,
        "every probed pod becomes ready"
    );
    (backends, vip, plane, health)
}

/// Fetches through `vip`, one every 5 ms, until stopped.
fn traffic(vip: SocketAddr) -> Traffic {
    Traffic::start(
        vip,
        &[],
        Duration::from_millis(5),
        5000,
        Duration::from_secs(60),
    )
}

/// After `b` left rotation: new requests are answered by the others only, no
/// dial goes to `b`, and none fails. A dial of `traffic` that picked `b`
/// before it left may still be failing over: it ends first.
async fn only_others_answer(
    plane: &lb_proxy::DataPlane,
    vip: SocketAddr,
    b: SocketAddr,
    traffic: &Traffic,
) {
    let completed = traffic.completed();
    assert!(
        eventually(WAIT, || traffic.completed() >= completed + 2).await,
        "the traffic stalled"
    );
    let errors = connect_errors(plane, vip, b);
    for _ in 0..30 {
        let body = try_fetch(vip).await.expect("no new connection fails");
        assert!(body == "a" || body == "c", "answered by {body:?}");
    }
    assert_eq!(
        connect_errors(plane, vip, b),
        errors,
        "no new connection was dialed to the dead backend"
    );
}

async fn comes_back(plane: &lb_proxy::DataPlane, vip: SocketAddr, b: SocketAddr) {
    let restarted = http_backend(b, "b");
    assert!(
        eventually(WAIT, || is_ready(plane, vip, b)).await,
        "the restarted backend turns ready"
    );
    let mut seen = false;
    for _ in 0..30 {
        if try_fetch(vip).await.as_deref() == Ok("b") {
            seen = true;
            break;
        }
    }
    assert!(seen, "the restarted backend takes traffic again");
    assert!(restarted.accepted() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backend_leaves_rotation_within_the_failure_threshold_and_returns() {
    let (mut backends, vip, plane, _health) = three().await;
    let traffic = traffic(vip);
    let b = backends.remove(1);
    let b_addr = b.addr;
    b.kill().await;
    let bound = PERIOD * (FAILURES + 1) + SLACK;
    assert!(
        eventually(bound, || !is_ready(&plane, vip, b_addr)).await,
        "out of rotation within period × failure_threshold + period"
    );
    let failed_before = traffic.failures();
    only_others_answer(&plane, vip, b_addr, &traffic).await;
    comes_back(&plane, vip, b_addr).await;
    let report = traffic.stop().await;
    let (answers, failures) = (report.answered, report.failures.len());
    assert!(answers > 0);
    assert_eq!(
        failures, failed_before,
        "no request under steady traffic failed once the backend was out"
    );
    assert_eq!(failures, 0, "a refused dial fails over, unseen by clients");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_backend_whose_dials_hang_leaves_rotation_and_returns() {
    let (mut backends, vip, plane, _health) = three().await;
    let traffic = traffic(vip);
    let b = backends.remove(1);
    let b_addr = b.addr;
    b.kill().await;
    let stopped = blackhole(b_addr).await;
    let bound = PERIOD * (FAILURES + 1) + SLACK;
    assert!(
        eventually(bound, || !is_ready(&plane, vip, b_addr)).await,
        "out of rotation within period × failure_threshold + period"
    );
    let failed_before = traffic.failures();
    only_others_answer(&plane, vip, b_addr, &traffic).await;
    drop(stopped);
    comes_back(&plane, vip, b_addr).await;
    let report = traffic.stop().await;
    let (answers, failures) = (report.answered, report.failures.len());
    assert!(answers > 0);
    assert_eq!(
        failures, failed_before,
        "no new connection failed after that"
    );
}

const OK: &str = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
const ERROR: &str =
    "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_get_probe_answered_500_keeps_the_pod_out() {
    let good = http_backend("127.0.242.4", OK);
    let bad = http_backend("127.0.242.5", ERROR);
    let vip = vip();
    let get = |addr: SocketAddr| ProbeAction::HttpGet {
        path: "/healthz".into(),
        port: addr.port(),
    };
    let (plane, health) = start_probed(
        no_ejection(),
        vec![pod_service(
            "web",
            vip,
            vec![
                pod("good", good.addr, "node-1"),
                pod("bad", bad.addr, "node-1"),
            ],
        )],
        vec![
            probe("good", good.addr, get(good.addr), PERIOD, FAILURES),
            probe("bad", bad.addr, get(bad.addr), PERIOD, FAILURES),
        ],
    )
    .await;
    assert!(eventually(WAIT, || is_ready(&plane, vip, good.addr)).await);
    let bad_key = PodKey::new("default", "bad");
    assert!(
        eventually(WAIT, || health
            .probes()
            .get(&bad_key)
            .is_some_and(|s| s.probes >= 3))
        .await
    );
    assert!(!is_ready(&plane, vip, bad.addr), "a 500 is a failure");
    assert_eq!(health.probes()[&bad_key].message, "HTTP 500");
    let view = lb_proxy::ops::views::endpoints_view_with(&plane.table().load(), &health.probes());
    let bad_view = view.items[0]
        .endpoints
        .iter()
        .find(|e| e.port == bad.addr.port() && e.ip == bad.addr.ip().to_string())
        .unwrap();
    assert_eq!(bad_view.state, "not_ready");
    assert_eq!(bad_view.reason, "probe failing: HTTP 500");
    assert_eq!(bad_view.probe, "HTTP 500");
    assert!(lb_proxy::ops::views::parse_rfc3339(&bad_view.since).is_some());
    let table = lb_proxy::ops::views::endpoints_wide_table(&view, std::time::SystemTime::now())
        .render(&Default::default());
    assert!(table.contains("probe failing: HTTP 500"), "{table}");
    for _ in 0..10 {
        assert!(try_fetch(vip).await.unwrap().ends_with("ok"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_probes_pass_on_exit_0_and_fail_otherwise_or_on_timeout() {
    let pass = http_backend("127.0.242.6", "pass");
    let fail = http_backend("127.0.242.7", "fail");
    let slow = http_backend("127.0.242.8", "slow");
    let vip = vip();
    let exec = |script: &str| ProbeAction::Exec {
        command: vec!["sh".into(), "-c".into(), script.into()],
    };
    let (plane, health) = start_probed(
        no_ejection(),
        vec![pod_service(
            "web",
            vip,
            vec![
                pod("pass", pass.addr, "node-1"),
                pod("fail", fail.addr, "node-1"),
                pod("slow", slow.addr, "node-1"),
            ],
        )],
        vec![
            probe("pass", pass.addr, exec("exit 0"), PERIOD, 1),
            probe("fail", fail.addr, exec("exit 1"), PERIOD, 1),
            probe("slow", slow.addr, exec("sleep 5"), PERIOD, 1),
        ],
    )
    .await;
    assert!(eventually(WAIT, || is_ready(&plane, vip, pass.addr)).await);
    let probed = |name: &str| {
        health
            .probes()
            .get(&PodKey::new("default", name))
            .map_or(0, |s| s.probes)
    };
    assert!(eventually(WAIT, || probed("fail") >= 2 && probed("slow") >= 2).await);
    assert!(!is_ready(&plane, vip, fail.addr));
    assert!(
        !is_ready(&plane, vip, slow.addr),
        "killed after timeout_seconds"
    );
    let statuses = health.probes();
    assert_eq!(
        statuses[&PodKey::new("default", "fail")].message,
        "exit status: 1"
    );
    assert!(statuses[&PodKey::new("default", "slow")]
        .message
        .contains("timed out"));
    assert_eq!(try_fetch(vip).await.unwrap(), "pass");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_initial_delay_is_honoured() {
    let backend = http_backend("127.0.242.9", "x");
    let vip = vip();
    let delay = Duration::from_millis(1500);
    let probe = tcp_probe("slow-start", backend.addr, PERIOD, 1).with_initial_delay(delay);
    let started = tokio::time::Instant::now();
    let (plane, _health) = start_probed(
        no_ejection(),
        vec![pod_service(
            "web",
            vip,
            vec![pod("slow-start", backend.addr, "node-1")],
        )],
        vec![probe],
    )
    .await;
    assert_eq!(
        conditions(&plane, vip, backend.addr),
        Some((false, false)),
        "a probed pod starts not ready"
    );
    while started.elapsed() < delay - Duration::from_millis(300) {
        assert!(
            !is_ready(&plane, vip, backend.addr),
            "not probed before the initial delay"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        eventually(PERIOD + SLACK + Duration::from_millis(300), || is_ready(
            &plane,
            vip,
            backend.addr
        ))
        .await
    );
    assert!(started.elapsed() >= delay);
    assert!(backend.accepted() > 0, "the probe connected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_not_ready_addresses_admits_pods_whose_probe_fails() {
    let backend = http_backend("127.0.242.10", "published");
    let vip = vip();
    let mut svc = pod_service("web", vip, vec![pod("p", backend.addr, "node-1")]);
    svc.publish_not_ready_addresses = true;
    let failing = ProbeAction::Exec {
        command: vec!["sh".into(), "-c".into(), "exit 1".into()],
    };
    let (plane, health) = start_probed(
        no_ejection(),
        vec![svc],
        vec![probe("p", backend.addr, failing, PERIOD, 1)],
    )
    .await;
    let key = PodKey::new("default", "p");
    assert!(eventually(WAIT, || health.probes()[&key].probes >= 2).await);
    assert_eq!(
        conditions(&plane, vip, backend.addr),
        Some((true, false)),
        "ready although not serving"
    );
    assert_eq!(try_fetch(vip).await.unwrap(), "published");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminating_pods_serve_only_when_no_pod_is_ready() {
    let old = http_backend("127.0.242.11", "old");
    let new = http_backend("127.0.242.12", "new");
    let vip = vip();
    let mut terminating = pod("old", old.addr, "node-1");
    terminating.terminating = true;
    let (plane, _health) = start_probed(
        no_ejection(),
        vec![pod_service(
            "web",
            vip,
            vec![terminating, pod("new", new.addr, "node-1")],
        )],
        vec![tcp_probe("new", new.addr, PERIOD, 1)],
    )
    .await;
    assert!(eventually(WAIT, || is_ready(&plane, vip, new.addr)).await);
    for _ in 0..6 {
        assert_eq!(try_fetch(vip).await.unwrap(), "new");
    }
    let new_addr = new.addr;
    new.kill().await;
    assert!(eventually(WAIT, || !is_ready(&plane, vip, new_addr)).await);
    for _ in 0..6 {
        assert_eq!(
            try_fetch(vip).await.unwrap(),
            "old",
            "the terminating fallback"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_connections_survive_their_pod_turning_not_ready() {
    let backend = echo_backend("127.0.242.13");
    let flag = tempfile::NamedTempFile::new().unwrap();
    let path = flag.path().to_string_lossy().to_string();
    let vip = vip();
    let check = ProbeAction::Exec {
        command: vec!["test".into(), "-e".into(), path.clone()],
    };
    let (plane, _health) = start_probed(
        no_ejection(),
        vec![pod_service(
            "web",
            vip,
            vec![pod("echo", backend.addr, "node-1")],
        )],
        vec![probe("echo", backend.addr, check, PERIOD, 1)],
    )
    .await;
    assert!(eventually(WAIT, || is_ready(&plane, vip, backend.addr)).await);
    let mut stream = tokio::net::TcpStream::connect(vip).await.unwrap();
    echo(&mut stream, b"before").await;
    drop(flag); // the file goes: the probe fails
    assert!(eventually(WAIT, || !is_ready(&plane, vip, backend.addr)).await);
    echo(&mut stream, b"after").await;
    assert!(
        try_fetch(vip).await.is_err(),
        "no ready endpoint: new connections are refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_from_the_file_decide_readiness() {
    let ok = http_backend("127.0.242.14", "ok");
    let vip = vip();
    let text = format!(
        r#"
[node]
name = "node-1"
addresses = ["127.0.1.1"]
[cluster]
service_cidr = "127.77.0.0/16"
[[services]]
name = "web"
cluster_ip = "{vip_ip}"
selector = {{ app = "web" }}
ports = [{{ port = {vip_port}, target_port = "http" }}]
[[pods]]
name = "up"
ip = "127.0.242.14"
labels = {{ app = "web" }}
ports = [{{ name = "http", container_port = {ok_port} }}]
[pods.readiness_probe]
tcp_socket = {{ port = "http" }}
period_seconds = 1
[[pods]]
name = "down"
ip = "127.0.242.15"
labels = {{ app = "web" }}
ports = [{{ name = "http", container_port = {ok_port} }}]
[pods.readiness_probe]
exec = {{ command = ["sh", "-c", "exit 1"] }}
period_seconds = 1
"#,
        vip_ip = vip.ip(),
        vip_port = vip.port(),
        ok_port = ok.addr.port(),
    );
    let config = lb_config::check_str(&text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.probes.len(), 2);
    let (plane, health) = start_config(config).await;
    let down = SocketAddr::new(ip("127.0.242.15"), ok.addr.port());
    assert_eq!(conditions(&plane, vip, ok.addr), Some((false, false)));
    assert!(eventually(WAIT, || is_ready(&plane, vip, ok.addr)).await);
    let key = PodKey::new("default", "down");
    assert!(eventually(WAIT, || health.probes()[&key].probes >= 1).await);
    assert!(!is_ready(&plane, vip, down));
    assert_eq!(try_fetch(vip).await.unwrap(), "ok");
}
