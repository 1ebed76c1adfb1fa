//! Passing descriptors between processes: a `SOCK_SEQPACKET` Unix socket
//! (message boundaries kept, so each message arrives with exactly the
//! descriptors sent with it) and `SCM_RIGHTS`. Through `nix`; the only
//! `unsafe` is taking ownership of the descriptors the kernel hands over.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::Duration;

use nix::sys::socket::{
    accept4, bind, connect, listen, recvmsg, sendmsg, setsockopt, socket, sockopt, AddressFamily,
    Backlog, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, UnixAddr,
};
use nix::sys::time::TimeVal;

/// Descriptors one message may carry (Linux's `SCM_MAX_FD` is 253).
pub(crate) const MAX_FDS_PER_MESSAGE: usize = 200;

/// Takes ownership of a descriptor the kernel just created for us.
fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` was returned by a successful socket(2)/accept4(2) or
    // received with SCM_RIGHTS just now: it is open and nothing else in
    // this process owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// A copy (`dup(2)`, close-on-exec) of `raw`, a descriptor some part of
/// this process registered as served (`handover::Sockets`): what a
/// hand-over sends, so the part's own descriptor is never lent out.
pub(crate) fn dup_registered(raw: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: the caller holds the inventory's lock, and a registration is
    // dropped (under that lock) before its socket closes, so `raw` is open
    // for as long as this borrow, which ends with the copy.
    let fd = unsafe { BorrowedFd::borrow_raw(raw) };
    fd.try_clone_to_owned()
}

/// A listening `SOCK_SEQPACKET` socket at `path` (non-blocking,
/// close-on-exec); a stale file at `path` (an owner that is gone) is
/// removed first.
pub(crate) fn listen_seqpacket(path: &Path) -> io::Result<OwnedFd> {
    let fd = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    bind(fd.as_raw_fd(), &UnixAddr::new(path)?)?;
    listen(&fd, Backlog::new(8)?)?;
    Ok(fd)
}

/// Accepts one connection on a non-blocking listener of
/// [`listen_seqpacket`]; `WouldBlock` when none waits. The connection is
/// blocking, close-on-exec.
pub(crate) fn accept_seqpacket(listener: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let fd = accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC)?;
    Ok(owned(fd))
}

/// Registers a listener of [`listen_seqpacket`] with the current tokio
/// reactor, to wait for connections without a thread.
pub(crate) fn async_listener(fd: OwnedFd) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: the `AsyncFd` owns the `OwnedFd`, which owns the descriptor:
    // it stays open, and the same, until the `AsyncFd` is dropped.
    unsafe { tokio::io::unix::AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)
}

/// Connects to the listener at `path` (blocking, close-on-exec).
pub(crate) fn connect_seqpacket(path: &Path) -> io::Result<OwnedFd> {
    let fd = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    connect(fd.as_raw_fd(), &UnixAddr::new(path)?)?;
    Ok(fd)
}

/// Bounds every send and receive on `fd` by `timeout` (a blocking call
/// then fails with `WouldBlock`).
pub(crate) fn set_timeouts(fd: &OwnedFd, timeout: Duration) -> io::Result<()> {
    let tv = TimeVal::new(
        i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
        i64::from(timeout.subsec_micros()),
    );
    setsockopt(fd, sockopt::ReceiveTimeout, &tv)?;
    setsockopt(fd, sockopt::SendTimeout, &tv)?;
    Ok(())
}

/// Sends one message, `bytes` with `fds` attached (at most
/// [`MAX_FDS_PER_MESSAGE`]).
pub(crate) fn send_with_fds(fd: &OwnedFd, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let rights = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &rights };
    let iov = [IoSlice::new(bytes)];
    let sent = sendmsg::<()>(fd.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None)?;
    if sent != bytes.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "message cut short",
        ));
    }
    Ok(())
}

/// Receives one message into `buf`: its length (0 at end of stream) and the
/// descriptors that came with it, owned (close-on-exec). A message longer
/// than `buf`, or with more descriptors than fit, is an error.
pub(crate) fn recv_with_fds(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS_PER_MESSAGE]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        fd.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(received) = cmsg {
            fds.extend(received.into_iter().map(owned));
        }
    }
    if msg
        .flags
        .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC)
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "message or descriptors cut short",
        ));
    }
    Ok((msg.bytes, fds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_message_arrives_with_exactly_its_descriptors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sock");
        let listener = listen_seqpacket(&path).unwrap();
        let client = connect_seqpacket(&path).unwrap();
        let server = accept_seqpacket(listener.as_fd()).unwrap();
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = tcp.local_addr().unwrap();
        send_with_fds(&server, b"one", &[tcp.as_fd()]).unwrap();
        send_with_fds(&server, b"two", &[]).unwrap();
        let mut buf = [0u8; 64];
        let (n, fds) = recv_with_fds(&client, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"one");
        assert_eq!(fds.len(), 1);
        let received = std::net::TcpListener::from(fds.into_iter().next().unwrap());
        assert_eq!(received.local_addr().unwrap(), addr, "the same socket");
        let (n, fds) = recv_with_fds(&client, &mut buf).unwrap();
        assert_eq!((&buf[..n], fds.len()), (&b"two"[..], 0));
        drop(server);
        assert_eq!(recv_with_fds(&client, &mut buf).unwrap().0, 0, "end");
    }
}
