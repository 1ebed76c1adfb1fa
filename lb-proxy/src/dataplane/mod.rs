//! The data plane: the handle the binary, the admin API and embedders use.
//!
//! [`DataPlane`] owns the published [`Table`], the service listeners, the
//! connection tasks and the settings. Config updates go through
//! [`DataPlane::apply`]; the data path never waits on them: each connection
//! `load()`s the table once, and settings sit in an `ArcSwap`. Open
//! connections watch a generation signal so that a connection whose endpoint
//! leaves the table drains, bounded by `drain_timeout`.
//!
//! Everything the data plane runs is a task of its [`Tasks`] part (the
//! maintenance loop, accept loops and UDP relays in the listeners' part,
//! connections in their own), and the per-core worker threads are joined by
//! [`DataPlane::shutdown`]: once it returns, nothing of the data plane runs.
//!
//! Map: `listener` reconciles bound sockets, `accept` runs a bound
//! frontend's task, `tcp` serves one connection, [`forward`] moves its
//! bytes, [`udp`] relays datagrams, `workers` are the per-core runtimes,
//! `shared` is the state they share, [`connections`] the registry of open
//! connections, [`descriptors`] the budget of file descriptors they hold,
//! `own` tells a destination that is lb itself (a self-loop), `throttle`
//! keeps warnings that come with every connection to one a second,
//! `proxy_header` encodes, parses and reads PROXY protocol headers, and
//! `greeting` is what a connection's dial does with them and with
//! `source_address = "client"` besides connecting.

mod accept;
pub mod access;
pub mod connections;
pub mod descriptors;
pub mod forward;
mod greeting;
mod listener;
mod own;
pub(crate) mod proxy_header;
mod shared;
mod tcp;
mod throttle;
pub mod turned_away;
pub mod udp;
mod workers;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use lb_core::{FrontendKey, NodeSpec, ProxySettings, ServiceSpec, Snapshot, Table};
use tokio::sync::{watch, OnceCell};
use tracing::{info, warn};

pub use descriptors::DescriptorBudget;
pub use lb_core::{AcceptMode, ForwardEngine};
pub use listener::BindError;
pub use shared::Ejected;

use crate::lifecycle::Tasks;
use listener::{BindErrors, Listeners};
use shared::Shared;

/// How often frontends that could not be bound are retried (and expired
/// affinity pins and UDP flows reaped).
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(1);

/// How long connections get to close after the drain timeout cut them off.
const KILL_GRACE: Duration = Duration::from_secs(1);

/// How service listeners bind (the accept mode and worker count are
/// [`ProxySettings`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BindOptions {
    /// Set `IP_FREEBIND`, so a listener binds before its address is local
    /// (`vip_mode` "freebind", and "interface", where lb-proxy adds the
    /// address itself and must not race it).
    pub freebind: bool,
    /// The process's listening sockets: frontends are claimed from what a
    /// previous owner handed over before anything is bound, and every
    /// frontend is registered there, so a successor can take it over
    /// ([`crate::handover`]).
    pub sockets: crate::handover::Sockets,
}

struct Inner {
    shared: Arc<Shared>,
    /// The data plane's part: every task it spawns is counted here.
    tasks: Tasks,
    /// Held by whoever reconciles listeners (apply, the retry loop, shutdown);
    /// never by the data path.
    listeners: tokio::sync::Mutex<Listeners>,
    /// Frontends that could not be bound.
    bind_errors: BindErrors,
    /// The accept mode and worker count the data plane started with (fixed).
    accept_mode: AcceptMode,
    workers: u32,
    /// Set once the drain has finished; concurrent `shutdown` calls wait on it.
    drained: OnceCell<()>,
}

/// The running data plane. Cloning is shallow (an `Arc` increment), so the
/// binary, the admin API and signal handlers can each hold one. Dropping the
/// last clone closes the listeners; call [`DataPlane::shutdown`] to drain.
#[derive(Clone)]
pub struct DataPlane {
    inner: Arc<Inner>,
}

impl fmt::Debug for DataPlane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataPlane")
            .field("generation", &self.inner.shared.table().load().generation())
            .field("active_connections", &self.active_connections())
            .field("draining", &self.is_draining())
            .finish_non_exhaustive()
    }
}

/// Raises this process's soft open-file limit to its hard limit and returns
/// the new soft limit. Every proxied TCP connection holds two descriptors and
/// every UDP flow one, so a proxy wants all it may have; a library does not
/// change process limits behind its embedder's back, so this is the
/// embedder's call (the binary makes it at start). Call it before
/// [`DataPlane::start`]: the data plane's descriptor budget is cut from the
/// soft limit it finds when it starts.
pub fn raise_nofile_limit() -> std::io::Result<u64> {
    crate::sys::raise_nofile_limit()
}

