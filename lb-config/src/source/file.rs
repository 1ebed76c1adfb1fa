//! The config file as a source: its settings and objects, read whole on
//! every rebuild that concerns it, and watched for edits, renames and
//! ConfigMap symlink swaps.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::error::{ConfigErrors, FieldError};
use crate::source::{Changed, DesiredState, Source, WatchFuture};
use crate::watch::{FileWatch, WatchTarget};

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

    fn watch(self: Arc<Self>, changed: Changed, stop: CancellationToken) -> WatchFuture {
        // Set up now, so the watch exists before the control plane's next
        // read of the file.
        match FileWatch::new(WatchTarget::File(self.path.clone())) {
            Ok(watch) => Box::pin(watch.run(changed, stop)),
            Err(e) => {
                tracing::warn!(
                    "not watching {}: {e}; reload with SIGHUP",
                    self.path.display()
                );
                Box::pin(async {})
            }
        }
    }
}
