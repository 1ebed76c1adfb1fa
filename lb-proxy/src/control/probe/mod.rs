//! Readiness probes and the endpoint-state overlay: lb-proxy as the kubelet
//! (it probes pods) and the endpoints controller (it takes the not-ready ones
//! out of their services).
//!
//! [`Health`] keeps the desired state (the services and probes a source
//! produced) and beside it the [`ProbeStatus`] of every probed pod, keyed by
//! pod `namespace/name`, with its reason and since when. The snapshot the data
//! plane serves is always `desired + overlay`: a reload replaces the desired
//! state and rebuilds at once; probe results mark the overlay dirty and a
//! single rebuild task applies them, at most one rebuild per
//! [`COALESCE`], so a probe storm does not rebuild the table a thousand times.
//!
//! Each probe runs in its own task, off the data path: it first runs after
//! its initial delay plus a stable per-pod offset within the period
//! ([`lb_core::health::start_offset`]), so pods do not probe in lock-step, and
//! at most [`MAX_CONCURRENT_PROBES`] run at once.

mod run;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use lb_core::health::{start_offset, PodKey, ProbeSpec};
use lb_core::{NodeSpec, ServiceSpec};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::dataplane::DataPlane;

/// Probes running at the same moment, all pods together; more wait their
/// turn (their results come a little later, never all at once).
pub const MAX_CONCURRENT_PROBES: usize = 64;

/// Shortest time between two rebuilds caused by probe results.
pub const COALESCE: Duration = Duration::from_millis(50);

/// The probe verdict on one pod, as the overlay keeps it and the admin API
/// shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeStatus {
    /// The pod is ready by its probe (thresholds applied).
    pub ready: bool,
    /// What the last probe found (`HTTP 500`, `connection refused`, ...);
    /// `not probed yet` before the first one.
    pub message: String,
    /// When `ready` last changed (or the probe was first seen).
    pub since: SystemTime,
    /// Probes run so far.
    pub probes: u64,
}

/// The desired state as a source last produced it.
#[derive(Debug, Default)]
struct Desired {
    node: NodeSpec,
    services: Vec<ServiceSpec>,
    probes: BTreeMap<PodKey, ProbeSpec>,
}

struct Worker {
    spec: ProbeSpec,
    task: JoinHandle<()>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Inner {
    dataplane: DataPlane,
    desired: Mutex<Desired>,
    overlay: Mutex<BTreeMap<PodKey, ProbeStatus>>,
    workers: Mutex<HashMap<PodKey, Worker>>,
    /// Held across "read desired + overlay, build, publish", so a reload and
    /// a probe-driven rebuild can never publish out of order.
    rebuild: tokio::sync::Mutex<()>,
    dirty: Notify,
    limit: Arc<Semaphore>,
    stop: CancellationToken,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves its value consistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Probes and the overlay in front of a [`DataPlane`]. Cloning is shallow.
/// Without probes it is a pass-through: embedders that call
/// [`DataPlane::update`] themselves need none of this.
#[derive(Clone)]
pub struct Health {
    inner: Arc<Inner>,
    /// Stops the probes and the rebuild task when the last handle goes.
    _stop_on_drop: Arc<tokio_util::sync::DropGuard>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("probes", &lock(&self.inner.workers).len())
            .finish_non_exhaustive()
    }
}

impl Health {
    /// Serves `services` on `dataplane` with the readiness of probed pods
    /// decided by `probes`, and starts probing. Pods with a probe are not
    /// serving until it passes.
    pub async fn start(
        dataplane: DataPlane,
        node: NodeSpec,
        services: Vec<ServiceSpec>,
        probes: Vec<ProbeSpec>,
    ) -> Health {
        let stop = CancellationToken::new();
        let health = Health {
            _stop_on_drop: Arc::new(stop.clone().drop_guard()),
            inner: Arc::new(Inner {
                dataplane,
                desired: Mutex::new(Desired::default()),
                overlay: Mutex::new(BTreeMap::new()),
                workers: Mutex::new(HashMap::new()),
                rebuild: tokio::sync::Mutex::new(()),
                dirty: Notify::new(),
                limit: Arc::new(Semaphore::new(MAX_CONCURRENT_PROBES)),
                stop,
            }),
        };
        tokio::spawn(rebuild_loop(
            health.inner.clone(),
            health.inner.stop.clone(),
        ));
        health.set_desired(node, services, probes).await;
        health
    }

