//! The thread-based watcher the manifests still use; it goes when they
//! move to [`super::watch`].

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use notify::{Event, EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::error::WatchError;

/// Watches `path` and sends `()` (at most one pending) after changes have
/// been quiet for `debounce`. The watch ends when the receiver is dropped.
/// Works inside or outside a tokio runtime (it runs on its own thread).
pub(super) fn watch_file(
    path: PathBuf,
    debounce: Duration,
) -> Result<mpsc::Receiver<()>, WatchError> {
    let path = absolute(&path);
    let parent = path
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| WatchError::NoParent {
            path: path.display().to_string(),
        })?;
    let (event_tx, event_rx) = std_mpsc::channel::<notify::Result<Event>>();
    let mut watcher = notify::recommended_watcher(move |e| {
        // The receiving thread may be gone; nothing to do then.
        let _ = event_tx.send(e);
    })
    .map_err(|source| WatchError::Notify {
        path: parent.display().to_string(),
        source,
    })?;
    watcher
        .watch(&parent, RecursiveMode::NonRecursive)
        .map_err(|source| WatchError::Notify {
            path: parent.display().to_string(),
            source,
        })?;
    let mut state = State {
        path,
        parent,
        target_dir: None,
        watched: HashSet::new(),
    };
    state.rewatch(&mut watcher);
    let (tx, rx) = mpsc::channel(1);
    std::thread::Builder::new()
        .name("lb-config-watch".into())
        .spawn(move || run(state, watcher, event_rx, tx, debounce))
        .map_err(|e| WatchError::Notify {
            path: "watch thread".into(),
            source: notify::Error::io(e),
        })?;
    Ok(rx)
}

struct State {
    path: PathBuf,
    parent: PathBuf,
    /// Directory of the file the symlinks resolve to, when it differs from
    /// `parent`.
    target_dir: Option<PathBuf>,
    watched: HashSet<PathBuf>,
}

impl State {
    /// Re-resolves the symlinks and watches the target's directory.
    fn rewatch(&mut self, watcher: &mut impl Watcher) {
        self.target_dir = std::fs::canonicalize(&self.path)
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .filter(|d| std::fs::canonicalize(&self.parent).ok().as_ref() != Some(d));
        if let Some(dir) = &self.target_dir {
            if !self.watched.contains(dir) {
                match watcher.watch(dir, RecursiveMode::NonRecursive) {
                    Ok(()) => {
                        self.watched.insert(dir.clone());
                    }
                    Err(e) => tracing::debug!(dir = %dir.display(), error = %e, "cannot watch"),
                }
            }
        }
        // Forget directories that are gone (old ConfigMap generations).
        let gone: Vec<PathBuf> = self
            .watched
            .iter()
            .filter(|d| !d.exists())
            .cloned()
            .collect();
        for d in gone {
            let _ = watcher.unwatch(&d);
            self.watched.remove(&d);
        }
    }

    /// Whether an event may concern the file.
    fn concerns(&self, event: &Event) -> bool {
        if matches!(event.kind, EventKind::Access(_)) {
            return false;
        }
        if event.paths.is_empty() || event.need_rescan() {
            return true;
        }
        event.paths.iter().any(|p| {
            p == &self.path
                || p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(".."))
                || p.parent().is_some_and(|d| {
                    self.target_dir.as_deref() == Some(d) || self.watched.contains(d)
                })
        })
    }
}

fn run(
    mut state: State,
    mut watcher: notify::RecommendedWatcher,
    events: std_mpsc::Receiver<notify::Result<Event>>,
    tx: mpsc::Sender<()>,
    debounce: Duration,
) {
    let poll = Duration::from_millis(500);
    loop {
        if tx.is_closed() {
            return;
        }
        let first = match events.recv_timeout(poll) {
            Ok(e) => e,
            Err(std_mpsc::RecvTimeoutError::Timeout) => continue,
            Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
        };
        let mut fire = relevant(&state, &first);
        // Debounce: wait until events have been quiet for `debounce`.
        loop {
            match events.recv_timeout(debounce) {
                Ok(e) => fire |= relevant(&state, &e),
                Err(std_mpsc::RecvTimeoutError::Timeout) => break,
                Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
        state.rewatch(&mut watcher);
        if fire {
            // A full channel means a trigger is already pending: enough.
            if let Err(mpsc::error::TrySendError::Closed(())) = tx.try_send(()) {
                return;
            }
        }
    }
}

fn relevant(state: &State, event: &notify::Result<Event>) -> bool {
    match event {
        Ok(e) => state.concerns(e),
        Err(e) => {
            tracing::warn!(error = %e, "config watch error; reloading to be safe");
            true
        }
    }
}

fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    }
}
