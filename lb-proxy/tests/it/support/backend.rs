//! Endpoints for the proxy to reach: TCP backends that echo, answer a fixed
//! text, read to the end, reset, send slowly, or hand their sockets to the
//! test; UDP backends; endpoints that never answer a SYN.
//!
//! Backends are built without `.await` and run on the test's runtime, or,
//! in a blocking test (one that drives the binary), on a small runtime of
//! the support library's own, so one set of backends serves every test. A
//! backend stops listening when dropped or killed.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::addr::BindAt;
use super::wait::WAIT;

/// The runtime backends run on: the caller's, or (outside any runtime) the
/// support library's own two-thread runtime, started on first use.
pub(crate) fn runtime() -> Handle {
    static BACKGROUND: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    Handle::try_current().unwrap_or_else(|_| {
        BACKGROUND
            .get_or_init(|| {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("test-backends")
                    .enable_all()
                    .build()
                    .expect("the backends' runtime")
            })
            .handle()
            .clone()
    })
}

/// A TCP backend listening at `addr`; stops listening when dropped.
#[derive(Debug)]
pub struct Backend {
    /// Where it listens.
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: Option<JoinHandle<()>>,
}

impl Backend {
    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Stops the backend and returns once its port refuses connections.
    pub async fn kill(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Listens at `at` and runs `handler` for every accepted connection.
fn serve<F, Fut>(at: impl BindAt, handler: F) -> Backend
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let want = at.bind_addr();
    let std = std::net::TcpListener::bind(want).unwrap_or_else(|e| panic!("bind {want}: {e}"));
    std.set_nonblocking(true).expect("nonblocking listener");
    let addr = std.local_addr().expect("backend address");
    let rt = runtime();
    let listener = {
        let _entered = rt.enter();
        TcpListener::from_std(std).expect("register the listener")
    };
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let task = rt.spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(handler(stream));
        }
    });
    Backend {
        addr,
        accepted,
        task: Some(task),
    }
}

/// Echoes every byte back; passes the client's FIN back as its own FIN.
pub fn echo_backend(at: impl BindAt) -> Backend {
    serve(at, |mut stream| async move {
        let (mut r, mut w) = stream.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
        let _ = w.shutdown().await;
    })
}

