//! What the admin API lets a client hold, and whom it answers: a request
//! head within the header-read timeout, a kept-alive connection until the
//! idle timeout, a bounded number of connections (more are closed at the
//! accept), and only requests whose `Host` is an IP literal, `localhost` or
//! an allowed name. In process with short injected limits, and once
//! through the binary with the defaults and `admin.allowed_hosts` from the
//! file. Addresses: 127.0.71.0/24.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lb_core::Snapshot;
use lb_proxy::lifecycle::Tasks;
use lb_proxy::ops::admin::{AdminServer, AdminServerBuilder, AdminSource, AllowedHosts};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use crate::support::{created, eventually_async, node, read_until_closed, WAIT};

/// An admin source with no services that counts the `/readyz` handlers it
/// ran, so a test can tell a refused request never reached one.
#[derive(Default)]
struct Counting {
    readyz: AtomicUsize,
}

impl AdminSource for Counting {
    fn snapshot(&self) -> Arc<Snapshot> {
        Arc::new(Snapshot::build(
            node(),
            Vec::<lb_core::ServiceSpec>::new(),
            None,
            created(),
        ))
    }
    fn bind_errors(&self) -> std::collections::BTreeMap<lb_core::FrontendKey, String> {
        Default::default()
    }
    fn readiness(&self) -> Option<String> {
        self.readyz.fetch_add(1, Ordering::SeqCst);
        None
    }
    fn metrics(&self) -> String {
        String::new()
    }
}

/// An admin server builder on `ip`:<ephemeral> over `source`.
async fn builder(ip: &str, source: Arc<Counting>) -> AdminServerBuilder {
    let listener = TcpListener::bind((ip, 0)).await.expect("bind on loopback");
    AdminServer::builder(listener, source)
}

/// `GET path` with `Host: host` (none when `None`) over `version`, on a new
/// connection the request asks to close: the whole answer.
async fn ask(addr: SocketAddr, path: &str, version: &str, host: Option<&str>) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let host = host.map(|h| format!("Host: {h}\r\n")).unwrap_or_default();
    let request = format!("GET {path} {version}\r\n{host}Connection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await.expect("send");
    let mut answer = String::new();
    tokio::time::timeout(WAIT, s.read_to_string(&mut answer))
        .await
        .expect("answered and closed within the bound")
        .expect("read");
    answer
}

/// The status code of a whole answer.
fn status(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"))
}

