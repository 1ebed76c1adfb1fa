//! The splice engine (Linux): each direction moves bytes socket → pipe →
//! socket with `splice(2)`, so the payload stays in the kernel and costs two
//! system calls per chunk of up to [`PIPE_SIZE`] bytes, no copy to user space.
//!
//! Pipes come from a process-wide pool and are borrowed only while bytes are
//! in flight: a direction takes one when its socket is readable and gives it
//! back as soon as the pipe is empty and the socket has nothing more, so an
//! idle connection holds no pipe (and no buffer at all). A pipe that still
//! holds bytes when its connection ends is closed, never reused.
//!
//! Readiness comes from tokio (`poll_read_ready`/`poll_write_ready` and
//! `try_io`), so `EAGAIN` clears the readiness the reactor reported and the
//! task sleeps until the next edge. The timers, FIN and reset rules are the
//! ones every engine shares (`forward::drive`); this file is only the
//! `Pump`.
//!
//! In `auto` mode (HAProxy's `splice-auto`) a burst starts with one `read(2)`
//! into a per-thread buffer of [`SMALL_READ`] bytes, written out at once: a
//! read that does not fill it proves the socket drained (as tokio's own
//! reads assume), so a small message costs read + write and no `EAGAIN`
//! probe, where splice needs a third call to learn the socket is empty. A
//! read that fills the buffer switches the direction to splice for good: a
//! direction that once carried a large burst is a bulk transfer, and copying
//! the start of each of its bursts through user space would cost more than
//! the probe. Bytes the other leg could not take at once wait in a
//! per-direction buffer sized to them, freed as soon as they are written.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::task::{ready, Context, Poll};

use lb_core::stats;
use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::TcpStream;

use super::{Counters, Direction, Pump};
use crate::dataplane::descriptors::{Descriptors, Held};
use crate::sys;

/// Bytes each pooled pipe is asked to hold (`F_SETPIPE_SZ`), and so the
/// largest chunk one `splice(2)` pair moves. The kernel default (64 KiB)
/// halves the chunk; the pages are only used while bytes are in flight.
pub const PIPE_SIZE: usize = 256 * 1024;

/// Idle pipes the pool keeps; pipes given back beyond this are closed, so
/// after a burst the process returns to a bounded number of descriptors.
pub const POOL_MAX_IDLE: usize = 256;

/// Size of the per-thread buffer `auto` mode reads a burst's first bytes
/// into: a read that fills it switches the direction to splice.
pub const SMALL_READ: usize = 16 * 1024;

thread_local! {
    /// `auto` mode's read buffer: one per worker thread, never held across
    /// an await, so connections hold none.
    static SMALL: RefCell<Box<[u8]>> = RefCell::new(vec![0; SMALL_READ].into_boxed_slice());
}

/// Set once splice has been refused (`EINVAL`, `ENOSYS`, `EPERM`: a seccomp
/// filter, a socket type without splice support); later connections then go
/// straight to the copy loop.
static REFUSED: AtomicBool = AtomicBool::new(false);

/// Pipes lent out right now (in flight), for tests and benchmarks.
static BORROWED: AtomicUsize = AtomicUsize::new(0);

static POOL: Mutex<Vec<Pipe>> = Mutex::new(Vec::new());

/// Pipes currently borrowed from the pool, i.e. holding or about to hold
/// bytes in flight. Idle connections hold none, which is what this shows.
pub fn pipes_borrowed() -> usize {
    BORROWED.load(Ordering::Relaxed)
}

/// Pipes waiting in the pool.
pub fn pipes_idle() -> usize {
    POOL.lock().map(|p| p.len()).unwrap_or(0)
}

/// Whether splice was refused by this kernel or sandbox (the copy loop then
/// carries every connection).
pub fn refused() -> bool {
    REFUSED.load(Ordering::Relaxed)
}

/// One pipe: its two ends, how many bytes it holds, and its two
/// descriptors in the budget of the data plane that opened it (until it is
/// closed, pooled or not).
#[derive(Debug)]
struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
    cap: usize,
    _fds: Held,
}

fn take_pipe(descriptors: &Descriptors) -> io::Result<Pipe> {
    let pooled = POOL.lock().ok().and_then(|mut p| p.pop());
    let pipe = match pooled {
        Some(p) => p,
        None => {
            // A pipe the budget refuses fails as if the process had run out.
            let fds = descriptors.try_take(2).ok_or_else(Descriptors::refused)?;
            let (r, w, cap) = sys::pipe(PIPE_SIZE)?;
            Pipe {
                r,
                w,
                cap,
                _fds: fds,
            }
        }
    };
    BORROWED.fetch_add(1, Ordering::Relaxed);
    Ok(pipe)
}

