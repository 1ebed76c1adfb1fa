//! The cluster DNS responder: service names resolve, and headless and
//! ExternalName services, which exist only in DNS, work.
//!
//! Records follow the Kubernetes DNS specification, schema 1.1.0 (see
//! `records`). Every question reads the live [`Table`] once, so a reload or a
//! readiness change shows in the very next answer; nothing is cached. Names
//! outside the cluster zone go to the configured upstreams (`forward`), or are
//! REFUSED when there are none: an open forwarder on a node is an amplifier
//! nobody asked for. For the same reason a UDP reply is at most 512 bytes
//! without EDNS and at most the client's payload size capped at 1,232 with
//! it (cut with TC, whole over TCP: `fit`), ANY gets one record (RFC
//! 8482), and no question is logged above debug.
//!
//! - `records` (private): the zone as a pure function of a snapshot.
//! - `forward` (private): plain forwarding over UDP, TCP on truncation.

mod forward;
mod records;

use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use hickory_proto::op::{Edns, Header, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, Record, RecordType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};
use hickory_proto::xfer::Protocol;
use hickory_server::authority::MessageResponseBuilder;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::ServerFuture;
use lb_config::DnsSettings;
use lb_core::{NodeSpec, ServiceSpec, Snapshot, Table};
use tokio::net::{TcpListener, UdpSocket};
use tracing::{info, warn};

use crate::handover::{Role, SocketKey, Sockets};
use crate::lifecycle::Tasks;

use records::{Lookup, Zone, MAX_CNAME_CHAIN};

/// How long a TCP client may stay silent before its connection is closed.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// What the responder serves: the zone and how it answers. Replaced whole on
/// a reload ([`Dns::set_options`]); the listen address is not part of it,
/// since rebinding is a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsOptions {
    /// The cluster zone (`cluster.domain`), e.g. `cluster.local`.
    pub zone: String,
    /// TTL of the zone's records, seconds.
    pub ttl: u32,
    /// Where other names are forwarded; empty = REFUSED.
    pub upstreams: Vec<SocketAddr>,
}

impl DnsOptions {
    /// The options a config file asks for: `[dns]` with `cluster.domain`.
    /// `None` when the file has no `[dns]` section.
    pub fn from_config(config: &lb_config::Config) -> Option<DnsOptions> {
        config
            .dns
            .as_ref()
            .map(|d| DnsOptions::new(&config.cluster.domain, d))
    }

    /// Options for `zone` from typed `[dns]` settings.
    pub fn new(zone: &str, settings: &DnsSettings) -> DnsOptions {
        DnsOptions {
            zone: zone.to_string(),
            ttl: settings.ttl,
            upstreams: settings.upstreams.clone(),
        }
    }

    fn zone(&self) -> Result<Zone, DnsError> {
        let mut origin = Name::from_ascii(&self.zone)
            .map_err(|e| DnsError::Zone(self.zone.clone(), e.to_string()))?
            .to_lowercase();
        origin.set_fqdn(true);
        Ok(Zone {
            origin,
            ttl: self.ttl,
        })
    }
}

/// Why the responder could not start.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The zone is not a valid DNS name.
    #[error("dns zone {0:?}: {1}")]
    Zone(String, String),
    /// A listener could not be bound.
    #[error("dns listener {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The bind error.
        source: std::io::Error,
    },
}

pub use lb_core::stats::DnsCounters;

/// The hickory-server handler: one question, one snapshot.
#[derive(Debug)]
struct Handler {
    table: Arc<Table>,
    options: Arc<ArcSwap<(DnsOptions, Zone)>>,
    counters: Arc<DnsCounters>,
    /// Services left to another proxy ([`Dns::set_not_proxied`]).
    others: Arc<ArcSwap<Snapshot>>,
}

/// A running responder (what the App holds). Cloning is shallow.
#[derive(Debug, Clone)]
pub struct Dns {
    options: Arc<ArcSwap<(DnsOptions, Zone)>>,
    counters: Arc<DnsCounters>,
    others: Arc<ArcSwap<Snapshot>>,
    tasks: Tasks,
    local_addr: SocketAddr,
}

