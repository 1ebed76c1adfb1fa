//! Bounded waits on a condition, shared by the observability and DNS test
//! support (one copy: `dns_support` includes this file by path). Every wait
//! polls at a short interval and gives up at its limit, so a test asserts
//! on an event rather than after a fixed sleep.

#![allow(dead_code, unreachable_pub)]

use std::time::{Duration, Instant};

/// How often a condition is polled.
const POLL: Duration = Duration::from_millis(50);

/// Polls `f` until it is true or `limit` passes; whether it became true.
pub async fn eventually<F, Fut>(limit: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if f().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// [`eventually`] for blocking tests (a child process, a blocking client).
pub fn eventually_blocking(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL);
    }
}
