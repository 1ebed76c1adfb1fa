//! Moving bytes between the two legs of a proxied TCP connection.
//!
//! [`Engine`] picks how: a userspace copy loop, or `splice(2)` through a
//! pooled pipe on Linux (`crate::dataplane::forward::splice`), which keeps the payload in the
//! kernel. Every engine keeps the same promises:
//!
//! - bytes arrive exactly and in order, and are counted into the endpoint's
//!   `bytes_rx` (client → endpoint) and `bytes_tx` (endpoint → client) chunk by
//!   chunk while the connection runs, not only at its end;
//! - a FIN is passed on as a FIN (`shutdown(Write)` on the other leg) and the
//!   other direction keeps flowing; it then has `half_close_timeout` to finish;
//!   never `shutdown(Both)` on the first EOF, which would cut off the reply;
//! - a reset (an error reading or writing either leg: `ECONNRESET`, `EPIPE`) is
//!   passed on as a reset: both legs are closed with `SO_LINGER` 0;
//! - with `idle_timeout`, no byte either way for that long closes both legs;
//! - the data plane's kill switch (end of a drain) closes both legs, and so
//!   does the connection's endpoint leaving the table (or taking weight 0)
//!   for `drain_timeout` (`Drain`).
//!
//! A connection waits on one timer whatever its state (the earliest of the
//! idle, half-close and drain deadlines), because every idle connection keeps
//! its waiting state in memory (BENCHMARKS.md, "TCP").

#[cfg(target_os = "linux")]
pub mod splice;

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use lb_core::stats::{self, EndpointStats};
use lb_core::{ServicePortKey, Table};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::sys;

/// Size of each direction's buffer in the copy engine: two per connection,
/// so memory per connection is bounded.
pub const COPY_BUFFER_SIZE: usize = 32 * 1024;

/// The environment variable that forces an engine for a whole process
/// (`copy`, `splice` or `auto`), so the same test suite and benchmarks can run under
/// each without a config change.
pub const ENGINE_ENV: &str = "LB_FORWARD_ENGINE";

/// How bytes move between client and endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Engine {
    /// A userspace copy loop, one buffer per direction. Works everywhere.
    Copy,
    /// `splice(2)` socket → pipe → socket (Linux): no copy through user
    /// space, and a pipe is held only while bytes are in flight. Falls back
    /// to [`Engine::Copy`] where splice is unavailable or refused.
    Splice,
    /// Splice for bulk, a plain read and write for small messages (HAProxy's
    /// `splice-auto`): a direction reads into a per-thread buffer; a read that
    /// does not fill it proves the socket drained, which saves splice's extra
    /// `EAGAIN` probe per message (a quarter of the system calls of a small
    /// request/response exchange); the first read that fills it switches the
    /// direction to splice for good. The default on Linux.
    Auto,
}

impl Default for Engine {
    /// Auto on Linux (splice for bulk, fewer system calls for small
    /// messages: BENCHMARKS.md, "TCP"), the copy loop elsewhere.
    fn default() -> Self {
        if cfg!(target_os = "linux") {
            Engine::Auto
        } else {
            Engine::Copy
        }
    }
}

impl Engine {
    /// Parses `copy`, `splice` or `auto` (the values of [`ENGINE_ENV`]).
    pub fn parse(s: &str) -> Option<Engine> {
        match s.trim().to_ascii_lowercase().as_str() {
            "copy" => Some(Engine::Copy),
            "splice" => Some(Engine::Splice),
            "auto" => Some(Engine::Auto),
            _ => None,
        }
    }

    /// The engine [`ENGINE_ENV`] asks for, or the default when it is unset
    /// or unreadable (logged).
    pub fn from_env() -> Engine {
        match std::env::var(ENGINE_ENV) {
            Ok(v) => Engine::parse(&v).unwrap_or_else(|| {
                tracing::warn!(value = %v, "{ENGINE_ENV} is not copy, splice or auto; using the default");
                Engine::default()
            }),
            Err(_) => Engine::default(),
        }
    }

