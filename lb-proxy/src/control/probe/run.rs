//! Running one probe: `tcp_socket`, `http_get` and `exec`, each bounded by
//! the probe's timeout, as the kubelet runs them. An `exec` command runs in a
//! process group of its own, killed whole however the probe ends (`Group`).

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use lb_core::health::{ProbeAction, ProbeSpec};
use lb_core::ProxyProtocol;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest status line an `http_get` probe reads; the rest of the answer is
/// never read.
const MAX_STATUS_LINE: usize = 4096;

/// What one probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// The probe passed.
    pub(crate) success: bool,
    /// Why, in a few words (`HTTP 500`, `connection refused`, `exit status 1`).
    pub(crate) message: String,
    /// The result as HAProxy's check status words it (`L4OK`, `L4CON`,
    /// `L4TOUT`, `L7OK/200`, `L7STS/500`, `L7RSP`, `L7TOUT`, `PROCOK`,
    /// `PROCERR`, `PROCTOUT`), which operators of load balancers already read.
    pub(crate) check: String,
}

impl Outcome {
    fn ok(check: impl Into<String>, message: impl Into<String>) -> Self {
        Outcome {
            success: true,
            message: message.into(),
            check: check.into(),
        }
    }
    fn fail(check: impl Into<String>, message: impl Into<String>) -> Self {
        Outcome {
            success: false,
            message: message.into(),
            check: check.into(),
        }
    }
}

/// Runs `spec` once; never takes longer than its timeout (plus the time to
/// reap a killed command).
pub(crate) async fn run(spec: &ProbeSpec) -> Outcome {
    let timeout = spec.timeout.max(Duration::from_millis(1));
    match &spec.action {
        ProbeAction::TcpSocket { port } => {
            let addr = SocketAddr::new(spec.ip, *port);
            let dial = connect(addr, spec.proxy_protocol);
            match tokio::time::timeout(timeout, dial).await {
                Ok(Ok(_)) => Outcome::ok("L4OK", "connected"),
                Ok(Err(e)) => Outcome::fail("L4CON", format!("dial {addr}: {e}")),
                Err(_) => Outcome::fail(
                    "L4TOUT",
                    format!("dial {addr}: timed out after {timeout:?}"),
                ),
            }
        }
        ProbeAction::HttpGet { path, port } => {
            let addr = SocketAddr::new(spec.ip, *port);
            let get = http_get(addr, path, spec.proxy_protocol);
            match tokio::time::timeout(timeout, get).await {
                Ok(Ok(status)) if (200..400).contains(&status) => {
                    Outcome::ok(format!("L7OK/{status}"), format!("HTTP {status}"))
                }
                Ok(Ok(status)) => {
                    Outcome::fail(format!("L7STS/{status}"), format!("HTTP {status}"))
                }
                Ok(Err(e)) => Outcome::fail(
                    http_error_check(&e),
                    format!("GET http://{addr}{path}: {e}"),
                ),
                Err(_) => Outcome::fail(
                    "L7TOUT",
                    format!("GET http://{addr}{path}: timed out after {timeout:?}"),
                ),
            }
        }
        ProbeAction::Exec { command } => exec(command, timeout).await,
    }
}

/// HAProxy's word for an HTTP check that got no status: `L4CON` when the
/// connection failed, `L7RSP` when the answer was not HTTP.
fn http_error_check(e: &std::io::Error) -> &'static str {
    if e.kind() == std::io::ErrorKind::InvalidData {
        "L7RSP"
    } else {
        "L4CON"
    }
}

