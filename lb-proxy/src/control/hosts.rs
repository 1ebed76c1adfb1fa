//! Endpoints known by name (`{ host = "db1.example.internal" }`): resolved
//! with hickory-resolver through `[dns] upstreams` (the system's resolver when
//! there are none), each address an endpoint, asked again when the TTL runs
//! out but never sooner than [`MIN_REFRESH`] nor later than [`MAX_REFRESH`].
//! A failed resolution keeps the last good answer, is logged and counted.
//!
//! [`Hosts`] is an overlay beside the desired state, like the probe verdicts:
//! the rebuild adds the resolved addresses to the desired services
//! (`Hosts::apply`) each time it builds a snapshot, and a new answer wakes
//! the rebuild, so a changed address never needs the file again.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hickory_resolver::config::{NameServerConfigGroup, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::TokioResolver;
pub use lb_config::resolve::MAX_REFRESH;
use lb_config::resolve::{apply, host_names, refresh_after, HostEndpoint, MIN_REFRESH};
use lb_config::source::Changed;
use lb_core::ServiceSpec;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::lifecycle::Tasks;

/// How long one resolution may take before it counts as failed.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
struct Entry {
    addrs: Vec<IpAddr>,
    next: Instant,
}

#[derive(Debug)]
struct Inner {
    resolver: Mutex<Option<(Vec<SocketAddr>, TokioResolver)>>,
    upstreams: Mutex<Vec<SocketAddr>>,
    /// The desired state's host endpoints, as the last reload gave them.
    hosts: Mutex<Vec<HostEndpoint>>,
    /// The answers: the overlay.
    resolved: Mutex<BTreeMap<String, Entry>>,
    /// Wakes the refresh task when the names change.
    names_changed: Notify,
    /// Wakes the rebuild when an answer changes.
    changed: Changed,
    failures: AtomicU64,
    lookups: AtomicU64,
}

/// The resolver of endpoint host names and its answers. Cloning is shallow.
#[derive(Debug, Clone)]
pub struct Hosts {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every mutation replaces whole values, so a poisoned lock is consistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Hosts {
    /// No name yet; the refresh task runs on `tasks`, and a changed answer
    /// notifies `changed`.
    pub(crate) fn start(tasks: &Tasks, changed: Changed) -> Hosts {
        let inner = Arc::new(Inner {
            resolver: Mutex::new(None),
            upstreams: Mutex::new(Vec::new()),
            hosts: Mutex::new(Vec::new()),
            resolved: Mutex::new(BTreeMap::new()),
            names_changed: Notify::new(),
            changed,
            failures: AtomicU64::new(0),
            lookups: AtomicU64::new(0),
        });
        let stop = tasks.token().clone();
        let refresh = inner.clone();
        tasks.spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = refresh_loop(&refresh) => {}
            }
        });
        Hosts { inner }
    }

    /// The host endpoints of a new desired state, asked of `upstreams` (empty:
    /// the system's resolver, read from `/etc/resolv.conf` when first needed).
    /// Names not known yet are resolved before this returns (each bounded by
    /// a timeout), so the snapshot built next holds their addresses.
    pub(crate) async fn set(&self, hosts: &[HostEndpoint], upstreams: Vec<SocketAddr>) {
        *lock(&self.inner.upstreams) = upstreams;
        let names = host_names(hosts);
        let new: Vec<String> = {
            let mut resolved = lock(&self.inner.resolved);
            resolved.retain(|name, _| names.contains(name));
            names
                .iter()
                .filter(|n| !resolved.contains_key(*n))
                .cloned()
                .collect()
        };
        *lock(&self.inner.hosts) = hosts.to_vec();
        // One after another: few names, each bounded by LOOKUP_TIMEOUT.
        for name in &new {
            resolve_one(&self.inner, name).await;
        }
        self.inner.names_changed.notify_one();
    }

    /// `services` with the resolved addresses added as endpoints.
    pub(crate) fn apply(&self, services: Vec<Arc<ServiceSpec>>) -> Vec<Arc<ServiceSpec>> {
        let hosts = lock(&self.inner.hosts);
        if hosts.is_empty() {
            return services;
        }
        let resolved: BTreeMap<String, Vec<IpAddr>> = lock(&self.inner.resolved)
            .iter()
            .map(|(k, v)| (k.clone(), v.addrs.clone()))
            .collect();
        apply(services, &hosts, &resolved)
    }

    /// The current answer for every name (for views and tests).
    pub fn resolved(&self) -> BTreeMap<String, Vec<IpAddr>> {
        lock(&self.inner.resolved)
            .iter()
            .map(|(k, v)| (k.clone(), v.addrs.clone()))
            .collect()
    }

    /// Resolutions that failed (the last good answer was kept).
    pub fn failures(&self) -> u64 {
        self.inner.failures.load(Ordering::Relaxed)
    }

    /// Resolutions attempted.
    pub fn lookups(&self) -> u64 {
        self.inner.lookups.load(Ordering::Relaxed)
    }
}

