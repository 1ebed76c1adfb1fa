//! Service listeners: reconciling bound sockets with a snapshot's frontends.
//!
//! Reconciling binds what is new, closes what is gone (and TCP frontends whose
//! service port has no endpoint to pick, so clients get "connection refused";
//! UDP frontends stay bound and drop datagrams instead), and leaves the rest
//! untouched. A frontend that cannot be bound is recorded with its error
//! ([`BindError`]) and retried by the data plane's maintenance loop; it never
//! stops the other frontends.
//!
//! Every bound frontend is a part of the listeners' [`Tasks`]: its accept
//! loops (or UDP relay) are its tasks, and closing it is stopping that part.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use lb_core::{AcceptMode, FrontendKey, Protocol, ServicePortKey, Snapshot};
use tokio::runtime::Handle;
use tracing::{debug, info, warn};

use tokio_util::sync::CancellationToken;

use crate::dataplane::accept;
use crate::dataplane::shared::Shared;
use crate::dataplane::workers::Workers;
use crate::dataplane::BindOptions;
use crate::handover::{Role, Sockets};
use crate::lifecycle::Tasks;
use crate::sys;

/// A frontend that could not be bound, with the system's error: kept as a
/// value (its kind and source) so callers can match on it; shown as text
/// only where it is displayed. Cloning is shallow.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot listen on {addr}/{protocol}: {source}")]
pub struct BindError {
    /// The frontend address.
    pub addr: SocketAddr,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// The system error (address in use by a socket without `SO_REUSEPORT`,
    /// address not local, ...).
    #[source]
    pub source: Arc<io::Error>,
}

impl BindError {
    /// The kind of the system error, e.g. `AddrInUse`.
    pub fn kind(&self) -> io::ErrorKind {
        self.source.kind()
    }

    /// Whether `other` failed the same way (the retry loop warns once per
    /// new error, not every second).
    fn same_as(&self, other: &BindError) -> bool {
        self.source.kind() == other.source.kind()
            && self.source.raw_os_error() == other.source.raw_os_error()
    }
}

/// The frontends that could not be bound, readable without the listeners'
/// lock (the admin API reads them while a reconcile runs).
#[derive(Debug, Default)]
pub(crate) struct BindErrors(Mutex<BTreeMap<FrontendKey, BindError>>);

impl BindErrors {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<FrontendKey, BindError>> {
        // Every mutation replaces the whole map, so a poisoned lock still
        // holds a consistent value.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every frontend that could not be bound, with its error.
    pub(crate) fn get(&self) -> BTreeMap<FrontendKey, BindError> {
        self.lock().clone()
    }

    /// Whether every frontend is bound.
    pub(crate) fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn replace(&self, errors: BTreeMap<FrontendKey, BindError>) {
        *self.lock() = errors;
    }

    /// Forgets every error (the data plane stops; nothing is retried).
    pub(crate) fn clear(&self) {
        self.lock().clear();
    }
}

/// The listeners currently bound, by frontend, and where their tasks run.
pub(crate) struct Listeners {
    /// Each bound frontend's part of `tasks`.
    bound: HashMap<FrontendKey, Tasks>,
    mode: AcceptMode,
    freebind: bool,
    /// Where frontends are claimed from (a hand-over) and registered.
    sockets: Sockets,
    /// Cancelled when a successor took the sockets over: UDP relays stop
    /// reading clients and answer their open flows only.
    handed_over: CancellationToken,
    /// Set once every listener was closed (a drain): nothing binds again.
    closed: bool,
    /// The listeners' part of the data plane (the maintenance loop runs
    /// here too); cancelled when dropped.
    tasks: Tasks,
    /// The per-core runtimes (`percore` only).
    workers: Option<Workers>,
    /// TCP service ports whose frontends are kept closed because they have
    /// no endpoint to pick: each is warned about once when that starts.
    without_endpoints: HashSet<ServicePortKey>,
}

impl std::fmt::Debug for Listeners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listeners")
            .field("bound", &self.bound.keys().collect::<Vec<_>>())
            .field("mode", &self.mode)
            .finish()
    }
}

impl Drop for Listeners {
    fn drop(&mut self) {
        // The data plane was dropped without a shutdown: stop accepting.
        self.tasks.cancel();
    }
}