impl Dns {
    /// Binds `listen` on UDP and TCP (the same port; port 0 picks one free on
    /// both) and starts answering from `table`, the server a task of
    /// `tasks` (hickory-server's own listener tasks are waited for by it).
    pub async fn start(
        listen: SocketAddr,
        table: Arc<Table>,
        options: DnsOptions,
        tasks: Tasks,
    ) -> Result<Dns, DnsError> {
        Dns::start_in(listen, table, options, tasks, &Sockets::new()).await
    }

    /// [`Dns::start`] on the sockets a previous owner handed over in
    /// `sockets` for `listen` when there are (a takeover), and registered
    /// there so that the next one can take them.
    pub async fn start_in(
        listen: SocketAddr,
        table: Arc<Table>,
        options: DnsOptions,
        tasks: Tasks,
        sockets: &Sockets,
    ) -> Result<Dns, DnsError> {
        let (udp, tcp) = match claim(sockets, listen)? {
            Some(pair) => pair,
            None => bind(listen).await?,
        };
        let local_addr = udp.local_addr().unwrap_or(listen);
        let registrations = [
            sockets.register(SocketKey::udp(Role::Dns, local_addr), udp.as_fd()),
            sockets.register(SocketKey::tcp(Role::Dns, local_addr), tcp.as_fd()),
        ];
        let zone = options.zone()?;
        let shared = Arc::new(ArcSwap::from_pointee((options, zone)));
        let counters = Arc::new(DnsCounters::default());
        let others = Arc::new(ArcSwap::from_pointee(Snapshot::default()));
        let handler = Handler {
            table,
            options: shared.clone(),
            counters: counters.clone(),
            others: others.clone(),
        };
        let stop = tasks.token().clone();
        tasks.spawn(async move {
            let shutdown = async move {
                stop.cancelled().await;
                // Before hickory closes the sockets: a hand-over never
                // copies a closed descriptor.
                drop(registrations);
            };
            run(udp, tcp, handler, shutdown).await
        });
        info!(%local_addr, "dns responder listening (udp, tcp)");
        Ok(Dns {
            options: shared,
            counters,
            others,
            tasks,
            local_addr,
        })
    }

    /// Where the responder answers (UDP and TCP).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// New zone, TTL or upstreams from a reload; the next question uses them.
    /// A zone that is not a valid name is logged and the old options kept.
    pub fn set_options(&self, options: DnsOptions) {
        if self.options.load().0 == options {
            return;
        }
        match options.zone() {
            Ok(zone) => self.options.store(Arc::new((options, zone))),
            Err(e) => warn!("dns options not applied: {e}"),
        }
    }

    /// The services this proxy does not serve (another proxy's, by their
    /// `service.kubernetes.io/service-proxy-name` label, or headless-labelled)
    /// still have names, as CoreDNS gives every Service one: a name the
    /// served table does not know is looked up among these before NXDOMAIN.
    /// Their endpoints are as the sources say (no probes run for them).
    pub fn set_not_proxied(&self, node: NodeSpec, services: Vec<ServiceSpec>) {
        let previous = self.others.load_full();
        if services.is_empty() && previous.services().next().is_none() {
            return;
        }
        let built = Snapshot::build(node, services, Some(&previous), SystemTime::now());
        self.others.store(Arc::new(built));
    }

    /// Answer counters.
    pub fn counters(&self) -> &DnsCounters {
        &self.counters
    }

    /// Stops answering (both listeners close) and returns once the server
    /// and its listener tasks have ended.
    pub async fn shutdown(&self) {
        self.tasks.stop().await;
    }
}

/// Serves the cluster zone from `table` on already bound sockets until
/// `shutdown` resolves (mini-redis style: tests and embedders bind, pass a
/// oneshot, and own the lifetime).
pub async fn serve(
    udp: UdpSocket,
    tcp: TcpListener,
    table: Arc<Table>,
    options: DnsOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), DnsError> {
    let zone = options.zone()?;
    let handler = Handler {
        table,
        options: Arc::new(ArcSwap::from_pointee((options, zone))),
        counters: Arc::new(DnsCounters::default()),
        others: Arc::new(ArcSwap::from_pointee(Snapshot::default())),
    };
    run(udp, tcp, handler, shutdown).await;
    Ok(())
}

