//! Hot upgrade: a new process takes every listening socket of the running
//! one, so replacing lb-proxy refuses no connection.
//!
//! Closing a listener loses the connections in its accept queue (the kernel
//! resets them; `net.ipv4.tcp_migrate_req` is off by default), so a restart
//! always drops some, and the admin, DNS and health-check ports cannot be
//! bound twice at all. Instead the running process hands the sockets
//! themselves to its successor (`SCM_RIGHTS` over a Unix socket, as HAProxy's
//! `-x` and Envoy's hot restart do): both processes then hold the same
//! sockets, the successor starts accepting on them, and the old one stops
//! accepting and closes its copies, which closes nothing, so no connection
//! in a queue is lost.
//!
//! Map:
//! - [`Sockets`] (`sockets.rs`): the inventory of one process's listening
//!   sockets. Every part that binds claims what was handed over for its
//!   address first and registers what it serves.
//! - `wire.rs`: the conversation's messages, JSON in `SOCK_SEQPACKET`
//!   messages with the descriptors attached.
//! - [`give`]: the owner's side: the control socket, and handing over.
//! - [`take`]: the successor's side: asking, and saying it serves.
//!
//! The conversation, on `RUNTIME_DIR/NODE.sock`:
//!
//! ```text
//! successor                      owner
//!   Hello {pid, version}   ->
//!                          <-    Sockets {keys, last} + descriptors (batches)
//!   (starts, claiming them)
//!   Ready                  ->    (stops accepting, drains, exits)
//!                          <-    Draining
//!   or Abort {reason}      ->    (keeps serving)
//! ```

pub mod give;
mod sockets;
pub mod take;
mod wire;

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use sockets::{Registration, Sockets};

/// How long the owner waits for its successor to say it serves (or gives
/// up) after the sockets were handed over: a start loads the whole config
/// (seconds for 10,000 services), so this is generous. Past it, the owner
/// keeps serving.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long either side waits for any other message.
pub const MESSAGE_TIMEOUT: Duration = Duration::from_secs(5);

/// What a handed-over socket serves; with its address, what a part of the
/// successor claims it by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A service frontend: a cluster IP, node port, external or
    /// LoadBalancer address.
    Service,
    /// The admin API.
    Admin,
    /// The DNS responder (UDP and TCP).
    Dns,
    /// A health-check node port.
    HealthCheck,
    /// The control socket takeovers come through.
    Control,
    /// The node lock file (its lock goes with it).
    NodeLock,
}

/// The kind of descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// A listening TCP socket.
    Tcp,
    /// A bound, unconnected UDP socket.
    Udp,
    /// A listening Unix socket.
    Unix,
    /// A file.
    File,
}

/// Names one handed-over descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SocketKey {
    /// What it serves.
    pub role: Role,
    /// What kind of descriptor it is.
    pub transport: Transport,
    /// Where it is bound (none for the control socket and the lock).
    pub addr: Option<SocketAddr>,
}

impl SocketKey {
    /// A TCP listener of `role` at `addr`.
    pub fn tcp(role: Role, addr: SocketAddr) -> SocketKey {
        SocketKey {
            role,
            transport: Transport::Tcp,
            addr: Some(addr),
        }
    }

    /// A UDP socket of `role` at `addr`.
    pub fn udp(role: Role, addr: SocketAddr) -> SocketKey {
        SocketKey {
            role,
            transport: Transport::Udp,
            addr: Some(addr),
        }
    }

    /// The control socket.
    pub fn control() -> SocketKey {
        SocketKey {
            role: Role::Control,
            transport: Transport::Unix,
            addr: None,
        }
    }

    /// The node lock.
    pub fn node_lock() -> SocketKey {
        SocketKey {
            role: Role::NodeLock,
            transport: Transport::File,
            addr: None,
        }
    }
}

impl std::fmt::Display for SocketKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let role = match self.role {
            Role::Service => "service",
            Role::Admin => "admin",
            Role::Dns => "dns",
            Role::HealthCheck => "health-check",
            Role::Control => "control",
            Role::NodeLock => "node-lock",
        };
        let transport = match self.transport {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
            Transport::Unix => "unix",
            Transport::File => "file",
        };
        match self.addr {
            Some(addr) => write!(f, "{role} {addr}/{transport}"),
            None => write!(f, "{role}"),
        }
    }
}

/// Why a hand-over failed.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    /// No process listens on the control socket (none runs, or it drains).
    #[error("no lb-proxy to take over at {path}: {source}")]
    NoOwner {
        /// The control socket.
        path: std::path::PathBuf,
        /// What connecting said.
        #[source]
        source: std::io::Error,
    },
    /// The conversation broke (the other process went away, timed out, or
    /// said something unexpected).
    #[error("hand-over with pid {pid} failed while {stage}: {source}")]
    Conversation {
        /// The other process, when known (0 before it said).
        pid: u32,
        /// What was being done.
        stage: &'static str,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// The successor gave up after the sockets were handed over.
    #[error("the new lb-proxy (pid {pid}) could not start: {reason}")]
    Aborted {
        /// The successor.
        pid: u32,
        /// Its words.
        reason: String,
    },
}
