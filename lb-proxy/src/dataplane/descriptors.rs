//! The data plane's descriptor budget: how many file descriptors its
//! connections, UDP flows, splice pipes and listeners may hold, so the
//! process never runs out of them because of client traffic.
//!
//! The process's open-file limit is shared by everything in it; when the
//! data plane took every descriptor, the admin API, the DNS responder and
//! the health-check ports could no longer accept, and a runaway of clients
//! took them all. So the data plane uses the limit minus a reserve of
//! `min(64, limit / 4)`, and past that refuses new client connections
//! (accepted, then reset at once, counted as
//! `rejected{reason="local_resources"}`) before the process runs out.
//!
//! What is counted, from when it is admitted until it is closed: two per
//! client connection (its socket and the one toward the endpoint), one per
//! UDP flow socket, two per splice pipe (borrowed or pooled), one per bound
//! listener or UDP frontend socket (counted, never refused: they are fixed
//! by the configuration). What is not: the admin API, the DNS responder,
//! the health-check ports, sources and logs: they live in the reserve.
//!
//! The limit comes from the embedder: [`crate::DataPlane`] reads the soft
//! `RLIMIT_NOFILE` when it starts (after the binary raised it to the hard
//! limit) and [`crate::DataPlane::set_descriptor_limit`] replaces it.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The most descriptors kept out of the data plane's reach: enough for the
/// admin API, the DNS responder, the health-check ports and the process's
/// own (standard streams, the runtime's epoll and eventfd, sources, logs).
pub const RESERVE_MAX: u64 = 64;

/// What `limit` descriptors leave to everything but the data plane:
/// `min(64, limit / 4)`, so a small limit still leaves the data plane three
/// quarters of it.
pub fn reserve_for(limit: u64) -> u64 {
    RESERVE_MAX.min(limit / 4)
}

/// The budget's figures at one moment, for `/api/v1/config` and the start
/// log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescriptorBudget {
    /// The open-file limit the budget is cut from; `None`: unbounded (no
    /// client is refused for descriptors).
    pub limit: Option<u64>,
    /// Descriptors kept out of the data plane's reach.
    pub reserve: u64,
    /// Descriptors the data plane holds now.
    pub in_use: u64,
}

impl DescriptorBudget {
    /// How many descriptors the data plane may hold (`limit - reserve`).
    pub fn allowed(&self) -> Option<u64> {
        self.limit.map(|l| l - self.reserve)
    }
}

/// The budget itself: a limit and an in-use count, shared (cloning is
/// shallow) by the data plane and whatever holds descriptors from it (a
/// pooled splice pipe outlives the connection that opened it).
#[derive(Debug, Clone)]
pub(crate) struct Descriptors(Arc<Budget>);

#[derive(Debug)]
struct Budget {
    /// The limit; `u64::MAX` for unbounded.
    limit: AtomicU64,
    in_use: AtomicU64,
}

impl Descriptors {
    /// A budget cut from `limit` descriptors (`None`: unbounded).
    pub(crate) fn new(limit: Option<u64>) -> Self {
        Descriptors(Arc::new(Budget {
            limit: AtomicU64::new(limit.unwrap_or(u64::MAX)),
            in_use: AtomicU64::new(0),
        }))
    }

    /// A new limit (`None`: unbounded). Descriptors held stay held; a lower
    /// limit refuses new ones until enough are given back.
    pub(crate) fn set_limit(&self, limit: Option<u64>) {
        self.0
            .limit
            .store(limit.unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// The figures now.
    pub(crate) fn budget(&self) -> DescriptorBudget {
        let limit = self.0.limit.load(Ordering::Relaxed);
        let limit = (limit != u64::MAX).then_some(limit);
        DescriptorBudget {
            limit,
            reserve: limit.map_or(0, reserve_for),
            in_use: self.0.in_use.load(Ordering::Relaxed),
        }
    }

    /// Takes `n` descriptors if the data plane may hold them, given back
    /// when the returned [`Held`] drops; `None` when they would cut into
    /// the reserve.
    pub(crate) fn try_take(&self, n: u64) -> Option<Held> {
        let limit = self.0.limit.load(Ordering::Relaxed);
        let allowed = match limit {
            u64::MAX => u64::MAX,
            limit => limit - reserve_for(limit),
        };
        self.0
            .in_use
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                (used.saturating_add(n) <= allowed).then_some(used + n)
            })
            .ok()?;
        Some(Held {
            budget: self.0.clone(),
            n,
        })
    }