/// Sends `GET path` and returns the answer's status code.
async fn http_get(
    addr: SocketAddr,
    path: &str,
    proxy_protocol: Option<ProxyProtocol>,
) -> std::io::Result<u16> {
    let mut stream = connect(addr, proxy_protocol).await?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: lb-proxy-probe/1.0\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    loop {
        if let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
            return parse_status(&buf[..end]);
        }
        if buf.len() >= MAX_STATUS_LINE {
            return Err(invalid("status line too long"));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(invalid("connection closed before a status line"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A probe's connection: with `proxy_protocol`, it starts with a `LOCAL`
/// header, which tells the endpoint this is the proxy's own check, not a
/// client's connection.
async fn connect(
    addr: SocketAddr,
    proxy_protocol: Option<ProxyProtocol>,
) -> std::io::Result<TcpStream> {
    let mut stream = TcpStream::connect(addr).await?;
    if let Some(version) = proxy_protocol {
        stream
            .write_all(crate::dataplane::proxy_header::local(version))
            .await?;
    }
    Ok(stream)
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string())
}

/// `HTTP/1.1 200 OK` → 200.
fn parse_status(line: &[u8]) -> std::io::Result<u16> {
    let line = std::str::from_utf8(line).map_err(|_| invalid("status line is not UTF-8"))?;
    let mut parts = line.split(' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/") {
        return Err(invalid("not an HTTP answer"));
    }
    parts
        .next()
        .and_then(|code| code.parse::<u16>().ok())
        .filter(|code| (100..1000).contains(code))
        .ok_or_else(|| invalid("malformed status code"))
}

/// Runs `command` (no shell) in a process group of its own; success on exit
/// 0. The whole group is killed when the probe ends: at the timeout (and the
/// command reaped), after the command exits (whatever it left running in the
/// background), and when the probe is cancelled (its pod removed, lb-proxy
/// stopping), so a probe never leaves a process behind.
async fn exec(command: &[String], timeout: Duration) -> Outcome {
    let Some((program, args)) = command.split_first() else {
        return Outcome::fail("PROCERR", "empty command");
    };
    let child = match tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own group, led by the command: pgid = its pid.
        .process_group(0)
        // A cancelled probe's command is reaped by tokio once it dies.
        .kill_on_drop(true)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return Outcome::fail("PROCERR", format!("cannot run {program}: {e}")),
    };
    let mut group = Group::new(child);
    match tokio::time::timeout(timeout, group.child.wait()).await {
        Ok(Ok(status)) if status.success() => Outcome::ok("PROCOK", "exit status 0"),
        Ok(Ok(status)) => Outcome::fail("PROCERR", status.to_string()),
        Ok(Err(e)) => Outcome::fail("PROCERR", format!("waiting for {program}: {e}")),
        Err(_) => {
            // Killed before it is reaped: its pid, the group's id, cannot
            // have been reused yet.
            group.kill();
            let _ = group.child.wait().await;
            Outcome::fail(
                "PROCTOUT",
                format!("{program}: timed out after {timeout:?}; killed"),
            )
        }
    }
    // `group` drops here: what the command left running goes with it.
}

/// A probe command and its process group, which dropping the value kills
/// (`SIGKILL` to the group): the one place that makes sure no probe process
/// outlives its probe, however the probe ends (a timeout, an exit, the probe's
/// future dropped when its task is cancelled).
///
/// After the command is reaped, its pid stays reserved as long as any
/// process of its group lives (Linux frees a pid only when nothing uses it
/// as a pid, a group or a session id), so the kill reaches exactly the
/// leftovers, or no one. A descendant that leaves the group on purpose
/// (`setsid`, `setpgid`) escapes it, as from the kubelet's.
struct Group {
    child: tokio::process::Child,
    pgid: Option<u32>,
}

impl Group {
    fn new(child: tokio::process::Child) -> Group {
        // `None` only once the child is reaped, never right after a spawn.
        let pgid = child.id();
        Group { child, pgid }
    }

    /// Kills every process of the group, once.
    fn kill(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            if let Err(e) = crate::sys::kill_process_group(pgid) {
                tracing::warn!(pgid, error = %e, "cannot kill an exec probe's process group");
            }
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
        // Then `child` drops: kill_on_drop, and tokio reaps it when it dies.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An HTTP endpoint that expects a PROXY header (as nginx's `listen ...
    /// proxy_protocol`): a valid one first, then 200; anything else, closed.
    async fn endpoint_behind_proxy_protocol() -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 512];
                    let mut have = 0;
                    loop {
                        match conn.read(&mut buf[have..]).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => have += n,
                        }
                        match crate::dataplane::proxy_header::parse(&buf[..have]) {
                            Ok(None) if have < buf.len() => continue,
                            Ok(Some(_)) => break,
                            _ => return,
                        }
                    }
                    let _ = conn
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                        .await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_probe_that_asks_starts_with_a_local_header_and_one_that_does_not_sends_none() {
        let addr = endpoint_behind_proxy_protocol().await;
        let pod = lb_core::health::PodKey::new("default", "web-1");
        for version in [ProxyProtocol::V1, ProxyProtocol::V2] {
            for action in [
                ProbeAction::HttpGet {
                    path: "/".into(),
                    port: addr.port(),
                },
                ProbeAction::TcpSocket { port: addr.port() },
            ] {
                let mut spec = ProbeSpec::new(pod.clone(), addr.ip(), action.clone());
                spec.proxy_protocol = Some(version);
                assert!(
                    run(&spec).await.success,
                    "{action:?} with a {} LOCAL header",
                    version.as_str()
                );
            }
        }
        let plain = ProbeSpec::new(
            pod,
            addr.ip(),
            ProbeAction::HttpGet {
                path: "/".into(),
                port: addr.port(),
            },
        );
        let outcome = run(&plain).await;
        assert!(
            !outcome.success,
            "without the header the endpoint closes: {outcome:?}"
        );
    }

    #[test]
    fn status_lines_parse() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK").unwrap(), 200);
        assert_eq!(parse_status(b"HTTP/1.0 503").unwrap(), 503);
        assert!(parse_status(b"SSH-2.0-OpenSSH").is_err());
        assert!(parse_status(b"HTTP/1.1 abc").is_err());
    }
}
