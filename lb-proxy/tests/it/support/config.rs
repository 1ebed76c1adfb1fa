//! Config files as the App and the binary read them: a head with the node,
//! the cluster range the fresh addresses come from, short dial timeouts and
//! an admin listener, and selector-less TCP services.

use std::net::SocketAddr;

use super::addr::AsIp;

/// The file's head: node `node-1` at 127.0.0.1, cluster IPs from
/// 127.77.0.0/16 (where [`fresh_ip`](super::addr::fresh_ip) hands out
/// addresses; allocations take 127.77.0.x), dials of 200 ms, a 2 s drain,
/// the admin API at `admin`.
pub fn base_toml(admin: SocketAddr) -> String {
    format!(
        r#"
[node]
name = "node-1"
addresses = ["127.0.0.1"]

[cluster]
service_cidr = "127.77.0.0/16"

[proxy]
connect_timeouts_ms = [200, 200, 200]
drain_timeout = "2s"

[admin]
listen = "{admin}"
"#
    )
}

/// `[[services]]` + `[[endpoints]]` for a selector-less TCP service `name`
/// at `cluster_ip:port` over `backends` (all on the first one's port), with
/// `extra` lines in the service table.
pub fn service_toml(
    name: &str,
    cluster_ip: impl AsIp,
    port: u16,
    backends: &[SocketAddr],
    extra: &str,
) -> String {
    let cluster_ip = cluster_ip.as_ip();
    let target = backends.first().map_or(port, |b| b.port());
    let addresses: Vec<String> = backends
        .iter()
        .map(|b| format!("{{ ip = \"{}\" }}", b.ip()))
        .collect();
    format!(
        r#"
[[services]]
name = "{name}"
cluster_ip = "{cluster_ip}"
{extra}
[[services.ports]]
name = "tcp"
port = {port}
target_port = {target}

[[endpoints]]
name = "{name}"
[[endpoints.subsets]]
addresses = [{addresses}]
ports = [{{ name = "tcp", port = {target} }}]
"#,
        addresses = addresses.join(", ")
    )
}