/// Gives back an empty pipe; `dirty` pipes (bytes still inside) are closed.
fn give_pipe(pipe: Pipe, dirty: bool) {
    BORROWED.fetch_sub(1, Ordering::Relaxed);
    if dirty {
        return;
    }
    if let Ok(mut pool) = POOL.lock() {
        if pool.len() < POOL_MAX_IDLE {
            pool.push(pipe);
        }
    }
}

fn is_refusal(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EPERM) | Some(libc::EOPNOTSUPP)
    )
}

/// One direction: `src` → pipe → `dst`.
#[derive(Debug, Default)]
struct Flow {
    pipe: Option<Pipe>,
    in_pipe: usize,
    eof: bool,
    /// `auto` mode: a read filled the buffer once; splice from now on.
    bulk: bool,
    /// `auto` mode: bytes read but not yet written (empty, unallocated,
    /// unless the other leg's buffer was full).
    pending: Vec<u8>,
}

impl Drop for Flow {
    fn drop(&mut self) {
        if let Some(pipe) = self.pipe.take() {
            give_pipe(pipe, self.in_pipe > 0);
        }
    }
}

impl Flow {
    fn release(&mut self) {
        if self.in_pipe == 0 {
            if let Some(pipe) = self.pipe.take() {
                give_pipe(pipe, false);
            }
        }
    }

