//! [`EtcdSource`]: a copy of every key under the prefix, kept current by a
//! list/watch loop and checked by a ping loop, both inside the future of
//! [`Source::watch`] (the control plane spawns it; the source starts
//! nothing itself).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::client::{Client, EtcdError, WatchEvent};
use super::{decode, EtcdSettings, EtcdStore};
use crate::error::ConfigErrors;
use crate::source::{Changed, DesiredState, Source, SourceStats, WatchFuture};

/// The first pause after a failed list; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// The longest pause between two lists while etcd cannot be read.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// How long one watch request runs before it is made again from the last
/// revision (so a connection that died silently is replaced).
const WATCH_STRETCH: Duration = Duration::from_secs(30);
/// How often etcd is pinged, so a connection that hangs without closing is
/// noticed within seconds.
const PING_EVERY: Duration = Duration::from_secs(1);
/// Failed pings in a row before the source says it is stale.
const PINGS_TO_STALE: u32 = 2;

#[derive(Debug, Default)]
struct Status {
    kvs: BTreeMap<String, (Vec<u8>, i64)>,
    revision: i64,
    /// Why the state may not be current, and since when.
    stale: Option<(String, Instant)>,
}

#[derive(Debug)]
struct Shared {
    settings: EtcdSettings,
    client: Client,
    status: Mutex<Status>,
    /// Whether a full read ever succeeded ([`EtcdSource::wait_synced`]).
    synced: watch::Sender<bool>,
    /// Re-lists and watch restarts, for `/metrics`.
    resyncs: AtomicU64,
    /// Batches of watch events applied.
    updates: AtomicU64,
}

/// The etcd source: [`Source::watch`] keeps a copy of every key under the
/// prefix (list, then watch), and [`Source::desired`] decodes it. Cloning is
/// shallow.
#[derive(Debug, Clone)]
pub struct EtcdSource {
    shared: Arc<Shared>,
}

impl EtcdSource {
    /// A source for `settings`. It reads nothing until its
    /// [`Source::watch`] future runs; until the first full read it is
    /// stale and holds no object.
    pub fn new(settings: EtcdSettings) -> EtcdSource {
        EtcdSource {
            shared: Arc::new(Shared {
                client: Client::new(settings.client.clone()),
                settings,
                status: Mutex::new(Status {
                    stale: Some(("not read yet".into(), Instant::now())),
                    ..Status::default()
                }),
                synced: watch::channel(false).0,
                resyncs: AtomicU64::new(0),
                updates: AtomicU64::new(0),
            }),
        }
    }

    /// Waits (bounded by `timeout`) for the first full read, which only the
    /// running [`Source::watch`] future makes. Returns whether it happened.
    pub async fn wait_synced(&self, timeout: Duration) -> bool {
        let mut synced = self.shared.synced.subscribe();
        // The sender lives as long as `self`: `wait_for` ends by the value.
        let wait = async { synced.wait_for(|done| *done).await.is_ok() };
        tokio::time::timeout(timeout, wait).await.unwrap_or(false)
    }

    /// The revision of the state held.
    pub fn revision(&self) -> i64 {
        self.shared.status().revision
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &EtcdSettings {
        &self.shared.settings
    }

    /// A shared allocation store over the same etcd, blocking on `runtime`
    /// (see [`EtcdStore`] for where it may be called).
    pub fn store(&self, runtime: tokio::runtime::Handle) -> EtcdStore {
        EtcdStore::new(self.shared.settings.clone(), runtime)
    }
}

impl Source for EtcdSource {
    fn name(&self) -> &str {
        "etcd"
    }

    fn desired(&self) -> Result<DesiredState, ConfigErrors> {
        let kvs = self.shared.status().kvs.clone();
        Ok(decode(&self.shared.settings, &kvs))
    }

    /// Runs the list/watch loop and the ping loop until `stop`; dropping
    /// the future drops their requests, so it ends as soon as `stop` is
    /// cancelled.
    fn watch(self: Arc<Self>, changed: Changed, stop: CancellationToken) -> WatchFuture {
        Box::pin(async move {
            let s = &self.shared;
            tokio::select! {
                () = stop.cancelled() => {}
                () = s.list_and_watch(&changed) => {}
                () = s.ping(&changed) => {}
            }
        })
    }

    /// The first full read (made by the running watch future).
    fn first_read(self: Arc<Self>) -> WatchFuture {
        Box::pin(async move {
            let mut synced = self.shared.synced.subscribe();
            // The sender lives as long as `self`: the wait ends by the value.
            let _ = synced.wait_for(|done| *done).await;
        })
    }

    fn stats(&self) -> Option<SourceStats> {
        Some(SourceStats {
            stale: self.shared.status().stale.is_some(),
            resyncs: self.shared.resyncs.load(Ordering::Relaxed),
            updates: self.shared.updates.load(Ordering::Relaxed),
        })
    }

