//! The etcd v3 source (`[source.etcd]`): one object per key,
//! `<prefix>/services/<ns>/<name>`, `<prefix>/endpoints/<ns>/<name>`,
//! `<prefix>/pods/<ns>/<name>`, `<prefix>/ip_pools/<name>`, the value the
//! fields of the file's table (`name` and `namespace` included) in JSON or
//! TOML. A full read at start, then a watch from that revision; on a
//! disconnect or a compaction, a re-list and a re-watch. While etcd is
//! unreachable the last good state keeps serving and the source reports
//! itself stale. Allocations that every node must agree on live under
//! `<prefix>/allocations`, written with a compare-and-swap ([`EtcdStore`]).

pub mod client;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lb_core::alloc::{AllocationStore, Allocations, StoreError};
use serde::de::DeserializeOwned;

pub use client::{Client, ClientOptions, EtcdError, Kv, TlsError, TlsFiles, WatchEvent};

use crate::error::{ConfigErrors, Errors, FieldError};
use crate::raw::{RawEndpoints, RawEtcd, RawIpPool, RawPod, RawService};
use crate::source::{DesiredState, Origin, Source, Sourced};

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

fn parse_value<T: DeserializeOwned>(value: &[u8]) -> Result<T, String> {
    let text = std::str::from_utf8(value).map_err(|e| format!("not UTF-8: {e}"))?;
    if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))
    } else {
        toml::from_str(text).map_err(|e| format!("invalid TOML: {}", e.message()))
    }
}

fn fill(ns_field: &mut Option<String>, name_field: &mut String, ns: &str, name: &str) {
    if name_field.is_empty() {
        *name_field = name.to_string();
    }
    if ns_field.is_none() {
        *ns_field = Some(ns.to_string());
    }
}

/// Decodes every key under the prefix into one desired state. A key that
/// cannot be decoded is skipped and named in a warning; the rest applies.
pub fn decode(settings: &EtcdSettings, kvs: &BTreeMap<String, (Vec<u8>, i64)>) -> DesiredState {
    let mut state = DesiredState::default();
    let base = format!("{}/", settings.prefix);
    for (key, (value, mod_revision)) in kvs {
        let origin = Origin::Etcd {
            key: key.clone(),
            mod_revision: *mod_revision,
        };
        let Some(rest) = key.strip_prefix(&base) else {
            continue;
        };
        let parts: Vec<&str> = rest.split('/').collect();
        let bad = |m: String| format!("etcd key {key}: skipped: {m}");
        let result: Result<(), String> = match parts.as_slice() {
            ["allocations"] => Ok(()),
            ["services", ns, name] => parse_value::<RawService>(value).map(|mut o| {
                fill(&mut o.namespace, &mut o.name, ns, name);
                state.services.push(Sourced::new(o, origin));
            }),
            ["endpoints", ns, name] => parse_value::<RawEndpoints>(value).map(|mut o| {
                fill(&mut o.namespace, &mut o.name, ns, name);
                state.endpoints.push(Sourced::new(o, origin));
            }),
            ["pods", ns, name] => parse_value::<RawPod>(value).and_then(|mut o| {
                fill(&mut o.namespace, &mut o.name, ns, name);
                let exec = o.readiness_probe.as_ref().is_some_and(|p| p.exec.is_some());
                if exec && !settings.allow_exec_probes {
                    return Err("exec readiness probes from etcd are refused (they run commands as root on every node); set [source.etcd] allow_exec_probes = true to accept them".into());
                }
                // From etcd a pod without a node is local nowhere.
                if o.node.is_none() {
                    o.node = Some(String::new());
                }
                state.pods.push(Sourced::new(o, origin));
                Ok(())
            }),
            ["ip_pools", name] => parse_value::<RawIpPool>(value).map(|mut o| {
                if o.name.is_empty() {
                    o.name = name.to_string();
                }
                state.ip_pools.push(Sourced::new(o, origin));
            }),
            _ => Err("not a key lb reads (<prefix>/services|endpoints|pods/<ns>/<name>, <prefix>/ip_pools/<name>)".into()),
        };
        if let Err(m) = result {
            tracing::warn!("{}", bad(m.clone()));
            state.warnings.push(bad(m));
        }
    }
    state
}

