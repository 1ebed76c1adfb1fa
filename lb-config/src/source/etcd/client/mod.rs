//! A small async etcd v3 client over etcd's own JSON gateway (`POST
//! /v3/kv/range`, `/v3/kv/put`, `/v3/kv/deleterange`, `/v3/kv/txn`,
//! streaming `/v3/watch`; keys and values base64). It needs only HTTP/1, so
//! the build needs no `protoc` and the README's commands work on a fresh
//! machine.
//!
//! Every call is a future that starts nothing in the background: dropping
//! it closes its connection, and every wait is bounded by a timeout, so a
//! caller cancels a request by dropping it.
//!
//! - `http` (private): one POST on one connection, TLS included.
//! - `tls` (private, re-exported): the PEM files into a rustls config.
//! - `json` (private): the gateway's JSON, both ways.
//! - `watch` (private, [`Watch`] re-exported): the watch stream.

mod http;
mod json;
mod tls;
mod watch;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use self::http::Endpoint;
pub use self::json::prefix_end;
use self::json::{answer, b64, header_revision, i64_of, kv_of, kvs_of};
pub use self::tls::{tls_config, TlsError, TlsFiles};
pub use self::watch::Watch;

/// How long one request (other than a watch) to one endpoint may take, from
/// connecting to the end of the answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// An etcd request failed.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// No endpoint answered.
    #[error("etcd unreachable ({endpoint}): {message}")]
    Unreachable {
        /// The last endpoint tried.
        endpoint: String,
        /// Why.
        message: String,
    },
    /// etcd answered with an error.
    #[error("etcd {endpoint}: {message}")]
    Api {
        /// The endpoint.
        endpoint: String,
        /// etcd's message.
        message: String,
    },
    /// The watch was cancelled because its start revision was compacted.
    #[error("etcd watch: revision {0} is compacted")]
    Compacted(i64),
}

/// One key-value pair as etcd holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    /// The key.
    pub key: String,
    /// The value bytes.
    pub value: Vec<u8>,
    /// The revision of its last change (older wins a conflict).
    pub mod_revision: i64,
}

/// A change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// A key was written.
    Put(Kv),
    /// A key was deleted (at this revision).
    Delete {
        /// The key.
        key: String,
        /// The revision of the deletion.
        revision: i64,
    },
    /// Nothing changed, but the store is at `revision` (progress).
    Progress(i64),
}

/// How to reach etcd.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct ClientOptions {
    /// Client URLs (`http://127.0.0.1:2379`, `https://...`), tried in order.
    pub endpoints: Vec<String>,
    /// User name for etcd's authentication, if enabled.
    pub username: Option<String>,
    /// Password for `username`.
    pub password: Option<String>,
    /// Certificates for `https://` endpoints.
    pub tls: TlsFiles,
}

/// Written by hand so the password never reaches a log line.
impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOptions")
            .field("endpoints", &self.endpoints)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .finish()
    }
}

/// An async etcd v3 client. Requests go to the first endpoint that answers.
/// Share it by reference or `Arc`: it holds the login token for all calls.
#[derive(Debug)]
pub struct Client {
    options: ClientOptions,
    /// The endpoints, parsed (a URL that does not parse fails its turn).
    endpoints: Vec<(String, Result<Endpoint, String>)>,
    /// The TLS setup, or why the client cannot make requests (a TLS file
    /// went bad since validation); every request reports it.
    tls: Result<Arc<rustls::ClientConfig>, String>,
    token: Mutex<Option<String>>,
}

impl Client {
    /// A client for `options` (no connection is made yet).
    /// The TLS files are read now; when they cannot be used (validation
    /// checked them, so they changed since), every request fails with the
    /// reason and the source reports itself stale.
    pub fn new(options: ClientOptions) -> Self {
        let endpoints = options
            .endpoints
            .iter()
            .map(|url| (url.clone(), Endpoint::parse(url)))
            .collect();
        Client {
            tls: tls_config(&options.tls).map_err(|e| e.to_string()),
            endpoints,
            options,
            token: Mutex::new(None),
        }
    }

