//! The sans-IO UDP flow table: which endpoint each client's datagrams go to.
//!
//! No sockets and no clock: every call takes the current [`Snapshot`] and `now`,
//! so the seeded simulation in `tests/it/udp_flow_sim.rs` drives it through
//! millions of steps in seconds and checks its invariants after each one. The
//! tokio shell around it (`udp::relay`, `udp::table`) owns the sockets and attaches them to
//! flows through the `io` payload `T`. `LIFECYCLE.md` beside this file tells a
//! flow's life from first datagram to expiry.
//!
//! Invariants the table keeps (and the simulation checks):
//! - no flow points at an endpoint that is not a candidate of its frontend in
//!   the latest snapshot given to [`FlowTable::apply`] or
//!   [`FlowTable::client_datagram`];
//! - no flow is older than the idle timeout, measured from the last datagram in
//!   either direction;
//! - the table never holds more than its bound; at the bound the flow idle
//!   longest is evicted for the new one;
//! - a flow keeps its endpoint while the flow and the endpoint both live (and
//!   no send to it failed).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lb_core::stats::{self, EndpointStats, PortStats};

use super::flow_log::{FlowEnd, FlowLog};
pub use super::gauge::Counters;
use super::gauge::Gauge;
use crate::dataplane::access::Rejected;
use crate::dataplane::forward::ConnBytes;
use lb_core::{FrontendEntry, PickReason, Protocol, ServicePortKey, Snapshot};

/// A flow's identity: the frontend a client sent to, the address it sent to,
/// and the client's address and port. Two sockets of one client are two flows
/// (as in kube-proxy's conntrack), so each gets its own endpoint choice and
/// reply path; so are one client socket's datagrams to two addresses of a
/// wildcard frontend, whose replies must each come from their own address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    /// The bound frontend address (may be a wildcard such as `0.0.0.0:30053`).
    pub frontend: SocketAddr,
    /// The address the client sent to: the frontend's own address, or on a
    /// wildcard frontend the one the datagram was addressed to (`IP_PKTINFO`).
    pub local: IpAddr,
    /// The client's address and port.
    pub client: SocketAddr,
}

/// What to do with a datagram from a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send it to `endpoint` on the flow's socket (open one first when the flow
    /// has no `io`: it is new or has moved).
    Forward {
        /// Where the datagram goes.
        endpoint: SocketAddr,
        /// How the flow got here.
        change: Change,
    },
    /// Drop it silently (counted); nothing goes back to the client.
    Drop(DropReason),
}

/// How a forwarded datagram's flow relates to the one before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The flow existed and keeps its endpoint.
    Kept,
    /// A new flow (first datagram, or the previous flow expired or was evicted).
    New,
    /// The flow's endpoint left (or stopped being a candidate): re-pointed.
    Moved {
        /// The endpoint it had.
        from: SocketAddr,
    },
    /// A send to the flow's endpoint had failed: failed over to the next one.
    FailedOver {
        /// The endpoint that failed.
        from: SocketAddr,
    },
}

/// Why a datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The frontend is not in the snapshot (the service went away).
    NoFrontend,
    /// The service port has no endpoint that may take new flows.
    NoEndpoints,
    /// The client is outside the LoadBalancer frontend's
    /// `load_balancer_source_ranges` (counted in `rejected_source_range`).
    SourceRange,
}

/// One flow: where its datagrams go, since when it is idle, and the shell's
/// resources for it (`io`: the connected socket and its reply task).
pub struct Flow<T> {
    endpoint: SocketAddr,
    port: ServicePortKey,
    last_seen: Instant,
    seq: u64,
    generation: u64,
    failed: bool,
    gauge: Gauge,
    /// What the access log says when the flow ends; `None` unless the log
    /// was on when the flow (or its move to this endpoint) began.
    log: Option<Box<FlowLog>>,
    /// The shell's resources for this flow. `None` when the flow is new or has
    /// just moved: the shell opens a socket toward [`Flow::endpoint`] then.
    /// Dropping it (eviction, expiry, move) must release them.
    pub io: Option<T>,
}

impl<T> fmt::Debug for Flow<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Flow")
            .field("endpoint", &self.endpoint)
            .field("port", &self.port)
            .field("last_seen", &self.last_seen)
            .field("generation", &self.generation)
            .field("failed", &self.failed)
            .field("has_io", &self.io.is_some())
            .finish()
    }
}

