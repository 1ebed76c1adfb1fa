//! The control plane: one desired state, the overlays beside it, and the one
//! task that turns them into the snapshot the data plane serves.
//!
//! A change takes one path through it:
//! 1. A [`Source`] (the config file, the manifests, etcd, an embedder's own)
//!    notices that its state may have changed and notifies its
//!    [`Changed`] signal; SIGHUP calls [`ControlPlane::reload`] instead.
//! 2. The rebuild task (`rebuild`) wakes, lets the burst settle, reads each
//!    changed source once (off the async runtime), and merges and validates
//!    the whole desired state with allocations kept stable. A state that
//!    fails changes nothing: it is logged, counted and recorded.
//! 3. New `[proxy]` settings go to the data plane; new probes and endpoint
//!    host names go to their overlays ([`probe`], [`hosts`]).
//! 4. The snapshot is built from the desired state and the overlays and
//!    handed to the data plane, which publishes it and reconciles its
//!    listeners. The DNS responder and `/metrics` read the published table;
//!    followers ([`follow`]: health-check ports, interface VIPs, the events
//!    log) wake on its generation; [`ControlPlane::configs`] tells the
//!    wiring about new settings.
//!
//! Probe verdicts and host-name answers take steps 2 to 4 without reading
//! any source: they wake the same task, which only rebuilds.
//!
//! Modules:
//! - `rebuild` (private): the rebuild task, the one writer of the data
//!   plane's table.
//! - `reads` (private): each source read on a thread of its own, so a slow
//!   one never holds up the others.
//! - [`probe`]: readiness probes and their overlay.
//! - [`hosts`]: endpoint host names, resolved, as an overlay.
//! - [`events`]: the recent events (Kubernetes-shaped, aggregated) and the
//!   endpoint-state follower.
//! - [`follow`]: keeping something outside the table in step with it.
//! - `vip` (feature `vip`): `vip_mode = "interface"`: the addresses served, on an interface.

pub mod events;
pub mod follow;
pub mod hosts;
mod options;
pub mod probe;
mod reads;
mod rebuild;
#[cfg(feature = "vip")]
pub mod vip;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use lb_config::source::{Changed, Source, SourceStats};
use lb_config::{Config, ConfigErrors, Loader};
use lb_core::health::PodKey;
use lb_core::Snapshot;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tracing::warn;

use crate::control::events::{EventType, Events, ObjectRef};
use crate::control::hosts::Hosts;
use crate::control::probe::{ProbeStatus, Probes};
use crate::control::reads::Reader;
use crate::control::rebuild::{first_load, Outcome, Rebuild, Work};
pub use crate::control::rebuild::{ConflictCheck, COALESCE};
use crate::dataplane::DataPlane;
use crate::lifecycle::Tasks;
pub use options::{ControlOptions, ProxyOverrides};

/// How long the first load waits for sources that read asynchronously
/// (etcd's first full read) before it starts without them.
pub const FIRST_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Counts of reload attempts, for logs and `/metrics`.
#[derive(Debug)]
pub struct ReloadCounters {
    /// Reloads that applied a new config.
    pub success: AtomicU64,
    /// Reloads that failed validation and changed nothing.
    pub failure: AtomicU64,
    /// Saves of allocations to the state file (or another store) that
    /// failed (`lb_state_file_errors_total`).
    pub state_file_errors: AtomicU64,
    /// Whether the last load failed (`lb_config_last_reload_successful` is
    /// its negation, as Prometheus exports its own). The first load, which
    /// the proxy started with, succeeded.
    pub last_failed: std::sync::atomic::AtomicBool,
    /// When the last load succeeded, in seconds since the epoch
    /// (`lb_config_last_reload_success_timestamp_seconds`); the first load
    /// counts.
    pub last_success_unix_seconds: AtomicU64,
}

