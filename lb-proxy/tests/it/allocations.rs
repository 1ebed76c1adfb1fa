//! Allocations as Kubernetes keeps them (issue 17), through the binary: a
//! running service is never renumbered (a newcomer asking for what it holds
//! is refused, from the file, from manifests and from etcd), its cluster IP
//! may not change once set, `check --state-file` refuses what the next
//! reload would, and a removed service frees what it held. Addresses:
//! cluster IPs in 127.98.17.0/24 (file), 127.98.18.0/24 (manifests) and
//! etcd's 127.97.0.0/20; nodes and etcd on 127.0.47.x.

use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::support::bin::{combined, lb, Run, Running};
use crate::support::etcd::*;
use crate::support::*;

const RELOADS_OK: &str = "lb_config_reloads_total{result=\"success\"}";
const RELOADS_FAILED: &str = "lb_config_reloads_total{result=\"failure\"}";

/// `[node]`, `[cluster]` with `cidr`, `[admin]`.
fn head(admin: SocketAddr, node: IpAddr, cidr: &str) -> String {
    format!(
        "[node]\nname = \"node-1\"\naddresses = [\"{node}\"]\n\
         [cluster]\nservice_cidr = \"{cidr}\"\n[admin]\nlisten = \"{admin}\"\n"
    )
}

/// A selector-less NodePort service on port 8080 over the echo backend at
/// 127.0.0.1:`port`, with `extra` lines in its table.
fn node_port_service(name: &str, port: u16, extra: &str) -> String {
    format!(
        "[[services]]\nname = \"{name}\"\ntype = \"NodePort\"\n{extra}\
         ports = [{{ name = \"tcp\", port = 8080, target_port = {port} }}]\n\
         [[endpoints]]\nname = \"{name}\"\n[[endpoints.subsets]]\n\
         addresses = [{{ ip = \"127.0.0.1\" }}]\nports = [{{ name = \"tcp\", port = {port} }}]\n"
    )
}

/// The cluster IP and first node port of `name`, from the admin API.
fn held(p: &Running, name: &str) -> Result<(String, u64)> {
    let svc = p.wait_service(name).context(name.to_string())?;
    let ip = svc["cluster_ip"]
        .as_str()
        .context("cluster_ip")?
        .to_string();
    let port = svc["ports"][0]["node_port"].as_u64().context("node_port")?;
    Ok((ip, port))
}

/// An address of `cidr`'s /24 other than `ip`, in its lower band.
fn another(ip: &str) -> String {
    let (net, last) = ip.rsplit_once('.').unwrap_or((ip, "0"));
    let other = if last == "5" { 6 } else { 5 };
    format!("{net}.{other}")
}

/// `lb-proxy check --config CONFIG [--manifests DIR] --state-file STATE`.
fn check_with_state(config: &Path, manifests: Option<&Path>, state: &Path) -> std::process::Output {
    let mut args: Vec<OsString> = vec!["check".into(), "--config".into(), config.into()];
    if let Some(dir) = manifests {
        args.extend(["--manifests".into(), dir.into()]);
    }
    args.extend(["--state-file".into(), state.into()]);
    lb(args)
}

/// Waits for the `n`th failed reload and for `line` in the logs.
fn refused(p: &Running, n: f64, line: &str) -> bool {
    eventually_blocking(WAIT, || p.metric(RELOADS_FAILED) == Some(n)) && p.logged(line, WAIT)
}

