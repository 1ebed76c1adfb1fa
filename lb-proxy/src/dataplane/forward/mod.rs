//! Moving bytes between the two legs of a proxied TCP connection.
//!
//! [`ForwardEngine`] picks how: a user-space copy loop ([`copy`]), or
//! `splice(2)` through a pooled pipe on Linux ([`splice`]), which keeps the
//! payload in the kernel. The engines are `Pump`s: each moves bytes one
//! direction at a time when asked; `drive` owns the loop, the timer and
//! the rules every engine keeps:
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

pub mod copy;
#[cfg(target_os = "linux")]
pub mod splice;

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use lb_core::stats::EndpointStats;
use lb_core::{ServicePortKey, Table};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;

pub use lb_core::ForwardEngine;

use crate::sys;

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

/// Where a connection's bytes are counted: its endpoint's counters, its own,
/// and the data plane's `splice(2)` total (which shows whether splice really
/// carried the traffic); and the data plane's descriptor budget, which new
/// splice pipes are taken from. Borrowed from the connection task.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Counters<'a> {
    pub(crate) endpoint: &'a EndpointStats,
    pub(crate) conn: &'a ConnBytes,
    pub(crate) spliced: &'a AtomicU64,
    pub(crate) descriptors: &'a crate::dataplane::descriptors::Descriptors,
}

impl<'a> Counters<'a> {
    /// The two counters bytes moving in `dir` go to.
    fn of(&self, dir: Direction) -> [&'a AtomicU64; 2] {
        match dir {
            Direction::ToEndpoint => [&self.endpoint.bytes_rx, &self.conn.rx],
            Direction::ToClient => [&self.endpoint.bytes_tx, &self.conn.tx],
        }
    }
}

/// One direction of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// Client → endpoint (`bytes_rx`).
    ToEndpoint,
    /// Endpoint → client (`bytes_tx`).
    ToClient,
}

impl Direction {
    const BOTH: [Direction; 2] = [Direction::ToEndpoint, Direction::ToClient];

    fn index(self) -> usize {
        self as usize
    }
}

/// A forwarding engine as [`drive`] sees it: moves bytes in one direction
/// when asked, and never decides when the connection ends.
pub(crate) trait Pump {
    /// Moves bytes in `dir` until its source is at EOF and the FIN was passed
    /// on (`Ready(Ok)`), a leg fails (`Ready(Err)`) or neither side can
    /// progress (`Pending`, with wake-ups registered). Sets `active` when a
    /// byte moved. When the other direction is already done (`last`), the
    /// FIN need not be sent: both sockets close right after, and `close(2)`
    /// sends the same FIN, one system call fewer.
    fn poll_direction(
        &mut self,
        cx: &mut Context<'_>,
        dir: Direction,
        last: bool,
        active: &mut bool,
    ) -> Poll<io::Result<()>>;
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
    /// The endpoint left the table (or took weight 0) and `drain_timeout` passed.
    Drained,
    /// The data plane's kill switch fired (the SIGTERM drain deadline).
    Stopped,
}

impl Outcome {
    /// The cause counted in `lb_connections_closed_total{cause}`.
    pub fn cause(&self) -> lb_core::stats::CloseCause {
        use lb_core::stats::CloseCause;
        match self {
            Outcome::Closed => CloseCause::Closed,
            Outcome::Reset(_) => CloseCause::Reset,
            Outcome::IdleTimeout => CloseCause::IdleTimeout,
            Outcome::HalfCloseTimeout => CloseCause::HalfCloseTimeout,
            Outcome::Drained => CloseCause::Drained,
            Outcome::Stopped => CloseCause::Stopped,
        }
    }

    /// Short name for logs (the cause's label).
    pub fn as_str(&self) -> &'static str {
        self.cause().as_str()
    }
}

