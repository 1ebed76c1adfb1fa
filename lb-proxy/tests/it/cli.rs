//! The `lb-proxy` binary as an operator meets it: `check`, `run` with reloads
//! and signals, the environment's overrides of `[proxy]`, `get`. Each test
//! uses fresh 127.x addresses (an admin listener, cluster IPs), so tests can
//! run in parallel; every wait is on an event (a counter, a log line, an
//! answer), bounded.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::support::bin::{check, combined, lb, unlocated, Run, Running};
use crate::support::config::{base_toml, service_toml};
use crate::support::*;

/// The series a reload is counted in, by result.
const RELOADS_OK: &str = "lb_config_reloads_total{result=\"success\"}";
const RELOADS_FAILED: &str = "lb_config_reloads_total{result=\"failure\"}";

/// An admin address of the test's own.
fn fresh_admin() -> SocketAddr {
    let ip = fresh_ip();
    SocketAddr::new(ip, free_port(ip))
}

/// `lb-proxy run` on [`base_toml`] with `services`, once its admin API
/// answers.
fn run(admin: SocketAddr, services: &str) -> Result<Running> {
    Run::text(&(base_toml(admin) + services))
        .admin(admin)
        .start()
}

/// A blocking connection to `addr` whose reads give up after [`WAIT`].
fn connect(addr: SocketAddr) -> Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, WAIT)?;
    s.set_read_timeout(Some(WAIT))?;
    Ok(s)
}

/// Writes `msg` on `s` and expects it echoed back.
fn echo_blocking(s: &mut TcpStream, msg: &[u8]) -> Result<()> {
    s.write_all(msg)?;
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back)?;
    assert_eq!(back, msg);
    Ok(())
}

/// Waits until `proxy` counts `series` at `at_least` or more.
fn counted(proxy: &Running, series: &str, at_least: f64) -> bool {
    eventually_blocking(WAIT, || proxy.metric(series).unwrap_or(0.0) >= at_least)
}

// === check ===

#[test]
fn check_refuses_a_zero_byte_file_and_accepts_one_that_says_it_is_empty() {
    let out = check("");
    assert_eq!(out.status.code(), Some(1), "{}", combined(&out));
    assert!(combined(&out).contains("empty file"), "{}", combined(&out));
    let out = check("# no services on this node\n");
    assert_eq!(out.status.code(), Some(0), "{}", combined(&out));
}

#[test]
fn a_file_truncated_then_written_never_empties_the_table() -> Result<()> {
    let admin = fresh_admin();
    let backend = echo_backend("127.0.0.1");
    let text = base_toml(admin) + &service_toml("web", fresh_ip(), 80, &[backend.addr], "");
    let p = Run::text(&text).admin(admin).start()?;
    // A shell redirect (`>`) in slow motion, 10 times: the file stays empty
    // until lb-proxy has read it, then is written whole.
    for round in 1..=10 {
        std::fs::write(p.config(), "")?;
        assert!(
            eventually_blocking(WAIT, || p.metric(RELOADS_FAILED) == Some(f64::from(round))),
            "the empty file was not read: {}",
            p.logs()
        );
        assert!(p.service("web").is_some(), "web vanished: {}", p.logs());
        let applied = p.metric(RELOADS_OK).unwrap_or(0.0);
        std::fs::write(p.config(), &text)?;
        assert!(
            eventually_blocking(WAIT, || p.metric(RELOADS_OK) > Some(applied)),
            "{}",
            p.logs()
        );
    }
    assert!(p.logs().contains("empty file"), "{}", p.logs());
    assert!(p.service("web").is_some(), "{}", p.logs());
    Ok(())
}

#[test]
fn check_reports_a_node_port_out_of_range_in_kubernetes_words() {
    let out = check(
        r#"
[[services]]
name = "nginx-service"
type = "NodePort"
[[services.ports]]
port = 80
node_port = 80
"#,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(combined(&out).contains(
        "services[nginx-service].ports[0].node_port: Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-32767"
    ), "{}", combined(&out));
}

