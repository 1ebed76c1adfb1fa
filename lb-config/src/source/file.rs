//! The config file as a source: its settings and objects, read whole on
//! every rebuild that concerns it, and (with the `watch` feature) watched
//! for edits, renames and ConfigMap symlink swaps; without it, read again on
//! a reload request only.

use std::path::{Path, PathBuf};
#[cfg(feature = "watch")]
use std::sync::Arc;

#[cfg(feature = "watch")]
use tokio_util::sync::CancellationToken;

use crate::error::ConfigErrors;
#[cfg(feature = "watch")]
use crate::source::{Changed, WatchFuture};
use crate::source::{DesiredState, Source};
#[cfg(feature = "watch")]
use crate::watch::{source_watch, WatchTarget};

/// `--config FILE`: the one source that carries settings ([`DesiredState::file`]).
#[derive(Debug, Clone)]
pub struct FileSource {
    path: PathBuf,
}

impl FileSource {
    /// A source reading `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileSource { path: path.into() }
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
        let text = crate::loader::read_file(&self.path)?;
        let file = crate::parse_str(&text).map_err(|mut e| {
            let name = self.path.display().to_string();
            crate::locate::locate_toml(&mut e.errors, &text, &name);
            e
        })?;
        Ok(DesiredState {
            file: Some(file),
            ..DesiredState::default()
        })
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
