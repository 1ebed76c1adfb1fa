//! `lb-proxy describe service [NS/]NAME`: one service as `kubectl describe
//! service` prints it, with its conditions and events, asked of a running
//! proxy's admin API, or read from the config alone (`--config`, no proxy
//! needed: conditions from the file, no events).

use std::path::Path;
use std::time::SystemTime;

use lb_config::ConfigErrors;

use crate::cli::get::{fetch, AdminError};
use crate::control::events::EventList;
use crate::ops::views::{
    self, EndpointsList, ServiceList, ENDPOINTS_PATH, EVENTS_PATH, SERVICES_PATH,
};

/// Why `describe` printed nothing.
#[derive(Debug, thiserror::Error)]
pub enum DescribeError {
    /// The admin API could not be asked, or answered what this version
    /// cannot read.
    #[error("{0}")]
    Admin(#[from] AdminError),
    /// The config is invalid (one error per line).
    #[error("{0}")]
    Invalid(ConfigErrors),
    /// No such service (kubectl's words).
    #[error("Error from server (NotFound): services \"{0}\" not found")]
    NotFound(String),
}

/// `NS/NAME` or `NAME` (namespace `default`).
fn split(name: &str) -> (&str, &str) {
    match name.split_once('/') {
        Some((ns, n)) => (ns, n),
        None => ("default", name),
    }
}

/// `describe service NAME --admin HOST:PORT`: the service, its endpoints and
/// the events about it, from the running proxy at `admin`.
pub fn describe_from_admin(
    admin: &str,
    name: &str,
    now: SystemTime,
) -> Result<String, DescribeError> {
    let read = |path: &str| -> Result<String, DescribeError> { Ok(fetch(admin, path)?) };
    let json = |path: &str, source| {
        DescribeError::Admin(AdminError::Json {
            url: format!("{admin}{path}"),
            source,
        })
    };
    let services: ServiceList =
        serde_json::from_str(&read(SERVICES_PATH)?).map_err(|e| json(SERVICES_PATH, e))?;
    let endpoints: EndpointsList =
        serde_json::from_str(&read(ENDPOINTS_PATH)?).map_err(|e| json(ENDPOINTS_PATH, e))?;
    let events: EventList =
        serde_json::from_str(&read(EVENTS_PATH)?).map_err(|e| json(EVENTS_PATH, e))?;
    let (namespace, short) = split(name);
    let events = events.about("Service", namespace, short);
    render(&services, &endpoints, Some(&events), name, now)
}

/// `describe service NAME --config FILE`: the service as the config (with
/// `manifests` and the allocations of `state_file`, as `check` reads them)
/// makes it, with no proxy running: conditions from the config alone
/// (`FrontendsBound` is `Unknown`; endpoints that wait for a probe are not
/// ready) and no events.
pub fn describe_from_config(
    config: &Path,
    manifests: Option<&Path>,
    state_file: Option<&Path>,
    name: &str,
    now: SystemTime,
) -> Result<String, DescribeError> {
    let config =
        crate::cli::check(config, manifests, state_file).map_err(DescribeError::Invalid)?;
    let snapshot =
        lb_core::Snapshot::build(config.node.clone(), config.services.clone(), None, now);
    let services = views::services_view_with(&snapshot, None, Some(&config), None, now);
    let endpoints = views::endpoints_view(&snapshot);
    render(&services, &endpoints, None, name, now)
}

fn render(
    services: &ServiceList,
    endpoints: &EndpointsList,
    events: Option<&[&crate::control::events::Event]>,
    name: &str,
    now: SystemTime,
) -> Result<String, DescribeError> {
    let (namespace, short) = split(name);
    let service = services
        .items
        .iter()
        .find(|s| s.namespace == namespace && s.name == short)
        .ok_or_else(|| DescribeError::NotFound(short.to_string()))?;
    let endpoints = endpoints
        .items
        .iter()
        .find(|e| e.namespace == namespace && e.name == short);
    Ok(views::describe_service(service, endpoints, events, now))
}