#[test]
fn check_names_the_namespace_when_it_is_not_default_and_reports_every_error() {
    let out = check(
        r#"
[[services]]
name = "web"
namespace = "shop"
[[services.ports]]
port = 80
node_port = 30001
[[services.ports]]
name = "b"
port = 81
target_port = "Bad_Port"
"#,
    );
    assert_eq!(out.status.code(), Some(1));
    let text = combined(&out);
    for line in [
        "services[shop/web].ports[0].name: Required value",
        "services[shop/web].ports[0].node_port: Forbidden: may not be used when `type` is 'ClusterIP'",
        "services[shop/web].ports[1].target_port: Invalid value: \"Bad_Port\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
    ] {
        assert!(
            unlocated(&text).iter().any(|l| l == line),
            "missing {line:?} in:\n{text}"
        );
    }
    // Each error starts with where it is in the file.
    assert!(
        text.lines().any(|l| l.ends_with(
            "lb.toml:11:15: services[shop/web].ports[1].target_port: Invalid value: \"Bad_Port\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)"
        )),
        "{text}"
    );
}

#[test]
fn run_exits_1_on_an_invalid_file_and_prints_the_same_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.toml");
    std::fs::write(
        &path,
        "[[services]]\nname = \"Bad_Name\"\n[[services.ports]]\nport = 80\n",
    )
    .unwrap();
    let out = lb([std::ffi::OsString::from("--config"), path.into()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        combined(&out).contains("services[Bad_Name].name: Invalid value: \"Bad_Name\""),
        "{}",
        combined(&out)
    );
}

// === run, reload, signals ===

#[test]
fn serves_a_cluster_ip_service_from_the_file() -> Result<()> {
    let backend = echo_backend("127.0.0.1");
    let vip = fresh_ip();
    let _proxy = run(
        fresh_admin(),
        &service_toml("echo", vip, 8080, &[backend.addr], ""),
    )?;
    let mut s = connect(SocketAddr::new(vip, 8080))?;
    echo_blocking(&mut s, b"hello")
}

/// Serves `web` from backend A, changes the file to backend B with `how`,
/// and waits for B to answer.
fn reload_test(how: impl FnOnce(&Running, &str)) -> Result<()> {
    let a = http_backend("127.0.0.1", "A");
    let b = http_backend("127.0.0.1", "B");
    let admin = fresh_admin();
    let vip = fresh_ip();
    let front = SocketAddr::new(vip, 8080);
    let proxy = run(admin, &service_toml("web", vip, 8080, &[a.addr], ""))?;
    assert_eq!(ask(front)?, "A");
    how(
        &proxy,
        &(base_toml(admin) + &service_toml("web", vip, 8080, &[b.addr], "")),
    );
    assert!(
        eventually_blocking(Duration::from_secs(5), || ask(front)
            .map(|s| s == "B")
            .unwrap_or(false)),
        "the reload did not take effect"
    );
    Ok(())
}

#[test]
fn reloads_when_the_file_is_written_in_place() -> Result<()> {
    reload_test(|p, text| std::fs::write(p.config(), text).unwrap())
}

#[test]
fn reloads_when_the_file_is_replaced_by_a_rename() -> Result<()> {
    reload_test(|p, text| {
        let tmp = p.config().with_file_name(".lb.toml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, p.config()).unwrap();
    })
}

#[test]
fn reloads_on_sighup() -> Result<()> {
    // The file is changed through a hard link in another directory, which the
    // watcher does not see, so only SIGHUP can make the proxy notice.
    let other = tempfile::tempdir()?;
    let link = other.path().join("lb.toml");
    reload_test(|p, text| {
        std::fs::hard_link(p.config(), &link).unwrap();
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&link)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
        drop(f);
        p.signal("HUP");
    })
}

