//! Reading a file that someone may be writing right now.
//!
//! Editors and tools write config files in ways that expose a reader to
//! half a file: a shell redirect truncates first and writes later, `cp`
//! writes in chunks. A source must never apply what it saw in between, so
//! every file a source reads goes through [`read_settled`]:
//!
//! - a zero-byte file is refused ("empty file"): it is far more often a
//!   truncation caught mid-write than a wish to serve nothing, and a file
//!   meant to hold no services can say so with a comment or a table;
//! - a file whose size or modification time changes while it is read (or
//!   whose text is not as long as its size) is read again once the writer
//!   has had [`SETTLE`] to finish, up to [`SETTLE_TRIES`] times, and is
//!   refused if it never holds still.
//!
//! A refused read fails the reload like an invalid file: the last good
//! config keeps serving, and the writer's next change (which the watch sees)
//! is read afresh.

use std::fs::Metadata;
use std::io;
use std::path::Path;
use std::time::Duration;

/// How long a file that changed under the reader gets before it is read
/// again: the watch's own debounce, the pause that ends a burst of writes.
pub const SETTLE: Duration = Duration::from_millis(150);

/// How many times a file that keeps changing is read before the read fails
/// (about one second in all, the watch's longest delay).
pub const SETTLE_TRIES: usize = 7;

/// Why a file could not be read whole.
#[derive(Debug)]
pub enum Unsettled {
    /// The file could not be opened or read.
    Io(io::Error),
    /// The file holds zero bytes.
    Empty,
    /// The file changed during every read.
    Changing,
}

impl std::fmt::Display for Unsettled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unsettled::Io(e) => write!(f, "{e}"),
            Unsettled::Empty => f.write_str(
                "empty file (zero bytes; a file meant to hold no services says so \
                 with a comment or a table)",
            ),
            Unsettled::Changing => f.write_str(
                "the file kept changing while it was read; it is read again at its next change",
            ),
        }
    }
}

/// The whole text of `path` as one writer left it: never empty, never
/// caught mid-write. Blocking (it may sleep [`SETTLE`] between tries):
/// call it where sources read, off the async runtime.
pub fn read_settled(path: &Path) -> Result<String, Unsettled> {
    read_settled_with(path, SETTLE, SETTLE_TRIES)
}

fn read_settled_with(path: &Path, settle: Duration, tries: usize) -> Result<String, Unsettled> {
    for attempt in 0..tries.max(1) {
        if attempt > 0 {
            std::thread::sleep(settle);
        }
        let before = std::fs::metadata(path).map_err(Unsettled::Io)?;
        let text = read_at_most(path, before.len().saturating_add(1)).map_err(Unsettled::Io)?;
        let after = std::fs::metadata(path).map_err(Unsettled::Io)?;
        if !held_still(&before, &after, text.len()) {
            continue;
        }
        if text.is_empty() {
            return Err(Unsettled::Empty);
        }
        return Ok(text);
    }
    Err(Unsettled::Changing)
}

/// The text of `path`, but never more than `limit` bytes: a file that a
/// writer keeps appending to (a log named by mistake) must not keep the
/// reader reading, and holding, whatever the writer adds meanwhile. One
/// byte past the size seen before the read is enough to know it grew.
fn read_at_most(path: &Path, limit: u64) -> io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(limit)
        .read_to_string(&mut text)?;
    Ok(text)
}

/// Whether a read of `read` bytes between `before` and `after` saw one
/// version of the file.
fn held_still(before: &Metadata, after: &Metadata, read: usize) -> bool {
    before.len() == after.len()
        && after.len() == read as u64
        && before.modified().ok() == after.modified().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[test]
    fn a_zero_byte_file_is_refused_and_a_comment_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lb.toml");
        std::fs::write(&path, "").unwrap();
        assert!(matches!(read_settled(&path), Err(Unsettled::Empty)));
        std::fs::write(&path, "# no services on this node\n").unwrap();
        assert_eq!(read_settled(&path).unwrap(), "# no services on this node\n");
    }

    #[test]
    fn a_file_that_never_holds_still_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lb.toml");
        std::fs::write(&path, "# start\n").unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (path, stop) = (path.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
                // One line per write: a writer paused between two writes
                // of one line would leave a file that holds still while
                // half-written, which no reader can tell from a whole one.
                let mut line = vec![b'#'; 64 * 1024];
                line.push(b'\n');
                // Bounded (64 MiB at most) whatever the reader does.
                for _ in 0..1024 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    f.write_all(&line).unwrap();
                }
            })
        };
        let got = read_settled_with(&path, Duration::from_millis(1), 3);
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
        // A read may by chance fall between two writes and see one
        // version; what it returns is then whole.
        match got {
            Err(Unsettled::Changing) => {}
            Ok(text) => assert!(text.ends_with('\n'), "half a write returned"),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn a_read_shorter_than_the_size_did_not_hold_still() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "abc").unwrap();
        let m = std::fs::metadata(&path).unwrap();
        assert!(held_still(&m, &m, 3));
        assert!(!held_still(&m, &m, 2));
    }
}