async fn run(
    udp: UdpSocket,
    tcp: TcpListener,
    handler: Handler,
    shutdown: impl Future<Output = ()> + Send,
) {
    let mut server = ServerFuture::new(handler);
    server.register_socket(udp);
    server.register_listener(tcp, TCP_IDLE);
    shutdown.await;
    if let Err(e) = server.shutdown_gracefully().await {
        warn!("dns responder stopped with an error: {e}");
    }
}

/// The UDP and TCP sockets a previous owner handed over for `listen`, the
/// one missing bound on the other's port; `None` when nothing was handed
/// over.
fn claim(
    sockets: &Sockets,
    listen: SocketAddr,
) -> Result<Option<(UdpSocket, TcpListener)>, DnsError> {
    let err = |source| DnsError::Bind {
        addr: listen,
        source,
    };
    let udp = sockets.take_udp(Role::Dns, listen).into_iter().next();
    let addr = match &udp {
        Some(u) => u.local_addr().map_err(err)?,
        None => listen,
    };
    let tcp = sockets.take_tcp(Role::Dns, addr).into_iter().next();
    let (udp, tcp) = match (udp, tcp) {
        (None, None) => return Ok(None),
        (Some(udp), Some(tcp)) => (udp, tcp),
        (Some(udp), None) => {
            let tcp = std::net::TcpListener::bind(addr).map_err(err)?;
            tcp.set_nonblocking(true).map_err(err)?;
            (udp, tcp)
        }
        (None, Some(tcp)) => {
            let at = tcp.local_addr().map_err(err)?;
            let udp = std::net::UdpSocket::bind(at).map_err(err)?;
            udp.set_nonblocking(true).map_err(err)?;
            (udp, tcp)
        }
    };
    Ok(Some((
        UdpSocket::from_std(udp).map_err(err)?,
        TcpListener::from_std(tcp).map_err(err)?,
    )))
}

/// Binds UDP and TCP on the same address; with port 0, the port UDP got is
/// tried on TCP a few times (another socket may hold it on TCP).
async fn bind(listen: SocketAddr) -> Result<(UdpSocket, TcpListener), DnsError> {
    let err = |source| DnsError::Bind {
        addr: listen,
        source,
    };
    let attempts = if listen.port() == 0 { 8 } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        let udp = UdpSocket::bind(listen).await.map_err(err)?;
        let addr = udp.local_addr().map_err(err)?;
        match TcpListener::bind(addr).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    Err(err(last.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::AddrInUse, "no common port")
    })))
}

/// One response, ready to send.
#[derive(Debug, Default)]
struct Reply {
    rcode: ResponseCode,
    authoritative: bool,
    answers: Vec<Record>,
    authority: Vec<Record>,
    additionals: Vec<Record>,
}

