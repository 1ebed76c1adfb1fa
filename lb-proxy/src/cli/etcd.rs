//! `lb-proxy put` and `lb-proxy delete`: objects written to and deleted from
//! the etcd source named by the config file's `[source.etcd]`.

use std::path::Path;

use lb_config::source::etcd::EtcdSettings;
use lb_config::{ConfigErrors, Loader};

/// Why `put` or `delete` failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The config file or the objects are invalid (one error per line).
    #[error("{0}")]
    Invalid(ConfigErrors),
    /// The config file has no `[source.etcd]`.
    #[error("{0} has no [source.etcd]: put and delete write to an etcd source")]
    NoEtcd(String),
    /// `KIND` or `NAMESPACE/NAME` is malformed.
    #[error("{0}")]
    Usage(String),
    /// The object does not exist (delete).
    #[error("{0} not found")]
    NotFound(String),
    /// etcd failed.
    #[error("{0}")]
    Etcd(#[from] lb_config::source::etcd::EtcdError),
    /// An object could not be turned into the JSON stored in etcd.
    #[error("cannot write an object as JSON: {0}")]
    Json(#[source] serde_json::Error),
}

fn etcd_of(config: &Path) -> Result<EtcdSettings, WriteError> {
    let text = std::fs::read_to_string(config).map_err(|e| {
        WriteError::Invalid(ConfigErrors::single(lb_config::FieldError::parse(
            config.display().to_string(),
            format!("cannot read the config file: {e}"),
        )))
    })?;
    let raw = lb_config::parse_str(&text).map_err(WriteError::Invalid)?;
    lb_config::source::etcd::settings_of(&raw)
        .map_err(WriteError::Invalid)?
        .ok_or_else(|| WriteError::NoEtcd(config.display().to_string()))
}

/// `lb-proxy put -f FILE`: reads the objects of `file` (TOML tables like the
/// config file's, or Kubernetes manifests when it ends in .yaml/.yml),
/// validates them with the config file's settings, and writes one key per
/// object. Returns the keys written.
pub async fn put(config: &Path, file: &Path) -> Result<Vec<String>, WriteError> {
    let settings = etcd_of(config)?;
    let yaml = file
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e == "yaml" || e == "yml");
    let objects = if yaml {
        let state = lb_config::manifests::load_path(file).map_err(WriteError::Invalid)?;
        for w in &state.warnings {
            tracing::warn!("{w}");
        }
        lb_config::raw::RawConfig {
            services: state.services.into_iter().map(|o| o.object).collect(),
            pods: state.pods.into_iter().map(|o| o.object).collect(),
            endpoints: state.endpoints.into_iter().map(|o| o.object).collect(),
            ip_pools: state.ip_pools.into_iter().map(|o| o.object).collect(),
            ..Default::default()
        }
    } else {
        let text = std::fs::read_to_string(file).map_err(|e| {
            WriteError::Invalid(ConfigErrors::single(lb_config::FieldError::parse(
                file.display().to_string(),
                format!("cannot read: {e}"),
            )))
        })?;
        lb_config::parse_str(&text).map_err(WriteError::Invalid)?
    };
    // Validate with this node's settings and the objects alone.
    let text = std::fs::read_to_string(config).unwrap_or_default();
    let mut raw = lb_config::parse_str(&text).map_err(WriteError::Invalid)?;
    raw.services = objects.services.clone();
    raw.pods = objects.pods.clone();
    raw.endpoints = objects.endpoints.clone();
    raw.ip_pools = objects.ip_pools.clone();
    let mut loader = Loader::new(Box::<lb_core::alloc::MemoryStore>::default());
    loader.load_raw(&raw).map_err(WriteError::Invalid)?;
    let client = lb_config::source::etcd::Client::new(settings.client.clone());
    let ns = |n: &Option<String>| n.clone().unwrap_or_else(|| "default".into());
    let mut writes: Vec<(String, Vec<u8>)> = Vec::new();
    for s in &objects.services {
        writes.push((
            settings.key("services", &ns(&s.namespace), &s.name),
            json(s)?,
        ));
    }
    for p in &objects.pods {
        writes.push((settings.key("pods", &ns(&p.namespace), &p.name), json(p)?));
    }
    for e in &objects.endpoints {
        writes.push((
            settings.key("endpoints", &ns(&e.namespace), &e.name),
            json(e)?,
        ));
    }
    for p in &objects.ip_pools {
        writes.push((settings.key("ip_pools", "", &p.name), json(p)?));
    }
    let mut written = Vec::new();
    for (key, value) in writes {
        client.put(&key, &value).await?;
        written.push(key);
    }
    Ok(written)
}

/// An object as the JSON stored under its key.
fn json<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, WriteError> {
    serde_json::to_vec(v).map_err(WriteError::Json)
}

/// `lb-proxy delete KIND NAMESPACE/NAME` (`ip_pools` take a bare NAME).
/// Returns the key deleted.
pub async fn delete(config: &Path, kind: &str, name: &str) -> Result<String, WriteError> {
    let settings = etcd_of(config)?;
    let key = match (kind, name.split_once('/')) {
        ("ip_pools", None) => settings.key("ip_pools", "", name),
        ("services" | "pods" | "endpoints", Some((ns, n))) if !ns.is_empty() && !n.is_empty() => {
            settings.key(kind, ns, n)
        }
        ("services" | "pods" | "endpoints", None) => settings.key(kind, "default", name),
        _ => {
            return Err(WriteError::Usage(format!(
                "usage: delete services|pods|endpoints NAMESPACE/NAME, or delete ip_pools NAME (got {kind} {name})"
            )))
        }
    };
    let client = lb_config::source::etcd::Client::new(settings.client.clone());
    match client.delete(&key).await? {
        0 => Err(WriteError::NotFound(key)),
        _ => Ok(key),
    }
}
