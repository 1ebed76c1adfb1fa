//! A small etcd v3 client over etcd's own JSON gateway (`POST /v3/kv/range`,
//! `/v3/kv/put`, `/v3/kv/deleterange`, `/v3/kv/txn`, streaming `/v3/watch`;
//! keys and values base64). It needs only an HTTP client, so the build needs
//! no `protoc` and the README's commands work on a fresh machine.
//!
//! Blocking on purpose: the source runs on its own thread, like the file
//! watcher, and `put`/`delete` are one-shot CLI commands.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rustls::pki_types::pem::PemObject;
use serde_json::{json, Value};

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

/// The PEM files of `[source.etcd]` for TLS: whom to trust and, for etcd's
/// `--client-cert-auth`, who this client is. Paths, not contents, so a
/// restart picks up rotated files and the key never sits in a Debug print.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsFiles {
    /// CA bundle that signs etcd's server certificate; without it the
    /// public web roots (webpki-roots) are trusted.
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM), with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// Private key of `cert_file` (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
}

/// A TLS file of `[source.etcd]` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// Which setting (`ca_file`, `cert_file`, `key_file`).
        field: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file holds no usable PEM item, or the key does not fit the
    /// certificate.
    #[error("{path}: {message}")]
    Invalid {
        /// Which setting (`ca_file`, `cert_file`, `key_file`).
        field: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl TlsError {
    /// The setting it is about (`ca_file`, `cert_file` or `key_file`), for
    /// the error path `source.etcd.<field>`.
    pub fn field(&self) -> &'static str {
        match self {
            TlsError::Read { field, .. } | TlsError::Invalid { field, .. } => field,
        }
    }
}

fn read_pem(field: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        field,
        path: path.to_path_buf(),
        source,
    })
}

fn certificates(
    field: &'static str,
    path: &Path,
) -> Result<Vec<ureq::tls::Certificate<'static>>, TlsError> {
    let invalid = |message: String| TlsError::Invalid {
        field,
        path: path.to_path_buf(),
        message,
    };
    let pem = read_pem(field, path)?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item.map_err(|e| invalid(format!("not PEM: {e}")))? {
            ureq::tls::PemItem::Certificate(c) => certs.push(c),
            _ => continue,
        }
    }
    if certs.is_empty() {
        return Err(invalid(
            "no PEM certificate (BEGIN CERTIFICATE) in it".into(),
        ));
    }
    Ok(certs)
}

/// Reads and checks the TLS files: every certificate parses and the client
/// key matches the client certificate (checked here because ureq would
/// panic on a mismatch at the first connection). `None` when no file is
/// set: the endpoints' own scheme decides (https then trusts the web roots).
pub fn tls_config(files: &TlsFiles) -> Result<Option<ureq::tls::TlsConfig>, TlsError> {
    if files == &TlsFiles::default() {
        return Ok(None);
    }
    let mut builder = ureq::tls::TlsConfig::builder();
    if let Some(ca) = &files.ca_file {
        let roots = certificates("ca_file", ca)?;
        builder = builder.root_certs(ureq::tls::RootCerts::new_with_certs(&roots));
    }
    if let (Some(cert), Some(key)) = (&files.cert_file, &files.key_file) {
        let chain = certificates("cert_file", cert)?;
        let invalid = |message: String| TlsError::Invalid {
            field: "key_file",
            path: key.clone(),
            message,
        };
        let key_pem = read_pem("key_file", key)?;
        let private = ureq::tls::PrivateKey::from_pem(&key_pem)
            .map_err(|e| invalid(format!("no usable PEM private key: {e}")))?;
        let der = rustls::pki_types::PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| invalid(format!("no usable PEM private key: {e}")))?;
        let chain_der = chain
            .iter()
            .map(|c| rustls::pki_types::CertificateDer::from(c.der().to_vec()))
            .collect();
        rustls::sign::CertifiedKey::from_der(
            chain_der,
            der,
            &rustls::crypto::ring::default_provider(),
        )
        .map_err(|e| invalid(format!("does not fit {}: {e}", cert.display())))?;
        builder = builder.client_cert(Some(ureq::tls::ClientCert::new_with_certs(&chain, private)));
    }
    Ok(Some(builder.build()))
}

