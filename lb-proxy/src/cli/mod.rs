//! The commands of the `lb-proxy` binary that are more than wiring: `check`,
//! `get` (the admin API's client, with kubectl's label `selector`s),
//! `describe`, `config` (schema and dump), with an etcd source `put` and
//! `delete`, and the packaging's `completions` and `man`; `run`'s node
//! lock (`owner`) and `check`'s look at this host (`host`).

pub mod access_text;
pub mod config;
pub mod describe;
pub mod docs;
mod etcd;
pub mod get;
mod host;
pub mod owner;
pub mod selector;
pub mod serve;

use std::path::Path;

use lb_config::error::FieldError;
use lb_config::raw::RawConfig;
use lb_config::source::{load_merged, merge_states, FileSource, Source};
use lb_config::{Config, ConfigErrors, FileStore, Loader};
use lb_core::alloc::{AllocationStore, MemoryStore};

pub use etcd::{delete, put, WriteError};
pub use host::host_warnings;

/// `lb-proxy check --manifests --state-file`: the file and the manifests,
/// validated with allocations in memory. With a state file, the
/// allocations a running proxy holds there are the starting point (read,
/// never written), so `check` refuses what the next reload would refuse: a
/// cluster IP or node port another service holds, a changed cluster IP.
/// Its warnings include this host's view ([`host_warnings`]): ports the
/// process may not bind, addresses the host does not have.
pub fn check(
    config: &Path,
    manifests: Option<&Path>,
    state_file: Option<&Path>,
) -> Result<Config, ConfigErrors> {
    load(config, manifests, state_file).map(|(_, config)| config)
}

/// [`check`], also returning the raw objects and settings it validated (the
/// file's merged with the manifests'), for `config dump`.
pub(crate) fn load(
    config: &Path,
    manifests: Option<&Path>,
    state_file: Option<&Path>,
) -> Result<(RawConfig, Config), ConfigErrors> {
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
    let raw = merge_states(states.clone())?.raw;
    let mut loader = Loader::new(Box::new(held));
    let mut loaded = load_merged(&mut loader, states).map_err(|mut errors| {
        // Validation errors of the file's own keys, located in it.
        if let Ok(text) = lb_config::source::read_settled(config) {
            let file = config.display().to_string();
            lb_config::locate::locate_toml(&mut errors.errors, &text, &file);
        }
        errors
    })?;
    loaded.warnings.extend(unreadable);
    loaded.warnings.extend(host_warnings(&loaded));
    Ok((raw, loaded))
}