impl<T> Flow<T> {
    /// The endpoint the flow's datagrams go to.
    pub fn endpoint(&self) -> SocketAddr {
        self.endpoint
    }

    /// The service port the flow belongs to.
    pub fn port(&self) -> &ServicePortKey {
        &self.port
    }

    /// When the last datagram (either way) passed.
    pub fn last_seen(&self) -> Instant {
        self.last_seen
    }

    /// Whether a send to the endpoint failed; the next datagram fails over.
    pub fn is_failed(&self) -> bool {
        self.failed
    }

    /// The port's counters, for the shell to count datagrams and bytes into.
    pub fn port_stats(&self) -> &Arc<PortStats> {
        &self.gauge.port
    }

    /// The endpoint's counters, for the shell to count bytes into.
    pub fn endpoint_stats(&self) -> &Arc<EndpointStats> {
        &self.gauge.endpoint
    }

    /// The flow's own byte counters, for the shell to count into, when the
    /// access log records the flow.
    pub fn log_bytes(&self) -> Option<&Arc<ConnBytes>> {
        self.log.as_ref().map(|l| &l.bytes)
    }

    /// Logs the flow's end (or its leaving its endpoint) for `end`, if it
    /// is recorded.
    fn log_end(&mut self, key: &FlowKey, end: FlowEnd) {
        if let Some(log) = self.log.take() {
            log.write(key, &self.port, self.endpoint, self.last_seen, end);
        }
    }
}

/// Every UDP flow of the data plane, all services together (the bound is
/// global, as `udp_max_flows` says). Generic over the shell's per-flow
/// resources so the table itself stays free of I/O.
pub struct FlowTable<T> {
    /// Hashed with foldhash, seeded per table (as lb-core's affinity pins,
    /// also keyed by client address): every datagram looks its flow up a few
    /// times, and SipHash of the two addresses was the largest user-space
    /// cost of the relay after the batching.
    flows: HashMap<FlowKey, Flow<T>, foldhash::fast::RandomState>,
    /// Flows ordered by last activity: the first is idle longest. Keyed by
    /// `(last_seen, seq)` so equal instants stay distinct.
    idle: BTreeMap<(Instant, u64), FlowKey>,
    next_seq: u64,
    idle_timeout: Duration,
    max_flows: usize,
    counters: Counters,
    /// `[log] access`: new flows are recorded for the access log.
    access_log: bool,
}

impl<T> fmt::Debug for FlowTable<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlowTable")
            .field("flows", &self.flows.len())
            .field("idle_timeout", &self.idle_timeout)
            .field("max_flows", &self.max_flows)
            .field("counters", &self.counters)
            .finish()
    }
}

/// Whether `endpoint` may take datagrams of a flow of `entry`'s port: it is in
/// the port and a candidate of the frontend's selection table (ready, weight >
/// 0, node-local when the policy is Local, or the terminating fallback).
fn candidate(entry: &FrontendEntry, endpoint: SocketAddr) -> Option<usize> {
    entry
        .port
        .index_of(endpoint)
        .filter(|i| entry.port.table(entry.local).is_candidate(*i))
}

impl<T> FlowTable<T> {
    /// An empty table whose flows live `idle_timeout` past their last datagram
    /// and of which at most `max_flows` (at least one) exist at once.
    pub fn new(idle_timeout: Duration, max_flows: usize) -> Self {
        FlowTable {
            flows: HashMap::default(),
            idle: BTreeMap::new(),
            next_seq: 0,
            idle_timeout,
            max_flows: max_flows.max(1),
            counters: Counters::default(),
            access_log: false,
        }
    }

    /// Turns the access log on or off for flows that begin from now on
    /// (flows recorded already are logged when they end).
    pub fn set_access_log(&mut self, on: bool) {
        self.access_log = on;
    }

    /// A new record for a flow beginning at `now`, when the log is on.
    fn new_log(&self, now: Instant, reason: &'static str) -> Option<Box<FlowLog>> {
        self.access_log.then(|| FlowLog::new(now, reason))
    }