    /// A new desired state (a reload): probes that did not change keep running
    /// with their state, new ones start (not ready until they pass), removed
    /// ones stop; the table is rebuilt before this returns.
    pub async fn set_desired(
        &self,
        node: NodeSpec,
        services: Vec<ServiceSpec>,
        probes: Vec<ProbeSpec>,
    ) {
        let probes: BTreeMap<PodKey, ProbeSpec> =
            probes.into_iter().map(|p| (p.pod.clone(), p)).collect();
        {
            let mut workers = lock(&self.inner.workers);
            workers.retain(|key, w| probes.get(key) == Some(&w.spec));
            let mut overlay = lock(&self.inner.overlay);
            overlay.retain(|key, _| probes.contains_key(key));
            for (key, spec) in &probes {
                if workers.contains_key(key) {
                    continue;
                }
                let status = overlay.entry(key.clone()).or_insert_with(|| ProbeStatus {
                    ready: false,
                    message: "not probed yet".into(),
                    since: SystemTime::now(),
                    probes: 0,
                });
                let task = tokio::spawn(probe_loop(
                    Arc::downgrade(&self.inner),
                    spec.clone(),
                    status.ready,
                    self.inner.limit.clone(),
                    self.inner.stop.clone(),
                ));
                workers.insert(
                    key.clone(),
                    Worker {
                        spec: spec.clone(),
                        task,
                    },
                );
            }
        }
        *lock(&self.inner.desired) = Desired {
            node,
            services,
            probes,
        };
        rebuild(&self.inner).await;
    }

    /// The probe verdict of every probed pod (for the admin API).
    pub fn statuses(&self) -> BTreeMap<PodKey, ProbeStatus> {
        lock(&self.inner.overlay).clone()
    }

    /// The services as they are served now: the desired state with the probe
    /// results applied.
    pub fn effective_services(&self) -> Vec<ServiceSpec> {
        let desired = lock(&self.inner.desired);
        let overlay = lock(&self.inner.overlay);
        apply(&desired.services, &desired.probes, &overlay)
    }

    /// Stops every probe and the rebuild task (the table stays as it is).
    pub fn stop(&self) {
        self.inner.stop.cancel();
        lock(&self.inner.workers).clear();
    }
}

/// `services` with the serving condition of every endpoint of a probed pod
/// set from the overlay (not ready until a first success). The endpoint's
/// pod is `namespace/pod` in the service's namespace, as selectors only match
/// pods of their own namespace.
pub fn apply(
    services: &[ServiceSpec],
    probes: &BTreeMap<PodKey, ProbeSpec>,
    overlay: &BTreeMap<PodKey, ProbeStatus>,
) -> Vec<ServiceSpec> {
    let mut out = services.to_vec();
    if probes.is_empty() {
        return out;
    }
    for service in &mut out {
        for port in &mut service.ports {
            for endpoint in &mut port.endpoints {
                let Some(pod) = &endpoint.pod else { continue };
                let key = PodKey::new(service.key.namespace.clone(), pod.clone());
                if probes.contains_key(&key) {
                    endpoint.serving = overlay.get(&key).is_some_and(|s| s.ready);
                }
            }
        }
    }
    out
}

async fn rebuild(inner: &Inner) {
    let _serial = inner.rebuild.lock().await;
    let (node, services) = {
        let desired = lock(&inner.desired);
        let overlay = lock(&inner.overlay);
        (
            desired.node.clone(),
            apply(&desired.services, &desired.probes, &overlay),
        )
    };
    inner.dataplane.update(node, services).await;
}

/// Applies probe results: waits until the overlay is dirty, then rebuilds,
/// at most once per [`COALESCE`]. Ends when the last [`Health`] handle goes
/// or [`Health::stop`] is called.
async fn rebuild_loop(inner: Arc<Inner>, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = inner.dirty.notified() => {}
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(COALESCE) => {}
        }
        rebuild(&inner).await;
        debug!("probe results applied");
    }
}

/// Probes one pod every period and records the verdict, with Kubernetes'
/// thresholds: `success_threshold` passes in a row make it ready,
/// `failure_threshold` failures in a row make it not ready.
async fn probe_loop(
    inner: std::sync::Weak<Inner>,
    spec: ProbeSpec,
    mut ready: bool,
    limit: Arc<Semaphore>,
    stop: CancellationToken,
) {
    let period = spec.period.max(Duration::from_millis(1));
    let first = spec.initial_delay + start_offset(&spec.pod, period);
    let start = tokio::time::Instant::now() + first;
    let mut tick = tokio::time::interval_at(start, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut successes, mut failures) = (0u32, 0u32);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let outcome = {
            let Ok(_permit) = limit.acquire().await else {
                return;
            };
            run::run(&spec).await
        };
        if outcome.success {
            successes = successes.saturating_add(1);
            failures = 0;
        } else {
            failures = failures.saturating_add(1);
            successes = 0;
        }
        let changed = if !ready && successes >= spec.success_threshold {
            ready = true;
            true
        } else if ready && failures >= spec.failure_threshold {
            ready = false;
            true
        } else {
            false
        };
        let Some(inner) = inner.upgrade() else { return };
        {
            let mut overlay = lock(&inner.overlay);
            let Some(status) = overlay.get_mut(&spec.pod) else {
                return; // the probe was removed
            };
            status.probes += 1;
            status.message = outcome.message.clone();
            if changed {
                status.ready = ready;
                status.since = SystemTime::now();
            }
        }
        if changed {
            info!(pod = %spec.pod, ready, result = %outcome.message, "readiness changed");
            inner.dirty.notify_one();
        } else {
            debug!(pod = %spec.pod, ready, result = %outcome.message, "probed");
        }
    }
}
