//! The TCP data plane: the handle the binary, the admin API and embedders use.
//!
//! [`DataPlane`] owns the published [`Table`], the service listeners, the
//! connection tasks and the settings. Config updates go through
//! [`DataPlane::apply`]; the data path never waits on them: each connection
//! `load()`s the table once, and settings sit in an `ArcSwap`. Open
//! connections watch a generation counter so that a connection whose endpoint
//! leaves the table drains, bounded by `drain_timeout`.

pub mod connections;
pub mod forward;
mod listener;
mod tcp;
pub mod udp;
mod workers;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use lb_core::{FrontendKey, NodeSpec, ProxySettings, ServiceSpec, Snapshot, Table};
use tokio::sync::{watch, OnceCell};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::dataplane::forward::Engine;
pub use crate::dataplane::listener::AcceptMode;
use crate::dataplane::listener::Listeners;

/// How often frontends that could not be bound are retried (and expired
/// affinity pins reaped).
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(1);

/// How long connections get to close after the drain timeout cut them off.
const KILL_GRACE: Duration = Duration::from_secs(1);

/// State shared by the handle, the accept loops and the connection tasks.
pub(crate) struct Shared {
    /// The published service table.
    pub(crate) table: Arc<Table>,
    /// Settings for new connections.
    pub(crate) settings: ArcSwap<ProxySettings>,
    /// Bumped on every applied snapshot; open connections watch it.
    pub(crate) generation: watch::Sender<u64>,
    /// Every connection task.
    pub(crate) connections: TaskTracker,
    /// Cancelled when the drain timeout has passed: remaining connections close.
    pub(crate) kill: CancellationToken,
    /// Open client connections.
    pub(crate) open: AtomicUsize,
    /// Frontends that could not be bound, with the error text.
    bind_errors: Mutex<BTreeMap<FrontendKey, String>>,
    /// Every UDP flow (all UDP services share the `udp_max_flows` bound).
    pub(crate) udp: crate::dataplane::udp::Flows,
    /// The forwarding engine for new connections (`Engine as u8`).
    engine: AtomicU8,
    /// Bytes moved by `splice(2)`, all connections together.
    pub(crate) spliced: AtomicU64,
    /// Open TCP connections, for `/api/v1/connections`.
    pub(crate) registry: crate::dataplane::connections::Connections,
    /// Listeners bind with `IP_FREEBIND` (`vip_mode` "freebind"/"interface").
    freebind_listeners: std::sync::atomic::AtomicBool,
}

impl Shared {
    fn bind_errors(&self) -> MutexGuard<'_, BTreeMap<FrontendKey, String>> {
        // Every mutation replaces the whole map, so a poisoned lock still holds
        // a consistent value.
        self.bind_errors.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether listeners bind with `IP_FREEBIND`.
    pub(crate) fn freebind(&self) -> bool {
        self.freebind_listeners.load(Ordering::Relaxed)
    }

    pub(crate) fn take_bind_errors(&self) -> BTreeMap<FrontendKey, String> {
        std::mem::take(&mut *self.bind_errors())
    }

    pub(crate) fn set_bind_errors(&self, errors: BTreeMap<FrontendKey, String>) {
        *self.bind_errors() = errors;
    }

    /// The forwarding engine for a new connection.
    pub(crate) fn engine(&self) -> Engine {
        match self.engine.load(Ordering::Relaxed) {
            e if e == Engine::Copy as u8 => Engine::Copy,
            e if e == Engine::Auto as u8 => Engine::Auto,
            _ => Engine::Splice,
        }
    }
}

/// How service listeners bind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BindOptions {
    /// Set `IP_FREEBIND`, so a listener binds before its address is local
    /// (`vip_mode` "freebind", and "interface", where lb-proxy adds the
    /// address itself and must not race it).
    pub freebind: bool,
    /// How TCP frontends accept and where connections run; `None` takes
    /// `LB_ACCEPT` from the environment (unset: [`AcceptMode::Single`]).
    pub accept: Option<AcceptMode>,
}

