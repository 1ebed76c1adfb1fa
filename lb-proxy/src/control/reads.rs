//! Reading sources so that one slow source never holds up the others.
//!
//! Each source has a [`Reader`]: a read runs on a blocking thread of its
//! own, and its result waits in the reader until the rebuild takes it. The
//! rebuild starts the reads a pass needs, waits at most [`READ_WAIT`] for
//! them, and goes ahead with what arrived: a source still reading keeps
//! its last state in this pass, and its result, when it lands, wakes the
//! rebuild for another pass. A source notified while its read is in flight
//! is read once more right after (sources are level-triggered: the second
//! read sees everything). So a manifest that takes a minute to parse, or an
//! etcd that does not answer, delays a change of the config file by at
//! most [`READ_WAIT`], never by its own duration.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use lb_config::source::{Changed, DesiredState, Source};
use lb_config::ConfigErrors;
use tokio::task::JoinHandle;

use crate::lifecycle::Tasks;

/// How long a rebuild waits for the reads it started before it goes ahead
/// without the slow ones.
pub(crate) const READ_WAIT: Duration = Duration::from_secs(1);

/// What one source's read gave.
pub(crate) type Read = Result<DesiredState, ConfigErrors>;

/// One source's reads: at most one in flight, its result kept until taken.
pub(crate) struct Reader {
    source: Arc<dyn Source>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// A read is in flight.
    busy: bool,
    /// The source was notified during the read in flight: read once more.
    again: bool,
    /// The last read that landed and was not taken yet.
    fresh: Option<Read>,
}

impl Reader {
    /// A reader of `source`.
    pub(crate) fn new(source: Arc<dyn Source>) -> Arc<Reader> {
        Arc::new(Reader {
            source,
            state: Mutex::new(State::default()),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic in a read leaves the state as it was: still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a read on a blocking thread of `tasks`, or, when one is in
    /// flight, asks it to read once more when it is done (then there is
    /// nothing new to wait on). `arrived` is notified when the result lands.
    pub(crate) fn start(
        self: &Arc<Self>,
        tasks: &Tasks,
        arrived: &Changed,
        force: bool,
    ) -> Option<JoinHandle<()>> {
        {
            let mut state = self.state();
            if state.busy {
                state.again = true;
                return None;
            }
            state.busy = true;
        }
        let reader = self.clone();
        let arrived = arrived.clone();
        Some(tasks.spawn_blocking(move || {
            loop {
                // Unforced, a source that can tell it holds what it gave
                // last time (the same file bytes) is not parsed again.
                let read = if force {
                    Some(reader.source.desired())
                } else {
                    reader.source.desired_if_changed()
                };
                let mut state = reader.state();
                if read.is_some() {
                    state.fresh = read;
                }
                if !std::mem::take(&mut state.again) {
                    state.busy = false;
                    break;
                }
            }
            arrived.notify();
        }))
    }

    /// The last read that landed since the last call, if any.
    pub(crate) fn take(&self) -> Option<Read> {
        self.state().fresh.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A source whose reads block until the test opens the gate.
    #[derive(Debug)]
    struct Gated {
        gate: Mutex<bool>,
        open: std::sync::Condvar,
        reads: AtomicUsize,
    }

    impl Source for Gated {
        fn name(&self) -> &str {
            "gated"
        }
        fn desired(&self) -> Read {
            let mut open = self.gate.lock().unwrap();
            while !*open {
                open = self.open.wait(open).unwrap();
            }
            self.reads.fetch_add(1, Ordering::SeqCst);
            Ok(DesiredState::default())
        }
    }

    #[tokio::test]
    async fn a_notice_during_a_read_gives_one_more_read_and_one_wake() {
        let source = Arc::new(Gated {
            gate: Mutex::new(false),
            open: std::sync::Condvar::new(),
            reads: AtomicUsize::new(0),
        });
        let reader = Reader::new(source.clone());
        let tasks = Tasks::new();
        let wake = Arc::new(tokio::sync::Notify::new());
        let arrived = Changed::new(wake.clone());
        let first = reader.start(&tasks, &arrived, true).expect("a read starts");
        assert!(
            reader.start(&tasks, &arrived, true).is_none(),
            "one read at a time"
        );
        assert!(reader.take().is_none());
        *source.gate.lock().unwrap() = true;
        source.open.notify_all();
        first.await.unwrap();
        assert_eq!(source.reads.load(Ordering::SeqCst), 2);
        assert!(arrived.take());
        assert!(reader.take().is_some());
        assert!(reader.take().is_none());
        tasks.stop().await;
    }
}