impl Reply {
    fn code(rcode: ResponseCode) -> Reply {
        Reply {
            rcode,
            ..Reply::default()
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let options = self.options.load_full();
        let reply = self.reply(request, &options.0, &options.1).await;
        let counter = match reply.rcode {
            ResponseCode::Refused | ResponseCode::NotImp | ResponseCode::FormErr => {
                &self.counters.refused
            }
            ResponseCode::ServFail => &self.counters.failed,
            _ if reply.authoritative => &self.counters.local,
            _ => &self.counters.forwarded,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let edns = request.edns().map(|asked| {
            let mut ours = Edns::new();
            ours.set_max_payload(edns_payload(asked.max_payload()));
            ours
        });
        let mut header = Header::response_from_request(request.header());
        header.set_authoritative(reply.authoritative);
        header.set_recursion_available(!options.0.upstreams.is_empty());
        header.set_response_code(reply.rcode);
        let fit = match request.protocol() {
            Protocol::Udp => fit(request, header, &reply, edns.as_ref()),
            _ => Fit::All,
        };
        let (answers, authority, additionals) = match fit {
            Fit::All => (
                reply.answers.len(),
                reply.authority.len(),
                reply.additionals.len(),
            ),
            Fit::Truncated {
                answers,
                authority,
                additionals,
            } => {
                header.set_truncated(true);
                (answers, authority, additionals)
            }
        };
        // The query log: one line per question, at debug only
        // (RUST_LOG=info,lb_proxy::ops::dns=debug).
        if let Some(q) = request.queries().first() {
            tracing::debug!(
                src = %request.src(),
                protocol = %request.protocol(),
                name = %q.name(),
                qtype = %q.query_type(),
                rcode = %reply.rcode,
                answers,
                of = reply.answers.len(),
                truncated = header.truncated(),
                "dns question"
            );
        }
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(edns) = edns {
            builder.edns(edns);
        }
        let response = builder.build(
            header,
            reply.answers.iter().take(answers),
            reply.authority.iter().take(authority),
            std::iter::empty(),
            reply.additionals.iter().take(additionals),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!("dns response not sent: {e}");
                let mut header = Header::new();
                header.set_response_code(ResponseCode::ServFail);
                header.into()
            }
        }
    }
}

/// The UDP payload a client without EDNS can take (RFC 1035, section 4.2.1).
const UDP_PLAIN_PAYLOAD: u16 = 512;

/// The most we send over UDP whatever a client advertises: the DNS flag day
/// 2020 value, below every usual path MTU, so a reply never needs IP
/// fragments (which are spoofable and often dropped), and a small question
/// cannot buy a large reply aimed at someone else.
const UDP_MAX_PAYLOAD: u16 = 1232;

/// The payload size of our OPT record and of a UDP reply to an EDNS
/// question: the client's, at least 512 (RFC 6891, section 6.2.5) and at
/// most [`UDP_MAX_PAYLOAD`].
fn edns_payload(asked: u16) -> u16 {
    asked.clamp(UDP_PLAIN_PAYLOAD, UDP_MAX_PAYLOAD)
}

/// How much of a reply goes into one UDP datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fit {
    /// Everything.
    All,
    /// The first records of each section that fit; TC is set so the client
    /// asks again over TCP, where the whole answer is served.
    Truncated {
        answers: usize,
        authority: usize,
        additionals: usize,
    },
}

/// Fits `reply` into a UDP datagram for `request`: 512 bytes without EDNS,
/// the client's payload size capped at 1,232 with it. hickory-server limits
/// a UDP reply only to the OPT record's size, and to 4,096 bytes without
/// EDNS, so the limit is ours: the reply is encoded once, exactly as
/// hickory-server will encode it (same builder, same question bytes, same
/// record order), with room kept for the OPT record, and cut after the last
/// whole record that fits. hickory-server then encodes the kept records to
/// the same bytes.
fn fit(request: &Request, header: Header, reply: &Reply, edns: Option<&Edns>) -> Fit {
    let limit = edns.map_or(UDP_PLAIN_PAYLOAD, Edns::max_payload);
    let opt = edns.map_or(0, |e| encoded_len(&Record::from(e)));
    let response = MessageResponseBuilder::from_message_request(request).build(
        header,
        reply.answers.iter(),
        reply.authority.iter(),
        std::iter::empty(),
        reply.additionals.iter(),
    );
    let mut buffer = Vec::with_capacity(usize::from(limit));
    let mut encoder = BinEncoder::new(&mut buffer);
    encoder.set_max_size(limit.saturating_sub(u16::try_from(opt).unwrap_or(u16::MAX)));
    match response.destructive_emit(&mut encoder) {
        Ok(info) if !info.truncated() => Fit::All,
        Ok(info) => Fit::Truncated {
            answers: usize::from(info.answer_count()),
            authority: usize::from(info.name_server_count()),
            additionals: usize::from(info.additional_count()),
        },
        // Not even the question fits (a client's oversized question):
        // header and question only, TC set.
        Err(_) => Fit::Truncated {
            answers: 0,
            authority: 0,
            additionals: 0,
        },
    }
}

/// The wire size of one record (the OPT record kept room for).
fn encoded_len(record: &Record) -> usize {
    let mut buffer = Vec::new();
    let mut encoder = BinEncoder::new(&mut buffer);
    match record.emit(&mut encoder) {
        Ok(()) => buffer.len(),
        // An OPT record without options is 11 bytes.
        Err(_) => 11,
    }
}

