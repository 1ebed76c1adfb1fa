//! `[source.etcd]` validated into [`EtcdSettings`], and the keys lb reads
//! and writes under its prefix.

use std::path::PathBuf;

use super::client::{self, ClientOptions, TlsError, TlsFiles};
use crate::error::{ConfigErrors, Errors, FieldError};
use crate::raw::RawEtcd;

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "/lb";

/// `[source.etcd]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdSettings {
    /// How to reach etcd.
    pub client: ClientOptions,
    /// Key prefix, without a trailing slash.
    pub prefix: String,
    /// Whether pods from etcd may carry `exec` readiness probes (they run
    /// commands as root on every node, so only the local file may by default).
    pub allow_exec_probes: bool,
}

impl EtcdSettings {
    /// Validates `[source.etcd]`, pushing errors under `source.etcd`.
    pub(crate) fn from_raw(raw: &RawEtcd, errs: &mut Errors) -> Option<EtcdSettings> {
        let start = errs.len();
        if raw.endpoints.is_empty() {
            errs.push(FieldError::required(
                "source.etcd.endpoints",
                "at least one etcd client URL",
            ));
        }
        for (i, ep) in raw.endpoints.iter().enumerate() {
            let path = format!("source.etcd.endpoints[{i}]");
            let rest = ep
                .strip_prefix("http://")
                .or_else(|| ep.strip_prefix("https://"));
            if !matches!(rest, Some(r) if !r.is_empty()) {
                errs.push(FieldError::invalid(
                    path,
                    ep.as_str(),
                    "must be a URL such as http://127.0.0.1:2379 or https://127.0.0.1:2379",
                ));
            }
        }
        let prefix = raw
            .prefix
            .clone()
            .unwrap_or_else(|| DEFAULT_PREFIX.to_string());
        if !prefix.starts_with('/') || prefix.ends_with('/') {
            errs.push(FieldError::invalid(
                "source.etcd.prefix",
                prefix.as_str(),
                "must start with / and not end with /",
            ));
        }
        let tls = TlsFiles {
            ca_file: raw.ca_file.as_ref().map(PathBuf::from),
            cert_file: raw.cert_file.as_ref().map(PathBuf::from),
            key_file: raw.key_file.as_ref().map(PathBuf::from),
        };
        match (&tls.cert_file, &tls.key_file) {
            (Some(_), None) => errs.push(FieldError::required(
                "source.etcd.key_file",
                "cert_file and key_file go together",
            )),
            (None, Some(_)) => errs.push(FieldError::required(
                "source.etcd.cert_file",
                "cert_file and key_file go together",
            )),
            _ => {
                // Read now, so `check` and a reload report a missing or
                // mismatched file instead of a source that never syncs.
                if let Err(e) = client::tls_config(&tls) {
                    let (path, detail) = match &e {
                        TlsError::Read { path, source, .. } => {
                            (path, format!("cannot read: {source}"))
                        }
                        TlsError::Invalid { path, message, .. } => (path, message.clone()),
                    };
                    errs.push(FieldError::invalid(
                        format!("source.etcd.{}", e.field()),
                        path.display().to_string(),
                        detail,
                    ));
                }
            }
        }
        if raw.username.is_some() != raw.password.is_some() {
            errs.push(FieldError::required(
                "source.etcd.password",
                "username and password go together",
            ));
        }
        if errs.len() > start {
            return None;
        }
        Some(EtcdSettings {
            client: ClientOptions {
                endpoints: raw.endpoints.clone(),
                username: raw.username.clone(),
                password: raw.password.clone(),
                tls,
            },
            prefix,
            allow_exec_probes: raw.allow_exec_probes.unwrap_or(false),
        })
    }

    /// The key of the shared allocations.
    pub fn allocations_key(&self) -> String {
        format!("{}/allocations", self.prefix)
    }

    /// The key of an object: `kind` is `services`, `pods`, `endpoints` or
    /// `ip_pools` (which take no namespace).
    pub fn key(&self, kind: &str, namespace: &str, name: &str) -> String {
        if kind == "ip_pools" {
            format!("{}/ip_pools/{name}", self.prefix)
        } else {
            let ns = if namespace.is_empty() {
                "default"
            } else {
                namespace
            };
            format!("{}/{kind}/{ns}/{name}", self.prefix)
        }
    }
}

/// `[source.etcd]` of a parsed file, validated; `None` without one.
pub fn settings_of(raw: &crate::raw::RawConfig) -> Result<Option<EtcdSettings>, ConfigErrors> {
    let Some(e) = raw.source.as_ref().and_then(|s| s.etcd.as_ref()) else {
        return Ok(None);
    };
    let mut errs = Errors::default();
    match EtcdSettings::from_raw(e, &mut errs) {
        Some(s) if errs.is_empty() => Ok(Some(s)),
        _ => Err(ConfigErrors { errors: errs.list }),
    }
}
