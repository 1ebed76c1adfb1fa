//! The operator surface: what people and other programs read of a running
//! proxy.
//!
//! - [`admin`]: the admin HTTP API and the client behind `lb-proxy get`.
//! - [`views`]: the JSON shapes of the admin API and the kubectl-style tables.
//! - [`metrics`]: `/metrics` in the Prometheus text format.
//! - [`status`]: the live status page and its recent-events ring.
//! - [`healthcheck`]: health-check node ports (LoadBalancer + Local).
//! - [`dns`]: the cluster DNS responder.

pub mod admin;
pub mod dns;
pub mod healthcheck;
pub mod metrics;
pub mod status;
pub mod views;
