//! `vip_mode = "interface"`: lb-proxy owns the addresses it serves.
//!
//! [`Vips`] follows the data plane's table: every cluster IP, external IP and
//! LoadBalancer address of the current snapshot is added to `vip_interface`
//! (a dummy device created when missing, as kube-proxy's IPVS mode creates
//! `kube-ipvs0`, or an existing one such as `lo`), and removed when its
//! service goes. Each LoadBalancer address it adds is announced on
//! `announce_interface` (MetalLB's layer-2 mode): a gratuitous ARP for IPv4,
//! an unsolicited neighbour advertisement for IPv6.
//!
//! Ownership is explicit: an address that is already on the host (127.0.0.1,
//! an address an operator added) is left alone, and only addresses carrying
//! lb-proxy's mark (see the `netlink` module) are ever deleted, at start (leftovers of
//! a process that was killed) and at stop. Listeners bind with `IP_FREEBIND`
//! in this mode, so they never race the address.

mod arp;
mod netlink;

use std::collections::BTreeSet;
use std::io;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lb_core::{ServiceType, Snapshot};
use rtnetlink::Handle;
use tracing::{debug, info, warn};

use crate::control::follow::{follow, Follower, Reconciled};
use crate::dataplane::DataPlane;
use crate::lifecycle::Tasks;

/// Where interface mode puts and announces addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipOptions {
    /// `node.vip_interface`: where addresses are added.
    pub interface: String,
    /// `node.announce_interface`: where LoadBalancer addresses are announced;
    /// empty = no announcement.
    pub announce_interface: String,
    /// Take over the marked addresses already on the device instead of
    /// removing them first: a process that took the sockets over from a
    /// running one ([`crate::handover`]) keeps its addresses in place, so
    /// no packet finds the address gone.
    pub adopt: bool,
}

/// Interface mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum VipError {
    /// No netlink socket (not Linux, or no permission).
    #[error("interface VIPs: cannot open a netlink socket: {0}")]
    Netlink(io::Error),
    /// The VIP device neither exists nor could be created (no
    /// `CAP_NET_ADMIN`, or the kernel has no dummy devices: use an existing
    /// interface such as `lo`).
    #[error("interface VIPs: {interface}: {source}")]
    Interface {
        /// `node.vip_interface`.
        interface: String,
        /// What netlink said.
        source: io::Error,
    },
}

/// The addresses a snapshot serves: (all, LoadBalancer ones).
pub fn desired(snapshot: &Snapshot) -> (BTreeSet<IpAddr>, BTreeSet<IpAddr>) {
    let mut all = BTreeSet::new();
    let mut lb = BTreeSet::new();
    for s in snapshot.services() {
        let spec = &s.spec;
        if spec.service_type == ServiceType::ExternalName || spec.ports.is_empty() {
            continue;
        }
        // Headless services open no listener and so get no address.
        let Some(cluster_ip) = spec.cluster_ip.ip() else {
            continue;
        };
        all.insert(cluster_ip);
        all.extend(spec.external_ips.iter().copied());
        all.extend(spec.load_balancer_ips.iter().copied());
        lb.extend(spec.load_balancer_ips.iter().copied());
    }
    (all, lb)
}

struct State {
    handle: Handle,
    /// The netlink connection and the repeated announcements: they must
    /// outlive the follower, since stopping removes addresses over netlink.
    tasks: Tasks,
    /// The follower, stopped first.
    following: Tasks,
    options: VipOptions,
    link: netlink::Link,
    /// Addresses lb-proxy added and still holds.
    owned: Mutex<BTreeSet<IpAddr>>,
    /// Gratuitous ARPs sent (for tests and logs).
    announced: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("options", &self.options)
            .field("owned", &self.owned())
            .finish_non_exhaustive()
    }
}

