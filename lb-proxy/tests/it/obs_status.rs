//! What the status page reads, through the App's admin API: ejections and
//! their ends, and readiness probes failing and passing, as
//! Kubernetes-shaped events (aggregated, never a flood); the per-port and
//! per-endpoint counters of its columns in `/api/v1/services` and
//! `/api/v1/endpoints`; the sparklines' history in `/api/v1/rates`, which a
//! removed service leaves. The same columns in a real browser are
//! `obs_browser`'s. Addresses: 127.0.57.0/24, services in 127.98.57.0/24.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

use crate::support::app::TestApp;
use crate::support::*;

fn head(proxy: &str) -> String {
    format!(
        "[node]\nname = \"node-1\"\naddresses = [\"127.0.57.1\"]\n\
         [cluster]\nservice_cidr = \"127.98.57.0/24\"\n\
         [proxy]\nconnect_timeouts_ms = [200, 200]\n{proxy}\n\
         [admin]\nlisten = \"127.0.57.1:0\"\n"
    )
}

/// An unnamed TCP port `port` at `cluster_ip` over `ips`, all at
/// `target`.
fn unnamed_service(name: &str, cluster_ip: &str, port: u16, ips: &[&str], target: u16) -> String {
    let addresses: Vec<String> = ips
        .iter()
        .map(|ip| format!("{{ ip = \"{ip}\" }}"))
        .collect();
    format!(
        "[[services]]\nname = \"{name}\"\ncluster_ip = \"{cluster_ip}\"\nports = [{{ port = {port} }}]\n\
         [[endpoints]]\nname = \"{name}\"\n[[endpoints.subsets]]\n\
         addresses = [{}]\nports = [{{ port = {target} }}]\n",
        addresses.join(", ")
    )
}

