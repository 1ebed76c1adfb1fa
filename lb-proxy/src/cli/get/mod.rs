//! `lb-proxy get`: asks a running proxy's admin API and prints what it
//! answers as `kubectl get` would: the same arguments (`TYPE[,TYPE] [NAME]`,
//! `TYPE/NAME`, `-n`, `-A`, `-l`, `-o`, `--no-headers`), the same tables,
//! the same messages.
//!
//! The client is blocking on purpose: `lb-proxy get` makes a few requests
//! and exits, and needs no runtime for them. `request` reads the command
//! line as kubectl does; `render` filters the admin API's lists (namespace,
//! names, labels: the API lists everything, the CLI picks, as a kubectl
//! against a server would be answered) and prints them. Tables are rebuilt
//! from the API's JSON with the view types of [`crate::ops::views`], so the
//! CLI and the server can never disagree about a column.

mod command;
mod render;
mod request;

use std::time::Duration;

pub use command::command;
pub use render::{fetch_bodies, get_command, render, Bodies, GetOutput};
pub use request::{GetError, GetKind, GetRequest, OutputFormat, DEFAULT_NAMESPACE};

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
    /// The objects could not be written as `-o json` or `-o yaml`.
    #[error("cannot write {format}: {message}")]
    Encode {
        /// `JSON` or `YAML`.
        format: &'static str,
        /// What went wrong.
        message: String,
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
            url("http://127.0.0.2:1/", crate::ops::views::SERVICES_PATH),
            "http://127.0.0.2:1/api/v1/services"
        );
    }
}
