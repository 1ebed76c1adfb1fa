//! The control plane: what decides the table the data plane serves.
//!
//! - [`follow`]: keeping something outside the table in step with it.
//! - [`sources`]: the inputs besides the config file (manifests, etcd).
//! - [`probe`]: readiness probes and their overlay.
//! - [`hosts`]: endpoints known by DNS name, resolved as an overlay.
//! - [`vip`]: `vip_mode = "interface"`: the addresses served, on an interface.

pub mod follow;
pub mod hosts;
pub mod probe;
pub mod sources;
pub mod vip;

use std::sync::atomic::AtomicU64;

/// Counts of reload attempts, for logs and `/metrics`.
#[derive(Debug, Default)]
pub struct ReloadCounters {
    /// Reloads that applied a new config.
    pub success: AtomicU64,
    /// Reloads that failed validation and changed nothing.
    pub failure: AtomicU64,
}
