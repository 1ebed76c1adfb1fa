//! The owner's side of a hand-over: the control socket, and giving every
//! socket it serves to a successor that asks.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use tokio::io::unix::AsyncFd;
use tracing::{info, warn};

use super::wire::{self, Message};
use super::{
    HandoverError, Registration, Role, SocketKey, Sockets, MESSAGE_TIMEOUT, START_TIMEOUT,
};
use crate::sys::fdpass;

/// The listening control socket a successor connects to
/// (`RUNTIME_DIR/NODE.sock`), itself handed over with the rest so the next
/// takeover finds it.
pub struct ControlSocket {
    /// Dropped before `fd`: a hand-over never sends a closed descriptor.
    _registration: Registration,
    fd: AsyncFd<OwnedFd>,
    path: PathBuf,
}

impl std::fmt::Debug for ControlSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlSocket")
            .field("path", &self.path)
            .finish()
    }
}

impl ControlSocket {
    /// The control socket at `path`: the one a previous owner handed over
    /// in `sockets`, else a new one (replacing a stale file). Must be called
    /// in a tokio runtime; the caller holds the node, so no other live owner
    /// listens at `path`.
    pub fn open(path: &Path, sockets: &Sockets) -> io::Result<ControlSocket> {
        let fd = match sockets.take_unaddressed(Role::Control) {
            Some(fd) => fd,
            None => fdpass::listen_seqpacket(path)?,
        };
        let registration = sockets.register(SocketKey::control(), fd.as_fd());
        Ok(ControlSocket {
            _registration: registration,
            fd: fdpass::async_listener(fd)?,
            path: path.to_path_buf(),
        })
    }

    /// Where it listens.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for the next successor to connect.
    pub async fn accept(&self) -> io::Result<OwnedFd> {
        loop {
            let mut ready = self.fd.readable().await?;
            match fdpass::accept_seqpacket(self.fd.get_ref().as_fd()) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => ready.clear_ready(),
                other => return other,
            }
        }
    }

    /// Stops listening and removes the file, so that the next process
    /// binds its own (a drain, not a hand-over: a handed-over control
    /// socket stays, its file with it).
    pub fn close_and_remove(self) {
        let path = self.path.clone();
        drop(self);
        if let Err(e) = std::fs::remove_file(&path) {
            if e.kind() != io::ErrorKind::NotFound {
                warn!(path = %path.display(), error = %e, "cannot remove the control socket");
            }
        }
    }
}

/// A successor that serves now: the owner stops accepting, then
/// [`Successor::confirm`]s, then drains.
#[derive(Debug)]
pub struct Successor {
    /// Its PID.
    pub pid: u32,
    /// Its version.
    pub version: String,
    /// How many sockets it was given.
    pub sockets: usize,
    conn: OwnedFd,
}

impl Successor {
    /// Tells the successor this process no longer accepts (it logs "took
    /// over" on this word, so the log never claims more than is true). A
    /// successor that went away meanwhile changes nothing: this process
    /// drains anyway.
    pub fn confirm(self) {
        if let Err(e) = wire::send(&self.conn, &Message::Draining, &[]) {
            warn!(pid = self.pid, error = %e, "cannot tell the new process we drain; draining anyway");
        }
    }
}

/// Hands every socket `sockets` serves to the successor on `conn` and waits
/// (up to [`START_TIMEOUT`]) for it to serve. `Ok` means it serves and this
/// process must stop accepting, [`Successor::confirm`], and drain; an error
/// means this process keeps serving (its sockets were never touched). The
/// conversation runs on a blocking thread.
pub async fn give(conn: OwnedFd, sockets: &Sockets) -> Result<Successor, HandoverError> {
    let sockets = sockets.clone();
    match tokio::task::spawn_blocking(move || give_blocking(conn, &sockets)).await {
        Ok(outcome) => outcome,
        Err(e) => Err(HandoverError::Conversation {
            pid: 0,
            stage: "handing over",
            source: io::Error::other(e),
        }),
    }
}

fn give_blocking(conn: OwnedFd, sockets: &Sockets) -> Result<Successor, HandoverError> {
    let (pid, version, sockets) = converse(&conn, sockets)?;
    Ok(Successor {
        pid,
        version,
        sockets,
        conn,
    })
}

/// The conversation up to the successor's `Ready`: its PID, its version and
/// how many sockets it was given.
fn converse(conn: &OwnedFd, sockets: &Sockets) -> Result<(u32, String, usize), HandoverError> {
    let broke = |pid, stage| move |source| HandoverError::Conversation { pid, stage, source };
    fdpass::set_timeouts(conn, MESSAGE_TIMEOUT).map_err(broke(0, "setting timeouts"))?;
    let (pid, version) = match wire::recv(conn).map_err(broke(0, "reading the request"))? {
        (Message::Hello { pid, version }, _) => (pid, version),
        (other, _) => {
            return Err(broke(0, "reading the request")(unexpected(&other)));
        }
    };
    info!(pid, %version, "takeover requested; handing over the listening sockets");
    let ids = sockets.serving_ids();
    let me = std::process::id();
    let mut batches = ids.chunks(fdpass::MAX_FDS_PER_MESSAGE).peekable();
    let mut count = 0;
    if batches.peek().is_none() {
        let empty = Message::Sockets {
            pid: me,
            version: wire::version(),
            keys: Vec::new(),
            last: true,
        };
        wire::send(conn, &empty, &[]).map_err(broke(pid, "sending the sockets"))?;
    }
    while let Some(batch) = batches.next() {
        let copies = sockets.copy(batch);
        count += copies.len();
        let message = Message::Sockets {
            pid: me,
            version: wire::version(),
            keys: copies.iter().map(|(k, _)| *k).collect(),
            last: batches.peek().is_none(),
        };
        let fds: Vec<OwnedFd> = copies.into_iter().map(|(_, fd)| fd).collect();
        wire::send(conn, &message, &fds).map_err(broke(pid, "sending the sockets"))?;
    }
    fdpass::set_timeouts(conn, START_TIMEOUT).map_err(broke(pid, "setting timeouts"))?;
    match wire::recv(conn).map_err(broke(pid, "waiting for the new process to start"))? {
        (Message::Ready, _) => {}
        (Message::Abort { reason }, _) => return Err(HandoverError::Aborted { pid, reason }),
        (other, _) => {
            return Err(broke(pid, "waiting for the new process to start")(
                unexpected(&other),
            ))
        }
    }
    Ok((pid, version, count))
}

pub(super) fn unexpected(message: &Message) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("unexpected message {message:?}"),
    )
}
