//! A seeded simulation of the UDP flow table (sozu style): random datagrams
//! both ways, clock advances, endpoint churn (additions, removals, readiness,
//! weight 0, a whole service leaving), send errors and bound changes, with the
//! table's invariants checked after every step:
//!
//! - no flow points at an endpoint that is not a candidate of the current
//!   snapshot (once the snapshot has been applied; before that, no datagram is
//!   forwarded to one);
//! - no flow outlives its idle timeout; the table never exceeds its bound;
//! - liveness: every datagram to a service port with a candidate endpoint is
//!   forwarded, to a candidate; a flow keeps its endpoint while both live;
//! - the `lb_udp_sessions` gauges add up to the number of flows.
//!
//! A failure names its seed; replay one with `UDP_SIM_SEED=N`, and run more
//! with `UDP_SIM_SEEDS=N` (default 100) and `UDP_SIM_STEPS=N` (default 10,000).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use lb_core::stats::read;
use lb_core::{
    EndpointSpec, PortSpec, Protocol, ServiceSpec, ServiceType, SessionAffinity, Snapshot,
};
use lb_proxy::dataplane::udp::flows::{Change, Counters, FlowKey, FlowTable, Verdict};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::support::{node, sa};

/// The flows before a step, by key id: key, endpoint, failed.
type Before = Vec<Option<(FlowKey, SocketAddr, bool)>>;

/// Client sockets: 6 addresses x 4 ports.
const CLIENTS: usize = 24;

const IDLE: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
struct ModelEndpoint {
    addr: SocketAddr,
    present: bool,
    serving: bool,
    terminating: bool,
    weight: u32,
}

#[derive(Clone, Debug)]
struct ModelService {
    name: &'static str,
    cluster_ip: &'static str,
    node_port: Option<u16>,
    affinity: bool,
    present: bool,
    endpoints: Vec<ModelEndpoint>,
}

impl ModelService {
    fn new(
        name: &'static str,
        cluster_ip: &'static str,
        node_port: Option<u16>,
        affinity: bool,
        subnet: u8,
        n: u8,
    ) -> Self {
        ModelService {
            name,
            cluster_ip,
            node_port,
            affinity,
            present: true,
            endpoints: (1..=n)
                .map(|i| ModelEndpoint {
                    addr: sa(&format!("127.0.{subnet}.{i}:5353")),
                    present: i <= 2,
                    serving: true,
                    terminating: false,
                    weight: 1,
                })
                .collect(),
        }
    }

    fn spec(&self) -> ServiceSpec {
        let mut port = PortSpec {
            protocol: Protocol::Udp,
            node_port: self.node_port,
            ..PortSpec::tcp("dns", 53)
        };
        for e in self.endpoints.iter().filter(|e| e.present) {
            let mut spec = EndpointSpec::new(e.addr).with_weight(e.weight);
            spec.serving = e.serving;
            spec.terminating = e.terminating;
            port = port.with_endpoint(spec);
        }
        let mut spec =
            ServiceSpec::cluster_ip("default", self.name, self.cluster_ip.parse().unwrap())
                .with_port(port);
        if self.node_port.is_some() {
            spec.service_type = ServiceType::NodePort;
        }
        if self.affinity {
            spec = spec.with_affinity(SessionAffinity::ClientIp {
                timeout: Duration::from_secs(60),
            });
        }
        spec
    }
}

struct Sim {
    seed: u64,
    step: usize,
    rng: StdRng,
    now: Instant,
    services: Vec<ModelService>,
    snapshot: Snapshot,
    applied: u64,
    table: FlowTable<()>,
    frontends: Vec<SocketAddr>,
    clients: Vec<SocketAddr>,
    forwarded: u64,
    dropped: u64,
}

macro_rules! check {
    ($sim:expr, $cond:expr, $($msg:tt)+) => {
        if !$cond {
            panic!(
                "seed {} step {}: {} (replay: UDP_SIM_SEED={} cargo test -p lb-proxy --test udp_flow_sim)",
                $sim.seed, $sim.step, format!($($msg)+), $sim.seed
            );
        }
    };
}

/// Whether `endpoint` is a candidate for new flows of `frontend` in `snapshot`.
fn is_candidate(snapshot: &Snapshot, frontend: SocketAddr, endpoint: SocketAddr) -> bool {
    snapshot
        .frontend(frontend, Protocol::Udp)
        .and_then(|e| {
            e.port
                .index_of(endpoint)
                .map(|i| e.port.table(e.local).is_candidate(i))
        })
        .unwrap_or(false)
}