    /// Short name for logs and benchmarks.
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Copy => "copy",
            Engine::Splice => "splice",
            Engine::Auto => "auto",
        }
    }
}

/// The timers that bound one forwarded connection (from `[proxy]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// No byte either way for this long closes both legs; `None` = never.
    pub idle_timeout: Option<Duration>,
    /// After the first FIN, the other direction has this long to finish.
    pub half_close_timeout: Duration,
}

/// One connection's own byte counters (`/api/v1/connections`, the
/// per-connection log event): two atomics, where the endpoint's counters
/// carry a histogram too.
#[derive(Debug, Default)]
pub struct ConnBytes {
    /// Bytes from the client so far.
    pub rx: AtomicU64,
    /// Bytes to the client so far.
    pub tx: AtomicU64,
}

impl Clone for ConnBytes {
    /// A reading: the copy no longer follows the connection.
    fn clone(&self) -> Self {
        ConnBytes {
            rx: AtomicU64::new(self.rx.load(Ordering::Relaxed)),
            tx: AtomicU64::new(self.tx.load(Ordering::Relaxed)),
        }
    }
}

/// What closes a connection from outside: the data plane's kill switch, and
/// its endpoint leaving the table (or taking weight 0) for `timeout`; an
/// endpoint that comes back before the deadline cancels it. Everything is
/// borrowed from the connection task, so watching costs one receiver and
/// no allocation.
#[derive(Debug)]
pub(crate) struct Drain<'a> {
    /// Changes whenever the data plane publishes a snapshot. Subscribe
    /// before the connection loads the table, so no publish is missed.
    pub(crate) generation: watch::Receiver<u64>,
    /// The published table, read again on every change.
    pub(crate) table: &'a Table,
    /// The connection's service port.
    pub(crate) key: &'a ServicePortKey,
    /// The connection's endpoint.
    pub(crate) endpoint: SocketAddr,
    /// How long a connection may stay once its endpoint left.
    pub(crate) timeout: Duration,
    /// Cancelled when the data plane's drain timeout has passed.
    pub(crate) kill: &'a CancellationToken,
}

impl Drain<'_> {
    /// Whether the published table still sends traffic to the endpoint.
    fn endpoint_stays(&self) -> bool {
        self.table
            .load()
            .port(self.key)
            .and_then(|p| p.index_of(self.endpoint).map(|i| p.endpoint(i).weight > 0))
            .unwrap_or(false)
    }
}

/// Why a forwarded connection ended (for logs and tests).
#[derive(Debug)]
#[non_exhaustive]
pub enum Outcome {
    /// Both sides sent FIN and every byte was delivered.
    Closed,
    /// A leg failed (reset, broken pipe); the reset was passed on to the other.
    Reset(io::Error),
    /// No traffic for `idle_timeout`.
    IdleTimeout,
    /// One side sent FIN and the other did not finish within `half_close_timeout`.
    HalfCloseTimeout,
    /// The drain deadline passed or the data plane's kill switch fired.
    Stopped,
}

impl Outcome {
    /// Short name for logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Closed => "closed",
            Outcome::Reset(_) => "reset",
            Outcome::IdleTimeout => "idle_timeout",
            Outcome::HalfCloseTimeout => "half_close_timeout",
            Outcome::Stopped => "stopped",
        }
    }
}

