//! Sources of objects and the one function that merges them.
//!
//! A source yields *whole* desired states (level-triggered), never diffs: the
//! config file ([`FileSource`]), Kubernetes manifests (`--manifests`), etcd
//! (`[source.etcd]`) and an embedder's own discovery ([`MemorySource`], or
//! any [`Source`]) each hand over every object they hold, and [`merge`]
//! combines them with explicit conflict rules:
//!
//! - node identity, `[cluster]`, `[proxy]`, `[admin]`, `[dns]` come from the
//!   file only;
//! - the same object (kind, namespace, name) in the file and in the manifests,
//!   or twice in the manifests, is an error (a user wrote it twice);
//! - between etcd objects that name the same object under different keys, the
//!   older `mod_revision` wins and the loser is reported with its key;
//! - an etcd object that names an object the file or manifests already hold is
//!   skipped and reported with its key (local files win: they are what the
//!   operator of this node wrote).
//! - an `exec` readiness probe from the manifests is an error unless the file
//!   says `[source.manifests] allow_exec_probes = true` (`exec_probes`).
//!
//! [`load_merged`] then validates the merged raw state with
//! [`Loader::load_raw`]; an etcd object that fails validation is skipped and
//! reported with its key, and the rest applies (one bad object in a shared
//! store must not stop every node).

#[cfg(feature = "etcd")]
pub mod etcd;
mod exec_probes;
mod file;
mod memory;
pub mod settled;

pub use file::FileSource;
pub use memory::MemorySource;
pub use settled::read_settled;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::error::{object_path, ConfigErrors, FieldError};
use crate::loader::Loader;
use crate::raw::{RawConfig, RawEndpoints, RawIpPool, RawPod, RawService};

/// Where an object came from, so errors and conflicts can name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The TOML config file.
    File,
    /// A Kubernetes manifest: file and document number (1-based).
    Manifest {
        /// The YAML file.
        path: String,
        /// Document number in that file, from 1.
        document: usize,
    },
    /// A source a program feeds (its name), such as a [`MemorySource`].
    Program {
        /// The source's name.
        source: String,
    },
    /// An etcd key and its `mod_revision`.
    Etcd {
        /// The full key.
        key: String,
        /// The revision that last modified it (older wins a conflict).
        mod_revision: i64,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File => f.write_str("the config file"),
            Origin::Manifest { path, document } => write!(f, "{path} (document {document})"),
            Origin::Program { source } => write!(f, "source {source}"),
            Origin::Etcd { key, mod_revision } => {
                write!(f, "etcd key {key} (mod_revision {mod_revision})")
            }
        }
    }
}

/// One object and its origin. The object is shared: a source that keeps
/// what it read (the manifests, each file parsed once per version) hands
/// out the same objects in every state it yields, so the control plane's
/// copy of the last state costs pointers, not a second copy of the objects,
/// and comparing two states skips the objects they share.
#[derive(Debug, Clone)]
pub struct Sourced<T> {
    /// The object, in the file's raw shape.
    pub object: Arc<T>,
    /// Where it came from.
    pub origin: Origin,
}

impl<T> Sourced<T> {
    /// Wraps `object` from `origin`.
    pub fn new(object: T, origin: Origin) -> Self {
        Sourced {
            object: Arc::new(object),
            origin,
        }
    }
}

impl<T: PartialEq> PartialEq for Sourced<T> {
    fn eq(&self, other: &Self) -> bool {
        self.origin == other.origin
            && (Arc::ptr_eq(&self.object, &other.object) || self.object == other.object)
    }
}

/// The whole desired state one source holds right now, in the raw shape of
/// the file's tables (so every source is validated by the same code).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DesiredState {
    /// `[[services]]`.
    pub services: Vec<Sourced<RawService>>,
    /// `[[pods]]`.
    pub pods: Vec<Sourced<RawPod>>,
    /// `[[endpoints]]`.
    pub endpoints: Vec<Sourced<RawEndpoints>>,
    /// `[[ip_pools]]`.
    pub ip_pools: Vec<Sourced<RawIpPool>>,
    /// Things skipped or ignored on the way (unknown kinds and fields, bad
    /// etcd objects), one line each, to be logged.
    pub warnings: Vec<String>,
    /// The config file's settings and objects: set by the one source that is
    /// the config file ([`FileSource`]); its objects come from the file
    /// ([`Origin::File`]) and its settings are the only ones.
    pub file: Option<RawConfig>,
}