/// The limit a new data plane's descriptor budget is cut from: the soft
/// `RLIMIT_NOFILE` as the process has it now (read, never changed), or
/// none when it cannot be read or is unlimited.
fn start_limit() -> Option<u64> {
    match crate::sys::nofile_limit() {
        Ok(limit) => limit,
        Err(e) => {
            warn!(error = %e, "cannot read the open-file limit; no descriptor budget");
            None
        }
    }
}

impl DataPlane {
    /// Starts serving `snapshot` (must be called inside a tokio runtime). Every
    /// frontend that can be bound is bound before this returns; the others are
    /// in [`DataPlane::bind_errors`] and retried every second. The descriptor
    /// budget is cut from the soft `RLIMIT_NOFILE` read now (see
    /// [`DataPlane::set_descriptor_limit`] to choose another).
    pub async fn start(settings: ProxySettings, snapshot: Snapshot) -> DataPlane {
        DataPlane::start_with(settings, snapshot, BindOptions::default()).await
    }

    /// [`DataPlane::start`] with bind options (`IP_FREEBIND` for addresses
    /// that are not local yet: `vip_mode` "freebind" and "interface").
    pub async fn start_with(
        settings: ProxySettings,
        snapshot: Snapshot,
        options: BindOptions,
    ) -> DataPlane {
        DataPlane::start_in(&Tasks::new(), settings, snapshot, options).await
    }

    /// [`DataPlane::start_with`] as a part of `parent`: the data plane's
    /// tasks are counted by `parent` too, and cancelling `parent` closes the
    /// listeners and cuts open connections at once (a drain is
    /// [`DataPlane::shutdown`]).
    pub async fn start_in(
        parent: &Tasks,
        settings: ProxySettings,
        snapshot: Snapshot,
        options: BindOptions,
    ) -> DataPlane {
        let tasks = parent.child();
        let (accept_mode, workers) = (settings.accept_mode, settings.workers);
        let listeners = Listeners::new(accept_mode, workers, options, tasks.child(), &tasks);
        let descriptors = descriptors::Descriptors::new(start_limit());
        let shared = Arc::new(Shared::new(settings, snapshot, tasks.child(), descriptors));
        let maintenance_tasks = listeners.tasks().clone();
        let inner = Arc::new(Inner {
            shared,
            tasks,
            listeners: tokio::sync::Mutex::new(listeners),
            bind_errors: BindErrors::default(),
            accept_mode,
            workers,
            drained: OnceCell::new(),
        });
        let plane = DataPlane { inner };
        plane.reconcile().await;
        let budget = plane.descriptors();
        info!(
            limit = budget.limit,
            reserve = budget.reserve,
            in_use = budget.in_use,
            "descriptor budget"
        );
        maintenance_tasks.spawn(maintenance(
            Arc::downgrade(&plane.inner),
            maintenance_tasks.clone(),
        ));
        plane
    }

    /// The state connection tasks share, for unit tests of those tasks.
    #[cfg(test)]
    pub(crate) fn shared(&self) -> Arc<Shared> {
        self.inner.shared.clone()
    }

    /// The published table, for views (admin API, metrics) to read.
    pub fn table(&self) -> Arc<Table> {
        self.inner.shared.table().clone()
    }

    /// The endpoints dial failures eject from now on, one notice each, for
    /// the one reader that records them as events (the App); `None` once
    /// taken. Unread notices beyond a small backlog are dropped.
    pub fn take_ejections(&self) -> Option<tokio::sync::mpsc::Receiver<shared::Ejected>> {
        self.inner.shared.ejections().take()
    }

