//! One lifecycle for every part of lb: a cancellation token and the tasks
//! that must end before the part counts as stopped.
//!
//! Every task lb spawns goes through a [`Tasks`]. A part (the data plane, a
//! source, the probes, the admin API) takes a [`Tasks::child`] of its owner:
//! the child's token is a child of the owner's, so cancelling the root stops
//! everything, and every task spawned on the child is also counted by each of
//! its ancestors, so waiting on the root waits for everything. Stopping one
//! part is [`Tasks::stop`]: cancel its token, then wait for its tasks; the
//! owner decides the order in which its parts stop (listeners, connections,
//! probes, sources, admin), and no task outlives the [`Tasks`] that spawned
//! it once `stop` has returned.
//!
//! Blocking work (a file read, a blocking client call) goes through
//! [`Tasks::spawn_blocking`]: it is counted like a task, so `stop` also waits
//! for it; it should therefore be bounded in time.

use std::fmt;
use std::future::Future;

use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tokio_util::task::task_tracker::TaskTrackerToken;
use tokio_util::task::TaskTracker;

/// How many levels of a part's tree a task is counted by without an
/// allocation: the root, the App's parts and their sub-parts (a connection
/// is counted by the connections, the data plane and the root).
const INLINE_LEVELS: usize = 4;

/// The trackers' tokens a task holds while it runs. Spawning a connection
/// must not allocate more than the task itself, so the usual depths are kept
/// inline; `deeper` (empty, so no allocation) holds only what is below
/// [`INLINE_LEVELS`].
#[derive(Default)]
struct Counted {
    inline: [Option<TaskTrackerToken>; INLINE_LEVELS],
    deeper: Vec<TaskTrackerToken>,
}

pin_project_lite::pin_project! {
    /// A task and the tokens that count it, as one future: a struct, not an
    /// `async move` block, because a block that moves a future in and awaits
    /// it keeps two copies of that future's space (the captured value and
    /// the awaited one), which doubled the memory of every idle connection.
    struct CountedTask<F> {
        #[pin]
        task: F,
        _counted: Counted,
    }
}

impl<F: Future> Future for CountedTask<F> {
    type Output = F::Output;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        self.project().task.poll(cx)
    }
}

/// A part's token and the trackers that count its tasks (its own first, then
/// its ancestors'). Cloning is shallow: clones spawn into the same part.
#[derive(Clone)]
pub struct Tasks {
    token: CancellationToken,
    /// This part's tracker, then its parent's, up to the root.
    trackers: Vec<TaskTracker>,
}

impl fmt::Debug for Tasks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tasks")
            .field("running", &self.running())
            .field("stopping", &self.is_stopping())
            .field("depth", &self.trackers.len())
            .finish()
    }
}

impl Default for Tasks {
    fn default() -> Self {
        Tasks::new()
    }
}

impl Tasks {
    /// A root: nothing above it cancels it or waits for it.
    pub fn new() -> Tasks {
        Tasks {
            token: CancellationToken::new(),
            trackers: vec![TaskTracker::new()],
        }
    }

    /// A part of this one: stopped when this one is, and counted by it, but
    /// stoppable on its own.
    pub fn child(&self) -> Tasks {
        let mut trackers = Vec::with_capacity(self.trackers.len() + 1);
        trackers.push(TaskTracker::new());
        trackers.extend(self.trackers.iter().cloned());
        Tasks {
            token: self.token.child_token(),
            trackers,
        }
    }

