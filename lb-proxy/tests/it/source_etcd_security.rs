//! `[source.etcd]` against an etcd that protects itself: TLS with client
//! certificates (made by the test with rcgen) and user/password
//! authentication (enabled by the test through the gateway). The right
//! credentials serve; wrong ones leave the source stale (`/readyz` 503),
//! never a crash; a key that does not fit its certificate is refused by
//! `check`.

use std::time::Duration;

use crate::support::bin::{combined, lb, Run, Running};
use crate::support::etcd::*;
use crate::support::*;

const POD: &[u8] = br#"{"name":"web-1","ip":"127.0.35.1","node":"node-1","labels":{"app":"web"},"ports":[{"name":"http","container_port":8080}]}"#;
const SERVICE: &[u8] = br#"{"name":"web","type":"NodePort","selector":{"app":"web"},"ports":[{"port":80,"target_port":"http"}]}"#;
const LATE: &[u8] = br#"{"name":"late","type":"NodePort","selector":{"app":"web"},"ports":[{"port":81,"target_port":"http"}]}"#;

/// Writes a node's config and spawns it (not waiting, so nodes that wait
/// for an etcd they cannot read start side by side).
fn spawn_node(dir: &std::path::Path, name: &str, ip: &str, etcd_url: &str, extra: &str) -> Running {
    let admin = free_port(ip);
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(&config, node_config(name, ip, admin, etcd_url, extra)).unwrap();
    Run::file(&config)
        .admin(sa(&format!("{ip}:{admin}")))
        .spawn()
        .unwrap()
}

fn node_port(p: &Running, service: &str) -> u64 {
    p.node_port(service, 0)
        .unwrap_or_else(|| panic!("{service} has no node port: {}", p.logs()))
}

fn assert_stale(p: &Running) {
    let mut last = (0, String::new());
    assert!(
        eventually_blocking(Duration::from_secs(10), || {
            last = p.readyz();
            last.0 == 503 && last.1.contains("etcd")
        }),
        "readyz {last:?}; {}",
        p.logs()
    );
    assert_eq!(p.service("web"), None, "nothing read from etcd");
}

#[test]
fn serves_from_an_etcd_over_tls_that_checks_client_certificates() {
    let certs = TestCerts::generate("127.0.34.1").unwrap();
    let etcd = Etcd::start_with("127.0.34.1", Some(certs)).unwrap();
    let certs = etcd.tls.as_ref().unwrap();
    assert!(etcd.url().starts_with("https://"));
    let _pod = http_backend("127.0.35.1:8080", "over-tls");
    let c = etcd.client();
    c.put("/lbtest/pods/default/web-1", POD).unwrap();
    c.put("/lbtest/services/default/web", SERVICE).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut trusted = spawn_node(
        dir.path(),
        "node-1",
        "127.0.33.5",
        &etcd.url(),
        &certs.etcd_lines(),
    );
    // A client certificate from a CA etcd does not trust.
    let stranger = format!(
        "ca_file = {:?}\ncert_file = {:?}\nkey_file = {:?}\n",
        certs.ca, certs.stranger_cert, certs.stranger_key
    );
    let mut refused = spawn_node(dir.path(), "node-2", "127.0.33.6", &etcd.url(), &stranger);
    // No ca_file: etcd's certificate is not signed by a public root.
    let no_ca = format!(
        "cert_file = {:?}\nkey_file = {:?}\n",
        certs.client_cert, certs.client_key
    );
    let mut untrusting = spawn_node(dir.path(), "node-3", "127.0.33.7", &etcd.url(), &no_ca);
    for p in [&mut trusted, &mut refused, &mut untrusting] {
        p.wait_up().unwrap();
    }

    let port = node_port(&trusted, "web");
    assert_eq!(ask(sa(&format!("127.0.33.5:{port}"))).unwrap(), "over-tls");
    assert_eq!(trusted.readyz().0, 200, "{}", trusted.logs());
    // The watch stream runs over TLS too.
    c.put("/lbtest/services/default/late", LATE).unwrap();
    let late = node_port(&trusted, "late");
    assert_eq!(ask(sa(&format!("127.0.33.5:{late}"))).unwrap(), "over-tls");

    assert_stale(&refused);
    assert_stale(&untrusting);
}

#[test]
fn check_refuses_a_client_key_that_does_not_fit_its_certificate() {
    let certs = TestCerts::generate("127.0.34.3").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("lb.toml");
    let lines = format!(
        "ca_file = {:?}\ncert_file = {:?}\nkey_file = {:?}\n",
        certs.ca, certs.client_cert, certs.stranger_key
    );
    std::fs::write(
        &config,
        node_config("node-1", "127.0.33.8", 0, "https://127.0.34.3:2379", &lines),
    )
    .unwrap();
    let out = lb([
        std::ffi::OsString::from("check"),
        "--config".into(),
        config.into(),
    ]);
    let text = combined(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!(
            "source.etcd.key_file: Invalid value: \"{}\": does not fit {}",
            certs.stranger_key.display(),
            certs.client_cert.display()
        )),
        "{text}"
    );
}

#[test]
fn logs_in_to_an_etcd_with_authentication_and_refuses_a_wrong_password() {
    let mut etcd = Etcd::start("127.0.34.2").unwrap();
    etcd.enable_auth("lb", "lb-secret", "/lbtest/").unwrap();
    // Without credentials etcd now refuses reads.
    let anonymous = EtcdClient::new(lb_config::source::etcd::ClientOptions {
        endpoints: vec![etcd.url()],
        ..Default::default()
    });
    assert!(anonymous.list("/lbtest/").is_err());
    let _pod = http_backend("127.0.35.2:8080", "logged-in");
    let c = etcd.client();
    c.put(
        "/lbtest/pods/default/web-1",
        &String::from_utf8_lossy(POD)
            .replace("127.0.35.1", "127.0.35.2")
            .into_bytes(),
    )
    .unwrap();
    c.put("/lbtest/services/default/web", SERVICE).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let good = "username = \"lb\"\npassword = \"lb-secret\"\n";
    let mut user = spawn_node(dir.path(), "node-1", "127.0.33.9", &etcd.url(), good);
    let mut wrong = spawn_node(
        dir.path(),
        "node-2",
        "127.0.33.10",
        &etcd.url(),
        "username = \"lb\"\npassword = \"guess\"\n",
    );
    user.wait_up().unwrap();
    wrong.wait_up().unwrap();

    let port = node_port(&user, "web");
    assert_eq!(ask(sa(&format!("127.0.33.9:{port}"))).unwrap(), "logged-in");
    assert_eq!(user.readyz().0, 200, "{}", user.logs());
    // The node wrote the shared allocations as user lb.
    assert!(c.get("/lbtest/allocations").unwrap().is_some());

    // `put` logs in with the same settings; the watch sees the write.
    let objects = dir.path().join("late.toml");
    std::fs::write(
        &objects,
        "[[services]]\nname = \"late\"\ntype = \"NodePort\"\nselector = { app = \"web\" }\nports = [{ port = 81, target_port = \"http\" }]\n",
    )
    .unwrap();
    let out = lb([
        std::ffi::OsString::from("put"),
        "-f".into(),
        objects.into(),
        "--config".into(),
        dir.path().join("node-1.toml").into(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let late = node_port(&user, "late");
    assert_eq!(ask(sa(&format!("127.0.33.9:{late}"))).unwrap(), "logged-in");

    assert_stale(&wrong);
    assert!(
        wrong.logs().contains("authentication failed"),
        "{}",
        wrong.logs()
    );
}