    /// New settings from a reload. A shorter timeout applies to existing flows
    /// at once; a smaller bound evicts the flows idle longest down to it.
    pub fn set_limits(&mut self, idle_timeout: Duration, max_flows: usize, now: Instant) {
        self.idle_timeout = idle_timeout;
        self.max_flows = max_flows.max(1);
        self.expire(now);
        while self.flows.len() > self.max_flows {
            self.evict_idlest();
        }
    }

    /// The idle timeout in force.
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// The bound in force.
    pub fn max_flows(&self) -> usize {
        self.max_flows
    }

    /// Flows held now.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// Whether no flow is held.
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// The table's event totals.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// One flow.
    pub fn get(&self, key: &FlowKey) -> Option<&Flow<T>> {
        self.flows.get(key)
    }

    /// One flow, to attach or use its `io`.
    pub fn get_mut(&mut self, key: &FlowKey) -> Option<&mut Flow<T>> {
        self.flows.get_mut(key)
    }

    /// Every flow.
    pub fn iter(&self) -> impl Iterator<Item = (&FlowKey, &Flow<T>)> {
        self.flows.iter()
    }

    /// When the next flow expires if nothing refreshes it (for the shell's
    /// timer).
    pub fn next_expiry(&self) -> Option<Instant> {
        self.idle
            .keys()
            .next()
            .map(|(seen, _)| *seen + self.idle_timeout)
    }