#[test]
fn a_reload_asking_for_what_a_running_service_holds_fails_and_changes_nothing() -> Result<()> {
    let admin = sa(&format!("127.0.47.10:{}", free_port(ip("127.0.47.10"))));
    let node = ip("127.0.47.11");
    let backend = echo_backend("127.0.0.1");
    let port = backend.addr.port();
    let head = head(admin, node, "127.98.17.0/24");
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("lb.toml");
    let state = dir.path().join("state.json");
    std::fs::write(&config, head.clone() + &node_port_service("web", port, ""))?;
    let p = Run::file(&config)
        .arg("--state-file")
        .arg(&state)
        .admin(admin)
        .start()?;
    let (web_ip, web_port) = held(&p, "web")?;
    assert_eq!(ask_echo(sa(&format!("{web_ip}:8080")))?, "hi");

    // A newcomer asks for web's cluster IP and node port.
    let thief = node_port_service("thief", port, &format!("cluster_ip = \"{web_ip}\"\n")).replace(
        "port = 8080, target_port",
        &format!("port = 8080, node_port = {web_port}, target_port"),
    );
    std::fs::write(
        &config,
        head.clone() + &node_port_service("web", port, "") + &thief,
    )?;
    let ip_line = format!("services[thief].cluster_ip: Invalid value: []string{{\"{web_ip}\"}}: failed to allocate IP {web_ip}: provided IP is already allocated");
    let port_line = format!("services[thief].ports[0].node_port: Invalid value: {web_port}: provided port is already allocated");
    assert!(refused(&p, 1.0, &ip_line), "{}", p.logs());
    assert!(p.logs().contains(&port_line), "{}", p.logs());
    assert_eq!(
        held(&p, "web")?,
        (web_ip.clone(), web_port),
        "never renumbered"
    );
    assert!(p.service("thief").is_none());
    assert_eq!(ask_echo(sa(&format!("{web_ip}:8080")))?, "hi");
    // check finds it too, from the state file the proxy keeps.
    let out = check_with_state(&config, None, &state);
    assert_eq!(out.status.code(), Some(1), "{}", combined(&out));
    assert!(combined(&out).contains(&ip_line), "{}", combined(&out));
    assert!(combined(&out).contains(&port_line), "{}", combined(&out));

    // web's own cluster IP may not change once set.
    let other = another(&web_ip);
    std::fs::write(
        &config,
        head.clone() + &node_port_service("web", port, &format!("cluster_ip = \"{other}\"\n")),
    )?;
    let line = format!(
        "services[web].cluster_ip: Invalid value: []string{{\"{other}\"}}: may not change once set"
    );
    assert!(refused(&p, 2.0, &line), "{}", p.logs());
    assert_eq!(held(&p, "web")?, (web_ip.clone(), web_port));

    // web goes: what it held is free, and the newcomer gets it.
    let applied = p.metric(RELOADS_OK).unwrap_or(0.0);
    std::fs::write(&config, head + &thief)?;
    assert!(
        eventually_blocking(WAIT, || p.metric(RELOADS_OK) > Some(applied)),
        "{}",
        p.logs()
    );
    assert_eq!(held(&p, "thief")?, (web_ip.clone(), web_port));
    let saved = std::fs::read_to_string(&state)?;
    assert!(!saved.contains("default/web"), "{saved}");
    assert!(saved.contains("default/thief"), "{saved}");
    Ok(())
}

#[test]
fn manifests_asking_for_what_a_running_service_holds_fail_the_reload() -> Result<()> {
    let admin = sa(&format!("127.0.47.20:{}", free_port(ip("127.0.47.20"))));
    let node = ip("127.0.47.21");
    let backend = echo_backend("127.0.0.1");
    let port = backend.addr.port();
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("lb.toml");
    let state = dir.path().join("state.json");
    let manifests = dir.path().join("manifests");
    std::fs::create_dir(&manifests)?;
    std::fs::write(&config, head(admin, node, "127.98.18.0/24"))?;
    let service = |name: &str, extra: &str, node_port: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  type: NodePort\n{extra}\
             \x20 ports:\n  - name: tcp\n    port: 8080\n    targetPort: {port}\n{node_port}---\n\
             apiVersion: v1\nkind: Endpoints\nmetadata:\n  name: {name}\nsubsets:\n\
             - addresses:\n  - ip: 127.0.0.1\n  ports:\n  - name: tcp\n    port: {port}\n"
        )
    };
    std::fs::write(manifests.join("web.yaml"), service("web", "", ""))?;
    let p = Run::file(&config)
        .arg("--manifests")
        .arg(&manifests)
        .arg("--state-file")
        .arg(&state)
        .admin(admin)
        .start()?;
    let (web_ip, web_port) = held(&p, "web")?;

    std::fs::write(
        manifests.join("thief.yaml"),
        service(
            "thief",
            &format!("  clusterIP: {web_ip}\n"),
            &format!("    nodePort: {web_port}\n"),
        ),
    )?;
    let ip_line = format!("services[thief].cluster_ip: Invalid value: []string{{\"{web_ip}\"}}: failed to allocate IP {web_ip}: provided IP is already allocated");
    let port_line = format!("services[thief].ports[0].node_port: Invalid value: {web_port}: provided port is already allocated");
    assert!(refused(&p, 1.0, &ip_line), "{}", p.logs());
    assert!(p.logs().contains(&port_line), "{}", p.logs());
    assert_eq!(held(&p, "web")?, (web_ip.clone(), web_port));
    let out = check_with_state(&config, Some(&manifests), &state);
    assert_eq!(out.status.code(), Some(1), "{}", combined(&out));
    assert!(combined(&out).contains(&ip_line), "{}", combined(&out));

    std::fs::remove_file(manifests.join("thief.yaml"))?;
    let other = another(&web_ip);
    std::fs::write(
        manifests.join("web.yaml"),
        service("web", &format!("  clusterIP: {other}\n"), ""),
    )?;
    let line = format!(
        "services[web].cluster_ip: Invalid value: []string{{\"{other}\"}}: may not change once set"
    );
    assert!(
        eventually_blocking(WAIT, || p.logs().contains(&line)),
        "{}",
        p.logs()
    );
    assert_eq!(held(&p, "web")?, (web_ip, web_port));
    Ok(())
}

