//! The sources an [`App`](crate::app::App) reads besides its config file:
//! Kubernetes manifests (`--manifests`) and etcd (`[source.etcd]`). Every
//! load reads each source's whole state and merges it with the file's
//! (`lb_config::source::load_merged`), so sources are level-triggered: a
//! change anywhere rebuilds from everything.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use lb_config::manifests::ManifestSource;
use lb_config::source::etcd::{EtcdSettings, EtcdSource, EtcdStore};
use lb_config::source::{load_merged, Changed, DesiredState, Source};
use lb_config::{Config, ConfigErrors, Loader};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How many times a load is retried after losing an allocation race to
/// another node (each retry starts from the winner's allocations).
const CAS_ATTEMPTS: usize = 5;

/// The non-file sources of one App.
#[derive(Debug, Default)]
pub struct Sources {
    manifests: Option<ManifestSource>,
    etcd: Option<Arc<EtcdSource>>,
    /// The shared allocation store, when etcd is a source.
    store: Option<EtcdStore>,
    /// Stops the etcd source's watch.
    stop: CancellationToken,
    /// The etcd source's watch task.
    tasks: TaskTracker,
}

impl Sources {
    /// Sources for `manifests` (file or directory) and the file's
    /// `[source.etcd]` (its watch spawned now on the current runtime, which
    /// etcd needs; its change notifications come back through the
    /// `Notify`).
    pub fn start(
        manifests: Option<PathBuf>,
        etcd: Option<EtcdSettings>,
    ) -> (Sources, Option<Arc<Notify>>) {
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let (etcd, store, changes) = match etcd {
            Some(settings) => {
                let source = Arc::new(EtcdSource::new(settings));
                let wake = Arc::new(Notify::new());
                tasks.spawn(
                    source
                        .clone()
                        .watch(Changed::new(wake.clone()), stop.clone()),
                );
                let store = source.store(tokio::runtime::Handle::current());
                (Some(source), Some(store), Some(wake))
            }
            None => (None, None, None),
        };
        tasks.close();
        (
            Sources {
                manifests: manifests.map(ManifestSource::new),
                etcd,
                store,
                stop,
                tasks,
            },
            changes,
        )
    }

    /// The shared allocation store, when etcd is a source.
    pub fn store(&self) -> Option<EtcdStore> {
        self.store.clone()
    }

    /// The etcd source, if any.
    pub fn etcd(&self) -> Option<&EtcdSource> {
        self.etcd.as_deref()
    }

    /// The manifests path, if any.
    pub fn manifests(&self) -> Option<&Path> {
        self.manifests.as_ref().map(ManifestSource::path)
    }

    /// Waits (bounded) for etcd's first full read, so the first config
    /// already holds etcd's objects. Returns false when etcd did not answer
    /// in time: the proxy starts from the file alone and reports stale.
    pub async fn wait_first_read(&self, timeout: Duration) -> bool {
        match &self.etcd {
            Some(e) => e.wait_synced(timeout).await,
            None => true,
        }
    }

    /// What tells whether anything changed since the last load: the file's
    /// text, the manifests' texts and etcd's revision.
    pub fn fingerprint(&self, file_text: Option<&str>) -> String {
        let mut out = file_text.unwrap_or("\u{0}unreadable").to_string();
        if let Some(m) = &self.manifests {
            out.push_str("\u{0}manifests\u{0}");
            out.push_str(&m.fingerprint());
        }
        if let Some(e) = &self.etcd {
            out.push_str(&format!("\u{0}etcd\u{0}{}", e.revision()));
        }
        out
    }

    /// Loads `config_path` merged with every source through `loader`. With
    /// a shared store, a load that lost the allocation race is done again
    /// from the winner's allocations (bounded).
    pub fn load(&self, loader: &mut Loader, config_path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(config_path).map_err(|e| {
            ConfigErrors::single(lb_config::FieldError::parse(
                config_path.display().to_string(),
                format!("cannot read the config file: {e}"),
            ))
        })?;
        let raw = lb_config::parse_str(&text)?;
        let mut others: Vec<DesiredState> = Vec::new();
        if let Some(m) = &self.manifests {
            others.push(m.desired()?);
        }
        if let Some(e) = &self.etcd {
            others.push(e.desired()?);
        }
        let mut result = load_merged(loader, &raw, others.clone());
        if let Some(store) = &self.store {
            for _ in 0..CAS_ATTEMPTS {
                if !store.take_conflict() {
                    break;
                }
                tracing::info!(
                    "allocations: another node saved first; loading again from its state"
                );
                result = load_merged(loader, &raw, others.clone());
            }
        }
        result
    }

    /// `Some(reason)` while a source is stale (`/readyz` answers 503).
    pub fn readiness(&self) -> Option<String> {
        self.etcd.as_deref().and_then(Source::stale)
    }

    /// Prometheus lines of the sources: the etcd source's counters, in the
    /// text `EtcdSource::metrics` wrote before them (until the metrics
    /// module renders [`lb_config::source::SourceStats`] itself).
    pub fn metrics(&self) -> String {
        let Some(stats) = self.etcd.as_deref().and_then(Source::stats) else {
            return String::new();
        };
        format!(
            "# HELP lb_source_stale 1 while a source cannot confirm its state is current.\n\
             # TYPE lb_source_stale gauge\n\
             lb_source_stale{{source=\"etcd\"}} {}\n\
             # HELP lb_source_resyncs_total Full re-reads of a source (start, disconnect, compaction).\n\
             # TYPE lb_source_resyncs_total counter\n\
             lb_source_resyncs_total{{source=\"etcd\"}} {}\n\
             # HELP lb_source_updates_total Change batches applied from a source.\n\
             # TYPE lb_source_updates_total counter\n\
             lb_source_updates_total{{source=\"etcd\"}} {}\n",
            u8::from(stats.stale),
            stats.resyncs,
            stats.updates,
        )
    }

    /// Stops the etcd source's watch (it ends at its next await).
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Waits for the etcd source's watch to end after [`Sources::stop`].
    pub async fn stopped(&self) {
        self.tasks.wait().await;
    }
}
