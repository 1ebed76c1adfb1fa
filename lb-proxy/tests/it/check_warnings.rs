//! `lb-proxy check` warns about what is valid but will not serve: a selector
//! that matches no pod, a target port no selected pod has, a port this
//! process may not bind, an address this host does not have.

use std::ffi::OsString;
use std::process::{Command, Output};

use crate::support::bin::{bin, check, combined};

/// A service that is fine on any host: loopback cluster IP, a high port.
const FINE: &str = r#"
[admin]
listen = "127.0.0.1:0"
[cluster]
service_cidr = "127.0.181.0/24"
[[pods]]
name = "web-1"
ip = "127.0.181.101"
labels = { app = "web" }
ports = [{ name = "http", container_port = 8080 }]
[[services]]
name = "web"
cluster_ip = "127.0.181.10"
selector = { app = "web" }
ports = [{ port = 8080, target_port = "http" }]
"#;

#[test]
fn a_config_that_will_serve_gets_no_warning() {
    let out = check(FINE);
    assert!(out.status.success(), "{}", combined(&out));
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("warning"),
        "{}",
        combined(&out)
    );
}

#[test]
fn a_selector_typo_and_a_missing_port_name_are_warned_about() {
    let text = FINE.replace(
        "selector = { app = \"web\" }",
        "selector = { app = \"wbe\" }",
    ) + r#"
[[services]]
name = "api"
cluster_ip = "127.0.181.11"
selector = { app = "web" }
ports = [{ port = 8080, target_port = "htp" }]
"#;
    let out = check(&text);
    assert!(out.status.success(), "{}", combined(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "warning: services[web].selector: app=wbe matches no pod in namespace \"default\""
        ),
        "{err}"
    );
    assert!(
        err.contains("warning: services[api].ports[0].target_port: no pod selected by app=web has a TCP port named \"htp\""),
        "{err}"
    );
}

#[test]
fn an_address_this_host_lacks_is_warned_about_in_bind_mode_only() {
    // 192.0.2.0/24 is TEST-NET-1: documentation only, never on a host.
    let text = FINE.replace(
        "ports = [{ port = 8080, target_port = \"http\" }]",
        "external_ips = [\"192.0.2.10\"]\nports = [{ port = 8080, target_port = \"http\" }]",
    );
    let out = check(&text);
    assert!(out.status.success(), "{}", combined(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "warning: services[web]: 192.0.2.10 is not an address of this host; with node.vip_mode \"bind\""
        ),
        "{}",
        combined(&out)
    );
    let freebind = format!("[node]\nvip_mode = \"freebind\"\n{text}");
    let out = check(&freebind);
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("not an address of this host"),
        "{}",
        combined(&out)
    );
}

/// `lb-proxy check` of `text` run twice under setpriv: first with
/// `capability` (setpriv's name, e.g. `net_admin`) dropped from the
/// bounding set, then with everything root has. `None` where the test has
/// no way to lack (or hold) a capability on purpose: not root, or no
/// setpriv (util-linux).
fn check_without(capability: &str, text: &str) -> Option<(Output, Output)> {
    let root = std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false);
    let setpriv = Command::new("setpriv").arg("--version").output().is_ok();
    if !root || !setpriv {
        eprintln!("skipped: needs root and setpriv (util-linux) to drop the capability");
        return None;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("lb.toml");
    std::fs::write(&path, text).expect("write config");
    let run = |drop_cap: bool| {
        let mut cmd = Command::new("setpriv");
        if drop_cap {
            cmd.args(["--bounding-set", &format!("-{capability}")]);
        }
        cmd.arg(bin())
            .args([
                OsString::from("check"),
                "--config".into(),
                path.clone().into(),
            ])
            .output()
            .expect("setpriv runs")
    };
    Some((run(true), run(false)))
}

#[test]
fn a_privileged_port_without_the_capability_is_warned_about() {
    // Root drops CAP_NET_BIND_SERVICE from its bounding set with setpriv.
    let text = FINE.replace("port = 8080,", "port = 80,");
    let Some((without, with)) = check_without("net_bind_service", &text) else {
        return;
    };
    let floor: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(1024);
    assert!(without.status.success(), "{}", combined(&without));
    let warned = String::from_utf8_lossy(&without.stderr).contains("warning: port 80 below")
        && String::from_utf8_lossy(&without.stderr).contains("lacks CAP_NET_BIND_SERVICE");
    assert_eq!(warned, floor > 80, "{}", combined(&without));
    assert!(
        !String::from_utf8_lossy(&with.stderr).contains("CAP_NET_BIND_SERVICE"),
        "{}",
        combined(&with)
    );
}

#[test]
fn a_transparent_service_without_cap_net_admin_is_warned_about() {
    // As above: root drops CAP_NET_ADMIN from its bounding set with setpriv.
    let text = FINE.replace(
        "selector = { app = \"web\" }",
        "selector = { app = \"web\" }\nsource_address = \"client\"",
    );
    let Some((without, with)) = check_without("net_admin", &text) else {
        return;
    };
    assert!(without.status.success(), "{}", combined(&without));
    let stderr = String::from_utf8_lossy(&without.stderr);
    assert!(
        stderr.contains("services[default/web] dials endpoints from the client's address")
            && stderr.contains("lacks CAP_NET_ADMIN"),
        "{}",
        combined(&without)
    );
    assert!(
        !String::from_utf8_lossy(&with.stderr).contains("CAP_NET_ADMIN"),
        "{}",
        combined(&with)
    );
}
