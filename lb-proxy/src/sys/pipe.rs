//! Pipes and `splice(2)` for the splice engine (Linux), through `nix`: both
//! calls are thin (no allocation or copy; `splice` is generic over `AsFd`
//! and compiles to the system call and an errno check), so the hot path
//! loses nothing to the safe wrappers.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use nix::fcntl::{fcntl, splice as nix_splice, FcntlArg, OFlag, SpliceFFlags};
use nix::unistd::pipe2;

/// A pipe for the splice engine: non-blocking, close-on-exec, asked to hold
/// `size` bytes (`F_SETPIPE_SZ`, best effort). Returns (read end, write end,
/// capacity in bytes).
pub(crate) fn pipe(size: usize) -> io::Result<(OwnedFd, OwnedFd, usize)> {
    let (r, w) = pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
    let size = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
    let cap = match fcntl(&w, FcntlArg::F_SETPIPE_SZ(size)) {
        Ok(cap) => cap,
        // Above fs.pipe-max-size (or out of pipe quota): keep the default size.
        Err(_) => fcntl(&w, FcntlArg::F_GETPIPE_SZ)?,
    };
    let cap = usize::try_from(cap).unwrap_or(0).max(4096);
    Ok((r, w, cap))
}

/// Moves up to `len` bytes from `from` to `to` inside the kernel, one of
/// them a pipe (`splice(2)` with `SPLICE_F_MOVE | SPLICE_F_NONBLOCK`): the
/// payload never enters user space. `WouldBlock` when the socket has nothing
/// to give or no room to take; `Ok(0)` at EOF.
#[inline]
pub(crate) fn splice(from: impl AsFd, to: impl AsFd, len: usize) -> io::Result<usize> {
    Ok(nix_splice(
        from,
        None,
        to,
        None,
        len,
        SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK,
    )?)
}