/// What a source's [`Source::watch`] runs as: a future the control plane
/// spawns on its own task tracker, so a source starts nothing of its own.
pub type WatchFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Tells the control plane that one source may hold a new state. Each source
/// gets its own (so a rebuild reads again only the sources that changed); all
/// of them wake the same rebuild task. Cloning is shallow. Notifying twice
/// before the rebuild runs is one change: sources are level-triggered.
#[derive(Debug, Clone)]
pub struct Changed {
    dirty: Arc<AtomicBool>,
    wake: Arc<Notify>,
}

impl Changed {
    /// A signal that wakes `wake` (the rebuild task's).
    pub fn new(wake: Arc<Notify>) -> Changed {
        Changed {
            dirty: Arc::new(AtomicBool::new(false)),
            wake,
        }
    }

    /// The source may hold a new state: mark it and wake the rebuild.
    pub fn notify(&self) {
        self.dirty.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// Whether the source was notified since the last [`Changed::take`],
    /// leaving the mark in place.
    pub fn is_set(&self) -> bool {
        self.dirty.load(Ordering::Acquire)
    }

    /// Whether the source was notified since the last call (the rebuild
    /// calls this once per source per pass).
    pub fn take(&self) -> bool {
        self.dirty.swap(false, Ordering::AcqRel)
    }
}

/// A source's own counters, for `/metrics` (`lb_source_*{source="NAME"}`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SourceStats {
    /// Whether the source cannot confirm now that its state is current.
    pub stale: bool,
    /// Full re-reads (start, disconnect, compaction).
    pub resyncs: u64,
    /// Change batches applied.
    pub updates: u64,
}

impl DesiredState {
    /// Makes each object of this state that equals the object of the same
    /// kind and name in `last` that very object (shared), so validation
    /// recognises it as one it already checked: a source that parses afresh
    /// at every read (the config file, etcd) then costs a comparison per
    /// unchanged object, not a validation. Objects already shared with
    /// `last` (the manifests' unchanged files) cost a pointer comparison.
    pub fn share_unchanged(&mut self, last: &DesiredState) {
        share(&mut self.services, &last.services);
        share(&mut self.pods, &last.pods);
        share(&mut self.endpoints, &last.endpoints);
        share(&mut self.ip_pools, &last.ip_pools);
        if let (Some(now), Some(was)) = (&mut self.file, &last.file) {
            share_objects(&mut now.services, &was.services);
            share_objects(&mut now.pods, &was.pods);
            share_objects(&mut now.endpoints, &was.endpoints);
            share_objects(&mut now.ip_pools, &was.ip_pools);
        }
    }

    /// The objects of `raw` (its services, pods, endpoints and pools, in the
    /// file's shape, e.g. deserialized from a program's own discovery), all
    /// from `origin`; `raw`'s settings are not part of it.
    pub fn from_objects(raw: RawConfig, origin: &Origin) -> DesiredState {
        fn from<T>(objects: Vec<Arc<T>>, origin: &Origin) -> Vec<Sourced<T>> {
            objects
                .into_iter()
                .map(|object| Sourced {
                    object,
                    origin: origin.clone(),
                })
                .collect()
        }
        DesiredState {
            services: from(raw.services, origin),
            pods: from(raw.pods, origin),
            endpoints: from(raw.endpoints, origin),
            ip_pools: from(raw.ip_pools, origin),
            ..DesiredState::default()
        }
    }
}

