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
//!
//! A direction that needs a pipe and cannot have one (`pipe2` refused with
//! `EMFILE`/`ENFILE`, or anything else `Pipe::new` refuses) copies
//! through that same buffer for the rest of the connection, under either
//! engine: a pipe is only ever asked for when the direction holds none, so
//! no byte is in a pipe then, and the switch loses or reorders nothing. The
//! connection goes on; only its speed changes.

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

impl Pipe {
    /// Opens a new pipe of [`PIPE_SIZE`]: the one place the splice engine
    /// creates descriptors, so whatever may refuse one (`EMFILE`, `ENFILE`,
    /// the data plane's descriptor budget) refuses it here, and the
    /// direction that asked copies instead (`Flow::copying`): a refusal
    /// never costs a connection.
    fn new(descriptors: &Descriptors) -> io::Result<Pipe> {
        // A pipe the budget refuses fails as if the process had run out.
        let fds = descriptors.try_take(2).ok_or_else(Descriptors::refused)?;
        let (r, w, cap) = sys::pipe(PIPE_SIZE)?;
        Ok(Pipe {
            r,
            w,
            cap,
            _fds: fds,
        })
    }
}

/// Lends a pipe: an idle one from the pool, else a new one.
fn take_pipe(descriptors: &Descriptors) -> io::Result<Pipe> {
    #[cfg(test)]
    fault::check()?;
    let pooled = POOL.lock().ok().and_then(|mut p| p.pop());
    let pipe = match pooled {
        Some(p) => p,
        None => Pipe::new(descriptors)?,
    };
    BORROWED.fetch_add(1, Ordering::Relaxed);
    Ok(pipe)
}

/// Test-only fault injection: makes `take_pipe` fail on this thread, as
/// `EMFILE` would, after a number of pipes were lent. Thread-local, so a
/// test on a current-thread runtime affects only its own connections.
#[cfg(test)]
pub(crate) mod fault {
    use std::cell::Cell;
    use std::io;

    thread_local! {
        /// Pipes still lent before every request fails; `None`: never fail.
        static LEFT: Cell<Option<usize>> = const { Cell::new(None) };
        /// Requests refused so far on this thread.
        static REFUSED: Cell<usize> = const { Cell::new(0) };
    }

    /// Requests refused so far on this thread.
    pub(crate) fn refused() -> usize {
        REFUSED.with(Cell::get)
    }

    /// From now on on this thread, `allowed` more pipes are lent, then
    /// every request fails with `EMFILE`; `None` lifts the fault.
    pub(crate) fn fail_after(allowed: Option<usize>) {
        LEFT.with(|left| left.set(allowed));
    }

    pub(super) fn check() -> io::Result<()> {
        LEFT.with(|left| match left.get() {
            None => Ok(()),
            Some(0) => {
                REFUSED.with(|r| r.set(r.get() + 1));
                Err(io::Error::from_raw_os_error(libc::EMFILE))
            }
            Some(n) => {
                left.set(Some(n - 1));
                Ok(())
            }
        })
    }
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
    /// No pipe could be had when one was needed (descriptors short): this
    /// direction copies through the per-thread buffer from now on. Set only
    /// while no byte is in a pipe, so no byte is lost or overtaken.
    copying: bool,
    /// `auto` mode or `copying`: bytes read but not yet written (empty,
    /// unallocated, unless the other leg's buffer was full).
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

    /// `auto` mode (or `copying`): one `read(2)` into the per-thread
    /// buffer, written to `dst` at once; what `dst` cannot take waits in
    /// `pending`. `Ok(0)` at EOF, `WouldBlock` when nothing was read. A read
    /// that fills the buffer switches an `auto` direction to splice (not a
    /// `copying` one); a shorter one clears the read readiness (the socket
    /// is drained), so no `EAGAIN` probe follows.
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

