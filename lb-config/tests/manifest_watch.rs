//! A manifests directory read through its running watch, which names the
//! files it saw change so a read looks only at those, gives what a whole
//! read of the directory gives, change after change.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use lb_config::manifests::{load_path, ManifestSource};
use lb_config::source::{Changed, DesiredState, Source};
use tokio::sync::Notify;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

fn service(name: &str, port: u16) -> String {
    format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  ports:\n  - port: {port}\n")
}

/// Written beside, then renamed into place.
fn put(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    fs::write(&tmp, text).expect("write");
    fs::rename(&tmp, dir.join(name)).expect("rename");
}

/// Each service's name and first port, in order.
fn served(state: &DesiredState) -> Vec<(String, i64)> {
    state
        .services
        .iter()
        .map(|s| (s.object.name.clone(), s.object.ports[0].port))
        .collect()
}

#[tokio::test]
async fn reads_of_the_named_files_agree_with_whole_reads_change_after_change() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    put(d, "a.yaml", &service("a", 80));
    put(d, "b.yaml", &service("b", 81));
    // A ConfigMap-style key: a link to a hidden file, edited through it.
    fs::write(d.join(".c.v1"), service("c", 82)).expect("write");
    symlink(".c.v1", d.join("c.yaml")).expect("link");
    // Written long ago: trusted by its identity, not looked at again for
    // being young.
    fs::File::options()
        .write(true)
        .open(d.join(".c.v1"))
        .and_then(|f| f.set_modified(std::time::SystemTime::now() - Duration::from_secs(60)))
        .expect("age");

    let source = Arc::new(ManifestSource::new(d));
    let wake = Arc::new(Notify::new());
    let changed = Changed::new(wake.clone());
    let stop = CancellationToken::new();
    tokio::spawn(source.clone().watch(changed.clone(), stop.clone()));
    let first = source
        .desired_if_changed()
        .expect("a first state")
        .expect("valid");
    assert_eq!(served(&first), served(&load_path(d).expect("valid")));

    type Step = (&'static str, fn(&Path));
    let steps: [Step; 5] = [
        ("a file renamed in", |d| put(d, "d.yaml", &service("d", 83))),
        ("a file rewritten in place", |d| {
            fs::write(d.join("a.yaml"), service("a", 8080)).expect("rewrite")
        }),
        ("a file removed", |d| {
            fs::remove_file(d.join("b.yaml")).expect("remove")
        }),
        (
            "a link's hidden target edited, then another file added",
            |d| {
                fs::write(d.join(".c.v1"), service("c", 8282)).expect("edit");
                put(d, "e.yaml", &service("e", 84));
            },
        ),
        ("a file renamed out", |d| {
            fs::rename(d.join("d.yaml"), d.join("d.yaml.off")).expect("rename")
        }),
    ];
    let woken = |bound| {
        let (changed, wake) = (changed.clone(), wake.clone());
        async move {
            timeout(bound, async {
                while !changed.take() {
                    wake.notified().await;
                }
            })
            .await
            .is_ok()
        }
    };
    let mut current = first;
    for (what, step) in steps {
        changed.take();
        step(d);
        assert!(
            woken(Duration::from_secs(5)).await,
            "{what}: the watch woke"
        );
        // A step's events may land in two bursts on a loaded machine: a read
        // between them is behind, and the second burst wakes another. A
        // change a read misses wakes nothing more, and fails here.
        loop {
            if let Some(state) = source.desired_if_changed() {
                current = state.expect("valid");
            }
            if served(&current) == served(&load_path(d).expect("valid")) {
                break;
            }
            assert!(
                woken(Duration::from_secs(2)).await,
                "{what}: the read through the watch missed a change: {:?}",
                served(&current)
            );
        }
    }
    let last = load_path(d).expect("valid");
    assert_eq!(
        served(&last),
        [
            ("a".to_string(), 8080),
            ("c".to_string(), 8282),
            ("e".to_string(), 84)
        ]
    );
    stop.cancel();
}
