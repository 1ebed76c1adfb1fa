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
//!   other direction keeps flowing for as long as it moves bytes: it is cut
//!   only when it stays silent for `half_close_timeout` (an inactivity timer,
//!   as HAProxy's `timeout client-fin`/`server-fin`, not a deadline from the
//!   FIN); never `shutdown(Both)` on the first EOF, which would cut off the
//!   reply;
//! - a reset (an error reading or writing either leg: `ECONNRESET`, `EPIPE`) is
//!   passed on as a reset: both legs are closed with `SO_LINGER` 0;
//! - every end lb decides while a byte may still be in flight is a reset on
//!   both legs too, so no application takes a cut stream for a complete one:
//!   the half-close timeout, the endpoint leaving the table (or taking
//!   weight 0) for `drain_timeout` (`Drain`), and the data plane's kill
//!   switch (the end of the shutdown drain) ([`Outcome::cuts`]);
//! - with `idle_timeout`, no byte either way for that long closes both legs
//!   with a FIN: nothing was in flight.
//!
//! A connection waits on one timer whatever its state (the earliest of the
//! idle, half-close and drain deadlines), because every idle connection keeps
//! its waiting state in memory (BENCHMARKS.md, "TCP"). Bytes move the idle
//! and half-close deadlines later without touching the timer: it is checked
//! when it fires, and set again to the deadline then in force.

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
    /// After the first FIN, the direction still open may go this long
    /// without moving a byte; then both legs are reset.
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
    /// No traffic either way for `idle_timeout`; both legs get a FIN.
    IdleTimeout,
    /// One side sent FIN and the direction still open moved no byte for
    /// `half_close_timeout`; both legs are reset.
    HalfCloseTimeout,
    /// The endpoint left the table (or took weight 0) and `drain_timeout`
    /// passed; both legs are reset.
    Drained,
    /// The data plane's kill switch fired (the SIGTERM drain deadline);
    /// both legs are reset.
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

    /// Whether the connection ends with a reset on both legs: every end lb
    /// decides while a byte may still be in flight, so neither application
    /// takes a cut stream for a complete one. Only the idle timeout (nothing
    /// moved either way) and a clean close end with FIN.
    pub fn cuts(&self) -> bool {
        match self {
            Outcome::Closed | Outcome::IdleTimeout => false,
            Outcome::Reset(_) | Outcome::HalfCloseTimeout | Outcome::Drained | Outcome::Stopped => {
                true
            }
        }
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
    if outcome.cuts() {
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

/// The deadlines of one connection, kept as the instants they count from:
/// the idle and half-close deadlines move with every byte, so they are
/// computed when needed rather than stored.
#[derive(Debug, Clone, Copy)]
struct Deadlines {
    /// When a byte last moved, either way (after the first FIN, only the
    /// direction still open is polled, so this is its last byte).
    last_byte: Instant,
    /// When the first direction finished (its FIN was passed on).
    half_closed: Option<Instant>,
    /// When the connection's endpoint left the table, plus `drain_timeout`.
    drain: Option<Instant>,
}

impl Deadlines {
    fn new(now: Instant) -> Self {
        Deadlines {
            last_byte: now,
            half_closed: None,
            drain: None,
        }
    }

    /// The half-close deadline: `half_close_timeout` without a byte in the
    /// direction still open, counted from its last byte or from the FIN,
    /// whichever came later.
    fn half_close(&self, limits: &Limits) -> Option<Instant> {
        self.half_closed
            .map(|fin| fin.max(self.last_byte) + limits.half_close_timeout)
    }

    fn idle(&self, limits: &Limits) -> Option<Instant> {
        limits.idle_timeout.map(|t| self.last_byte + t)
    }

    /// The earliest deadline, if any.
    fn next(&self, limits: &Limits) -> Option<Instant> {
        [self.drain, self.half_close(limits), self.idle(limits)]
            .into_iter()
            .flatten()
            .min()
    }

    /// Which deadline has passed at `now`, if any (a drain first: it is
    /// the operator's decision, the others only the peers' silence).
    fn expired(&self, limits: &Limits, now: Instant) -> Option<Outcome> {
        let passed = |d: Option<Instant>| d.is_some_and(|d| d <= now);
        if passed(self.drain) {
            Some(Outcome::Drained)
        } else if passed(self.half_close(limits)) {
            Some(Outcome::HalfCloseTimeout)
        } else if passed(self.idle(limits)) {
            Some(Outcome::IdleTimeout)
        } else {
            None
        }
    }
}

/// The one forwarding loop: polls `pump` against one timer (the earliest of
/// the idle, half-close and drain deadlines), the kill switch and the
/// snapshot generation, and decides when and why the connection ends.
///
/// The timer is not reset for every byte: bytes only move the idle and
/// half-close deadlines later, so the timer may fire early, and is then
/// set to the deadline in force. It is reset at once only when a deadline
/// moves earlier (a FIN, a drain starting).
pub(crate) async fn drive(pump: &mut impl Pump, limits: &Limits, drain: &mut Drain<'_>) -> Outcome {
    let mut done = [false; 2];
    let mut deadlines = Deadlines::new(Instant::now());
    let mut watching = true;
    let mut timer_at = deadlines.next(limits);
    let timer = tokio::time::sleep_until(timer_at.unwrap_or(deadlines.last_byte));
    tokio::pin!(timer);

    loop {
        let next = deadlines.next(limits);
        if let Some(at) = next.filter(|at| timer_at.is_none_or(|t| *at < t)) {
            timer_at = Some(at);
            timer.as_mut().reset(at);
        }
        let half_closed = deadlines.half_closed.is_some();
        let step = poll_fn(|cx| {
            let mut active = false;
            let step = poll_step(pump, cx, &mut done, half_closed, &mut active);
            if active {
                deadlines.last_byte = Instant::now();
            }
            step
        });
        tokio::select! {
            step = step => match step {
                Step::Finished => return Outcome::Closed,
                Step::Failed(e) => return Outcome::Reset(e),
                Step::HalfClosed => deadlines.half_closed = Some(Instant::now()),
            },
            () = &mut timer, if timer_at.is_some() => {
                if let Some(outcome) = deadlines.expired(limits, Instant::now()) {
                    return outcome;
                }
                // Bytes moved the deadline later (or a drain was called
                // off): wait for the one in force now.
                timer_at = deadlines.next(limits);
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
                    deadlines.drain = None;
                } else if deadlines.drain.is_none() {
                    debug!(endpoint = %drain.endpoint, drain_timeout = ?drain.timeout,
                        "endpoint left; draining");
                    deadlines.drain = Some(Instant::now() + drain.timeout);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        idle_timeout: Some(Duration::from_secs(3600)),
        half_close_timeout: Duration::from_secs(60),
    };

    #[test]
    fn the_half_close_deadline_counts_silence_in_the_open_direction() {
        let start = Instant::now();
        let mut d = Deadlines::new(start);
        assert_eq!(d.next(&LIMITS), Some(start + Duration::from_secs(3600)));
        // The FIN starts it...
        d.half_closed = Some(start + Duration::from_secs(10));
        assert_eq!(d.next(&LIMITS), Some(start + Duration::from_secs(70)));
        // ...each byte after it moves it...
        d.last_byte = start + Duration::from_secs(65);
        assert_eq!(d.next(&LIMITS), Some(start + Duration::from_secs(125)));
        assert!(d
            .expired(&LIMITS, start + Duration::from_secs(124))
            .is_none());
        // ...and silence for the whole timeout cuts the connection.
        let cut = d.expired(&LIMITS, start + Duration::from_secs(125));
        assert!(matches!(cut, Some(Outcome::HalfCloseTimeout)));
        assert!(cut.is_some_and(|o| o.cuts()));
    }

    #[test]
    fn a_drain_deadline_comes_first_and_only_the_idle_timeout_ends_with_a_fin() {
        let start = Instant::now();
        let mut d = Deadlines::new(start);
        d.half_closed = Some(start);
        d.drain = Some(start + Duration::from_secs(60));
        let end = d.expired(&LIMITS, start + Duration::from_secs(60));
        assert!(matches!(end, Some(Outcome::Drained)));
        let idle = Deadlines::new(start).expired(&LIMITS, start + Duration::from_secs(3600));
        assert!(matches!(idle, Some(Outcome::IdleTimeout)));
        assert!(!Outcome::IdleTimeout.cuts() && !Outcome::Closed.cuts());
        assert!(Outcome::Stopped.cuts() && Outcome::Drained.cuts());
    }
}
