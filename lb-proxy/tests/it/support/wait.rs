//! Bounded waits on a condition: a test asserts on an event (a counter, a
//! log line, a port that answers) rather than after a fixed sleep. Every
//! wait polls at [`POLL`] and gives up at its limit, returning whether the
//! condition came true, so the caller's `assert!` says what was awaited.

use std::future::Future;
use std::time::{Duration, Instant};

/// The upper bound of a single wait in a test: long enough for a loaded
/// machine running the whole suite in one process, short enough that a
/// broken test fails in seconds.
pub const WAIT: Duration = Duration::from_secs(10);

/// How often a condition is polled.
const POLL: Duration = Duration::from_millis(20);

/// Polls `cond` until it holds or `limit` passes (on the runtime's clock, so
/// it follows `tokio::time::pause`); whether it came true.
pub async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// [`eventually`] for a condition that has to await (an HTTP request, a
/// DNS query).
pub async fn eventually_async<F, Fut>(limit: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if cond().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// [`eventually`] for blocking tests (a child process, a blocking client).
pub fn eventually_blocking(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL);
    }
}
