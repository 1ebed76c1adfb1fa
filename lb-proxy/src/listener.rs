//! Service listeners: reconciling bound sockets with a snapshot's frontends,
//! and the accept loop of each.
//!
//! Reconciling binds what is new, closes what is gone (and TCP frontends whose
//! service port has no endpoint to pick, so clients get "connection refused";
//! UDP frontends stay bound and drop datagrams instead), and leaves the rest
//! untouched. A frontend that cannot be bound is recorded
//! with its error and retried by the data plane's maintenance loop; it never
//! stops the other frontends.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::Arc;
use std::time::Duration;

use lb_core::{FrontendKey, Protocol, Snapshot};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, info, warn};

use crate::dataplane::Shared;
use crate::error::Error;
use crate::{sys, tcp, udp};

/// Pause after an accept error that is not about one connection (out of file
/// descriptors, memory), so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// One bound listener and its accept loop. Dropping it stops the loop.
struct Bound {
    _stop: DropGuard,
    task: JoinHandle<()>,
}

/// The listeners currently bound, by frontend.
#[derive(Default)]
pub(crate) struct Listeners {
    bound: HashMap<FrontendKey, Bound>,
}

impl std::fmt::Debug for Listeners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listeners")
            .field("bound", &self.bound.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Listeners {
    /// Makes the bound listeners match `snapshot` (nothing at all when
    /// `accepting` is false), and records what could not be bound in
    /// `shared.bind_errors`. Returns once closed listeners are really closed.
    pub(crate) async fn reconcile(
        &mut self,
        shared: &Arc<Shared>,
        snapshot: &Snapshot,
        accepting: bool,
    ) {
        let mut desired: Vec<FrontendKey> = if accepting {
            snapshot
                .frontends()
                .filter(|(k, e)| k.protocol == Protocol::Udp || e.has_endpoints())
                .map(|(k, _)| *k)
                .collect()
        } else {
            Vec::new()
        };
        desired.sort();
        let gone: Vec<FrontendKey> = self
            .bound
            .keys()
            .filter(|k| desired.binary_search(k).is_err())
            .copied()
            .collect();
        for key in gone {
            if let Some(bound) = self.bound.remove(&key) {
                close(bound).await;
                if key.protocol == Protocol::Udp {
                    shared.udp.close_frontend(key.addr);
                }
                info!(frontend = %key.addr, protocol = %key.protocol, "closed listener");
            }
        }
        let previous = shared.take_bind_errors();
        let mut errors = BTreeMap::new();
        for key in desired {
            if self.bound.contains_key(&key) {
                continue;
            }
            let stop = CancellationToken::new();
            let spawned = match key.protocol {
                Protocol::Tcp => {
                    sys::bind_service_listener(key.addr, shared.freebind()).map(|listener| {
                        tokio::spawn(accept_loop(shared.clone(), key, listener, stop.clone()))
                    })
                }
                Protocol::Udp => {
                    sys::bind_udp_frontend(key.addr, shared.freebind()).map(|socket| {
                        tokio::spawn(udp::serve_frontend(
                            shared.clone(),
                            key,
                            socket,
                            stop.clone(),
                        ))
                    })
                }
            };
            match spawned {
                Ok(task) => {
                    self.bound.insert(
                        key,
                        Bound {
                            _stop: stop.drop_guard(),
                            task,
                        },
                    );
                    info!(frontend = %key.addr, protocol = %key.protocol, "listening");
                }
                Err(source) => {
                    let text = Error::Bind {
                        addr: key.addr,
                        protocol: key.protocol,
                        source,
                    }
                    .to_string();
                    if previous.get(&key) != Some(&text) {
                        warn!(frontend = %key.addr, error = %text, "cannot bind frontend; retrying every second");
                    } else {
                        debug!(frontend = %key.addr, error = %text, "bind retry failed");
                    }
                    errors.insert(key, text);
                }
            }
        }
        shared.set_bind_errors(errors);
    }

    /// Closes every listener (a drain: new connections are refused at once).
    pub(crate) async fn close_all(&mut self) {
        for (key, bound) in self.bound.drain() {
            close(bound).await;
            info!(frontend = %key.addr, protocol = %key.protocol, "closed listener");
        }
    }

    /// How many listeners are bound.
    pub(crate) fn len(&self) -> usize {
        self.bound.len()
    }
}

/// Stops an accept loop and waits until its socket is closed.
async fn close(bound: Bound) {
    let Bound { _stop, task } = bound;
    drop(_stop);
    if let Err(e) = task.await {
        warn!(error = %e, "accept loop ended abnormally");
    }
}

/// The environment variable that chooses how TCP listeners accept:
/// `single` (the default: one socket and one accept loop per frontend) or
/// `reuseport` (one `SO_REUSEPORT` socket and accept loop per runtime worker,
/// the kernel spreading new connections over them). See ARCHITECTURE.md,
/// "Performance", for why single is the default.
pub(crate) const ACCEPT_ENV: &str = "LB_ACCEPT";

/// How many sockets and accept loops a TCP frontend gets (see [`ACCEPT_ENV`]).
fn accept_workers() -> usize {
    match std::env::var(ACCEPT_ENV).as_deref().map(str::trim) {
        Ok("reuseport") => tokio::runtime::Handle::current()
            .metrics()
            .num_workers()
            .max(1),
        Ok("single") | Err(_) => 1,
        Ok(other) => {
            warn!(
                value = other,
                "{ACCEPT_ENV} is neither single nor reuseport; using single"
            );
            1
        }
    }
}

/// Accepts on `listener` until `stop`, spawning one task per connection at once
/// (dials never run on this loop). With `LB_ACCEPT=reuseport`, first binds one
/// sibling socket per further runtime worker at the same address and runs an
/// accept loop on each (the first socket is bound before this task starts, so
/// the frontend is reachable at once); returns once every one is closed.
async fn accept_loop(
    shared: Arc<Shared>,
    key: FrontendKey,
    listener: TcpListener,
    stop: CancellationToken,
) {
    let mut siblings = Vec::new();
    for _ in 1..accept_workers() {
        match sys::bind_sibling(&listener) {
            Ok(sibling) => siblings.push(tokio::spawn(accept_on(
                shared.clone(),
                key,
                sibling,
                stop.clone(),
            ))),
            Err(e) => {
                warn!(frontend = %key.addr, error = %e, "cannot bind a sibling listener; accepting on fewer sockets");
                break;
            }
        }
    }
    accept_on(shared, key, listener, stop).await;
    for sibling in siblings {
        if let Err(e) = sibling.await {
            warn!(frontend = %key.addr, error = %e, "sibling accept loop ended abnormally");
        }
    }
}

/// One accept loop on one socket.
async fn accept_on(
    shared: Arc<Shared>,
    key: FrontendKey,
    listener: TcpListener,
    stop: CancellationToken,
) {
    // Accepted sockets inherit TCP_NODELAY from the listener on Linux, which
    // saves the proxy one setsockopt(2) per connection (`tcp::serve`).
    if let Err(e) = socket2::SockRef::from(&listener).set_tcp_nodelay(true) {
        debug!(frontend = %key.addr, error = %e, "cannot set TCP_NODELAY on the listener");
    }
    loop {
        let accepted = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                shared
                    .connections
                    .spawn(tcp::serve(shared.clone(), key, stream, peer));
            }
            Err(e) if is_per_connection(&e) => {
                debug!(frontend = %key.addr, error = %e, "accept failed for one connection");
            }
            Err(e) => {
                warn!(frontend = %key.addr, error = %e, "accept failed; backing off");
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(ACCEPT_ERROR_BACKOFF) => {}
                }
            }
        }
    }
}

/// Accept errors that concern one connection only (it went away before being
/// accepted), as opposed to the process (file descriptors, memory).
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}
