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
//! [`Loader::load_raw`](crate::Loader::load_raw); an etcd object that fails validation is skipped and
//! reported with its key, and the rest applies (one bad object in a shared
//! store must not stop every node).
//!
//! - `merge` (private, re-exported): the merge, the load of its result, and
//!   the sharing of unchanged objects between two reads of a source.

#[cfg(feature = "etcd")]
pub mod etcd;
mod exec_probes;
mod file;
mod memory;
mod merge;
pub mod settled;
mod touched;

pub use file::FileSource;
pub use memory::MemorySource;
pub use merge::{load_merged, merge, merge_states, Merged, Origins};
pub use settled::read_settled;
pub use touched::Touched;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::error::{ConfigErrors, FieldError};
use crate::raw::{RawConfig, RawEndpoints, RawIpPool, RawPod, RawService};

/// Where an object came from, so errors and conflicts can name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The TOML config file.
    File,
    /// A Kubernetes manifest: file and document number (1-based).
    Manifest {
        /// The YAML file (shared by the objects of one file).
        path: Arc<str>,
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