#[test]
fn reloads_on_a_configmap_style_symlink_swap() -> Result<()> {
    let admin = fresh_admin();
    let vip = fresh_ip();
    let a = http_backend("127.0.0.1", "A");
    let b = http_backend("127.0.0.1", "B");
    let front = SocketAddr::new(vip, 8080);
    let file =
        |backend: &Backend| base_toml(admin) + &service_toml("web", vip, 8080, &[backend.addr], "");
    // Kubernetes mounts a ConfigMap as lb.toml -> ..data/lb.toml, ..data -> ..2024_1
    let dir = tempfile::tempdir()?;
    let root = dir.path();
    let v1 = root.join("..v1");
    std::fs::create_dir(&v1)?;
    std::fs::write(v1.join("lb.toml"), file(&a))?;
    std::os::unix::fs::symlink("..v1", root.join("..data"))?;
    std::os::unix::fs::symlink("..data/lb.toml", root.join("lb.toml"))?;
    let _proxy = Run::file(&root.join("lb.toml")).admin(admin).start()?;
    assert_eq!(ask(front)?, "A");
    let v2 = root.join("..v2");
    std::fs::create_dir(&v2)?;
    std::fs::write(v2.join("lb.toml"), file(&b))?;
    std::os::unix::fs::symlink("..v2", root.join("..data_tmp"))?;
    std::fs::rename(root.join("..data_tmp"), root.join("..data"))?;
    assert!(eventually_blocking(Duration::from_secs(5), || ask(front)
        .map(|s| s == "B")
        .unwrap_or(false)));
    Ok(())
}

#[test]
fn an_invalid_reload_keeps_the_old_config_serving() -> Result<()> {
    let admin = fresh_admin();
    let a = http_backend("127.0.0.1", "A");
    let vip = fresh_ip();
    let front = SocketAddr::new(vip, 8080);
    let proxy = run(admin, &service_toml("web", vip, 8080, &[a.addr], ""))?;
    std::fs::write(proxy.config(), "[[services]]\nname = \"Broken_Name\"\n")?;
    proxy.signal("HUP");
    // The watcher may see the write too: one failure at least.
    assert!(
        counted(&proxy, RELOADS_FAILED, 1.0),
        "the reload failed: {}",
        proxy.logs()
    );
    assert_eq!(ask(front)?, "A");
    assert_eq!(http_get(admin, "/healthz")?.0, 200);
    assert_eq!(http_get(admin, "/readyz")?.0, 200);
    Ok(())
}

#[test]
fn an_open_connection_survives_reloads() -> Result<()> {
    let admin = fresh_admin();
    let backend = echo_backend("127.0.0.1");
    let other = http_backend("127.0.0.1", "other");
    let (vip, other_vip) = (fresh_ip(), fresh_ip());
    let echo = || service_toml("echo", vip, 8080, &[backend.addr], "");
    let proxy = run(admin, &echo())?;
    let mut s = connect(SocketAddr::new(vip, 8080))?;
    for round in 0..3 {
        // Add and remove another service around the open connection.
        let extra = if round % 2 == 0 {
            service_toml("other", other_vip, 8080, &[other.addr], "")
        } else {
            String::new()
        };
        let reloads = proxy.metric(RELOADS_OK).unwrap_or(0.0);
        std::fs::write(proxy.config(), base_toml(admin) + &echo() + &extra)?;
        proxy.signal("HUP");
        assert!(
            counted(&proxy, RELOADS_OK, reloads + 1.0),
            "round {round} was not applied: {}",
            proxy.logs()
        );
        echo_blocking(&mut s, b"ping")?;
    }
    Ok(())
}

#[test]
fn sigterm_drains_open_connections_and_refuses_new_ones() -> Result<()> {
    let admin = fresh_admin();
    let backend = echo_backend("127.0.0.1");
    let vip = fresh_ip();
    let front = SocketAddr::new(vip, 8080);
    let mut proxy = run(admin, &service_toml("echo", vip, 8080, &[backend.addr], ""))?;
    let mut s = connect(front)?;
    proxy.signal("TERM");
    let start = Instant::now();
    assert!(
        eventually_blocking(Duration::from_millis(200), || TcpStream::connect(front)
            .is_err()),
        "new connections still accepted {:?} after SIGTERM",
        start.elapsed()
    );
    assert_eq!(http_get(admin, "/healthz")?.0, 200);
    echo_blocking(&mut s, b"still")?;
    assert_eq!(
        proxy.wait_exit(Duration::from_millis(300)),
        None,
        "exited while a connection was open"
    );
    drop(s);
    assert_eq!(proxy.wait_exit(Duration::from_secs(3)), Some(0));
    Ok(())
}

