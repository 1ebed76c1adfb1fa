//! Reload triggers for files: [`watch`] notifies a [`Changed`] when a
//! watched file's content may have changed, whether it was written in place,
//! replaced by a rename (what editors do), or swapped Kubernetes-ConfigMap
//! style (the path is a symlink through `..data`, and `..data` is renamed to
//! point at a new directory); or, for a directory, when one of its files was
//! added, changed or removed.
//!
//! Watching a file itself would lose it at the first rename, so a file's
//! watch is on directories: the file's own, and the directory of the file the
//! symlinks resolve to (re-resolved after each change, as a swap moves it).
//! Events that cannot concern the target (another file in the same
//! directory) are ignored, so a busy directory never delays a reload.
//!
//! The watch is one async task (the caller's future): notify's own thread
//! only hands events over, and the debounce runs on tokio's clock, so a burst
//! of writes gives one notification [`DEBOUNCE`] after it went quiet, and a
//! change waits at most [`MAX_DELAY`] however long the burst lasts. A burst
//! whose every write has visibly ended (the file closed after writing,
//! renamed into place, removed) waits only [`SETTLED`]: a file renamed into
//! a manifests directory is read at once, not 150 ms later. A write with no
//! visible end (a writer that keeps the file open, a platform without
//! close events) keeps the whole debounce. (The
//! notify-debouncer crates run a thread of their own that wakes every quarter
//! debounce whether or not anything happened, and cannot run on a paused
//! test clock; what they add over this is rename bookkeeping a level-
//! triggered reader does not need.)

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{Event, EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::WatchError;
use crate::source::{Changed, Touched};

/// How long changes must be quiet before they count: one write is often
/// several events (truncate, write, close), and editors write twice.
pub const DEBOUNCE: Duration = Duration::from_millis(150);

/// How long a burst whose writes have all ended waits for more events (the
/// other files of one `kubectl`-style apply, a rename's second half).
pub const SETTLED: Duration = Duration::from_millis(10);

/// The longest a change waits for the burst it is part of to end.
pub const MAX_DELAY: Duration = Duration::from_secs(1);

/// What a [`watch`] follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchTarget {
    /// One file, however it gets replaced (in place, by a rename, by a
    /// ConfigMap symlink swap).
    File(PathBuf),
    /// A directory's files: added, changed, removed (hidden files aside,
    /// except ConfigMap's `..data` swaps).
    Dir(PathBuf),
}

impl WatchTarget {
    /// A file or a directory, as `path` is now (a path that does not exist
    /// yet is watched as a file).
    pub fn of(path: &Path) -> WatchTarget {
        if path.is_dir() {
            WatchTarget::Dir(path.to_path_buf())
        } else {
            WatchTarget::File(path.to_path_buf())
        }
    }
}

/// A watch that is set up (its directories are watched from the moment it
/// exists) but not yet running: [`FileWatch::run`] follows it. Setting up
/// before running lets a caller read the file after the watch exists, so no
/// change falls between the read and the watch.
pub struct FileWatch {
    watcher: notify::RecommendedWatcher,
    events: mpsc::UnboundedReceiver<notify::Result<Event>>,
    state: State,
    /// Where a directory's watch names the files it saw change, and what
    /// stops the naming when the watch ends (even one never run).
    touched: Option<(Arc<Touched>, Naming)>,
}

impl std::fmt::Debug for FileWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileWatch")
            .field("target", &self.state.target)
            .finish_non_exhaustive()
    }
}

impl FileWatch {
    /// Watches `target`'s directories from now on. Fails if the watch
    /// cannot be set up (then nothing is watched: the caller says so and
    /// relies on SIGHUP).
    pub fn new(target: WatchTarget) -> Result<FileWatch, WatchError> {
        let (tx, events) = mpsc::unbounded_channel::<notify::Result<Event>>();
        let mut watcher = notify::recommended_watcher(move |event| {
            // The watch may have ended; then nobody needs the event.
            let _ = tx.send(event);
        })
        .map_err(|source| WatchError::Notify {
            path: target.path().display().to_string(),
            source,
        })?;
        let mut state = State::new(target)?;
        state.watch_dirs(&mut watcher)?;
        Ok(FileWatch {
            watcher,
            events,
            state,
            touched: None,
        })
    }

