//! lb-proxy: the lb data plane and its operator surface.
//!
//! Map of the crate:
//! - [`admin`]: the admin HTTP API (`/healthz`, `/readyz`, `/metrics`,
//!   `/api/v1/...`) served over an [`admin::AdminSource`], and the small client
//!   behind `lb-proxy get`.
//! - [`app`]: [`app::App`], a config file wired to a data plane and the admin
//!   API, with reloads: what the binary and the quickstart run.
//! - [`sources`]: Kubernetes manifests and etcd, merged with the file on
//!   every load.
//! - [`metrics`]: `/metrics`: the snapshot's counters through a local
//!   `metrics-exporter-prometheus` recorder.
//! - [`connections`]: the registry of open TCP connections behind
//!   `/api/v1/connections`.
//! - [`status`]: the live status page at the admin listener's `/` and the
//!   recent-events ring it shows.
//! - [`views`]: the JSON shapes of `/api/v1/services` and `/api/v1/endpoints`,
//!   built from a snapshot, and the `kubectl get`-style tables printed from them.
//! - [`dataplane`]: [`DataPlane`], the running TCP data plane (listeners,
//!   connections, drain), and [`run`], serve until a shutdown future resolves.
//! - [`dns`]: the cluster DNS responder (Kubernetes DNS schema 1.1.0) over the
//!   live table, forwarding other names to `[dns] upstreams`.
//! - [`error`]: [`Error`], what the library reports.
//! - [`healthcheck`]: health-check node ports (LoadBalancer + Local), answering
//!   like kube-proxy.
//! - [`probe`]: readiness probes and the endpoint-state overlay
//!   ([`probe::Health`]) that folds their results into the snapshot.
//! - [`forward`]: the forwarding engines (copy loop; `splice(2)` through a
//!   pipe pool in [`splice`] on Linux): FIN as FIN, reset as reset, idle and
//!   half-close timers, byte counting.
//! - `listener`, `tcp`, `sys` (private): binding service listeners and their
//!   accept loops; one client connection (admission, dials with failover);
//!   socket options, the only place `unsafe` may live.
//! - [`vip`]: `vip_mode = "interface"`: the addresses served, added to and
//!   removed from an interface over netlink, LoadBalancer ones announced
//!   with gratuitous ARP.
//! - `workers` (private): `LB_ACCEPT=percore`'s data-path threads, one
//!   current-thread runtime per core.
//! - [`udp`]: UDP services: the sans-IO flow table ([`udp::flows`]) and the
//!   tokio shell that binds UDP frontends and relays datagrams per flow.

pub mod admin;
pub mod app;
pub mod connections;
pub mod dataplane;
pub mod dns;
pub mod error;
pub mod forward;
pub mod healthcheck;
mod listener;
pub mod metrics;
pub mod probe;
pub mod sources;
#[cfg(target_os = "linux")]
pub mod splice;
pub mod status;
mod sys;
mod tcp;
pub mod udp;
pub mod views;
pub mod vip;
mod workers;

pub use dataplane::{run, AcceptMode, BindOptions, DataPlane};
pub use error::Error;