impl Engine {
    /// Forwards between `client` and `upstream` until both sides are done, a
    /// leg fails, a timer in `limits` runs out or `stop` resolves; then closes
    /// both legs (with a reset when a leg failed) and says why. Bytes are
    /// counted into the endpoint's `stats` and this connection's own `conn`
    /// (`/api/v1/connections`, the per-connection log event). Bytes moved by
    /// `splice(2)` are also added to `spliced`, so callers can tell which
    /// engine really carried the traffic.
    ///
    /// Takes the sockets by value and everything else by reference: the
    /// future is part of every open connection's memory.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn run(
        self,
        mut client: TcpStream,
        mut upstream: TcpStream,
        limits: &Limits,
        stats: &EndpointStats,
        conn: &ConnBytes,
        spliced: &AtomicU64,
        drain: &mut Drain<'_>,
    ) -> Outcome {
        let outcome = match self {
            Engine::Copy => copy(&mut client, &mut upstream, limits, stats, conn, drain).await,
            Engine::Splice | Engine::Auto => {
                #[cfg(target_os = "linux")]
                {
                    let auto = self == Engine::Auto;
                    match crate::dataplane::forward::splice::run(
                        &client, &upstream, limits, stats, conn, spliced, drain, auto,
                    )
                    .await
                    {
                        Ok(outcome) => outcome,
                        // Nothing was read yet: the copy loop starts from a clean slate.
                        Err(_refused) => {
                            copy(&mut client, &mut upstream, limits, stats, conn, drain).await
                        }
                    }
                }
                #[cfg(not(target_os = "linux"))]
                {
                    let _ = spliced;
                    copy(&mut client, &mut upstream, limits, stats, conn, drain).await
                }
            }
        };
        if let Outcome::Reset(_) = outcome {
            sys::reset(client);
            sys::reset(upstream);
        }
        outcome
    }
}

// === copy engine ===

/// One direction of the copy loop.
struct Pump {
    buf: Box<[u8]>,
    pos: usize,
    cap: usize,
    eof: bool,
    done: bool,
}

impl Pump {
    fn new() -> Self {
        Pump {
            buf: vec![0; COPY_BUFFER_SIZE].into_boxed_slice(),
            pos: 0,
            cap: 0,
            eof: false,
            done: false,
        }
    }

