//! A fleet on one machine: three lb-proxy processes (node-1..3 on
//! 127.0.40.1..3) fed from one etcd, pods on node-1 and node-2 only. Every
//! node serves every NodePort; `external_traffic_policy = "Local"` keeps
//! traffic on the receiving node's pods; the health-check node port says
//! which nodes have local pods; and allocations agree on all three nodes,
//! even when they start at the same moment with nothing allocated yet.

use std::collections::BTreeSet;

use crate::support::bin::{Run, Running};
use crate::support::etcd::*;
use crate::support::*;

const NODES: [(&str, &str); 3] = [
    ("node-1", "127.0.40.1"),
    ("node-2", "127.0.40.2"),
    ("node-3", "127.0.40.3"),
];

/// What each node says about `name`: cluster IP, node port, health-check
/// node port, once all three know it.
fn allocations(proxies: &[Running], name: &str) -> Vec<(String, u64, u64)> {
    proxies
        .iter()
        .map(|p| {
            let s = p
                .wait_service(name)
                .unwrap_or_else(|| panic!("{name} never showed on {}: {}", p.admin(), p.logs()));
            (
                s["cluster_ip"].as_str().unwrap_or_default().to_string(),
                s["ports"][0]["node_port"].as_u64().unwrap_or(0),
                s["health_check_node_port"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

#[test]
fn three_nodes_started_together_agree_and_serve_every_node_port() {
    let etcd = Etcd::start("127.0.36.1").unwrap();
    let c = etcd.client();
    let _pods = [
        http_backend("127.0.37.1:8080", "pod-a"),
        http_backend("127.0.37.2:8080", "pod-b"),
    ];
    for (pod, ip, node) in [
        ("pod-a", "127.0.37.1", "node-1"),
        ("pod-b", "127.0.37.2", "node-2"),
    ] {
        c.put(
            &format!("/lbtest/pods/default/{pod}"),
            format!(
                r#"{{"name":"{pod}","ip":"{ip}","node":"{node}","labels":{{"app":"web"}},"ports":[{{"name":"http","container_port":8080}}]}}"#
            )
            .as_bytes(),
        )
        .unwrap();
    }
    // In etcd before any node starts, with nothing allocated.
    c.put(
        "/lbtest/services/default/web",
        br#"{"name":"web","type":"NodePort","selector":{"app":"web"},"ports":[{"port":80,"target_port":"http"}]}"#,
    )
    .unwrap();
    c.put(
        "/lbtest/services/default/local",
        br#"{"name":"local","type":"LoadBalancer","external_traffic_policy":"Local","selector":{"app":"web"},"ports":[{"port":80,"target_port":"http"}]}"#,
    )
    .unwrap();
    assert!(c.get("/lbtest/allocations").unwrap().is_none());

    // All three at the same moment.
    let dir = tempfile::tempdir().unwrap();
    let mut proxies: Vec<Running> = NODES
        .iter()
        .map(|(name, ip)| {
            let admin = free_port(*ip);
            let config = dir.path().join(format!("{name}.toml"));
            std::fs::write(&config, node_config(name, ip, admin, &etcd.url(), "")).unwrap();
            Run::file(&config)
                .admin(sa(&format!("{ip}:{admin}")))
                .spawn()
                .unwrap()
        })
        .collect();
    for p in &mut proxies {
        p.wait_up().unwrap();
    }

    // One set of allocations for the fleet.
    let web = allocations(&proxies, "web");
    assert!(web.iter().all(|a| a == &web[0]), "{web:?}");
    assert!(web[0].1 >= 30000, "{web:?}");
    let local = allocations(&proxies, "local");
    assert!(local.iter().all(|a| a == &local[0]), "{local:?}");
    assert!(local[0].2 >= 30000, "a health-check node port: {local:?}");
    assert_ne!(web[0].0, local[0].0);

    // Every node serves every NodePort, with pods of any node behind it.
    let web_port = web[0].1;
    for (_, ip) in NODES {
        let seen = answers(sa(&format!("{ip}:{web_port}")), 6);
        assert_eq!(
            seen,
            BTreeSet::from(["pod-a".to_string(), "pod-b".to_string()]),
            "{ip}"
        );
    }

    // Local keeps traffic on the receiving node; a node without local pods
    // takes none (and its health check says so).
    let (_, local_port, hc_port) = local[0].clone();
    assert_eq!(
        answers(sa(&format!("127.0.40.1:{local_port}")), 6),
        BTreeSet::from(["pod-a".to_string()])
    );
    assert_eq!(
        answers(sa(&format!("127.0.40.2:{local_port}")), 6),
        BTreeSet::from(["pod-b".to_string()])
    );
    assert!(ask(sa(&format!("127.0.40.3:{local_port}"))).is_err());
    for (ip, status, local_endpoints) in [
        ("127.0.40.1", 200, 1),
        ("127.0.40.2", 200, 1),
        ("127.0.40.3", 503, 0),
    ] {
        let (got, body) = http_get(sa(&format!("{ip}:{hc_port}")), "/healthz").unwrap();
        assert_eq!(got, status, "{ip}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["localEndpoints"], local_endpoints, "{ip}: {body}");
        assert_eq!(v["service"]["name"], "local");
    }

    // A service added while all three run: they race for it and agree.
    c.put(
        "/lbtest/services/default/late",
        br#"{"name":"late","type":"NodePort","selector":{"app":"web"},"ports":[{"port":81,"target_port":"http"}]}"#,
    )
    .unwrap();
    let late = allocations(&proxies, "late");
    assert!(late.iter().all(|a| a == &late[0]), "{late:?}");
    assert!(
        ![web[0].1, local[0].1, local[0].2].contains(&late[0].1),
        "late {late:?} web {web:?} local {local:?}"
    );
    assert_eq!(allocations(&proxies, "local"), local, "nothing else moves");
    for (_, ip) in NODES {
        assert!(ask(sa(&format!("{ip}:{}", late[0].1))).is_ok(), "{ip}");
    }
}