    /// Removes every flow idle for longer than the timeout; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let mut n = 0;
        while let Some((&(seen, _), &key)) = self.idle.iter().next() {
            if now.saturating_duration_since(seen) <= self.idle_timeout {
                break;
            }
            self.end(&key, FlowEnd::IdleTimeout);
            self.counters.expired += 1;
            n += 1;
        }
        n
    }

    /// Removes one flow (its `io` is dropped with it).
    pub fn remove(&mut self, key: &FlowKey) -> Option<Flow<T>> {
        let flow = self.flows.remove(key)?;
        self.idle.remove(&(flow.last_seen, flow.seq));
        Some(flow)
    }

    /// Removes flow `key` because of `end`, logging it if it is recorded.
    fn end(&mut self, key: &FlowKey, end: FlowEnd) -> Option<Flow<T>> {
        let mut flow = self.remove(key)?;
        flow.log_end(key, end);
        Some(flow)
    }

    /// Removes every flow, e.g. when the data plane stops.
    pub fn clear(&mut self) {
        for (key, flow) in &mut self.flows {
            flow.log_end(key, FlowEnd::Stopped);
        }
        self.flows.clear();
        self.idle.clear();
    }

    /// Removes the flows of frontends for which `keep` is false (their socket
    /// was closed).
    pub fn retain_frontends(&mut self, keep: impl Fn(SocketAddr) -> bool) {
        let gone: Vec<FlowKey> = self
            .flows
            .keys()
            .filter(|k| !keep(k.frontend))
            .copied()
            .collect();
        for key in gone {
            self.end(&key, FlowEnd::Stopped);
        }
    }

    /// Decides where a datagram from `key.client` to `key.frontend` goes, as of
    /// `snapshot` at `now`, creating, refreshing, re-pointing or failing over
    /// its flow. A flow from an older snapshot generation is re-checked first,
    /// so no datagram goes to an endpoint the snapshot removed.
    pub fn client_datagram(&mut self, snapshot: &Snapshot, key: FlowKey, now: Instant) -> Verdict {
        self.expire(now);
        let Some(entry) = snapshot.frontend(key.frontend, Protocol::Udp) else {
            if self.end(&key, FlowEnd::Drained).is_some() {
                self.counters.closed += 1;
            }
            self.counters.dropped_no_frontend += 1;
            return Verdict::Drop(DropReason::NoFrontend);
        };
        if !entry.admits(key.client.ip()) {
            // No flow is created, so a refused client holds no state.
            stats::add(&entry.port.stats().rejected_source_range, 1);
            return Verdict::Drop(DropReason::SourceRange);
        }
        let generation = snapshot.generation();
        if let Some(flow) = self.flows.get(&key) {
            if flow.port == *entry.port.key() {
                let from = flow.endpoint;
                let chosen = if flow.failed {
                    let next = match entry.port.index_of(from) {
                        Some(i) => entry.failover(i, key.client.ip(), now),
                        None => entry.pick(key.client.ip(), now).map(|p| p.index),
                    };
                    next.map(|i| (Some((i, PickReason::Failover)), Change::FailedOver { from }))
                } else if flow.generation == generation || candidate(entry, from).is_some() {
                    Some((None, Change::Kept))
                } else {
                    entry
                        .pick(key.client.ip(), now)
                        .map(|p| (Some((p.index, p.reason)), Change::Moved { from }))
                };
                return match chosen {
                    Some((index, change)) => {
                        self.point(&key, entry, index, change, generation, now);
                        Verdict::Forward {
                            endpoint: self.flows[&key].endpoint,
                            change,
                        }
                    }
                    None => {
                        self.end(&key, FlowEnd::Drained);
                        self.counters.closed += 1;
                        self.no_endpoints(entry)
                    }
                };
            }
            // The frontend now serves another service port: a new flow.
            self.end(&key, FlowEnd::Drained);
            self.counters.closed += 1;
        }
        let Some(pick) = entry.pick(key.client.ip(), now) else {
            return self.no_endpoints(entry);
        };
        while self.flows.len() >= self.max_flows {
            self.evict_idlest();
        }
        let endpoint = entry.port.endpoint(pick.index);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.flows.insert(
            key,
            Flow {
                endpoint: endpoint.addr,
                port: entry.port.key().clone(),
                last_seen: now,
                seq,
                generation,
                failed: false,
                gauge: Gauge::new(entry.port.stats().clone(), endpoint.stats.clone()),
                log: self.new_log(now, pick.reason.as_str()),
                io: None,
            },
        );
        self.idle.insert((now, seq), key);
        self.counters.created += 1;
        Verdict::Forward {
            endpoint: endpoint.addr,
            change: Change::New,
        }
    }

    /// A datagram from `from` arrived on the socket of flow `key`: refreshes
    /// the flow and returns it, or `None` when the flow is gone or now points
    /// elsewhere (a late reply from the endpoint it left: drop it).
    pub fn endpoint_datagram(
        &mut self,
        key: &FlowKey,
        from: SocketAddr,
        now: Instant,
    ) -> Option<&mut Flow<T>> {
        self.expire(now);
        if self.flows.get(key)?.endpoint != from {
            return None;
        }
        self.touch(key, now);
        self.flows.get_mut(key)
    }

    /// A send to flow `key`'s endpoint failed (or the endpoint answered with
    /// ICMP unreachable): counted, and the next datagram fails over.
    pub fn send_failed(&mut self, key: &FlowKey, endpoint: SocketAddr) {
        if let Some(flow) = self.flows.get_mut(key) {
            stats::add(&flow.gauge.port.udp_dropped_send_error, 1);
            stats::add(&flow.gauge.endpoint.connect_errors, 1);
            if flow.endpoint == endpoint {
                flow.failed = true;
            }
        }
    }

    /// The endpoint of flow `key` (new or re-pointed) is one of this proxy's
    /// own frontends: the datagram is dropped and counted, the flow
    /// forgotten before any socket is opened, so datagrams never loop
    /// through lb. The client's next datagram makes a new flow with the next
    /// pick.
    pub fn self_loop(&mut self, key: &FlowKey) {
        if let Some(flow) = self.end(key, FlowEnd::Rejected(Rejected::SelfLoop)) {
            stats::add(&flow.gauge.port.udp_dropped_self_loop, 1);
        }
    }

    /// The shell could not open a socket for flow `key` (out of descriptors or
    /// ports): the datagram is dropped and counted, the flow forgotten.
    pub fn socket_failed(&mut self, key: &FlowKey) {
        if let Some(flow) = self.end(key, FlowEnd::Rejected(Rejected::LocalResources)) {
            stats::add(&flow.gauge.port.udp_dropped_flow_limit, 1);
        }
    }

    /// Applies a new snapshot to every flow at once: flows whose endpoint is
    /// still a candidate stay; the others are re-pointed by a fresh pick (their
    /// `io` dropped) or closed when their port has no endpoint left or their
    /// frontend is gone.
    pub fn apply(&mut self, snapshot: &Snapshot, now: Instant) {
        self.expire(now);
        let generation = snapshot.generation();
        let keys: Vec<FlowKey> = self.flows.keys().copied().collect();
        for key in keys {
            let entry = snapshot.frontend(key.frontend, Protocol::Udp);
            let flow = &self.flows[&key];
            let Some(entry) = entry.filter(|e| *e.port.key() == flow.port) else {
                self.end(&key, FlowEnd::Drained);
                self.counters.closed += 1;
                continue;
            };
            if candidate(entry, flow.endpoint).is_some() {
                self.keep(&key, entry, generation);
                continue;
            }
            let from = flow.endpoint;
            match entry.pick(key.client.ip(), now) {
                Some(pick) => {
                    let change = Change::Moved { from };
                    self.repoint(
                        &key,
                        entry,
                        (pick.index, pick.reason),
                        change,
                        generation,
                        now,
                    );
                }
                None => {
                    self.end(&key, FlowEnd::Drained);
                    self.counters.closed += 1;
                }
            }
        }
    }

    fn no_endpoints(&mut self, entry: &FrontendEntry) -> Verdict {
        stats::add(&entry.port.stats().udp_dropped_no_endpoints, 1);
        self.counters.dropped_no_endpoints += 1;
        Verdict::Drop(DropReason::NoEndpoints)
    }

    /// Refreshes flow `key` at `now` and, given an endpoint `index`, points
    /// it there.
    fn point(
        &mut self,
        key: &FlowKey,
        entry: &FrontendEntry,
        index: Option<(usize, PickReason)>,
        change: Change,
        generation: u64,
        now: Instant,
    ) {
        match index {
            Some(index) => self.repoint(key, entry, index, change, generation, now),
            None => self.keep(key, entry, generation),
        }
        self.touch(key, now);
    }

    /// Marks flow `key` as checked against `generation`, its endpoint kept.
    fn keep(&mut self, key: &FlowKey, entry: &FrontendEntry, generation: u64) {
        let Some(flow) = self.flows.get_mut(key) else {
            return;
        };
        if flow.generation != generation {
            flow.generation = generation;
            if let Some(i) = entry.port.index_of(flow.endpoint) {
                flow.gauge
                    .follow(entry.port.stats(), &entry.port.endpoint(i).stats);
            }
        }
    }

    /// Points flow `key` at endpoint `index` (chosen for `reason`) at
    /// `now`: for the access log, the flow to the endpoint it leaves ends
    /// and one to the new endpoint begins. A failover to another endpoint
    /// is counted on the port and on the endpoint left.
    fn repoint(
        &mut self,
        key: &FlowKey,
        entry: &FrontendEntry,
        (index, reason): (usize, PickReason),
        change: Change,
        generation: u64,
        now: Instant,
    ) {
        let log = self.new_log(now, reason.as_str());
        let Some(flow) = self.flows.get_mut(key) else {
            return;
        };
        let endpoint = entry.port.endpoint(index);
        let end = match change {
            Change::FailedOver { from } => {
                if from != endpoint.addr {
                    stats::add(&flow.gauge.endpoint.failovers, 1);
                    stats::add(&entry.port.stats().failovers, 1);
                }
                FlowEnd::Reset
            }
            Change::Moved { .. } | Change::Kept | Change::New => FlowEnd::Drained,
        };
        flow.log_end(key, end);
        flow.log = log;
        flow.endpoint = endpoint.addr;
        flow.generation = generation;
        flow.failed = false;
        flow.io = None;
        flow.gauge.repoint(endpoint.stats.clone());
        flow.gauge.follow(entry.port.stats(), &endpoint.stats);
        match change {
            Change::FailedOver { .. } => self.counters.failed_over += 1,
            Change::Moved { .. } => self.counters.moved += 1,
            Change::Kept | Change::New => {}
        }
    }

    fn touch(&mut self, key: &FlowKey, now: Instant) {
        let Some(flow) = self.flows.get_mut(key) else {
            return;
        };
        if flow.last_seen == now {
            return;
        }
        self.idle.remove(&(flow.last_seen, flow.seq));
        // A clock that goes backwards must not make a flow look idle longer.
        flow.last_seen = flow.last_seen.max(now);
        self.idle.insert((flow.last_seen, flow.seq), *key);
    }

    fn evict_idlest(&mut self) {
        let Some((_, &key)) = self.idle.iter().next() else {
            return;
        };
        if let Some(flow) = self.end(&key, FlowEnd::Evicted) {
            stats::add(&flow.gauge.port.udp_evicted, 1);
            self.counters.evicted += 1;
        }
    }
}
