//! Data-path worker threads for `LB_ACCEPT=percore`: one current-thread tokio
//! runtime per core.
//!
//! Under the default work-stealing runtime a connection's accept, dial and
//! forwarding may run on different threads, and every `spawn` from the accept
//! loop can wake another worker (a futex call and a cross-core cache miss per
//! connection). Here each worker owns its own `SO_REUSEPORT` listener for every
//! TCP frontend (the kernel spreads new connections over them) and its own
//! I/O driver and timers, so a connection lives and dies on the thread that
//! accepted it, as in nginx's workers or HAProxy's threads.
//!
//! Stopping ([`Drop`]) does not cut connections: each thread keeps its
//! runtime until the tasks on it (accept loops stop with their listeners,
//! connections with their clients or the drain) have ended.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tracing::debug;

/// How often a stopped worker looks whether its last task has ended.
const STOP_POLL: Duration = Duration::from_millis(50);

/// The environment variable that sets how many workers `percore` starts
/// (default: the number of CPUs this process may run on).
pub(crate) const WORKERS_ENV: &str = "LB_WORKERS";

/// The worker threads and a handle to each one's runtime.
pub(crate) struct Workers {
    handles: Vec<Handle>,
    stops: Vec<oneshot::Sender<()>>,
    /// Not joined on drop (the data plane may be dropped on a runtime
    /// thread, which must not block): each thread ends by itself. Kept for
    /// the tests, which join them.
    #[cfg_attr(not(test), allow(dead_code))]
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Where the next single-socket frontend (UDP) goes.
    next: AtomicUsize,
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workers")
            .field("workers", &self.handles.len())
            .finish()
    }
}

impl Workers {
    /// Starts `count` (at least one) worker threads, each running its own
    /// current-thread runtime until [`Workers`] is dropped and its tasks end.
    pub(crate) fn start(count: usize) -> io::Result<Workers> {
        let count = count.max(1);
        let mut handles = Vec::with_capacity(count);
        let mut stops = Vec::with_capacity(count);
        let mut threads = Vec::with_capacity(count);
        for index in 0..count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handle = runtime.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("lb-worker-{index}"))
                .spawn(move || {
                    runtime.block_on(async {
                        // An error means the sender was dropped: stop too.
                        let _ = stopped.await;
                        // Let what still runs here finish (connections in
                        // their drain); accept loops have been stopped.
                        let metrics = Handle::current().metrics();
                        while metrics.num_alive_tasks() > 0 {
                            tokio::time::sleep(STOP_POLL).await;
                        }
                    });
                    debug!(worker = index, "worker stopped");
                })?;
            handles.push(handle);
            stops.push(stop);
            threads.push(thread);
        }
        Ok(Workers {
            handles,
            stops,
            threads,
            next: AtomicUsize::new(0),
        })
    }

    /// How many workers `percore` starts: `LB_WORKERS`, else the CPUs this
    /// process may run on.
    pub(crate) fn default_count() -> usize {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        match std::env::var(WORKERS_ENV) {
            Ok(v) => match v.trim().parse::<usize>() {
                Ok(n) if n > 0 => n,
                _ => {
                    tracing::warn!(
                        value = v,
                        "{WORKERS_ENV} is not a positive number; using {cpus}"
                    );
                    cpus
                }
            },
            Err(_) => cpus,
        }
    }

    /// Every worker's runtime, for one listener each.
    pub(crate) fn handles(&self) -> &[Handle] {
        &self.handles
    }

    /// One worker's runtime, in turn, for a frontend served by one task.
    pub(crate) fn next(&self) -> &Handle {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        &self.handles[i]
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_spawned_on_a_worker_runs_on_that_workers_thread() {
        let workers = Workers::start(2).expect("start workers");
        let names: Vec<String> = workers
            .handles()
            .iter()
            .map(|h| {
                let (tx, rx) = std::sync::mpsc::channel();
                h.spawn(async move {
                    let _ = tx.send(std::thread::current().name().map(str::to_owned));
                });
                rx.recv_timeout(Duration::from_secs(5))
                    .expect("task ran")
                    .expect("named thread")
            })
            .collect();
        assert_eq!(names, ["lb-worker-0", "lb-worker-1"]);
    }

    #[test]
    fn dropping_the_workers_lets_running_tasks_finish() {
        let workers = Workers::start(1).expect("start workers");
        let (tx, rx) = std::sync::mpsc::channel();
        workers.handles()[0].spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let _ = tx.send(());
        });
        drop(workers);
        rx.recv_timeout(Duration::from_secs(5))
            .expect("the task finished after the workers were dropped");
    }

    #[test]
    fn stopped_workers_end_their_threads_once_their_tasks_are_done() {
        let mut workers = Workers::start(2).expect("start workers");
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        workers.handles()[1].spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let _ = tx.send(());
        });
        let threads = std::mem::take(&mut workers.threads);
        drop(workers);
        for thread in threads {
            thread.join().expect("worker thread ended without a panic");
        }
        // The task ran to its end before its worker stopped.
        assert_eq!(rx.try_recv(), Ok(()));
    }

    #[test]
    fn next_goes_round_the_workers() {
        let workers = Workers::start(3).expect("start workers");
        let ids: Vec<_> = (0..6).map(|_| workers.next().id()).collect();
        assert_eq!(ids[0], ids[3]);
        assert_ne!(ids[0], ids[1]);
        assert_ne!(ids[1], ids[2]);
    }
}
