//! The file watch notifies for every way a config file gets replaced, for a
//! directory's files, and for nothing else.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use lb_config::source::Changed;
use lb_config::watch::{FileWatch, WatchTarget, DEBOUNCE};
use tokio::sync::Notify;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

/// A running watch: its change signal and what wakes on it.
struct Watching {
    changed: Changed,
    wake: Arc<Notify>,
    stop: CancellationToken,
}

impl Drop for Watching {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Watching {
    fn start(target: WatchTarget) -> Watching {
        let wake = Arc::new(Notify::new());
        let changed = Changed::new(wake.clone());
        let stop = CancellationToken::new();
        let watch = FileWatch::new(target).expect("watch set up");
        tokio::spawn(watch.run(changed.clone(), stop.clone()));
        Watching {
            changed,
            wake,
            stop,
        }
    }

    /// Waits (bounded) for one notification.
    async fn fired(&self) -> bool {
        timeout(Duration::from_secs(5), async {
            while !self.changed.take() {
                self.wake.notified().await;
            }
        })
        .await
        .is_ok()
    }

    /// Waits until no notification has come for a while, so the next
    /// assertion sees only the next change.
    async fn quiet(&self) {
        for _ in 0..20 {
            self.changed.take();
            if timeout(DEBOUNCE * 3, self.wake.notified()).await.is_err() {
                return;
            }
        }
        panic!("the watch never went quiet");
    }
}

#[tokio::test]
async fn fires_when_the_file_is_written_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.toml");
    fs::write(&path, "").unwrap();
    let watch = Watching::start(WatchTarget::File(path.clone()));
    fs::write(&path, "[node]\nname = \"a\"\n").unwrap();
    assert!(watch.fired().await);
}

#[tokio::test]
async fn fires_when_the_file_is_replaced_by_a_rename() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.toml");
    fs::write(&path, "").unwrap();
    let watch = Watching::start(WatchTarget::File(path.clone()));
    let tmp = dir.path().join(".lb.toml.swp");
    fs::write(&tmp, "[node]\nname = \"b\"\n").unwrap();
    fs::rename(&tmp, &path).unwrap();
    assert!(watch.fired().await);
    // And keeps watching the new file.
    watch.quiet().await;
    fs::write(&path, "[node]\nname = \"c\"\n").unwrap();
    assert!(watch.fired().await);
}

/// Lays out a ConfigMap volume: `lb.toml -> ..data/lb.toml`, `..data -> ..<gen>`.
fn configmap_generation(dir: &Path, generation: &str, text: &str) {
    let gen_dir = dir.join(generation);
    fs::create_dir(&gen_dir).unwrap();
    fs::write(gen_dir.join("lb.toml"), text).unwrap();
    let tmp_link = dir.join("..data_tmp");
    symlink(generation, &tmp_link).unwrap();
    fs::rename(&tmp_link, dir.join("..data")).unwrap();
}

#[tokio::test]
async fn fires_when_a_configmap_symlink_is_swapped() {
    let dir = tempfile::tempdir().unwrap();
    configmap_generation(dir.path(), "..2024_01_01_00_00_00.1", "");
    let path = dir.path().join("lb.toml");
    symlink("..data/lb.toml", &path).unwrap();
    let watch = Watching::start(WatchTarget::File(path.clone()));

    configmap_generation(
        dir.path(),
        "..2024_01_01_00_00_01.2",
        "[node]\nname = \"d\"\n",
    );
    fs::remove_dir_all(dir.path().join("..2024_01_01_00_00_00.1")).unwrap();
    assert!(watch.fired().await);
    assert_eq!(fs::read_to_string(&path).unwrap(), "[node]\nname = \"d\"\n");

    // A second swap is seen too.
    watch.quiet().await;
    configmap_generation(
        dir.path(),
        "..2024_01_01_00_00_02.3",
        "[node]\nname = \"e\"\n",
    );
    assert!(watch.fired().await);
}

#[tokio::test]
async fn ignores_unrelated_files_in_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.toml");
    fs::write(&path, "").unwrap();
    let watch = Watching::start(WatchTarget::File(path));
    fs::write(dir.path().join("other.txt"), "x").unwrap();
    let got = timeout(DEBOUNCE * 5, watch.wake.notified()).await;
    assert!(got.is_err(), "fired for an unrelated file");
    assert!(!watch.changed.take());
}

