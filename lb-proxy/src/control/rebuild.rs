//! The rebuild task: the one writer of the data plane's table.
//!
//! It owns the desired state (the last good [`Config`]) and the loader that
//! keeps allocations stable; the overlays ([`Probes`], [`Hosts`]) live beside
//! it. It wakes on a source's change, an overlay's change or a reload
//! request, lets the burst settle for [`COALESCE`] (a source's change, settled
//! by the source, for [`SOURCE_COALESCE`]), then runs one pass: read
//! each changed source once and validate the whole desired state (off the
//! async runtime), hand new settings to the data plane and new probes and
//! names to the overlays, and build one snapshot from desired + overlays.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use lb_config::source::{load_merged, Changed, DesiredState, Source};
use lb_config::{Config, ConfigErrors, FieldError, Loader};
use lb_core::Snapshot;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tracing::{error, info, warn, Instrument};

use crate::control::events::EventType;
use crate::control::hosts::Hosts;
use crate::control::probe::Probes;
use crate::control::reads::{Read, Reader, READ_WAIT};
use crate::control::{ProxyOverrides, Shared};
use crate::dataplane::DataPlane;
use crate::lifecycle::Tasks;

/// How long the rebuild waits after a first change for the rest of its
/// burst, so a burst of changes (probe verdicts, a reload during a probe
/// storm) gives one snapshot.
pub const COALESCE: Duration = Duration::from_millis(50);

/// The same wait when a source woke the rebuild: sources settle their own
/// bursts (the file watch's debounce, etcd's watch batches), so a change
/// written to a file is not held up a second time; the short pause still
/// lets two sources changed together make one pass.
pub(crate) const SOURCE_COALESCE: Duration = Duration::from_millis(5);

/// How many errors of a failed reload are logged and kept in its event
/// (then "... and N more"): a file with 10,000 errors and 50 SIGHUPs must
/// not make 640,000 log lines and a 130 MB event list.
pub(crate) const REPORTED_ERRORS: usize = 100;

/// How many times a load is done again after losing an allocation race to
/// another node (each retry starts from the winner's allocations).
const CONFLICT_RETRIES: usize = 5;

/// Whether the last save to a store shared with other nodes lost a race.
pub type ConflictCheck = Arc<dyn Fn() -> bool + Send + Sync>;

/// One source and what it gave last time.
pub(crate) struct Input {
    pub(crate) source: Arc<dyn Source>,
    /// The last read (good or bad), to tell a real change from a watch
    /// event that changed nothing; `None` until first read.
    pub(crate) last: Option<Result<DesiredState, ConfigErrors>>,
}

/// What the loads need, behind one lock only the rebuild takes (from its
/// blocking thread).
pub(crate) struct Work {
    pub(crate) inputs: Vec<Input>,
    pub(crate) loader: Loader,
    pub(crate) conflicts: Option<ConflictCheck>,
    pub(crate) overrides: ProxyOverrides,
}

/// What reading the sources came to.
pub(crate) enum Outcome {
    /// No source holds anything new (and no reload was forced).
    Unchanged,
    /// A new desired state, validated and allocated.
    Loaded(Box<Config>),
    /// A source could not be read, or the merged state is invalid.
    Failed(ConfigErrors),
}

pub(crate) fn lock(work: &Mutex<Work>) -> MutexGuard<'_, Work> {
    // A panic in a load leaves the inputs as they were read: still usable.
    work.lock().unwrap_or_else(|e| e.into_inner())
}

/// The first load: reads every input not read yet (the caller may have
/// read the file already, to find `[source.etcd]`: it is not read twice)
/// and validates the whole desired state. Blocking: runs on a blocking
/// thread.
pub(crate) fn first_load(work: &Mutex<Work>) -> Outcome {
    let fresh: Vec<Option<Read>> = {
        let work = lock(work);
        work.inputs
            .iter()
            .map(|input| input.last.is_none().then(|| input.source.desired()))
            .collect()
    };
    load(work, fresh, true)
}

