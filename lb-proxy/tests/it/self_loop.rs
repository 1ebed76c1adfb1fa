//! An endpoint that is lb itself, where validation cannot see it: a host
//! name that resolves, at run time, to one of the proxy's own frontends.
//! The dial is never made: the client is reset and counted, the process
//! keeps its descriptors and its admin API; another endpoint of the same
//! service serves the client instead. The names are answered by a loopback
//! dnsmasq (skipped, with a message, without it); addresses are 127.0.91.x and fresh cluster IPs.

use std::io::{ErrorKind, Read};
use std::net::{IpAddr, SocketAddr, TcpStream};

use anyhow::Result;

use crate::support::bin::{check, combined, unlocated, Run, Running};
use crate::support::config::base_toml;
use crate::support::tools::{have, Dnsmasq};
use crate::support::*;

/// How many descriptors the proxy may open beyond what it held before the
/// client came (a loop would take every one it may have).
const FD_SLACK: usize = 16;

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// `lb-proxy run` with `web` (cluster IP `web`, port `port`, endpoint
/// `loop.example.test`, which the dnsmasq `upstream` resolves to that same
/// cluster IP) and `both` (cluster IP `both`: the same name, and
/// `backend`), once both have their endpoints.
fn start(
    upstream: SocketAddr,
    (web, both): (IpAddr, IpAddr),
    port: u16,
    backend: SocketAddr,
) -> Result<Running> {
    let admin = SocketAddr::new(ip("127.0.91.1"), free_port("127.0.91.1"));
    let text = format!(
        r#"{head}
[dns]
listen = "127.0.91.3:0"
upstreams = ["{upstream}"]

[[services]]
name = "web"
cluster_ip = "{web}"
ports = [{{ name = "tcp", port = {port} }}]
[[endpoints]]
name = "web"
[[endpoints.subsets]]
addresses = [{{ host = "loop.example.test" }}]
ports = [{{ name = "tcp", port = {port} }}]

[[services]]
name = "both"
cluster_ip = "{both}"
ports = [{{ name = "tcp", port = {port} }}]
[[endpoints]]
name = "both"
[[endpoints.subsets]]
addresses = [{{ host = "loop.example.test" }}]
ports = [{{ name = "tcp", port = {port} }}]
[[endpoints.subsets]]
addresses = [{{ ip = "{backend_ip}" }}]
ports = [{{ name = "tcp", port = {backend_port} }}]
"#,
        head = base_toml(admin),
        backend_ip = backend.ip(),
        backend_port = backend.port(),
    );
    let proxy = Run::text(&text).admin(admin).start()?;
    let resolved = eventually_blocking(WAIT, || {
        proxy.endpoints("web").len() == 1 && proxy.endpoints("both").len() == 2
    });
    anyhow::ensure!(resolved, "the name was not resolved: {}", proxy.logs());
    Ok(proxy)
}

fn rejected_self_loop(proxy: &Running, service: &str) -> Option<f64> {
    proxy.metric(&format!(
        "lb_rejected_connections_total{{namespace=\"default\",service=\"{service}\",port=\"tcp\",protocol=\"TCP\",reason=\"self_loop\"}}"
    ))
}

