//! Process-wide state. Every test runs in one process, on threads of the
//! test harness, so what the process has (its threads, the splice pipe
//! pool) is shared by every test running at the moment. A test that counts
//! such things runs [`alone`]; a test that creates them (per-core workers,
//! an App's file watcher, bulk through splice) holds [`shared`] for its
//! whole run, so a count never sees another test's.
//!
//! Take one guard per test, first thing, and hold it to the end: the lock is
//! fair, so a second `shared()` inside a test that holds one would wait
//! behind a queued `alone()` that waits for the first.
//!
//! Other processes of the machine, as `/proc` shows them: those whose
//! command line carries a test's marker ([`processes_with`]) and the
//! children of one process ([`children_of`]), for tests of what lb leaves
//! running.

use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

static PROCESS: RwLock<()> = RwLock::const_new(());

/// Held by a test that starts lb's threads or borrows splice pipes.
pub async fn shared() -> RwLockReadGuard<'static, ()> {
    PROCESS.read().await
}

/// Held by a test that counts lb's threads or borrowed pipes: no test
/// holding [`shared`] runs meanwhile.
pub async fn alone() -> RwLockWriteGuard<'static, ()> {
    PROCESS.write().await
}

/// The names (`comm`) of this process's threads, sorted.
pub fn threads() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/proc/self/task")
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
                .map(|n| n.trim().to_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Names of this process's threads that lb created (`lb-*`).
pub fn lb_threads() -> Vec<String> {
    threads()
        .into_iter()
        .filter(|n| n.starts_with("lb-"))
        .collect()
}

/// The pids of every process whose command line (`/proc/PID/cmdline`, its
/// arguments joined by spaces) contains `marker`. A zombie has no command
/// line: it is never found here (see [`children_of`]).
pub fn processes_with(marker: &str) -> Vec<u32> {
    pids()
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|raw| {
                    String::from_utf8_lossy(&raw)
                        .replace('\0', " ")
                        .contains(marker)
                })
                .unwrap_or(false)
        })
        .collect()
}

/// The pids of the children of process `parent`, zombies included (their
/// parent has not reaped them).
pub fn children_of(parent: u32) -> Vec<u32> {
    pids()
        .into_iter()
        .filter(|pid| {
            // `PID (COMM) STATE PPID ...`; COMM may hold spaces and `)`.
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let rest = &stat[stat.rfind(')')? + 1..];
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(parent)
        })
        .collect()
}

fn pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}