/// Takes in the reads that landed (`fresh`, one slot per input) and
/// validates the whole desired state when one of them holds something new
/// (or `force`). Blocking: runs on a blocking thread.
pub(crate) fn load(work: &Mutex<Work>, fresh: Vec<Option<Read>>, force: bool) -> Outcome {
    let mut work = lock(work);
    let work = &mut *work;
    let mut changed = false;
    for (input, read) in work.inputs.iter_mut().zip(fresh) {
        if let Some(mut now) = read {
            // Unchanged objects become the ones already validated (see
            // `DesiredState::share_unchanged`), which also makes the
            // comparison below cheap.
            if let (Ok(now), Some(Ok(last))) = (&mut now, &input.last) {
                now.share_unchanged(last);
            }
            changed |= input.last.as_ref() != Some(&now);
            input.last = Some(now);
        }
    }
    // While the last save of allocations failed (a state file that cannot
    // be written, etcd away), every pass loads again so the save is retried:
    // a source that comes back unchanged must still clear `/readyz`.
    let unsaved = work.loader.store_health().error.is_some();
    if !changed && !force && !unsaved {
        return Outcome::Unchanged;
    }
    let mut states = Vec::with_capacity(work.inputs.len());
    let mut errors = Vec::new();
    for input in &work.inputs {
        match &input.last {
            Some(Ok(state)) => states.push(state.clone()),
            Some(Err(e)) => errors.extend(e.errors.iter().cloned()),
            None => {}
        }
    }
    if !errors.is_empty() {
        return Outcome::Failed(ConfigErrors { errors });
    }
    // The states are copied again only where a retry may need them: a
    // store shared with other nodes.
    let mut result = match &work.conflicts {
        Some(_) => load_merged(&mut work.loader, states.clone()),
        None => load_merged(&mut work.loader, std::mem::take(&mut states)),
    };
    if let Some(conflicts) = &work.conflicts {
        for _ in 0..CONFLICT_RETRIES {
            if !conflicts() {
                break;
            }
            info!("allocations: another node saved first; loading again from its state");
            result = load_merged(&mut work.loader, states.clone());
        }
    }
    match result {
        Ok(mut config) => {
            work.overrides.apply(&mut config.proxy);
            Outcome::Loaded(Box::new(config))
        }
        Err(mut errors) => {
            for input in &work.inputs {
                input.source.locate(&mut errors.errors);
            }
            Outcome::Failed(errors)
        }
    }
}

/// What someone asks of the rebuild task, answered with whether a new config
/// was applied.
pub(crate) enum Request {
    /// Read the sources again (SIGHUP, a test); `force` reads every one and
    /// applies even an unchanged state.
    Reload {
        force: bool,
        reply: oneshot::Sender<bool>,
    },
    /// Serve this desired state, given in code.
    Set {
        config: Box<Config>,
        reply: oneshot::Sender<bool>,
    },
}

/// The rebuild task's state.
pub(crate) struct Rebuild {
    pub(crate) shared: Arc<Shared>,
    pub(crate) work: Arc<Mutex<Work>>,
    /// One change signal per input, in the order of `work.inputs`.
    pub(crate) changes: Vec<Changed>,
    /// One reader per input, in the same order.
    pub(crate) readers: Vec<Arc<Reader>>,
    /// Notified when a read lands (also one that outlasted its pass).
    pub(crate) arrived: Changed,
    /// Notified by the probes and the host names.
    pub(crate) overlays: Changed,
    /// The desired state being served (the last good one).
    pub(crate) config: Arc<Config>,
    pub(crate) probes: Probes,
    pub(crate) hosts: Hosts,
    pub(crate) dataplane: DataPlane,
    /// Where the loads run (blocking threads counted by the lifecycle).
    pub(crate) tasks: Tasks,
}

