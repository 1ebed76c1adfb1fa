//! The commands of the `lb-proxy` binary that are more than wiring: `check`,
//! `get` (the admin API's client), `describe` and, with an etcd source,
//! `put` and `delete`.

pub mod access_text;
pub mod describe;
mod etcd;
pub mod get;

use std::path::Path;

use lb_config::error::FieldError;
use lb_config::source::{load_merged, FileSource, Source};
use lb_config::{Config, ConfigErrors, FileStore, Loader};
use lb_core::alloc::{AllocationStore, MemoryStore};

pub use etcd::{delete, put, WriteError};

/// `lb-proxy check --manifests --state-file`: the file and the manifests,
/// validated with allocations in memory. With a state file, the
/// allocations a running proxy holds there are the starting point (read,
/// never written), so `check` refuses what the next reload would refuse: a
/// cluster IP or node port another service holds, a changed cluster IP.
pub fn check(
    config: &Path,
    manifests: Option<&Path>,
    state_file: Option<&Path>,
) -> Result<Config, ConfigErrors> {
    let mut states = vec![FileSource::new(config).desired()?];
    if let Some(path) = manifests {
        states.push(lb_config::manifests::ManifestSource::new(path).desired()?);
    }
    let held = MemoryStore::default();
    let mut unreadable = None;
    if let Some(path) = state_file {
        match FileStore::new(path).load() {
            Ok(a) => held.save(&a).map_err(|e| {
                ConfigErrors::single(FieldError::parse("state-file", e.to_string()))
            })?,
            // As `run` would: start afresh, and say so.
            Err(e) => unreadable = Some(format!("allocations: starting afresh: {e}")),
        }
    }
    let mut loader = Loader::new(Box::new(held));
    let mut config = load_merged(&mut loader, states)?;
    config.warnings.extend(unreadable);
    Ok(config)
}
