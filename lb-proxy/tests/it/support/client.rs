//! Clients: TCP connections from a chosen 127.x source, fetches that read a
//! whole answer, echo round trips, reads until the peer closes, resets; a
//! minimal HTTP/1.1 GET for admin APIs and health-check ports; a `/metrics`
//! sample reader; and [`Traffic`], clients opening connections one after
//! another while something else happens. Every read and connect is bounded.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

use super::addr::AsIp;
use super::wait::{eventually_blocking, WAIT};

/// The bound of a blocking client's connect and of each of its reads.
const BLOCKING_IO: Duration = Duration::from_secs(2);

/// Connects to `addr` from the source address `src` (a 127.x address).
pub async fn connect_from(src: impl AsIp, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(src.as_ip(), 0))?;
    tokio::time::timeout(WAIT, socket.connect(addr))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

/// Connects from `src`, reads the whole answer, returns it.
pub async fn fetch_from(src: impl AsIp, addr: SocketAddr) -> String {
    let mut stream = connect_from(src, addr).await.expect("connect");
    let mut answer = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut answer))
        .await
        .expect("answer within the bound")
        .expect("read answer");
    answer
}

/// Connects from 127.0.0.1, reads the whole answer, returns it.
pub async fn fetch(addr: SocketAddr) -> String {
    fetch_from("127.0.0.1", addr).await
}

/// Fetches from 127.0.0.1: the answer, or what went wrong as text.
pub async fn try_fetch(addr: SocketAddr) -> Result<String, String> {
    let mut stream = tokio::time::timeout(WAIT, TcpStream::connect(addr))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut answer))
        .await
        .map_err(|_| "read timed out".to_string())?
        .map_err(|e| e.to_string())?;
    Ok(answer)
}

/// Writes `msg` and expects it echoed back.
pub async fn echo(stream: &mut TcpStream, msg: &[u8]) {
    stream.write_all(msg).await.expect("write");
    let mut back = vec![0u8; msg.len()];
    tokio::time::timeout(WAIT, stream.read_exact(&mut back))
        .await
        .expect("echo within the bound")
        .expect("read echo");
    assert_eq!(back, msg);
}

/// Reads until the peer closes; returns what the read ended with (`Ok(0)`
/// for a FIN, the error for a reset). Panics if neither comes within
/// `bound`.
pub async fn read_until_closed(stream: &mut TcpStream, bound: Duration) -> std::io::Result<usize> {
    let mut buf = [0u8; 4096];
    tokio::time::timeout(bound, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => return Ok(0),
                Ok(_) => continue,
                Err(e) => return Err(e),
            }
        }
    })
    .await
    .expect("the connection was closed within the bound")
}

/// Closes `stream` with a reset.
pub fn reset(stream: TcpStream) {
    socket2::SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER");
    drop(stream);
}

// === UDP ===

/// A UDP client socket on `src` (any port).
pub async fn udp_client(src: impl AsIp) -> UdpSocket {
    UdpSocket::bind((src.as_ip(), 0))
        .await
        .expect("bind a UDP client")
}

/// Sends `msg` to `to` and waits up to `bound` for one reply: its bytes and
/// the address it came from.
pub async fn udp_ask_within(
    client: &UdpSocket,
    to: SocketAddr,
    msg: &[u8],
    bound: Duration,
) -> Option<(Vec<u8>, SocketAddr)> {
    client.send_to(msg, to).await.expect("send");
    let mut buf = vec![0u8; 70_000];
    match tokio::time::timeout(bound, client.recv_from(&mut buf)).await {
        Ok(Ok((n, from))) => Some((buf[..n].to_vec(), from)),
        Ok(Err(e)) => panic!("recv: {e}"),
        Err(_) => None,
    }
}

/// Sends `msg` to `to` and expects a reply within [`WAIT`]: its text and
/// the address it came from.
pub async fn udp_ask(client: &UdpSocket, to: SocketAddr, msg: &[u8]) -> (String, SocketAddr) {
    let (bytes, from) = udp_ask_within(client, to, msg, WAIT)
        .await
        .unwrap_or_else(|| panic!("no reply from {to}"));
    (String::from_utf8_lossy(&bytes).into_owned(), from)
}

// === blocking clients ===

/// What `addr` answers on a fresh connection (blocking).
pub fn ask(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = std::net::TcpStream::connect_timeout(&addr, BLOCKING_IO)?;
    s.set_read_timeout(Some(BLOCKING_IO))?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// The set of answers `n` fresh connections to `addr` get (blocking); a
/// failed one as `error: ...`.
pub fn answers(addr: SocketAddr, n: usize) -> BTreeSet<String> {
    (0..n)
        .map(|_| ask(addr).unwrap_or_else(|e| format!("error: {e}")))
        .collect()
}

/// `GET path` on `addr` over HTTP/1.1 (blocking): status and body. The
/// `Host` is `addr`, as a client given the address sends it (the admin API
/// answers no other name unless allowed).
pub fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    http_get_with(addr, path, &[]).map(|(status, _, body)| (status, body))
}