/// A source of objects: yields its whole current state on demand
/// (level-triggered), and says when that state may have changed. The config
/// file, the manifests, etcd and an embedder's own discovery are all sources.
pub trait Source: Send + Sync + fmt::Debug {
    /// Short name for logs, `/readyz` and metrics (`file`, `manifests`,
    /// `etcd`).
    fn name(&self) -> &str;
    /// The whole current desired state. An error means the source cannot be
    /// read as a whole (a manifest that does not parse): nothing of it
    /// applies. May block on the file system; the control plane calls it off
    /// the async runtime, once per source per rebuild.
    fn desired(&self) -> Result<DesiredState, ConfigErrors>;
    /// [`Source::desired`], or `None` when the source can tell cheaply that
    /// it holds what its last read returned (the config file: the same
    /// bytes), so a watch event that changed nothing costs no parse: a
    /// 5 MB file of 10,000 services takes a third of a second to parse.
    /// Reads every time by default.
    fn desired_if_changed(&self) -> Option<Result<DesiredState, ConfigErrors>> {
        Some(self.desired())
    }
    /// `Some(reason)` while the source cannot confirm that its state is
    /// current (etcd unreachable): the last good state keeps serving.
    fn stale(&self) -> Option<String> {
        None
    }
    /// Follows the source until `stop` is cancelled, calling
    /// [`Changed::notify`] whenever its state may have changed (after its own
    /// debounce, if it needs one). The control plane spawns the future on its
    /// task tracker and waits for it at shutdown, so it must end soon after
    /// `stop`. A source that never changes returns at once (the default).
    fn watch(self: Arc<Self>, changed: Changed, stop: CancellationToken) -> WatchFuture {
        let _ = (changed, stop);
        Box::pin(async {})
    }
    /// Resolves once the source holds its first whole state (etcd: its first
    /// full read), so the first load can include it; the control plane bounds
    /// the wait and starts without a source that is late, which reports
    /// itself stale meanwhile. Sources read on demand are ready at once (the
    /// default).
    fn first_read(self: Arc<Self>) -> WatchFuture {
        Box::pin(async {})
    }
    /// The source's counters for `/metrics`; `None` for a source with none.
    fn stats(&self) -> Option<SourceStats> {
        None
    }
    /// Gives the validation errors of the merged state that name keys this
    /// source holds their place in it (`FILE:LINE:COLUMN`), so a failed
    /// reload says where as `check` does. Nothing by default.
    fn locate(&self, errors: &mut [FieldError]) {
        let _ = errors;
    }
}

/// The merged raw state, and where each of its objects came from, so a bad
/// etcd object can be dropped by key and a manifest object's error located
/// in its file.
#[derive(Debug, Clone, Default)]
pub struct Merged {
    /// Settings from the file, objects from every source.
    pub raw: RawConfig,
    /// Conflicts resolved and objects skipped, one line each.
    pub warnings: Vec<String>,
    /// Where each object of `raw` came from, in `raw`'s order.
    pub origins: Origins,
}

/// Where each object of a merged [`RawConfig`] came from, kind by kind, in
/// the order of its lists. Kept as it comes out of the merge, and turned
/// into paths only when a load fails: a load of 10,000 services spent a
/// tenth of its time writing down paths no error would name.
#[derive(Debug, Clone, Default)]
pub struct Origins {
    /// Of `raw.services`.
    pub services: Vec<Origin>,
    /// Of `raw.pods`.
    pub pods: Vec<Origin>,
    /// Of `raw.endpoints`.
    pub endpoints: Vec<Origin>,
    /// Of `raw.ip_pools`.
    pub ip_pools: Vec<Origin>,
}

impl Merged {
    /// Object path (`services[NS/NAME]`) → etcd key, for the etcd objects.
    pub fn etcd_paths(&self) -> BTreeMap<String, String> {
        paths(&self.raw, &self.origins, |o| match o {
            Origin::Etcd { key, .. } => Some(key.clone()),
            _ => None,
        })
    }

    /// Object path → the manifest file and document (from 1) it came from.
    pub fn manifest_paths(&self) -> BTreeMap<String, (String, usize)> {
        paths(&self.raw, &self.origins, |o| match o {
            Origin::Manifest { path, document } => Some((path.clone(), *document)),
            _ => None,
        })
    }