/// Forwards between `client` and `upstream` with `engine` until both sides
/// are done, a leg fails, a timer in `limits` runs out or `drain` says stop;
/// then closes both legs (with a reset when a leg failed) and says why.
///
/// Takes the sockets by value and everything else by reference: the
/// future is part of every open connection's memory.
pub(crate) async fn forward(
    engine: ForwardEngine,
    mut client: TcpStream,
    mut upstream: TcpStream,
    limits: &Limits,
    counters: Counters<'_>,
    drain: &mut Drain<'_>,
) -> Outcome {
    let outcome = match engine {
        ForwardEngine::Copy => copy_loop(&mut client, &mut upstream, limits, counters, drain).await,
        ForwardEngine::Splice | ForwardEngine::Auto => {
            let auto = engine == ForwardEngine::Auto;
            splice_or_copy(&mut client, &mut upstream, limits, counters, drain, auto).await
        }
    };
    if let Outcome::Reset(_) = outcome {
        sys::reset(client);
        sys::reset(upstream);
    }
    outcome
}

async fn copy_loop(
    client: &mut TcpStream,
    upstream: &mut TcpStream,
    limits: &Limits,
    counters: Counters<'_>,
    drain: &mut Drain<'_>,
) -> Outcome {
    let mut pump = copy::CopyPump::new(client, upstream, counters);
    drive(&mut pump, limits, drain).await
}

/// The splice engine (`auto`: small bursts through a buffer); the copy loop
/// where splice is refused, also for a connection whose first splice was
/// refused before a byte moved (it starts from a clean slate).
#[cfg(target_os = "linux")]
async fn splice_or_copy(
    client: &mut TcpStream,
    upstream: &mut TcpStream,
    limits: &Limits,
    counters: Counters<'_>,
    drain: &mut Drain<'_>,
    auto: bool,
) -> Outcome {
    if !splice::refused() {
        let mut pump = splice::SplicePump::new(client, upstream, counters, auto);
        match drive(&mut pump, limits, drain).await {
            Outcome::Reset(e) if pump.refused_before_moving(&e) => splice::note_refused(&e),
            other => return other,
        }
    }
    copy_loop(client, upstream, limits, counters, drain).await
}

#[cfg(not(target_os = "linux"))]
async fn splice_or_copy(
    client: &mut TcpStream,
    upstream: &mut TcpStream,
    limits: &Limits,
    counters: Counters<'_>,
    drain: &mut Drain<'_>,
    _auto: bool,
) -> Outcome {
    copy_loop(client, upstream, limits, counters, drain).await
}

/// What one poll of both directions found.
enum Step {
    /// Both directions finished.
    Finished,
    /// The first direction finished: start the half-close timer.
    HalfClosed,
    /// A leg failed.
    Failed(io::Error),
}

/// Polls both directions of `pump`: records which are done, says when the
/// first and then the second finished, or which leg failed.
fn poll_step(
    pump: &mut impl Pump,
    cx: &mut Context<'_>,
    done: &mut [bool; 2],
    half_closed: bool,
    active: &mut bool,
) -> Poll<Step> {
    let mut failed = None;
    for dir in Direction::BOTH {
        if done[dir.index()] {
            continue;
        }
        let last = done[1 - dir.index()];
        match pump.poll_direction(cx, dir, last, active) {
            Poll::Ready(Ok(())) => done[dir.index()] = true,
            Poll::Ready(Err(e)) => {
                failed.get_or_insert(e);
            }
            Poll::Pending => {}
        }
    }
    if let Some(e) = failed {
        return Poll::Ready(Step::Failed(e));
    }
    match (done[0] && done[1], done[0] || done[1]) {
        (true, _) => Poll::Ready(Step::Finished),
        (false, true) if !half_closed => Poll::Ready(Step::HalfClosed),
        _ => Poll::Pending,
    }
}

/// The one forwarding loop: polls `pump` against one timer (the earliest of
/// the idle, half-close and drain deadlines), the kill switch and the
/// snapshot generation, and decides when and why the connection ends.
pub(crate) async fn drive(pump: &mut impl Pump, limits: &Limits, drain: &mut Drain<'_>) -> Outcome {
    let mut done = [false; 2];
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
        let half_closed = half_close_due.is_some();
        let step = poll_fn(|cx| {
            let mut active = false;
            let step = poll_step(pump, cx, &mut done, half_closed, &mut active);
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
                    return Outcome::Drained;
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
                    debug!(endpoint = %drain.endpoint, drain_timeout = ?drain.timeout,
                        "endpoint left; draining");
                    drain_due = Some(Instant::now() + drain.timeout);
                }
            }
        }
    }
}
