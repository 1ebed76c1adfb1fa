//! [`Touched`]: the files a directory's watch saw change since the last read,
//! so a read of a directory of 10,000 manifests looks at those files rather
//! than listing and `stat`ing all of them (a third of a reload there).
//!
//! The watch names a file for every event on it (created, written, renamed
//! in or out, removed) before it wakes the control plane, so a file changed
//! before a read is named by the time the read that follows its wake-up
//! takes the names. Anything the names cannot stand for makes the next
//! read a whole one:
//! - no watch running (before it starts, after it ends, a build without
//!   `watch`): every read is whole;
//! - an event the watch could not tell apart (a queue overflow, a watch
//!   error, an event without a path, one on the directory itself, or on
//!   ConfigMap's `..data` machinery);
//! - the first read after the watch started (changes before it were never
//!   named).

use std::collections::HashSet;
use std::ffi::OsString;
use std::sync::Mutex;

/// See the module.
#[derive(Debug)]
pub struct Touched {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// A watch is running and naming files.
    watching: bool,
    /// Some change since the last read may not be named.
    lost: bool,
    /// File names (in the watched directory) changed since the last read.
    names: HashSet<OsString>,
}

impl Default for Touched {
    fn default() -> Self {
        Touched {
            inner: Mutex::new(Inner {
                watching: false,
                lost: true,
                names: HashSet::new(),
            }),
        }
    }
}

impl Touched {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Plain data, consistent after every statement: a panic elsewhere
        // while it was held leaves nothing half-done.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A watch starts (`true`: it names every change from now on) or ends.
    pub fn watching(&self, on: bool) {
        let mut inner = self.lock();
        inner.watching = on;
        inner.lost = true;
    }

    /// The watch saw the file `name` (of the watched directory) change.
    pub fn file(&self, name: OsString) {
        self.lock().names.insert(name);
    }

    /// The watch saw something it cannot name by file: the next read is a
    /// whole one.
    pub fn lose(&self) {
        self.lock().lost = true;
    }

    /// Starts a read: the files changed since the last one, or `None` when
    /// this read must list the whole directory. Either way, what happens
    /// from now on is for the next read.
    pub fn take(&self) -> Option<HashSet<OsString>> {
        let mut inner = self.lock();
        let names = std::mem::take(&mut inner.names);
        if inner.watching && !inner.lost {
            return Some(names);
        }
        // A whole read covers everything up to now; from here a running
        // watch names every change.
        inner.lost = !inner.watching;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_watch_every_read_is_whole() {
        let t = Touched::default();
        t.file("a.yaml".into());
        assert_eq!(t.take(), None);
        assert_eq!(t.take(), None);
    }

    #[test]
    fn a_watch_names_files_only_after_a_whole_read() {
        let t = Touched::default();
        t.watching(true);
        t.file("a.yaml".into());
        assert_eq!(t.take(), None, "the first read after the watch started");
        assert_eq!(t.take(), Some(HashSet::new()));
        t.file("b.yaml".into());
        assert_eq!(t.take(), Some(HashSet::from(["b.yaml".into()])));
    }

    #[test]
    fn a_lost_event_or_an_ended_watch_makes_the_next_read_whole() {
        let t = Touched::default();
        t.watching(true);
        assert_eq!(t.take(), None);
        t.lose();
        assert_eq!(t.take(), None);
        assert_eq!(t.take(), Some(HashSet::new()));
        t.watching(false);
        assert_eq!(t.take(), None);
        assert_eq!(t.take(), None);
    }
}
