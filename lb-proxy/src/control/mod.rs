//! The control plane: what decides the table the data plane serves.
//!
//! - [`sources`]: the inputs besides the config file (manifests, etcd).
//! - [`probe`]: readiness probes and their overlay.
//! - [`hosts`]: endpoints known by DNS name, resolved as an overlay.
//! - [`vip`]: `vip_mode = "interface"`: the addresses served, on an interface.

pub mod hosts;
pub mod probe;
pub mod sources;
pub mod vip;
