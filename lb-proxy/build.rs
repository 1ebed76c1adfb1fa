//! Records the git revision the binary was built from (`lb_build_info`,
//! `--version`), or `unknown` outside a git checkout.

use std::process::Command;

fn main() {
    let revision = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=LB_BUILD_REVISION={revision}");
    // A new commit or checkout changes HEAD or the ref it names. Git says
    // where they are (in a worktree `.git` is a file and HEAD lives
    // elsewhere); a path that does not exist would make cargo run this
    // script, and rebuild lb-proxy, at every build, so only those that do
    // are watched.
    let mut watched = false;
    for name in ["HEAD", "refs/heads", "packed-refs"] {
        let Some(path) = Command::new("git")
            .args(["rev-parse", "--git-path", name])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_owned())
        else {
            continue;
        };
        if std::path::Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
            watched = true;
        }
    }
    if !watched {
        // Outside a checkout: the revision is `unknown` for good.
        println!("cargo:rerun-if-changed=build.rs");
    }
}