    fn token(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.token.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The parsed endpoint and TLS setup, or why requests to `url` cannot
    /// be made.
    fn usable<'a>(
        &'a self,
        url: &str,
        ep: &'a Result<Endpoint, String>,
    ) -> Result<(&'a Endpoint, &'a Arc<rustls::ClientConfig>), EtcdError> {
        let unusable = |message: String| EtcdError::Unreachable {
            endpoint: url.to_string(),
            message,
        };
        let tls = self
            .tls
            .as_ref()
            .map_err(|why| unusable(format!("TLS setup: {why}")))?;
        let ep = ep.as_ref().map_err(|why| unusable(why.clone()))?;
        Ok((ep, tls))
    }

    /// The login token when a user is configured (logging in once, then
    /// reusing it until an error makes [`Client::post`] forget it).
    async fn authenticate(
        &self,
        url: &str,
        ep: &Result<Endpoint, String>,
    ) -> Result<Option<String>, EtcdError> {
        let (Some(user), Some(pass)) = (&self.options.username, &self.options.password) else {
            return Ok(None);
        };
        if let Some(t) = self.token().clone() {
            return Ok(Some(t));
        }
        let v = self
            .call(
                url,
                ep,
                "/v3/auth/authenticate",
                &json!({"name": user, "password": pass}),
                None,
            )
            .await?;
        let token = v
            .get("token")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| EtcdError::Api {
                endpoint: url.to_string(),
                message: "authentication returned no token".into(),
            })?;
        *self.token() = Some(token.clone());
        Ok(Some(token))
    }

    /// One request to one endpoint, bounded by [`REQUEST_TIMEOUT`].
    async fn call(
        &self,
        url: &str,
        ep: &Result<Endpoint, String>,
        path: &str,
        body: &Value,
        token: Option<&str>,
    ) -> Result<Value, EtcdError> {
        let (ep, tls) = self.usable(url, ep)?;
        let unreachable = |message: String| EtcdError::Unreachable {
            endpoint: url.to_string(),
            message,
        };
        let exchange = async {
            let reply = http::post(ep, tls, path, body.to_string(), token)
                .await
                .map_err(unreachable)?;
            let status = reply.status;
            let bytes = reply
                .bytes()
                .await
                .map_err(|e| unreachable(format!("HTTP: {e}")))?;
            answer(status, &bytes).map_err(|message| EtcdError::Api {
                endpoint: url.to_string(),
                message,
            })
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
            Ok(result) => result,
            Err(_) => Err(unreachable(format!(
                "no answer within {}s",
                REQUEST_TIMEOUT.as_secs()
            ))),
        }
    }

    /// POSTs `body` to each endpoint in turn until one answers.
    async fn post(&self, path: &str, body: &Value) -> Result<Value, EtcdError> {
        let mut last = EtcdError::Unreachable {
            endpoint: String::new(),
            message: "no endpoints configured".into(),
        };
        for (url, ep) in &self.endpoints {
            let attempt = match self.authenticate(url, ep).await {
                Ok(token) => self.call(url, ep, path, body, token.as_deref()).await,
                Err(e) => Err(e),
            };
            match attempt {
                Ok(v) => return Ok(v),
                Err(e @ EtcdError::Unreachable { .. }) => last = e,
                Err(e) => {
                    // An expired token: forget it so the next call logs in.
                    *self.token() = None;
                    return Err(e);
                }
            }
        }
        Err(last)
    }

    /// Every key under `prefix`, and the store's revision at that read.
    pub async fn list(&self, prefix: &str) -> Result<(Vec<Kv>, i64), EtcdError> {
        let v = self
            .post(
                "/v3/kv/range",
                &json!({"key": b64(prefix.as_bytes()), "range_end": b64(&prefix_end(prefix))}),
            )
            .await?;
        Ok((kvs_of(&v), header_revision(&v)))
    }

    /// One key, if present.
    pub async fn get(&self, key: &str) -> Result<Option<Kv>, EtcdError> {
        let v = self
            .post("/v3/kv/range", &json!({"key": b64(key.as_bytes())}))
            .await?;
        Ok(v.get("kvs")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(kv_of))
    }

    /// Writes `key`; returns the new revision.
    pub async fn put(&self, key: &str, value: &[u8]) -> Result<i64, EtcdError> {
        let v = self
            .post(
                "/v3/kv/put",
                &json!({"key": b64(key.as_bytes()), "value": b64(value)}),
            )
            .await?;
        Ok(header_revision(&v))
    }

    /// Deletes `key`; returns how many keys were deleted (0 or 1).
    pub async fn delete(&self, key: &str) -> Result<i64, EtcdError> {
        let v = self
            .post("/v3/kv/deleterange", &json!({"key": b64(key.as_bytes())}))
            .await?;
        Ok(v.get("deleted").map(i64_of).unwrap_or(0))
    }

    /// Writes `key` only if its `mod_revision` is still `expected` (0: the
    /// key does not exist): a compare-and-swap. Returns whether it was
    /// written.
    pub async fn put_if(&self, key: &str, value: &[u8], expected: i64) -> Result<bool, EtcdError> {
        let k = b64(key.as_bytes());
        let v = self
            .post(
                "/v3/kv/txn",
                &json!({
                    "compare": [{"target": "MOD", "result": "EQUAL", "key": k, "mod_revision": expected.to_string()}],
                    "success": [{"request_put": {"key": k, "value": b64(value)}}],
                }),
            )
            .await?;
        Ok(v.get("succeeded").and_then(Value::as_bool).unwrap_or(false))
    }

    /// Whether the first endpoint that answers is healthy (a cheap read).
    pub async fn ping(&self) -> Result<(), EtcdError> {
        self.post("/v3/maintenance/status", &json!({}))
            .await
            .map(|_| ())
    }

    /// Watches keys under `prefix` from `start_revision` on the first
    /// endpoint that answers. The [`Watch`] ends after `max_time` at the
    /// latest, waiting for the answer included (so a silently dead
    /// connection is noticed; the caller watches again from its last
    /// revision).
    pub async fn watch(
        &self,
        prefix: &str,
        start_revision: i64,
        max_time: Duration,
    ) -> Result<Watch, EtcdError> {
        let deadline = tokio::time::Instant::now() + max_time;
        let body = json!({"create_request": {
            "key": b64(prefix.as_bytes()),
            "range_end": b64(&prefix_end(prefix)),
            "start_revision": start_revision.to_string(),
            "progress_notify": true,
        }})
        .to_string();
        let mut last = EtcdError::Unreachable {
            endpoint: String::new(),
            message: "no endpoints configured".into(),
        };
        for (url, ep) in &self.endpoints {
            let (endpoint, tls) = self.usable(url, ep)?;
            let token = match self.authenticate(url, ep).await {
                Ok(t) => t,
                Err(e @ EtcdError::Unreachable { .. }) => {
                    last = e;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let post = http::post(endpoint, tls, "/v3/watch", body.clone(), token.as_deref());
            let reply = match tokio::time::timeout_at(deadline, post).await {
                // Time is up before the answer: an empty watch, as one
                // that ran its time.
                Err(_) => return Ok(Watch::new(url, None, deadline)),
                Ok(Err(message)) => {
                    last = EtcdError::Unreachable {
                        endpoint: url.clone(),
                        message,
                    };
                    continue;
                }
                Ok(Ok(reply)) => reply,
            };
            if !reply.status.is_success() {
                return Err(EtcdError::Api {
                    endpoint: url.clone(),
                    message: format!("watch: HTTP {}", reply.status),
                });
            }
            return Ok(Watch::new(url, Some(reply), deadline));
        }
        Err(last)
    }
}
