//! One `lb-proxy run` per node: the node lock.
//!
//! Service listeners set `SO_REUSEPORT` (for the per-core accept modes), so
//! a second lb-proxy started on the same addresses by mistake would bind
//! beside the first and take a share of its connections without a word.
//! Before it binds anything, `lb-proxy run` therefore takes an advisory
//! lock (`flock(2)`) on `RUNTIME_DIR/NODE.lock`, keyed by its `[node] name`:
//! a second process for the same node refuses to start and names the
//! first's PID; processes for other nodes (a fleet on one host) are not
//! affected. The kernel drops the lock when the process ends, however it
//! ends, so a crash never leaves a node locked. A process that starts
//! draining (SIGTERM) lets go at once, and a starting process waits a
//! little ([`TAKEOVER_WAIT`]) for an owner that is about to let go, so
//! "stop the old one, start the new one" works.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::handover::{Registration, SocketKey, Sockets};

/// How long a starting process waits for the owner to let go.
pub const TAKEOVER_WAIT: Duration = Duration::from_secs(5);

/// How often the lock is tried again while waiting.
const RETRY: Duration = Duration::from_millis(50);

/// Why the node lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    /// The runtime directory could not be made or the lock file opened.
    #[error(
        "cannot use the runtime directory {dir}: {source} (choose another with --runtime-dir)"
    )]
    Dir {
        /// The directory.
        dir: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// Another process holds the node.
    #[error(
        "node {node:?} is already served by lb-proxy{} (lock {}); take it over with `lb-proxy run --takeover` (no connection refused), stop it first{}, or give this one another [node] name",
        pid.map(|p| format!(" pid {p}")).unwrap_or_default(),
        path.display(),
        pid.map(|p| format!(" (kill -TERM {p}: it lets go as soon as it starts draining)")).unwrap_or_default()
    )]
    Held {
        /// The node name.
        node: String,
        /// The owner's PID, as it wrote it in the lock file.
        pid: Option<u32>,
        /// The lock file.
        path: PathBuf,
    },
    /// What a previous owner handed over as the node lock is not this
    /// node's lock file.
    #[error("the lock handed over is not {path}")]
    NotTheLock {
        /// The lock file of this node.
        path: PathBuf,
    },
}

/// The node, held: dropping it (or [`NodeLock::release`]) lets go.
#[derive(Debug)]
pub struct NodeLock {
    /// Dropped before the lock (a hand-over never sends a closed file).
    registration: Option<Registration>,
    lock: Option<Flock<File>>,
    path: PathBuf,
}

/// The node lock a previous owner handed over, checked to be this node's
/// lock file but not yet taken as this process's: until
/// [`HandedLock::take`], dropping it leaves the owner's lock as it is.
#[derive(Debug)]
pub struct HandedLock {
    file: File,
    path: PathBuf,
}

impl HandedLock {
    /// Checks that `fd` is the lock file of `node` in `dir` (the same
    /// inode).
    pub fn check(fd: OwnedFd, dir: &Path, node: &str) -> Result<HandedLock, OwnerError> {
        let path = lock_path(dir, node);
        let file = File::from(fd);
        let same = match (file.metadata(), std::fs::metadata(&path)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        };
        if !same {
            return Err(OwnerError::NotTheLock { path });
        }
        Ok(HandedLock { file, path })
    }

    /// Takes the lock as this process's: the same open file, so the same
    /// lock (`flock(2)` locks belong to the open file, which both processes
    /// now share); the previous owner lets go of its copy without
    /// unlocking ([`NodeLock::hand_over`]).
    pub fn take(self) -> Result<NodeLock, OwnerError> {
        match Flock::lock(self.file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => {
                let mut held = NodeLock {
                    registration: None,
                    lock: Some(lock),
                    path: self.path,
                };
                held.write_pid();
                Ok(held)
            }
            Err((_, errno)) => Err(OwnerError::Dir {
                dir: self
                    .path
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_default(),
                source: std::io::Error::from(errno),
            }),
        }
    }
}

/// The lock file of `node` in `dir`.
fn lock_path(dir: &Path, node: &str) -> PathBuf {
    dir.join(format!("{}.lock", file_stem(node)))
}

/// Where the owner of `node` listens for a takeover
/// (`RUNTIME_DIR/NODE.sock`).
pub fn control_path(dir: &Path, node: &str) -> PathBuf {
    dir.join(format!("{}.sock", file_stem(node)))
}

