//! Exec readiness probes through the binary: who may write them (the file,
//! always; the manifests, only with `[source.manifests] allow_exec_probes =
//! true`), and that a probe leaves no process behind, whether it times out,
//! exits, its pod goes at a reload or lb-proxy stops.
//!
//! A probe's processes are found by a marker in their arguments (`sleep
//! 30.NNNNNNNK`: this test process's pid and the test's number), so tests
//! running at once, or an earlier run's leftovers, are never counted. Pods
//! live at 127.0.249.0/24 (no traffic goes there: the probes are exec).

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::Path;

use crate::support::bin::{combined, lb, Run, Running};
use crate::support::config::base_toml;
use crate::support::process::{children_of, processes_with};
use crate::support::*;

/// An argument of `sleep` that only test `n` of this run uses.
fn marker(n: u32) -> String {
    format!("30.{:07}{n}", std::process::id())
}

fn fresh_admin() -> SocketAddr {
    let ip = fresh_ip();
    SocketAddr::new(ip, free_port(ip))
}

/// A `[[pods]]` table at 127.0.249.`host` whose exec probe runs `script`
/// with `sh -c`, every 2 s, with `timeout_seconds`.
fn probed_pod(host: u8, script: &str, timeout_seconds: u32) -> String {
    format!(
        r#"
[[pods]]
name = "probed-{host}"
ip = "127.0.249.{host}"
labels = {{ app = "probed" }}
[pods.readiness_probe]
exec = {{ command = ["sh", "-c", "{script}"] }}
period_seconds = 2
timeout_seconds = {timeout_seconds}
"#
    )
}

/// `lb-proxy run` on a file with `pods`, once its admin API answers.
fn run(admin: SocketAddr, pods: &str) -> Running {
    Run::text(&(base_toml(admin) + pods))
        .admin(admin)
        .start()
        .unwrap_or_else(|e| panic!("{e:#}"))
}

/// Waits until the probe's processes run (the shell and its sleep, at
/// least two).
fn wait_running(marker: &str, proxy: &Running) {
    assert!(
        eventually_blocking(WAIT, || processes_with(marker).len() >= 2),
        "the probe never ran: {}",
        proxy.logs()
    );
}

/// Waits until no process carries `marker` and lb-proxy has no child left
/// (nothing killed is left unreaped).
fn nothing_left(marker: &str, proxy: &Running) -> bool {
    eventually_blocking(WAIT, || {
        processes_with(marker).is_empty() && children_of(proxy.pid()).is_empty()
    })
}

#[test]
fn a_timed_out_exec_probe_leaves_no_process_behind() {
    let m = marker(1);
    let admin = fresh_admin();
    // The shell forks a sleep, then sleeps itself: both outlive the timeout.
    let proxy = run(admin, &probed_pod(1, &format!("sleep {m} & sleep {m}"), 1));
    wait_running(&m, &proxy);
    assert!(
        nothing_left(&m, &proxy),
        "left after the timeout: {:?}",
        processes_with(&m)
    );
    // And again after the next probe's timeout: nothing piles up.
    wait_running(&m, &proxy);
    assert!(
        nothing_left(&m, &proxy),
        "left after the second timeout: {:?}",
        processes_with(&m)
    );
}

#[test]
fn an_exec_probe_that_exits_leaves_nothing_running_in_the_background() {
    let m = marker(2);
    let admin = fresh_admin();
    let dir = tempfile::tempdir().unwrap();
    let ran = dir.path().join("ran");
    let script = format!("sleep {m} & touch {}; exit 0", ran.display());
    let proxy = run(admin, &probed_pod(2, &script, 5));
    assert!(
        eventually_blocking(WAIT, || ran.exists()),
        "the probe never ran: {}",
        proxy.logs()
    );
    assert!(
        nothing_left(&m, &proxy),
        "the background sleep outlived its probe: {:?}",
        processes_with(&m)
    );
}

