//! The operator surface: what people and other programs read of a running
//! proxy.
//!
//! - [`views`]: the JSON shapes of the admin API and the kubectl-style tables.
//! - `admin` (feature `admin`): the admin HTTP API.
//! - `metrics` (feature `admin`): `/metrics` in the Prometheus text format.
//! - `status` (feature `admin`): the live status page.
//! - `healthcheck` (feature `admin`): health-check node ports (LoadBalancer +
//!   Local).
//! - `dns` (feature `dns`): the cluster DNS responder.
//! - `http` (private): an axum router served with every connection a task
//!   of lb's own (the admin API and the health-check node ports).
//!
//! Every task of the operator surface is spawned through a
//! [`crate::lifecycle::Tasks`] its constructor takes, and stopping a part
//! waits for its tasks.

#[cfg(feature = "admin")]
pub mod admin;
#[cfg(feature = "dns")]
pub mod dns;
#[cfg(feature = "admin")]
pub mod healthcheck;
#[cfg(feature = "admin")]
mod http;
#[cfg(feature = "admin")]
pub mod metrics;
#[cfg(feature = "admin")]
pub mod status;
pub mod views;