fn candidates(snapshot: &Snapshot, frontend: SocketAddr) -> usize {
    snapshot
        .frontend(frontend, Protocol::Udp)
        .map_or(0, |e| e.port.table(e.local).candidates().len())
}

impl Sim {
    fn new(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let services = vec![
            ModelService::new("dns", "127.96.0.1", None, false, 10, 5),
            ModelService::new("game", "127.96.0.2", Some(30053), true, 11, 5),
            ModelService::new("sparse", "127.96.0.3", None, false, 12, 3),
        ];
        let snapshot = Snapshot::build(
            node(),
            services.iter().map(ModelService::spec),
            None,
            SystemTime::now(),
        );
        let max_flows = rng.random_range(2..30);
        let clients = (1..=6)
            .flat_map(|ip| (0..4).map(move |p| sa(&format!("127.0.50.{ip}:{}", 40000 + p))))
            .collect();
        let applied = snapshot.generation();
        Sim {
            seed,
            step: 0,
            rng,
            now: Instant::now(),
            services,
            snapshot,
            applied,
            table: FlowTable::new(IDLE, max_flows),
            frontends: vec![
                sa("127.96.0.1:53"),
                sa("127.96.0.2:53"),
                sa("127.0.1.1:30053"),
                sa("127.96.0.3:53"),
            ],
            clients,
            forwarded: 0,
            dropped: 0,
        }
    }

    fn run(&mut self, steps: usize) {
        for step in 0..steps {
            self.step = step;
            let before = self.flows();
            let mut failed_now = None;
            match self.rng.random_range(0..100) {
                0..=59 => self.client_datagram(&before),
                60..=74 => self.endpoint_datagram(),
                75..=84 => {
                    let max = if self.rng.random_bool(0.8) { 10 } else { 45 };
                    self.now += Duration::from_millis(self.rng.random_range(0..max * 1000));
                    self.table.expire(self.now);
                }
                85..=91 => self.churn(),
                92..=96 => failed_now = self.send_error(),
                97 => {
                    let max = self.rng.random_range(2..30);
                    self.table.set_limits(IDLE, max, self.now);
                }
                _ => self.apply(),
            }
            self.check_invariants(&before, failed_now);
        }
        check!(self, self.forwarded > 0, "nothing was ever forwarded");
    }

    /// A small dense number for a flow key (4 frontends x 24 clients), so the
    /// checks index arrays instead of hashing (slow in debug builds).
    fn id(&self, key: &FlowKey) -> usize {
        let f = self
            .frontends
            .iter()
            .position(|f| *f == key.frontend)
            .unwrap_or(0);
        let c = match key.client.ip() {
            IpAddr::V4(ip) => usize::from(ip.octets()[3] - 1) * 4,
            IpAddr::V6(_) => 0,
        } + usize::from(key.client.port() - 40000);
        f * CLIENTS + c
    }

    /// The flows now: endpoint and failed flag by key id.
    fn flows(&self) -> Before {
        let mut v: Before = vec![None; 4 * CLIENTS];
        for (k, f) in self.table.iter() {
            v[self.id(k)] = Some((*k, f.endpoint(), f.is_failed()));
        }
        v
    }

    fn client_datagram(&mut self, before: &Before) {
        let frontend = self.frontends[self.rng.random_range(0..self.frontends.len())];
        let key = FlowKey {
            frontend,
            local: frontend.ip(),
            client: self.clients[self.rng.random_range(0..self.clients.len())],
        };
        let live = self
            .snapshot
            .frontend(key.frontend, Protocol::Udp)
            .is_some_and(|e| e.has_endpoints());
        let verdict = self.table.client_datagram(&self.snapshot, key, self.now);
        match verdict {
            Verdict::Forward { endpoint, change } => {
                self.forwarded += 1;
                check!(
                    self,
                    live,
                    "forwarded to {endpoint} although the port has no endpoint"
                );
                check!(
                    self,
                    is_candidate(&self.snapshot, key.frontend, endpoint),
                    "datagram of {key:?} sent to {endpoint}, not a candidate of generation {}",
                    self.snapshot.generation()
                );
                if let Some((_, old, failed)) = before[self.id(&key)] {
                    if failed {
                        if candidates(&self.snapshot, key.frontend) > 1
                            && is_candidate(&self.snapshot, key.frontend, old)
                        {
                            check!(self, endpoint != old, "failed flow {key:?} stayed on {old}");
                        }
                    } else if is_candidate(&self.snapshot, key.frontend, old) {
                        check!(
                            self,
                            endpoint == old && change == Change::Kept,
                            "flow {key:?} left live endpoint {old} for {endpoint} ({change:?})"
                        );
                    }
                } else {
                    check!(
                        self,
                        change == Change::New,
                        "no flow before, yet {change:?}"
                    );
                }
            }
            Verdict::Drop(reason) => {
                self.dropped += 1;
                check!(
                    self,
                    !live,
                    "dropped ({reason:?}) although the port has an endpoint"
                );
                check!(
                    self,
                    self.table.get(&key).is_none(),
                    "a dropped datagram left a flow"
                );
            }
        }
    }

