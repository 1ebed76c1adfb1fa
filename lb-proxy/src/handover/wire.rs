//! The messages of a hand-over: JSON, one per `SOCK_SEQPACKET` message, the
//! descriptors of a [`Message::Sockets`] batch attached to it in the order
//! of its keys.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use serde::{Deserialize, Serialize};

use super::SocketKey;
use crate::sys::fdpass;

/// Largest message: a batch of [`fdpass::MAX_FDS_PER_MESSAGE`] keys is far
/// below it.
const MAX_MESSAGE: usize = 256 * 1024;

/// One message of the conversation (see the module map in `handover`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum Message {
    /// Successor → owner: hand me your sockets.
    Hello {
        /// The successor.
        pid: u32,
        /// Its version.
        version: String,
    },
    /// Owner → successor: a batch of sockets.
    Sockets {
        /// The owner.
        pid: u32,
        /// Its version.
        version: String,
        /// One per attached descriptor, in order.
        keys: Vec<SocketKey>,
        /// Whether this is the last batch.
        last: bool,
    },
    /// Successor → owner: I serve on them; drain.
    Ready,
    /// Successor → owner: I could not start; keep serving.
    Abort {
        /// Why.
        reason: String,
    },
    /// Owner → successor: draining now.
    Draining,
}

/// Sends `message` with `fds` attached.
pub(super) fn send(conn: &OwnedFd, message: &Message, fds: &[OwnedFd]) -> io::Result<()> {
    let bytes = serde_json::to_vec(message).map_err(io::Error::other)?;
    let borrowed: Vec<_> = fds.iter().map(AsFd::as_fd).collect();
    fdpass::send_with_fds(conn, &bytes, &borrowed)
}

/// Receives one message and the descriptors attached to it; the end of the
/// stream is `UnexpectedEof`.
pub(super) fn recv(conn: &OwnedFd) -> io::Result<(Message, Vec<OwnedFd>)> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    let (n, fds) = fdpass::recv_with_fds(conn, &mut buf)?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the other process closed the connection",
        ));
    }
    let message = serde_json::from_slice(&buf[..n])
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok((message, fds))
}

/// This build's version, as both sides log it.
pub(super) fn version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}