    /// `auto` mode: one `read(2)` into the per-thread buffer, written to
    /// `dst` at once; what `dst` cannot take waits in `pending`. `Ok(0)` at
    /// EOF, `WouldBlock` when nothing was read. A read that fills the buffer
    /// switches the direction to splice; a shorter one clears the read
    /// readiness (the socket is drained), so no `EAGAIN` probe follows.
    fn copy_small(
        &mut self,
        src: &TcpStream,
        dst: &TcpStream,
        counters: [&AtomicU64; 2],
    ) -> io::Result<usize> {
        SMALL.with(|buf| {
            let mut buf = buf.borrow_mut();
            let mut got = 0;
            let read = src.try_io(Interest::READABLE, || {
                let n = (&*SockRef::from(src)).read(&mut buf[..])?;
                if n > 0 && n < SMALL_READ {
                    // Drained: report WouldBlock so tokio clears the
                    // readiness (unless a newer event arrived meanwhile).
                    got = n;
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(n)
            });
            let n = match read {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && got > 0 => got,
                Err(e) => return Err(e),
            };
            if n == 0 {
                return Ok(0);
            }
            self.bulk = n == SMALL_READ;
            let mut off = 0;
            while off < n {
                match dst.try_io(Interest::WRITABLE, || {
                    (&*SockRef::from(dst)).write(&buf[off..n])
                }) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(m) => {
                        off += m;
                        for counter in counters {
                            stats::add(counter, m as u64);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
            if off < n {
                self.pending = buf[off..n].to_vec();
            }
            Ok(n)
        })
    }

    /// `auto` mode: writes `pending` to `dst`, then frees it.
    fn poll_flush(
        &mut self,
        cx: &mut Context<'_>,
        dst: &TcpStream,
        counters: [&AtomicU64; 2],
        active: &mut bool,
    ) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            ready!(dst.poll_write_ready(cx))?;
            let pending = &self.pending;
            match dst.try_io(Interest::WRITABLE, || (&*SockRef::from(dst)).write(pending)) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(m) => {
                    for counter in counters {
                        stats::add(counter, m as u64);
                    }
                    *active = true;
                    if m == self.pending.len() {
                        self.pending = Vec::new();
                    } else {
                        self.pending.drain(..m);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Splices from `src` to `dst` as [`Pump::poll_direction`] says. Sets
    /// `moved` once anything happened at all (after which a refusal is an
    /// ordinary failure, not a fallback).
    #[allow(clippy::too_many_arguments)]
    fn poll_splice(
        &mut self,
        cx: &mut Context<'_>,
        src: &TcpStream,
        dst: &TcpStream,
        counters: [&AtomicU64; 2],
        spliced: &AtomicU64,
        descriptors: &Descriptors,
        active: &mut bool,
        moved: &mut bool,
        last: bool,
        auto: bool,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.pending.is_empty() {
                ready!(self.poll_flush(cx, dst, counters, active))?;
            }
            if auto && !self.bulk && self.in_pipe == 0 && !self.eof {
                ready!(src.poll_read_ready(cx))?;
                match self.copy_small(src, dst, counters) {
                    Ok(0) => {
                        self.eof = true;
                        *moved = true;
                    }
                    Ok(_) => {
                        *moved = true;
                        *active = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Poll::Ready(Err(e)),
                }
                continue;
            }
            if self.in_pipe == 0 && !self.eof {
                ready!(src.poll_read_ready(cx))?;
                if self.pipe.is_none() {
                    self.pipe = Some(take_pipe(descriptors)?);
                }
                let Some(pipe) = self.pipe.as_ref() else {
                    continue;
                };
                let (w, cap) = (&pipe.w, pipe.cap);
                match src.try_io(Interest::READABLE, || sys::splice(src, w, cap)) {
                    Ok(0) => {
                        self.eof = true;
                        *moved = true;
                        self.release();
                    }
                    Ok(n) => {
                        self.in_pipe = n;
                        *moved = true;
                        *active = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        // Nothing to read: an idle direction holds no pipe.
                        self.release();
                        continue;
                    }
                    Err(e) if auto && is_refusal(&e) => {
                        // Nothing is in the pipe: this connection goes on
                        // reading into the buffer, later ones copy.
                        note_refused(&e);
                        self.release();
                        self.bulk = false;
                        continue;
                    }
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
            while self.in_pipe > 0 {
                ready!(dst.poll_write_ready(cx))?;
                let Some(pipe) = self.pipe.as_ref() else {
                    return Poll::Ready(Err(io::Error::other("bytes in flight without a pipe")));
                };
                let r = &pipe.r;
                let len = self.in_pipe;
                match dst.try_io(Interest::WRITABLE, || sys::splice(r, dst, len)) {
                    Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Ok(n) => {
                        self.in_pipe -= n;
                        for counter in counters {
                            stats::add(counter, n as u64);
                        }
                        stats::add(spliced, n as u64);
                        *active = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
            if self.eof && self.pending.is_empty() {
                // FIN passed on as FIN: shutdown(Write) of the other leg only.
                if !last {
                    sys::shutdown_write(dst)?;
                }
                return Poll::Ready(Ok(()));
            }
        }
    }
}

/// Marks splice as refused for every later connection (logged once).
pub(crate) fn note_refused(e: &io::Error) {
    if !REFUSED.swap(true, Ordering::Relaxed) {
        tracing::warn!(error = %e, "splice(2) refused; forwarding with the copy loop");
    }
}

/// Both directions of one connection under the splice engine.
pub(crate) struct SplicePump<'a> {
    client: &'a TcpStream,
    upstream: &'a TcpStream,
    /// Client → endpoint, then endpoint → client.
    flows: [Flow; 2],
    counters: Counters<'a>,
    /// `auto` mode: small bursts through the per-thread buffer.
    auto: bool,
    /// Anything happened at all (a byte moved, an EOF was read).
    moved: bool,
}

impl<'a> SplicePump<'a> {
    /// No pipe yet: a direction borrows one when its socket is readable.
    pub(crate) fn new(
        client: &'a TcpStream,
        upstream: &'a TcpStream,
        counters: Counters<'a>,
        auto: bool,
    ) -> Self {
        SplicePump {
            client,
            upstream,
            flows: [Flow::default(), Flow::default()],
            counters,
            auto,
            moved: false,
        }
    }

    /// Whether the connection failed with `e` because the kernel refused
    /// splice before a byte moved: the copy loop may then take over the
    /// same, untouched sockets.
    pub(crate) fn refused_before_moving(&self, e: &io::Error) -> bool {
        !self.moved && is_refusal(e)
    }
}

impl Pump for SplicePump<'_> {
    fn poll_direction(
        &mut self,
        cx: &mut Context<'_>,
        dir: Direction,
        last: bool,
        active: &mut bool,
    ) -> Poll<io::Result<()>> {
        let (src, dst, flow) = match dir {
            Direction::ToEndpoint => (self.client, self.upstream, &mut self.flows[0]),
            Direction::ToClient => (self.upstream, self.client, &mut self.flows[1]),
        };
        flow.poll_splice(
            cx,
            src,
            dst,
            self.counters.of(dir),
            self.counters.spliced,
            self.counters.descriptors,
            active,
            &mut self.moved,
            last,
            self.auto,
        )
    }
}
