//! The manifests' files, each parsed once per version.
//!
//! A directory of one file per service is 10,000 files at 10,000 services,
//! and parsing them all takes over half a second; one file added should
//! cost one parse. So a read lists the files, looks at each one's identity
//! (device, inode, size, modification and change times: what `stat` says,
//! following symlinks as ConfigMap volumes need) and parses only the files
//! whose identity is new. The objects of a file that did not change are the
//! very ones (shared, see [`Sourced`](crate::source::Sourced)) the last
//! read gave.
//!
//! Identity is trusted only for a file that was older than the file
//! system's clock tick when it was read: a file rewritten in place, to the
//! same size, within the tick it was last written in keeps its times ("racy
//! git"), so a file read while that young is parsed again at the next read.
//! The tick is the kernel's coarse clock (a few milliseconds; [`RACY`] is
//! well past it) where times carry nanoseconds, and whole seconds where they
//! do not (FAT's two, ext3's one: [`RACY_COARSE`]). A parse that gives what
//! the file gave before is no change.
//!
//! A forced read (SIGHUP, the first load) parses every file.

use crate::hash::HashMap;
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::kinds::{finish, Acc, FileObjects};
use super::{load_text, read_error};
use crate::error::{ConfigErrors, FieldError};
use crate::source::DesiredState;

/// How old a file must be, when read, for its `stat` identity to stand for
/// its contents, on a file system whose times carry nanoseconds: well past
/// the coarse clock they are taken from (one tick: 1 to 10 ms).
pub(super) const RACY: Duration = Duration::from_millis(50);

/// The same for times in whole seconds (no nanoseconds): FAT's times are
/// two seconds apart.
pub(super) const RACY_COARSE: Duration = Duration::from_secs(3);

/// What `stat` says of a file, enough to tell that it changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// One file as last parsed.
#[derive(Debug)]
struct Entry {
    stamp: Stamp,
    /// The file was old enough, when read, for `stamp` to stand for what
    /// was read.
    trusted: bool,
    /// The directory's entry is a symlink: what it points at can change
    /// without an event on its name, so a named read looks at it anyway.
    link: bool,
    /// Bumped whenever a parse gives something else than the last one.
    version: u64,
    parsed: Result<FileObjects, Box<[FieldError]>>,
}

/// The files of one manifests path, as last read.
///
/// Files are named by their paths as bytes (`OsString`): `Path`'s own
/// comparisons and hashing go component by component, and were most of an
/// unchanged read of 10,000 files.
#[derive(Debug, Default)]
pub(super) struct Files {
    entries: HashMap<OsString, Entry>,
    /// The files (and their versions) the last state was made of; `None`
    /// before a read, and after a read failed.
    last: Option<Vec<(OsString, u64)>>,
    versions: u64,
}

impl Files {
    /// The whole state of `path` (a file or a directory), every file parsed
    /// again.
    pub(super) fn read_all(&mut self, path: &Path) -> Result<DesiredState, ConfigErrors> {
        let made_of = self.refresh(path, true).inspect_err(|_| self.last = None)?;
        let state = self.state(&made_of);
        self.last = Some(made_of);
        state
    }

    /// The whole state of `path`, parsing only the files that changed; `None`
    /// when it is the state the last read gave.
    /// `touched`: the files of the directory that changed since the last
    /// read, when a watch names them all (see
    /// [`Touched`](crate::source::Touched)); `None` lists it whole.
    pub(super) fn read_changed(
        &mut self,
        path: &Path,
        touched: Option<std::collections::HashSet<OsString>>,
    ) -> Option<Result<DesiredState, ConfigErrors>> {
        let refreshed = touched
            .and_then(|names| self.refresh_named(path, names))
            .unwrap_or_else(|| self.refresh(path, false));
        let made_of = match refreshed {
            Ok(made_of) => made_of,
            Err(e) => {
                // Say so again at the next read.
                self.last = None;
                return Some(Err(e));
            }
        };
        if self.last.as_ref() == Some(&made_of) {
            return None;
        }
        let state = self.state(&made_of);
        self.last = Some(made_of);
        Some(state)
    }

