//! Reload triggers for `--manifests`: the files' watcher, and the
//! [`Source::watch`](crate::source::Source::watch) of a [`ManifestSource`] built on it.

use std::path::PathBuf;

use super::ManifestSource;

/// How long changes to the manifests must be quiet before they are read.
const WATCH_DEBOUNCE: std::time::Duration = std::time::Duration::from_millis(150);

/// [`Source::watch`](crate::source::Source::watch) of a [`ManifestSource`]: notifies `changed` after the
/// files changed and were quiet for [`WATCH_DEBOUNCE`].
pub(super) fn watch(
    source: std::sync::Arc<ManifestSource>,
    changed: crate::source::Changed,
    stop: tokio_util::sync::CancellationToken,
) -> crate::source::WatchFuture {
    Box::pin(async move {
        let mut rx = match watch_manifests(source.path.clone(), WATCH_DEBOUNCE) {
            Ok(rx) => rx,
            Err(e) => {
                tracing::warn!(
                    "not watching {}: {e}; reload with SIGHUP",
                    source.path.display()
                );
                return;
            }
        };
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                got = rx.recv() => match got {
                    Some(()) => changed.notify(),
                    None => return,
                },
            }
        }
    })
}

/// Watches `--manifests PATH` like the config file: a file through
/// [`crate::watch_file`] (edits, renames, ConfigMap swaps), a directory
/// through a watch on the directory itself (files added, changed, removed).
/// Sends `()` after changes have been quiet for `debounce`.
pub fn watch_manifests(
    path: PathBuf,
    debounce: std::time::Duration,
) -> Result<tokio::sync::mpsc::Receiver<()>, crate::WatchError> {
    use notify::{EventKind, RecursiveMode, Watcher};
    if !path.is_dir() {
        return crate::watch_file(path, debounce);
    }
    let (event_tx, event_rx) = std::sync::mpsc::channel::<notify::Result<notify::Event>>();
    let notify_err = |source| crate::WatchError::Notify {
        path: path.display().to_string(),
        source,
    };
    let mut watcher = notify::recommended_watcher(move |e| {
        // The receiving thread may be gone; nothing to do then.
        let _ = event_tx.send(e);
    })
    .map_err(notify_err)?;
    watcher
        .watch(&path, RecursiveMode::NonRecursive)
        .map_err(notify_err)?;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let relevant = |e: &notify::Result<notify::Event>| match e {
        Ok(e) => !matches!(e.kind, EventKind::Access(_)),
        Err(_) => true,
    };
    std::thread::Builder::new()
        .name("lb-manifests-watch".into())
        .spawn(move || {
            let _watcher = watcher;
            let poll = std::time::Duration::from_millis(500);
            loop {
                if tx.is_closed() {
                    return;
                }
                let first = match event_rx.recv_timeout(poll) {
                    Ok(e) => e,
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                    Err(_) => return,
                };
                let mut fire = relevant(&first);
                loop {
                    match event_rx.recv_timeout(debounce) {
                        Ok(e) => fire |= relevant(&e),
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => break,
                        Err(_) => return,
                    }
                }
                if fire {
                    if let Err(tokio::sync::mpsc::error::TrySendError::Closed(())) = tx.try_send(())
                    {
                        return;
                    }
                }
            }
        })
        .map_err(|e| crate::WatchError::Notify {
            path: "watch thread".into(),
            source: notify::Error::io(e),
        })?;
    Ok(rx)
}
