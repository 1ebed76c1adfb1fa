//! Kubernetes manifests as a source (`--manifests PATH`): YAML documents of
//! kinds Service, Endpoints, EndpointSlice (discovery.k8s.io/v1), Pod, and
//! MetalLB's IPAddressPool and L2Advertisement, alone or in a `List`, mapped
//! onto the same raw structs as the TOML file so one validator serves both.
//!
//! Real manifests carry many fields lb has no use for, so unknown fields are
//! ignored with one warning per document (fields the API server fills in,
//! under `metadata` and `status`, silently); other kinds (Deployment,
//! ConfigMap, ...) are skipped with a warning. A value of the wrong type is an
//! error naming the file, the document and its kind/name. A Pod's `exec`
//! readiness probe is read like any other; the merge refuses it, naming the
//! same, unless the file says `[source.manifests] allow_exec_probes = true`
//! (see `source`).
//!
//! - `files` (private): the files of a directory, each parsed once per version.
//! - `kinds` (private): each document's YAML onto the raw structs, by kind.
//! - `types` (private): the Kubernetes objects in their own shape.

pub mod depth;
mod files;
mod kinds;
mod types;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Deserialize;
use serde_yaml_ng::Value;

use self::kinds::{finish, Acc, Doc};
use crate::error::{ConfigErrors, FieldError};
use crate::source::{DesiredState, Source};

/// MetalLB's annotation choosing the pool of a LoadBalancer service.
pub const ANNOTATION_ADDRESS_POOL: &str = "metallb.universe.tf/address-pool";
/// MetalLB's annotation: services with the same key may share an address.
pub const ANNOTATION_ALLOW_SHARED_IP: &str = "metallb.universe.tf/allow-shared-ip";
/// MetalLB's annotation requesting addresses (comma-separated).
pub const ANNOTATION_LOAD_BALANCER_IPS: &str = "metallb.universe.tf/loadBalancerIPs";
/// lb's annotation asking for a PROXY protocol header to endpoints
/// (`v1` or `v2`): the TOML file's `proxy_protocol`, which a Service's
/// spec has no field for.
pub const ANNOTATION_PROXY_PROTOCOL: &str = "lb-proxy/proxy-protocol";
/// lb's annotation requiring a PROXY header on every connection
/// (`"true"`): the TOML file's `accept_proxy_protocol`.
pub const ANNOTATION_ACCEPT_PROXY_PROTOCOL: &str = "lb-proxy/accept-proxy-protocol";
/// lb's annotation choosing where endpoints are dialed from (`proxy` or
/// `client`): the TOML file's `source_address`.
pub const ANNOTATION_SOURCE_ADDRESS: &str = "lb-proxy/source-address";
/// The label that ties an EndpointSlice to its service.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";

/// `--manifests PATH`: a YAML file, or a directory whose `.yaml`/`.yml` files
/// are read in name order. Every read yields the whole state
/// (level-triggered); an unforced one parses only the files that changed
/// since the last (see `files`), so one file added to a directory of
/// 10,000 costs one parse.
#[derive(Debug)]
pub struct ManifestSource {
    path: PathBuf,
    files: Mutex<files::Files>,
    /// What the directory's watch saw change since the last read.
    touched: std::sync::Arc<crate::source::Touched>,
}

impl Clone for ManifestSource {
    /// A source of the same path that has read nothing yet.
    fn clone(&self) -> Self {
        ManifestSource::new(self.path.clone())
    }
}

