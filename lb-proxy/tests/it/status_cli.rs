//! `lb-proxy describe service` (through `--admin` and through `--config`,
//! laid out as `kubectl describe service`) and `lb-proxy get events`.
//! Addresses: 127.0.175.0/24 (node, pool, backends), 127.98.175.0/24
//! (cluster IPs).

use std::net::SocketAddr;

use crate::support::app::TestApp;
use crate::support::bin::{combined, lb};
use crate::support::*;

/// Node at 127.0.175.1, one pool address, two LoadBalancer services (one
/// pending) with an endpoint each, named port `http` with a node port.
fn config(backend: SocketAddr) -> String {
    let service = |name: &str, ip: &str, node_port: u16| {
        format!(
            "[[services]]\nname = \"{name}\"\ntype = \"LoadBalancer\"\n\
             labels = {{ app = \"web\", tier = \"front\" }}\ncluster_ip = \"{ip}\"\n\
             ports = [{{ name = \"http\", port = 8080, target_port = {port}, node_port = {node_port} }}]\n\
             [[endpoints]]\nname = \"{name}\"\n[[endpoints.subsets]]\naddresses = [{{ ip = \"{addr}\" }}]\n\
             ports = [{{ name = \"http\", port = {port} }}]\n",
            port = backend.port(),
            addr = backend.ip(),
        )
    };
    format!(
        "[node]\nname = \"node-1\"\naddresses = [\"127.0.175.1\"]\n\
         [cluster]\nservice_cidr = \"127.98.175.0/24\"\nnode_port_range = \"1024-65535\"\n\
         [admin]\nlisten = \"127.0.175.1:0\"\n\
         [[ip_pools]]\nname = \"one\"\naddresses = [\"127.0.175.110-127.0.175.110\"]\n{}{}",
        service("first", "127.98.175.10", free_port("127.0.175.1")),
        service("second", "127.98.175.11", free_port("127.0.175.1")),
    )
}

/// `lb-proxy ARGS` on a blocking thread; its stdout (success expected).
async fn run(args: Vec<String>) -> String {
    tokio::task::spawn_blocking(move || {
        let out = lb(&args);
        assert!(out.status.success(), "{args:?}: {}", combined(&out));
        String::from_utf8(out.stdout).expect("UTF-8")
    })
    .await
    .expect("join")
}

/// The line of `text` whose first words are `label` (`"Port:"`), as words.
fn line<'a>(text: &'a str, label: &str) -> Vec<&'a str> {
    let words: Vec<&str> = label.split_whitespace().collect();
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|l| l.starts_with(&words))
        .unwrap_or_else(|| panic!("no {label:?} line in:\n{text}"))
}

