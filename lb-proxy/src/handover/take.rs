//! The successor's side of a hand-over: asking the owner for its sockets,
//! then telling it this process serves (or gave up).

use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;

use tracing::{info, warn};

use super::give::unexpected;
use super::wire::{self, Message};
use super::{HandoverError, Sockets, MESSAGE_TIMEOUT};
use crate::sys::fdpass;

/// The owner's sockets, received; the owner serves on as before until
/// [`Offer::commit`].
#[derive(Debug)]
pub struct Offer {
    conn: OwnedFd,
    /// The owner's PID.
    pub owner_pid: u32,
    /// The owner's version.
    pub owner_version: String,
    /// How many descriptors came.
    pub received: usize,
    sockets: Sockets,
}

/// Connects to the owner's control socket at `path` and receives every
/// socket it serves (blocking, each step bounded by [`MESSAGE_TIMEOUT`]).
/// No owner listening there is [`HandoverError::NoOwner`].
pub fn request(path: &Path) -> Result<Offer, HandoverError> {
    let conn = fdpass::connect_seqpacket(path).map_err(|source| HandoverError::NoOwner {
        path: path.to_path_buf(),
        source,
    })?;
    let broke = |pid, stage| move |source| HandoverError::Conversation { pid, stage, source };
    fdpass::set_timeouts(&conn, MESSAGE_TIMEOUT).map_err(broke(0, "setting timeouts"))?;
    let hello = Message::Hello {
        pid: std::process::id(),
        version: wire::version(),
    };
    wire::send(&conn, &hello, &[]).map_err(broke(0, "asking for the sockets"))?;
    let mut received = Vec::new();
    loop {
        let (message, fds) = wire::recv(&conn).map_err(broke(0, "receiving the sockets"))?;
        match message {
            Message::Sockets {
                pid,
                version,
                keys,
                last,
            } => {
                if keys.len() != fds.len() {
                    return Err(broke(pid, "receiving the sockets")(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{} keys for {} descriptors", keys.len(), fds.len()),
                    )));
                }
                received.extend(keys.into_iter().zip(fds));
                if last {
                    let count = received.len();
                    info!(pid, %version, sockets = count, "received the listening sockets");
                    return Ok(Offer {
                        conn,
                        owner_pid: pid,
                        owner_version: version,
                        received: count,
                        sockets: Sockets::inherit(received),
                    });
                }
            }
            other => return Err(broke(0, "receiving the sockets")(unexpected(&other))),
        }
    }
}

impl Offer {
    /// The inventory holding the received sockets, for this process's
    /// parts to claim from.
    pub fn sockets(&self) -> &Sockets {
        &self.sockets
    }

    /// Tells the owner this process serves, so it drains, and waits for its
    /// word. An owner that went away meanwhile is an error the caller
    /// logs: this process holds every socket and serves alone anyway.
    pub fn commit(self) -> Result<u32, HandoverError> {
        let pid = self.owner_pid;
        let broke = |stage| move |source| HandoverError::Conversation { pid, stage, source };
        wire::send(&self.conn, &Message::Ready, &[]).map_err(broke("saying we serve"))?;
        match wire::recv(&self.conn).map_err(broke("waiting for the drain"))? {
            (Message::Draining, _) => Ok(pid),
            (other, _) => Err(broke("waiting for the drain")(unexpected(&other))),
        }
    }

    /// Tells the owner this process could not start, so it keeps serving.
    pub fn abort(self, reason: &str) {
        let abort = Message::Abort {
            reason: reason.to_string(),
        };
        if let Err(e) = wire::send(&self.conn, &abort, &[]) {
            warn!(pid = self.owner_pid, error = %e, "cannot tell the running lb-proxy we gave up");
        }
    }
}