impl ManifestSource {
    /// A source reading `path` (file or directory).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        ManifestSource {
            path: path.into(),
            files: Mutex::default(),
            touched: std::sync::Arc::default(),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, files::Files> {
        // A panic in a parse leaves the cache as it was: still usable.
        self.files.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The file or directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The files this source reads now, in order.
    pub fn files(&self) -> Result<Vec<PathBuf>, ConfigErrors> {
        manifest_files(&self.path)
    }
}

impl Source for ManifestSource {
    fn name(&self) -> &str {
        "manifests"
    }
    /// Parses every file again (a forced reload, the first load).
    fn desired(&self) -> Result<DesiredState, ConfigErrors> {
        let _whole_anyway = self.touched.take();
        self.cache().read_all(&self.path)
    }
    /// `None` when no file was added, removed or changed since the last
    /// read; else the whole state, parsing only the files that changed.
    /// While the directory's watch runs, only the files it saw change are
    /// looked at (see [`Touched`](crate::source::Touched)).
    fn desired_if_changed(&self) -> Option<Result<DesiredState, ConfigErrors>> {
        let touched = self.touched.take();
        self.cache().read_changed(&self.path, touched)
    }
    /// A file is watched like the config file (edits, renames, ConfigMap
    /// swaps); a directory for its files being added, changed or removed.
    #[cfg(feature = "watch")]
    fn watch(
        self: std::sync::Arc<Self>,
        changed: crate::source::Changed,
        stop: tokio_util::sync::CancellationToken,
    ) -> crate::source::WatchFuture {
        crate::watch::source_watch_naming(
            crate::watch::WatchTarget::of(&self.path),
            Some(self.touched.clone()),
            changed,
            stop,
        )
    }
}

fn read_error(path: &Path, e: impl std::fmt::Display) -> ConfigErrors {
    ConfigErrors::single(FieldError::parse(
        path.display().to_string(),
        format!("cannot read the manifests: {e}"),
    ))
}

fn manifest_files(path: &Path) -> Result<Vec<PathBuf>, ConfigErrors> {
    Ok(manifest_files_with_meta(path)?
        .into_iter()
        .map(|(p, _, _)| p)
        .collect())
}

/// Whether a directory's file of this name is read: `.yaml` and `.yml`
/// files, hidden ones aside (editor swap files, ConfigMap `..data` links).
fn is_manifest_name(name: &std::ffi::OsStr) -> bool {
    let name = name.to_string_lossy();
    let yaml = name.ends_with(".yaml") || name.ends_with(".yml");
    yaml && !name.starts_with('.')
}

/// The files [`ManifestSource::files`] lists, each with what `stat` says of
/// it (through symlinks, as a ConfigMap volume's files are) and whether it
/// is a symlink (whose target can change without an event on its name).
fn manifest_files_with_meta(
    path: &Path,
) -> Result<Vec<(PathBuf, std::fs::Metadata, bool)>, ConfigErrors> {
    let meta = std::fs::metadata(path).map_err(|e| read_error(path, e))?;
    if !meta.is_dir() {
        return Ok(vec![(path.to_path_buf(), meta, false)]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(|e| read_error(path, e))? {
        let entry = entry.map_err(|e| read_error(path, e))?;
        if !is_manifest_name(&entry.file_name()) {
            continue;
        }
        let p = entry.path();
        // The entry's own `stat` (no walk of the whole path), unless it is
        // a link: a ConfigMap's files are links, and what counts is what
        // they point at. A file gone since the listing (or a dangling link)
        // is not a file.
        let link = !matches!(entry.file_type(), Ok(t) if !t.is_symlink());
        let meta = if link {
            std::fs::metadata(&p)
        } else {
            entry.metadata()
        };
        if let Ok(meta) = meta {
            if meta.is_file() {
                files.push((p, meta, link));
            }
        }
    }
    // Byte order (the same as by name: the files share their directory),
    // not `Path`'s component-wise order: a tenth of a read of 10,000.
    files.sort_by(|a, b| a.0.as_os_str().cmp(b.0.as_os_str()));
    Ok(files)
}

/// Reads a manifest file or directory into one desired state.
pub fn load_path(path: &Path) -> Result<DesiredState, ConfigErrors> {
    files::Files::default().read_all(path)
}

/// Parses the YAML documents of one file (named `file` in messages) into
/// `state`. Every document is read, so every error is reported at once.
pub fn load_str(text: &str, file: &str) -> Result<DesiredState, ConfigErrors> {
    let mut acc = Acc::default();
    load_text(text, file, &mut acc)?;
    Ok(finish(acc))
}

fn load_text(text: &str, file: &str, acc: &mut Acc) -> Result<(), ConfigErrors> {
    if let Some(line) = depth::too_deep(text) {
        return Err(ConfigErrors::single(FieldError::parse(
            format!("{file}: line {line}"),
            format!(
                "nested deeper than {} levels; refused before parsing",
                depth::MAX_DEPTH
            ),
        )));
    }
    let mut errors = Vec::new();
    // One copy of the file's name, shared by the origins of its objects.
    let shared: std::sync::Arc<str> = file.into();
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let document = i + 1;
        let value = match Value::deserialize(doc) {
            Ok(v) => v,
            Err(e) => {
                let error = match e.location() {
                    Some(at) => FieldError::parse(
                        format!("document {document}"),
                        format!("not valid YAML: {e}"),
                    )
                    .at(crate::Location {
                        file: file.to_string(),
                        line: at.line(),
                        column: at.column(),
                    }),
                    None => FieldError::parse(
                        format!("{file}: document {document}"),
                        format!("not valid YAML: {e}"),
                    ),
                };
                errors.push(error);
                // The parser cannot resynchronise after a syntax error.
                break;
            }
        };
        let mut cx = Doc {
            file,
            shared: &shared,
            text,
            document,
            acc,
            errors: &mut errors,
        };
        cx.object(value, "", 0);
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors { errors })
    }
}