    /// Copies from `r` to `w` until `r` is at EOF and `w` is shut down
    /// (`Ready(Ok)`), a leg fails (`Ready(Err)`) or neither can progress.
    /// Sets `active` when a byte moved. When the other direction is already
    /// done (`last`), `w` is not shut down: both sockets close right after,
    /// and `close(2)` sends the same FIN, one system call fewer.
    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        r: &mut R,
        w: &mut W,
        counters: [&AtomicU64; 2],
        active: &mut bool,
        last: bool,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        loop {
            if self.pos == self.cap && !self.eof {
                let mut rb = ReadBuf::new(&mut self.buf);
                ready!(Pin::new(&mut *r).poll_read(cx, &mut rb))?;
                let n = rb.filled().len();
                if n == 0 {
                    self.eof = true;
                } else {
                    self.pos = 0;
                    self.cap = n;
                    *active = true;
                }
            }
            while self.pos < self.cap {
                let n = ready!(Pin::new(&mut *w).poll_write(cx, &self.buf[self.pos..self.cap]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.pos += n;
                for counter in counters {
                    stats::add(counter, n as u64);
                }
                *active = true;
            }
            if self.eof {
                // FIN passed on as FIN: shutdown(Write) of the other leg only.
                if !last {
                    ready!(Pin::new(&mut *w).poll_shutdown(cx))?;
                }
                self.done = true;
                return Poll::Ready(Ok(()));
            }
        }
    }
}

/// What the pumps report to the timer loop.
pub(crate) enum Step {
    /// Both directions finished.
    Finished,
    /// The first direction finished: start the half-close timer.
    HalfClosed,
    /// A leg failed.
    Failed(io::Error),
}

async fn copy(
    client: &mut TcpStream,
    upstream: &mut TcpStream,
    limits: &Limits,
    stats: &EndpointStats,
    conn: &ConnBytes,
    drain: &mut Drain<'_>,
) -> Outcome {
    let (mut client_r, mut client_w) = client.split();
    let (mut upstream_r, mut upstream_w) = upstream.split();
    let mut rx = Pump::new();
    let mut tx = Pump::new();
    drive(limits, drain, |cx, half_closed, active| {
        let a = rx.poll_copy(
            cx,
            &mut client_r,
            &mut upstream_w,
            [&stats.bytes_rx, &conn.rx],
            active,
            tx.done,
        );
        let b = tx.poll_copy(
            cx,
            &mut upstream_r,
            &mut client_w,
            [&stats.bytes_tx, &conn.tx],
            active,
            rx.done,
        );
        if let Poll::Ready(Err(e)) = a {
            return Poll::Ready(Step::Failed(e));
        }
        if let Poll::Ready(Err(e)) = b {
            return Poll::Ready(Step::Failed(e));
        }
        if rx.done && tx.done {
            return Poll::Ready(Step::Finished);
        }
        if (rx.done || tx.done) && !half_closed {
            return Poll::Ready(Step::HalfClosed);
        }
        Poll::Pending
    })
    .await
}

/// The timer loop every engine shares: polls `pumps` (told whether the
/// half-close timer runs, and setting `active` when a byte moved) against
/// one timer (the earliest of the idle, half-close and drain deadlines), the
/// kill switch and the snapshot generation.
pub(crate) async fn drive<F>(limits: &Limits, drain: &mut Drain<'_>, mut pumps: F) -> Outcome
where
    F: FnMut(&mut Context<'_>, bool, &mut bool) -> Poll<Step>,
{
    let mut last_activity = Instant::now();
    let mut half_close_due: Option<Instant> = None;
    let mut drain_due: Option<Instant> = None;
    let mut watching = true;
    // The idle deadline moves with every byte; the timer is not reset each
    // time but checked when it fires (and then set to the real deadline).
    let mut timer_at = limits.idle_timeout.map(|t| last_activity + t);
    let timer = tokio::time::sleep_until(timer_at.unwrap_or(last_activity));
    tokio::pin!(timer);

    loop {
        let earliest = [half_close_due, drain_due]
            .into_iter()
            .flatten()
            .chain(timer_at)
            .min();
        if earliest != timer_at {
            timer_at = earliest;
            if let Some(at) = timer_at {
                timer.as_mut().reset(at);
            }
        }
        let step = poll_fn(|cx| {
            let mut active = false;
            let step = pumps(cx, half_close_due.is_some(), &mut active);
            if active {
                last_activity = Instant::now();
            }
            step
        });
        tokio::select! {
            step = step => match step {
                Step::Finished => return Outcome::Closed,
                Step::Failed(e) => return Outcome::Reset(e),
                Step::HalfClosed => {
                    half_close_due = Some(Instant::now() + limits.half_close_timeout);
                }
            },
            () = &mut timer, if timer_at.is_some() => {
                let now = Instant::now();
                if drain_due.is_some_and(|d| d <= now) {
                    return Outcome::Stopped;
                }
                if half_close_due.is_some_and(|d| d <= now) {
                    return Outcome::HalfCloseTimeout;
                }
                let idle_due = limits.idle_timeout.map(|t| last_activity + t);
                if idle_due.is_some_and(|d| d <= now) {
                    return Outcome::IdleTimeout;
                }
                // Only the idle deadline moves later; the others are
                // picked up again at the top of the loop.
                timer_at = idle_due;
                if let Some(at) = timer_at {
                    timer.as_mut().reset(at);
                }
            }
            () = drain.kill.cancelled() => return Outcome::Stopped,
            changed = drain.generation.changed(), if watching => {
                if changed.is_err() {
                    watching = false;
                    continue;
                }
                if drain.endpoint_stays() {
                    drain_due = None;
                } else if drain_due.is_none() {
                    debug!(service = %drain.key, endpoint = %drain.endpoint,
                        drain_timeout = ?drain.timeout, "endpoint left; draining");
                    drain_due = Some(Instant::now() + drain.timeout);
                }
            }
        }
    }
}