    /// Names every file of a watched directory that changes in `touched`,
    /// from now until the watch ends, so its source need not list the
    /// directory to find them (a file's watch names nothing).
    pub fn naming(mut self, touched: Arc<Touched>) -> FileWatch {
        if matches!(self.state.target, WatchTarget::Dir(_)) {
            touched.watching(true);
            let naming = Naming(touched.clone());
            self.touched = Some((touched, naming));
        }
        self
    }

    /// Follows the target until `stop` is cancelled, calling
    /// `changed.notify()` after every burst of relevant changes.
    pub async fn run(self, changed: Changed, stop: CancellationToken) {
        let FileWatch {
            mut watcher,
            mut events,
            mut state,
            touched,
        } = self;
        // However the watch ends (stopped, or its future dropped, polled or
        // not), `Naming` makes the source list the directory from then on.
        let touched = touched.as_ref().map(|(t, _naming)| t);
        // When the pending burst started and when it last saw an event.
        let mut pending: Option<(Instant, Instant)> = None;
        // Files of the burst being written (a write seen, its end not yet).
        let mut writing: HashSet<PathBuf> = HashSet::new();
        loop {
            let quiet = if writing.is_empty() {
                SETTLED
            } else {
                DEBOUNCE
            };
            let due = pending.map(|(first, last)| (last + quiet).min(first + MAX_DELAY));
            tokio::select! {
                () = stop.cancelled() => return,
                event = events.recv() => {
                    let Some(event) = event else { return };
                    if let Some(touched) = touched {
                        state.name(&event, touched);
                    }
                    if state.relevant(&event) {
                        track_writes(&event, &mut writing);
                        let now = Instant::now();
                        pending = Some(pending.map_or((now, now), |(first, _)| (first, now)));
                    }
                }
                () = sleep_until(due) => {
                    pending = None;
                    writing.clear();
                    state.rewatch(&mut watcher);
                    changed.notify();
                }
            }
        }
    }
}

/// A source's [`Source::watch`](crate::source::Source::watch) over `target`:
/// set up now (so the watch exists before the control plane's next read),
/// run by the future; a watch that cannot be set up is logged and the future
/// ends (the source is then read again on a reload request only).
pub fn source_watch(
    target: WatchTarget,
    changed: Changed,
    stop: CancellationToken,
) -> crate::source::WatchFuture {
    source_watch_naming(target, None, changed, stop)
}

/// [`source_watch`] whose directory watch names the files it saw change in
/// `touched` (see [`FileWatch::naming`]).
pub fn source_watch_naming(
    target: WatchTarget,
    touched: Option<Arc<Touched>>,
    changed: Changed,
    stop: CancellationToken,
) -> crate::source::WatchFuture {
    match FileWatch::new(target.clone()) {
        Ok(watch) => {
            let watch = match touched {
                Some(t) => watch.naming(t),
                None => watch,
            };
            Box::pin(watch.run(changed, stop))
        }
        Err(e) => {
            tracing::warn!(
                "not watching {}: {e}; reload with SIGHUP",
                target.path().display()
            );
            Box::pin(async {})
        }
    }
}

/// Marks a [`Touched`] as no longer named when the watch ends.
struct Naming(Arc<Touched>);

impl Drop for Naming {
    fn drop(&mut self) {
        self.0.watching(false);
    }
}

/// [`FileWatch::new`] then [`FileWatch::run`].
pub async fn watch(
    target: WatchTarget,
    changed: Changed,
    stop: CancellationToken,
) -> Result<(), WatchError> {
    FileWatch::new(target)?.run(changed, stop).await;
    Ok(())
}

/// Notes which files an event leaves being written (created, written to)
/// and which it leaves done (closed after writing, renamed, removed).
fn track_writes(event: &notify::Result<Event>, writing: &mut HashSet<PathBuf>) {
    let Ok(event) = event else { return };
    match event.kind {
        EventKind::Create(_) | EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Any) => {
            writing.extend(event.paths.iter().cloned());
        }
        EventKind::Access(AccessKind::Close(AccessMode::Write))
        | EventKind::Remove(_)
        | EventKind::Modify(ModifyKind::Name(RenameMode::From | RenameMode::Both)) => {
            for p in &event.paths {
                writing.remove(p);
            }
        }
        _ => {}
    }
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// What is watched and how events are judged.
struct State {
    target: WatchTarget,
    /// The target's directory (a file's parent, or the directory itself).
    dir: PathBuf,
    /// For a file: the directory its symlinks resolve to, when it differs
    /// from `dir`.
    target_dir: Option<PathBuf>,
    /// Extra directories watched (symlink targets), to unwatch when gone.
    watched: HashSet<PathBuf>,
}

