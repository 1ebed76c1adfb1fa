//! lb-proxy: the lb data plane, the control plane that feeds it, and the
//! operator surface around them.
//!
//! Map of the crate, one folder per part:
//! - [`dataplane`]: [`DataPlane`], the running data plane: service listeners
//!   and their accept loops, one TCP connection from accept to close, the
//!   forwarding engines (copy loop; `splice(2)` on Linux), UDP flows, per-core
//!   workers, and the registry of open connections.
//! - [`control`]: what decides the table the data plane serves: the sources
//!   besides the file, readiness probes, endpoint host names, and interface
//!   VIPs.
//! - [`ops`]: the operator surface: the admin API, its views and tables,
//!   `/metrics`, the status page, health-check node ports and the cluster DNS
//!   responder.
//! - [`app`]: [`app::App`], a config file wired to all of the above: what the
//!   binary and the quickstart run.
//! - [`cli`]: the binary's `check`, `put` and `delete`.
//! - [`error`]: [`Error`], what the library reports.
//! - [`lifecycle`]: [`lifecycle::Tasks`], the one way lb spawns and stops
//!   tasks.
//! - `sys` (private): system calls and socket options, the only place
//!   `unsafe` may live.

#[cfg(feature = "admin")]
pub mod app;
#[cfg(feature = "cli")]
pub mod cli;
pub mod control;
pub mod dataplane;
pub mod error;
pub mod lifecycle;
pub mod ops;
#[allow(unsafe_code)]
mod sys;

pub use dataplane::{run, AcceptMode, BindOptions, DataPlane};
pub use error::Error;