impl NodeLock {
    /// Takes the lock of `node` in `dir` (made if missing), waiting up to
    /// `wait` for a current owner to let go, and writes this process's PID
    /// in it for the next one to name.
    pub fn acquire(dir: &Path, node: &str, wait: Duration) -> Result<NodeLock, OwnerError> {
        let dir_error = |source| OwnerError::Dir {
            dir: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(dir_error)?;
        let path = lock_path(dir, node);
        let deadline = Instant::now() + wait;
        loop {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(dir_error)?;
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => {
                    let mut held = NodeLock {
                        registration: None,
                        lock: Some(lock),
                        path,
                    };
                    held.write_pid();
                    return Ok(held);
                }
                Err((mut file, Errno::EWOULDBLOCK)) => {
                    if Instant::now() >= deadline {
                        let mut text = String::new();
                        let _ = file.read_to_string(&mut text);
                        return Err(OwnerError::Held {
                            node: node.to_string(),
                            pid: text.trim().parse().ok(),
                            path,
                        });
                    }
                    std::thread::sleep(RETRY);
                }
                Err((_, errno)) => return Err(dir_error(std::io::Error::from(errno))),
            }
        }
    }

    /// Writes this process's PID in the lock file, for the next process's
    /// message. A courtesy: failing to write it does not lose the lock.
    fn write_pid(&mut self) {
        if let Some(lock) = self.lock.as_mut() {
            let pid = std::process::id().to_string();
            let _ = lock
                .set_len(0)
                .and_then(|()| lock.rewind())
                .and_then(|()| lock.write_all(format!("{pid}\n").as_bytes()));
        }
    }

    /// Registers the lock file in `sockets`, so a takeover hands the lock
    /// on with the listening sockets.
    pub fn register(&mut self, sockets: &Sockets) {
        self.registration = None;
        if let Some(lock) = &self.lock {
            self.registration = Some(sockets.register(SocketKey::node_lock(), lock.as_fd()));
        }
    }

    /// Lets go of the node now (a draining process: the next one may start
    /// while this one finishes its connections). Idempotent.
    pub fn release(&mut self) {
        self.registration = None;
        // Dropping the Flock unlocks; the file stays for the next owner.
        self.lock = None;
    }