/// A blocking etcd v3 client. Requests go to the first endpoint that answers.
#[derive(Debug)]
pub struct Client {
    options: ClientOptions,
    agent: ureq::Agent,
    token: Mutex<Option<String>>,
    /// Why the client cannot make requests (a TLS file went bad since
    /// validation); every request reports it.
    broken: Option<String>,
}

fn i64_of(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

fn b64(s: &[u8]) -> String {
    B64.encode(s)
}

/// The end of the range of keys starting with `prefix` (etcd's convention:
/// the prefix with its last byte incremented).
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn kv_of(v: &Value) -> Option<Kv> {
    let key = B64.decode(v.get("key")?.as_str()?).ok()?;
    let value = match v.get("value").and_then(Value::as_str) {
        Some(s) => B64.decode(s).ok()?,
        None => Vec::new(),
    };
    Some(Kv {
        key: String::from_utf8(key).ok()?,
        value,
        mod_revision: v.get("mod_revision").map(i64_of).unwrap_or(0),
    })
}

impl Client {
    /// A client for `options` (no connection is made yet).
    /// The TLS files are read now; when they cannot be used (validation
    /// checked them, so they changed since), every request fails with the
    /// reason and the source reports itself stale.
    pub fn new(options: ClientOptions) -> Self {
        let builder = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(2)));
        let (builder, broken) = match tls_config(&options.tls) {
            Ok(Some(tls)) => (builder.tls_config(tls), None),
            Ok(None) => (builder, None),
            Err(e) => (builder, Some(e.to_string())),
        };
        Client {
            options,
            agent: builder.build().into(),
            token: Mutex::new(None),
            broken,
        }
    }

    fn check_usable(&self, endpoint: &str) -> Result<(), EtcdError> {
        match &self.broken {
            Some(why) => Err(EtcdError::Unreachable {
                endpoint: endpoint.to_string(),
                message: format!("TLS setup: {why}"),
            }),
            None => Ok(()),
        }
    }

    fn authenticate(&self, endpoint: &str) -> Result<Option<String>, EtcdError> {
        let (Some(user), Some(pass)) = (&self.options.username, &self.options.password) else {
            return Ok(None);
        };
        if let Some(t) = self.token.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Ok(Some(t));
        }
        let v = self.raw_post(
            endpoint,
            "/v3/auth/authenticate",
            &json!({"name": user, "password": pass}),
            None,
            Duration::from_secs(5),
        )?;
        let token = v
            .get("token")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| EtcdError::Api {
                endpoint: endpoint.to_string(),
                message: "authentication returned no token".into(),
            })?;
        *self.token.lock().unwrap_or_else(|e| e.into_inner()) = Some(token.clone());
        Ok(Some(token))
    }

    fn raw_post(
        &self,
        endpoint: &str,
        path: &str,
        body: &Value,
        token: Option<&str>,
        timeout: Duration,
    ) -> Result<Value, EtcdError> {
        self.check_usable(endpoint)?;
        let url = format!("{}{path}", endpoint.trim_end_matches('/'));
        let mut req = self
            .agent
            .post(&url)
            .config()
            .timeout_global(Some(timeout))
            .build()
            .content_type("application/json");
        if let Some(t) = token {
            req = req.header("Authorization", t);
        }
        let unreachable = |e: ureq::Error| EtcdError::Unreachable {
            endpoint: endpoint.to_string(),
            message: e.to_string(),
        };
        let mut resp = req.send(body.to_string()).map_err(unreachable)?;
        let status = resp.status();
        let text = resp.body_mut().read_to_string().map_err(unreachable)?;
        let v: Value = serde_json::from_str(&text).map_err(|e| EtcdError::Api {
            endpoint: endpoint.to_string(),
            message: format!("HTTP {status}: not JSON ({e}): {text}"),
        })?;
        if !status.is_success() || v.get("error").is_some() {
            let msg = v
                .get("message")
                .or_else(|| v.get("error"))
                .map(|m| {
                    m.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| m.to_string())
                })
                .unwrap_or_else(|| text.clone());
            return Err(EtcdError::Api {
                endpoint: endpoint.to_string(),
                message: format!("HTTP {status}: {msg}"),
            });
        }
        Ok(v)
    }

    /// POSTs `body` to each endpoint in turn until one answers.
    fn post(&self, path: &str, body: &Value) -> Result<Value, EtcdError> {
        let mut last = EtcdError::Unreachable {
            endpoint: String::new(),
            message: "no endpoints configured".into(),
        };
        for ep in &self.options.endpoints {
            let attempt = self.authenticate(ep).and_then(|token| {
                self.raw_post(ep, path, body, token.as_deref(), Duration::from_secs(5))
            });
            match attempt {
                Ok(v) => return Ok(v),
                Err(e @ EtcdError::Unreachable { .. }) => last = e,
                Err(e) => {
                    // An expired token: forget it so the next call logs in.
                    *self.token.lock().unwrap_or_else(|e| e.into_inner()) = None;
                    return Err(e);
                }
            }
        }
        Err(last)
    }

    /// Every key under `prefix`, and the store's revision at that read.
    pub fn list(&self, prefix: &str) -> Result<(Vec<Kv>, i64), EtcdError> {
        let v = self.post(
            "/v3/kv/range",
            &json!({"key": b64(prefix.as_bytes()), "range_end": b64(&prefix_end(prefix))}),
        )?;
        let revision = v
            .get("header")
            .and_then(|h| h.get("revision"))
            .map(i64_of)
            .unwrap_or(0);
        let kvs = v
            .get("kvs")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(kv_of).collect())
            .unwrap_or_default();
        Ok((kvs, revision))
    }

    /// One key, if present.
    pub fn get(&self, key: &str) -> Result<Option<Kv>, EtcdError> {
        let v = self.post("/v3/kv/range", &json!({"key": b64(key.as_bytes())}))?;
        Ok(v.get("kvs")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(kv_of))
    }

    /// Writes `key`; returns the new revision.
    pub fn put(&self, key: &str, value: &[u8]) -> Result<i64, EtcdError> {
        let v = self.post(
            "/v3/kv/put",
            &json!({"key": b64(key.as_bytes()), "value": b64(value)}),
        )?;
        Ok(v.get("header")
            .and_then(|h| h.get("revision"))
            .map(i64_of)
            .unwrap_or(0))
    }

    /// Deletes `key`; returns how many keys were deleted (0 or 1).
    pub fn delete(&self, key: &str) -> Result<i64, EtcdError> {
        let v = self.post("/v3/kv/deleterange", &json!({"key": b64(key.as_bytes())}))?;
        Ok(v.get("deleted").map(i64_of).unwrap_or(0))
    }

    /// Writes `key` only if its `mod_revision` is still `expected` (0: the
    /// key does not exist): a compare-and-swap. Returns whether it was
    /// written.
    pub fn put_if(&self, key: &str, value: &[u8], expected: i64) -> Result<bool, EtcdError> {
        let k = b64(key.as_bytes());
        let v = self.post(
            "/v3/kv/txn",
            &json!({
                "compare": [{"target": "MOD", "result": "EQUAL", "key": k, "mod_revision": expected.to_string()}],
                "success": [{"request_put": {"key": k, "value": b64(value)}}],
            }),
        )?;
        Ok(v.get("succeeded").and_then(Value::as_bool).unwrap_or(false))
    }

    /// Whether the first endpoint that answers is healthy (a cheap read).
    pub fn ping(&self) -> Result<(), EtcdError> {
        self.post("/v3/maintenance/status", &json!({})).map(|_| ())
    }

    /// Watches keys under `prefix` from `start_revision`, calling `on_event`
    /// for each batch. Returns when the stream ends (etcd went away: the
    /// caller re-lists), when `on_event` returns false, or after `max_time`
    /// (so a silently dead connection is noticed; the caller re-watches from
    /// the last revision). A compacted start revision is
    /// [`EtcdError::Compacted`] (the caller re-lists).
    pub fn watch(
        &self,
        prefix: &str,
        start_revision: i64,
        max_time: Duration,
        mut on_event: impl FnMut(Vec<WatchEvent>) -> bool,
    ) -> Result<(), EtcdError> {
        let body = json!({"create_request": {
            "key": b64(prefix.as_bytes()),
            "range_end": b64(&prefix_end(prefix)),
            "start_revision": start_revision.to_string(),
            "progress_notify": true,
        }});
        let mut last = EtcdError::Unreachable {
            endpoint: String::new(),
            message: "no endpoints configured".into(),
        };
        for ep in &self.options.endpoints {
            self.check_usable(ep)?;
            let token = match self.authenticate(ep) {
                Ok(t) => t,
                Err(e @ EtcdError::Unreachable { .. }) => {
                    last = e;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let url = format!("{}/v3/watch", ep.trim_end_matches('/'));
            let mut req = self
                .agent
                .post(&url)
                .config()
                .timeout_global(None)
                .timeout_recv_body(Some(max_time))
                .build()
                .content_type("application/json");
            if let Some(t) = &token {
                req = req.header("Authorization", t.as_str());
            }
            let resp = match req.send(body.to_string()) {
                Ok(r) => r,
                Err(e) => {
                    last = EtcdError::Unreachable {
                        endpoint: ep.clone(),
                        message: e.to_string(),
                    };
                    continue;
                }
            };
            if !resp.status().is_success() {
                return Err(EtcdError::Api {
                    endpoint: ep.clone(),
                    message: format!("watch: HTTP {}", resp.status()),
                });
            }
            let reader = resp.into_body().into_reader();
            return read_stream(ep, reader, &mut on_event);
        }
        Err(last)
    }
}

fn read_stream(
    ep: &str,
    reader: impl Read,
    on_event: &mut impl FnMut(Vec<WatchEvent>) -> bool,
) -> Result<(), EtcdError> {
    let stream = serde_json::Deserializer::from_reader(reader).into_iter::<Value>();
    for msg in stream {
        let msg = match msg {
            Ok(m) => m,
            // A timeout or a closed connection ends the stream.
            Err(e) if e.is_eof() || e.is_io() => return Ok(()),
            Err(e) => {
                return Err(EtcdError::Api {
                    endpoint: ep.to_string(),
                    message: format!("watch stream: {e}"),
                })
            }
        };
        if let Some(err) = msg.get("error") {
            return Err(EtcdError::Api {
                endpoint: ep.to_string(),
                message: format!("watch: {err}"),
            });
        }
        let Some(result) = msg.get("result") else {
            continue;
        };
        let compact = result.get("compact_revision").map(i64_of).unwrap_or(0);
        if compact > 0 {
            return Err(EtcdError::Compacted(compact));
        }
        if result.get("canceled").and_then(Value::as_bool) == Some(true) {
            return Ok(());
        }
        let revision = result
            .get("header")
            .and_then(|h| h.get("revision"))
            .map(i64_of)
            .unwrap_or(0);
        let mut batch = Vec::new();
        for ev in result
            .get("events")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let Some(kv) = ev.get("kv").and_then(kv_of) else {
                continue;
            };
            // The gateway omits the default enum value: no type is PUT.
            if ev.get("type").and_then(Value::as_str) == Some("DELETE") {
                batch.push(WatchEvent::Delete {
                    key: kv.key,
                    revision: kv.mod_revision,
                });
            } else {
                batch.push(WatchEvent::Put(kv));
            }
        }
        if batch.is_empty() {
            if result.get("created").and_then(Value::as_bool) == Some(true) {
                continue;
            }
            batch.push(WatchEvent::Progress(revision));
        }
        if !on_event(batch) {
            return Ok(());
        }
    }
    Ok(())
}
