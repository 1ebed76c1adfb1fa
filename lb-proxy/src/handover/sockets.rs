//! [`Sockets`]: the listening sockets of one process, those it serves (to
//! hand over) and those handed to it (to claim).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use socket2::{SockRef, Type};
use tracing::{debug, warn};

use super::{Role, SocketKey, Transport};

/// The listening sockets of one process. Every part that binds (the data
/// plane's frontends, the admin API, DNS, the health-check node ports, the
/// binary's control socket and node lock) first [`claims`](Sockets::take_tcp)
/// what a previous owner handed over for its address, binds only what is
/// missing, and [`registers`](Sockets::register) what it serves, so that a
/// takeover can hand every one of them on. Cloning is shallow.
#[derive(Clone, Default)]
pub struct Sockets {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Handed over by the previous owner and not claimed yet.
    inherited: Mutex<Vec<(SocketKey, OwnedFd)>>,
    /// Served now, by registration id.
    serving: Mutex<BTreeMap<u64, (SocketKey, RawFd)>>,
    next: AtomicU64,
    /// Whether this process took over from another.
    took_over: bool,
}

impl std::fmt::Debug for Sockets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sockets")
            .field("inherited", &lock(&self.inner.inherited).len())
            .field("serving", &lock(&self.inner.serving).len())
            .finish()
    }
}

impl PartialEq for Sockets {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Eq for Sockets {}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the value whole.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A socket counted as served until dropped: drop it before the socket
/// closes (declare it after the socket), so a hand-over never sends a
/// descriptor number that was closed and reused.
#[must_use = "the socket is served only while its registration lives"]
pub struct Registration {
    inner: Weak<Inner>,
    id: u64,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("id", &self.id)
            .finish()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.upgrade() {
            lock(&inner.serving).remove(&self.id);
        }
    }
}

impl Sockets {
    /// An inventory with nothing inherited: every part binds its own.
    pub fn new() -> Sockets {
        Sockets::default()
    }

    /// An inventory holding what a previous owner handed over.
    pub fn inherit(sockets: Vec<(SocketKey, OwnedFd)>) -> Sockets {
        Sockets {
            inner: Arc::new(Inner {
                inherited: Mutex::new(sockets),
                took_over: true,
                ..Inner::default()
            }),
        }
    }

    /// Whether these sockets were handed over by a previous owner (this
    /// process took over): parts then adopt what the owner left in place
    /// (interface VIPs) instead of starting clean.
    pub fn took_over(&self) -> bool {
        self.inner.took_over
    }

    /// Counts `fd` as served under `key` while the registration lives.
    pub fn register(&self, key: SocketKey, fd: BorrowedFd<'_>) -> Registration {
        let id = self.inner.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.inner.serving).insert(id, (key, std::os::fd::AsRawFd::as_raw_fd(&fd)));
        Registration {
            inner: Arc::downgrade(&self.inner),
            id,
        }
    }

    /// Copies (`dup(2)`) of every socket served now, with their keys: what
    /// a hand-over sends. Copies, so that no lock is held while they are
    /// sent and no descriptor number can be reused under the sender; a
    /// listener closed meanwhile lives on only until the copies are dropped.
    pub fn serving(&self) -> Vec<(SocketKey, OwnedFd)> {
        let serving = lock(&self.inner.serving);
        let mut copies = Vec::with_capacity(serving.len());
        for (key, raw) in serving.values() {
            // A registered descriptor is open while registered (the
            // registration drops before the socket closes), and holding the
            // lock keeps registrations from dropping while we copy.
            match crate::sys::dup_registered(*raw) {
                Ok(copy) => copies.push((*key, copy)),
                Err(e) => warn!(?key, error = %e, "cannot copy a socket to hand over"),
            }
        }
        copies
    }

    /// How many sockets are served now.
    pub fn serving_count(&self) -> usize {
        lock(&self.inner.serving).len()
    }

    /// Claims the inherited TCP listeners of `role` at `addr` (port 0
    /// matches any port on that address): sockets that are listening
    /// stream sockets on that address; anything else handed over under
    /// that key is closed (here; the owner's copy is untouched).
    pub fn take_tcp(&self, role: Role, addr: SocketAddr) -> Vec<std::net::TcpListener> {
        self.take(role, Transport::Tcp, addr, |fd| {
            let s = SockRef::from(fd);
            s.r#type().ok() == Some(Type::STREAM) && s.is_listener().unwrap_or(false)
        })
        .into_iter()
        .map(std::net::TcpListener::from)
        .collect()
    }

    /// Claims the inherited UDP sockets of `role` at `addr` (as
    /// [`Sockets::take_tcp`]).
    pub fn take_udp(&self, role: Role, addr: SocketAddr) -> Vec<std::net::UdpSocket> {
        self.take(role, Transport::Udp, addr, |fd| {
            let s = SockRef::from(fd);
            s.r#type().ok() == Some(Type::DGRAM) && s.peer_addr().is_err()
        })
        .into_iter()
        .map(std::net::UdpSocket::from)
        .collect()
    }

    /// Claims the one inherited descriptor of `role` that has no address
    /// (the control socket, the node lock).
    pub fn take_unaddressed(&self, role: Role) -> Option<OwnedFd> {
        let mut inherited = lock(&self.inner.inherited);
        let at = inherited.iter().position(|(k, _)| k.role == role)?;
        Some(inherited.swap_remove(at).1)
    }

    fn take(
        &self,
        role: Role,
        transport: Transport,
        addr: SocketAddr,
        valid: impl Fn(&OwnedFd) -> bool,
    ) -> Vec<OwnedFd> {
        let mut inherited = lock(&self.inner.inherited);
        if inherited.is_empty() {
            return Vec::new();
        }
        let matches = |k: &SocketKey| {
            k.role == role
                && k.transport == transport
                && k.addr
                    .is_some_and(|a| a == addr || (addr.port() == 0 && a.ip() == addr.ip()))
        };
        let mut taken = Vec::new();
        let mut rest = Vec::with_capacity(inherited.len());
        for (key, fd) in inherited.drain(..) {
            if !matches(&key) {
                rest.push((key, fd));
                continue;
            }
            let local = SockRef::from(&fd)
                .local_addr()
                .ok()
                .and_then(|a| a.as_socket());
            let same_addr = local.is_some_and(|l| l == key.addr.unwrap_or(l));
            if same_addr && valid(&fd) {
                if let Err(e) = SockRef::from(&fd).set_nonblocking(true) {
                    warn!(?key, error = %e, "cannot use a handed-over socket; binding anew");
                    continue;
                }
                debug!(?key, "claimed a handed-over socket");
                taken.push(fd);
            } else {
                warn!(
                    ?key,
                    ?local,
                    "a handed-over socket is not what its key says; closing it"
                );
            }
        }
        *inherited = rest;
        taken
    }

    /// Closes what was handed over for one of `roles` and not claimed (a
    /// frontend the new config no longer has), and returns their keys. The
    /// previous owner's copies are untouched; once it closes them too, they
    /// are gone.
    pub fn close_unclaimed(&self, roles: &[Role]) -> Vec<SocketKey> {
        let mut inherited = lock(&self.inner.inherited);
        let (closed, kept): (Vec<_>, Vec<_>) = inherited
            .drain(..)
            .partition(|(key, _)| roles.contains(&key.role));
        *inherited = kept;
        closed.into_iter().map(|(key, _fd)| key).collect()
    }

    /// How many inherited sockets wait to be claimed.
    pub fn unclaimed_count(&self) -> usize {
        lock(&self.inner.inherited).len()
    }
}