impl Rebuild {
    /// Serves changes and requests until `tasks` stops.
    pub(crate) async fn run(
        mut self,
        mut requests: mpsc::Receiver<Request>,
        wake: Arc<Notify>,
        configs: watch::Sender<Arc<Config>>,
    ) {
        let stop = self.tasks.token().clone();
        loop {
            let mut replies = Vec::new();
            tokio::select! {
                biased;
                () = stop.cancelled() => return,
                request = requests.recv() => match request {
                    Some(r) => replies.push(r),
                    None => return,
                },
                () = wake.notified() => {}
            }
            let settle = if replies.is_empty() && self.changes.iter().any(Changed::is_set) {
                SOURCE_COALESCE
            } else {
                COALESCE
            };
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(settle) => {}
            }
            while let Ok(r) = requests.try_recv() {
                replies.push(r);
            }
            let mut force = false;
            let mut answers = Vec::with_capacity(replies.len());
            for request in replies {
                match request {
                    Request::Reload { force: f, reply } => {
                        force |= f;
                        answers.push(reply);
                    }
                    Request::Set { config, reply } => {
                        self.adopt(Arc::new(*config), &configs).await;
                        self.publish().await;
                        // The asker may have gone; nothing to tell then.
                        let _ = reply.send(true);
                    }
                }
            }
            let applied = self.pass(force, &configs).await;
            for reply in answers {
                let _ = reply.send(applied);
            }
        }
    }

    /// One pass: reload the sources that changed (all when `force`), then
    /// publish a snapshot if the desired state or an overlay changed.
    /// Returns whether a new config was applied.
    async fn pass(&mut self, force: bool, configs: &watch::Sender<Arc<Config>>) -> bool {
        let dirty: Vec<bool> = self.changes.iter().map(Changed::take).collect();
        let overlays = self.overlays.take();
        let arrived = self.arrived.take();
        let applied = if force || arrived || dirty.iter().any(|d| *d) {
            let span = tracing::info_span!("reload", force);
            self.reload(dirty, force, configs).instrument(span).await
        } else {
            false
        };
        if applied || overlays {
            self.publish().await;
        }
        if applied {
            // A load frees its document tree at once (hundreds of MB for
            // 10,000 services); give it back rather than keep it resident.
            let _ = self
                .tasks
                .spawn_blocking(crate::sys::release_free_memory)
                .await;
        }
        applied
    }

    async fn reload(
        &mut self,
        dirty: Vec<bool>,
        force: bool,
        configs: &watch::Sender<Arc<Config>>,
    ) -> bool {
        let started = std::time::Instant::now();
        let mut reading = Vec::new();
        for (reader, dirty) in self.readers.iter().zip(&dirty) {
            if force || *dirty {
                reading.extend(reader.start(&self.tasks, &self.arrived, force));
            }
        }
        // Wait for the reads, but a slow source does not hold up the others:
        // its result wakes another pass when it lands.
        let deadline = tokio::time::Instant::now() + READ_WAIT;
        for read in reading {
            if tokio::time::timeout_at(deadline, read).await.is_err() {
                warn!(wait = ?READ_WAIT, "a source is still reading; the others go ahead without it");
                break;
            }
        }
        let fresh: Vec<Option<Read>> = self.readers.iter().map(|r| r.take()).collect();
        let read = started.elapsed();
        let work = self.work.clone();
        let outcome = self
            .tasks
            .spawn_blocking(move || load(&work, fresh, force))
            .await
            .unwrap_or_else(|e| {
                Outcome::Failed(ConfigErrors::single(FieldError::internal(
                    "reload",
                    e.to_string(),
                )))
            });
        let loaded = started.elapsed() - read;
        self.shared
            .note_store(lock(&self.work).loader.store_health());
        tracing::debug!(read = ?read, validate = ?loaded, "reload: sources read and validated");
        let config = match outcome {
            Outcome::Unchanged => return false,
            Outcome::Failed(errors) => {
                self.shared.reloads.record_failure();
                let report = errors.summary(REPORTED_ERRORS);
                error!("reload failed validation; the previous config keeps serving");
                for line in report.lines() {
                    error!("{line}");
                }
                self.shared.node_event(
                    EventType::Warning,
                    "ReloadFailed",
                    format!(
                        "reload failed validation; the previous config keeps serving\n{report}"
                    ),
                );
                return false;
            }
            Outcome::Loaded(config) => Arc::new(*config),
        };
        for w in &config.warnings {
            warn!("{w}");
        }
        let count = config.services.len();
        let adopting = std::time::Instant::now();
        self.adopt(config, configs).await;
        tracing::debug!(adopt = ?adopting.elapsed(), "reload: settings, probes and names handed over");
        self.shared.reloads.record_success();
        info!(services = count, "config reloaded");
        self.shared.node_event(
            EventType::Normal,
            "Reloaded",
            format!("config reloaded: {count} services"),
        );
        true
    }

    /// Makes `config` the desired state: its settings go to the data plane,
    /// its probes and host names to the overlays (new names are resolved
    /// before this returns), and the wiring hears of it.
    async fn adopt(&mut self, config: Arc<Config>, configs: &watch::Sender<Arc<Config>>) {
        self.shared.note_config(&config);
        self.dataplane.set_settings(config.proxy.clone());
        self.probes.set(&config.probes);
        self.hosts
            .set(&config.host_endpoints, dns_upstreams(&config))
            .await;
        self.config = config.clone();
        configs.send_replace(config);
    }

    /// Builds the snapshot of desired + overlays and hands it to the data
    /// plane, which publishes it and reconciles its listeners.
    async fn publish(&self) {
        let started = std::time::Instant::now();
        let services = self.hosts.apply(self.config.services.clone());
        let mut services = services;
        self.probes.apply(&mut services);
        let previous = self.dataplane.table().load();
        let snapshot = Snapshot::build(
            self.config.node.clone(),
            services,
            Some(&previous),
            SystemTime::now(),
        );
        drop(previous);
        let built = started.elapsed();
        self.dataplane.apply(snapshot).await;
        tracing::debug!(build = ?built, apply = ?(started.elapsed() - built), "snapshot published");
    }
}

/// Where endpoint host names are resolved: `[dns] upstreams`, else (empty)
/// the system's resolver.
pub(crate) fn dns_upstreams(config: &Config) -> Vec<std::net::SocketAddr> {
    config
        .dns
        .as_ref()
        .map(|d| d.upstreams.clone())
        .unwrap_or_default()
}