#[test]
fn a_host_name_endpoint_that_is_the_proxys_own_frontend_is_never_dialed() -> Result<()> {
    if !have("dnsmasq") {
        eprintln!("SKIPPED: dnsmasq is not installed (apt-get install dnsmasq-base)");
        return Ok(());
    }
    // Cluster IPs come from the head's range, fresh for this test.
    let (web, both) = (fresh_ip(), fresh_ip());
    let rt = tokio::runtime::Runtime::new()?;
    let dns = rt.block_on(Dnsmasq::start(
        "127.0.91.2",
        &[&format!("/loop.example.test/{web}")],
    ));
    let backend = echo_backend("127.0.91.20");
    let port = free_port(web);
    let proxy = start(dns.addr, (web, both), port, backend.addr)?;
    let before = open_fds(proxy.pid());

    // The only endpoint is web's own cluster IP: one client, one reset.
    // The reset may come before `connect_timeout` has seen the handshake
    // finish (it then fails with the reset) or after (the read does).
    let read = TcpStream::connect_timeout(&SocketAddr::new(web, port), WAIT).and_then(|mut c| {
        c.set_read_timeout(Some(WAIT))?;
        c.read(&mut [0u8; 16])
    });
    assert!(
        matches!(&read, Err(e) if e.kind() == ErrorKind::ConnectionReset),
        "the client must be reset, got {read:?}"
    );
    assert!(
        eventually_blocking(WAIT, || rejected_self_loop(&proxy, "web") == Some(1.0)),
        "rejected{{reason=\"self_loop\"}} must read 1, reads {:?}",
        rejected_self_loop(&proxy, "web")
    );
    let after = open_fds(proxy.pid());
    assert!(
        after <= before + FD_SLACK,
        "descriptors grew from {before} to {after}"
    );
    assert!(matches!(http_get(proxy.admin(), "/healthz"), Ok((200, _))));
    assert!(
        proxy.logged("self-loop", WAIT),
        "logged at warn: {}",
        proxy.logs()
    );
    // Not the endpoint's fault: no connect error is counted on it.
    let errors = format!(
        "lb_connect_errors_total{{namespace=\"default\",service=\"web\",port=\"tcp\",protocol=\"TCP\",endpoint=\"{web}:{port}\"}}"
    );
    assert_eq!(proxy.metric(&errors).unwrap_or(0.0), 0.0);

    // The same name beside a real backend: every client is served by it,
    // whichever endpoint the pick starts with.
    for i in 0..4u8 {
        let mut c = TcpStream::connect_timeout(&SocketAddr::new(both, port), WAIT)?;
        c.set_read_timeout(Some(WAIT))?;
        std::io::Write::write_all(&mut c, &[i; 3])?;
        let mut back = [0u8; 3];
        c.read_exact(&mut back)?;
        assert_eq!(back, [i; 3]);
    }
    assert_eq!(rejected_self_loop(&proxy, "both"), Some(0.0));
    Ok(())
}

#[test]
fn check_refuses_a_pod_that_is_a_node_address_at_a_node_port_of_the_same_file() {
    let out = check(
        r#"
[node]
addresses = ["127.0.91.1"]
[cluster]
node_port_range = "30000-30000"
[[services]]
name = "web"
type = "NodePort"
cluster_ip = "10.96.0.10"
ports = [{ port = 80 }]
[[services]]
name = "api"
selector = { app = "api" }
ports = [{ port = 80, target_port = 30000 }]
[[pods]]
name = "api-1"
ip = "127.0.91.1"
labels = { app = "api" }
"#,
    );
    let text = combined(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        unlocated(&text).iter().any(|l| l == "pods[api-1]: Invalid value: \"127.0.91.1:30000\": must not be a frontend of this proxy: it is the node port 127.0.91.1:30000 of services[web], so connections to it would loop back into lb"),
        "{text}"
    );
}

#[test]
fn check_refuses_an_endpoint_that_is_a_cluster_ip_of_the_same_file() {
    let out = check(
        r#"
[[services]]
name = "web"
cluster_ip = "10.96.0.10"
ports = [{ name = "http", port = 80 }]
[[endpoints]]
name = "web"
[[endpoints.subsets]]
addresses = [{ ip = "10.96.0.10" }]
ports = [{ name = "http", port = 80 }]
"#,
    );
    let text = combined(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        unlocated(&text).iter().any(|l| l == "endpoints[web].subsets[0].addresses[0]: Invalid value: \"10.96.0.10:80\": must not be a frontend of this proxy: it is the cluster IP 10.96.0.10:80 of services[web], so connections to it would loop back into lb"),
        "{text}"
    );
}