impl Default for ReloadCounters {
    /// No reload yet; the load the proxy started with succeeded now.
    fn default() -> Self {
        ReloadCounters {
            success: AtomicU64::new(0),
            failure: AtomicU64::new(0),
            state_file_errors: AtomicU64::new(0),
            last_failed: std::sync::atomic::AtomicBool::new(false),
            last_success_unix_seconds: AtomicU64::new(unix_seconds_now()),
        }
    }
}

impl ReloadCounters {
    fn record_success(&self) {
        self.success.fetch_add(1, Ordering::Relaxed);
        self.last_failed.store(false, Ordering::Relaxed);
        self.last_success_unix_seconds
            .store(unix_seconds_now(), Ordering::Relaxed);
    }

    fn record_failure(&self) {
        self.failure.fetch_add(1, Ordering::Relaxed);
        self.last_failed.store(true, Ordering::Relaxed);
    }
}

/// Whole seconds since the epoch (0 for a clock before it).
fn unix_seconds_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The first desired state, ready to start a data plane with.
#[derive(Debug)]
pub struct Loaded {
    /// The validated, allocated config.
    pub config: Arc<Config>,
    /// Its snapshot: endpoint host names resolved, probed pods not serving
    /// until their probes pass (the probes run from now on).
    pub snapshot: Snapshot,
}

/// State the control plane's handle and its tasks share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) reloads: ReloadCounters,
    pub(crate) events: Arc<Events>,
    /// This node's name, the object of the proxy's own events (it follows
    /// the config).
    pub(crate) node: Mutex<String>,
    /// Why allocations are not durable now (the last save's error), for
    /// `/readyz`; `None` while saves succeed.
    pub(crate) state_file: Mutex<Option<String>>,
    /// The loader's count of failed saves when last noted.
    store_failures_seen: AtomicU64,
}

impl Shared {
    /// Takes in the loader's store health after a load: `/readyz` and the
    /// counter follow it, and a save that starts failing (or fails
    /// differently) is a warning event; one that recovers, an info event.
    pub(crate) fn note_store(&self, health: &lb_config::StoreHealth) {
        // A load that ends with a failed save counts once, however many saves
        // it tried: a lost race with another node (etcd) that a retry won is
        // not an error.
        let seen = self
            .store_failures_seen
            .swap(health.failures, Ordering::Relaxed);
        if health.error.is_some() && health.failures > seen {
            self.reloads
                .state_file_errors
                .fetch_add(1, Ordering::Relaxed);
        }
        let now = health.error.as_ref().map(ToString::to_string);
        let mut current = self.state_file.lock().unwrap_or_else(|e| e.into_inner());
        if *current == now {
            return;
        }
        match &now {
            Some(e) => self.node_event(
                EventType::Warning,
                "StateFileError",
                format!("allocations are not durable: {e}"),
            ),
            None => self.node_event(
                EventType::Normal,
                "StateFileSaved",
                "allocations are saved again",
            ),
        }
        *current = now;
    }
}

impl Shared {
    /// Records an event about the proxy itself, on this node.
    pub(crate) fn node_event(
        &self,
        event_type: EventType,
        reason: &str,
        message: impl Into<String>,
    ) {
        let node = self.node.lock().unwrap_or_else(|e| e.into_inner()).clone();
        self.events
            .record(event_type, reason, ObjectRef::node(&node), message);
    }

    /// Takes in a config about to be served: its node names the proxy's
    /// events from now on, and each LoadBalancer service it leaves without
    /// an address is a Warning `AllocationFailed` on the Service (MetalLB's
    /// event; a repeat at the next load raises its count).
    pub(crate) fn note_config(&self, config: &Config) {
        config
            .node
            .name
            .clone_into(&mut self.node.lock().unwrap_or_else(|e| e.into_inner()));
        for pending in &config.pending_addresses {
            self.events.record(
                EventType::Warning,
                pending.reason,
                ObjectRef::service(&pending.key),
                pending.message.clone(),
            );
        }
    }
}