    fn endpoint_datagram(&mut self) {
        let flows: Vec<(FlowKey, SocketAddr)> =
            self.table.iter().map(|(k, f)| (*k, f.endpoint())).collect();
        if flows.is_empty() {
            return;
        }
        let (key, endpoint) = flows[self.rng.random_range(0..flows.len())];
        if self.rng.random_bool(0.1) {
            // A late reply from an endpoint the flow no longer points at.
            let stranger = sa("127.0.99.1:5353");
            check!(
                self,
                self.table
                    .endpoint_datagram(&key, stranger, self.now)
                    .is_none(),
                "a reply from {stranger} was accepted for {key:?}"
            );
            return;
        }
        let now = self.now;
        let seen = self
            .table
            .endpoint_datagram(&key, endpoint, now)
            .map(|f| f.last_seen());
        check!(
            self,
            seen == Some(now),
            "reply on live flow {key:?} did not refresh it"
        );
    }

    fn send_error(&mut self) -> Option<FlowKey> {
        let flows: Vec<(FlowKey, SocketAddr)> =
            self.table.iter().map(|(k, f)| (*k, f.endpoint())).collect();
        if flows.is_empty() {
            return None;
        }
        let (key, endpoint) = flows[self.rng.random_range(0..flows.len())];
        self.table.send_failed(&key, endpoint);
        check!(
            self,
            self.table.get(&key).is_some_and(|f| f.is_failed()),
            "send error not recorded"
        );
        Some(key)
    }

    fn churn(&mut self) {
        for _ in 0..self.rng.random_range(1..=3) {
            let s = self.rng.random_range(0..self.services.len());
            let service = &mut self.services[s];
            if s == 2 && self.rng.random_bool(0.1) {
                service.present = !service.present;
                continue;
            }
            let e = self.rng.random_range(0..service.endpoints.len());
            let ep = &mut service.endpoints[e];
            match self.rng.random_range(0..6) {
                0 | 1 => ep.present = !ep.present,
                2 => ep.serving = !ep.serving,
                3 => ep.terminating = !ep.terminating,
                4 => ep.weight = self.rng.random_range(0..3),
                _ => {
                    ep.present = true;
                    ep.serving = true;
                    ep.terminating = false;
                    ep.weight = 1;
                }
            }
        }
        let specs = self
            .services
            .iter()
            .filter(|s| s.present)
            .map(ModelService::spec);
        self.snapshot = Snapshot::build(node(), specs, Some(&self.snapshot), SystemTime::now());
        // Usually the data plane applies the snapshot to the flows at once; now
        // and then a datagram races the apply and must catch up on its own.
        if self.rng.random_bool(0.8) {
            self.apply();
        }
    }

    fn apply(&mut self) {
        self.table.apply(&self.snapshot, self.now);
        self.applied = self.snapshot.generation();
    }

