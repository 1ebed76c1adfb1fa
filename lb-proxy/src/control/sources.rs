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

/// `lb-proxy check --manifests`: the file and the manifests, validated with
/// allocations in memory.
pub fn check(config: &Path, manifests: Option<&Path>) -> Result<Config, ConfigErrors> {
    let (sources, _) = Sources::start(manifests.map(Path::to_path_buf), None);
    let mut loader = Loader::new(Box::<lb_core::alloc::MemoryStore>::default());
    sources.load(&mut loader, config)
}

/// Why `put` or `delete` failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The config file or the objects are invalid (one error per line).
    #[error("{0}")]
    Invalid(ConfigErrors),
    /// The config file has no `[source.etcd]`.
    #[error("{0} has no [source.etcd]: put and delete write to an etcd source")]
    NoEtcd(String),
    /// `KIND` or `NAMESPACE/NAME` is malformed.
    #[error("{0}")]
    Usage(String),
    /// The object does not exist (delete).
    #[error("{0} not found")]
    NotFound(String),
    /// etcd failed.
    #[error("{0}")]
    Etcd(#[from] lb_config::source::etcd::EtcdError),
}

fn etcd_of(config: &Path) -> Result<EtcdSettings, WriteError> {
    let text = std::fs::read_to_string(config).map_err(|e| {
        WriteError::Invalid(ConfigErrors::single(lb_config::FieldError::parse(
            config.display().to_string(),
            format!("cannot read the config file: {e}"),
        )))
    })?;
    let raw = lb_config::parse_str(&text).map_err(WriteError::Invalid)?;
    lb_config::source::etcd::settings_of(&raw)
        .map_err(WriteError::Invalid)?
        .ok_or_else(|| WriteError::NoEtcd(config.display().to_string()))
}

/// `lb-proxy put -f FILE`: reads the objects of `file` (TOML tables like the
/// config file's, or Kubernetes manifests when it ends in .yaml/.yml),
/// validates them with the config file's settings, and writes one key per
/// object. Returns the keys written.
pub fn put(config: &Path, file: &Path) -> Result<Vec<String>, WriteError> {
    let settings = etcd_of(config)?;
    let yaml = file
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e == "yaml" || e == "yml");
    let objects = if yaml {
        let state = lb_config::manifests::load_path(file).map_err(WriteError::Invalid)?;
        for w in &state.warnings {
            tracing::warn!("{w}");
        }
        lb_config::raw::RawConfig {
            services: state.services.into_iter().map(|o| o.object).collect(),
            pods: state.pods.into_iter().map(|o| o.object).collect(),
            endpoints: state.endpoints.into_iter().map(|o| o.object).collect(),
            ip_pools: state.ip_pools.into_iter().map(|o| o.object).collect(),
            ..Default::default()
        }
    } else {
        let text = std::fs::read_to_string(file).map_err(|e| {
            WriteError::Invalid(ConfigErrors::single(lb_config::FieldError::parse(
                file.display().to_string(),
                format!("cannot read: {e}"),
            )))
        })?;
        lb_config::parse_str(&text).map_err(WriteError::Invalid)?
    };
    // Validate with this node's settings and the objects alone.
    let text = std::fs::read_to_string(config).unwrap_or_default();
    let mut raw = lb_config::parse_str(&text).map_err(WriteError::Invalid)?;
    raw.services = objects.services.clone();
    raw.pods = objects.pods.clone();
    raw.endpoints = objects.endpoints.clone();
    raw.ip_pools = objects.ip_pools.clone();
    let mut loader = Loader::new(Box::<lb_core::alloc::MemoryStore>::default());
    loader.load_raw(&raw).map_err(WriteError::Invalid)?;
    let client = lb_config::source::etcd::Client::new(settings.client.clone());
    let ns = |n: &Option<String>| n.clone().unwrap_or_else(|| "default".into());
    let mut writes: Vec<(String, Vec<u8>)> = Vec::new();
    let json = |v: &dyn erased::Json| v.to_json();
    for s in &objects.services {
        writes.push((
            settings.key("services", &ns(&s.namespace), &s.name),
            json(s),
        ));
    }
    for p in &objects.pods {
        writes.push((settings.key("pods", &ns(&p.namespace), &p.name), json(p)));
    }
    for e in &objects.endpoints {
        writes.push((
            settings.key("endpoints", &ns(&e.namespace), &e.name),
            json(e),
        ));
    }
    for p in &objects.ip_pools {
        writes.push((settings.key("ip_pools", "", &p.name), json(p)));
    }
    let mut written = Vec::new();
    for (key, value) in writes {
        client.put(&key, &value)?;
        written.push(key);
    }
    Ok(written)
}

mod erased {
    /// Objects that serialize to the JSON stored in etcd.
    pub(super) trait Json {
        fn to_json(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> Vec<u8> {
            serde_json::to_vec(self).unwrap_or_default()
        }
    }
}

/// `lb-proxy delete KIND NAMESPACE/NAME` (`ip_pools` take a bare NAME).
/// Returns the key deleted.
pub fn delete(config: &Path, kind: &str, name: &str) -> Result<String, WriteError> {
    let settings = etcd_of(config)?;
    let key = match (kind, name.split_once('/')) {
        ("ip_pools", None) => settings.key("ip_pools", "", name),
        ("services" | "pods" | "endpoints", Some((ns, n))) if !ns.is_empty() && !n.is_empty() => {
            settings.key(kind, ns, n)
        }
        ("services" | "pods" | "endpoints", None) => settings.key(kind, "default", name),
        _ => {
            return Err(WriteError::Usage(format!(
                "usage: delete services|pods|endpoints NAMESPACE/NAME, or delete ip_pools NAME (got {kind} {name})"
            )))
        }
    };
    let client = lb_config::source::etcd::Client::new(settings.client.clone());
    match client.delete(&key)? {
        0 => Err(WriteError::NotFound(key)),
        _ => Ok(key),
    }
}