/// [`http_get`] with extra request headers: status, response head, body.
pub fn http_get_with(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<(u16, String, String)> {
    let mut s = std::net::TcpStream::connect_timeout(&addr, BLOCKING_IO)?;
    s.set_read_timeout(Some(WAIT))?;
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra}\r\n"
    )?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let out = String::from_utf8(out).context("a UTF-8 answer")?;
    let (head, body) = out.split_once("\r\n\r\n").context("no header end")?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .context("no status")?
        .parse()?;
    let chunked = head
        .lines()
        .any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"));
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_string()
    };
    Ok((status, head.to_string(), body))
}

/// A chunked body, joined.
fn dechunk(mut rest: &str) -> anyhow::Result<String> {
    let mut body = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").context("no chunk size")?;
        let size = usize::from_str_radix(size.trim(), 16)?;
        if size == 0 {
            return Ok(body);
        }
        if after.len() < size + 2 {
            bail!("a chunk shorter than its size");
        }
        body.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
}

/// [`http_get`] from an async test (on a blocking thread), expecting an
/// answer.
pub async fn http_get_async(addr: SocketAddr, path: &str) -> (u16, String) {
    let path = path.to_string();
    tokio::task::spawn_blocking(move || http_get(addr, &path))
        .await
        .expect("join")
        .unwrap_or_else(|e| panic!("GET {addr}: {e:#}"))
}

/// The value of the `/metrics` sample whose series (name and labels,
/// exactly) is `series`.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

// === traffic ===

/// Clients opening connections to one address one after another (bounded in
/// count and time) until stopped; a connection fails if it is refused, cut,
/// or answered with something unexpected.
#[derive(Debug)]
pub struct Traffic {
    state: Arc<TrafficState>,
    task: JoinHandle<()>,
}

#[derive(Debug, Default)]
struct TrafficState {
    stop: AtomicBool,
    answered: AtomicUsize,
    failures: Mutex<Vec<String>>,
}

/// What a [`Traffic`] saw.
#[derive(Debug, Default)]
pub struct TrafficReport {
    /// Connections answered as expected.
    pub answered: usize,
    /// What went wrong, one line per failed connection.
    pub failures: Vec<String>,
}

impl Traffic {
    /// At most `max` connections to `to`, one every `pace`, for at most
    /// `limit`; each must be answered with one of `expected` (with any
    /// non-empty text when `expected` is empty).
    pub fn start(
        to: SocketAddr,
        expected: &'static [&'static str],
        pace: Duration,
        max: usize,
        limit: Duration,
    ) -> Traffic {
        let state = Arc::new(TrafficState::default());
        let s = state.clone();
        let task = super::backend::runtime().spawn(async move {
            let deadline = tokio::time::Instant::now() + limit;
            for i in 0..max {
                if s.stop.load(Ordering::SeqCst) || tokio::time::Instant::now() > deadline {
                    break;
                }
                match try_fetch(to).await {
                    Ok(a) if expected.contains(&a.as_str()) => {
                        s.answered.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(a) if expected.is_empty() && !a.is_empty() => {
                        s.answered.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(a) => s.fail(format!("connection {i}: answered {a:?}")),
                    Err(e) => s.fail(format!("connection {i}: {e}")),
                }
                tokio::time::sleep(pace).await;
            }
        });
        Traffic { state, task }
    }

    /// Connections answered so far.
    pub fn answered(&self) -> usize {
        self.state.answered.load(Ordering::SeqCst)
    }

    /// Connections failed so far.
    pub fn failures(&self) -> usize {
        self.state.failures.lock().expect("traffic lock").len()
    }

    /// Connections finished so far, answered or failed. The clients open
    /// one connection at a time, so once this grew by two, every connection
    /// that was open when it was read has finished.
    pub fn completed(&self) -> usize {
        self.answered() + self.failures()
    }

    /// Stops the clients and reports (from an async test).
    pub async fn stop(self) -> TrafficReport {
        let Traffic { state, task } = self;
        state.stop.store(true, Ordering::SeqCst);
        let _ = tokio::time::timeout(WAIT, task).await;
        state.report()
    }

    /// Stops the clients and reports (from a blocking test).
    pub fn finish(self) -> TrafficReport {
        self.state.stop.store(true, Ordering::SeqCst);
        let done = eventually_blocking(WAIT, || self.task.is_finished());
        assert!(done, "the traffic did not stop");
        self.state.report()
    }
}

impl TrafficState {
    fn fail(&self, what: String) {
        self.failures.lock().expect("traffic lock").push(what);
    }

    fn report(&self) -> TrafficReport {
        TrafficReport {
            answered: self.answered.load(Ordering::SeqCst),
            failures: self.failures.lock().expect("traffic lock").clone(),
        }
    }
}
