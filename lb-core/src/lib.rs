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

#[cfg(test)]
mod fixtures;

pub use model::{
    Protocol, ServiceKey, ServicePortKey, ServiceType, SessionAffinity, TrafficPolicy,
};
pub use settings::{AcceptMode, ForwardEngine, ProxySettings};
pub use snapshot::ServiceEntry;
pub use snapshot::{
    Endpoint, FrontendEntry, FrontendKey, FrontendKind, Pick, PickReason, ServicePort, Snapshot,
    Table,
};
pub use spec::{ClusterIp, EndpointSpec, NodeSpec, PortSpec, ServiceSpec, TargetPort};
