//! The JSON shapes of the admin API (`/api/v1/services`, `/endpoints`,
//! `/connections`, `/config`) and the `kubectl get`-style tables printed from
//! them.
//!
//! The shapes are part of the product contract: fields may be added, never
//! renamed. They derive `Deserialize` as well as `Serialize` because
//! `lb-proxy get` parses the admin API's answer back before printing a table,
//! so the CLI and the server can never disagree about a column. Fields that
//! were added after the contract's example carry `#[serde(default)]`, so a
//! newer CLI still reads an older proxy.
//!
//! One file per job: `services`, `endpoints`, `connections` and `config`
//! build the views from a snapshot (or the connection registry), `pods`
//! from the config and the probe verdicts,
//! `conditions` the services' `status.conditions`, `describe` prints
//! `describe service` and `get events`, `tables`
//! prints them as kubectl would, `time` writes and reads their RFC 3339
//! times.

mod conditions;
mod config;
mod connections;
mod describe;
mod endpoints;
mod pods;
mod services;
mod tables;
mod time;

pub use conditions::{
    Condition, ServiceStatus, Transitions, ENDPOINTS_AVAILABLE, FRONTENDS_BOUND,
    LOAD_BALANCER_ASSIGNED,
};
pub use config::{
    config_view, process_start_unix_seconds, ConfigView, FrontendView, NodeView, ProcessView,
};
pub use connections::{page, port_label, ConnectionList, ConnectionView, MAX_PAGE};
pub use describe::{describe_service, EVENT_SOURCE};
pub use endpoints::{
    endpoints_view, endpoints_view_with, EndpointDetail, EndpointView, EndpointsList, EndpointsView,
};
pub use pods::{pods_view, PodList, PodView};
pub use services::{
    services_view, services_view_with, with_traffic, BindErrorView, PortTraffic, PortView,
    RejectedView, ServiceList, ServiceView,
};
pub use tables::{
    connections_table, endpoints_table, endpoints_wide_table, event_name, event_namespace,
    events_table, human_duration, pods_table, services_table, Table, TableOptions,
};
pub use time::{format_rfc3339, parse_rfc3339};

/// `/api/v1/services`: a [`ServiceList`].
pub const SERVICES_PATH: &str = "/api/v1/services";
/// `/api/v1/endpoints`: an [`EndpointsList`].
pub const ENDPOINTS_PATH: &str = "/api/v1/endpoints";
/// `/api/v1/connections`: a [`ConnectionList`], one page of it.
pub const CONNECTIONS_PATH: &str = "/api/v1/connections";
/// `/api/v1/pods`: a [`PodList`].
pub const PODS_PATH: &str = "/api/v1/pods";
/// `/api/v1/config`: a [`ConfigView`].
pub const CONFIG_PATH: &str = "/api/v1/config";
/// `GET` path of this process (pid, node, version, start), small enough for
/// the status page to ask at every poll.
pub const PROCESS_PATH: &str = "/api/v1/process";
/// `/api/v1/events`: an [`EventList`](crate::control::events::EventList), most recently
/// seen first (Kubernetes-shaped, aggregated).
pub const EVENTS_PATH: &str = "/api/v1/events";