#[test]
fn a_second_sigterm_exits_at_once_with_an_error() -> Result<()> {
    let backend = echo_backend("127.0.0.1");
    let vip = fresh_ip();
    let mut proxy = run(
        fresh_admin(),
        &service_toml("echo", vip, 8080, &[backend.addr], ""),
    )?;
    // An open connection keeps the drain going.
    let mut s = connect(SocketAddr::new(vip, 8080))?;
    echo_blocking(&mut s, b"open")?;
    proxy.signal("TERM");
    assert!(
        proxy.logged("draining", WAIT),
        "the first SIGTERM starts the drain: {}",
        proxy.logs()
    );
    proxy.signal("TERM");
    let code = proxy.wait_exit(Duration::from_secs(1));
    assert!(matches!(code, Some(c) if c != 0), "exit code {code:?}");
    Ok(())
}

#[test]
fn drain_timeout_bounds_the_wait_and_what_is_left_is_reset() -> Result<()> {
    let backend = echo_backend("127.0.0.1");
    let admin = fresh_admin();
    let vip = fresh_ip();
    let text = base_toml(admin).replace("drain_timeout = \"2s\"", "drain_timeout = \"500ms\"")
        + &service_toml("echo", vip, 8080, &[backend.addr], "");
    let mut proxy = Run::text(&text).admin(admin).start()?;
    // An open connection, never closed: only the drain timeout ends it.
    let mut s = connect(SocketAddr::new(vip, 8080))?;
    echo_blocking(&mut s, b"open")?;
    let start = Instant::now();
    proxy.signal("TERM");
    assert_eq!(proxy.wait_exit(Duration::from_secs(3)), Some(0));
    assert!(
        start.elapsed() >= Duration::from_millis(400),
        "exited before the drain timeout"
    );
    // The connection the deadline cut is reset, not ended with a FIN: the
    // client cannot take it for a complete stream.
    s.set_read_timeout(Some(WAIT))?;
    let end = s.read(&mut [0u8; 16]);
    assert_eq!(
        end.expect_err("a reset, not a FIN").kind(),
        std::io::ErrorKind::ConnectionReset
    );
    Ok(())
}

// === the environment over [proxy] ===

#[test]
fn lb_variables_override_the_proxy_section_of_the_file() -> Result<()> {
    let admin = fresh_admin();
    let text = base_toml(admin).replace(
        "[proxy]\n",
        "[proxy]\nforward_engine = \"auto\"\naccept_mode = \"single\"\n",
    );
    let _proxy = Run::text(&text)
        .env("LB_FORWARD_ENGINE", "copy")
        .env("LB_ACCEPT", "reuseport")
        .env("LB_WORKERS", "3")
        .admin(admin)
        .start()?;
    let (status, body) = http_get(admin, "/api/v1/config")?;
    assert_eq!(status, 200, "{body}");
    let config: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(config["proxy"]["forward_engine"], "copy", "{body}");
    assert_eq!(config["proxy"]["accept_mode"], "reuseport", "{body}");
    assert_eq!(config["proxy"]["workers"], "3", "{body}");
    Ok(())
}

#[test]
fn an_unknown_lb_variable_value_exits_2_naming_the_valid_ones() -> Result<()> {
    let mut proxy = Run::text(&base_toml(fresh_admin()))
        .env("LB_ACCEPT", "bogus")
        .spawn()?;
    assert_eq!(proxy.wait_exit(WAIT), Some(2), "{}", proxy.logs());
    let logs = proxy.logs();
    assert!(
        logs.contains("LB_ACCEPT") && logs.contains("\"bogus\""),
        "{logs}"
    );
    assert!(logs.contains("single, reuseport, percore"), "{logs}");
    Ok(())
}

// === get ===

#[test]
fn get_prints_kubectl_style_tables_and_the_api_json() -> Result<()> {
    let admin = fresh_admin();
    let backend = echo_backend("127.0.0.1");
    let vip = fresh_ip();
    let _proxy = run(admin, &service_toml("echo", vip, 8080, &[backend.addr], ""))?;
    let get = |args: &[&str]| {
        lb(["get"]
            .iter()
            .chain(args)
            .chain(&["--admin", &admin.to_string()]))
    };
    let out = get(&["services"]);
    assert_eq!(out.status.code(), Some(0), "{}", combined(&out));
    let table = String::from_utf8(out.stdout)?;
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE"
        ]
    );
    assert!(
        table.contains("echo") && table.contains(&vip.to_string()) && table.contains("8080/TCP"),
        "{table}"
    );

    let out = get(&["endpoints"]);
    let table = String::from_utf8(out.stdout)?;
    assert!(table.contains(&backend.addr.to_string()), "{table}");

    let out = get(&["services", "-o", "json"]);
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let (_, body) = http_get(admin, "/api/v1/services")?;
    let api: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(printed["kind"], "List");
    assert_eq!(printed["items"][0]["kind"], "Service");
    assert_eq!(printed["items"][0]["name"], api["items"][0]["name"]);
    assert_eq!(
        printed["items"][0]["cluster_ip"],
        api["items"][0]["cluster_ip"]
    );
    Ok(())
}

