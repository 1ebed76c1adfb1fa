//! A state read afresh shares with the last one every object that did not
//! change, so the loader validates only what changed.

use std::sync::Arc;

use lb_config::source::{FileSource, Source};

fn file(services: &[(&str, u16)]) -> String {
    services
        .iter()
        .map(|(name, port)| {
            format!("[[services]]\nname = \"{name}\"\nports = [{{ port = {port} }}]\n")
        })
        .collect()
}

#[test]
fn a_reread_file_shares_its_unchanged_objects_with_the_last_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("lb.toml");
    std::fs::write(&path, file(&[("web", 80), ("db", 5432)])).expect("write");
    let source = FileSource::new(&path);
    let last = source.desired().expect("valid");
    std::fs::write(&path, file(&[("web", 80), ("db", 5433), ("cache", 6379)])).expect("write");
    let mut now = source.desired().expect("valid");
    now.share_unchanged(&last);
    let (was, is) = (
        &last.file.as_ref().expect("file").services,
        &now.file.as_ref().expect("file").services,
    );
    assert!(Arc::ptr_eq(&was[0], &is[0]), "web did not change: shared");
    assert!(!Arc::ptr_eq(&was[1], &is[1]), "db changed: its own");
    assert_eq!(is[1].ports[0].port, 5433);
    assert_eq!(is.len(), 3);
}
