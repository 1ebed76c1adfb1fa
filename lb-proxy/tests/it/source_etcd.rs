//! The etcd source with a real etcd (started by the test on loopback): two
//! lb-proxy nodes fed from one etcd agree on allocations, apply watch
//! updates and deletes, skip a bad object by key, resolve a conflict by the
//! older mod_revision, report the source stale while etcd is down, while
//! traffic keeps flowing, and refuse `exec` probes from etcd unless allowed.

use std::time::Duration;

use crate::support::bin::{lb, Run};
use crate::support::etcd::*;
use crate::support::*;

#[test]
fn two_nodes_fed_from_one_etcd() {
    let Ok(mut etcd) = Etcd::start("127.0.30.1") else {
        panic!("etcd (Debian package etcd-server) must be installed: .ci/run installs it");
    };
    let c = etcd.client();
    let _pods = [
        http_backend("127.0.31.1:8080", "a"),
        http_backend("127.0.31.2:8080", "b"),
    ];
    c.put(
        "/lbtest/pods/default/web-1",
        br#"{"name":"web-1","ip":"127.0.31.1","node":"node-1","labels":{"app":"web"},"ports":[{"name":"http","container_port":8080}]}"#,
    )
    .unwrap();
    // TOML values work too.
    c.put(
        "/lbtest/pods/default/web-2",
        b"name = \"web-2\"\nip = \"127.0.31.2\"\nnode = \"node-2\"\nlabels = { app = \"web\" }\nports = [{ name = \"http\", container_port = 8080 }]\n",
    )
    .unwrap();
    c.put(
        "/lbtest/services/default/web",
        br#"{"name":"web","type":"NodePort","selector":{"app":"web"},"ports":[{"port":80,"target_port":"http"}]}"#,
    )
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut proxies = Vec::new();
    for (name, ip) in [("node-1", "127.0.32.1"), ("node-2", "127.0.32.2")] {
        let admin = free_port(ip);
        let config = dir.path().join(format!("{name}.toml"));
        std::fs::write(&config, node_config(name, ip, admin, &etcd.url(), "")).unwrap();
        proxies.push(
            Run::file(&config)
                .admin(sa(&format!("{ip}:{admin}")))
                .start()
                .unwrap(),
        );
    }
    // Allocations agree: one cluster IP and node port on both nodes.
    let web: Vec<_> = proxies
        .iter()
        .map(|p| {
            p.wait_service("web")
                .unwrap_or_else(|| panic!("{}", p.logs()))
        })
        .collect();
    assert_eq!(web[0]["cluster_ip"], web[1]["cluster_ip"], "{web:?}");
    assert_eq!(
        web[0]["ports"][0]["node_port"],
        web[1]["ports"][0]["node_port"]
    );
    let node_port = web[0]["ports"][0]["node_port"].as_u64().unwrap();
    for ip in ["127.0.32.1", "127.0.32.2"] {
        let answer = ask(sa(&format!("{ip}:{node_port}"))).unwrap();
        assert!(answer == "a" || answer == "b", "{answer}");
    }
    let (status, _) = http_get(proxies[0].admin(), "/readyz").unwrap();
    assert_eq!(status, 200);

    // A watch update appears on both nodes; a delete closes it again.
    c.put(
        "/lbtest/services/default/late",
        br#"{"name":"late","cluster_ip":"127.97.5.5","selector":{"app":"web"},"ports":[{"port":81,"target_port":8080}]}"#,
    )
    .unwrap();
    assert!(
        eventually_blocking(Duration::from_secs(5), || ask(sa("127.97.5.5:81")).is_ok()),
        "{}",
        proxies[0].logs()
    );
    assert!(eventually_blocking(Duration::from_secs(5), || proxies[1]
        .service("late")
        .is_some()));

    // A bad object is skipped and named by its key; the rest applies.
    c.put(
        "/lbtest/services/default/bad",
        br#"{"name":"bad","ports":[{"port":99999}]}"#,
    )
    .unwrap();
    c.put("/lbtest/services/default/garbled", b"{not json")
        .unwrap();
    // Two keys naming the same object: the older mod_revision wins.
    c.put(
        "/lbtest/services/default/dup-a",
        br#"{"name":"dup","cluster_ip":"127.97.6.1","selector":{"app":"web"},"ports":[{"port":82,"target_port":8080}]}"#,
    )
    .unwrap();
    c.put(
        "/lbtest/services/default/dup-b",
        br#"{"name":"dup","cluster_ip":"127.97.6.2","selector":{"app":"web"},"ports":[{"port":82,"target_port":8080}]}"#,
    )
    .unwrap();
    assert!(
        eventually_blocking(Duration::from_secs(5), || ask(sa("127.97.6.1:82")).is_ok()),
        "{}",
        proxies[0].logs()
    );
    assert!(ask(sa("127.97.6.2:82")).is_err());
    assert!(
        eventually_blocking(Duration::from_secs(5), || {
            let logs = proxies[0].logs();
            logs.contains("/lbtest/services/default/bad")
                && logs.contains("/lbtest/services/default/garbled")
                && logs.contains("/lbtest/services/default/dup-b")
        }),
        "{}",
        proxies[0].logs()
    );
    assert!(ask(sa("127.97.5.5:81")).is_ok(), "the rest still applies");

    c.delete("/lbtest/services/default/late").unwrap();
    assert!(
        eventually_blocking(Duration::from_secs(5), || ask(sa("127.97.5.5:81")).is_err()),
        "{}",
        proxies[0].logs()
    );

    // etcd goes away: /readyz turns 503 naming the source within 10 s, and
    // traffic is still served from the last good state.
    etcd.kill();
    let mut body = String::new();
    assert!(
        eventually_blocking(Duration::from_secs(10), || {
            match http_get(proxies[0].admin(), "/readyz") {
                Ok((503, b)) => {
                    body = b;
                    true
                }
                _ => false,
            }
        }),
        "{}",
        proxies[0].logs()
    );
    assert!(body.contains("etcd"), "{body}");
    let answer = ask(sa(&format!("127.0.32.2:{node_port}"))).unwrap();
    assert!(answer == "a" || answer == "b");
    let (_, metrics) = http_get(proxies[0].admin(), "/metrics").unwrap();
    assert!(
        metrics.contains("lb_source_stale{source=\"etcd\"} 1"),
        "{metrics}"
    );

    // etcd is back: 200 within 10 s, and the watch works again.
    etcd.restart().unwrap();
    for p in &proxies {
        assert!(
            eventually_blocking(Duration::from_secs(10), || matches!(
                http_get(p.admin(), "/readyz"),
                Ok((200, _))
            )),
            "{}",
            p.logs()
        );
    }
    etcd.client()
        .put(
            "/lbtest/services/default/after",
            br#"{"name":"after","cluster_ip":"127.97.7.7","selector":{"app":"web"},"ports":[{"port":83,"target_port":8080}]}"#,
        )
        .unwrap();
    assert!(
        eventually_blocking(Duration::from_secs(5), || ask(sa("127.97.7.7:83")).is_ok()),
        "{}",
        proxies[1].logs()
    );
}

