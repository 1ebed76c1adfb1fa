//! The admin HTTP API and the client behind `lb-proxy get`.
//!
//! The server reads everything through [`AdminSource`], so it does not depend
//! on how the data plane is built: the binary implements the trait over its
//! data plane, tests implement it over a hand-built [`Snapshot`]. The client is
//! blocking on purpose: `lb-proxy get` makes one request and exits, and needs no
//! runtime for it.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use lb_core::{FrontendKey, Snapshot};
use serde::Serialize;

use crate::ops::views::{self, EndpointsList, ServiceList};

/// What the admin API reads; the binary implements it over the data plane.
/// A trait rather than a concrete type so the API can be served and tested
/// without sockets for services.
pub trait AdminSource: Send + Sync + 'static {
    /// The snapshot being served now.
    fn snapshot(&self) -> Arc<Snapshot>;
    /// Frontends that failed to bind, with the error, so `/api/v1/services` can
    /// show them.
    fn bind_errors(&self) -> BTreeMap<FrontendKey, String>;
    /// `None` = ready; `Some(reason)` = not ready (`/readyz` answers 503 with the
    /// reason).
    fn readiness(&self) -> Option<String>;
    /// Prometheus text exposition for `/metrics` (may be empty).
    fn metrics(&self) -> String;
    /// Readiness probe verdicts by pod, so `/api/v1/endpoints` can say why an
    /// endpoint is out of rotation; none by default (no probes).
    fn probes(&self) -> BTreeMap<lb_core::health::PodKey, crate::control::probe::ProbeStatus> {
        BTreeMap::new()
    }
    /// Open TCP connections, by registry id; none by default (a source
    /// without a data plane has none).
    fn connections(&self) -> Vec<crate::dataplane::connections::OpenConnection> {
        Vec::new()
    }
    /// Recent reloads, errors and endpoint state changes for the status page;
    /// none by default.
    fn events(&self) -> crate::ops::status::EventList {
        crate::ops::status::EventList::default()
    }
    /// The `[proxy]` settings in force, for `/api/v1/config`; unknown by
    /// default.
    fn settings(&self) -> Option<lb_core::ProxySettings> {
        None
    }
}

/// `/api/v1/services`.
pub const SERVICES_PATH: &str = "/api/v1/services";
/// `/api/v1/endpoints`.
pub const ENDPOINTS_PATH: &str = "/api/v1/endpoints";
/// `/api/v1/connections`.
pub const CONNECTIONS_PATH: &str = "/api/v1/connections";
/// `/api/v1/config`.
pub const CONFIG_PATH: &str = "/api/v1/config";
/// `/api/v1/events`.
pub const EVENTS_PATH: &str = "/api/v1/events";
/// Content type of Prometheus' text format, which scrapers check.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// How long `lb-proxy get` waits for the proxy before giving up, so a wedged
/// proxy does not hang a script.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer the client reads (a big service table is a few MB).
const CLIENT_BODY_LIMIT: u64 = 256 * 1024 * 1024;

/// Errors of the admin client (`lb-proxy get`).
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The proxy could not be reached or the exchange failed.
    #[error("cannot reach the lb-proxy admin API at {url}: {source}")]
    Http {
        /// The URL asked.
        url: String,
        /// What went wrong.
        #[source]
        source: Box<ureq::Error>,
    },
    /// The proxy answered with a status other than 200.
    #[error("{url} answered {status}: {body}")]
    Status {
        /// The URL asked.
        url: String,
        /// HTTP status.
        status: u16,
        /// Body of the answer (the reason, for `/readyz`).
        body: String,
    },
    /// The answer was not the JSON this version understands.
    #[error("{url} answered JSON this lb-proxy cannot read: {source}")]
    Json {
        /// The URL asked.
        url: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
}

/// The routes of the admin API over `source`. Unknown paths answer 404.
pub fn router(source: Arc<dyn AdminSource>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(SERVICES_PATH, get(services))
        .route(ENDPOINTS_PATH, get(endpoints))
        .route(CONNECTIONS_PATH, get(connections))
        .route(CONFIG_PATH, get(config))
        .route(EVENTS_PATH, get(events))
        .route("/", get(status_page))
        .fallback(not_found)
        .with_state(source)
}

