//! Per-object status: each service's `status.conditions` in
//! `/api/v1/services` (`LoadBalancerAssigned`, `FrontendsBound`,
//! `EndpointsAvailable`) and the events about it in `/api/v1/events`.
//! Addresses: 127.0.173.0/24 (node, pool, backends), 127.98.173.0/24
//! (cluster IPs).

use serde_json::Value;

use crate::support::app::TestApp;
use crate::support::*;

/// The file's head: node at 127.0.173.1, cluster IPs from 127.98.173.0/24,
/// the admin API on a free port of the node address.
fn head() -> String {
    "[node]\nname = \"node-1\"\naddresses = [\"127.0.173.1\"]\n\
     [cluster]\nservice_cidr = \"127.98.173.0/24\"\nnode_port_range = \"1024-65535\"\n\
     [admin]\nlisten = \"127.0.173.1:0\"\n"
        .to_string()
}

/// A service named `name` with `extra` lines, one TCP port 8080 and, when
/// `backend` is given, one endpoint there.
fn service(
    name: &str,
    cluster_ip: &str,
    extra: &str,
    backend: Option<std::net::SocketAddr>,
) -> String {
    let mut text = format!(
        "[[services]]\nname = \"{name}\"\ncluster_ip = \"{cluster_ip}\"\n{extra}\nports = [{{ port = 8080 }}]\n"
    );
    if let Some(b) = backend {
        text += &format!(
            "[[endpoints]]\nname = \"{name}\"\n[[endpoints.subsets]]\naddresses = [{{ ip = \"{}\" }}]\nports = [{{ port = {} }}]\n",
            b.ip(),
            b.port()
        );
    }
    text
}

