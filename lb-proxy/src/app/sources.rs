//! The App's inputs: the config file, the manifests (`--manifests`, feature
//! `manifests`) and etcd (`[source.etcd]`, feature `etcd`), and where
//! allocations are kept. The file is read once here: its `[source.etcd]`
//! names the etcd source, and the same read is the file source's first
//! state.

use std::sync::Arc;

use lb_config::source::{FileSource, Source};
use lb_config::{Config, ConfigErrors};
use lb_core::alloc::{AllocationStore, MemoryStore};
use lb_core::Snapshot;

use crate::app::AppOptions;
use crate::control::{ControlOptions, ControlPlane};
use crate::error::Error;
use crate::lifecycle::Tasks;

/// A control plane that loaded its first desired state.
pub(crate) struct Control {
    pub(crate) control: ControlPlane,
    pub(crate) config: Arc<Config>,
    pub(crate) snapshot: Snapshot,
}

/// The sources of `options`, the control plane over them (on `tasks`), and
/// its first desired state.
pub(crate) async fn start_control(options: &AppOptions, tasks: &Tasks) -> Result<Control, Error> {
    let file = Arc::new(FileSource::new(options.config.clone()));
    let first = {
        let file = file.clone();
        tasks
            .spawn_blocking(move || file.desired())
            .await
            .unwrap_or_else(|e| {
                Err(ConfigErrors::single(lb_config::FieldError::internal(
                    "load",
                    e.to_string(),
                )))
            })
    };
    let store: Box<dyn AllocationStore> = match &options.state_file {
        Some(path) => Box::new(lb_config::FileStore::new(path.clone())),
        None => Box::<MemoryStore>::default(),
    };
    #[cfg(feature = "etcd")]
    let etcd = match first.as_ref().ok().and_then(|s| s.file.as_ref()) {
        Some(raw) => lb_config::source::etcd::settings_of(raw).map_err(Error::Config)?,
        None => None, // the load below reports the file's errors
    };
    let mut control_options = ControlOptions::new(store)
        .source_read(file, first)
        .overrides(options.overrides.clone());
    if let Some(path) = &options.manifests {
        control_options = control_options.source(manifests(path)?);
    }
    #[cfg(feature = "etcd")]
    if let Some(settings) = etcd {
        control_options = with_etcd(control_options, settings);
    }
    let (control, loaded) = ControlPlane::load(control_options, tasks.child())
        .await
        .map_err(Error::Config)?;
    Ok(Control {
        control,
        config: loaded.config,
        snapshot: loaded.snapshot,
    })
}

/// `--manifests PATH` as a source.
fn manifests(path: &std::path::Path) -> Result<Arc<dyn Source>, Error> {
    #[cfg(feature = "manifests")]
    return Ok(Arc::new(lb_config::manifests::ManifestSource::new(path)));
    #[cfg(not(feature = "manifests"))]
    {
        let _ = path;
        Err(Error::Unsupported {
            what: "--manifests (Kubernetes manifests as a source)",
            feature: "manifests",
        })
    }
}

/// etcd as a source, and the store of allocations shared with every node
/// that reads it (a load whose save lost a race is done again from the
/// winner's allocations).
#[cfg(feature = "etcd")]
fn with_etcd(
    options: ControlOptions,
    settings: lb_config::source::etcd::EtcdSettings,
) -> ControlOptions {
    let source = Arc::new(lb_config::source::etcd::EtcdSource::new(settings));
    // The store blocks on this runtime; the control plane loads on blocking
    // threads only.
    let shared = source.store(tokio::runtime::Handle::current());
    let conflicts = shared.clone();
    options
        .store(Box::new(shared))
        .source(source)
        .shared(Arc::new(move || conflicts.take_conflict()))
}
