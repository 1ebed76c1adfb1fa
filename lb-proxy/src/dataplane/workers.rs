//! Data-path worker threads for `accept_mode = "percore"`: one current-thread
//! tokio runtime per core.
//!
//! Under the default work-stealing runtime a connection's accept, dial and
//! forwarding may run on different threads, and every `spawn` from the accept
//! loop can wake another worker (a futex call and a cross-core cache miss per
//! connection). Here each worker owns its own `SO_REUSEPORT` listener for every
//! TCP frontend (the kernel spreads new connections over them) and its own
//! I/O driver and timers, so a connection lives and dies on the thread that
//! accepted it, as in nginx's workers or HAProxy's threads.
//!
//! Two ways to end: [`Workers::stop`] (the data plane's shutdown, once every
//! task of the data plane has ended) ends each thread at once and joins it;
//! dropping [`Workers`] without it lets each thread keep its runtime until
//! the data plane's tasks have ended (connections finish on the thread that
//! accepted them), then end by itself. Either way a thread waits on an
//! event, never polls.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tracing::debug;

use crate::lifecycle::Tasks;

/// The worker threads and a handle to each one's runtime.
pub(crate) struct Workers {
    handles: Vec<Handle>,
    /// Sending ends the thread at once; dropping lets it wait for the tasks.
    stops: Vec<oneshot::Sender<()>>,
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
    /// How many workers `configured` (the `workers` setting) means: itself,
    /// or for 0 the CPUs this process may run on.
    pub(crate) fn count(configured: u32) -> usize {
        match configured {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n as usize,
        }
    }

    /// Starts `count` (at least one) worker threads named `lb-worker-N`,
    /// each running its own current-thread runtime; `tasks` is the data
    /// plane's part, whose tasks a worker dropped without [`Workers::stop`]
    /// waits for.
    pub(crate) fn start(count: usize, tasks: &Tasks) -> io::Result<Workers> {
        let count = count.max(1);
        let mut workers = Workers {
            handles: Vec::with_capacity(count),
            stops: Vec::with_capacity(count),
            threads: Vec::with_capacity(count),
            next: AtomicUsize::new(0),
        };
        for index in 0..count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handle = runtime.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            let tasks = tasks.clone();
            // On an error `workers` drops: the threads already started wait
            // for the (still empty) data plane and end.
            let thread = std::thread::Builder::new()
                .name(format!("lb-worker-{index}"))
                .spawn(move || {
                    runtime.block_on(async {
                        if stopped.await.is_err() {
                            // Dropped, not stopped: let what runs here finish
                            // (connections in their drain).
                            tasks.wait().await;
                        }
                    });
                    debug!(worker = index, "worker stopped");
                })?;
            workers.handles.push(handle);
            workers.stops.push(stop);
            workers.threads.push(thread);
        }
        Ok(workers)
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

    /// Ends every worker thread and waits until each has exited (joined on
    /// the blocking pool, counted by `tasks`). Call it once the tasks that
    /// ran on the workers have ended: what is left on a worker is dropped.
    pub(crate) async fn stop(mut self, tasks: &Tasks) {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
        let threads = std::mem::take(&mut self.threads);
        let joined = tasks.spawn_blocking(move || {
            for thread in threads {
                if thread.join().is_err() {
                    tracing::warn!("a worker thread panicked");
                }
            }
        });
        if let Err(e) = joined.await {
            tracing::warn!(error = %e, "joining the worker threads failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_task_spawned_on_a_worker_runs_on_that_workers_thread() {
        let workers = Workers::start(2, &Tasks::new()).expect("start workers");
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
    fn dropped_workers_let_the_data_planes_tasks_finish_then_end() {
        let tasks = Tasks::new();
        let mut workers = Workers::start(2, &tasks).expect("start workers");
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        tasks.spawn_on(
            async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let _ = tx.send(());
            },
            &workers.handles()[1],
        );
        let threads = std::mem::take(&mut workers.threads);
        drop(workers);
        for thread in threads {
            thread.join().expect("worker thread ended without a panic");
        }
        // The task ran to its end before its worker stopped.
        assert_eq!(rx.try_recv(), Ok(()));
    }

    #[tokio::test]
    async fn stopped_workers_are_joined() {
        let tasks = Tasks::new();
        let workers = Workers::start(2, &tasks).expect("start workers");
        let (tx, rx) = tokio::sync::oneshot::channel();
        tasks.spawn_on(
            async move {
                let _ = tx.send(());
            },
            &workers.handles()[0],
        );
        rx.await.expect("the task ran");
        tasks.wait().await;
        tokio::time::timeout(Duration::from_secs(5), workers.stop(&tasks))
            .await
            .expect("the workers end at once");
    }

    #[test]
    fn next_goes_round_the_workers() {
        let workers = Workers::start(3, &Tasks::new()).expect("start workers");
        let ids: Vec<_> = (0..6).map(|_| workers.next().id()).collect();
        assert_eq!(ids[0], ids[3]);
        assert_ne!(ids[0], ids[1]);
        assert_ne!(ids[1], ids[2]);
    }

    #[test]
    fn zero_workers_means_one_per_cpu() {
        assert!(Workers::count(0) >= 1);
        assert_eq!(Workers::count(3), 3);
    }
}