/// The name of the LoadBalancer service left pending (the API says which).
async fn pending(app: &TestApp) -> (String, String) {
    let services = app.json("/api/v1/services").await;
    let items = services["items"].as_array().expect("items");
    let (pending, assigned): (Vec<_>, Vec<_>) = items.iter().partition(|s| {
        s["load_balancer_ingress"]
            .as_array()
            .is_some_and(Vec::is_empty)
    });
    let name = |v: &[&serde_json::Value]| v[0]["name"].as_str().expect("name").to_string();
    (name(&pending), name(&assigned))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_service_prints_kubectls_layout_with_conditions_and_events() {
    let backend = echo_backend("127.0.175.20");
    let app = TestApp::from_text(&config(backend.addr)).await;
    let admin = app.admin().to_string();
    let (pending, assigned) = pending(&app).await;

    let text = run(vec![
        "describe".into(),
        "service".into(),
        pending.clone(),
        "--admin".into(),
        admin.clone(),
    ])
    .await;
    assert_eq!(line(&text, "Name:"), ["Name:", pending.as_str()], "{text}");
    assert_eq!(line(&text, "Namespace:"), ["Namespace:", "default"]);
    assert_eq!(line(&text, "Labels:"), ["Labels:", "app=web"]);
    assert_eq!(line(&text, "tier=front"), ["tier=front"]);
    assert_eq!(line(&text, "Annotations:"), ["Annotations:", "<none>"]);
    assert_eq!(line(&text, "Selector:"), ["Selector:", "<none>"]);
    assert_eq!(line(&text, "Type:"), ["Type:", "LoadBalancer"]);
    assert_eq!(line(&text, "IP Families:"), ["IP", "Families:", "IPv4"]);
    assert!(!text.contains("LoadBalancer Ingress:"), "{text}");
    assert_eq!(line(&text, "Port:"), ["Port:", "http", "8080/TCP"]);
    let target = format!("{}/TCP", backend.addr.port());
    assert_eq!(line(&text, "TargetPort:"), ["TargetPort:", target.as_str()]);
    assert_eq!(line(&text, "NodePort:")[1], "http");
    let endpoint = backend.addr.to_string();
    assert_eq!(line(&text, "Endpoints:"), ["Endpoints:", endpoint.as_str()]);
    assert_eq!(
        line(&text, "Session Affinity:"),
        ["Session", "Affinity:", "None"]
    );
    assert_eq!(
        line(&text, "External Traffic Policy:"),
        ["External", "Traffic", "Policy:", "Cluster"]
    );
    assert_eq!(
        line(&text, "LoadBalancerAssigned")[..3],
        ["LoadBalancerAssigned", "False", "AllocationFailed"],
        "{text}"
    );
    assert_eq!(
        line(&text, "FrontendsBound")[..2],
        ["FrontendsBound", "True"]
    );
    assert_eq!(
        line(&text, "EndpointsAvailable")[..2],
        ["EndpointsAvailable", "True"]
    );
    // Events, as kubectl's DescribeEvents: Type Reason Age From Message.
    assert_eq!(
        line(&text, "Type Reason"),
        ["Type", "Reason", "Age", "From", "Message"]
    );
    let event = line(&text, "Warning AllocationFailed");
    assert_eq!(event[3], "lb-proxy", "{text}");
    let message = format!("\"default/{pending}\":");
    assert!(
        event.contains(&"Failed") && event.contains(&message.as_str()),
        "{text}"
    );
    // The layout: labels end in a colon and values start in one column.
    let column = text
        .lines()
        .next()
        .and_then(|l| l.rfind(' '))
        .expect("a value column")
        + 1;
    for l in text.lines().take_while(|l| !l.starts_with("Conditions:")) {
        assert!(l.len() > column, "{l:?} in\n{text}");
        assert!(
            l[..column].ends_with("  ") && !l[column..].starts_with(' '),
            "{l:?} in\n{text}"
        );
    }

    // The service with the address: its ingress, no events about it.
    let text = run(vec![
        "describe".into(),
        "svc".into(),
        format!("default/{assigned}"),
        "--admin".into(),
        admin,
    ])
    .await;
    assert_eq!(
        line(&text, "LoadBalancer Ingress:")[2],
        "127.0.175.110",
        "{text}"
    );
    assert_eq!(
        line(&text, "LoadBalancerAssigned")[..3],
        ["LoadBalancerAssigned", "True", "IPAllocated"]
    );
    assert_eq!(line(&text, "Events:"), ["Events:", "<none>"], "{text}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_service_reads_the_config_alone_without_a_proxy() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("lb.toml");
    std::fs::write(&path, config("127.0.175.21:8080".parse().expect("addr"))).expect("write");
    let describe = |name: &str| {
        lb([
            "describe",
            "service",
            name,
            "--config",
            path.to_str().expect("UTF-8 path"),
        ])
    };
    let (first, second) = (describe("first"), describe("second"));
    assert!(
        first.status.success() && second.status.success(),
        "{}{}",
        combined(&first),
        combined(&second)
    );
    let both = format!(
        "{}{}",
        String::from_utf8_lossy(&first.stdout),
        String::from_utf8_lossy(&second.stdout)
    );
    // One holds the address, the other is pending; no proxy, so no events
    // and the frontends are not known.
    assert_eq!(
        both.matches("LoadBalancerAssigned   True ").count(),
        1,
        "{both}"
    );
    assert_eq!(both.matches("AllocationFailed").count(), 1, "{both}");
    assert_eq!(
        both.matches("FrontendsBound         Unknown").count(),
        2,
        "{both}"
    );
    assert!(!both.contains("Events:"), "{both}");
    // Labels as kubectl prints them: one a line, the first beside the heading.
    assert_eq!(line(&both, "Labels:"), ["Labels:", "app=web"]);
    assert_eq!(line(&both, "tier=front"), ["tier=front"]);
    assert_eq!(
        line(&both, "Endpoints:"),
        ["Endpoints:", "127.0.175.21:8080"]
    );

    let missing = describe("nope");
    assert!(!missing.status.success());
    assert_eq!(
        String::from_utf8_lossy(&missing.stderr).trim(),
        "Error from server (NotFound): services \"nope\" not found"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_events_lists_what_happened_like_kubectl() {
    let backend = echo_backend("127.0.175.22");
    let app = TestApp::from_text(&config(backend.addr)).await;
    let admin = app.admin().to_string();
    let (pending, _) = pending(&app).await;
    assert!(app.reload(true).await);

    let text = run(vec![
        "get".into(),
        "events".into(),
        "--admin".into(),
        admin.clone(),
    ])
    .await;
    assert_eq!(
        line(&text, "LAST SEEN"),
        ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
        "{text}"
    );
    let rows: Vec<Vec<&str>> = text
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    let row = |reason: &str| {
        rows.iter()
            .find(|r| r.get(2) == Some(&reason))
            .unwrap_or_else(|| panic!("no {reason} in:\n{text}"))
    };
    assert_eq!(row("Starting")[1..4], ["Normal", "Starting", "node/node-1"]);
    assert_eq!(row("Reloaded")[3], "node/node-1");
    let failed = row("AllocationFailed");
    assert_eq!(failed[1], "Warning");
    let object = format!("service/{pending}");
    assert_eq!(failed[3], object);
    // Two loads, one row: the repeat raised its count.
    assert_eq!(
        rows.iter()
            .filter(|r| r.get(2) == Some(&"AllocationFailed"))
            .count(),
        1
    );
    let json = run(vec![
        "get".into(),
        "ev".into(),
        "-o".into(),
        "json".into(),
        "--admin".into(),
        admin,
    ])
    .await;
    let v: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    let counted = v["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|e| e["reason"] == "AllocationFailed")
        .expect("the event");
    assert_eq!(counted["count"], 2, "{json}");
    app.shutdown().await;
}