/// One answer on a kept-alive connection: its status and body (the admin
/// API's small answers carry a Content-Length).
async fn read_answer(s: &mut TcpStream) -> (u16, String) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(WAIT, async {
        loop {
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .and_then(|n| n.trim().parse().ok())
                    .expect("a Content-Length");
                if got.len() >= end + 4 + length {
                    let status = head.split_whitespace().nth(1).expect("status");
                    let body = String::from_utf8_lossy(&got[end + 4..end + 4 + length]);
                    return (status.parse().expect("a number"), body.to_string());
                }
            }
            let n = s.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed before a whole answer: {got:?}");
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("an answer within the bound")
}

/// Writes a whole kept-alive `GET /healthz` and expects `ok`.
async fn healthz_on(s: &mut TcpStream, addr: SocketAddr) {
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    s.write_all(request.as_bytes()).await.expect("send");
    assert_eq!(read_answer(s).await, (200, "ok".to_string()));
}

#[tokio::test]
async fn a_client_that_sends_half_a_request_head_is_closed_after_the_header_read_timeout() {
    let server = builder("127.0.71.1", Arc::default())
        .await
        .header_read_timeout(Duration::from_millis(300))
        .start(Tasks::new())
        .expect("start");
    let addr = server.local_addr();

    let mut half = TcpStream::connect(addr).await.expect("connect");
    half.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n").as_bytes())
        .await
        .expect("send");
    let read = read_until_closed(&mut half, WAIT).await;
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");

    // A byte at a time does not restart the clock (slowloris): the
    // connection is cut while the head is still coming.
    let mut slow = TcpStream::connect(addr).await.expect("connect");
    let closed = tokio::time::timeout(WAIT, async {
        let mut head = b"GET /healthz HTTP/1.1\r\nX-Padding: ".iter().cycle();
        let mut buf = [0u8; 64];
        loop {
            tokio::select! {
                read = slow.read(&mut buf) => return matches!(read, Ok(0) | Err(_)),
                () = tokio::time::sleep(Duration::from_millis(50)) => {
                    let byte = head.next().copied().unwrap_or(b'x');
                    if slow.write_all(&[byte]).await.is_err() {
                        return true;
                    }
                }
            }
        }
    })
    .await
    .expect("a head sent a byte at a time is cut within the bound");
    assert!(closed);

    let mut whole = TcpStream::connect(addr).await.expect("connect");
    healthz_on(&mut whole, addr).await;
    server.stop().await;
}

#[tokio::test]
async fn a_kept_alive_connection_outlives_the_header_timeout_and_is_closed_after_the_idle_timeout()
{
    let header = Duration::from_millis(200);
    let idle = Duration::from_millis(1500);
    let server = builder("127.0.71.2", Arc::default())
        .await
        .header_read_timeout(header)
        .idle_timeout(idle)
        .start(Tasks::new())
        .expect("start");
    let addr = server.local_addr();

    let mut s = TcpStream::connect(addr).await.expect("connect");
    healthz_on(&mut s, addr).await;
    // Idle for three header timeouts: still there, the idle clock runs.
    tokio::time::sleep(header * 3).await;
    healthz_on(&mut s, addr).await;
    let answered = Instant::now();
    let read = read_until_closed(&mut s, WAIT).await;
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(
        answered.elapsed() >= idle / 2,
        "closed by the idle clock, not the header one: {:?}",
        answered.elapsed()
    );
    server.stop().await;
}

#[tokio::test]
async fn past_the_connection_limit_a_connection_is_closed_at_once_and_the_others_stay() {
    let server = builder("127.0.71.3", Arc::default())
        .await
        .header_read_timeout(Duration::from_secs(120))
        .max_connections(8)
        .start(Tasks::new())
        .expect("start");
    let addr = server.local_addr();

    let mut held = Vec::new();
    for _ in 0..8 {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        healthz_on(&mut s, addr).await;
        held.push(s);
    }
    let mut ninth = TcpStream::connect(addr).await.expect("connect");
    let _ = ninth
        .write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(WAIT, ninth.read_to_end(&mut answer))
        .await
        .expect("the ninth connection is closed at once, not kept waiting");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(answer.is_empty(), "nothing was read from it nor answered");
    for s in &mut held {
        healthz_on(s, addr).await;
    }

    // A connection that ends gives its slot back.
    drop(held.pop());
    assert!(
        eventually_async(WAIT, || async {
            let Ok(mut s) = TcpStream::connect(addr).await else {
                return false;
            };
            let request =
                format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
            let mut answer = String::new();
            s.write_all(request.as_bytes()).await.is_ok()
                && tokio::time::timeout(WAIT, s.read_to_string(&mut answer))
                    .await
                    .is_ok()
                && answer.starts_with("HTTP/1.1 200")
        })
        .await,
        "a ninth connection is served once one of the eight closed"
    );

    // Stopping does not wait for a first head still coming (120 s here).
    let mut half = TcpStream::connect(addr).await.expect("connect");
    half.write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .expect("send");
    // The server must have read those bytes (an unread head would close at
    // once anyway); nothing outside shows when it has, so give it a moment.
    // Too short a moment can only let the test pass, never fail it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    tokio::time::timeout(WAIT, server.stop())
        .await
        .expect("stopped without waiting for the half-sent head");
}

#[tokio::test]
async fn a_host_other_than_an_ip_localhost_or_an_allowed_name_is_refused_421_before_the_handler() {
    let source = Arc::new(Counting::default());
    let server = builder("127.0.71.4", source.clone())
        .await
        .allowed_hosts(AllowedHosts::new(["lb.node-1.example"]))
        .start(Tasks::new())
        .expect("start");
    let addr = server.local_addr();
    let port = addr.port();

    for host in [
        "evil.example",
        &format!("evil.example:{port}"),
        "lb.node-2.example",
    ] {
        let answer = ask(addr, "/readyz", "HTTP/1.1", Some(host)).await;
        assert_eq!(status(&answer), 421, "{host}: {answer}");
        assert!(answer.contains("admin.allowed_hosts"), "{answer}");
    }
    let answer = ask(addr, "/readyz", "HTTP/1.1", None).await;
    assert_eq!(status(&answer), 421, "no Host on HTTP/1.1: {answer}");
    assert_eq!(source.readyz.load(Ordering::SeqCst), 0, "no handler ran");

    for host in [
        format!("127.0.71.4:{port}"),
        format!("[::1]:{port}"),
        "localhost".to_string(),
        format!("localhost:{port}"),
        format!("lb.node-1.example:{port}"),
    ] {
        let answer = ask(addr, "/readyz", "HTTP/1.1", Some(&host)).await;
        assert_eq!(status(&answer), 200, "{host}: {answer}");
    }
    let answer = ask(addr, "/readyz", "HTTP/1.0", None).await;
    assert_eq!(status(&answer), 200, "no Host on HTTP/1.0: {answer}");
    assert_eq!(source.readyz.load(Ordering::SeqCst), 6);
    let page = ask(addr, "/", "HTTP/1.1", Some(&addr.to_string())).await;
    assert_eq!(status(&page), 200, "the status page: {page}");
    server.stop().await;
}

#[cfg(feature = "cli")]
mod binary {
    use std::io::{ErrorKind, Read, Write};
    use std::time::{Duration, Instant};

    use anyhow::Result;

    use crate::support::bin::{combined, lb, Run};
    use crate::support::config::base_toml;
    use crate::support::{free_port, http_get, ip, WAIT};

    /// Sends `GET /healthz` with `Host: host`: the status line.
    fn status_for(addr: std::net::SocketAddr, host: &str) -> Result<String> {
        let mut s = std::net::TcpStream::connect(addr)?;
        s.set_read_timeout(Some(WAIT))?;
        write!(
            s,
            "GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )?;
        let mut answer = String::new();
        s.read_to_string(&mut answer)?;
        Ok(answer.lines().next().unwrap_or_default().to_string())
    }

    #[test]
    fn the_binary_cuts_a_half_sent_head_after_ten_seconds_and_answers_its_allowed_hosts(
    ) -> Result<()> {
        let admin = std::net::SocketAddr::new(ip("127.0.71.10"), free_port("127.0.71.10"));
        let text = base_toml(admin) + "allowed_hosts = [\"lb.node-1.example\"]\n";
        let _proxy = Run::text(&text).admin(admin).start()?;

        let mut half = std::net::TcpStream::connect(admin)?;
        let sent = Instant::now();
        write!(half, "GET /healthz HTTP/1.1\r\nHost: {admin}\r\n")?;

        assert_eq!(
            status_for(admin, "evil.example")?,
            "HTTP/1.1 421 Misdirected Request"
        );
        assert_eq!(
            status_for(admin, "lb.node-1.example:10249")?,
            "HTTP/1.1 200 OK"
        );
        assert_eq!(http_get(admin, "/healthz")?, (200, "ok".to_string()));
        let get = lb(["get", "services", "--admin", &admin.to_string()]);
        assert!(
            get.status.success(),
            "lb-proxy get works: {}",
            combined(&get)
        );

        half.set_read_timeout(Some(Duration::from_secs(10) + WAIT))?;
        let mut buf = [0u8; 64];
        let read = half.read(&mut buf);
        assert!(
            matches!(&read, Ok(0))
                || matches!(&read, Err(e) if e.kind() == ErrorKind::ConnectionReset),
            "closed, not timed out in the test: {read:?}"
        );
        let held = sent.elapsed();
        assert!(
            held >= Duration::from_secs(9) && held < Duration::from_secs(10) + WAIT,
            "closed by the 10 s header-read timeout: after {held:?}"
        );
        Ok(())
    }
}
