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
use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, info, warn};

use crate::dataplane::workers::Workers;
use crate::dataplane::Shared;
use crate::dataplane::{tcp, udp};
use crate::error::Error;
use crate::sys;

/// Pause after an accept error that is not about one connection (out of file
/// descriptors, memory), so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// One bound frontend and its accept loops (one per socket) or UDP relay
/// task. Dropping it stops them.
struct Bound {
    _stop: DropGuard,
    tasks: Vec<JoinHandle<()>>,
}

/// The listeners currently bound, by frontend, and where their tasks run.
pub(crate) struct Listeners {
    bound: HashMap<FrontendKey, Bound>,
    mode: AcceptMode,
    /// The per-core runtimes (`percore` only). Declared after `bound`, so
    /// on drop the accept loops are told to stop before the workers are.
    workers: Option<Workers>,
}

impl std::fmt::Debug for Listeners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listeners")
            .field("bound", &self.bound.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Listeners {
    /// No listener yet; `mode` says how TCP frontends will accept. For
    /// `percore` the worker threads start here; if they cannot, frontends
    /// accept as with `single`.
    pub(crate) fn new(mode: AcceptMode) -> Listeners {
        let workers = match mode {
            AcceptMode::PerCore => match Workers::start(Workers::default_count()) {
                Ok(workers) => Some(workers),
                Err(e) => {
                    warn!(error = %e, "cannot start the per-core workers; accepting on one loop per listener");
                    None
                }
            },
            AcceptMode::Single | AcceptMode::Reuseport => None,
        };
        Listeners {
            bound: HashMap::new(),
            mode,
            workers,
        }
    }

    /// Binds a TCP frontend: one socket (`single`) or one `SO_REUSEPORT`
    /// socket per runtime worker or per-core worker, each with its accept
    /// loop on that worker. Every socket is bound (and listening) before this
    /// returns, so the frontend is reachable at once, before the loops run;
    /// a sibling that cannot be bound only means fewer accept loops.
    fn spawn_tcp(
        &self,
        shared: &Arc<Shared>,
        key: FrontendKey,
        stop: &CancellationToken,
    ) -> io::Result<Vec<JoinHandle<()>>> {
        let bind = || sys::bind_service_listener(key.addr, shared.freebind());
        let first = bind()?;
        let targets: Vec<Handle> = match (&self.workers, self.mode) {
            (Some(workers), _) => workers.handles().to_vec(),
            (None, AcceptMode::Reuseport) => {
                let current = Handle::current();
                let n = current.metrics().num_workers().max(1);
                vec![current; n]
            }
            (None, _) => vec![Handle::current()],
        };
        let mut sockets = vec![first];
        while sockets.len() < targets.len() {
            match bind() {
                Ok(sibling) => sockets.push(sibling),
                Err(e) => {
                    warn!(frontend = %key.addr, error = %e, "cannot bind a sibling listener; accepting on fewer sockets");
                    break;
                }
            }
        }
        Ok(sockets
            .into_iter()
            .zip(targets)
            .map(|(socket, handle)| {
                handle.spawn(accept_loop(shared.clone(), key, socket, stop.clone()))
            })
            .collect())
    }

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
                Protocol::Tcp => self.spawn_tcp(shared, key, &stop),
                Protocol::Udp => {
                    sys::bind_udp_frontend(key.addr, shared.freebind()).map(|socket| {
                        let handle = match &self.workers {
                            Some(workers) => workers.next().clone(),
                            None => Handle::current(),
                        };
                        vec![handle.spawn(serve_udp(shared.clone(), key, socket, stop.clone()))]
                    })
                }
            };
            match spawned {
                Ok(tasks) => {
                    self.bound.insert(
                        key,
                        Bound {
                            _stop: stop.drop_guard(),
                            tasks,
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

/// Stops a frontend's tasks and waits until its sockets are closed.
async fn close(bound: Bound) {
    let Bound { _stop, tasks } = bound;
    drop(_stop);
    for task in tasks {
        if let Err(e) = task.await {
            warn!(error = %e, "accept loop ended abnormally");
        }
    }
}

/// The environment variable that chooses how TCP listeners accept (see
/// [`AcceptMode`]); ARCHITECTURE.md, "Performance", says why the default is
/// what it is.
pub(crate) const ACCEPT_ENV: &str = "LB_ACCEPT";

/// How TCP frontends accept connections and where their tasks run, chosen
/// once per data plane ([`crate::BindOptions::accept`], else `LB_ACCEPT`).
/// ARCHITECTURE.md, "Performance", says which measured fastest where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptMode {
    /// One socket and one accept loop per frontend, on the caller's runtime;
    /// connection tasks run on any of its workers. The default.
    Single,
    /// One `SO_REUSEPORT` socket and accept loop per worker of the caller's
    /// runtime; connection tasks still run on any worker.
    Reuseport,
    /// One current-thread runtime per core on threads of the data plane's own
    /// (`LB_WORKERS` of them, default one per CPU), each with its own
    /// `SO_REUSEPORT` socket per frontend: a connection stays on the thread
    /// that accepted it. UDP frontends are placed on the workers in turn.
    PerCore,
}

impl AcceptMode {
    /// The mode `LB_ACCEPT` asks for (`single`, `reuseport` or `percore`);
    /// unset means `single`.
    pub fn from_env() -> AcceptMode {
        match std::env::var(ACCEPT_ENV).as_deref().map(str::trim) {
            Ok("single") | Err(_) => AcceptMode::Single,
            Ok("reuseport") => AcceptMode::Reuseport,
            Ok("percore") => AcceptMode::PerCore,
            Ok(other) => {
                warn!(
                    value = other,
                    "{ACCEPT_ENV} is none of single, reuseport, percore; using single"
                );
                AcceptMode::Single
            }
        }
    }
}

/// A UDP frontend's relay, on the runtime it was spawned on (the socket is
/// registered there).
async fn serve_udp(
    shared: Arc<Shared>,
    key: FrontendKey,
    socket: std::net::UdpSocket,
    stop: CancellationToken,
) {
    match tokio::net::UdpSocket::from_std(socket) {
        Ok(socket) => udp::serve_frontend(shared, key, socket, stop).await,
        Err(e) => warn!(frontend = %key.addr, error = %e, "cannot register a UDP frontend"),
    }
}

/// An accept loop on the runtime it was spawned on (the socket is registered
/// there, so its connections' tasks run there too).
async fn accept_loop(
    shared: Arc<Shared>,
    key: FrontendKey,
    socket: std::net::TcpListener,
    stop: CancellationToken,
) {
    match TcpListener::from_std(socket) {
        Ok(listener) => accept_on(shared, key, listener, stop).await,
        Err(e) => warn!(frontend = %key.addr, error = %e, "cannot register a listener"),
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