#[test]
fn an_etcd_object_asking_for_a_held_cluster_ip_is_skipped_by_key_and_a_removed_one_frees_it() {
    let Ok(etcd) = Etcd::start("127.0.47.30") else {
        panic!("etcd (Debian package etcd-server) must be installed: .ci/run installs it");
    };
    let c = etcd.client();
    let _backend = http_backend("127.0.47.33:8080", "a");
    c.put(
        "/lbtest/pods/default/web-1",
        br#"{"name":"web-1","ip":"127.0.47.33","node":"node-1","labels":{"app":"web"},"ports":[{"name":"http","container_port":8080}]}"#,
    )
    .unwrap();
    c.put(
        "/lbtest/services/default/web",
        br#"{"name":"web","selector":{"app":"web"},"ports":[{"port":80,"target_port":"http"}]}"#,
    )
    .unwrap();
    let node = "127.0.47.31";
    let admin = free_port(node);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.toml");
    std::fs::write(&config, node_config("node-1", node, admin, &etcd.url(), "")).unwrap();
    let p = Run::file(&config)
        .admin(sa(&format!("{node}:{admin}")))
        .start()
        .unwrap();
    let web = p
        .wait_service("web")
        .unwrap_or_else(|| panic!("{}", p.logs()));
    let web_ip = web["cluster_ip"].as_str().unwrap().to_string();

    c.put(
        "/lbtest/services/default/thief",
        format!(r#"{{"name":"thief","cluster_ip":"{web_ip}","selector":{{"app":"web"}},"ports":[{{"port":80,"target_port":"http"}}]}}"#).as_bytes(),
    )
    .unwrap();
    let line = format!("/lbtest/services/default/thief: services[thief].cluster_ip: Invalid value: []string{{\"{web_ip}\"}}: failed to allocate IP {web_ip}: provided IP is already allocated");
    assert!(p.logged(&line, WAIT), "{}", p.logs());
    assert_eq!(p.metric(RELOADS_FAILED), Some(0.0), "only that object");
    assert!(p.service("thief").is_none());
    let again = p.service("web").unwrap();
    assert_eq!(again["cluster_ip"].as_str(), Some(web_ip.as_str()));
    assert_eq!(ask(sa(&format!("{web_ip}:80"))).unwrap(), "a");

    // web goes: etcd's allocations free its address, and thief gets it.
    c.delete("/lbtest/services/default/web").unwrap();
    assert!(
        eventually_blocking(WAIT, || p
            .service("thief")
            .is_some_and(|s| s["cluster_ip"].as_str() == Some(web_ip.as_str()))),
        "{}",
        p.logs()
    );
    assert!(
        eventually_blocking(Duration::from_secs(5), || {
            let saved = c.get("/lbtest/allocations").unwrap().unwrap();
            let text = String::from_utf8_lossy(&saved.value).to_string();
            !text.contains("default/web") && text.contains("default/thief")
        }),
        "{}",
        p.logs()
    );
}

/// Sends "hi" to `addr` and reads what comes back.
fn ask_echo(addr: SocketAddr) -> Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, WAIT)?;
    s.set_read_timeout(Some(WAIT))?;
    s.write_all(b"hi")?;
    let mut back = [0u8; 2];
    s.read_exact(&mut back)?;
    Ok(String::from_utf8_lossy(&back).to_string())
}