#[tokio::test]
async fn a_busy_directory_does_not_delay_a_change_of_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.toml");
    fs::write(&path, "").unwrap();
    let watch = Watching::start(WatchTarget::File(path.clone()));
    let other = dir.path().join("busy.log");
    let writer = tokio::spawn(async move {
        // Another file written every 20 ms for two seconds.
        for i in 0..100 {
            fs::write(&other, format!("{i}")).unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    watch.quiet().await;
    fs::write(&path, "[node]\nname = \"f\"\n").unwrap();
    assert!(watch.fired().await);
    assert!(
        !writer.is_finished(),
        "the change waited for the other file's writes to stop"
    );
    writer.abort();
}

#[tokio::test]
async fn a_file_written_without_pause_is_still_read_within_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.toml");
    fs::write(&path, "").unwrap();
    let watch = Watching::start(WatchTarget::File(path.clone()));
    let writing = path.clone();
    let writer = tokio::spawn(async move {
        // The file itself rewritten every 20 ms for three seconds: no quiet
        // period ever comes, yet the watch must fire.
        for i in 0..150 {
            fs::write(&writing, format!("# {i}\n")).unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    assert!(watch.fired().await, "never fired during a continuous burst");
    assert!(!writer.is_finished(), "fired only after the burst ended");
    writer.abort();
}

#[tokio::test]
async fn a_directory_fires_for_files_added_changed_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let watch = Watching::start(WatchTarget::Dir(dir.path().to_path_buf()));
    let file = dir.path().join("10-web.yaml");
    fs::write(&file, "kind: Service\n").unwrap();
    assert!(watch.fired().await, "added");
    watch.quiet().await;
    fs::write(&file, "kind: Service\nmetadata: {}\n").unwrap();
    assert!(watch.fired().await, "changed");
    watch.quiet().await;
    fs::remove_file(&file).unwrap();
    assert!(watch.fired().await, "removed");
    watch.quiet().await;
    fs::write(dir.path().join(".10-web.yaml.swp"), "x").unwrap();
    let got = timeout(DEBOUNCE * 5, watch.wake.notified()).await;
    assert!(got.is_err(), "fired for an editor's hidden swap file");
}

#[tokio::test]
async fn a_directory_watch_names_the_files_it_saw_change_before_it_wakes() {
    use lb_config::source::Touched;
    let dir = tempfile::tempdir().unwrap();
    let touched = Arc::new(Touched::default());
    let wake = Arc::new(Notify::new());
    let changed = Changed::new(wake.clone());
    let stop = CancellationToken::new();
    let watch = FileWatch::new(WatchTarget::Dir(dir.path().to_path_buf()))
        .expect("watch set up")
        .naming(touched.clone());
    let running = tokio::spawn(watch.run(changed.clone(), stop.clone()));
    assert_eq!(touched.take(), None, "the first read lists the directory");

    // Written beside, then renamed into place, as `kubectl cp` and the
    // benchmarks do.
    fs::write(dir.path().join(".20-db.yaml.tmp"), "kind: Service\n").unwrap();
    fs::rename(
        dir.path().join(".20-db.yaml.tmp"),
        dir.path().join("20-db.yaml"),
    )
    .unwrap();
    timeout(Duration::from_secs(5), async {
        while !changed.take() {
            wake.notified().await;
        }
    })
    .await
    .expect("woken");
    let names = touched.take().expect("named, not lost");
    assert_eq!(
        names,
        std::collections::HashSet::from(["20-db.yaml".into()]),
        "the file, not its hidden temporary"
    );

    // ConfigMap's swap cannot be named file by file.
    symlink("..2026_12_08", dir.path().join("..data")).unwrap();
    timeout(Duration::from_secs(5), async {
        while !changed.take() {
            wake.notified().await;
        }
    })
    .await
    .expect("woken");
    assert_eq!(touched.take(), None, "the next read lists the directory");

    stop.cancel();
    running.await.unwrap();
    assert_eq!(touched.take(), None, "no watch: every read lists");
    assert_eq!(touched.take(), None);
}

#[tokio::test]
async fn a_directory_watch_dropped_before_it_ran_names_nothing() {
    use lb_config::source::Touched;
    let dir = tempfile::tempdir().unwrap();
    let touched = Arc::new(Touched::default());
    let watch = FileWatch::new(WatchTarget::Dir(dir.path().to_path_buf()))
        .expect("watch set up")
        .naming(touched.clone());
    assert_eq!(touched.take(), None);
    drop(watch);
    assert_eq!(
        touched.take(),
        None,
        "no watch: the read lists the directory"
    );
    assert_eq!(touched.take(), None);
}
