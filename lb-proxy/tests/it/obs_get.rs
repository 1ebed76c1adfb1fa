//! `lb-proxy get connections` and friends: golden tables, the binary against
//! a running proxy (table, wide, json, watch), and a man-page-style `--help`
//! for every subcommand.

use lb_proxy::ops::views::{connections_table, TableOptions};
use lb_proxy::ops::views::{ConnectionList, ConnectionView};

use crate::support::app::TestApp;
use crate::support::bin::lb;
use crate::support::config::service_toml;
use crate::support::*;

/// `-A`: a NAMESPACE column first.
const ALL_NAMESPACES: TableOptions = TableOptions {
    namespace_column: true,
    kind_prefix: None,
    headers: true,
};

fn view(id: u64, ns: &str, client: &str, reason: &str, age: u64) -> ConnectionView {
    ConnectionView {
        id,
        client: client.into(),
        frontend: "127.96.0.10:80".into(),
        namespace: ns.into(),
        service: "web".into(),
        port: "http".into(),
        protocol: "TCP".into(),
        endpoint: "127.0.244.1:8080".into(),
        pick_reason: reason.into(),
        started: "2024-05-01T12:00:00Z".into(),
        age_seconds: age,
        bytes_rx: 1234,
        bytes_tx: 56789,
    }
}

#[test]
fn connections_table_is_golden() {
    let list = ConnectionList {
        items: vec![
            view(1, "default", "127.0.0.5:40001", "round_robin", 5),
            view(2, "prod", "127.0.0.6:40002", "affinity", 330),
            view(3, "default", "127.0.0.7:40003", "failover", 4000),
        ],
        continue_token: String::new(),
        total: 3,
    };
    assert_eq!(
        connections_table(&list, false).render(&ALL_NAMESPACES),
        "\
NAMESPACE   NAME   CLIENT            ENDPOINT           REASON        RX     TX      AGE
default     web    127.0.0.5:40001   127.0.244.1:8080   round_robin   1234   56789   5s
prod        web    127.0.0.6:40002   127.0.244.1:8080   affinity      1234   56789   5m30s
default     web    127.0.0.7:40003   127.0.244.1:8080   failover      1234   56789   66m
"
    );
    assert_eq!(
        connections_table(&list, true)
            .render(&ALL_NAMESPACES)
            .lines()
            .next(),
        Some(
            "NAMESPACE   NAME   CLIENT            ENDPOINT           REASON        RX     TX      AGE     FRONTEND         PORT       STARTED"
        )
    );
    assert_eq!(
        connections_table(&ConnectionList::default(), false).render(&Default::default()),
        "NAME   CLIENT   ENDPOINT   REASON   RX    TX    AGE\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_connections_prints_the_open_connection_with_its_pick_reason() {
    let a_backend = echo_backend(fresh_ip());
    let a = a_backend.addr;
    let vip = fresh_ip();
    let port = free_port(vip);
    let proxy = TestApp::start(&service_toml("shop", vip, port, &[a], "")).await;
    let mut c = tokio::net::TcpStream::connect((vip, port))
        .await
        .expect("connect");
    echo(&mut c, b"hello").await;
    let client = c.local_addr().expect("client address").to_string();

    let admin = proxy.admin().to_string();
    let run = move |args: &[&str]| lb(args.iter().copied().chain(["--admin", admin.as_str()]));
    let (table, wide, json, watched) = tokio::task::spawn_blocking(move || {
        (
            run(&["get", "connections"]),
            run(&["get", "conn", "-o", "wide"]),
            run(&["get", "connections", "-o", "json"]),
            run(&["get", "svc", "-w", "--watch-limit", "1"]),
        )
    })
    .await
    .expect("join");
    for out in [&table, &wide, &json, &watched] {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let table = String::from_utf8_lossy(&table.stdout).to_string();
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "CLIENT", "ENDPOINT", "REASON", "RX", "TX", "AGE"]
    );
    let row: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    assert_eq!(
        row[..6],
        [
            "shop",
            client.as_str(),
            &a.to_string(),
            "round_robin",
            "5",
            "5"
        ]
    );
    assert!(row[6].ends_with('s'), "AGE in seconds: {table}");

    let wide = String::from_utf8_lossy(&wide.stdout).to_string();
    assert!(
        wide.contains(&format!("{vip}:{port}")),
        "FRONTEND column: {wide}"
    );
    assert!(wide.contains("tcp/TCP"), "{wide}");

    let body: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");
    assert_eq!(body["items"][0]["pick_reason"], "round_robin");
    assert_eq!(body["items"][0]["client"], client);

    let watched = String::from_utf8_lossy(&watched.stdout).to_string();
    assert!(watched.starts_with("NAME"), "{watched}");
    assert!(watched.contains("shop"), "{watched}");
    drop(c);
    proxy.app.shutdown().await;
}

#[test]
fn every_subcommand_has_a_man_page_style_help() {
    for sub in [
        &["--help"][..],
        &["run", "--help"],
        &["check", "--help"],
        &["get", "--help"],
        &["put", "--help"],
        &["delete", "--help"],
    ] {
        let out = lb(sub);
        assert!(out.status.success(), "{sub:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("EXAMPLES:"), "{sub:?} has examples:\n{text}");
        assert!(
            text.lines().count() > 12,
            "{sub:?} is more than a usage line:\n{text}"
        );
    }
}