    /// Drops the objects whose paths are in `bad` (with their origins).
    fn drop_paths(&mut self, bad: &BTreeMap<String, Vec<String>>) {
        fn keep<T: Named>(
            objects: &mut Vec<Arc<T>>,
            origins: &mut Vec<Origin>,
            kind: &str,
            bad: &BTreeMap<String, Vec<String>>,
        ) {
            let kept: Vec<(Arc<T>, Origin)> = std::mem::take(objects)
                .into_iter()
                .zip(std::mem::take(origins))
                .enumerate()
                .filter(|(i, (o, _))| {
                    let (ns, name) = o.id();
                    !bad.contains_key(&object_path(kind, ns, name, *i))
                })
                .map(|(_, pair)| pair)
                .collect();
            (*objects, *origins) = kept.into_iter().unzip();
        }
        let (raw, origins) = (&mut self.raw, &mut self.origins);
        keep(&mut raw.services, &mut origins.services, "services", bad);
        keep(&mut raw.pods, &mut origins.pods, "pods", bad);
        keep(&mut raw.endpoints, &mut origins.endpoints, "endpoints", bad);
        keep(&mut raw.ip_pools, &mut origins.ip_pools, "ip_pools", bad);
    }
}

/// The path validation names each object of `raw` by, for the objects whose
/// origin `pick` chooses, with what it picks.
fn paths<V>(
    raw: &RawConfig,
    origins: &Origins,
    pick: impl Fn(&Origin) -> Option<V>,
) -> BTreeMap<String, V> {
    fn add<T: Named, V>(
        out: &mut BTreeMap<String, V>,
        kind: &str,
        objects: &[Arc<T>],
        origins: &[Origin],
        pick: &impl Fn(&Origin) -> Option<V>,
    ) {
        for (i, (o, origin)) in objects.iter().zip(origins).enumerate() {
            if let Some(v) = pick(origin) {
                let (ns, name) = o.id();
                out.insert(object_path(kind, ns, name, i), v);
            }
        }
    }
    let mut out = BTreeMap::new();
    add(
        &mut out,
        "services",
        &raw.services,
        &origins.services,
        &pick,
    );
    add(&mut out, "pods", &raw.pods, &origins.pods, &pick);
    add(
        &mut out,
        "endpoints",
        &raw.endpoints,
        &origins.endpoints,
        &pick,
    );
    add(
        &mut out,
        "ip_pools",
        &raw.ip_pools,
        &origins.ip_pools,
        &pick,
    );
    out
}

/// `now`'s objects that equal `last`'s of the same name, made `last`'s.
fn share<T: Named + PartialEq>(now: &mut [Sourced<T>], last: &[Sourced<T>]) {
    let by_name: std::collections::HashMap<(&str, &str), &Arc<T>> =
        last.iter().map(|o| (o.object.id(), &o.object)).collect();
    for o in now {
        if let Some(was) = by_name.get(&o.object.id()) {
            if !Arc::ptr_eq(&o.object, was) && *o.object == ***was {
                o.object = Arc::clone(was);
            }
        }
    }
}

/// [`share`] for the config file's own lists.
fn share_objects<T: Named + PartialEq>(now: &mut [Arc<T>], last: &[Arc<T>]) {
    let by_name: std::collections::HashMap<(&str, &str), &Arc<T>> =
        last.iter().map(|o| (o.id(), o)).collect();
    for o in now {
        if let Some(was) = by_name.get(&o.id()) {
            if !Arc::ptr_eq(o, was) && **o == ***was {
                *o = Arc::clone(was);
            }
        }
    }
}

/// What names an object among those of its kind: (namespace, name); the
/// namespace defaults to `default`, and pools have none.
trait Named {
    fn id(&self) -> (&str, &str);
}

impl Named for RawService {
    fn id(&self) -> (&str, &str) {
        (self.namespace.as_deref().unwrap_or("default"), &self.name)
    }
}

impl Named for RawPod {
    fn id(&self) -> (&str, &str) {
        (self.namespace.as_deref().unwrap_or("default"), &self.name)
    }
}