    /// The token tasks of this part watch; cancelled by [`Tasks::stop`], by
    /// [`Tasks::cancel`], or by an ancestor.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Resolves once this part must stop.
    pub fn stopping(&self) -> WaitForCancellationFuture<'_> {
        self.token.cancelled()
    }

    /// Whether this part has been told to stop.
    pub fn is_stopping(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Tasks of this part (and of its children) still running.
    pub fn running(&self) -> usize {
        self.trackers.first().map_or(0, TaskTracker::len)
    }

    fn tokens(&self) -> Counted {
        let mut counted = Counted::default();
        for (i, tracker) in self.trackers.iter().enumerate() {
            match counted.inline.get_mut(i) {
                Some(slot) => *slot = Some(tracker.token()),
                None => counted.deeper.push(tracker.token()),
            }
        }
        counted
    }

    /// Spawns `task` on the current runtime, counted by this part and its
    /// ancestors until it ends.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.spawn_on(task, &Handle::current())
    }

    /// [`Tasks::spawn`] on another runtime (the per-core workers').
    pub fn spawn_on<F>(&self, task: F, handle: &Handle) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        handle.spawn(CountedTask {
            task,
            _counted: self.tokens(),
        })
    }

    /// Runs blocking `work` on the runtime's blocking pool, counted like a
    /// task (so keep it bounded: [`Tasks::stop`] waits for it).
    pub fn spawn_blocking<F, T>(&self, work: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let tokens = self.tokens();
        tokio::task::spawn_blocking(move || {
            let _counted = tokens;
            work()
        })
    }

    /// Tells this part (and its children) to stop, without waiting.
    pub fn cancel(&self) {
        self.token.cancel();
    }

    /// Waits until every task of this part and of its children has ended,
    /// without cancelling anything (a drain waits this way, then cancels).
    /// Tasks spawned while it waits are waited for too.
    pub async fn wait(&self) {
        if let Some(own) = self.trackers.first() {
            // Closing only lets `wait` finish once the count is zero; tasks
            // can still be spawned, and a later `wait` waits for them too.
            own.close();
            own.wait().await;
        }
    }

    /// Cancels this part and waits for every one of its tasks, its children's
    /// included.
    pub async fn stop(&self) {
        self.cancel();
        self.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn stopping_a_root_stops_and_waits_for_its_childrens_tasks() {
        let root = Tasks::new();
        let child = root.child();
        let grandchild = child.child();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for tasks in [&root, &child, &grandchild] {
            let t = tasks.clone();
            let tx = tx.clone();
            tasks.spawn(async move {
                t.stopping().await;
                tokio::time::sleep(Duration::from_millis(10)).await;
                let _ = tx.send(());
            });
        }
        drop(tx);
        assert_eq!(root.running(), 3);
        assert_eq!(child.running(), 2);
        root.stop().await;
        assert_eq!(root.running(), 0);
        let mut ended = 0;
        while rx.recv().await.is_some() {
            ended += 1;
        }
        assert_eq!(ended, 3, "every task ended before stop returned");
    }

    #[tokio::test]
    async fn a_child_stops_alone_and_its_parent_keeps_running() {
        let root = Tasks::new();
        let child = root.child();
        let r = root.clone();
        root.spawn(async move { r.stopping().await });
        let c = child.clone();
        child.spawn(async move { c.stopping().await });
        child.stop().await;
        assert!(child.is_stopping());
        assert!(!root.is_stopping());
        assert_eq!(root.running(), 1);
        root.stop().await;
        assert_eq!(root.running(), 0);
    }

    #[test]
    fn counting_a_task_costs_its_tokens_and_no_second_copy_of_it() {
        let big = async {
            let buffer = [0u8; 4096];
            tokio::task::yield_now().await;
            std::hint::black_box(buffer);
        };
        let alone = std::mem::size_of_val(&big);
        let counted = CountedTask {
            task: big,
            _counted: Counted::default(),
        };
        assert!(
            std::mem::size_of_val(&counted) <= alone + std::mem::size_of::<Counted>(),
            "{} bytes for a {alone}-byte task",
            std::mem::size_of_val(&counted)
        );
    }

    #[tokio::test]
    async fn blocking_work_is_waited_for() {
        let root = Tasks::new();
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let d = done.clone();
        root.spawn_blocking(move || {
            std::thread::sleep(Duration::from_millis(20));
            d.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        root.stop().await;
        assert!(done.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[tokio::test]
    async fn wait_does_not_cancel_and_can_be_called_again() {
        let root = Tasks::new();
        root.spawn(async {});
        root.wait().await;
        assert!(!root.is_stopping());
        root.spawn(async {});
        root.wait().await;
        assert_eq!(root.running(), 0);
    }
}