/// What the first load leaves for [`ControlPlane::assemble`].
struct Parts {
    sources: Vec<Arc<dyn Source>>,
    work: Arc<Mutex<Work>>,
    changes: Vec<Changed>,
    wake: Arc<Notify>,
    source_tasks: Tasks,
}

/// What [`ControlPlane::serve`] hands to the rebuild task.
struct Parked {
    work: Arc<Mutex<Work>>,
    changes: Vec<Changed>,
    overlays: Changed,
    config: Arc<Config>,
    requests: mpsc::Receiver<Request>,
    wake: Arc<Notify>,
    configs: watch::Sender<Arc<Config>>,
}

type Request = rebuild::Request;

/// The running control plane. Cloning is shallow.
#[derive(Clone)]
pub struct ControlPlane {
    shared: Arc<Shared>,
    sources: Arc<Vec<Arc<dyn Source>>>,
    probes: Probes,
    hosts: Hosts,
    requests: mpsc::Sender<Request>,
    configs: watch::Receiver<Arc<Config>>,
    parked: Arc<Mutex<Option<Parked>>>,
    tasks: Tasks,
    rebuild_tasks: Tasks,
    overlay_tasks: Tasks,
    source_tasks: Tasks,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.sources.iter().map(|s| s.name()).collect();
        f.debug_struct("ControlPlane")
            .field("sources", &names)
            .field("tasks", &self.tasks)
            .finish_non_exhaustive()
    }
}

impl ControlPlane {
    /// Starts following the sources (their watches run on `tasks`), waits
    /// (bounded by [`FIRST_READ_TIMEOUT`]) for the ones that read
    /// asynchronously, reads every source once and validates the first
    /// desired state, resolving its endpoint host names. An invalid state is
    /// an error and nothing keeps running. Start a data plane with what it
    /// returns, then [`ControlPlane::serve`] it.
    pub async fn load(
        options: ControlOptions,
        tasks: Tasks,
    ) -> Result<(ControlPlane, Loaded), ConfigErrors> {
        let source_tasks = tasks.child();
        let wake = Arc::new(Notify::new());
        let inputs = options.inputs;
        let mut changes = Vec::new();
        for input in &inputs {
            let changed = Changed::new(wake.clone());
            source_tasks.spawn(
                input
                    .source
                    .clone()
                    .watch(changed.clone(), source_tasks.token().clone()),
            );
            changes.push(changed);
        }
        let sources: Vec<Arc<dyn Source>> = inputs.iter().map(|i| i.source.clone()).collect();
        wait_first_reads(&sources).await;
        let mut loader = Loader::new(options.store);
        if options.shared_store {
            loader = loader.with_shared_store();
        }
        if let Some(name) = options.node_name {
            loader = loader.with_default_node_name(name);
        }
        let work = Arc::new(Mutex::new(Work {
            inputs,
            loader,
            conflicts: options.conflicts,
            overrides: options.overrides,
        }));
        let w = work.clone();
        let outcome = tasks
            .spawn_blocking(move || first_load(&w))
            .await
            .unwrap_or_else(|e| {
                Outcome::Failed(ConfigErrors::single(lb_config::FieldError::internal(
                    "load",
                    e.to_string(),
                )))
            });
        let config = match outcome {
            Outcome::Loaded(config) => *config,
            Outcome::Failed(errors) => {
                tasks.stop().await;
                return Err(errors);
            }
            // A forced read never finds nothing new.
            Outcome::Unchanged => {
                tasks.stop().await;
                return Err(ConfigErrors::single(lb_config::FieldError::internal(
                    "load",
                    "no source was read",
                )));
            }
        };
        for w in &config.warnings {
            warn!("{w}");
        }
        let parts = Parts {
            sources,
            work,
            changes,
            wake,
            source_tasks,
        };
        Ok(ControlPlane::assemble(parts, config, tasks).await)
    }