impl Handler {
    async fn reply(&self, request: &Request, options: &DnsOptions, zone: &Zone) -> Reply {
        if request.message_type() != MessageType::Query {
            return Reply::code(ResponseCode::FormErr);
        }
        if request.op_code() != OpCode::Query {
            return Reply::code(ResponseCode::NotImp);
        }
        let Ok(info) = request.request_info() else {
            return Reply::code(ResponseCode::FormErr);
        };
        if request.queries().len() != 1 {
            return Reply::code(ResponseCode::FormErr);
        }
        let query = info.query.original();
        let (qname, qtype) = (query.name().clone(), query.query_type());
        if query.query_class() != DNSClass::IN {
            return Reply::code(ResponseCode::Refused);
        }
        let snap = self.table.load();
        let mut found = zone.lookup(&snap, &qname, qtype);
        if matches!(&found, Lookup::Answer(a) if a.rcode == ResponseCode::NXDomain) {
            let others = self.others.load();
            if others.services().next().is_some() {
                if let Lookup::Answer(a) = zone.lookup(&others, &qname, qtype) {
                    if a.rcode != ResponseCode::NXDomain {
                        found = Lookup::Answer(a);
                    }
                }
            }
        }
        match found {
            Lookup::Outside => {
                let rd = request.recursion_desired();
                self.forwarded(options, &qname, qtype, rd).await
            }
            Lookup::Answer(mut answer) => {
                let mut reply = Reply {
                    authoritative: true,
                    ..Reply::default()
                };
                // ExternalName: follow the CNAME inside the zone here, outside
                // through the upstreams, bounded against loops.
                let mut chased_outside = false;
                for _ in 0..MAX_CNAME_CHAIN {
                    let Some(target) = answer.chase.take() else {
                        break;
                    };
                    reply.answers.append(&mut answer.answers);
                    reply.additionals.append(&mut answer.additionals);
                    if zone.contains(&target.to_lowercase()) {
                        match zone.lookup(&snap, &target, qtype) {
                            Lookup::Answer(next) => answer = next,
                            Lookup::Outside => break,
                        }
                    } else {
                        let mut outside = self.forwarded(options, &target, qtype, true).await;
                        if matches!(
                            outside.rcode,
                            ResponseCode::NoError | ResponseCode::NXDomain
                        ) {
                            reply.answers.append(&mut outside.answers);
                        }
                        chased_outside = true;
                        break;
                    }
                }
                let negative = answer.is_negative() && !chased_outside;
                reply.rcode = answer.rcode;
                reply.answers.append(&mut answer.answers);
                reply.additionals.append(&mut answer.additionals);
                if negative {
                    reply.authority.push(zone.soa(snap.generation()));
                }
                reply
            }
        }
    }

    async fn forwarded(
        &self,
        options: &DnsOptions,
        name: &Name,
        qtype: RecordType,
        rd: bool,
    ) -> Reply {
        match forward::forward(&options.upstreams, name, qtype, rd).await {
            Ok(mut m) => {
                let mut reply = Reply {
                    rcode: m.response_code(),
                    authoritative: false,
                    answers: m.take_answers(),
                    authority: m.take_name_servers(),
                    additionals: m.take_additionals(),
                };
                if qtype == RecordType::ANY {
                    first_rrset_only(&mut reply);
                }
                reply
            }
            Err(forward::ForwardError::NoUpstreams) => Reply::code(ResponseCode::Refused),
            Err(e) => {
                forward_failed(name, qtype, &e);
                Reply::code(ResponseCode::ServFail)
            }
        }
    }
}

/// ANY forwarded: only the first RRset of the upstream's answer is passed
/// on (RFC 8482, section 4.1), without additionals, whatever the upstream
/// sent: the responder never hands out every record of a name.
fn first_rrset_only(reply: &mut Reply) {
    let Some(first) = reply.answers.first() else {
        return;
    };
    let (name, rtype) = (first.name().clone(), first.record_type());
    reply
        .answers
        .retain(|r| r.record_type() == rtype && *r.name() == name);
    reply.additionals.clear();
}

/// A failed forward is logged at warn at most once a second for the whole
/// process (the rest at debug): with the upstreams down every question
/// fails, and the log must not become a query log. `lb_dns_answers_total`
/// counts each one.
fn forward_failed(name: &Name, qtype: RecordType, e: &forward::ForwardError) {
    static LAST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if LAST.swap(now_s, Ordering::Relaxed) != now_s {
        warn!(%name, ?qtype, "dns forward failed: {e}");
    } else {
        tracing::debug!(%name, ?qtype, "dns forward failed: {e}");
    }
}
