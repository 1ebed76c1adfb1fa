//! `lb-proxy get`: asks a running proxy's admin API and prints what it
//! answers, as JSON or as a `kubectl get`-style table.
//!
//! The client is blocking on purpose: `lb-proxy get` makes one request and
//! exits, and needs no runtime for it. Tables are rebuilt from the same JSON
//! `-o json` prints, with the view types of [`crate::ops::views`], so the CLI
//! and the server can never disagree about a column.

use std::time::{Duration, SystemTime};

use crate::control::events::EventList;
use crate::ops::views::{
    self, ConnectionList, EndpointsList, ServiceList, CONNECTIONS_PATH, ENDPOINTS_PATH,
    EVENTS_PATH, SERVICES_PATH,
};

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

/// Which table `lb-proxy get` shows (`lb-proxy get KIND`).
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
    /// `lb-proxy get events` (also `ev`, `event`): what happened, as
    /// `kubectl get events` shows it.
    #[value(alias = "ev", alias = "event")]
    Events,
}

impl GetKind {
    /// The admin API path that answers for this kind.
    pub fn path(self) -> &'static str {
        match self {
            GetKind::Services => SERVICES_PATH,
            GetKind::Endpoints => ENDPOINTS_PATH,
            GetKind::Connections => CONNECTIONS_PATH,
            GetKind::Events => EVENTS_PATH,
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
            let list: ConnectionList = serde_json::from_str(body).map_err(json)?;
            views::connections_table(&list, output == OutputFormat::Wide)
        }
        GetKind::Events => {
            let list: EventList = serde_json::from_str(body).map_err(json)?;
            views::events_table(&list, now)
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
