//! [`FileStore`]: allocations in a JSON state file, so that a restart with the
//! same config keeps its cluster IPs and node ports.

use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use lb_core::alloc::{AllocationStore, Allocations, StoreError};

/// Allocations in a JSON file, written atomically (temporary file, fsync,
/// rename) so a crash never leaves half a file. A missing file is an empty
/// state.
#[derive(Debug, Clone)]
pub struct FileStore {
    path: PathBuf,
}

impl FileStore {
    /// A store at `path` (created on the first save, with its directory).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileStore { path: path.into() }
    }

    /// Where the state lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn error(&self, message: impl std::fmt::Display) -> StoreError {
        StoreError {
            location: self.path.display().to_string(),
            message: message.to_string(),
        }
    }
}

impl AllocationStore for FileStore {
    fn load(&self) -> Result<Allocations, StoreError> {
        let text = match fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Allocations::default()),
            Err(e) => return Err(self.error(format!("cannot read: {e}"))),
        };
        serde_json::from_str(&text).map_err(|e| self.error(format!("not valid state JSON: {e}")))
    }

    fn save(&self, allocations: &Allocations) -> Result<(), StoreError> {
        let json = serde_json::to_vec_pretty(allocations).map_err(|e| self.error(e))?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)
                .map_err(|e| self.error(format!("cannot create directory: {e}")))?;
        }
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let write = || -> std::io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&json)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            fs::rename(&tmp, &self.path)
        };
        write().map_err(|e| self.error(format!("cannot write: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_is_empty_and_saves_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path().join("sub/state.json"));
        assert_eq!(store.load().unwrap(), Allocations::default());
        let mut a = Allocations::default();
        a.cluster_ips
            .insert("default/web".into(), "127.96.0.1".parse().unwrap());
        a.node_ports.insert("default/web/TCP/80".into(), 30000);
        store.save(&a).unwrap();
        assert_eq!(store.load().unwrap(), a);
        assert!(!dir.path().join("sub/state.json.tmp").exists());
    }

    #[test]
    fn corrupt_file_is_an_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        fs::write(&path, "{not json").unwrap();
        let err = FileStore::new(&path).load().unwrap_err();
        assert!(err.to_string().contains("state.json"), "{err}");
    }
}