/// Answers every connection with `body` and closes, once the client's FIN
/// came (so nothing unread turns the close into a reset): the walkthrough's
/// pods answering 111, 222, 333, or a canned HTTP response.
pub fn http_backend(at: impl BindAt, body: &'static str) -> Backend {
    serve(at, move |mut stream| async move {
        let _ = stream.write_all(body.as_bytes()).await;
        let _ = stream.shutdown().await;
        let mut sink = [0u8; 1024];
        let _ = tokio::time::timeout(WAIT, async {
            while let Ok(n) = stream.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
    })
}

/// Reads the request until the client's FIN, then answers `prefix` followed
/// by the byte count it read, and closes.
pub fn read_to_eof_backend(at: impl BindAt, prefix: &'static str) -> Backend {
    serve(at, move |mut stream| async move {
        let mut request = Vec::new();
        if stream.read_to_end(&mut request).await.is_ok() {
            let answer = format!("{prefix}{}", request.len());
            let _ = stream.write_all(answer.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
    })
}

/// Reads one byte, then resets the connection (`SO_LINGER` 0 and close).
pub fn reset_backend(at: impl BindAt) -> Backend {
    serve(at, |mut stream| async move {
        let mut byte = [0u8; 1];
        let _ = stream.read_exact(&mut byte).await;
        super::client::reset(stream);
    })
}

/// Sends `chunk` `count` times, `every` apart, from the moment it accepts,
/// then closes with a FIN once the client's FIN came; reads and discards
/// whatever the client sends meanwhile. A slow download (or a stream that
/// outlives a drain): stops sending when the connection is cut.
pub fn drip_backend(
    at: impl BindAt,
    chunk: &'static [u8],
    every: Duration,
    count: usize,
) -> Backend {
    serve(at, move |stream| async move {
        let (mut r, mut w) = stream.into_split();
        let reader = tokio::spawn(async move {
            let mut sink = [0u8; 1024];
            while let Ok(n) = r.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        });
        let mut tick = tokio::time::interval(every);
        for _ in 0..count {
            tick.tick().await;
            if w.write_all(chunk).await.is_err() {
                return;
            }
        }
        let _ = w.shutdown().await;
        let _ = tokio::time::timeout(WAIT, reader).await;
    })
}

/// Hands every accepted socket to the test, which then plays the endpoint.
pub fn capture_backend(at: impl BindAt) -> (Backend, mpsc::UnboundedReceiver<TcpStream>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let backend = serve(at, move |stream| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(stream);
        }
    });
    (backend, rx)
}

/// An endpoint that never answers SYNs: a listener whose accept queue is
/// full and never drained (what a SIGSTOPped process looks like from
/// outside). At a fixed address it stands in for a backend just killed.
#[derive(Debug)]
pub struct Blackhole {
    /// Where it (does not) listen.
    pub addr: SocketAddr,
    _listener: socket2::Socket,
    _fillers: Vec<TcpStream>,
}

/// Builds a [`Blackhole`] at `at`.
pub async fn blackhole(at: impl BindAt) -> Blackhole {
    use socket2::{Domain, Socket, Type};
    let want = at.bind_addr();
    let socket = Socket::new(Domain::for_address(want), Type::STREAM, None).expect("socket");
    socket.set_reuse_address(true).expect("SO_REUSEADDR");
    socket
        .bind(&want.into())
        .unwrap_or_else(|e| panic!("bind {want}: {e}"));
    socket.listen(0).expect("listen");
    let addr = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .expect("blackhole address");
    let mut fillers = Vec::new();
    for _ in 0..8 {
        match tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
            Ok(Ok(s)) => fillers.push(s),
            Ok(Err(e)) => panic!("filling the accept queue of {addr}: {e}"),
            Err(_) => {
                return Blackhole {
                    addr,
                    _listener: socket,
                    _fillers: fillers,
                }
            }
        }
    }
    panic!("the accept queue of {addr} never filled up");
}

// === UDP ===

/// A UDP backend that answers each datagram (with `name|payload`, or the
/// payload itself for [`udp_echo_backend`]) and remembers where each came
/// from; stops when dropped.
#[derive(Debug)]
pub struct UdpBackend {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The name its answers start with (empty for an echo).
    pub name: &'static str,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
    task: JoinHandle<()>,
}

impl UdpBackend {
    /// Datagrams received so far.
    pub fn received(&self) -> usize {
        self.peers().len()
    }

    /// The source address of every datagram received, in order.
    pub fn peers(&self) -> Vec<SocketAddr> {
        self.peers.lock().expect("peers lock").clone()
    }
}

impl Drop for UdpBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Answers each datagram with `name|payload`.
pub fn udp_backend(at: impl BindAt, name: &'static str) -> UdpBackend {
    let want = at.bind_addr();
    let std = std::net::UdpSocket::bind(want).unwrap_or_else(|e| panic!("bind {want}: {e}"));
    std.set_nonblocking(true).expect("nonblocking socket");
    let addr = std.local_addr().expect("backend address");
    let rt = runtime();
    let socket = {
        let _entered = rt.enter();
        UdpSocket::from_std(std).expect("register the socket")
    };
    let peers = Arc::new(Mutex::new(Vec::new()));
    let seen = peers.clone();
    let task = rt.spawn(async move {
        let mut buf = vec![0u8; 70_000];
        while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
            seen.lock().expect("peers lock").push(peer);
            let mut reply = if name.is_empty() {
                Vec::new()
            } else {
                format!("{name}|").into_bytes()
            };
            reply.extend_from_slice(&buf[..n]);
            let _ = socket.send_to(&reply, peer).await;
        }
    });
    UdpBackend {
        addr,
        name,
        peers,
        task,
    }
}

/// Answers each datagram with itself.
pub fn udp_echo_backend(at: impl BindAt) -> UdpBackend {
    udp_backend(at, "")
}