    /// A control plane with no source: its desired state is `config`, then
    /// what [`ControlPlane::set`] gives. Probes, host names, the rebuild and
    /// the lifecycle are the same as with sources.
    pub async fn from_config(config: Config, tasks: Tasks) -> (ControlPlane, Loaded) {
        let parts = Parts {
            sources: Vec::new(),
            work: Arc::new(Mutex::new(Work {
                inputs: Vec::new(),
                loader: Loader::new(Box::<lb_core::alloc::MemoryStore>::default()),
                conflicts: None,
                overrides: ProxyOverrides::default(),
            })),
            changes: Vec::new(),
            wake: Arc::new(Notify::new()),
            source_tasks: tasks.child(),
        };
        ControlPlane::assemble(parts, config, tasks).await
    }

    /// The overlays and the channels around a first desired state.
    async fn assemble(parts: Parts, config: Config, tasks: Tasks) -> (ControlPlane, Loaded) {
        let config = Arc::new(config);
        let overlay_tasks = tasks.child();
        let overlays = Changed::new(parts.wake.clone());
        let events = Arc::new(Events::default());
        let probes = Probes::new(overlay_tasks.child(), overlays.clone(), events.clone());
        let hosts = Hosts::start(&overlay_tasks, overlays.clone());
        hosts
            .set(&config.host_endpoints, rebuild::dns_upstreams(&config))
            .await;
        probes.set(&config.probes);
        overlays.take();
        let mut services = hosts.apply(config.services.clone());
        probes.apply(&mut services);
        let snapshot = Snapshot::build(config.node.clone(), services, None, SystemTime::now());
        let (requests_tx, requests) = mpsc::channel(16);
        let (configs_tx, configs) = watch::channel(config.clone());
        let shared = Arc::new(Shared {
            reloads: ReloadCounters::default(),
            events,
            node: Mutex::new(config.node.name.clone()),
            state_file: Mutex::new(None),
            store_failures_seen: AtomicU64::new(0),
        });
        shared.note_store(rebuild::lock(&parts.work).loader.store_health());
        shared.note_config(&config);
        let control = ControlPlane {
            shared,
            sources: Arc::new(parts.sources),
            probes,
            hosts,
            requests: requests_tx,
            configs,
            parked: Arc::new(Mutex::new(Some(Parked {
                work: parts.work,
                changes: parts.changes,
                overlays,
                config: config.clone(),
                requests,
                wake: parts.wake,
                configs: configs_tx,
            }))),
            rebuild_tasks: tasks.child(),
            overlay_tasks,
            source_tasks: parts.source_tasks,
            tasks,
        };
        (control, Loaded { config, snapshot })
    }

    /// Starts the rebuild task and the probes: from now on every change of a
    /// source or an overlay reaches `dataplane`. Calling it again does
    /// nothing.
    pub fn serve(&self, dataplane: &DataPlane) {
        let parked = self.parked.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(p) = parked else { return };
        // Every source is read once more by the first pass, now that every
        // watch is set up: a change that fell between the first read and
        // its watch is not lost (a source that holds nothing new costs a
        // read and no reload).
        for changed in &p.changes {
            changed.notify();
        }
        let readers = rebuild::lock(&p.work)
            .inputs
            .iter()
            .map(|input| Reader::new(input.source.clone()))
            .collect();
        let rebuild = Rebuild {
            shared: self.shared.clone(),
            work: p.work,
            changes: p.changes,
            readers,
            arrived: Changed::new(p.wake.clone()),
            overlays: p.overlays,
            config: p.config,
            probes: self.probes.clone(),
            hosts: self.hosts.clone(),
            dataplane: dataplane.clone(),
            tasks: self.rebuild_tasks.clone(),
        };
        self.rebuild_tasks
            .spawn(rebuild.run(p.requests, p.wake, p.configs));
    }

    /// Reads every source again and applies the result, as SIGHUP does.
    /// With `force` false, sources that hold nothing new leave everything as
    /// it is. A state that fails validation changes nothing (logged,
    /// counted). Returns whether a new config was applied; false as well when
    /// the control plane is not serving.
    pub async fn reload(&self, force: bool) -> bool {
        self.ask(|reply| Request::Reload { force, reply }).await
    }