#[test]
fn a_running_exec_probe_is_killed_when_its_pod_goes_at_a_reload() {
    let m = marker(3);
    let admin = fresh_admin();
    let proxy = run(admin, &probed_pod(3, &format!("sleep {m} & sleep {m}"), 60));
    wait_running(&m, &proxy);
    std::fs::write(proxy.config(), base_toml(admin)).unwrap();
    proxy.signal("HUP");
    assert!(
        nothing_left(&m, &proxy),
        "left after the pod went: {:?}\n{}",
        processes_with(&m),
        proxy.logs()
    );
}

#[test]
fn running_exec_probes_are_killed_when_lb_proxy_stops() {
    let m = marker(4);
    let admin = fresh_admin();
    let mut proxy = run(admin, &probed_pod(4, &format!("sleep {m} & sleep {m}"), 60));
    wait_running(&m, &proxy);
    proxy.signal("TERM");
    assert_eq!(proxy.wait_exit(WAIT), Some(0), "{}", proxy.logs());
    assert!(
        eventually_blocking(WAIT, || processes_with(&m).is_empty()),
        "left after lb-proxy stopped: {:?}",
        processes_with(&m)
    );
}

/// A manifest of one Pod at 127.0.249.`host` whose exec probe runs
/// `command`.
fn exec_pod_manifest(dir: &Path, host: u8, command: &str) -> std::path::PathBuf {
    let path = dir.join("pods.yaml");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: probed, namespace: shop}}\n\
             spec:\n  containers:\n  - name: app\n    readinessProbe:\n      exec: {{command: [sh, -c, {command:?}]}}\n      periodSeconds: 1\n\
             status: {{podIP: 127.0.249.{host}}}\n"
        ),
    )
    .unwrap();
    path
}

const REFUSED: &str =
    "pods.yaml: document 1 (Pod shop/probed).spec.containers[].readinessProbe.exec: Forbidden: exec readiness probes from manifests are refused";

fn check(config: &Path, manifests: &Path) -> std::process::Output {
    lb([
        OsString::from("check"),
        "--config".into(),
        config.into(),
        "--manifests".into(),
        manifests.into(),
    ])
}

#[test]
fn check_and_run_refuse_an_exec_probe_from_the_manifests_naming_its_file_and_pod() {
    let dir = tempfile::tempdir().unwrap();
    let manifests = exec_pod_manifest(dir.path(), 10, "true");
    let admin = fresh_admin();
    let config = dir.path().join("lb.toml");
    std::fs::write(&config, base_toml(admin)).unwrap();

    let out = check(&config, &manifests);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(REFUSED), "{stderr}");
    assert!(
        stderr.contains("set [source.manifests] allow_exec_probes = true to accept them"),
        "{stderr}"
    );

    let mut proxy = Run::file(&config)
        .arg("--manifests")
        .arg(&manifests)
        .admin(admin)
        .spawn()
        .unwrap();
    let code = proxy.wait_exit(WAIT);
    assert!(matches!(code, Some(c) if c != 0), "exit {code:?}");
    assert!(proxy.logs().contains(REFUSED), "{}", proxy.logs());
}

#[test]
fn allow_exec_probes_lets_the_manifests_exec_probes_run() {
    let dir = tempfile::tempdir().unwrap();
    let ran = dir.path().join("ran");
    let manifests = exec_pod_manifest(dir.path(), 11, &format!("touch {}", ran.display()));
    let admin = fresh_admin();
    let config = dir.path().join("lb.toml");
    std::fs::write(
        &config,
        base_toml(admin) + "\n[source.manifests]\nallow_exec_probes = true\n",
    )
    .unwrap();

    let out = check(&config, &manifests);
    assert!(out.status.success(), "{}", combined(&out));

    let proxy = Run::file(&config)
        .arg("--manifests")
        .arg(&manifests)
        .admin(admin)
        .start()
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        eventually_blocking(WAIT, || ran.exists()),
        "the manifest's exec probe never ran: {}",
        proxy.logs()
    );
}