impl Named for RawEndpoints {
    fn id(&self) -> (&str, &str) {
        (self.namespace.as_deref().unwrap_or("default"), &self.name)
    }
}

impl Named for RawIpPool {
    fn id(&self) -> (&str, &str) {
        ("", &self.name)
    }
}

/// Merges one kind: local objects (file, manifests) must be unique; etcd
/// objects lose to local ones and among themselves the older mod_revision
/// wins.
fn merge_kind<T: Named>(
    kind: &str,
    file: Vec<Arc<T>>,
    others: Vec<Sourced<T>>,
    errors: &mut Vec<FieldError>,
    warnings: &mut Vec<String>,
) -> (Vec<Arc<T>>, Vec<Origin>) {
    let from_file = file.len();
    // Local sources first, then etcd in mod_revision order (older first), so
    // the older etcd object is the one that stays.
    let (mut etcd, local): (Vec<_>, Vec<_>) = others
        .into_iter()
        .partition(|o| matches!(o.origin, Origin::Etcd { .. }));
    etcd.sort_by_key(|o| match &o.origin {
        Origin::Etcd { mod_revision, .. } => *mod_revision,
        _ => 0,
    });
    let candidates: Vec<Sourced<T>> = file
        .into_iter()
        .map(|object| Sourced {
            object,
            origin: Origin::File,
        })
        .chain(local)
        .chain(etcd)
        .collect();
    // Which candidates stay: the index borrows their names, so the
    // candidates are moved out only once it is done.
    let mut keep = vec![true; candidates.len()];
    let mut index: std::collections::HashMap<(&str, &str), usize> =
        std::collections::HashMap::with_capacity(candidates.len());
    for (i, o) in candidates.iter().enumerate() {
        let (ns, name) = o.object.id();
        // The file's own duplicates are validation's to report.
        if i < from_file {
            index.insert((ns, name), i);
            continue;
        }
        if name.is_empty() {
            continue;
        }
        let Some(&held) = index.get(&(ns, name)) else {
            index.insert((ns, name), i);
            continue;
        };
        keep[i] = false;
        let held = &candidates[held].origin;
        let path = object_path(kind, ns, name, 0);
        match (&o.origin, held) {
            (Origin::Etcd { key: lost, .. }, _) => warnings.push(format!(
                "{path}: etcd key {lost} skipped: the same object is already defined by {held}"
            )),
            _ => errors.push(FieldError::duplicate(
                format!("{path}.name"),
                format!("{ns}/{name}: defined in {held} and in {}", o.origin),
            )),
        }
    }
    drop(index);
    candidates
        .into_iter()
        .zip(keep)
        .filter(|(_, keep)| *keep)
        .map(|(o, _)| (o.object, o.origin))
        .unzip()
}

/// Merges the file's settings and objects with other sources' objects under
/// the conflict rules of the module docs. Errors are local duplicates.
pub fn merge(file: &RawConfig, others: Vec<DesiredState>) -> Result<Merged, ConfigErrors> {
    merge_owned(file.clone(), others)
}