// === every validation rule, through `lb-proxy check` ===

/// Each case: a file, and the exact line `check` must print for it.
const RULES: &[(&str, &str, &str)] = &[
    (
        "service names are DNS-1035 labels",
        "[[services]]\nname = \"Nginx_svc\"\n[[services.ports]]\nport = 80\n",
        "services[Nginx_svc].name: Invalid value: \"Nginx_svc\": a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')",
    ),
    (
        "port names are required when there are several ports",
        "[[services]]\nname = \"web\"\n[[services.ports]]\nname = \"a\"\nport = 80\n[[services.ports]]\nport = 81\n",
        "services[web].ports[1].name: Required value",
    ),
    (
        "a (protocol, port) pair is used once",
        "[[services]]\nname = \"web\"\n[[services.ports]]\nname = \"a\"\nport = 80\n[[services.ports]]\nname = \"b\"\nport = 80\n",
        "services[web].ports[1]: Duplicate value: \"80/TCP\"",
    ),
    (
        "a (protocol, node_port) pair is used once",
        "[[services]]\nname = \"web\"\ntype = \"NodePort\"\n[[services.ports]]\nname = \"a\"\nport = 80\nnode_port = 30001\n[[services.ports]]\nname = \"b\"\nport = 81\nnode_port = 30001\n",
        "services[web].ports[1].node_port: Duplicate value: 30001",
    ),
    (
        "a numeric target_port is a valid port number",
        "[[services]]\nname = \"web\"\n[[services.ports]]\nport = 80\ntarget_port = 0\n",
        "services[web].ports[0].target_port: Invalid value: 0: must be between 1 and 65535, inclusive",
    ),
    (
        "a named target_port is an IANA_SVC_NAME",
        "[[services]]\nname = \"web\"\n[[services.ports]]\nport = 80\ntarget_port = \"http-port-too-long-name\"\n",
        "services[web].ports[0].target_port: Invalid value: \"http-port-too-long-name\": must be no more than 15 characters",
    ),
    (
        "node_port only on NodePort and LoadBalancer",
        "[[services]]\nname = \"web\"\n[[services.ports]]\nport = 80\nnode_port = 30001\n",
        "services[web].ports[0].node_port: Forbidden: may not be used when `type` is 'ClusterIP'",
    ),
    (
        "node ports come from the node port range",
        "[[services]]\nname = \"nginx-service\"\ntype = \"NodePort\"\n[[services.ports]]\nport = 80\nnode_port = 80\n",
        "services[nginx-service].ports[0].node_port: Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-32767",
    ),
    (
        "a node port is allocated once",
        "[[services]]\nname = \"a\"\ntype = \"NodePort\"\n[[services.ports]]\nport = 80\nnode_port = 30001\n[[services]]\nname = \"b\"\ntype = \"NodePort\"\n[[services.ports]]\nport = 80\nnode_port = 30001\n",
        "services[b].ports[0].node_port: Invalid value: 30001: provided port is already allocated",
    ),
    (
        "cluster IPs come from service_cidr",
        "[[services]]\nname = \"web\"\ncluster_ip = \"127.0.0.1\"\n[[services.ports]]\nport = 80\n",
        "services[web].cluster_ip: Invalid value: []string{\"127.0.0.1\"}: failed to allocate IP 127.0.0.1: the provided IP (127.0.0.1) is not in the valid range. The range of valid IPs is 10.96.0.0/12",
    ),
    (
        "a cluster IP is allocated once",
        "[cluster]\nservice_cidr = \"127.96.0.0/16\"\n[[services]]\nname = \"a\"\ncluster_ip = \"127.96.0.10\"\n[[services.ports]]\nport = 80\n[[services]]\nname = \"b\"\ncluster_ip = \"127.96.0.10\"\n[[services.ports]]\nport = 80\n",
        "services[b].cluster_ip: Invalid value: []string{\"127.96.0.10\"}: failed to allocate IP 127.96.0.10: provided IP is already allocated",
    ),
    (
        "the ClientIP timeout is 1..86400 seconds",
        "[[services]]\nname = \"web\"\nsession_affinity = \"ClientIP\"\nsession_affinity_config = { client_ip = { timeout_seconds = 86401 } }\n[[services.ports]]\nport = 80\n",
        "services[web].session_affinity_config.client_ip.timeout_seconds: Invalid value: 86401: must be greater than 0 and less than 86400",
    ),
    (
        "session_affinity is None or ClientIP",
        "[[services]]\nname = \"web\"\nsession_affinity = \"Sticky\"\n[[services.ports]]\nport = 80\n",
        "services[web].session_affinity: Unsupported value: \"Sticky\": supported values: \"ClientIP\", \"None\"",
    ),
    (
        "a port number is 1..65535",
        "[[services]]\nname = \"web\"\n[[services.ports]]\nport = 70000\n",
        "services[web].ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive",
    ),
    (
        "a name is used once per namespace and kind",
        "[[services]]\nname = \"web\"\n[[services.ports]]\nport = 80\n[[services]]\nname = \"web\"\n[[services.ports]]\nport = 81\n",
        "services[web].name: Duplicate value: \"web\"",
    ),
    (
        "durations are humantime strings",
        "[proxy]\ndrain_timeout = \"soon\"\n",
        "proxy.drain_timeout: Invalid value: \"soon\": must be a duration such as \"250ms\", \"30s\" or \"1h\" (expected number at 0)",
    ),
];