struct Inner {
    shared: Arc<Shared>,
    /// Held by whoever reconciles listeners (apply, the retry loop, shutdown);
    /// never by the data path.
    listeners: tokio::sync::Mutex<Listeners>,
    /// Cancelled when the drain starts: no listener is bound any more.
    stop_listening: CancellationToken,
    /// Set once the drain has finished; concurrent `shutdown` calls wait on it.
    drained: OnceCell<()>,
}

/// The running TCP data plane. Cloning is shallow (an `Arc` increment), so the
/// binary, the admin API and signal handlers can each hold one. Dropping the
/// last clone closes the listeners; call [`DataPlane::shutdown`] to drain.
#[derive(Clone)]
pub struct DataPlane {
    inner: Arc<Inner>,
}

impl fmt::Debug for DataPlane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataPlane")
            .field("generation", &self.inner.shared.table.load().generation())
            .field("active_connections", &self.active_connections())
            .field("draining", &self.inner.stop_listening.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl DataPlane {
    /// Starts serving `snapshot` (must be called inside a tokio runtime). Every
    /// frontend that can be bound is bound before this returns; the others are
    /// in [`DataPlane::bind_errors`] and retried every second.
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
        let udp = crate::dataplane::udp::Flows::new(&settings);
        let shared = Arc::new(Shared {
            udp,
            table: Arc::new(Table::new(snapshot)),
            settings: ArcSwap::from_pointee(settings),
            generation: watch::Sender::new(0),
            connections: TaskTracker::new(),
            kill: CancellationToken::new(),
            open: AtomicUsize::new(0),
            bind_errors: Mutex::new(BTreeMap::new()),
            engine: AtomicU8::new(Engine::from_env() as u8),
            spliced: AtomicU64::new(0),
            registry: crate::dataplane::connections::Connections::default(),
            freebind_listeners: std::sync::atomic::AtomicBool::new(options.freebind),
        });
        let inner = Arc::new(Inner {
            shared,
            listeners: tokio::sync::Mutex::new(Listeners::new(
                options.accept.unwrap_or_else(AcceptMode::from_env),
            )),
            stop_listening: CancellationToken::new(),
            drained: OnceCell::new(),
        });
        let plane = DataPlane { inner };
        plane.reconcile().await;
        tokio::spawn(maintenance(
            Arc::downgrade(&plane.inner),
            plane.inner.stop_listening.clone(),
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
        self.inner.shared.table.clone()
    }

    /// A receiver that changes whenever a new snapshot is published, for
    /// components that follow the table (the health-check node ports).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.shared.generation.subscribe()
    }

    /// Publishes `snapshot` and reconciles listeners before returning: binds
    /// what is new, closes what is gone (and TCP frontends whose service port
    /// has no endpoint, so clients are refused), leaves the rest untouched.
    /// Open connections whose endpoint left start draining.
    pub async fn apply(&self, snapshot: Snapshot) {
        let mut listeners = self.inner.listeners.lock().await;
        self.publish(snapshot);
        self.reconcile_locked(&mut listeners).await;
    }

    /// Builds the next snapshot from `services` on `node` (round-robin
    /// positions, affinity pins and counters carried over from the current
    /// one) and applies it. Concurrent updates are serialized.
    pub async fn update(&self, node: NodeSpec, services: Vec<ServiceSpec>) {
        let mut listeners = self.inner.listeners.lock().await;
        let current = self.inner.shared.table.load();
        let next = Snapshot::build(node, services, Some(&current), SystemTime::now());
        drop(current);
        self.publish(next);
        self.reconcile_locked(&mut listeners).await;
    }

    /// New settings from a reload (timeouts, limits); they apply to
    /// connections accepted from now on.
    pub fn set_settings(&self, settings: ProxySettings) {
        self.inner.shared.udp.set_limits(&settings);
        self.inner.shared.settings.store(Arc::new(settings));
    }

    /// The settings new connections use (for `/api/v1/config`).
    pub fn settings(&self) -> Arc<ProxySettings> {
        self.inner.shared.settings.load_full()
    }

    /// Frontends that could not be bound, with the error text (the admin API
    /// shows them as `"bind_errors"`). They are retried every second.
    pub fn bind_errors(&self) -> BTreeMap<FrontendKey, String> {
        self.inner.shared.bind_errors().clone()
    }

    /// UDP flows open now, all services together.
    pub fn udp_flows(&self) -> usize {
        self.inner.shared.udp.len()
    }

    /// Chooses the forwarding engine for connections accepted from now on
    /// (the default comes from `LB_FORWARD_ENGINE`, else splice on Linux);
    /// tests and benchmarks run the same traffic under each.
    pub fn set_engine(&self, engine: Engine) {
        self.inner
            .shared
            .engine
            .store(engine as u8, Ordering::Relaxed);
    }

    /// The forwarding engine new connections use.
    pub fn engine(&self) -> Engine {
        self.inner.shared.engine()
    }

    /// Bytes forwarded by `splice(2)` so far, both directions, all
    /// connections: shows whether the splice engine really carried traffic
    /// (it stays 0 under the copy loop or when splice is refused).
    pub fn spliced_bytes(&self) -> u64 {
        self.inner.shared.spliced.load(Ordering::Relaxed)
    }

    /// Open TCP connections that reached an endpoint (client, frontend,
    /// endpoint, pick reason, bytes), for `/api/v1/connections`.
    pub fn connections(&self) -> &crate::dataplane::connections::Connections {
        &self.inner.shared.registry
    }

    /// Open client connections (including ones still dialing).
    pub fn active_connections(&self) -> usize {
        self.inner.shared.open.load(Ordering::Relaxed)
    }

    /// Drains: closes every service listener at once (new connections are
    /// refused), lets open connections finish, and returns when the last one
    /// ends or `drain_timeout` has passed (then the rest are closed).
    /// Idempotent: later and concurrent calls wait for the same drain.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner
            .drained
            .get_or_init(|| async {
                inner.stop_listening.cancel();
                inner.listeners.lock().await.close_all().await;
                inner.shared.udp.clear();
                inner.shared.set_bind_errors(BTreeMap::new());
                let shared = &inner.shared;
                shared.connections.close();
                let drain_timeout = shared.settings.load().drain_timeout;
                info!(
                    open = self.active_connections(),
                    ?drain_timeout,
                    "draining: listeners closed"
                );
                if tokio::time::timeout(drain_timeout, shared.connections.wait())
                    .await
                    .is_err()
                {
                    warn!(
                        open = self.active_connections(),
                        "drain timeout passed; closing remaining connections"
                    );
                    shared.kill.cancel();
                    let _ = tokio::time::timeout(KILL_GRACE, shared.connections.wait()).await;
                }
                info!("drained");
            })
            .await;
    }

    fn publish(&self, snapshot: Snapshot) {
        let shared = &self.inner.shared;
        shared.table.store(snapshot);
        shared.generation.send_modify(|g| *g += 1);
        // UDP flows whose endpoint left move now, not on their next datagram.
        shared.udp.apply(&shared.table.load());
    }

    async fn reconcile(&self) {
        let mut listeners = self.inner.listeners.lock().await;
        self.reconcile_locked(&mut listeners).await;
    }

    async fn reconcile_locked(&self, listeners: &mut Listeners) {
        let snapshot = self.inner.shared.table.load();
        let accepting = !self.inner.stop_listening.is_cancelled();
        listeners
            .reconcile(&self.inner.shared, &snapshot, accepting)
            .await;
        tracing::debug!(
            generation = snapshot.generation(),
            listeners = listeners.len(),
            "listeners reconciled"
        );
    }
}

/// Every second, while the data plane lives and accepts: retries frontends
/// that could not be bound, and reaps expired affinity pins so clients that
/// never come back hold no memory.
async fn maintenance(inner: Weak<Inner>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(MAINTENANCE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(inner) = inner.upgrade() else { return };
        inner
            .shared
            .table
            .load()
            .reap_affinity(std::time::Instant::now());
        // A snapshot a reader still held at the last swap is freed here,
        // on this task, not by a picking connection and not only at the
        // next reload.
        inner.shared.table.collect();
        inner.shared.udp.expire();
        if !inner.shared.bind_errors().is_empty() {
            let plane = DataPlane { inner };
            plane.reconcile().await;
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
