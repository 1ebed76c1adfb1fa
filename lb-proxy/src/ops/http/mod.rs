//! Serving an axum [`Router`] on a bound listener, with every connection a
//! task of lb's own and bounded: the admin API and the health-check node
//! ports both go through here, and both face clients lb does not control.
//!
//! `axum::serve` would serve the router too, but it spawns each connection
//! detached from any [`Tasks`] and sets no limit; here the accept loop and
//! every connection are counted by the caller's [`Tasks`], and stopping it
//! (cancel, then wait) closes idle connections and unfinished heads at once
//! and lets a request in flight finish its answer. Every connection is bounded three ways
//! ([`ConnectionOptions`]): a request head must be complete within
//! `header_timeout`, a kept-alive connection with no request for
//! `idle_timeout` is closed (the two clocks are [`clock`]'s, not hyper's one
//! `header_read_timeout`), and past [`ConnectionSlots`]' count a new
//! connection is closed as it is accepted, before anything is read from it.

mod clock;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper::service::{service_fn, Service};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::lifecycle::Tasks;
use clock::{Answered, Clock, Expired, Watched};

/// How long to wait after a failed accept (out of file descriptors, say)
/// before accepting again, instead of spinning on the error.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// How often a server full of connections says so at warn: once per
/// refused connection would let the clients that fill it fill the log too.
const FULL_WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// How a server treats its connections.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionOptions {
    /// Whether a connection may carry more than one request.
    pub(crate) keep_alive: bool,
    /// How long a client has to send a complete request head, from the
    /// accept or from the first byte after an idle spell.
    pub(crate) header_timeout: Duration,
    /// How long a kept-alive connection may go without a request.
    pub(crate) idle_timeout: Duration,
}

/// The connections a server (or a group of servers) may hold at once: one
/// slot per connection, taken at the accept and given back when it closes.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionSlots {
    slots: Arc<Semaphore>,
    max: usize,
}

impl ConnectionSlots {
    /// Room for `max` connections at once (0 refuses every connection).
    pub(crate) fn new(max: usize) -> ConnectionSlots {
        let max = max.min(Semaphore::MAX_PERMITS);
        ConnectionSlots {
            slots: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// A slot, or `None` when every one is taken.
    fn take(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().try_acquire_owned().ok()
    }
}

/// Accepts connections on `listener` and serves `router` on each, each
/// connection spawned on `tasks` while `slots` has room (closed at once
/// otherwise), until `tasks` is told to stop. Returns without waiting for
/// the connections: the owner's [`Tasks::stop`] (or [`Tasks::wait`]) does.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    options: ConnectionOptions,
    slots: ConnectionSlots,
    tasks: &Tasks,
) {
    let local = listener.local_addr().ok();
    let mut warned: Option<tokio::time::Instant> = None;
    loop {
        let accepted = tokio::select! {
            () = tasks.stopping() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let Some(slot) = slots.take() else {
                    // Closed before any read: a full server costs a flood
                    // one accept and one close per connection, nothing more.
                    drop(stream);
                    if warned.is_none_or(|at| at.elapsed() >= FULL_WARNING_INTERVAL) {
                        warned = Some(tokio::time::Instant::now());
                        warn!(?local, %peer, max = slots.max, "HTTP connection closed at accept: the server holds as many connections as it may (said at most once a minute)");
                    }
                    continue;
                };
                tasks.spawn(connection(
                    stream,
                    router.clone(),
                    options,
                    slot,
                    tasks.token().clone(),
                ));
            }
            Err(e) => {
                debug!(error = %e, "accept failed");
                tokio::select! {
                    () = tasks.stopping() => return,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                }
            }
        }
    }
}

/// Serves one connection until the client closes it, a phase outlasts its
/// timeout, or `stop`: then a connection that is not answering a request
/// (idle, or with a head still coming) closes at once and a request in
/// flight gets its answer first. Holds its `_slot` until it ends.
async fn connection(
    stream: TcpStream,
    router: Router,
    options: ConnectionOptions,
    _slot: OwnedSemaphorePermit,
    stop: CancellationToken,
) {
    let clock = Clock::start();
    let routes = TowerToHyperService::new(router);
    let answering = clock.clone();
    let service = service_fn(move |request| {
        let answering = answering.request();
        let answer = routes.call(request);
        async move {
            let response = answer.await?;
            Ok::<_, Infallible>(response.map(|body| Answered::new(body, answering)))
        }
    });
    let mut builder = http1::Builder::new();
    // hyper's own header timer is off: it would also time idle spells (see
    // `clock`).
    builder
        .keep_alive(options.keep_alive)
        .header_read_timeout(None);
    let conn = builder.serve_connection(TokioIo::new(Watched::new(stream, clock.clone())), service);
    tokio::pin!(conn);
    let expired = clock.expired(options.header_timeout, options.idle_timeout);
    tokio::pin!(expired);
    let mut stopping = false;
    loop {
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    debug!(error = %e, "http connection ended with an error");
                }
                return;
            }
            () = stop.cancelled(), if !stopping => {
                // A head still coming is no request in flight: hyper would
                // wait for it (up to the header timeout) before closing.
                if !clock.answering() {
                    return;
                }
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            why = expired.as_mut() => {
                match why {
                    Expired::Head => debug!(timeout = ?options.header_timeout, "http connection closed: no complete request head in time"),
                    Expired::Idle => debug!(timeout = ?options.idle_timeout, "http connection closed: idle"),
                }
                return;
            }
        }
    }
}