#[test]
fn check_prints_each_validation_rule_in_kubernetes_words_and_exits_1() {
    let mut failures = Vec::new();
    for (rule, file, line) in RULES {
        let out = check(file);
        let text = combined(&out);
        if out.status.code() != Some(1) || !unlocated(&text).iter().any(|l| l.starts_with(line)) {
            failures.push(format!(
                "{rule}: want {line:?}, exit 1; got exit {:?}:\n{text}",
                out.status.code()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn check_rejects_unknown_keys() {
    let out = check("[[services]]\nname = \"web\"\nbogus = 1\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        combined(&out).contains("services[web].bogus: unknown field `bogus`"),
        "{}",
        combined(&out)
    );
}

// === endpoints and allocation, end to end ===

#[test]
fn a_selectorless_service_whose_port_names_do_not_match_has_no_endpoints() -> Result<()> {
    let backend = echo_backend("127.0.0.1");
    let (good, bad) = (fresh_ip(), fresh_ip());
    let matching = service_toml("good", good, 8080, &[backend.addr], "");
    let mismatched = service_toml("bad", bad, 8080, &[backend.addr], "").replace(
        &format!(
            "ports = [{{ name = \"tcp\", port = {} }}]",
            backend.addr.port()
        ),
        &format!(
            "ports = [{{ name = \"other\", port = {} }}]",
            backend.addr.port()
        ),
    );
    let _proxy = run(fresh_admin(), &(matching + &mismatched))?;
    let mut s = connect(SocketAddr::new(good, 8080))?;
    echo_blocking(&mut s, b"ok")?;
    let err = TcpStream::connect((bad, 8080)).expect_err("no endpoints: refused");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    Ok(())
}

#[test]
fn allocated_cluster_ips_and_node_ports_serve_and_survive_a_restart_with_a_state_file() -> Result<()>
{
    let admin = fresh_admin();
    let node = fresh_ip();
    let backend = echo_backend("127.0.0.1");
    let node_port_service = |name: &str| {
        format!(
            r#"
[[services]]
name = "{name}"
type = "NodePort"
[[services.ports]]
name = "tcp"
port = 8080
target_port = {port}

[[endpoints]]
name = "{name}"
[[endpoints.subsets]]
addresses = [{{ ip = "127.0.0.1" }}]
ports = [{{ name = "tcp", port = {port} }}]
"#,
            port = backend.addr.port()
        )
    };
    let text = base_toml(admin)
        .replace("127.77.0.0/16", "127.98.13.0/24")
        .replace(
            "addresses = [\"127.0.0.1\"]",
            &format!("addresses = [\"{node}\"]"),
        )
        + &node_port_service("web");
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("allocations.json");
    let config = dir.path().join("lb.toml");
    std::fs::write(&config, &text)?;
    let start = || {
        Run::file(&config)
            .arg("--state-file")
            .arg(&state)
            .admin(admin)
            .start()
    };

    let mut first = start()?;
    let svc = first.service("web").context("web is listed")?;
    let ip = svc["cluster_ip"]
        .as_str()
        .context("cluster_ip")?
        .to_string();
    let node_port = svc["ports"][0]["node_port"].as_u64().context("node_port")?;
    assert!(ip.starts_with("127.98.13."), "{ip}");
    assert!((30000..=32767).contains(&node_port), "{node_port}");
    for addr in [format!("{ip}:8080"), format!("{node}:{node_port}")] {
        let mut s = connect(sa(&addr)).with_context(|| addr.clone())?;
        echo_blocking(&mut s, b"hi")?;
    }
    first.kill();

    // A new service that sorts first must not take web's addresses after a restart.
    std::fs::write(&config, text.clone() + &node_port_service("aaa"))?;
    let second = start()?;
    let again = second.service("web").context("web is listed")?;
    assert_eq!(again["cluster_ip"].as_str(), Some(ip.as_str()));
    assert_eq!(again["ports"][0]["node_port"].as_u64(), Some(node_port));
    let aaa = second.service("aaa").context("aaa is listed")?;
    assert_ne!(aaa["cluster_ip"].as_str(), Some(ip.as_str()));
    Ok(())
}

#[test]
fn a_state_file_that_cannot_be_written_makes_readyz_503_counts_and_warns_until_it_can() -> Result<()>
{
    let admin = fresh_admin();
    let backend = echo_backend("127.0.0.1");
    let service = |name: &str| service_toml(name, fresh_ip(), 80, &[backend.addr], "");
    let text = base_toml(admin) + &service("web");
    let dir = tempfile::tempdir()?;
    let state_dir = dir.path().join("state");
    let state = state_dir.join("allocations.json");
    let p = Run::text(&text)
        .arg("--state-file")
        .arg(&state)
        .admin(admin)
        .start()?;
    assert_eq!(p.readyz().0, 200, "{}", p.logs());
    const ERRORS: &str = "lb_state_file_errors_total";
    assert_eq!(p.metric(ERRORS), Some(0.0));

    // The directory turns into a file: no save can succeed (even as root).
    std::fs::remove_dir_all(&state_dir)?;
    std::fs::write(&state_dir, "")?;
    std::fs::write(p.config(), text.clone() + &service("api"))?;
    assert!(
        eventually_blocking(WAIT, || p.metric(ERRORS) == Some(1.0)),
        "{}",
        p.logs()
    );
    let (code, body) = p.readyz();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("allocations.json"), "{body}");
    let (_, events) = http_get(admin, "/api/v1/events")?;
    assert!(
        events.contains("\"Warning\"")
            && events.contains("StateFileError")
            && events.contains("allocations are not durable"),
        "{events}"
    );
    // The new service serves all the same: durability, not service, is lost.
    assert!(p.wait_service("api").is_some(), "{}", p.logs());

    // Writable again: the next reload saves, and /readyz is 200.
    std::fs::remove_file(&state_dir)?;
    std::fs::create_dir(&state_dir)?;
    p.signal("HUP");
    assert!(
        eventually_blocking(WAIT, || p.readyz().0 == 200),
        "{}",
        p.logs()
    );
    assert!(state.exists());
    assert_eq!(p.metric(ERRORS), Some(1.0));
    Ok(())
}

#[test]
fn a_reload_with_thousands_of_errors_logs_and_keeps_a_bounded_report() -> Result<()> {
    let admin = fresh_admin();
    let p = run(admin, "")?;
    // 2,000 services, each with an invalid port: 2,000 errors.
    let bad: String = (0..2000)
        .map(|i| format!("[[services]]\nname = \"s{i}\"\n[[services.ports]]\nport = 0\n"))
        .collect();
    std::fs::write(p.config(), base_toml(admin) + &bad)?;
    for n in 1..=3 {
        if n > 1 {
            p.signal("HUP");
        }
        assert!(
            eventually_blocking(WAIT, || p.metric(RELOADS_FAILED) == Some(f64::from(n))),
            "{}",
            p.logs()
        );
    }
    // The counter moves before the report's lines are written: wait for them.
    assert!(
        eventually_blocking(WAIT, || p.logs().matches("... and 1900 more").count() == 3),
        "{}",
        p.logs()
    );
    let logs = p.logs();
    assert!(
        logs.lines().count() < 3 * 110,
        "{} log lines",
        logs.lines().count()
    );

    let (status, head, body) = http_get_with(admin, "/api/v1/events", &[])?;
    assert_eq!(status, 200);
    let events: serde_json::Value = serde_json::from_str(&body)?;
    let message = events["items"][0]["message"]
        .as_str()
        .context("a message")?;
    assert!(message.lines().count() <= 102, "{message}");
    // The same failure three times is one event counted three times.
    assert_eq!(events["items"][0]["reason"], "ReloadFailed");
    assert_eq!(events["items"][0]["count"], 3, "{body}");
    // Polling again while nothing happened costs a 304 and no body.
    let tag = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("etag: ")
                .or_else(|| l.strip_prefix("ETag: "))
        })
        .context("an ETag")?;
    let (status, _, body) = http_get_with(admin, "/api/v1/events", &[("If-None-Match", tag)])?;
    assert_eq!(status, 304);
    assert!(body.is_empty(), "{body}");
    Ok(())
}

#[test]
fn raises_the_soft_open_file_limit_to_the_hard_limit() -> Result<()> {
    let admin = fresh_admin();
    // sh lowers the soft limit, then becomes lb-proxy ("$0" "$@").
    let proxy = Run::text(&base_toml(admin))
        .under(&["sh", "-c", "ulimit -Sn 512 && exec \"$0\" \"$@\""])
        .admin(admin)
        .start()?;
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", proxy.pid()))?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .context("no open files line")?;
    let fields: Vec<&str> = line.split_whitespace().collect();
    // "Max open files <soft> <hard> files"
    assert_eq!(fields[3], fields[4], "{line}");
    assert_ne!(fields[3], "512", "{line}");
    Ok(())
}

// === who owns a frontend ===

#[test]
fn the_config_view_and_the_log_name_the_process_and_node_owning_each_frontend() -> Result<()> {
    let admin = fresh_admin();
    let backend = http_backend("127.0.0.1", "A");
    let vip = fresh_ip();
    let proxy = run(
        admin,
        &service_toml("owned", vip, 8080, &[backend.addr], ""),
    )?;
    let pid = proxy.pid();
    let (status, body) = http_get(admin, "/api/v1/config")?;
    assert_eq!(status, 200, "{body}");
    let config: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(config["process"]["pid"], pid, "{body}");
    assert_eq!(config["process"]["node"], "node-1", "{body}");
    let frontend = config["frontends"]
        .as_array()
        .and_then(|f| {
            f.iter()
                .find(|f| f["address"] == format!("{vip}:8080").as_str())
        })
        .cloned()
        .context("the cluster IP's frontend")?;
    assert_eq!(frontend["protocol"], "TCP");
    assert_eq!(frontend["service"], "default/owned:tcp/TCP");
    assert_eq!(frontend["kind"], "cluster IP");
    assert_eq!(
        frontend["owner"],
        format!("node node-1, pid {pid}").as_str()
    );
    let (status, body) = http_get(admin, "/api/v1/process")?;
    assert_eq!(status, 200, "{body}");
    let process: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(process["pid"], pid, "{body}");
    assert_eq!(process["node"], "node-1", "{body}");
    assert!(
        process["version"]
            .as_str()
            .is_some_and(|v| v.starts_with(env!("CARGO_PKG_VERSION")))
            && process["started"]
                .as_str()
                .is_some_and(|s| s.ends_with('Z')),
        "{body}"
    );
    assert!(
        proxy.logged(&format!("pid={pid}"), WAIT)
            && proxy.logs().contains("service=default/owned:tcp/TCP"),
        "{}",
        proxy.logs()
    );
    Ok(())
}