    /// Lists the files and parses those that changed (all of them with
    /// `all`); returns each listed file with its version.
    fn refresh(&mut self, path: &Path, all: bool) -> Result<Vec<(OsString, u64)>, ConfigErrors> {
        let listed = super::manifest_files_with_meta(path)?;
        let now = SystemTime::now();
        let mut versions: Vec<Option<u64>> = Vec::with_capacity(listed.len());
        let mut to_parse = Vec::new();
        for (i, (file, meta, _)) in listed.iter().enumerate() {
            let known = self
                .entries
                .get(file.as_os_str())
                .filter(|e| !all && e.trusted && e.stamp == Stamp::of(meta));
            versions.push(known.map(|e| e.version));
            if known.is_none() {
                to_parse.push(i);
            }
        }
        let parsed = parse_many(&listed, &to_parse, now);
        for (&i, parsed) in to_parse.iter().zip(parsed) {
            let (file, meta, link) = &listed[i];
            let file = file.as_os_str().to_os_string();
            versions[i] = Some(match parsed {
                Ok(parsed) => self.store(file, Stamp::of(meta), *link, parsed),
                Err(e) => {
                    // Read again next time.
                    self.entries.remove(&file);
                    return Err(e);
                }
            });
        }
        let made_of: Vec<(OsString, u64)> = listed
            .into_iter()
            .zip(versions)
            .map(|((file, _, _), v)| (file.into_os_string(), v.unwrap_or_default()))
            .collect();
        if self.entries.len() > made_of.len() {
            let listed: crate::hash::HashSet<&OsString> = made_of.iter().map(|(f, _)| f).collect();
            self.entries.retain(|f, _| listed.contains(f));
        }
        Ok(made_of)
    }

