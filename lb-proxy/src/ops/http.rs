//! Serving an axum [`Router`] on a bound listener, with every connection a
//! task of lb's own: the admin API and the health-check node ports both go
//! through here.
//!
//! `axum::serve` would do the same, but it spawns each connection detached
//! from any [`Tasks`], so nothing could say when the last one ended; here the
//! accept loop and every connection are counted by the caller's [`Tasks`],
//! and stopping it (cancel, then wait) closes idle connections at once and
//! lets a request in flight finish its answer.

use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::lifecycle::Tasks;

/// How long to wait after a failed accept (out of file descriptors, say)
/// before accepting again, instead of spinning on the error.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// How a server treats its connections.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionOptions {
    /// Whether a connection may carry more than one request.
    pub(crate) keep_alive: bool,
    /// How long a client has to send a request head.
    pub(crate) header_timeout: Duration,
}

/// Accepts connections on `listener` and serves `router` on each, each
/// connection spawned on `tasks`, until `tasks` is told to stop. Returns
/// without waiting for the connections: the owner's [`Tasks::stop`] (or
/// [`Tasks::wait`]) does.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    options: ConnectionOptions,
    tasks: &Tasks,
) {
    loop {
        let accepted = tokio::select! {
            () = tasks.stopping() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                tasks.spawn(connection(
                    stream,
                    router.clone(),
                    options,
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

/// Serves one connection until the client closes it, or until `stop`: then
/// an idle connection closes at once and a request in flight gets its answer
/// first.
async fn connection(
    stream: TcpStream,
    router: Router,
    options: ConnectionOptions,
    stop: CancellationToken,
) {
    let mut builder = http1::Builder::new();
    builder
        .keep_alive(options.keep_alive)
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_timeout);
    let conn = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(router));
    tokio::pin!(conn);
    let served = tokio::select! {
        served = conn.as_mut() => served,
        () = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = served {
        debug!(error = %e, "http connection ended with an error");
    }
}