impl State {
    fn owned(&self) -> BTreeSet<IpAddr> {
        self.owned.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn vip(&self) -> (u32, &str) {
        (self.link.index, self.options.interface.as_str())
    }

    /// Makes the owned addresses match `snapshot`. Errors are per address:
    /// one failure does not stop the others; the caller retries.
    async fn reconcile(&self, snapshot: &Snapshot) -> io::Result<()> {
        let (want, lb) = desired(snapshot);
        let present = netlink::addresses(&self.handle, self.vip()).await?;
        let mut owned = BTreeSet::new();
        let mut failed = None;
        // Remove what is ours and no longer wanted.
        for (ip, entries) in &present {
            for (msg, mine) in entries {
                if !*mine {
                    continue;
                }
                if want.contains(ip) {
                    owned.insert(*ip);
                    continue;
                }
                match netlink::delete(&self.handle, msg.clone()).await {
                    Ok(()) => {
                        info!(address = %ip, interface = %self.options.interface, "removed VIP")
                    }
                    Err(e) => {
                        warn!(address = %ip, error = %e, "cannot remove VIP");
                        failed = Some(e);
                    }
                }
            }
        }
        // Add what is wanted and not on the host at all.
        for ip in &want {
            if present.contains_key(ip) {
                continue;
            }
            match netlink::add(&self.handle, self.vip(), *ip).await {
                Ok(()) => {
                    info!(address = %ip, interface = %self.options.interface, "added VIP");
                    owned.insert(*ip);
                    if lb.contains(ip) {
                        self.announce(*ip).await;
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    debug!(address = %ip, "address appeared meanwhile; not ours");
                }
                Err(e) => {
                    warn!(address = %ip, error = %e, "cannot add VIP");
                    failed = Some(e);
                }
            }
        }
        *self.owned.lock().unwrap_or_else(|e| e.into_inner()) = owned;
        failed.map_or(Ok(()), Err)
    }

    /// Announces a LoadBalancer address on the announce interface: a
    /// gratuitous ARP (IPv4) or an unsolicited neighbour advertisement
    /// (IPv6), twice, a second apart (as `arping -U -c 2` would).
    async fn announce(&self, ip: IpAddr) {
        let name = &self.options.announce_interface;
        if name.is_empty() {
            return;
        }
        let link = match netlink::link(&self.handle, name).await {
            Ok(Some(l)) => l,
            Ok(None) => {
                warn!(interface = %name, "announce_interface does not exist");
                return;
            }
            Err(e) => {
                warn!(interface = %name, error = %e, "cannot read announce_interface");
                return;
            }
        };
        let Some(mac) = link.mac else {
            debug!(interface = %name, "no Ethernet address; nothing to announce");
            return;
        };
        let (frame, dst): (Vec<u8>, [u8; 6]) = match ip {
            IpAddr::V4(v4) => (arp::gratuitous_arp(mac, v4).to_vec(), arp::BROADCAST),
            IpAddr::V6(v6) => (arp::unsolicited_na(mac, v6).to_vec(), arp::ALL_NODES_MAC),
        };
        match crate::sys::send_ethernet_frame(link.index, dst, &frame) {
            Ok(()) => {
                self.announced
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                info!(address = %ip, interface = %name, "announced (gratuitous ARP / unsolicited NA)");
                let index = link.index;
                let stop = self.tasks.token().clone();
                self.tasks.spawn(async move {
                    tokio::select! {
                        () = stop.cancelled() => {}
                        () = tokio::time::sleep(Duration::from_secs(1)) => {
                            let _ = crate::sys::send_ethernet_frame(index, dst, &frame);
                        }
                    }
                });
            }
            Err(e) => {
                warn!(address = %ip, interface = %name, error = %e, "cannot send gratuitous ARP")
            }
        }
    }

    /// Deletes every address carrying lb-proxy's mark on the VIP device.
    async fn remove_all(&self) -> io::Result<usize> {
        let present = netlink::addresses(&self.handle, self.vip()).await?;
        let mut n = 0;
        for (ip, entries) in present {
            for (msg, mine) in entries {
                if mine {
                    netlink::delete(&self.handle, msg).await?;
                    info!(address = %ip, interface = %self.options.interface, "removed VIP");
                    n += 1;
                }
            }
        }
        self.owned.lock().unwrap_or_else(|e| e.into_inner()).clear();
        Ok(n)
    }
}

/// The running interface-mode manager. Cloning is shallow.
#[derive(Debug, Clone)]
pub struct Vips {
    state: Arc<State>,
}

impl Vips {
    /// Opens netlink, finds (or creates) the VIP device, removes leftovers of
    /// an earlier run, adds the current table's addresses, and follows the
    /// table from then on, on `tasks`.
    pub async fn start(
        dataplane: &DataPlane,
        options: VipOptions,
        tasks: Tasks,
    ) -> Result<Vips, VipError> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(VipError::Netlink)?;
        let netlink_stop = tasks.token().clone();
        tasks.spawn(async move {
            tokio::select! {
                () = netlink_stop.cancelled() => {}
                () = connection => {}
            }
        });
        let (link, created) = match netlink::ensure_dummy(&handle, &options.interface).await {
            Ok(found) => found,
            Err(source) => {
                tasks.stop().await;
                return Err(VipError::Interface {
                    interface: options.interface.clone(),
                    source,
                });
            }
        };
        if created {
            info!(interface = %options.interface, "created dummy VIP device");
        }
        let state = Arc::new(State {
            handle,
            following: tasks.child(),
            tasks: tasks.clone(),
            options,
            link,
            owned: Mutex::new(BTreeSet::new()),
            announced: std::sync::atomic::AtomicU64::new(0),
        });
        if !state.options.adopt {
            match state.remove_all().await {
                Ok(0) => {}
                Ok(n) => info!(count = n, "removed VIPs left by an earlier run"),
                Err(e) => warn!(error = %e, "cannot clean up VIPs of an earlier run"),
            }
        }
        let mut follower = Reconciler(state.clone());
        // The first reconcile runs now, so the addresses are in place when
        // start returns; `follow` then runs it again on every snapshot.
        follower.reconcile(dataplane.table().load()).await;
        let dataplane = dataplane.clone();
        let stop = state.following.token().clone();
        state
            .following
            .spawn(async move { follow(&dataplane, &stop, &mut follower).await });
        Ok(Vips { state })
    }

    /// The addresses lb-proxy holds on the VIP device now.
    pub fn owned(&self) -> BTreeSet<IpAddr> {
        self.state.owned()
    }

    /// Gratuitous ARPs sent so far (first sends; repeats not counted).
    pub fn announcements(&self) -> u64 {
        self.state
            .announced
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops following the table and leaves the addresses in place, for the
    /// process that took the sockets over to adopt.
    pub async fn hand_over(&self) {
        self.state.following.stop().await;
        self.state.tasks.stop().await;
    }

    /// Stops following the table and removes every address lb-proxy added
    /// (and only those).
    pub async fn stop(&self) {
        // The netlink connection must outlive the removal: stop the
        // follower first, remove, then stop the rest.
        self.state.following.stop().await;
        if let Err(e) = self.state.remove_all().await {
            warn!(error = %e, "cannot remove VIPs at exit");
        }
        self.state.tasks.stop().await;
    }
}

/// Keeps the VIP device's addresses in step with the table.
struct Reconciler(Arc<State>);

impl Follower for Reconciler {
    async fn reconcile(&mut self, snapshot: Arc<Snapshot>) -> Reconciled {
        match self.0.reconcile(&snapshot).await {
            Ok(()) => Reconciled::Done,
            Err(e) => {
                warn!(error = %e, "VIP reconcile failed; retrying");
                Reconciled::Retry
            }
        }
    }
}