    /// [`Files::refresh`] looking only at the files `names` (of the
    /// directory `dir`), those read while too young to trust, and symlinks
    /// (a ConfigMap's files; an edit of a link's target is an event on the
    /// target's name, or none when it is elsewhere): the last
    /// read's files with those added, changed or removed. `None` when it
    /// cannot stand for a whole listing (no last read, a `stat` that failed
    /// for another reason than the file being gone).
    fn refresh_named(
        &mut self,
        dir: &Path,
        names: std::collections::HashSet<OsString>,
    ) -> Option<Result<Vec<(OsString, u64)>, ConfigErrors>> {
        let mut made_of = self.last.clone()?;
        let now = SystemTime::now();
        let mut check: Vec<OsString> = names
            .into_iter()
            .filter(|n| super::is_manifest_name(n))
            .map(|n| dir.join(n).into_os_string())
            .collect();
        check.extend(
            self.entries
                .iter()
                .filter(|(_, e)| !e.trusted || e.link)
                .map(|(f, _)| f.clone()),
        );
        check.sort_unstable();
        check.dedup();
        for file in check {
            let link = match std::fs::symlink_metadata(&file) {
                Ok(meta) => meta.file_type().is_symlink(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
                Err(_) => return None,
            };
            let meta = match std::fs::metadata(&file) {
                Ok(meta) => Some(meta).filter(std::fs::Metadata::is_file),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(_) => return None,
            };
            let at = made_of.binary_search_by(|(f, _)| f.as_os_str().cmp(&file));
            let Some(meta) = meta else {
                if let Ok(i) = at {
                    made_of.remove(i);
                    self.entries.remove(&file);
                }
                continue;
            };
            let stamp = Stamp::of(&meta);
            let known = self
                .entries
                .get(&file)
                .filter(|e| e.trusted && e.stamp == stamp)
                .map(|e| e.version);
            let version = match known {
                Some(v) => v,
                None => match self.parse(&file, stamp, &meta, link, now) {
                    Ok(v) => v,
                    Err(e) => return Some(Err(e)),
                },
            };
            match at {
                Ok(i) => made_of[i].1 = version,
                Err(i) => made_of.insert(i, (file, version)),
            }
        }
        Some(Ok(made_of))
    }

    /// Reads and parses one file into the cache; returns its version (the
    /// last one when it parses to the same objects).
    fn parse(
        &mut self,
        file: &OsString,
        stamp: Stamp,
        meta: &std::fs::Metadata,
        link: bool,
        now: SystemTime,
    ) -> Result<u64, ConfigErrors> {
        match read_and_parse(Path::new(file), meta, now) {
            Ok(parsed) => Ok(self.store(file.clone(), stamp, link, parsed)),
            Err(e) => {
                // Read again next time.
                self.entries.remove(file);
                Err(e)
            }
        }
    }

    /// Puts a parsed file in the cache; returns its version (the last one
    /// when it parsed to the same objects).
    fn store(&mut self, file: OsString, stamp: Stamp, link: bool, parsed: Parsed) -> u64 {
        let version = match self.entries.get(&file) {
            Some(e) if e.parsed == parsed.objects => e.version,
            _ => {
                self.versions += 1;
                self.versions
            }
        };
        self.entries.insert(
            file,
            Entry {
                stamp,
                trusted: parsed.trusted,
                link,
                version,
                parsed: parsed.objects,
            },
        );
        version
    }

    /// The state the files in `made_of` add up to (their objects shared
    /// with the cache), or every error they hold.
    fn state(&self, made_of: &[(OsString, u64)]) -> Result<DesiredState, ConfigErrors> {
        let mut acc = Acc::default();
        let mut errors = Vec::new();
        for (file, _) in made_of {
            match self.entries.get(file).map(|e| &e.parsed) {
                Some(Ok(parsed)) => acc.extend_from(parsed),
                Some(Err(e)) => errors.extend(e.iter().cloned()),
                None => {}
            }
        }
        if errors.is_empty() {
            Ok(finish(acc))
        } else {
            Err(ConfigErrors { errors })
        }
    }
}

/// One file read and parsed, not yet in the cache.
struct Parsed {
    objects: Result<FileObjects, Box<[FieldError]>>,
    /// Old enough, when read, for its stamp to stand for its contents.
    trusted: bool,
}

/// Reads and parses the file at `path` (`meta`: what `stat` said of it).
/// Touches no cache, so it may run on any thread.
fn read_and_parse(
    path: &Path,
    meta: &std::fs::Metadata,
    now: SystemTime,
) -> Result<Parsed, ConfigErrors> {
    let text = crate::source::read_settled(path).map_err(|e| read_error(path, e))?;
    let mut acc = Acc::default();
    let objects = load_text(&text, &path.display().to_string(), &mut acc)
        .map(|()| FileObjects::from(acc))
        .map_err(|e| e.errors.into());
    // A file whose time has no nanoseconds is taken to be on a file system
    // of whole seconds (on others, one in a few hundred is, and is only
    // trusted a little later).
    let racy = if meta.mtime_nsec() == 0 {
        RACY_COARSE
    } else {
        RACY
    };
    let trusted = meta
        .modified()
        .ok()
        .and_then(|m| now.duration_since(m).ok())
        .is_some_and(|age| age > racy);
    Ok(Parsed { objects, trusted })
}

/// From how many files to parse a read spreads them over the cores: the
/// first load of 10,000 files spends most of its time parsing YAML, while
/// one file changed is quicker parsed than a thread is started.
const PARSE_IN_PARALLEL_FROM: usize = 256;

/// The most threads a read parses on.
const MAX_PARSERS: usize = 8;

/// [`read_and_parse`] of `listed[i]` for each `i` of `which`, in that order;
/// on several threads when there are many.
fn parse_many(
    listed: &[(std::path::PathBuf, std::fs::Metadata, bool)],
    which: &[usize],
    now: SystemTime,
) -> Vec<Result<Parsed, ConfigErrors>> {
    let one = |i: &usize| read_and_parse(&listed[*i].0, &listed[*i].1, now);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_PARSERS));
    if which.len() < PARSE_IN_PARALLEL_FROM || threads < 2 {
        return which.iter().map(one).collect();
    }
    let chunk = which.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let parts: Vec<_> = which
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(one).collect::<Vec<_>>()))
            .collect();
        parts
            .into_iter()
            // A parser's panic is the read's, as it was on one thread.
            .flat_map(|p| p.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  ports:\n  - port: 80\n"
        )
    }

    /// Sets a file's modification time `ago` into the past, as a file
    /// written long before the read.
    fn age(path: &Path, ago: Duration) {
        let file = std::fs::File::options()
            .write(true)
            .open(path)
            .expect("open");
        file.set_modified(SystemTime::now() - ago)
            .expect("set mtime");
    }

    fn names(state: &DesiredState) -> Vec<String> {
        state
            .services
            .iter()
            .map(|s| s.object.name.clone())
            .collect()
    }

    /// A directory of one service file per name, written long ago.
    fn old_files(services: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in services {
            let path = dir.path().join(format!("{name}.yaml"));
            std::fs::write(&path, service(name)).expect("write");
            age(&path, Duration::from_secs(60));
        }
        dir
    }

    /// A read that finds a new, valid state.
    fn changed(
        files: &mut Files,
        dir: &Path,
        touched: Option<std::collections::HashSet<OsString>>,
    ) -> DesiredState {
        files
            .read_changed(dir, touched)
            .expect("a new state")
            .expect("valid")
    }

    #[test]
    fn an_unchanged_directory_is_no_new_state_and_keeps_its_objects() {
        let dir = old_files(&["a", "b"]);
        let mut files = Files::default();
        let first = files
            .read_changed(dir.path(), None)
            .expect("first read")
            .expect("valid");
        assert_eq!(names(&first), ["a", "b"]);
        assert!(
            files.read_changed(dir.path(), None).is_none(),
            "nothing changed"
        );

        std::fs::write(dir.path().join("c.yaml"), service("c")).expect("write");
        let second = files
            .read_changed(dir.path(), None)
            .expect("a new file")
            .expect("valid");
        assert_eq!(names(&second), ["a", "b", "c"]);
        assert!(
            std::sync::Arc::ptr_eq(&first.services[0].object, &second.services[0].object),
            "an unchanged file is not parsed again: its objects are the same ones"
        );
    }

    #[test]
    fn a_young_file_rewritten_to_the_same_size_is_still_seen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.yaml");
        std::fs::write(&path, service("a")).expect("write");
        let mut files = Files::default();
        let first = files
            .read_changed(dir.path(), None)
            .expect("read")
            .expect("valid");
        assert_eq!(names(&first), ["a"]);
        // Same size, same second, possibly the same clock tick: only its
        // youth makes the next read look inside.
        std::fs::write(&path, service("b")).expect("rewrite");
        let second = files
            .read_changed(dir.path(), None)
            .expect("changed")
            .expect("valid");
        assert_eq!(names(&second), ["b"]);
        // Parsed again while young, but the same objects: no new state.
        assert!(files.read_changed(dir.path(), None).is_none());
    }

    #[test]
    fn many_files_parsed_on_several_threads_come_out_in_order() {
        let count = PARSE_IN_PARALLEL_FROM + 44;
        let all: Vec<String> = (0..count).map(|i| format!("s{i:04}")).collect();
        let dir = tempfile::tempdir().expect("tempdir");
        for name in &all {
            std::fs::write(dir.path().join(format!("{name}.yaml")), service(name)).expect("write");
        }
        std::fs::write(dir.path().join("s0100.yaml"), "kind: [unclosed").expect("write");
        let mut files = Files::default();
        let errors = files.read_all(dir.path()).expect_err("one broken file");
        assert!(
            errors.to_string().contains("s0100.yaml"),
            "the broken file is named: {errors}"
        );
        std::fs::write(dir.path().join("s0100.yaml"), service("s0100")).expect("mend");
        let state = files.read_all(dir.path()).expect("valid");
        assert_eq!(names(&state), all, "every file, in name order");
    }

    #[test]
    fn a_named_read_looks_only_at_the_named_files() {
        let dir = old_files(&["a", "b"]);
        let mut files = Files::default();
        changed(&mut files, dir.path(), None);
        let named = |names: &[&str]| Some(names.iter().map(|n| OsString::from(*n)).collect());

        let c = dir.path().join("c.yaml");
        std::fs::write(&c, service("c")).expect("write");
        age(&c, Duration::from_secs(60));
        std::fs::remove_file(dir.path().join("a.yaml")).expect("remove");
        // Only `c.yaml` is named: the removal of `a.yaml` is not looked at.
        let state = changed(&mut files, dir.path(), named(&["c.yaml"]));
        assert_eq!(names(&state), ["a", "b", "c"]);
        let state = changed(&mut files, dir.path(), named(&["a.yaml", ".a.yaml.swp"]));
        assert_eq!(names(&state), ["b", "c"]);
        assert!(files.read_changed(dir.path(), named(&[])).is_none());
        // A whole listing agrees.
        assert!(files.read_changed(dir.path(), None).is_none());
    }

    #[test]
    fn a_named_read_looks_at_symlinks_whatever_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("web.yaml.v1");
        std::fs::write(&target, service("a")).expect("write");
        age(&target, Duration::from_secs(60));
        std::os::unix::fs::symlink("web.yaml.v1", dir.path().join("web.yaml")).expect("link");
        let mut files = Files::default();
        assert_eq!(names(&changed(&mut files, dir.path(), None)), ["a"]);
        // Edited through its target: the watch names `web.yaml.v1`, which is
        // not a manifest's name.
        std::fs::write(&target, service("bb")).expect("rewrite");
        age(&target, Duration::from_secs(30));
        let named = std::collections::HashSet::from(["web.yaml.v1".into()]);
        let state = changed(&mut files, dir.path(), Some(named));
        assert_eq!(names(&state), ["bb"]);
    }

    #[test]
    fn a_young_file_is_looked_at_again_even_unnamed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.yaml");
        std::fs::write(&path, service("a")).expect("write");
        let mut files = Files::default();
        changed(&mut files, dir.path(), None);
        std::fs::write(&path, service("b")).expect("rewrite");
        let state = changed(&mut files, dir.path(), Some(Default::default()));
        assert_eq!(names(&state), ["b"]);
    }

    #[test]
    fn a_removed_file_takes_its_objects_away() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["a", "b"] {
            std::fs::write(dir.path().join(format!("{name}.yaml")), service(name)).expect("write");
        }
        let mut files = Files::default();
        files
            .read_changed(dir.path(), None)
            .expect("read")
            .expect("valid");
        std::fs::remove_file(dir.path().join("a.yaml")).expect("remove");
        let state = files
            .read_changed(dir.path(), None)
            .expect("changed")
            .expect("valid");
        assert_eq!(names(&state), ["b"]);
    }

    #[test]
    fn a_broken_file_fails_every_read_until_it_is_mended() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("a.yaml"), service("a")).expect("write");
        std::fs::write(dir.path().join("b.yaml"), "kind: [unclosed").expect("write");
        let mut files = Files::default();
        assert!(matches!(files.read_changed(dir.path(), None), Some(Err(_))));
        // Level-triggered: the error is the state until the file changes.
        assert!(files.read_changed(dir.path(), None).is_none());
        assert!(matches!(Some(files.read_all(dir.path())), Some(Err(_))));
        std::fs::write(dir.path().join("b.yaml"), service("b")).expect("mend");
        let state = files
            .read_changed(dir.path(), None)
            .expect("mended")
            .expect("valid");
        assert_eq!(names(&state), ["a", "b"]);
    }

    #[test]
    fn a_forced_read_parses_every_file_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.yaml");
        std::fs::write(&path, service("a")).expect("write");
        age(&path, Duration::from_secs(60));
        let mut files = Files::default();
        let first = files
            .read_changed(dir.path(), None)
            .expect("read")
            .expect("valid");
        let again = files.read_all(dir.path()).expect("valid");
        assert_eq!(first, again);
        assert!(!std::sync::Arc::ptr_eq(
            &first.services[0].object,
            &again.services[0].object
        ));
    }
}