/// [`merge`], moving the file's objects rather than copying them (a load
/// of 10,000 services copied every raw object twice here).
fn merge_owned(mut file: RawConfig, others: Vec<DesiredState>) -> Result<Merged, ConfigErrors> {
    let file_services = std::mem::take(&mut file.services);
    let file_pods = std::mem::take(&mut file.pods);
    let file_endpoints = std::mem::take(&mut file.endpoints);
    let file_pools = std::mem::take(&mut file.ip_pools);
    let mut errors = Vec::new();
    let mut merged = Merged {
        raw: file,
        ..Merged::default()
    };
    let mut services = Vec::new();
    let mut pods = Vec::new();
    let mut endpoints = Vec::new();
    let mut ip_pools = Vec::new();
    for s in others {
        services.extend(s.services);
        pods.extend(s.pods);
        endpoints.extend(s.endpoints);
        ip_pools.extend(s.ip_pools);
        merged.warnings.extend(s.warnings);
    }
    errors.extend(exec_probes::refused(&merged.raw, &pods));
    let (v, keys) = merge_kind(
        "services",
        file_services,
        services,
        &mut errors,
        &mut merged.warnings,
    );
    merged.origins.services = keys;
    merged.raw.services = v;
    let (v, keys) = merge_kind("pods", file_pods, pods, &mut errors, &mut merged.warnings);
    merged.origins.pods = keys;
    merged.raw.pods = v;
    let (v, keys) = merge_kind(
        "endpoints",
        file_endpoints,
        endpoints,
        &mut errors,
        &mut merged.warnings,
    );
    merged.origins.endpoints = keys;
    merged.raw.endpoints = v;
    let (v, keys) = merge_kind(
        "ip_pools",
        file_pools,
        ip_pools,
        &mut errors,
        &mut merged.warnings,
    );
    merged.origins.ip_pools = keys;
    merged.raw.ip_pools = v;
    if errors.is_empty() {
        Ok(merged)
    } else {
        Err(ConfigErrors { errors })
    }
}

/// Merges whole states from every source (one of which may carry the
/// config file: [`DesiredState::file`]) under the conflict rules of the
/// module docs. Two states that both carry a file are an error.
pub fn merge_states(states: Vec<DesiredState>) -> Result<Merged, ConfigErrors> {
    let mut file: Option<RawConfig> = None;
    let mut others = Vec::with_capacity(states.len());
    for mut state in states {
        if let Some(f) = state.file.take() {
            if file.is_some() {
                return Err(ConfigErrors::single(FieldError::internal(
                    "sources",
                    "two sources carry a config file",
                )));
            }
            file = Some(f);
        }
        others.push(state);
    }
    merge_owned(file.unwrap_or_default(), others)
}

/// Merges and validates every source's state (see [`merge_states`]) through
/// `loader` (which keeps allocations stable). An etcd object named by a
/// validation error is dropped (reported with its key) and the rest is tried
/// again, a bounded number of times; errors in local objects fail the load as
/// a bad file does.
pub fn load_merged(loader: &mut Loader, states: Vec<DesiredState>) -> Result<Config, ConfigErrors> {
    let mut merged = merge_states(states)?;
    #[cfg(feature = "manifests")]
    let located = |mut errors: ConfigErrors, merged: &Merged| {
        crate::locate::locate_manifest_objects(&mut errors.errors, &merged.manifest_paths());
        errors
    };
    #[cfg(not(feature = "manifests"))]
    let located = |errors: ConfigErrors, _: &Merged| errors;
    let mut warnings = std::mem::take(&mut merged.warnings);
    // Each round drops at least one object, so a handful of rounds covers
    // any realistic number of bad objects; the bound keeps it finite.
    for _round in 0..8 {
        match loader.load_raw(&merged.raw) {
            Ok(mut config) => {
                warnings.append(&mut config.warnings);
                config.warnings = warnings;
                return Ok(config);
            }
            Err(errors) => {
                // Paths are recomputed each round: an unnamed object's
                // (`kind[INDEX]`) moves when objects before it are dropped.
                let etcd_paths = merged.etcd_paths();
                let mut bad: BTreeMap<String, Vec<String>> = BTreeMap::new();
                let mut local = Vec::new();
                for e in &errors.errors {
                    let hit = etcd_paths.iter().find(|(p, _)| {
                        e.path == **p
                            || e.path.starts_with(&format!("{p}."))
                            || e.path.starts_with(&format!("{p}["))
                    });
                    match hit {
                        Some((p, key)) => bad
                            .entry(p.clone())
                            .or_default()
                            .push(format!("{key}: {e}")),
                        None => local.push(e.clone()),
                    }
                }
                if !local.is_empty() || bad.is_empty() {
                    return Err(located(errors, &merged));
                }
                for lines in bad.values() {
                    for l in lines {
                        warnings.push(format!("skipped etcd object: {l}"));
                    }
                }
                merged.drop_paths(&bad);
            }
        }
    }
    loader
        .load_raw(&merged.raw)
        .map_err(|e| located(e, &merged))
}