// === impl EtcdSource ===

#[derive(Debug, Default)]
struct Status {
    kvs: BTreeMap<String, (Vec<u8>, i64)>,
    revision: i64,
    /// Why the state may not be current, and since when.
    stale: Option<(String, Instant)>,
    /// Whether a full read ever succeeded.
    synced: bool,
}

#[derive(Debug)]
struct Shared {
    settings: EtcdSettings,
    client: Client,
    status: Mutex<Status>,
    stop: AtomicBool,
    changes: tokio::sync::watch::Sender<u64>,
    /// Re-lists and watch restarts, for `/metrics`.
    resyncs: AtomicU64,
    /// Batches of watch events applied.
    updates: AtomicU64,
}

/// The etcd source: a thread keeps a copy of every key under the prefix
/// (list, then watch), and [`Source::desired`] decodes it. Cloning is shallow.
#[derive(Debug, Clone)]
pub struct EtcdSource {
    shared: Arc<Shared>,
}

impl EtcdSource {
    /// Starts the list/watch thread. The receiver's value changes after every
    /// applied change (coalesced), and when the source turns stale or fresh.
    pub fn start(settings: EtcdSettings) -> (EtcdSource, tokio::sync::watch::Receiver<u64>) {
        let (tx, rx) = tokio::sync::watch::channel(0);
        let shared = Arc::new(Shared {
            client: Client::new(settings.client.clone()),
            settings,
            status: Mutex::new(Status {
                stale: Some(("not read yet".into(), Instant::now())),
                ..Status::default()
            }),
            stop: AtomicBool::new(false),
            changes: tx,
            resyncs: AtomicU64::new(0),
            updates: AtomicU64::new(0),
        });
        let s = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("lb-etcd-watch".into())
            .spawn(move || run(&s));
        if let Err(e) = spawned {
            tracing::error!("cannot start the etcd watch thread: {e}");
        }
        let s = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("lb-etcd-ping".into())
            .spawn(move || ping_loop(&s));
        if let Err(e) = spawned {
            tracing::error!("cannot start the etcd ping thread: {e}");
        }
        (EtcdSource { shared }, rx)
    }

