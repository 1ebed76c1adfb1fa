//! Readiness probes and their overlay: lb-proxy as the kubelet (it probes
//! pods) and the endpoints controller (it takes the not-ready ones out of
//! their services).
//!
//! [`Probes`] keeps, beside the desired state and never inside it, the
//! [`ProbeStatus`] of every probed pod, keyed by pod `namespace/name`, with its
//! reason and since when. The rebuild applies it to the desired services
//! (`Probes::apply`) each time it builds a snapshot; a probe whose verdict
//! changes wakes the rebuild, which coalesces a burst of verdicts into one
//! snapshot, so a probe storm does not rebuild the table a thousand times.
//!
//! Each probe runs in its own task, off the data path: it first runs after
//! its initial delay plus a stable per-pod offset within the period
//! ([`lb_core::health::start_offset`]), so pods do not probe in lock-step, and
//! at most [`MAX_CONCURRENT_PROBES`] run at once. A probe whose pod goes, or
//! whose task is cancelled as lb-proxy stops, is dropped mid-run: an `exec`
//! probe's whole process group is killed then (see `run`), as at its timeout.

mod run;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use lb_config::source::Changed;
use lb_core::health::{start_offset, PodKey, ProbeSpec};
use lb_core::ServiceSpec;
use tokio::sync::Semaphore;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, info};

use crate::control::events::{EventType, Events, ObjectRef};
use crate::lifecycle::Tasks;

/// Probes running at the same moment, all pods together; more wait their
/// turn (their results come a little later, never all at once).
pub const MAX_CONCURRENT_PROBES: usize = 64;

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
    /// The last probe's result as HAProxy's check status words it (`L4OK`,
    /// `L4CON`, `L4TOUT`, `L7OK/200`, `L7STS/500`, `L7RSP`, `L7TOUT`,
    /// `PROCOK`, `PROCERR`, `PROCTOUT`); empty before the first probe.
    pub check: String,
    /// How long the last probe took (HAProxy's `in 0ms`); `None` before the
    /// first probe.
    pub latency: Option<Duration>,
}

impl ProbeStatus {
    /// The last result as HAProxy's status page shows it: `L4OK in 0ms`,
    /// `L4CON in 1ms`; empty before the first probe.
    pub fn last_check(&self) -> String {
        match self.latency {
            Some(latency) if !self.check.is_empty() => {
                format!("{} in {}ms", self.check, latency.as_millis())
            }
            _ => String::new(),
        }
    }
}

/// One running probe: its spec, and the guard that stops it when dropped.
struct Worker {
    spec: ProbeSpec,
    _stop: DropGuard,
}

struct Inner {
    /// The verdicts: the overlay.
    overlay: Mutex<BTreeMap<PodKey, ProbeStatus>>,
    workers: Mutex<HashMap<PodKey, Worker>>,
    limit: Arc<Semaphore>,
    /// Wakes the rebuild when a verdict changes.
    changed: Changed,
    /// Where failed probes and verdicts that turn ready are recorded.
    events: Arc<Events>,
    tasks: Tasks,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves its value consistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The probes of the desired state and their verdicts. Cloning is shallow.
#[derive(Clone)]
pub struct Probes {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Probes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probes")
            .field("probes", &lock(&self.inner.workers).len())
            .finish_non_exhaustive()
    }
}

impl Probes {
    /// No probe yet; probe tasks will run on `tasks`, a changed verdict
    /// notifies `changed`, and failed probes are recorded in `events`.
    pub(crate) fn new(tasks: Tasks, changed: Changed, events: Arc<Events>) -> Probes {
        Probes {
            inner: Arc::new(Inner {
                overlay: Mutex::new(BTreeMap::new()),
                workers: Mutex::new(HashMap::new()),
                limit: Arc::new(Semaphore::new(MAX_CONCURRENT_PROBES)),
                changed,
                events,
                tasks,
            }),
        }
    }

    /// The probes a new desired state asks for: probes that did not change
    /// keep running with their state, new ones start (not ready until they
    /// pass), removed ones stop and their verdicts go.
    pub(crate) fn set(&self, probes: &[ProbeSpec]) {
        let wanted: BTreeMap<&PodKey, &ProbeSpec> = probes.iter().map(|p| (&p.pod, p)).collect();
        let mut workers = lock(&self.inner.workers);
        workers.retain(|key, w| wanted.get(key).is_some_and(|spec| **spec == w.spec));
        let mut overlay = lock(&self.inner.overlay);
        overlay.retain(|key, _| wanted.contains_key(key));
        for (key, spec) in wanted {
            if workers.contains_key(key) {
                continue;
            }
            let status = overlay.entry(key.clone()).or_insert_with(|| ProbeStatus {
                ready: false,
                message: "not probed yet".into(),
                since: SystemTime::now(),
                probes: 0,
                check: String::new(),
                latency: None,
            });
            let stop = self.inner.tasks.token().child_token();
            self.inner.tasks.spawn(probe_loop(
                self.inner.clone(),
                spec.clone(),
                status.ready,
                stop.clone(),
            ));
            workers.insert(
                key.clone(),
                Worker {
                    spec: spec.clone(),
                    _stop: stop.drop_guard(),
                },
            );
        }
    }

