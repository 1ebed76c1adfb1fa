//! UDP services: a sans-IO flow table ([`flows`]) under a thin tokio shell.
//!
//! Each UDP frontend has one socket (bound even while its service port has no
//! endpoint: datagrams are then dropped and counted, nothing is sent back).
//! Each flow (frontend, client address and port) has a connected socket toward
//! its endpoint. One task per frontend relays both directions: clients'
//! datagrams to their flows' endpoints, and the endpoints' replies back to
//! the client from the address and port the client sent to, also when the
//! frontend is bound to a wildcard address (`IP_PKTINFO`), in batches
//! (`recvmmsg`/`sendmmsg`). `LIFECYCLE.md` beside this file tells a flow's
//! life.

mod flow_log;
pub mod flows;
mod gauge;
mod relay;
pub(crate) mod table;

pub(crate) use relay::serve_frontend;
pub use relay::MAX_DATAGRAM;