    /// Waits (bounded by `timeout`) for the first full read. Returns whether
    /// it happened.
    pub fn wait_synced(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.lock().synced {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.lock().synced
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Status> {
        self.shared.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The revision of the state held.
    pub fn revision(&self) -> i64 {
        self.lock().revision
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &EtcdSettings {
        &self.shared.settings
    }

    /// Prometheus lines for this source.
    pub fn metrics(&self) -> String {
        let stale = u8::from(self.lock().stale.is_some());
        format!(
            "# HELP lb_source_stale 1 while a source cannot confirm its state is current.\n\
             # TYPE lb_source_stale gauge\n\
             lb_source_stale{{source=\"etcd\"}} {stale}\n\
             # HELP lb_source_resyncs_total Full re-reads of a source (start, disconnect, compaction).\n\
             # TYPE lb_source_resyncs_total counter\n\
             lb_source_resyncs_total{{source=\"etcd\"}} {}\n\
             # HELP lb_source_updates_total Change batches applied from a source.\n\
             # TYPE lb_source_updates_total counter\n\
             lb_source_updates_total{{source=\"etcd\"}} {}\n",
            self.shared.resyncs.load(Ordering::Relaxed),
            self.shared.updates.load(Ordering::Relaxed),
        )
    }

    /// Stops the threads (at the latest when their current request ends).
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }

    /// A shared allocation store over the same etcd.
    pub fn store(&self) -> EtcdStore {
        EtcdStore::new(self.shared.settings.clone())
    }
}

impl Source for EtcdSource {
    fn name(&self) -> &str {
        "etcd"
    }
    fn desired(&self) -> Result<DesiredState, ConfigErrors> {
        let kvs = self.lock().kvs.clone();
        Ok(decode(&self.shared.settings, &kvs))
    }
    fn watch(
        self: Arc<Self>,
        changed: crate::source::Changed,
        stop: tokio_util::sync::CancellationToken,
    ) -> crate::source::WatchFuture {
        Box::pin(async move {
            let mut rx = self.shared.changes.subscribe();
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    r = rx.changed() => match r {
                        Ok(()) => changed.notify(),
                        Err(_) => break,
                    },
                }
            }
            self.stop();
        })
    }
    fn stats(&self) -> Option<crate::source::SourceStats> {
        Some(crate::source::SourceStats {
            stale: self.lock().stale.is_some(),
            resyncs: self.shared.resyncs.load(Ordering::Relaxed),
            updates: self.shared.updates.load(Ordering::Relaxed),
        })
    }
    fn stale(&self) -> Option<String> {
        self.lock().stale.as_ref().map(|(why, since)| {
            format!(
                "source etcd is stale for {}s: {why}; serving the last good state",
                since.elapsed().as_secs()
            )
        })
    }
}

fn bump(s: &Shared) {
    s.changes.send_modify(|v| *v += 1);
}

fn set_stale(s: &Shared, why: Option<String>) {
    let changed = {
        let mut st = s.status.lock().unwrap_or_else(|e| e.into_inner());
        match (&st.stale, why) {
            (None, None) => false,
            (Some(_), Some(w)) => {
                if let Some((old, _)) = st.stale.as_mut() {
                    *old = w;
                }
                false
            }
            (None, Some(w)) => {
                tracing::warn!(
                    source = "etcd",
                    "source stale: {w}; the last good state keeps serving"
                );
                st.stale = Some((w, Instant::now()));
                true
            }
            (Some(_), None) => {
                tracing::info!(source = "etcd", "source current again");
                st.stale = None;
                true
            }
        }
    };
    if changed {
        bump(s);
    }
}

/// The list/watch loop: list, watch from the list's revision, and start over
/// on any failure after a short pause (bounded backoff).
fn run(s: &Shared) {
    let prefix = format!("{}/", s.settings.prefix);
    let mut backoff = Duration::from_millis(200);
    while !s.stop.load(Ordering::Relaxed) {
        let (kvs, revision) = match s.client.list(&prefix) {
            Ok(r) => r,
            Err(e) => {
                set_stale(s, Some(e.to_string()));
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        backoff = Duration::from_millis(200);
        s.resyncs.fetch_add(1, Ordering::Relaxed);
        {
            let mut st = s.status.lock().unwrap_or_else(|e| e.into_inner());
            st.kvs = kvs
                .into_iter()
                .map(|kv| (kv.key, (kv.value, kv.mod_revision)))
                .collect();
            st.revision = revision;
            st.synced = true;
        }
        tracing::info!(source = "etcd", revision, "read the whole prefix");
        bump(s);
        set_stale(s, None);
        // Watch, re-watching from the last revision after each bounded
        // stretch, until the stream fails (then re-list).
        loop {
            if s.stop.load(Ordering::Relaxed) {
                return;
            }
            let from = s.status.lock().unwrap_or_else(|e| e.into_inner()).revision + 1;
            let result = s
                .client
                .watch(&prefix, from, Duration::from_secs(30), |batch| {
                    apply(s, batch);
                    !s.stop.load(Ordering::Relaxed)
                });
            match result {
                Ok(()) => {
                    // The stream ended: a timeout (re-watch) or etcd went
                    // away; a ping tells which.
                    if let Err(e) = s.client.ping() {
                        set_stale(s, Some(e.to_string()));
                        break;
                    }
                }
                Err(EtcdError::Compacted(rev)) => {
                    tracing::warn!(source = "etcd", rev, "watch revision compacted; re-reading");
                    break;
                }
                Err(e) => {
                    set_stale(s, Some(e.to_string()));
                    break;
                }
            }
        }
    }
}

fn apply(s: &Shared, batch: Vec<WatchEvent>) {
    let mut changed = false;
    {
        let mut st = s.status.lock().unwrap_or_else(|e| e.into_inner());
        for ev in batch {
            match ev {
                WatchEvent::Put(kv) => {
                    st.revision = st.revision.max(kv.mod_revision);
                    st.kvs.insert(kv.key, (kv.value, kv.mod_revision));
                    changed = true;
                }
                WatchEvent::Delete { key, revision } => {
                    st.revision = st.revision.max(revision);
                    st.kvs.remove(&key);
                    changed = true;
                }
                WatchEvent::Progress(rev) => st.revision = st.revision.max(rev),
            }
        }
    }
    if changed {
        s.updates.fetch_add(1, Ordering::Relaxed);
        bump(s);
    }
}

/// Pings etcd every second, so a connection that hangs without closing is
/// noticed within seconds; recovery is the list/watch loop's to report.
fn ping_loop(s: &Shared) {
    let mut failures = 0u32;
    while !s.stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_secs(1));
        match s.client.ping() {
            Ok(()) => failures = 0,
            Err(e) => {
                failures += 1;
                if failures >= 2 {
                    set_stale(s, Some(e.to_string()));
                }
            }
        }
    }
}

// === impl EtcdStore ===

/// Allocations shared by every node through one etcd key, written with a
/// compare-and-swap on its `mod_revision`: a node that lost the race reads
/// the winner's allocations and allocates again from them, so every node
/// serves the same cluster IPs, node ports and LoadBalancer addresses.
#[derive(Debug, Clone)]
pub struct EtcdStore {
    inner: Arc<StoreInner>,
}

#[derive(Debug)]
struct StoreInner {
    key: String,
    client: Client,
    /// The mod_revision of the value last read (0: the key did not exist).
    seen: Mutex<i64>,
    /// Set when a save lost a compare-and-swap.
    conflicted: AtomicBool,
}

impl EtcdStore {
    /// A store at `<prefix>/allocations`.
    pub fn new(settings: EtcdSettings) -> Self {
        EtcdStore {
            inner: Arc::new(StoreInner {
                key: settings.allocations_key(),
                client: Client::new(settings.client),
                seen: Mutex::new(0),
                conflicted: AtomicBool::new(false),
            }),
        }
    }

