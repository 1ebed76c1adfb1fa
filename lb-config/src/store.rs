//! [`FileStore`]: allocations in a JSON state file, so that a restart with the
//! same config keeps its cluster IPs and node ports.

use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use lb_core::alloc::{AllocationStore, Allocations, StoreError};

/// Allocations in a JSON file, written atomically so a crash never leaves
/// half a file: a temporary file created exclusively (`O_EXCL`, a random
/// name) in the same directory, fsync, rename over the state file, fsync of
/// the directory. The temporary name is never predictable and never opened
/// through a symlink someone planted, and the rename replaces a symlink at
/// the state file's path instead of writing through it. A missing file is
/// an empty state.
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
        let dir = match self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            Some(dir) => dir,
            None => Path::new("."),
        };
        let write = || -> std::io::Result<()> {
            let mut tmp = tempfile::Builder::new()
                .prefix(".state-")
                .suffix(".tmp")
                .tempfile_in(dir)?;
            tmp.write_all(&json)?;
            tmp.write_all(b"\n")?;
            tmp.as_file().sync_all()?;
            tmp.persist(&self.path).map_err(|e| e.error)?;
            // The rename is durable once the directory is.
            fs::File::open(dir)?.sync_all()
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
        let left: Vec<_> = fs::read_dir(dir.path().join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["state.json"], "temporary files left behind");
    }

    #[test]
    fn a_planted_symlink_is_never_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "precious").unwrap();
        let path = dir.path().join("state.json");
        // The names an older lb-proxy wrote through, and the state file
        // itself: each a symlink to the victim.
        std::os::unix::fs::symlink(&victim, dir.path().join("state.json.tmp")).unwrap();
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        let mut a = Allocations::default();
        a.node_ports.insert("default/web/TCP/80".into(), 30000);
        FileStore::new(&path).save(&a).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        assert!(!fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(FileStore::new(&path).load().unwrap(), a);
    }

    #[test]
    fn a_state_file_that_cannot_be_written_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        // A file where the directory should be: not writable even by root.
        fs::write(dir.path().join("sub"), "").unwrap();
        let err = FileStore::new(dir.path().join("sub/state.json"))
            .save(&Allocations::default())
            .unwrap_err();
        assert!(err.to_string().contains("sub/state.json"), "{err}");
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