/// Serves the admin API on `listener` until `shutdown` completes, then lets
/// in-flight requests finish. The listener is taken ready-made: the binary
/// binds it without SO_REUSEPORT so that a clash is an error at start.
pub async fn serve(
    listener: tokio::net::TcpListener,
    source: Arc<dyn AdminSource>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(source))
        .with_graceful_shutdown(shutdown)
        .await
}

type Source = State<Arc<dyn AdminSource>>;

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(source): Source) -> Response {
    match source.readiness() {
        None => (StatusCode::OK, "ok").into_response(),
        Some(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason).into_response(),
    }
}

async fn metrics(State(source): Source) -> Response {
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        source.metrics(),
    )
        .into_response()
}

async fn services(State(source): Source) -> Response {
    let snapshot = source.snapshot();
    json_response(&views::services_view(&snapshot, &source.bind_errors()))
}

async fn endpoints(State(source): Source) -> Response {
    let snapshot = source.snapshot();
    json_response(&views::endpoints_view_with(&snapshot, &source.probes()))
}

async fn connections(State(source): Source, uri: axum::http::Uri) -> Response {
    let mut limit = 0usize;
    let mut after = 0u64;
    for pair in uri.query().unwrap_or("").split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let bad = |what: &str| {
            (
                StatusCode::BAD_REQUEST,
                format!("{what} must be a non-negative integer, got {v:?}\n"),
            )
                .into_response()
        };
        match k {
            "limit" => match v.parse() {
                Ok(n) => limit = n,
                Err(_) => return bad("limit"),
            },
            "continue" if !v.is_empty() => match v.parse() {
                Ok(n) => after = n,
                Err(_) => return bad("continue"),
            },
            _ => {}
        }
    }
    let all = source.connections();
    let now = std::time::Instant::now();
    json_response(&crate::dataplane::connections::page(
        &all, limit, after, now,
    ))
}

async fn events(State(source): Source) -> Response {
    json_response(&source.events())
}

async fn config(State(source): Source) -> Response {
    let snapshot = source.snapshot();
    json_response(&views::config_view(
        &snapshot,
        source.settings().as_ref(),
        &source.bind_errors(),
    ))
}

async fn status_page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        crate::ops::status::INDEX_HTML,
    )
        .into_response()
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "404 page not found\n").into_response()
}

/// Pretty JSON with a final newline: the same bytes are what `lb-proxy get -o
/// json` prints, and people read them.
fn json_response<T: Serialize>(value: &T) -> Response {
    match serde_json::to_string_pretty(value) {
        Ok(mut body) => {
            body.push('\n');
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode JSON: {e}\n"),
        )
            .into_response(),
    }
}

/// Which table `lb-proxy get` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GetKind {
    /// `lb-proxy get services` (also `svc`, `service`).
    #[value(alias = "svc", alias = "service")]
    Services,
    /// `lb-proxy get endpoints` (also `ep`).
    #[value(alias = "ep")]
    Endpoints,
    /// `lb-proxy get connections` (also `conn`): open TCP connections.
    #[value(alias = "conn", alias = "connection")]
    Connections,
}

impl GetKind {
    /// The admin API path that answers for this kind.
    pub fn path(self) -> &'static str {
        match self {
            GetKind::Services => SERVICES_PATH,
            GetKind::Endpoints => ENDPOINTS_PATH,
            GetKind::Connections => CONNECTIONS_PATH,
        }
    }
}

/// `lb-proxy get -o ...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OutputFormat {
    /// A `kubectl get`-style table.
    #[default]
    Table,
    /// The admin API's JSON, byte for byte.
    Json,
    /// A wider table: for endpoints, one row each with its state, why it is
    /// out of rotation and since when; for connections, the frontend and
    /// start time too (services: the same as `table`).
    Wide,
}

