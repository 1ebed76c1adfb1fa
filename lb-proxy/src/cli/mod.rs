//! The commands of the `lb-proxy` binary that are more than wiring: `check`,
//! `get` (the admin API's client) and, with an etcd source, `put` and
//! `delete`.

mod etcd;
pub mod get;

use std::path::Path;

use lb_config::{Config, ConfigErrors, Loader};

use crate::control::sources::Sources;

pub use etcd::{delete, put, WriteError};

/// `lb-proxy check --manifests`: the file and the manifests, validated with
/// allocations in memory.
pub fn check(config: &Path, manifests: Option<&Path>) -> Result<Config, ConfigErrors> {
    let (sources, _) = Sources::start(manifests.map(Path::to_path_buf), None);
    let mut loader = Loader::new(Box::<lb_core::alloc::MemoryStore>::default());
    sources.load(&mut loader, config)
}