/// The events with `reason`, most recent first.
fn events_with(events: &Value, reason: &str) -> Vec<Value> {
    events["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter(|e| e["reason"] == reason)
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// The count of the one event with `reason`, 0 without one.
async fn count_of(app: &TestApp, reason: &str) -> u64 {
    let events = app.json("/api/v1/events").await;
    let found = events_with(&events, reason);
    assert!(found.len() <= 1, "one aggregated {reason}: {events}");
    found.first().and_then(|e| e["count"].as_u64()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ejected_endpoint_returns_and_a_flapping_one_raises_counts() {
    let good = http_backend("127.0.57.10", "good");
    let port = good.addr.port();
    // Nothing listens at .11 yet: its dials are refused, it is ejected.
    let text = head("outlier_consecutive_failures = 2\noutlier_base_ejection = \"1s\"")
        + &unnamed_service(
            "flaky",
            "127.98.57.10",
            8080,
            &["127.0.57.10", "127.0.57.11"],
            port,
        );
    let app = TestApp::from_text(&text).await;
    let vip: SocketAddr = "127.98.57.10:8080".parse().expect("addr");
    let ejected_message =
        format!("Endpoint 8080/TCP 127.0.57.11:{port} ejected after consecutive dial failures");
    let returned_message =
        format!("Endpoint 8080/TCP 127.0.57.11:{port} returned to rotation after its ejection");

    // Ejected, then back once the second has run out.
    for round in 1..=2u64 {
        let ejected = eventually_async(WAIT, || async {
            assert_eq!(try_fetch(vip).await.expect("failover"), "good");
            count_of(&app, "EndpointEjected").await >= round
        })
        .await;
        assert!(ejected, "ejection {round} is an event");
        let returned = eventually_async(WAIT, || async {
            count_of(&app, "EndpointReturned").await >= round
        })
        .await;
        assert!(returned, "return {round} is an event");
    }
    let events = app.json("/api/v1/events").await;
    let ejected = &events_with(&events, "EndpointEjected")[0];
    assert_eq!(ejected["type"], "Warning");
    assert_eq!(ejected["message"], ejected_message);
    assert_eq!(ejected["object"]["kind"], "Service");
    assert_eq!(ejected["object"]["name"], "flaky");
    let returned = &events_with(&events, "EndpointReturned")[0];
    assert_eq!(returned["type"], "Normal");
    assert_eq!(returned["message"], returned_message);
    assert_eq!(returned["object"]["name"], "flaky");
    assert_eq!(returned["count"], 2, "the flap raised the count: {events}");

    // The endpoint accepts now: no more ejections, answers from both.
    let now_good = http_backend(SocketAddr::new(ip("127.0.57.11"), port), "also good");
    let both = eventually_async(WAIT, || async {
        let answers: Vec<String> = answers_of(vip, 4).await;
        answers.iter().any(|a| a == "also good")
    })
    .await;
    assert!(both, "the returned endpoint takes connections");
    let endpoints = app.json("/api/v1/endpoints").await;
    let back = endpoint(&endpoints, "127.0.57.11");
    assert_eq!(back["state"], "ready", "{endpoints}");
    assert!(back["connect_errors"].as_u64() >= Some(3), "{back}");
    drop(now_good);
    app.shutdown().await;
}

async fn answers_of(vip: SocketAddr, n: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        if let Ok(answer) = try_fetch(vip).await {
            out.push(answer);
        }
    }
    out
}

/// The endpoint at `ip` in an `/api/v1/endpoints` body.
fn endpoint<'a>(endpoints: &'a Value, ip: &str) -> &'a Value {
    endpoints["items"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["endpoints"].as_array().into_iter().flatten())
        .find(|e| e["ip"] == ip)
        .unwrap_or_else(|| panic!("endpoint {ip} in {endpoints}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_probe_is_unhealthy_on_its_pod_and_a_passing_one_healthy() {
    let pod_ip = ip("127.0.57.20");
    let pod_port = free_port(pod_ip);
    let pod = SocketAddr::new(pod_ip, pod_port);
    let text = head("")
        + &format!(
            r#"
[[pods]]
name = "web-1"
ip = "{pod_ip}"
labels = {{ app = "web" }}
ports = [{{ name = "http", container_port = {pod_port}, protocol = "TCP" }}]
[pods.readiness_probe]
tcp_socket = {{ port = "http" }}
period_seconds = 1
timeout_seconds = 1
failure_threshold = 1

[[services]]
name = "web"
cluster_ip = "127.98.57.20"
selector = {{ app = "web" }}
ports = [{{ port = 80, target_port = "http" }}]
"#
        );
    let app = TestApp::from_text(&text).await;
    let refused = format!("Readiness probe failed: dial {pod}: ");
    // Refused: Unhealthy on the Pod, with the kubelet's words and the cause.
    let unhealthy =
        eventually_async(WAIT, || async { count_of(&app, "Unhealthy").await >= 1 }).await;
    assert!(unhealthy, "a failed probe is an event");
    let events = app.json("/api/v1/events").await;
    let first = events_with(&events, "Unhealthy")[0].clone();
    assert_eq!(first["type"], "Warning");
    assert_eq!(first["object"]["kind"], "Pod");
    assert_eq!(first["object"]["namespace"], "default");
    assert_eq!(first["object"]["name"], "web-1");
    let message = first["message"].as_str().unwrap_or_default();
    assert!(message.starts_with(&refused), "{message}");
    let endpoints = app.json("/api/v1/endpoints").await;
    assert_eq!(endpoint(&endpoints, "127.0.57.20")["probe_check"], "L4CON");
    // Failing every period: one event whose count rises.
    let repeated =
        eventually_async(WAIT, || async { count_of(&app, "Unhealthy").await >= 3 }).await;
    assert!(repeated, "repeated failures raise one event's count");

    // Accepts now: Healthy, and the endpoint shows the passing check.
    let backend = echo_backend(pod);
    let healthy = eventually_async(WAIT, || async { count_of(&app, "Healthy").await >= 1 }).await;
    assert!(healthy, "turning ready is an event");
    let ready = eventually_async(WAIT, || async {
        endpoint(&app.json("/api/v1/endpoints").await, "127.0.57.20")["state"] == "ready"
    })
    .await;
    assert!(ready, "the endpoint turns ready");
    let events = app.json("/api/v1/events").await;
    let healthy = &events_with(&events, "Healthy")[0];
    assert_eq!(healthy["type"], "Normal");
    assert_eq!(healthy["message"], "Readiness probe succeeded: connected");
    assert_eq!(healthy["object"]["name"], "web-1");
    let endpoints = app.json("/api/v1/endpoints").await;
    let web = endpoint(&endpoints, "127.0.57.20");
    assert_eq!(web["probe_check"], "L4OK");
    assert!(web["probe_latency_ms"].is_u64(), "{web}");
    assert_eq!(web["service_port"], 80);

    // Refused again: the same Unhealthy event counts on, and the service
    // records the transition.
    let before = count_of(&app, "Unhealthy").await;
    backend.kill().await;
    let again = eventually_async(WAIT, || async {
        count_of(&app, "Unhealthy").await > before
    })
    .await;
    assert!(again, "failing again raises the count");
    let not_ready = eventually_async(WAIT, || async {
        !events_with(&app.json("/api/v1/events").await, "EndpointNotReady").is_empty()
    })
    .await;
    assert!(
        not_ready,
        "the service records the endpoint turning not ready"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_views_carry_the_status_page_columns_and_rates_leave_with_their_service() {
    let resetter = reset_backend("127.0.57.30");
    let port = resetter.addr.port();
    let echo = echo_backend(SocketAddr::new(ip("127.0.57.32"), port));
    // .31 refuses: dial errors there, failovers to .30, which resets.
    let services = unnamed_service(
        "flaky",
        "127.98.57.30",
        8081,
        &["127.0.57.30", "127.0.57.31"],
        port,
    ) + &unnamed_service("busy", "127.98.57.32", 9090, &["127.0.57.32"], port);
    let text = head("max_connections = 2") + &services;
    let app = TestApp::from_text(&text).await;
    let flaky: SocketAddr = "127.98.57.30:8081".parse().expect("addr");
    let busy: SocketAddr = "127.98.57.32:9090".parse().expect("addr");
    for _ in 0..4 {
        let mut c = tokio::net::TcpStream::connect(flaky)
            .await
            .expect("connect");
        use tokio::io::AsyncWriteExt;
        c.write_all(b"x").await.expect("write");
        let _ = read_until_closed(&mut c, Duration::from_secs(5)).await;
    }
    // Two held open, the third over max_connections.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = tokio::net::TcpStream::connect(busy).await.expect("connect");
        echo_msg(&mut c).await;
        held.push(c);
    }
    // Reset at once: the reset may already be there when the connect returns.
    if let Ok(mut over) = tokio::net::TcpStream::connect(busy).await {
        let _ = read_until_closed(&mut over, Duration::from_secs(5)).await;
    }

    let counted = eventually_async(WAIT, || async {
        let services = app.json("/api/v1/services").await;
        let t = &traffic(&services, "busy")["rejected"]["limit"];
        let f = &traffic(&services, "flaky")["resets"];
        t.as_u64() == Some(1) && f.as_u64() == Some(4)
    })
    .await;
    assert!(counted, "{}", app.json("/api/v1/services").await);
    let services = app.json("/api/v1/services").await;
    let busy_t = traffic(&services, "busy");
    assert_eq!(busy_t["max_connections"], 2);
    assert_eq!(busy_t["active"], 2);
    assert_eq!(busy_t["accepted"], 3);
    // The connection refused over the limit never made the peak.
    assert_eq!(busy_t["peak_active"], 2, "{busy_t}");
    assert_eq!(busy_t["rejected"]["no_endpoints"], 0);
    let flaky_t = traffic(&services, "flaky");
    assert!(flaky_t["connect_errors"].as_u64() >= Some(1), "{flaky_t}");
    assert!(flaky_t["failovers"].is_u64(), "{flaky_t}");
    assert!(flaky_t["bytes_rx"].as_u64() >= Some(4), "{flaky_t}");

    let endpoints = app.json("/api/v1/endpoints").await;
    let resetting = endpoint(&endpoints, "127.0.57.30");
    // Counted per endpoint once the data plane records close causes per
    // endpoint (the port's count above is already live).
    assert!(resetting["resets"].is_u64(), "{resetting}");
    assert_eq!(resetting["service_port"], 8081);
    assert_eq!(resetting["port_name"], "");
    assert!(resetting["peak_active"].as_u64() >= Some(1), "{resetting}");
    let refusing = endpoint(&endpoints, "127.0.57.31");
    assert!(refusing["connect_errors"].as_u64() >= Some(1), "{refusing}");
    assert!(refusing["failovers"].is_u64(), "{refusing}");
    assert_eq!(endpoint(&endpoints, "127.0.57.32")["peak_active"], 2);
    // The configuration views leave the counters out.
    let config = app.json("/api/v1/config").await;
    assert!(!config.to_string().contains("peak_active"), "{config}");

    // The sparklines' history: each service has a ring, and a service that
    // leaves the table leaves it at the next sample.
    let rates = app.json("/api/v1/rates").await;
    assert_eq!(rates["interval_seconds"], 5);
    assert!(rated(&rates, "flaky") && rated(&rates, "busy"), "{rates}");
    drop(held);
    assert!(
        app.rewrite_file(
            &(head("max_connections = 2")
                + &unnamed_service("busy", "127.98.57.32", 9090, &["127.0.57.32"], port))
        )
        .await
    );
    let gone = eventually_async(Duration::from_secs(15), || async {
        !rated(&app.json("/api/v1/rates").await, "flaky")
    })
    .await;
    assert!(gone, "a removed service leaves the rates");
    let points = eventually_async(Duration::from_secs(15), || async {
        let rates = app.json("/api/v1/rates").await;
        rates["items"].as_array().into_iter().flatten().any(|s| {
            s["name"] == "busy" && !s["bytes_per_second"].as_array().is_none_or(Vec::is_empty)
        })
    })
    .await;
    assert!(points, "a sample adds a point");
    drop(echo);
    app.shutdown().await;
}

async fn echo_msg(c: &mut tokio::net::TcpStream) {
    echo(c, b"hello").await;
}

/// The traffic of the first port of service `name`.
fn traffic<'a>(services: &'a Value, name: &str) -> &'a Value {
    services["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == name)
        .map(|s| &s["ports"][0]["traffic"])
        .unwrap_or_else(|| panic!("service {name} in {services}"))
}

fn rated(rates: &Value, name: &str) -> bool {
    rates["items"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|s| s["name"] == name)
}