    /// Counts `n` descriptors that are held whatever the budget says (a
    /// listener the configuration asks for), so the budget left for clients
    /// is what is really left.
    pub(crate) fn take_fixed(&self, n: u64) -> Held {
        self.0.in_use.fetch_add(n, Ordering::Relaxed);
        Held {
            budget: self.0.clone(),
            n,
        }
    }

    /// The error a descriptor the budget refused is seen as: `EMFILE`, as
    /// if the process had run out, so callers handle both alike.
    pub(crate) fn refused() -> std::io::Error {
        std::io::Error::from_raw_os_error(libc::EMFILE)
    }
}

/// Descriptors taken from a [`Descriptors`] budget, given back when
/// dropped, so no exit path of whoever holds them can leak the count.
pub(crate) struct Held {
    budget: Arc<Budget>,
    n: u64,
}

impl fmt::Debug for Held {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Held").field(&self.n).finish()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.in_use.fetch_sub(self.n, Ordering::Relaxed);
    }
}

/// Logs that the proxy is short of a local resource (its descriptor budget,
/// or the system's descriptors, buffers or ports) at warn, at most once a
/// second for the whole process: under exhaustion every connection and
/// every new flow would log. `what` says what was refused.
pub(crate) fn local_shortage(what: &str, error: &dyn fmt::Display) {
    static LAST: AtomicU64 = AtomicU64::new(0);
    if crate::dataplane::throttle::once_a_second(&LAST) {
        tracing::warn!(error = %error, "{what}: the proxy is short of local resources");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_64_or_a_quarter_of_a_small_limit() {
        assert_eq!(reserve_for(1_048_576), 64);
        assert_eq!(reserve_for(1024), 64);
        assert_eq!(reserve_for(256), 64);
        assert_eq!(reserve_for(128), 32);
        assert_eq!(reserve_for(8), 2);
    }

    #[test]
    fn the_budget_refuses_what_would_cut_into_the_reserve_and_takes_back_what_drops() {
        let fds = Descriptors::new(Some(256));
        let held: Vec<Held> = (0..96).map_while(|_| fds.try_take(2)).collect();
        assert_eq!(held.len(), 96, "192 of 256 may be held");
        assert!(fds.try_take(1).is_none());
        assert_eq!(fds.budget().in_use, 192);
        drop(held);
        assert_eq!(fds.budget().in_use, 0);
        assert!(fds.try_take(2).is_some());
    }

    #[test]
    fn fixed_descriptors_count_and_leave_less_for_clients() {
        let fds = Descriptors::new(Some(100));
        let _listeners = fds.take_fixed(70);
        assert!(fds.try_take(6).is_none(), "75 of 100 may be held");
        assert!(fds.try_take(5).is_some());
    }

    #[test]
    fn an_unbounded_budget_refuses_nothing_and_a_new_limit_applies_at_once() {
        let fds = Descriptors::new(None);
        assert_eq!(fds.budget().limit, None);
        let held = fds.try_take(1 << 40);
        assert!(held.is_some());
        fds.set_limit(Some(16));
        assert!(fds.try_take(1).is_none(), "still holding more than 12");
        drop(held);
        assert!(fds.try_take(12).is_some());
        assert_eq!(
            fds.budget(),
            DescriptorBudget {
                limit: Some(16),
                reserve: 4,
                in_use: 0
            }
        );
    }
}
