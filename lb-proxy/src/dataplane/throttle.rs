//! Warnings that would come with every connection once their cause starts
//! (descriptor shortage, a self-loop) are logged at most once a second.

use std::sync::atomic::{AtomicU64, Ordering};

/// Whether a warning guarded by `last` (a `static`, one per kind of
/// warning) may be logged now: at most once a second per guard for the
/// whole process, since the events it reports (descriptor shortage, a
/// self-loop) come with every connection once they start.
pub(crate) fn once_a_second(last: &AtomicU64) -> bool {
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    last.swap(now_s, Ordering::Relaxed) != now_s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guard_lets_one_warning_through_per_second() {
        let last = AtomicU64::new(0);
        assert!(once_a_second(&last));
        assert!(!once_a_second(&last));
    }
}
