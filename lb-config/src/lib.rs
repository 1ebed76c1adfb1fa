//! lb-config: turns the TOML file into what the lb proxy serves.
//!
//! The pipeline is parse → validate → allocate → resolve endpoints, collecting
//! every error with its path in Kubernetes' words, so `lb-proxy check` prints
//! them all at once.
//!
//! Map of the crate:
//! - [`raw`]: serde structs mirroring the TOML file one to one.
//! - `parse` (private): text to [`raw::RawConfig`], parse errors with paths.
//! - `validation` (private): raw values to typed ones, after Kubernetes'
//!   `ValidateService` and friends.
//! - `allocate` (private): cluster IPs and node ports through
//!   [`lb_core::alloc`], stable across reloads.
//! - `pools` (private): LoadBalancer address assignment (the pools are
//!   validated in `validation`) through [`lb_core::pool`], stable across reloads.
//! - `endpoints` (private): the endpoints controller (selectors against pods,
//!   manual `[[endpoints]]`).
//! - [`loader`]: [`Loader`], the stateful entry point, and [`check_str`].
//! - [`config`]: the result, [`Config`].
//! - [`selection`]: which services this proxy serves (kube-proxy's
//!   labels) and which get pool addresses (classes, as MetalLB's `--lb-class`).
//! - [`resolve`]: endpoints known by DNS name, applied as an overlay once
//!   resolved, with bounded refresh intervals.
//! - [`source`]: sources of objects (file, `manifests`, etcd) and the
//!   one merge with its conflict rules.
//! - [`store`]: [`FileStore`], allocations in a state file across restarts.
//! - [`watch`]: [`watch::FileWatch`], reload triggers for edits, renames and
//!   ConfigMap symlink swaps.
//! - [`effective`]: the config in force in the file's shape (`config dump`).
//! - `schema` (feature `schema`): the file's JSON Schema and reference.
//! - [`error`]: [`FieldError`] and [`ConfigErrors`], one line per error.
//!
//! Cargo features (both in `default`): `manifests` (Kubernetes manifests as
//! a source, YAML) and `etcd` (etcd as a source and an allocation store:
//! HTTP and TLS). A build without `etcd` refuses a file with
//! `[source.etcd]`.
//!
//! ```
//! let config = lb_config::check_str(r#"
//!     [cluster]
//!     service_cidr = "127.96.0.0/16"
//!     [[services]]
//!     name = "web"
//!     ports = [{ port = 80 }]
//! "#).unwrap();
//! // Picked as Kubernetes picks: pseudo-randomly (from the service's name
//! // and `[cluster] allocation_seed`), above the 256 addresses kept for
//! // explicit requests.
//! let ip = config.services[0].cluster_ip.ip().unwrap();
//! assert!(ip > "127.96.1.0".parse::<std::net::IpAddr>().unwrap());
//! ```

mod allocate;
mod carry;
pub mod config;
pub mod effective;
mod endpoints;
pub mod error;
mod hash;
pub mod loader;
pub mod locate;
#[cfg(feature = "manifests")]
pub mod manifests;
mod parse;
mod pools;
pub mod raw;
pub mod resolve;
#[cfg(feature = "schema")]
pub mod schema;
pub mod selection;
pub mod source;
pub mod store;
mod validation;
#[cfg(feature = "watch")]
pub mod watch;

pub use config::{ClusterSettings, Config, DnsSettings, PendingAddress, PodObject, VipMode};
#[cfg(feature = "watch")]
pub use error::WatchError;
pub use error::{ConfigErrors, FieldError, Location};
pub use loader::{check_file, check_str, default_node_name, parse_str, Loader, StoreHealth};
pub use store::FileStore;