/// Asks the admin API at `admin` (`HOST:PORT`) for `path` and returns the
/// body of a 200 answer; any other status is an [`AdminError::Status`] carrying
/// the body (the reason, for `/readyz`). An unspecified host (`0.0.0.0`, `[::]`,
/// as in an `admin.listen` that binds everywhere) is asked on loopback.
pub fn fetch(admin: &str, path: &str) -> Result<String, AdminError> {
    let (status, body) = fetch_status(admin, path)?;
    if status == 200 {
        Ok(body)
    } else {
        Err(AdminError::Status {
            url: url(admin, path),
            status,
            body: body.trim_end().to_string(),
        })
    }
}

/// Like [`fetch`] but returns any status with its body, for callers (probes,
/// tests) to whom a 503 is an answer rather than an error.
pub fn fetch_status(admin: &str, path: &str) -> Result<(u16, String), AdminError> {
    let url = url(admin, path);
    // No proxy from the environment: the admin API is local, and an
    // HTTP_PROXY meant for the internet must not see it.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .proxy(None)
        .http_status_as_error(false)
        .timeout_global(Some(CLIENT_TIMEOUT))
        .build()
        .into();
    let http = |source: ureq::Error| AdminError::Http {
        url: url.clone(),
        source: Box::new(source),
    };
    let mut response = agent.get(&url).call().map_err(http)?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(CLIENT_BODY_LIMIT)
        .read_to_string()
        .map_err(http)?;
    Ok((status, body))
}

/// What `lb-proxy get KIND -o OUTPUT --admin ADMIN` writes to stdout, final
/// newline included (print it with `print!`). `-o json` is the API's body
/// unchanged; a table is rebuilt from that same JSON, with AGE relative to
/// `now`.
pub fn get_command(
    admin: &str,
    kind: GetKind,
    output: OutputFormat,
    now: SystemTime,
) -> Result<String, AdminError> {
    let body = fetch(admin, kind.path())?;
    render_get(admin, kind, output, &body, now)
}

/// Turns an admin API answer `body` for `kind` into what `lb-proxy get`
/// prints (`admin` only names the source in errors); `get -w` calls it for
/// each changed answer.
pub fn render_get(
    admin: &str,
    kind: GetKind,
    output: OutputFormat,
    body: &str,
    now: SystemTime,
) -> Result<String, AdminError> {
    if output == OutputFormat::Json {
        return Ok(body.to_string());
    }
    let json = |source| AdminError::Json {
        url: url(admin, kind.path()),
        source,
    };
    Ok(match kind {
        GetKind::Services => {
            let list: ServiceList = serde_json::from_str(body).map_err(json)?;
            if output == OutputFormat::Wide {
                views::services_wide_table(&list, now)
            } else {
                views::services_table(&list, now)
            }
        }
        GetKind::Endpoints => {
            let list: EndpointsList = serde_json::from_str(body).map_err(json)?;
            if output == OutputFormat::Wide {
                views::endpoints_wide_table(&list, now)
            } else {
                views::endpoints_table(&list, now)
            }
        }
        GetKind::Connections => {
            let list: crate::dataplane::connections::ConnectionList =
                serde_json::from_str(body).map_err(json)?;
            views::connections_table(&list, output == OutputFormat::Wide)
        }
    })
}

/// `http://HOST:PORT/path`, with an unspecified host replaced by loopback and
/// a scheme the user may have typed tolerated.
fn url(admin: &str, path: &str) -> String {
    let admin = admin.trim_start_matches("http://").trim_end_matches('/');
    let admin = if let Some(port) = admin.strip_prefix("0.0.0.0:") {
        format!("127.0.0.1:{port}")
    } else if let Some(port) = admin.strip_prefix("[::]:") {
        format!("[::1]:{port}")
    } else {
        admin.to_string()
    };
    format!("http://{admin}{path}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_admin_addresses_are_asked_on_loopback() {
        assert_eq!(
            url("0.0.0.0:10249", "/healthz"),
            "http://127.0.0.1:10249/healthz"
        );
        assert_eq!(url("[::]:10249", "/readyz"), "http://[::1]:10249/readyz");
        assert_eq!(
            url("http://127.0.0.2:1/", SERVICES_PATH),
            "http://127.0.0.2:1/api/v1/services"
        );
    }
}