#[test]
fn put_and_delete_write_validated_objects_to_etcd() {
    let etcd = Etcd::start("127.0.30.2").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("lb.toml");
    std::fs::write(
        &config,
        node_config("node-1", "127.0.33.1", 0, &etcd.url(), ""),
    )
    .unwrap();
    let objects = dir.path().join("objects.toml");
    std::fs::write(
        &objects,
        "[[services]]\nname = \"web\"\nnamespace = \"shop\"\nports = [{ port = 80 }]\n[[ip_pools]]\nname = \"pool\"\naddresses = [\"127.0.122.0/28\"]\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        lb(args
            .iter()
            .map(std::ffi::OsString::from)
            .chain(["--config".into(), config.clone().into()]))
    };
    let out = run(&["put", "-f", objects.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let c = etcd.client();
    let kv = c
        .get("/lbtest/services/shop/web")
        .unwrap()
        .expect("written");
    let v: serde_json::Value = serde_json::from_slice(&kv.value).unwrap();
    assert_eq!(v["name"], "web");
    assert!(c.get("/lbtest/ip_pools/pool").unwrap().is_some());
    // Manifests are accepted too.
    let yaml = dir.path().join("svc.yaml");
    std::fs::write(
        &yaml,
        "apiVersion: v1\nkind: Service\nmetadata: {name: api}\nspec: {ports: [{port: 81}]}\n",
    )
    .unwrap();
    let out = run(&["put", "-f", yaml.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(c.get("/lbtest/services/default/api").unwrap().is_some());
    // Invalid objects are refused and nothing is written.
    std::fs::write(
        &objects,
        "[[services]]\nname = \"bad\"\nports = [{ port = 99999 }]\n",
    )
    .unwrap();
    let out = run(&["put", "-f", objects.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("services[bad].ports[0].port"));
    assert!(c.get("/lbtest/services/default/bad").unwrap().is_none());
    // Delete.
    let out = run(&["delete", "services", "shop/web"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(c.get("/lbtest/services/shop/web").unwrap().is_none());
    let out = run(&["delete", "ip_pools", "pool"]);
    assert!(out.status.success());
    let out = run(&["delete", "services", "shop/web"]);
    assert_eq!(out.status.code(), Some(1), "not found");
}

#[test]
fn exec_probes_from_etcd_are_refused_with_their_key_unless_allowed() {
    let etcd = Etcd::start("127.0.30.3").unwrap();
    let c = etcd.client();
    let _pod = http_backend("127.0.31.3:8080", "probed");
    c.put(
        "/lbtest/pods/default/probed",
        br#"{"name":"probed","ip":"127.0.31.3","labels":{"app":"probed"},
             "ports":[{"name":"http","container_port":8080}],
             "readiness_probe":{"exec":{"command":["true"]},"period_seconds":1}}"#,
    )
    .unwrap();
    c.put(
        "/lbtest/services/default/probed",
        br#"{"name":"probed","type":"NodePort","selector":{"app":"probed"},"ports":[{"port":80,"target_port":"http"}]}"#,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let start = |name: &str, ip: &str, extra: &str| {
        let admin = free_port(ip);
        let config = dir.path().join(format!("{name}.toml"));
        std::fs::write(&config, node_config(name, ip, admin, &etcd.url(), extra)).unwrap();
        Run::file(&config)
            .admin(sa(&format!("{ip}:{admin}")))
            .start()
            .unwrap()
    };
    let refusing = start("node-1", "127.0.33.3", "");
    let allowing = start("node-2", "127.0.33.4", "allow_exec_probes = true");

    // Without allow_exec_probes the pod is skipped, named by its key, and
    // the service has no endpoint; the service itself still applies.
    assert!(
        eventually_blocking(Duration::from_secs(5), || {
            let logs = refusing.logs();
            logs.contains("/lbtest/pods/default/probed") && logs.contains("allow_exec_probes")
        }),
        "{}",
        refusing.logs()
    );
    let svc = refusing.service("probed").expect("the service applies");
    let node_port = svc["ports"][0]["node_port"].as_u64().unwrap();
    assert!(refusing.endpoints("probed").is_empty());
    assert!(ask(sa(&format!("127.0.33.3:{node_port}"))).is_err());

    // With it, the probe runs and the pod serves once it passes.
    assert!(
        eventually_blocking(Duration::from_secs(10), || {
            ask(sa(&format!("127.0.33.4:{node_port}"))).is_ok_and(|a| a == "probed")
        }),
        "{}",
        allowing.logs()
    );
    let eps = allowing.endpoints("probed");
    assert_eq!(eps.len(), 1, "{eps:?}");
    assert_eq!(eps[0]["ready"], true);
    assert!(!allowing.logs().contains("allow_exec_probes"));
}