impl WatchTarget {
    fn path(&self) -> &Path {
        match self {
            WatchTarget::File(p) | WatchTarget::Dir(p) => p,
        }
    }
}

impl State {
    fn new(target: WatchTarget) -> Result<State, WatchError> {
        let target = match target {
            WatchTarget::File(p) => WatchTarget::File(absolute(&p)),
            WatchTarget::Dir(p) => WatchTarget::Dir(absolute(&p)),
        };
        let dir = match &target {
            WatchTarget::File(p) => {
                p.parent()
                    .map(Path::to_path_buf)
                    .ok_or_else(|| WatchError::NoParent {
                        path: p.display().to_string(),
                    })?
            }
            WatchTarget::Dir(p) => p.clone(),
        };
        Ok(State {
            target,
            dir,
            target_dir: None,
            watched: HashSet::new(),
        })
    }

    fn watch_dirs(&mut self, watcher: &mut impl Watcher) -> Result<(), WatchError> {
        watcher
            .watch(&self.dir, RecursiveMode::NonRecursive)
            .map_err(|source| WatchError::Notify {
                path: self.dir.display().to_string(),
                source,
            })?;
        self.rewatch(watcher);
        Ok(())
    }

    /// For a file: re-resolves its symlinks and watches the target's
    /// directory, and forgets directories that are gone (old ConfigMap
    /// generations).
    fn rewatch(&mut self, watcher: &mut impl Watcher) {
        let WatchTarget::File(path) = &self.target else {
            return;
        };
        self.target_dir = std::fs::canonicalize(path)
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .filter(|d| std::fs::canonicalize(&self.dir).ok().as_ref() != Some(d));
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

    /// Names in `touched` the files of a watched directory an event (or a
    /// watch error) is about; what it cannot name (an overflow, an error,
    /// ConfigMap's `..data` swap) makes the next read a whole one, and an
    /// event on the directory itself every read from then on. Hidden files
    /// are not read, so they are not named.
    fn name(&self, event: &notify::Result<Event>, touched: &Touched) {
        let WatchTarget::Dir(dir) = &self.target else {
            return;
        };
        let Ok(event) = event else {
            touched.lose();
            return;
        };
        if matches!(event.kind, EventKind::Access(_))
            && event.kind != EventKind::Access(AccessKind::Close(AccessMode::Write))
        {
            return;
        }
        if event.paths.is_empty() || event.need_rescan() {
            touched.lose();
            return;
        }
        for p in &event.paths {
            if p == dir {
                // Moved, removed or replaced, the directory may no longer be
                // the one watched (inotify follows the old one): names
                // stand for nothing from here on.
                touched.watching(false);
                return;
            }
            match (p.parent(), p.file_name()) {
                (Some(parent), Some(name)) if parent == dir => {
                    let text = name.to_string_lossy();
                    if text.starts_with("..") {
                        touched.lose();
                    } else if !text.starts_with('.') {
                        touched.file(name.to_os_string());
                    }
                }
                _ => touched.lose(),
            }
        }
    }

    /// Whether an event (or a watch error) may concern the target.
    fn relevant(&self, event: &notify::Result<Event>) -> bool {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "file watch error; reading again to be safe");
                return true;
            }
        };
        // A file closed after writing ends its write (see `track_writes`);
        // reads and opens change nothing.
        if matches!(event.kind, EventKind::Access(_))
            && event.kind != EventKind::Access(AccessKind::Close(AccessMode::Write))
        {
            return false;
        }
        if event.paths.is_empty() || event.need_rescan() {
            return true;
        }
        event.paths.iter().any(|p| self.concerns(p))
    }

    fn concerns(&self, p: &Path) -> bool {
        // ConfigMap volumes swap `..data` (and write `..TIMESTAMP` dirs).
        let configmap = p
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(".."));
        match &self.target {
            WatchTarget::File(path) => {
                p == path
                    || configmap
                    || p.parent().is_some_and(|d| {
                        self.target_dir.as_deref() == Some(d) || self.watched.contains(d)
                    })
            }
            WatchTarget::Dir(_) => {
                let hidden = p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'));
                configmap || !hidden
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, DataChange, RemoveKind};

    fn event(kind: EventKind, path: &str) -> notify::Result<Event> {
        Ok(Event::new(kind).add_path(PathBuf::from(path)))
    }

    fn after(events: &[notify::Result<Event>]) -> HashSet<PathBuf> {
        let mut writing = HashSet::new();
        for e in events {
            track_writes(e, &mut writing);
        }
        writing
    }

    #[test]
    fn a_file_written_and_closed_is_done() {
        let writing = after(&[
            event(EventKind::Create(CreateKind::File), "/m/web.yaml"),
            event(
                EventKind::Modify(ModifyKind::Data(DataChange::Any)),
                "/m/web.yaml",
            ),
            event(
                EventKind::Access(AccessKind::Close(AccessMode::Write)),
                "/m/web.yaml",
            ),
        ]);
        assert!(writing.is_empty(), "closed after writing: settled at once");
    }

    #[test]
    fn a_file_renamed_into_place_or_removed_is_done() {
        let writing = after(&[
            event(
                EventKind::Modify(ModifyKind::Name(RenameMode::To)),
                "/m/web.yaml",
            ),
            event(EventKind::Remove(RemoveKind::File), "/m/old.yaml"),
        ]);
        assert!(writing.is_empty());
    }

    #[test]
    fn a_write_without_its_end_keeps_the_whole_debounce() {
        let writing = after(&[
            event(
                EventKind::Modify(ModifyKind::Data(DataChange::Any)),
                "/m/web.yaml",
            ),
            event(
                EventKind::Access(AccessKind::Close(AccessMode::Write)),
                "/m/db.yaml",
            ),
        ]);
        assert_eq!(writing, HashSet::from([PathBuf::from("/m/web.yaml")]));
    }

    #[test]
    fn a_close_after_writing_is_relevant_and_a_read_is_not() {
        let state = State::new(WatchTarget::Dir(PathBuf::from("/m"))).expect("state");
        assert!(state.relevant(&event(
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            "/m/web.yaml"
        )));
        assert!(!state.relevant(&event(
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            "/m/web.yaml"
        )));
    }

    /// A watch of `/m` naming into a `Touched`, its first (whole) read done.
    fn naming() -> (State, Touched) {
        let state = State::new(WatchTarget::Dir(PathBuf::from("/m"))).expect("state");
        let touched = Touched::default();
        touched.watching(true);
        assert_eq!(touched.take(), None, "the first read is whole");
        (state, touched)
    }

    /// A directory watch's naming, fed `events`, after a whole read.
    fn named(events: &[notify::Result<Event>]) -> Option<HashSet<std::ffi::OsString>> {
        let (state, touched) = naming();
        for e in events {
            state.name(e, &touched);
        }
        touched.take()
    }

    #[test]
    fn a_directory_watch_names_its_visible_files_only() {
        let names = named(&[
            event(EventKind::Create(CreateKind::File), "/m/.web.yaml.swp"),
            event(
                EventKind::Modify(ModifyKind::Name(RenameMode::To)),
                "/m/web.yaml",
            ),
            event(EventKind::Remove(RemoveKind::File), "/m/db.yaml"),
        ]);
        assert_eq!(
            names,
            Some(HashSet::from(["web.yaml".into(), "db.yaml".into()]))
        );
    }

    #[test]
    fn what_a_directory_watch_cannot_name_makes_the_next_read_whole() {
        let overflow = Ok(Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan));
        let error = Err(notify::Error::generic("queue overflow"));
        let pathless = Ok(Event::new(EventKind::Any));
        let configmap = event(EventKind::Create(CreateKind::Any), "/m/..data");
        let elsewhere = event(EventKind::Create(CreateKind::File), "/other/web.yaml");
        for e in [overflow, error, pathless, configmap, elsewhere] {
            assert_eq!(named(std::slice::from_ref(&e)), None, "{e:?}");
        }
    }

    #[test]
    fn an_event_on_the_directory_itself_ends_the_naming() {
        let (state, touched) = naming();
        state.name(
            &event(EventKind::Remove(RemoveKind::Folder), "/m"),
            &touched,
        );
        assert_eq!(touched.take(), None);
        state.name(
            &event(EventKind::Create(CreateKind::File), "/m/web.yaml"),
            &touched,
        );
        assert_eq!(touched.take(), None, "every read whole from then on");
    }
}