impl Listeners {
    /// No listener yet; `mode` says how TCP frontends will accept, `bind`
    /// whether they bind with `IP_FREEBIND` and where they are claimed from
    /// and registered. For `percore` the `workers` threads start here
    /// (counted by `plane`, the data plane's part); if they cannot,
    /// frontends accept as with `single`.
    pub(crate) fn new(
        mode: AcceptMode,
        workers: u32,
        bind: BindOptions,
        tasks: Tasks,
        plane: &Tasks,
    ) -> Listeners {
        let workers = match mode {
            AcceptMode::PerCore => match Workers::start(Workers::count(workers), plane) {
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
            freebind: bind.freebind,
            sockets: bind.sockets,
            handed_over: CancellationToken::new(),
            closed: false,
            tasks,
            workers,
            without_endpoints: HashSet::new(),
        }
    }

    /// The listeners' part, for tasks that live as long as they accept.
    pub(crate) fn tasks(&self) -> &Tasks {
        &self.tasks
    }

    /// Whether reconciling may bind: not once a drain closed everything.
    pub(crate) fn is_accepting(&self) -> bool {
        !self.closed && !self.tasks.is_stopping()
    }

    /// Binds a TCP frontend: one socket (`single`) or one `SO_REUSEPORT`
    /// socket per runtime worker or per-core worker, each with its accept
    /// loop on that worker. Every socket is bound (and listening) before this
    /// returns, so the frontend is reachable at once, before the loops run;
    /// a sibling that cannot be bound only means fewer accept loops.
    ///
    /// Sockets a previous owner handed over for this address are used
    /// first, all of them (closing one would reset the connections in its
    /// queue), and only the missing siblings are bound. Returns whether any
    /// was handed over.
    fn spawn_tcp(&self, shared: &Arc<Shared>, key: FrontendKey, part: &Tasks) -> io::Result<bool> {
        let bind = || sys::bind_service_listener(key.addr, self.freebind);
        let mut sockets = self.sockets.take_tcp(Role::Service, key.addr);
        let inherited = !sockets.is_empty();
        if sockets.is_empty() {
            sockets.push(bind()?);
        }
        let targets: Vec<Handle> = match (&self.workers, self.mode) {
            (Some(workers), _) => workers.handles().to_vec(),
            (None, AcceptMode::Reuseport) => {
                let current = Handle::current();
                let n = current.metrics().num_workers().max(1);
                vec![current; n]
            }
            (None, _) => vec![Handle::current()],
        };
        while sockets.len() < targets.len() {
            match bind() {
                Ok(sibling) => sockets.push(sibling),
                Err(e) => {
                    warn!(frontend = %key.addr, error = %e, "cannot bind a sibling listener; accepting on fewer sockets");
                    break;
                }
            }
        }
        for (socket, handle) in sockets.into_iter().zip(targets.iter().cycle()) {
            let accepting = accept::accept_loop(
                shared.clone(),
                key,
                socket,
                self.sockets.clone(),
                part.token().clone(),
            );
            part.spawn_on(accepting, handle);
        }
        Ok(inherited)
    }

    /// Binds a UDP frontend: one socket (or the ones handed over for its
    /// address) and its relay task, on a per-core worker in turn
    /// (`percore`) or the caller's runtime. Returns whether the socket was
    /// handed over.
    fn spawn_udp(&self, shared: &Arc<Shared>, key: FrontendKey, part: &Tasks) -> io::Result<bool> {
        let mut sockets = self.sockets.take_udp(Role::Service, key.addr);
        let inherited = !sockets.is_empty();
        if sockets.is_empty() {
            sockets.push(sys::bind_udp_frontend(key.addr, self.freebind)?);
        }
        for socket in sockets {
            let handle = match &self.workers {
                Some(workers) => workers.next().clone(),
                None => Handle::current(),
            };
            let relay = accept::serve_udp(
                shared.clone(),
                key,
                socket,
                self.sockets.clone(),
                accept::RelayStops {
                    stop: part.token().clone(),
                    handed_over: self.handed_over.clone(),
                },
            );
            part.spawn_on(relay, &handle);
        }
        Ok(inherited)
    }

    /// Makes the bound listeners match `snapshot` (nothing at all when
    /// `accepting` is false), and records what could not be bound in
    /// `errors`. Returns once closed listeners are really closed.
    pub(crate) async fn reconcile(
        &mut self,
        shared: &Arc<Shared>,
        snapshot: &Snapshot,
        accepting: bool,
        errors: &BindErrors,
    ) {
        self.warn_without_endpoints(snapshot, accepting);
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
            if let Some(part) = self.bound.remove(&key) {
                part.stop().await;
                if key.protocol == Protocol::Udp {
                    shared.udp().close_frontend(key.addr);
                }
                info!(frontend = %key.addr, protocol = %key.protocol, "closed listener");
            }
        }
        let previous = errors.get();
        let mut failed = BTreeMap::new();
        for key in desired {
            if self.bound.contains_key(&key) {
                continue;
            }
            let part = self.tasks.child();
            let spawned = match key.protocol {
                Protocol::Tcp => self.spawn_tcp(shared, key, &part),
                Protocol::Udp => self.spawn_udp(shared, key, &part),
            };
            match spawned {
                Ok(inherited) => {
                    self.bound.insert(key, part);
                    // Who owns the port, in words another operator can
                    // act on: two proxies sharing it (SO_REUSEPORT) each
                    // say so in their log.
                    let service = snapshot
                        .frontend(key.addr, key.protocol)
                        .map(|e| e.port.key().to_string())
                        .unwrap_or_default();
                    info!(
                        frontend = %key.addr,
                        protocol = %key.protocol,
                        %service,
                        node = %snapshot.node().name,
                        pid = std::process::id(),
                        inherited,
                        "listening"
                    );
                }
                Err(source) => {
                    let error = BindError {
                        addr: key.addr,
                        protocol: key.protocol,
                        source: Arc::new(source),
                    };
                    if previous.get(&key).is_some_and(|p| p.same_as(&error)) {
                        debug!(frontend = %key.addr, %error, "bind retry failed");
                    } else {
                        warn!(frontend = %key.addr, %error, "cannot bind frontend; retrying every second");
                    }
                    failed.insert(key, error);
                }
            }
        }
        errors.replace(failed);
    }

