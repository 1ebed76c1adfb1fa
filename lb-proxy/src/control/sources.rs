//! The sources an [`App`](crate::app::App) reads besides its config file:
//! Kubernetes manifests (`--manifests`) and etcd (`[source.etcd]`). Every
//! load reads each source's whole state and merges it with the file's
//! (`lb_config::source::load_merged`), so sources are level-triggered: a
//! change anywhere rebuilds from everything.

use std::path::{Path, PathBuf};
use std::time::Duration;

use lb_config::manifests::ManifestSource;
use lb_config::source::etcd::{EtcdSettings, EtcdSource, EtcdStore};
use lb_config::source::{load_merged, DesiredState, Source};
use lb_config::{Config, ConfigErrors, Loader};

/// How many times a load is retried after losing an allocation race to
/// another node (each retry starts from the winner's allocations).
const CAS_ATTEMPTS: usize = 5;

/// The non-file sources of one App.
#[derive(Debug, Default)]
pub struct Sources {
    manifests: Option<ManifestSource>,
    etcd: Option<EtcdSource>,
    /// The shared allocation store, when etcd is a source.
    store: Option<EtcdStore>,
}

impl Sources {
    /// Sources for `manifests` (file or directory) and the file's
    /// `[source.etcd]` (started now; its change notifications come back).
    pub fn start(
        manifests: Option<PathBuf>,
        etcd: Option<EtcdSettings>,
    ) -> (Sources, Option<tokio::sync::watch::Receiver<u64>>) {
        let (etcd, changes) = match etcd {
            Some(settings) => {
                let (source, rx) = EtcdSource::start(settings);
                (Some(source), Some(rx))
            }
            None => (None, None),
        };
        let store = etcd.as_ref().map(EtcdSource::store);
        (
            Sources {
                manifests: manifests.map(ManifestSource::new),
                etcd,
                store,
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
        self.etcd.as_ref()
    }

    /// The manifests path, if any.
    pub fn manifests(&self) -> Option<&Path> {
        self.manifests.as_ref().map(ManifestSource::path)
    }

    /// Waits (bounded) for etcd's first full read, so the first config
    /// already holds etcd's objects. Returns false when etcd did not answer
    /// in time: the proxy starts from the file alone and reports stale.
    pub fn wait_first_read(&self, timeout: Duration) -> bool {
        match &self.etcd {
            Some(e) => e.wait_synced(timeout),
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
        self.etcd.as_ref().and_then(Source::stale)
    }

    /// Prometheus lines of the sources.
    pub fn metrics(&self) -> String {
        self.etcd
            .as_ref()
            .map(EtcdSource::metrics)
            .unwrap_or_default()
    }

    /// Stops the etcd threads.
    pub fn stop(&self) {
        if let Some(e) = &self.etcd {
            e.stop();
        }
    }
}