    /// Serves `config` as the desired state, as if a source had produced it
    /// (its probes start, its host names are resolved); returns once the
    /// snapshot is published, or false when the control plane is not
    /// serving. For programs that hold validated services in code (see
    /// [`ControlPlane::from_config`]); sources, if any, replace it at their
    /// next change.
    pub async fn set(&self, config: Config) -> bool {
        let config = Box::new(config);
        self.ask(|reply| Request::Set { config, reply }).await
    }

    /// Sends a request to the rebuild task and waits for its answer; false
    /// when the task does not run (not serving yet, or stopped).
    async fn ask(&self, request: impl FnOnce(oneshot::Sender<bool>) -> Request) -> bool {
        if self
            .parked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
        {
            return false;
        }
        let (reply, answer) = oneshot::channel();
        if self.requests.send(request(reply)).await.is_err() {
            return false;
        }
        answer.await.unwrap_or(false)
    }

    /// The desired state being served (the last good one).
    pub fn config(&self) -> Arc<Config> {
        self.configs.borrow().clone()
    }

    /// A receiver that sees every new desired state, for parts wired beside
    /// the control plane (the DNS responder's options, restart warnings).
    pub fn configs(&self) -> watch::Receiver<Arc<Config>> {
        self.configs.clone()
    }

    /// `Some(reason)` while a source is stale or the state file cannot be
    /// written (`/readyz` answers 503).
    pub fn readiness(&self) -> Option<String> {
        let mut reasons: Vec<String> = self.sources.iter().filter_map(|s| s.stale()).collect();
        let state_file = self
            .shared
            .state_file
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        reasons.extend(state_file);
        (!reasons.is_empty()).then(|| reasons.join("; "))
    }

    /// Every source's counters, by source name, for `/metrics`.
    pub fn source_stats(&self) -> Vec<(String, SourceStats)> {
        self.sources
            .iter()
            .filter_map(|s| s.stats().map(|st| (s.name().to_string(), st)))
            .collect()
    }

    /// The sources, in the order they were given.
    pub fn sources(&self) -> &[Arc<dyn Source>] {
        &self.sources
    }

    /// The probe verdict of every probed pod (for the admin API).
    pub fn probes(&self) -> BTreeMap<PodKey, ProbeStatus> {
        self.probes.statuses()
    }

    /// Endpoint host names and their resolutions.
    pub fn hosts(&self) -> &Hosts {
        &self.hosts
    }

    /// Reload counters.
    pub fn reloads(&self) -> &ReloadCounters {
        &self.shared.reloads
    }

    /// Recent events: reloads and their errors, allocation failures,
    /// state-file errors, endpoint changes (recorded here and by the App's
    /// followers).
    pub fn events(&self) -> &Arc<Events> {
        &self.shared.events
    }

    /// Stops the rebuild (no snapshot is published after this returns), then
    /// the probes and host-name refreshes, then the sources' watches, and
    /// waits for each.
    pub async fn stop(&self) {
        self.rebuild_tasks.stop().await;
        self.overlay_tasks.stop().await;
        self.source_tasks.stop().await;
        self.tasks.stop().await;
    }
}

/// Waits, bounded by [`FIRST_READ_TIMEOUT`] in all, for every source's first
/// read; a source still unread then is named, and the first load goes
/// without it (it reports itself stale until it catches up).
async fn wait_first_reads(sources: &[Arc<dyn Source>]) {
    let deadline = tokio::time::Instant::now() + FIRST_READ_TIMEOUT;
    for source in sources {
        let read = source.clone().first_read();
        if tokio::time::timeout_at(deadline, read).await.is_err() {
            warn!(
                source = source.name(),
                "no first read within {}s; starting without it",
                FIRST_READ_TIMEOUT.as_secs()
            );
        }
    }
}

#[cfg(test)]
mod tests;
