//! The config file as a source: its settings and objects, read whole on
//! every rebuild that concerns it, and (with the `watch` feature) watched
//! for edits, renames and ConfigMap symlink swaps; without it, read again on
//! a reload request only.

use std::path::{Path, PathBuf};
#[cfg(feature = "watch")]
use std::sync::Arc;

#[cfg(feature = "watch")]
use tokio_util::sync::CancellationToken;

use crate::error::{ConfigErrors, FieldError};
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
        let text = std::fs::read_to_string(&self.path).map_err(|e| {
            ConfigErrors::single(FieldError::parse(
                self.path.display().to_string(),
                format!("cannot read the config file: {e}"),
            ))
        })?;
        Ok(DesiredState {
            file: Some(crate::parse_str(&text)?),
            ..DesiredState::default()
        })
    }

    #[cfg(feature = "watch")]
    fn watch(self: Arc<Self>, changed: Changed, stop: CancellationToken) -> WatchFuture {
        source_watch(WatchTarget::File(self.path.clone()), changed, stop)
    }
}
