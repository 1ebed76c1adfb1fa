//! A running proxy follows a manifests directory of one file per service,
//! which it parses file by file (only the files that changed): files added
//! by a rename, rewritten in place to the same size at once, removed, and a
//! ConfigMap-style swap of the whole directory, each served as written.
//!
//! Addresses: 127.0.253.0/24 (node, admin, backends) and the cluster IPs
//! 127.96.253.10-19, which no other test uses.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use crate::support::bin::{Run, Running};
use crate::support::*;

/// One service's file: its Service (cluster IP `vip`) and its Endpoints
/// (one address, `backend`).
fn manifest(name: &str, vip: &str, backend: std::net::SocketAddr) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\n\
         spec: {{clusterIP: {vip}, ports: [{{name: p, port: 80, targetPort: {port}}}]}}\n\
         ---\n\
         apiVersion: v1\nkind: Endpoints\nmetadata: {{name: {name}}}\n\
         subsets: [{{addresses: [{{ip: {ip}}}], ports: [{{name: p, port: {port}}}]}}]\n",
        ip = backend.ip(),
        port = backend.port(),
    )
}

/// Writes beside the directory, then renames into it, as tools do.
fn write_renamed(dir: &Path, name: &str, text: &str) {
    let tmp = dir.parent().expect("parent").join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, dir.join(name)).expect("rename");
}

fn run_over(manifests: &Path) -> (tempfile::TempDir, Running) {
    let dir = tempfile::tempdir().expect("tempdir");
    let admin = sa(&format!("127.0.253.9:{}", free_port("127.0.253.9")));
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\nname = \"node-1\"\naddresses = [\"127.0.253.1\"]\n\
             [cluster]\nservice_cidr = \"127.96.0.0/16\"\n[admin]\nlisten = \"{admin}\"\n"
        ),
    )
    .expect("config");
    let proxy = Run::file(&config)
        .arg(OsString::from("--manifests"))
        .arg(manifests)
        .admin(admin)
        .start()
        .expect("lb-proxy starts");
    (dir, proxy)
}

/// Whether `vip:80` answers `body` within ten seconds.
fn answers_with(vip: &str, body: &str) -> bool {
    eventually_blocking(Duration::from_secs(10), || {
        ask(sa(&format!("{vip}:80"))).is_ok_and(|got| got == body)
    })
}

#[test]
fn a_manifests_directory_follows_files_added_rewritten_and_removed() {
    let port = free_port("127.0.253.20");
    let (one, two) = (
        sa(&format!("127.0.253.20:{port}")),
        sa(&format!("127.0.253.21:{port}")),
    );
    let _one = http_backend(one, "one");
    let _two = http_backend(two, "two");
    let root = tempfile::tempdir().expect("tempdir");
    let manifests = root.path().join("manifests");
    std::fs::create_dir(&manifests).expect("mkdir");
    std::fs::write(
        manifests.join("a.yaml"),
        manifest("a", "127.96.253.10", one),
    )
    .expect("a");
    let (_dir, proxy) = run_over(&manifests);
    assert!(answers_with("127.96.253.10", "one"), "{}", proxy.logs());

    // A file renamed into the directory.
    write_renamed(&manifests, "b.yaml", &manifest("b", "127.96.253.11", one));
    assert!(answers_with("127.96.253.11", "one"), "{}", proxy.logs());

    // The same file rewritten in place at once, to the same size: its
    // times may not change within the clock's tick, yet the rewrite is seen.
    let rewritten = manifest("b", "127.96.253.11", two);
    assert_eq!(rewritten.len(), manifest("b", "127.96.253.11", one).len());
    std::fs::write(manifests.join("b.yaml"), &rewritten).expect("rewrite");
    assert!(answers_with("127.96.253.11", "two"), "{}", proxy.logs());
    assert!(answers_with("127.96.253.10", "one"), "a is untouched");

    // A file removed takes its service away.
    std::fs::remove_file(manifests.join("a.yaml")).expect("remove");
    assert!(
        eventually_blocking(Duration::from_secs(10), || proxy.service("a").is_none()),
        "{}",
        proxy.logs()
    );
    assert!(proxy.service("b").is_some());
}

/// Lays out generation `generation` of a ConfigMap volume at `dir`: the
/// files in `..<generation>`, `..data` pointing at it, and each file a link
/// through `..data`.
fn configmap_generation(dir: &Path, generation: &str, files: &[(&str, String)]) {
    let gen_dir = dir.join(generation);
    std::fs::create_dir(&gen_dir).expect("generation");
    for (name, text) in files {
        std::fs::write(gen_dir.join(name), text).expect("file");
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(name), &link).expect("link");
        }
    }
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(generation, &tmp).expect("data link");
    std::fs::rename(&tmp, dir.join("..data")).expect("swap");
}

#[test]
fn a_configmap_swap_of_the_manifests_directory_is_served() {
    let port = free_port("127.0.253.22");
    let (one, two) = (
        sa(&format!("127.0.253.22:{port}")),
        sa(&format!("127.0.253.23:{port}")),
    );
    let _one = http_backend(one, "first");
    let _two = http_backend(two, "second");
    let root = tempfile::tempdir().expect("tempdir");
    let volume = root.path().join("volume");
    std::fs::create_dir(&volume).expect("mkdir");
    configmap_generation(
        &volume,
        "..gen1",
        &[("c.yaml", manifest("c", "127.96.253.12", one))],
    );
    let (_dir, proxy) = run_over(&volume);
    assert!(answers_with("127.96.253.12", "first"), "{}", proxy.logs());
    // The kubelet's swap: the link keeps its name, size and times; only
    // what `..data` points at changes.
    configmap_generation(
        &volume,
        "..gen2",
        &[("c.yaml", manifest("c", "127.96.253.12", two))],
    );
    assert!(answers_with("127.96.253.12", "second"), "{}", proxy.logs());
}
