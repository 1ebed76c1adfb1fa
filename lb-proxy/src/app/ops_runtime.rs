//! The ops runtime: the App's operator surface (the admin API with
//! `/metrics` and the status page, the DNS responder, the followers that
//! record events and pass on new settings) runs on a tokio runtime of its
//! own, one thread named [`THREAD_NAME`], never on the data plane's threads.
//!
//! Why: a `/metrics` render or an `/api/v1/services` answer over 10,000
//! services is tens to hundreds of milliseconds of synchronous work; on the
//! data plane's runtime it held a worker while new connections waited to be
//! accepted (one scrape raised the connect p99 from 6 ms to 334 ms). On a
//! thread of its own it only competes for a core, as any other process
//! would, and the kernel's scheduler shares that fairly.
//!
//! One current-thread runtime is enough: operator traffic is a scraper, a few
//! pollers and an occasional DNS client, and one thread means the operator
//! surface can never take more than one core from the data plane. A part
//! started here ([`OpsRuntime::run`]) binds its sockets in this runtime's
//! reactor and spawns its tasks here (a tokio socket belongs to the runtime
//! it was created in). The runtime lives as long as the App: the App stops
//! its parts, then [`OpsRuntime::stop`] ends the thread and joins it; an App
//! dropped without a shutdown ends the thread too (its remaining tasks are
//! dropped with the runtime).

use std::future::Future;
use std::io;
use std::sync::{Mutex, PoisonError};
use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tracing::warn;

use crate::error::Error;

/// The name of the ops runtime's thread (and of its blocking threads), as
/// `top -H`, `/proc/PID/task/*/comm` and a debugger show it.
pub const THREAD_NAME: &str = "lb-ops";

/// The ops runtime: its handle, and what ends and joins its thread.
#[derive(Debug)]
pub(crate) struct OpsRuntime {
    handle: Handle,
    /// Sending, or dropping (the App dropped without a shutdown), ends the
    /// thread's `block_on`; the thread then drops the runtime.
    stop: Mutex<Option<oneshot::Sender<()>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl OpsRuntime {
    /// Starts the thread and its runtime (I/O and timers enabled).
    pub(crate) fn start() -> Result<OpsRuntime, Error> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name(THREAD_NAME)
            .build()
            .map_err(Error::OpsRuntime)?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(THREAD_NAME.to_owned())
            .spawn(move || {
                // A stop, or the App gone: either way the runtime ends.
                let _ = runtime.block_on(stopped);
                // Outside `block_on`: dropping cancels what is left and
                // waits for the runtime's blocking threads.
                drop(runtime);
            })
            .map_err(Error::OpsRuntime)?;
        Ok(OpsRuntime {
            handle,
            stop: Mutex::new(Some(stop)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The runtime's handle, to spawn a part's tasks on
    /// ([`crate::lifecycle::Tasks::spawn_on`]).
    pub(crate) fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Runs `work` on the ops runtime and returns its output: what `work`
    /// binds belongs to this runtime's reactor and what it spawns runs here.
    /// A panic in `work` is resumed in the caller; an error only when the
    /// runtime has already stopped.
    pub(crate) async fn run<F>(&self, work: F) -> Result<F::Output, Error>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match self.handle.spawn(work).await {
            Ok(output) => Ok(output),
            Err(e) => match e.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(_) => Err(Error::OpsRuntime(io::Error::other(
                    "the ops runtime has stopped",
                ))),
            },
        }
    }

    /// Ends the thread (dropping whatever task is still on the runtime: stop
    /// the parts first) and returns once it has exited. Calling it again
    /// does nothing.
    pub(crate) async fn stop(&self) {
        let stop = self
            .stop
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(stop) = stop {
            let _ = stop.send(());
        }
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(thread) = thread else { return };
        match tokio::task::spawn_blocking(move || thread.join()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => warn!("the ops runtime's thread panicked"),
            Err(e) => warn!(error = %e, "joining the ops runtime's thread failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_runs_on_the_ops_thread_and_the_thread_is_joined_at_stop() {
        let ops = OpsRuntime::start().expect("the ops runtime starts");
        let name = ops
            .run(async { std::thread::current().name().map(str::to_owned) })
            .await
            .expect("the runtime runs");
        assert_eq!(name.as_deref(), Some(THREAD_NAME));
        ops.stop().await;
        assert!(
            ops.run(async {}).await.is_err(),
            "a stopped runtime runs nothing"
        );
        assert!(ops.thread.lock().expect("lock").is_none(), "joined");
        ops.stop().await;
    }

    #[test]
    fn a_dropped_ops_runtime_ends_its_thread() {
        let ops = OpsRuntime::start().expect("the ops runtime starts");
        let thread = ops.thread.lock().expect("lock").take().expect("thread");
        drop(ops);
        thread.join().expect("the thread ended without a panic");
    }
}