    /// A receiver that changes whenever a new snapshot is published, for
    /// components that follow the table (the health-check node ports).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.shared.generation().subscribe()
    }

    /// Publishes `snapshot` and reconciles listeners before returning: binds
    /// what is new, closes what is gone (and TCP frontends whose service port
    /// has no endpoint, so clients are refused), leaves the rest untouched.
    /// Open connections whose endpoint left start draining.
    pub async fn apply(&self, snapshot: Snapshot) {
        let mut listeners = self.inner.listeners.lock().await;
        self.inner.shared.publish(snapshot);
        self.reconcile_locked(&mut listeners).await;
    }

    /// Builds the next snapshot from `services` on `node` (round-robin
    /// positions, affinity pins and counters carried over from the current
    /// one) and applies it. Concurrent updates are serialized.
    pub async fn update(&self, node: NodeSpec, services: Vec<ServiceSpec>) {
        let mut listeners = self.inner.listeners.lock().await;
        let current = self.inner.shared.table().load();
        let next = Snapshot::build(node, services, Some(&current), SystemTime::now());
        drop(current);
        self.inner.shared.publish(next);
        self.reconcile_locked(&mut listeners).await;
    }

    /// New settings from a reload (timeouts, limits, the forwarding engine);
    /// they apply to connections accepted from now on. The accept mode and
    /// worker count are fixed when the data plane starts: a change of them
    /// is logged and kept for the next start.
    pub fn set_settings(&self, mut settings: ProxySettings) {
        let inner = &self.inner;
        if (settings.accept_mode, settings.workers) != (inner.accept_mode, inner.workers) {
            warn!(
                accept_mode = %settings.accept_mode,
                workers = settings.workers,
                "accept_mode and workers apply at the next start; keeping the ones in force"
            );
            settings.accept_mode = inner.accept_mode;
            settings.workers = inner.workers;
        }
        inner.shared.udp().set_limits(&settings);
        inner.shared.settings().store(settings);
    }

    /// The settings new connections use (for `/api/v1/config`).
    pub fn settings(&self) -> Arc<ProxySettings> {
        self.inner.shared.settings().load()
    }

    /// The forwarding engine new connections use (`forward_engine`).
    pub fn engine(&self) -> ForwardEngine {
        self.inner.shared.settings().engine()
    }

    /// Frontends that could not be bound, with their errors (the admin API
    /// shows them as `"bind_errors"`). They are retried every second.
    pub fn bind_errors(&self) -> BTreeMap<FrontendKey, BindError> {
        self.inner.bind_errors.get()
    }

    /// The descriptor budget now: the limit it is cut from, the reserve
    /// kept for everything but the data plane, and what the data plane
    /// holds (two per client connection, one per UDP flow socket, two per
    /// splice pipe, one per listener). Shown by `/api/v1/config`.
    pub fn descriptors(&self) -> DescriptorBudget {
        self.inner.shared.descriptors().budget()
    }

    /// Replaces the open-file limit the descriptor budget is cut from
    /// (`None`: no budget, no client refused for descriptors). The data
    /// plane reads the soft `RLIMIT_NOFILE` when it starts and never again:
    /// an embedder that changes the process's limit afterwards, or wants
    /// the data plane to use only a share of it, says so here. Descriptors
    /// held stay held; a lower limit refuses new clients until enough close.
    pub fn set_descriptor_limit(&self, limit: Option<u64>) {
        self.inner.shared.descriptors().set_limit(limit);
        let budget = self.descriptors();
        info!(
            limit = budget.limit,
            reserve = budget.reserve,
            in_use = budget.in_use,
            "descriptor budget"
        );
    }

    /// UDP flows open now, all services together.
    pub fn udp_flows(&self) -> usize {
        self.inner.shared.udp().len()
    }

    /// Bytes forwarded by `splice(2)` so far, both directions, all
    /// connections: shows whether the splice engine really carried traffic
    /// (it stays 0 under the copy loop or when splice is refused).
    pub fn spliced_bytes(&self) -> u64 {
        self.inner
            .shared
            .tcp()
            .spliced()
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Open TCP connections that reached an endpoint (client, frontend,
    /// endpoint, pick reason, bytes), for `/api/v1/connections`.
    pub fn connections(&self) -> &connections::Connections {
        self.inner.shared.tcp().registry()
    }

    /// Open client connections (including ones still dialing).
    pub fn active_connections(&self) -> usize {
        self.inner.shared.tcp().active()
    }

    fn is_draining(&self) -> bool {
        self.inner.drained.initialized() || self.inner.tasks.is_stopping()
    }

    /// Drains: closes every service listener at once (new connections are
    /// refused), lets open connections finish, and returns when the last one
    /// ends or `drain_timeout` has passed (then the rest are closed). When it
    /// returns, no task or thread of the data plane is left. Idempotent:
    /// later and concurrent calls wait for the same drain (as does
    /// [`DataPlane::hand_over`]).
    pub async fn shutdown(&self) {
        self.drain(None).await;
    }

    /// Drains after a successor process took the listening sockets over
    /// ([`crate::handover`]): this process stops accepting and closes its
    /// copies of the TCP listeners (which closes nothing: the successor
    /// holds them, and their accept queues with them); UDP frontends stop
    /// reading clients' datagrams (the successor reads them now) but keep
    /// relaying the replies of their open flows until those idle out. Open
    /// connections and flows finish within `drain_timeout`, as in
    /// [`DataPlane::shutdown`]. `closed` runs once no listener accepts here
    /// any more, before the wait.
    pub async fn hand_over(&self, closed: impl FnOnce() + Send + 'static) {
        self.drain(Some(Box::new(closed))).await;
    }

    /// Drains; `handed_over` says a successor took the sockets over and is
    /// called once the listeners are closed.
    async fn drain(&self, handed_over: Option<Box<dyn FnOnce() + Send>>) {
        let inner = &self.inner;
        inner
            .drained
            .get_or_init(|| async {
                let (workers, answering) = {
                    let mut listeners = inner.listeners.lock().await;
                    let answering = listeners.close_all(handed_over.is_some()).await;
                    (listeners.take_workers(), answering)
                };
                let handed_over = match handed_over {
                    Some(closed) => {
                        closed();
                        true
                    }
                    None => false,
                };
                if !handed_over {
                    inner.shared.udp().clear();
                }
                inner.bind_errors.clear();
                let tcp = inner.shared.tcp();
                let drain_timeout = inner.shared.settings().drain_timeout();
                info!(
                    open = tcp.active(),
                    udp_flows = inner.shared.udp().len(),
                    ?drain_timeout,
                    handed_over,
                    "draining: listeners closed"
                );
                let everything = async {
                    tcp.tasks().wait().await;
                    for relay in &answering {
                        relay.wait().await;
                    }
                };
                if tokio::time::timeout(drain_timeout, everything)
                    .await
                    .is_err()
                {
                    warn!(
                        open = tcp.active(),
                        udp_flows = inner.shared.udp().len(),
                        "drain timeout passed; closing remaining connections"
                    );
                    tcp.tasks().cancel();
                    for relay in &answering {
                        relay.cancel();
                    }
                    if tokio::time::timeout(KILL_GRACE, tcp.tasks().wait())
                        .await
                        .is_err()
                    {
                        warn!(
                            open = tcp.active(),
                            "connections still closing; leaving them"
                        );
                    }
                }
                inner.shared.udp().clear();
                inner.tasks.cancel();
                if let Some(workers) = workers {
                    workers.stop(&inner.tasks).await;
                }
                if tokio::time::timeout(KILL_GRACE, inner.tasks.wait())
                    .await
                    .is_err()
                {
                    warn!(
                        running = inner.tasks.running(),
                        "data-plane tasks still ending"
                    );
                }
                info!("drained");
            })
            .await;
    }

    async fn reconcile(&self) {
        let mut listeners = self.inner.listeners.lock().await;
        self.reconcile_locked(&mut listeners).await;
    }

    async fn reconcile_locked(&self, listeners: &mut Listeners) {
        let inner = &self.inner;
        let snapshot = inner.shared.table().load();
        let accepting = listeners.is_accepting();
        listeners
            .reconcile(&inner.shared, &snapshot, accepting, &inner.bind_errors)
            .await;
        tracing::debug!(
            generation = snapshot.generation(),
            listeners = listeners.len(),
            "listeners reconciled"
        );
    }
}

/// Every second, while the data plane lives and accepts: retries frontends
/// that could not be bound, reaps expired affinity pins so clients that
/// never come back hold no memory, and expires idle UDP flows. Time is
/// tokio's clock, as everywhere in the data plane.
async fn maintenance(inner: Weak<Inner>, tasks: Tasks) {
    let mut tick = tokio::time::interval(MAINTENANCE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            () = tasks.stopping() => return,
            _ = tick.tick() => {}
        }
        let Some(inner) = inner.upgrade() else { return };
        let shared = &inner.shared;
        let now = tokio::time::Instant::now().into_std();
        shared.table().load().reap_affinity(now);
        // A snapshot a reader still held at the last swap is freed here,
        // on this task, not by a picking connection and not only at the
        // next reload.
        shared.table().collect();
        shared.udp().expire();
        if !inner.bind_errors.is_empty() {
            // The shutdown holds the listeners while it waits for this task.
            let mut listeners = tokio::select! {
                () = tasks.stopping() => return,
                listeners = inner.listeners.lock() => listeners,
            };
            let plane = DataPlane {
                inner: inner.clone(),
            };
            plane.reconcile_locked(&mut listeners).await;
        }
    }
}

/// Serves `snapshot` until `shutdown` resolves, then drains (mini-redis style):
/// the binary passes a signal future, tests a oneshot.
pub async fn run(settings: ProxySettings, snapshot: Snapshot, shutdown: impl Future<Output = ()>) {
    let plane = DataPlane::start(settings, snapshot).await;
    shutdown.await;
    plane.shutdown().await;
}