    fn stale(&self) -> Option<String> {
        self.shared.status().stale.as_ref().map(|(why, since)| {
            format!(
                "source etcd is stale for {}s: {why}; serving the last good state",
                since.elapsed().as_secs()
            )
        })
    }
}

// === impl Shared ===

impl Shared {
    fn status(&self) -> MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records why the state may not be current (`None`: it is again), and
    /// notifies `changed` when that flips (so `/readyz` follows).
    fn set_stale(&self, changed: &Changed, why: Option<String>) {
        let flipped = {
            let mut st = self.status();
            match (&mut st.stale, why) {
                (None, None) => false,
                (Some((old, _)), Some(w)) => {
                    *old = w;
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
        if flipped {
            changed.notify();
        }
    }

    /// The list/watch loop: list, watch from the list's revision, and start
    /// over on any failure after a short pause (bounded backoff). Runs
    /// until its future is dropped.
    async fn list_and_watch(&self, changed: &Changed) {
        let prefix = format!("{}/", self.settings.prefix);
        let mut backoff = FIRST_BACKOFF;
        loop {
            let (kvs, revision) = match self.client.list(&prefix).await {
                Ok(r) => r,
                Err(e) => {
                    self.set_stale(changed, Some(e.to_string()));
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            backoff = FIRST_BACKOFF;
            self.resyncs.fetch_add(1, Ordering::Relaxed);
            {
                let mut st = self.status();
                st.kvs = kvs
                    .into_iter()
                    .map(|kv| (kv.key, (kv.value, kv.mod_revision)))
                    .collect();
                st.revision = revision;
            }
            self.synced.send_replace(true);
            tracing::info!(source = "etcd", revision, "read the whole prefix");
            changed.notify();
            self.set_stale(changed, None);
            // Watch, again from the last revision after each stretch, until
            // the stream fails (then list again).
            loop {
                let from = self.status().revision + 1;
                match self.watch_from(&prefix, from, changed).await {
                    Ok(()) => {
                        // The stream ended: its time was up (watch again) or
                        // etcd went away; a ping tells which.
                        if let Err(e) = self.client.ping().await {
                            self.set_stale(changed, Some(e.to_string()));
                            break;
                        }
                    }
                    Err(EtcdError::Compacted(rev)) => {
                        tracing::warn!(
                            source = "etcd",
                            rev,
                            "watch revision compacted; re-reading"
                        );
                        break;
                    }
                    Err(e) => {
                        self.set_stale(changed, Some(e.to_string()));
                        break;
                    }
                }
            }
        }
    }

    /// One watch request, its batches applied as they come.
    async fn watch_from(
        &self,
        prefix: &str,
        from: i64,
        changed: &Changed,
    ) -> Result<(), EtcdError> {
        let mut watch = self.client.watch(prefix, from, WATCH_STRETCH).await?;
        while let Some(batch) = watch.next().await? {
            self.apply(batch, changed);
        }
        Ok(())
    }

    fn apply(&self, batch: Vec<WatchEvent>, changed: &Changed) {
        let mut any = false;
        {
            let mut st = self.status();
            for ev in batch {
                match ev {
                    WatchEvent::Put(kv) => {
                        st.revision = st.revision.max(kv.mod_revision);
                        st.kvs.insert(kv.key, (kv.value, kv.mod_revision));
                        any = true;
                    }
                    WatchEvent::Delete { key, revision } => {
                        st.revision = st.revision.max(revision);
                        st.kvs.remove(&key);
                        any = true;
                    }
                    WatchEvent::Progress(rev) => st.revision = st.revision.max(rev),
                }
            }
        }
        if any {
            self.updates.fetch_add(1, Ordering::Relaxed);
            changed.notify();
        }
    }

    /// Pings etcd every [`PING_EVERY`]: a connection that hangs without
    /// closing turns the source stale after [`PINGS_TO_STALE`] failures;
    /// recovery is the list/watch loop's to report. Runs until its future
    /// is dropped.
    async fn ping(&self, changed: &Changed) {
        let mut failures = 0u32;
        loop {
            tokio::time::sleep(PING_EVERY).await;
            match self.client.ping().await {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures += 1;
                    if failures >= PINGS_TO_STALE {
                        self.set_stale(changed, Some(e.to_string()));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::sync::Notify;

    use super::*;
    use crate::source::etcd::client::ClientOptions;

    /// Settings for an etcd that refuses connections (a port bound and
    /// released on loopback).
    fn unreachable() -> EtcdSettings {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        EtcdSettings {
            client: ClientOptions {
                endpoints: vec![format!("http://127.0.0.1:{port}")],
                ..ClientOptions::default()
            },
            prefix: "/lb".into(),
            allow_exec_probes: false,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_source_reads_nothing_and_is_stale_until_its_watch_runs() {
        let source = EtcdSource::new(unreachable());
        assert!(!source.wait_synced(Duration::from_secs(5)).await);
        assert!(source.desired().expect("state").services.is_empty());
        let stale = source.stale().expect("stale");
        assert!(stale.contains("not read yet"), "{stale}");
        assert_eq!(
            source.stats(),
            Some(SourceStats {
                stale: true,
                resyncs: 0,
                updates: 0
            })
        );
    }

    #[tokio::test]
    async fn the_watch_reports_an_unreachable_etcd_and_ends_when_stopped() {
        let source = Arc::new(EtcdSource::new(unreachable()));
        let wake = Arc::new(Notify::new());
        let changed = Changed::new(wake.clone());
        let stop = CancellationToken::new();
        let task = tokio::spawn(source.clone().watch(changed, stop.clone()));
        // The failed list replaces "not read yet" with the reason.
        let reason = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match source.stale() {
                    Some(s) if s.contains("unreachable") => return s,
                    _ => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        })
        .await
        .expect("the failed list is reported");
        assert!(reason.contains("serving the last good state"), "{reason}");
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the watch ends once stopped")
            .expect("no panic");
        assert_eq!(source.stats().map(|s| s.resyncs), Some(0));
    }
}