/// The condition `kind` of service `name` in a `/api/v1/services` body.
fn condition<'a>(services: &'a Value, name: &str, kind: &str) -> &'a Value {
    let service = services["items"]
        .as_array()
        .and_then(|items| items.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no service {name}: {services}"));
    service["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == kind))
        .unwrap_or_else(|| panic!("{name} has no {kind}: {service}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_load_balancer_and_a_service_without_endpoints_say_so_in_their_conditions() {
    let backend = http_backend("127.0.173.20", "pong");
    let lb = "type = \"LoadBalancer\"\nallocate_load_balancer_node_ports = false";
    let text = format!(
        "{}[[ip_pools]]\nname = \"one\"\naddresses = [\"127.0.173.110-127.0.173.110\"]\n{}{}{}",
        head(),
        service("first", "127.98.173.10", lb, Some(backend.addr)),
        service("second", "127.98.173.11", lb, Some(backend.addr)),
        service("empty", "127.98.173.12", "", None),
    );
    let app = TestApp::from_text(&text).await;
    let services = app.json("/api/v1/services").await;

    // One address, two services: one holds it, the other is pending with
    // MetalLB's event as the reason and message.
    let (first, second) = (
        condition(&services, "first", "LoadBalancerAssigned"),
        condition(&services, "second", "LoadBalancerAssigned"),
    );
    let (assigned, pending) = if first["status"] == "True" {
        (first, second)
    } else {
        (second, first)
    };
    assert_eq!(assigned["status"], "True", "{services}");
    assert_eq!(assigned["reason"], "IPAllocated");
    assert_eq!(assigned["message"], "Assigned IP [\"127.0.173.110\"]");
    assert_eq!(pending["status"], "False", "{services}");
    assert_eq!(pending["reason"], "AllocationFailed");
    let message = pending["message"].as_str().expect("a message");
    assert!(
        message.starts_with("Failed to allocate IP for \"default/"),
        "{message}"
    );
    assert!(pending["lastTransitionTime"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));

    // The same failure is a Warning event on the Service; a reload raises
    // its count instead of adding an entry.
    assert!(app.reload(true).await);
    let events = app.json("/api/v1/events").await;
    let failed: Vec<&Value> = events["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|e| e["reason"] == "AllocationFailed")
        .collect();
    assert_eq!(failed.len(), 1, "{events}");
    assert_eq!(failed[0]["type"], "Warning");
    assert_eq!(failed[0]["object"]["kind"], "Service");
    assert_eq!(failed[0]["object"]["namespace"], "default");
    assert_eq!(failed[0]["message"], message);
    assert_eq!(failed[0]["count"], 2, "{events}");

    // Endpoints: the LoadBalancers have one ready endpoint, `empty` none;
    // a ClusterIP service has no LoadBalancerAssigned.
    let available = condition(&services, "first", "EndpointsAvailable");
    assert_eq!(available["status"], "True", "{services}");
    let none = condition(&services, "empty", "EndpointsAvailable");
    assert_eq!(none["status"], "False", "{services}");
    assert_eq!(none["reason"], "NoEndpoints");
    let empty = services["items"]
        .as_array()
        .and_then(|i| i.iter().find(|s| s["name"] == "empty"))
        .expect("empty");
    assert!(
        !empty["status"]["conditions"]
            .as_array()
            .expect("conditions")
            .iter()
            .any(|c| c["type"] == "LoadBalancerAssigned"),
        "{empty}"
    );
    assert_eq!(
        condition(&services, "empty", "FrontendsBound")["status"],
        "True"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frontend_that_cannot_bind_makes_frontends_bound_false_until_it_binds() {
    let backend = http_backend("127.0.173.21", "pong");
    // Something else holds the external IP's port: the data plane reports
    // the bind error and retries.
    let port = free_port("127.0.173.30");
    let blocker = std::net::TcpListener::bind(("127.0.173.30", port)).expect("bind the blocker");
    let extra = "external_ips = [\"127.0.173.30\"]";
    let text = format!(
        "{}[[services]]\nname = \"blocked\"\ncluster_ip = \"127.98.173.20\"\n{extra}\n\
         ports = [{{ port = {port} }}]\n\
         [[endpoints]]\nname = \"blocked\"\n[[endpoints.subsets]]\naddresses = [{{ ip = \"127.0.173.21\" }}]\n\
         ports = [{{ port = {} }}]\n",
        head(),
        backend.addr.port()
    );
    let app = TestApp::from_text(&text).await;
    let bound = condition(
        &app.json("/api/v1/services").await,
        "blocked",
        "FrontendsBound",
    )
    .clone();
    assert_eq!(bound["status"], "False", "{bound}");
    assert_eq!(bound["reason"], "BindFailed");
    let message = bound["message"].as_str().expect("a message");
    assert!(
        message.contains(&format!("127.0.173.30:{port}/TCP")) && message.contains("in use"),
        "{message}"
    );
    // Not ready while a frontend serves no one, naming it and its owner.
    let (status, reason) = app.get("/readyz").await;
    assert_eq!(status, 503, "{reason}");
    assert!(
        reason.contains(&format!(
            "service port default/blocked:{port}/TCP: cannot listen on 127.0.173.30:{port}/TCP"
        )) && reason.contains("in use"),
        "{reason}"
    );
    drop(blocker);
    let rebound = eventually_async(WAIT, || async {
        condition(
            &app.json("/api/v1/services").await,
            "blocked",
            "FrontendsBound",
        )["status"]
            == "True"
    })
    .await;
    assert!(rebound, "FrontendsBound turns True once the port is free");
    assert_eq!(app.get("/readyz").await.0, 200, "ready once bound");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ejected_endpoint_is_a_warning_event_on_its_service() {
    let good = http_backend("127.0.173.40", "good");
    // Nothing listens at the same port on .41: its dials are refused.
    let text = format!(
        "{}[proxy]\noutlier_consecutive_failures = 2\noutlier_base_ejection = \"30s\"\n\
         [[services]]\nname = \"flaky\"\ncluster_ip = \"127.98.173.30\"\nports = [{{ port = 8080 }}]\n\
         [[endpoints]]\nname = \"flaky\"\n[[endpoints.subsets]]\n\
         addresses = [{{ ip = \"127.0.173.40\" }}, {{ ip = \"127.0.173.41\" }}]\nports = [{{ port = {} }}]\n",
        head(),
        good.addr.port()
    );
    let app = TestApp::from_text(&text).await;
    let vip: std::net::SocketAddr = "127.98.173.30:8080".parse().expect("addr");
    let message = format!(
        "Endpoint 8080/TCP 127.0.173.41:{} ejected after consecutive dial failures",
        good.addr.port()
    );
    let mut ejected = None;
    for _ in 0..40 {
        assert_eq!(try_fetch(vip).await.expect("failover"), "good");
        let events = app.json("/api/v1/events").await;
        ejected = events["items"]
            .as_array()
            .and_then(|items| items.iter().find(|e| e["reason"] == "EndpointEjected"))
            .cloned();
        if ejected.is_some() {
            break;
        }
    }
    let ejected = ejected.expect("an EndpointEjected event");
    assert_eq!(ejected["type"], "Warning");
    assert_eq!(ejected["object"]["kind"], "Service");
    assert_eq!(ejected["object"]["name"], "flaky");
    assert_eq!(ejected["message"], message);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conditions_transition_time_is_when_it_changed_not_when_it_was_asked() {
    let backend = http_backend("127.0.173.45", "pong");
    let without = format!("{}{}", head(), service("later", "127.98.173.40", "", None));
    let app = TestApp::from_text(&without).await;
    let changed_at = std::time::SystemTime::now();
    assert!(
        app.rewrite_file(&format!(
            "{}{}",
            head(),
            service("later", "127.98.173.40", "", Some(backend.addr))
        ))
        .await
    );
    // Asked well after the change (RFC 3339 has whole seconds).
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let asked_at = std::time::SystemTime::now();
    let services = app.json("/api/v1/services").await;
    let c = condition(&services, "later", "EndpointsAvailable");
    assert_eq!(c["status"], "True", "{services}");
    let stamped = c["lastTransitionTime"]
        .as_str()
        .and_then(lb_proxy::ops::views::parse_rfc3339)
        .unwrap_or_else(|| panic!("a time: {c}"));
    let second = std::time::Duration::from_secs(1);
    assert!(
        stamped + second >= changed_at && stamped + second < asked_at,
        "stamped {c} for a change at {changed_at:?}, asked at {asked_at:?}"
    );
    app.shutdown().await;
}