    fn check_invariants(&self, before: &Before, failed_now: Option<FlowKey>) {
        let t = &self.table;
        check!(
            self,
            t.len() <= t.max_flows(),
            "{} flows over the bound {}",
            t.len(),
            t.max_flows()
        );
        // Candidates per frontend, computed once per step (the checks below
        // run millions of times).
        let cands: Vec<(SocketAddr, Vec<SocketAddr>)> = self
            .frontends
            .iter()
            .map(|f| {
                let list = self
                    .snapshot
                    .frontend(*f, Protocol::Udp)
                    .map(|e| {
                        e.port
                            .table(e.local)
                            .candidates()
                            .iter()
                            .map(|i| e.port.endpoint(*i as usize).addr)
                            .collect()
                    })
                    .unwrap_or_default();
                (*f, list)
            })
            .collect();
        let live = |frontend: SocketAddr, endpoint: SocketAddr| {
            cands
                .iter()
                .any(|(f, list)| *f == frontend && list.contains(&endpoint))
        };
        let applied = self.applied == self.snapshot.generation();
        for (key, flow) in t.iter() {
            let idle = self.now.saturating_duration_since(flow.last_seen());
            check!(
                self,
                idle <= IDLE,
                "flow {key:?} idle {idle:?} outlived the timeout"
            );
            if applied {
                check!(
                    self,
                    live(key.frontend, flow.endpoint()),
                    "flow {key:?} points at {} which is not a candidate",
                    flow.endpoint()
                );
            }
        }
        let after = self.flows();
        for (was, is) in before.iter().zip(&after) {
            let (Some((key, old, failed)), Some((_, now_at, _))) = (was, is) else {
                continue;
            };
            // Both live: the flow was there before and is still there, no send
            // to it failed, and its endpoint is still a candidate.
            if !failed && failed_now != Some(*key) && live(key.frontend, *old) {
                check!(
                    self,
                    now_at == old,
                    "flow {key:?} moved from live endpoint {old} to {now_at}"
                );
            }
        }
        if self.applied == self.snapshot.generation() {
            let sessions: u64 = self
                .snapshot
                .services()
                .flat_map(|s| s.ports.iter())
                .map(|p| read(&p.stats().udp_sessions))
                .sum();
            check!(
                self,
                sessions == t.len() as u64,
                "sessions gauge {sessions} != {} flows",
                t.len()
            );
        }
    }
}

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn flow_table_invariants_hold_over_seeded_random_runs() {
    let steps = env("UDP_SIM_STEPS").unwrap_or(10_000) as usize;
    let seeds: Vec<u64> = match env("UDP_SIM_SEED") {
        Some(seed) => vec![seed],
        None => (0..env("UDP_SIM_SEEDS").unwrap_or(100)).collect(),
    };
    let started = Instant::now();
    // Seeds are independent: spread them over the cores.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    let results: Vec<(u64, u64, Counters)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let mine: Vec<u64> = seeds.iter().copied().skip(t).step_by(threads).collect();
                scope.spawn(move || {
                    mine.into_iter()
                        .map(|seed| {
                            let mut sim = Sim::new(seed);
                            sim.run(steps);
                            (sim.forwarded, sim.dropped, sim.table.counters())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    let (mut forwarded, mut dropped) = (0, 0);
    let mut totals = Counters::default();
    for (f, d, c) in results {
        forwarded += f;
        dropped += d;
        totals.created += c.created;
        totals.expired += c.expired;
        totals.evicted += c.evicted;
        totals.moved += c.moved;
        totals.failed_over += c.failed_over;
        totals.closed += c.closed;
    }
    println!(
        "{} seeds x {steps} steps in {:?}: {forwarded} forwarded, {dropped} dropped, {totals:?}",
        seeds.len(),
        started.elapsed()
    );
    // Every path was exercised, so the invariants were tested where they bite.
    if seeds.len() >= 10 && steps >= 1000 {
        assert!(totals.expired > 0 && totals.evicted > 0 && totals.moved > 0);
        assert!(totals.failed_over > 0 && totals.closed > 0 && dropped > 0);
    }
}

#[test]
fn the_affinity_client_keeps_its_endpoint_across_client_ports() {
    // ClientIP affinity is chosen per new flow: two sockets of one client land
    // on the same endpoint.
    let mut sim = Sim::new(7);
    for e in &mut sim.services[1].endpoints {
        e.present = true;
    }
    sim.snapshot = Snapshot::build(
        node(),
        sim.services.iter().map(ModelService::spec),
        Some(&sim.snapshot),
        SystemTime::now(),
    );
    let frontend = sa("127.96.0.2:53");
    let ip: IpAddr = "127.0.50.1".parse().unwrap();
    let mut seen = Vec::new();
    for port in 40000..40004 {
        let key = FlowKey {
            frontend,
            local: frontend.ip(),
            client: SocketAddr::new(ip, port),
        };
        match sim.table.client_datagram(&sim.snapshot, key, sim.now) {
            Verdict::Forward { endpoint, .. } => seen.push(endpoint),
            Verdict::Drop(r) => panic!("dropped: {r:?}"),
        }
    }
    seen.dedup();
    assert_eq!(seen.len(), 1, "{seen:?}");
}