    /// Whether a save lost a race since the last call (the caller loads
    /// again, which reads the winner's allocations).
    pub fn take_conflict(&self) -> bool {
        self.inner.conflicted.swap(false, Ordering::Relaxed)
    }

    fn error(&self, m: impl std::fmt::Display) -> StoreError {
        StoreError {
            location: format!("etcd key {}", self.inner.key),
            message: m.to_string(),
        }
    }
}

impl AllocationStore for EtcdStore {
    fn load(&self) -> Result<Allocations, StoreError> {
        let kv = self
            .inner
            .client
            .get(&self.inner.key)
            .map_err(|e| self.error(e))?;
        let (a, rev) = match kv {
            None => (Allocations::default(), 0),
            Some(kv) => (
                serde_json::from_slice(&kv.value)
                    .map_err(|e| self.error(format!("not valid allocations JSON: {e}")))?,
                kv.mod_revision,
            ),
        };
        *self.inner.seen.lock().unwrap_or_else(|e| e.into_inner()) = rev;
        Ok(a)
    }

    fn save(&self, allocations: &Allocations) -> Result<(), StoreError> {
        let json = serde_json::to_vec(allocations).map_err(|e| self.error(e))?;
        let seen = *self.inner.seen.lock().unwrap_or_else(|e| e.into_inner());
        let ok = self
            .inner
            .client
            .put_if(&self.inner.key, &json, seen)
            .map_err(|e| self.error(e))?;
        if ok {
            // Our write is the new base; the next load reads it back anyway.
            Ok(())
        } else {
            self.inner.conflicted.store(true, Ordering::Relaxed);
            Err(self.error("another node saved first; allocating again from its state"))
        }
    }
}
