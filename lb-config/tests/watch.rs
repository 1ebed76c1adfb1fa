//! The file watcher fires for every way a config file gets replaced.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::Duration;

use lb_config::watch_file;
use tokio::sync::mpsc::Receiver;
use tokio::time::timeout;

const DEBOUNCE: Duration = Duration::from_millis(100);

/// Waits (bounded) for one trigger.
async fn fired(rx: &mut Receiver<()>) -> bool {
    matches!(
        timeout(Duration::from_secs(5), rx.recv()).await,
        Ok(Some(()))
    )
}

/// Lets any trigger from setup pass, so the next assertion sees only the change.
async fn settle(rx: &mut Receiver<()>) {
    tokio::time::sleep(DEBOUNCE * 3).await;
    while rx.try_recv().is_ok() {}
}

#[tokio::test]
async fn fires_when_the_file_is_written_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.toml");
    fs::write(&path, "").unwrap();
    let mut rx = watch_file(path.clone(), DEBOUNCE).unwrap();
    settle(&mut rx).await;
    fs::write(&path, "[node]\nname = \"a\"\n").unwrap();
    assert!(fired(&mut rx).await);
}

#[tokio::test]
async fn fires_when_the_file_is_replaced_by_a_rename() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.toml");
    fs::write(&path, "").unwrap();
    let mut rx = watch_file(path.clone(), DEBOUNCE).unwrap();
    settle(&mut rx).await;
    let tmp = dir.path().join(".lb.toml.swp");
    fs::write(&tmp, "[node]\nname = \"b\"\n").unwrap();
    fs::rename(&tmp, &path).unwrap();
    assert!(fired(&mut rx).await);
    // And keeps watching the new file.
    settle(&mut rx).await;
    fs::write(&path, "[node]\nname = \"c\"\n").unwrap();
    assert!(fired(&mut rx).await);
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
    let mut rx = watch_file(path.clone(), DEBOUNCE).unwrap();
    settle(&mut rx).await;

    configmap_generation(
        dir.path(),
        "..2024_01_01_00_00_01.2",
        "[node]\nname = \"d\"\n",
    );
    fs::remove_dir_all(dir.path().join("..2024_01_01_00_00_00.1")).unwrap();
    assert!(fired(&mut rx).await);
    assert_eq!(fs::read_to_string(&path).unwrap(), "[node]\nname = \"d\"\n");

    // A second swap is seen too.
    settle(&mut rx).await;
    configmap_generation(
        dir.path(),
        "..2024_01_01_00_00_02.3",
        "[node]\nname = \"e\"\n",
    );
    assert!(fired(&mut rx).await);
}

#[tokio::test]
async fn ignores_unrelated_files_in_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.toml");
    fs::write(&path, "").unwrap();
    let mut rx = watch_file(path, DEBOUNCE).unwrap();
    settle(&mut rx).await;
    fs::write(dir.path().join("other.txt"), "x").unwrap();
    let got = timeout(DEBOUNCE * 5, rx.recv()).await;
    assert!(got.is_err(), "fired for an unrelated file");
}
