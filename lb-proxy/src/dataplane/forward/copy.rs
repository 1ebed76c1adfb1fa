//! The copy engine: each direction reads into its own buffer and writes it
//! to the other leg. Works on every platform and every socket; the splice
//! engine falls back to it.

use std::io;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::task::{ready, Context, Poll};

use lb_core::stats;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;

use super::{Counters, Direction, Pump};

/// Size of each direction's buffer in the copy engine: two per connection,
/// so memory per connection is bounded.
pub const COPY_BUFFER_SIZE: usize = 32 * 1024;

/// Both directions of one connection under the copy engine.
pub(crate) struct CopyPump<'a> {
    client_r: ReadHalf<'a>,
    client_w: WriteHalf<'a>,
    upstream_r: ReadHalf<'a>,
    upstream_w: WriteHalf<'a>,
    /// Client → endpoint, then endpoint → client.
    buffers: [Buffer; 2],
    counters: Counters<'a>,
}

impl<'a> CopyPump<'a> {
    /// Two buffers of [`COPY_BUFFER_SIZE`] over the two legs.
    pub(crate) fn new(
        client: &'a mut TcpStream,
        upstream: &'a mut TcpStream,
        counters: Counters<'a>,
    ) -> Self {
        let (client_r, client_w) = client.split();
        let (upstream_r, upstream_w) = upstream.split();
        CopyPump {
            client_r,
            client_w,
            upstream_r,
            upstream_w,
            buffers: [Buffer::new(), Buffer::new()],
            counters,
        }
    }
}

impl Pump for CopyPump<'_> {
    fn poll_direction(
        &mut self,
        cx: &mut Context<'_>,
        dir: Direction,
        last: bool,
        active: &mut bool,
    ) -> Poll<io::Result<()>> {
        let counters = self.counters.of(dir);
        match dir {
            Direction::ToEndpoint => self.buffers[0].poll_copy(
                cx,
                &mut self.client_r,
                &mut self.upstream_w,
                counters,
                active,
                last,
            ),
            Direction::ToClient => self.buffers[1].poll_copy(
                cx,
                &mut self.upstream_r,
                &mut self.client_w,
                counters,
                active,
                last,
            ),
        }
    }
}

/// One direction's buffer and how far it got.
struct Buffer {
    buf: Box<[u8]>,
    pos: usize,
    cap: usize,
    eof: bool,
}

impl Buffer {
    fn new() -> Self {
        Buffer {
            buf: vec![0; COPY_BUFFER_SIZE].into_boxed_slice(),
            pos: 0,
            cap: 0,
            eof: false,
        }
    }

    /// Copies from `r` to `w` until `r` is at EOF and `w` is shut down
    /// (unless `last`), as [`Pump::poll_direction`] says.
    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        r: &mut R,
        w: &mut W,
        counters: [&AtomicU64; 2],
        active: &mut bool,
        last: bool,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        loop {
            if self.pos == self.cap && !self.eof {
                let mut rb = ReadBuf::new(&mut self.buf);
                ready!(Pin::new(&mut *r).poll_read(cx, &mut rb))?;
                let n = rb.filled().len();
                if n == 0 {
                    self.eof = true;
                } else {
                    self.pos = 0;
                    self.cap = n;
                    *active = true;
                }
            }
            while self.pos < self.cap {
                let n = ready!(Pin::new(&mut *w).poll_write(cx, &self.buf[self.pos..self.cap]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.pos += n;
                for counter in counters {
                    stats::add(counter, n as u64);
                }
                *active = true;
            }
            if self.eof {
                // FIN passed on as FIN: shutdown(Write) of the other leg only.
                if !last {
                    ready!(Pin::new(&mut *w).poll_shutdown(cx))?;
                }
                return Poll::Ready(Ok(()));
            }
        }
    }
}