    /// Leaves the node to the process the lock was handed to: the lock
    /// belongs to the open file both processes share, so unlocking here
    /// would unlock it for the successor too. The descriptor is kept open,
    /// not unlocked, until this process exits.
    pub fn hand_over(&mut self) {
        self.registration = None;
        if let Some(lock) = self.lock.take() {
            std::mem::forget(lock);
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A node name as a file name: node names are DNS subdomains, but the
/// file's `[node] name` is read before validation, so anything that could
/// leave the directory is replaced.
fn file_stem(node: &str) -> String {
    node.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect::<String>()
        .trim_start_matches('.')
        .to_string()
}

/// Where node locks live unless `--runtime-dir` says otherwise:
/// `$RUNTIME_DIRECTORY` (systemd's `RuntimeDirectory=lb-proxy`), else
/// `/run/lb-proxy` for root, else `$XDG_RUNTIME_DIR/lb-proxy`, else
/// `lb-proxy-UID` in the temporary directory.
pub fn default_runtime_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("RUNTIME_DIRECTORY").filter(|d| !d.is_empty()) {
        // systemd may list several, separated by ':'; the first is ours.
        let first = dir
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or_default()
            .to_string();
        if !first.is_empty() {
            return PathBuf::from(first);
        }
    }
    let uid = effective_uid();
    if uid == Some(0) {
        return PathBuf::from("/run/lb-proxy");
    }
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("lb-proxy"),
        None => std::env::temp_dir().join(format!(
            "lb-proxy-{}",
            uid.map_or("user".to_string(), |u| u.to_string())
        )),
    }
}

/// This process's effective user id (`Uid:`'s second field in
/// /proc/self/status).
fn effective_uid() -> Option<u32> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The node a config file serves as: its `[node] name`, else the hostname
/// (as the loader decides). Read before anything is validated or bound; a
/// file that cannot be read or parsed names the default node, and `run`
/// reports the real error right after. The usual form (`name = "..."` under
/// a `[node]` header) is found by reading lines, so a 10,000-service file is
/// not parsed once more just for its node's name; anything unusual is left
/// to the TOML parser.
pub fn node_name_of(config: &Path) -> String {
    let Ok(text) = std::fs::read_to_string(config) else {
        return lb_config::default_node_name();
    };
    let named = match scan_node_name(&text) {
        Some(found) => found,
        None => lb_config::parse_str(&text)
            .ok()
            .and_then(|raw| raw.node.name),
    };
    named
        .filter(|n| !n.is_empty())
        .unwrap_or_else(lb_config::default_node_name)
}

/// `[node] name` read line by line: `Some(name)` (or `Some(None)`: the file
/// has no node name) when every line is in the plain form, `None` when a
/// form the scan does not follow (a multi-line string, an inline or dotted
/// `node`, a quoted key, an escaped value) means the parser must decide.
fn scan_node_name(text: &str) -> Option<Option<String>> {
    let mut in_node = false;
    let mut found = None;
    for line in text.lines() {
        let line = line.trim();
        if line.contains("\"\"\"") || line.contains("'''") {
            return None;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('[') {
            let header: String = line
                .split('#')
                .next()
                .unwrap_or_default()
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect();
            in_node = header == "[node]";
            if header.starts_with("[node.") || header.starts_with("[\"node") {
                return None;
            }
            continue;
        }
        let key = line.split(['=', ' ', '\t', '.']).next().unwrap_or_default();
        if key.starts_with('"') || key.starts_with('\'') {
            return None;
        }
        if !in_node {
            // Before any header, `node = {...}` or `node.name = ...`.
            if key == "node" {
                return None;
            }
            continue;
        }
        if key != "name" {
            continue;
        }
        let value = line.split_once('=')?.1.trim();
        let value = value.split_once(" #").map_or(value, |(v, _)| v).trim();
        let inner = value.strip_prefix('"')?.strip_suffix('"')?;
        if inner.contains(['\\', '"']) || found.is_some() {
            return None;
        }
        found = Some(inner.to_string());
    }
    Some(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_owner_of_the_same_node_is_refused_with_the_first_pid() {
        let dir = tempfile::tempdir().unwrap();
        let first = NodeLock::acquire(dir.path(), "node-1", Duration::ZERO).unwrap();
        let refused = NodeLock::acquire(dir.path(), "node-1", Duration::ZERO).unwrap_err();
        match &refused {
            OwnerError::Held { node, pid, path } => {
                assert_eq!(node, "node-1");
                assert_eq!(*pid, Some(std::process::id()));
                assert_eq!(path, first.path());
            }
            other => panic!("{other}"),
        }
        assert!(refused
            .to_string()
            .contains("already served by lb-proxy pid"));
        // Another node on the same host is not affected.
        NodeLock::acquire(dir.path(), "node-2", Duration::ZERO).unwrap();
    }

    #[test]
    fn a_released_node_can_be_taken_at_once_and_a_waiting_one_gets_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = NodeLock::acquire(dir.path(), "n", Duration::ZERO).unwrap();
        first.release();
        let second = NodeLock::acquire(dir.path(), "n", Duration::ZERO).unwrap();
        let path = dir.path().to_path_buf();
        let waiter = std::thread::spawn(move || NodeLock::acquire(&path, "n", TAKEOVER_WAIT));
        std::thread::sleep(Duration::from_millis(100));
        drop(second);
        assert!(
            waiter.join().unwrap().is_ok(),
            "the waiting process takes over"
        );
    }

    #[test]
    fn the_node_name_is_read_by_lines_as_the_parser_reads_it_or_left_to_the_parser() {
        let cases = [
            "[node]\nname = \"node-1\"\naddresses = [\"127.0.0.1\"]\n",
            "# a comment\n[proxy]\nworkers = 1\n[ node ]  # here\n  name=\"n2\" # why\n",
            "[proxy]\ndrain_timeout = \"1s\"\n",
            "[[services]]\nname = \"web\"\n[node]\naddresses = []\n",
        ];
        for text in cases {
            let parsed = lb_config::parse_str(text).unwrap().node.name;
            assert_eq!(scan_node_name(text), Some(parsed), "{text}");
        }
        for unusual in [
            "node = { name = \"x\" }\n",
            "node.name = \"x\"\n",
            "[node]\nname = \"a\\u0062\"\n",
            "[node]\n\"name\" = \"x\"\n",
            "x = \"\"\"\n[node]\nname = \"fake\"\n\"\"\"\n",
        ] {
            assert_eq!(scan_node_name(unusual), None, "{unusual}");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lb.toml");
        std::fs::write(&path, "node = { name = \"inline\" }\n").unwrap();
        assert_eq!(node_name_of(&path), "inline", "the parser decides");
    }

    #[test]
    fn node_names_never_leave_the_directory() {
        assert_eq!(file_stem("node-1.example"), "node-1.example");
        assert_eq!(file_stem("../../etc/x"), "_.._etc_x");
        assert_eq!(file_stem(".hidden"), "hidden");
    }
}
