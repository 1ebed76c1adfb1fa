//! placeholder
use std::path::PathBuf;
use std::time::Duration;
/// placeholder
pub fn watch_file(
    _path: PathBuf,
    _debounce: Duration,
) -> Result<tokio::sync::mpsc::Receiver<()>, crate::WatchError> {
    todo!()
}
