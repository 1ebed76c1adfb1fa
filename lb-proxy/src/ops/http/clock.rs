//! The two clocks of a served connection: how long a client may take to
//! send a request head, and how long a kept-alive connection may sit with no
//! request.
//!
//! hyper has one timer for both (`header_read_timeout` restarts when a
//! connection goes idle), so a short head timeout would also cut the status
//! page's kept-alive connection between polls, and a long one would let a
//! slow client hold a half-sent head as long. Here the connection is in one
//! of three phases, told by the two places that see them: the socket (a
//! read that brings bytes to an idle connection starts a head) and the
//! service (a request is being answered until its response body is done).
//!
//! - `Head`: from the accept, or from the first byte after an idle spell,
//!   until the request head is complete: `header_timeout`.
//! - `Busy`: a request is being answered; no clock (the handlers answer
//!   from memory; a client that does not read the answer is idle once the
//!   body has been handed to hyper).
//! - `Idle`: every answer given, no byte of the next request yet:
//!   `idle_timeout`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::Instant;

/// Where a connection is in its life, with when that phase began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for (the rest of) a request head.
    Head { since: Instant },
    /// Answering `requests` requests (more than one only in the moment
    /// hyper hands over from one to the next).
    Busy { requests: usize },
    /// Answered everything; waiting for the next request's first byte.
    Idle { since: Instant },
}

/// Why a connection's clock ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expired {
    /// No complete request head within the header timeout.
    Head,
    /// No request within the idle timeout.
    Idle,
}

/// The phase of one connection, shared by its socket, its service and the
/// task that closes it when a phase lasts too long.
#[derive(Debug, Clone)]
pub(crate) struct Clock {
    phase: Arc<watch::Sender<Phase>>,
}

impl Clock {
    /// A clock for a connection just accepted: its first head is due now.
    pub(crate) fn start() -> Clock {
        let (phase, _) = watch::channel(Phase::Head {
            since: Instant::now(),
        });
        Clock {
            phase: Arc::new(phase),
        }
    }

    /// Bytes arrived: on an idle connection, a request head has begun.
    fn bytes_read(&self) {
        self.phase.send_if_modified(|phase| match phase {
            Phase::Idle { .. } => {
                *phase = Phase::Head {
                    since: Instant::now(),
                };
                true
            }
            Phase::Head { .. } | Phase::Busy { .. } => false,
        });
    }

    /// A request head is complete and its answer is being made; the
    /// returned guard marks the answer done when dropped (it travels with
    /// the response body).
    pub(crate) fn request(&self) -> Answering {
        self.phase.send_modify(|phase| {
            *phase = match *phase {
                Phase::Busy { requests } => Phase::Busy {
                    requests: requests + 1,
                },
                Phase::Head { .. } | Phase::Idle { .. } => Phase::Busy { requests: 1 },
            }
        });
        Answering {
            clock: self.clone(),
        }
    }

    /// Whether a request is being answered (as opposed to a head being
    /// awaited or read, or an idle spell).
    pub(crate) fn answering(&self) -> bool {
        matches!(*self.phase.borrow(), Phase::Busy { .. })
    }

    /// Resolves when the current phase has lasted longer than its timeout,
    /// following every change of phase.
    pub(crate) async fn expired(
        &self,
        header_timeout: Duration,
        idle_timeout: Duration,
    ) -> Expired {
        let mut phase = self.phase.subscribe();
        loop {
            let deadline = match *phase.borrow_and_update() {
                Phase::Head { since } => Some((since + header_timeout, Expired::Head)),
                Phase::Idle { since } => Some((since + idle_timeout, Expired::Idle)),
                Phase::Busy { .. } => None,
            };
            let timeout = async {
                match deadline {
                    Some((at, why)) => {
                        tokio::time::sleep_until(at).await;
                        why
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                why = timeout => return why,
                // The sender lives as long as `self`: never an error here.
                _ = phase.changed() => {}
            }
        }
    }
}

/// A request being answered; dropping it (with the response body, or with
/// the handler's future when the connection goes first) ends the answer.
#[derive(Debug)]
pub(crate) struct Answering {
    clock: Clock,
}

impl Drop for Answering {
    fn drop(&mut self) {
        self.clock.phase.send_modify(|phase| {
            if let Phase::Busy { requests } = *phase {
                *phase = if requests > 1 {
                    Phase::Busy {
                        requests: requests - 1,
                    }
                } else {
                    Phase::Idle {
                        since: Instant::now(),
                    }
                };
            }
        });
    }
}

/// A response body that ends its request's [`Answering`] when hyper is
/// done with it (read to its end, or dropped).
#[derive(Debug)]
pub(crate) struct Answered<B> {
    body: B,
    _answering: Answering,
}

impl<B> Answered<B> {
    /// `body`, ending `answering` with it.
    pub(crate) fn new(body: B, answering: Answering) -> Answered<B> {
        Answered {
            body,
            _answering: answering,
        }
    }
}

impl<B: Body + Unpin> Body for Answered<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A socket that tells its connection's [`Clock`] when bytes arrive.
#[derive(Debug)]
pub(crate) struct Watched<S> {
    stream: S,
    clock: Clock,
}

impl<S> Watched<S> {
    /// `stream`, reporting its reads to `clock`.
    pub(crate) fn new(stream: S, clock: Clock) -> Watched<S> {
        Watched { stream, clock }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.clock.bytes_read();
        }
        read
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_head_is_timed_from_the_accept_and_an_idle_spell_from_the_last_answer() {
        let head = Duration::from_secs(10);
        let idle = Duration::from_secs(60);
        let clock = Clock::start();
        let start = Instant::now();
        assert_eq!(clock.expired(head, idle).await, Expired::Head);
        assert_eq!(start.elapsed(), head);

        let clock = Clock::start();
        let answering = clock.request();
        tokio::time::sleep(Duration::from_secs(100)).await;
        let answered = Instant::now();
        drop(answering);
        assert_eq!(clock.expired(head, idle).await, Expired::Idle);
        assert_eq!(answered.elapsed(), idle, "a busy spell has no clock");

        let clock = Clock::start();
        drop(clock.request());
        let waiting = tokio::spawn({
            let clock = clock.clone();
            async move { clock.expired(head, idle).await }
        });
        tokio::time::sleep(Duration::from_secs(30)).await;
        let first_byte = Instant::now();
        clock.bytes_read();
        assert_eq!(waiting.await.expect("join"), Expired::Head);
        assert_eq!(first_byte.elapsed(), head, "a byte starts the head clock");
    }
}
