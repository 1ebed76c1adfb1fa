//! lb-core: the model of Kubernetes Services that the lb proxy serves, and the
//! decisions it makes about them. No sockets, no clocks: time is a parameter.
//!
//! Map of the crate:
//! - [`model`]: the vocabulary: protocols, service keys, service types, affinity.
//! - [`spec`]: validated, allocated service descriptions ([`ServiceSpec`]) that a
//!   source hands to the core; embedders build these in code.
//! - [`snapshot`]: the immutable table the data path reads ([`Snapshot`]) and the
//!   one `ArcSwap` handle that publishes it ([`Table`]).
//! - [`select`]: weighted round robin over the endpoints that may take new
//!   connections, prebuilt so a pick is one atomic increment.
//! - [`affinity`]: ClientIP session affinity with a sliding timeout.
//! - [`alloc`]: cluster IP and node port allocators over a pluggable store.
//! - [`pool`]: LoadBalancer address pools and the assignment of their addresses.
//! - [`settings`]: typed `[proxy]` settings shared by lb-config and lb-proxy.
//! - [`stats`]: live counters shared by the data path and the admin views.
//! - [`health`]: readiness probe specs and passive health (outlier ejection).
//!
//! A snapshot is built from services and read by the data path, one pick per
//! new connection (time is a parameter, here the caller's clock):
//!
//! ```
//! use std::time::{Instant, SystemTime};
//! use lb_core::{EndpointSpec, NodeSpec, PortSpec, Protocol, ServiceSpec, Snapshot};
//!
//! let web = ServiceSpec::cluster_ip("default", "web", "10.96.0.10".parse().unwrap()).with_port(
//!     PortSpec::tcp("http", 80)
//!         .with_endpoint(EndpointSpec::new("10.244.0.1:8080".parse().unwrap()))
//!         .with_endpoint(EndpointSpec::new("10.244.0.2:8080".parse().unwrap())),
//! );
//! let snapshot = Snapshot::build(NodeSpec::default(), vec![web], None, SystemTime::now());
//! let frontend = snapshot
//!     .frontend("10.96.0.10:80".parse().unwrap(), Protocol::Tcp)
//!     .expect("the cluster IP is a frontend");
//! let client = "10.0.0.7".parse().unwrap();
//! let first = frontend.pick(client, Instant::now()).expect("an endpoint");
//! let second = frontend.pick(client, Instant::now()).expect("an endpoint");
//! assert_ne!(first.index, second.index, "round robin");
//! ```

pub mod affinity;
pub mod alloc;
pub mod health;
pub mod model;
pub mod pool;
pub mod select;
pub mod settings;
pub mod snapshot;
pub mod spec;
pub mod stats;
pub mod topology;

#[cfg(test)]
mod fixtures;

pub use model::{
    Protocol, ProxyProtocol, ServiceKey, ServicePortKey, ServiceType, SessionAffinity,
    SourceAddress, TrafficDistribution, TrafficPolicy,
};
pub use settings::{AcceptMode, ForwardEngine, ProxySettings};
pub use snapshot::ServiceEntry;
pub use snapshot::{
    Endpoint, FrontendEntry, FrontendKey, FrontendKind, Pick, PickReason, ServicePort, Snapshot,
    Table,
};
pub use spec::{
    ClusterIp, EndpointHints, EndpointSpec, NodeSpec, PortSpec, ServiceSpec, TargetPort,
};
