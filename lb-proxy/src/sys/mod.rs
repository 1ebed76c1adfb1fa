//! System calls and socket options, in one place: the only module of lb
//! where `unsafe` is allowed (`unsafe_code` is denied everywhere else, and
//! clippy's `undocumented_unsafe_blocks` asks a `// SAFETY:` comment of each
//! block here).
//!
//! One file per job:
//! - [`sockopt`]: binding service listeners and UDP frontends, flow sockets,
//!   `TCP_NODELAY`, resets, half-closes, and the open-file limit. Safe: what
//!   `socket2` lacks comes from `nix`.
//! - [`udp`]: batched datagram I/O (`recvmmsg(2)`/`sendmmsg(2)`) with the
//!   `IP_PKTINFO`/`IPV6_PKTINFO` control messages. Direct calls: the hot UDP
//!   path, where `nix` would cost (the file says why).
//! - [`ifaddrs`]: this host's own addresses (`getifaddrs(3)`, through
//!   `nix`), for the self-loop check of wildcard-bound frontends.
//! - [`pipe`]: pipes and `splice(2)` for the splice engine, through `nix`.
//! - [`packet`]: one raw Ethernet frame out of an `AF_PACKET` socket (the
//!   gratuitous ARP of interface mode).
//! - [`fdpass`]: descriptors passed between processes (`SCM_RIGHTS` over a
//!   `SOCK_SEQPACKET` Unix socket), for hot upgrades.
//! - [`memory`]: `malloc_trim(3)`, giving what a large load freed back to
//!   the system.
//! - [`process`]: `killpg(2)`, so an exec probe's whole process group goes.

pub(crate) mod fdpass;
mod ifaddrs;
mod memory;
#[cfg(feature = "vip")]
mod packet;
#[cfg(target_os = "linux")]
mod pipe;
mod process;
mod sockopt;
mod udp;

pub(crate) use fdpass::dup_registered;
pub(crate) use ifaddrs::local_addresses;
pub(crate) use memory::release_free_memory;
#[cfg(feature = "vip")]
pub(crate) use packet::send_ethernet_frame;
#[cfg(target_os = "linux")]
pub(crate) use pipe::{pipe, splice};
pub(crate) use process::kill_process_group;
pub(crate) use sockopt::{
    bind_service_listener, bind_udp_frontend, connect_udp_flow, nofile_limit, raise_nofile_limit,
    reset, set_nodelay, shutdown_write,
};
pub(crate) use udp::{try_recv_batch, try_send_batch, Outgoing, RecvBatch};
