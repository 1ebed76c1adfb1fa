//! The config file as a source: its settings and objects, read whole on
//! every rebuild that concerns it (and parsed only when its bytes changed), and (with the `watch` feature) watched
//! for edits, renames and ConfigMap symlink swaps; without it, read again on
//! a reload request only.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
#[cfg(feature = "watch")]
use std::sync::Arc;
use std::sync::Mutex;

#[cfg(feature = "watch")]
use tokio_util::sync::CancellationToken;

use crate::error::ConfigErrors;
#[cfg(feature = "watch")]
use crate::source::{Changed, WatchFuture};
use crate::source::{DesiredState, Source};
#[cfg(feature = "watch")]
use crate::watch::{source_watch, WatchTarget};

/// `--config FILE`: the one source that carries settings ([`DesiredState::file`]).
#[derive(Debug)]
pub struct FileSource {
    path: PathBuf,
    /// The length and hash of the text the last read parsed (good or bad).
    last: Mutex<Option<(usize, u64)>>,
}

impl Clone for FileSource {
    /// A source of the same file that has read nothing yet.
    fn clone(&self) -> Self {
        FileSource::new(self.path.clone())
    }
}

impl FileSource {
    /// A source reading `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileSource {
            path: path.into(),
            last: Mutex::new(None),
        }
    }

    fn parse(&self, text: &str) -> Result<DesiredState, ConfigErrors> {
        let file = crate::parse_str(text).map_err(|mut e| {
            let name = self.path.display().to_string();
            crate::locate::locate_toml(&mut e.errors, text, &name);
            e
        })?;
        Ok(DesiredState {
            file: Some(file),
            ..DesiredState::default()
        })
    }

    /// The file's text; a file that cannot be read forgets the last text, so
    /// the same bytes coming back are parsed again.
    fn read(&self) -> Result<String, ConfigErrors> {
        crate::loader::read_file(&self.path).inspect_err(|_| {
            *self.last.lock().unwrap_or_else(|e| e.into_inner()) = None;
        })
    }

    /// Remembers `text` as the last read's; says whether it was already.
    fn remember(&self, text: &str) -> bool {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        text.hash(&mut hasher);
        let now = Some((text.len(), hasher.finish()));
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::replace(&mut *last, now) == now
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Source for FileSource {
    fn name(&self) -> &str {
        "file"
    }

    fn desired(&self) -> Result<DesiredState, ConfigErrors> {
        let text = self.read()?;
        self.remember(&text);
        self.parse(&text)
    }

    /// `None` when the file holds the bytes the last read parsed.
    fn desired_if_changed(&self) -> Option<Result<DesiredState, ConfigErrors>> {
        let text = match self.read() {
            Ok(text) => text,
            Err(e) => return Some(Err(e)),
        };
        if self.remember(&text) {
            return None;
        }
        Some(self.parse(&text))
    }

    #[cfg(feature = "watch")]
    fn watch(self: Arc<Self>, changed: Changed, stop: CancellationToken) -> WatchFuture {
        source_watch(WatchTarget::File(self.path.clone()), changed, stop)
    }

    /// Locates in the file as it is now: a writer that changed it since the
    /// failed load may shift a line, never the message.
    fn locate(&self, errors: &mut [crate::FieldError]) {
        if let Ok(text) = super::read_settled(&self.path) {
            let name = self.path.display().to_string();
            crate::locate::locate_toml(errors, &text, &name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_bytes_are_not_parsed_again_and_new_ones_are() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("lb.toml");
        std::fs::write(&path, "[[services]]\nname = \"a\"\n").expect("write");
        let file = FileSource::new(&path);
        let first = file.desired().expect("reads");
        assert_eq!(first.file.expect("file").services.len(), 1);
        assert!(file.desired_if_changed().is_none(), "same bytes: no read");
        std::fs::write(
            &path,
            "[[services]]\nname = \"a\"\n[[services]]\nname = \"b\"\n",
        )
        .expect("write");
        let second = file.desired_if_changed().expect("new bytes are read");
        assert_eq!(
            second.expect("parses").file.expect("file").services.len(),
            2
        );
        assert!(file.desired_if_changed().is_none());
        // A bad file is remembered too: the same bad bytes are one error.
        std::fs::write(&path, "not = = toml").expect("write");
        assert!(matches!(file.desired_if_changed(), Some(Err(_))));
        assert!(file.desired_if_changed().is_none());
        // A file that went away and came back with the bytes it had is read
        // again: the failed read in between is what the caller holds.
        std::fs::remove_file(&path).expect("remove");
        assert!(matches!(file.desired_if_changed(), Some(Err(_))));
        std::fs::write(&path, "not = = toml").expect("write");
        assert!(file.desired_if_changed().is_some());
        // A forced read reads whatever the bytes.
        assert!(file.desired().is_err());
    }
}