    /// Warns once for each TCP service port whose frontends start being
    /// kept closed because it has no endpoint to pick: its clients get
    /// "connection refused" from the kernel, which lb never sees, so this
    /// is the one line that says why (naming one of its frontends).
    fn warn_without_endpoints(&mut self, snapshot: &Snapshot, accepting: bool) {
        let mut now = HashSet::new();
        if accepting {
            for (k, e) in snapshot.frontends() {
                if k.protocol != Protocol::Tcp || e.has_endpoints() || now.contains(e.port.key()) {
                    continue;
                }
                if !self.without_endpoints.contains(e.port.key()) {
                    warn!(service = %e.port.key(), frontend = %k.addr,
                        "no endpoints: listener closed, clients get connection refused");
                }
                now.insert(e.port.key().clone());
            }
        }
        self.without_endpoints = now;
    }

    /// Closes every listener (a drain: new connections are refused at once)
    /// and stops the listeners' part (the maintenance loop included).
    ///
    /// After a hand-over (`handed_over`), the successor holds the same
    /// sockets, so closing ours refuses nothing; UDP relays stop reading
    /// clients but keep answering their open flows, and are returned (still
    /// running) for the drain to wait on, with the maintenance loop that
    /// expires those flows.
    pub(crate) async fn close_all(&mut self, handed_over: bool) -> Vec<Tasks> {
        self.closed = true;
        if !handed_over {
            self.tasks.cancel();
        }
        self.handed_over.cancel();
        let mut answering = Vec::new();
        for (key, part) in self.bound.drain() {
            if handed_over && key.protocol == Protocol::Udp {
                info!(frontend = %key.addr, protocol = %key.protocol,
                    "handed over; answering open flows until they idle out");
                answering.push(part);
                continue;
            }
            part.stop().await;
            info!(frontend = %key.addr, protocol = %key.protocol, handed_over, "closed listener");
        }
        if !handed_over {
            self.tasks.stop().await;
        }
        answering
    }

    /// The per-core workers, for the end of a shutdown to join.
    pub(crate) fn take_workers(&mut self) -> Option<Workers> {
        self.workers.take()
    }

    /// How many listeners are bound.
    pub(crate) fn len(&self) -> usize {
        self.bound.len()
    }
}