fn resolver(inner: &Inner) -> Option<TokioResolver> {
    let upstreams = lock(&inner.upstreams).clone();
    let mut cached = lock(&inner.resolver);
    if let Some((ups, r)) = cached.as_ref() {
        if *ups == upstreams {
            return Some(r.clone());
        }
    }
    let mut opts = ResolverOpts::default();
    // Our own refresh decides when to ask again; a cache would answer instead.
    opts.cache_size = 0;
    opts.use_hosts_file = ResolveHosts::Never;
    opts.timeout = Duration::from_secs(2);
    opts.attempts = 1;
    let built = if upstreams.is_empty() {
        match TokioResolver::builder_tokio() {
            Ok(b) => b.with_options(opts).build(),
            Err(e) => {
                warn!("no system resolver for endpoint host names: {e}");
                return None;
            }
        }
    } else {
        let mut group = NameServerConfigGroup::new();
        for u in &upstreams {
            group.merge(NameServerConfigGroup::from_ips_clear(
                &[u.ip()],
                u.port(),
                true,
            ));
        }
        TokioResolver::builder_with_config(
            ResolverConfig::from_parts(None, vec![], group),
            TokioConnectionProvider::default(),
        )
        .with_options(opts)
        .build()
    };
    *cached = Some((upstreams, built.clone()));
    Some(built)
}

/// Resolves one name and records the answer (or keeps the last one on
/// failure); returns whether the address set changed.
async fn resolve_one(inner: &Inner, name: &str) -> bool {
    inner.lookups.fetch_add(1, Ordering::Relaxed);
    let result = match resolver(inner) {
        Some(r) => {
            let fqdn = format!("{name}.");
            match tokio::time::timeout(LOOKUP_TIMEOUT, r.lookup_ip(fqdn)).await {
                Ok(Ok(lookup)) => {
                    let ttl = lookup
                        .valid_until()
                        .saturating_duration_since(std::time::Instant::now());
                    let mut addrs: Vec<IpAddr> = lookup.iter().collect();
                    addrs.sort();
                    addrs.dedup();
                    Ok((addrs, ttl))
                }
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("timed out".to_string()),
            }
        }
        None => Err("no resolver".to_string()),
    };
    let mut resolved = lock(&inner.resolved);
    match result {
        Ok((addrs, ttl)) => {
            let next = Instant::now() + refresh_after(ttl);
            let changed = resolved.get(name).map(|e| &e.addrs) != Some(&addrs);
            if changed {
                debug!(host = name, ?addrs, "endpoint host resolved");
            }
            resolved.insert(name.to_string(), Entry { addrs, next });
            changed
        }
        Err(e) => {
            inner.failures.fetch_add(1, Ordering::Relaxed);
            warn!(
                host = name,
                "endpoint host name not resolved; keeping the last answer: {e}"
            );
            let next = Instant::now() + MIN_REFRESH;
            resolved
                .entry(name.to_string())
                .and_modify(|entry| entry.next = next)
                .or_insert(Entry {
                    addrs: Vec::new(),
                    next,
                });
            false
        }
    }
}

/// Sleeps until the next name is due (or the names change), resolves the due
/// ones, and wakes the rebuild when an answer changed. Runs until its task is
/// stopped.
async fn refresh_loop(inner: &Inner) {
    loop {
        let now = Instant::now();
        let (due, next): (BTreeSet<String>, Option<Instant>) = {
            let resolved = lock(&inner.resolved);
            let due = resolved
                .iter()
                .filter(|(_, e)| e.next <= now)
                .map(|(k, _)| k.clone())
                .collect();
            (due, resolved.values().map(|e| e.next).min())
        };
        let mut changed = false;
        for name in &due {
            changed |= resolve_one(inner, name).await;
        }
        if changed {
            inner.changed.notify();
        }
        if !due.is_empty() {
            continue;
        }
        let sleep = next.map_or(MAX_REFRESH, |n| n.saturating_duration_since(now));
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            () = inner.names_changed.notified() => {}
        }
    }
}