    /// The probe verdict of every probed pod (for the admin API).
    pub fn statuses(&self) -> BTreeMap<PodKey, ProbeStatus> {
        lock(&self.inner.overlay).clone()
    }

    /// Sets the serving condition of every endpoint of a probed pod from its
    /// verdict (not serving until a first success). The endpoint's pod is
    /// `namespace/pod` in the service's namespace, as selectors only match
    /// pods of their own namespace.
    ///
    /// A service is copied (`Arc::make_mut`) only when a verdict changes one
    /// of its endpoints; the others stay the desired state's own `Arc`s.
    pub(crate) fn apply(&self, services: &mut [Arc<ServiceSpec>]) {
        let overlay = lock(&self.inner.overlay);
        if overlay.is_empty() {
            return;
        }
        // A verdict that changes an endpoint: `Some(ready)`.
        let verdict = |namespace: &str, endpoint: &lb_core::EndpointSpec| {
            let pod = endpoint.pod.as_ref()?;
            overlay
                .get(&PodKey::new(namespace.to_string(), pod.clone()))
                .map(|status| status.ready)
                .filter(|ready| *ready != endpoint.serving)
        };
        for service in services {
            let namespace = service.key.namespace.clone();
            let mut endpoints = service.ports.iter().flat_map(|p| &p.endpoints);
            if !endpoints.any(|e| verdict(&namespace, e).is_some()) {
                continue;
            }
            for port in &mut Arc::make_mut(service).ports {
                for endpoint in &mut port.endpoints {
                    if let Some(ready) = verdict(&namespace, endpoint) {
                        endpoint.serving = ready;
                    }
                }
            }
        }
    }
}

/// Probes one pod every period and records the verdict, with Kubernetes'
/// thresholds: `success_threshold` passes in a row make it ready,
/// `failure_threshold` failures in a row make it not ready.
async fn probe_loop(inner: Arc<Inner>, spec: ProbeSpec, mut ready: bool, stop: CancellationToken) {
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
            let permit = tokio::select! {
                () = stop.cancelled() => return,
                p = inner.limit.acquire() => p,
            };
            let Ok(_permit) = permit else { return };
            let started = tokio::time::Instant::now();
            tokio::select! {
                () = stop.cancelled() => return,
                outcome = run::run(&spec) => (outcome, started.elapsed()),
            }
        };
        let (outcome, latency) = outcome;
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
        {
            let mut overlay = lock(&inner.overlay);
            let Some(status) = overlay.get_mut(&spec.pod) else {
                return; // the probe was removed
            };
            status.probes += 1;
            status.message = outcome.message.clone();
            status.check = outcome.check.clone();
            status.latency = Some(latency);
            if changed {
                status.ready = ready;
                status.since = SystemTime::now();
            }
        }
        record_probe(&inner.events, &spec.pod, &outcome, changed && ready);
        if changed {
            info!(pod = %spec.pod, ready, result = %outcome.message, "readiness changed");
            inner.changed.notify();
        } else {
            debug!(pod = %spec.pod, ready, result = %outcome.message, "probed");
        }
    }
}

/// What a probe is an event of: every failed probe is a Warning `Unhealthy`
/// on its Pod, worded as the kubelet's (`Readiness probe failed: ...`), so
/// a pod that fails again and again is one event whose count rises; a pod
/// that turns ready is a Normal `Healthy` (lb's: the kubelet records no
/// event when a probe passes).
fn record_probe(events: &Events, pod: &PodKey, outcome: &run::Outcome, turned_ready: bool) {
    let object = ObjectRef::pod(pod);
    if !outcome.success {
        events.record(
            EventType::Warning,
            "Unhealthy",
            object,
            format!("Readiness probe failed: {}", outcome.message),
        );
    } else if turned_ready {
        events.record(
            EventType::Normal,
            "Healthy",
            object,
            format!("Readiness probe succeeded: {}", outcome.message),
        );
    }
}