    /// Writes `pending` (bytes `copy_small` could not write) to `dst`, then
    /// frees it.
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
            if (self.copying || auto && !self.bulk) && self.in_pipe == 0 && !self.eof {
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
                    match take_pipe(descriptors) {
                        Ok(pipe) => self.pipe = Some(pipe),
                        Err(e) => {
                            // The pipe is empty (none is held): the bytes
                            // still in the socket go through the buffer.
                            tracing::debug!(error = %e, "no pipe for splice; copying this direction");
                            self.copying = true;
                            continue;
                        }
                    }
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

#[cfg(test)]
mod tests {
    //! A direction refused a pipe copies instead, losing nothing: a data
    //! plane on a current-thread runtime (so the thread-local fault reaches
    //! its connections) echoes checksummed payloads through a refused first
    //! pipe and through pipes refused mid-connection, under `splice` and
    //! `auto`.

    use std::net::{IpAddr, SocketAddr};
    use std::time::Duration;

    use lb_core::{
        EndpointSpec, ForwardEngine, NodeSpec, PortSpec, ProxySettings, ServiceSpec, Snapshot,
    };
    use rand::{RngCore, SeedableRng};
    use sha2::{Digest, Sha256};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::fault;
    use crate::DataPlane;

    const BOUND: Duration = Duration::from_secs(20);

    /// An echo backend at `ip` (any free port); runs on the test's runtime.
    async fn echo_backend(ip: IpAddr) -> SocketAddr {
        let listener = TcpListener::bind((ip, 0)).await.expect("bind backend");
        let addr = listener.local_addr().expect("backend address");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = stream.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    let _ = w.shutdown().await;
                });
            }
        });
        addr
    }

    /// A data plane under `engine` with one ClusterIP service at `vip_ip`
    /// over an echo backend at `backend_ip`.
    async fn plane(
        engine: ForwardEngine,
        vip_ip: &str,
        backend_ip: &str,
    ) -> (DataPlane, SocketAddr) {
        let vip_ip: IpAddr = vip_ip.parse().expect("vip");
        let backend = echo_backend(backend_ip.parse().expect("backend ip")).await;
        let port = std::net::TcpListener::bind((vip_ip, 0))
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let service = ServiceSpec::cluster_ip("default", "pipes", vip_ip)
            .with_port(PortSpec::tcp("", port).with_endpoint(EndpointSpec::new(backend)));
        let snapshot = Snapshot::build(
            NodeSpec::default(),
            vec![service],
            None,
            std::time::SystemTime::now(),
        );
        let settings = ProxySettings {
            forward_engine: engine,
            ..ProxySettings::default()
        };
        (
            DataPlane::start(settings, snapshot).await,
            SocketAddr::new(vip_ip, port),
        )
    }

    fn payload(seed: u64) -> Vec<u8> {
        let mut bytes = vec![0u8; 2 << 20];
        rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut bytes);
        bytes
    }

    /// Writes `payload` while reading its echo; the echo's checksum must be
    /// the payload's.
    async fn echo_exactly(client: &mut TcpStream, payload: &[u8]) {
        let (mut r, mut w) = client.split();
        let mut back = vec![0u8; payload.len()];
        let (wrote, read) = tokio::time::timeout(BOUND, async {
            tokio::join!(w.write_all(payload), r.read_exact(&mut back))
        })
        .await
        .expect("the echo within the bound");
        wrote.expect("write: the connection was not reset");
        read.expect("read: the connection was not reset");
        assert_eq!(
            Sha256::digest(&back),
            Sha256::digest(payload),
            "echo differs"
        );
    }

    /// Half-closes and expects the backend's FIN back: a clean close.
    async fn closes_cleanly(mut client: TcpStream) {
        client.shutdown().await.expect("shutdown");
        let mut rest = Vec::new();
        let n = tokio::time::timeout(BOUND, client.read_to_end(&mut rest))
            .await
            .expect("the close within the bound")
            .expect("a FIN, not a reset");
        assert_eq!(n, 0);
    }

    async fn a_refused_first_pipe_copies_every_byte(
        engine: ForwardEngine,
        vip: &str,
        backend: &str,
    ) {
        let (plane, vip) = plane(engine, vip, backend).await;
        fault::fail_after(Some(0));
        let mut client = TcpStream::connect(vip).await.expect("connect");
        echo_exactly(&mut client, &payload(1)).await;
        echo_exactly(&mut client, &payload(2)).await;
        closes_cleanly(client).await;
        assert!(fault::refused() > 0, "a pipe was refused");
        assert_eq!(plane.spliced_bytes(), 0, "no pipe, nothing spliced");
        plane.shutdown().await;
    }

    async fn pipes_refused_mid_connection_copy_every_byte(
        engine: ForwardEngine,
        vip: &str,
        backend: &str,
    ) {
        let (plane, vip) = plane(engine, vip, backend).await;
        let mut client = TcpStream::connect(vip).await.expect("connect");
        echo_exactly(&mut client, &payload(3)).await;
        let spliced = plane.spliced_bytes();
        assert!(spliced > 0, "the first payload was spliced");
        // Both directions gave their pipes back when their sockets drained;
        // the next ones are refused.
        fault::fail_after(Some(0));
        echo_exactly(&mut client, &payload(4)).await;
        assert!(fault::refused() > 0, "a pipe was refused mid-connection");
        fault::fail_after(None);
        echo_exactly(&mut client, &payload(5)).await;
        closes_cleanly(client).await;
        plane.shutdown().await;
    }

    #[tokio::test]
    async fn splice_copies_when_the_first_pipe_is_refused() {
        a_refused_first_pipe_copies_every_byte(
            ForwardEngine::Splice,
            "127.0.151.1",
            "127.0.151.11",
        )
        .await;
    }

    #[tokio::test]
    async fn auto_copies_when_the_first_pipe_is_refused() {
        a_refused_first_pipe_copies_every_byte(ForwardEngine::Auto, "127.0.151.2", "127.0.151.12")
            .await;
    }

    #[tokio::test]
    async fn splice_copies_when_a_pipe_is_refused_mid_connection() {
        pipes_refused_mid_connection_copy_every_byte(
            ForwardEngine::Splice,
            "127.0.151.3",
            "127.0.151.13",
        )
        .await;
    }

    #[tokio::test]
    async fn auto_copies_when_a_pipe_is_refused_mid_connection() {
        pipes_refused_mid_connection_copy_every_byte(
            ForwardEngine::Auto,
            "127.0.151.4",
            "127.0.151.14",
        )
        .await;
    }
}
