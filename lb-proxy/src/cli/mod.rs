//! The commands of the `lb-proxy` binary that are more than wiring: `check`,
//! `get` (the admin API's client) and, with an etcd source, `put` and
//! `delete`.

mod etcd;
pub mod get;

use std::path::Path;

use lb_config::source::{load_merged, FileSource, Source};
use lb_config::{Config, ConfigErrors, Loader};

pub use etcd::{delete, put, WriteError};

/// `lb-proxy check --manifests`: the file and the manifests, validated with
/// allocations in memory.
pub fn check(config: &Path, manifests: Option<&Path>) -> Result<Config, ConfigErrors> {
    let mut states = vec![FileSource::new(config).desired()?];
    if let Some(path) = manifests {
        states.push(lb_config::manifests::ManifestSource::new(path).desired()?);
    }
    let mut loader = Loader::new(Box::<lb_core::alloc::MemoryStore>::default());
    load_merged(&mut loader, states)
}
